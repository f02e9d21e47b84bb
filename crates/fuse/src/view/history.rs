//! `.indra/history/` (inode 14): every version the store keeps of each file, read-only.
//!
//! - `.indra/history/` holds one folder, `vault/`, which mirrors the vault's folders. A live
//!   folder lists its live subfolders (all of them, so that paths mirror the vault's), one
//!   folder per live file that has versions (named as the file), and one per deleted file or
//!   folder that history keeps (`Vault::deleted_in`). A deleted entry whose name clashes with a
//!   live name of its folder, or with another deleted entry there, is named
//!   `NAME (deleted 2026-12-06T19-30-37.123Z)` (the deletion time, UTC, colons made `-`).
//!   A deleted folder lists its deleted entries.
//! - A file's folder lists its versions, oldest first, each named by its commit time with the
//!   file's extension: `2026-12-06T19-30-37.123Z.md` for `ideas.md`. Later versions committed
//!   in the same millisecond get `_2`, `_3`... before the extension (`_` sorts after `.`, so
//!   `ls` lists them in commit order). A version is a read-only
//!   file (0444) whose bytes are the version's content, every time its commit time; computed
//!   xattrs (read by name, never listed, as the vault's): `user.indra.id` (the content's id),
//!   `user.indra.committed_at` (RFC 3339) and `user.indra.committer` (the player id).
//! - Inodes are `inode::of_history(id)`: `id` is a folder's node id (live or deleted), a
//!   file's history id or a version id, all from the store's node counter, so they never
//!   collide. `place` tells which with point reads.
//! - Readdir cookies: in a live folder, its live entries first with their vault positions
//!   (+ 2), then its deleted entries with `DELETED_COOKIE` + their id, in id order; in a
//!   deleted folder the latter; in a file's folder the version ids. All are stable, so an
//!   entry that stays is listed exactly once however the folder changes meanwhile.
//! - A file's folder is named by the file, but its inode is its history id, which names no
//!   file: the view keeps, for each such folder it handed the kernel, the folder it was shown
//!   in and its extension (`shown`), for `..` and its versions' names.
//! - Listings are worked out once and kept (`listings`) while the store is unchanged, and for
//!   the pages that follow a listing's first one, so a folder of 10,000 versions reads the
//!   store once per listing, not once per page.
//!
//! # Kernel caches
//! Names in these folders change whenever the vault does (a save adds a version, a deletion
//! a folder, a new file of a deleted one's name renames that one), without a word to the
//! kernel: folders are cached for `FOLDER_TTL` (1 s). A version never changes: `TTL`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indras_artifacts::{
    Deleted, Error as StoreError, Node, NodeId, NodeKind, Timestamp, Vault, Version,
};

use super::common::{
    Found, ReadOnlyFile, ReadOnlyView, TTL, View, dots, fixed_attr, fixed_listing, no_acls,
    owned_attr,
};
use crate::error::{FsError, FsResult};
use crate::inode;
use crate::open_files::lock;
use crate::status::MountInfo;
use crate::time::rfc3339;
use crate::types::{Attr, DirItem};

/// How long the kernel may cache the folders of this view (their names change with the vault).
pub(crate) const FOLDER_TTL: Duration = Duration::from_secs(1);

/// Cookies of a live folder's deleted entries: this plus their id (ids are below 2^56, and
/// vault positions never come near).
const DELETED_COOKIE: u64 = 1 << 62;

/// A listing is reused while the store is unchanged for this long...
const LISTING_FRESH: Duration = Duration::from_secs(1);
/// ...and for the pages after a listing's first, whatever changed, for this long.
const LISTING_PAGES: Duration = Duration::from_secs(30);
/// Listings kept at most.
const LISTINGS_MAX: usize = 64;
/// Files' folders remembered at most before the ones the kernel forgot are dropped.
const SHOWN_MAX: usize = 100_000;
/// The longest extension a version's name keeps.
const EXTENSION_MAX: usize = 64;
/// The longest name the mount hands out.
const NAME_MAX: usize = 255;

fn enoent() -> FsError {
    FsError::errno(libc::ENOENT)
}

/// What an inode of this view is.
#[derive(Debug)]
enum Place {
    /// `.indra/history/` itself.
    Top,
    /// A live folder's mirror (`vault/` for the root).
    Folder(Node),
    /// A deleted folder.
    Gone(Deleted),
    /// A file's versions (its history id).
    File(u64),
    Version(Version),
}

/// One entry of a worked-out listing.
#[derive(Clone, Debug)]
struct Item {
    cookie: u64,
    ino: u64,
    dir: bool,
    name: Vec<u8>,
    /// A deleted file's entry: its history id and its own name (for its versions' names).
    file: Option<(u64, Vec<u8>)>,
    /// A version's attributes' source.
    version: Option<Version>,
}

/// A worked-out listing (a folder's deleted entries, or a file's versions), by cookie.
#[derive(Debug)]
struct Listing {
    at: Instant,
    writes: u64,
    items: Arc<Vec<Item>>,
}

/// A file's folder as last handed to the kernel.
#[derive(Debug)]
struct Shown {
    /// The folder it was shown in.
    parent: u64,
    /// Its name's extension, for its versions' names.
    ext: Vec<u8>,
    /// The kernel's lookups of it.
    lookups: u64,
}

#[derive(Debug)]
pub(crate) struct HistoryView {
    vault: Arc<Vault>,
    info: Arc<MountInfo>,
    shown: Mutex<HashMap<u64, Shown>>,
    listings: Mutex<HashMap<u64, Listing>>,
}

/// `t` as a name: RFC 3339 in UTC with milliseconds, colons made `-` (`:` is awkward in
/// names: Windows shares and some tools refuse it).
pub(crate) fn time_name(t: Timestamp) -> String {
    rfc3339(t).replace(':', "-")
}

/// The extension of a file name with its dot (`.md` of `ideas.md`); none for `README`, a
/// dot file such as `.bashrc`, a name ending in a dot, or one longer than `EXTENSION_MAX`.
pub(crate) fn extension(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|b| *b == b'.') {
        Some(i) if i > 0 && i + 1 < name.len() && name.len() - i <= EXTENSION_MAX => &name[i..],
        _ => b"",
    }
}

/// The names of a file's versions (in id order): the commit time and `ext`, with `_2`,
/// `_3`... before `ext` for the later versions of one millisecond. (`_` sorts after the
/// extension's `.`, so `ls` lists them in commit order; `-` would sort before it.)
pub(crate) fn version_names(times: &[Timestamp], ext: &[u8]) -> Vec<Vec<u8>> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    times
        .iter()
        .map(|t| {
            let base = time_name(*t);
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            let mut name = base.into_bytes();
            if *n > 1 {
                name.extend_from_slice(format!("_{n}").as_bytes());
            }
            name.extend_from_slice(ext);
            name
        })
        .collect()
}

/// `name` cut to at most `max` bytes, not inside a UTF-8 sequence.
fn cut(name: &[u8], max: usize) -> &[u8] {
    if name.len() <= max {
        return name;
    }
    let mut end = max;
    while end > 0 && name[end] & 0xc0 == 0x80 {
        end -= 1;
    }
    &name[..end]
}

/// The names of a folder's deleted entries (in id order): the entry's own name, unless it
/// clashes with a live name (`live`) or another deleted entry's; then
/// `NAME (deleted TIME)`, made unique with `_2`, `_3`... after the time.
pub(crate) fn deleted_names(
    entries: &[(Vec<u8>, Timestamp)],
    live: impl Fn(&[u8]) -> bool,
) -> Vec<Vec<u8>> {
    let mut count: HashMap<&[u8], usize> = HashMap::new();
    for (name, _) in entries {
        *count.entry(name.as_slice()).or_default() += 1;
    }
    let mut used: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(entries.len());
    // Plain names first, so that a suffixed one never takes a plain one's name.
    let plain: Vec<bool> =
        entries.iter().map(|(name, _)| count[name.as_slice()] == 1 && !live(name)).collect();
    for ((name, _), plain) in entries.iter().zip(&plain) {
        if *plain {
            used.insert(name.clone());
        }
    }
    for ((name, at), plain) in entries.iter().zip(plain) {
        if plain {
            out.push(name.clone());
            continue;
        }
        let time = time_name(*at);
        let mut n = 1u32;
        let picked = loop {
            let suffix = if n == 1 {
                format!(" (deleted {time})")
            } else {
                format!(" (deleted {time}_{n})")
            };
            let mut candidate = cut(name, NAME_MAX.saturating_sub(suffix.len())).to_vec();
            candidate.extend_from_slice(suffix.as_bytes());
            if !used.contains(&candidate) && !live(&candidate) {
                break candidate;
            }
            n += 1;
        };
        used.insert(picked.clone());
        out.push(picked);
    }
    out
}

fn not_found(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::NotFound { .. }
            | StoreError::NoSuchNode(_)
            | StoreError::InvalidName { .. }
            | StoreError::NameTooLong(_)
    )
}

/// The entries of `items` after cookie `offset`, at most `limit`.
fn page(items: &[Item], offset: u64, limit: usize, out: &mut Vec<DirItem>) {
    let start = items.partition_point(|i| i.cookie <= offset);
    for i in items[start..].iter().take(limit) {
        out.push(DirItem {
            ino: i.ino,
            offset: i.cookie,
            kind: if i.dir { NodeKind::Dir } else { NodeKind::File },
            name: i.name.clone(),
        });
    }
}

impl HistoryView {
    pub(crate) fn new(vault: Arc<Vault>, info: Arc<MountInfo>) -> Self {
        HistoryView {
            vault,
            info,
            shown: Mutex::new(HashMap::new()),
            listings: Mutex::new(HashMap::new()),
        }
    }

    /// What `ino` is now.
    fn place(&self, ino: u64) -> FsResult<Place> {
        if ino == inode::HISTORY {
            return Ok(Place::Top);
        }
        let id = inode::history_of(ino).ok_or_else(enoent)?;
        match self.vault.version(id) {
            Ok(v) => return Ok(Place::Version(v)),
            Err(StoreError::NoSuchVersion(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(d) = self.vault.deleted_entry(id)? {
            return Ok(if d.dir { Place::Gone(d) } else { Place::File(id) });
        }
        match self.vault.node(NodeId(id)) {
            Ok(n) if n.kind == NodeKind::Dir && (n.nlink > 0 || n.id == NodeId::ROOT) => {
                return Ok(Place::Folder(n));
            }
            Ok(_) => {}
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
        // A live file's history: the id it goes by, with versions.
        match self.vault.histories(&[NodeId(id)])?.first() {
            Some(Some(h)) if *h == id => Ok(Place::File(id)),
            _ => Err(enoent()),
        }
    }

    /// Notes that the folder of history `id` was shown in `parent` as `name`.
    fn show(&self, id: u64, parent: u64, name: &[u8]) {
        let mut shown = lock(&self.shown);
        if shown.len() >= SHOWN_MAX && !shown.contains_key(&id) {
            shown.retain(|_, s| s.lookups > 0);
        }
        let ext = extension(name).to_vec();
        shown
            .entry(id)
            .and_modify(|s| {
                s.parent = parent;
                s.ext.clone_from(&ext);
            })
            .or_insert(Shown { parent, ext, lookups: 0 });
    }

    /// The folder a file's folder was shown in, and its extension (a deleted file's own
    /// name tells them if the kernel never was shown it).
    fn shown_as(&self, history: u64) -> FsResult<(u64, Vec<u8>)> {
        if let Some(s) = lock(&self.shown).get(&history) {
            return Ok((s.parent, s.ext.clone()));
        }
        Ok(match self.vault.deleted_entry(history)? {
            Some(d) => (inode::of_history(d.parent.0), extension(&d.name).to_vec()),
            None => (inode::of_history(NodeId::ROOT.0), Vec::new()),
        })
    }

    /// The listing of `ino` worked out by `make`: the kept one while the store is unchanged
    /// (or, for a page after the first, `LISTING_PAGES`), else a new one.
    fn listing(
        &self,
        ino: u64,
        first_page: bool,
        make: impl FnOnce() -> FsResult<Vec<Item>>,
    ) -> FsResult<Arc<Vec<Item>>> {
        let writes = self.vault.write_count();
        if let Some(l) = lock(&self.listings).get(&ino) {
            let age = l.at.elapsed();
            if (l.writes == writes && age < LISTING_FRESH) || (!first_page && age < LISTING_PAGES) {
                return Ok(l.items.clone());
            }
        }
        let items = Arc::new(make()?);
        let mut listings = lock(&self.listings);
        if listings.len() >= LISTINGS_MAX {
            let oldest = listings.iter().min_by_key(|(_, l)| l.at).map(|(k, _)| *k);
            if let Some(k) = oldest {
                listings.remove(&k);
            }
        }
        listings.insert(ino, Listing { at: Instant::now(), writes, items: items.clone() });
        Ok(items)
    }

    /// The deleted entries of folder `dir` (live when `live`), named.
    fn deleted_items(&self, dir: NodeId, live: bool) -> FsResult<Vec<Item>> {
        let mut entries = self.vault.deleted_in(dir)?;
        entries.sort_by_key(|d| d.id);
        let pairs: Vec<(Vec<u8>, Timestamp)> =
            entries.iter().map(|d| (d.name.clone(), d.deleted_at)).collect();
        let names = deleted_names(&pairs, |name| {
            live && match self.vault.lookup(dir, name) {
                Ok(_) => true,
                Err(e) if not_found(&e) => false,
                // Unsure: treat it as taken, so the deleted entry gets the longer name.
                Err(_) => true,
            }
        });
        Ok(entries
            .into_iter()
            .zip(names)
            .map(|(d, name)| Item {
                cookie: if live { DELETED_COOKIE + d.id } else { d.id },
                ino: inode::of_history(d.id),
                dir: d.dir,
                name,
                file: (!d.dir).then_some((d.id, d.name)),
                version: None,
            })
            .collect())
    }

    /// The versions of history `history`, named.
    fn version_items(&self, history: u64) -> FsResult<Vec<Item>> {
        let versions = self.vault.versions(history)?;
        let (_, ext) = self.shown_as(history)?;
        let times: Vec<Timestamp> = versions.iter().map(|v| v.committed_at).collect();
        let names = version_names(&times, &ext);
        Ok(versions
            .into_iter()
            .zip(names)
            .map(|(v, name)| Item {
                cookie: v.id,
                ino: inode::of_history(v.id),
                dir: false,
                name,
                file: None,
                version: Some(v),
            })
            .collect())
    }

    fn deleted_listing(
        &self,
        ino: u64,
        dir: NodeId,
        live: bool,
        first: bool,
    ) -> FsResult<Arc<Vec<Item>>> {
        self.listing(ino, first, || self.deleted_items(dir, live))
    }

    fn version_listing(&self, ino: u64, history: u64, first: bool) -> FsResult<Arc<Vec<Item>>> {
        self.listing(ino, first, || self.version_items(history))
    }

    fn folder_attr(&self, ino: u64, t: Timestamp) -> Attr {
        // One link, as btrfs reports for folders: counting subfolders would mean listing.
        owned_attr(&self.info, ino, NodeKind::Dir, 0o555, 1, 0, t.to_system())
    }

    fn version_attr(&self, v: &Version) -> Attr {
        let ino = inode::of_history(v.id);
        owned_attr(&self.info, ino, NodeKind::File, 0o444, 1, v.size, v.committed_at.to_system())
    }

    fn attr_of(&self, ino: u64, place: &Place) -> FsResult<Attr> {
        Ok(match place {
            Place::Top => fixed_attr(&self.info, ino, NodeKind::Dir, 0o555, 3, 0),
            Place::Folder(n) => {
                let mut a = self.folder_attr(ino, n.mtime);
                a.atime = n.atime.to_system();
                a.ctime = n.ctime.to_system();
                a.crtime = n.crtime.to_system();
                a
            }
            Place::Gone(d) => self.folder_attr(ino, d.deleted_at),
            Place::File(h) => {
                let items = self.version_listing(ino, *h, true)?;
                let last = items.last().and_then(|i| i.version.as_ref()).ok_or_else(enoent)?;
                self.folder_attr(ino, last.committed_at)
            }
            Place::Version(v) => self.version_attr(v),
        })
    }

    /// The entry `name` of live folder `dir` (inode `parent`), if one shows.
    fn lookup_live(&self, parent: u64, dir: NodeId, name: &[u8]) -> FsResult<Option<Attr>> {
        let node = match self.vault.lookup(dir, name) {
            Ok(n) => n,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let ino = inode::of_history(node.id.0);
        match node.kind {
            NodeKind::Dir => Ok(Some(self.attr_of(ino, &Place::Folder(node))?)),
            NodeKind::File => match self.vault.histories(&[node.id])?.first() {
                Some(Some(h)) => {
                    let ino = inode::of_history(*h);
                    self.show(*h, parent, name);
                    Ok(Some(self.attr_of(ino, &Place::File(*h))?))
                }
                // A live name with nothing to show hides any deleted entry of that name
                // (which shows under its longer name).
                _ => Err(enoent()),
            },
            _ => Err(enoent()),
        }
    }

    /// The entry `name` among `items` (a folder's deleted entries or a file's versions).
    fn lookup_in(&self, parent: u64, items: &[Item], name: &[u8]) -> FsResult<Attr> {
        let item = items.iter().find(|i| i.name == name).ok_or_else(enoent)?;
        if let Some(v) = &item.version {
            return Ok(self.version_attr(v));
        }
        if let Some((h, own)) = &item.file {
            // The deleted file's own name, for its versions' extension.
            self.show(*h, parent, own);
        }
        self.getattr(item.ino)
    }

    /// A live folder's live entries after `offset`: subfolders, and files with versions.
    fn live_page(
        &self,
        dir_ino: u64,
        dir: NodeId,
        offset: u64,
        limit: usize,
        out: &mut Vec<DirItem>,
    ) -> FsResult<bool> {
        let mut after = offset.saturating_sub(2);
        let start = out.len();
        loop {
            let batch = self.vault.list(dir, after, limit)?;
            let full = batch.len() == limit;
            let files: Vec<NodeId> =
                batch.iter().filter(|e| e.kind == NodeKind::File).map(|e| e.node).collect();
            let mut histories = self.vault.histories(&files)?.into_iter();
            for e in batch {
                after = e.position;
                let ino = match e.kind {
                    NodeKind::Dir => inode::of_history(e.node.0),
                    NodeKind::File => match histories.next().flatten() {
                        Some(h) => {
                            self.show(h, dir_ino, &e.name);
                            inode::of_history(h)
                        }
                        None => continue,
                    },
                    _ => continue,
                };
                let kind = NodeKind::Dir;
                out.push(DirItem { ino, offset: e.position + 2, kind, name: e.name });
            }
            if !full {
                return Ok(true);
            }
            if out.len() > start {
                return Ok(false);
            }
        }
    }
}

impl View for HistoryView {
    fn getattr(&self, ino: u64) -> FsResult<Attr> {
        let place = self.place(ino)?;
        self.attr_of(ino, &place)
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Found> {
        let attr = match self.place(parent)? {
            Place::Top if name == b"vault" => self.getattr(inode::of_history(NodeId::ROOT.0))?,
            Place::Top => return Err(enoent()),
            Place::Folder(n) => match self.lookup_live(parent, n.id, name)? {
                Some(a) => a,
                None => {
                    self.lookup_in(parent, &self.deleted_listing(parent, n.id, true, true)?, name)?
                }
            },
            Place::Gone(d) => {
                let items = self.deleted_listing(parent, NodeId(d.id), false, true)?;
                self.lookup_in(parent, &items, name)?
            }
            Place::File(h) => {
                self.lookup_in(parent, &self.version_listing(parent, h, true)?, name)?
            }
            Place::Version(_) => return Err(FsError::errno(libc::ENOTDIR)),
        };
        Ok(Found::Entry(attr))
    }

    fn readdir(&self, dir: u64, offset: u64, limit: usize) -> FsResult<Vec<DirItem>> {
        let limit = limit.max(1);
        let first = offset <= 2;
        match self.place(dir)? {
            Place::Top => {
                let vault = inode::of_history(NodeId::ROOT.0);
                Ok(fixed_listing(
                    dir,
                    inode::INDRA,
                    offset,
                    [(vault, NodeKind::Dir, &b"vault"[..])],
                ))
            }
            Place::Folder(n) => {
                let parent = match n.parent {
                    _ if n.id == NodeId::ROOT => inode::HISTORY,
                    Some(p) => inode::of_history(p.0),
                    None => inode::of_history(NodeId::ROOT.0),
                };
                let mut out = dots(dir, parent, offset);
                // A new listing reads the folder's deleted entries afresh; its later pages
                // go on with them.
                let items = self.deleted_listing(dir, n.id, true, first)?;
                if offset < DELETED_COOKIE && !self.live_page(dir, n.id, offset, limit, &mut out)? {
                    return Ok(out);
                }
                let left = limit.saturating_sub(out.len()).max(1);
                page(&items, offset, left, &mut out);
                Ok(out)
            }
            Place::Gone(d) => {
                let mut out = dots(dir, inode::of_history(d.parent.0), offset);
                let items = self.deleted_listing(dir, NodeId(d.id), false, first)?;
                page(&items, offset, limit, &mut out);
                Ok(out)
            }
            Place::File(h) => {
                let (parent, _) = self.shown_as(h)?;
                let mut out = dots(dir, parent, offset);
                page(&self.version_listing(dir, h, first)?, offset, limit, &mut out);
                Ok(out)
            }
            Place::Version(_) => Err(FsError::errno(libc::ENOTDIR)),
        }
    }

    fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        let no = || FsError::errno(libc::ENODATA);
        if let Some(e) = no_acls(name) {
            return Err(e);
        }
        let Place::Version(v) = self.place(ino)? else { return Err(no()) };
        let key = name.strip_prefix(b"user.indra.").or_else(|| name.strip_prefix(b"indra."));
        let text = match key.ok_or_else(no)? {
            b"id" => indras_artifacts::hex(&v.leaf),
            b"committed_at" => v.committed_at.rfc3339(),
            b"committer" => v.committer.to_string(),
            _ => return Err(no()),
        };
        Ok(text.into_bytes())
    }

    fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.place(ino)?;
        // Computed, read by name and never listed (see the module doc).
        Ok(Vec::new())
    }

    fn remember(&self, ino: u64) {
        if let Some(id) = inode::history_of(ino)
            && let Some(s) = lock(&self.shown).get_mut(&id)
        {
            s.lookups = s.lookups.saturating_add(1);
        }
    }

    fn forget(&self, ino: u64, n: u64) {
        if let Some(id) = inode::history_of(ino)
            && let Some(s) = lock(&self.shown).get_mut(&id)
        {
            s.lookups = s.lookups.saturating_sub(n);
        }
    }

    fn ttl(&self, ino: u64) -> Duration {
        // A version never changes; anything else here may.
        match inode::history_of(ino).map(|id| self.vault.version(id)) {
            Some(Ok(_)) => TTL,
            _ => FOLDER_TTL,
        }
    }
}

impl ReadOnlyView for HistoryView {
    fn open(&self, ino: u64) -> FsResult<ReadOnlyFile> {
        match self.place(ino)? {
            Place::Version(_) => Ok(ReadOnlyFile::Streamed { keep_cache: true, direct_io: false }),
            _ => Err(FsError::errno(libc::EISDIR)),
        }
    }

    fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let id = inode::history_of(ino).ok_or_else(enoent)?;
        let v = self.vault.version(id)?;
        Ok(self.vault.read_vec(&v.leaf, offset, size as usize)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indras_artifacts::{Commit, NewNode, Options};

    const CC: Commit = Commit::CrashConsistent;

    fn put(v: &Vault, dir: NodeId, name: &str, content: &[u8]) -> Node {
        let staged = v.stage(content).expect("stage");
        match v.lookup(dir, name.as_bytes()) {
            Ok(n) => v.set_content(n.id, &staged, Timestamp::now(), CC).expect("save"),
            Err(_) => v
                .create(
                    dir,
                    name.as_bytes(),
                    &NewNode::file(0o644),
                    Some(staged),
                    Timestamp::now(),
                    CC,
                )
                .expect("create"),
        }
    }

    /// Every page of a listing, `limit` entries at a time, running `between` after each.
    fn list_all(
        view: &HistoryView,
        dir: u64,
        limit: usize,
        mut between: impl FnMut(),
    ) -> Vec<DirItem> {
        let (mut out, mut offset) = (Vec::new(), 0);
        loop {
            let page = view.readdir(dir, offset, limit).expect("readdir");
            let Some(last) = page.last() else { return out };
            offset = last.offset;
            out.extend(page.into_iter().filter(|i| i.name != b"." && i.name != b".."));
            between();
        }
    }

    /// A folder's listing, paged while files are saved, deleted and created in it: every
    /// entry that stays is listed exactly once, under the name a lookup finds it by.
    #[test]
    fn listings_page_stably_while_the_folder_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Arc::new(Vault::open(dir.path(), "alice", &Options::default()).expect("open"));
        let info = Arc::new(MountInfo::unmounted("alice", dir.path()));
        let view = HistoryView::new(vault.clone(), info);
        let now = Timestamp::now();
        let d = vault.create(NodeId::ROOT, b"d", &NewNode::dir(0o755), None, now, CC).expect("d");
        for i in 0..40 {
            put(&vault, d.id, &format!("f{i:02}.md"), b"one");
        }
        vault.create(d.id, b"sub", &NewNode::dir(0o755), None, now, CC).expect("sub");
        vault.create(d.id, b"empty", &NewNode::file(0o644), None, now, CC).expect("empty");
        for i in 0..10 {
            vault.remove(d.id, format!("f{i:02}.md").as_bytes(), false, now, CC).expect("rm");
        }
        put(&vault, d.id, "f00.md", b"again");
        let folder = inode::of_history(d.id.0);
        let mut n = 100;
        let listed = list_all(&view, folder, 3, || {
            n += 1;
            put(&vault, d.id, &format!("new{n}.md"), b"x");
            put(&vault, d.id, "f20.md", format!("save {n}").as_bytes());
            vault.remove(d.id, format!("new{n}.md").as_bytes(), false, now, CC).expect("rm");
        });
        let mut names: Vec<String> =
            listed.iter().map(|i| String::from_utf8_lossy(&i.name).into_owned()).collect();
        names.retain(|n| !n.starts_with("new"));
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "an entry listed twice: {names:?}");
        // 40 files (10 of them deleted, one name back as a new file), the subfolder, and
        // the deleted f00.md under its longer name; no entry for a file with no versions.
        assert_eq!(names.len(), 40 + 1 + 1, "{names:?}");
        assert!(names.iter().any(|n| n.starts_with("f00.md (deleted ")), "{names:?}");
        assert!(!names.iter().any(|n| n == "empty"));
        for item in &listed {
            if String::from_utf8_lossy(&item.name).starts_with("new") {
                continue;
            }
            let Found::Entry(attr) = view.lookup(folder, &item.name).expect("lookup") else {
                panic!("an entry")
            };
            assert_eq!(attr.ino, item.ino, "{:?}", String::from_utf8_lossy(&item.name));
        }
        // A file's versions page by their ids.
        let f20 = vault.lookup(d.id, b"f20.md").expect("f20");
        let h = vault.history_id(f20.id).expect("history");
        let versions = list_all(&view, inode::of_history(h), 4, || {});
        assert_eq!(versions.len(), vault.versions(h).expect("versions").len());
        let mut names: Vec<&[u8]> = versions.iter().map(|i| i.name.as_slice()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), versions.len());
        let last = versions.last().expect("a version");
        assert_eq!(view.read(last.ino, 0, 100).expect("read"), format!("save {n}").as_bytes());
        assert_eq!(view.open(folder).expect_err("a folder").errno, libc::EISDIR);
    }

    fn ms(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn extensions_are_kept_when_a_name_has_one() {
        assert_eq!(extension(b"ideas.md"), b".md");
        assert_eq!(extension(b"a.tar.gz"), b".gz");
        assert_eq!(extension(b"README"), b"");
        assert_eq!(extension(b".bashrc"), b"");
        assert_eq!(extension(b"odd."), b"");
        assert_eq!(extension(&[b"a.".as_slice(), &[b'x'; 100]].concat()), b"");
    }

    #[test]
    fn versions_are_named_by_commit_time_and_made_unique_within_a_millisecond() {
        let t = 1_796_585_437_123; // 2026-12-06T19:30:37.123Z
        let names = version_names(&[ms(t), ms(t), ms(t + 1), ms(t)], b".md");
        let text: Vec<String> = names.iter().map(|n| String::from_utf8_lossy(n).into()).collect();
        assert_eq!(
            text,
            [
                "2026-12-06T19-30-37.123Z.md",
                "2026-12-06T19-30-37.123Z_2.md",
                "2026-12-06T19-30-37.124Z.md",
                "2026-12-06T19-30-37.123Z_3.md",
            ]
        );
        assert_eq!(version_names(&[ms(t)], b""), [b"2026-12-06T19-30-37.123Z".to_vec()]);
    }

    #[test]
    fn deleted_names_are_plain_unless_they_clash() {
        let t = 1_796_585_437_123;
        let entries = vec![
            (b"a.md".to_vec(), ms(t)),
            (b"b.md".to_vec(), ms(t)),
            (b"b.md".to_vec(), ms(t + 5)),
            (b"c.md".to_vec(), ms(t)),
            (b"c.md".to_vec(), ms(t)),
        ];
        let names = deleted_names(&entries, |n| n == b"a.md");
        let text: Vec<String> = names.iter().map(|n| String::from_utf8_lossy(n).into()).collect();
        assert_eq!(
            text,
            [
                "a.md (deleted 2026-12-06T19-30-37.123Z)",
                "b.md (deleted 2026-12-06T19-30-37.123Z)",
                "b.md (deleted 2026-12-06T19-30-37.128Z)",
                "c.md (deleted 2026-12-06T19-30-37.123Z)",
                "c.md (deleted 2026-12-06T19-30-37.123Z_2)",
            ]
        );
        let plain = deleted_names(&[(b"x".to_vec(), ms(t))], |_| false);
        assert_eq!(plain, [b"x".to_vec()]);
        // A live file that already has the longer name pushes the deleted one further.
        let taken = b"x (deleted 2026-12-06T19-30-37.123Z)".to_vec();
        let names = deleted_names(&[(b"x".to_vec(), ms(t))], |n| n == b"x" || n == taken);
        assert_eq!(names, [b"x (deleted 2026-12-06T19-30-37.123Z_2)".to_vec()]);
        // Long names are cut to fit.
        let long = vec![b'n'; 250];
        let names = deleted_names(&[(long.clone(), ms(t)), (long, ms(t))], |_| false);
        assert!(names.iter().all(|n| n.len() <= NAME_MAX), "{names:?}");
        assert_ne!(names[0], names[1]);
    }
}
