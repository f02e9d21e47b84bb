//! Unmount and remount: every byte and every inode number survives; the daemonized CLI path;
//! bounded memory for a large sequential write.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use indras_e2e::{Dirs, Mount, binary, bytes, git_origin, have, is_mounted, sh};

/// inode, mode, uid, gid, size, mtime, nlink, and the content hash or link target.
type Stat = (u64, u32, u32, u32, u64, i64, u64, String);

/// Every entry under `root`, by relative path.
fn snapshot(root: &Path) -> BTreeMap<String, Stat> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                std::fs::read_link(&p).unwrap().display().to_string()
            } else if m.is_dir() {
                stack.push(p.clone());
                String::from("dir")
            } else {
                blake3::hash(&std::fs::read(&p).unwrap()).to_hex().to_string()
            };
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.insert(
                rel,
                (m.ino(), m.mode(), m.uid(), m.gid(), m.size(), m.mtime(), m.nlink(), what),
            );
        }
    }
    out
}

#[test]
fn every_byte_and_inode_number_survives_remount() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();
    for (i, size) in [0usize, 1, 16 * 1024, 16 * 1024 + 1, 300_000, 5 << 20].iter().enumerate() {
        std::fs::create_dir_all(v.join(format!("d{}", i % 3))).unwrap();
        std::fs::write(v.join(format!("d{}/f{i}", i % 3)), bytes(i as u64, *size)).unwrap();
    }
    sh(
        &v,
        "ln d0/f0 d1/hard && ln -s ../d0/f3 d2/sym && chmod 600 d1/f1 && chown 1234:5678 d2/f2 && touch -d '2001-02-03 04:05:06' d0/f3",
    );
    sh(&v, "mkdir -p stories/quest gallery && echo x > stories/quest/001.md");
    let before = snapshot(&v);
    m.stop();
    let m = Mount::start(&dirs);
    assert_eq!(snapshot(&m.vault()), before, "after the first remount");
    m.stop();
    let m = Mount::start(&dirs);
    assert_eq!(snapshot(&m.vault()), before, "after the second remount");
    m.stop();
}

/// Unmounts a daemonized mount when dropped.
struct Cleanup<'a>(&'a Path, &'a Path);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.0).arg("unmount").arg(self.1).output();
        let _ = rustix::mount::unmount(self.1, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn daemon_mode_status_unmount_and_admin_commands() {
    let dirs = Dirs::new();
    let bin = binary();
    let run = |args: &[&str]| {
        let out = Command::new(&bin).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let mnt = dirs.mnt.to_str().unwrap();
    let data = dirs.data.to_str().unwrap();
    let (ok, out) = run(&["mount", mnt, "--player", "alice", "--data-dir", data]);
    assert!(ok, "{out}");
    // From here on, make sure the daemon goes away even if an assertion fails.
    let _cleanup = Cleanup(&bin, &dirs.mnt);
    assert!(is_mounted(&dirs.mnt));
    std::fs::write(dirs.mnt.join("vault/a.txt"), b"hello").unwrap();
    let (ok, out) = run(&["status", mnt]);
    assert!(ok && out.contains("Player: alice") && out.contains("Artifacts:"), "{out}");
    let (ok, out) = run(&["status", mnt, "--json"]);
    assert!(ok && out.contains("\"mounted\": true"), "{out}");
    // A second mount of the same data dir is refused with one clear line.
    let other = dirs.tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let (ok, out) =
        run(&["mount", other.to_str().unwrap(), "--player", "alice", "--data-dir", data]);
    assert!(!ok && out.contains("already mounted"), "{out}");
    let (ok, out) = run(&["mount", mnt, "--player", "alice", "--data-dir", data]);
    assert!(!ok && out.contains("already a mount point"), "{out}");
    let (ok, out) = run(&["gc", "--data-dir", data]);
    assert!(!ok && out.contains("in use"), "{out}");
    let (ok, out) = run(&["unmount", mnt]);
    assert!(ok, "{out}");
    assert!(!is_mounted(&dirs.mnt));
    let (ok, out) = run(&["status", "--data-dir", data]);
    assert!(ok && out.contains("not mounted"), "{out}");
    let (ok, out) = run(&["fsck", "--data-dir", data, "--deep"]);
    assert!(ok && out.contains("0 problem"), "{out}");
    let (ok, out) = run(&["gc", "--data-dir", data]);
    assert!(ok, "{out}");
    // GC keeps what retention keeps: with `--keep none`, the one save of a.txt goes too.
    let (ok, out) = run(&["gc", "--data-dir", data, "--keep", "bogus"]);
    assert!(!ok && out.contains("--keep bogus"), "{out}");
    let (ok, out) = run(&["gc", "--data-dir", data, "--keep", "none"]);
    assert!(ok && out.contains("dropped 1 version(s)"), "{out}");
    // Refusals: missing mount point, not a directory, bad flag, unwritable data dir.
    let (ok, out) = run(&["mount", "/nonexistent/mnt", "--player", "alice", "--data-dir", data]);
    assert!(!ok && out.contains("does not exist"), "{out}");
    let (ok, out) = run(&["mount", "/etc/hostname", "--player", "alice", "--data-dir", data]);
    assert!(!ok && out.contains("not a directory"), "{out}");
    let (ok, out) = run(&["mount", mnt, "--player", "alice", "--bogus"]);
    assert!(!ok && out.contains("--bogus"), "{out}");
    let (ok, out) = run(&["mount", mnt, "--player", "alice", "--data-dir", "/proc/version/x"]);
    assert!(!ok && out.contains("not writable"), "{out}");
}

#[test]
fn git_status_on_a_remounted_400_file_clone() {
    if !have("git") {
        return;
    }
    let dirs = Dirs::new();
    let origin = git_origin(&dirs, 400, 20);
    let m = Mount::start(&dirs);
    sh(&m.vault(), &format!("git clone -q {} clone", origin.display()));
    m.stop();
    let m = Mount::start(&dirs);
    let clone = m.vault().join("clone");
    let t = Instant::now();
    let out = sh(&clone, "git status --porcelain");
    let cold = t.elapsed();
    let t = Instant::now();
    sh(&clone, "git status --porcelain");
    let warm = t.elapsed();
    assert!(out.is_empty(), "clean clone shows changes after remount:\n{out}");
    eprintln!(
        "git status on a remounted 400-file clone: {:.1} ms cold, {:.1} ms warm",
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3
    );
    m.stop();
}

/// Peak resident memory of a process, from `/proc/<pid>/status` (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_2_gib_sequential_write_keeps_the_daemon_small() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let file = m.vault().join("big.bin");
    sh(&m.vault(), "dd if=/dev/urandom of=big.bin bs=1M count=2048 status=none conv=fsync");
    let peak = peak_rss_kib(m.pid());
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 2 << 30);
    eprintln!("daemon peak RSS while writing 2 GiB: {} MiB", peak / 1024);
    assert!(peak < 256 * 1024, "peak RSS {peak} KiB");
    // A 4 KiB overwrite in the middle keeps the rest and reads back.
    sh(
        &m.vault(),
        "printf 'PATCHED!' | dd of=big.bin bs=1 seek=1073741824 conv=notrunc status=none",
    );
    let out = sh(&m.vault(), "dd if=big.bin bs=1 skip=1073741824 count=8 status=none");
    assert_eq!(out, "PATCHED!");
    assert!(peak_rss_kib(m.pid()) < 256 * 1024);
    m.stop();
}
