//! `indras-net`: the peer-to-peer layer of indras-fuse. Key identity, invitation tickets,
//! peering, one live, authenticated connection per peer, over iroh (QUIC), and application
//! requests over those connections.
//!
//! [`Net`] is the whole API, with [`Service`] for the application's side of requests. It
//! owns a tokio runtime of its own (two worker threads), so every method is called from
//! plain threads and returns within its timeout; nothing here ever waits on the network
//! inside a caller's thread without a bound.
//!
//! Layers, each using only those below it:
//! - [`wire`] (messages and framing), [`ticket`], [`names`], `gate` (admission control),
//!   [`book`] (the persistence port), [`config`], [`status`], [`error`];
//! - `service`: the [`Service`] trait and both ends of one request stream;
//! - `node`: the endpoint, the handshake, sessions, reconnection and request routing;
//! - this file: the blocking facade and the start/stop lifecycle.
//!
//! Invariants:
//! - The `PlayerId` is the ed25519 public key of the 32-byte secret, and the peer's
//!   TLS-authenticated endpoint id is its `PlayerId`. The secret is never logged or shown.
//! - `Net::start` never fails: when the endpoint cannot start, the `Net` reports why in
//!   [`Net::status`] and every command returns [`NetError::Unavailable`].
//! - Requests travel only on live sessions, so only accepted peers send or serve them.
//!   [`Net::request`] is bounded by its timeout; a request is at most [`MAX_REQUEST`] bytes
//!   and an answer at most [`MAX_RESPONSE`], and inbound requests are served at most
//!   `Limits::requests_per_session` at a time per peer.
//!
//! See `docs/NETWORK.md` for the protocol.

pub mod book;
pub mod config;
pub mod error;
mod gate;
pub mod names;
mod node;
mod service;
pub mod status;
pub mod ticket;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use indras_artifacts::PlayerId;
use iroh::SecretKey;
use iroh::protocol::Router;
use tracing::{debug, warn};

pub use book::{BookError, MemoryBook, PeerBook};
pub use config::{Config, Limits, Relay, Timeouts};
pub use error::NetError;
pub use indras_artifacts::{InviteCheck, Peer, PeerState};
pub use names::validate_name;
pub use service::Service;
pub use status::{NetState, NetStatus, PeerStatus, Presence};
pub use ticket::Ticket;
pub use wire::{MAX_REQUEST, MAX_RESPONSE};

use node::Node;

/// The default validity of an invitation ticket.
pub const DEFAULT_INVITE_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// The network layer of one vault.
pub struct Net {
    id: PlayerId,
    mode: Mode,
}

enum Mode {
    Off { state: NetState, book: Option<Arc<dyn PeerBook>> },
    On(Box<Running>),
}

struct Running {
    rt: Option<tokio::runtime::Runtime>,
    node: Arc<Node>,
    router: Option<Router>,
    shutdown_limit: Duration,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.mode {
            Mode::Off { state, .. } => state.clone(),
            Mode::On(_) => NetState::Running,
        };
        f.debug_struct("Net").field("id", &self.id).field("state", &state).finish()
    }
}

/// The `PlayerId` of a secret key: its ed25519 public key.
pub fn player_id(secret_key: &[u8; 32]) -> PlayerId {
    PlayerId(*SecretKey::from_bytes(secret_key).public().as_bytes())
}

/// Runs `fut` on `rt` and waits for it from the calling thread, at most `limit` (plus a
/// grace second for the runtime itself). Safe to call from any thread, including one of
/// another runtime.
fn block_on<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    limit: Duration,
    fut: impl Future<Output = Result<T, NetError>> + Send + 'static,
) -> Result<T, NetError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = rt.spawn(async move {
        let _ = tx.send(tokio::time::timeout(limit, fut).await);
    });
    match rx.recv_timeout(limit.saturating_add(Duration::from_secs(1))) {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(NetError::Timeout(limit)),
        Err(_) => {
            task.abort();
            Err(NetError::Timeout(limit))
        }
    }
}

impl Net {
    /// Starts the network. Never fails the caller: if the endpoint cannot start (port
    /// taken, no interfaces), the returned `Net` carries the error in its status, after
    /// one warning in the log.
    pub fn start(secret_key: [u8; 32], book: Arc<dyn PeerBook>, cfg: Config) -> Net {
        let id = player_id(&secret_key);
        let failed = |why: String, book: Arc<dyn PeerBook>| {
            warn!("network not started, the mount runs without it: {why}");
            Net { id, mode: Mode::Off { state: NetState::Failed(why), book: Some(book) } }
        };
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("indras-net")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return failed(format!("no runtime: {e}"), book),
        };
        let peers = match book.peers() {
            Ok(p) => p,
            Err(e) => return failed(e.to_string(), book),
        };
        let limit = cfg.timeouts.bind;
        let shutdown_limit = cfg.timeouts.shutdown;
        let secret = SecretKey::from_bytes(&secret_key);
        let bind = Node::bind(secret, book.clone(), peers, cfg);
        match block_on(&rt, limit, async move { bind.await.map_err(NetError::Unavailable) }) {
            Ok((node, router)) => Net {
                id,
                mode: Mode::On(Box::new(Running {
                    rt: Some(rt),
                    node,
                    router: Some(router),
                    shutdown_limit,
                })),
            },
            Err(e) => {
                rt.shutdown_background();
                let why = match e {
                    NetError::Unavailable(why) => why,
                    other => other.to_string(),
                };
                failed(why, book)
            }
        }
    }

    /// A `Net` that opens no socket at all (`--no-network`).
    pub fn disabled(secret_key: [u8; 32], reason: impl Into<String>) -> Net {
        Net {
            id: player_id(&secret_key),
            mode: Mode::Off { state: NetState::Disabled(reason.into()), book: None },
        }
    }

    /// Our `PlayerId`: the ed25519 public key of the secret key.
    pub fn id(&self) -> PlayerId {
        self.id
    }

    fn running(&self) -> Result<&Running, NetError> {
        match &self.mode {
            Mode::On(r) => Ok(r),
            Mode::Off { state: NetState::Disabled(why), .. } => {
                Err(NetError::Disabled(why.clone()))
            }
            Mode::Off { state: NetState::Failed(why), .. } => {
                Err(NetError::Unavailable(why.clone()))
            }
            Mode::Off { .. } => Err(NetError::ShuttingDown),
        }
    }

    /// A one-line ticket that lets one peer add us, valid for `valid` (at most a year).
    pub fn invite(&self, valid: Duration) -> Result<String, NetError> {
        self.running()?.node.invite(valid)
    }

    /// Redeems `ticket`: dials the inviter, presents the secret, and records the inviter
    /// as an accepted peer named `name`. Blocks at most `timeout`.
    pub fn add_peer(&self, name: &str, ticket: &str, timeout: Duration) -> Result<Peer, NetError> {
        let r = self.running()?;
        let Some(rt) = &r.rt else { return Err(NetError::ShuttingDown) };
        let node = r.node.clone();
        let fut = node.add_peer(name.to_owned(), ticket.to_owned(), timeout);
        block_on(rt, timeout, fut)
    }

    /// Accepts the connection request of `name`; the peer is then dialed.
    pub fn accept(&self, name: &str) -> Result<Peer, NetError> {
        self.running()?.node.accept(name)
    }

    /// Rejects the connection request of `name`. Its key is refused without a new request
    /// for `Limits::reject_memory`.
    pub fn reject(&self, name: &str) -> Result<(), NetError> {
        self.running()?.node.reject(name)
    }

    /// Forgets peer `name` and closes its connection.
    pub fn remove(&self, name: &str) -> Result<(), NetError> {
        self.running()?.node.remove(name)
    }

    /// Sets the application's request handler. Call it once, after start (the service may
    /// hold this `Net` to make requests of its own); a second call is ignored with a warning.
    /// Until it is set, inbound requests are refused (the stream is reset with
    /// `close::NO_SERVICE`). Sessions already live are announced to it through
    /// [`Service::connected`] at once, later ones as they are installed.
    ///
    /// The `Net` keeps the service until it is dropped. A service holding an `Arc<Net>`
    /// therefore keeps the `Net` alive; the owner must break that cycle (for example, the
    /// service holds a `Weak<Net>`) for dropping the `Net` to shut it down.
    pub fn set_service(&self, service: Arc<dyn Service>) {
        match &self.mode {
            Mode::On(r) => {
                if !r.node.set_service(service) {
                    warn!("a request service was already set; the new one is ignored");
                }
            }
            Mode::Off { .. } => debug!("network not running; the request service is unused"),
        }
    }

    /// Sends `request` to `peer` and returns its answer. Blocks at most `timeout`. Opens a
    /// new stream on the peer's live session, so it may be called from many threads at
    /// once (and from a thread of another runtime).
    ///
    /// Errors: [`NetError::RequestTooLarge`] over [`MAX_REQUEST`] (nothing is sent);
    /// [`NetError::NotConnected`] without a live session; [`NetError::Timeout`];
    /// [`NetError::ResponseTooLarge`] when the answer announces more than
    /// `min(max_response, MAX_RESPONSE)` bytes (checked before it is read);
    /// [`NetError::RequestReset`] when the peer refuses or fails the request (see the code);
    /// [`NetError::Protocol`] for a malformed answer; [`NetError::Unreachable`] when the
    /// connection is lost meanwhile.
    pub fn request(
        &self,
        peer: PlayerId,
        request: Vec<u8>,
        max_response: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, NetError> {
        if request.len() > MAX_REQUEST {
            return Err(NetError::RequestTooLarge(request.len()));
        }
        let r = self.running()?;
        let Some(rt) = &r.rt else { return Err(NetError::ShuttingDown) };
        let node = r.node.clone();
        block_on(rt, timeout, node.request(peer, request, max_response))
    }

    /// A snapshot of the endpoint and every peer. Cheap; never touches the network.
    pub fn status(&self) -> NetStatus {
        match &self.mode {
            Mode::On(r) => r.node.status(),
            Mode::Off { state, book } => {
                let peers = book
                    .as_ref()
                    .and_then(|b| b.peers().ok())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| PeerStatus {
                        presence: match e.state {
                            PeerState::Accepted => Presence::Offline,
                            PeerState::Pending => Presence::Pending,
                        },
                        id: e.id,
                        name: e.name,
                        their_name: e.their_name,
                        state: e.state,
                        last_seen: e.last_seen,
                        addrs: e.addrs,
                        relay: e.relay,
                        rtt_ms: None,
                        connected_since: None,
                        bytes_in: 0,
                        bytes_out: 0,
                        last_error: None,
                    })
                    .collect();
                NetStatus {
                    id: self.id,
                    state: state.clone(),
                    addrs: Vec::new(),
                    relay: None,
                    peers,
                    handshakes: 0,
                }
            }
        }
    }

    /// Closes every connection and the endpoint, within `Timeouts::shutdown` plus a second.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let Mode::On(r) = &mut self.mode else { return };
        let (Some(rt), Some(router)) = (r.rt.take(), r.router.take()) else { return };
        let node = r.node.clone();
        let limit = r.shutdown_limit;
        let _ = block_on(&rt, limit, async move {
            node.shutdown(router).await;
            Ok(())
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            // Inside another runtime, blocking on our own runtime's end is not allowed.
            rt.shutdown_background();
        } else {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        self.mode = Mode::Off { state: NetState::Stopped, book: None };
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod identity_tests {
    /// The id the network authenticates (iroh's public key) is the id the store records for
    /// the same secret (`indras_artifacts::SecretKey::player`).
    #[test]
    fn the_network_and_the_store_agree_on_a_keys_player() {
        for seed in 0u8..32 {
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).unwrap();
            key[0] = seed;
            let store = indras_artifacts::SecretKey::from_bytes(key).player();
            assert_eq!(super::player_id(&key), store);
        }
    }
}
