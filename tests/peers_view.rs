//! `peers/` on real mounts: what a peer shares with us, as the store keeps it (mirror entries),
//! read with real tools. The first test stores a fake peer's shares before the daemon mounts
//! (the daemon holds the store while it runs); the second mounts in this process, so it can
//! change the store and report the change as the daemon will (`Invalidator::mirror_changed`)
//! while the mount stays up.

use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indras_artifacts::{
    AccessMode, MirrorChanges, MirrorEntry, NodeId, Options, PlayerId, SharedItem, SharedKind,
    Timestamp, Vault,
};
use indras_e2e::{Dirs, Mount, have, sh, sh_output};
use indras_fuse::network::{NetworkSnapshot, NetworkState};
use indras_fuse::{Invalidator, MountConfig, MountSession};

const DAY_MS: i64 = 86_400_000;

fn shared(remote: u64, label: &str, kind: SharedKind, bytes: Option<&[u8]>) -> SharedItem {
    SharedItem {
        remote,
        label: label.as_bytes().to_vec(),
        kind,
        size: bytes.map_or(0, |b| b.len() as u64),
        mtime: Timestamp::from_millis(1_700_000_000_000),
        content: bytes.map(|b| *blake3::hash(b).as_bytes()),
        grant: None,
    }
}

fn root(mut item: SharedItem, grant: AccessMode) -> SharedItem {
    item.grant = Some(grant);
    item
}

fn timed(from_now_ms: i64) -> AccessMode {
    AccessMode::Timed {
        expires_at: Timestamp::from_millis(Timestamp::now().as_millis() + from_now_ms),
    }
}

fn entry(v: &Vault, parent: NodeId, label: &str) -> MirrorEntry {
    v.mirror_lookup(parent, label.as_bytes()).unwrap().unwrap_or_else(|| panic!("{label}"))
}

/// Keeps `bytes` as the content of file entry `id`, as the fetcher does once they arrive.
fn arrive(v: &Vault, id: NodeId, bytes: &[u8]) {
    let staged = v.stage(bytes).unwrap();
    assert!(v.mirror_set_content(id, &staged, Timestamp::now()).unwrap());
}

#[test]
fn peers_view_through_real_tools() {
    if !have("getfattr") || !have("python3") {
        return;
    }
    let dirs = Dirs::new();
    let hello = b"hello from bob\n";
    let inner = b"inside the shared folder\n";
    {
        let v = Vault::open(&dirs.data, "alice", &Options::default()).unwrap();
        let bob = v.mirror_ensure_peer(PlayerId([7; 32]), "bob").unwrap();
        let roots = [
            root(shared(1, "hello.txt", SharedKind::File, Some(hello)), AccessMode::Revocable),
            root(shared(2, "shared", SharedKind::Dir, None), timed(3650 * DAY_MS)),
            root(shared(3, "expired", SharedKind::Dir, None), timed(-DAY_MS)),
            root(shared(4, "pending.bin", SharedKind::File, Some(b"never")), AccessMode::Permanent),
        ];
        v.mirror_apply(bob.id, &roots, Timestamp::now()).unwrap();
        let folder = entry(&v, bob.id, "shared").id;
        let kids = [
            shared(5, "inner.txt", SharedKind::File, Some(inner)),
            shared(6, "sub", SharedKind::Dir, None),
        ];
        v.mirror_apply(folder, &kids, Timestamp::now()).unwrap();
        arrive(&v, entry(&v, bob.id, "hello.txt").id, hello);
        arrive(&v, entry(&v, folder, "inner.txt").id, inner);
    }
    let m = Mount::start(&dirs);
    let mnt = &m.mnt;
    std::fs::write(m.vault().join("mine"), b"mine").unwrap();

    assert_eq!(sh(mnt, "ls peers"), "bob\n");
    assert_eq!(sh(mnt, "ls peers/bob"), "hello.txt\npending.bin\nshared\n", "expired is gone");
    assert_eq!(sh(mnt, "ls -a peers/bob/shared"), ".\n..\ninner.txt\nsub\n");
    assert_eq!(sh(mnt, "cat peers/bob/hello.txt").as_bytes(), hello);
    assert_eq!(sh(mnt, "cat peers/bob/shared/inner.txt").as_bytes(), inner);
    assert_eq!(sh(mnt, "tail -c 7 peers/bob/hello.txt"), "om bob\n");
    assert!(!sh_output(mnt, "stat peers/bob/expired").status.success());
    let modes = sh(
        mnt,
        "stat -c '%a %h %s %U %n' peers peers/bob peers/bob/hello.txt peers/bob/pending.bin \
         peers/bob/shared peers/bob/shared/inner.txt peers/bob/shared/sub",
    );
    let owner = sh(mnt, "stat -c %U vault");
    let owner = owner.trim();
    assert_eq!(
        modes,
        format!(
            "555 3 0 {owner} peers\n555 3 0 {owner} peers/bob\n444 1 15 {owner} peers/bob/hello.txt\n\
             444 1 5 {owner} peers/bob/pending.bin\n555 3 0 {owner} peers/bob/shared\n\
             444 1 25 {owner} peers/bob/shared/inner.txt\n555 2 0 {owner} peers/bob/shared/sub\n"
        )
    );

    // xattrs: read by name, none listed.
    let get = |name: &str, path: &str| sh(mnt, &format!("getfattr --only-values -n {name} {path}"));
    let bob_hex = "07".repeat(32);
    for path in ["peers/bob", "peers/bob/hello.txt", "peers/bob/shared/sub"] {
        assert_eq!(get("user.indra.steward", path), bob_hex, "{path}");
    }
    assert_eq!(get("user.indra.access_mode", "peers/bob/hello.txt"), "revocable");
    assert_eq!(get("user.indra.access_mode", "peers/bob/pending.bin"), "permanent");
    assert_eq!(get("user.indra.access_mode", "peers/bob/shared/inner.txt"), "timed");
    let expires = get("user.indra.expires_at", "peers/bob/shared");
    assert!(expires.len() == 24 && expires.ends_with('Z'), "{expires}");
    assert_eq!(get("user.indra.expires_at", "peers/bob/shared/sub"), expires);
    let id = get("user.indra.id", "peers/bob/shared/inner.txt");
    assert_eq!(id, blake3::hash(inner).to_hex().as_str());
    if have("b3sum") {
        assert_eq!(sh(mnt, "b3sum --no-names peers/bob/shared/inner.txt").trim(), id);
    }
    for (name, path) in [
        ("user.indra.expires_at", "peers/bob/hello.txt"),
        ("user.indra.id", "peers/bob/shared"),
        ("user.indra.access_mode", "peers/bob"),
        ("user.other", "peers/bob/hello.txt"),
    ] {
        let out = sh_output(mnt, &format!("getfattr -n {name} {path}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("No such attribute"), "{name} {path}: {err}");
    }
    assert_eq!(sh(mnt, "getfattr -d peers/bob/hello.txt peers/bob/shared"), "");

    // Content that never arrives (this daemon's network fetches nothing): EIO, logged once
    // per failed read with the file's path.
    let out = sh(
        mnt,
        "python3 -c \"
import errno
try:
    open('peers/bob/pending.bin', 'rb', buffering=0).read()
    print('read')
except OSError as e:
    print(errno.errorcode[e.errno])
\"",
    );
    assert_eq!(out, "EIO\n");
    assert!(m.log_text().contains("peers/bob/pending.bin"), "{}", m.log_text());

    // Every change is EROFS: python's os calls, then the shell's tools.
    let out = sh(
        mnt,
        r"python3 - <<'EOF'
import errno, os, stat
b = 'peers/bob'
f = b + '/hello.txt'
ops = {
    'open for writing': lambda: open(f, 'r+b'),
    'open to append': lambda: open(f, 'ab'),
    'open to truncate': lambda: os.open(f, os.O_RDONLY | os.O_TRUNC),
    'create': lambda: open(b + '/new.txt', 'wb'),
    'create in peers': lambda: open('peers/new', 'wb'),
    'create in a shared folder': lambda: open(b + '/shared/new', 'wb'),
    'mknod': lambda: os.mknod(b + '/fifo', 0o644 | stat.S_IFIFO),
    'mkdir': lambda: os.mkdir(b + '/d'),
    'mkdir in peers': lambda: os.mkdir('peers/carol'),
    'unlink': lambda: os.unlink(f),
    'unlink in a shared folder': lambda: os.unlink(b + '/shared/inner.txt'),
    'rmdir': lambda: os.rmdir(b + '/shared/sub'),
    'rmdir a peer': lambda: os.rmdir(b),
    'rename within': lambda: os.rename(f, b + '/renamed'),
    'rename out': lambda: os.rename(f, 'vault/out'),
    'rename in': lambda: os.rename('vault/mine', b + '/mine'),
    'rename a folder out': lambda: os.rename(b + '/shared', 'vault/shared'),
    'link out': lambda: os.link(f, 'vault/hard'),
    'link within': lambda: os.link(f, b + '/hard'),
    'link in': lambda: os.link('vault/mine', b + '/hard'),
    'symlink': lambda: os.symlink('target', b + '/sym'),
    'chmod': lambda: os.chmod(f, 0o644),
    'chmod a folder': lambda: os.chmod(b, 0o755),
    'chmod peers': lambda: os.chmod('peers', 0o755),
    'chown': lambda: os.chown(f, 1, 1),
    'truncate': lambda: os.truncate(f, 0),
    'utimes': lambda: os.utime(f, (0, 0)),
    'utimes now': lambda: os.utime(b + '/shared'),
    'setxattr': lambda: os.setxattr(f, 'user.x', b'1'),
    'setxattr on a folder': lambda: os.setxattr(b, 'user.x', b'1'),
    'removexattr': lambda: os.removexattr(f, 'user.indra.id'),
}
for name, op in ops.items():
    try:
        op()
        print(name, 'succeeded')
    except OSError as e:
        if e.errno != errno.EROFS:
            print(name, errno.errorcode.get(e.errno, e.errno))
EOF",
    );
    assert_eq!(out, "", "operations that did not give EROFS");
    for cmd in [
        "echo x > peers/bob/hello.txt",
        "echo x >> peers/bob/hello.txt",
        "echo x > peers/bob/new.txt",
        "touch peers/bob/hello.txt",
        "touch peers/bob/new.txt",
        "rm -f peers/bob/hello.txt",
        "rm -rf peers/bob/shared",
        "mv peers/bob/hello.txt peers/bob/moved.txt",
        "mv peers/bob/hello.txt vault/",
        "mv vault/mine peers/bob/",
        "mkdir peers/bob/new",
        "chmod 600 peers/bob/hello.txt",
        "truncate -s 0 peers/bob/hello.txt",
        "setfattr -n user.x -v 1 peers/bob/hello.txt",
        "ln peers/bob/hello.txt vault/hard",
        "ln -s x peers/bob/sym",
    ] {
        let out = sh_output(mnt, cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("Read-only file system"), "{cmd}: {err}");
    }
    assert_eq!(sh(mnt, "ls peers/bob"), "hello.txt\npending.bin\nshared\n");
    assert_eq!(sh(mnt, "cat peers/bob/hello.txt").as_bytes(), hello);
    assert_eq!(sh(mnt, "ls vault"), "mine\n");
    m.stop();
}

/// The network as the daemon will provide it: a wait for content brings what `pending`
/// holds for the entry and reports its arrival, as the fetcher does, while the read that
/// waits is still being answered.
#[derive(Debug, Default)]
struct Fetcher {
    vault: OnceLock<Arc<Vault>>,
    inval: OnceLock<Invalidator>,
    pending: Mutex<Vec<(NodeId, Vec<u8>)>>,
}

impl NetworkState for Fetcher {
    fn snapshot(&self) -> NetworkSnapshot {
        NetworkSnapshot { off: Some("a test's fetcher".into()), ..NetworkSnapshot::default() }
    }

    fn wait_ready(&self, id: NodeId, _limit: Duration) -> bool {
        let bytes =
            self.pending.lock().unwrap().iter().find(|(e, _)| *e == id).map(|p| p.1.clone());
        let (Some(bytes), Some(v)) = (bytes, self.vault.get()) else { return false };
        let staged = v.stage(&bytes).unwrap();
        if !v.mirror_set_content(id, &staged, Timestamp::now()).unwrap() {
            return false;
        }
        let e = v.mirror_entry(id).unwrap().unwrap();
        let arrived =
            MirrorChanges { touched: vec![(id, e.parent, e.label)], ..Default::default() };
        self.inval.get().unwrap().mirror_changed(&arrived);
        true
    }
}

/// Waits (at most 30 s) until `check` holds; the invalidations are sent by the mount's own
/// thread, a moment after `mirror_changed` returns.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(30), "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stat_size(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

/// A long-lived mount: the kernel caches `peers/` (60 s TTLs, pages kept across opens), and
/// each change reported through `Invalidator::mirror_changed` shows at once to `ls`, `stat`,
/// `cat` and to a reader that keeps its file open.
#[test]
fn changes_show_at_once_on_a_live_mount() {
    let dirs = Dirs::new();
    let cfg = MountConfig::new(&dirs.mnt, &dirs.data, "alice");
    let fetcher = Arc::new(Fetcher::default());
    let net = fetcher.clone();
    let session = MountSession::start_with(&cfg, &|vault, invalidator| {
        let _ = net.vault.set(vault.clone());
        let _ = net.inval.set(invalidator);
        net.clone() as Arc<dyn NetworkState>
    })
    .expect("mount");
    let inval = fetcher.inval.get().expect("the invalidator");
    let v = session.fs().vault().clone();
    let mnt = &dirs.mnt;
    let changed = |c: &MirrorChanges| inval.mirror_changed(c);

    // bob starts sharing one file.
    let bob = v.mirror_ensure_peer(PlayerId([7; 32]), "bob").unwrap();
    let v1 = b"version one\n";
    let news = |bytes: &[u8]| {
        root(shared(1, "news.txt", SharedKind::File, Some(bytes)), AccessMode::Revocable)
    };
    let mut c = v.mirror_apply(bob.id, &[news(v1)], Timestamp::now()).unwrap();
    let id = entry(&v, bob.id, "news.txt").id;
    arrive(&v, id, v1);
    c.touched.push((id, bob.id, b"news.txt".to_vec()));
    changed(&c);
    let path = mnt.join("peers/bob/news.txt");
    assert_eq!(sh(mnt, "ls peers/bob"), "news.txt\n");
    assert_eq!(std::fs::read(&path).unwrap(), v1);
    assert_eq!(stat_size(&path), Some(v1.len() as u64));
    let open = std::fs::File::open(&path).unwrap();
    let mut buf = [0u8; 64];
    let n = open.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], v1);

    // The same length, new bytes: only the invalidation drops the kept pages.
    let v2 = b"version two\n";
    let mut c = v.mirror_apply(bob.id, &[news(v2)], Timestamp::now()).unwrap();
    arrive(&v, id, v2);
    c.touched.push((id, bob.id, b"news.txt".to_vec()));
    changed(&c);
    eventually("the open reader sees the new bytes", || {
        let n = open.read_at(&mut buf, 0).unwrap();
        &buf[..n] == v2
    });
    assert_eq!(std::fs::read(&path).unwrap(), v2);
    assert_eq!(sh(mnt, "cat peers/bob/news.txt").as_bytes(), v2);

    // A longer version that arrives only when a reader waits for it: `stat` has the new size,
    // and the reader that kept the file open gets the content through
    // `NetworkState::wait_ready`. Its read holds the file's pages while it waits, and the
    // arrival is reported meanwhile: that report must not wait for those pages (dropping them
    // at once, from inside the read, would hang this read for good).
    let v3 = b"version three, longer\n";
    fetcher.pending.lock().unwrap().push((id, v3.to_vec()));
    changed(&v.mirror_apply(bob.id, &[news(v3)], Timestamp::now()).unwrap());
    eventually("stat shows the new size", || stat_size(&path) == Some(v3.len() as u64));
    eventually("the reader that kept the file open sees it", || {
        let n = open.read_at(&mut buf, 0).unwrap();
        &buf[..n] == v3
    });
    assert_eq!(sh(mnt, "cat peers/bob/news.txt").as_bytes(), v3);

    // A new root shows; a recalled one goes, for `ls` and for `stat` of its cached name.
    let extra = root(shared(2, "extra", SharedKind::Dir, None), AccessMode::Permanent);
    changed(&v.mirror_apply(bob.id, &[news(v3), extra], Timestamp::now()).unwrap());
    assert_eq!(sh(mnt, "ls peers/bob"), "extra\nnews.txt\n");
    eventually("the link count counts it", || sh(mnt, "stat -c %h peers/bob") == "3\n");
    changed(&v.mirror_apply(bob.id, &[news(v3)], Timestamp::now()).unwrap());
    eventually("the recalled folder is gone", || !mnt.join("peers/bob/extra").exists());
    assert_eq!(sh(mnt, "ls peers/bob"), "news.txt\n");
    eventually("the link count follows", || sh(mnt, "stat -c %h peers/bob") == "2\n");

    // A timed grant that has ended is gone before any sweep removes it, and without any
    // invalidation: the kernel may cache it only until the grant's end.
    let brief = root(shared(3, "brief.txt", SharedKind::File, Some(b"brief")), timed(2_000));
    changed(&v.mirror_apply(bob.id, &[news(v3), brief], Timestamp::now()).unwrap());
    arrive(&v, entry(&v, bob.id, "brief.txt").id, b"brief");
    let brief_path = mnt.join("peers/bob/brief.txt");
    // Seen (and cached) while the grant lasts; how long that is depends on this machine.
    let _ = std::fs::read(&brief_path);
    eventually("the grant's end hides it", || !brief_path.exists());
    assert_eq!(sh(mnt, "ls peers/bob"), "news.txt\n");
    assert!(v.mirror_lookup(bob.id, b"brief.txt").unwrap().is_some(), "not swept yet");

    // bob stops sharing: his folder goes.
    changed(&v.mirror_forget_peer(PlayerId([7; 32]), Timestamp::now()).unwrap());
    eventually("bob's folder is gone", || !mnt.join("peers/bob").exists());
    assert_eq!(sh(mnt, "ls peers"), "");
    drop(open);
    drop(v);
    session.shutdown().unwrap();
}
