//! The read-only files of `.indra/`. Each is rendered from the store when it is opened (and
//! when `stat` asks its size), so one sequence of reads sees one snapshot.

use std::path::PathBuf;

use indras_artifacts::{Timestamp, Vault};
use serde::Serialize;

use crate::error::FsResult;
use crate::inode;

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
    peers: usize,
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

/// Renders the virtual file `ino`, pretty-printed and newline-terminated.
pub fn render(ino: u64, vault: &Vault, info: &MountInfo, open_files: usize) -> FsResult<Vec<u8>> {
    let mut out = match ino {
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
                peers: vault.peers()?.len(),
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
        _ => return Err(crate::error::FsError::errno(libc::ENOENT)),
    }
    .map_err(|e| crate::error::FsError::new(libc::EIO, e.to_string()))?;
    out.push(b'\n');
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
