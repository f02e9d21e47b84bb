//! Recording attention: `open` of a vault file is a `Navigate`, its `release` a `Back` with the
//! dwell time, and a directory listing a `Scan`. Events wait in memory and are written in
//! batches by the background thread (`flush`), so `open` never waits on the disk.
//! Opens of `.indra/` files and the daemon's own reads record nothing. `display_heat` is how
//! every part of the mount shows a heat.
//!
//! The same happens on *entries*: what peers share with us, which read-only views show (a
//! mirror entry, named by its id; `peers/` and any view over mirror entries call
//! `opened_entry`, `closed_entry` and `scanned_entry`). Those events are ours, kept on the
//! entry, and each also goes to the entry's steward: `Vault::record_entry_attention` queues it
//! signed and chained, and the sharing engine delivers it. With attention off, nothing is
//! recorded, so nothing is sent either.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use indras_artifacts::{
    ArtifactId, AttentionKind, AttentionSwitchEvent, Commit, Node, NodeId, Retention, Timestamp,
    Vault,
};

use crate::error::FsResult;

/// Heat for display: four decimals, rounded down, so a value below 1 never shows as 1.
pub fn display_heat(x: f64) -> f64 {
    (x * 10_000.0).floor() / 10_000.0
}

/// Where the mount gets the time (attention, and the end of the timed grants `peers/` shows):
/// the system clock, or a test's.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Mutex::new(start))
    }

    pub fn advance_ms(&self, ms: i64) {
        let mut t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *t = Timestamp::from_millis(t.as_millis() + ms);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Attention settings.
#[derive(Clone, Copy, Debug)]
pub struct AttentionConfig {
    pub enabled: bool,
    pub retention: Retention,
}

impl Default for AttentionConfig {
    fn default() -> Self {
        AttentionConfig { enabled: true, retention: Retention::default() }
    }
}

/// Queued flushes between two retention passes.
const RETENTION_EVERY: u64 = 50;

#[derive(Debug)]
pub struct Attention {
    vault: Arc<Vault>,
    clock: Arc<dyn Clock>,
    config: AttentionConfig,
    queue: Mutex<Vec<AttentionSwitchEvent>>,
    /// Events on entries (what peers share with us), their `node` the entry's id.
    entries: Mutex<Vec<AttentionSwitchEvent>>,
    /// Stewards whose outbox was full at the last flush that had events for them, so that
    /// it is logged once while it stays full.
    full: Mutex<Vec<indras_artifacts::PlayerId>>,
    /// Serialises flushes, so batches reach the store in the order they were queued.
    flushing: Mutex<()>,
    flushes: AtomicU64,
}

impl Attention {
    pub fn new(vault: Arc<Vault>, clock: Arc<dyn Clock>, config: AttentionConfig) -> Self {
        Attention {
            vault,
            clock,
            config,
            queue: Mutex::new(Vec::new()),
            entries: Mutex::new(Vec::new()),
            full: Mutex::new(Vec::new()),
            flushing: Mutex::new(()),
            flushes: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn push(&self, ev: AttentionSwitchEvent) {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner).push(ev);
    }

    /// A file was opened; returns the time, for the dwell at close.
    pub fn opened(&self, node: &Node) -> Option<Timestamp> {
        if !self.config.enabled {
            return None;
        }
        let at = self.clock.now();
        self.push(AttentionSwitchEvent {
            player: self.vault.player(),
            from: None,
            to: node.artifact_id(),
            kind: AttentionKind::Navigate,
            at,
            node: Some(node.id),
            dwell_ms: 0,
        });
        Some(at)
    }

    /// A file opened at `opened_at` was closed.
    pub fn closed(&self, node: NodeId, artifact: Option<ArtifactId>, opened_at: Timestamp) {
        if !self.config.enabled {
            return;
        }
        let at = self.clock.now();
        let dwell = u64::try_from(at.as_millis() - opened_at.as_millis()).unwrap_or(0);
        self.push(AttentionSwitchEvent {
            player: self.vault.player(),
            from: artifact,
            to: None,
            kind: AttentionKind::Back,
            at,
            node: Some(node),
            dwell_ms: dwell,
        });
    }

    /// A directory was listed.
    pub fn scanned(&self, dir: &Node) {
        if !self.config.enabled {
            return;
        }
        self.push(AttentionSwitchEvent {
            player: self.vault.player(),
            from: None,
            to: dir.artifact_id(),
            kind: AttentionKind::Scan,
            at: self.clock.now(),
            node: Some(dir.id),
            dwell_ms: 0,
        });
    }

    fn entry_event(&self, id: NodeId, kind: AttentionKind, dwell_ms: u64) -> Timestamp {
        let at = self.clock.now();
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).push(AttentionSwitchEvent {
            player: self.vault.player(),
            from: None,
            to: None,
            kind,
            at,
            node: Some(id),
            dwell_ms,
        });
        at
    }

    /// The entry `id` (what a peer shares with us) was opened; returns the time, for the
    /// dwell at close, or `None` with attention off.
    pub fn opened_entry(&self, id: NodeId) -> Option<Timestamp> {
        if !self.config.enabled {
            return None;
        }
        Some(self.entry_event(id, AttentionKind::Navigate, 0))
    }

    /// The entry `id`, opened at `opened_at`, was closed.
    pub fn closed_entry(&self, id: NodeId, opened_at: Timestamp) {
        if !self.config.enabled {
            return;
        }
        let dwell =
            u64::try_from(self.clock.now().as_millis() - opened_at.as_millis()).unwrap_or(0);
        self.entry_event(id, AttentionKind::Back, dwell);
    }

    /// The folder entry `id` was listed.
    pub fn scanned_entry(&self, id: NodeId) {
        if self.config.enabled {
            self.entry_event(id, AttentionKind::Scan, 0);
        }
    }

    /// Writes queued events in one transaction, and now and then applies retention.
    pub fn flush(&self) -> FsResult<()> {
        let _order = self.flushing.lock().unwrap_or_else(PoisonError::into_inner);
        self.flush_entries()?;
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner));
        if !batch.is_empty() {
            if let Err(e) = self.vault.append_events(&batch, Commit::CrashConsistent) {
                // Put them back in front of anything queued meanwhile, and report.
                let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                let newer = std::mem::replace(&mut *q, batch);
                q.extend(newer);
                return Err(e.into());
            }
            if self.flushes.fetch_add(1, Ordering::Relaxed).is_multiple_of(RETENTION_EVERY) {
                self.vault.enforce_retention(self.config.retention, self.clock.now())?;
            }
        }
        Ok(())
    }
}

impl Attention {
    /// Writes the queued events on entries, and queues them for their stewards.
    fn flush_entries(&self) -> FsResult<()> {
        let batch =
            std::mem::take(&mut *self.entries.lock().unwrap_or_else(PoisonError::into_inner));
        if batch.is_empty() {
            return Ok(());
        }
        match self.vault.record_entry_attention(&batch, Commit::CrashConsistent) {
            Ok(r) => {
                let mut full = self.full.lock().unwrap_or_else(PoisonError::into_inner);
                for steward in &r.full {
                    if !full.contains(steward) {
                        tracing::warn!(
                            %steward,
                            max = indras_artifacts::chain::OUTBOX_MAX,
                            "the attention outbox for a peer is full: new events on what it \
                             shares are kept here but not sent to it until it takes some"
                        );
                        full.push(*steward);
                    }
                }
                if r.queued > 0 {
                    full.retain(|s| r.full.contains(s));
                }
                Ok(())
            }
            Err(e) => {
                let mut q = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
                let newer = std::mem::replace(&mut *q, batch);
                q.extend(newer);
                Err(e.into())
            }
        }
    }
}
