//! The daemon's end of the control socket: creating it, accepting connections, checking who
//! connects, answering one request per connection, and removing it.
//!
//! Invariants:
//! - The socket is bound in a fresh private directory (mode 0700), given mode 0600 there, and
//!   only then renamed to `<data dir>/control.sock`: it is never reachable with another mode.
//!   A file already at that path is replaced only if it is a socket no daemon answers on.
//! - Every connection is served on a thread of its own, at most `Config::max_connections` at
//!   once (others get a one-line "busy" error), and ends by its deadlines (`Limits`): no
//!   client, silent, slow or hostile, holds the daemon or grows its memory beyond those.
//! - A connecting process whose uid (`SO_PEERCRED`) is neither the owner's nor root's gets a
//!   one-line refusal, and its request is not looked at.
//! - Nothing here runs on a FUSE thread or waits for a client while stopping: `stop` wakes the
//!   accept thread through a pipe, joins it, and removes the socket only if it is still the
//!   one this server made. Connection threads finish on their own deadlines.

use std::fmt;
use std::io::{self, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use super::addr::{SOCKET_NAME, SocketName, socket_path};
use super::protocol::{
    FrameError, Limits, Request, Response, decode_request, encode_response, read_frame, write_frame,
};

/// Answers requests. Called on connection threads, several at once.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> Reply;
}

/// A response, and what to do once it has been written (or could not be).
pub struct Reply {
    pub response: Response,
    after: Option<Box<dyn FnOnce() + Send>>,
}

impl Reply {
    pub fn new(response: Response) -> Reply {
        Reply { response, after: None }
    }

    /// `response`, then `after`: for a request whose effect would cut the answer off.
    pub fn then(response: Response, after: impl FnOnce() + Send + 'static) -> Reply {
        Reply { response, after: Some(Box::new(after)) }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("response", &self.response)
            .field("after", &self.after.is_some())
            .finish()
    }
}

/// Who may connect, and how much each connection may take.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// The mount owner's uid. Root is always served too.
    pub owner: u32,
    pub limits: Limits,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Config {
    pub fn new(owner: u32) -> Config {
        Config { owner, limits: Limits::default(), max_connections: 8 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("another daemon answers on {}", .0.display())]
    Served(PathBuf),
    #[error("{} exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    #[error("creating {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
}

struct Shared {
    handler: Arc<dyn Handler>,
    config: Config,
    /// Connections being served.
    active: AtomicUsize,
}

/// A listening control socket. Stopping (or dropping) it removes the socket.
pub struct ControlServer {
    path: PathBuf,
    /// The socket file this server made: (device, inode).
    id: (u64, u64),
    /// Closing it wakes the accept thread, which then returns.
    wake: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlServer").field("path", &self.path).finish_non_exhaustive()
    }
}

impl ControlServer {
    /// Listens on `<dir>/control.sock`. The caller must be the only daemon of `dir` (it holds
    /// the data dir's lock), so a socket already there is a dead daemon's.
    pub fn start(
        dir: &Path,
        config: Config,
        handler: Arc<dyn Handler>,
    ) -> Result<ControlServer, StartError> {
        let path = socket_path(dir);
        let io_err = |source| StartError::Io { path: socket_path(dir), source };
        match std::fs::symlink_metadata(&path) {
            Ok(m) if std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()) => {
                let name = SocketName::new(dir, SOCKET_NAME).map_err(io_err)?;
                match UnixStream::connect(name.path()) {
                    Ok(_) => return Err(StartError::Served(path)),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        tracing::info!(path = %path.display(), "replacing a stale control socket");
                    }
                    Err(e) => return Err(io_err(e)),
                }
            }
            Ok(_) => return Err(StartError::NotASocket(path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        let private = tempfile::Builder::new()
            .prefix(".control-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(dir)
            .map_err(io_err)?;
        let name = SocketName::new(private.path(), SOCKET_NAME).map_err(io_err)?;
        let listener = UnixListener::bind(name.path()).map_err(io_err)?;
        std::fs::set_permissions(name.path(), std::fs::Permissions::from_mode(0o600))
            .map_err(io_err)?;
        std::fs::rename(private.path().join(SOCKET_NAME), &path).map_err(io_err)?;
        // Empty now; a failure to remove it leaves only an empty private directory.
        let _ = private.close();
        let meta = std::fs::symlink_metadata(&path).map_err(io_err)?;
        let id = (meta.dev(), meta.ino());
        let mut server = ControlServer { path, id, wake: None, thread: None };
        listener.set_nonblocking(true).map_err(io_err)?;
        let (wake_rx, wake_tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| io_err(e.into()))?;
        server.wake = Some(wake_tx);
        let shared = Arc::new(Shared { handler, config, active: AtomicUsize::new(0) });
        let thread = std::thread::Builder::new()
            .name("indras-control".to_owned())
            .spawn(move || accept_loop(&listener, &wake_rx, &shared))
            .map_err(io_err)?;
        server.thread = Some(thread);
        Ok(server)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting and removes the socket.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        drop(self.wake.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "removing the control socket");
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

fn accept_loop(listener: &UnixListener, wake: &OwnedFd, shared: &Arc<Shared>) {
    loop {
        let mut fds = [PollFd::new(listener, PollFlags::IN), PollFd::new(wake, PollFlags::IN)];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "control socket: poll failed; no longer serving");
                return;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => dispatch(stream, shared),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // Out of descriptors, say: the connection stays queued. Pause rather than spin.
                tracing::warn!(error = %e, "control socket: accept failed");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A connection being served; frees its place when dropped.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn dispatch(stream: UnixStream, shared: &Arc<Shared>) {
    if shared.active.fetch_add(1, Ordering::SeqCst) >= shared.config.max_connections {
        shared.active.fetch_sub(1, Ordering::SeqCst);
        // A fresh socket's buffer takes one short line; never wait for it.
        let _ = stream.set_nonblocking(true);
        if let Ok(frame) = encode_response(&Response::error(
            "the daemon is busy with other commands; try again in a moment",
        )) {
            let _ = (&stream).write(&frame);
        }
        return;
    }
    let slot = Slot(shared.clone());
    let spawned = std::thread::Builder::new()
        .name("indras-control-conn".to_owned())
        .spawn(move || serve(&stream, &slot.0));
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "control socket: no thread for a connection");
    }
}

/// Why the connecting process may not use the socket, if it may not.
fn refusal(stream: &UnixStream, owner: u32) -> Option<String> {
    match rustix::net::sockopt::socket_peercred(stream) {
        Ok(cred) if cred.uid.as_raw() == owner || cred.uid.is_root() => None,
        Ok(cred) => {
            tracing::warn!(
                uid = cred.uid.as_raw(),
                pid = cred.pid.as_raw_nonzero(),
                "control socket: refused a process of another user"
            );
            Some(format!(
                "permission denied: uid {} may not use this mount (only its owner, uid {owner}, \
                 and root may)",
                cred.uid.as_raw()
            ))
        }
        Err(e) => Some(format!("permission denied: the connecting process is unknown ({e})")),
    }
}

/// One exchange: read a request, answer it, close.
fn serve(stream: &UnixStream, shared: &Shared) {
    let limits = shared.config.limits;
    let _ = stream.set_nonblocking(false);
    let refused = refusal(stream, shared.config.owner);
    // The request is read even from a refused process, so that closing never discards unread
    // bytes (which would turn the refusal into a reset).
    let frame = read_frame(stream, limits, Instant::now() + limits.timeout);
    if matches!(frame, Err(FrameError::Closed)) {
        return;
    }
    let reply = match (refused, frame.and_then(|f| decode_request(&f))) {
        (Some(message), _) => Reply::new(Response::error(message)),
        (None, Ok(request)) => shared.handler.handle(request),
        (None, Err(e)) => {
            tracing::debug!(error = %e, "control socket: bad request");
            Reply::new(Response::error(format!("bad request: {e}")))
        }
    };
    let frame = encode_response(&reply.response)
        .ok()
        .filter(|f| f.len() <= limits.max_frame + 1)
        .or_else(|| encode_response(&Response::error("the answer is too large to send")).ok());
    if let Some(frame) = frame
        && let Err(e) = write_frame(stream, &frame, limits, Instant::now() + limits.timeout)
    {
        tracing::debug!(error = %e, "control socket: the answer was not delivered");
    }
    if let Some(after) = reply.after {
        after();
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol::{decode_response, encode_request};
    use super::*;
    use std::io::{BufRead as _, BufReader, Read as _};
    use std::os::unix::fs::FileTypeExt as _;
    use std::sync::mpsc;

    /// Answers `status` with an error naming itself, and `unmount` with a reply that reports
    /// on `done` once written.
    struct Echo {
        done: std::sync::Mutex<mpsc::Sender<()>>,
    }

    impl Handler for Echo {
        fn handle(&self, request: Request) -> Reply {
            match request {
                Request::Status => Reply::new(Response::error("echo: status")),
                Request::Unmount => {
                    let done = self.done.lock().expect("lock").clone();
                    Reply::then(
                        Response::Unmounting { pid: 1, mountpoint: "/m".into() },
                        move || {
                            let _ = done.send(());
                        },
                    )
                }
                _ => Reply::new(Response::error("echo: other")),
            }
        }
    }

    const GUARD: Duration = Duration::from_secs(30);

    fn config(owner: u32) -> Config {
        Config {
            owner,
            limits: Limits { max_frame: 1024, timeout: Duration::from_millis(300) },
            max_connections: 8,
        }
    }

    fn me() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    fn start(dir: &Path, config: Config) -> (ControlServer, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        let handler = Arc::new(Echo { done: std::sync::Mutex::new(tx) });
        (ControlServer::start(dir, config, handler).expect("start"), rx)
    }

    fn connect(dir: &Path) -> UnixStream {
        let s = UnixStream::connect(socket_path(dir)).expect("connect");
        s.set_read_timeout(Some(GUARD)).expect("timeout");
        s
    }

    /// The one line the server answers with.
    fn reply_line(s: &UnixStream) -> String {
        let mut out = String::new();
        BufReader::new(s).read_line(&mut out).expect("read");
        out
    }

    /// Sends raw bytes, then reads the answer.
    fn exchange(dir: &Path, bytes: &[u8]) -> String {
        let mut s = connect(dir);
        s.write_all(bytes).expect("write");
        reply_line(&s)
    }

    fn answer(dir: &Path, request: &Request) -> Response {
        let out = exchange(dir, &encode_request(request).expect("encode"));
        assert!(out.ends_with('\n') && out.lines().count() == 1, "{out:?}");
        decode_response(out.trim_end().as_bytes()).expect("decode")
    }

    fn error_of(out: &str) -> String {
        match decode_response(out.trim_end().as_bytes()).expect("decode") {
            Response::Error { message } => message,
            other => panic!("not an error: {other:?}"),
        }
    }

    #[test]
    fn serves_requests_and_runs_what_follows_an_answer_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, done) = start(dir.path(), config(me()));
        assert_eq!(answer(dir.path(), &Request::Status), Response::error("echo: status"));
        let r = answer(dir.path(), &Request::Unmount);
        assert_eq!(r, Response::Unmounting { pid: 1, mountpoint: "/m".into() });
        done.recv_timeout(GUARD).expect("the reply's follow-up ran");
        server.stop();
        assert!(!socket_path(dir.path()).exists());
    }

    #[test]
    fn the_socket_has_mode_0600_and_no_temporary_directory_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, _) = start(dir.path(), config(me()));
        let meta = std::fs::symlink_metadata(server.path()).expect("stat");
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [SOCKET_NAME]);
    }

    #[test]
    fn garbage_oversized_truncated_unknown_and_silent_clients_get_one_line_and_no_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_server, _) = start(dir.path(), config(me()));
        let p = dir.path();
        assert!(error_of(&exchange(p, b"\x00\xffhello\n")).contains("not a valid message"));
        assert!(error_of(&exchange(p, b"{\"v\":1,\"request\":\"rm\"}\n")).contains("rm"));
        assert!(
            error_of(&exchange(p, b"{\"v\":9,\"request\":\"status\"}\n")).contains("version 9")
        );
        let mut big = vec![b'x'; 64 * 1024];
        big.push(b'\n');
        // The server stops reading at the limit; what it did not read may reset the rest.
        let mut s = connect(p);
        let _ = s.write_all(&big);
        let out = reply_line(&s);
        assert!(error_of(&out).contains("larger than 1024"), "{out:?}");
        // Half a frame, then the write side closed.
        let mut s = connect(p);
        s.write_all(b"{\"v\":1,").expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let out = reply_line(&s);
        assert!(error_of(&out).contains("in the middle"), "{out:?}");
        // Silent: connected, sending nothing, until the server gives up on it; then closed.
        let mut s = connect(p);
        let out = reply_line(&s);
        assert!(error_of(&out).contains("no complete message"), "{out:?}");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("closed");
        assert!(rest.is_empty());
        // Connected and gone: nothing to answer, and the server goes on.
        drop(connect(p));
        assert_eq!(answer(p, &Request::Status), Response::error("echo: status"));
    }

    #[test]
    fn a_connection_past_the_limit_is_told_the_daemon_is_busy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(me());
        cfg.max_connections = 1;
        cfg.limits.timeout = GUARD;
        let (_server, _) = start(dir.path(), cfg);
        // Accepted first (connections are accepted in order), and holding its place.
        let held = connect(dir.path());
        let busy = connect(dir.path());
        let out = reply_line(&busy);
        assert!(error_of(&out).contains("busy"), "{out:?}");
        drop(held);
    }

    #[test]
    fn a_stale_socket_is_replaced_but_a_live_one_or_another_file_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = socket_path(dir.path());
        drop(UnixListener::bind(&path).expect("bind"));
        assert!(path.exists(), "a dropped listener leaves its file");
        let (server, _) = start(dir.path(), config(me()));
        assert_eq!(answer(dir.path(), &Request::Status), Response::error("echo: status"));
        let (tx, _rx) = mpsc::channel();
        let again = ControlServer::start(
            dir.path(),
            config(me()),
            Arc::new(Echo { done: std::sync::Mutex::new(tx) }),
        );
        assert!(matches!(again, Err(StartError::Served(_))), "{again:?}");
        assert_eq!(answer(dir.path(), &Request::Status), Response::error("echo: status"));
        server.stop();
        std::fs::write(&path, b"not a socket").expect("write");
        let (tx, _rx) = mpsc::channel();
        let file = ControlServer::start(
            dir.path(),
            config(me()),
            Arc::new(Echo { done: std::sync::Mutex::new(tx) }),
        );
        assert!(matches!(file, Err(StartError::NotASocket(_))), "{file:?}");
        assert_eq!(std::fs::read(&path).expect("read"), b"not a socket");
    }

    #[test]
    fn stopping_removes_only_its_own_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (server, _) = start(dir.path(), config(me()));
        let path = server.path().to_owned();
        std::fs::rename(&path, dir.path().join("moved")).expect("rename");
        std::fs::write(&path, b"someone else's").expect("write");
        server.stop();
        assert_eq!(std::fs::read(&path).expect("read"), b"someone else's");
    }

    #[test]
    fn a_long_data_dir_path_still_gets_a_socket() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("x".repeat(120));
        std::fs::create_dir(&dir).expect("mkdir");
        let (server, _) = start(&dir, config(me()));
        let name = SocketName::new(&dir, SOCKET_NAME).expect("name");
        let mut s = UnixStream::connect(name.path()).expect("connect");
        s.write_all(&encode_request(&Request::Status).expect("encode")).expect("write");
        assert_eq!(error_of(&reply_line(&s)), "echo: status");
        server.stop();
        assert!(!socket_path(&dir).exists());
    }

    /// Connects from a process of uid 65534: this one, if it is not root, else a thread that
    /// gives up root for itself alone (the raw `setresuid` changes only the calling thread).
    fn exchange_as_another_user(dir: &Path, bytes: Vec<u8>) -> String {
        let path = socket_path(dir);
        if !rustix::process::geteuid().is_root() {
            return exchange(dir, &bytes);
        }
        std::thread::spawn(move || {
            let nobody = rustix::process::Uid::from_raw(65534);
            rustix::thread::set_thread_res_uid(nobody, nobody, nobody).expect("setresuid");
            let mut s = UnixStream::connect(&path).expect("connect as uid 65534");
            s.set_read_timeout(Some(GUARD)).expect("timeout");
            s.write_all(&bytes).expect("write");
            reply_line(&s)
        })
        .join()
        .expect("thread")
    }

    #[test]
    fn only_the_owner_and_root_are_served() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        // The owner is neither this process nor uid 65534.
        let owner = if me() == 0 { 4242 } else { me() + 1 };
        let (server, _) = start(tmp.path(), config(owner));
        // The mode keeps others out already; opened up, the credentials check still does.
        std::fs::set_permissions(server.path(), std::fs::Permissions::from_mode(0o666))
            .expect("chmod");
        let status = encode_request(&Request::Status).expect("encode");
        let out = exchange_as_another_user(tmp.path(), status.clone());
        let message = error_of(&out);
        assert!(message.starts_with("permission denied: uid 65534 "), "{message}");
        assert!(message.contains(&format!("uid {owner}")), "{message}");
        if me() == 0 {
            // Root is served whoever owns the mount.
            assert_eq!(answer(tmp.path(), &Request::Status), Response::error("echo: status"));
        }
    }
}
