//! Payloads: content-defined chunks in pack files, hash trees and chunk lists, the streaming
//! writer, reads and edits. Builds on the metadata store; knows nothing of nodes or trees.

pub(crate) mod chunks;
pub(crate) mod edit;
pub(crate) mod layout;
pub(crate) mod read;
pub(crate) mod rows;
pub(crate) mod writer;
