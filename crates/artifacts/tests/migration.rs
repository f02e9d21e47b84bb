//! A format 1 store (one chunk-list row per chunk of every leaf) opens as format 2: its chunk
//! lists become segments, chunk reference counts are recounted, and nothing is lost.

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

/// Rewrites a closed format 2 store into format 1's layout.
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
    let big = bytes(1, 3 << 20);
    let mut similar = big.clone();
    similar[1_000_000..1_000_100].fill(7);
    let small = bytes(2, 1000);
    {
        let v = open(dir.path());
        put(&v, "big", &big, Commit::Durable);
        put(&v, "similar", &similar, Commit::Durable);
        put(&v, "copy", &big, Commit::Durable);
        put(&v, "small", &small, Commit::Durable);
    }
    downgrade(dir.path());
    {
        let db = redb::Database::open(dir.path().join("meta.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        assert!(txn.open_table(LEAF_CHUNKS_V1).unwrap().len().unwrap() > 40);
    }
    let v = open(dir.path());
    assert!(get(&v, "big") == big);
    assert!(get(&v, "similar") == similar);
    assert!(get(&v, "copy") == big);
    assert!(get(&v, "small") == small);
    let report = v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    drop(v);
    let db = redb::Database::open(dir.path().join("meta.redb")).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(txn.open_table(LEAF_CHUNKS_V1).is_err(), "the old table is gone");
}
