//! The namespace: directories and their entries, nodes and their links, attributes and
//! xattrs. Each public operation is one write-back operation (all or nothing).
//!
//! Invariants:
//! - Every entry `(parent, name) -> (child, position)` in `entries_v1` has its mirror
//!   `(parent, position) -> (child, kind, name)` in `order_v2`; positions in a directory only
//!   grow, so they serve as readdir cookies. The mirror holds all a listing shows, so a
//!   listing reads one range of it and nothing else.
//! - A node's `nlink` counts its entries (a directory: 2 plus its subdirectories); a node
//!   at zero links is in `orphans_v1` until it is reaped, which happens once nothing (no
//!   entry, no open handle) holds it.
//! - A directory's tree record names its node, and its node names the tree.

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result, lossy};
use crate::payload::writer::StagedLeaf;
use crate::store::meta::W;
use crate::store::rows::new_tree_id;
use crate::store::schema::{TreeRecord, bytes_u64, decode, kind_of_code, u64_bytes};
use crate::types::{
    DirEntry, NewNode, Node, NodeId, NodeKind, RenameMode, SetAttr, Timestamp, TreeType, XattrMode,
};
use crate::vault::handle::{Commit, Vault};

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

impl W<'_> {
    /// Adds the entry `name` naming `child` (of kind `kind`) to `parent`, at `position` or,
    /// without one, at the folder's next position.
    pub(crate) fn add_entry(
        &mut self,
        parent: &Node,
        name: &[u8],
        child: NodeId,
        kind: NodeKind,
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
        self.put_slot(parent.id, position, child, kind, name)?;
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

    /// The live folder `parent`, where `name` is free for a new entry.
    pub(crate) fn free_slot(&mut self, parent: NodeId, name: &[u8]) -> Result<(Node, TreeRecord)> {
        let (dir, tree) = self.dir(parent)?;
        if dir.nlink == 0 {
            return Err(Error::NotFound { parent, name: lossy(name) });
        }
        if self.entry(parent, name)?.is_some() {
            return Err(Error::Exists { parent, name: lossy(name) });
        }
        Ok((dir, tree))
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
        self.drop_lineage(id)?;
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

    pub(crate) fn touch_dir(&mut self, dir: &mut Node, now: Timestamp) -> Result<()> {
        dir.mtime = now;
        dir.ctime = now;
        self.put_node(dir)
    }
}

/// A node where a walk of the tree finds it (`Vault::walk`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub node: NodeId,
    /// Labels from the root (not included), joined with `/`.
    pub path: Vec<u8>,
    pub kind: NodeKind,
    pub size: u64,
}

/// Each directory's entries, `(name, child)` in name order.
pub(crate) type Children = HashMap<u64, Vec<(Vec<u8>, u64)>>;

/// Every entry of the tree, read in one pass over the entries table.
pub(crate) fn children(r: &mut W) -> Result<Children> {
    let mut children: Children = HashMap::new();
    for row in r.entries()?.iter()? {
        let (k, v) = row?;
        let (parent, name) = k.value();
        children.entry(parent).or_default().push((name.to_vec(), v.value().0));
    }
    Ok(children)
}

/// Visits every entry below the root, depth first, with its path of labels from the root,
/// until `visit` returns false. The order is fixed (by the entries' names), so a node with
/// several names (hard links) is always met first under the same one.
pub(crate) fn walk_entries(children: &Children, mut visit: impl FnMut(NodeId, &[u8]) -> bool) {
    let mut stack: Vec<(u64, Vec<u8>)> = vec![(NodeId::ROOT.0, Vec::new())];
    while let Some((dir, path)) = stack.pop() {
        for (name, child) in children.get(&dir).map(Vec::as_slice).unwrap_or_default() {
            let mut p = path.clone();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(name);
            if !visit(NodeId(*child), &p) {
                return;
            }
            if children.contains_key(child) {
                stack.push((*child, p));
            }
        }
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

impl Vault {
    pub fn node(&self, id: NodeId) -> Result<Node> {
        self.read_fs(|r| r.node(id))
    }

    /// Several nodes in one read (a listing's attributes): `None` for an id with no node.
    pub fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Option<Node>>> {
        self.read_fs(|r| {
            ids.iter()
                .map(|id| match r.node(*id) {
                    Ok(n) => Ok(Some(n)),
                    Err(Error::NoSuchNode(_)) => Ok(None),
                    Err(e) => Err(e),
                })
                .collect()
        })
    }

    /// Every node below the root (or only those in `only`), each once, under the first path
    /// a depth-first walk meets (as `paths_of` names it), in walk order. One pass over the
    /// entries, then one over the nodes (or, for `only`, a read of each node found), holding
    /// no lock while they run. The root itself is not included.
    pub fn walk(&self, only: Option<&HashSet<NodeId>>) -> Result<Vec<Placed>> {
        self.scan(&["entries", "nodes"], |r| {
            let children = children(r)?;
            let mut found: Vec<(NodeId, Vec<u8>)> = Vec::new();
            let mut seen = HashSet::new();
            walk_entries(&children, |node, path| {
                if only.is_none_or(|o| o.contains(&node)) && seen.insert(node) {
                    found.push((node, path.to_vec()));
                }
                only.is_none_or(|o| seen.len() < o.len())
            });
            let mut attrs: HashMap<u64, (NodeKind, u64)> = HashMap::new();
            if only.is_some() {
                for (id, _) in &found {
                    match r.node(*id) {
                        Ok(n) => attrs.insert(id.0, (n.kind, n.size)),
                        Err(Error::NoSuchNode(_)) => continue,
                        Err(e) => return Err(e),
                    };
                }
            } else {
                for row in r.nodes()?.iter()? {
                    let (k, v) = row?;
                    let n: Node = decode("node", v.value())?;
                    attrs.insert(k.value(), (n.kind, n.size));
                }
            }
            Ok(found
                .into_iter()
                .filter_map(|(node, path)| {
                    let &(kind, size) = attrs.get(&node.0)?;
                    Some(Placed { node, path, kind, size })
                })
                .collect())
        })
    }

    /// Puts a file named `name` holding `content` into the folder `folder` of the vault's
    /// root, owned as the root is: the folder is made if missing, and a file already there
    /// gets the new content. For what the daemon delivers on its own, such as a connection
    /// request into `inbox/`. Returns the folder's id and the file. Durable on return.
    pub fn deliver(
        &self,
        folder: &[u8],
        name: &[u8],
        content: &[u8],
        now: Timestamp,
    ) -> Result<(NodeId, Node)> {
        let (root, dir) = self.root_folder(folder, now, Commit::Durable)?;
        let staged = self.stage(content)?;
        let file = match self.lookup(dir.id, name) {
            Ok(existing) => self.set_content(existing.id, &staged, now, Commit::Durable)?,
            Err(Error::NotFound { .. }) => {
                let spec = NewNode::file(0o644).owner(root.uid, root.gid);
                self.create(dir.id, name, &spec, Some(staged), now, Commit::Durable)?
            }
            Err(e) => return Err(e),
        };
        Ok((dir.id, file))
    }

    /// The folder `folder` of the vault's root, made (owned as the root is) if missing; with
    /// the root. For what the daemon puts into the vault on its own (`inbox/`).
    pub(crate) fn root_folder(
        &self,
        folder: &[u8],
        now: Timestamp,
        commit: Commit,
    ) -> Result<(Node, Node)> {
        let root = self.node(NodeId::ROOT)?;
        let dir = match self.lookup(NodeId::ROOT, folder) {
            Ok(d) => d,
            Err(Error::NotFound { .. }) => {
                let spec = NewNode::dir(0o755).owner(root.uid, root.gid);
                match self.create(NodeId::ROOT, folder, &spec, None, now, commit) {
                    Ok(d) => d,
                    // Made meanwhile through the mount.
                    Err(Error::Exists { .. }) => self.lookup(NodeId::ROOT, folder)?,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        Ok((root, dir))
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
    /// (0 for the start). Positions are stable, so they serve as readdir cookies: a listing
    /// that goes on after the last position it was given sees every entry that stayed, once,
    /// however the folder changed meanwhile.
    ///
    /// One range read of the folder's listing order, which holds each entry's node and kind:
    /// no other row is read per entry, so a page of a large folder costs little (the kernel
    /// holds the folder's lock across each page, and a change to the folder waits for it).
    pub fn list(&self, dir: NodeId, after: u64, limit: usize) -> Result<Vec<DirEntry>> {
        let mut out = Vec::with_capacity(limit.min(1024));
        self.list_each(dir, after, limit, |position, node, kind, name| {
            out.push(DirEntry { name: name.to_vec(), node, kind, position });
            true
        })?;
        Ok(out)
    }

    /// As `list`, handing each entry (its position, node, kind and name) to `f` as it is read
    /// instead of collecting them, until `f` returns false: a listing's reply is filled with
    /// no allocation per entry. `f` runs while the store's pending rows are read-locked, so
    /// it must not call into the store. Returns how many entries were read, the one `f`
    /// refused included.
    pub fn list_each(
        &self,
        dir: NodeId,
        after: u64,
        limit: usize,
        mut f: impl FnMut(u64, NodeId, NodeKind, &[u8]) -> bool,
    ) -> Result<usize> {
        self.read_fs(|r| {
            if r.node(dir)?.kind != NodeKind::Dir {
                return Err(Error::NotADirectory(dir));
            }
            let start = after.saturating_add(1);
            let mut read = 0;
            for row in r.order()?.range((dir.0, start)..=(dir.0, u64::MAX))?.take(limit) {
                let (k, v) = row?;
                let (child, kind, name) = v.value();
                read += 1;
                if !f(k.value().1, NodeId(child), kind_of_code(kind)?, name) {
                    break;
                }
            }
            Ok(read)
        })
    }

    /// The tree type folder `dir` gets from its name and its parent's, as at its creation:
    /// `Vault` for the root.
    pub fn implied_tree_type(&self, dir: NodeId) -> Result<TreeType> {
        if dir == NodeId::ROOT {
            return Ok(TreeType::Vault);
        }
        self.read_fs(|r| {
            let node = r.node(dir)?;
            let name = r.name_in_parent(&node)?;
            let parent_name = match node.parent {
                Some(p) => {
                    let parent = r.node(p)?;
                    r.name_in_parent(&parent)?
                }
                None => Vec::new(),
            };
            Ok(TreeType::infer(&parent_name, &name))
        })
    }

    /// The parent of a directory (the root is its own parent).
    pub fn parent_of(&self, dir: NodeId) -> Result<NodeId> {
        let node = self.node(dir)?;
        Ok(node.parent.unwrap_or(NodeId::ROOT))
    }

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
        let (history, player) = (self.history_on(), self.player());
        self.write_fs(commit, |w| {
            let (mut dir, dir_tree) = w.free_slot(parent, name)?;
            let id = w.alloc_node()?;
            let mut node = Node::new(id, spec, now);
            match spec.kind {
                NodeKind::File => {
                    if let Some(staged) = &content {
                        let added = if history { w.new_bytes(staged)? } else { 0 };
                        w.adopt_leaf(staged, now)?;
                        node.content = Some(staged.hash);
                        node.size = staged.size;
                        if history && staged.size > 0 {
                            w.record_version(id, staged.hash, staged.size, added, player, now)?;
                        }
                    }
                }
                NodeKind::Dir => {
                    let tree_id = new_tree_id()?;
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
            w.add_entry(&dir, name, id, spec.kind, None)?;
            w.touch_dir(&mut dir, now)?;
            Ok(node)
        })
        .inspect(|n| {
            if let Some(c) = &content {
                self.payloads.committed(c);
            }
            self.changed(&[parent], &[n.id]);
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
            let (mut dir, _) = w.free_slot(parent, name)?;
            target.nlink += 1;
            target.ctime = now;
            w.put_node(&target)?;
            w.add_entry(&dir, name, node, target.kind, None)?;
            w.touch_dir(&mut dir, now)?;
            Ok(target)
        })
        .inspect(|n| self.changed(&[parent], &[n.id]))
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
            if node.nlink == 0 {
                w.note_deleted(&node, parent, name, now)?;
            }
            w.touch_dir(&mut pnode, now)?;
            Ok(node)
        })
        .inspect(|n| self.changed(&[parent], &[n.id]))
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
        // The nodes whose name changed, for `take_changes`.
        let mut moved = Vec::with_capacity(2);
        self.write_fs(commit, |w| {
            w.dir(src_parent)?;
            let (dst_dir, _) = w.dir(dst_parent)?;
            let Some((src, src_pos)) = w.entry(src_parent, src_name)? else {
                return Err(Error::NotFound { parent: src_parent, name: lossy(src_name) });
            };
            moved.push(src);
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
                moved.push(dst);
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
                w.put_slot(src_parent, src_pos, dst, dst_node.kind, src_name)?;
                w.put_slot(dst_parent, dst_pos, src, src_node.kind, dst_name)?;
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
                if dst_node.nlink == 0 {
                    if src_node.kind == NodeKind::File && dst_node.kind == NodeKind::File {
                        w.inherit_history(src, dst)?;
                    } else {
                        w.note_deleted(&dst_node, dst_parent, dst_name, now)?;
                    }
                }
                replaced = Some(dst_node);
                // The new entry takes over the replaced one's place in the listing.
                position = Some(dst_pos);
            } else if same_parent {
                position = Some(src_pos);
            }
            w.remove_entry(src_parent, src_name)?;
            let dst_dir = w.node(dst_parent)?;
            w.add_entry(&dst_dir, dst_name, src, src_node.kind, position)?;
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
        .inspect(|_| self.changed(&[src_parent, dst_parent], &moved))
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
        .inspect(|n| self.changed(&[], &[n.id]))
    }

    /// Points a file node at new content. `mtime` and ctime become `now`.
    pub fn set_content(
        &self,
        id: NodeId,
        staged: &StagedLeaf,
        now: Timestamp,
        commit: Commit,
    ) -> Result<Node> {
        self.set_content_with(id, staged, now, commit, SetContent::default()).map(|(n, _)| n)
    }

    /// `set_content`, as `how` says (`SetContent`). Returns the node and the bytes the content
    /// adds to the store (what a version of it adds to history).
    pub fn set_content_with(
        &self,
        id: NodeId,
        staged: &StagedLeaf,
        now: Timestamp,
        commit: Commit,
        how: SetContent,
    ) -> Result<(Node, u64)> {
        let (history, player) = (self.history_on(), self.player());
        self.write_fs(commit, |w| {
            if let Some(seq) = how.log_floor {
                w.meta()?.insert(log_floor_key(id).as_str(), u64_bytes(seq).as_slice())?;
            }
            let mut node = w.node(id)?;
            match node.kind {
                NodeKind::File => {}
                NodeKind::Dir => return Err(Error::IsADirectory(id)),
                _ => return Err(Error::NotAFile(id)),
            }
            let added = if history { w.new_bytes(staged)? } else { 0 };
            w.adopt_leaf(staged, now)?;
            if let Some(old) = node.content {
                w.leaf_decref(&old, now)?;
            }
            let changed = node.content != Some(staged.hash) || how.owed.is_some();
            if history && how.version && staged.size > 0 && node.nlink > 0 && changed {
                let added = added + how.owed.unwrap_or(0);
                w.record_version(id, staged.hash, staged.size, added, player, now)?;
            }
            node.content = Some(staged.hash);
            node.size = staged.size;
            node.mtime = now;
            node.ctime = now;
            w.put_node(&node)?;
            Ok((node, added))
        })
        .inspect(|(n, _)| {
            self.payloads.committed(staged);
            self.changed(&[], &[n.id]);
        })
    }

    /// Records the current content of file `id` as a version: the one a commit without a
    /// version (`SetContent::version` false) left owed, with the bytes that commit added.
    /// Nothing when history is off, or the file is empty or has no name.
    pub fn record_owed_version(
        &self,
        id: NodeId,
        added: u64,
        now: Timestamp,
        commit: Commit,
    ) -> Result<()> {
        if !self.history_on() {
            return Ok(());
        }
        let player = self.player();
        self.write_fs(commit, |w| {
            let node = w.node(id)?;
            if let Some(leaf) = node.content
                && node.kind == NodeKind::File
                && node.size > 0
                && node.nlink > 0
            {
                w.record_version(id, leaf, node.size, added, player, now)?;
            }
            Ok(())
        })
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
    pub(crate) fn reap_orphans(&self) -> Result<()> {
        let ids: Vec<u64> = self.read_fs(|r| {
            Ok(r.orphans()?.iter()?.map(|r| r.map(|(k, _)| k.value())).collect::<Result<_, _>>()?)
        })?;
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
}

/// How a content commit stands to the mount's intent log and to history.
#[derive(Clone, Copy, Debug)]
pub struct SetContent {
    /// The last intent-log record whose writes the content holds: recorded as the node's
    /// floor in the same operation (`Vault::log_floor`), so that a replay after a crash skips
    /// exactly those records.
    pub log_floor: Option<u64>,
    /// Whether the content is a version in history. A commit that a reader forced (the
    /// content's id asked for, a status read) is none: a version is what a save committed.
    pub version: bool,
    /// The bytes added by an earlier commit that was no version, owed to this one: it is a
    /// version even when its content is the same.
    pub owed: Option<u64>,
}

impl Default for SetContent {
    fn default() -> Self {
        SetContent { log_floor: None, version: true, owed: None }
    }
}

/// The `meta` key of a node's intent-log floor.
fn log_floor_key(id: NodeId) -> String {
    format!("intent_floor/{}", id.0)
}

/// The `meta` key of the first intent-log sequence number not yet used.
const LOG_NEXT: &str = "intent_next";

impl Vault {
    /// The last intent-log record (by sequence number) whose writes node `id`'s committed
    /// content holds; 0 if none.
    pub fn log_floor(&self, id: NodeId) -> Result<u64> {
        self.read_fs(|r| match r.meta()?.get(log_floor_key(id).as_str())? {
            Some(v) => bytes_u64("intent floor", v.value()),
            None => Ok(0),
        })
    }

    /// The first intent-log sequence number not yet used, as last recorded (0 if never).
    pub fn log_next(&self) -> Result<u64> {
        self.read_fs(|r| match r.meta()?.get(LOG_NEXT)? {
            Some(v) => bytes_u64("intent next", v.value()),
            None => Ok(0),
        })
    }

    /// Records `next` as the first intent-log sequence number not yet used, before a log
    /// whose records are all below it is trimmed.
    pub fn set_log_next(&self, next: u64, commit: Commit) -> Result<()> {
        self.write_fs(commit, |w| {
            w.meta()?.insert(LOG_NEXT, u64_bytes(next).as_slice())?;
            Ok(())
        })
    }
}
