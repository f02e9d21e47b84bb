//! Sharing records: grants (who may access which artifact, and how), peers (and pending
//! connection requests), and one-time invitations.
//!
//! These tables go through the write-back layers like every other; the CLI's grant, recall and
//! peer changes pass `Commit::Durable`, so a change it reports has reached the disk, and an
//! invitation is used up durably before the peer it admits is told so. An invitation is kept
//! by the hash of its secret only, so the store never holds a usable secret. A grant
//! is keyed by `(artifact, grantee)`: at most one per pair. A permanent grant is never
//! weakened by a later one, and neither a permanent nor a transfer grant can be revoked.

use crate::error::{Error, Result};
use crate::store::schema::{InviteRecord, decode, encode};
use crate::types::{
    AccessGrant, AccessMode, ArtifactId, Hash, InviteCheck, NodeId, Peer, PlayerId, Timestamp,
};
use crate::vault::handle::{Commit, Vault};
use crate::vault::namespace::validate_name;

impl Vault {
    /// Grants `grantee` access to `artifact`. A new grant replaces an existing one, except
    /// that a permanent grant is never weakened.
    pub fn grant(
        &self,
        artifact: ArtifactId,
        grantee: PlayerId,
        mode: AccessMode,
        now: Timestamp,
        commit: Commit,
    ) -> Result<AccessGrant> {
        self.check_artifact(&artifact)?;
        let grant =
            AccessGrant { artifact, grantee, granted_by: self.player(), mode, granted_at: now };
        self.write_fs(commit, |w| {
            let key = artifact.to_key();
            if let Some(old) = w.grants()?.get((&key, &grantee.0))? {
                let old: AccessGrant = decode("grant", old.value())?;
                if old.mode == AccessMode::Permanent {
                    return Ok(old);
                }
            }
            w.grants()?.insert((&key, &grantee.0), encode(&grant).as_slice())?;
            Ok(grant.clone())
        })
    }

    /// Recalls a grant. Permanent and transfer grants cannot be recalled.
    pub fn revoke(&self, artifact: ArtifactId, grantee: PlayerId, commit: Commit) -> Result<bool> {
        self.write_fs(commit, |w| {
            let key = artifact.to_key();
            let old: AccessGrant = match w.grants()?.get((&key, &grantee.0))? {
                Some(v) => decode("grant", v.value())?,
                None => return Ok(false),
            };
            if matches!(old.mode, AccessMode::Permanent | AccessMode::Transfer) {
                return Err(Error::NotPermitted(
                    NodeId::ROOT,
                    "permanent and transfer grants are final",
                ));
            }
            w.grants()?.remove((&key, &grantee.0))?;
            Ok(true)
        })
    }

    /// Every grant, or those of one artifact.
    pub fn grants(&self, artifact: Option<ArtifactId>) -> Result<Vec<AccessGrant>> {
        self.scan(&["grants"], |r| {
            let t = r.grants()?;
            let rows = match artifact {
                Some(a) => {
                    let key = a.to_key();
                    t.range((&key, &[0u8; 32])..=(&key, &[0xffu8; 32]))?
                }
                None => t.iter()?,
            };
            rows.map(|row| decode("grant", row?.1.value())).collect()
        })
    }

    fn check_artifact(&self, artifact: &ArtifactId) -> Result<()> {
        match artifact {
            ArtifactId::Doc(_) => self.tree_node(artifact).map(drop),
            ArtifactId::Blob(h) => self.leaf_record(h).map(drop),
        }
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
