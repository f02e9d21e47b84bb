//! The grantee's side of sharing: what peers share with us, kept as *mirror entries*.
//!
//! Each peer that shares anything gets a folder entry (labelled with our name for it) under
//! [`MirrorEntry::TOP`]; its shared roots sit in that folder, and a shared folder's subtree
//! under the root. Entries are not nodes: the vault's namespace never sees them, and the mount
//! shows them read-only under `peers/`. Their ids come from the node id counter, so a mirror
//! id never equals a node id.
//!
//! A file entry names the content the peer has (`content`) and the content we hold (`have`,
//! one reference on its leaf, like a node's): GC keeps what a live entry holds, and reclaims
//! it once the entry goes (a recall, an expiry, a peer's removal).
//!
//! Everything a peer sends is checked here before it is kept: labels are made safe and
//! unique within their folder ([`clean_label`]), and an entry's kind never changes in place.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::payload::layout::EMPTY_LEAF;
use crate::payload::writer::StagedLeaf;
use crate::store::meta::W;
use crate::store::schema::{decode, encode};
use crate::types::{
    AccessMode, Hash, MirrorEntry, NodeId, PlayerId, SharedItem, SharedKind, Timestamp,
};
use crate::vault::handle::{Commit, Vault};
use crate::vault::namespace::NAME_MAX;

/// What one change to the mirror did, for the mount's caches and the fetcher.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MirrorChanges {
    /// Entries added, changed or removed, with their parents: the kernel's view of each is
    /// stale.
    pub touched: Vec<(NodeId, NodeId, Vec<u8>)>,
    /// Files whose content we lack: (entry, content).
    pub fetch: Vec<(NodeId, Hash)>,
    /// Folders whose listing must be asked for: (entry, the peer's node id).
    pub list: Vec<(NodeId, u64)>,
    /// Entries removed.
    pub removed: Vec<NodeId>,
}

impl MirrorChanges {
    pub fn is_empty(&self) -> bool {
        self.touched.is_empty() && self.fetch.is_empty() && self.list.is_empty()
    }
}

/// A label from a peer, made safe for the kernel: no `/` or NUL (each becomes `_`), not empty,
/// `.` or `..`, and at most `NAME_MAX` bytes (cut at a character boundary).
pub fn clean_label(raw: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> =
        raw.iter().map(|&b| if b == b'/' || b == 0 { b'_' } else { b }).collect();
    if out.len() > NAME_MAX {
        let mut end = NAME_MAX;
        if let Err(e) = std::str::from_utf8(&out) {
            end = end.min(e.valid_up_to().max(1));
        }
        while end > 1 && std::str::from_utf8(&out[..end]).is_err() && out[end] & 0xc0 == 0x80 {
            end -= 1;
        }
        out.truncate(end);
    }
    if out.is_empty() || out == b"." || out == b".." {
        out.insert(0, b'_');
    }
    out
}

/// `label` with ` (n)` before its extension: `spec.md` -> `spec (2).md`.
pub(crate) fn numbered(label: &[u8], n: u64) -> Vec<u8> {
    tagged(label, &n.to_string())
}

/// `label` with ` (tag)` before its extension (`spec.md` -> `spec (carol).md`), its stem cut
/// so that it stays within `NAME_MAX` bytes.
pub(crate) fn tagged(label: &[u8], tag: &str) -> Vec<u8> {
    let dot = label.iter().rposition(|&b| b == b'.').filter(|&i| i > 0);
    let (stem, ext) = dot.map_or((label, &b""[..]), |i| label.split_at(i));
    let suffix = format!(" ({tag})");
    let room = NAME_MAX.saturating_sub(suffix.len() + ext.len());
    let mut out = stem[..stem.len().min(room)].to_vec();
    out.extend_from_slice(suffix.as_bytes());
    out.extend_from_slice(ext);
    out
}

impl W<'_> {
    pub(crate) fn mirror_get(&mut self, id: NodeId) -> Result<Option<MirrorEntry>> {
        self.mirror()?.get(id.0)?.map(|v| decode("mirror entry", v.value())).transpose()
    }

    fn mirror_put(&mut self, e: &MirrorEntry) -> Result<()> {
        self.mirror()?.insert(e.id.0, encode(e).as_slice())?;
        Ok(())
    }

    /// Every entry where `peer`'s node `remote` appears (0: the peer's folder).
    fn mirror_where(&mut self, peer: PlayerId, remote: u64) -> Result<Vec<MirrorEntry>> {
        let ids: Vec<u64> = self
            .mirror_remote()?
            .range((&peer.0, remote, 0)..=(&peer.0, remote, u64::MAX))?
            .map(|row| row.map(|(k, _)| k.value().2))
            .collect::<Result<_, _>>()?;
        ids.into_iter().filter_map(|id| self.mirror_get(NodeId(id)).transpose()).collect()
    }

    fn mirror_kids_of(&mut self, parent: NodeId) -> Result<Vec<MirrorEntry>> {
        let ids: Vec<u64> = self
            .mirror_kids()?
            .range((parent.0, 0)..=(parent.0, u64::MAX))?
            .map(|r| r.map(|(k, _)| k.value().1))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.mirror_get(NodeId(id))? {
                Some(e) => out.push(e),
                None => {
                    return Err(Error::CorruptRecord(
                        "mirror",
                        format!("#{id} is listed, not kept"),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// A label not yet taken in `parent`: `label`, or `label (n)` for the smallest n from 2.
    fn free_label(&mut self, parent: NodeId, label: &[u8]) -> Result<Vec<u8>> {
        let mut candidate = label.to_vec();
        let mut n = 2;
        while self.mirror_names()?.get((parent.0, candidate.as_slice()))?.is_some() {
            candidate = numbered(label, n);
            n += 1;
        }
        Ok(candidate)
    }

    fn mirror_insert(&mut self, e: &MirrorEntry) -> Result<()> {
        self.mirror_put(e)?;
        self.mirror_names()?.insert((e.parent.0, e.label.as_slice()), e.id.0)?;
        self.mirror_kids()?.insert((e.parent.0, e.id.0), ())?;
        self.mirror_remote()?.insert((&e.peer.0, e.remote, e.id.0), ())?;
        Ok(())
    }

    /// Deletes an entry and everything under it, dropping the leaves they hold.
    fn mirror_delete(&mut self, id: NodeId, now: Timestamp, out: &mut MirrorChanges) -> Result<()> {
        let Some(e) = self.mirror_get(id)? else { return Ok(()) };
        for kid in self.mirror_kids_of(id)? {
            self.mirror_delete(kid.id, now, out)?;
        }
        self.mirror()?.remove(id.0)?;
        self.mirror_names()?.remove((e.parent.0, e.label.as_slice()))?;
        self.mirror_kids()?.remove((e.parent.0, id.0))?;
        self.mirror_remote()?.remove((&e.peer.0, e.remote, id.0))?;
        if let Some(h) = e.have {
            self.drop_held(&h, now)?;
        }
        out.touched.push((id, e.parent, e.label));
        out.removed.push(id);
        Ok(())
    }

    fn drop_held(&mut self, leaf: &Hash, now: Timestamp) -> Result<()> {
        self.leaf_decref(leaf, now)
    }

    /// Whether this vault holds the leaf `leaf`.
    pub(crate) fn holds_leaf(&mut self, leaf: &Hash) -> Result<bool> {
        Ok(*leaf == EMPTY_LEAF || self.leaves()?.get(leaf)?.is_some())
    }
}

impl Vault {
    /// The mirror entry `id`.
    pub fn mirror_entry(&self, id: NodeId) -> Result<Option<MirrorEntry>> {
        self.read_fs(|r| r.mirror_get(id))
    }

    /// The entry labelled `label` in mirror folder `parent` (`MirrorEntry::TOP` for peers).
    pub fn mirror_lookup(&self, parent: NodeId, label: &[u8]) -> Result<Option<MirrorEntry>> {
        self.read_fs(|r| match r.mirror_names()?.get((parent.0, label))? {
            Some(id) => {
                let id = NodeId(id.value());
                r.mirror_get(id)
            }
            None => Ok(None),
        })
    }

    /// Up to `limit` entries of mirror folder `parent` with ids above `after`, in id order
    /// (ids are stable, so they serve as readdir cookies).
    pub fn mirror_list(
        &self,
        parent: NodeId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<MirrorEntry>> {
        self.read_fs(|r| {
            let ids: Vec<u64> = r
                .mirror_kids()?
                .range((parent.0, after.saturating_add(1))..=(parent.0, u64::MAX))?
                .take(limit)
                .map(|row| row.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()?;
            ids.into_iter().filter_map(|id| r.mirror_get(NodeId(id)).transpose()).collect()
        })
    }

    /// Every place where the peer's node `remote` appears in our mirror.
    pub fn mirror_by_remote(&self, peer: PlayerId, remote: u64) -> Result<Vec<MirrorEntry>> {
        self.read_fs(|r| r.mirror_where(peer, remote))
    }

    /// Every mirror entry of `peer`, for the sync that follows a connection.
    pub fn mirror_of(&self, peer: PlayerId) -> Result<Vec<MirrorEntry>> {
        self.scan(&["mirror"], |r| {
            let mut out = Vec::new();
            for row in r.mirror()?.iter()? {
                let e: MirrorEntry = decode("mirror entry", row?.1.value())?;
                if e.peer == peer {
                    out.push(e);
                }
            }
            Ok(out)
        })
    }

    /// Every mirror entry below `MirrorEntry::TOP` with its path of labels (the peer's
    /// folder's first, joined with `/`), depth first with each folder's entries in label
    /// order: one pass over the mirror, holding no lock while it runs. Entries whose grant has
    /// ended but which the sweep has not removed yet are included (see `mirror_grant`).
    pub fn mirror_walk(&self) -> Result<Vec<(Vec<u8>, MirrorEntry)>> {
        let mut kids: HashMap<NodeId, Vec<MirrorEntry>> = HashMap::new();
        self.scan(&["mirror"], |r| {
            for row in r.mirror()?.iter()? {
                let e: MirrorEntry = decode("mirror entry", row?.1.value())?;
                kids.entry(e.parent).or_default().push(e);
            }
            Ok(())
        })?;
        for list in kids.values_mut() {
            list.sort_by(|a, b| a.label.cmp(&b.label));
        }
        // Each entry has one parent, so a walk down from the top meets none twice.
        let mut out = Vec::new();
        let mut stack: Vec<(NodeId, Vec<u8>)> = vec![(MirrorEntry::TOP, Vec::new())];
        while let Some((dir, path)) = stack.pop() {
            let Some(list) = kids.remove(&dir) else { continue };
            let mut folders = Vec::new();
            for e in list {
                let mut p = path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(&e.label);
                if e.kind == SharedKind::Dir {
                    folders.push((e.id, p.clone()));
                }
                out.push((p, e));
            }
            // Reversed onto the stack, so that folders are walked in label order.
            stack.extend(folders.into_iter().rev());
        }
        Ok(out)
    }

    /// The path of mirror entry `id` from `peers/`: its peer folder's label, then each
    /// folder's down to its own, joined with `/` (`bob/notes/a.md`); `None` if there is no
    /// such entry.
    pub fn mirror_path(&self, id: NodeId) -> Result<Option<Vec<u8>>> {
        self.read_fs(|r| {
            let mut labels = Vec::new();
            let mut at = id;
            // Entries form a tree under `TOP`; the bound guards against a damaged chain.
            for _ in 0..4096 {
                if at == MirrorEntry::TOP {
                    break;
                }
                let Some(e) = r.mirror_get(at)? else { return Ok(None) };
                labels.push(e.label);
                at = e.parent;
            }
            labels.reverse();
            Ok(Some(labels.join(&b'/')))
        })
    }

    /// The folder of `peer`'s shares, if it has one.
    pub fn mirror_peer_folder(&self, peer: PlayerId) -> Result<Option<MirrorEntry>> {
        Ok(self.mirror_by_remote(peer, 0)?.into_iter().next())
    }

    /// The grant an entry is shared under (its root's), or `None` for a peer's folder.
    pub fn mirror_grant(&self, e: &MirrorEntry) -> Result<Option<AccessMode>> {
        if e.root == e.id {
            return Ok(e.grant);
        }
        Ok(self.mirror_entry(e.root)?.and_then(|r| r.grant))
    }

    /// Makes sure `peer` has a folder, labelled `name` (our name for the peer), and returns it.
    /// A folder kept under an older name is renamed when `name` is free.
    pub fn mirror_ensure_peer(&self, peer: PlayerId, name: &str) -> Result<MirrorEntry> {
        let label = clean_label(name.as_bytes());
        let now = Timestamp::now();
        self.write_fs(Commit::CrashConsistent, |w| {
            if let Some(mut e) = w.mirror_where(peer, 0)?.into_iter().next() {
                if e.label != label && w.mirror_names()?.get((0, label.as_slice()))?.is_none() {
                    w.mirror_names()?.remove((0, e.label.as_slice()))?;
                    e.label.clone_from(&label);
                    w.mirror_names()?.insert((0, label.as_slice()), e.id.0)?;
                    w.mirror_put(&e)?;
                }
                return Ok(e);
            }
            let id = w.alloc_node()?;
            let e = MirrorEntry {
                id,
                peer,
                remote: 0,
                parent: MirrorEntry::TOP,
                label: w.free_label(MirrorEntry::TOP, &label)?,
                their_label: Vec::new(),
                kind: SharedKind::Dir,
                size: 0,
                mtime: now,
                root: id,
                grant: None,
                content: None,
                have: None,
            };
            w.mirror_insert(&e)?;
            Ok(e)
        })
    }

    /// Brings mirror folder `folder` in line with the peer's listing of it: entries the
    /// listing lacks go (with everything under them), new ones come, changed ones change.
    /// For the peer's own folder, `items` are its shared roots, each with its grant (a
    /// transfer is left out: it becomes a file of our own); for any other folder, the
    /// folder's entries. Labels are checked and made unique, in the
    /// listing's order; an entry keeps its label while the peer's does not change.
    pub fn mirror_apply(
        &self,
        folder: NodeId,
        items: &[SharedItem],
        now: Timestamp,
    ) -> Result<MirrorChanges> {
        self.write_fs(Commit::CrashConsistent, |w| {
            let mut out = MirrorChanges::default();
            let Some(dir) = w.mirror_get(folder)? else { return Ok(out) };
            if dir.kind != SharedKind::Dir {
                return Err(Error::NotADirectory(folder));
            }
            let at_top = dir.remote == 0;
            let mut old: HashMap<(u64, SharedKind), MirrorEntry> = HashMap::new();
            for kid in w.mirror_kids_of(folder)? {
                old.insert((kid.remote, kid.kind), kid);
            }
            let mut seen: HashSet<(u64, SharedKind)> = HashSet::new();
            // Entries that go first, so their labels are free for what comes.
            let wanted: HashSet<(u64, SharedKind)> = items
                .iter()
                .filter(|i| i.remote != 0 && !(at_top && i.grant == Some(AccessMode::Transfer)))
                .map(|i| (i.remote, i.kind))
                .collect();
            let gone: Vec<NodeId> =
                old.iter().filter(|(k, _)| !wanted.contains(k)).map(|(_, e)| e.id).collect();
            for id in gone {
                w.mirror_delete(id, now, &mut out)?;
            }
            for item in items {
                let key = (item.remote, item.kind);
                if item.remote == 0 || !seen.insert(key) {
                    continue; // a node listed twice keeps its first place
                }
                let grant = if at_top { item.grant } else { None };
                if at_top && matches!(grant, None | Some(AccessMode::Transfer)) {
                    // A root without a grant is not a root; a transfer becomes our own file.
                    continue;
                }
                let content = match item.kind {
                    SharedKind::File => item.content,
                    SharedKind::Dir => None,
                };
                let label = clean_label(&item.label);
                match old.remove(&key) {
                    Some(mut e) => {
                        let mut changed = false;
                        if e.label != clean_label_of(&e.label, &label) {
                            w.mirror_names()?.remove((folder.0, e.label.as_slice()))?;
                            let fresh = w.free_label(folder, &label)?;
                            out.touched.push((
                                e.id,
                                folder,
                                std::mem::replace(&mut e.label, fresh),
                            ));
                            w.mirror_names()?.insert((folder.0, e.label.as_slice()), e.id.0)?;
                            changed = true;
                        }
                        if e.their_label != item.label {
                            e.their_label.clone_from(&item.label);
                            changed = true;
                        }
                        if e.size != item.size
                            || e.mtime != item.mtime
                            || e.content != content
                            || e.grant != grant
                        {
                            e.size = item.size;
                            e.mtime = item.mtime;
                            e.content = content;
                            e.grant = grant;
                            changed = true;
                            if e.kind == SharedKind::Dir {
                                out.list.push((e.id, e.remote));
                            }
                        }
                        if let Some(c) = e.content
                            && e.have != Some(c)
                        {
                            if w.holds_leaf(&c)? {
                                hold(w, &mut e, c, now)?;
                            } else {
                                out.fetch.push((e.id, c));
                            }
                        }
                        if changed {
                            out.touched.push((e.id, folder, e.label.clone()));
                            w.mirror_put(&e)?;
                        }
                    }
                    None => {
                        let id = w.alloc_node()?;
                        let mut e = MirrorEntry {
                            id,
                            peer: dir.peer,
                            remote: item.remote,
                            parent: folder,
                            label: w.free_label(folder, &label)?,
                            their_label: item.label.clone(),
                            kind: item.kind,
                            size: item.size,
                            mtime: item.mtime,
                            root: if at_top { id } else { dir.root },
                            grant,
                            content,
                            have: None,
                        };
                        if let Some(c) = content {
                            if w.holds_leaf(&c)? {
                                hold(w, &mut e, c, now)?;
                            } else {
                                out.fetch.push((id, c));
                            }
                        }
                        if e.kind == SharedKind::Dir {
                            out.list.push((id, e.remote));
                        }
                        w.mirror_insert(&e)?;
                        out.touched.push((id, folder, e.label.clone()));
                    }
                }
            }
            Ok(out)
        })
    }

    /// Keeps `staged` as the content of file entry `id`, if the entry still wants it (the
    /// peer may have changed the file meanwhile). Returns whether it was kept.
    pub fn mirror_set_content(
        &self,
        id: NodeId,
        staged: &StagedLeaf,
        now: Timestamp,
    ) -> Result<bool> {
        self.write_fs(Commit::CrashConsistent, |w| {
            let Some(mut e) = w.mirror_get(id)? else { return Ok(false) };
            if e.content != Some(staged.hash) || e.have == Some(staged.hash) {
                return Ok(false);
            }
            w.adopt_leaf(staged, now)?;
            if let Some(old) = e.have.take() {
                w.drop_held(&old, now)?;
            }
            e.have = Some(staged.hash);
            w.mirror_put(&e)?;
            Ok(true)
        })
        .inspect(|kept| {
            if *kept {
                self.payloads.committed(staged);
            }
        })
    }

    /// Takes content this vault already holds for file entry `id`. Returns whether it was
    /// taken (false if the leaf is not here, or the entry wants other content).
    pub fn mirror_hold_local(&self, id: NodeId, leaf: Hash, now: Timestamp) -> Result<bool> {
        self.write_fs(Commit::CrashConsistent, |w| {
            let Some(mut e) = w.mirror_get(id)? else { return Ok(false) };
            if e.content != Some(leaf) || e.have == Some(leaf) || !w.holds_leaf(&leaf)? {
                return Ok(false);
            }
            hold(w, &mut e, leaf, now)?;
            w.mirror_put(&e)?;
            Ok(true)
        })
    }

    /// Deletes mirror entry `id` and everything under it.
    pub fn mirror_remove(&self, id: NodeId, now: Timestamp) -> Result<MirrorChanges> {
        self.write_fs(Commit::CrashConsistent, |w| {
            let mut out = MirrorChanges::default();
            w.mirror_delete(id, now, &mut out)?;
            Ok(out)
        })
    }

    /// Forgets what `peer` shares, when the peer is removed: every root except permanent ones
    /// (which stay, in the peer's folder, as long as we keep them); the folder too once empty.
    pub fn mirror_forget_peer(&self, peer: PlayerId, now: Timestamp) -> Result<MirrorChanges> {
        let Some(folder) = self.mirror_peer_folder(peer)? else {
            return Ok(MirrorChanges::default());
        };
        self.write_fs(Commit::Durable, |w| {
            let mut out = MirrorChanges::default();
            let mut kept = 0;
            for root in w.mirror_kids_of(folder.id)? {
                if root.grant == Some(AccessMode::Permanent) {
                    kept += 1;
                } else {
                    w.mirror_delete(root.id, now, &mut out)?;
                }
            }
            if kept == 0 {
                w.mirror_delete(folder.id, now, &mut out)?;
            }
            Ok(out)
        })
    }

    /// Deletes every shared root whose timed grant ended by `now`, on our own clock.
    pub fn mirror_expire(&self, now: Timestamp) -> Result<MirrorChanges> {
        let roots: Vec<NodeId> = self.scan(&["mirror"], |r| {
            let mut out = Vec::new();
            for row in r.mirror()?.iter()? {
                let e: MirrorEntry = decode("mirror entry", row?.1.value())?;
                if e.root == e.id && e.grant.is_some_and(|g| !g.is_active(now)) {
                    out.push(e.id);
                }
            }
            Ok(out)
        })?;
        if roots.is_empty() {
            return Ok(MirrorChanges::default());
        }
        self.write_fs(Commit::CrashConsistent, |w| {
            let mut out = MirrorChanges::default();
            for id in roots {
                w.mirror_delete(id, now, &mut out)?;
            }
            Ok(out)
        })
    }

    /// Every file entry whose content has not arrived: (entry, peer, content).
    pub fn mirror_missing(&self) -> Result<Vec<(NodeId, PlayerId, Hash)>> {
        self.scan(&["mirror"], |r| {
            let mut out = Vec::new();
            for row in r.mirror()?.iter()? {
                let e: MirrorEntry = decode("mirror entry", row?.1.value())?;
                if let Some(c) = e.content
                    && e.have != Some(c)
                {
                    out.push((e.id, e.peer, c));
                }
            }
            Ok(out)
        })
    }
}

/// `label`, unless the entry's current label is the same label made unique (`spec (2).md`
/// for `spec.md`): a label the dedup gave stays while the peer's label does not change.
fn clean_label_of(current: &[u8], wanted: &[u8]) -> Vec<u8> {
    if current == wanted {
        return wanted.to_vec();
    }
    for n in 2..1000 {
        if numbered(wanted, n) == current {
            return current.to_vec();
        }
    }
    wanted.to_vec()
}

/// Makes `e` hold `leaf`, which this vault already has, instead of what it held. The empty
/// leaf counts as had even if it was never stored: it is recorded here, so that it reads
/// (and fsck finds it) as a stored one does.
fn hold(w: &mut W<'_>, e: &mut MirrorEntry, leaf: Hash, now: Timestamp) -> Result<()> {
    if leaf == EMPTY_LEAF {
        w.pin_empty_leaf(now)?;
    }
    w.leaf_incref(&leaf)?;
    if let Some(old) = e.have.replace(leaf) {
        w.drop_held(&old, now)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_peers_are_made_safe() {
        assert_eq!(clean_label(b"a/b"), b"a_b");
        assert_eq!(clean_label(b"a\0b"), b"a_b");
        assert_eq!(clean_label(b"."), b"_.");
        assert_eq!(clean_label(b".."), b"_..");
        assert_eq!(clean_label(b""), b"_");
        assert_eq!(clean_label(&[b'x'; 300]).len(), NAME_MAX);
        let long = "é".repeat(200);
        let cut = clean_label(long.as_bytes());
        assert!(cut.len() <= NAME_MAX && std::str::from_utf8(&cut).is_ok());
    }

    #[test]
    fn duplicates_are_numbered_before_the_extension() {
        assert_eq!(numbered(b"spec.md", 2), b"spec (2).md");
        assert_eq!(numbered(b"notes", 3), b"notes (3)");
        assert_eq!(numbered(b".hidden", 2), b".hidden (2)");
        assert!(numbered(&[b'x'; 255], 2).len() <= NAME_MAX);
        assert_eq!(clean_label_of(b"spec (2).md", b"spec.md"), b"spec (2).md");
        assert_eq!(clean_label_of(b"spec (2).md", b"other.md"), b"other.md");
    }

    /// A vault that never stored an empty file holds a peer's empty file all the same: it
    /// reads as empty, fsck finds it, and GC keeps it after the entry goes.
    #[test]
    fn a_peers_empty_file_is_held_and_reads_empty() {
        use crate::vault::gc::FsckOptions;
        use crate::vault::handle::Options;

        let dir = tempfile::tempdir().expect("tempdir");
        let v = Vault::open(dir.path(), "alice", &Options::default()).expect("open");
        let now = Timestamp::now();
        let bob = v.mirror_ensure_peer(PlayerId([7; 32]), "bob").expect("peer");
        let empty = SharedItem {
            remote: 1,
            label: b"empty".to_vec(),
            kind: SharedKind::File,
            size: 0,
            mtime: now,
            content: Some(EMPTY_LEAF),
            grant: Some(AccessMode::Revocable),
        };
        let changes = v.mirror_apply(bob.id, &[empty], now).expect("apply");
        assert!(changes.fetch.is_empty(), "nothing to fetch: {changes:?}");
        let e = v.mirror_lookup(bob.id, b"empty").expect("lookup").expect("there");
        assert_eq!(e.have, Some(EMPTY_LEAF));
        assert_eq!(v.leaf_size(&EMPTY_LEAF).expect("size"), 0);
        assert_eq!(v.read_all(&EMPTY_LEAF).expect("read"), b"");
        let report = v.fsck(FsckOptions::default(), &mut |_| {}).expect("fsck");
        assert!(report.is_clean(), "{:?}", report.problems);

        v.mirror_remove(e.id, now).expect("remove");
        v.gc(None, &mut |_| {}).expect("gc");
        assert_eq!(v.leaf_size(&EMPTY_LEAF).expect("size after gc"), 0);
        let report = v.fsck(FsckOptions::default(), &mut |_| {}).expect("fsck");
        assert!(report.is_clean(), "{:?}", report.problems);
    }
}
