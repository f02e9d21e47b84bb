//! The mount's root (inode 1). It holds exactly `vault/`, `peers/`, `realms/` and `.indra/`,
//! each the root of its own view. Nothing in it changes: creating an entry gives `EPERM`, and
//! removing or renaming one of its folders `EBUSY`.

use std::sync::Arc;
use std::time::Duration;

use indras_artifacts::NodeKind;

use super::common::{
    Change, Found, ReadOnlyFile, ReadOnlyView, TTL, View, fixed_attr, fixed_listing, read_only,
};
use crate::error::{FsError, FsResult};
use crate::inode;
use crate::status::MountInfo;
use crate::types::{Attr, DirItem};

/// The root's entries, in listing order.
const ENTRIES: [(u64, &[u8]); 4] = [
    (inode::VAULT, b"vault"),
    (inode::PEERS, b"peers"),
    (inode::REALMS, b"realms"),
    (inode::INDRA, b".indra"),
];

#[derive(Debug)]
pub(crate) struct RootView {
    info: Arc<MountInfo>,
}

impl RootView {
    pub(crate) fn new(info: Arc<MountInfo>) -> Self {
        RootView { info }
    }
}

impl View for RootView {
    fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if ino != inode::ROOT {
            return Err(FsError::errno(libc::ENOENT));
        }
        // Two links of its own, and one from each folder's "..".
        Ok(fixed_attr(&self.info, ino, NodeKind::Dir, 0o755, 2 + ENTRIES.len() as u32, 0))
    }

    fn lookup(&self, _parent: u64, name: &[u8]) -> FsResult<Found> {
        ENTRIES
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(ino, _)| Found::ViewRoot(*ino))
            .ok_or_else(|| FsError::errno(libc::ENOENT))
    }

    fn readdir(&self, dir: u64, offset: u64, _limit: usize) -> FsResult<Vec<DirItem>> {
        let entries = ENTRIES.iter().map(|(ino, name)| (*ino, NodeKind::Dir, *name));
        Ok(fixed_listing(dir, inode::ROOT, offset, entries))
    }

    fn ttl(&self, _ino: u64) -> Duration {
        TTL
    }
}

impl ReadOnlyView for RootView {
    fn open(&self, _ino: u64) -> FsResult<ReadOnlyFile> {
        Err(FsError::errno(libc::EISDIR))
    }

    fn refuse(&self, change: Change<'_>) -> FsError {
        match change {
            Change::AddEntry => {
                FsError::new(libc::EPERM, "the mount's root holds only its fixed folders")
            }
            Change::RemoveEntry(name) if ENTRIES.iter().any(|(_, n)| *n == name) => {
                FsError::new(libc::EBUSY, "the mount's fixed folders cannot be removed")
            }
            Change::RemoveEntry(_) => FsError::errno(libc::ENOENT),
            Change::Rename => {
                FsError::new(libc::EBUSY, "the mount's fixed folders cannot be renamed")
            }
            Change::Modify | Change::Link => read_only(change),
        }
    }
}
