//! The fragment index of one video stream: per fragment, everything a read by time
//! needs without touching media bytes, and the pure queries over it.
//!
//! An [`IndexEntry`] holds the fragment's log offset (the suffix of its fragment
//! number, `fragments::fragment_number`), its server timestamp (the log entry's own,
//! taken on arrival), its producer timestamp, duration, size, frame count, and an
//! identity of the stream header (EBML header, Info and Tracks) in force for it. On
//! disk an entry is one fixed [`ROW_LEN`]-byte row of a second log beside the fragment
//! log (`VideoService` keeps it crash-consistent with the fragments; see
//! `docs/video.md`). Rows start with a version byte; readers refuse versions they do
//! not know, which makes the index "unreadable" and has it rebuilt from the fragments.
//!
//! Two orders are kept in memory:
//! - offset order, which is also server-time order (the store stamps each entry
//!   `max(now, previous)`, so server timestamps never decrease along the log);
//! - producer order: by producer start, then by offset. Producer clocks may go
//!   backwards, jump or overlap; every such fragment is kept and listed, and fragments
//!   with equal producer starts are listed in arrival order. The order of two given
//!   fragments never changes as others arrive or expire.
//!
//! Queries ([`FragmentIndex::list`], [`FragmentIndex::first_at_or_after`]) are pure: no
//! I/O, no clock. Timestamps are milliseconds since the Unix epoch. Range rules follow
//! the Kinesis Video Streams archived-media API reference: ListFragments returns
//! fragments whose *start* lies in `[start, end]` (both inclusive, "FragmentSelector");
//! playback reads want fragments *overlapping* `[start, end)`.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::fragments::{FragmentMeta, fragment_number, parse_fragment_number};
use super::frozen::Frozen;

/// The row version written. Version 2 added `run_start`; version 1 rows (without it)
/// still read, their run start derived again from the entries before them.
pub(super) const ROW_VERSION: u8 = 2;
/// Bytes of one on-disk row (version 2).
pub const ROW_LEN: usize = ROW_LEN_V1 + 8;
/// Bytes of a version 1 row.
const ROW_LEN_V1: usize = 1 + 8 + 8 + 8 + 8 + 8 + 4 + 8;

/// What the index holds about one fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Log offset of the fragment (the suffix of its fragment number).
    pub offset: u64,
    /// Arrival time, as stamped by the store.
    pub server_ms: i64,
    /// The producer's timestamp for the fragment, as sent.
    pub producer_ms: i64,
    /// From the first frame to the end of the last.
    pub duration_ms: u64,
    /// Cluster bytes (what ListFragments reports as FragmentSizeInBytes).
    pub size: u64,
    pub frame_count: u32,
    /// Identity of the stream header in force ([`header_identity`]).
    pub header_id: u64,
    /// The offset of the first fragment of the run of consecutive fragments with this
    /// header: a stable name for their shared init segment (HLS `EXT-X-MAP`, DASH
    /// `Initialization`). Set by [`FragmentIndex::insert`] from the entry before.
    pub run_start: u64,
}

/// A stable 64-bit identity of a stream header (EBML header, Info and Tracks): equal
/// headers give equal identities, across restarts and builds.
pub fn header_identity(ebml_header: &[u8], info_and_tracks: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update((ebml_header.len() as u64).to_le_bytes());
    h.update(ebml_header);
    h.update(info_and_tracks);
    let d = h.finalize();
    u64::from_le_bytes(d[..8].try_into().unwrap_or_default())
}

impl IndexEntry {
    /// The entry of a stored fragment.
    pub fn of_fragment(offset: u64, server_ms: i64, meta: &FragmentMeta, size: usize) -> Self {
        IndexEntry {
            offset,
            server_ms,
            producer_ms: meta.producer_ts_ms,
            duration_ms: meta.duration_ms,
            size: size as u64,
            frame_count: meta.frame_count,
            header_id: header_identity(&meta.ebml_header, &meta.info_and_tracks),
            run_start: offset,
        }
    }

    /// The on-disk row.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(ROW_LEN);
        out.put_u8(ROW_VERSION);
        out.put_u64_le(self.offset);
        out.put_i64_le(self.server_ms);
        out.put_i64_le(self.producer_ms);
        out.put_u64_le(self.duration_ms);
        out.put_u64_le(self.size);
        out.put_u32_le(self.frame_count);
        out.put_u64_le(self.header_id);
        out.put_u64_le(self.run_start);
        debug_assert_eq!(out.len(), ROW_LEN);
        out.freeze()
    }

    /// Reads a row (version 1 or 2); `None` for a row of another length or an unknown
    /// version. A version 1 row's run start is its own offset until
    /// [`FragmentIndex::insert`] derives it.
    pub fn decode(row: &[u8]) -> Option<Self> {
        let version = *row.first()?;
        match (version, row.len()) {
            (1, ROW_LEN_V1) | (ROW_VERSION, ROW_LEN) => {}
            _ => return None,
        }
        let mut b = &row[1..];
        let mut e = IndexEntry {
            offset: b.get_u64_le(),
            server_ms: b.get_i64_le(),
            producer_ms: b.get_i64_le(),
            duration_ms: b.get_u64_le(),
            size: b.get_u64_le(),
            frame_count: b.get_u32_le(),
            header_id: b.get_u64_le(),
            run_start: 0,
        };
        e.run_start = if version == 1 {
            e.offset
        } else {
            b.get_u64_le()
        };
        Some(e)
    }

    /// The entry's start on `base`.
    pub fn start_ms(&self, base: TimeBase) -> i64 {
        match base {
            TimeBase::Server => self.server_ms,
            TimeBase::Producer => self.producer_ms,
        }
    }

    /// One past the entry's end on `base`.
    fn end_ms(&self, base: TimeBase) -> i64 {
        self.start_ms(base)
            .saturating_add(i64::try_from(self.duration_ms).unwrap_or(i64::MAX))
    }
}

/// Which clock a query is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBase {
    /// Arrival time at the server; listed in offset order.
    Server,
    /// The producer's timestamps; listed by producer start, then offset.
    Producer,
}

/// Which fragments a time range selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRule {
    /// Start within `[start, end]`, both ends inclusive (ListFragments).
    StartWithin,
    /// Overlapping `[start, end)`: starts before `end` and ends after `start`; a
    /// fragment of zero duration overlaps when `start <= its start < end`.
    Overlapping,
}

/// A time range and how it selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start_ms: i64,
    pub end_ms: i64,
    pub rule: RangeRule,
}

impl TimeRange {
    /// A range given in seconds since the epoch (as the API sends timestamps), to the
    /// nearest millisecond.
    pub fn of_seconds(start: f64, end: f64, rule: RangeRule) -> Self {
        TimeRange {
            start_ms: (start * 1000.0).round() as i64,
            end_ms: (end * 1000.0).round() as i64,
            rule,
        }
    }

    fn selects(&self, e: &IndexEntry, base: TimeBase) -> bool {
        let s = e.start_ms(base);
        match self.rule {
            RangeRule::StartWithin => self.start_ms <= s && s <= self.end_ms,
            RangeRule::Overlapping => {
                s < self.end_ms && (e.end_ms(base) > self.start_ms || s >= self.start_ms)
            }
        }
    }
}

/// Where a listing resumes: the first entry not yet returned, as its position in the
/// listing's order (for producer order, its producer start and offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub start_ms: i64,
    pub offset: u64,
}

/// What a ListFragments continuation token says: where to resume, and the listing it
/// continues (its clock and its range), so that a request carrying only the token (as
/// the API allows) continues the same listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedToken {
    pub offset: u64,
    /// The producer start to resume at (producer order); `None` in a server-order
    /// token, or in a plain fragment number.
    pub start_ms: Option<i64>,
    /// The range of the listing, if it had one.
    pub range: Option<TimeRange>,
}

impl Cursor {
    /// The continuation token of this cursor on `base` over `range`: the fragment
    /// number; for producer order also the producer start (`<number>-<ms>`), so that a
    /// listing resumes at the same place even after the fragment itself has expired;
    /// then the range, if any (`:<start ms>:<end ms>`, and `:o` for an overlapping
    /// range).
    pub fn token(&self, stream_id: u64, base: TimeBase, range: Option<&TimeRange>) -> String {
        let number = fragment_number(stream_id, self.offset);
        let mut out = match base {
            TimeBase::Server => number,
            TimeBase::Producer => format!("{number}-{}", self.start_ms),
        };
        if let Some(r) = range {
            out.push_str(&format!(":{}:{}", r.start_ms, r.end_ms));
            if r.rule == RangeRule::Overlapping {
                out.push_str(":o");
            }
        }
        out
    }

    /// Reads a token of `stream_id` written by [`Cursor::token`]; `None` if it is not
    /// one. A plain fragment number on producer order resumes at that fragment's
    /// producer start, looked up by the caller (`start_ms` is then `None`).
    pub fn parse(stream_id: u64, text: &str) -> Option<ParsedToken> {
        let mut parts = text.split(':');
        let head = parts.next()?;
        let range = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (None, ..) => None,
            (Some(a), Some(b), rule, None) => Some(TimeRange {
                start_ms: a.parse::<i64>().ok()?,
                end_ms: b.parse::<i64>().ok()?,
                rule: match rule {
                    None => RangeRule::StartWithin,
                    Some("o") => RangeRule::Overlapping,
                    Some(_) => return None,
                },
            }),
            _ => return None,
        };
        let (number, start_ms) = match head.split_once('-') {
            Some((n, ms)) => (n, Some(ms.parse::<i64>().ok()?)),
            None => (head, None),
        };
        let (id, offset) = parse_fragment_number(number)?;
        (id == stream_id).then_some(ParsedToken {
            offset,
            start_ms,
            range,
        })
    }
}

/// The fragment index of one stream (see the module doc).
///
/// The entries are a virtual sequence in offset order: first the live rows of a
/// checkpoint read in place ([`Frozen`], when the index was loaded from one), then the
/// entries added since, in memory. Queries binary-search the whole sequence, so a
/// loaded index answers without having decoded its checkpoint; an insert that would
/// change the checkpoint's rows (a replacement, or a row filling a hole among them)
/// first copies them into memory ("thaws" them), once.
#[derive(Debug, Default, Clone)]
pub struct FragmentIndex {
    frozen: Option<FrozenPart>,
    /// The entries after the frozen rows, in offset order (= server-time order).
    entries: VecDeque<IndexEntry>,
    /// (producer start, offset) of every entry of `entries`, sorted: the producer
    /// order (the frozen rows carry their own). A sorted vector rather than a tree:
    /// producer clocks mostly run forwards, so an append is usually a push; one out of
    /// order moves the entries after it.
    by_producer: Vec<(i64, u64)>,
    /// The longest duration ever indexed: how far before a range's start an
    /// overlapping fragment may begin. Never lowered, so it only ever widens a scan.
    max_duration_ms: i64,
}

/// The live rows `[from, to)` of a checkpoint: retention trims the front, a log that
/// lost its tail the back.
#[derive(Debug, Clone)]
struct FrozenPart {
    rows: Arc<Frozen>,
    from: usize,
    to: usize,
}

impl FrozenPart {
    fn len(&self) -> usize {
        self.to - self.from
    }

    /// The offsets of the live rows: `[first, last]`.
    fn span(&self) -> (u64, u64) {
        (self.rows.offset(self.from), self.rows.offset(self.to - 1))
    }

    /// Whether a producer-order key names a live row.
    fn live(&self, offset: u64) -> bool {
        let (first, last) = self.span();
        (first..=last).contains(&offset)
    }
}

/// Two sorted sequences of producer keys, merged.
struct Merge<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<A, B> Iterator for Merge<A, B>
where
    A: Iterator<Item = (i64, u64)>,
    B: Iterator<Item = (i64, u64)>,
{
    type Item = (i64, u64);
    fn next(&mut self) -> Option<(i64, u64)> {
        match (self.a.peek(), self.b.peek()) {
            (Some(x), Some(y)) if x <= y => self.a.next(),
            (Some(_), Some(_)) => self.b.next(),
            (Some(_), None) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

impl FragmentIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// An index of `rows` in any order (a later row of an offset replaces an earlier
    /// one), built in bulk: one sort, then both orders at once. The same entries as
    /// inserting the rows one by one, in far less time for a large index.
    pub fn from_rows(mut rows: Vec<IndexEntry>) -> Self {
        // Stable: of equal offsets, the last row written comes last. A checkpoint's
        // rows are in order already: no sort then.
        if !rows.is_sorted_by_key(|e| e.offset) {
            rows.sort_by_key(|e| e.offset);
        }
        let mut entries: VecDeque<IndexEntry> = VecDeque::with_capacity(rows.len());
        let mut max_duration_ms = 0i64;
        for mut e in rows {
            if entries.back().is_some_and(|b| b.offset == e.offset) {
                entries.pop_back();
            }
            if e.run_start >= e.offset {
                e.run_start = match entries.back() {
                    Some(prev) if prev.offset + 1 == e.offset && prev.header_id == e.header_id => {
                        prev.run_start
                    }
                    _ => e.offset,
                };
            }
            max_duration_ms = max_duration_ms.max(i64::try_from(e.duration_ms).unwrap_or(i64::MAX));
            entries.push_back(e);
        }
        let mut by_producer: Vec<(i64, u64)> =
            entries.iter().map(|e| (e.producer_ms, e.offset)).collect();
        if !by_producer.is_sorted() {
            by_producer.sort_unstable();
        }
        FragmentIndex {
            frozen: None,
            entries,
            by_producer,
            max_duration_ms,
        }
    }

    /// An index of a checkpoint read in place, then `rows` (written after it, in any
    /// order; a later row of an offset replaces an earlier one) inserted one by one.
    /// Nothing of the checkpoint is copied unless a row changes one of its rows.
    pub fn from_frozen(frozen: Arc<Frozen>, mut rows: Vec<IndexEntry>) -> Self {
        let mut index = FragmentIndex {
            max_duration_ms: frozen.max_duration_ms(),
            frozen: (!frozen.is_empty()).then(|| FrozenPart {
                from: 0,
                to: frozen.len(),
                rows: frozen,
            }),
            ..Self::default()
        };
        rows.sort_by_key(|e| e.offset);
        for e in rows {
            index.insert(e);
        }
        index
    }

    pub fn len(&self) -> usize {
        self.frozen_len() + self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether part of the index is still read in place from a checkpoint.
    pub fn is_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    fn frozen_len(&self) -> usize {
        self.frozen.as_ref().map_or(0, FrozenPart::len)
    }

    /// Entry `i` of the virtual sequence (offset order).
    fn at(&self, i: usize) -> IndexEntry {
        match &self.frozen {
            Some(f) if i < f.len() => f.rows.entry(f.from + i),
            _ => self.entries[i - self.frozen_len()],
        }
    }

    fn offset_at(&self, i: usize) -> u64 {
        match &self.frozen {
            Some(f) if i < f.len() => f.rows.offset(f.from + i),
            _ => self.entries[i - self.frozen_len()].offset,
        }
    }

    /// The first position whose entry fails `pred` (entries for which it holds come
    /// first), by binary search.
    fn partition_point(&self, pred: impl Fn(&IndexEntry) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.at(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The entries from position `i` on, in offset order.
    fn iter_from(&self, i: usize) -> impl Iterator<Item = IndexEntry> + '_ {
        let nf = self.frozen_len();
        let frozen = self
            .frozen
            .iter()
            .flat_map(move |f| (f.from + i.min(nf)..f.to).map(|r| f.rows.entry(r)));
        frozen.chain(
            self.entries
                .range(i.saturating_sub(nf).min(self.entries.len())..)
                .copied(),
        )
    }

    /// The producer order from the first key not below `key`.
    fn producer_from(&self, key: (i64, u64)) -> impl Iterator<Item = (i64, u64)> + '_ {
        let frozen = self.frozen.iter().flat_map(move |f| {
            (f.rows.key_partition(key)..f.rows.len())
                .map(|j| f.rows.key(j))
                .filter(|k| f.live(k.1))
        });
        let from = self.by_producer.partition_point(|k| *k < key);
        Merge {
            a: frozen.peekable(),
            b: self.by_producer[from..].iter().copied().peekable(),
        }
    }

    /// The last producer key below `key`, if any.
    fn producer_before(&self, key: (i64, u64)) -> Option<(i64, u64)> {
        let frozen = self.frozen.as_ref().and_then(|f| {
            (0..f.rows.key_partition(key))
                .rev()
                .map(|j| f.rows.key(j))
                .find(|k| f.live(k.1))
        });
        let i = self.by_producer.partition_point(|k| *k < key);
        let tail = i.checked_sub(1).map(|i| self.by_producer[i]);
        frozen.max(tail)
    }

    /// Copies the frozen rows into memory: from here on the index is all in memory.
    fn thaw(&mut self) {
        let Some(f) = self.frozen.take() else {
            return;
        };
        let mut entries = VecDeque::with_capacity(f.len() + self.entries.len());
        entries.extend((f.from..f.to).map(|r| f.rows.entry(r)));
        entries.append(&mut self.entries);
        self.entries = entries;
        let frozen_keys = (0..f.rows.len())
            .map(|j| f.rows.key(j))
            .filter(|k| f.live(k.1));
        let tail = std::mem::take(&mut self.by_producer);
        self.by_producer = Merge {
            a: frozen_keys.peekable(),
            b: tail.into_iter().peekable(),
        }
        .collect();
    }

    /// The first offset and one past the last, when not empty.
    pub fn offsets(&self) -> Option<(u64, u64)> {
        if self.is_empty() {
            return None;
        }
        Some((self.offset_at(0), self.offset_at(self.len() - 1) + 1))
    }

    /// Every entry, in offset order.
    pub fn entries(&self) -> impl Iterator<Item = IndexEntry> + '_ {
        self.iter_from(0)
    }

    /// The producer order of every entry: (producer start, offset), sorted.
    pub fn producer_keys(&self) -> impl Iterator<Item = (i64, u64)> + '_ {
        self.producer_from((i64::MIN, 0))
    }

    /// The longest duration indexed.
    pub fn max_duration_ms(&self) -> i64 {
        self.max_duration_ms
    }

    /// The entry of `offset`, if indexed.
    pub fn get(&self, offset: u64) -> Option<IndexEntry> {
        let i = self.partition_point(|e| e.offset < offset);
        (i < self.len() && self.offset_at(i) == offset).then(|| self.at(i))
    }

    /// Adds an entry (replacing one of the same offset) and returns it as stored.
    /// Appends in offset order are O(log n); an entry older than the newest is placed
    /// where it belongs. An entry that names itself its run's start continues the run
    /// of the entry just before it (the previous offset, the same header).
    pub fn insert(&mut self, mut entry: IndexEntry) -> IndexEntry {
        if entry.run_start >= entry.offset {
            entry.run_start = entry.offset;
            let before = self.partition_point(|e| e.offset < entry.offset);
            if let Some(prev) = before.checked_sub(1).map(|i| self.at(i))
                && prev.offset + 1 == entry.offset
                && prev.header_id == entry.header_id
            {
                entry.run_start = prev.run_start;
            }
        }
        if let Some(f) = &self.frozen
            && entry.offset <= f.span().1
        {
            if self.get(entry.offset) == Some(entry) {
                // A row the checkpoint holds already (written again after it).
                return entry;
            }
            self.thaw();
        }
        self.max_duration_ms = self
            .max_duration_ms
            .max(i64::try_from(entry.duration_ms).unwrap_or(i64::MAX));
        match self.entries.back() {
            Some(last) if last.offset >= entry.offset => {
                match self
                    .entries
                    .binary_search_by_key(&entry.offset, |e| e.offset)
                {
                    Ok(i) => {
                        let old = std::mem::replace(&mut self.entries[i], entry);
                        self.remove_producer(old.producer_ms, old.offset);
                    }
                    Err(i) => self.entries.insert(i, entry),
                }
            }
            _ => self.entries.push_back(entry),
        }
        let key = (entry.producer_ms, entry.offset);
        match self.by_producer.last() {
            Some(last) if *last >= key => {
                if let Err(i) = self.by_producer.binary_search(&key) {
                    self.by_producer.insert(i, key);
                }
            }
            _ => self.by_producer.push(key),
        }
        entry
    }

    fn remove_producer(&mut self, producer_ms: i64, offset: u64) {
        if let Ok(i) = self.by_producer.binary_search(&(producer_ms, offset)) {
            self.by_producer.remove(i);
        }
    }

    /// The newest `n` entries, in offset order.
    pub fn latest(&self, n: usize) -> Vec<IndexEntry> {
        self.iter_from(self.len().saturating_sub(n)).collect()
    }

    /// Drops every entry before `first_offset` (retention). Returns how many.
    pub fn trim_before(&mut self, first_offset: u64) -> usize {
        let n = self.partition_point(|e| e.offset < first_offset);
        if n == 0 {
            return 0;
        }
        let nf = self.frozen_len();
        if let Some(f) = &mut self.frozen {
            f.from += n.min(nf);
            if f.from == f.to {
                self.frozen = None;
            } else if f.len() < f.rows.len() / 2 {
                // Most of the checkpoint expired: its producer order would mostly be
                // skipped; keep the rest in memory instead.
                self.thaw();
            }
        }
        if n > nf {
            self.entries.drain(..n - nf);
            self.by_producer.retain(|&(_, o)| o >= first_offset);
        }
        n
    }

    /// Drops every entry at or after `end_offset` (entries the fragment log does not
    /// hold). Returns how many.
    pub fn trim_from(&mut self, end_offset: u64) -> usize {
        let keep = self.partition_point(|e| e.offset < end_offset);
        let n = self.len() - keep;
        if n == 0 {
            return 0;
        }
        let nf = self.frozen_len();
        if keep < nf {
            if let Some(f) = &mut self.frozen {
                f.to = f.from + keep;
                if f.from == f.to {
                    self.frozen = None;
                }
            }
            self.entries.clear();
            self.by_producer.clear();
        } else {
            self.entries.truncate(keep - nf);
            self.by_producer.retain(|&(_, o)| o < end_offset);
        }
        n
    }

    /// Offset ranges in `[first, end)` with no entry, in order. Costs one step per
    /// gap and a binary search's worth per contiguous stretch, not one per entry.
    pub fn gaps(&self, first: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if first >= end {
            return out;
        }
        let lo = self.partition_point(|e| e.offset < first);
        let hi = self.partition_point(|e| e.offset < end);
        if lo == hi {
            out.push((first, end));
            return out;
        }
        let a = self.offset_at(lo);
        if a > first {
            out.push((first, a));
        }
        self.inner_gaps(lo, hi, &mut out);
        let b = self.offset_at(hi - 1) + 1;
        if b < end {
            out.push((b, end));
        }
        out
    }

    /// The gaps between consecutive entries of positions `[lo, hi)`: none when the
    /// offsets there are consecutive (their span equals their count), else bisected.
    fn inner_gaps(&self, lo: usize, hi: usize, out: &mut Vec<(u64, u64)>) {
        if hi - lo < 2 {
            return;
        }
        let (a, b) = (self.offset_at(lo), self.offset_at(hi - 1));
        if b - a == (hi - 1 - lo) as u64 {
            return;
        }
        if hi - lo == 2 {
            out.push((a + 1, b));
            return;
        }
        let mid = lo + (hi - lo) / 2;
        self.inner_gaps(lo, mid + 1, out);
        self.inner_gaps(mid, hi, out);
    }

    /// Entries selected by `range` on `base` (every entry when `range` is `None`), in
    /// the order of `base`, from `from` (inclusive; the start when `None`), at most
    /// `max`. Also returns where the next page starts when more entries follow.
    pub fn list(
        &self,
        base: TimeBase,
        range: Option<TimeRange>,
        from: Option<Cursor>,
        max: usize,
    ) -> (Vec<IndexEntry>, Option<Cursor>) {
        let mut out = Vec::new();
        let push = |e: IndexEntry, out: &mut Vec<IndexEntry>| -> Option<Cursor> {
            if range.is_some_and(|r| !r.selects(&e, base)) {
                return None;
            }
            if out.len() == max {
                return Some(Cursor {
                    start_ms: e.start_ms(base),
                    offset: e.offset,
                });
            }
            out.push(e);
            None
        };
        match base {
            TimeBase::Server => {
                // Server timestamps never decrease along the log: binary searches find
                // the first candidate, and the scan stops past the range's end.
                let mut i = from.map_or(0, |c| self.partition_point(|e| e.offset < c.offset));
                if let Some(r) = range {
                    let lo = match r.rule {
                        RangeRule::StartWithin => r.start_ms,
                        RangeRule::Overlapping => r.start_ms.saturating_sub(self.max_duration_ms),
                    };
                    i = i.max(self.partition_point(|e| e.server_ms < lo));
                }
                for e in self.iter_from(i) {
                    if range.is_some_and(|r| past_end(&r, e.server_ms)) {
                        break;
                    }
                    if let Some(next) = push(e, &mut out) {
                        return (out, Some(next));
                    }
                }
            }
            TimeBase::Producer => {
                let mut lo = from.map_or((i64::MIN, 0), |c| (c.start_ms, c.offset));
                if let Some(r) = range {
                    let start = match r.rule {
                        RangeRule::StartWithin => r.start_ms,
                        RangeRule::Overlapping => r.start_ms.saturating_sub(self.max_duration_ms),
                    };
                    lo = lo.max((start, 0));
                }
                for (start, offset) in self.producer_from(lo) {
                    if range.is_some_and(|r| past_end(&r, start)) {
                        break;
                    }
                    let Some(e) = self.get(offset) else {
                        continue;
                    };
                    if let Some(next) = push(e, &mut out) {
                        return (out, Some(next));
                    }
                }
            }
        }
        (out, None)
    }

    /// Entries in the order of `base`, from the one just before `from` (when there is
    /// one) on: what a reader walking a stretch of the stream needs to judge the first
    /// entry against its predecessor. `from` need not be stored (it may have expired).
    pub fn ordered_from(
        &self,
        base: TimeBase,
        from: Cursor,
    ) -> Box<dyn Iterator<Item = IndexEntry> + '_> {
        match base {
            TimeBase::Server => {
                let i = self.partition_point(|e| e.offset < from.offset);
                Box::new(self.iter_from(i.saturating_sub(1)))
            }
            TimeBase::Producer => {
                let key = (from.start_ms, from.offset);
                let start = self.producer_before(key).unwrap_or(key);
                Box::new(
                    self.producer_from(start)
                        .filter_map(|(_, offset)| self.get(offset)),
                )
            }
        }
    }

    /// The first entry starting at or after `at_ms` on `base`: on server time the
    /// first to arrive at or after it; on producer time the one with the earliest
    /// producer start at or after it (ties: the first to arrive).
    pub fn first_at_or_after(&self, base: TimeBase, at_ms: i64) -> Option<IndexEntry> {
        match base {
            TimeBase::Server => {
                let i = self.partition_point(|e| e.server_ms < at_ms);
                (i < self.len()).then(|| self.at(i))
            }
            TimeBase::Producer => {
                let (_, offset) = self.producer_from((at_ms, 0)).next()?;
                self.get(offset)
            }
        }
    }
}

/// Whether an entry starting at `start` (and every later one in the listing's order)
/// lies past the end of `r`.
fn past_end(r: &TimeRange, start: i64) -> bool {
    match r.rule {
        RangeRule::StartWithin => start > r.end_ms,
        RangeRule::Overlapping => start >= r.end_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, server_ms: i64, producer_ms: i64, duration_ms: u64) -> IndexEntry {
        IndexEntry {
            offset,
            server_ms,
            producer_ms,
            duration_ms,
            size: 100 + offset,
            frame_count: 25,
            header_id: 7,
            run_start: offset,
        }
    }

    fn range(start_ms: i64, end_ms: i64, rule: RangeRule) -> TimeRange {
        TimeRange {
            start_ms,
            end_ms,
            rule,
        }
    }

    fn offsets(v: &[IndexEntry]) -> Vec<u64> {
        v.iter().map(|e| e.offset).collect()
    }

    /// Every query of `a` and `b` answers the same.
    fn assert_same(a: &FragmentIndex, b: &FragmentIndex, seed: u64, step: usize) {
        let ctx = format!("seed {seed} step {step}");
        let ea: Vec<IndexEntry> = a.entries().collect();
        assert_eq!(ea, b.entries().collect::<Vec<_>>(), "{ctx}");
        assert_eq!(
            a.producer_keys().collect::<Vec<_>>(),
            b.producer_keys().collect::<Vec<_>>(),
            "{ctx}"
        );
        assert_eq!((a.len(), a.offsets()), (b.len(), b.offsets()), "{ctx}");
        assert_eq!(a.latest(3), b.latest(3), "{ctx}");
        for o in 0..70 {
            assert_eq!(a.get(o), b.get(o), "{ctx} get {o}");
        }
        assert_eq!(a.gaps(0, 70), b.gaps(0, 70), "{ctx}");
        assert_eq!(a.gaps(5, 33), b.gaps(5, 33), "{ctx}");
        for base in [TimeBase::Server, TimeBase::Producer] {
            for at in [-1000, 0, 150, 400, 1000, 5000] {
                assert_eq!(
                    a.first_at_or_after(base, at),
                    b.first_at_or_after(base, at),
                    "{ctx}"
                );
            }
            for (lo, hi) in [(0, 10_000), (100, 300), (350, 351), (-50, 20)] {
                for rule in [RangeRule::StartWithin, RangeRule::Overlapping] {
                    let r = Some(range(lo, hi, rule));
                    let (mut from_a, mut from_b) = (None, None);
                    // Pages of 3 until the end: the same pages and cursors.
                    for _ in 0..40 {
                        let pa = a.list(base, r, from_a, 3);
                        let pb = b.list(base, r, from_b, 3);
                        assert_eq!(pa, pb, "{ctx} {base:?} {lo}..{hi} {rule:?}");
                        if pa.1.is_none() {
                            break;
                        }
                        (from_a, from_b) = (pa.1, pb.1);
                    }
                }
            }
            for e in ea.iter().step_by(5) {
                let c = Cursor {
                    start_ms: e.start_ms(base),
                    offset: e.offset,
                };
                let wa: Vec<IndexEntry> = a.ordered_from(base, c).take(6).collect();
                let wb: Vec<IndexEntry> = b.ordered_from(base, c).take(6).collect();
                assert_eq!(wa, wb, "{ctx} ordered_from {c:?}");
            }
        }
    }

    /// An index read in place from a checkpoint answers every query as the same
    /// index held in memory, through inserts (in order, out of order, replacements,
    /// rows the checkpoint holds again), retention trims at both ends and thaws.
    #[test]
    fn a_frozen_index_answers_as_the_index_in_memory() {
        for seed in 1..=60u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let mut rows = Vec::new();
            let mut server = 0i64;
            for offset in 0..40u64 {
                if next(6) == 0 {
                    continue; // a hole: a row lost
                }
                server += next(30) as i64;
                // Producer clocks that jump, go back and repeat.
                let producer = match next(5) {
                    0 => 100,
                    1 => server - 200,
                    _ => server + next(50) as i64,
                };
                let mut e = entry(offset, server, producer, 10 + next(40));
                e.header_id = next(2);
                rows.push(e);
            }
            let cut = next(rows.len() as u64 + 1) as usize;
            let memory = FragmentIndex::from_rows(rows.clone());
            let frozen_part = FragmentIndex::from_rows(rows[..cut].to_vec());
            let bytes = Frozen::encode(
                0,
                frozen_part.max_duration_ms(),
                &frozen_part.entries().collect::<Vec<_>>(),
                &frozen_part.producer_keys().collect::<Vec<_>>(),
            );
            let f = Arc::new(Frozen::parse(Bytes::from(bytes)).unwrap());
            // The rows after the checkpoint, and some it holds again.
            let mut after = rows[cut..].to_vec();
            after.extend(
                rows[..cut]
                    .iter()
                    .rev()
                    .take(3)
                    .map(|e| frozen_part.get(e.offset).unwrap()),
            );
            let mut a = FragmentIndex::from_frozen(f, after);
            let mut b = memory;
            assert_same(&a, &b, seed, 0);
            for step in 1..=12 {
                match next(5) {
                    0 => {
                        let o = next(45);
                        assert_eq!(a.trim_before(o), b.trim_before(o), "seed {seed}");
                    }
                    1 => {
                        let o = 20 + next(30);
                        assert_eq!(a.trim_from(o), b.trim_from(o), "seed {seed}");
                    }
                    _ => {
                        let offset = next(50);
                        let e = entry(offset, 10 * offset as i64, next(500) as i64, next(60));
                        assert_eq!(a.insert(e), b.insert(e), "seed {seed}");
                    }
                }
                assert_same(&a, &b, seed, step);
            }
        }
    }

    #[test]
    fn rows_round_trip_and_refuse_unknown_versions() {
        let e = IndexEntry {
            offset: u64::MAX - 3,
            server_ms: -5,
            producer_ms: i64::MIN,
            duration_ms: 1000,
            size: 1 << 40,
            frame_count: u32::MAX,
            header_id: 0xDEAD_BEEF,
            run_start: 12,
        };
        let row = e.encode();
        assert_eq!(row.len(), ROW_LEN);
        assert_eq!(IndexEntry::decode(&row), Some(e));
        let mut other = row.to_vec();
        other[0] = 3;
        assert_eq!(IndexEntry::decode(&other), None);
        // A version 2 byte on a version 1 length (or the reverse) is refused.
        other[0] = 2;
        assert_eq!(IndexEntry::decode(&other[..ROW_LEN_V1]), None);
        other[0] = 1;
        assert_eq!(IndexEntry::decode(&other), None);
        assert_eq!(IndexEntry::decode(&row[..ROW_LEN - 1]), None);
        assert_eq!(IndexEntry::decode(&[]), None);
    }

    /// A version 1 row as the first release of the index wrote it.
    fn v1_row(e: &IndexEntry) -> Vec<u8> {
        let mut out = vec![1u8];
        out.extend(e.offset.to_le_bytes());
        out.extend(e.server_ms.to_le_bytes());
        out.extend(e.producer_ms.to_le_bytes());
        out.extend(e.duration_ms.to_le_bytes());
        out.extend(e.size.to_le_bytes());
        out.extend(e.frame_count.to_le_bytes());
        out.extend(e.header_id.to_le_bytes());
        out
    }

    #[test]
    fn version_1_rows_still_read_and_get_their_run_start() {
        let mut idx = FragmentIndex::new();
        // Offsets 0..3 with one header, 3 with another, 5 (after a gap) with the first.
        let headers = [(0, 7), (1, 7), (2, 7), (3, 9), (5, 7)];
        for (offset, header_id) in headers {
            let e = IndexEntry {
                header_id,
                ..entry(offset, 10 * offset as i64, offset as i64, 10)
            };
            let row = v1_row(&e);
            assert_eq!(row.len(), ROW_LEN_V1);
            let read = IndexEntry::decode(&row).unwrap();
            assert_eq!(
                read,
                IndexEntry {
                    run_start: offset,
                    ..e
                }
            );
            idx.insert(read);
        }
        let runs: Vec<u64> = idx.entries().map(|e| e.run_start).collect();
        assert_eq!(runs, [0, 0, 0, 3, 5]);
        // A version 2 row keeps the run start it was written with, even when the
        // run's first fragment is gone.
        let kept = IndexEntry {
            run_start: 1,
            ..entry(9, 90, 9, 10)
        };
        assert_eq!(IndexEntry::decode(&kept.encode()), Some(kept));
        assert_eq!(FragmentIndex::new().insert(kept).run_start, 1);
    }

    #[test]
    fn bulk_building_equals_inserting_one_by_one() {
        let mut rows = Vec::new();
        for i in [4u64, 0, 1, 2, 7, 3, 8, 2] {
            let header_id = if i == 7 { 9 } else { 7 };
            rows.push(IndexEntry {
                header_id,
                producer_ms: (i as i64 * 37) % 5,
                ..entry(i, 10 * i as i64, 0, 5 * i)
            });
        }
        let mut one_by_one = FragmentIndex::new();
        let mut sorted = rows.clone();
        sorted.sort_by_key(|e| e.offset);
        for e in &sorted {
            one_by_one.insert(*e);
        }
        let bulk = FragmentIndex::from_rows(rows);
        let all = |i: &FragmentIndex| i.entries().collect::<Vec<_>>();
        assert_eq!(all(&bulk), all(&one_by_one));
        assert_eq!(bulk.by_producer, one_by_one.by_producer);
        assert_eq!(bulk.max_duration_ms, one_by_one.max_duration_ms);
        let runs: Vec<u64> = bulk.entries().map(|e| e.run_start).collect();
        assert_eq!(runs, [0, 0, 0, 0, 0, 7, 8]);
    }

    #[test]
    fn latest_gives_the_newest_in_offset_order() {
        let mut idx = FragmentIndex::new();
        for i in 0..6 {
            idx.insert(entry(i, 10 * i as i64, 100 - i as i64, 10));
        }
        assert_eq!(offsets(&idx.latest(3)), [3, 4, 5]);
        assert_eq!(offsets(&idx.latest(100)).len(), 6);
        assert!(idx.latest(0).is_empty());
    }

    #[test]
    fn header_identity_tells_headers_apart() {
        assert_eq!(header_identity(b"a", b"bc"), header_identity(b"a", b"bc"));
        assert_ne!(header_identity(b"a", b"bc"), header_identity(b"ab", b"c"));
        assert_ne!(header_identity(b"a", b"bc"), header_identity(b"a", b"bd"));
    }

    #[test]
    fn server_time_listing_pages_and_ranges() {
        let mut idx = FragmentIndex::new();
        for i in 0..10 {
            idx.insert(entry(i, 1000 * i as i64, 0, 1000));
        }
        let all = idx.list(TimeBase::Server, None, None, 100).0;
        assert_eq!(offsets(&all), (0..10).collect::<Vec<_>>());
        // Start within [2000, 4000]: fragments starting at 2, 3 and 4 s.
        let r = range(2000, 4000, RangeRule::StartWithin);
        assert_eq!(
            offsets(&idx.list(TimeBase::Server, Some(r), None, 100).0),
            [2, 3, 4]
        );
        // Overlapping [2500, 4000): 2 (2..3 s) and 3.
        let r = range(2500, 4000, RangeRule::Overlapping);
        assert_eq!(
            offsets(&idx.list(TimeBase::Server, Some(r), None, 100).0),
            [2, 3]
        );
        // Pages of 4.
        let (p1, next) = idx.list(TimeBase::Server, None, None, 4);
        assert_eq!(offsets(&p1), [0, 1, 2, 3]);
        let (p2, next) = idx.list(TimeBase::Server, None, next, 4);
        assert_eq!(offsets(&p2), [4, 5, 6, 7]);
        let (p3, next) = idx.list(TimeBase::Server, None, next, 4);
        assert_eq!(offsets(&p3), [8, 9]);
        assert_eq!(next, None);
    }

    #[test]
    fn producer_order_keeps_jumps_overlaps_and_duplicates() {
        let mut idx = FragmentIndex::new();
        // Producer clock: 10 s, 11 s, back to 5 s, 5 s again (duplicate), jump +1 h.
        let producer = [10_000, 11_000, 5_000, 5_000, 3_611_000];
        for (i, p) in producer.iter().enumerate() {
            idx.insert(entry(i as u64, 100 * i as i64, *p, 1000));
        }
        let all = idx.list(TimeBase::Producer, None, None, 100).0;
        assert_eq!(offsets(&all), [2, 3, 0, 1, 4]);
        let r = range(5_000, 10_000, RangeRule::StartWithin);
        assert_eq!(
            offsets(&idx.list(TimeBase::Producer, Some(r), None, 100).0),
            [2, 3, 0]
        );
        // Paging through equal producer starts resumes exactly.
        let (p1, next) = idx.list(TimeBase::Producer, None, None, 1);
        assert_eq!(offsets(&p1), [2]);
        let c = next.unwrap();
        assert_eq!((c.start_ms, c.offset), (5_000, 3));
        let (p2, _) = idx.list(TimeBase::Producer, None, next, 2);
        assert_eq!(offsets(&p2), [3, 0]);
        assert_eq!(
            idx.first_at_or_after(TimeBase::Producer, 5_001)
                .unwrap()
                .offset,
            0
        );
        assert_eq!(
            idx.first_at_or_after(TimeBase::Producer, 0).unwrap().offset,
            2
        );
        assert_eq!(idx.first_at_or_after(TimeBase::Producer, 4_000_000), None);
        assert_eq!(
            idx.first_at_or_after(TimeBase::Server, 150).unwrap().offset,
            2
        );
        // Overlapping picks up a long fragment that began before the range.
        idx.insert(entry(5, 600, 0, 7_000));
        let r = range(6_500, 6_600, RangeRule::Overlapping);
        assert_eq!(
            offsets(&idx.list(TimeBase::Producer, Some(r), None, 100).0),
            [5]
        );
    }

    #[test]
    fn trims_replacements_and_gaps() {
        let mut idx = FragmentIndex::new();
        for i in [0, 1, 2, 5, 6, 3] {
            idx.insert(entry(i, 10 * i as i64, i as i64, 1));
        }
        assert_eq!(idx.gaps(0, 9), [(4, 5), (7, 9)]);
        idx.insert(entry(3, 30, 99, 1));
        assert_eq!(idx.len(), 6);
        assert_eq!(idx.get(3).unwrap().producer_ms, 99);
        assert_eq!(
            offsets(&idx.list(TimeBase::Producer, None, None, 10).0),
            [0, 1, 2, 5, 6, 3]
        );
        assert_eq!(idx.trim_before(2), 2);
        assert_eq!(idx.trim_from(6), 1);
        assert_eq!(idx.offsets(), Some((2, 6)));
        assert_eq!(
            offsets(&idx.list(TimeBase::Producer, None, None, 10).0),
            [2, 5, 3]
        );
        assert_eq!(idx.gaps(0, 6), [(0, 2), (4, 5)]);
    }

    #[test]
    fn tokens_round_trip() {
        let c = Cursor {
            start_ms: -42,
            offset: 17,
        };
        let t = c.token(9, TimeBase::Producer, None);
        let parsed = |offset, start_ms, range| {
            Some(ParsedToken {
                offset,
                start_ms,
                range,
            })
        };
        assert_eq!(Cursor::parse(9, &t), parsed(17, Some(-42), None));
        assert_eq!(
            Cursor::parse(9, &c.token(9, TimeBase::Server, None)),
            parsed(17, None, None)
        );
        let range = TimeRange {
            start_ms: -5,
            end_ms: 1_700_000_000_000,
            rule: RangeRule::StartWithin,
        };
        assert_eq!(
            Cursor::parse(9, &c.token(9, TimeBase::Producer, Some(&range))),
            parsed(17, Some(-42), Some(range))
        );
        let overlapping = TimeRange {
            rule: RangeRule::Overlapping,
            ..range
        };
        assert_eq!(
            Cursor::parse(9, &c.token(9, TimeBase::Server, Some(&overlapping))),
            parsed(17, None, Some(overlapping))
        );
        assert_eq!(Cursor::parse(8, &t), None);
        assert_eq!(Cursor::parse(9, "junk"), None);
        assert_eq!(Cursor::parse(9, &format!("{t}:1")), None);
        assert_eq!(Cursor::parse(9, &format!("{t}:1:2:3")), None);
        assert_eq!(Cursor::parse(9, &format!("{t}:1:2:o:o")), None);
        assert_eq!(Cursor::parse(9, &format!("{t}:x:2")), None);
        assert_eq!(
            Cursor::parse(9, &format!("{}-x", fragment_number(9, 1))),
            None
        );
    }
}
