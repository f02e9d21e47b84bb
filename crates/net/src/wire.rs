//! The wire protocol spoken on our ALPN: message types, close codes, and length-prefixed
//! framing.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes. On the control stream
//! the bytes are a postcard-encoded [`Message`]; on an application request stream they are
//! the application's own (one request frame, one answer frame, at most [`MAX_REQUEST`] and
//! [`MAX_RESPONSE`] bytes). Every read is bounded by a size limit checked *before* any
//! payload is buffered, so a peer can never make us allocate more than the limit for one
//! frame.
//!
//! Invariants:
//! - Messages only grow by appending enum variants and appending fields at the end of a
//!   struct. A decoder ignores trailing bytes, so an older side still reads the `version`
//!   of a newer side's `Hello` and can refuse it with [`close::UNSUPPORTED_VERSION`].
//! - [`read_frame`] returns `Ok(None)` only on a clean end of stream at a frame boundary; a
//!   stream that ends inside a frame is [`FrameError::Truncated`].
//! - Nothing here panics on any input.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The ALPN of our protocol. The trailing digit is the major protocol generation; the
/// version inside `Hello` negotiates within it.
pub const ALPN: &[u8] = b"indras/1";

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The oldest protocol version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The largest control frame payload, in bytes.
pub const MAX_CONTROL_FRAME: usize = 64 * 1024;

/// The largest application request, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;

/// The largest application answer, in bytes.
pub const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// Longest display name carried in a message, in bytes. Longer names are cut.
pub const MAX_NAME_LEN: usize = 64;

/// Most addresses carried in a message. Extra addresses are dropped.
pub const MAX_ADDRS: usize = 16;

/// Application close codes sent when we close a connection, reset a stream we send on, or
/// stop one we receive on.
pub mod close {
    /// A normal close: the work is done.
    pub const NORMAL: u32 = 0;
    /// The peer sent bytes that do not decode as a message, or a message out of place.
    pub const PROTOCOL: u32 = 1;
    /// The peer announced a frame larger than the limit.
    pub const FRAME_TOO_LARGE: u32 = 2;
    /// The peer's `Hello` carries a version we do not speak.
    pub const UNSUPPORTED_VERSION: u32 = 3;
    /// We refused the peer (not a peer, pending, or a bad invite); see the `Refused` frame.
    pub const REFUSED: u32 = 4;
    /// The peer did not complete the handshake in time.
    pub const HANDSHAKE_TIMEOUT: u32 = 5;
    /// The peer sent nothing for longer than the idle timeout.
    pub const IDLE_TIMEOUT: u32 = 6;
    /// Another connection with the same peer won; this one is redundant.
    pub const REPLACED: u32 = 7;
    /// The peer was removed from our book.
    pub const REMOVED: u32 = 8;
    /// We are shutting down.
    pub const SHUTDOWN: u32 = 9;
    /// Too many connections are being set up right now.
    pub const BUSY: u32 = 10;
    /// The stream ended in the middle of a frame.
    pub const TRUNCATED: u32 = 11;
    /// A request stream: the application does not serve requests (yet).
    pub const NO_SERVICE: u32 = 12;
    /// A request stream: the application failed to answer (it panicked, or its answer
    /// exceeds [`super::MAX_RESPONSE`]).
    pub const SERVICE_FAILED: u32 = 13;
    /// A request stream: the requester gave up on it (its timeout passed).
    pub const CANCELLED: u32 = 14;

    /// A few words on what `code` means, for messages.
    pub fn describe(code: u64) -> &'static str {
        match u32::try_from(code) {
            Ok(NORMAL) => "normal close",
            Ok(PROTOCOL) => "protocol error",
            Ok(FRAME_TOO_LARGE) => "frame too large",
            Ok(UNSUPPORTED_VERSION) => "unsupported version",
            Ok(REFUSED) => "refused",
            Ok(HANDSHAKE_TIMEOUT) => "handshake timeout",
            Ok(IDLE_TIMEOUT) => "idle timeout",
            Ok(REPLACED) => "replaced by another connection",
            Ok(REMOVED) => "removed",
            Ok(SHUTDOWN) => "shutting down",
            Ok(BUSY) => "busy",
            Ok(TRUNCATED) => "truncated frame",
            Ok(NO_SERVICE) => "no service to answer requests yet",
            Ok(SERVICE_FAILED) => "the service failed to answer",
            Ok(CANCELLED) => "cancelled",
            _ => "unknown code",
        }
    }
}

/// Every message of the control stream.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Message {
    /// The dialer's first message.
    Hello(Hello),
    /// The acceptor's answer when it admits the dialer.
    Welcome(Welcome),
    /// The acceptor's answer when it does not; the connection closes after it.
    Refused(Refusal),
    /// Liveness probe; the other side answers `Pong` with the same nonce.
    Ping(u64),
    /// Answer to `Ping`.
    Pong(u64),
}

/// The dialer introduces itself.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    /// The dialer's display name (the acceptor's default local name for it).
    pub name: String,
    /// Direct addresses the dialer can be reached at.
    pub addrs: Vec<SocketAddr>,
    /// The dialer's home relay, if any.
    pub relay: Option<String>,
    /// The one-time secret of an invitation ticket, when redeeming one.
    pub invite: Option<[u8; 32]>,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("version", &self.version)
            .field("name", &self.name)
            .field("addrs", &self.addrs)
            .field("relay", &self.relay)
            .field("invite", &self.invite.map(|_| "<secret>"))
            .finish()
    }
}

/// The acceptor admits the dialer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Welcome {
    /// The version both sides now speak.
    pub version: u16,
    pub name: String,
    pub addrs: Vec<SocketAddr>,
    pub relay: Option<String>,
}

/// Why the acceptor refused a dialer.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Refusal {
    /// The dialer is not a peer and presented no valid invitation; recorded as a request.
    NotAPeer,
    /// The dialer's connection request is waiting for the user to accept it.
    Pending,
    /// The invitation has expired.
    InviteExpired,
    /// The invitation was already used.
    InviteUsed,
    /// The invitation is not known to the acceptor.
    InviteUnknown,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::NotAPeer => "not a peer (recorded as a connection request)",
            Refusal::Pending => "connection request not yet accepted",
            Refusal::InviteExpired => "ticket expired",
            Refusal::InviteUsed => "ticket already used",
            Refusal::InviteUnknown => "ticket not known to the inviter",
        })
    }
}

/// What went wrong reading or writing a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(u64),
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("frame does not decode: {0}")]
    Decode(String),
    #[error("stream error: {0}")]
    Io(String),
}

impl FrameError {
    /// The close code that answers this error.
    pub fn close_code(&self) -> u32 {
        match self {
            FrameError::TooLarge(_) => close::FRAME_TOO_LARGE,
            FrameError::Truncated => close::TRUNCATED,
            FrameError::Decode(_) => close::PROTOCOL,
            FrameError::Io(_) => close::NORMAL,
        }
    }
}

/// Encodes `msg` as one frame (length prefix included).
pub fn encode(msg: &Message, max: usize) -> Result<Vec<u8>, FrameError> {
    let payload = postcard::to_stdvec(msg).map_err(|e| FrameError::Decode(e.to_string()))?;
    if payload.len() > max {
        return Err(FrameError::TooLarge(payload.len() as u64));
    }
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge(u64::MAX))?;
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes one frame's payload (without its length prefix).
pub fn decode(payload: &[u8]) -> Result<Message, FrameError> {
    postcard::from_bytes(payload).map_err(|e| FrameError::Decode(e.to_string()))
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Message,
    max: usize,
) -> Result<usize, FrameError> {
    let bytes = encode(msg, max)?;
    w.write_all(&bytes).await.map_err(|e| FrameError::Io(e.to_string()))?;
    Ok(bytes.len())
}

/// Reads one frame of at most `max` payload bytes. `Ok(None)` is a clean end of stream.
///
/// Not cancel-safe: a cancelled read loses the bytes of a partly read frame, so callers
/// either run it to completion or drop the stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Message>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        let n = r.read(&mut header[got..]).await.map_err(|e| FrameError::Io(e.to_string()))?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(FrameError::Truncated) };
        }
        got += n;
    }
    let len = u32::from_be_bytes(header);
    let len_usize = usize::try_from(len).map_err(|_| FrameError::TooLarge(u64::from(len)))?;
    if len_usize > max {
        return Err(FrameError::TooLarge(u64::from(len)));
    }
    let mut payload = vec![0u8; len_usize];
    r.read_exact(&mut payload).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
        _ => FrameError::Io(e.to_string()),
    })?;
    decode(&payload).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            name: "alice".into(),
            addrs: vec!["127.0.0.1:4433".parse().unwrap()],
            relay: None,
            invite: Some([7; 32]),
        }
    }

    fn all_messages() -> Vec<Message> {
        vec![
            Message::Hello(hello()),
            Message::Welcome(Welcome {
                version: 1,
                name: "bob".into(),
                addrs: vec![],
                relay: Some("https://relay.example./".into()),
            }),
            Message::Refused(Refusal::InviteUsed),
            Message::Ping(u64::MAX),
            Message::Pong(0),
        ]
    }

    #[tokio::test]
    async fn frames_round_trip_back_to_back() {
        let mut buf = Vec::new();
        for m in all_messages() {
            write_frame(&mut buf, &m, MAX_CONTROL_FRAME).await.unwrap();
        }
        let mut r = buf.as_slice();
        for m in all_messages() {
            assert_eq!(read_frame(&mut r, MAX_CONTROL_FRAME).await.unwrap(), Some(m));
        }
        assert_eq!(read_frame(&mut r, MAX_CONTROL_FRAME).await.unwrap(), None);
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_reading_the_payload() {
        let mut bytes = u32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let err = read_frame(&mut bytes.as_slice(), MAX_CONTROL_FRAME).await.unwrap_err();
        assert_eq!(err, FrameError::TooLarge(u64::from(u32::MAX)));
        assert_eq!(err.close_code(), close::FRAME_TOO_LARGE);
        let limit = u32::try_from(MAX_CONTROL_FRAME + 1).unwrap().to_be_bytes();
        let err = read_frame(&mut limit.as_slice(), MAX_CONTROL_FRAME).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)));
    }

    #[tokio::test]
    async fn truncated_frames_are_errors_not_clean_ends() {
        let frame = encode(&Message::Hello(hello()), MAX_CONTROL_FRAME).unwrap();
        for cut in 1..frame.len() {
            let err = read_frame(&mut &frame[..cut], MAX_CONTROL_FRAME).await.unwrap_err();
            assert_eq!(err, FrameError::Truncated, "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn garbage_payloads_decode_to_errors() {
        for garbage in [&[0xff_u8; 8][..], &[5, 1, 2, 3][..], &[][..], &[0, 0xff, 0xff, 0xff][..]] {
            let mut frame = (garbage.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(garbage);
            let err = read_frame(&mut frame.as_slice(), MAX_CONTROL_FRAME).await.unwrap_err();
            assert!(matches!(err, FrameError::Decode(_)), "{garbage:?}: {err:?}");
        }
    }

    #[test]
    fn a_newer_hello_with_appended_fields_still_shows_its_version() {
        let mut payload =
            postcard::to_stdvec(&Message::Hello(Hello { version: 9, ..hello() })).unwrap();
        payload.extend_from_slice(b"fields from the future");
        match decode(&payload).unwrap() {
            Message::Hello(h) => assert_eq!(h.version, 9),
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn encode_enforces_the_limit_and_debug_hides_the_secret() {
        let big = Message::Hello(Hello { name: "x".repeat(100), ..hello() });
        assert!(matches!(encode(&big, 64), Err(FrameError::TooLarge(_))));
        let shown = format!("{:?}", hello());
        assert!(shown.contains("<secret>") && !shown.contains("7, 7"), "{shown}");
    }
}
