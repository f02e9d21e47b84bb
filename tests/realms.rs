//! Realms between real mounts on 127.0.0.1: a realm made with the CLI reaches every member,
//! `realms/<realm>/` shows on every mount what each member shares with all the others, and it
//! follows shares, recalls, membership changes and leaves.

use std::path::Path;

use indras_e2e::{Dirs, LOOPBACK, Mount, cli, cli_err, introduce, s, wait_until, xattr};
use serde_json::Value;

/// The names in `dir`, sorted; empty if it cannot be listed.
fn ls(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into()).collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn realms_json(m: &Mount) -> Value {
    let text = std::fs::read_to_string(m.mnt.join(".indra/realms.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn share_with_realm(m: &Mount, file: &str) -> String {
    let path = m.mnt.join("vault").join(file);
    cli(&["share", s(&path), "--with", "realm:aurora", "--mode", "revocable"])
}

#[test]
fn a_realm_shows_what_every_member_shares_with_all() {
    let dirs: Vec<Dirs> = (0..4).map(|_| Dirs::new()).collect();
    let alice = Mount::start_as(&dirs[0], "alice", LOOPBACK, &[]);
    let bob = Mount::start_as(&dirs[1], "bob", LOOPBACK, &[]);
    let carol = Mount::start_as(&dirs[2], "carol", LOOPBACK, &[]);
    introduce(&alice, "alice", &bob, "bob");
    introduce(&alice, "alice", &carol, "carol");
    introduce(&bob, "bob", &carol, "carol");

    // Bad input gets a one-line reason.
    assert!(cli_err(&["realm", "create", "a/b", "--members", "bob", s(&alice.mnt)]).contains('/'));
    assert!(
        cli_err(&["realm", "create", "x", "--members", "nobody", s(&alice.mnt)]).contains("nobody")
    );

    let said = cli(&["realm", "create", "aurora", "--members", "bob,carol", s(&alice.mnt)]);
    assert!(said.starts_with("created realm aurora"), "{said}");
    for m in [&alice, &bob, &carol] {
        wait_until(m, "the realm reaches every member", || ls(&m.mnt.join("realms")) == ["aurora"]);
    }
    let err = cli_err(&["realm", "add", "aurora", "alice", s(&bob.mnt)]);
    assert!(err.contains("creator"), "{err}");

    // Each shares a file with the realm; two share the same name.
    std::fs::write(alice.mnt.join("vault/spec.md"), "alice's spec\n").unwrap();
    std::fs::write(bob.mnt.join("vault/notes.md"), "bob's notes\n").unwrap();
    std::fs::write(carol.mnt.join("vault/spec.md"), "carol's spec\n").unwrap();
    let said = share_with_realm(&alice, "spec.md");
    assert!(said.starts_with("shared spec.md with bob, carol (revocable)"), "{said}");
    share_with_realm(&bob, "notes.md");
    share_with_realm(&carol, "spec.md");
    let all = ["notes.md", "spec (alice).md", "spec (carol).md"];
    for m in [&alice, &bob, &carol] {
        wait_until(m, "every view shows all three", || ls(&m.mnt.join("realms/aurora")) == all);
    }
    let at = |m: &Mount, name: &str| m.mnt.join("realms/aurora").join(name);
    wait_until(&bob, "bob reads carol's spec", || {
        std::fs::read(at(&bob, "spec (carol).md")).ok().as_deref() == Some(b"carol's spec\n")
    });
    assert_eq!(std::fs::read(at(&alice, "spec (alice).md")).unwrap(), b"alice's spec\n");
    wait_until(&carol, "carol reads bob's notes", || {
        std::fs::read(at(&carol, "notes.md")).ok().as_deref() == Some(b"bob's notes\n")
    });
    let alice_id = realms_json(&alice)[0]["members"][0]["player_id"].as_str().unwrap().to_owned();
    assert_eq!(xattr(&at(&bob, "spec (alice).md"), "user.indra.steward"), Some(alice_id));
    assert_eq!(
        xattr(&at(&bob, "spec (alice).md"), "user.indra.access_mode").as_deref(),
        Some("revocable")
    );
    let ours = xattr(&at(&alice, "spec (alice).md"), "user.indra.access_mode").unwrap();
    assert!(ours.starts_with("steward; "), "{ours}");
    let err = std::fs::write(at(&bob, "notes.md"), "changed").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let err = std::fs::write(bob.mnt.join("realms/aurora/new.md"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));

    let json = realms_json(&bob);
    assert_eq!(json[0]["name"], "aurora");
    assert_eq!(json[0]["creator"], "alice");
    assert_eq!(json[0]["shared_artifacts"], 3, "{json}");
    let states: Vec<&str> = json[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["connected", "you", "connected"], "{json}");
    let listed = cli(&["realm", "list", s(&carol.mnt)]);
    assert!(listed.starts_with("aurora  (created by alice, 3 shared"), "{listed}");

    // An edit through vault/ shows through realms/ on every side, also where the kernel
    // holds the old content and attributes.
    assert_eq!(std::fs::read(at(&alice, "notes.md")).unwrap(), b"bob's notes\n");
    std::fs::write(bob.mnt.join("vault/notes.md"), "bob's notes, edited\n").unwrap();
    wait_until(&alice, "the edit reaches alice's realm view", || {
        std::fs::read(at(&alice, "notes.md")).ok().as_deref() == Some(b"bob's notes, edited\n")
    });
    assert_eq!(std::fs::read(at(&bob, "notes.md")).unwrap(), b"bob's notes, edited\n");

    // A recall from one member takes it out of every view. Each mount has just looked the
    // name up, so the kernel holds it (for 60 s): it goes well before that only because the
    // daemon drops it.
    for m in [&alice, &bob, &carol] {
        assert!(at(m, "notes.md").exists());
    }
    cli(&["recall", s(&bob.mnt.join("vault/notes.md")), "--from", "carol"]);
    for m in [&alice, &bob, &carol] {
        wait_until(m, "the recalled name is gone", || !at(m, "notes.md").exists());
        wait_until(m, "the recall shows everywhere", || {
            ls(&m.mnt.join("realms/aurora")) == ["spec (alice).md", "spec (carol).md"]
        });
    }

    // A member added later sees the realm's grants only once the steward shares again;
    // meanwhile what is not shared with it is not shared with all, so it leaves the views.
    let dave = Mount::start_as(&dirs[3], "dave", LOOPBACK, &[]);
    introduce(&alice, "alice", &dave, "dave");
    cli(&["realm", "add", "aurora", "dave", s(&alice.mnt)]);
    wait_until(&dave, "dave is a member", || ls(&dave.mnt.join("realms")) == ["aurora"]);
    for m in [&alice, &bob, &carol] {
        wait_until(m, "nothing is shared with all four", || {
            ls(&m.mnt.join("realms/aurora")).is_empty()
        });
    }
    let said = share_with_realm(&alice, "spec.md");
    assert!(said.contains("bob, carol, dave"), "{said}");
    for m in [&alice, &bob, &dave] {
        wait_until(m, "alice's spec is back, dave included", || {
            ls(&m.mnt.join("realms/aurora")) == ["spec.md"]
        });
    }
    assert_eq!(std::fs::read(at(&dave, "spec.md")).unwrap(), b"alice's spec\n");

    // carol leaves: she stops seeing the realm, and the others stop counting her.
    assert_eq!(cli(&["realm", "leave", "aurora", s(&carol.mnt)]).trim(), "left realm aurora");
    assert!(ls(&carol.mnt.join("realms")).is_empty());
    wait_until(&alice, "carol is out", || {
        realms_json(&alice)[0]["members"].as_array().map(Vec::len) == Some(3)
    });
    // Removing a member is the creator's: dave goes, and his view with him. With only alice
    // and bob left, bob's notes (recalled from carol only) are shared with all again.
    cli(&["realm", "remove", "aurora", "dave", s(&alice.mnt)]);
    wait_until(&dave, "dave's realm goes", || ls(&dave.mnt.join("realms")).is_empty());
    for m in [&alice, &bob] {
        wait_until(m, "both files show", || {
            ls(&m.mnt.join("realms/aurora")) == ["notes.md", "spec.md"]
        });
    }
    // The creator's leave dissolves it for everyone.
    cli(&["realm", "leave", "aurora", s(&alice.mnt)]);
    wait_until(&bob, "the realm is dissolved", || ls(&bob.mnt.join("realms")).is_empty());
    assert!(ls(&alice.mnt.join("realms")).is_empty());
}
