//! Times single store operations (crash-consistent commits), for profiling the metadata path.
//!
//! Usage: `cargo run --release -p indras-artifacts --example op_latency [STORE_DIR]`

use std::time::Instant;

use indras_artifacts::{Commit, NewNode, NodeId, Options, Timestamp, Vault};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir =
        std::env::args().nth(1).map_or_else(|| std::env::temp_dir().join("op-latency"), Into::into);
    let _ = std::fs::remove_dir_all(&dir);
    let v = Vault::open(&dir, "bench", &Options::default())?;
    let n = 5000u32;
    let cc = Commit::CrashConsistent;
    let time = |name: &str,
                f: &mut dyn FnMut(u32) -> indras_artifacts::Result<()>|
     -> indras_artifacts::Result<()> {
        let t = Instant::now();
        for i in 0..n {
            f(i)?;
        }
        println!("{name}: {:.1} us", t.elapsed().as_secs_f64() * 1e6 / f64::from(n));
        Ok(())
    };
    time("create file", &mut |i| {
        v.create(
            NodeId::ROOT,
            format!("f{i}").as_bytes(),
            &NewNode::file(0o644),
            None,
            Timestamp::now(),
            cc,
        )
        .map(drop)
    })?;
    time("stage 4 KiB + set_content", &mut |i| {
        let node = v.lookup(NodeId::ROOT, format!("f{i}").as_bytes())?;
        let staged = v.stage(&[i as u8; 4096])?;
        v.set_content(node.id, &staged, Timestamp::now(), cc).map(drop)
    })?;
    time("lookup", &mut |i| v.lookup(NodeId::ROOT, format!("f{i}").as_bytes()).map(drop))?;
    time("remove", &mut |i| {
        v.remove(NodeId::ROOT, format!("f{i}").as_bytes(), false, Timestamp::now(), cc).map(drop)
    })?;
    time("sync (nothing pending after the first)", &mut |_| v.sync())?;
    Ok(())
}
