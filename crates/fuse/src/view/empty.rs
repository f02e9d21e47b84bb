//! A fixed folder of the mount with nothing in it yet: `realms/` (inode 4; one folder per
//! realm, holding the artifacts every member can access, numbered in
//! `inode::REALMS_ENTRIES`). There are no realms yet. Read-only: every change gives `EROFS`.
//! Its answers will change without a request from the kernel (when a member shares or
//! leaves), so the kernel caches none of them.

use std::sync::Arc;
use std::time::Duration;

use indras_artifacts::NodeKind;

use super::common::{Found, NO_TTL, ReadOnlyFile, ReadOnlyView, View, fixed_attr, fixed_listing};
use crate::error::{FsError, FsResult};
use crate::inode;
use crate::status::MountInfo;
use crate::types::{Attr, DirItem};

#[derive(Debug)]
pub(crate) struct EmptyView {
    info: Arc<MountInfo>,
    /// The folder's inode.
    ino: u64,
}

impl EmptyView {
    pub(crate) fn new(info: Arc<MountInfo>, ino: u64) -> Self {
        EmptyView { info, ino }
    }
}

impl View for EmptyView {
    fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if ino == self.ino {
            Ok(fixed_attr(&self.info, ino, NodeKind::Dir, 0o555, 2, 0))
        } else {
            Err(FsError::errno(libc::ENOENT))
        }
    }

    fn lookup(&self, _parent: u64, _name: &[u8]) -> FsResult<Found> {
        Err(FsError::errno(libc::ENOENT))
    }

    fn readdir(&self, dir: u64, offset: u64, _limit: usize) -> FsResult<Vec<DirItem>> {
        self.getattr(dir)?;
        Ok(fixed_listing(dir, inode::ROOT, offset, []))
    }

    fn ttl(&self, _ino: u64) -> Duration {
        NO_TTL
    }
}

impl ReadOnlyView for EmptyView {
    fn open(&self, ino: u64) -> FsResult<ReadOnlyFile> {
        self.getattr(ino)?;
        Err(FsError::errno(libc::EISDIR))
    }
}
