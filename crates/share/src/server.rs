//! The granter's side: answers a peer's requests, each checked against the live grants to
//! that peer at the moment it is answered, so a recall or an expiry holds for the very next
//! request, on any connection.
//!
//! What is checked, per request:
//! - `List { dir }`: a live grant to the peer covers `dir` (its own, or a folder's above).
//! - A file (`FileRef`): shared on its own, a live grant of exactly that node; in a folder,
//!   a live grant covers the folder, the folder's entry `name` is that node, and the node's
//!   content is the one asked for. Runs, segments and chunks are then served only as pieces
//!   of that content (`Vault::leaf_run`, `leaf_segment`, `leaf_chunk`).
//! - `Received`: the peer holds a transfer grant of the node.
//!
//! Anything else, or anything missing, is `Denied`.

use std::collections::HashMap;

use indras_artifacts::{
    AccessGrant, Error, LeafLayout, NodeId, PlayerId, SharedItem, Timestamp, Vault,
};
use parking_lot::Mutex;
use tracing::{debug, warn};

use crate::proto::{self, FileRef, PAGE, Request, Response};

/// Answers peers' requests over one vault.
#[derive(Debug)]
pub struct Server {
    vault: std::sync::Arc<Vault>,
    /// Per peer, the files it was shown in listings, with the folder each was listed in: a
    /// change of such a file is announced to the peer as a change of that folder.
    listed: Mutex<HashMap<PlayerId, HashMap<u64, u64>>>,
}

impl Server {
    pub fn new(vault: std::sync::Arc<Vault>) -> Server {
        Server { vault, listed: Mutex::new(HashMap::new()) }
    }

    /// Answers one encoded request from `peer`.
    pub fn handle(&self, peer: PlayerId, request: &[u8]) -> Vec<u8> {
        let response = match proto::decode::<Request>(request) {
            Ok(req) => self.answer(peer, req, Timestamp::now()),
            Err(e) => {
                debug!(%peer, error = %e, "undecodable request");
                Response::Denied
            }
        };
        proto::encode(&response)
    }

    /// The answer to `req` from `peer` at `now`.
    pub fn answer(&self, peer: PlayerId, req: Request, now: Timestamp) -> Response {
        match self.try_answer(peer, req, now) {
            Ok(r) => r,
            Err(e) if is_absent(&e) => Response::Denied,
            Err(e) => {
                warn!(%peer, error = %e, "failed to answer a peer");
                Response::Failed(e.to_string())
            }
        }
    }

    fn try_answer(
        &self,
        peer: PlayerId,
        req: Request,
        now: Timestamp,
    ) -> indras_artifacts::Result<Response> {
        let v = &self.vault;
        Ok(match req {
            Request::Roots => Response::Roots(self.roots(peer, now)?),
            Request::List { dir, after } => {
                if v.covering_grant(peer, NodeId(dir), now)?.is_none() {
                    return Ok(Response::Denied);
                }
                let (items, next) = v.shared_list(NodeId(dir), after, PAGE)?;
                let mut listed = self.listed.lock();
                let seen = listed.entry(peer).or_default();
                for i in &items {
                    seen.insert(i.remote, dir);
                }
                Response::Page { items, next }
            }
            Request::Layout { file } => {
                if !self.file_granted(peer, &file, now)? {
                    return Ok(Response::Denied);
                }
                match v.leaf_layout(&file.content)? {
                    LeafLayout::Inline(b) => Response::Inline(b),
                    LeafLayout::List(l) => Response::List(l),
                }
            }
            Request::Run { file, run } => {
                if !self.file_granted(peer, &file, now)? {
                    return Ok(Response::Denied);
                }
                v.leaf_run(&file.content, &run)?.map_or(Response::Denied, Response::Bytes)
            }
            Request::Segment { file, segment } => {
                if !self.file_granted(peer, &file, now)? {
                    return Ok(Response::Denied);
                }
                v.leaf_segment(&file.content, &segment)?.map_or(Response::Denied, Response::Bytes)
            }
            Request::Chunks { file, from, count } => {
                if !self.file_granted(peer, &file, now)? {
                    return Ok(Response::Denied);
                }
                match v.leaf_chunks(&file.content, from, count, proto::MAX_BATCH)? {
                    Some(chunks) => Response::Chunks(
                        chunks
                            .into_iter()
                            .map(|c| serde_bytes::ByteBuf::from(c.to_vec()))
                            .collect(),
                    ),
                    None => Response::Denied,
                }
            }
            // Announcements travel the other way; a server has nothing to do with one.
            Request::Changed { .. } => Response::Denied,
            // The engine lets go of a transfer (`Server::received`): it has the kernel's
            // caches to drop too.
            Request::Received { .. } => Response::Denied,
            // Realms are the engine's (`realms`): it knows our co-members and tells them.
            Request::Realms | Request::RealmsChanged | Request::LeaveRealm { .. } => {
                Response::Denied
            }
            // The engine takes attention (`Share::handle`): it knows whether we take any.
            Request::Attention { .. } => Response::Denied,
        })
    }

    /// `peer` holds all of transferred file `node` with content `content`: the file leaves
    /// this vault. Returns the answer and the links removed.
    pub fn received(
        &self,
        peer: PlayerId,
        node: u64,
        content: indras_artifacts::Hash,
        now: Timestamp,
    ) -> (Response, Vec<(NodeId, Vec<u8>)>) {
        match self.vault.complete_transfer(NodeId(node), peer, content, now) {
            Ok(links) => (Response::Ok, links),
            Err(Error::NotPermitted(..)) => (Response::Denied, Vec::new()),
            Err(e) if is_absent(&e) => (Response::Denied, Vec::new()),
            Err(e) => {
                warn!(%peer, error = %e, "failed to complete a transfer");
                (Response::Failed(e.to_string()), Vec::new())
            }
        }
    }

    /// The live grants to `peer`, as it sees them.
    pub fn roots(
        &self,
        peer: PlayerId,
        now: Timestamp,
    ) -> indras_artifacts::Result<Vec<SharedItem>> {
        let mut out = Vec::new();
        for g in self.vault.grants_to(peer, now)? {
            out.extend(self.vault.shared_root(&g)?);
        }
        Ok(out)
    }

    fn file_granted(
        &self,
        peer: PlayerId,
        f: &FileRef,
        now: Timestamp,
    ) -> indras_artifacts::Result<bool> {
        let v = &self.vault;
        match f.dir {
            None => {
                let direct = v.grants(Some(NodeId(f.node)))?;
                let live =
                    direct.iter().any(|g: &AccessGrant| g.grantee == peer && g.is_active(now));
                Ok(live && v.shared_content(NodeId(f.node))? == Some(f.content))
            }
            Some(dir) => Ok(v.covering_grant(peer, NodeId(dir), now)?.is_some()
                && v.shared_file_in(NodeId(dir), &f.name, NodeId(f.node), &f.content)?),
        }
    }

    /// Of the folders and files in `dirs` and `nodes` (changed locally), those that `peer`
    /// sees, as folders to list again; and whether its roots may have changed.
    pub fn affected(
        &self,
        peer: PlayerId,
        dirs: &[NodeId],
        nodes: &[NodeId],
        now: Timestamp,
    ) -> indras_artifacts::Result<Vec<u64>> {
        let mut out: Vec<u64> = Vec::new();
        for d in dirs {
            if self.vault.covering_grant(peer, *d, now)?.is_some() && !out.contains(&d.0) {
                out.push(d.0);
            }
        }
        let listed: Vec<u64> = {
            let l = self.listed.lock();
            l.get(&peer)
                .map(|m| nodes.iter().filter_map(|n| m.get(&n.0).copied()).collect())
                .unwrap_or_default()
        };
        for d in listed {
            if !out.contains(&d) && self.vault.covering_grant(peer, NodeId(d), now)?.is_some() {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// Errors that mean "not here": answered like a refusal.
fn is_absent(e: &Error) -> bool {
    matches!(
        e,
        Error::NoSuchNode(_)
            | Error::NoSuchArtifact(_)
            | Error::NotFound { .. }
            | Error::NotADirectory(_)
            | Error::IsADirectory(_)
            | Error::NotAFile(_)
    )
}
