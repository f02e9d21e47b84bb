//! Sharing records: grants (who may access which artifact, and how) and known peers.
//!
//! Both tables go through the write-back layers like every other; the CLI's grant, recall and
//! peer changes pass `Commit::Durable`, so a change it reports has reached the disk. A grant
//! is keyed by `(artifact, grantee)`: at most one per pair. A permanent grant is never
//! weakened by a later one, and neither a permanent nor a transfer grant can be revoked.

use crate::error::{Error, Result};
use crate::store::schema::{decode, encode};
use crate::types::{AccessGrant, AccessMode, ArtifactId, NodeId, Peer, PlayerId, Timestamp};
use crate::vault::handle::{Commit, Vault};

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

    pub fn add_peer(
        &self,
        id: PlayerId,
        display_name: &str,
        now: Timestamp,
        commit: Commit,
    ) -> Result<Peer> {
        let peer = Peer { id, display_name: display_name.to_owned(), added_at: now };
        self.write_fs(commit, |w| {
            w.peers()?.insert(&id.0, encode(&peer).as_slice())?;
            Ok(())
        })?;
        Ok(peer)
    }

    pub fn remove_peer(&self, id: PlayerId, commit: Commit) -> Result<bool> {
        self.write_fs(commit, |w| Ok(w.peers()?.remove(&id.0)?.is_some()))
    }

    pub fn peers(&self) -> Result<Vec<Peer>> {
        self.scan(&["peers"], |r| {
            r.peers()?.iter()?.map(|r| decode("peer", r?.1.value())).collect()
        })
    }
}
