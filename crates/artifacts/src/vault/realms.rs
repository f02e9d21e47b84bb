//! Realms: named groups of players, and what each member shares with all the others.
//!
//! A realm has a random id, a name and a creator. The creator alone writes its record: it adds
//! and removes members, and each change raises the record's `version`. Every member keeps a
//! copy, taken only from the creator (`realm_apply`, state-based: what the creator offers is
//! the whole truth about its realms that include us). A member that leaves drops its copy at
//! once and remembers the leave until the creator has heard it (`realm_left`), so the
//! creator's next offer cannot bring the realm back. A creator that leaves dissolves the
//! realm: it is no longer offered, so it goes from every member's copy.
//!
//! What a realm shows (`realms/<realm>/` in the mount) is, for each member, its own files and
//! folders that hold live grants to all the other members. Ours are computed here from our
//! grants (`realm_own_items`); each other member tells us its own (`realm_set_items`), since
//! only it knows whom it granted what. A member's word is kept only about itself.
//!
//! Each realm row also carries a local id from the node counter (so it never equals a node
//! or mirror id; the mount derives the realm folder's inode from it) and a local label: the
//! realm's name, numbered when two realms we know share a name.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::store::schema::{decode, encode};
use crate::types::{AccessMode, NodeId, PlayerId, Timestamp};
use crate::vault::handle::{Commit, Vault};
use crate::vault::mirror::clean_label;
use crate::vault::namespace::NAME_MAX;

/// The most members a realm may have.
pub const MEMBERS_MAX: usize = 256;
/// The longest realm name, in bytes.
pub const REALM_NAME_MAX: usize = 128;
/// The most items one member may claim in one realm.
pub const ITEMS_MAX: usize = 100_000;

/// A realm's id: 16 random bytes, shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RealmId(pub [u8; 16]);

impl std::fmt::Display for RealmId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::types::hex(&self.0))
    }
}

impl std::fmt::Debug for RealmId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RealmId({self})")
    }
}

/// A realm as its creator writes it, and as it travels between members.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Realm {
    pub id: RealmId,
    pub name: String,
    pub creator: PlayerId,
    /// Every member, the creator first.
    pub members: Vec<PlayerId>,
    /// Raised by the creator at each change.
    pub version: u64,
    pub created_at: Timestamp,
}

impl Realm {
    /// The members other than `me`.
    pub fn others(&self, me: PlayerId) -> impl Iterator<Item = PlayerId> + '_ {
        self.members.iter().copied().filter(move |m| *m != me)
    }

    pub fn has(&self, p: PlayerId) -> bool {
        self.members.contains(&p)
    }

    /// Whether the record is well formed: a valid name, the creator a member, no member twice,
    /// and not too many.
    pub fn check(&self) -> std::result::Result<(), &'static str> {
        validate_realm_name(&self.name)?;
        if self.members.first() != Some(&self.creator) {
            return Err("a realm's creator must be its first member");
        }
        if self.members.len() > MEMBERS_MAX {
            return Err("a realm has at most 256 members");
        }
        let set: HashSet<PlayerId> = self.members.iter().copied().collect();
        if set.len() != self.members.len() {
            return Err("a member is listed twice");
        }
        Ok(())
    }
}

/// A realm as this vault keeps it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RealmRow {
    pub realm: Realm,
    /// A local id from the node counter: the mount's inode of the realm's folder comes from it.
    pub local: NodeId,
    /// The folder's name in `realms/`: the realm's name, numbered if another realm has it.
    pub label: String,
}

/// Whether `name` can name a realm: a folder name of at most `REALM_NAME_MAX` bytes, with no
/// `/`, NUL or control characters, and not `.` or `..`.
pub fn validate_realm_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("a realm name cannot be empty");
    }
    if name.len() > REALM_NAME_MAX {
        return Err("a realm name is at most 128 bytes");
    }
    if name == "." || name == ".." {
        return Err("a realm name cannot be . or ..");
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err("a realm name cannot hold / or control characters");
    }
    Ok(())
}

/// What a change to the realms did, for the mount's caches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RealmChanges {
    /// Realms added, changed or removed (their local ids and labels).
    pub touched: Vec<(NodeId, String)>,
}

impl RealmChanges {
    pub fn is_empty(&self) -> bool {
        self.touched.is_empty()
    }
}

fn bad(why: &'static str) -> Error {
    Error::NotPermitted(NodeId(0), why)
}

impl Vault {
    /// Every realm we belong to, by label.
    pub fn realms(&self) -> Result<Vec<RealmRow>> {
        let mut out: Vec<RealmRow> = self.scan(&["realms"], |r| {
            r.realms()?.iter()?.map(|row| decode("realm", row?.1.value())).collect()
        })?;
        out.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(out)
    }

    pub fn realm(&self, id: RealmId) -> Result<Option<RealmRow>> {
        self.read_fs(|r| r.realms()?.get(&id.0)?.map(|v| decode("realm", v.value())).transpose())
    }

    /// The realm whose folder is `label`.
    pub fn realm_by_label(&self, label: &str) -> Result<Option<RealmRow>> {
        Ok(self.realms()?.into_iter().find(|r| r.label == label))
    }

    /// The realm whose local id is `local`.
    pub fn realm_by_local(&self, local: NodeId) -> Result<Option<RealmRow>> {
        Ok(self.realms()?.into_iter().find(|r| r.local == local))
    }

    /// Creates a realm named `name`, of us and `members` (which the caller has checked are
    /// our peers).
    pub fn realm_create(
        &self,
        name: &str,
        members: &[PlayerId],
        now: Timestamp,
    ) -> Result<RealmRow> {
        let me = self.player();
        let mut all = vec![me];
        for m in members {
            if *m == me {
                return Err(bad("the creator is a member already"));
            }
            if all.contains(m) {
                return Err(bad("a member is listed twice"));
            }
            all.push(*m);
        }
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)
            .map_err(|e| Error::io("getrandom", std::io::Error::other(e.to_string())))?;
        let realm = Realm {
            id: RealmId(id),
            name: name.to_owned(),
            creator: me,
            members: all,
            version: 1,
            created_at: now,
        };
        realm.check().map_err(bad)?;
        if self.realms()?.iter().any(|r| r.realm.name == name) {
            return Err(bad("a realm of that name exists already"));
        }
        let mut rows = self.realm_put(&[realm], &[])?;
        rows.pop().ok_or_else(|| bad("the realm was not kept"))
    }

    /// Sets the members of realm `id`, which we created: the creator stays first.
    pub fn realm_set_members(&self, id: RealmId, members: Vec<PlayerId>) -> Result<RealmRow> {
        let Some(row) = self.realm(id)? else { return Err(bad("no such realm")) };
        if row.realm.creator != self.player() {
            return Err(bad("only the realm's creator changes its members"));
        }
        let mut realm = row.realm;
        realm.members = members;
        realm.version += 1;
        realm.check().map_err(bad)?;
        let mut rows = self.realm_put(&[realm], &[])?;
        rows.pop().ok_or_else(|| bad("the realm was not kept"))
    }

    /// Leaves realm `id`: drops it here, and, when someone else created it, remembers the
    /// leave until the creator has heard it (`realm_left_told`). A creator's leave dissolves
    /// the realm.
    pub fn realm_leave(&self, id: RealmId) -> Result<Option<RealmRow>> {
        let Some(row) = self.realm(id)? else { return Ok(None) };
        let creator = row.realm.creator;
        let me = self.player();
        self.write_fs(Commit::Durable, |w| {
            w.realms()?.remove(&id.0)?;
            remove_items(w, id)?;
            if creator != me {
                w.realm_left()?.insert(&id.0, &creator.0)?;
            }
            Ok(())
        })?;
        Ok(Some(row))
    }

    /// Realms we left whose creator has not heard it yet: (realm, creator).
    pub fn realm_left(&self) -> Result<Vec<(RealmId, PlayerId)>> {
        self.scan(&["realm_left"], |r| {
            r.realm_left()?
                .iter()?
                .map(|row| {
                    let (k, v) = row?;
                    Ok((RealmId(*k.value()), PlayerId(*v.value())))
                })
                .collect()
        })
    }

    /// The creator has heard that we left `id`.
    pub fn realm_left_told(&self, id: RealmId) -> Result<()> {
        self.write_fs(Commit::CrashConsistent, |w| {
            w.realm_left()?.remove(&id.0)?;
            Ok(())
        })
    }

    /// `creator` offers `offered`: every realm it created that includes us. Realms it created
    /// that it no longer offers are dropped; offered ones we left, that are older than what
    /// we hold, that do not include us, or that are malformed are not kept.
    pub fn realm_apply(&self, creator: PlayerId, offered: &[Realm]) -> Result<RealmChanges> {
        let me = self.player();
        let left: HashSet<RealmId> = self.realm_left()?.into_iter().map(|(id, _)| id).collect();
        let mine: Vec<RealmRow> =
            self.realms()?.into_iter().filter(|r| r.realm.creator == creator).collect();
        let mut keep: Vec<Realm> = Vec::new();
        for r in offered.iter().take(10_000) {
            if r.creator != creator || !r.has(me) || left.contains(&r.id) || r.check().is_err() {
                continue;
            }
            if keep.iter().any(|k| k.id == r.id) {
                continue;
            }
            match mine.iter().find(|m| m.realm.id == r.id) {
                Some(m) if m.realm.version >= r.version => {
                    if m.realm != *r && m.realm.version == r.version {
                        tracing::warn!(realm = %r.id, "a creator sent two versions under one number; keeping ours");
                    }
                }
                _ => keep.push(r.clone()),
            }
        }
        let gone: Vec<RealmId> = mine
            .iter()
            .filter(|m| !offered.iter().any(|r| r.id == m.realm.id && r.creator == creator))
            .map(|m| m.realm.id)
            .collect();
        let mut changes = RealmChanges::default();
        for id in &gone {
            if let Some(row) = mine.iter().find(|m| m.realm.id == *id) {
                changes.touched.push((row.local, row.label.clone()));
            }
        }
        for row in self.realm_put(&keep, &gone)? {
            changes.touched.push((row.local, row.label));
        }
        Ok(changes)
    }

    /// Writes `put` (new or changed records) and removes `gone`, in one transaction; returns
    /// the rows written. A member no longer in a realm loses its items there.
    fn realm_put(&self, put: &[Realm], gone: &[RealmId]) -> Result<Vec<RealmRow>> {
        if put.is_empty() && gone.is_empty() {
            return Ok(Vec::new());
        }
        self.write_fs(Commit::Durable, |w| {
            for id in gone {
                w.realms()?.remove(&id.0)?;
                remove_items(w, *id)?;
            }
            let mut labels: HashSet<String> = HashSet::new();
            let mut existing: BTreeMap<[u8; 16], RealmRow> = BTreeMap::new();
            for row in w.realms()?.iter()? {
                let row: RealmRow = decode("realm", row?.1.value())?;
                labels.insert(row.label.clone());
                existing.insert(row.realm.id.0, row);
            }
            let mut out = Vec::new();
            for realm in put {
                let row = match existing.get(&realm.id.0) {
                    Some(old) => {
                        // Members who left take their word about the realm with them.
                        for m in old.realm.members.iter().filter(|m| !realm.has(**m)) {
                            w.realm_items()?.remove((&realm.id.0, &m.0))?;
                        }
                        let label = if old.realm.name == realm.name {
                            old.label.clone()
                        } else {
                            labels.remove(&old.label);
                            unique_label(&realm.name, &labels)
                        };
                        RealmRow { realm: realm.clone(), local: old.local, label }
                    }
                    None => RealmRow {
                        realm: realm.clone(),
                        local: w.alloc_node()?,
                        label: unique_label(&realm.name, &labels),
                    },
                };
                labels.insert(row.label.clone());
                w.realms()?.insert(&realm.id.0, encode(&row).as_slice())?;
                out.push(row);
            }
            Ok(out)
        })
    }

    /// What `member` shares with all the other members of realm `id`: its node ids, as it
    /// says. Kept only while `member` is a member; returns whether anything changed.
    pub fn realm_set_items(&self, id: RealmId, member: PlayerId, items: &[u64]) -> Result<bool> {
        let Some(row) = self.realm(id)? else { return Ok(false) };
        if !row.realm.has(member) || member == self.player() {
            return Ok(false);
        }
        let mut items: Vec<u64> = items.iter().copied().take(ITEMS_MAX).collect();
        items.sort_unstable();
        items.dedup();
        if self.realm_items(id, member)? == items {
            return Ok(false);
        }
        self.write_fs(Commit::CrashConsistent, |w| {
            if items.is_empty() {
                w.realm_items()?.remove((&id.0, &member.0))?;
            } else {
                w.realm_items()?.insert((&id.0, &member.0), encode(&items).as_slice())?;
            }
            Ok(true)
        })
    }

    /// What `member` says it shares with all the other members of realm `id`.
    pub fn realm_items(&self, id: RealmId, member: PlayerId) -> Result<Vec<u64>> {
        self.read_fs(|r| {
            r.realm_items()?
                .get((&id.0, &member.0))?
                .map(|v| decode("realm items", v.value()))
                .transpose()
                .map(Option::unwrap_or_default)
        })
    }

    /// Our own files and folders that hold live grants to all the other members of `realm`
    /// at `now` (none in a realm of one). Transfers do not count: they move a file to one
    /// player. What a peer shared with us and we share on is not our own.
    pub fn realm_own_items(&self, realm: &Realm, now: Timestamp) -> Result<Vec<NodeId>> {
        let others: Vec<PlayerId> = realm.others(self.player()).collect();
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_node: BTreeMap<u64, HashSet<PlayerId>> = BTreeMap::new();
        for g in self.grants(None)? {
            if g.is_active(now) && g.mode != AccessMode::Transfer {
                by_node.entry(g.node.0).or_default().insert(g.grantee);
            }
        }
        let mut out = Vec::new();
        for (node, grantees) in by_node {
            if others.iter().all(|o| grantees.contains(o))
                && self.mirror_entry(NodeId(node))?.is_none()
            {
                out.push(NodeId(node));
            }
        }
        Ok(out)
    }
}

/// What a realm item is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RealmTarget {
    /// One of our own nodes.
    Own(NodeId),
    /// A root a member shares with us: a mirror entry.
    Theirs(NodeId),
}

/// One item of a realm's folder.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RealmItem {
    /// Its name in the realm's folder: the steward's label, with ` (steward)` before the
    /// extension when several items share that label (`spec (carol).md`).
    pub label: Vec<u8>,
    pub steward: PlayerId,
    pub target: RealmTarget,
    /// A folder (else a file).
    pub dir: bool,
}

impl Vault {
    /// What realm `row`'s folder shows at `now`, ordered by label: our own files and folders
    /// with live grants to all other members, and each other member's shared roots that it
    /// says it shares with all the others (only those it shares with us live: we can read no
    /// other).
    pub fn realm_view(&self, row: &RealmRow, now: Timestamp) -> Result<Vec<RealmItem>> {
        let me = self.player();
        let targets = self.realm_targets(row, now)?;
        let own: HashSet<NodeId> = targets
            .iter()
            .filter_map(|(_, t)| match t {
                RealmTarget::Own(n) => Some(*n),
                RealmTarget::Theirs(_) => None,
            })
            .collect();
        let paths = if own.is_empty() { HashMap::new() } else { self.paths_of(&own)? };
        // (label, steward, target, folder), labels as the stewards give them.
        let mut raw: Vec<(Vec<u8>, PlayerId, RealmTarget, bool)> = Vec::new();
        for (steward, target) in targets {
            match target {
                RealmTarget::Own(n) => {
                    let Some(p) = paths.get(&n) else { continue };
                    let label = p.rsplit(|b| *b == b'/').next().unwrap_or(p).to_vec();
                    let dir = self.node(n)?.kind == crate::types::NodeKind::Dir;
                    raw.push((label, me, target, dir));
                }
                RealmTarget::Theirs(id) => {
                    let Some(e) = self.mirror_entry(id)? else { continue };
                    let dir = e.kind == crate::types::SharedKind::Dir;
                    raw.push((clean_label(&e.their_label), steward, target, dir));
                }
            }
        }
        let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
        for (label, ..) in &raw {
            *counts.entry(label.clone()).or_default() += 1;
        }
        // Who is who, in the names we know them by.
        let mut names: HashMap<PlayerId, String> = HashMap::new();
        names.insert(me, self.player_name().to_owned());
        for p in self.peers()? {
            names.insert(p.id, p.name);
        }
        raw.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(id_of(a.2).cmp(&id_of(b.2))));
        let mut taken: HashSet<Vec<u8>> = HashSet::new();
        let mut out = Vec::with_capacity(raw.len());
        for (label, steward, target, dir) in raw {
            let who =
                names.get(&steward).cloned().unwrap_or_else(|| steward.to_string()[..8].to_owned());
            let mut n = 1;
            let name = loop {
                let candidate = if counts[&label] == 1 && n == 1 {
                    label.clone()
                } else if n == 1 {
                    tagged(&label, &who)
                } else {
                    tagged(&label, &format!("{who} {n}"))
                };
                if taken.insert(candidate.clone()) {
                    break candidate;
                }
                n += 1;
            };
            out.push(RealmItem { label: name, steward, target, dir });
        }
        out.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(out)
    }
}

impl Vault {
    /// What realm `row` holds at `now`, with each item's steward, unnamed: our own items,
    /// and the roots each other member says it shares with all the others that it shares
    /// with us live.
    pub fn realm_targets(
        &self,
        row: &RealmRow,
        now: Timestamp,
    ) -> Result<Vec<(PlayerId, RealmTarget)>> {
        let me = self.player();
        let mut out: Vec<(PlayerId, RealmTarget)> = self
            .realm_own_items(&row.realm, now)?
            .into_iter()
            .map(|n| (me, RealmTarget::Own(n)))
            .collect();
        for m in row.realm.others(me) {
            for remote in self.realm_items(row.realm.id, m)? {
                for e in self.mirror_by_remote(m, remote)? {
                    if e.root == e.id && e.grant.is_some_and(|g| g.is_active(now)) {
                        out.push((m, RealmTarget::Theirs(e.id)));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn id_of(t: RealmTarget) -> NodeId {
    match t {
        RealmTarget::Own(n) | RealmTarget::Theirs(n) => n,
    }
}

/// `label` with ` (tag)` before its extension: `spec.md` -> `spec (carol).md`, kept within
/// `NAME_MAX` bytes.
fn tagged(label: &[u8], tag: &str) -> Vec<u8> {
    let dot = label.iter().rposition(|&b| b == b'.').filter(|&i| i > 0);
    let (stem, ext) = dot.map_or((label, &b""[..]), |i| label.split_at(i));
    let suffix = format!(" ({tag})");
    let room = NAME_MAX.saturating_sub(suffix.len() + ext.len());
    let mut out = stem[..stem.len().min(room)].to_vec();
    out.extend_from_slice(suffix.as_bytes());
    out.extend_from_slice(ext);
    clean_label(&out)
}

/// `name`, or `name (2)`, `name (3)`... : the first not in `taken`.
fn unique_label(name: &str, taken: &HashSet<String>) -> String {
    // Of these `taken.len() + 2` candidates, at most `taken.len()` are taken.
    (1..=taken.len() + 2)
        .map(|n| if n == 1 { name.to_owned() } else { format!("{name} ({n})") })
        .find(|label| !taken.contains(label))
        .unwrap_or_else(|| name.to_owned())
}

fn remove_items(w: &mut crate::store::meta::W, id: RealmId) -> Result<()> {
    let keys: Vec<[u8; 32]> = w
        .realm_items()?
        .range((&id.0, &[0u8; 32])..=(&id.0, &[0xffu8; 32]))?
        .map(|row| row.map(|(k, _)| *k.value().1))
        .collect::<std::result::Result<_, _>>()?;
    for k in keys {
        w.realm_items()?.remove((&id.0, &k))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::handle::Options;

    fn open(dir: &std::path::Path, name: &str) -> Vault {
        Vault::open(dir, name, &Options::default()).expect("open")
    }

    fn realm(creator: PlayerId, members: &[PlayerId], version: u64, name: &str) -> Realm {
        let mut all = vec![creator];
        all.extend_from_slice(members);
        Realm {
            id: RealmId([9; 16]),
            name: name.into(),
            creator,
            members: all,
            version,
            created_at: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", ".", "..", "a/b", "a\nb", &"x".repeat(129)] {
            assert!(validate_realm_name(bad).is_err(), "{bad:?}");
        }
        for good in ["aurora", "project aurora", "été", &"x".repeat(128)] {
            assert!(validate_realm_name(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn the_creator_writes_members_and_a_member_takes_only_the_creators_word() {
        let dir = tempfile::tempdir().unwrap();
        let v = open(dir.path(), "bob");
        let me = v.player();
        let alice = PlayerId([1; 32]);
        let carol = PlayerId([3; 32]);

        // Someone other than the creator cannot speak for the realm; a realm without us is
        // not kept; a malformed one neither.
        let r = realm(alice, &[me, carol], 1, "aurora");
        assert!(v.realm_apply(carol, std::slice::from_ref(&r)).unwrap().is_empty());
        assert!(v.realm_apply(alice, &[realm(alice, &[carol], 1, "x")]).unwrap().is_empty());
        assert!(v.realm_apply(alice, &[realm(alice, &[me], 1, "a/b")]).unwrap().is_empty());
        assert!(v.realms().unwrap().is_empty());

        let c = v.realm_apply(alice, std::slice::from_ref(&r)).unwrap();
        assert_eq!(c.touched.len(), 1);
        let row = v.realm(r.id).unwrap().unwrap();
        assert_eq!((row.label.as_str(), row.realm.members.len()), ("aurora", 3));

        // carol speaks for herself only, and only as a member.
        assert!(v.realm_set_items(r.id, carol, &[5, 7, 5]).unwrap());
        assert_eq!(v.realm_items(r.id, carol).unwrap(), [5, 7]);
        assert!(!v.realm_set_items(r.id, carol, &[7, 5]).unwrap(), "unchanged");
        assert!(!v.realm_set_items(r.id, PlayerId([4; 32]), &[1]).unwrap());

        // An older version changes nothing; a newer one without carol drops her items.
        let older = realm(alice, &[me], 0, "renamed");
        assert!(v.realm_apply(alice, &[older]).unwrap().is_empty());
        assert_eq!(v.realm(r.id).unwrap().unwrap(), row);
        let newer = realm(alice, &[me], 2, "aurora");
        v.realm_apply(alice, std::slice::from_ref(&newer)).unwrap();
        assert_eq!(v.realm(r.id).unwrap().unwrap().realm.members.len(), 2);
        assert!(v.realm_items(r.id, carol).unwrap().is_empty());
        assert_eq!(v.realm(r.id).unwrap().unwrap().local, row.local, "the local id stays");

        // Not offered any more: gone.
        let c = v.realm_apply(alice, &[]).unwrap();
        assert_eq!(c.touched, [(row.local, "aurora".to_owned())]);
        assert!(v.realms().unwrap().is_empty());
    }

    #[test]
    fn a_leave_is_remembered_until_the_creator_hears_it() {
        let dir = tempfile::tempdir().unwrap();
        let v = open(dir.path(), "bob");
        let alice = PlayerId([1; 32]);
        let r = realm(alice, &[v.player()], 1, "aurora");
        v.realm_apply(alice, std::slice::from_ref(&r)).unwrap();
        v.realm_leave(r.id).unwrap().unwrap();
        assert_eq!(v.realm_left().unwrap(), [(r.id, alice)]);
        v.realm_apply(alice, std::slice::from_ref(&r)).unwrap();
        assert!(v.realms().unwrap().is_empty(), "the creator's offer does not bring it back");
        v.realm_left_told(r.id).unwrap();
        assert!(v.realm_left().unwrap().is_empty());
    }

    #[test]
    fn labels_are_unique_and_creation_checks_members() {
        let dir = tempfile::tempdir().unwrap();
        let v = open(dir.path(), "bob");
        let alice = PlayerId([1; 32]);
        let carol = PlayerId([3; 32]);
        let now = Timestamp::from_millis(0);
        let mine = v.realm_create("aurora", &[alice], now).unwrap();
        assert_eq!(mine.realm.members, [v.player(), alice]);
        assert!(v.realm_create("aurora", &[carol], now).is_err(), "one name once");
        assert!(v.realm_create("x", &[v.player()], now).is_err());
        assert!(v.realm_create("x", &[alice, alice], now).is_err());
        v.realm_apply(alice, &[realm(alice, &[v.player()], 1, "aurora")]).unwrap();
        let labels: Vec<String> = v.realms().unwrap().into_iter().map(|r| r.label).collect();
        assert_eq!(labels, ["aurora", "aurora (2)"]);
        assert_ne!(v.realm_by_label("aurora (2)").unwrap().unwrap().local, mine.local);

        let grown = v.realm_set_members(mine.realm.id, vec![v.player(), alice, carol]).unwrap();
        assert_eq!(grown.realm.version, 2);
        assert!(v.realm_set_members(mine.realm.id, vec![alice]).is_err(), "the creator first");
        let theirs = v.realm_by_label("aurora (2)").unwrap().unwrap();
        assert!(v.realm_set_members(theirs.realm.id, vec![alice]).is_err(), "not ours");
    }

    #[test]
    fn own_items_hold_live_grants_to_every_other_member() {
        let dir = tempfile::tempdir().unwrap();
        let v = open(dir.path(), "alice");
        let bob = PlayerId([2; 32]);
        let carol = PlayerId([3; 32]);
        let now = Timestamp::from_millis(1_000_000);
        let file = |name: &[u8]| {
            let spec = crate::types::NewNode::file(0o644);
            v.create(NodeId::ROOT, name, &spec, None, now, Commit::CrashConsistent).unwrap()
        };
        let (a, b, c) = (file(b"a.md"), file(b"b.md"), file(b"c.md"));
        let r = v.realm_create("aurora", &[bob, carol], now).unwrap().realm;
        let soon = AccessMode::Timed { expires_at: Timestamp::from_millis(2_000_000) };
        for (n, p, m) in [
            (a.id, bob, AccessMode::Revocable),
            (a.id, carol, AccessMode::Permanent),
            (b.id, bob, AccessMode::Revocable),
            (c.id, bob, soon),
            (c.id, carol, AccessMode::Revocable),
        ] {
            v.grant(n, p, m, now, Commit::CrashConsistent).unwrap();
        }
        assert_eq!(v.realm_own_items(&r, now).unwrap(), [a.id, c.id]);
        assert_eq!(v.realm_own_items(&r, Timestamp::from_millis(2_000_000)).unwrap(), [a.id]);
        let alone = v.realm_set_members(r.id, vec![v.player()]).unwrap().realm;
        assert!(v.realm_own_items(&alone, now).unwrap().is_empty(), "a realm of one shows nothing");
    }

    fn peer(v: &Vault, id: PlayerId, name: &str) {
        let p = crate::types::Peer {
            id,
            name: name.into(),
            their_name: name.into(),
            addrs: Vec::new(),
            relay: None,
            state: crate::types::PeerState::Accepted,
            added_at: Timestamp::from_millis(0),
            last_seen: None,
        };
        v.put_peer(&p, Commit::CrashConsistent).unwrap();
    }

    fn shared(remote: u64, label: &str, grant: AccessMode) -> crate::types::SharedItem {
        crate::types::SharedItem {
            remote,
            label: label.as_bytes().to_vec(),
            kind: crate::types::SharedKind::File,
            size: 1,
            mtime: Timestamp::from_millis(0),
            content: Some([remote as u8; 32]),
            grant: Some(grant),
        }
    }

    /// The view joins our items and the members' word with what they share with us; a label
    /// two members share is told apart by steward, the same way on every run.
    #[test]
    fn a_realm_view_names_every_members_items_apart() {
        let dir = tempfile::tempdir().unwrap();
        let v = open(dir.path(), "alice");
        let (bob, carol) = (PlayerId([2; 32]), PlayerId([3; 32]));
        peer(&v, bob, "bob");
        peer(&v, carol, "carol");
        let now = Timestamp::from_millis(1_000_000);
        let spec = crate::types::NewNode::file(0o644);
        let mine = v.create(NodeId::ROOT, b"spec.md", &spec, None, now, Commit::Durable).unwrap();
        let row = v.realm_create("aurora", &[bob, carol], now).unwrap();
        for p in [bob, carol] {
            v.grant(mine.id, p, AccessMode::Revocable, now, Commit::Durable).unwrap();
        }
        let ended = AccessMode::Timed { expires_at: Timestamp::from_millis(10) };
        for (who, name, items) in [
            (
                bob,
                "bob",
                vec![shared(1, "spec.md", AccessMode::Revocable), shared(2, "b.txt", ended)],
            ),
            (
                carol,
                "carol",
                vec![
                    shared(7, "spec.md", AccessMode::Permanent),
                    shared(8, "x", AccessMode::Revocable),
                ],
            ),
        ] {
            let folder = v.mirror_ensure_peer(who, name).unwrap();
            v.mirror_apply(folder.id, &items, now).unwrap();
        }
        // bob says 1 and 2 (2's grant to us has ended); carol says 7 and 9 (9 is not shared
        // with us), not 8.
        v.realm_set_items(row.realm.id, bob, &[1, 2]).unwrap();
        v.realm_set_items(row.realm.id, carol, &[7, 9]).unwrap();
        let view = v.realm_view(&row, now).unwrap();
        let labels: Vec<String> =
            view.iter().map(|i| String::from_utf8_lossy(&i.label).into_owned()).collect();
        assert_eq!(labels, ["spec (alice).md", "spec (bob).md", "spec (carol).md"]);
        assert_eq!(view[0].target, RealmTarget::Own(mine.id));
        assert_eq!(view[2].steward, carol);
        assert!(matches!(view[1].target, RealmTarget::Theirs(_)));
        assert_eq!(v.realm_view(&row, now).unwrap(), view, "deterministic");

        // A recall of ours to carol takes ours out of the realm; bob's then stands apart
        // from carol's only.
        v.revoke(mine.id, carol, Commit::Durable).unwrap();
        let labels: Vec<String> = v
            .realm_view(&row, now)
            .unwrap()
            .iter()
            .map(|i| String::from_utf8_lossy(&i.label).into_owned())
            .collect();
        assert_eq!(labels, ["spec (bob).md", "spec (carol).md"]);
        assert_eq!(tagged(b"README", "carol"), b"README (carol)");
        assert_eq!(tagged(b".hidden", "carol"), b".hidden (carol)");
    }
}
