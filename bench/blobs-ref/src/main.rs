//! The sharing benchmark's reference: raw iroh-blobs 0.104 between two processes on loopback.
//!
//! ```text
//! blobs-ref serve STORE_DIR FILE
//!     imports FILE into an fs store at STORE_DIR (not timed), serves it on 127.0.0.1, prints
//!     one JSON line {"id", "addr", "hash", "size"}, and serves until its stdin closes
//! blobs-ref fetch STORE_DIR ID ADDR HASH
//!     fetches HASH from the server into an fs store at STORE_DIR, and prints one JSON line
//!     {"bytes", "secs", "mb_per_s"}: from the dial to the blob complete and verified
//!     (MB = 10^6 bytes)
//! ```
//!
//! No relay and no discovery: both endpoints bind 127.0.0.1:0 only, and the fetcher dials the
//! address the server printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use iroh::endpoint::presets;
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointAddr, EndpointId, RelayMode, TransportAddr};
use iroh_blobs::store::fs::FsStore;
use iroh_blobs::{ALPN, BlobsProtocol, Hash};
use tokio::io::AsyncReadExt;

async fn endpoint() -> Result<Endpoint> {
    let ep = Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .clear_ip_transports()
        .bind_addr("127.0.0.1:0")
        .map_err(|e| anyhow!("bind address: {e}"))?
        .bind()
        .await
        .map_err(|e| anyhow!("bind: {e}"))?;
    Ok(ep)
}

async fn serve(dir: PathBuf, file: PathBuf) -> Result<()> {
    let store = FsStore::load(&dir).await.map_err(|e| anyhow!("store: {e}"))?;
    let size = std::fs::metadata(&file).with_context(|| format!("{}", file.display()))?.len();
    let file = std::path::absolute(&file)?;
    let tag = store.blobs().add_path(&file).await.map_err(|e| anyhow!("import: {e}"))?;
    let ep = endpoint().await?;
    let addr =
        ep.bound_sockets().into_iter().find(SocketAddr::is_ipv4).context("no IPv4 socket bound")?;
    let router = Router::builder(ep.clone()).accept(ALPN, BlobsProtocol::new(&store, None)).spawn();
    println!(
        "{}",
        serde_json::json!({
            "id": ep.id().to_string(),
            "addr": addr.to_string(),
            "hash": tag.hash.to_hex(),
            "size": size,
        })
    );
    // Serve until the benchmark closes our stdin.
    let mut sink = Vec::new();
    tokio::io::stdin().read_to_end(&mut sink).await.ok();
    // The blobs protocol shuts the store down with the router.
    router.shutdown().await.map_err(|e| anyhow!("router shutdown: {e}"))?;
    Ok(())
}

async fn fetch(dir: PathBuf, id: &str, addr: &str, hash: &str) -> Result<()> {
    let store = FsStore::load(&dir).await.map_err(|e| anyhow!("store: {e}"))?;
    let id = EndpointId::from_str(id).map_err(|e| anyhow!("endpoint id: {e}"))?;
    let addr: SocketAddr = addr.parse().context("address")?;
    let hash = Hash::from_str(hash).map_err(|e| anyhow!("hash: {e}"))?;
    let ep = endpoint().await?;
    let start = Instant::now();
    let conn = ep
        .connect(EndpointAddr::from_parts(id, [TransportAddr::Ip(addr)]), ALPN)
        .await
        .map_err(|e| anyhow!("connect: {e}"))?;
    let stats = store
        .remote()
        .fetch(conn.clone(), hash)
        .complete()
        .await
        .map_err(|e| anyhow!("fetch: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    let local = store.remote().local(hash).await.map_err(|e| anyhow!("local: {e}"))?;
    if !local.is_complete() {
        bail!("the blob is not complete after the fetch");
    }
    let bytes = local.local_bytes();
    println!(
        "{}",
        serde_json::json!({
            "bytes": bytes,
            "payload_bytes_read": stats.payload_bytes_read,
            "secs": secs,
            "mb_per_s": bytes as f64 / secs / 1e6,
        })
    );
    conn.close(0u32.into(), b"done");
    ep.close().await;
    store.shutdown().await.map_err(|e| anyhow!("store shutdown: {e}"))?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["serve", dir, file] => serve(dir.into(), file.into()).await,
        ["fetch", dir, id, addr, hash] => fetch(dir.into(), id, addr, hash).await,
        _ => {
            bail!("usage: blobs-ref serve STORE_DIR FILE | blobs-ref fetch STORE_DIR ID ADDR HASH")
        }
    }
}
