//! Streaming payload import: bytes go in through `std::io::Write`, a `StagedLeaf` comes out.
//!
//! The writer hashes the content in 16 KiB groups whose chaining values merge into the leaf
//! id (equal to `b3sum`; the tree of them is kept for later edits, see `layout`), and cuts it
//! into `FastCDC` chunks as the bytes arrive, so memory stays at a few buffers of about
//! `2 * CHUNK_MAX` (and, past `HASHER_FROM`, a few queued writes) however large the payload.
//! Cut chunks reach the storer thread in the buffer they were written into, with no copy of
//! their own. Payloads of at most `INLINE_MAX` bytes are kept for inline storage.
//!
//! A chunk is cut as soon as `CHUNK_MAX` bytes are buffered: `FastCDC`'s cut point depends only
//! on the bytes from the chunk's start up to `CHUNK_MAX`, so streaming gives the same chunks
//! as chunking the whole payload at once.

use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use blake3::hazmat::HasherExt;
use fastcdc::v2020::FastCDC;

use crate::payload::chunks::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, ChunkStore, INLINE_MAX, Loc};
use crate::payload::layout::{GROUP, LeafIndex, TreeBuilder, TreeCache};
use crate::types::Hash;

/// The length of the first `FastCDC` chunk of `data`: `data` holds at least `CHUNK_MAX` bytes,
/// or everything up to the end of the payload. (With fewer, the answer is the cut the bytes
/// given show, or all of them when they show none.)
///
/// A run of zeros skips `FastCDC`: the cut there depends on nothing but the run, so it is
/// worked out once (`zero_chunk`). Sparse extensions stage zeros by the gigabyte; other data
/// pays one look at its first bytes.
pub(crate) fn first_cut(data: &[u8]) -> usize {
    zero_run_cut(data).unwrap_or_else(|| cdc_cut(data))
}

/// The first cut of `data` when it starts with a run of zeros (as long as the zero chunk, or
/// all of `data`): the zero chunk's length, worked out once.
fn zero_run_cut(data: &[u8]) -> Option<usize> {
    let (zero_len, _) = zero_chunk();
    let probe = data.len().min(zero_len);
    is_zero(&data[..probe]).then_some(probe)
}

/// The id of a chunk: its BLAKE3 hash, known without hashing for the zero chunk.
pub(crate) fn chunk_id(chunk: &[u8]) -> Hash {
    let (zero_len, zero_id) = zero_chunk();
    if chunk.len() == zero_len && is_zero(chunk) {
        return zero_id;
    }
    *blake3::hash(chunk).as_bytes()
}

fn cdc_cut(data: &[u8]) -> usize {
    FastCDC::new(data, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX).next().map_or(data.len(), |c| c.length)
}

/// `first_cut` of `data` for a caller that knows where its first cut is not: not at a position
/// below `from`, and not from `stop` on unless it is `data.len()` (no cut at all). An edit
/// knows both from the old chunk at the same start: the bytes before the first written one
/// and after the last (with the 64 before each cut test that reads them) are unchanged, so the
/// old scan's answers hold there. Only the positions between are scanned.
///
/// The scan is `FastCDC` 2020's own (`fastcdc::v2020::cut_gear`), entered at the pair of
/// bytes holding `from`: its rolling hash shifts two bits per pair, so the hash there depends
/// only on the 32 pairs before, which are hashed first without testing.
pub(crate) fn first_cut_between(data: &[u8], from: usize, stop: usize) -> usize {
    type Gear = [u64; 256];
    static TABLES: OnceLock<(u64, u64, Gear, Gear)> = OnceLock::new();
    if let Some(cut) = zero_run_cut(data) {
        return cut;
    }
    let remaining = data.len().min(CHUNK_MAX);
    if remaining <= CHUNK_MIN {
        return remaining;
    }
    let (mask_s, mask_l, gear, gear_ls) = TABLES.get_or_init(|| {
        let (s, l) = fastcdc::v2020::select_masks(CHUNK_AVG, fastcdc::v2020::Normalization::Level1);
        let (gear, gear_ls) = fastcdc::v2020::get_gear_with_seed(0);
        let table = |t: &[u64]| Gear::try_from(t).expect("FastCDC's gear tables hold 256 entries");
        (s, l, table(&gear), table(&gear_ls))
    });
    let (mask_s_ls, mask_l_ls) = (mask_s << 1, mask_l << 1);
    // Pair `index` tests the cuts at `2 * index` and `2 * index + 1`.
    let limit1 = CHUNK_AVG.min(remaining) / 2;
    let limit2 = (remaining / 2).min(stop.div_ceil(2));
    let first = (from / 2).max(CHUNK_MIN / 2).min(limit2);
    let mut hash: u64 = 0;
    for index in first.saturating_sub(32).max(CHUNK_MIN / 2)..first {
        let a = index * 2;
        hash = (hash << 2).wrapping_add(gear_ls[usize::from(data[a])]);
        hash = hash.wrapping_add(gear[usize::from(data[a + 1])]);
    }
    for index in first..limit2 {
        let a = index * 2;
        let (m, m_ls) = if index < limit1 { (*mask_s, mask_s_ls) } else { (*mask_l, mask_l_ls) };
        hash = (hash << 2).wrapping_add(gear_ls[usize::from(data[a])]);
        if hash & m_ls == 0 {
            return a;
        }
        hash = hash.wrapping_add(gear[usize::from(data[a + 1])]);
        if hash & m == 0 {
            return a + 1;
        }
    }
    remaining
}

/// The first chunk `FastCDC` cuts from a long run of zeros: its length and id.
pub(crate) fn zero_chunk() -> (usize, Hash) {
    static ZERO: OnceLock<(usize, Hash)> = OnceLock::new();
    *ZERO.get_or_init(|| {
        let zeros = vec![0; CHUNK_MAX];
        let len = cdc_cut(&zeros);
        (len, *blake3::hash(&zeros[..len]).as_bytes())
    })
}

/// Whether every byte is zero; stops at the first 4 KiB block that holds another.
fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096).all(|block| block.iter().fold(0, |acc, &b| acc | b) == 0)
}

/// The bytes of a staged leaf.
#[derive(Debug)]
pub enum StagedBody {
    Inline(Vec<u8>),
    Chunked {
        /// The chunks in order, and their segments; every chunk is stored.
        index: Arc<LeafIndex>,
        /// The chunks this staging wrote, each staged once (the others belong to stored
        /// leaves already).
        fresh: Vec<Hash>,
    },
}

/// A payload whose bytes are stored but which no metadata names yet.
///
/// Commit it with `Vault::place_staged`, `Vault::set_content` or `Vault::create`.
/// Until then (and if it is dropped) its chunks are protected from GC; dropping it without
/// committing leaves at most unreferenced chunk bytes in a pack, which GC reclaims.
#[derive(Debug)]
pub struct StagedLeaf {
    pub hash: Hash,
    pub size: u64,
    pub(crate) body: StagedBody,
    store: Arc<ChunkStore>,
    /// Where this staging appended the bytes of its fresh chunks (those not stored before):
    /// the commit records these locations.
    pub(crate) appended: Vec<(Hash, Loc)>,
    /// Set once metadata naming this payload has committed.
    committed: AtomicBool,
}

impl StagedLeaf {
    /// A staged leaf, once all of its chunks are stored.
    pub(crate) fn new(hash: Hash, size: u64, body: StagedBody, store: Arc<ChunkStore>) -> Self {
        let appended = match &body {
            StagedBody::Inline(_) => Vec::new(),
            StagedBody::Chunked { fresh, .. } => store.appended(fresh),
        };
        StagedLeaf { hash, size, body, store, appended, committed: AtomicBool::new(false) }
    }

    /// Hands ranges this staging appended, which lost to copies recorded meanwhile, to the
    /// reclaimer.
    pub(crate) fn discard(&self, ranges: Vec<(Hash, Loc)>) {
        self.store.discard(ranges);
    }

    /// The chunks of a chunked payload, in order (empty when inline).
    pub fn chunk_list(&self) -> &[(Hash, u32)] {
        match &self.body {
            StagedBody::Inline(_) => &[],
            StagedBody::Chunked { index, .. } => &index.chunks,
        }
    }

    pub fn is_inline(&self) -> bool {
        matches!(self.body, StagedBody::Inline(_))
    }

    pub(crate) fn mark_committed(&self) {
        self.committed.store(true, Ordering::Release);
    }

    /// Reads the staged content at `offset` (before it is committed).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        match &self.body {
            StagedBody::Inline(bytes) => Ok(copy_from(bytes, offset, buf)),
            StagedBody::Chunked { index, .. } => {
                read_chunks(&self.store, &index.chunks, &[], offset, buf)
            }
        }
    }
}

fn copy_from(bytes: &[u8], offset: u64, buf: &mut [u8]) -> usize {
    let Ok(start) = usize::try_from(offset) else { return 0 };
    if start >= bytes.len() {
        return 0;
    }
    let n = (bytes.len() - start).min(buf.len());
    buf[..n].copy_from_slice(&bytes[start..start + n]);
    n
}

/// Reads from a sequence of stored chunks followed by `tail` bytes not yet cut.
fn read_chunks(
    store: &ChunkStore,
    chunks: &[(Hash, u32)],
    tail: &[u8],
    offset: u64,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut start = 0u64;
    let mut done = 0usize;
    for (hash, len) in chunks {
        let end = start + u64::from(*len);
        let pos = offset + done as u64;
        if done < buf.len() && pos < end {
            let data = store.read(hash, *len).map_err(|e| {
                io::Error::other(format!(
                    "staged chunk {} unreadable: {e:?}",
                    crate::types::hex(hash)
                ))
            })?;
            done += copy_from(&data, pos - start, &mut buf[done..]);
        }
        start = end;
    }
    let pos = offset + done as u64;
    if done < buf.len() && pos >= start {
        done += copy_from(tail, pos - start, &mut buf[done..]);
    }
    Ok(done)
}

impl Drop for StagedLeaf {
    fn drop(&mut self) {
        if let StagedBody::Chunked { fresh, .. } = &self.body {
            if self.committed.load(Ordering::Acquire) {
                self.store.unstage(fresh);
            } else {
                self.store.abandon(fresh);
            }
        }
    }
}

/// The first failure recorded in `slot`, again (an `io::Error` cannot be cloned): a failed
/// payload keeps failing.
fn first_error(slot: &Mutex<Option<io::Error>>) -> io::Result<()> {
    match &*slot.lock().unwrap_or_else(PoisonError::into_inner) {
        Some(e) => Err(match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        }),
        None => Ok(()),
    }
}

/// Buffers queued for the storer thread: at most this many (each about `2 * CHUNK_MAX` plus
/// one write).
const STORER_QUEUE: usize = 4;
/// Emptied buffers kept for reuse, so that a long import does not fault in fresh pages for
/// every buffer.
const SPARE_BUFFERS: usize = 2;

enum Job {
    /// A buffer and the chunks cut from it, each a range of the buffer: the thread hashes,
    /// stages and appends them, and the bytes reach the pack without another copy.
    Chunks(Vec<u8>, Vec<Range<usize>>),
    /// Answered once every chunk queued before it is on disk.
    Barrier(SyncSender<()>),
}

/// A thread that hashes one payload's chunks and appends them to the pack while the writer
/// hashes the payload's tree and cuts the next bytes: a sequential write spreads over two
/// cores (the chunk ids, a second BLAKE3 pass over every byte, were a fifth of the writer's
/// time).
struct Storer {
    tx: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// The first write that failed; the payload fails with it.
    error: Arc<Mutex<Option<io::Error>>>,
    /// Buffers the thread has written out, for the writer to fill again.
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
    /// The ids of the chunks hashed so far, in payload order; each is staged when pushed.
    hashes: Arc<Mutex<Vec<Hash>>>,
}

impl Storer {
    fn spawn(store: Arc<ChunkStore>) -> io::Result<Storer> {
        let (tx, rx) = sync_channel::<Job>(STORER_QUEUE);
        let error = Arc::new(Mutex::new(None));
        let spare = Arc::new(Mutex::new(Vec::new()));
        let hashes = Arc::new(Mutex::new(Vec::new()));
        let (err, sp, hs) = (error.clone(), spare.clone(), hashes.clone());
        let thread = std::thread::Builder::new()
            .name("indras-storer".into())
            .spawn(move || Self::run(&store, &rx, &err, &sp, &hs))?;
        Ok(Storer { tx: Some(tx), thread: Some(thread), error, spare, hashes })
    }

    fn run(
        store: &ChunkStore,
        rx: &Receiver<Job>,
        error: &Mutex<Option<io::Error>>,
        spare: &Mutex<Vec<Vec<u8>>>,
        hashes: &Mutex<Vec<Hash>>,
    ) {
        for job in rx {
            match job {
                Job::Chunks(mut buf, cuts) => {
                    for range in cuts {
                        let hash = chunk_id(&buf[range.clone()]);
                        // Staged as it joins the list, so the list always holds exactly the
                        // hashes this payload staged (and `Drop` abandons).
                        store.stage(&hash);
                        hashes.lock().unwrap_or_else(PoisonError::into_inner).push(hash);
                        if let Err(e) = store.write(&hash, &buf[range]) {
                            let mut slot = error.lock().unwrap_or_else(PoisonError::into_inner);
                            slot.get_or_insert(e);
                        }
                    }
                    let mut spare = spare.lock().unwrap_or_else(PoisonError::into_inner);
                    if spare.len() < SPARE_BUFFERS {
                        buf.clear();
                        spare.push(buf);
                    }
                }
                Job::Barrier(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    /// The first failed write, again at every call: a payload with a missing chunk must
    /// never finish.
    fn failed(&self) -> io::Result<()> {
        first_error(&self.error)
    }

    /// An empty buffer, reused if the thread has one to give back.
    fn buffer(&self) -> Vec<u8> {
        let reused = self.spare.lock().unwrap_or_else(PoisonError::into_inner).pop();
        reused.unwrap_or_else(|| Vec::with_capacity(3 * CHUNK_MAX))
    }

    fn send(&self, job: Job) -> io::Result<()> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(job).ok())
            .ok_or_else(|| io::Error::other("chunk storer thread is gone"))
    }

    /// Waits until every queued chunk is written; returns the first failure.
    fn drain(&self) -> io::Result<()> {
        let (done_tx, done_rx) = sync_channel(1);
        self.send(Job::Barrier(done_tx))?;
        done_rx.recv().map_err(|_| io::Error::other("chunk storer thread is gone"))?;
        self.failed()
    }

    /// The ids of the chunks hashed so far.
    fn hashes(&self) -> Vec<Hash> {
        self.hashes.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Storer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Bytes a payload reaches before its writer hands hashing and cutting to a thread of its own
/// (smaller payloads, most files, never start one).
const HASHER_FROM: u64 = 4 << 20;
/// Writes queued for the hasher thread: at most this many.
const HASHER_QUEUE: usize = 4;

/// Streams a payload into the store. Obtain one from `Vault::payload_writer`.
///
/// Past `HASHER_FROM` bytes, each `write` only copies its bytes into a queue for a hasher
/// thread, which hashes the tree and cuts chunks (`Cutter`) while the caller goes on: a
/// sequential write through the mount no longer waits for the hashing of each 1 MiB request.
/// A failure there fails the next write, read or `finish`.
pub struct PayloadWriter {
    store: Arc<ChunkStore>,
    trees: Arc<TreeCache>,
    size: u64,
    /// The hashing and cutting state, here unless the hasher thread has it.
    cutter: Option<Box<Cutter>>,
    hasher: Option<Hasher>,
}

impl std::fmt::Debug for PayloadWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadWriter").field("size", &self.size).finish_non_exhaustive()
    }
}

/// A payload's hashing and cutting state.
struct Cutter {
    store: Arc<ChunkStore>,
    /// Hashes the current `GROUP` of the payload; full groups go into `tree`.
    group: blake3::Hasher,
    group_len: u64,
    tree: TreeBuilder,
    buf: Vec<u8>,
    /// The lengths of the chunks cut so far; the storer hashes them.
    cuts: Vec<u32>,
    /// Started at the first chunk: small payloads never need it.
    storer: Option<Storer>,
    /// A storer that could not be started: the payload fails with it.
    failed: Option<io::Error>,
}

/// The chunks cut so far and the uncut tail: what a read of unfinished content needs.
type Snapshot = io::Result<(Vec<(Hash, u32)>, Vec<u8>)>;

enum HashJob {
    /// Bytes to append to the payload.
    Data(Vec<u8>),
    /// Answered, once every queued byte is stored, with a `Snapshot`.
    Snapshot(SyncSender<Snapshot>),
}

/// The thread that runs a payload's `Cutter` while the writer takes more bytes.
struct Hasher {
    tx: Option<SyncSender<HashJob>>,
    thread: Option<JoinHandle<Option<Box<Cutter>>>>,
    /// The first failure of the thread; once set, it takes no more bytes.
    error: Arc<Mutex<Option<io::Error>>>,
    /// Emptied write buffers, for the writer to fill again without faulting in fresh pages.
    spare: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Hasher {
    /// Starts a thread on `cutter`; gives it back when no thread can start.
    fn spawn(cutter: Box<Cutter>) -> Result<Hasher, Box<Cutter>> {
        let (tx, rx) = sync_channel::<HashJob>(HASHER_QUEUE);
        let error: Arc<Mutex<Option<io::Error>>> = Arc::new(Mutex::new(None));
        let spare: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
        let (err, sp) = (error.clone(), spare.clone());
        // The state goes over once the thread runs, so that a failed start keeps it.
        let (start_tx, start_rx) = sync_channel::<Box<Cutter>>(1);
        let spawned = std::thread::Builder::new().name("indras-hasher".into()).spawn(move || {
            let Ok(mut cutter) = start_rx.recv() else { return None };
            for job in rx {
                match job {
                    HashJob::Data(mut data) => {
                        if first_error(&err).is_ok()
                            && let Err(e) = cutter.write(&data)
                        {
                            err.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
                        }
                        let mut spare = sp.lock().unwrap_or_else(PoisonError::into_inner);
                        if spare.len() < SPARE_BUFFERS {
                            data.clear();
                            spare.push(data);
                        }
                    }
                    HashJob::Snapshot(reply) => {
                        let snapshot = first_error(&err)
                            .and_then(|()| cutter.chunks())
                            .map(|c| (c, cutter.buf.clone()));
                        let _ = reply.send(snapshot);
                    }
                }
            }
            Some(cutter)
        });
        let Ok(thread) = spawned else { return Err(cutter) };
        start_tx.send(cutter).map_err(|e| e.0)?;
        Ok(Hasher { tx: Some(tx), thread: Some(thread), error, spare })
    }

    fn failed(&self) -> io::Result<()> {
        first_error(&self.error)
    }

    fn send(&self, job: HashJob) -> io::Result<()> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(job).ok())
            .ok_or_else(|| io::Error::other("payload hasher thread is gone"))
    }

    /// Queues a copy of `data`.
    fn write(&self, data: &[u8]) -> io::Result<()> {
        self.failed()?;
        let reused = self.spare.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut buf = reused.unwrap_or_else(|| Vec::with_capacity(data.len()));
        buf.extend_from_slice(data);
        self.send(HashJob::Data(buf))
    }

    /// Waits for the queue to empty and takes the state back, with the thread's failure.
    fn join(mut self) -> (Option<Box<Cutter>>, io::Result<()>) {
        self.tx = None;
        let cutter = self.thread.take().and_then(|t| t.join().ok().flatten());
        let result = match cutter {
            Some(_) => self.failed(),
            None => Err(io::Error::other("payload hasher thread panicked")),
        };
        (cutter, result)
    }
}

impl Drop for Hasher {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Cutter {
    /// Takes all of `data`, or, when it fails, none of it: the tree, the buffer and the cuts
    /// stay in step with the bytes the writer counts, so a write refused (for a full disk,
    /// say) leaves the payload as it was, and its failure is what `finish` reports.
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        // Every check that can fail comes before the first byte is taken.
        self.failed()?;
        if self.buf.len() + data.len() >= 2 * CHUNK_MAX && self.storer.is_none() {
            self.storer = Some(Storer::spawn(self.store.clone())?);
        }
        let mut rest = data;
        while !rest.is_empty() {
            if self.group_len == GROUP {
                self.tree.push(self.group.finalize_non_root());
                self.group = blake3::Hasher::new();
                self.group.set_input_offset(self.tree.len() as u64 * GROUP);
                self.group_len = 0;
            }
            let take =
                usize::try_from(GROUP - self.group_len).unwrap_or(usize::MAX).min(rest.len());
            self.group.update(&rest[..take]);
            self.group_len += take as u64;
            rest = &rest[take..];
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 2 * CHUNK_MAX {
            // Taken: a failure to hand the chunks over fails the payload from here on.
            self.cut_ready_chunks(false);
        }
        Ok(())
    }

    /// The chunks cut so far, once every one is stored.
    fn chunks(&self) -> io::Result<Vec<(Hash, u32)>> {
        self.failed()?;
        let Some(s) = &self.storer else { return Ok(Vec::new()) };
        s.drain()?;
        let hashes = s.hashes();
        if hashes.len() != self.cuts.len() {
            return Err(io::Error::other("chunk storer lost chunks"));
        }
        Ok(hashes.into_iter().zip(self.cuts.iter().copied()).collect())
    }

    /// Cuts the chunks the buffer holds (all of it `at_end`) and hands them to the storer,
    /// started first if need be. The cuts are counted even when they cannot be handed over:
    /// the failure is the storer's, so the payload fails at its next write, read or `finish`.
    fn cut_ready_chunks(&mut self, at_end: bool) {
        if self.storer.is_none() {
            match Storer::spawn(self.store.clone()) {
                Ok(s) => self.storer = Some(s),
                Err(e) => {
                    self.failed.get_or_insert(e);
                    return;
                }
            }
        }
        let storer = self.storer.as_ref().expect("spawned above");
        let mut start = 0;
        let mut cuts = Vec::new();
        while self.buf.len() - start >= CHUNK_MAX || (at_end && start < self.buf.len()) {
            let len = first_cut(&self.buf[start..]);
            self.cuts.push(len as u32);
            cuts.push(start..start + len);
            start += len;
        }
        if cuts.is_empty() {
            return;
        }
        // The buffer goes to the storer whole; only the uncut tail is copied, into the next.
        let mut next = storer.buffer();
        next.extend_from_slice(&self.buf[start..]);
        let full = std::mem::replace(&mut self.buf, next);
        if let Err(e) = storer.send(Job::Chunks(full, cuts)) {
            storer.error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(e);
        }
    }

    /// The first failure of this payload's storing, again: a payload with a chunk missing
    /// never finishes.
    fn failed(&self) -> io::Result<()> {
        if let Some(e) = &self.failed {
            return Err(match e.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(e.kind(), e.to_string()),
            });
        }
        self.storer.as_ref().map_or(Ok(()), Storer::failed)
    }
}

impl PayloadWriter {
    pub(crate) fn new(store: Arc<ChunkStore>, trees: Arc<TreeCache>) -> Self {
        let cutter = Cutter {
            store: store.clone(),
            group: blake3::Hasher::new(),
            group_len: 0,
            tree: TreeBuilder::default(),
            buf: Vec::with_capacity(INLINE_MAX),
            cuts: Vec::new(),
            storer: None,
            failed: None,
        };
        PayloadWriter { store, trees, size: 0, cutter: Some(Box::new(cutter)), hasher: None }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Reads back bytes written so far.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(h) = &self.hasher {
            let (tx, rx) = sync_channel(1);
            h.send(HashJob::Snapshot(tx))?;
            let (chunks, tail) =
                rx.recv().map_err(|_| io::Error::other("payload hasher thread is gone"))??;
            return read_chunks(&self.store, &chunks, &tail, offset, buf);
        }
        let cutter = self
            .cutter
            .as_ref()
            .ok_or_else(|| io::Error::other("payload writer lost its state"))?;
        read_chunks(&self.store, &cutter.chunks()?, &cutter.buf, offset, buf)
    }

    /// The state back from the hasher thread, if it has it.
    fn settle(&mut self) -> io::Result<&mut Cutter> {
        if let Some(h) = self.hasher.take() {
            let (cutter, result) = h.join();
            self.cutter = cutter;
            result?;
        }
        self.cutter.as_deref_mut().ok_or_else(|| io::Error::other("payload writer lost its state"))
    }

    /// Stores what is left and returns the staged leaf.
    pub fn finish(mut self) -> io::Result<StagedLeaf> {
        let (size, trees, store) = (self.size, self.trees.clone(), self.store.clone());
        let cutter = self.settle()?;
        // A payload whose storing failed reports that, whatever else is wrong with it.
        cutter.failed()?;
        let hash = if cutter.tree.len() == 0 {
            *cutter.group.finalize().as_bytes()
        } else {
            // Groups are pushed only once more bytes follow, so the last one is not empty.
            cutter.tree.push(cutter.group.finalize_non_root());
            trees
                .root_of(size, std::mem::take(&mut cutter.tree))
                .ok_or_else(|| io::Error::other("payload hash tree has the wrong shape"))?
        };
        let body = if cutter.cuts.is_empty() && cutter.buf.len() <= INLINE_MAX {
            StagedBody::Inline(std::mem::take(&mut cutter.buf))
        } else {
            cutter.cut_ready_chunks(true);
            cutter.failed()?;
            let chunks = cutter.chunks()?;
            // The staged leaf owns the chunks from here on: dropped, the writer abandons none.
            cutter.storer = None;
            cutter.cuts.clear();
            let fresh = chunks.iter().map(|c| c.0).collect();
            StagedBody::Chunked { index: Arc::new(LeafIndex::new(chunks)), fresh }
        };
        Ok(StagedLeaf::new(hash, size, body, store))
    }
}

impl io::Write for PayloadWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.hasher.is_none()
            && self.size + data.len() as u64 >= HASHER_FROM
            && let Some(cutter) = self.cutter.take()
        {
            // With no thread to be had, the writer goes on hashing on the caller's.
            match Hasher::spawn(cutter) {
                Ok(h) => self.hasher = Some(h),
                Err(cutter) => self.cutter = Some(cutter),
            }
        }
        match &self.hasher {
            Some(h) => h.write(data)?,
            None => self.settle()?.write(data)?,
        }
        self.size += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for PayloadWriter {
    fn drop(&mut self) {
        // An import dropped before `finish`: its chunks are abandoned, once the hasher and the
        // storer have stopped (so none of them is appended after).
        let _ = self.settle();
        if let Some(s) = self.cutter.as_mut().and_then(|c| c.storer.take()) {
            let hashes = s.hashes.clone();
            drop(s);
            self.store.abandon(&hashes.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn zero_runs_cut_and_hash_exactly_as_fastcdc_and_blake3_would() {
        let (zero_len, zero_id) = zero_chunk();
        assert_eq!(zero_id, *blake3::hash(&vec![0; zero_len]).as_bytes());
        let lens = [0, 1, 100, CHUNK_MIN - 1, CHUNK_MIN, 100_000, zero_len - 1, zero_len];
        for &z in lens.iter().chain(&[zero_len + 1, CHUNK_MAX, 2 * CHUNK_MAX]) {
            for tail in [0, 1, 5000, CHUNK_MAX] {
                let mut data = vec![0; z];
                data.extend(noise(tail, z as u64 + 7));
                for n in [data.len(), data.len().min(CHUNK_MAX), data.len().min(2 * CHUNK_AVG)] {
                    let part = &data[..n];
                    let cut = first_cut(part);
                    assert_eq!(cut, cdc_cut(part), "{z} zeros, then {tail} bytes, {n} given");
                    let id = chunk_id(&part[..cut]);
                    assert_eq!(id, *blake3::hash(&part[..cut]).as_bytes());
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
        /// Told where the first cut is not, the scan finds exactly FastCDC's first cut.
        #[test]
        fn a_scan_told_where_no_cut_is_cuts_as_fastcdc(
            len in 0usize..CHUNK_MAX + 5000,
            seed in any::<u64>(),
            zeros in 0usize..3,
            from_per_mille in 0usize..=1000,
            stop_per_mille in 0usize..=1000,
            near in proptest::option::of(0usize..130),
        ) {
            let mut data = noise(len, seed);
            // Some zero runs, at the start (the zero-chunk path) or inside.
            if zeros == 1 {
                data[..len.min(70_000)].fill(0);
            } else if zeros == 2 && len > 40_000 {
                data[20_000..40_000].fill(0);
            }
            let truth = cdc_cut(&data);
            prop_assert_eq!(first_cut(&data), truth);
            let part = |n: usize, per_mille: usize| n * per_mille / 1000;
            // Often just before the cut, where the hash must already be exactly FastCDC's.
            let from = match near {
                Some(back) => truth.saturating_sub(back),
                // With no cut before the scan's end, any `from` is true, even past the end.
                None if truth == data.len().min(CHUNK_MAX) => part(400_000, from_per_mille),
                None => part(truth, from_per_mille),
            };
            // With a cut before the end, `stop` lies past it; with none, anywhere.
            let stop = if truth < data.len() {
                truth + 1 + part(data.len() - truth - 1, stop_per_mille)
            } else {
                part(data.len(), stop_per_mille)
            };
            prop_assert_eq!(first_cut_between(&data, from, stop), truth, "from {} stop {}", from, stop);
        }
    }
}
