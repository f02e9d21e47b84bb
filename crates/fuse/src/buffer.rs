//! Write buffers: the uncommitted content of one open file.
//!
//! A buffer starts in **stream** mode when the file is new or truncated to zero: every write
//! that lands exactly at the end goes straight into the store's `PayloadWriter`, which hashes
//! and chunks as the bytes arrive. A file written front to back (the common case, and any
//! size) therefore costs about one chunk of memory, and close only has to cut the last chunk.
//!
//! Any other write switches the buffer to **overlay** mode: written ranges are kept in a
//! shadow over the base content, which is the committed leaf or what the stream had staged.
//! The shadow holds each range's bytes on their own in memory, up to `MEM_SHADOW_MAX` bytes
//! written wherever they lie in the file, and beyond that a sparse temp file in the data dir.
//! Reads merge shadow, base and zeros. Commit over a committed chunked leaf is an edit
//! (`Vault::stage_edit`): only the chunks and 16 KiB hash groups the written ranges touch are
//! cut and hashed again. Otherwise it streams the merged content into the store
//! (`Vault::stage_with`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use indras_artifacts::{FILE_SIZE_MAX, Hash, PayloadWriter, StagedLeaf, Vault};

use crate::error::{FsError, FsResult};

/// Shadows holding more written bytes than this spill to a temp file.
pub const MEM_SHADOW_MAX: u64 = 4 << 20;

/// The content a buffer was opened over.
enum Base {
    Empty,
    Leaf(Hash),
    Staged(StagedLeaf),
}

enum Shadow {
    /// The bytes of each written range, under the range's start (the keys of `extents`).
    Mem { pieces: BTreeMap<u64, Vec<u8>>, bytes: u64 },
    /// A sparse file, each written range at its own offset.
    File(File),
}

impl Shadow {
    fn new() -> Self {
        Shadow::Mem { pieces: BTreeMap::new(), bytes: 0 }
    }
}

enum Mode {
    Stream(Box<PayloadWriter>),
    Overlay {
        base: Base,
        /// Bytes of the base still visible (truncation can only shorten it).
        base_len: u64,
        shadow: Shadow,
        /// Written ranges, start -> end, disjoint and not touching.
        extents: BTreeMap<u64, u64>,
    },
}

/// The uncommitted content of one file.
pub struct WriteBuffer {
    mode: Mode,
    size: u64,
    /// Written bytes a memory shadow holds at most (`MEM_SHADOW_MAX`; tests lower it).
    spill_at: u64,
    /// The committed content this buffer started from (`None`: empty): an intent-log
    /// record's base.
    committed: Option<Hash>,
    /// What the intent log has not seen: ranges written since the last `take_unlogged`, and
    /// the smallest size the file was cut to since then.
    unlogged: BTreeMap<u64, u64>,
    cut: Option<u64>,
}

/// A buffer's changes since its last intent-log record (`WriteBuffer::take_unlogged`).
#[derive(Debug)]
pub struct Unlogged {
    pub base: Option<Hash>,
    pub cut: Option<u64>,
    pub size: u64,
    pub ranges: Vec<(u64, Vec<u8>)>,
}

impl std::fmt::Debug for WriteBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            Mode::Stream(_) => "stream",
            Mode::Overlay { .. } => "overlay",
        };
        f.debug_struct("WriteBuffer")
            .field("mode", &mode)
            .field("size", &self.size)
            .field("spill_at", &self.spill_at)
            .field("committed", &self.committed.map(|h| indras_artifacts::hex(&h)))
            .field("unlogged", &self.unlogged)
            .field("cut", &self.cut)
            .finish()
    }
}

impl WriteBuffer {
    /// A buffer over committed content `base` of `size` bytes (`None` or size 0: empty).
    pub fn new(vault: &Vault, base: Option<Hash>, size: u64) -> Self {
        let (mode, size, committed) = match base {
            Some(h) if size > 0 => (
                Mode::Overlay {
                    base: Base::Leaf(h),
                    base_len: size,
                    shadow: Shadow::new(),
                    extents: BTreeMap::new(),
                },
                size,
                Some(h),
            ),
            _ => (Mode::Stream(Box::new(vault.payload_writer())), 0, None),
        };
        WriteBuffer {
            mode,
            size,
            spill_at: MEM_SHADOW_MAX,
            committed,
            unlogged: BTreeMap::new(),
            cut: None,
        }
    }

    /// Written bytes this buffer holds in memory: a memory shadow's (a stream holds at most
    /// the chunk it is cutting; a spilled shadow's bytes are on disk).
    pub fn bytes_in_memory(&self) -> u64 {
        match &self.mode {
            Mode::Overlay { shadow: Shadow::Mem { bytes, .. }, .. } => *bytes,
            _ => 0,
        }
    }

    /// What an intent-log record of the changes since the last `take_unlogged` would hold:
    /// the bytes written, and 12 bytes to frame each range.
    pub fn unlogged_cost(&self) -> u64 {
        self.unlogged.iter().map(|(s, e)| e - s + 12).sum()
    }

    /// The changes since the last call, with their bytes, for an intent-log record; from
    /// then on only later changes count.
    pub fn take_unlogged(&mut self, vault: &Vault) -> FsResult<Unlogged> {
        let mut ranges = Vec::with_capacity(self.unlogged.len());
        for (&start, &end) in &self.unlogged {
            let len = usize::try_from(end - start).map_err(|_| FsError::errno(libc::EFBIG))?;
            let bytes = self.read(vault, start, len)?;
            if !bytes.is_empty() {
                ranges.push((start, bytes));
            }
        }
        self.unlogged.clear();
        Ok(Unlogged { base: self.committed, cut: self.cut.take(), size: self.size, ranges })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Leaves stream mode, keeping what was streamed as the base.
    fn make_overlay(&mut self) -> FsResult<()> {
        if let Mode::Stream(_) = self.mode {
            let Mode::Stream(writer) = std::mem::replace(
                &mut self.mode,
                Mode::Overlay {
                    base: Base::Empty,
                    base_len: 0,
                    shadow: Shadow::new(),
                    extents: BTreeMap::new(),
                },
            ) else {
                unreachable!("checked above")
            };
            let staged = writer.finish()?;
            let base_len = staged.size;
            if let Mode::Overlay { base, base_len: bl, .. } = &mut self.mode {
                *base = Base::Staged(staged);
                *bl = base_len;
            }
        }
        Ok(())
    }

    /// Writes `data` at `offset`; returns how many bytes were written. A write that crosses
    /// `FILE_SIZE_MAX` is cut short there, as POSIX has it; one that starts beyond fails with
    /// `EFBIG`.
    pub fn write(&mut self, tmp_dir: &Path, offset: u64, data: &[u8]) -> FsResult<usize> {
        if data.is_empty() {
            // POSIX: a zero-length write changes nothing, not even the size.
            return Ok(0);
        }
        if offset >= FILE_SIZE_MAX {
            return Err(FsError::errno(libc::EFBIG));
        }
        let room = usize::try_from(FILE_SIZE_MAX - offset).unwrap_or(usize::MAX);
        let data = &data[..data.len().min(room)];
        let end = offset + data.len() as u64;
        if let Mode::Stream(w) = &mut self.mode
            && offset == self.size
        {
            w.write_all(data)?;
            self.size = end;
            insert_extent(&mut self.unlogged, offset, end);
            return Ok(data.len());
        }
        self.make_overlay()?;
        let Mode::Overlay { shadow, extents, .. } = &mut self.mode else { unreachable!() };
        if let Shadow::Mem { pieces, bytes } = shadow
            && *bytes + data.len() as u64 > self.spill_at
        {
            let f = tempfile::tempfile_in(tmp_dir)?;
            for (at, piece) in pieces.iter() {
                f.write_all_at(piece, *at)?;
            }
            *shadow = Shadow::File(f);
        }
        // The bytes first: a write the disk refuses leaves the extents as they were.
        if let Shadow::File(f) = shadow {
            f.write_all_at(data, offset)?;
        }
        let (start, absorbed) = insert_extent(extents, offset, end);
        match shadow {
            Shadow::Mem { pieces, bytes } => {
                // The merged range's bytes: the piece it starts with grows in place (so a run
                // of writes each at the end of the last costs no copying), the others it
                // absorbed are copied in, and the new data goes over them.
                let len = |n: u64| usize::try_from(n).map_err(|_| FsError::errno(libc::EFBIG));
                let mut merged = match absorbed.first() {
                    Some(&s) if s == start => pieces.remove(&s).unwrap_or_default(),
                    _ => Vec::new(),
                };
                let before = merged.len() as u64;
                for s in absorbed.iter().filter(|&&s| s != start) {
                    let piece = pieces.remove(s).unwrap_or_default();
                    let at = len(s - start)?;
                    let need = at + piece.len();
                    if merged.len() < need {
                        merged.resize(need, 0);
                    }
                    merged[at..need].copy_from_slice(&piece);
                    *bytes -= piece.len() as u64;
                }
                let (at, need) = (len(offset - start)?, len(end - start)?);
                if merged.len() < need {
                    merged.resize(need, 0);
                }
                merged[at..need].copy_from_slice(data);
                *bytes = *bytes - before + merged.len() as u64;
                pieces.insert(start, merged);
            }
            Shadow::File(_) => {}
        }
        self.size = self.size.max(end);
        insert_extent(&mut self.unlogged, offset, end);
        Ok(data.len())
    }

    /// Cuts or extends (with zeros) to `size`; `EFBIG` beyond `FILE_SIZE_MAX`.
    pub fn truncate(&mut self, vault: &Vault, size: u64) -> FsResult<()> {
        if size == self.size {
            return Ok(());
        }
        if size > FILE_SIZE_MAX {
            return Err(FsError::errno(libc::EFBIG));
        }
        if size < self.size {
            self.cut = Some(self.cut.map_or(size, |c| c.min(size)));
            cut_extents(&mut self.unlogged, size);
        }
        if size == 0 {
            self.mode = Mode::Stream(Box::new(vault.payload_writer()));
            self.size = 0;
            return Ok(());
        }
        self.make_overlay()?;
        let Mode::Overlay { base_len, shadow, extents, .. } = &mut self.mode else {
            unreachable!()
        };
        if size < self.size {
            *base_len = (*base_len).min(size);
            cut_extents(extents, size);
            match shadow {
                Shadow::Mem { pieces, bytes } => {
                    pieces.retain(|s, _| *s < size);
                    if let Some((s, piece)) = pieces.iter_mut().next_back() {
                        piece.truncate(usize::try_from(size - s).unwrap_or(usize::MAX));
                    }
                    *bytes = pieces.values().map(|p| p.len() as u64).sum();
                }
                Shadow::File(f) => {
                    if f.metadata()?.len() > size {
                        f.set_len(size)?;
                    }
                }
            }
        }
        self.size = size;
        Ok(())
    }

    /// Reads up to `len` bytes at `offset` of the buffered content.
    pub fn read(&self, vault: &Vault, offset: u64, len: usize) -> FsResult<Vec<u8>> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let len = usize::try_from((self.size - offset).min(len as u64)).unwrap_or(len);
        let mut out = vec![0u8; len];
        let n = self.read_into(vault, offset, &mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Reads into `dst` from `offset`, up to the buffer's size; returns the bytes read. Every
    /// byte up to that count is written (ranges past the base read as zeros).
    fn read_into(&self, vault: &Vault, offset: u64, dst: &mut [u8]) -> FsResult<usize> {
        if offset >= self.size {
            return Ok(0);
        }
        let len = usize::try_from((self.size - offset).min(dst.len() as u64)).unwrap_or(dst.len());
        let out = &mut dst[..len];
        match &self.mode {
            Mode::Stream(w) => Ok(w.read_at(offset, out)?),
            Mode::Overlay { base, base_len, shadow, extents } => {
                let end = offset + len as u64;
                let mut pos = offset;
                while pos < end {
                    // The extent covering `pos`, or the next one after it.
                    let covering = extents.range(..=pos).next_back().filter(|(_, e)| **e > pos);
                    let seg_end;
                    let dst = &mut out[(pos - offset) as usize..];
                    if let Some((&s, &e)) = covering {
                        seg_end = e.min(end);
                        let n = (seg_end - pos) as usize;
                        match shadow {
                            Shadow::Mem { pieces, .. } => {
                                let at = (pos - s) as usize;
                                let piece = pieces.get(&s).and_then(|p| p.get(at..at + n));
                                let Some(piece) = piece else {
                                    return Err(FsError::new(
                                        libc::EIO,
                                        "write buffer: a written range has no bytes",
                                    ));
                                };
                                dst[..n].copy_from_slice(piece);
                            }
                            Shadow::File(f) => f.read_exact_at(&mut dst[..n], pos)?,
                        }
                    } else {
                        let next = extents.range(pos..).next().map_or(end, |(s, _)| *s).min(end);
                        seg_end = next;
                        let n = (seg_end - pos) as usize;
                        let from_base = seg_end.min(*base_len).saturating_sub(pos) as usize;
                        if from_base > 0 {
                            read_base(vault, base, pos, &mut dst[..from_base])?;
                        }
                        // Beyond the base: zeros.
                        dst[from_base..n].fill(0);
                    }
                    pos = seg_end;
                }
                Ok(len)
            }
        }
    }

    /// Stores the buffered content and returns it staged, ready to commit. `None` when the
    /// content is the unchanged base.
    pub fn stage(self, vault: &Vault) -> FsResult<Option<StagedLeaf>> {
        match self.mode {
            Mode::Stream(w) => Ok(Some(w.finish()?)),
            Mode::Overlay { ref base, base_len, ref extents, .. } => {
                if extents.is_empty() {
                    let unchanged = match base {
                        Base::Leaf(h) => base_len == self.size && vault.leaf_size(h)? == self.size,
                        Base::Staged(s) => base_len == self.size && s.size == self.size,
                        Base::Empty => self.size == 0,
                    };
                    if unchanged {
                        return Ok(match self.mode {
                            Mode::Overlay { base: Base::Staged(s), .. } => Some(s),
                            _ => None,
                        });
                    }
                }
                let mut read = |offset: u64, buf: &mut [u8]| -> io::Result<()> {
                    let n = self
                        .read_into(vault, offset, buf)
                        .map_err(|e| io::Error::from_raw_os_error(e.errno))?;
                    if n != buf.len() {
                        return Err(io::Error::other("buffer ended before its size"));
                    }
                    Ok(())
                };
                let staged = match base {
                    Base::Leaf(h) => {
                        let written: Vec<(u64, u64)> =
                            extents.iter().map(|(s, e)| (*s, *e)).collect();
                        vault.stage_edit(h, base_len, &written, self.size, &mut read)?
                    }
                    Base::Staged(_) | Base::Empty => vault.stage_with(self.size, &mut read)?,
                };
                Ok(Some(staged))
            }
        }
    }
}

fn read_base(vault: &Vault, base: &Base, offset: u64, dst: &mut [u8]) -> FsResult<()> {
    let mut done = 0;
    while done < dst.len() {
        let n = match base {
            Base::Empty => 0,
            Base::Leaf(h) => vault.read_at(h, offset + done as u64, &mut dst[done..])?,
            Base::Staged(s) => s.read_at(offset + done as u64, &mut dst[done..])?,
        };
        if n == 0 {
            // Shorter than recorded: the rest reads as zeros.
            dst[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

/// Adds [start, end) to a set of disjoint, non-touching extents, merging neighbours. Returns
/// where the merged extent starts and the starts of the extents it absorbed, in order.
fn insert_extent(
    extents: &mut BTreeMap<u64, u64>,
    mut start: u64,
    mut end: u64,
) -> (u64, Vec<u64>) {
    if let Some((&s, &e)) = extents.range(..=start).next_back()
        && e >= start
    {
        start = s;
        end = end.max(e);
    }
    let overlapping: Vec<u64> = extents.range(start..=end).map(|(s, _)| *s).collect();
    for s in &overlapping {
        if let Some(e) = extents.remove(s) {
            end = end.max(e);
        }
    }
    extents.insert(start, end);
    (start, overlapping)
}

/// Drops everything at or beyond `size`.
fn cut_extents(extents: &mut BTreeMap<u64, u64>, size: u64) {
    let beyond: Vec<u64> = extents.range(size..).map(|(s, _)| *s).collect();
    for s in beyond {
        extents.remove(&s);
    }
    if let Some((_, e)) = extents.range_mut(..size).next_back()
        && *e > size
    {
        *e = size;
    }
}

impl From<io::ErrorKind> for FsError {
    fn from(k: io::ErrorKind) -> Self {
        FsError::from(io::Error::from(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indras_artifacts::{Commit, NewNode, NodeId, Options, Timestamp};
    use proptest::prelude::*;

    fn vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path(), "t", &Options::default()).unwrap();
        (dir, v)
    }

    fn content(v: &Vault, b: WriteBuffer) -> Vec<u8> {
        let size = b.size();
        let all = b.read(v, 0, size as usize + 10).unwrap();
        assert_eq!(all.len() as u64, size);
        let staged = b.stage(v).unwrap().expect("changed");
        assert_eq!(staged.size, size);
        let node = v
            .create(
                NodeId::ROOT,
                b"f",
                &NewNode::file(0o644),
                Some(staged),
                Timestamp::now(),
                Commit::CrashConsistent,
            )
            .unwrap();
        let committed = v.read_all(&node.content.unwrap()).unwrap();
        assert!(committed == all, "committed content differs from what reads returned");
        v.remove(NodeId::ROOT, b"f", false, Timestamp::now(), Commit::CrashConsistent).unwrap();
        committed
    }

    #[test]
    fn extents_merge_and_cut() {
        let mut e = BTreeMap::new();
        insert_extent(&mut e, 10, 20);
        insert_extent(&mut e, 30, 40);
        insert_extent(&mut e, 20, 30);
        assert_eq!(e.into_iter().collect::<Vec<_>>(), vec![(10, 40)]);
        let mut e = BTreeMap::from([(0, 5), (10, 20), (30, 40)]);
        cut_extents(&mut e, 15);
        assert_eq!(e.into_iter().collect::<Vec<_>>(), vec![(0, 5), (10, 15)]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Truncate(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..600_000, 1usize..70_000, any::<u8>())
                .prop_map(|(o, n, b)| Op::Write(o, vec![b; n])),
            1 => (0u64..700_000).prop_map(Op::Truncate),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        /// The buffer reads and commits exactly what a plain Vec model holds.
        #[test]
        fn buffer_matches_a_vec(
            initial in 0usize..300_000,
            ops in proptest::collection::vec(op(), 1..12),
            spill_at in prop_oneof![Just(0), 1..300_000u64, Just(MEM_SHADOW_MAX)],
        ) {
            let (dir, v) = vault();
            let base: Vec<u8> = (0..initial).map(|i| (i % 251) as u8).collect();
            let staged = v.stage(&base).unwrap();
            let node = v.create(NodeId::ROOT, b"base", &NewNode::file(0o644), Some(staged), Timestamp::now(), Commit::CrashConsistent).unwrap();
            let mut b = WriteBuffer::new(&v, node.content, node.size);
            b.spill_at = spill_at;
            let mut model = base.clone();
            for op in ops {
                match op {
                    Op::Write(o, data) => {
                        b.write(&dir.path().join("tmp"), o, &data).unwrap();
                        let end = o as usize + data.len();
                        if model.len() < end { model.resize(end, 0); }
                        model[o as usize..end].copy_from_slice(&data);
                    }
                    Op::Truncate(n) => {
                        b.truncate(&v, n).unwrap();
                        model.resize(n as usize, 0);
                    }
                }
                prop_assert_eq!(b.size(), model.len() as u64);
            }
            let got = content(&v, b);
            prop_assert!(got == model);
        }
    }

    #[test]
    fn sequential_writes_stream_and_switch_when_needed() {
        let (dir, v) = vault();
        let tmp = dir.path().join("tmp");
        let mut b = WriteBuffer::new(&v, None, 0);
        let block: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        for i in 0..10u64 {
            b.write(&tmp, i * 100_000, &block).unwrap();
        }
        assert!(matches!(b.mode, Mode::Stream(_)));
        assert_eq!(b.read(&v, 150_000, 10).unwrap(), block[50_000..50_010].to_vec());
        b.write(&tmp, 5, b"xyz").unwrap();
        assert!(matches!(b.mode, Mode::Overlay { .. }));
        let mut want: Vec<u8> = block.repeat(10);
        want[5..8].copy_from_slice(b"xyz");
        assert!(content(&v, b) == want);
    }

    #[test]
    fn the_size_limit_cuts_writes_short_and_refuses_beyond() {
        let (dir, v) = vault();
        let tmp = dir.path().join("tmp");
        let mut b = WriteBuffer::new(&v, None, 0);
        b.write(&tmp, 0, b"head").unwrap();
        let efbig = |r: FsResult<()>| r.map_err(|e| e.errno) == Err(libc::EFBIG);
        assert!(efbig(b.truncate(&v, FILE_SIZE_MAX + 1)));
        assert!(efbig(b.write(&tmp, FILE_SIZE_MAX, b"x").map(drop)));
        assert!(efbig(b.write(&tmp, u64::MAX, b"x").map(drop)));
        assert_eq!(b.size(), 4, "a refused write or truncate changes nothing");
        assert_eq!(b.write(&tmp, FILE_SIZE_MAX - 3, b"abcdef").unwrap(), 3);
        assert_eq!(b.size(), FILE_SIZE_MAX);
        assert_eq!(b.read(&v, FILE_SIZE_MAX - 4, 10).unwrap(), b"\0abc".to_vec());
        b.truncate(&v, 4).unwrap();
        assert!(content(&v, b) == b"head");
    }
}
