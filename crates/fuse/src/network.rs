//! What the mount shows of the network: a snapshot that the network layer provides through
//! `NetworkState`, rendered into `.indra/peers.json`, `.indra/sync-status.json` and the
//! status. The filesystem never imports the network layer: the daemon hands it an
//! implementation when it mounts.
//!
//! Invariants:
//! - `snapshot` is cheap and never waits on the network (it copies what the network layer
//!   last recorded), so rendering these files costs a FUSE request no network round trip.
//! - `wait_ready` is the one call that may wait: a read of a file under `peers/` whose content
//!   has not arrived waits there, bounded by its `limit`, in the request's own thread.
//! - Peers are the store's records (`Vault::peers`), joined with the live figures by id: a
//!   peer the network layer has not seen yet is shown offline.

use std::time::Duration;

use indras_artifacts::{NodeId, Peer, PeerState, PlayerId, Timestamp, Vault};
use serde::{Deserialize, Serialize};

use crate::error::FsResult;
use crate::time::rfc3339;

/// The network layer, as the mount sees it.
pub trait NetworkState: Send + Sync + std::fmt::Debug {
    fn snapshot(&self) -> NetworkSnapshot;

    /// Waits at most `limit` until the content of mirror entry `entry` (a file a peer shares,
    /// `Vault::mirror_entry`) has arrived, asking for it first if it is not on its way.
    /// Returns whether it arrived (`MirrorEntry::ready`). Without a network layer that
    /// fetches, nothing arrives: `false` at once.
    fn wait_ready(&self, _entry: NodeId, _limit: Duration) -> bool {
        false
    }
}

/// The network as it is now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetworkSnapshot {
    /// Why no endpoint runs (`--no-network`, or it could not start); `None` while one runs.
    pub off: Option<String>,
    /// The endpoint's direct addresses.
    pub addrs: Vec<String>,
    /// The relay it uses, if any.
    pub relay: Option<String>,
    /// What the network layer knows of each peer it has dealt with.
    pub peers: Vec<LivePeer>,
}

/// A peer's live figures.
#[derive(Clone, Debug, PartialEq)]
pub struct LivePeer {
    pub id: PlayerId,
    /// Whether a connection with the peer is open now.
    pub connected: bool,
    pub connected_since: Option<Timestamp>,
    pub last_seen: Option<Timestamp>,
    /// Addresses the connection uses or last used.
    pub addrs: Vec<String>,
    pub rtt_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub last_error: Option<String>,
}

/// The mount's network when there is none: a filesystem driven without a daemon.
#[derive(Debug)]
pub struct NoNetwork(pub String);

impl NetworkState for NoNetwork {
    fn snapshot(&self) -> NetworkSnapshot {
        NetworkSnapshot { off: Some(self.0.clone()), ..NetworkSnapshot::default() }
    }
}

/// A peer's state as `peers.json` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerStatus {
    Connected,
    Offline,
    Pending,
}

/// One entry of `.indra/peers.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerJson {
    /// Our local name for the peer.
    pub name: String,
    pub player_id: String,
    /// The name the peer gave itself.
    pub their_name: String,
    pub state: PeerStatus,
    pub added_at: String,
    pub last_seen: Option<String>,
    pub addresses: Vec<String>,
    pub rtt_ms: Option<f64>,
}

/// One peer in `.indra/sync-status.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerSync {
    pub name: String,
    pub player_id: String,
    pub connected_since: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub last_error: Option<String>,
    /// Files the peer shares with us whose content has not arrived yet.
    pub queued: u64,
    /// Our live grants to the peer.
    pub granted: u64,
}

/// `.indra/sync-status.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncJson {
    pub network: NetworkJson,
    pub peers: Vec<PeerSync>,
}

/// The endpoint, as the status and `sync-status.json` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkJson {
    pub online: bool,
    /// Why it is not: `--no-network`, or what stopped it from starting.
    pub off_reason: Option<String>,
    pub addresses: Vec<String>,
    pub relay: Option<String>,
}

impl NetworkJson {
    pub fn of(snap: &NetworkSnapshot) -> NetworkJson {
        NetworkJson {
            online: snap.off.is_none(),
            off_reason: snap.off.clone(),
            addresses: snap.addrs.clone(),
            relay: snap.relay.clone(),
        }
    }
}

fn live<'a>(snap: &'a NetworkSnapshot, peer: &Peer) -> Option<&'a LivePeer> {
    snap.peers.iter().find(|l| l.id == peer.id)
}

/// How `peer` shows: pending for a request, else connected or offline by the network.
fn status_of(snap: &NetworkSnapshot, peer: &Peer) -> PeerStatus {
    match (peer.state, live(snap, peer).is_some_and(|l| l.connected)) {
        (PeerState::Pending, _) => PeerStatus::Pending,
        (PeerState::Accepted, true) => PeerStatus::Connected,
        (PeerState::Accepted, false) => PeerStatus::Offline,
    }
}

/// The store's peers joined with the live figures, in name order.
pub fn peers_json(vault: &Vault, snap: &NetworkSnapshot) -> FsResult<Vec<PeerJson>> {
    let mut peers = vault.peers()?;
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(peers
        .into_iter()
        .map(|p| {
            let l = live(snap, &p);
            let state = status_of(snap, &p);
            let last_seen = l.and_then(|l| l.last_seen).max(p.last_seen);
            PeerJson {
                name: p.name,
                player_id: p.id.to_string(),
                their_name: p.their_name,
                state,
                added_at: rfc3339(p.added_at),
                last_seen: last_seen.map(rfc3339),
                addresses: l.filter(|l| !l.addrs.is_empty()).map_or(p.addrs, |l| l.addrs.clone()),
                rtt_ms: l.and_then(|l| l.rtt_ms),
            }
        })
        .collect())
}

/// `.indra/sync-status.json`: the endpoint, and per accepted peer its connection's figures.
pub fn sync_json(vault: &Vault, snap: &NetworkSnapshot) -> FsResult<SyncJson> {
    let mut peers = vault.peers()?;
    peers.retain(|p| p.state == PeerState::Accepted);
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    let missing = vault.mirror_missing()?;
    let now = Timestamp::now();
    let grants = vault.grants(None)?;
    Ok(SyncJson {
        network: NetworkJson::of(snap),
        peers: peers
            .iter()
            .map(|p| {
                let l = live(snap, p);
                PeerSync {
                    name: p.name.clone(),
                    player_id: p.id.to_string(),
                    connected_since: l.and_then(|l| l.connected_since).map(rfc3339),
                    bytes_in: l.map_or(0, |l| l.bytes_in),
                    bytes_out: l.map_or(0, |l| l.bytes_out),
                    last_error: l.and_then(|l| l.last_error.clone()),
                    queued: missing.iter().filter(|m| m.1 == p.id).count() as u64,
                    granted: grants.iter().filter(|g| g.grantee == p.id && g.is_active(now)).count()
                        as u64,
                }
            })
            .collect(),
    })
}

/// One member of a realm in `.indra/realms.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberJson {
    /// Our name for the member (our own player name for us; the start of its player id
    /// when it is not our peer).
    pub name: String,
    pub player_id: String,
    /// `you`, `connected`, `offline`, or `not a peer` (a member we cannot reach).
    pub state: String,
}

/// One realm in `.indra/realms.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealmJson {
    pub id: String,
    /// Its folder's name in `realms/` (the realm's name, numbered if two share it).
    pub name: String,
    pub creator: String,
    pub created_at: String,
    pub members: Vec<MemberJson>,
    /// The artifacts its folder shows now.
    pub shared_artifacts: u64,
}

/// `.indra/realms.json`: every realm we belong to, by name, with its members' connection
/// states and what it shows.
pub fn realms_json(
    vault: &Vault,
    snap: &NetworkSnapshot,
    now: Timestamp,
) -> FsResult<Vec<RealmJson>> {
    let peers = vault.peers()?;
    let me = vault.player();
    let member = |id: PlayerId| {
        let (name, state) = if id == me {
            (vault.player_name().to_owned(), "you".to_owned())
        } else {
            match peers.iter().find(|p| p.id == id) {
                Some(p) => {
                    let state = match status_of(snap, p) {
                        PeerStatus::Connected => "connected",
                        PeerStatus::Offline | PeerStatus::Pending => "offline",
                    };
                    (p.name.clone(), state.to_owned())
                }
                None => (id.to_string()[..8].to_owned(), "not a peer".to_owned()),
            }
        };
        MemberJson { name, player_id: id.to_string(), state }
    };
    vault
        .realms()?
        .into_iter()
        .map(|row| {
            Ok(RealmJson {
                id: row.realm.id.to_string(),
                name: row.label.clone(),
                creator: member(row.realm.creator).name,
                created_at: rfc3339(row.realm.created_at),
                members: row.realm.members.iter().map(|m| member(*m)).collect(),
                shared_artifacts: vault.realm_view(&row, now)?.len() as u64,
            })
        })
        .collect()
}

/// How many of `peers` are connected now.
pub fn connected(peers: &[Peer], snap: &NetworkSnapshot) -> usize {
    peers.iter().filter(|p| status_of(snap, p) == PeerStatus::Connected).count()
}

#[cfg(test)]
mod tests {
    use indras_artifacts::{Commit, Options};

    use super::*;

    fn peer(id: u8, name: &str, state: PeerState, last_seen: Option<i64>) -> Peer {
        Peer {
            id: PlayerId([id; 32]),
            name: name.into(),
            their_name: format!("{name}-self"),
            addrs: vec![format!("10.0.0.{id}:1")],
            relay: None,
            state,
            added_at: Timestamp::from_millis(0),
            last_seen: last_seen.map(Timestamp::from_millis),
        }
    }

    fn live(id: u8, connected: bool, last_seen: i64) -> LivePeer {
        LivePeer {
            id: PlayerId([id; 32]),
            connected,
            connected_since: connected.then(|| Timestamp::from_millis(5)),
            last_seen: Some(Timestamp::from_millis(last_seen)),
            addrs: vec![format!("127.0.0.{id}:2")],
            rtt_ms: Some(1.5),
            bytes_in: 10,
            bytes_out: 20,
            last_error: (!connected).then(|| "timed out".to_owned()),
        }
    }

    /// Store records joined with live figures: connected or offline for accepted peers,
    /// pending for requests whatever the network says; the later last-seen wins; live
    /// addresses replace the recorded ones; a peer the network never saw is offline.
    #[test]
    fn peers_join_the_store_and_the_network() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path(), "alice", &Options::default()).unwrap();
        let c = Commit::CrashConsistent;
        v.put_peer(&peer(1, "bob", PeerState::Accepted, Some(1_000)), c).unwrap();
        v.put_peer(&peer(2, "carol", PeerState::Accepted, Some(9_000)), c).unwrap();
        v.put_peer(&peer(3, "dave", PeerState::Pending, None), c).unwrap();
        v.put_peer(&peer(4, "erin", PeerState::Accepted, None), c).unwrap();
        let snap = NetworkSnapshot {
            off: None,
            addrs: vec!["127.0.0.1:9".into()],
            relay: None,
            peers: vec![live(1, true, 2_000), live(2, false, 3_000), live(3, true, 4_000)],
        };
        let got = peers_json(&v, &snap).unwrap();
        let states: Vec<(&str, PeerStatus)> =
            got.iter().map(|p| (p.name.as_str(), p.state)).collect();
        assert_eq!(
            states,
            [
                ("bob", PeerStatus::Connected),
                ("carol", PeerStatus::Offline),
                ("dave", PeerStatus::Pending),
                ("erin", PeerStatus::Offline),
            ]
        );
        assert_eq!(got[0].last_seen, Some(rfc3339(Timestamp::from_millis(2_000))));
        assert_eq!(got[1].last_seen, Some(rfc3339(Timestamp::from_millis(9_000))));
        assert_eq!(got[0].addresses, ["127.0.0.1:2"]);
        assert_eq!(got[3].addresses, ["10.0.0.4:1"]);
        assert_eq!(connected(&v.peers().unwrap(), &snap), 1);

        let sync = sync_json(&v, &snap).unwrap();
        assert!(sync.network.online);
        let names: Vec<&str> = sync.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["bob", "carol", "erin"], "requests are not synced with");
        assert_eq!((sync.peers[0].bytes_in, sync.peers[0].bytes_out), (10, 20));
        assert_eq!(sync.peers[1].last_error.as_deref(), Some("timed out"));
        assert_eq!(sync.peers[2].connected_since, None);

        let off = NoNetwork("--no-network".into()).snapshot();
        assert_eq!(connected(&v.peers().unwrap(), &off), 0);
        let json = sync_json(&v, &off).unwrap().network;
        assert_eq!((json.online, json.off_reason.as_deref()), (false, Some("--no-network")));
    }
}
