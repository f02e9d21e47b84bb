//! Payload round trips at the boundary sizes, dedup, and integrity checking.

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::{bytes, disk_bytes, get, now, open_without_history as open, put};
use indras_artifacts::{
    CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, Commit, Error, FsckOptions, INLINE_MAX, NodeId, Problem,
};

const MIB: usize = 1 << 20;

/// The sizes where behaviour changes: empty, tiny, around the inline threshold, around one
/// chunk, many chunks.
const INTERESTING_SIZES: &[usize] = &[
    0,
    1,
    INLINE_MAX - 1,
    INLINE_MAX,
    INLINE_MAX + 1,
    CHUNK_MIN + 1,
    CHUNK_AVG,
    CHUNK_MAX - 1,
    CHUNK_MAX,
    CHUNK_MAX + 1,
    3 * CHUNK_MAX + 12_345,
    8 * MIB + 7,
];

#[test]
fn round_trip_at_interesting_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    for (i, &size) in INTERESTING_SIZES.iter().enumerate() {
        let content = bytes(i as u64, size);
        let name = format!("f{i}");
        let node = put(&v, &name, &content, Commit::CrashConsistent);
        let leaf = node.content.unwrap();
        assert_eq!(&leaf, blake3::hash(&content).as_bytes(), "leaf id is blake3 at {size}");
        assert_eq!(node.size, size as u64);
        assert!(get(&v, &name) == content, "round trip at {size}");
        // Random access inside and across chunk boundaries.
        for off in [0, 1, size / 3, size.saturating_sub(1), size, size + 10] {
            let mut buf = vec![0u8; 70_000];
            let n = v.read_at(&leaf, off as u64, &mut buf).unwrap();
            let want = &content[off.min(size)..(off + buf.len()).min(size)];
            assert!(
                &buf[..n] == want,
                "read_at {off} of {size}: got {n} bytes, want {}",
                want.len()
            );
        }
    }
    // Everything survives a reopen.
    drop(v);
    let v = open(dir.path());
    for (i, &size) in INTERESTING_SIZES.iter().enumerate() {
        assert!(get(&v, &format!("f{i}")) == bytes(i as u64, size), "after reopen at {size}");
    }
    assert!(v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap().is_clean());
}

#[test]
fn streams_100_mib_without_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let mut w = v.payload_writer();
    let mut hasher = blake3::Hasher::new();
    let block = bytes(7, MIB);
    for i in 0..100u8 {
        let mut b = block.clone();
        b[0] = i;
        hasher.update(&b);
        w.write_all(&b).unwrap();
    }
    let staged = w.finish().unwrap();
    assert_eq!(&staged.hash, hasher.finalize().as_bytes());
    assert_eq!(staged.size, 100 * MIB as u64);
    let node = v
        .create(
            NodeId::ROOT,
            b"big",
            &indras_artifacts::NewNode::file(0o644),
            Some(staged),
            now(),
            Commit::Durable,
        )
        .unwrap();
    let mut r = v.leaf_reader(&node.content.unwrap()).unwrap();
    let mut check = blake3::Hasher::new();
    let mut buf = vec![0u8; 3 * MIB + 5];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        check.update(&buf[..n]);
    }
    assert_eq!(check.finalize().as_bytes(), &node.content.unwrap());
}

/// The leaf id is what `b3sum` prints for the same bytes.
#[test]
fn leaf_id_matches_b3sum() {
    let Ok(out) = Command::new("b3sum").arg("--version").output() else {
        assert!(std::env::var_os("CI").is_none(), "b3sum must be installed in CI");
        eprintln!("b3sum not installed; skipping");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    for (i, &size) in [0, 1, INLINE_MAX + 1, 2 * MIB].iter().enumerate() {
        let content = bytes(100 + i as u64, size);
        let file = dir.path().join(format!("plain{i}"));
        std::fs::write(&file, &content).unwrap();
        let out = Command::new("b3sum").arg("--no-names").arg(&file).output().unwrap();
        let printed = String::from_utf8(out.stdout).unwrap();
        let node = put(&v, &format!("x{i}"), &content, Commit::CrashConsistent);
        assert_eq!(printed.trim(), indras_artifacts::hex(&node.content.unwrap()));
    }
}

#[test]
fn identical_content_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let content = bytes(1, 4 * MIB);
    put(&v, "a", &content, Commit::Durable);
    let one = v.stats().unwrap();
    for i in 0..5 {
        put(&v, &format!("copy{i}"), &content, Commit::CrashConsistent);
    }
    let six = v.stats().unwrap();
    assert_eq!(six.leaves, one.leaves, "one leaf for six identical files");
    assert_eq!(six.chunks, one.chunks);
    assert_eq!(six.chunk_bytes, one.chunk_bytes);
    assert_eq!(six.files, one.files + 5);
    // Small identical files share one inline payload too.
    put(&v, "s1", b"same", Commit::CrashConsistent);
    put(&v, "s2", b"same", Commit::CrashConsistent);
    assert_eq!(v.stats().unwrap().leaves, six.leaves + 1);
}

#[test]
fn one_byte_overwrite_in_64_mib_adds_under_1_mib() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let mut content = bytes(2, 64 * MIB);
    put(&v, "big", &content, Commit::Durable);
    let before = v.stats().unwrap();
    let disk_before = disk_bytes(&dir.path().join("packs"));
    content[32 * MIB + 17] ^= 0xff;
    put(&v, "big", &content, Commit::Durable);
    let after = v.stats().unwrap();
    let disk_after = disk_bytes(&dir.path().join("packs"));
    let added = after.chunk_bytes - before.chunk_bytes;
    assert!(added < MIB as u64, "1-byte edit added {added} bytes of chunks");
    assert!(disk_after - disk_before < MIB as u64, "disk grew by {}", disk_after - disk_before);
    assert_eq!(get(&v, "big"), content);
    // The old version is garbage now; GC takes it back to about one copy.
    let report = v.gc(None, &mut |_| {}).unwrap();
    assert_eq!(report.leaves_removed, 1);
    assert!(report.chunks_removed >= 1);
    let gcd = v.stats().unwrap();
    assert!(gcd.chunk_bytes <= before.chunk_bytes + MIB as u64);
    assert!(v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap().is_clean());
}

/// The one pack file of a store that has written only a little.
fn only_pack(dir: &std::path::Path) -> std::path::PathBuf {
    let packs: Vec<_> =
        std::fs::read_dir(dir.join("packs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(packs.len(), 1, "{packs:?}");
    packs[0].clone()
}

#[test]
fn corrupt_chunk_is_an_integrity_error_and_fsck_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let content = bytes(3, 2 * MIB);
    {
        let v = open(dir.path());
        put(&v, "f", &content, Commit::Durable);
    }
    // One flipped bit in the first chunk (which starts the pack).
    let pack = only_pack(dir.path());
    let mut data = std::fs::read(&pack).unwrap();
    data[100] ^= 1;
    std::fs::write(&pack, &data).unwrap();
    let first = fastcdc::v2020::FastCDC::new(&content, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
        .next()
        .map(|c| *blake3::hash(&content[..c.length]).as_bytes())
        .unwrap();

    let v = open(dir.path());
    let leaf = v.lookup(NodeId::ROOT, b"f").unwrap().content.unwrap();
    match v.read_all(&leaf) {
        Err(Error::Integrity { chunk, .. }) => assert_eq!(chunk, first),
        other => panic!("expected an integrity error, got {other:?}"),
    }
    let report = v.fsck(FsckOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(report.problems, vec![Problem::CorruptChunk(first)]);
    // Repair quarantines the chunk; reads now fail as missing rather than corrupt ...
    let repaired = v.fsck(FsckOptions { deep: false, repair: true }, &mut |_| {}).unwrap();
    assert!(!repaired.repaired.is_empty());
    assert!(matches!(v.read_all(&leaf), Err(Error::MissingChunk { .. })));
    // ... until the same content is written again, which heals the leaf.
    put(&v, "g", &content, Commit::Durable);
    assert_eq!(v.read_all(&leaf).unwrap(), content);
    assert!(v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap().is_clean());
}

#[test]
fn missing_chunk_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let v = open(dir.path());
        put(&v, "f", &bytes(4, MIB), Commit::Durable);
    }
    // The pack loses its tail, as if a write never reached the disk.
    let pack = only_pack(dir.path());
    std::fs::OpenOptions::new().write(true).open(&pack).unwrap().set_len(1000).unwrap();
    let v = open(dir.path());
    let leaf = v.lookup(NodeId::ROOT, b"f").unwrap().content.unwrap();
    assert!(matches!(v.read_all(&leaf), Err(Error::MissingChunk { .. })));
    let report = v.fsck(FsckOptions::default(), &mut |_| {}).unwrap();
    assert!(report.problems.iter().any(|p| matches!(p, Problem::MissingChunk(_))));
}

#[test]
fn gc_reclaims_unreferenced_payloads_and_stray_files() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    put(&v, "keep", &bytes(5, MIB), Commit::Durable);
    put(&v, "small", b"tiny payload", Commit::Durable);
    put(&v, "gone", &bytes(6, MIB), Commit::Durable);
    for name in [&b"gone"[..], b"small"] {
        let node = v.remove(NodeId::ROOT, name, false, now(), Commit::Durable).unwrap();
        assert_eq!(node.nlink, 0);
        assert!(v.reap(node.id, Commit::CrashConsistent).unwrap());
    }
    // A writer abandoned mid-way leaves chunk bytes nothing names, and something that is not
    // a pack lands in the pack directory.
    let mut w = v.payload_writer();
    w.write_all(&bytes(7, MIB)).unwrap();
    drop(w);
    std::fs::write(dir.path().join("packs/notes.txt"), b"not a pack").unwrap();
    let before = disk_bytes(&dir.path().join("packs"));
    let report = v.gc(None, &mut |_| {}).unwrap();
    assert_eq!(report.leaves_removed, 2, "{report:?}");
    assert!(report.inline_bytes_freed >= 12);
    assert_eq!(report.stray_files_removed, 1);
    // What is left is the kept file, give or take the blocks its chunks share with dead ones.
    let after = disk_bytes(&dir.path().join("packs"));
    assert!(after < before - 3 * MIB as u64 / 2, "{before} -> {after}");
    assert!(after <= MIB as u64 + 64 * 1024, "{after}");
    assert_eq!(get(&v, "keep"), bytes(5, MIB));
    assert!(v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap().is_clean());
}

/// `collect` (what the mount runs periodically) keeps leaves unreferenced for less than the
/// grace period, and collects them once it is over; with nothing unreferenced it does nothing.
#[test]
fn collect_honours_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    assert_eq!(v.collect(None).unwrap(), indras_artifacts::GcReport::default());
    put(&v, "f", &bytes(1, MIB), Commit::CrashConsistent);
    put(&v, "f", &bytes(2, MIB), Commit::CrashConsistent);
    let an_hour_ago = indras_artifacts::Timestamp { secs: now().secs - 3600, nanos: 0 };
    assert_eq!(v.collect(Some(an_hour_ago)).unwrap().leaves_removed, 0);
    assert_eq!(v.stats().unwrap().unreferenced_leaves, 1);
    let report = v.collect(None).unwrap();
    assert_eq!(report.leaves_removed, 1, "{report:?}");
    assert!(report.chunk_bytes_freed >= MIB as u64 - 300_000, "{report:?}");
    assert_eq!(get(&v, "f"), bytes(2, MIB));
    assert!(v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap().is_clean());
}

#[test]
fn abandoned_payloads_leave_no_files_and_shared_chunks_stay() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let keep = bytes(8, 2 * MIB);
    put(&v, "keep", &keep, Commit::Durable);
    let pack_bytes = || disk_bytes(&dir.path().join("packs"));
    let before = pack_bytes();
    // A staged payload dropped without a commit, and an import dropped before `finish`.
    drop(v.stage(&bytes(9, 3 * MIB)).unwrap());
    let mut w = v.payload_writer();
    w.write_all(&bytes(10, 2 * MIB)).unwrap();
    drop(w);
    // A staged copy of content that is committed elsewhere shares its chunks.
    drop(v.stage(&keep).unwrap());
    assert!(pack_bytes() > before);
    let removed = v.reclaim_abandoned().unwrap();
    assert!(removed > 0);
    assert_eq!(pack_bytes(), before, "only the committed payload's chunks take room");
    assert_eq!(get(&v, "keep"), keep);
    assert!(v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap().is_clean());
}

/// A long stream goes through the writer's hasher thread: what it has taken reads back while
/// it streams, it gives exactly what staging the whole content gives, and dropped unfinished
/// it leaves no bytes behind.
#[test]
fn a_long_stream_reads_back_while_streaming_and_leaves_nothing_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let data = bytes(70, 12 * MIB + 321);
    let mut w = v.payload_writer();
    for (i, block) in data.chunks(MIB - 7).enumerate() {
        w.write_all(block).unwrap();
        let written = ((i + 1) * (MIB - 7)).min(data.len());
        for at in [0, written / 2, written.saturating_sub(300)] {
            let mut got = vec![0u8; 300];
            let n = w.read_at(at as u64, &mut got).unwrap();
            assert_eq!(n, 300.min(written - at), "at {at} of {written}");
            assert!(got[..n] == data[at..at + n], "at {at} of {written}");
        }
    }
    let streamed = w.finish().unwrap();
    let whole = v.stage(&data).unwrap();
    assert_eq!(streamed.hash, *blake3::hash(&data).as_bytes());
    assert_eq!(streamed.chunk_list(), whole.chunk_list());
    drop((streamed, whole));

    let pack_bytes = || disk_bytes(&dir.path().join("packs"));
    v.reclaim_abandoned().unwrap();
    let before = pack_bytes();
    let mut w = v.payload_writer();
    for block in bytes(71, 10 * MIB).chunks(MIB) {
        w.write_all(block).unwrap();
    }
    drop(w);
    assert!(v.reclaim_abandoned().unwrap() > 0);
    assert_eq!(pack_bytes(), before, "a dropped stream leaves no bytes");
    assert!(v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap().is_clean());
}

/// Chunks fill packs one after another; a full GC deletes the packs whose chunks all died and
/// punches the dead chunks out of the others.
#[test]
fn full_packs_roll_over_and_dead_packs_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let opts = indras_artifacts::Options { pack_bytes: Some(MIB as u64), ..Default::default() };
    let v = common::open_with(dir.path(), &opts).unwrap();
    v.set_keep(indras_artifacts::Keep::none());
    for i in 0..6u8 {
        put(&v, &format!("f{i}"), &bytes(20 + u64::from(i), 3 * MIB / 2), Commit::Durable);
    }
    let packs = || std::fs::read_dir(dir.path().join("packs")).unwrap().count();
    let before = packs();
    assert!(before >= 9, "{before} packs for 9 MiB in 1 MiB packs");
    for i in 0..4u8 {
        let node =
            v.remove(NodeId::ROOT, format!("f{i}").as_bytes(), false, now(), Commit::Durable);
        assert!(v.reap(node.unwrap().id, Commit::Durable).unwrap());
    }
    let report = v.gc(None, &mut |_| {}).unwrap();
    assert!(report.packs_removed >= 4, "{report:?}");
    assert_eq!(packs() as u64, before as u64 - report.packs_removed);
    let on_disk = disk_bytes(&dir.path().join("packs"));
    assert!(on_disk <= 3 * MIB as u64 + 64 * 4096, "{on_disk} bytes for 3 MiB of live chunks");
    for i in 4..6u8 {
        assert_eq!(get(&v, &format!("f{i}")), bytes(20 + u64::from(i), 3 * MIB / 2));
    }
    assert!(v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap().is_clean());
    // Reopened, the store appends to its last pack, and old packs stay readable.
    drop(v);
    let v = common::open_with(dir.path(), &opts).unwrap();
    v.set_keep(indras_artifacts::Keep::none());
    put(&v, "g", &bytes(30, MIB), Commit::Durable);
    assert_eq!(get(&v, "f5"), bytes(25, 3 * MIB / 2));
    assert_eq!(get(&v, "g"), bytes(30, MIB));
    assert!(v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap().is_clean());
}

/// Each durable commit hands appends to the other of two packs, so that syncing one never
/// holds up appends to it; a reopened store goes on with the same two, and GC keeps both
/// even when nothing in them is live.
#[test]
fn durable_commits_take_turns_between_two_packs() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = || -> Vec<u64> {
        let mut packs: Vec<_> = std::fs::read_dir(dir.path().join("packs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        packs.sort();
        packs.iter().map(|p| std::fs::metadata(p).unwrap().len()).collect()
    };
    let v = open(dir.path());
    put(&v, "a", &bytes(40, MIB), Commit::Durable);
    let one = sizes();
    assert_eq!(one.len(), 1, "{one:?}");
    put(&v, "b", &bytes(41, MIB), Commit::Durable);
    let two = sizes();
    assert_eq!(two.len(), 2, "the second payload goes to a second pack: {two:?}");
    assert_eq!(two[0], one[0]);
    put(&v, "c", &bytes(42, MIB), Commit::Durable);
    let three = sizes();
    assert!(three[0] > two[0] && three[1] == two[1], "the third goes to the first: {three:?}");
    drop(v);
    let v = open(dir.path());
    put(&v, "d", &bytes(43, MIB), Commit::Durable);
    put(&v, "e", &bytes(44, MIB), Commit::Durable);
    let after = sizes();
    assert_eq!(after.len(), 2, "a reopened store appends to both packs: {after:?}");
    assert!(after[0] > three[0] && after[1] > three[1], "{after:?}");
    for name in ["a", "b", "c", "d", "e"] {
        let node = v.remove(NodeId::ROOT, name.as_bytes(), false, now(), Commit::Durable);
        assert!(v.reap(node.unwrap().id, Commit::Durable).unwrap());
    }
    let report = v.gc(None, &mut |_| {}).unwrap();
    assert_eq!(report.packs_removed, 0, "{report:?}");
    assert_eq!(sizes().len(), 2);
    assert_eq!(disk_bytes(&dir.path().join("packs")), 0, "every dead chunk is punched out");
    put(&v, "f", &bytes(45, MIB), Commit::Durable);
    assert_eq!(get(&v, "f"), bytes(45, MIB));
    assert!(v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap().is_clean());
}

/// Two writers stage the same new content at once: the second finds the first's chunks and
/// appends nothing. Whichever of them is dropped uncommitted, and whenever the abandoned
/// ranges are reclaimed, the bytes the other one commits stay intact.
#[test]
fn writers_sharing_new_chunks_never_lose_them() {
    for first_commits in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let v = open(dir.path());
        let content = bytes(40, 3 * MIB);
        let packs = || disk_bytes(&dir.path().join("packs"));
        let a = v.stage(&content).unwrap();
        let after_a = packs();
        let b = v.stage(&content).unwrap();
        assert_eq!(packs(), after_a, "the second staging appends nothing");
        let (keep, drop_it) = if first_commits { (a, b) } else { (b, a) };
        drop(drop_it);
        v.reclaim_abandoned().unwrap();
        let now = now();
        let spec = indras_artifacts::NewNode::file(0o644);
        v.create(NodeId::ROOT, b"f", &spec, Some(keep), now, Commit::Durable).unwrap();
        v.reclaim_abandoned().unwrap();
        assert_eq!(get(&v, "f"), content, "first_commits={first_commits}");
        assert_eq!(packs(), after_a);
        let report = v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        // And after a full GC (which sweeps every range no chunk owns), read from disk.
        v.gc(None, &mut |_| {}).unwrap();
        drop(v);
        let v = open(dir.path());
        assert_eq!(get(&v, "f"), content);
    }
}

/// `seek_data_or_hole` finds the runs of zero chunks a sparse payload is stored as: holes
/// before, between and after the data, the end as a hole, nothing past the end; a small
/// (inline) payload and one without long zero runs are all data.
#[test]
fn holes_are_the_runs_of_zero_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let mut content = vec![0u8; 48 * MIB];
    content[16 * MIB..16 * MIB + 5000].copy_from_slice(&bytes(1, 5000));
    content[30 * MIB..31 * MIB].copy_from_slice(&bytes(2, MIB));
    let leaf = put(&v, "sparse", &content, Commit::CrashConsistent).content.unwrap();
    let seek = |off: u64, data: bool| v.seek_data_or_hole(&leaf, off, data).unwrap();
    let size = content.len() as u64;
    let first = seek(0, true).unwrap();
    let after_first = seek(first, false).unwrap();
    assert!(first <= 16 * MIB as u64 && first + 2 * MIB as u64 > 16 * MIB as u64, "{first}");
    assert!(after_first >= 16 * MIB as u64 + 5000 && after_first < 30 * MIB as u64);
    let second = seek(after_first, true).unwrap();
    assert!(second <= 30 * MIB as u64 && second > after_first);
    let end = seek(second, false).unwrap();
    assert!(end >= 31 * MIB as u64 && end < size, "{end}");
    assert_eq!(seek(0, false), Some(0), "it starts with a hole");
    // Zeros shorter than a zero chunk (where a run ends at the payload's end) count as data.
    if let Some(tail) = seek(end, true) {
        assert!(tail >= size - CHUNK_MAX as u64, "{tail}");
        assert_eq!(seek(tail, false), Some(size));
    }
    assert_eq!(seek(size, false), None, "past the end");
    // What lies in a hole is zeros, and the data is where it was written.
    let mut check = vec![0u8; 4096];
    assert_eq!(v.read_at(&leaf, end, &mut check).unwrap(), 4096);
    assert!(check.iter().all(|b| *b == 0));

    let small = put(&v, "small", b"tiny", Commit::CrashConsistent).content.unwrap();
    assert_eq!(v.seek_data_or_hole(&small, 1, true).unwrap(), Some(1));
    assert_eq!(v.seek_data_or_hole(&small, 1, false).unwrap(), Some(4));
    let dense = put(&v, "dense", &bytes(3, 3 * MIB), Commit::CrashConsistent).content.unwrap();
    assert_eq!(v.seek_data_or_hole(&dense, 100, false).unwrap(), Some(3 * MIB as u64));
}

const ENOSPC: i32 = 28;

/// Refuses appends to a pack with `ENOSPC`: the next `refuse` of them (`u64::MAX`: all).
#[derive(Debug, Default)]
struct FullDisk {
    refuse: std::sync::atomic::AtomicU64,
}

impl FullDisk {
    fn set(&self, refuse: u64) {
        self.refuse.store(refuse, std::sync::atomic::Ordering::SeqCst);
    }
}

impl indras_artifacts::FaultInjector for FullDisk {
    fn check(&self, step: indras_artifacts::IoStep) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        if step != indras_artifacts::IoStep::WritePack {
            return Ok(());
        }
        let left = self.refuse.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
            0 => None,
            u64::MAX => Some(u64::MAX),
            n => Some(n - 1),
        });
        match left {
            Ok(_) => Err(std::io::Error::from_raw_os_error(ENOSPC)),
            Err(_) => Ok(()),
        }
    }
}

fn open_full(dir: &std::path::Path) -> (std::sync::Arc<FullDisk>, indras_artifacts::Vault) {
    let disk = std::sync::Arc::new(FullDisk::default());
    let opts = indras_artifacts::Options { faults: Some(disk.clone()), ..Default::default() };
    let v = common::open_with(dir, &opts).unwrap();
    v.set_keep(indras_artifacts::Keep::none());
    (disk.clone(), v)
}

/// A streaming write whose chunk the disk refuses: that write or a later one fails with
/// `ENOSPC`, every write after it and `finish` too (not `EIO` for a hash tree out of step
/// with the bytes counted), and a writer started once there is room again stores its payload.
/// Below and above the size where the writer hashes on its own thread.
#[test]
fn a_writer_refused_by_a_full_disk_fails_with_enospc_to_the_end() {
    for first in [MIB, 5 * MIB] {
        let dir = tempfile::tempdir().unwrap();
        let (disk, v) = open_full(dir.path());
        let mut w = v.payload_writer();
        w.write_all(&bytes(1, first)).unwrap();
        disk.set(u64::MAX);
        let mut refused = 0;
        for i in 0..64 {
            if let Err(e) = w.write_all(&bytes(2 + i, MIB)) {
                assert_eq!(e.raw_os_error(), Some(ENOSPC), "write {i}: {e}");
                refused += 1;
                if refused == 3 {
                    break;
                }
            }
        }
        assert_eq!(refused, 3, "64 MiB written to a full disk");
        let e = w.finish().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(ENOSPC), "finish after {first} bytes: {e}");
        disk.set(0);
        let content = bytes(100, 3 * MIB);
        let mut w = v.payload_writer();
        w.write_all(&content).unwrap();
        let staged = w.finish().unwrap();
        assert_eq!(staged.hash, *blake3::hash(&content).as_bytes());
        drop(staged);
        v.reclaim_abandoned().unwrap();
        assert!(v.fsck(FsckOptions::default(), &mut |_| {}).unwrap().is_clean());
    }
}

/// `make_room` takes every unreferenced leaf at once, whatever its age, and the abandoned
/// ranges; `unreferenced_bytes` follows the leaves in and out of the GC index.
#[test]
fn make_room_collects_everything_unreferenced_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    assert_eq!(v.unreferenced_bytes(), 0);
    put(&v, "f", &bytes(1, MIB), Commit::CrashConsistent);
    assert_eq!(v.unreferenced_bytes(), 0);
    put(&v, "f", &bytes(2, 2 * MIB), Commit::CrashConsistent);
    assert_eq!(v.unreferenced_bytes(), MIB as u64, "the first version");
    put(&v, "f", &bytes(1, MIB), Commit::CrashConsistent);
    assert_eq!(v.unreferenced_bytes(), 2 * MIB as u64, "the second version, the first back");
    put(&v, "small", b"tiny", Commit::CrashConsistent);
    let node = v.remove(NodeId::ROOT, b"small", false, now(), Commit::CrashConsistent).unwrap();
    assert!(v.reap(node.id, Commit::CrashConsistent).unwrap());
    assert_eq!(v.unreferenced_bytes(), 2 * MIB as u64 + 4);
    let mut w = v.payload_writer();
    w.write_all(&bytes(3, MIB)).unwrap();
    drop(w);
    let before = disk_bytes(&dir.path().join("packs"));
    let freed = v.make_room().unwrap();
    assert!(freed >= 3 * MIB as u64 - 300_000, "freed {freed}");
    assert_eq!(v.unreferenced_bytes(), 0);
    assert_eq!(v.stats().unwrap().unreferenced_leaves, 0);
    let after = disk_bytes(&dir.path().join("packs"));
    assert!(after + 5 * MIB as u64 / 2 <= before, "{before} -> {after}");
    assert_eq!(get(&v, "f"), bytes(1, MIB));
    assert_eq!(v.make_room().unwrap(), 0, "nothing left to free");
    assert!(v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap().is_clean());
    // Counted again from the tables at the next open.
    put(&v, "f", &bytes(4, MIB), Commit::Durable);
    drop(v);
    assert_eq!(open(dir.path()).unreferenced_bytes(), MIB as u64);
}

/// With `retry_appends_when_full`, an append that finds the disk full makes room and tries
/// once more: it goes through when room was made; with nothing to free it fails with
/// `ENOSPC`, and asked again at once, the store does not collect again.
#[test]
fn an_append_to_a_full_disk_makes_room_and_tries_again() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, v) = open_full(dir.path());
    let v = std::sync::Arc::new(v);
    v.retry_appends_when_full();
    put(&v, "f", &bytes(1, MIB), Commit::Durable);
    put(&v, "f", &bytes(2, MIB), Commit::Durable);
    assert_eq!(v.unreferenced_bytes(), MIB as u64);
    // One refusal: room is made (the old version goes) and the append is tried again.
    disk.set(1);
    let staged = v.stage(&bytes(3, 2 * MIB)).expect("room was made: the retried append succeeds");
    assert_eq!(v.unreferenced_bytes(), 0, "the old version went to make room");
    drop(staged);
    // Nothing left to free: the append fails, and the next one does not collect again.
    disk.set(u64::MAX);
    let e = v.stage(&bytes(4, MIB)).unwrap_err();
    assert!(e.is_no_space(), "{e}");
    assert!(!v.retry_when_full(), "a make_room that freed nothing, just now");
    disk.set(0);
    assert_eq!(get(&v, "f"), bytes(2, MIB));
}
