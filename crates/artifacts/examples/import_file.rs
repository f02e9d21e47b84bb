//! Imports one file into a scratch store and prints the leaf id and the time taken.
//!
//! Usage: `cargo run --release -p indras-artifacts --example import_file FILE [STORE_DIR]`

use std::time::Instant;

use indras_artifacts::{Options, Vault};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let file = args.next().ok_or("usage: import_file FILE [STORE_DIR]")?;
    let store = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("import-{}", std::process::id())),
    };
    let v = Vault::open(&store, "bench", &Options::default())?;
    let t = Instant::now();
    let mut w = v.payload_writer();
    std::io::copy(&mut std::fs::File::open(&file)?, &mut w)?;
    let staged = w.finish()?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{}  {} bytes staged in {secs:.2} s ({:.0} MB/s)",
        indras_artifacts::hex(&staged.hash),
        staged.size,
        staged.size as f64 / 1e6 / secs
    );
    Ok(())
}
