//! `peers/` (inode 3): what peers share with us, read-only. The store keeps it as mirror
//! entries (`Vault::mirror_entry`); this view shows them as they are at each request.
//!
//! - `peers/` lists one folder per peer that shares anything (the children of
//!   `MirrorEntry::TOP`, labelled with our name for the peer); a peer's folder lists its shared
//!   roots, and a shared folder its subtree. An entry's inode is `inode::of_mirror(id)`; its
//!   id is also its readdir cookie (ids are stable and above the dots' 1 and 2).
//! - Files are 0444, folders 0555, all owned by the mount's owner; sizes and times are the
//!   entries' (a file whose content is here reports the size of what we hold). A folder's
//!   link count is 2 plus its subfolders.
//! - Every change gives `EROFS`, a hard link to one of its files included (what a peer shares
//!   is the peer's to change; the kernel itself answers `EPERM` to a link of a folder).
//! - Timed grants end on our own clock (the mount's `Clock`): every lookup, getattr, readdir,
//!   read and xattr checks the grant of the root an entry lies under, and an entry whose grant
//!   has ended is `ENOENT` before the store's sweep (`Vault::mirror_expire`) removes it.
//! - A read serves the content we hold (`have`) only while it is the entry's current content
//!   (`MirrorEntry::ready`), checked again after the bytes are read; it reads the leaf at the
//!   offset asked, never the whole file. Content that has not arrived is waited for, at most
//!   `WAIT`, through `NetworkState::wait_ready`; if it still has not, the read gets `EIO`,
//!   logged once at WARN with the file's path.
//! - The extended attributes are computed, read by name and never listed (as the vault's
//!   computed ones, so `cp -a` out of `peers/` copies none): `user.indra.steward` (the peer's
//!   player id), `user.indra.access_mode` and `user.indra.expires_at` (the root's grant; the
//!   latter for timed grants only), `user.indra.id` (a file's content id). `indra.<name>` is
//!   accepted too; anything else is `ENODATA`. `user.indra.heat` is our own attention on the
//!   entry (see below); an entry we never opened or listed has none (`ENODATA`).
//! - Attention: opening a file, closing it (its dwell) and listing a folder from the start are
//!   our attention on the entry (`attention_entry`; `VaultFs` records it through
//!   `Attention::opened_entry`, `closed_entry` and `scanned_entry`). It is kept on the entry
//!   here, shows in `.indra/heat.json` under the entry's `peers/...` path, and goes to the
//!   entry's steward, the peer that shares it, and to no one else.
//!
//! # Kernel caches
//! Entries change without a request through this mount (a peer shares, changes, recalls; a
//! grant ends; content arrives). The daemon reports each change to
//! `Invalidator::mirror_changed`, which drops the kernel's entry of the name in its folder,
//! the entry's attributes and its cached pages, and the folder's attributes. With that, the
//! kernel may cache like the vault's:
//! - Names and attributes for `common::TTL` (60 s), so a repeated `stat` or `ls -l` stays in
//!   the kernel, and a change shows at once through the invalidation. Under a timed grant the
//!   TTL never runs past the grant's end, so the kernel asks again once it has ended and gets
//!   `ENOENT` even if no invalidation came yet.
//! - Absent names are not cached (`negative_ttl` is `None`): a name a peer adds shows at the
//!   next lookup.
//! - File pages stay cached across opens (`FOPEN_KEEP_CACHE`): a change of content drops
//!   them (`inval_inode` of the whole file), so a reader that keeps the file open and reads
//!   again gets the new content, and an unchanged file is not read again. Two kinds of file
//!   are opened with direct I/O instead, so that every read reaches this view: files under a
//!   timed grant (a cached page must not outlive the grant) and files whose content has not
//!   arrived at open (each `read(2)` waits once and fails once, instead of once for the
//!   read-ahead and again for the page the reader asked for).

use std::sync::Arc;
use std::time::Duration;

use indras_artifacts::{AccessMode, Hash, MirrorEntry, NodeId, NodeKind, SharedKind, Vault};

use super::common::{
    Change, Found, ReadOnlyFile, ReadOnlyView, TTL, View, dots, fixed_attr, owned_attr,
};
use crate::attention::{Attention, Clock, display_heat};
use crate::error::{FsError, FsResult};
use crate::inode;
use crate::status::MountInfo;
use crate::time::rfc3339;
use crate::types::{Attr, DirItem};

/// How long a read waits for content that has not arrived.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Entries read from the store at once when counting a folder's subfolders.
const COUNT_BATCH: usize = 1024;

/// Attempts at one read whose content changes while it is read.
const READ_ATTEMPTS: usize = 3;

/// An entry as the mount shows it now, with the grant it lies under (`None` for a peer's
/// folder).
#[derive(Debug)]
struct Shown {
    e: MirrorEntry,
    grant: Option<AccessMode>,
}

#[derive(Debug)]
pub(crate) struct PeersView {
    vault: Arc<Vault>,
    info: Arc<MountInfo>,
    clock: Arc<dyn Clock>,
    attention: Arc<Attention>,
    /// How long a read waits for content (`WAIT`; tests shorten it).
    wait: Duration,
}

fn enoent() -> FsError {
    FsError::errno(libc::ENOENT)
}

/// The content we hold of a file entry, while it is the entry's current content.
fn held(e: &MirrorEntry) -> Option<Hash> {
    (e.kind == SharedKind::File && e.ready()).then_some(e.have).flatten()
}

fn kind_of(e: &MirrorEntry) -> NodeKind {
    match e.kind {
        SharedKind::File => NodeKind::File,
        SharedKind::Dir => NodeKind::Dir,
    }
}

impl PeersView {
    pub(crate) fn new(
        vault: Arc<Vault>,
        info: Arc<MountInfo>,
        clock: Arc<dyn Clock>,
        attention: Arc<Attention>,
    ) -> Self {
        PeersView { vault, info, clock, attention, wait: WAIT }
    }

    #[cfg(test)]
    pub(crate) fn set_wait(&mut self, wait: Duration) {
        self.wait = wait;
    }

    /// Whether the grant `g` still gives access on our clock.
    fn active(&self, g: Option<AccessMode>) -> bool {
        g.is_some_and(|g| g.is_active(self.clock.now()))
    }

    /// `e`, if the mount shows it now: a peer's folder always; anything else while the grant
    /// of its root is active.
    fn check(&self, e: MirrorEntry) -> FsResult<Shown> {
        if e.parent == MirrorEntry::TOP {
            return Ok(Shown { e, grant: None });
        }
        let grant = self.vault.mirror_grant(&e)?;
        if !self.active(grant) {
            return Err(enoent());
        }
        Ok(Shown { e, grant })
    }

    /// The entry behind `ino` (not `peers/` itself), if the mount shows it now.
    fn find(&self, ino: u64) -> FsResult<Shown> {
        let id = inode::mirror_of(ino).filter(|id| *id != MirrorEntry::TOP).ok_or_else(enoent)?;
        self.check(self.vault.mirror_entry(id)?.ok_or_else(enoent)?)
    }

    /// How many folders the mount shows in mirror folder `dir`. In a peer's folder each is a
    /// root with its own grant; deeper down they share their folder's.
    fn subfolders(&self, dir: NodeId, roots: bool) -> FsResult<u32> {
        let mut n = 0u32;
        let mut after = 0;
        loop {
            let batch = self.vault.mirror_list(dir, after, COUNT_BATCH)?;
            for e in &batch {
                if e.kind == SharedKind::Dir && (!roots || self.active(e.grant)) {
                    n = n.saturating_add(1);
                }
            }
            match batch.last() {
                Some(last) if batch.len() == COUNT_BATCH => after = last.id.0,
                _ => return Ok(n),
            }
        }
    }

    fn attr_of(&self, s: &Shown) -> FsResult<Attr> {
        let e = &s.e;
        let (perm, nlink, size) = match e.kind {
            SharedKind::Dir => {
                let roots = e.parent == MirrorEntry::TOP;
                (0o555, 2u32.saturating_add(self.subfolders(e.id, roots)?), 0)
            }
            SharedKind::File => {
                let size = match held(e) {
                    Some(leaf) => self.vault.leaf_size(&leaf)?,
                    None => e.size,
                };
                (0o444, 1, size)
            }
        };
        let ino = inode::of_mirror(e.id);
        Ok(owned_attr(&self.info, ino, kind_of(e), perm, nlink, size, e.mtime.to_system()))
    }

    /// The path of `e` in the mount (`peers/bob/notes/a.md`), for messages.
    fn path_of(&self, e: &MirrorEntry) -> String {
        let path = self.vault.mirror_path(e.id).ok().flatten().unwrap_or_else(|| e.label.clone());
        format!("peers/{}", String::from_utf8_lossy(&path))
    }

    fn not_arrived(&self, e: &MirrorEntry) -> FsError {
        FsError {
            errno: libc::EIO,
            message: format!(
                "{}: the peer's content has not arrived (waited up to {} s)",
                self.path_of(e),
                self.wait.as_secs()
            ),
            level: tracing::Level::WARN,
        }
    }

    /// The content to read of file entry `ino`: what we hold, or, if it has not arrived, what
    /// arrives within the wait.
    fn content(&self, ino: u64) -> FsResult<(NodeId, Hash)> {
        let s = self.find(ino)?;
        if s.e.kind == SharedKind::Dir {
            return Err(FsError::errno(libc::EISDIR));
        }
        if let Some(leaf) = held(&s.e) {
            return Ok((s.e.id, leaf));
        }
        if !self.info.network.wait_ready(s.e.id, self.wait) {
            return Err(self.not_arrived(&s.e));
        }
        // It may have changed, or its grant ended, while we waited.
        let s = self.find(ino)?;
        held(&s.e).map(|leaf| (s.e.id, leaf)).ok_or_else(|| self.not_arrived(&s.e))
    }
}

impl View for PeersView {
    fn getattr(&self, ino: u64) -> FsResult<Attr> {
        if ino == inode::PEERS {
            let peers = self.subfolders(MirrorEntry::TOP, false)?;
            return Ok(fixed_attr(
                &self.info,
                ino,
                NodeKind::Dir,
                0o555,
                2u32.saturating_add(peers),
                0,
            ));
        }
        self.attr_of(&self.find(ino)?)
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Found> {
        let dir = inode::mirror_of(parent).ok_or_else(enoent)?;
        // A name under a root whose grant ended is itself under that grant: `check` hides it.
        let e = self.vault.mirror_lookup(dir, name)?.ok_or_else(enoent)?;
        Ok(Found::Entry(self.attr_of(&self.check(e)?)?))
    }

    fn readdir(&self, dir: u64, offset: u64, limit: usize) -> FsResult<Vec<DirItem>> {
        let (id, parent, roots) = if dir == inode::PEERS {
            (MirrorEntry::TOP, inode::ROOT, false)
        } else {
            let s = self.find(dir)?;
            if s.e.kind != SharedKind::Dir {
                return Err(FsError::errno(libc::ENOTDIR));
            }
            (s.e.id, inode::of_mirror(s.e.parent), s.e.parent == MirrorEntry::TOP)
        };
        let mut out = dots(dir, parent, offset);
        // Cookies past the dots are entry ids, which start far above 2.
        let mut after = if offset <= 2 { 0 } else { offset };
        let limit = limit.max(1);
        loop {
            let batch = self.vault.mirror_list(id, after, limit)?;
            let full = batch.len() == limit;
            for e in batch {
                after = e.id.0;
                // In a peer's folder each root has its own grant; deeper down, the folder's
                // grant (checked above) is every entry's.
                if roots && !self.active(e.grant) {
                    continue;
                }
                out.push(DirItem {
                    ino: inode::of_mirror(e.id),
                    offset: e.id.0,
                    kind: kind_of(&e),
                    name: e.label,
                });
            }
            // An empty answer ends the listing, so a batch of ended grants only moves on.
            if !full || !out.is_empty() {
                return Ok(out);
            }
        }
    }

    fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        let no = || FsError::errno(libc::ENODATA);
        if ino == inode::PEERS {
            return Err(no());
        }
        let s = self.find(ino)?;
        let key = name.strip_prefix(b"user.indra.").or_else(|| name.strip_prefix(b"indra."));
        let text = match key.ok_or_else(no)? {
            b"steward" => s.e.peer.to_string(),
            b"access_mode" => s.grant.ok_or_else(no)?.name().to_owned(),
            b"expires_at" => rfc3339(s.grant.and_then(|g| g.expires_at()).ok_or_else(no)?),
            b"id" => indras_artifacts::hex(&s.e.content.ok_or_else(no)?),
            b"heat" => {
                self.attention.flush()?;
                let agg = self.vault.attention_of(s.e.id)?.ok_or_else(no)?;
                format!("{:.4}", display_heat(agg.heat(self.attention.now())))
            }
            _ => return Err(no()),
        };
        Ok(text.into_bytes())
    }

    fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        if ino != inode::PEERS {
            self.find(ino)?;
        }
        // Every attribute here is computed: read by name, never listed (see the module doc).
        Ok(Vec::new())
    }

    fn ttl(&self, ino: u64) -> Duration {
        if ino == inode::PEERS {
            return TTL;
        }
        match self.find(ino) {
            Ok(s) => match s.grant.and_then(|g| g.expires_at()) {
                Some(end) => end
                    .to_system()
                    .duration_since(self.clock.now().to_system())
                    .map_or(Duration::ZERO, |left| left.min(TTL)),
                None => TTL,
            },
            Err(_) => Duration::ZERO,
        }
    }
}

impl ReadOnlyView for PeersView {
    fn open(&self, ino: u64) -> FsResult<ReadOnlyFile> {
        if ino == inode::PEERS {
            return Err(FsError::errno(libc::EISDIR));
        }
        let s = self.find(ino)?;
        if s.e.kind == SharedKind::Dir {
            return Err(FsError::errno(libc::EISDIR));
        }
        let timed = s.grant.and_then(|g| g.expires_at()).is_some();
        let direct_io = timed || held(&s.e).is_none();
        Ok(ReadOnlyFile::Streamed { keep_cache: !direct_io, direct_io })
    }

    fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        for _ in 0..READ_ATTEMPTS {
            let (id, leaf) = self.content(ino)?;
            let data = self.vault.read_vec(&leaf, offset, size as usize)?;
            // The peer's content may have changed while the bytes were read: hand them out
            // only if they are still the entry's.
            if self.vault.mirror_entry(id)?.as_ref().and_then(held) == Some(leaf) {
                return Ok(data);
            }
        }
        Err(FsError {
            errno: libc::EIO,
            message: format!("inode {ino}: the peer's content changed during every read"),
            level: tracing::Level::WARN,
        })
    }

    fn refuse(&self, _change: Change<'_>) -> FsError {
        FsError::new(libc::EROFS, "peers/ is read-only: what a peer shares is the peer's to change")
    }

    fn attention_entry(&self, ino: u64) -> Option<NodeId> {
        inode::mirror_of(ino).filter(|id| *id != MirrorEntry::TOP)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use indras_artifacts::{Options, PlayerId, SharedItem, Timestamp};

    use super::*;
    use crate::attention::ManualClock;
    use crate::network::{NetworkSnapshot, NetworkState, NoNetwork};

    const T0: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3_600_000;

    /// A network whose wait brings `bytes` as the content of whatever is waited for.
    #[derive(Debug)]
    struct Arrives {
        vault: Arc<Vault>,
        bytes: Vec<u8>,
        waits: AtomicUsize,
    }

    impl NetworkState for Arrives {
        fn snapshot(&self) -> NetworkSnapshot {
            NetworkSnapshot::default()
        }

        fn wait_ready(&self, entry: NodeId, _limit: Duration) -> bool {
            self.waits.fetch_add(1, Ordering::SeqCst);
            let staged = self.vault.stage(&self.bytes).expect("stage");
            self.vault.mirror_set_content(entry, &staged, Timestamp::now()).expect("set")
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        vault: Arc<Vault>,
        clock: Arc<ManualClock>,
        bob: MirrorEntry,
    }

    impl Setup {
        fn view(&self, network: Arc<dyn NetworkState>) -> PeersView {
            let mut info = MountInfo::unmounted("alice", self.vault.dir());
            info.uid = 1000;
            info.gid = 100;
            info.network = network;
            let attention = Arc::new(Attention::new(
                self.vault.clone(),
                self.clock.clone(),
                crate::attention::AttentionConfig::default(),
            ));
            let mut v =
                PeersView::new(self.vault.clone(), Arc::new(info), self.clock.clone(), attention);
            v.set_wait(Duration::from_millis(1));
            v
        }

        fn no_network(&self) -> PeersView {
            self.view(Arc::new(NoNetwork("off".into())))
        }

        fn entry(&self, parent: NodeId, label: &[u8]) -> MirrorEntry {
            self.vault.mirror_lookup(parent, label).expect("lookup").expect("there")
        }

        fn ino(&self, parent: NodeId, label: &[u8]) -> u64 {
            inode::of_mirror(self.entry(parent, label).id)
        }

        /// Keeps `bytes` as the content of the file entry `id`.
        fn arrive(&self, id: NodeId, bytes: &[u8]) {
            let staged = self.vault.stage(bytes).expect("stage");
            assert!(self.vault.mirror_set_content(id, &staged, Timestamp::now()).expect("set"));
        }
    }

    fn item(remote: u64, label: &str, kind: SharedKind, bytes: Option<&[u8]>) -> SharedItem {
        SharedItem {
            remote,
            label: label.as_bytes().to_vec(),
            kind,
            size: bytes.map_or(0, |b| b.len() as u64),
            mtime: Timestamp::from_millis(T0 - HOUR),
            content: bytes.map(|b| *blake3::hash(b).as_bytes()),
            grant: None,
        }
    }

    fn root(mut i: SharedItem, grant: AccessMode) -> SharedItem {
        i.grant = Some(grant);
        i
    }

    fn timed(ms: i64) -> AccessMode {
        AccessMode::Timed { expires_at: Timestamp::from_millis(ms) }
    }

    /// bob shares: `gone` (a folder whose timed grant ended, listed first), `a.txt`
    /// (revocable, here), `docs/` (timed, an hour left) with `docs/b.txt` (here) and
    /// `docs/sub/`, and `late.txt` (permanent, not arrived).
    fn setup() -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Arc::new(Vault::open(dir.path(), "alice", &Options::default()).expect("open"));
        let now = Timestamp::from_millis(T0);
        let bob = vault.mirror_ensure_peer(PlayerId([7; 32]), "bob").expect("peer");
        let roots = [
            root(item(1, "gone", SharedKind::Dir, None), timed(T0 - 1)),
            root(item(2, "a.txt", SharedKind::File, Some(b"alpha")), AccessMode::Revocable),
            root(item(3, "docs", SharedKind::Dir, None), timed(T0 + HOUR)),
            root(item(4, "late.txt", SharedKind::File, Some(b"late")), AccessMode::Permanent),
        ];
        vault.mirror_apply(bob.id, &roots, now).expect("roots");
        let s = Setup { _dir: dir, vault, clock: Arc::new(ManualClock::new(now)), bob };
        let docs = s.entry(s.bob.id, b"docs").id;
        let kids = [
            item(5, "b.txt", SharedKind::File, Some(b"beta")),
            item(6, "sub", SharedKind::Dir, None),
        ];
        s.vault.mirror_apply(docs, &kids, now).expect("docs");
        s.arrive(s.entry(s.bob.id, b"a.txt").id, b"alpha");
        s.arrive(s.entry(docs, b"b.txt").id, b"beta");
        s
    }

    fn names(items: &[DirItem]) -> Vec<String> {
        items.iter().map(|i| String::from_utf8_lossy(&i.name).into_owned()).collect()
    }

    fn errno<T: std::fmt::Debug>(r: FsResult<T>) -> i32 {
        r.expect_err("an error").errno
    }

    #[test]
    fn folders_list_what_is_shared_with_modes_owner_and_links() {
        let s = setup();
        let v = s.no_network();
        assert_eq!(names(&v.readdir(inode::PEERS, 0, 100).unwrap()), [".", "..", "bob"]);
        let top = v.getattr(inode::PEERS).unwrap();
        assert_eq!((top.perm, top.nlink, top.kind), (0o555, 3, NodeKind::Dir));

        let bob = inode::of_mirror(s.bob.id);
        let listing = v.readdir(bob, 0, 100).unwrap();
        assert_eq!(names(&listing), [".", "..", "a.txt", "docs", "late.txt"], "gone has ended");
        assert_eq!(listing[1].ino, inode::PEERS, "a peer's folder lies in peers/");
        let attr = v.getattr(bob).unwrap();
        assert_eq!((attr.perm, attr.nlink, attr.uid, attr.gid), (0o555, 3, 1000, 100));

        let Found::Entry(a) = v.lookup(bob, b"a.txt").unwrap() else { panic!("an entry") };
        assert_eq!((a.kind, a.perm, a.nlink, a.size), (NodeKind::File, 0o444, 1, 5));
        assert_eq!(a.mtime, Timestamp::from_millis(T0 - HOUR).to_system());
        assert_eq!(a, v.getattr(a.ino).unwrap());
        let late = v.getattr(s.ino(s.bob.id, b"late.txt")).unwrap();
        assert_eq!(late.size, 4, "the peer's size until the content arrives");

        let docs = s.ino(s.bob.id, b"docs");
        let d = v.getattr(docs).unwrap();
        assert_eq!((d.perm, d.nlink), (0o555, 3), "one subfolder");
        assert_eq!(names(&v.readdir(docs, 0, 100).unwrap()), [".", "..", "b.txt", "sub"]);
        assert_eq!(v.readdir(docs, 0, 100).unwrap()[1].ino, bob);
        assert_eq!(errno(v.lookup(bob, b"gone")), libc::ENOENT);
        assert_eq!(errno(v.lookup(bob, b"nothing")), libc::ENOENT);
        assert_eq!(errno(v.getattr(s.ino(s.bob.id, b"gone"))), libc::ENOENT);
        assert_eq!(errno(v.getattr(inode::PEERS_ENTRIES.start + 999_999)), libc::ENOENT);
    }

    /// Cookies are entry ids: a listing read one entry at a time resumes where it stopped,
    /// and a batch holding only an ended grant does not end it.
    #[test]
    fn listings_resume_at_their_cookies() {
        let s = setup();
        let v = s.no_network();
        let bob = inode::of_mirror(s.bob.id);
        let mut seen = Vec::new();
        let mut offset = 2;
        loop {
            let batch = v.readdir(bob, offset, 1).unwrap();
            let Some(last) = batch.last() else { break };
            offset = last.offset;
            seen.extend(names(&batch));
        }
        assert_eq!(seen, ["a.txt", "docs", "late.txt"]);
        assert_eq!(names(&v.readdir(bob, 1, 100).unwrap())[0], "..");
    }

    /// Timed grants end on the mount's clock, before any sweep: the root and everything
    /// under it are gone for every operation; the kernel may cache them only until the end.
    #[test]
    fn timed_grants_end_on_our_clock() {
        let s = setup();
        let v = s.no_network();
        let bob = inode::of_mirror(s.bob.id);
        let docs = s.ino(s.bob.id, b"docs");
        let b = s.ino(s.entry(s.bob.id, b"docs").id, b"b.txt");
        assert_eq!(v.ttl(b), Duration::from_secs(60));
        assert_eq!(v.ttl(bob), Duration::from_secs(60));
        s.clock.advance_ms(HOUR - 10_000);
        assert_eq!(v.ttl(b), Duration::from_secs(10), "never past the grant's end");
        assert!(matches!(v.open(b).unwrap(), ReadOnlyFile::Streamed { direct_io: true, .. }));
        assert_eq!(v.read(b, 0, 100).unwrap(), b"beta");

        s.clock.advance_ms(10_000);
        assert_eq!(v.ttl(b), Duration::ZERO);
        assert_eq!(errno(v.lookup(bob, b"docs")), libc::ENOENT);
        assert_eq!(errno(v.getattr(docs)), libc::ENOENT);
        assert_eq!(errno(v.readdir(docs, 0, 100)), libc::ENOENT);
        assert_eq!(errno(v.getattr(b)), libc::ENOENT);
        assert_eq!(errno(v.read(b, 0, 100)), libc::ENOENT);
        assert_eq!(errno(v.open(b)), libc::ENOENT);
        assert_eq!(errno(v.getxattr(b, b"user.indra.id")), libc::ENOENT);
        assert_eq!(names(&v.readdir(bob, 0, 100).unwrap()), [".", "..", "a.txt", "late.txt"]);
        assert_eq!(v.getattr(bob).unwrap().nlink, 2);
        assert!(s.vault.mirror_entry(s.entry(s.bob.id, b"docs").id).unwrap().is_some());
    }

    #[test]
    fn reads_stream_the_current_content_at_any_offset() {
        let s = setup();
        let v = s.no_network();
        let a = s.ino(s.bob.id, b"a.txt");
        assert!(matches!(
            v.open(a).unwrap(),
            ReadOnlyFile::Streamed { keep_cache: true, direct_io: false }
        ));
        assert_eq!(v.read(a, 0, 100).unwrap(), b"alpha");
        assert_eq!(v.read(a, 2, 2).unwrap(), b"ph");
        assert_eq!(v.read(a, 9, 10).unwrap(), b"");
        assert_eq!(errno(v.open(inode::of_mirror(s.bob.id))), libc::EISDIR);
        assert_eq!(errno(v.open(inode::PEERS)), libc::EISDIR);

        // The peer changes the file: until the new content is here, nothing is read (never
        // the old bytes); then the new content, at its own size.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let now = Timestamp::from_millis(T0);
        let changed = [
            root(item(2, "a.txt", SharedKind::File, Some(&big)), AccessMode::Revocable),
            root(item(3, "docs", SharedKind::Dir, None), timed(T0 + HOUR)),
        ];
        let c = s.vault.mirror_apply(s.bob.id, &changed, now).unwrap();
        assert!(c.touched.iter().any(|(id, _, _)| inode::of_mirror(*id) == a));
        assert_eq!(errno(v.read(a, 0, 100)), libc::EIO);
        assert_eq!(v.getattr(a).unwrap().size, big.len() as u64);
        assert!(matches!(v.open(a).unwrap(), ReadOnlyFile::Streamed { direct_io: true, .. }));
        s.arrive(s.entry(s.bob.id, b"a.txt").id, &big);
        assert_eq!(v.read(a, 0, 4096).unwrap(), &big[..4096]);
        assert_eq!(v.read(a, 200_000, 131_072).unwrap(), &big[200_000..]);
        assert_eq!(errno(v.lookup(inode::of_mirror(s.bob.id), b"late.txt")), libc::ENOENT);
    }

    /// Content that has not arrived: one wait through the network, then `EIO` naming the
    /// file if it did not come, or the content if it did.
    #[test]
    fn content_not_here_is_waited_for_then_eio() {
        let s = setup();
        let late = s.ino(s.bob.id, b"late.txt");
        let e = s.no_network().read(late, 0, 100).expect_err("not here");
        assert_eq!((e.errno, e.level), (libc::EIO, tracing::Level::WARN));
        assert!(e.message.contains("peers/bob/late.txt"), "{}", e.message);

        let net = Arc::new(Arrives {
            vault: s.vault.clone(),
            bytes: b"late".to_vec(),
            waits: AtomicUsize::new(0),
        });
        let v = s.view(net.clone());
        assert_eq!(v.read(late, 0, 100).unwrap(), b"late");
        assert_eq!(v.read(late, 1, 100).unwrap(), b"ate");
        assert_eq!(net.waits.load(Ordering::SeqCst), 1, "waited only while it was missing");

        // What arrives must be the entry's content: other bytes are not kept.
        let wrong = Arrives { vault: s.vault.clone(), bytes: b"other".to_vec(), waits: 0.into() };
        let docs = s.entry(s.bob.id, b"docs").id;
        let kids = [item(7, "c.txt", SharedKind::File, Some(b"gamma"))];
        s.vault.mirror_apply(docs, &kids, Timestamp::from_millis(T0)).unwrap();
        let c = s.ino(docs, b"c.txt");
        assert_eq!(errno(s.view(Arc::new(wrong)).read(c, 0, 100)), libc::EIO);
    }

    #[test]
    fn xattrs_name_the_steward_the_grant_and_the_content() {
        let s = setup();
        let v = s.no_network();
        let get = |ino, name: &str| String::from_utf8(v.getxattr(ino, name.as_bytes()).unwrap());
        let bob = inode::of_mirror(s.bob.id);
        let a = s.ino(s.bob.id, b"a.txt");
        let docs = s.ino(s.bob.id, b"docs");
        let b = s.ino(s.entry(s.bob.id, b"docs").id, b"b.txt");
        let late = s.ino(s.bob.id, b"late.txt");
        let peer = PlayerId([7; 32]).to_string();
        for ino in [bob, a, docs, b] {
            assert_eq!(get(ino, "user.indra.steward").unwrap(), peer);
        }
        assert_eq!(get(a, "user.indra.access_mode").unwrap(), "revocable");
        assert_eq!(get(late, "user.indra.access_mode").unwrap(), "permanent");
        assert_eq!(get(docs, "user.indra.access_mode").unwrap(), "timed");
        assert_eq!(get(b, "indra.access_mode").unwrap(), "timed", "from its root");
        let end = rfc3339(Timestamp::from_millis(T0 + HOUR));
        assert_eq!(get(b, "user.indra.expires_at").unwrap(), end);
        assert_eq!(get(docs, "user.indra.expires_at").unwrap(), end);
        assert_eq!(get(a, "user.indra.id").unwrap(), blake3::hash(b"alpha").to_hex().as_str());
        assert_eq!(get(late, "user.indra.id").unwrap(), blake3::hash(b"late").to_hex().as_str());
        for (ino, name) in [
            (a, "user.indra.expires_at"),
            (docs, "user.indra.id"),
            (bob, "user.indra.access_mode"),
            (bob, "user.indra.id"),
            (a, "user.indra.heat"),
            (docs, "user.indra.heat"),
            (a, "user.other"),
            (a, "security.capability"),
            (inode::PEERS, "user.indra.steward"),
        ] {
            assert_eq!(errno(v.getxattr(ino, name.as_bytes())), libc::ENODATA, "{name}");
        }
        for ino in [inode::PEERS, bob, a, docs] {
            assert_eq!(v.listxattr(ino).unwrap(), b"", "computed values are not listed");
        }
        let gone = s.ino(s.bob.id, b"gone");
        assert_eq!(errno(v.listxattr(gone)), libc::ENOENT);

        // Our own attention on an entry shows as its heat, once we paid some.
        let entry = v.attention_entry(a).expect("an entry");
        assert_eq!(entry, s.entry(s.bob.id, b"a.txt").id);
        assert_eq!(v.attention_entry(inode::PEERS), None);
        let at = v.attention.opened_entry(entry).expect("attention is on");
        s.clock.advance_ms(60_000);
        v.attention.closed_entry(entry, at);
        v.attention.scanned_entry(s.entry(s.bob.id, b"docs").id);
        let heat: f64 = get(a, "user.indra.heat").unwrap().parse().unwrap();
        assert!(heat > 0.1, "{heat}");
        assert!(get(docs, "indra.heat").unwrap().parse::<f64>().unwrap() > 0.0);
        let agg = s.vault.attention_of(entry).unwrap().unwrap();
        assert_eq!((agg.opens, agg.dwell_ms), (1, 60_000));
        assert_eq!(agg.players, [s.vault.player()]);
        // Each event also waits for the entry's steward, bob.
        assert_eq!(s.vault.outbox_len(PlayerId([7; 32])).unwrap(), 3);
    }

    #[test]
    fn every_change_is_erofs() {
        let v = setup().no_network();
        for change in [
            Change::Modify,
            Change::AddEntry,
            Change::RemoveEntry(b"a"),
            Change::Rename,
            Change::Link,
        ] {
            assert_eq!(v.refuse(change).errno, libc::EROFS, "{change:?}");
        }
    }
}
