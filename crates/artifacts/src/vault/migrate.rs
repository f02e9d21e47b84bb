//! Opening the database: the store-wide records, the crash marker, and migrations from every
//! older format (`FORMAT_OLDEST` on). Migrations run in the same write transaction that
//! checks the format, before the write-back layers exist, so they use a direct [`W`]. They
//! live in the vault layer because they rewrite rows of every layer, and move chunk bytes.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use redb::{Database, Key, ReadableTable};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::payload::chunks::{ChunkRecord, ChunkStore};
use crate::payload::layout::LeafIndex;
use crate::store::meta::{View, W};
use crate::store::rows::new_tree_id;
use crate::store::schema::{
    CHUNKS_V1, FORMAT_OLDEST, FORMAT_VERSION, GRANTS_V1, GrantV1, LEAF_CHUNKS_V1, LeafRecord,
    META_CREATED, META_FORMAT, META_NEXT_NODE, META_OPEN, META_PLAYER, META_REDO_FLOOR, ORDER_V1,
    PEERS_V1, PeerRecordV1, PlayerRecord, TreeRecord, bytes_u64, decode, encode, u64_bytes,
};
use crate::types::{
    AccessGrant, Aggregate, ArtifactId, AttentionSwitchEvent, Hash, NewNode, Node, NodeId,
    NodeKind, Peer, PeerState, PlayerId, SecretKey, Timestamp, TreeType, hex,
};
use crate::vault::identity;

/// What opening the database found.
pub(crate) struct Opened {
    pub(crate) player: PlayerRecord,
    pub(crate) key: SecretKey,
    /// The crash marker was already set: the store was not closed cleanly.
    pub(crate) was_open: bool,
}

/// Creates or checks the store-wide records and the player's key, migrates older formats,
/// and sets the crash marker durably.
pub(crate) fn init_meta(
    db: &Database,
    store: &ChunkStore,
    dir: &Path,
    player: Option<&str>,
    redo_floor: u64,
) -> Result<Opened> {
    let txn = db.begin_write()?;
    let out = {
        let mut w = W::direct(&txn);
        // Every table exists from the start, so read snapshots can always open them.
        w.open_all()?;
        let format = w.meta()?.get(META_FORMAT)?.map(|v| v.value().to_vec());
        let rec = if let Some(format) = format {
            let found = u32::try_from(bytes_u64("format", &format)?).unwrap_or(u32::MAX);
            if !(FORMAT_OLDEST..=FORMAT_VERSION).contains(&found) {
                return Err(Error::UnsupportedVersion { path: dir.to_path_buf(), found });
            }
            if found <= 2 {
                tracing::info!(dir = %dir.display(), found, "migrating the store to format 3");
                w.migrate_chunk_table()?;
                if found == 1 {
                    w.migrate_v1()?;
                }
                w.migrate_chunk_files(store, dir)?;
            }
            let mut rec: PlayerRecord = match w.meta()?.get(META_PLAYER)? {
                Some(v) => decode("player", v.value())?,
                None => return Err(Error::CorruptRecord("meta", "no player".into())),
            };
            if let Some(p) = player
                && p != rec.name
            {
                return Err(Error::WrongPlayer { found: rec.name, requested: p.to_owned() });
            }
            if found <= 5 {
                w.migrate_grants_v1()?;
            }
            let key = if found <= 4 {
                // The key is made (durably) before the records name it; a crash before this
                // transaction commits leaves the key for the next open to adopt.
                let key = match identity::load(dir)? {
                    Some(k) => k,
                    None => identity::create(dir)?,
                };
                tracing::info!(dir = %dir.display(), found, player = %key.player(), "migrating the store to format 5: the player's id becomes its key");
                w.migrate_peers_v1()?;
                w.migrate_player_id(rec.id, key.player())?;
                rec.id = key.player();
                w.meta()?.insert(META_PLAYER, encode(&rec).as_slice())?;
                key
            } else {
                identity::require(dir, rec.id)?
            };
            if found <= 6 {
                // Format 7 gave attention on what peers share with us: aggregates and events
                // may name mirror entries, and events to and from peers wait in the outbox
                // and chain tables (`open_all` above made them). No row of format 6 changes;
                // the version keeps a format 6 binary from reading mirror ids as nodes.
                tracing::info!(dir = %dir.display(), found, "the store is now format 7");
            }
            if found <= 8 {
                tracing::info!(dir = %dir.display(), found, "migrating the store to format 9: listing slots name each entry's node and kind");
                w.migrate_order_v1()?;
            }
            if found <= 9 {
                // Format 10 puts the store's own redo records in the intent log beside it. No
                // row changes; the version keeps an older binary, whose reading of the log
                // stops at a redo record, from opening it.
                tracing::info!(dir = %dir.display(), found, "the store is now format 10");
            }
            if found < FORMAT_VERSION {
                w.meta()?.insert(META_FORMAT, u64_bytes(u64::from(FORMAT_VERSION)).as_slice())?;
            }
            (rec, key)
        } else {
            let Some(name) = player else {
                return Err(Error::CorruptRecord("meta", "store was never initialised".into()));
            };
            // A key left by an initialisation that crashed before committing is adopted.
            let key = match identity::load(dir)? {
                Some(k) => k,
                None => identity::create(dir)?,
            };
            let rec = PlayerRecord { id: key.player(), name: name.to_owned() };
            let now = Timestamp::now();
            w.meta()?.insert(META_FORMAT, u64_bytes(u64::from(FORMAT_VERSION)).as_slice())?;
            w.meta()?.insert(META_PLAYER, encode(&rec).as_slice())?;
            w.meta()?.insert(META_CREATED, encode(&now).as_slice())?;
            w.meta()?.insert(META_NEXT_NODE, u64_bytes(NodeId::FIRST_DYNAMIC).as_slice())?;
            let tree_id = new_tree_id()?;
            let mut root = Node::new(NodeId::ROOT, &NewNode::dir(0o755), now);
            root.nlink = 2;
            root.tree = Some(tree_id);
            w.put_node(&root)?;
            let tree = TreeRecord {
                node: NodeId::ROOT,
                tree_type: TreeType::Vault,
                steward: rec.id,
                audience: Vec::new(),
                next_position: 1,
                created_at: now,
            };
            w.put_tree(&tree_id, &tree)?;
            (rec, key)
        };
        // Redo records from here on apply over this state (see `Meta::replay_redo`).
        w.meta()?.insert(META_REDO_FLOOR, redo_floor.to_le_bytes().as_slice())?;
        let was_open = w.meta()?.get(META_OPEN)?.is_some();
        w.meta()?.insert(META_OPEN, &[1u8][..])?;
        Opened { player: rec.0, key: rec.1, was_open }
    };
    txn.commit()?;
    Ok(out)
}

/// Every row of a table of encoded records, its key mapped by `key`: read whole before the
/// table is rewritten.
fn decoded<K: Key + 'static, O, T: DeserializeOwned>(
    table: &View<'_, '_, K, &'static [u8]>,
    what: &'static str,
    key: impl Fn(K::SelfType<'_>) -> O,
) -> Result<Vec<(O, T)>> {
    table
        .iter()?
        .map(|r| {
            let (k, v) = r?;
            Ok((key(k.value()), decode(what, v.value())?))
        })
        .collect()
}

impl W<'_> {
    /// Format 5: peers carry their addresses and state (`peers_v2`). Every peer of an older
    /// store was added by hand, so it is accepted.
    pub(crate) fn migrate_peers_v1(&mut self) -> Result<()> {
        let rows: Vec<PeerRecordV1> = {
            let old = self.txn()?.open_table(PEERS_V1)?;
            old.iter()?.map(|r| decode("peer", r?.1.value())).collect::<Result<_>>()?
        };
        for p in rows {
            let peer = Peer {
                id: p.id,
                their_name: p.display_name.clone(),
                name: p.display_name,
                addrs: Vec::new(),
                relay: None,
                state: PeerState::Accepted,
                added_at: p.added_at,
                last_seen: None,
            };
            self.peers()?.insert(&peer.id.0, encode(&peer).as_slice())?;
        }
        self.txn()?.delete_table(PEERS_V1)?;
        Ok(())
    }

    /// Format 6: a grant names a node (a file, or a folder and its subtree), no longer an
    /// artifact. A tree's grant moves to its directory; a leaf's names content, not a file,
    /// so it cannot be carried over and is dropped with a warning (no release shared
    /// content: nothing served these grants).
    pub(crate) fn migrate_grants_v1(&mut self) -> Result<()> {
        let old: Vec<GrantV1> = {
            let t = self.txn()?.open_table(GRANTS_V1)?;
            t.iter()?.map(|r| decode("grant", r?.1.value())).collect::<Result<_>>()?
        };
        for g in old {
            let ArtifactId::Doc(tree) = g.artifact else {
                tracing::warn!(artifact = %g.artifact, "dropping a grant of a leaf: grants now name files and folders");
                continue;
            };
            let Ok(rec) = self.tree(&tree) else {
                tracing::warn!(artifact = %g.artifact, "dropping a grant of a tree that is gone");
                continue;
            };
            let node = rec.node;
            let grant = AccessGrant {
                node,
                grantee: g.grantee,
                granted_by: g.granted_by,
                mode: g.mode,
                granted_at: g.granted_at,
            };
            self.grants()?.insert((node.0, &g.grantee.0), encode(&grant).as_slice())?;
        }
        self.txn()?.delete_table(GRANTS_V1)?;
        Ok(())
    }

    /// Format 5: the player's id is the public key of its secret key, no longer derived from
    /// its name. Every record that names the old id (trees' stewards and audiences, grants,
    /// events, attention aggregates) is rewritten to the new one, in the opening transaction.
    pub(crate) fn migrate_player_id(&mut self, old: PlayerId, new: PlayerId) -> Result<()> {
        let swap = |id: &mut PlayerId| {
            if *id == old {
                *id = new;
            }
        };
        let trees: Vec<(Hash, TreeRecord)> = decoded(&self.trees()?, "tree", |k| *k)?;
        for (id, mut tree) in trees {
            swap(&mut tree.steward);
            tree.audience.iter_mut().for_each(swap);
            self.put_tree(&id, &tree)?;
        }
        let grants: Vec<(u64, AccessGrant)> = decoded(&self.grants()?, "grant", |k| k.0)?;
        for (node, mut grant) in grants {
            self.grants()?.remove((node, &grant.grantee.0))?;
            swap(&mut grant.grantee);
            swap(&mut grant.granted_by);
            self.grants()?.insert((node, &grant.grantee.0), encode(&grant).as_slice())?;
        }
        let events: Vec<(u64, AttentionSwitchEvent)> = decoded(&self.events()?, "event", |k| k)?;
        for (seq, mut ev) in events {
            if ev.player == old {
                ev.player = new;
                self.events()?.insert(seq, encode(&ev).as_slice())?;
            }
        }
        let aggregates: Vec<(u64, Aggregate)> = decoded(&self.attention()?, "attention", |k| k)?;
        for (node, mut agg) in aggregates {
            if agg.players.contains(&old) {
                agg.players.iter_mut().for_each(swap);
                self.attention()?.insert(node, encode(&agg).as_slice())?;
            }
        }
        Ok(())
    }

    /// Format 9: each listing slot names the entry's node and kind beside its name
    /// (`order_v2`), so that listing a folder reads nothing else. The slots are rebuilt from
    /// `entries_v1`, which holds every entry's position, and the nodes' kinds; `order_v1`
    /// (names only) is dropped. An entry whose node is missing (fsck reports it, and its
    /// repair removes the entry and its slot) is given a file's kind.
    pub(crate) fn migrate_order_v1(&mut self) -> Result<()> {
        let entries: Vec<(u64, Vec<u8>, u64, u64)> = self
            .entries()?
            .iter()?
            .map(|r| {
                let (k, v) = r?;
                let ((parent, name), (child, pos)) = (k.value(), v.value());
                Ok((parent, name.to_vec(), child, pos))
            })
            .collect::<Result<_>>()?;
        for (parent, name, child, pos) in entries {
            let kind = match self.node(NodeId(child)) {
                Ok(n) => n.kind,
                Err(Error::NoSuchNode(_)) => NodeKind::File,
                Err(e) => return Err(e),
            };
            self.put_slot(NodeId(parent), pos, NodeId(child), kind, &name)?;
        }
        self.txn()?.delete_table(ORDER_V1)?;
        Ok(())
    }

    /// Formats 1 and 2 kept chunk rows without places in `chunks_v1`; they move to
    /// `chunks_v3` (`migrate_chunk_files` fills in the places).
    pub(crate) fn migrate_chunk_table(&mut self) -> Result<()> {
        let rows: Vec<(Hash, (u32, u64))> = {
            let old = self.txn()?.open_table(CHUNKS_V1)?;
            old.iter()?
                .map(|r| r.map(|(k, v)| (*k.value(), v.value())))
                .collect::<Result<_, _>>()?
        };
        for (chunk, (len, refs)) in rows {
            self.put_chunk(&chunk, ChunkRecord { len, refs, loc: None })?;
        }
        self.txn()?.delete_table(CHUNKS_V1)?;
        Ok(())
    }

    /// Format 1 kept one row per chunk of every leaf; format 2 keeps segments. Chunk reference
    /// counts change meaning (rows of stored segments, not of leaves), so they are recounted.
    pub(crate) fn migrate_v1(&mut self) -> Result<()> {
        let chunked: Vec<Hash> = self
            .leaves()?
            .iter()?
            .map(|r| -> Result<Option<Hash>> {
                let (k, v) = r?;
                Ok((!decode::<LeafRecord>("leaf", v.value())?.inline).then(|| *k.value()))
            })
            .filter_map(Result::transpose)
            .collect::<Result<_>>()?;
        let rows = self.chunk_rows()?;
        for (chunk, rec) in &rows {
            self.put_chunk(chunk, ChunkRecord { refs: 0, ..*rec })?;
        }
        {
            let old = self.txn()?.open_table(LEAF_CHUNKS_V1)?;
            for leaf in &chunked {
                let list: Vec<(Hash, u32)> = old
                    .range((leaf, 0)..=(leaf, u64::MAX))?
                    .map(|r| r.map(|(_, v)| (*v.value().0, v.value().1)))
                    .collect::<Result<_, _>>()?;
                self.store_chunk_list(leaf, &LeafIndex::new(list), &mut HashMap::new())?;
            }
        }
        self.txn()?.delete_table(LEAF_CHUNKS_V1)?;
        for (chunk, _) in &rows {
            if self.chunk(chunk)?.is_some_and(|c| c.refs == 0) {
                self.dead()?.insert(chunk, ())?;
            }
        }
        Ok(())
    }

    /// Formats 1 and 2 kept each chunk in a file of its own, `chunks/<xx>/<hex>`; format 3
    /// appends chunks to packs. This copies every chunk without a place into a pack and
    /// records where; the packs are synced here, and `Vault::open` deletes the old files once
    /// this commits. A chunk whose file is gone, or is not the recorded length (copied to
    /// `quarantine/`), stays without a place (fsck reports it missing).
    pub(crate) fn migrate_chunk_files(&mut self, store: &ChunkStore, dir: &Path) -> Result<()> {
        let old = dir.join("chunks");
        let rows = self.chunk_rows()?;
        let mut missing = 0u64;
        for (chunk, rec) in rows {
            if rec.loc.is_some() {
                continue;
            }
            let name = hex(&chunk);
            let path = old.join(&name[..2]).join(&name);
            let data = match fs::read(&path) {
                Ok(data) => data,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing += 1;
                    continue;
                }
                Err(e) => return Err(Error::io(&path, e)),
            };
            if data.len() != rec.len as usize {
                // Damaged: set aside like a quarantined chunk (no place; reads fail as missing
                // until the content is written again), since a place spans `rec.len` bytes.
                let quarantine = dir.join("quarantine");
                fs::create_dir_all(&quarantine).map_err(|e| Error::io(&quarantine, e))?;
                fs::write(quarantine.join(&name), &data).map_err(|e| Error::io(&quarantine, e))?;
                missing += 1;
                continue;
            }
            let loc = store.append(&data).map_err(|e| Error::io(store.pack_dir(), e))?;
            self.put_chunk(&chunk, ChunkRecord { loc: Some(loc), ..rec })?;
        }
        if missing > 0 {
            tracing::warn!(missing, "chunk files missing or damaged while migrating to packs");
        }
        store.sync_pending().map_err(|e| Error::io(store.pack_dir(), e))?;
        Ok(())
    }
}
