//! `realms/` (inode 4): one folder per realm we belong to, holding what every member of it
//! can access (`Vault::realm_view`): each member's own files and folders that hold live
//! grants to all the other members, ours included. Read-only, as `peers/` is: every change
//! gives `EROFS`; our own files are edited through `vault/`.
//!
//! - `realms/` lists the realms by their local label; a realm's folder lists its items flat,
//!   under their stewards' labels, told apart by steward when two share one
//!   (`spec (carol).md`). A shared folder shows its subtree.
//! - Inodes are `inode::of_realm(id)`, where `id` is the realm's local id, a mirror entry's
//!   id (another member's item, or an entry in it) or one of our node ids (ours): all come
//!   from the store's node counter, so they never collide.
//! - Another member's items are the mirror entries `peers/` shows: this view answers for
//!   them through `PeersView` (their attributes, reads, waits for content, the end of timed
//!   grants, xattrs `user.indra.steward`, `access_mode`, `expires_at`, `id`), after checking
//!   that the root they lie under is in a realm now. Ours are read from the vault, with
//!   their write bits cleared; their xattrs are the vault's computed ones (`steward`,
//!   `access_mode` listing our grants, `heat`, `id`), none listed.
//!
//! # Kernel caches
//! A realm's content changes without a request through this mount: a member shares or
//! recalls, a grant ends, a member joins or leaves. The daemon reports each such change
//! (`Invalidator::realms_changed`, and every mirror change); the view then lists each realm
//! folder again, and the kernel drops every name whose target changed or went, and the
//! folder's attributes (`RealmsView::stale`). Names and attributes of realm folders and of
//! other members' items are cached as under `peers/`; our own items change through `vault/`
//! with no word to this view, so the kernel caches none of their attributes, and reads
//! them with direct I/O.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indras_artifacts::{MirrorEntry, Node, NodeId, NodeKind, RealmRow, RealmTarget, Vault};

use super::common::{
    Change, Found, NO_TTL, ReadOnlyFile, ReadOnlyView, Stamped, TTL, View, dots, fixed_attr,
    fixed_listing, owned_attr,
};
use super::peers::PeersView;
use crate::attention::{Attention, Clock};
use crate::error::{FsError, FsResult};
use crate::inode;
use crate::open_files::lock;
use crate::status::MountInfo;
use crate::types::{Attr, DirItem};
use crate::xattr::Xattrs;

/// Folders above a node that a check walks at most (a guard against a damaged chain).
const DEPTH_MAX: usize = 4096;

fn enoent() -> FsError {
    FsError::errno(libc::ENOENT)
}

/// What an inode of this view is.
#[derive(Debug)]
enum Place {
    Top,
    Realm(RealmRow),
    /// One of our nodes, in a realm (an item, or under a folder that is one).
    Own(Node),
    /// Another member's entry (a mirror entry), in a realm.
    Theirs(NodeId),
}

/// What the realms hold now: our nodes and the members' roots, over every realm.
#[derive(Debug, Default)]
struct Held {
    own: HashSet<NodeId>,
    theirs: HashSet<NodeId>,
}

#[derive(Debug)]
pub(crate) struct RealmsView {
    vault: Arc<Vault>,
    info: Arc<MountInfo>,
    clock: Arc<dyn Clock>,
    attention: Arc<Attention>,
    peers: Arc<PeersView>,
    /// What each folder of this view (`realms/` and each realm's) listed when last asked:
    /// name -> inode. After a change, the names whose inode changed or went are stale.
    shown: Mutex<HashMap<u64, HashMap<Vec<u8>, u64>>>,
    /// What the realms held at a store write count, and when: reused while the store is
    /// unchanged, for at most `HELD_FRESH` (timed grants end with the clock alone), so that
    /// reads of a large file do not work it out again for every block.
    held: Mutex<Option<Stamped<Arc<Held>>>>,
}

/// How long what the realms hold is reused while the store is unchanged.
const HELD_FRESH: Duration = Duration::from_millis(500);

impl RealmsView {
    pub(crate) fn new(
        vault: Arc<Vault>,
        info: Arc<MountInfo>,
        clock: Arc<dyn Clock>,
        attention: Arc<Attention>,
        peers: Arc<PeersView>,
    ) -> Self {
        RealmsView {
            vault,
            info,
            clock,
            attention,
            peers,
            shown: Mutex::new(HashMap::new()),
            held: Mutex::new(None),
        }
    }

    /// `realms/`'s listing now: (label, inode).
    fn top(&self) -> FsResult<Vec<(Vec<u8>, u64, NodeKind)>> {
        let rows = self.vault.realms()?;
        let out: Vec<_> = rows
            .into_iter()
            .map(|r| (r.label.into_bytes(), inode::of_realm(r.local), NodeKind::Dir))
            .collect();
        self.remember_listing(inode::REALMS, &out);
        Ok(out)
    }

    /// A realm folder's listing now: (label, inode, kind).
    fn items(&self, row: &RealmRow) -> FsResult<Vec<(Vec<u8>, u64, NodeKind)>> {
        let items = self.vault.realm_view(row, self.clock.now())?;
        let out: Vec<_> = items
            .into_iter()
            .map(|i| {
                let id = i.target.id();
                let kind = if i.dir { NodeKind::Dir } else { NodeKind::File };
                (i.label, inode::of_realm(id), kind)
            })
            .collect();
        self.remember_listing(inode::of_realm(row.local), &out);
        Ok(out)
    }

    fn remember_listing(&self, dir: u64, listing: &[(Vec<u8>, u64, NodeKind)]) {
        let map = listing.iter().map(|(n, i, _)| (n.clone(), *i)).collect();
        lock(&self.shown).insert(dir, map);
    }

    /// What every realm holds now (see `held` on the struct).
    fn held(&self) -> FsResult<Arc<Held>> {
        let writes = self.vault.write_count();
        if let Some(h) = lock(&self.held).as_ref().and_then(|s| s.get(writes, HELD_FRESH)) {
            return Ok(h);
        }
        let h = Arc::new(self.held_now()?);
        *lock(&self.held) = Some(Stamped::new(writes, h.clone()));
        Ok(h)
    }

    fn held_now(&self) -> FsResult<Held> {
        let now = self.clock.now();
        let mut h = Held::default();
        for row in self.vault.realms()? {
            for (_, t) in self.vault.realm_targets(&row, now)? {
                match t {
                    RealmTarget::Own(n) => h.own.insert(n),
                    RealmTarget::Theirs(e) => h.theirs.insert(e),
                };
            }
        }
        Ok(h)
    }

    /// Whether our node `node` lies in a realm: it is an item, or a folder above it is. A
    /// file in a shared folder has no parent of its own to check: our own files are ours to
    /// read anyway, so any file that still has a name passes.
    fn own_in_realm(&self, node: &Node, held: &Held) -> FsResult<bool> {
        if held.own.contains(&node.id) {
            return Ok(true);
        }
        if node.kind != NodeKind::Dir {
            return Ok(node.kind == NodeKind::File && node.nlink > 0 && !held.own.is_empty());
        }
        let mut at = node.parent;
        for _ in 0..DEPTH_MAX {
            match at {
                Some(p) if held.own.contains(&p) => return Ok(true),
                Some(p) if p != NodeId::ROOT => at = self.vault.node(p)?.parent,
                _ => return Ok(false),
            }
        }
        Ok(false)
    }

    fn place(&self, ino: u64) -> FsResult<Place> {
        let id = inode::realm_of(ino).ok_or_else(enoent)?;
        if id == MirrorEntry::TOP {
            return Ok(Place::Top);
        }
        if let Some(row) = self.vault.realm_by_local(id)? {
            return Ok(Place::Realm(row));
        }
        let held = self.held()?;
        if let Some(e) = self.vault.mirror_entry(id)? {
            return if held.theirs.contains(&e.root) {
                Ok(Place::Theirs(id))
            } else {
                Err(enoent())
            };
        }
        match self.vault.node(id) {
            Ok(node) if self.own_in_realm(&node, &held)? => Ok(Place::Own(node)),
            Ok(_) | Err(indras_artifacts::Error::NoSuchNode(_)) => Err(enoent()),
            Err(e) => Err(e.into()),
        }
    }

    /// Another member's entry's attributes, as `peers/` has them, under this view's inode.
    fn theirs_attr(&self, id: NodeId) -> FsResult<Attr> {
        let mut a = self.peers.getattr(inode::of_mirror(id))?;
        a.ino = inode::of_realm(id);
        Ok(a)
    }

    fn realm_attr(&self, row: &RealmRow) -> FsResult<Attr> {
        let dirs = self.items(row)?.iter().filter(|i| i.2 == NodeKind::Dir).count();
        let nlink = 2u32.saturating_add(u32::try_from(dirs).unwrap_or(u32::MAX));
        let ino = inode::of_realm(row.local);
        let t = row.realm.created_at.to_system();
        Ok(owned_attr(&self.info, ino, NodeKind::Dir, 0o555, nlink, 0, t))
    }

    /// Names whose target changed or went since each folder of this view was last listed,
    /// and the folders themselves: what the kernel must drop after a change (the
    /// invalidation thread calls this, never a FUSE request).
    pub(crate) fn stale(&self) -> (Vec<(u64, Vec<u8>)>, Vec<u64>) {
        let before = std::mem::take(&mut *lock(&self.shown));
        let mut names = Vec::new();
        let mut dirs = Vec::new();
        for (dir, old) in before {
            let now: HashMap<Vec<u8>, u64> = match self.listing_of(dir) {
                Ok(l) => l.into_iter().map(|(n, i, _)| (n, i)).collect(),
                Err(_) => HashMap::new(),
            };
            if now == old {
                continue;
            }
            for (name, ino) in old {
                if now.get(&name) != Some(&ino) {
                    names.push((dir, name));
                }
            }
            dirs.push(dir);
        }
        (names, dirs)
    }

    /// The listing of folder `dir` of this view (`realms/` or a realm's), now.
    fn listing_of(&self, dir: u64) -> FsResult<Vec<(Vec<u8>, u64, NodeKind)>> {
        match self.place(dir)? {
            Place::Top => self.top(),
            Place::Realm(row) => self.items(&row),
            _ => Err(FsError::errno(libc::ENOTDIR)),
        }
    }
}

/// Our node as this view shows it: read-only.
fn own_attr(node: &Node) -> Attr {
    Attr {
        ino: inode::of_realm(node.id),
        size: node.size,
        blocks: node.size.div_ceil(512),
        atime: node.atime.to_system(),
        mtime: node.mtime.to_system(),
        ctime: node.ctime.to_system(),
        crtime: node.crtime.to_system(),
        kind: node.kind,
        perm: (node.perm & 0o7555) as u16,
        nlink: node.nlink,
        uid: node.uid,
        gid: node.gid,
        rdev: 0,
        blksize: crate::types::BLKSIZE,
    }
}

impl View for RealmsView {
    fn getattr(&self, ino: u64) -> FsResult<Attr> {
        match self.place(ino)? {
            Place::Top => {
                let n = self.top()?.len();
                let nlink = 2u32.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
                Ok(fixed_attr(&self.info, ino, NodeKind::Dir, 0o555, nlink, 0))
            }
            Place::Realm(row) => self.realm_attr(&row),
            Place::Own(node) => Ok(own_attr(&node)),
            Place::Theirs(id) => self.theirs_attr(id),
        }
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Found> {
        let attr = match self.place(parent)? {
            Place::Top | Place::Realm(_) => {
                let (_, ino, _) = self
                    .listing_of(parent)?
                    .into_iter()
                    .find(|(n, _, _)| n == name)
                    .ok_or_else(enoent)?;
                self.getattr(ino)?
            }
            Place::Own(dir) => {
                let child = self.vault.lookup(dir.id, name)?;
                if !matches!(child.kind, NodeKind::File | NodeKind::Dir) {
                    return Err(enoent());
                }
                own_attr(&child)
            }
            Place::Theirs(dir) => match self.peers.lookup(inode::of_mirror(dir), name)? {
                Found::Entry(mut a) => {
                    a.ino = inode::of_realm(inode::mirror_of(a.ino).ok_or_else(enoent)?);
                    a
                }
                Found::ViewRoot(_) => return Err(enoent()),
            },
        };
        Ok(Found::Entry(attr))
    }

    fn readdir(&self, dir: u64, offset: u64, limit: usize) -> FsResult<Vec<DirItem>> {
        match self.place(dir)? {
            Place::Top => {
                let l = self.top()?;
                let entries = l.iter().map(|(n, i, k)| (*i, *k, n.as_slice()));
                Ok(fixed_listing(dir, inode::ROOT, offset, entries))
            }
            Place::Realm(row) => {
                let l = self.items(&row)?;
                let entries = l.iter().map(|(n, i, k)| (*i, *k, n.as_slice()));
                Ok(fixed_listing(dir, inode::REALMS, offset, entries))
            }
            Place::Own(node) => {
                if node.kind != NodeKind::Dir {
                    return Err(FsError::errno(libc::ENOTDIR));
                }
                let parent = node.parent.map_or(inode::REALMS, inode::of_realm);
                let mut out = dots(dir, parent, offset);
                for e in self.vault.list(node.id, offset.saturating_sub(2), limit)? {
                    if matches!(e.kind, NodeKind::File | NodeKind::Dir) {
                        let ino = inode::of_realm(e.node);
                        out.push(DirItem {
                            ino,
                            offset: e.position + 2,
                            kind: e.kind,
                            name: e.name,
                        });
                    }
                }
                Ok(out)
            }
            Place::Theirs(id) => {
                let mut out = self.peers.readdir(inode::of_mirror(id), offset, limit)?;
                for item in &mut out {
                    item.ino = match inode::mirror_of(item.ino) {
                        Some(m) if m != MirrorEntry::TOP && item.name != b".." => {
                            inode::of_realm(m)
                        }
                        _ => inode::REALMS,
                    };
                }
                Ok(out)
            }
        }
    }

    fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        let no = || FsError::errno(libc::ENODATA);
        match self.place(ino)? {
            Place::Top | Place::Realm(_) => Err(no()),
            Place::Theirs(id) => self.peers.getxattr(inode::of_mirror(id), name),
            Place::Own(node) => {
                let key =
                    name.strip_prefix(b"user.indra.").or_else(|| name.strip_prefix(b"indra."));
                match key {
                    Some(b"steward" | b"access_mode" | b"heat" | b"id") => {
                        Xattrs { vault: &self.vault, attention: &self.attention }.get(node.id, name)
                    }
                    _ => Err(no()),
                }
            }
        }
    }

    fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.place(ino)?;
        // Every attribute here is computed: read by name, never listed.
        Ok(Vec::new())
    }

    fn ttl(&self, ino: u64) -> Duration {
        match self.place(ino) {
            Ok(Place::Top | Place::Realm(_)) => TTL,
            Ok(Place::Theirs(id)) => self.peers.ttl(inode::of_mirror(id)),
            Ok(Place::Own(_)) | Err(_) => NO_TTL,
        }
    }
}

impl ReadOnlyView for RealmsView {
    fn open(&self, ino: u64) -> FsResult<ReadOnlyFile> {
        match self.place(ino)? {
            Place::Top | Place::Realm(_) => Err(FsError::errno(libc::EISDIR)),
            Place::Theirs(id) => self.peers.open(inode::of_mirror(id)),
            Place::Own(node) => match node.kind {
                NodeKind::File => Ok(ReadOnlyFile::Streamed { keep_cache: false, direct_io: true }),
                NodeKind::Dir => Err(FsError::errno(libc::EISDIR)),
                _ => Err(enoent()),
            },
        }
    }

    fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        match self.place(ino)? {
            Place::Theirs(id) => self.peers.read(inode::of_mirror(id), offset, size),
            Place::Own(node) => match node.content {
                Some(leaf) => Ok(self.vault.read_vec(&leaf, offset, size as usize)?),
                None => Err(FsError::errno(libc::EISDIR)),
            },
            Place::Top | Place::Realm(_) => Err(FsError::errno(libc::EISDIR)),
        }
    }

    fn refuse(&self, _change: Change<'_>) -> FsError {
        FsError::new(
            libc::EROFS,
            "realms/ is read-only: each member changes its own files, ours through vault/",
        )
    }

    /// Opening, closing or listing a realm item (or anything in one) is attention on it: on
    /// another member's, its mirror entry, whose steward hears of it; on ours, our node.
    fn attention_entry(&self, ino: u64) -> Option<NodeId> {
        match self.place(ino).ok()? {
            Place::Theirs(id) => Some(id),
            Place::Own(node) => Some(node.id),
            Place::Top | Place::Realm(_) => None,
        }
    }
}
