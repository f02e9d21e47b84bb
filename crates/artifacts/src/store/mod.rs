//! The metadata store: the redb database, its tables and record encodings, and the
//! write-back layers every operation goes through. Knows nothing of payloads or of the vault.

pub(crate) mod db;
pub(crate) mod faults;
pub mod frame;
pub(crate) mod ids;
pub(crate) mod meta;
pub(crate) mod rows;
pub(crate) mod schema;
