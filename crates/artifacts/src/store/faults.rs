//! Fault injection: named points in the write path where a test can make I/O fail.
//!
//! The chunk store consults the injector before each step of an append and a sync, and the
//! metadata database (through `db::FaultyBackend`) before each of its writes and syncs, so
//! crash tests can stop a commit at any step and check what survives.

use std::io;
use std::sync::Arc;

/// A point in the write path where a test can inject an I/O failure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum IoStep {
    /// Creating a new pack file.
    CreatePack,
    /// Appending a chunk to a pack.
    WritePack,
    /// `fdatasync` of a pack.
    SyncPack,
    /// `fsync` of the pack directory after a pack was created.
    SyncDir,
    /// The metadata database's own writes and syncs.
    DbWrite,
    DbSync,
    /// Just before a metadata transaction commits.
    Commit,
    /// Appending a record to the mount's intent log.
    LogWrite,
    /// `fdatasync` of the intent log.
    LogSync,
}

/// A seam for fault injection: called before each step; an error fails that step.
pub trait FaultInjector: Send + Sync + std::fmt::Debug {
    fn check(&self, step: IoStep) -> io::Result<()>;
}

pub(crate) type Faults = Option<Arc<dyn FaultInjector>>;

pub(crate) fn check(faults: &Faults, step: IoStep) -> io::Result<()> {
    match faults {
        Some(f) => f.check(step),
        None => Ok(()),
    }
}
