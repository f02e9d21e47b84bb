//! `kill -9` of the daemon while files are written and fsync'd, for many rounds. After each
//! remount: every fsync'd file is intact, every other file holds one whole version (old or
//! new, never a mix), and fsck is clean.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use indras_e2e::{Dirs, Mount, binary};

const WRITER: &str = r"
import hashlib, os, random, sys
mnt, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
logf = open(log, 'a', buffering=1)
try:
    while True:
        name = 'f%d' % rnd.randrange(8)
        data = rnd.randbytes(rnd.choice([0, 10, 5000, 20000, 300000, 1500000]))
        mode = rnd.choice(['fsync', 'close', 'rename'])
        path = os.path.join(mnt, name)
        logf.write('B %s %s %s\n' % (name, hashlib.sha256(data).hexdigest(), mode))
        if mode == 'rename':
            tmp = path + '.tmp'
            with open(tmp, 'wb') as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path)
        else:
            with open(path, 'wb') as f:
                f.write(data)
                if mode == 'fsync':
                    f.flush()
                    os.fsync(f.fileno())
        logf.write('D\n')
except OSError:
    pass
";

struct Version {
    name: String,
    sha: String,
    durable: bool,
    done: bool,
}

fn read_log(path: &std::path::Path) -> Vec<Version> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: Vec<Version> = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["B", name, sha, mode] => out.push(Version {
                name: (*name).to_owned(),
                sha: (*sha).to_owned(),
                durable: *mode == "fsync",
                done: false,
            }),
            ["D"] => {
                if let Some(v) = out.last_mut() {
                    v.done = true;
                }
            }
            _ => {}
        }
    }
    out
}

fn sha256_of(path: &std::path::Path) -> Option<String> {
    let out = Command::new("sha256sum").arg(path).output().ok()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().map(str::to_owned)
}

/// A database's way of writing: files kept open, written in place, appended to and cut,
/// each change followed by `fdatasync` or not. These fsyncs go through the intent log.
const IN_PLACE_WRITER: &str = r"
import hashlib, os, random, sys
mnt, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
logf = open(log, 'a', buffering=1)
files = {}
try:
    for i in range(4):
        name = 'd%d' % i
        path = os.path.join(mnt, name)
        data = bytearray(open(path, 'rb').read()) if os.path.exists(path) else bytearray()
        files[name] = (os.open(path, os.O_RDWR | os.O_CREAT, 0o644), data)
    while True:
        name = 'd%d' % rnd.randrange(4)
        fd, data = files[name]
        sync = rnd.random() < 0.6
        # The state the change makes is logged before it is made: it may or may not be
        # there after a crash until its fdatasync returned.
        if rnd.random() < 0.85 or not data:
            at = rnd.randrange(len(data) + 1) if data and rnd.random() < 0.6 else len(data)
            chunk = rnd.randbytes(rnd.choice([1, 100, 4096, 70000]))
            data[at:at + len(chunk)] = chunk
            logf.write('B %s %s %s\n' % (name, hashlib.sha256(data).hexdigest(), 'fsync' if sync else 'none'))
            os.pwrite(fd, chunk, at)
        else:
            n = rnd.randrange(len(data) + 1)
            del data[n:]
            logf.write('B %s %s %s\n' % (name, hashlib.sha256(data).hexdigest(), 'fsync' if sync else 'none'))
            os.ftruncate(fd, n)
        if sync:
            os.fdatasync(fd)
        logf.write('D\n')
except OSError:
    pass
";

#[test]
fn kill_9_while_writing_and_fsyncing() {
    kill_9_rounds(WRITER, "f", 8);
}

#[test]
fn kill_9_while_databases_write_in_place_and_fdatasync() {
    let dirs = kill_9_rounds(IN_PLACE_WRITER, "d", 4);
    // The daemon's log names each replay: some round must have found records to apply.
    let replayed = daemon_log(&dirs)
        .lines()
        .filter_map(|l| l.split("intent log replayed").nth(1))
        .filter(|rest| {
            let digits: String = rest
                .split("files")
                .nth(1)
                .unwrap_or_default()
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse::<u64>().is_ok_and(|n| n > 0)
        })
        .count();
    assert!(replayed > 0, "no remount replayed a logged fsync");
}

/// Rounds of: mount, run `writer` over files `{prefix}0`.. for a while, `kill -9` the
/// daemon, remount and check every file against the writer's log.
fn kill_9_rounds(writer_script: &str, prefix: &str, files: usize) -> Dirs {
    let rounds = rounds();
    let dirs = Dirs::new();
    let log = dirs.tmp.path().join("writer.log");
    // name -> sha of the content known to be there at the start of a round ("" = absent)
    let mut state: BTreeMap<String, String> = BTreeMap::new();
    let mut total_versions = 0;
    for round in 0..rounds {
        let _ = std::fs::remove_file(&log);
        write_then_kill9(&dirs, writer_script, &log, round, 300);

        let versions = read_log(&log);
        total_versions += versions.len();
        let m = Mount::start(&dirs);
        for name in (0..files).map(|i| format!("{prefix}{i}")) {
            let mine: Vec<&Version> = versions.iter().filter(|v| v.name == name).collect();
            // Versions that may be there: the last one known durable (or the round's starting
            // state) and every one after it.
            let from = mine.iter().rposition(|v| v.durable && v.done);
            let mut allowed: Vec<String> = match from {
                Some(i) => mine[i..].iter().map(|v| v.sha.clone()).collect(),
                None => {
                    let mut a: Vec<String> = mine.iter().map(|v| v.sha.clone()).collect();
                    a.push(state.get(&name).cloned().unwrap_or_default());
                    a
                }
            };
            allowed.dedup();
            let got = sha256_of(&m.vault().join(&name)).unwrap_or_default();
            let earlier = mine.iter().rposition(|v| v.sha == got);
            assert!(
                allowed.contains(&got),
                "round {round}: {name} holds {got:?}, which is none of the versions it may hold \
                 ({} logged, the last durable is number {from:?}; it is number {earlier:?}, \
                 and {} the round's first state)",
                mine.len(),
                if state.get(&name) == Some(&got) { "is" } else { "is not" }
            );
            state.insert(name, got);
        }
        m.stop();
        fsck_deep(&dirs, round);
    }
    assert!(total_versions as u64 > rounds, "the writer made only {total_versions} writes");
    eprintln!(
        "kill -9: {rounds} rounds, {total_versions} file versions written, all checks passed"
    );
    dirs
}

/// A sqlite database with a rollback journal (`journal_mode=DELETE`), one insert per
/// transaction. The journal's `fsync` makes its creation durable through a redo record of the
/// store's rows in the intent log. `synchronous=EXTRA`, because the commit is the journal's
/// unlink: with `FULL`, sqlite does not `fsync` the folder after it, and a crash (a power
/// loss on any filesystem; here `kill -9` of the daemon, which holds that unlink in memory)
/// may roll the last transaction back. With `EXTRA` the folder's `fsync` (a redo record
/// too) makes the commit durable before `COMMIT` returns.
const SQLITE_WRITER: &str = r"
import os, sqlite3, sys
mnt, log, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
logf = open(log, 'a', buffering=1)
try:
    db = sqlite3.connect(os.path.join(mnt, 'rollback.db'), isolation_level=None)
    db.execute('PRAGMA journal_mode=DELETE')
    db.execute('PRAGMA synchronous=EXTRA')
    db.execute('CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, round INTEGER, body BLOB)')
    i = 0
    while True:
        db.execute('BEGIN')
        cur = db.execute('INSERT INTO t (round, body) VALUES (?, randomblob(?))', (seed, 100 + i * 37 % 3000))
        db.execute('COMMIT')
        # sqlite reports the commit even when it could not open the folder to fsync it (the
        # daemon killed right after the journal's unlink): a request that always reaches the
        # daemon tells whether it was still there, and so whether the fsync ran.
        os.statvfs(mnt)
        logf.write('%d\n' % cur.lastrowid)
        i += 1
except Exception:
    pass
";

/// Opens the database after a remount (sqlite rolls a hot journal back first) and checks it:
/// prints `ok` and its row count, or what is wrong.
const SQLITE_CHECK: &str = r"
import os, sqlite3, sys
mnt, log = sys.argv[1], sys.argv[2]
db = sqlite3.connect(os.path.join(mnt, 'rollback.db'))
check = db.execute('PRAGMA integrity_check').fetchall()
if check != [('ok',)]:
    print('integrity_check: %r' % check); sys.exit(1)
ids = set(r[0] for r in db.execute('SELECT id FROM t'))
committed = [int(l) for l in open(log) if l.strip()]
lost = [i for i in committed if i not in ids]
if lost:
    print('%d committed rows lost, the first %d' % (len(lost), lost[0])); sys.exit(1)
print('ok %d %d' % (len(ids), len(committed)))
";

#[test]
fn kill_9_while_sqlite_commits_through_a_rollback_journal() {
    let rounds = rounds();
    let dirs = Dirs::new();
    let log = dirs.tmp.path().join("sqlite.log");
    for round in 0..rounds {
        write_then_kill9(&dirs, SQLITE_WRITER, &log, round, 400);
        let m = Mount::start(&dirs);
        let out = Command::new("python3")
            .arg("-c")
            .arg(SQLITE_CHECK)
            .arg(m.vault())
            .arg(&log)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "round {round}: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        m.stop();
        fsck_deep(&dirs, round);
    }
    let committed = std::fs::read_to_string(&log).unwrap_or_default().lines().count() as u64;
    assert!(committed > rounds * 10, "only {committed} transactions committed");
    // Some remount must have found the store's redo records to replay.
    assert!(
        daemon_log(&dirs).contains("replayed the store's redo records"),
        "no remount replayed a redo record"
    );
    eprintln!(
        "kill -9: {rounds} rounds, {committed} sqlite transactions committed, all checks passed"
    );
}

/// How many rounds each test runs: `INDRAS_KILL9_ROUNDS`, 10 by default.
fn rounds() -> u64 {
    std::env::var("INDRAS_KILL9_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10)
}

/// Mounts, runs `script` (with the vault, `log` and the round as arguments) for `base_ms` and
/// up to a second more, chosen by the round, then `kill -9`s the daemon and stops the writer.
fn write_then_kill9(dirs: &Dirs, script: &str, log: &std::path::Path, round: u64, base_ms: u64) {
    let m = Mount::start(dirs);
    let mut writer = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(m.vault())
        .arg(log)
        .arg(round.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let delay = base_ms + u64::from(blake3::hash(&round.to_le_bytes()).as_bytes()[0]) * 4;
    std::thread::sleep(Duration::from_millis(delay));
    m.kill9();
    let _ = writer.kill();
    let _ = writer.wait();
}

/// `indras-fuse fsck --deep` of the (unmounted) data dir must be clean.
fn fsck_deep(dirs: &Dirs, round: u64) {
    let out = Command::new(binary())
        .args(["fsck", "--deep", "--data-dir"])
        .arg(&dirs.data)
        .output()
        .unwrap();
    assert!(out.status.success(), "round {round}: fsck: {}", String::from_utf8_lossy(&out.stdout));
}

/// What the daemons of this test process logged.
fn daemon_log(dirs: &Dirs) -> String {
    let path = dirs.tmp.path().join(format!("daemon-{}.log", std::process::id()));
    std::fs::read_to_string(path).unwrap_or_default()
}
