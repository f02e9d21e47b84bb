//! `.indra/history/` and `.indra/snapshots/` on a real mount, through real tools: every
//! saved version readable, deleted and renamed files findable, snapshots frozen, all
//! read-only.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indras_artifacts::{Commit, NewNode, NodeId, Options, Timestamp, Vault};
use indras_e2e::{Dirs, Mount, cli, have, settle, sh, sh_output, xattr};

/// Past the kernel's cache of history folders' names (1 s).
const FOLDER_TTL: Duration = Duration::from_millis(1200);

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The contents of the files in `dir`, in name order.
fn contents(dir: &Path) -> Vec<Vec<u8>> {
    names(dir).iter().map(|n| std::fs::read(dir.join(n)).unwrap()).collect()
}

/// Saves `content` into `path` with one write and one close, without truncating first (an
/// `O_TRUNC` open commits the emptied file as a version of its own).
fn save(path: &Path, content: &[u8]) {
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).unwrap();
    f.write_all(content).unwrap();
    drop(f);
    // Apart in time, so each version has a name of its own millisecond.
    std::thread::sleep(Duration::from_millis(3));
}

fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("refused").raw_os_error().expect("an errno")
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A version is what a save committed. Readers that need the content in the store (the
/// content's id, a status) commit what is written so far, but that is no version of its own:
/// the save that follows is, even when it writes nothing more.
#[test]
fn readers_never_make_a_write_buffer_a_version() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();
    let (first, rest) =
        (b"written before the readers, ".as_slice(), b"and after them\n".as_slice());
    let path = v.join("half.md");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(first).unwrap();
    cli(&["status", v.to_str().unwrap()]);
    std::fs::read_to_string(dirs.mnt.join(".indra/status.json")).unwrap();
    assert!(xattr(&path, "user.indra.id").is_some());
    f.write_all(rest).unwrap();
    drop(f);
    // Read, then saved with nothing more written: that save is the version.
    let whole = v.join("whole.md");
    let mut g = std::fs::File::create(&whole).unwrap();
    g.write_all(b"all of it").unwrap();
    assert!(xattr(&whole, "user.indra.id").is_some());
    drop(g);
    settle(&dirs.mnt);
    let hist = dirs.mnt.join(".indra/history/vault");
    assert_eq!(contents(&hist.join("half.md")), [[first, rest].concat()]);
    assert_eq!(contents(&hist.join("whole.md")), [b"all of it".to_vec()]);
    m.stop();
}

/// A save that reopens a file before the last save's commit ran (the commit delay) extends
/// that version: a burst of saves is one version, of the last content. Meanwhile, every
/// reader sees what was closed (close-to-open), its id names it, and the next save after the
/// commit is a version of its own.
#[test]
fn saves_within_the_commit_delay_make_one_version() {
    let dirs = Dirs::new();
    // Longer than the default (1 s), so that the saves surely fall within it.
    let m = Mount::start_with(&dirs, &["--commit-delay", "5000"]);
    let v = m.vault();
    let path = v.join("draft.md");
    let drafts: [&[u8]; 3] = [b"first draft\n", b"second draft, longer\n", b"third\n"];
    for d in drafts {
        std::fs::write(&path, d).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), d, "close-to-open");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), d.len() as u64);
        let id = blake3::hash(d).to_hex().to_string();
        assert_eq!(xattr(&path, "user.indra.id"), Some(id), "the id names the closed content");
        let seen = sh(&v, "cat draft.md");
        assert_eq!(seen.as_bytes(), d, "another process reads it");
    }
    let hist = dirs.mnt.join(".indra/history/vault/draft.md");
    settle(&dirs.mnt);
    assert_eq!(contents(&hist), [drafts[2].to_vec()], "one version, of the last save");

    std::fs::write(&path, b"after the commit\n").unwrap();
    settle(&dirs.mnt);
    std::thread::sleep(FOLDER_TTL);
    assert_eq!(contents(&hist), [drafts[2].to_vec(), b"after the commit\n".to_vec()]);
    m.stop();
}

#[test]
fn history_through_real_tools() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let mnt = dirs.mnt.clone();
    let v = m.vault();
    std::fs::create_dir(v.join("notes")).unwrap();
    let saves: Vec<Vec<u8>> =
        (1..=5).map(|i| format!("save {i}\n").repeat(i * 100).into_bytes()).collect();
    for s in &saves {
        save(&v.join("notes/ideas.md"), s);
        // Each save's commit runs before the next save: a save within the commit delay of
        // the one before would extend its version (see the test below).
        settle(&mnt);
    }
    settle(&mnt);
    let hist = mnt.join(".indra/history/vault/notes/ideas.md");
    assert_eq!(names(&mnt.join(".indra/history")), ["vault"]);
    assert_eq!(names(&mnt.join(".indra/history/vault")), ["notes"]);
    let versions = names(&hist);
    assert_eq!(versions.len(), 5, "{versions:?}");
    assert!(versions.iter().all(|n| n.ends_with("Z.md")), "{versions:?}");
    assert_eq!(contents(&hist), saves, "the versions, in name order, are the saves in order");

    // Real tools read them.
    let (first, last) = (hist.join(&versions[0]), hist.join(&versions[4]));
    let diff = sh_output(&mnt, &format!("diff '{}' '{}'", first.display(), last.display()));
    assert_eq!(diff.status.code(), Some(1), "two versions differ");
    sh(&mnt, &format!("diff '{}' vault/notes/ideas.md", last.display()));
    let copy = dirs.tmp.path().join("copy");
    sh(&mnt, &format!("cp -r .indra/history/vault/notes '{}'", copy.display()));
    assert_eq!(contents(&copy.join("ideas.md")), saves);
    let found = sh(&mnt, "grep -rl 'save 3' .indra/history/vault/");
    assert_eq!(found.trim(), format!(".indra/history/vault/notes/ideas.md/{}", versions[2]));
    let ls = sh(&mnt, "ls -l .indra/history/vault/notes/ideas.md/");
    assert_eq!(ls.lines().filter(|l| l.starts_with("-r--r--r--")).count(), 5, "{ls}");

    // Computed xattrs: the content's id (as the vault's file shows it) and the commit time.
    let id = xattr(&last, "user.indra.id").expect("user.indra.id");
    assert_eq!(Some(id), xattr(&v.join("notes/ideas.md"), "user.indra.id"));
    let at = xattr(&last, "user.indra.committed_at").expect("user.indra.committed_at");
    assert!(at.ends_with('Z') && at.len() == 24, "{at}");
    assert_eq!(format!("{}.md", at.replace(':', "-")), versions[4]);
    let meta = std::fs::metadata(&last).unwrap();
    assert_eq!(meta.len(), saves[4].len() as u64);
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777, 0o444);

    // Read-only, as the rest of `.indra/`.
    assert_eq!(errno(std::fs::write(hist.join("new.md"), b"x")), libc::EROFS);
    assert_eq!(errno(std::fs::create_dir(hist.join("d"))), libc::EROFS);
    assert_eq!(errno(std::fs::remove_file(&first)), libc::EROFS);
    assert_eq!(errno(std::fs::rename(&first, hist.join("x.md"))), libc::EROFS);
    assert_eq!(errno(std::fs::rename(v.join("notes/ideas.md"), hist.join("x.md"))), libc::EROFS);
    if is_root() {
        assert_eq!(errno(std::fs::OpenOptions::new().write(true).open(&first)), libc::EROFS);
    }
    let setfattr = sh_output(&mnt, &format!("setfattr -n user.x -v 1 '{}'", first.display()));
    assert!(!setfattr.status.success());
    let chmod = sh_output(&mnt, &format!("chmod 600 '{}'", first.display()));
    assert!(String::from_utf8_lossy(&chmod.stderr).contains("Read-only"), "{chmod:?}");

    // A renamed file keeps its history, under its new name.
    std::fs::rename(v.join("notes/ideas.md"), v.join("notes/plans.txt")).unwrap();
    std::thread::sleep(FOLDER_TTL);
    assert_eq!(names(&mnt.join(".indra/history/vault/notes")), ["plans.txt"]);
    let hist = mnt.join(".indra/history/vault/notes/plans.txt");
    assert_eq!(contents(&hist), saves);
    assert!(names(&hist).iter().all(|n| n.ends_with("Z.txt")));

    // A deleted file stays listed, its versions readable.
    std::fs::remove_file(v.join("notes/plans.txt")).unwrap();
    settle(&mnt);
    std::thread::sleep(FOLDER_TTL);
    assert_eq!(names(&mnt.join(".indra/history/vault/notes")), ["plans.txt"]);
    assert_eq!(contents(&hist), saves);

    // A new file of that name: both listed, the deleted one under a longer name.
    save(&v.join("notes/plans.txt"), b"fresh\n");
    settle(&mnt);
    std::thread::sleep(FOLDER_TTL);
    let listed = names(&mnt.join(".indra/history/vault/notes"));
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0], "plans.txt");
    assert!(
        listed[1].starts_with("plans.txt (deleted 20") && listed[1].ends_with("Z)"),
        "{listed:?}"
    );
    assert_eq!(contents(&hist), [b"fresh\n".to_vec()]);
    assert_eq!(contents(&mnt.join(".indra/history/vault/notes").join(&listed[1])), saves);

    // A deleted folder keeps what history keeps of its files.
    std::fs::create_dir(v.join("old")).unwrap();
    save(&v.join("old/README"), b"gone\n");
    sh(&v, "rm -r old");
    settle(&mnt);
    std::thread::sleep(FOLDER_TTL);
    assert_eq!(names(&mnt.join(".indra/history/vault")), ["notes", "old"]);
    let readme = mnt.join(".indra/history/vault/old/README");
    let kept = names(&readme);
    assert!(kept.len() == 1 && kept[0].ends_with('Z'), "no extension: {kept:?}");
    assert_eq!(contents(&readme), [b"gone\n".to_vec()]);
    m.stop();
}

/// Takes snapshot `name` of the vault in `data`, which no mount holds.
fn take_snapshot(data: &Path, name: &str) {
    let v = Vault::open(data, "alice", &Options::default()).unwrap();
    v.snapshot_create(name, false, Timestamp::now()).unwrap();
    v.close().unwrap();
}

#[test]
fn a_snapshot_stays_frozen_while_the_vault_changes() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();
    sh(
        &v,
        "mkdir -p notes/deep && echo one > notes/a.md && echo keep > notes/deep/b.txt \
         && ln -s deep/b.txt notes/link && chmod 600 notes/a.md && touch -d '2001-02-03 04:05:06' notes/deep/b.txt",
    );
    if have("setfattr") {
        sh(&v, "setfattr -n user.tag -v red notes/a.md");
    }
    m.stop();
    take_snapshot(&dirs.data, "before");

    let m = Mount::start(&dirs);
    let mnt = dirs.mnt.clone();
    let v = m.vault();
    sh(&v, "echo two > notes/a.md && rm -r notes/deep && echo new > notes/new.md");
    settle(&mnt);
    let snaps = mnt.join(".indra/snapshots");
    assert_eq!(names(&snaps), ["before"]);
    let snap = snaps.join("before");
    assert_eq!(names(&snap), ["notes"]);
    assert_eq!(names(&snap.join("notes")), ["a.md", "deep", "link"]);
    assert_eq!(std::fs::read(snap.join("notes/a.md")).unwrap(), b"one\n");
    assert_eq!(std::fs::read(snap.join("notes/link")).unwrap(), b"keep\n");
    assert_eq!(std::fs::read_link(snap.join("notes/link")).unwrap(), PathBuf::from("deep/b.txt"));
    let meta = std::fs::metadata(snap.join("notes/a.md")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777, 0o600);
    let b = std::fs::metadata(snap.join("notes/deep/b.txt")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::mtime(&b), 981_173_106);
    if have("getfattr") && have("setfattr") {
        assert_eq!(xattr(&snap.join("notes/a.md"), "user.tag").as_deref(), Some("red"));
    }
    assert_eq!(std::fs::read(v.join("notes/a.md")).unwrap(), b"two\n");
    // The whole snapshot copies out with real tools, and matches itself.
    let out = dirs.tmp.path().join("restored");
    sh(
        &mnt,
        &format!(
            "cp -a .indra/snapshots/before '{}' && diff -r .indra/snapshots/before '{}'",
            out.display(),
            out.display()
        ),
    );
    assert_eq!(std::fs::read(out.join("notes/deep/b.txt")).unwrap(), b"keep\n");

    // Read-only.
    assert_eq!(errno(std::fs::write(snap.join("notes/x"), b"x")), libc::EROFS);
    assert_eq!(errno(std::fs::remove_file(snap.join("notes/a.md"))), libc::EROFS);
    assert_eq!(errno(std::fs::create_dir(snaps.join("mine"))), libc::EROFS);
    if is_root() {
        let w = std::fs::OpenOptions::new().write(true).open(snap.join("notes/a.md"));
        assert_eq!(errno(w), libc::EROFS);
    }
    m.stop();
}

/// A file with 10,000 versions: its history folder lists every one, each named uniquely.
/// Prints how long listing it takes.
#[test]
fn ten_thousand_versions_list_quickly() {
    let dirs = Dirs::new();
    {
        let v = Vault::open(&dirs.data, "alice", &Options::default()).unwrap();
        let cc = Commit::CrashConsistent;
        let first = v.stage(b"version 0").unwrap();
        let f = v
            .create(
                NodeId::ROOT,
                b"big.log",
                &NewNode::file(0o644),
                Some(first),
                Timestamp::now(),
                cc,
            )
            .unwrap();
        for i in 1..10_000 {
            let staged = v.stage(format!("version {i}").as_bytes()).unwrap();
            v.set_content(f.id, &staged, Timestamp::now(), cc).unwrap();
        }
        v.close().unwrap();
    }
    let m = Mount::start(&dirs);
    let dir = dirs.mnt.join(".indra/history/vault/big.log");
    for round in 0..3 {
        let start = Instant::now();
        let listed = std::fs::read_dir(&dir).unwrap().count();
        let took = start.elapsed();
        assert_eq!(listed, 10_000);
        eprintln!("round {round}: listing 10,000 versions took {took:?}");
    }
    let start = Instant::now();
    let ls = sh(&dirs.mnt, "ls -l .indra/history/vault/big.log | wc -l");
    eprintln!("ls -l of 10,000 versions took {:?}", start.elapsed());
    assert_eq!(ls.trim(), "10001", "a total line and every version");
    let all = names(&dir);
    let unique: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), 10_000);
    assert!(all.iter().all(|n| Path::new(n).extension().is_some_and(|e| e == "log")));
    for name in [&all[0], &all[5_000], &all[9_999]] {
        let content = std::fs::read(dir.join(name)).unwrap();
        assert!(content.starts_with(b"version "), "{name}");
    }
    m.stop();
}
