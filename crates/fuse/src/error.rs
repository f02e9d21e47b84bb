//! `FsError`: what a filesystem operation returns when it fails, with the errno inside.
//!
//! Every store error maps to exactly one errno through an exhaustive `match` with no wildcard
//! arm, so a new error variant forces a decision. Each error also carries the level it is
//! logged at: a missing name is routine (DEBUG), a corrupt chunk is not (ERROR).

use indras_artifacts::Error as StoreError;

/// A failed filesystem operation.
#[derive(Debug)]
pub struct FsError {
    pub errno: i32,
    pub message: String,
    pub level: tracing::Level,
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        FsError { errno, message: message.into(), level: tracing::Level::DEBUG }
    }

    pub fn errno(errno: i32) -> Self {
        FsError::new(errno, std::io::Error::from_raw_os_error(errno).to_string())
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno)
    }
}

impl std::error::Error for FsError {}

impl From<StoreError> for FsError {
    fn from(e: StoreError) -> Self {
        use tracing::Level;
        let (errno, level) = match &e {
            StoreError::Integrity { .. } | StoreError::MissingChunk { .. } => {
                (libc::EIO, Level::ERROR)
            }
            StoreError::NoSuchNode(_)
            | StoreError::NoSuchArtifact(_)
            | StoreError::NotFound { .. }
            | StoreError::NoSuchVersion(_)
            | StoreError::NoSuchSnapshot(_) => (libc::ENOENT, Level::DEBUG),
            StoreError::Exists { .. } | StoreError::SnapshotExists(_) => {
                (libc::EEXIST, Level::DEBUG)
            }
            StoreError::NotADirectory(_) => (libc::ENOTDIR, Level::DEBUG),
            StoreError::IsADirectory(_) => (libc::EISDIR, Level::DEBUG),
            StoreError::NotAFile(_) => (libc::EINVAL, Level::DEBUG),
            StoreError::NotEmpty(_) => (libc::ENOTEMPTY, Level::DEBUG),
            StoreError::InvalidName { .. } | StoreError::Cycle(..) => (libc::EINVAL, Level::DEBUG),
            StoreError::NameTooLong(_) => (libc::ENAMETOOLONG, Level::DEBUG),
            StoreError::NotPermitted(..) => (libc::EPERM, Level::DEBUG),
            StoreError::TooManyLinks(_) => (libc::EMLINK, Level::DEBUG),
            StoreError::NoXattr(_) => (libc::ENODATA, Level::DEBUG),
            StoreError::XattrExists(_) => (libc::EEXIST, Level::DEBUG),
            StoreError::XattrTooLarge(_) => (libc::E2BIG, Level::DEBUG),
            StoreError::CorruptRecord(..)
            | StoreError::UnsupportedVersion { .. }
            | StoreError::Identity { .. } => (libc::EIO, Level::ERROR),
            StoreError::Locked(_) | StoreError::WrongPlayer { .. } => (libc::EBUSY, Level::WARN),
            StoreError::Io { .. } | StoreError::Db(_) => {
                if e.is_no_space() {
                    // A full quota stays EDQUOT; a full disk (however redb words it), ENOSPC.
                    let quota = e.raw_os_error() == Some(libc::EDQUOT);
                    (if quota { libc::EDQUOT } else { libc::ENOSPC }, Level::WARN)
                } else {
                    (e.raw_os_error().unwrap_or(libc::EIO), Level::ERROR)
                }
            }
        };
        FsError { errno, message: e.to_string(), level }
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> Self {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        let full = errno == libc::ENOSPC || errno == libc::EDQUOT;
        let level = if full { tracing::Level::WARN } else { tracing::Level::ERROR };
        FsError { errno, message: e.to_string(), level }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indras_artifacts::NodeId;

    #[test]
    fn store_errors_map_to_their_errno() {
        let cases = [
            (StoreError::NotFound { parent: NodeId::ROOT, name: "x".into() }, libc::ENOENT),
            (StoreError::NotEmpty(NodeId::ROOT), libc::ENOTEMPTY),
            (StoreError::NameTooLong(300), libc::ENAMETOOLONG),
            (StoreError::Cycle(NodeId::ROOT, NodeId::ROOT), libc::EINVAL),
            (
                StoreError::Integrity {
                    leaf: indras_artifacts::ArtifactId::Blob([0; 32]),
                    chunk: [0; 32],
                },
                libc::EIO,
            ),
            (StoreError::NoXattr("user.x".into()), libc::ENODATA),
            (
                StoreError::Io {
                    path: "/x".into(),
                    source: std::io::Error::from_raw_os_error(libc::ENOSPC),
                },
                libc::ENOSPC,
            ),
        ];
        for (e, errno) in cases {
            assert_eq!(FsError::from(e).errno, errno);
        }
    }
}
