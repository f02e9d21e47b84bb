//! Reaping unlinked nodes. A vault node whose last link goes is an orphan: it keeps its
//! content, so open handles can still read it. Once neither the kernel (a lookup) nor a handle
//! holds it, it is queued, and the mount's background thread deletes the queue in one
//! transaction (`reap_queued`). Until then it is an orphan in the store too, which the next
//! open of the store reaps if the process dies first.
//!
//! Both sets are leaf locks, held for one lookup or update.

use std::collections::HashSet;
use std::sync::Mutex;

use indras_artifacts::{Commit, NodeId, Vault};

use crate::error::FsResult;
use crate::open_files::lock;

#[derive(Debug, Default)]
pub(crate) struct Reaper {
    /// Nodes that lost their last link during this mount and wait to be reaped.
    orphans: Mutex<HashSet<u64>>,
    /// Orphans nothing holds any more, deleted in one transaction per batch.
    queue: Mutex<Vec<u64>>,
}

impl Reaper {
    /// Notes that `ino` has lost its last link.
    pub(crate) fn orphaned(&self, ino: u64) {
        lock(&self.orphans).insert(ino);
    }

    pub(crate) fn is_orphan(&self, ino: u64) -> bool {
        lock(&self.orphans).contains(&ino)
    }

    /// Queues `ino`, which nothing holds any more, if it is an orphan.
    pub(crate) fn release(&self, ino: u64) {
        if lock(&self.orphans).remove(&ino) {
            lock(&self.queue).push(ino);
        }
    }

    /// Deletes the queued nodes, all in one transaction; returns how many.
    pub(crate) fn reap_queued(&self, vault: &Vault) -> FsResult<usize> {
        let ids: Vec<NodeId> =
            std::mem::take(&mut *lock(&self.queue)).into_iter().map(NodeId).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        vault.reap_all(&ids, Commit::CrashConsistent)?;
        Ok(ids.len())
    }
}
