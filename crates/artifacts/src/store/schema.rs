//! The metadata database's tables and record encodings.
//!
//! Table names carry a version suffix. A change to a key or value layout gets a new name
//! and a migration, never a silent reinterpretation of old bytes. Records are postcard-encoded
//! serde structs; fixed-width keys use redb's native tuple and array types.

use redb::TableDefinition;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};
use crate::types::{AccessMode, ArtifactId, NodeId, NodeKind, PlayerId, Timestamp, TreeType};

/// The on-disk format version this code reads and writes.
pub const FORMAT_VERSION: u32 = 10;
/// The oldest format `Vault::open` migrates from.
pub const FORMAT_OLDEST: u32 = 1;

/// Store-wide values: format version, id counters, the owning player.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_v1");
/// node id -> `Node`
pub const NODES: TableDefinition<u64, &[u8]> = TableDefinition::new("nodes_v1");
/// (directory node, name) -> (child node, position)
pub const ENTRIES: TableDefinition<(u64, &[u8]), (u64, u64)> = TableDefinition::new("entries_v1");
/// (directory node, position) -> (child node, `kind_code` of its kind, name): the listing
/// order, holding all a listing shows, so that listing a folder is one range read (a node's
/// kind never changes; the child changes only where the entry's row changes too)
pub const ORDER: TableDefinition<(u64, u64), OrderRow> = TableDefinition::new("order_v2");
/// A listing slot as stored: (child node, `kind_code` of its kind, name).
pub type OrderRow = (u64, u8, &'static [u8]);
/// Formats 8 and older: (directory node, position) -> name. Dropped when a store is opened as
/// format 9, which rebuilds the listing order from `ENTRIES`.
pub const ORDER_V1: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("order_v1");
/// tree id -> `TreeRecord`
pub const TREES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("trees_v1");
/// (node, name) -> value
pub const XATTRS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("xattrs_v1");
/// leaf hash -> `LeafRecord`
pub const LEAVES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("leaves_v1");
/// leaf hash -> content, for leaves of at most `INLINE_MAX` bytes
pub const INLINE: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("inline_v1");
/// Format 1's chunk lists, one row per chunk: (leaf hash, offset) -> (chunk hash, length).
/// Read only to migrate; format 2 replaced it with segments.
pub const LEAF_CHUNKS_V1: TableDefinition<ChunkRowKey, ChunkRow> =
    TableDefinition::new("leaf_chunks_v1");
/// (leaf hash, offset of the chunk in the leaf)
pub type ChunkRowKey = (&'static [u8; 32], u64);
/// (chunk hash, chunk length)
pub type ChunkRow = (&'static [u8; 32], u32);
/// leaf hash -> its segments, `layout::encode_leaf_list`: the list itself, or its runs
pub const LEAF_SEGMENTS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("leaf_segments_v2");
/// run id -> a run of a long segment list, `layout::encode_segment_list` (see
/// `layout::encode_leaf_list`)
pub const SEGMENT_RUNS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("segment_runs_v1");
/// segment id -> its chunks, `layout::encode_segment`
pub const SEGMENTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("segments_v2");
/// A chunk's row as stored: `(len, refs, (pack, offset))`.
pub type ChunkValue = (u32, u64, Option<(u32, u64)>);
/// chunk hash -> (length, number of entries in stored segments naming it, (pack, offset) of
/// its bytes): a `payload::chunks::ChunkRecord`. The place is `None` when the bytes are known
/// lost (repair quarantined them); writing the content again gives it a place.
pub const CHUNKS: TableDefinition<&[u8; 32], ChunkValue> = TableDefinition::new("chunks_v3");
/// Formats 1 and 2: chunk hash -> (length, references); each chunk's bytes were a file of its
/// own, `chunks/<xx>/<hex>`. Read only to migrate.
pub const CHUNKS_V1: TableDefinition<&[u8; 32], (u32, u64)> = TableDefinition::new("chunks_v1");
/// chunks whose count fell to zero while a writer had them staged: GC candidates
pub const DEAD_CHUNKS: TableDefinition<&[u8; 32], ()> = TableDefinition::new("dead_chunks_v1");
/// leaves no node references, with the time they became unreferenced: GC candidates
pub const UNREFERENCED: TableDefinition<&[u8; 32], i64> = TableDefinition::new("unreferenced_v1");
/// nodes with no links left, kept until no handle holds them (the orphan list)
pub const ORPHANS: TableDefinition<u64, ()> = TableDefinition::new("orphans_v1");
/// Formats 5 and older: (artifact key, grantee) -> `GrantV1`. Read only to migrate.
pub const GRANTS_V1: TableDefinition<(&[u8; 33], &[u8; 32]), &[u8]> =
    TableDefinition::new("grants_v1");
/// (node, grantee) -> `AccessGrant`
pub const GRANTS: TableDefinition<(u64, &[u8; 32]), &[u8]> = TableDefinition::new("grants_v2");
/// mirror entry id -> `MirrorEntry`: what peers share with us
pub const MIRROR: TableDefinition<u64, &[u8]> = TableDefinition::new("mirror_v1");
/// (peer, its node id, mirror entry id) -> (): where a peer's node appears (a node can
/// appear twice: shared on its own and inside a shared folder)
pub const MIRROR_REMOTE: TableDefinition<(&[u8; 32], u64, u64), ()> =
    TableDefinition::new("mirror_remote_v1");
/// (parent mirror entry, label) -> mirror entry id
pub const MIRROR_NAMES: TableDefinition<(u64, &[u8]), u64> =
    TableDefinition::new("mirror_names_v1");
/// (parent mirror entry, child id) -> (): the listing order
pub const MIRROR_KIDS: TableDefinition<(u64, u64), ()> = TableDefinition::new("mirror_kids_v1");
/// (peer, its node id) -> `TransferRecord`: transfers received
pub const TRANSFERS: TableDefinition<(&[u8; 32], u64), &[u8]> =
    TableDefinition::new("transfers_v1");
/// Realms we belong to: realm id -> `RealmRow`.
pub const REALMS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("realms_v1");
/// What each other member shares with all of a realm: (realm, member) -> its node ids.
pub const REALM_ITEMS: TableDefinition<(&[u8; 16], &[u8; 32]), &[u8]> =
    TableDefinition::new("realm_items_v1");
/// Realms we left whose creator has not heard it yet: realm id -> creator.
pub const REALM_LEFT: TableDefinition<&[u8; 16], &[u8; 32]> = TableDefinition::new("realm_left_v1");
/// Formats 4 and older: peer id -> `PeerRecordV1`. Read only to migrate.
pub const PEERS_V1: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("peers_v1");
/// peer id -> `Peer`: peers and pending connection requests.
pub const PEERS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("peers_v2");
/// BLAKE3 hash of an invitation's one-time secret -> `InviteRecord`.
pub const INVITES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("invites_v1");
/// sequence number -> `AttentionSwitchEvent`
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events_v1");
/// node or mirror entry -> `attention::Aggregate`: per-node totals that outlive pruned events
pub const ATTENTION: TableDefinition<u64, &[u8]> = TableDefinition::new("attention_v1");
/// (steward, sequence number) -> `SignedAttention`: our attention events on a peer's
/// artifacts, waiting to reach that peer (its steward)
pub const ATTENTION_OUTBOX: TableDefinition<(&[u8; 32], u64), &[u8]> =
    TableDefinition::new("attention_outbox_v1");
/// (peer, `CHAIN_SENT` or `CHAIN_TAKEN`) -> `ChainHead`: the end of the chain of events we
/// signed for that peer, or of the chain that peer sent us
pub const ATTENTION_CHAINS: TableDefinition<(&[u8; 32], u8), &[u8]> =
    TableDefinition::new("attention_chains_v1");
/// `ATTENTION_CHAINS`: the chain we send to a steward.
pub const CHAIN_SENT: u8 = 0;
/// `ATTENTION_CHAINS`: the chain a sender sent us, as far as we took it.
pub const CHAIN_TAKEN: u8 = 1;

/// (history id, version id) -> `VersionRecord`: the contents a file was committed with. Version
/// ids come from the node id counter, so they grow with time and name a version alone.
pub const VERSIONS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("versions_v1");
/// version id -> its history id
pub const VERSION_NODES: TableDefinition<u64, u64> = TableDefinition::new("version_nodes_v1");
/// file node -> its history id, where that is not the node's own id (a file that replaced
/// another by rename, or that a restore brought back, goes on with that file's history)
pub const LINEAGE: TableDefinition<u64, u64> = TableDefinition::new("lineage_v1");
/// leaf hash -> the number of `VERSIONS` rows and snapshot records naming it (what history
/// holds of the leaf, apart from its node references in `LeafRecord::refs`)
pub const HISTORY_REFS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("history_refs_v1");
/// history id (a folder's: its node) -> `DeletedRecord`: a file with history that lost its
/// last name, or a folder that holds such files, while history keeps them
pub const DELETED: TableDefinition<u64, &[u8]> = TableDefinition::new("deleted_v1");
/// (folder node, name, history id) -> (): the deleted entries of each folder
pub const DELETED_NAMES: TableDefinition<(u64, &[u8], u64), ()> =
    TableDefinition::new("deleted_names_v1");
/// snapshot name -> `SnapshotRecord`
pub const SNAPSHOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("snapshots_v1");

pub const META_FORMAT: &str = "format";
pub const META_NEXT_NODE: &str = "next_node";
pub const META_NEXT_EVENT: &str = "next_event";
pub const META_PLAYER: &str = "player";
pub const META_CREATED: &str = "created_at";
/// The first redo record (in the intent log) that the database's state does not hold.
pub const META_REDO_FLOOR: &str = "redo_floor";
/// Set durably while a process has the store open; found set at open means a crash.
pub const META_OPEN: &str = "open";

/// A tree's own record; its references are the `ENTRIES` of its node.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct TreeRecord {
    pub node: NodeId,
    pub tree_type: TreeType,
    pub steward: PlayerId,
    pub audience: Vec<PlayerId>,
    pub next_position: u64,
    pub created_at: Timestamp,
}

/// A leaf's record. Its bytes are in `INLINE` or in the chunks of its `LEAF_SEGMENTS`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LeafRecord {
    pub size: u64,
    /// Number of nodes whose content this leaf is.
    pub refs: u64,
    pub inline: bool,
    pub created_at: Timestamp,
}

/// One committed version of a file (`VERSIONS`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct VersionRecord {
    pub leaf: crate::types::Hash,
    pub size: u64,
    pub committed_at: Timestamp,
    /// The player whose commit it was.
    pub committer: PlayerId,
    /// Bytes this commit stored that the store did not hold before (its new chunks, or its
    /// inline bytes): what the version costs, as history's space accounting counts it.
    pub added: u64,
}

/// Where a deleted file or folder was (`DELETED`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct DeletedRecord {
    pub parent: NodeId,
    pub name: Vec<u8>,
    pub dir: bool,
    pub deleted_at: Timestamp,
    /// The mode bits and owner it had: an undelete gives them back.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A named snapshot (`SNAPSHOTS`): its manifest is a leaf (see `vault::snapshots`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// A small number of its own, unique among the store's snapshots (the mount's inodes).
    pub number: u32,
    pub manifest: crate::types::Hash,
    pub created_at: Timestamp,
    /// Taken by `--snapshot-every`, and thinned by retention; a named one is kept until
    /// deleted.
    pub auto: bool,
    pub entries: u64,
    /// The bytes of the files it names (each file counted once per name).
    pub bytes: u64,
}

/// An invitation's row: when it expires, and when it was used (it can be used once).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct InviteRecord {
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

/// A grant's row in formats 5 and older (`grants_v1`): it named an artifact, a tree or a
/// leaf, where grants now name nodes. Read only to migrate.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct GrantV1 {
    pub artifact: ArtifactId,
    pub grantee: PlayerId,
    pub granted_by: PlayerId,
    pub mode: AccessMode,
    pub granted_at: Timestamp,
}

/// A peer's row in formats 4 and older (`peers_v1`); read only to migrate.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PeerRecordV1 {
    pub id: PlayerId,
    pub display_name: String,
    pub added_at: Timestamp,
}

/// The owning player, stored once at creation.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PlayerRecord {
    pub id: PlayerId,
    pub name: String,
}

/// A node kind's code in `ORDER` rows (fixed: stored).
pub fn kind_code(kind: NodeKind) -> u8 {
    match kind {
        NodeKind::File => 0,
        NodeKind::Dir => 1,
        NodeKind::Symlink => 2,
        NodeKind::Fifo => 3,
        NodeKind::Socket => 4,
        NodeKind::CharDevice => 5,
        NodeKind::BlockDevice => 6,
    }
}

/// The node kind of a `kind_code`.
pub fn kind_of_code(code: u8) -> Result<NodeKind> {
    Ok(match code {
        0 => NodeKind::File,
        1 => NodeKind::Dir,
        2 => NodeKind::Symlink,
        3 => NodeKind::Fifo,
        4 => NodeKind::Socket,
        5 => NodeKind::CharDevice,
        6 => NodeKind::BlockDevice,
        c => return Err(Error::CorruptRecord("order", format!("node kind {c}"))),
    })
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain structs into a Vec cannot fail.
    postcard::to_allocvec(v).unwrap_or_default()
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::CorruptRecord(what, e.to_string()))
}

pub fn u64_bytes(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

pub fn bytes_u64(what: &'static str, b: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = b
        .try_into()
        .map_err(|_| Error::CorruptRecord(what, format!("{} bytes, expected 8", b.len())))?;
    Ok(u64::from_le_bytes(arr))
}
