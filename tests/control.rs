//! The control socket on real mounts: `status` reaches the daemon however the vault is named (the
//! mount point, a path deep inside it, `-m`, `--data-dir`, `--player`); the socket has mode 0600
//! and refuses other users; conflicting names are one-line errors; `unmount` goes through the
//! socket and leaves no socket behind; a killed daemon's socket is stale and the next mount
//! replaces it; a dead mount is detached; a live mount without its socket is still unmounted.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use indras_e2e::{Dirs, Mount, binary, is_mounted};

/// What a command printed, and whether it succeeded.
#[derive(Debug)]
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// A failure with one line to say, containing `want`.
    fn refused(&self, want: &str) {
        assert!(!self.ok, "succeeded: {self:?}");
        let text = self.stderr.trim_end();
        assert!(text.lines().count() == 1 && text.contains(want), "want {want:?}: {self:?}");
    }

    /// A success; its stdout.
    fn out(&self) -> &str {
        assert!(self.ok, "failed: {self:?}");
        &self.stdout
    }
}

fn run_in(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("run indras-fuse");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `indras-fuse ARGS` with `XDG_DATA_HOME` set, so that `--player` names a vault under it.
fn run(xdg: &Path, args: &[&str]) -> Run {
    run_in(Command::new(binary()).args(args).env("XDG_DATA_HOME", xdg))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A data dir where `--player alice` finds it (`<tmp>/xdg/indras/alice`), and a mount point.
fn player_dirs() -> (Dirs, PathBuf) {
    let tmp = tempfile::Builder::new().prefix("indras-e2e").tempdir().expect("tempdir");
    let xdg = tmp.path().join("xdg");
    let dirs = Dirs { data: xdg.join("indras/alice"), mnt: tmp.path().join("mnt"), tmp };
    std::fs::create_dir_all(&dirs.mnt).expect("mkdir mnt");
    (dirs, xdg)
}

/// Whether `/proc/self/mountinfo` lists a mount at `mnt`, dead or alive (a dead FUSE mount
/// cannot be resolved, so `is_mounted` does not see it).
fn listed(mnt: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines().any(|l| l.split(' ').nth(4) == Some(s(mnt)))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

#[test]
fn status_reaches_the_daemon_however_the_vault_is_named_and_unmount_removes_the_socket() {
    let (dirs, xdg) = player_dirs();
    let m = Mount::start(&dirs);
    let (mnt, data) = (s(&m.mnt).to_owned(), s(&m.data).to_owned());
    let deep = m.vault().join("notes/deep/er");
    std::fs::create_dir_all(&deep).expect("mkdir");
    std::fs::write(deep.join("ideas.md"), b"# ideas").expect("write");

    let meta = std::fs::symlink_metadata(m.control_socket()).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);

    let absent = deep.join("absent.txt");
    let ways: [&[&str]; 9] = [
        &["status", &mnt],
        &["status", s(&deep)],
        &["status", s(&absent)],
        &["status", "-m", &mnt],
        &["status", "--mountpoint", s(&deep)],
        &["status", "--data-dir", &data],
        &["status", "--player", "alice"],
        &["status", &mnt, "--player", "alice"],
        &["status", &mnt, "--data-dir", &data],
    ];
    for args in ways {
        let r = run(&xdg, args);
        let text = r.out();
        assert_eq!(first_line(text), format!("Mounted: {mnt}"), "{args:?}: {text}");
        for want in ["Player: alice (", &format!("Data dir: {data}\n"), "Open files: "] {
            assert!(text.contains(want), "{args:?}: missing {want:?} in:\n{text}");
        }
    }
    // The daemon's own status: the same model `.indra/status.json` shows.
    let json: serde_json::Value =
        serde_json::from_str(run(&xdg, &["status", "--data-dir", &data, "--json"]).out())
            .expect("json");
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.mnt.join(".indra/status.json")).expect("read"))
            .expect("status.json");
    assert_eq!(json["mounted"], true);
    assert_eq!(json["pid"], m.pid());
    assert_eq!((&json["mountpoint"], &json["data_dir"]), (&file["mountpoint"], &file["data_dir"]));
    assert_eq!(json["player_id"], file["player_id"]);

    // Conflicting or missing names, and the store commands a mount holds off: one line each.
    run(&xdg, &["status", &mnt, "-m", &mnt]).refused("conflicting");
    run(&xdg, &["status", &mnt, "--data-dir", s(dirs.tmp.path())]).refused("conflicting");
    run(&xdg, &["status", s(&deep), "--player", "bob"]).refused("conflicting");
    run(&xdg, &["status", "--data-dir", &data, "--player", "bob"]).refused("conflicting");
    run(&xdg, &["status"]).refused("which vault?");
    run(&xdg, &["status", s(dirs.tmp.path())]).refused("is not mounted");
    run(&xdg, &["gc", &mnt]).refused("in use by a mount");
    run(&xdg, &["fsck", "-m", s(&deep)]).refused("in use by a mount");
    run(&xdg, &["gc", "--player", "alice"]).refused("in use by a mount");

    // Unmount through the socket, named by a path inside the mount.
    let r = run(&xdg, &["unmount", s(&deep)]);
    assert_eq!(r.out(), format!("unmounted {mnt}\n"));
    let socket = m.control_socket();
    m.wait_stopped();
    assert!(std::fs::symlink_metadata(&socket).is_err(), "the socket outlived the mount");

    // Nothing answers now: status reads the store; what needs the daemon says so.
    for args in [&["status", "--data-dir", &data][..], &["status", "--player", "alice"]] {
        assert_eq!(first_line(run(&xdg, args).out()), "Mounted: no (not mounted)", "{args:?}");
    }
    run(&xdg, &["status", &mnt]).refused("is not mounted");
    run(&xdg, &["unmount", &mnt]).refused("is not mounted");
    run(&xdg, &["unmount", "--data-dir", &data]).refused("is not mounted");
    run(&xdg, &["unmount", "--player", "alice"]).refused("is not mounted");
    assert!(run(&xdg, &["fsck", "--player", "alice"]).out().contains(": 0 problem(s)"));
    run(&xdg, &["gc", "--data-dir", &data]).out();
}

#[test]
fn only_the_mount_owner_or_root_reach_the_daemon() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: running a command as another user needs root");
        return;
    }
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    // A copy of the program any user may run, on a path any user may walk to the socket.
    // Copied by `cp`: a copy written by this process could be held open by a child another
    // test forks meanwhile, and then not run ("text file busy").
    let bin = dirs.tmp.path().join("indras-fuse");
    let cp = Command::new("cp").arg(binary()).arg(&bin).status().expect("cp");
    assert!(cp.success(), "copying the binary: {cp}");
    for p in [dirs.tmp.path(), &dirs.data, &bin] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let data = s(&m.data).to_owned();
    let as_nobody = |args: &[&str]| {
        run_in(Command::new(&bin).args(args).current_dir("/").uid(65534).gid(65534))
    };
    // The socket's mode keeps other users out.
    as_nobody(&["status", "--data-dir", &data]).refused("permission denied");
    // Opened up, the daemon still refuses them, by their credentials.
    let socket = m.control_socket();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    as_nobody(&["status", "--data-dir", &data]).refused("uid 65534 may not use this mount");
    as_nobody(&["unmount", "--data-dir", &data]).refused("uid 65534 may not use this mount");
    assert!(is_mounted(&m.mnt));
    // Root is served.
    let text = run_in(Command::new(&bin).args(["status", "--data-dir", &data])).out().to_owned();
    assert_eq!(first_line(&text), format!("Mounted: {}", m.mnt.display()));
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    m.stop();
}

#[test]
fn a_killed_daemon_leaves_a_dead_mount_and_a_stale_socket_that_the_next_mount_replaces() {
    let dirs = Dirs::new();
    let xdg = dirs.tmp.path().join("xdg");
    let (mnt, data) = (s(&dirs.mnt).to_owned(), s(&dirs.data).to_owned());
    let mut m = Mount::start(&dirs);
    let socket = m.control_socket();
    m.kill9_leaving_mount();
    assert!(listed(&dirs.mnt), "the dead mount stays");
    run(&xdg, &["status", &mnt]).refused("its daemon is not running");
    run(&xdg, &["gc", &mnt]).refused("its daemon is not running");
    // The socket is left, and nothing answers on it: the store is read directly.
    assert!(std::fs::symlink_metadata(&socket).expect("stale socket").file_type().is_socket());
    let text = run(&xdg, &["status", "--data-dir", &data]).out().to_owned();
    assert_eq!(first_line(&text), "Mounted: no (not mounted)");
    let r = run(&xdg, &["unmount", &mnt]);
    assert_eq!(r.out(), format!("unmounted {mnt} (its daemon was not running)\n"));
    assert!(!listed(&dirs.mnt));
    drop(m);

    // The next mount replaces the stale socket (its guard waits until the daemon answers).
    let m = Mount::start(&dirs);
    let text = run(&xdg, &["status", "--data-dir", &data]).out().to_owned();
    assert_eq!(first_line(&text), format!("Mounted: {mnt}"));
    // A second daemon for the same data dir is refused and leaves the first one's socket be.
    let other = dirs.tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    let second = run(&xdg, &["mount", s(&other), "--player", "alice", "--data-dir", &data]);
    if second.ok {
        run(&xdg, &["unmount", s(&other)]);
    }
    second.refused("already mounted");
    let text = run(&xdg, &["status", "--data-dir", &data]).out().to_owned();
    assert_eq!(first_line(&text), format!("Mounted: {mnt}"));
    m.stop();
    assert!(std::fs::symlink_metadata(&socket).is_err(), "the socket outlived the mount");
}

#[test]
fn a_live_mount_without_its_socket_says_so_and_still_unmounts() {
    let dirs = Dirs::new();
    let xdg = dirs.tmp.path().join("xdg");
    let (mnt, data) = (s(&dirs.mnt).to_owned(), s(&dirs.data).to_owned());
    let m = Mount::start(&dirs);
    // As with a daemon of a build before the socket, or a socket someone removed.
    std::fs::rename(m.control_socket(), dirs.data.join("moved.sock")).expect("rename");
    run(&xdg, &["status", &mnt]).refused("its daemon does not answer on");
    run(&xdg, &["status", "--data-dir", &data]).refused("in use by a mount whose daemon does not");
    run(&xdg, &["unmount", "--data-dir", &data]).refused("by its mount point");
    let r = run(&xdg, &["unmount", &mnt]);
    assert_eq!(r.out(), format!("unmounted {mnt}\n"));
    m.wait_stopped();
}
