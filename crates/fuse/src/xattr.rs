//! The extended attributes of vault nodes.
//!
//! - Stored ones: any name but `system.*` (ACLs are not supported), at most 255 bytes, kept in
//!   the store with the node.
//! - Computed ones: `user.indra.<name>` (what `getfattr -d`, `cp --preserve=xattr` and
//!   `rsync -X` handle), accepted as `indra.<name>` too. They are read by name and never
//!   listed (as Ceph's virtual attributes are), so that no tool copies them out of the vault.
//!   `tree_type`, the one a user may set (on directories), is listed only where it differs
//!   from the type the folder's name implies (it was set, or the folder was renamed since);
//!   removing it resets it to that type. The others refuse to be set or removed with `EPERM`.

use indras_artifacts::{Commit, NodeId, NodeKind, Timestamp, Vault, XattrMode};

use crate::attention::{Attention, display_heat};
use crate::error::{FsError, FsResult};

/// Whether `name` is the computed attribute that names a file's content (`user.indra.id`).
pub(crate) fn names_content(name: &[u8]) -> bool {
    IndraXattr::parse(name) == Some(IndraXattr::Id)
}

/// The computed extended attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IndraXattr {
    Heat,
    Steward,
    AccessMode,
    Id,
    TreeType,
}

impl IndraXattr {
    const ALL: [IndraXattr; 5] = [
        IndraXattr::Heat,
        IndraXattr::Steward,
        IndraXattr::AccessMode,
        IndraXattr::Id,
        IndraXattr::TreeType,
    ];

    fn name(self) -> &'static str {
        match self {
            IndraXattr::Heat => "heat",
            IndraXattr::Steward => "steward",
            IndraXattr::AccessMode => "access_mode",
            IndraXattr::Id => "id",
            IndraXattr::TreeType => "tree_type",
        }
    }

    fn parse(name: &[u8]) -> Option<Self> {
        let key = name.strip_prefix(b"user.indra.").or_else(|| name.strip_prefix(b"indra."))?;
        IndraXattr::ALL.into_iter().find(|k| k.name().as_bytes() == key)
    }
}

fn check_name(name: &[u8]) -> FsResult<()> {
    if name.starts_with(b"system.") {
        return Err(FsError::new(libc::EOPNOTSUPP, "system.* attributes (ACLs) are not supported"));
    }
    if name.len() > 255 {
        return Err(FsError::errno(libc::ERANGE));
    }
    Ok(())
}

/// The vault nodes' extended attributes, stored and computed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Xattrs<'a> {
    pub(crate) vault: &'a Vault,
    pub(crate) attention: &'a Attention,
}

impl Xattrs<'_> {
    /// The computed attribute `key` of a node.
    fn computed(&self, id: NodeId, key: IndraXattr) -> FsResult<Vec<u8>> {
        let node = self.vault.node(id)?;
        let text = match key {
            IndraXattr::Heat => {
                self.attention.flush()?;
                let heat =
                    self.vault.attention_of(node.id)?.map_or(0.0, |a| a.heat(self.attention.now()));
                format!("{:.4}", display_heat(heat))
            }
            IndraXattr::Steward => {
                // Files belong to the tree that holds them; in the player's own vault that is
                // always the player's.
                let dir = if node.kind == NodeKind::Dir { node.id } else { NodeId::ROOT };
                self.vault.steward_of(dir)?.to_string()
            }
            IndraXattr::AccessMode => {
                // Ours, and the grants we gave of it: `steward; bob: revocable; carol: timed
                // until 2026-12-13T10:00:00.000Z`.
                use std::fmt::Write as _;
                let mut text = "steward".to_owned();
                for g in self.vault.grants(Some(node.id))? {
                    let who = match self.vault.peer(g.grantee)? {
                        Some(p) => p.name,
                        None => g.grantee.to_string(),
                    };
                    let _ = write!(text, "; {who}: {}", g.mode.name());
                    if let Some(t) = g.mode.expires_at() {
                        let _ = write!(text, " until {}", t.rfc3339());
                    }
                }
                text
            }
            IndraXattr::Id => match node.artifact_id() {
                Some(id) => indras_artifacts::hex(id.bytes()),
                None => return Err(FsError::errno(libc::ENODATA)),
            },
            IndraXattr::TreeType => match node.kind {
                NodeKind::Dir => self.vault.tree_of(node.id)?.tree_type.as_str().to_owned(),
                _ => return Err(FsError::errno(libc::ENODATA)),
            },
        };
        Ok(text.into_bytes())
    }

    pub(crate) fn get(&self, id: NodeId, name: &[u8]) -> FsResult<Vec<u8>> {
        if let Some(key) = IndraXattr::parse(name) {
            return self.computed(id, key);
        }
        check_name(name)?;
        Ok(self.vault.get_xattr(id, name)?)
    }

    /// The names, each NUL-terminated.
    pub(crate) fn list(&self, id: NodeId) -> FsResult<Vec<u8>> {
        let node = self.vault.node(id)?;
        let mut out = Vec::new();
        // Only stored attributes, and a tree type that is not the one the name implies, are
        // listed. The computed ones are read by name: listing them would make `cp -a`,
        // `rsync -X` and `tar --xattrs` copy stale values out of the vault, and fail writing
        // them back in (and `rsync -X` would try to remove them on every run).
        if node.kind == NodeKind::Dir
            && self.vault.tree_of(id)?.tree_type != self.vault.implied_tree_type(id)?
        {
            out.extend_from_slice(b"user.indra.tree_type\0");
        }
        for name in self.vault.list_xattrs(id)? {
            out.extend_from_slice(&name);
            out.push(0);
        }
        Ok(out)
    }

    pub(crate) fn set(&self, id: NodeId, name: &[u8], value: &[u8], flags: i32) -> FsResult<()> {
        if let Some(key) = IndraXattr::parse(name) {
            if key != IndraXattr::TreeType {
                return Err(FsError::new(
                    libc::EPERM,
                    "indra.* attributes other than tree_type are computed",
                ));
            }
            if self.vault.node(id)?.kind != NodeKind::Dir {
                return Err(FsError::new(libc::EPERM, "tree_type belongs to directories"));
            }
            let text = std::str::from_utf8(value).map_err(|_| FsError::errno(libc::EINVAL))?;
            let t = indras_artifacts::TreeType::parse(text)
                .ok_or_else(|| FsError::new(libc::EINVAL, format!("unknown tree type {text:?}")))?;
            self.vault.set_tree_type(id, t, Commit::CrashConsistent)?;
            return Ok(());
        }
        check_name(name)?;
        let mode = match flags {
            0 => XattrMode::Upsert,
            libc::XATTR_CREATE => XattrMode::Create,
            libc::XATTR_REPLACE => XattrMode::Replace,
            _ => return Err(FsError::errno(libc::EINVAL)),
        };
        self.vault.set_xattr(id, name, value, mode, Timestamp::now(), Commit::CrashConsistent)?;
        Ok(())
    }

    pub(crate) fn remove(&self, id: NodeId, name: &[u8]) -> FsResult<()> {
        match IndraXattr::parse(name) {
            // Back to the type the folder's name implies.
            Some(IndraXattr::TreeType) => {
                if self.vault.node(id)?.kind != NodeKind::Dir {
                    return Err(FsError::errno(libc::ENODATA));
                }
                let implied = self.vault.implied_tree_type(id)?;
                self.vault.set_tree_type(id, implied, Commit::CrashConsistent)?;
                return Ok(());
            }
            Some(_) => {
                return Err(FsError::new(
                    libc::EPERM,
                    "computed indra.* attributes cannot be removed",
                ));
            }
            None => {}
        }
        check_name(name)?;
        self.vault.remove_xattr(id, name, Timestamp::now(), Commit::CrashConsistent)?;
        Ok(())
    }
}
