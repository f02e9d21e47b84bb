//! The intent log: what makes a `fsync` durable without a commit.
//!
//! A `fsync` of a file whose write buffer sits over durable content appends one record to
//! this log (the ranges written since the buffer's last record, the size, and how far it was
//! cut) and makes it durable with one `fdatasync`, shared by every `fsync` waiting at that
//! moment (group commit). The commit of the buffer as a new leaf happens later, in a batch
//! (`OpenFiles::drain_log`), and the log is trimmed once that batch is durable.
//!
//! # Files and records
//! Two files in the data dir, `intent.0` and `intent.1`. Records are appended to the active
//! one; a drain makes the other active, commits every file the old one names, syncs the
//! store, and only then marks the old one empty, to be overwritten from the start
//! (`IntentLog::trim`). Records are framed as `indras_artifacts::frame` says (a magic, the
//! body's length and checksum): reading stops at the first record that is not whole and
//! sound, and a record is acknowledged only once a flush covering it and every record before
//! it returned, so nothing after a torn record was acknowledged. Besides the records of
//! files' writes, the files hold the store's own redo records (`append_frame`,
//! `Vault::sync_through_log`), which every open of the store replays; this module skips them.
//!
//! # Which records a replay applies
//! Every record carries a sequence number, increasing across both files and across mounts
//! (`Vault::log_next` keeps it past a trim). A commit of a buffer that has records writes,
//! in the same store operation, the node's floor: the last record its content holds
//! (`Vault::set_content_logged`). A replay applies, node by node and in order, the records
//! above the node's durable floor, over the content the records name as their base, and
//! skips any record whose base is not the node's durable content.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use indras_artifacts::frame::{LOG_FILES, WRITES_MAGIC, frame, frames};
use indras_artifacts::{FILE_SIZE_MAX, FaultInjector, Hash, IoStep, Timestamp};

/// Written bytes one record holds at most, with 12 bytes to frame each range: a `fsync` with
/// more commits instead.
pub(crate) const RECORD_MAX: u64 = 8 << 20;
/// The active file's length past which a `fsync` commits instead of logging.
pub(crate) const LOG_MAX: u64 = 256 << 20;
/// Zeros each file is filled with at every mount at most, so that records overwrite blocks
/// already on disk (see `IntentLog::trim`); at most a 64th of the free space.
pub(crate) const PREFILL_MAX: u64 = 8 << 20;
/// How far past a record an append that outgrows its file's written blocks writes zeros:
/// the `fdatasync` after it then pays for the file's growth once for this many bytes of
/// records, rather than at every record (an `fdatasync` that extends a file on ext4 costs
/// about half as much again as one that overwrites in place).
const ZERO_AHEAD: u64 = 2 << 20;
/// A drain is due once the active file holds this much...
const DRAIN_BYTES: u64 = 64 << 20;
/// ... or its first record is this old: what the log holds is committed within about this.
pub(crate) const DRAIN_AGE: Duration = Duration::from_secs(1);

/// One `fsync`'s changes to one file since the buffer's previous record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub seq: u64,
    pub node: u64,
    /// The committed content the buffer started from (`None`: empty).
    pub base: Option<Hash>,
    /// Time of the last write, the committed mtime.
    pub written_at: Timestamp,
    /// The smallest size the file was cut to since the previous record.
    pub cut: Option<u64>,
    pub size: u64,
    /// Written ranges, each with its bytes, disjoint and in order.
    pub ranges: Vec<(u64, Vec<u8>)>,
}

impl Record {
    fn encode(&self) -> Vec<u8> {
        let data: usize = self.ranges.iter().map(|(_, b)| 12 + b.len()).sum();
        let mut body = Vec::with_capacity(80 + data);
        body.extend_from_slice(&self.seq.to_le_bytes());
        body.extend_from_slice(&self.node.to_le_bytes());
        let flags = u8::from(self.base.is_some()) | (u8::from(self.cut.is_some()) << 1);
        body.push(flags);
        if let Some(h) = &self.base {
            body.extend_from_slice(h);
        }
        body.extend_from_slice(&self.written_at.secs.to_le_bytes());
        body.extend_from_slice(&self.written_at.nanos.to_le_bytes());
        if let Some(c) = self.cut {
            body.extend_from_slice(&c.to_le_bytes());
        }
        body.extend_from_slice(&self.size.to_le_bytes());
        body.extend_from_slice(&(self.ranges.len() as u32).to_le_bytes());
        for (at, bytes) in &self.ranges {
            body.extend_from_slice(&at.to_le_bytes());
            body.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            body.extend_from_slice(bytes);
        }
        frame(WRITES_MAGIC, &body)
    }

    /// A body that passed its checksum; `None` if it is not a well-formed record anyway.
    fn decode(body: &[u8]) -> Option<Record> {
        let mut r = Reader(body);
        let seq = r.u64()?;
        let node = r.u64()?;
        let flags = r.take(1)?[0];
        if flags & !3 != 0 {
            return None;
        }
        let base = if flags & 1 != 0 { Some(Hash::try_from(r.take(32)?).ok()?) } else { None };
        let secs = i64::from_le_bytes(r.take(8)?.try_into().ok()?);
        let nanos = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
        if nanos >= 1_000_000_000 {
            return None;
        }
        let cut = if flags & 2 != 0 { Some(r.u64()?) } else { None };
        let size = r.u64()?;
        if size > FILE_SIZE_MAX || cut.is_some_and(|c| c > FILE_SIZE_MAX) {
            return None;
        }
        let n = u32::from_le_bytes(r.take(4)?.try_into().ok()?);
        let mut ranges = Vec::new();
        let mut last_end = 0;
        for _ in 0..n {
            let at = r.u64()?;
            let len = u64::from(u32::from_le_bytes(r.take(4)?.try_into().ok()?));
            let end = at.checked_add(len)?;
            if at < last_end || end > size || len == 0 {
                return None;
            }
            last_end = end;
            ranges.push((at, r.take(len as usize)?.to_vec()));
        }
        r.0.is_empty().then_some(Record {
            seq,
            node,
            base,
            written_at: Timestamp { secs, nanos },
            cut,
            size,
            ranges,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The records of one file's bytes, up to the first that is not whole and sound.
pub(crate) fn parse(bytes: &[u8]) -> Vec<Record> {
    parse_to_end(bytes).0
}

/// `parse`, and where the records it returns end. The store's redo records in between are
/// skipped: `Vault::open` replays them.
fn parse_to_end(bytes: &[u8]) -> (Vec<Record>, u64) {
    let mut out = Vec::new();
    let (frames, mut end) = frames(bytes);
    for f in frames {
        if f.magic == WRITES_MAGIC {
            let Some(record) = Record::decode(f.body) else {
                end = f.at;
                break;
            };
            out.push(record);
        }
    }
    (out, end)
}

/// Where an appended record ends, for `IntentLog::sync`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket {
    file: usize,
    end: u64,
}

/// A log file a drain is to empty, and the nodes its records name.
#[derive(Debug)]
pub(crate) struct Rotation {
    pub file: usize,
    pub nodes: HashSet<u64>,
}

#[derive(Debug)]
struct LogState {
    active: usize,
    end: [u64; 2],
    /// Each file's length whose blocks hold written bytes (zeros, or records of any age): a
    /// record within it overwrites in place.
    written: [u64; 2],
    next_seq: u64,
    nodes: [HashSet<u64>; 2],
    first_at: [Option<Instant>; 2],
}

#[derive(Debug)]
pub(crate) struct IntentLog {
    files: [File; 2],
    state: Mutex<LogState>,
    /// How far each file is known durable; held across the `fdatasync` that moves it.
    synced: Mutex<[u64; 2]>,
    faults: Option<Arc<dyn FaultInjector>>,
    /// Each file's length when it opened as nothing but zeros (0 otherwise), for `trim_all`.
    zeroed: [u64; 2],
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn check(faults: Option<&Arc<dyn FaultInjector>>, step: IoStep) -> io::Result<()> {
    faults.map_or(Ok(()), |f| f.check(step))
}

/// Writes zeros over `from..to` of `file`.
fn write_zeros(file: &File, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64);
        file.write_all_at(&ZEROS[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

impl IntentLog {
    /// Opens (creating them if need be) the two files in `dir`, and returns the records they
    /// hold in sequence order. Nothing is appended until `trim_all` empties them.
    pub(crate) fn open(
        dir: &Path,
        faults: Option<Arc<dyn FaultInjector>>,
    ) -> io::Result<(IntentLog, Vec<Record>)> {
        let mut created = false;
        let mut open = |name: &str| -> io::Result<(File, Vec<Record>, u64, u64)> {
            let path = dir.join(name);
            created |= !path.exists();
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            let len = f.metadata()?.len();
            let mut bytes = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
            f.read_exact_at(&mut bytes, 0)?;
            let (records, end) = parse_to_end(&bytes);
            let zeroed = if bytes.iter().all(|&b| b == 0) { len } else { 0 };
            Ok((f, records, end, zeroed))
        };
        let (f0, r0, len0, zeroed0) = open(LOG_FILES[0])?;
        let (f1, r1, len1, zeroed1) = open(LOG_FILES[1])?;
        if created {
            File::open(dir)?.sync_all()?;
        }
        let written = [f0.metadata()?.len(), f1.metadata()?.len()];
        let mut records: Vec<Record> = r0.into_iter().chain(r1).collect();
        records.sort_by_key(|r| r.seq);
        let next_seq = records.last().map_or(1, |r| r.seq + 1);
        let log = IntentLog {
            files: [f0, f1],
            state: Mutex::new(LogState {
                active: 0,
                end: [len0, len1],
                written,
                next_seq,
                nodes: [HashSet::new(), HashSet::new()],
                first_at: [None, None],
            }),
            synced: Mutex::new([len0, len1]),
            faults,
            zeroed: [zeroed0, zeroed1],
        };
        Ok((log, records))
    }

    /// The records of `node` the files hold now, in sequence order.
    pub(crate) fn records_of(&self, node: u64) -> io::Result<Vec<Record>> {
        let st = lock(&self.state);
        let mut out = Vec::new();
        for (file, &end) in self.files.iter().zip(&st.end) {
            let mut bytes = vec![0u8; usize::try_from(end).map_err(io::Error::other)?];
            file.read_exact_at(&mut bytes, 0)?;
            out.extend(parse(&bytes).into_iter().filter(|r| r.node == node));
        }
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    /// Raises the next sequence number to at least `next` (what the store recorded).
    pub(crate) fn raise_next_seq(&self, next: u64) {
        let mut st = lock(&self.state);
        st.next_seq = st.next_seq.max(next);
    }

    pub(crate) fn next_seq(&self) -> u64 {
        lock(&self.state).next_seq
    }

    /// Whether a record of `bytes` (written bytes and their framing) fits.
    pub(crate) fn has_room(&self, bytes: u64) -> bool {
        let st = lock(&self.state);
        bytes <= RECORD_MAX && st.end[st.active] + bytes < LOG_MAX
    }

    /// Appends `record` under the next sequence number (written into it), not yet durable.
    pub(crate) fn append(&self, record: &mut Record) -> io::Result<Ticket> {
        let mut st = lock(&self.state);
        record.seq = st.next_seq;
        let ticket = self.write_locked(&mut st, &record.encode())?;
        st.next_seq += 1;
        st.nodes[ticket.file].insert(record.node);
        Ok(ticket)
    }

    /// Appends a record the store framed (a redo record, `Vault::sync_through_log`), not yet
    /// durable.
    pub(crate) fn append_frame(&self, frame: &[u8]) -> io::Result<Ticket> {
        let mut st = lock(&self.state);
        if st.end[st.active] + frame.len() as u64 >= LOG_MAX {
            return Err(io::Error::other("the intent log is full"));
        }
        self.write_locked(&mut st, frame)
    }

    /// Writes `frame` at the end of the active file.
    fn write_locked(&self, st: &mut LogState, frame: &[u8]) -> io::Result<Ticket> {
        let file = st.active;
        check(self.faults.as_ref(), IoStep::LogWrite)?;
        let end = st.end[file] + frame.len() as u64;
        if end > st.written[file] {
            let ahead = end + ZERO_AHEAD;
            write_zeros(&self.files[file], st.written[file], ahead)?;
            st.written[file] = ahead;
        }
        self.files[file].write_all_at(frame, st.end[file])?;
        st.end[file] = end;
        st.first_at[file].get_or_insert_with(Instant::now);
        Ok(Ticket { file, end })
    }

    /// Makes the log durable up to `ticket`: one `fdatasync` covers every record appended
    /// before it starts, so `fsync`s that arrive together share it.
    pub(crate) fn sync(&self, ticket: Ticket) -> io::Result<()> {
        let mut synced = lock(&self.synced);
        if synced[ticket.file] >= ticket.end {
            return Ok(());
        }
        let target = lock(&self.state).end[ticket.file];
        check(self.faults.as_ref(), IoStep::LogSync)?;
        self.files[ticket.file].sync_data()?;
        synced[ticket.file] = target;
        Ok(())
    }

    /// Whether the log wants a drain: its oldest record is `DRAIN_AGE` old, the active file
    /// holds `DRAIN_BYTES`, or a drain before did not finish.
    pub(crate) fn due(&self) -> bool {
        let st = lock(&self.state);
        let active = st.active;
        st.end[1 - active] > 0
            || st.end[active] >= DRAIN_BYTES
            || st.first_at[active].is_some_and(|t| t.elapsed() >= DRAIN_AGE)
    }

    /// The file a drain empties: the inactive one if a drain before left it, else the active
    /// one, which stops taking records. `None` when both are empty.
    pub(crate) fn rotate(&self) -> Option<Rotation> {
        let mut st = lock(&self.state);
        let other = 1 - st.active;
        if st.end[other] > 0 {
            return Some(Rotation { file: other, nodes: st.nodes[other].clone() });
        }
        let file = st.active;
        if st.end[file] == 0 {
            return None;
        }
        st.active = other;
        Some(Rotation { file, nodes: st.nodes[file].clone() })
    }

    /// Empties file `file` once the store holds, durably, everything its records hold: the
    /// next records overwrite them from the start. Nothing is written: a record left behind
    /// is below its node's durable floor, so no replay applies it, and a file overwritten in
    /// place is flushed without its size or extents changing, which costs a `fdatasync` far
    /// less than a growing file.
    pub(crate) fn trim(&self, file: usize) -> io::Result<()> {
        let mut synced = lock(&self.synced);
        let mut st = lock(&self.state);
        if file == st.active && st.end[file] > 0 {
            return Err(io::Error::other("the intent log's active file is not trimmed"));
        }
        st.end[file] = 0;
        st.nodes[file].clear();
        st.first_at[file] = None;
        synced[file] = 0;
        Ok(())
    }

    /// Empties both files for good (after a replay), and fills each with `prefill` zeros,
    /// so that records are written over blocks already on disk: nothing may be appended
    /// meanwhile. A file that opened as nothing but zeros, and enough of them, is left as it
    /// is: a mount after one that logged nothing writes nothing.
    pub(crate) fn trim_all(&self, prefill: u64) -> io::Result<()> {
        for file in [0, 1] {
            let f = &self.files[file];
            if self.zeroed[file] < prefill {
                check(self.faults.as_ref(), IoStep::LogSync)?;
                f.set_len(0)?;
                write_zeros(f, 0, prefill)?;
                f.sync_data()?;
            }
            let mut st = lock(&self.state);
            st.written[file] = f.metadata()?.len();
            st.active = 1 - file;
            drop(st);
            self.trim(file)?;
        }
        lock(&self.state).active = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(seq: u64, ranges: Vec<(u64, Vec<u8>)>) -> Record {
        let size = ranges.last().map_or(10, |(at, b)| at + b.len() as u64 + 3);
        Record {
            seq,
            node: 40 + seq,
            base: seq.is_multiple_of(2).then_some([seq as u8; 32]),
            written_at: Timestamp { secs: 1_700_000_000 + seq.cast_signed(), nanos: 5 },
            cut: seq.is_multiple_of(3).then_some(seq),
            size,
            ranges,
        }
    }

    fn frames(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for r in records {
            bytes.extend(r.encode());
            ends.push(bytes.len());
        }
        (bytes, ends)
    }

    fn sample() -> Vec<Record> {
        (1..=5)
            .map(|i| record(i, vec![(i, vec![i as u8; 3 * i as usize]), (100, vec![7; 9])]))
            .collect()
    }

    #[test]
    fn records_round_trip() {
        let records = sample();
        let (bytes, _) = frames(&records);
        assert_eq!(parse(&bytes), records);
    }

    /// A crash can leave any prefix of the appended bytes: exactly the whole records in it
    /// are read back.
    #[test]
    fn every_prefix_gives_its_whole_records() {
        let records = sample();
        let (bytes, ends) = frames(&records);
        for cut in 0..=bytes.len() {
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(parse(&bytes[..cut]), records[..whole], "prefix of {cut} bytes");
        }
    }

    /// A damaged byte anywhere in a record ends the log there: the records before it stay.
    #[test]
    fn a_damaged_record_ends_the_log() {
        let records = sample();
        let (bytes, ends) = frames(&records);
        for at in 0..bytes.len() {
            let mut torn = bytes.clone();
            torn[at] ^= 0x5a;
            let before = ends.iter().filter(|&&e| e <= at).count();
            assert_eq!(parse(&torn), records[..before], "byte {at} damaged");
        }
    }

    proptest! {
        /// Garbage never panics and never reads as a record whose ranges are out of order or
        /// past its size.
        #[test]
        fn garbage_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            for r in parse(&bytes) {
                let mut last = 0;
                for (at, b) in &r.ranges {
                    prop_assert!(*at >= last && at + b.len() as u64 <= r.size);
                    last = at + b.len() as u64;
                }
            }
        }

        /// A well-formed frame whose body is garbage is refused by the decoder, not trusted
        /// for having a good checksum.
        #[test]
        fn checksummed_garbage_is_refused(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let frame = frame(WRITES_MAGIC, &body);
            for r in parse(&frame) {
                prop_assert!(r.size <= FILE_SIZE_MAX);
                prop_assert_eq!(r.encode(), frame.clone());
            }
        }
    }

    #[test]
    fn appends_sync_rotate_and_trim() {
        let dir = tempfile::tempdir().unwrap();
        let (log, old) = IntentLog::open(dir.path(), None).unwrap();
        assert!(old.is_empty());
        let mut tickets = Vec::new();
        for mut r in sample() {
            tickets.push(log.append(&mut r).unwrap());
        }
        std::thread::scope(|s| {
            for t in &tickets {
                s.spawn(|| log.sync(*t).unwrap());
            }
        });
        let rot = log.rotate().unwrap();
        assert_eq!(rot.file, 0);
        assert_eq!(rot.nodes, sample().iter().map(|r| r.node).collect());
        let mut later = record(0, vec![(0, vec![1; 4])]);
        let t = log.append(&mut later).unwrap();
        log.sync(t).unwrap();
        assert_eq!(later.seq, 6);
        drop(log);
        let (log, read) = IntentLog::open(dir.path(), None).unwrap();
        assert_eq!(read.len(), 6);
        assert_eq!(read.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(log.next_seq(), 7);
        log.trim_all(PREFILL_MAX).unwrap();
        drop(log);
        let (log, read) = IntentLog::open(dir.path(), None).unwrap();
        assert!(read.is_empty());
        assert!(log.rotate().is_none());
    }

    #[test]
    fn a_record_past_the_written_blocks_writes_zeros_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = IntentLog::open(dir.path(), None).unwrap();
        log.trim_all(0).unwrap();
        let len = |f: &str| std::fs::metadata(dir.path().join(f)).unwrap().len();
        assert_eq!(len("intent.0"), 0);
        let mut first = record(0, vec![(0, vec![7; 100])]);
        let t = log.append(&mut first).unwrap();
        log.sync(t).unwrap();
        let frame = first.encode().len() as u64;
        assert_eq!(len("intent.0"), frame + ZERO_AHEAD);
        // Records within the zeros overwrite them: the file does not grow.
        let mut second = record(0, vec![(100, vec![8; 100])]);
        log.sync(log.append(&mut second).unwrap()).unwrap();
        assert_eq!(len("intent.0"), frame + ZERO_AHEAD);
        drop(log);
        let (_, read) = IntentLog::open(dir.path(), None).unwrap();
        assert_eq!(read, vec![first, second]);
    }
}
