//! What every view shares: the `View` and `ReadOnlyView` traits, the `Change` a read-only
//! view refuses, how long the kernel may cache answers, the attributes and listings of the
//! mount's own fixed folders and files, and `Stamped`, a value worked out from the store
//! that is reused while the store is unchanged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use indras_artifacts::{NodeId, NodeKind};

use crate::error::{FsError, FsResult};
use crate::status::MountInfo;
use crate::types::{Attr, BLKSIZE, DirItem};

/// How long the kernel may cache names (including a name's absence) and attributes of vault
/// nodes and of the mount's root. Every change goes through this mount, and the kernel
/// updates or invalidates what its own operations touch: after a write it asks for attributes
/// again, after create, unlink, rename or link it replaces the entries involved. A repeated
/// `stat` of an unchanged file therefore never reaches the daemon.
pub(crate) const TTL: Duration = Duration::from_secs(60);
/// For views whose answers change without a request through this mount and without the
/// daemon telling the kernel (rendered files, which change size between renders): the kernel
/// caches nothing.
pub(crate) const NO_TTL: Duration = Duration::ZERO;

/// What a lookup found.
#[derive(Debug)]
pub(crate) enum Found {
    /// An entry of the view itself, with its attributes.
    Entry(Attr),
    /// The root of another view, which answers for its attributes.
    ViewRoot(u64),
}

/// The reading operations, which every view answers for its own inodes.
pub(crate) trait View: Send + Sync + std::fmt::Debug {
    fn getattr(&self, ino: u64) -> FsResult<Attr>;

    /// `name` in the directory `parent`.
    fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Found>;

    /// Entries of the directory `dir` after cookie `offset` (0 for the start), at most about
    /// `limit`. Cookies: 1 and 2 follow "." and ".."; an entry at position p is followed by
    /// p + 2.
    fn readdir(&self, dir: u64, offset: u64, limit: usize) -> FsResult<Vec<DirItem>>;

    fn readlink(&self, _ino: u64) -> FsResult<Vec<u8>> {
        Err(FsError::errno(libc::EINVAL))
    }

    fn getxattr(&self, _ino: u64, _name: &[u8]) -> FsResult<Vec<u8>> {
        Err(FsError::errno(libc::ENODATA))
    }

    /// The names of the extended attributes, each NUL-terminated.
    fn listxattr(&self, _ino: u64) -> FsResult<Vec<u8>> {
        Ok(Vec::new())
    }

    /// The kernel holds one more lookup of `ino`.
    fn remember(&self, _ino: u64) {}

    /// The kernel dropped `n` lookups of `ino`.
    fn forget(&self, _ino: u64, _n: u64) {}

    /// How long the kernel may cache the attributes and entry of `ino`, one of this view's
    /// inodes.
    fn ttl(&self, ino: u64) -> Duration;

    /// How long the kernel may cache a name's absence from this view's directories; `None`:
    /// not at all.
    fn negative_ttl(&self) -> Option<Duration> {
        None
    }
}

/// A value worked out from the store at a write count (`Vault::write_count`), reused while
/// the store is unchanged and it is younger than a limit (what depends on the clock alone,
/// such as heat's decay or a timed grant's end, moves little meanwhile).
#[derive(Debug)]
pub(crate) struct Stamped<T> {
    at: Instant,
    writes: u64,
    value: T,
}

impl<T: Clone> Stamped<T> {
    pub(crate) fn new(writes: u64, value: T) -> Self {
        Stamped { at: Instant::now(), writes, value }
    }

    /// The value, if the store is still at `writes` and it is younger than `limit`.
    pub(crate) fn get(&self, writes: u64, limit: Duration) -> Option<T> {
        (self.writes == writes && self.at.elapsed() < limit).then(|| self.value.clone())
    }
}

/// A change asked of a read-only view.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Change<'a> {
    /// `setattr`, `setxattr`, `removexattr`, or an open for writing or truncating.
    Modify,
    /// A new entry in this directory: `create`, `mkdir`, `mknod`, `symlink`, or a `link` to it.
    AddEntry,
    /// `unlink` or `rmdir` of this name in this directory.
    RemoveEntry(&'a [u8]),
    /// A `rename` out of or into this directory.
    Rename,
    /// A hard link to this inode.
    Link,
}

/// How a read-only view serves an opened file.
#[derive(Debug)]
pub(crate) enum ReadOnlyFile {
    /// The whole content, fixed for the handle when it was opened; read with direct I/O.
    Rendered(Arc<[u8]>),
    /// Read from the view at each `read` (`ReadOnlyView::read`), at any offset.
    Streamed {
        /// Whether the kernel may keep the page cache from earlier opens.
        keep_cache: bool,
        /// Whether every read must reach the view (no page cache).
        direct_io: bool,
    },
}

/// A view that changes nothing.
pub(crate) trait ReadOnlyView: View {
    /// Opens the file `ino` for reading.
    fn open(&self, ino: u64) -> FsResult<ReadOnlyFile>;

    /// Up to `size` bytes of the file `ino` from `offset`, for a file opened as
    /// `ReadOnlyFile::Streamed`.
    fn read(&self, _ino: u64, _offset: u64, _size: u32) -> FsResult<Vec<u8>> {
        Err(FsError::errno(libc::EBADF))
    }

    /// The error `change` gets.
    fn refuse(&self, change: Change<'_>) -> FsError {
        read_only(change)
    }

    /// The entry (what a peer shares with us: a mirror entry's id) that `ino` shows, if any:
    /// opening it, closing it and listing it from the start are attention on that entry,
    /// which `VaultFs` records (`Attention::opened_entry` and the like) and which goes to the
    /// entry's steward. `None` (the default) for the mount's own files and folders.
    fn attention_entry(&self, _ino: u64) -> Option<NodeId> {
        None
    }
}

/// What a read-only part of the mount answers to a change: `EPERM` for a hard link to one of
/// its inodes (as Linux answers for a directory), `EROFS` for everything else.
pub(crate) fn read_only(change: Change<'_>) -> FsError {
    match change {
        Change::Link => FsError::errno(libc::EPERM),
        Change::Modify | Change::AddEntry | Change::RemoveEntry(_) | Change::Rename => {
            FsError::new(libc::EROFS, "this part of the mount is read-only")
        }
    }
}

/// What a view without ACLs answers to a `system.*` attribute (as the vault does): `ls -l`
/// and `cp -a` then stop asking for ACLs on this filesystem, instead of asking for every file.
pub(crate) fn no_acls(name: &[u8]) -> Option<FsError> {
    name.starts_with(b"system.")
        .then(|| FsError::new(libc::EOPNOTSUPP, "system.* attributes (ACLs) are not supported"))
}

/// The attributes of one of the mount's own folders or files: owned by the user who
/// mounted, every time the mount's start.
pub(crate) fn fixed_attr(
    info: &MountInfo,
    ino: u64,
    kind: NodeKind,
    perm: u16,
    nlink: u32,
    size: u64,
) -> Attr {
    owned_attr(info, ino, kind, perm, nlink, size, info.mounted_at.to_system())
}

/// The attributes of an entry that is not a vault node: owned by the user who mounted,
/// every time `t`.
pub(crate) fn owned_attr(
    info: &MountInfo,
    ino: u64,
    kind: NodeKind,
    perm: u16,
    nlink: u32,
    size: u64,
    t: std::time::SystemTime,
) -> Attr {
    Attr {
        ino,
        size,
        blocks: size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm,
        nlink,
        uid: info.uid,
        gid: info.gid,
        rdev: 0,
        blksize: BLKSIZE,
    }
}

/// "." and ".." of the directory `dir`, those of them after cookie `offset`.
pub(crate) fn dots(dir: u64, parent: u64, offset: u64) -> Vec<DirItem> {
    let mut out = Vec::new();
    if offset < 1 {
        out.push(DirItem { ino: dir, offset: 1, kind: NodeKind::Dir, name: b".".to_vec() });
    }
    if offset < 2 {
        out.push(DirItem { ino: parent, offset: 2, kind: NodeKind::Dir, name: b"..".to_vec() });
    }
    out
}

/// The listing of a fixed folder after cookie `offset`: its dots, then `entries`.
pub(crate) fn fixed_listing<'a>(
    dir: u64,
    parent: u64,
    offset: u64,
    entries: impl IntoIterator<Item = (u64, NodeKind, &'a [u8])>,
) -> Vec<DirItem> {
    let mut out = dots(dir, parent, offset);
    for (cookie, (ino, kind, name)) in (3..).zip(entries) {
        if cookie > offset {
            out.push(DirItem { ino, offset: cookie, kind, name: name.to_vec() });
        }
    }
    out
}
