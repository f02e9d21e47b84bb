//! What a live mount answers on its control socket: the one place each request is handled.
//!
//! Invariants: a status is built the way `.indra/status.json` is (queued attention written
//! first, then `Status::build` at the attention clock's now with the mount's own figures), so
//! the two never disagree on what they show; `unmount` only asks the mount to stop (the same
//! stop a SIGTERM asks for), after its answer is written, and never waits for it here. The
//! peer requests go to the network layer, each bounded by its own timeout; a mount without
//! one (`--no-network`, or it could not start) answers them with why. History, restores and
//! snapshots run `crate::history` on the mount's vault, as the command line does on a store;
//! a restore answers only once the kernel has dropped what it cached of the file (or a
//! bounded wait has passed), so the next read sees the restored content.

use std::sync::Arc;
use std::time::Duration;

use indras_fuse::network::{peers_json, realms_json};
use indras_fuse::status::Live;
use indras_fuse::{FsResult, Invalidator, Status, StopHandle, VaultFs};
use indras_net::{Net, NetError};

use std::collections::HashMap;

use indras_artifacts::{
    AccessMode, Commit, MirrorEntry, NodeId, Peer, PeerState, PlayerId, RealmRow, Timestamp,
    validate_realm_name,
};
use indras_share::Share;

use super::protocol::{GrantJson, Request, Response, ShareMode};
use super::server::{Config, ControlServer, Handler, Reply, StartError};
use crate::history::{self, Pick};

/// How long `peer add` may take to reach the inviter and hear back.
const ADD_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a restore waits for the kernel to drop what it cached of the file.
const INVALIDATE_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers for one live mount.
#[derive(Debug)]
pub struct MountHandler {
    fs: Arc<VaultFs>,
    stop: StopHandle,
    net: Arc<Net>,
    share: Arc<Share>,
    invalidator: Invalidator,
}

impl MountHandler {
    /// Restores a file (or brings a deleted one back), then has the kernel drop what it cached
    /// of it: the file's pages and attributes, or, for a new entry, the name in its folder
    /// (a cached "no such file") and the folder's attributes.
    fn restore(
        &self,
        path: &[String],
        pick: Pick,
        to: Option<&[String]>,
    ) -> Result<String, String> {
        // Writes still buffered in open files are committed first (as versions of their own),
        // so that the restore lands on top of them and nothing buffered overwrites it.
        self.fs.commit_all().map_err(|e| format!("committing open files first: {e}"))?;
        let r = history::restore(self.fs.vault(), path, pick, to, Timestamp::now())?;
        let sent = if r.new_entry {
            self.invalidator.vault_changed(
                &[(r.parent.0, r.name.clone())],
                &[],
                &[r.parent.0],
                INVALIDATE_TIMEOUT,
            )
        } else {
            self.invalidator.vault_changed(&[], &[r.node.0], &[], INVALIDATE_TIMEOUT)
        };
        if !sent {
            tracing::warn!(
                node = r.node.0,
                "the kernel's caches of a restored file were not dropped in time"
            );
        }
        Ok(r.message)
    }

    fn peers(&self) -> Response {
        let snap = self.fs.info().network.snapshot();
        match peers_json(self.fs.vault(), &snap) {
            Ok(p) => Response::Peers(p),
            Err(e) => Response::error(format!("listing peers failed: {e}")),
        }
    }
}

impl MountHandler {
    /// The node at `path` (names from the mount's root: `vault/...`), or the mirror entry
    /// (`peers/...`).
    fn resolve(&self, path: &[String]) -> Result<NodeId, String> {
        let vault = self.fs.vault();
        let missing = || format!("{}: no such file or folder", shown(path));
        match path.split_first() {
            Some((top, rest)) if top == "vault" => {
                let mut at = NodeId::ROOT;
                for name in rest {
                    at = vault
                        .lookup(at, name.as_bytes())
                        .map_err(|e| format!("{}: {e}", shown(path)))?
                        .id;
                }
                Ok(at)
            }
            Some((top, rest)) if top == "peers" => {
                let mut at = MirrorEntry::TOP;
                for name in rest {
                    at = vault
                        .mirror_lookup(at, name.as_bytes())
                        .map_err(|e| e.to_string())?
                        .ok_or_else(missing)?
                        .id;
                }
                Ok(at)
            }
            _ => Err(missing()),
        }
    }

    /// Where a node or mirror entry is, as `grants` shows it.
    fn path_of(&self, id: NodeId, vault_paths: &HashMap<NodeId, Vec<u8>>) -> String {
        if let Some(p) = vault_paths.get(&id) {
            return String::from_utf8_lossy(p).into_owned();
        }
        match self.fs.vault().mirror_path(id) {
            Ok(Some(p)) => format!("peers/{}", String::from_utf8_lossy(&p)),
            _ => format!("{id:?} (gone)"),
        }
    }

    /// Our accepted peers named in `names`, or why one is not.
    fn peers_named(&self, names: &[String]) -> Result<Vec<Peer>, String> {
        let peers = self.fs.vault().peers().map_err(|e| e.to_string())?;
        names
            .iter()
            .map(|n| {
                peers
                    .iter()
                    .find(|p| p.name == *n && p.state == PeerState::Accepted)
                    .cloned()
                    .ok_or_else(|| format!("no peer named {n} (see `indras-fuse peer list`)"))
            })
            .collect()
    }

    /// The peers `with` names: our names for them, or `realm:NAME` for every other member
    /// of realm NAME who is our peer. Also returns the members who are not.
    fn grantees(&self, with: &[String]) -> Result<(Vec<Peer>, Vec<String>), String> {
        let mut names = Vec::new();
        let mut unreachable = Vec::new();
        for w in with {
            match w.strip_prefix("realm:") {
                Some(realm) => {
                    let row = self.realm_named(realm)?;
                    let peers = self.fs.vault().peers().map_err(|e| e.to_string())?;
                    for m in row.realm.others(self.fs.vault().player()) {
                        match peers.iter().find(|p| p.id == m && p.state == PeerState::Accepted) {
                            Some(p) => names.push(p.name.clone()),
                            None => unreachable.push(self.name_of(m)),
                        }
                    }
                }
                None => names.push(w.clone()),
            }
        }
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err("no peer to share with".into());
        }
        Ok((self.peers_named(&names)?, unreachable))
    }

    fn realm_named(&self, name: &str) -> Result<RealmRow, String> {
        self.fs
            .vault()
            .realm_by_label(name)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no realm named {name} (see `indras-fuse realm list`)"))
    }

    fn share(&self, path: &[String], with: &[String], mode: ShareMode) -> Result<String, String> {
        let node = self.resolve(path)?;
        let (peers, unreachable) = self.grantees(with)?;
        if mode == ShareMode::Transfer
            && (peers.len() != 1 || with.iter().any(|w| w.starts_with("realm:")))
        {
            return Err("a transfer goes to exactly one peer".into());
        }
        let now = Timestamp::now();
        let mode = match mode {
            ShareMode::Revocable => AccessMode::Revocable,
            ShareMode::Permanent => AccessMode::Permanent,
            ShareMode::Transfer => AccessMode::Transfer,
            ShareMode::Timed { until_secs } => {
                if until_secs <= now.secs {
                    return Err("a timed grant must end in the future".into());
                }
                AccessMode::Timed { expires_at: Timestamp { secs: until_secs, nanos: 0 } }
            }
        };
        for p in &peers {
            self.fs.vault().grant(node, p.id, mode, now, Commit::Durable).map_err(|e| {
                format!("sharing {} with {}: {}", shown(path), p.name, grant_error(&e))
            })?;
            self.share.grants_changed(p.id);
        }
        let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
        let until =
            mode.expires_at().map(|t| format!(" until {}", t.rfc3339())).unwrap_or_default();
        let skipped = if unreachable.is_empty() {
            String::new()
        } else {
            format!("; not shared with {}, who are not peers of yours", unreachable.join(", "))
        };
        Ok(format!(
            "shared {} with {} ({}{until}){skipped}",
            shown(path),
            names.join(", "),
            mode.name()
        ))
    }

    fn realm_create(&self, name: &str, members: &[String]) -> Result<String, String> {
        validate_realm_name(name)?;
        let peers = self.peers_named(members)?;
        let ids: Vec<PlayerId> = peers.iter().map(|p| p.id).collect();
        let row = self
            .fs
            .vault()
            .realm_create(name, &ids, Timestamp::now())
            .map_err(|e| grant_error(&e))?;
        self.share.realms_changed(&[]);
        let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
        Ok(format!("created realm {} (id {}) with {}", row.label, row.realm.id, names.join(", ")))
    }

    /// Adds (`add`) or removes `peer` from realm `name`, which we created.
    fn realm_member(&self, name: &str, peer: &str, add: bool) -> Result<String, String> {
        let row = self.realm_named(name)?;
        let me = self.fs.vault().player();
        if row.realm.creator != me {
            return Err(format!(
                "only the realm's creator ({}) changes its members",
                self.name_of(row.realm.creator)
            ));
        }
        let mut members = row.realm.members.clone();
        let id = if add {
            let p = self.peers_named(&[peer.to_owned()])?.remove(0);
            if members.contains(&p.id) {
                return Err(format!("{peer} is a member of {name} already"));
            }
            members.push(p.id);
            p.id
        } else {
            let Some(id) = members.iter().copied().find(|m| *m != me && self.name_of(*m) == peer)
            else {
                return Err(format!("{peer} is not a member of {name}"));
            };
            members.retain(|m| *m != id);
            id
        };
        self.fs.vault().realm_set_members(row.realm.id, members).map_err(|e| grant_error(&e))?;
        self.share.realms_changed(&[id]);
        Ok(if add {
            format!("added {peer} to realm {name}")
        } else {
            format!("removed {peer} from realm {name}")
        })
    }

    fn realm_leave(&self, name: &str) -> Result<String, String> {
        let row = self.realm_named(name)?;
        let vault = self.fs.vault();
        vault.realm_leave(row.realm.id).map_err(|e| e.to_string())?;
        if row.realm.creator == vault.player() {
            // Its members no longer find it offered: it goes from every one of them.
            self.share.realms_changed(&row.realm.members);
            Ok(format!("left realm {name}, which you created: it is dissolved for every member"))
        } else {
            self.share.realm_left(row.realm.creator);
            Ok(format!("left realm {name}"))
        }
    }

    fn recall(&self, path: &[String], from: &[String]) -> Result<String, String> {
        let node = self.resolve(path)?;
        let vault = self.fs.vault();
        let grants = vault.grants(Some(node)).map_err(|e| e.to_string())?;
        let targets: Vec<PlayerId> = if from.is_empty() {
            grants.iter().map(|g| g.grantee).collect()
        } else {
            self.peers_named(from)?.iter().map(|p| p.id).collect()
        };
        let mut recalled = Vec::new();
        for id in targets {
            match vault.revoke(node, id, Commit::Durable) {
                Ok(Some(_)) => {
                    self.share.grants_changed(id);
                    recalled.push(self.name_of(id));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(format!(
                        "recalling {} from {}: {}",
                        shown(path),
                        self.name_of(id),
                        grant_error(&e)
                    ));
                }
            }
        }
        if recalled.is_empty() {
            return Err(format!(
                "{} is not shared{}",
                shown(path),
                if from.is_empty() { String::new() } else { format!(" with {}", from.join(", ")) }
            ));
        }
        recalled.sort();
        Ok(format!("recalled {} from {}", shown(path), recalled.join(", ")))
    }

    fn name_of(&self, id: PlayerId) -> String {
        match self.fs.vault().peer(id) {
            Ok(Some(p)) => p.name,
            _ => id.to_string(),
        }
    }

    fn grants(&self, path: Option<&[String]>) -> Result<Vec<GrantJson>, String> {
        let vault = self.fs.vault();
        let node = path.map(|p| self.resolve(p)).transpose()?;
        let grants = vault.grants(node).map_err(|e| e.to_string())?;
        let wanted: std::collections::HashSet<NodeId> = grants.iter().map(|g| g.node).collect();
        let paths = vault.paths_of(&wanted).map_err(|e| e.to_string())?;
        Ok(grants
            .into_iter()
            .map(|g| GrantJson {
                path: self.path_of(g.node, &paths),
                peer: self.name_of(g.grantee),
                player_id: g.grantee.to_string(),
                mode: g.mode.name().to_owned(),
                granted_at: g.granted_at.rfc3339(),
                expires_at: g.mode.expires_at().map(|t| t.rfc3339()),
            })
            .collect())
    }
}

/// A path from the mount's root as the user knows it: a vault path from the vault's root
/// (`notes/ideas.md`), anything else whole (`peers/alice/photo.jpg`).
fn shown(path: &[String]) -> String {
    match path.split_first() {
        Some((top, rest)) if top == "vault" => rest.join("/"),
        _ => path.join("/"),
    }
}

/// A store error from granting or recalling, in words for the user.
fn grant_error(e: &indras_artifacts::Error) -> String {
    match e {
        indras_artifacts::Error::NotPermitted(_, why) => (*why).to_owned(),
        other => other.to_string(),
    }
}

fn done(r: Result<String, String>) -> Response {
    match r {
        Ok(message) => Response::Done { message },
        Err(e) => Response::error(e),
    }
}

fn net_error(e: &NetError) -> Response {
    Response::error(e.to_string())
}

impl Handler for MountHandler {
    fn handle(&self, request: Request) -> Reply {
        // What was written before the command is part of what it sees or shares, even when
        // the kernel's RELEASE, which commits it, is still on its way.
        if !matches!(request, Request::Unmount)
            && let Err(e) = self.fs.commit_pending()
        {
            tracing::warn!(error = %e, "committing pending writes before a command failed");
        }
        match request {
            Request::Status => Reply::new(match live_status(&self.fs) {
                Ok(s) => Response::Status(Box::new(s)),
                Err(e) => Response::error(format!("building the status failed: {e}")),
            }),
            Request::Unmount => {
                tracing::info!("unmount asked over the control socket");
                let info = self.fs.info();
                let stop = self.stop.clone();
                Reply::then(
                    Response::Unmounting {
                        pid: info.pid,
                        mountpoint: info.mountpoint.display().to_string(),
                    },
                    move || stop.stop(),
                )
            }
            Request::Invite { valid_secs } => {
                Reply::new(match self.net.invite(Duration::from_secs(valid_secs)) {
                    Ok(ticket) => Response::Ticket { ticket, valid_secs },
                    Err(e) => net_error(&e),
                })
            }
            Request::PeerAdd { name, ticket } => {
                Reply::new(match self.net.add_peer(&name, &ticket, ADD_TIMEOUT) {
                    Ok(p) => Response::Done {
                        message: format!(
                            "peered with {} (player {}) as {name}",
                            p.their_name, p.id
                        ),
                    },
                    Err(e) => net_error(&e),
                })
            }
            Request::PeerList => Reply::new(self.peers()),
            Request::PeerAccept { name } => Reply::new(match self.net.accept(&name) {
                Ok(p) => Response::Done { message: format!("accepted {name} (player {})", p.id) },
                Err(e) => net_error(&e),
            }),
            Request::PeerReject { name } => Reply::new(match self.net.reject(&name) {
                Ok(()) => Response::Done { message: format!("rejected {name}") },
                Err(e) => net_error(&e),
            }),
            Request::PeerRemove { name } => {
                let id = self
                    .peers_named(std::slice::from_ref(&name))
                    .ok()
                    .and_then(|p| p.first().map(|p| p.id));
                Reply::new(match self.net.remove(&name) {
                    Ok(()) => {
                        if let Some(id) = id {
                            self.share.peer_removed(id);
                        }
                        Response::Done { message: format!("removed {name}") }
                    }
                    Err(e) => net_error(&e),
                })
            }
            Request::Share { path, with, mode } => {
                Reply::new(match self.share(&path, &with, mode) {
                    Ok(message) => Response::Done { message },
                    Err(e) => Response::error(e),
                })
            }
            Request::Recall { path, from } => Reply::new(match self.recall(&path, &from) {
                Ok(message) => Response::Done { message },
                Err(e) => Response::error(e),
            }),
            Request::Grants { path } => Reply::new(match self.grants(path.as_deref()) {
                Ok(g) => Response::Grants(g),
                Err(e) => Response::error(e),
            }),
            Request::RealmCreate { name, members } => {
                Reply::new(done(self.realm_create(&name, &members)))
            }
            Request::RealmList => {
                let snap = self.fs.info().network.snapshot();
                Reply::new(match realms_json(self.fs.vault(), &snap, Timestamp::now()) {
                    Ok(r) => Response::Realms(r),
                    Err(e) => Response::error(format!("listing realms failed: {e}")),
                })
            }
            Request::RealmAdd { name, peer } => {
                Reply::new(done(self.realm_member(&name, &peer, true)))
            }
            Request::RealmRemove { name, peer } => {
                Reply::new(done(self.realm_member(&name, &peer, false)))
            }
            Request::RealmLeave { name } => Reply::new(done(self.realm_leave(&name))),
            Request::History { path } => {
                Reply::new(match history::history(self.fs.vault(), &path) {
                    Ok(v) => Response::History(v),
                    Err(e) => Response::error(e),
                })
            }
            Request::Restore { path, pick, to } => {
                Reply::new(done(self.restore(&path, pick, to.as_deref())))
            }
            Request::SnapshotCreate { name } => {
                Reply::new(done(history::snapshot_create(self.fs.vault(), &name, Timestamp::now())))
            }
            Request::SnapshotList => Reply::new(match history::snapshot_list(self.fs.vault()) {
                Ok(s) => Response::Snapshots(s),
                Err(e) => Response::error(e),
            }),
            Request::SnapshotDelete { name } => {
                Reply::new(done(history::snapshot_delete(self.fs.vault(), &name)))
            }
        }
    }
}

/// Listens on the control socket of the mount `fs` serves, for its owner and root.
pub fn serve(
    fs: &Arc<VaultFs>,
    stop: StopHandle,
    invalidator: Invalidator,
    net: Arc<Net>,
    share: Arc<Share>,
) -> Result<ControlServer, StartError> {
    let info = fs.info();
    let handler = Arc::new(MountHandler { fs: fs.clone(), stop, net, share, invalidator });
    ControlServer::start(&info.data_dir, Config::new(info.uid), handler)
}

/// The mount's status, as `.indra/status.json` shows it.
pub fn live_status(fs: &VaultFs) -> FsResult<Status> {
    fs.attention().flush()?;
    let live =
        Live { info: fs.info(), open_files: fs.open_files(), attention: fs.attention().enabled() };
    Status::build(fs.vault(), fs.attention().now(), Some(live))
}

#[cfg(test)]
mod tests {
    use super::*;
    use indras_artifacts::{Options, Timestamp, Vault};
    use indras_fuse::attention::{AttentionConfig, ManualClock};
    use indras_fuse::{Ctx, MountInfo, inode};

    const CTX: Ctx = Ctx { uid: 0, gid: 0, pid: 1 };

    /// The status over the socket and `.indra/status.json` are the same, open files included,
    /// and both count what was written and not yet committed.
    #[test]
    fn the_status_is_built_as_status_json_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Arc::new(Vault::open(dir.path(), "alice", &Options::default()).expect("open"));
        let clock = Arc::new(ManualClock::new(Timestamp::now()));
        let info = MountInfo::unmounted("alice", dir.path());
        let fs = VaultFs::with_attention(vault, info, clock.clone(), AttentionConfig::default())
            .expect("fs");
        let (_, opened) =
            fs.create(CTX, inode::VAULT, b"a.txt", 0o644, libc::O_RDWR).expect("create");
        fs.write(opened.fh, 0, b"hello").expect("write");
        clock.advance_ms(1_000);
        let ino = fs.lookup(inode::INDRA, b"status.json").expect("lookup").ino;
        let h = fs.open(CTX, ino, libc::O_RDONLY).expect("open status.json");
        let text = fs.read(ino, h.fh, 0, 1 << 20).expect("read");
        let shown: Status = serde_json::from_slice(&text).expect("parse");
        let built = live_status(&fs).expect("status");
        assert_eq!(built, shown);
        // Both committed what was written first: the empty file's leaf, then "hello"'s.
        assert_eq!((built.open_files, built.artifacts.leaves), (Some(1), 2));
        fs.release(h.fh).expect("release");
        fs.release(opened.fh).expect("release");
        assert_eq!(live_status(&fs).expect("status").open_files, Some(0));
    }
}
