//! Application requests between two real `Net`s on 127.0.0.1: both directions, many
//! threads at once, answers at and over the limits, a failing service, timeouts, peers
//! that are not connected or serve nothing yet, and `Service::connected` on every session.

mod common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{LIMIT, config, connected, key, presence, wait_until};
use indras_artifacts::PlayerId;
use indras_net::wire::close;
use indras_net::{
    MAX_REQUEST, MAX_RESPONSE, MemoryBook, Net, NetError, Presence, Service, player_id,
};

/// Answers `size N` with N bytes, `slow` once released, `panic` by panicking, and anything
/// else with `<name> to <peer>: <request>`. Records every `connected` call.
struct Echo {
    name: &'static str,
    connected: Mutex<Vec<PlayerId>>,
    released: (Mutex<bool>, Condvar),
}

impl Echo {
    fn new(name: &'static str) -> Arc<Echo> {
        Arc::new(Echo {
            name,
            connected: Mutex::new(Vec::new()),
            released: (Mutex::new(false), Condvar::new()),
        })
    }

    fn release(&self) {
        *self.released.0.lock().unwrap() = true;
        self.released.1.notify_all();
    }

    fn connections(&self, peer: PlayerId) -> usize {
        self.connected.lock().unwrap().iter().filter(|p| **p == peer).count()
    }
}

impl Service for Echo {
    fn handle(&self, peer: PlayerId, request: Vec<u8>) -> Vec<u8> {
        if request == b"slow" {
            let (lock, cv) = &self.released;
            let guard = lock.lock().unwrap();
            let _unused = cv.wait_timeout_while(guard, LIMIT * 3, |r| !*r).unwrap();
            return b"late".to_vec();
        }
        assert!(request != b"panic", "asked to panic");
        if let Some(n) = request.strip_prefix(b"size ") {
            let n: usize = std::str::from_utf8(n).unwrap().parse().unwrap();
            return vec![0x5a; n];
        }
        let mut out = format!("{} to {peer}: ", self.name).into_bytes();
        out.extend_from_slice(&request);
        out
    }

    fn connected(&self, peer: PlayerId) {
        self.connected.lock().unwrap().push(peer);
    }
}

fn echoed(name: &str, peer: &Net, request: &[u8]) -> Vec<u8> {
    let mut out = format!("{name} to {}: ", peer.id()).into_bytes();
    out.extend_from_slice(request);
    out
}

/// alice and bob, peered, connected both ways.
fn pair(seed: u8) -> (Net, Net, Arc<MemoryBook>) {
    let a = Net::start(key(seed), Arc::new(MemoryBook::new()), config("alice"));
    let book_b = Arc::new(MemoryBook::new());
    let b = Net::start(key(seed + 1), book_b.clone(), config("bob"));
    b.add_peer("alice", &a.invite(Duration::from_secs(60)).unwrap(), LIMIT).unwrap();
    assert!(wait_until(LIMIT, || connected(&a, "bob") && connected(&b, "alice")));
    (a, b, book_b)
}

#[test]
fn requests_go_both_ways_from_many_threads_within_the_limits() {
    let (a, b, _) = pair(71);
    let (sa, sb) = (Echo::new("alice"), Echo::new("bob"));
    a.set_service(sa.clone());
    b.set_service(sb.clone());
    assert!(wait_until(LIMIT, || sa.connections(b.id()) == 1 && sb.connections(a.id()) == 1));

    assert_eq!(a.request(b.id(), b"hi".to_vec(), 1024, LIMIT).unwrap(), echoed("bob", &a, b"hi"));
    assert_eq!(b.request(a.id(), b"yo".to_vec(), 1024, LIMIT).unwrap(), echoed("alice", &b, b"yo"));
    assert_eq!(a.request(b.id(), Vec::new(), 1024, LIMIT).unwrap(), echoed("bob", &a, b""));

    // 16 threads at once, in both directions, with requests up to the limit.
    std::thread::scope(|s| {
        for t in 0..16u8 {
            let (from, to, name) = if t % 2 == 0 { (&a, &b, "bob") } else { (&b, &a, "alice") };
            s.spawn(move || {
                for i in 0..10usize {
                    let len = [0, 1, 1000, MAX_REQUEST - 100][i % 4] + usize::from(t);
                    let req: Vec<u8> = (0..len).map(|j| (j + i) as u8 ^ t).collect();
                    let answer = from.request(to.id(), req.clone(), MAX_RESPONSE, LIMIT).unwrap();
                    assert_eq!(answer, echoed(name, from, &req), "thread {t} request {i}");
                }
            });
        }
    });

    // Answers up to MAX_RESPONSE arrive whole; longer ones are refused on either side.
    for n in [MAX_RESPONSE - 1, MAX_RESPONSE] {
        let answer = a.request(b.id(), format!("size {n}").into_bytes(), n, LIMIT).unwrap();
        assert!(answer.len() == n && answer.iter().all(|x| *x == 0x5a));
    }
    let over = a.request(b.id(), b"size 1000".to_vec(), 999, LIMIT).unwrap_err();
    assert_eq!(over, NetError::ResponseTooLarge(1000, 999));
    let over = a.request(b.id(), b"size 1000".to_vec(), usize::MAX, LIMIT).unwrap();
    assert_eq!(over.len(), 1000, "max_response above MAX_RESPONSE is MAX_RESPONSE");
    let huge = format!("size {}", MAX_RESPONSE + 1).into_bytes();
    let err = a.request(b.id(), huge, usize::MAX, LIMIT).unwrap_err();
    assert_eq!(err, NetError::RequestReset(close::SERVICE_FAILED.into()));
    let err = a.request(b.id(), vec![0; MAX_REQUEST + 1], MAX_RESPONSE, LIMIT).unwrap_err();
    assert_eq!(err, NetError::RequestTooLarge(MAX_REQUEST + 1));
    let st = a.status();
    assert!(st.peer("bob").unwrap().bytes_in > 2 * MAX_RESPONSE as u64, "{st:?}");

    // A service that panics fails that request only.
    let err = a.request(b.id(), b"panic".to_vec(), 1024, LIMIT).unwrap_err();
    assert_eq!(err, NetError::RequestReset(close::SERVICE_FAILED.into()));
    assert_eq!(a.request(b.id(), b"ok".to_vec(), 1024, LIMIT).unwrap(), echoed("bob", &a, b"ok"));

    // A slow answer times out; the session and later requests are unharmed.
    let err = a.request(b.id(), b"slow".to_vec(), 1024, Duration::from_millis(300)).unwrap_err();
    assert_eq!(err, NetError::Timeout(Duration::from_millis(300)));
    sb.release();
    assert_eq!(a.request(b.id(), b"ok".to_vec(), 1024, LIMIT).unwrap(), echoed("bob", &a, b"ok"));

    // From a thread of another tokio runtime.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let answer = rt.block_on(async { a.request(b.id(), b"rt".to_vec(), 1024, LIMIT) });
    assert_eq!(answer.unwrap(), echoed("bob", &a, b"rt"));

    // A key that is not a peer, and a peer that is offline, are not connected.
    let (stranger, bob) = (player_id(&key(99)), b.id());
    let err = a.request(stranger, b"hi".to_vec(), 1024, LIMIT).unwrap_err();
    assert_eq!(err, NetError::NotConnected(stranger.to_string()));
    b.shutdown();
    assert!(wait_until(LIMIT, || presence(&a, "bob") == Some(Presence::Offline)));
    let err = a.request(bob, b"hi".to_vec(), 1024, LIMIT).unwrap_err();
    assert_eq!(err, NetError::NotConnected("bob".into()));
    assert_eq!(err.to_string(), "not connected to bob");
}

#[test]
fn requests_wait_for_the_service_and_connected_is_told_of_every_session() {
    let (a, b, book_b) = pair(81);
    let sa = Echo::new("alice");
    a.set_service(sa.clone());
    // Set while the session is live: told at once.
    assert!(wait_until(LIMIT, || sa.connections(b.id()) == 1));

    // bob serves nothing yet: the request is refused, cleanly.
    let answer = b.request(a.id(), b"hi".to_vec(), 1024, LIMIT).unwrap();
    assert_eq!(answer, echoed("alice", &b, b"hi"));
    let err = a.request(b.id(), b"hi".to_vec(), 1024, LIMIT).unwrap_err();
    assert_eq!(err, NetError::RequestReset(close::NO_SERVICE.into()));
    assert!(err.to_string().contains("no service"), "{err}");
    assert!(connected(&a, "bob") && connected(&b, "alice"));

    let sb = Echo::new("bob");
    b.set_service(sb.clone());
    b.set_service(Echo::new("ignored"));
    assert!(wait_until(LIMIT, || sb.connections(a.id()) == 1));
    assert_eq!(a.request(b.id(), b"hi".to_vec(), 1024, LIMIT).unwrap(), echoed("bob", &a, b"hi"));

    // After bob restarts, each side is told of the new session.
    let bob = b.id();
    b.shutdown();
    assert!(wait_until(LIMIT, || presence(&a, "bob") == Some(Presence::Offline)));
    let b = Net::start(key(82), book_b, config("bob"));
    let sb2 = Echo::new("bob");
    b.set_service(sb2.clone());
    assert!(wait_until(LIMIT, || connected(&a, "bob") && connected(&b, "alice")));
    assert!(wait_until(LIMIT, || sa.connections(bob) == 2 && sb2.connections(a.id()) == 1));
    assert_eq!(
        a.request(bob, b"again".to_vec(), 1024, LIMIT).unwrap(),
        echoed("bob", &a, b"again")
    );
    assert_eq!(sb.connections(a.id()), 1, "the old service is not told of the new session");

    // A service set before peering is told by the session's install, on both sides.
    let c = Net::start(key(84), Arc::new(MemoryBook::new()), config("carol"));
    let sc = Echo::new("carol");
    c.set_service(sc.clone());
    c.add_peer("alice", &a.invite(Duration::from_secs(60)).unwrap(), LIMIT).unwrap();
    assert!(wait_until(LIMIT, || sc.connections(a.id()) == 1 && sa.connections(c.id()) == 1));
    assert_eq!(
        c.request(a.id(), b"hey".to_vec(), 1024, LIMIT).unwrap(),
        echoed("alice", &c, b"hey")
    );

    // A network that does not run takes a service and answers requests with its state.
    let off = Net::disabled(key(83), "--no-network");
    off.set_service(Echo::new("off"));
    let err = off.request(a.id(), b"hi".to_vec(), 1024, LIMIT).unwrap_err();
    assert!(matches!(err, NetError::Disabled(_)), "{err:?}");
}
