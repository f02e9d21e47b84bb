//! The mount's background thread on a real FUSE mount: old versions of an edited file that
//! history does not keep (`--keep none`) are collected once their grace period is over, and a
//! remount finds a clean store.

use std::time::{Duration, Instant};

use indras_artifacts::FsckOptions;
use indras_fuse::{MountConfig, MountSession};

fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

#[test]
fn old_versions_are_collected_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let (mp, data) = (dir.path().join("mnt"), dir.path().join("data"));
    std::fs::create_dir(&mp).unwrap();
    let mut cfg = MountConfig::new(&mp, &data, "alice");
    cfg.gc_interval = Duration::from_millis(200);
    cfg.gc_grace = Duration::ZERO;
    cfg.history.keep = indras_artifacts::Keep::none();
    // Dropping the session unmounts, even when an assertion fails.
    let session = MountSession::start(&cfg).expect("mount");
    let file = mp.join("vault/big.bin");
    for seed in 0..3 {
        std::fs::write(&file, random(seed, 3 << 20)).unwrap();
    }
    let vault = session.fs().vault().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = vault.stats().unwrap();
        if stats.unreferenced_leaves == 0 && stats.chunk_bytes == 3 << 20 {
            break;
        }
        assert!(Instant::now() < deadline, "old versions were never collected: {stats:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(std::fs::read(&file).unwrap() == random(2, 3 << 20));
    let report = vault.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    drop(vault);
    session.shutdown().unwrap();
}
