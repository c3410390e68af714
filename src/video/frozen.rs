//! A fragment index checkpoint read in place: the rows of a stream's index as one
//! file, memory-mapped, and queried by binary search without decoding it into memory
//! first, so that the first read of a stream after a restart costs about the same
//! with 100,000 fragments behind it as with 1,000.
//!
//! The file (`checkpoint` beside the index log, written by
//! `index_log::StreamIndex::write_checkpoint` to a temporary file and renamed):
//!
//! | bytes | |
//! |---|---|
//! | 8 | magic `FIDXCKP2` |
//! | 8 | index-log offset it covers (rows before it are in it) |
//! | 8 | row count `n` |
//! | 8 | the longest duration indexed, ms |
//! | `n` × [`ROW_LEN`] | rows ([`IndexEntry::encode`], version 2) in offset order, offsets distinct |
//! | `n` × 16 | the producer order: (producer start, offset), sorted |
//! | 4 | CRC32C of everything before |
//!
//! All integers little-endian. [`Frozen::parse`] checks the length, the CRC, every
//! row's version and both orders once (one pass over mapped pages, nothing copied);
//! after that, reads are plain loads from the mapping. The file is never written in
//! place (a new checkpoint is a new file renamed over the old one), so a mapping stays
//! valid and unchanged for as long as it is held. Pure but for [`Frozen::open`].

use std::fmt;
use std::path::Path;

use bytes::Bytes;

use super::index::{IndexEntry, ROW_LEN};

/// The magic of a checkpoint this module reads and writes.
pub const MAGIC: &[u8; 8] = b"FIDXCKP2";
const HEADER_LEN: usize = 32;
const KEY_LEN: usize = 16;

/// What a checkpoint's bytes live in.
enum Backing {
    Map(memmap2::Mmap),
    Heap(Bytes),
}

impl std::ops::Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Heap(b) => b,
        }
    }
}

/// A checked checkpoint (see the module doc).
pub struct Frozen {
    data: Backing,
    count: usize,
    covers: u64,
    max_duration_ms: i64,
}

impl fmt::Debug for Frozen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frozen")
            .field("count", &self.count)
            .field("covers", &self.covers)
            .finish()
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl Frozen {
    /// Maps and checks the checkpoint at `path`: `Ok(None)` when it is missing, `Err`
    /// with the reason when it is not a checkpoint this version reads (torn, corrupt,
    /// another format). Blocking.
    pub fn open(path: &Path) -> Result<Option<Frozen>, String> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len < (HEADER_LEN + 4) as u64 {
            return Err(format!("{len} bytes: too short"));
        }
        // SAFETY: checkpoint files are never modified in place (written whole to a
        // temporary file, then renamed over the old one; removed by unlink), so the
        // mapped bytes do not change while the mapping lives.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| e.to_string())?;
        Self::parse_backing(Backing::Map(map)).map(Some)
    }

    /// A checkpoint held in memory (tests, and files read whole).
    pub fn parse(bytes: Bytes) -> Result<Frozen, String> {
        Self::parse_backing(Backing::Heap(bytes))
    }

    fn parse_backing(data: Backing) -> Result<Frozen, String> {
        let b: &[u8] = &data;
        if b.len() < HEADER_LEN + 4 || &b[..8] != MAGIC {
            return Err("not a version 2 checkpoint".into());
        }
        let covers = u64_at(b, 8);
        let count = usize::try_from(u64_at(b, 16)).map_err(|_| "row count too large")?;
        let max_duration_ms = u64_at(b, 24) as i64;
        let want = count
            .checked_mul(ROW_LEN + KEY_LEN)
            .and_then(|n| n.checked_add(HEADER_LEN + 4));
        if want != Some(b.len()) {
            return Err(format!("{} bytes for {count} rows", b.len()));
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return Err("CRC mismatch".into());
        }
        let frozen = Frozen {
            data,
            count,
            covers,
            max_duration_ms,
        };
        frozen.check()?;
        Ok(frozen)
    }

    /// Row versions, offsets strictly increasing, keys sorted, and the two orders
    /// holding the same (producer start, offset) pairs (by sums: one sequential pass,
    /// no lookups; the CRC already rules out damage, this rules out a writer's slip).
    fn check(&self) -> Result<(), String> {
        let rows = &self.data[HEADER_LEN..HEADER_LEN + self.count * ROW_LEN];
        let mut prev = None;
        let (mut rows_sum, mut keys_sum) = ((0u64, 0u64), (0u64, 0u64));
        for row in rows.chunks_exact(ROW_LEN) {
            if row[0] != super::index::ROW_VERSION {
                return Err(format!("row version {}", row[0]));
            }
            let offset = u64_at(row, 1);
            if prev.is_some_and(|p| p >= offset) {
                return Err("rows out of order".into());
            }
            prev = Some(offset);
            let producer = u64_at(row, 17);
            rows_sum = (
                rows_sum.0.wrapping_add(offset),
                rows_sum.1.wrapping_add(producer ^ offset.rotate_left(17)),
            );
        }
        let mut prev_key = None;
        for j in 0..self.count {
            let key = self.key(j);
            if prev_key.is_some_and(|p| p >= key) {
                return Err("producer order out of order".into());
            }
            prev_key = Some(key);
            let (producer, offset) = (key.0 as u64, key.1);
            keys_sum = (
                keys_sum.0.wrapping_add(offset),
                keys_sum.1.wrapping_add(producer ^ offset.rotate_left(17)),
            );
        }
        if rows_sum != keys_sum {
            return Err("the producer order does not match the rows".into());
        }
        Ok(())
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The index-log offset the checkpoint covers.
    pub fn covers(&self) -> u64 {
        self.covers
    }

    /// The longest duration of any row, ms.
    pub fn max_duration_ms(&self) -> i64 {
        self.max_duration_ms
    }

    fn row(&self, i: usize) -> &[u8] {
        let at = HEADER_LEN + i * ROW_LEN;
        &self.data[at..at + ROW_LEN]
    }

    /// Row `i` (in offset order).
    pub fn entry(&self, i: usize) -> IndexEntry {
        // Checked at parse: every row is a version 2 row of the right length.
        IndexEntry::decode(self.row(i)).unwrap_or_else(|| unreachable!("checked at parse"))
    }

    /// The offset of row `i`.
    pub fn offset(&self, i: usize) -> u64 {
        u64_at(self.row(i), 1)
    }

    /// Entry `j` of the producer order: (producer start, offset).
    pub fn key(&self, j: usize) -> (i64, u64) {
        let at = HEADER_LEN + self.count * ROW_LEN + j * KEY_LEN;
        (u64_at(&self.data, at) as i64, u64_at(&self.data, at + 8))
    }

    /// Where `offset` is among rows `[lo, hi)`: `Ok(row)` or `Err(insertion point)`.
    pub fn position(&self, offset: u64, lo: usize, hi: usize) -> Result<usize, usize> {
        let (mut lo, mut hi) = (lo, hi);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.offset(mid).cmp(&offset) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// The first producer-order entry not below `key`.
    pub fn key_partition(&self, key: (i64, u64)) -> usize {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid) < key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The bytes of a checkpoint of `entries` (in offset order, distinct offsets) and
    /// `keys` (their producer order, sorted).
    pub fn encode(
        covers: u64,
        max_duration_ms: i64,
        entries: &[IndexEntry],
        keys: &[(i64, u64)],
    ) -> Vec<u8> {
        debug_assert_eq!(entries.len(), keys.len());
        let mut out = Vec::with_capacity(HEADER_LEN + entries.len() * (ROW_LEN + KEY_LEN) + 4);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&covers.to_le_bytes());
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        out.extend_from_slice(&max_duration_ms.to_le_bytes());
        for e in entries {
            out.extend_from_slice(&e.encode());
        }
        for (start, offset) in keys {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: u64, producer_ms: i64) -> IndexEntry {
        IndexEntry {
            offset,
            server_ms: 1000 + offset as i64,
            producer_ms,
            duration_ms: 40,
            size: 10,
            frame_count: 1,
            header_id: 7,
            run_start: 0,
        }
    }

    fn sample() -> (Vec<IndexEntry>, Vec<(i64, u64)>) {
        let entries: Vec<IndexEntry> = [(2, 50), (3, 10), (5, 10), (9, 70)]
            .into_iter()
            .map(|(o, p)| entry(o, p))
            .collect();
        let mut keys: Vec<(i64, u64)> = entries.iter().map(|e| (e.producer_ms, e.offset)).collect();
        keys.sort();
        (entries, keys)
    }

    #[test]
    fn round_trips_and_answers_in_place() {
        let (entries, keys) = sample();
        let bytes = Frozen::encode(12, 40, &entries, &keys);
        let f = Frozen::parse(Bytes::from(bytes)).unwrap();
        assert_eq!((f.len(), f.covers(), f.max_duration_ms()), (4, 12, 40));
        assert_eq!((0..4).map(|i| f.entry(i)).collect::<Vec<_>>(), entries);
        assert_eq!((0..4).map(|j| f.key(j)).collect::<Vec<_>>(), keys);
        assert_eq!(f.position(5, 0, 4), Ok(2));
        assert_eq!(f.position(4, 0, 4), Err(2));
        assert_eq!(f.position(10, 0, 4), Err(4));
        assert_eq!(f.key_partition((10, 4)), 1);
        assert_eq!(f.key_partition((i64::MIN, 0)), 0);
    }

    #[test]
    fn torn_corrupt_or_inconsistent_files_are_refused() {
        let (entries, keys) = sample();
        let good = Frozen::encode(12, 40, &entries, &keys);
        for cut in [0, 10, HEADER_LEN, good.len() - 1] {
            assert!(
                Frozen::parse(Bytes::copy_from_slice(&good[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = good.clone();
        flipped[HEADER_LEN + 3] ^= 1;
        assert!(Frozen::parse(Bytes::from(flipped)).is_err());
        let mut v1 = good.clone();
        v1[..8].copy_from_slice(b"FIDXCKP1");
        assert!(Frozen::parse(Bytes::from(v1)).is_err());
        // Well-formed bytes whose orders disagree (a writer bug) are refused too.
        let mut unsorted = entries.clone();
        unsorted.swap(0, 1);
        assert!(Frozen::parse(Bytes::from(Frozen::encode(12, 40, &unsorted, &keys))).is_err());
        let mut wrong_keys = keys.clone();
        wrong_keys[0].0 = 11;
        assert!(Frozen::parse(Bytes::from(Frozen::encode(12, 40, &entries, &wrong_keys))).is_err());
    }

    #[test]
    fn a_missing_file_is_none_and_a_written_one_maps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        assert!(Frozen::open(&path).unwrap().is_none());
        let (entries, keys) = sample();
        std::fs::write(&path, Frozen::encode(3, 40, &entries, &keys)).unwrap();
        let f = Frozen::open(&path).unwrap().unwrap();
        assert_eq!(f.entry(3), entries[3]);
        std::fs::write(&path, b"FIDXCKP2 but short").unwrap();
        assert!(Frozen::open(&path).is_err());
    }
}
