//! How a `Net` is configured: listen addresses, relay mode, display name, and the timeouts
//! and limits that keep a slow or hostile peer from costing us anything unbounded.
//!
//! Invariant: every wait on the network in this crate is bounded by one of the durations
//! in [`Timeouts`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Which relay servers the endpoint uses.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Relay {
    /// iroh's public relays and address discovery, so two homes behind NAT can connect.
    Default,
    /// No relay and no discovery: direct addresses only (a LAN, or an offline machine).
    Disabled,
    /// One relay server of our own.
    Url(String),
}

impl std::str::FromStr for Relay {
    type Err = std::convert::Infallible;

    /// `default`, `none` (or `disabled`), or a URL.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "default" => Relay::Default,
            "none" | "disabled" => Relay::Disabled,
            url => Relay::Url(url.to_owned()),
        })
    }
}

/// Bounds on every wait.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Timeouts {
    /// Establishing a QUIC connection to a peer.
    pub dial: Duration,
    /// From connection to `Hello` (acceptor) or to `Welcome` (dialer).
    pub handshake: Duration,
    /// Interval of our `Ping`s on an established connection.
    pub ping: Duration,
    /// A connection that carries no frame for this long is closed. A request stream that
    /// makes no progress for this long is reset.
    pub idle: Duration,
    /// First reconnection delay; it doubles after each failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Binding the endpoint at start.
    pub bind: Duration,
    /// Closing connections and the endpoint at shutdown.
    pub shutdown: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            dial: Duration::from_secs(5),
            handshake: Duration::from_secs(5),
            ping: Duration::from_secs(5),
            idle: Duration::from_secs(15),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            bind: Duration::from_secs(10),
            shutdown: Duration::from_secs(3),
        }
    }
}

/// Limits on what strangers can make us do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Limits {
    /// Connections still in their handshake, over all keys; more are refused at once.
    pub handshakes: usize,
    /// Connections in their handshake from one key.
    pub handshakes_per_key: usize,
    /// New incoming connections: burst size of the token bucket.
    pub incoming_burst: u32,
    /// New incoming connections: tokens added per second.
    pub incoming_per_sec: u32,
    /// Connection requests recorded: burst size, over all keys.
    pub requests_burst: u32,
    /// Connection requests recorded: one token added per this interval.
    pub requests_refill: Duration,
    /// One key's connection request is recorded at most once per this interval.
    pub request_interval: Duration,
    /// Pending peers kept at most; further requests are dropped until some are handled.
    pub pending_max: usize,
    /// A rejected or removed key is refused without a new request for this long.
    pub reject_memory: Duration,
    /// Application requests from one peer served at once. It is also the peer's QUIC limit
    /// on open request streams, so further requests wait on its side until one is done.
    pub requests_per_session: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshakes: 64,
            handshakes_per_key: 4,
            incoming_burst: 64,
            incoming_per_sec: 32,
            requests_burst: 10,
            requests_refill: Duration::from_secs(6),
            request_interval: Duration::from_secs(60),
            pending_max: 32,
            reject_memory: Duration::from_secs(3600),
            requests_per_session: 32,
        }
    }
}

/// The configuration of a `Net`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Config {
    /// Sockets to bind. The first address of each family is its default route.
    pub listen: Vec<SocketAddr>,
    pub relay: Relay,
    /// The name we give ourselves in tickets and handshakes.
    pub display_name: String,
    pub timeouts: Timeouts,
    pub limits: Limits,
}

impl Config {
    /// `0.0.0.0:0`, and `[::]:0` where this machine can bind IPv6.
    pub fn default_listen() -> Vec<SocketAddr> {
        let mut listen = vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))];
        let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0));
        if std::net::UdpSocket::bind(v6).is_ok() {
            listen.push(v6);
        }
        listen
    }

    /// Default listen addresses, default relays, default timeouts.
    pub fn new(display_name: &str) -> Self {
        Config {
            listen: Self::default_listen(),
            relay: Relay::Default,
            display_name: display_name.to_owned(),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
        }
    }

    /// Loopback only, no relay: what tests use.
    pub fn loopback(display_name: &str) -> Self {
        Config {
            listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
            relay: Relay::Disabled,
            ..Self::new(display_name)
        }
    }
}
