//! The handle table: every open file handle (`fh`) of the mount, whichever view it belongs to.
//! Handle numbers are never reused within a mount. The table is a leaf lock, held for one
//! lookup or update.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{FsError, FsResult};
use crate::open_files::{FileHandle, OpenNode, lock};

#[derive(Debug)]
pub(crate) enum Handle {
    /// A vault file.
    File(FileHandle),
    /// A directory of any view.
    Dir,
    /// A file of a read-only view, its content fixed when it was opened.
    Rendered(Arc<[u8]>, Option<Seen>),
    /// A file of a read-only view that reads it at each `read` (its inode).
    Streamed(u64, Option<Seen>),
}

/// An entry whose open attention recorded (`ReadOnlyView::attention_entry`): its id and when
/// it was opened, for the dwell at release.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen {
    pub(crate) entry: indras_artifacts::NodeId,
    pub(crate) at: indras_artifacts::Timestamp,
}

/// What a read of a handle reads.
#[derive(Debug)]
pub(crate) enum Source {
    /// A vault file: its inode and open node.
    File(u64, Arc<OpenNode>),
    /// A read-only view's content fixed at open.
    Rendered(Arc<[u8]>),
    /// A read-only view's file, read from the view (its inode).
    Streamed(u64),
}

#[derive(Debug)]
pub(crate) struct Handles {
    map: Mutex<HashMap<u64, Handle>>,
    next: AtomicU64,
}

impl Default for Handles {
    fn default() -> Self {
        Handles { map: Mutex::new(HashMap::new()), next: AtomicU64::new(1) }
    }
}

impl Handles {
    pub(crate) fn insert(&self, handle: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.map).insert(fh, handle);
        fh
    }

    pub(crate) fn remove(&self, fh: u64) -> Option<Handle> {
        lock(&self.map).remove(&fh)
    }

    /// The vault file of `fh`: its inode, open node, and whether it appends. `EISDIR` for a
    /// handle that is not a vault file's, `EBADF` for none.
    pub(crate) fn file(&self, fh: u64) -> FsResult<(u64, Arc<OpenNode>, bool)> {
        match lock(&self.map).get(&fh) {
            Some(Handle::File(h)) => Ok((h.ino, h.node.clone(), h.append)),
            Some(_) => Err(FsError::errno(libc::EISDIR)),
            None => Err(FsError::errno(libc::EBADF)),
        }
    }

    /// What a read of `fh` reads. `EISDIR` for a directory's handle, `EBADF` for none.
    pub(crate) fn source(&self, fh: u64) -> FsResult<Source> {
        match lock(&self.map).get(&fh) {
            Some(Handle::File(h)) => Ok(Source::File(h.ino, h.node.clone())),
            Some(Handle::Rendered(data, _)) => Ok(Source::Rendered(data.clone())),
            Some(Handle::Streamed(ino, _)) => Ok(Source::Streamed(*ino)),
            Some(Handle::Dir) => Err(FsError::errno(libc::EISDIR)),
            None => Err(FsError::errno(libc::EBADF)),
        }
    }
}
