//! What a snapshot costs on a vault of 100,000 entries (1,000 folders of 99 small files): the
//! time to take one and the bytes it stores; then the same for one after 100 files changed
//! all over the vault (most of the manifest's chunks change), and for one after 100 files
//! changed in one folder (its manifest shares the previous one's chunks but a few).
//!
//! Usage: `cargo run --release -p indras-artifacts --example snapshot_cost [STORE_DIR]`

use std::time::Instant;

use indras_artifacts::{Commit, Keep, NewNode, NodeId, Options, Timestamp, Vault};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| std::env::temp_dir().join("snapshot-cost"), Into::into);
    let _ = std::fs::remove_dir_all(&dir);
    let v = Vault::open(&dir, "bench", &Options::default())?;
    v.set_keep(Keep::none());
    let cc = Commit::CrashConsistent;
    let mut files = Vec::new();
    for d in 0..1000u32 {
        let dir_node = v.create(
            NodeId::ROOT,
            format!("folder-{d:04}").as_bytes(),
            &NewNode::dir(0o755),
            None,
            Timestamp::now(),
            cc,
        )?;
        for f in 0..99u32 {
            let content = v.stage(format!("note {d}/{f}\n").as_bytes())?;
            let node = v.create(
                dir_node.id,
                format!("note-{f:02}.md").as_bytes(),
                &NewNode::file(0o644),
                Some(content),
                Timestamp::now(),
                cc,
            )?;
            files.push(node.id);
        }
    }
    v.sync()?;
    let entries = v.node_count()?;
    let stored = |v: &Vault| v.stats().map(|s| s.chunk_bytes + s.db_bytes);

    let before = stored(&v)?;
    let t = Instant::now();
    let first = v.snapshot_create("first", false, Timestamp::now())?;
    let took = t.elapsed();
    v.sync()?;
    println!(
        "{entries} entries: first snapshot {:.0} ms, {} entries, store grew {} KiB",
        took.as_secs_f64() * 1e3,
        first.entries,
        stored(&v)?.saturating_sub(before) / 1024
    );

    for (i, node) in files.iter().step_by(1000).enumerate() {
        let content = v.stage(format!("changed {i}\n").as_bytes())?;
        v.set_content(*node, &content, Timestamp::now(), cc)?;
    }
    let before = stored(&v)?;
    let t = Instant::now();
    v.snapshot_create("second", false, Timestamp::now())?;
    let took = t.elapsed();
    v.sync()?;
    println!(
        "after 100 files changed, one in every 1,000: snapshot {:.0} ms, store grew {} KiB",
        took.as_secs_f64() * 1e3,
        stored(&v)?.saturating_sub(before) / 1024
    );
    for (i, node) in files[5000..5099].iter().enumerate() {
        let content = v.stage(format!("changed again {i}\n").as_bytes())?;
        v.set_content(*node, &content, Timestamp::now(), cc)?;
    }
    let before = stored(&v)?;
    let t = Instant::now();
    v.snapshot_create("third", false, Timestamp::now())?;
    let took = t.elapsed();
    v.sync()?;
    println!(
        "after 99 files changed in one folder: snapshot {:.0} ms, store grew {} KiB",
        took.as_secs_f64() * 1e3,
        stored(&v)?.saturating_sub(before) / 1024
    );
    v.close()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
