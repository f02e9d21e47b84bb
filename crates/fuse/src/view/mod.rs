//! The mount's views: each part of the mount is a view that answers for the inodes
//! `inode::view_of` gives it, and `VaultFs` routes every operation to one of them.
//!
//! | view | module | answers for |
//! |---|---|---|
//! | the mount's root | `root` | inode 1: its four fixed folders |
//! | `vault/` | `vault` | the store's nodes, read-write |
//! | `.indra/` | `indra` (its heat files: `heat`) | the virtual files, rendered at open |
//! | `.indra/history/` | `history` | every version the store keeps of each file, read-only |
//! | `.indra/snapshots/` | `snapshots` | the vault as each snapshot froze it, read-only |
//! | `peers/` | `peers` | what peers share with us (the store's mirror entries), read-only |
//! | `realms/` | `realms` | what every member of each realm can access, read-only |
//!
//! Every view answers the reading operations (`View`). Only the vault takes changes; every
//! other view is a `ReadOnlyView`, which has no way to change anything and says which errno
//! each change gets. A view's entry may be another view's root (the root lists `vault/`):
//! the lookup then names that inode (`Found::ViewRoot`), and its own view answers for it.

mod common;
mod heat;
mod history;
mod indra;
mod peers;
mod realms;
mod root;
mod snapshots;
mod vault;

pub(crate) use common::{Change, Found, ReadOnlyFile, ReadOnlyView, View};
pub(crate) use history::HistoryView;
pub(crate) use indra::IndraView;
pub(crate) use peers::PeersView;
pub(crate) use realms::RealmsView;
pub(crate) use root::RootView;
pub(crate) use snapshots::SnapshotsView;
pub(crate) use vault::VaultView;
