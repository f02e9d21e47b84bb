//! File history on real mounts, through the command line: `history` lists a file's saves,
//! `restore` makes an old one current (and the kernel shows it at once) or brings a deleted file
//! back, `snapshot` takes, lists and deletes snapshots; the same commands work on a stored vault;
//! `--keep none` keeps nothing; a small disk's history stays within its share; bad input is a
//! one-line refusal.

use std::io::{Read as _, Seek as _};
use std::path::Path;

use indras_e2e::{
    Dirs, Mount, Tmpfs, bytes, cli, cli_err, disk_usage, s, settle, wait_until, xattr,
};
use serde_json::Value;

const MIB: usize = 1 << 20;

/// Saves `content` as an editor does: a temporary file renamed over `path`.
fn save(path: &Path, content: &[u8]) {
    let tmp =
        path.with_file_name(format!(".{}.tmp", path.file_name().expect("name").to_string_lossy()));
    std::fs::write(&tmp, content).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("JSON")
}

fn versions(path: &Path) -> Vec<Value> {
    json(&cli(&["history", s(path), "--json"])).as_array().expect("array").clone()
}

fn status(m: &Mount) -> Value {
    json(&cli(&["status", "--json", s(&m.mnt)]))
}

#[test]
fn history_restore_undelete_and_snapshots_on_a_mount_then_on_the_store() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();
    std::fs::create_dir(v.join("notes")).expect("mkdir");
    let file = v.join("notes/ideas.md");
    let saves: Vec<String> = (1..=5).map(|i| format!("save {i}: {}\n", "x".repeat(i))).collect();
    for c in &saves {
        save(&file, c.as_bytes());
        // Each save in a millisecond of its own, so that each one's time names it alone.
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    settle(&m.mnt);

    // Five versions, oldest first; the newest is the file's content id.
    let text = cli(&["history", s(&file)]);
    assert_eq!(text.lines().count(), 5, "{text}");
    let list = versions(&file);
    assert_eq!(list.len(), 5, "{list:?}");
    assert!(list.iter().all(|x| x["committer"] == "alice" && x["deleted_at"].is_null()));
    let sizes: Vec<u64> = list.iter().map(|x| x["size"].as_u64().expect("size")).collect();
    assert_eq!(sizes, saves.iter().map(|c| c.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        Some(list[4]["indra_id"].as_str().expect("id").to_owned()),
        xattr(&file, "user.indra.id")
    );
    for x in &list {
        assert!(text.contains(x["version"].as_str().expect("version")), "{text}");
    }

    // The file's pages are in the kernel's cache (a reader holds it open); a restore shows at
    // once all the same, to that reader and to a new one.
    let mut reader = std::fs::File::open(&file).expect("open");
    let read_again = |f: &mut std::fs::File| {
        let mut text = String::new();
        f.seek(std::io::SeekFrom::Start(0)).expect("seek");
        f.read_to_string(&mut text).expect("read");
        text
    };
    assert_eq!(read_again(&mut reader), saves[4]);
    let second = list[1]["version"].as_str().expect("version").to_owned();
    let out = cli(&["restore", s(&file), "--id", &second]);
    assert!(out.starts_with("restored notes/ideas.md"), "{out}");
    assert_eq!(read_again(&mut reader), saves[1]);
    drop(reader);
    assert_eq!(std::fs::read_to_string(&file).expect("read"), saves[1]);
    assert_eq!(std::fs::metadata(&file).expect("stat").len(), saves[1].len() as u64);
    let after = versions(&file);
    assert_eq!(after.len(), 6);
    assert_eq!(after[5]["indra_id"], list[1]["indra_id"]);

    // Deleted: listed with when; `--at` a time as printed (or in the folder-name form) brings
    // it back where it was.
    std::fs::remove_file(&file).expect("rm");
    settle(&m.mnt);
    let gone = versions(&file);
    assert_eq!(gone.len(), 6);
    assert!(gone.iter().all(|x| x["deleted_at"].is_string()), "{gone:?}");
    assert!(cli(&["history", s(&file)]).starts_with("notes/ideas.md, deleted "));
    let third = list[2]["time"].as_str().expect("time").replace(':', "-");
    let out = cli(&["restore", s(&file), "--at", &third]);
    assert!(out.starts_with("brought back notes/ideas.md"), "{out}");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), saves[2]);
    assert_eq!(versions(&file).len(), 7, "the undelete goes on with the history");

    // Elsewhere with --to; onto an existing path it is refused.
    std::fs::remove_file(&file).expect("rm");
    std::fs::create_dir(v.join("other")).expect("mkdir");
    let elsewhere = v.join("other/path.md");
    let time = list[3]["time"].as_str().expect("time").to_owned();
    cli(&["restore", s(&file), "--at", &time, "--to", s(&elsewhere)]);
    assert_eq!(std::fs::read_to_string(&elsewhere).expect("read"), saves[3]);
    assert!(!file.exists());
    save(&v.join("scratch.md"), b"scratch");
    settle(&m.mnt);
    std::fs::remove_file(v.join("scratch.md")).expect("rm");
    settle(&m.mnt);
    let scratch = s(&v.join("scratch.md")).to_owned();
    let e = cli_err(&["restore", &scratch, "--at", "2999-01-01T00:00:00Z", "--to", s(&elsewhere)]);
    assert!(e.contains("other/path.md exists"), "{e}");
    assert_eq!(std::fs::read_to_string(&elsewhere).expect("read"), saves[3]);

    // Bad input: one line each, and nothing changes.
    let e = cli_err(&["restore", s(&elsewhere), "--id", "fffffffffff"]);
    assert!(e.contains("no version 00000fffffffffff"), "{e}");
    let e = cli_err(&["restore", s(&elsewhere), "--at", "last tuesday"]);
    assert!(e.contains("not a time"), "{e}");
    let e = cli_err(&["restore", s(&elsewhere), "--id", "xyz"]);
    assert!(e.contains("not a version id"), "{e}");
    let e = cli_err(&["restore", s(&elsewhere)]);
    assert!(e.contains("--at TIME or --id HEX"), "{e}");
    let e = cli_err(&["history", s(&v.join("never-there.md"))]);
    assert!(e.contains("no such file"), "{e}");

    // Snapshots, through the daemon.
    let mnt = s(&m.mnt).to_owned();
    assert!(cli(&["snapshot", "create", "before", &mnt]).starts_with("took snapshot before"));
    cli(&["snapshot", "create", "kept", &mnt]);
    let e = cli_err(&["snapshot", "create", "before", &mnt]);
    assert!(e.contains("already exists"), "{e}");
    let names = |mnt: &str| -> Vec<String> {
        let list = json(&cli(&["snapshot", "list", "--json", mnt]));
        list.as_array()
            .expect("array")
            .iter()
            .map(|x| x["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(names(&mnt), ["before", "kept"]);
    assert!(cli(&["snapshot", "list", &mnt]).contains("before  "));
    cli(&["snapshot", "delete", "before", &mnt]);
    let e = cli_err(&["snapshot", "delete", "before", &mnt]);
    assert!(e.contains("no snapshot"), "{e}");
    assert_eq!(names(&mnt), ["kept"]);

    // The status shows history and snapshots.
    let st = status(&m);
    assert_eq!(st["history"]["keep"], "1d:all,7d:1h,30d:1d");
    assert!(st["history"]["versions"].as_u64().expect("versions") >= 8, "{st}");
    assert_eq!(st["snapshots"]["count"], 1);
    let text = cli(&["status", &mnt]);
    assert!(text.contains("\nHistory: ") && text.contains("\nSnapshots: 1 ("), "{text}");
    assert!(!text.contains("Warning"), "{text}");
    m.stop();

    // Not mounted: the same commands on the store, with paths from the vault's root.
    let data = s(&dirs.data).to_owned();
    let stored = cli(&["history", "other/path.md", "--data-dir", &data, "--json"]);
    assert_eq!(json(&stored).as_array().expect("array").len(), 8);
    assert_eq!(names(&format!("--data-dir={data}")), ["kept"]);
    let first = list[0]["version"].as_str().expect("version").to_owned();
    cli(&["restore", "other/path.md", "--id", &first, "--data-dir", &data]);
    let m = Mount::start(&dirs);
    assert_eq!(std::fs::read_to_string(m.vault().join("other/path.md")).expect("read"), saves[0]);
    m.stop();
}

#[test]
fn bad_history_flags_are_one_line_refusals() {
    let dirs = Dirs::new();
    let (mnt, data) = (s(&dirs.mnt).to_owned(), s(&dirs.data).to_owned());
    let mount = |flags: &[&str]| -> String {
        let mut args =
            vec!["mount", &mnt, "--player", "alice", "--data-dir", &data, "--no-network"];
        args.extend_from_slice(flags);
        cli_err(&args)
    };
    assert!(mount(&["--keep", "bogus"]).contains("--keep bogus"));
    assert!(mount(&["--keep", "7d:all,1d:1h"]).contains("further back"));
    assert!(mount(&["--snapshot-every", "soon"]).contains("--snapshot-every soon"));
    assert!(mount(&["--snapshot-every", "0s"]).contains("longer than zero"));
    assert!(mount(&["--history-max-percent", "120"]).contains("0 to 100"));
    assert!(mount(&["--min-free-percent", "some"]).contains("--min-free-percent"));
    assert!(!dirs.data.exists(), "a refused mount made its data dir");
}

#[test]
fn keep_none_keeps_no_versions() {
    let dirs = Dirs::new();
    let m = Mount::start_with(&dirs, &["--keep", "none"]);
    let file = m.vault().join("a.md");
    for i in 0..3 {
        save(&file, format!("v{i}").as_bytes());
    }
    settle(&m.mnt);
    assert_eq!(cli(&["history", s(&file)]), "no versions of a.md are kept\n");
    assert!(versions(&file).is_empty());
    let st = status(&m);
    assert_eq!(
        (st["history"]["keep"].as_str(), st["history"]["versions"].as_u64()),
        (Some("none"), Some(0))
    );
    m.stop();
}

#[test]
fn history_gives_way_on_a_small_disk_and_status_says_so() {
    let dirs = Dirs::new();
    let _tmpfs = Tmpfs::mount(&dirs.data, "64m");
    // History may take 10% of 64 MiB: 6.4 MiB. Retention and collection run every second.
    let m = Mount::start_with(
        &dirs,
        &["--history-max-percent", "10", "--gc-interval", "1", "--gc-grace", "1"],
    );
    let budget = 64 * MIB as u64 / 10;
    // What the store needs besides history: the current file, its database, slack.
    let bound = budget + 12 * MIB as u64;
    let file = m.vault().join("big.bin");
    let history_bytes = |m: &Mount| status(m)["history"]["bytes"].as_u64().expect("bytes");
    for round in 0..4u64 {
        // 10 MiB of rewrites a round, 40 MiB in all: more than history may keep.
        for i in 0..10 {
            std::fs::write(&file, bytes(round * 10 + i, MIB)).expect("write");
        }
        settle(&m.mnt);
        wait_until(&m, "history back within its budget", || history_bytes(&m) <= budget);
        wait_until(&m, "the data dir within its bound", || disk_usage(&dirs.data) <= bound);
    }
    assert_eq!(std::fs::read(&file).expect("read"), bytes(39, MIB));
    let list = versions(&file);
    assert!(!list.is_empty() && list.len() < 40, "{} versions kept", list.len());
    let st = status(&m);
    assert!(st["history"]["thinned"]["versions"].as_u64().expect("thinned") > 0, "{st}");
    let text = cli(&["status", s(&m.mnt)]);
    assert!(text.contains("Warning: history was thinned for space"), "{text}");
    m.stop();
}
