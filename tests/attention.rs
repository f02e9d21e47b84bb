//! Attention on a real mount: the log's integrity under concurrent opens, heat.json under
//! concurrency, the status command, the indra xattrs through getfattr/setfattr, and the cost
//! of attention on `open()`.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use indras_e2e::{Dirs, Mount, binary, have, settle, sh};

fn log_events(mnt: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(mnt.join(".indra/attention.log")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("unparsable line {l:?}: {e}")))
        .collect()
}

fn count(events: &[serde_json::Value], kind: &str, path_prefix: &str) -> usize {
    events
        .iter()
        .filter(|e| {
            e["kind"] == kind && e["path"].as_str().is_some_and(|p| p.starts_with(path_prefix))
        })
        .count()
}

#[test]
fn attention_log_integrity_under_8_threads() {
    const THREADS: usize = 8;
    const OPENS: usize = 1500;
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();
    std::fs::create_dir(v.join("busy")).unwrap();
    for t in 0..THREADS {
        std::fs::write(v.join(format!("busy/f{t}")), format!("file {t}")).unwrap();
    }
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let path = v.join(format!("busy/f{}", t % 4)); // overlapping files
            s.spawn(move || {
                for _ in 0..OPENS {
                    drop(std::fs::File::open(&path).unwrap());
                }
            });
        }
        // Meanwhile heat.json and attention.log stay valid.
        s.spawn(|| {
            for _ in 0..20 {
                let text = std::fs::read_to_string(m.mnt.join(".indra/heat.json")).unwrap();
                let _: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("heat.json: {e}\n{text}"));
                let _ = log_events(&m.mnt);
            }
        });
    });
    settle(&m.mnt);
    let events = log_events(&m.mnt);
    let total = THREADS * OPENS;
    assert_eq!(
        count(&events, "navigate_to", "vault/busy/"),
        total,
        "an open was lost or duplicated"
    );
    assert_eq!(
        count(&events, "navigate_back", "vault/busy/"),
        total,
        "a close was lost or duplicated"
    );
    let seqs: HashSet<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), events.len(), "duplicate sequence numbers");
    let heat: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.mnt.join(".indra/heat.json")).unwrap())
            .unwrap();
    for t in 0..4 {
        let entry = &heat[format!("vault/busy/f{t}")];
        assert_eq!(entry["opens"], 2 * OPENS, "{entry}");
        assert!(entry["heat"].as_f64().unwrap() > 0.99, "{entry}");
    }
    assert!(heat.get("vault/busy/f4").is_none() || heat["vault/busy/f4"]["opens"] == 0);
    // heat.json is sorted by heat.
    let heats: Vec<f64> =
        heat.as_object().unwrap().values().map(|e| e["heat"].as_f64().unwrap()).collect();
    assert!(heats.windows(2).all(|w| w[0] >= w[1]), "{heats:?}");
    m.stop();
    // The log is the same after a remount.
    let m = Mount::start(&dirs);
    let again = log_events(&m.mnt);
    assert_eq!(count(&again, "navigate_to", "vault/busy/"), total);
    assert_eq!(count(&again, "navigate_back", "vault/busy/"), total);
    m.stop();
}

#[test]
fn status_mounted_and_unmounted_with_and_without_json() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    std::fs::create_dir(m.vault().join("notes")).unwrap();
    std::fs::write(m.vault().join("notes/ideas.md"), b"# ideas").unwrap();
    for _ in 0..3 {
        std::fs::read(m.vault().join("notes/ideas.md")).unwrap();
    }
    settle(&m.mnt);
    let run = |args: &[&str]| {
        let out = Command::new(binary()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let mnt = m.mnt.to_str().unwrap().to_owned();
    let text = run(&["status", &mnt]);
    for want in [
        "Mounted: ",
        "Player: alice",
        "Artifacts: ",
        "Peers: 0 connected",
        "Attention events (last hour): ",
        "Hot artifacts: vault/notes/ideas.md (",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let json: serde_json::Value = serde_json::from_str(&run(&["status", &mnt, "--json"])).unwrap();
    assert_eq!(json["mounted"], true);
    assert_eq!(json["hot"][0]["path"], "vault/notes/ideas.md");
    assert!(json["attention"]["events_last_hour"].as_u64().unwrap() >= 6);
    m.stop();
    let data = dirs.data.to_str().unwrap().to_owned();
    let text = run(&["status", "--data-dir", &data]);
    for want in [
        "not mounted",
        "Player: alice",
        "Attention events (last hour): ",
        "Hot artifacts: vault/notes/ideas.md (",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&run(&["status", "--data-dir", &data, "--json"])).unwrap();
    assert_eq!(json["mounted"], false);
    assert_eq!(json["hot"][0]["path"], "vault/notes/ideas.md");
}

#[test]
fn indra_xattrs_through_getfattr_and_setfattr() {
    if !have("getfattr") {
        return;
    }
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();
    sh(&v, "mkdir gallery && echo hello > gallery/a.txt && cat gallery/a.txt > /dev/null");
    let id = sh(&v, "getfattr --only-values -n user.indra.id gallery/a.txt");
    let b3 = blake3::hash(b"hello\n").to_hex().to_string();
    assert_eq!(id, b3);
    if have("b3sum") {
        assert_eq!(sh(&v, "b3sum --no-names gallery/a.txt").trim(), id);
    }
    let heat: f64 =
        sh(&v, "getfattr --only-values -n user.indra.heat gallery/a.txt").parse().unwrap();
    assert!(heat > 0.0);
    assert_eq!(sh(&v, "getfattr --only-values -n user.indra.tree_type gallery"), "Gallery");
    sh(&v, "setfattr -n user.indra.tree_type -v Story gallery");
    assert_eq!(sh(&v, "getfattr --only-values -n indra.tree_type gallery"), "Story");
    assert!(sh(&v, "getfattr -d gallery").contains("user.indra.tree_type=\"Story\""));
    let out = indras_e2e::sh_output(&v, "setfattr -n user.indra.heat -v 1 gallery/a.txt");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not permitted"), "{out:?}");
    // Computed attributes are not listed, so copies neither carry nor choke on them.
    sh(&v, "cp -a gallery gallery2 && rsync -aX gallery/ gallery3/ 2>&1");
    assert_eq!(sh(&v, "getfattr --only-values -n user.indra.tree_type gallery2"), "Story");
    m.stop();
}

/// Opens and closes one file 20,000 times; returns the rate and the events now stored.
fn open_close_rate(dirs: &Dirs, attention: &str) -> (f64, u64) {
    let m = Mount::start_with(dirs, &["--attention", attention]);
    let path = m.vault().join("f");
    std::fs::write(&path, b"x").unwrap();
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        drop(std::fs::File::open(&path).unwrap());
    }
    let rate = f64::from(n) / t.elapsed().as_secs_f64();
    settle(&m.mnt);
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.mnt.join(".indra/status.json")).unwrap())
            .unwrap();
    let stored = status["attention"]["events_stored"].as_u64().unwrap();
    m.stop();
    (rate, stored)
}

/// `--attention off` records nothing and `on` records every open and close. Prints the cost
/// of attention on `open()` for the record (no timed assertion).
#[test]
fn attention_on_and_off_and_its_cost_on_open() {
    let on_dirs = Dirs::new();
    let off_dirs = Dirs::new();
    let (off, off_events) = open_close_rate(&off_dirs, "off");
    let (on, on_events) = open_close_rate(&on_dirs, "on");
    assert_eq!(off_events, 0, "attention off recorded events");
    assert!(on_events >= 40_000, "attention on recorded {on_events} events for 20,000 opens");
    eprintln!("open+close per second: attention on {on:.0}, off {off:.0}");
}
