//! Fetching one file's content from a peer: only what this vault lacks, every piece checked
//! against its BLAKE3 id as it arrives, the whole against the file's id at the end.
//!
//! A chunked file is fetched segment by segment, in order: its list (and runs) first, then
//! each segment's chunk list (from this vault when it has the segment), then the chunks it
//! lacks, `WINDOW` at a time in parallel, while the content streams into a `PayloadWriter`
//! that re-cuts and stores it exactly as a local write would. Memory stays near one window
//! of chunks plus one segment's list, whatever the file's size.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::{Condvar, Mutex};

use indras_artifacts::{
    CHUNK_MAX, FILE_SIZE_MAX, Hash, PlayerId, StagedLeaf, Vault, decode_chunk_list,
    decode_leaf_list, decode_segment_list,
};

use crate::proto::{FileRef, Request, Response};

/// Chunks listed ahead of the writing, at most (about 256 MiB of content).
const SPAN: usize = 4096;
/// The most bytes, and chunks, asked for in one request.
const BATCH_BYTES: usize = 1 << 20;
const BATCH_CHUNKS: usize = 64;
/// Threads asking for batches of one file at once.
const FETCHERS: usize = 4;
/// Batches fetched ahead of the writing, at most: with `BATCH_BYTES`, what a file's fetch
/// holds in memory.
const AHEAD: usize = 8;

/// Why a fetch failed.
#[derive(Debug)]
pub enum FetchError {
    /// The peer refused (the grant ended, or the file changed meanwhile).
    Denied,
    /// The peer sent bytes that are not what they should be; nothing was kept.
    Corrupt(String),
    /// The network or the peer failed; asking again later may work.
    Unavailable(String),
    /// This vault failed.
    Local(indras_artifacts::Error),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Denied => write!(f, "the peer refused"),
            FetchError::Corrupt(why) => write!(f, "the peer sent wrong bytes: {why}"),
            FetchError::Unavailable(why) => write!(f, "{why}"),
            FetchError::Local(e) => write!(f, "{e}"),
        }
    }
}

impl From<indras_artifacts::Error> for FetchError {
    fn from(e: indras_artifacts::Error) -> Self {
        FetchError::Local(e)
    }
}

/// Sends one request and waits for its answer.
pub trait Ask: Sync {
    fn ask(&self, peer: PlayerId, req: &Request) -> Result<Response, String>;
}

fn ask(t: &dyn Ask, peer: PlayerId, req: &Request) -> Result<Response, FetchError> {
    match t.ask(peer, req).map_err(FetchError::Unavailable)? {
        Response::Denied => Err(FetchError::Denied),
        Response::Failed(why) => Err(FetchError::Unavailable(format!("the peer failed: {why}"))),
        r => Ok(r),
    }
}

fn checked(bytes: Vec<u8>, id: &Hash, what: &str) -> Result<Vec<u8>, FetchError> {
    if blake3::hash(&bytes).as_bytes() == id {
        Ok(bytes)
    } else {
        Err(FetchError::Corrupt(format!("a {what} does not match its id")))
    }
}

fn io_err(vault: &Vault, e: std::io::Error) -> FetchError {
    FetchError::Local(indras_artifacts::Error::io(vault.tmp_dir(), e))
}

/// Fetches the content of `file` from `peer` into `vault`, staged and checked, not yet
/// committed. The caller commits it (`Vault::mirror_set_content`, or a transfer's delivery).
pub fn fetch_leaf(
    vault: &Vault,
    t: &dyn Ask,
    peer: PlayerId,
    file: &FileRef,
) -> Result<StagedLeaf, FetchError> {
    let list = match ask(t, peer, &Request::Layout { file: file.clone() })? {
        Response::Inline(bytes) => {
            let bytes = checked(bytes, &file.content, "file")?;
            return Ok(vault.stage(&bytes)?);
        }
        Response::List(list) => list,
        other => return Err(FetchError::Corrupt(format!("unexpected answer {}", kind(&other)))),
    };
    let (runs, refs) = decode_leaf_list(&list).map_err(|e| FetchError::Corrupt(e.to_string()))?;
    let mut writer = vault.payload_writer();
    let mut total = 0u64;
    // Chunks listed but not yet written, and the index in the file of the first of them.
    let mut span: Vec<(Hash, u32)> = Vec::new();
    let mut span_first = 0u32;
    let mut segment = |id: &Hash,
                       bytes: u64,
                       writer: &mut indras_artifacts::PayloadWriter,
                       span: &mut Vec<(Hash, u32)>,
                       span_first: &mut u32| {
        let encoded = match vault.segment_bytes(id)? {
            Some(b) => b,
            None => fetch_piece(t, peer, &Request::Segment { file: file.clone(), segment: *id })?,
        };
        let encoded = checked(encoded, id, "segment")?;
        let chunks = decode_chunk_list(&encoded).map_err(|e| FetchError::Corrupt(e.to_string()))?;
        let sum: u64 = chunks.iter().map(|c| u64::from(c.1)).sum();
        if sum != bytes || chunks.iter().any(|c| c.1 == 0 || c.1 as usize > CHUNK_MAX) {
            return Err(FetchError::Corrupt("a segment's chunks do not add up".into()));
        }
        total += sum;
        if total > FILE_SIZE_MAX {
            return Err(FetchError::Corrupt("the file is larger than the largest file".into()));
        }
        span.extend(chunks);
        if span.len() >= SPAN {
            write_span(vault, t, peer, file, *span_first, span, writer)?;
            *span_first = span_first.saturating_add(span.len() as u32);
            span.clear();
        }
        Ok(())
    };
    let fetched = (|| -> Result<(), FetchError> {
        if runs {
            for (run, bytes) in refs {
                let encoded = match vault.run_bytes(&run)? {
                    Some(b) => b,
                    None => fetch_piece(t, peer, &Request::Run { file: file.clone(), run })?,
                };
                let encoded = checked(encoded, &run, "run")?;
                let segs = decode_segment_list(&encoded)
                    .map_err(|e| FetchError::Corrupt(e.to_string()))?;
                if segs.iter().map(|s| s.1).sum::<u64>() != bytes {
                    return Err(FetchError::Corrupt("a run's segments do not add up".into()));
                }
                for (id, b) in segs {
                    segment(&id, b, &mut writer, &mut span, &mut span_first)?;
                }
            }
        } else {
            for (id, b) in refs {
                segment(&id, b, &mut writer, &mut span, &mut span_first)?;
            }
        }
        write_span(vault, t, peer, file, span_first, &span, &mut writer)
    })();
    if let Err(e) = fetched {
        // Every chunk written so far was checked: keep them, so a retry resumes.
        if !matches!(e, FetchError::Local(_))
            && !writer.is_empty()
            && let Ok(partial) = writer.finish()
            && let Err(k) = vault.keep_partial(&partial)
        {
            tracing::debug!(error = %k, "could not keep a partial fetch");
        }
        return Err(e);
    }
    let staged = writer.finish().map_err(|e| io_err(vault, e))?;
    if staged.hash != file.content {
        return Err(FetchError::Corrupt("the content does not match the file's id".into()));
    }
    Ok(staged)
}

/// What one step of a span is: chunks this vault has, or a run of chunks to ask for in one
/// request.
#[derive(Clone, Copy, Debug)]
enum Unit {
    Local { start: usize, count: usize },
    Remote { start: usize, count: usize },
}

/// Splits `chunks` into units: runs of chunks this vault has, and runs it lacks of at most
/// `BATCH_BYTES` (or `BATCH_CHUNKS`) each.
fn plan(vault: &Vault, chunks: &[(Hash, u32)]) -> Result<Vec<Unit>, FetchError> {
    let mut units: Vec<Unit> = Vec::new();
    let mut bytes = 0usize;
    for (i, (id, len)) in chunks.iter().enumerate() {
        let local = vault.has_chunk(id)?;
        match (units.last_mut(), local) {
            (Some(Unit::Local { count, .. }), true) => *count += 1,
            (Some(Unit::Remote { count, .. }), false)
                if bytes + *len as usize <= BATCH_BYTES && *count < BATCH_CHUNKS =>
            {
                *count += 1;
                bytes += *len as usize;
            }
            (_, true) => units.push(Unit::Local { start: i, count: 1 }),
            (_, false) => {
                units.push(Unit::Remote { start: i, count: 1 });
                bytes = *len as usize;
            }
        }
    }
    Ok(units)
}

/// Writes `chunks` (the file's chunks from number `first` on) into `writer`, in order. Chunks
/// this vault has are read here; the others are asked for in batches by `FETCHERS` threads,
/// at most `AHEAD` batches ahead of the writing, each chunk checked by the thread that
/// fetched it.
#[allow(clippy::too_many_arguments)]
fn write_span(
    vault: &Vault,
    t: &dyn Ask,
    peer: PlayerId,
    file: &FileRef,
    first: u32,
    chunks: &[(Hash, u32)],
    writer: &mut indras_artifacts::PayloadWriter,
) -> Result<(), FetchError> {
    if chunks.is_empty() {
        return Ok(());
    }
    let units = plan(vault, chunks)?;
    let remote: Vec<usize> =
        (0..units.len()).filter(|&i| matches!(units[i], Unit::Remote { .. })).collect();
    let shared = Mutex::new(Shared { results: HashMap::new(), written: 0, failed: false });
    let ready = Condvar::new();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<(), FetchError> {
        for _ in 0..FETCHERS.min(remote.len()) {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if k >= remote.len() {
                        return;
                    }
                    {
                        let mut g = shared.lock();
                        while k >= g.written + AHEAD && !g.failed {
                            ready.wait(&mut g);
                        }
                        if g.failed {
                            return;
                        }
                    }
                    let Unit::Remote { start, count } = units[remote[k]] else { continue };
                    let got =
                        fetch_batch(t, peer, file, first, start, &chunks[start..start + count]);
                    let mut g = shared.lock();
                    g.failed |= got.is_err();
                    g.results.insert(k, got);
                    ready.notify_all();
                }
            });
        }
        let mut k = 0;
        let out = (|| {
            for unit in &units {
                match *unit {
                    Unit::Local { start, count } => {
                        for (id, len) in &chunks[start..start + count] {
                            let bytes = vault.chunk(id, *len)?;
                            writer.write_all(&bytes).map_err(|e| io_err(vault, e))?;
                        }
                    }
                    Unit::Remote { .. } => {
                        let got = {
                            let mut g = shared.lock();
                            loop {
                                if let Some(r) = g.results.remove(&k) {
                                    break r;
                                }
                                // A failed batch stops the others: take its error.
                                let failed = g.failed.then(|| {
                                    g.results.iter().find(|(_, r)| r.is_err()).map(|(k, _)| *k)
                                });
                                if let Some(Some(bad)) = failed {
                                    break g.results.remove(&bad).expect("found");
                                }
                                ready.wait(&mut g);
                            }
                        };
                        for bytes in got? {
                            writer.write_all(&bytes).map_err(|e| io_err(vault, e))?;
                        }
                        k += 1;
                        shared.lock().written = k;
                        ready.notify_all();
                    }
                }
            }
            Ok(())
        })();
        if out.is_err() {
            shared.lock().failed = true;
            next.store(usize::MAX / 2, Ordering::SeqCst);
            ready.notify_all();
        }
        out
    })
}

/// What a span's fetchers and its writer share: results of remote units, by position among
/// the remote ones; how many of those the writer has taken (fetchers stay at most `AHEAD`
/// ahead of it); whether a batch failed (the others then stop).
struct Shared {
    results: HashMap<usize, Result<Vec<Vec<u8>>, FetchError>>,
    written: usize,
    failed: bool,
}

/// Asks for `chunks`, the file's chunks from number `first + start` on, in one request, and
/// checks each against its id and length.
fn fetch_batch(
    t: &dyn Ask,
    peer: PlayerId,
    file: &FileRef,
    first: u32,
    start: usize,
    chunks: &[(Hash, u32)],
) -> Result<Vec<Vec<u8>>, FetchError> {
    let req = Request::Chunks {
        file: file.clone(),
        from: first + start as u32,
        count: chunks.len() as u32,
    };
    let got = match ask(t, peer, &req)? {
        Response::Chunks(got) => got,
        other => return Err(FetchError::Corrupt(format!("unexpected answer {}", kind(&other)))),
    };
    if got.len() != chunks.len() {
        return Err(FetchError::Corrupt("a batch of chunks has the wrong count".into()));
    }
    got.into_iter()
        .zip(chunks)
        .map(|(bytes, (id, len))| {
            let bytes = checked(bytes.into_vec(), id, "chunk")?;
            if bytes.len() == *len as usize {
                Ok(bytes)
            } else {
                Err(FetchError::Corrupt("a chunk has the wrong length".into()))
            }
        })
        .collect()
}

fn fetch_piece(t: &dyn Ask, peer: PlayerId, req: &Request) -> Result<Vec<u8>, FetchError> {
    match ask(t, peer, req)? {
        Response::Bytes(b) => Ok(b),
        other => Err(FetchError::Corrupt(format!("unexpected answer {}", kind(&other)))),
    }
}

pub(crate) fn kind(r: &Response) -> &'static str {
    match r {
        Response::Roots(_) => "roots",
        Response::Page { .. } => "page",
        Response::Inline(_) => "inline",
        Response::List(_) => "list",
        Response::Bytes(_) => "bytes",
        Response::Chunks(_) => "chunks",
        Response::Ok => "ok",
        Response::Denied => "denied",
        Response::Failed(_) => "failed",
        Response::Realms { .. } => "realms",
        Response::Taken { .. } => "taken",
    }
}
