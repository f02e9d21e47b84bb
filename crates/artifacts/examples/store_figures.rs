//! Prints the store's headline figures: bytes on disk for many small files and for 1 GiB of
//! random data, import throughput (next to `b3sum` on the same data), and the time to open a
//! store of 100,000 nodes.
//!
//! Usage: `cargo run --release -p indras-artifacts --example store_figures [SCRATCH_DIR]`

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use indras_artifacts::{Commit, NewNode, NodeId, Options, Timestamp, Vault};

const MIB: usize = 1 << 20;

fn du(path: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(path).output().expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0)
}

fn du_alloc(path: &Path) -> u64 {
    let out = Command::new("du").arg("-sk").arg(path).output().expect("du");
    let kib: u64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    kib * 1024
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let scratch = std::env::args().nth(1).map_or_else(std::env::temp_dir, Into::into);
    let root = tempfile::tempdir_in(&scratch)?;
    let now = Timestamp::now;

    // 10,000 files of 4 KiB, distinct content.
    let small = root.path().join("small");
    {
        let v = Vault::open(&small, "bench", &Options::default())?;
        let t = Instant::now();
        let dir = v.create(
            NodeId::ROOT,
            b"d",
            &NewNode::dir(0o755),
            None,
            now(),
            Commit::CrashConsistent,
        )?;
        let mut buf = vec![0u8; 4096];
        for i in 0..10_000u32 {
            // The mount makes commits durable on a timer; model a sync per 1,000 closes.
            if i % 1000 == 999 {
                v.sync()?;
            }
            blake3::Hasher::new().update(&i.to_le_bytes()).finalize_xof().fill(&mut buf);
            let staged = v.stage(&buf)?;
            v.create(
                dir.id,
                format!("f{i}").as_bytes(),
                &NewNode::file(0o644),
                Some(staged),
                now(),
                Commit::CrashConsistent,
            )?;
        }
        v.sync()?;
        let secs = t.elapsed().as_secs_f64();
        v.close()?;
        println!(
            "10,000 x 4 KiB files: {:.1} MiB of content, {:.1} MiB apparent on disk, {:.1} MiB allocated; {:.0} files/s",
            10_000.0 * 4096.0 / MIB as f64,
            du(&small) as f64 / MIB as f64,
            du_alloc(&small) as f64 / MIB as f64,
            10_000.0 / secs
        );
    }

    // 1 GiB of random data, written to a plain file too so b3sum can hash the same bytes.
    let data = root.path().join("random.bin");
    {
        let mut f = std::fs::File::create(&data)?;
        let mut xof = blake3::Hasher::new().update(b"1 GiB").finalize_xof();
        let mut buf = vec![0u8; 4 * MIB];
        for _ in 0..256 {
            xof.fill(&mut buf);
            f.write_all(&buf)?;
        }
        f.sync_all()?;
    }
    let b3 = Instant::now();
    let out = Command::new("b3sum").arg("--no-names").arg(&data).output();
    let b3_secs = b3.elapsed().as_secs_f64();
    let b3_single = Instant::now();
    let out1 = Command::new("b3sum").args(["--no-names", "--num-threads", "1"]).arg(&data).output();
    let b3_single_secs = b3_single.elapsed().as_secs_f64();
    let big = root.path().join("big");
    {
        let v = Vault::open(&big, "bench", &Options::default())?;
        let t = Instant::now();
        let mut w = v.payload_writer();
        let mut f = std::fs::File::open(&data)?;
        std::io::copy(&mut f, &mut w)?;
        let staged = w.finish()?;
        let staged_secs = t.elapsed().as_secs_f64();
        let node = v.create(
            NodeId::ROOT,
            b"random.bin",
            &NewNode::file(0o644),
            Some(staged),
            now(),
            Commit::Durable,
        )?;
        let secs = t.elapsed().as_secs_f64();
        let hex = indras_artifacts::hex(&node.content.unwrap_or_default());
        let gib = 1024.0 * 1024.0 * 1024.0;
        println!(
            "1 GiB random: {:.1} MiB apparent, {:.1} MiB allocated on disk ({} chunks)",
            du(&big) as f64 / MIB as f64,
            du_alloc(&big) as f64 / MIB as f64,
            v.stats()?.chunks
        );
        println!(
            "import 1 GiB: {:.0} MB/s including the durable commit ({:.0} MB/s to stage: hash, \
             chunk, write chunk files; then {:.2} s to fsync and commit)",
            gib / 1e6 / secs,
            gib / 1e6 / staged_secs,
            secs - staged_secs
        );
        match (out, out1) {
            (Ok(o), Ok(o1)) => {
                let printed = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                println!(
                    "b3sum on the same file: {:.0} MB/s (all cores), {:.0} MB/s (--num-threads 1); ids match: {}",
                    gib / 1e6 / b3_secs,
                    gib / 1e6 / b3_single_secs,
                    printed == hex && String::from_utf8_lossy(&o1.stdout).trim() == hex
                );
            }
            _ => println!("b3sum not installed"),
        }
        v.close()?;
    }
    std::fs::remove_file(&data)?;

    // Open time of a store with 100,000 nodes.
    let many = root.path().join("many");
    {
        let v = Vault::open(&many, "bench", &Options::default())?;
        for d in 0..100u32 {
            let dir = v.create(
                NodeId::ROOT,
                format!("d{d}").as_bytes(),
                &NewNode::dir(0o755),
                None,
                now(),
                Commit::CrashConsistent,
            )?;
            for i in 0..999u32 {
                let staged = v.stage(format!("{d}/{i}").as_bytes())?;
                v.create(
                    dir.id,
                    format!("f{i}").as_bytes(),
                    &NewNode::file(0o644),
                    Some(staged),
                    now(),
                    Commit::CrashConsistent,
                )?;
            }
        }
        println!(
            "100,000-node store: {} nodes, {:.1} MiB",
            v.stats()?.nodes,
            du(&many) as f64 / MIB as f64
        );
        v.close()?;
    }
    let t = Instant::now();
    let v = Vault::open(&many, "bench", &Options::default())?;
    let clean = t.elapsed();
    let first = v.lookup(v.resolve(&[b"d50"])?.id, b"f500")?;
    assert_eq!(v.read_all(&first.content.unwrap_or_default())?, b"50/500");
    drop(v);
    println!(
        "open of the 100,000-node store after a clean close: {:.1} ms",
        clean.as_secs_f64() * 1e3
    );
    Ok(())
}
