//! Admission control for strangers: how many connections may be in their handshake, how
//! often new connections may arrive, and how often a connection request is recorded.
//!
//! Invariants:
//! - every map here is bounded: handshake slots by `Limits::handshakes`, request times and
//!   rejected keys by [`MEMORY_CAP`] (the oldest entries are dropped first);
//! - the logic takes `now` as a parameter and does no I/O, so it is tested without a clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indras_artifacts::PlayerId;

use crate::config::Limits;

/// Most keys remembered by each of the request and rejection maps.
pub(crate) const MEMORY_CAP: usize = 1024;

/// A token bucket: `burst` tokens, one more every `refill`.
#[derive(Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn new(burst: u32, refill: Duration, now: Instant) -> Self {
        let per_sec = if refill.is_zero() { f64::MAX } else { 1.0 / refill.as_secs_f64() };
        Bucket { tokens: f64::from(burst), burst: f64::from(burst), per_sec, at: now }
    }

    pub(crate) fn per_second(burst: u32, per_sec: u32, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
            at: now,
        }
    }

    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Whether a stranger's connection request should be recorded.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RequestVerdict {
    Record,
    /// Recently rejected or removed: refuse, record nothing.
    Rejected,
    /// This key was recorded recently, or too many requests arrive overall.
    RateLimited,
}

#[derive(Debug)]
pub(crate) struct Gate {
    limits: Limits,
    handshakes: HashMap<PlayerId, usize>,
    handshakes_total: usize,
    requests: Bucket,
    last_request: HashMap<PlayerId, Instant>,
    rejected: HashMap<PlayerId, Instant>,
}

impl Gate {
    pub(crate) fn new(limits: Limits, now: Instant) -> Self {
        Gate {
            limits,
            handshakes: HashMap::new(),
            handshakes_total: 0,
            requests: Bucket::new(limits.requests_burst, limits.requests_refill, now),
            last_request: HashMap::new(),
            rejected: HashMap::new(),
        }
    }

    /// Takes a handshake slot for `key`; `false` when over a limit.
    pub(crate) fn enter_handshake(&mut self, key: PlayerId) -> bool {
        if self.handshakes_total >= self.limits.handshakes {
            return false;
        }
        let n = self.handshakes.entry(key).or_insert(0);
        if *n >= self.limits.handshakes_per_key {
            return false;
        }
        *n += 1;
        self.handshakes_total += 1;
        true
    }

    pub(crate) fn leave_handshake(&mut self, key: PlayerId) {
        if let Some(n) = self.handshakes.get_mut(&key) {
            *n -= 1;
            self.handshakes_total -= 1;
            if *n == 0 {
                self.handshakes.remove(&key);
            }
        }
    }

    pub(crate) fn handshakes(&self) -> usize {
        self.handshakes_total
    }

    /// Decides whether to record a request from `key`, and remembers the decision.
    pub(crate) fn request(&mut self, key: PlayerId, now: Instant) -> RequestVerdict {
        if let Some(&at) = self.rejected.get(&key) {
            if now.saturating_duration_since(at) < self.limits.reject_memory {
                return RequestVerdict::Rejected;
            }
            self.rejected.remove(&key);
        }
        if let Some(&at) = self.last_request.get(&key)
            && now.saturating_duration_since(at) < self.limits.request_interval
        {
            return RequestVerdict::RateLimited;
        }
        if !self.requests.take(now) {
            return RequestVerdict::RateLimited;
        }
        let interval = self.limits.request_interval;
        insert_bounded(&mut self.last_request, key, now, |at| {
            now.saturating_duration_since(at) >= interval
        });
        RequestVerdict::Record
    }

    /// Remembers that the user rejected or removed `key`.
    pub(crate) fn reject(&mut self, key: PlayerId, now: Instant) {
        self.last_request.remove(&key);
        let memory = self.limits.reject_memory;
        insert_bounded(&mut self.rejected, key, now, |at| {
            now.saturating_duration_since(at) >= memory
        });
    }

    /// Forgets a rejection, when the user makes `key` a peer again.
    pub(crate) fn forgive(&mut self, key: &PlayerId) {
        self.rejected.remove(key);
    }
}

/// Inserts into a map of at most [`MEMORY_CAP`] keys: stale entries go first, then the
/// oldest.
fn insert_bounded(
    map: &mut HashMap<PlayerId, Instant>,
    key: PlayerId,
    now: Instant,
    stale: impl Fn(Instant) -> bool,
) {
    if map.len() >= MEMORY_CAP && !map.contains_key(&key) {
        map.retain(|_, at| !stale(*at));
        if map.len() >= MEMORY_CAP
            && let Some(oldest) = map.iter().min_by_key(|(_, at)| **at).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
    }
    map.insert(key, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> PlayerId {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&i.to_be_bytes());
        PlayerId(k)
    }

    #[test]
    fn handshake_slots_are_bounded_per_key_and_overall() {
        let limits = Limits { handshakes: 5, handshakes_per_key: 2, ..Limits::default() };
        let mut g = Gate::new(limits, Instant::now());
        assert!(g.enter_handshake(key(1)));
        assert!(g.enter_handshake(key(1)));
        assert!(!g.enter_handshake(key(1)));
        assert!(g.enter_handshake(key(2)));
        assert!(g.enter_handshake(key(3)));
        assert!(g.enter_handshake(key(4)));
        assert!(!g.enter_handshake(key(5)));
        g.leave_handshake(key(1));
        assert!(g.enter_handshake(key(5)));
        for k in [1, 2, 3, 4, 5] {
            g.leave_handshake(key(k));
        }
        assert_eq!(g.handshakes(), 0);
        assert!(g.handshakes.is_empty());
        g.leave_handshake(key(9));
        assert_eq!(g.handshakes(), 0);
    }

    #[test]
    fn requests_are_limited_per_key_and_overall() {
        let t0 = Instant::now();
        let limits = Limits {
            requests_burst: 3,
            requests_refill: Duration::from_secs(10),
            request_interval: Duration::from_secs(60),
            ..Limits::default()
        };
        let mut g = Gate::new(limits, t0);
        assert_eq!(g.request(key(1), t0), RequestVerdict::Record);
        assert_eq!(g.request(key(1), t0), RequestVerdict::RateLimited);
        assert_eq!(g.request(key(2), t0), RequestVerdict::Record);
        assert_eq!(g.request(key(3), t0), RequestVerdict::Record);
        assert_eq!(g.request(key(4), t0), RequestVerdict::RateLimited);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(g.request(key(4), t1), RequestVerdict::Record);
        let t2 = t0 + Duration::from_secs(61);
        assert_eq!(g.request(key(1), t2), RequestVerdict::Record);
    }

    #[test]
    fn rejected_keys_stay_quiet_for_a_while_and_memory_is_capped() {
        let t0 = Instant::now();
        let mut g = Gate::new(Limits::default(), t0);
        g.reject(key(1), t0);
        assert_eq!(g.request(key(1), t0), RequestVerdict::Rejected);
        g.forgive(&key(1));
        assert_eq!(g.request(key(1), t0), RequestVerdict::Record);
        for i in 0..(MEMORY_CAP as u32 * 2) {
            g.reject(key(i), t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(g.rejected.len() <= MEMORY_CAP);
        let later = t0 + Limits::default().reject_memory + Duration::from_secs(3600);
        assert_eq!(g.request(key(MEMORY_CAP as u32 * 2 - 1), later), RequestVerdict::Record);
    }

    #[test]
    fn bucket_refills_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::per_second(2, 1, t0);
        assert!(b.take(t0) && b.take(t0) && !b.take(t0));
        let t1 = t0 + Duration::from_secs(100);
        assert!(b.take(t1) && b.take(t1) && !b.take(t1));
    }
}
