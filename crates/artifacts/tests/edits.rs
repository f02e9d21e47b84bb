//! Edits of large payloads (`Vault::stage_edit`) give exactly what staging the whole new
//! content gives: the same id (the BLAKE3 hash) and the same chunks, so dedup never depends on
//! how a file was written.

mod common;

use common::{bytes, now, open, put};
use indras_artifacts::{Commit, FsckOptions, GROUP, INLINE_MAX, Keep, NodeId, Vault};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Write(u64, usize, u64),
    Truncate(u64),
}

/// Applies `ops` to `base` and returns the new content with the edit's description:
/// the visible base length and the written ranges.
fn apply(base: &[u8], ops: &[Op]) -> (Vec<u8>, u64, Vec<(u64, u64)>) {
    let mut model = base.to_vec();
    let mut base_len = base.len() as u64;
    let mut written: Vec<(u64, u64)> = Vec::new();
    for op in ops {
        match *op {
            Op::Write(off, len, seed) => {
                let end = off as usize + len;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&bytes(seed, len));
                written.push((off, end as u64));
            }
            Op::Truncate(n) => {
                model.resize(n as usize, 0);
                base_len = base_len.min(n);
                for w in &mut written {
                    w.1 = w.1.min(n);
                }
                written.retain(|w| w.0 < w.1);
            }
        }
    }
    written.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (s, e) in written {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    (model, base_len, merged)
}

fn edit(
    v: &Vault,
    base: &indras_artifacts::Hash,
    base_len: u64,
    written: &[(u64, u64)],
    model: &[u8],
) -> indras_artifacts::StagedLeaf {
    let mut read = |off: u64, buf: &mut [u8]| -> std::io::Result<()> {
        buf.copy_from_slice(&model[off as usize..off as usize + buf.len()]);
        Ok(())
    };
    v.stage_edit(base, base_len, written, model.len() as u64, &mut read).expect("edit")
}

fn op(max: u64) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..max, 1usize..100_000, any::<u64>()).prop_map(|(o, n, s)| Op::Write(o, n, s)),
        1 => (INLINE_MAX as u64 + 1..max + 200_000).prop_map(Op::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    #[test]
    fn an_edit_equals_staging_the_whole_content(
        size in (INLINE_MAX as u64 + 1)..3_000_000,
        ops in proptest::collection::vec(op(3_000_000), 1..6),
        twice in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let v = open(dir.path());
        let base = bytes(size, size as usize);
        let node = put(&v, "f", &base, Commit::CrashConsistent);
        let mut leaf = node.content.unwrap();
        let mut current = base;
        // A second edit starts from the first's tree, not from a fresh stream.
        for round in 0..if twice { 2 } else { 1 } {
            let (model, base_len, written) = apply(&current, &ops);
            prop_assume!(model.len() > INLINE_MAX);
            let edited = edit(&v, &leaf, base_len, &written, &model);
            let whole = v.stage(&model).unwrap();
            prop_assert_eq!(edited.hash, *blake3::hash(&model).as_bytes(), "round {}", round);
            prop_assert_eq!(edited.chunk_list(), whole.chunk_list());
            drop(whole);
            let node = v.set_content(node.id, &edited, now(), Commit::CrashConsistent).unwrap();
            leaf = node.content.unwrap();
            prop_assert!(v.read_all(&leaf).unwrap() == model);
            current = model;
        }
        v.gc(None, &mut |_| {}).unwrap();
        let report = v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap();
        prop_assert!(report.is_clean(), "{:?}", report.problems);
    }
}

/// The benchmark's case: 4 KiB overwrites inside a large file, each a new version. Each
/// version adds one or two chunks and shares every other segment with the one before.
#[test]
fn small_overwrites_of_a_large_file_share_almost_everything() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    v.set_keep(Keep::none());
    let size = 64 << 20;
    let mut model = bytes(1, size);
    let node = put(&v, "big", &model, Commit::CrashConsistent);
    let mut leaf = node.content.unwrap();
    let before = v.stats().unwrap();
    for i in 0..50u64 {
        let off = (i * 7919 * 4096) % (size as u64 - 4096);
        model[off as usize..off as usize + 4096].copy_from_slice(&bytes(100 + i, 4096));
        let staged = edit(&v, &leaf, size as u64, &[(off, off + 4096)], &model);
        assert_eq!(staged.hash, *blake3::hash(&model).as_bytes());
        leaf = v
            .set_content(node.id, &staged, now(), Commit::CrashConsistent)
            .unwrap()
            .content
            .unwrap();
    }
    let after = v.stats().unwrap();
    assert!(after.chunks - before.chunks <= 50 * 3, "{} new chunks", after.chunks - before.chunks);
    assert!(v.read_all(&leaf).unwrap() == model);
    // Old versions go with GC: what is left is exactly one version's bytes.
    v.gc(None, &mut |_| {}).unwrap();
    let report = v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(v.stats().unwrap().chunk_bytes, size as u64);
    let node = v.lookup(NodeId::ROOT, b"big").unwrap();
    assert_eq!(node.content, Some(leaf));
}

const LEAF_SEGMENTS: redb::TableDefinition<&[u8; 32], &[u8]> =
    redb::TableDefinition::new("leaf_segments_v2");
const SEGMENT_RUNS: redb::TableDefinition<&[u8; 32], &[u8]> =
    redb::TableDefinition::new("segment_runs_v1");

/// The stored runs of a closed store, and the run ids `leaf`'s row names.
fn runs_of(dir: &std::path::Path, leaf: &indras_artifacts::Hash) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    use redb::{ReadableDatabase, ReadableTable};
    let db = redb::Database::open(dir.join("meta.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let stored = txn
        .open_table(SEGMENT_RUNS)
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| *r.unwrap().0.value())
        .collect();
    let row = txn.open_table(LEAF_SEGMENTS).unwrap().get(leaf).unwrap().unwrap().value().to_vec();
    assert_eq!(row.len() % 40, 1, "a long list is stored as runs");
    let named = row[1..].chunks_exact(40).map(|e| e[..32].try_into().unwrap()).collect();
    (stored, named)
}

/// A long segment list (a 96 MiB file has about 48 segments) is stored as runs: a small edit
/// writes one or two new runs and shares the rest, a reopened store reads every version
/// through them, GC sweeps the runs only old versions named, and fsck reports a lost run.
#[test]
fn long_segment_lists_are_stored_as_shared_runs() {
    let dir = tempfile::tempdir().unwrap();
    let size = 96 << 20;
    let old = bytes(60, size);
    let mut new = old.clone();
    new[50 << 20..(50 << 20) + 4096].copy_from_slice(&bytes(61, 4096));
    let (old_leaf, new_leaf) = {
        let v = open(dir.path());
        v.set_keep(Keep::none());
        let node = put(&v, "big", &old, Commit::Durable);
        put(&v, "copy", &old, Commit::Durable);
        let old_leaf = node.content.unwrap();
        let off = 50u64 << 20;
        let staged = edit(&v, &old_leaf, size as u64, &[(off, off + 4096)], &new);
        let node = v.set_content(node.id, &staged, now(), Commit::Durable).unwrap();
        (old_leaf, node.content.unwrap())
    };
    let (stored, old_runs) = runs_of(dir.path(), &old_leaf);
    let (_, new_runs) = runs_of(dir.path(), &new_leaf);
    assert!(old_runs.len() >= 2, "{} runs", old_runs.len());
    let fresh = new_runs.iter().filter(|r| !old_runs.contains(r)).count();
    assert!((1..=2).contains(&fresh), "{fresh} of {} runs are new", new_runs.len());
    assert_eq!(stored.len(), old_runs.len() + fresh, "each run is stored once");

    // Read back through the runs, with nothing cached; then GC drops the old version's runs.
    {
        let v = open(dir.path());
        assert!(v.read_all(&old_leaf).unwrap() == old);
        assert!(v.read_all(&new_leaf).unwrap() == new);
        let copy = v.remove(NodeId::ROOT, b"copy", false, now(), Commit::Durable).unwrap();
        assert!(v.reap(copy.id, Commit::Durable).unwrap());
        let report = v.gc(None, &mut |_| {}).unwrap();
        assert_eq!(report.leaves_removed, 1, "{report:?}");
        let report = v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
    }
    let (mut stored, mut named) = runs_of(dir.path(), &new_leaf);
    stored.sort_unstable();
    named.sort_unstable();
    named.dedup();
    assert_eq!(stored, named, "GC keeps exactly the runs a stored list names");

    // A lost run: fsck names the leaf, and reading it is an error, not a shorter file.
    {
        let db = redb::Database::open(dir.path().join("meta.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(SEGMENT_RUNS).unwrap().remove(&named[0]).unwrap();
        txn.commit().unwrap();
    }
    let v = open(dir.path());
    let report = v.fsck(FsckOptions { deep: false, repair: false }, &mut |_| {}).unwrap();
    assert!(
        report.problems.iter().any(|p| p.to_string().contains("missing")),
        "{:?}",
        report.problems
    );
    assert!(v.read_all(&new_leaf).is_err());
}

/// An edit that finds no hash tree in memory (as after a remount) hashes the whole content
/// once, and the next edit starts from the tree that built.
#[test]
fn an_edit_after_reopening_rebuilds_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let size = 40 * GROUP as usize + 123;
    let mut model = bytes(9, size);
    let leaf = {
        let v = open(dir.path());
        put(&v, "f", &model, Commit::Durable).content.unwrap()
    };
    let v = open(dir.path());
    let node = v.lookup(NodeId::ROOT, b"f").unwrap();
    model[5..10].fill(1);
    let staged = edit(&v, &leaf, size as u64, &[(5, 10)], &model);
    assert_eq!(staged.hash, *blake3::hash(&model).as_bytes());
    let leaf =
        v.set_content(node.id, &staged, now(), Commit::CrashConsistent).unwrap().content.unwrap();
    model[size - 3..].fill(2);
    let staged = edit(&v, &leaf, size as u64, &[(size as u64 - 3, size as u64)], &model);
    assert_eq!(staged.hash, *blake3::hash(&model).as_bytes());
}

/// Where each chunk of a chunk list ends.
fn chunk_ends(list: &[(indras_artifacts::Hash, u32)]) -> Vec<u64> {
    list.iter()
        .scan(0u64, |end, (_, len)| {
            *end += u64::from(*len);
            Some(*end)
        })
        .collect()
}

/// A vault holding `size` bytes of `bytes(seed, ..)` as the file "f": the vault (and the dir
/// it lives in), the file's leaf, its content, and where its chunks end.
fn stored(
    seed: u64,
    size: usize,
) -> (tempfile::TempDir, Vault, indras_artifacts::Hash, Vec<u8>, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let base = bytes(seed, size);
    let leaf = put(&v, "f", &base, Commit::CrashConsistent).content.unwrap();
    let ends = chunk_ends(v.stage(&base).unwrap().chunk_list());
    (dir, v, leaf, base, ends)
}

/// A cut survives an edit only when no byte it depends on changed: the 64 bytes before it and
/// the byte after it. Edits at and around old cuts must give exactly the chunks of staging the
/// whole new content (an edit reads only the old chunk when the cut is known to hold).
#[test]
fn edits_next_to_a_cut_move_it_exactly_as_a_fresh_cut_would() {
    let size = 3 << 20;
    let (_dir, v, leaf, base, ends) = stored(77, size);
    let cuts: Vec<u64> = ends.into_iter().filter(|&end| end < size as u64).take(12).collect();
    assert!(cuts.len() >= 8, "the payload has enough cuts");
    let mut moved = 0;
    for (k, &cut) in cuts.iter().enumerate() {
        for at in [cut - 65, cut - 64, cut - 48, cut - 32, cut - 16, cut - 3, cut - 1, cut, cut + 1]
        {
            let mut model = base.clone();
            model[at as usize] ^= 0x5a + k as u8;
            let edited = edit(&v, &leaf, size as u64, &[(at, at + 1)], &model);
            let whole = v.stage(&model).unwrap();
            assert_eq!(edited.hash, *blake3::hash(&model).as_bytes());
            let chunks = whole.chunk_list();
            assert_eq!(
                edited.chunk_list(),
                chunks,
                "a byte changed at {at}, next to the cut at {cut}"
            );
            moved += usize::from(!chunk_ends(chunks).contains(&cut));
        }
    }
    // The test means something only if some of these edits moved a cut.
    assert!(moved > 0, "no edit moved a cut");
}

/// A changed byte can make a cut appear up to 63 bytes after it (a cut test reads the 64
/// bytes before its position), even where the old chunk's cut still holds: an edit must test
/// those positions, not only the changed ones. Both kinds of change are searched for, one
/// that makes `FastCDC` cut 2 to 63 bytes past it: a written byte, and a truncation inside the
/// last chunk followed by an extension back to the old size (zeros, with nothing written).
#[test]
fn a_cut_a_change_makes_just_past_it_is_found() {
    use indras_artifacts::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN};
    let size = 3 << 20;
    let (_dir, v, leaf, base, ends) = stored(31, size);
    let first_cut = |data: &[u8]| {
        fastcdc::v2020::FastCDC::new(data, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
            .next()
            .map_or(data.len(), |c| c.length)
    };
    // The first position `x` in chunk [s, e) whose change (by `change`) makes a cut 2 to 63
    // bytes past it, with the changed content.
    let search = |s: usize, e: usize, change: &dyn Fn(&mut Vec<u8>, usize)| {
        (s + CHUNK_MIN..e - 64).find_map(|x| {
            let mut model = base.clone();
            change(&mut model, x);
            let p = s + first_cut(&model[s..(s + CHUNK_MAX).min(size)]);
            (x + 2..=x + 63).contains(&p).then_some((x, model))
        })
    };
    let written = ends
        .windows(2)
        .filter(|p| p[1] - p[0] > CHUNK_MIN as u64 + 4096)
        .find_map(|p| search(p[0] as usize, p[1] as usize, &|m, x| m[x] ^= 0x81));
    let (x, model) = written.expect("some byte's change makes a cut just past it");
    let edited = edit(&v, &leaf, size as u64, &[(x as u64, x as u64 + 1)], &model);
    assert_eq!(edited.hash, *blake3::hash(&model).as_bytes());
    assert_eq!(edited.chunk_list(), v.stage(&model).unwrap().chunk_list(), "byte {x}");
    // The last chunk: truncated at `x`, then extended back to `size` with zeros.
    let last = ends[ends.len() - 2] as usize;
    let zeroed = |m: &mut Vec<u8>, x: usize| m[x..].fill(0);
    let (x, model) = search(last, size, &zeroed).expect("some truncation makes a cut just past it");
    let edited = edit(&v, &leaf, x as u64, &[], &model);
    assert_eq!(edited.hash, *blake3::hash(&model).as_bytes());
    assert_eq!(edited.chunk_list(), v.stage(&model).unwrap().chunk_list(), "truncated at {x}");
}
