//! `peers/` (inode 3): what each peer grants us, one folder per peer, its entries numbered in
//! `inode::PEERS_ENTRIES`. No peer grants anything yet, so it is an empty folder. Read-only:
//! every change gives `EROFS`. Its answers change without a request from the kernel (when a
//! peer grants or recalls), so the kernel caches none of them.

use std::sync::Arc;
use std::time::Duration;

use indras_artifacts::NodeKind;

use super::common::{Found, NO_TTL, ReadOnlyView, View, fixed_attr, fixed_listing};
use crate::error::{FsError, FsResult};
use crate::inode;
use crate::status::MountInfo;
use crate::types::{Attr, DirItem};

#[derive(Debug)]
pub(crate) struct PeersView {
    info: Arc<MountInfo>,
}

impl PeersView {
    pub(crate) fn new(info: Arc<MountInfo>) -> Self {
        PeersView { info }
    }
}

impl View for PeersView {
    fn getattr(&self, ino: u64) -> FsResult<Attr> {
        match ino {
            inode::PEERS => Ok(fixed_attr(&self.info, ino, NodeKind::Dir, 0o555, 2, 0)),
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

impl ReadOnlyView for PeersView {
    fn open(&self, ino: u64) -> FsResult<Arc<[u8]>> {
        self.getattr(ino)?;
        Err(FsError::errno(libc::EISDIR))
    }
}
