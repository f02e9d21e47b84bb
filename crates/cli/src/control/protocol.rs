//! The control protocol's messages and frames, and bounded reads and writes of them.
//!
//! One connection carries one exchange: the client writes one request frame, the daemon writes
//! one response frame and closes. A frame is one line: a JSON object with the protocol version
//! `v` and the message (`{"v":1,"request":"status"}`), ended by a newline.
//!
//! Invariants: a frame is at most `Limits::max_frame` bytes before its newline, on the way in
//! and out; every read and write finishes by a deadline (a silent or trickling peer costs at
//! most the deadline); reading holds at most one frame and one small buffer; anything malformed,
//! oversized, truncated, late or of another version is a `FrameError`, never a panic. Bytes
//! after the newline are ignored.
//!
//! `Request` and `Response` grow by variants; each request a daemon accepts is handled in
//! `control::daemon`.

use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use indras_fuse::Status;
use indras_fuse::network::{PeerJson, RealmJson};
use serde::{Deserialize, Serialize};

use crate::history::{Pick, SnapshotJson, VersionJson};

/// The version this build speaks. A frame of any other version is refused.
pub const VERSION: u32 = 1;

/// What a connection may send and how long it may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame, in bytes before its newline.
    pub max_frame: usize,
    /// How long one frame may take to arrive or to be written.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_frame: 1 << 20, timeout: Duration::from_secs(5) }
    }
}

/// What the command line asks of a mount's daemon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// The mount's status, as `.indra/status.json` shows it.
    Status,
    /// Commit every open file durably and unmount. Answered before the daemon stops.
    Unmount,
    /// A one-time invitation ticket, valid this many seconds.
    Invite { valid_secs: u64 },
    /// Peer with the inviter of `ticket`, under our local name `name`.
    PeerAdd { name: String, ticket: String },
    /// Every peer and pending connection request, with live figures.
    PeerList,
    /// Accept the pending connection request `name`.
    PeerAccept { name: String },
    /// Reject (and forget) the pending connection request `name`.
    PeerReject { name: String },
    /// Forget the peer `name` and close its connection.
    PeerRemove { name: String },
    /// Grant the peers `with` (our names for them) access to the file or folder at `path`
    /// (its names from the mount's root: `vault/...`, or `peers/...` to share on what a
    /// permanent grant gave us), in `mode`.
    Share { path: Vec<String>, with: Vec<String>, mode: ShareMode },
    /// Recall the grants of `path`: those to `from`, or all (`from` empty).
    Recall { path: Vec<String>, from: Vec<String> },
    /// The grants we gave: of `path`, or all.
    Grants { path: Option<Vec<String>> },
    /// Create realm `name` of us and the peers `members` (our names for them).
    RealmCreate { name: String, members: Vec<String> },
    /// Every realm we belong to, as `.indra/realms.json` lists them.
    RealmList,
    /// Add the peer `peer` to realm `name`, which we created.
    RealmAdd { name: String, peer: String },
    /// Remove the member `peer` from realm `name`, which we created.
    RealmRemove { name: String, peer: String },
    /// Leave realm `name` (its creator dissolves it).
    RealmLeave { name: String },
    /// The versions of the file at `path` (its names from the vault's root), or of the deleted
    /// files history keeps by that name.
    History { path: Vec<String> },
    /// Restore the file at `path` to a version, or bring a deleted one back (at `to`, names
    /// from the vault's root, or where it was).
    Restore { path: Vec<String>, pick: Pick, to: Option<Vec<String>> },
    /// Take the snapshot `name`.
    SnapshotCreate { name: String },
    /// Every snapshot.
    SnapshotList,
    /// Delete the snapshot `name`.
    SnapshotDelete { name: String },
}

/// How a `share` grants access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareMode {
    Revocable,
    Permanent,
    /// Until this many seconds since the Unix epoch.
    Timed {
        until_secs: i64,
    },
    Transfer,
}

/// One grant we gave, as `grants` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantJson {
    /// The file or folder: from the vault's root (`notes/ideas.md`), or under `peers/`.
    pub path: String,
    /// Our name for the grantee (its player id when it is no longer a peer).
    pub peer: String,
    pub player_id: String,
    /// `revocable`, `permanent`, `timed` or `transfer`.
    pub mode: String,
    pub granted_at: String,
    pub expires_at: Option<String>,
}

/// The daemon's answer to a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Status(Box<Status>),
    /// The daemon is stopping: it commits, unmounts `mountpoint`, and process `pid` exits.
    Unmounting {
        pid: u32,
        mountpoint: String,
    },
    /// An invitation: the ticket to hand to the invitee.
    Ticket {
        ticket: String,
        valid_secs: u64,
    },
    /// The peers, as `.indra/peers.json` lists them.
    Peers(Vec<PeerJson>),
    /// Grants we gave.
    Grants(Vec<GrantJson>),
    /// The realms we belong to.
    Realms(Vec<RealmJson>),
    /// A file's versions.
    History(Vec<VersionJson>),
    /// The snapshots.
    Snapshots(Vec<SnapshotJson>),
    /// What was done, in one line for the user.
    Done {
        message: String,
    },
    /// The request was refused or failed; the message is one line for the user.
    Error {
        message: String,
    },
}

impl Response {
    pub fn error(message: impl Into<String>) -> Response {
        Response::Error { message: message.into() }
    }

    /// The variant's name on the wire, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Status(_) => "status",
            Response::Unmounting { .. } => "unmounting",
            Response::Ticket { .. } => "ticket",
            Response::Peers(_) => "peers",
            Response::Grants(_) => "grants",
            Response::Realms(_) => "realms",
            Response::History(_) => "history",
            Response::Snapshots(_) => "snapshots",
            Response::Done { .. } => "done",
            Response::Error { .. } => "error",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RequestFrame {
    v: u32,
    request: Request,
}

#[derive(Serialize, Deserialize)]
struct ResponseFrame {
    v: u32,
    response: Response,
}

/// Only the version, read before the message so that another version's frame is refused as
/// such rather than as malformed.
#[derive(Deserialize)]
struct Version {
    v: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the connection closed before a message")]
    Closed,
    #[error("the connection closed in the middle of a message")]
    Truncated,
    #[error("the message is larger than {0} bytes")]
    TooLarge(usize),
    #[error("no complete message within {}s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("not a valid message: {0}")]
    Malformed(String),
    #[error("protocol version {0} is not supported (this side speaks {VERSION})")]
    Version(u32),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A request as one frame, newline included.
pub fn encode_request(request: &Request) -> Result<Vec<u8>, FrameError> {
    encode(&RequestFrame { v: VERSION, request: request.clone() })
}

/// A response as one frame, newline included.
pub fn encode_response(response: &Response) -> Result<Vec<u8>, FrameError> {
    encode(&ResponseFrame { v: VERSION, response: response.clone() })
}

fn encode(frame: &impl Serialize) -> Result<Vec<u8>, FrameError> {
    let mut out = serde_json::to_vec(frame).map_err(|e| FrameError::Malformed(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// The request in a frame (without its newline).
pub fn decode_request(frame: &[u8]) -> Result<Request, FrameError> {
    check_version(frame)?;
    let f: RequestFrame = parse(frame)?;
    Ok(f.request)
}

/// The response in a frame (without its newline).
pub fn decode_response(frame: &[u8]) -> Result<Response, FrameError> {
    check_version(frame)?;
    let f: ResponseFrame = parse(frame)?;
    Ok(f.response)
}

fn check_version(frame: &[u8]) -> Result<(), FrameError> {
    let Version { v } = parse(frame)?;
    if v == VERSION { Ok(()) } else { Err(FrameError::Version(v)) }
}

fn parse<'a, T: Deserialize<'a>>(frame: &'a [u8]) -> Result<T, FrameError> {
    serde_json::from_slice(frame).map_err(|e| FrameError::Malformed(e.to_string()))
}

/// The time left until `deadline`, or `Timeout` once none is.
fn left(deadline: Instant, limits: Limits) -> Result<Duration, FrameError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or(FrameError::Timeout(limits.timeout))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Reads one frame (without its newline) by `deadline`.
pub fn read_frame(
    stream: &UnixStream,
    limits: Limits,
    deadline: Instant,
) -> Result<Vec<u8>, FrameError> {
    let mut frame = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(left(deadline, limits)?))?;
        let n = match (&mut &*stream).read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Err(FrameError::Timeout(limits.timeout)),
            Err(e) => return Err(FrameError::Io(e)),
        };
        if n == 0 {
            return Err(if frame.is_empty() { FrameError::Closed } else { FrameError::Truncated });
        }
        let (part, complete) = match chunk[..n].iter().position(|&b| b == b'\n') {
            Some(end) => (&chunk[..end], true),
            None => (&chunk[..n], false),
        };
        if frame.len() + part.len() > limits.max_frame {
            return Err(FrameError::TooLarge(limits.max_frame));
        }
        frame.extend_from_slice(part);
        if complete {
            return Ok(frame);
        }
    }
}

/// Writes one encoded frame (newline included) by `deadline`.
pub fn write_frame(
    stream: &UnixStream,
    frame: &[u8],
    limits: Limits,
    deadline: Instant,
) -> Result<(), FrameError> {
    if frame.len() > limits.max_frame + 1 {
        return Err(FrameError::TooLarge(limits.max_frame));
    }
    let mut rest = frame;
    while !rest.is_empty() {
        stream.set_write_timeout(Some(left(deadline, limits)?))?;
        match (&mut &*stream).write(rest) {
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(FrameError::Timeout(limits.timeout)),
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use indras_artifacts::{Options, Timestamp, Vault};
    use std::net::Shutdown;

    fn small() -> Limits {
        Limits { max_frame: 64, timeout: Duration::from_millis(200) }
    }

    fn soon(limits: Limits) -> Instant {
        Instant::now() + limits.timeout
    }

    /// Sends `bytes` from one end of a socket pair (then closes it, if asked) and reads a frame
    /// at the other.
    fn read_after(bytes: &[u8], close: bool, limits: Limits) -> Result<Vec<u8>, FrameError> {
        let (a, b) = UnixStream::pair().expect("pair");
        (&a).write_all(bytes).expect("write");
        if close {
            a.shutdown(Shutdown::Write).expect("shutdown");
        }
        read_frame(&b, limits, soon(limits))
    }

    #[test]
    fn requests_and_responses_round_trip() {
        for r in [Request::Status, Request::Unmount] {
            let frame = encode_request(&r).expect("encode");
            assert_eq!(frame.last(), Some(&b'\n'));
            assert_eq!(decode_request(&frame[..frame.len() - 1]).expect("decode"), r);
        }
        assert_eq!(
            encode_request(&Request::Status).unwrap(),
            b"{\"v\":1,\"request\":\"status\"}\n"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::open(dir.path(), "alice", &Options::default()).expect("open");
        let status = Status::build(&vault, Timestamp::now(), None).expect("status");
        for r in [
            Response::Status(Box::new(status)),
            Response::Unmounting { pid: 7, mountpoint: "/mnt/a b".into() },
            Response::error("no"),
        ] {
            let frame = encode_response(&r).expect("encode");
            let (a, b) = UnixStream::pair().expect("pair");
            write_frame(&a, &frame, Limits::default(), soon(Limits::default())).expect("write");
            let back = read_frame(&b, Limits::default(), soon(Limits::default())).expect("read");
            assert_eq!(decode_response(&back).expect("decode"), r);
        }
    }

    #[test]
    fn garbage_and_unknown_messages_are_malformed() {
        for bad in [
            &b""[..],
            b"\xff\xfe",
            b"status",
            b"[1,2]",
            b"{\"v\":1}",
            b"{\"v\":\"1\",\"request\":\"status\"}",
            b"{\"v\":1,\"request\":\"format_the_disk\"}",
            b"{\"v\":1,\"request\":{\"status\":[]}}",
            b"{\"v\":1,\"request\":\"status\"",
            &[b'['; 10_000],
        ] {
            assert!(
                matches!(decode_request(bad), Err(FrameError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let unknown = decode_request(b"{\"v\":1,\"request\":\"format_the_disk\"}").unwrap_err();
        assert!(unknown.to_string().contains("format_the_disk"), "{unknown}");
        assert!(matches!(
            decode_response(b"{\"v\":1,\"response\":7}"),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn another_version_is_refused_as_such() {
        let e = decode_request(b"{\"v\":2,\"request\":\"whatever_v2_has\"}").unwrap_err();
        assert!(matches!(e, FrameError::Version(2)), "{e}");
        assert!(e.to_string().contains("version 2"), "{e}");
        let e = decode_response(b"{\"v\":0,\"response\":{\"error\":{\"message\":\"x\"}}}");
        assert!(matches!(e, Err(FrameError::Version(0))));
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_on_read_and_write() {
        let limits = small();
        let long = vec![b'x'; limits.max_frame + 1];
        assert!(matches!(read_after(&long, false, limits), Err(FrameError::TooLarge(64))));
        let mut line = long.clone();
        line.push(b'\n');
        assert!(matches!(read_after(&line, true, limits), Err(FrameError::TooLarge(64))));
        // Exactly the limit is fine; what follows the newline is ignored.
        let mut exact = vec![b'y'; limits.max_frame];
        exact.extend_from_slice(b"\nmore");
        assert_eq!(read_after(&exact, true, limits).expect("read").len(), limits.max_frame);
        let (a, _b) = UnixStream::pair().expect("pair");
        assert!(matches!(
            write_frame(&a, &line, limits, soon(limits)),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn truncated_closed_and_silent_peers_end_in_errors() {
        let limits = small();
        assert!(matches!(read_after(b"{\"v\":1,", true, limits), Err(FrameError::Truncated)));
        assert!(matches!(read_after(b"", true, limits), Err(FrameError::Closed)));
        // Nothing, or part of a frame, and the peer stays: the deadline ends the wait.
        assert!(matches!(read_after(b"", false, limits), Err(FrameError::Timeout(_))));
        assert!(matches!(read_after(b"{\"v\"", false, limits), Err(FrameError::Timeout(_))));
        // A deadline already passed fails before reading.
        let (_a, b) = UnixStream::pair().expect("pair");
        let past = Instant::now().checked_sub(Duration::from_secs(1)).expect("past");
        assert!(matches!(read_frame(&b, limits, past), Err(FrameError::Timeout(_))));
    }

    #[test]
    fn a_peer_that_never_reads_cannot_block_a_write() {
        let limits = Limits { max_frame: 64 << 20, timeout: Duration::from_millis(200) };
        let (a, _b) = UnixStream::pair().expect("pair");
        // Far more than a socket buffer holds, and nobody reads it.
        let mut frame = vec![b' '; 32 << 20];
        frame.push(b'\n');
        assert!(matches!(
            write_frame(&a, &frame, limits, soon(limits)),
            Err(FrameError::Timeout(_))
        ));
    }
}
