//! The `Vault`: the store's one handle. It owns the metadata database, the payloads (chunk
//! packs and caches) and the data-dir lock; opens and closes the store; runs operations and
//! flushes; and reports counts and figures. The operations themselves are in the sibling
//! modules (`namespace`, `artifacts`, `sharing`, `attention`, `gc`).
//!
//! # Transactions and locking
//! - Every mutation is one operation on the write-back layers of `store::meta`: all or nothing,
//!   visible to the next request at once, and written to redb in batches by `flush` (at each
//!   `sync`, and when much is pending). Operations are serialised, so mutations are
//!   linearisable; reads run concurrently with each other and with the one operation.
//! - Payload bytes are written *outside* any transaction (by `PayloadWriter`, from any number
//!   of threads at once) and only named inside one. The chunk store's `staged` set keeps GC
//!   from dropping a chunk between the two.
//! - Lock order: `ChunkStore::staged` (held by GC and repair, and briefly by each append),
//!   then the locks of `store::meta` (flush, operation, layers), then redb's writer lock, then the
//!   chunk store's other locks (active packs, unsynced packs, open files, cache, abandoned
//!   ranges). Nothing that holds the operation lock takes `staged`.
//!
//! # Commit strengths
//! `Commit::CrashConsistent` records the operation without fsync: after a crash the store
//! holds the state of some earlier flush, whole. `Commit::Durable` then flushes: it fsyncs
//! every chunk written so far and commits with fsync, and when it returns, that operation and
//! all before it survive power loss.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::{ReadTransaction, ReadableDatabase};

use crate::error::{Error, Result};
use crate::payload::chunks::ChunkStore;
use crate::payload::read::{LeafReader, Payloads};
use crate::payload::writer::{PayloadWriter, StagedLeaf};
use crate::store::db::open_db;
use crate::store::faults::{self, FaultInjector, Faults, IoStep};
use crate::store::frame;
use crate::store::ids::NodeIds;
use crate::store::meta::{Meta, Strength, W};
use crate::store::schema::{
    LeafRecord, META, META_NEXT_NODE, META_OPEN, PlayerRecord, bytes_u64, decode,
};
use crate::types::{Hash, Node, NodeId, NodeKind, PlayerId, SecretKey};
use crate::vault::migrate::{Opened, init_meta};

/// How hard a commit presses its changes to disk.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Commit {
    /// Atomic but not fsync'd: used by close. After a crash the change is whole or absent.
    CrashConsistent,
    /// Atomic and fsync'd, with every chunk it names: used by fsync.
    Durable,
}

impl Commit {
    fn strength(self) -> Strength {
        match self {
            Commit::CrashConsistent => Strength::Consistent,
            Commit::Durable => Strength::Durable,
        }
    }
}

/// Settings for opening a vault.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A fault injector for tests: called before each I/O step.
    pub faults: Option<Arc<dyn FaultInjector>>,
    /// The database page cache, in bytes (redb's default when `None`).
    pub cache_bytes: Option<usize>,
    /// A pack file takes no more appends once it holds this many bytes (1 GiB when `None`).
    pub pack_bytes: Option<u64>,
}

/// Numbers of entries in the main tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub nodes: u64,
    pub trees: u64,
    pub leaves: u64,
    pub chunks: u64,
    pub events: u64,
}

/// Figures about the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub nodes: u64,
    pub trees: u64,
    pub files: u64,
    pub leaves: u64,
    pub unreferenced_leaves: u64,
    pub inline_bytes: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
    /// Bytes the pack files take on disk: the chunks, and dead ranges not yet punched.
    pub pack_bytes: u64,
    /// Total size of all leaves (what the content would take without dedup).
    pub logical_bytes: u64,
    pub db_bytes: u64,
}

/// The durable content-addressed store. `Send + Sync`: share it with `Arc`.
pub struct Vault {
    pub(crate) dir: PathBuf,
    pub(crate) meta: Arc<Meta>,
    pub(crate) payloads: Payloads,
    pub(crate) player: PlayerRecord,
    /// The player's secret key (`vault::identity`); `player.id` is its public key.
    key: SecretKey,
    pub(crate) faults: Faults,
    /// Node ids reserved in `meta_v1`, handed out by write transactions.
    ids: Mutex<NodeIds>,
    closed: AtomicBool,
    /// Operations that took effect since the vault was opened (`write_count`).
    writes: std::sync::atomic::AtomicU64,
    recovered: bool,
    /// Retention, and what history last gave way to.
    pub(crate) history: crate::vault::retention::HistoryState,
    /// Snapshots' manifests in memory, and the leaves they name.
    pub(crate) snapshots: crate::vault::manifest::SnapshotState,
    /// What changed since the last `take_changes`, once `watch_changes` was called.
    changes: Mutex<Option<Changes>>,
    /// The content bytes of the leaves in `unreferenced_v1` (`unreferenced_bytes`).
    pub(crate) unreferenced: std::sync::atomic::AtomicI64,
    /// The last `make_room` a full disk asked for: when it ended and what it freed
    /// (`retry_when_full`). Held while one runs, so one runs at a time.
    pub(crate) room: Mutex<Option<(std::time::Instant, u64)>>,
    _lock: File,
}

/// Folders whose entries changed, and nodes whose content or attributes changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub dirs: std::collections::BTreeSet<NodeId>,
    pub nodes: std::collections::BTreeSet<NodeId>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .field("player", &self.player.name)
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Opens the vault in `dir`, creating it for `player` if it is new.
    ///
    /// Fails with `Locked` if another process has it open, and with `WrongPlayer` if it
    /// belongs to another player.
    pub fn open(dir: &Path, player: &str, opts: &Options) -> Result<Vault> {
        Self::open_inner(dir, Some(player), opts)
    }

    /// Opens an existing vault whatever its player (for admin commands).
    pub fn open_existing(dir: &Path, opts: &Options) -> Result<Vault> {
        if !dir.join("meta.redb").exists() {
            return Err(Error::io(dir.join("meta.redb"), io::ErrorKind::NotFound.into()));
        }
        Self::open_inner(dir, None, opts)
    }

    fn open_inner(dir: &Path, player: Option<&str>, opts: &Options) -> Result<Vault> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked(dir.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        let faults = opts.faults.clone();
        let db_path = dir.join("meta.redb");
        let cache_bytes = opts.cache_bytes;
        let reopen_path = db_path.clone();
        let meta = Arc::new(Meta::new(
            open_db(&db_path, &faults, cache_bytes)?,
            Box::new({
                let faults = faults.clone();
                move || open_db(&reopen_path, &faults, cache_bytes)
            }),
        ));
        replay_redo(&meta, dir)?;
        let chunks = Arc::new(
            ChunkStore::open(dir, meta.clone(), faults.clone(), opts.pack_bytes)
                .map_err(|e| Error::io(dir, e))?,
        );
        let Opened { player, key, was_open } =
            init_meta(&*meta.db()?, &chunks, dir, player, meta.redo_next())?;
        // Chunk files of format 2, left behind if a migration committed but the process
        // stopped before it removed them.
        let old_chunks = dir.join("chunks");
        if old_chunks.is_dir() {
            fs::remove_dir_all(&old_chunks).map_err(|e| Error::io(&old_chunks, e))?;
        }
        let next_node = {
            let txn = meta.db()?.begin_read()?;
            match txn.open_table(META)?.get(META_NEXT_NODE)? {
                Some(v) => bytes_u64("next_node", v.value())?,
                None => NodeId::FIRST_DYNAMIC,
            }
        };
        let vault = Vault {
            dir: dir.to_path_buf(),
            payloads: Payloads::new(meta.clone(), chunks),
            meta,
            player,
            key,
            faults,
            ids: Mutex::new(NodeIds { next: next_node, limit: next_node, pending: None }),
            writes: std::sync::atomic::AtomicU64::new(0),
            closed: AtomicBool::new(false),
            recovered: was_open,
            history: crate::vault::retention::HistoryState::default(),
            snapshots: crate::vault::manifest::SnapshotState::default(),
            changes: Mutex::new(None),
            unreferenced: std::sync::atomic::AtomicI64::new(0),
            room: Mutex::new(None),
            _lock: lock,
        };
        if was_open {
            tracing::warn!(dir = %dir.display(), "store was not closed cleanly; recovering");
            vault.sweep_packs()?;
        }
        vault.reap_orphans()?;
        vault.count_unreferenced()?;
        vault.count_history()?;
        Ok(vault)
    }

    /// Starts noting what operations change (`take_changes`), for those who follow the
    /// vault: peers that were granted part of it.
    pub fn watch_changes(&self) {
        let mut c = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        c.get_or_insert_with(Changes::default);
    }

    /// What changed since the last call (nothing, unless `watch_changes` was called).
    pub fn take_changes(&self) -> Changes {
        let mut c = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        c.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Notes a change for `take_changes`: folders whose entries changed, and nodes (or
    /// mirror entries) whose content or attributes did.
    pub fn changed(&self, dirs: &[NodeId], nodes: &[NodeId]) {
        let mut c = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = c.as_mut() {
            c.dirs.extend(dirs);
            c.nodes.extend(nodes);
        }
    }

    /// Whether this open found the store not closed cleanly (and recovered it).
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The fault injector the store was opened with, for files kept beside it (the mount's
    /// intent log) to consult too.
    pub fn faults(&self) -> Option<Arc<dyn FaultInjector>> {
        self.faults.clone()
    }

    pub fn player(&self) -> PlayerId {
        self.player.id
    }

    /// The player's secret key, for the network layer to authenticate as this player. Never
    /// print or log it.
    pub fn secret_key(&self) -> &SecretKey {
        &self.key
    }

    pub fn player_name(&self) -> &str {
        &self.player.name
    }

    /// A directory on the store's filesystem for spill files; emptied at every open.
    pub fn tmp_dir(&self) -> &Path {
        self.payloads.tmp_dir()
    }

    // ----- payloads -----

    /// A streaming writer for a new payload. Commit the result with `set_content`,
    /// `create` or `place_staged`.
    pub fn payload_writer(&self) -> PayloadWriter {
        self.payloads.payload_writer()
    }

    /// Stores a payload held in memory.
    pub fn stage(&self, bytes: &[u8]) -> Result<StagedLeaf> {
        self.payloads.stage(bytes)
    }

    /// Stores a payload of `size` bytes that `read(offset, buf)` provides (filling `buf`
    /// exactly), streamed in 1 MiB pieces.
    pub fn stage_with(
        &self,
        size: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> Result<StagedLeaf> {
        self.payloads.stage_with(size, read)
    }

    /// Stages an edit of the leaf `base` (see `Payloads::stage_edit`): new content of `size`
    /// bytes that equals `base` except in the `written` ranges and from `base_len` on.
    /// `read(offset, buf)` fills `buf` with new content. The result equals staging the whole
    /// new content through `payload_writer` (same id, same chunks).
    pub fn stage_edit(
        &self,
        base: &Hash,
        base_len: u64,
        written: &[(u64, u64)],
        size: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> Result<StagedLeaf> {
        self.payloads.stage_edit(base, base_len, written, size, read)
    }

    /// Size of a stored leaf.
    pub fn leaf_size(&self, leaf: &Hash) -> Result<u64> {
        self.payloads.leaf_size(leaf)
    }

    /// Reads up to `buf.len()` bytes of a leaf at `offset`; returns how many were read
    /// (fewer only at the end). Every byte comes from a verified chunk.
    pub fn read_at(&self, leaf: &Hash, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.payloads.read_at(leaf, offset, buf)
    }

    /// Where the next data (`data`) or hole at or after `offset` begins in a leaf
    /// (`lseek(SEEK_DATA / SEEK_HOLE)`); `None` past the end, or when no data follows.
    pub fn seek_data_or_hole(&self, leaf: &Hash, offset: u64, data: bool) -> Result<Option<u64>> {
        self.payloads.seek_data_or_hole(leaf, offset, data)
    }

    /// Up to `len` bytes of a leaf at `offset` (fewer only at the end), in a new buffer that
    /// is filled straight from the chunks, not zeroed first.
    pub fn read_vec(&self, leaf: &Hash, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.payloads.read_vec(leaf, offset, len)
    }

    /// A streaming reader over a leaf's content.
    pub fn leaf_reader(&self, leaf: &Hash) -> Result<LeafReader<'_>> {
        self.payloads.leaf_reader(leaf)
    }

    /// Reads a whole leaf into memory (for small payloads and tests).
    pub fn read_all(&self, leaf: &Hash) -> Result<Vec<u8>> {
        self.payloads.read_all(leaf)
    }

    /// What runs just before a commit: with `Durable`, every chunk written so far is made
    /// durable first, so that metadata never lands before the bytes it names.
    fn before_commit(&self, commit: Commit) -> Result<()> {
        if commit == Commit::Durable {
            self.payloads
                .chunks
                .sync_pending()
                .map_err(|e| Error::io(self.payloads.chunks.pack_dir(), e))?;
        }
        self.commit_fault()
    }

    /// The test fault injector's say at a commit point (an operation's, or a flush's).
    fn commit_fault(&self) -> Result<()> {
        faults::check(&self.faults, IoStep::Commit).map_err(|e| Error::io(&self.dir, e))
    }

    /// Runs `f` as one operation on the filesystem tables: all of it takes effect, at once,
    /// or none of it does. It lands in memory; with `Durable` it is flushed durably before
    /// this returns, otherwise at the next sync or `flush_pending` (or here, once far more is
    /// pending than `wants_flush` asks for).
    pub(crate) fn write_fs<R>(
        &self,
        commit: Commit,
        f: impl FnOnce(&mut W) -> Result<R>,
    ) -> Result<R> {
        let ((out, unref_bytes, history_bytes), full) = self.meta.op(
            Some(&self.ids),
            |w| {
                let out = f(w)?;
                self.commit_fault()?;
                Ok((out, w.unref_bytes, w.history_bytes))
            },
            // Operations are serialised, so this settles exactly this one's reservation.
            |ok| self.ids.lock().unwrap_or_else(PoisonError::into_inner).settle(ok),
        )?;
        self.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if unref_bytes != 0 {
            self.unreferenced.fetch_add(unref_bytes, std::sync::atomic::Ordering::AcqRel);
        }
        if history_bytes != 0 {
            self.history.added.fetch_add(history_bytes, std::sync::atomic::Ordering::AcqRel);
        }
        if commit == Commit::Durable {
            self.flush(Commit::Durable)?;
        } else if full && let Err(e) = self.flush(Commit::CrashConsistent) {
            // The operation has taken effect; its rows wait for the next flush.
            tracing::warn!(error = %e, "flushing pending metadata failed; will retry");
        }
        Ok(out)
    }

    /// How many operations on the filesystem tables have taken effect since the vault was
    /// opened: equal counts mean nothing in the store changed in between.
    pub fn write_count(&self) -> u64 {
        self.writes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether enough changes are pending in memory that `flush_pending` should run now,
    /// before the next periodic sync.
    pub fn wants_flush(&self) -> bool {
        self.meta.wants_flush()
    }

    /// Writes every pending change to the database, crash-consistently (not durably).
    pub fn flush_pending(&self) -> Result<()> {
        self.flush(Commit::CrashConsistent)
    }

    /// Writes every pending change to the database (durably, whatever `commit` says, once
    /// many rows wait for a durable commit: they are held in memory until one).
    fn flush(&self, commit: Commit) -> Result<()> {
        let commit = if self.meta.wants_durable() { Commit::Durable } else { commit };
        self.meta.flush(commit.strength(), || self.before_commit(commit))
    }

    /// Runs `f` on a read-only view of the filesystem tables, pending changes included.
    pub(crate) fn read_fs<R>(&self, f: impl FnOnce(&mut W) -> Result<R>) -> Result<R> {
        self.meta.read(f)
    }

    /// Runs `f` on a consistent view of `tables` as they are now, pending rows included,
    /// holding no lock while it runs (see `Meta::scan`): for reads that walk whole tables.
    pub(crate) fn scan<R>(
        &self,
        tables: &'static [&'static str],
        f: impl FnOnce(&mut W) -> Result<R>,
    ) -> Result<R> {
        self.meta.scan(tables, f)
    }

    /// For maintenance that commits anyway (GC, fsck): flushes every pending change, then
    /// returns a snapshot of the database itself, to read without the layers.
    pub(crate) fn flushed_snapshot(&self) -> Result<ReadTransaction> {
        if self.meta.pending() {
            self.flush(Commit::CrashConsistent)?;
        }
        Ok(self.meta.db()?.begin_read()?)
    }

    /// Makes every change so far durable. Cheap when nothing is pending.
    pub fn sync(&self) -> Result<()> {
        if self.meta.dirty() {
            self.flush(Commit::Durable)?;
        }
        Ok(())
    }

    /// Makes every change so far durable through the intent log, without a durable commit of
    /// the store, if it can: appends a redo record of the rows changed since the last one
    /// (see `Meta::redo`) with `append(Some(record))` (or calls `append(None)` if none
    /// changed), once the chunks they name are durable. `append` must append the record to
    /// the intent log, with whatever is to be durable with it, and make it durable before it
    /// returns; no flush of the store begins meanwhile.
    ///
    /// Returns false, without calling `append`, when no redo record can be made now (after
    /// a failed commit or append, until a durable flush succeeds; or too many rows changed):
    /// `sync` instead.
    pub fn sync_through_log(
        &self,
        append: impl FnOnce(Option<&[u8]>) -> io::Result<()>,
    ) -> Result<bool> {
        self.meta.redo(REDO_MAX, |taken| {
            let record = match taken {
                None => None,
                Some((tag, rows)) => {
                    // The rows may name chunks written since the last sync.
                    self.payloads
                        .chunks
                        .sync_pending()
                        .map_err(|e| Error::io(self.payloads.chunks.pack_dir(), e))?;
                    let mut body = tag.to_le_bytes().to_vec();
                    rows.encode(&mut body);
                    Some(frame::frame(frame::STORE_MAGIC, &body))
                }
            };
            append(record.as_deref()).map_err(|e| Error::io(self.dir.join(frame::LOG_FILES[0]), e))
        })
    }

    /// Whether every change so far survives a crash: durable in the store, or held by the
    /// redo records `sync_through_log` made.
    pub fn is_durable(&self) -> bool {
        !self.meta.dirty() || self.meta.redo_holds_all()
    }

    /// Closes the store cleanly: everything durable, the crash marker cleared.
    pub fn close(self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.reclaim_abandoned()?;
        self.write_fs(Commit::Durable, |w| {
            w.meta()?.remove(META_OPEN)?;
            Ok(())
        })
    }

    /// Entry counts of the main tables: O(their pending rows), each count O(1) in the database.
    pub fn counts(&self) -> Result<Counts> {
        self.scan(&["nodes", "trees", "leaves", "chunks", "events"], |r| {
            Ok(Counts {
                nodes: r.nodes()?.len()?,
                trees: r.trees()?.len()?,
                leaves: r.leaves()?.len()?,
                chunks: r.chunks()?.len()?,
                events: r.events()?.len()?,
            })
        })
    }

    /// How many nodes there are (what `statfs` reports as files in use): O(pending nodes).
    pub fn node_count(&self) -> Result<u64> {
        self.scan(&["nodes"], |r| Ok(r.nodes()?.len()?))
    }

    /// Figures about the whole store: walks the leaf, chunk and node tables.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = self.scan(&["nodes", "trees", "leaves", "unref", "chunks"], |r| {
            let mut s = Stats {
                nodes: r.nodes()?.len()?,
                trees: r.trees()?.len()?,
                leaves: r.leaves()?.len()?,
                unreferenced_leaves: r.unref()?.len()?,
                chunks: r.chunks()?.len()?,
                ..Stats::default()
            };
            for row in r.leaves()?.iter()? {
                let (_, v) = row?;
                let rec: LeafRecord = decode("leaf", v.value())?;
                s.logical_bytes += rec.size;
                if rec.inline {
                    s.inline_bytes += rec.size;
                }
            }
            for row in r.chunks()?.iter()? {
                let (_, v) = row?;
                s.chunk_bytes += u64::from(v.value().0);
            }
            for row in r.nodes()?.iter()? {
                let (_, v) = row?;
                if decode::<Node>("node", v.value())?.kind == NodeKind::File {
                    s.files += 1;
                }
            }
            Ok(s)
        })?;
        s.db_bytes = fs::metadata(self.dir.join("meta.redb")).map_or(0, |m| m.len());
        s.pack_bytes = self
            .payloads
            .chunks
            .disk_bytes()
            .map_err(|e| Error::io(self.payloads.chunks.pack_dir(), e))?;
        Ok(s)
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::error!(error = %e, "closing the store failed; it will recover at next open");
        }
    }
}

/// The most bytes of rows one redo record holds: past it, `sync_through_log` declines.
const REDO_MAX: usize = 4 << 20;

/// Replays the redo records in the intent log beside the store (`Meta::replay_redo`).
fn replay_redo(meta: &Meta, dir: &Path) -> Result<()> {
    let mut files = Vec::new();
    for name in frame::LOG_FILES {
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => files.push(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    let bodies = files.iter().flat_map(|bytes| {
        frame::frames(bytes).0.into_iter().filter(|f| f.magic == frame::STORE_MAGIC).map(|f| f.body)
    });
    let applied = meta.replay_redo(bodies)?;
    if applied > 0 {
        tracing::info!(records = applied, "replayed the store's redo records");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Commit, Options, Vault};
    use crate::error::Error;
    use crate::store::schema::{LeafRecord, decode, encode};
    use crate::types::{NewNode, NodeId, Timestamp};

    /// A leaf record whose size disagrees with its verified inline bytes is reported as a
    /// corrupt record, whichever way it is wrong, and never panics a reader.
    #[test]
    fn regression_inline_read_trusted_the_records_size() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path(), "alice", &Options::default()).unwrap();
        let content = vec![7u8; 100];
        let staged = vault.stage(&content).unwrap();
        let node = vault
            .create(
                NodeId::ROOT,
                b"f",
                &NewNode::file(0o644),
                Some(staged),
                Timestamp::now(),
                Commit::Durable,
            )
            .unwrap();
        let leaf = node.content.unwrap();
        assert_eq!(vault.read_all(&leaf).unwrap(), content);
        for size in [200, 10] {
            vault
                .write_fs(Commit::Durable, |w| {
                    let mut rec: LeafRecord =
                        decode("leaf", w.leaves()?.get(&leaf)?.unwrap().value())?;
                    rec.size = size;
                    w.leaves()?.insert(&leaf, encode(&rec).as_slice())?;
                    Ok(())
                })
                .unwrap();
            let mut buf = vec![0u8; 150];
            let got = vault.read_at(&leaf, 5, &mut buf);
            assert!(matches!(got, Err(Error::CorruptRecord("leaf", _))), "size {size}: {got:?}");
            assert!(matches!(vault.read_vec(&leaf, 0, 150), Err(Error::CorruptRecord(..))));
        }
    }
}
