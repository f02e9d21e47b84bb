//! The read-only files of `.indra/`. Each is rendered from the store when it is opened (and
//! when `stat` asks its size), so one sequence of reads sees one snapshot. Queued attention
//! events are written first, so what a file shows includes every event before the open.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use indras_artifacts::{AttentionKind, NodeId, Timestamp, Vault};
use serde::Serialize;

use crate::attention::Attention;
use crate::error::{FsError, FsResult};
use crate::inode;

/// The files of `.indra/`, in listing order.
pub const FILES: &[(u64, &str)] = &[
    (inode::ATTENTION_LOG, "attention.log"),
    (inode::HEAT_JSON, "heat.json"),
    (inode::PEERS_JSON, "peers.json"),
    (inode::PLAYER_JSON, "player.json"),
    (inode::STATUS_JSON, "status.json"),
];

/// Events `attention.log` shows at most (the newest).
pub const LOG_LINES_MAX: usize = 100_000;
/// Hot artifacts listed in the status.
pub const HOT_TOP: usize = 5;

pub fn is_file(ino: u64) -> bool {
    FILES.iter().any(|(i, _)| *i == ino)
}

/// Facts about this mount, fixed when it starts.
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
        }
    }
}

#[derive(Serialize)]
struct Counts {
    nodes: u64,
    trees: u64,
    leaves: u64,
    chunks: u64,
    attention_events: u64,
}

#[derive(Serialize)]
struct PlayerJson<'a> {
    player: &'a str,
    player_id: String,
    data_dir: String,
    mountpoint: String,
    mounted_at: String,
    pid: u32,
    counts: Counts,
}

#[derive(Serialize)]
struct StatusJson<'a> {
    mounted: bool,
    mountpoint: String,
    player: &'a str,
    player_id: String,
    data_dir: String,
    pid: u32,
    mounted_at: String,
    artifacts: ArtifactCounts,
    open_files: usize,
    peers: PeerCounts,
    attention: AttentionStatus,
    hot: Vec<Hot>,
}

#[derive(Serialize)]
struct PeerCounts {
    known: usize,
    connected: usize,
}

#[derive(Serialize)]
struct AttentionStatus {
    enabled: bool,
    events_last_hour: u64,
    events_stored: u64,
}

/// A hot artifact: its path relative to the mount, and its heat.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Hot {
    pub path: String,
    pub heat: f64,
}

#[derive(Serialize)]
struct HeatEntry {
    heat: f64,
    unique_peers: usize,
    dwell_ms: u64,
    opens: u64,
    last_seen: String,
}

#[derive(Serialize)]
struct LogLine {
    seq: u64,
    at: String,
    kind: &'static str,
    player: String,
    node: Option<u64>,
    path: Option<String>,
    from: Option<String>,
    to: Option<String>,
    dwell_ms: u64,
}

#[derive(Debug, Serialize)]
pub struct ArtifactCounts {
    pub total: u64,
    pub trees: u64,
    pub leaves: u64,
    pub nodes: u64,
    pub chunks: u64,
}

#[derive(Serialize)]
struct PeerJson {
    id: String,
    display_name: String,
    added_at: String,
}

fn counts(vault: &Vault) -> FsResult<Counts> {
    let c = vault.counts()?;
    Ok(Counts {
        nodes: c.nodes,
        trees: c.trees,
        leaves: c.leaves,
        chunks: c.chunks,
        attention_events: c.events,
    })
}

/// Paths relative to the mount (`vault/...`) of the given nodes.
fn mount_paths(
    vault: &Vault,
    nodes: &HashSet<NodeId>,
) -> FsResult<std::collections::HashMap<NodeId, String>> {
    let paths = vault.paths_of(nodes)?;
    Ok(paths
        .into_iter()
        .map(|(n, p)| (n, format!("vault/{}", String::from_utf8_lossy(&p))))
        .collect())
}

/// Heat for display: four decimals, rounded down, so a value below 1 never shows as 1.
pub fn display_heat(x: f64) -> f64 {
    (x * 10_000.0).floor() / 10_000.0
}

/// The hottest artifacts with their paths, hottest first.
pub fn hot(vault: &Vault, now: Timestamp, limit: usize) -> FsResult<Vec<Hot>> {
    let heat: Vec<_> = vault.heat(now)?.into_iter().filter(|h| h.heat > 0.0).take(limit).collect();
    let paths = mount_paths(vault, &heat.iter().map(|h| h.node).collect())?;
    Ok(heat
        .into_iter()
        .filter_map(|h| {
            paths.get(&h.node).map(|p| Hot { path: p.clone(), heat: display_heat(h.heat) })
        })
        .collect())
}

fn heat_json(vault: &Vault, now: Timestamp) -> FsResult<Vec<u8>> {
    let heat = vault.heat(now)?;
    let paths = mount_paths(vault, &heat.iter().map(|h| h.node).collect())?;
    let mut map = serde_json::Map::new();
    for h in heat {
        let Some(path) = paths.get(&h.node) else { continue };
        let entry = HeatEntry {
            heat: display_heat(h.heat),
            unique_peers: h.unique_players,
            dwell_ms: h.dwell_ms,
            opens: h.opens,
            last_seen: rfc3339(h.last_seen),
        };
        let value =
            serde_json::to_value(entry).map_err(|e| FsError::new(libc::EIO, e.to_string()))?;
        map.insert(path.clone(), value);
    }
    serde_json::to_vec_pretty(&map).map_err(|e| FsError::new(libc::EIO, e.to_string()))
}

fn attention_log(vault: &Vault) -> FsResult<Vec<u8>> {
    let events = vault.recent_events(LOG_LINES_MAX)?;
    let paths = mount_paths(vault, &events.iter().filter_map(|(_, e)| e.node).collect())?;
    let mut out = Vec::new();
    for (seq, e) in events {
        let line = LogLine {
            seq,
            at: rfc3339(e.at),
            kind: match e.kind {
                AttentionKind::Navigate => "navigate_to",
                AttentionKind::Back => "navigate_back",
                AttentionKind::Scan => "scan",
            },
            player: e.player.to_string(),
            node: e.node.map(|n| n.0),
            path: e.node.and_then(|n| paths.get(&n).cloned()),
            from: e.from.map(|a| a.to_string()),
            to: e.to.map(|a| a.to_string()),
            dwell_ms: e.dwell_ms,
        };
        serde_json::to_writer(&mut out, &line)
            .map_err(|e| FsError::new(libc::EIO, e.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Renders the virtual file `ino`: JSON pretty-printed and newline-terminated, the log as
/// JSON lines.
pub fn render(
    ino: u64,
    vault: &Vault,
    info: &MountInfo,
    attention: &Attention,
    open_files: usize,
) -> FsResult<Vec<u8>> {
    attention.flush()?;
    let now = attention.now();
    if ino == inode::ATTENTION_LOG {
        return attention_log(vault);
    }
    let mut out = match ino {
        inode::HEAT_JSON => Ok(heat_json(vault, now)?),
        inode::PLAYER_JSON => serde_json::to_vec_pretty(&PlayerJson {
            player: &info.player,
            player_id: vault.player().to_string(),
            data_dir: info.data_dir.display().to_string(),
            mountpoint: info.mountpoint.display().to_string(),
            mounted_at: rfc3339(info.mounted_at),
            pid: info.pid,
            counts: counts(vault)?,
        }),
        inode::STATUS_JSON => {
            let c = vault.counts()?;
            serde_json::to_vec_pretty(&StatusJson {
                mounted: true,
                mountpoint: info.mountpoint.display().to_string(),
                player: &info.player,
                player_id: vault.player().to_string(),
                data_dir: info.data_dir.display().to_string(),
                pid: info.pid,
                mounted_at: rfc3339(info.mounted_at),
                artifacts: ArtifactCounts {
                    total: c.trees + c.leaves,
                    trees: c.trees,
                    leaves: c.leaves,
                    nodes: c.nodes,
                    chunks: c.chunks,
                },
                open_files,
                peers: PeerCounts { known: vault.peers()?.len(), connected: 0 },
                attention: AttentionStatus {
                    enabled: attention.enabled(),
                    events_last_hour: vault
                        .events_since(Timestamp::from_millis(now.as_millis() - 3_600_000))?,
                    events_stored: c.events,
                },
                hot: hot(vault, now, HOT_TOP)?,
            })
        }
        inode::PEERS_JSON => {
            let peers: Vec<PeerJson> = vault
                .peers()?
                .into_iter()
                .map(|p| PeerJson {
                    id: p.id.to_string(),
                    display_name: p.display_name,
                    added_at: rfc3339(p.added_at),
                })
                .collect();
            serde_json::to_vec_pretty(&peers)
        }
        _ => return Err(FsError::errno(libc::ENOENT)),
    }
    .map_err(|e| FsError::new(libc::EIO, e.to_string()))?;
    let _ = writeln!(out);
    Ok(out)
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-21T12:00:00.123Z`.
pub fn rfc3339(t: Timestamp) -> String {
    let secs = t.secs;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        t.nanos / 1_000_000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(Timestamp::from_millis(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(Timestamp::from_millis(951_782_400_000)), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(Timestamp::from_millis(1_795_260_061_250)), "2026-11-21T11:21:01.250Z");
    }
}
