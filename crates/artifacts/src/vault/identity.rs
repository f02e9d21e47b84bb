//! The player's secret key: `identity.key` in the data dir, the 32-byte ed25519 seed whose
//! public key is the player's `PlayerId`.
//!
//! Invariants:
//! - The file is created once, with mode 0600, whole or not at all: written to a temp file,
//!   fsync'd, renamed into place, and the directory fsync'd, before any record names its
//!   public key. Nothing ever rewrites it.
//! - It is never printed or logged (`SecretKey` has no `Display`, and its `Debug` shows only
//!   the public key).
//! - A store whose records name a key (format 5 on) refuses to open without that key: a
//!   missing or different key file is an `Identity` error, never a silent new identity.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::payload::chunks::sync_dir;
use crate::types::SecretKey;

/// The key file's name in the data dir.
pub(crate) const KEY_FILE: &str = "identity.key";

fn key_path(dir: &Path) -> PathBuf {
    dir.join(KEY_FILE)
}

fn bad(dir: &Path, reason: impl Into<String>) -> Error {
    Error::Identity { path: key_path(dir), reason: reason.into() }
}

/// The key in `dir`, if there is one.
pub(crate) fn load(dir: &Path) -> Result<Option<SecretKey>> {
    let path = key_path(dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let seed: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| bad(dir, format!("holds {} bytes, not a 32-byte key", bytes.len())))?;
    let mode = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(bad(
            dir,
            format!("is readable by others (mode {:o}); chmod 600 it", mode & 0o777),
        ));
    }
    Ok(Some(SecretKey::from_bytes(seed)))
}

/// Makes a new random key in `dir` (which must have none) and returns it once it is durable.
pub(crate) fn create(dir: &Path) -> Result<SecretKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| Error::io("getrandom", io::Error::other(e.to_string())))?;
    let tmp = dir.join(format!("{KEY_FILE}.tmp"));
    let path = key_path(dir);
    let write = || -> io::Result<()> {
        let mut f =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&seed)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        sync_dir(dir)
    };
    write().map_err(|e| Error::io(&path, e))?;
    Ok(SecretKey::from_bytes(seed))
}

/// The key a store whose records name `expected` must have.
pub(crate) fn require(dir: &Path, expected: crate::types::PlayerId) -> Result<SecretKey> {
    let key = load(dir)?.ok_or_else(|| {
        bad(dir, format!("is missing; the store belongs to player {expected}, whose key it held"))
    })?;
    if key.player() != expected {
        return Err(bad(
            dir,
            format!("is the key of {}, not of this store's player {expected}", key.player()),
        ));
    }
    Ok(key)
}
