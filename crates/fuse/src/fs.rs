//! `VaultFs`: the filesystem, independent of the FUSE protocol. Every operation takes plain
//! arguments and returns a plain struct or an `FsError` with the errno inside, so tests drive
//! it without a kernel; `adapter` is the thin layer that speaks fuser.
//!
//! `VaultFs` routes: `route` maps an inode to the view that answers for it (the only place
//! that does), and every operation goes to that view. Reading operations go to any view;
//! changes go to the vault's, and any other view refuses them (`view::ReadOnlyView::refuse`).
//! `VaultFs` itself owns only the handle table, since a handle number names an open file or
//! directory of any view.
//!
//! # State and lock order
//! - The open-file table (`open_files`): node -> `OpenNode` (handle count, write buffer).
//!   Handles are counted, and idle entries removed, while its map is locked.
//! - `OpenNode` mutex: serialises writes, reads of dirty content and commits of one file.
//! - The handle table (`handles`), the reaper's orphans and queue (`reap`), the vault's lookup
//!   counts (`inode::InodeTable`) and the render cache of `.indra/` are leaf locks, held only
//!   for one lookup or update.
//! - The store (`Vault`) has its own transactions; it is called with at most one `OpenNode`
//!   locked.
//!
//! Order: `OpenNode`, then a leaf lock, then the store. The open-file table's map is never
//! held while waiting for an `OpenNode` (a commit can hold one for long).

use std::sync::Arc;
use std::time::Duration;

use indras_artifacts::{Commit, NodeId, NodeKind, SetAttr, Vault};

pub use crate::status::MountInfo;
pub use crate::types::{Attr, Ctx, DirItem, Opened, SetAttrReq, StatFs, TimeSet};

use crate::attention::{Attention, AttentionConfig, Clock, SystemClock};
use crate::error::{FsError, FsResult};
use crate::handles::{Handle, Handles, Seen, Source};
use crate::inode::{self, ViewId};
use crate::open_files::OpenFiles;
use crate::types::{BLKSIZE, EachEntry, each_item};
use crate::view::{
    Change, Found, HistoryView, IndraView, PeersView, ReadOnlyFile, ReadOnlyView, RealmsView,
    RootView, SnapshotsView, VaultView, View,
};

/// Where `route` sends an inode.
#[derive(Clone, Copy)]
enum Route<'a> {
    /// The vault: reads and changes.
    Vault(&'a VaultView),
    /// Any other view: reads only.
    ReadOnly(&'a dyn ReadOnlyView),
}

impl<'a> Route<'a> {
    fn view(self) -> &'a dyn View {
        match self {
            Route::Vault(v) => v,
            Route::ReadOnly(v) => v,
        }
    }
}

/// The filesystem over one vault.
pub struct VaultFs {
    store: Arc<Vault>,
    info: Arc<MountInfo>,
    attention: Arc<Attention>,
    handles: Handles,
    root: RootView,
    vault: VaultView,
    indra: IndraView,
    peers: Arc<PeersView>,
    realms: RealmsView,
    history: HistoryView,
    snapshots: SnapshotsView,
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
        store: Arc<Vault>,
        info: MountInfo,
        clock: Arc<dyn Clock>,
        config: AttentionConfig,
    ) -> FsResult<Self> {
        // A brand-new vault's root belongs to whoever mounts it first.
        let root = store.node(NodeId::ROOT)?;
        if root.ctime == root.crtime
            && store.list(NodeId::ROOT, 0, 1)?.is_empty()
            && root.uid != info.uid
        {
            let attr = SetAttr { uid: Some(info.uid), gid: Some(info.gid), ..SetAttr::default() };
            store.set_attr(NodeId::ROOT, &attr, root.crtime, Commit::Durable)?;
        }
        let info = Arc::new(info);
        let attention = Arc::new(Attention::new(store.clone(), clock.clone(), config));
        let peers =
            Arc::new(PeersView::new(store.clone(), info.clone(), clock.clone(), attention.clone()));
        let realms =
            RealmsView::new(store.clone(), info.clone(), clock, attention.clone(), peers.clone());
        let open = Arc::new(OpenFiles::open(store.clone())?);
        Ok(VaultFs {
            root: RootView::new(info.clone()),
            vault: VaultView::new(store.clone(), attention.clone(), open.clone()),
            indra: IndraView::new(store.clone(), info.clone(), attention.clone(), open),
            peers,
            realms,
            history: HistoryView::new(store.clone(), info.clone()),
            snapshots: SnapshotsView::new(store.clone(), info.clone()),
            handles: Handles::default(),
            store,
            info,
            attention,
        })
    }

    pub fn vault(&self) -> &Arc<Vault> {
        &self.store
    }

    pub fn info(&self) -> &MountInfo {
        &self.info
    }

    pub fn attention(&self) -> &Attention {
        &self.attention
    }

    /// What `realms/` shows that changed since the kernel was last told: names in folders,
    /// and folders (for `Invalidator::realms_changed`).
    pub(crate) fn realms_stale(&self) -> (Vec<(u64, Vec<u8>)>, Vec<u64>) {
        self.realms.stale()
    }

    // ----- routing -----

    /// The view that answers for `ino`: the one place that maps inodes to views.
    fn route(&self, ino: u64) -> FsResult<Route<'_>> {
        Ok(match inode::view_of(ino) {
            Some(ViewId::Vault) => Route::Vault(&self.vault),
            Some(ViewId::Root) => Route::ReadOnly(&self.root),
            Some(ViewId::Indra) => Route::ReadOnly(&self.indra),
            Some(ViewId::Peers) => Route::ReadOnly(&*self.peers),
            Some(ViewId::Realms) => Route::ReadOnly(&self.realms),
            Some(ViewId::History) => Route::ReadOnly(&self.history),
            Some(ViewId::Snapshots) => Route::ReadOnly(&self.snapshots),
            None => return Err(FsError::errno(libc::ENOENT)),
        })
    }

    fn view(&self, ino: u64) -> FsResult<&dyn View> {
        Ok(self.route(ino)?.view())
    }

    /// The vault, if `ino` is one of its inodes; else the error `ino`'s view gives `change`.
    fn writable(&self, ino: u64, change: Change<'_>) -> FsResult<&VaultView> {
        match self.route(ino)? {
            Route::Vault(v) => Ok(v),
            Route::ReadOnly(v) => Err(v.refuse(change)),
        }
    }

    /// How long the kernel may cache the attributes and entry of `ino`.
    pub(crate) fn ttl(&self, ino: u64) -> Duration {
        self.route(ino).map_or(Duration::ZERO, |r| r.view().ttl(ino))
    }

    /// How long the kernel may cache the absence of a name from the directory `parent`.
    pub(crate) fn negative_ttl(&self, parent: u64) -> Option<Duration> {
        self.route(parent).ok().and_then(|r| r.view().negative_ttl())
    }

    // ----- attributes -----

    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        self.view(ino)?.getattr(ino)
    }

    /// The attributes of several inodes (a listing's): the vault's read together, the
    /// others one by one. `None` for one that is gone.
    pub fn attrs(&self, inos: &[u64]) -> FsResult<Vec<Option<Attr>>> {
        let vault: Vec<u64> =
            inos.iter().copied().filter(|i| inode::view_of(*i) == Some(ViewId::Vault)).collect();
        let mut found = self.vault.attrs(&vault)?.into_iter();
        Ok(inos
            .iter()
            .map(|i| match inode::view_of(*i) {
                Some(ViewId::Vault) => found.next().flatten(),
                _ => self.getattr(*i).ok(),
            })
            .collect())
    }

    /// For each of `inos`, whether the kernel already holds it, with its entry and
    /// attributes handed over lately (a lookup, a creation, a listing with attributes): a
    /// listing with attributes sends such an entry without them. Only vault inodes are ever
    /// held; the other views' entries always get their attributes.
    pub fn held(&self, inos: &[u64]) -> Vec<bool> {
        self.vault.held(inos)
    }

    /// Counts a lookup the kernel now holds (readdirplus entries the adapter sent).
    pub fn remember(&self, ino: u64) {
        if let Ok(view) = self.view(ino) {
            view.remember(ino);
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        let attr = match self.view(parent)?.lookup(parent, name)? {
            Found::Entry(attr) => attr,
            Found::ViewRoot(ino) => self.getattr(ino)?,
        };
        self.remember(attr.ino);
        Ok(attr)
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if let Ok(view) = self.view(ino) {
            view.forget(ino, n);
        }
    }

    /// Has content no file references collected at once, whatever its age, once it passes
    /// `limit` bytes: by `collect_backlog` (the mount's background thread calls it every
    /// 200 ms), and by a commit that finds twice `limit`. Off until set.
    pub fn set_gc_backlog(&self, limit: u64) {
        self.vault.set_gc_backlog(limit);
    }

    /// Collects every unreferenced leaf if they hold more content than the backlog
    /// (`set_gc_backlog`); returns the bytes freed.
    /// Looks at the free space, which decides whether `close` commits before it returns
    /// (the mount's background thread calls this on every tick).
    pub fn check_space(&self) {
        self.vault.check_space();
    }

    pub fn collect_backlog(&self, below_floor: bool) -> FsResult<u64> {
        self.vault.collect_backlog(below_floor)
    }

    /// Deletes the queued unlinked nodes, all in one transaction (the mount's background
    /// thread calls this every 200 ms, and shutdown once more). Until then each is an
    /// orphan in the store, which the next open reaps if the process dies first.
    pub fn reap_queued(&self) -> FsResult<usize> {
        self.vault.reap_queued()
    }

    /// Changes attributes. The caller's identity is not needed: the kernel has checked the
    /// permission (`default_permissions`).
    pub fn setattr(&self, ctx: Ctx, ino: u64, req: &SetAttrReq) -> FsResult<Attr> {
        self.writable(ino, Change::Modify)?.setattr(ctx, ino, req)
    }

    // ----- namespace -----

    pub fn mkdir(&self, ctx: Ctx, parent: u64, name: &[u8], mode: u32) -> FsResult<Attr> {
        self.writable(parent, Change::AddEntry)?.mkdir(ctx, parent, name, mode)
    }

    pub fn mknod(
        &self,
        ctx: Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> FsResult<Attr> {
        self.writable(parent, Change::AddEntry)?.mknod(ctx, parent, name, mode, rdev)
    }

    pub fn symlink(&self, ctx: Ctx, parent: u64, name: &[u8], target: &[u8]) -> FsResult<Attr> {
        self.writable(parent, Change::AddEntry)?.symlink(ctx, parent, name, target)
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.view(ino)?.readlink(ino)
    }

    pub fn link(&self, ino: u64, new_parent: u64, name: &[u8]) -> FsResult<Attr> {
        self.writable(ino, Change::Link)?;
        self.writable(new_parent, Change::AddEntry)?.link(ino, new_parent, name)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.writable(parent, Change::RemoveEntry(name))?.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.writable(parent, Change::RemoveEntry(name))?.remove(parent, name, true)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
    ) -> FsResult<()> {
        self.writable(parent, Change::Rename)?;
        self.writable(new_parent, Change::Rename)?.rename(parent, name, new_parent, new_name, flags)
    }

    // ----- files -----

    pub fn open(&self, ctx: Ctx, ino: u64, flags: i32) -> FsResult<Opened> {
        // Linux truncates on `O_TRUNC` whatever the access mode, so it changes the file too.
        let changes = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        match self.route(ino)? {
            Route::Vault(v) => {
                let fh = self.handles.insert(Handle::File(v.open(ctx, ino, flags)?));
                let no_flush = !changes || !v.closes_wait();
                Ok(Opened { fh, keep_cache: true, direct_io: false, no_flush })
            }
            Route::ReadOnly(v) => {
                if changes {
                    return Err(v.refuse(Change::Modify));
                }
                let file = v.open(ino)?;
                // Attention on what a peer shares with us: ours, and sent to its steward.
                let seen = v.attention_entry(ino).and_then(|entry| {
                    self.attention.opened_entry(entry).map(|at| Seen { entry, at })
                });
                Ok(match file {
                    ReadOnlyFile::Rendered(data) => {
                        let fh = self.handles.insert(Handle::Rendered(data, seen));
                        Opened { fh, keep_cache: false, direct_io: true, no_flush: true }
                    }
                    ReadOnlyFile::Streamed { keep_cache, direct_io } => {
                        let fh = self.handles.insert(Handle::Streamed(ino, seen));
                        Opened { fh, keep_cache, direct_io, no_flush: true }
                    }
                })
            }
        }
    }

    pub fn create(
        &self,
        ctx: Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        flags: i32,
    ) -> FsResult<(Attr, Opened)> {
        let vault = self.writable(parent, Change::AddEntry)?;
        let (attr, handle) = vault.create(ctx, parent, name, mode, flags)?;
        let fh = self.handles.insert(Handle::File(handle));
        let no_flush = !vault.closes_wait();
        Ok((attr, Opened { fh, keep_cache: true, direct_io: false, no_flush }))
    }

    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        match self.handles.source(fh)? {
            Source::Rendered(data) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                Ok(data[start..end].to_vec())
            }
            Source::Streamed(handle_ino) => {
                debug_assert_eq!(handle_ino, ino);
                match self.route(handle_ino)? {
                    Route::ReadOnly(v) => v.read(handle_ino, offset, size),
                    Route::Vault(_) => Err(FsError::errno(libc::EBADF)),
                }
            }
            Source::File(handle_ino, open) => {
                debug_assert_eq!(handle_ino, ino);
                self.vault.read(handle_ino, &open, offset, size)
            }
        }
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.write_dropping(fh, offset, data, false)
    }

    /// `write`; with `kill_privileges`, the kernel asks that set-user-id and set-group-id be
    /// dropped too (`FUSE_WRITE_KILL_SUIDGID`).
    pub fn write_dropping(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill_privileges: bool,
    ) -> FsResult<u32> {
        let (ino, open, append) = self.handles.file(fh)?;
        self.vault.write(ino, &open, append, offset, data, kill_privileges)
    }

    /// `close(2)` of one descriptor: commits pending writes crash-consistently.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        match self.handles.file(fh) {
            Ok((ino, open, _)) => self.vault.commit(ino, &open, Commit::CrashConsistent),
            Err(e) if e.errno == libc::EISDIR => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Makes pending writes durable: when this returns, the content survives a crash (with
    /// `datasync`, as `fdatasync(2)`: the content and size, not every attribute).
    pub fn fsync(&self, fh: u64, datasync: bool) -> FsResult<()> {
        match self.handles.file(fh) {
            Ok((ino, open, _)) => self.vault.fsync(ino, &open, datasync),
            Err(e) if e.errno == libc::EISDIR => self.fsyncdir(),
            Err(e) => Err(e),
        }
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        match self.handles.remove(fh) {
            Some(Handle::File(h)) => self.vault.release(h),
            Some(Handle::Rendered(_, seen) | Handle::Streamed(_, seen)) => {
                if let Some(Seen { entry, at }) = seen {
                    self.attention.closed_entry(entry, at);
                }
                Ok(())
            }
            Some(Handle::Dir) => Ok(()),
            None => Err(FsError::errno(libc::EBADF)),
        }
    }

    /// `lseek(SEEK_DATA / SEEK_HOLE)` on file `ino`: where the next data or hole at or after
    /// `offset` begins. `ENXIO` at or past the end (and for data, when only holes follow).
    /// The vault's files answer from their chunks (a run of zero chunks is a hole); every
    /// other file is all data.
    pub fn lseek(&self, ino: u64, offset: i64, whence: i32) -> FsResult<i64> {
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return Err(FsError::errno(libc::EINVAL)),
        };
        let offset = u64::try_from(offset).map_err(|_| FsError::errno(libc::ENXIO))?;
        let found = match self.route(ino)? {
            Route::Vault(v) => v.seek(ino, offset, data)?,
            Route::ReadOnly(v) => {
                let size = v.getattr(ino)?.size;
                (offset < size).then_some(if data { offset } else { size })
            }
        };
        let found = found.ok_or_else(|| FsError::errno(libc::ENXIO))?;
        i64::try_from(found).map_err(|_| FsError::errno(libc::EOVERFLOW))
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> FsResult<()> {
        let (ino, open, _) = self.handles.file(fh)?;
        self.vault.fallocate(ino, &open, offset, length, mode)
    }

    // ----- directories -----

    pub fn opendir(&self, ino: u64) -> FsResult<Opened> {
        let attr = self.getattr(ino)?;
        if attr.kind != NodeKind::Dir {
            return Err(FsError::errno(libc::ENOTDIR));
        }
        let fh = self.handles.insert(Handle::Dir);
        Ok(Opened { fh, keep_cache: false, direct_io: false, no_flush: false })
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.remove(fh);
    }

    /// `readdir`, each entry handed to `f` (inode, cookie, kind, name) as it is read until
    /// `f` returns false, with no allocation per entry in the vault. `f` must not call into
    /// the filesystem (in the vault it runs while the store is read-locked). Returns how many
    /// entries were read, the one `f` refused included: fewer than `limit` (plus the dots)
    /// means the listing's end was reached.
    pub fn readdir_each(
        &self,
        ino: u64,
        offset: u64,
        limit: usize,
        f: &mut EachEntry<'_>,
    ) -> FsResult<usize> {
        match self.route(ino)? {
            Route::Vault(v) => v.readdir_each(ino, offset, limit, f),
            Route::ReadOnly(_) => Ok(each_item(&self.readdir(ino, offset, limit)?, f).0),
        }
    }

    /// Entries of directory `ino` after cookie `offset` (0 for the start), at most `limit`.
    /// Cookies: 1 and 2 follow "." and ".."; an entry at position p is followed by p + 2.
    /// A listing from the start (`offset` 0) is attention on the folder: the vault's records
    /// it itself, a read-only view's when the folder is an entry (`attention_entry`).
    pub fn readdir(&self, ino: u64, offset: u64, limit: usize) -> FsResult<Vec<DirItem>> {
        match self.route(ino)? {
            Route::Vault(v) => v.readdir(ino, offset, limit),
            Route::ReadOnly(v) => {
                let items = v.readdir(ino, offset, limit)?;
                if offset == 0
                    && let Some(entry) = v.attention_entry(ino)
                {
                    self.attention.scanned_entry(entry);
                }
                Ok(items)
            }
        }
    }

    pub fn fsyncdir(&self) -> FsResult<()> {
        self.vault.sync_store()
    }

    // ----- xattrs -----

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        self.view(ino)?.getxattr(ino, name)
    }

    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.view(ino)?.listxattr(ino)
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        self.writable(ino, Change::Modify)?.setxattr(ino, name, value, flags)
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        self.writable(ino, Change::Modify)?.removexattr(ino, name)
    }

    // ----- the filesystem -----

    pub fn statfs(&self) -> FsResult<StatFs> {
        let st = rustix::fs::statvfs(self.store.dir()).map_err(std::io::Error::from)?;
        let nodes = self.store.node_count()?;
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
        self.vault.commit_all()
    }

    /// Lets the commit of a closed file's writes wait up to `delay`, so that a reopen and close
    /// within it make one version (the mount sets it; `None`, the default, commits at close).
    pub fn set_commit_delay(&self, delay: Option<std::time::Duration>) {
        self.vault.set_commit_delay(delay);
    }

    /// Commits the writes of closed files whose delay is over (the mount's background thread,
    /// on every tick).
    pub fn commit_due(&self) -> FsResult<()> {
        self.vault.commit_due()
    }

    /// Commits what the intent log holds once it is due, or at once with `force`
    /// (`OpenFiles::drain_log`): the mount's background thread, on every tick.
    pub fn drain_log(&self, force: bool) -> FsResult<()> {
        self.vault.drain_log(force)
    }

    /// Commits every file's pending writes (see `OpenFiles::commit_pending`).
    pub fn commit_pending(&self) -> FsResult<()> {
        self.vault.commit_pending()
    }

    /// Files with open handles or uncommitted writes.
    pub fn open_files(&self) -> usize {
        self.vault.open_files()
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

    /// With room on the disk, a file opened for writing needs no FLUSH at `close`: its commit
    /// waits for the RELEASE, and the content is there for every reader before it (from the
    /// write buffer), `user.indra.id` included. Until the space is looked at, and when it is
    /// short, `close` commits before it returns, so that it can report a failure.
    #[test]
    fn close_commits_at_release_unless_space_is_short() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = fs(dir.path());
        let (a, o) = fs.create(CTX, inode::VAULT, b"f", 0o644, libc::O_WRONLY).expect("create");
        assert!(!o.no_flush, "before the space is looked at");
        fs.release(o.fh).expect("release");
        fs.check_space();
        let (b, o) = fs.create(CTX, inode::VAULT, b"g", 0o644, libc::O_WRONLY).expect("create");
        assert!(o.no_flush);
        fs.write(o.fh, 0, b"new content").expect("write");
        // A reader before the RELEASE sees the content, and the id names it.
        let r = fs.open(CTX, b.ino, libc::O_RDONLY).expect("open");
        assert_eq!(fs.read(b.ino, r.fh, 0, 100).expect("read"), b"new content");
        let id = fs.getxattr(b.ino, b"user.indra.id").expect("id");
        assert_eq!(id, indras_artifacts::hex(blake3::hash(b"new content").as_bytes()).as_bytes());
        fs.release(o.fh).expect("release");
        fs.release(r.fh).expect("release");
        assert_eq!(fs.getattr(b.ino).expect("getattr").size, 11);
        let w = fs.open(CTX, a.ino, libc::O_RDWR).expect("open");
        assert!(w.no_flush);
        fs.release(w.fh).expect("release");
    }

    /// With a commit delay, a close leaves the writes uncommitted (readers see them all the
    /// same); a reopen and close before the delay is over extend them, and the commit, once
    /// due, makes one version of both edits. Without one, every close commits.
    #[test]
    fn closes_within_the_commit_delay_make_one_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = fs(dir.path());
        fs.check_space();
        let (a, o) = fs.create(CTX, inode::VAULT, b"f", 0o644, libc::O_WRONLY).expect("create");
        fs.write(o.fh, 0, b"first").expect("write");
        fs.release(o.fh).expect("release");
        let versions = |fs: &VaultFs| fs.store.versions(a.ino).expect("versions").len();
        assert_eq!(versions(&fs), 1, "without a delay, the close commits");

        fs.set_commit_delay(Some(std::time::Duration::from_secs(3600)));
        for edit in [&b"second"[..], b"third!"] {
            let o = fs.open(CTX, a.ino, libc::O_WRONLY).expect("open");
            fs.write(o.fh, 0, edit).expect("write");
            fs.release(o.fh).expect("release");
            let r = fs.open(CTX, a.ino, libc::O_RDONLY).expect("open");
            assert_eq!(fs.read(a.ino, r.fh, 0, 100).expect("read"), edit);
            fs.release(r.fh).expect("release");
        }
        fs.commit_due().expect("commit what is due");
        assert_eq!(versions(&fs), 1, "nothing is due within the delay");
        assert_eq!(fs.open_files(), 1, "the waiting file");

        fs.set_commit_delay(Some(std::time::Duration::ZERO));
        fs.commit_due().expect("commit what is due");
        assert_eq!(versions(&fs), 2, "both edits in one version");
        assert_eq!(fs.open_files(), 0, "its entry is dropped");
        let node = fs.store.node(NodeId(a.ino)).expect("node");
        assert_eq!(fs.store.read_all(&node.content.expect("content")).expect("read"), b"third!");
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
                .vault
                .attr_from(|| {
                    let before = fs.store.node(NodeId(a.ino))?;
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

    /// Every part of the mount but the vault refuses every change, with the errno the
    /// layout gives it: the root's folders are fixed, the rest is read-only.
    #[test]
    fn views_other_than_the_vault_refuse_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = fs(dir.path());
        let errno = |r: FsResult<()>| r.expect_err("refused").errno;
        for (parent, add, remove_fixed, rename, link) in [
            (inode::ROOT, libc::EPERM, libc::EBUSY, libc::EBUSY, libc::EPERM),
            (inode::PEERS, libc::EROFS, libc::EROFS, libc::EROFS, libc::EROFS),
            (inode::REALMS, libc::EROFS, libc::EROFS, libc::EROFS, libc::EROFS),
            (inode::INDRA, libc::EROFS, libc::EROFS, libc::EROFS, libc::EPERM),
            (inode::HISTORY, libc::EROFS, libc::EROFS, libc::EROFS, libc::EPERM),
            (inode::SNAPSHOTS, libc::EROFS, libc::EROFS, libc::EROFS, libc::EPERM),
        ] {
            assert_eq!(errno(fs.mkdir(CTX, parent, b"d", 0o755).map(drop)), add);
            assert_eq!(errno(fs.create(CTX, parent, b"f", 0o644, 0).map(drop)), add);
            assert_eq!(errno(fs.symlink(CTX, parent, b"l", b"t").map(drop)), add);
            assert_eq!(errno(fs.rmdir(parent, b"vault")), remove_fixed);
            assert_eq!(errno(fs.rename(parent, b"vault", inode::VAULT, b"x", 0)), rename);
            assert_eq!(
                errno(fs.setattr(CTX, parent, &SetAttrReq::default()).map(drop)),
                libc::EROFS
            );
            assert_eq!(errno(fs.setxattr(parent, b"user.x", b"1", 0)), libc::EROFS);
            assert_eq!(errno(fs.removexattr(parent, b"user.x")), libc::EROFS);
            assert_eq!(errno(fs.link(parent, inode::VAULT, b"h").map(drop)), link);
            assert_eq!(
                fs.getxattr(parent, b"user.indra.id").expect_err("none").errno,
                libc::ENODATA
            );
            assert_eq!(fs.listxattr(parent).expect("list"), b"");
        }
        assert_eq!(errno(fs.unlink(inode::ROOT, b"other")), libc::ENOENT);
        assert_eq!(
            errno(fs.mknod(CTX, inode::PEERS, b"n", libc::S_IFREG, 0).map(drop)),
            libc::EROFS
        );
        let e = fs.open(CTX, inode::STATUS_JSON, libc::O_WRONLY).expect_err("read-only");
        assert_eq!(e.errno, libc::EROFS);
    }

    /// Every change to a peer's folder or file, or moving anything into or out of `peers/`,
    /// gives `EROFS`, a hard link of a peer's file included; reading goes through a handle
    /// that reads the view.
    #[test]
    fn peers_entries_refuse_every_change_and_read_through_their_handle() {
        use indras_artifacts::{AccessMode, PlayerId, SharedItem, SharedKind, Timestamp};
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = fs(dir.path());
        let now = Timestamp::now();
        let bob = fs.store.mirror_ensure_peer(PlayerId([7; 32]), "bob").expect("peer");
        let staged = fs.store.stage(b"hello").expect("stage");
        let shared = |remote, label: &str, kind| SharedItem {
            remote,
            label: label.as_bytes().to_vec(),
            kind,
            size: 5,
            mtime: now,
            content: (kind == SharedKind::File).then_some(staged.hash),
            grant: Some(AccessMode::Revocable),
        };
        let roots = [shared(1, "f", SharedKind::File), shared(2, "d", SharedKind::Dir)];
        fs.store.mirror_apply(bob.id, &roots, now).expect("apply");
        let f = fs.store.mirror_lookup(bob.id, b"f").expect("lookup").expect("f");
        assert!(fs.store.mirror_set_content(f.id, &staged, now).expect("content"));
        let (folder, file) = (inode::of_mirror(bob.id), inode::of_mirror(f.id));
        let d = fs.lookup(folder, b"d").expect("d").ino;
        let (mine, _) = fs.create(CTX, inode::VAULT, b"mine", 0o644, 0).expect("create");

        let errno = |r: FsResult<()>| r.expect_err("refused").errno;
        let truncate = SetAttrReq { size: Some(0), ..SetAttrReq::default() };
        let chmod = SetAttrReq { mode: Some(0o777), ..SetAttrReq::default() };
        let utimes = SetAttrReq { mtime: Some(TimeSet::Now), ..SetAttrReq::default() };
        let chown = SetAttrReq { uid: Some(1), ..SetAttrReq::default() };
        for ino in [inode::PEERS, folder, file, d] {
            for req in [&truncate, &chmod, &utimes, &chown] {
                assert_eq!(errno(fs.setattr(CTX, ino, req).map(drop)), libc::EROFS);
            }
            assert_eq!(errno(fs.setxattr(ino, b"user.x", b"1", 0)), libc::EROFS);
            assert_eq!(errno(fs.removexattr(ino, b"user.indra.id")), libc::EROFS);
        }
        for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
            assert_eq!(errno(fs.open(CTX, file, flags).map(drop)), libc::EROFS);
        }
        for parent in [inode::PEERS, folder, d] {
            assert_eq!(errno(fs.create(CTX, parent, b"n", 0o644, 0).map(drop)), libc::EROFS);
            assert_eq!(errno(fs.mkdir(CTX, parent, b"n", 0o755).map(drop)), libc::EROFS);
            assert_eq!(errno(fs.mknod(CTX, parent, b"n", libc::S_IFIFO, 0).map(drop)), libc::EROFS);
            assert_eq!(errno(fs.symlink(CTX, parent, b"n", b"t").map(drop)), libc::EROFS);
            assert_eq!(errno(fs.link(mine.ino, parent, b"n").map(drop)), libc::EROFS);
            assert_eq!(errno(fs.rename(inode::VAULT, b"mine", parent, b"n", 0)), libc::EROFS);
        }
        assert_eq!(errno(fs.unlink(folder, b"f")), libc::EROFS);
        assert_eq!(errno(fs.rmdir(folder, b"d")), libc::EROFS);
        assert_eq!(errno(fs.rmdir(inode::PEERS, b"bob")), libc::EROFS);
        assert_eq!(errno(fs.rename(folder, b"f", folder, b"g", 0)), libc::EROFS);
        assert_eq!(errno(fs.rename(folder, b"f", inode::VAULT, b"g", 0)), libc::EROFS);
        assert_eq!(errno(fs.rename(inode::PEERS, b"bob", inode::VAULT, b"b", 0)), libc::EROFS);
        assert_eq!(errno(fs.link(file, inode::VAULT, b"h").map(drop)), libc::EROFS);
        assert_eq!(errno(fs.link(file, folder, b"h").map(drop)), libc::EROFS);

        let o = fs.open(CTX, file, libc::O_RDONLY).expect("open");
        assert!(o.keep_cache && !o.direct_io && o.no_flush);
        assert_eq!(fs.read(file, o.fh, 1, 3).expect("read"), b"ell");
        assert_eq!(fs.write(o.fh, 0, b"x").expect_err("not a vault file").errno, libc::EISDIR);
        fs.release(o.fh).expect("release");
        assert_eq!(fs.read(file, o.fh, 0, 3).expect_err("released").errno, libc::EBADF);
        assert_eq!(fs.getattr(file).expect("getattr").perm, 0o444);
    }
}
