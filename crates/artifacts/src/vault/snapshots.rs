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

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::MutexGuard;

use crate::error::{Error, Result};
use crate::store::meta::W;
use crate::store::schema::{SnapshotRecord, bytes_u64, decode, encode, u64_bytes};
use crate::types::{Hash, NodeId, NodeKind, Timestamp};
use crate::vault::handle::{Commit, Vault};
use crate::vault::manifest::{Manifest, SnapEntry};
use crate::vault::namespace::{children, validate_name};
use crate::vault::retention::Keep;

/// The longest snapshot name, in bytes.
pub const SNAPSHOT_NAME_MAX: usize = 128;
/// `meta_v1`: the next snapshot number.
const META_NEXT_SNAPSHOT: &str = "next_snapshot";
/// The first byte of a manifest: its encoding's version.
const MANIFEST_V1: u8 = 1;
/// The prefix of the names `--snapshot-every` gives.
pub const AUTO_PREFIX: &str = "auto-";

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

/// The vault's namespace, depth first, names sorted: a snapshot's entries.
fn snapshot_entries(w: &mut W) -> Result<Vec<SnapEntry>> {
    // Each folder's entries come in name order (`children` reads the entries table in key
    // order).
    let kids = children(w)?;
    let mut out = Vec::new();
    let mut stack = vec![(NodeId::ROOT, 0u32, Vec::new())];
    while let Some((id, depth, name)) = stack.pop() {
        let node = w.node(id)?;
        let xattrs: Vec<(Vec<u8>, Vec<u8>)> = w
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

impl W<'_> {
    fn snapshot_row(&mut self, name: &str) -> Result<Option<SnapshotRecord>> {
        self.snapshots()?.get(name.as_bytes())?.map(|v| decode("snapshot", v.value())).transpose()
    }
}

impl Vault {
    /// Takes a snapshot named `name` of the whole vault as it is now.
    pub fn snapshot_create(&self, name: &str, auto: bool, now: Timestamp) -> Result<Snapshot> {
        validate_snapshot_name(name)?;
        let _gate = self.snapshots.gate.lock();
        if self.read_fs(|r| r.snapshot_row(name))?.is_some() {
            return Err(Error::SnapshotExists(name.to_string()));
        }
        // One operation: no change lands while the walk reads, so the cut is consistent.
        let entries = self.write_fs(Commit::CrashConsistent, snapshot_entries)?;
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
        *self.snapshots.held.lock() = None;
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
        let gone = self.snapshots.manifests.lock().remove(&rec.manifest);
        *self.snapshots.held.lock() = None;
        // What only it held is garbage now: back to GC's candidates (GC took such leaves out
        // while the snapshot held them).
        let gone = match gone {
            Some(m) => m,
            None => Arc::new(self.read_manifest(&snapshot(name.as_bytes(), &rec))?),
        };
        let held = self.snapshot_held()?;
        let freed: Vec<Hash> =
            gone.entries.iter().filter_map(|e| e.leaf).filter(|l| !held.contains(l)).collect();
        if !freed.is_empty() {
            self.write_fs(Commit::CrashConsistent, |w| {
                for leaf in &freed {
                    if let Ok(rec) = w.leaf(leaf)
                        && rec.refs == 0
                        && w.history_refs_of(leaf)? == 0
                    {
                        w.mark_unreferenced(leaf, rec.size, now)?;
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// A snapshot's manifest (read once, then kept in memory).
    pub fn snapshot_manifest(&self, snap: &Snapshot) -> Result<Arc<Manifest>> {
        if let Some(m) = self.snapshots.manifests.lock().get(&snap.manifest) {
            return Ok(m.clone());
        }
        let m = Arc::new(self.read_manifest(snap)?);
        self.snapshots.manifests.lock().insert(snap.manifest, m.clone());
        Ok(m)
    }

    fn read_manifest(&self, snap: &Snapshot) -> Result<Manifest> {
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
        Manifest::new(entries)
    }

    /// Every leaf a snapshot names: GC keeps them.
    pub fn snapshot_held(&self) -> Result<Arc<HashSet<Hash>>> {
        if let Some(h) = &*self.snapshots.held.lock() {
            return Ok(h.clone());
        }
        let mut held = HashSet::new();
        for snap in self.snapshot_list()? {
            let m = self.snapshot_manifest(&snap)?;
            held.extend(m.entries.iter().filter_map(|e| e.leaf));
        }
        let held = Arc::new(held);
        *self.snapshots.held.lock() = Some(held.clone());
        Ok(held)
    }

    /// The lock GC takes before the staging lock, so that no snapshot is being taken while
    /// it decides.
    pub(crate) fn snapshot_gate(&self) -> MutexGuard<'_, ()> {
        self.snapshots.gate.lock()
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
