//! How a mount keeps file history and snapshots within their limits: retention by age
//! (`--keep`), a share of the data dir's filesystem (`--history-max-percent`), a floor of free
//! space (`--min-free-percent`), and automatic snapshots (`--snapshot-every`).
//!
//! Invariants:
//! - `Vault::history_budget` is the one place that turns the limits and the filesystem's
//!   figures into the bytes history may hold; whatever thins history for space (the background
//!   thread here, a full disk's `make_room`) asks it.
//! - `tend` prunes by age first, and thins only when history holds more than the budget, so an
//!   idle vault within its limits costs one pass over the versions per tick.

use std::time::Duration;

use indras_artifacts::{Keep, Pruned, SpaceLimits, Timestamp, Vault};

/// What a mount keeps of history, and how much of the disk it may take.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long versions (and automatic snapshots) are kept; `Keep::none()` records none.
    pub keep: Keep,
    /// How often an automatic snapshot is taken; `None`: never.
    pub snapshot_every: Option<Duration>,
    /// The share of the data dir's filesystem history may take, and the free-space floor.
    pub space: SpaceLimits,
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
/// `Vault::history_budget` allows, the oldest versions until it does not.
pub fn tend(vault: &Vault, now: Timestamp) -> indras_artifacts::Result<Tended> {
    let pruned = vault.prune_history(now)?;
    let thinned = vault.give_way(now)?;
    Ok(Tended { pruned, thinned })
}
