//! `.indra/snapshots/` (inode 15): one folder per snapshot, the vault as it was when it was
//! taken, read-only.
//!
//! - `.indra/snapshots/` lists the snapshots by name (in the order they were numbered). Each
//!   is a tree of folders, files and symlinks as the snapshot's manifest recorded them
//!   (`Vault::snapshot_manifest`): their permissions, owners, sizes and times, and their
//!   stored extended attributes (listed, as the vault lists them). A file reads its recorded
//!   content; `user.indra.id` (computed, not listed) is its content's id.
//! - Inodes: `inode::of_snapshot(number, index)`: the snapshot's number and the entry's index
//!   in its manifest (0, the vault's root, is the snapshot's folder). Cookies are manifest
//!   indexes (+ 2), or snapshot numbers (+ 2) in `.indra/snapshots/`.
//! - Everything refuses changes as the rest of `.indra/` does (`EROFS`; `EPERM` to a link).
//!
//! # Kernel caches
//! A snapshot never changes: everything inside one is cached for `TTL`. The list of
//! snapshots does (one is taken or deleted): `.indra/snapshots/` and the snapshots' folders
//! for `FOLDER_TTL`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use indras_artifacts::{Manifest, NodeKind, SnapEntry, Snapshot, Vault};

use super::common::{
    Found, ReadOnlyFile, ReadOnlyView, Stamped, TTL, View, dots, fixed_attr, no_acls,
};
use super::history::FOLDER_TTL;
use crate::error::{FsError, FsResult};
use crate::inode;
use crate::open_files::lock;
use crate::status::MountInfo;
use crate::types::{Attr, BLKSIZE, DirItem};

/// How long the list of snapshots is reused while the store is unchanged.
const LIST_FRESH: Duration = Duration::from_secs(1);

fn enoent() -> FsError {
    FsError::errno(libc::ENOENT)
}

#[derive(Debug)]
pub(crate) struct SnapshotsView {
    vault: Arc<Vault>,
    info: Arc<MountInfo>,
    /// The snapshots, by number, at a store write count.
    list: Mutex<Option<Stamped<Arc<Vec<Snapshot>>>>>,
}

impl SnapshotsView {
    pub(crate) fn new(vault: Arc<Vault>, info: Arc<MountInfo>) -> Self {
        SnapshotsView { vault, info, list: Mutex::new(None) }
    }

    /// Every snapshot that has inodes, by number.
    fn snapshots(&self) -> FsResult<Arc<Vec<Snapshot>>> {
        let writes = self.vault.write_count();
        if let Some(list) = lock(&self.list).as_ref().and_then(|s| s.get(writes, LIST_FRESH)) {
            return Ok(list);
        }
        let mut all = self.vault.snapshot_list()?;
        all.retain(|s| inode::of_snapshot(s.number, 0).is_some());
        all.sort_by_key(|s| s.number);
        let all = Arc::new(all);
        *lock(&self.list) = Some(Stamped::new(writes, all.clone()));
        Ok(all)
    }

    /// The snapshot and manifest entry behind `ino` (not `.indra/snapshots/` itself).
    fn find(&self, ino: u64) -> FsResult<(Arc<Manifest>, u32, u32)> {
        let (number, index) = inode::snapshot_of(ino).ok_or_else(enoent)?;
        let list = self.snapshots()?;
        let snap = list.iter().find(|s| s.number == number).ok_or_else(enoent)?;
        let manifest = self.vault.snapshot_manifest(snap)?;
        manifest.entry(index).ok_or_else(enoent)?;
        Ok((manifest, number, index))
    }

    fn attr_of(m: &Manifest, number: u32, index: u32) -> FsResult<Attr> {
        let e = m.entry(index).ok_or_else(enoent)?;
        let ino = inode::of_snapshot(number, index).ok_or_else(enoent)?;
        let nlink = match e.kind {
            NodeKind::Dir => {
                let subdirs = m
                    .children(index)
                    .iter()
                    .filter(|c| m.entry(**c).is_some_and(|c| c.kind == NodeKind::Dir))
                    .count();
                2u32.saturating_add(u32::try_from(subdirs).unwrap_or(u32::MAX))
            }
            _ => 1,
        };
        Ok(Attr {
            ino,
            size: e.size,
            blocks: e.size.div_ceil(512),
            atime: e.atime.to_system(),
            mtime: e.mtime.to_system(),
            ctime: e.ctime.to_system(),
            crtime: e.ctime.to_system(),
            kind: e.kind,
            perm: u16::try_from(e.perm & 0o7777).unwrap_or(0),
            nlink,
            uid: e.uid,
            gid: e.gid,
            rdev: e.rdev,
            blksize: BLKSIZE,
        })
    }

    fn entry(m: &Manifest, index: u32) -> FsResult<&SnapEntry> {
        m.entry(index).ok_or_else(enoent)
    }
}

/// The folder that holds entry `index` of `m` (the nearest entry before it one level up).
fn parent_index(m: &Manifest, index: u32) -> Option<u32> {
    let depth = m.entry(index)?.depth;
    (0..index).rev().find(|i| m.entry(*i).is_some_and(|e| e.depth + 1 == depth))
}

impl View for SnapshotsView {
    fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if ino == inode::SNAPSHOTS {
            let n = u32::try_from(self.snapshots()?.len()).unwrap_or(u32::MAX);
            return Ok(fixed_attr(&self.info, ino, NodeKind::Dir, 0o555, n.saturating_add(2), 0));
        }
        let (m, number, index) = self.find(ino)?;
        Self::attr_of(&m, number, index)
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Found> {
        if parent == inode::SNAPSHOTS {
            let list = self.snapshots()?;
            let snap = list.iter().find(|s| s.name.as_bytes() == name).ok_or_else(enoent)?;
            let m = self.vault.snapshot_manifest(snap)?;
            return Ok(Found::Entry(Self::attr_of(&m, snap.number, 0)?));
        }
        let (m, number, index) = self.find(parent)?;
        if Self::entry(&m, index)?.kind != NodeKind::Dir {
            return Err(FsError::errno(libc::ENOTDIR));
        }
        let child = m.lookup(index, name).ok_or_else(enoent)?;
        Ok(Found::Entry(Self::attr_of(&m, number, child)?))
    }

    fn readdir(&self, dir: u64, offset: u64, limit: usize) -> FsResult<Vec<DirItem>> {
        if dir == inode::SNAPSHOTS {
            let mut out = dots(dir, inode::INDRA, offset);
            for s in self.snapshots()?.iter() {
                let cookie = u64::from(s.number) + 2;
                if cookie > offset
                    && let Some(ino) = inode::of_snapshot(s.number, 0)
                {
                    out.push(DirItem {
                        ino,
                        offset: cookie,
                        kind: NodeKind::Dir,
                        name: s.name.clone().into_bytes(),
                    });
                }
            }
            return Ok(out);
        }
        let (m, number, index) = self.find(dir)?;
        if Self::entry(&m, index)?.kind != NodeKind::Dir {
            return Err(FsError::errno(libc::ENOTDIR));
        }
        let parent = match parent_index(&m, index) {
            Some(p) => inode::of_snapshot(number, p).ok_or_else(enoent)?,
            None => inode::SNAPSHOTS,
        };
        let mut out = dots(dir, parent, offset);
        let kids = m.children(index);
        // Children come in index order (the manifest is depth first, names sorted), and an
        // index is above 0, so index + 2 is a cookie past the dots.
        let start = kids.partition_point(|k| u64::from(*k) + 2 <= offset);
        for k in kids[start..].iter().take(limit.max(1)) {
            let e = Self::entry(&m, *k)?;
            out.push(DirItem {
                ino: inode::of_snapshot(number, *k).ok_or_else(enoent)?,
                offset: u64::from(*k) + 2,
                kind: e.kind,
                name: e.name.clone(),
            });
        }
        Ok(out)
    }

    fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let (m, _, index) = self.find(ino)?;
        Self::entry(&m, index)?.symlink.clone().ok_or_else(|| FsError::errno(libc::EINVAL))
    }

    fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        let no = || FsError::errno(libc::ENODATA);
        if let Some(e) = no_acls(name) {
            return Err(e);
        }
        if ino == inode::SNAPSHOTS {
            return Err(no());
        }
        let (m, _, index) = self.find(ino)?;
        let e = Self::entry(&m, index)?;
        if name == b"user.indra.id" || name == b"indra.id" {
            return match (e.kind, e.leaf) {
                (NodeKind::File, Some(leaf)) => Ok(indras_artifacts::hex(&leaf).into_bytes()),
                _ => Err(no()),
            };
        }
        e.xattrs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).ok_or_else(no)
    }

    fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        if ino == inode::SNAPSHOTS {
            return Ok(Vec::new());
        }
        let (m, _, index) = self.find(ino)?;
        let mut out = Vec::new();
        for (name, _) in &Self::entry(&m, index)?.xattrs {
            out.extend_from_slice(name);
            out.push(0);
        }
        Ok(out)
    }

    fn ttl(&self, ino: u64) -> Duration {
        // The list of snapshots changes; a snapshot's folder may go with its snapshot (and
        // its name come back as another); what is inside one never changes.
        match inode::snapshot_of(ino) {
            Some((_, index)) if index > 0 => TTL,
            _ => FOLDER_TTL,
        }
    }
}

impl ReadOnlyView for SnapshotsView {
    fn open(&self, ino: u64) -> FsResult<ReadOnlyFile> {
        if ino == inode::SNAPSHOTS {
            return Err(FsError::errno(libc::EISDIR));
        }
        let (m, _, index) = self.find(ino)?;
        match Self::entry(&m, index)?.kind {
            NodeKind::File => Ok(ReadOnlyFile::Streamed { keep_cache: true, direct_io: false }),
            NodeKind::Dir => Err(FsError::errno(libc::EISDIR)),
            // Devices and FIFOs are the kernel's to open; a symlink is followed first.
            _ => Err(FsError::errno(libc::ENXIO)),
        }
    }

    fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let (m, _, index) = self.find(ino)?;
        match Self::entry(&m, index)?.leaf {
            Some(leaf) => Ok(self.vault.read_vec(&leaf, offset, size as usize)?),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indras_artifacts::{Commit, NewNode, NodeId, Options, Timestamp};

    #[test]
    fn a_snapshot_shows_the_vault_as_it_was() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Arc::new(Vault::open(dir.path(), "alice", &Options::default()).expect("open"));
        let now = Timestamp::now();
        let cc = Commit::CrashConsistent;
        let d =
            vault.create(NodeId::ROOT, b"notes", &NewNode::dir(0o750), None, now, cc).expect("d");
        let staged = vault.stage(b"hello").expect("stage");
        let f = vault
            .create(d.id, b"a.md", &NewNode::file(0o640), Some(staged), now, cc)
            .expect("file");
        let xattr = indras_artifacts::XattrMode::Upsert;
        vault.set_xattr(f.id, b"user.tag", b"red", xattr, now, cc).expect("xattr");
        vault.snapshot_create("first", false, now).expect("snapshot");
        vault.remove(d.id, b"a.md", false, now, cc).expect("remove");

        let view =
            SnapshotsView::new(vault.clone(), Arc::new(MountInfo::unmounted("alice", dir.path())));
        let top = view.readdir(inode::SNAPSHOTS, 2, 100).expect("list");
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].name, b"first");
        let Found::Entry(root) = view.lookup(inode::SNAPSHOTS, b"first").expect("lookup") else {
            panic!("an entry")
        };
        assert_eq!(root.ino, top[0].ino);
        let Found::Entry(notes) = view.lookup(root.ino, b"notes").expect("notes") else {
            panic!("an entry")
        };
        assert_eq!((notes.kind, notes.perm), (NodeKind::Dir, 0o750));
        let Found::Entry(a) = view.lookup(notes.ino, b"a.md").expect("a.md") else {
            panic!("an entry")
        };
        assert_eq!((a.kind, a.perm, a.size), (NodeKind::File, 0o640, 5));
        assert_eq!(view.read(a.ino, 1, 100).expect("read"), b"ello");
        assert_eq!(view.getxattr(a.ino, b"user.tag").expect("xattr"), b"red");
        assert_eq!(view.listxattr(a.ino).expect("list"), b"user.tag\0");
        let items = view.readdir(notes.ino, 0, 100).expect("readdir");
        let names: Vec<&[u8]> = items.iter().map(|i| i.name.as_slice()).collect();
        assert_eq!(names, [&b"."[..], b"..", b"a.md"]);
        assert_eq!(items[1].ino, root.ino);
        assert_eq!(view.readdir(notes.ino, items[2].offset, 100).expect("rest"), []);
        assert_eq!(view.ttl(a.ino), TTL);
        assert_eq!(view.ttl(root.ino), FOLDER_TTL);

        vault.snapshot_delete("first").expect("delete");
        assert_eq!(view.getattr(a.ino).expect_err("gone").errno, libc::ENOENT);
        assert_eq!(view.readdir(inode::SNAPSHOTS, 0, 100).expect("list").len(), 2);
    }
}
