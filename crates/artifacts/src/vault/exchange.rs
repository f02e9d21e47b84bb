//! The pieces of content and listings that move between peers, and the local lookups a
//! receiver makes to fetch only what it lacks.
//!
//! A leaf travels as its layout: inline bytes, or its stored segment list (flat, or as runs).
//! Runs, segments and chunks are each named by the BLAKE3 hash of their bytes, so a receiver
//! checks every piece as it arrives, and checks the whole content against the leaf id at the
//! end. A server hands out a run, segment or chunk only as part of a leaf the caller names:
//! these functions answer `None` for a piece that is not the leaf's, so a peer can never
//! probe for a hash outside what it was granted.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::payload::layout::{self, LeafList, SegmentRef};
use crate::types::{
    AccessGrant, Hash, MirrorEntry, Node, NodeId, NodeKind, SharedItem, SharedKind,
};
use crate::vault::handle::Vault;

/// How a leaf's content is laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeafLayout {
    /// The whole content (at most `INLINE_MAX` bytes).
    Inline(Vec<u8>),
    /// The leaf's stored segment list, as stored (see [`decode_leaf_list`]).
    List(Vec<u8>),
}

/// A leaf's list, decoded: `(id, bytes covered)` of each segment, or of each run of segments.
pub fn decode_leaf_list(bytes: &[u8]) -> Result<(bool, Vec<(Hash, u64)>)> {
    Ok(match layout::decode_leaf_list(bytes)? {
        LeafList::Flat(l) => (false, pairs(l)),
        LeafList::Runs(l) => (true, pairs(l)),
    })
}

/// A run's segments: `(segment id, bytes covered)`.
pub fn decode_segment_list(bytes: &[u8]) -> Result<Vec<(Hash, u64)>> {
    Ok(pairs(layout::decode_segment_list(bytes)?))
}

/// A segment's chunks: `(chunk id, length)`.
pub fn decode_chunk_list(bytes: &[u8]) -> Result<Vec<(Hash, u32)>> {
    layout::decode_segment(bytes)
}

fn pairs(list: Vec<SegmentRef>) -> Vec<(Hash, u64)> {
    list.into_iter().map(|s| (s.id, s.bytes)).collect()
}

/// How a node is described to a peer. Only files and folders are shared.
fn item(node: &Node, label: &[u8], grant: Option<&AccessGrant>) -> Option<SharedItem> {
    let kind = match node.kind {
        NodeKind::File => SharedKind::File,
        NodeKind::Dir => SharedKind::Dir,
        _ => return None,
    };
    Some(SharedItem {
        remote: node.id.0,
        label: label.to_vec(),
        kind,
        size: if kind == SharedKind::File { node.size } else { 0 },
        mtime: node.mtime,
        content: node.content.filter(|_| kind == SharedKind::File),
        grant: grant.map(|g| g.mode),
    })
}

/// How a mirror entry is described to a peer it is shared on with: by its id here, with the
/// content that has arrived (a file still on its way is left out).
fn mirror_item(e: &MirrorEntry, grant: Option<&AccessGrant>) -> Option<SharedItem> {
    if e.remote == 0 || (e.kind == SharedKind::File && !e.ready()) {
        return None;
    }
    Some(SharedItem {
        remote: e.id.0,
        label: e.label.clone(),
        kind: e.kind,
        size: if e.kind == SharedKind::File { e.size } else { 0 },
        mtime: e.mtime,
        content: e.have,
        grant: grant.map(|g| g.mode),
    })
}

impl Vault {
    /// A shared root as its grantee sees it: the node under the label it has in its folder.
    /// `None` if the node is gone, or is not a file or folder.
    pub fn shared_root(&self, grant: &AccessGrant) -> Result<Option<SharedItem>> {
        let node = match self.node(grant.node) {
            Ok(n) => n,
            Err(Error::NoSuchNode(_)) => {
                return Ok(self
                    .mirror_entry(grant.node)?
                    .and_then(|e| mirror_item(&e, Some(grant))));
            }
            Err(e) => return Err(e),
        };
        let label = self.label_of(&node)?;
        Ok(label.and_then(|l| item(&node, &l, Some(grant))))
    }

    /// The label a node has: a folder's in its parent; a file's first link found.
    fn label_of(&self, node: &Node) -> Result<Option<Vec<u8>>> {
        if let Some(parent) = node.parent {
            let id = node.id;
            return self.read_fs(|r| {
                for row in
                    r.entries()?.range((parent.0, &[][..])..=(parent.0, &[0xffu8; 256][..]))?
                {
                    let (k, v) = row?;
                    if k.value().0 != parent.0 {
                        break;
                    }
                    if v.value().0 == id.0 {
                        return Ok(Some(k.value().1.to_vec()));
                    }
                }
                Ok(None)
            });
        }
        self.scan(&["entries"], |r| {
            for row in r.entries()?.iter()? {
                let (k, v) = row?;
                if v.value().0 == node.id.0 {
                    return Ok(Some(k.value().1.to_vec()));
                }
            }
            Ok(None)
        })
    }

    /// Up to `limit` entries of shared folder `dir` after position `after`, with the
    /// position to continue from. Symlinks and special files are left out.
    pub fn shared_list(
        &self,
        dir: NodeId,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<SharedItem>, Option<u64>)> {
        if matches!(self.node(dir), Err(Error::NoSuchNode(_))) {
            // A folder a peer shares with us, shared on: pages by entry id.
            let page = self.mirror_list(dir, after, limit)?;
            let next = (page.len() == limit).then(|| page.last().map_or(after, |e| e.id.0));
            return Ok((page.iter().filter_map(|e| mirror_item(e, None)).collect(), next));
        }
        let page = self.list(dir, after, limit)?;
        let next = (page.len() == limit).then(|| page.last().map_or(after, |e| e.position));
        let items = self.read_fs(|r| {
            let mut out = Vec::with_capacity(page.len());
            for e in &page {
                let node = r.node(e.node)?;
                out.extend(item(&node, &e.name, None));
            }
            Ok(out)
        })?;
        Ok((items, next))
    }

    /// The entry `name` of folder `dir`, if it is the file `node` with content `leaf`: how a
    /// server checks that a file a peer names is the one in a folder it was granted.
    pub fn shared_file_in(
        &self,
        dir: NodeId,
        name: &[u8],
        node: NodeId,
        leaf: &Hash,
    ) -> Result<bool> {
        if crate::vault::namespace::validate_name(name).is_err() {
            return Ok(false);
        }
        if matches!(self.node(dir), Err(Error::NoSuchNode(_))) {
            return Ok(self
                .mirror_lookup(dir, name)?
                .is_some_and(|e| e.id == node && e.ready() && e.have == Some(*leaf)));
        }
        self.read_fs(|r| match r.entry(dir, name)? {
            Some((child, _)) if child == node => Ok(r.node(child)?.content == Some(*leaf)),
            _ => Ok(false),
        })
    }

    /// The content a file we may share has now: a node's, or, for what a peer shares with us,
    /// what has arrived of it.
    pub fn shared_content(&self, id: NodeId) -> Result<Option<Hash>> {
        match self.node(id) {
            Ok(n) => Ok(n.content),
            Err(Error::NoSuchNode(_)) => {
                Ok(self.mirror_entry(id)?.filter(MirrorEntry::ready).and_then(|e| e.have))
            }
            Err(e) => Err(e),
        }
    }

    /// The layout of leaf `leaf`.
    pub fn leaf_layout(&self, leaf: &Hash) -> Result<LeafLayout> {
        self.read_fs(|r| {
            if let Some(v) = r.inline()?.get(leaf)? {
                return Ok(LeafLayout::Inline(v.value().to_vec()));
            }
            if let Some(v) = r.leaf_segments()?.get(leaf)? {
                return Ok(LeafLayout::List(v.value().to_vec()));
            }
            if *leaf == layout::EMPTY_LEAF {
                return Ok(LeafLayout::Inline(Vec::new()));
            }
            Err(Error::NoSuchArtifact(crate::types::ArtifactId::Blob(*leaf)))
        })
    }

    /// Run `run` of leaf `leaf`'s list, if the list names it.
    pub fn leaf_run(&self, leaf: &Hash, run: &Hash) -> Result<Option<Vec<u8>>> {
        let LeafLayout::List(list) = self.leaf_layout(leaf)? else { return Ok(None) };
        match layout::decode_leaf_list(&list)? {
            LeafList::Runs(runs) if runs.iter().any(|r| r.id == *run) => self.run_bytes(run),
            _ => Ok(None),
        }
    }

    /// Segment `segment` of leaf `leaf`, if the leaf has it.
    pub fn leaf_segment(&self, leaf: &Hash, segment: &Hash) -> Result<Option<Vec<u8>>> {
        if !matches!(self.leaf_layout(leaf)?, LeafLayout::List(_)) {
            return Ok(None);
        }
        let index = self.payloads.leaf_index(leaf)?;
        if index.segments.iter().any(|s| s.id == *segment) {
            self.segment_bytes(segment)
        } else {
            Ok(None)
        }
    }

    /// Chunks `from..from + count` of leaf `leaf`, checked as read; `None` if the leaf has
    /// fewer, or they hold more than `max_bytes`.
    pub fn leaf_chunks(
        &self,
        leaf: &Hash,
        from: u32,
        count: u32,
        max_bytes: u64,
    ) -> Result<Option<Vec<Arc<Vec<u8>>>>> {
        if !matches!(self.leaf_layout(leaf)?, LeafLayout::List(_)) {
            return Ok(None);
        }
        let idx = self.payloads.leaf_index(leaf)?;
        let (from, count) = (from as usize, count as usize);
        let Some(wanted) = idx.chunks.get(from..from.saturating_add(count)) else {
            return Ok(None);
        };
        if wanted.iter().map(|c| u64::from(c.1)).sum::<u64>() > max_bytes {
            return Ok(None);
        }
        wanted
            .iter()
            .map(|(id, len)| self.payloads.read_chunk(leaf, id, *len))
            .collect::<Result<_>>()
            .map(Some)
    }

    /// The stored run `id`, if this vault has it.
    pub fn run_bytes(&self, id: &Hash) -> Result<Option<Vec<u8>>> {
        self.read_fs(|r| Ok(r.segment_runs()?.get(id)?.map(|v| v.value().to_vec())))
    }

    /// The stored segment `id`, if this vault has it.
    pub fn segment_bytes(&self, id: &Hash) -> Result<Option<Vec<u8>>> {
        self.read_fs(|r| Ok(r.segments()?.get(id)?.map(|v| v.value().to_vec())))
    }

    /// Whether this vault has chunk `id` in a pack.
    pub fn has_chunk(&self, id: &Hash) -> Result<bool> {
        self.read_fs(|r| Ok(r.chunk(id)?.is_some_and(|c| c.loc.is_some())))
    }

    /// Chunk `id` of this vault, checked against its id and length.
    pub fn chunk(&self, id: &Hash, len: u32) -> Result<Arc<Vec<u8>>> {
        self.payloads.read_chunk(id, id, len)
    }

    /// Keeps the chunks of a fetch that stopped part way (`staged` holds what arrived): they
    /// are recorded as an unreferenced leaf, so the next attempt finds them here and asks only
    /// for the rest, and GC takes them after its grace period if nothing comes to use them.
    pub fn keep_partial(&self, staged: &crate::payload::writer::StagedLeaf) -> Result<()> {
        let now = crate::types::Timestamp::now();
        self.write_fs(crate::vault::handle::Commit::CrashConsistent, |w| {
            w.register_leaf(staged, now)
        })?;
        self.payloads.committed(staged);
        Ok(())
    }
}
