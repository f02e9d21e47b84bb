//! Helpers shared by the integration tests: keys, fast timeouts on loopback, and polling
//! with a generous bound.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use indras_net::{Config, Net, Presence, Timeouts};

/// A distinct secret key per test participant.
pub fn key(tag: u8) -> [u8; 32] {
    let mut k = [tag; 32];
    k[0] = 0xA5;
    k
}

/// Loopback, no relay, and short timeouts so the tests stay fast.
pub fn config(name: &str) -> Config {
    Config {
        timeouts: Timeouts {
            dial: Duration::from_secs(2),
            handshake: Duration::from_secs(2),
            ping: Duration::from_millis(500),
            idle: Duration::from_secs(4),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(2),
            bind: Duration::from_secs(10),
            shutdown: Duration::from_secs(2),
        },
        ..Config::loopback(name)
    }
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub const LIMIT: Duration = Duration::from_secs(10);

pub fn presence(net: &Net, name: &str) -> Option<Presence> {
    net.status().peer(name).map(|p| p.presence)
}

pub fn connected(net: &Net, name: &str) -> bool {
    presence(net, name) == Some(Presence::Connected)
}
