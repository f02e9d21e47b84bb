//! Fetching one file's content from a peer: only what this vault lacks, every piece checked
//! against its BLAKE3 id as it arrives, the whole against the file's id at the end.
//!
//! A chunked file is fetched segment by segment, in order: its list (and runs) first, then
//! each segment's chunk list (from this vault when it has the segment), then the chunks it
//! lacks, `WINDOW` at a time in parallel, while the content streams into a `PayloadWriter`
//! that re-cuts and stores it exactly as a local write would. Memory stays near one window
//! of chunks plus one segment's list, whatever the file's size.

use std::io::Write;
use std::sync::Arc;

use indras_artifacts::{
    CHUNK_MAX, FILE_SIZE_MAX, Hash, PlayerId, StagedLeaf, Vault, decode_chunk_list,
    decode_leaf_list, decode_segment_list,
};

use crate::proto::{FileRef, Request, Response};

/// Chunks fetched in parallel.
pub const WINDOW: usize = 16;

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
    let mut next = 0u32;
    let mut segment = |id: &Hash, bytes: u64, writer: &mut indras_artifacts::PayloadWriter| {
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
        let first = next;
        next = next.saturating_add(chunks.len() as u32);
        write_chunks(vault, t, peer, file, first, &chunks, writer)
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
                    segment(&id, b, &mut writer)?;
                }
            }
        } else {
            for (id, b) in refs {
                segment(&id, b, &mut writer)?;
            }
        }
        Ok(())
    })();
    if let Err(e) = fetched {
        // Every chunk written so far was checked: keep them, so a retry resumes.
        if !matches!(e, FetchError::Local(_))
            && writer.len() > 0
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

/// Writes `chunks` (the file's chunks from number `first` on) into `writer`, in order:
/// each from this vault when it has it, else from the peer, `WINDOW` requests at a time.
#[allow(clippy::too_many_arguments)]
fn write_chunks(
    vault: &Vault,
    t: &dyn Ask,
    peer: PlayerId,
    file: &FileRef,
    first: u32,
    chunks: &[(Hash, u32)],
    writer: &mut indras_artifacts::PayloadWriter,
) -> Result<(), FetchError> {
    for (w, window) in chunks.chunks(WINDOW).enumerate() {
        let base = first + (w * WINDOW) as u32;
        let mut got: Vec<Option<Arc<Vec<u8>>>> = Vec::with_capacity(window.len());
        for (id, len) in window {
            got.push(if vault.has_chunk(id)? { Some(vault.chunk(id, *len)?) } else { None });
        }
        let missing: Vec<usize> = (0..window.len()).filter(|&i| got[i].is_none()).collect();
        let fetched: Vec<Result<Vec<u8>, FetchError>> = std::thread::scope(|s| {
            let handles: Vec<_> = missing
                .iter()
                .map(|&i| {
                    let (id, len) = window[i];
                    let req = Request::Chunk { file: file.clone(), index: base + i as u32 };
                    s.spawn(move || match ask(t, peer, &req)? {
                        Response::Chunk { id: got, bytes } if got == id => {
                            let bytes = checked(bytes, &id, "chunk")?;
                            if bytes.len() == len as usize {
                                Ok(bytes)
                            } else {
                                Err(FetchError::Corrupt("a chunk has the wrong length".into()))
                            }
                        }
                        Response::Chunk { .. } => {
                            Err(FetchError::Corrupt("a chunk is not the one asked for".into()))
                        }
                        other => {
                            Err(FetchError::Corrupt(format!("unexpected answer {}", kind(&other))))
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| Err(FetchError::Unavailable("fetch failed".into())))
                })
                .collect()
        });
        for (&i, r) in missing.iter().zip(fetched) {
            got[i] = Some(Arc::new(r?));
        }
        for bytes in got.into_iter().flatten() {
            writer.write_all(&bytes).map_err(|e| io_err(vault, e))?;
        }
    }
    Ok(())
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
        Response::Chunk { .. } => "chunk",
        Response::Ok => "ok",
        Response::Denied => "denied",
        Response::Failed(_) => "failed",
    }
}
