//! How a chunked leaf is laid out, and the hash tree that lets an edit rehash only what changed.
//!
//! # Segments
//! A chunked leaf's chunk list is cut into *segments*: runs of chunks that end after a chunk
//! whose hash has its low 5 bits clear (about 32 chunks, 2 MiB, per segment), or after
//! `SEGMENT_MAX` chunks. A segment is stored once, under the BLAKE3 hash of its encoding, and
//! a leaf stores only its list of segments. The cut depends only on chunk hashes, so an edit
//! changes the segments around it and every other segment is shared with the previous version:
//! a 4 KiB overwrite of a 1 GiB file writes one segment and a short list (see *Runs*), not
//! 13,000 chunk rows.
//!
//! Smaller segments cost a longer list per version; larger ones cost more chunk reference
//! updates per new segment (one per chunk in it). At 128 chunks per segment those updates
//! were a third of a 4 KiB overwrite's commit; at 32, overwrites inside a 1 GiB file went
//! from about 550 to about 680 per second.
//!
//! # Runs
//! A list of more than `RUNS_FROM` segments is cut the same way into runs of about 32
//! segments (by segment id), each stored once; the leaf's row then lists runs. A version of a
//! 1 GiB file writes about 3 KiB of list and segments instead of 18 KiB.
//!
//! # Hash tree
//! BLAKE3 is a tree hash. `HashTree` keeps the chaining values of a leaf's 16 KiB groups
//! (`GROUP`) and of every parent above them, so after an edit only the changed groups are
//! rehashed and only their paths to the root are merged again. The root is the leaf id, equal
//! to `blake3::hash` of the whole content. Trees live in memory (`TreeCache`), built as a
//! payload streams in and handed from one version of a file to the next.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::{Mutex, MutexGuard, PoisonError};

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

use crate::error::{Error, Result};
use crate::types::{Hash, hex};

/// The most chunks in one segment.
pub const SEGMENT_MAX: usize = 1024;
/// A segment ends after a chunk whose hash has these bits clear.
const SEGMENT_MASK: u8 = 0x1f;
/// Bytes of one encoded chunk entry: hash, then length (u32 LE).
const CHUNK_ENTRY: usize = 36;
/// Bytes of one encoded segment reference: segment id, then its byte length (u64 LE).
const SEGMENT_ENTRY: usize = 40;

/// The ranges of `chunks` that form segments.
pub(crate) fn split_segments(chunks: &[(Hash, u32)]) -> Vec<Range<usize>> {
    split_by_content(chunks.iter().map(|c| &c.0), SEGMENT_MASK, SEGMENT_MAX)
}

/// Cuts a list after each item whose id has the `mask` bits of its first byte clear, or once a
/// run reaches `max` items: the ranges, in order, covering every item.
fn split_by_content<'a>(
    ids: impl ExactSizeIterator<Item = &'a Hash>,
    mask: u8,
    max: usize,
) -> Vec<Range<usize>> {
    let len = ids.len();
    let mut out = Vec::new();
    let mut start = 0;
    for (i, id) in ids.enumerate() {
        if id[0] & mask == 0 || i + 1 - start == max {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < len {
        out.push(start..len);
    }
    out
}

pub(crate) fn encode_segment(chunks: &[(Hash, u32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunks.len() * CHUNK_ENTRY);
    for (hash, len) in chunks {
        out.extend_from_slice(hash);
        out.extend_from_slice(&len.to_le_bytes());
    }
    out
}

pub(crate) fn decode_segment(bytes: &[u8]) -> Result<Vec<(Hash, u32)>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(CHUNK_ENTRY) {
        return Err(Error::CorruptRecord("segment", format!("{} bytes", bytes.len())));
    }
    Ok(bytes
        .chunks_exact(CHUNK_ENTRY)
        .map(|e| {
            let (h, l) = e.split_at(32);
            (h.try_into().expect("32 bytes"), u32::from_le_bytes(l.try_into().expect("4 bytes")))
        })
        .collect())
}

/// A leaf's reference to one segment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct SegmentRef {
    pub id: Hash,
    /// Bytes of content the segment covers.
    pub bytes: u64,
}

pub(crate) fn encode_segment_list(list: &[SegmentRef]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len() * SEGMENT_ENTRY);
    for s in list {
        out.extend_from_slice(&s.id);
        out.extend_from_slice(&s.bytes.to_le_bytes());
    }
    out
}

pub(crate) fn decode_segment_list(bytes: &[u8]) -> Result<Vec<SegmentRef>> {
    if !bytes.len().is_multiple_of(SEGMENT_ENTRY) {
        return Err(Error::CorruptRecord("segment list", format!("{} bytes", bytes.len())));
    }
    Ok(bytes
        .chunks_exact(SEGMENT_ENTRY)
        .map(|e| {
            let (h, b) = e.split_at(32);
            SegmentRef {
                id: h.try_into().expect("32 bytes"),
                bytes: u64::from_le_bytes(b.try_into().expect("8 bytes")),
            }
        })
        .collect())
}

/// A segment list longer than this is stored as runs (`encode_leaf_list`).
const RUNS_FROM: usize = 32;
/// A run ends after a segment whose id has these bits clear (about 32 segments per run).
const RUN_MASK: u8 = 0x1f;
/// The most segments in one run.
const RUN_MAX: usize = 256;
/// The first byte of a list stored as runs. A flat list is a whole number of `SEGMENT_ENTRY`
/// entries, so its length is never one more than a multiple of it.
const RUNS_TAG: u8 = b'R';

/// How a leaf's segment list is stored in its row.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LeafList {
    /// Every segment, in order.
    Flat(Vec<SegmentRef>),
    /// Runs of segments, in order: each a flat list stored once in `SEGMENT_RUNS` under the
    /// BLAKE3 hash of its encoding, with the content bytes it covers.
    Runs(Vec<SegmentRef>),
}

/// The ranges of `list` that form runs. Like segments, runs are cut by content (here, segment
/// ids), so an edit changes the runs around it and shares every other one.
fn split_runs(list: &[SegmentRef]) -> Vec<Range<usize>> {
    split_by_content(list.iter().map(|s| &s.id), RUN_MASK, RUN_MAX)
}

/// The row that stores a leaf's segment list, and the runs it names, as (id, encoding): a
/// flat list for up to `RUNS_FROM` segments, runs beyond. A 4 KiB edit of a 1 GiB leaf
/// (about 450 segments) then writes a row of about 15 run ids and one new run, about 2 KiB,
/// instead of all 450 segment ids, 18 KiB: a fifth less daemon CPU per overwrite.
pub(crate) fn encode_leaf_list(list: &[SegmentRef]) -> (Vec<u8>, Vec<(Hash, Vec<u8>)>) {
    if list.len() <= RUNS_FROM {
        return (encode_segment_list(list), Vec::new());
    }
    let ranges = split_runs(list);
    let mut row = Vec::with_capacity(1 + ranges.len() * SEGMENT_ENTRY);
    row.push(RUNS_TAG);
    let mut runs = Vec::with_capacity(ranges.len());
    for r in ranges {
        let part = &list[r];
        let encoded = encode_segment_list(part);
        let id = *blake3::hash(&encoded).as_bytes();
        row.extend_from_slice(&id);
        row.extend_from_slice(&part.iter().map(|s| s.bytes).sum::<u64>().to_le_bytes());
        runs.push((id, encoded));
    }
    (row, runs)
}

pub(crate) fn decode_leaf_list(bytes: &[u8]) -> Result<LeafList> {
    match bytes.split_first() {
        Some((&RUNS_TAG, runs)) if bytes.len() % SEGMENT_ENTRY == 1 => {
            if runs.is_empty() {
                return Err(Error::CorruptRecord("segment list", "no runs".into()));
            }
            Ok(LeafList::Runs(decode_segment_list(runs)?))
        }
        _ => Ok(LeafList::Flat(decode_segment_list(bytes)?)),
    }
}

/// Every segment of a stored leaf list, reading its runs (if any) with `run`.
pub(crate) fn resolve_leaf_list(
    bytes: &[u8],
    mut run: impl FnMut(&Hash) -> Result<Option<Vec<u8>>>,
) -> Result<Vec<SegmentRef>> {
    let runs = match decode_leaf_list(bytes)? {
        LeafList::Flat(list) => return Ok(list),
        LeafList::Runs(runs) => runs,
    };
    let mut out = Vec::new();
    for r in runs {
        let Some(encoded) = run(&r.id)? else {
            return Err(Error::CorruptRecord("segment run", format!("{} missing", hex(&r.id))));
        };
        let part = decode_segment_list(&encoded)?;
        if part.is_empty() || part.iter().map(|s| s.bytes).sum::<u64>() != r.bytes {
            return Err(Error::CorruptRecord(
                "segment run",
                format!("{} is not {} bytes", hex(&r.id), r.bytes),
            ));
        }
        out.extend(part);
    }
    Ok(out)
}

/// One segment of a leaf: `chunks[range]` of its index, stored under `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub range: Range<usize>,
    pub id: Hash,
    /// The segment is one of the base leaf's (`LeafIndex::base`), reused by an edit.
    pub reused: bool,
}

/// A chunked leaf's whole chunk list, with each chunk's offset and the leaf's segments: what
/// reads, edits and commits use.
#[derive(Clone, Debug)]
pub struct LeafIndex {
    pub(crate) size: u64,
    pub(crate) offsets: Vec<u64>,
    pub(crate) chunks: Vec<(Hash, u32)>,
    pub(crate) segments: Vec<Segment>,
    /// The leaf this one is an edit of, whose segments the `reused` ones are.
    pub(crate) base: Option<Hash>,
}

fn offsets_of(chunks: &[(Hash, u32)]) -> (Vec<u64>, u64) {
    let mut offsets = Vec::with_capacity(chunks.len());
    let mut size = 0u64;
    for (_, len) in chunks {
        offsets.push(size);
        size += u64::from(*len);
    }
    (offsets, size)
}

/// A run of a base leaf's chunks that an edit replaced: `old` (indices into the base's list)
/// became `chunks`.
#[derive(Debug, Default)]
pub(crate) struct Window {
    pub old: Range<usize>,
    pub chunks: Vec<(Hash, u32)>,
}

impl Window {
    /// Ends this window's run of old chunks at `end` and adds it to `windows` unless it
    /// replaced nothing with nothing; it starts again empty.
    pub(crate) fn close(&mut self, end: usize, windows: &mut Vec<Window>) {
        self.old.end = end;
        if !self.old.is_empty() || !self.chunks.is_empty() {
            windows.push(std::mem::take(self));
        }
    }
}

fn segment_id(chunks: &[(Hash, u32)]) -> Hash {
    *blake3::hash(&encode_segment(chunks)).as_bytes()
}

impl LeafIndex {
    /// The index of a new chunk list: its segments are cut and hashed.
    pub(crate) fn new(chunks: Vec<(Hash, u32)>) -> Self {
        let (offsets, size) = offsets_of(&chunks);
        let segments = split_segments(&chunks)
            .into_iter()
            .map(|range| Segment { id: segment_id(&chunks[range.clone()]), range, reused: false })
            .collect();
        LeafIndex { size, offsets, chunks, segments, base: None }
    }

    /// The index of an edit of this leaf, whose id is `base`: each window's run of chunks is
    /// replaced by the window's chunks. Windows are sorted and disjoint, and the chunks between
    /// them are the base's at the same offsets, so every window covers the bytes of the run it
    /// replaces, except one that reaches the end.
    ///
    /// The lists are changed in place (an edit of a 1 GiB file copies none of its 16,000
    /// entries unless a window changes their count), and only the segments from the one holding
    /// the first window up to the first cut after the last window that is a cut of the base too
    /// are cut and hashed again; the others are the base's (`reused`). The result equals
    /// `LeafIndex::new` of the new chunk list.
    pub(crate) fn splice(mut self, base: Hash, windows: Vec<Window>) -> Self {
        self.base = Some(base);
        let old_len = self.chunks.len();
        let (Some(first), Some(last_end)) =
            (windows.first().map(|w| w.old.start), windows.last().map(|w| w.old.end))
        else {
            for s in &mut self.segments {
                s.reused = true;
            }
            return self;
        };
        // From the back, so that the indices of the windows before stay the base's.
        for w in windows.into_iter().rev() {
            let mut at = self.offsets.get(w.old.start).copied().unwrap_or(self.size);
            let offsets: Vec<u64> = w
                .chunks
                .iter()
                .map(|c| {
                    let o = at;
                    at += u64::from(c.1);
                    o
                })
                .collect();
            debug_assert!(
                w.old.end == old_len || self.offsets[w.old.end] == at,
                "a window inside the list covers the bytes it replaces"
            );
            self.offsets.splice(w.old.clone(), offsets);
            self.chunks.splice(w.old, w.chunks);
        }
        self.size = match (self.offsets.last(), self.chunks.last()) {
            (Some(o), Some(c)) => o + u64::from(c.1),
            _ => 0,
        };
        let new_len = self.chunks.len();
        // Past the last window, new index `i` holds the base's chunk `i + old_len - new_len`.
        let old_of = |i: usize| (i + old_len).checked_sub(new_len);
        let changed_to = last_end + new_len - old_len;
        let old_segments = std::mem::take(&mut self.segments);
        // The first segment a window can change: the one holding chunk `first`, or the last one
        // when `first` is past its end (appended chunks continue an unfinished last segment).
        let k = old_segments
            .partition_point(|s| s.range.end <= first)
            .min(old_segments.len().saturating_sub(1));
        let mut segments: Vec<Segment> =
            old_segments[..k].iter().map(|s| Segment { reused: true, ..s.clone() }).collect();
        let mut start = old_segments.get(k).map_or(0, |s| s.range.start);
        let mut later = k;
        let mut i = start;
        while i < new_len {
            if self.chunks[i].0[0] & SEGMENT_MASK == 0 || i + 1 - start == SEGMENT_MAX {
                let range = start..i + 1;
                segments.push(Segment {
                    id: segment_id(&self.chunks[range.clone()]),
                    range,
                    reused: false,
                });
                start = i + 1;
                // Past the last window, a cut that is a cut of the base too: from here on the
                // segments are the base's, moved by the change in length.
                if start >= changed_to
                    && let Some(at) = old_of(start)
                {
                    later += old_segments[later..].partition_point(|s| s.range.start < at);
                    if old_segments.get(later).is_some_and(|s| s.range.start == at) {
                        segments.extend(old_segments[later..].iter().map(|s| Segment {
                            range: s.range.start - at + start..s.range.end - at + start,
                            id: s.id,
                            reused: true,
                        }));
                        start = new_len;
                        break;
                    }
                }
            }
            i += 1;
        }
        if start < new_len {
            let range = start..new_len;
            segments.push(Segment {
                id: segment_id(&self.chunks[range.clone()]),
                range,
                reused: false,
            });
        }
        self.segments = segments;
        self
    }

    /// The index of a stored leaf, from its segments as stored.
    pub(crate) fn from_segments(parts: Vec<(Hash, Vec<(Hash, u32)>)>) -> Self {
        let mut chunks = Vec::new();
        let mut segments = Vec::with_capacity(parts.len());
        for (id, list) in parts {
            let start = chunks.len();
            chunks.extend(list);
            segments.push(Segment { range: start..chunks.len(), id, reused: false });
        }
        let (offsets, size) = offsets_of(&chunks);
        LeafIndex { size, offsets, chunks, segments, base: None }
    }

    /// The index of the chunk holding byte `offset` (`offset < size`).
    pub(crate) fn chunk_at(&self, offset: u64) -> usize {
        self.offsets.partition_point(|&o| o <= offset).saturating_sub(1)
    }
}

/// The id of the empty payload (`blake3::hash(b"")`). Every empty file shares it, so it is
/// pinned: never counted, never collected (counting it would add two table writes to every
/// file creation).
pub(crate) const EMPTY_LEAF: Hash = [
    0xaf, 0x13, 0x49, 0xb9, 0xf5, 0xf9, 0xa1, 0xa6, 0xa0, 0x40, 0x4d, 0xea, 0x36, 0xdc, 0xc9, 0x49,
    0x9b, 0xcb, 0x25, 0xc9, 0xad, 0xc1, 0x12, 0xb7, 0xcc, 0x9a, 0x93, 0xca, 0xe4, 0x1f, 0x32, 0x62,
];

/// Bytes of content under one leaf of the hash tree: 16 BLAKE3 chunks, one batch of the
/// widest SIMD hashing. Smaller groups cost tree memory (4 MiB per GiB of payload, with the
/// parents); an edit rehashes whole groups, and a 16 KiB group around a small write mostly
/// lies inside the one chunk the edit reads anyway, where a 64 KiB group usually reached into
/// a neighbour that then had to be read and verified too.
pub const GROUP: u64 = 16 * 1024;

/// The chaining value of group `index` of a payload, whose bytes are `data`.
pub(crate) fn group_cv(index: u64, data: &[u8]) -> ChainingValue {
    blake3::Hasher::new().set_input_offset(index * GROUP).update(data).finalize_non_root()
}

/// The BLAKE3 tree of a payload of more than one `GROUP`: the chaining value of every group
/// (level 0) and of every parent above, up to the two children of the root.
///
/// BLAKE3's tree is left-balanced: a left subtree always holds a power of two of chunks. A
/// group is a power of two of chunks, so pairing neighbours level by level, and passing an
/// odd one out up unchanged, builds exactly BLAKE3's tree.
#[derive(Clone, Debug)]
pub struct HashTree {
    size: u64,
    levels: Vec<Vec<ChainingValue>>,
}

impl HashTree {
    /// Number of groups in a payload of `size` bytes.
    pub fn groups(size: u64) -> u64 {
        size.div_ceil(GROUP)
    }

    fn rebuild_parents(&mut self) {
        self.levels.truncate(1);
        while self.levels.last().map_or(0, Vec::len) > 2 {
            let below = self.levels.last().expect("non-empty");
            let above: Vec<ChainingValue> = below
                .chunks(2)
                .map(|p| match p {
                    [l, r] => merge_subtrees_non_root(l, r, Mode::Hash),
                    [only] => *only,
                    _ => unreachable!("chunks(2)"),
                })
                .collect();
            self.levels.push(above);
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash: the payload's BLAKE3 hash.
    pub fn root(&self) -> Hash {
        let top = self.levels.last().expect("at least level 0");
        *merge_subtrees_root(&top[0], &top[1], Mode::Hash).as_bytes()
    }

    /// Memory the tree holds, for the cache's budget.
    fn bytes(&self) -> usize {
        self.levels.iter().map(|l| l.len() * 32).sum::<usize>() + 64
    }

    /// Moves the tree to a payload of `size` bytes (at least two groups), replacing the
    /// chaining values of the groups in `changed`. Every group whose bytes differ from the
    /// old payload's, and every group past the old end, must be in `changed`.
    pub(crate) fn update(&mut self, size: u64, changed: &[(u64, ChainingValue)]) {
        let n = usize::try_from(Self::groups(size)).unwrap_or(usize::MAX);
        let reshaped = n != self.levels[0].len();
        self.size = size;
        self.levels[0].resize(n, [0; 32]);
        for (i, cv) in changed {
            if let Some(slot) = usize::try_from(*i).ok().and_then(|i| self.levels[0].get_mut(i)) {
                *slot = *cv;
            }
        }
        if reshaped {
            self.rebuild_parents();
            return;
        }
        for (i, _) in changed {
            let mut idx = usize::try_from(*i).unwrap_or(usize::MAX);
            for level in 1..self.levels.len() {
                let (below, above) = self.levels.split_at_mut(level);
                let below = &below[level - 1];
                let pair = idx & !1;
                let cv = match (below.get(pair), below.get(pair + 1)) {
                    (Some(l), Some(r)) => merge_subtrees_non_root(l, r, Mode::Hash),
                    (Some(only), None) => *only,
                    _ => break,
                };
                idx /= 2;
                above[0][idx] = cv;
            }
        }
    }
}

/// Builds a `HashTree` while the groups' chaining values arrive: each pair is merged as soon
/// as it is complete, so finishing costs only the merges along the tree's right edge, not one
/// per group (65,536 for a GiB) in the `close` that ends the payload.
#[derive(Debug, Default)]
pub(crate) struct TreeBuilder {
    levels: Vec<Vec<ChainingValue>>,
}

impl TreeBuilder {
    /// Appends the chaining value of the next group.
    pub(crate) fn push(&mut self, cv: ChainingValue) {
        self.push_at(0, cv);
    }

    /// Appends `cv` to `level`, merging up every pair it completes.
    fn push_at(&mut self, mut level: usize, mut cv: ChainingValue) {
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(cv);
            if row.len() % 2 == 1 {
                return;
            }
            cv = merge_subtrees_non_root(&row[row.len() - 2], &row[row.len() - 1], Mode::Hash);
            level += 1;
        }
    }

    /// Groups pushed so far.
    pub(crate) fn len(&self) -> usize {
        self.levels.first().map_or(0, Vec::len)
    }

    /// The tree of a `size`-byte payload: what `HashTree::rebuild_parents` builds over the
    /// same chaining values (an odd one out passes up unchanged, and the levels stop at the
    /// first with at most two nodes). `None` below two groups or when `size` disagrees.
    pub(crate) fn finish(mut self, size: u64) -> Option<HashTree> {
        let n = self.len();
        if n < 2 || n as u64 != HashTree::groups(size) {
            return None;
        }
        let mut level = 0;
        while self.levels[level].len() > 2 {
            if let [.., last] = self.levels[level][..]
                && self.levels[level].len() % 2 == 1
            {
                self.push_at(level + 1, last);
            }
            level += 1;
        }
        self.levels.truncate(level + 1);
        Some(HashTree { size, levels: self.levels })
    }
}

/// Hash trees of recent payloads, by payload hash, within a memory budget.
///
/// A tree is *taken* by the edit that starts from its payload and *put* back under the new
/// payload's hash, so a run of edits to one file never copies it.
#[derive(Debug, Default)]
pub(crate) struct TreeCache {
    inner: Mutex<VecDeque<(Hash, HashTree)>>,
}

/// Trees over payloads smaller than this are not kept: rehashing them is cheap.
pub(crate) const TREE_MIN_SIZE: u64 = 1 << 20;
const TREE_CACHE_BYTES: usize = 64 << 20;

impl TreeCache {
    fn lock(&self) -> MutexGuard<'_, VecDeque<(Hash, HashTree)>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn take(&self, hash: &Hash) -> Option<HashTree> {
        let mut inner = self.lock();
        let at = inner.iter().position(|(h, _)| h == hash)?;
        inner.remove(at).map(|(_, t)| t)
    }

    /// Finishes the tree of a `size`-byte payload, keeps it, and returns its root (`None`
    /// below two groups: such a payload has no tree).
    pub(crate) fn root_of(&self, size: u64, tree: TreeBuilder) -> Option<Hash> {
        let tree = tree.finish(size)?;
        let root = tree.root();
        self.put(root, tree);
        Some(root)
    }

    pub(crate) fn put(&self, hash: Hash, tree: HashTree) {
        if tree.size < TREE_MIN_SIZE {
            return;
        }
        let mut inner = self.lock();
        inner.retain(|(h, _)| *h != hash);
        inner.push_back((hash, tree));
        let mut total: usize = inner.iter().map(|(_, t)| t.bytes()).sum();
        while total > TREE_CACHE_BYTES && inner.len() > 1 {
            if let Some((_, t)) = inner.pop_front() {
                total -= t.bytes();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
    }

    fn tree_of(data: &[u8]) -> Option<HashTree> {
        let mut b = TreeBuilder::default();
        for (i, g) in data.chunks(GROUP as usize).enumerate() {
            b.push(group_cv(i as u64, g));
        }
        b.finish(data.len() as u64)
    }

    /// The builder's incremental merges give exactly the tree built level by level.
    #[test]
    fn the_builder_builds_the_tree_level_by_level_would() {
        for n in 2..300u64 {
            let cvs: Vec<ChainingValue> =
                (0..n).map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes()).collect();
            let size = n * GROUP - 1;
            let mut b = TreeBuilder::default();
            for cv in &cvs {
                b.push(*cv);
            }
            let built = b.finish(size).expect("two groups or more");
            let mut reference = HashTree { size, levels: vec![cvs] };
            reference.rebuild_parents();
            assert_eq!(built.levels, reference.levels, "{n} groups");
        }
        let mut one = TreeBuilder::default();
        one.push([0; 32]);
        assert!(one.finish(GROUP).is_none());
    }

    #[test]
    fn tree_root_is_blake3_at_every_shape() {
        let g = GROUP as usize;
        for len in [g + 1, 2 * g, 2 * g + 7, 3 * g, 5 * g - 1, 8 * g, 9 * g + 100, 17 * g] {
            let data = content(len, 1);
            let tree = tree_of(&data).expect("two groups or more");
            assert_eq!(tree.root(), *blake3::hash(&data).as_bytes(), "len {len}");
        }
        assert!(tree_of(&content(g, 1)).is_none());
    }

    #[test]
    fn updates_match_a_fresh_hash() {
        let g = GROUP as usize;
        let mut data = content(7 * g + 123, 2);
        let mut tree = tree_of(&data).unwrap();
        // An overwrite inside one group.
        data[3 * g + 10..3 * g + 4106].fill(0xaa);
        tree.update(data.len() as u64, &[(3, group_cv(3, &data[3 * g..4 * g]))]);
        assert_eq!(tree.root(), *blake3::hash(&data).as_bytes());
        // Growth by two groups: the old last group and the new ones change.
        data.extend(content(2 * g, 9));
        let changed: Vec<_> = (7..10u64)
            .map(|i| {
                let s = i as usize * g;
                (i, group_cv(i, &data[s..(s + g).min(data.len())]))
            })
            .collect();
        tree.update(data.len() as u64, &changed);
        assert_eq!(tree.root(), *blake3::hash(&data).as_bytes());
        // Shrink to a partial group.
        data.truncate(2 * g + 5);
        tree.update(data.len() as u64, &[(2, group_cv(2, &data[2 * g..]))]);
        assert_eq!(tree.root(), *blake3::hash(&data).as_bytes());
    }

    #[test]
    fn segments_split_encode_and_decode() {
        let chunks: Vec<(Hash, u32)> =
            (0..3000u32).map(|i| (*blake3::hash(&i.to_le_bytes()).as_bytes(), 1000 + i)).collect();
        let segs = split_segments(&chunks);
        assert!(segs.len() > 5, "content-defined cuts happen");
        assert_eq!(segs.first().unwrap().start, 0);
        assert_eq!(segs.last().unwrap().end, chunks.len());
        for w in segs.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for r in &segs {
            assert!(r.len() <= SEGMENT_MAX);
            assert_eq!(
                decode_segment(&encode_segment(&chunks[r.clone()])).unwrap(),
                chunks[r.clone()]
            );
        }
        // A changed chunk changes only the segment around it.
        let mut edited = chunks.clone();
        edited[1500].0 = [1; 32];
        let again = split_segments(&edited);
        let changed = again.iter().filter(|r| !segs.contains(r)).count();
        assert!(changed <= 1, "{changed} segments changed");
        let list =
            vec![SegmentRef { id: [7; 32], bytes: 123 }, SegmentRef { id: [8; 32], bytes: 9 }];
        assert_eq!(decode_segment_list(&encode_segment_list(&list)).unwrap(), list);
        assert!(decode_segment(&[0; 35]).is_err());
        assert!(decode_segment_list(&[0; 39]).is_err());
    }

    fn segment_ref(n: u64) -> SegmentRef {
        SegmentRef { id: *blake3::hash(&n.to_le_bytes()).as_bytes(), bytes: 1 + n % 5000 }
    }

    proptest::proptest! {
        /// A stored leaf list gives back the list: flat up to `RUNS_FROM` segments, as runs
        /// beyond, each run cut by content and stored once; and an edit of one segment
        /// changes at most the run around it.
        #[test]
        fn a_leaf_list_stores_and_resolves(len in 0usize..2000, edit in 0usize..2000) {
            let list: Vec<SegmentRef> = (0..len as u64).map(segment_ref).collect();
            let (row, runs) = encode_leaf_list(&list);
            let stored: std::collections::HashMap<Hash, Vec<u8>> = runs.iter().cloned().collect();
            let resolved = resolve_leaf_list(&row, |id| Ok(stored.get(id).cloned())).unwrap();
            proptest::prop_assert_eq!(&resolved, &list);
            match decode_leaf_list(&row).unwrap() {
                LeafList::Flat(flat) => {
                    proptest::prop_assert!(len <= RUNS_FROM);
                    proptest::prop_assert!(runs.is_empty());
                    proptest::prop_assert_eq!(flat, list.clone());
                }
                LeafList::Runs(refs) => {
                    proptest::prop_assert!(len > RUNS_FROM);
                    proptest::prop_assert_eq!(refs.len(), runs.len());
                    for (r, (id, encoded)) in refs.iter().zip(&runs) {
                        proptest::prop_assert_eq!(r.id, *id);
                        proptest::prop_assert_eq!(r.id, *blake3::hash(encoded).as_bytes());
                        let part = decode_segment_list(encoded).unwrap();
                        proptest::prop_assert!(!part.is_empty() && part.len() <= RUN_MAX);
                        proptest::prop_assert_eq!(r.bytes, part.iter().map(|s| s.bytes).sum());
                    }
                }
            }
            if len > RUNS_FROM {
                let mut edited = list.clone();
                edited[edit % len] = segment_ref(u64::MAX - edit as u64);
                let (_, again) = encode_leaf_list(&edited);
                let new = again.iter().filter(|r| !stored.contains_key(&r.0)).count();
                proptest::prop_assert!(new <= 2, "{} runs changed", new);
                // A missing or altered run is an error, never a shorter list.
                let first = runs[0].0;
                let missing = resolve_leaf_list(&row, |id| {
                    Ok(stored.get(id).filter(|_| *id != first).cloned())
                });
                proptest::prop_assert!(missing.is_err());
                let altered = resolve_leaf_list(&row, |id| {
                    let mut part = decode_segment_list(&stored[id]).unwrap();
                    if *id == first {
                        part.pop();
                    }
                    Ok(Some(encode_segment_list(&part)))
                });
                proptest::prop_assert!(altered.is_err());
            }
        }
    }

    /// A flat list that happens to start with the runs tag still reads as flat.
    #[test]
    fn a_flat_list_starting_with_the_tag_is_flat() {
        let list = vec![SegmentRef { id: [RUNS_TAG; 32], bytes: 5 }];
        let (row, runs) = encode_leaf_list(&list);
        assert!(runs.is_empty());
        assert_eq!(decode_leaf_list(&row).unwrap(), LeafList::Flat(list));
        assert!(decode_leaf_list(&[RUNS_TAG]).is_err());
        assert!(decode_leaf_list(&[RUNS_TAG; 42]).is_err());
    }

    fn chunk(n: u32) -> (Hash, u32) {
        (*blake3::hash(&n.to_le_bytes()).as_bytes(), 1000 + n % 7)
    }

    fn ids(idx: &LeafIndex) -> Vec<(Range<usize>, Hash)> {
        idx.segments.iter().map(|s| (s.range.clone(), s.id)).collect()
    }

    #[test]
    fn an_edited_index_reuses_untouched_segments() {
        let chunks: Vec<(Hash, u32)> = (0..2000u32).map(chunk).collect();
        let base = LeafIndex::new(chunks.clone());
        let mut edited = chunks.clone();
        edited[700] = ([9; 32], chunks[700].1);
        let fresh = LeafIndex::new(edited.clone());
        let window = Window { old: 700..701, chunks: vec![edited[700]] };
        let reused = base.clone().splice([5; 32], vec![window]);
        assert_eq!(ids(&reused), ids(&fresh), "reuse gives exactly the hashed ids");
        assert_eq!(reused.chunks, fresh.chunks);
        assert_eq!(reused.base, Some([5; 32]));
        for s in &reused.segments {
            let from_base = base.segments.iter().any(|b| b.id == s.id && b.range == s.range);
            assert_eq!(s.reused, !s.range.contains(&700), "{:?}", s.range);
            assert_eq!(s.reused, from_base);
        }
        let shared = reused.segments.iter().filter(|s| s.reused).count();
        assert!(shared + 2 >= base.segments.len(), "{shared} of {} shared", base.segments.len());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 500, ..proptest::prelude::ProptestConfig::default()
        })]
        /// Any windows, at the start, inside, at the end, changing the count or not (and long
        /// runs with no content-defined cut, so that `SEGMENT_MAX` cuts too): the spliced index
        /// is the index of the new list.
        #[test]
        fn a_spliced_index_equals_a_fresh_one(
            len in 0usize..3000,
            cuts in 0u32..3,
            edits in proptest::collection::vec((0usize..3000, 0usize..40, 0usize..40), 0..4),
        ) {
            // Segment cuts by the chunk hashes (1 in 32), none (only SEGMENT_MAX cuts), or
            // 1 in 3, so that cuts of the new list often meet cuts of the old one.
            let make = |n: u32| {
                let mut c = chunk(n);
                match cuts {
                    1 => c.0[0] |= 1,
                    2 => c.0[0] = u8::from(!n.is_multiple_of(3)),
                    _ => {}
                }
                c
            };
            let old: Vec<(Hash, u32)> = (0..len as u32).map(make).collect();
            // Sorted, disjoint runs of the old list, each replaced by fresh chunks.
            let mut windows: Vec<Window> = Vec::new();
            let mut next = 0;
            let mut sorted = edits.clone();
            sorted.sort_unstable();
            for (k, (at, gone, added)) in sorted.into_iter().enumerate() {
                let start = at.min(len).max(next);
                let end = (start + gone).min(len);
                let fresh = (0..added as u32).map(|j| make(100_000 + 1000 * k as u32 + j));
                windows.push(Window { old: start..end, chunks: fresh.collect() });
                next = end + 1;
                if next > len {
                    break;
                }
            }
            // Every window but one that reaches the end covers the bytes it replaces: give the
            // inner windows' fresh chunks the replaced run's length, in one chunk.
            let count = windows.len();
            for (k, w) in windows.iter_mut().enumerate() {
                if k + 1 < count || w.old.end < len {
                    let bytes: u32 = old[w.old.clone()].iter().map(|c| c.1).sum();
                    w.chunks.truncate(1);
                    match w.chunks.first_mut() {
                        Some(c) if bytes > 0 => c.1 = bytes,
                        _ => w.chunks.clear(),
                    }
                    if bytes > 0 && w.chunks.is_empty() {
                        w.chunks.push((make(200_000 + k as u32).0, bytes));
                    }
                }
            }
            let mut expected = Vec::new();
            let mut at = 0;
            for w in &windows {
                expected.extend_from_slice(&old[at..w.old.start]);
                expected.extend_from_slice(&w.chunks);
                at = w.old.end;
            }
            expected.extend_from_slice(&old[at..]);
            let spliced = LeafIndex::new(old).splice([1; 32], windows);
            let fresh = LeafIndex::new(expected);
            proptest::prop_assert_eq!(&spliced.chunks, &fresh.chunks);
            proptest::prop_assert_eq!(&spliced.offsets, &fresh.offsets);
            proptest::prop_assert_eq!(spliced.size, fresh.size);
            proptest::prop_assert_eq!(ids(&spliced), ids(&fresh));
        }
    }

    #[test]
    fn the_pinned_empty_leaf_is_the_hash_of_nothing() {
        assert_eq!(EMPTY_LEAF, *blake3::hash(b"").as_bytes());
    }

    #[test]
    fn index_finds_chunks() {
        let idx = LeafIndex::new(vec![([1; 32], 10), ([2; 32], 20), ([3; 32], 5)]);
        assert_eq!(idx.size, 35);
        assert_eq!(idx.chunk_at(0), 0);
        assert_eq!(idx.chunk_at(9), 0);
        assert_eq!(idx.chunk_at(10), 1);
        assert_eq!(idx.chunk_at(34), 2);
    }
}
