//! How a mount keeps file history and snapshots within their limits: retention by age
//! (`--keep`), a share of the data dir's filesystem (`--history-max-percent`), a floor of free
//! space (`--min-free-percent`), and automatic snapshots (`--snapshot-every`).
//!
//! Invariants:
//! - `space_budget` is the one place that turns the limits and the filesystem's figures into
//!   the bytes history may hold; whatever thins history for space (the background thread here,
//!   a full disk's `make_room`) asks it.
//! - `tend` prunes by age first, and thins only when history holds more than the budget, so an
//!   idle vault within its limits costs one pass over the versions per tick.

use std::io;
use std::path::Path;
use std::time::Duration;

use indras_artifacts::{Keep, Pruned, Timestamp, Vault};

/// What a mount keeps of history, and how much of the disk it may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long versions (and automatic snapshots) are kept; `Keep::none()` records none.
    pub keep: Keep,
    /// How often an automatic snapshot is taken; `None`: never.
    pub snapshot_every: Option<Duration>,
    /// History may hold at most this percent of the data dir's filesystem.
    pub max_percent: u8,
    /// History gives way, oldest versions first, while the filesystem has less than this
    /// percent free.
    pub min_free_percent: u8,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            keep: Keep::default(),
            snapshot_every: None,
            max_percent: DEFAULT_MAX_PERCENT,
            min_free_percent: DEFAULT_MIN_FREE_PERCENT,
        }
    }
}

/// `--history-max-percent`'s default.
pub const DEFAULT_MAX_PERCENT: u8 = 20;
/// `--min-free-percent`'s default.
pub const DEFAULT_MIN_FREE_PERCENT: u8 = 5;

/// The bytes history may hold (`HistoryUsage::bytes`) on the filesystem of `data_dir`, which
/// history now holds `held` bytes of: at most `max_percent` of the filesystem's size, and less
/// by whatever free space lacks to reach the `min_free_percent` floor.
pub fn space_budget(data_dir: &Path, cfg: &HistoryConfig, held: u64) -> io::Result<u64> {
    let st = rustix::fs::statvfs(data_dir).map_err(io::Error::from)?;
    let size = st.f_blocks.saturating_mul(st.f_frsize);
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    Ok(budget_of(size, free, cfg, held))
}

fn budget_of(size: u64, free: u64, cfg: &HistoryConfig, held: u64) -> u64 {
    let percent = |p: u8| u64::try_from(u128::from(size) * u128::from(p) / 100).unwrap_or(u64::MAX);
    let short = percent(cfg.min_free_percent).saturating_sub(free);
    let share = percent(cfg.max_percent);
    if short == 0 { share } else { share.min(held.saturating_sub(short)) }
}

/// What one `tend` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tended {
    /// Versions retention no longer keeps.
    pub pruned: Pruned,
    /// Versions dropped for space.
    pub thinned: Pruned,
}

/// Drops the versions retention no longer keeps, then, if history holds more than
/// `space_budget` allows, the oldest versions until it does not.
pub fn tend(
    vault: &Vault,
    data_dir: &Path,
    cfg: &HistoryConfig,
    now: Timestamp,
) -> indras_artifacts::Result<Tended> {
    let pruned = vault.prune_history(now)?;
    let held = vault.history_usage()?.bytes;
    let budget = match space_budget(data_dir, cfg, held) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "the data dir's filesystem size is unknown; history is not thinned");
            return Ok(Tended { pruned, thinned: Pruned::default() });
        }
    };
    let thinned = if held > budget { vault.thin_history(budget, now)? } else { Pruned::default() };
    Ok(Tended { pruned, thinned })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_the_share_less_what_the_floor_lacks() {
        let cfg = HistoryConfig::default();
        // 1000 bytes, 20%: 200 may be history; plenty free.
        assert_eq!(budget_of(1000, 500, &cfg, 150), 200);
        // 30 free where the floor is 50: history must give back 20 of its 150.
        assert_eq!(budget_of(1000, 30, &cfg, 150), 130);
        // More lacking than history holds: all of it may go.
        assert_eq!(budget_of(1000, 0, &cfg, 10), 0);
        let none = HistoryConfig { max_percent: 0, min_free_percent: 0, ..cfg };
        assert_eq!(budget_of(1000, 0, &none, 10), 0);
        assert_eq!(budget_of(u64::MAX, u64::MAX, &HistoryConfig::default(), 1), u64::MAX / 5);
    }

    #[test]
    fn the_data_dirs_filesystem_gives_a_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = HistoryConfig { min_free_percent: 0, ..HistoryConfig::default() };
        let b = space_budget(dir.path(), &cfg, u64::MAX).expect("statvfs");
        assert!(b > 0);
        assert!(space_budget(&dir.path().join("absent"), &cfg, 0).is_err());
    }
}
