//! The `Vault`: the store's one handle. It owns the metadata database, the chunk packs and
//! the data-dir lock, and exposes nodes (the mount's inodes), leaves and trees.
//!
//! # Transactions and locking
//! - Every mutation is one operation on the write-back layer of `meta.rs`: all or nothing,
//!   visible to the next request at once, and written to redb in batches by `flush` (at each
//!   `sync`, and when much is pending). Operations are serialised, so mutations are
//!   linearisable; reads run concurrently with each other and with the one operation.
//! - Payload bytes are written *outside* any transaction (by `PayloadWriter`, from any number
//!   of threads at once) and only named inside one. The chunk store's `staged` set keeps GC
//!   from dropping a chunk between the two.
//! - Lock order: `ChunkStore::staged` (held by GC and repair, and briefly by each append),
//!   then the locks of `meta.rs` (flush, operation, layers), then redb's writer lock, then the
//!   chunk store's other locks (active packs, unsynced packs, open files, cache, abandoned
//!   ranges). Nothing that holds the operation lock takes `staged`.
//!
//! # Commit strengths
//! `Commit::CrashConsistent` records the operation without fsync: after a crash the store
//! holds the state of some earlier flush, whole. `Commit::Durable` then flushes: it fsyncs
//! every chunk written so far and commits with fsync, and when it returns, that operation and
//! all before it survive power loss.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    WriteTransaction,
};

use crate::chunks::{
    self, CHUNK_AVG, CHUNK_MAX, ChunkReadError, ChunkRecord, ChunkStore, FaultInjector, Faults,
    INLINE_MAX, IoStep, Loc,
};
use crate::error::{Error, Result, lossy};
use crate::layout::{
    self, GROUP, HashTree, LeafIndex, SegmentRef, TreeBuilder, TreeCache, Window, decode_segment,
};
use crate::meta::{Meta, Strength, W};
use crate::schema::{
    CHUNKS, CHUNKS_V1, FORMAT_OLDEST, FORMAT_VERSION, LEAF_CHUNKS_V1, LEAVES, LeafRecord, META,
    META_CREATED, META_FORMAT, META_NEXT_NODE, META_OPEN, META_PLAYER, NODES, ORPHANS,
    PlayerRecord, TREES, TreeRecord, UNREFERENCED, bytes_u64, decode, encode, u64_bytes,
};
use crate::types::{
    ArtifactId, DirEntry, Hash, NewNode, Node, NodeId, NodeKind, PlayerId, RenameMode, SetAttr,
    Timestamp, TreeType, XattrMode, hex,
};
use crate::writer::{PayloadWriter, StagedBody, StagedLeaf, chunk_id, first_cut_between};

/// The longest name a directory entry may have, in bytes.
pub const NAME_MAX: usize = 255;
/// The largest extended attribute value, in bytes (Linux's `XATTR_SIZE_MAX`).
pub const XATTR_VALUE_MAX: usize = 64 * 1024;
/// The most hard links a node may have.
pub const LINK_MAX: u32 = 65_000;
/// The largest file, in bytes (1 TiB). A leaf's id hashes every byte, the zeros of a sparse
/// extension too, so a commit costs time in proportion to the size; this bounds it (about
/// five minutes of hashing here) and makes a write or truncate beyond it fail with `EFBIG`.
pub const FILE_SIZE_MAX: u64 = 1 << 40;

/// How hard a commit presses its changes to disk.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Commit {
    /// Atomic but not fsync'd: used by close. After a crash the change is whole or absent.
    CrashConsistent,
    /// Atomic and fsync'd, with every chunk it names: used by fsync.
    Durable,
}

impl Commit {
    fn strength(self) -> Strength {
        match self {
            Commit::CrashConsistent => Strength::Consistent,
            Commit::Durable => Strength::Durable,
        }
    }
}

/// Settings for opening a vault.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A fault injector for tests: called before each I/O step.
    pub faults: Option<Arc<dyn FaultInjector>>,
    /// The database page cache, in bytes (redb's default when `None`).
    pub cache_bytes: Option<usize>,
    /// A pack file takes no more appends once it holds this many bytes (1 GiB when `None`).
    pub pack_bytes: Option<u64>,
}

/// Numbers of entries in the main tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub nodes: u64,
    pub trees: u64,
    pub leaves: u64,
    pub chunks: u64,
    pub events: u64,
}

/// Figures about the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub nodes: u64,
    pub trees: u64,
    pub files: u64,
    pub leaves: u64,
    pub unreferenced_leaves: u64,
    pub inline_bytes: u64,
    pub chunks: u64,
    pub chunk_bytes: u64,
    /// Bytes the pack files take on disk: the chunks, and dead ranges not yet punched.
    pub pack_bytes: u64,
    /// Total size of all leaves (what the content would take without dedup).
    pub logical_bytes: u64,
    pub db_bytes: u64,
}

/// The durable content-addressed store. `Send + Sync`: share it with `Arc`.
pub struct Vault {
    pub(crate) dir: PathBuf,
    pub(crate) meta: Arc<Meta>,
    pub(crate) chunks: Arc<ChunkStore>,
    pub(crate) player: PlayerRecord,
    pub(crate) faults: Faults,
    /// Hash trees of recent large payloads, for edits that rehash only what changed.
    pub(crate) trees: Arc<TreeCache>,
    /// Chunk lists of recently read leaves.
    indexes: Mutex<VecDeque<(Hash, Arc<LeafIndex>)>>,
    /// Node ids reserved in `meta_v1`, handed out by write transactions.
    ids: Mutex<NodeIds>,
    closed: AtomicBool,
    recovered: bool,
    _lock: File,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("dir", &self.dir)
            .field("player", &self.player.name)
            .finish_non_exhaustive()
    }
}

impl W<'_> {
    pub(crate) fn node(&mut self, id: NodeId) -> Result<Node> {
        match self.nodes()?.get(id.0)? {
            Some(v) => decode("node", v.value()),
            None => Err(Error::NoSuchNode(id)),
        }
    }

    pub(crate) fn put_node(&mut self, node: &Node) -> Result<()> {
        self.nodes()?.insert(node.id.0, encode(node).as_slice())?;
        Ok(())
    }

    /// A chunk's row.
    pub(crate) fn chunk(&mut self, hash: &Hash) -> Result<Option<ChunkRecord>> {
        Ok(self.chunks()?.get(hash)?.map(|v| ChunkRecord::from_value(v.value())))
    }

    pub(crate) fn put_chunk(&mut self, hash: &Hash, rec: ChunkRecord) -> Result<()> {
        self.chunks()?.insert(hash, rec.value())?;
        Ok(())
    }

    /// Every chunk row (for the migrations).
    fn chunk_rows(&mut self) -> Result<Vec<(Hash, ChunkRecord)>> {
        Ok(self
            .chunks()?
            .iter()?
            .map(|r| r.map(|(k, v)| (*k.value(), ChunkRecord::from_value(v.value()))))
            .collect::<Result<_, _>>()?)
    }

    pub(crate) fn tree(&mut self, id: &Hash) -> Result<TreeRecord> {
        match self.trees()?.get(id)? {
            Some(v) => decode("tree", v.value()),
            None => Err(Error::NoSuchArtifact(ArtifactId::Doc(*id))),
        }
    }

    pub(crate) fn put_tree(&mut self, id: &Hash, t: &TreeRecord) -> Result<()> {
        self.trees()?.insert(id, encode(t).as_slice())?;
        Ok(())
    }

    /// A directory node and its tree record.
    pub(crate) fn dir(&mut self, id: NodeId) -> Result<(Node, TreeRecord)> {
        let node = self.node(id)?;
        match (node.kind, node.tree) {
            (NodeKind::Dir, Some(t)) => {
                let tree = self.tree(&t)?;
                Ok((node, tree))
            }
            _ => Err(Error::NotADirectory(id)),
        }
    }

    pub(crate) fn entry(&mut self, parent: NodeId, name: &[u8]) -> Result<Option<(NodeId, u64)>> {
        Ok(self.entries()?.get((parent.0, name))?.map(|v| {
            let (child, pos) = v.value();
            (NodeId(child), pos)
        }))
    }

    fn add_entry(
        &mut self,
        parent: &Node,
        name: &[u8],
        child: NodeId,
        position: Option<u64>,
    ) -> Result<u64> {
        let position = match position {
            Some(p) => p,
            None => {
                let tid = parent.tree.ok_or(Error::NotADirectory(parent.id))?;
                let mut tree = self.tree(&tid)?;
                let p = tree.next_position;
                tree.next_position += 1;
                self.put_tree(&tid, &tree)?;
                p
            }
        };
        self.entries()?.insert((parent.id.0, name), (child.0, position))?;
        self.order()?.insert((parent.id.0, position), name)?;
        Ok(position)
    }

    fn remove_entry(&mut self, parent: NodeId, name: &[u8]) -> Result<u64> {
        let pos = match self.entries()?.remove((parent.0, name))? {
            Some(v) => v.value().1,
            None => return Err(Error::NotFound { parent, name: lossy(name) }),
        };
        self.order()?.remove((parent.0, pos))?;
        Ok(pos)
    }

    fn is_empty_dir(&mut self, dir: NodeId) -> Result<bool> {
        Ok(self.order()?.range((dir.0, 0)..=(dir.0, u64::MAX))?.next().is_none())
    }

    /// Whether `node` is `ancestor` or lies below it.
    fn is_within(&mut self, node: NodeId, ancestor: NodeId) -> Result<bool> {
        let mut cur = node;
        for _ in 0..100_000 {
            if cur == ancestor {
                return Ok(true);
            }
            if cur == NodeId::ROOT {
                return Ok(false);
            }
            cur = match self.node(cur)?.parent {
                Some(p) => p,
                None => return Ok(false),
            };
        }
        Err(Error::CorruptRecord("node", format!("parent chain of {node} does not end")))
    }

    /// A new node id. Ids come from a block reserved in `meta_v1` (`next_node` is the end of
    /// the reservation), so most creations do not write the meta table; a crash skips at most
    /// the rest of a block, and no id is ever handed out twice.
    pub(crate) fn alloc_node(&mut self) -> Result<NodeId> {
        let ids = self.ids.ok_or_else(|| {
            Error::CorruptRecord("meta", "node ids are allocated only on an open store".into())
        })?;
        let mut ids = ids.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.next >= ids.pending.unwrap_or(ids.limit) {
            let limit = ids.next + NODE_ID_BLOCK;
            self.meta()?.insert(META_NEXT_NODE, u64_bytes(limit).as_slice())?;
            ids.pending = Some(limit);
        }
        let id = ids.next;
        ids.next += 1;
        Ok(NodeId(id))
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
            self.unref()?.insert(&staged.hash, now.secs)?;
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
    fn store_chunk_list(
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

    /// Formats 1 and 2 kept chunk rows without places in `chunks_v1`; they move to
    /// `chunks_v3` (`migrate_chunk_files` fills in the places).
    fn migrate_chunk_table(&mut self) -> Result<()> {
        let rows: Vec<(Hash, (u32, u64))> = {
            let old = self.txn()?.open_table(CHUNKS_V1)?;
            old.iter()?
                .map(|r| r.map(|(k, v)| (*k.value(), v.value())))
                .collect::<Result<_, _>>()?
        };
        for (chunk, (len, refs)) in rows {
            self.put_chunk(&chunk, ChunkRecord { len, refs, loc: None })?;
        }
        self.txn()?.delete_table(CHUNKS_V1)?;
        Ok(())
    }

    /// Format 1 kept one row per chunk of every leaf; format 2 keeps segments. Chunk reference
    /// counts change meaning (rows of stored segments, not of leaves), so they are recounted.
    fn migrate_v1(&mut self) -> Result<()> {
        let chunked: Vec<Hash> = self
            .leaves()?
            .iter()?
            .map(|r| -> Result<Option<Hash>> {
                let (k, v) = r?;
                Ok((!decode::<LeafRecord>("leaf", v.value())?.inline).then(|| *k.value()))
            })
            .filter_map(Result::transpose)
            .collect::<Result<_>>()?;
        let rows = self.chunk_rows()?;
        for (chunk, rec) in &rows {
            self.put_chunk(chunk, ChunkRecord { refs: 0, ..*rec })?;
        }
        {
            let old = self.txn()?.open_table(LEAF_CHUNKS_V1)?;
            for leaf in &chunked {
                let list: Vec<(Hash, u32)> = old
                    .range((leaf, 0)..=(leaf, u64::MAX))?
                    .map(|r| r.map(|(_, v)| (*v.value().0, v.value().1)))
                    .collect::<Result<_, _>>()?;
                self.store_chunk_list(leaf, &LeafIndex::new(list), &mut HashMap::new())?;
            }
        }
        self.txn()?.delete_table(LEAF_CHUNKS_V1)?;
        for (chunk, _) in &rows {
            if self.chunk(chunk)?.is_some_and(|c| c.refs == 0) {
                self.dead()?.insert(chunk, ())?;
            }
        }
        Ok(())
    }

    /// Formats 1 and 2 kept each chunk in a file of its own, `chunks/<xx>/<hex>`; format 3
    /// appends chunks to packs. This copies every chunk without a place into a pack and
    /// records where; the packs are synced here, and `Vault::open` deletes the old files once
    /// this commits. A chunk whose file is gone, or is not the recorded length (copied to
    /// `quarantine/`), stays without a place (fsck reports it missing).
    fn migrate_chunk_files(&mut self, store: &ChunkStore, dir: &Path) -> Result<()> {
        let old = dir.join("chunks");
        let rows = self.chunk_rows()?;
        let mut missing = 0u64;
        for (chunk, rec) in rows {
            if rec.loc.is_some() {
                continue;
            }
            let name = hex(&chunk);
            let path = old.join(&name[..2]).join(&name);
            let data = match fs::read(&path) {
                Ok(data) => data,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing += 1;
                    continue;
                }
                Err(e) => return Err(Error::io(&path, e)),
            };
            if data.len() != rec.len as usize {
                // Damaged: set aside like a quarantined chunk (no place; reads fail as missing
                // until the content is written again), since a place spans `rec.len` bytes.
                let quarantine = dir.join("quarantine");
                fs::create_dir_all(&quarantine).map_err(|e| Error::io(&quarantine, e))?;
                fs::write(quarantine.join(&name), &data).map_err(|e| Error::io(&quarantine, e))?;
                missing += 1;
                continue;
            }
            let loc = store.append(&data).map_err(|e| Error::io(store.pack_dir(), e))?;
            self.put_chunk(&chunk, ChunkRecord { loc: Some(loc), ..rec })?;
        }
        if missing > 0 {
            tracing::warn!(missing, "chunk files missing or damaged while migrating to packs");
        }
        store.sync_pending().map_err(|e| Error::io(store.pack_dir(), e))?;
        Ok(())
    }

    fn leaf(&mut self, hash: &Hash) -> Result<LeafRecord> {
        match self.leaves()?.get(hash)? {
            Some(v) => decode("leaf", v.value()),
            None => Err(Error::NoSuchArtifact(ArtifactId::Blob(*hash))),
        }
    }

    pub(crate) fn leaf_size(&mut self, hash: &Hash) -> Result<u64> {
        Ok(self.leaf(hash)?.size)
    }

    pub(crate) fn leaf_incref(&mut self, hash: &Hash) -> Result<()> {
        if *hash == EMPTY_LEAF {
            return Ok(());
        }
        let mut rec = self.leaf(hash)?;
        rec.refs += 1;
        if rec.refs == 1 {
            self.unref()?.remove(hash)?;
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
        if rec.refs == 0 {
            self.unref()?.insert(hash, now.secs)?;
        }
        self.leaves()?.insert(hash, encode(&rec).as_slice())?;
        Ok(())
    }

    /// Drops one link from a node; at zero links it joins the orphan list.
    fn drop_link(&mut self, node: &mut Node, now: Timestamp) -> Result<()> {
        if node.kind == NodeKind::Dir {
            node.nlink = 0;
        } else {
            node.nlink = node.nlink.saturating_sub(1);
        }
        node.ctime = now;
        if node.nlink == 0 {
            self.orphans()?.insert(node.id.0, ())?;
        }
        self.put_node(node)
    }

    /// Deletes a node with no links, with its content reference, xattrs and tree.
    pub(crate) fn reap(&mut self, id: NodeId, now: Timestamp) -> Result<bool> {
        let node = match self.node(id) {
            Ok(n) => n,
            Err(Error::NoSuchNode(_)) => {
                self.orphans()?.remove(id.0)?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if node.nlink > 0 {
            self.orphans()?.remove(id.0)?;
            return Ok(false);
        }
        if let Some(h) = node.content {
            self.leaf_decref(&h, now)?;
        }
        if let Some(t) = node.tree {
            self.trees()?.remove(&t)?;
        }
        let names: Vec<Vec<u8>> = self
            .xattrs()?
            .range((id.0, &[][..])..)?
            .map_while(|r| r.ok().filter(|(k, _)| k.value().0 == id.0))
            .map(|(k, _)| k.value().1.to_vec())
            .collect();
        for n in names {
            self.xattrs()?.remove((id.0, n.as_slice()))?;
        }
        self.nodes()?.remove(id.0)?;
        self.orphans()?.remove(id.0)?;
        self.attention()?.remove(id.0)?;
        Ok(true)
    }

    /// The name a directory has in its parent (empty for the root).
    fn name_in_parent(&mut self, dir: &Node) -> Result<Vec<u8>> {
        let Some(parent) = dir.parent else { return Ok(Vec::new()) };
        for row in self.entries()?.range((parent.0, &[][..])..)? {
            let (k, v) = row?;
            let (p, name) = k.value();
            if p != parent.0 {
                break;
            }
            if v.value().0 == dir.id.0 {
                return Ok(name.to_vec());
            }
        }
        Ok(Vec::new())
    }

    fn touch_dir(&mut self, dir: &mut Node, now: Timestamp) -> Result<()> {
        dir.mtime = now;
        dir.ctime = now;
        self.put_node(dir)
    }
}

/// Checks a directory entry name: non-empty, not `.` or `..`, no `/` or NUL, at most 255
/// bytes. Any other bytes, including non-UTF-8, are allowed and stored as they are.
pub fn validate_name(name: &[u8]) -> Result<()> {
    let bad = |reason| Err(Error::InvalidName { name: lossy(name), reason });
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > NAME_MAX {
        return Err(Error::NameTooLong(name.len()));
    }
    if name == b"." || name == b".." {
        return bad("reserved");
    }
    if name.contains(&b'/') {
        return bad("contains '/'");
    }
    if name.contains(&0) {
        return bad("contains NUL");
    }
    Ok(())
}

fn random_id() -> Result<Hash> {
    let mut id = [0u8; 32];
    getrandom::fill(&mut id)
        .map_err(|e| Error::io("getrandom", io::Error::other(e.to_string())))?;
    Ok(id)
}

/// Everything a new node needs beyond its attributes.
pub(crate) fn new_node(id: NodeId, spec: &NewNode, now: Timestamp) -> Node {
    Node {
        id,
        kind: spec.kind,
        perm: spec.perm & 0o7777,
        uid: spec.uid,
        gid: spec.gid,
        rdev: spec.rdev,
        nlink: 1,
        size: 0,
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        content: None,
        symlink: None,
        tree: None,
        parent: None,
    }
}

impl Vault {
    /// Opens the vault in `dir`, creating it for `player` if it is new.
    ///
    /// Fails with `Locked` if another process has it open, and with `WrongPlayer` if it
    /// belongs to another player.
    pub fn open(dir: &Path, player: &str, opts: &Options) -> Result<Vault> {
        Self::open_inner(dir, Some(player), opts)
    }

    /// Opens an existing vault whatever its player (for admin commands).
    pub fn open_existing(dir: &Path, opts: &Options) -> Result<Vault> {
        if !dir.join("meta.redb").exists() {
            return Err(Error::io(dir.join("meta.redb"), io::ErrorKind::NotFound.into()));
        }
        Self::open_inner(dir, None, opts)
    }

    fn open_inner(dir: &Path, player: Option<&str>, opts: &Options) -> Result<Vault> {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked(dir.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        let faults = opts.faults.clone();
        let db_path = dir.join("meta.redb");
        let reopen_opts = opts.clone();
        let reopen_path = db_path.clone();
        let meta = Arc::new(Meta::new(
            open_db(&db_path, opts)?,
            Box::new(move || open_db(&reopen_path, &reopen_opts)),
        ));
        let chunks = Arc::new(
            ChunkStore::open(dir, meta.clone(), faults.clone(), opts.pack_bytes)
                .map_err(|e| Error::io(dir, e))?,
        );
        let (player, was_open) = init_meta(&*meta.db()?, &chunks, dir, player)?;
        // Chunk files of format 2, left behind if a migration committed but the process
        // stopped before it removed them.
        let old_chunks = dir.join("chunks");
        if old_chunks.is_dir() {
            fs::remove_dir_all(&old_chunks).map_err(|e| Error::io(&old_chunks, e))?;
        }
        let next_node = {
            let txn = meta.db()?.begin_read()?;
            match txn.open_table(META)?.get(META_NEXT_NODE)? {
                Some(v) => bytes_u64("next_node", v.value())?,
                None => NodeId::FIRST_DYNAMIC,
            }
        };
        let vault = Vault {
            dir: dir.to_path_buf(),
            meta,
            chunks,
            player,
            faults,
            trees: Arc::default(),
            indexes: Mutex::default(),
            ids: Mutex::new(NodeIds { next: next_node, limit: next_node, pending: None }),
            closed: AtomicBool::new(false),
            recovered: was_open,
            _lock: lock,
        };
        if was_open {
            tracing::warn!(dir = %dir.display(), "store was not closed cleanly; recovering");
            vault.sweep_packs()?;
        }
        vault.reap_orphans()?;
        Ok(vault)
    }

    /// Whether this open found the store not closed cleanly (and recovered it).
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn player(&self) -> PlayerId {
        self.player.id
    }

    pub fn player_name(&self) -> &str {
        &self.player.name
    }

    /// A directory on the store's filesystem for spill files; emptied at every open.
    pub fn tmp_dir(&self) -> &Path {
        self.chunks.tmp_dir()
    }

    /// Runs `f` in a write transaction of its own, after every pending change, and commits
    /// it with the given strength. If `f` fails, nothing it did is committed.
    pub(crate) fn write<R>(
        &self,
        commit: Commit,
        f: impl FnOnce(&WriteTransaction) -> Result<R>,
    ) -> Result<R> {
        self.meta.write(commit.strength(), || self.before_commit(commit), f)
    }

    /// What runs just before a commit: with `Durable`, every chunk written so far is made
    /// durable first, so that metadata never lands before the bytes it names.
    fn before_commit(&self, commit: Commit) -> Result<()> {
        if commit == Commit::Durable {
            self.chunks.sync_pending().map_err(|e| Error::io(self.chunks.pack_dir(), e))?;
        }
        self.commit_fault()
    }

    /// The test fault injector's say at a commit point (an operation's, or a flush's).
    fn commit_fault(&self) -> Result<()> {
        chunks::check(&self.faults, IoStep::Commit).map_err(|e| Error::io(&self.dir, e))
    }

    /// Runs `f` as one operation on the filesystem tables: all of it takes effect, at once,
    /// or none of it does. It lands in memory; with `Durable` it is flushed durably before
    /// this returns, otherwise at the next sync or `flush_pending` (or here, once far more is
    /// pending than `wants_flush` asks for).
    pub(crate) fn write_fs<R>(
        &self,
        commit: Commit,
        f: impl FnOnce(&mut W) -> Result<R>,
    ) -> Result<R> {
        let (out, full) = self.meta.op(
            Some(&self.ids),
            |w| {
                let out = f(w)?;
                self.commit_fault()?;
                Ok(out)
            },
            // Operations are serialised, so this settles exactly this one's reservation.
            |ok| self.ids.lock().unwrap_or_else(PoisonError::into_inner).settle(ok),
        )?;
        if commit == Commit::Durable {
            self.flush(Commit::Durable)?;
        } else if full && let Err(e) = self.flush(Commit::CrashConsistent) {
            // The operation has taken effect; its rows wait for the next flush.
            tracing::warn!(error = %e, "flushing pending metadata failed; will retry");
        }
        Ok(out)
    }

    /// Whether enough changes are pending in memory that `flush_pending` should run now,
    /// before the next periodic sync.
    pub fn wants_flush(&self) -> bool {
        self.meta.wants_flush()
    }

    /// Writes every pending change to the database, crash-consistently (not durably).
    pub fn flush_pending(&self) -> Result<()> {
        self.flush(Commit::CrashConsistent)
    }

    /// Writes every pending change to the database (durably, whatever `commit` says, once
    /// many rows wait for a durable commit: they are held in memory until one).
    fn flush(&self, commit: Commit) -> Result<()> {
        let commit = if self.meta.wants_durable() { Commit::Durable } else { commit };
        self.meta.flush(commit.strength(), || self.before_commit(commit))
    }

    /// Runs `f` on a read-only view of the filesystem tables, pending changes included.
    pub(crate) fn read_fs<R>(&self, f: impl FnOnce(&mut W) -> Result<R>) -> Result<R> {
        self.meta.read(f)
    }

    /// A snapshot of the database with every change so far in it (pending ones are flushed
    /// first). For scans; point reads go through `read_fs`.
    pub(crate) fn read_txn(&self) -> Result<ReadTransaction> {
        if self.meta.pending() {
            self.flush(Commit::CrashConsistent)?;
        }
        Ok(self.meta.db()?.begin_read()?)
    }

    /// Makes every change so far durable. Cheap when nothing is pending.
    pub fn sync(&self) -> Result<()> {
        if self.meta.dirty() {
            self.flush(Commit::Durable)?;
        }
        Ok(())
    }

    /// Whether some change is not yet durable.
    pub fn has_unsynced(&self) -> bool {
        self.meta.dirty()
    }

    /// Closes the store cleanly: everything durable, the crash marker cleared.
    pub fn close(self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.reclaim_abandoned()?;
        self.write(Commit::Durable, |txn| {
            let mut meta = txn.open_table(META)?;
            meta.remove(META_OPEN)?;
            Ok(())
        })
    }

    // ----- reads -----

    pub fn node(&self, id: NodeId) -> Result<Node> {
        self.read_fs(|r| r.node(id))
    }

    /// The node named `name` in directory `parent`.
    pub fn lookup(&self, parent: NodeId, name: &[u8]) -> Result<Node> {
        validate_name(name)?;
        self.read_fs(|r| {
            if r.node(parent)?.kind != NodeKind::Dir {
                return Err(Error::NotADirectory(parent));
            }
            match r.entry(parent, name)? {
                Some((child, _)) => r.node(child),
                None => Err(Error::NotFound { parent, name: lossy(name) }),
            }
        })
    }

    /// Up to `limit` entries of `dir` in position order, starting after position `after`
    /// (0 for the start). Positions are stable, so they serve as readdir cookies.
    pub fn list(&self, dir: NodeId, after: u64, limit: usize) -> Result<Vec<DirEntry>> {
        self.read_fs(|r| {
            if r.node(dir)?.kind != NodeKind::Dir {
                return Err(Error::NotADirectory(dir));
            }
            let start = after.saturating_add(1);
            let mut names = Vec::new();
            for row in r.order()?.range((dir.0, start)..=(dir.0, u64::MAX))?.take(limit) {
                let (k, name) = row?;
                names.push((k.value().1, name.value().to_vec()));
            }
            let mut out = Vec::with_capacity(names.len());
            for (position, name) in names {
                let Some((child, _)) = r.entry(dir, &name)? else {
                    return Err(Error::CorruptRecord(
                        "order",
                        format!("{dir} lists a missing entry"),
                    ));
                };
                let kind = r.node(child)?.kind;
                out.push(DirEntry { name, node: child, kind, position });
            }
            Ok(out)
        })
    }

    /// The parent of a directory (the root is its own parent).
    pub fn parent_of(&self, dir: NodeId) -> Result<NodeId> {
        let node = self.node(dir)?;
        Ok(node.parent.unwrap_or(NodeId::ROOT))
    }

    // ----- payloads -----

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
        Ok(LeafReader { vault: self, leaf: *leaf, pos: 0, size })
    }

    /// Reads a whole leaf into memory (for small payloads and tests).
    pub fn read_all(&self, leaf: &Hash) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut r = self.leaf_reader(leaf)?;
        r.read_to_end(&mut out).map_err(|e| match e.downcast::<Error>() {
            Ok(inner) => inner,
            Err(e) => Error::io(self.dir.clone(), e),
        })?;
        Ok(out)
    }

    // ----- node mutations -----

    /// Creates a node named `name` in `parent`. A file gets `content`, or the empty leaf.
    pub fn create(
        &self,
        parent: NodeId,
        name: &[u8],
        spec: &NewNode,
        content: Option<StagedLeaf>,
        now: Timestamp,
        commit: Commit,
    ) -> Result<Node> {
        validate_name(name)?;
        let content = match (spec.kind, content) {
            (NodeKind::File, Some(c)) => Some(c),
            (NodeKind::File, None) => Some(self.stage(&[])?),
            (_, Some(_)) => return Err(Error::NotAFile(parent)),
            (_, None) => None,
        };
        self.write_fs(commit, |w| {
            let (mut dir, dir_tree) = w.dir(parent)?;
            if dir.nlink == 0 {
                return Err(Error::NotFound { parent, name: lossy(name) });
            }
            if w.entry(parent, name)?.is_some() {
                return Err(Error::Exists { parent, name: lossy(name) });
            }
            let id = w.alloc_node()?;
            let mut node = new_node(id, spec, now);
            match spec.kind {
                NodeKind::File => {
                    if let Some(staged) = &content {
                        w.adopt_leaf(staged, now)?;
                        node.content = Some(staged.hash);
                        node.size = staged.size;
                    }
                }
                NodeKind::Dir => {
                    let tree_id = random_id()?;
                    let parent_name = w.name_in_parent(&dir)?;
                    let tree = TreeRecord {
                        node: id,
                        tree_type: TreeType::infer(&parent_name, name),
                        steward: dir_tree.steward,
                        audience: Vec::new(),
                        next_position: 1,
                        created_at: now,
                    };
                    w.put_tree(&tree_id, &tree)?;
                    node.tree = Some(tree_id);
                    node.nlink = 2;
                    node.parent = Some(parent);
                    dir.nlink = dir.nlink.checked_add(1).ok_or(Error::TooManyLinks(parent))?;
                }
                NodeKind::Symlink => {
                    let target = spec.symlink.clone().unwrap_or_default();
                    node.size = target.len() as u64;
                    node.symlink = Some(target);
                }
                NodeKind::Fifo
                | NodeKind::Socket
                | NodeKind::CharDevice
                | NodeKind::BlockDevice => {}
            }
            w.put_node(&node)?;
            w.add_entry(&dir, name, id, None)?;
            w.touch_dir(&mut dir, now)?;
            Ok(node)
        })
        .inspect(|_| {
            if let Some(c) = &content {
                self.committed(c);
            }
        })
    }

    /// Adds a hard link to `node` named `name` in `parent`.
    pub fn link(
        &self,
        node: NodeId,
        parent: NodeId,
        name: &[u8],
        now: Timestamp,
        commit: Commit,
    ) -> Result<Node> {
        validate_name(name)?;
        self.write_fs(commit, |w| {
            let mut target = w.node(node)?;
            if target.kind == NodeKind::Dir {
                return Err(Error::NotPermitted(node, "hard link to a directory"));
            }
            if target.nlink == 0 {
                return Err(Error::NoSuchNode(node));
            }
            if target.nlink >= LINK_MAX {
                return Err(Error::TooManyLinks(node));
            }
            let (mut dir, _) = w.dir(parent)?;
            if dir.nlink == 0 {
                return Err(Error::NotFound { parent, name: lossy(name) });
            }
            if w.entry(parent, name)?.is_some() {
                return Err(Error::Exists { parent, name: lossy(name) });
            }
            target.nlink += 1;
            target.ctime = now;
            w.put_node(&target)?;
            w.add_entry(&dir, name, node, None)?;
            w.touch_dir(&mut dir, now)?;
            Ok(target)
        })
    }

    /// Removes the entry `name` from `parent`: `unlink(2)` when `dir` is false, `rmdir(2)`
    /// when true. Returns the node as it is now; at zero links it is an orphan until `reap`.
    pub fn remove(
        &self,
        parent: NodeId,
        name: &[u8],
        dir: bool,
        now: Timestamp,
        commit: Commit,
    ) -> Result<Node> {
        validate_name(name)?;
        self.write_fs(commit, |w| {
            let (mut pnode, _) = w.dir(parent)?;
            let Some((child, _)) = w.entry(parent, name)? else {
                return Err(Error::NotFound { parent, name: lossy(name) });
            };
            let mut node = w.node(child)?;
            match (dir, node.kind == NodeKind::Dir) {
                (false, true) => return Err(Error::IsADirectory(child)),
                (true, false) => return Err(Error::NotADirectory(child)),
                (true, true) => {
                    if !w.is_empty_dir(child)? {
                        return Err(Error::NotEmpty(child));
                    }
                    pnode.nlink = pnode.nlink.saturating_sub(1);
                }
                (false, false) => {}
            }
            w.remove_entry(parent, name)?;
            w.drop_link(&mut node, now)?;
            w.touch_dir(&mut pnode, now)?;
            Ok(node)
        })
    }

    /// Renames `src_name` in `src_parent` to `dst_name` in `dst_parent`, as `renameat2(2)`.
    /// Returns the node that was replaced, if any, as it is now (it may be an orphan).
    #[allow(clippy::too_many_arguments, clippy::too_many_lines)]
    pub fn rename(
        &self,
        src_parent: NodeId,
        src_name: &[u8],
        dst_parent: NodeId,
        dst_name: &[u8],
        mode: RenameMode,
        now: Timestamp,
        commit: Commit,
    ) -> Result<Option<Node>> {
        validate_name(src_name)?;
        validate_name(dst_name)?;
        self.write_fs(commit, |w| {
            w.dir(src_parent)?;
            let (dst_dir, _) = w.dir(dst_parent)?;
            let Some((src, src_pos)) = w.entry(src_parent, src_name)? else {
                return Err(Error::NotFound { parent: src_parent, name: lossy(src_name) });
            };
            let dst = w.entry(dst_parent, dst_name)?;
            let mut src_node = w.node(src)?;
            let src_is_dir = src_node.kind == NodeKind::Dir;
            // A removed directory takes no new entries; its stale parent pointer must not be
            // walked for the cycle check.
            if dst_dir.nlink == 0 {
                return Err(Error::NotFound { parent: dst_parent, name: lossy(dst_name) });
            }
            if src_is_dir && w.is_within(dst_parent, src)? {
                return Err(Error::Cycle(src, dst_parent));
            }
            let same_parent = src_parent == dst_parent;

            if mode == RenameMode::Exchange {
                let Some((dst, dst_pos)) = dst else {
                    return Err(Error::NotFound { parent: dst_parent, name: lossy(dst_name) });
                };
                if dst == src {
                    return Ok(None);
                }
                let mut dst_node = w.node(dst)?;
                let dst_is_dir = dst_node.kind == NodeKind::Dir;
                if dst_is_dir && w.is_within(src_parent, dst)? {
                    return Err(Error::Cycle(dst, src_parent));
                }
                w.entries()?.insert((src_parent.0, src_name), (dst.0, src_pos))?;
                w.entries()?.insert((dst_parent.0, dst_name), (src.0, dst_pos))?;
                if !same_parent {
                    if src_is_dir {
                        src_node.parent = Some(dst_parent);
                    }
                    if dst_is_dir {
                        dst_node.parent = Some(src_parent);
                    }
                    let delta = i64::from(src_is_dir) - i64::from(dst_is_dir);
                    let mut sp = w.node(src_parent)?;
                    let mut dp = w.node(dst_parent)?;
                    sp.nlink = sp.nlink.saturating_add_signed(-delta as i32);
                    dp.nlink = dp.nlink.saturating_add_signed(delta as i32);
                    w.put_node(&sp)?;
                    w.put_node(&dp)?;
                }
                src_node.ctime = now;
                dst_node.ctime = now;
                w.put_node(&src_node)?;
                w.put_node(&dst_node)?;
                Self::touch_parents(w, src_parent, dst_parent, now)?;
                return Ok(None);
            }

            let mut replaced = None;
            let mut position = None;
            if let Some((dst, dst_pos)) = dst {
                if mode == RenameMode::NoReplace {
                    return Err(Error::Exists { parent: dst_parent, name: lossy(dst_name) });
                }
                if dst == src {
                    // Two names for one node: POSIX says do nothing.
                    return Ok(None);
                }
                let mut dst_node = w.node(dst)?;
                let dst_is_dir = dst_node.kind == NodeKind::Dir;
                match (src_is_dir, dst_is_dir) {
                    (true, false) => return Err(Error::NotADirectory(dst)),
                    (false, true) => return Err(Error::IsADirectory(dst)),
                    (true, true) if !w.is_empty_dir(dst)? => return Err(Error::NotEmpty(dst)),
                    _ => {}
                }
                w.remove_entry(dst_parent, dst_name)?;
                if dst_is_dir {
                    let mut dp = w.node(dst_parent)?;
                    dp.nlink = dp.nlink.saturating_sub(1);
                    w.put_node(&dp)?;
                }
                w.drop_link(&mut dst_node, now)?;
                replaced = Some(dst_node);
                // The new entry takes over the replaced one's place in the listing.
                position = Some(dst_pos);
            } else if same_parent {
                position = Some(src_pos);
            }
            w.remove_entry(src_parent, src_name)?;
            let dst_dir = w.node(dst_parent)?;
            w.add_entry(&dst_dir, dst_name, src, position)?;
            if src_is_dir && !same_parent {
                src_node.parent = Some(dst_parent);
                let mut sp = w.node(src_parent)?;
                sp.nlink = sp.nlink.saturating_sub(1);
                w.put_node(&sp)?;
                let mut dp = w.node(dst_parent)?;
                dp.nlink = dp.nlink.saturating_add(1);
                w.put_node(&dp)?;
            }
            src_node.ctime = now;
            w.put_node(&src_node)?;
            Self::touch_parents(w, src_parent, dst_parent, now)?;
            Ok(replaced)
        })
    }

    fn touch_parents(w: &mut W, a: NodeId, b: NodeId, now: Timestamp) -> Result<()> {
        let mut pa = w.node(a)?;
        w.touch_dir(&mut pa, now)?;
        if a != b {
            let mut pb = w.node(b)?;
            w.touch_dir(&mut pb, now)?;
        }
        Ok(())
    }

    /// Changes attributes. A change of mode or owner sets ctime to `now`.
    pub fn set_attr(
        &self,
        id: NodeId,
        attr: &SetAttr,
        now: Timestamp,
        commit: Commit,
    ) -> Result<Node> {
        self.write_fs(commit, |w| {
            let mut node = w.node(id)?;
            if let Some(p) = attr.perm {
                node.perm = p & 0o7777;
            }
            if let Some(u) = attr.uid {
                node.uid = u;
            }
            if let Some(g) = attr.gid {
                node.gid = g;
            }
            if let Some(t) = attr.atime {
                node.atime = t;
            }
            if let Some(t) = attr.mtime {
                node.mtime = t;
            }
            node.ctime = attr.ctime.unwrap_or(now);
            w.put_node(&node)?;
            Ok(node)
        })
    }

    /// Points a file node at new content. `mtime` and ctime become `now`.
    pub fn set_content(
        &self,
        id: NodeId,
        staged: &StagedLeaf,
        now: Timestamp,
        commit: Commit,
    ) -> Result<Node> {
        self.write_fs(commit, |w| {
            let mut node = w.node(id)?;
            match node.kind {
                NodeKind::File => {}
                NodeKind::Dir => return Err(Error::IsADirectory(id)),
                _ => return Err(Error::NotAFile(id)),
            }
            w.adopt_leaf(staged, now)?;
            if let Some(old) = node.content {
                w.leaf_decref(&old, now)?;
            }
            node.content = Some(staged.hash);
            node.size = staged.size;
            node.mtime = now;
            node.ctime = now;
            w.put_node(&node)?;
            Ok(node)
        })
        .inspect(|_| self.committed(staged))
    }

    /// Deletes a node that has no links left. Call it once nothing holds the node open.
    /// Returns whether anything was deleted.
    pub fn reap(&self, id: NodeId, commit: Commit) -> Result<bool> {
        self.reap_all(&[id], commit).map(|n| n > 0)
    }

    /// Deletes every node of `ids` that has no links left, in one transaction; returns how
    /// many it deleted.
    pub fn reap_all(&self, ids: &[NodeId], commit: Commit) -> Result<usize> {
        let now = Timestamp::now();
        self.write_fs(commit, |w| {
            let mut n = 0;
            for id in ids {
                n += usize::from(w.reap(*id, now)?);
            }
            Ok(n)
        })
    }

    /// Reaps every orphan: at open nothing can hold one.
    fn reap_orphans(&self) -> Result<()> {
        let ids: Vec<u64> = {
            let txn = self.read_txn()?;
            let t = txn.open_table(ORPHANS)?;
            t.iter()?.map(|r| r.map(|(k, _)| k.value())).collect::<Result<_, _>>()?
        };
        if ids.is_empty() {
            return Ok(());
        }
        self.write_fs(Commit::Durable, |w| {
            for id in ids {
                w.reap(NodeId(id), Timestamp::now())?;
            }
            Ok(())
        })
    }

    // ----- xattrs -----

    pub fn get_xattr(&self, id: NodeId, name: &[u8]) -> Result<Vec<u8>> {
        self.read_fs(|r| match r.xattrs()?.get((id.0, name))? {
            Some(v) => Ok(v.value().to_vec()),
            None => {
                r.node(id)?;
                Err(Error::NoXattr(lossy(name)))
            }
        })
    }

    pub fn list_xattrs(&self, id: NodeId) -> Result<Vec<Vec<u8>>> {
        self.read_fs(|r| {
            r.node(id)?;
            let mut out = Vec::new();
            for row in r.xattrs()?.range((id.0, &[][..])..)? {
                let (k, _) = row?;
                let (n, name) = k.value();
                if n != id.0 {
                    break;
                }
                out.push(name.to_vec());
            }
            Ok(out)
        })
    }

    pub fn set_xattr(
        &self,
        id: NodeId,
        name: &[u8],
        value: &[u8],
        mode: XattrMode,
        now: Timestamp,
        commit: Commit,
    ) -> Result<()> {
        if name.is_empty() || name.len() > NAME_MAX {
            return Err(Error::NameTooLong(name.len()));
        }
        if value.len() > XATTR_VALUE_MAX {
            return Err(Error::XattrTooLarge(value.len()));
        }
        self.write_fs(commit, |w| {
            let mut node = w.node(id)?;
            let exists = w.xattrs()?.get((id.0, name))?.is_some();
            match (mode, exists) {
                (XattrMode::Create, true) => return Err(Error::XattrExists(lossy(name))),
                (XattrMode::Replace, false) => return Err(Error::NoXattr(lossy(name))),
                _ => {}
            }
            w.xattrs()?.insert((id.0, name), value)?;
            node.ctime = now;
            w.put_node(&node)
        })
    }

    pub fn remove_xattr(
        &self,
        id: NodeId,
        name: &[u8],
        now: Timestamp,
        commit: Commit,
    ) -> Result<()> {
        self.write_fs(commit, |w| {
            let mut node = w.node(id)?;
            if w.xattrs()?.remove((id.0, name))?.is_none() {
                return Err(Error::NoXattr(lossy(name)));
            }
            node.ctime = now;
            w.put_node(&node)
        })
    }

    // ----- figures -----

    /// Entry counts, each O(1): cheap enough for every `statfs` and status render.
    pub fn counts(&self) -> Result<Counts> {
        let txn = self.read_txn()?;
        Ok(Counts {
            nodes: txn.open_table(NODES)?.len()?,
            trees: txn.open_table(TREES)?.len()?,
            leaves: txn.open_table(LEAVES)?.len()?,
            chunks: txn.open_table(CHUNKS)?.len()?,
            events: txn.open_table(crate::schema::EVENTS)?.len()?,
        })
    }

    pub fn stats(&self) -> Result<Stats> {
        let txn = self.read_txn()?;
        let mut s = Stats {
            nodes: txn.open_table(NODES)?.len()?,
            trees: txn.open_table(TREES)?.len()?,
            leaves: txn.open_table(LEAVES)?.len()?,
            unreferenced_leaves: txn.open_table(UNREFERENCED)?.len()?,
            chunks: txn.open_table(CHUNKS)?.len()?,
            ..Stats::default()
        };
        for row in txn.open_table(LEAVES)?.iter()? {
            let (_, v) = row?;
            let rec: LeafRecord = decode("leaf", v.value())?;
            s.logical_bytes += rec.size;
            if rec.inline {
                s.inline_bytes += rec.size;
            }
        }
        for row in txn.open_table(CHUNKS)?.iter()? {
            let (_, v) = row?;
            s.chunk_bytes += u64::from(v.value().0);
        }
        for row in txn.open_table(NODES)?.iter()? {
            let (_, v) = row?;
            if decode::<Node>("node", v.value())?.kind == NodeKind::File {
                s.files += 1;
            }
        }
        s.db_bytes = fs::metadata(self.dir.join("meta.redb")).map_or(0, |m| m.len());
        s.pack_bytes =
            self.chunks.disk_bytes().map_err(|e| Error::io(self.chunks.pack_dir(), e))?;
        Ok(s)
    }
}

/// Node ids reserved per write of `meta_v1`.
const NODE_ID_BLOCK: u64 = 1024;

/// Node ids: `next` is the next to hand out; ids below `limit` are reserved durably (by
/// committed transactions), and `pending` is a larger reservation written by the running one.
#[derive(Debug)]
pub(crate) struct NodeIds {
    next: u64,
    limit: u64,
    pending: Option<u64>,
}

impl NodeIds {
    /// Ends a write transaction: its reservation stands if it committed. Ids it handed out
    /// are never handed out again either way.
    fn settle(&mut self, committed: bool) {
        if let Some(p) = self.pending.take()
            && committed
        {
            self.limit = p;
        }
    }
}

/// The id of the empty payload (`blake3::hash(b"")`). Every empty file shares it, so it is
/// pinned: never counted, never collected (counting it would add two table writes to every
/// file creation).
pub(crate) const EMPTY_LEAF: Hash = [
    0xaf, 0x13, 0x49, 0xb9, 0xf5, 0xf9, 0xa1, 0xa6, 0xa0, 0x40, 0x4d, 0xea, 0x36, 0xdc, 0xc9, 0x49,
    0x9b, 0xcb, 0x25, 0xc9, 0xad, 0xc1, 0x12, 0xb7, 0xcc, 0x9a, 0x93, 0xca, 0xe4, 0x1f, 0x32, 0x62,
];

/// Where a staging appended its fresh chunks, by hash.
fn appended(staged: &StagedLeaf) -> HashMap<Hash, Loc> {
    staged.appended.iter().copied().collect()
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

impl Drop for Vault {
    fn drop(&mut self) {
        if let Err(e) = self.close_inner() {
            tracing::error!(error = %e, "closing the store failed; it will recover at next open");
        }
    }
}

/// A `Read` over a leaf's content. Errors from the store are wrapped in `io::Error` and can
/// be recovered with `io::Error::downcast::<Error>`.
#[derive(Debug)]
pub struct LeafReader<'v> {
    vault: &'v Vault,
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
        let n = self.vault.read_at(&self.leaf, self.pos, buf).map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

pub(crate) fn open_db(path: &Path, opts: &Options) -> Result<Database> {
    let mut builder = Database::builder();
    if let Some(bytes) = opts.cache_bytes {
        builder.set_cache_size(bytes);
    }
    let db = match &opts.faults {
        None => builder.create(path)?,
        Some(faults) => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| Error::io(path, e))?;
            let inner = redb::backends::FileBackend::new(file)?;
            builder.create_with_backend(crate::faulty::FaultyBackend::new(inner, faults.clone()))?
        }
    };
    Ok(db)
}

/// Creates or checks the store-wide records, and sets the crash marker durably.
/// Returns the player and whether the marker was already set (an unclean shutdown).
fn init_meta(
    db: &Database,
    store: &ChunkStore,
    dir: &Path,
    player: Option<&str>,
) -> Result<(PlayerRecord, bool)> {
    let txn = db.begin_write()?;
    let out = {
        let mut w = W::direct(&txn);
        w.open_all()?;
        let format = w.meta()?.get(META_FORMAT)?.map(|v| v.value().to_vec());
        let rec = if let Some(format) = format {
            let found = u32::try_from(bytes_u64("format", &format)?).unwrap_or(u32::MAX);
            if !(FORMAT_OLDEST..=FORMAT_VERSION).contains(&found) {
                return Err(Error::UnsupportedVersion { path: dir.to_path_buf(), found });
            }
            if found <= 2 {
                tracing::info!(dir = %dir.display(), found, "migrating the store to format 3");
                w.migrate_chunk_table()?;
                if found == 1 {
                    w.migrate_v1()?;
                }
                w.migrate_chunk_files(store, dir)?;
            }
            if found < FORMAT_VERSION {
                w.meta()?.insert(META_FORMAT, u64_bytes(u64::from(FORMAT_VERSION)).as_slice())?;
            }
            let rec: PlayerRecord = match w.meta()?.get(META_PLAYER)? {
                Some(v) => decode("player", v.value())?,
                None => return Err(Error::CorruptRecord("meta", "no player".into())),
            };
            if let Some(p) = player
                && p != rec.name
            {
                return Err(Error::WrongPlayer { found: rec.name, requested: p.to_owned() });
            }
            rec
        } else {
            let Some(name) = player else {
                return Err(Error::CorruptRecord("meta", "store was never initialised".into()));
            };
            let rec = PlayerRecord { id: PlayerId::from_name(name), name: name.to_owned() };
            let now = Timestamp::now();
            w.meta()?.insert(META_FORMAT, u64_bytes(u64::from(FORMAT_VERSION)).as_slice())?;
            w.meta()?.insert(META_PLAYER, encode(&rec).as_slice())?;
            w.meta()?.insert(META_CREATED, encode(&now).as_slice())?;
            w.meta()?.insert(META_NEXT_NODE, u64_bytes(NodeId::FIRST_DYNAMIC).as_slice())?;
            let tree_id = random_id()?;
            let mut root = new_node(NodeId::ROOT, &NewNode::dir(0o755), now);
            root.nlink = 2;
            root.tree = Some(tree_id);
            w.put_node(&root)?;
            let tree = TreeRecord {
                node: NodeId::ROOT,
                tree_type: TreeType::Vault,
                steward: rec.id,
                audience: Vec::new(),
                next_position: 1,
                created_at: now,
            };
            w.put_tree(&tree_id, &tree)?;
            rec
        };
        // Every table exists from the start, so read transactions can always open them.
        txn.open_table(crate::schema::GRANTS)?;
        txn.open_table(crate::schema::PEERS)?;
        let was_open = w.meta()?.get(META_OPEN)?.is_some();
        w.meta()?.insert(META_OPEN, &[1u8][..])?;
        (rec, was_open)
    };
    txn.commit()?;
    Ok(out)
}
