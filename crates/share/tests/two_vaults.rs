//! Two vaults sharing through an in-process transport: the engine's sync, fetch, recall,
//! expiry, transfer and checks, without a network. The transport counts the bytes it
//! carries, and can be told to corrupt answers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use indras_artifacts::{
    AccessMode, AttentionKind, AttentionSwitchEvent, Commit, MirrorChanges, MirrorEntry, NewNode,
    NodeId, Options, Peer, PeerState, PlayerId, SharedKind, Timestamp, Vault,
};
use indras_share::proto::{self, FileRef, Request, Response};
use indras_share::{Observer, Share, Transport};

const CC: Commit = Commit::CrashConsistent;

#[derive(Default)]
struct Net {
    shares: Mutex<HashMap<PlayerId, Weak<Share>>>,
    up: AtomicBool,
    bytes: AtomicU64,
    corrupt_chunks: AtomicU64,
}

struct Link {
    net: Arc<Net>,
    me: PlayerId,
}

impl Transport for Link {
    fn request(&self, peer: PlayerId, request: Vec<u8>, max: usize) -> Result<Vec<u8>, String> {
        if !self.net.up.load(Ordering::SeqCst) {
            return Err("not connected".into());
        }
        let share = self.net.shares.lock().unwrap().get(&peer).and_then(Weak::upgrade);
        let share = share.ok_or("not connected")?;
        let mut answer = share.handle(self.me, &request);
        if self.net.corrupt_chunks.load(Ordering::SeqCst) > 0
            && let Ok(Response::Chunks(mut chunks)) = proto::decode(&answer)
        {
            self.net.corrupt_chunks.fetch_sub(1, Ordering::SeqCst);
            chunks[0][0] ^= 1;
            answer = proto::encode(&Response::Chunks(chunks));
        }
        self.net.bytes.fetch_add((request.len() + answer.len()) as u64, Ordering::SeqCst);
        if answer.len() > max {
            return Err("answer too long".into());
        }
        Ok(answer)
    }

    fn connected(&self) -> Vec<PlayerId> {
        if !self.net.up.load(Ordering::SeqCst) {
            return Vec::new();
        }
        self.net.shares.lock().unwrap().keys().copied().filter(|p| *p != self.me).collect()
    }
}

#[derive(Default)]
struct Seen(Mutex<Vec<MirrorChanges>>);

impl Observer for Seen {
    fn mirror_changed(&self, changes: &MirrorChanges) {
        self.0.lock().unwrap().push(changes.clone());
    }

    fn vault_entry_changed(&self, _parent: NodeId, _name: &[u8]) {}

    fn realms_changed(&self) {}
}

struct Side {
    _dir: tempfile::TempDir,
    vault: Arc<Vault>,
    share: Arc<Share>,
}

fn peer(id: PlayerId, name: &str) -> Peer {
    Peer {
        id,
        name: name.into(),
        their_name: name.into(),
        addrs: Vec::new(),
        relay: None,
        state: PeerState::Accepted,
        added_at: Timestamp::now(),
        last_seen: None,
    }
}

fn pair() -> (Arc<Net>, Side, Side) {
    pair_with(true, true)
}

/// alice and bob, each taking and sending attention or not.
fn pair_with(alice_attention: bool, bob_attention: bool) -> (Arc<Net>, Side, Side) {
    let (net, mut sides) = group(&[("alice", alice_attention), ("bob", bob_attention)]);
    let b = sides.pop().unwrap();
    let a = sides.pop().unwrap();
    (net, a, b)
}

/// Vaults of the players named, each taking and sending attention or not, each an accepted
/// peer of every other, on one connected network.
fn group(players: &[(&str, bool)]) -> (Arc<Net>, Vec<Side>) {
    let net = Arc::new(Net::default());
    net.up.store(true, Ordering::SeqCst);
    let opened: Vec<(tempfile::TempDir, Arc<Vault>, bool)> = players
        .iter()
        .map(|(name, attention)| {
            let dir = tempfile::tempdir().unwrap();
            let vault = Arc::new(Vault::open(dir.path(), name, &Options::default()).unwrap());
            (dir, vault, *attention)
        })
        .collect();
    for (_, v, _) in &opened {
        for ((name, _), (_, other, _)) in players.iter().zip(&opened) {
            if other.player() != v.player() {
                v.put_peer(&peer(other.player(), name), CC).unwrap();
            }
        }
    }
    let sides = opened
        .into_iter()
        .map(|(dir, vault, attention)| {
            let link = Link { net: net.clone(), me: vault.player() };
            let share = Arc::new(Share::start_with(
                vault.clone(),
                Arc::new(link),
                Arc::new(Seen::default()),
                attention,
            ));
            net.shares.lock().unwrap().insert(vault.player(), Arc::downgrade(&share));
            Side { _dir: dir, vault, share }
        })
        .collect();
    (net, sides)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting until {what}");
}

fn file(v: &Vault, parent: NodeId, name: &str, bytes: &[u8]) -> NodeId {
    let staged = v.stage(bytes).unwrap();
    v.create(parent, name.as_bytes(), &NewNode::file(0o644), Some(staged), Timestamp::now(), CC)
        .unwrap()
        .id
}

fn dir(v: &Vault, parent: NodeId, name: &str) -> NodeId {
    v.create(parent, name.as_bytes(), &NewNode::dir(0o755), None, Timestamp::now(), CC).unwrap().id
}

/// The content of `path` (labels from `peers/<alice>/`) on `b`, once it is there.
fn read(b: &Vault, path: &[&str]) -> Option<Vec<u8>> {
    let mut at = MirrorEntry::TOP;
    let mut e = None;
    for label in std::iter::once("alice").chain(path.iter().copied()) {
        let found = b.mirror_lookup(at, label.as_bytes()).unwrap()?;
        at = found.id;
        e = Some(found);
    }
    let e = e?;
    if !e.ready() {
        return None;
    }
    Some(b.read_all(&e.have?).unwrap())
}

fn exists(b: &Vault, path: &[&str]) -> bool {
    let mut at = MirrorEntry::TOP;
    for label in std::iter::once("alice").chain(path.iter().copied()) {
        match b.mirror_lookup(at, label.as_bytes()).unwrap() {
            Some(e) => at = e.id,
            None => return false,
        }
    }
    true
}

#[test]
fn a_shared_folder_follows_edits_and_a_recall_removes_it() {
    let (_net, a, b) = pair();
    let bob = b.vault.player();
    let notes = dir(&a.vault, NodeId::ROOT, "notes");
    let ideas = file(&a.vault, notes, "ideas.md", b"# ideas\n");
    let sub = dir(&a.vault, notes, "sub");
    file(&a.vault, sub, "deep.txt", b"deep");
    a.vault.grant(notes, bob, AccessMode::Revocable, Timestamp::now(), CC).unwrap();
    a.share.grants_changed(bob);
    b.share.connected(a.vault.player());
    wait_until("bob has the folder", || {
        read(&b.vault, &["notes", "ideas.md"]).as_deref() == Some(b"# ideas\n")
            && read(&b.vault, &["notes", "sub", "deep.txt"]).as_deref() == Some(b"deep")
    });

    // An edit, an addition and a removal on alice's side reach bob without a reconnect.
    a.vault
        .set_content(ideas, &a.vault.stage(b"# ideas, v2\n").unwrap(), Timestamp::now(), CC)
        .unwrap();
    file(&a.vault, sub, "new.txt", b"new");
    a.vault.remove(notes, b"sub", true, Timestamp::now(), CC).unwrap_err(); // not empty
    wait_until("bob sees the edit and the new file", || {
        read(&b.vault, &["notes", "ideas.md"]).as_deref() == Some(b"# ideas, v2\n")
            && read(&b.vault, &["notes", "sub", "new.txt"]).as_deref() == Some(b"new")
    });
    a.vault.remove(sub, b"deep.txt", false, Timestamp::now(), CC).unwrap();
    wait_until("bob loses the removed file", || !exists(&b.vault, &["notes", "sub", "deep.txt"]));

    // A recall removes it all from bob, and drops what he held.
    assert!(a.vault.revoke(notes, bob, CC).unwrap().is_some());
    a.share.grants_changed(bob);
    wait_until("bob loses the folder", || !exists(&b.vault, &["notes"]));
    assert!(b.vault.mirror_of(a.vault.player()).unwrap().iter().all(|e| e.remote == 0));
    // What bob held of it is garbage now: GC reclaims it, and the store checks clean.
    let report = b.vault.collect(None).unwrap();
    assert!(report.leaves_removed >= 3, "{report:?}");
    let fsck =
        b.vault.fsck(indras_artifacts::FsckOptions { deep: true, repair: false }, &mut |_| {});
    assert!(fsck.unwrap().is_clean());
}

#[test]
fn nothing_outside_a_grant_is_served() {
    let (_net, a, b) = pair();
    let bob = b.vault.player();
    let now = Timestamp::now();
    let shared = dir(&a.vault, NodeId::ROOT, "shared");
    let secret_dir = dir(&a.vault, NodeId::ROOT, "secret");
    let big: Vec<u8> =
        (0..600_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let secret = file(&a.vault, secret_dir, "key.bin", &big);
    let public = file(&a.vault, shared, "ok.txt", b"fine");
    a.vault.grant(shared, bob, AccessMode::Revocable, now, CC).unwrap();
    let content = a.vault.node(secret).unwrap().content.unwrap();
    let ask = |req: Request| -> Response {
        proto::decode(&a.share.handle(bob, &proto::encode(&req))).unwrap()
    };

    // The secret file, named any way, is denied: whole, by layout, by chunk.
    for f in [
        FileRef { dir: None, name: b"key.bin".to_vec(), node: secret.0, content },
        FileRef { dir: Some(secret_dir.0), name: b"key.bin".to_vec(), node: secret.0, content },
        FileRef { dir: Some(shared.0), name: b"key.bin".to_vec(), node: secret.0, content },
        FileRef { dir: Some(shared.0), name: b"ok.txt".to_vec(), node: public.0, content },
    ] {
        assert_eq!(ask(Request::Layout { file: f.clone() }), Response::Denied);
        assert_eq!(ask(Request::Chunks { file: f.clone(), from: 0, count: 2 }), Response::Denied);
        assert_eq!(ask(Request::Segment { file: f.clone(), segment: [0; 32] }), Response::Denied);
    }
    assert_eq!(ask(Request::List { dir: secret_dir.0, after: 0 }), Response::Denied);
    assert_eq!(ask(Request::List { dir: NodeId::ROOT.0, after: 0 }), Response::Denied);
    // A stranger to the vault (no grant at all) gets nothing either.
    let carol = PlayerId([0xca; 32]);
    let as_carol = proto::decode::<Response>(
        &a.share.handle(carol, &proto::encode(&Request::List { dir: shared.0, after: 0 })),
    )
    .unwrap();
    assert_eq!(as_carol, Response::Denied);
    assert_eq!(
        proto::decode::<Response>(&a.share.handle(carol, &proto::encode(&Request::Roots))).unwrap(),
        Response::Roots(Vec::new())
    );
    // Garbage is refused, not a panic.
    assert_eq!(
        proto::decode::<Response>(&a.share.handle(bob, &[0xff; 40])).unwrap(),
        Response::Denied
    );

    // The shared file is served; after a recall, the very next request is refused.
    let ok = a.vault.node(public).unwrap().content.unwrap();
    let f = FileRef { dir: Some(shared.0), name: b"ok.txt".to_vec(), node: public.0, content: ok };
    assert_eq!(ask(Request::Layout { file: f.clone() }), Response::Inline(b"fine".to_vec()));
    a.vault.revoke(shared, bob, CC).unwrap();
    assert_eq!(ask(Request::Layout { file: f }), Response::Denied);
    // An expired grant serves nothing either.
    let past = Timestamp { secs: now.secs - 10, nanos: 0 };
    a.vault.grant(shared, bob, AccessMode::Timed { expires_at: past }, now, CC).unwrap();
    assert_eq!(ask(Request::List { dir: shared.0, after: 0 }), Response::Denied);
}

#[test]
fn wrong_bytes_are_rejected_and_fetched_again() {
    let (net, a, b) = pair();
    let bob = b.vault.player();
    let big: Vec<u8> =
        (0..400_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let f = file(&a.vault, NodeId::ROOT, "big.bin", &big);
    a.vault.grant(f, bob, AccessMode::Permanent, Timestamp::now(), CC).unwrap();
    net.corrupt_chunks.store(2, Ordering::SeqCst);
    b.share.connected(a.vault.player());
    wait_until("bob has the file", || read(&b.vault, &["big.bin"]).as_deref() == Some(&big[..]));
    assert_eq!(net.corrupt_chunks.load(Ordering::SeqCst), 0, "the corrupted answers were used up");
    // Permanent: a recall is refused, and removing alice keeps bob's copy.
    assert!(a.vault.revoke(f, bob, CC).is_err());
    b.share.peer_removed(a.vault.player());
    assert_eq!(read(&b.vault, &["big.bin"]).as_deref(), Some(&big[..]));
}

#[test]
fn a_one_byte_edit_of_a_large_file_moves_little() {
    let (net, a, b) = pair();
    let bob = b.vault.player();
    let mut big: Vec<u8> =
        (0..24u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8).collect();
    let f = file(&a.vault, NodeId::ROOT, "large.bin", &big);
    a.vault.grant(f, bob, AccessMode::Revocable, Timestamp::now(), CC).unwrap();
    b.share.connected(a.vault.player());
    wait_until("bob has the file", || read(&b.vault, &["large.bin"]).is_some_and(|c| c == big));
    let before = net.bytes.load(Ordering::SeqCst);
    big[12 << 20] ^= 0xff;
    a.vault.set_content(f, &a.vault.stage(&big).unwrap(), Timestamp::now(), CC).unwrap();
    wait_until("bob has the edit", || read(&b.vault, &["large.bin"]).is_some_and(|c| c == big));
    let moved = net.bytes.load(Ordering::SeqCst) - before;
    eprintln!("a 1-byte edit of a 24 MiB shared file moved {moved} bytes");
    assert!(moved < 1 << 20, "a 1-byte edit of 24 MiB moved {moved} bytes");
}

#[test]
fn a_timed_grant_ends_on_the_grantees_clock_and_a_transfer_moves_the_file() {
    let (net, a, b) = pair();
    let bob = b.vault.player();
    let now = Timestamp::now();
    let soon = Timestamp { secs: now.secs + 2, nanos: now.nanos };
    let t = file(&a.vault, NodeId::ROOT, "timed.txt", b"for a while");
    a.vault.grant(t, bob, AccessMode::Timed { expires_at: soon }, now, CC).unwrap();
    let deed = file(&a.vault, NodeId::ROOT, "deed.token", b"ownership");
    a.vault.grant(deed, bob, AccessMode::Transfer, now, CC).unwrap();
    b.share.connected(a.vault.player());
    wait_until("bob has the timed file", || read(&b.vault, &["timed.txt"]).is_some());
    // The transfer lands in bob's inbox as his own file, and leaves alice.
    wait_until("alice let go of the deed", || a.vault.lookup(NodeId::ROOT, b"deed.token").is_err());
    let inbox = b.vault.lookup(NodeId::ROOT, b"inbox").unwrap();
    let mine = b.vault.lookup(inbox.id, b"deed.token").unwrap();
    assert_eq!(b.vault.read_all(&mine.content.unwrap()).unwrap(), b"ownership");
    let from = b.vault.get_xattr(mine.id, b"user.indra.received_from").unwrap();
    assert_eq!(from, indras_artifacts::hex(&a.vault.player().0).into_bytes());
    assert!(a.vault.grants(Some(deed)).unwrap().is_empty());
    // Alice goes offline; bob's copy of the timed file still ends on time.
    net.up.store(false, Ordering::SeqCst);
    wait_until("the timed file is gone on bob", || !exists(&b.vault, &["timed.txt"]));
    let kinds: Vec<SharedKind> =
        b.vault.mirror_of(a.vault.player()).unwrap().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![SharedKind::Dir], "only alice's folder is left");
}

/// The labels realm `name` shows on `v`.
fn realm_labels(v: &Vault, name: &str) -> Vec<String> {
    let Some(row) = v.realm_by_label(name).unwrap() else { return Vec::new() };
    v.realm_view(&row, Timestamp::now())
        .unwrap()
        .into_iter()
        .map(|i| String::from_utf8_lossy(&i.label).into_owned())
        .collect()
}

/// Three members each share a file with the realm: every member's view shows all three, a
/// recall takes one out of every view, and a member who leaves takes its own out and stops
/// seeing the rest.
#[test]
fn a_realm_shows_what_every_member_shares_with_all_the_others() {
    let (_net, sides) = group(&[("alice", true), ("bob", true), ("carol", true)]);
    let [a, b, c] = &sides[..] else { unreachable!() };
    let ids: Vec<PlayerId> = sides.iter().map(|s| s.vault.player()).collect();
    let row = a.vault.realm_create("aurora", &ids[1..], Timestamp::now()).unwrap();
    a.share.realms_changed(&[]);
    let mut files = Vec::new();
    for (s, name) in [(a, "a.md"), (b, "b.md"), (c, "spec.md")] {
        wait_until("the realm reaches every member", || {
            s.vault.realm(row.realm.id).unwrap().is_some()
        });
        let f = file(&s.vault, NodeId::ROOT, name, name.as_bytes());
        for p in ids.iter().filter(|p| **p != s.vault.player()) {
            s.vault.grant(f, *p, AccessMode::Revocable, Timestamp::now(), CC).unwrap();
            s.share.grants_changed(*p);
        }
        files.push(f);
    }
    for s in &sides {
        wait_until("every view shows all three", || {
            realm_labels(&s.vault, "aurora") == ["a.md", "b.md", "spec.md"]
        });
    }

    // bob recalls his from carol: it is no longer shared with all, so it leaves every view.
    b.vault.revoke(files[1], ids[2], CC).unwrap();
    b.share.grants_changed(ids[2]);
    for s in &sides {
        wait_until("the recall shows everywhere", || {
            realm_labels(&s.vault, "aurora") == ["a.md", "spec.md"]
        });
    }

    // carol leaves: she stops seeing the realm, and her file leaves the others' views; bob's
    // is now shared with every member again (alice), so it is back.
    let creator = c.vault.realm_leave(row.realm.id).unwrap().unwrap().realm.creator;
    c.share.realm_left(creator);
    assert!(c.vault.realm_by_label("aurora").unwrap().is_none());
    for s in [a, b] {
        wait_until("carol is out", || {
            s.vault.realm(row.realm.id).unwrap().is_some_and(|r| r.realm.members.len() == 2)
                && realm_labels(&s.vault, "aurora") == ["a.md", "b.md"]
        });
    }
    assert!(c.vault.realm_left().unwrap().is_empty(), "the creator heard the leave");
    // ...and a later offer from the creator does not bring the realm back to her.
    c.share.connected(ids[0]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(c.vault.realm(row.realm.id).unwrap().is_none());
}

/// bob's attention on alice's files, recorded in his store.
fn attend(b: &Vault, id: NodeId, dwell_ms: u64) {
    let now = Timestamp::now();
    let ev = |kind, dwell_ms| AttentionSwitchEvent {
        player: b.player(),
        from: None,
        to: None,
        kind,
        at: now,
        node: Some(id),
        dwell_ms,
    };
    let r = b
        .record_entry_attention(
            &[ev(AttentionKind::Navigate, 0), ev(AttentionKind::Back, dwell_ms)],
            CC,
        )
        .unwrap();
    assert_eq!(r.queued, 2);
}

fn mirror_id(b: &Vault, path: &[&str]) -> NodeId {
    let mut at = MirrorEntry::TOP;
    for label in std::iter::once("alice").chain(path.iter().copied()) {
        at = b.mirror_lookup(at, label.as_bytes()).unwrap().unwrap().id;
    }
    at
}

/// bob's attention on a file alice shares reaches alice and counts there; while the link is
/// down it waits in bob's outbox, and goes when he connects again.
#[test]
fn attention_reaches_the_steward_and_waits_while_it_is_away() {
    let (net, a, b) = pair();
    let (alice, bob) = (a.vault.player(), b.vault.player());
    let notes = dir(&a.vault, NodeId::ROOT, "notes");
    let ideas = file(&a.vault, notes, "ideas.md", b"# ideas\n");
    a.vault.grant(notes, bob, AccessMode::Revocable, Timestamp::now(), CC).unwrap();
    a.share.grants_changed(bob);
    wait_until("bob has the file", || read(&b.vault, &["notes", "ideas.md"]).is_some());
    let id = mirror_id(&b.vault, &["notes", "ideas.md"]);

    attend(&b.vault, id, 1200);
    let counted = |opens| {
        a.vault.attention_of(ideas).unwrap().is_some_and(|g| g.opens == opens && g.players == [bob])
    };
    wait_until("alice counts bob's read", || counted(1));
    assert_eq!(a.vault.attention_of(ideas).unwrap().unwrap().dwell_ms, 1200);
    wait_until("bob's outbox empties", || b.vault.outbox_len(alice).unwrap() == 0);
    // bob's own attention stays his, on his mirror entry; alice's nodes hold none of his ids.
    assert_eq!(b.vault.attention_of(id).unwrap().unwrap().players, [bob]);

    net.up.store(false, Ordering::SeqCst);
    attend(&b.vault, id, 300);
    attend(&b.vault, id, 300);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.vault.outbox_len(alice).unwrap(), 4, "kept while alice is away");
    assert!(counted(1));
    net.up.store(true, Ordering::SeqCst);
    b.share.connected(alice);
    wait_until("alice gets what bob read while she was away", || counted(3));
    assert_eq!(a.vault.attention_of(ideas).unwrap().unwrap().dwell_ms, 1800);
    assert_eq!(a.vault.chain_taken(bob).unwrap(), b.vault.chain_sent(alice).unwrap());
}

/// A steward that takes no attention answers `Denied`: the sender keeps its events; a sender
/// that sends none keeps them too. Either way nothing counts.
#[test]
fn attention_off_sends_and_takes_nothing() {
    for (alice_on, bob_on) in [(false, true), (true, false)] {
        let (_net, a, b) = pair_with(alice_on, bob_on);
        let (alice, bob) = (a.vault.player(), b.vault.player());
        let f = file(&a.vault, NodeId::ROOT, "f.md", b"f");
        a.vault.grant(f, bob, AccessMode::Revocable, Timestamp::now(), CC).unwrap();
        a.share.grants_changed(bob);
        wait_until("bob has the file", || read(&b.vault, &["f.md"]).is_some());
        attend(&b.vault, mirror_id(&b.vault, &["f.md"]), 100);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(b.vault.outbox_len(alice).unwrap(), 2);
        assert!(a.vault.attention_of(f).unwrap().is_none());
        let batch = b.vault.outbox(alice, 64).unwrap();
        let answer = a.share.handle(bob, &proto::encode(&Request::Attention { events: batch }));
        match proto::decode::<Response>(&answer).unwrap() {
            // bob's events, taken by hand from a steward that takes attention.
            Response::Taken { through, .. } if alice_on => assert_eq!(through, 2),
            Response::Denied if !alice_on => {}
            other => panic!("{other:?}"),
        }
    }
}
