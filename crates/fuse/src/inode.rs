//! Inode numbers and the kernel's lookup counts.
//!
//! Inode numbers are the store's persistent node ids, so they are stable across remounts and
//! never reused (the FUSE generation is always 0). The store never allocates ids 1 and
//! 3..=15; the mount uses them for its own root and virtual objects, listed here.

use std::collections::HashMap;
use std::sync::Mutex;

use indras_artifacts::NodeId;

/// The mount's root: holds `vault/`, `peers/`, `realms/` and `.indra/`.
pub const ROOT: u64 = 1;
/// `vault/`: the store's root tree.
pub const VAULT: u64 = NodeId::ROOT.0;
pub const PEERS: u64 = 3;
pub const REALMS: u64 = 4;
pub const INDRA: u64 = 5;
/// Files inside `.indra/`.
pub const PLAYER_JSON: u64 = 6;
pub const STATUS_JSON: u64 = 7;
pub const PEERS_JSON: u64 = 8;
pub const ATTENTION_LOG: u64 = 9;
pub const HEAT_JSON: u64 = 10;

/// Whether `ino` is one of the mount's own virtual objects rather than a vault node.
pub fn is_virtual(ino: u64) -> bool {
    ino < NodeId::FIRST_DYNAMIC && ino != VAULT
}

/// How many times the kernel has been handed each vault inode (lookup, create, readdirplus...)
/// and not yet forgotten it. A node with no links is reaped once this and its open count
/// reach zero.
#[derive(Debug, Default)]
pub struct InodeTable {
    lookups: Mutex<HashMap<u64, u64>>,
}

impl InodeTable {
    pub fn remember(&self, ino: u64) {
        if is_virtual(ino) {
            return;
        }
        *self
            .lookups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(ino)
            .or_default() += 1;
    }

    /// Drops `n` lookups; returns true when none remain.
    pub fn forget(&self, ino: u64, n: u64) -> bool {
        let mut map = self.lookups.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(&ino) {
            Some(count) if *count > n => {
                *count -= n;
                false
            }
            Some(_) => {
                map.remove(&ino);
                true
            }
            None => true,
        }
    }

    pub fn is_known(&self, ino: u64) -> bool {
        self.lookups.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains_key(&ino)
    }

    pub fn len(&self) -> usize {
        self.lookups.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_count_up_and_forget_counts_down() {
        let t = InodeTable::default();
        t.remember(20);
        t.remember(20);
        t.remember(PEERS);
        assert!(!t.is_known(PEERS), "virtual inodes are not counted");
        assert!(!t.forget(20, 1));
        assert!(t.is_known(20));
        assert!(t.forget(20, 1));
        assert!(!t.is_known(20));
        assert!(t.forget(99, 1), "forgetting an unknown inode is harmless");
    }

    #[test]
    fn reserved_inodes_are_virtual() {
        for ino in [
            ROOT,
            PEERS,
            REALMS,
            INDRA,
            PLAYER_JSON,
            STATUS_JSON,
            PEERS_JSON,
            ATTENTION_LOG,
            HEAT_JSON,
        ] {
            assert!(is_virtual(ino));
        }
        assert!(!is_virtual(VAULT));
        assert!(!is_virtual(NodeId::FIRST_DYNAMIC));
    }
}
