//! The sharing protocol: one postcard-encoded [`Request`] and one [`Response`] per exchange,
//! carried by the network layer's request streams (one stream per exchange).
//!
//! Invariants:
//! - Messages only grow by appending enum variants and struct fields at the end.
//! - Decoding never panics; a request that does not decode is answered `Denied`, and a
//!   response that does not decode is an error for that exchange only.
//! - A server answers `Denied` both for what is not granted and for what it does not have,
//!   so a peer learns nothing about content outside its grants.

use indras_artifacts::{Hash, Realm, RealmId, SharedItem, SignedAttention};
use serde::{Deserialize, Serialize};

/// The most entries in one page of a folder listing.
pub const PAGE: usize = 1000;

/// The largest response a client accepts: a page of entries, or a batch of chunks.
pub const MAX_RESPONSE: usize = 4 << 20;

/// The most content bytes one `Chunks` request may ask for.
pub const MAX_BATCH: u64 = 2 << 20;

/// A file as the requester saw it: in a shared folder (`dir`, under the granter's label
/// `name`), or shared on its own (`dir` is `None`), with the content it expects.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct FileRef {
    pub dir: Option<u64>,
    pub name: Vec<u8>,
    pub node: u64,
    pub content: Hash,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Request {
    /// What do you share with me? Answered with `Roots`: every live grant to the requester.
    Roots,
    /// A page of shared folder `dir`, after position `after` (0 for the first page).
    List { dir: u64, after: u64 },
    /// How is this file's content laid out? Answered with `Inline` or `List`.
    Layout { file: FileRef },
    /// A run of the file's segment list.
    Run { file: FileRef, run: Hash },
    /// A segment (chunk list) of the file.
    Segment { file: FileRef, segment: Hash },
    /// What you were granted changed: ask again for the roots (`roots`), and for these
    /// folders' listings.
    Changed { roots: bool, dirs: Vec<u64> },
    /// I hold all of transferred file `node`, whose content is `content`: let go of it.
    Received { node: u64, content: Hash },
    /// Chunks number `from` to `from + count - 1` of the file, at most `MAX_BATCH` bytes in
    /// all. Answered with `Chunks`.
    Chunks { file: FileRef, from: u32, count: u32 },
    /// Which realms that include me did you create, and what do you share with all the
    /// members of each realm we both belong to? Answered with `Realms`.
    Realms,
    /// Something you learn from `Realms` changed: ask again.
    RealmsChanged,
    /// I leave realm `id`, which you created.
    LeaveRealm { id: RealmId },
    /// The requester's attention on what we share with it: its next events to us, signed
    /// and chained, oldest first, at most `indras_artifacts::chain::BATCH_MAX`. Answered with
    /// `Taken`, or `Denied` when we take no attention (`--attention off`) or the batch is
    /// longer.
    Attention { events: Vec<SignedAttention> },
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Response {
    Roots(Vec<SharedItem>),
    Page {
        items: Vec<SharedItem>,
        next: Option<u64>,
    },
    /// The whole content of a small file.
    Inline(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The file's stored segment list.
    List(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A run or a segment.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    Ok,
    /// Not granted to the requester, or not here: one answer for both.
    Denied,
    /// The server failed on its side; asking again later may work.
    Failed(String),
    /// The chunks asked for, in order.
    Chunks(Vec<serde_bytes::ByteBuf>),
    /// The realms the responder created that include the requester, and, for each realm
    /// both belong to, the responder's node ids that hold live grants to all its other
    /// members.
    Realms {
        created: Vec<Realm>,
        items: Vec<(RealmId, Vec<u64>)>,
    },
    /// The end of the requester's chain of attention events to us, as far as we took it:
    /// its sequence number and hash. The requester drops what it queued up to `through`.
    Taken {
        through: u64,
        head: Hash,
    },
}

/// Encodes a message.
pub fn encode<T: Serialize>(m: &T) -> Vec<u8> {
    postcard::to_stdvec(m).unwrap_or_default()
}

/// Decodes a message, or says why not.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("undecodable message: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_never_decodes_into_a_panic() {
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i: u32| (i * 37 + 11) as u8).collect();
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }
        let r = Request::List { dir: 7, after: 3 };
        assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
    }

    /// The largest batch of attention events, with the longest labels and numbers, fits in
    /// one request of the network layer (64 KiB).
    #[test]
    fn a_full_attention_batch_fits_in_a_request() {
        use indras_artifacts::{AttentionBody, AttentionKind, PlayerId, Timestamp, chain};
        let ev = SignedAttention {
            body: AttentionBody {
                sender: PlayerId([0xff; 32]),
                steward: PlayerId([0xff; 32]),
                seq: u64::MAX,
                prev: [0xff; 32],
                node: u64::MAX,
                dir: Some(u64::MAX),
                name: vec![0xff; 255],
                kind: AttentionKind::Back,
                at: Timestamp { secs: i64::MIN, nanos: u32::MAX },
                dwell_ms: u64::MAX,
            },
            sig: vec![0xff; 64],
        };
        let r = Request::Attention { events: vec![ev; chain::BATCH_MAX] };
        let len = encode(&r).len();
        assert!(len < 64 * 1024, "{len} bytes");
        assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
    }
}
