//! Two and three real `Net`s on 127.0.0.1 with in-memory books: invitations, peering,
//! reconnection after restarts, connection requests, and the ticket errors.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{LIMIT, config, connected, key, presence, wait_until};
use indras_artifacts::Timestamp;
use indras_net::{
    MemoryBook, Net, NetError, NetState, Peer, PeerBook, PeerState, Presence, Ticket,
};

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn invite_add_peer_and_reconnect_after_either_restarts() {
    let (book_a, book_b) = (Arc::new(MemoryBook::new()), Arc::new(MemoryBook::new()));
    let a = Net::start(key(1), book_a.clone(), config("alice"));
    let b = Net::start(key(2), book_b.clone(), config("bob"));
    assert_eq!(a.status().state, NetState::Running);
    assert_eq!(a.id(), indras_net::player_id(&key(1)));
    assert_ne!(a.id(), b.id());

    let ticket = a.invite(HOUR).unwrap();
    assert!(ticket.starts_with("indras1") && !ticket.contains(char::is_whitespace));
    let entry = b.add_peer("al", &ticket, LIMIT).unwrap();
    assert_eq!(
        (entry.id, entry.state, entry.their_name.as_str()),
        (a.id(), PeerState::Accepted, "alice")
    );
    assert!(!entry.addrs.is_empty());

    // The inviter names us by our display name, and both see the other connected.
    assert!(wait_until(LIMIT, || connected(&a, "bob") && connected(&b, "al")));
    let on_a = book_a.by_name("bob").unwrap();
    assert_eq!((on_a.id, on_a.state), (b.id(), PeerState::Accepted));
    assert!(!on_a.addrs.is_empty(), "the inviter keeps the addresses it learned");
    assert!(wait_until(LIMIT, || {
        let (sa, sb) = (a.status(), b.status());
        let (pa, pb) = (sa.peer("bob").unwrap(), sb.peer("al").unwrap());
        pa.rtt_ms.is_some() && pb.rtt_ms.is_some() && pa.bytes_in > 0 && pb.bytes_out > 0
    }));
    let s = a.status();
    assert_eq!((s.connected(), s.known()), (1, 1));
    assert!(s.peer("bob").unwrap().connected_since.is_some());

    // Restart bob: alice sees it offline, then both reconnect with no command.
    b.shutdown();
    assert!(wait_until(LIMIT, || presence(&a, "bob") == Some(Presence::Offline)));
    let b = Net::start(key(2), book_b.clone(), config("bob"));
    assert!(wait_until(LIMIT, || connected(&a, "bob") && connected(&b, "al")));

    // Restart alice (on a new port): she dials bob at the addresses she learned.
    a.shutdown();
    assert!(wait_until(LIMIT, || presence(&b, "al") == Some(Presence::Offline)));
    let a = Net::start(key(1), book_a.clone(), config("alice"));
    assert!(wait_until(LIMIT, || connected(&a, "bob") && connected(&b, "al")));

    // Removing closes the connection on both sides and forgets the peer here.
    a.remove("bob").unwrap();
    assert!(a.status().peer("bob").is_none());
    assert!(book_a.by_name("bob").is_none());
    assert!(wait_until(LIMIT, || presence(&b, "al") == Some(Presence::Offline)));
    assert_eq!(a.remove("bob"), Err(NetError::NoSuchPeer("bob".into())));
    drop(b);
    a.shutdown();
}

#[test]
fn used_expired_malformed_and_forged_tickets_each_fail_clearly() {
    let a = Net::start(key(11), Arc::new(MemoryBook::new()), config("alice"));
    let b = Net::start(key(12), Arc::new(MemoryBook::new()), config("bob"));
    let c = Net::start(key(13), Arc::new(MemoryBook::new()), config("carol"));

    let ticket = a.invite(HOUR).unwrap();
    b.add_peer("alice", &ticket, LIMIT).unwrap();
    let used = c.add_peer("alice", &ticket, LIMIT).unwrap_err();
    assert_eq!(used, NetError::TicketUsed);

    let expired = a.invite(Duration::ZERO).unwrap();
    let err = c.add_peer("alice", &expired, LIMIT).unwrap_err();
    assert!(matches!(err, NetError::TicketExpired(_)), "{err:?}");

    let err = c.add_peer("alice", "indras1notaticket", LIMIT).unwrap_err();
    assert!(matches!(err, NetError::TicketMalformed(_)), "{err:?}");
    let err = c.add_peer("alice", &ticket[..ticket.len() - 3], LIMIT).unwrap_err();
    assert!(matches!(err, NetError::TicketMalformed(_)), "{err:?}");

    // A well-formed ticket whose secret the inviter never issued.
    let mut forged = Ticket::decode(&a.invite(HOUR).unwrap()).unwrap();
    forged.secret = [0x42; 32];
    let err = c.add_peer("alice", &forged.encode(), LIMIT).unwrap_err();
    assert_eq!(err, NetError::TicketUnknown);

    // Our own ticket, a taken name and a bad name are refused before any dial.
    let own = c.invite(HOUR).unwrap();
    assert_eq!(c.add_peer("me", &own, LIMIT).unwrap_err(), NetError::OwnTicket);
    let fresh = a.invite(HOUR).unwrap();
    assert!(matches!(b.add_peer("x y", &fresh, LIMIT), Err(NetError::InvalidName(..))));
    assert!(matches!(b.add_peer("alice2", &fresh, LIMIT), Err(NetError::AlreadyPeer(_))));

    let messages: Vec<String> = [
        NetError::TicketUsed,
        NetError::TicketExpired(Timestamp::now()),
        NetError::TicketMalformed("x".into()),
        NetError::TicketUnknown,
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    for (i, m) in messages.iter().enumerate() {
        assert!(!m.contains('\n'), "{m}");
        assert!(messages.iter().skip(i + 1).all(|o| o != m), "{m}");
    }
    // Nothing was recorded on carol's side by the failed attempts.
    assert!(c.status().peers.is_empty());
}

#[test]
fn add_peer_to_an_offline_inviter_fails_within_its_timeout() {
    let a = Net::start(key(14), Arc::new(MemoryBook::new()), config("alice"));
    let b = Net::start(key(15), Arc::new(MemoryBook::new()), config("bob"));
    let ticket = a.invite(HOUR).unwrap();
    a.shutdown();
    let start = std::time::Instant::now();
    let err = b.add_peer("alice", &ticket, Duration::from_secs(2)).unwrap_err();
    assert!(matches!(err, NetError::Timeout(_) | NetError::Unreachable(_)), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(8), "{:?}", start.elapsed());
    assert!(b.status().peers.is_empty());
    assert!(matches!(
        b.add_peer("alice", "garbage", Duration::MAX),
        Err(NetError::TicketMalformed(_))
    ));
    // Dropping a Net inside an async context neither panics nor hangs.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move { drop(b) });
}

/// A book that already believes `peer` is an accepted peer: what a vault that was removed
/// by the other side, or that the other side never knew, looks like.
fn book_knowing(peer: &Net, name: &str) -> Arc<MemoryBook> {
    let book = Arc::new(MemoryBook::new());
    book.put_peer(&Peer {
        id: peer.id(),
        name: name.into(),
        their_name: name.into(),
        addrs: peer.status().addrs,
        relay: None,
        state: PeerState::Accepted,
        added_at: Timestamp::now(),
        last_seen: None,
    })
    .unwrap();
    book
}

#[test]
fn unknown_keys_become_pending_requests_served_nothing_until_accepted() {
    let book_a = Arc::new(MemoryBook::new());
    let a = Net::start(key(21), book_a.clone(), config("alice"));
    let carol = Net::start(key(22), book_knowing(&a, "alice"), config("carol"));

    // carol dials with no secret: a pending request, recorded once however often she retries.
    assert!(wait_until(LIMIT, || presence(&a, "carol") == Some(Presence::Pending)));
    assert_eq!(book_a.by_name("carol").unwrap().state, PeerState::Pending);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(book_a.request_count(), 1, "one request per key per interval");
    let on_carol = carol.status();
    let seen = on_carol.peer("alice").unwrap();
    assert_eq!(seen.presence, Presence::Offline, "a pending key is served nothing");
    assert!(seen.last_error.as_deref().unwrap_or("").contains("refused"), "{seen:?}");
    assert_eq!(a.status().connected(), 0);

    // Accepting makes it a peer and connects both ways.
    let accepted = a.accept("carol").unwrap();
    assert_eq!(accepted.state, PeerState::Accepted);
    assert!(wait_until(LIMIT, || connected(&a, "carol") && connected(&carol, "alice")));
    assert_eq!(a.reject("carol"), Err(NetError::NotPending("carol".into())));

    // A second stranger is rejected: gone from the book, and its retries add nothing.
    let dave = Net::start(key(23), book_knowing(&a, "alice"), config("dave"));
    assert!(wait_until(LIMIT, || presence(&a, "dave") == Some(Presence::Pending)));
    let before = book_a.request_count();
    a.reject("dave").unwrap();
    assert!(book_a.by_name("dave").is_none());
    std::thread::sleep(Duration::from_secs(2));
    assert!(a.status().peer("dave").is_none());
    assert_eq!(book_a.request_count(), before);
    assert_ne!(presence(&dave, "alice"), Some(Presence::Connected));
    assert_eq!(a.accept("dave"), Err(NetError::NoSuchPeer("dave".into())));
}

#[test]
fn a_disabled_or_failed_network_answers_without_sockets_or_panics() {
    let off = Net::disabled(key(31), "--no-network");
    assert_eq!(off.status().state, NetState::Disabled("--no-network".into()));
    assert_eq!(off.id(), indras_net::player_id(&key(31)));
    assert!(matches!(off.invite(HOUR), Err(NetError::Disabled(_))));
    assert!(matches!(off.add_peer("a", "indras1x", LIMIT), Err(NetError::Disabled(_))));
    off.shutdown();

    // A port that is taken: the Net comes up failed, says why, and lists the book's peers.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let book = Arc::new(MemoryBook::new());
    let other = Net::start(key(32), Arc::new(MemoryBook::new()), config("x"));
    book.put_peer(&Peer {
        id: other.id(),
        name: "x".into(),
        their_name: "x".into(),
        addrs: vec![],
        relay: None,
        state: PeerState::Accepted,
        added_at: Timestamp::now(),
        last_seen: None,
    })
    .unwrap();
    let mut cfg = config("busy");
    cfg.listen = vec![taken.local_addr().unwrap()];
    let failed = Net::start(key(33), book, cfg);
    let status = failed.status();
    assert!(matches!(status.state, NetState::Failed(ref why) if !why.is_empty()), "{status:?}");
    assert_eq!(status.peers.len(), 1);
    assert_eq!(status.peers[0].presence, Presence::Offline);
    assert!(matches!(failed.invite(HOUR), Err(NetError::Unavailable(_))));
    assert!(matches!(failed.accept("x"), Err(NetError::Unavailable(_))));
}
