//! Inode numbers: which view of the mount owns each one (`view_of`, the only place that
//! decides), and the kernel's lookup counts of vault inodes.
//!
//! # Ranges
//!
//! | inodes | view | why |
//! |---|---|---|
//! | 1 | the mount's root | FUSE's root is always 1 |
//! | 2 | `vault/` | the store's root tree, `NodeId::ROOT` |
//! | 3 | `peers/` | fixed |
//! | 4 | `realms/` | fixed |
//! | 5..=13 | `.indra/` and its files | fixed |
//! | 14, 15 | none yet | the store never allocates them: kept for the mount's next fixed folders and files |
//! | 16..2^56 | `vault/` | the store's node ids (`NodeId::FIRST_DYNAMIC` up) |
//! | 2^56..2^57 | `peers/` | entries of the peers' views |
//! | 2^57..3·2^56 | `realms/` | entries of the realm views |
//! | 3·2^56.. | none yet | one range of 2^56 per view to come (history, snapshots) |
//!
//! Vault inodes are the store's persistent node ids, so they are stable across remounts and
//! never reused (the FUSE generation is always 0). The store's ids come from a counter that
//! only grows; at a million creations a second it would take over 2,000 years to reach 2^56,
//! so a vault inode never falls into another view's range. Views that are not the vault hand
//! out inodes in their own range, for entries that are not vault nodes.
//!
//! Inodes of 2^32 and above are 64-bit: a 32-bit program built without large-file support
//! gets `EOVERFLOW` from `stat` on them, as on XFS or btrfs.

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
pub const SYNC_STATUS_JSON: u64 = 11;
pub const HEAT_HTML: u64 = 12;
/// `.indra/realms.json`.
pub const REALMS_JSON: u64 = 13;

/// Each view past the vault owns one range of this many inodes.
const RANGE: u64 = 1 << 56;
/// The end of the vault's node ids.
pub const VAULT_END: u64 = RANGE;
/// Inodes of entries under `peers/`.
pub const PEERS_ENTRIES: std::ops::Range<u64> = RANGE..2 * RANGE;
/// Inodes of entries under `realms/`.
pub const REALMS_ENTRIES: std::ops::Range<u64> = 2 * RANGE..3 * RANGE;

/// The inode of mirror entry `id` (`Vault::mirror_entry`): `peers/` itself for
/// `MirrorEntry::TOP`, else `PEERS_ENTRIES.start + id`. Mirror ids come from the store's node
/// counter, so they stay below 2^56 as vault inodes do.
pub fn of_mirror(id: NodeId) -> u64 {
    if id == indras_artifacts::MirrorEntry::TOP { PEERS } else { PEERS_ENTRIES.start + id.0 }
}

/// The mirror entry behind a `peers/` inode: `MirrorEntry::TOP` for `peers/` itself; `None`
/// for an inode outside `peers/`.
pub fn mirror_of(ino: u64) -> Option<NodeId> {
    match ino {
        PEERS => Some(indras_artifacts::MirrorEntry::TOP),
        i if PEERS_ENTRIES.contains(&i) && i > PEERS_ENTRIES.start => {
            Some(NodeId(i - PEERS_ENTRIES.start))
        }
        _ => None,
    }
}

/// The inode of realm-view entry `id` (a realm's local id, a mirror entry's id or one of our
/// nodes: all from the store's node counter, so they never collide): `realms/` itself for
/// `MirrorEntry::TOP`, else `REALMS_ENTRIES.start + id`.
pub fn of_realm(id: NodeId) -> u64 {
    if id == indras_artifacts::MirrorEntry::TOP { REALMS } else { REALMS_ENTRIES.start + id.0 }
}

/// The id behind a `realms/` inode: `MirrorEntry::TOP` for `realms/` itself; `None` for an
/// inode outside `realms/`.
pub fn realm_of(ino: u64) -> Option<NodeId> {
    match ino {
        REALMS => Some(indras_artifacts::MirrorEntry::TOP),
        i if REALMS_ENTRIES.contains(&i) && i > REALMS_ENTRIES.start => {
            Some(NodeId(i - REALMS_ENTRIES.start))
        }
        _ => None,
    }
}

/// The views of the mount, one for each part of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewId {
    Root,
    Vault,
    Peers,
    Realms,
    Indra,
}

/// The view that owns `ino`, or `None` for an inode no view hands out.
pub fn view_of(ino: u64) -> Option<ViewId> {
    const PEERS_FIRST: u64 = PEERS_ENTRIES.start;
    const PEERS_END: u64 = PEERS_ENTRIES.end;
    const REALMS_FIRST: u64 = REALMS_ENTRIES.start;
    const REALMS_END: u64 = REALMS_ENTRIES.end;
    match ino {
        ROOT => Some(ViewId::Root),
        VAULT | NodeId::FIRST_DYNAMIC..VAULT_END => Some(ViewId::Vault),
        PEERS | PEERS_FIRST..PEERS_END => Some(ViewId::Peers),
        REALMS | REALMS_FIRST..REALMS_END => Some(ViewId::Realms),
        INDRA..=REALMS_JSON => Some(ViewId::Indra),
        _ => None,
    }
}

/// How many times the kernel has been handed each vault inode (lookup, create, readdirplus...)
/// and not yet forgotten it. A node with no links is reaped once this and its open count
/// reach zero. Inodes of other views are not counted.
#[derive(Debug, Default)]
pub struct InodeTable {
    lookups: Mutex<HashMap<u64, u64>>,
}

impl InodeTable {
    pub fn remember(&self, ino: u64) {
        if view_of(ino) != Some(ViewId::Vault) {
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
    fn every_inode_has_at_most_one_view() {
        for (ino, view) in [
            (ROOT, Some(ViewId::Root)),
            (VAULT, Some(ViewId::Vault)),
            (PEERS, Some(ViewId::Peers)),
            (REALMS, Some(ViewId::Realms)),
            (INDRA, Some(ViewId::Indra)),
            (PLAYER_JSON, Some(ViewId::Indra)),
            (STATUS_JSON, Some(ViewId::Indra)),
            (PEERS_JSON, Some(ViewId::Indra)),
            (ATTENTION_LOG, Some(ViewId::Indra)),
            (HEAT_JSON, Some(ViewId::Indra)),
            (SYNC_STATUS_JSON, Some(ViewId::Indra)),
            (HEAT_HTML, Some(ViewId::Indra)),
            (REALMS_JSON, Some(ViewId::Indra)),
            (0, None),
            (14, None),
            (15, None),
            (NodeId::FIRST_DYNAMIC, Some(ViewId::Vault)),
            (VAULT_END - 1, Some(ViewId::Vault)),
            (PEERS_ENTRIES.start, Some(ViewId::Peers)),
            (PEERS_ENTRIES.end - 1, Some(ViewId::Peers)),
            (REALMS_ENTRIES.start, Some(ViewId::Realms)),
            (REALMS_ENTRIES.end - 1, Some(ViewId::Realms)),
            (REALMS_ENTRIES.end, None),
            (u64::MAX, None),
        ] {
            assert_eq!(view_of(ino), view, "inode {ino}");
        }
        assert_eq!(PEERS_ENTRIES.start, VAULT_END);
        let top = indras_artifacts::MirrorEntry::TOP;
        assert_eq!((of_mirror(top), mirror_of(PEERS)), (PEERS, Some(top)));
        assert_eq!(of_mirror(NodeId(40)), PEERS_ENTRIES.start + 40);
        assert_eq!(mirror_of(PEERS_ENTRIES.start + 40), Some(NodeId(40)));
        assert_eq!(mirror_of(PEERS_ENTRIES.start), None, "no entry has id 0 but TOP");
        assert_eq!(mirror_of(40), None);
        assert_eq!(mirror_of(REALMS_ENTRIES.start), None);
        assert_eq!(REALMS_ENTRIES.start, PEERS_ENTRIES.end);
    }
}
