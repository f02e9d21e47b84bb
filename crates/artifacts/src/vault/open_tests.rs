//! Tests of opening a store: the player's key, and the migration to it from format 4.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::store::meta::W;
use crate::store::schema::{
    GRANTS_V1, GrantV1, META_FORMAT, META_PLAYER, PEERS, PEERS_V1, PeerRecordV1, PlayerRecord,
    TreeRecord, decode, encode, u64_bytes,
};
use crate::types::{
    AccessGrant, AccessMode, Aggregate, ArtifactId, AttentionKind, AttentionSwitchEvent, Peer,
    PeerState, PlayerId, Timestamp,
};
use crate::vault::gc::FsckOptions;
use crate::vault::handle::{Commit, Options, Vault};
use crate::vault::identity;

const CC: Commit = Commit::CrashConsistent;

fn open(dir: &Path) -> Result<Vault> {
    Vault::open(dir, "alice", &Options::default())
}

/// Every player id that a tree, grant, event or attention aggregate names.
fn ids_named(v: &Vault) -> BTreeSet<PlayerId> {
    v.scan(&["trees", "grants", "events", "attention"], |r| {
        let mut ids = BTreeSet::new();
        for row in r.trees()?.iter()? {
            let t: TreeRecord = decode("tree", row?.1.value())?;
            ids.insert(t.steward);
            ids.extend(t.audience);
        }
        for row in r.grants()?.iter()? {
            let g: AccessGrant = decode("grant", row?.1.value())?;
            ids.extend([g.grantee, g.granted_by]);
        }
        for row in r.events()?.iter()? {
            ids.insert(decode::<AttentionSwitchEvent>("event", row?.1.value())?.player);
        }
        for row in r.attention()?.iter()? {
            ids.extend(decode::<Aggregate>("attention", row?.1.value())?.players);
        }
        Ok(ids)
    })
    .unwrap()
}

/// A new store gets a key of its own, mode 0600, and keeps it: the player's id is its
/// public key across reopens. A missing, malformed, exposed or foreign key file stops
/// the open with an `Identity` error instead of making a new identity.
#[test]
fn the_player_is_its_key_and_the_key_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join(identity::KEY_FILE);
    let id = {
        let v = open(dir.path()).unwrap();
        assert_eq!(v.player(), v.secret_key().player());
        v.player()
    };
    let meta = std::fs::metadata(&key_path).unwrap();
    assert_eq!((meta.len(), meta.permissions().mode() & 0o777), (32, 0o600));
    assert_eq!(open(dir.path()).unwrap().player(), id);

    let key = std::fs::read(&key_path).unwrap();
    let other = tempfile::tempdir().unwrap();
    drop(open(other.path()).unwrap());
    let foreign = std::fs::read(other.path().join(identity::KEY_FILE)).unwrap();
    let cases: [(&str, &dyn Fn()); 4] = [
        ("missing", &|| std::fs::remove_file(&key_path).unwrap()),
        ("malformed", &|| std::fs::write(&key_path, &key[..31]).unwrap()),
        ("exposed", &|| {
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }),
        ("foreign", &|| std::fs::write(&key_path, &foreign).unwrap()),
    ];
    for (what, damage) in cases {
        damage();
        assert!(matches!(open(dir.path()), Err(Error::Identity { .. })), "{what}");
        std::fs::write(&key_path, &key).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(open(dir.path()).unwrap().player(), id, "after {what}");
    }
}

/// A format 4 store (the player's id derived from its name, peers in `peers_v1`, no key
/// file) opens as format 5: it gets a key, and every steward, audience, grant, event and
/// attention aggregate that named the old id names the key, in one transaction.
#[test]
fn a_format_4_store_moves_to_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let bob = PlayerId([0xb0; 32]);
    let t0 = Timestamp::from_millis(1_700_000_000_000);
    let first = {
        let v = open(dir.path()).unwrap();
        let root = v.root_tree().unwrap();
        let notes = v.create_tree(root.id, b"notes", None, t0, CC).unwrap();
        v.set_audience(notes.id, &[v.player(), bob], CC).unwrap();
        v.grant(notes.node, bob, AccessMode::Revocable, t0, CC).unwrap();
        v.navigate_to(notes.id, None, t0).unwrap();
        let peer = Peer {
            id: bob,
            name: "bob".into(),
            their_name: "bob".into(),
            addrs: Vec::new(),
            relay: None,
            state: PeerState::Accepted,
            added_at: t0,
            last_seen: None,
        };
        v.put_peer(&peer, CC).unwrap();
        assert_eq!(ids_named(&v), BTreeSet::from([v.player(), bob]));
        v.player()
    };
    // Back to format 4: the derived id everywhere, peers in `peers_v1`, no key file.
    let old = PlayerId::derived_from_name("alice");
    {
        let db = redb::Database::open(dir.path().join("meta.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut w = W::direct(&txn);
            w.migrate_player_id(first, old).unwrap();
            let rec = PlayerRecord { id: old, name: "alice".into() };
            w.meta().unwrap().insert(META_PLAYER, encode(&rec).as_slice()).unwrap();
            w.meta().unwrap().insert(META_FORMAT, u64_bytes(4).as_slice()).unwrap();
            let v1 = PeerRecordV1 { id: bob, display_name: "bob".into(), added_at: t0 };
            txn.open_table(PEERS_V1).unwrap().insert(&bob.0, encode(&v1).as_slice()).unwrap();
        }
        txn.delete_table(PEERS).unwrap();
        txn.commit().unwrap();
    }
    std::fs::remove_file(dir.path().join(identity::KEY_FILE)).unwrap();

    let v = open(dir.path()).unwrap();
    let key = v.player();
    assert_eq!(key, v.secret_key().player());
    assert!(key != old && key != first);
    assert_eq!(ids_named(&v), BTreeSet::from([key, bob]));
    assert_eq!(v.root_tree().unwrap().steward, key);
    let grants = v.grants(None).unwrap();
    assert_eq!((grants.len(), grants[0].granted_by, grants[0].grantee), (1, key, bob));
    let events = v.recent_events(10).unwrap();
    assert!(events.iter().all(|(_, e)| e.player == key && e.kind == AttentionKind::Navigate));
    let peers = v.peers().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!((peers[0].id, peers[0].state), (bob, PeerState::Accepted));
    assert!(v.fsck(FsckOptions { deep: true, repair: false }, &mut |_| {}).unwrap().is_clean());
    drop(v);
    assert_eq!(open(dir.path()).unwrap().player(), key, "the key is kept");
}

/// A format 5 store's grants named artifacts; opening it as format 6 moves a tree's grant to
/// its folder and drops a grant of a bare leaf.
#[test]
fn a_format_5_stores_grants_move_to_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let bob = PlayerId([0xb0; 32]);
    let t0 = Timestamp::from_millis(1_700_000_000_000);
    let (me, notes_node, notes_tree) = {
        let v = open(dir.path()).unwrap();
        let root = v.root_tree().unwrap();
        let notes = v.create_tree(root.id, b"notes", None, t0, CC).unwrap();
        (v.player(), notes.node, notes.id)
    };
    {
        let db = redb::Database::open(dir.path().join("meta.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(GRANTS_V1).unwrap();
            let mut put = |artifact: ArtifactId| {
                let g = GrantV1 {
                    artifact,
                    grantee: bob,
                    granted_by: me,
                    mode: AccessMode::Revocable,
                    granted_at: t0,
                };
                let mut key = [0u8; 33];
                key[1..].copy_from_slice(artifact.bytes());
                t.insert((&key, &bob.0), encode(&g).as_slice()).unwrap();
            };
            put(notes_tree);
            put(ArtifactId::Blob([7; 32]));
            let mut w = W::direct(&txn);
            w.meta().unwrap().insert(META_FORMAT, u64_bytes(5).as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let v = open(dir.path()).unwrap();
    let grants = v.grants(None).unwrap();
    assert_eq!(grants.len(), 1);
    assert_eq!(
        (grants[0].node, grants[0].grantee, grants[0].mode),
        (notes_node, bob, AccessMode::Revocable)
    );
}
