//! The storage engine shared by every kind of data Freshet keeps: data-stream records
//! now, video fragments and delivery buffers later.
//!
//! - [`Store`] owns a set of append-only [`Log`]s (one per shard) under
//!   `<data dir>/logs/`, and the single writer thread that group-commits appends
//!   ([`writer`]). An append is acknowledged only once durable under the configured
//!   [`Durability`].
//! - [`catalog`] holds metadata (streams, shards, tags, policies) in an embedded
//!   transactional key-value store.
//!
//! The interface the domain layers use is deliberately narrow: append a batch of
//! payloads, read from an offset, find an offset by time, trim by time, remove a log.
//! A scale-out mode can put sealed segments in object storage behind the same calls.
//! This module knows nothing about HTTP or Kinesis.

pub mod catalog;
pub mod log;
pub mod segment;
pub mod writer;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

pub use log::{Log, LogBounds, ReadAccess, ReadBatch, RollPolicy, WriteIo};
pub use segment::{Entry, Frame};
pub use writer::{AppendAck, Durability};

use crate::clock::SharedClock;

/// Errors from the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("the storage writer has stopped")]
    WriterGone,
    #[error("invalid log id {0:?}")]
    InvalidLogId(String),
}

impl StoreError {
    /// The file system is full (ENOSPC) or the quota is used up (EDQUOT): writes fail
    /// until space is freed, but nothing stored is damaged and reads go on.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, StoreError::Io(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
    }
}

/// Default per-log page-cache window: 16 MiB.
pub const DEFAULT_CACHE_WINDOW: u64 = 16 * 1024 * 1024;

/// Tunables of the storage engine.
#[derive(Debug, Clone, Copy)]
pub struct StoreConfig {
    pub durability: Durability,
    pub roll: RollPolicy,
    /// Appends that may wait for the writer before callers are held back.
    pub writer_queue: usize,
    /// How long a group commit waits for more appends to join it.
    pub commit_delay: std::time::Duration,
    /// Per log, how many of the newest bytes are left in the OS page cache once durable;
    /// older data is dropped from it (`u64::MAX`: never). See `log::DropBehind`.
    pub cache_window: u64,
    /// How logs write their segments (direct I/O unless the file system refuses it).
    pub write_io: WriteIo,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            roll: RollPolicy {
                max_segment_bytes: 64 * 1024 * 1024,
                max_segment_age_ms: 60 * 60 * 1000,
            },
            writer_queue: 1024,
            commit_delay: std::time::Duration::ZERO,
            cache_window: DEFAULT_CACHE_WINDOW,
            write_io: WriteIo::Direct,
        }
    }
}

/// The storage engine: logs on local disk plus the writer thread.
pub struct Store {
    root: PathBuf,
    clock: SharedClock,
    logs: Mutex<HashMap<String, Arc<Log>>>,
    writer: mpsc::Sender<writer::Command>,
    cache_window: u64,
    write_io: WriteIo,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

fn valid_log_id(id: &str) -> bool {
    !id.is_empty()
        && id.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

impl Store {
    /// Opens the store rooted at `root` (creating it) and starts the writer thread.
    /// Logs are opened (and recovered) lazily by [`Store::open_log`].
    pub fn open(
        root: &Path,
        config: StoreConfig,
        clock: SharedClock,
    ) -> Result<Arc<Store>, StoreError> {
        std::fs::create_dir_all(root.join("logs"))?;
        let (writer, _handle) = writer::spawn(
            writer::WriterConfig {
                durability: config.durability,
                commit_delay: config.commit_delay,
                roll: config.roll,
                clock: clock.clone(),
            },
            config.writer_queue,
        );
        Ok(Arc::new(Store {
            cache_window: config.cache_window,
            write_io: config.write_io,
            root: root.to_path_buf(),
            clock,
            logs: Mutex::new(HashMap::new()),
            writer,
        }))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn log_dir(&self, id: &str) -> PathBuf {
        self.root.join("logs").join(id)
    }

    /// Opens (recovering) or creates a log. Blocking: call from `spawn_blocking` or at
    /// start-up.
    pub fn open_log(&self, id: &str) -> Result<Arc<Log>, StoreError> {
        if !valid_log_id(id) {
            return Err(StoreError::InvalidLogId(id.to_string()));
        }
        let mut logs = self.logs.lock().unwrap();
        if let Some(log) = logs.get(id) {
            return Ok(log.clone());
        }
        let log = Log::open(id, &self.log_dir(id), self.clock.now_ms(), self.write_io)?;
        log.set_cache_window(self.cache_window);
        logs.insert(id.to_string(), log.clone());
        Ok(log)
    }

    /// At a clean shutdown, once nothing more is written: makes every open log's
    /// active segment durable and records its summary, so that the next start opens
    /// each log without reading its active segment through. Returns how many logs had
    /// something to record. A log that fails here is only opened the slow way next
    /// time. Blocking.
    pub fn close_clean(&self) -> usize {
        let logs: Vec<Arc<Log>> = self.logs.lock().unwrap().values().cloned().collect();
        let mut written = 0;
        for log in logs {
            match log.close_clean() {
                Ok(true) => written += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(log = log.id(), error = %e, "log not closed cleanly"),
            }
        }
        written
    }

    /// Whether log `id` exists on disk (open or not). Blocking.
    pub fn has_log(&self, id: &str) -> bool {
        valid_log_id(id) && self.log_dir(id).is_dir()
    }

    /// Removes a log and all its files. Blocking.
    pub fn remove_log(&self, id: &str) -> Result<(), StoreError> {
        if !valid_log_id(id) {
            return Err(StoreError::InvalidLogId(id.to_string()));
        }
        self.logs.lock().unwrap().remove(id);
        let dir = self.log_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(parent) = dir.parent() {
            let _ = log::sync_dir(parent);
        }
        Ok(())
    }

    /// Removes every log whose id starts with `prefix/`. Blocking.
    pub fn remove_log_tree(&self, prefix: &str) -> Result<(), StoreError> {
        if !valid_log_id(prefix) {
            return Err(StoreError::InvalidLogId(prefix.to_string()));
        }
        let with_slash = format!("{prefix}/");
        self.logs
            .lock()
            .unwrap()
            .retain(|id, _| !id.starts_with(&with_slash));
        self.remove_log(prefix)
    }

    /// Appends payloads as consecutive entries; resolves once they are durable.
    pub async fn append(
        &self,
        log: &Arc<Log>,
        payloads: Vec<Entry>,
    ) -> Result<AppendAck, StoreError> {
        self.append_arrived(log, payloads, None).await
    }

    /// [`Store::append`], stamping the entries with `arrived_ms` (when their data began
    /// to arrive) instead of the commit time: never later than the commit, and never
    /// before the log's last timestamp, so timestamps still never decrease along a log.
    pub async fn append_arrived(
        &self,
        log: &Arc<Log>,
        payloads: Vec<Entry>,
        arrived_ms: Option<i64>,
    ) -> Result<AppendAck, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(writer::Command::Append {
                log: log.clone(),
                payloads,
                arrived_ms,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        Ok(rx.await.map_err(|_| StoreError::WriterGone)??)
    }

    /// Appends to several logs at once; they share a group commit. Results are in the
    /// order of `batches`.
    pub async fn append_many(
        &self,
        batches: Vec<(Arc<Log>, Vec<Entry>)>,
    ) -> Vec<Result<AppendAck, StoreError>> {
        let mut waiting = Vec::with_capacity(batches.len());
        for (log, payloads) in batches {
            let (reply, rx) = oneshot::channel();
            let sent = self
                .writer
                .send(writer::Command::Append {
                    log,
                    payloads,
                    arrived_ms: None,
                    reply,
                })
                .await
                .map_err(|_| StoreError::WriterGone);
            waiting.push(sent.map(|_| rx));
        }
        let mut out = Vec::with_capacity(waiting.len());
        for w in waiting {
            out.push(match w {
                Ok(rx) => match rx.await {
                    Ok(r) => r.map_err(StoreError::from),
                    Err(_) => Err(StoreError::WriterGone),
                },
                Err(e) => Err(e),
            });
        }
        out
    }

    /// Reads entries from `from` (see [`Log::read`]) on a blocking thread, leaving what
    /// it read in the page cache.
    pub async fn read(
        &self,
        log: &Arc<Log>,
        from: u64,
        max_entries: usize,
        max_payload_bytes: usize,
    ) -> Result<ReadBatch, StoreError> {
        self.read_with(
            log,
            from,
            max_entries,
            max_payload_bytes,
            ReadAccess::Cached,
        )
        .await
    }

    /// Reads entries from `from` on a blocking thread, using the page cache as `access`
    /// says: [`ReadAccess::Scan`] for a consumer streaming through the log.
    pub async fn read_with(
        &self,
        log: &Arc<Log>,
        from: u64,
        max_entries: usize,
        max_payload_bytes: usize,
        access: ReadAccess,
    ) -> Result<ReadBatch, StoreError> {
        let log = log.clone();
        blocking(move || log.read(from, max_entries, max_payload_bytes, access)).await
    }

    /// The offset of the first entry at or after `timestamp_ms`, on a blocking thread.
    pub async fn offset_at_time(
        &self,
        log: &Arc<Log>,
        timestamp_ms: i64,
    ) -> Result<u64, StoreError> {
        let log = log.clone();
        blocking(move || log.offset_at_time(timestamp_ms)).await
    }

    /// Enforces a size cap on one log: deletes its oldest whole sealed segments while it
    /// holds more than `max_bytes`. Returns segments deleted.
    pub async fn enforce_size(&self, log: &Arc<Log>, max_bytes: u64) -> Result<usize, StoreError> {
        if log.total_bytes() <= max_bytes {
            return Ok(0);
        }
        let log = log.clone();
        blocking(move || log.trim_to_size(max_bytes)).await
    }

    /// Enforces retention on one log: seals a stale active segment, then deletes whole
    /// segments whose entries are all older than `cutoff_ms`. Returns segments deleted.
    pub async fn enforce_retention(
        &self,
        log: &Arc<Log>,
        cutoff_ms: i64,
    ) -> Result<usize, StoreError> {
        if log.active_is_stale(cutoff_ms) {
            let (reply, rx) = oneshot::channel();
            self.writer
                .send(writer::Command::RollIfStale {
                    log: log.clone(),
                    cutoff_ms,
                    reply,
                })
                .await
                .map_err(|_| StoreError::WriterGone)?;
            rx.await.map_err(|_| StoreError::WriterGone)??;
        }
        let log = log.clone();
        blocking(move || log.trim_before(cutoff_ms)).await
    }
}

/// Runs blocking log I/O on tokio's blocking pool, never on an async worker.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    Ok(tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(e.to_string()))??)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use bytes::Bytes;

    fn store(dir: &Path, clock: Arc<ManualClock>, seg_bytes: u64) -> Arc<Store> {
        let config = StoreConfig {
            roll: RollPolicy {
                max_segment_bytes: seg_bytes,
                max_segment_age_ms: i64::MAX / 2,
            },
            ..StoreConfig::default()
        };
        Store::open(dir, config, clock).unwrap()
    }

    fn payloads(from: usize, n: usize) -> Vec<Entry> {
        (from..from + n)
            .map(|i| Bytes::from(format!("entry-{i:06}")).into())
            .collect()
    }

    #[tokio::test]
    async fn append_read_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        {
            let s = store(dir.path(), clock.clone(), 4096);
            let log = s.open_log("t/a").unwrap();
            let mut next = 0;
            for _ in 0..20 {
                let ack = s.append(&log, payloads(next, 25)).await.unwrap();
                assert_eq!(ack.first_offset, next as u64);
                next += 25;
                clock.advance_ms(10);
            }
            assert!(log.segment_count() >= 4, "small segments roll");
            let batch = s.read(&log, 0, 10_000, usize::MAX).await.unwrap();
            assert_eq!(batch.entries.len(), 500);
            assert_eq!(batch.next_offset, 500);
            for (i, e) in batch.entries.iter().enumerate() {
                assert_eq!(e.offset, i as u64);
                assert_eq!(e.payload, Bytes::from(format!("entry-{i:06}")));
            }
        }
        // Reopen: everything is still there, offsets continue.
        let s = store(dir.path(), clock.clone(), 4096);
        let log = s.open_log("t/a").unwrap();
        assert_eq!(log.bounds().end_offset, 500);
        let batch = s.read(&log, 123, 7, usize::MAX).await.unwrap();
        assert_eq!(batch.entries.len(), 7);
        assert_eq!(batch.entries[0].payload, Bytes::from("entry-000123"));
        let ack = s.append(&log, payloads(500, 1)).await.unwrap();
        assert_eq!(ack.first_offset, 500);
    }

    /// Entries stamped with their arrival: never later than the commit, never before
    /// the entry before (also across a segment roll), and the first of a new log as
    /// early as it arrived.
    #[tokio::test]
    async fn arrival_stamps_are_kept_within_the_log_order() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(10_000));
        // Segments of 2 KiB: the 1 KiB entries below roll often.
        let s = store(dir.path(), clock.clone(), 2048);
        let log = s.open_log("t/arrived").unwrap();
        clock.set_ms(12_000);
        let stamp = |ack: AppendAck| ack.timestamp_ms;
        let big = || vec![Entry::from(Bytes::from(vec![1u8; 1024]))];
        assert_eq!(
            stamp(s.append_arrived(&log, big(), Some(9_000)).await.unwrap()),
            9_000
        );
        // Later than the commit: the commit time.
        assert_eq!(
            stamp(s.append_arrived(&log, big(), Some(99_000)).await.unwrap()),
            12_000
        );
        // Before the last entry: the last entry's time.
        assert_eq!(
            stamp(s.append_arrived(&log, big(), Some(11_000)).await.unwrap()),
            12_000
        );
        let mut stamps = Vec::new();
        for i in 0..20 {
            clock.advance_ms(100);
            let arrived = clock.now_ms() - 250 + (i % 3) * 100;
            let ack = s.append_arrived(&log, big(), Some(arrived)).await.unwrap();
            assert!(ack.timestamp_ms <= clock.now_ms());
            stamps.push(ack.timestamp_ms);
        }
        assert!(log.segment_count() > 5, "the entries rolled segments");
        assert!(stamps.is_sorted(), "{stamps:?}");
        // Arrival times were kept where they did not go back: some are before their
        // commit.
        assert!(
            stamps
                .iter()
                .enumerate()
                .any(|(i, &t)| t < 12_000 + 100 * (i as i64 + 1))
        );
        let all = s.read(&log, 0, 100, usize::MAX).await.unwrap();
        let read: Vec<i64> = all.entries.iter().map(|e| e.timestamp_ms).collect();
        assert_eq!(read[3..], stamps[..]);
    }

    #[tokio::test]
    async fn time_lookup_and_retention() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(10_000));
        let s = store(dir.path(), clock.clone(), 2048);
        let log = s.open_log("t/b").unwrap();
        for i in 0..50 {
            s.append(&log, payloads(i * 10, 10)).await.unwrap();
            clock.advance_ms(1000);
        }
        // Batch i was stamped 10_000 + 1000 i.
        assert_eq!(s.offset_at_time(&log, 0).await.unwrap(), 0);
        assert_eq!(
            s.offset_at_time(&log, 10_000 + 1000 * 17).await.unwrap(),
            170
        );
        assert_eq!(
            s.offset_at_time(&log, 10_000 + 1000 * 17 + 1)
                .await
                .unwrap(),
            180
        );
        assert_eq!(s.offset_at_time(&log, i64::MAX).await.unwrap(), 500);

        let before = log.segment_count();
        let removed = s.enforce_retention(&log, 10_000 + 1000 * 25).await.unwrap();
        assert!(removed > 0);
        assert_eq!(log.segment_count(), before - removed);
        let first = log.bounds().first_offset;
        assert!(first > 0 && first <= 250, "trim horizon moved to {first}");
        // Reading from 0 starts at the trim horizon.
        let batch = s.read(&log, 0, 1, usize::MAX).await.unwrap();
        assert_eq!(batch.entries[0].offset, first);

        // Everything expires: the active segment is sealed and removed too, but the
        // offsets carry on.
        clock.advance_ms(1_000_000);
        s.enforce_retention(&log, clock.now_ms() - 1).await.unwrap();
        assert_eq!(log.bounds().first_offset, 500);
        assert!(
            s.read(&log, 0, 10, usize::MAX)
                .await
                .unwrap()
                .entries
                .is_empty()
        );
        let ack = s.append(&log, payloads(0, 1)).await.unwrap();
        assert_eq!(ack.first_offset, 500);
        drop(s);
        let s = store(dir.path(), clock.clone(), 2048);
        let log = s.open_log("t/b").unwrap();
        assert_eq!(
            log.bounds(),
            LogBounds {
                first_offset: 500,
                end_offset: 501,
                last_timestamp_ms: clock.now_ms()
            }
        );
    }

    #[tokio::test]
    async fn torn_tail_is_truncated_on_open() {
        for write_io in [WriteIo::Direct, WriteIo::Buffered] {
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(ManualClock::new(5));
            let config = StoreConfig {
                write_io,
                ..StoreConfig::default()
            };
            let path;
            {
                let s = Store::open(dir.path(), config, clock.clone()).unwrap();
                let log = s.open_log("t/c").unwrap();
                s.append(&log, payloads(0, 10)).await.unwrap();
                path = log.dir().join(format!("{:020}.seg", 0));
            }
            // Simulate a torn write: half a frame of garbage right after the last
            // frame (direct writes also leave zero padding up to a block boundary).
            let mut bytes = std::fs::read(&path).unwrap();
            let good_len = segment::scan_segment(&Bytes::from(bytes.clone()))
                .unwrap()
                .valid_len as usize;
            match write_io {
                WriteIo::Direct => assert_eq!(bytes.len() % 4096, 0, "whole blocks"),
                WriteIo::Buffered => assert_eq!(bytes.len(), good_len),
            }
            bytes.truncate(good_len);
            bytes.extend_from_slice(&[0x30, 0, 0, 0, 1, 2, 3]);
            std::fs::write(&path, &bytes).unwrap();
            let s = Store::open(dir.path(), config, clock.clone()).unwrap();
            let log = s.open_log("t/c").unwrap();
            assert_eq!(log.bounds().end_offset, 10);
            assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, good_len);
            let ack = s.append(&log, payloads(10, 1)).await.unwrap();
            assert_eq!(ack.first_offset, 10);
            let all = s.read(&log, 0, 100, usize::MAX).await.unwrap();
            assert_eq!(all.entries.len(), 11);
            let want: Vec<Bytes> = (0..11)
                .map(|i| Bytes::from(format!("entry-{i:06}")))
                .collect();
            let got: Vec<Bytes> = all.entries.into_iter().map(|f| f.payload).collect();
            assert_eq!(got, want, "{write_io:?}");
        }
    }

    #[tokio::test]
    async fn large_entries_and_byte_limits() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), Arc::new(ManualClock::new(1)), 64 << 20);
        let log = s.open_log("t/d").unwrap();
        let big: Vec<Entry> = (0..5u8)
            .map(|i| Bytes::from(vec![i; 1 << 20]).into())
            .collect();
        s.append(&log, big).await.unwrap();
        // At least one entry even when it exceeds the byte budget.
        let b = s.read(&log, 0, 100, 10).await.unwrap();
        assert_eq!(b.entries.len(), 1);
        let b = s.read(&log, 1, 100, 3 << 20).await.unwrap();
        assert_eq!(b.entries.len(), 3);
        assert!(
            b.entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.payload.len() == 1 << 20 && e.payload[0] == i as u8 + 1)
        );
    }

    #[tokio::test]
    async fn reopen_reads_index_files_not_sealed_data() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1));
        {
            let s = store(dir.path(), clock.clone(), 512);
            let log = s.open_log("t/many").unwrap();
            for i in 0..300 {
                s.append(&log, payloads(i * 4, 4)).await.unwrap();
            }
            assert!(
                log.segment_count() >= 50,
                "{} segments",
                log.segment_count()
            );
        }
        // Damage every sealed segment's frames (not the header): if start-up scanned
        // sealed data it would truncate them; it must trust their index files instead.
        let log_dir = dir.path().join("logs/t/many");
        let mut segs: Vec<_> = std::fs::read_dir(&log_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segs.sort();
        let active = segs.pop().unwrap();
        for p in &segs {
            let mut bytes = std::fs::read(p).unwrap();
            for b in &mut bytes[segment::HEADER_LEN..] {
                *b = 0xAB;
            }
            std::fs::write(p, bytes).unwrap();
        }
        let s = store(dir.path(), clock.clone(), 512);
        let started = std::time::Instant::now();
        let log = s.open_log("t/many").unwrap();
        let elapsed = started.elapsed();
        assert_eq!(log.bounds().end_offset, 1200);
        assert!(
            std::fs::metadata(&segs[0]).unwrap().len() > segment::HEADER_LEN as u64,
            "not truncated"
        );
        assert!(
            elapsed < std::time::Duration::from_secs(2),
            "open took {elapsed:?}"
        );
        // The damage is caught by the CRC when the data is read.
        assert!(s.read(&log, 0, 10, usize::MAX).await.is_err());
        // The active segment (scanned) is intact and readable.
        let base: u64 = active
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let tail = s.read(&log, base, 10, usize::MAX).await.unwrap();
        assert_eq!(tail.entries[0].offset, base);
    }

    #[test]
    fn log_ids_are_checked() {
        assert!(valid_log_id("kds/abc-123/shardId-000000000001"));
        assert!(!valid_log_id("../etc"));
        assert!(!valid_log_id("a//b"));
        assert!(!valid_log_id(""));
    }

    /// Page-cache residency of each 4 KiB page of `path` (mmap + mincore).
    fn resident_pages(path: &Path) -> Vec<bool> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        let page = 4096;
        let pages = len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: a read-only shared mapping of a file we keep open, unmapped before
        // returning; mincore writes one byte per page into `vec`, which has room.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
            libc::munmap(addr, len);
        }
        vec.into_iter().map(|b| b & 1 == 1).collect()
    }

    fn segment_file(dir: &Path, log: &str) -> std::path::PathBuf {
        let mut segs: Vec<_> = std::fs::read_dir(dir.join("logs").join(log))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segs.sort();
        segs.pop().unwrap()
    }

    fn resident_fraction(pages: &[bool]) -> f64 {
        pages.iter().filter(|&&r| r).count() as f64 / pages.len().max(1) as f64
    }

    #[tokio::test]
    async fn durable_data_behind_the_cache_window_leaves_the_page_cache() {
        let chunk = || -> Vec<Entry> {
            (0..64)
                .map(|i| Bytes::from(vec![i as u8; 16 * 1024]).into())
                .collect()
        };
        let mib = 1024 * 1024;
        for (window, expect_dropped) in [(2 * mib, true), (u64::MAX, false)] {
            let dir = tempfile::tempdir().unwrap();
            let clock = Arc::new(ManualClock::new(1_000_000));
            // Drop-behind is about the page cache, which only buffered writes fill.
            let config = StoreConfig {
                cache_window: window,
                write_io: WriteIo::Buffered,
                ..StoreConfig::default()
            };
            let s = Store::open(dir.path(), config, clock).unwrap();
            let log = s.open_log("t/w").unwrap();
            // 12 appends of 1 MiB each.
            for _ in 0..12 {
                s.append(&log, chunk()).await.unwrap();
            }
            let pages = resident_pages(&segment_file(dir.path(), "t/w"));
            let third = pages.len() / 3;
            let (old, new) = (&pages[..third * 2], &pages[pages.len() - 256..]);
            if expect_dropped {
                assert!(
                    resident_fraction(old) < 0.05,
                    "data behind the window is dropped: {} resident",
                    resident_fraction(old)
                );
                assert!(resident_fraction(new) > 0.9, "the newest MiB stays cached");
            } else {
                assert!(
                    resident_fraction(old) > 0.9,
                    "no window: everything stays cached"
                );
            }
            // Reading back is exact either way; a scan drops what it read behind the
            // window again, a cached read leaves it in memory.
            let all = s
                .read_with(&log, 0, 10_000, usize::MAX, ReadAccess::Scan)
                .await
                .unwrap();
            assert_eq!(all.entries.len(), 12 * 64);
            for (i, e) in all.entries.iter().enumerate() {
                assert_eq!(e.payload.len(), 16 * 1024);
                assert!(e.payload.iter().all(|&b| b == (i % 64) as u8));
            }
            let after_scan = resident_pages(&segment_file(dir.path(), "t/w"));
            if expect_dropped {
                assert!(resident_fraction(&after_scan[..third * 2]) < 0.05);
                s.read(&log, 0, 10_000, usize::MAX).await.unwrap();
                let after_read = resident_pages(&segment_file(dir.path(), "t/w"));
                assert!(resident_fraction(&after_read[..third * 2]) > 0.9);
            }
        }
    }
}
