//! Times 4 KiB overwrites of a 1 GiB leaf through the store, each one a new version
//! (`stage_edit`, then `set_content`), with the mount's cadence of pending-row flushes (every
//! 200 ms, once enough is pending) and durable syncs (every second), for profiling the
//! commit path of the benchmark's overwrite workload without FUSE.
//!
//! Usage: `cargo run --release -p indras-artifacts --example edit_latency [STORE_DIR [EDITS]]`

use std::time::{Duration, Instant};

use indras_artifacts::{Commit, NewNode, NodeId, Options, Timestamp, Vault};

const SIZE: usize = 1 << 30;
const EDIT: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map_or_else(|| std::env::temp_dir().join("edit-latency"), Into::into);
    let edits: u32 = args.next().map_or(Ok(5000), |n| n.parse())?;
    let _ = std::fs::remove_dir_all(&dir);
    let v = Vault::open(&dir, "bench", &Options::default())?;
    let mut data = vec![0u8; SIZE];
    blake3::Hasher::new().update(b"edit-latency").finalize_xof().fill(&mut data);
    let staged = v.stage(&data)?;
    let node = v.create(
        NodeId::ROOT,
        b"big",
        &NewNode::file(0o644),
        Some(staged),
        Timestamp::now(),
        Commit::Durable,
    )?;
    let mut leaf = node.content.ok_or("a file without content")?;

    let (mut staging, mut setting, mut background) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut last_flush, mut last_sync) = (Instant::now(), Instant::now());
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let start = Instant::now();
    for i in 0..edits {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let off = usize::try_from(rng % (SIZE / EDIT) as u64)? * EDIT;
        for b in &mut data[off..off + EDIT] {
            *b = b.wrapping_add(i.to_le_bytes()[0] | 1);
        }
        let t0 = Instant::now();
        let mut read = |at: u64, buf: &mut [u8]| -> std::io::Result<()> {
            let at = usize::try_from(at).map_err(std::io::Error::other)?;
            buf.copy_from_slice(&data[at..at + buf.len()]);
            Ok(())
        };
        let range = (off as u64, (off + EDIT) as u64);
        let edit = v.stage_edit(&leaf, SIZE as u64, &[range], SIZE as u64, &mut read)?;
        let t1 = Instant::now();
        leaf = v
            .set_content(node.id, &edit, Timestamp::now(), Commit::CrashConsistent)?
            .content
            .ok_or("a file without content")?;
        let t2 = Instant::now();
        if last_flush.elapsed() >= Duration::from_millis(200) {
            if v.wants_flush() {
                v.flush_pending()?;
            }
            last_flush = Instant::now();
        }
        if last_sync.elapsed() >= Duration::from_secs(1) {
            v.sync()?;
            last_sync = Instant::now();
        }
        staging += t1 - t0;
        setting += t2 - t1;
        background += t2.elapsed();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(edits);
    println!(
        "{:.0} edits/s; per edit: stage_edit {:.1} us, set_content {:.1} us, flush and sync {:.1} us",
        f64::from(edits) / start.elapsed().as_secs_f64(),
        per(staging),
        per(setting),
        per(background),
    );
    v.close()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
