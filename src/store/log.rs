//! One append-only log: a directory of segment files (format in [`super::segment`]).
//!
//! Readers take a short read lock on the published state (segment list, sparse index,
//! durable end) and then read files with positioned reads, without holding any lock.
//! Only the store's writer thread appends (see [`super::writer`]); it publishes new
//! entries after they are durable, so a reader never sees an entry that could be lost
//! by a crash.
//!
//! The active segment is written with direct I/O (`O_DIRECT`, see [`DirectTail`]) by
//! default, or through the page cache with drop-behind (see [`DropBehind`]); readers
//! always read through the page cache.
//!
//! Every function here does blocking file I/O: call it from the writer thread or from
//! `spawn_blocking`, never from an async task.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;

use super::segment::{
    self, Entry, FRAME_OVERHEAD, Frame, FrameError, HEADER_LEN, SegmentHeader, SegmentSummary,
};

/// A sealed or active segment as readers see it.
#[derive(Debug)]
struct Segment {
    summary: SegmentSummary,
    path: PathBuf,
    /// Read handle, opened once.
    file: Arc<File>,
}

/// The state readers see: only durable entries.
#[derive(Debug)]
struct Published {
    segments: Vec<Segment>,
    /// One past the last durable offset.
    end_offset: u64,
    last_timestamp_ms: i64,
}

/// Writer-side state of the active segment; touched only by the writer thread.
#[derive(Debug)]
pub(super) struct Appender {
    file: Arc<File>,
    summary: SegmentSummary,
    /// Written byte ranges still in the page cache, oldest first (see [`DropBehind`]).
    cached: DropBehind,
    /// Direct-I/O state when `file` was opened with `O_DIRECT` (see [`DirectTail`]);
    /// `None`: buffered writes.
    direct: Option<DirectTail>,
    /// Whether the active segment's index file describes `summary` exactly (written by
    /// [`Log::close_clean`], or trusted at open and not written to since): a clean
    /// close then has nothing to write.
    index_current: bool,
}

impl Appender {
    /// Writes `payloads` as frames at the segment's valid end (not yet synced):
    /// directly, or through the page cache where direct I/O is off or refused.
    fn write_frames(
        &mut self,
        log_id: &str,
        dir: &Path,
        payloads: &[Entry],
        first_offset: u64,
        timestamp_ms: i64,
        buffers: &mut WriteBuffers,
    ) -> io::Result<()> {
        let position = self.summary.valid_len;
        let frames: usize = payloads.iter().map(|p| FRAME_OVERHEAD + p.len()).sum();
        if let Some(direct) = &mut self.direct {
            let block_start = position - direct.tail.len() as u64;
            let from = direct.fill(
                &mut buffers.direct,
                payloads,
                frames,
                first_offset,
                timestamp_ms,
            );
            let wrote = match refused::WRITE.get() {
                true => Err(io::Error::from_raw_os_error(libc::EINVAL)),
                false => self.file.write_all_at(&buffers.direct[from..], block_start),
            };
            match wrote {
                Ok(()) => {
                    direct.written(&buffers.direct[from..], frames);
                    return Ok(());
                }
                // The file system took O_DIRECT at open but refuses the write: go on
                // with buffered writes for this segment.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(log = log_id, error = %e, "direct write refused; buffered writes");
                    let path = segment_path(dir, self.summary.header.base_offset);
                    self.file = Arc::new(OpenOptions::new().read(true).write(true).open(path)?);
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        let frame_headers = &mut buffers.headers;
        write_frames_buffered(
            &self.file,
            payloads,
            first_offset,
            timestamp_ms,
            position,
            frame_headers,
        )?;
        self.cached
            .note(&self.file, position, position + frames as u64);
        Ok(())
    }
}

/// How a log writes its segments.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum WriteIo {
    /// `O_DIRECT`: appends go from our buffer to the disk, bypassing the page cache
    /// (the default; falls back to buffered where the file system refuses it).
    Direct,
    /// Appends go through the page cache, which drop-behind keeps small.
    Buffered,
}

/// File offsets, lengths and buffer addresses of direct writes are multiples of this:
/// it covers devices with 512-byte and 4 KiB logical blocks.
const DIRECT_ALIGN: usize = 4096;

/// Direct-I/O writes of the active segment.
///
/// A direct write must cover whole blocks, but frames end anywhere. The log keeps the
/// bytes of the segment's last, partly filled block in memory; each append writes that
/// block again followed by the new frames, padded with zeros to a block boundary. The
/// padding lies beyond the segment's valid length: readers never reach it, and recovery
/// ends the segment at the first position that holds no valid frame, as it does for a
/// torn tail. A block written again holds the same bytes for everything already
/// durable, as when the page cache writes a partly filled page back.
///
/// Why: on the benchmark machine a buffered append costs a copy into a freshly
/// allocated page-cache page, then writeback and the fsync's page walk; a direct
/// append costs one copy into this buffer and a DMA (`docs/decisions.md`).
#[derive(Debug, Default)]
struct DirectTail {
    /// The segment's bytes from the start of its last partly filled block to its valid
    /// end (shorter than one block).
    tail: Vec<u8>,
}

/// Buffers that a writing thread lends to the logs it appends to, so that memory for
/// writes grows with the threads, not with the number of logs.
#[derive(Debug, Default)]
pub(super) struct WriteBuffers {
    /// Frame headers of a buffered write.
    headers: BytesMut,
    /// A direct write; the part in use starts at a block-aligned address.
    direct: Vec<u8>,
}

impl WriteBuffers {
    /// Lets go of buffers a burst made big.
    pub(super) fn trim(&mut self) {
        const KEEP: usize = 8 * 1024 * 1024;
        if self.headers.capacity() > KEEP {
            self.headers = BytesMut::new();
        }
        if self.direct.capacity() > KEEP {
            self.direct = Vec::new();
        }
    }
}

impl DirectTail {
    /// Reads the last partial block of the segment at `path`, whose valid end is
    /// `valid_len`.
    fn load(path: &Path, valid_len: u64) -> io::Result<Self> {
        let block_start = valid_len - valid_len % DIRECT_ALIGN as u64;
        let mut tail = vec![0; (valid_len - block_start) as usize];
        File::open(path)?.read_exact_at(&mut tail, block_start)?;
        Ok(Self { tail })
    }

    /// Lays out the last partial block and `payloads` (`frames` bytes once framed) in
    /// `buf`, padded to whole blocks, from a block-aligned address on. Returns where in
    /// `buf` that is: from there on are the bytes to write at the position where the
    /// last partial block starts. Once they are on disk, [`DirectTail::written`] takes
    /// the new tail from them.
    fn fill(
        &self,
        buf: &mut Vec<u8>,
        payloads: &[Entry],
        frames: usize,
        first_offset: u64,
        timestamp_ms: i64,
    ) -> usize {
        let used = self.tail.len() + frames;
        let padded = used.next_multiple_of(DIRECT_ALIGN);
        if buf.capacity() < padded + DIRECT_ALIGN {
            *buf = Vec::with_capacity(padded + DIRECT_ALIGN);
        }
        // The capacity suffices for everything below, so the buffer never moves and
        // its aligned start stays aligned.
        buf.clear();
        let lead = (DIRECT_ALIGN - buf.as_ptr() as usize % DIRECT_ALIGN) % DIRECT_ALIGN;
        buf.resize(lead, 0);
        buf.extend_from_slice(&self.tail);
        for (i, payload) in payloads.iter().enumerate() {
            segment::encode_frame_prefix(
                buf,
                first_offset + i as u64,
                timestamp_ms,
                &payload.head,
                &payload.body,
            );
            buf.extend_from_slice(&payload.body);
        }
        debug_assert_eq!(buf.len(), lead + used);
        buf.resize(lead + padded, 0);
        lead
    }

    /// `bytes` from [`DirectTail::fill`] are on disk, and `added` of them are new
    /// frames: their last partial block is the new tail.
    fn written(&mut self, bytes: &[u8], added: usize) {
        let valid = self.tail.len() + added;
        self.tail.clear();
        self.tail
            .extend_from_slice(&bytes[valid - valid % DIRECT_ALIGN..valid]);
    }
}

/// Opens the active segment at `path` for appending with `io`. Direct I/O becomes
/// buffered where the file system refuses `O_DIRECT`.
fn new_appender(path: &Path, summary: SegmentSummary, io: WriteIo) -> io::Result<Appender> {
    let (file, direct) = open_appender_file(path, io)?;
    let direct = match direct {
        true => Some(DirectTail::load(path, summary.valid_len)?),
        false => None,
    };
    Ok(Appender {
        file: Arc::new(file),
        summary,
        cached: DropBehind::default(),
        direct,
        index_current: false,
    })
}

fn open_appender_file(path: &Path, io: WriteIo) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    if io == WriteIo::Direct {
        let opened = match refused::OPEN.get() {
            true => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            false => OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(path),
        };
        match opened {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(path = %path.display(), "O_DIRECT refused; buffered writes");
            }
            Err(e) => return Err(e),
        }
    }
    Ok((OpenOptions::new().read(true).write(true).open(path)?, false))
}

/// Stand-ins for a file system that refuses direct I/O, at open or at the first write
/// (tests set them on their own thread; never set outside tests).
mod refused {
    thread_local! {
        pub static OPEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        pub static WRITE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
}

/// Page-cache drop-behind for the write path.
///
/// Every byte appended lands in a fresh page-cache page. Left alone, the cache grows
/// with everything ever written until the kernel reclaims it, and fresh pages are far
/// more expensive than reused ones: allocating and zeroing them cost several times the
/// copy itself (measured on the benchmark machine, `docs/benchmarks.md`). Once durable,
/// data further than the log's cache window behind the end is rarely read again soon,
/// so the log asks the kernel to drop those pages (`POSIX_FADV_DONTNEED`), and the
/// next appends reuse them. Readers following the tail stay within the window and
/// read from memory.
#[derive(Debug, Default)]
struct DropBehind {
    spans: VecDeque<(Arc<File>, u64, u64)>,
    bytes: u64,
}

impl DropBehind {
    fn note(&mut self, file: &Arc<File>, start: u64, end: u64) {
        self.bytes += end - start;
        if let Some(last) = self.spans.back_mut()
            && Arc::ptr_eq(&last.0, file)
            && last.2 == start
        {
            last.2 = end;
            return;
        }
        self.spans.push_back((file.clone(), start, end));
    }

    /// Drops durable data beyond the newest `window` bytes from the page cache. It
    /// waits until half a window more has built up, so one call covers many appends.
    /// With no window (`u64::MAX`) nothing is dropped and nothing is kept track of.
    fn trim(&mut self, window: u64) {
        if window == u64::MAX {
            self.spans.clear();
            self.bytes = 0;
            return;
        }
        if self.bytes <= window.saturating_add(window / 2) {
            return;
        }
        while self.bytes > window {
            let Some((file, start, end)) = self.spans.pop_front() else {
                self.bytes = 0;
                return;
            };
            let excess = self.bytes - window;
            let cut = (end - start).min(excess);
            drop_cached(&file, start, cut);
            self.bytes -= cut;
            if start + cut < end {
                self.spans.push_front((file, start + cut, end));
            }
        }
    }
}

/// Advises the kernel that `len` bytes of `file` from `start` will not be needed soon.
/// Dirty pages are not dropped (the kernel starts writing them instead). Advisory only:
/// a failure changes nothing but memory use.
fn drop_cached(file: &File, start: u64, len: u64) {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return;
    }
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(start), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open
    // for the duration of the call because `file` is borrowed.
    let rc =
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        tracing::debug!(error = rc, "posix_fadvise(DONTNEED) failed");
    }
}

/// How a read uses the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAccess {
    /// Leave what was read in the page cache (data that is read again: video fragments
    /// served to several players).
    Cached,
    /// A consumer streaming through history: what it read from outside the log's cache
    /// window is dropped from the page cache afterwards, so catching up on a long
    /// backlog neither evicts the hot tail nor grows the cache with data read once.
    Scan,
}

/// Where a read starts: a segment and the index point at or before the offset.
struct Located {
    file: Arc<File>,
    point: segment::IndexPoint,
    /// One past the last offset to read in this segment (durable and in it).
    seg_end: u64,
    valid_len: u64,
    /// Positions below this are dropped from the page cache after reading.
    drop_below: u64,
}

/// Entries read from a log.
#[derive(Debug, Default)]
pub struct ReadBatch {
    pub entries: Vec<Frame>,
    /// The offset to read from next.
    pub next_offset: u64,
}

/// An append-only log of entries with dense offsets.
#[derive(Debug)]
pub struct Log {
    id: String,
    dir: PathBuf,
    published: RwLock<Published>,
    /// `None` after an unrecoverable write error: the log refuses appends until restart.
    appender: Mutex<Option<Appender>>,
    /// Durable end offset, for followers waiting for new entries.
    durable: watch::Sender<u64>,
    /// This log's own segment size limit in bytes (0 = the store's roll policy alone):
    /// a log with a size cap uses smaller segments so that whole-segment deletion keeps
    /// it close to its cap.
    segment_limit: std::sync::atomic::AtomicU64,
    /// How many of the newest bytes stay in the page cache after they are durable
    /// (`u64::MAX`: no drop-behind). See [`DropBehind`].
    cache_window: std::sync::atomic::AtomicU64,
    /// How new segments are written.
    write_io: WriteIo,
}

/// Summary figures of a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// The oldest offset still stored (the trim horizon).
    pub first_offset: u64,
    /// One past the newest durable offset.
    pub end_offset: u64,
    pub last_timestamp_ms: i64,
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether the segment at `path` holds nothing after `valid_len`, the end its index
/// file records: at most the zero padding of a direct write's last block follows it.
/// Segments only grow by appends, and every frame starts with a non-zero length, so an
/// append after the index was written (a buffered write extends the file; a direct
/// write fills the padding of the last block) always fails this check, and the
/// segment is then read and checked in full. A file shorter than `valid_len` (a tail
/// cut off by recovery since) fails it too.
fn nothing_after(path: &Path, valid_len: u64) -> io::Result<bool> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let Some(extra) = len.checked_sub(valid_len) else {
        return Ok(false);
    };
    if extra >= DIRECT_ALIGN as u64 {
        return Ok(false);
    }
    let mut rest = vec![0u8; extra as usize];
    file.read_exact_at(&mut rest, valid_len)?;
    Ok(rest.iter().all(|&b| b == 0))
}

fn read_whole(path: &Path) -> io::Result<Bytes> {
    Ok(Bytes::from(fs::read(path)?))
}

/// Writes `bytes` to `path` atomically and durably (temp file, fsync, rename, fsync dir).
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp)?;
        io::Write::write_all(&mut f, bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

fn create_segment(dir: &Path, base: u64, created_ms: i64) -> io::Result<SegmentSummary> {
    let header = SegmentHeader {
        base_offset: base,
        created_ms,
    };
    let path = segment_path(dir, base);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    file.write_all_at(&header.encode(), 0)?;
    file.sync_all()?;
    sync_dir(dir)?;
    Ok(SegmentSummary::empty(header))
}

impl Log {
    /// Opens (recovering) or creates the log in `dir`. A torn or corrupt tail is
    /// truncated; sealed segments are described by their index files, not scanned, and
    /// so is the active segment after a clean close ([`Log::close_clean`]) when
    /// nothing was appended after its index file was written ([`nothing_after`]).
    pub fn open(id: &str, dir: &Path, now_ms: i64, write_io: WriteIo) -> io::Result<Arc<Log>> {
        fs::create_dir_all(dir)?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".seg") {
                if let Ok(base) = stem.parse::<u64>() {
                    bases.push(base);
                }
            } else if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();

        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        let count = bases.len();
        // Whether the last segment's summary came from its index file.
        let mut index_trusted = false;
        for (i, base) in bases.into_iter().enumerate() {
            let path = segment_path(dir, base);
            let is_last = i + 1 == count;
            let from_index = fs::read(index_path(dir, base))
                .ok()
                .and_then(|b| SegmentSummary::decode_index(&b))
                .filter(|s| s.header.base_offset == base);
            let trusted_last = is_last
                && from_index
                    .as_ref()
                    .is_some_and(|s| nothing_after(&path, s.valid_len).unwrap_or(false));
            if is_last {
                index_trusted = trusted_last;
            }
            let summary = match from_index {
                Some(s) if !is_last || trusted_last => s,
                _ => {
                    let image = read_whole(&path)?;
                    let Some(summary) = segment::scan_segment(&image) else {
                        // Header never made it to disk: the segment was being created
                        // when we crashed, so it holds nothing.
                        if is_last && image.len() < HEADER_LEN * 2 {
                            tracing::warn!(log = id, base, "removing segment with torn header");
                            fs::remove_file(&path)?;
                            continue;
                        }
                        return Err(io::Error::new(
                            ErrorKind::InvalidData,
                            format!("segment {} has a damaged header", path.display()),
                        ));
                    };
                    let dropped = &image[(summary.valid_len as usize).min(image.len())..];
                    if !dropped.is_empty() {
                        // The zero padding of a direct write's last block is expected;
                        // anything else is a torn or damaged tail.
                        let padding =
                            dropped.len() < DIRECT_ALIGN && dropped.iter().all(|&b| b == 0);
                        if !padding {
                            tracing::warn!(
                                log = id,
                                segment = %path.display(),
                                kept = summary.valid_len,
                                dropped = dropped.len(),
                                "truncating torn or corrupt tail"
                            );
                        }
                        let f = OpenOptions::new().write(true).open(&path)?;
                        f.set_len(summary.valid_len)?;
                        f.sync_all()?;
                    }
                    if !is_last {
                        write_atomically(dir, &index_path(dir, base), &summary.encode_index())?;
                    }
                    summary
                }
            };
            if let Some(prev) = segments.last()
                && prev.summary.end_offset != summary.header.base_offset
            {
                tracing::warn!(
                    log = id,
                    expected = prev.summary.end_offset,
                    found = summary.header.base_offset,
                    "gap between segments"
                );
            }
            let file = Arc::new(File::open(&path)?);
            segments.push(Segment {
                summary,
                path,
                file,
            });
        }

        let appender = match segments.last() {
            Some(last) => {
                let mut appender = new_appender(&last.path, last.summary.clone(), write_io)?;
                appender.index_current = index_trusted;
                appender
            }
            None => {
                let summary = create_segment(dir, 0, now_ms)?;
                let path = segment_path(dir, 0);
                let appender = new_appender(&path, summary.clone(), write_io)?;
                segments.push(Segment {
                    summary,
                    file: Arc::new(File::open(&path)?),
                    path,
                });
                appender
            }
        };
        let end_offset = appender.summary.end_offset;
        let last_timestamp_ms = segments
            .iter()
            .rev()
            .find(|s| !s.summary.is_empty())
            .map(|s| s.summary.last_timestamp_ms)
            .unwrap_or(i64::MIN);
        let (durable, _) = watch::channel(end_offset);
        Ok(Arc::new(Log {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            published: RwLock::new(Published {
                segments,
                end_offset,
                last_timestamp_ms,
            }),
            appender: Mutex::new(Some(appender)),
            durable,
            segment_limit: std::sync::atomic::AtomicU64::new(0),
            cache_window: std::sync::atomic::AtomicU64::new(u64::MAX),
            write_io,
        }))
    }

    /// Sets how many of the newest bytes stay in the page cache once durable
    /// (`u64::MAX` keeps everything: the kernel alone decides).
    pub fn set_cache_window(&self, bytes: u64) {
        self.cache_window
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    fn cache_window(&self) -> u64 {
        self.cache_window.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True when the active segment is written with direct I/O.
    pub fn writes_direct(&self) -> bool {
        self.appender
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|a| a.direct.is_some())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn bounds(&self) -> LogBounds {
        let p = self.published.read().unwrap();
        LogBounds {
            first_offset: p
                .segments
                .first()
                .map(|s| s.summary.header.base_offset)
                .unwrap_or(0),
            end_offset: p.end_offset,
            last_timestamp_ms: p.last_timestamp_ms,
        }
    }

    /// A receiver that changes whenever new entries become durable.
    pub fn watch_end(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.published.read().unwrap().segments.len()
    }

    /// Reads up to `max_entries` entries (and about `max_payload_bytes` of payload, but
    /// at least one entry) starting at `from`. A position before the trim horizon reads
    /// from the trim horizon.
    pub fn read(
        &self,
        from: u64,
        max_entries: usize,
        max_payload_bytes: usize,
        access: ReadAccess,
    ) -> io::Result<ReadBatch> {
        let mut out = ReadBatch {
            entries: Vec::new(),
            next_offset: from,
        };
        let mut bytes = 0usize;
        loop {
            if out.entries.len() >= max_entries
                || (bytes >= max_payload_bytes && !out.entries.is_empty())
            {
                return Ok(out);
            }
            // Locate the segment for `next_offset` under the lock, then read without it.
            let Some(Located {
                file,
                point,
                seg_end,
                valid_len,
                drop_below,
            }) = self.locate(&mut out.next_offset, access)
            else {
                return Ok(out);
            };
            let want_entries = max_entries - out.entries.len();
            let want_bytes = max_payload_bytes.saturating_sub(bytes);
            let got = read_segment(
                &file,
                SegmentRead {
                    position: point.position,
                    point_offset: point.offset,
                    from: out.next_offset,
                    seg_end,
                    valid_len,
                    drop_below,
                },
                want_entries,
                want_bytes,
            )?;
            if got.is_empty() {
                return Ok(out);
            }
            for frame in got {
                bytes += frame.payload.len();
                out.next_offset = frame.offset + 1;
                out.entries.push(frame);
            }
        }
    }

    /// Finds the segment holding `next` (moved to the trim horizon if it is older, or
    /// to the next segment's base at the end of a sealed one), with the nearest index
    /// point. `None` at the durable end.
    fn locate(&self, next: &mut u64, access: ReadAccess) -> Option<Located> {
        let p = self.published.read().unwrap();
        let first = p
            .segments
            .first()
            .map(|s| s.summary.header.base_offset)
            .unwrap_or(0);
        if *next < first {
            *next = first;
        }
        loop {
            if *next >= p.end_offset {
                return None;
            }
            let idx = p
                .segments
                .partition_point(|s| s.summary.header.base_offset <= *next)
                .saturating_sub(1);
            let seg = &p.segments[idx];
            if *next >= seg.summary.end_offset {
                // A gap (should not happen) or the end of a sealed segment: move on.
                *next = p.segments.get(idx + 1)?.summary.header.base_offset;
                continue;
            }
            return Some(Located {
                file: seg.file.clone(),
                point: seg.summary.point_for_offset(*next),
                seg_end: seg.summary.end_offset.min(p.end_offset),
                valid_len: seg.summary.valid_len,
                drop_below: match access {
                    ReadAccess::Cached => 0,
                    ReadAccess::Scan => window_start(&p.segments, idx, self.cache_window()),
                },
            });
        }
    }

    /// The offset of the first entry stamped at or after `timestamp_ms` (the end offset
    /// when there is none).
    pub fn offset_at_time(&self, timestamp_ms: i64) -> io::Result<u64> {
        let (file, point, seg_end, valid_len) = {
            let p = self.published.read().unwrap();
            let Some(seg) = p
                .segments
                .iter()
                .find(|s| !s.summary.is_empty() && s.summary.last_timestamp_ms >= timestamp_ms)
            else {
                return Ok(p.end_offset);
            };
            let point = seg.summary.point_for_time(timestamp_ms);
            (
                seg.file.clone(),
                point,
                seg.summary.end_offset.min(p.end_offset),
                seg.summary.valid_len,
            )
        };
        let mut position = point.position;
        let mut offset = point.offset;
        while offset < seg_end {
            let frames = read_segment(
                &file,
                SegmentRead {
                    position,
                    point_offset: offset,
                    from: offset,
                    seg_end,
                    valid_len,
                    drop_below: 0,
                },
                1024,
                usize::MAX,
            )?;
            if frames.is_empty() {
                break;
            }
            for f in &frames {
                if f.timestamp_ms >= timestamp_ms {
                    return Ok(f.offset);
                }
                position += (FRAME_OVERHEAD + f.payload.len()) as u64;
            }
            offset = frames.last().unwrap().offset + 1;
        }
        Ok(seg_end)
    }

    /// Deletes whole sealed segments whose newest entry is older than `cutoff_ms`.
    /// Returns the number of segments removed. The active segment is never removed
    /// here (see [`Log::active_is_stale`]).
    pub fn trim_before(&self, cutoff_ms: i64) -> io::Result<usize> {
        let removed: Vec<Segment> = {
            let mut p = self.published.write().unwrap();
            let sealed = p.segments.len().saturating_sub(1);
            let n = p.segments[..sealed]
                .iter()
                .take_while(|s| s.summary.last_timestamp_ms < cutoff_ms)
                .count();
            p.segments.drain(..n).collect()
        };
        self.remove_segments(&removed, "expired")?;
        Ok(removed.len())
    }

    /// Bytes of all segments (sealed and active) as published.
    pub fn total_bytes(&self) -> u64 {
        let p = self.published.read().unwrap();
        p.segments.iter().map(|s| s.summary.valid_len).sum()
    }

    /// Sets this log's own segment size limit (0 = the store's roll policy alone).
    pub fn set_segment_limit(&self, bytes: u64) {
        self.segment_limit
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Deletes the oldest whole sealed segments while the log holds more than
    /// `max_bytes`. The active segment is never removed. Returns segments removed.
    pub fn trim_to_size(&self, max_bytes: u64) -> io::Result<usize> {
        let removed: Vec<Segment> = {
            let mut p = self.published.write().unwrap();
            let mut total: u64 = p.segments.iter().map(|s| s.summary.valid_len).sum();
            let sealed = p.segments.len().saturating_sub(1);
            let mut n = 0;
            while n < sealed && total > max_bytes {
                total -= p.segments[n].summary.valid_len;
                n += 1;
            }
            p.segments.drain(..n).collect()
        };
        self.remove_segments(&removed, "over the size cap")?;
        Ok(removed.len())
    }

    fn remove_segments(&self, removed: &[Segment], why: &str) -> io::Result<()> {
        for seg in removed {
            let base = seg.summary.header.base_offset;
            fs::remove_file(&seg.path)?;
            let _ = fs::remove_file(index_path(&self.dir, base));
            tracing::debug!(log = %self.id, base, why, "deleted segment");
        }
        if !removed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// True when the active segment holds entries all older than `cutoff_ms`, so it
    /// should be sealed to let retention delete it.
    pub fn active_is_stale(&self, cutoff_ms: i64) -> bool {
        let p = self.published.read().unwrap();
        p.segments
            .last()
            .is_some_and(|s| !s.summary.is_empty() && s.summary.last_timestamp_ms < cutoff_ms)
    }

    // ---- writer-thread side ----

    /// Encodes `payloads` as frames after the current end, stamps them
    /// `max(now, last timestamp)` and writes them (not yet synced). Rolls to a new segment
    /// first when the active one is full or old. Returns the first offset and timestamp.
    pub(super) fn write_batch(
        &self,
        payloads: &[Entry],
        now_ms: i64,
        stamp_ms: i64,
        roll: &RollPolicy,
        buffers: &mut WriteBuffers,
    ) -> io::Result<(u64, i64)> {
        let mut guard = self.appender.lock().unwrap();
        let appender = guard.as_mut().ok_or_else(|| {
            io::Error::other(format!("log {} is failed; restart needed", self.id))
        })?;
        let own = self
            .segment_limit
            .load(std::sync::atomic::Ordering::Relaxed);
        let roll = &RollPolicy {
            max_segment_bytes: if own == 0 {
                roll.max_segment_bytes
            } else {
                own.min(roll.max_segment_bytes)
            },
            ..*roll
        };
        if roll.should_roll(&appender.summary, now_ms) {
            // The new segment is created at the time its first entry gets, so that the
            // entry may carry an arrival time before the roll.
            let first = stamp_ms.max(appender.summary.last_timestamp_ms);
            self.roll_locked(appender, first)?;
        }
        appender.index_current = false;
        let summary = &mut appender.summary;
        // Timestamps never go backwards within a log, even if the wall clock does (or
        // an entry arrived before the last one was stamped). An empty segment's floor
        // is its creation time, except for the first of a new log (nothing before).
        let floor = if summary.end_offset == 0 {
            i64::MIN
        } else {
            summary.last_timestamp_ms
        };
        let timestamp = stamp_ms.max(floor);
        let first_offset = summary.end_offset;
        let start_position = summary.valid_len;
        let frame_lens: Vec<u64> = payloads
            .iter()
            .map(|p| (FRAME_OVERHEAD + p.len()) as u64)
            .collect();
        if let Err(e) = appender.write_frames(
            &self.id,
            &self.dir,
            payloads,
            first_offset,
            timestamp,
            buffers,
        ) {
            // Nothing was published. Cut off whatever part of the batch reached the
            // file, so that a later, shorter batch cannot leave stale frames with
            // matching offsets behind it for recovery to resurrect.
            if appender.file.set_len(start_position).is_err() {
                *guard = None;
            }
            return Err(e);
        }
        let summary = &mut appender.summary;
        let mut position = start_position;
        for (i, len) in frame_lens.into_iter().enumerate() {
            summary.note_frame(first_offset + i as u64, position, timestamp, len);
            position += len;
        }
        Ok((first_offset, timestamp))
    }

    /// At a clean shutdown: makes the active segment durable and writes its index file,
    /// so that the next open takes the segment's summary from it instead of reading
    /// and checking the whole segment (see [`nothing_after`] for why a later append
    /// can never be hidden by it). Returns whether anything was written. Blocking.
    pub(super) fn close_clean(&self) -> io::Result<bool> {
        let mut guard = self.appender.lock().unwrap();
        let Some(appender) = guard.as_mut() else {
            return Ok(false);
        };
        if appender.index_current {
            return Ok(false);
        }
        appender.file.sync_data()?;
        write_atomically(
            &self.dir,
            &index_path(&self.dir, appender.summary.header.base_offset),
            &appender.summary.encode_index(),
        )?;
        appender.index_current = true;
        Ok(true)
    }

    /// Makes written entries durable (fdatasync of the active segment).
    pub(super) fn sync(&self) -> io::Result<()> {
        let guard = self.appender.lock().unwrap();
        match guard.as_ref() {
            Some(a) => {
                let started = std::time::Instant::now();
                let r = a.file.sync_data();
                crate::metrics::metrics()
                    .fsync_latency
                    .observe(crate::metrics::seconds_since(started));
                r
            }
            None => Err(io::Error::other("log is failed")),
        }
    }

    /// Drops written data outside the cache window from the page cache; called after
    /// each group commit. Under `fsync` durability that data is clean and is dropped;
    /// under `unsafe-no-fsync` the kernel only starts writing it back, and it stays
    /// cached until reclaimed. Either way the log stops tracking it, so it never holds
    /// on to files that retention has deleted.
    pub(super) fn drop_behind(&self) {
        if let Some(a) = self.appender.lock().unwrap().as_mut() {
            a.cached.trim(self.cache_window());
        }
    }

    /// Marks the log failed after a sync error: the kernel may have dropped the dirty
    /// pages, so what we wrote can no longer be trusted until recovery re-reads it.
    pub(super) fn fail(&self) {
        *self.appender.lock().unwrap() = None;
    }

    /// Publishes everything written so far to readers and wakes followers.
    pub(super) fn publish(&self) {
        let guard = self.appender.lock().unwrap();
        let Some(appender) = guard.as_ref() else {
            return;
        };
        let end = {
            let mut p = self.published.write().unwrap();
            let Some(active) = p.segments.last_mut() else {
                return;
            };
            debug_assert_eq!(active.summary.header, appender.summary.header);
            let known = active.summary.points.len();
            active
                .summary
                .points
                .extend_from_slice(&appender.summary.points[known..]);
            active.summary.end_offset = appender.summary.end_offset;
            active.summary.valid_len = appender.summary.valid_len;
            active.summary.first_timestamp_ms = appender.summary.first_timestamp_ms;
            active.summary.last_timestamp_ms = appender.summary.last_timestamp_ms;
            if !appender.summary.is_empty() {
                p.last_timestamp_ms = appender.summary.last_timestamp_ms;
            }
            p.end_offset = appender.summary.end_offset;
            p.end_offset
        };
        self.durable.send_replace(end);
    }

    /// Seals the active segment if it holds only entries older than `cutoff_ms`.
    pub(super) fn roll_if_stale(&self, cutoff_ms: i64, now_ms: i64) -> io::Result<bool> {
        let mut guard = self.appender.lock().unwrap();
        let Some(appender) = guard.as_mut() else {
            return Ok(false);
        };
        if appender.summary.is_empty() || appender.summary.last_timestamp_ms >= cutoff_ms {
            return Ok(false);
        }
        self.roll_locked(appender, now_ms)?;
        Ok(true)
    }

    /// Seals the active segment (index file written durably) and starts a new one.
    fn roll_locked(&self, appender: &mut Appender, now_ms: i64) -> io::Result<()> {
        appender.file.sync_data()?;
        let sealed = appender.summary.clone();
        let base = sealed.header.base_offset;
        write_atomically(
            &self.dir,
            &index_path(&self.dir, base),
            &sealed.encode_index(),
        )?;
        let new_base = sealed.end_offset;
        let summary = create_segment(&self.dir, new_base, now_ms)?;
        let path = segment_path(&self.dir, new_base);
        let read_handle = Arc::new(File::open(&path)?);
        let next = new_appender(&path, summary.clone(), self.write_io)?;
        {
            let mut p = self.published.write().unwrap();
            if let Some(active) = p.segments.last_mut() {
                active.summary = sealed;
            }
            p.segments.push(Segment {
                summary,
                path,
                file: read_handle,
            });
        }
        // Written spans of the sealed file stay tracked for drop-behind.
        let cached = std::mem::take(&mut appender.cached);
        *appender = Appender { cached, ..next };
        tracing::debug!(log = %self.id, base = new_base, "rolled to a new segment");
        Ok(())
    }
}

/// Writes `payloads` as frames at `position` through the page cache: frame headers
/// from `scratch`, bodies from where they are, in one vectored write.
fn write_frames_buffered(
    file: &File,
    payloads: &[Entry],
    first_offset: u64,
    timestamp_ms: i64,
    position: u64,
    scratch: &mut BytesMut,
) -> io::Result<()> {
    scratch.clear();
    let mut prefix_ends = Vec::with_capacity(payloads.len());
    for (i, payload) in payloads.iter().enumerate() {
        segment::encode_frame_prefix(
            scratch,
            first_offset + i as u64,
            timestamp_ms,
            &payload.head,
            &payload.body,
        );
        prefix_ends.push(scratch.len());
    }
    let mut slices = Vec::with_capacity(payloads.len() * 2);
    let mut from = 0;
    for (payload, &end) in payloads.iter().zip(&prefix_ends) {
        slices.push(io::IoSlice::new(&scratch[from..end]));
        if !payload.body.is_empty() {
            slices.push(io::IoSlice::new(&payload.body));
        }
        from = end;
    }
    write_all_vectored_at(file, &mut slices, position)
}

/// Writes all of `slices` at `offset` with as few `pwritev` calls as the kernel allows.
fn write_all_vectored_at(
    file: &File,
    mut slices: &mut [io::IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // The kernel takes at most IOV_MAX (1024 on Linux) buffers per call.
    const MAX_IOVECS: usize = 1024;
    while !slices.is_empty() {
        let count = slices.len().min(MAX_IOVECS);
        // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on Unix, and every
        // slice borrows memory that lives for the whole call.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                slices.as_ptr().cast::<libc::iovec>(),
                count as libc::c_int,
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(ErrorKind::WriteZero.into());
        }
        offset += n as u64;
        io::IoSlice::advance_slices(&mut slices, n as usize);
    }
    Ok(())
}

/// When the writer starts a new segment.
#[derive(Debug, Clone, Copy)]
pub struct RollPolicy {
    pub max_segment_bytes: u64,
    pub max_segment_age_ms: i64,
}

impl RollPolicy {
    fn should_roll(&self, active: &SegmentSummary, now_ms: i64) -> bool {
        !active.is_empty()
            && (active.valid_len >= self.max_segment_bytes
                || now_ms - active.first_timestamp_ms >= self.max_segment_age_ms)
    }
}

/// The position in segment `idx` below which its bytes lie outside the newest
/// `window` bytes of the log (0: all of it is inside; `u64::MAX`: none of it is).
fn window_start(segments: &[Segment], idx: usize, window: u64) -> u64 {
    if window == u64::MAX {
        return 0;
    }
    let newer: u64 = segments[idx + 1..]
        .iter()
        .map(|s| s.summary.valid_len)
        .sum();
    if newer >= window {
        return u64::MAX;
    }
    segments[idx]
        .summary
        .valid_len
        .saturating_sub(window - newer)
}

/// Where one segment read starts and stops.
struct SegmentRead {
    /// Index point to start parsing at: file position and the offset found there.
    position: u64,
    point_offset: u64,
    /// First offset wanted.
    from: u64,
    /// Never past this offset or this file length.
    seg_end: u64,
    valid_len: u64,
    /// Bytes read below this position are dropped from the page cache afterwards.
    drop_below: u64,
}

/// Reads frames from one segment: starting at the index point, skipping to `from`,
/// never past `seg_end` or `valid_len`.
fn read_segment(
    file: &File,
    at: SegmentRead,
    max_entries: usize,
    max_payload_bytes: usize,
) -> io::Result<Vec<Frame>> {
    let SegmentRead {
        mut position,
        point_offset,
        from,
        seg_end,
        valid_len,
        drop_below,
    } = at;
    const MIN_CHUNK: u64 = 256 * 1024;
    const MAX_CHUNK: u64 = 16 * 1024 * 1024;
    let mut out = Vec::new();
    let mut offset = point_offset;
    let mut bytes = 0usize;
    let mut chunk_len =
        ((max_payload_bytes as u64).saturating_add(64 * 1024)).clamp(MIN_CHUNK, MAX_CHUNK);
    while offset < seg_end && out.len() < max_entries && position < valid_len {
        let len = chunk_len.min(valid_len - position) as usize;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, position)?;
        if position < drop_below {
            drop_cached(file, position, (len as u64).min(drop_below - position));
        }
        let chunk = Bytes::from(buf);
        let skip = if offset < from {
            (from - offset) as usize
        } else {
            0
        };
        let (frames, consumed) = segment::parse_frames(
            &chunk,
            offset,
            seg_end,
            max_entries - out.len() + skip,
            if skip > 0 {
                usize::MAX
            } else {
                max_payload_bytes.saturating_sub(bytes)
            },
        )
        .map_err(|e| {
            io::Error::new(
                ErrorKind::InvalidData,
                format!("corrupt frame at position {position}: {e:?}"),
            )
        })?;
        if frames.is_empty() {
            // The next frame is larger than the chunk: read exactly enough for it.
            match segment::decode_frame(&chunk) {
                Err(FrameError::Incomplete { needed })
                    if (needed as u64) <= valid_len - position =>
                {
                    chunk_len = needed as u64;
                    continue;
                }
                Err(FrameError::Corrupt) => {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        format!("corrupt frame at position {position}"),
                    ));
                }
                _ => break,
            }
        }
        position += consumed as u64;
        offset = frames.last().map(|f| f.offset + 1).unwrap_or(offset);
        for f in frames {
            if f.offset < from {
                continue;
            }
            if !out.is_empty() && bytes + f.payload.len() > max_payload_bytes {
                return Ok(out);
            }
            bytes += f.payload.len();
            out.push(f);
        }
        if bytes >= max_payload_bytes && !out.is_empty() {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str) -> Arc<File> {
        let f = File::create(dir.join(name)).unwrap();
        f.set_len(1 << 20).unwrap();
        Arc::new(f)
    }

    #[test]
    fn drop_behind_keeps_the_newest_window_and_lets_go_of_old_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (file(dir.path(), "a"), file(dir.path(), "b"));
        let mut d = DropBehind::default();
        d.note(&a, 0, 100);
        d.note(&a, 100, 300);
        assert_eq!(
            d.spans.len(),
            1,
            "contiguous writes to one file make one span"
        );
        d.note(&b, 0, 200);
        assert_eq!((d.spans.len(), d.bytes), (2, 500));
        // Under one and a half windows: nothing is dropped yet.
        d.trim(400);
        assert_eq!(d.bytes, 500);
        // Over it: down to exactly the window, the oldest bytes first.
        d.trim(300);
        assert_eq!(d.bytes, 300);
        assert_eq!(d.spans.len(), 2);
        assert_eq!((d.spans[0].1, d.spans[0].2), (200, 300));
        d.trim(150);
        assert_eq!(d.bytes, 150);
        assert_eq!(d.spans.len(), 1, "file a is no longer referenced");
        assert_eq!(Arc::strong_count(&a), 1);
        assert_eq!((d.spans[0].1, d.spans[0].2), (50, 200));
        // No window: nothing is tracked, no file is held.
        d.trim(u64::MAX);
        assert!(d.spans.is_empty());
        assert_eq!(Arc::strong_count(&b), 1);
    }

    #[test]
    fn a_batch_lands_on_disk_exactly_as_encoded_frames_even_past_the_iovec_limit() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open("t", dir.path(), 1_000, WriteIo::Buffered).unwrap();
        // 700 entries need 1,400 buffers: more than one pwritev call takes.
        let payloads: Vec<Entry> = (0..700u32)
            .map(|i| Entry {
                head: Bytes::from(vec![i as u8; (i % 3) as usize]),
                body: Bytes::from(vec![(i % 251) as u8; (i % 5 * 37) as usize]),
            })
            .collect();
        let roll = RollPolicy {
            max_segment_bytes: u64::MAX,
            max_segment_age_ms: i64::MAX,
        };
        let mut buffers = WriteBuffers::default();
        let (first, ts) = log
            .write_batch(&payloads, 2_000, 2_000, &roll, &mut buffers)
            .unwrap();
        assert_eq!((first, ts), (0, 2_000));
        log.sync().unwrap();
        log.publish();
        assert_eq!(log.bounds().end_offset, 700);
        let mut expected = BytesMut::new();
        for (i, p) in payloads.iter().enumerate() {
            segment::encode_frame(&mut expected, i as u64, 2_000, &p.head, &p.body);
        }
        let on_disk = fs::read(segment_path(dir.path(), 0)).unwrap();
        assert_eq!(&on_disk[HEADER_LEN..], &expected[..]);
    }

    #[test]
    fn appends_read_back_exactly_across_blocks_and_reopens_in_both_write_modes() {
        let roll = RollPolicy {
            max_segment_bytes: u64::MAX,
            max_segment_age_ms: i64::MAX,
        };
        for write_io in [WriteIo::Direct, WriteIo::Buffered] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open("t", dir.path(), 1_000, write_io).unwrap();
            let direct = log.writes_direct();
            if write_io == WriteIo::Direct && !direct {
                eprintln!(
                    "the file system under {} refuses O_DIRECT",
                    dir.path().display()
                );
            }
            let mut buffers = WriteBuffers::default();
            let mut expected = BytesMut::new();
            let mut all = Vec::new();
            for round in 0..60u64 {
                if round == 30 {
                    // Reopen: the partial last block comes back from disk.
                    drop(log);
                    log = Log::open("t", dir.path(), 1_000, write_io).unwrap();
                }
                // Batches from a few bytes to several blocks, ending anywhere in a block.
                let payloads: Vec<Entry> = (0..round % 7 + 1)
                    .map(|i| {
                        let len = ((round * 131 + i * 977) % 9000) as usize;
                        Bytes::from(vec![(round + i) as u8; len]).into()
                    })
                    .collect();
                let (first, _) = log
                    .write_batch(&payloads, 2_000, 2_000, &roll, &mut buffers)
                    .unwrap();
                assert_eq!(first, all.len() as u64);
                log.sync().unwrap();
                log.publish();
                for (i, p) in payloads.iter().enumerate() {
                    segment::encode_frame(&mut expected, first + i as u64, 2_000, &p.head, &p.body);
                    all.push(p.body.clone());
                }
            }
            let on_disk = fs::read(segment_path(dir.path(), 0)).unwrap();
            let valid = HEADER_LEN + expected.len();
            assert_eq!(&on_disk[HEADER_LEN..valid], &expected[..], "{write_io:?}");
            if direct {
                assert_eq!(
                    on_disk.len() % DIRECT_ALIGN,
                    0,
                    "direct writes cover whole blocks"
                );
                assert!(on_disk[valid..].iter().all(|&b| b == 0), "padding is zeros");
            } else {
                assert_eq!(on_disk.len(), valid);
            }
            let read = log
                .read(0, usize::MAX, usize::MAX, ReadAccess::Cached)
                .unwrap();
            let bodies: Vec<Bytes> = read.entries.into_iter().map(|f| f.payload).collect();
            assert_eq!(bodies, all, "{write_io:?}");
        }
    }

    /// After a clean close the next open takes the active segment's summary from its
    /// index file; any append after that (small or large, buffered or direct: a write
    /// into the last block's padding does not grow a direct segment) has the segment
    /// read and checked in full again, so nothing written later is hidden; and a tail
    /// that is not a frame is still cut off.
    #[test]
    fn a_clean_close_spares_the_next_open_a_scan_and_hides_no_later_append() {
        let roll = RollPolicy {
            max_segment_bytes: u64::MAX,
            max_segment_age_ms: i64::MAX,
        };
        let trusted = |log: &Log| log.appender.lock().unwrap().as_ref().unwrap().index_current;
        let bodies = |log: &Log| -> Vec<Bytes> {
            let read = log
                .read(0, usize::MAX, usize::MAX, ReadAccess::Cached)
                .unwrap();
            read.entries.into_iter().map(|f| f.payload).collect()
        };
        for write_io in [WriteIo::Direct, WriteIo::Buffered] {
            let dir = tempfile::tempdir().unwrap();
            let mut buffers = WriteBuffers::default();
            let mut all: Vec<Bytes> = Vec::new();
            let mut append = |log: &Log, len: usize, all: &mut Vec<Bytes>| {
                let body = Bytes::from(vec![(all.len() % 251 + 1) as u8; len]);
                log.write_batch(&[body.clone().into()], 2_000, 2_000, &roll, &mut buffers)
                    .unwrap();
                log.sync().unwrap();
                log.publish();
                all.push(body);
            };
            let log = Log::open("t", dir.path(), 1_000, write_io).unwrap();
            for len in [10, 5000, 3] {
                append(&log, len, &mut all);
            }
            // Closed without a clean close (a crash): the next open scans.
            drop(log);
            let log = Log::open("t", dir.path(), 1_000, write_io).unwrap();
            assert!(!trusted(&log), "{write_io:?}");
            assert_eq!(bodies(&log), all);
            assert!(log.close_clean().unwrap(), "the summary is written");
            assert!(!log.close_clean().unwrap(), "and not again while current");
            drop(log);

            for (round, len) in [1usize, 100, 9000].into_iter().enumerate() {
                let log = Log::open("t", dir.path(), 1_000, write_io).unwrap();
                assert!(
                    trusted(&log),
                    "{write_io:?} round {round}: opened from the index"
                );
                assert_eq!(bodies(&log), all, "{write_io:?} round {round}");
                // One append after the trusted open, then a crash (no clean close).
                append(&log, len, &mut all);
                drop(log);
                let log = Log::open("t", dir.path(), 1_000, write_io).unwrap();
                assert!(
                    !trusted(&log),
                    "{write_io:?} round {round}: the append is seen"
                );
                assert_eq!(bodies(&log), all, "{write_io:?} round {round}");
                log.close_clean().unwrap();
            }

            // Bytes that are not frames after a clean close are cut off, as before.
            let seg = segment_path(dir.path(), 0);
            let valid = {
                let log = Log::open("t", dir.path(), 1_000, write_io).unwrap();
                assert!(trusted(&log));
                log.bounds();
                log.appender
                    .lock()
                    .unwrap()
                    .as_ref()
                    .unwrap()
                    .summary
                    .valid_len
            };
            let f = OpenOptions::new().write(true).open(&seg).unwrap();
            f.write_all_at(&[0xAB; 7], valid).unwrap();
            drop(f);
            let log = Log::open("t", dir.path(), 1_000, write_io).unwrap();
            assert!(!trusted(&log));
            assert_eq!(bodies(&log), all);
            assert_eq!(
                fs::metadata(&seg).unwrap().len(),
                valid,
                "the garbage is cut off"
            );
        }
    }

    #[test]
    fn readers_following_the_tail_always_see_every_published_entry_intact() {
        // Direct writes rewrite the last partial block that readers have just read
        // through the page cache; the kernel must never serve them the stale copy.
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open("t", dir.path(), 1_000, WriteIo::Direct).unwrap();
        let roll = RollPolicy {
            max_segment_bytes: 256 * 1024,
            max_segment_age_ms: i64::MAX,
        };
        let total = 1_500u64;
        let body = |i: u64| Bytes::from(format!("entry {i} ").repeat((i % 40) as usize + 1));
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    let mut next = 0;
                    while next < total {
                        let end = log.bounds().end_offset;
                        let got = log
                            .read(next, 100_000, usize::MAX, ReadAccess::Cached)
                            .unwrap();
                        assert!(
                            got.next_offset >= end,
                            "read {next}..{} of {end}",
                            got.next_offset
                        );
                        for frame in got.entries {
                            assert_eq!(frame.offset, next);
                            assert_eq!(frame.payload, body(next));
                            next += 1;
                        }
                    }
                });
            }
            let mut buffers = WriteBuffers::default();
            let mut next = 0;
            while next < total {
                let payloads: Vec<Entry> = (next..(next + next % 5 + 1).min(total))
                    .map(|i| body(i).into())
                    .collect();
                log.write_batch(&payloads, 2_000, 2_000, &roll, &mut buffers)
                    .unwrap();
                log.sync().unwrap();
                log.publish();
                next += payloads.len() as u64;
            }
        });
        assert!(log.segment_count() > 1, "the test crosses segment rolls");
    }

    #[test]
    fn a_file_system_that_refuses_direct_io_gets_buffered_writes() {
        let roll = RollPolicy {
            max_segment_bytes: 4096,
            max_segment_age_ms: i64::MAX,
        };
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open("t", dir.path(), 1_000, WriteIo::Direct).unwrap();
        if !log.writes_direct() {
            eprintln!(
                "the file system under {} refuses O_DIRECT",
                dir.path().display()
            );
            return;
        }
        let mut buffers = WriteBuffers::default();
        let mut all = Vec::new();
        let mut append = |log: &Log, n: usize| {
            let payloads: Vec<Entry> = (0..n)
                .map(|i| Bytes::from(vec![(all.len() + i) as u8; 700]).into())
                .collect();
            log.write_batch(&payloads, 2_000, 2_000, &roll, &mut buffers)
                .unwrap();
            log.sync().unwrap();
            log.publish();
            all.extend(payloads.into_iter().map(|p| p.body));
        };
        append(&log, 3);
        assert!(log.writes_direct());
        // Refused at the first write: this batch and the rest of the segment go
        // through the page cache.
        refused::WRITE.set(true);
        append(&log, 2);
        assert!(!log.writes_direct(), "fell back at the write");
        refused::WRITE.set(false);
        // Refused at open: the next segment (the second batch rolls to it) is
        // buffered from the start.
        refused::OPEN.set(true);
        append(&log, 8);
        append(&log, 1);
        assert_eq!(log.segment_count(), 2);
        assert!(!log.writes_direct(), "fell back at the open");
        refused::OPEN.set(false);
        // Exactly what was appended, readable, and again after a reopen.
        let read = |log: &Log| -> Vec<Bytes> {
            let got = log.read(0, 1_000, usize::MAX, ReadAccess::Cached).unwrap();
            got.entries.into_iter().map(|f| f.payload).collect()
        };
        assert_eq!(read(&log), all);
        drop(log);
        let log = Log::open("t", dir.path(), 1_000, WriteIo::Direct).unwrap();
        assert_eq!(read(&log), all);
        assert!(log.writes_direct(), "a new open tries direct I/O again");
    }
}
