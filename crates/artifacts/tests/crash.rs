//! Crash consistency: injected I/O failures at every step of a commit, and real `SIGKILL`s of
//! a child process in the middle of writing. After either, the store must open, fsck must be
//! clean, every durable commit must be intact, and the state must be that after some prefix
//! of the commits (so each crash-consistent commit is whole or absent).

mod common;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{bytes, now};
use indras_artifacts::{
    Commit, FaultInjector, FsckOptions, IoStep, NodeId, NodeKind, Options, Vault, hex,
};

/// Fails the `fail_at`-th I/O step and every step after it, as if the machine stopped there.
#[derive(Debug)]
struct StopAt {
    seen: AtomicU64,
    fail_at: u64,
}

impl StopAt {
    fn new(fail_at: u64) -> Self {
        StopAt { seen: AtomicU64::new(0), fail_at }
    }
}

impl FaultInjector for StopAt {
    fn check(&self, step: IoStep) -> io::Result<()> {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_at {
            Err(io::Error::other(format!("injected failure at {step:?}")))
        } else {
            Ok(())
        }
    }
}

/// The visible state: file name -> content hash.
fn snapshot(v: &Vault) -> BTreeMap<String, [u8; 32]> {
    let mut out = BTreeMap::new();
    for e in v.list(NodeId::ROOT, 0, usize::MAX).unwrap() {
        if e.kind != NodeKind::File {
            continue;
        }
        let node = v.node(e.node).unwrap();
        let leaf = node.content.unwrap();
        // Every byte must be readable and hash to the id.
        let data = v.read_all(&leaf).unwrap_or_else(|err| panic!("reading {:?}: {err}", e.name));
        assert_eq!(blake3::hash(&data).as_bytes(), &leaf);
        out.insert(String::from_utf8(e.name).unwrap(), leaf);
    }
    out
}

fn put(v: &Vault, name: &str, content: &[u8], commit: Commit) -> indras_artifacts::Result<()> {
    common::try_put(v, name, content, commit).map(drop)
}

fn assert_clean(v: &Vault) {
    let report = v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap();
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(report.is_clean(), "fsck: {problems:#?}");
}

#[test]
fn injected_failure_at_every_step_leaves_a_consistent_store() {
    let base_small = b"base small".to_vec();
    let base_big = bytes(1, 3 << 20);
    let new_big = bytes(2, 2 << 20);
    let edited = {
        let mut b = base_big.clone();
        b[1 << 20] ^= 0xff;
        b
    };
    let h = |b: &[u8]| *blake3::hash(b).as_bytes();

    // The sequence of operations; returns how many completed.
    let run = |v: &Vault| -> usize {
        let ops: [&dyn Fn() -> indras_artifacts::Result<()>; 5] = [
            &|| put(v, "new_big", &new_big, Commit::CrashConsistent),
            &|| put(v, "base_big", &edited, Commit::CrashConsistent),
            &|| v.sync(),
            &|| put(v, "after", b"after", Commit::Durable),
            &|| v.remove(NodeId::ROOT, b"base_small", false, now(), Commit::Durable).map(drop),
        ];
        ops.iter().take_while(|op| op().is_ok()).count()
    };

    let mut total_steps = None;
    let mut k = 0u64;
    loop {
        let dir = tempfile::tempdir().unwrap();
        {
            let v = common::open(dir.path());
            put(&v, "base_small", &base_small, Commit::Durable).unwrap();
            put(&v, "base_big", &base_big, Commit::Durable).unwrap();
        }
        let faults = std::sync::Arc::new(StopAt::new(k));
        let done = {
            let opts = Options { faults: Some(faults.clone()), ..Options::default() };
            match common::open_with(dir.path(), &opts) {
                Ok(v) => run(&v),
                Err(_) => 0,
            }
        };
        if total_steps.is_none() && k == 0 {
            // Learn how many steps a full run takes.
            let probe = std::sync::Arc::new(StopAt::new(u64::MAX));
            let pdir = tempfile::tempdir().unwrap();
            {
                let v = common::open(pdir.path());
                put(&v, "base_small", &base_small, Commit::Durable).unwrap();
                put(&v, "base_big", &base_big, Commit::Durable).unwrap();
            }
            let opts = Options { faults: Some(probe.clone()), ..Options::default() };
            let v = common::open_with(pdir.path(), &opts).unwrap();
            assert_eq!(run(&v), 5);
            drop(v);
            total_steps = Some(probe.seen.load(Ordering::SeqCst));
        }

        let v = common::open_with(dir.path(), &Options::default())
            .unwrap_or_else(|e| panic!("reopen after failure at step {k}: {e}"));
        assert_clean(&v);
        let s = snapshot(&v);
        // Durable results: op 2 (sync) makes ops 0 and 1 durable; ops 3 and 4 are durable.
        if done >= 3 {
            assert_eq!(s.get("new_big"), Some(&h(&new_big)), "step {k}");
            assert_eq!(s.get("base_big"), Some(&h(&edited)), "step {k}");
        }
        if done >= 4 {
            assert_eq!(s.get("after"), Some(&h(b"after")), "step {k}");
        }
        // The operation that failed may or may not have taken effect, but only whole.
        match done {
            5 => assert!(!s.contains_key("base_small"), "step {k}"),
            4 => assert!(s.get("base_small").is_none_or(|x| *x == h(&base_small)), "step {k}"),
            _ => assert_eq!(s.get("base_small"), Some(&h(&base_small)), "step {k}"),
        }
        // Crash-consistent results are whole or absent, and the base is never damaged.
        assert!(s.get("new_big").is_none_or(|x| *x == h(&new_big)), "step {k}");
        let big = s.get("base_big").unwrap();
        assert!(*big == h(&base_big) || *big == h(&edited), "step {k}");
        assert!(s.get("after").is_none_or(|x| *x == h(b"after")), "step {k}");
        drop(v);
        k += 1;
        if k > total_steps.unwrap() {
            break;
        }
    }
    assert!(k > 20, "only {k} steps were exercised");
}

const CHILD_DIR: &str = "INDRAS_CRASH_CHILD_DIR";
const CHILD_SEED: &str = "INDRAS_CRASH_CHILD_SEED";
const NAMES: usize = 6;

/// The child side of `sigkill_during_commits`: commits forever, logging each commit before
/// it starts ("B") and after it returns ("D"), until it is killed.
#[test]
fn crash_child_worker() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let dir = std::path::PathBuf::from(dir);
    let seed: u64 = std::env::var(CHILD_SEED).unwrap().parse().unwrap();
    let v = common::open(&dir.join("store"));
    let mut log =
        std::fs::OpenOptions::new().append(true).create(true).open(dir.join("log")).unwrap();
    let sizes = [0usize, 10, 5_000, 20_000, 300_000, 1_500_000];
    for i in 0u64.. {
        let r = blake3::hash(&[seed.to_le_bytes(), i.to_le_bytes()].concat());
        let r = r.as_bytes();
        let name = format!("f{}", r[0] as usize % NAMES);
        let durable = r[1].is_multiple_of(4);
        let commit = if durable { Commit::Durable } else { Commit::CrashConsistent };
        let remove = r[2].is_multiple_of(8);
        if remove {
            if v.lookup(NodeId::ROOT, name.as_bytes()).is_err() {
                continue;
            }
            writeln!(log, "B {name} - {}", u8::from(durable)).unwrap();
            let node = v.remove(NodeId::ROOT, name.as_bytes(), false, now(), commit).unwrap();
            writeln!(log, "D").unwrap();
            v.reap(node.id, Commit::CrashConsistent).unwrap();
        } else {
            let content = bytes(seed ^ i, sizes[r[3] as usize % sizes.len()]);
            writeln!(
                log,
                "B {name} {} {}",
                hex(blake3::hash(&content).as_bytes()),
                u8::from(durable)
            )
            .unwrap();
            put(&v, &name, &content, commit).unwrap();
            writeln!(log, "D").unwrap();
        }
    }
}

struct LoggedCommit {
    name: String,
    hash: Option<String>,
    durable: bool,
    done: bool,
}

fn read_log(path: &Path) -> Vec<LoggedCommit> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: Vec<LoggedCommit> = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["B", name, hash, durable] => out.push(LoggedCommit {
                name: (*name).to_owned(),
                hash: (*hash != "-").then(|| (*hash).to_owned()),
                durable: *durable == "1",
                done: false,
            }),
            ["D"] => out.last_mut().unwrap().done = true,
            // A line cut by the kill.
            _ => {}
        }
    }
    out
}

#[test]
fn sigkill_during_commits_keeps_durable_data_and_a_prefix_of_the_rest() {
    let rounds: u64 =
        std::env::var("INDRAS_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut state: BTreeMap<String, String> = BTreeMap::new();
    let mut total_commits = 0;
    for round in 0..rounds {
        let _ = std::fs::remove_file(dir.path().join("log"));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child_worker", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_SEED, round.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = 150 + u64::from(blake3::hash(&round.to_le_bytes()).as_bytes()[0]) * 3;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();

        let commits = read_log(&dir.path().join("log"));
        total_commits += commits.len();
        // The states after each prefix of the commits; index 0 is the state before any.
        let mut prefixes = vec![state.clone()];
        for c in &commits {
            let mut s = prefixes.last().unwrap().clone();
            match &c.hash {
                Some(h) => s.insert(c.name.clone(), h.clone()),
                None => s.remove(&c.name),
            };
            prefixes.push(s);
        }
        // Every commit up to the last durable one that returned must be there.
        let min = commits.iter().rposition(|c| c.durable && c.done).map_or(0, |i| i + 1);
        let v = common::open_with(&store, &Options::default())
            .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        assert!(v.recovered(), "round {round}: a killed store must reopen as recovered");
        assert_clean(&v);
        let got: BTreeMap<String, String> =
            snapshot(&v).into_iter().map(|(k, h)| (k, hex(&h))).collect();
        let matching = (min..prefixes.len()).find(|&i| prefixes[i] == got);
        assert!(
            matching.is_some(),
            "round {round}: recovered state is not a prefix of the {} commits that includes the \
             last durable one (#{min})",
            commits.len()
        );
        state = got;
    }
    assert!(total_commits > rounds as usize, "the child made only {total_commits} commits");
}

/// The child side of `sigkill_leaves_no_unnamed_bytes`: stages a payload that nothing will
/// ever name, says so, and waits to be killed.
#[test]
fn crash_child_stager() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else { return };
    let dir = std::path::PathBuf::from(dir);
    let v = common::open(&dir.join("store"));
    let staged = v.stage(&bytes(99, 8 << 20)).unwrap();
    std::fs::write(dir.join("staged"), b"").unwrap();
    std::thread::sleep(Duration::from_secs(60));
    drop(staged);
}

/// A process killed after appending chunks that no commit names leaves those bytes in a
/// pack; the next open (recovering) punches them, so they take no room.
#[test]
fn sigkill_leaves_no_unnamed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    {
        let v = common::open(&store);
        put(&v, "kept", &bytes(1, 2 << 20), Commit::Durable).unwrap();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child_stager", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !dir.path().join("staged").exists() {
        assert!(std::time::Instant::now() < deadline, "the child never staged its payload");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let packs = || common::disk_bytes(&store.join("packs"));
    assert!(packs() >= 10 << 20, "the staged payload is in the pack: {}", packs());
    let v = common::open(&store);
    assert!(v.recovered());
    // Each chunk takes its bytes rounded up to whole 4 KiB blocks, and nothing more.
    let stats = v.stats().unwrap();
    assert!(stats.pack_bytes <= stats.chunk_bytes + stats.chunks * 4096, "{stats:?}");
    assert!(packs() < 3 << 20, "{}", packs());
    assert_clean(&v);
    assert_eq!(common::get(&v, "kept"), bytes(1, 2 << 20));
}
