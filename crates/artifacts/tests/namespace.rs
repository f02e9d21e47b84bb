//! Directory semantics and bad input: every failure is a typed error, never a panic.

mod common;

use common::{get, now, open, put};
use indras_artifacts::{
    AccessMode, ArtifactId, AttentionKind, Commit, Error, FsckOptions, InviteCheck, LeafType,
    NewNode, NodeId, Peer, PeerState, PlayerId, RenameMode, SetAttr, Timestamp, TreeType,
    XattrMode,
};

const CC: Commit = Commit::CrashConsistent;

type Case<'a> = (&'a [u8], fn(&Error) -> bool);

#[test]
fn bad_names_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let f = NewNode::file(0o644);
    let long = vec![b'x'; 256];
    let cases: Vec<Case> = vec![
        (b"a/b", |e| matches!(e, Error::InvalidName { .. })),
        (b"a\0b", |e| matches!(e, Error::InvalidName { .. })),
        (b"", |e| matches!(e, Error::InvalidName { .. })),
        (b".", |e| matches!(e, Error::InvalidName { .. })),
        (b"..", |e| matches!(e, Error::InvalidName { .. })),
        (&long, |e| matches!(e, Error::NameTooLong(256))),
    ];
    for (name, ok) in cases {
        let err = v.create(NodeId::ROOT, name, &f, None, now(), CC).unwrap_err();
        assert!(ok(&err), "{name:?}: {err}");
        assert!(v.lookup(NodeId::ROOT, name).is_err());
    }
    // 255 bytes is fine, and so is a non-UTF-8 name, stored as bytes.
    v.create(NodeId::ROOT, &[b'y'; 255], &f, None, now(), CC).unwrap();
    v.create(NodeId::ROOT, b"caf\xe9", &f, None, now(), CC).unwrap();
    assert_eq!(v.lookup(NodeId::ROOT, b"caf\xe9").unwrap().size, 0);
}

#[test]
fn missing_parent_and_wrong_kinds() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let f = NewNode::file(0o644);
    assert!(matches!(
        v.create(NodeId(9999), b"x", &f, None, now(), CC),
        Err(Error::NoSuchNode(NodeId(9999)))
    ));
    let file = v.create(NodeId::ROOT, b"file", &f, None, now(), CC).unwrap();
    assert!(matches!(v.create(file.id, b"x", &f, None, now(), CC), Err(Error::NotADirectory(_))));
    assert!(matches!(v.lookup(file.id, b"x"), Err(Error::NotADirectory(_))));
    assert!(matches!(
        v.create(NodeId::ROOT, b"file", &f, None, now(), CC),
        Err(Error::Exists { .. })
    ));
    assert!(matches!(v.lookup(NodeId::ROOT, b"nope"), Err(Error::NotFound { .. })));
    let d = v.create(NodeId::ROOT, b"d", &NewNode::dir(0o755), None, now(), CC).unwrap();
    assert!(matches!(v.remove(NodeId::ROOT, b"d", false, now(), CC), Err(Error::IsADirectory(_))));
    assert!(matches!(
        v.remove(NodeId::ROOT, b"file", true, now(), CC),
        Err(Error::NotADirectory(_))
    ));
    v.create(d.id, b"inner", &f, None, now(), CC).unwrap();
    assert!(matches!(v.remove(NodeId::ROOT, b"d", true, now(), CC), Err(Error::NotEmpty(_))));
    assert!(matches!(v.link(d.id, NodeId::ROOT, b"dl", now(), CC), Err(Error::NotPermitted(..))));
    let staged = v.stage(b"x").unwrap();
    assert!(matches!(v.set_content(d.id, &staged, now(), CC), Err(Error::IsADirectory(_))));
}

#[test]
fn moving_a_tree_into_its_own_child_is_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let a = v.create(NodeId::ROOT, b"a", &NewNode::dir(0o755), None, now(), CC).unwrap();
    let b = v.create(a.id, b"b", &NewNode::dir(0o755), None, now(), CC).unwrap();
    let c = v.create(b.id, b"c", &NewNode::dir(0o755), None, now(), CC).unwrap();
    for (target, name) in [(a.id, &b"self"[..]), (b.id, b"x"), (c.id, b"y")] {
        let err = v.rename(NodeId::ROOT, b"a", target, name, RenameMode::Replace, now(), CC);
        assert!(matches!(err, Err(Error::Cycle(..))), "{err:?}");
    }
    let err = v.rename(b.id, b"c", NodeId::ROOT, b"a", RenameMode::Exchange, now(), CC);
    assert!(matches!(err, Err(Error::Cycle(..))), "{err:?}");
    // Nothing moved.
    assert_eq!(v.lookup(NodeId::ROOT, b"a").unwrap().id, a.id);
    assert_eq!(v.lookup(b.id, b"c").unwrap().id, c.id);
    assert!(v.fsck(FsckOptions::default(), &mut |_| {}).unwrap().is_clean());
}

#[test]
fn rename_replaces_atomically_and_keeps_listing_place() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    put(&v, "a", b"first", CC);
    put(&v, "target", b"old", CC);
    put(&v, "z", b"last", CC);
    put(&v, "target.tmp", b"new", CC);
    let replaced = v
        .rename(
            NodeId::ROOT,
            b"target.tmp",
            NodeId::ROOT,
            b"target",
            RenameMode::Replace,
            now(),
            CC,
        )
        .unwrap()
        .unwrap();
    assert_eq!(replaced.nlink, 0);
    assert_eq!(get(&v, "target"), b"new");
    let names: Vec<Vec<u8>> =
        v.list(NodeId::ROOT, 0, 100).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, [&b"a"[..], b"target", b"z"]);
    // noreplace refuses, exchange swaps.
    let err = v.rename(NodeId::ROOT, b"a", NodeId::ROOT, b"z", RenameMode::NoReplace, now(), CC);
    assert!(matches!(err, Err(Error::Exists { .. })));
    v.rename(NodeId::ROOT, b"a", NodeId::ROOT, b"z", RenameMode::Exchange, now(), CC).unwrap();
    assert_eq!(get(&v, "a"), b"last");
    assert_eq!(get(&v, "z"), b"first");
    let err = v.rename(NodeId::ROOT, b"a", NodeId::ROOT, b"none", RenameMode::Exchange, now(), CC);
    assert!(matches!(err, Err(Error::NotFound { .. })));
    v.reap(replaced.id, CC).unwrap();
    assert!(v.fsck(FsckOptions::default(), &mut |_| {}).unwrap().is_clean());
}

/// A listing paged by position cookies, as readdir pages it, while entries are removed,
/// added and renamed between its pages: no entry is listed twice, and every entry that stayed
/// the whole time is listed.
#[test]
fn a_listing_resumed_after_its_last_position_survives_changes_between_pages() {
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let names: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
    for n in &names {
        put(&v, n, b"", CC);
    }
    let (mut listed, mut touched) = (Vec::new(), BTreeSet::new());
    let mut after = 0;
    for round in 0.. {
        let page = v.list(NodeId::ROOT, after, 7).unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        listed.extend(page.into_iter().map(|e| e.name));
        if round >= 30 {
            // (Past the first pages, the listing runs to its end: each new entry would be
            // the next page.)
            continue;
        }
        // Between pages: a name already listed and one not yet go, a new one comes, and one
        // is renamed in place.
        for i in [round * 11 % 300, (round * 13 + 5) % 300] {
            touched.insert(names[i].clone());
            let _ = v.remove(NodeId::ROOT, names[i].as_bytes(), false, now(), CC);
        }
        put(&v, &format!("new{round}"), b"", CC);
        let renamed = &names[(round * 17 + 1) % 300];
        touched.insert(renamed.clone());
        let to = format!("renamed{round}");
        let _ = v.rename(
            NodeId::ROOT,
            renamed.as_bytes(),
            NodeId::ROOT,
            to.as_bytes(),
            RenameMode::NoReplace,
            now(),
            CC,
        );
    }
    let unique: BTreeSet<&Vec<u8>> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "an entry listed twice");
    for n in names.iter().filter(|n| !touched.contains(*n)) {
        assert!(unique.contains(&n.as_bytes().to_vec()), "{n} stayed but was not listed");
    }
    assert!(v.fsck(FsckOptions::default(), &mut |_| {}).unwrap().is_clean());
}

#[test]
fn directory_link_counts_follow_subdirectories() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let d = NewNode::dir(0o755);
    let a = v.create(NodeId::ROOT, b"a", &d, None, now(), CC).unwrap();
    let b = v.create(NodeId::ROOT, b"b", &d, None, now(), CC).unwrap();
    v.create(a.id, b"sub", &d, None, now(), CC).unwrap();
    assert_eq!(v.node(a.id).unwrap().nlink, 3);
    assert_eq!(v.node(NodeId::ROOT).unwrap().nlink, 4);
    v.rename(a.id, b"sub", b.id, b"sub", RenameMode::Replace, now(), CC).unwrap();
    assert_eq!(v.node(a.id).unwrap().nlink, 2);
    assert_eq!(v.node(b.id).unwrap().nlink, 3);
    assert_eq!(v.parent_of(v.lookup(b.id, b"sub").unwrap().id).unwrap(), b.id);
    let removed = v.remove(b.id, b"sub", true, now(), CC).unwrap();
    assert_eq!(removed.nlink, 0);
    assert_eq!(v.node(b.id).unwrap().nlink, 2);
    assert!(v.fsck(FsckOptions::default(), &mut |_| {}).unwrap().is_clean());
}

#[test]
fn hard_links_share_a_node_and_unlinked_open_files_survive_until_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let f = put(&v, "f", b"shared", CC);
    let linked = v.link(f.id, NodeId::ROOT, b"g", now(), CC).unwrap();
    assert_eq!(linked.nlink, 2);
    put(&v, "g", b"changed", CC);
    assert_eq!(get(&v, "f"), b"changed");
    v.remove(NodeId::ROOT, b"f", false, now(), CC).unwrap();
    let last = v.remove(NodeId::ROOT, b"g", false, now(), CC).unwrap();
    assert_eq!(last.nlink, 0);
    // Still readable by id (an open handle) until reaped.
    assert_eq!(v.read_all(&v.node(f.id).unwrap().content.unwrap()).unwrap(), b"changed");
    drop(v);
    // Nothing can hold it across a restart: it is reaped at open.
    let v = open(dir.path());
    assert!(matches!(v.node(f.id), Err(Error::NoSuchNode(_))));
    assert!(v.fsck(FsckOptions::default(), &mut |_| {}).unwrap().is_clean());
}

#[test]
fn xattrs_follow_create_and_replace_flags() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let f = put(&v, "f", b"", CC);
    v.set_xattr(f.id, b"user.a", b"1", XattrMode::Create, now(), CC).unwrap();
    assert!(matches!(
        v.set_xattr(f.id, b"user.a", b"2", XattrMode::Create, now(), CC),
        Err(Error::XattrExists(_))
    ));
    assert!(matches!(
        v.set_xattr(f.id, b"user.b", b"2", XattrMode::Replace, now(), CC),
        Err(Error::NoXattr(_))
    ));
    v.set_xattr(f.id, b"user.a", b"3", XattrMode::Replace, now(), CC).unwrap();
    assert_eq!(v.get_xattr(f.id, b"user.a").unwrap(), b"3");
    assert!(matches!(
        v.set_xattr(f.id, b"user.big", &vec![0; 65 * 1024], XattrMode::Upsert, now(), CC),
        Err(Error::XattrTooLarge(_))
    ));
    assert_eq!(v.list_xattrs(f.id).unwrap(), vec![b"user.a".to_vec()]);
    v.remove_xattr(f.id, b"user.a", now(), CC).unwrap();
    assert!(matches!(v.get_xattr(f.id, b"user.a"), Err(Error::NoXattr(_))));
    assert!(matches!(v.remove_xattr(f.id, b"user.a", now(), CC), Err(Error::NoXattr(_))));
}

#[test]
fn inode_numbers_are_stable_and_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = {
        let v = open(dir.path());
        let a = put(&v, "a", b"1", CC).id;
        let b = put(&v, "b", b"2", CC).id;
        v.remove(NodeId::ROOT, b"b", false, now(), CC).unwrap();
        (a, b)
    };
    let v = open(dir.path());
    assert_eq!(v.lookup(NodeId::ROOT, b"a").unwrap().id, a);
    let c = put(&v, "c", b"3", CC).id;
    assert!(c.0 > b.0, "{c:?} reuses or precedes {b:?}");
    assert!(a.0 >= NodeId::FIRST_DYNAMIC);
}

#[test]
fn artifact_operations() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let t0 = Timestamp::from_millis(1_700_000_000_000);
    let root = v.root_tree().unwrap();
    assert_eq!(root.tree_type, TreeType::Vault);
    assert_eq!(root.steward, v.player());

    let leaf = v.place_leaf(b"# ideas", LeafType::File, t0).unwrap();
    assert_eq!(leaf.id, ArtifactId::Blob(*blake3::hash(b"# ideas").as_bytes()));
    let stories = v.create_tree(root.id, b"stories", None, t0, CC).unwrap();
    assert_eq!(stories.tree_type, TreeType::Collection);
    let quest = v.create_tree(stories.id, b"quest-log", None, t0, CC).unwrap();
    assert_eq!(quest.tree_type, TreeType::Story);
    let gallery = v.create_tree(root.id, b"gallery", None, t0, CC).unwrap();
    assert_eq!(gallery.tree_type, TreeType::Gallery);

    v.compose(quest.id, leaf.id, b"002-progress.md", Some(20), 0o644, t0, CC).unwrap();
    v.compose(quest.id, leaf.id, b"001-kickoff.md", Some(10), 0o644, t0, CC).unwrap();
    let err = v.compose(quest.id, leaf.id, b"003.md", Some(10), 0o644, t0, CC);
    assert!(matches!(err, Err(Error::Exists { .. })));
    let tree = v.tree_of(quest.node).unwrap();
    let labels: Vec<&[u8]> = tree.references.iter().map(|r| r.label.as_slice()).collect();
    assert_eq!(labels, [&b"001-kickoff.md"[..], b"002-progress.md"], "position order");
    assert!(tree.references.iter().all(|r| r.artifact_id == leaf.id));
    assert!(matches!(
        v.compose(quest.id, gallery.id, b"g", None, 0o644, t0, CC),
        Err(Error::NotPermitted(..))
    ));

    v.move_ref(quest.id, b"001-kickoff.md", gallery.id, b"kick.md", t0, CC).unwrap();
    assert_eq!(v.tree_of(gallery.node).unwrap().references.len(), 1);
    v.remove_ref(gallery.id, b"kick.md", t0, CC).unwrap();
    assert!(v.tree_of(gallery.node).unwrap().references.is_empty());

    let bob = PlayerId([0xb0; 32]);
    v.set_audience(quest.id, &[bob, bob], CC).unwrap();
    assert_eq!(v.tree_of(quest.node).unwrap().audience, vec![bob]);
    v.transfer_stewardship(quest.id, bob, CC).unwrap();
    assert_eq!(v.steward_of(quest.node).unwrap(), bob);
    v.set_tree_type(quest.node, TreeType::Document, CC).unwrap();
    assert_eq!(v.tree_of(quest.node).unwrap().tree_type, TreeType::Document);

    // Grants.
    v.put_peer(&peer(bob, "Bob", t0), CC).unwrap();
    assert_eq!(v.peers().unwrap().len(), 1);
    let file = v.lookup(quest.node, b"002-progress.md").unwrap().id;
    v.grant(quest.node, bob, AccessMode::Revocable, t0, CC).unwrap();
    let later = Timestamp::from_millis(1_700_000_100_000);
    v.grant(file, bob, AccessMode::Timed { expires_at: later }, t0, CC).unwrap();
    let grants = v.grants(Some(file)).unwrap();
    assert_eq!(grants.len(), 1);
    assert!(grants[0].is_active(t0) && !grants[0].is_active(later));
    assert_eq!(v.grants_to(bob, t0).unwrap().len(), 2);
    assert_eq!(v.grants_to(bob, later).unwrap().len(), 1);
    // A file in a shared folder is covered by the folder's grant.
    assert_eq!(v.covering_grant(bob, quest.node, t0).unwrap().unwrap().node, quest.node);
    assert!(v.covering_grant(bob, NodeId::ROOT, t0).unwrap().is_none());
    assert_eq!(v.expire_grants(later, CC).unwrap().len(), 1);
    assert!(v.grants(Some(file)).unwrap().is_empty());
    assert!(v.revoke(quest.node, bob, CC).unwrap().is_some());
    assert!(v.revoke(quest.node, bob, CC).unwrap().is_none());
    v.grant(quest.node, bob, AccessMode::Permanent, t0, CC).unwrap();
    assert!(matches!(v.revoke(quest.node, bob, CC), Err(Error::NotPermitted(..))));
    assert!(matches!(
        v.grant(quest.node, bob, AccessMode::Revocable, t0, CC),
        Err(Error::NotPermitted(..))
    ));
    assert!(matches!(
        v.grant(quest.node, bob, AccessMode::Transfer, t0, CC),
        Err(Error::NotPermitted(..))
    ));
    assert!(matches!(
        v.grant(NodeId::ROOT, bob, AccessMode::Revocable, t0, CC),
        Err(Error::NotPermitted(..))
    ));
    assert!(matches!(
        v.grant(NodeId(999_999), bob, AccessMode::Revocable, t0, CC),
        Err(Error::NoSuchNode(_))
    ));

    // Attention events persist in order.
    v.navigate_to(quest.id, None, t0).unwrap();
    v.navigate_back(quest.id, None, 90_000, later).unwrap();
    drop(v);
    let v = open(dir.path());
    let events = v.events(0, 10).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].1.kind, AttentionKind::Navigate);
    assert_eq!(events[1].1.kind, AttentionKind::Back);
    assert_eq!(events[1].1.at, later);
    assert_eq!(events[1].1.node, Some(quest.node));
    assert_eq!(v.recent_events(1).unwrap()[0].0, events[1].0);
    let agg = v.attention_of(quest.node).unwrap().unwrap();
    assert_eq!((agg.opens, agg.dwell_ms), (1, 90_000));
    let heat_before = v.heat(later).unwrap()[0].heat;
    assert!(heat_before > 0.0);
    // Pruning events leaves heat exactly as it was.
    assert_eq!(v.prune_events(events[0].0, CC).unwrap(), 1);
    assert_eq!(v.event_count().unwrap(), 1);
    assert!((v.heat(later).unwrap()[0].heat - heat_before).abs() < 1e-12);
    assert!(v.fsck(FsckOptions::default(), &mut |_| {}).unwrap().is_clean());
}

#[test]
fn a_second_open_of_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let err =
        indras_artifacts::Vault::open(dir.path(), "alice", &indras_artifacts::Options::default())
            .unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err}");
    drop(v);
    let err =
        indras_artifacts::Vault::open(dir.path(), "mallory", &indras_artifacts::Options::default())
            .unwrap_err();
    assert!(matches!(err, Error::WrongPlayer { .. }), "{err}");
}

/// Node ids come from reserved blocks: they stay unique and increasing across block
/// boundaries and across reopening, and a failed creation wastes at most its own id.
#[test]
fn node_ids_are_never_reused_across_blocks_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut last = 0u64;
    for round in 0..3 {
        let v = open(dir.path());
        for i in 0..1500 {
            let node = put(&v, &format!("r{round}-{i}"), b"x", Commit::CrashConsistent);
            assert!(node.id.0 > last, "id {} after {last}", node.id.0);
            last = node.id.0;
            assert!(seen.insert(node.id.0));
            if i % 500 == 0 {
                // Fails before it allocates: an existing name.
                assert!(
                    v.create(
                        NodeId::ROOT,
                        format!("r{round}-{i}").as_bytes(),
                        &NewNode::file(0o644),
                        None,
                        now(),
                        Commit::CrashConsistent
                    )
                    .is_err()
                );
            }
        }
        v.remove(NodeId::ROOT, format!("r{round}-0").as_bytes(), false, now(), Commit::Durable)
            .unwrap();
    }
}

fn peer(id: PlayerId, name: &str, at: Timestamp) -> Peer {
    Peer {
        id,
        name: name.to_owned(),
        their_name: name.to_lowercase(),
        addrs: vec!["127.0.0.1:4433".to_owned()],
        relay: None,
        state: PeerState::Accepted,
        added_at: at,
        last_seen: None,
    }
}

/// Peers are kept by id with a unique local name that is a valid folder name; a pending
/// request is a peer record too, and survives a reopen.
#[test]
fn peers_have_unique_valid_names() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Timestamp::from_millis(1_700_000_000_000);
    let (bob, carol) = (PlayerId([0xb0; 32]), PlayerId([0xc0; 32]));
    {
        let v = open(dir.path());
        v.put_peer(&peer(bob, "bob", t0), CC).unwrap();
        assert!(matches!(v.put_peer(&peer(carol, "bob", t0), CC), Err(Error::Exists { .. })));
        for bad in ["", "a/b", "..", "x\0y"] {
            assert!(v.put_peer(&peer(carol, bad, t0), CC).is_err(), "{bad:?}");
        }
        let mut pending = peer(carol, "carol", t0);
        pending.state = PeerState::Pending;
        v.put_peer(&pending, CC).unwrap();
        let mut renamed = peer(bob, "robert", t0);
        renamed.last_seen = Some(t0);
        v.put_peer(&renamed, CC).unwrap();
        v.close().unwrap();
    }
    let v = open(dir.path());
    let mut peers = v.peers().unwrap();
    peers.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(peers.len(), 2);
    assert_eq!((peers[0].name.as_str(), peers[0].state), ("carol", PeerState::Pending));
    assert_eq!((peers[1].name.as_str(), peers[1].last_seen), ("robert", Some(t0)));
    assert_eq!(v.peer(bob).unwrap().unwrap().name, "robert");
    assert!(v.remove_peer(carol, CC).unwrap());
    assert!(!v.remove_peer(carol, CC).unwrap());
    assert!(v.peer(carol).unwrap().is_none());
}

/// An invitation is used once, by the hash of its secret: then it is `Used`; past its expiry
/// it is `Expired`; an unknown secret is `Unknown`. Expired invitations are dropped when a
/// new one is added.
#[test]
fn invitations_are_used_once_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let t0 = Timestamp::from_millis(1_700_000_000_000);
    let day = Timestamp::from_millis(1_700_086_400_000);
    let (a, b) = ([1u8; 32], [2u8; 32]);
    v.add_invite(a, day, t0, CC).unwrap();
    v.add_invite(b, Timestamp::from_millis(1_700_000_000_500), t0, CC).unwrap();
    assert_eq!(v.redeem_invite(&[3; 32], t0).unwrap(), InviteCheck::Unknown);
    assert_eq!(v.redeem_invite(&a, t0).unwrap(), InviteCheck::Valid);
    assert_eq!(v.redeem_invite(&a, t0).unwrap(), InviteCheck::Used);
    assert_eq!(v.redeem_invite(&b, day).unwrap(), InviteCheck::Expired);
    v.add_invite([4; 32], day, day, CC).unwrap();
    assert_eq!(v.redeem_invite(&b, t0).unwrap(), InviteCheck::Unknown, "expired ones are dropped");
}

/// What the daemon delivers lands in a folder of the root, made if missing and owned as the
/// root is; delivering the same name again replaces the content.
#[test]
fn deliveries_make_their_folder_and_replace_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let t0 = Timestamp::from_millis(1_700_000_000_000);
    let attr = SetAttr { uid: Some(1000), gid: Some(100), ..SetAttr::default() };
    v.set_attr(NodeId::ROOT, &attr, t0, CC).unwrap();
    let (inbox, first) = v.deliver(b"inbox", b"request.json", b"{\"a\":1}", t0).unwrap();
    assert_eq!(v.lookup(NodeId::ROOT, b"inbox").unwrap().id, inbox);
    assert_eq!((first.uid, first.gid, first.perm), (1000, 100, 0o644));
    assert_eq!(v.read_all(&first.content.unwrap()).unwrap(), b"{\"a\":1}");
    let (again, second) = v.deliver(b"inbox", b"request.json", b"{\"a\":2}", t0).unwrap();
    assert_eq!((again, second.id), (inbox, first.id));
    assert_eq!(v.read_all(&second.content.unwrap()).unwrap(), b"{\"a\":2}");
    assert_eq!(v.list(inbox, 0, 10).unwrap().len(), 1);
    assert!(v.deliver(b"inbox", b"a/b", b"", t0).is_err());
}

/// `walk` lists every node below the root once, by the path `paths_of` gives it, with its kind
/// and size; `walk(Some(only))` lists just those, the same way.
#[test]
fn walk_names_every_node_once_as_paths_of_does() {
    use std::collections::HashSet;
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let d = v.create(NodeId::ROOT, b"d", &NewNode::dir(0o755), None, now(), CC).unwrap();
    let e = v.create(d.id, b"e", &NewNode::dir(0o755), None, now(), CC).unwrap();
    let staged = v.stage(b"twelve bytes").unwrap();
    let f = v.create(e.id, b"f\xff", &NewNode::file(0o644), Some(staged), now(), CC).unwrap();
    v.link(f.id, NodeId::ROOT, b"hard", now(), CC).unwrap();
    let l = v.create(d.id, b"l", &NewNode::symlink(b"target"), None, now(), CC).unwrap();
    let all = v.walk(None).unwrap();
    let ids: Vec<NodeId> = all.iter().map(|p| p.node).collect();
    let unique: HashSet<NodeId> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "each node once: {all:?}");
    assert_eq!(unique, [d.id, e.id, f.id, l.id].into_iter().collect(), "{all:?}");
    let paths = v.paths_of(&unique).unwrap();
    for p in &all {
        assert_eq!(paths[&p.node], p.path, "{p:?}");
        let node = v.node(p.node).unwrap();
        assert_eq!((p.kind, p.size), (node.kind, node.size), "{p:?}");
    }
    let only: HashSet<NodeId> = [f.id, NodeId(999_999)].into_iter().collect();
    let some = v.walk(Some(&only)).unwrap();
    assert_eq!(some.len(), 1, "{some:?}");
    assert_eq!(some[0], all.iter().find(|p| p.node == f.id).unwrap().clone());
    assert_eq!(some[0].size, 12);
}

/// `list_each` hands over the entries `list` returns, in the same order, and stops at the
/// entry its callback refuses (counted among those read): a reply that is full leaves the
/// rest for the next page, which starts after the last entry taken.
#[test]
fn list_each_gives_what_list_gives_and_stops_where_told() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    for i in 0..20 {
        put(&v, &format!("f{i:02}"), b"", CC);
    }
    v.remove(NodeId::ROOT, b"f03", false, now(), CC).unwrap();
    let listed = v.list(NodeId::ROOT, 0, 100).unwrap();
    let mut each = Vec::new();
    let read = v
        .list_each(NodeId::ROOT, 0, 100, |position, node, kind, name| {
            each.push((position, node, kind, name.to_vec()));
            true
        })
        .unwrap();
    assert_eq!(read, 19);
    let want: Vec<_> =
        listed.iter().map(|e| (e.position, e.node, e.kind, e.name.clone())).collect();
    assert_eq!(each, want);

    // A callback that takes 5 and refuses the 6th: 6 read; the next page starts after the 5th.
    let mut taken = Vec::new();
    let read = v
        .list_each(NodeId::ROOT, 0, 100, |position, _, _, name| {
            if taken.len() == 5 {
                return false;
            }
            taken.push((position, name.to_vec()));
            true
        })
        .unwrap();
    assert_eq!(read, 6);
    let rest = v.list(NodeId::ROOT, taken[4].0, 100).unwrap();
    let names: Vec<Vec<u8>> =
        taken.into_iter().map(|(_, n)| n).chain(rest.into_iter().map(|e| e.name)).collect();
    assert_eq!(names, listed.into_iter().map(|e| e.name).collect::<Vec<_>>());

    // At most `limit` read.
    assert_eq!(v.list_each(NodeId::ROOT, 0, 4, |_, _, _, _| true).unwrap(), 4);
}
