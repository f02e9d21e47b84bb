//! Wiring the network layer into the daemon: `StoreBook`, the network's persistence over the
//! store, and `NetView`, the mount's view of the network.
//!
//! Invariants:
//! - Every change the network layer makes to peers and invitations is durable before it
//!   returns (`Commit::Durable`), so a peer that was told "welcome" is still a peer after a
//!   crash, and a used invitation stays used.
//! - A connection request is recorded as a pending peer, then delivered as
//!   `vault/inbox/connection-request-<name>.json`; the kernel's cached entry for that name is
//!   dropped, so the file shows at once even where its absence was cached.
//! - `NetView::snapshot` copies what the network layer last recorded; it never waits on the
//!   network.

use std::sync::{Arc, Weak};
use std::time::Duration;

use indras_artifacts::{
    Commit, Hash, InviteCheck, MirrorChanges, NodeId, Peer, PlayerId, Timestamp, Vault,
};
use indras_fuse::Invalidator;
use indras_fuse::network::{LivePeer, NetworkSnapshot, NetworkState};
use indras_net::{BookError, Net, NetState, PeerBook, Presence, Service};
use indras_share::{Observer, Share, Transport};
use serde::Serialize;

/// The folder of the vault's root that connection requests are delivered to.
const INBOX: &[u8] = b"inbox";

/// The network's peers and invitations, kept in the store.
#[derive(Debug)]
pub struct StoreBook {
    vault: Arc<Vault>,
    invalidator: Invalidator,
}

impl StoreBook {
    pub fn new(vault: Arc<Vault>, invalidator: Invalidator) -> StoreBook {
        StoreBook { vault, invalidator }
    }
}

fn book_err(e: &indras_artifacts::Error) -> BookError {
    BookError(e.to_string())
}

/// The file a connection request is delivered as.
#[derive(Serialize)]
struct RequestFile<'a> {
    connection_request_from: &'a str,
    player_id: String,
    their_name: &'a str,
    addresses: &'a [String],
    received_at: String,
    accept: String,
    reject: String,
}

impl PeerBook for StoreBook {
    fn peers(&self) -> Result<Vec<Peer>, BookError> {
        self.vault.peers().map_err(|e| book_err(&e))
    }

    fn put_peer(&self, entry: &Peer) -> Result<(), BookError> {
        self.vault.put_peer(entry, Commit::Durable).map_err(|e| book_err(&e))
    }

    fn remove_peer(&self, id: &PlayerId) -> Result<bool, BookError> {
        self.vault.remove_peer(*id, Commit::Durable).map_err(|e| book_err(&e))
    }

    fn add_invite(&self, secret_hash: Hash, expires_at: Timestamp) -> Result<(), BookError> {
        self.vault
            .add_invite(secret_hash, expires_at, Timestamp::now(), Commit::Durable)
            .map_err(|e| book_err(&e))
    }

    fn redeem_invite(&self, secret_hash: &Hash, now: Timestamp) -> Result<InviteCheck, BookError> {
        self.vault.redeem_invite(secret_hash, now).map_err(|e| book_err(&e))
    }

    fn connection_request(&self, entry: &Peer) -> Result<(), BookError> {
        self.put_peer(entry)?;
        let name = format!("connection-request-{}.json", entry.name);
        let file = RequestFile {
            connection_request_from: &entry.name,
            player_id: entry.id.to_string(),
            their_name: &entry.their_name,
            addresses: &entry.addrs,
            received_at: indras_fuse::time::rfc3339(entry.added_at),
            accept: format!("indras-fuse peer accept {}", entry.name),
            reject: format!("indras-fuse peer reject {}", entry.name),
        };
        let mut json = serde_json::to_vec_pretty(&file).map_err(|e| BookError(e.to_string()))?;
        json.push(b'\n');
        let (inbox, _) = self
            .vault
            .deliver(INBOX, name.as_bytes(), &json, Timestamp::now())
            .map_err(|e| book_err(&e))?;
        self.invalidator.entry(indras_artifacts::NodeId::ROOT.0, INBOX);
        self.invalidator.entry(inbox.0, name.as_bytes());
        Ok(())
    }
}

/// How long one sharing request may take, a chunk of up to 256 KiB included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sharing's requests, carried by the network's sessions. Holds the network weakly: the
/// network holds the sharing engine (as its service), which holds this.
#[derive(Debug)]
pub struct NetTransport(pub Weak<Net>);

impl Transport for NetTransport {
    fn request(&self, peer: PlayerId, request: Vec<u8>, max: usize) -> Result<Vec<u8>, String> {
        let net = self.0.upgrade().ok_or("the network has stopped")?;
        net.request(peer, request, max, REQUEST_TIMEOUT).map_err(|e| e.to_string())
    }

    fn connected(&self) -> Vec<PlayerId> {
        self.0.upgrade().map_or_else(Vec::new, |net| {
            net.status()
                .peers
                .into_iter()
                .filter(|p| p.presence == Presence::Connected)
                .map(|p| p.id)
                .collect()
        })
    }
}

/// The sharing engine, answering peers' requests that the network authenticated.
#[derive(Debug)]
pub struct ShareService(pub Arc<Share>);

impl Service for ShareService {
    fn handle(&self, peer: PlayerId, request: Vec<u8>) -> Vec<u8> {
        self.0.handle(peer, &request)
    }

    fn connected(&self, peer: PlayerId) {
        self.0.connected(peer);
    }
}

/// Drops the kernel's caches of what changed under `peers/`.
#[derive(Debug)]
pub struct KernelCaches(pub Invalidator);

impl Observer for KernelCaches {
    fn mirror_changed(&self, changes: &MirrorChanges) {
        self.0.mirror_changed(changes);
    }

    fn vault_entry_changed(&self, parent: NodeId, name: &[u8]) {
        // Vault inodes are node ids; the fetcher is no FUSE request, so this may call the
        // kernel at once.
        self.0.entry(parent.0, name);
    }

    fn realms_changed(&self) {
        self.0.realms_changed();
    }
}

/// The mount's view of a running `Net`, and of the sharing engine over it.
#[derive(Debug)]
pub struct NetView(pub Arc<Net>, pub Option<Arc<Share>>);

impl NetworkState for NetView {
    fn wait_ready(&self, entry: NodeId, limit: Duration) -> bool {
        self.1.as_ref().is_some_and(|s| s.wait_ready(entry, limit))
    }

    fn snapshot(&self) -> NetworkSnapshot {
        let s = self.0.status();
        let off = match s.state {
            NetState::Running => None,
            NetState::Disabled(why) => Some(why),
            NetState::Failed(why) => Some(format!("the network could not start: {why}")),
            NetState::Stopped => Some("the network has stopped".to_owned()),
        };
        NetworkSnapshot {
            off,
            addrs: s.addrs,
            relay: s.relay,
            peers: s
                .peers
                .into_iter()
                .map(|p| LivePeer {
                    id: p.id,
                    connected: p.presence == Presence::Connected,
                    connected_since: p.connected_since,
                    last_seen: p.last_seen,
                    addrs: p.addrs,
                    rtt_ms: p.rtt_ms.map(|ms| ms as f64),
                    bytes_in: p.bytes_in,
                    bytes_out: p.bytes_out,
                    last_error: p.last_error,
                })
                .collect(),
        }
    }
}
