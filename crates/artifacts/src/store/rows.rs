//! Typed rows of the namespace tables: nodes, trees and entries, decoded and encoded on a
//! [`W`]. Helpers here read and write single rows; what a change *means* (links, orphans,
//! positions) is decided by the vault's namespace module.

use std::sync::PoisonError;

use crate::error::{Error, Result};
use crate::store::ids::NODE_ID_BLOCK;
use crate::store::meta::W;
use crate::store::schema::{META_NEXT_NODE, TreeRecord, decode, encode, kind_code, u64_bytes};
use crate::types::{ArtifactId, Hash, Node, NodeId, NodeKind};

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

    /// Writes the listing slot `position` of folder `dir`: the entry `name`, naming `child`
    /// of kind `kind` (see `ORDER`).
    pub(crate) fn put_slot(
        &mut self,
        dir: NodeId,
        position: u64,
        child: NodeId,
        kind: NodeKind,
        name: &[u8],
    ) -> Result<()> {
        self.order()?.insert((dir.0, position), (child.0, kind_code(kind), name))?;
        Ok(())
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
}

/// A fresh tree id: trees are `ArtifactId::Doc`s, named by a stable random id.
pub(crate) fn new_tree_id() -> Result<Hash> {
    let mut id = [0u8; 32];
    getrandom::fill(&mut id)
        .map_err(|e| Error::io("getrandom", std::io::Error::other(e.to_string())))?;
    Ok(id)
}
