//! Garbage collection and the consistency checker.
//!
//! GC deletes leaves that no node references (their inline bytes or chunk lists), then the
//! chunks no leaf references. It commits the metadata durably *before* it punches any chunk's
//! bytes out of its pack, so a crash can leave dead bytes (punched by the next full GC, or by
//! the sweep at open after an unclean shutdown) but never metadata that names punched bytes.
//! It holds the staging lock throughout, so a writer cannot adopt a chunk that is about to go.
//!
//! `fsck` recomputes every reference count and link count from the tables, verifies every
//! chunk against its hash, checks that no two chunks share bytes, and reports each
//! disagreement; `repair` fixes what can be fixed without guessing (counts, stray files,
//! dangling entries) and quarantines corrupt chunks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::path::PathBuf;

use redb::{ReadableTable, ReadableTableMetadata};

use crate::error::{Error, Result, lossy};
use crate::payload::chunks::{ChunkReadError, ChunkRecord, Loc, StagedMap};
use crate::payload::layout::EMPTY_LEAF;
use crate::payload::layout::{
    LeafList, decode_leaf_list, decode_segment, decode_segment_list, resolve_leaf_list,
};
use crate::payload::rows::size_i64;
use crate::store::meta::W;
use crate::store::schema::{
    CHUNKS, ENTRIES, HISTORY_REFS, INLINE, LEAF_SEGMENTS, LEAVES, LeafRecord, MIRROR, NODES, ORDER,
    ORPHANS, SEGMENT_RUNS, SEGMENTS, SNAPSHOTS, SnapshotRecord, TREES, UNREFERENCED, VERSIONS,
    VersionRecord, decode, encode, kind_code,
};
use crate::types::{Hash, MirrorEntry, Node, NodeId, NodeKind, Timestamp, hex};
use crate::vault::handle::{Commit, Vault};

/// After a `make_room` for a full disk that freed nothing, the next one waits this long:
/// until then, operations that run out of space fail at once.
const ROOM_QUIET: std::time::Duration = std::time::Duration::from_millis(100);

/// Progress of a long admin run, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub phase: &'static str,
    pub done: u64,
    pub total: u64,
}

/// What a GC run reclaimed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub leaves_removed: u64,
    pub inline_bytes_freed: u64,
    pub chunks_removed: u64,
    pub chunk_bytes_freed: u64,
    /// Packs deleted by a full GC because no live chunk was left in them.
    pub packs_removed: u64,
    /// Files in the pack directory that were not packs.
    pub stray_files_removed: u64,
}

impl GcReport {
    /// Adds what a further run reclaimed.
    fn absorb(&mut self, more: &GcReport) {
        self.leaves_removed += more.leaves_removed;
        self.inline_bytes_freed += more.inline_bytes_freed;
        self.chunks_removed += more.chunks_removed;
        self.chunk_bytes_freed += more.chunk_bytes_freed;
        self.packs_removed += more.packs_removed;
        self.stray_files_removed += more.stray_files_removed;
    }
}

/// One inconsistency found by `fsck`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    CorruptChunk(Hash),
    MissingChunk(Hash),
    /// Two chunks whose recorded ranges of a pack overlap.
    OverlappingChunks(Hash, Hash),
    /// A file in the pack directory that is not a pack.
    StrayFile(PathBuf),
    LeafHashMismatch(Hash),
    LeafLayout(Hash, String),
    MissingInline(Hash),
    MissingLeaf {
        node: NodeId,
        leaf: Hash,
    },
    MissingChunkRecord {
        segment: Hash,
        chunk: Hash,
    },
    LeafRefs {
        leaf: Hash,
        recorded: u64,
        actual: u64,
    },
    ChunkRefs {
        chunk: Hash,
        recorded: u64,
        actual: u64,
    },
    UnreferencedIndex(Hash),
    DanglingEntry {
        parent: NodeId,
        name: String,
        child: NodeId,
    },
    OrderMismatch {
        dir: NodeId,
        detail: String,
    },
    Nlink {
        node: NodeId,
        recorded: u32,
        actual: u32,
    },
    MissingTree(NodeId),
    BadParent(NodeId),
    /// A node with links that no directory reaches.
    Unreachable(NodeId),
    /// The count of versions and snapshots naming a leaf is wrong.
    HistoryRefs {
        leaf: Hash,
        recorded: u64,
        actual: u64,
    },
    /// A snapshot whose manifest cannot be read, or names a leaf the store lacks.
    Snapshot(String, String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::CorruptChunk(h) => write!(f, "chunk {} is corrupt", hex(h)),
            Problem::MissingChunk(h) => write!(f, "chunk {} is missing", hex(h)),
            Problem::OverlappingChunks(a, b) => {
                write!(f, "chunks {} and {} overlap in their pack", hex(a), hex(b))
            }
            Problem::StrayFile(p) => write!(f, "stray file {}", p.display()),
            Problem::LeafHashMismatch(h) => write!(f, "leaf {} does not hash to its id", hex(h)),
            Problem::LeafLayout(h, d) => write!(f, "leaf {}: {d}", hex(h)),
            Problem::MissingInline(h) => write!(f, "inline payload of leaf {} is missing", hex(h)),
            Problem::MissingLeaf { node, leaf } => {
                write!(f, "node {node} names missing leaf {}", hex(leaf))
            }
            Problem::MissingChunkRecord { segment, chunk } => {
                write!(f, "segment {} names unknown chunk {}", hex(segment), hex(chunk))
            }
            Problem::LeafRefs { leaf, recorded, actual } => {
                write!(f, "leaf {} records {recorded} references, has {actual}", hex(leaf))
            }
            Problem::ChunkRefs { chunk, recorded, actual } => {
                write!(f, "chunk {} records {recorded} references, has {actual}", hex(chunk))
            }
            Problem::UnreferencedIndex(h) => {
                write!(f, "GC index disagrees about leaf {}", hex(h))
            }
            Problem::DanglingEntry { parent, name, child } => {
                write!(f, "entry {name:?} in {parent} names missing node {child}")
            }
            Problem::OrderMismatch { dir, detail } => write!(f, "listing of {dir}: {detail}"),
            Problem::Nlink { node, recorded, actual } => {
                write!(f, "node {node} records {recorded} links, has {actual}")
            }
            Problem::MissingTree(n) => write!(f, "directory {n} has no tree record"),
            Problem::BadParent(n) => write!(f, "directory {n} has a wrong parent"),
            Problem::Unreachable(n) => write!(f, "node {n} has links but no directory reaches it"),
            Problem::HistoryRefs { leaf, recorded, actual } => write!(
                f,
                "leaf {} records {recorded} versions and snapshots naming it, has {actual}",
                hex(leaf)
            ),
            Problem::Snapshot(name, detail) => write!(f, "snapshot {name:?}: {detail}"),
        }
    }
}

/// The result of `fsck`.
#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    pub problems: Vec<Problem>,
    pub nodes_checked: u64,
    pub leaves_checked: u64,
    pub chunks_checked: u64,
    pub bytes_verified: u64,
    /// What `repair` changed.
    pub repaired: Vec<String>,
}

impl FsckReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How thorough `fsck` is and whether it repairs.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsckOptions {
    /// Also rehash every chunked leaf end to end.
    pub deep: bool,
    pub repair: bool,
}

impl Vault {
    /// Reclaims unreferenced leaves and chunks. Leaves unreferenced since after
    /// `unreferenced_before` are kept (pass `None` to reclaim all).
    /// Last, it sweeps the packs: it punches every range that no chunk owns, deletes packs
    /// with no live chunk and removes files that are not packs.
    pub fn gc(
        &self,
        unreferenced_before: Option<Timestamp>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<GcReport> {
        let _gate = self.snapshot_gate();
        let staged = self.payloads.chunks.staging_lock();
        let mut report = self.collect_locked(&staged, unreferenced_before, progress)?;
        progress(Progress { phase: "packs", done: 0, total: 1 });
        self.sweep_locked(&staged, &mut report)?;
        progress(Progress { phase: "done", done: 1, total: 1 });
        Ok(report)
    }

    /// The full sweep of the packs. The caller holds the staging lock.
    fn sweep_locked(&self, staged: &StagedMap, report: &mut GcReport) -> Result<()> {
        let recorded: Vec<Loc> = {
            let txn = self.flushed_snapshot()?;
            let chunks = txn.open_table(CHUNKS)?;
            let mut places = Vec::new();
            for row in chunks.iter()? {
                places.extend(ChunkRecord::from_value(row?.1.value()).loc);
            }
            places
        };
        let swept = self
            .payloads
            .chunks
            .sweep(recorded, staged)
            .map_err(|e| Error::io(self.payloads.chunks.pack_dir(), e))?;
        report.packs_removed += swept.packs_removed;
        report.stray_files_removed += swept.stray_files_removed;
        Ok(())
    }

    /// The part of `gc` that follows the metadata (leaves, segments, chunks, and the bytes of
    /// the chunks it drops), without the sweep of the packs: cheap enough to run periodically
    /// on a mounted store. Does nothing when nothing is unreferenced.
    pub fn collect(&self, unreferenced_before: Option<Timestamp>) -> Result<GcReport> {
        let idle = self.read_fs(|r| {
            Ok(r.unref()?.iter()?.next().is_none() && r.dead()?.iter()?.next().is_none())
        })?;
        if idle {
            return Ok(GcReport::default());
        }
        let _gate = self.snapshot_gate();
        let staged = self.payloads.chunks.staging_lock();
        self.collect_locked(&staged, unreferenced_before, &mut |_| {})
    }

    fn collect_locked(
        &self,
        staged: &StagedMap,
        unreferenced_before: Option<Timestamp>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<GcReport> {
        let mut report = GcReport::default();
        let mut doomed: Vec<(Hash, Loc)> = Vec::new();
        // The caller holds the snapshot gate: this set is every leaf a snapshot names.
        let snapshot_held = self.snapshot_held()?;
        self.write_fs(Commit::Durable, |w| {
            let candidates: Vec<(Hash, i64)> = w
                .unref()?
                .iter()?
                .map(|r| r.map(|(k, v)| (*k.value(), v.value())))
                .collect::<Result<_, _>>()?;
            let total = candidates.len() as u64;
            for (i, (leaf, since)) in candidates.into_iter().enumerate() {
                progress(Progress { phase: "leaves", done: i as u64, total });
                if unreferenced_before.is_some_and(|t| since >= t.secs) {
                    continue;
                }
                let rec: Option<LeafRecord> =
                    w.leaves()?.get(&leaf)?.map(|v| decode("leaf", v.value())).transpose()?;
                let Some(rec) = rec else {
                    w.unref()?.remove(&leaf)?;
                    continue;
                };
                // Held after all: by a node, a version or a snapshot (deleting the snapshot
                // puts it back).
                if rec.refs > 0
                    || leaf == EMPTY_LEAF
                    || w.history_refs_of(&leaf)? > 0
                    || snapshot_held.contains(&leaf)
                {
                    w.unmark_unreferenced(&leaf, rec.size)?;
                    continue;
                }
                remove_leaf(w, &leaf, &rec, &mut report)?;
                self.payloads.forget_index(&leaf);
            }
            sweep_segments(w, staged, &mut doomed, &mut report)?;
            let dead: Vec<Hash> =
                w.dead()?.iter()?.map(|r| r.map(|(k, _)| *k.value())).collect::<Result<_, _>>()?;
            for chunk in dead {
                if staged.contains_key(&chunk) {
                    continue;
                }
                w.dead()?.remove(&chunk)?;
                if w.chunk(&chunk)?.is_some_and(|c| c.refs == 0) {
                    drop_chunk(w, &chunk, &mut doomed, &mut report)?;
                }
            }
            Ok(())
        })?;
        // The metadata no longer names these chunks, durably: now their bytes can go.
        for (chunk, loc) in &doomed {
            self.payloads
                .chunks
                .remove(chunk, *loc)
                .map_err(|e| Error::io(self.payloads.chunks.pack_dir(), e))?;
        }
        Ok(report)
    }

    /// Frees space now: the single entry point for "the disk is full, or filling". Punches
    /// the ranges abandoned payloads appended, then collects every unreferenced leaf whatever
    /// its age (the grace period is for the timer's collections) and punches the chunks it
    /// drops. Writers are safe as with any collection: a staged chunk is never dropped.
    /// Returns the bytes freed (chunk and inline bytes as recorded; punched abandoned ranges
    /// by their length).
    pub fn make_room(&self) -> Result<u64> {
        let abandoned = self.reclaim_abandoned_bytes()?;
        let mut report = self.collect(None)?;
        // History gives way next, oldest versions first, down to what the free-space floor
        // allows; then what it gave up goes too.
        if self.give_way(Timestamp::now())?.versions > 0 {
            report.absorb(&self.collect(None)?);
        }
        // Snapshots go last, when nothing else freed anything: the oldest automatic one, then
        // the oldest named one, one at a time until a collection frees some room.
        while abandoned + report.chunk_bytes_freed + report.inline_bytes_freed == 0 {
            let Some(oldest) =
                self.snapshot_list()?.into_iter().min_by_key(|s| (!s.auto, s.created_at, s.number))
            else {
                break;
            };
            tracing::warn!(
                snapshot = %oldest.name,
                automatic = oldest.auto,
                "the disk is full and nothing else can go: a snapshot gives way"
            );
            self.snapshot_delete(&oldest.name)?;
            report.absorb(&self.collect(None)?);
        }
        let freed = abandoned + report.chunk_bytes_freed + report.inline_bytes_freed;
        if freed > 0 {
            tracing::info!(
                leaves = report.leaves_removed,
                chunks = report.chunks_removed,
                bytes = freed,
                "made room"
            );
        }
        Ok(freed)
    }

    /// Whether an operation found the disk full (and `retry_when_full` ran) within `within`,
    /// or is making room now. Never waits for one making room.
    pub fn found_full_within(&self, within: std::time::Duration) -> bool {
        let last = match self.room.try_lock() {
            Ok(last) => last,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return true,
        };
        last.is_some_and(|(ended, _)| ended.elapsed() < within)
    }

    /// For an operation that failed for want of space: runs `make_room` and says whether the
    /// operation is worth trying once more. One runs at a time: a caller that finds one
    /// running waits for it and retries after it. Within `ROOM_QUIET` of one that freed
    /// nothing, it runs none and says no, so a disk that is truly full fails at once instead
    /// of spinning. From inside `make_room` (its own commit ran out of space) it says no.
    pub fn retry_when_full(&self) -> bool {
        thread_local!(static MAKING_ROOM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        if MAKING_ROOM.with(std::cell::Cell::get) {
            return false;
        }
        let asked = std::time::Instant::now();
        let mut last = self.room.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((ended, freed)) = *last {
            if ended > asked {
                // One ran while this caller waited: its room is what this one would make.
                return freed > 0;
            }
            if freed == 0 && asked.duration_since(ended) < ROOM_QUIET {
                return false;
            }
        }
        MAKING_ROOM.with(|m| m.set(true));
        let result = self.make_room();
        MAKING_ROOM.with(|m| m.set(false));
        let freed = match result {
            Ok(freed) => freed,
            Err(e) => {
                tracing::warn!(error = %e, "making room on a full disk failed");
                0
            }
        };
        *last = Some((std::time::Instant::now(), freed));
        freed > 0
    }

    /// Makes every append to a pack that finds the disk full ask `retry_when_full` and, if
    /// it frees something, try again once. Appends happen on writers' own threads, with no
    /// lock held when they ask.
    pub fn retry_appends_when_full(self: &std::sync::Arc<Self>) {
        let vault = std::sync::Arc::downgrade(self);
        self.payloads
            .chunks
            .set_on_full(Box::new(move || vault.upgrade().is_some_and(|v| v.retry_when_full())));
    }

    /// The content bytes of the leaves no node references (in `unreferenced_v1`): what a
    /// collection could free at most (chunks shared with live leaves stay). Counted as
    /// operations take effect, so reading it costs nothing.
    pub fn unreferenced_bytes(&self) -> u64 {
        u64::try_from(self.unreferenced.load(std::sync::atomic::Ordering::Acquire)).unwrap_or(0)
    }

    /// Counts `unreferenced_bytes` from the tables (at open).
    pub(crate) fn count_unreferenced(&self) -> Result<()> {
        let bytes = self.read_fs(|r| {
            let leaves: Vec<Hash> =
                r.unref()?.iter()?.map(|r| r.map(|(k, _)| *k.value())).collect::<Result<_, _>>()?;
            let mut bytes = 0i64;
            for leaf in leaves {
                if let Some(v) = r.leaves()?.get(&leaf)? {
                    let rec: LeafRecord = decode("leaf", v.value())?;
                    bytes = bytes.saturating_add(size_i64(rec.size));
                }
            }
            Ok(bytes)
        })?;
        self.unreferenced.store(bytes, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Punches the ranges appended for abandoned chunks (staged, then dropped without a
    /// commit) unless metadata names that range or a writer still holds it. Cheap: it looks
    /// only at those chunks. Returns how many ranges it punched.
    pub fn reclaim_abandoned(&self) -> Result<u64> {
        Ok(self.reclaim_abandoned_ranges()?.0)
    }

    /// `reclaim_abandoned`, in bytes punched.
    fn reclaim_abandoned_bytes(&self) -> Result<u64> {
        Ok(self.reclaim_abandoned_ranges()?.1)
    }

    /// `reclaim_abandoned`: how many ranges it punched, and their bytes.
    fn reclaim_abandoned_ranges(&self) -> Result<(u64, u64)> {
        let abandoned = self.payloads.chunks.take_abandoned();
        if abandoned.is_empty() {
            return Ok((0, 0));
        }
        let staged = self.payloads.chunks.staging_lock();
        // Read under the staging lock: every writer that unstaged a chunk has committed it.
        let named: Vec<bool> = self.read_fs(|r| {
            abandoned
                .iter()
                .map(|(chunk, loc)| Ok(r.chunk(chunk)?.and_then(|c| c.loc) == Some(*loc)))
                .collect()
        })?;
        let (mut removed, mut bytes) = (0, 0);
        let mut held = Vec::new();
        for ((chunk, loc), named) in abandoned.into_iter().zip(named) {
            if staged.get(&chunk).and_then(|s| s.loc) == Some(loc) {
                held.push((chunk, loc));
                continue;
            }
            if named {
                continue;
            }
            self.payloads
                .chunks
                .remove(&chunk, loc)
                .map_err(|e| Error::io(self.payloads.chunks.pack_dir(), e))?;
            removed += 1;
            bytes += u64::from(loc.len);
        }
        self.payloads.chunks.discard(held);
        Ok((removed, bytes))
    }

    /// Punches the pack ranges that no metadata names after an unclean shutdown: bytes
    /// appended for commits that never became durable (they may be torn, so nothing may
    /// adopt them), and chunks dropped by a GC that stopped before it punched them.
    pub(crate) fn sweep_packs(&self) -> Result<()> {
        let staged = self.payloads.chunks.staging_lock();
        let mut report = GcReport::default();
        self.sweep_locked(&staged, &mut report)?;
        tracing::info!(
            packs_removed = report.packs_removed,
            "swept the packs after an unclean shutdown"
        );
        Ok(())
    }

    /// Checks the whole store. With `repair`, fixes what it safely can.
    #[allow(clippy::too_many_lines)]
    pub fn fsck(
        &self,
        opts: FsckOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<FsckReport> {
        // Chunks this process knows it abandoned are garbage, not damage: collect them first.
        self.reclaim_abandoned()?;
        let staged_guard = opts.repair.then(|| self.payloads.chunks.staging_lock());
        let mut report = FsckReport::default();
        let txn = self.flushed_snapshot()?;
        let nodes_t = txn.open_table(NODES)?;
        let entries_t = txn.open_table(ENTRIES)?;
        let order_t = txn.open_table(ORDER)?;
        let trees_t = txn.open_table(TREES)?;
        let leaves_t = txn.open_table(LEAVES)?;
        let inline_t = txn.open_table(INLINE)?;
        let leaf_segments_t = txn.open_table(LEAF_SEGMENTS)?;
        let segments_t = txn.open_table(SEGMENTS)?;
        let runs_t = txn.open_table(SEGMENT_RUNS)?;
        let chunks_t = txn.open_table(CHUNKS)?;
        let unref_t = txn.open_table(UNREFERENCED)?;
        let orphans_t = txn.open_table(ORPHANS)?;

        let snapshot_held = self.snapshot_held()?;
        // Nodes, and the references they hold.
        let mut nodes: BTreeMap<u64, Node> = BTreeMap::new();
        for row in nodes_t.iter()? {
            let (k, v) = row?;
            nodes.insert(k.value(), decode("node", v.value())?);
        }
        report.nodes_checked = nodes.len() as u64;
        let mut leaf_refs: HashMap<Hash, u64> = HashMap::new();
        let mut links: HashMap<u64, u32> = HashMap::new();
        let mut subdirs: HashMap<u64, u32> = HashMap::new();
        let mut dangling = Vec::new();
        for row in entries_t.iter()? {
            let (k, v) = row?;
            let (parent, name) = k.value();
            let (child, pos) = v.value();
            match nodes.get(&child) {
                None => {
                    report.problems.push(Problem::DanglingEntry {
                        parent: NodeId(parent),
                        name: lossy(name),
                        child: NodeId(child),
                    });
                    dangling.push((parent, name.to_vec(), pos));
                    continue;
                }
                Some(n) => {
                    if n.kind == NodeKind::Dir {
                        *subdirs.entry(parent).or_default() += 1;
                        if n.parent != Some(NodeId(parent)) {
                            report.problems.push(Problem::BadParent(NodeId(child)));
                        }
                    }
                }
            }
            *links.entry(child).or_default() += 1;
            let kind = nodes.get(&child).map(|n| kind_code(n.kind));
            match order_t.get((parent, pos))? {
                Some(slot) if kind.map(|k| (child, k, name)) == Some(slot.value()) => {}
                Some(_) => report.problems.push(Problem::OrderMismatch {
                    dir: NodeId(parent),
                    detail: format!(
                        "listing slot {pos} does not show entry {:?} as it is",
                        lossy(name)
                    ),
                }),
                None => report.problems.push(Problem::OrderMismatch {
                    dir: NodeId(parent),
                    detail: format!("entry {:?} has no listing slot {pos}", lossy(name)),
                }),
            }
        }
        if order_t.len()? != entries_t.len()? {
            report.problems.push(Problem::OrderMismatch {
                dir: NodeId::ROOT,
                detail: format!(
                    "{} listing slots for {} entries",
                    order_t.len()?,
                    entries_t.len()?
                ),
            });
        }
        // What peers share with us holds its content as a node does.
        for row in txn.open_table(MIRROR)?.iter()? {
            let e: MirrorEntry = decode("mirror entry", row?.1.value())?;
            if let Some(h) = e.have {
                *leaf_refs.entry(h).or_default() += 1;
                if leaves_t.get(&h)?.is_none() {
                    report.problems.push(Problem::MissingLeaf { node: e.id, leaf: h });
                }
            }
        }
        let mut nlink_fixes = Vec::new();
        for (id, node) in &nodes {
            let id_n = NodeId(*id);
            if let Some(h) = node.content {
                *leaf_refs.entry(h).or_default() += 1;
                if leaves_t.get(&h)?.is_none() {
                    report.problems.push(Problem::MissingLeaf { node: id_n, leaf: h });
                }
            }
            let names = links.get(id).copied().unwrap_or(0);
            let expected = if node.kind == NodeKind::Dir {
                if node.tree.is_none_or(|t| trees_t.get(&t).ok().flatten().is_none()) {
                    report.problems.push(Problem::MissingTree(id_n));
                }
                if node.nlink == 0 || (names == 0 && id_n != NodeId::ROOT) {
                    0
                } else {
                    2 + subdirs.get(id).copied().unwrap_or(0)
                }
            } else {
                names
            };
            if node.nlink != expected {
                report.problems.push(Problem::Nlink {
                    node: id_n,
                    recorded: node.nlink,
                    actual: expected,
                });
                nlink_fixes.push((id_n, expected));
            }
            if node.nlink == 0 && orphans_t.get(*id)?.is_none() {
                report.problems.push(Problem::Nlink { node: id_n, recorded: 0, actual: 0 });
                nlink_fixes.push((id_n, 0));
            }
        }
        // What history holds: a count per version and per snapshot record.
        let mut history_refs: HashMap<Hash, u64> = HashMap::new();
        for row in txn.open_table(VERSIONS)?.iter()? {
            let (k, v) = row?;
            let rec: VersionRecord = decode("version", v.value())?;
            if rec.leaf != EMPTY_LEAF {
                *history_refs.entry(rec.leaf).or_default() += 1;
            }
            if leaves_t.get(&rec.leaf)?.is_none() {
                report
                    .problems
                    .push(Problem::MissingLeaf { node: NodeId(k.value().0), leaf: rec.leaf });
            }
        }
        let mut snapshots = Vec::new();
        for row in txn.open_table(SNAPSHOTS)?.iter()? {
            let (k, v) = row?;
            let rec: SnapshotRecord = decode("snapshot", v.value())?;
            *history_refs.entry(rec.manifest).or_default() += 1;
            snapshots.push(String::from_utf8_lossy(k.value()).into_owned());
        }
        let mut history_fixes = Vec::new();
        {
            let recorded_t = txn.open_table(HISTORY_REFS)?;
            for row in recorded_t.iter()? {
                let (k, v) = row?;
                let actual = history_refs.get(k.value()).copied().unwrap_or(0);
                if v.value() != actual {
                    report.problems.push(Problem::HistoryRefs {
                        leaf: *k.value(),
                        recorded: v.value(),
                        actual,
                    });
                    history_fixes.push((*k.value(), actual));
                }
            }
            for (leaf, actual) in &history_refs {
                if recorded_t.get(leaf)?.is_none() {
                    report.problems.push(Problem::HistoryRefs {
                        leaf: *leaf,
                        recorded: 0,
                        actual: *actual,
                    });
                    history_fixes.push((*leaf, *actual));
                }
            }
        }

        // Reachability from the root.
        let mut seen: HashSet<u64> = HashSet::new();
        let mut stack = vec![NodeId::ROOT.0];
        while let Some(dir) = stack.pop() {
            if !seen.insert(dir) {
                continue;
            }
            for row in entries_t.range((dir, &[][..])..)? {
                let (k, v) = row?;
                if k.value().0 != dir {
                    break;
                }
                let child = v.value().0;
                match nodes.get(&child) {
                    Some(n) if n.kind == NodeKind::Dir => stack.push(child),
                    Some(_) => {
                        seen.insert(child);
                    }
                    None => {}
                }
            }
        }
        for (id, node) in &nodes {
            if node.nlink > 0 && !seen.contains(id) {
                report.problems.push(Problem::Unreachable(NodeId(*id)));
            }
        }

        // Leaves: counts, layout, inline bytes.
        let mut chunk_refs: HashMap<Hash, u64> = HashMap::new();
        let mut refs_fixes = Vec::new();
        let total_leaves = leaves_t.len()?;
        for (i, row) in leaves_t.iter()?.enumerate() {
            let (k, v) = row?;
            let leaf = *k.value();
            let rec: LeafRecord = decode("leaf", v.value())?;
            report.leaves_checked += 1;
            if i % 256 == 0 {
                progress(Progress { phase: "leaves", done: i as u64, total: total_leaves });
            }
            let actual = leaf_refs.get(&leaf).copied().unwrap_or(0);
            // The empty leaf is pinned and never counted.
            if leaf != EMPTY_LEAF {
                if rec.refs != actual {
                    report.problems.push(Problem::LeafRefs { leaf, recorded: rec.refs, actual });
                    refs_fixes.push((leaf, actual));
                }
                // A leaf only a snapshot names may wait in the index until GC next looks.
                let in_index = unref_t.get(&leaf)?.is_some();
                let ok = if actual > 0 || history_refs.contains_key(&leaf) {
                    !in_index
                } else {
                    in_index || snapshot_held.contains(&leaf)
                };
                if !ok {
                    report.problems.push(Problem::UnreferencedIndex(leaf));
                    refs_fixes.push((leaf, actual));
                }
            }
            if rec.inline {
                match inline_t.get(&leaf)? {
                    None => report.problems.push(Problem::MissingInline(leaf)),
                    Some(b) => {
                        let b = b.value();
                        report.bytes_verified += b.len() as u64;
                        if b.len() as u64 != rec.size || blake3::hash(b).as_bytes() != &leaf {
                            report.problems.push(Problem::LeafHashMismatch(leaf));
                        }
                    }
                }
                continue;
            }
            let runs = |id: &Hash| Ok(runs_t.get(id)?.map(|v| v.value().to_vec()));
            let list = match leaf_segments_t.get(&leaf)?.map(|v| resolve_leaf_list(v.value(), runs))
            {
                Some(Ok(list)) => list,
                Some(Err(e)) if e.is_storage_failure() => return Err(e),
                Some(Err(e)) => {
                    report.problems.push(Problem::LeafLayout(leaf, e.to_string()));
                    continue;
                }
                None => {
                    report.problems.push(Problem::LeafLayout(leaf, "no segment list".into()));
                    continue;
                }
            };
            let mut covered = 0u64;
            for seg in list {
                covered += seg.bytes;
                let chunks = segments_t.get(&seg.id)?.map(|v| decode_segment(v.value()));
                let detail = match chunks {
                    None => Some(format!("segment {} is missing", hex(&seg.id))),
                    Some(Err(e)) => Some(format!("segment {}: {e}", hex(&seg.id))),
                    Some(Ok(c)) if c.iter().map(|c| u64::from(c.1)).sum::<u64>() != seg.bytes => {
                        Some(format!("segment {} is not {} bytes", hex(&seg.id), seg.bytes))
                    }
                    Some(Ok(_)) => None,
                };
                if let Some(d) = detail {
                    report.problems.push(Problem::LeafLayout(leaf, d));
                }
            }
            if covered != rec.size {
                report.problems.push(Problem::LeafLayout(
                    leaf,
                    format!("chunks cover {covered} bytes of {}", rec.size),
                ));
            }
        }

        // Segments: every stored one counts toward its chunks' references, named by a leaf
        // or not (an unnamed one is garbage that the next GC sweeps).
        for row in segments_t.iter()? {
            let (k, v) = row?;
            let segment = *k.value();
            // Undecodable segments were reported with the leaves that name them.
            for (chunk, _) in decode_segment(v.value()).unwrap_or_default() {
                *chunk_refs.entry(chunk).or_default() += 1;
                if chunks_t.get(&chunk)?.is_none() {
                    report.problems.push(Problem::MissingChunkRecord { segment, chunk });
                }
            }
        }

        // Chunks: counts and content.
        let mut bad_chunks = Vec::new();
        let mut chunk_fixes = Vec::new();
        let mut ranges: Vec<(u32, u64, u64, Hash)> = Vec::new();
        let total_chunks = chunks_t.len()?;
        for (i, row) in chunks_t.iter()?.enumerate() {
            let (k, v) = row?;
            let chunk = *k.value();
            let ChunkRecord { len, refs: recorded, loc } = ChunkRecord::from_value(v.value());
            if i % 64 == 0 {
                progress(Progress { phase: "chunks", done: i as u64, total: total_chunks });
            }
            report.chunks_checked += 1;
            let actual = chunk_refs.get(&chunk).copied().unwrap_or(0);
            if recorded != actual {
                report.problems.push(Problem::ChunkRefs { chunk, recorded, actual });
                chunk_fixes.push((chunk, actual));
            }
            let Some(loc) = loc else {
                report.problems.push(Problem::MissingChunk(chunk));
                continue;
            };
            ranges.push((loc.pack, loc.offset, loc.offset + u64::from(loc.len), chunk));
            match self.payloads.chunks.read_verified(&chunk, len, loc) {
                Ok(_) => report.bytes_verified += u64::from(len),
                Err(ChunkReadError::Missing) => {
                    report.problems.push(Problem::MissingChunk(chunk));
                }
                Err(ChunkReadError::Corrupt) => {
                    report.problems.push(Problem::CorruptChunk(chunk));
                    bad_chunks.push((chunk, loc));
                }
                Err(ChunkReadError::Io(path, e)) => return Err(Error::io(path, e)),
            }
        }
        // No two chunks share a byte of a pack.
        ranges.sort_unstable();
        for pair in ranges.windows(2) {
            let ((pack_a, _, end_a, a), (pack_b, start_b, _, b)) = (pair[0], pair[1]);
            if pack_a == pack_b && start_b < end_a {
                report.problems.push(Problem::OverlappingChunks(a, b));
            }
        }
        let stray = self
            .payloads
            .chunks
            .stray_files()
            .map_err(|e| Error::io(self.payloads.chunks.pack_dir(), e))?;
        for p in &stray {
            report.problems.push(Problem::StrayFile(p.clone()));
        }

        if opts.deep {
            self.deep_verify(&leaves_t, &mut report, progress)?;
        }
        drop((nodes_t, entries_t, order_t, trees_t, leaves_t, inline_t, leaf_segments_t, runs_t));
        drop((segments_t, chunks_t, unref_t, orphans_t, txn));

        for name in snapshots {
            if let Err(detail) = self.check_snapshot(&name) {
                report.problems.push(Problem::Snapshot(name, detail));
            }
        }

        if let Some(staged) = &staged_guard
            && !report.problems.is_empty()
        {
            self.repair(
                staged,
                &mut report,
                &Fixes {
                    nlink_fixes,
                    refs_fixes,
                    history_fixes,
                    chunk_fixes,
                    dangling,
                    bad_chunks,
                },
            )?;
        }
        progress(Progress { phase: "done", done: total_chunks, total: total_chunks });
        Ok(report)
    }

    /// Reads a snapshot's manifest and checks that every leaf it names is stored.
    fn check_snapshot(&self, name: &str) -> std::result::Result<(), String> {
        let snap = self.snapshot(name).map_err(|e| e.to_string())?;
        let m = self.snapshot_manifest(&snap).map_err(|e| e.to_string())?;
        let missing = self
            .read_fs(|r| {
                for e in &m.entries {
                    if let Some(leaf) = e.leaf
                        && r.leaves()?.get(&leaf)?.is_none()
                    {
                        return Ok(Some(format!("{} names missing leaf {}", e.node, hex(&leaf))));
                    }
                }
                Ok(None)
            })
            .map_err(|e| e.to_string())?;
        missing.map_or(Ok(()), Err)
    }

    fn deep_verify(
        &self,
        leaves_t: &redb::ReadOnlyTable<&'static [u8; 32], &'static [u8]>,
        report: &mut FsckReport,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<()> {
        let total = leaves_t.len()?;
        for (i, row) in leaves_t.iter()?.enumerate() {
            let (k, v) = row?;
            let leaf = *k.value();
            let rec: LeafRecord = decode("leaf", v.value())?;
            progress(Progress { phase: "rehash", done: i as u64, total });
            if rec.inline {
                continue;
            }
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0u64;
            let mut ok = true;
            while off < rec.size {
                match self.read_at(&leaf, off, &mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        hasher.update(&buf[..n]);
                        off += n as u64;
                    }
                    Err(Error::Integrity { .. } | Error::MissingChunk { .. }) => {
                        ok = false;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            if ok && hasher.finalize().as_bytes() != &leaf {
                report.problems.push(Problem::LeafHashMismatch(leaf));
            }
        }
        Ok(())
    }

    fn repair(&self, staged: &StagedMap, report: &mut FsckReport, fixes: &Fixes) -> Result<()> {
        let mut done = Vec::new();
        // Corrupt chunks are copied aside before their locations go.
        let quarantine = self.dir.join("quarantine");
        for (chunk, loc) in &fixes.bad_chunks {
            let bytes = match self.payloads.chunks.read_raw(*loc) {
                Ok(b) => b,
                Err(ChunkReadError::Io(path, e)) => return Err(Error::io(path, e)),
                Err(_) => Vec::new(),
            };
            fs::create_dir_all(&quarantine).map_err(|e| Error::io(&quarantine, e))?;
            let to = quarantine.join(hex(chunk));
            fs::write(&to, bytes).map_err(|e| Error::io(&to, e))?;
            done.push(format!(
                "moved corrupt chunk {} to {} (reads of it fail until the content is written again)",
                hex(chunk),
                to.display()
            ));
        }
        self.write_fs(Commit::Durable, |w| {
            for (chunk, _) in &fixes.bad_chunks {
                let Some(rec) = w.chunk(chunk)? else { continue };
                w.put_chunk(chunk, ChunkRecord { loc: None, ..rec })?;
            }
            for (parent, name, pos) in &fixes.dangling {
                w.entries()?.remove((*parent, name.as_slice()))?;
                w.order()?.remove((*parent, *pos))?;
                done.push(format!("removed dangling entry {:?} from {parent}", lossy(name)));
            }
            for (id, nlink) in &fixes.nlink_fixes {
                let mut node = w.node(*id)?;
                node.nlink = *nlink;
                w.put_node(&node)?;
                if *nlink == 0 {
                    w.orphans()?.insert(id.0, ())?;
                }
                done.push(format!("set link count of {id} to {nlink}"));
            }
            for (leaf, n) in &fixes.history_fixes {
                if *n == 0 {
                    w.history_refs()?.remove(leaf)?;
                } else {
                    w.history_refs()?.insert(leaf, *n)?;
                }
                done.push(format!("set the versions naming leaf {} to {n}", hex(leaf)));
            }
            let history_leaves: Vec<Hash> = fixes.history_fixes.iter().map(|f| f.0).collect();
            let refs_fixes = fixes.refs_fixes.iter().copied().chain(
                history_leaves
                    .iter()
                    .filter_map(|leaf| {
                        let refs = w.leaf(leaf).ok()?.refs;
                        Some((*leaf, refs))
                    })
                    .collect::<Vec<_>>(),
            );
            for (leaf, refs) in refs_fixes.collect::<Vec<_>>() {
                let leaf = &leaf;
                let Some(v) = w.leaves()?.get(leaf)?.map(|v| v.value().to_vec()) else { continue };
                let mut rec: LeafRecord = decode("leaf", &v)?;
                rec.refs = refs;
                w.leaves()?.insert(leaf, encode(&rec).as_slice())?;
                if refs == 0 && w.history_refs_of(leaf)? == 0 {
                    w.mark_unreferenced(leaf, rec.size, Timestamp::now())?;
                } else {
                    w.unmark_unreferenced(leaf, rec.size)?;
                }
                done.push(format!("set reference count of leaf {} to {refs}", hex(leaf)));
            }
            for (chunk, refs) in &fixes.chunk_fixes {
                let Some(rec) = w.chunk(chunk)? else { continue };
                w.put_chunk(chunk, ChunkRecord { refs: *refs, ..rec })?;
                if *refs == 0 {
                    w.dead()?.insert(chunk, ())?;
                }
                done.push(format!("set reference count of chunk {} to {refs}", hex(chunk)));
            }
            Ok(())
        })?;
        // Punch what no chunk owns any more, and remove stray files.
        let mut swept = GcReport::default();
        self.sweep_locked(staged, &mut swept)?;
        if swept.stray_files_removed > 0 {
            done.push(format!("removed {} stray files", swept.stray_files_removed));
        }
        self.payloads.chunks.clear_cache();
        report.repaired = done;
        Ok(())
    }
}

struct Fixes {
    nlink_fixes: Vec<(NodeId, u32)>,
    refs_fixes: Vec<(Hash, u64)>,
    history_fixes: Vec<(Hash, u64)>,
    chunk_fixes: Vec<(Hash, u64)>,
    dangling: Vec<(u64, Vec<u8>, u64)>,
    bad_chunks: Vec<(Hash, Loc)>,
}

fn remove_leaf(w: &mut W, leaf: &Hash, rec: &LeafRecord, report: &mut GcReport) -> Result<()> {
    w.leaves()?.remove(leaf)?;
    if w.unref()?.remove(leaf)?.is_some() {
        w.unref_bytes -= size_i64(rec.size);
    }
    report.leaves_removed += 1;
    if rec.inline {
        w.inline()?.remove(leaf)?;
        report.inline_bytes_freed += rec.size;
        return Ok(());
    }
    // Its segments go in the sweep, unless another leaf names them.
    w.leaf_segments()?.remove(leaf)?;
    Ok(())
}

/// Deletes every stored run that no leaf's list names, then every stored segment that no
/// leaf's list or remaining run names, releasing its chunks.
fn sweep_segments(
    w: &mut W,
    staged: &StagedMap,
    doomed: &mut Vec<(Hash, Loc)>,
    report: &mut GcReport,
) -> Result<()> {
    let mut live: HashSet<Hash> = HashSet::new();
    let mut live_runs: HashSet<Hash> = HashSet::new();
    for row in w.leaf_segments()?.iter()? {
        let (_, v) = row?;
        match decode_leaf_list(v.value())? {
            LeafList::Flat(list) => live.extend(list.into_iter().map(|s| s.id)),
            LeafList::Runs(runs) => live_runs.extend(runs.into_iter().map(|r| r.id)),
        }
    }
    let mut dead_runs = Vec::new();
    for row in w.segment_runs()?.iter()? {
        let (k, v) = row?;
        if live_runs.contains(k.value()) {
            live.extend(decode_segment_list(v.value())?.into_iter().map(|s| s.id));
        } else {
            dead_runs.push(*k.value());
        }
    }
    for id in dead_runs {
        w.segment_runs()?.remove(&id)?;
    }
    let dead: Vec<Hash> = w
        .segments()?
        .iter()?
        .filter_map(|r| match r {
            Ok((k, _)) if live.contains(k.value()) => None,
            Ok((k, _)) => Some(Ok(*k.value())),
            Err(e) => Some(Err(e)),
        })
        .collect::<Result<_, _>>()?;
    for id in dead {
        let chunks = match w.segments()?.remove(&id)? {
            Some(v) => decode_segment(v.value())?,
            None => continue,
        };
        release_chunks(w, &chunks, staged, doomed, report)?;
    }
    Ok(())
}

/// Drops one reference to each chunk of a removed segment.
fn release_chunks(
    w: &mut W,
    chunks: &[(Hash, u32)],
    staged: &StagedMap,
    doomed: &mut Vec<(Hash, Loc)>,
    report: &mut GcReport,
) -> Result<()> {
    for (chunk, _) in chunks {
        let Some(rec) = w.chunk(chunk)? else { continue };
        let refs = rec.refs.saturating_sub(1);
        if refs > 0 || staged.contains_key(chunk) {
            w.put_chunk(chunk, ChunkRecord { refs, ..rec })?;
            if refs == 0 {
                w.dead()?.insert(chunk, ())?;
            }
        } else {
            drop_chunk(w, chunk, doomed, report)?;
        }
    }
    Ok(())
}

/// Deletes a chunk's record; its bytes are punched once this commits.
fn drop_chunk(
    w: &mut W,
    chunk: &Hash,
    doomed: &mut Vec<(Hash, Loc)>,
    report: &mut GcReport,
) -> Result<()> {
    let Some(v) = w.chunks()?.remove(chunk)?.map(|v| v.value()) else { return Ok(()) };
    let rec = ChunkRecord::from_value(v);
    report.chunks_removed += 1;
    report.chunk_bytes_freed += u64::from(rec.len);
    if let Some(loc) = rec.loc {
        doomed.push((*chunk, loc));
    }
    Ok(())
}
