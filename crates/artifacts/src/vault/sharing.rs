//! Sharing records: grants (who may access which file or folder, and how), transfers
//! received, peers (and pending connection requests), and one-time invitations.
//!
//! These tables go through the write-back layers like every other; the CLI's grant, recall and
//! peer changes pass `Commit::Durable`, so a change it reports has reached the disk, and an
//! invitation is used up durably before the peer it admits is told so. An invitation is kept
//! by the hash of its secret only, so the store never holds a usable secret.
//!
//! A grant is keyed by `(node, grantee)`: at most one per pair. It names a node, a file or a
//! folder (and with it the folder's whole subtree, as it changes), or a mirror entry that a
//! permanent grant gave us (sharing on). A permanent grant is final, and neither a permanent
//! nor a transfer grant can be recalled. A transfer leaves this vault only when the grantee
//! confirms it holds the content (`complete_transfer`); the grantee's side is
//! `receive_transfer`, durable before it confirms.

use crate::error::{Error, Result};
use crate::payload::writer::StagedLeaf;
use crate::store::meta::W;
use crate::store::schema::{InviteRecord, decode, encode};
use crate::types::{
    AccessGrant, AccessMode, Hash, InviteCheck, NewNode, NodeId, NodeKind, Peer, PlayerId,
    Timestamp, TransferRecord, XattrMode,
};
use crate::vault::handle::{Commit, Vault};
use crate::vault::mirror::{clean_label, numbered};
use crate::vault::namespace::validate_name;

/// The folder of the vault's root that transfers are received into.
const INBOX: &[u8] = b"inbox";

impl Vault {
    /// Grants `grantee` access to the file or folder `node` (a folder with its whole subtree,
    /// as it changes). A new grant replaces the peer's existing grant of the node, except that
    /// a permanent grant is final: changing it is refused. Only a file can be transferred.
    pub fn grant(
        &self,
        node: NodeId,
        grantee: PlayerId,
        mode: AccessMode,
        now: Timestamp,
        commit: Commit,
    ) -> Result<AccessGrant> {
        if grantee == self.player() {
            return Err(Error::NotPermitted(node, "a grant to ourselves"));
        }
        let grant = AccessGrant { node, grantee, granted_by: self.player(), mode, granted_at: now };
        self.write_fs(commit, |w| {
            let n = match w.node(node) {
                Ok(n) => n,
                Err(Error::NoSuchNode(_)) => {
                    check_reshare(w, node, mode)?;
                    w.grants()?.insert((node.0, &grantee.0), encode(&grant).as_slice())?;
                    return Ok(grant.clone());
                }
                Err(e) => return Err(e),
            };
            match n.kind {
                _ if node == NodeId::ROOT => {
                    return Err(Error::NotPermitted(node, "the vault itself cannot be shared"));
                }
                NodeKind::File => {}
                NodeKind::Dir if mode == AccessMode::Transfer => {
                    return Err(Error::NotPermitted(node, "only a file can be transferred"));
                }
                NodeKind::Dir => {}
                _ => return Err(Error::NotPermitted(node, "only files and folders are shared")),
            }
            if let Some(old) = w.grants()?.get((node.0, &grantee.0))? {
                let old: AccessGrant = decode("grant", old.value())?;
                if old.mode == AccessMode::Permanent && mode != AccessMode::Permanent {
                    return Err(Error::NotPermitted(node, "a permanent grant is final"));
                }
                if old.mode == AccessMode::Permanent {
                    return Ok(old);
                }
            }
            w.grants()?.insert((node.0, &grantee.0), encode(&grant).as_slice())?;
            Ok(grant.clone())
        })
    }

    /// Recalls `grantee`'s grant of `node`, and returns it (`None` if there was none).
    /// Permanent grants, and transfers, cannot be recalled.
    pub fn revoke(
        &self,
        node: NodeId,
        grantee: PlayerId,
        commit: Commit,
    ) -> Result<Option<AccessGrant>> {
        self.write_fs(commit, |w| {
            let old: AccessGrant = match w.grants()?.get((node.0, &grantee.0))? {
                Some(v) => decode("grant", v.value())?,
                None => return Ok(None),
            };
            match old.mode {
                AccessMode::Permanent => {
                    return Err(Error::NotPermitted(node, "a permanent grant cannot be recalled"));
                }
                AccessMode::Transfer => {
                    return Err(Error::NotPermitted(node, "a transfer cannot be recalled"));
                }
                AccessMode::Revocable | AccessMode::Timed { .. } => {}
            }
            w.grants()?.remove((node.0, &grantee.0))?;
            Ok(Some(old))
        })
    }

    /// Every grant, or those of one node.
    pub fn grants(&self, node: Option<NodeId>) -> Result<Vec<AccessGrant>> {
        self.scan(&["grants"], |r| {
            let t = r.grants()?;
            let rows = match node {
                Some(n) => t.range((n.0, &[0u8; 32])..=(n.0, &[0xffu8; 32]))?,
                None => t.iter()?,
            };
            rows.map(|row| decode("grant", row?.1.value())).collect()
        })
    }

    /// The grants to `peer` that are live at `now`.
    pub fn grants_to(&self, peer: PlayerId, now: Timestamp) -> Result<Vec<AccessGrant>> {
        let mut all = self.grants(None)?;
        all.retain(|g| g.grantee == peer && g.is_active(now));
        Ok(all)
    }

    /// Deletes the timed grants that ended by `now`, and returns them.
    pub fn expire_grants(&self, now: Timestamp, commit: Commit) -> Result<Vec<AccessGrant>> {
        let ended: Vec<AccessGrant> =
            self.grants(None)?.into_iter().filter(|g| !g.is_active(now)).collect();
        if ended.is_empty() {
            return Ok(ended);
        }
        self.write_fs(commit, |w| {
            for g in &ended {
                w.grants()?.remove((g.node.0, &g.grantee.0))?;
            }
            Ok(())
        })?;
        Ok(ended)
    }

    /// The live grant to `peer` that covers `node`: the node's own, or that of the nearest
    /// folder above it. A file in a shared folder is covered through its folder, so callers
    /// pass the folder the peer named it in.
    pub fn covering_grant(
        &self,
        peer: PlayerId,
        node: NodeId,
        now: Timestamp,
    ) -> Result<Option<AccessGrant>> {
        self.read_fs(|r| r.covering_grant(peer, node, now))
    }

    /// Completes a transfer of `node` to `grantee`, who confirms that it holds `content`:
    /// the file leaves this vault (every link of it), and the grant ends. Returns the links
    /// removed, as (folder, name). Refused without a transfer grant to `grantee` (a second
    /// confirmation finds the grant gone). Refused if the grant is
    /// not a transfer, or the file's content is no longer `content` (it changed since).
    pub fn complete_transfer(
        &self,
        node: NodeId,
        grantee: PlayerId,
        content: Hash,
        now: Timestamp,
    ) -> Result<Vec<(NodeId, Vec<u8>)>> {
        let Some(g) = self.grants(Some(node))?.into_iter().find(|g| g.grantee == grantee) else {
            return Err(Error::NotPermitted(node, "no transfer of it to that peer"));
        };
        if g.mode != AccessMode::Transfer {
            return Err(Error::NotPermitted(node, "not a transfer"));
        }
        if self.node(node)?.content != Some(content) {
            return Err(Error::NotPermitted(node, "the file changed since it was transferred"));
        }
        let links: Vec<(NodeId, Vec<u8>)> = self.scan(&["entries"], |r| {
            let mut out = Vec::new();
            for row in r.entries()?.iter()? {
                let (k, v) = row?;
                if v.value().0 == node.0 {
                    let (parent, name) = k.value();
                    out.push((NodeId(parent), name.to_vec()));
                }
            }
            Ok(out)
        })?;
        self.write_fs(Commit::Durable, |w| {
            w.grants()?.remove((node.0, &grantee.0))?;
            Ok(())
        })?;
        for (parent, name) in &links {
            match self.remove(*parent, name, false, now, Commit::Durable) {
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(links)
    }

    /// Records a peer (or a pending connection request), replacing any record of the same
    /// player. Its local name must be valid as a folder name and unused by another peer.
    pub fn put_peer(&self, peer: &Peer, commit: Commit) -> Result<()> {
        validate_name(peer.name.as_bytes())?;
        self.write_fs(commit, |w| {
            for row in w.peers()?.iter()? {
                let other: Peer = decode("peer", row?.1.value())?;
                if other.id != peer.id && other.name == peer.name {
                    return Err(Error::Exists { parent: NodeId::ROOT, name: peer.name.clone() });
                }
            }
            w.peers()?.insert(&peer.id.0, encode(peer).as_slice())?;
            Ok(())
        })
    }

    /// Forgets a peer or a pending request; returns whether there was one.
    pub fn remove_peer(&self, id: PlayerId, commit: Commit) -> Result<bool> {
        self.write_fs(commit, |w| Ok(w.peers()?.remove(&id.0)?.is_some()))
    }

    /// Every peer and pending request, by id.
    pub fn peers(&self) -> Result<Vec<Peer>> {
        self.scan(&["peers"], |r| {
            r.peers()?.iter()?.map(|r| decode("peer", r?.1.value())).collect()
        })
    }

    /// The peer or pending request with this id.
    pub fn peer(&self, id: PlayerId) -> Result<Option<Peer>> {
        self.read_fs(|r| r.peers()?.get(&id.0)?.map(|v| decode("peer", v.value())).transpose())
    }

    /// Records a one-time invitation, by the BLAKE3 hash of its secret (the secret itself is
    /// never stored). Invitations expired before `now` are dropped on the way.
    pub fn add_invite(
        &self,
        secret_hash: Hash,
        expires_at: Timestamp,
        now: Timestamp,
        commit: Commit,
    ) -> Result<()> {
        self.write_fs(commit, |w| {
            let expired: Vec<Hash> = w
                .invites()?
                .iter()?
                .map(|r| {
                    let (k, v) = r?;
                    let rec: InviteRecord = decode("invite", v.value())?;
                    Ok((rec.expires_at <= now).then(|| *k.value()))
                })
                .filter_map(Result::transpose)
                .collect::<Result<_>>()?;
            for h in &expired {
                w.invites()?.remove(h)?;
            }
            let rec = InviteRecord { expires_at, used_at: None };
            w.invites()?.insert(&secret_hash, encode(&rec).as_slice())?;
            Ok(())
        })
    }

    /// Checks an invitation's secret, by its hash, and uses it up if it is valid: of two
    /// concurrent redemptions, exactly one is `Valid`. Durable before it returns.
    pub fn redeem_invite(&self, secret_hash: &Hash, now: Timestamp) -> Result<InviteCheck> {
        self.write_fs(Commit::Durable, |w| {
            let Some(v) = w.invites()?.get(secret_hash)? else { return Ok(InviteCheck::Unknown) };
            let mut rec: InviteRecord = decode("invite", v.value())?;
            if rec.used_at.is_some() {
                return Ok(InviteCheck::Used);
            }
            if rec.expires_at <= now {
                return Ok(InviteCheck::Expired);
            }
            rec.used_at = Some(now);
            w.invites()?.insert(secret_hash, encode(&rec).as_slice())?;
            Ok(InviteCheck::Valid)
        })
    }
}

/// Whether mirror entry `id` (what a peer shares with us) may be shared on in `mode`: only
/// what a permanent grant gave us, never a peer's whole folder, and never as a transfer.
fn check_reshare(w: &mut crate::store::meta::W<'_>, id: NodeId, mode: AccessMode) -> Result<()> {
    let Some(e) = w.mirror_get(id)? else { return Err(Error::NoSuchNode(id)) };
    if e.remote == 0 {
        return Err(Error::NotPermitted(
            id,
            "a peer's folder cannot be shared; share what is in it",
        ));
    }
    let root = if e.root == e.id { Some(e) } else { w.mirror_get(e.root)? };
    if root.and_then(|r| r.grant) != Some(AccessMode::Permanent) {
        return Err(Error::NotPermitted(
            id,
            "only what a permanent grant gave us may be shared on",
        ));
    }
    if mode == AccessMode::Transfer {
        return Err(Error::NotPermitted(id, "what a peer shares cannot be transferred"));
    }
    Ok(())
}

impl Vault {
    /// The transfer of `peer`'s node `remote` we received, if any.
    pub fn transfer_record(&self, peer: PlayerId, remote: u64) -> Result<Option<TransferRecord>> {
        self.read_fs(|r| {
            r.transfers()?
                .get((&peer.0, remote))?
                .map(|v| decode("transfer", v.value()))
                .transpose()
        })
    }

    /// Receives a transferred file: `staged` becomes a file of our own in the vault's
    /// `inbox/` (named `label`, numbered if taken), with its provenance in xattrs
    /// (`user.indra.received_from`, `user.indra.original_steward`, `user.indra.received_at`),
    /// and the transfer is recorded. Durable before it returns, so the granter may then let
    /// go of its copy. Returns the record, and the inbox and name the file got.
    pub fn receive_transfer(
        &self,
        peer: PlayerId,
        remote: u64,
        label: &[u8],
        staged: StagedLeaf,
        now: Timestamp,
    ) -> Result<(TransferRecord, NodeId, Vec<u8>)> {
        let content = staged.hash;
        let (root, inbox) = self.root_folder(INBOX, now, Commit::CrashConsistent)?;
        let base = clean_label(label);
        let spec = NewNode::file(0o644).owner(root.uid, root.gid);
        let mut name = base.clone();
        let mut n = 2;
        while self.read_fs(|r| r.entry(inbox.id, &name))?.is_some() {
            name = numbered(&base, n);
            n += 1;
        }
        let file =
            self.create(inbox.id, &name, &spec, Some(staged), now, Commit::CrashConsistent)?;
        let from = crate::types::hex(&peer.0);
        let at = now.rfc3339();
        for (k, v) in [
            (&b"user.indra.received_from"[..], from.as_bytes()),
            (b"user.indra.original_steward", from.as_bytes()),
            (b"user.indra.received_at", at.as_bytes()),
        ] {
            self.set_xattr(file.id, k, v, XattrMode::Upsert, now, Commit::CrashConsistent)?;
        }
        let rec = TransferRecord {
            peer,
            remote,
            content,
            node: file.id,
            received_at: now,
            confirmed: false,
        };
        self.write_fs(Commit::Durable, |w| {
            w.transfers()?.insert((&peer.0, remote), encode(&rec).as_slice())?;
            Ok(())
        })?;
        Ok((rec, inbox.id, name))
    }

    /// Notes that the granter let go of a transfer we received.
    pub fn confirm_transfer(&self, peer: PlayerId, remote: u64) -> Result<()> {
        self.write_fs(Commit::CrashConsistent, |w| {
            let Some(v) = w.transfers()?.get((&peer.0, remote))? else { return Ok(()) };
            let mut rec: TransferRecord = decode("transfer", v.value())?;
            rec.confirmed = true;
            w.transfers()?.insert((&peer.0, remote), encode(&rec).as_slice())?;
            Ok(())
        })
    }
}

impl W<'_> {
    /// `Vault::covering_grant`, within an operation.
    pub(crate) fn covering_grant(
        &mut self,
        peer: PlayerId,
        node: NodeId,
        now: Timestamp,
    ) -> Result<Option<AccessGrant>> {
        let mut at = node;
        // Folders form a tree with the root at the top, so this ends; the bound guards
        // against a damaged parent chain.
        for _ in 0..4096 {
            if let Some(v) = self.grants()?.get((at.0, &peer.0))? {
                let g: AccessGrant = decode("grant", v.value())?;
                if g.is_active(now) {
                    return Ok(Some(g));
                }
            }
            let up = match self.node(at) {
                Ok(n) => n.parent.filter(|p| *p != at && at != NodeId::ROOT),
                // What a peer shares with us, shared on: up to its shared root.
                Err(Error::NoSuchNode(_)) => match self.mirror_get(at)? {
                    Some(e) if e.root != e.id => Some(e.parent),
                    _ => None,
                },
                Err(e) => return Err(e),
            };
            match up {
                Some(p) => at = p,
                None => return Ok(None),
            }
        }
        Ok(None)
    }
}
