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
//! Every function here except [`write_rows`] does blocking file I/O: call it from
//! `spawn_blocking`.

use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::fragments::FragmentMeta;
use super::index::{FragmentIndex, IndexEntry};
use crate::store::{Entry, Log, ReadAccess, Store, StoreError};

/// Rows waiting for the index log, per stream. A full queue drops rows (the fragments
/// are durable; the next load indexes them again) rather than holding PutMedia back.
const ROW_QUEUE: usize = 16 * 1024;
/// Rows appended in one batch at most.
const ROW_BATCH: usize = 2048;
/// Segment size of index logs: small, so that retention frees rows soon after their
/// fragments (about 19,000 rows).
pub const INDEX_SEGMENT_BYTES: u64 = 1024 * 1024;

/// The open fragment index of one stream and the queue to its log.
#[derive(Debug)]
pub struct StreamIndex {
    /// The entries; a std lock, held only for pure in-memory queries and inserts.
    pub index: RwLock<FragmentIndex>,
    /// The index log.
    pub log: Arc<Log>,
    rows: mpsc::Sender<IndexEntry>,
}

impl StreamIndex {
    /// Starts the row writer of `log` and wraps `index`.
    pub fn start(store: Arc<Store>, log: Arc<Log>, index: FragmentIndex) -> Arc<Self> {
        let (rows, rx) = mpsc::channel(ROW_QUEUE);
        tokio::spawn(write_rows(store, log.clone(), rx));
        Arc::new(StreamIndex {
            index: RwLock::new(index),
            log,
            rows,
        })
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
}

/// Appends queued rows in batches until the queue is closed.
async fn write_rows(store: Arc<Store>, log: Arc<Log>, mut rx: mpsc::Receiver<IndexEntry>) {
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
}

/// Opens the index log `id` of the fragment log `fragments` and reconciles it (see the
/// module doc). Blocking.
pub fn load(store: &Store, fragments: &Log, id: &str) -> Result<Loaded, StoreError> {
    let existed = store.has_log(id);
    let (log, rows) = match open_and_read(store, id) {
        Ok((log, rows)) => (log, Some(rows)),
        Err(why) => {
            tracing::warn!(log = id, why, "fragment index unreadable: rebuilding it");
            store.remove_log(id)?;
            (store.open_log(id)?, None)
        }
    };
    log.set_segment_limit(INDEX_SEGMENT_BYTES);
    let replaced = !existed || rows.is_none();
    let bounds = fragments.bounds();
    let (first, end) = (bounds.first_offset, bounds.end_offset);
    let mut index = FragmentIndex::new();
    let mut dropped = 0;
    for e in rows.unwrap_or_default() {
        if e.offset < first || e.offset >= end {
            dropped += 1;
            continue;
        }
        index.insert(e);
    }
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
    })
}

/// Opens the index log and reads every row; `Err` with the reason when it cannot be
/// opened or holds a row this version cannot read.
fn open_and_read(store: &Store, id: &str) -> Result<(Arc<Log>, Vec<IndexEntry>), String> {
    let log = store.open_log(id).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut at = log.bounds().first_offset;
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
        at = batch.next_offset;
    }
    Ok((log, rows))
}
