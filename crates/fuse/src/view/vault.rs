//! `vault/`: the store's tree, read-write, the one view that takes changes. Its inodes are the
//! store's node ids (`inode::VAULT` for its root, then from `NodeId::FIRST_DYNAMIC`).
//!
//! It owns the kernel's lookup counts of its inodes (`inodes`), the open-file table with the
//! write buffers (`open`), and the reaping of unlinked nodes (`reaper`); attention records
//! its opens, closes and listings.
//!
//! # Lock order
//! An `OpenNode`'s lock, then a leaf lock (the lookup counts, the open-file table's map, the
//! reaper's sets), then the store, which is called with at most one `OpenNode` locked. The
//! open-file table's map is never held while waiting for an `OpenNode`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indras_artifacts::{
    Commit, FILE_SIZE_MAX, NewNode, Node, NodeId, NodeKind, RenameMode, SetAttr, Timestamp, Vault,
};

use super::common::{Found, TTL, View, dots};
use crate::attention::Attention;
use crate::buffer::WriteBuffer;
use crate::error::{FsError, FsResult};
use crate::inode::{self, InodeTable};
use crate::open_files::{FileHandle, OpenFiles, OpenNode, lock, with_room};
use crate::reap::Reaper;
use crate::types::{Attr, BLKSIZE, Ctx, DirItem, EachEntry, SetAttrReq, TimeSet, each_item};
use crate::xattr::Xattrs;

/// How recently the kernel must have been handed an inode (by a lookup, a creation or a
/// listing with attributes) for a listing to leave out its attributes: half the TTL, so an
/// entry that is listed again and again gets them again before the kernel's copy expires.
const HELD_FRESH: Duration = Duration::from_secs(TTL.as_secs() / 2);

/// Longest symlink target, as Linux's `PATH_MAX` including the NUL.
const SYMLINK_MAX: usize = 4095;

/// The bit the kernel sets in the flags of `execve(2)`'s open of the program (its internal
/// `__FMODE_EXEC`); no `open(2)` flag uses it.
const OPEN_EXEC: i32 = 0x20;

#[derive(Debug)]
pub(crate) struct VaultView {
    vault: Arc<Vault>,
    attention: Arc<Attention>,
    inodes: InodeTable,
    open: Arc<OpenFiles>,
    reaper: Reaper,
}

impl VaultView {
    pub(crate) fn new(vault: Arc<Vault>, attention: Arc<Attention>, open: Arc<OpenFiles>) -> Self {
        VaultView {
            vault,
            attention,
            inodes: InodeTable::default(),
            open,
            reaper: Reaper::default(),
        }
    }

    fn xattrs(&self) -> Xattrs<'_> {
        Xattrs { vault: &self.vault, attention: &self.attention }
    }

    // ----- attributes -----

    /// The attributes of the node `read` returns, with an open file's pending writes.
    ///
    /// The node is read again, under the file's lock, when the file is open or when a commit
    /// ran since `read` began: the first read may predate a commit that has since taken the
    /// buffer. Reporting its size would hand the kernel a size older than writes it has seen
    /// answered, and the kernel would keep it for the TTL (a reader would then see a short
    /// or empty file).
    pub(crate) fn attr_from(&self, read: impl FnOnce() -> FsResult<Node>) -> FsResult<Attr> {
        let seen = self.open.commits();
        let node = read()?;
        if node.kind != NodeKind::File {
            return Ok(Self::attr_of(&node, None));
        }
        let Some(open) = self.open.get(node.id.0) else {
            if self.open.commits() == seen {
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

    /// The attributes of `inos` (a listing's entries), read together: one read of the store
    /// for all the files not open here. `None` for an inode with no node (removed since the
    /// listing was read).
    pub(crate) fn attrs(&self, inos: &[u64]) -> FsResult<Vec<Option<Attr>>> {
        if inos.is_empty() {
            return Ok(Vec::new());
        }
        let seen = self.open.commits();
        let ids: Vec<NodeId> = inos.iter().map(|i| NodeId(*i)).collect();
        let nodes = self.vault.nodes(&ids)?;
        // Which files are open is asked before whether a commit landed: a file whose commit
        // lands after the read, and whose entry then leaves the table, must be seen either
        // as open or as committed meanwhile, never as read (its old size).
        let open: Vec<bool> = inos.iter().map(|ino| self.open.contains(*ino)).collect();
        let settled = self.open.commits() == seen;
        Ok(nodes
            .into_iter()
            .zip(open)
            .map(|(node, open)| match node {
                // Open files, and any file if a commit landed meanwhile, the careful way (read
                // again: what was read may predate the commit).
                Some(n) if n.kind == NodeKind::File && (!settled || open) => {
                    self.attr_from(|| Ok(self.vault.node(n.id)?)).ok()
                }
                Some(n) => Some(Self::attr_of(&n, None)),
                None => None,
            })
            .collect())
    }

    /// `readdir`, each entry handed to `f` (inode, cookie, kind, name) as it is read, until
    /// `f` returns false; see `VaultFs::readdir_each`. Returns how many entries were read, the
    /// dots included.
    pub(crate) fn readdir_each(
        &self,
        dir: u64,
        offset: u64,
        limit: usize,
        f: &mut EachEntry<'_>,
    ) -> FsResult<usize> {
        let dots = if offset < 2 {
            let parent = match dir {
                inode::VAULT => inode::ROOT,
                d => self.vault.parent_of(NodeId(d))?.0,
            };
            dots(dir, parent, offset)
        } else {
            Vec::new()
        };
        if offset == 0 && self.attention.enabled() {
            self.attention.scanned(&self.vault.node(NodeId(dir))?);
        }
        let (read, refused) = each_item(&dots, f);
        if refused {
            return Ok(read);
        }
        let listed = self.vault.list_each(
            NodeId(dir),
            offset.saturating_sub(2),
            limit,
            |position, node, kind, name| f(node.0, position + 2, kind, name),
        )?;
        Ok(read + listed)
    }

    /// For each of `inos`, whether the kernel holds it with an entry and attributes fresh
    /// enough that a listing need not send them again (`VaultFs::held`).
    pub(crate) fn held(&self, inos: &[u64]) -> Vec<bool> {
        self.inodes.held_since(inos, HELD_FRESH)
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

    /// The next data (`data`) or hole at or after `offset` of file `ino`: from its stored
    /// chunks, or, while it has writes not yet committed, all of it data. `None` at or past
    /// the end, or when no data follows.
    pub(crate) fn seek(&self, ino: u64, offset: u64, data: bool) -> FsResult<Option<u64>> {
        let attr = self.getattr(ino)?;
        if attr.kind != NodeKind::File {
            return Err(FsError::errno(libc::EINVAL));
        }
        if offset >= attr.size {
            return Ok(None);
        }
        // Pending writes are committed first: the answer comes from the file's chunks.
        self.open.peek(ino)?;
        let pending = self.open.get(ino).is_some_and(|o| lock(&o.state).buffer.is_some());
        match self.vault.node(NodeId(ino))?.content {
            Some(leaf) if !pending => Ok(self.vault.seek_data_or_hole(&leaf, offset, data)?),
            _ => Ok(Some(if data { offset } else { attr.size })),
        }
    }

    /// Files with open handles or uncommitted writes.
    pub(crate) fn open_files(&self) -> usize {
        self.open.len()
    }

    // ----- reaping -----

    /// Deletes a node with no links once no lookup or handle holds it.
    fn maybe_reap(&self, ino: u64) {
        if !self.reaper.is_orphan(ino) || self.inodes.is_known(ino) || self.open.contains(ino) {
            return;
        }
        self.reaper.release(ino);
    }

    /// Deletes the queued unlinked nodes, all in one transaction (the mount's background
    /// thread calls this every 200 ms, and shutdown once more).
    /// See `VaultFs::set_gc_backlog`.
    pub(crate) fn set_gc_backlog(&self, limit: u64) {
        self.open.set_backlog(limit);
    }

    /// See `OpenFiles::closes_wait`.
    pub(crate) fn closes_wait(&self) -> bool {
        self.open.closes_wait()
    }

    /// See `VaultFs::check_space`.
    pub(crate) fn check_space(&self) {
        self.open.check_space();
    }

    /// See `VaultFs::collect_backlog`.
    pub(crate) fn collect_backlog(&self, below_floor: bool) -> FsResult<u64> {
        self.open.collect_backlog(1, below_floor)
    }

    pub(crate) fn reap_queued(&self) -> FsResult<usize> {
        self.reaper.reap_queued(&self.vault)
    }

    fn note_unlinked(&self, node: &Node) {
        if node.nlink == 0 {
            self.reaper.orphaned(node.id.0);
            self.maybe_reap(node.id.0);
        }
    }

    /// Undoes `OpenFiles::acquire`, and reaps the node if that was the last that held it.
    fn close_open_node(&self, ino: u64, node: &Arc<OpenNode>, handle: bool) {
        if self.open.release(ino, node, handle) {
            self.maybe_reap(ino);
        }
    }

    // ----- attributes that change -----

    /// Changes attributes. The caller's identity is not needed: the kernel has checked the
    /// permission (`default_permissions`).
    pub(crate) fn setattr(&self, ctx: Ctx, ino: u64, req: &SetAttrReq) -> FsResult<Attr> {
        let id = NodeId(ino);
        let now = Timestamp::now();
        let mut mode = req.mode;
        if let Some(size) = req.size {
            let node = self.vault.node(id)?;
            match node.kind {
                NodeKind::File => {}
                NodeKind::Dir => return Err(FsError::errno(libc::EISDIR)),
                _ => return Err(FsError::errno(libc::EINVAL)),
            }
            self.truncate(&node, size, req.fh.is_none(), now)?;
            // A truncation by a caller without CAP_FSETID drops set-user-id and set-group-id
            // (the kernel leaves it to us: FUSE_HANDLE_KILLPRIV_V2).
            if mode.is_none() && privileged_bits(node.perm) && !may_keep_privileges(ctx) {
                mode = Some(without_privileges(node.perm));
            }
        }
        // A change of owner or group drops set-user-id, and set-group-id on a group-executable
        // file, whoever makes it (as the kernel does for local filesystems).
        if mode.is_none() && (req.uid.is_some() || req.gid.is_some()) {
            let node = self.vault.node(id)?;
            if node.kind != NodeKind::Dir && privileged_bits(node.perm) {
                mode = Some(without_privileges(node.perm));
            }
        }
        let times = req.atime.is_some() || req.mtime.is_some();
        if times {
            // Explicit times must not be overwritten by a later commit of pending writes.
            self.open.peek(ino)?;
        }
        if mode.is_some() || req.uid.is_some() || req.gid.is_some() || times || req.ctime.is_some()
        {
            let to_ts = |t: TimeSet| match t {
                TimeSet::Now => now,
                TimeSet::At(t) => Timestamp::from_system(t),
            };
            let attr = SetAttr {
                perm: mode.map(|m| m & 0o7777),
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
        let open = self.open.acquire(node.id.0, false);
        let result = (|| {
            let mut on = lock(&open.state);
            let current = match &on.buffer {
                Some(b) => b.size(),
                None => node.size,
            };
            if size != current {
                let buffer = self.open.buffer_for(&mut on, node.id.0)?;
                buffer.truncate(&self.vault, size)?;
                on.written_at = now;
            }
            if commit_now {
                self.open.commit_locked(node.id.0, &mut on, Commit::CrashConsistent)?;
            }
            Ok(())
        })();
        self.close_open_node(node.id.0, &open, false);
        result
    }

    pub(crate) fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        self.xattrs().set(NodeId(ino), name, value, flags)
    }

    pub(crate) fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        self.xattrs().remove(NodeId(ino), name)
    }

    // ----- namespace -----

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
        let parent = NodeId(parent);
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

    pub(crate) fn mkdir(&self, ctx: Ctx, parent: u64, name: &[u8], mode: u32) -> FsResult<Attr> {
        self.make(ctx, parent, name, NewNode::dir(mode & 0o7777))
    }

    pub(crate) fn mknod(
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

    pub(crate) fn symlink(
        &self,
        ctx: Ctx,
        parent: u64,
        name: &[u8],
        target: &[u8],
    ) -> FsResult<Attr> {
        if target.len() > SYMLINK_MAX {
            return Err(FsError::errno(libc::ENAMETOOLONG));
        }
        if target.is_empty() {
            return Err(FsError::errno(libc::ENOENT));
        }
        self.make(ctx, parent, name, NewNode::symlink(target))
    }

    pub(crate) fn link(&self, ino: u64, new_parent: u64, name: &[u8]) -> FsResult<Attr> {
        let attr = self.attr_from(|| {
            Ok(self.vault.link(
                NodeId(ino),
                NodeId(new_parent),
                name,
                Timestamp::now(),
                Commit::CrashConsistent,
            )?)
        })?;
        self.inodes.remember(attr.ino);
        Ok(attr)
    }

    /// Commits the pending writes of the file named `name` in `parent`, if it has any: before
    /// a rename or an unlink, so that a save by rename, or a file deleted right after it was
    /// written, keeps its version (as ext4's `auto_da_alloc` writes out a file renamed over
    /// another). A commit that fails is logged and left: the rename or unlink goes on.
    fn commit_named(&self, parent: u64, name: &[u8]) {
        if self.open.len() == 0 {
            return;
        }
        let Ok(node) = self.vault.lookup(NodeId(parent), name) else { return };
        if let Some(open) = self.open.get(node.id.0)
            && let Err(e) = self.commit(node.id.0, &open, Commit::CrashConsistent)
        {
            tracing::warn!(ino = node.id.0, error = %e, "committing a file before its rename or unlink failed");
        }
    }

    /// `unlink` (`dir` false) or `rmdir` (`dir` true).
    pub(crate) fn remove(&self, parent: u64, name: &[u8], dir: bool) -> FsResult<()> {
        if !dir {
            self.commit_named(parent, name);
        }
        let node = self.vault.remove(
            NodeId(parent),
            name,
            dir,
            Timestamp::now(),
            Commit::CrashConsistent,
        )?;
        self.note_unlinked(&node);
        Ok(())
    }

    pub(crate) fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        let mode = match flags {
            0 => RenameMode::Replace,
            f if f == libc::RENAME_NOREPLACE => RenameMode::NoReplace,
            f if f == libc::RENAME_EXCHANGE => RenameMode::Exchange,
            _ => return Err(FsError::errno(libc::EINVAL)),
        };
        self.commit_named(parent, name);
        self.commit_named(new_parent, new_name);
        let replaced = self.vault.rename(
            NodeId(parent),
            name,
            NodeId(new_parent),
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

    /// Opens the file `ino`; `O_TRUNC` truncates it in its write buffer.
    pub(crate) fn open(&self, ctx: Ctx, ino: u64, flags: i32) -> FsResult<FileHandle> {
        let writing = flags & libc::O_ACCMODE != libc::O_RDONLY;
        // Linux truncates on `O_TRUNC` whatever the access mode (the kernel has checked write
        // permission), so `O_RDONLY | O_TRUNC` truncates too.
        let truncating = flags & libc::O_TRUNC != 0;
        let node = self.vault.node(NodeId(ino))?;
        match node.kind {
            NodeKind::File => {}
            NodeKind::Dir => return Err(FsError::errno(libc::EISDIR)),
            _ => return Err(FsError::errno(libc::ENXIO)),
        }
        let open = self.open.acquire(ino, true);
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
                let buffer = self.open.buffer_for(&mut on, ino)?;
                buffer.truncate(&self.vault, 0)?;
                on.written_at = Timestamp::now();
                Ok(())
            })();
            // As for a truncation by setattr (see `setattr`).
            let result = result.and_then(|()| {
                if privileged_bits(node.perm) && !may_keep_privileges(ctx) {
                    self.drop_privileges(ino)?;
                }
                Ok(())
            });
            if let Err(e) = result {
                self.close_open_node(ino, &open, true);
                return Err(e);
            }
        }
        let exec = flags & OPEN_EXEC != 0;
        if exec {
            open.executing.fetch_add(1, Ordering::AcqRel);
        }
        let opened_at = self.attention.opened(&node);
        Ok(FileHandle { ino, node: open, append: flags & libc::O_APPEND != 0, exec, opened_at })
    }

    pub(crate) fn create(
        &self,
        ctx: Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> FsResult<(Attr, FileHandle)> {
        let attr = self.make(ctx, parent, name, NewNode::file(mode & 0o7777))?;
        let open = self.open.acquire(attr.ino, true);
        // Attention counts what is opened, not what is made: a new file records no event
        // until it is opened again.
        let handle = FileHandle {
            ino: attr.ino,
            node: open,
            append: flags & libc::O_APPEND != 0,
            exec: false,
            opened_at: None,
        };
        Ok((attr, handle))
    }

    /// Reads the open file `ino`: its buffered content if it has any, else its leaf.
    pub(crate) fn read(
        &self,
        ino: u64,
        open: &OpenNode,
        offset: u64,
        size: u32,
    ) -> FsResult<Vec<u8>> {
        let on = lock(&open.state);
        if let Some(b) = &on.buffer {
            return b.read(&self.vault, offset, size as usize);
        }
        drop(on);
        let node = self.vault.node(NodeId(ino))?;
        let Some(leaf) = node.content else { return Ok(Vec::new()) };
        let want =
            usize::try_from(node.size.saturating_sub(offset).min(u64::from(size))).unwrap_or(0);
        Ok(self.vault.read_vec(&leaf, offset, want)?)
    }

    pub(crate) fn write(
        &self,
        ino: u64,
        open: &OpenNode,
        append: bool,
        offset: u64,
        data: &[u8],
        kill_privileges: bool,
    ) -> FsResult<u32> {
        if data.is_empty() {
            // POSIX: a zero-length write changes nothing.
            return Ok(0);
        }
        let written = {
            let mut on = lock(&open.state);
            let tmp = self.vault.tmp_dir().to_path_buf();
            let buffer = self.open.buffer_for(&mut on, ino)?;
            let offset = if append { buffer.size() } else { offset };
            // A refused write leaves the buffer as it was, so it can be tried again.
            let written = with_room(&self.vault, || buffer.write(&tmp, offset, data))?;
            on.written_at = Timestamp::now();
            written
        };
        // The kernel asks this of a write to a set-user-id or set-group-id file by a caller
        // without CAP_FSETID (FUSE_WRITE_KILL_SUIDGID).
        if kill_privileges {
            self.drop_privileges(ino)?;
        }
        u32::try_from(written).map_err(|_| FsError::errno(libc::EINVAL))
    }

    /// Drops set-user-id, and set-group-id if the file is group-executable.
    fn drop_privileges(&self, ino: u64) -> FsResult<()> {
        let node = self.vault.node(NodeId(ino))?;
        if !privileged_bits(node.perm) {
            return Ok(());
        }
        let attr = SetAttr { perm: Some(without_privileges(node.perm)), ..SetAttr::default() };
        self.vault.set_attr(NodeId(ino), &attr, Timestamp::now(), Commit::CrashConsistent)?;
        Ok(())
    }

    /// Commits the open file's pending writes with `commit`'s strength.
    pub(crate) fn commit(&self, ino: u64, open: &OpenNode, commit: Commit) -> FsResult<()> {
        let mut on = lock(&open.state);
        self.open.commit_locked(ino, &mut on, commit)
    }

    /// `fsync` of a file (`OpenFiles::fsync`).
    pub(crate) fn fsync(&self, ino: u64, open: &OpenNode, datasync: bool) -> FsResult<()> {
        self.open.fsync(ino, open, datasync)
    }

    /// Commits the writes of closed files whose commit waited long enough, and drops their
    /// entries (`OpenFiles::due`): the mount's background thread, on every tick.
    pub(crate) fn commit_due(&self) -> FsResult<()> {
        let mut first_err = None;
        for (ino, node) in self.open.due() {
            {
                let mut on = lock(&node.state);
                // Opened again since: its writes may be under way, and its close commits.
                if node.handles.load(Ordering::Acquire) != 0 {
                    continue;
                }
                if let Err(e) = self.open.commit_locked(ino, &mut on, Commit::CrashConsistent) {
                    tracing::warn!(ino, error = %e, "committing a closed file's writes failed");
                    first_err.get_or_insert(e);
                }
            }
            self.close_open_node(ino, &node, false);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// See `OpenFiles::set_commit_delay`.
    pub(crate) fn set_commit_delay(&self, delay: Option<std::time::Duration>) {
        self.open.set_commit_delay(delay);
    }

    /// Commits what the intent log holds, if due (`OpenFiles::drain_log`).
    pub(crate) fn drain_log(&self, force: bool) -> FsResult<()> {
        self.open.drain_log(force)
    }

    /// Makes every change to the folders and attributes durable (`fsyncdir`).
    pub(crate) fn sync_store(&self) -> FsResult<()> {
        self.open.sync_store()
    }

    /// The last of a handle: commits what it wrote, and records the close.
    pub(crate) fn release(&self, h: FileHandle) -> FsResult<()> {
        let FileHandle { ino, node, exec, opened_at, .. } = h;
        if exec {
            node.executing.fetch_sub(1, Ordering::AcqRel);
        }
        // Writes through a shared mapping can arrive after the last flush. The commit may
        // wait (`OpenFiles::defers`), unless the file has lost its last name.
        let result = if !self.reaper.is_orphan(ino) && self.open.defers(&node) {
            Ok(())
        } else {
            self.commit(ino, &node, Commit::CrashConsistent)
        };
        self.close_open_node(ino, &node, true);
        if let Some(t) = opened_at {
            let artifact = self.vault.node(NodeId(ino)).ok().and_then(|n| n.artifact_id());
            self.attention.closed(NodeId(ino), artifact, t);
        }
        result
    }

    pub(crate) fn fallocate(
        &self,
        ino: u64,
        open: &OpenNode,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> FsResult<()> {
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
                let buffer = self.open.buffer_for(&mut on, ino)?;
                if end > buffer.size() {
                    buffer.truncate(&self.vault, end)?;
                    on.written_at = Timestamp::now();
                }
                Ok(())
            }
            libc::FALLOC_FL_KEEP_SIZE => Ok(()),
            m if m == libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE => {
                let buffer = self.open.buffer_for(&mut on, ino)?;
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

    /// Commits every file's pending writes (unmount, SIGTERM), then makes them durable.
    pub(crate) fn commit_pending(&self) -> FsResult<()> {
        self.open.commit_pending()
    }

    pub(crate) fn commit_all(&self) -> FsResult<()> {
        let mut first_err = self.reap_queued().err();
        for (ino, open) in self.open.all() {
            let mut on = lock(&open.state);
            if let Err(e) = self.open.commit_locked(ino, &mut on, Commit::CrashConsistent) {
                tracing::error!(ino, error = %e, "committing a file at shutdown failed");
                first_err.get_or_insert(e);
            }
        }
        self.vault.sync()?;
        // Every buffer is committed and durable: the log holds nothing a replay would apply.
        for _ in 0..2 {
            if let Err(e) = self.open.drain_log(true) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl View for VaultView {
    fn getattr(&self, ino: u64) -> FsResult<Attr> {
        self.attr_from(|| Ok(self.vault.node(NodeId(ino))?))
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Found> {
        Ok(Found::Entry(self.attr_from(|| Ok(self.vault.lookup(NodeId(parent), name)?))?))
    }

    fn readdir(&self, dir: u64, offset: u64, limit: usize) -> FsResult<Vec<DirItem>> {
        let mut out = Vec::new();
        self.readdir_each(dir, offset, limit, &mut |ino, offset, kind, name| {
            out.push(DirItem { ino, offset, kind, name: name.to_vec() });
            true
        })?;
        Ok(out)
    }

    fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let node = self.vault.node(NodeId(ino))?;
        node.symlink.ok_or_else(|| FsError::errno(libc::EINVAL))
    }

    fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        // The id names the content: what was written is committed first, so that it is
        // right straight after a `close` whose commit waits for the kernel's RELEASE.
        if crate::xattr::names_content(name) {
            self.open.peek(ino)?;
        }
        self.xattrs().get(NodeId(ino), name)
    }

    fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.xattrs().list(NodeId(ino))
    }

    fn remember(&self, ino: u64) {
        self.inodes.remember(ino);
    }

    fn forget(&self, ino: u64, n: u64) {
        if self.inodes.forget(ino, n) {
            self.maybe_reap(ino);
        }
    }

    fn ttl(&self, _ino: u64) -> Duration {
        TTL
    }

    fn negative_ttl(&self) -> Option<Duration> {
        Some(TTL)
    }
}

/// Whether `perm` has bits a change of content or owner drops: set-user-id, or set-group-id
/// with group execute (without it, set-group-id marks mandatory locking and stays).
fn privileged_bits(perm: u32) -> bool {
    perm & 0o4000 != 0 || perm & 0o2010 == 0o2010
}

fn without_privileges(perm: u32) -> u32 {
    let mut perm = perm & !0o4000;
    if perm & 0o010 != 0 {
        perm &= !0o2000;
    }
    perm
}

/// Whether the caller may change a set-user-id file and keep the bit: it has `CAP_FSETID` in
/// its effective set (`/proc/PID/status`; if that cannot be read, whether it is root). Asked
/// only of files with such bits, so reading it costs nothing on the common path.
fn may_keep_privileges(ctx: Ctx) -> bool {
    const CAP_FSETID: u32 = 4;
    let status = std::fs::read_to_string(format!("/proc/{}/status", ctx.pid)).ok();
    let effective = status.as_deref().and_then(|s| {
        let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
        u64::from_str_radix(hex, 16).ok()
    });
    match effective {
        Some(caps) => caps & (1 << CAP_FSETID) != 0,
        None => ctx.uid == 0,
    }
}
