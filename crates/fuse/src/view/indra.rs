//! `.indra/` (inode 5) and its read-only files (6..=11). Each file is rendered from the store
//! when it is opened, and the handle keeps that rendering, so one sequence of reads sees one
//! snapshot. Queued attention events are written first, so what a file shows includes every
//! event before the open; opening these files is not attention itself.
//!
//! A file's size is only known once rendered: `stat` reports the size of a rendering at most a
//! second old (kept in `rendered`, a leaf lock), and reads use direct I/O, so a size that is a
//! moment old never cuts a read short. The kernel caches none of these attributes.
//!
//! The files: JSON pretty-printed and newline-terminated, the log as JSON lines.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indras_artifacts::{AttentionKind, NodeKind, Timestamp, Vault};
use serde::Serialize;

use super::common::{Found, NO_TTL, ReadOnlyFile, ReadOnlyView, View, fixed_attr, fixed_listing};
use crate::attention::{Attention, display_heat};
use crate::error::{FsError, FsResult};
use crate::inode;
use crate::network;
use crate::open_files::{OpenFiles, lock};
use crate::status::{Live, MountInfo, Status, heat_entries, mount_paths};
use crate::time::rfc3339;
use crate::types::{Attr, DirItem};

/// The files of `.indra/`, in listing order.
const FILES: [(u64, &str); 6] = [
    (inode::ATTENTION_LOG, "attention.log"),
    (inode::HEAT_JSON, "heat.json"),
    (inode::PEERS_JSON, "peers.json"),
    (inode::PLAYER_JSON, "player.json"),
    (inode::STATUS_JSON, "status.json"),
    (inode::SYNC_STATUS_JSON, "sync-status.json"),
];

/// Events `attention.log` shows at most (the newest).
const LOG_LINES_MAX: usize = 100_000;

/// How long a rendered size answers `stat`.
const SIZE_FRESH: Duration = Duration::from_secs(1);

fn is_file(ino: u64) -> bool {
    FILES.iter().any(|(i, _)| *i == ino)
}

#[derive(Debug)]
pub(crate) struct IndraView {
    vault: Arc<Vault>,
    info: Arc<MountInfo>,
    attention: Arc<Attention>,
    /// For the status's count of open files.
    open: Arc<OpenFiles>,
    /// When each file was last rendered, and its size then.
    rendered: Mutex<HashMap<u64, (Instant, u64)>>,
}

impl IndraView {
    pub(crate) fn new(
        vault: Arc<Vault>,
        info: Arc<MountInfo>,
        attention: Arc<Attention>,
        open: Arc<OpenFiles>,
    ) -> Self {
        IndraView { vault, info, attention, open, rendered: Mutex::new(HashMap::new()) }
    }

    fn render(&self, ino: u64) -> FsResult<Vec<u8>> {
        let data = self.render_file(ino)?;
        lock(&self.rendered).insert(ino, (Instant::now(), data.len() as u64));
        Ok(data)
    }

    /// The size of a file as last rendered within `SIZE_FRESH`, else freshly rendered.
    fn rendered_size(&self, ino: u64) -> FsResult<u64> {
        if let Some((at, size)) = lock(&self.rendered).get(&ino)
            && at.elapsed() < SIZE_FRESH
        {
            return Ok(*size);
        }
        Ok(self.render(ino)?.len() as u64)
    }

    fn render_file(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.attention.flush()?;
        let now = self.attention.now();
        let vault = &*self.vault;
        if ino == inode::ATTENTION_LOG {
            return attention_log(vault);
        }
        let mut out = match ino {
            inode::HEAT_JSON => heat_json(vault, now)?,
            inode::PLAYER_JSON => json(&PlayerJson {
                player: &self.info.player,
                player_id: vault.player().to_string(),
                data_dir: self.info.data_dir.display().to_string(),
                mountpoint: self.info.mountpoint.display().to_string(),
                mounted_at: rfc3339(self.info.mounted_at),
                pid: self.info.pid,
                counts: counts(vault)?,
            })?,
            inode::STATUS_JSON => {
                let live = Live {
                    info: &self.info,
                    open_files: self.open.len(),
                    attention: self.attention.enabled(),
                };
                json(&Status::build(vault, now, Some(live))?)?
            }
            inode::PEERS_JSON => json(&network::peers_json(vault, &self.info.network.snapshot())?)?,
            inode::SYNC_STATUS_JSON => {
                json(&network::sync_json(vault, &self.info.network.snapshot())?)?
            }
            _ => return Err(FsError::errno(libc::ENOENT)),
        };
        let _ = writeln!(out);
        Ok(out)
    }
}

impl View for IndraView {
    fn getattr(&self, ino: u64) -> FsResult<Attr> {
        match ino {
            inode::INDRA => Ok(fixed_attr(&self.info, ino, NodeKind::Dir, 0o555, 2, 0)),
            i if is_file(i) => {
                Ok(fixed_attr(&self.info, i, NodeKind::File, 0o444, 1, self.rendered_size(i)?))
            }
            _ => Err(FsError::errno(libc::ENOENT)),
        }
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Found> {
        if parent != inode::INDRA {
            return Err(FsError::errno(libc::ENOTDIR));
        }
        let ino = FILES
            .iter()
            .find(|(_, n)| n.as_bytes() == name)
            .map(|(i, _)| *i)
            .ok_or_else(|| FsError::errno(libc::ENOENT))?;
        Ok(Found::Entry(self.getattr(ino)?))
    }

    fn readdir(&self, dir: u64, offset: u64, _limit: usize) -> FsResult<Vec<DirItem>> {
        if dir != inode::INDRA {
            return Err(FsError::errno(libc::ENOTDIR));
        }
        let files = FILES.iter().map(|(ino, name)| (*ino, NodeKind::File, name.as_bytes()));
        Ok(fixed_listing(dir, inode::ROOT, offset, files))
    }

    fn ttl(&self, _ino: u64) -> Duration {
        NO_TTL
    }
}

impl ReadOnlyView for IndraView {
    fn open(&self, ino: u64) -> FsResult<ReadOnlyFile> {
        if ino == inode::INDRA {
            return Err(FsError::errno(libc::EISDIR));
        }
        Ok(ReadOnlyFile::Rendered(self.render(ino)?.into()))
    }
}

fn json(value: &impl Serialize) -> FsResult<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| FsError::new(libc::EIO, e.to_string()))
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

fn heat_json(vault: &Vault, now: Timestamp) -> FsResult<Vec<u8>> {
    let mut map = serde_json::Map::new();
    for (path, h) in heat_entries(vault, now)? {
        let entry = HeatEntry {
            heat: display_heat(h.heat),
            unique_peers: h.unique_players,
            dwell_ms: h.dwell_ms,
            opens: h.opens,
            last_seen: rfc3339(h.last_seen),
        };
        let value =
            serde_json::to_value(entry).map_err(|e| FsError::new(libc::EIO, e.to_string()))?;
        map.insert(path, value);
    }
    json(&map)
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
