//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::path::Path;

use indras_artifacts::{Commit, NewNode, Node, NodeId, Options, Timestamp, Vault};

/// Deterministic pseudo-random bytes (BLAKE3 XOF of a seed).
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

pub fn open(dir: &Path) -> Vault {
    open_with(dir, &Options::default()).expect("open vault")
}

/// Opens a store with history off: old versions are garbage at once, as GC tests expect.
pub fn open_without_history(dir: &Path) -> Vault {
    let v = open(dir);
    v.set_keep(indras_artifacts::Keep::none());
    v
}

/// Opens a store, waiting out `Locked`. Tests that spawn child processes (the SIGKILL tests,
/// `b3sum`) run beside tests that open and close stores, and a child between `fork` and
/// `exec` briefly shares this process's open files, store locks included.
pub fn open_with(dir: &Path, opts: &Options) -> indras_artifacts::Result<Vault> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Vault::open(dir, "alice", opts) {
            Err(indras_artifacts::Error::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

pub fn now() -> Timestamp {
    Timestamp::now()
}

/// Creates (or replaces the content of) a file at the root.
pub fn try_put(
    v: &Vault,
    name: &str,
    content: &[u8],
    commit: Commit,
) -> indras_artifacts::Result<Node> {
    let staged = v.stage(content)?;
    match v.lookup(NodeId::ROOT, name.as_bytes()) {
        Ok(node) => v.set_content(node.id, &staged, now(), commit),
        Err(_) => v.create(
            NodeId::ROOT,
            name.as_bytes(),
            &NewNode::file(0o644),
            Some(staged),
            now(),
            commit,
        ),
    }
}

pub fn put(v: &Vault, name: &str, content: &[u8], commit: Commit) -> Node {
    try_put(v, name, content, commit).expect("put")
}

pub fn get(v: &Vault, name: &str) -> Vec<u8> {
    let node = v.lookup(NodeId::ROOT, name.as_bytes()).expect("lookup");
    v.read_all(&node.content.expect("file has content")).expect("read")
}

/// Bytes the files under `dir` take on disk (holes punched in packs excluded).
pub fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            total += disk_bytes(&entry.path());
        } else {
            total += std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
        }
    }
    total
}

/// The message of a caught panic (`std::panic::catch_unwind`'s error).
pub fn panic_message(e: &(dyn std::any::Any + Send)) -> &str {
    e.downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| e.downcast_ref::<&str>().copied())
        .unwrap_or("(non-string panic)")
}
