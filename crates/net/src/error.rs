//! The errors of the public API. Each variant's `Display` is one line that a CLI can print
//! as it is; none of them carries a secret.

use std::time::Duration;

use indras_artifacts::Timestamp;

use crate::book::BookError;
use crate::wire::{MAX_REQUEST, close};

/// Why a network operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("network is disabled: {0}")]
    Disabled(String),
    #[error("network is not running: {0}")]
    Unavailable(String),
    #[error("malformed ticket: {0}")]
    TicketMalformed(String),
    #[error("ticket expired {} s ago", Timestamp::now().secs.saturating_sub(.0.secs).max(0))]
    TicketExpired(Timestamp),
    #[error("ticket was already used")]
    TicketUsed,
    #[error("ticket is not known to the inviter (revoked, or meant for another vault)")]
    TicketUnknown,
    #[error("this ticket is our own invitation")]
    OwnTicket,
    #[error("already a peer, named {0}")]
    AlreadyPeer(String),
    #[error("the name {0} is already used by another peer")]
    NameTaken(String),
    #[error("invalid peer name {0:?}: {1}")]
    InvalidName(String, &'static str),
    #[error("no peer named {0}")]
    NoSuchPeer(String),
    #[error("{0} is an accepted peer, not a connection request (use remove)")]
    NotPending(String),
    #[error("refused by the other side: {0}")]
    Refused(String),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("could not reach the peer: {0}")]
    Unreachable(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Book(#[from] BookError),
    #[error("network is shutting down")]
    ShuttingDown,
    /// No live session with the peer (named by its local name, or its id if unknown).
    #[error("not connected to {0}")]
    NotConnected(String),
    #[error("request of {0} bytes exceeds the limit of {MAX_REQUEST} bytes")]
    RequestTooLarge(usize),
    /// The answer announced `.0` bytes, over the limit `.1` the caller allowed.
    #[error("answer of {0} bytes exceeds the limit of {1} bytes")]
    ResponseTooLarge(u64, usize),
    /// The peer reset or stopped the request stream with this code (`wire::close`).
    #[error("request reset by the peer: {} (code {code})", close::describe(*.0), code = .0)]
    RequestReset(u64),
}

/// Makes a message safe for a one-line display: no control characters, bounded length.
pub(crate) fn one_line(s: &str) -> String {
    let mut out: String =
        s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(300).collect();
    if s.chars().count() > 300 {
        out.push('…');
    }
    out
}
