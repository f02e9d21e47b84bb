//! The status of a vault: one typed model, built here and nowhere else.
//!
//! `.indra/status.json` serializes it, and `indras-fuse status` (text or `--json`) prints it,
//! mounted or not: a live mount builds it with what only the mount knows (`Live`), the command
//! line builds it from a store it opened itself, with those fields `null`. The command line
//! reads a live mount's status back by deserializing this same struct, so a field exists in
//! both or in neither.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indras_artifacts::{Heat, NodeId, PeerState, Timestamp, Vault};
use serde::{Deserialize, Serialize};

use crate::attention::display_heat;
use crate::error::FsResult;
use crate::network::{self, NetworkJson, NetworkState, NoNetwork};
use crate::time::rfc3339;

/// Hot artifacts listed in the status.
pub const HOT_TOP: usize = 5;

/// Facts about this mount, fixed when it starts, and its network.
#[derive(Clone, Debug)]
pub struct MountInfo {
    pub player: String,
    pub data_dir: PathBuf,
    pub mountpoint: PathBuf,
    pub mounted_at: Timestamp,
    pub pid: u32,
    /// Owner of the mount's own folders and files.
    pub uid: u32,
    pub gid: u32,
    /// The network layer's view, for the status and `.indra/` files.
    pub network: Arc<dyn NetworkState>,
}

impl MountInfo {
    /// A filesystem driven without a kernel mount (tests, tools): no mount point, started now,
    /// owned by root.
    pub fn unmounted(player: &str, data_dir: &Path) -> MountInfo {
        MountInfo {
            player: player.into(),
            data_dir: data_dir.into(),
            mountpoint: "/nonexistent".into(),
            mounted_at: Timestamp::now(),
            pid: 1,
            uid: 0,
            gid: 0,
            network: Arc::new(NoNetwork("no network: not mounted by a daemon".into())),
        }
    }
}

/// What only a live mount knows, for `Status::build`.
#[derive(Clone, Copy, Debug)]
pub struct Live<'a> {
    pub info: &'a MountInfo,
    /// Files with open handles or uncommitted writes.
    pub open_files: usize,
    /// Whether the mount records attention.
    pub attention: bool,
}

/// The status of a vault. Fields only a live mount knows are `None` (`null` in JSON) when the
/// store was read directly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub mounted: bool,
    pub mountpoint: Option<String>,
    pub player: String,
    pub player_id: String,
    pub data_dir: String,
    /// The daemon serving the mount.
    pub pid: Option<u32>,
    pub mounted_at: Option<String>,
    pub artifacts: ArtifactCounts,
    pub open_files: Option<usize>,
    pub store: StoreBytes,
    pub peers: PeerCounts,
    /// The endpoint; `None` when not mounted.
    pub network: Option<NetworkJson>,
    pub attention: AttentionStatus,
    /// The hottest artifacts, hottest first, at most `HOT_TOP`.
    pub hot: Vec<Hot>,
    pub history: HistoryStatus,
    pub snapshots: SnapshotStatus,
}

/// What file history holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryStatus {
    /// The mount's retention (`--keep`, `none` when history is off); `None` when not mounted.
    pub keep: Option<String>,
    pub versions: u64,
    /// Files with versions, deleted ones included.
    pub files: u64,
    /// Deleted files and folders history still keeps.
    pub deleted: u64,
    /// What only history holds (an upper bound: see `HistoryUsage::bytes`).
    pub bytes: u64,
    /// When history last gave way to space since the mount started, if it did.
    pub thinned: Option<ThinnedStatus>,
}

/// History gave way to space: its oldest versions went first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinnedStatus {
    pub at: String,
    pub versions: u64,
    pub bytes: u64,
}

/// What the snapshots hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub count: usize,
    /// What only snapshots hold (no file, no version).
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactCounts {
    /// Trees and leaves.
    pub total: u64,
    pub trees: u64,
    pub leaves: u64,
    pub nodes: u64,
    pub chunks: u64,
}

/// What the store holds, in bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreBytes {
    /// Every leaf's size: what the content would take without dedup.
    pub logical_bytes: u64,
    /// The chunks' sizes.
    pub chunk_bytes: u64,
    /// What the pack files take on disk (chunks, and dead ranges not yet punched).
    pub pack_bytes: u64,
    /// Content stored inline in the database.
    pub inline_bytes: u64,
    /// The metadata database's file.
    pub db_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCounts {
    /// Accepted peers (pending connection requests are not counted).
    pub known: usize,
    /// Accepted peers with a live connection now; 0 when not mounted.
    pub connected: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttentionStatus {
    /// Whether the mount records attention; `None` when not mounted.
    pub enabled: Option<bool>,
    pub events_last_hour: u64,
    pub events_stored: u64,
}

/// A hot artifact: its path relative to the mount, and its heat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hot {
    pub path: String,
    pub heat: f64,
}

impl Status {
    /// The status of `vault` at `now`, with the mount's own figures when `live`.
    pub fn build(vault: &Vault, now: Timestamp, live: Option<Live<'_>>) -> FsResult<Status> {
        let c = vault.counts()?;
        let s = vault.stats()?;
        let snap = live.map(|l| l.info.network.snapshot());
        let peers = vault.peers()?;
        let usage = vault.history_usage()?;
        let thinned = vault.thinned().map(|t| ThinnedStatus {
            at: rfc3339(t.at),
            versions: t.versions,
            bytes: t.bytes,
        });
        Ok(Status {
            mounted: live.is_some(),
            mountpoint: live.map(|l| l.info.mountpoint.display().to_string()),
            player: vault.player_name().to_owned(),
            player_id: vault.player().to_string(),
            data_dir: live.map_or(vault.dir(), |l| &l.info.data_dir).display().to_string(),
            pid: live.map(|l| l.info.pid),
            mounted_at: live.map(|l| rfc3339(l.info.mounted_at)),
            artifacts: ArtifactCounts {
                total: c.trees + c.leaves,
                trees: c.trees,
                leaves: c.leaves,
                nodes: c.nodes,
                chunks: c.chunks,
            },
            open_files: live.map(|l| l.open_files),
            store: StoreBytes {
                logical_bytes: s.logical_bytes,
                chunk_bytes: s.chunk_bytes,
                pack_bytes: s.pack_bytes,
                inline_bytes: s.inline_bytes,
                db_bytes: s.db_bytes,
            },
            peers: PeerCounts {
                known: peers.iter().filter(|p| p.state == PeerState::Accepted).count(),
                connected: snap.as_ref().map_or(0, |s| network::connected(&peers, s)),
            },
            network: snap.as_ref().map(NetworkJson::of),
            attention: AttentionStatus {
                enabled: live.map(|l| l.attention),
                events_last_hour: vault
                    .events_since(Timestamp::from_millis(now.as_millis() - 3_600_000))?,
                events_stored: c.events,
            },
            hot: hot(vault, now, HOT_TOP)?,
            history: HistoryStatus {
                keep: live.map(|_| vault.keep().to_string()),
                versions: usage.versions,
                files: usage.files,
                deleted: usage.deleted,
                bytes: usage.bytes,
                thinned,
            },
            snapshots: SnapshotStatus {
                count: vault.snapshot_list()?.len(),
                bytes: vault.snapshot_usage()?,
            },
        })
    }
}

/// Paths relative to the mount of the given nodes (`vault/...`) and mirror entries
/// (`peers/<peer>/...`, what peers share with us); those found in neither are left out.
pub(crate) fn mount_paths(
    vault: &Vault,
    nodes: &HashSet<NodeId>,
) -> FsResult<HashMap<NodeId, String>> {
    let paths = vault.paths_of(nodes)?;
    let mut out: HashMap<NodeId, String> = paths
        .into_iter()
        .map(|(n, p)| (n, format!("vault/{}", String::from_utf8_lossy(&p))))
        .collect();
    for n in nodes {
        if !out.contains_key(n)
            && let Some(p) = vault.mirror_path(*n)?
        {
            out.insert(*n, format!("peers/{}", String::from_utf8_lossy(&p)));
        }
    }
    Ok(out)
}

/// Every node and entry that has had attention, with its path in the mount, hottest first:
/// what `.indra/heat.json` shows. Heat counts every player's attention: ours, and on our
/// own nodes that of the peers we share them with (see `indras_artifacts::chain`).
pub(crate) fn heat_entries(vault: &Vault, now: Timestamp) -> FsResult<Vec<(String, Heat)>> {
    let heat = vault.heat(now)?;
    let paths = mount_paths(vault, &heat.iter().map(|h| h.node).collect())?;
    Ok(heat.into_iter().filter_map(|h| paths.get(&h.node).map(|p| (p.clone(), h))).collect())
}

/// The hottest artifacts with their paths, hottest first.
fn hot(vault: &Vault, now: Timestamp, limit: usize) -> FsResult<Vec<Hot>> {
    Ok(heat_entries(vault, now)?
        .into_iter()
        .filter(|(_, h)| h.heat > 0.0)
        .take(limit)
        .map(|(path, h)| Hot { path, heat: display_heat(h.heat) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use indras_artifacts::Options;

    /// Built from a store, the mount's own fields are null; built live, they are set; either
    /// reads back as the same struct.
    #[test]
    fn status_is_the_same_model_mounted_or_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::open(dir.path(), "alice", &Options::default()).expect("open");
        let now = Timestamp::now();
        let stored = Status::build(&vault, now, None).expect("status");
        assert!(!stored.mounted);
        assert_eq!((stored.mountpoint.as_ref(), stored.pid, stored.open_files), (None, None, None));
        assert_eq!(stored.player, "alice");
        let json = serde_json::to_value(&stored).expect("json");
        assert!(json["pid"].is_null() && json["attention"]["enabled"].is_null(), "{json}");
        let info = MountInfo::unmounted("alice", dir.path());
        let live = Live { info: &info, open_files: 3, attention: true };
        let mounted = Status::build(&vault, now, Some(live)).expect("status");
        assert_eq!((mounted.mounted, mounted.open_files, mounted.pid), (true, Some(3), Some(1)));
        assert_eq!(mounted.attention.enabled, Some(true));
        for s in [stored, mounted] {
            let text = serde_json::to_string(&s).expect("json");
            assert_eq!(serde_json::from_str::<Status>(&text).expect("parse"), s);
        }
    }
}
