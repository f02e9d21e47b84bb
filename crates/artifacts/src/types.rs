//! The domain types: artifact ids, leaves, trees and their references, players, grants and
//! attention events, plus the node types that give the mount stable inodes.
//!
//! Everything here is plain data. Persistence lives in `store::schema`, behaviour in
//! `vault`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A 32-byte BLAKE3 digest.
pub type Hash = [u8; 32];

/// Lower-case hex of a byte slice.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses 64 hex digits into a hash.
pub fn parse_hash(s: &str) -> Option<Hash> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// The id of an artifact.
///
/// A leaf's id is the BLAKE3 hash of its whole content, so `b3sum` prints the same hex.
/// A tree's id is a stable random id that does not change when the tree's references do.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ArtifactId {
    Blob(Hash),
    Doc(Hash),
}

impl ArtifactId {
    /// The 32 bytes behind the id.
    pub fn bytes(&self) -> &Hash {
        match self {
            ArtifactId::Blob(h) | ArtifactId::Doc(h) => h,
        }
    }
}

impl fmt::Display for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactId::Blob(h) => write!(f, "blob:{}", hex(h)),
            ArtifactId::Doc(h) => write!(f, "doc:{}", hex(h)),
        }
    }
}

impl fmt::Debug for ArtifactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A player's identity: the 32-byte ed25519 public key of the player's secret key (see
/// `SecretKey`). Peers authenticate each other by it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PlayerId(pub Hash);

impl PlayerId {
    /// The id stores of format 4 and older derived from the player's name. They migrate to
    /// the public key of a secret key of their own; this is what the migration replaces.
    pub fn derived_from_name(name: &str) -> Self {
        PlayerId(blake3::derive_key("indras-fuse player id v1", name.as_bytes()))
    }
}

/// A player's ed25519 secret key (the 32-byte seed). Its public key is the `PlayerId`. It is
/// never printed: `Debug` shows only the public key, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    /// The seed, for the network layer's own key type.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// The player this key is: its ed25519 public key.
    pub fn player(&self) -> PlayerId {
        PlayerId(ed25519_dalek::SigningKey::from_bytes(&self.0).verifying_key().to_bytes())
    }
}

impl SecretKey {
    /// The ed25519 signature of `message` by this key.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        ed25519_dalek::SigningKey::from_bytes(&self.0).sign(message).to_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(of {})", self.player())
    }
}

impl fmt::Display for PlayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for PlayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlayerId({})", &hex(&self.0)[..16])
    }
}

/// Wall-clock time with nanosecond precision, as stored on disk.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp { secs: 0, nanos: 0 };

    pub fn now() -> Self {
        Self::from_system(SystemTime::now())
    }

    /// RFC 3339 in UTC, to the millisecond: `2026-12-06T19:30:37.123Z`.
    pub fn rfc3339(&self) -> String {
        chrono::DateTime::from_timestamp(self.secs, self.nanos).map_or_else(
            || format!("{}s", self.secs),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
    }

    pub fn from_system(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp {
                secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let mut secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                let mut nanos = d.subsec_nanos();
                if nanos > 0 {
                    secs -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                Timestamp { secs, nanos }
            }
        }
    }

    pub fn to_system(self) -> SystemTime {
        if self.secs >= 0 {
            UNIX_EPOCH + Duration::new(self.secs.unsigned_abs(), self.nanos)
        } else {
            UNIX_EPOCH - Duration::from_secs(self.secs.unsigned_abs())
                + Duration::from_nanos(u64::from(self.nanos))
        }
    }

    pub fn from_millis(ms: i64) -> Self {
        Timestamp {
            secs: ms.div_euclid(1000),
            nanos: u32::try_from(ms.rem_euclid(1000)).unwrap_or(0) * 1_000_000,
        }
    }

    pub fn as_millis(self) -> i64 {
        self.secs.saturating_mul(1000).saturating_add(i64::from(self.nanos / 1_000_000))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:09}", self.secs, self.nanos)
    }
}

/// What a leaf holds, inferred from its label's extension.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum LeafType {
    File,
    Image,
    Token,
    Attestation,
    Custom(String),
}

impl LeafType {
    /// The type of a leaf named `name`, from its extension: images (`jpg`, `jpeg`, `png`,
    /// `gif`, `webp`, `svg`), `token` and `attestation`; anything else is `File`.
    pub fn from_name(name: &[u8]) -> Self {
        let ext = match name.iter().rposition(|&b| b == b'.') {
            Some(i) if i > 0 => name[i + 1..].to_ascii_lowercase(),
            _ => return LeafType::File,
        };
        match ext.as_slice() {
            b"jpg" | b"jpeg" | b"png" | b"gif" | b"webp" | b"svg" => LeafType::Image,
            b"token" => LeafType::Token,
            b"attestation" => LeafType::Attestation,
            _ => LeafType::File,
        }
    }

    /// The leaf type of a symlink's target: a symlink is a leaf holding its target path.
    pub fn symlink() -> Self {
        LeafType::Custom("symlink".to_owned())
    }
}

/// The kind of a tree, inferred from its name or set explicitly.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum TreeType {
    Vault,
    Collection,
    Story,
    Gallery,
    Inbox,
    Document,
}

impl TreeType {
    /// The type a new folder gets from its name: the special names `stories/*`, `gallery`, `inbox` and
    /// `documents/*`, and `Collection` for everything else.
    pub fn infer(parent_name: &[u8], name: &[u8]) -> Self {
        match (parent_name, name) {
            (_, b"gallery") => TreeType::Gallery,
            (_, b"inbox") => TreeType::Inbox,
            (b"stories", _) => TreeType::Story,
            (b"documents", _) => TreeType::Document,
            _ => TreeType::Collection,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TreeType::Vault => "Vault",
            TreeType::Collection => "Collection",
            TreeType::Story => "Story",
            TreeType::Gallery => "Gallery",
            TreeType::Inbox => "Inbox",
            TreeType::Document => "Document",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "Vault" => TreeType::Vault,
            "Collection" => TreeType::Collection,
            "Story" => TreeType::Story,
            "Gallery" => TreeType::Gallery,
            "Inbox" => TreeType::Inbox,
            "Document" => TreeType::Document,
            _ => return None,
        })
    }
}

/// A content-addressed leaf: a file's content at one moment.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct LeafArtifact {
    pub id: ArtifactId,
    pub size: u64,
    pub leaf_type: LeafType,
    pub created_at: Timestamp,
}

/// One reference inside a tree: a directory entry.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ArtifactRef {
    pub artifact_id: ArtifactId,
    pub label: Vec<u8>,
    pub position: u64,
    /// The node the entry names (the inode behind it).
    pub node: NodeId,
}

/// A tree: a directory, with its references in position order.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TreeArtifact {
    pub id: ArtifactId,
    pub tree_type: TreeType,
    pub steward: PlayerId,
    pub audience: Vec<PlayerId>,
    pub references: Vec<ArtifactRef>,
    pub node: NodeId,
}

/// How a grant lets a peer hold an artifact.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum AccessMode {
    Revocable,
    Permanent,
    Timed { expires_at: Timestamp },
    Transfer,
}

impl AccessMode {
    /// The mode's name, as the CLI and `user.indra.access_mode` spell it.
    pub fn name(&self) -> &'static str {
        match self {
            AccessMode::Revocable => "revocable",
            AccessMode::Permanent => "permanent",
            AccessMode::Timed { .. } => "timed",
            AccessMode::Transfer => "transfer",
        }
    }

    /// When a timed grant ends.
    pub fn expires_at(&self) -> Option<Timestamp> {
        match self {
            AccessMode::Timed { expires_at } => Some(*expires_at),
            _ => None,
        }
    }

    /// Whether the grant still gives access at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.expires_at().is_none_or(|t| now < t)
    }
}

/// A grant of one node (a file, or a folder with its whole subtree, as it changes) to one
/// peer.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AccessGrant {
    pub node: NodeId,
    pub grantee: PlayerId,
    pub granted_by: PlayerId,
    pub mode: AccessMode,
    pub granted_at: Timestamp,
}

impl AccessGrant {
    /// Whether the grant still gives access at `now`.
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.mode.is_active(now)
    }
}

/// What a shared entry is. Only files and folders are shared; symlinks and special files
/// inside a shared folder are not.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum SharedKind {
    File,
    Dir,
}

/// One entry of what a peer shares with us, as this vault keeps it (the grantee's copy).
///
/// Entries form one tree per peer: the peer's folder (`remote` 0, `parent` [`MirrorEntry::TOP`],
/// labelled with our name for the peer), its shared roots (each carrying its grant), and,
/// under shared folders, their subtrees. `id` comes from the node id counter, so it never
/// collides with a node's.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MirrorEntry {
    pub id: NodeId,
    pub peer: PlayerId,
    /// The granter's node id (0 for the peer's folder).
    pub remote: u64,
    pub parent: NodeId,
    /// Our label: the peer's, checked and made unique within the folder.
    pub label: Vec<u8>,
    /// The peer's label, as it sent it: how we name the entry when we ask for it.
    pub their_label: Vec<u8>,
    pub kind: SharedKind,
    pub size: u64,
    pub mtime: Timestamp,
    /// The shared root this entry lies under (itself, for a root and the peer's folder).
    pub root: NodeId,
    /// For roots, the grant as the peer described it.
    pub grant: Option<AccessMode>,
    /// For files, the content the peer has.
    pub content: Option<Hash>,
    /// For files, the content we hold (one reference on its leaf), once it has arrived.
    pub have: Option<Hash>,
}

impl MirrorEntry {
    /// The parent of every peer's folder.
    pub const TOP: NodeId = NodeId(0);

    /// Whether the entry's content has arrived and is current.
    pub fn ready(&self) -> bool {
        self.kind == SharedKind::Dir || (self.have.is_some() && self.have == self.content)
    }
}

/// One entry of a peer's listing of what it shares: a shared root (with its grant) or an
/// entry of a shared folder. Nothing in it is trusted until checked.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct SharedItem {
    /// The granter's node id.
    pub remote: u64,
    pub label: Vec<u8>,
    pub kind: SharedKind,
    pub size: u64,
    pub mtime: Timestamp,
    /// For files, the content's id.
    pub content: Option<Hash>,
    /// For shared roots, the grant.
    pub grant: Option<AccessMode>,
}

/// A transfer received from a peer: the file it became in our vault.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TransferRecord {
    pub peer: PlayerId,
    /// The granter's node id.
    pub remote: u64,
    pub content: Hash,
    /// Our file.
    pub node: NodeId,
    pub received_at: Timestamp,
    /// The granter has confirmed that it let go of the original.
    pub confirmed: bool,
}

/// Whether we have agreed to peer with a player.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum PeerState {
    /// Peered: both sides agreed, through an invitation or an accepted request.
    Accepted,
    /// A connection request from a key that is not a peer, not yet accepted: it is served
    /// nothing.
    Pending,
}

/// A player known to this vault: a peer, or a pending connection request.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Peer {
    pub id: PlayerId,
    /// Our local name for the peer: unique among our peers, and what `peers/<name>/` shows.
    pub name: String,
    /// The name the peer gave itself.
    pub their_name: String,
    /// The peer's direct addresses (`ip:port`), as last learned.
    pub addrs: Vec<String>,
    /// The peer's relay, if it has one.
    pub relay: Option<String>,
    pub state: PeerState,
    pub added_at: Timestamp,
    /// When a connection with the peer was last alive.
    pub last_seen: Option<Timestamp>,
}

/// What redeeming a one-time invitation secret found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InviteCheck {
    /// Valid, and now used.
    Valid,
    Expired,
    Used,
    /// No invitation has this secret.
    Unknown,
}

/// What caused an attention switch.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum AttentionKind {
    /// Focus moved to `to` (a file was opened).
    Navigate,
    /// Focus returned from `from` (a file was closed).
    Back,
    /// A tree was listed.
    Scan,
}

/// One attention switch: where attention moved from and to, with its cause, the node it concerns (the
/// file or folder, whose identity outlives content changes), and for `Back` how long the
/// attention dwelt.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AttentionSwitchEvent {
    pub player: PlayerId,
    pub from: Option<ArtifactId>,
    pub to: Option<ArtifactId>,
    pub kind: AttentionKind,
    pub at: Timestamp,
    pub node: Option<NodeId>,
    pub dwell_ms: u64,
}

/// One attention event of a player on a peer's artifact, as the player sends it to that
/// artifact's steward (and to no one else): what it signs. Each player's events to one steward
/// form a chain: `seq` counts them from 1 and `prev` is the hash of the one before (zeros for
/// the first); see `vault::chain`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct AttentionBody {
    /// The player who paid the attention and signs the event.
    pub sender: PlayerId,
    /// The artifact's steward: the only player the event goes to.
    pub steward: PlayerId,
    pub seq: u64,
    pub prev: Hash,
    /// The steward's node the attention was on.
    pub node: u64,
    /// Where the sender saw the node: the steward's folder it is listed in (under `name`, the
    /// steward's label), or `None` for a node shared on its own.
    pub dir: Option<u64>,
    pub name: Vec<u8>,
    pub kind: AttentionKind,
    pub at: Timestamp,
    pub dwell_ms: u64,
}

/// An [`AttentionBody`] with the sender's ed25519 signature of its canonical encoding
/// (`vault::chain::message`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SignedAttention {
    pub body: AttentionBody,
    /// 64 bytes.
    pub sig: Vec<u8>,
}

/// The end of a chain of attention events: the last event's sequence number and hash (0 and
/// zeros before the first).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: Hash,
}

/// A persistent node id: the mount uses it as the inode number.
///
/// Ids are allocated from a counter and never reused, so a FUSE generation of 0 is correct.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The vault's root tree. Ids 1 and 3..=15 are never allocated, so an embedding can
    /// give them to synthetic objects of its own (the mount's root and virtual folders).
    pub const ROOT: NodeId = NodeId(2);
    /// The first id the store allocates.
    pub const FIRST_DYNAMIC: u64 = 16;
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The file type of a node.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// A node's attributes: everything `stat` reports, plus where its content lives.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub kind: NodeKind,
    /// Permission bits, including setuid, setgid and sticky (no file-type bits).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Timestamp,
    /// For files, the leaf holding the content.
    pub content: Option<Hash>,
    /// For symlinks, the target.
    pub symlink: Option<Vec<u8>>,
    /// For directories, the tree's id.
    pub tree: Option<Hash>,
    /// For directories, the directory holding it (a directory has exactly one).
    pub parent: Option<NodeId>,
}

impl Node {
    /// A new node with one link and no content, every time `now`.
    pub(crate) fn new(id: NodeId, spec: &NewNode, now: Timestamp) -> Node {
        Node {
            id,
            kind: spec.kind,
            perm: spec.perm & 0o7777,
            uid: spec.uid,
            gid: spec.gid,
            rdev: spec.rdev,
            nlink: 1,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            content: None,
            symlink: None,
            tree: None,
            parent: None,
        }
    }

    /// The artifact this node currently presents: its leaf, or its tree.
    pub fn artifact_id(&self) -> Option<ArtifactId> {
        match self.kind {
            NodeKind::Dir => self.tree.map(ArtifactId::Doc),
            NodeKind::Symlink => {
                self.symlink.as_ref().map(|t| ArtifactId::Blob(*blake3::hash(t).as_bytes()))
            }
            _ => self.content.map(ArtifactId::Blob),
        }
    }
}

/// Attributes for a node being created.
#[derive(Clone, Debug)]
pub struct NewNode {
    pub kind: NodeKind,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub symlink: Option<Vec<u8>>,
}

impl NewNode {
    pub fn file(perm: u32) -> Self {
        NewNode { kind: NodeKind::File, perm, uid: 0, gid: 0, rdev: 0, symlink: None }
    }

    pub fn dir(perm: u32) -> Self {
        NewNode { kind: NodeKind::Dir, ..NewNode::file(perm) }
    }

    pub fn symlink(target: &[u8]) -> Self {
        NewNode { kind: NodeKind::Symlink, symlink: Some(target.to_vec()), ..NewNode::file(0o777) }
    }

    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// A change to a node's attributes. `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct SetAttr {
    pub perm: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<Timestamp>,
    pub mtime: Option<Timestamp>,
    pub ctime: Option<Timestamp>,
}

/// One entry of a directory listing.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub node: NodeId,
    pub kind: NodeKind,
    pub position: u64,
}

/// Rename behaviour, as `renameat2(2)` flags.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum RenameMode {
    /// Replace the target if it exists.
    #[default]
    Replace,
    /// Fail with `Exists` if the target exists (`RENAME_NOREPLACE`).
    NoReplace,
    /// Swap the two entries; both must exist (`RENAME_EXCHANGE`).
    Exchange,
}

/// How an xattr write treats an existing value (`XATTR_CREATE`, `XATTR_REPLACE`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum XattrMode {
    #[default]
    Upsert,
    Create,
    Replace,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_type_follows_extension() {
        assert_eq!(LeafType::from_name(b"a.md"), LeafType::File);
        assert_eq!(LeafType::from_name(b"photo.JPG"), LeafType::Image);
        assert_eq!(LeafType::from_name(b"x.token"), LeafType::Token);
        assert_eq!(LeafType::from_name(b"x.attestation"), LeafType::Attestation);
        assert_eq!(LeafType::from_name(b".png"), LeafType::File);
        assert_eq!(LeafType::from_name(b"noext"), LeafType::File);
    }

    #[test]
    fn tree_type_inference() {
        assert_eq!(TreeType::infer(b"", b"gallery"), TreeType::Gallery);
        assert_eq!(TreeType::infer(b"", b"inbox"), TreeType::Inbox);
        assert_eq!(TreeType::infer(b"stories", b"quest"), TreeType::Story);
        assert_eq!(TreeType::infer(b"documents", b"spec"), TreeType::Document);
        assert_eq!(TreeType::infer(b"", b"stories"), TreeType::Collection);
        assert_eq!(TreeType::infer(b"notes", b"x"), TreeType::Collection);
        for t in ["Vault", "Collection", "Story", "Gallery", "Inbox", "Document"] {
            assert_eq!(TreeType::parse(t).unwrap().as_str(), t);
        }
        assert_eq!(TreeType::parse("nope"), None);
    }

    #[test]
    fn timestamps_round_trip() {
        for ms in [-1_500, -1, 0, 1, 1_700_000_000_123] {
            assert_eq!(Timestamp::from_millis(ms).as_millis(), ms);
            let t = Timestamp::from_millis(ms);
            assert_eq!(Timestamp::from_system(t.to_system()), t);
        }
    }

    #[test]
    fn hex_round_trip() {
        let h = *blake3::hash(b"x").as_bytes();
        assert_eq!(parse_hash(&hex(&h)), Some(h));
        assert_eq!(parse_hash("zz"), None);
    }
}

/// A node's attention totals (`attention_v1`), kept exact as events come and go; see
/// `vault::attention` for how they are folded and turned into heat.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Decayed score as of `score_at`.
    pub score: f64,
    pub score_at: Timestamp,
    pub opens: u64,
    pub dwell_ms: u64,
    pub last_seen: Timestamp,
    pub players: Vec<PlayerId>,
}
