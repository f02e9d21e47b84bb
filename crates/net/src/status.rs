//! Snapshots of the network's state for `status`, `peers.json` and `sync-status.json`.
//! Plain data, built in one pass under the state lock; nothing here touches the network.

use indras_artifacts::{PeerState, PlayerId, Timestamp};

/// Whether the network runs.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum NetState {
    Running,
    /// Started with `--no-network`; no socket was opened.
    Disabled(String),
    /// The endpoint could not start; the mount runs without a network.
    Failed(String),
    /// `shutdown` was called.
    Stopped,
}

/// How a peer is reachable right now.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Presence {
    Connected,
    Offline,
    /// A connection request waiting for `accept` or `reject`.
    Pending,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Connected => "connected",
            Presence::Offline => "offline",
            Presence::Pending => "pending",
        }
    }
}

/// One peer's state.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PeerStatus {
    pub id: PlayerId,
    pub name: String,
    pub their_name: String,
    pub state: PeerState,
    pub presence: Presence,
    pub last_seen: Option<Timestamp>,
    pub addrs: Vec<String>,
    pub relay: Option<String>,
    /// Round-trip time of our last answered ping.
    pub rtt_ms: Option<u64>,
    pub connected_since: Option<Timestamp>,
    /// Bytes received from and sent to this peer since start, over all its connections.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub last_error: Option<String>,
}

/// A snapshot of the whole network layer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NetStatus {
    pub id: PlayerId,
    pub state: NetState,
    /// Our direct addresses, as `ip:port`.
    pub addrs: Vec<String>,
    /// Our home relay, when connected to one.
    pub relay: Option<String>,
    pub peers: Vec<PeerStatus>,
    /// Incoming connections still in their handshake.
    pub handshakes: usize,
}

impl NetStatus {
    /// Peers with a live connection.
    pub fn connected(&self) -> usize {
        self.peers.iter().filter(|p| p.presence == Presence::Connected).count()
    }

    /// Accepted peers, connected or not.
    pub fn known(&self) -> usize {
        self.peers.iter().filter(|p| p.state == PeerState::Accepted).count()
    }

    /// The peer with local name `name`.
    pub fn peer(&self, name: &str) -> Option<&PeerStatus> {
        self.peers.iter().find(|p| p.name == name)
    }
}
