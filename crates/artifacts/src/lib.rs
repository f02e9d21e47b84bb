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

mod error;
mod payload;
mod store;
mod types;
mod vault;

pub use error::{Error, Result};
pub use payload::chunks::{CHUNK_AVG, CHUNK_MAX, CHUNK_MIN, INLINE_MAX};
pub use payload::layout::GROUP;
pub use payload::read::LeafReader;
pub use payload::writer::{PayloadWriter, StagedLeaf};
pub use store::faults::{FaultInjector, IoStep};
pub use types::*;
pub use vault::attention::{self, Aggregate, Heat, Retention};
pub use vault::gc::{FsckOptions, FsckReport, GcReport, Problem, Progress};
pub use vault::handle::{Commit, Counts, Options, Stats, Vault};
pub use vault::namespace::{FILE_SIZE_MAX, LINK_MAX, NAME_MAX, XATTR_VALUE_MAX, validate_name};
