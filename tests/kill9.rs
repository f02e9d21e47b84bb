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

#[test]
fn kill_9_while_writing_and_fsyncing() {
    let rounds: u64 =
        std::env::var("INDRAS_KILL9_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let dirs = Dirs::new();
    let log = dirs.tmp.path().join("writer.log");
    // name -> sha of the content known to be there at the start of a round ("" = absent)
    let mut state: BTreeMap<String, String> = BTreeMap::new();
    let mut total_versions = 0;
    for round in 0..rounds {
        let _ = std::fs::remove_file(&log);
        let m = Mount::start(&dirs);
        let mut writer = Command::new("python3")
            .arg("-c")
            .arg(WRITER)
            .arg(m.vault())
            .arg(&log)
            .arg(round.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = 300 + u64::from(blake3::hash(&round.to_le_bytes()).as_bytes()[0]) * 4;
        std::thread::sleep(Duration::from_millis(delay));
        m.kill9();
        let _ = writer.kill();
        let _ = writer.wait();

        let versions = read_log(&log);
        total_versions += versions.len();
        let m = Mount::start(&dirs);
        for name in (0..8).map(|i| format!("f{i}")) {
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
            assert!(
                allowed.contains(&got),
                "round {round}: {name} holds {got:?}, which is none of the versions it may hold ({} logged)",
                mine.len()
            );
            state.insert(name, got);
        }
        m.stop();
        let out = Command::new(binary())
            .args(["fsck", "--deep", "--data-dir"])
            .arg(&dirs.data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "round {round}: fsck: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert!(total_versions as u64 > rounds, "the writer made only {total_versions} writes");
    eprintln!(
        "kill -9: {rounds} rounds, {total_versions} file versions written, all checks passed"
    );
}
