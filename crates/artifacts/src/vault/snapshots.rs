//! Snapshots: named, frozen copies of the whole vault's namespace.
//!
//! A snapshot is a manifest, stored as a leaf like any file's content: every entry of the
//! vault in depth-first order, names sorted, with its attributes, xattrs and content leaf. So
//! taking one costs one read pass over the namespace (inside one operation, so that it is a
//! consistent cut) and the chunks of a manifest that an earlier one does not already hold:
//! entries are encoded one after the other, so a change to a few files changes a few chunks.
//!
//! Invariants:
//! - A snapshot's record holds one `HISTORY_REFS` count on its manifest leaf.
//! - The leaves a manifest names are kept by GC while the snapshot exists (`Vault::
//!   snapshot_held`): GC and snapshot creation meet at `SnapshotState::gate`, taken before the
//!   staging lock, so no collection decides between a snapshot's walk and its record.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::meta::W;
use crate::store::schema::{SnapshotRecord, bytes_u64, decode, encode, u64_bytes};
use crate::types::{Hash, NodeId, NodeKind, Timestamp};
use crate::vault::handle::{Commit, Vault};
use crate::vault::history::Keep;
use crate::vault::namespace::{children, validate_name};

/// The longest snapshot name, in bytes.
pub const SNAPSHOT_NAME_MAX: usize = 128;
/// `meta_v1`: the next snapshot number.
const META_NEXT_SNAPSHOT: &str = "next_snapshot";
/// The first byte of a manifest: its encoding's version.
const MANIFEST_V1: u8 = 1;
/// The prefix of the names `--snapshot-every` gives.
pub const AUTO_PREFIX: &str = "auto-";

/// One entry of a snapshot, as the vault had it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapEntry {
    /// 0 for the vault's root, 1 for its entries, and so on.
    pub depth: u32,
    pub name: Vec<u8>,
    pub node: NodeId,
    pub kind: NodeKind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub size: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub leaf: Option<Hash>,
    pub symlink: Option<Vec<u8>>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A snapshot's manifest, with its folders' children found.
#[derive(Debug)]
pub struct Manifest {
    pub entries: Vec<SnapEntry>,
    /// Each folder's children (indexes into `entries`), in name order.
    kids: HashMap<u32, Vec<u32>>,
}

impl Manifest {
    fn new(entries: Vec<SnapEntry>) -> Result<Manifest> {
        let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
        let mut path: Vec<u32> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let i = u32::try_from(i)
                .map_err(|_| Error::CorruptRecord("snapshot", "too many entries".into()))?;
            let depth = e.depth as usize;
            if depth > path.len() || (depth == 0) != (i == 0) {
                return Err(Error::CorruptRecord("snapshot", format!("entry {i} is out of place")));
            }
            path.truncate(depth);
            if let Some(parent) = path.last() {
                kids.entry(*parent).or_default().push(i);
            }
            path.push(i);
        }
        Ok(Manifest { entries, kids })
    }

    /// The children of entry `dir`, in name order.
    pub fn children(&self, dir: u32) -> &[u32] {
        self.kids.get(&dir).map_or(&[], Vec::as_slice)
    }

    /// The child of `dir` named `name`.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Option<u32> {
        let kids = self.children(dir);
        kids.binary_search_by(|k| self.entries[*k as usize].name.as_slice().cmp(name))
            .ok()
            .map(|i| kids[i])
    }

    pub fn entry(&self, i: u32) -> Option<&SnapEntry> {
        self.entries.get(i as usize)
    }
}

/// A snapshot, as `snapshot list` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub number: u32,
    pub manifest: Hash,
    pub created_at: Timestamp,
    pub auto: bool,
    pub entries: u64,
    pub bytes: u64,
}

/// Snapshots' state in memory.
#[derive(Debug, Default)]
pub(crate) struct SnapshotState {
    /// Taken by snapshot creation for its whole length, and by GC before the staging lock.
    gate: Mutex<()>,
    /// Manifests read, by their leaf.
    manifests: Mutex<HashMap<Hash, Arc<Manifest>>>,
    /// Every leaf any snapshot names; `None` after a change of the snapshots.
    held: Mutex<Option<Arc<HashSet<Hash>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks a snapshot name: a valid folder name of at most 128 bytes.
pub fn validate_snapshot_name(name: &str) -> Result<()> {
    if name.len() > SNAPSHOT_NAME_MAX {
        return Err(Error::InvalidName { name: name.to_string(), reason: "longer than 128 bytes" });
    }
    validate_name(name.as_bytes())
}

fn snapshot(name: &[u8], rec: &SnapshotRecord) -> Snapshot {
    Snapshot {
        name: String::from_utf8_lossy(name).into_owned(),
        number: rec.number,
        manifest: rec.manifest,
        created_at: rec.created_at,
        auto: rec.auto,
        entries: rec.entries,
        bytes: rec.bytes,
    }
}

impl W<'_> {
    /// The vault's namespace, depth first, names sorted: a snapshot's entries.
    fn snapshot_entries(&mut self) -> Result<Vec<SnapEntry>> {
        let mut kids = children(self)?;
        for list in kids.values_mut() {
            list.sort_unstable();
        }
        let mut out = Vec::new();
        let mut stack = vec![(NodeId::ROOT, 0u32, Vec::new())];
        while let Some((id, depth, name)) = stack.pop() {
            let node = self.node(id)?;
            let xattrs: Vec<(Vec<u8>, Vec<u8>)> = self
                .xattrs()?
                .range((id.0, &[][..])..)?
                .map_while(|r| r.ok().filter(|(k, _)| k.value().0 == id.0))
                .map(|(k, v)| (k.value().1.to_vec(), v.value().to_vec()))
                .collect();
            out.push(SnapEntry {
                depth,
                name,
                node: id,
                kind: node.kind,
                perm: node.perm,
                uid: node.uid,
                gid: node.gid,
                rdev: node.rdev,
                size: node.size,
                atime: node.atime,
                mtime: node.mtime,
                ctime: node.ctime,
                leaf: node.content,
                symlink: node.symlink,
                xattrs,
            });
            if node.kind == NodeKind::Dir
                && let Some(list) = kids.get(&id.0)
            {
                for (child_name, child) in list.iter().rev() {
                    stack.push((NodeId(*child), depth + 1, child_name.clone()));
                }
            }
        }
        Ok(out)
    }

    fn snapshot_row(&mut self, name: &str) -> Result<Option<SnapshotRecord>> {
        self.snapshots()?.get(name.as_bytes())?.map(|v| decode("snapshot", v.value())).transpose()
    }
}

impl Vault {
    /// Takes a snapshot named `name` of the whole vault as it is now.
    pub fn snapshot_create(&self, name: &str, auto: bool, now: Timestamp) -> Result<Snapshot> {
        validate_snapshot_name(name)?;
        let _gate = lock(&self.snapshots.gate);
        if self.read_fs(|r| r.snapshot_row(name))?.is_some() {
            return Err(Error::SnapshotExists(name.to_string()));
        }
        // One operation: no change lands while the walk reads, so the cut is consistent.
        // A closure, not the method: the method's lifetime is not general enough for it.
        #[allow(clippy::redundant_closure_for_method_calls)]
        let entries = self.write_fs(Commit::CrashConsistent, |w| w.snapshot_entries())?;
        let count = entries.len() as u64;
        let bytes = entries.iter().filter(|e| e.kind == NodeKind::File).map(|e| e.size).sum();
        let mut encoded = vec![MANIFEST_V1];
        encoded.extend(encode(&entries));
        let staged = self.stage(&encoded)?;
        let rec = self.write_fs(Commit::Durable, |w| {
            if w.snapshot_row(name)?.is_some() {
                return Err(Error::SnapshotExists(name.to_string()));
            }
            let number = match w.meta()?.get(META_NEXT_SNAPSHOT)? {
                Some(v) => bytes_u64("next snapshot", v.value())?,
                None => 1,
            };
            let number = u32::try_from(number)
                .map_err(|_| Error::CorruptRecord("meta", "snapshot numbers ran out".into()))?;
            w.meta()?.insert(META_NEXT_SNAPSHOT, u64_bytes(u64::from(number) + 1).as_slice())?;
            w.register_leaf(&staged, now)?;
            w.history_incref(&staged.hash)?;
            let rec = SnapshotRecord {
                number,
                manifest: staged.hash,
                created_at: now,
                auto,
                entries: count,
                bytes,
            };
            w.snapshots()?.insert(name.as_bytes(), encode(&rec).as_slice())?;
            Ok(rec)
        })?;
        self.payloads.committed(&staged);
        *lock(&self.snapshots.held) = None;
        Ok(snapshot(name.as_bytes(), &rec))
    }

    /// Every snapshot, oldest first.
    pub fn snapshot_list(&self) -> Result<Vec<Snapshot>> {
        let mut out = self.scan(&["snapshots"], |r| {
            r.snapshots()?
                .iter()?
                .map(|row| {
                    let (k, v) = row?;
                    Ok(snapshot(k.value(), &decode("snapshot", v.value())?))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        out.sort_by_key(|s| (s.created_at, s.number));
        Ok(out)
    }

    /// The snapshot `name`.
    pub fn snapshot(&self, name: &str) -> Result<Snapshot> {
        match self.read_fs(|r| r.snapshot_row(name))? {
            Some(rec) => Ok(snapshot(name.as_bytes(), &rec)),
            None => Err(Error::NoSuchSnapshot(name.to_string())),
        }
    }

    /// Deletes the snapshot `name`: what only it held goes with the next GC.
    pub fn snapshot_delete(&self, name: &str) -> Result<()> {
        let now = Timestamp::now();
        let rec = self.write_fs(Commit::Durable, |w| {
            let Some(rec) = w.snapshot_row(name)? else {
                return Err(Error::NoSuchSnapshot(name.to_string()));
            };
            w.snapshots()?.remove(name.as_bytes())?;
            w.history_decref(&rec.manifest, now)?;
            Ok(rec)
        })?;
        lock(&self.snapshots.manifests).remove(&rec.manifest);
        *lock(&self.snapshots.held) = None;
        Ok(())
    }

    /// A snapshot's manifest (read once, then kept in memory).
    pub fn snapshot_manifest(&self, snap: &Snapshot) -> Result<Arc<Manifest>> {
        if let Some(m) = lock(&self.snapshots.manifests).get(&snap.manifest) {
            return Ok(m.clone());
        }
        let bytes = self.read_all(&snap.manifest)?;
        let entries: Vec<SnapEntry> = match bytes.split_first() {
            Some((&MANIFEST_V1, rest)) => decode("snapshot manifest", rest)?,
            _ => {
                return Err(Error::CorruptRecord(
                    "snapshot manifest",
                    format!("snapshot {:?}: unknown encoding", snap.name),
                ));
            }
        };
        let m = Arc::new(Manifest::new(entries)?);
        lock(&self.snapshots.manifests).insert(snap.manifest, m.clone());
        Ok(m)
    }

    /// Every leaf a snapshot names: GC keeps them.
    pub fn snapshot_held(&self) -> Result<Arc<HashSet<Hash>>> {
        if let Some(h) = &*lock(&self.snapshots.held) {
            return Ok(h.clone());
        }
        let mut held = HashSet::new();
        for snap in self.snapshot_list()? {
            let m = self.snapshot_manifest(&snap)?;
            held.extend(m.entries.iter().filter_map(|e| e.leaf));
        }
        let held = Arc::new(held);
        *lock(&self.snapshots.held) = Some(held.clone());
        Ok(held)
    }

    /// The lock GC takes before the staging lock, so that no snapshot is being taken while
    /// it decides.
    pub(crate) fn snapshot_gate(&self) -> MutexGuard<'_, ()> {
        lock(&self.snapshots.gate)
    }

    /// The bytes of leaves that only snapshots hold (no file, no version): what deleting
    /// every snapshot would give back, as the leaves' sizes count it.
    pub fn snapshot_usage(&self) -> Result<u64> {
        let held = self.snapshot_held()?;
        if held.is_empty() {
            return Ok(0);
        }
        self.read_fs(|r| {
            let mut bytes = 0;
            for leaf in held.iter() {
                if let Ok(rec) = r.leaf(leaf)
                    && rec.refs == 0
                    && r.history_refs_of(leaf)? == 0
                {
                    bytes += rec.size;
                }
            }
            Ok(bytes)
        })
    }

    /// Takes an automatic snapshot (`auto-<time>`), then deletes the automatic ones that
    /// `keep` no longer keeps. Named snapshots are never deleted here.
    pub fn snapshot_auto(&self, keep: &Keep, now: Timestamp) -> Result<Snapshot> {
        let name = format!("{AUTO_PREFIX}{}", now.rfc3339().replace(':', "-"));
        let snap = self.snapshot_create(&name, true, now)?;
        let autos: Vec<Snapshot> = self.snapshot_list()?.into_iter().filter(|s| s.auto).collect();
        let times: Vec<Timestamp> = autos.iter().map(|s| s.created_at).collect();
        for (s, kept) in autos.iter().zip(keep.select(&times, now, true)) {
            if !kept {
                self.snapshot_delete(&s.name)?;
            }
        }
        Ok(snap)
    }
}
