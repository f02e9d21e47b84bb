//! File history, restores, retention and snapshots, through the store's API.

mod common;

use common::{bytes, now, open, put};
use indras_artifacts::{
    Commit, Error, FsckOptions, Keep, NewNode, NodeId, RenameMode, Timestamp, Vault,
};

const CC: Commit = Commit::CrashConsistent;
const DAY: i64 = 86_400;

fn contents(v: &Vault, history: u64) -> Vec<Vec<u8>> {
    v.versions(history).unwrap().iter().map(|x| v.read_all(&x.leaf).unwrap()).collect()
}

fn later(days: i64) -> Timestamp {
    Timestamp { secs: now().secs + days * DAY, nanos: 0 }
}

fn assert_clean(v: &Vault) {
    let report = v.fsck(FsckOptions::default(), &mut |_| {}).unwrap();
    assert!(report.is_clean(), "fsck: {:?}", report.problems);
}

#[test]
fn saves_are_versions_and_a_restore_is_one_more() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let saves: Vec<Vec<u8>> = (0..5).map(|i| bytes(i, 1000 + i as usize * 30_000)).collect();
    let mut node = None;
    for s in &saves {
        node = Some(put(&v, "ideas.md", s, CC));
    }
    let node = node.unwrap();
    let h = v.history_id(node.id).unwrap();
    assert_eq!(contents(&v, h), saves);
    // Saving the same bytes again is no new version.
    put(&v, "ideas.md", &saves[4], CC);
    assert_eq!(v.versions(h).unwrap().len(), 5);

    let second = v.versions(h).unwrap()[1].clone();
    assert_eq!(v.version(second.id).unwrap(), second);
    v.restore(node.id, second.id, now(), CC).unwrap();
    let now_content = v.read_all(&v.node(node.id).unwrap().content.unwrap()).unwrap();
    assert_eq!(now_content, saves[1]);
    let versions = contents(&v, h);
    assert_eq!(versions.len(), 6);
    assert_eq!(versions[5], saves[1]);
    assert!(matches!(v.restore(node.id, 12_345_678, now(), CC), Err(Error::NoSuchVersion(_))));
    assert_clean(&v);

    // History survives a reopen, and GC keeps every version.
    v.close().unwrap();
    let v = open(dir.path());
    v.gc(None, &mut |_| {}).unwrap();
    assert_eq!(contents(&v, h).len(), 6);
    assert_clean(&v);
}

#[test]
fn renames_keep_history_and_deletes_are_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let d = v.create(NodeId::ROOT, b"notes", &NewNode::dir(0o755), None, now(), CC).unwrap();
    let a = put(&v, "a.md", b"one", CC);
    put(&v, "a.md", b"two", CC);
    let h = v.history_id(a.id).unwrap();
    // A rename carries the history with the node.
    v.rename(NodeId::ROOT, b"a.md", d.id, b"b.md", RenameMode::Replace, now(), CC).unwrap();
    assert_eq!(v.history_id(a.id).unwrap(), h);
    assert_eq!(contents(&v, h), [b"one".to_vec(), b"two".to_vec()]);

    // An editor's atomic save (a new file renamed over the old one) goes on with its history.
    let tmp = v
        .create(
            d.id,
            b".b.md.tmp",
            &NewNode::file(0o600),
            Some(v.stage(b"three").unwrap()),
            now(),
            CC,
        )
        .unwrap();
    v.rename(d.id, b".b.md.tmp", d.id, b"b.md", RenameMode::Replace, now(), CC).unwrap();
    v.reap(a.id, CC).unwrap();
    assert_eq!(v.history_id(tmp.id).unwrap(), h);
    assert_eq!(contents(&v, h).len(), 3);
    assert!(v.deleted_in(d.id).unwrap().is_empty());

    // Deleted, then created again under the same name: two histories, the old one deleted.
    v.remove(d.id, b"b.md", false, now(), CC).unwrap();
    v.reap(tmp.id, CC).unwrap();
    let again = v
        .create(d.id, b"b.md", &NewNode::file(0o644), Some(v.stage(b"fresh").unwrap()), now(), CC)
        .unwrap();
    let h2 = v.history_id(again.id).unwrap();
    assert_ne!(h2, h);
    assert_eq!(contents(&v, h2), [b"fresh".to_vec()]);
    let deleted = v.deleted_in(d.id).unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!((deleted[0].id, deleted[0].name.as_slice()), (h, &b"b.md"[..]));
    assert_clean(&v);

    // A folder removed with deleted files in it stays findable, and the file comes back.
    v.remove(d.id, b"b.md", false, now(), CC).unwrap();
    v.reap(again.id, CC).unwrap();
    v.remove(NodeId::ROOT, b"notes", true, now(), CC).unwrap();
    v.reap(d.id, CC).unwrap();
    let top = v.deleted_in(NodeId::ROOT).unwrap();
    assert_eq!(top.len(), 1);
    assert!(top[0].dir && top[0].id == d.id.0);
    assert_eq!(v.deleted_in(d.id).unwrap().len(), 2);
    let first = v.versions(h).unwrap()[0].id;
    let back = v.undelete(h, first, NodeId::ROOT, b"back.md", now(), CC).unwrap();
    assert_eq!(back.perm, 0o600, "the mode b.md had");
    assert_eq!(v.read_all(&back.content.unwrap()).unwrap(), b"one");
    assert_eq!(v.history_id(back.id).unwrap(), h);
    assert_eq!(contents(&v, h).len(), 4);
    assert_eq!(v.deleted_in(d.id).unwrap().len(), 1);
    assert!(matches!(
        v.undelete(h, first, NodeId::ROOT, b"again.md", now(), CC),
        Err(Error::NotPermitted(..))
    ));
    assert_clean(&v);
}

#[test]
fn retention_thins_with_age_and_gc_takes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let mut leaves = Vec::new();
    let mut node = None;
    for i in 0..4 {
        let n = put(&v, "f", &bytes(i, 40_000), CC);
        leaves.push(n.content.unwrap());
        node = Some(n);
    }
    let node = node.unwrap();
    let h = v.history_id(node.id).unwrap();
    // Within a day every version stays.
    assert_eq!(v.prune_history(now()).unwrap().versions, 0);
    // Two days on, one per hour: these four were in one hour, so the newest alone stays.
    let pruned = v.prune_history(later(2)).unwrap();
    assert_eq!(pruned.versions, 3);
    assert!(pruned.bytes >= 3 * 40_000, "{pruned:?}");
    assert_eq!(contents(&v, h), [bytes(3, 40_000)]);
    v.gc(None, &mut |_| {}).unwrap();
    assert!(v.leaf_size(&leaves[0]).is_err(), "GC took what no version names");
    // A deleted file's versions go once they are older than every tier.
    v.remove(NodeId::ROOT, b"f", false, now(), CC).unwrap();
    v.reap(node.id, CC).unwrap();
    assert_eq!(v.deleted_in(NodeId::ROOT).unwrap().len(), 1);
    v.prune_history(later(31)).unwrap();
    assert!(v.versions(h).unwrap().is_empty());
    assert!(v.deleted_in(NodeId::ROOT).unwrap().is_empty());
    v.gc(None, &mut |_| {}).unwrap();
    assert!(v.leaf_size(&leaves[3]).is_err());
    assert_clean(&v);
}

#[test]
fn history_off_records_nothing_and_drops_what_was_kept() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let n = put(&v, "f", b"kept", CC);
    put(&v, "f", b"newer", CC);
    let h = v.history_id(n.id).unwrap();
    v.set_keep(Keep::none());
    put(&v, "f", b"newest", CC);
    assert_eq!(v.versions(h).unwrap().len(), 2);
    v.prune_history(now()).unwrap();
    assert!(v.versions(h).unwrap().is_empty());
    v.gc(None, &mut |_| {}).unwrap();
    assert!(v.leaf_size(&n.content.unwrap()).is_err(), "GC took the dropped versions");
    assert_clean(&v);
}

#[test]
fn thinning_for_space_drops_the_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    let mut last = None;
    for i in 0..10 {
        last = Some(put(&v, "big", &bytes(i, 100_000), CC));
    }
    let h = v.history_id(last.unwrap().id).unwrap();
    let before = v.history_usage().unwrap();
    assert_eq!(before.versions, 10);
    assert!(before.bytes >= 9 * 100_000, "{before:?}");
    let pruned = v.thin_history(350_000, now()).unwrap();
    assert!(pruned.versions >= 6, "{pruned:?}");
    assert!(v.thinned().is_some());
    let left = contents(&v, h);
    assert_eq!(left.last().unwrap(), &bytes(9, 100_000), "the newest stays");
    assert_eq!(left.first().unwrap(), &bytes(10 - left.len() as u64, 100_000), "oldest went");
    assert!(v.history_usage().unwrap().bytes <= 350_000);
    assert_clean(&v);
    // `status` of a stored vault still tells.
    let thinned = v.thinned();
    v.close().unwrap();
    assert_eq!(open(dir.path()).thinned(), thinned);
}

#[test]
fn a_snapshot_stays_frozen_and_gc_takes_what_only_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    v.set_keep(Keep::none());
    let d = v.create(NodeId::ROOT, b"d", &NewNode::dir(0o755), None, now(), CC).unwrap();
    let old = bytes(7, 300_000);
    let f = v
        .create(d.id, b"f", &NewNode::file(0o640), Some(v.stage(&old).unwrap()), now(), CC)
        .unwrap();
    let old_leaf = f.content.unwrap();
    v.create(NodeId::ROOT, b"z", &NewNode::file(0o644), None, now(), CC).unwrap();
    let snap = v.snapshot_create("before", false, now()).unwrap();
    assert_eq!((snap.entries, snap.bytes), (4, 300_000));
    assert!(matches!(v.snapshot_create("before", false, now()), Err(Error::SnapshotExists(_))));
    assert!(v.snapshot_create("a/b", false, now()).is_err());

    // The vault changes underneath.
    v.set_content(f.id, &v.stage(b"new").unwrap(), now(), CC).unwrap();
    v.remove(NodeId::ROOT, b"z", false, now(), CC).unwrap();
    v.gc(None, &mut |_| {}).unwrap();

    let m = v.snapshot_manifest(&v.snapshot("before").unwrap()).unwrap();
    let root_kids: Vec<&[u8]> =
        m.children(0).iter().map(|i| m.entry(*i).unwrap().name.as_slice()).collect();
    assert_eq!(root_kids, [&b"d"[..], b"z"]);
    let dd = m.lookup(0, b"d").unwrap();
    let ff = m.entry(m.lookup(dd, b"f").unwrap()).unwrap();
    assert_eq!((ff.perm, ff.size), (0o640, 300_000));
    assert_eq!(v.read_all(&ff.leaf.unwrap()).unwrap(), old, "GC kept the snapshot's content");
    assert_eq!(v.snapshot_usage().unwrap(), 300_000);
    assert_clean(&v);

    v.close().unwrap();
    let v = open(dir.path());
    assert_eq!(v.snapshot_list().unwrap().len(), 1);
    v.snapshot_delete("before").unwrap();
    assert!(matches!(v.snapshot_delete("before"), Err(Error::NoSuchSnapshot(_))));
    v.gc(None, &mut |_| {}).unwrap();
    assert!(v.leaf_size(&old_leaf).is_err(), "GC took what only the snapshot held");
    assert_clean(&v);
}

#[test]
fn automatic_snapshots_are_thinned_and_named_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let v = open(dir.path());
    put(&v, "f", b"x", CC);
    v.snapshot_create("mine", false, Timestamp { secs: now().secs - 90 * DAY, nanos: 0 }).unwrap();
    let keep = Keep::parse("1h:all,2d:1d").unwrap();
    for hours_ago in [80, 50, 49, 3, 2] {
        let at = Timestamp { secs: now().secs - hours_ago * 3600, nanos: 0 };
        v.snapshot_auto(&keep, at).unwrap();
    }
    v.snapshot_auto(&keep, now()).unwrap();
    let names: Vec<(bool, i64)> = v
        .snapshot_list()
        .unwrap()
        .iter()
        .map(|s| (s.auto, (now().secs - s.created_at.secs) / 3600))
        .collect();
    // Kept: the named one, automatic ones only within two days (the newest of each day), and
    // the one just taken.
    assert_eq!(names[0], (false, 90 * 24));
    assert!(names.iter().all(|(auto, h)| !auto || *h < 48), "{names:?}");
    assert!(names.len() <= 4, "{names:?}");
    assert!(names.iter().any(|(auto, h)| *auto && *h == 0), "{names:?}");
    assert_clean(&v);
}
