//! `VaultFs`: the filesystem, independent of the FUSE protocol. Every operation takes plain
//! arguments and returns a plain struct or an `FsError` with the errno inside, so tests drive
//! it without a kernel; `adapter` is the thin layer that speaks fuser.
//!
//! # State and lock order
//! - `open`: node -> `OpenNode` (handle count, write buffer). Handles are counted, and idle
//!   entries removed, while this map is locked.
//! - `OpenNode` mutex: serialises writes, reads of dirty content and commits of one file.
//! - `handles` (fh -> `Handle`), `orphans`, `reap_queue` and the inode table are leaf locks,
//!   held only for one lookup or update.
//! - The store (`Vault`) has its own transactions; it is called with at most one `OpenNode`
//!   locked.
//!
//! Order: `OpenNode`, then a leaf lock, then the store. The `open` map is never held while
//! waiting for an `OpenNode` (a commit can hold one for long).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use indras_artifacts::{
    Commit, FILE_SIZE_MAX, NewNode, Node, NodeId, NodeKind, RenameMode, SetAttr, Timestamp, Vault,
    XattrMode,
};

use crate::attention::{Attention, AttentionConfig, Clock, SystemClock};
use crate::buffer::WriteBuffer;
use crate::error::{FsError, FsResult};
use crate::inode::{self, InodeTable};
use crate::virtual_files::{self, MountInfo};

/// Longest symlink target, as Linux's `PATH_MAX` including the NUL.
const SYMLINK_MAX: usize = 4095;
const BLKSIZE: u32 = 4096;

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

/// One directory entry of a listing. `offset` is the cookie that resumes after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirItem {
    pub ino: u64,
    pub offset: u64,
    pub kind: NodeKind,
    pub name: Vec<u8>,
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

/// A file that has open handles or uncommitted writes.
#[derive(Debug)]
struct OpenNode {
    /// Open handles; changes only while the `open` map is locked.
    handles: AtomicU32,
    /// Handles that `execve(2)` opened: the file is a program being run.
    executing: AtomicU32,
    state: Mutex<FileState>,
}

#[derive(Debug)]
struct FileState {
    buffer: Option<WriteBuffer>,
    /// Time of the last write, which becomes the committed mtime.
    written_at: Timestamp,
}

#[derive(Debug)]
enum Handle {
    File {
        ino: u64,
        node: Arc<OpenNode>,
        append: bool,
        /// Opened by `execve(2)` to run the file.
        exec: bool,
        opened_at: Option<Timestamp>,
    },
    Dir,
    Virtual {
        data: Arc<[u8]>,
    },
}

/// The bit the kernel sets in the flags of `execve(2)`'s open of the program (its internal
/// `__FMODE_EXEC`); no `open(2)` flag uses it.
const OPEN_EXEC: i32 = 0x20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn node_id(ino: u64) -> NodeId {
    NodeId(ino)
}

fn erofs() -> FsError {
    FsError::new(libc::EROFS, "this part of the mount is read-only")
}

/// The computed extended attributes, offered as `user.indra.<name>` (what `getfattr -d`,
/// `cp --preserve=xattr` and `rsync -X` handle) and accepted as `indra.<name>` too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IndraXattr {
    Heat,
    Steward,
    AccessMode,
    Id,
    TreeType,
}

impl IndraXattr {
    const ALL: [IndraXattr; 5] = [
        IndraXattr::Heat,
        IndraXattr::Steward,
        IndraXattr::AccessMode,
        IndraXattr::Id,
        IndraXattr::TreeType,
    ];

    fn name(self) -> &'static str {
        match self {
            IndraXattr::Heat => "heat",
            IndraXattr::Steward => "steward",
            IndraXattr::AccessMode => "access_mode",
            IndraXattr::Id => "id",
            IndraXattr::TreeType => "tree_type",
        }
    }

    fn parse(name: &[u8]) -> Option<Self> {
        let key = name.strip_prefix(b"user.indra.").or_else(|| name.strip_prefix(b"indra."))?;
        IndraXattr::ALL.into_iter().find(|k| k.name().as_bytes() == key)
    }
}

/// The filesystem over one vault.
pub struct VaultFs {
    vault: Arc<Vault>,
    info: MountInfo,
    attention: Attention,
    /// Sizes of recently rendered virtual files, so `stat` does not render each time.
    rendered: Mutex<HashMap<u64, (std::time::Instant, u64)>>,
    inodes: InodeTable,
    open: Mutex<HashMap<u64, Arc<OpenNode>>>,
    handles: Mutex<HashMap<u64, Handle>>,
    /// Nodes that lost their last link during this mount and wait to be reaped.
    orphans: Mutex<HashSet<u64>>,
    /// Unlinked nodes nothing holds any more, deleted in one transaction per batch.
    reap_queue: Mutex<Vec<u64>>,
    next_fh: AtomicU64,
    /// Counts commits of file content, so an attribute read can tell that a commit (and
    /// maybe a release that dropped the file's buffer) slipped in after it read the node.
    commits: AtomicU64,
}

impl std::fmt::Debug for VaultFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultFs").field("info", &self.info).finish_non_exhaustive()
    }
}

impl VaultFs {
    /// A filesystem with attention on and the system clock.
    pub fn new(vault: Arc<Vault>, info: MountInfo) -> FsResult<Self> {
        Self::with_attention(vault, info, Arc::new(SystemClock), AttentionConfig::default())
    }

    pub fn with_attention(
        vault: Arc<Vault>,
        info: MountInfo,
        clock: Arc<dyn Clock>,
        config: AttentionConfig,
    ) -> FsResult<Self> {
        // A brand-new vault's root belongs to whoever mounts it first.
        let root = vault.node(NodeId::ROOT)?;
        if root.ctime == root.crtime
            && vault.list(NodeId::ROOT, 0, 1)?.is_empty()
            && root.uid != info.uid
        {
            let attr = SetAttr { uid: Some(info.uid), gid: Some(info.gid), ..SetAttr::default() };
            vault.set_attr(NodeId::ROOT, &attr, root.crtime, Commit::Durable)?;
        }
        Ok(VaultFs {
            attention: Attention::new(vault.clone(), clock, config),
            rendered: Mutex::new(HashMap::new()),
            vault,
            info,
            inodes: InodeTable::default(),
            open: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashSet::new()),
            reap_queue: Mutex::new(Vec::new()),
            next_fh: AtomicU64::new(1),
            commits: AtomicU64::new(0),
        })
    }

    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    pub fn info(&self) -> &MountInfo {
        &self.info
    }

    pub fn attention(&self) -> &Attention {
        &self.attention
    }

    // ----- attributes -----

    /// The attributes of the node `read` returns, with an open file's pending writes.
    ///
    /// The node is read again, under the file's lock, when the file is open or when a commit
    /// ran since `read` began: the first read may predate a commit that has since taken the
    /// buffer. Reporting its size would hand the kernel a size older than writes it has seen
    /// answered, and the kernel would keep it for the TTL (a reader would then see a short
    /// or empty file).
    fn attr_from(&self, read: impl FnOnce() -> FsResult<Node>) -> FsResult<Attr> {
        let seen = self.commits.load(Ordering::Acquire);
        let node = read()?;
        if node.kind != NodeKind::File {
            return Ok(Self::attr_of(&node, None));
        }
        let open = lock(&self.open).get(&node.id.0).cloned();
        let Some(open) = open else {
            if self.commits.load(Ordering::Acquire) == seen {
                return Ok(Self::attr_of(&node, None));
            }
            return Ok(self.vault.node(node.id).map_or_else(
                |_| Self::attr_of(&node, None),
                |current| Self::attr_of(&current, None),
            ));
        };
        let on = lock(&open.state);
        Ok(match self.vault.node(node.id) {
            Ok(current) => Self::attr_of(&current, on.buffer.as_ref().map(|b| (b, on.written_at))),
            // Removed meanwhile (its last link): what was read is all there is.
            Err(_) => Self::attr_of(&node, None),
        })
    }

    fn attr_of(node: &Node, pending: Option<(&WriteBuffer, Timestamp)>) -> Attr {
        let (size, mtime, ctime) = match pending {
            Some((b, written_at)) => {
                (b.size(), node.mtime.max(written_at), node.ctime.max(written_at))
            }
            None => (node.size, node.mtime, node.ctime),
        };
        Attr {
            ino: node.id.0,
            size,
            blocks: size.div_ceil(512),
            atime: node.atime.to_system(),
            mtime: mtime.to_system(),
            ctime: ctime.to_system(),
            crtime: node.crtime.to_system(),
            kind: node.kind,
            perm: (node.perm & 0o7777) as u16,
            nlink: node.nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: node.rdev,
            blksize: BLKSIZE,
        }
    }

    fn virtual_attr(&self, ino: u64) -> FsResult<Attr> {
        let t = self.info.mounted_at.to_system();
        let (kind, perm, nlink, size) = match ino {
            inode::ROOT => (NodeKind::Dir, 0o755, 6, 0),
            inode::PEERS | inode::REALMS => (NodeKind::Dir, 0o555, 2, 0),
            inode::INDRA => (NodeKind::Dir, 0o555, 2, 0),
            i if virtual_files::is_file(i) => (NodeKind::File, 0o444, 1, self.rendered_size(i)?),
            _ => return Err(FsError::errno(libc::ENOENT)),
        };
        Ok(Attr {
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
            uid: self.info.uid,
            gid: self.info.gid,
            rdev: 0,
            blksize: BLKSIZE,
        })
    }

    fn render(&self, ino: u64) -> FsResult<Vec<u8>> {
        let data = virtual_files::render(
            ino,
            &self.vault,
            &self.info,
            &self.attention,
            self.open_count(),
        )?;
        lock(&self.rendered).insert(ino, (std::time::Instant::now(), data.len() as u64));
        Ok(data)
    }

    /// The size of a virtual file as last rendered within a second, else freshly rendered.
    /// Reads use direct I/O, so a size that is a moment old never cuts a read short.
    fn rendered_size(&self, ino: u64) -> FsResult<u64> {
        if let Some((at, size)) = lock(&self.rendered).get(&ino)
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return Ok(*size);
        }
        Ok(self.render(ino)?.len() as u64)
    }

    fn open_count(&self) -> usize {
        lock(&self.open).len()
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if inode::is_virtual(ino) {
            return self.virtual_attr(ino);
        }
        self.attr_from(|| Ok(self.vault.node(node_id(ino))?))
    }

    /// Counts a lookup the kernel now holds (readdirplus entries the adapter sent).
    pub fn remember(&self, ino: u64) {
        self.inodes.remember(ino);
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        let attr = match parent {
            inode::ROOT => {
                let ino = match name {
                    b"vault" => inode::VAULT,
                    b"peers" => inode::PEERS,
                    b"realms" => inode::REALMS,
                    b".indra" => inode::INDRA,
                    _ => return Err(FsError::errno(libc::ENOENT)),
                };
                self.getattr(ino)?
            }
            inode::INDRA => {
                let ino = virtual_files::FILES
                    .iter()
                    .find(|(_, n)| n.as_bytes() == name)
                    .map(|(i, _)| *i)
                    .ok_or_else(|| FsError::errno(libc::ENOENT))?;
                self.virtual_attr(ino)?
            }
            inode::PEERS | inode::REALMS => return Err(FsError::errno(libc::ENOENT)),
            p if inode::is_virtual(p) => return Err(FsError::errno(libc::ENOTDIR)),
            p => self.attr_from(|| Ok(self.vault.lookup(node_id(p), name)?))?,
        };
        self.inodes.remember(attr.ino);
        Ok(attr)
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if self.inodes.forget(ino, n) {
            self.maybe_reap(ino);
        }
    }

    /// Deletes a node with no links once no lookup or handle holds it.
    fn maybe_reap(&self, ino: u64) {
        if !lock(&self.orphans).contains(&ino)
            || self.inodes.is_known(ino)
            || lock(&self.open).contains_key(&ino)
        {
            return;
        }
        lock(&self.orphans).remove(&ino);
        lock(&self.reap_queue).push(ino);
    }

    /// Deletes the queued unlinked nodes, all in one transaction (the mount's background
    /// thread calls this every 200 ms, and shutdown once more). Until then each is an
    /// orphan in the store, which the next open reaps if the process dies first.
    pub fn reap_queued(&self) -> FsResult<usize> {
        let ids: Vec<NodeId> =
            std::mem::take(&mut *lock(&self.reap_queue)).into_iter().map(node_id).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        self.vault.reap_all(&ids, Commit::CrashConsistent)?;
        Ok(ids.len())
    }

    fn note_unlinked(&self, node: &Node) {
        if node.nlink == 0 {
            lock(&self.orphans).insert(node.id.0);
            self.maybe_reap(node.id.0);
        }
    }

    /// Changes attributes. The caller's identity is not needed: the kernel has checked the
    /// permission (`default_permissions`).
    pub fn setattr(&self, _ctx: Ctx, ino: u64, req: &SetAttrReq) -> FsResult<Attr> {
        if inode::is_virtual(ino) {
            return Err(erofs());
        }
        let id = node_id(ino);
        let now = Timestamp::now();
        if let Some(size) = req.size {
            let node = self.vault.node(id)?;
            match node.kind {
                NodeKind::File => {}
                NodeKind::Dir => return Err(FsError::errno(libc::EISDIR)),
                _ => return Err(FsError::errno(libc::EINVAL)),
            }
            self.truncate(&node, size, req.fh.is_none(), now)?;
        }
        let times = req.atime.is_some() || req.mtime.is_some();
        if times {
            // Explicit times must not be overwritten by a later commit of pending writes.
            self.commit_node(ino, Commit::CrashConsistent)?;
        }
        if req.mode.is_some()
            || req.uid.is_some()
            || req.gid.is_some()
            || times
            || req.ctime.is_some()
        {
            let to_ts = |t: TimeSet| match t {
                TimeSet::Now => now,
                TimeSet::At(t) => Timestamp::from_system(t),
            };
            let attr = SetAttr {
                perm: req.mode.map(|m| m & 0o7777),
                uid: req.uid,
                gid: req.gid,
                atime: req.atime.map(to_ts),
                mtime: req.mtime.map(to_ts),
                ctime: req.ctime.map(Timestamp::from_system),
            };
            self.vault.set_attr(id, &attr, now, Commit::CrashConsistent)?;
        }
        self.getattr(ino)
    }

    fn truncate(&self, node: &Node, size: u64, commit_now: bool, now: Timestamp) -> FsResult<()> {
        let open = self.open_node(node.id.0, false);
        let result = (|| {
            let mut on = lock(&open.state);
            let current = match &on.buffer {
                Some(b) => b.size(),
                None => node.size,
            };
            if size != current {
                let buffer = self.buffer_for(&mut on, node.id.0)?;
                buffer.truncate(&self.vault, size)?;
                on.written_at = now;
            }
            if commit_now {
                self.commit_locked(node.id.0, &mut on, Commit::CrashConsistent)?;
            }
            Ok(())
        })();
        self.close_open_node(node.id.0, &open, false);
        result
    }

    // ----- namespace -----

    fn check_parent(parent: u64) -> FsResult<NodeId> {
        match parent {
            inode::ROOT => {
                Err(FsError::new(libc::EPERM, "the mount's root holds only its fixed folders"))
            }
            p if inode::is_virtual(p) => Err(erofs()),
            p => Ok(node_id(p)),
        }
    }

    /// Owner and group for a new node: the caller's, or the directory's group when the
    /// directory is set-group-id.
    fn new_owner(&self, ctx: Ctx, parent: NodeId, mut spec: NewNode) -> FsResult<NewNode> {
        let dir = self.vault.node(parent)?;
        spec.uid = ctx.uid;
        spec.gid = ctx.gid;
        if dir.perm & 0o2000 != 0 {
            spec.gid = dir.gid;
            if spec.kind == NodeKind::Dir {
                spec.perm |= 0o2000;
            }
        }
        Ok(spec)
    }

    fn make(&self, ctx: Ctx, parent: u64, name: &[u8], spec: NewNode) -> FsResult<Attr> {
        let parent = Self::check_parent(parent)?;
        let spec = self.new_owner(ctx, parent, spec)?;
        let node = self.vault.create(
            parent,
            name,
            &spec,
            None,
            Timestamp::now(),
            Commit::CrashConsistent,
        )?;
        self.inodes.remember(node.id.0);
        // New: no handle, no pending writes.
        Ok(Self::attr_of(&node, None))
    }

    pub fn mkdir(&self, ctx: Ctx, parent: u64, name: &[u8], mode: u32) -> FsResult<Attr> {
        self.make(ctx, parent, name, NewNode::dir(mode & 0o7777))
    }

    pub fn mknod(
        &self,
        ctx: Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> FsResult<Attr> {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => NodeKind::File,
            libc::S_IFIFO => NodeKind::Fifo,
            libc::S_IFSOCK => NodeKind::Socket,
            libc::S_IFCHR => NodeKind::CharDevice,
            libc::S_IFBLK => NodeKind::BlockDevice,
            libc::S_IFDIR => NodeKind::Dir,
            _ => return Err(FsError::errno(libc::EINVAL)),
        };
        let mut spec = NewNode::file(mode & 0o7777);
        spec.kind = kind;
        if matches!(kind, NodeKind::CharDevice | NodeKind::BlockDevice) {
            spec.rdev = rdev;
        }
        self.make(ctx, parent, name, spec)
    }

    pub fn symlink(&self, ctx: Ctx, parent: u64, name: &[u8], target: &[u8]) -> FsResult<Attr> {
        if target.len() > SYMLINK_MAX {
            return Err(FsError::errno(libc::ENAMETOOLONG));
        }
        if target.is_empty() {
            return Err(FsError::errno(libc::ENOENT));
        }
        self.make(ctx, parent, name, NewNode::symlink(target))
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        if inode::is_virtual(ino) {
            return Err(FsError::errno(libc::EINVAL));
        }
        let node = self.vault.node(node_id(ino))?;
        node.symlink.ok_or_else(|| FsError::errno(libc::EINVAL))
    }

    pub fn link(&self, ino: u64, new_parent: u64, name: &[u8]) -> FsResult<Attr> {
        if inode::is_virtual(ino) {
            return Err(FsError::errno(libc::EPERM));
        }
        let parent = Self::check_parent(new_parent)?;
        let attr = self.attr_from(|| {
            Ok(self.vault.link(
                node_id(ino),
                parent,
                name,
                Timestamp::now(),
                Commit::CrashConsistent,
            )?)
        })?;
        self.inodes.remember(attr.ino);
        Ok(attr)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &[u8], dir: bool) -> FsResult<()> {
        if parent == inode::ROOT {
            return Err(match name {
                b"vault" | b"peers" | b"realms" | b".indra" => {
                    FsError::new(libc::EBUSY, "the mount's fixed folders cannot be removed")
                }
                _ => FsError::errno(libc::ENOENT),
            });
        }
        let parent = Self::check_parent(parent)?;
        let node =
            self.vault.remove(parent, name, dir, Timestamp::now(), Commit::CrashConsistent)?;
        self.note_unlinked(&node);
        Ok(())
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        if parent == inode::ROOT || new_parent == inode::ROOT {
            return Err(FsError::new(libc::EBUSY, "the mount's fixed folders cannot be renamed"));
        }
        let mode = match flags {
            0 => RenameMode::Replace,
            f if f == libc::RENAME_NOREPLACE => RenameMode::NoReplace,
            f if f == libc::RENAME_EXCHANGE => RenameMode::Exchange,
            _ => return Err(FsError::errno(libc::EINVAL)),
        };
        let (sp, dp) = (Self::check_parent(parent)?, Self::check_parent(new_parent)?);
        let replaced = self.vault.rename(
            sp,
            name,
            dp,
            new_name,
            mode,
            Timestamp::now(),
            Commit::CrashConsistent,
        )?;
        if let Some(node) = replaced {
            self.note_unlinked(&node);
        }
        Ok(())
    }

    // ----- files -----

    /// The `OpenNode` of `ino`, created if needed; `handle` counts a new handle. The count is
    /// taken under the map lock, so `close_open_node` never removes an entry being handed out.
    fn open_node(&self, ino: u64, handle: bool) -> Arc<OpenNode> {
        let mut map = lock(&self.open);
        let node = map
            .entry(ino)
            .or_insert_with(|| {
                Arc::new(OpenNode {
                    handles: AtomicU32::new(0),
                    executing: AtomicU32::new(0),
                    state: Mutex::new(FileState { buffer: None, written_at: Timestamp::EPOCH }),
                })
            })
            .clone();
        if handle {
            node.handles.fetch_add(1, Ordering::AcqRel);
        }
        node
    }

    /// Undoes `open_node`: drops the entry once no handle and no buffer remain. The file's
    /// lock is taken without the map lock (a commit may hold it for long); the handle count is
    /// checked again under the map lock, where `open_node` changes it. Only a truncate by
    /// path creates a buffer without a handle, and it commits before it lets go.
    fn close_open_node(&self, ino: u64, node: &Arc<OpenNode>, handle: bool) {
        if handle {
            node.handles.fetch_sub(1, Ordering::AcqRel);
        }
        if node.handles.load(Ordering::Acquire) != 0 || lock(&node.state).buffer.is_some() {
            return;
        }
        let mut map = lock(&self.open);
        let idle = node.handles.load(Ordering::Acquire) == 0
            && map.get(&ino).is_some_and(|current| Arc::ptr_eq(current, node));
        if idle {
            map.remove(&ino);
        }
        drop(map);
        if idle {
            self.maybe_reap(ino);
        }
    }

    fn buffer_for<'a>(&self, on: &'a mut FileState, ino: u64) -> FsResult<&'a mut WriteBuffer> {
        if on.buffer.is_none() {
            let node = self.vault.node(node_id(ino))?;
            on.buffer = Some(WriteBuffer::new(&self.vault, node.content, node.size));
        }
        Ok(on.buffer.as_mut().expect("just set"))
    }

    /// Commits a file's pending writes as a new leaf.
    fn commit_locked(&self, ino: u64, on: &mut FileState, commit: Commit) -> FsResult<()> {
        let Some(buffer) = on.buffer.take() else {
            if commit == Commit::Durable {
                self.vault.sync()?;
            }
            return Ok(());
        };
        match buffer.stage(&self.vault)? {
            Some(staged) => {
                self.vault.set_content(node_id(ino), &staged, on.written_at, commit)?;
                self.commits.fetch_add(1, Ordering::Release);
            }
            None if commit == Commit::Durable => self.vault.sync()?,
            None => {}
        }
        Ok(())
    }

    fn commit_node(&self, ino: u64, commit: Commit) -> FsResult<()> {
        let Some(open) = lock(&self.open).get(&ino).cloned() else {
            if commit == Commit::Durable {
                self.vault.sync()?;
            }
            return Ok(());
        };
        let mut on = lock(&open.state);
        self.commit_locked(ino, &mut on, commit)
    }

    fn new_fh(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, handle);
        fh
    }

    pub fn open(&self, _ctx: Ctx, ino: u64, flags: i32) -> FsResult<Opened> {
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        // Linux truncates on `O_TRUNC` whatever the access mode (the kernel has checked write
        // permission), so `O_RDONLY | O_TRUNC` truncates too.
        let truncating = flags & libc::O_TRUNC != 0;
        if inode::is_virtual(ino) {
            if writing || truncating {
                return Err(erofs());
            }
            let data: Arc<[u8]> = self.render(ino)?.into();
            let fh = self.new_fh(Handle::Virtual { data });
            return Ok(Opened { fh, keep_cache: false, direct_io: true, no_flush: true });
        }
        let node = self.vault.node(node_id(ino))?;
        match node.kind {
            NodeKind::File => {}
            NodeKind::Dir => return Err(FsError::errno(libc::EISDIR)),
            _ => return Err(FsError::errno(libc::ENXIO)),
        }
        let open = self.open_node(ino, true);
        if truncating {
            // A program being run cannot be truncated. For a write open the kernel answers
            // ETXTBSY before asking us; for `O_RDONLY | O_TRUNC` it checks only after this open
            // succeeds, and by then it has dropped the file's cached pages, under the program.
            // (The count drops when the kernel's asynchronous release arrives, a moment after
            // the program exits: only this rare open can see the difference.)
            if !writing && open.executing.load(Ordering::Acquire) > 0 {
                self.close_open_node(ino, &open, true);
                return Err(FsError::errno(libc::ETXTBSY));
            }
            // Buffered like any write: a crash before close leaves the old content.
            let result = (|| {
                let mut on = lock(&open.state);
                let buffer = self.buffer_for(&mut on, ino)?;
                buffer.truncate(&self.vault, 0)?;
                on.written_at = Timestamp::now();
                Ok(())
            })();
            if let Err(e) = result {
                self.close_open_node(ino, &open, true);
                return Err(e);
            }
        }
        let append = flags & libc::O_APPEND != 0;
        let exec = flags & OPEN_EXEC != 0;
        if exec {
            open.executing.fetch_add(1, Ordering::AcqRel);
        }
        let opened_at = self.attention.opened(&node);
        let fh = self.new_fh(Handle::File { ino, node: open, append, exec, opened_at });
        Ok(Opened { fh, keep_cache: true, direct_io: false, no_flush: !(writing || truncating) })
    }

    pub fn create(
        &self,
        ctx: Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> FsResult<(Attr, Opened)> {
        let attr = self.make(ctx, parent, name, NewNode::file(mode & 0o7777))?;
        let open = self.open_node(attr.ino, true);
        let append = flags & libc::O_APPEND != 0;
        // Creating a file is not attention yet (the plan): no event until it is opened.
        let fh = self.new_fh(Handle::File {
            ino: attr.ino,
            node: open,
            append,
            exec: false,
            opened_at: None,
        });
        Ok((attr, Opened { fh, keep_cache: true, direct_io: false, no_flush: false }))
    }

    fn file_handle(&self, fh: u64) -> FsResult<(u64, Arc<OpenNode>, bool)> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::File { ino, node, append, .. }) => Ok((*ino, node.clone(), *append)),
            Some(_) => Err(FsError::errno(libc::EISDIR)),
            None => Err(FsError::errno(libc::EBADF)),
        }
    }

    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let virtual_data = match lock(&self.handles).get(&fh) {
            Some(Handle::Virtual { data }) => Some(data.clone()),
            Some(_) => None,
            None => return Err(FsError::errno(libc::EBADF)),
        };
        if let Some(data) = virtual_data {
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
            let end = start.saturating_add(size as usize).min(data.len());
            return Ok(data[start..end].to_vec());
        }
        let (handle_ino, open, _) = self.file_handle(fh)?;
        debug_assert_eq!(handle_ino, ino);
        let on = lock(&open.state);
        if let Some(b) = &on.buffer {
            return b.read(&self.vault, offset, size as usize);
        }
        drop(on);
        let node = self.vault.node(node_id(handle_ino))?;
        let Some(leaf) = node.content else { return Ok(Vec::new()) };
        let want =
            usize::try_from(node.size.saturating_sub(offset).min(u64::from(size))).unwrap_or(0);
        Ok(self.vault.read_vec(&leaf, offset, want)?)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (ino, open, append) = self.file_handle(fh)?;
        if data.is_empty() {
            // POSIX: a zero-length write changes nothing.
            return Ok(0);
        }
        let mut on = lock(&open.state);
        let tmp = self.vault.tmp_dir().to_path_buf();
        let buffer = self.buffer_for(&mut on, ino)?;
        let offset = if append { buffer.size() } else { offset };
        let written = buffer.write(&tmp, offset, data)?;
        on.written_at = Timestamp::now();
        u32::try_from(written).map_err(|_| FsError::errno(libc::EINVAL))
    }

    /// `close(2)` of one descriptor: commits pending writes crash-consistently.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        match lock(&self.handles).get(&fh) {
            Some(Handle::File { .. }) => {}
            Some(_) => return Ok(()),
            None => return Err(FsError::errno(libc::EBADF)),
        }
        let (ino, open, _) = self.file_handle(fh)?;
        let mut on = lock(&open.state);
        self.commit_locked(ino, &mut on, Commit::CrashConsistent)
    }

    /// Commits pending writes durably: when this returns, the content survives a crash.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let (ino, open, _) = match self.file_handle(fh) {
            Ok(h) => h,
            Err(e) if e.errno == libc::EISDIR => return self.vault.sync().map_err(Into::into),
            Err(e) => return Err(e),
        };
        let mut on = lock(&open.state);
        self.commit_locked(ino, &mut on, Commit::Durable)
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        let Some(handle) = lock(&self.handles).remove(&fh) else {
            return Err(FsError::errno(libc::EBADF));
        };
        match handle {
            Handle::File { ino, node, exec, opened_at, .. } => {
                if exec {
                    node.executing.fetch_sub(1, Ordering::AcqRel);
                }
                let result = {
                    let mut on = lock(&node.state);
                    // Writes through a shared mapping can arrive after the last flush.
                    self.commit_locked(ino, &mut on, Commit::CrashConsistent)
                };
                self.close_open_node(ino, &node, true);
                if let Some(t) = opened_at {
                    let artifact = self.vault.node(node_id(ino)).ok().and_then(|n| n.artifact_id());
                    self.attention.closed(node_id(ino), artifact, t);
                }
                result
            }
            Handle::Dir | Handle::Virtual { .. } => Ok(()),
        }
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        let (ino, open, _) = self.file_handle(fh)?;
        if length == 0 {
            return Err(FsError::errno(libc::EINVAL));
        }
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= FILE_SIZE_MAX)
            .ok_or_else(|| FsError::errno(libc::EFBIG))?;
        let mut on = lock(&open.state);
        let tmp = self.vault.tmp_dir().to_path_buf();
        match mode {
            0 => {
                let buffer = self.buffer_for(&mut on, ino)?;
                if end > buffer.size() {
                    buffer.truncate(&self.vault, end)?;
                    on.written_at = Timestamp::now();
                }
                Ok(())
            }
            libc::FALLOC_FL_KEEP_SIZE => Ok(()),
            m if m == libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE => {
                let buffer = self.buffer_for(&mut on, ino)?;
                let end = end.min(buffer.size());
                let mut pos = offset;
                let zeros = vec![0u8; 1 << 20];
                while pos < end {
                    let n = (end - pos).min(zeros.len() as u64) as usize;
                    buffer.write(&tmp, pos, &zeros[..n])?;
                    pos += n as u64;
                }
                on.written_at = Timestamp::now();
                Ok(())
            }
            _ => Err(FsError::errno(libc::EOPNOTSUPP)),
        }
    }

    // ----- directories -----

    pub fn opendir(&self, ino: u64) -> FsResult<Opened> {
        let attr = self.getattr(ino)?;
        if attr.kind != NodeKind::Dir {
            return Err(FsError::errno(libc::ENOTDIR));
        }
        let fh = self.new_fh(Handle::Dir);
        Ok(Opened { fh, keep_cache: false, direct_io: false, no_flush: false })
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.handles).remove(&fh);
    }

    /// Entries of directory `ino` after cookie `offset` (0 for the start), at most `limit`.
    /// Cookies: 1 and 2 follow "." and ".."; an entry at position p is followed by p + 2.
    pub fn readdir(&self, ino: u64, offset: u64, limit: usize) -> FsResult<Vec<DirItem>> {
        let mut out = Vec::new();
        let parent = match ino {
            inode::ROOT | inode::VAULT | inode::PEERS | inode::REALMS | inode::INDRA => inode::ROOT,
            i if inode::is_virtual(i) => return Err(FsError::errno(libc::ENOTDIR)),
            i => self.vault.parent_of(node_id(i))?.0,
        };
        if offset < 1 {
            out.push(DirItem { ino, offset: 1, kind: NodeKind::Dir, name: b".".to_vec() });
        }
        if offset < 2 {
            out.push(DirItem { ino: parent, offset: 2, kind: NodeKind::Dir, name: b"..".to_vec() });
        }
        let fixed: &[(u64, NodeKind, &[u8])] = match ino {
            inode::ROOT => &[
                (inode::VAULT, NodeKind::Dir, b"vault"),
                (inode::PEERS, NodeKind::Dir, b"peers"),
                (inode::REALMS, NodeKind::Dir, b"realms"),
                (inode::INDRA, NodeKind::Dir, b".indra"),
            ],
            inode::INDRA => {
                for (i, (child, name)) in virtual_files::FILES.iter().enumerate() {
                    let cookie = i as u64 + 3;
                    if cookie > offset {
                        out.push(DirItem {
                            ino: *child,
                            offset: cookie,
                            kind: NodeKind::File,
                            name: name.as_bytes().to_vec(),
                        });
                    }
                }
                return Ok(out);
            }
            inode::PEERS | inode::REALMS => &[],
            _ => {
                if offset == 0 && self.attention.enabled() {
                    self.attention.scanned(&self.vault.node(node_id(ino))?);
                }
                for e in self.vault.list(node_id(ino), offset.saturating_sub(2), limit)? {
                    out.push(DirItem {
                        ino: e.node.0,
                        offset: e.position + 2,
                        kind: e.kind,
                        name: e.name,
                    });
                }
                return Ok(out);
            }
        };
        for (i, (child, kind, name)) in fixed.iter().enumerate() {
            let cookie = i as u64 + 3;
            if cookie > offset {
                out.push(DirItem { ino: *child, offset: cookie, kind: *kind, name: name.to_vec() });
            }
        }
        Ok(out)
    }

    pub fn fsyncdir(&self) -> FsResult<()> {
        self.vault.sync().map_err(Into::into)
    }

    // ----- xattrs -----

    fn check_xattr_name(name: &[u8]) -> FsResult<()> {
        if name.starts_with(b"system.") {
            return Err(FsError::new(
                libc::EOPNOTSUPP,
                "system.* attributes (ACLs) are not supported",
            ));
        }
        if name.len() > 255 {
            return Err(FsError::errno(libc::ERANGE));
        }
        Ok(())
    }

    /// The computed `indra.*` attribute `key` of a node.
    fn indra_xattr(&self, ino: u64, key: IndraXattr) -> FsResult<Vec<u8>> {
        let node = self.vault.node(node_id(ino))?;
        let text = match key {
            IndraXattr::Heat => {
                self.attention.flush()?;
                let heat =
                    self.vault.attention_of(node.id)?.map_or(0.0, |a| a.heat(self.attention.now()));
                format!("{:.4}", virtual_files::display_heat(heat))
            }
            IndraXattr::Steward => {
                // Files belong to the tree that holds them; in the player's own vault that is
                // always the player's.
                let dir = if node.kind == NodeKind::Dir { node.id } else { NodeId::ROOT };
                self.vault.steward_of(dir)?.to_string()
            }
            IndraXattr::AccessMode => "steward".to_owned(),
            IndraXattr::Id => match node.artifact_id() {
                Some(id) => indras_artifacts::hex(id.bytes()),
                None => return Err(FsError::errno(libc::ENODATA)),
            },
            IndraXattr::TreeType => match node.kind {
                NodeKind::Dir => self.vault.tree_of(node.id)?.tree_type.as_str().to_owned(),
                _ => return Err(FsError::errno(libc::ENODATA)),
            },
        };
        Ok(text.into_bytes())
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        if inode::is_virtual(ino) {
            return Err(FsError::errno(libc::ENODATA));
        }
        if let Some(key) = IndraXattr::parse(name) {
            return self.indra_xattr(ino, key);
        }
        Self::check_xattr_name(name)?;
        Ok(self.vault.get_xattr(node_id(ino), name)?)
    }

    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        if inode::is_virtual(ino) {
            return Ok(Vec::new());
        }
        let node = self.vault.node(node_id(ino))?;
        let mut out = Vec::new();
        // Only the stored attribute is listed. The computed ones are read by name: listing
        // them would make `cp -a`, `rsync -X` and `tar --xattrs` copy stale values out of the
        // vault, and fail writing them back in.
        if node.kind == NodeKind::Dir {
            out.extend_from_slice(b"user.indra.tree_type\0");
        }
        for name in self.vault.list_xattrs(node_id(ino))? {
            out.extend_from_slice(&name);
            out.push(0);
        }
        Ok(out)
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        if inode::is_virtual(ino) {
            return Err(erofs());
        }
        if let Some(key) = IndraXattr::parse(name) {
            if key != IndraXattr::TreeType {
                return Err(FsError::new(
                    libc::EPERM,
                    "indra.* attributes other than tree_type are computed",
                ));
            }
            if self.vault.node(node_id(ino))?.kind != NodeKind::Dir {
                return Err(FsError::new(libc::EPERM, "tree_type belongs to directories"));
            }
            let text = std::str::from_utf8(value).map_err(|_| FsError::errno(libc::EINVAL))?;
            let t = indras_artifacts::TreeType::parse(text)
                .ok_or_else(|| FsError::new(libc::EINVAL, format!("unknown tree type {text:?}")))?;
            self.vault.set_tree_type(node_id(ino), t, Commit::CrashConsistent)?;
            return Ok(());
        }
        Self::check_xattr_name(name)?;
        let mode = match flags {
            0 => XattrMode::Upsert,
            libc::XATTR_CREATE => XattrMode::Create,
            libc::XATTR_REPLACE => XattrMode::Replace,
            _ => return Err(FsError::errno(libc::EINVAL)),
        };
        self.vault.set_xattr(
            node_id(ino),
            name,
            value,
            mode,
            Timestamp::now(),
            Commit::CrashConsistent,
        )?;
        Ok(())
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        if inode::is_virtual(ino) {
            return Err(erofs());
        }
        if IndraXattr::parse(name).is_some() {
            return Err(FsError::new(libc::EPERM, "indra.* attributes cannot be removed"));
        }
        Self::check_xattr_name(name)?;
        self.vault.remove_xattr(node_id(ino), name, Timestamp::now(), Commit::CrashConsistent)?;
        Ok(())
    }

    // ----- the filesystem -----

    pub fn statfs(&self) -> FsResult<StatFs> {
        let st = rustix::fs::statvfs(self.vault.dir()).map_err(std::io::Error::from)?;
        let nodes = self.vault.counts()?.nodes;
        Ok(StatFs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: nodes + st.f_ffree,
            ffree: st.f_ffree,
            bsize: u32::try_from(st.f_bsize).unwrap_or(BLKSIZE),
            namelen: 255,
            frsize: u32::try_from(st.f_frsize).unwrap_or(BLKSIZE),
        })
    }

    /// Commits every pending write and queued attention event durably (unmount, SIGTERM).
    pub fn commit_all(&self) -> FsResult<()> {
        if let Err(e) = self.attention.flush() {
            tracing::error!(error = %e, "writing attention events at shutdown failed");
        }
        let nodes: Vec<(u64, Arc<OpenNode>)> =
            lock(&self.open).iter().map(|(k, v)| (*k, v.clone())).collect();
        let mut first_err = self.reap_queued().err();
        for (ino, open) in nodes {
            let mut on = lock(&open.state);
            if let Err(e) = self.commit_locked(ino, &mut on, Commit::CrashConsistent) {
                tracing::error!(ino, error = %e, "committing a file at shutdown failed");
                first_err.get_or_insert(e);
            }
        }
        self.vault.sync()?;
        first_err.map_or(Ok(()), Err)
    }

    /// Whether any file has uncommitted writes or open handles.
    pub fn open_files(&self) -> usize {
        self.open_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indras_artifacts::Options;

    const CTX: Ctx = Ctx { uid: 0, gid: 0, pid: 1 };

    fn fs(dir: &std::path::Path) -> VaultFs {
        let vault = Arc::new(Vault::open(dir, "p", &Options::default()).expect("open"));
        VaultFs::new(vault, MountInfo::unmounted("p", dir)).expect("VaultFs::new")
    }

    /// A file truncated by one handle, its empty version committed, then written again: an
    /// attribute read that read the node before the last commit must still report the
    /// written size, whether the handle is still open or already released. (The kernel keeps
    /// whatever size it is told for the TTL; an old one made readers see an empty file.)
    #[test]
    fn attributes_never_report_a_size_older_than_a_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = fs(dir.path());
        let (a, o) = fs.create(CTX, inode::VAULT, b"f", 0o644, libc::O_WRONLY).expect("create");
        fs.release(o.fh).expect("release");
        for release in [false, true] {
            let fh = fs.open(CTX, a.ino, libc::O_WRONLY | libc::O_TRUNC).expect("open").fh;
            fs.flush(fh).expect("commit the empty version");
            fs.write(fh, 0, &[7; 5000]).expect("write");
            let attr = fs
                .attr_from(|| {
                    let before = fs.vault.node(node_id(a.ino))?;
                    assert_eq!(before.size, 0, "read before the commit");
                    fs.flush(fh)?;
                    if release {
                        fs.release(fh)?;
                    }
                    Ok(before)
                })
                .expect("getattr");
            assert_eq!(attr.size, 5000, "size after a commit that raced the read");
            if !release {
                fs.release(fh).expect("release");
            }
            assert_eq!(fs.getattr(a.ino).expect("getattr").size, 5000);
        }
    }
}
