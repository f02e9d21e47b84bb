//! Chunk files: content-defined chunks of large payloads, one file per chunk, named by
//! the chunk's BLAKE3 hash under `chunks/<first two hex digits>/<hex>`.
//!
//! Invariants:
//! - A chunk file only ever appears at its final name by `rename` from a temp file in the
//!   same directory, so a file at a final name is whole after a process crash (power loss is
//!   covered by `sync_pending` and the sweep at open after an unclean shutdown).
//! - Every chunk file named by a *durable* metadata commit was fsync'd, with its directory,
//!   before that commit: `Vault::write` calls `sync_pending` inside the write transaction.
//! - A chunk that a writer has staged (written or found, not yet committed) is never deleted:
//!   GC holds the `staged` lock from its decision until the file is gone.
//! - Every read is verified against the hash; a mismatch is an integrity error.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::types::{Hash, hex};

/// Payloads of at most this many bytes are stored inline in the database.
pub const INLINE_MAX: usize = 16 * 1024;
/// `FastCDC` (2020) minimum chunk size.
pub const CHUNK_MIN: usize = 16 * 1024;
/// `FastCDC` (2020) target average chunk size.
pub const CHUNK_AVG: usize = 64 * 1024;
/// `FastCDC` (2020) maximum chunk size.
pub const CHUNK_MAX: usize = 256 * 1024;

/// Above this many unsynced files, one `syncfs` is cheaper than a file-by-file fsync.
const SYNCFS_THRESHOLD: usize = 64;
/// Verified chunks kept in memory for reads that straddle or repeat.
const CACHE_ENTRIES: usize = 32;

/// A point in the write path where a test can inject an I/O failure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IoStep {
    CreateTemp,
    WriteTemp,
    Rename,
    SyncFile,
    SyncDir,
    /// The metadata database's own writes and syncs.
    DbWrite,
    DbSync,
    /// Just before a metadata transaction commits.
    Commit,
}

/// A seam for fault injection: called before each step; an error fails that step.
pub trait FaultInjector: Send + Sync + std::fmt::Debug {
    fn check(&self, step: IoStep) -> io::Result<()>;
}

pub(crate) type Faults = Option<Arc<dyn FaultInjector>>;

pub(crate) fn check(faults: &Faults, step: IoStep) -> io::Result<()> {
    match faults {
        Some(f) => f.check(step),
        None => Ok(()),
    }
}

/// Why a chunk could not be read.
#[derive(Debug)]
pub(crate) enum ChunkReadError {
    Missing,
    Corrupt,
    Io(PathBuf, io::Error),
}

#[derive(Default)]
struct Pending {
    files: Vec<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

pub(crate) struct ChunkStore {
    chunk_dir: PathBuf,
    tmp_dir: PathBuf,
    faults: Faults,
    /// Chunks a live writer has staged, with how many writers hold each.
    staged: Mutex<HashMap<Hash, u32>>,
    /// Chunk files renamed into place but not yet fsync'd.
    pending: Mutex<Pending>,
    cache: Mutex<VecDeque<(Hash, Arc<[u8]>)>>,
    tmp_seq: AtomicU64,
    /// Chunks of payloads that were staged and then dropped without a commit: their files
    /// may be referenced by nothing. `Vault::reclaim_abandoned` checks and removes them.
    abandoned: Mutex<Vec<Hash>>,
}

impl std::fmt::Debug for ChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStore").field("dir", &self.chunk_dir).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ChunkStore {
    /// Opens (creating if needed) the chunk and temp directories under `data_dir`, and
    /// empties `tmp/`: nothing in it can be live, since the caller holds the store lock.
    pub(crate) fn open(data_dir: &Path, faults: Faults) -> io::Result<Self> {
        let chunk_dir = data_dir.join("chunks");
        let tmp_dir = data_dir.join("tmp");
        fs::create_dir_all(&chunk_dir)?;
        fs::create_dir_all(&tmp_dir)?;
        for i in 0..=255u8 {
            let shard = chunk_dir.join(hex(&[i]));
            if !shard.is_dir() {
                fs::create_dir(&shard)?;
            }
        }
        for entry in fs::read_dir(&tmp_dir)? {
            let entry = entry?;
            let _ = fs::remove_file(entry.path());
        }
        sync_dir(&chunk_dir)?;
        sync_dir(data_dir)?;
        Ok(ChunkStore {
            chunk_dir,
            tmp_dir,
            faults,
            staged: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending::default()),
            cache: Mutex::new(VecDeque::new()),
            tmp_seq: AtomicU64::new(0),
            abandoned: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp_dir
    }

    pub(crate) fn chunk_dir(&self) -> &Path {
        &self.chunk_dir
    }

    pub(crate) fn path(&self, hash: &Hash) -> PathBuf {
        let h = hex(hash);
        self.chunk_dir.join(&h[..2]).join(h)
    }

    /// Stores a chunk unless an identical one is already on disk, and stages it so GC
    /// leaves it alone until `unstage`. The caller must `unstage` exactly once.
    pub(crate) fn put(&self, hash: &Hash, data: &[u8]) -> io::Result<()> {
        self.stage(hash);
        let result = self.put_file(hash, data);
        if result.is_err() {
            self.unstage(std::slice::from_ref(hash));
        }
        result
    }

    /// Protects `hash` from GC until it is unstaged: the first half of `put`, for writers
    /// that store the file later (on another thread).
    pub(crate) fn stage(&self, hash: &Hash) {
        *lock(&self.staged).entry(*hash).or_insert(0) += 1;
    }

    /// Writes a staged chunk's file (unless it is already there): the second half of `put`.
    pub(crate) fn put_file(&self, hash: &Hash, data: &[u8]) -> io::Result<()> {
        let path = self.path(hash);
        if let Ok(meta) = fs::metadata(&path)
            && meta.len() == data.len() as u64
        {
            return Ok(());
        }
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        // The temp file lives beside its final name: same directory, so the rename is atomic
        // and inodes spread over the shards instead of crowding one directory's block group.
        let tmp = path.with_extension(format!("{seq}.tmp"));
        let written = (|| {
            check(&self.faults, IoStep::CreateTemp)?;
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            check(&self.faults, IoStep::WriteTemp)?;
            f.write_all(data)?;
            check(&self.faults, IoStep::Rename)?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let mut pending = lock(&self.pending);
        if let Some(dir) = path.parent() {
            pending.dirs.insert(dir.to_path_buf());
        }
        pending.files.push(path);
        Ok(())
    }

    pub(crate) fn unstage(&self, hashes: &[Hash]) {
        let mut staged = lock(&self.staged);
        for h in hashes {
            if let Some(n) = staged.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    staged.remove(h);
                }
            }
        }
    }

    /// Unstages chunks whose payload will never be committed, and remembers them for
    /// `take_abandoned`.
    pub(crate) fn abandon(&self, hashes: &[Hash]) {
        self.unstage(hashes);
        if !hashes.is_empty() {
            lock(&self.abandoned).extend_from_slice(hashes);
        }
    }

    pub(crate) fn take_abandoned(&self) -> Vec<Hash> {
        std::mem::take(&mut *lock(&self.abandoned))
    }

    /// Holds the staging lock: while held, no writer can stage a chunk.
    pub(crate) fn staging_lock(&self) -> MutexGuard<'_, HashMap<Hash, u32>> {
        lock(&self.staged)
    }

    /// Makes every chunk file written so far durable: the files' data and their names.
    pub(crate) fn sync_pending(&self) -> io::Result<()> {
        let Pending { files, dirs } = std::mem::take(&mut *lock(&self.pending));
        if files.is_empty() && dirs.is_empty() {
            return Ok(());
        }
        let result = (|| {
            if files.len() > SYNCFS_THRESHOLD {
                check(&self.faults, IoStep::SyncFile)?;
                let dir = File::open(&self.chunk_dir)?;
                rustix::fs::syncfs(&dir)?;
                return Ok(());
            }
            for f in &files {
                check(&self.faults, IoStep::SyncFile)?;
                match File::open(f) {
                    Ok(file) => file.sync_all()?,
                    // Reclaimed since it was written (an abandoned payload): nothing to sync.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            for d in &dirs {
                check(&self.faults, IoStep::SyncDir)?;
                sync_dir(d)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let mut pending = lock(&self.pending);
            pending.files.extend(files);
            pending.dirs.extend(dirs);
        }
        result
    }

    /// Reads a chunk and verifies it against its hash and length.
    pub(crate) fn read(&self, hash: &Hash, len: u32) -> Result<Arc<[u8]>, ChunkReadError> {
        if let Some(hit) = lock(&self.cache).iter().find(|(h, _)| h == hash) {
            return Ok(hit.1.clone());
        }
        let data: Arc<[u8]> = self.read_verified(hash, len)?.into();
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_ENTRIES {
            cache.pop_front();
        }
        cache.push_back((*hash, data.clone()));
        Ok(data)
    }

    /// Verifies a chunk on disk, bypassing the cache.
    pub(crate) fn verify(&self, hash: &Hash, len: u32) -> Result<(), ChunkReadError> {
        self.read_verified(hash, len).map(drop)
    }

    fn read_verified(&self, hash: &Hash, len: u32) -> Result<Vec<u8>, ChunkReadError> {
        let path = self.path(hash);
        let mut buf = Vec::with_capacity(len as usize);
        match File::open(&path) {
            Ok(mut f) => {
                if let Err(e) = f.read_to_end(&mut buf) {
                    return Err(ChunkReadError::Io(path, e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ChunkReadError::Missing),
            Err(e) => return Err(ChunkReadError::Io(path, e)),
        }
        if buf.len() != len as usize || blake3::hash(&buf).as_bytes() != hash {
            tracing::error!(chunk = %hex(hash), path = %path.display(), "chunk fails verification");
            return Err(ChunkReadError::Corrupt);
        }
        Ok(buf)
    }

    pub(crate) fn is_staged(&self, hash: &Hash) -> bool {
        lock(&self.staged).contains_key(hash)
    }

    /// Removes a chunk file (GC). The caller holds the staging lock.
    pub(crate) fn remove(&self, hash: &Hash) -> io::Result<()> {
        lock(&self.cache).retain(|(h, _)| h != hash);
        match fs::remove_file(self.path(hash)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every chunk file on disk, by hash, and the paths of stray files that are not chunks.
    pub(crate) fn list(&self) -> io::Result<(Vec<Hash>, Vec<PathBuf>)> {
        let mut hashes = Vec::new();
        let mut stray = Vec::new();
        for shard in fs::read_dir(&self.chunk_dir)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                stray.push(shard.path());
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                match entry.file_name().to_str().and_then(crate::types::parse_hash) {
                    Some(h) => hashes.push(h),
                    None => stray.push(entry.path()),
                }
            }
        }
        Ok((hashes, stray))
    }

    /// Drops cached chunk bytes (tests that corrupt files on disk call this).
    pub(crate) fn clear_cache(&self) {
        lock(&self.cache).clear();
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
