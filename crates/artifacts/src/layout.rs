//! How a chunked leaf is laid out, and the hash tree that lets an edit rehash only what changed.
//!
//! # Segments
//! A chunked leaf's chunk list is cut into *segments*: runs of chunks that end after a chunk
//! whose hash has its low 5 bits clear (about 32 chunks, 2 MiB, per segment), or after
//! `SEGMENT_MAX` chunks. A segment is stored once, under the BLAKE3 hash of its encoding, and
//! a leaf stores only its list of segments. The cut depends only on chunk hashes, so an edit
//! changes the segments around it and every other segment is shared with the previous version:
//! a 4 KiB overwrite of a 1 GiB file writes one segment and a list of about 400 segment ids,
//! not 13,000 chunk rows.
//!
//! Smaller segments cost a longer list per version; larger ones cost more chunk reference
//! updates per new segment (one per chunk in it). At 128 chunks per segment those updates
//! were a third of a 4 KiB overwrite's commit; at 32, overwrites inside a 1 GiB file went
//! from about 550 to about 680 per second.
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
use crate::types::Hash;

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
    let mut out = Vec::new();
    let mut start = 0;
    for (i, (hash, _)) in chunks.iter().enumerate() {
        if hash[0] & SEGMENT_MASK == 0 || i + 1 - start == SEGMENT_MAX {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < chunks.len() {
        out.push(start..chunks.len());
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
#[derive(Debug)]
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

impl LeafIndex {
    /// The index of a new chunk list: its segments are cut and hashed.
    pub(crate) fn new(chunks: Vec<(Hash, u32)>) -> Self {
        Self::edited(chunks, &[], None)
    }

    /// The index of an edit of `base`: `kept[i]` says chunk `i` is the base's chunk at the
    /// same offset. A segment made only of kept chunks, starting where one of the base's
    /// segments starts and as long, *is* that segment: its id is reused, not rehashed.
    pub(crate) fn edited(
        chunks: Vec<(Hash, u32)>,
        kept: &[bool],
        base: Option<(Hash, &LeafIndex)>,
    ) -> Self {
        let (offsets, size) = offsets_of(&chunks);
        let segments = split_segments(&chunks)
            .into_iter()
            .map(|range| {
                let reused = base
                    .filter(|_| kept.get(range.clone()).is_some_and(|k| k.iter().all(|k| *k)))
                    .and_then(|(_, b)| {
                        let first = b.offsets.binary_search(&offsets[range.start]).ok()?;
                        let at = b.segments.binary_search_by_key(&first, |s| s.range.start).ok()?;
                        let seg = &b.segments[at];
                        (seg.range.len() == range.len()).then_some(seg.id)
                    });
                let id = reused.unwrap_or_else(|| {
                    *blake3::hash(&encode_segment(&chunks[range.clone()])).as_bytes()
                });
                Segment { range, id, reused: reused.is_some() }
            })
            .collect();
        LeafIndex { size, offsets, chunks, segments, base: base.map(|(hash, _)| hash) }
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

    #[test]
    fn an_edited_index_reuses_untouched_segments() {
        let chunks: Vec<(Hash, u32)> =
            (0..2000u32).map(|i| (*blake3::hash(&i.to_le_bytes()).as_bytes(), 1000)).collect();
        let base = LeafIndex::new(chunks.clone());
        let mut edited = chunks.clone();
        edited[700] = ([9; 32], 1000);
        let mut kept = vec![true; edited.len()];
        kept[700] = false;
        let fresh = LeafIndex::new(edited.clone());
        let reused = LeafIndex::edited(edited, &kept, Some(([5; 32], &base)));
        let ids = |idx: &LeafIndex| -> Vec<(Range<usize>, Hash)> {
            idx.segments.iter().map(|s| (s.range.clone(), s.id)).collect()
        };
        assert_eq!(ids(&reused), ids(&fresh), "reuse gives exactly the hashed ids");
        assert_eq!(reused.base, Some([5; 32]));
        for s in &reused.segments {
            let from_base = base.segments.iter().any(|b| b.id == s.id && b.range == s.range);
            assert_eq!(s.reused, !s.range.contains(&700), "{:?}", s.range);
            assert_eq!(s.reused, from_base);
        }
        let shared = reused.segments.iter().filter(|s| s.reused).count();
        assert!(shared + 2 >= base.segments.len(), "{shared} of {} shared", base.segments.len());
    }

    #[test]
    fn the_pinned_empty_leaf_is_the_hash_of_nothing() {
        assert_eq!(crate::vault::EMPTY_LEAF, *blake3::hash(b"").as_bytes());
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
