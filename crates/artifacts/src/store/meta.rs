//! The metadata database with a write-back layer in front of it.
//!
//! A filesystem request changes a handful of rows. Committing each change as its own redb
//! transaction costs far more than the change itself, so changes land in memory first:
//!
//! - Each operation runs against a [`W`] that reads through three layers of pending rows
//!   (its own `delta`, then `active`, then `frozen`) down to a read snapshot of the database,
//!   and writes only into its own `delta`. If the operation fails, its delta is dropped and
//!   nothing it did is seen by anyone: every operation is all or nothing, as a transaction
//!   was. If it succeeds, its delta is merged into `active` under the state lock, at once.
//! - [`Meta::flush`] freezes `active` and writes the frozen rows to redb in one transaction.
//!   Operations go on meanwhile (into a new `active`), reading through `frozen` until the
//!   transaction has committed and `frozen` is dropped.
//! - Readers take the state lock shared and look through the layers, then through a read
//!   snapshot of the database that every reader and operation shares (with its tables open)
//!   until the next commit. A commit drops `frozen` and the snapshot together, under the lock
//!   exclusively, so a reader sees either `frozen` or a snapshot that has it.
//!
//! After a crash the database holds the state of some earlier flush, whole: operations are
//! crash-consistent at the granularity of a flush. A durable flush (see `Vault::sync`) is what
//! makes them survive; the mount runs one every second and at every `fsync`.
//!
//! **A failed commit** (a full disk, an I/O error) leaves redb refusing every later
//! transaction ("previous I/O error") until the database is reopened, and a reopen rolls it
//! back to its last *durable* commit. So the rows of non-durable flushes are kept in memory
//! (`unsynced`) until a durable flush has them, and a flush whose commit failed reopens the
//! database at once (`recover`): the kept rows go back under `frozen`, so readers see no
//! change, and the next flush writes them again. Rows are whole values, so writing them twice
//! is harmless.
//!
//! # One path for every table
//! Every table of the store is declared in `tables!` and goes through the layers: nothing
//! writes to redb except a flush (and, when a store is opened, the migrations, on a direct
//! [`W`] before the layers exist). How durable a change is, is the *operation's* choice, not
//! the table's: an operation with `Commit::Durable` flushes durably before it returns (grants,
//! peers, `fsync`, unmount), any other lands at the next flush (every request of the mount, and
//! attention events, which the mount makes durable within a second). Reads never commit:
//! point reads ([`Meta::read`]) look through the layers under the state lock, and scans
//! ([`Meta::scan`]) copy the pending rows of the tables they name and then read with no lock
//! held. Only maintenance that commits anyway (GC, fsck, see `Vault::flushed_snapshot`)
//! flushes first and reads the database itself.
//!
//! Lock order: `flushing`, then `writer`, then `state`, then `db`, then redb's own locks.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, btree_map};
use std::iter::Peekable;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

use parking_lot::{MappedRwLockReadGuard, Mutex, RwLock, RwLockReadGuard};
use redb::{
    AccessGuard, Database, Key, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageError, Table, Value, WriteTransaction,
};

use crate::error::{Error, Result};
use crate::store::schema::{
    ATTENTION, ATTENTION_CHAINS, ATTENTION_OUTBOX, CHUNKS, ChunkValue, DEAD_CHUNKS, DELETED,
    DELETED_NAMES, ENTRIES, EVENTS, GRANTS, HISTORY_REFS, INLINE, INVITES, LEAF_SEGMENTS, LEAVES,
    LINEAGE, META, META_REDO_FLOOR, MIRROR, MIRROR_KIDS, MIRROR_NAMES, MIRROR_REMOTE, NODES, ORDER,
    ORPHANS, OrderRow, PEERS, REALM_ITEMS, REALM_LEFT, REALMS, SEGMENT_RUNS, SEGMENTS, SNAPSHOTS,
    TRANSFERS, TREES, UNREFERENCED, VERSION_NODES, VERSIONS, XATTRS,
};

/// The longest key kept inside an `OrdKey` itself: a hash, or a pair of ids.
const INLINE_KEY: usize = 32;

/// A key's stored bytes: up to `INLINE_KEY` bytes inline, so that the comparisons of a lookup
/// in a layer's B-tree read only the tree's own nodes. (With every key on the heap, a lookup
/// among the ~100,000 pending chunk rows chased a pointer per comparison: those lookups were
/// a third of a 4 KiB overwrite's commit.)
#[derive(Clone)]
enum KeyBytes {
    Inline(u8, [u8; INLINE_KEY]),
    Heap(Box<[u8]>),
}

impl KeyBytes {
    fn new(bytes: &[u8]) -> Self {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE_KEY => {
                let mut buf = [0; INLINE_KEY];
                buf[..bytes.len()].copy_from_slice(bytes);
                KeyBytes::Inline(len, buf)
            }
            _ => KeyBytes::Heap(bytes.into()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline(len, buf) => &buf[..usize::from(*len)],
            KeyBytes::Heap(bytes) => bytes,
        }
    }
}

/// A key in its stored encoding, ordered the way redb orders the table's keys.
pub(crate) struct OrdKey<K>(KeyBytes, PhantomData<fn() -> K>);

impl<K: Key> OrdKey<K> {
    fn of(key: &K::SelfType<'_>) -> Self {
        OrdKey(KeyBytes::new(K::as_bytes(key).as_ref()), PhantomData)
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl<K> Clone for OrdKey<K> {
    fn clone(&self) -> Self {
        OrdKey(self.0.clone(), PhantomData)
    }
}

impl<K: Key> Ord for OrdKey<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        K::compare(self.bytes(), other.bytes())
    }
}

impl<K: Key> PartialOrd for OrdKey<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Key> PartialEq for OrdKey<K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K: Key> Eq for OrdKey<K> {}

/// Pending rows of one table: `None` is a removal.
pub(crate) type Rows<K> = BTreeMap<OrdKey<K>, Option<Vec<u8>>>;

/// A row's key or value, from memory or from the database; `value()` decodes it.
pub(crate) enum Row<T: Value + 'static> {
    Mem(Vec<u8>),
    Db(AccessGuard<'static, T>),
}

impl<T: Value + 'static> Row<T> {
    pub(crate) fn value(&self) -> T::SelfType<'_> {
        match self {
            Row::Mem(bytes) => T::from_bytes(bytes),
            Row::Db(guard) => guard.value(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Row::Mem(bytes) => bytes.clone(),
            Row::Db(guard) => T::as_bytes(&guard.value()).as_ref().to_vec(),
        }
    }
}

fn copied<T: Value + 'static>(v: &T::SelfType<'_>) -> Row<T> {
    Row::Mem(T::as_bytes(v).as_ref().to_vec())
}

/// The rows a range yields, in key order.
pub(crate) type RowIter<'a, K, V> =
    Box<dyn Iterator<Item = std::result::Result<(Row<K>, Row<V>), StorageError>> + 'a>;

/// One table of a [`W`]: straight on a write transaction (opening the store), or layered.
pub(crate) enum View<'a, 't, K: Key + 'static, V: Value + 'static> {
    Direct(&'a mut Table<'t, K, V>),
    Layered {
        delta: &'a mut Rows<K>,
        bytes: &'a mut usize,
        under: [&'a Rows<K>; 2],
        base: &'a ReadOnlyTable<K, V>,
    },
}

impl<K: Key + 'static, V: Value + 'static> View<'_, '_, K, V> {
    pub(crate) fn get<'k>(
        &self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> std::result::Result<Option<Row<V>>, StorageError> {
        match self {
            View::Direct(t) => Ok(t.get(key)?.map(|g| copied::<V>(&g.value()))),
            View::Layered { delta, under, base, .. } => {
                let layers = [&**delta, under[0], under[1]];
                // No key to build when no layer holds rows of this table.
                if layers.iter().any(|l| !l.is_empty()) {
                    let k = OrdKey::<K>::of(key.borrow());
                    for layer in layers {
                        if let Some(v) = layer.get(&k) {
                            return Ok(v.as_ref().map(|b| Row::Mem(b.clone())));
                        }
                    }
                }
                Ok(base.get(key.borrow())?.map(Row::Db))
            }
        }
    }

    pub(crate) fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> std::result::Result<(), StorageError> {
        match self {
            View::Direct(t) => t.insert(key, value).map(drop),
            View::Layered { delta, bytes, .. } => {
                let k = OrdKey::<K>::of(key.borrow());
                let v = V::as_bytes(value.borrow()).as_ref().to_vec();
                **bytes += k.bytes().len() + v.len();
                delta.insert(k, Some(v));
                Ok(())
            }
        }
    }

    /// Removes a row; returns what it held.
    pub(crate) fn remove<'k>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> std::result::Result<Option<Row<V>>, StorageError> {
        match self {
            View::Direct(t) => Ok(t.remove(key)?.map(|g| copied::<V>(&g.value()))),
            View::Layered { .. } => {
                let old = self.get(key.borrow())?;
                if old.is_some()
                    && let View::Layered { delta, bytes, .. } = self
                {
                    let k = OrdKey::<K>::of(key.borrow());
                    **bytes += k.bytes().len();
                    delta.insert(k, None);
                }
                Ok(old)
            }
        }
    }

    pub(crate) fn range<'k, KR>(
        &self,
        range: impl RangeBounds<KR> + 'k,
    ) -> std::result::Result<RowIter<'_, K, V>, StorageError>
    where
        KR: Borrow<K::SelfType<'k>> + 'k,
    {
        match self {
            View::Direct(t) => Ok(Box::new(
                t.range(range)?
                    .map(|r| r.map(|(k, v)| (copied::<K>(&k.value()), copied::<V>(&v.value())))),
            )),
            View::Layered { delta, under, base, .. } => {
                let lo = bound(range.start_bound());
                let hi = bound(range.end_bound());
                let layers = if is_empty_range(&lo, &hi) {
                    [None, None, None]
                } else {
                    [&**delta, under[0], under[1]]
                        .map(|l| Some(l.range((lo.clone(), hi.clone())).peekable()))
                };
                let base = base.range(range)?.fuse();
                Ok(Box::new(Merge { layers, base, head: None, head_key: None }))
            }
        }
    }

    /// How many rows the table holds, pending ones included: the database's count, corrected
    /// by each pending key's top-most row (O(pending rows of this table)).
    pub(crate) fn len(&self) -> std::result::Result<u64, StorageError> {
        match self {
            View::Direct(t) => t.len(),
            View::Layered { delta, under, base, .. } => {
                let mut n = base.len()?;
                let mut seen = BTreeSet::new();
                for layer in [&**delta, under[0], under[1]] {
                    for (k, v) in layer {
                        if !seen.insert(k.bytes()) {
                            continue;
                        }
                        let stored = base.get(K::from_bytes(k.bytes()))?.is_some();
                        match (stored, v.is_some()) {
                            (false, true) => n += 1,
                            (true, false) => n = n.saturating_sub(1),
                            _ => {}
                        }
                    }
                }
                Ok(n)
            }
        }
    }

    #[expect(clippy::iter_not_returning_iterator, reason = "mirrors redb's `iter`")]
    pub(crate) fn iter(&self) -> std::result::Result<RowIter<'_, K, V>, StorageError> {
        self.range::<K::SelfType<'_>>(..)
    }
}

fn bound<'k, K: Key + 'static, KR: Borrow<K::SelfType<'k>>>(b: Bound<&KR>) -> Bound<OrdKey<K>> {
    match b {
        Bound::Included(k) => Bound::Included(OrdKey::of(k.borrow())),
        Bound::Excluded(k) => Bound::Excluded(OrdKey::of(k.borrow())),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Whether a range holds no key at all (`BTreeMap::range` panics on such a range; redb
/// yields nothing).
fn is_empty_range<K: Key>(lo: &Bound<OrdKey<K>>, hi: &Bound<OrdKey<K>>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    }
}

type LayerIter<'a, K> = Peekable<btree_map::Range<'a, OrdKey<K>, Option<Vec<u8>>>>;

/// The rows of the layers and the database in key order; a layer's row hides the rows of
/// the layers below it and of the database.
struct Merge<'a, K: Key + 'static, V: Value + 'static> {
    layers: [Option<LayerIter<'a, K>>; 3],
    base: std::iter::Fuse<redb::Range<'static, K, V>>,
    /// The database's next row.
    head: Option<(Row<K>, Row<V>)>,
    /// The bytes of `head`'s key, worked out only once a layer's row is compared with it (a
    /// range no layer has rows in, the common case, copies no key).
    head_key: Option<Vec<u8>>,
}

impl<K: Key + 'static, V: Value + 'static> Iterator for Merge<'_, K, V> {
    type Item = std::result::Result<(Row<K>, Row<V>), StorageError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.head.is_none() {
                self.head_key = None;
                match self.base.next() {
                    Some(Ok((k, v))) => self.head = Some((Row::Db(k), Row::Db(v))),
                    Some(Err(e)) => return Some(Err(e)),
                    None => {}
                }
            }
            // The smallest key among the layers' heads; the upper layer wins a tie.
            let mut best: Option<(usize, OrdKey<K>)> = None;
            for (i, layer) in self.layers.iter_mut().enumerate() {
                if let Some((k, _)) = layer.as_mut().and_then(Peekable::peek)
                    && best.as_ref().is_none_or(|(_, b)| *k < b)
                {
                    best = Some((i, (*k).clone()));
                }
            }
            let base_first = match (&self.head, &best) {
                (None, None) => return None,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((k, _)), Some((_, lk))) => {
                    let hk = self.head_key.get_or_insert_with(|| k.bytes());
                    K::compare(hk, lk.bytes()) == Ordering::Less
                }
            };
            if base_first {
                return self.head.take().map(Ok);
            }
            let (i, key) = best?;
            // Skip the hidden rows with the same key below.
            for layer in self.layers.iter_mut().skip(i + 1).flatten() {
                if layer.peek().is_some_and(|(k, _)| **k == key) {
                    layer.next();
                }
            }
            // (With a head, its key's bytes were worked out above.)
            if self.head_key.as_ref().is_some_and(|hk| K::compare(hk, key.bytes()).is_eq()) {
                self.head = None;
            }
            let (_, value) = self.layers[i].as_mut()?.next()?;
            if let Some(v) = value {
                return Some(Ok((Row::Mem(key.bytes().to_vec()), Row::Mem(v.clone()))));
            }
        }
    }
}

fn apply<K: Key + 'static, V: Value + 'static>(
    t: &mut Table<'_, K, V>,
    rows: &Rows<K>,
) -> std::result::Result<(), StorageError> {
    for (k, v) in rows {
        let key = K::from_bytes(k.bytes());
        match v {
            Some(v) => {
                t.insert(&key, V::from_bytes(v))?;
            }
            None => {
                t.remove(&key)?;
            }
        }
    }
    Ok(())
}

/// The next `n` bytes of `bytes`, which then starts after them.
fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if bytes.len() < n {
        return None;
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Some(head)
}

fn take_u32(bytes: &mut &[u8]) -> Option<usize> {
    let b = take(bytes, 4)?;
    usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()
}

/// A table's rows in a redo record: `name length u8 | name | count u32`, then per row
/// `key length u32 | key | 0 (removed) or 1 | value length u32 | value`.
fn encode_rows<K: Key>(name: &str, rows: &Rows<K>, out: &mut Vec<u8>) {
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&len(rows.len()));
    for (k, v) in rows {
        out.extend_from_slice(&len(k.bytes().len()));
        out.extend_from_slice(k.bytes());
        match v {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&len(v.len()));
                out.extend_from_slice(v);
            }
            None => out.push(0),
        }
    }
}

/// Reads the rows `encode_rows` wrote into `rows`; `None` if a key or value has a width its
/// type cannot have.
fn decode_rows<K: Key, V: Value>(bytes: &mut &[u8], rows: &mut Rows<K>) -> Option<()> {
    let fits = |width: Option<usize>, b: &[u8]| width.is_none_or(|w| w == b.len());
    for _ in 0..take_u32(bytes)? {
        let n = take_u32(bytes)?;
        let key = take(bytes, n)?;
        let value = match take(bytes, 1)?[0] {
            0 => None,
            1 => {
                let n = take_u32(bytes)?;
                Some(take(bytes, n)?.to_vec())
            }
            _ => return None,
        };
        if !fits(K::fixed_width(), key)
            || value.as_ref().is_some_and(|v| !fits(V::fixed_width(), v))
        {
            return None;
        }
        rows.insert(OrdKey(KeyBytes::new(key), PhantomData), value);
    }
    Some(())
}

/// Declares the layered tables: `Layer` (pending rows of each) and `W` (one operation's view
/// of them), each table of `W` opened on first use.
macro_rules! tables {
    ($($name:ident: $def:expr => $k:ty, $v:ty;)*) => {
        /// Pending rows of every layered table.
        #[derive(Clone, Default)]
        pub(crate) struct Layer {
            /// Bytes written into this layer (a flush trigger; overwrites count again).
            bytes: usize,
            $($name: Rows<$k>,)*
        }

        impl Layer {
            const EMPTY: Layer = Layer { bytes: 0, $($name: BTreeMap::new(),)* };

            fn is_empty(&self) -> bool {
                true $(&& self.$name.is_empty())*
            }

            /// The rows of the tables named in `names`: `top`'s over `under`'s.
            fn pick(under: Option<&Layer>, top: &Layer, names: &[&str]) -> Layer {
                let mut out = Layer::default();
                $(
                    if names.contains(&stringify!($name)) {
                        if let Some(under) = under {
                            out.$name.clone_from(&under.$name);
                        }
                        out.$name.extend(top.$name.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                )*
                out
            }

            /// Puts `top`'s rows over this layer's.
            fn absorb(&mut self, top: Layer) {
                self.bytes += top.bytes;
                $(self.$name.extend(top.$name);)*
            }

            /// The rows as a redo record's body: per table with rows, its name, its row count
            /// and its rows (`decode` reads it back).
            pub(crate) fn encode(&self, out: &mut Vec<u8>) {
                $(
                    if !self.$name.is_empty() {
                        encode_rows(stringify!($name), &self.$name, out);
                    }
                )*
            }

            /// The rows of a redo record's body; `None` if it is not one this store wrote:
            /// an unknown table, or a key or value of the wrong width.
            pub(crate) fn decode(mut bytes: &[u8]) -> Option<Layer> {
                let mut out = Layer::default();
                while !bytes.is_empty() {
                    let n = usize::from(take(&mut bytes, 1)?[0]);
                    let name = std::str::from_utf8(take(&mut bytes, n)?).ok()?;
                    let mut known = false;
                    $(
                        if name == stringify!($name) {
                            decode_rows::<$k, $v>(&mut bytes, &mut out.$name)?;
                            known = true;
                        }
                    )*
                    if !known {
                        return None;
                    }
                }
                Some(out)
            }

            /// Writes every row into `txn`.
            fn apply(&self, txn: &WriteTransaction) -> Result<()> {
                $(
                    if !self.$name.is_empty() {
                        apply(&mut txn.open_table($def)?, &self.$name)?;
                    }
                )*
                Ok(())
            }
        }

        /// A read snapshot of the database, its tables opened on first use: shared by every
        /// reader and operation until the next commit replaces it.
        pub(crate) struct Snapshot {
            txn: ReadTransaction,
            $($name: OnceLock<ReadOnlyTable<$k, $v>>,)*
        }

        impl Snapshot {
            fn new(txn: ReadTransaction) -> Self {
                Snapshot { txn, $($name: OnceLock::new(),)* }
            }
        }

        /// One operation's tables.
        pub(crate) struct W<'t> {
            src: Src<'t>,
            /// The vault's node id reservation (absent while the store is being opened).
            pub(crate) ids: Option<&'t std::sync::Mutex<crate::store::ids::NodeIds>>,
            /// A scan's tables: the only ones whose pending rows it copied.
            only: Option<&'static [&'static str]>,
            /// How this operation changed the content bytes of the leaves in
            /// `unreferenced_v1`: the vault counts them once the operation takes effect.
            pub(crate) unref_bytes: i64,
            /// The change this operation made to the `added` bytes of all version rows.
            pub(crate) history_bytes: i64,
            $($name: Option<Table<'t, $k, $v>>,)*
        }

        impl<'t> W<'t> {
            /// Tables straight on a write transaction.
            pub(crate) fn direct(txn: &'t WriteTransaction) -> Self {
                W {
                    src: Src::Direct(txn),
                    ids: None,
                    only: None,
                    unref_bytes: 0,
                    history_bytes: 0,
                    $($name: None,)*
                }
            }

            fn layered(snap: &'t Snapshot, under: [&'t Layer; 2]) -> Self {
                W {
                    src: Src::Layered { snap, under, delta: Box::default() },
                    ids: None,
                    only: None,
                    unref_bytes: 0,
                    history_bytes: 0,
                    $($name: None,)*
                }
            }

            /// Opens every table, creating those that do not exist yet (direct only).
            pub(crate) fn open_all(&mut self) -> Result<()> {
                $(self.$name()?;)*
                Ok(())
            }

            $(
                pub(crate) fn $name(&mut self) -> Result<View<'_, 't, $k, $v>> {
                    if self.only.is_some_and(|only| !only.contains(&stringify!($name))) {
                        return Err(Error::CorruptRecord(
                            "tables",
                            format!("{} is not among the scan's tables", stringify!($name)),
                        ));
                    }
                    match &mut self.src {
                        Src::Direct(txn) => {
                            if self.$name.is_none() {
                                self.$name = Some(txn.open_table($def)?);
                            }
                            match &mut self.$name {
                                Some(t) => Ok(View::Direct(t)),
                                None => Err(Error::CorruptRecord("tables", "table not open".into())),
                            }
                        }
                        Src::Layered { snap, under, delta } => {
                            let snap: &'t Snapshot = snap;
                            if snap.$name.get().is_none() {
                                // Two threads may open it at once; the first one set wins.
                                let _ = snap.$name.set(snap.txn.open_table($def)?);
                            }
                            match snap.$name.get() {
                                Some(base) => Ok(View::Layered {
                                    delta: &mut delta.$name,
                                    bytes: &mut delta.bytes,
                                    under: [&under[0].$name, &under[1].$name],
                                    base,
                                }),
                                None => Err(Error::CorruptRecord("tables", "table not open".into())),
                            }
                        }
                    }
                }
            )*
        }
    };
}

tables! {
    meta: META => &'static str, &'static [u8];
    nodes: NODES => u64, &'static [u8];
    entries: ENTRIES => (u64, &'static [u8]), (u64, u64);
    order: ORDER => (u64, u64), OrderRow;
    trees: TREES => &'static [u8; 32], &'static [u8];
    xattrs: XATTRS => (u64, &'static [u8]), &'static [u8];
    leaves: LEAVES => &'static [u8; 32], &'static [u8];
    inline: INLINE => &'static [u8; 32], &'static [u8];
    leaf_segments: LEAF_SEGMENTS => &'static [u8; 32], &'static [u8];
    segments: SEGMENTS => &'static [u8; 32], &'static [u8];
    segment_runs: SEGMENT_RUNS => &'static [u8; 32], &'static [u8];
    chunks: CHUNKS => &'static [u8; 32], ChunkValue;
    dead: DEAD_CHUNKS => &'static [u8; 32], ();
    unref: UNREFERENCED => &'static [u8; 32], i64;
    orphans: ORPHANS => u64, ();
    attention: ATTENTION => u64, &'static [u8];
    events: EVENTS => u64, &'static [u8];
    grants: GRANTS => (u64, &'static [u8; 32]), &'static [u8];
    mirror: MIRROR => u64, &'static [u8];
    mirror_remote: MIRROR_REMOTE => (&'static [u8; 32], u64, u64), ();
    mirror_names: MIRROR_NAMES => (u64, &'static [u8]), u64;
    mirror_kids: MIRROR_KIDS => (u64, u64), ();
    transfers: TRANSFERS => (&'static [u8; 32], u64), &'static [u8];
    peers: PEERS => &'static [u8; 32], &'static [u8];
    invites: INVITES => &'static [u8; 32], &'static [u8];
    realms: REALMS => &'static [u8; 16], &'static [u8];
    realm_items: REALM_ITEMS => (&'static [u8; 16], &'static [u8; 32]), &'static [u8];
    realm_left: REALM_LEFT => &'static [u8; 16], &'static [u8; 32];
    outbox: ATTENTION_OUTBOX => (&'static [u8; 32], u64), &'static [u8];
    chains: ATTENTION_CHAINS => (&'static [u8; 32], u8), &'static [u8];
    versions: VERSIONS => (u64, u64), &'static [u8];
    version_nodes: VERSION_NODES => u64, u64;
    lineage: LINEAGE => u64, u64;
    history_refs: HISTORY_REFS => &'static [u8; 32], u64;
    deleted: DELETED => u64, &'static [u8];
    deleted_names: DELETED_NAMES => (u64, &'static [u8], u64), ();
    snapshots: SNAPSHOTS => &'static [u8], &'static [u8];
}

static EMPTY: Layer = Layer::EMPTY;

enum Src<'t> {
    Direct(&'t WriteTransaction),
    Layered { snap: &'t Snapshot, under: [&'t Layer; 2], delta: Box<Layer> },
}

impl<'t> W<'t> {
    /// The write transaction under a direct `W` (for the migrations).
    pub(crate) fn txn(&self) -> Result<&'t WriteTransaction> {
        match self.src {
            Src::Direct(txn) => Ok(txn),
            Src::Layered { .. } => Err(Error::CorruptRecord(
                "tables",
                "no write transaction under a layered view".into(),
            )),
        }
    }

    fn into_delta(self) -> Layer {
        match self.src {
            Src::Layered { delta, .. } => *delta,
            Src::Direct(_) => Layer::default(),
        }
    }
}

#[derive(Default)]
struct Layers {
    active: Layer,
    frozen: Option<Arc<Layer>>,
    /// Rows committed without fsync since the last durable commit: what reopening the
    /// database after a failed commit would roll back (not a read layer; see the module doc).
    unsynced: Option<Arc<Layer>>,
    /// The snapshot under the layers, made on first use after each commit (which drops it,
    /// under the state lock, at the moment it drops the frozen rows).
    snap: Mutex<Option<Arc<Snapshot>>>,
    /// The rows merged since the last redo record (`Meta::redo`): kept from a redo record on
    /// until the next durable flush freezes its rows, so that the next record can hold only
    /// what changed since.
    redo: Option<Layer>,
    /// The tag the next redo record takes. Every flush records the tag current when it froze
    /// its rows as the database's redo floor: that state holds every record below it.
    redo_next: u64,
    /// Set by a failed commit or a failed redo write: the records since the last durable
    /// flush may not form a chain, so none is made until a durable flush succeeds.
    redo_broken: bool,
    /// Set while a redo record taken is not yet written: its rows are not durable yet.
    redo_writing: bool,
}

impl Layers {
    fn snapshot(&self, meta: &Meta) -> Result<Arc<Snapshot>> {
        let mut snap = self.snap.lock();
        if let Some(s) = &*snap {
            return Ok(s.clone());
        }
        let s = Arc::new(Snapshot::new(meta.db()?.begin_read()?));
        *snap = Some(s.clone());
        Ok(s)
    }
}

/// How hard a flush presses its rows to disk.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Strength {
    /// A redb commit without fsync.
    Consistent,
    /// A redb commit with fsync; `before` runs first (it makes the payloads durable).
    Durable,
}

/// The pending bytes past which the rows should be flushed before the periodic sync
/// (`Meta::wants_flush`; the mount's background thread does it, off every request's path).
const FLUSH_BYTES: usize = 32 << 20;

/// The pending bytes past which an operation flushes on its own, when nothing else has:
/// bounds the memory the layers hold.
const FORCE_FLUSH_BYTES: usize = 2 * FLUSH_BYTES;

/// The pending bytes past which operations are refused with `ENOSPC`: reached only when
/// flushes fail.
const BACKLOG_BYTES: usize = 8 * FLUSH_BYTES;

/// The bytes of non-durable rows past which the next flush should be durable
/// (`Meta::wants_durable`): bounds the memory `unsynced` holds.
const UNSYNCED_BYTES: usize = 2 * FLUSH_BYTES;

/// Opens the database file again (after a failed commit).
pub(crate) type Reopen = Box<dyn Fn() -> Result<Database> + Send + Sync>;

/// The metadata database and its write-back layers.
pub(crate) struct Meta {
    /// `None` only while a reopen after a failed commit has not succeeded yet.
    db: RwLock<Option<Database>>,
    reopen: Reopen,
    /// The errno of the failure that closed `db`, while it is closed.
    closed_by: AtomicI32,
    state: RwLock<Layers>,
    /// Serialises operations (as redb serialised write transactions).
    writer: Mutex<()>,
    /// Serialises flushes and direct writes.
    flushing: Mutex<()>,
    /// Set while some change is not durable (pending, or flushed without fsync).
    dirty: AtomicBool,
}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta").finish_non_exhaustive()
    }
}

impl Meta {
    pub(crate) fn new(db: Database, reopen: Reopen) -> Meta {
        Meta {
            db: RwLock::new(Some(db)),
            reopen,
            closed_by: AtomicI32::new(0),
            state: RwLock::default(),
            writer: Mutex::new(()),
            flushing: Mutex::new(()),
            dirty: AtomicBool::new(false),
        }
    }

    /// Whether some change is not yet durable: one made since the last durable flush began,
    /// or one that flush (still running, or failed) was to make durable. A reader that saw a
    /// row and then finds this false knows the row durable.
    pub(crate) fn dirty(&self) -> bool {
        if self.dirty.load(AtomicOrdering::Acquire) {
            return true;
        }
        let st = self.state.read_recursive();
        st.frozen.is_some() || st.unsynced.is_some()
    }

    /// The database. Fails while it is closed after a failed commit that could not reopen it
    /// yet, with that failure's errno.
    pub(crate) fn db(&self) -> Result<MappedRwLockReadGuard<'_, Database>> {
        RwLockReadGuard::try_map(self.db.read(), Option::as_ref).map_err(|_| {
            let errno = self.closed_by.load(AtomicOrdering::Acquire);
            Error::io("meta.redb", std::io::Error::from_raw_os_error(errno))
        })
    }

    /// Whether enough rows are pending that they should be flushed now.
    pub(crate) fn wants_flush(&self) -> bool {
        self.state.read_recursive().active.bytes >= FLUSH_BYTES
    }

    /// Whether so many rows wait for a durable commit that the next flush should be one.
    pub(crate) fn wants_durable(&self) -> bool {
        self.state.read_recursive().unsynced.as_ref().is_some_and(|u| u.bytes >= UNSYNCED_BYTES)
    }

    /// After a failed commit: puts the rows redb may roll back under `frozen`, drops the
    /// database and opens it again. If the reopen fails, the database stays closed (every
    /// operation fails with `cause`) until a later flush reopens it.
    fn recover(&self, cause: &Error) {
        let errno = cause.raw_os_error().unwrap_or(rustix::io::Errno::IO.raw_os_error());
        let mut st = self.state.write();
        if let Some(unsynced) = st.unsynced.take() {
            let mut under = Arc::unwrap_or_clone(unsynced);
            if let Some(frozen) = st.frozen.take() {
                under.absorb(Arc::unwrap_or_clone(frozen));
            }
            st.frozen = Some(Arc::new(under));
        }
        *st.snap.get_mut() = None;
        let mut db = self.db.write();
        if db.is_some() {
            self.closed_by.store(errno, AtomicOrdering::Release);
        }
        // The old handle must be gone (with every read transaction on it) before the file
        // can be opened again.
        *db = None;
        drop(st);
        for attempt in 0..100 {
            match (self.reopen)() {
                Ok(fresh) => {
                    *db = Some(fresh);
                    tracing::warn!(cause = %cause, "reopened the metadata database after a failed commit");
                    return;
                }
                Err(Error::Db(redb::Error::DatabaseAlreadyOpen)) if attempt < 99 => {
                    // A reader still holds a transaction on the old handle.
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => {
                    tracing::error!(error = %e, cause = %cause, "reopening the metadata database failed; will retry at the next flush");
                    return;
                }
            }
        }
    }

    /// A commit failed with `e`: if the database's storage failed, redb refuses everything
    /// from now on, so it is reopened (`recover`). Returns `e`. Called with `flushing` held and
    /// no state lock.
    fn after_failed_commit(&self, e: Error) -> Error {
        if e.is_storage_failure() {
            self.recover(&e);
        }
        e
    }

    /// Reopens the database if a failed commit closed it. Called with `flushing` held.
    fn ensure_open(&self) -> Result<()> {
        if let Err(closed) = self.db().map(drop) {
            self.recover(&closed);
        }
        self.db().map(drop)
    }

    /// Runs `f` on a read-only view: pending rows over a snapshot.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&mut W) -> Result<R>) -> Result<R> {
        // Recursive: a reader may read again inside `f` while an operation waits to merge.
        let st = self.state.read_recursive();
        self.with_view(&st, None, |mut w| f(&mut w))?
    }

    /// Runs `f` on a view of `tables` as they are now (pending rows over a snapshot) that
    /// holds no lock while `f` runs, so a long scan never holds up operations. The pending
    /// rows of those tables are copied first; any other table is an error in `f`.
    pub(crate) fn scan<R>(
        &self,
        tables: &'static [&'static str],
        f: impl FnOnce(&mut W) -> Result<R>,
    ) -> Result<R> {
        let (snap, rows) = {
            let st = self.state.read_recursive();
            (st.snapshot(self)?, Layer::pick(st.frozen.as_deref(), &st.active, tables))
        };
        let mut w = W::layered(&snap, [&rows, &EMPTY]);
        w.only = Some(tables);
        f(&mut w)
    }

    /// Runs `f` on a view of the layers of `st` over the shared snapshot.
    fn with_view<R>(
        &self,
        st: &Layers,
        ids: Option<&std::sync::Mutex<crate::store::ids::NodeIds>>,
        f: impl FnOnce(W<'_>) -> R,
    ) -> Result<R> {
        let snap = st.snapshot(self)?;
        let frozen = st.frozen.as_deref().unwrap_or(&EMPTY);
        let mut w = W::layered(&snap, [&st.active, frozen]);
        w.ids = ids;
        Ok(f(w))
    }

    /// Runs one operation. If `f` succeeds, everything it wrote is visible at once, to every
    /// later reader and operation; if it fails, nothing is. `ids` is handed to the view, and
    /// `done(ok)` runs before the state lock is released. Returns whether the pending rows
    /// have grown so far past the point where they should be flushed that the caller must.
    pub(crate) fn op<R>(
        &self,
        ids: Option<&std::sync::Mutex<crate::store::ids::NodeIds>>,
        f: impl FnOnce(&mut W) -> Result<R>,
        done: impl FnOnce(bool),
    ) -> Result<(R, bool)> {
        let _writer = self.writer.lock();
        let (out, delta) = {
            let st = self.state.read_recursive();
            let held = |l: &Option<Arc<Layer>>| l.as_ref().map_or(0, |l| l.bytes);
            if st.active.bytes + held(&st.frozen) + held(&st.unsynced) >= BACKLOG_BYTES {
                // Flushes keep failing (a full disk, say): refuse new changes rather than
                // hold ever more in memory.
                done(false);
                return Err(Error::io("meta.redb", std::io::Error::from(rustix::io::Errno::NOSPC)));
            }
            self.with_view(&st, ids, |mut w| {
                let out = f(&mut w);
                (out, w.into_delta())
            })?
        };
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                done(false);
                return Err(e);
            }
        };
        let mut st = self.state.write();
        if let Some(redo) = &mut st.redo {
            redo.absorb(delta.clone());
        }
        st.active.absorb(delta);
        self.dirty.store(true, AtomicOrdering::Release);
        done(true);
        Ok((out, st.active.bytes >= FORCE_FLUSH_BYTES))
    }

    /// Whether rows wait in memory.
    pub(crate) fn pending(&self) -> bool {
        let st = self.state.read_recursive();
        !st.active.is_empty() || st.frozen.is_some()
    }

    /// Writes every pending row to the database in one transaction. `before` runs after the
    /// rows are frozen and before the commit (with `Durable`, it makes the payloads they name
    /// durable). A failed flush keeps its rows for the next one.
    pub(crate) fn flush(
        &self,
        strength: Strength,
        before: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let _flushing = self.flushing.lock();
        self.ensure_open()?;
        let (frozen, floor) = {
            let mut st = self.state.write();
            if strength == Strength::Durable {
                // Once this flush is durable, no earlier redo record is needed.
                st.redo = None;
            }
            let active = std::mem::take(&mut st.active);
            if !active.is_empty() {
                match &mut st.frozen {
                    Some(f) => Arc::make_mut(f).absorb(active),
                    None => st.frozen = Some(Arc::new(active)),
                }
            }
            // Changes merged from here on set it again.
            self.dirty.store(strength == Strength::Consistent, AtomicOrdering::Release);
            (st.frozen.clone(), st.redo_next)
        };
        let committed = before().and_then(|()| {
            self.commit(strength, |txn| {
                if let Some(f) = &frozen {
                    f.apply(txn)?;
                }
                txn.open_table(META)?.insert(META_REDO_FLOOR, floor.to_le_bytes().as_slice())?;
                Ok(())
            })
        });
        if let Err(e) = committed {
            self.dirty.store(true, AtomicOrdering::Release);
            self.state.write().redo_broken = true;
            return Err(self.after_failed_commit(e));
        }
        let mut st = self.state.write();
        if strength == Strength::Durable {
            st.redo_broken = false;
        }
        if st.frozen.as_ref().zip(frozen.as_ref()).is_some_and(|(a, b)| Arc::ptr_eq(a, b)) {
            st.frozen = None;
        }
        match strength {
            Strength::Durable => st.unsynced = None,
            Strength::Consistent => {
                if let Some(f) = frozen {
                    match &mut st.unsynced {
                        Some(u) => Arc::make_mut(u).absorb(Arc::unwrap_or_clone(f)),
                        None => st.unsynced = Some(f),
                    }
                }
            }
        }
        *st.snap.get_mut() = None;
        Ok(())
    }

    /// Makes the rows not yet durable durable through a redo record: takes, as the next record
    /// of the chain, the rows merged since the last record (after a durable flush, every row
    /// not durable), and runs `write(Some((tag, rows)))` to make it durable; or `write(None)`
    /// if no row changed since the last record. `write` runs with `flushing` held, so records
    /// become durable one at a time, in tag order, and never while a flush freezes rows.
    ///
    /// Returns false, without calling `write`, when the chain is broken (see `redo_broken`)
    /// or the record would hold more than `max` bytes of rows: the caller flushes durably
    /// instead. A failed `write` breaks the chain.
    pub(crate) fn redo(
        &self,
        max: usize,
        write: impl FnOnce(Option<(u64, &Layer)>) -> Result<()>,
    ) -> Result<bool> {
        let _flushing = self.flushing.lock();
        let taken = {
            let mut st = self.state.write();
            if st.redo_broken {
                return Ok(false);
            }
            let rows = match st.redo.take() {
                Some(rows) if rows.bytes > max => {
                    st.redo = Some(rows);
                    return Ok(false);
                }
                Some(rows) => rows,
                None => {
                    let held = |l: &Option<Arc<Layer>>| l.as_ref().map_or(0, |l| l.bytes);
                    if st.active.bytes + held(&st.frozen) + held(&st.unsynced) > max {
                        return Ok(false);
                    }
                    let mut rows = st.unsynced.as_deref().cloned().unwrap_or_default();
                    if let Some(frozen) = &st.frozen {
                        rows.absorb(Layer::clone(frozen));
                    }
                    rows.absorb(st.active.clone());
                    rows
                }
            };
            st.redo = Some(Layer::default());
            if rows.is_empty() {
                None
            } else {
                st.redo_next += 1;
                st.redo_writing = true;
                Some((st.redo_next - 1, rows))
            }
        };
        let written = write(taken.as_ref().map(|(tag, rows)| (*tag, rows)));
        let mut st = self.state.write();
        st.redo_writing = false;
        if written.is_err() {
            st.redo_broken = true;
        }
        written.map(|()| true)
    }

    /// Whether the redo records made so far hold every row not durable in the database: one
    /// was made since the last durable flush and is written, and no row was merged since.
    pub(crate) fn redo_holds_all(&self) -> bool {
        let st = self.state.read_recursive();
        !st.redo_broken && !st.redo_writing && st.redo.as_ref().is_some_and(Layer::is_empty)
    }

    /// The tag the next redo record takes.
    pub(crate) fn redo_next(&self) -> u64 {
        self.state.read_recursive().redo_next
    }

    /// Replays the redo records among `bodies` (at open, before anything reads the store):
    /// those from the database's redo floor on, in tag order, as long as the tags run on
    /// without a gap, in one durable transaction that also moves the floor past every record
    /// found. Returns how many were applied.
    pub(crate) fn replay_redo<'a>(&self, bodies: impl Iterator<Item = &'a [u8]>) -> Result<usize> {
        let mut records = BTreeMap::new();
        for body in bodies {
            match body.split_first_chunk::<8>() {
                Some((tag, rows)) => {
                    records.insert(u64::from_le_bytes(*tag), rows);
                }
                None => tracing::warn!("redo record without a tag; ignored"),
            }
        }
        let db = self.db()?;
        let floor = {
            let txn = db.begin_read()?;
            match txn.open_table(META) {
                Ok(t) => match t.get(META_REDO_FLOOR)? {
                    Some(v) => Some(u64::from_le_bytes(v.value().try_into().map_err(|_| {
                        Error::CorruptRecord("meta", "redo floor is not 8 bytes".into())
                    })?)),
                    None => None,
                },
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            }
        };
        // A store with no floor yet never had a redo record made over it: none applies.
        let next = records
            .last_key_value()
            .map_or(0, |(tag, _)| tag.saturating_add(1))
            .max(floor.unwrap_or(0));
        let mut applied = Vec::new();
        if let Some(floor) = floor {
            for (&tag, rows) in records.range(floor..) {
                if tag != floor + applied.len() as u64 {
                    tracing::error!(
                        tag,
                        "redo records: a gap in the chain; the records from here on are not replayed"
                    );
                    break;
                }
                match Layer::decode(rows) {
                    Some(rows) => applied.push(rows),
                    None => {
                        tracing::error!(
                            tag,
                            "redo record not readable; the records from here on are not replayed"
                        );
                        break;
                    }
                }
            }
            if next != floor {
                let mut txn = db.begin_write()?;
                txn.set_durability(redb::Durability::Immediate)?;
                for rows in &applied {
                    rows.apply(&txn)?;
                }
                txn.open_table(META)?.insert(META_REDO_FLOOR, next.to_le_bytes().as_slice())?;
                txn.commit()?;
            }
        }
        self.state.write().redo_next = next;
        Ok(applied.len())
    }

    fn commit<R>(
        &self,
        strength: Strength,
        f: impl FnOnce(&WriteTransaction) -> Result<R>,
    ) -> Result<R> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(match strength {
            Strength::Consistent => redb::Durability::None,
            Strength::Durable => redb::Durability::Immediate,
        })?;
        let out = f(&txn)?;
        txn.commit()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::open_db;
    use crate::store::faults::{FaultInjector, Faults, IoStep};
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Step {
        Insert(u64, u8),
        Remove(u64),
        /// An operation that writes and then fails: none of it may show.
        Failing(u64, u8),
        Flush(bool),
        /// A scan: the whole table and its length, with no lock held.
        Scan,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u64..40, any::<u8>()).prop_map(|(k, v)| Step::Insert(k, v)),
            3 => (0u64..40).prop_map(Step::Remove),
            1 => (0u64..40, any::<u8>()).prop_map(|(k, v)| Step::Failing(k, v)),
            1 => any::<bool>().prop_map(Step::Flush),
            1 => Just(Step::Scan),
        ]
    }

    fn reopener(dir: &std::path::Path) -> Reopen {
        let path = dir.join("meta.redb");
        Box::new(move || Ok(Database::create(&path)?))
    }

    fn open(dir: &std::path::Path) -> Meta {
        let meta = Meta::new(Database::create(dir.join("meta.redb")).unwrap(), reopener(dir));
        create_tables(&meta);
        meta
    }

    /// Creates every table, as opening a store does.
    fn create_tables(meta: &Meta) {
        let txn = meta.db().unwrap().begin_write().unwrap();
        W::direct(&txn).open_all().unwrap();
        txn.commit().unwrap();
    }

    /// Reopens the database at `dir`, as after a restart.
    fn reopen(dir: &std::path::Path) -> Meta {
        Meta::new(Database::create(dir.join("meta.redb")).unwrap(), reopener(dir))
    }

    /// One operation that sets `nodes[k] = v`; returns whether a flush is due.
    fn put(meta: &Meta, k: u64, v: &[u8]) -> Result<bool> {
        meta.op(None, |w| Ok(w.nodes()?.insert(k, v)?), |_| {}).map(|((), full)| full)
    }

    fn get(meta: &Meta, k: u64) -> Option<Vec<u8>> {
        meta.read(|r| Ok(r.nodes()?.get(k)?.map(|v| v.value().to_vec()))).unwrap()
    }

    /// Keys keep their exact bytes, inline up to `INLINE_KEY` and on the heap beyond, and
    /// order as redb orders them.
    #[test]
    fn keys_keep_their_bytes_and_order() {
        let keys: Vec<Vec<u8>> =
            (0..=2 * INLINE_KEY).map(|n| (0..n).map(|i| (i * 7 + n) as u8).collect()).collect();
        for k in &keys {
            assert_eq!(KeyBytes::new(k).as_slice(), k.as_slice());
        }
        let mut ord: Vec<OrdKey<&[u8]>> =
            keys.iter().map(|k| OrdKey(KeyBytes::new(k), PhantomData)).collect();
        ord.sort();
        let mut sorted = keys.clone();
        sorted.sort();
        assert!(ord.iter().map(OrdKey::bytes).eq(sorted.iter().map(Vec::as_slice)));
    }

    /// What a failing `before` step of a flush returns.
    fn failure() -> Result<()> {
        Err(Error::NoSuchNode(crate::types::NodeId(0)))
    }

    /// Every key's value, and the rows of one range.
    type Snapshot = (Vec<Option<Vec<u8>>>, Vec<(u64, Vec<u8>)>);

    fn snapshot(meta: &Meta, lo: u64, hi: u64) -> Snapshot {
        meta.read(|r| {
            let mut got = Vec::new();
            for k in 0..40 {
                got.push(r.nodes()?.get(k)?.map(|v| v.value().to_vec()));
            }
            let mut range = Vec::new();
            for row in r.nodes()?.range(lo..hi)? {
                let (k, v) = row?;
                range.push((k.value(), v.value().to_vec()));
            }
            Ok((got, range))
        })
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Gets and ranges through the layers agree with a plain map, whatever mix of
        /// operations, failed operations and flushes came before, and across a reopen.
        #[test]
        fn layers_match_a_map(steps in proptest::collection::vec(step(), 1..80), lo in 0u64..40, len in 0u64..40) {
            let dir = tempfile::tempdir().unwrap();
            let meta = open(dir.path());
            let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let hi = lo + len;
            for s in &steps {
                match *s {
                    Step::Insert(k, v) => {
                        put(&meta, k, &[v, 1]).unwrap();
                        model.insert(k, vec![v, 1]);
                    }
                    Step::Remove(k) => {
                        let old = meta.op(None, |w| Ok(w.nodes()?.remove(k)?.map(|v| v.value().to_vec())), |_| {}).unwrap().0;
                        prop_assert_eq!(old, model.remove(&k));
                    }
                    Step::Failing(k, v) => {
                        let mut ok = None;
                        let r = meta.op(None, |w| {
                            w.nodes()?.insert(k, [v, 2].as_slice())?;
                            w.nodes()?.remove(k.wrapping_add(1))?;
                            Err::<(), _>(Error::NoSuchNode(crate::types::NodeId(k)))
                        }, |o| ok = Some(o));
                        prop_assert!(r.is_err());
                        prop_assert_eq!(ok, Some(false));
                    }
                    Step::Flush(durable) => {
                        let strength = if durable { Strength::Durable } else { Strength::Consistent };
                        meta.flush(strength, || Ok(())).unwrap();
                        prop_assert_eq!(meta.dirty(), !durable);
                    }
                    Step::Scan => {
                        let (rows, len) = meta.scan(&["nodes"], |r| {
                            let rows = r.nodes()?.iter()?
                                .map(|row| row.map(|(k, v)| (k.value(), v.value().to_vec())))
                                .collect::<std::result::Result<Vec<_>, _>>()?;
                            Ok((rows, r.nodes()?.len()?))
                        }).unwrap();
                        let want: Vec<_> = model.iter().map(|(k, v)| (*k, v.clone())).collect();
                        prop_assert_eq!(rows, want);
                        prop_assert_eq!(len, model.len() as u64);
                        prop_assert!(meta.scan(&["nodes"], |r| r.trees().map(drop)).is_err(), "a table the scan did not name");
                    }
                }
                let (got, range) = snapshot(&meta, lo, hi);
                let want: Vec<_> = (0..40).map(|k| model.get(&k).cloned()).collect();
                prop_assert_eq!(got, want);
                let want: Vec<_> = model.range(lo..hi).map(|(k, v)| (*k, v.clone())).collect();
                prop_assert_eq!(range, want);
            }
            meta.flush(Strength::Durable, || Ok(())).unwrap();
            drop(meta);
            let meta = reopen(dir.path());
            let (got, _) = snapshot(&meta, lo, hi);
            let want: Vec<_> = (0..40).map(|k| model.get(&k).cloned()).collect();
            prop_assert_eq!(got, want);
        }
    }

    /// Redo records hold every row only once the one taken is written: not while it is being
    /// written (another thread's `fsync` must not count on it yet), nor after it failed.
    #[test]
    fn redo_holds_all_only_once_the_record_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        meta.flush(Strength::Durable, || Ok(())).unwrap();
        put(&meta, 1, b"a").unwrap();
        assert!(!meta.redo_holds_all());
        let made = meta.redo(usize::MAX, |taken| {
            assert!(taken.is_some());
            assert!(!meta.redo_holds_all(), "while the record is written");
            Ok(())
        });
        assert!(made.unwrap());
        assert!(meta.redo_holds_all());
        put(&meta, 2, b"b").unwrap();
        assert!(!meta.redo_holds_all(), "a row merged since");
        assert!(meta.redo(usize::MAX, |_| failure()).is_err());
        assert!(!meta.redo_holds_all(), "after a failed write");
        assert!(!meta.redo(usize::MAX, |_| Ok(())).unwrap(), "the chain is broken");
        meta.flush(Strength::Durable, || Ok(())).unwrap();
        assert!(
            meta.redo(usize::MAX, |taken| {
                assert!(taken.is_none(), "nothing changed since the durable flush");
                Ok(())
            })
            .unwrap()
        );
        assert!(meta.redo_holds_all());
    }

    /// A redo record's body decodes to the rows encoded, removals and tuple keys included;
    /// a body cut short, naming an unknown table, or with a key of the wrong width does not.
    #[test]
    fn a_redo_body_decodes_to_the_rows_encoded() {
        fn rows<K: Key>(r: &Rows<K>) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
            r.iter().map(|(k, v)| (k.bytes().to_vec(), v.clone())).collect()
        }
        let mut layer = Layer::default();
        layer.nodes.insert(OrdKey::of(&7), Some(b"node".to_vec()));
        layer.nodes.insert(OrdKey::of(&8), None);
        let entry: Vec<u8> = [9u64.to_le_bytes(), 3u64.to_le_bytes()].concat();
        layer.entries.insert(OrdKey::of(&(1, &b"name"[..])), Some(entry));
        layer.meta.insert(OrdKey::of(&"k"), Some(vec![1, 2]));
        let mut body = Vec::new();
        layer.encode(&mut body);
        let back = Layer::decode(&body).expect("decodes");
        assert_eq!(rows(&back.nodes), rows(&layer.nodes));
        assert_eq!(rows(&back.entries), rows(&layer.entries));
        assert_eq!(rows(&back.meta), rows(&layer.meta));
        assert!(back.trees.is_empty() && back.chunks.is_empty());
        for cut in 0..body.len() {
            if let Some(l) = Layer::decode(&body[..cut]) {
                // A cut between two tables' rows is a shorter record, never a wrong one.
                assert!(rows(&l.nodes).len() + rows(&l.entries).len() + rows(&l.meta).len() < 4);
            }
        }
        let mut unknown = vec![5];
        unknown.extend_from_slice(b"nopes");
        unknown.extend_from_slice(&0u32.to_le_bytes());
        assert!(Layer::decode(&unknown).is_none());
        let mut narrow = Layer::default();
        narrow.nodes.insert(OrdKey(KeyBytes::new(&[1; 7]), PhantomData), None);
        let mut body = Vec::new();
        narrow.encode(&mut body);
        assert!(Layer::decode(&body).is_none(), "a u64 key of 7 bytes");
    }

    #[derive(Clone, Debug)]
    enum RedoStep {
        Insert(u64, u8),
        Remove(u64),
        Flush(bool),
        /// A flush whose `before` fails: nothing commits, and the redo chain breaks.
        FailingFlush(bool),
        /// A redo record, written (`true`) or failing to be.
        Redo(bool),
    }

    fn redo_step() -> impl Strategy<Value = RedoStep> {
        prop_oneof![
            4 => (0u64..20, any::<u8>()).prop_map(|(k, v)| RedoStep::Insert(k, v)),
            2 => (0u64..20).prop_map(RedoStep::Remove),
            2 => any::<bool>().prop_map(RedoStep::Flush),
            1 => any::<bool>().prop_map(RedoStep::FailingFlush),
            3 => Just(RedoStep::Redo(true)),
            1 => Just(RedoStep::Redo(false)),
        ]
    }

    type Model = BTreeMap<u64, Vec<u8>>;

    /// The `nodes` rows and the redo floor the database holds.
    fn db_state(meta: &Meta) -> (Model, u64) {
        let txn = meta.db().unwrap().begin_read().unwrap();
        let rows = txn
            .open_table(NODES)
            .unwrap()
            .iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value(), v.value().to_vec())
            })
            .collect();
        let floor = txn.open_table(META).unwrap().get(META_REDO_FLOOR).unwrap().unwrap();
        (rows, u64::from_le_bytes(floor.value().try_into().unwrap()))
    }

    /// `rows` with the records of `log` from `floor` on applied, in tag order, while the tags
    /// run on (as `Meta::replay_redo` does).
    fn replayed(mut rows: Model, floor: u64, log: &[Vec<u8>]) -> Model {
        let mut records: BTreeMap<u64, Layer> = BTreeMap::new();
        for body in log {
            let (tag, rest) = body.split_first_chunk::<8>().unwrap();
            records.insert(u64::from_le_bytes(*tag), Layer::decode(rest).expect("decodes"));
        }
        for (i, (tag, layer)) in records.range(floor..).enumerate() {
            if *tag != floor + i as u64 {
                break;
            }
            for (k, v) in &layer.nodes {
                let k = u64::from_le_bytes(k.bytes().try_into().unwrap());
                match v {
                    Some(v) => rows.insert(k, v.clone()),
                    None => rows.remove(&k),
                };
            }
        }
        rows
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// After a power loss the database is back at some flush since its last durable one,
        /// and the log holds every redo record written. Whichever of those flushes it is,
        /// that flush's state with the records from its redo floor on is the state at the
        /// last redo record, or at the flush if it came later: nothing a redo record made
        /// durable is lost, and nothing goes back to an older value. A failed flush or redo
        /// write refuses redo records until a durable flush succeeds. The real replay, on
        /// the database as it was at the last durable flush, agrees.
        #[test]
        fn redo_records_and_any_flush_since_the_last_durable_one_give_the_state(
            steps in proptest::collection::vec(redo_step(), 1..60),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let meta = open(dir.path());
            meta.flush(Strength::Durable, || Ok(())).unwrap();
            let mut model = Model::new();
            let mut log: Vec<Vec<u8>> = Vec::new();
            let mut broken = false;
            // When (by step) the model was as saved: at the last redo record, and at each
            // flush the database may be back at.
            let mut acked: (usize, Model) = (0, Model::new());
            let (rows, floor) = db_state(&meta);
            let mut flushes = vec![(0, rows, floor, Model::new())];
            let mut durable_file = std::fs::read(dir.path().join("meta.redb")).unwrap();
            for (i, s) in steps.iter().enumerate() {
                let i = i + 1;
                match *s {
                    RedoStep::Insert(k, v) => {
                        put(&meta, k, &[v]).unwrap();
                        model.insert(k, vec![v]);
                    }
                    RedoStep::Remove(k) => {
                        meta.op(None, |w| Ok(w.nodes()?.remove(k).map(drop)?), |_| {}).unwrap();
                        model.remove(&k);
                    }
                    RedoStep::Flush(durable) => {
                        let strength = if durable { Strength::Durable } else { Strength::Consistent };
                        meta.flush(strength, || Ok(())).unwrap();
                        let (rows, floor) = db_state(&meta);
                        prop_assert_eq!(&rows, &model);
                        if durable {
                            flushes.clear();
                            broken = false;
                            durable_file = std::fs::read(dir.path().join("meta.redb")).unwrap();
                        }
                        flushes.push((i, rows, floor, model.clone()));
                    }
                    RedoStep::FailingFlush(durable) => {
                        let strength = if durable { Strength::Durable } else { Strength::Consistent };
                        prop_assert!(meta.flush(strength, failure).is_err());
                        broken = true;
                    }
                    RedoStep::Redo(ok) => {
                        let made = meta.redo(usize::MAX, |taken| {
                            if !ok {
                                return failure();
                            }
                            if let Some((tag, rows)) = taken {
                                let mut body = tag.to_le_bytes().to_vec();
                                rows.encode(&mut body);
                                log.push(body);
                            }
                            Ok(())
                        });
                        match made {
                            Ok(made) => {
                                prop_assert_eq!(made, !broken);
                                if made {
                                    acked = (i, model.clone());
                                }
                            }
                            Err(_) => {
                                prop_assert!(!ok && !broken);
                                broken = true;
                            }
                        }
                    }
                }
                for (at, rows, floor, saved) in &flushes {
                    let want = if acked.0 > *at { &acked.1 } else { saved };
                    prop_assert_eq!(&replayed(rows.clone(), *floor, &log), want, "back at the flush of step {}", at);
                }
            }
            drop(meta);
            let (at, _, _, saved) = &flushes[0];
            let want = if acked.0 > *at { &acked.1 } else { saved };
            let back = tempfile::tempdir().unwrap();
            std::fs::write(back.path().join("meta.redb"), &durable_file).unwrap();
            let meta = reopen(back.path());
            meta.replay_redo(log.iter().map(Vec::as_slice)).unwrap();
            let (rows, _) = db_state(&meta);
            prop_assert_eq!(&rows, want);
        }
    }

    /// A flush that fails keeps its rows: still visible, still pending, committed by the next.
    #[test]
    fn a_failed_flush_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        put(&meta, 1, b"a").unwrap();
        let failed = meta.flush(Strength::Durable, failure);
        assert!(failed.is_err());
        assert!(meta.pending() && meta.dirty());
        put(&meta, 2, b"b").unwrap();
        assert_eq!((get(&meta, 1), get(&meta, 2)), (Some(b"a".to_vec()), Some(b"b".to_vec())));
        meta.flush(Strength::Durable, || Ok(())).unwrap();
        assert!(!meta.pending() && !meta.dirty());
        drop(meta);
        let meta = reopen(dir.path());
        assert_eq!((get(&meta, 1), get(&meta, 2)), (Some(b"a".to_vec()), Some(b"b".to_vec())));
    }

    /// Past `FLUSH_BYTES` of pending rows a flush is wanted; past `FORCE_FLUSH_BYTES` an
    /// operation says its caller must flush.
    #[test]
    fn pending_rows_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        let value = vec![7u8; 1 << 20];
        let mut ops = 0;
        let mut wanted = None;
        loop {
            let full = put(&meta, ops, &value).unwrap();
            ops += 1;
            if wanted.is_none() && meta.wants_flush() {
                wanted = Some(ops);
            }
            if full {
                break;
            }
            assert!(ops < 128, "no flush asked for after {ops} MiB");
        }
        assert_eq!(wanted, Some((FLUSH_BYTES >> 20) as u64));
        assert_eq!(ops, (FORCE_FLUSH_BYTES >> 20) as u64);
        meta.flush(Strength::Consistent, || Ok(())).unwrap();
        assert!(!meta.wants_flush(), "a flush starts the count again");
        assert!(!put(&meta, 0, b"x").unwrap());
    }

    /// While flushes fail, operations go on until the backlog bound, and then are refused.
    #[test]
    fn a_backlog_is_refused_not_hoarded() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        let value = vec![7u8; 1 << 20];
        let mut key = 0;
        let refused = loop {
            match put(&meta, key, &value) {
                Ok(full) => {
                    if full {
                        assert!(meta.flush(Strength::Consistent, failure).is_err());
                    }
                }
                Err(e) => break e,
            }
            key += 1;
            assert!(key < 1024, "never refused");
        };
        assert!(refused.is_no_space(), "{refused}");
        assert_eq!(key, (BACKLOG_BYTES >> 20) as u64);
        meta.flush(Strength::Durable, || Ok(())).unwrap();
        put(&meta, key, b"x").unwrap();
        assert_eq!(meta.read(|r| Ok(r.nodes()?.iter()?.count())).unwrap() as u64, key + 1);
    }

    /// A reader sees the frozen rows while their flush commits, and the database after.
    #[test]
    fn a_flush_hides_nothing_while_it_commits() {
        let dir = tempfile::tempdir().unwrap();
        let meta = open(dir.path());
        put(&meta, 7, b"x").unwrap();
        meta.flush(Strength::Consistent, || {
            // Frozen, not yet committed: still visible, and an operation can build on it.
            assert_eq!(get(&meta, 7), Some(b"x".to_vec()));
            put(&meta, 8, b"y").unwrap();
            Ok(())
        })
        .unwrap();
        let rows = meta
            .read(|r| {
                Ok(r.nodes()?
                    .iter()?
                    .map(|row| row.map(|(k, _)| k.value()))
                    .collect::<std::result::Result<Vec<_>, _>>()?)
            })
            .unwrap();
        assert_eq!(rows, [7, 8]);
        assert!(meta.pending(), "the row written during the flush waits for the next one");
    }

    /// Fails every write to the database file with `ENOSPC` while set.
    #[derive(Debug, Default)]
    struct DiskFull(AtomicBool);

    impl FaultInjector for DiskFull {
        fn check(&self, step: IoStep) -> std::io::Result<()> {
            if step == IoStep::DbWrite && self.0.load(AtomicOrdering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            Ok(())
        }
    }

    fn open_faulty(dir: &std::path::Path, full: &Arc<DiskFull>) -> Meta {
        let path = dir.join("meta.redb");
        let faults: Faults = Some(full.clone());
        let make = move || open_db(&path, &faults, None);
        let meta = Meta::new(make().unwrap(), Box::new(make));
        create_tables(&meta);
        meta
    }

    /// A commit that fails on a full disk leaves redb refusing every transaction, and reopening
    /// it rolls it back to its last durable commit. Nothing is lost: not the rows of the failed
    /// flush, nor those of an earlier flush that was not durable.
    #[test]
    fn a_failed_commit_reopens_the_database_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let full = Arc::new(DiskFull::default());
        let meta = open_faulty(dir.path(), &full);
        put(&meta, 1, b"durable").unwrap();
        meta.flush(Strength::Durable, || Ok(())).unwrap();
        put(&meta, 2, b"flushed, not durable").unwrap();
        meta.flush(Strength::Consistent, || Ok(())).unwrap();
        put(&meta, 3, b"pending").unwrap();
        full.0.store(true, AtomicOrdering::SeqCst);
        // (A non-durable commit may not write the file at all: fail a durable one.)
        let e = meta.flush(Strength::Durable, || Ok(())).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28), "{e}");
        assert!(meta.flush(Strength::Durable, || Ok(())).is_err(), "the disk is still full");
        full.0.store(false, AtomicOrdering::SeqCst);
        meta.flush(Strength::Consistent, || Ok(())).unwrap();
        put(&meta, 4, b"after").unwrap();
        meta.flush(Strength::Durable, || Ok(())).unwrap();
        let want = [&b"durable"[..], b"flushed, not durable", b"pending", b"after"];
        for (k, v) in (1..).zip(want) {
            assert_eq!(get(&meta, k).as_deref(), Some(v), "key {k} while mounted");
        }
        drop(meta);
        let meta = reopen(dir.path());
        for (k, v) in (1..).zip(want) {
            assert_eq!(get(&meta, k).as_deref(), Some(v), "key {k} after a reopen");
        }
    }
}
