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
//! | 14 | `.indra/history/` | fixed (the store never allocates ids below 16) |
//! | 15 | `.indra/snapshots/` | fixed |
//! | 16..2^56 | `vault/` | the store's node ids (`NodeId::FIRST_DYNAMIC` up) |
//! | 2^56..2^57 | `peers/` | entries of the peers' views |
//! | 2^57..3·2^56 | `realms/` | entries of the realm views |
//! | 3·2^56..4·2^56 | `.indra/history/` | 3·2^56 + a folder's node id, a history id or a version id |
//! | 4·2^56..5·2^56 | `.indra/snapshots/` | 4·2^56 + (snapshot number << 32) + manifest index |
//! | 5·2^56.. | none yet | one range of 2^56 per view to come |
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
use std::time::{Duration, Instant};

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
/// `.indra/history/`: holds `vault/`, the vault's folders with their files' versions.
pub const HISTORY: u64 = 14;
/// `.indra/snapshots/`: one folder per snapshot.
pub const SNAPSHOTS: u64 = 15;

/// Each view past the vault owns one range of this many inodes.
const RANGE: u64 = 1 << 56;
/// The end of the vault's node ids.
pub const VAULT_END: u64 = RANGE;
/// Inodes of entries under `peers/`.
pub const PEERS_ENTRIES: std::ops::Range<u64> = RANGE..2 * RANGE;
/// Inodes of entries under `realms/`.
pub const REALMS_ENTRIES: std::ops::Range<u64> = 2 * RANGE..3 * RANGE;
/// Inodes of entries under `.indra/history/`.
pub const HISTORY_ENTRIES: std::ops::Range<u64> = 3 * RANGE..4 * RANGE;
/// Inodes of entries under `.indra/snapshots/`.
pub const SNAPSHOT_ENTRIES: std::ops::Range<u64> = 4 * RANGE..5 * RANGE;
/// Snapshot numbers that have inodes: below 2^24, so that a number and a 32-bit manifest
/// index fit in one range.
const SNAPSHOT_NUMBERS: u32 = 1 << 24;

/// The inode of history id `id` under `.indra/history/`: a folder's node id (a live folder's
/// mirror, `vault/` itself for `NodeId::ROOT`, or a deleted folder), a file's history id (its
/// versions' folder) or a version id. All come from the store's node counter, so they never
/// collide and stay below 2^56.
pub fn of_history(id: u64) -> u64 {
    HISTORY_ENTRIES.start + (id & (RANGE - 1))
}

/// The id behind an inode of `.indra/history/`'s range; `None` outside it.
pub fn history_of(ino: u64) -> Option<u64> {
    HISTORY_ENTRIES.contains(&ino).then(|| ino - HISTORY_ENTRIES.start)
}

/// The inode of entry `index` of snapshot `number`'s manifest (0: the snapshot's folder);
/// `None` for a number too large to have inodes.
pub fn of_snapshot(number: u32, index: u32) -> Option<u64> {
    (number < SNAPSHOT_NUMBERS)
        .then(|| SNAPSHOT_ENTRIES.start + (u64::from(number) << 32) + u64::from(index))
}

/// The snapshot number and manifest index behind an inode of `.indra/snapshots/`'s range.
pub fn snapshot_of(ino: u64) -> Option<(u32, u32)> {
    let rel = ino.checked_sub(SNAPSHOT_ENTRIES.start).filter(|r| *r < RANGE)?;
    Some((u32::try_from(rel >> 32).ok()?, u32::try_from(rel & 0xffff_ffff).ok()?))
}

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
    History,
    Snapshots,
}

/// The view that owns `ino`, or `None` for an inode no view hands out.
pub fn view_of(ino: u64) -> Option<ViewId> {
    const PEERS_FIRST: u64 = PEERS_ENTRIES.start;
    const PEERS_END: u64 = PEERS_ENTRIES.end;
    const REALMS_FIRST: u64 = REALMS_ENTRIES.start;
    const REALMS_END: u64 = REALMS_ENTRIES.end;
    const HISTORY_FIRST: u64 = HISTORY_ENTRIES.start;
    const HISTORY_END: u64 = HISTORY_ENTRIES.end;
    const SNAPSHOTS_FIRST: u64 = SNAPSHOT_ENTRIES.start;
    const SNAPSHOTS_END: u64 = SNAPSHOT_ENTRIES.end;
    match ino {
        ROOT => Some(ViewId::Root),
        VAULT | NodeId::FIRST_DYNAMIC..VAULT_END => Some(ViewId::Vault),
        PEERS | PEERS_FIRST..PEERS_END => Some(ViewId::Peers),
        REALMS | REALMS_FIRST..REALMS_END => Some(ViewId::Realms),
        INDRA..=REALMS_JSON => Some(ViewId::Indra),
        HISTORY | HISTORY_FIRST..HISTORY_END => Some(ViewId::History),
        SNAPSHOTS | SNAPSHOTS_FIRST..SNAPSHOTS_END => Some(ViewId::Snapshots),
        _ => None,
    }
}

/// How many times the kernel has been handed each vault inode (lookup, create, readdirplus...)
/// and not yet forgotten it, and when it was last handed it. A node with no links is reaped
/// once the count and its open count reach zero. Inodes of other views are not counted.
#[derive(Debug)]
pub struct InodeTable {
    lookups: Mutex<HashMap<u64, Held>>,
    /// What `Held::at` counts from.
    start: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    lookups: u64,
    /// Seconds from `InodeTable::start` to the last time the kernel was handed the inode.
    at: u32,
}

impl Default for InodeTable {
    fn default() -> Self {
        InodeTable { lookups: Mutex::default(), start: Instant::now() }
    }
}

impl InodeTable {
    fn now(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        self.lookups.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn remember(&self, ino: u64) {
        if view_of(ino) != Some(ViewId::Vault) {
            return;
        }
        let at = self.now();
        let mut map = self.map();
        let held = map.entry(ino).or_insert(Held { lookups: 0, at });
        held.lookups += 1;
        held.at = at;
    }

    /// Drops `n` lookups; returns true when none remain.
    pub fn forget(&self, ino: u64, n: u64) -> bool {
        let mut map = self.map();
        match map.get_mut(&ino) {
            Some(held) if held.lookups > n => {
                held.lookups -= n;
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
        self.map().contains_key(&ino)
    }

    /// For each of `inos`, whether the kernel holds it and was handed it (with its entry and
    /// attributes) less than `within` ago: one lock for all of them.
    pub fn held_since(&self, inos: &[u64], within: Duration) -> Vec<bool> {
        let now = self.now();
        let within = u32::try_from(within.as_secs()).unwrap_or(u32::MAX);
        let map = self.map();
        inos.iter()
            .map(|ino| map.get(ino).is_some_and(|h| now.saturating_sub(h.at) < within))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map().len()
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
    fn held_inodes_are_those_known_and_handed_over_lately() {
        let t = InodeTable::default();
        t.remember(20);
        t.remember(21);
        assert!(!t.forget(21, 0));
        assert!(t.forget(21, 1));
        let within = Duration::from_secs(30);
        assert_eq!(t.held_since(&[20, 21, 22, PEERS], within), [true, false, false, false]);
        assert_eq!(t.held_since(&[20], Duration::ZERO), [false], "handed over too long ago");
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
            (HISTORY, Some(ViewId::History)),
            (SNAPSHOTS, Some(ViewId::Snapshots)),
            (NodeId::FIRST_DYNAMIC, Some(ViewId::Vault)),
            (VAULT_END - 1, Some(ViewId::Vault)),
            (PEERS_ENTRIES.start, Some(ViewId::Peers)),
            (PEERS_ENTRIES.end - 1, Some(ViewId::Peers)),
            (REALMS_ENTRIES.start, Some(ViewId::Realms)),
            (REALMS_ENTRIES.end - 1, Some(ViewId::Realms)),
            (HISTORY_ENTRIES.start, Some(ViewId::History)),
            (HISTORY_ENTRIES.end - 1, Some(ViewId::History)),
            (SNAPSHOT_ENTRIES.start, Some(ViewId::Snapshots)),
            (SNAPSHOT_ENTRIES.end - 1, Some(ViewId::Snapshots)),
            (SNAPSHOT_ENTRIES.end, None),
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
        assert_eq!(HISTORY_ENTRIES.start, REALMS_ENTRIES.end);
        assert_eq!(SNAPSHOT_ENTRIES.start, HISTORY_ENTRIES.end);
        assert_eq!(history_of(of_history(40)), Some(40));
        assert_eq!(history_of(40), None);
        let ino = of_snapshot(3, 7).expect("inode");
        assert_eq!(ino, SNAPSHOT_ENTRIES.start + (3 << 32) + 7);
        assert_eq!(snapshot_of(ino), Some((3, 7)));
        assert_eq!(
            of_snapshot(SNAPSHOT_NUMBERS - 1, u32::MAX).map(view_of),
            Some(Some(ViewId::Snapshots))
        );
        assert_eq!(of_snapshot(SNAPSHOT_NUMBERS, 0), None);
        assert_eq!(snapshot_of(SNAPSHOT_ENTRIES.end), None);
        assert_eq!(snapshot_of(SNAPSHOTS), None);
    }
}
