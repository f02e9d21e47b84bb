//! Runs every Lua scenario in `lua-scenarios/` through `indras-fuse scenario FILE`, one after
//! another (they mount real vaults; running them at once would only measure contention),
//! prints each one's output and runtime, and fails if any scenario fails or leaves a mount
//! behind. Also: what a failing scenario prints, and that a scenario blocked on a hung mount
//! is stopped by its timeout with nothing left behind.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indras_e2e::binary;

/// The tests here run one at a time: each checks that no scenario mount is left.
static SERIAL: Mutex<()> = Mutex::new(());

/// Past the runner's own deadline (300 s at most by default) and its cleanup.
const HARD_LIMIT: Duration = Duration::from_secs(420);

fn scenario_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lua-scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("read_dir").path())
        .filter(|p| p.extension().is_some_and(|x| x == "lua"))
        .collect();
    files.sort();
    files
}

/// Mount points the runner made (`/tmp/indras-scenario-*`), from mountinfo.
fn scenario_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| mp.contains("/indras-scenario-"))
        .map(str::to_owned)
        .collect()
}

/// Runs one scenario; returns (passed, output).
fn run(file: &Path) -> (bool, String) {
    let (code, text) = run_with(file, &[]);
    (code == Some(0), text)
}

/// Runs one scenario with extra flags; returns (exit code, output).
fn run_with(file: &Path, flags: &[&str]) -> (Option<i32>, String) {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    // One open file for both, so they share the offset and interleave as on a terminal.
    let sink = out.reopen().expect("reopen");
    let mut child = Command::new(binary())
        .arg("scenario")
        .arg(file)
        .args(flags)
        .stdin(Stdio::null())
        .stdout(sink.try_clone().expect("clone"))
        .stderr(sink)
        .spawn()
        .expect("spawn indras-fuse scenario");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if started.elapsed() > HARD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    let _ = out.reopen().expect("reopen").read_to_string(&mut text);
    match status {
        Some(s) => (s.code(), text),
        None => (None, format!("{text}\n(killed after {}s)", HARD_LIMIT.as_secs())),
    }
}

/// Writes a scenario to a temp dir.
fn script(dir: &tempfile::TempDir, name: &str, source: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, source).expect("write scenario");
    path
}

/// The mount point a scenario logged as `mnt=PATH`.
fn logged_mountpoint(output: &str) -> String {
    logged(output, "mnt")
}

/// The value a scenario logged as `KEY=VALUE`.
fn logged(output: &str, key: &str) -> String {
    let tag = format!(" {key}=");
    output
        .lines()
        .find_map(|l| l.split(&tag).nth(1))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{output}"))
        .trim()
        .to_owned()
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(cmd);
            }
        }
    }
    found
}

#[test]
fn a_failing_scenario_names_its_step_and_reason_and_exits_non_zero() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = script(
        &dir,
        "failing.lua",
        r#"-- fails on purpose
local v = step("mount", function() return vault.mount{} end)
log("mnt=" .. v.mountpoint)
step("check content", function()
  fs.write(v:path("a.txt"), "hello")
  assert_eq(fs.read(v:path("a.txt")), "hellp", "content of a.txt")
end)
"#,
    );
    let (code, output) = run_with(&file, &[]);
    println!("{output}");
    assert_eq!(code, Some(1), "exit code");
    let want = format!(
        "scenario {} failed at step \"check content\": failing.lua:6: content of a.txt: \
         expected \"hellp\", got \"hello\"",
        file.display()
    );
    assert!(output.contains(&want), "expected {want:?} in the output");
    let mnt = logged_mountpoint(&output);
    assert!(scenario_mounts().is_empty(), "left mounted: {:?}", scenario_mounts());
    assert!(processes_mentioning(&mnt).is_empty(), "daemon left running");
}

#[test]
fn a_scenario_blocked_on_a_hung_mount_is_stopped_by_its_timeout() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = script(
        &dir,
        "hung.lua",
        r#"-- the daemon stops answering; the read blocks in the kernel
-- timeout: 100
local v = step("mount", function() return vault.mount{} end)
log("mnt=" .. v.mountpoint)
step("write", function() fs.write(v:path("a"), "x") end)
step("blocked read", function()
  local pid = v:pid()
  os.execute("kill -STOP " .. pid)
  assert_true(wait_for(function() return fs.read("/proc/" .. pid .. "/stat"):match("%) T ") end),
    "the daemon is stopped")
  fs.read(v:path("never-looked-up"))
end)
"#,
    );
    let started = Instant::now();
    let (code, output) = run_with(&file, &["--timeout", "2"]);
    let took = started.elapsed();
    println!("{output}\n(took {:.1}s)", took.as_secs_f64());
    assert_eq!(code, Some(1), "exit code");
    assert!(
        output.contains("failed at step \"blocked read\": timed out after 2s"),
        "the timeout, at the blocked step"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let mnt = logged_mountpoint(&output);
    assert!(scenario_mounts().is_empty(), "left mounted: {:?}", scenario_mounts());
    assert!(processes_mentioning(&mnt).is_empty(), "daemon left running");
}

#[test]
fn a_failing_sharing_scenario_names_what_never_held_and_stops_every_player() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = script(
        &dir,
        "failing_share.lua",
        r#"-- fails on purpose, with two peered players
local alice, bob = step("players", function() return vault.players{ "alice", "bob" } end)
log("alice=" .. alice.mountpoint)
log("bob=" .. bob.mountpoint)
step("wait for what never comes", function()
  fs.write(alice:path("a.txt"), "hello")
  alice:share("a.txt", { with = bob, mode = "revocable" })
  local p = bob:peer_path(alice, "a.txt")
  wait_until(function() return fs.read(p) == "hellp" end, 2, "bob reads hellp")
end)
"#,
    );
    let (code, output) = run_with(&file, &[]);
    println!("{output}");
    assert_eq!(code, Some(1), "exit code");
    let want = format!(
        "scenario {} failed at step \"wait for what never comes\": failing_share.lua:9: bob reads \
         hellp: did not hold within 2s (it last returned false)",
        file.display()
    );
    assert!(output.contains(&want), "expected {want:?} in the output");
    assert!(output.contains("last lines of bob's daemon log"), "bob's log in the report");
    assert!(scenario_mounts().is_empty(), "left mounted: {:?}", scenario_mounts());
    for player in ["alice", "bob"] {
        let mnt = logged(&output, player);
        assert!(processes_mentioning(&mnt).is_empty(), "{player}'s daemon left running");
    }
}

#[test]
fn every_lua_scenario_passes() {
    let _serial = SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let files = scenario_files();
    assert!(files.len() >= 7, "expected the scenarios in lua-scenarios/, found {files:?}");
    let mut summary = Vec::new();
    let mut failed = Vec::new();
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let started = Instant::now();
        let (ok, output) = run(file);
        let secs = started.elapsed().as_secs_f64();
        println!("{output}");
        let left = scenario_mounts();
        if !left.is_empty() {
            failed.push(format!("{name} left mounts behind: {left:?}"));
        }
        if !ok {
            failed.push(name.clone());
        }
        summary.push(format!("  {name:<32} {:<6} {secs:>6.1}s", if ok { "ok" } else { "FAILED" }));
    }
    println!("lua scenarios:\n{}", summary.join("\n"));
    assert!(failed.is_empty(), "failed: {}", failed.join(", "));
}
