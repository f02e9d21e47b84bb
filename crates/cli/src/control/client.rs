//! The command line's end of the control socket: one request to the daemon of a data dir.
//!
//! Invariants: no socket, or one nobody listens on (a killed daemon's), is "no daemon"
//! (`Ok(None)`), never an error, so a command can fall back to the store; every other failure
//! (permission, timeout, a malformed or refused answer) is an error with one line to say; the
//! exchange finishes by its deadlines, so a stopped or hung daemon cannot hang a command. A
//! daemon's `Response::Error` comes back as `ClientError::Daemon`, so callers match only answers.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::addr::{SOCKET_NAME, SocketName, socket_path};
use super::protocol::{
    FrameError, Limits, Request, Response, decode_response, encode_request, read_frame, write_frame,
};

/// How long a command waits for its answer: a status reads the whole store's figures.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "{}: permission denied (only the mount's owner and root may use it)",
        .0.display()
    )]
    Denied(PathBuf),
    #[error("{}: {source}", .socket.display())]
    Connect { socket: PathBuf, source: io::Error },
    #[error("the daemon on {}: {source}", .socket.display())]
    Exchange { socket: PathBuf, source: FrameError },
    #[error("{message}")]
    Daemon { message: String },
}

/// Asks the daemon of `data_dir`; `None` when no daemon listens there.
pub fn call(
    data_dir: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Option<Response>, ClientError> {
    let socket = socket_path(data_dir);
    let connect_err = |source| ClientError::Connect { socket: socket.clone(), source };
    let name = match SocketName::new(data_dir, SOCKET_NAME) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(connect_err(e)),
    };
    let stream = match UnixStream::connect(name.path()) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(ClientError::Denied(socket));
        }
        Err(e) => return Err(connect_err(e)),
    };
    let exchange_err = |source| ClientError::Exchange { socket: socket.clone(), source };
    let send = Limits::default();
    let frame = encode_request(request).map_err(exchange_err)?;
    write_frame(&stream, &frame, send, Instant::now() + send.timeout).map_err(exchange_err)?;
    let receive = Limits { timeout, ..Limits::default() };
    let frame =
        read_frame(&stream, receive, Instant::now() + receive.timeout).map_err(exchange_err)?;
    match decode_response(&frame).map_err(exchange_err)? {
        Response::Error { message } => Err(ClientError::Daemon { message }),
        answer => Ok(Some(answer)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::server::{Config, ControlServer, Handler, Reply};
    use super::*;
    use std::sync::Arc;

    struct Fixed;

    impl Handler for Fixed {
        fn handle(&self, request: Request) -> Reply {
            match request {
                Request::Status => Reply::new(Response::error("no status here")),
                Request::Unmount => {
                    Reply::new(Response::Unmounting { pid: 3, mountpoint: "/m".into() })
                }
                _ => Reply::new(Response::error("not here")),
            }
        }
    }

    const WAIT: Duration = Duration::from_secs(30);

    #[test]
    fn no_socket_or_a_dead_one_is_no_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(call(dir.path(), &Request::Status, WAIT).expect("call").is_none());
        assert!(call(&dir.path().join("absent"), &Request::Status, WAIT).expect("call").is_none());
        drop(std::os::unix::net::UnixListener::bind(socket_path(dir.path())).expect("bind"));
        assert!(call(dir.path(), &Request::Status, WAIT).expect("call").is_none());
    }

    #[test]
    fn answers_come_back_and_errors_are_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = rustix::process::geteuid().as_raw();
        let server =
            ControlServer::start(dir.path(), Config::new(me), Arc::new(Fixed)).expect("start");
        let answer = call(dir.path(), &Request::Unmount, WAIT).expect("call");
        assert_eq!(answer, Some(Response::Unmounting { pid: 3, mountpoint: "/m".into() }));
        let e = call(dir.path(), &Request::Status, WAIT).unwrap_err();
        assert!(matches!(&e, ClientError::Daemon { message } if message == "no status here"));
        server.stop();
        assert!(call(dir.path(), &Request::Status, WAIT).expect("call").is_none());
    }

    #[test]
    fn a_daemon_that_never_answers_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Listening, never accepting: connect succeeds, and no answer ever comes.
        let _listener =
            std::os::unix::net::UnixListener::bind(socket_path(dir.path())).expect("bind");
        let e = call(dir.path(), &Request::Status, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(&e, ClientError::Exchange { source: FrameError::Timeout(_), .. }), "{e}");
    }
}
