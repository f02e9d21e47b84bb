//! The thin `fuser::Filesystem` adapter: each handler converts arguments, calls `VaultFs`,
//! and replies with the result or with the error's errno (logged at the error's own level).
//! How long the kernel may cache a reply is the answering view's to say (`VaultFs::ttl`).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use indras_artifacts::NodeKind;

use crate::error::FsError;
use crate::fs::{Attr, Ctx, Opened, SetAttrReq, TimeSet, VaultFs};

const MAX_WRITE: u32 = 1 << 20;
/// The most entries one `READDIR` reply carries, and one `READDIRPLUS` reply.
///
/// The kernel holds a folder's lock (shared) while a listing request of it is out, and every
/// change to the folder (create, unlink, rename) takes that lock exclusively: against a
/// program that lists the folder in a loop, each change waits for the listing request in
/// flight. So a reply is kept short rather than as full as the kernel's buffer allows (one
/// page on older kernels; recent ones offer as much as the program reads at once, 32 KiB for
/// glibc's `readdir`: about 1,000 plain entries, or 200 with attributes). A plain entry is one
/// row of a range read (`Vault::list`), so 256 of them take about 100 µs; an entry with
/// attributes also costs a node read and the kernel's caching of it, so a `READDIRPLUS` reply
/// carries at most 64 of those (and up to 256 in all with the entries it sends without
/// attributes). A listing takes a few more requests for it, each a round trip of some 20 µs.
const READDIR_MAX: usize = 256;
const READDIRPLUS_MAX: usize = 64;
/// Entries read from the store at a time while a reply is filled, so that little is read
/// that the reply has no room for (a 4 KiB buffer takes about 120 plain entries, or 25 with
/// attributes).
const READDIR_CHUNK: usize = 64;
const READDIRPLUS_CHUNK: usize = 32;

pub struct Adapter {
    fs: Arc<VaultFs>,
}

impl Adapter {
    pub fn new(fs: Arc<VaultFs>) -> Self {
        Adapter { fs }
    }
}

fn ctx(req: &Request) -> Ctx {
    Ctx { uid: req.uid(), gid: req.gid(), pid: req.pid() }
}

fn kind(k: NodeKind) -> FileType {
    match k {
        NodeKind::File => FileType::RegularFile,
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::Socket => FileType::Socket,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
    }
}

fn attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.crtime,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

/// An entry of a readdirplus reply without attributes: node id 0, and only the kind, which
/// gives the listing's file type.
fn bare_attr(kind: FileType) -> FileAttr {
    FileAttr { kind, ..negative_attr() }
}

const TTL_NONE: std::time::Duration = std::time::Duration::ZERO;

/// Node id 0 in an entry reply means "no such name, for the entry's TTL".
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn errno(op: &'static str, e: &FsError) -> Errno {
    match e.level {
        tracing::Level::ERROR => tracing::error!(op, errno = e.errno, "{}", e.message),
        tracing::Level::WARN => tracing::warn!(op, errno = e.errno, "{}", e.message),
        _ => tracing::debug!(op, errno = e.errno, "{}", e.message),
    }
    Errno::from_i32(e.errno)
}

fn time(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(t),
    }
}

fn fopen(o: Opened) -> FopenFlags {
    let mut f = FopenFlags::empty();
    if o.keep_cache {
        f |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if o.direct_io {
        f |= FopenFlags::FOPEN_DIRECT_IO;
    }
    if o.no_flush {
        f |= FopenFlags::FOPEN_NOFLUSH;
    }
    f
}

fn reply_entry(fs: &VaultFs, reply: ReplyEntry, result: Result<Attr, FsError>, op: &'static str) {
    match result {
        Ok(a) => reply.entry(&fs.ttl(a.ino), &attr(&a), Generation(0)),
        Err(e) => reply.error(errno(op, &e)),
    }
}

fn reply_data(reply: ReplyData, result: Result<Vec<u8>, FsError>, op: &'static str) {
    match result {
        Ok(d) => reply.data(&d),
        Err(e) => reply.error(errno(op, &e)),
    }
}

fn reply_attr(fs: &VaultFs, reply: ReplyAttr, result: Result<Attr, FsError>, op: &'static str) {
    match result {
        Ok(a) => reply.attr(&fs.ttl(a.ino), &attr(&a)),
        Err(e) => reply.error(errno(op, &e)),
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), FsError>, op: &'static str) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(op, &e)),
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // ATOMIC_O_TRUNC: `open(O_TRUNC)` arrives as one open with the flag, so the truncation
        // joins the write buffer (committed at close) instead of a setattr that carries no file
        // handle and would have to commit at once.
        // HANDLE_KILLPRIV_V2: the daemon drops set-user-id and set-group-id on write,
        // truncation and chown (`VaultView::setattr`, `write`, `open`), so the kernel stops
        // asking for `security.capability` before every write (it still asks once per fresh
        // inode, then marks it as having none).
        let wanted = InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        // Each one the kernel offers: fuser takes none of a set that names one it lacks.
        let offered = config.capabilities();
        let unsupported = wanted - offered;
        if !unsupported.is_empty() {
            tracing::info!(?unsupported, "kernel lacks some optional FUSE capabilities");
        }
        // Cannot fail: every flag asked for is one the kernel offers.
        let _ = config.add_capabilities(wanted & offered);
        let _ = config.set_max_write(MAX_WRITE);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.commit_all() {
            tracing::error!(error = %e, "committing at unmount failed");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name.as_bytes()) {
            // A missing name where the view lets the kernel cache absence (the vault): a
            // negative entry, so probes for absent files (editors, git, compilers) stay in the
            // kernel.
            Err(e) if e.errno == libc::ENOENT => match self.fs.negative_ttl(parent.0) {
                Some(ttl) => reply.entry(&ttl, &negative_attr(), Generation(0)),
                None => reply.error(errno("lookup", &e)),
            },
            result => reply_entry(&self.fs, reply, result, "lookup"),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply_attr(&self.fs, reply, self.fs.getattr(ino.0), "getattr");
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = SetAttrReq {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
            ctime,
            fh: fh.map(|f| f.0),
        };
        reply_attr(&self.fs, reply, self.fs.setattr(ctx(req), ino.0, &r), "setattr");
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        reply_data(reply, self.fs.readlink(ino.0), "readlink");
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(
            &self.fs,
            reply,
            self.fs.mknod(ctx(req), parent.0, name.as_bytes(), mode, rdev),
            "mknod",
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(
            &self.fs,
            reply,
            self.fs.mkdir(ctx(req), parent.0, name.as_bytes(), mode),
            "mkdir",
        );
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.unlink(parent.0, name.as_bytes()), "unlink");
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.rmdir(parent.0, name.as_bytes()), "rmdir");
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let r = self.fs.symlink(
            ctx(req),
            parent.0,
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
        );
        reply_entry(&self.fs, reply, r, "symlink");
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.fs.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            flags.bits(),
        );
        reply_empty(reply, r, "rename");
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(&self.fs, reply, self.fs.link(ino.0, newparent.0, newname.as_bytes()), "link");
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(ctx(req), ino.0, flags.0) {
            Ok(o) => reply.opened(FileHandle(o.fh), fopen(o)),
            Err(e) => reply.error(errno("open", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        reply_data(reply, self.fs.read(ino.0, fh.0, offset, size), "read");
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.fs.write_dropping(fh.0, offset, data, kill) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("write", &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.flush(fh.0), "flush");
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.release(fh.0), "release");
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.fsync(fh.0, datasync), "fsync");
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(ino.0) {
            Ok(o) => reply.opened(FileHandle(o.fh), FopenFlags::empty()),
            Err(e) => reply.error(errno("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Read in chunks until the reply is full or long enough: no entry is read that the
        // reply has no room for, and each goes into the reply as it is read. An error after
        // some entries sends those; the kernel asks again from the last of them and gets the
        // error then.
        let (mut cookie, mut sent, mut full) = (offset, 0, false);
        loop {
            let read =
                self.fs.readdir_each(ino.0, cookie, READDIR_CHUNK, &mut |ino, off, k, name| {
                    if reply.add(INodeNo(ino), off, kind(k), OsStr::from_bytes(name)) {
                        full = true;
                        return false;
                    }
                    (cookie, sent) = (off, sent + 1);
                    true
                });
            match read {
                Ok(read) if full || read < READDIR_CHUNK || sent >= READDIR_MAX => break,
                Ok(_) => {}
                Err(e) if sent == 0 => return reply.error(errno("readdir", &e)),
                Err(_) => break,
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // As `readdir`, in chunks. Attributes go only with the entries the kernel does not
        // hold already (`VaultFs::held`), read together per chunk; the others, and `.` and
        // `..`, go bare (node id 0: the kernel lists them and caches nothing for them). An
        // entry sent with attributes is one more lookup the kernel holds, and marks its inode
        // so that when a program then opens or removes it, the kernel asks for attributes with
        // the folder's next page: against a program that lists a large folder while another
        // works through its files, sending every entry's attributes kept every page a page
        // with attributes, each a node read here and a dentry update in the kernel.
        let (mut cookie, mut sent, mut with_attrs) = (offset, 0, 0);
        let mut chunk = READDIRPLUS_CHUNK;
        loop {
            let items = match self.fs.readdir(ino.0, cookie, chunk) {
                Ok(items) => items,
                Err(e) if sent == 0 => return reply.error(errno("readdirplus", &e)),
                Err(_) => break,
            };
            let end = items.len() < chunk;
            let inos: Vec<u64> = items.iter().map(|it| it.ino).collect();
            let mut bare = self.fs.held(&inos);
            for (it, b) in items.iter().zip(bare.iter_mut()) {
                *b |= it.name == b"." || it.name == b"..";
            }
            let wanted: Vec<u64> =
                items.iter().zip(&bare).filter(|(_, b)| !**b).map(|(it, _)| it.ino).collect();
            let attrs = match self.fs.attrs(&wanted) {
                Ok(a) => a,
                Err(e) if sent == 0 => return reply.error(errno("readdirplus", &e)),
                Err(_) => break,
            };
            // The next chunk is a plain one's size when this one needed no attributes.
            chunk = if wanted.is_empty() { READDIR_CHUNK } else { READDIRPLUS_CHUNK };
            let mut attrs = attrs.into_iter();
            for (it, bare) in items.into_iter().zip(bare) {
                let name = OsStr::from_bytes(&it.name);
                if bare {
                    let a = bare_attr(kind(it.kind));
                    if reply.add(INodeNo(it.ino), it.offset, name, &TTL_NONE, &a, Generation(0)) {
                        return reply.ok();
                    }
                    sent += 1;
                } else if let Some(a) = attrs.next().flatten() {
                    // (An entry removed since the listing was read is skipped.)
                    let ttl = self.fs.ttl(it.ino);
                    if reply.add(INodeNo(it.ino), it.offset, name, &ttl, &attr(&a), Generation(0)) {
                        return reply.ok();
                    }
                    self.fs.remember(it.ino);
                    (sent, with_attrs) = (sent + 1, with_attrs + 1);
                }
                cookie = it.offset;
            }
            if end || sent >= READDIR_MAX || with_attrs >= READDIRPLUS_MAX {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.fsyncdir(), "fsyncdir");
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno("statfs", &e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.setxattr(ino.0, name.as_bytes(), value, flags), "setxattr");
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(ino.0, name.as_bytes()) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(errno("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(v) => xattr_reply(reply, &v, size),
            Err(e) => reply.error(errno("listxattr", &e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.removexattr(ino.0, name.as_bytes()), "removexattr");
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // With default_permissions the kernel checks access itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.fs.create(ctx(req), parent.0, name.as_bytes(), mode, flags) {
            Ok((a, o)) => {
                reply.created(
                    &self.fs.ttl(a.ino),
                    &attr(&a),
                    Generation(0),
                    FileHandle(o.fh),
                    fopen(o),
                );
            }
            Err(e) => reply.error(errno("create", &e)),
        }
    }

    /// No device controls here: `ENOTTY`, the answer a regular file on a disk gives (for
    /// example to the `TCGETS` that every `isatty()` sends). Answered without fuser's default
    /// handler, which would log a warning for each one.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.fallocate(fh.0, offset, length, mode), "fallocate");
    }

    /// `SEEK_DATA` and `SEEK_HOLE` (the kernel answers the other `whence` values itself).
    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.fs.lseek(ino.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno("lseek", &e)),
        }
    }
}

fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len);
    } else if len <= size {
        reply.data(value);
    } else {
        reply.error(Errno::ERANGE);
    }
}
