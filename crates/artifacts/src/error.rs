//! The store's typed errors. Each variant names one cause; the mount maps each to one errno.

use std::io;
use std::path::PathBuf;

use crate::types::{ArtifactId, Hash, NodeId, hex};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A chunk or inline payload did not hash to its id. Wrong bytes are never returned.
    #[error("integrity error: chunk {} of {} does not match its hash", hex(.chunk), .leaf)]
    Integrity { leaf: ArtifactId, chunk: Hash },

    /// Metadata names a chunk whose file is gone.
    #[error("missing chunk {} of {}", hex(.chunk), .leaf)]
    MissingChunk { leaf: ArtifactId, chunk: Hash },

    #[error("no such node {0}")]
    NoSuchNode(NodeId),

    #[error("no such artifact {0}")]
    NoSuchArtifact(ArtifactId),

    #[error("no entry named {name:?} in {parent}")]
    NotFound { parent: NodeId, name: String },

    #[error("an entry named {name:?} already exists in {parent}")]
    Exists { parent: NodeId, name: String },

    #[error("node {0} is not a directory")]
    NotADirectory(NodeId),

    #[error("node {0} is a directory")]
    IsADirectory(NodeId),

    #[error("node {0} is not a regular file")]
    NotAFile(NodeId),

    #[error("directory {0} is not empty")]
    NotEmpty(NodeId),

    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },

    #[error("name is {0} bytes, longer than the 255-byte limit")]
    NameTooLong(usize),

    #[error("moving {0} into {1} would make a directory its own descendant")]
    Cycle(NodeId, NodeId),

    #[error("operation not permitted on {0}: {1}")]
    NotPermitted(NodeId, &'static str),

    #[error("too many links to {0}")]
    TooManyLinks(NodeId),

    #[error("extended attribute {0:?} not found")]
    NoXattr(String),

    #[error("extended attribute {0:?} already exists")]
    XattrExists(String),

    #[error("extended attribute value of {0} bytes is too large")]
    XattrTooLarge(usize),

    #[error("no version {0:016x}")]
    NoSuchVersion(u64),

    #[error("no snapshot named {0:?}")]
    NoSuchSnapshot(String),

    #[error("a snapshot named {0:?} already exists")]
    SnapshotExists(String),

    #[error("record {0} is corrupt: {1}")]
    CorruptRecord(&'static str, String),

    #[error("store at {path} was written by an unsupported format version {found}")]
    UnsupportedVersion { path: PathBuf, found: u32 },

    #[error("store at {0} is in use by another process")]
    Locked(PathBuf),

    /// The player's secret key file is missing, malformed, or not the store's player's.
    #[error("identity key {path}: {reason}")]
    Identity { path: PathBuf, reason: String },

    #[error("store belongs to player {found:?}, not {requested:?}")]
    WrongPlayer { found: String, requested: String },

    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },

    #[error("database error: {0}")]
    Db(#[from] redb::Error),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Whether the error is (or wraps) a full disk, or a full quota.
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Io { source, .. } | Error::Db(redb::Error::Io(source)) => is_full(source),
            _ => false,
        }
    }

    /// Whether the error is a failed read or write of the metadata database, after which redb
    /// refuses every transaction until the database is reopened.
    pub(crate) fn is_storage_failure(&self) -> bool {
        matches!(self, Error::Db(redb::Error::Io(_) | redb::Error::PreviousIo))
    }

    /// The raw OS error behind an I/O failure, if there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } | Error::Db(redb::Error::Io(source)) => source.raw_os_error(),
            _ => None,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(e.into())
            }
        }
    )*};
}

from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    redb::CompactionError
);

pub(crate) fn lossy(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Whether an I/O error says the disk (or the user's quota) is full.
pub(crate) fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error())
}
