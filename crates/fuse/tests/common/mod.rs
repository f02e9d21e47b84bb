//! Helpers the filesystem's integration tests share.

use std::path::Path;

use indras_artifacts::NodeId;
use indras_fuse::VaultFs;

/// A scratch directory for a vault: in `/dev/shm` when there is one. The tests check logic,
/// not durability, and on a disk the vault's fsyncs take nearly all the time.
pub fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("tempdir")
}

/// The committed content of a file, straight from the store.
pub fn committed(fs: &VaultFs, ino: u64) -> Vec<u8> {
    let node = fs.vault().node(NodeId(ino)).expect("node");
    let data =
        node.content.map(|h| fs.vault().read_all(&h).expect("read leaf")).unwrap_or_default();
    assert_eq!(data.len() as u64, node.size, "committed size and leaf disagree");
    data
}
