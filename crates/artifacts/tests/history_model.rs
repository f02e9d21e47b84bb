//! Model property test of history against a reference model of versions.
//!
//! Random operations on a few files in the root folder (names from a small set, so creates,
//! renames and undeletes land on one another) drive the store's `Vault` API directly: creates
//! with content, commits of new, equal or empty content, renames (also over another file),
//! deletes, restores of an old version, undeletes, reopens and prunings. Each operation has its
//! own clock, one second after the last one's.
//!
//! The model keeps, per history, the versions in commit order: each non-empty content a commit
//! gave a file whose content it was not already, and each restore or undelete. A history is
//! the file's node, kept across renames; a file renamed over another file that has versions
//! goes on with that one's history (its own versions join it, in commit order); an undeleted
//! file goes on with its old one (docs/SEMANTICS.md, *History, retention and space*;
//! docs/DESIGN.md, *History and snapshots*).
//!
//! After every operation the store must agree with the model:
//! - the root lists exactly the live files, each with the node, content and history id the
//!   model says, and `versions` lists exactly the model's versions, oldest first: content
//!   (leaf id and bytes), size, commit time and committer; `version` finds each;
//! - each deleted file with versions is in `deleted_in` (its name, deletion time, mode and
//!   owner) with its versions, and no other history the case met holds any;
//! - `history_usage` counts the same versions, files and deleted entries;
//! - `fsck` is clean.
//!
//! Every case ends with a full GC (history holds its leaves), the same checks, and `fsck`.
//! A failure's message lists the operations as run, with concrete names.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::bytes;
use indras_artifacts::{
    Commit, Deleted, Error, FsckOptions, Hash, NewNode, Node, NodeId, Options, RenameMode,
    Timestamp, Vault, Version,
};
use proptest::prelude::*;

const NAMES: [&[u8]; 4] = [b"a.md", b"b.md", b"c", b".b.md.tmp"];
const PLAYER: &str = "historian";
const CC: Commit = Commit::CrashConsistent;
/// The clock of the first operation: each one after it is a second later.
const START: i64 = 1_700_000_000;
const DAY: i64 = 86_400;
/// The sizes of the contents operations commit, by index: the first is empty, the last is
/// larger than an inline payload. Contents of distinct indices differ.
const SIZES: [usize; 8] = [0, 1, 40, 700, 3000, 4096, 2500, 20_000];

fn content(k: usize) -> Vec<u8> {
    bytes(k as u64, SIZES[k])
}

fn leaf(content: &[u8]) -> Hash {
    *blake3::hash(content).as_bytes()
}

fn at(secs: i64) -> Timestamp {
    Timestamp { secs, nanos: 0 }
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

// ----- operations -----

/// An operation as generated: files, deleted files and versions are picked by index (modulo
/// their number) when it runs; an operation with nothing to act on is skipped.
#[derive(Clone, Debug)]
enum Op {
    /// `create` the file `NAMES[name]` with content `content`; `private` gives it mode 0600
    /// and another owner.
    Create { name: usize, content: usize, private: bool },
    /// `set_content` of a live file: content `Some(k)`, or the content it has (`None`).
    Write { file: usize, content: Option<usize> },
    /// Rename a live file to `NAMES[to]` (over the file there, if any); `reap` reaps the
    /// replaced node at once, else the next open does.
    Rename { file: usize, to: usize, reap: bool },
    /// Remove a live file.
    Delete { file: usize, reap: bool },
    /// `restore` one of a live file's versions.
    Restore { file: usize, version: usize },
    /// `restore`, to a live file, a version of another history: refused.
    RestoreForeign { file: usize, version: usize },
    /// `undelete` a deleted file's version as the file `NAMES[name]`.
    Undelete { deleted: usize, version: usize, name: usize },
    /// `undelete` a live file's version: refused.
    UndeleteLive { file: usize, version: usize, name: usize },
    /// Drop the vault (or `close` it) and open it again.
    Reopen { close: bool },
    /// `prune_history` an hour later (retention keeps everything), or 31 days later (only
    /// each live file's newest version stays).
    Prune { expire: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let name = 0..NAMES.len();
    let content = 0..SIZES.len();
    let pick = 0usize..64;
    prop_oneof![
        6 => (name.clone(), content.clone(), any::<bool>())
            .prop_map(|(name, content, private)| Op::Create { name, content, private }),
        8 => (pick.clone(), prop_oneof![3 => content.prop_map(Some), 1 => Just(None)])
            .prop_map(|(file, content)| Op::Write { file, content }),
        5 => (pick.clone(), name.clone(), any::<bool>())
            .prop_map(|(file, to, reap)| Op::Rename { file, to, reap }),
        3 => (pick.clone(), any::<bool>()).prop_map(|(file, reap)| Op::Delete { file, reap }),
        4 => (pick.clone(), pick.clone()).prop_map(|(file, version)| Op::Restore { file, version }),
        1 => (pick.clone(), pick.clone())
            .prop_map(|(file, version)| Op::RestoreForeign { file, version }),
        4 => (pick.clone(), pick.clone(), name.clone())
            .prop_map(|(deleted, version, name)| Op::Undelete { deleted, version, name }),
        1 => (pick.clone(), pick, name)
            .prop_map(|(file, version, name)| Op::UndeleteLive { file, version, name }),
        2 => any::<bool>().prop_map(|close| Op::Reopen { close }),
        1 => prop_oneof![3 => Just(false), 1 => Just(true)].prop_map(|expire| Op::Prune { expire }),
    ]
}

// ----- the reference model -----

#[derive(Clone, Debug)]
struct MFile {
    node: NodeId,
    /// The history id its versions are kept under.
    history: u64,
    /// Its current content's index.
    content: usize,
    perm: u32,
    owner: (u32, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MVersion {
    /// The commit's clock (seconds).
    at: i64,
    content: usize,
}

#[derive(Clone, Debug)]
struct MDeleted {
    name: Vec<u8>,
    at: i64,
    perm: u32,
    owner: (u32, u32),
}

#[derive(Default)]
struct Model {
    files: BTreeMap<Vec<u8>, MFile>,
    /// Every history that has versions, live or deleted, oldest version first.
    histories: BTreeMap<u64, Vec<MVersion>>,
    /// The deleted files history keeps, by history id.
    deleted: BTreeMap<u64, MDeleted>,
    /// Every node and history id the case met: those neither live nor deleted hold nothing.
    seen: BTreeSet<u64>,
}

impl Model {
    fn versions(&self, history: u64) -> &[MVersion] {
        self.histories.get(&history).map_or(&[], Vec::as_slice)
    }

    fn record(&mut self, history: u64, at: i64, content: usize) {
        self.histories.entry(history).or_default().push(MVersion { at, content });
    }

    /// The live file with index `i` (modulo their number), in name order.
    fn file(&self, i: usize) -> Option<(Vec<u8>, MFile)> {
        let n = self.files.len();
        (n > 0).then(|| {
            let (name, f) = self.files.iter().nth(i % n).expect("in range");
            (name.clone(), f.clone())
        })
    }

    fn live_histories(&self) -> BTreeSet<u64> {
        self.files.values().map(|f| f.history).collect()
    }
}

// ----- the harness -----

struct Harness {
    dir: tempfile::TempDir,
    vault: Option<Vault>,
    model: Model,
    /// The clock of the last operation (seconds).
    clock: i64,
    pool: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::open(dir.path(), PLAYER, &Options::default()).expect("open");
        let pool: Vec<Vec<u8>> = (0..SIZES.len()).map(content).collect();
        let leaves = pool.iter().map(|c| leaf(c)).collect();
        Harness { dir, vault: Some(vault), model: Model::default(), clock: START, pool, leaves }
    }

    fn v(&self) -> &Vault {
        self.vault.as_ref().expect("open vault")
    }

    fn stage(&self, k: usize) -> indras_artifacts::StagedLeaf {
        self.v().stage(&self.pool[k]).expect("stage")
    }

    /// The version ids the store lists for `history` (checked against the model after the
    /// last operation).
    fn version_ids(&self, history: u64) -> Vec<u64> {
        self.v().versions(history).expect("versions").iter().map(|v| v.id).collect()
    }

    fn assert_content(&self, n: &Node, k: usize, what: &str) {
        assert_eq!(n.content, Some(self.leaves[k]), "{what}: content #{k}");
        assert_eq!(n.size, SIZES[k] as u64, "{what}: size");
    }

    /// Applies `op` to the store and the model; returns what it did, or `None` when it had
    /// nothing to act on.
    #[allow(clippy::too_many_lines)]
    fn apply(&mut self, op: &Op) -> Option<String> {
        self.clock += 1;
        let t = self.clock;
        let now = at(t);
        match *op {
            Op::Create { name, content: k, private } => {
                let name = NAMES[name];
                let (perm, owner) = if private { (0o600, (1000, 1000)) } else { (0o644, (0, 0)) };
                let spec = NewNode::file(perm).owner(owner.0, owner.1);
                let staged = self.stage(k);
                let r = self.v().create(NodeId::ROOT, name, &spec, Some(staged), now, CC);
                if self.model.files.contains_key(name) {
                    assert!(matches!(r, Err(Error::Exists { .. })), "create over a file: {r:?}");
                } else {
                    let n = r.expect("create");
                    self.assert_content(&n, k, "create");
                    assert!(self.model.seen.insert(n.id.0), "node id {} used before", n.id);
                    if k != 0 {
                        self.model.record(n.id.0, t, k);
                    }
                    let f = MFile { node: n.id, history: n.id.0, content: k, perm, owner };
                    self.model.files.insert(name.to_vec(), f);
                }
                Some(format!("create {} with #{k}, mode {perm:o}", show(name)))
            }
            Op::Write { file, content } => {
                let (name, f) = self.model.file(file)?;
                let k = content.unwrap_or(f.content);
                let staged = self.stage(k);
                let n = self.v().set_content(f.node, &staged, now, CC).expect("set_content");
                self.assert_content(&n, k, "set_content");
                // Empty content is never a version, nor the content the file already has.
                if k != 0 && k != f.content {
                    self.model.record(f.history, t, k);
                }
                self.model.files.get_mut(&name).expect("live").content = k;
                Some(format!("write #{k} to {} (it had #{})", show(&name), f.content))
            }
            Op::Rename { file, to, reap } => {
                let (src, _) = self.model.file(file)?;
                let dst = NAMES[to];
                let r = self
                    .v()
                    .rename(NodeId::ROOT, &src, NodeId::ROOT, dst, RenameMode::Replace, now, CC)
                    .expect("rename");
                let mut over = String::new();
                if src == dst {
                    assert!(r.is_none(), "rename to its own name: {r:?}");
                } else {
                    let mut f = self.model.files.remove(&src).expect("live");
                    match self.model.files.remove(dst) {
                        None => assert!(r.is_none(), "rename to a free name: {r:?}"),
                        Some(old) => {
                            let replaced = r.expect("the replaced node");
                            assert_eq!((replaced.id, replaced.nlink), (old.node, 0), "replaced");
                            // A file renamed over one that has versions goes on with its
                            // history, and takes its own versions into it.
                            let merge = !self.model.versions(old.history).is_empty();
                            if merge {
                                let mine = self.model.histories.remove(&f.history);
                                let theirs =
                                    self.model.histories.get_mut(&old.history).expect("some");
                                theirs.extend(mine.unwrap_or_default());
                                theirs.sort_by_key(|v| v.at);
                                f.history = old.history;
                            }
                            if reap {
                                assert!(self.v().reap(old.node, CC).expect("reap"), "reaped");
                            }
                            over = format!(
                                " over {} ({}{})",
                                old.node,
                                if merge { "goes on with its history" } else { "no versions" },
                                if reap { ", reaped" } else { "" }
                            );
                        }
                    }
                    self.model.files.insert(dst.to_vec(), f);
                }
                Some(format!("rename {} to {}{over}", show(&src), show(dst)))
            }
            Op::Delete { file, reap } => {
                let (name, f) = self.model.file(file)?;
                let n = self.v().remove(NodeId::ROOT, &name, false, now, CC).expect("remove");
                assert_eq!((n.id, n.nlink), (f.node, 0), "removed");
                self.model.files.remove(&name);
                if !self.model.versions(f.history).is_empty() {
                    let d = MDeleted { name: name.clone(), at: t, perm: f.perm, owner: f.owner };
                    self.model.deleted.insert(f.history, d);
                }
                if reap {
                    assert!(self.v().reap(f.node, CC).expect("reap"), "reaped");
                }
                Some(format!("delete {}{}", show(&name), if reap { ", reaped" } else { "" }))
            }
            Op::Restore { file, version } => {
                let (name, f) = self.model.file(file)?;
                let ids = self.version_ids(f.history);
                if ids.is_empty() {
                    return None;
                }
                let i = version % ids.len();
                let k = self.model.versions(f.history)[i].content;
                let n = self.v().restore(f.node, ids[i], now, CC).expect("restore");
                self.assert_content(&n, k, "restore");
                // A restore is a new version, whatever the file had.
                self.model.record(f.history, t, k);
                self.model.files.get_mut(&name).expect("live").content = k;
                Some(format!(
                    "restore {} to its version {i} (#{k}, it had #{})",
                    show(&name),
                    f.content
                ))
            }
            Op::RestoreForeign { file, version } => {
                let (name, f) = self.model.file(file)?;
                let others: Vec<u64> = self
                    .model
                    .histories
                    .keys()
                    .filter(|h| **h != f.history)
                    .flat_map(|h| self.version_ids(*h))
                    .collect();
                if others.is_empty() {
                    return None;
                }
                let id = others[version % others.len()];
                let r = self.v().restore(f.node, id, now, CC);
                assert!(
                    matches!(r, Err(Error::NoSuchVersion(x)) if x == id),
                    "restore of another file's version: {r:?}"
                );
                Some(format!("restore {} to another file's version {id}: refused", show(&name)))
            }
            Op::Undelete { deleted, version, name } => {
                let hs: Vec<u64> = self.model.deleted.keys().copied().collect();
                if hs.is_empty() {
                    return None;
                }
                let h = hs[deleted % hs.len()];
                let ids = self.version_ids(h);
                let i = version % ids.len();
                let k = self.model.versions(h)[i].content;
                let name = NAMES[name];
                let r = self.v().undelete(h, ids[i], NodeId::ROOT, name, now, CC);
                let was = show(&self.model.deleted[&h].name);
                if self.model.files.contains_key(name) {
                    assert!(matches!(r, Err(Error::Exists { .. })), "undelete onto a file: {r:?}");
                } else {
                    let n = r.expect("undelete");
                    let d = self.model.deleted.remove(&h).expect("deleted");
                    self.assert_content(&n, k, "undelete");
                    assert_eq!(
                        (n.perm, (n.uid, n.gid)),
                        (d.perm, d.owner),
                        "undelete: mode, owner"
                    );
                    assert!(self.model.seen.insert(n.id.0), "node id {} used before", n.id);
                    self.model.record(h, t, k);
                    let f =
                        MFile { node: n.id, history: h, content: k, perm: d.perm, owner: d.owner };
                    self.model.files.insert(name.to_vec(), f);
                }
                Some(format!("undelete {was} (history {h}) version {i} (#{k}) as {}", show(name)))
            }
            Op::UndeleteLive { file, version, name } => {
                let (live, f) = self.model.file(file)?;
                let ids = self.version_ids(f.history);
                if ids.is_empty() {
                    return None;
                }
                let id = ids[version % ids.len()];
                let name = NAMES[name];
                let r = self.v().undelete(f.history, id, NodeId::ROOT, name, now, CC);
                assert!(
                    matches!(r, Err(Error::NotPermitted(..))),
                    "undelete of a live file: {r:?}"
                );
                Some(format!("undelete live {} as {}: refused", show(&live), show(name)))
            }
            Op::Reopen { close } => {
                let v = self.vault.take().expect("open vault");
                if close {
                    v.close().expect("close");
                } else {
                    drop(v);
                }
                let v = Vault::open(self.dir.path(), PLAYER, &Options::default()).expect("reopen");
                self.vault = Some(v);
                Some(format!("reopen ({})", if close { "close" } else { "drop" }))
            }
            Op::Prune { expire } => {
                let when = if expire { t + 31 * DAY } else { t + 3600 };
                let pruned = self.v().prune_history(at(when)).expect("prune");
                let mut dropped = 0;
                if expire {
                    // Older than every tier: only a live file's newest version stays.
                    let live = self.model.live_histories();
                    self.model.histories.retain(|h, vs| {
                        if live.contains(h) {
                            dropped += vs.len() - 1;
                            vs.drain(..vs.len() - 1);
                            true
                        } else {
                            dropped += vs.len();
                            false
                        }
                    });
                    let histories = &self.model.histories;
                    self.model.deleted.retain(|h, _| histories.contains_key(h));
                }
                assert_eq!(pruned.versions, dropped as u64, "versions pruned");
                Some(format!("prune {}", if expire { "31 days on" } else { "an hour on" }))
            }
        }
    }

    /// The store's versions of `history` against the model's.
    fn check_versions(&self, history: u64, what: &str) {
        let v = self.v();
        let got = v.versions(history).expect("versions");
        let want = self.model.versions(history);
        // The outline first, for a readable failure: (commit time, content index).
        let outline: Vec<(i64, Option<usize>)> = got
            .iter()
            .map(|x| (x.committed_at.secs - START, self.leaves.iter().position(|l| *l == x.leaf)))
            .collect();
        let expected: Vec<(i64, Option<usize>)> =
            want.iter().map(|x| (x.at - START, Some(x.content))).collect();
        assert_eq!(outline, expected, "{what}: versions of history {history} (step, #content)");
        for (x, m) in got.iter().zip(want) {
            let expected = Version {
                id: x.id,
                history,
                leaf: self.leaves[m.content],
                size: SIZES[m.content] as u64,
                committed_at: at(m.at),
                committer: v.player(),
                added: x.added,
            };
            assert_eq!(*x, expected, "{what}: version");
            assert_eq!(
                v.read_all(&x.leaf).expect("read a version"),
                self.pool[m.content],
                "{what}"
            );
            assert_eq!(v.version(x.id).expect("version"), *x, "{what}: version {}", x.id);
        }
        assert!(got.windows(2).all(|w| w[0].id < w[1].id), "{what}: version ids grow");
    }

    /// Compares the whole of history with the model.
    fn verify(&self, when: &str) {
        let v = self.v();
        let m = &self.model;
        let listed: BTreeMap<Vec<u8>, NodeId> = v
            .list(NodeId::ROOT, 0, 100)
            .expect("list")
            .into_iter()
            .map(|e| (e.name, e.node))
            .collect();
        let expected: BTreeMap<Vec<u8>, NodeId> =
            m.files.iter().map(|(name, f)| (name.clone(), f.node)).collect();
        assert_eq!(listed, expected, "{when}: the root folder");
        for (name, f) in &m.files {
            let what = format!("{when}: {}", show(name));
            self.assert_content(&v.node(f.node).expect("node"), f.content, &what);
            assert_eq!(v.history_id(f.node).expect("history id"), f.history, "{what}: history id");
            let has = !m.versions(f.history).is_empty();
            assert_eq!(
                v.histories(&[f.node]).expect("histories"),
                [has.then_some(f.history)],
                "{what}: histories"
            );
            self.check_versions(f.history, &what);
        }

        let mut want: Vec<Deleted> = m
            .deleted
            .iter()
            .map(|(h, d)| Deleted {
                id: *h,
                parent: NodeId::ROOT,
                name: d.name.clone(),
                dir: false,
                deleted_at: at(d.at),
                perm: d.perm,
                uid: d.owner.0,
                gid: d.owner.1,
            })
            .collect();
        want.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
        assert_eq!(v.deleted_in(NodeId::ROOT).expect("deleted_in"), want, "{when}: deleted files");
        for d in &want {
            assert_eq!(v.deleted_entry(d.id).expect("deleted_entry").as_ref(), Some(d), "{when}");
            self.check_versions(d.id, &format!("{when}: deleted {} ({})", show(&d.name), d.id));
        }

        // Every history the model has belongs to a live or a deleted file, and no other
        // history the case met holds versions.
        let live = m.live_histories();
        for h in m.histories.keys() {
            assert!(live.contains(h) || m.deleted.contains_key(h), "model: stray history {h}");
        }
        for h in &m.seen {
            if !live.contains(h) && !m.deleted.contains_key(h) {
                let left = v.versions(*h).expect("versions");
                assert!(left.is_empty(), "{when}: history {h} of no file holds {left:?}");
                assert_eq!(v.deleted_entry(*h).expect("deleted_entry"), None, "{when}: {h}");
            }
        }
        let usage = v.history_usage().expect("history usage");
        let versions: usize = m.histories.values().map(Vec::len).sum();
        assert_eq!(
            (usage.versions, usage.files, usage.deleted),
            (versions as u64, m.histories.len() as u64, m.deleted.len() as u64),
            "{when}: history usage (versions, files, deleted)"
        );
    }

    fn fsck(&self, when: &str) {
        let report = self.v().fsck(FsckOptions::default(), &mut |_| {}).expect("fsck");
        assert!(report.is_clean(), "fsck {when}: {:?}", report.problems);
    }

    /// The end of a case: a full GC keeps every version's content.
    fn finish(mut self) {
        self.v().gc(None, &mut |_| {}).expect("gc");
        self.verify("after gc");
        self.fsck("after gc");
        self.vault.take().expect("open vault").close().expect("close");
    }
}

/// Runs the operations; a failure's message lists them as run.
fn run(ops: &[Op]) {
    let mut ran: Vec<String> = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut h = Harness::new();
        for (i, op) in ops.iter().enumerate() {
            let Some(done) = h.apply(op) else { continue };
            ran.push(format!("{i}: {done}"));
            let when = format!("after step {i} ({done})");
            h.verify(&when);
            h.fsck(&when);
        }
        h.finish();
    }));
    if let Err(e) = outcome {
        let msg = common::panic_message(&*e);
        panic!("{msg}\noperations as run:\n{}", ran.join("\n"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn history_matches_model(ops in prop::collection::vec(op(), 1..40)) {
        run(&ops);
    }
}
