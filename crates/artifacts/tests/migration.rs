//! Older stores open as the current format (5), and nothing is lost (the move of format 4's
//! name-derived player id to a key is tested in `vault::migrate`):
//! - format 2 kept each chunk in a file of its own (`chunks/<xx>/<hex>`): the chunks move into
//!   packs and the files go;
//! - format 1 also kept one chunk-list row per chunk of every leaf: the lists become segments
//!   and chunk reference counts are recounted, then the chunks move as for format 2;
//! - format 3 differs only in having no segment runs: its flat lists stay as they are;
//! - format 7 has no history tables: it opens with no history;
//! - format 8's listing slots held names only: they are rebuilt with each entry's node and kind.

mod common;

use std::collections::HashMap;

use common::{bytes, get, open, put};
use indras_artifacts::{Commit, FsckOptions};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");
const CHUNKS: TableDefinition<&[u8; 32], (u32, u64)> = TableDefinition::new("chunks_v1");
type ChunkRow = (&'static [u8; 32], u32);
const LEAF_CHUNKS_V1: TableDefinition<(&[u8; 32], u64), ChunkRow> =
    TableDefinition::new("leaf_chunks_v1");
const LEAF_SEGMENTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("leaf_segments_v2");
const SEGMENTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("segments_v2");
type ChunkValue = (u32, u64, Option<(u32, u64)>);
const CHUNKS_V3: TableDefinition<&[u8; 32], ChunkValue> = TableDefinition::new("chunks_v3");

/// Rewrites a closed format 3 store into format 2's layout: every chunk in a file of its own.
fn unpack(dir: &std::path::Path) {
    let db = redb::Database::open(dir.join("meta.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let rows = txn.open_table(CHUNKS_V3).unwrap();
        let mut old = txn.open_table(CHUNKS).unwrap();
        for row in rows.iter().unwrap() {
            let (chunk, value) = row.unwrap();
            let (len, refs, place) = value.value();
            let (pack, offset) = place.unwrap();
            let pack = std::fs::read(dir.join(format!("packs/{pack:08x}.pack"))).unwrap();
            let name = indras_artifacts::hex(chunk.value());
            let shard = dir.join("chunks").join(&name[..2]);
            std::fs::create_dir_all(&shard).unwrap();
            let at = usize::try_from(offset).unwrap();
            std::fs::write(shard.join(&name), &pack[at..at + len as usize]).unwrap();
            old.insert(chunk.value(), (len, refs)).unwrap();
        }
        txn.open_table(META).unwrap().insert("format", 2u64.to_le_bytes().as_slice()).unwrap();
    }
    txn.delete_table(CHUNKS_V3).unwrap();
    txn.commit().unwrap();
    std::fs::remove_dir_all(dir.join("packs")).unwrap();
}

fn chunk_files(dir: &std::path::Path) -> usize {
    match std::fs::read_dir(dir.join("chunks")) {
        Err(_) => 0,
        Ok(shards) => shards.map(|s| std::fs::read_dir(s.unwrap().path()).unwrap().count()).sum(),
    }
}

/// Writes a store with three related large files and a small one, and closes it.
fn populate(dir: &std::path::Path) -> Vec<(&'static str, Vec<u8>)> {
    let big = bytes(1, 3 << 20);
    let mut similar = big.clone();
    similar[1_000_000..1_000_100].fill(7);
    let files =
        vec![("big", big.clone()), ("similar", similar), ("copy", big), ("small", bytes(2, 1000))];
    let v = open(dir);
    for (name, content) in &files {
        put(&v, name, content, Commit::Durable);
    }
    files
}

/// Opens a downgraded store and checks that every file reads back and fsck is clean.
fn check_migrated(dir: &std::path::Path, files: &[(&str, Vec<u8>)]) {
    let v = open(dir);
    for (name, content) in files {
        assert!(get(&v, name) == *content, "{name}");
    }
    let report = v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert!(!dir.join("chunks").exists(), "the chunk files are gone");
}

#[test]
fn a_format_2_store_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let files = populate(dir.path());
    unpack(dir.path());
    assert!(chunk_files(dir.path()) > 20);
    check_migrated(dir.path(), &files);
}

/// Rewrites a closed format 2 store (see `unpack`) into format 1's layout.
fn downgrade(dir: &std::path::Path) {
    let db = redb::Database::open(dir.join("meta.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let lists = txn.open_table(LEAF_SEGMENTS).unwrap();
        let segments = txn.open_table(SEGMENTS).unwrap();
        let mut rows = txn.open_table(LEAF_CHUNKS_V1).unwrap();
        let mut counts: HashMap<[u8; 32], u64> = HashMap::new();
        for row in lists.iter().unwrap() {
            let (leaf, list) = row.unwrap();
            let mut offset = 0u64;
            for seg in list.value().chunks_exact(40) {
                let id: [u8; 32] = seg[..32].try_into().unwrap();
                let chunks = segments.get(&id).unwrap().unwrap();
                for entry in chunks.value().chunks_exact(36) {
                    let chunk: [u8; 32] = entry[..32].try_into().unwrap();
                    let len = u32::from_le_bytes(entry[32..].try_into().unwrap());
                    rows.insert((leaf.value(), offset), (&chunk, len)).unwrap();
                    offset += u64::from(len);
                    *counts.entry(chunk).or_default() += 1;
                }
            }
        }
        let mut chunks = txn.open_table(CHUNKS).unwrap();
        for (chunk, n) in counts {
            let len = chunks.get(&chunk).unwrap().unwrap().value().0;
            chunks.insert(&chunk, (len, n)).unwrap();
        }
        txn.open_table(META).unwrap().insert("format", 1u64.to_le_bytes().as_slice()).unwrap();
    }
    txn.delete_table(LEAF_SEGMENTS).unwrap();
    txn.delete_table(SEGMENTS).unwrap();
    txn.commit().unwrap();
}

#[test]
fn a_format_1_store_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let files = populate(dir.path());
    unpack(dir.path());
    downgrade(dir.path());
    {
        let db = redb::Database::open(dir.path().join("meta.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        assert!(txn.open_table(LEAF_CHUNKS_V1).unwrap().len().unwrap() > 40);
    }
    check_migrated(dir.path(), &files);
    let db = redb::Database::open(dir.path().join("meta.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(txn.open_table(LEAF_CHUNKS_V1).is_err(), "the old table is gone");
}

/// A chunk file of the wrong length is not copied into a pack (its place would cover bytes of
/// the next chunk): it is set aside, and only the files that use it fail to read.
#[test]
fn a_damaged_chunk_file_is_set_aside_by_the_migration() {
    let dir = tempfile::tempdir().unwrap();
    let files = populate(dir.path());
    unpack(dir.path());
    let shard = std::fs::read_dir(dir.path().join("chunks")).unwrap().next().unwrap().unwrap();
    let victim = std::fs::read_dir(shard.path()).unwrap().next().unwrap().unwrap().path();
    let data = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &data[..data.len() / 2]).unwrap();

    let v = open(dir.path());
    let report = v.fsck(FsckOptions::default(), &mut |_| {}).unwrap();
    let name = victim.file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert!(
        matches!(&report.problems[0], indras_artifacts::Problem::MissingChunk(h)
            if indras_artifacts::hex(h) == name),
        "{:?}",
        report.problems
    );
    assert_eq!(
        std::fs::read(dir.path().join("quarantine").join(&name)).unwrap().len(),
        data.len() / 2
    );
    let readable = files.iter().filter(|(n, c)| {
        let leaf = v.lookup(indras_artifacts::NodeId::ROOT, n.as_bytes()).unwrap().content.unwrap();
        v.read_all(&leaf).is_ok_and(|got| got == *c)
    });
    assert!(readable.count() >= 1, "the files that do not use the chunk still read");
}

/// A format 7 store (before history) opens as it is: its files read back, it starts with no
/// history, and the next save is its first version.
#[test]
fn format_7_opens_with_no_history() {
    let dir = tempfile::tempdir().unwrap();
    {
        let v = open(dir.path());
        v.set_keep(indras_artifacts::Keep::none());
        put(&v, "note.md", b"before history", Commit::Durable);
        v.close().unwrap();
    }
    {
        let db = redb::Database::open(dir.path().join("meta.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        for table in [
            "versions_v1",
            "version_nodes_v1",
            "lineage_v1",
            "history_refs_v1",
            "deleted_v1",
            "deleted_names_v1",
            "snapshots_v1",
        ] {
            assert!(txn.delete_table(TableDefinition::<u64, u64>::new(table)).unwrap(), "{table}");
        }
        txn.open_table(META).unwrap().insert("format", 7u64.to_le_bytes().as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let v = open(dir.path());
    let node = v.lookup(indras_artifacts::NodeId::ROOT, b"note.md").unwrap();
    assert_eq!(get(&v, "note.md"), b"before history");
    let h = v.history_id(node.id).unwrap();
    assert!(v.versions(h).unwrap().is_empty());
    put(&v, "note.md", b"after", Commit::Durable);
    assert_eq!(v.versions(h).unwrap().len(), 1);
    assert!(v.fsck(FsckOptions::default(), &mut |_| {}).unwrap().is_clean());
    v.close().unwrap();
    let db = redb::Database::open(dir.path().join("meta.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    let format = txn.open_table(META).unwrap().get("format").unwrap().unwrap().value().to_vec();
    assert_eq!(format, 10u64.to_le_bytes());
}

const ORDER_V1: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("order_v1");
const ORDER_V2: TableDefinition<(u64, u64), (u64, u8, &[u8])> = TableDefinition::new("order_v2");

/// A format 8 store's listing slots held names only (`order_v1`): it opens as format 10 with
/// every folder listed as before (same entries, nodes, kinds and positions, gaps left by
/// removals included), `order_v1` gone and fsck clean.
#[test]
fn format_8_listings_open_unchanged() {
    use indras_artifacts::{NewNode, NodeId};
    let dir = tempfile::tempdir().unwrap();
    let t = common::now();
    let listings = |v: &indras_artifacts::Vault, dirs: &[NodeId]| {
        dirs.iter().map(|d| v.list(*d, 0, usize::MAX).unwrap()).collect::<Vec<_>>()
    };
    let (dirs, before) = {
        let v = open(dir.path());
        let sub = v.create(NodeId::ROOT, b"sub", &NewNode::dir(0o755), None, t, Commit::Durable);
        let sub = sub.unwrap().id;
        for i in 0..40 {
            put(&v, &format!("f{i}"), &bytes(i, 10), Commit::CrashConsistent);
        }
        for i in (0..40).step_by(3) {
            v.remove(NodeId::ROOT, format!("f{i}").as_bytes(), false, t, Commit::CrashConsistent)
                .unwrap();
        }
        let cc = Commit::CrashConsistent;
        v.create(sub, b"link", &NewNode::symlink(b"../f1"), None, t, cc).unwrap();
        v.create(sub, b"inner", &NewNode::dir(0o700), None, t, cc).unwrap();
        let f1 = v.lookup(NodeId::ROOT, b"f1").unwrap();
        v.link(f1.id, sub, b"hard", t, cc).unwrap();
        let dirs = vec![NodeId::ROOT, sub];
        let before = listings(&v, &dirs);
        v.close().unwrap();
        (dirs, before)
    };
    {
        // Back to format 8: the slots hold names only.
        let db = redb::Database::open(dir.path().join("meta.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let slots: Vec<((u64, u64), Vec<u8>)> = txn
                .open_table(ORDER_V2)
                .unwrap()
                .iter()
                .unwrap()
                .map(|r| {
                    let (k, v) = r.unwrap();
                    (k.value(), v.value().2.to_vec())
                })
                .collect();
            let mut old = txn.open_table(ORDER_V1).unwrap();
            for (k, name) in &slots {
                old.insert(k, name.as_slice()).unwrap();
            }
        }
        assert!(txn.delete_table(ORDER_V2).unwrap());
        txn.open_table(META).unwrap().insert("format", 8u64.to_le_bytes().as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let v = open(dir.path());
    assert_eq!(listings(&v, &dirs), before);
    assert!(before[1].iter().any(|e| e.kind == indras_artifacts::NodeKind::Symlink));
    assert!(v.fsck(FsckOptions::default(), &mut |_| {}).unwrap().is_clean());
    v.close().unwrap();
    let db = redb::Database::open(dir.path().join("meta.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(txn.open_table(ORDER_V1).is_err(), "order_v1 is dropped");
}
