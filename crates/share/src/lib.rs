//! `indras-share`: sharing between peers, over any transport that carries one request and
//! one response per exchange between authenticated peers (in the daemon, `indras-net`).
//!
//! - [`server`]: the granter's side. Every request is checked against the live grants to the
//!   requesting peer when it is answered.
//! - [`fetch`]: the grantee's side of one file: only what is missing moves, every piece is
//!   checked against its BLAKE3 id before it is used.
//! - [`Share`] (this file): the engine of one vault. It syncs what each peer shares with us
//!   into the vault's mirror (state-based: on connect, and on a peer's change notice, it asks
//!   for the roots and the listings and applies the difference), fetches content in the
//!   background, enforces expiry on our own clock, announces our changes to the peers they
//!   concern, and completes transfers.
//! - [`attention`]: shared attention: our attention on what peers share with us goes to each
//!   artifact's steward (a thread of its own), and peers' attention on what we share is taken
//!   after it is checked. `Share::start_with(.., false)` (the daemon's `--attention off`)
//!   sends none and takes none: peers' batches are answered `Denied`, and they keep them.
//!
//! Layers: `proto` (messages) → `server`, `fetch`, `attention` → this file.

mod attention;
pub mod fetch;
pub mod proto;
mod realms;
pub mod server;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indras_artifacts::{
    AccessMode, Hash, MirrorChanges, MirrorEntry, NodeId, PeerState, PlayerId, SharedItem,
    SharedKind, Timestamp, Vault,
};
use parking_lot::{Condvar, Mutex};
use tracing::{debug, info, warn};

use crate::fetch::{Ask, FetchError, fetch_leaf};
use crate::proto::{FileRef, MAX_RESPONSE, Request, Response};
use crate::server::Server;

/// Carries requests to peers.
pub trait Transport: Send + Sync + 'static {
    /// Sends one encoded request to `peer` and returns its encoded answer.
    fn request(
        &self,
        peer: PlayerId,
        request: Vec<u8>,
        max_response: usize,
    ) -> Result<Vec<u8>, String>;
    /// The peers with a live session now.
    fn connected(&self) -> Vec<PlayerId>;
}

/// Told about every change to the mirror, to drop what the kernel caches of it.
pub trait Observer: Send + Sync + 'static {
    fn mirror_changed(&self, changes: &MirrorChanges);
    /// The vault's entry `name` in folder `parent` changed outside the mount (a transfer
    /// was received).
    fn vault_entry_changed(&self, parent: NodeId, name: &[u8]);
    /// What the realm views show may have changed (a realm, a member's word, our grants).
    fn realms_changed(&self);
}

/// Files fetched at once: a small file is one request, so many run side by side; a large
/// file's fetch also asks for several batches of its chunks at once (`fetch`).
const FETCHERS: usize = 8;
/// How often our own changes are looked at, and announced: an edit reaches a connected
/// grantee's view within about this, plus a round trip and the fetch.
const TICK: Duration = Duration::from_millis(20);
/// Attempts at one file, when a peer sends wrong bytes, before it waits to try again.
const ATTEMPTS: u32 = 3;
/// The first wait before a failed fetch is tried again; it doubles up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often the attention outbox is looked at: our attention reaches a connected steward
/// within about this after it is written (the mount writes it every 200 ms).
const ATTENTION_TICK: Duration = Duration::from_millis(50);

/// The sharing engine of one vault.
pub struct Share {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share").finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Job {
    Mirror { id: NodeId, peer: PlayerId, content: Hash },
    Transfer { peer: PlayerId, item: SharedItem },
}

#[derive(Default)]
struct Work {
    /// Peers to sync in full (they just connected).
    full: BTreeSet<PlayerId>,
    /// Peers whose roots changed, or some of whose folders did.
    changed: HashMap<PlayerId, (bool, BTreeSet<u64>)>,
    /// Peers to tell that their roots changed.
    announce: BTreeSet<PlayerId>,
    /// Peers to ask for their realms (they said something changed).
    realm_pull: BTreeSet<PlayerId>,
    /// Peers to tell that our realms changed, and whether every co-member is to be told.
    realm_notice: BTreeSet<PlayerId>,
    realm_notice_all: bool,
}

impl Work {
    fn is_empty(&self) -> bool {
        self.full.is_empty()
            && self.changed.is_empty()
            && self.announce.is_empty()
            && self.realm_pull.is_empty()
            && self.realm_notice.is_empty()
            && !self.realm_notice_all
    }
}

#[derive(Default)]
struct Fetches {
    queue: VecDeque<Job>,
    queued: HashSet<Job>,
    running: usize,
    /// Jobs that failed for the network or for wrong bytes: when to try again, and how many
    /// tries failed.
    retry: Vec<(Instant, Job, u32)>,
}

struct Inner {
    vault: Arc<Vault>,
    server: Server,
    transport: Arc<dyn Transport>,
    observer: Arc<dyn Observer>,
    work: Mutex<Work>,
    work_cv: Condvar,
    fetches: Mutex<Fetches>,
    fetch_cv: Condvar,
    /// Signalled whenever a file's content arrives.
    arrived: Condvar,
    arrived_lock: Mutex<()>,
    /// The digest of the roots each peer last asked for.
    roots_sent: Mutex<HashMap<PlayerId, Hash>>,
    /// Whether attention is sent to stewards and taken from peers.
    attention: bool,
    outbound: attention::Outbound,
    /// Wakes the attention sender (at shutdown).
    attention_cv: Condvar,
    attention_lock: Mutex<()>,
    stop: AtomicBool,
}

impl Ask for Inner {
    fn ask(&self, peer: PlayerId, req: &Request) -> Result<Response, String> {
        let bytes = self.transport.request(peer, proto::encode(req), MAX_RESPONSE)?;
        proto::decode(&bytes)
    }
}

impl Share {
    /// Starts the engine with attention shared: its sync thread, fetchers and attention
    /// sender.
    pub fn start(
        vault: Arc<Vault>,
        transport: Arc<dyn Transport>,
        observer: Arc<dyn Observer>,
    ) -> Share {
        Share::start_with(vault, transport, observer, true)
    }

    /// Starts the engine; with `attention` false, it neither sends our attention to stewards
    /// nor takes peers' (their batches are answered `Denied`).
    pub fn start_with(
        vault: Arc<Vault>,
        transport: Arc<dyn Transport>,
        observer: Arc<dyn Observer>,
        attention: bool,
    ) -> Share {
        vault.watch_changes();
        let inner = Arc::new(Inner {
            server: Server::new(vault.clone()),
            vault,
            transport,
            observer,
            work: Mutex::new(Work::default()),
            work_cv: Condvar::new(),
            fetches: Mutex::new(Fetches::default()),
            fetch_cv: Condvar::new(),
            arrived: Condvar::new(),
            arrived_lock: Mutex::new(()),
            roots_sent: Mutex::new(HashMap::new()),
            attention,
            outbound: attention::Outbound::default(),
            attention_cv: Condvar::new(),
            attention_lock: Mutex::new(()),
            stop: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        let i = inner.clone();
        threads.push(spawn("indras-share", move || i.sync_loop()));
        for n in 0..FETCHERS {
            let i = inner.clone();
            threads.push(spawn(&format!("indras-fetch-{n}"), move || i.fetch_loop()));
        }
        if attention {
            let i = inner.clone();
            threads.push(spawn("indras-attention", move || i.attention_loop()));
        }
        // Content that had not arrived before a restart is fetched again once its peer is
        // connected (the full sync at connect queues it).
        Share { inner, threads: Mutex::new(threads) }
    }

    /// Answers one encoded request from `peer` (an authenticated, accepted peer).
    pub fn handle(&self, peer: PlayerId, request: &[u8]) -> Vec<u8> {
        match proto::decode::<Request>(request) {
            Ok(Request::Changed { roots, dirs }) => {
                let mut w = self.inner.work.lock();
                let e = w.changed.entry(peer).or_default();
                e.0 |= roots;
                e.1.extend(dirs.into_iter().take(10_000));
                self.inner.work_cv.notify_all();
                proto::encode(&Response::Ok)
            }
            Ok(Request::Roots) => {
                let now = Timestamp::now();
                let response = match self.inner.server.roots(peer, now) {
                    Ok(roots) => {
                        let digest = *blake3::hash(&proto::encode(&roots)).as_bytes();
                        self.inner.roots_sent.lock().insert(peer, digest);
                        Response::Roots(roots)
                    }
                    Err(e) => Response::Failed(e.to_string()),
                };
                proto::encode(&response)
            }
            Ok(Request::Received { node, content }) => {
                let (answer, links) =
                    self.inner.server.received(peer, node, content, Timestamp::now());
                for (parent, name) in &links {
                    self.inner.observer.vault_entry_changed(*parent, name);
                }
                if !links.is_empty() {
                    info!(%peer, "a transfer completed: the file left this vault");
                }
                proto::encode(&answer)
            }
            Ok(Request::Realms) => proto::encode(&self.inner.realms_answer(peer, Timestamp::now())),
            Ok(Request::RealmsChanged) => {
                self.inner.work.lock().realm_pull.insert(peer);
                self.inner.work_cv.notify_all();
                proto::encode(&Response::Ok)
            }
            Ok(Request::LeaveRealm { id }) => proto::encode(&self.inner.realm_left_by(peer, id)),
            Ok(Request::Attention { events }) => {
                let answer = if self.inner.attention {
                    self.inner.outbound.take(&self.inner.vault, peer, &events)
                } else {
                    Response::Denied
                };
                proto::encode(&answer)
            }
            Ok(req) => proto::encode(&self.inner.server.answer(peer, req, Timestamp::now())),
            Err(_) => proto::encode(&Response::Denied),
        }
    }

    /// A session with `peer` came up: sync with it in full.
    pub fn connected(&self, peer: PlayerId) {
        self.inner.outbound.connected(peer);
        self.inner.work.lock().full.insert(peer);
        self.inner.work_cv.notify_all();
    }

    /// Our grants to `peer` changed (a share or a recall): tell it, and our co-members in
    /// realms (what we share with all of a realm may have changed).
    pub fn grants_changed(&self, peer: PlayerId) {
        self.inner.work.lock().announce.insert(peer);
        self.inner.realms_changed_here(&[]);
    }

    /// Our realms changed here (one was created, or its members changed): every co-member
    /// is told, and so are `also` (members just removed).
    pub fn realms_changed(&self, also: &[PlayerId]) {
        self.inner.realms_changed_here(also);
    }

    /// We left a realm `creator` created: it is told now if connected, else at the next
    /// connection.
    pub fn realm_left(&self, creator: PlayerId) {
        self.inner.work.lock().realm_pull.insert(creator);
        self.inner.realms_changed_here(&[]);
    }

    /// `peer` was removed: what it shares goes, except permanent grants.
    pub fn peer_removed(&self, peer: PlayerId) {
        match self.inner.vault.mirror_forget_peer(peer, Timestamp::now()) {
            Ok(c) => self.inner.observer.mirror_changed(&c),
            Err(e) => warn!(%peer, error = %e, "could not forget a removed peer's shares"),
        }
        self.inner.roots_sent.lock().remove(&peer);
    }

    /// Waits, at most `limit`, until mirror entry `id`'s content is here. Moves its fetch to
    /// the front of the queue. Returns whether it arrived.
    pub fn wait_ready(&self, id: NodeId, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let ready = |i: &Inner| i.vault.mirror_entry(id).ok().flatten().map(|e| (e.ready(), e));
        match ready(&self.inner) {
            None => return false,
            Some((true, _)) => return true,
            Some((false, e)) => {
                if let Some(content) = e.content {
                    self.inner.queue(Job::Mirror { id, peer: e.peer, content }, true);
                }
            }
        }
        let mut g = self.inner.arrived_lock.lock();
        loop {
            match ready(&self.inner) {
                None => return false,
                Some((true, _)) => return true,
                Some((false, _)) => {}
            }
            if self.inner.arrived.wait_until(&mut g, deadline).timed_out() {
                return ready(&self.inner).is_some_and(|(r, _)| r);
            }
        }
    }

    /// Stops the engine's threads and waits for them.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.work_cv.notify_all();
        self.inner.fetch_cv.notify_all();
        self.inner.attention_cv.notify_all();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new().name(name.to_owned()).spawn(f).expect("spawning a thread")
}

impl Inner {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Delivers our attention to the stewards it concerns, every `ATTENTION_TICK`.
    fn attention_loop(&self) {
        let mut g = self.attention_lock.lock();
        while !self.stopping() {
            self.attention_cv.wait_for(&mut g, ATTENTION_TICK);
            if self.stopping() {
                return;
            }
            let live = self.transport.connected();
            if !live.is_empty() {
                self.outbound.deliver(&self.vault, self, &live, &self.stop);
            }
        }
    }

    fn sync_loop(&self) {
        let mut last_expiry = Instant::now();
        while !self.stopping() {
            let work = {
                let mut w = self.work.lock();
                if w.is_empty() {
                    self.work_cv.wait_for(&mut w, TICK);
                }
                std::mem::take(&mut *w)
            };
            if self.stopping() {
                return;
            }
            for peer in &work.full {
                if let Err(e) = self.sync_peer(*peer, true, true, &[]) {
                    debug!(%peer, error = %e, "sync failed; it runs again at the next connection");
                }
            }
            for peer in work.full.iter().chain(&work.realm_pull) {
                if let Err(e) = self.sync_realms(*peer) {
                    debug!(%peer, error = %e, "realm sync failed; it runs again at the next notice or connection");
                }
            }
            for (peer, (roots, dirs)) in work.changed {
                if work.full.contains(&peer) {
                    continue;
                }
                let dirs: Vec<u64> = dirs.into_iter().collect();
                if let Err(e) = self.sync_peer(peer, false, roots, &dirs) {
                    debug!(%peer, error = %e, "sync failed");
                }
            }
            self.announce_local(&work.announce);
            if work.realm_notice_all || !work.realm_notice.is_empty() {
                self.send_realm_notices(&work.realm_notice, work.realm_notice_all);
            }
            self.retry_due();
            if last_expiry.elapsed() >= Duration::from_secs(1) {
                last_expiry = Instant::now();
                self.expire();
            }
        }
    }

    /// Syncs what `peer` shares with us: its roots (with `roots`, or `full`), and the
    /// listings of `dirs` (its node ids), or of every folder we keep of it (`full`).
    fn sync_peer(
        &self,
        peer: PlayerId,
        full: bool,
        roots: bool,
        dirs: &[u64],
    ) -> Result<(), String> {
        let v = &self.vault;
        let p = v.peer(peer).map_err(|e| e.to_string())?;
        let Some(p) = p.filter(|p| p.state == PeerState::Accepted) else { return Ok(()) };
        let folder = v.mirror_ensure_peer(peer, &p.name).map_err(|e| e.to_string())?;
        let mut to_list: Vec<(NodeId, u64)> = Vec::new();
        if full || roots {
            let roots = match self.ask(peer, &Request::Roots)? {
                Response::Roots(r) => r,
                other => return Err(format!("unexpected answer {}", fetch::kind(&other))),
            };
            for item in &roots {
                if item.grant == Some(AccessMode::Transfer) && item.kind == SharedKind::File {
                    self.queue(Job::Transfer { peer, item: item.clone() }, false);
                }
            }
            let changes =
                v.mirror_apply(folder.id, &roots, Timestamp::now()).map_err(|e| e.to_string())?;
            to_list.extend(changes.list.iter().copied());
            self.applied(peer, &changes);
        }
        if full {
            let known = v.mirror_of(peer).map_err(|e| e.to_string())?;
            for e in known {
                if e.kind == SharedKind::Dir
                    && e.remote != 0
                    && !to_list.iter().any(|t| t.0 == e.id)
                {
                    to_list.push((e.id, e.remote));
                }
                if let Some(c) = e.content
                    && e.have != Some(c)
                {
                    self.queue(Job::Mirror { id: e.id, peer, content: c }, false);
                }
            }
        }
        for d in dirs {
            for e in v.mirror_by_remote(peer, *d).map_err(|e| e.to_string())? {
                if e.kind == SharedKind::Dir {
                    to_list.push((e.id, e.remote));
                }
            }
        }
        while let Some((id, remote)) = to_list.pop() {
            if self.stopping() {
                break;
            }
            to_list.extend(self.list_dir(peer, id, remote)?);
        }
        Ok(())
    }

    /// Lists the peer's folder `remote` into mirror folder `id`; returns the folders that
    /// need listing in turn.
    fn list_dir(
        &self,
        peer: PlayerId,
        id: NodeId,
        remote: u64,
    ) -> Result<Vec<(NodeId, u64)>, String> {
        let mut items: Vec<SharedItem> = Vec::new();
        let mut after = 0;
        loop {
            match self.ask(peer, &Request::List { dir: remote, after })? {
                Response::Page { items: page, next } => {
                    items.extend(page);
                    if items.len() > 1_000_000 {
                        return Err("a shared folder of more than a million entries".into());
                    }
                    match next {
                        Some(n) if n > after => after = n,
                        _ => break,
                    }
                }
                // No longer granted: the roots say what goes.
                Response::Denied => return Ok(Vec::new()),
                other => return Err(format!("unexpected answer {}", fetch::kind(&other))),
            }
        }
        let changes =
            self.vault.mirror_apply(id, &items, Timestamp::now()).map_err(|e| e.to_string())?;
        self.applied(peer, &changes);
        Ok(changes.list)
    }

    fn applied(&self, peer: PlayerId, changes: &MirrorChanges) {
        for (id, content) in &changes.fetch {
            self.queue(Job::Mirror { id: *id, peer, content: *content }, false);
        }
        if !changes.touched.is_empty() {
            self.observer.mirror_changed(changes);
            self.arrived.notify_all();
            // What we share on of it changed too, for our own grantees.
            let dirs: Vec<NodeId> = changes.touched.iter().map(|t| t.1).collect();
            let ids: Vec<NodeId> = changes.touched.iter().map(|t| t.0).collect();
            self.vault.changed(&dirs, &ids);
        }
    }

    fn queue(&self, job: Job, urgent: bool) {
        let mut f = self.fetches.lock();
        if f.queued.contains(&job) {
            if urgent && let Some(pos) = f.queue.iter().position(|j| *j == job) {
                let j = f.queue.remove(pos).expect("found");
                f.queue.push_front(j);
            }
            return;
        }
        f.queued.insert(job.clone());
        if urgent {
            f.queue.push_front(job);
        } else {
            f.queue.push_back(job);
        }
        self.fetch_cv.notify_one();
    }

    fn fetch_loop(&self) {
        while !self.stopping() {
            let job = {
                let mut f = self.fetches.lock();
                match f.queue.pop_front() {
                    Some(j) => {
                        f.running += 1;
                        j
                    }
                    None => {
                        self.fetch_cv.wait_for(&mut f, Duration::from_millis(500));
                        continue;
                    }
                }
            };
            let mut attempt = 0;
            let mut again = false;
            loop {
                attempt += 1;
                match self.run(&job) {
                    Ok(()) | Err(FetchError::Denied) => break,
                    Err(FetchError::Corrupt(why)) if attempt < ATTEMPTS => {
                        warn!(error = %why, "rejected wrong bytes from a peer; fetching again");
                    }
                    Err(e) => {
                        info!(error = %e, "a shared file did not arrive; asking again later");
                        again = !matches!(e, FetchError::Local(_));
                        break;
                    }
                }
            }
            let mut f = self.fetches.lock();
            f.running -= 1;
            f.queued.remove(&job);
            if again {
                let tries = f
                    .retry
                    .iter()
                    .position(|(_, j, _)| *j == job)
                    .map_or(0, |i| f.retry.swap_remove(i).2);
                let wait = RETRY_MIN.saturating_mul(1 << tries.min(5)).min(RETRY_MAX);
                f.retry.push((Instant::now() + wait, job, tries + 1));
            } else {
                f.retry.retain(|(_, j, _)| *j != job);
            }
            drop(f);
            let _g = self.arrived_lock.lock();
            self.arrived.notify_all();
        }
    }

    fn run(&self, job: &Job) -> Result<(), FetchError> {
        let v = &self.vault;
        let now = Timestamp::now();
        match job {
            Job::Mirror { id, peer, content } => {
                let Some(e) = v.mirror_entry(*id)? else { return Ok(()) };
                if e.content != Some(*content) || e.have == Some(*content) {
                    return Ok(());
                }
                if v.mirror_hold_local(*id, *content, now)? {
                    self.arrived_one(&e);
                    return Ok(());
                }
                let file = self.file_ref(&e, *content)?;
                let staged = fetch_leaf(v, self, *peer, &file)?;
                if v.mirror_set_content(*id, &staged, Timestamp::now())? {
                    self.arrived_one(&e);
                }
                Ok(())
            }
            Job::Transfer { peer, item } => {
                let Some(content) = item.content else { return Ok(()) };
                let have = v.transfer_record(*peer, item.remote)?;
                let rec = match have {
                    Some(r) if r.content == content => r,
                    _ => {
                        let file = FileRef {
                            dir: None,
                            name: item.label.clone(),
                            node: item.remote,
                            content,
                        };
                        let staged = fetch_leaf(v, self, *peer, &file)?;
                        let (rec, inbox, name) =
                            v.receive_transfer(*peer, item.remote, &item.label, staged, now)?;
                        info!(peer = %peer, node = ?rec.node, "received a transfer");
                        self.observer.vault_entry_changed(NodeId::ROOT, b"inbox");
                        self.observer.vault_entry_changed(inbox, &name);
                        rec
                    }
                };
                if rec.confirmed {
                    return Ok(());
                }
                match self.ask(*peer, &Request::Received { node: item.remote, content }) {
                    Ok(Response::Ok) => v.confirm_transfer(*peer, item.remote)?,
                    Ok(other) => debug!(
                        answer = fetch::kind(&other),
                        "a transfer's confirmation was not taken"
                    ),
                    Err(e) => return Err(FetchError::Unavailable(e)),
                }
                Ok(())
            }
        }
    }

    /// Queues the failed fetches whose wait is over, of peers that are connected now (a
    /// peer that connects again is synced in full, which queues its missing files anyway).
    fn retry_due(&self) {
        let now = Instant::now();
        let due: Vec<Job> = {
            let mut f = self.fetches.lock();
            if f.retry.iter().all(|(at, ..)| *at > now) {
                return;
            }
            let live = self.transport.connected();
            let peer_of = |j: &Job| match j {
                Job::Mirror { peer, .. } | Job::Transfer { peer, .. } => *peer,
            };
            f.retry
                .iter_mut()
                .filter(|(at, j, _)| *at <= now && live.contains(&peer_of(j)))
                .map(|(at, j, _)| {
                    // Asked again now; the count stays, for the next wait.
                    *at = now + RETRY_MAX;
                    j.clone()
                })
                .collect()
        };
        for job in due {
            self.queue(job, false);
        }
    }

    fn arrived_one(&self, e: &MirrorEntry) {
        let changes = MirrorChanges {
            touched: vec![(e.id, e.parent, e.label.clone())],
            ..MirrorChanges::default()
        };
        self.observer.mirror_changed(&changes);
        self.vault.changed(&[e.parent], &[e.id]);
    }

    /// How the peer names file entry `e` when we ask for it.
    fn file_ref(&self, e: &MirrorEntry, content: Hash) -> Result<FileRef, FetchError> {
        let dir = if e.root == e.id {
            None
        } else {
            let parent = self.vault.mirror_entry(e.parent)?.ok_or(FetchError::Denied)?;
            Some(parent.remote)
        };
        Ok(FileRef { dir, name: e.their_label.clone(), node: e.remote, content })
    }

    /// Tells peers what changed of what we share with them: our own edits since the last
    /// tick, and the peers in `roots` (a share or a recall).
    fn announce_local(&self, roots: &BTreeSet<PlayerId>) {
        let changes = self.vault.take_changes();
        if changes.dirs.is_empty() && changes.nodes.is_empty() && roots.is_empty() {
            return;
        }
        let dirs: Vec<NodeId> = changes.dirs.into_iter().collect();
        let nodes: Vec<NodeId> = changes.nodes.into_iter().collect();
        let now = Timestamp::now();
        // A root's description (label, size, time, content) changes only with an operation on
        // the root itself: roots are described again only then, not on every change.
        let touched: HashSet<NodeId> = dirs.iter().chain(&nodes).copied().collect();
        let granted: Vec<(PlayerId, NodeId)> = if touched.is_empty() {
            Vec::new()
        } else {
            self.vault
                .grants(None)
                .map(|g| g.into_iter().map(|g| (g.grantee, g.node)).collect())
                .unwrap_or_default()
        };
        // A granted node renamed or changed here may be an item of ours in a realm view.
        if granted.iter().any(|(_, n)| touched.contains(n)) {
            self.observer.realms_changed();
        }
        for peer in self.transport.connected() {
            let sent = self.roots_sent.lock().get(&peer).copied();
            let roots_changed = roots.contains(&peer)
                || (sent.is_some()
                    && granted.iter().any(|(p, n)| *p == peer && touched.contains(n))
                    && self
                        .server
                        .roots(peer, now)
                        .ok()
                        .map(|r| *blake3::hash(&proto::encode(&r)).as_bytes())
                        != sent);
            let affected = if dirs.is_empty() && nodes.is_empty() {
                Vec::new()
            } else {
                self.server.affected(peer, &dirs, &nodes, now).unwrap_or_default()
            };
            if !roots_changed && affected.is_empty() {
                continue;
            }
            let req = Request::Changed { roots: roots_changed, dirs: affected };
            if let Err(e) = self.ask(peer, &req) {
                debug!(%peer, error = %e, "could not announce a change; the peer syncs at its next connection");
            }
        }
    }

    /// Ends timed grants on both sides of the clock: what peers gave us, and what we gave.
    fn expire(&self) {
        let now = Timestamp::now();
        match self.vault.mirror_expire(now) {
            Ok(c) if !c.touched.is_empty() => {
                info!(entries = c.removed.len(), "timed grants to us expired");
                self.observer.mirror_changed(&c);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not expire timed grants to us"),
        }
        match self.vault.expire_grants(now, indras_artifacts::Commit::CrashConsistent) {
            Ok(ended) if !ended.is_empty() => {
                let peers: BTreeSet<PlayerId> = ended.iter().map(|g| g.grantee).collect();
                self.announce_local(&peers);
                self.realms_changed_here(&[]);
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "could not expire our timed grants"),
        }
    }
}
