//! Model-based property test of `VaultFs`, driven directly: no kernel, no mount.
//!
//! Random sequences of filesystem operations run against a `VaultFs` over a fresh vault and
//! against a small reference model, over a tiny namespace (names `a`, `b`, `c`) so operations
//! collide: creates hit existing names, renames cross directories, replace non-empty
//! directories, exchange files with directories and try to move directories into themselves.
//! Generated paths are mostly picked among the live entries (`Pick`) and resolved just before
//! the operation runs; a few fixed paths (at most two deep) keep the error paths busy.
//!
//! The model is a map from path to entry (model id and listing position) plus a map from id to
//! object (directory, file content, symlink target), so hard links are two paths naming one id.
//!
//! Operations: `create` + `write`s + `release`; `open` + a write (overwrite, extend, sparse,
//! `O_APPEND`) + `flush` or `fsync` or nothing + `release`; `setattr` size by path or through
//! a handle (shrink, grow back, write); `read`; `fallocate`; `mkdir`, `unlink`, `rmdir`,
//! `rename` (0, `RENAME_NOREPLACE`, `RENAME_EXCHANGE`, invalid flags), `link`, `symlink` +
//! `readlink`; a handle held open with unflushed writes while its file is unlinked, renamed
//! over, truncated by path, hard-linked or garbage-collected; a listing paged across a change
//! to the directory; `fsck` + GC; the kernel forgetting its lookups; and remounts (clean, right
//! after a dirty file's `release`, or `commit_all` with a dirty handle still open).
//!
//! After every operation the test checks
//! - the outcome: `Ok`, or the exact errno the model predicts (`ENOENT`, `EEXIST`,
//!   `ENOTEMPTY`, `EISDIR`, `ENOTDIR`, `EINVAL` for cycles and bad flags, `EPERM`, `ENXIO`,
//!   `ENAMETOOLONG`, `EOPNOTSUPP`);
//! - the whole tree, walked from the vault root with paged `readdir` (tiny limits, resumed
//!   from the returned cookies), `lookup` and `getattr`: names, listing order, `.` and `..`,
//!   kinds, inode identities (hard links share one inode, renames keep it), sizes, link
//!   counts, symlink targets, and every file's content read back through `open`/`read`/
//!   `release`;
//! - that no file is left open or dirty once every handle is released;
//! - unlinked nodes: still there (with no links) while a lookup holds them, gone once the
//!   lookups are forgotten or the vault is reopened.
//!
//! Every case ends by forgetting every lookup, `fsck` + GC + `fsck`, a walk, a remount, a walk
//! and `fsck` again. A failure's message ends with the operations as run, in Rust.
//!
//! Content sizes cover 0, small, `INLINE_MAX` and its neighbours, multi-chunk payloads and
//! streams longer than two maximum chunks; writes land before, at and beyond the end (sparse
//! zeros), and a few land past `MEM_SHADOW_MAX` so the write buffer spills to a file.
//!
//! `PROPTEST_CASES=n` runs more cases.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use indras_artifacts::{FsckOptions, FsckReport, INLINE_MAX, NodeId, NodeKind, Options, Vault};
use indras_fuse::buffer::MEM_SHADOW_MAX;
use indras_fuse::{Attr, Ctx, MountInfo, SetAttrReq, VaultFs, inode};
use proptest::prelude::*;

mod common;
use common::{committed, scratch};

const CTX: Ctx = Ctx { uid: 0, gid: 0, pid: 1 };
const NAMES: [u8; 3] = *b"abc";
/// The model id of the vault root.
const ROOT_ID: u32 = 0;
/// How much one `read` asks for (the kernel's usual maximum).
const READ_PIECE: u32 = 128 * 1024;
/// `VaultFs`'s longest symlink target.
const SYMLINK_MAX: usize = 4095;
const PLAYER: &str = "alice";

// ----- content -----

/// Deterministic pseudo-random bytes (splitmix64). A shorter content of one seed is a prefix
/// of a longer one, so files share leading chunks.
fn gen_bytes(seed: u8, len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(u64::from(seed) + 1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A payload: `len` bytes generated from `seed`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Content {
    seed: u8,
    len: usize,
}

impl Content {
    fn bytes(self) -> Vec<u8> {
        gen_bytes(self.seed, self.len)
    }
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c({}, {})", self.seed, self.len)
    }
}

fn c(seed: u8, len: usize) -> Content {
    Content { seed, len }
}

/// An offset or size: absolute, or relative to the file's current size (clamped at 0).
#[derive(Clone, Copy)]
enum Pos {
    At(u64),
    End(i64),
}

impl Pos {
    fn resolve(self, len: usize) -> u64 {
        match self {
            Pos::At(n) => n,
            Pos::End(d) => (len as u64).saturating_add_signed(d),
        }
    }
}

/// A path of one-byte names: `p("a/b")`.
#[derive(Clone, PartialEq, Eq)]
struct P(Vec<u8>);

impl fmt::Debug for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s: Vec<String> = self.0.iter().map(|b| (*b as char).to_string()).collect();
        write!(f, "p({:?})", s.join("/"))
    }
}

/// Which path an operation names: a fixed one, an existing entry, or a name in an existing
/// directory (so generated operations hit live entries often). Resolved against the model
/// just before the operation runs; failure messages show the resolved paths.
#[derive(Clone)]
enum Pick {
    Path(P),
    /// The n-th existing entry (any depth), in path order.
    Live(prop::sample::Index),
    /// A name in the n-th existing directory (the root included).
    Under(prop::sample::Index, u8),
    /// The n-th existing directory (the root included).
    Dir(prop::sample::Index),
    /// The n-th existing file or symlink (any existing entry if there is none).
    File(prop::sample::Index),
    /// A name beside the operation's source (a rename or link within one directory).
    Sibling(u8),
}

impl Pick {
    /// The path of a resolved pick.
    fn path(&self) -> &[u8] {
        match self {
            Pick::Path(p) => &p.0,
            _ => panic!("unresolved path {self:?}"),
        }
    }
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pick::Path(p) => write!(f, "{p:?}"),
            Pick::Live(i) => write!(f, "live({})", i.index(1 << 16)),
            Pick::Under(i, n) => write!(f, "under({}, {:?})", i.index(1 << 16), *n as char),
            Pick::Dir(i) => write!(f, "dir({})", i.index(1 << 16)),
            Pick::File(i) => write!(f, "file({})", i.index(1 << 16)),
            Pick::Sibling(n) => write!(f, "sibling({:?})", *n as char),
        }
    }
}

/// A fixed path of one-byte names: `p("a/b")`.
fn p(s: &str) -> Pick {
    if s.is_empty() {
        return Pick::Path(P(Vec::new()));
    }
    Pick::Path(P(s
        .split('/')
        .map(|n| {
            assert_eq!(n.len(), 1, "names are one byte");
            n.as_bytes()[0]
        })
        .collect()))
}

/// A path's parent and last name.
fn split(path: &[u8]) -> (&[u8], u8) {
    let (name, parent) = path.split_last().expect("paths are never empty");
    (parent, *name)
}

#[derive(Clone, Copy)]
enum Target {
    Short(&'static str),
    /// `n` bytes of `x`.
    Long(usize),
}

impl Target {
    fn bytes(self) -> Vec<u8> {
        match self {
            Target::Short(s) => s.as_bytes().to_vec(),
            Target::Long(n) => vec![b'x'; n],
        }
    }
}

// ----- operations -----

/// What happens while a written, unflushed handle is held open.
#[derive(Clone)]
enum Then {
    Nothing,
    /// The held file's path is unlinked.
    Unlink,
    /// Another entry is renamed over the held file's path.
    RenameOver(Pick),
    /// The held file is truncated by path (no handle), which commits its pending writes.
    TruncatePath(Pos),
    /// A hard link to the held file is made at another path.
    Link(Pick),
    /// `fsck` and a full GC run while the handle holds uncommitted writes.
    Gc,
}

#[derive(Clone)]
enum Remount {
    /// Every handle released, nothing pending.
    Clean,
    /// One file written and released without flush or fsync just before.
    DirtyReleased { path: Pick, at: Pos, data: Content },
    /// One file written and left open; `commit_all` (what unmount does) then drop.
    CommitAllOpen { path: Pick, at: Pos, data: Content },
}

/// What a write does before `release`.
#[derive(Clone, Copy, Debug)]
enum Sync {
    Nothing,
    Flush,
    Fsync,
}

#[derive(Clone)]
enum Op {
    /// `create`, then the content in `write`s of `piece` bytes, then `release`.
    Create {
        path: Pick,
        content: Content,
        piece: usize,
    },
    /// `open`, a write at `at` (overwrite, extend or sparse) or appended, maybe `flush` or
    /// `fsync`, `release`.
    Write {
        path: Pick,
        at: Pos,
        data: Content,
        piece: usize,
        append: bool,
        sync: Sync,
    },
    /// `open`, `fallocate`, `release`.
    Fallocate {
        path: Pick,
        at: Pos,
        len: u64,
        mode: i32,
    },
    /// `readdir` of a directory's first page, `then`, and the rest of the listing.
    ListDuring {
        dir: Pick,
        limit: usize,
        then: Box<Op>,
    },
    /// `setattr` size, by path or through an open handle (then maybe a second `setattr` size
    /// and a write through the handle, then release). Sizes are relative to the size at open.
    Truncate {
        path: Pick,
        size: Pos,
        handle: bool,
        again: Option<Pos>,
        then_write: Option<(Pos, Content)>,
    },
    /// `open`, one `read`, `release`.
    Read {
        path: Pick,
        at: Pos,
        len: u32,
    },
    Mkdir(Pick),
    Unlink(Pick),
    Rmdir(Pick),
    Rename {
        src: Pick,
        dst: Pick,
        flags: u32,
    },
    Link {
        src: Pick,
        dst: Pick,
    },
    Symlink {
        path: Pick,
        target: Target,
    },
    /// `open`, a write, `then`, a read-back through the handle, `release`.
    Held {
        path: Pick,
        at: Pos,
        data: Content,
        then: Then,
    },
    /// `fsck`, a full GC and `fsck` again (every handle is released).
    Gc,
    /// The kernel forgets every lookup it holds.
    Forget,
    /// Drop the filesystem and the vault, reopen both on the same directory.
    Remount(Remount),
}

// Debug output is Rust that builds the value, so a failing case can be pasted into a test.

impl fmt::Debug for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pos::At(n) => write!(f, "Pos::At({n})"),
            Pos::End(d) => write!(f, "Pos::End({d})"),
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Short(s) => write!(f, "Target::Short({s:?})"),
            Target::Long(n) => write!(f, "Target::Long({n})"),
        }
    }
}

impl fmt::Debug for Then {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Then::Nothing => write!(f, "Then::Nothing"),
            Then::Unlink => write!(f, "Then::Unlink"),
            Then::RenameOver(src) => write!(f, "Then::RenameOver({src:?})"),
            Then::TruncatePath(size) => write!(f, "Then::TruncatePath({size:?})"),
            Then::Link(dst) => write!(f, "Then::Link({dst:?})"),
            Then::Gc => write!(f, "Then::Gc"),
        }
    }
}

impl fmt::Debug for Remount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Remount::Clean => write!(f, "Remount::Clean"),
            Remount::DirtyReleased { path, at, data } => {
                write!(f, "Remount::DirtyReleased {{ path: {path:?}, at: {at:?}, data: {data:?} }}")
            }
            Remount::CommitAllOpen { path, at, data } => {
                write!(f, "Remount::CommitAllOpen {{ path: {path:?}, at: {at:?}, data: {data:?} }}")
            }
        }
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create { path, content, piece } => {
                let piece =
                    if *piece == usize::MAX { "usize::MAX".into() } else { piece.to_string() };
                write!(f, "Op::Create {{ path: {path:?}, content: {content:?}, piece: {piece} }}")
            }
            Op::Write { path, at, data, piece, append, sync } => write!(
                f,
                "Op::Write {{ path: {path:?}, at: {at:?}, data: {data:?}, piece: {piece}, \
                 append: {append}, sync: Sync::{sync:?} }}"
            ),
            Op::Fallocate { path, at, len, mode } => write!(
                f,
                "Op::Fallocate {{ path: {path:?}, at: {at:?}, len: {len}, mode: {mode} }}"
            ),
            Op::ListDuring { dir, limit, then } => write!(
                f,
                "Op::ListDuring {{ dir: {dir:?}, limit: {limit}, then: Box::new({then:?}) }}"
            ),
            Op::Truncate { path, size, handle, again, then_write } => write!(
                f,
                "Op::Truncate {{ path: {path:?}, size: {size:?}, handle: {handle}, \
                 again: {again:?}, then_write: {then_write:?} }}"
            ),
            Op::Read { path, at, len } => {
                write!(f, "Op::Read {{ path: {path:?}, at: {at:?}, len: {len} }}")
            }
            Op::Mkdir(path) => write!(f, "Op::Mkdir({path:?})"),
            Op::Unlink(path) => write!(f, "Op::Unlink({path:?})"),
            Op::Rmdir(path) => write!(f, "Op::Rmdir({path:?})"),
            Op::Rename { src, dst, flags } => {
                write!(f, "Op::Rename {{ src: {src:?}, dst: {dst:?}, flags: {flags} }}")
            }
            Op::Link { src, dst } => write!(f, "Op::Link {{ src: {src:?}, dst: {dst:?} }}"),
            Op::Symlink { path, target } => {
                write!(f, "Op::Symlink {{ path: {path:?}, target: {target:?} }}")
            }
            Op::Held { path, at, data, then } => write!(
                f,
                "Op::Held {{ path: {path:?}, at: {at:?}, data: {data:?}, then: {then:?} }}"
            ),
            Op::Gc => write!(f, "Op::Gc"),
            Op::Forget => write!(f, "Op::Forget"),
            Op::Remount(kind) => write!(f, "Op::Remount({kind:?})"),
        }
    }
}

// ----- the model -----

enum Obj {
    Dir { next_pos: u64 },
    File(Vec<u8>),
    Symlink(Vec<u8>),
}

#[derive(Clone, Copy, Debug)]
struct Ent {
    id: u32,
    /// Position in the parent's listing.
    pos: u64,
}

struct Model {
    /// Every entry but the root, by path.
    tree: BTreeMap<Vec<u8>, Ent>,
    /// Live objects (with a name, or held open).
    objs: HashMap<u32, Obj>,
    next_id: u32,
    /// The file a `Held` operation keeps open.
    held: Option<u32>,
}

type Outcome = Result<(), i32>;

impl Model {
    fn new() -> Self {
        Model {
            tree: BTreeMap::new(),
            objs: HashMap::from([(ROOT_ID, Obj::Dir { next_pos: 1 })]),
            next_id: 1,
            held: None,
        }
    }

    fn id_at(&self, path: &[u8]) -> Option<u32> {
        if path.is_empty() { Some(ROOT_ID) } else { self.tree.get(path).map(|e| e.id) }
    }

    fn obj(&self, id: u32) -> &Obj {
        self.objs.get(&id).expect("live object")
    }

    fn is_dir(&self, id: u32) -> bool {
        matches!(self.obj(id), Obj::Dir { .. })
    }

    fn kind(&self, id: u32) -> NodeKind {
        match self.obj(id) {
            Obj::Dir { .. } => NodeKind::Dir,
            Obj::File(_) => NodeKind::File,
            Obj::Symlink(_) => NodeKind::Symlink,
        }
    }

    /// What the harness's chain of `lookup`s from the root finds.
    fn walk(&self, path: &[u8]) -> Result<u32, i32> {
        let mut id = ROOT_ID;
        for i in 0..path.len() {
            if !self.is_dir(id) {
                return Err(libc::ENOTDIR);
            }
            id = self.tree.get(&path[..=i]).ok_or(libc::ENOENT)?.id;
        }
        Ok(id)
    }

    fn links(&self, id: u32) -> u32 {
        self.tree.values().filter(|e| e.id == id).count() as u32
    }

    /// Names and ids of a directory's entries, in listing order.
    fn children(&self, dir: &[u8]) -> Vec<(u8, u32)> {
        let mut v: Vec<(u64, u8, u32)> = self
            .tree
            .iter()
            .filter(|(k, _)| k.len() == dir.len() + 1 && k.starts_with(dir))
            .map(|(k, e)| (e.pos, k[dir.len()], e.id))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, n, id)| (n, id)).collect()
    }

    fn has_children(&self, dir: &[u8]) -> bool {
        self.tree.keys().any(|k| k.len() > dir.len() && k.starts_with(dir))
    }

    fn content(&self, id: u32) -> &[u8] {
        match self.obj(id) {
            Obj::File(c) => c,
            _ => panic!("object {id} is not a file"),
        }
    }

    fn content_mut(&mut self, id: u32) -> &mut Vec<u8> {
        match self.objs.get_mut(&id) {
            Some(Obj::File(c)) => c,
            _ => panic!("object {id} is not a file"),
        }
    }

    fn alloc_pos(&mut self, dir: u32) -> u64 {
        match self.objs.get_mut(&dir) {
            Some(Obj::Dir { next_pos }) => {
                *next_pos += 1;
                *next_pos - 1
            }
            _ => panic!("object {dir} is not a directory"),
        }
    }

    /// An existing directory, the root counting half as much as the others.
    fn pick_dir(&self, i: prop::sample::Index) -> &[u8] {
        let mut dirs: Vec<&[u8]> = vec![&[]];
        for (k, e) in &self.tree {
            if self.is_dir(e.id) {
                dirs.extend(std::iter::repeat_n(k.as_slice(), 2));
            }
        }
        dirs[i.index(dirs.len())]
    }

    /// Resolves a pick to a fixed path.
    fn resolve(&self, pick: &Pick) -> Pick {
        self.resolve_other(pick, None)
    }

    /// Resolves a pick; a `Live` one avoids `other` when it can, a `Sibling` one is beside it.
    fn resolve_other(&self, pick: &Pick, other: Option<&Pick>) -> Pick {
        let other = other.map(Pick::path);
        // Entries below the root count more, so operations cross directories often.
        let weight = |k: &[u8]| if k.len() > 1 { 2 } else { 1 };
        match pick {
            Pick::Path(_) => pick.clone(),
            Pick::Live(i) | Pick::File(i) => {
                let files = matches!(pick, Pick::File(_));
                let candidates = |files: bool| -> Vec<&[u8]> {
                    self.tree
                        .iter()
                        .filter(|(k, e)| {
                            other != Some(k.as_slice()) && !(files && self.is_dir(e.id))
                        })
                        .flat_map(|(k, _)| std::iter::repeat_n(k.as_slice(), weight(k)))
                        .collect()
                };
                let mut live = candidates(files);
                if live.is_empty() {
                    live = candidates(false);
                }
                if live.is_empty() {
                    Pick::Path(P(vec![NAMES[0]]))
                } else {
                    Pick::Path(P(i.get(&live).to_vec()))
                }
            }
            Pick::Under(i, name) => Pick::Path(P([self.pick_dir(*i), &[*name][..]].concat())),
            Pick::Dir(i) => Pick::Path(P(self.pick_dir(*i).to_vec())),
            Pick::Sibling(name) => {
                let parent = other.map_or(&[][..], |src| split(src).0);
                Pick::Path(P([parent, &[*name][..]].concat()))
            }
        }
    }

    /// The operation with every pick resolved to a fixed path.
    fn concrete(&self, op: &Op) -> Op {
        let r = |pick: &Pick| self.resolve(pick);
        match op.clone() {
            Op::Create { path, content, piece } => Op::Create { path: r(&path), content, piece },
            Op::Write { path, at, data, piece, append, sync } => {
                Op::Write { path: r(&path), at, data, piece, append, sync }
            }
            Op::Fallocate { path, at, len, mode } => {
                Op::Fallocate { path: r(&path), at, len, mode }
            }
            Op::ListDuring { dir, limit, then } => {
                Op::ListDuring { dir: r(&dir), limit, then: Box::new(self.concrete(&then)) }
            }
            Op::Truncate { path, size, handle, again, then_write } => {
                Op::Truncate { path: r(&path), size, handle, again, then_write }
            }
            Op::Read { path, at, len } => Op::Read { path: r(&path), at, len },
            Op::Mkdir(path) => Op::Mkdir(r(&path)),
            Op::Unlink(path) => Op::Unlink(r(&path)),
            Op::Rmdir(path) => Op::Rmdir(r(&path)),
            Op::Rename { src, dst, flags } => {
                let src = r(&src);
                Op::Rename { dst: self.resolve_other(&dst, Some(&src)), src, flags }
            }
            Op::Link { src, dst } => {
                let src = r(&src);
                Op::Link { dst: self.resolve_other(&dst, Some(&src)), src }
            }
            Op::Symlink { path, target } => Op::Symlink { path: r(&path), target },
            Op::Held { path, at, data, then } => {
                let path = r(&path);
                let then = match then {
                    Then::RenameOver(src) => {
                        Then::RenameOver(self.resolve_other(&src, Some(&path)))
                    }
                    Then::Link(dst) => Then::Link(self.resolve_other(&dst, Some(&path))),
                    other => other,
                };
                Op::Held { path, at, data, then }
            }
            Op::Gc => Op::Gc,
            Op::Forget => Op::Forget,
            Op::Remount(kind) => Op::Remount(match kind {
                Remount::Clean => Remount::Clean,
                Remount::DirtyReleased { path, at, data } => {
                    Remount::DirtyReleased { path: r(&path), at, data }
                }
                Remount::CommitAllOpen { path, at, data } => {
                    Remount::CommitAllOpen { path: r(&path), at, data }
                }
            }),
        }
    }

    // predictions, in the order `VaultFs` and the store check

    fn predict_make(&self, path: &[u8]) -> Outcome {
        let parent = self.walk(split(path).0)?;
        if !self.is_dir(parent) {
            return Err(libc::ENOTDIR);
        }
        if self.tree.contains_key(path) {
            return Err(libc::EEXIST);
        }
        Ok(())
    }

    fn predict_symlink(&self, path: &[u8], target: &[u8]) -> Outcome {
        self.walk(split(path).0)?;
        if target.len() > SYMLINK_MAX {
            return Err(libc::ENAMETOOLONG);
        }
        if target.is_empty() {
            return Err(libc::ENOENT);
        }
        self.predict_make(path)
    }

    /// `open` of a path; the file's id.
    fn predict_open(&self, path: &[u8]) -> Result<u32, i32> {
        let id = self.walk(path)?;
        match self.obj(id) {
            Obj::File(_) => Ok(id),
            Obj::Dir { .. } => Err(libc::EISDIR),
            Obj::Symlink(_) => Err(libc::ENXIO),
        }
    }

    /// `setattr` size of a path, without a handle.
    fn predict_resize(&self, path: &[u8]) -> Result<u32, i32> {
        let id = self.walk(path)?;
        match self.obj(id) {
            Obj::File(_) => Ok(id),
            Obj::Dir { .. } => Err(libc::EISDIR),
            Obj::Symlink(_) => Err(libc::EINVAL),
        }
    }

    fn predict_remove(&self, path: &[u8], dir: bool) -> Outcome {
        let parent = self.walk(split(path).0)?;
        if !self.is_dir(parent) {
            return Err(libc::ENOTDIR);
        }
        let id = self.tree.get(path).ok_or(libc::ENOENT)?.id;
        match (dir, self.is_dir(id)) {
            (false, true) => Err(libc::EISDIR),
            (true, false) => Err(libc::ENOTDIR),
            (true, true) if self.has_children(path) => Err(libc::ENOTEMPTY),
            _ => Ok(()),
        }
    }

    fn predict_link(&self, src: &[u8], dst: &[u8]) -> Outcome {
        let id = self.walk(src)?;
        let parent = self.walk(split(dst).0)?;
        if self.is_dir(id) {
            return Err(libc::EPERM);
        }
        if !self.is_dir(parent) {
            return Err(libc::ENOTDIR);
        }
        if self.tree.contains_key(dst) {
            return Err(libc::EEXIST);
        }
        Ok(())
    }

    fn predict_rename(&self, src: &[u8], dst: &[u8], flags: u32) -> Outcome {
        let (sp, dp) = (split(src).0, split(dst).0);
        let sp_id = self.walk(sp)?;
        let dp_id = self.walk(dp)?;
        if ![0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE].contains(&flags) {
            return Err(libc::EINVAL);
        }
        if !self.is_dir(sp_id) || !self.is_dir(dp_id) {
            return Err(libc::ENOTDIR);
        }
        let s = self.tree.get(src).ok_or(libc::ENOENT)?.id;
        let s_dir = self.is_dir(s);
        // With one-byte names a path prefix is a byte prefix; a directory has one path.
        if s_dir && dp.starts_with(src) {
            return Err(libc::EINVAL);
        }
        let d = self.tree.get(dst).map(|e| e.id);
        if flags == libc::RENAME_EXCHANGE {
            let d = d.ok_or(libc::ENOENT)?;
            if d == s {
                return Ok(());
            }
            if self.is_dir(d) && sp.starts_with(dst) {
                return Err(libc::EINVAL);
            }
            return Ok(());
        }
        let Some(d) = d else { return Ok(()) };
        if flags == libc::RENAME_NOREPLACE {
            return Err(libc::EEXIST);
        }
        if d == s {
            return Ok(());
        }
        match (s_dir, self.is_dir(d)) {
            (true, false) => Err(libc::ENOTDIR),
            (false, true) => Err(libc::EISDIR),
            (true, true) if self.has_children(dst) => Err(libc::ENOTEMPTY),
            _ => Ok(()),
        }
    }

    // mutations, applied once the filesystem agreed

    fn add(&mut self, path: &[u8], obj: Obj) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.objs.insert(id, obj);
        self.add_link(path, id);
        id
    }

    fn add_link(&mut self, path: &[u8], id: u32) {
        let parent = self.id_at(split(path).0).expect("parent exists");
        let pos = self.alloc_pos(parent);
        self.tree.insert(path.to_vec(), Ent { id, pos });
    }

    /// Drops the object if nothing names or holds it; returns its id if so.
    fn maybe_dead(&mut self, id: u32) -> Option<u32> {
        if self.links(id) == 0 && self.held != Some(id) {
            self.objs.remove(&id);
            Some(id)
        } else {
            None
        }
    }

    fn remove(&mut self, path: &[u8]) -> Option<u32> {
        let e = self.tree.remove(path).expect("entry exists");
        self.maybe_dead(e.id)
    }

    /// Removes and returns the entries strictly below `path`, keyed by the rest of the path.
    fn take_below(&mut self, path: &[u8]) -> Vec<(Vec<u8>, Ent)> {
        let keys: Vec<Vec<u8>> = self
            .tree
            .keys()
            .filter(|k| k.len() > path.len() && k.starts_with(path))
            .cloned()
            .collect();
        keys.into_iter()
            .map(|k| {
                let e = self.tree.remove(&k).expect("listed");
                (k[path.len()..].to_vec(), e)
            })
            .collect()
    }

    fn put_below(&mut self, path: &[u8], entries: Vec<(Vec<u8>, Ent)>) {
        for (rest, e) in entries {
            self.tree.insert([path, &rest].concat(), e);
        }
    }

    /// Applies a rename the model predicted to succeed; returns the replaced object if it died.
    fn rename(&mut self, src: &[u8], dst: &[u8], exchange: bool) -> Option<u32> {
        let s = self.tree[src];
        if exchange {
            let d = self.tree[dst];
            if d.id == s.id {
                return None;
            }
            let below_s = self.take_below(src);
            let below_d = self.take_below(dst);
            self.tree.insert(src.to_vec(), Ent { id: d.id, pos: s.pos });
            self.tree.insert(dst.to_vec(), Ent { id: s.id, pos: d.pos });
            self.put_below(dst, below_s);
            self.put_below(src, below_d);
            return None;
        }
        let mut dead = None;
        let pos = if let Some(d) = self.tree.get(dst).copied() {
            if d.id == s.id {
                return None;
            }
            self.tree.remove(dst);
            dead = self.maybe_dead(d.id);
            d.pos
        } else if split(src).0 == split(dst).0 {
            s.pos
        } else {
            let parent = self.id_at(split(dst).0).expect("parent exists");
            self.alloc_pos(parent)
        };
        let below = self.take_below(src);
        self.tree.remove(src);
        self.tree.insert(dst.to_vec(), Ent { id: s.id, pos });
        self.put_below(dst, below);
        dead
    }

    fn write(&mut self, id: u32, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let c = self.content_mut(id);
        let start = usize::try_from(offset).expect("offset fits");
        let end = start + data.len();
        if c.len() < end {
            c.resize(end, 0);
        }
        c[start..end].copy_from_slice(data);
    }

    fn truncate(&mut self, id: u32, size: u64) {
        self.content_mut(id).resize(usize::try_from(size).expect("size fits"), 0);
    }
}

// ----- the harness -----

fn errname(e: i32) -> String {
    let name = match e {
        libc::ENOENT => "ENOENT",
        libc::EEXIST => "EEXIST",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::EISDIR => "EISDIR",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::EPERM => "EPERM",
        libc::ENXIO => "ENXIO",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::EBADF => "EBADF",
        libc::EBUSY => "EBUSY",
        libc::EIO => "EIO",
        _ => return format!("errno {e}"),
    };
    name.to_owned()
}

fn show(r: Outcome) -> String {
    match r {
        Ok(()) => "Ok".to_owned(),
        Err(e) => errname(e),
    }
}

/// Where two byte strings first differ, for failure messages.
fn diff(got: &[u8], want: &[u8]) -> String {
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    format!("got {} bytes, want {} bytes, first difference at offset {at}", got.len(), want.len())
}

fn open_fs(dir: &Path) -> VaultFs {
    let vault = Arc::new(Vault::open(dir, PLAYER, &Options::default()).expect("open the vault"));
    assert!(!vault.recovered(), "the vault was not closed cleanly");
    let fs = VaultFs::new(vault, MountInfo::unmounted(PLAYER, dir)).expect("VaultFs::new");
    // Room on the disk, as a mount finds at start: fsyncs may use the intent log.
    fs.check_space();
    fs
}

/// Drops a filesystem and closes its vault cleanly.
fn close_fs(fs: VaultFs) {
    let vault = fs.vault().clone();
    drop(fs);
    let vault = Arc::try_unwrap(vault).expect("the filesystem held the only other reference");
    vault.close().expect("close the vault");
}

fn problems(report: &FsckReport) -> Vec<String> {
    report.problems.iter().map(ToString::to_string).collect()
}

/// `fsck`, a full GC, `fsck` again: all clean. (`fsck` first reclaims the chunks of payloads
/// this process staged and abandoned, such as a write buffer's streamed base.)
fn check_store(fs: &VaultFs, at: &str) {
    let vault = fs.vault();
    let report = vault.fsck(FsckOptions::default(), &mut |_| {}).expect("fsck");
    assert!(report.is_clean(), "{at}: fsck: {:#?}", problems(&report));
    vault.gc(None, &mut |_| {}).expect("gc");
    let report = vault.fsck(FsckOptions::default(), &mut |_| {}).expect("fsck");
    assert!(report.is_clean(), "{at}: fsck after GC: {:#?}", problems(&report));
}

fn errno(e: &indras_fuse::FsError) -> i32 {
    e.errno
}

struct Harness {
    dir: tempfile::TempDir,
    fs: Option<VaultFs>,
    model: Model,
    /// Model id -> inode, learned when the object is created.
    inos: HashMap<u32, u64>,
    /// Every inode ever handed out (inode numbers are never reused).
    seen: HashSet<u64>,
    /// The lookups "the kernel" holds, per inode.
    lookups: HashMap<u64, u64>,
    /// Inodes of objects that lost their last name: present while a lookup holds them.
    dead: Vec<u64>,
    step: usize,
    /// Where we are, for failure messages.
    at: String,
}

impl Harness {
    fn new() -> Self {
        let dir = scratch();
        let fs = open_fs(dir.path());
        Harness {
            dir,
            fs: Some(fs),
            model: Model::new(),
            inos: HashMap::from([(ROOT_ID, inode::VAULT)]),
            seen: HashSet::new(),
            lookups: HashMap::new(),
            dead: Vec::new(),
            step: 0,
            at: "setup".into(),
        }
    }

    fn fs(&self) -> &VaultFs {
        self.fs.as_ref().expect("mounted")
    }

    fn expect<T>(&self, what: &str, got: &Result<T, i32>, want: Outcome) {
        let got = got.as_ref().map(|_| ()).map_err(|e| *e);
        assert!(got == want, "{}: {what}: got {}, model says {}", self.at, show(got), show(want));
    }

    fn remember(&mut self, ino: u64) {
        *self.lookups.entry(ino).or_default() += 1;
    }

    fn fresh(&mut self, ino: u64) {
        assert!(ino >= NodeId::FIRST_DYNAMIC, "{}: new inode {ino} is reserved", self.at);
        assert!(self.seen.insert(ino), "{}: inode {ino} handed out twice", self.at);
    }

    fn kill(&mut self, id: Option<u32>) {
        if let Some(id) = id {
            self.dead.push(self.inos[&id]);
        }
    }

    fn lookup(&mut self, parent: u64, name: u8) -> Result<Attr, i32> {
        let r = self.fs().lookup(parent, &[name]).map_err(|e| errno(&e));
        if let Ok(a) = &r {
            self.remember(a.ino);
        }
        r
    }

    /// Resolves a path with one `lookup` per name, as the kernel would.
    fn walk(&mut self, path: &[u8]) -> Result<u64, i32> {
        let mut ino = inode::VAULT;
        for &name in path {
            ino = self.lookup(ino, name)?.ino;
        }
        Ok(ino)
    }

    fn open(&mut self, path: &[u8], flags: i32) -> Result<(u64, u64), i32> {
        let ino = self.walk(path)?;
        let opened = self.fs().open(CTX, ino, flags).map_err(|e| errno(&e))?;
        Ok((ino, opened.fh))
    }

    /// Writes `data` at `offset` in pieces of at most `piece` bytes, front to back (nothing:
    /// one zero-length write).
    fn write_all(&self, fh: u64, offset: u64, data: &[u8], piece: usize) {
        if data.is_empty() {
            let n = self
                .fs()
                .write(fh, offset, data)
                .unwrap_or_else(|e| panic!("{}: zero-length write at {offset}: {e}", self.at));
            assert_eq!(n, 0, "{}: zero-length write", self.at);
        }
        for (i, part) in data.chunks(piece.max(1)).enumerate() {
            let at = offset + (i * piece.max(1)) as u64;
            let n = self.fs().write(fh, at, part).unwrap_or_else(|e| {
                panic!("{}: write of {} bytes at {at}: {e}", self.at, part.len())
            });
            assert_eq!(n as usize, part.len(), "{}: short write", self.at);
        }
    }

    /// Reads a whole file through a handle.
    fn read_handle(&self, ino: u64, fh: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let piece = self
                .fs()
                .read(ino, fh, out.len() as u64, READ_PIECE)
                .unwrap_or_else(|e| panic!("{}: read of {ino} at {}: {e}", self.at, out.len()));
            if piece.is_empty() {
                return out;
            }
            assert!(piece.len() <= READ_PIECE as usize, "{}: read returned too much", self.at);
            out.extend_from_slice(&piece);
        }
    }

    /// Reads a whole file through `open`, `read` and `release`.
    fn read_file(&self, ino: u64) -> Vec<u8> {
        let fh = self
            .fs()
            .open(CTX, ino, libc::O_RDONLY)
            .unwrap_or_else(|e| panic!("{}: open {ino}: {e}", self.at))
            .fh;
        let data = self.read_handle(ino, fh);
        self.fs().release(fh).unwrap_or_else(|e| panic!("{}: release {ino}: {e}", self.at));
        data
    }

    fn check_size(&self, ino: u64, id: u32, what: &str) {
        let attr = self.fs().getattr(ino).unwrap_or_else(|e| panic!("{}: getattr: {e}", self.at));
        let want = self.model.content(id).len() as u64;
        assert_eq!(attr.size, want, "{}: {what}: size", self.at);
    }

    fn release(&self, fh: u64) {
        self.fs().release(fh).unwrap_or_else(|e| panic!("{}: release: {e}", self.at));
    }

    // ----- operations -----

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Create { path, content, piece } => self.create(path.path(), *content, *piece),
            Op::Write { path, at, data, piece, append, sync } => {
                self.write(path.path(), *at, *data, *piece, *append, *sync);
            }
            Op::Fallocate { path, at, len, mode } => self.fallocate(path.path(), *at, *len, *mode),
            Op::ListDuring { dir, limit, then } => self.list_during(dir.path(), *limit, then),
            Op::Truncate { path, size, handle, again, then_write } => {
                let sizes: Vec<Pos> = std::iter::once(*size).chain(*again).collect();
                self.truncate(path.path(), &sizes, *handle, *then_write);
            }
            Op::Read { path, at, len } => self.read(path.path(), *at, *len),
            Op::Mkdir(path) => self.mkdir(path.path()),
            Op::Unlink(path) => self.remove(path.path(), false),
            Op::Rmdir(path) => self.remove(path.path(), true),
            Op::Rename { src, dst, flags } => self.rename(src.path(), dst.path(), *flags),
            Op::Link { src, dst } => self.link(src.path(), dst.path()),
            Op::Symlink { path, target } => self.symlink(path.path(), &target.bytes()),
            Op::Held { path, at, data, then } => self.held(path.path(), *at, *data, then),
            Op::Gc => self.fsck("between operations"),
            Op::Forget => self.forget_all(),
            Op::Remount(kind) => self.remount(kind),
        }
    }

    fn create(&mut self, path: &[u8], content: Content, piece: usize) {
        let (parent, name) = split(path);
        let want = self.model.predict_make(path);
        let got = self.walk(parent).and_then(|pino| {
            self.fs()
                .create(CTX, pino, &[name], 0o644, libc::O_WRONLY | libc::O_CREAT)
                .map_err(|e| errno(&e))
        });
        self.expect("create", &got, want);
        let Ok((attr, opened)) = got else { return };
        self.remember(attr.ino);
        self.fresh(attr.ino);
        assert_eq!((attr.kind, attr.size, attr.nlink), (NodeKind::File, 0, 1), "{}", self.at);
        let data = content.bytes();
        self.write_all(opened.fh, 0, &data, piece);
        let size = self.fs().getattr(attr.ino).expect("getattr").size;
        assert_eq!(size, data.len() as u64, "{}: size before release", self.at);
        self.release(opened.fh);
        let id = self.model.add(path, Obj::File(data));
        self.inos.insert(id, attr.ino);
    }

    /// A write at `at`, or (with `append`) through an `O_APPEND` handle, which writes at the
    /// end whatever offset it is given.
    fn write(
        &mut self,
        path: &[u8],
        at: Pos,
        data: Content,
        piece: usize,
        append: bool,
        sync: Sync,
    ) {
        let want = self.model.predict_open(path);
        let flags = if append { libc::O_WRONLY | libc::O_APPEND } else { libc::O_RDWR };
        let got = self.open(path, flags);
        self.expect("open for writing", &got, want.map(|_| ()));
        let (Ok((ino, fh)), Ok(id)) = (got, want) else { return };
        let len = self.model.content(id).len();
        let offset = at.resolve(len);
        let bytes = data.bytes();
        self.write_all(fh, offset, &bytes, piece);
        self.model.write(id, if append { len as u64 } else { offset }, &bytes);
        self.check_size(ino, id, "after write");
        match sync {
            Sync::Nothing => {}
            Sync::Flush => {
                self.fs().flush(fh).unwrap_or_else(|e| panic!("{}: flush: {e}", self.at));
                self.check_committed(ino, id, "after flush");
            }
            Sync::Fsync => {
                self.fs().fsync(fh, false).unwrap_or_else(|e| panic!("{}: fsync: {e}", self.at));
                let durable = self.fs().vault().is_durable();
                assert!(durable, "{}: fsync left commits not durable", self.at);
                // A fsync over durable content logs the writes (`tests/intent_log.rs`); the
                // release commits them.
                self.release(fh);
                self.check_committed(ino, id, "after fsync and release");
                return;
            }
        }
        self.release(fh);
    }

    /// The store's committed content of a file is the model's.
    fn check_committed(&self, ino: u64, id: u32, what: &str) {
        let vault = self.fs().vault();
        let node = vault.node(NodeId(ino)).expect("node");
        let want = self.model.content(id);
        assert_eq!(node.size, want.len() as u64, "{}: committed size {what}", self.at);
        let committed = node.content.map(|h| vault.read_all(&h).expect("read leaf"));
        let committed = committed.unwrap_or_default();
        assert!(committed == want, "{}: committed {what}: {}", self.at, diff(&committed, want));
    }

    fn fallocate(&mut self, path: &[u8], at: Pos, len: u64, mode: i32) {
        let want = self.model.predict_open(path);
        let got = self.open(path, libc::O_RDWR);
        self.expect("open for fallocate", &got, want.map(|_| ()));
        let (Ok((ino, fh)), Ok(id)) = (got, want) else { return };
        let size = self.model.content(id).len();
        let offset = at.resolve(size);
        let end = offset + len;
        let want = if len == 0 {
            Err(libc::EINVAL)
        } else if [
            0,
            libc::FALLOC_FL_KEEP_SIZE,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        ]
        .contains(&mode)
        {
            Ok(())
        } else {
            Err(libc::EOPNOTSUPP)
        };
        let got = self.fs().fallocate(fh, offset, len, mode).map_err(|e| errno(&e));
        self.expect("fallocate", &got, want);
        if got.is_ok() {
            if mode == 0 && end > size as u64 {
                self.model.truncate(id, end);
            } else if mode == libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE {
                let c = self.model.content_mut(id);
                let (start, end) =
                    (offset.min(size as u64) as usize, end.min(size as u64) as usize);
                c[start..end].fill(0);
            }
        }
        self.check_size(ino, id, "after fallocate");
        self.release(fh);
    }

    /// Lists a directory across a change: entries the change leaves alone are listed exactly
    /// once; the rest of the listing shows only entries that exist after the change.
    fn list_during(&mut self, dir: &[u8], limit: usize, then: &Op) {
        let id = self.model.walk(dir).expect("picked an existing directory");
        let ino = self.walk(dir).unwrap_or_else(|e| panic!("{}: walk: {}", self.at, errname(e)));
        let before: HashMap<u8, u32> = self.model.children(dir).into_iter().collect();
        let fh = self.fs().opendir(ino).unwrap_or_else(|e| panic!("{}: opendir: {e}", self.at)).fh;
        let first = self
            .fs()
            .readdir(ino, 0, limit)
            .unwrap_or_else(|e| panic!("{}: readdir: {e}", self.at));
        let mut cookie = first.last().map_or(0, |i| i.offset);
        let mut listed: Vec<u8> = Vec::new();
        for item in &first[2..] {
            assert!(before.contains_key(&item.name[0]), "{}: listed a missing entry", self.at);
            listed.push(item.name[0]);
        }
        self.apply(then);
        // Where the directory is now, if it still is.
        let now = self.model.tree.iter().find(|(_, e)| e.id == id).map(|(k, _)| k.clone());
        let now = if id == ROOT_ID { Some(Vec::new()) } else { now };
        let after: HashMap<u8, u32> =
            now.as_ref().map(|p| self.model.children(p).into_iter().collect()).unwrap_or_default();
        for _ in 0..1000 {
            let page = self
                .fs()
                .readdir(ino, cookie, limit)
                .unwrap_or_else(|e| panic!("{}: readdir after the change: {e}", self.at));
            let Some(last) = page.last() else { break };
            assert!(last.offset > cookie, "{}: readdir cookies must grow", self.at);
            cookie = last.offset;
            for item in &page {
                let name = item.name[0];
                assert_eq!(
                    after.get(&name).map(|i| self.inos[i]),
                    Some(item.ino),
                    "{}: listed {:?} after the change",
                    self.at,
                    name as char
                );
                listed.push(name);
            }
        }
        self.fs().releasedir(fh);
        let mut times: HashMap<u8, usize> = HashMap::new();
        for name in listed {
            *times.entry(name).or_default() += 1;
        }
        for (name, id) in &before {
            if after.get(name) == Some(id) {
                let n = times.get(name).copied().unwrap_or(0);
                assert_eq!(
                    n, 1,
                    "{}: unchanged entry {:?} listed {n} times",
                    self.at, *name as char
                );
            }
        }
    }

    /// `setattr` size: through one handle (each size in turn), or by path (the first size).
    fn truncate(
        &mut self,
        path: &[u8],
        sizes: &[Pos],
        handle: bool,
        then_write: Option<(Pos, Content)>,
    ) {
        let size = sizes[0];
        if handle {
            let want = self.model.predict_open(path);
            let got = self.open(path, libc::O_RDWR);
            self.expect("open for truncate", &got, want.map(|_| ()));
            let (Ok((ino, fh)), Ok(id)) = (got, want) else { return };
            // Every size is relative to the size at open, so a file can shrink and grow back.
            let original = self.model.content(id).len();
            for size in sizes {
                let n = size.resolve(original);
                let req = SetAttrReq { size: Some(n), fh: Some(fh), ..SetAttrReq::default() };
                let attr = self
                    .fs()
                    .setattr(CTX, ino, &req)
                    .unwrap_or_else(|e| panic!("{}: setattr size {n} with a handle: {e}", self.at));
                assert_eq!(attr.size, n, "{}: setattr's reply", self.at);
                self.model.truncate(id, n);
            }
            if let Some((at, data)) = then_write {
                let offset = at.resolve(self.model.content(id).len());
                let bytes = data.bytes();
                self.write_all(fh, offset, &bytes, 64 * 1024);
                self.model.write(id, offset, &bytes);
            }
            self.check_size(ino, id, "after truncate with a handle");
            self.release(fh);
        } else {
            let want = self.model.predict_resize(path);
            let n = want
                .map_or_else(|_| size.resolve(0), |id| size.resolve(self.model.content(id).len()));
            let got = self.walk(path).and_then(|ino| {
                let req = SetAttrReq { size: Some(n), ..SetAttrReq::default() };
                self.fs().setattr(CTX, ino, &req).map_err(|e| errno(&e))
            });
            self.expect("setattr size", &got, want.map(|_| ()));
            if let (Ok(attr), Ok(id)) = (got, want) {
                assert_eq!(attr.size, n, "{}: setattr's reply", self.at);
                self.model.truncate(id, n);
            }
        }
    }

    fn read(&mut self, path: &[u8], at: Pos, len: u32) {
        let want = self.model.predict_open(path);
        let got = self.open(path, libc::O_RDONLY);
        self.expect("open for reading", &got, want.map(|_| ()));
        let (Ok((ino, fh)), Ok(id)) = (got, want) else { return };
        let content = self.model.content(id);
        let offset = at.resolve(content.len());
        let data = self
            .fs()
            .read(ino, fh, offset, len)
            .unwrap_or_else(|e| panic!("{}: read: {e}", self.at));
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(content.len());
        let end = start.saturating_add(len as usize).min(content.len());
        let want = &content[start..end];
        assert!(data == want, "{}: read at {offset}: {}", self.at, diff(&data, want));
        self.release(fh);
    }

    fn mkdir(&mut self, path: &[u8]) {
        let (parent, name) = split(path);
        let want = self.model.predict_make(path);
        let got = self
            .walk(parent)
            .and_then(|pino| self.fs().mkdir(CTX, pino, &[name], 0o755).map_err(|e| errno(&e)));
        self.expect("mkdir", &got, want);
        let Ok(attr) = got else { return };
        self.remember(attr.ino);
        self.fresh(attr.ino);
        assert_eq!((attr.kind, attr.nlink), (NodeKind::Dir, 2), "{}", self.at);
        let id = self.model.add(path, Obj::Dir { next_pos: 1 });
        self.inos.insert(id, attr.ino);
    }

    fn remove(&mut self, path: &[u8], dir: bool) {
        let (parent, name) = split(path);
        let want = self.model.predict_remove(path, dir);
        let got = self.walk(parent).and_then(|pino| {
            let r =
                if dir { self.fs().rmdir(pino, &[name]) } else { self.fs().unlink(pino, &[name]) };
            r.map_err(|e| errno(&e))
        });
        self.expect(if dir { "rmdir" } else { "unlink" }, &got, want);
        if got.is_ok() {
            let dead = self.model.remove(path);
            self.kill(dead);
        }
    }

    fn real_rename(&mut self, src: &[u8], dst: &[u8], flags: u32) -> Outcome {
        let sp = self.walk(split(src).0)?;
        let dp = self.walk(split(dst).0)?;
        self.fs().rename(sp, &[split(src).1], dp, &[split(dst).1], flags).map_err(|e| errno(&e))
    }

    fn rename(&mut self, src: &[u8], dst: &[u8], flags: u32) {
        let want = self.model.predict_rename(src, dst, flags);
        let got = self.real_rename(src, dst, flags);
        self.expect("rename", &got, want);
        if got.is_ok() {
            let dead = self.model.rename(src, dst, flags == libc::RENAME_EXCHANGE);
            self.kill(dead);
        }
    }

    fn real_link(&mut self, src: &[u8], dst: &[u8]) -> Result<Attr, i32> {
        let ino = self.walk(src)?;
        let dp = self.walk(split(dst).0)?;
        self.fs().link(ino, dp, &[split(dst).1]).map_err(|e| errno(&e))
    }

    fn link(&mut self, src: &[u8], dst: &[u8]) {
        let want = self.model.predict_link(src, dst);
        let got = self.real_link(src, dst);
        self.expect("link", &got, want);
        let Ok(attr) = got else { return };
        self.remember(attr.ino);
        let id = self.model.id_at(src).expect("source exists");
        assert_eq!(attr.ino, self.inos[&id], "{}: link's reply names another inode", self.at);
        self.model.add_link(dst, id);
        assert_eq!(attr.nlink, self.model.links(id), "{}: link's reply nlink", self.at);
    }

    fn symlink(&mut self, path: &[u8], target: &[u8]) {
        let (parent, name) = split(path);
        let want = self.model.predict_symlink(path, target);
        let got = self
            .walk(parent)
            .and_then(|pino| self.fs().symlink(CTX, pino, &[name], target).map_err(|e| errno(&e)));
        self.expect("symlink", &got, want);
        let Ok(attr) = got else { return };
        self.remember(attr.ino);
        self.fresh(attr.ino);
        assert_eq!(attr.kind, NodeKind::Symlink, "{}", self.at);
        assert_eq!(attr.size, target.len() as u64, "{}: symlink size", self.at);
        let read = self.fs().readlink(attr.ino).expect("readlink");
        assert!(read == target, "{}: readlink after symlink", self.at);
        let id = self.model.add(path, Obj::Symlink(target.to_vec()));
        self.inos.insert(id, attr.ino);
    }

    fn held(&mut self, path: &[u8], at: Pos, data: Content, then: &Then) {
        let want = self.model.predict_open(path);
        let got = self.open(path, libc::O_RDWR);
        self.expect("open to hold", &got, want.map(|_| ()));
        let (Ok((ino, fh)), Ok(id)) = (got, want) else { return };
        self.model.held = Some(id);
        let offset = at.resolve(self.model.content(id).len());
        let bytes = data.bytes();
        self.write_all(fh, offset, &bytes, 128 * 1024);
        self.model.write(id, offset, &bytes);
        match then {
            Then::Nothing => {}
            Then::Unlink => self.remove(path, false),
            Then::RenameOver(src) => self.rename(src.path(), path, 0),
            Then::TruncatePath(size) => self.truncate(path, &[*size], false, None),
            Then::Link(dst) => self.link(path, dst.path()),
            Then::Gc => self.fsck("with a dirty handle open"),
        }
        // The held handle still sees everything written to the file, whatever its names.
        let got = self.read_handle(ino, fh);
        let want = self.model.content(id);
        assert!(got == want, "{}: read through the held handle: {}", self.at, diff(&got, want));
        let attr = self.fs().getattr(ino).expect("getattr of a held file");
        assert_eq!(attr.size, want.len() as u64, "{}: size of the held file", self.at);
        assert_eq!(attr.nlink, self.model.links(id), "{}: nlink of the held file", self.at);
        self.release(fh);
        self.model.held = None;
        let dead = self.model.maybe_dead(id);
        self.kill(dead);
    }

    fn forget_all(&mut self) {
        let mut all: Vec<(u64, u64)> = self.lookups.drain().collect();
        all.sort_unstable();
        // In two goes, so a count that drops but stays above zero is exercised too.
        for &(ino, n) in &all {
            if n > 1 {
                self.fs().forget(ino, n / 2);
            }
        }
        for &(ino, n) in &all {
            self.fs().forget(ino, if n > 1 { n - n / 2 } else { n });
        }
    }

    fn remount(&mut self, kind: &Remount) {
        match kind {
            Remount::Clean => {}
            Remount::DirtyReleased { path, at, data } => {
                self.write(path.path(), *at, *data, 128 * 1024, false, Sync::Nothing);
            }
            Remount::CommitAllOpen { path, at, data } => {
                let want = self.model.predict_open(path.path());
                let got = self.open(path.path(), libc::O_RDWR);
                self.expect("open before unmount", &got, want.map(|_| ()));
                if let (Ok((_, fh)), Ok(id)) = (got, want) {
                    let offset = at.resolve(self.model.content(id).len());
                    let bytes = data.bytes();
                    self.write_all(fh, offset, &bytes, 128 * 1024);
                    self.model.write(id, offset, &bytes);
                    self.fs()
                        .commit_all()
                        .unwrap_or_else(|e| panic!("{}: commit_all: {e}", self.at));
                    // The handle is never released: the filesystem goes away under it.
                }
            }
        }
        if !matches!(kind, Remount::CommitAllOpen { .. }) {
            assert_eq!(self.fs().open_files(), 0, "{}: open files before remount", self.at);
        }
        close_fs(self.fs.take().expect("mounted"));
        self.fs = Some(open_fs(self.dir.path()));
        self.lookups.clear();
    }

    // ----- checks -----

    /// Compares the whole filesystem with the model.
    fn verify(&mut self) {
        let open = self.fs().open_files();
        assert_eq!(
            open, 0,
            "{}: files still open or dirty after every handle was released",
            self.at
        );
        let root = self.fs().getattr(inode::VAULT).expect("getattr of the vault root");
        let subdirs =
            self.model.children(&[]).iter().filter(|(_, id)| self.model.is_dir(*id)).count();
        assert_eq!(root.nlink, 2 + subdirs as u32, "{}: nlink of the vault root", self.at);
        let mut read = HashSet::new();
        self.verify_dir(&[], inode::VAULT, inode::ROOT, &mut read);
        self.verify_dead();
    }

    /// Lists a directory with `readdir`, a few entries per call, resuming from each cookie.
    fn list(&self, ino: u64, limit: usize) -> Vec<indras_fuse::DirItem> {
        let fh = self.fs().opendir(ino).unwrap_or_else(|e| panic!("{}: opendir: {e}", self.at)).fh;
        let mut items = Vec::new();
        let mut cookie = 0;
        for _ in 0..1000 {
            let page = self
                .fs()
                .readdir(ino, cookie, limit)
                .unwrap_or_else(|e| panic!("{}: readdir: {e}", self.at));
            if page.is_empty() {
                break;
            }
            // "." and ".." come on top of `limit`.
            assert!(page.len() <= limit + 2, "{}: readdir returned more than asked", self.at);
            for item in page {
                assert!(item.offset > cookie, "{}: readdir cookies must grow", self.at);
                cookie = item.offset;
                items.push(item);
            }
        }
        self.fs().releasedir(fh);
        items
    }

    fn verify_dir(&mut self, path: &[u8], ino: u64, parent: u64, read: &mut HashSet<u32>) {
        let limit = [1, 2, 3, 5][(self.step + path.len()) % 4];
        let items = self.list(ino, limit);
        let at = format!("{}: listing {:?}", self.at, P(path.to_vec()));
        assert!(items.len() >= 2, "{at}: no . and ..");
        assert_eq!((items[0].name.as_slice(), items[0].ino), (&b"."[..], ino), "{at}");
        assert_eq!(
            (items[1].name.as_slice(), items[1].ino),
            (&b".."[..], parent),
            "{at}: \"..\" names the parent"
        );
        let want = self.model.children(path);
        let got_names: Vec<String> =
            items[2..].iter().map(|i| String::from_utf8_lossy(&i.name).into_owned()).collect();
        let want_names: Vec<String> = want.iter().map(|(n, _)| (*n as char).to_string()).collect();
        assert_eq!(got_names, want_names, "{at}: names in listing order");
        for (item, &(name, id)) in items[2..].iter().zip(&want) {
            let child_path = [path, &[name]].concat();
            let at = format!("{}: {:?}", self.at, P(child_path.clone()));
            let attr =
                self.lookup(ino, name).unwrap_or_else(|e| panic!("{at}: lookup: {}", errname(e)));
            assert_eq!(attr.ino, item.ino, "{at}: readdir and lookup disagree on the inode");
            assert_eq!(attr.ino, self.inos[&id], "{at}: inode identity");
            assert_eq!(attr.kind, item.kind, "{at}: readdir and lookup disagree on the kind");
            assert_eq!(attr.kind, self.model.kind(id), "{at}: kind");
            let got = self.fs().getattr(attr.ino).unwrap_or_else(|e| panic!("{at}: getattr: {e}"));
            assert_eq!(
                (got.ino, got.kind, got.size, got.nlink),
                (attr.ino, attr.kind, attr.size, attr.nlink),
                "{at}: getattr and lookup disagree"
            );
            match self.model.obj(id) {
                Obj::Dir { .. } => {
                    let subdirs = self
                        .model
                        .children(&child_path)
                        .iter()
                        .filter(|(_, c)| self.model.is_dir(*c))
                        .count();
                    assert_eq!(attr.nlink, 2 + subdirs as u32, "{at}: directory nlink");
                    self.verify_dir(&child_path, attr.ino, ino, read);
                }
                Obj::File(content) => {
                    assert_eq!(attr.size, content.len() as u64, "{at}: size");
                    assert_eq!(attr.blocks, attr.size.div_ceil(512), "{at}: blocks");
                    assert_eq!(attr.nlink, self.model.links(id), "{at}: nlink");
                    if read.insert(id) {
                        let data = self.read_file(attr.ino);
                        let want = self.model.content(id);
                        assert!(data == want, "{at}: content: {}", diff(&data, want));
                    }
                }
                Obj::Symlink(target) => {
                    assert_eq!(attr.size, target.len() as u64, "{at}: symlink size");
                    assert_eq!(attr.nlink, self.model.links(id), "{at}: nlink");
                    let got = self
                        .fs()
                        .readlink(attr.ino)
                        .unwrap_or_else(|e| panic!("{at}: readlink: {e}"));
                    assert!(&got == target, "{at}: readlink");
                }
            }
        }
        for name in NAMES {
            if !want.iter().any(|(n, _)| *n == name) {
                let r = self.fs().lookup(ino, &[name]).map(|a| a.ino).map_err(|e| errno(&e));
                assert_eq!(
                    r,
                    Err(libc::ENOENT),
                    "{}: lookup of absent {:?}",
                    self.at,
                    name as char
                );
            }
        }
    }

    /// Unlinked nodes stay while a lookup holds them, with no links, and go once none does
    /// (at the next reap batch, which the mount runs every 200 ms).
    fn verify_dead(&mut self) {
        self.fs().reap_queued().expect("reap queued nodes");
        for ino in std::mem::take(&mut self.dead) {
            let held = self.lookups.get(&ino).copied().unwrap_or(0) > 0;
            match (self.fs().getattr(ino), held) {
                (Ok(a), true) => {
                    assert_eq!(a.nlink, 0, "{}: unlinked inode {ino} has links", self.at);
                    self.dead.push(ino);
                }
                (Err(e), false) if e.errno == libc::ENOENT => {}
                (r, _) => panic!(
                    "{}: unlinked inode {ino} (held by a lookup: {held}): getattr gave {:?}",
                    self.at,
                    r.map(|a| a.nlink).map_err(|e| errname(e.errno))
                ),
            }
        }
    }

    fn fsck(&self, when: &str) {
        check_store(self.fs(), &format!("{}: {when}", self.at));
    }

    fn finish(mut self) {
        self.at = "at the end".into();
        self.forget_all();
        self.verify();
        // After GC every file must still read back whole.
        self.fsck("at the end");
        self.verify();
        self.remount(&Remount::Clean);
        self.verify();
        self.fsck("after a remount");
        close_fs(self.fs.take().expect("mounted"));
    }
}

/// Runs a sequence against a fresh vault. A failure's message ends with the operations as
/// they ran, with every path resolved, ready to pin as a `regression_*` test.
fn run(ops: &[Op]) {
    let mut ran: Vec<Op> = Vec::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut h = Harness::new();
        for (i, op) in ops.iter().enumerate() {
            let op = h.model.concrete(op);
            ran.push(op.clone());
            h.step = i;
            h.at = format!("step {i} {op:?}");
            h.apply(&op);
            h.verify();
        }
        h.finish();
    }));
    if let Err(e) = result {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        let ops: Vec<String> = ran.iter().map(|op| format!("        {op:?},")).collect();
        panic!("{msg}\n\nas run:\n    run(&[\n{}\n    ]);", ops.join("\n"));
    }
}

// ----- strategies -----

fn name() -> impl Strategy<Value = u8> {
    prop::sample::select(NAMES.to_vec())
}

fn fixed() -> impl Strategy<Value = Pick> {
    prop_oneof![
        name().prop_map(|a| Pick::Path(P(vec![a]))),
        (name(), name()).prop_map(|(a, b)| Pick::Path(P(vec![a, b]))),
    ]
}

fn live() -> impl Strategy<Value = Pick> {
    any::<prop::sample::Index>().prop_map(Pick::Live)
}

fn under() -> impl Strategy<Value = Pick> {
    (any::<prop::sample::Index>(), name()).prop_map(|(i, n)| Pick::Under(i, n))
}

/// A path that names an existing entry more often than not.
fn existing() -> impl Strategy<Value = Pick> {
    prop_oneof![1 => fixed(), 3 => live()]
}

/// A path that names an existing file more often than not.
fn file() -> impl Strategy<Value = Pick> {
    prop_oneof![
        1 => fixed(),
        1 => live(),
        4 => any::<prop::sample::Index>().prop_map(Pick::File),
    ]
}

/// A path to create: mostly in an existing directory.
fn new_path() -> impl Strategy<Value = Pick> {
    prop_oneof![1 => fixed(), 3 => under()]
}

/// A destination: new or existing.
fn target_path() -> impl Strategy<Value = Pick> {
    prop_oneof![1 => fixed(), 2 => live(), 2 => under(), 2 => sibling()]
}

fn sibling() -> impl Strategy<Value = Pick> {
    name().prop_map(Pick::Sibling)
}

/// A new name for a hard link.
fn link_path() -> impl Strategy<Value = Pick> {
    prop_oneof![3 => new_path(), 1 => sibling()]
}

fn around_inline() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![INLINE_MAX - 1, INLINE_MAX, INLINE_MAX + 1])
}

/// A whole file's size.
fn file_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(0usize),
        3 => 1usize..200,
        2 => around_inline(),
        2 => 100_000usize..400_000,
        1 => 520_000usize..700_000,
    ]
}

/// The length of one write (zero sometimes: it must change nothing).
fn write_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        3 => 1usize..100,
        2 => around_inline(),
        2 => 1000usize..70_000,
        1 => 100_000usize..300_000,
    ]
}

fn content(len: impl Strategy<Value = usize>) -> impl Strategy<Value = Content> {
    (0u8..4, len).prop_map(|(seed, len)| Content { seed, len })
}

fn pos() -> impl Strategy<Value = Pos> {
    prop_oneof![
        3 => Just(Pos::At(0)),
        2 => (1u64..300).prop_map(Pos::At),
        1 => around_inline().prop_map(|n| Pos::At(n as u64)),
        2 => (1000u64..700_000).prop_map(Pos::At),
        3 => (-3i64..=3).prop_map(Pos::End),
        1 => (-70_000i64..70_000).prop_map(Pos::End),
        1 => (MEM_SHADOW_MAX..MEM_SHADOW_MAX + 200_000).prop_map(Pos::At),
    ]
}

/// A size to truncate to: mostly shorter than the file.
fn cut() -> impl Strategy<Value = Pos> {
    prop_oneof![
        1 => Just(Pos::At(0)),
        2 => (-3i64..0).prop_map(Pos::End),
        2 => (-300_000i64..-3).prop_map(Pos::End),
        1 => (1u64..300).prop_map(Pos::At),
        1 => around_inline().prop_map(|n| Pos::At(n as u64)),
        1 => pos(),
    ]
}

/// A size or offset at or past the end, or anywhere.
fn grow() -> impl Strategy<Value = Pos> {
    prop_oneof![
        2 => Just(Pos::End(0)),
        2 => (1i64..100).prop_map(Pos::End),
        2 => (100i64..300_000).prop_map(Pos::End),
        1 => pos(),
    ]
}

fn piece() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1000usize, 4096, 65_536, 131_072, usize::MAX])
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "../b", "c/d/e", "/abs/path"]).prop_map(Target::Short),
        1 => Just(Target::Short("")),
        1 => prop::sample::select(vec![SYMLINK_MAX, SYMLINK_MAX + 1]).prop_map(Target::Long),
    ]
}

fn then() -> impl Strategy<Value = Then> {
    prop_oneof![
        Just(Then::Nothing),
        Just(Then::Unlink),
        Just(Then::Gc),
        existing().prop_map(Then::RenameOver),
        pos().prop_map(Then::TruncatePath),
        link_path().prop_map(Then::Link),
    ]
}

fn remount() -> impl Strategy<Value = Remount> {
    prop_oneof![
        Just(Remount::Clean),
        (file(), pos(), content(write_len())).prop_map(|(path, at, data)| Remount::DirtyReleased {
            path,
            at,
            data
        }),
        (file(), pos(), content(write_len())).prop_map(|(path, at, data)| Remount::CommitAllOpen {
            path,
            at,
            data
        }),
    ]
}

fn sync() -> impl Strategy<Value = Sync> {
    prop_oneof![3 => Just(Sync::Nothing), 1 => Just(Sync::Flush), 1 => Just(Sync::Fsync)]
}

fn dir() -> impl Strategy<Value = Pick> {
    any::<prop::sample::Index>().prop_map(Pick::Dir)
}

/// A change to the namespace, made in the middle of a listing.
fn change() -> impl Strategy<Value = Op> {
    prop_oneof![
        (new_path(), content(0usize..100)).prop_map(|(path, content)| Op::Create {
            path,
            content,
            piece: usize::MAX
        }),
        new_path().prop_map(Op::Mkdir),
        file().prop_map(Op::Unlink),
        existing().prop_map(Op::Rmdir),
        (existing(), target_path(), rename_flags()).prop_map(|(src, dst, flags)| Op::Rename {
            src,
            dst,
            flags
        }),
        (file(), link_path()).prop_map(|(src, dst)| Op::Link { src, dst }),
    ]
}

fn falloc_len() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 1u64..300_000, 1 => Just(0)]
}

fn falloc_mode() -> impl Strategy<Value = i32> {
    prop::sample::select(vec![
        0,
        libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        libc::FALLOC_FL_PUNCH_HOLE,
    ])
}

fn rename_flags() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => Just(0),
        2 => Just(libc::RENAME_NOREPLACE),
        3 => Just(libc::RENAME_EXCHANGE),
        1 => Just(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (new_path(), content(file_len()), piece())
            .prop_map(|(path, content, piece)| Op::Create { path, content, piece }),
        5 => (file(), pos(), content(write_len()), piece(), proptest::bool::weighted(0.2), sync())
            .prop_map(|(path, at, data, piece, append, sync)| {
                Op::Write { path, at, data, piece, append, sync }
            }),
        1 => (file(), pos(), falloc_len(), falloc_mode())
            .prop_map(|(path, at, len, mode)| Op::Fallocate { path, at, len, mode }),
        2 => (dir(), 1usize..4, change())
            .prop_map(|(dir, limit, then)| Op::ListDuring { dir, limit, then: Box::new(then) }),
        4 => (
            file(),
            cut(),
            any::<bool>(),
            proptest::option::weighted(0.7, grow()),
            proptest::option::of((grow(), content(write_len()))),
        )
            .prop_map(|(path, size, handle, again, then_write)| Op::Truncate {
                path,
                size,
                handle,
                again: again.filter(|_| handle),
                then_write: then_write.filter(|_| handle),
            }),
        2 => (file(), pos(), prop::sample::select(vec![1u32, 100, 4096, 131_072]))
            .prop_map(|(path, at, len)| Op::Read { path, at, len }),
        3 => new_path().prop_map(Op::Mkdir),
        2 => file().prop_map(Op::Unlink),
        2 => existing().prop_map(Op::Rmdir),
        7 => (existing(), target_path(), rename_flags())
            .prop_map(|(src, dst, flags)| Op::Rename { src, dst, flags }),
        3 => (existing(), existing())
            .prop_map(|(src, dst)| Op::Rename { src, dst, flags: libc::RENAME_EXCHANGE }),
        3 => (file(), link_path()).prop_map(|(src, dst)| Op::Link { src, dst }),
        1 => (new_path(), target()).prop_map(|(path, target)| Op::Symlink { path, target }),
        3 => (file(), pos(), content(write_len()), then())
            .prop_map(|(path, at, data, then)| Op::Held { path, at, data, then }),
        1 => Just(Op::Gc),
        1 => Just(Op::Forget),
        1 => remount().prop_map(Op::Remount),
    ]
}

/// A few directories and files to start from (so later operations cross directories), then
/// anything; at most 30 operations in all.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    let setup = prop_oneof![
        3 => under().prop_map(Op::Mkdir),
        2 => (under(), content(file_len()))
            .prop_map(|(path, content)| Op::Create { path, content, piece: usize::MAX }),
    ];
    (proptest::collection::vec(setup, 2..8), proptest::collection::vec(op(), 1..23))
        .prop_map(|(setup, ops)| [setup, ops].concat())
}

/// `cases` cases, or `PROPTEST_CASES` for a longer hunt; no regression files are written.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(48))]

    /// `VaultFs` behaves like the model under any sequence of operations.
    #[test]
    fn vaultfs_matches_the_model(ops in ops()) {
        run(&ops);
    }
}

// ----- two handles on one file -----

#[derive(Clone, Debug)]
enum SharedOp {
    /// A write through handle 0 or 1.
    Write {
        h: usize,
        at: Pos,
        data: Content,
    },
    /// `setattr` size through handle 0 or 1.
    Truncate {
        h: usize,
        size: Pos,
    },
    /// `flush` of handle 0 or 1: commits the writes of both.
    Flush {
        h: usize,
    },
    Fsync {
        h: usize,
    },
}

fn read_via(fs: &VaultFs, ino: u64, fh: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let piece = fs.read(ino, fh, out.len() as u64, READ_PIECE).expect("read");
        if piece.is_empty() {
            return out;
        }
        out.extend_from_slice(&piece);
    }
}

/// Two handles on one file see each other's writes before any flush; the store keeps the
/// old content until one of them is flushed, and a flush of either commits the writes of both.
fn run_shared(base: Content, ops: &[SharedOp]) {
    let dir = scratch();
    let fs = open_fs(dir.path());
    let (attr, opened) =
        fs.create(CTX, inode::VAULT, b"f", 0o644, libc::O_WRONLY | libc::O_CREAT).expect("create");
    let ino = attr.ino;
    let mut model = base.bytes();
    if !model.is_empty() {
        fs.write(opened.fh, 0, &model).expect("write");
    }
    fs.release(opened.fh).expect("release");
    assert!(committed(&fs, ino) == model);
    let mut stored = Some(model.clone());
    let fhs = [
        fs.open(CTX, ino, libc::O_RDWR).expect("open 0").fh,
        fs.open(CTX, ino, libc::O_RDWR).expect("open 1").fh,
    ];
    for (i, op) in ops.iter().enumerate() {
        match *op {
            SharedOp::Write { h, at, data } => {
                let offset = at.resolve(model.len());
                let bytes = data.bytes();
                assert_eq!(fs.write(fhs[h], offset, &bytes).expect("write") as usize, bytes.len());
                if !bytes.is_empty() {
                    let end = offset as usize + bytes.len();
                    if model.len() < end {
                        model.resize(end, 0);
                    }
                    model[offset as usize..end].copy_from_slice(&bytes);
                }
            }
            SharedOp::Truncate { h, size } => {
                let n = size.resolve(model.len());
                let req = SetAttrReq { size: Some(n), fh: Some(fhs[h]), ..SetAttrReq::default() };
                assert_eq!(fs.setattr(CTX, ino, &req).expect("setattr").size, n);
                model.resize(n as usize, 0);
            }
            SharedOp::Flush { h } => {
                fs.flush(fhs[h]).expect("flush");
                stored = Some(model.clone());
            }
            SharedOp::Fsync { h } => {
                // What a fsync made durable is either committed or in the intent log, whose
                // replay tests/intent_log.rs checks; the committed content is known again at
                // the next flush.
                fs.fsync(fhs[h], h % 2 == 0).expect("fsync");
                stored = None;
            }
        }
        for (h, &fh) in fhs.iter().enumerate() {
            let got = read_via(&fs, ino, fh);
            assert!(
                got == model,
                "step {i} {op:?}: read through handle {h}: {}",
                diff(&got, &model)
            );
        }
        assert_eq!(fs.getattr(ino).expect("getattr").size, model.len() as u64, "step {i}: size");
        if let Some(stored) = &stored {
            let got = committed(&fs, ino);
            assert!(got == *stored, "step {i} {op:?}: committed content: {}", diff(&got, stored));
        }
    }
    fs.flush(fhs[1]).expect("flush");
    let got = committed(&fs, ino);
    assert!(got == model, "after the last flush: {}", diff(&got, &model));
    fs.release(fhs[0]).expect("release");
    fs.release(fhs[1]).expect("release");
    assert_eq!(fs.open_files(), 0);
    check_store(&fs, "after both handles were released");
    assert!(committed(&fs, ino) == model, "content after GC");
    close_fs(fs);
}

fn shared_op() -> impl Strategy<Value = SharedOp> {
    prop_oneof![
        5 => (0usize..2, pos(), content(write_len()))
            .prop_map(|(h, at, data)| SharedOp::Write { h, at, data }),
        1 => (0usize..2, pos()).prop_map(|(h, size)| SharedOp::Truncate { h, size }),
        1 => (0usize..2).prop_map(|h| SharedOp::Flush { h }),
        1 => (0usize..2).prop_map(|h| SharedOp::Fsync { h }),
    ]
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn two_handles_share_uncommitted_writes(
        base in content(file_len()),
        ops in proptest::collection::vec(shared_op(), 1..10),
    ) {
        run_shared(base, &ops);
    }
}

#[test]
fn two_handles_see_each_others_writes_before_flush() {
    run_shared(
        c(1, 40_000),
        &[
            SharedOp::Write { h: 0, at: Pos::At(10), data: c(2, 100) },
            SharedOp::Write { h: 1, at: Pos::End(5), data: c(3, 300_000) },
            SharedOp::Flush { h: 1 },
            SharedOp::Write { h: 1, at: Pos::At(0), data: c(0, 7) },
            SharedOp::Truncate { h: 0, size: Pos::At(INLINE_MAX as u64) },
            SharedOp::Flush { h: 0 },
            SharedOp::Write { h: 0, at: Pos::End(0), data: c(2, 1) },
        ],
    );
}

// ----- pinned cases -----

#[test]
fn regression_smoke() {
    run(&[
        Op::Mkdir(p("a")),
        Op::Create { path: p("a/b"), content: c(1, 300_000), piece: 131_072 },
        Op::Link { src: p("a/b"), dst: p("c") },
        Op::Write {
            path: p("c"),
            at: Pos::End(10),
            data: c(2, 100),
            piece: 4096,
            append: false,
            sync: Sync::Fsync,
        },
        Op::Rename { src: p("a"), dst: p("b"), flags: 0 },
        Op::Rename { src: p("b"), dst: p("b/a"), flags: 0 },
        Op::Held { path: p("c"), at: Pos::At(0), data: c(3, 5), then: Then::Unlink },
        Op::Remount(Remount::DirtyReleased { path: p("b/b"), at: Pos::At(1), data: c(0, 3) }),
        Op::Forget,
    ]);
}

/// Listing order: a rename within a directory keeps the entry's place, a rename over an
/// entry takes the replaced entry's place, an exchange swaps the nodes and keeps both places,
/// a move to another directory goes to the end there.
#[test]
fn listing_order_survives_renames() {
    let file = |path| Op::Create { path, content: c(1, 10), piece: usize::MAX };
    run(&[
        Op::Mkdir(p("c")),
        file(p("c/a")),
        file(p("c/b")),
        Op::Rename { src: p("c/a"), dst: p("c/c"), flags: 0 },
        file(p("c/a")),
        Op::Rename { src: p("c/a"), dst: p("c/b"), flags: 0 },
        Op::Rename { src: p("c/c"), dst: p("c/b"), flags: libc::RENAME_EXCHANGE },
        file(p("a")),
        Op::Rename { src: p("c/b"), dst: p("b"), flags: 0 },
        Op::Rename { src: p("a"), dst: p("c/a"), flags: libc::RENAME_NOREPLACE },
    ]);
}

/// Found by this test, when each chunk was a file: `VaultFs` left a chunk file that no
/// metadata names after ordinary use, and `fsck` (so `indras-fuse fsck`, which exits non-zero)
/// reported it until the next GC. A buffer that streamed more than `INLINE_MAX` bytes into a
/// new file switches to overlay mode on a write that does not land at the end:
/// `WriteBuffer::to_overlay` finishes the stream into a staged, chunked leaf and keeps it as
/// the base; the commit re-streams the merged content into a new leaf and drops the staged
/// base, whose chunk stayed on disk. Fixed by `Vault::reclaim_abandoned`, which `fsck` runs
/// first.
#[test]
fn regression_overwrite_before_flush_leaves_a_stray_chunk_file() {
    let dir = scratch();
    let fs = open_fs(dir.path());
    let (attr, opened) =
        fs.create(CTX, inode::VAULT, b"f", 0o644, libc::O_WRONLY | libc::O_CREAT).expect("create");
    fs.write(opened.fh, 0, &gen_bytes(0, INLINE_MAX + 1)).expect("write");
    fs.write(opened.fh, 0, b"x").expect("write at 0");
    fs.release(opened.fh).expect("release");
    let mut want = gen_bytes(0, INLINE_MAX + 1);
    want[0] = b'x';
    assert!(committed(&fs, attr.ino) == want);
    let report = fs.vault().fsck(FsckOptions::default(), &mut |_| {}).expect("fsck");
    assert!(report.is_clean(), "fsck after ordinary writes: {:#?}", problems(&report));
    close_fs(fs);
}

/// Runs `f` on another thread and waits at most 10 s for it: a watchdog that turns an
/// infinite loop into a failure (the operations take microseconds).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} did not return within 10 s: it loops forever"))
}

/// Found by this test (fixed: zero-length writes now change nothing). A zero-length `write`
/// that did not land inside an already written range left an empty extent `[o, o)` in the
/// `WriteBuffer`, and every later read of the buffer spun forever in `WriteBuffer::read`: at
/// `pos == o` the empty extent is not "covering" (`e > pos` fails), and as the "next" extent
/// it gives `seg_end == pos`, so `pos` never advances. The commit at `flush`/`release` reads
/// the buffer too, so the file could not be closed either, and the thread spun holding the
/// file's lock. (The kernel does not send zero-length FUSE writes through the page cache;
/// direct callers of `VaultFs::write` could.)
#[test]
fn regression_zero_length_write_makes_reads_loop_forever() {
    let dir = scratch();
    let fs = Arc::new(open_fs(dir.path()));
    let (attr, opened) =
        fs.create(CTX, inode::VAULT, b"f", 0o644, libc::O_WRONLY | libc::O_CREAT).expect("create");
    fs.write(opened.fh, 0, &gen_bytes(1, 100)).expect("write");
    fs.release(opened.fh).expect("release");
    let (ino, fh) = (attr.ino, fs.open(CTX, attr.ino, libc::O_RDWR).expect("open").fh);
    assert_eq!(fs.write(fh, 10, &[]).expect("empty write"), 0);
    let f = fs.clone();
    let data = within("read after a zero-length write", move || f.read(ino, fh, 0, 200));
    assert!(data.expect("read") == gen_bytes(1, 100));
    let f = fs.clone();
    within("release after a zero-length write", move || f.release(fh)).expect("release");
    assert!(committed(&fs, ino) == gen_bytes(1, 100));
}

/// Found by this test (fixed): a zero-length `write` past the end of a file made the file that
/// long; POSIX says a zero-length write to a regular file has no other results. Same cause as
/// above: the empty range counted as written.
#[test]
fn regression_zero_length_write_past_the_end_extends_the_file() {
    let dir = scratch();
    let fs = Arc::new(open_fs(dir.path()));
    let (attr, opened) =
        fs.create(CTX, inode::VAULT, b"f", 0o644, libc::O_WRONLY | libc::O_CREAT).expect("create");
    fs.write(opened.fh, 0, b"abc").expect("write");
    assert_eq!(fs.write(opened.fh, 1000, &[]).expect("empty write"), 0);
    assert_eq!(fs.getattr(attr.ino).expect("getattr").size, 3, "size after an empty write at 1000");
    let (f, fh) = (fs.clone(), opened.fh);
    within("release", move || f.release(fh)).expect("release");
    assert!(committed(&fs, attr.ino) == b"abc");
}
