//! Retention: how long history keeps versions (and automatic snapshots), as staggered tiers.
//! Depends on nothing else in the vault, so that the `Vault` can hold its state.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::fmt;

use crate::types::Timestamp;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// One tier of retention: versions younger than `within` seconds are kept, all of them when
/// `every` is 0, else the newest of each `every`-second period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    pub within: u64,
    pub every: u64,
}

/// How long history keeps versions: staggered tiers, as Time Machine and Syncthing keep them.
/// No tiers means history is off. The default keeps every version for 24 hours, then one per
/// hour for 7 days, then one per day for 30 days.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keep {
    tiers: Vec<Tier>,
}

impl Default for Keep {
    fn default() -> Self {
        Keep {
            tiers: vec![
                Tier { within: DAY, every: 0 },
                Tier { within: 7 * DAY, every: HOUR },
                Tier { within: 30 * DAY, every: DAY },
            ],
        }
    }
}

impl Keep {
    /// History off: nothing recorded, nothing kept.
    pub fn none() -> Keep {
        Keep { tiers: Vec::new() }
    }

    pub fn is_off(&self) -> bool {
        self.tiers.is_empty()
    }

    pub fn tiers(&self) -> &[Tier] {
        &self.tiers
    }

    /// Parses `none`, or tiers `WITHIN:EVERY` joined by commas, where `WITHIN` is how long the
    /// tier reaches back and `EVERY` is `all` or one version per that period: the default is
    /// `24h:all,7d:1h,30d:1d`. Durations are a number and a unit: `s`, `m`, `h`, `d` or `w`.
    pub fn parse(s: &str) -> std::result::Result<Keep, String> {
        let s = s.trim();
        if s == "none" {
            return Ok(Keep::none());
        }
        let mut tiers = Vec::new();
        for part in s.split(',') {
            let (within, every) = part.trim().split_once(':').ok_or_else(|| {
                format!("{part:?}: expected WITHIN:EVERY, like 24h:all or 7d:1h, or none")
            })?;
            let within = parse_duration(within)?;
            let every = if every.trim() == "all" { 0 } else { parse_duration(every)? };
            if within == 0 {
                return Err(format!("{part:?}: a tier must reach back more than 0 s"));
            }
            if let Some(last) = tiers.last().map(|t: &Tier| t.within)
                && within <= last
            {
                return Err(format!("{part:?}: tiers must reach further back in turn"));
            }
            tiers.push(Tier { within, every });
        }
        Ok(Keep { tiers })
    }

    /// How far back anything is kept.
    pub fn horizon(&self) -> u64 {
        self.tiers.last().map_or(0, |t| t.within)
    }

    /// Which of `times` (ascending) the tiers keep at `now`: per tier, every one, or the newest
    /// of each period. The last of them is kept when `keep_last`.
    pub fn select(&self, times: &[Timestamp], now: Timestamp, keep_last: bool) -> Vec<bool> {
        let mut keep = vec![false; times.len()];
        let mut seen: HashSet<(usize, i64)> = HashSet::new();
        for (i, t) in times.iter().enumerate().rev() {
            let age = u64::try_from(now.secs.saturating_sub(t.secs)).unwrap_or(0);
            let Some((n, tier)) = self.tiers.iter().enumerate().find(|(_, tier)| age < tier.within)
            else {
                continue;
            };
            keep[i] = tier.every == 0
                || seen
                    .insert((n, t.secs.div_euclid(i64::try_from(tier.every).unwrap_or(i64::MAX))));
        }
        if keep_last && let Some(last) = keep.last_mut() {
            *last = true;
        }
        keep
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tiers.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self
            .tiers
            .iter()
            .map(|t| {
                let every = if t.every == 0 { "all".to_string() } else { duration(t.every) };
                format!("{}:{every}", duration(t.within))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// `90s`, `15m`, `24h`, `7d`, `2w`: a number of seconds.
pub fn parse_duration(s: &str) -> std::result::Result<u64, String> {
    let s = s.trim();
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(unit_at);
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected a number and a unit, like 1h"))?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => HOUR,
        "d" => DAY,
        "w" => 7 * DAY,
        _ => return Err(format!("{s:?}: the unit must be s, m, h, d or w")),
    };
    n.checked_mul(per).ok_or_else(|| format!("{s:?}: too long"))
}

fn duration(secs: u64) -> String {
    for (per, unit) in [(DAY, "d"), (HOUR, "h"), (60, "m")] {
        if secs.is_multiple_of(per) {
            return format!("{}{unit}", secs / per);
        }
    }
    format!("{secs}s")
}

/// How much of the data dir's filesystem history may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceLimits {
    /// History may hold at most this percent of the filesystem.
    pub max_percent: u8,
    /// History gives way, oldest versions first, while the filesystem has less than this
    /// percent free.
    pub min_free_percent: u8,
}

/// `--history-max-percent`'s default.
pub const DEFAULT_MAX_PERCENT: u8 = 20;
/// `--min-free-percent`'s default.
pub const DEFAULT_MIN_FREE_PERCENT: u8 = 5;

impl Default for SpaceLimits {
    fn default() -> Self {
        SpaceLimits { max_percent: DEFAULT_MAX_PERCENT, min_free_percent: DEFAULT_MIN_FREE_PERCENT }
    }
}

impl SpaceLimits {
    /// The bytes history may hold on a filesystem of `size` bytes with `free` free, when it
    /// holds `held`: the `max_percent` share, less whatever free space lacks to reach the
    /// `min_free_percent` floor.
    pub fn budget(&self, size: u64, free: u64, held: u64) -> u64 {
        let short = self.short(size, free);
        let share = percent(size, self.max_percent);
        if short == 0 { share } else { share.min(held.saturating_sub(short)) }
    }

    /// What free space lacks to reach the floor.
    pub fn short(&self, size: u64, free: u64) -> u64 {
        percent(size, self.min_free_percent).saturating_sub(free)
    }
}

fn percent(size: u64, p: u8) -> u64 {
    u64::try_from(u128::from(size) * u128::from(p) / 100).unwrap_or(u64::MAX)
}

/// When history last gave way to space, for `status` (kept in `meta_v1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Thinned {
    pub at: Timestamp,
    pub versions: u64,
    pub bytes: u64,
}

/// History's in-memory state on the vault.
#[derive(Debug, Default)]
pub(crate) struct HistoryState {
    pub(crate) keep: Mutex<Keep>,
    pub(crate) limits: Mutex<SpaceLimits>,
    pub(crate) thinned: Mutex<Option<Thinned>>,
    /// The `added` bytes of every version row (`Vault::history_added`).
    pub(crate) added: std::sync::atomic::AtomicI64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp { secs, nanos: 0 }
    }

    #[test]
    fn the_budget_is_the_share_less_what_the_floor_lacks() {
        let limits = SpaceLimits::default();
        // 1000 bytes, 20%: 200 may be history; plenty free.
        assert_eq!(limits.budget(1000, 500, 150), 200);
        // 30 free where the floor is 50: history must give back 20 of its 150.
        assert_eq!(limits.budget(1000, 30, 150), 130);
        // More lacking than history holds: all of it may go.
        assert_eq!(limits.budget(1000, 0, 10), 0);
        let none = SpaceLimits { max_percent: 0, min_free_percent: 0 };
        assert_eq!(none.budget(1000, 0, 10), 0);
        assert_eq!(limits.budget(u64::MAX, u64::MAX, 1), u64::MAX / 5);
    }

    #[test]
    fn parses_and_prints_tiers() {
        assert_eq!(Keep::parse("24h:all,7d:1h,30d:1d").unwrap(), Keep::default());
        assert_eq!(Keep::default().to_string(), "1d:all,7d:1h,30d:1d");
        assert!(Keep::parse("none").unwrap().is_off());
        assert_eq!(Keep::parse("90m:all").unwrap().tiers(), &[Tier { within: 5400, every: 0 }]);
        for bad in ["", "7d", "7d:1x", "1d:all,1h:all", "0s:all", "x:all", "99999999999999999w:all"]
        {
            assert!(Keep::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn staggered_selection_keeps_the_newest_of_each_period() {
        let keep = Keep::default();
        let d = DAY.cast_signed();
        let now = at(100 * d);
        let h = HOUR.cast_signed();
        // Two an hour apart a day ago and more (kept), two in one hour two days ago (one kept),
        // two on one day ten days ago (one kept), one 40 days ago (gone).
        let times = [
            now.secs - 40 * d,
            now.secs - 10 * d - 3 * h,
            now.secs - 10 * d - 2 * h,
            now.secs - 2 * d - 10,
            now.secs - 2 * d - 5,
            now.secs - 20 * h,
            now.secs - 19 * h,
        ];
        let times: Vec<Timestamp> = times.iter().map(|s| at(*s)).collect();
        let kept = keep.select(&times, now, false);
        assert_eq!(kept, [false, false, true, false, true, true, true]);
        // Every version older than the horizon goes, except the one kept last.
        let old: Vec<Timestamp> = (0..3).map(at).collect();
        assert_eq!(keep.select(&old, now, true), [false, false, true]);
        assert_eq!(Keep::none().select(&old, now, false), [false, false, false]);
    }
}
