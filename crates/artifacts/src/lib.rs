//! `indras-artifacts`: the durable, content-addressed store under indras-fuse.
//!
//! A vault holds:
//! - **leaves**: immutable payloads addressed by the BLAKE3 hash of their content. Up to
//!   `INLINE_MAX` bytes they live inline in the metadata database; larger ones are cut into
//!   `FastCDC` chunks, each stored once as a file named by its own hash.
//! - **nodes**: persistent, never-reused ids with POSIX attributes. A file node points at
//!   its current leaf, so two identical files are two nodes sharing one leaf.
//! - **trees**: one per directory node, whose references are the directory's entries, each
//!   with a label and a position.
//! - grants, peers and attention events.
//!
//! All metadata is in one redb database; every mutation is one transaction, committed either
//! crash-consistently or durably (`Commit`). See `docs/DESIGN.md` for the on-disk layout.

mod artifacts;
pub mod attention;
mod chunks;
mod error;
mod faulty;
mod gc;
mod layout;
mod meta;
mod schema;
mod types;
mod vault;
mod writer;

pub use attention::{Aggregate, Heat, Retention};
pub use chunks::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, FaultInjector, INLINE_MAX, IoStep};
pub use error::{Error, Result};
pub use gc::{FsckOptions, FsckReport, GcReport, Problem, Progress};
pub use layout::GROUP;
pub use types::*;
pub use vault::{
    Commit, Counts, FILE_SIZE_MAX, LINK_MAX, LeafReader, NAME_MAX, Options, Stats, Vault,
    XATTR_VALUE_MAX, validate_name,
};
pub use writer::{PayloadWriter, StagedLeaf};
