//! Peering between real mounts: invitations, connection requests, reconnection, and the
//! network switched off. Each daemon listens on 127.0.0.1 with no relay, or, in the
//! namespace test, on an address that exists only inside its own network namespace.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use indras_e2e::{Dirs, Mount, NetnsPair, binary, cli, cli_err};
use serde_json::Value;

const LOOPBACK: &[&str] = &["--listen", "127.0.0.1:0", "--relay", "none"];

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn peers(m: &Mount) -> Vec<Value> {
    let text = std::fs::read_to_string(m.mnt.join(".indra/peers.json")).expect("peers.json");
    serde_json::from_str::<Value>(&text).expect("json").as_array().expect("array").clone()
}

/// The state `.indra/peers.json` gives the peer named `name`.
fn state_of(m: &Mount, name: &str) -> Option<String> {
    peers(m)
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| p["state"].as_str().expect("state").to_owned())
}

/// Waits (bounded, generously) until `name`'s state on `m` is `want`; returns how long it took.
fn wait_state(m: &Mount, name: &str, want: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let got = state_of(m, name);
        if got.as_deref() == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{name} on {} is {got:?}, not {want}, after {limit:?}:\n{}",
            m.mnt.display(),
            m.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn invite(m: &Mount) -> String {
    cli(&["invite", path(&m.mnt)]).trim().to_owned()
}

const LONG: Duration = Duration::from_secs(30);

/// alice invites bob; one command on bob's side peers them, and both list each other as
/// connected. Either one unmounted and mounted again (on a new port), both reconnect with no
/// command. The player ids in `peers.json` are the other side's keys.
#[test]
fn two_mounts_peer_and_reconnect() {
    let (da, db) = (Dirs::new(), Dirs::new());
    let alice = Mount::start_as(&da, "alice", LOOPBACK, &[]);
    let mut bob = Mount::start_as(&db, "bob", LOOPBACK, &[]);
    let ticket = invite(&alice);
    assert!(ticket.starts_with("indras1") && !ticket.contains(char::is_whitespace));
    let said = cli(&["peer", "add", "alice", &ticket, path(&bob.mnt)]);
    assert!(said.starts_with("peered with alice"), "{said}");
    let took = wait_state(&alice, "bob", "connected", LONG);
    wait_state(&bob, "alice", "connected", LONG);
    eprintln!("connected {took:?} after peer add returned");
    let id_of = |m: &Mount| -> String {
        let s: Value = serde_json::from_str(&cli(&["status", "--json", path(&m.mnt)])).unwrap();
        s["player_id"].as_str().unwrap().to_owned()
    };
    assert_eq!(peers(&alice)[0]["player_id"], id_of(&bob));
    assert_eq!(peers(&bob)[0]["player_id"], id_of(&alice));
    let text = cli(&["status", path(&alice.mnt)]);
    assert!(text.contains("Peers: 1 connected (1 known)"), "{text}");
    assert!(text.contains("Network: online at 127.0.0.1:"), "{text}");

    bob.stop();
    wait_state(&alice, "bob", "offline", LONG);
    bob = Mount::start_as(&db, "bob", LOOPBACK, &[]);
    wait_state(&alice, "bob", "connected", Duration::from_secs(90));
    wait_state(&bob, "alice", "connected", Duration::from_secs(90));

    alice.stop();
    wait_state(&bob, "alice", "offline", LONG);
    let alice = Mount::start_as(&da, "alice", LOOPBACK, &[]);
    wait_state(&bob, "alice", "connected", Duration::from_secs(90));
    wait_state(&alice, "bob", "connected", Duration::from_secs(90));
    let sync: Value = serde_json::from_str(
        &std::fs::read_to_string(alice.mnt.join(".indra/sync-status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sync["network"]["online"], true);
    assert_eq!(sync["peers"][0]["name"], "bob");
    assert!(sync["peers"][0]["connected_since"].is_string());
}

/// A ticket works once: a second player presenting it is refused, and lands on the inviter
/// as a pending connection request, with a file in `vault/inbox/`; until accepted it is
/// served nothing. Accepting it makes the inviter reach out, which the requester accepts in
/// turn; then they are connected. Damaged and expired tickets are refused with
/// their own errors, and commands that need the daemon say so when there is none.
#[test]
fn tickets_are_used_once_and_strangers_wait_in_the_inbox() {
    let (da, db, dc) = (Dirs::new(), Dirs::new(), Dirs::new());
    let alice = Mount::start_as(&da, "alice", LOOPBACK, &[]);
    let bob = Mount::start_as(&db, "bob", LOOPBACK, &[]);
    let carol = Mount::start_as(&dc, "carol", LOOPBACK, &[]);
    let ticket = invite(&alice);
    cli(&["peer", "add", "alice", &ticket, path(&bob.mnt)]);
    let err = cli_err(&["peer", "add", "alice", &ticket, path(&carol.mnt)]);
    assert!(err.contains("already used"), "{err}");
    wait_state(&alice, "carol", "pending", LONG);
    let request = alice.vault().join("inbox/connection-request-carol.json");
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&request).unwrap()).unwrap();
    assert_eq!(file["accept"], "indras-fuse peer accept carol");
    assert!(state_of(&carol, "alice").is_none(), "carol is told nothing of alice");
    let listed = cli(&["peer", "list", path(&alice.mnt)]);
    assert!(listed.contains("carol") && listed.contains("pending"), "{listed}");
    let text = cli(&["status", path(&alice.mnt)]);
    assert!(text.contains("Peers: 1 connected (1 known)"), "a request is not a peer: {text}");

    // Accepting makes carol alice's peer; alice then reaches carol, who sees that as a
    // request of her own: each side consents once.
    cli(&["peer", "accept", "carol", path(&alice.mnt)]);
    wait_state(&carol, "alice", "pending", LONG);
    assert!(carol.vault().join("inbox/connection-request-alice.json").is_file());
    cli(&["peer", "accept", "alice", path(&carol.mnt)]);
    wait_state(&alice, "carol", "connected", LONG);
    wait_state(&carol, "alice", "connected", LONG);

    let mut damaged = invite(&alice);
    damaged.pop();
    damaged.push(if damaged.ends_with('a') { 'b' } else { 'a' });
    assert!(cli_err(&["peer", "add", "a2", &damaged, path(&carol.mnt)]).contains("ticket"));
    assert!(cli_err(&["peer", "add", "a2", "hello", path(&carol.mnt)]).contains("malformed"));
    let short = cli(&["invite", "--valid", "1s", path(&alice.mnt)]);
    std::thread::sleep(Duration::from_millis(2_100));
    let dd = Dirs::new();
    let dave = Mount::start_as(&dd, "dave", LOOPBACK, &[]);
    let err = cli_err(&["peer", "add", "alice", short.trim(), path(&dave.mnt)]);
    assert!(err.contains("expired"), "{err}");
    let bad = Command::new(binary()).args(["invite", "--valid", "soon", path(&alice.mnt)]).output();
    let bad = bad.expect("run indras-fuse");
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("soon"));

    // An expired ticket is refused before any dial; a used one makes a request to reject.
    assert!(state_of(&alice, "dave").is_none());
    cli_err(&["peer", "add", "alice", &ticket, path(&dave.mnt)]);
    wait_state(&alice, "dave", "pending", LONG);
    cli(&["peer", "reject", "dave", path(&alice.mnt)]);
    assert!(state_of(&alice, "dave").is_none());
    cli(&["peer", "remove", "carol", path(&alice.mnt)]);
    assert!(state_of(&alice, "carol").is_none());
    drop(dave);
    drop(carol);
    drop(bob);
    drop(alice);
    // With no daemon: listing reads the store, invitations need the mount.
    let listed = cli(&["peer", "list", "--data-dir", path(&da.data)]);
    assert!(listed.contains("bob") && listed.contains("offline"), "{listed}");
    let err = cli_err(&["invite", "--data-dir", path(&da.data)]);
    assert!(err.contains("not mounted"), "{err}");
}

/// The inet sockets (UDP and TCP, v4 and v6) process `pid` holds.
fn inet_sockets(pid: u32) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["udp", "udp6", "tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            if let Some(inode) = line.split_whitespace().nth(9) {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| inodes.contains(target.to_str().unwrap_or("")))
        .count()
}

/// `--no-network` opens no socket at all, and says so; a networked mount does open one.
#[test]
fn no_network_opens_no_socket() {
    let (dn, dy) = (Dirs::new(), Dirs::new());
    let off = Mount::start_as(&dn, "alice", &["--no-network"], &[]);
    let on = Mount::start_as(&dy, "bob", LOOPBACK, &[]);
    assert_eq!(inet_sockets(off.pid()), 0);
    assert!(inet_sockets(on.pid()) > 0, "the check can see sockets");
    let text = cli(&["status", path(&off.mnt)]);
    assert!(text.contains("Network: off (--no-network)"), "{text}");
    let err = cli_err(&["invite", path(&off.mnt)]);
    assert!(err.contains("network"), "{err}");
    let sync: Value = serde_json::from_str(
        &std::fs::read_to_string(off.mnt.join(".indra/sync-status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (sync["network"]["online"].clone(), sync["network"]["off_reason"].clone()),
        (Value::Bool(false), Value::String("--no-network".into()))
    );
}

/// Two daemons, each in a network namespace of its own, joined by a veth pair: they peer over
/// those addresses (not loopback), a link taken down shows the peer offline, and bringing it
/// back up reconnects them with no command. The mounts stay visible outside the namespaces.
#[test]
fn peers_in_two_network_namespaces_survive_a_link_going_down() {
    let net = NetnsPair::new();
    let (da, db) = (Dirs::new(), Dirs::new());
    let listen = |i: usize| format!("{}:0", net.addrs[i]);
    let (la, lb) = (listen(0), listen(1));
    let wrap = |i: usize| net.wrapper(i);
    let (wa, wb) = (wrap(0), wrap(1));
    let wa: Vec<&str> = wa.iter().map(String::as_str).collect();
    let wb: Vec<&str> = wb.iter().map(String::as_str).collect();
    let alice = Mount::start_as(&da, "alice", &["--listen", &la, "--relay", "none"], &wa);
    let bob = Mount::start_as(&db, "bob", &["--listen", &lb, "--relay", "none"], &wb);
    cli(&["peer", "add", "alice", &invite(&alice), path(&bob.mnt)]);
    wait_state(&alice, "bob", "connected", LONG);
    wait_state(&bob, "alice", "connected", LONG);
    let addrs = peers(&bob)[0]["addresses"].clone();
    assert!(
        addrs.as_array().unwrap().iter().all(|a| a.as_str().unwrap().starts_with(&net.addrs[0])),
        "bob reaches alice at her namespace's address only: {addrs}"
    );

    net.set_link(false);
    wait_state(&alice, "bob", "offline", Duration::from_secs(90));
    wait_state(&bob, "alice", "offline", Duration::from_secs(90));
    net.set_link(true);
    let took = wait_state(&bob, "alice", "connected", Duration::from_secs(120));
    wait_state(&alice, "bob", "connected", Duration::from_secs(120));
    eprintln!("reconnected {took:?} after the link came back");
    drop(bob);
    drop(alice);
}

/// A network that cannot start (its port is taken) never stops the mount: it comes up, logs
/// one line, and `status` says why.
#[test]
fn a_taken_port_leaves_the_mount_up_without_a_network() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let d = Dirs::new();
    let m = Mount::start_as(&d, "alice", &["--listen", &addr, "--relay", "none"], &[]);
    std::fs::write(m.vault().join("still.txt"), b"works").expect("write");
    let text = cli(&["status", path(&m.mnt)]);
    let line = text.lines().find(|l| l.starts_with("Network: ")).expect("a network line");
    assert!(line.starts_with("Network: off (the network could not start: "), "{line}");
    let log = m.log_text();
    assert_eq!(log.matches("network not started").count(), 1, "{log}");
    assert!(cli_err(&["invite", path(&m.mnt)]).contains("network"));
    drop(taken);
}
