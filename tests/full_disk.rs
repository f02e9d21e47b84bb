//! A full disk: the data dir on a small tmpfs. Writing past its end gets `ENOSPC` (never a
//! hang, a panic or `EIO`); what was fsync'd before stays intact; deleting files and
//! collecting garbage makes room again; the daemon stops cleanly and `fsck` finds nothing.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use indras_e2e::{Dirs, Mount, binary, bytes, detach};

const MIB: usize = 1 << 20;

/// A tmpfs of `size` mounted at `path` for the guard's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("mkdir");
        let options = std::ffi::CString::new(format!("size={size},mode=0700")).expect("options");
        rustix::mount::mount(
            "indras-e2e-full",
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
