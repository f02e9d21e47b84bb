//! A snapshot's manifest in memory, and the snapshots' state the `Vault` holds. Depends on
//! nothing else in the vault.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::{Hash, NodeId, NodeKind, Timestamp};

/// One entry of a snapshot, as the vault had it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapEntry {
    /// 0 for the vault's root, 1 for its entries, and so on.
    pub depth: u32,
    pub name: Vec<u8>,
    pub node: NodeId,
    pub kind: NodeKind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub size: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub leaf: Option<Hash>,
    pub symlink: Option<Vec<u8>>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A snapshot's manifest, with its folders' children found.
#[derive(Debug)]
pub struct Manifest {
    pub entries: Vec<SnapEntry>,
    /// Each folder's children (indexes into `entries`), in name order.
    kids: HashMap<u32, Vec<u32>>,
}

impl Manifest {
    pub(crate) fn new(entries: Vec<SnapEntry>) -> Result<Manifest> {
        let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut path: Vec<u32> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let i = u32::try_from(i)
                .map_err(|_| Error::CorruptRecord("snapshot", "too many entries".into()))?;
            let depth = e.depth as usize;
            if depth > path.len() || (depth == 0) != (i == 0) {
                return Err(Error::CorruptRecord("snapshot", format!("entry {i} is out of place")));
            }
            path.truncate(depth);
            if let Some(parent) = path.last() {
                kids.entry(*parent).or_default().push(i);
            }
            path.push(i);
        }
        Ok(Manifest { entries, kids })
    }

    /// The children of entry `dir`, in name order.
    pub fn children(&self, dir: u32) -> &[u32] {
        self.kids.get(&dir).map_or(&[], Vec::as_slice)
    }

    /// The child of `dir` named `name`.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Option<u32> {
        let kids = self.children(dir);
        kids.binary_search_by(|k| self.entries[*k as usize].name.as_slice().cmp(name))
            .ok()
            .map(|i| kids[i])
    }

    pub fn entry(&self, i: u32) -> Option<&SnapEntry> {
        self.entries.get(i as usize)
    }
}

/// Snapshots' state in memory.
#[derive(Debug, Default)]
pub(crate) struct SnapshotState {
    /// Taken by snapshot creation for its whole length, and by GC before the staging lock.
    pub(crate) gate: Mutex<()>,
    /// Manifests read, by their leaf.
    pub(crate) manifests: Mutex<HashMap<Hash, Arc<Manifest>>>,
    /// Every leaf any snapshot names; `None` after a change of the snapshots.
    pub(crate) held: Mutex<Option<Arc<HashSet<Hash>>>>,
}
