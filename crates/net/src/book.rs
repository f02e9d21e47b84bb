//! The persistence port: what the network layer remembers about peers and invitations,
//! and an in-memory implementation for tests and for callers without a store.
//!
//! Invariants every implementation keeps:
//! - at most one [`Peer`] per [`PlayerId`]; `put_peer` inserts or replaces by id;
//! - an invitation is kept only as the hash of its secret, and `redeem_invite` checks and
//!   consumes it atomically, so two concurrent redemptions cannot both see `Valid`;
//! - methods are called from the network runtime's threads, never re-enter the network
//!   layer, and return quickly (they may do small, synchronous disk writes).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use indras_artifacts::{InviteCheck, Peer, PlayerId, Timestamp};
use parking_lot::Mutex;

/// A failure of the persistence behind a [`PeerBook`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer book: {0}")]
pub struct BookError(pub String);

/// Where the network layer keeps peers and invitations. The daemon implements it over the
/// store; [`MemoryBook`] keeps everything in memory.
pub trait PeerBook: Send + Sync + 'static {
    /// Every peer, accepted and pending.
    fn peers(&self) -> Result<Vec<Peer>, BookError>;
    /// Inserts or replaces the entry with `entry.id`.
    fn put_peer(&self, entry: &Peer) -> Result<(), BookError>;
    /// Removes a peer; `false` if there was none.
    fn remove_peer(&self, id: &PlayerId) -> Result<bool, BookError>;
    /// Remembers an invitation by the hash of its secret.
    fn add_invite(&self, secret_hash: [u8; 32], expires_at: Timestamp) -> Result<(), BookError>;
    /// Atomically checks and consumes a one-time invitation.
    fn redeem_invite(
        &self,
        secret_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<InviteCheck, BookError>;
    /// A key that is not a peer presented no valid secret: record it as pending (the daemon
    /// also drops a file in the vault's inbox). Called at most once per key per rate-limit
    /// interval.
    fn connection_request(&self, entry: &Peer) -> Result<(), BookError>;
}

/// How long a used or expired invitation is remembered, so a reuse says "used" or
/// "expired" rather than "unknown".
const SPENT_INVITE_MEMORY_SECS: i64 = 7 * 24 * 3600;

#[derive(Default)]
struct MemoryState {
    peers: BTreeMap<PlayerId, Peer>,
    /// Secret hash -> (expiry, used).
    invites: HashMap<[u8; 32], (Timestamp, bool)>,
}

/// A [`PeerBook`] in memory. Sharing one `Arc<MemoryBook>` between two runs of a `Net`
/// models a restart with the same store.
#[derive(Default)]
pub struct MemoryBook {
    state: Mutex<MemoryState>,
    requests: AtomicUsize,
}

impl std::fmt::Debug for MemoryBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("MemoryBook")
            .field("peers", &s.peers.len())
            .field("invites", &s.invites.len())
            .finish_non_exhaustive()
    }
}

impl MemoryBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many times `connection_request` was called.
    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// The peer with local name `name`.
    pub fn by_name(&self, name: &str) -> Option<Peer> {
        self.state.lock().peers.values().find(|p| p.name == name).cloned()
    }
}

impl PeerBook for MemoryBook {
    fn peers(&self) -> Result<Vec<Peer>, BookError> {
        Ok(self.state.lock().peers.values().cloned().collect())
    }

    fn put_peer(&self, entry: &Peer) -> Result<(), BookError> {
        self.state.lock().peers.insert(entry.id, entry.clone());
        Ok(())
    }

    fn remove_peer(&self, id: &PlayerId) -> Result<bool, BookError> {
        Ok(self.state.lock().peers.remove(id).is_some())
    }

    fn add_invite(&self, secret_hash: [u8; 32], expires_at: Timestamp) -> Result<(), BookError> {
        let mut s = self.state.lock();
        let horizon = Timestamp::now().secs - SPENT_INVITE_MEMORY_SECS;
        s.invites.retain(|_, (exp, _)| exp.secs > horizon);
        s.invites.insert(secret_hash, (expires_at, false));
        Ok(())
    }

    fn redeem_invite(
        &self,
        secret_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<InviteCheck, BookError> {
        let mut s = self.state.lock();
        Ok(match s.invites.get_mut(secret_hash) {
            None => InviteCheck::Unknown,
            Some((_, true)) => InviteCheck::Used,
            Some((exp, false)) if *exp <= now => InviteCheck::Expired,
            Some((_, used)) => {
                *used = true;
                InviteCheck::Valid
            }
        })
    }

    fn connection_request(&self, entry: &Peer) -> Result<(), BookError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.state.lock().peers.insert(entry.id, entry.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invites_are_one_time_and_expire() {
        let book = MemoryBook::new();
        let now = Timestamp::now();
        let later = Timestamp { secs: now.secs + 60, nanos: 0 };
        book.add_invite([1; 32], later).unwrap();
        book.add_invite([2; 32], now).unwrap();
        assert_eq!(book.redeem_invite(&[1; 32], now).unwrap(), InviteCheck::Valid);
        assert_eq!(book.redeem_invite(&[1; 32], now).unwrap(), InviteCheck::Used);
        assert_eq!(book.redeem_invite(&[2; 32], now).unwrap(), InviteCheck::Expired);
        assert_eq!(book.redeem_invite(&[3; 32], now).unwrap(), InviteCheck::Unknown);
    }
}
