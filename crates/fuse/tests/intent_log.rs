//! Crash tests of the intent log: what a `fsync` returned for survives a crash at any I/O
//! step (of the log, the packs or the database), a log cut short at any byte, and a crash
//! during the replay itself.
//!
//! A crash is modelled as in the store's own crash tests: from some step on every I/O fails
//! (`StopAt`), the filesystem and vault are dropped without a clean close of the buffers, and
//! the vault is opened again, which replays the log. The content found must be the file as
//! it was at the last acknowledged `fsync`, or at some later operation.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use indras_artifacts::{FaultInjector, FsckOptions, IoStep, Options, Vault, frame};
use indras_fuse::{Ctx, MountInfo, SetAttrReq, VaultFs, inode};

mod common;
use common::{committed, scratch};

const CTX: Ctx = Ctx { uid: 0, gid: 0, pid: 1 };
const PLAYER: &str = "alice";

#[derive(Debug)]
struct StopAt {
    seen: AtomicU64,
    fail_at: AtomicU64,
}

impl StopAt {
    fn new(fail_at: u64) -> Arc<Self> {
        Arc::new(StopAt { seen: AtomicU64::new(0), fail_at: AtomicU64::new(fail_at) })
    }
}

impl FaultInjector for StopAt {
    fn check(&self, step: IoStep) -> io::Result<()> {
        if self.seen.fetch_add(1, Ordering::SeqCst) >= self.fail_at.load(Ordering::SeqCst) {
            Err(io::Error::other(format!("injected failure at {step:?}")))
        } else {
            Ok(())
        }
    }
}

fn open_fs(dir: &Path, faults: Option<Arc<StopAt>>) -> Result<VaultFs, String> {
    let opts =
        Options { faults: faults.map(|f| f as Arc<dyn FaultInjector>), ..Options::default() };
    let vault = Arc::new(Vault::open(dir, PLAYER, &opts).map_err(|e| e.to_string())?);
    let fs = VaultFs::new(vault, MountInfo::unmounted(PLAYER, dir)).map_err(|e| e.to_string())?;
    // Room on the disk, as a mount finds at start: fsyncs may use the log.
    fs.check_space();
    Ok(fs)
}

/// Copies a data dir as a crash leaves it. (In the process, not with `cp`: a child forked
/// by a test running beside this one would hold the store's lock until it execs.)
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Where the records in a log file end.
fn log_end(path: &Path) -> u64 {
    frame::frames(&std::fs::read(path).expect("log")).1
}

/// Whether the log's first file holds a record of a file's writes.
fn logged(dir: &Path) -> bool {
    let bytes = std::fs::read(dir.join("intent.0")).expect("log");
    frame::frames(&bytes).0.iter().any(|f| f.magic == frame::WRITES_MAGIC)
}

fn fsck_clean(fs: &VaultFs, at: &str) {
    let report = fs.vault().fsck(FsckOptions::default(), &mut |_| {}).expect("fsck");
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(report.is_clean(), "{at}: fsck: {problems:#?}");
}

/// A small deterministic generator, so every crash step replays the same operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write(u64, Vec<u8>),
    Truncate(u64),
    Fsync { datasync: bool },
    Flush,
    Drain,
}

fn ops(seed: u64, n: usize) -> Vec<Op> {
    let mut rng = Rng(seed);
    let mut size = BASE_LEN as u64;
    let mut out = Vec::new();
    for i in 0..n {
        let op = match rng.below(10) {
            0..=3 => {
                let most = if rng.below(4) == 0 { 300_000 } else { 5_000 };
                let len = 1 + rng.below(most);
                let at = match rng.below(3) {
                    0 => size,
                    _ => rng.below(size + 1),
                };
                let byte = (i % 251) as u8 + 1;
                size = size.max(at + len);
                Op::Write(at, vec![byte; len as usize])
            }
            4 => {
                size = rng.below(size + 50_000);
                Op::Truncate(size)
            }
            5..=7 => Op::Fsync { datasync: rng.below(3) != 0 },
            8 => Op::Flush,
            _ => Op::Drain,
        };
        out.push(op);
    }
    out
}

const BASE_LEN: usize = 200_000;

fn apply(model: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write(at, data) => {
            let end = *at as usize + data.len();
            if model.len() < end {
                model.resize(end, 0);
            }
            model[*at as usize..end].copy_from_slice(data);
        }
        Op::Truncate(size) => model.resize(*size as usize, 0),
        _ => {}
    }
}

/// A vault with one file of `BASE_LEN` bytes, committed and durable; returns its inode.
fn prepare(dir: &Path) -> u64 {
    let fs = open_fs(dir, None).expect("open");
    let (attr, opened) =
        fs.create(CTX, inode::VAULT, b"db", 0o644, libc::O_RDWR | libc::O_CREAT).expect("create");
    let base: Vec<u8> = (0..BASE_LEN).map(|i| (i * 7 % 256) as u8).collect();
    fs.write(opened.fh, 0, &base).expect("write");
    fs.release(opened.fh).expect("release");
    fs.commit_all().expect("commit");
    attr.ino
}

/// Runs `ops` on the file until one fails; returns the model's state after each operation
/// that ran (the first is the base) and the index of the state the last acknowledged `fsync`
/// made durable.
fn run(fs: &VaultFs, ino: u64, ops: &[Op]) -> (Vec<Vec<u8>>, usize) {
    let mut model: Vec<u8> = (0..BASE_LEN).map(|i| (i * 7 % 256) as u8).collect();
    let mut states = vec![model.clone()];
    let mut durable = 0;
    let Ok(opened) = fs.open(CTX, ino, libc::O_RDWR) else { return (states, durable) };
    let fh = opened.fh;
    for op in ops {
        let ok = match op {
            Op::Write(at, data) => fs.write(fh, *at, data).is_ok_and(|n| n as usize == data.len()),
            Op::Truncate(size) => {
                let req = SetAttrReq { size: Some(*size), fh: Some(fh), ..SetAttrReq::default() };
                fs.setattr(CTX, ino, &req).is_ok()
            }
            Op::Fsync { datasync } => fs.fsync(fh, *datasync).is_ok(),
            Op::Flush => fs.flush(fh).is_ok(),
            Op::Drain => fs.drain_log(true).is_ok(),
        };
        if !ok {
            // The operation may have taken effect in part: the states after it are unknown,
            // but it is the last one, and the content must be one of those before it or what
            // it left (checked as "at least the last fsync").
            break;
        }
        apply(&mut model, op);
        states.push(model.clone());
        if matches!(op, Op::Fsync { .. }) {
            durable = states.len() - 1;
        }
    }
    (states, durable)
}

fn check_recovered(dir: &Path, ino: u64, states: &[Vec<u8>], durable: usize, at: &str) {
    let fs = open_fs(dir, None).unwrap_or_else(|e| panic!("{at}: reopen: {e}"));
    let got = committed(&fs, ino);
    let found = states[durable..].iter().position(|s| *s == got);
    assert!(
        found.is_some(),
        "{at}: the content ({} bytes) is none of the {} states since the last acknowledged \
         fsync (state {durable}, {} bytes)",
        got.len(),
        states.len() - durable,
        states[durable].len()
    );
    fsck_clean(&fs, at);
}

/// A crash at every I/O step of a run of writes, truncations, fsyncs, flushes and drains
/// keeps what each acknowledged fsync made durable, and leaves a clean store.
#[test]
fn every_fsync_survives_a_crash_at_any_io_step() {
    let ops = ops(0x9e37_79b9_7f4a_7c15, 40);
    // Learn how many steps a whole run takes.
    let steps = {
        let dir = scratch();
        let ino = prepare(dir.path());
        let probe = StopAt::new(u64::MAX);
        let fs = open_fs(dir.path(), Some(probe.clone())).expect("open");
        let (states, durable) = run(&fs, ino, &ops);
        assert_eq!(states.len(), ops.len() + 1, "the run without faults did not finish");
        assert!(durable > 0);
        drop(fs);
        check_recovered(dir.path(), ino, &states, durable, "no fault");
        probe.seen.load(Ordering::SeqCst)
    };
    assert!(steps > 20, "only {steps} I/O steps");
    let stride = (steps / 150).max(1);
    let mut k = 0;
    while k <= steps {
        let dir = scratch();
        let ino = prepare(dir.path());
        let (states, durable) = match open_fs(dir.path(), Some(StopAt::new(k))) {
            Ok(fs) => run(&fs, ino, &ops),
            Err(_) => (vec![committed_base()], 0),
        };
        check_recovered(dir.path(), ino, &states, durable, &format!("crash at step {k}"));
        k += stride;
    }
}

fn committed_base() -> Vec<u8> {
    (0..BASE_LEN).map(|i| (i * 7 % 256) as u8).collect()
}

/// A new file's `fsync` while the store has other changes pending (the file's creation, a
/// file created and deleted beside it, as sqlite does with its rollback journal) survives a
/// crash at any I/O step: the file is there with the content of its last acknowledged
/// `fsync` or later, and what was deleted before it stays deleted.
#[test]
fn a_new_files_fsync_survives_a_crash_at_any_io_step() {
    // Runs the workload until an operation fails: the states of the new file after each
    // write (the first is empty), the state its last acknowledged fsync made durable (None:
    // none was), and its inode once created.
    let run = |fs: &VaultFs| -> (Vec<Vec<u8>>, Option<usize>, Option<u64>) {
        let mut states = vec![Vec::new()];
        let mut durable = None;
        let flags = libc::O_RDWR | libc::O_CREAT;
        let Ok((_, old)) = fs.create(CTX, inode::VAULT, b"old-journal", 0o644, flags) else {
            return (states, durable, None);
        };
        if fs.release(old.fh).is_err() || fs.unlink(inode::VAULT, b"old-journal").is_err() {
            return (states, durable, None);
        }
        let Ok((attr, new)) = fs.create(CTX, inode::VAULT, b"journal", 0o600, flags) else {
            return (states, durable, None);
        };
        let mut model = Vec::new();
        for round in 0..4u8 {
            let at = u64::from(round) * 3000;
            let data = vec![round + 1; 5000];
            if fs.write(new.fh, at, &data).is_err() {
                break;
            }
            let end = at as usize + data.len();
            model.resize(model.len().max(end), 0);
            model[at as usize..end].copy_from_slice(&data);
            states.push(model.clone());
            if fs.fsync(new.fh, round % 2 == 0).is_err() {
                break;
            }
            durable = Some(states.len() - 1);
        }
        (states, durable, Some(attr.ino))
    };
    // A vault made and closed before each run: the crashes are the workload's.
    let empty_vault = || {
        let dir = scratch();
        open_fs(dir.path(), None).expect("open").commit_all().expect("commit");
        dir
    };
    let steps = {
        let dir = empty_vault();
        let probe = StopAt::new(u64::MAX);
        let fs = open_fs(dir.path(), Some(probe.clone())).expect("open");
        let (states, durable, _) = run(&fs);
        assert_eq!((states.len(), durable), (5, Some(4)), "the run without faults did not finish");
        probe.seen.load(Ordering::SeqCst)
    };
    assert!(steps > 10, "only {steps} I/O steps");
    for k in 0..=steps {
        let at = format!("crash at step {k}");
        let dir = empty_vault();
        let (states, durable, ino) = match open_fs(dir.path(), Some(StopAt::new(k))) {
            Ok(fs) => run(&fs),
            Err(_) => (vec![Vec::new()], None, None),
        };
        let fs = open_fs(dir.path(), None).unwrap_or_else(|e| panic!("{at}: reopen: {e}"));
        assert!(fs.lookup(inode::VAULT, b"old-journal").is_err(), "{at}: the deleted file is back");
        match (durable, fs.lookup(inode::VAULT, b"journal")) {
            (Some(d), Ok(attr)) => {
                assert_eq!(Some(attr.ino), ino, "{at}: another inode");
                let got = committed(&fs, attr.ino);
                assert!(
                    states[d..].contains(&got),
                    "{at}: {} bytes, none of the states since the last acknowledged fsync",
                    got.len()
                );
            }
            (Some(_), Err(e)) => panic!("{at}: the fsync'd file is gone: {e}"),
            (None, _) => {}
        }
        fsck_clean(&fs, &at);
    }
}

/// A crash during the replay itself (at any of its I/O steps) loses nothing: the next open
/// replays again.
#[test]
fn a_crash_during_replay_replays_again() {
    let ops: Vec<Op> = ops(7, 30)
        .into_iter()
        .filter(|op| !matches!(op, Op::Flush | Op::Drain))
        .chain([Op::Fsync { datasync: true }])
        .collect();
    let dir = scratch();
    let ino = prepare(dir.path());
    let fs = open_fs(dir.path(), None).expect("open");
    let (states, durable) = run(&fs, ino, &ops);
    assert_eq!(durable, states.len() - 1);
    assert!(logged(dir.path()), "the fsyncs were not logged");
    // A crash: the buffer is never committed.
    drop(fs);
    let want = states.last().expect("states");
    let mut j = 0;
    loop {
        let copy = scratch();
        copy_dir(dir.path(), copy.path());
        let probe = StopAt::new(j);
        let finished = open_fs(copy.path(), Some(probe.clone())).is_ok();
        let fs = open_fs(copy.path(), None).unwrap_or_else(|e| panic!("reopen after {j}: {e}"));
        let got = committed(&fs, ino);
        assert!(
            got == *want,
            "replay stopped at step {j}: {} bytes, want {}",
            got.len(),
            want.len()
        );
        fsck_clean(&fs, &format!("replay stopped at step {j}"));
        if finished {
            break;
        }
        j += 1;
    }
    assert!(j > 0, "the replay did no I/O");
}

/// A log cut anywhere (a power loss keeps any prefix of what was not flushed) gives the file
/// as it was at the last fsync whose record is whole.
#[test]
fn a_log_cut_anywhere_gives_the_last_whole_record() {
    let dir = scratch();
    let ino = prepare(dir.path());
    let fs = open_fs(dir.path(), None).expect("open");
    let fh = fs.open(CTX, ino, libc::O_RDWR).expect("open").fh;
    let mut model = committed_base();
    let mut marks = vec![(0u64, model.clone())];
    let log = dir.path().join("intent.0");
    for (i, op) in ops(99, 40).iter().enumerate() {
        match op {
            Op::Write(at, data) => {
                fs.write(fh, *at, data).expect("write");
            }
            Op::Truncate(size) => {
                let req = SetAttrReq { size: Some(*size), fh: Some(fh), ..SetAttrReq::default() };
                fs.setattr(CTX, ino, &req).expect("truncate");
            }
            _ if i % 2 == 0 => {
                fs.fsync(fh, true).expect("fdatasync");
                let len = log_end(&log);
                apply(&mut model, op);
                if len > marks.last().expect("marks").0 {
                    marks.push((len, model.clone()));
                }
                continue;
            }
            _ => {}
        }
        apply(&mut model, op);
    }
    drop(fs);
    assert!(marks.len() > 5, "only {} records", marks.len() - 1);
    let full = std::fs::read(&log).expect("log");
    for w in marks.windows(2) {
        let (end, ref want) = w[0];
        // At the record's end, one byte into the next, and halfway through it.
        for cut in [end, end + 1, u64::midpoint(end, w[1].0), w[1].0 - 1] {
            let copy = scratch();
            copy_dir(dir.path(), copy.path());
            std::fs::write(copy.path().join("intent.0"), &full[..cut as usize]).expect("cut");
            let fs = open_fs(copy.path(), None).expect("reopen");
            let got = committed(&fs, ino);
            assert!(got == *want, "log cut at {cut}: {} bytes, want {}", got.len(), want.len());
        }
    }
}

/// A record whose writes a later commit holds is never applied again, even when the file has
/// come back to the content the record was logged over (a save undone, then saved).
#[test]
fn a_committed_record_is_not_replayed_over_the_same_content_again() {
    let dir = scratch();
    let ino = prepare(dir.path());
    let fs = open_fs(dir.path(), None).expect("open");
    let base = committed_base();
    let fh = fs.open(CTX, ino, libc::O_RDWR).expect("open").fh;
    fs.write(fh, 10, b"an edit").expect("write");
    fs.fsync(fh, true).expect("fdatasync");
    assert!(committed(&fs, ino) == base, "the fsync was logged, not committed");
    fs.flush(fh).expect("flush");
    // The edit undone: the base's bytes written back, and made durable.
    fs.write(fh, 10, &base[10..17]).expect("write");
    fs.fsync(fh, false).expect("fsync");
    fs.flush(fh).expect("flush");
    assert!(committed(&fs, ino) == base);
    fs.vault().sync().expect("sync");
    // A crash: the log still holds the edit's record, over the same content as now.
    drop(fs);
    assert!(logged(dir.path()), "the edit's record is not in the log");
    let fs = open_fs(dir.path(), None).expect("reopen");
    assert!(committed(&fs, ino) == base, "the undone edit came back");
}

/// A commit that fails (the disk, say) drops the buffer, but not what `fsync`s put in the
/// log: readers still see it, and a later commit, or a replay, stores it.
#[test]
fn a_failed_commit_keeps_what_fsync_logged() {
    let dir = scratch();
    let ino = prepare(dir.path());
    let faults = StopAt::new(u64::MAX);
    let fs = open_fs(dir.path(), Some(faults.clone())).expect("open");
    let fh = fs.open(CTX, ino, libc::O_RDWR).expect("open").fh;
    let mut want = committed_base();
    fs.write(fh, 100, b"logged").expect("write");
    want[100..106].copy_from_slice(b"logged");
    fs.fsync(fh, true).expect("fdatasync");
    assert!(committed(&fs, ino) == committed_base(), "the fsync was logged");
    fs.write(fh, 300, b"not fsync'd").expect("write");
    faults.fail_at.store(faults.seen.load(Ordering::SeqCst), Ordering::SeqCst);
    assert!(fs.flush(fh).is_err(), "the commit fails");
    faults.fail_at.store(u64::MAX, Ordering::SeqCst);
    let read = fs.read(ino, fh, 0, BASE_LEN as u32).expect("read");
    assert!(read == want, "what the fsync logged is gone from the file");
    fs.flush(fh).expect("flush");
    assert!(committed(&fs, ino) == want);
    fs.release(fh).expect("release");
    fsck_clean(&fs, "after the commit");
}

/// A power loss after `fsync`s that made the store's changes durable through redo records:
/// the database is back at its last durable commit (later commits were never flushed to the
/// device), and the log keeps any prefix of what was not synced. Every such state opens to
/// the files and folders as they were at the last `fsync` whose records are whole: the
/// journal of the round, created, written and deleted as sqlite does, the database file's
/// edits, and the folders made and renamed in between.
#[test]
fn a_power_loss_keeps_what_store_records_made_durable() {
    /// What the test checks after each acknowledged fsync.
    #[derive(Clone, Debug, PartialEq)]
    struct State {
        db: Vec<u8>,
        journal: Option<Vec<u8>>,
        dirs: Vec<String>,
    }
    let dir = scratch();
    let fs = open_fs(dir.path(), None).expect("open");
    let flags = libc::O_RDWR | libc::O_CREAT;
    let (db_attr, db) = fs.create(CTX, inode::VAULT, b"db", 0o644, flags).expect("create db");
    fs.write(db.fh, 0, &[9; 3000]).expect("write db");
    fs.fsync(db.fh, true).expect("fsync db");
    fs.vault().sync().expect("sync");
    // The database as the device holds it: nothing after this is a durable commit.
    let durable_db = std::fs::read(dir.path().join("meta.redb")).expect("meta.redb");

    let mut state = State { db: vec![9; 3000], journal: None, dirs: Vec::new() };
    let log = dir.path().join("intent.0");
    // After each acknowledged fsync: where the log ends, and the state. (The database file's first fsync is a record in the log, before the workload's.)
    let mut marks: Vec<(u64, State)> = vec![(log_end(&log), state.clone())];
    for round in 0..4u8 {
        let (_, j) = fs.create(CTX, inode::VAULT, b"journal", 0o600, flags).expect("journal");
        let content = vec![round + 1; 2000 + usize::from(round) * 700];
        fs.write(j.fh, 0, &content).expect("write journal");
        fs.fsync(j.fh, round % 2 == 1).expect("fsync journal");
        state.journal = Some(content);
        marks.push((log_end(&log), state.clone()));
        fs.write(db.fh, u64::from(round) * 1000, &[round + 20; 1500]).expect("write db");
        fs.fsync(db.fh, true).expect("fsync db");
        let at = usize::from(round) * 1000;
        state.db.resize(state.db.len().max(at + 1500), 0);
        state.db[at..at + 1500].fill(round + 20);
        marks.push((log_end(&log), state.clone()));
        fs.release(j.fh).expect("release journal");
        fs.unlink(inode::VAULT, b"journal").expect("unlink journal");
        state.journal = None;
        let name = format!("d{round}");
        fs.mkdir(CTX, inode::VAULT, name.as_bytes(), 0o755).expect("mkdir");
        if round % 2 == 1 {
            let new = format!("e{round}");
            fs.rename(inode::VAULT, name.as_bytes(), inode::VAULT, new.as_bytes(), 0)
                .expect("rename");
            state.dirs.push(new);
        } else {
            state.dirs.push(name);
        }
        // Commits that were never made durable (the mount's flushes between syncs).
        fs.vault().flush_pending().expect("flush");
        fs.fsyncdir().expect("fsyncdir");
        marks.push((log_end(&log), state.clone()));
    }
    let full = std::fs::read(&log).expect("log");
    let copy_at = |cut: u64| {
        let copy = scratch();
        copy_dir(dir.path(), copy.path());
        std::fs::write(copy.path().join("meta.redb"), &durable_db).expect("meta.redb");
        std::fs::write(copy.path().join("intent.0"), &full[..cut as usize]).expect("cut");
        copy
    };
    drop(fs);
    // The state a cut opens to, checked and found whole.
    let found = |cut: u64| -> State {
        let at = format!("log cut at {cut}");
        let copy = copy_at(cut);
        let fs = open_fs(copy.path(), None).unwrap_or_else(|e| panic!("{at}: reopen: {e}"));
        let db = fs.lookup(inode::VAULT, b"db").unwrap_or_else(|e| panic!("{at}: db: {e}"));
        assert_eq!(db.ino, db_attr.ino, "{at}: another inode");
        let dirs = (0..4)
            .flat_map(|round| [format!("d{round}"), format!("e{round}")])
            .filter(|name| fs.lookup(inode::VAULT, name.as_bytes()).is_ok())
            .collect();
        fsck_clean(&fs, &at);
        State {
            db: committed(&fs, db.ino),
            journal: fs.lookup(inode::VAULT, b"journal").ok().map(|a| committed(&fs, a.ino)),
            dirs,
        }
    };
    let mut before = marks[0].clone();
    for (end, want) in &marks[1..] {
        assert!(*end > before.0, "an fsync that logged nothing");
        // At the record's end: the state it made durable.
        assert!(found(*end) == *want, "log cut at {end}: not the state of the last fsync");
        // Cut inside its records: the state before, or one the operations since passed
        // through (the new journal created, its write not durable).
        let cut = u64::midpoint(before.0, *end);
        let got = found(cut);
        let created = State { journal: Some(Vec::new()), ..before.1.clone() };
        assert!(
            got == before.1 || got == created || got == *want,
            "log cut at {cut}: {got:?} is no state between the fsyncs"
        );
        before = (*end, want.clone());
    }
}
