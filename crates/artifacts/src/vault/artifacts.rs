//! Artifact-level operations on top of nodes: `place_leaf`, compose, `remove_ref`, move,
//! and trees with their types, stewards and audiences.
//!
//! Stewardship and audience belong to trees; a leaf is plain content shared by every node
//! that holds it, so a file's steward is the steward of the tree that contains it.

use std::io::{self, Read};

use crate::error::{Error, Result, lossy};
use crate::payload::writer::StagedLeaf;
use crate::store::schema::{LeafRecord, TreeRecord, decode};
use crate::types::{
    ArtifactId, ArtifactRef, Hash, LeafArtifact, LeafType, NewNode, Node, NodeId, NodeKind,
    PlayerId, RenameMode, Timestamp, TreeArtifact, TreeType,
};
use crate::vault::handle::{Commit, Vault};

impl Vault {
    /// Stores a payload and records it as a leaf. Until a node holds it (`compose`), the leaf
    /// is unreferenced and a GC may reclaim it.
    pub fn place_leaf(
        &self,
        payload: &[u8],
        leaf_type: LeafType,
        now: Timestamp,
    ) -> Result<LeafArtifact> {
        let staged = self.stage(payload)?;
        self.place_staged(&staged, leaf_type, now)
    }

    /// Streams a payload of any size from `reader` and records it as a leaf.
    pub fn place_leaf_from(
        &self,
        reader: &mut dyn Read,
        leaf_type: LeafType,
        now: Timestamp,
    ) -> Result<LeafArtifact> {
        let mut w = self.payload_writer();
        io::copy(reader, &mut w).map_err(|e| Error::io(self.tmp_dir(), e))?;
        let staged = w.finish().map_err(|e| Error::io(self.tmp_dir(), e))?;
        self.place_staged(&staged, leaf_type, now)
    }

    /// Records a staged payload as a leaf.
    pub fn place_staged(
        &self,
        staged: &StagedLeaf,
        leaf_type: LeafType,
        now: Timestamp,
    ) -> Result<LeafArtifact> {
        self.write_fs(Commit::CrashConsistent, |w| w.register_leaf(staged, now))?;
        self.payloads.committed(staged);
        let created_at = self.leaf_record(&staged.hash)?.created_at;
        Ok(LeafArtifact {
            id: ArtifactId::Blob(staged.hash),
            size: staged.size,
            leaf_type,
            created_at,
        })
    }

    pub(crate) fn leaf_record(&self, hash: &Hash) -> Result<LeafRecord> {
        self.read_fs(|r| match r.leaves()?.get(hash)? {
            Some(v) => decode("leaf", v.value()),
            None => Err(Error::NoSuchArtifact(ArtifactId::Blob(*hash))),
        })
    }

    /// A stored leaf. Its type is `File`: a leaf's type comes from the label it is given.
    pub fn leaf(&self, hash: &Hash) -> Result<LeafArtifact> {
        let rec = self.leaf_record(hash)?;
        Ok(LeafArtifact {
            id: ArtifactId::Blob(*hash),
            size: rec.size,
            leaf_type: LeafType::File,
            created_at: rec.created_at,
        })
    }

    /// Adds a reference to an existing leaf to `tree`, labelled `label`, as a new file node.
    /// With `position`, the reference takes that slot (which must be free); otherwise it goes
    /// last. Trees cannot be composed a second time: each tree has exactly one place.
    #[allow(clippy::too_many_arguments)]
    pub fn compose(
        &self,
        tree: ArtifactId,
        child: ArtifactId,
        label: &[u8],
        position: Option<u64>,
        perm: u32,
        now: Timestamp,
        commit: Commit,
    ) -> Result<ArtifactRef> {
        let dir = self.tree_node(&tree)?;
        let ArtifactId::Blob(leaf) = child else {
            return Err(Error::NotPermitted(dir, "a tree already has its one place"));
        };
        crate::vault::namespace::validate_name(label)?;
        let node = self.write_fs(commit, |w| {
            let (mut dnode, mut trec) = w.dir(dir)?;
            if w.entry(dir, label)?.is_some() {
                return Err(Error::Exists { parent: dir, name: lossy(label) });
            }
            let pos = match position {
                Some(p) => {
                    if p == 0 || w.order()?.get((dir.0, p))?.is_some() {
                        return Err(Error::Exists { parent: dir, name: format!("position {p}") });
                    }
                    p
                }
                None => trec.next_position,
            };
            trec.next_position = trec.next_position.max(pos + 1);
            let tid = dnode.tree.ok_or(Error::NotADirectory(dir))?;
            w.put_tree(&tid, &trec)?;
            let id = w.alloc_node()?;
            let mut node = Node::new(id, &NewNode::file(perm), now);
            w.leaf_incref(&leaf)?;
            node.content = Some(leaf);
            node.size = w.leaf_size(&leaf)?;
            w.put_node(&node)?;
            w.entries()?.insert((dir.0, label), (id.0, pos))?;
            w.put_slot(dir, pos, id, NodeKind::File, label)?;
            dnode.mtime = now;
            dnode.ctime = now;
            w.put_node(&dnode)?;
            Ok((node, pos))
        })?;
        Ok(ArtifactRef {
            artifact_id: child,
            label: label.to_vec(),
            position: node.1,
            node: node.0.id,
        })
    }

    /// Creates an empty subtree of `tree` labelled `label`. Without a type, it is inferred
    /// from the name (stories/*, gallery, inbox, documents/*, else Collection).
    pub fn create_tree(
        &self,
        tree: ArtifactId,
        label: &[u8],
        tree_type: Option<TreeType>,
        now: Timestamp,
        commit: Commit,
    ) -> Result<TreeArtifact> {
        let dir = self.tree_node(&tree)?;
        let node = self.create(dir, label, &NewNode::dir(0o755), None, now, commit)?;
        if let Some(t) = tree_type {
            self.set_tree_type(node.id, t, commit)?;
        }
        self.tree_of(node.id)
    }

    /// Removes the reference labelled `label` from `tree` (a file, or an empty subtree),
    /// and deletes the node if that was its last name.
    pub fn remove_ref(
        &self,
        tree: ArtifactId,
        label: &[u8],
        now: Timestamp,
        commit: Commit,
    ) -> Result<()> {
        let dir = self.tree_node(&tree)?;
        let child = self.lookup(dir, label)?;
        let node = self.remove(dir, label, child.kind == NodeKind::Dir, now, commit)?;
        if node.nlink == 0 {
            self.reap(node.id, commit)?;
        }
        Ok(())
    }

    /// Moves a reference to another tree and/or label, replacing any reference already there.
    pub fn move_ref(
        &self,
        from: ArtifactId,
        label: &[u8],
        to: ArtifactId,
        new_label: &[u8],
        now: Timestamp,
        commit: Commit,
    ) -> Result<()> {
        let src = self.tree_node(&from)?;
        let dst = self.tree_node(&to)?;
        let replaced = self.rename(src, label, dst, new_label, RenameMode::Replace, now, commit)?;
        if let Some(r) = replaced.filter(|r| r.nlink == 0) {
            self.reap(r.id, commit)?;
        }
        Ok(())
    }

    /// The node of a tree.
    pub fn tree_node(&self, tree: &ArtifactId) -> Result<NodeId> {
        let ArtifactId::Doc(id) = tree else {
            return Err(Error::NoSuchArtifact(*tree));
        };
        Ok(self.tree_record(id)?.node)
    }

    fn tree_record(&self, id: &Hash) -> Result<TreeRecord> {
        self.read_fs(|r| r.tree(id))
    }

    fn update_tree(
        &self,
        dir: NodeId,
        commit: Commit,
        f: impl FnOnce(&mut TreeRecord),
    ) -> Result<()> {
        self.write_fs(commit, |w| {
            let (node, mut rec) = w.dir(dir)?;
            f(&mut rec);
            let tid = node.tree.ok_or(Error::NotADirectory(dir))?;
            w.put_tree(&tid, &rec)
        })
    }

    /// The root tree of the vault.
    pub fn root_tree(&self) -> Result<TreeArtifact> {
        self.tree_of(NodeId::ROOT)
    }

    /// The tree of a directory node, with its references in position order.
    pub fn tree_of(&self, dir: NodeId) -> Result<TreeArtifact> {
        self.read_fs(|r| {
            let (node, rec) = r.dir(dir)?;
            let tid = node.tree.ok_or(Error::NotADirectory(dir))?;
            let mut labels = Vec::new();
            for row in r.order()?.range((dir.0, 0)..=(dir.0, u64::MAX))? {
                let (k, v) = row?;
                let (child, _, name) = v.value();
                labels.push((k.value().1, NodeId(child), name.to_vec()));
            }
            let mut references = Vec::new();
            for (position, child, label) in labels {
                let n = match r.node(child) {
                    Ok(n) => n,
                    Err(Error::NoSuchNode(_)) => continue,
                    Err(e) => return Err(e),
                };
                if let Some(artifact_id) = n.artifact_id() {
                    references.push(ArtifactRef { artifact_id, label, position, node: n.id });
                }
            }
            Ok(TreeArtifact {
                id: ArtifactId::Doc(tid),
                tree_type: rec.tree_type,
                steward: rec.steward,
                audience: rec.audience,
                references,
                node: dir,
            })
        })
    }

    pub fn set_tree_type(&self, dir: NodeId, tree_type: TreeType, commit: Commit) -> Result<()> {
        self.update_tree(dir, commit, |r| r.tree_type = tree_type)
    }

    pub fn set_audience(
        &self,
        tree: ArtifactId,
        audience: &[PlayerId],
        commit: Commit,
    ) -> Result<()> {
        let dir = self.tree_node(&tree)?;
        let mut list = audience.to_vec();
        list.sort();
        list.dedup();
        self.update_tree(dir, commit, |r| r.audience = list)
    }

    /// Hands a tree to a new steward.
    pub fn transfer_stewardship(
        &self,
        tree: ArtifactId,
        steward: PlayerId,
        commit: Commit,
    ) -> Result<()> {
        let dir = self.tree_node(&tree)?;
        self.update_tree(dir, commit, |r| r.steward = steward)
    }

    /// The steward of a node: its own tree's for a directory, else its parent tree's.
    pub fn steward_of(&self, dir: NodeId) -> Result<PlayerId> {
        let node = self.node(dir)?;
        let Some(tid) = node.tree else { return Err(Error::NotADirectory(dir)) };
        Ok(self.tree_record(&tid)?.steward)
    }

    /// Walks `path` (labels) from the root.
    pub fn resolve(&self, path: &[&[u8]]) -> Result<Node> {
        let mut node = self.node(NodeId::ROOT)?;
        for label in path {
            node = self.lookup(node.id, label)?;
        }
        Ok(node)
    }
}
