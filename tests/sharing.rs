//! Sharing between real mounts on 127.0.0.1: each mode end to end, with real tools on both
//! sides (`cp`, `cat`, `ls`, a process that keeps a file open), and offline catch-up.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indras_e2e::{
    Dirs, LOOPBACK, Mount, cli, cli_err, connected, introduce, pair, s, wait_until, xattr,
};
use serde_json::Value;

fn read(p: &Path) -> Option<Vec<u8>> {
    std::fs::read(p).ok()
}

/// Every mode between two live mounts, as a user runs it.
#[test]
fn each_mode_between_two_mounts() {
    let (da, db) = (Dirs::new(), Dirs::new());
    let (alice, bob) = pair(&da, &db);
    let a = |p: &str| alice.mnt.join("vault").join(p);
    let b = |p: &str| -> PathBuf { bob.mnt.join("peers/alice").join(p) };
    std::fs::create_dir_all(a("notes")).unwrap();
    std::fs::write(a("notes/ideas.md"), "# ideas\n").unwrap();
    std::fs::create_dir_all(a("projects/aurora/spec")).unwrap();
    std::fs::write(a("projects/aurora/spec/spec.md"), "spec v1\n").unwrap();
    std::fs::create_dir_all(a("gallery")).unwrap();
    let photo: Vec<u8> =
        (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    std::fs::write(a("gallery/photo-001.jpg"), &photo).unwrap();
    std::fs::create_dir_all(a("inbox")).unwrap();
    std::fs::write(a("inbox/deed.token"), "the deed").unwrap();

    // Revocable: shown, read, follows an edit, then recalled.
    let said = cli(&["share", s(&a("notes/ideas.md")), "--with", "bob", "--mode", "revocable"]);
    assert!(said.starts_with("shared notes/ideas.md with bob (revocable)"), "{said}");
    let took = wait_until(&bob, "ideas.md shows on bob", || {
        read(&b("ideas.md")).as_deref() == Some(b"# ideas\n")
    });
    eprintln!("share -> cat on the peer: {took:?}");
    // A reader that keeps the file open sees the edit on its next read.
    let mut open = std::fs::File::open(b("ideas.md")).unwrap();
    std::fs::write(a("notes/ideas.md"), "# ideas, edited\n").unwrap();
    let took = wait_until(&bob, "the edit shows on bob", || {
        let mut got = Vec::new();
        open.seek(SeekFrom::Start(0)).unwrap();
        open.read_to_end(&mut got).unwrap();
        got == b"# ideas, edited\n"
    });
    eprintln!("edit -> read of an open file on the peer: {took:?}");
    assert_eq!(xattr(&b("ideas.md"), "user.indra.access_mode").as_deref(), Some("revocable"));
    let mode = std::fs::metadata(b("ideas.md")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o444);
    let err = std::fs::write(b("ideas.md"), "mine now").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));

    // Timed folder: a subtree, with a nested file; then it shows in `grants`.
    cli(&["share", s(&a("projects/aurora")), "--with", "bob", "--mode", "timed", "--for", "7d"]);
    wait_until(&bob, "aurora shows on bob", || {
        read(&b("aurora/spec/spec.md")).as_deref() == Some(b"spec v1\n")
    });
    std::fs::write(a("projects/aurora/new.md"), "added").unwrap();
    wait_until(&bob, "a file added to aurora shows", || {
        read(&b("aurora/new.md")).as_deref() == Some(b"added")
    });
    assert!(xattr(&b("aurora"), "user.indra.expires_at").is_some());
    let sync: Value = serde_json::from_str(
        &std::fs::read_to_string(alice.mnt.join(".indra/sync-status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sync["peers"][0]["granted"], 2, "{sync}");
    let ours = xattr(&a("projects/aurora"), "user.indra.access_mode").unwrap();
    assert!(ours.starts_with("steward; bob: timed until "), "{ours}");
    let grants: Value = serde_json::from_str(&cli(&["grants", s(&alice.mnt), "--json"])).unwrap();
    let modes: Vec<&str> =
        grants.as_array().unwrap().iter().map(|g| g["mode"].as_str().unwrap()).collect();
    assert!(modes.contains(&"timed") && modes.contains(&"revocable"), "{grants}");

    // Timed, briefly: it disappears on bob's side at its end, on his own clock, and from
    // alice's grants.
    std::fs::write(a("notes/brief.md"), "for a moment").unwrap();
    cli(&["share", s(&a("notes/brief.md")), "--with", "bob", "--mode", "timed", "--for", "3s"]);
    wait_until(&bob, "brief.md shows", || read(&b("brief.md")).is_some());
    wait_until(&bob, "brief.md ends on bob", || !b("brief.md").exists());
    wait_until(&alice, "the grant ends on alice", || {
        !cli(&["grants", s(&alice.mnt)]).contains("brief.md")
    });

    // Permanent: recall is refused with a clear error.
    cli(&["share", s(&a("gallery/photo-001.jpg")), "--with", "bob", "--mode", "permanent"]);
    wait_until(&bob, "the photo arrives whole", || {
        read(&b("photo-001.jpg")).as_deref() == Some(&photo[..])
    });
    let err = cli_err(&["recall", s(&a("gallery/photo-001.jpg"))]);
    assert!(err.contains("permanent"), "{err}");

    // Transfer: lands in bob's inbox as his own writable file, and leaves alice.
    cli(&["share", s(&a("inbox/deed.token")), "--with", "bob", "--mode", "transfer"]);
    let mine = bob.mnt.join("vault/inbox/deed.token");
    wait_until(&bob, "the deed lands in bob's inbox", || {
        read(&mine).as_deref() == Some(b"the deed")
    });
    wait_until(&alice, "the deed leaves alice", || !a("inbox/deed.token").exists());
    std::fs::write(&mine, "bob's deed").unwrap();
    assert!(xattr(&mine, "user.indra.received_from").is_some());

    // Recall: gone from bob's view at once.
    let said = cli(&["recall", s(&a("notes/ideas.md")), "--from", "bob"]);
    assert!(said.starts_with("recalled notes/ideas.md from bob"), "{said}");
    wait_until(&bob, "ideas.md leaves bob", || !b("ideas.md").exists());
    let names: Vec<String> = std::fs::read_dir(bob.mnt.join("peers/alice"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.contains(&"ideas.md".to_owned()), "{names:?}");

    // Bad input: one line each.
    assert!(
        cli_err(&["share", s(&a("notes")), "--with", "nobody", "--mode", "revocable"])
            .contains("no peer named nobody")
    );
    assert!(
        cli_err(&["share", s(&a("notes")), "--with", "bob", "--mode", "timed"]).contains("--for")
    );
    assert!(
        cli_err(&["share", s(&b("aurora")), "--with", "alice", "--mode", "permanent"])
            .contains("shared on")
    );
}

/// bob is away while alice edits, adds and recalls; when he mounts again, he converges.
#[test]
fn an_offline_peer_catches_up() {
    let (da, db) = (Dirs::new(), Dirs::new());
    let (alice, bob) = pair(&da, &db);
    let a = |p: &str| alice.mnt.join("vault").join(p);
    std::fs::create_dir_all(a("docs")).unwrap();
    std::fs::write(a("docs/one.md"), "one").unwrap();
    std::fs::write(a("solo.md"), "solo").unwrap();
    cli(&["share", s(&a("docs")), "--with", "bob", "--mode", "revocable"]);
    cli(&["share", s(&a("solo.md")), "--with", "bob", "--mode", "revocable"]);
    let b = |m: &Mount, p: &str| m.mnt.join("peers/alice").join(p);
    wait_until(&bob, "docs show on bob", || read(&b(&bob, "docs/one.md")).is_some());
    wait_until(&bob, "solo shows on bob", || read(&b(&bob, "solo.md")).is_some());

    bob.stop();
    std::fs::write(a("docs/one.md"), "one, edited").unwrap();
    std::fs::write(a("docs/two.md"), "two").unwrap();
    cli(&["recall", s(&a("solo.md"))]);
    let bob = Mount::start_as(&db, "bob", LOOPBACK, &[]);
    // What arrived before stays readable with alice away; what changed converges.
    wait_until(&bob, "bob converges", || {
        read(&b(&bob, "docs/one.md")).as_deref() == Some(b"one, edited")
            && read(&b(&bob, "docs/two.md")).as_deref() == Some(b"two")
            && !b(&bob, "solo.md").exists()
    });
    drop(alice);
    assert_eq!(read(&b(&bob, "docs/two.md")).as_deref(), Some(&b"two"[..]));
}

/// A hand-written client, peered with alice through a real ticket, asks for what it was not
/// granted, in every form the protocol has: it gets the same refusal for all of it, and a
/// recall holds from the next request on the same connection.
#[test]
fn a_peer_gets_only_what_it_was_granted() {
    use indras_net::{Config, MemoryBook, Net};
    use indras_share::proto::{self, FileRef, Request, Response};
    use std::os::unix::fs::MetadataExt;

    let da = Dirs::new();
    let alice = Mount::start_as(&da, "alice", LOOPBACK, &[]);
    let a = |p: &str| alice.mnt.join("vault").join(p);
    std::fs::create_dir_all(a("secret")).unwrap();
    let big: Vec<u8> =
        (0..500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    std::fs::write(a("secret/key.bin"), &big).unwrap();
    std::fs::write(a("open.txt"), "granted").unwrap();

    let mut key = [0x6d; 32];
    key[0] = 0x11;
    let mallory =
        Net::start(key, std::sync::Arc::new(MemoryBook::default()), Config::loopback("mallory"));
    let ticket = cli(&["invite", s(&alice.mnt)]).trim().to_owned();
    let peer = mallory.add_peer("alice", &ticket, Duration::from_secs(15)).expect("peering");
    wait_until(&alice, "alice sees mallory", || connected(&alice, "mallory"));
    let ask = |req: &Request| -> Response {
        let answer = mallory
            .request(peer.id, proto::encode(req), proto::MAX_RESPONSE, Duration::from_secs(10))
            .expect("an answer");
        proto::decode(&answer).expect("a response")
    };

    let ino = |p: &str| std::fs::metadata(a(p)).unwrap().ino();
    let secret = FileRef {
        dir: Some(ino("secret")),
        name: b"key.bin".to_vec(),
        node: ino("secret/key.bin"),
        content: *blake3::hash(&big).as_bytes(),
    };
    assert_eq!(ask(&Request::Roots), Response::Roots(Vec::new()));
    for req in [
        Request::List { dir: ino("secret"), after: 0 },
        Request::List { dir: 2, after: 0 },
        Request::Layout { file: secret.clone() },
        Request::Layout { file: FileRef { dir: None, ..secret.clone() } },
        Request::Chunks { file: secret.clone(), from: 0, count: 4 },
        Request::Segment { file: secret.clone(), segment: [0; 32] },
        Request::Run { file: secret.clone(), run: [0; 32] },
        Request::Received { node: secret.node, content: secret.content },
    ] {
        assert_eq!(ask(&req), Response::Denied, "{req:?}");
    }
    // Garbage is refused, and the session goes on.
    let answer =
        mallory.request(peer.id, vec![0xff; 100], 1 << 20, Duration::from_secs(10)).unwrap();
    assert_eq!(proto::decode::<Response>(&answer).unwrap(), Response::Denied);

    // What it is granted, it gets; after a recall, the very next request is refused.
    cli(&["share", s(&a("open.txt")), "--with", "mallory", "--mode", "revocable"]);
    let open = FileRef {
        dir: None,
        name: b"open.txt".to_vec(),
        node: ino("open.txt"),
        content: *blake3::hash(b"granted").as_bytes(),
    };
    assert_eq!(ask(&Request::Layout { file: open.clone() }), Response::Inline(b"granted".to_vec()));
    assert_eq!(ask(&Request::Layout { file: secret.clone() }), Response::Denied);
    cli(&["recall", s(&a("open.txt"))]);
    assert_eq!(ask(&Request::Layout { file: open }), Response::Denied);
    // Its writes never reach alice's vault: a transfer confirmation for a file it was not
    // given leaves the file where it is.
    assert!(a("secret/key.bin").exists());
    mallory.shutdown();
}

/// Two daemons in network namespaces of their own: the link goes down in the middle of a
/// shared file's transfer and comes back; the transfer completes, and what bob reads is
/// alice's file exactly.
#[test]
fn a_transfer_cut_by_a_partition_completes_and_verifies() {
    use indras_e2e::NetnsPair;

    let net = NetnsPair::new();
    let (da, db) = (Dirs::new(), Dirs::new());
    let listen = |i: usize| format!("{}:0", net.addrs[i]);
    let (la, lb) = (listen(0), listen(1));
    let (wa, wb) = (net.wrapper(0), net.wrapper(1));
    let wa: Vec<&str> = wa.iter().map(String::as_str).collect();
    let wb: Vec<&str> = wb.iter().map(String::as_str).collect();
    let alice = Mount::start_as(&da, "alice", &["--listen", &la, "--relay", "none"], &wa);
    let bob = Mount::start_as(&db, "bob", &["--listen", &lb, "--relay", "none"], &wb);
    introduce(&alice, "alice", &bob, "bob");

    let big: Vec<u8> =
        (0..192u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let src = alice.mnt.join("vault/big.bin");
    std::fs::write(&src, &big).unwrap();
    let bytes_in = |m: &Mount| -> u64 {
        let text =
            std::fs::read_to_string(m.mnt.join(".indra/sync-status.json")).unwrap_or_default();
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["peers"][0]["bytes_in"].as_u64())
            .unwrap_or(0)
    };
    let before = bytes_in(&bob);
    cli(&["share", s(&src), "--with", "bob", "--mode", "revocable"]);
    wait_until(&bob, "part of the file moved", || bytes_in(&bob) > before + (8 << 20));
    net.set_link(false);
    std::thread::sleep(Duration::from_secs(3));
    net.set_link(true);
    let dst = bob.mnt.join("peers/alice/big.bin");
    let start = Instant::now();
    loop {
        if let Ok(got) = std::fs::read(&dst)
            && got.len() == big.len()
        {
            assert!(got == big, "bob's copy differs from alice's file");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(180), "never completed\n{}", bob.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(bob);
    drop(alice);
}

/// What a permanent grant gave bob, bob may share on: carol reads alice's photo through bob.
/// Anything else bob was given, he may not.
#[test]
fn a_permanent_grant_is_shared_on() {
    let (da, db, dc) = (Dirs::new(), Dirs::new(), Dirs::new());
    let (alice, bob) = pair(&da, &db);
    let carol = Mount::start_as(&dc, "carol", LOOPBACK, &[]);
    introduce(&bob, "bob", &carol, "carol");
    let photo: Vec<u8> =
        (0..700_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 5) as u8).collect();
    std::fs::write(alice.mnt.join("vault/photo.jpg"), &photo).unwrap();
    std::fs::write(alice.mnt.join("vault/draft.md"), "draft").unwrap();
    cli(&["share", s(&alice.mnt.join("vault/photo.jpg")), "--with", "bob", "--mode", "permanent"]);
    cli(&["share", s(&alice.mnt.join("vault/draft.md")), "--with", "bob", "--mode", "revocable"]);
    let at_bob = bob.mnt.join("peers/alice");
    wait_until(&bob, "bob has both", || {
        read(&at_bob.join("photo.jpg")).as_deref() == Some(&photo[..])
            && read(&at_bob.join("draft.md")).is_some()
    });
    let err =
        cli_err(&["share", s(&at_bob.join("draft.md")), "--with", "carol", "--mode", "revocable"]);
    assert!(err.contains("permanent"), "{err}");
    let said =
        cli(&["share", s(&at_bob.join("photo.jpg")), "--with", "carol", "--mode", "revocable"]);
    assert!(said.starts_with("shared peers/alice/photo.jpg with carol"), "{said}");
    wait_until(&carol, "carol reads the photo through bob", || {
        read(&carol.mnt.join("peers/bob/photo.jpg")).as_deref() == Some(&photo[..])
    });
    let grants: Value = serde_json::from_str(&cli(&["grants", s(&bob.mnt), "--json"])).unwrap();
    assert_eq!(grants[0]["path"], "peers/alice/photo.jpg", "{grants}");
}
