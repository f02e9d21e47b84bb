//! The vault: the store's one handle (`Vault`), its namespace of nodes and trees, the
//! artifact-level operations, sharing records, attention, GC and fsck, and the migrations run
//! at open. Builds on payloads and the metadata store.

pub(crate) mod artifacts;
pub mod attention;
pub mod chain;
pub mod exchange;
pub(crate) mod gc;
pub(crate) mod handle;
pub mod history;
pub(crate) mod identity;
pub mod manifest;
pub(crate) mod migrate;
pub mod mirror;
pub(crate) mod namespace;
#[cfg(test)]
mod open_tests;
pub mod realms;
pub mod retention;
pub(crate) mod sharing;
pub mod snapshots;
