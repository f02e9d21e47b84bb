//! Application requests over a live session: the [`Service`] trait the application
//! implements, and both ends of one request stream.
//!
//! A request is one bidirectional QUIC stream, opened by the requester. The requester writes
//! one frame (a 4-byte big-endian length, then at most [`MAX_REQUEST`] bytes) and finishes
//! its side; the server answers one frame of at most [`MAX_RESPONSE`] bytes and finishes.
//! Anything else on the stream (an oversized length, a frame cut short, bytes after the
//! frame, a stream left open past the idle timeout) resets it with a `wire::close` code;
//! the session itself is not affected.
//!
//! Invariants:
//! - A length is checked against its limit before its payload is buffered.
//! - The server's waits are bounded: the request must arrive whole within the idle timeout,
//!   and each 64 KiB of the answer must be taken by the peer within it too.
//! - Nothing here panics on any input, nor on a service that panics.

use std::sync::Arc;
use std::time::Duration;

use indras_artifacts::PlayerId;
use iroh::endpoint::{
    Connection, ConnectionError, ReadError, ReadExactError, RecvStream, SendStream, WriteError,
};
use tokio::time::timeout;
use tracing::{debug, warn};

use crate::error::{NetError, one_line};
use crate::wire::{MAX_REQUEST, MAX_RESPONSE, close};

/// The application's side of peer requests. Implemented by the sharing layer.
pub trait Service: Send + Sync + 'static {
    /// Answers one request from `peer`, an accepted peer with a live session. Runs on a
    /// blocking thread (tokio `spawn_blocking`); may block on disk. The answer is at most
    /// [`MAX_RESPONSE`] bytes (a longer one is a bug: it is logged and the stream is reset
    /// with `close::SERVICE_FAILED`).
    fn handle(&self, peer: PlayerId, request: Vec<u8>) -> Vec<u8>;

    /// A session with `peer` was installed (it just connected or reconnected). Must not
    /// block long; called from a blocking thread too.
    fn connected(&self, peer: PlayerId);
}

/// The answer is written in pieces of this size, each within the idle timeout.
const WRITE_PIECE: usize = 64 * 1024;

/// What went wrong on one request stream.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// The frame announced this many bytes, over the limit.
    TooLarge(u64),
    /// The stream ended inside the frame.
    Truncated,
    /// More bytes followed the frame.
    Trailing,
    /// The other side reset (or stopped) the stream with this code.
    Reset(u64),
    /// The connection is gone.
    Lost(ConnectionError),
    /// Our side of the stream was already closed, or 0-RTT was rejected.
    Closed(String),
    /// No progress within the idle timeout.
    Idle,
}

impl StreamError {
    /// The code to reset or stop the stream with.
    fn code(&self) -> u32 {
        match self {
            StreamError::TooLarge(_) => close::FRAME_TOO_LARGE,
            StreamError::Truncated => close::TRUNCATED,
            StreamError::Trailing => close::PROTOCOL,
            StreamError::Idle => close::IDLE_TIMEOUT,
            StreamError::Reset(_) | StreamError::Lost(_) | StreamError::Closed(_) => {
                close::CANCELLED
            }
        }
    }

    /// The error a requester sees, `name` being the peer's.
    pub(crate) fn into_net(self, name: &str, max: usize) -> NetError {
        match self {
            StreamError::TooLarge(len) => NetError::ResponseTooLarge(len, max),
            StreamError::Truncated => {
                NetError::Protocol(format!("the answer of {name} ended inside its frame"))
            }
            StreamError::Trailing => {
                NetError::Protocol(format!("{name} sent bytes after its answer"))
            }
            StreamError::Reset(code) => NetError::RequestReset(code),
            StreamError::Lost(e) => {
                NetError::Unreachable(one_line(&format!("connection to {name} lost: {e}")))
            }
            StreamError::Closed(e) => NetError::Protocol(one_line(&e)),
            StreamError::Idle => NetError::Protocol(format!("{name} stopped reading")),
        }
    }
}

impl From<ReadError> for StreamError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Reset(code) => StreamError::Reset(code.into_inner()),
            ReadError::ConnectionLost(e) => StreamError::Lost(e),
            other => StreamError::Closed(other.to_string()),
        }
    }
}

impl From<ReadExactError> for StreamError {
    fn from(e: ReadExactError) -> Self {
        match e {
            ReadExactError::FinishedEarly(_) => StreamError::Truncated,
            ReadExactError::ReadError(e) => e.into(),
        }
    }
}

impl From<WriteError> for StreamError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Stopped(code) => StreamError::Reset(code.into_inner()),
            WriteError::ConnectionLost(e) => StreamError::Lost(e),
            other => StreamError::Closed(other.to_string()),
        }
    }
}

/// Reads the one frame of `recv`, of at most `max` bytes, and the end of the stream after it.
async fn read_only_frame(recv: &mut RecvStream, max: usize) -> Result<Vec<u8>, StreamError> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header).await?;
    let len = u32::from_be_bytes(header);
    let len_usize = usize::try_from(len).map_err(|_| StreamError::TooLarge(u64::from(len)))?;
    if len_usize > max {
        return Err(StreamError::TooLarge(u64::from(len)));
    }
    let mut payload = vec![0u8; len_usize];
    recv.read_exact(&mut payload).await?;
    match recv.read(&mut [0u8; 1]).await? {
        None => Ok(payload),
        Some(_) => Err(StreamError::Trailing),
    }
}

/// Writes `bytes` as one frame. With `idle`, each piece must be taken within it.
async fn write_only_frame(
    send: &mut SendStream,
    bytes: &[u8],
    idle: Option<Duration>,
) -> Result<(), StreamError> {
    let len = u32::try_from(bytes.len()).map_err(|_| StreamError::TooLarge(u64::MAX))?;
    let header = len.to_be_bytes();
    for piece in std::iter::once(&header[..]).chain(bytes.chunks(WRITE_PIECE)) {
        match idle {
            Some(limit) => {
                timeout(limit, send.write_all(piece)).await.map_err(|_| StreamError::Idle)??;
            }
            None => send.write_all(piece).await?,
        }
    }
    send.finish().map_err(|e| StreamError::Closed(e.to_string()))
}

/// Both halves of a request stream. Dropped unsettled, it resets and stops the stream with
/// its code, so a peer never waits on a stream we gave up.
struct Exchange {
    send: SendStream,
    recv: RecvStream,
    /// `None` once the exchange completed.
    code: Option<u32>,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(code) = self.code {
            let code = code.into();
            let _ = self.send.reset(code);
            let _ = self.recv.stop(code);
        }
    }
}

/// Sends `request` on a new stream of `conn` and reads the answer, of at most `max` bytes.
/// Unbounded in time: the caller bounds it (cancelling resets the stream).
pub(crate) async fn ask(
    conn: &Connection,
    request: &[u8],
    max: usize,
) -> Result<Vec<u8>, StreamError> {
    let (send, recv) = conn.open_bi().await.map_err(StreamError::Lost)?;
    let mut ex = Exchange { send, recv, code: Some(close::CANCELLED) };
    let result = async {
        write_only_frame(&mut ex.send, request, None).await?;
        read_only_frame(&mut ex.recv, max).await
    }
    .await;
    ex.code = match &result {
        Ok(_) => None,
        Err(e) => Some(e.code()),
    };
    result
}

/// Serves one request stream of `peer`: reads the request, lets `service` answer it on a
/// blocking thread, writes the answer. Every failure resets the stream, nothing else.
pub(crate) async fn serve(
    service: Option<Arc<dyn Service>>,
    peer: PlayerId,
    send: SendStream,
    recv: RecvStream,
    idle: Duration,
) {
    let mut ex = Exchange { send, recv, code: Some(close::NO_SERVICE) };
    let Some(service) = service else {
        debug!(%peer, "request refused: no service yet");
        return;
    };
    let request = match timeout(idle, read_only_frame(&mut ex.recv, MAX_REQUEST)).await {
        Err(_) => Err(StreamError::Idle),
        Ok(r) => r,
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => {
            debug!(%peer, error = ?e, "bad request stream reset");
            ex.code = Some(e.code());
            return;
        }
    };
    let answer = match tokio::task::spawn_blocking(move || service.handle(peer, request)).await {
        Ok(answer) => answer,
        Err(e) => {
            warn!(%peer, error = %e, "the service failed on a request");
            ex.code = Some(close::SERVICE_FAILED);
            return;
        }
    };
    if answer.len() > MAX_RESPONSE {
        warn!(%peer, len = answer.len(), max = MAX_RESPONSE,
            "the service answered more than the limit; the request is reset");
        ex.code = Some(close::SERVICE_FAILED);
        return;
    }
    match write_only_frame(&mut ex.send, &answer, Some(idle)).await {
        Ok(()) => ex.code = None,
        Err(e) => {
            debug!(%peer, error = ?e, "answer not delivered");
            ex.code = Some(e.code());
        }
    }
}
