//! The plain values `VaultFs` operations take and return: who asks (`Ctx`), what `stat`
//! reports (`Attr`), directory entries, `setattr` requests, opened handles and `statfs`
//! figures. They know nothing of the FUSE protocol; `adapter` converts them.

use std::time::SystemTime;

use indras_artifacts::NodeKind;

/// Who is asking.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

/// What `stat` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub crtime: SystemTime,
    pub kind: NodeKind,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

/// The block size `stat` reports.
pub const BLKSIZE: u32 = 4096;

/// One directory entry of a listing. `offset` is the cookie that resumes after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirItem {
    pub ino: u64,
    pub offset: u64,
    pub kind: NodeKind,
    pub name: Vec<u8>,
}

/// What a listing hands each entry to as it reads it (`VaultFs::readdir_each`): the entry's
/// inode, cookie, kind and name; it returns false to stop.
pub type EachEntry<'a> = dyn FnMut(u64, u64, NodeKind, &[u8]) -> bool + 'a;

/// Hands `items` to `f` in order until it refuses one: how many it was handed (the refused
/// one included), and whether it refused one.
pub(crate) fn each_item(items: &[DirItem], f: &mut EachEntry<'_>) -> (usize, bool) {
    for (i, it) in items.iter().enumerate() {
        if !f(it.ino, it.offset, it.kind, &it.name) {
            return (i + 1, true);
        }
    }
    (items.len(), false)
}

/// A time to set: the current time, or a given one.
#[derive(Clone, Copy, Debug)]
pub enum TimeSet {
    Now,
    At(SystemTime),
}

/// A `setattr` request.
#[derive(Clone, Debug, Default)]
pub struct SetAttrReq {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub ctime: Option<SystemTime>,
    pub fh: Option<u64>,
}

/// An opened file or directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub fh: u64,
    /// Keep the kernel's page cache from earlier opens (the content has not changed since).
    pub keep_cache: bool,
    /// Bypass the page cache (virtual files, whose size is only known at open).
    pub direct_io: bool,
    /// The kernel need not send `flush` at each `close(2)`: a read-only handle has nothing
    /// to commit, and skipping the request saves a round trip per open file.
    pub no_flush: bool,
}

/// `statfs` figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}
