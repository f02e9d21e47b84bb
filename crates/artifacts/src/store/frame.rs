//! The framing of the intent log's records (the files `intent.0` and `intent.1` beside the
//! store). Two kinds of record share the files: the mount's records of a file's writes, and
//! the store's own redo records (`Vault::sync_through_log`), which every open of the store
//! replays before anything reads it.
//!
//! A record is `magic u32 | body length u32 | first 16 bytes of BLAKE3(body) | body`,
//! little-endian. Reading stops at the first record that is short, has an unknown magic or
//! length, or fails its checksum: records are made durable in order, so nothing after a torn
//! record was acknowledged.

/// The magic of a record of a file's writes (the mount's).
pub const WRITES_MAGIC: u32 = u32::from_le_bytes(*b"INTL");
/// The magic of a redo record of the store's rows.
pub const STORE_MAGIC: u32 = u32::from_le_bytes(*b"INRD");
/// A record's header: magic, body length and checksum.
pub const FRAME_HEADER: usize = 4 + 4 + 16;
/// The longest body a record may have.
pub const FRAME_BODY_MAX: usize = 16 << 20;

/// One record's magic and body, checksum verified.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Where the record starts.
    pub at: u64,
    pub magic: u32,
    pub body: &'a [u8],
}

/// `body` framed as a record with `magic`.
pub fn frame(magic: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER + body.len());
    out.extend_from_slice(&magic.to_le_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&blake3::hash(body).as_bytes()[..16]);
    out.extend_from_slice(body);
    out
}

/// The records at the start of `bytes`, up to the first that is not whole and sound, and
/// where they end.
pub fn frames(bytes: &[u8]) -> (Vec<Frame<'_>>, u64) {
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= FRAME_HEADER {
        let head = &bytes[at..at + FRAME_HEADER];
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if ![WRITES_MAGIC, STORE_MAGIC].contains(&magic)
            || len > FRAME_BODY_MAX
            || bytes.len() - at - FRAME_HEADER < len
        {
            break;
        }
        let body = &bytes[at + FRAME_HEADER..at + FRAME_HEADER + len];
        if blake3::hash(body).as_bytes()[..16] != head[8..] {
            break;
        }
        out.push(Frame { at: at as u64, magic, body });
        at += FRAME_HEADER + len;
    }
    (out, at as u64)
}

/// The two log files' names.
pub const LOG_FILES: [&str; 2] = ["intent.0", "intent.1"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stop_at_the_first_unsound_record() {
        let mut bytes = frame(WRITES_MAGIC, b"one");
        bytes.extend(frame(STORE_MAGIC, b"two"));
        let whole = bytes.len() as u64;
        let mut torn = frame(WRITES_MAGIC, b"three");
        torn.pop();
        bytes.extend(&torn);
        let (got, end) = frames(&bytes);
        assert_eq!(end, whole);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].magic, got[0].body), (WRITES_MAGIC, &b"one"[..]));
        assert_eq!((got[1].magic, got[1].body), (STORE_MAGIC, &b"two"[..]));
        // A flipped bit fails the checksum; an unknown magic ends the records too.
        let mut bad = frame(STORE_MAGIC, b"x");
        bad[FRAME_HEADER] ^= 1;
        assert!(frames(&bad).0.is_empty());
        assert!(frames(&frame(7, b"x")).0.is_empty());
    }
}
