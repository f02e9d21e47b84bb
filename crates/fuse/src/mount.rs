//! Starting and stopping a mount: checks, the FUSE session, the periodic durability timer, and
//! an orderly shutdown that commits every buffer durably before unmounting.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use fuser::{BackgroundSession, MountOption, SessionACL};
use indras_artifacts::{Options, Timestamp, Vault};

use crate::adapter::Adapter;
use crate::fs::VaultFs;
use crate::network::{NetworkState, NoNetwork};
use crate::status::MountInfo;

/// Everything a mount needs.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub mountpoint: PathBuf,
    pub data_dir: PathBuf,
    pub player: String,
    /// Let users other than the one mounting use the mount.
    pub allow_other: bool,
    /// Have the kernel unmount if this process dies (needs `fusermount3`).
    pub auto_unmount: bool,
    /// Extra `-o` options.
    pub options: Vec<String>,
    /// FUSE request threads.
    pub threads: usize,
    /// How often crash-consistent commits are made durable.
    pub sync_interval: Duration,
    /// How long a closed file's writes may wait for their commit, so that a save that
    /// reopens the file within it makes one version with the one before
    /// (`VaultFs::set_commit_delay`). Zero commits at every close.
    pub commit_delay: Duration,
    /// How often the mount collects leaves no file references any more (old versions of
    /// edited files, deleted files' content), with the segments and chunks only they used.
    /// Zero turns background collection off.
    pub gc_interval: Duration,
    /// A leaf is collected by the timer only once it has been unreferenced this long.
    pub gc_grace: Duration,
    /// Once leaves no file references hold more content than this, the mount collects them
    /// all at once (`Vault::make_room`), whatever their age. `None`: 1% of the data dir's
    /// filesystem, at most 32 MiB (`gc_backlog`). Off with `gc_interval` zero.
    pub gc_backlog: Option<u64>,
    pub attention: crate::attention::AttentionConfig,
    /// File history's retention and space limits, and automatic snapshots.
    pub history: crate::retention::HistoryConfig,
}

impl MountConfig {
    pub fn new(mountpoint: impl Into<PathBuf>, data_dir: impl Into<PathBuf>, player: &str) -> Self {
        MountConfig {
            mountpoint: mountpoint.into(),
            data_dir: data_dir.into(),
            player: player.to_owned(),
            allow_other: false,
            auto_unmount: false,
            options: Vec::new(),
            threads: 16,
            sync_interval: Duration::from_secs(1),
            commit_delay: Duration::from_secs(1),
            gc_interval: Duration::from_secs(600),
            gc_grace: Duration::from_secs(600),
            gc_backlog: None,
            attention: crate::attention::AttentionConfig::default(),
            history: crate::retention::HistoryConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount point {0} does not exist")]
    MissingMountpoint(PathBuf),
    #[error("mount point {0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("{0} is already a mount point")]
    AlreadyMounted(PathBuf),
    #[error("data dir {path} is not writable: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("data dir {0} is already mounted by another process")]
    Locked(PathBuf),
    #[error("unknown mount option {0:?}")]
    BadOption(String),
    #[error("store: {0}")]
    Store(indras_artifacts::Error),
    #[error("mounting {path} failed: {source}")]
    Mount { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Fs(crate::error::FsError),
}

/// The source every indras-fuse mount shows in `/proc/self/mountinfo` (its `fsname`).
pub const FS_NAME: &str = "indras-fuse";

/// One line of `/proc/self/mountinfo`.
struct MountLine {
    /// `major:minor` of the mount's device.
    dev: String,
    mount_point: PathBuf,
    fs_type: String,
    source: String,
}

/// Every mount in `/proc/self/mountinfo`, in its order.
fn mounts() -> Vec<MountLine> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    info.lines().filter_map(parse_mount_line).collect()
}

/// `36 35 98:0 / /mnt/a\040b rw,noatime shared:1 - fuse indras-fuse rw,...`: the device is
/// the third field, the mount point the fifth; optional fields follow, ended by a lone `-`,
/// and the filesystem type and the source come next.
fn parse_mount_line(line: &str) -> Option<MountLine> {
    use std::os::unix::ffi::OsStringExt as _;
    let mut fields = line.split(' ');
    let dev = fields.nth(2)?;
    let mp = fields.nth(1)?;
    let mut rest = fields.skip_while(|f| *f != "-").skip(1);
    let fs_type = rest.next().unwrap_or_default();
    let source = rest.next().unwrap_or_default();
    Some(MountLine {
        dev: dev.to_owned(),
        mount_point: PathBuf::from(std::ffi::OsString::from_vec(unescape_mount_path(mp))),
        fs_type: fs_type.to_owned(),
        source: String::from_utf8_lossy(&unescape_mount_path(source)).into_owned(),
    })
}

/// Every mount point in `/proc/self/mountinfo`.
pub fn mount_points() -> Vec<PathBuf> {
    mounts().into_iter().map(|m| m.mount_point).collect()
}

/// The mount points of indras-fuse mounts (FUSE mounts of source `FS_NAME`), whether or not
/// their daemon still runs.
pub fn vault_mount_points() -> Vec<PathBuf> {
    mounts()
        .into_iter()
        .filter(|m| m.source == FS_NAME && (m.fs_type == "fuse" || m.fs_type.starts_with("fuse.")))
        .map(|m| m.mount_point)
        .collect()
}

/// The kernel's read-ahead for this mount, in KiB. FUSE starts every mount at 128 KiB; a
/// cold sequential read then waits on one small request after another (on a 2-core test
/// machine 4 MiB read a cold 1 GiB file at 645 MB/s where 128 KiB gave 332 MB/s).
const READ_AHEAD_KB: u32 = 4096;

/// Raises the mount's read-ahead (`/sys/class/bdi/<major:minor>/read_ahead_kb`). Only root
/// may; anyone else keeps the kernel's default, which is only slower.
fn raise_read_ahead(mountpoint: &Path) {
    let mp = mountpoint.canonicalize().unwrap_or_else(|_| mountpoint.to_path_buf());
    let Some(m) = mounts().into_iter().rev().find(|m| m.mount_point == mp) else { return };
    let knob = PathBuf::from(format!("/sys/class/bdi/{}/read_ahead_kb", m.dev));
    match std::fs::write(&knob, READ_AHEAD_KB.to_string()) {
        Ok(()) => tracing::debug!(knob = %knob.display(), kb = READ_AHEAD_KB, "read-ahead raised"),
        Err(e) => {
            tracing::debug!(knob = %knob.display(), error = %e, "read-ahead left at the default");
        }
    }
}

/// Whether `path` is a mount point. A dead FUSE mount cannot be resolved, so when
/// canonicalizing fails the absolute path is compared as given.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(path) = path.canonicalize().or_else(|_| std::path::absolute(path)) else {
        return false;
    };
    mount_points().contains(&path)
}

/// Undoes the octal escapes (`\040` for a space) of mountinfo paths.
fn unescape_mount_path(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn mount_options(cfg: &MountConfig) -> Result<(Vec<MountOption>, SessionACL), MountError> {
    let mut opts = vec![
        MountOption::FSName(FS_NAME.to_owned()),
        MountOption::Subtype("indras".to_owned()),
        MountOption::DefaultPermissions,
    ];
    let mut allow_other = cfg.allow_other;
    let mut auto_unmount = cfg.auto_unmount;
    for o in cfg.options.iter().flat_map(|o| o.split(',')).filter(|o| !o.is_empty()) {
        match o {
            "ro" => opts.push(MountOption::RO),
            "rw" => opts.push(MountOption::RW),
            "noatime" => opts.push(MountOption::NoAtime),
            "atime" => opts.push(MountOption::Atime),
            "exec" => opts.push(MountOption::Exec),
            "noexec" => opts.push(MountOption::NoExec),
            "suid" => opts.push(MountOption::Suid),
            "nosuid" => opts.push(MountOption::NoSuid),
            "dev" => opts.push(MountOption::Dev),
            "nodev" => opts.push(MountOption::NoDev),
            "sync" => opts.push(MountOption::Sync),
            "dirsync" => opts.push(MountOption::DirSync),
            "allow_other" => allow_other = true,
            "auto_unmount" => auto_unmount = true,
            "default_permissions" => {}
            other => return Err(MountError::BadOption(other.to_owned())),
        }
    }
    let acl = if allow_other {
        SessionACL::All
    } else if auto_unmount {
        SessionACL::RootAndOwner
    } else {
        SessionACL::Owner
    };
    if auto_unmount {
        opts.push(MountOption::AutoUnmount);
    }
    Ok((opts, acl))
}

#[derive(Default)]
struct Stop {
    requested: Mutex<bool>,
    wake: Condvar,
}

/// Asks a running mount to stop, from any thread (a signal handler thread, say).
#[derive(Clone)]
pub struct StopHandle(Arc<Stop>);

impl std::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopHandle")
    }
}

impl StopHandle {
    pub fn stop(&self) {
        *self.0.requested.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        self.0.wake.notify_all();
    }

    fn is_stopped(&self) -> bool {
        *self.0.requested.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits up to `d`; returns true if a stop was requested.
    fn wait(&self, d: Duration) -> bool {
        let guard = self.0.requested.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (guard, _) = self
            .0
            .wake
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard
    }
}

/// How often queued attention events are written.
const ATTENTION_TICK: Duration = Duration::from_millis(200);
/// Retention runs at least this often, however long the collection interval.
const PRUNE_EVERY: Duration = Duration::from_secs(180);

/// The most unreferenced content the mount leaves for its timer (`gc_backlog`): a writer
/// that outruns the background thread collects itself at twice this, so old versions never
/// hold more than 64 MiB.
const GC_BACKLOG_MAX: u64 = 32 << 20;

/// The unreferenced content past which the mount collects at once: 1% of the filesystem
/// holding the data dir, at most `GC_BACKLOG_MAX` (all of it if the filesystem's size is
/// unknown).
fn gc_backlog(data_dir: &std::path::Path) -> u64 {
    match rustix::fs::statvfs(data_dir) {
        Ok(st) => (st.f_blocks.saturating_mul(st.f_frsize) / 100).min(GC_BACKLOG_MAX),
        Err(_) => GC_BACKLOG_MAX,
    }
}

/// The background thread: writes attention batches, deletes unlinked nodes nothing holds,
/// flushes pending metadata once much is pending (so that requests rarely have to), makes
/// commits durable on a timer, deletes the chunks of payloads that were staged and
/// then dropped, keeps history within its retention and space limits (`retention::tend`, on
/// each collection and at least every `PRUNE_EVERY`), takes automatic snapshots, collects
/// payloads unreferenced for longer than the grace period (all of them once history was
/// thinned for space), and collects every unreferenced payload at once when they hold more
/// than the backlog.
fn background(fs: &VaultFs, stop: &StopHandle, cfg: &MountConfig) {
    let sync_interval = cfg.sync_interval;
    let mut last_sync = std::time::Instant::now();
    let mut last_gc = std::time::Instant::now();
    let mut last_prune = std::time::Instant::now();
    let mut last_snapshot = std::time::Instant::now();
    let mut last_floor_check = std::time::Instant::now();
    while !stop.wait(ATTENTION_TICK.min(sync_interval)) {
        fs.check_space();
        if let Err(e) = fs.commit_due() {
            tracing::error!(error = %e, "committing closed files failed; will retry");
        }
        if let Err(e) = fs.drain_log(false) {
            tracing::error!(error = %e, "committing what the intent log holds failed; will retry");
        }
        if let Err(e) = fs.attention().flush() {
            tracing::error!(error = %e, "writing attention events failed; they stay queued");
        }
        if let Err(e) = fs.reap_queued() {
            tracing::warn!(error = %e, "deleting unlinked nodes failed; the next mount does");
        }
        if fs.vault().wants_flush()
            && let Err(e) = fs.vault().flush_pending()
        {
            tracing::warn!(error = %e, "flushing pending metadata failed; will retry");
        }
        if last_sync.elapsed() >= sync_interval {
            last_sync = std::time::Instant::now();
            if let Err(e) = fs.vault().sync() {
                tracing::error!(error = %e, "periodic durable commit failed");
            }
            if let Err(e) = fs.vault().reclaim_abandoned() {
                tracing::warn!(error = %e, "reclaiming abandoned chunks failed; gc will");
            }
        }
        if let Some(every) = cfg.history.snapshot_every
            && last_snapshot.elapsed() >= every
        {
            last_snapshot = std::time::Instant::now();
            match fs.vault().snapshot_auto(&cfg.history.keep, Timestamp::now()) {
                Ok(s) => tracing::info!(name = %s.name, "automatic snapshot taken"),
                Err(e) => tracing::warn!(error = %e, "taking an automatic snapshot failed"),
            }
        }
        let gc_due = !cfg.gc_interval.is_zero() && last_gc.elapsed() >= cfg.gc_interval;
        let mut thinned = false;
        if gc_due || last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = std::time::Instant::now();
            match crate::retention::tend(fs.vault(), Timestamp::now()) {
                Ok(t) => {
                    if t.pruned.versions > 0 {
                        tracing::info!(versions = t.pruned.versions, "pruned history");
                    }
                    thinned = t.thinned.versions > 0;
                }
                Err(e) => tracing::warn!(error = %e, "pruning history failed"),
            }
        }
        if !cfg.gc_interval.is_zero() && (gc_due || thinned) {
            last_gc = std::time::Instant::now();
            let grace = i64::try_from(cfg.gc_grace.as_secs()).unwrap_or(i64::MAX);
            let before = Timestamp { secs: Timestamp::now().secs.saturating_sub(grace), nanos: 0 };
            // What history gave up for space goes now, not after the grace period.
            match fs.vault().collect(if thinned { None } else { Some(before) }) {
                Ok(r) if r.leaves_removed > 0 => tracing::info!(
                    leaves = r.leaves_removed,
                    chunks = r.chunks_removed,
                    bytes = r.chunk_bytes_freed + r.inline_bytes_freed,
                    "collected unreferenced payloads"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "collecting unreferenced payloads failed"),
            }
        }
        // Free space under the floor makes history give way (statvfs, once a sync interval).
        let below_floor = last_floor_check.elapsed() >= sync_interval && {
            last_floor_check = std::time::Instant::now();
            fs.vault().below_floor().unwrap_or(false)
        };
        if let Err(e) = fs.collect_backlog(below_floor) {
            tracing::warn!(error = %e, "collecting the unreferenced backlog failed");
        }
    }
}

/// Drops what the kernel caches of entries that changed without a request through
/// the mount (what the daemon delivers, what peers change). Cheap to clone; before the mount
/// is live and after it is gone, it does nothing.
///
/// `entry` calls the kernel at once: never call it from inside a FUSE request about the same
/// directory, since the kernel waits for that request while holding the directory.
/// `mirror_changed` only queues: a thread of the mount's own calls the kernel, so it may be
/// called from anywhere. (Dropping an inode's pages waits for reads of them in flight, and
/// such a read may itself be waiting for the content whose arrival is being reported.)
#[derive(Clone, Debug, Default)]
pub struct Invalidator(Arc<Notify>);

#[derive(Debug, Default)]
struct Notify {
    notifier: OnceLock<fuser::Notifier>,
    /// Invalidations for the thread that sends them, from when the mount is live until it
    /// stops.
    queue: Mutex<Option<mpsc::Sender<Inval>>>,
    /// An `Inval::Realms` is queued and not yet taken: more changes ride along with it.
    realms_queued: std::sync::atomic::AtomicBool,
    /// The last `Inval::Mark` handed out, and the last one the thread reached.
    marks: std::sync::atomic::AtomicU64,
    reached: Mutex<u64>,
    reached_changed: Condvar,
}

/// One invalidation for the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Inval {
    /// The entry `name` in the directory `parent`.
    Entry { parent: u64, name: Vec<u8> },
    /// An inode's attributes, and with `pages` its cached content as well.
    Inode { ino: u64, pages: bool },
    /// Whatever `realms/` shows that changed (`RealmsView::stale`).
    Realms,
    /// Everything queued before it has been sent: the thread records `n` as reached.
    Mark(u64),
}

impl Inval {
    fn send(&self, n: &fuser::Notifier) {
        let result = match self {
            Inval::Entry { parent, name } => {
                n.inval_entry(fuser::INodeNo(*parent), std::ffi::OsStr::from_bytes(name))
            }
            // Offset 0 and length 0: the whole file's pages; a negative offset: none of them.
            Inval::Inode { ino, pages } => {
                n.inval_inode(fuser::INodeNo(*ino), if *pages { 0 } else { -1 }, 0)
            }
            Inval::Realms | Inval::Mark(_) => return,
        };
        if let Err(e) = result {
            tracing::debug!(inval = ?self, error = %e, "invalidating failed");
        }
    }
}

/// What the kernel must drop after `changes`: for each entry touched, its name in its folder
/// and the entry itself (attributes and pages), under `peers/` and under `realms/` (where
/// the same entry has an inode of its own); then each folder's attributes (its link count
/// may have changed).
fn mirror_invalidations(changes: &indras_artifacts::MirrorChanges) -> Vec<Inval> {
    let mut out = Vec::with_capacity(changes.touched.len() * 3 + 1);
    let mut folders = Vec::new();
    for (id, parent, label) in &changes.touched {
        let parent = crate::inode::of_mirror(*parent);
        out.push(Inval::Entry { parent, name: label.clone() });
        out.push(Inval::Inode { ino: crate::inode::of_mirror(*id), pages: true });
        out.push(Inval::Inode { ino: crate::inode::of_realm(*id), pages: true });
        if !folders.contains(&parent) {
            folders.push(parent);
        }
    }
    out.extend(folders.into_iter().map(|ino| Inval::Inode { ino, pages: false }));
    out
}

impl Invalidator {
    /// The entry `name` in the directory `parent` (a vault inode), at once.
    pub fn entry(&self, parent: u64, name: &[u8]) {
        if let Some(n) = self.0.notifier.get() {
            Inval::Entry { parent, name: name.to_vec() }.send(n);
        }
    }

    /// Queues what the kernel must drop after a change to the mirror (`peers/`): each touched
    /// entry's name in its folder (`peers/` for a peer's folder), the entry's attributes and
    /// cached content, and its folder's attributes. Returns at once.
    pub fn mirror_changed(&self, changes: &indras_artifacts::MirrorChanges) {
        if changes.touched.is_empty() {
            return;
        }
        {
            let queue = self.0.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let Some(queue) = queue.as_ref() else { return };
            for inval in mirror_invalidations(changes) {
                // The thread is gone only once the mount is: nothing is cached any more.
                let _ = queue.send(inval);
            }
        }
        // Realm views show mirror entries too.
        self.realms_changed();
    }

    /// Queues a look at what `realms/` shows: the names that changed since the kernel was
    /// last told, and their folders, are dropped. Changes that come while one look is queued
    /// ride along with it. Returns at once.
    pub fn realms_changed(&self) {
        use std::sync::atomic::Ordering;
        if self.0.realms_queued.swap(true, Ordering::SeqCst) {
            return;
        }
        let queue = self.0.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match queue.as_ref() {
            Some(q) => {
                let _ = q.send(Inval::Realms);
            }
            None => self.0.realms_queued.store(false, Ordering::SeqCst),
        }
    }

    /// Drops what the kernel caches of vault files changed outside a FUSE request (a
    /// restore, an undelete): the names `entries` (folder inode, name), then the attributes
    /// and cached content of `inodes`, then the attributes of `folders`. The invalidation
    /// thread sends them (a FUSE request may be reading those pages); this waits until it has,
    /// at most `limit`, and returns whether it did. Never call it on a FUSE request's thread.
    pub fn vault_changed(
        &self,
        entries: &[(u64, Vec<u8>)],
        inodes: &[u64],
        folders: &[u64],
        limit: Duration,
    ) -> bool {
        use std::sync::atomic::Ordering;
        let mark = {
            let queue = self.0.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // Not live (or gone): the kernel caches nothing of this mount.
            let Some(queue) = queue.as_ref() else { return true };
            let invals = entries
                .iter()
                .map(|(parent, name)| Inval::Entry { parent: *parent, name: name.clone() })
                .chain(inodes.iter().map(|ino| Inval::Inode { ino: *ino, pages: true }))
                .chain(folders.iter().map(|ino| Inval::Inode { ino: *ino, pages: false }));
            for inval in invals {
                let _ = queue.send(inval);
            }
            let mark = self.0.marks.fetch_add(1, Ordering::SeqCst) + 1;
            if queue.send(Inval::Mark(mark)).is_err() {
                return true;
            }
            mark
        };
        let reached = self.0.reached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (reached, _) = self
            .0
            .reached_changed
            .wait_timeout_while(reached, limit, |r| *r < mark)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *reached >= mark
    }

    /// The mount is live: keeps its notifier and starts the thread that sends queued
    /// invalidations (and looks at `realms/` in `fs` when asked).
    fn start(&self, notifier: fuser::Notifier, fs: std::sync::Weak<VaultFs>) -> io::Result<()> {
        let (tx, rx) = mpsc::channel::<Inval>();
        let n = notifier.clone();
        let notify = self.0.clone();
        std::thread::Builder::new().name("indras-invalidate".to_owned()).spawn(move || {
            for inval in rx {
                if let Inval::Mark(n) = inval {
                    let mut reached =
                        notify.reached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    *reached = (*reached).max(n);
                    notify.reached_changed.notify_all();
                    continue;
                }
                if inval == Inval::Realms {
                    notify.realms_queued.store(false, std::sync::atomic::Ordering::SeqCst);
                    let Some(fs) = fs.upgrade() else { continue };
                    let (names, dirs) = fs.realms_stale();
                    for (parent, name) in names {
                        Inval::Entry { parent, name }.send(&n);
                    }
                    for ino in dirs {
                        Inval::Inode { ino, pages: false }.send(&n);
                    }
                    continue;
                }
                inval.send(&n);
            }
        })?;
        let _ = self.0.notifier.set(notifier);
        *self.0.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
        Ok(())
    }

    /// The mount is gone: the thread ends once it has sent what was queued.
    fn stop(&self) {
        self.0.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    }
}

/// Starts the daemon's network layer on the opened vault, for `MountSession::start_with`.
pub type StartNetwork<'a> = dyn Fn(&Arc<Vault>, Invalidator) -> Arc<dyn NetworkState> + 'a;

/// A live mount.
pub struct MountSession {
    fs: Arc<VaultFs>,
    invalidator: Invalidator,
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    stop: StopHandle,
    flusher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MountSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountSession").field("mountpoint", &self.mountpoint).finish_non_exhaustive()
    }
}

impl MountSession {
    /// Checks the mount point and data dir, opens the vault and mounts it. Returns once the
    /// mount is live.
    pub fn start(cfg: &MountConfig) -> Result<MountSession, MountError> {
        Self::start_with(cfg, &|_, _| Arc::new(NoNetwork("no network layer in this mount".into())))
    }

    /// As `start`, with the network layer that `network` starts on the opened vault (the
    /// daemon's; the mount only reads its snapshots). The `Invalidator` it is handed works
    /// once the mount is live.
    pub fn start_with(
        cfg: &MountConfig,
        network: &StartNetwork<'_>,
    ) -> Result<MountSession, MountError> {
        let mp = &cfg.mountpoint;
        match std::fs::metadata(mp) {
            Err(_) => return Err(MountError::MissingMountpoint(mp.clone())),
            Ok(m) if !m.is_dir() => return Err(MountError::NotADirectory(mp.clone())),
            Ok(_) => {}
        }
        if is_mounted(mp) {
            return Err(MountError::AlreadyMounted(mp.clone()));
        }
        let (options, acl) = mount_options(cfg)?;
        let data_err = |source| MountError::DataDir { path: cfg.data_dir.clone(), source };
        std::fs::create_dir_all(&cfg.data_dir).map_err(data_err)?;
        tempfile::tempfile_in(&cfg.data_dir).map_err(data_err)?;
        let vault = match Vault::open(&cfg.data_dir, &cfg.player, &Options::default()) {
            Ok(v) => Arc::new(v),
            Err(indras_artifacts::Error::Locked(p)) => return Err(MountError::Locked(p)),
            Err(e) => return Err(MountError::Store(e)),
        };
        vault.retry_appends_when_full();
        vault.set_keep(cfg.history.keep.clone());
        vault.set_space_limits(cfg.history.space);
        let invalidator = Invalidator::default();
        let info = MountInfo {
            player: cfg.player.clone(),
            data_dir: cfg.data_dir.canonicalize().unwrap_or_else(|_| cfg.data_dir.clone()),
            mountpoint: mp.canonicalize().unwrap_or_else(|_| mp.clone()),
            mounted_at: Timestamp::now(),
            pid: std::process::id(),
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            network: network(&vault, invalidator.clone()),
        };
        let fs = Arc::new(
            VaultFs::with_attention(
                vault,
                info,
                Arc::new(crate::attention::SystemClock),
                cfg.attention,
            )
            .map_err(MountError::Fs)?,
        );

        let mut fcfg = fuser::Config::default();
        fcfg.mount_options = options;
        fcfg.acl = acl;
        fcfg.n_threads = Some(cfg.threads.max(1));
        fcfg.clone_fd = true;
        let session = fuser::Session::new(Adapter::new(fs.clone()), mp, &fcfg)
            .and_then(fuser::Session::spawn)
            .map_err(|source| MountError::Mount { path: mp.clone(), source })?;
        invalidator
            .start(session.notifier(), Arc::downgrade(&fs))
            .map_err(|source| MountError::Mount { path: mp.clone(), source })?;
        raise_read_ahead(mp);

        if !cfg.gc_interval.is_zero() {
            fs.set_gc_backlog(cfg.gc_backlog.unwrap_or_else(|| gc_backlog(&cfg.data_dir)));
        }
        fs.check_space();
        fs.set_commit_delay((!cfg.commit_delay.is_zero()).then_some(cfg.commit_delay));
        let stop = StopHandle(Arc::new(Stop::default()));
        let flusher = {
            let stop = stop.clone();
            let cfg = cfg.clone();
            let fs = fs.clone();
            std::thread::Builder::new()
                .name("indras-background".to_owned())
                .spawn(move || background(&fs, &stop, &cfg))
                .map_err(|source| MountError::Mount { path: mp.clone(), source })?
        };
        tracing::info!(mountpoint = %mp.display(), data_dir = %cfg.data_dir.display(), "mounted");
        Ok(MountSession {
            fs,
            invalidator,
            session: Some(session),
            mountpoint: mp.clone(),
            stop,
            flusher: Some(flusher),
        })
    }

    pub fn fs(&self) -> &Arc<VaultFs> {
        &self.fs
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// What drops the kernel's caches of this mount.
    pub fn invalidator(&self) -> Invalidator {
        self.invalidator.clone()
    }

    /// Blocks until a stop is requested or the filesystem is unmounted from outside, then
    /// shuts down.
    pub fn wait(self) -> io::Result<()> {
        loop {
            if self.stop.wait(Duration::from_millis(100)) {
                break;
            }
            if self.session.as_ref().is_none_or(|s| s.guard.is_finished()) {
                break;
            }
        }
        self.shutdown()
    }

    /// Commits every buffer durably, unmounts, and closes the vault.
    pub fn shutdown(mut self) -> io::Result<()> {
        let result = self.shutdown_inner();
        drop(self);
        result
    }

    fn shutdown_inner(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        if let Err(e) = self.fs.commit_all() {
            result = Err(io::Error::other(format!("committing open files failed: {e}")));
        }
        if let Some(session) = self.session.take() {
            if session.guard.is_finished() {
                let _ = session.join();
            } else if let Err(e) = session.umount_and_join() {
                // Busy (a process has its cwd or a file inside): detach lazily. Everything is
                // committed; the kernel finishes the unmount when the last user leaves.
                tracing::warn!(error = %e, "unmount busy; detaching lazily");
                rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH)
                    .map_err(io::Error::from)?;
            }
        }
        self.invalidator.stop();
        self.stop.stop();
        if let Some(f) = self.flusher.take() {
            let _ = f.join();
        }
        self.fs.vault().sync().map_err(|e| io::Error::other(e.to_string()))?;
        result
    }
}

impl Drop for MountSession {
    fn drop(&mut self) {
        if self.session.is_some()
            && let Err(e) = self.shutdown_inner()
        {
            tracing::error!(error = %e, "shutting the mount down failed");
        }
        if !self.stop.is_stopped() {
            self.stop.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_unescape() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), b"/tmp/a b");
        assert_eq!(unescape_mount_path("/plain"), b"/plain");
        assert!(mount_points().iter().any(|p| p == Path::new("/")));
        assert!(is_mounted(Path::new("/")));
    }

    #[test]
    fn mountinfo_lines_give_device_point_type_and_source() {
        let m = parse_mount_line(
            r"36 35 0:52 / /tmp/a\040b rw,nosuid shared:7 master:1 - fuse.indras indras-fuse rw",
        )
        .unwrap();
        assert_eq!((m.dev.as_str(), m.fs_type.as_str()), ("0:52", "fuse.indras"));
        assert_eq!((m.mount_point.as_path(), m.source.as_str()), (Path::new("/tmp/a b"), FS_NAME));
        let m = parse_mount_line("22 1 8:1 / / rw - ext4 /dev/sda1 rw").unwrap();
        assert_eq!((m.fs_type.as_str(), m.source.as_str()), ("ext4", "/dev/sda1"));
        let (opts, _) = mount_options(&MountConfig::new("/m", "/d", "p")).unwrap();
        assert!(opts.contains(&MountOption::FSName(FS_NAME.into())), "{opts:?}");
    }

    /// Each touched entry drops its name in its folder (`peers/` for a peer's folder) and its
    /// own attributes and pages, under `peers/` and `realms/`; each folder then drops its
    /// attributes, once.
    #[test]
    fn mirror_changes_invalidate_names_entries_and_folders() {
        use crate::inode::{PEERS, PEERS_ENTRIES, REALMS_ENTRIES};
        use indras_artifacts::{MirrorChanges, MirrorEntry, NodeId};
        let changes = MirrorChanges {
            touched: vec![
                (NodeId(20), MirrorEntry::TOP, b"bob".to_vec()),
                (NodeId(21), NodeId(20), b"a.txt".to_vec()),
                (NodeId(22), NodeId(20), b"b.txt".to_vec()),
            ],
            ..MirrorChanges::default()
        };
        let e = |parent, name: &[u8]| Inval::Entry { parent, name: name.to_vec() };
        let i = |ino, pages| Inval::Inode { ino, pages };
        let bob = PEERS_ENTRIES.start + 20;
        assert_eq!(
            mirror_invalidations(&changes),
            [
                e(PEERS, b"bob"),
                i(bob, true),
                i(REALMS_ENTRIES.start + 20, true),
                e(bob, b"a.txt"),
                i(PEERS_ENTRIES.start + 21, true),
                i(REALMS_ENTRIES.start + 21, true),
                e(bob, b"b.txt"),
                i(PEERS_ENTRIES.start + 22, true),
                i(REALMS_ENTRIES.start + 22, true),
                i(PEERS, false),
                i(bob, false),
            ]
        );
        // Before the mount is live (and after), nothing is queued and nothing fails.
        Invalidator::default().mirror_changed(&changes);
    }

    #[test]
    fn options_parse_and_refuse_unknown() {
        let mut cfg = MountConfig::new("/m", "/d", "p");
        cfg.options = vec!["noatime,allow_other".into()];
        let (_, acl) = mount_options(&cfg).unwrap();
        assert!(matches!(acl, SessionACL::All));
        cfg.options = vec!["bogus".into()];
        assert!(matches!(mount_options(&cfg), Err(MountError::BadOption(o)) if o == "bogus"));
    }
}
