//! Persistence of a stream's fragment index ([`super::index`]): a second log of the
//! shared store beside the fragment log, one fixed-size row per fragment, kept
//! crash-consistent with the fragments in the order moonfire-nvr keeps its recordings
//! and their rows.
//!
//! - A row is written only for a fragment whose append is already durable, so the
//!   index never names a fragment that a crash could lose. The PERSISTED ack does not
//!   wait for the row: rows go to a per-stream queue and are appended in batches by a
//!   task of their own, through the store's writer thread (the same group commit).
//! - Loading (lazily, on a stream's first use after start-up) reconciles the index
//!   with the fragment log: rows before the log's first offset (expired by retention)
//!   or at or past its end are dropped; fragments with no row (the tail written after
//!   the last durable row, or rows lost from a full queue) are indexed by reading only
//!   those fragments' entries, and their rows appended.
//! - An index log that is missing (data written before the index existed) or
//!   unreadable (an unknown row version, an I/O error) is replaced by one rebuilt
//!   from every stored fragment; this is counted and logged, never silent.
//! - Retention deletes fragment segments first, then drops rows and index segments
//!   older than the first kept fragment, so a crash in between leaves only rows that
//!   the next load drops.
//!
//! - A checkpoint speeds up loading: every [`CHECKPOINT_ROWS`] rows by default
//!   (`VideoConfig::index_checkpoint_rows`), and after a load that read that many rows
//!   from the log, the whole index is written to one file beside the index log
//!   (`checkpoint`, the format of [`super::frozen`]: rows in offset order, the producer
//!   order, the index-log offset it covers, CRC32C), by write-to-temporary-then-rename.
//!   A load maps the checkpoint and reads it in place (nothing of it is decoded into
//!   memory), then inserts only the index-log rows after it. A checkpoint of the first
//!   format (rows only) is still read, into memory. A checkpoint that is torn, of
//!   another format, or claims more rows than the log holds (the log lost its tail) is
//!   removed and the whole log read; one that is older than the newest rows (stale) is
//!   used, with the rows after it. It is never needed for correctness, so it is not
//!   fsynced.
//!
//! Every function here except [`write_rows`] does blocking file I/O: call it from
//! `spawn_blocking`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::fragments::FragmentMeta;
use super::frozen::Frozen;
use super::index::{FragmentIndex, IndexEntry, ROW_LEN};
use crate::store::{Entry, Log, ReadAccess, Store, StoreError};

/// Rows waiting for the index log, per stream. A full queue drops rows (the fragments
/// are durable; the next load indexes them again) rather than holding PutMedia back.
const ROW_QUEUE: usize = 16 * 1024;
/// Rows appended in one batch at most.
const ROW_BATCH: usize = 2048;
/// Segment size of index logs: small, so that retention frees rows soon after their
/// fragments (about 19,000 rows).
pub const INDEX_SEGMENT_BYTES: u64 = 1024 * 1024;
/// Rows appended to the index log between two checkpoints, by default.
pub const CHECKPOINT_ROWS: u64 = 4096;
/// The checkpoint file in the index log's directory (the log ignores it).
const CHECKPOINT_FILE: &str = "checkpoint";
/// The first checkpoint format (rows only), still read.
const CHECKPOINT_MAGIC_V1: &[u8; 8] = b"FIDXCKP1";

/// The open fragment index of one stream and the queue to its log.
#[derive(Debug)]
pub struct StreamIndex {
    /// The entries; a std lock, held only for pure in-memory queries and inserts.
    pub index: RwLock<FragmentIndex>,
    /// The index log.
    pub log: Arc<Log>,
    rows: mpsc::Sender<IndexEntry>,
    /// The index-log offset the newest checkpoint covers (rows before it are in it).
    checkpointed: AtomicU64,
    /// Rows appended between two checkpoints (at least 1).
    checkpoint_rows: u64,
}

impl StreamIndex {
    /// Starts the row writer of `log` and wraps `index`; `checkpointed` is the
    /// index-log offset the checkpoint read at load covered (0: none), and a checkpoint
    /// is written every `checkpoint_rows` rows.
    pub fn start(
        store: Arc<Store>,
        log: Arc<Log>,
        index: FragmentIndex,
        checkpointed: u64,
        checkpoint_rows: u64,
    ) -> Arc<Self> {
        let (rows, rx) = mpsc::channel(ROW_QUEUE);
        let this = Arc::new(StreamIndex {
            index: RwLock::new(index),
            log: log.clone(),
            rows,
            checkpointed: AtomicU64::new(checkpointed),
            checkpoint_rows: checkpoint_rows.max(1),
        });
        tokio::spawn(write_rows(store, Arc::downgrade(&this), log, rx));
        this
    }

    /// Indexes a durable fragment: in memory now, in the index log soon.
    pub fn record(&self, entry: IndexEntry) {
        let stored = self.index.write().unwrap().insert(entry);
        self.persist(stored);
    }

    /// Queues a row for the index log only (the entry is already in memory).
    pub fn persist(&self, entry: IndexEntry) {
        if self.rows.try_send(entry).is_err() {
            tracing::warn!(
                log = self.log.id(),
                offset = entry.offset,
                "fragment index row queue full: the row is rebuilt from its fragment at the next start"
            );
        }
    }

    /// Whether the checkpoint interval's rows or more were appended since the
    /// checkpoint.
    pub fn checkpoint_due(&self) -> bool {
        self.log.bounds().end_offset
            >= self.checkpointed.load(Ordering::Relaxed) + self.checkpoint_rows
    }

    /// Writes a checkpoint of the whole index now (the format of [`Frozen`]).
    /// Blocking.
    pub fn write_checkpoint(&self) -> std::io::Result<()> {
        // The log's end first: every row before it was in memory before it was queued,
        // so the copy taken after holds it (or it has expired since).
        let covers = self.log.bounds().end_offset;
        let (rows, keys, max_duration_ms) = {
            let idx = self.index.read().unwrap();
            let rows: Vec<IndexEntry> = idx.entries().collect();
            let keys: Vec<(i64, u64)> = idx.producer_keys().collect();
            (rows, keys, idx.max_duration_ms())
        };
        let out = Frozen::encode(covers, max_duration_ms, &rows, &keys);
        let path = self.log.dir().join(CHECKPOINT_FILE);
        let tmp = self.log.dir().join(format!("{CHECKPOINT_FILE}.tmp"));
        std::fs::write(&tmp, &out)?;
        // A new file renamed over the old: a mapping of the old one stays valid.
        std::fs::rename(&tmp, &path)?;
        self.checkpointed.fetch_max(covers, Ordering::Relaxed);
        Ok(())
    }

    /// Writes a checkpoint on a blocking thread.
    pub fn checkpoint_in_background(self: &Arc<Self>) {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = this.write_checkpoint() {
                tracing::warn!(log = this.log.id(), error = %e, "fragment index checkpoint not written");
            }
        });
    }
}

/// Appends queued rows in batches until the queue is closed and empty,
/// checkpointing every `checkpoint_rows` rows.
async fn write_rows(
    store: Arc<Store>,
    index: Weak<StreamIndex>,
    log: Arc<Log>,
    mut rx: mpsc::Receiver<IndexEntry>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![row_entry(&first)];
        while batch.len() < ROW_BATCH {
            match rx.try_recv() {
                Ok(e) => batch.push(row_entry(&e)),
                Err(_) => break,
            }
        }
        if let Err(e) = store.append(&log, batch).await {
            tracing::warn!(log = log.id(), error = %e, "fragment index rows not written: they are rebuilt from the fragments at the next start");
        }
        // Once the index is dropped, the rows still queued are written all the same
        // (the loop ends when the queue is empty), only no checkpoint is.
        let Some(index) = index.upgrade() else {
            continue;
        };
        if index.checkpoint_due() {
            let writer = index.clone();
            let done = tokio::task::spawn_blocking(move || writer.write_checkpoint()).await;
            if let Ok(Err(e)) = done {
                tracing::warn!(log = log.id(), error = %e, "fragment index checkpoint not written");
            }
        }
    }
}

fn row_entry(e: &IndexEntry) -> Entry {
    Entry {
        head: e.encode(),
        body: Bytes::new(),
    }
}

/// A loaded and reconciled index.
#[derive(Debug)]
pub struct Loaded {
    pub log: Arc<Log>,
    pub index: FragmentIndex,
    /// Entries made from fragment entries (rows to append).
    pub derived: Vec<IndexEntry>,
    /// Whether the index log was missing or unreadable and was rebuilt from the
    /// fragments (with fragments to rebuild from).
    pub rebuilt: bool,
    /// Rows dropped: before the fragment log's first offset or past its end.
    pub dropped: usize,
    /// The index-log offset covered by the checkpoint read (0: none was read).
    pub checkpointed: u64,
    /// Rows read from the index log itself (after the checkpoint).
    pub rows_read: usize,
}

/// Opens the index log `id` of the fragment log `fragments` and reconciles it (see the
/// module doc). Blocking.
pub fn load(store: &Store, fragments: &Log, id: &str) -> Result<Loaded, StoreError> {
    let existed = store.has_log(id);
    let (log, base, checkpointed, rows_read) = match open_and_read(store, id) {
        Ok((log, base, checkpointed, rows_read)) => (log, Some(base), checkpointed, rows_read),
        Err(why) => {
            tracing::warn!(log = id, why, "fragment index unreadable: rebuilding it");
            store.remove_log(id)?;
            (store.open_log(id)?, None, 0, 0)
        }
    };
    log.set_segment_limit(INDEX_SEGMENT_BYTES);
    let replaced = !existed || base.is_none();
    let bounds = fragments.bounds();
    let (first, end) = (bounds.first_offset, bounds.end_offset);
    let mut index = match base {
        Some(Base::Frozen(frozen, rows)) => FragmentIndex::from_frozen(frozen, rows),
        Some(Base::Rows(rows)) => FragmentIndex::from_rows(rows),
        None => FragmentIndex::new(),
    };
    let dropped = index.trim_before(first) + index.trim_from(end);
    let mut derived = Vec::new();
    for (from, to) in index.gaps(first, end) {
        let mut at = from;
        while at < to {
            let want = usize::try_from(to - at).unwrap_or(usize::MAX).min(256);
            let batch = fragments.read(at, want, 16 * 1024 * 1024, ReadAccess::Cached)?;
            if batch.entries.is_empty() {
                break;
            }
            for f in batch.entries {
                if f.offset >= to {
                    break;
                }
                if let Some((meta, cluster)) = FragmentMeta::decode(&f.payload) {
                    let e = IndexEntry::of_fragment(f.offset, f.timestamp_ms, &meta, cluster.len());
                    derived.push(index.insert(e));
                }
            }
            at = batch.next_offset.max(at + 1);
        }
    }
    Ok(Loaded {
        log,
        index,
        rebuilt: replaced && end > first,
        derived,
        dropped,
        checkpointed,
        rows_read,
    })
}

/// What a load starts from: a checkpoint read in place and the rows after it, or rows
/// (a checkpoint of the first format, or none).
enum Base {
    Frozen(Arc<Frozen>, Vec<IndexEntry>),
    Rows(Vec<IndexEntry>),
}

/// Opens the index log and reads what a load starts from: the checkpoint, if one is
/// readable, then the rows the log holds after it. `Err` with the reason when the log
/// cannot be opened or holds a row this version cannot read. Also returns the offset
/// the checkpoint covered (0: none) and how many rows were read from the log.
fn open_and_read(store: &Store, id: &str) -> Result<(Arc<Log>, Base, u64, usize), String> {
    let log = store.open_log(id).map_err(|e| e.to_string())?;
    let bounds = log.bounds();
    let path = log.dir().join(CHECKPOINT_FILE);
    let checkpoint = match Frozen::open(&path) {
        Ok(Some(f)) => Some(Checkpoint::Frozen(Arc::new(f))),
        Ok(None) => None,
        // The first format (rows only), written by earlier versions.
        Err(why) => match read_checkpoint_v1(&path) {
            Some((covers, rows)) => Some(Checkpoint::Rows(covers, rows)),
            None => {
                tracing::debug!(log = id, why, "fragment index checkpoint not readable");
                Some(Checkpoint::Unusable)
            }
        },
    };
    let covers_of = |c: &Checkpoint| match c {
        Checkpoint::Frozen(f) => Some(f.covers()),
        Checkpoint::Rows(covers, _) => Some(*covers),
        Checkpoint::Unusable => None,
    };
    let checkpoint =
        checkpoint.filter(|c| covers_of(c).is_some_and(|covers| covers <= bounds.end_offset));
    if checkpoint.is_none() && path.exists() {
        // A checkpoint that claims rows the log does not hold (its tail was lost)
        // would be taken once the log grows past its claim, and the rows written in
        // between skipped: it goes now, as does a torn or foreign one.
        tracing::warn!(log = id, "fragment index checkpoint unusable: removed");
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(log = id, error = %e, "fragment index checkpoint not removed");
        }
    }
    let covers = checkpoint.as_ref().and_then(covers_of).unwrap_or(0);
    let mut rows = Vec::new();
    let mut at = bounds.first_offset.max(covers);
    let mut read = 0;
    loop {
        let batch = log
            .read(at, 16 * 1024, usize::MAX, ReadAccess::Cached)
            .map_err(|e| e.to_string())?;
        if batch.entries.is_empty() {
            break;
        }
        for f in &batch.entries {
            match IndexEntry::decode(&f.payload) {
                Some(e) => rows.push(e),
                None => return Err(format!("row {} is not an index row", f.offset)),
            }
        }
        read += batch.entries.len();
        at = batch.next_offset;
    }
    let base = match checkpoint {
        Some(Checkpoint::Frozen(f)) => Base::Frozen(f, rows),
        Some(Checkpoint::Rows(_, mut before)) => {
            before.append(&mut rows);
            Base::Rows(before)
        }
        _ => Base::Rows(rows),
    };
    Ok((log, base, covers, read))
}

/// A checkpoint file as found.
enum Checkpoint {
    Frozen(Arc<Frozen>),
    /// The first format: the index-log offset covered and the rows.
    Rows(u64, Vec<IndexEntry>),
    Unusable,
}

/// The rows of a checkpoint of the first format (`FIDXCKP1`: rows only) and the
/// index-log offset it covers; `None` when it is missing, torn, or not of that format.
fn read_checkpoint_v1(path: &std::path::Path) -> Option<(u64, Vec<IndexEntry>)> {
    let bytes = std::fs::read(path).ok()?;
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32c::crc32c(body).to_le_bytes() != crc
        || body.len() < 24
        || &body[..8] != CHECKPOINT_MAGIC_V1
    {
        return None;
    }
    let covers = u64::from_le_bytes(body[8..16].try_into().ok()?);
    let count = usize::try_from(u64::from_le_bytes(body[16..24].try_into().ok()?)).ok()?;
    let rows = &body[24..];
    if rows.len() != count.checked_mul(ROW_LEN)? {
        return None;
    }
    rows.chunks_exact(ROW_LEN)
        .map(IndexEntry::decode)
        .collect::<Option<Vec<_>>>()
        .map(|rows| (covers, rows))
}
