//! File history, restores and snapshots on a vault: the one implementation that the daemon runs
//! for a mounted vault and the command line runs on a store no mount holds.
//!
//! A path here is a file's names from the vault's root (`["notes", "ideas.md"]`). It names the
//! live file there, or, when there is none, the deleted files history keeps by that name
//! (newest deletion first); a folder on the way may be a deleted one too.
//!
//! Invariants: nothing here panics on what a user typed; every refusal is one line that says
//! why; a restore is always a new version (`Vault::restore`, `Vault::undelete`), never a
//! rewrite of history.

use std::collections::HashMap;

use indras_artifacts::{
    Commit, Deleted, Error, Node, NodeId, NodeKind, PlayerId, Timestamp, Vault, Version, hex,
};
use serde::{Deserialize, Serialize};

/// One version of a file, as `history` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionJson {
    /// The file, from the vault's root.
    pub path: String,
    /// When the file was deleted; `None` for a live file's versions.
    pub deleted_at: Option<String>,
    /// When the version was committed (RFC 3339, milliseconds).
    pub time: String,
    pub size: u64,
    /// The content's id, as the file's `user.indra.id` shows it.
    pub indra_id: String,
    /// Who committed it: our player name, a peer's name, or a player id.
    pub committer: String,
    /// The version id (hex), for `restore --id`.
    pub version: String,
}

/// A snapshot, as `snapshot list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotJson {
    pub name: String,
    pub created_at: String,
    /// Taken by `--snapshot-every`.
    pub auto: bool,
    /// Files, folders and links in it.
    pub entries: u64,
    /// The size of its files' content.
    pub bytes: u64,
}

/// Which version a restore takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pick {
    /// The version committed at this time (milliseconds since the epoch), or the latest
    /// before it.
    At { millis: i64 },
    /// The version with this id.
    Id { id: u64 },
}

/// What a restore changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// One line for the user.
    pub message: String,
    /// The file that has the restored content.
    pub node: NodeId,
    /// Its folder, and its name there.
    pub parent: NodeId,
    pub name: Vec<u8>,
    /// The file is a new entry (an undelete), not new content of a live one.
    pub new_entry: bool,
}

/// A version id as `history` prints it and `--id` takes it.
pub fn version_hex(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses `--id`: hex, as `history` prints it.
pub fn parse_version_id(s: &str) -> Result<u64, String> {
    let digits = s.trim().trim_start_matches("0x");
    if digits.is_empty() || digits.len() > 16 {
        return Err(format!("--id {s}: not a version id (hex, as `history` prints it)"));
    }
    u64::from_str_radix(digits, 16)
        .map_err(|_| format!("--id {s}: not a version id (hex, as `history` prints it)"))
}

/// Parses `--at`: RFC 3339 (`2026-12-06T19:30:37.123Z`), or the form history folders are
/// named with (`2026-12-06T19-30-37.123Z`). Milliseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let parsed = chrono::DateTime::parse_from_rfc3339(t).or_else(|e| match t.split_once('T') {
        Some((date, time)) if time.ends_with('Z') || time.ends_with('z') => {
            chrono::DateTime::parse_from_rfc3339(&format!("{date}T{}", time.replace('-', ":")))
        }
        _ => Err(e),
    });
    match parsed {
        Ok(at) => Ok(at.timestamp_millis()),
        Err(_) => Err(format!(
            "--at {s}: not a time (RFC 3339 like 2026-12-06T19:30:37.123Z, as `history` prints \
             it)"
        )),
    }
}

fn rfc3339(t: Timestamp) -> String {
    indras_fuse::time::rfc3339(t)
}

fn shown(path: &[String]) -> String {
    path.join("/")
}

/// What a path names.
enum Found {
    Live(Node),
    /// Deleted files of that name, newest deletion first.
    Deleted(Vec<Deleted>),
}

/// Whether a store error means "no such entry" (or no such node: a deleted folder's).
fn is_missing(e: &Error) -> bool {
    matches!(e, Error::NotFound { .. } | Error::NoSuchNode(_))
}

/// The folder a path's last name is in (live, or a deleted folder's old id), and what the
/// name is there.
fn find(vault: &Vault, path: &[String]) -> Result<(NodeId, Found), String> {
    let Some((last, folders)) = path.split_last() else {
        return Err("name a file in the vault".into());
    };
    let mut at = NodeId::ROOT;
    for (i, name) in folders.iter().enumerate() {
        let so_far = || shown(&path[..=i]);
        at = match vault.lookup(at, name.as_bytes()) {
            Ok(n) if n.kind == NodeKind::Dir => n.id,
            Ok(_) => return Err(format!("{} is not a folder", so_far())),
            Err(e) if is_missing(&e) => match newest(deleted_named(vault, at, name, true)?) {
                Some(d) => NodeId(d.id),
                None => {
                    return Err(format!(
                        "{}: no such folder, and history keeps no deleted one there",
                        so_far()
                    ));
                }
            },
            Err(e) => return Err(format!("{}: {e}", so_far())),
        };
    }
    match vault.lookup(at, last.as_bytes()) {
        Ok(n) if n.kind == NodeKind::File => Ok((at, Found::Live(n))),
        Ok(_) => Err(format!("{} is not a regular file: history is kept for files", shown(path))),
        Err(e) if is_missing(&e) => {
            let deleted = deleted_named(vault, at, last, false)?;
            if deleted.is_empty() {
                return Err(format!(
                    "{}: no such file, and history keeps no deleted file by that name",
                    shown(path)
                ));
            }
            Ok((at, Found::Deleted(deleted)))
        }
        Err(e) => Err(format!("{}: {e}", shown(path))),
    }
}

/// The deleted files (or folders, with `dir`) named `name` that were in `dir`, newest
/// deletion first.
fn deleted_named(
    vault: &Vault,
    dir: NodeId,
    name: &str,
    folders: bool,
) -> Result<Vec<Deleted>, String> {
    let mut out: Vec<Deleted> = vault
        .deleted_in(dir)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|d| d.dir == folders && d.name == name.as_bytes())
        .collect();
    out.sort_by(|a, b| b.deleted_at.cmp(&a.deleted_at).then(b.id.cmp(&a.id)));
    Ok(out)
}

fn newest(list: Vec<Deleted>) -> Option<Deleted> {
    list.into_iter().next()
}

/// Names committers: us by our player name, peers by our names for them, others by id.
struct Names<'a> {
    vault: &'a Vault,
    known: HashMap<PlayerId, String>,
}

impl Names<'_> {
    fn of(&mut self, id: PlayerId) -> String {
        if id == self.vault.player() {
            return self.vault.player_name().to_owned();
        }
        let vault = self.vault;
        self.known
            .entry(id)
            .or_insert_with(|| match vault.peer(id) {
                Ok(Some(p)) => p.name,
                _ => id.to_string(),
            })
            .clone()
    }
}

/// Every version of the file at `path`, oldest first; for a deleted path, the versions of
/// each deleted file of that name, newest deletion first.
pub fn history(vault: &Vault, path: &[String]) -> Result<Vec<VersionJson>, String> {
    let (_, found) = find(vault, path)?;
    let mut names = Names { vault, known: HashMap::new() };
    let mut out = Vec::new();
    let mut add = |versions: Vec<Version>, deleted_at: Option<Timestamp>| {
        for v in versions {
            out.push(VersionJson {
                path: shown(path),
                deleted_at: deleted_at.map(rfc3339),
                time: rfc3339(v.committed_at),
                size: v.size,
                indra_id: hex(&v.leaf),
                committer: names.of(v.committer),
                version: version_hex(v.id),
            });
        }
    };
    let store = |e: Error| format!("{}: {e}", shown(path));
    match found {
        Found::Live(node) => {
            let id = vault.history_id(node.id).map_err(store)?;
            add(vault.versions(id).map_err(store)?, None);
        }
        Found::Deleted(list) => {
            for d in list {
                add(vault.versions(d.id).map_err(store)?, Some(d.deleted_at));
            }
        }
    }
    Ok(out)
}

/// The version `pick` names among `versions` of `path`: the one with its id, or the one
/// committed at its time (to the millisecond, as times are shown), else the latest before it.
/// A time several versions were committed at names none of them: `--id` must choose.
fn pick_in<'a>(
    versions: &'a [Version],
    pick: Pick,
    path: &[String],
) -> Result<Option<&'a Version>, String> {
    match pick {
        Pick::Id { id } => Ok(versions.iter().find(|v| v.id == id)),
        Pick::At { millis } => {
            let at: Vec<String> = versions
                .iter()
                .filter(|v| v.committed_at.as_millis() == millis)
                .map(|v| version_hex(v.id))
                .collect();
            if at.len() > 1 {
                return Err(format!(
                    "{} versions of {} were committed at {}: choose one with --id ({})",
                    at.len(),
                    shown(path),
                    rfc3339(Timestamp::from_millis(millis)),
                    at.join(", ")
                ));
            }
            Ok(versions
                .iter()
                .filter(|v| v.committed_at.as_millis() <= millis)
                .max_by_key(|v| (v.committed_at.as_millis(), v.id)))
        }
    }
}

/// Why `pick` found nothing among `versions` of `path`.
fn no_version(path: &[String], pick: Pick, versions: &[Version]) -> String {
    let p = shown(path);
    match pick {
        _ if versions.is_empty() => format!("{p} has no versions kept"),
        Pick::Id { id } => {
            format!("{p} has no version {} (see `indras-fuse history {p}`)", version_hex(id))
        }
        Pick::At { millis } => format!(
            "{p} has no version at or before {}: its oldest is of {}",
            rfc3339(Timestamp::from_millis(millis)),
            versions.iter().map(|v| v.committed_at).min().map(rfc3339).unwrap_or_default()
        ),
    }
}

fn versions_of(vault: &Vault, id: u64, path: &[String]) -> Result<Vec<Version>, String> {
    vault.versions(id).map_err(|e| format!("{}: {e}", shown(path)))
}

/// Makes the version `pick` names the content of the file at `path` (a new version of it), or
/// brings a deleted file back: at its old path, or at `to`.
pub fn restore(
    vault: &Vault,
    path: &[String],
    pick: Pick,
    to: Option<&[String]>,
    now: Timestamp,
) -> Result<Restored, String> {
    let (folder, found) = find(vault, path)?;
    let p = shown(path);
    match found {
        Found::Live(node) => {
            let history = vault.history_id(node.id).map_err(|e| format!("{p}: {e}"))?;
            let versions = versions_of(vault, history, path)?;
            let own = pick_in(&versions, pick, path)?.cloned();
            // A version id of a deleted file once at this path: it comes back elsewhere.
            let other = match (pick, &own) {
                (Pick::Id { .. }, None) => deleted_with(
                    vault,
                    deleted_named(vault, folder, &path[path.len() - 1], false)?,
                    pick,
                    path,
                )?,
                _ => None,
            };
            match (own, other, to) {
                (Some(v), _, None) => {
                    vault
                        .restore(node.id, v.id, now, Commit::Durable)
                        .map_err(|e| format!("restoring {p}: {e}"))?;
                    Ok(Restored {
                        message: format!(
                            "restored {p} to its version of {} ({}): that is now its newest \
                             version",
                            rfc3339(v.committed_at),
                            version_hex(v.id)
                        ),
                        node: node.id,
                        parent: folder,
                        name: path[path.len() - 1].as_bytes().to_vec(),
                        new_entry: false,
                    })
                }
                (_, Some((d, v)), Some(to)) => undelete(vault, path, &d, &v, to, now),
                (_, Some(_), None) => Err(format!(
                    "version {} is of a deleted file once at {p}, and {p} exists now: bring it \
                     back elsewhere with --to PATH",
                    match pick {
                        Pick::Id { id } => version_hex(id),
                        Pick::At { .. } => String::new(),
                    }
                )),
                (Some(_), None, Some(_)) => Err(format!(
                    "{p} exists: --to brings back a deleted file; restore {p} itself without --to"
                )),
                (None, None, _) => Err(no_version(path, pick, &versions)),
            }
        }
        Found::Deleted(list) => {
            let all: Vec<Version> = list
                .iter()
                .map(|d| versions_of(vault, d.id, path))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect();
            let Some((d, v)) = deleted_with(vault, list, pick, path)? else {
                return Err(no_version(path, pick, &all));
            };
            match to {
                Some(to) => undelete(vault, path, &d, &v, to, now),
                None => {
                    let alive =
                        vault.node(d.parent).is_ok_and(|n| n.kind == NodeKind::Dir && n.nlink > 0);
                    if !alive {
                        return Err(format!(
                            "the folder {p} was in is gone: bring it back elsewhere with --to PATH"
                        ));
                    }
                    undelete(vault, path, &d, &v, path, now)
                }
            }
        }
    }
}

/// Among deleted files (newest deletion first), the one with the version `pick` names: for a
/// time, the one whose version at or before it is the latest.
fn deleted_with(
    vault: &Vault,
    list: Vec<Deleted>,
    pick: Pick,
    path: &[String],
) -> Result<Option<(Deleted, Version)>, String> {
    let mut best: Option<(Deleted, Version)> = None;
    for d in list {
        let versions = versions_of(vault, d.id, path)?;
        if let Some(v) = pick_in(&versions, pick, path)? {
            let better = best.as_ref().is_none_or(|(_, b)| {
                (v.committed_at.as_millis(), v.id) > (b.committed_at.as_millis(), b.id)
            });
            if better {
                best = Some((d.clone(), v.clone()));
            }
        }
    }
    Ok(best)
}

/// Brings the deleted file `d` back at `to` (names from the vault's root) with version `v`.
fn undelete(
    vault: &Vault,
    path: &[String],
    d: &Deleted,
    v: &Version,
    to: &[String],
    now: Timestamp,
) -> Result<Restored, String> {
    let dest = shown(to);
    let Some((name, folders)) = to.split_last() else {
        return Err("--to names the vault itself; name a file in it".into());
    };
    let mut parent = vault.node(NodeId::ROOT).map_err(|e| e.to_string())?;
    for (i, f) in folders.iter().enumerate() {
        parent = match vault.lookup(parent.id, f.as_bytes()) {
            Ok(n) if n.kind == NodeKind::Dir => n,
            Ok(_) => return Err(format!("{} is not a folder", shown(&to[..=i]))),
            Err(e) if is_missing(&e) => {
                return Err(format!("no folder {} to restore into", shown(&to[..=i])));
            }
            Err(e) => return Err(format!("{}: {e}", shown(&to[..=i]))),
        };
    }
    if vault.lookup(parent.id, name.as_bytes()).is_ok() {
        return Err(format!(
            "{dest} exists: restore to another path with --to, or move {dest} away first"
        ));
    }
    let node = vault
        .undelete(d.id, v.id, parent.id, name.as_bytes(), now, Commit::Durable)
        .map_err(|e| match e {
            Error::Exists { .. } => format!("{dest} exists: restore to another path with --to"),
            Error::InvalidName { .. } | Error::NameTooLong(_) => format!("--to {dest}: {e}"),
            e => format!("bringing back {}: {e}", shown(path)),
        })?;
    Ok(Restored {
        message: format!(
            "brought back {} (deleted {}) as {dest}, with its version of {} ({})",
            shown(path),
            rfc3339(d.deleted_at),
            rfc3339(v.committed_at),
            version_hex(v.id)
        ),
        node: node.id,
        parent: parent.id,
        name: name.as_bytes().to_vec(),
        new_entry: true,
    })
}

fn snapshot_error(e: &Error) -> String {
    match e {
        Error::InvalidName { name, reason } => format!("invalid snapshot name {name:?}: {reason}"),
        other => other.to_string(),
    }
}

/// Takes the snapshot `name` of the whole vault.
pub fn snapshot_create(vault: &Vault, name: &str, now: Timestamp) -> Result<String, String> {
    let s = vault.snapshot_create(name, false, now).map_err(|e| snapshot_error(&e))?;
    Ok(format!("took snapshot {} ({} entries, {} bytes of files)", s.name, s.entries, s.bytes))
}

/// Every snapshot, oldest first.
pub fn snapshot_list(vault: &Vault) -> Result<Vec<SnapshotJson>, String> {
    Ok(vault
        .snapshot_list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|s| SnapshotJson {
            name: s.name,
            created_at: rfc3339(s.created_at),
            auto: s.auto,
            entries: s.entries,
            bytes: s.bytes,
        })
        .collect())
}

/// Deletes the snapshot `name`.
pub fn snapshot_delete(vault: &Vault, name: &str) -> Result<String, String> {
    vault.snapshot_delete(name).map_err(|e| snapshot_error(&e))?;
    Ok(format!("deleted snapshot {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use indras_artifacts::NewNode;
    use indras_artifacts::Options;

    const CC: Commit = Commit::CrashConsistent;

    fn names(p: &str) -> Vec<String> {
        p.split('/').map(str::to_owned).collect()
    }

    fn save(v: &Vault, parent: NodeId, name: &str, content: &[u8], at: Timestamp) -> Node {
        let staged = v.stage(content).expect("stage");
        match v.lookup(parent, name.as_bytes()) {
            Ok(n) => {
                v.set_content(n.id, &staged, at, CC).expect("save");
                v.node(n.id).expect("node")
            }
            Err(_) => v
                .create(parent, name.as_bytes(), &NewNode::file(0o644), Some(staged), at, CC)
                .expect("create"),
        }
    }

    fn content(v: &Vault, parent: NodeId, name: &str) -> Vec<u8> {
        let n = v.lookup(parent, name.as_bytes()).expect("lookup");
        v.read_all(&n.content.expect("content")).expect("read")
    }

    #[test]
    fn times_and_ids_parse_as_history_prints_them() {
        assert_eq!(parse_time("1970-01-01T00:00:01.500Z"), Ok(1500));
        assert_eq!(parse_time("1970-01-01T00-00-01.500Z"), Ok(1500));
        assert_eq!(parse_time("1970-01-01T01:00:01+01:00"), Ok(1000));
        for bad in ["", "yesterday", "1970-01-01", "1970-13-01T00:00:00Z", "1970-01-01T00-00-01"] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.starts_with("--at") && !e.contains('\n'), "{e}");
        }
        assert_eq!(parse_version_id(&version_hex(0x2a)), Ok(0x2a));
        assert_eq!(parse_version_id("0x2A"), Ok(0x2a));
        for bad in ["", "xyz", "0x", "12345678901234567"] {
            assert!(parse_version_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn history_restore_and_undelete_on_a_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let v = Vault::open(dir.path(), "alice", &Options::default()).expect("open");
        let notes = v
            .create(NodeId::ROOT, b"notes", &NewNode::dir(0o755), None, Timestamp::now(), CC)
            .expect("mkdir");
        for i in 0..3 {
            save(
                &v,
                notes.id,
                "a.md",
                format!("v{i}").as_bytes(),
                Timestamp::from_millis(1_000 + i * 10),
            );
        }
        let h = history(&v, &names("notes/a.md")).expect("history");
        assert_eq!(h.len(), 3);
        assert!(h.iter().all(|x| x.committer == "alice" && x.deleted_at.is_none()));
        // The newest version's id is what the file's `user.indra.id` shows.
        let now_id = v.lookup(notes.id, b"a.md").expect("lookup").artifact_id().expect("id");
        assert_eq!(h[2].indra_id, hex(now_id.bytes()));

        // By id, then by time: each a new version.
        let id = parse_version_id(&h[0].version).expect("id");
        restore(&v, &names("notes/a.md"), Pick::Id { id }, None, Timestamp::now())
            .expect("restore");
        assert_eq!(content(&v, notes.id, "a.md"), b"v0");
        let at = parse_time(&h[1].time).expect("time");
        restore(&v, &names("notes/a.md"), Pick::At { millis: at }, None, Timestamp::now())
            .expect("restore");
        assert_eq!(content(&v, notes.id, "a.md"), b"v1");
        assert_eq!(history(&v, &names("notes/a.md")).expect("history").len(), 5);
        let e = restore(&v, &names("notes/a.md"), Pick::Id { id: 1 }, None, Timestamp::now())
            .unwrap_err();
        assert!(e.contains("no version"), "{e}");
        let e = restore(&v, &names("notes/a.md"), Pick::At { millis: 0 }, None, Timestamp::now())
            .unwrap_err();
        assert!(e.contains("at or before"), "{e}");
        // Two versions in one millisecond: the time names neither.
        let a = v.lookup(notes.id, b"a.md").expect("lookup");
        let base = v.versions(v.history_id(a.id).expect("id")).expect("versions")[0].clone();
        let tied: Vec<Version> = [1, 2]
            .iter()
            .map(|id| Version { id: *id, committed_at: Timestamp::from_millis(5), ..base.clone() })
            .collect();
        let e = pick_in(&tied, Pick::At { millis: 5 }, &names("t")).unwrap_err();
        assert!(e.contains("choose one with --id"), "{e}");
        assert_eq!(
            pick_in(&tied, Pick::At { millis: 6 }, &names("t")).expect("pick").map(|x| x.id),
            Some(2)
        );

        // Deleted: listed with its deletion time, brought back where it was, or elsewhere.
        let node = v.lookup(notes.id, b"a.md").expect("lookup");
        v.remove(notes.id, b"a.md", false, Timestamp::now(), CC).expect("rm");
        v.reap(node.id, CC).expect("reap");
        let h = history(&v, &names("notes/a.md")).expect("history of a deleted file");
        assert_eq!(h.len(), 5);
        assert!(h.iter().all(|x| x.deleted_at.is_some()));
        let id = Pick::Id { id: parse_version_id(&h[2].version).expect("id") };
        let r = restore(&v, &names("notes/a.md"), id, None, Timestamp::now()).expect("undelete");
        assert!(r.new_entry && r.parent == notes.id, "{r:?}");
        assert_eq!(content(&v, notes.id, "a.md"), b"v2");
        let e = restore(&v, &names("notes/b.md"), id, None, Timestamp::now()).unwrap_err();
        assert!(e.contains("no such file"), "{e}");
        // Onto an existing path, into a missing folder: refused, one line each.
        let back = v.lookup(notes.id, b"a.md").expect("lookup");
        v.remove(notes.id, b"a.md", false, Timestamp::now(), CC).expect("rm");
        v.reap(back.id, CC).expect("reap");
        save(&v, NodeId::ROOT, "taken.md", b"x", Timestamp::now());
        let latest = Pick::At { millis: i64::MAX };
        let e =
            restore(&v, &names("notes/a.md"), latest, Some(&names("taken.md")), Timestamp::now())
                .unwrap_err();
        assert!(e.contains("taken.md exists"), "{e}");
        let e =
            restore(&v, &names("notes/a.md"), latest, Some(&names("nope/a.md")), Timestamp::now())
                .unwrap_err();
        assert!(e.contains("no folder nope"), "{e}");
        restore(&v, &names("notes/a.md"), latest, Some(&names("moved.md")), Timestamp::now())
            .expect("undelete elsewhere");
        assert_eq!(content(&v, NodeId::ROOT, "moved.md"), b"v2");
        assert!(history(&v, &names("notes/a.md")).is_err());
        assert_eq!(history(&v, &names("moved.md")).expect("history").len(), 7);

        // Snapshots.
        snapshot_create(&v, "before", Timestamp::now()).expect("snapshot");
        assert!(snapshot_create(&v, "before", Timestamp::now()).is_err());
        assert!(snapshot_create(&v, "a/b", Timestamp::now()).unwrap_err().contains("invalid"));
        assert_eq!(snapshot_list(&v).expect("list")[0].name, "before");
        snapshot_delete(&v, "before").expect("delete");
        assert!(snapshot_delete(&v, "before").is_err());
        assert!(snapshot_list(&v).expect("list").is_empty());
    }
}
