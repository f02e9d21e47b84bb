//! A hand-written malicious client (a raw iroh endpoint on our ALPN) against a real `Net`:
//! garbage, oversized and truncated frames, an unknown version, silence, a vanishing
//! peer, floods, and hostile application request streams. The `Net` must stay healthy: an
//! honest peer still connects, the handshake slots drain, recorded requests stay bounded,
//! a session outlives its bad request streams, and nothing panics.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{LIMIT, config, connected, key, wait_until};
use indras_artifacts::PlayerId;
use indras_net::wire::{self, ALPN, Hello, MAX_CONTROL_FRAME, Message, close};
use indras_net::{MAX_REQUEST, MemoryBook, Net, NetState, PeerState, Presence, Service, Ticket};
use iroh::endpoint::{Connection, ConnectionError, ReadError, ReadToEndError, RecvStream, presets};
use iroh::{Endpoint, EndpointAddr, PublicKey, RelayMode, SecretKey, TransportAddr};
use tokio::time::timeout;

async fn raw_endpoint(seed: u8) -> Endpoint {
    Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .secret_key(SecretKey::from_bytes(&[seed; 32]))
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .unwrap()
        .bind()
        .await
        .unwrap()
}

fn target_of(net: &Net) -> EndpointAddr {
    let key = PublicKey::from_bytes(&net.id().0).unwrap();
    let addrs: Vec<SocketAddr> = net.status().addrs.iter().map(|a| a.parse().unwrap()).collect();
    EndpointAddr::from_parts(key, addrs.into_iter().map(TransportAddr::Ip))
}

/// The application close code the `Net` closed `conn` with, waiting at most 10 s.
async fn close_code(conn: &Connection) -> Option<u32> {
    match timeout(LIMIT, conn.closed()).await {
        Ok(ConnectionError::ApplicationClosed(c)) => u32::try_from(c.error_code.into_inner()).ok(),
        _ => None,
    }
}

fn hello(version: u16, invite: Option<[u8; 32]>) -> Message {
    Message::Hello(Hello { version, name: "mallory".into(), addrs: vec![], relay: None, invite })
}

/// Connects, opens the control stream, writes `bytes`, and returns the close code.
async fn send_raw(ep: &Endpoint, to: &EndpointAddr, bytes: &[u8], finish: bool) -> Option<u32> {
    let conn = ep.connect(to.clone(), ALPN).await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    if finish {
        send.finish().unwrap();
    }
    close_code(&conn).await
}

#[test]
fn bad_handshakes_are_closed_with_the_right_codes_and_the_net_stays_healthy() {
    let book = Arc::new(MemoryBook::new());
    let a = Net::start(key(41), book.clone(), config("alice"));
    let to = target_of(&a);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ep = raw_endpoint(1).await;
        // Garbage that decodes as no message.
        assert_eq!(
            send_raw(&ep, &to, &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff], false).await,
            Some(close::PROTOCOL)
        );
        // A length prefix far over the limit: refused before any payload is buffered.
        assert_eq!(
            send_raw(&ep, &to, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3], false).await,
            Some(close::FRAME_TOO_LARGE)
        );
        let over = u32::try_from(MAX_CONTROL_FRAME + 1).unwrap().to_be_bytes();
        assert_eq!(send_raw(&ep, &to, &over, false).await, Some(close::FRAME_TOO_LARGE));
        // An unknown protocol version.
        let v99 = wire::encode(&hello(99, None), MAX_CONTROL_FRAME).unwrap();
        assert_eq!(send_raw(&ep, &to, &v99, false).await, Some(close::UNSUPPORTED_VERSION));
        // A frame cut short by the end of the stream.
        let mut cut = 100u32.to_be_bytes().to_vec();
        cut.extend_from_slice(&[0; 10]);
        assert_eq!(send_raw(&ep, &to, &cut, true).await, Some(close::TRUNCATED));
        // A frame that is a valid message but not a hello.
        let ping = wire::encode(&Message::Ping(1), MAX_CONTROL_FRAME).unwrap();
        assert_eq!(send_raw(&ep, &to, &ping, false).await, Some(close::PROTOCOL));
        // Silence: connected, no stream, nothing said.
        let conn = ep.connect(to.clone(), ALPN).await.unwrap();
        assert_eq!(close_code(&conn).await, Some(close::HANDSHAKE_TIMEOUT));
        // Half a frame, then silence: the handshake timeout closes it too.
        let conn = ep.connect(to.clone(), ALPN).await.unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0, 0, 0, 50, 1, 2]).await.unwrap();
        assert_eq!(close_code(&conn).await, Some(close::HANDSHAKE_TIMEOUT));
        // Half a frame, then the client vanishes.
        let conn = ep.connect(to.clone(), ALPN).await.unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0, 0, 0, 50, 1, 2]).await.unwrap();
        conn.close(0u32.into(), b"gone");
        ep.close().await;
    });
    assert!(wait_until(LIMIT, || a.status().handshakes == 0), "handshake slots drain");
    assert_eq!(book.request_count(), 0, "no bad handshake is recorded as a request");

    // An honest peer still gets in.
    let b = Net::start(key(42), Arc::new(MemoryBook::new()), config("bob"));
    b.add_peer("alice", &a.invite(Duration::from_secs(60)).unwrap(), LIMIT).unwrap();
    assert!(wait_until(LIMIT, || connected(&a, "bob") && connected(&b, "alice")));
    assert_eq!(a.status().state, NetState::Running);
}

#[test]
fn an_accepted_peer_that_misbehaves_or_vanishes_is_dropped_and_marked_offline() {
    let a = Net::start(key(51), Arc::new(MemoryBook::new()), config("alice"));
    let to = target_of(&a);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let invite = || Ticket::decode(&a.invite(Duration::from_secs(60)).unwrap()).unwrap().secret;
    let names = ["mallory", "mallory-2", "mallory-3", "mallory-4"];
    // (seed, bytes sent after the handshake, the close code expected; None: we vanish).
    let cases: [(u8, &[u8], Option<u32>); 4] = [
        (2, &[0, 0, 0, 3, 0xff, 0xff, 0xff], Some(close::PROTOCOL)),
        (3, &[0x7f, 0xff, 0xff, 0xff], Some(close::FRAME_TOO_LARGE)),
        (4, &[0, 0, 0, 40, 1, 2, 3], None),
        (5, &[], Some(close::IDLE_TIMEOUT)),
    ];
    let secrets: Vec<[u8; 32]> = cases.iter().map(|_| invite()).collect();
    rt.block_on(async {
        for ((seed, garbage, want), secret) in cases.into_iter().zip(secrets) {
            let ep = raw_endpoint(seed).await;
            let conn = ep.connect(to.clone(), ALPN).await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let frame = wire::encode(&hello(1, Some(secret)), MAX_CONTROL_FRAME).unwrap();
            send.write_all(&frame).await.unwrap();
            let welcome = wire::read_frame(&mut recv, MAX_CONTROL_FRAME).await.unwrap();
            assert!(matches!(welcome, Some(Message::Welcome(_))), "{welcome:?}");
            send.write_all(garbage).await.unwrap();
            match want {
                Some(want) => assert_eq!(close_code(&conn).await, Some(want), "seed {seed}"),
                // Mid-frame, the peer disappears without a word.
                None => conn.close(0u32.into(), b""),
            }
            ep.close().await;
        }
    });
    for name in names {
        assert!(
            wait_until(LIMIT, || a.status().peer(name).map(|p| p.presence)
                == Some(Presence::Offline)),
            "{name}: {:?}",
            a.status().peer(name)
        );
        assert_eq!(a.status().peer(name).unwrap().state, PeerState::Accepted);
    }
    let st = a.status();
    assert!(st.peer("mallory").unwrap().last_error.is_some(), "{st:?}");
}

#[test]
fn floods_of_connections_and_requests_stay_bounded() {
    let book = Arc::new(MemoryBook::new());
    let a = Net::start(key(61), book.clone(), config("alice"));
    let to = target_of(&a);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // One key opens 100 silent connections at once: most are refused at the door or
        // closed as busy; the rest time out in their handshake.
        let ep = raw_endpoint(5).await;
        let attempts = (0..100).map(|_| {
            let (ep, to) = (ep.clone(), to.clone());
            tokio::spawn(async move {
                match timeout(LIMIT, ep.connect(to, ALPN)).await {
                    Ok(Ok(conn)) => close_code(&conn).await,
                    _ => None,
                }
            })
        });
        let mut codes = Vec::new();
        for a in attempts.collect::<Vec<_>>() {
            codes.push(a.await.unwrap());
        }
        let busy = codes.iter().filter(|c| **c == Some(close::BUSY)).count();
        let timed_out = codes.iter().filter(|c| **c == Some(close::HANDSHAKE_TIMEOUT)).count();
        assert!(timed_out <= 4, "at most 4 handshakes per key: {codes:?}");
        assert!(busy + timed_out > 0, "{codes:?}");
        ep.close().await;

        // Forty strangers say hello: only a burst of requests is recorded.
        let mut eps = Vec::new();
        for seed in 100..140u8 {
            let ep = raw_endpoint(seed).await;
            let frame = wire::encode(&hello(1, None), MAX_CONTROL_FRAME).unwrap();
            let (ep2, to2) = (ep.clone(), to.clone());
            eps.push(ep);
            tokio::spawn(async move {
                if let Ok(Ok(conn)) = timeout(LIMIT, ep2.connect(to2, ALPN)).await
                    && let Ok((mut send, mut recv)) = conn.open_bi().await
                {
                    let _ = send.write_all(&frame).await;
                    let _ = wire::read_frame(&mut recv, MAX_CONTROL_FRAME).await;
                    conn.close(0u32.into(), b"");
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        for ep in eps {
            ep.close().await;
        }
    });
    let limits = indras_net::Limits::default();
    assert!(book.request_count() <= limits.requests_burst as usize + 1, "{}", book.request_count());
    assert!(book.request_count() >= 1);
    let pending = a.status().peers.iter().filter(|p| p.presence == Presence::Pending).count();
    assert!(pending <= limits.pending_max);
    assert!(wait_until(LIMIT, || a.status().handshakes == 0), "handshake slots drain");

    let b = Net::start(key(62), Arc::new(MemoryBook::new()), config("bob"));
    b.add_peer("alice", &a.invite(Duration::from_secs(60)).unwrap(), LIMIT).unwrap();
    assert!(wait_until(LIMIT, || connected(&a, "bob") && connected(&b, "alice")));
}

/// Answers each request with the request itself.
struct Echo;

impl Service for Echo {
    fn handle(&self, _peer: PlayerId, request: Vec<u8>) -> Vec<u8> {
        request
    }

    fn connected(&self, _peer: PlayerId) {}
}

/// Resident memory of this process in KiB, where the system tells it.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}

/// The code the `Net` reset a request stream with, reading whatever it sends first.
async fn reset_code(recv: &mut RecvStream) -> Option<u64> {
    match timeout(LIMIT, recv.read_to_end(1 << 20)).await {
        Ok(Err(ReadToEndError::Read(ReadError::Reset(code)))) => Some(code.into_inner()),
        other => panic!("expected a reset, got {other:?}"),
    }
}

/// Opens a request stream, writes `bytes`, finishes it if told, and returns the reset code.
/// The stream stays open until the `Net` resets it.
async fn bad_request(conn: &Connection, bytes: &[u8], finish: bool) -> Option<u64> {
    let (mut send, mut recv) = timeout(LIMIT, conn.open_bi()).await.unwrap().unwrap();
    // The Net may stop our side before we are done writing.
    if send.write_all(bytes).await.is_ok() && finish {
        let _ = send.finish();
    }
    reset_code(&mut recv).await
}

/// An honest request: one frame each way.
async fn good_request(conn: &Connection, request: &[u8]) -> Vec<u8> {
    let (mut send, mut recv) = timeout(LIMIT, conn.open_bi()).await.unwrap().unwrap();
    let mut frame = u32::try_from(request.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(request);
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    let answer = timeout(LIMIT, recv.read_to_end(MAX_REQUEST + 4)).await.unwrap().unwrap();
    assert_eq!(answer[..4], u32::try_from(answer.len() - 4).unwrap().to_be_bytes());
    answer[4..].to_vec()
}

#[test]
fn hostile_request_streams_are_reset_and_the_session_lives_on() {
    let a = Net::start(key(91), Arc::new(MemoryBook::new()), config("alice"));
    a.set_service(Arc::new(Echo));
    let to = target_of(&a);
    let secret = Ticket::decode(&a.invite(Duration::from_secs(60)).unwrap()).unwrap().secret;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pings = Arc::new(AtomicU64::new(0));
    let (before, after) = rt.block_on(async {
        let ep = raw_endpoint(9).await;
        let conn = ep.connect(to.clone(), ALPN).await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let frame = wire::encode(&hello(1, Some(secret)), MAX_CONTROL_FRAME).unwrap();
        send.write_all(&frame).await.unwrap();
        let welcome = wire::read_frame(&mut recv, MAX_CONTROL_FRAME).await.unwrap();
        assert!(matches!(welcome, Some(Message::Welcome(_))), "{welcome:?}");
        // The control stream answers the Net's pings throughout, and counts them.
        let counter = pings.clone();
        tokio::spawn(async move {
            while let Ok(Some(Message::Ping(n))) =
                wire::read_frame(&mut recv, MAX_CONTROL_FRAME).await
            {
                counter.fetch_add(1, Ordering::Relaxed);
                let pong = Message::Pong(n);
                if wire::write_frame(&mut send, &pong, MAX_CONTROL_FRAME).await.is_err() {
                    break;
                }
            }
        });
        assert_eq!(good_request(&conn, b"first").await, b"first");
        let before = rss_kib();

        // Lengths over the limit are refused before anything is buffered.
        let over = u32::try_from(MAX_REQUEST + 1).unwrap().to_be_bytes();
        for i in 0..200 {
            let bytes: &[u8] = if i % 2 == 0 { &[0xff, 0xff, 0xff, 0xff, 1, 2, 3] } else { &over };
            let code = bad_request(&conn, bytes, i % 4 < 2).await;
            assert_eq!(code, Some(close::FRAME_TOO_LARGE.into()));
        }
        // Frames cut short by the end of the stream, small and at the limit.
        let mut cut = 100u32.to_be_bytes().to_vec();
        cut.extend_from_slice(&[7; 10]);
        assert_eq!(bad_request(&conn, &cut, true).await, Some(close::TRUNCATED.into()));
        assert_eq!(bad_request(&conn, &[0, 0], true).await, Some(close::TRUNCATED.into()));
        let mut big = u32::try_from(MAX_REQUEST).unwrap().to_be_bytes().to_vec();
        big.resize(4 + MAX_REQUEST - 1, 7);
        for _ in 0..50 {
            assert_eq!(bad_request(&conn, &big, true).await, Some(close::TRUNCATED.into()));
        }
        // Bytes after the request frame.
        let extra = [0, 0, 0, 2, 1, 2, 3];
        assert_eq!(bad_request(&conn, &extra, true).await, Some(close::PROTOCOL.into()));
        // Streams never finished, more than the Net serves at once: each is reset after the
        // idle timeout, the ones over the limit once a slot is free.
        let hung: Vec<_> = (0..40)
            .map(|_| {
                let (conn, cut) = (conn.clone(), cut.clone());
                tokio::spawn(async move {
                    timeout(LIMIT * 3, bad_request(&conn, &cut, false)).await.unwrap()
                })
            })
            .collect();
        for task in hung {
            assert_eq!(task.await.unwrap(), Some(close::IDLE_TIMEOUT.into()));
        }
        let after = rss_kib();

        // The session lived through it all: pings went on, and requests still work.
        let seen = pings.load(Ordering::Relaxed);
        assert_eq!(good_request(&conn, b"still here").await, b"still here");
        assert_eq!(good_request(&conn, &vec![3; MAX_REQUEST]).await, vec![3; MAX_REQUEST]);
        let st = a.status();
        let mallory = st.peer("mallory").unwrap();
        assert_eq!(mallory.presence, Presence::Connected);
        assert!(mallory.rtt_ms.is_some() && mallory.last_error.is_none(), "{mallory:?}");
        let start = tokio::time::Instant::now();
        while pings.load(Ordering::Relaxed) <= seen && start.elapsed() < LIMIT {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(pings.load(Ordering::Relaxed) > seen, "the Net still pings");
        conn.close(0u32.into(), b"done");
        ep.close().await;
        (before, after)
    });
    if let (Some(before), Some(after)) = (before, after) {
        assert!(after < before + 256 * 1024, "resident memory grew from {before} to {after} KiB");
    }
}
