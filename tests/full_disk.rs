//! A full disk: the data dir on a small tmpfs. Writing past its end gets `ENOSPC` (never a
//! hang, a panic or `EIO`); what was fsync'd before stays intact; deleting files and
//! collecting garbage makes room again; the daemon stops cleanly and `fsck` finds nothing.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use indras_e2e::{Dirs, Mount, Tmpfs, binary, bytes, disk_usage};

const MIB: usize = 1 << 20;

/// Writes `data` to a new file and fsyncs it: the first error, from `write` or `fsync` (the
/// commit happens at `fsync`, so the `close` after it has nothing left to report).
fn write_synced(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn gc(data: &Path) {
    let out = Command::new(binary())
        .args(["gc", "--data-dir"])
        .arg(data)
        .output()
        .expect("run indras-fuse gc");
    assert!(out.status.success(), "gc failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_full_disk_gives_enospc_keeps_synced_files_and_recovers() {
    let dirs = Dirs::new();
    let _tmpfs = Tmpfs::mount(&dirs.data, "40m");
    // GC every second, of anything unreferenced for a second: deleting makes room quickly.
    let m = Mount::start_with(&dirs, &["--gc-interval", "1", "--gc-grace", "1"]);
    let v = m.vault();

    let keep = bytes(1, 3 * MIB);
    write_synced(&v.join("keep.bin"), &keep).expect("write keep.bin");

    // Fill the disk with content that does not deduplicate; every file is fsync'd.
    let mut synced = Vec::new();
    let mut refusal = None;
    for i in 0..40u64 {
        let path = v.join(format!("fill-{i}"));
        match write_synced(&path, &bytes(100 + i, 2 * MIB)) {
            Ok(()) => synced.push((path, 100 + i)),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let e = refusal.expect("80 MiB fitted on a 40 MiB disk");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "a full disk gave {e}");
    assert!(!synced.is_empty(), "not one 2 MiB file fitted");

    // Everything fsync'd before the disk filled reads back whole; the daemon still answers.
    assert!(std::fs::read(v.join("keep.bin")).unwrap() == keep, "keep.bin changed");
    for (path, seed) in &synced {
        let got = std::fs::read(path).unwrap();
        assert!(got == bytes(*seed, 2 * MIB), "{} changed", path.display());
    }

    // Deleting makes room again: the mount's own GC reclaims the chunks, and writes succeed.
    for entry in std::fs::read_dir(&v).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("fill-")) {
            std::fs::remove_file(path).unwrap();
        }
    }
    let again = bytes(7, 8 * MIB);
    let start = std::time::Instant::now();
    loop {
        match write_synced(&v.join("again.bin"), &again) {
            Ok(()) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                assert!(
                    start.elapsed().as_secs() < 30,
                    "still ENOSPC 30 s after deleting every filler:\n{}",
                    m.log_text()
                );
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => panic!("writing after the deletes: {e}"),
        }
    }
    assert!(std::fs::read(v.join("again.bin")).unwrap() == again);

    // A clean stop, a consistent store, and the files still there after a remount.
    m.stop();
    gc(&dirs.data);
    let out = Command::new(binary())
        .args(["fsck", "--data-dir"])
        .arg(&dirs.data)
        .output()
        .expect("run fsck");
    assert!(
        out.status.success(),
        "fsck after a full disk: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mount::start(&dirs);
    assert!(std::fs::read(m.vault().join("keep.bin")).unwrap() == keep);
    assert!(std::fs::read(m.vault().join("again.bin")).unwrap() == again);
    m.stop();
}

/// Fills the disk with 1 MiB files, each written and fsync'd, until one is refused; returns
/// the files that fitted.
fn fill(v: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut synced = Vec::new();
    for i in 0..10_000u64 {
        let path = v.join(format!("{prefix}-{i}"));
        match write_synced(&path, &bytes(1000 + i, MIB)) {
            Ok(()) => synced.push(path),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "filling gave {e}");
                let _ = std::fs::remove_file(&path);
                return synced;
            }
        }
    }
    panic!("10 GiB fitted on a small tmpfs");
}

fn errno(r: io::Result<impl Sized>) -> Option<i32> {
    r.err().map(|e| e.raw_os_error().unwrap_or(-1))
}

fn no_space(r: io::Result<impl Sized>, what: &str, m: &Mount) {
    let e = errno(r);
    assert!(
        e == Some(libc::ENOSPC) || e == Some(libc::EDQUOT),
        "{what} gave errno {e:?}, not ENOSPC:\n{}",
        m.log_text()
    );
}

/// Retries `f` while it fails with `ENOSPC`, for up to 20 s; panics on any other error or if
/// it never succeeds.
fn retry_while_full(what: &str, m: &Mount, mut f: impl FnMut() -> io::Result<()>) {
    let start = std::time::Instant::now();
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                assert!(
                    start.elapsed().as_secs() < 20,
                    "{what}: still ENOSPC after 20 s:\n{}",
                    m.log_text()
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => panic!("{what}: {e}\n{}", m.log_text()),
        }
    }
}

/// A write refused for space leaves the file's buffer as it was: the writes after it, the
/// `fsync` and the `close` get `ENOSPC` (never `EIO`), the file keeps its last committed
/// content, and once space is freed the same descriptor writes and syncs again.
#[test]
fn writes_refused_for_space_give_enospc_to_the_end_and_recover() {
    use std::os::unix::fs::FileExt;
    let dirs = Dirs::new();
    let _tmpfs = Tmpfs::mount(&dirs.data, "24m");
    let m = Mount::start(&dirs);
    let v = m.vault();
    let old = bytes(5, 20_000);
    write_synced(&v.join("old.bin"), &old).expect("write old.bin");
    let filled = fill(&v, "fill");
    assert!(filled.len() > 4, "only {} files fitted", filled.len());

    // A new file, and an old one rewritten from the start (O_TRUNC): the same stream path.
    let mut new = File::create(v.join("new.bin")).unwrap();
    let mut rewrite = File::options().write(true).truncate(true).open(v.join("old.bin")).unwrap();
    for (name, f) in [("new.bin", &mut new), ("old.bin", &mut rewrite)] {
        // Write 1 MiB at a time until the disk refuses, then twice more.
        let mut refused = 0;
        for i in 0..64u64 {
            match f.write(&bytes(2000 + i, MIB)) {
                Ok(n) => assert_eq!(n, MIB, "{name}: a short write"),
                Err(e) => {
                    refused += 1;
                    no_space(Err::<(), _>(e), &format!("{name}: write {i}"), &m);
                    if refused == 3 {
                        break;
                    }
                }
            }
        }
        assert_eq!(refused, 3, "{name}: 64 MiB fitted on a full 24 MiB disk");
        no_space(f.sync_all(), &format!("{name}: fsync after the refused writes"), &m);
    }
    // The failed buffers are gone: each file holds what it held before.
    assert_eq!(std::fs::read(v.join("new.bin")).unwrap(), b"", "new.bin changed");
    assert!(std::fs::read(v.join("old.bin")).unwrap() == old, "old.bin changed");

    // Room again: the same descriptors write and sync, as do new ones.
    for path in filled.iter().take(4) {
        std::fs::remove_file(path).unwrap();
    }
    let data = bytes(3000, MIB);
    retry_while_full("rewriting new.bin on the same descriptor", &m, || {
        new.write_all_at(&data, 0)?;
        new.sync_all()
    });
    retry_while_full("rewriting old.bin on the same descriptor", &m, || {
        rewrite.write_all_at(&data, 0)?;
        rewrite.sync_all()
    });
    drop((new, rewrite));
    let fresh = bytes(3001, MIB);
    retry_while_full("a new file", &m, || write_synced(&v.join("fresh.bin"), &fresh));
    assert!(std::fs::read(v.join("fresh.bin")).unwrap() == fresh);
    for name in ["new.bin", "old.bin"] {
        let got = std::fs::read(v.join(name)).unwrap();
        assert!(got.len() >= MIB && got[..MIB] == data[..], "{name} does not hold its rewrite");
    }
    m.stop();
}

/// Free bytes of the filesystem at `path`, as `df` shows them.
fn free_bytes(path: &Path) -> u64 {
    let st = rustix::fs::statvfs(path).expect("statvfs");
    st.f_bavail * st.f_frsize
}

/// With the default GC settings (a timer of 10 minutes), deleting a large file on a full
/// vault makes room for a new file of a comparable size within seconds: the write that finds
/// the disk full makes room at once.
#[test]
fn deleting_on_a_full_vault_makes_room_at_once_with_default_gc() {
    let dirs = Dirs::new();
    let _tmpfs = Tmpfs::mount(&dirs.data, "40m");
    let m = Mount::start(&dirs);
    let v = m.vault();
    write_synced(&v.join("big.bin"), &bytes(9, 8 * MIB)).expect("write big.bin");
    let filled = fill(&v, "fill");
    assert!(!filled.is_empty(), "not one 1 MiB file fitted after big.bin");
    no_space(write_synced(&v.join("more.bin"), &bytes(10, 6 * MIB)), "a write on a full disk", &m);

    std::fs::remove_file(v.join("big.bin")).unwrap();
    let next = bytes(11, 6 * MIB);
    retry_while_full("a 6 MiB file after deleting an 8 MiB one", &m, || {
        write_synced(&v.join("next.bin"), &next)
    });
    assert!(std::fs::read(v.join("next.bin")).unwrap() == next);
    for path in &filled {
        assert!(std::fs::read(path).unwrap().len() == MIB, "{} changed", path.display());
    }
    m.stop();
}

/// Snapshots give way last: on a full disk where only history and a named snapshot hold what
/// was deleted, history goes first, then the snapshot, and a write then fits.
#[test]
fn snapshots_give_way_last_on_a_full_disk() {
    let dirs = Dirs::new();
    let _tmpfs = Tmpfs::mount(&dirs.data, "40m");
    let m = Mount::start(&dirs);
    let v = m.vault();
    write_synced(&v.join("kept.bin"), &bytes(21, 6 * MIB)).expect("write kept.bin");
    write_synced(&v.join("held.bin"), &bytes(22, 8 * MIB)).expect("write held.bin");
    let snapshot = |name: &str| {
        let out = Command::new(binary())
            .args(["snapshot", "create", name])
            .arg(&m.mnt)
            .output()
            .expect("snapshot");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    snapshot("named");
    std::fs::remove_file(v.join("kept.bin")).unwrap();
    std::fs::remove_file(v.join("held.bin")).unwrap();
    let filled = fill(&v, "fill");
    assert!(!filled.is_empty(), "not one 1 MiB file fitted");
    // Only the snapshot holds the 14 MiB: a 6 MiB file fits once it gives way.
    let next = bytes(23, 6 * MIB);
    retry_while_full("a 6 MiB file with only a snapshot to give way", &m, || {
        write_synced(&v.join("next.bin"), &next)
    });
    assert!(std::fs::read(v.join("next.bin")).unwrap() == next);
    let listed = Command::new(binary()).args(["snapshot", "list"]).arg(&m.mnt).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains("named"),
        "the snapshot is still listed: {}",
        String::from_utf8_lossy(&listed.stdout)
    );
    for path in &filled {
        assert!(std::fs::read(path).unwrap().len() == MIB, "{} changed", path.display());
    }
    m.stop();
}

/// `df` on the mount shows the data dir's filesystem: after a large file is deleted on a full
/// vault, its free space comes back without any write asking for it.
#[test]
fn df_shows_the_space_a_delete_frees() {
    let dirs = Dirs::new();
    let _tmpfs = Tmpfs::mount(&dirs.data, "40m");
    let m = Mount::start(&dirs);
    let v = m.vault();
    write_synced(&v.join("big.bin"), &bytes(12, 8 * MIB)).expect("write big.bin");
    fill(&v, "fill");
    let size = |p: &Path| {
        let st = rustix::fs::statvfs(p).expect("statvfs");
        st.f_blocks * st.f_frsize
    };
    assert_eq!(size(&m.mnt), size(&dirs.data), "df on the mount is not the data dir's disk");
    let full = free_bytes(&m.mnt);
    assert!(full < 4 * MIB as u64, "df shows {full} bytes free on a full disk");

    std::fs::remove_file(v.join("big.bin")).unwrap();
    let start = std::time::Instant::now();
    loop {
        let free = free_bytes(&m.mnt);
        if free >= full + 6 * MIB as u64 {
            break;
        }
        assert!(
            start.elapsed().as_secs() < 20,
            "df shows {free} bytes free 20 s after deleting 8 MiB (was {full}):\n{}",
            m.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    m.stop();
}

/// A program that rewrites one 256 KiB file over and over, with the default settings: each
/// rewrite is a version history keeps, but history holds at most its share of the disk (20%),
/// and once versions beyond it pile up they are thinned and collected, so the data dir stays
/// within the current content, history's share and 64 MiB (the most new history, or
/// unreferenced content, a mount leaves for its background thread) the whole time.
#[test]
fn a_rewrite_loop_keeps_the_data_dir_bounded() {
    const SIZE: usize = 256 << 10;
    const ROUNDS: u64 = 2000;
    let dirs = Dirs::new();
    let _tmpfs = Tmpfs::mount(&dirs.data, "1g");
    let m = Mount::start(&dirs);
    let path = m.vault().join("loop.bin");
    let base = disk_usage(&dirs.data);
    let st = rustix::fs::statvfs(&dirs.data).expect("statvfs");
    let share = st.f_blocks * st.f_frsize / 5;
    let bound = base + SIZE as u64 + share + 64 * MIB as u64;
    let mut most = 0;
    for i in 0..ROUNDS {
        std::fs::write(&path, bytes(20_000 + i, SIZE)).expect("rewrite");
        if i % 50 == 0 {
            let used = disk_usage(&dirs.data);
            most = most.max(used);
            assert!(
                used <= bound,
                "after {i} rewrites of 256 KiB the data dir holds {used} bytes (bound {bound})"
            );
        }
    }
    assert!(std::fs::read(&path).unwrap() == bytes(20_000 + ROUNDS - 1, SIZE));
    let used = disk_usage(&dirs.data);
    assert!(used <= bound, "after {ROUNDS} rewrites the data dir holds {used} bytes");
    eprintln!(
        "{ROUNDS} rewrites of 256 KiB: data dir at most {most} bytes, {used} at the end \
         ({} written)",
        ROUNDS * SIZE as u64
    );
    m.stop();
}
