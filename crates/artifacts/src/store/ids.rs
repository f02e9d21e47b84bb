//! Node ids: persistent, never reused, handed out from blocks reserved in `meta_v1`.
//!
//! `next_node` in `meta_v1` is the end of the reservation, so most creations write nothing
//! to the meta table; a crash skips at most the rest of a block, and no id is ever handed out
//! twice. The mount uses node ids as inode numbers, so they must never repeat.

/// Node ids reserved per write of `meta_v1`.
pub(crate) const NODE_ID_BLOCK: u64 = 1024;

/// Node ids: `next` is the next to hand out; ids below `limit` are reserved durably (by
/// committed transactions), and `pending` is a larger reservation written by the running one.
#[derive(Debug)]
pub(crate) struct NodeIds {
    pub(crate) next: u64,
    pub(crate) limit: u64,
    pub(crate) pending: Option<u64>,
}

impl NodeIds {
    /// Ends a write transaction: its reservation stands if it committed. Ids it handed out
    /// are never handed out again either way.
    pub(crate) fn settle(&mut self, committed: bool) {
        if let Some(p) = self.pending.take()
            && committed
        {
            self.limit = p;
        }
    }
}
