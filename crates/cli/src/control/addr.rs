//! Where a data dir's control socket is, and a name for it that fits a socket address.
//!
//! A Unix socket's path must fit `sun_path` (108 bytes with its terminating NUL). A longer path
//! is reached through `/proc/self/fd/N/`, where N is a descriptor of its directory held by the
//! `SocketName` for as long as the name is used.

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

/// The socket's file name in the data dir.
pub const SOCKET_NAME: &str = "control.sock";

/// The longest path a socket address holds, without its NUL.
const SUN_PATH_MAX: usize = 107;

/// The control socket of the vault in `data_dir`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// A path to `dir/name` short enough for a socket address.
#[derive(Debug)]
pub struct SocketName {
    path: PathBuf,
    /// The directory, when the path goes through its descriptor.
    _dir: Option<OwnedFd>,
}

impl SocketName {
    pub fn new(dir: &Path, name: &str) -> std::io::Result<SocketName> {
        let path = dir.join(name);
        if path.as_os_str().len() <= SUN_PATH_MAX {
            return Ok(SocketName { path, _dir: None });
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::open(dir, flags, Mode::empty())?;
        let path = PathBuf::from(format!("/proc/self/fd/{}/{name}", fd.as_raw_fd()));
        Ok(SocketName { path, _dir: Some(fd) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn long_paths_are_reached_through_their_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let deep = tmp.path().join("d".repeat(100)).join("e".repeat(100));
        std::fs::create_dir_all(&deep).expect("mkdir");
        let name = SocketName::new(&deep, SOCKET_NAME).expect("name");
        assert!(name.path().starts_with("/proc/self/fd"), "{}", name.path().display());
        let listener = UnixListener::bind(name.path()).expect("bind");
        assert!(socket_path(&deep).exists());
        let client = SocketName::new(&deep, SOCKET_NAME).expect("name");
        UnixStream::connect(client.path()).expect("connect");
        listener.accept().expect("accept");
        let short = SocketName::new(tmp.path(), SOCKET_NAME).expect("name");
        assert_eq!(short.path(), socket_path(tmp.path()));
    }
}
