//! `indras-artifacts`: the durable, content-addressed store under indras-fuse.
//!
//! A vault holds:
//! - **leaves**: immutable payloads addressed by the BLAKE3 hash of their content. Up to
//!   `INLINE_MAX` bytes they live inline in the metadata database; larger ones are cut into
//!   `FastCDC` chunks, each stored once, appended to pack files and named by its own hash.
//! - **nodes**: persistent, never-reused ids with POSIX attributes. A file node points at
//!   its current leaf, so two identical files are two nodes sharing one leaf.
//! - **trees**: one per directory node, whose references are the directory's entries, each
//!   with a label and a position.
//! - grants, peers and attention events.
//!
//! All metadata is in one redb database. Every mutation is one all-or-nothing operation on an
//! in-memory write-back layer, flushed to redb in batches; an operation with
//! `Commit::Durable` is flushed with fsync before it returns. See `docs/DESIGN.md` for the
//! on-disk layout.
//!
//! The code is in three layers, each using only those below it:
//! - `store`: the database, its tables and records, the write-back layers (`store::meta`),
//!   node ids and the fault-injection seam;
//! - `payload`: chunks in packs, hash trees and chunk lists, the streaming writer, reads and
//!   edits (`Payloads`);
//! - `vault`: the `Vault` handle and everything on nodes and trees, sharing records,
//!   attention, GC and fsck, and the migrations run at open.
//!
//! `types` and `error` sit under all three. `scripts/import-cycles.py` checks that no module
//! imports another that imports it back.

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
pub use store::frame;
pub use types::*;
pub use vault::attention::{self, Aggregate, Heat, Retention};
pub use vault::chain::{self, Delivered, Recorded, Refused, Taken};
pub use vault::exchange::{LeafLayout, decode_chunk_list, decode_leaf_list, decode_segment_list};
pub use vault::gc::{FsckOptions, FsckReport, GcReport, Problem, Progress};
pub use vault::handle::{Changes, Commit, Counts, Options, Stats, Vault};
pub use vault::history::{Deleted, HistoryUsage, Pruned, Version};
pub use vault::manifest::{Manifest, SnapEntry};
pub use vault::mirror::{MirrorChanges, clean_label};
pub use vault::namespace::{
    FILE_SIZE_MAX, LINK_MAX, NAME_MAX, Placed, SetContent, XATTR_VALUE_MAX, validate_name,
};
pub use vault::realms::{
    Realm, RealmChanges, RealmId, RealmItem, RealmRow, RealmTarget, validate_realm_name,
};
pub use vault::retention::{
    DEFAULT_MAX_PERCENT, DEFAULT_MIN_FREE_PERCENT, Keep, SpaceLimits, Thinned, Tier, parse_duration,
};
pub use vault::snapshots::{AUTO_PREFIX, SNAPSHOT_NAME_MAX, Snapshot, validate_snapshot_name};
