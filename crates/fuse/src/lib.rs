//! `indras-fuse`: the vault as a filesystem.
//!
//! - `VaultFs` (in `fs`) is the filesystem itself, protocol-agnostic: each operation returns
//!   `Result<_, FsError>` with the errno inside. Tests drive it directly.
//! - `adapter` is the thin `fuser::Filesystem` layer over it.
//! - `mount` starts a session (checks, multi-threaded FUSE, the durability timer) and stops it
//!   with every buffer committed durably.
//!
//! The mount's layout: `vault/` (the store's root tree, read-write), `peers/` and `realms/`
//! (read-only), and `.indra/` (read-only virtual files). See `docs/SEMANTICS.md`.

mod adapter;
pub mod attention;
pub mod buffer;
pub mod error;
pub mod fs;
pub mod inode;
pub mod mount;
pub mod virtual_files;

pub use error::{FsError, FsResult};
pub use fs::{Attr, Ctx, DirItem, Opened, SetAttrReq, StatFs, TimeSet, VaultFs};
pub use mount::{MountConfig, MountError, MountSession, StopHandle, is_mounted, mount_points};
pub use virtual_files::MountInfo;
