//! `realms/` (inode 4): one folder per realm, holding the artifacts that every member of the
//! realm can access, its entries numbered in `inode::REALMS_ENTRIES`. There are no realms yet,
//! so it is an empty folder. Read-only: every change gives `EROFS`. Its answers change without
//! a request from the kernel (when a member shares, recalls or leaves), so the kernel caches
//! none of them.

use std::sync::Arc;
use std::time::Duration;

use indras_artifacts::NodeKind;

use super::common::{Found, NO_TTL, ReadOnlyView, View, fixed_attr, fixed_listing};
use crate::error::{FsError, FsResult};
use crate::inode;
use crate::status::MountInfo;
use crate::types::{Attr, DirItem};

#[derive(Debug)]
pub(crate) struct RealmsView {
    info: Arc<MountInfo>,
}

impl RealmsView {
    pub(crate) fn new(info: Arc<MountInfo>) -> Self {
        RealmsView { info }
    }
}

impl View for RealmsView {
    fn getattr(&self, ino: u64) -> FsResult<Attr> {
        match ino {
            inode::REALMS => Ok(fixed_attr(&self.info, ino, NodeKind::Dir, 0o555, 2, 0)),
            _ => Err(FsError::errno(libc::ENOENT)),
        }
    }

    fn lookup(&self, _parent: u64, _name: &[u8]) -> FsResult<Found> {
        Err(FsError::errno(libc::ENOENT))
    }

    fn readdir(&self, dir: u64, offset: u64, _limit: usize) -> FsResult<Vec<DirItem>> {
        self.getattr(dir)?;
        Ok(fixed_listing(dir, inode::ROOT, offset, []))
    }

    fn ttl(&self) -> Duration {
        NO_TTL
    }
}

impl ReadOnlyView for RealmsView {
    fn open(&self, ino: u64) -> FsResult<Arc<[u8]>> {
        self.getattr(ino)?;
        Err(FsError::errno(libc::EISDIR))
    }
}
