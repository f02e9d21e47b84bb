//! `Payloads`: staging new payloads and reading stored ones.
//!
//! Every byte handed out comes from a verified source: inline bytes are checked against the
//! leaf id, chunk bytes against the chunk id (`ChunkStore::read`), and a record that disagrees
//! with the bytes it names is an error (`Integrity` or `CorruptRecord`), never a short or
//! wrong read, and never a panic.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::{Error, Result};
use crate::payload::chunks::{ChunkReadError, ChunkStore};
use crate::payload::layout::{self, LeafIndex, TreeCache, decode_segment};
use crate::payload::writer::{PayloadWriter, StagedBody, StagedLeaf, zero_chunk};
use crate::store::meta::{Meta, W};
use crate::types::{ArtifactId, Hash, hex};

/// The payload side of a vault: the chunk packs, the hash trees of recent large payloads,
/// and the chunk lists of recently read leaves. Metadata is read through `meta`; nothing here
/// commits.
pub(crate) struct Payloads {
    pub(crate) meta: Arc<Meta>,
    pub(crate) chunks: Arc<ChunkStore>,
    /// Hash trees of recent large payloads, for edits that rehash only what changed.
    pub(crate) trees: Arc<TreeCache>,
    /// Chunk lists of recently read leaves.
    indexes: Mutex<VecDeque<(Hash, Arc<LeafIndex>)>>,
}

impl std::fmt::Debug for Payloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payloads").finish_non_exhaustive()
    }
}

impl Payloads {
    pub(crate) fn new(meta: Arc<Meta>, chunks: Arc<ChunkStore>) -> Payloads {
        Payloads { meta, chunks, trees: Arc::default(), indexes: Mutex::default() }
    }

    fn read_fs<R>(&self, f: impl FnOnce(&mut W) -> Result<R>) -> Result<R> {
        self.meta.read(f)
    }

    pub(crate) fn tmp_dir(&self) -> &std::path::Path {
        self.chunks.tmp_dir()
    }
}

impl Payloads {
    /// A streaming writer for a new payload. Commit the result with `set_content`,
    /// `create` or `place_staged`.
    pub fn payload_writer(&self) -> PayloadWriter {
        PayloadWriter::new(self.chunks.clone(), self.trees.clone())
    }

    /// Stores a payload held in memory.
    pub fn stage(&self, bytes: &[u8]) -> Result<StagedLeaf> {
        let mut w = self.payload_writer();
        io::Write::write_all(&mut w, bytes).map_err(|e| Error::io(self.tmp_dir(), e))?;
        w.finish().map_err(|e| Error::io(self.chunks.pack_dir(), e))
    }

    /// Stores a payload of `size` bytes that `read(offset, buf)` provides (filling `buf`
    /// exactly), streamed in 1 MiB pieces.
    pub fn stage_with(
        &self,
        size: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> Result<StagedLeaf> {
        const PIECE: u64 = 1 << 20;
        let mut w = self.payload_writer();
        let mut buf = vec![0u8; usize::try_from(size.min(PIECE)).unwrap_or(0)];
        let mut pos = 0u64;
        while pos < size {
            let piece = &mut buf[..usize::try_from((size - pos).min(PIECE)).unwrap_or(0)];
            read(pos, piece).map_err(|e| Error::io(self.tmp_dir(), e))?;
            io::Write::write_all(&mut w, piece).map_err(|e| Error::io(self.tmp_dir(), e))?;
            pos += piece.len() as u64;
        }
        w.finish().map_err(|e| Error::io(self.chunks.pack_dir(), e))
    }

    /// Size of a stored leaf.
    pub fn leaf_size(&self, leaf: &Hash) -> Result<u64> {
        self.read_fs(|r| r.leaf_size(leaf))
    }

    /// Reads up to `buf.len()` bytes of a leaf at `offset`; returns how many were read
    /// (fewer only at the end). Every byte comes from a verified chunk.
    pub fn read_at(&self, leaf: &Hash, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        self.read_pieces(leaf, offset, buf.len(), &mut |piece| {
            buf[done..done + piece.len()].copy_from_slice(piece);
            done += piece.len();
        })
    }

    /// Up to `len` bytes of a leaf at `offset` (fewer only at the end), in a new buffer that
    /// is filled straight from the chunks, not zeroed first. Every byte comes from a verified
    /// chunk.
    pub fn read_vec(&self, leaf: &Hash, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        self.read_pieces(leaf, offset, len, &mut |piece| out.extend_from_slice(piece))?;
        Ok(out)
    }

    /// Hands the bytes of a leaf from `offset` to `put`, in order, piece by piece, up to `len`
    /// bytes or the end; returns how many.
    fn read_pieces(
        &self,
        leaf: &Hash,
        offset: u64,
        len: usize,
        put: &mut dyn FnMut(&[u8]),
    ) -> Result<usize> {
        /// What the metadata read found: inline bytes are handed out in the read itself.
        enum Found {
            Read(usize),
            Chunked(u64),
        }
        let found = self.read_fs(|r| {
            let rec = r.leaf(leaf)?;
            if offset >= rec.size || len == 0 {
                return Ok(Found::Read(0));
            }
            if !rec.inline {
                return Ok(Found::Chunked(rec.size));
            }
            let want = usize::try_from((rec.size - offset).min(len as u64)).unwrap_or(len);
            let Some(v) = r.inline()?.get(leaf)? else {
                return Err(Error::MissingChunk { leaf: ArtifactId::Blob(*leaf), chunk: *leaf });
            };
            let bytes = v.value();
            if blake3::hash(bytes).as_bytes() != leaf {
                return Err(Error::Integrity { leaf: ArtifactId::Blob(*leaf), chunk: *leaf });
            }
            // The bytes are the leaf's (their hash is its id); a record that says otherwise
            // about their length is what is corrupt.
            if bytes.len() as u64 != rec.size {
                return Err(Error::CorruptRecord(
                    "leaf",
                    format!("{} records {} bytes, holds {}", hex(leaf), rec.size, bytes.len()),
                ));
            }
            let start = offset as usize;
            put(&bytes[start..start + want]);
            Ok(Found::Read(want))
        })?;
        let size = match found {
            Found::Chunked(size) => size,
            Found::Read(n) => return Ok(n),
        };
        let want = usize::try_from((size - offset).min(len as u64)).unwrap_or(len);
        let index = self.leaf_index(leaf)?;
        if index.size != size {
            return Err(Error::CorruptRecord(
                "leaf segments",
                format!("chunks cover {} bytes of {size}", index.size),
            ));
        }
        let mut done = 0usize;
        let mut i = index.chunk_at(offset);
        while done < want && i < index.chunks.len() {
            let (chunk, chunk_len) = &index.chunks[i];
            let data = self.read_chunk(leaf, chunk, *chunk_len)?;
            let in_chunk = (offset + done as u64 - index.offsets[i]) as usize;
            let n = (data.len() - in_chunk).min(want - done);
            put(&data[in_chunk..in_chunk + n]);
            done += n;
            i += 1;
        }
        Ok(done)
    }

    /// Where the next data (`data`) or hole at or after `offset` begins in a leaf, as
    /// `lseek(SEEK_DATA / SEEK_HOLE)` asks; `None` when `offset` is at or past the end, or,
    /// for data, when only holes follow. A hole is a run of zero chunks: a run of zeros as
    /// long as the chunker cuts it (`zero_chunk`), which is how sparse regions are stored,
    /// so a hole is found without reading a byte. The end of the leaf is a hole too.
    pub fn seek_data_or_hole(&self, leaf: &Hash, offset: u64, data: bool) -> Result<Option<u64>> {
        let size = self.leaf_size(leaf)?;
        if offset >= size {
            return Ok(None);
        }
        let inline = self.read_fs(|r| Ok(r.leaf(leaf)?.inline))?;
        if inline {
            return Ok(Some(if data { offset } else { size }));
        }
        let idx = self.leaf_index(leaf)?;
        let (zero_len, zero_id) = zero_chunk();
        let hole = |i: usize| {
            let (id, len) = idx.chunks[i];
            id == zero_id && len as usize == zero_len
        };
        let first = idx.chunk_at(offset);
        if hole(first) != data {
            return Ok(Some(offset));
        }
        Ok(match (first + 1..idx.chunks.len()).find(|&i| hole(i) != data) {
            Some(i) => Some(idx.offsets[i]),
            None if data => None,
            None => Some(size),
        })
    }

    /// The whole chunk list of a chunked leaf, from its segments (cached).
    pub(crate) fn leaf_index(&self, leaf: &Hash) -> Result<Arc<LeafIndex>> {
        let cache = self.indexes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, idx)) = cache.iter().find(|(h, _)| h == leaf) {
            return Ok(idx.clone());
        }
        drop(cache);
        let parts = self.read_fs(|r| {
            let Some(list) = r.leaf_segments()?.get(leaf)? else {
                return Err(Error::CorruptRecord(
                    "leaf segments",
                    format!("none for {}", hex(leaf)),
                ));
            };
            let list = list.value().to_vec();
            let runs = |id: &Hash| Ok(r.segment_runs()?.get(id)?.map(|v| v.value().to_vec()));
            let mut parts = Vec::new();
            for seg in layout::resolve_leaf_list(&list, runs)? {
                let Some(bytes) = r.segments()?.get(&seg.id)? else {
                    return Err(Error::CorruptRecord(
                        "segment",
                        format!("{} missing", hex(&seg.id)),
                    ));
                };
                parts.push((seg.id, decode_segment(bytes.value())?));
            }
            Ok(parts)
        })?;
        let idx = Arc::new(LeafIndex::from_segments(parts));
        self.remember_index(*leaf, idx.clone());
        Ok(idx)
    }

    fn remember_index(&self, leaf: Hash, idx: Arc<LeafIndex>) {
        const CACHED: usize = 16;
        let mut cache = self.indexes.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|(h, _)| *h != leaf);
        if cache.len() >= CACHED {
            cache.pop_front();
        }
        cache.push_back((leaf, idx));
    }

    /// A staged leaf's metadata has committed: its chunks are safe from GC from now on, and
    /// its chunk list is the likeliest to be read or edited next.
    pub(crate) fn committed(&self, staged: &StagedLeaf) {
        staged.mark_committed();
        if let StagedBody::Chunked { index, .. } = &staged.body {
            self.remember_index(staged.hash, index.clone());
        }
    }

    pub(crate) fn forget_index(&self, leaf: &Hash) {
        self.indexes.lock().unwrap_or_else(PoisonError::into_inner).retain(|(h, _)| h != leaf);
    }

    pub(crate) fn read_chunk(&self, leaf: &Hash, chunk: &Hash, len: u32) -> Result<Arc<Vec<u8>>> {
        self.chunks.read(chunk, len).map_err(|e| match e {
            ChunkReadError::Missing => {
                Error::MissingChunk { leaf: ArtifactId::Blob(*leaf), chunk: *chunk }
            }
            ChunkReadError::Corrupt => {
                Error::Integrity { leaf: ArtifactId::Blob(*leaf), chunk: *chunk }
            }
            ChunkReadError::Io(path, e) => Error::io(path, e),
        })
    }

    /// A streaming reader over a leaf's content.
    pub fn leaf_reader(&self, leaf: &Hash) -> Result<LeafReader<'_>> {
        let size = self.leaf_size(leaf)?;
        Ok(LeafReader { payloads: self, leaf: *leaf, pos: 0, size })
    }

    /// Reads a whole leaf into memory (for small payloads and tests).
    pub fn read_all(&self, leaf: &Hash) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut r = self.leaf_reader(leaf)?;
        r.read_to_end(&mut out).map_err(|e| match e.downcast::<Error>() {
            Ok(inner) => inner,
            Err(e) => Error::io(self.tmp_dir(), e),
        })?;
        Ok(out)
    }
}

/// A `Read` over a leaf's content. Errors from the store are wrapped in `io::Error` and can
/// be recovered with `io::Error::downcast::<Error>`.
#[derive(Debug)]
pub struct LeafReader<'v> {
    payloads: &'v Payloads,
    leaf: Hash,
    pos: u64,
    size: u64,
}

impl LeafReader<'_> {
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Read for LeafReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size {
            return Ok(0);
        }
        let n = self.payloads.read_at(&self.leaf, self.pos, buf).map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}
