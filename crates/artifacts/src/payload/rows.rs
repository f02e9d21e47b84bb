//! Rows of the payload tables: leaves (with their reference counts and the GC index of
//! unreferenced ones), inline bytes, chunk lists (segments and runs) and chunks.
//!
//! Invariants kept here:
//! - A leaf's `refs` counts the nodes whose content it is; at 0 it is in `unreferenced_v1`
//!   (with the time it got there), and only there. `EMPTY_LEAF` is never counted.
//! - A chunk's `refs` counts the entries of stored segments that name it; at 0 it is in
//!   `dead_chunks_v1`. A chunk is recorded with its place in a pack the first time a stored
//!   segment names it.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::payload::chunks::{ChunkRecord, Loc};
use crate::payload::layout::{self, EMPTY_LEAF, LeafIndex, SegmentRef};
use crate::payload::writer::{StagedBody, StagedLeaf};
use crate::store::meta::W;
use crate::store::schema::{LeafRecord, decode, encode};
use crate::types::{ArtifactId, Hash, Timestamp};

/// Where a staging appended its fresh chunks, by hash.
pub(crate) fn appended(staged: &StagedLeaf) -> HashMap<Hash, Loc> {
    staged.appended.iter().copied().collect()
}

impl W<'_> {
    /// A chunk's row.
    pub(crate) fn chunk(&mut self, hash: &Hash) -> Result<Option<ChunkRecord>> {
        Ok(self.chunks()?.get(hash)?.map(|v| ChunkRecord::from_value(v.value())))
    }

    pub(crate) fn put_chunk(&mut self, hash: &Hash, rec: ChunkRecord) -> Result<()> {
        self.chunks()?.insert(hash, rec.value())?;
        Ok(())
    }

    /// Every chunk row (for the migrations).
    pub(crate) fn chunk_rows(&mut self) -> Result<Vec<(Hash, ChunkRecord)>> {
        Ok(self
            .chunks()?
            .iter()?
            .map(|r| r.map(|(k, v)| (*k.value(), ChunkRecord::from_value(v.value()))))
            .collect::<Result<_, _>>()?)
    }

    /// Records a staged leaf's metadata if the leaf is new. Its reference count starts at 0.
    pub(crate) fn register_leaf(&mut self, staged: &StagedLeaf, now: Timestamp) -> Result<()> {
        if self.leaves()?.get(&staged.hash)?.is_some() {
            return self.place_appended(staged, appended(staged));
        }
        self.insert_leaf(staged, 0, now)
    }

    /// Records a staged leaf as the content of one more node: a new leaf starts at one
    /// reference, without passing through the GC index.
    pub(crate) fn adopt_leaf(&mut self, staged: &StagedLeaf, now: Timestamp) -> Result<()> {
        if self.leaves()?.get(&staged.hash)?.is_some() {
            self.place_appended(staged, appended(staged))?;
            return self.leaf_incref(&staged.hash);
        }
        let refs = u64::from(staged.hash != EMPTY_LEAF);
        self.insert_leaf(staged, refs, now)
    }

    fn insert_leaf(&mut self, staged: &StagedLeaf, refs: u64, now: Timestamp) -> Result<()> {
        let rec =
            LeafRecord { size: staged.size, refs, inline: staged.is_inline(), created_at: now };
        self.leaves()?.insert(&staged.hash, encode(&rec).as_slice())?;
        if refs == 0 && staged.hash != EMPTY_LEAF {
            self.mark_unreferenced(&staged.hash, staged.size, now)?;
        }
        match &staged.body {
            StagedBody::Inline(bytes) => {
                self.inline()?.insert(&staged.hash, bytes.as_slice())?;
            }
            StagedBody::Chunked { index, .. } => {
                let mut places = appended(staged);
                self.store_chunk_list(&staged.hash, index, &mut places)?;
                self.place_appended(staged, places)?;
            }
        }
        Ok(())
    }

    /// Stores a leaf's chunk list as segments: each segment not stored yet is stored, adding
    /// one reference to each of its chunks. Segments carry no count (GC sweeps the ones no
    /// leaf names), so a new version of a large file writes only its new segments and list.
    /// A chunk recorded for the first time takes its place from `places`.
    ///
    /// An edit's segments reused from its base leaf, and the runs of its list that the base's
    /// list has too, are not looked up one by one while the base's list is stored: GC sweeps
    /// only segments and runs that no stored list names, in a transaction of its own, so
    /// every segment and run of a stored list is stored.
    pub(crate) fn store_chunk_list(
        &mut self,
        leaf: &Hash,
        index: &LeafIndex,
        places: &mut HashMap<Hash, Loc>,
    ) -> Result<()> {
        let base_list = match &index.base {
            Some(base) => self
                .leaf_segments()?
                .get(base)?
                .map(|v| layout::decode_leaf_list(v.value()))
                .transpose()?,
            None => None,
        };
        let base_stored = base_list.is_some();
        let base_runs = match base_list {
            Some(layout::LeafList::Runs(runs)) => runs,
            _ => Vec::new(),
        };
        let mut list = Vec::with_capacity(index.segments.len());
        // The entries of the segments stored here: each adds one reference to its chunk.
        let mut named: Vec<(Hash, u32)> = Vec::new();
        for seg in &index.segments {
            let (id, part) = (seg.id, &index.chunks[seg.range.clone()]);
            let known = seg.reused && base_stored;
            if !known && self.segments()?.get(&id)?.is_none() {
                self.segments()?.insert(&id, layout::encode_segment(part).as_slice())?;
                named.extend_from_slice(part);
            }
            let end = index.offsets.get(seg.range.end).copied().unwrap_or(index.size);
            list.push(SegmentRef { id, bytes: end - index.offsets[seg.range.start] });
        }
        let (row, runs) = layout::encode_leaf_list(&list);
        for (id, encoded) in runs {
            let known = base_runs.iter().any(|r| r.id == id);
            if !known && self.segment_runs()?.get(&id)?.is_none() {
                self.segment_runs()?.insert(&id, encoded.as_slice())?;
            }
        }
        self.leaf_segments()?.insert(leaf, row.as_slice())?;
        // In hash order, each chunk once: consecutive updates land on the same B-tree pages.
        named.sort_unstable_by_key(|c| c.0);
        for run in named.chunk_by(|a, b| a.0 == b.0) {
            let (chunk, len) = run[0];
            let n = run.len() as u64;
            let rec = match self.chunk(&chunk)? {
                // Reused from a stored leaf; at no references it may be waiting for GC. (With
                // references it is not: a chunk is marked when its count reaches 0, and GC
                // checks the count of each mark before dropping anything.)
                Some(rec) => {
                    if rec.refs == 0 {
                        self.dead()?.remove(&chunk)?;
                    }
                    ChunkRecord { refs: rec.refs + n, ..rec }
                }
                None => ChunkRecord { len, refs: n, loc: places.remove(&chunk) },
            };
            self.put_chunk(&chunk, rec)?;
        }
        Ok(())
    }

    /// Records the places of appended chunks that `store_chunk_list` did not take: a chunk
    /// whose row has no place (written again after repair quarantined it) takes this one; a
    /// copy that lost to one recorded meanwhile goes to the reclaimer.
    fn place_appended(&mut self, staged: &StagedLeaf, rest: HashMap<Hash, Loc>) -> Result<()> {
        let mut lost = Vec::new();
        for (chunk, loc) in rest {
            match self.chunk(&chunk)? {
                Some(rec) if rec.loc.is_none() && rec.len == loc.len => {
                    self.put_chunk(&chunk, ChunkRecord { loc: Some(loc), ..rec })?;
                }
                Some(rec) if rec.loc == Some(loc) => {}
                _ => lost.push((chunk, loc)),
            }
        }
        staged.discard(lost);
        Ok(())
    }

    pub(crate) fn leaf(&mut self, hash: &Hash) -> Result<LeafRecord> {
        match self.leaves()?.get(hash)? {
            Some(v) => decode("leaf", v.value()),
            None => Err(Error::NoSuchArtifact(ArtifactId::Blob(*hash))),
        }
    }

    pub(crate) fn leaf_size(&mut self, hash: &Hash) -> Result<u64> {
        Ok(self.leaf(hash)?.size)
    }

    /// Records the empty leaf if this vault has never stored it, as storing an empty file
    /// does (inline, pinned, never counted). A vault holds the empty content without storing
    /// it, so content that arrives empty (a peer's empty file) is recorded through this.
    pub(crate) fn pin_empty_leaf(&mut self, now: Timestamp) -> Result<()> {
        if self.leaves()?.get(&EMPTY_LEAF)?.is_some() {
            return Ok(());
        }
        let rec = LeafRecord { size: 0, refs: 0, inline: true, created_at: now };
        self.leaves()?.insert(&EMPTY_LEAF, encode(&rec).as_slice())?;
        self.inline()?.insert(&EMPTY_LEAF, &b""[..])?;
        Ok(())
    }

    pub(crate) fn leaf_incref(&mut self, hash: &Hash) -> Result<()> {
        if *hash == EMPTY_LEAF {
            return Ok(());
        }
        let mut rec = self.leaf(hash)?;
        rec.refs += 1;
        if rec.refs == 1 {
            self.unmark_unreferenced(hash, rec.size)?;
        }
        self.leaves()?.insert(hash, encode(&rec).as_slice())?;
        Ok(())
    }

    pub(crate) fn leaf_decref(&mut self, hash: &Hash, now: Timestamp) -> Result<()> {
        if *hash == EMPTY_LEAF {
            return Ok(());
        }
        let mut rec = self.leaf(hash)?;
        rec.refs = rec.refs.saturating_sub(1);
        if rec.refs == 0 && self.history_refs_of(hash)? == 0 {
            self.mark_unreferenced(hash, rec.size, now)?;
        }
        self.leaves()?.insert(hash, encode(&rec).as_slice())?;
        Ok(())
    }

    /// Puts a leaf in `unreferenced_v1` (GC's candidates), counting its bytes once.
    pub(crate) fn mark_unreferenced(
        &mut self,
        hash: &Hash,
        size: u64,
        now: Timestamp,
    ) -> Result<()> {
        if self.unref()?.get(hash)?.is_none() {
            self.unref_bytes += size_i64(size);
        }
        self.unref()?.insert(hash, now.secs)?;
        Ok(())
    }

    /// Takes a leaf out of `unreferenced_v1`, if it is there.
    pub(crate) fn unmark_unreferenced(&mut self, hash: &Hash, size: u64) -> Result<()> {
        if self.unref()?.remove(hash)?.is_some() {
            self.unref_bytes -= size_i64(size);
        }
        Ok(())
    }

    /// How many versions and snapshots name a leaf (`history_refs_v1`).
    pub(crate) fn history_refs_of(&mut self, hash: &Hash) -> Result<u64> {
        Ok(self.history_refs()?.get(hash)?.map_or(0, |v| v.value()))
    }

    /// One more version or snapshot names the leaf: it is not garbage while any does.
    pub(crate) fn history_incref(&mut self, hash: &Hash) -> Result<()> {
        if *hash == EMPTY_LEAF {
            return Ok(());
        }
        let n = self.history_refs_of(hash)?;
        self.history_refs()?.insert(hash, n + 1)?;
        if n == 0 {
            let size = self.leaf(hash)?.size;
            self.unmark_unreferenced(hash, size)?;
        }
        Ok(())
    }

    /// One version or snapshot fewer names the leaf; with no node naming it either, it goes
    /// to GC.
    pub(crate) fn history_decref(&mut self, hash: &Hash, now: Timestamp) -> Result<()> {
        if *hash == EMPTY_LEAF {
            return Ok(());
        }
        let n = self.history_refs_of(hash)?;
        if n <= 1 {
            self.history_refs()?.remove(hash)?;
            let rec = self.leaf(hash)?;
            if rec.refs == 0 {
                self.mark_unreferenced(hash, rec.size, now)?;
            }
        } else {
            self.history_refs()?.insert(hash, n - 1)?;
        }
        Ok(())
    }
}

/// A leaf's size as a signed count of bytes (sizes are at most `FILE_SIZE_MAX`).
pub(crate) fn size_i64(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}
