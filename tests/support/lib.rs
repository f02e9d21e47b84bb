//! Helpers for end-to-end tests: a `Mount` guard that runs the real `indras-fuse` binary in
//! the foreground and always unmounts in `Drop`, even when a test fails. A mount counts as up
//! once its daemon answers on its control socket too, as commands need.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The release (or debug) `indras-fuse` binary next to this test executable.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("indras-fuse");
    assert!(bin.exists(), "{} is missing: build the workspace first", bin.display());
    bin
}

/// Daemon flags for a network on 127.0.0.1 with no relay.
pub const LOOPBACK: &[&str] = &["--listen", "127.0.0.1:0", "--relay", "none"];

/// How long `wait_until` waits.
pub const LONG: Duration = Duration::from_secs(30);

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Waits (bounded by `LONG`) until `f` holds; panics with `m`'s log if it never does.
pub fn wait_until(m: &Mount, what: &str, f: impl FnMut() -> bool) -> Duration {
    wait_until_for(m, what, LONG, f)
}

/// Waits, at most `limit`, until `f` holds; panics with `m`'s log if it never does.
pub fn wait_until_for(
    m: &Mount,
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "never: {what}\n{}", m.log_text());
        std::thread::sleep(Duration::from_millis(25));
    }
    start.elapsed()
}

/// Whether `m` lists its peer `name` as connected in `.indra/peers.json`.
pub fn connected(m: &Mount, name: &str) -> bool {
    let text = std::fs::read_to_string(m.mnt.join(".indra/peers.json")).unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|p| p["name"] == name && p["state"] == "connected")
}

/// alice and bob on loopback, peered and connected.
pub fn pair(da: &Dirs, db: &Dirs) -> (Mount, Mount) {
    let alice = Mount::start_as(da, "alice", LOOPBACK, &[]);
    let bob = Mount::start_as(db, "bob", LOOPBACK, &[]);
    introduce(&alice, "alice", &bob, "bob");
    (alice, bob)
}

/// Runs the CLI; returns stdout, or panics with stderr.
pub fn cli(args: &[&str]) -> String {
    let out = Command::new(binary()).args(args).output().expect("run indras-fuse");
    assert!(
        out.status.success(),
        "indras-fuse {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Runs the CLI expecting failure; returns its one-line error.
pub fn cli_err(args: &[&str]) -> String {
    let out = Command::new(binary()).args(args).output().expect("run indras-fuse");
    assert!(!out.status.success(), "indras-fuse {} succeeded", args.join(" "));
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    err
}

/// Whether `path` is a mount point.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else { return false };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// A data dir and a mount point in one temp dir.
#[derive(Debug)]
pub struct Dirs {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub mnt: PathBuf,
}

impl Dirs {
    pub fn new() -> Dirs {
        let tmp = tempfile::Builder::new().prefix("indras-e2e").tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir_all(&mnt).expect("mkdir mnt");
        Dirs { tmp, data, mnt }
    }
}

impl Default for Dirs {
    fn default() -> Self {
        Dirs::new()
    }
}

/// A running `indras-fuse mount --foreground`. Dropping it stops the daemon and unmounts.
#[derive(Debug)]
pub struct Mount {
    pub mnt: PathBuf,
    pub data: PathBuf,
    child: Option<Child>,
    log: PathBuf,
}

impl Mount {
    pub fn start(dirs: &Dirs) -> Mount {
        Mount::start_with(dirs, &[])
    }

    /// alice's mount with `extra` flags, its network on loopback with no relay.
    pub fn start_with(dirs: &Dirs, extra: &[&str]) -> Mount {
        let mut args = vec!["--listen", "127.0.0.1:0", "--relay", "none"];
        args.extend_from_slice(extra);
        Mount::start_as(dirs, "alice", &args, &[])
    }

    /// The mount of `player`, started through `wrapper` (a command and its arguments that
    /// run the daemon, such as `nsenter --net=...`; empty for none).
    pub fn start_as(dirs: &Dirs, player: &str, extra: &[&str], wrapper: &[&str]) -> Mount {
        let log = dirs.tmp.path().join(format!("daemon-{}.log", std::process::id()));
        let logf = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let child = cmd
            .arg("mount")
            .arg(&dirs.mnt)
            .args(["--player", player, "--foreground", "--log-level", "info"])
            .arg("--data-dir")
            .arg(&dirs.data)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("spawn indras-fuse");
        let mut m =
            Mount { mnt: dirs.mnt.clone(), data: dirs.data.clone(), child: Some(child), log };
        let start = Instant::now();
        while !is_mounted(&m.mnt)
            || !m.vault().is_dir()
            || std::os::unix::net::UnixStream::connect(m.control_socket()).is_err()
        {
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("indras-fuse exited with {status} before mounting:\n{}", m.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "mount did not come up:\n{}",
                m.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    pub fn vault(&self) -> PathBuf {
        self.mnt.join("vault")
    }

    /// The daemon's control socket, in the data dir.
    pub fn control_socket(&self) -> PathBuf {
        self.data.join("control.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn signal(&self, sig: rustix::process::Signal) {
        if let Some(c) = &self.child {
            signal(c, sig);
        }
    }

    /// SIGTERM: commit everything and unmount; asserts a clean exit.
    pub fn stop(mut self) {
        self.signal(rustix::process::Signal::TERM);
        let mut child = self.child.take().expect("running");
        let status = wait_for(&mut child, Duration::from_secs(60)).expect("daemon did not stop");
        assert!(status.success(), "daemon exited with {status}:\n{}", self.log_text());
        assert!(!is_mounted(&self.mnt), "still mounted after the daemon exited");
    }

    /// Waits for a daemon told to stop some other way (`indras-fuse unmount`); asserts a clean
    /// exit.
    pub fn wait_stopped(mut self) {
        let mut child = self.child.take().expect("running");
        let status = wait_for(&mut child, Duration::from_secs(60)).expect("daemon did not stop");
        assert!(status.success(), "daemon exited with {status}:\n{}", self.log_text());
        assert!(!is_mounted(&self.mnt), "still mounted after the daemon exited");
    }

    /// SIGKILL the daemon and wait until it is gone, leaving its dead mount in place (`Drop`
    /// detaches it).
    pub fn kill9_leaving_mount(&mut self) {
        self.signal(rustix::process::Signal::KILL);
        if let Some(mut child) = self.child.take() {
            wait_for(&mut child, Duration::from_secs(10)).expect("daemon did not die");
        }
    }

    /// SIGKILL the daemon, then detach the dead mount.
    pub fn kill9(mut self) {
        self.signal(rustix::process::Signal::KILL);
        if let Some(mut child) = self.child.take() {
            let _ = wait_for(&mut child, Duration::from_secs(10));
        }
        detach(&self.mnt);
    }
}

fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Detaches whatever is mounted at `mnt` (lazily, as `umount -l`), until nothing is.
pub fn detach(mnt: &Path) {
    for _ in 0..50 {
        if !is_mounted(mnt) {
            return;
        }
        let _ = rustix::mount::unmount(mnt, rustix::mount::UnmountFlags::DETACH);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, rustix::process::Signal::TERM);
            if wait_for(&mut child, Duration::from_secs(20)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        detach(&self.mnt);
    }
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id().cast_signed()) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Waits until the daemon has processed every release: `close()` returns before the kernel's
/// RELEASE reaches the daemon.
pub fn settle(mnt: &Path) {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(mnt.join(".indra/status.json")).expect("status.json");
        let status: serde_json::Value = serde_json::from_str(&text).expect("status.json parses");
        if status["open_files"] == 0 {
            return;
        }
        assert!(start.elapsed().as_secs() < 20, "files stay open: {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `bash -c script` in `cwd`; panics with its output unless it succeeds.
pub fn sh(cwd: &Path, script: &str) -> String {
    let out = sh_output(cwd, script);
    assert!(
        out.status.success(),
        "command failed ({}): {script}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh_output(cwd: &Path, script: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(cwd)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", cwd)
        .output()
        .expect("bash")
}

/// Whether a command is on PATH. In CI (`CI` set) every tool the tests use must be.
pub fn have(tool: &str) -> bool {
    let found = Command::new("bash")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found || std::env::var_os("CI").is_none(),
        "{tool} must be installed in CI (scripts/test.sh installs it)"
    );
    found
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

/// A git repository of `files` small files spread over `dirs` folders, committed, outside
/// the mount (the origin to clone from).
pub fn git_origin(d: &Dirs, files: u32, dirs: u32) -> PathBuf {
    let origin = d.tmp.path().join("origin");
    std::fs::create_dir_all(&origin).expect("mkdir origin");
    sh(
        &origin,
        &format!(
            "git init -q -b main . && for i in $(seq 1 {files}); do mkdir -p d$((i % {dirs})); \
             echo \"line $i\" > d$((i % {dirs}))/f$i.txt; done && git add -A && git commit -qm init"
        ),
    );
    origin
}

/// Two network namespaces joined by a veth pair, with addresses that exist only inside them
/// (`10.77.N.1` in the first, `10.77.N.2` in the second). Deleted on drop, with everything in
/// them. Needs root and `ip` (iproute2).
#[derive(Debug)]
pub struct NetnsPair {
    pub names: [String; 2],
    pub addrs: [String; 2],
    veth: [String; 2],
}

impl NetnsPair {
    pub fn new() -> NetnsPair {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let subnet = 1 + (std::process::id() % 200 + n) % 250;
        let pair = NetnsPair {
            names: [format!("indras-a{tag}"), format!("indras-b{tag}")],
            addrs: [format!("10.77.{subnet}.1"), format!("10.77.{subnet}.2")],
            veth: [format!("iva{tag}"), format!("ivb{tag}")],
        };
        for name in &pair.names {
            ip(&["netns", "add", name]);
        }
        ip(&["link", "add", &pair.veth[0], "type", "veth", "peer", "name", &pair.veth[1]]);
        for i in 0..2 {
            let (ns, dev) = (&pair.names[i], &pair.veth[i]);
            ip(&["link", "set", dev, "netns", ns]);
            ip(&["-n", ns, "addr", "add", &format!("{}/24", pair.addrs[i]), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// The command prefix that runs a program in namespace `i` (the mount stays visible
    /// outside: `nsenter` makes no mount namespace).
    pub fn wrapper(&self, i: usize) -> [String; 3] {
        ["nsenter".to_owned(), format!("--net=/run/netns/{}", self.names[i]), "--".to_owned()]
    }

    /// Takes the link between the two down, or brings it back up.
    pub fn set_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        for i in 0..2 {
            ip(&["-n", &self.names[i], "link", "set", &self.veth[i], state]);
        }
    }
}

impl Default for NetnsPair {
    fn default() -> Self {
        NetnsPair::new()
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
        // Left in this namespace only if moving it failed; deleting one end deletes both.
        let _ = Command::new("ip")
            .args(["link", "delete", &self.veth[0]])
            .stderr(Stdio::null())
            .status();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ----- peered mounts -----

/// Peers `b` with `a`, which `b` calls `a_name` and which calls `b` `b_name`; waits until
/// both see the other connected.
pub fn introduce(a: &Mount, a_name: &str, b: &Mount, b_name: &str) {
    let ticket = cli(&["invite", s(&a.mnt)]).trim().to_owned();
    cli(&["peer", "add", a_name, &ticket, s(&b.mnt)]);
    wait_until(a, &format!("{b_name} connected"), || connected(a, b_name));
    wait_until(b, &format!("{a_name} connected"), || connected(b, a_name));
}

/// The value of extended attribute `name` of `p`, if it has one.
pub fn xattr(p: &Path, name: &str) -> Option<String> {
    let out = Command::new("getfattr").args(["--only-values", "-n", name]).arg(p).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A tmpfs of `size` mounted at `path` for the guard's life (needs root): a small disk to fill.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mkdir");
        let options = std::ffi::CString::new(format!("size={size},mode=0700")).expect("options");
        rustix::mount::mount(
            "indras-e2e-tmpfs",
            path,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            options.as_c_str(),
        )
        .expect("mount tmpfs (needs root)");
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        detach(&self.0);
    }
}

/// Bytes of disk the files under `dir` occupy, as `du` counts them (holes punched in packs
/// are not counted).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("list").flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}
