//! The open-file table: one `OpenNode` for each vault file that has open handles or
//! uncommitted writes, holding its write buffer, and the commits of those buffers.
//!
//! # Invariants and lock order
//! - An entry's handle count changes only while the table's map is locked, so an entry is
//!   never dropped while it is being handed out (`acquire`, `release`).
//! - An entry is dropped once it has no handle and no buffer. Only a truncate by path makes a
//!   buffer without a handle, and it commits before it lets go.
//! - The `OpenNode` mutex serialises writes, reads of dirty content and commits of one file.
//!   The map is never held while waiting for it (a commit can hold it for long).
//! - `commits` counts commits of file content, so an attribute read can tell that a commit
//!   (and maybe a release that dropped the file's buffer) slipped in after it read the node.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use indras_artifacts::{Commit, NodeId, NodeKind, SetContent, Timestamp, Vault};

use crate::buffer::WriteBuffer;
use crate::error::{FsError, FsResult};
use crate::intent_log::{IntentLog, PREFILL_MAX, Record};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `op`; if it fails for want of space, has the store make room
/// (`Vault::retry_when_full`: at once, one at a time, not again soon after one that freed
/// nothing) and runs it once more. `op` must leave nothing changed when it fails.
pub(crate) fn with_room<T>(vault: &Vault, mut op: impl FnMut() -> FsResult<T>) -> FsResult<T> {
    match op() {
        Err(e) if is_full(e.errno) && vault.retry_when_full() => op(),
        result => result,
    }
}

fn is_full(errno: i32) -> bool {
    errno == libc::ENOSPC || errno == libc::EDQUOT
}

/// A file that has open handles or uncommitted writes.
#[derive(Debug)]
pub(crate) struct OpenNode {
    /// Open handles; changes only while the table's map is locked.
    pub(crate) handles: AtomicU32,
    /// Handles that `execve(2)` opened: the file is a program being run.
    pub(crate) executing: AtomicU32,
    pub(crate) state: Mutex<FileState>,
}

#[derive(Debug)]
pub(crate) struct FileState {
    pub(crate) buffer: Option<WriteBuffer>,
    /// Time of the last write, which becomes the committed mtime.
    pub(crate) written_at: Timestamp,
    /// The last intent-log record of the buffer's writes, if any: its commit records it as
    /// the node's floor.
    pub(crate) logged: Option<u64>,
    /// Whether the content the buffer started from is durable, so that a record over it can
    /// be replayed after a crash.
    pub(crate) base_durable: bool,
    /// A reader forced a commit that was no version (`OpenFiles::peek`): the bytes it added,
    /// owed to the next commit that is one.
    pub(crate) owed: Option<u64>,
    /// When the writes of the version to come began (the first buffer since the last
    /// version): a closed file's commit waits at most `commit_delay` from it.
    pub(crate) since: Option<std::time::Instant>,
}

/// A handle on an open vault file.
#[derive(Debug)]
pub(crate) struct FileHandle {
    pub(crate) ino: u64,
    pub(crate) node: Arc<OpenNode>,
    pub(crate) append: bool,
    /// Opened by `execve(2)` to run the file.
    pub(crate) exec: bool,
    /// When attention recorded the open, for the dwell at release.
    pub(crate) opened_at: Option<Timestamp>,
}

#[derive(Debug)]
pub(crate) struct OpenFiles {
    vault: Arc<Vault>,
    map: Mutex<HashMap<u64, Arc<OpenNode>>>,
    commits: AtomicU64,
    /// Unreferenced content past which everything unreferenced is collected at once
    /// (`collect_backlog`); `u64::MAX`, never.
    backlog: AtomicU64,
    /// Held while a collection for the backlog runs: one at a time.
    collecting: Mutex<()>,
    /// `Vault::history_added` when history was last held to its budget.
    history_mark: AtomicU64,
    /// When a backlog collection last freed less than an eighth of the content it took.
    sparse_since: Mutex<Option<std::time::Instant>>,
    /// Whether a `close` commits before it returns, so that it can report a failure: while
    /// space is short (`check_space`). Otherwise files are opened with `FOPEN_NOFLUSH`: the
    /// kernel sends no FLUSH at `close`, and the commit happens at the RELEASE it sends
    /// after the last close without waiting for the answer.
    closes_wait: AtomicBool,
    /// Where `fsync` makes a buffer's writes durable without committing them.
    log: IntentLog,
    /// Held while the log drains.
    draining: Mutex<()>,
    /// How long a closed file's writes may wait for their commit (`defers`); `None`: a close
    /// commits at once. The mount sets it, and its background thread commits what is due.
    commit_delay: Mutex<Option<std::time::Duration>>,
}

/// Files in the table (open, or closed with a commit waiting) past which a close commits at
/// once: at most this many closed files wait.
const DEFERRED_MAX: usize = 64;
/// Written bytes a closed file may hold in memory while its commit waits: with
/// `DEFERRED_MAX`, waiting commits hold at most 64 MiB.
const DEFERRED_MEMORY: u64 = 1 << 20;

/// Free space on the data dir's filesystem under which `close` commits before it returns.
const CLOSE_ROOM: u64 = 64 << 20;
/// How long after an operation found the disk full `close` keeps committing before it returns.
const FULL_MEMORY: std::time::Duration = std::time::Duration::from_secs(10);

/// How long after a sparse collection (`OpenFiles::sparse_since`) the next waits.
const SPARSE_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

impl OpenFiles {
    /// The table of `vault`, with its intent log opened and replayed: whatever a `fsync`
    /// logged before a crash is committed, durably, before this returns.
    pub(crate) fn open(vault: Arc<Vault>) -> FsResult<Self> {
        let (log, records) = IntentLog::open(vault.dir(), vault.faults())?;
        log.raise_next_seq(vault.log_next()?);
        if !records.is_empty() {
            replay(&vault, records)?;
            vault.set_log_next(log.next_seq(), Commit::CrashConsistent)?;
            with_room(&vault, || Ok(vault.sync()?))?;
        }
        // Zeros for records to overwrite, but never much of a small disk.
        let prefill = vault.free_space().map_or(0, |free| (free / 64).min(PREFILL_MAX));
        log.trim_all(prefill)?;
        Ok(OpenFiles {
            vault,
            map: Mutex::new(HashMap::new()),
            commits: AtomicU64::new(0),
            backlog: AtomicU64::new(u64::MAX),
            collecting: Mutex::new(()),
            history_mark: AtomicU64::new(0),
            sparse_since: Mutex::new(None),
            closes_wait: AtomicBool::new(true),
            log,
            draining: Mutex::new(()),
            commit_delay: Mutex::new(None),
        })
    }

    /// Lets a closed file's commit wait up to `delay` (see `defers`); `None` turns that off.
    pub(crate) fn set_commit_delay(&self, delay: Option<std::time::Duration>) {
        *lock(&self.commit_delay) = delay;
    }

    /// Whether the release of a handle on `node` may leave its writes uncommitted for now:
    /// with a commit delay set, room on the disk, few files waiting so, and a buffer small
    /// enough to hold in memory. A reopen before the commit writes on into the same buffer,
    /// so the edits of both make one version; `commit_due` commits the rest.
    pub(crate) fn defers(&self, node: &OpenNode) -> bool {
        lock(&self.commit_delay).is_some() && !self.closes_wait() && self.len() <= DEFERRED_MAX && {
            let on = lock(&node.state);
            match &on.buffer {
                Some(b) => b.bytes_in_memory() <= DEFERRED_MEMORY,
                // A reader committed the writes: the version they owe can wait too.
                None => on.owed.is_some(),
            }
        }
    }

    /// Files with no handle left whose commit is due: writes that began `commit_delay` ago,
    /// or none (a version took them, and the entry waits to be dropped).
    pub(crate) fn due(&self) -> Vec<(u64, Arc<OpenNode>)> {
        let delay = lock(&self.commit_delay).unwrap_or_default();
        self.all()
            .into_iter()
            .filter(|(_, n)| {
                n.handles.load(Ordering::Acquire) == 0 && {
                    let on = lock(&n.state);
                    on.since.is_none_or(|t| t.elapsed() >= delay)
                }
            })
            .collect()
    }

    /// Whether a `close` should commit before it returns (see `closes_wait`).
    pub(crate) fn closes_wait(&self) -> bool {
        self.closes_wait.load(Ordering::Acquire)
    }

    /// Looks at the free space (the mount's background thread, on every tick): short under
    /// `CLOSE_ROOM`, or within `FULL_MEMORY` of an operation that found the disk full.
    pub(crate) fn check_space(&self) {
        let short = self.vault.found_full_within(FULL_MEMORY)
            || self.vault.free_space().map_or(true, |free| free < CLOSE_ROOM);
        self.closes_wait.store(short, Ordering::Release);
    }

    pub(crate) fn set_backlog(&self, limit: u64) {
        self.backlog.store(limit, Ordering::Release);
    }

    /// Collects every unreferenced leaf (`Vault::make_room`) if they hold more content than
    /// the backlog times `factor`; waits for a collection already running. Returns the
    /// bytes freed.
    ///
    /// History is held to its budget the same way: once the versions committed since it was
    /// last (`Vault::history_added`) hold more than the backlog, or free space is under the
    /// floor (`below_floor`, asked by the background thread), it gives way (`Vault::give_way`),
    /// and what it gave up is collected at once.
    pub(crate) fn collect_backlog(&self, factor: u64, below_floor: bool) -> FsResult<u64> {
        let limit = self.backlog.load(Ordering::Acquire).saturating_mul(factor);
        let grown =
            self.vault.history_added().saturating_sub(self.history_mark.load(Ordering::Acquire))
                > limit;
        // The background thread (factor 1) holds history to its budget; a writer that
        // outruns it by twice the backlog does so itself, so history never passes its budget
        // by more than that.
        if below_floor || grown {
            let _one = lock(&self.collecting);
            let thinned = self.vault.give_way(Timestamp::now())?;
            self.history_mark.store(self.vault.history_added(), Ordering::Release);
            if thinned.versions > 0 {
                return Ok(self.vault.make_room()?);
            }
        }
        if self.vault.unreferenced_bytes() <= limit {
            return Ok(0);
        }
        // The count is of content, not of disk: old versions of a large file share most of
        // their chunks, and collecting them frees a little of what they count. After such a
        // collection, commits leave the next to the background thread, which runs one at
        // most every `SPARSE_PAUSE` (a full disk still makes room at once, on its own path).
        let sparse_since = *lock(&self.sparse_since);
        if sparse_since.is_some_and(|t| factor > 1 || t.elapsed() < SPARSE_PAUSE) {
            return Ok(0);
        }
        let _one = lock(&self.collecting);
        let unreferenced = self.vault.unreferenced_bytes();
        if unreferenced <= limit {
            // The collection this one waited for took them.
            return Ok(0);
        }
        let freed = self.vault.make_room()?;
        *lock(&self.sparse_since) = (freed < unreferenced / 8).then(std::time::Instant::now);
        Ok(freed)
    }

    /// Files with open handles or uncommitted writes.
    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub(crate) fn contains(&self, ino: u64) -> bool {
        lock(&self.map).contains_key(&ino)
    }

    pub(crate) fn get(&self, ino: u64) -> Option<Arc<OpenNode>> {
        lock(&self.map).get(&ino).cloned()
    }

    /// Every entry, for a commit of all of them.
    pub(crate) fn all(&self) -> Vec<(u64, Arc<OpenNode>)> {
        lock(&self.map).iter().map(|(k, v)| (*k, v.clone())).collect()
    }

    /// Commits of file content so far.
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    /// The `OpenNode` of `ino`, created if needed; `handle` counts a new handle.
    pub(crate) fn acquire(&self, ino: u64, handle: bool) -> Arc<OpenNode> {
        let mut map = lock(&self.map);
        let node = map
            .entry(ino)
            .or_insert_with(|| {
                Arc::new(OpenNode {
                    handles: AtomicU32::new(0),
                    executing: AtomicU32::new(0),
                    state: Mutex::new(FileState {
                        buffer: None,
                        written_at: Timestamp::EPOCH,
                        logged: None,
                        base_durable: false,
                        owed: None,
                        since: None,
                    }),
                })
            })
            .clone();
        if handle {
            node.handles.fetch_add(1, Ordering::AcqRel);
        }
        node
    }

    /// Undoes `acquire`: drops the entry once no handle, no buffer and no owed version remain,
    /// and returns whether it did. The file's lock is taken without the map lock; the handle
    /// count is checked again under the map lock, where `acquire` changes it.
    pub(crate) fn release(&self, ino: u64, node: &Arc<OpenNode>, handle: bool) -> bool {
        if handle {
            node.handles.fetch_sub(1, Ordering::AcqRel);
        }
        if node.handles.load(Ordering::Acquire) != 0 || {
            let on = lock(&node.state);
            on.buffer.is_some() || on.owed.is_some()
        } {
            return false;
        }
        let mut map = lock(&self.map);
        let idle = node.handles.load(Ordering::Acquire) == 0
            && map.get(&ino).is_some_and(|current| Arc::ptr_eq(current, node));
        if idle {
            map.remove(&ino);
        }
        idle
    }

    /// The file's write buffer, started from its committed content if it has none.
    pub(crate) fn buffer_for<'a>(
        &self,
        on: &'a mut FileState,
        ino: u64,
    ) -> FsResult<&'a mut WriteBuffer> {
        if on.buffer.is_none() {
            let node = self.vault.node(NodeId(ino))?;
            on.buffer = Some(WriteBuffer::new(&self.vault, node.content, node.size));
            // Read after the node: if every change so far is durable (in the store, or in
            // the log as redo records), so is the content read.
            on.base_durable = self.vault.is_durable();
            on.since.get_or_insert_with(std::time::Instant::now);
        }
        Ok(on.buffer.as_mut().expect("just set"))
    }

    /// Commits a file's pending writes as a new leaf. A commit that fails drops the buffer,
    /// and the file keeps its committed content, except for what `fsync`s put in the intent
    /// log: that is read back from the log into a new buffer (`rebuild`).
    pub(crate) fn commit_locked(
        &self,
        ino: u64,
        on: &mut FileState,
        commit: Commit,
    ) -> FsResult<()> {
        self.commit_saving(ino, on, commit, true)
    }

    /// Commits a file's pending writes because a reader needs them in the store (the id of
    /// the content, a status, holes): no version of its own (see `commit_buffer`).
    pub(crate) fn peek_locked(&self, ino: u64, on: &mut FileState) -> FsResult<()> {
        self.commit_saving(ino, on, Commit::CrashConsistent, false)
    }

    fn commit_saving(
        &self,
        ino: u64,
        on: &mut FileState,
        commit: Commit,
        version: bool,
    ) -> FsResult<()> {
        let logged = on.logged;
        let result = self.commit_buffer(ino, on, commit, version);
        if version && result.is_ok() {
            on.since = None;
        }
        if result.is_err()
            && let Some(seq) = logged
            && on.buffer.is_none()
        {
            match self.rebuild(ino) {
                Ok(Some(buffer)) => {
                    on.buffer = Some(buffer);
                    on.logged = Some(seq);
                    on.base_durable = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(ino, error = %e, "reading fsync'd writes back from the intent log failed; the next mount replays them");
                }
            }
        }
        result
    }

    /// The buffer `fsync`s logged for `ino` since its last commit, over its committed content.
    fn rebuild(&self, ino: u64) -> FsResult<Option<WriteBuffer>> {
        let records = self.log.records_of(ino)?;
        let node = self.vault.node(NodeId(ino))?;
        Ok(apply_records(&self.vault, &node, &records)?.map(|(buffer, _)| buffer))
    }

    /// Commits the buffer, if any; a `version` for history unless a reader forced the
    /// commit (`peek`), in which case the next commit that is one owes it (`FileState::owed`).
    fn commit_buffer(
        &self,
        ino: u64,
        on: &mut FileState,
        commit: Commit,
        version: bool,
    ) -> FsResult<()> {
        // Appends that find the disk full make room and try again inside the store; a
        // failure here drops the buffer, and the file keeps its committed content.
        let staged = match on.buffer.take() {
            Some(buffer) => buffer.stage(&self.vault)?,
            None => None,
        };
        let Some(staged) = staged else {
            // Nothing new: a save after a reader's commit still makes that content a version.
            if version && let Some(added) = on.owed.take() {
                let (id, at) = (NodeId(ino), on.written_at);
                let cc = Commit::CrashConsistent;
                with_room(&self.vault, || {
                    Ok(self.vault.record_owed_version(id, added, at, cc)?)
                })?;
            }
            if commit == Commit::Durable {
                self.sync()?;
            }
            return Ok(());
        };
        // The operation first (it takes effect whole or not at all, so it can be retried),
        // then, for `Durable`, the flush: what `set_content` with `Durable` does, in two
        // steps that can each make room and try again.
        let at = on.written_at;
        let how = SetContent {
            log_floor: on.logged.take(),
            version,
            owed: if version { on.owed.take() } else { None },
        };
        let (_, added) = with_room(&self.vault, || {
            Ok(self.vault.set_content_with(
                NodeId(ino),
                &staged,
                at,
                Commit::CrashConsistent,
                how,
            )?)
        })?;
        if !version {
            on.owed = Some(on.owed.unwrap_or(0) + added);
        }
        self.commits.fetch_add(1, Ordering::Release);
        // The old content is unreferenced now. The mount's background thread collects once
        // the backlog is passed; a writer that outruns it by twice the backlog collects
        // itself, so the unreferenced content never grows without bound.
        if let Err(e) = self.collect_backlog(2, false) {
            tracing::warn!(error = %e, "collecting the unreferenced backlog failed");
        }
        if commit == Commit::Durable {
            self.sync()?;
        }
        Ok(())
    }

    /// `fsync` of `ino` (`fdatasync` with `datasync`): when this returns, its writes survive
    /// a crash. A buffer logs what changed since its last record (`IntentLog`), with one
    /// `fdatasync` shared by every `fsync` waiting at the time. A record is replayed over the
    /// content the buffer is over, so that content must be durable, and a `fsync` that is
    /// not `datasync` wants the file's other attributes durable too: both are the store's,
    /// and what the store holds that is not durable yet (this file's creation, other changes)
    /// goes into the log as well, as a redo record durable with the same `fdatasync`
    /// (`log_with_store`); if the store declines one, the store is synced first. A log that
    /// refuses makes this commit durably instead.
    pub(crate) fn fsync(&self, ino: u64, open: &OpenNode, datasync: bool) -> FsResult<()> {
        let mut on = lock(&open.state);
        if let Some(buffer) = &on.buffer
            && !self.closes_wait()
            && self.log.has_room(buffer.unlogged_cost())
        {
            if (!on.base_durable || !datasync) && !self.vault.is_durable() {
                match self.log_with_store(ino, &mut on) {
                    Ok(true) => return Ok(()),
                    Ok(false) => self.sync()?,
                    Err(e) => {
                        tracing::warn!(ino, error = %e, "intent log: logging the store failed; committing");
                        return self.commit_locked(ino, &mut on, Commit::Durable);
                    }
                }
            }
            on.base_durable = true;
            match self.log_locked(ino, &mut on) {
                Ok(ticket) => {
                    drop(on);
                    match self.log.sync(ticket) {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            tracing::warn!(ino, error = %e, "intent log flush failed; committing");
                            on = lock(&open.state);
                        }
                    }
                }
                Err(e) => {
                    // Still locked: the commit below takes the whole buffer.
                    tracing::warn!(ino, error = %e, "intent log append failed; committing");
                }
            }
        }
        self.commit_locked(ino, &mut on, Commit::Durable)
    }

    /// Appends a redo record of the store's changes that are not durable
    /// (`Vault::sync_through_log`), then the buffer's changes since its last record, and makes
    /// both durable. False when the store declines a redo record now: nothing was logged.
    fn log_with_store(&self, ino: u64, on: &mut FileState) -> FsResult<bool> {
        let mut refused = None;
        let logged = self.vault.sync_through_log(|store| {
            let store = store.map(|r| self.log.append_frame(r)).transpose()?;
            let writes = self.log_locked(ino, on).map_err(|e| {
                let errno = e.errno;
                refused = Some(e);
                io::Error::from_raw_os_error(errno)
            })?;
            // (A drain may have made the other file active in between.)
            if let Some(store) = store {
                self.log.sync(store)?;
            }
            self.log.sync(writes)
        });
        if let Some(e) = refused {
            return Err(e);
        }
        if logged? {
            on.base_durable = true;
            return Ok(true);
        }
        Ok(false)
    }

    /// Appends the buffer's changes since its last record to the log (not yet durable).
    fn log_locked(&self, ino: u64, on: &mut FileState) -> FsResult<crate::intent_log::Ticket> {
        let buffer = on.buffer.as_mut().ok_or_else(|| FsError::errno(libc::EIO))?;
        let changes = buffer.take_unlogged(&self.vault)?;
        let mut record = Record {
            seq: 0,
            node: ino,
            base: changes.base,
            written_at: on.written_at,
            cut: changes.cut,
            size: changes.size,
            ranges: changes.ranges,
        };
        let ticket = self.log.append(&mut record)?;
        on.logged = Some(record.seq);
        Ok(ticket)
    }

    /// Commits, in one batch made durable once, every file the intent log names, then trims
    /// the log: when the log is due (`IntentLog::due`), or always with `force`.
    pub(crate) fn drain_log(&self, force: bool) -> FsResult<()> {
        if !force && !self.log.due() {
            return Ok(());
        }
        // One at a time: a drain must not empty a file another has made active again since.
        let _one = lock(&self.draining);
        let Some(rotation) = self.log.rotate() else { return Ok(()) };
        for ino in rotation.nodes {
            if let Some(open) = self.get(ino) {
                let mut on = lock(&open.state);
                if on.logged.is_some() {
                    self.commit_locked(ino, &mut on, Commit::CrashConsistent)?;
                }
            }
        }
        self.vault.set_log_next(self.log.next_seq(), Commit::CrashConsistent)?;
        self.sync()?;
        self.log.trim(rotation.file)?;
        Ok(())
    }

    /// Makes every change to the store so far durable for `fsyncdir`: through a redo record
    /// in the intent log if the store makes one (`Vault::sync_through_log`), else by `sync`.
    pub(crate) fn sync_store(&self) -> FsResult<()> {
        if self.vault.is_durable() {
            return Ok(());
        }
        if self.closes_wait() {
            return self.sync();
        }
        let logged = self.vault.sync_through_log(|store| match store {
            Some(r) => self.log.sync(self.log.append_frame(r)?),
            None => Ok(()),
        });
        match logged {
            Ok(true) => Ok(()),
            Ok(false) => self.sync(),
            Err(e) => {
                tracing::warn!(error = %e, "intent log: logging the store failed; syncing it");
                self.sync()
            }
        }
    }

    /// Makes every commit so far durable; a full disk makes room and tries once more (the
    /// rows a failed flush had stay pending for the next).
    pub(crate) fn sync(&self) -> FsResult<()> {
        with_room(&self.vault, || Ok(self.vault.sync()?))
    }

    /// Commits every file's pending writes, open or not: what reads the store rather than a
    /// file (`.indra/`, the control socket) asks first, since a `close` commits only at the
    /// kernel's RELEASE, which can still be on its way.
    pub(crate) fn commit_pending(&self) -> FsResult<()> {
        for (ino, open) in self.all() {
            self.peek_locked(ino, &mut lock(&open.state))?;
        }
        Ok(())
    }

    /// Commits the pending writes of `ino`, if it has any, for a reader (`peek_locked`).
    pub(crate) fn peek(&self, ino: u64) -> FsResult<()> {
        match self.get(ino) {
            Some(open) => self.peek_locked(ino, &mut lock(&open.state)),
            None => Ok(()),
        }
    }
}

/// Commits, durably, what the records hold beyond each node's durable floor
/// (`intent_log`'s module doc).
fn replay(vault: &Vault, records: Vec<Record>) -> FsResult<()> {
    let mut by_node = std::collections::BTreeMap::<u64, Vec<Record>>::new();
    for r in records {
        by_node.entry(r.node).or_default().push(r);
    }
    let mut applied = 0usize;
    for (ino, records) in by_node {
        let node = match vault.node(NodeId(ino)) {
            Ok(n) => n,
            Err(indras_artifacts::Error::NoSuchNode(_)) => {
                tracing::warn!(ino, "intent log: the node is gone; its records are skipped");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let Some((buffer, last)) = apply_records(vault, &node, &records)? else { continue };
        if let Some(staged) = buffer.stage(vault)? {
            with_room(vault, || {
                let how = SetContent { log_floor: Some(last.seq), ..SetContent::default() };
                Ok(vault.set_content_with(
                    NodeId(ino),
                    &staged,
                    last.written_at,
                    Commit::CrashConsistent,
                    how,
                )?)
            })?;
            applied += 1;
        }
    }
    tracing::info!(files = applied, "intent log replayed");
    Ok(())
}

/// A buffer over `node`'s committed content with `records` above its durable floor applied
/// in order, and the last record applied; `None` if none applies. A record applies only over
/// the content it was logged over, of a file; any other is skipped with a warning.
fn apply_records<'r>(
    vault: &Vault,
    node: &indras_artifacts::Node,
    records: &'r [Record],
) -> FsResult<Option<(WriteBuffer, &'r Record)>> {
    let ino = node.id.0;
    let floor = vault.log_floor(node.id)?;
    let records: Vec<&Record> = records.iter().filter(|r| r.seq > floor).collect();
    if node.kind != NodeKind::File {
        if !records.is_empty() {
            tracing::warn!(ino, "intent log: the node is no file; its records are skipped");
        }
        return Ok(None);
    }
    let committed = node.content.filter(|_| node.size > 0);
    let mut buffer = WriteBuffer::new(vault, node.content, node.size);
    let mut last = None;
    for r in records {
        if r.base != committed {
            tracing::warn!(ino, seq = r.seq, "intent log: a record over other content; skipped");
            continue;
        }
        if let Some(cut) = r.cut {
            buffer.truncate(vault, cut)?;
        }
        for (at, bytes) in &r.ranges {
            buffer.write(vault.tmp_dir(), *at, bytes)?;
        }
        buffer.truncate(vault, r.size)?;
        last = Some(r);
    }
    Ok(last.map(|r| (buffer, r)))
}
