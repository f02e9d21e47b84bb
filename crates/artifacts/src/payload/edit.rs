//! Edits of stored payloads: a new version that re-cuts and rehashes only what changed.

use std::io;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::payload::chunks::{CHUNK_AVG, CHUNK_MAX, ChunkStore, INLINE_MAX};
use crate::payload::layout::{self, GROUP, HashTree, TreeBuilder, Window};
use crate::payload::read::Payloads;
use crate::payload::writer::{StagedBody, StagedLeaf, chunk_id, first_cut_between};
use crate::types::Hash;

impl Payloads {
    /// Stages an edit of the leaf `base`: new content of `size` bytes that equals `base`
    /// except in the `written` ranges (sorted, disjoint) and from `base_len` on (bytes of
    /// `base` beyond `base_len` were truncated away). `read(offset, buf)` fills `buf` with
    /// new content. When base and result are both chunked, only the chunks that the edit
    /// touches are cut and stored again, and only the touched 16 KiB groups are rehashed;
    /// otherwise (small payloads) the whole content is staged. Either way the result equals
    /// staging the whole new content through `payload_writer` (same id, same chunks).
    pub fn stage_edit(
        &self,
        base: &Hash,
        base_len: u64,
        written: &[(u64, u64)],
        size: u64,
        read: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
    ) -> Result<StagedLeaf> {
        if size <= INLINE_MAX as u64 || self.leaf_size(base)? <= INLINE_MAX as u64 {
            return self.stage_with(size, read);
        }
        let io_err = |e: io::Error| Error::io(self.tmp_dir(), e);
        let old = self.leaf_index(base)?;
        // Chunks: keep each old chunk whose bytes are unchanged and whose end was a real cut
        // (not just the old end of the payload), cut the rest again. `windows` holds the runs of
        // old chunks replaced so far; `cut`, the one since the last kept run.
        let mut windows: Vec<Window> = Vec::new();
        let mut cut = Window::default();
        let mut fresh = FreshChunks { store: &self.chunks, hashes: Vec::new() };
        let mut buf = Scratch::take(CHUNK_MAX);
        // Whether an old cut at `e` is a cut of the new content too, for a chunk starting
        // where an old one did: it ends the payload, or it was a real cut (not just the old
        // end) and no byte its test reads was written or truncated away. FastCDC's test at a
        // cut reads the 64 bytes before it and the byte after it, with a mask that depends only
        // on the distance from the chunk's start.
        let cut_holds = |e: u64| {
            e == size
                || (e < old.size && e < base_len && {
                    let k = written.partition_point(|w| w.1 <= e.saturating_sub(64));
                    written.get(k).is_none_or(|w| w.0 > e)
                })
        };
        let mut pos = 0u64;
        while pos < size {
            let i = old.offsets.partition_point(|&o| o < pos);
            let at_old_chunk = old.offsets.get(i) == Some(&pos);
            // The first byte from here on that differs from the base: the next written one, or
            // the truncation point (`pos` itself when a written range covers it).
            let first_changed = {
                let at = written.partition_point(|w| w.1 <= pos);
                written.get(at).map_or(base_len, |w| w.0.min(base_len))
            };
            if at_old_chunk {
                // A run of old chunks up to the first changed byte is kept whole, as long as
                // its last cut holds.
                let end_of = |j: usize| old.offsets[j] + u64::from(old.chunks[j].1);
                let mut j = i + old.offsets[i..].partition_point(|&o| o < first_changed);
                while j > i && !(end_of(j - 1) <= first_changed && cut_holds(end_of(j - 1))) {
                    j -= 1;
                }
                if j > i {
                    cut.close(i, &mut windows);
                    cut.old = j..j;
                    pos = old.offsets[j - 1] + u64::from(old.chunks[j - 1].1);
                    continue;
                }
            }
            let want = usize::try_from((size - pos).min(CHUNK_MAX as u64)).unwrap_or(CHUNK_MAX);
            // FastCDC scans forward and stops at the first match, so a scan of a prefix finds
            // the first cut inside it, and returns the prefix's length when there is none.
            // When the old chunk starting here ends at a cut that holds, it still ends there
            // unless an earlier cut appears: read just that chunk. Otherwise read twice the
            // average first, and the rest only when no cut is in it.
            let old_end = pos + old.chunks.get(i).map_or(0, |c| u64::from(c.1));
            let settled = at_old_chunk && cut_holds(old_end);
            let head = if settled {
                usize::try_from(old_end - pos).unwrap_or(CHUNK_MAX).min(want)
            } else {
                want.min(2 * CHUNK_AVG)
            };
            // Where the old chunk starting here says the first cut is not: the old scan read
            // the same bytes up to the first changed one and found no cut before its end; and
            // when its cut holds, the positions from 64 bytes past the last changed byte up to
            // it test unchanged bytes too.
            let (from, stop) = if at_old_chunk {
                let first_changed = first_changed.max(pos);
                let last_changed = if base_len < old_end {
                    old_end
                } else {
                    let k = written.partition_point(|w| w.0 < old_end);
                    k.checked_sub(1).map_or(pos, |k| written[k].1).max(pos)
                };
                let rel = |at: u64| usize::try_from(at - pos).unwrap_or(usize::MAX);
                let stop = if settled { rel(last_changed).saturating_add(63) } else { usize::MAX };
                (rel(first_changed.min(old_end)), stop)
            } else {
                (0, usize::MAX)
            };
            read(pos, &mut buf[..head]).map_err(io_err)?;
            let mut len = first_cut_between(&buf[..head], from, stop);
            if len == head && head < want && !settled {
                read(pos + head as u64, &mut buf[head..want]).map_err(io_err)?;
                len = first_cut_between(&buf[..want], from, usize::MAX);
            }
            let hash = chunk_id(&buf[..len]);
            self.chunks.put(&hash, &buf[..len]).map_err(io_err)?;
            fresh.hashes.push(hash);
            cut.chunks.push((hash, len as u32));
            pos += len as u64;
        }
        cut.close(old.chunks.len(), &mut windows);
        // The id: rehash the touched groups in the base's tree, or everything.
        let n = HashTree::groups(size);
        let hash = match self.trees.take(base).filter(|t| n >= 2 && t.size() == old.size) {
            Some(mut tree) => {
                // Groups under a written range, from the truncation point on, and the last.
                let mut dirty: Vec<u64> = Vec::new();
                for &(s, e) in written.iter().chain(std::iter::once(&(base_len, size))) {
                    if s < e {
                        dirty.extend(s / GROUP..=((e - 1) / GROUP).min(n - 1));
                    }
                }
                if size != old.size {
                    dirty.push(n - 1);
                }
                dirty.sort_unstable();
                dirty.dedup();
                let mut changed = Vec::with_capacity(dirty.len());
                for g in dirty {
                    let (s, e) = (g * GROUP, ((g + 1) * GROUP).min(size));
                    read(s, &mut buf[..(e - s) as usize]).map_err(io_err)?;
                    changed.push((g, layout::group_cv(g, &buf[..(e - s) as usize])));
                }
                tree.update(size, &changed);
                let root = tree.root();
                self.trees.put(root, tree);
                root
            }
            None => {
                let mut groups = TreeBuilder::default();
                let mut hasher = blake3::Hasher::new();
                for g in 0..n {
                    let (s, e) = (g * GROUP, ((g + 1) * GROUP).min(size));
                    read(s, &mut buf[..(e - s) as usize]).map_err(io_err)?;
                    if n == 1 {
                        hasher.update(&buf[..(e - s) as usize]);
                    } else {
                        groups.push(layout::group_cv(g, &buf[..(e - s) as usize]));
                    }
                }
                match self.trees.root_of(size, groups) {
                    Some(root) => root,
                    None => *hasher.finalize().as_bytes(),
                }
            }
        };
        let fresh = std::mem::take(&mut fresh.hashes);
        // The base's index is edited in place when nothing else holds it: the next version
        // is the one likely to be read or edited again (`committed` caches it).
        self.forget_index(base);
        let old = Arc::try_unwrap(old).unwrap_or_else(|shared| (*shared).clone());
        let index = Arc::new(old.splice(*base, windows));
        Ok(StagedLeaf::new(hash, size, StagedBody::Chunked { index, fresh }, self.chunks.clone()))
    }
}

/// A zeroed-once buffer per thread for edits, so that an edit does not allocate and clear
/// `CHUNK_MAX` bytes each time; dropping it hands it back.
struct Scratch(Vec<u8>);

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Scratch {
    fn take(len: usize) -> Scratch {
        let mut buf = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        buf.resize(len, 0);
        Scratch(buf)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        SCRATCH.with(|s| *s.borrow_mut() = buf);
    }
}

impl std::ops::Deref for Scratch {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// The chunks an edit has written so far: abandoned if the edit fails before it returns them.
struct FreshChunks<'a> {
    store: &'a ChunkStore,
    hashes: Vec<Hash>,
}

impl Drop for FreshChunks<'_> {
    fn drop(&mut self) {
        self.store.abandon(&self.hashes);
    }
}
