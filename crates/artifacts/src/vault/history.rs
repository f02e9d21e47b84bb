//! File history: every version a file was committed with, the files deleted while history
//! keeps them, restores, and retention.
//!
//! Invariants:
//! - Each commit of new content to a file (`set_content`, a create with content, a restore)
//!   adds one `VERSIONS` row under the file's node, with a version id from the node counter:
//!   ids grow with time, and one id names one version. `VERSION_NODES` maps it back.
//! - Every version row holds one count in `HISTORY_REFS` on its leaf, beside the nodes' counts
//!   in `LeafRecord::refs`: a leaf goes to GC only when both are zero.
//! - A file that loses its last name while it has versions gets a `DELETED` row (its folder and
//!   name then), and so does a removed folder that holds such rows; `DELETED_NAMES` lists them by
//!   folder. Rows go when their versions, or their deleted entries, are gone.
//! - With `Keep::none` no version is recorded, and pruning drops every version.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::payload::rows::size_i64;
use crate::payload::writer::StagedLeaf;
use crate::store::meta::W;
use crate::store::schema::{DeletedRecord, VersionRecord, decode, encode};
use crate::types::{Hash, NewNode, Node, NodeId, NodeKind, PlayerId, Timestamp};
use crate::vault::handle::{Commit, Vault};
use crate::vault::namespace::validate_name;
use crate::vault::retention::{Keep, SpaceLimits, Thinned};

/// `meta_v1`: when history last gave way to space (`Thinned`).
const META_THINNED: &str = "history_thinned";

/// One version of a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub id: u64,
    /// The file's history id (`Vault::history_id`).
    pub history: u64,
    pub leaf: Hash,
    pub size: u64,
    pub committed_at: Timestamp,
    pub committer: PlayerId,
    /// What the commit stored new (see `VersionRecord::added`).
    pub added: u64,
}

impl Version {
    fn from_record(history: u64, id: u64, r: &VersionRecord) -> Version {
        Version {
            id,
            history,
            leaf: r.leaf,
            size: r.size,
            committed_at: r.committed_at,
            committer: r.committer,
            added: r.added,
        }
    }
}

/// A deleted file or folder that history keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deleted {
    /// A file's history id; a folder's node.
    pub id: u64,
    pub parent: NodeId,
    pub name: Vec<u8>,
    pub dir: bool,
    pub deleted_at: Timestamp,
    /// The mode bits and owner it had.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What history holds, for `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryUsage {
    pub versions: u64,
    /// Files with versions (live or deleted).
    pub files: u64,
    pub deleted: u64,
    /// The bytes that dropping every version no file's current content uses would free, as
    /// far as their commits' new bytes tell (an upper bound: a chunk a version stored may still
    /// be in use by a later one).
    pub bytes: u64,
}

/// What a pruning dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub versions: u64,
    /// The estimated bytes they held (`HistoryUsage::bytes`).
    pub bytes: u64,
}

impl W<'_> {
    /// The history id of a file node: its own id, unless it goes on with another file's.
    pub(crate) fn history_id(&mut self, node: NodeId) -> Result<u64> {
        Ok(self.lineage()?.get(node.0)?.map_or(node.0, |v| v.value()))
    }

    fn version_row(&mut self, history: u64, id: u64) -> Result<Option<VersionRecord>> {
        self.versions()?.get((history, id))?.map(|v| decode("version", v.value())).transpose()
    }

    fn versions_of(&mut self, history: u64) -> Result<Vec<Version>> {
        let mut out = Vec::new();
        for row in self.versions()?.range((history, 0)..=(history, u64::MAX))? {
            let (k, v) = row?;
            out.push(Version::from_record(history, k.value().1, &decode("version", v.value())?));
        }
        Ok(out)
    }

    fn has_versions(&mut self, history: u64) -> Result<bool> {
        Ok(self.versions()?.range((history, 0)..=(history, u64::MAX))?.next().is_some())
    }

    /// The bytes a commit of `staged` stores that the store lacks: call it before the leaf is
    /// recorded.
    pub(crate) fn new_bytes(&mut self, staged: &StagedLeaf) -> Result<u64> {
        if self.leaves()?.get(&staged.hash)?.is_some() {
            return Ok(0);
        }
        if staged.is_inline() {
            return Ok(staged.size);
        }
        Ok(staged.appended.iter().map(|(_, l)| u64::from(l.len)).sum())
    }

    /// Records a version of the file `node` with content `leaf` (already recorded as a leaf).
    pub(crate) fn record_version(
        &mut self,
        node: NodeId,
        leaf: Hash,
        size: u64,
        added: u64,
        committer: PlayerId,
        now: Timestamp,
    ) -> Result<u64> {
        let history = self.history_id(node)?;
        let id = self.alloc_node()?.0;
        let rec = VersionRecord { leaf, size, committed_at: now, committer, added };
        self.versions()?.insert((history, id), encode(&rec).as_slice())?;
        self.version_nodes()?.insert(id, history)?;
        self.history_incref(&leaf)?;
        self.history_bytes += size_i64(added);
        Ok(id)
    }

    fn drop_version(&mut self, history: u64, id: u64, now: Timestamp) -> Result<()> {
        if let Some(rec) = self.version_row(history, id)? {
            self.versions()?.remove((history, id))?;
            self.version_nodes()?.remove(id)?;
            self.history_decref(&rec.leaf, now)?;
            self.history_bytes -= size_i64(rec.added);
        }
        Ok(())
    }

    /// Moves every version of history `from` into history `to`.
    fn merge_history(&mut self, from: u64, to: u64) -> Result<()> {
        let rows: Vec<(u64, Vec<u8>)> = self
            .versions()?
            .range((from, 0)..=(from, u64::MAX))?
            .map(|row| row.map(|(k, v)| (k.value().1, v.value().to_vec())))
            .collect::<Result<_, _>>()?;
        for (id, rec) in rows {
            self.versions()?.remove((from, id))?;
            self.versions()?.insert((to, id), rec.as_slice())?;
            self.version_nodes()?.insert(id, to)?;
        }
        Ok(())
    }

    /// A file `src` took the name of the file `dst`, which has no name left: `src` goes on
    /// with `dst`'s history (an editor's save to a new file renamed over the old one keeps
    /// one history), its own versions moved into it.
    pub(crate) fn inherit_history(&mut self, src: NodeId, dst: NodeId) -> Result<()> {
        let to = self.history_id(dst)?;
        if !self.has_versions(to)? {
            return Ok(());
        }
        let from = self.history_id(src)?;
        if from == to {
            return Ok(());
        }
        self.merge_history(from, to)?;
        self.lineage()?.insert(src.0, to)?;
        self.lineage()?.remove(dst.0)?;
        Ok(())
    }

    /// Forgets a reaped node's history id (its history lives on under the id).
    pub(crate) fn drop_lineage(&mut self, node: NodeId) -> Result<()> {
        self.lineage()?.remove(node.0)?;
        Ok(())
    }

    fn deleted_row(&mut self, id: u64) -> Result<Option<DeletedRecord>> {
        self.deleted()?.get(id)?.map(|v| decode("deleted", v.value())).transpose()
    }

    fn has_deleted_below(&mut self, dir: u64) -> Result<bool> {
        Ok(self
            .deleted_names()?
            .range((dir, &[][..], 0)..=(dir, &[0xff_u8; 256][..], u64::MAX))?
            .next()
            .is_some())
    }

    /// Notes that `node` lost its last name, `name` in `parent`: a file with versions, or a
    /// folder holding deleted files, stays findable in history.
    pub(crate) fn note_deleted(
        &mut self,
        node: &Node,
        parent: NodeId,
        name: &[u8],
        now: Timestamp,
    ) -> Result<()> {
        let dir = node.kind == NodeKind::Dir;
        let id = if dir { node.id.0 } else { self.history_id(node.id)? };
        let keep = if dir {
            self.has_deleted_below(id)?
        } else {
            node.kind == NodeKind::File && self.has_versions(id)?
        };
        if !keep {
            return Ok(());
        }
        let rec = DeletedRecord {
            parent,
            name: name.to_vec(),
            dir,
            deleted_at: now,
            perm: node.perm,
            uid: node.uid,
            gid: node.gid,
        };
        self.deleted()?.insert(id, encode(&rec).as_slice())?;
        self.deleted_names()?.insert((parent.0, name, id), ())?;
        Ok(())
    }

    /// Forgets a deleted entry, and then each deleted folder above it left holding nothing.
    fn forget_deleted(&mut self, id: u64) -> Result<()> {
        let mut cur = id;
        for _ in 0..100_000 {
            let Some(rec) = self.deleted_row(cur)? else { return Ok(()) };
            self.deleted()?.remove(cur)?;
            self.deleted_names()?.remove((rec.parent.0, rec.name.as_slice(), cur))?;
            match self.deleted_row(rec.parent.0)? {
                Some(p) if p.dir && !self.has_deleted_below(rec.parent.0)? => cur = rec.parent.0,
                _ => return Ok(()),
            }
        }
        Err(Error::CorruptRecord("deleted", format!("folder chain above {id} does not end")))
    }

    /// Whether history `id` belongs to a file that has a name: every history that lost its
    /// file's last name has a `DELETED` row.
    fn history_is_live(&mut self, id: u64) -> Result<bool> {
        Ok(self.deleted_row(id)?.is_none())
    }
}

impl Vault {
    /// How long history keeps versions from now on (the mount's `--keep`).
    pub fn set_keep(&self, keep: Keep) {
        *self.history.keep.lock() = keep;
    }

    pub fn keep(&self) -> Keep {
        self.history.keep.lock().clone()
    }

    pub(crate) fn history_on(&self) -> bool {
        !self.history.keep.lock().is_off()
    }

    /// How much of the data dir's filesystem history may take (the mount's
    /// `--history-max-percent` and `--min-free-percent`).
    pub fn set_space_limits(&self, limits: SpaceLimits) {
        *self.history.limits.lock() = limits;
    }

    /// The bytes history may hold now (`HistoryUsage::bytes`), when it holds `held`: the one
    /// place the limits meet the data dir's filesystem.
    pub fn history_budget(&self, held: u64) -> Result<u64> {
        let (size, free) = self.disk_space()?;
        Ok(self.history.limits.lock().budget(size, free, held))
    }

    /// The bytes every kept version's commit stored new: a cheap upper bound on what history
    /// holds (`HistoryUsage::bytes` is exact about which versions only history holds, and
    /// costs a pass over them), kept as operations go.
    pub fn history_added(&self) -> u64 {
        u64::try_from(self.history.added.load(std::sync::atomic::Ordering::Acquire)).unwrap_or(0)
    }

    /// Counts `history_added` from the tables (at open).
    pub(crate) fn count_history(&self) -> Result<()> {
        let bytes = self.scan(&["versions"], |r| {
            let mut bytes = 0i64;
            for row in r.versions()?.iter()? {
                let rec: VersionRecord = decode("version", row?.1.value())?;
                bytes = bytes.saturating_add(size_i64(rec.added));
            }
            Ok(bytes)
        })?;
        self.history.added.store(bytes, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The free space of the data dir's filesystem, in bytes.
    pub fn free_space(&self) -> Result<u64> {
        Ok(self.disk_space()?.1)
    }

    /// Whether the data dir's filesystem has less free space than the floor.
    pub fn below_floor(&self) -> Result<bool> {
        let (size, free) = self.disk_space()?;
        Ok(self.history.limits.lock().short(size, free) > 0)
    }

    /// The size and the free space of the data dir's filesystem.
    fn disk_space(&self) -> Result<(u64, u64)> {
        let st = rustix::fs::statvfs(&self.dir)
            .map_err(|e| Error::io(&self.dir, std::io::Error::from(e)))?;
        Ok((st.f_blocks.saturating_mul(st.f_frsize), st.f_bavail.saturating_mul(st.f_frsize)))
    }

    /// Thins history (`thin_history`) if it holds more than `history_budget` allows.
    pub fn give_way(&self, now: Timestamp) -> Result<Pruned> {
        let held = self.history_usage()?.bytes;
        if held == 0 {
            return Ok(Pruned::default());
        }
        let budget = self.history_budget(held)?;
        if held <= budget {
            return Ok(Pruned::default());
        }
        self.thin_history(budget, now)
    }

    /// When history last gave way to space (`thin_history`), if it ever did (kept in the store).
    pub fn thinned(&self) -> Option<Thinned> {
        if let Some(t) = *self.history.thinned.lock() {
            return Some(t);
        }
        let stored = self.read_fs(|r| {
            r.meta()?.get(META_THINNED)?.map(|v| decode("thinned", v.value())).transpose()
        });
        match stored {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "reading when history was last thinned failed");
                None
            }
        }
    }

    /// The history id of a file: the id its versions are kept under.
    pub fn history_id(&self, node: NodeId) -> Result<u64> {
        self.read_fs(|r| r.history_id(node))
    }

    /// Every version of history `id` (`history_id`, or a deleted file's `Deleted::id`),
    /// oldest first.
    pub fn versions(&self, id: u64) -> Result<Vec<Version>> {
        self.read_fs(|r| r.versions_of(id))
    }

    /// The version `id`, of whichever file.
    pub fn version(&self, id: u64) -> Result<Version> {
        self.read_fs(|r| {
            let history = r.version_nodes()?.get(id)?.map(|v| v.value());
            let Some(history) = history else { return Err(Error::NoSuchVersion(id)) };
            match r.version_row(history, id)? {
                Some(rec) => Ok(Version::from_record(history, id, &rec)),
                None => Err(Error::NoSuchVersion(id)),
            }
        })
    }

    /// Each file node's history id, when it has versions.
    pub fn histories(&self, nodes: &[NodeId]) -> Result<Vec<Option<u64>>> {
        self.read_fs(|r| {
            nodes
                .iter()
                .map(|n| {
                    let id = r.history_id(*n)?;
                    Ok(r.has_versions(id)?.then_some(id))
                })
                .collect()
        })
    }

    /// The deleted files and folders that were in `dir`, in name order.
    pub fn deleted_in(&self, dir: NodeId) -> Result<Vec<Deleted>> {
        self.read_fs(|r| {
            let ids: Vec<u64> = r
                .deleted_names()?
                .range((dir.0, &[][..], 0)..=(dir.0, &[0xff_u8; 256][..], u64::MAX))?
                .map(|row| row.map(|(k, _)| k.value().2))
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(rec) = r.deleted_row(id)? {
                    out.push(deleted(id, rec));
                }
            }
            Ok(out)
        })
    }

    /// Where a deleted file or folder was, if history keeps it.
    pub fn deleted_entry(&self, id: u64) -> Result<Option<Deleted>> {
        self.read_fs(|r| Ok(r.deleted_row(id)?.map(|rec| deleted(id, rec))))
    }

    /// Makes version `id` the content of the file `node`, as a new version (so a restore can
    /// itself be undone). The version must be one of the file's own.
    pub fn restore(&self, node: NodeId, id: u64, now: Timestamp, commit: Commit) -> Result<Node> {
        let committer = self.player();
        let history_on = self.history_on();
        self.write_fs(commit, |w| {
            let history = w.history_id(node)?;
            let Some(v) = w.version_row(history, id)? else {
                return Err(Error::NoSuchVersion(id));
            };
            let mut n = w.node(node)?;
            if n.kind != NodeKind::File {
                return Err(Error::NotAFile(node));
            }
            w.leaf_incref(&v.leaf)?;
            if let Some(old) = n.content {
                w.leaf_decref(&old, now)?;
            }
            n.content = Some(v.leaf);
            n.size = v.size;
            n.mtime = now;
            n.ctime = now;
            w.put_node(&n)?;
            if history_on {
                w.record_version(node, v.leaf, v.size, 0, committer, now)?;
            }
            Ok(n)
        })
        .inspect(|n| self.changed(&[], &[n.id]))
    }

    /// Brings back the deleted file of history `history` as a new file `name` in `parent`,
    /// with its version `id` as content and the mode and owner it had. The new file goes on
    /// with that history, and the restore is one more version of it.
    pub fn undelete(
        &self,
        history: u64,
        id: u64,
        parent: NodeId,
        name: &[u8],
        now: Timestamp,
        commit: Commit,
    ) -> Result<Node> {
        validate_name(name)?;
        let committer = self.player();
        let history_on = self.history_on();
        self.write_fs(commit, |w| {
            let Some(v) = w.version_row(history, id)? else {
                return Err(Error::NoSuchVersion(id));
            };
            let gone = match w.deleted_row(history)? {
                Some(rec) if !rec.dir => rec,
                _ => return Err(Error::NotPermitted(NodeId(history), "the file is not deleted")),
            };
            let (mut dir, _) = w.free_slot(parent, name)?;
            let new = w.alloc_node()?;
            let mut spec = NewNode::file(gone.perm);
            (spec.uid, spec.gid) = (gone.uid, gone.gid);
            let mut n = Node::new(new, &spec, now);
            w.leaf_incref(&v.leaf)?;
            n.content = Some(v.leaf);
            n.size = v.size;
            w.put_node(&n)?;
            w.add_entry(&dir, name, new, NodeKind::File, None)?;
            w.touch_dir(&mut dir, now)?;
            w.lineage()?.insert(new.0, history)?;
            w.forget_deleted(history)?;
            if history_on {
                w.record_version(new, v.leaf, v.size, 0, committer, now)?;
            }
            Ok(n)
        })
        .inspect(|n| self.changed(&[parent], &[n.id]))
    }

    /// Drops the versions retention no longer keeps (with `Keep::none`, all of them), and the
    /// deleted entries left with none. The newest version of a live file is always kept.
    pub fn prune_history(&self, now: Timestamp) -> Result<Pruned> {
        let keep = self.keep();
        let histories = self.histories_with_versions()?;
        let mut pruned = Pruned::default();
        // A batch of files per operation, so that a long pruning never holds up requests for
        // long.
        for batch in histories.chunks(256) {
            self.write_fs(Commit::CrashConsistent, |w| {
                for history in batch {
                    let versions = w.versions_of(*history)?;
                    let live = w.history_is_live(*history)?;
                    let times: Vec<Timestamp> = versions.iter().map(|v| v.committed_at).collect();
                    let kept = keep.select(&times, now, live && !keep.is_off());
                    for (v, kept) in versions.iter().zip(kept) {
                        if !kept {
                            let held = w.leaf(&v.leaf)?.refs == 0;
                            w.drop_version(*history, v.id, now)?;
                            pruned.versions += 1;
                            pruned.bytes += if held { v.added } else { 0 };
                        }
                    }
                    if !live && !w.has_versions(*history)? {
                        w.forget_deleted(*history)?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(pruned)
    }

    /// Drops the oldest versions that only history holds until what history holds is at
    /// most `budget` bytes (`HistoryUsage::bytes`); the newest version of each live file
    /// stays. Returns what it dropped, which `thinned` reports too.
    pub fn thin_history(&self, budget: u64, now: Timestamp) -> Result<Pruned> {
        let (mut held, mut candidates) = self.scan(&["versions", "leaves", "deleted"], |r| {
            let rows: Vec<Version> = r
                .versions()?
                .iter()?
                .map(|row| {
                    let (k, v) = row?;
                    let (history, id) = k.value();
                    Ok(Version::from_record(history, id, &decode("version", v.value())?))
                })
                .collect::<Result<_>>()?;
            let mut newest: HashMap<u64, u64> = HashMap::new();
            for v in &rows {
                let e = newest.entry(v.history).or_insert(v.id);
                *e = (*e).max(v.id);
            }
            let mut held = 0u64;
            let mut candidates = Vec::new();
            for v in rows {
                if r.leaf(&v.leaf)?.refs > 0 {
                    continue;
                }
                held += v.added;
                if !(newest.get(&v.history) == Some(&v.id) && r.history_is_live(v.history)?) {
                    candidates.push(v);
                }
            }
            Ok((held, candidates))
        })?;
        candidates.sort_by_key(|v| (v.committed_at, v.id));
        let mut pruned = Pruned::default();
        let mut doomed = Vec::new();
        for v in candidates {
            if held <= budget {
                break;
            }
            held = held.saturating_sub(v.added);
            pruned.bytes += v.added;
            pruned.versions += 1;
            doomed.push(v);
        }
        for batch in doomed.chunks(1024) {
            self.write_fs(Commit::CrashConsistent, |w| {
                for v in batch {
                    w.drop_version(v.history, v.id, now)?;
                    if !w.history_is_live(v.history)? && !w.has_versions(v.history)? {
                        w.forget_deleted(v.history)?;
                    }
                }
                Ok(())
            })?;
        }
        if pruned.versions > 0 {
            tracing::warn!(
                versions = pruned.versions,
                bytes = pruned.bytes,
                "history thinned for space: the oldest versions went first"
            );
            let thinned = Thinned { at: now, versions: pruned.versions, bytes: pruned.bytes };
            *self.history.thinned.lock() = Some(thinned);
            self.write_fs(Commit::CrashConsistent, |w| {
                w.meta()?.insert(META_THINNED, encode(&thinned).as_slice())?;
                Ok(())
            })?;
        }
        Ok(pruned)
    }

    /// What history holds now (one pass over the versions).
    pub fn history_usage(&self) -> Result<HistoryUsage> {
        self.scan(&["versions", "leaves", "deleted"], |r| {
            let mut usage = HistoryUsage::default();
            let mut files = HashSet::new();
            let mut held: HashMap<Hash, bool> = HashMap::new();
            let rows: Vec<(u64, VersionRecord)> = r
                .versions()?
                .iter()?
                .map(|row| {
                    let (k, v) = row?;
                    Ok((k.value().0, decode("version", v.value())?))
                })
                .collect::<Result<_>>()?;
            for (history, rec) in rows {
                usage.versions += 1;
                files.insert(history);
                let only_history = match held.get(&rec.leaf) {
                    Some(h) => *h,
                    None => {
                        let h = r.leaf(&rec.leaf)?.refs == 0;
                        held.insert(rec.leaf, h);
                        h
                    }
                };
                if only_history {
                    usage.bytes += rec.added;
                }
            }
            usage.files = files.len() as u64;
            usage.deleted = r.deleted()?.len()?;
            Ok(usage)
        })
    }

    fn histories_with_versions(&self) -> Result<Vec<u64>> {
        self.scan(&["versions"], |r| {
            let mut out: Vec<u64> = Vec::new();
            for row in r.versions()?.iter()? {
                let history = row?.0.value().0;
                if out.last() != Some(&history) {
                    out.push(history);
                }
            }
            Ok(out)
        })
    }
}

fn deleted(id: u64, rec: DeletedRecord) -> Deleted {
    Deleted {
        id,
        parent: rec.parent,
        name: rec.name,
        dir: rec.dir,
        deleted_at: rec.deleted_at,
        perm: rec.perm,
        uid: rec.uid,
        gid: rec.gid,
    }
}
