//! Real tools on a real mount: what users point at `vault/` must just work.

use std::os::unix::fs::MetadataExt;

use indras_e2e::{Dirs, Mount, bytes, git_origin, have, sh, sh_output};

#[test]
fn coreutils_cp_mv_rm_ln() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();
    let src = dirs.tmp.path().join("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::write(src.join("a/one.txt"), b"one\n").unwrap();
    std::fs::write(src.join("a/b/big.bin"), bytes(1, 3 << 20)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    sh(&v, &format!("cp -a {}/. tree && diff -r {} tree", src.display(), src.display()));
    sh(
        &v,
        "mv tree/a/one.txt tree/one-moved.txt && test ! -e tree/a/one.txt && grep -q one tree/one-moved.txt",
    );
    sh(
        &v,
        "ln tree/one-moved.txt hard && test $(stat -c %h hard) = 2 && test $(stat -c %i hard) = $(stat -c %i tree/one-moved.txt)",
    );
    sh(
        &v,
        "ln -s tree/one-moved.txt soft && test \"$(readlink soft)\" = tree/one-moved.txt && grep -q one soft",
    );
    sh(&v, "rm -r tree && test ! -e tree && grep -q one hard && test $(stat -c %h hard) = 1");
    m.stop();
}

#[test]
fn git_clone_commit_gc_fsck() {
    if !have("git") {
        return;
    }
    let dirs = Dirs::new();
    let origin = git_origin(&dirs, 60, 7);
    let m = Mount::start(&dirs);
    let v = m.vault();
    sh(&v, &format!("git clone -q {} clone", origin.display()));
    let clone = v.join("clone");
    sh(&clone, "test -z \"$(git status --porcelain)\"");
    sh(
        &clone,
        "echo change >> d1/f1.txt && git commit -qam change && git log --oneline | wc -l | grep -q 2",
    );
    sh(
        &clone,
        "git gc -q && git fsck --full --strict 2>&1 && test -z \"$(git status --porcelain)\"",
    );
    m.stop();
}

#[test]
fn sqlite_delete_and_wal_journals() {
    if !have("sqlite3") {
        return;
    }
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();
    for mode in ["delete", "wal"] {
        let out = sh(
            &v,
            &format!(
                "sqlite3 {mode}.db 'pragma journal_mode={mode}; create table t(k integer primary key, v text); \
                 with recursive c(x) as (select 1 union all select x+1 from c where x < 5000) \
                 insert into t select x, hex(randomblob(40)) from c; \
                 update t set v = \"z\" where k % 3 = 0; delete from t where k % 5 = 0; \
                 pragma integrity_check; select count(*) from t;'"
            ),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, [mode, "ok", "4000"], "{mode}: {out}");
    }
    m.stop();
    let m = Mount::start(&dirs);
    for mode in ["delete", "wal"] {
        let out = sh(
            &m.vault(),
            &format!("sqlite3 {mode}.db 'pragma integrity_check; select count(*) from t;'"),
        );
        assert_eq!(out.lines().collect::<Vec<_>>(), ["ok", "4000"], "{mode} after remount");
    }
    m.stop();
}

#[test]
fn editors_vim_sed_and_python_atomic_save() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();
    std::fs::write(v.join("notes.md"), "alpha\nbeta\n").unwrap();
    if have("vim") {
        sh(&v, "vim -es -u NONE -c '%s/alpha/gamma/' -c 'wq' notes.md && grep -q gamma notes.md");
    }
    sh(
        &v,
        "sed -i 's/beta/delta/' notes.md && test \"$(cat notes.md)\" = \"$(printf 'gamma\\ndelta')\"",
    );
    sh(
        &v,
        "python3 - <<'PY'\nimport os\np = 'saved.json'\nfor i in range(20):\n    t = p + '.tmp'\n    with open(t, 'w') as f:\n        f.write('{\"version\": %d}' % i)\n        f.flush()\n        os.fsync(f.fileno())\n    os.rename(t, p)\nassert open(p).read() == '{\"version\": 19}'\nassert not os.path.exists(p + '.tmp')\nPY",
    );
    m.stop();
}

#[test]
fn rsync_and_tar_round_trip() {
    let dirs = Dirs::new();
    let src = dirs.tmp.path().join("src");
    for i in 0..40 {
        let d = src.join(format!("d{}", i % 5));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), bytes(i, (i as usize * 7919) % 70_000)).unwrap();
    }
    std::os::unix::fs::symlink("d0/f0", src.join("link")).unwrap();
    let m = Mount::start(&dirs);
    let v = m.vault();
    if have("rsync") {
        sh(&v, &format!("rsync -a {}/ synced/ && diff -r {} synced", src.display(), src.display()));
        sh(&v, &format!("rsync -a {}/ synced/ --itemize-changes | (! grep -q .)", src.display()));
    }
    if have("rsync") && have("setfattr") {
        // Extended attributes too, run after run: the vault's computed ones (`user.indra.*`)
        // are never listed, so rsync neither copies them out nor tries to remove them here.
        sh(&src, "setfattr -n user.a -v 1 d0 && setfattr -n user.b -v two d1/f1");
        for _ in 0..2 {
            sh(&v, &format!("rsync -aX {}/ xsynced/", src.display()));
        }
        assert!(sh(&v, "getfattr -d xsynced/d0").contains("user.a=\"1\""));
        assert!(sh(&v, "getfattr -d xsynced/d1/f1").contains("user.b=\"two\""));
        let listed = sh(&v, "getfattr -R -d -m - xsynced");
        assert!(!listed.contains("indra"), "computed attributes listed: {listed}");
        sh(&v, &format!("rsync -aX xsynced/ {}/back/", dirs.tmp.path().display()));
        let back = sh(dirs.tmp.path(), "getfattr -R -d -m - back");
        assert!(back.contains("user.a=\"1\"") && !back.contains("indra"), "{back}");
    }
    let tarball = dirs.tmp.path().join("src.tar");
    sh(dirs.tmp.path(), &format!("tar -C {} -cf {} .", src.display(), tarball.display()));
    sh(
        &v,
        &format!(
            "mkdir untarred && tar -C untarred -xf {} && diff -r {} untarred",
            tarball.display(),
            src.display()
        ),
    );
    m.stop();
}

#[test]
fn layout_and_bad_input_get_errno_not_panics() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let root = &m.mnt;
    let names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for want in ["vault", "peers", "realms", ".indra"] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    let code = |r: std::io::Result<()>| r.err().and_then(|e| e.raw_os_error());
    for dir in ["peers", "realms", ".indra"] {
        let e = code(std::fs::write(root.join(dir).join("x"), b"x"));
        assert!(matches!(e, Some(libc::EROFS | libc::EACCES)), "write in {dir}: {e:?}");
        let e = code(std::fs::create_dir(root.join(dir).join("d")));
        assert!(matches!(e, Some(libc::EROFS | libc::EACCES)), "mkdir in {dir}: {e:?}");
    }
    for dir in ["vault", "peers", "realms", ".indra"] {
        let e = code(std::fs::remove_dir(root.join(dir)));
        assert!(
            matches!(e, Some(libc::EBUSY | libc::EPERM | libc::ENOTEMPTY)),
            "rmdir {dir}: {e:?}"
        );
        let e = code(std::fs::rename(root.join(dir), root.join("renamed")));
        assert!(matches!(e, Some(libc::EBUSY | libc::EPERM)), "rename {dir}: {e:?}");
    }
    let e = code(std::fs::write(root.join(".indra/player.json"), b"x"));
    assert!(matches!(e, Some(libc::EROFS | libc::EACCES)), "write player.json: {e:?}");
    let player = std::fs::read_to_string(root.join(".indra/player.json")).unwrap();
    assert!(player.contains("\"player\": \"alice\""), "{player}");
    let v = m.vault();
    let long = "x".repeat(256);
    assert_eq!(code(std::fs::write(v.join(&long), b"x")), Some(libc::ENAMETOOLONG));
    std::fs::write(v.join("x".repeat(255)), b"ok").unwrap();
    // Non-UTF-8 names are stored as bytes.
    let raw = std::ffi::OsStr::new(unsafe_free_latin1());
    std::fs::write(v.join(raw), b"latin1").unwrap();
    assert_eq!(std::fs::read(v.join(raw)).unwrap(), b"latin1");
    let out = sh_output(&v, "df -h . && stat -f .");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    m.stop();
}

/// "caf\xe9" as an `OsStr` without unsafe code.
fn unsafe_free_latin1() -> &'static std::ffi::OsStr {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::OsStr::from_bytes(b"caf\xe9")
}

#[test]
fn mmap_shared_writes_locks_and_xattrs() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();
    sh(
        &v,
        "python3 - <<'PY'\nimport mmap, os, fcntl, subprocess\nwith open('mapped.bin', 'wb') as f:\n    f.write(b'\\0' * 65536)\nwith open('mapped.bin', 'r+b') as f:\n    mm = mmap.mmap(f.fileno(), 0)\n    mm[100:105] = b'HELLO'\n    mm.flush()\n    mm.close()\nassert open('mapped.bin', 'rb').read()[100:105] == b'HELLO'\n# flock: a second process cannot take the lock while we hold it\nf = open('locked', 'w')\nfcntl.flock(f, fcntl.LOCK_EX)\nr = subprocess.run(['python3', '-c', 'import fcntl; fcntl.flock(open(\"locked\"), fcntl.LOCK_EX | fcntl.LOCK_NB)'])\nassert r.returncode != 0, 'second flock succeeded'\nfcntl.flock(f, fcntl.LOCK_UN)\n# fcntl byte-range lock\nfcntl.lockf(f, fcntl.LOCK_EX)\nr = subprocess.run(['python3', '-c', 'import fcntl; fcntl.lockf(open(\"locked\", \"w\"), fcntl.LOCK_EX | fcntl.LOCK_NB)'])\nassert r.returncode != 0, 'second lockf succeeded'\nf.close()\n# xattrs\nos.setxattr('mapped.bin', 'user.color', b'blue')\nassert os.getxattr('mapped.bin', 'user.color') == b'blue'\nassert 'user.color' in os.listxattr('mapped.bin')\nos.removexattr('mapped.bin', 'user.color')\ntry:\n    os.getxattr('mapped.bin', 'user.color')\n    raise SystemExit('xattr still there')\nexcept OSError as e:\n    assert e.errno == 61, e\nPY",
    );
    m.stop();
    let m = Mount::start(&dirs);
    let data = std::fs::read(m.vault().join("mapped.bin")).unwrap();
    assert_eq!(&data[100..105], b"HELLO");
    assert_eq!(std::fs::metadata(m.vault().join("mapped.bin")).unwrap().size(), 65536);
    m.stop();
}

/// In-place edits of a large file (`dd conv=notrunc`, appends, truncation) commit only what
/// changed, yet the leaf id is still the BLAKE3 hash of the whole content, before and after
/// a remount (which drops the in-memory hash trees).
#[test]
fn in_place_edits_of_a_large_file_keep_its_id_equal_to_b3sum() {
    if !have("b3sum") || !have("getfattr") {
        return;
    }
    let dirs = Dirs::new();
    let reference = dirs.tmp.path().join("reference.bin");
    std::fs::write(&reference, bytes(7, 24 << 20)).unwrap();
    let edits = format!(
        "for f in big.bin {r}; do \
           printf 'hello' | dd of=$f bs=1 seek=5000000 conv=notrunc status=none; \
           head -c 70000 /dev/zero | dd of=$f bs=4096 seek=3000 conv=notrunc status=none; \
           printf 'tail' >> $f; \
         done",
        r = reference.display()
    );
    let same = "test \"$(b3sum --no-names big.bin)\" = \"$(b3sum --no-names {r})\" && \
                test \"$(getfattr --only-values -n user.indra.id big.bin)\" = \"$(b3sum --no-names big.bin)\"";
    let same = same.replace("{r}", &reference.display().to_string());
    let m = Mount::start(&dirs);
    let v = m.vault();
    sh(&v, &format!("cp {} big.bin", reference.display()));
    sh(&v, &edits);
    sh(&v, &same);
    m.stop();
    let m = Mount::start(&dirs);
    let v = m.vault();
    sh(&v, &edits);
    sh(
        &v,
        &format!("truncate -s 20000000 big.bin && truncate -s 20000000 {}", reference.display()),
    );
    sh(&v, &same);
    m.stop();
}

/// A program being run from the mount cannot be truncated, by any open: `O_RDONLY | O_TRUNC`
/// too, which the kernel checks only after the open, when it has already dropped the file's
/// cached pages under the program. Otherwise `O_RDONLY | O_TRUNC` truncates, as on Linux.
#[test]
fn a_running_program_is_text_busy_and_o_rdonly_o_trunc_truncates() {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    /// Kills the program even when an assertion fails.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();
    let program = v.join("sleep");
    std::fs::copy("/bin/sleep", &program).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let open = |read: bool, write: bool, trunc: bool| {
        std::fs::OpenOptions::new()
            .read(read)
            .write(write)
            .custom_flags(if trunc { libc::O_TRUNC } else { 0 })
            .open(&program)
            .map(drop)
            .map_err(|e| e.raw_os_error())
    };
    // Another test's child, between fork and exec, can briefly hold our copy's write
    // descriptor, and exec fails with ETXTBSY meanwhile: the usual retry.
    let spawn = || {
        for _ in 0..100 {
            match std::process::Command::new(&program).arg("30").spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => return Running(r.unwrap()),
            }
        }
        panic!("{} stayed text-busy for 2 s", program.display());
    };
    for round in 0..20 {
        let mut running = spawn();
        assert_eq!(open(false, true, false), Err(Some(libc::ETXTBSY)), "round {round}");
        assert_eq!(open(true, false, true), Err(Some(libc::ETXTBSY)), "round {round}");
        open(true, false, false).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(running.0.try_wait().unwrap().is_none(), "round {round}: the program died");
    }
    assert!(std::fs::metadata(&program).unwrap().len() > 0);
    // The daemon hears of the last program's exit from an asynchronous release.
    let mut tries = 0;
    while open(true, false, true) == Err(Some(libc::ETXTBSY)) && tries < 100 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        tries += 1;
    }
    assert_eq!(std::fs::metadata(&program).unwrap().len(), 0);
    m.stop();
    let m = Mount::start(&dirs);
    assert_eq!(std::fs::metadata(m.vault().join("sleep")).unwrap().len(), 0);
    m.stop();
}

/// `lseek(SEEK_DATA / SEEK_HOLE)` finds a sparse file's data and holes (runs of zero chunks),
/// and says `ENXIO` past the end; a file with writes not committed yet is all data; sparse
/// copies come out sparse.
#[test]
fn seek_data_and_hole_find_a_sparse_files_holes() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();
    let copy = dirs.tmp.path().join("copy.bin");
    sh(
        &v,
        &format!(
            "python3 - <<'PY'
import errno, os
M = 1 << 20
with open('sparse.bin', 'wb') as f:
    f.truncate(64 * M)
    f.seek(20 * M)
    f.write(b'x' * 100000)
fd = os.open('sparse.bin', os.O_RDONLY)
data = os.lseek(fd, 0, os.SEEK_DATA)
hole = os.lseek(fd, data, os.SEEK_HOLE)
# The data lies in the chunks around 20 MiB, and nothing but holes lies elsewhere.
assert 19 * M <= data <= 20 * M < 20 * M + 100000 <= hole <= 22 * M, (data, hole)
assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
assert os.lseek(fd, hole, os.SEEK_HOLE) == hole
for off in (hole, 64 * M, 65 * M):
    try:
        os.lseek(fd, off, os.SEEK_DATA)
        raise SystemExit('data after the last data at %d' % off)
    except OSError as e:
        assert e.errno == errno.ENXIO, e
os.close(fd)
# Writes waiting to be committed are committed first: the answer counts them.
with open('sparse.bin', 'r+b') as f:
    f.seek(40 * M)
    f.write(b'y')
    f.flush()
    assert os.lseek(f.fileno(), 30 * M, os.SEEK_DATA) // M == 40
    assert os.lseek(f.fileno(), 0, os.SEEK_HOLE) == 0
fd = os.open('sparse.bin', os.O_RDONLY)
assert os.lseek(fd, 30 * M, os.SEEK_DATA) // M == 40, os.lseek(fd, 30 * M, os.SEEK_DATA)
os.close(fd)
PY
cp --sparse=always sparse.bin {copy}
cmp sparse.bin {copy}",
            copy = copy.display()
        ),
    );
    let meta = std::fs::metadata(&copy).unwrap();
    assert!(meta.blocks() * 512 < 4 << 20, "the copy is sparse: {} blocks", meta.blocks());
    m.stop();
}

/// Set-user-id and set-group-id go when the content or the owner changes, as on a local
/// filesystem: a write, a truncation or an `open(O_TRUNC)` by a caller without `CAP_FSETID`
/// drops them, root's write keeps them, and a change of owner drops them for anyone.
/// (The kernel leaves this to the daemon: `FUSE_HANDLE_KILLPRIV_V2`.)
#[test]
fn writes_truncations_and_chown_drop_set_id_bits() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    let dirs = Dirs::new();
    // Another user reaches the mount through the test's folder and `allow_other`.
    let top = dirs.mnt.parent().unwrap();
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = Mount::start_with(&dirs, &["-o", "allow_other"]);
    let v = m.vault();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    let as_nobody = |code: &str, path: &std::path::Path| {
        let out = std::process::Command::new("python3")
            .args(["-c", code, path.to_str().unwrap()])
            .uid(65534)
            .gid(65534)
            .output()
            .expect("python3");
        assert!(out.status.success(), "{code}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let fresh = |name: &str, perm: u32| {
        let p = v.join(name);
        std::fs::write(&p, b"content").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(perm)).unwrap();
        assert_eq!(mode(&p), perm);
        p
    };
    let cases = [
        ("write", "import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY)\nos.write(fd,b'x')"),
        ("truncate", "import os,sys\nos.truncate(sys.argv[1],2)"),
        ("ftruncate", "import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY)\nos.ftruncate(fd,3)"),
        ("o_trunc", "import os,sys\nos.close(os.open(sys.argv[1],os.O_WRONLY|os.O_TRUNC))"),
    ];
    for (name, code) in cases {
        let both = fresh(&format!("{name}-6777"), 0o6777);
        as_nobody(code, &both);
        assert_eq!(mode(&both), 0o777, "{name} by nobody");
        // Without group execute, set-group-id marks mandatory locking and stays.
        let sgid = fresh(&format!("{name}-2767"), 0o2767);
        as_nobody(code, &sgid);
        assert_eq!(mode(&sgid), 0o2767, "{name} by nobody, no group execute");
    }
    // Root has CAP_FSETID: its write keeps the bits.
    let root = fresh("root-write", 0o6777);
    std::io::Write::write_all(
        &mut std::fs::OpenOptions::new().append(true).open(&root).unwrap(),
        b"more",
    )
    .unwrap();
    assert_eq!(mode(&root), 0o6777);
    // A change of owner drops them, even by root; a folder keeps its own.
    let owned = fresh("chown", 0o6755);
    std::os::unix::fs::chown(&owned, Some(65534), Some(65534)).unwrap();
    assert_eq!(mode(&owned), 0o755);
    let dir = v.join("setgid-dir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2775)).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    assert_eq!(mode(&dir), 0o2775);
    // All of it is stored, not only cached by the kernel.
    m.stop();
    let m = Mount::start(&dirs);
    let v = m.vault();
    assert_eq!(mode(&v.join("write-6777")), 0o777);
    assert_eq!(mode(&v.join("root-write")), 0o6777);
    assert_eq!(mode(&v.join("chown")), 0o755);
    m.stop();
}
