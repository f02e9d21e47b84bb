//! `.indra/` (inode 5), its read-only files (6..=13), and its folders `history/` (14) and
//! `snapshots/` (15), each the root of its own view (`history`, `snapshots`). Each file is rendered from the store
//! when it is opened, and the handle keeps that rendering, so one sequence of reads sees one
//! snapshot. Queued attention events are written first, so what a file shows includes every
//! event before the open; opening these files is not attention itself.
//!
//! A file's size is only known once rendered. A rendering is kept (in `rendered`, a leaf lock)
//! and serves both `stat` and `open` while the store is unchanged (`Vault::write_count`) and
//! it is under a second old, so the size a program stats is the size of what it then reads
//! (a browser reads exactly the size it was told); after any change both render afresh. The
//! kernel caches none of these attributes, and reads use direct I/O.
//!
//! The files: JSON pretty-printed and newline-terminated, the log as JSON lines, and
//! `heat.html`, one self-contained page (see `heat`).

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indras_artifacts::{AttentionKind, NodeKind, Vault};
use serde::Serialize;

use super::common::{
    Found, NO_TTL, ReadOnlyFile, ReadOnlyView, Stamped, TTL, View, fixed_attr, fixed_listing,
};
use super::heat;
use crate::attention::Attention;
use crate::error::{FsError, FsResult};
use crate::inode;
use crate::network;
use crate::open_files::{OpenFiles, lock};
use crate::status::{Live, MountInfo, Status, mount_paths};
use crate::time::rfc3339;
use crate::types::{Attr, DirItem};

/// The files of `.indra/`, in listing order.
const FILES: [(u64, &str); 8] = [
    (inode::ATTENTION_LOG, "attention.log"),
    (inode::HEAT_HTML, "heat.html"),
    (inode::HEAT_JSON, "heat.json"),
    (inode::PEERS_JSON, "peers.json"),
    (inode::PLAYER_JSON, "player.json"),
    (inode::REALMS_JSON, "realms.json"),
    (inode::STATUS_JSON, "status.json"),
    (inode::SYNC_STATUS_JSON, "sync-status.json"),
];

/// The folders of `.indra/`, each the root of its own view, listed after the files.
const FOLDERS: [(u64, &str); 2] = [(inode::HISTORY, "history"), (inode::SNAPSHOTS, "snapshots")];

/// Events `attention.log` shows at most (the newest).
const LOG_LINES_MAX: usize = 100_000;

/// How long a rendering of an unchanged store answers `stat` and `open` (the figures that
/// depend on the time alone, such as heat's decay, move that little).
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
    /// Each file's last rendering: when, at which store write count, and what.
    rendered: Mutex<HashMap<u64, Stamped<Arc<[u8]>>>>,
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

    /// The file as it is now: the kept rendering while the store is unchanged and it is
    /// fresh, else a new one (kept in turn).
    fn render(&self, ino: u64) -> FsResult<Arc<[u8]>> {
        // Every write so far, and queued attention, are part of the store's state: committed
        // and written first, so they count.
        self.open.commit_pending()?;
        self.attention.flush()?;
        let writes = self.vault.write_count();
        if let Some(data) = lock(&self.rendered).get(&ino).and_then(|r| r.get(writes, SIZE_FRESH)) {
            return Ok(data);
        }
        let data: Arc<[u8]> = self.render_file(ino)?.into();
        lock(&self.rendered).insert(ino, Stamped::new(writes, data.clone()));
        Ok(data)
    }

    fn render_file(&self, ino: u64) -> FsResult<Vec<u8>> {
        let now = self.attention.now();
        let vault = &*self.vault;
        if ino == inode::ATTENTION_LOG {
            return attention_log(vault);
        }
        let mut out = match ino {
            inode::HEAT_JSON => heat::heat_json(&heat::spots(vault, now, heat::Cover::Attended)?)?,
            inode::HEAT_HTML => {
                let spots = heat::spots(vault, now, heat::Cover::Everything)?;
                heat::heat_html(&spots, &self.info.player, now, heat::Limits::PAGE)?
            }
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
            inode::REALMS_JSON => {
                json(&network::realms_json(vault, &self.info.network.snapshot(), now)?)?
            }
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
            inode::INDRA => {
                Ok(fixed_attr(&self.info, ino, NodeKind::Dir, 0o555, 2 + FOLDERS.len() as u32, 0))
            }
            i if is_file(i) => Ok(fixed_attr(
                &self.info,
                i,
                NodeKind::File,
                0o444,
                1,
                self.render(i)?.len() as u64,
            )),
            _ => Err(FsError::errno(libc::ENOENT)),
        }
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Found> {
        if parent != inode::INDRA {
            return Err(FsError::errno(libc::ENOTDIR));
        }
        if let Some((ino, _)) = FOLDERS.iter().find(|(_, n)| n.as_bytes() == name) {
            return Ok(Found::ViewRoot(*ino));
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
        let folders = FOLDERS.iter().map(|(ino, name)| (*ino, NodeKind::Dir, name.as_bytes()));
        Ok(fixed_listing(dir, inode::ROOT, offset, files.chain(folders)))
    }

    fn ttl(&self, ino: u64) -> Duration {
        // The folder itself never changes (a path walk through it, such as each `stat` of
        // `.indra/history/...`, then stays in the kernel); its files change size at will.
        if ino == inode::INDRA { TTL } else { NO_TTL }
    }
}

impl ReadOnlyView for IndraView {
    fn open(&self, ino: u64) -> FsResult<ReadOnlyFile> {
        if ino == inode::INDRA {
            return Err(FsError::errno(libc::EISDIR));
        }
        Ok(ReadOnlyFile::Rendered(self.render(ino)?))
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
