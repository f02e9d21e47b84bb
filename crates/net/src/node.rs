//! The running network: the iroh endpoint, the handshake on both sides, one live session
//! per peer, and one supervisor task per accepted peer that reconnects with backoff.
//!
//! # State and lock order
//! `Node::state` (peers and their sessions) is taken before `Node::gate` (admission
//! control), and every `PeerBook` call is made while holding `state`, so the book's view
//! and ours change together and a concurrent `remove` can never be undone by a late write.
//! No lock is held across an `.await`.
//!
//! # Invariants
//! - At most one live session per peer. When both sides dial at once, both keep the
//!   connection dialed by the smaller `PlayerId`; a newer connection in the same direction
//!   replaces an older one.
//! - Only accepted peers get a session. A pending or unknown key is answered `Refused` and
//!   closed after its `Hello`; nothing else is read from or sent to it.
//! - Every network wait has a timeout from `Timeouts`; a session with no frame for
//!   `Timeouts::idle` is closed.
//! - Supervisors exist only for accepted peers and end when the peer is removed, rejected
//!   or the node stops.
//! - Application request streams are accepted only on a live session (so only from accepted
//!   peers), at most `Limits::requests_per_session` at once; their tasks end with the session.
//! - `Service::connected` is called once per installed session once a service is set: by
//!   `install` when the service is already there, else by `set_service`. Both decide under
//!   `state`, so none is missed and none is doubled.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use indras_artifacts::{InviteCheck, Peer, PeerState, PlayerId, Timestamp};
use iroh::endpoint::{
    BindOpts, Connection, ConnectionError, QuicTransportConfig, RecvStream, SendStream, VarInt,
    presets,
};
use iroh::protocol::{AcceptError, IncomingFilterOutcome, ProtocolHandler, Router};
use iroh::{Endpoint, EndpointAddr, PublicKey, RelayMode, RelayUrl, SecretKey, TransportAddr};
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::book::PeerBook;
use crate::config::{Config, Relay, Timeouts};
use crate::error::{NetError, one_line};
use crate::gate::{Bucket, Gate, RequestVerdict};
use crate::names::{sanitize, unique, validate_name};
use crate::service::{Service, ask, serve};
use crate::status::{NetState, NetStatus, PeerStatus, Presence};
use crate::ticket::{Ticket, secret_hash};
use crate::wire::{
    ALPN, Hello, MAX_ADDRS, MAX_CONTROL_FRAME, MAX_NAME_LEN, MAX_RESPONSE, MIN_PROTOCOL_VERSION,
    Message, PROTOCOL_VERSION, Refusal, Welcome, close, read_frame, write_frame,
};

/// Longest validity of a ticket.
pub(crate) const MAX_TICKET_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Bytes a peer may have in flight to us over all streams of a connection. Bounds what a
/// peer can make us buffer (the per-stream window is QUIC's default, 1.25 MB).
const RECEIVE_WINDOW: u32 = 16 * 1024 * 1024;

/// The control stream's send priority, above request streams (0), so pings and pongs are
/// not queued behind large answers.
const CONTROL_PRIORITY: i32 = 1;

pub(crate) struct Node {
    pub(crate) id: PlayerId,
    endpoint: Endpoint,
    book: Arc<dyn PeerBook>,
    display_name: String,
    timeouts: Timeouts,
    pending_max: usize,
    handshake_max: usize,
    requests_max: usize,
    /// The application's request handler; set once, after start.
    service: OnceLock<Arc<dyn Service>>,
    handle: tokio::runtime::Handle,
    /// Peers and sessions. Taken before `gate`.
    state: Mutex<State>,
    gate: Mutex<Gate>,
    incoming: Mutex<Bucket>,
    stop: watch::Sender<bool>,
    next_session: AtomicU64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    peers: HashMap<PlayerId, Link>,
    stopping: bool,
}

struct Link {
    entry: Peer,
    session: Option<Live>,
    supervisor: Option<Supervisor>,
    rtt: Option<Duration>,
    /// Bytes of this peer's connections that have ended.
    bytes_in: u64,
    bytes_out: u64,
    last_error: Option<String>,
}

impl Link {
    fn new(entry: Peer) -> Self {
        Link {
            entry,
            session: None,
            supervisor: None,
            rtt: None,
            bytes_in: 0,
            bytes_out: 0,
            last_error: None,
        }
    }

    fn wake(&self) {
        if let Some(s) = &self.supervisor {
            s.wake.notify_one();
        }
    }

    fn retire(&mut self, live: &Live) {
        let stats = live.conn.stats();
        self.bytes_in += stats.udp_rx.bytes;
        self.bytes_out += stats.udp_tx.bytes;
    }
}

struct Live {
    id: u64,
    conn: Connection,
    /// Who dialed this connection.
    dialer: PlayerId,
    since: Timestamp,
}

struct Supervisor {
    wake: Arc<Notify>,
    task: tokio::task::AbortHandle,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a peer told us about itself in `Hello` or `Welcome`.
struct Intro {
    name: String,
    addrs: Vec<SocketAddr>,
    relay: Option<String>,
}

impl Intro {
    fn learn(self, entry: &mut Peer) {
        entry.their_name = clean_display_name(&self.name);
        if !self.addrs.is_empty() {
            entry.addrs = self.addrs.iter().take(MAX_ADDRS).map(ToString::to_string).collect();
        }
        if self.relay.is_some() {
            entry.relay = self.relay.map(|r| one_line(&r));
        }
    }
}

impl From<&Hello> for Intro {
    fn from(h: &Hello) -> Self {
        Intro { name: h.name.clone(), addrs: h.addrs.clone(), relay: h.relay.clone() }
    }
}

fn clean_display_name(name: &str) -> String {
    let mut s = one_line(name);
    if s.len() > MAX_NAME_LEN {
        let mut cut = MAX_NAME_LEN;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// A completed handshake on a connection we dialed.
struct Dialed {
    conn: Connection,
    send: SendStream,
    recv: RecvStream,
    welcome: Welcome,
}

#[derive(Debug)]
enum DialError {
    Timeout(Duration),
    Unreachable(String),
    Refused(Refusal),
    Protocol(String),
}

impl DialError {
    fn describe(&self) -> String {
        match self {
            DialError::Timeout(d) => format!("no answer within {} ms", d.as_millis()),
            DialError::Unreachable(e) => format!("unreachable: {}", one_line(e)),
            DialError::Refused(r) => format!("refused: {r}"),
            DialError::Protocol(e) => format!("protocol error: {}", one_line(e)),
        }
    }
}

/// How a session ended.
enum End {
    /// We close, with this code and reason.
    Local(u32, String),
    /// The connection is gone; its close reason says why.
    Remote,
}

fn var(code: u32) -> VarInt {
    VarInt::from_u32(code)
}

/// A one-line description of why a connection closed.
fn describe_close(err: Option<ConnectionError>) -> Option<String> {
    match err? {
        ConnectionError::ApplicationClosed(c) => {
            let code = c.error_code.into_inner();
            let reason = String::from_utf8_lossy(&c.reason);
            match u32::try_from(code) {
                Ok(close::NORMAL | close::SHUTDOWN | close::REPLACED) => None,
                _ => Some(one_line(&format!("closed by peer (code {code}): {reason}"))),
            }
        }
        ConnectionError::LocallyClosed => None,
        ConnectionError::TimedOut => Some("connection timed out".to_owned()),
        other => Some(one_line(&other.to_string())),
    }
}

fn player(key: PublicKey) -> PlayerId {
    PlayerId(*key.as_bytes())
}

/// The iroh address to dial a peer at.
fn target(id: PlayerId, addrs: &[String], relay: Option<&str>) -> Result<EndpointAddr, String> {
    let key = PublicKey::from_bytes(&id.0).map_err(|e| format!("not a valid key: {e}"))?;
    let ips = addrs.iter().filter_map(|a| a.parse::<SocketAddr>().ok()).map(TransportAddr::Ip);
    let relay = relay.and_then(|r| r.parse::<RelayUrl>().ok()).map(TransportAddr::Relay);
    Ok(EndpointAddr::from_parts(key, ips.chain(relay)))
}

impl Node {
    /// Binds the endpoint, starts accepting, and starts a supervisor per accepted peer.
    pub(crate) async fn bind(
        secret: SecretKey,
        book: Arc<dyn PeerBook>,
        peers: Vec<Peer>,
        cfg: Config,
    ) -> Result<(Arc<Node>, Router), String> {
        // The control stream, plus one per request served at once.
        let requests_max = cfg.limits.requests_per_session.clamp(1, 1024);
        let transport = QuicTransportConfig::builder()
            .max_concurrent_bidi_streams(var(u32::try_from(requests_max + 1).unwrap_or(1025)))
            .max_concurrent_uni_streams(var(0))
            .receive_window(var(RECEIVE_WINDOW))
            .build();
        let mut builder = match &cfg.relay {
            Relay::Default => Endpoint::builder(presets::N0),
            Relay::Disabled => Endpoint::builder(presets::Minimal).relay_mode(RelayMode::Disabled),
            Relay::Url(url) => {
                let url: RelayUrl =
                    url.parse().map_err(|e| format!("invalid relay URL {url:?}: {e}"))?;
                Endpoint::builder(presets::Minimal).relay_mode(RelayMode::custom([url]))
            }
        };
        builder = builder.secret_key(secret).transport_config(transport).clear_ip_transports();
        if cfg.listen.is_empty() {
            return Err("no listen address".to_owned());
        }
        let (mut v4_default, mut v6_default) = (false, false);
        for addr in &cfg.listen {
            let first = if addr.is_ipv4() { &mut v4_default } else { &mut v6_default };
            let opts = if *first {
                BindOpts::default().set_prefix_len(if addr.is_ipv4() { 32 } else { 128 })
            } else {
                BindOpts::default()
            };
            *first = true;
            builder = builder
                .bind_addr_with_opts(*addr, opts)
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        }
        let endpoint = builder.bind().await.map_err(|e| format!("cannot bind: {e}"))?;
        let now = Instant::now();
        let node = Arc::new(Node {
            id: player(endpoint.id()),
            endpoint: endpoint.clone(),
            book,
            display_name: cfg.display_name.clone(),
            timeouts: cfg.timeouts,
            pending_max: cfg.limits.pending_max,
            handshake_max: cfg.limits.handshakes,
            requests_max,
            service: OnceLock::new(),
            handle: tokio::runtime::Handle::current(),
            state: Mutex::new(State::default()),
            gate: Mutex::new(Gate::new(cfg.limits, now)),
            incoming: Mutex::new(Bucket::per_second(
                cfg.limits.incoming_burst,
                cfg.limits.incoming_per_sec,
                now,
            )),
            stop: watch::channel(false).0,
            next_session: AtomicU64::new(1),
        });
        {
            let mut st = node.state.lock();
            for entry in peers {
                if entry.id == node.id {
                    continue;
                }
                let id = entry.id;
                let accepted = entry.state == PeerState::Accepted;
                let peer = st.peers.entry(id).or_insert_with(|| Link::new(entry));
                if accepted {
                    node.ensure_supervisor(id, peer);
                }
            }
        }
        let filter_node = node.clone();
        let router = Router::builder(endpoint)
            .incoming_filter(Arc::new(move |_incoming: &iroh::endpoint::Incoming| {
                filter_node.filter_incoming()
            }))
            .accept(ALPN, Handler(node.clone()))
            .spawn();
        info!(id = %node.id, addrs = ?node.endpoint.addr().ip_addrs().collect::<Vec<_>>(),
            "network started");
        Ok((node, router))
    }

    fn filter_incoming(&self) -> IncomingFilterOutcome {
        let busy = self.gate.lock().handshakes() >= self.handshake_max;
        if busy || !self.incoming.lock().take(Instant::now()) {
            debug!("incoming connection refused: rate limit");
            return IncomingFilterOutcome::Reject;
        }
        IncomingFilterOutcome::Accept
    }

    fn stopped(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    fn our_intro(&self) -> (Vec<SocketAddr>, Option<String>) {
        let addr = self.endpoint.addr();
        let addrs = addr.ip_addrs().take(MAX_ADDRS).copied().collect();
        let relay = addr.relay_urls().next().map(ToString::to_string);
        (addrs, relay)
    }

    fn hello(&self, invite: Option<[u8; 32]>) -> Hello {
        let (addrs, relay) = self.our_intro();
        Hello { version: PROTOCOL_VERSION, name: self.display_name.clone(), addrs, relay, invite }
    }

    fn welcome(&self) -> Welcome {
        let (addrs, relay) = self.our_intro();
        Welcome { version: PROTOCOL_VERSION, name: self.display_name.clone(), addrs, relay }
    }

    // ----- dialing ---------------------------------------------------------------------

    /// Dials `to` and runs the dialer's half of the handshake.
    async fn dial(
        &self,
        to: EndpointAddr,
        invite: Option<[u8; 32]>,
        dial_timeout: Duration,
    ) -> Result<Dialed, DialError> {
        let conn = match timeout(dial_timeout, self.endpoint.connect(to, ALPN)).await {
            Err(_) => return Err(DialError::Timeout(dial_timeout)),
            Ok(Err(e)) => return Err(DialError::Unreachable(e.to_string())),
            Ok(Ok(c)) => c,
        };
        let hello = Message::Hello(self.hello(invite));
        let exchange = async {
            let (mut send, mut recv) =
                conn.open_bi().await.map_err(|e| DialError::Unreachable(e.to_string()))?;
            write_frame(&mut send, &hello, MAX_CONTROL_FRAME)
                .await
                .map_err(|e| DialError::Unreachable(e.to_string()))?;
            let answer = read_frame(&mut recv, MAX_CONTROL_FRAME).await;
            Ok::<_, DialError>((send, recv, answer))
        };
        let (send, recv, answer) = match timeout(self.timeouts.handshake, exchange).await {
            Err(_) => {
                conn.close(var(close::HANDSHAKE_TIMEOUT), b"no welcome in time");
                return Err(DialError::Timeout(self.timeouts.handshake));
            }
            Ok(Err(e)) => {
                conn.close(var(close::NORMAL), b"");
                return Err(e);
            }
            Ok(Ok(x)) => x,
        };
        match answer {
            Ok(Some(Message::Welcome(welcome)))
                if (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&welcome.version) =>
            {
                Ok(Dialed { conn, send, recv, welcome })
            }
            Ok(Some(Message::Welcome(w))) => {
                conn.close(var(close::UNSUPPORTED_VERSION), b"unsupported protocol version");
                Err(DialError::Protocol(format!("peer speaks protocol version {}", w.version)))
            }
            Ok(Some(Message::Refused(r))) => {
                conn.close(var(close::NORMAL), b"");
                Err(DialError::Refused(r))
            }
            Ok(Some(other)) => {
                conn.close(var(close::PROTOCOL), b"expected welcome");
                Err(DialError::Protocol(format!("unexpected answer {other:?}")))
            }
            Ok(None) | Err(_) => {
                let why = describe_close(conn.close_reason())
                    .unwrap_or_else(|| "closed during the handshake".to_owned());
                conn.close(var(close::NORMAL), b"");
                Err(DialError::Unreachable(why))
            }
        }
    }

    /// Redeems a ticket: dials the inviter with its secret and records it as a peer.
    pub(crate) async fn add_peer(
        self: Arc<Self>,
        name: String,
        ticket: String,
        limit: Duration,
    ) -> Result<Peer, NetError> {
        validate_name(&name).map_err(|why| NetError::InvalidName(name.clone(), why))?;
        let ticket =
            Ticket::decode(&ticket).map_err(|e| NetError::TicketMalformed(e.0.to_owned()))?;
        if ticket.inviter == self.id {
            return Err(NetError::OwnTicket);
        }
        if ticket.expires_at <= Timestamp::now() {
            return Err(NetError::TicketExpired(ticket.expires_at));
        }
        self.check_name(&name, ticket.inviter)?;
        let addrs: Vec<String> = ticket.addrs.iter().map(ToString::to_string).collect();
        let to = target(ticket.inviter, &addrs, ticket.relay.as_deref())
            .map_err(NetError::TicketMalformed)?;
        let dialed = self.dial(to, Some(ticket.secret), limit).await.map_err(|e| match e {
            DialError::Refused(Refusal::InviteUsed) => NetError::TicketUsed,
            DialError::Refused(Refusal::InviteExpired) => {
                NetError::TicketExpired(ticket.expires_at)
            }
            DialError::Refused(Refusal::InviteUnknown) => NetError::TicketUnknown,
            DialError::Refused(r) => NetError::Refused(r.to_string()),
            DialError::Timeout(d) => NetError::Timeout(d),
            DialError::Unreachable(s) => NetError::Unreachable(one_line(&s)),
            DialError::Protocol(s) => NetError::Protocol(one_line(&s)),
        })?;
        let now = Timestamp::now();
        let entry = {
            let mut st = self.state.lock();
            if let Err(e) = Self::name_free(&st, &name, ticket.inviter) {
                drop(st);
                dialed.conn.close(var(close::NORMAL), b"");
                return Err(e);
            }
            let mut entry = Peer {
                id: ticket.inviter,
                name: name.clone(),
                their_name: clean_display_name(&ticket.name),
                addrs,
                relay: ticket.relay.clone(),
                state: PeerState::Accepted,
                added_at: now,
                last_seen: Some(now),
            };
            Intro {
                name: dialed.welcome.name.clone(),
                addrs: dialed.welcome.addrs.clone(),
                relay: dialed.welcome.relay.clone(),
            }
            .learn(&mut entry);
            if let Err(e) = self.book.put_peer(&entry) {
                drop(st);
                dialed.conn.close(var(close::NORMAL), b"");
                return Err(e.into());
            }
            self.gate.lock().forgive(&entry.id);
            st.peers.entry(entry.id).or_insert_with(|| Link::new(entry.clone())).entry =
                entry.clone();
            entry
        };
        info!(peer = %entry.name, "peer added from a ticket");
        self.start_session(entry.id, dialed);
        Ok(entry)
    }

    fn name_free(st: &State, name: &str, id: PlayerId) -> Result<(), NetError> {
        if let Some(p) = st.peers.get(&id)
            && p.entry.state == PeerState::Accepted
        {
            return Err(NetError::AlreadyPeer(p.entry.name.clone()));
        }
        if st.peers.values().any(|p| p.entry.name == name && p.entry.id != id) {
            return Err(NetError::NameTaken(name.to_owned()));
        }
        Ok(())
    }

    fn check_name(&self, name: &str, id: PlayerId) -> Result<(), NetError> {
        Self::name_free(&self.state.lock(), name, id)
    }

    /// Installs a dialed connection as the peer's session and drives it in a task.
    fn start_session(self: &Arc<Self>, peer: PlayerId, d: Dialed) {
        let intro =
            Intro { name: d.welcome.name.clone(), addrs: d.welcome.addrs, relay: d.welcome.relay };
        let Some(sid) = self.install(peer, &d.conn, self.id, intro) else {
            d.conn.close(var(close::REPLACED), b"duplicate connection");
            return;
        };
        let node = self.clone();
        self.handle.spawn(async move { node.drive(peer, sid, d.conn, d.send, d.recv).await });
    }

    /// Keeps one accepted peer connected: dials when it is not, with backoff on failure.
    async fn supervise(self: Arc<Self>, peer: PlayerId, wake: Arc<Notify>) {
        let t = self.timeouts;
        let mut backoff = t.backoff_min;
        let mut stop = self.stopped();
        loop {
            if *stop.borrow() {
                return;
            }
            let to = {
                let st = self.state.lock();
                match st.peers.get(&peer) {
                    None => return,
                    Some(p) if p.entry.state != PeerState::Accepted => return,
                    Some(p) if p.session.is_some() => None,
                    Some(p) => Some(target(peer, &p.entry.addrs, p.entry.relay.as_deref())),
                }
            };
            let Some(to) = to else {
                backoff = t.backoff_min;
                tokio::select! {
                    () = wake.notified() => continue,
                    _ = stop.changed() => return,
                }
            };
            let result = match to {
                Ok(to) => self.dial(to, None, t.dial).await,
                Err(e) => Err(DialError::Protocol(e)),
            };
            match result {
                Ok(dialed) => {
                    backoff = t.backoff_min;
                    self.start_session(peer, dialed);
                }
                Err(e) => {
                    debug!(%peer, error = %e.describe(), "dial failed");
                    if let Some(p) = self.state.lock().peers.get_mut(&peer)
                        && p.session.is_none()
                    {
                        p.last_error = Some(e.describe());
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = wake.notified() => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(t.backoff_max);
                }
            }
        }
    }

    /// Starts the supervisor of an accepted peer, if it has none. Called under `state`.
    fn ensure_supervisor(self: &Arc<Self>, id: PlayerId, peer: &mut Link) {
        if peer.supervisor.is_some() || peer.entry.state != PeerState::Accepted {
            return;
        }
        let wake = Arc::new(Notify::new());
        let task = self.handle.spawn(self.clone().supervise(id, wake.clone()));
        peer.supervisor = Some(Supervisor { wake, task: task.abort_handle() });
    }

    // ----- accepting -------------------------------------------------------------------

    async fn handle_incoming(self: Arc<Self>, conn: Connection) {
        let remote = player(conn.remote_id());
        if !self.gate.lock().enter_handshake(remote) {
            conn.close(var(close::BUSY), b"too many connections in their handshake");
            return;
        }
        let slot = Slot { node: &self, key: remote };
        let exchange = async {
            let (send, mut recv) =
                conn.accept_bi().await.map_err(|e| (close::NORMAL, e.to_string()))?;
            match read_frame(&mut recv, MAX_CONTROL_FRAME).await {
                Ok(Some(msg)) => Ok((send, recv, msg)),
                Ok(None) => Err((close::PROTOCOL, "stream ended before hello".to_owned())),
                Err(e) => Err((e.close_code(), e.to_string())),
            }
        };
        let (mut send, recv, msg) = match timeout(self.timeouts.handshake, exchange).await {
            Err(_) => {
                debug!(%remote, "handshake timeout");
                conn.close(var(close::HANDSHAKE_TIMEOUT), b"no hello in time");
                return;
            }
            Ok(Err((code, why))) => {
                debug!(%remote, %why, "bad handshake");
                conn.close(var(code), one_line(&why).as_bytes());
                return;
            }
            Ok(Ok(x)) => x,
        };
        let Message::Hello(hello) = msg else {
            conn.close(var(close::PROTOCOL), b"expected hello");
            return;
        };
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.version) {
            let why = format!(
                "unsupported protocol version {}; this side speaks {MIN_PROTOCOL_VERSION} to \
                 {PROTOCOL_VERSION}",
                hello.version
            );
            conn.close(var(close::UNSUPPORTED_VERSION), why.as_bytes());
            return;
        }
        let intro = Intro::from(&hello);
        match self.admit(remote, &hello) {
            Ok(()) => {
                let welcome = Message::Welcome(self.welcome());
                let sent = timeout(
                    self.timeouts.handshake,
                    write_frame(&mut send, &welcome, MAX_CONTROL_FRAME),
                )
                .await;
                drop(slot);
                if !matches!(sent, Ok(Ok(_))) {
                    conn.close(var(close::NORMAL), b"");
                    return;
                }
                let Some(sid) = self.install(remote, &conn, remote, intro) else {
                    conn.close(var(close::REPLACED), b"duplicate connection");
                    return;
                };
                self.drive(remote, sid, conn, send, recv).await;
            }
            Err(refusal) => {
                debug!(%remote, %refusal, "refused");
                let refused = Message::Refused(refusal);
                let _ = timeout(
                    self.timeouts.handshake,
                    write_frame(&mut send, &refused, MAX_CONTROL_FRAME),
                )
                .await;
                let _ = send.finish();
                // Let the dialer read the answer and close first; bounded.
                let _ = timeout(Duration::from_secs(1), conn.closed()).await;
                conn.close(var(close::REFUSED), refusal.to_string().as_bytes());
            }
        }
    }

    /// Decides whether `remote` gets a session. Redeems invitations and records
    /// connection requests on the way.
    fn admit(self: &Arc<Self>, remote: PlayerId, hello: &Hello) -> Result<(), Refusal> {
        let now = Timestamp::now();
        let mut st = self.state.lock();
        if st.stopping || remote == self.id {
            return Err(Refusal::NotAPeer);
        }
        let known = st.peers.get(&remote).map(|p| p.entry.state);
        if known == Some(PeerState::Accepted) {
            return Ok(());
        }
        let refusal = match hello.invite {
            None if known.is_some() => Refusal::Pending,
            None => Refusal::NotAPeer,
            Some(secret) => match self.book.redeem_invite(&secret_hash(&secret), now) {
                Ok(InviteCheck::Valid) => {
                    let mut entry = match st.peers.get(&remote) {
                        Some(p) => p.entry.clone(),
                        None => Self::new_entry(&st, remote, hello, now),
                    };
                    entry.state = PeerState::Accepted;
                    if let Err(e) = self.book.put_peer(&entry) {
                        warn!(error = %e, "could not record a new peer");
                        return Err(Refusal::InviteUnknown);
                    }
                    self.gate.lock().forgive(&remote);
                    info!(peer = %entry.name, "invitation redeemed");
                    st.peers.insert(remote, Link::new(entry));
                    return Ok(());
                }
                Ok(InviteCheck::Expired) => Refusal::InviteExpired,
                Ok(InviteCheck::Used) => Refusal::InviteUsed,
                Ok(InviteCheck::Unknown) => Refusal::InviteUnknown,
                Err(e) => {
                    warn!(error = %e, "could not check an invitation");
                    Refusal::InviteUnknown
                }
            },
        };
        let pending = st.peers.values().filter(|p| p.entry.state == PeerState::Pending).count();
        let verdict = self.gate.lock().request(remote, Instant::now());
        if verdict != RequestVerdict::Record || (known.is_none() && pending >= self.pending_max) {
            debug!(%remote, ?verdict, pending, "connection request not recorded");
            return Err(refusal);
        }
        let mut entry = match st.peers.get(&remote) {
            Some(p) => p.entry.clone(),
            None => Self::new_entry(&st, remote, hello, now),
        };
        Intro::from(hello).learn(&mut entry);
        entry.last_seen = Some(now);
        match self.book.connection_request(&entry) {
            Ok(()) => {
                info!(peer = %entry.name, "connection request recorded");
                match st.peers.get_mut(&remote) {
                    Some(p) => p.entry = entry,
                    None => {
                        st.peers.insert(remote, Link::new(entry));
                    }
                }
            }
            Err(e) => warn!(error = %e, "could not record a connection request"),
        }
        Err(refusal)
    }

    /// A pending entry for a stranger, named after its display name, unique among ours.
    fn new_entry(st: &State, id: PlayerId, hello: &Hello, now: Timestamp) -> Peer {
        let base = sanitize(&hello.name);
        let name = unique(&base, |n| st.peers.values().any(|p| p.entry.name == n));
        let mut entry = Peer {
            id,
            name,
            their_name: String::new(),
            addrs: Vec::new(),
            relay: None,
            state: PeerState::Pending,
            added_at: now,
            last_seen: Some(now),
        };
        Intro::from(hello).learn(&mut entry);
        entry
    }

    // ----- sessions --------------------------------------------------------------------

    /// Makes `conn` the live session of `peer`, or returns `None` when the peer is not
    /// accepted or an existing connection wins the tie-break.
    fn install(
        self: &Arc<Self>,
        peer: PlayerId,
        conn: &Connection,
        dialer: PlayerId,
        intro: Intro,
    ) -> Option<u64> {
        let now = Timestamp::now();
        let mut st = self.state.lock();
        if st.stopping {
            return None;
        }
        let p = st.peers.get_mut(&peer)?;
        if p.entry.state != PeerState::Accepted {
            return None;
        }
        if let Some(old) = &p.session {
            let alive = old.conn.close_reason().is_none();
            if alive && old.dialer != dialer && old.dialer == self.id.min(peer) {
                return None;
            }
            old.conn.close(var(close::REPLACED), b"replaced by a newer connection");
        }
        if let Some(old) = p.session.take() {
            p.retire(&old);
        }
        let sid = self.next_session.fetch_add(1, Ordering::Relaxed);
        p.session = Some(Live { id: sid, conn: conn.clone(), dialer, since: now });
        p.last_error = None;
        p.rtt = None;
        intro.learn(&mut p.entry);
        p.entry.last_seen = Some(now);
        if let Err(e) = self.book.put_peer(&p.entry) {
            warn!(error = %e, "could not record a peer's addresses");
        }
        info!(peer = %p.entry.name, "connected");
        self.ensure_supervisor(peer, p);
        p.wake();
        if let Some(service) = self.service.get() {
            self.tell_connected(service.clone(), peer);
        }
        Some(sid)
    }

    /// Ends session `sid` of `peer`, if it is still the live one.
    fn uninstall(&self, peer: PlayerId, sid: u64, error: Option<String>) {
        let now = Timestamp::now();
        let mut st = self.state.lock();
        let stopping = st.stopping;
        let Some(p) = st.peers.get_mut(&peer) else { return };
        if p.session.as_ref().map(|s| s.id) != Some(sid) {
            return;
        }
        if let Some(old) = p.session.take() {
            p.retire(&old);
        }
        p.rtt = None;
        p.entry.last_seen = Some(now);
        info!(peer = %p.entry.name, error = error.as_deref().unwrap_or("none"), "disconnected");
        p.last_error = error;
        if !stopping && let Err(e) = self.book.put_peer(&p.entry) {
            warn!(error = %e, "could not record a peer's last-seen time");
        }
        p.wake();
    }

    /// Runs an installed session until it ends: answers pings, sends ours, closes on
    /// silence, protocol errors or shutdown.
    async fn drive(
        self: &Arc<Self>,
        peer: PlayerId,
        sid: u64,
        conn: Connection,
        mut send: SendStream,
        mut recv: RecvStream,
    ) {
        let t = self.timeouts;
        let _ = send.set_priority(CONTROL_PRIORITY);
        let outstanding: Mutex<Option<(u64, Instant)>> = Mutex::new(None);
        let (tx, mut rx) = mpsc::channel::<Message>(16);
        let mut stop = self.stopped();
        let reader = async {
            loop {
                let frame = match timeout(t.idle, read_frame(&mut recv, MAX_CONTROL_FRAME)).await {
                    Err(_) => return End::Local(close::IDLE_TIMEOUT, "idle timeout".to_owned()),
                    Ok(Ok(Some(m))) => m,
                    Ok(Ok(None)) => return End::Local(close::NORMAL, "stream closed".to_owned()),
                    Ok(Err(crate::wire::FrameError::Io(_))) => return End::Remote,
                    Ok(Err(e)) => return End::Local(e.close_code(), e.to_string()),
                };
                self.seen(peer, sid, None);
                match frame {
                    Message::Ping(n) => {
                        // A peer that pings faster than we answer loses answers, not memory.
                        let _ = tx.try_send(Message::Pong(n));
                    }
                    Message::Pong(n) => {
                        let sent = outstanding.lock().take_if(|(m, _)| *m == n);
                        if let Some((_, at)) = sent {
                            self.seen(peer, sid, Some(at.elapsed()));
                        }
                    }
                    other => {
                        return End::Local(
                            close::PROTOCOL,
                            format!("unexpected message {}", kind(&other)),
                        );
                    }
                }
            }
        };
        let writer = async {
            let mut tick = tokio::time::interval(t.ping);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut nonce = 0u64;
            loop {
                let msg = tokio::select! {
                    _ = tick.tick() => {
                        nonce += 1;
                        *outstanding.lock() = Some((nonce, Instant::now()));
                        Message::Ping(nonce)
                    }
                    m = rx.recv() => match m {
                        Some(m) => m,
                        None => return End::Remote,
                    },
                };
                match timeout(t.idle, write_frame(&mut send, &msg, MAX_CONTROL_FRAME)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return End::Remote,
                    Err(_) => return End::Local(close::IDLE_TIMEOUT, "peer reads nothing".into()),
                }
            }
        };
        let streams = async {
            // Every other stream is one application request. A slot is taken before the
            // stream is accepted, so a peer with all slots busy waits (its further streams
            // stay within its QUIC stream limit); the tasks are aborted with this future.
            let slots = Arc::new(Semaphore::new(self.requests_max));
            let mut tasks = JoinSet::new();
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else { return End::Remote };
                while tasks.try_join_next().is_some() {}
                match conn.accept_bi().await {
                    Ok((s, r)) => {
                        let service = self.service.get().cloned();
                        tasks.spawn(async move {
                            serve(service, peer, s, r, t.idle).await;
                            drop(slot);
                        });
                    }
                    Err(_) => return End::Remote,
                }
            }
        };
        let end = tokio::select! {
            e = reader => e,
            e = writer => e,
            e = streams => e,
            _ = stop.wait_for(|s| *s) => End::Local(close::SHUTDOWN, "shutting down".into()),
        };
        let error = match end {
            End::Local(code, why) => {
                conn.close(var(code), why.as_bytes());
                (code != close::NORMAL && code != close::SHUTDOWN).then(|| one_line(&why))
            }
            End::Remote => describe_close(conn.close_reason()),
        };
        self.uninstall(peer, sid, error);
    }

    /// Notes a frame from `peer` on session `sid`, and an RTT sample if there is one.
    fn seen(&self, peer: PlayerId, sid: u64, rtt: Option<Duration>) {
        let mut st = self.state.lock();
        if let Some(p) = st.peers.get_mut(&peer)
            && p.session.as_ref().is_some_and(|s| s.id == sid)
        {
            p.entry.last_seen = Some(Timestamp::now());
            if rtt.is_some() {
                p.rtt = rtt;
            }
        }
    }

    // ----- application requests --------------------------------------------------------

    /// Calls `Service::connected(peer)` on a blocking thread.
    fn tell_connected(&self, service: Arc<dyn Service>, peer: PlayerId) {
        drop(self.handle.spawn_blocking(move || service.connected(peer)));
    }

    /// Sets the service, once; tells it about the sessions already live. `false` when a
    /// service was already set (the new one is dropped).
    pub(crate) fn set_service(&self, service: Arc<dyn Service>) -> bool {
        let st = self.state.lock();
        if self.service.set(service).is_err() {
            return false;
        }
        let Some(service) = self.service.get() else { return false };
        for (id, p) in &st.peers {
            if p.session.is_some() {
                self.tell_connected(service.clone(), *id);
            }
        }
        true
    }

    /// Sends `request` to `peer` on its live session and reads the answer, of at most
    /// `max_response` bytes (and `MAX_RESPONSE`). The caller bounds it in time.
    pub(crate) async fn request(
        self: Arc<Self>,
        peer: PlayerId,
        request: Vec<u8>,
        max_response: usize,
    ) -> Result<Vec<u8>, NetError> {
        let (conn, name) = {
            let st = self.state.lock();
            let Some(p) = st.peers.get(&peer) else {
                return Err(NetError::NotConnected(peer.to_string()));
            };
            match &p.session {
                Some(live) if live.conn.close_reason().is_none() => {
                    (live.conn.clone(), p.entry.name.clone())
                }
                _ => return Err(NetError::NotConnected(p.entry.name.clone())),
            }
        };
        let max = max_response.min(MAX_RESPONSE);
        ask(&conn, &request, max).await.map_err(|e| e.into_net(&name, max))
    }

    // ----- commands --------------------------------------------------------------------

    pub(crate) fn invite(&self, valid: Duration) -> Result<String, NetError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| NetError::Unavailable(format!("no randomness: {e}")))?;
        let valid = valid.min(MAX_TICKET_VALIDITY);
        let expires_at = Timestamp::from_system(SystemTime::now() + valid);
        let (addrs, relay) = self.our_intro();
        self.book.add_invite(secret_hash(&secret), expires_at)?;
        let ticket = Ticket {
            inviter: self.id,
            name: self.display_name.clone(),
            addrs,
            relay,
            secret,
            expires_at,
        };
        Ok(ticket.encode())
    }

    fn find(st: &State, name: &str) -> Result<PlayerId, NetError> {
        st.peers
            .values()
            .find(|p| p.entry.name == name)
            .map(|p| p.entry.id)
            .ok_or_else(|| NetError::NoSuchPeer(name.to_owned()))
    }

    pub(crate) fn accept(self: &Arc<Self>, name: &str) -> Result<Peer, NetError> {
        let mut st = self.state.lock();
        let id = Self::find(&st, name)?;
        let Some(p) = st.peers.get_mut(&id) else { return Err(NetError::NoSuchPeer(name.into())) };
        if p.entry.state == PeerState::Pending {
            let mut entry = p.entry.clone();
            entry.state = PeerState::Accepted;
            self.book.put_peer(&entry)?;
            p.entry = entry;
            self.gate.lock().forgive(&id);
            info!(peer = %name, "connection request accepted");
        }
        self.ensure_supervisor(id, p);
        p.wake();
        Ok(p.entry.clone())
    }

    pub(crate) fn reject(&self, name: &str) -> Result<(), NetError> {
        let mut st = self.state.lock();
        let id = Self::find(&st, name)?;
        if st.peers.get(&id).is_some_and(|p| p.entry.state == PeerState::Accepted) {
            return Err(NetError::NotPending(name.to_owned()));
        }
        self.book.remove_peer(&id)?;
        st.peers.remove(&id);
        self.gate.lock().reject(id, Instant::now());
        info!(peer = %name, "connection request rejected");
        Ok(())
    }

    pub(crate) fn remove(&self, name: &str) -> Result<(), NetError> {
        let mut st = self.state.lock();
        let id = Self::find(&st, name)?;
        self.book.remove_peer(&id)?;
        if let Some(p) = st.peers.remove(&id)
            && let Some(live) = &p.session
        {
            live.conn.close(var(close::REMOVED), b"removed");
        }
        self.gate.lock().reject(id, Instant::now());
        info!(peer = %name, "peer removed");
        Ok(())
    }

    pub(crate) fn status(&self) -> NetStatus {
        let addr = self.endpoint.addr();
        let st = self.state.lock();
        let mut peers: Vec<PeerStatus> = st
            .peers
            .values()
            .map(|p| {
                let (presence, live_in, live_out, since) = match (&p.session, p.entry.state) {
                    (_, PeerState::Pending) => (Presence::Pending, 0, 0, None),
                    (Some(live), PeerState::Accepted) => {
                        let s = live.conn.stats();
                        (Presence::Connected, s.udp_rx.bytes, s.udp_tx.bytes, Some(live.since))
                    }
                    (None, PeerState::Accepted) => (Presence::Offline, 0, 0, None),
                };
                PeerStatus {
                    id: p.entry.id,
                    name: p.entry.name.clone(),
                    their_name: p.entry.their_name.clone(),
                    state: p.entry.state,
                    presence,
                    last_seen: p.entry.last_seen,
                    addrs: p.entry.addrs.clone(),
                    relay: p.entry.relay.clone(),
                    rtt_ms: p.rtt.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    connected_since: since,
                    bytes_in: p.bytes_in + live_in,
                    bytes_out: p.bytes_out + live_out,
                    last_error: p.last_error.clone(),
                }
            })
            .collect();
        drop(st);
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        NetStatus {
            id: self.id,
            state: NetState::Running,
            addrs: addr.ip_addrs().map(ToString::to_string).collect(),
            relay: addr.relay_urls().next().map(ToString::to_string),
            peers,
            handshakes: self.gate.lock().handshakes(),
        }
    }

    /// Closes every session, stops the supervisors and the router. The caller bounds it.
    pub(crate) async fn shutdown(&self, router: Router) {
        {
            let mut st = self.state.lock();
            st.stopping = true;
            let now = Timestamp::now();
            for p in st.peers.values_mut() {
                p.supervisor = None;
                if let Some(live) = p.session.take() {
                    live.conn.close(var(close::SHUTDOWN), b"shutting down");
                    p.entry.last_seen = Some(now);
                    if let Err(e) = self.book.put_peer(&p.entry) {
                        warn!(error = %e, "could not record a peer's last-seen time");
                    }
                }
            }
        }
        self.stop.send_replace(true);
        if let Err(e) = router.shutdown().await {
            debug!(error = %e, "router shutdown");
        }
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Hello(_) => "hello",
        Message::Welcome(_) => "welcome",
        Message::Refused(_) => "refused",
        Message::Ping(_) => "ping",
        Message::Pong(_) => "pong",
    }
}

/// A handshake slot, given back when dropped.
struct Slot<'a> {
    node: &'a Node,
    key: PlayerId,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.node.gate.lock().leave_handshake(self.key);
    }
}

#[derive(Debug, Clone)]
struct Handler(Arc<Node>);

impl ProtocolHandler for Handler {
    async fn accept(&self, connection: Connection) -> Result<(), AcceptError> {
        self.0.clone().handle_incoming(connection).await;
        Ok(())
    }
}
