//! Attention events and heat.
//!
//! Events are appended in batches to `events_v1`. In the same transaction, each event is folded
//! into its node's aggregate in `attention_v1`: open count, total dwell, last seen, the players
//! who paid attention, and a decayed score. Heat is computed from the aggregates alone, so it
//! stays exact when old events are pruned by retention, and costs O(nodes with attention).
//!
//! # The heat formula
//!
//! Each event carries a weight:
//! - an open (`Navigate`) weighs `W_OPEN` = 1;
//! - a close (`Back`) weighs its dwell: `min(dwell, DWELL_CAP) / DWELL_UNIT`, so a minute of
//!   reading counts as much as one more open, and nothing beyond ten minutes counts more;
//! - a directory listing (`Scan`) weighs `W_SCAN` = 0.2: browsing is a glance.
//!
//! A node's score at time `t` is the sum of its events' weights, each halved for every
//! `HALF_LIFE` (one day) that has passed since the event:
//!
//! ```text
//! score(t) = Σ w_i · 2^(-(t - t_i) / HALF_LIFE)
//! heat(t)  = 1 - exp(-score(t) / SATURATION)          SATURATION = 10
//! ```
//!
//! `heat` lies in [0, 1): a node never opened has heat 0; ten one-minute reads today give
//! score 20 and heat 0.86; the same reads a week ago give heat 0.15. A day's half-life makes
//! heat mean "what this player is working on now" rather than "ever".
//!
//! # Whose events
//! The score is a sum over every player's events, weighed alike, and `unique_players` counts
//! the players:
//! - ours, on our nodes, and on mirror entries (what peers share with us; an aggregate keyed by
//!   a mirror id is our own attention on that entry);
//! - on our nodes, those of the peers we share them with: each such event was sent to us, the
//!   steward, and to no one else, signed with the peer's key and hash-chained, and was counted
//!   only after `vault::chain` checked its signature, sender, chain and the peer's live grant,
//!   dated no later than its arrival and with at most a day of dwell.
//!
//! With attention off (`--attention off`), the mount records none, sends none and takes none.
//! Because the decay is exponential, an aggregate keeps `score` at a reference time and moves
//! it forward by multiplying, which is what makes pruning events exact.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::store::meta::W;
use crate::store::schema::{META_NEXT_EVENT, bytes_u64, decode, encode, u64_bytes};
use crate::types::{ArtifactId, AttentionKind, AttentionSwitchEvent, NodeId, Timestamp};
use crate::vault::handle::{Commit, Vault};
use crate::vault::namespace::{children, walk_entries};

/// An open's weight.
pub const W_OPEN: f64 = 1.0;
/// A directory listing's weight.
pub const W_SCAN: f64 = 0.2;
/// Dwell counts in units of a minute...
pub const DWELL_UNIT_MS: f64 = 60_000.0;
/// ... up to ten minutes per visit.
pub const DWELL_CAP_MS: u64 = 600_000;
/// Attention halves in value every day.
pub const HALF_LIFE_MS: f64 = 86_400_000.0;
/// The score at which heat reaches 1 - 1/e.
pub const SATURATION: f64 = 10.0;

pub use crate::types::Aggregate;

/// A node's heat and the figures behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Heat {
    pub node: NodeId,
    pub heat: f64,
    pub unique_players: usize,
    pub dwell_ms: u64,
    pub opens: u64,
    pub last_seen: Timestamp,
}

/// How long events are kept. Aggregates are kept regardless.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_events: Option<u64>,
    pub max_age_ms: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_events: Some(100_000), max_age_ms: Some(30 * 86_400_000) }
    }
}

/// An event's weight in the score.
pub fn weight(ev: &AttentionSwitchEvent) -> f64 {
    match ev.kind {
        AttentionKind::Navigate => W_OPEN,
        AttentionKind::Back => ev.dwell_ms.min(DWELL_CAP_MS) as f64 / DWELL_UNIT_MS,
        AttentionKind::Scan => W_SCAN,
    }
}

/// The factor by which a score shrinks from `from` to `to` (1 if `to` is not later).
pub fn decay(from: Timestamp, to: Timestamp) -> f64 {
    let dt = (to.as_millis() - from.as_millis()).max(0) as f64;
    (-dt / HALF_LIFE_MS).exp2()
}

impl Aggregate {
    fn add(&mut self, ev: &AttentionSwitchEvent) {
        let w = weight(ev);
        if ev.at >= self.score_at {
            self.score = self.score * decay(self.score_at, ev.at) + w;
            self.score_at = ev.at;
        } else {
            self.score += w * decay(ev.at, self.score_at);
        }
        match ev.kind {
            AttentionKind::Navigate => self.opens = self.opens.saturating_add(1),
            AttentionKind::Back => self.dwell_ms = self.dwell_ms.saturating_add(ev.dwell_ms),
            AttentionKind::Scan => {}
        }
        self.last_seen = self.last_seen.max(ev.at);
        if !self.players.contains(&ev.player) {
            self.players.push(ev.player);
        }
    }

    /// Heat at `now`, in [0, 1).
    pub fn heat(&self, now: Timestamp) -> f64 {
        let score = self.score * decay(self.score_at, now);
        1.0 - (-score / SATURATION).exp()
    }
}

impl Vault {
    /// Appends a batch of events in one transaction and folds them into the aggregates;
    /// returns the sequence number after them.
    pub fn append_events(&self, events: &[AttentionSwitchEvent], commit: Commit) -> Result<u64> {
        self.write_fs(commit, |w| fold_events(w, events))
    }

    /// Records that the player's attention moved to `to` (a file was opened).
    pub fn navigate_to(
        &self,
        to: ArtifactId,
        from: Option<ArtifactId>,
        now: Timestamp,
    ) -> Result<u64> {
        let node = self.node_of(&to);
        let ev = AttentionSwitchEvent {
            player: self.player(),
            from,
            to: Some(to),
            kind: AttentionKind::Navigate,
            at: now,
            node,
            dwell_ms: 0,
        };
        self.append_events(&[ev], Commit::CrashConsistent)
    }

    /// Records that attention left `from` after `dwell_ms` and returned to `to`.
    pub fn navigate_back(
        &self,
        from: ArtifactId,
        to: Option<ArtifactId>,
        dwell_ms: u64,
        now: Timestamp,
    ) -> Result<u64> {
        let node = self.node_of(&from);
        let ev = AttentionSwitchEvent {
            player: self.player(),
            from: Some(from),
            to,
            kind: AttentionKind::Back,
            at: now,
            node,
            dwell_ms,
        };
        self.append_events(&[ev], Commit::CrashConsistent)
    }

    /// The node behind an artifact id, when there is exactly one (trees).
    fn node_of(&self, id: &ArtifactId) -> Option<NodeId> {
        match id {
            ArtifactId::Doc(_) => self.tree_node(id).ok(),
            ArtifactId::Blob(_) => None,
        }
    }

    /// Up to `limit` events with sequence numbers above `after`, oldest first.
    pub fn events(&self, after: u64, limit: usize) -> Result<Vec<(u64, AttentionSwitchEvent)>> {
        self.scan(&["events"], |r| {
            r.events()?
                .range(after.saturating_add(1)..)?
                .take(limit)
                .map(|row| {
                    let (k, v) = row?;
                    Ok((k.value(), decode("event", v.value())?))
                })
                .collect()
        })
    }

    /// The newest `limit` events, oldest first. Sequence numbers are consecutive (pruning
    /// drops only the oldest), so they are the ones from `next_event - limit` on.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<(u64, AttentionSwitchEvent)>> {
        self.scan(&["meta", "events"], |r| {
            let from = next_event(r)?.saturating_sub(limit as u64);
            r.events()?
                .range(from..)?
                .map(|row| {
                    let (k, v) = row?;
                    Ok((k.value(), decode("event", v.value())?))
                })
                .collect()
        })
    }

    /// How many stored events happened at or after `since`: counted from the newest back, a
    /// window of sequence numbers at a time, to the first older one.
    pub fn events_since(&self, since: Timestamp) -> Result<u64> {
        const WINDOW: u64 = 4096;
        self.scan(&["meta", "events"], |r| {
            let mut n = 0;
            let mut end = next_event(r)?;
            while end > 1 {
                let start = end.saturating_sub(WINDOW).max(1);
                let mut times = Vec::new();
                for row in r.events()?.range(start..end)? {
                    times.push(decode::<AttentionSwitchEvent>("event", row?.1.value())?.at);
                }
                if times.is_empty() {
                    break;
                }
                for at in times.iter().rev() {
                    if *at < since {
                        return Ok(n);
                    }
                    n += 1;
                }
                end = start;
            }
            Ok(n)
        })
    }

    pub fn event_count(&self) -> Result<u64> {
        self.scan(&["events"], |r| Ok(r.events()?.len()?))
    }

    /// Deletes events with sequence numbers up to and including `through`. Aggregates, and so
    /// heat, are unaffected.
    pub fn prune_events(&self, through: u64, commit: Commit) -> Result<u64> {
        self.write_fs(commit, |w| {
            let keys: Vec<u64> = w
                .events()?
                .range(..=through)?
                .map(|row| row.map(|(k, _)| k.value()))
                .collect::<std::result::Result<_, _>>()?;
            for k in &keys {
                w.events()?.remove(k)?;
            }
            Ok(keys.len() as u64)
        })
    }

    /// Applies a retention policy at `now`: drops the oldest events beyond `max_events` and
    /// those older than `max_age_ms`. Returns how many were dropped.
    pub fn enforce_retention(&self, policy: Retention, now: Timestamp) -> Result<u64> {
        let through = self.scan(&["events"], |r| {
            let t = r.events()?;
            let len = t.len()?;
            let mut through = 0u64;
            if let Some(max) = policy.max_events
                && len > max
                && let Some(row) =
                    t.iter()?.nth(usize::try_from(len - max - 1).unwrap_or(usize::MAX))
            {
                through = row?.0.value();
            }
            if let Some(age) = policy.max_age_ms {
                let cutoff = Timestamp::from_millis(
                    now.as_millis().saturating_sub(i64::try_from(age).unwrap_or(i64::MAX)),
                );
                for row in t.range(through.saturating_add(1)..)? {
                    let (k, v) = row?;
                    let ev: AttentionSwitchEvent = decode("event", v.value())?;
                    if ev.at >= cutoff {
                        break;
                    }
                    through = k.value();
                }
            }
            Ok(through)
        })?;
        if through == 0 {
            return Ok(0);
        }
        self.prune_events(through, Commit::CrashConsistent)
    }

    /// Heat of every node that has had attention, hottest first.
    pub fn heat(&self, now: Timestamp) -> Result<Vec<Heat>> {
        let mut out = self.scan(&["attention"], |r| {
            r.attention()?
                .iter()?
                .map(|row| {
                    let (k, v) = row?;
                    let agg: Aggregate = decode("attention", v.value())?;
                    Ok(Heat {
                        node: NodeId(k.value()),
                        heat: agg.heat(now),
                        unique_players: agg.players.len(),
                        dwell_ms: agg.dwell_ms,
                        opens: agg.opens,
                        last_seen: agg.last_seen,
                    })
                })
                .collect::<Result<Vec<_>>>()
        })?;
        out.sort_by(|a, b| b.heat.total_cmp(&a.heat).then(a.node.cmp(&b.node)));
        Ok(out)
    }

    /// One node's aggregate, if it has had attention.
    pub fn attention_of(&self, node: NodeId) -> Result<Option<Aggregate>> {
        self.read_fs(|r| {
            r.attention()?.get(node.0)?.map(|v| decode("attention", v.value())).transpose()
        })
    }

    /// Paths (labels from the root, joined with `/`) of the given nodes, found by one walk of
    /// the tree. A node with several names (hard links) gets the first found.
    pub fn paths_of(&self, wanted: &HashSet<NodeId>) -> Result<HashMap<NodeId, Vec<u8>>> {
        let children = self.scan(&["entries"], children)?;
        let mut out = HashMap::new();
        walk_entries(&children, |node, path| {
            if wanted.contains(&node) {
                out.entry(node).or_insert_with(|| path.to_vec());
            }
            out.len() < wanted.len()
        });
        Ok(out)
    }
}

/// Appends `events` to the events table and folds them into their aggregates, within an
/// operation; returns the sequence number after them.
pub(crate) fn fold_events(w: &mut W, events: &[AttentionSwitchEvent]) -> Result<u64> {
    let mut next = next_event(w)?;
    let mut touched: HashMap<u64, Aggregate> = HashMap::new();
    for ev in events {
        w.events()?.insert(next, encode(ev).as_slice())?;
        next += 1;
        let Some(node) = ev.node else { continue };
        let agg = match touched.entry(node.0) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let current = match w.attention()?.get(node.0)? {
                    Some(bytes) => decode("attention", bytes.value())?,
                    None => Aggregate::default(),
                };
                v.insert(current)
            }
        };
        agg.add(ev);
    }
    for (node, agg) in touched {
        w.attention()?.insert(node, encode(&agg).as_slice())?;
    }
    w.meta()?.insert(META_NEXT_EVENT, u64_bytes(next).as_slice())?;
    Ok(next)
}

/// The sequence number the next event gets (the first is 1).
fn next_event(r: &mut W) -> Result<u64> {
    match r.meta()?.get(META_NEXT_EVENT)? {
        Some(v) => bytes_u64("next_event", v.value()),
        None => Ok(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PlayerId;

    fn ev(kind: AttentionKind, at_ms: i64, dwell_ms: u64) -> AttentionSwitchEvent {
        AttentionSwitchEvent {
            player: PlayerId([1; 32]),
            from: None,
            to: None,
            kind,
            at: Timestamp::from_millis(at_ms),
            node: Some(NodeId(20)),
            dwell_ms,
        }
    }

    #[test]
    fn ten_one_minute_reads_are_hot_and_cool_with_time() {
        let mut agg = Aggregate::default();
        for i in 0..10 {
            agg.add(&ev(AttentionKind::Navigate, i * 1000, 0));
            agg.add(&ev(AttentionKind::Back, i * 1000 + 500, 60_000));
        }
        let now = Timestamp::from_millis(10_000);
        let h = agg.heat(now);
        assert!((h - (1.0 - (-2.0f64).exp())).abs() < 1e-3, "{h}");
        let a_week_later = Timestamp::from_millis(7 * 86_400_000);
        assert!(agg.heat(a_week_later) < 0.2);
        assert!(agg.heat(a_week_later) > 0.0);
        assert_eq!(agg.opens, 10);
        assert_eq!(agg.dwell_ms, 600_000);
        assert!(Aggregate::default().heat(now).abs() < f64::EPSILON);
    }

    #[test]
    fn order_of_events_does_not_change_the_score() {
        let events: Vec<_> =
            (0..20).map(|i| ev(AttentionKind::Navigate, (i * 7919) % 100_000_000, 0)).collect();
        let mut a = Aggregate::default();
        let mut b = Aggregate::default();
        for e in &events {
            a.add(e);
        }
        for e in events.iter().rev() {
            b.add(e);
        }
        let now = Timestamp::from_millis(200_000_000);
        assert!((a.heat(now) - b.heat(now)).abs() < 1e-12);
    }

    #[test]
    fn dwell_is_capped_and_heat_stays_below_one() {
        let mut agg = Aggregate::default();
        agg.add(&ev(AttentionKind::Back, 0, 10 * 3_600_000));
        assert!((agg.score - 10.0).abs() < 1e-9);
        for i in 0..10_000 {
            agg.add(&ev(AttentionKind::Navigate, i, 0));
        }
        let h = agg.heat(Timestamp::from_millis(10_000));
        assert!(h <= 1.0 && h > 0.99);
    }
}
