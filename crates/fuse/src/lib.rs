//! `indras-fuse`: the vault as a filesystem.
//!
//! - `VaultFs` (in `fs`) is the filesystem itself, protocol-agnostic: each operation returns
//!   `Result<_, FsError>` with the errno inside. Tests drive it directly. It routes each
//!   operation to the view that owns the inode (`view`, `inode`).
//! - `adapter` is the thin `fuser::Filesystem` layer over it.
//! - `mount` starts a session (checks, multi-threaded FUSE, the durability timer) and stops it
//!   with every buffer committed durably.
//! - `network` is what the mount shows of the network layer, which the daemon provides
//!   (`NetworkState`); this crate never imports it.
//! - `retention` keeps file history within `--keep` and its share of the disk, and is where
//!   the space budget for history is computed.
//! - `status` is the one model of a vault's status, for `.indra/status.json` and the
//!   `status` command alike.
//!
//! The mount's layout: `vault/` (the store's root tree, read-write), `peers/` and `realms/`
//! (read-only), and `.indra/` (read-only virtual files). See `docs/SEMANTICS.md`.

mod adapter;
pub mod attention;
pub mod buffer;
pub mod error;
pub mod fs;
mod handles;
pub mod inode;
mod intent_log;
pub mod mount;
pub mod network;
mod open_files;
mod reap;
pub mod retention;
pub mod status;
pub mod time;
mod types;
mod view;
mod xattr;

pub use error::{FsError, FsResult};
pub use fs::{Attr, Ctx, DirItem, Opened, SetAttrReq, StatFs, TimeSet, VaultFs};
pub use mount::{
    Invalidator, MountConfig, MountError, MountSession, StopHandle, is_mounted, mount_points,
    vault_mount_points,
};
pub use status::{MountInfo, Status};
