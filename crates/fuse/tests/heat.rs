//! Heat through `VaultFs`, without the kernel, on an injected clock: opens with dwell raise
//! it, a file never opened stays at 0, and it falls as simulated time passes.

use std::sync::Arc;

use indras_artifacts::{Options, Timestamp, Vault};
use indras_fuse::attention::{AttentionConfig, ManualClock};
use indras_fuse::{Ctx, MountInfo, VaultFs, inode};

const T0: i64 = 1_790_000_000_000;

fn fs_with_clock(dir: &std::path::Path, clock: Arc<ManualClock>, enabled: bool) -> VaultFs {
    let vault = Arc::new(Vault::open(dir, "alice", &Options::default()).unwrap());
    let info =
        MountInfo { mounted_at: Timestamp::from_millis(T0), ..MountInfo::unmounted("alice", dir) };
    let config = AttentionConfig { enabled, ..AttentionConfig::default() };
    VaultFs::with_attention(vault, info, clock, config).unwrap()
}

fn heat(fs: &VaultFs, ino: u64) -> f64 {
    String::from_utf8(fs.getxattr(ino, b"user.indra.heat").unwrap()).unwrap().parse().unwrap()
}

fn file(fs: &VaultFs, name: &str) -> u64 {
    let (attr, opened) =
        fs.create(Ctx::default(), inode::VAULT, name.as_bytes(), 0o644, 0).unwrap();
    fs.write(opened.fh, 0, b"content").unwrap();
    fs.release(opened.fh).unwrap();
    attr.ino
}

fn visit(fs: &VaultFs, clock: &ManualClock, ino: u64, dwell_ms: i64) {
    let o = fs.open(Ctx::default(), ino, libc::O_RDONLY).unwrap();
    clock.advance_ms(dwell_ms);
    fs.read(ino, o.fh, 0, 100).unwrap();
    fs.release(o.fh).unwrap();
}

#[test]
fn opens_with_dwell_raise_heat_and_time_cools_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let fs = fs_with_clock(dir.path(), clock.clone(), true);
    let hot = file(&fs, "hot.md");
    let cold = file(&fs, "cold.md");
    let mut last = 0.0;
    for _ in 0..10 {
        visit(&fs, &clock, hot, 60_000);
        let h = heat(&fs, hot);
        assert!(h > last, "heat {h} did not rise above {last}");
        last = h;
    }
    // Ten one-minute reads: score ~20 with the day's small decay, heat ~0.86.
    assert!((0.84..0.87).contains(&last), "{last}");
    assert!(heat(&fs, cold).abs() < f64::EPSILON, "a file never opened has no heat");
    let agg = fs.vault().attention_of(indras_artifacts::NodeId(hot)).unwrap().unwrap();
    assert_eq!(agg.opens, 10);
    assert_eq!(agg.dwell_ms, 600_000);

    clock.advance_ms(86_400_000);
    let a_day_later = heat(&fs, hot);
    assert!(a_day_later < last, "{a_day_later} >= {last}");
    clock.advance_ms(6 * 86_400_000);
    let a_week_later = heat(&fs, hot);
    assert!(a_week_later < 0.2 && a_week_later > 0.0, "{a_week_later}");

    // heat.json lists the hot file and not the cold one, and parses.
    let o = fs.open(Ctx::default(), inode::HEAT_JSON, libc::O_RDONLY).unwrap();
    let text = fs.read(inode::HEAT_JSON, o.fh, 0, 1 << 20).unwrap();
    fs.release(o.fh).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("\"vault/hot.md\""), "{text}");
    assert!(!text.contains("cold.md"), "{text}");
    assert!(text.contains("\"opens\": 10"), "{text}");
}

#[test]
fn heat_survives_remount_and_event_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let ino;
    let before;
    {
        let fs = fs_with_clock(dir.path(), clock.clone(), true);
        ino = file(&fs, "f.md");
        for _ in 0..3 {
            visit(&fs, &clock, ino, 5_000);
        }
        before = heat(&fs, ino);
        fs.commit_all().unwrap();
    }
    let fs = fs_with_clock(dir.path(), clock.clone(), true);
    assert!((heat(&fs, ino) - before).abs() < 1e-9);
    let n = fs.vault().event_count().unwrap();
    assert_eq!(n, 6, "three opens and three closes");
    fs.vault().prune_events(u64::MAX, indras_artifacts::Commit::CrashConsistent).unwrap();
    assert_eq!(fs.vault().event_count().unwrap(), 0);
    assert!((heat(&fs, ino) - before).abs() < 1e-9, "heat must not depend on retained events");
}

#[test]
fn attention_off_records_nothing_and_indra_files_record_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let fs = fs_with_clock(dir.path(), clock.clone(), false);
    let ino = file(&fs, "f.md");
    visit(&fs, &clock, ino, 1000);
    fs.commit_all().unwrap();
    assert_eq!(fs.vault().event_count().unwrap(), 0);
    drop(fs);
    let fs = fs_with_clock(dir.path(), clock.clone(), true);
    for v in [
        inode::HEAT_JSON,
        inode::HEAT_HTML,
        inode::ATTENTION_LOG,
        inode::STATUS_JSON,
        inode::PLAYER_JSON,
    ] {
        let o = fs.open(Ctx::default(), v, libc::O_RDONLY).unwrap();
        fs.release(o.fh).unwrap();
    }
    fs.commit_all().unwrap();
    assert_eq!(fs.vault().event_count().unwrap(), 0, "opening .indra files is not attention");
}

#[test]
fn tree_type_xattr_reads_and_writes_and_computed_ones_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_millis(T0)));
    let fs = fs_with_clock(dir.path(), clock, true);
    let d = fs.mkdir(Ctx::default(), inode::VAULT, b"gallery", 0o755).unwrap();
    assert_eq!(fs.getxattr(d.ino, b"user.indra.tree_type").unwrap(), b"Gallery");
    assert!(fs.listxattr(d.ino).unwrap().is_empty(), "the type its name implies is not listed");
    fs.setxattr(d.ino, b"indra.tree_type", b"Story", 0).unwrap();
    assert_eq!(fs.getxattr(d.ino, b"user.indra.tree_type").unwrap(), b"Story");
    assert_eq!(
        fs.setxattr(d.ino, b"user.indra.tree_type", b"Nope", 0).unwrap_err().errno,
        libc::EINVAL
    );
    let f = file(&fs, "x.md");
    assert_eq!(fs.setxattr(f, b"user.indra.heat", b"1", 0).unwrap_err().errno, libc::EPERM);
    assert_eq!(fs.removexattr(f, b"user.indra.id").unwrap_err().errno, libc::EPERM);
    assert_eq!(fs.getxattr(f, b"user.indra.tree_type").unwrap_err().errno, libc::ENODATA);
    let id = String::from_utf8(fs.getxattr(f, b"user.indra.id").unwrap()).unwrap();
    assert_eq!(id, blake3::hash(b"content").to_hex().as_str());
    assert_eq!(fs.getxattr(f, b"user.indra.access_mode").unwrap(), b"steward");
    let steward = String::from_utf8(fs.getxattr(f, b"user.indra.steward").unwrap()).unwrap();
    assert_eq!(steward, fs.vault().player().to_string());
    // Only a tree type set apart from the name is listed; removing it goes back to the name's.
    assert_eq!(fs.listxattr(d.ino).unwrap(), b"user.indra.tree_type\0");
    assert!(fs.listxattr(f).unwrap().is_empty());
    fs.removexattr(d.ino, b"user.indra.tree_type").unwrap();
    assert_eq!(fs.getxattr(d.ino, b"user.indra.tree_type").unwrap(), b"Gallery");
    assert!(fs.listxattr(d.ino).unwrap().is_empty());
    assert_eq!(fs.removexattr(f, b"user.indra.tree_type").unwrap_err().errno, libc::ENODATA);
    // A renamed folder keeps its type, now apart from its new name's: listed until removed.
    fs.rename(inode::VAULT, b"gallery", inode::VAULT, b"pictures", 0).unwrap();
    assert_eq!(fs.listxattr(d.ino).unwrap(), b"user.indra.tree_type\0");
    fs.removexattr(d.ino, b"indra.tree_type").unwrap();
    assert_eq!(fs.getxattr(d.ino, b"user.indra.tree_type").unwrap(), b"Collection");
}
