//! Chunk storage: content-defined chunks of large payloads, appended to pack files.
//!
//! A pack is `packs/<8 hex digits>.pack`, an append-only file of chunk bytes with no framing.
//! A chunk's place in a pack (`Loc`: pack, offset, length) is recorded in its row of the
//! metadata table `chunks_v3`, in the transaction that first names the chunk. One pack takes
//! appends at a time; a full one (`PACK_MAX`) is left as it is and a new one begins. GC
//! punches a hole over each chunk it drops, and a full GC also punches every range no chunk
//! owns and deletes the packs left with no live chunk.
//!
//! Why packs and not one file per chunk: a GiB is about 13,000 chunks, and creating (then
//! fsyncing) that many files costs more kernel time than writing the bytes; a pack costs one
//! `pwrite` per chunk and one `fdatasync` per commit.
//!
//! Invariants:
//! - Chunk bytes are appended before any metadata names them, and every pack range named by a
//!   *durable* commit was `fdatasync`ed before that commit (`Vault::write` calls
//!   `sync_pending` inside the write transaction). A crash can leave bytes that nothing names
//!   (the sweep at open after an unclean shutdown punches them), never a name without bytes.
//! - Appends happen under the staging lock, and every chunk a writer has staged is kept:
//!   GC holds the staging lock from its decision until the hole is punched, so its view of
//!   the live ranges (the recorded ones, and those of staged chunks) covers every byte that a
//!   committed or staged chunk owns.
//! - Every read is verified against the hash; a mismatch is an integrity error.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use crate::store::faults::{Faults, IoStep, check};
use crate::store::meta::Meta;
use crate::store::schema::ChunkValue;
use crate::types::{Hash, hex};

/// Payloads of at most this many bytes are stored inline in the database.
pub const INLINE_MAX: usize = 16 * 1024;
/// `FastCDC` (2020) minimum chunk size.
pub const CHUNK_MIN: usize = 16 * 1024;
/// `FastCDC` (2020) target average chunk size.
pub const CHUNK_AVG: usize = 64 * 1024;
/// `FastCDC` (2020) maximum chunk size.
pub const CHUNK_MAX: usize = 256 * 1024;

/// The directory of pack files, under the data dir.
pub(crate) const PACK_DIR: &str = "packs";
/// A pack takes no more appends once it holds this many bytes (unless `Options` says
/// otherwise).
const PACK_MAX: u64 = 1 << 30;
/// Every chunk starts at a multiple of this in its pack, so the blocks a chunk occupies are its
/// own and punching it frees them all (a hole over part of a block only zeroes it). This costs
/// about 2 KiB of allocation per chunk.
const ALIGN: u64 = 4096;
/// Pack files kept open for reads (the appending one is held besides).
const OPEN_PACKS: usize = 64;
/// Verified chunks kept in memory for reads that straddle or repeat.
const CACHE_ENTRIES: usize = 32;

/// Where a chunk's bytes are: a range of a pack.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Loc {
    pub pack: u32,
    pub offset: u64,
    pub len: u32,
}

/// A chunk's row in `chunks_v3`: its length, how many entries of stored segments name it, and
/// where its bytes are.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct ChunkRecord {
    pub len: u32,
    pub refs: u64,
    pub loc: Option<Loc>,
}

impl ChunkRecord {
    pub(crate) fn value(self) -> ChunkValue {
        (self.len, self.refs, self.loc.map(|l| (l.pack, l.offset)))
    }

    pub(crate) fn from_value((len, refs, loc): ChunkValue) -> Self {
        ChunkRecord { len, refs, loc: loc.map(|(pack, offset)| Loc { pack, offset, len }) }
    }
}

fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN) * ALIGN
}

impl Loc {
    /// The end of the blocks this chunk occupies (its bytes, and the padding to the next).
    fn block_end(self) -> u64 {
        align_up(self.offset + u64::from(self.len))
    }
}

/// Why a chunk could not be read.
#[derive(Debug)]
pub(crate) enum ChunkReadError {
    Missing,
    Corrupt,
    Io(PathBuf, io::Error),
}

/// A chunk that live writers have staged: how many hold it, and where its bytes went if one
/// of them appended them (a chunk already recorded in the metadata is not appended again).
#[derive(Debug, Default)]
pub(crate) struct Staged {
    writers: u32,
    pub loc: Option<Loc>,
}

pub(crate) type StagedMap = HashMap<Hash, Staged>;

/// The packs that take appends: two, taking turns. `sync_pending` hands appends to the other
/// one before it syncs, so a sync never holds up an append: ext4 allocates a file's delayed
/// blocks at writeback under the same inode lock that an append to that file takes, and a
/// sync of a pack being appended to stalled `close()` for up to 60 ms.
struct Active {
    /// Each pack and its length; `None` until the first append to that slot (or after its
    /// pack filled up).
    slots: [Option<(u32, Arc<File>, u64)>; 2],
    /// The slot that takes appends.
    current: usize,
    /// The id the next new pack gets.
    next: u32,
}

impl Active {
    /// The ids and lengths of both active packs.
    fn packs(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.slots.iter().flatten().map(|p| (p.0, p.2))
    }
}

/// Packs appended to since the last `sync_pending`, and whether a pack was created.
#[derive(Default)]
struct Dirty {
    packs: BTreeSet<u32>,
    dir: bool,
}

/// What a full sweep of the packs did.
#[derive(Debug, Default)]
pub(crate) struct Swept {
    pub packs_removed: u64,
    pub stray_files_removed: u64,
}

pub(crate) struct ChunkStore {
    pack_dir: PathBuf,
    tmp_dir: PathBuf,
    faults: Faults,
    /// The metadata, for lookups of chunk places.
    meta: Arc<Meta>,
    /// The size at which a pack takes no more appends.
    pack_max: u64,
    /// Chunks live writers have staged. Also the lock that orders appends against GC.
    staged: Mutex<StagedMap>,
    active: Mutex<Active>,
    /// Open pack files by id, for reads and hole punching.
    files: Mutex<HashMap<u32, Arc<File>>>,
    dirty: Mutex<Dirty>,
    cache: Mutex<VecDeque<(Hash, Arc<Vec<u8>>)>>,
    /// Ranges appended for payloads that were then dropped without a commit (or that lost to
    /// another copy): `Vault::reclaim_abandoned` punches those that nothing names.
    abandoned: Mutex<Vec<(Hash, Loc)>>,
    /// Set once the filesystem refused to punch a hole (space is then reclaimed only when a
    /// whole pack dies).
    no_punch: AtomicBool,
    /// Asked, with no lock held, when an append finds the disk full (`Vault::retry_when_full`).
    on_full: OnceLock<OnFull>,
}

/// Frees what it can after an append found the disk full; says whether to try again.
pub(crate) type OnFull = Box<dyn Fn() -> bool + Send + Sync>;

impl std::fmt::Debug for ChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStore").field("dir", &self.pack_dir).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pack_name(id: u32) -> String {
    format!("{id:08x}.pack")
}

fn parse_pack_name(name: &str) -> Option<u32> {
    let hex = name.strip_suffix(".pack")?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

impl ChunkStore {
    /// Opens (creating if needed) the pack and temp directories under `data_dir`, and empties
    /// `tmp/`: nothing in it can be live, since the caller holds the store lock.
    pub(crate) fn open(
        data_dir: &Path,
        meta: Arc<Meta>,
        faults: Faults,
        pack_max: Option<u64>,
    ) -> io::Result<Self> {
        let pack_max = pack_max.unwrap_or(PACK_MAX);
        let pack_dir = data_dir.join(PACK_DIR);
        let tmp_dir = data_dir.join("tmp");
        fs::create_dir_all(&pack_dir)?;
        fs::create_dir_all(&tmp_dir)?;
        for entry in fs::read_dir(&tmp_dir)? {
            let entry = entry?;
            let _ = fs::remove_file(entry.path());
        }
        let mut ids: Vec<u32> = Vec::new();
        for entry in fs::read_dir(&pack_dir)? {
            if let Some(id) = entry?.file_name().to_str().and_then(parse_pack_name) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let next = ids.last().map_or(Some(1), |l| l.checked_add(1)).unwrap_or(u32::MAX);
        let mut active = Active { slots: [None, None], current: 0, next };
        // Appends go on at the end of the last two packs (the two that took turns before),
        // unless they are full.
        for (slot, &id) in active.slots.iter_mut().zip(ids.iter().rev()) {
            let file =
                OpenOptions::new().read(true).write(true).open(pack_dir.join(pack_name(id)))?;
            let len = file.metadata()?.len();
            if len < pack_max {
                *slot = Some((id, Arc::new(file), len));
            }
        }
        sync_dir(data_dir)?;
        Ok(ChunkStore {
            pack_dir,
            tmp_dir,
            faults,
            meta,
            pack_max,
            staged: Mutex::new(HashMap::new()),
            active: Mutex::new(active),
            files: Mutex::new(HashMap::new()),
            dirty: Mutex::new(Dirty::default()),
            cache: Mutex::new(VecDeque::new()),
            abandoned: Mutex::new(Vec::new()),
            no_punch: AtomicBool::new(false),
            on_full: OnceLock::new(),
        })
    }

    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp_dir
    }

    pub(crate) fn pack_dir(&self) -> &Path {
        &self.pack_dir
    }

    fn pack_path(&self, id: u32) -> PathBuf {
        self.pack_dir.join(pack_name(id))
    }

    /// An open pack file.
    fn pack(&self, id: u32) -> io::Result<Arc<File>> {
        let mut files = lock(&self.files);
        if let Some(f) = files.get(&id) {
            return Ok(f.clone());
        }
        let file = Arc::new(OpenOptions::new().read(true).write(true).open(self.pack_path(id))?);
        if files.len() >= OPEN_PACKS {
            files.clear();
        }
        files.insert(id, file.clone());
        Ok(file)
    }

    /// Stores a chunk unless an identical one is already stored, and stages it so GC leaves
    /// it alone until `unstage`. The caller must `unstage` (or `abandon`) exactly once.
    pub(crate) fn put(&self, hash: &Hash, data: &[u8]) -> io::Result<()> {
        self.stage(hash);
        let result = self.write(hash, data);
        if result.is_err() {
            self.abandon(std::slice::from_ref(hash));
        }
        result
    }

    /// Protects `hash` from GC until it is unstaged: the first half of `put`, for writers
    /// that store the bytes later (on another thread).
    pub(crate) fn stage(&self, hash: &Hash) {
        lock(&self.staged).entry(*hash).or_default().writers += 1;
    }

    /// What to ask when an append finds the disk full; the first one set stays.
    pub(crate) fn set_on_full(&self, f: OnFull) {
        let _ = self.on_full.set(f);
    }

    /// Appends a staged chunk's bytes to the active pack, unless the metadata or another
    /// writer already has them: the second half of `put`. An append that finds the disk
    /// full asks `on_full` to make room (the chunk stays staged meanwhile, so that cannot
    /// take it) and, if it says so, tries once more.
    pub(crate) fn write(&self, hash: &Hash, data: &[u8]) -> io::Result<()> {
        match self.write_once(hash, data) {
            Err(e) if crate::error::is_full(&e) && self.on_full.get().is_some_and(|f| f()) => {
                self.write_once(hash, data)
            }
            result => result,
        }
    }

    fn write_once(&self, hash: &Hash, data: &[u8]) -> io::Result<()> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("chunk too large"))?;
        let mut staged = lock(&self.staged);
        match staged.get(hash) {
            None => return Err(io::Error::other("chunk written without being staged")),
            Some(s) if s.loc.is_some() => return Ok(()),
            Some(_) => {}
        }
        if self.recorded(hash)?.is_some_and(|l| l.len == len) {
            // Stored and committed; staged now, so GC keeps it.
            return Ok(());
        }
        let loc = self.append(data)?;
        if let Some(s) = staged.get_mut(hash) {
            s.loc = Some(loc);
        }
        Ok(())
    }

    /// Appends bytes to the active pack whose turn it is, starting a new pack when it is full.
    /// Callers hold the staging lock (or are alone, while the store opens).
    pub(crate) fn append(&self, data: &[u8]) -> io::Result<Loc> {
        let len = u32::try_from(data.len()).map_err(|_| io::Error::other("chunk too large"))?;
        let mut guard = lock(&self.active);
        let active = &mut *guard;
        let slot = &mut active.slots[active.current];
        let full = slot.as_ref().is_none_or(|p| align_up(p.2) + u64::from(len) > self.pack_max);
        if full {
            check(&self.faults, IoStep::CreatePack)?;
            let id = active.next;
            let next = id.checked_add(1).ok_or_else(|| io::Error::other("pack ids exhausted"))?;
            let file = Arc::new(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(self.pack_path(id))?,
            );
            active.next = next;
            *slot = Some((id, file.clone(), 0));
            lock(&self.dirty).dir = true;
            lock(&self.files).insert(id, file);
        }
        let Some((id, file, end)) = slot.as_mut() else {
            return Err(io::Error::other("no active pack"));
        };
        check(&self.faults, IoStep::WritePack)?;
        let loc = Loc { pack: *id, offset: align_up(*end), len };
        file.write_all_at(data, loc.offset)?;
        *end = loc.offset + u64::from(len);
        lock(&self.dirty).packs.insert(loc.pack);
        Ok(loc)
    }

    /// Where the metadata says a chunk is.
    fn recorded(&self, hash: &Hash) -> io::Result<Option<Loc>> {
        let row = self.meta.read(|r| r.chunk(hash)).map_err(io::Error::other)?;
        Ok(row.and_then(|c| c.loc))
    }

    /// Where a chunk is: recorded, or appended by a writer that has not committed yet.
    fn locate(&self, hash: &Hash) -> io::Result<Option<Loc>> {
        if let Some(loc) = self.recorded(hash)? {
            return Ok(Some(loc));
        }
        Ok(lock(&self.staged).get(hash).and_then(|s| s.loc))
    }

    /// The places this process appended the given staged chunks to (those it did not find
    /// already stored). The writer's commit records them.
    pub(crate) fn appended(&self, hashes: &[Hash]) -> Vec<(Hash, Loc)> {
        let staged = lock(&self.staged);
        hashes.iter().filter_map(|h| staged.get(h).and_then(|s| s.loc).map(|l| (*h, l))).collect()
    }

    pub(crate) fn unstage(&self, hashes: &[Hash]) {
        self.release(hashes, false);
    }

    /// Unstages chunks whose payload will never be committed; the ranges appended for them
    /// are remembered for `take_abandoned`.
    pub(crate) fn abandon(&self, hashes: &[Hash]) {
        self.release(hashes, true);
    }

    fn release(&self, hashes: &[Hash], abandoned: bool) {
        let mut freed = Vec::new();
        {
            let mut staged = lock(&self.staged);
            for h in hashes {
                let Some(s) = staged.get_mut(h) else { continue };
                s.writers -= 1;
                if s.writers == 0 {
                    if abandoned && let Some(loc) = s.loc {
                        freed.push((*h, loc));
                    }
                    staged.remove(h);
                }
            }
        }
        self.discard(freed);
    }

    /// Ranges that may be garbage: `take_abandoned` hands them to the reclaimer.
    pub(crate) fn discard(&self, ranges: Vec<(Hash, Loc)>) {
        if !ranges.is_empty() {
            lock(&self.abandoned).extend(ranges);
        }
    }

    pub(crate) fn take_abandoned(&self) -> Vec<(Hash, Loc)> {
        std::mem::take(&mut *lock(&self.abandoned))
    }

    /// Holds the staging lock: while held, no writer can stage or append a chunk.
    pub(crate) fn staging_lock(&self) -> MutexGuard<'_, StagedMap> {
        lock(&self.staged)
    }

    /// Makes every chunk appended so far durable.
    pub(crate) fn sync_pending(&self) -> io::Result<()> {
        let Dirty { packs, dir } = {
            // Every append so far is in `dirty`; later ones go to the other pack.
            let mut active = lock(&self.active);
            active.current ^= 1;
            std::mem::take(&mut *lock(&self.dirty))
        };
        if packs.is_empty() && !dir {
            return Ok(());
        }
        let result = (|| {
            for id in &packs {
                check(&self.faults, IoStep::SyncPack)?;
                match self.pack(*id) {
                    Ok(file) => file.sync_data()?,
                    // Deleted by a sweep since (nothing in it was live): nothing to sync.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            if dir {
                check(&self.faults, IoStep::SyncDir)?;
                sync_dir(&self.pack_dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let mut pending = lock(&self.dirty);
            pending.packs.extend(packs);
            pending.dir |= dir;
        }
        result
    }

    /// Reads a chunk and verifies it against its hash and length.
    pub(crate) fn read(&self, hash: &Hash, len: u32) -> Result<Arc<Vec<u8>>, ChunkReadError> {
        if let Some(hit) = lock(&self.cache).iter().find(|(h, _)| h == hash) {
            return Ok(hit.1.clone());
        }
        let loc = match self.locate(hash) {
            Ok(Some(loc)) => loc,
            Ok(None) => return Err(ChunkReadError::Missing),
            Err(e) => return Err(ChunkReadError::Io(self.pack_dir.clone(), e)),
        };
        let data = Arc::new(self.read_verified(hash, len, loc)?);
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_ENTRIES {
            cache.pop_front();
        }
        cache.push_back((*hash, data.clone()));
        Ok(data)
    }

    /// Reads the bytes at `loc` and checks that they are the chunk `hash` of `len` bytes.
    pub(crate) fn read_verified(
        &self,
        hash: &Hash,
        len: u32,
        loc: Loc,
    ) -> Result<Vec<u8>, ChunkReadError> {
        let buf = self.read_raw(loc)?;
        if loc.len != len || blake3::hash(&buf).as_bytes() != hash {
            tracing::error!(
                chunk = %hex(hash),
                pack = %self.pack_path(loc.pack).display(),
                offset = loc.offset,
                "chunk fails verification"
            );
            return Err(ChunkReadError::Corrupt);
        }
        Ok(buf)
    }

    /// The bytes at `loc`, unverified (repair copies them out of the way).
    pub(crate) fn read_raw(&self, loc: Loc) -> Result<Vec<u8>, ChunkReadError> {
        let path = self.pack_path(loc.pack);
        let file = match self.pack(loc.pack) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ChunkReadError::Missing),
            Err(e) => return Err(ChunkReadError::Io(path, e)),
        };
        let len = loc.len as usize;
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            // Into the spare capacity: the buffer is not zeroed first.
            let at = loc.offset + buf.len() as u64;
            match rustix::io::pread(&*file, rustix::buffer::spare_capacity(&mut buf), at) {
                Ok(0) => return Err(ChunkReadError::Missing),
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(ChunkReadError::Io(path, e.into())),
            }
        }
        buf.truncate(len);
        Ok(buf)
    }

    /// Frees a dropped chunk's bytes. The caller holds the staging lock.
    pub(crate) fn remove(&self, hash: &Hash, loc: Loc) -> io::Result<()> {
        lock(&self.cache).retain(|(h, _)| h != hash);
        match self.pack(loc.pack) {
            Ok(file) => self.punch(&file, loc.offset, loc.block_end() - loc.offset),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn punch(&self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 || self.no_punch.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mode = rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(file, mode, offset, len) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                tracing::warn!(
                    dir = %self.pack_dir.display(),
                    "the filesystem cannot punch holes: dead chunks are reclaimed only with their whole pack"
                );
                self.no_punch.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Punches every range of every pack that no chunk owns, deletes the packs (other than
    /// the two active ones) that hold no live chunk, and removes files that are not packs.
    /// `recorded` holds the recorded locations; the caller holds the staging lock (`staged`),
    /// so no append runs meanwhile, and staged chunks' ranges are kept too.
    pub(crate) fn sweep(&self, recorded: Vec<Loc>, staged: &StagedMap) -> io::Result<Swept> {
        let mut live: HashMap<u32, Vec<(u64, u64)>> = HashMap::new();
        for loc in recorded.into_iter().chain(staged.values().filter_map(|s| s.loc)) {
            live.entry(loc.pack).or_default().push((loc.offset, loc.block_end()));
        }
        let active: Vec<(u32, u64)> = lock(&self.active).packs().collect();
        let mut swept = Swept::default();
        for entry in fs::read_dir(&self.pack_dir)? {
            let entry = entry?;
            let Some(id) = entry.file_name().to_str().and_then(parse_pack_name) else {
                if entry.file_type()?.is_file() {
                    fs::remove_file(entry.path())?;
                    swept.stray_files_removed += 1;
                }
                continue;
            };
            let mut ranges = live.remove(&id).unwrap_or_default();
            let end = match active.iter().find(|a| a.0 == id) {
                Some(&(_, len)) => len,
                None if ranges.is_empty() => {
                    lock(&self.files).remove(&id);
                    fs::remove_file(entry.path())?;
                    swept.packs_removed += 1;
                    continue;
                }
                None => entry.metadata()?.len(),
            };
            ranges.sort_unstable();
            let file = self.pack(id)?;
            let mut pos = 0u64;
            for (start, end) in ranges {
                if start > pos {
                    self.punch_data(&file, pos, start)?;
                }
                pos = pos.max(end);
            }
            if end > pos {
                self.punch_data(&file, pos, end)?;
            }
        }
        if swept.packs_removed > 0 {
            sync_dir(&self.pack_dir)?;
        }
        Ok(swept)
    }

    /// Punches `start..end` of a pack unless it is a hole already.
    fn punch_data(&self, file: &File, start: u64, end: u64) -> io::Result<()> {
        match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(start)) {
            Ok(data) if data < end => self.punch(file, data, end - data),
            Ok(_) => Ok(()),
            // No data after `start`.
            Err(rustix::io::Errno::NXIO) => Ok(()),
            Err(_) => self.punch(file, start, end - start),
        }
    }

    /// Files in the pack directory that are not packs.
    pub(crate) fn stray_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut stray = Vec::new();
        for entry in fs::read_dir(&self.pack_dir)? {
            let entry = entry?;
            if entry.file_name().to_str().and_then(parse_pack_name).is_none() {
                stray.push(entry.path());
            }
        }
        Ok(stray)
    }

    /// Bytes the packs take on disk (holes excluded).
    pub(crate) fn disk_bytes(&self) -> io::Result<u64> {
        let mut total = 0;
        for entry in fs::read_dir(&self.pack_dir)? {
            total += entry?.metadata()?.blocks() * 512;
        }
        Ok(total)
    }

    /// Drops cached chunk bytes (after repair, and for tests that corrupt packs on disk).
    pub(crate) fn clear_cache(&self) {
        lock(&self.cache).clear();
    }
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
