//! The persistent fragment index (`video::index`, `video::index_log`) against a plain
//! in-memory model, through `VideoService` over a real `Store` in a temporary
//! directory on simulated time.
//!
//! Random steps: appends whose producer timestamps go forwards, backwards, repeat or
//! jump by an hour; retention trims (whole segments); and "crashes": the service is
//! dropped and reopened on the same files, after which the index log may lose a random
//! number of rows from its tail or be deleted outright, and its checkpoint (written
//! every few rows here: `VideoConfig::index_checkpoint_rows`) may be torn at a random
//! byte, replaced by an older one (stale), rewritten to claim more rows than the log
//! holds, or deleted. After every step, ListFragments (whole, paged, by range, on both
//! clocks, both range rules) and GetMedia's time selectors answer exactly as the model
//! does, and the index is rebuilt from every fragment only when its log was deleted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use freshet::clock::ManualClock;
use freshet::store::catalog::RedbCatalog;
use freshet::store::segment::{FRAME_OVERHEAD, HEADER_LEN};
use freshet::store::{Durability, RollPolicy, Store, StoreConfig, WriteIo};
use freshet::video::fragments::{FragmentMeta, parse_fragment_number};
use freshet::video::index::{ROW_LEN, RangeRule, TimeBase, TimeRange};
use freshet::video::{
    CreateVideoStream, FragmentListing, MediaStart, VideoConfig, VideoRef, VideoService,
    VideoStreamMeta,
};
use proptest::prelude::*;

const HOUR: i64 = 3_600_000;
const START_MS: i64 = 1_700_000_000_000;

#[derive(Debug, Clone)]
enum Producer {
    Forward,
    Backward,
    Duplicate,
    JumpForward,
    JumpBack,
}

#[derive(Debug, Clone)]
enum Crash {
    /// Only the in-memory state is lost.
    DropState,
    /// The index log also loses this many rows from its tail.
    TruncateTail(usize),
    /// The index log is deleted.
    DeleteIndex,
    /// The checkpoint is cut at this byte (modulo its length).
    TearCheckpoint(usize),
    /// The checkpoint is replaced by one seen earlier (this one, modulo how many).
    StaleCheckpoint(usize),
    /// The checkpoint claims to cover this many index-log rows more than the log holds
    /// (its CRC made right again, so only the claim is wrong).
    CheckpointAhead(u64),
    /// The checkpoint is deleted.
    DeleteCheckpoint,
}

#[derive(Debug, Clone)]
enum Step {
    Append {
        producer: Producer,
        duration_ms: u64,
        size: usize,
        /// Simulated time before the append.
        wait_ms: i64,
    },
    /// Time passes, then retention runs.
    Expire {
        wait_ms: i64,
    },
    Crash(Crash),
}

fn step() -> impl Strategy<Value = Step> {
    let producer = prop_oneof![
        6 => Just(Producer::Forward),
        2 => Just(Producer::Backward),
        2 => Just(Producer::Duplicate),
        1 => Just(Producer::JumpForward),
        1 => Just(Producer::JumpBack),
    ];
    prop_oneof![
        12 => (producer, 0u64..3000, 1usize..600, 0i64..(20 * 60_000)).prop_map(
            |(producer, duration_ms, size, wait_ms)| Step::Append {
                producer,
                duration_ms,
                size,
                wait_ms,
            }
        ),
        2 => (0i64..(2 * HOUR)).prop_map(|wait_ms| Step::Expire { wait_ms }),
        1 => Just(Step::Crash(Crash::DropState)),
        1 => (0usize..8).prop_map(|n| Step::Crash(Crash::TruncateTail(n))),
        1 => Just(Step::Crash(Crash::DeleteIndex)),
        1 => any::<usize>().prop_map(|n| Step::Crash(Crash::TearCheckpoint(n))),
        1 => any::<usize>().prop_map(|n| Step::Crash(Crash::StaleCheckpoint(n))),
        1 => (1u64..10).prop_map(|n| Step::Crash(Crash::CheckpointAhead(n))),
        1 => Just(Step::Crash(Crash::DeleteCheckpoint)),
    ]
}

/// One fragment as the model knows it.
#[derive(Debug, Clone, Copy)]
struct Frag {
    offset: u64,
    server_ms: i64,
    producer_ms: i64,
    duration_ms: u64,
    size: u64,
}

impl Frag {
    fn start(&self, base: TimeBase) -> i64 {
        match base {
            TimeBase::Server => self.server_ms,
            TimeBase::Producer => self.producer_ms,
        }
    }
}

/// The model: every stored fragment, by offset.
#[derive(Debug, Default)]
struct Model {
    frags: BTreeMap<u64, Frag>,
    end: u64,
}

impl Model {
    fn ordered(&self, base: TimeBase) -> Vec<Frag> {
        let mut v: Vec<Frag> = self.frags.values().copied().collect();
        if base == TimeBase::Producer {
            v.sort_by_key(|f| (f.producer_ms, f.offset));
        }
        v
    }

    fn select(&self, base: TimeBase, r: &TimeRange) -> Vec<u64> {
        self.ordered(base)
            .into_iter()
            .filter(|f| {
                let s = f.start(base);
                match r.rule {
                    RangeRule::StartWithin => r.start_ms <= s && s <= r.end_ms,
                    RangeRule::Overlapping => {
                        s < r.end_ms && (s + f.duration_ms as i64 > r.start_ms || s >= r.start_ms)
                    }
                }
            })
            .map(|f| f.offset)
            .collect()
    }

    fn first_at_or_after(&self, base: TimeBase, t: i64) -> u64 {
        self.ordered(base)
            .into_iter()
            .find(|f| f.start(base) >= t)
            .map_or(self.end, |f| f.offset)
    }
}

/// Rows between two checkpoints in these tests: small, so that checkpoints are
/// written, read and damaged often.
const CHECKPOINT_ROWS: u64 = 3;

struct Harness {
    dir: PathBuf,
    clock: Arc<ManualClock>,
    video: Option<Arc<VideoService>>,
    store: Weak<Store>,
}

impl Harness {
    async fn open(dir: &Path, clock: Arc<ManualClock>) -> Harness {
        let store = Store::open(
            &dir.join("data"),
            StoreConfig {
                durability: Durability::UnsafeNoFsync,
                roll: RollPolicy {
                    max_segment_bytes: 2 * 1024,
                    max_segment_age_ms: HOUR / 2,
                },
                write_io: WriteIo::Buffered,
                ..StoreConfig::default()
            },
            clock.clone(),
        )
        .unwrap();
        let weak = Arc::downgrade(&store);
        let catalog = Arc::new(RedbCatalog::open(&dir.join("catalog.redb")).unwrap());
        let config = VideoConfig {
            state_delay_ms: 0,
            index_checkpoint_rows: CHECKPOINT_ROWS,
            ..VideoConfig::default()
        };
        let video = VideoService::open(config, clock.clone(), catalog, store)
            .await
            .unwrap();
        Harness {
            dir: dir.to_path_buf(),
            clock,
            video: Some(video),
            store: weak,
        }
    }

    fn video(&self) -> &Arc<VideoService> {
        self.video.as_ref().unwrap()
    }

    fn meta(&self) -> VideoStreamMeta {
        self.video()
            .get(&VideoRef {
                name: Some("cam".into()),
                arn: None,
            })
            .unwrap()
    }

    /// Drops the service and waits (with a deadline) until nothing holds the store:
    /// the index row writers have finished and the files are closed.
    async fn stop(&mut self) {
        self.video = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.store.upgrade().is_some() {
            assert!(Instant::now() < deadline, "the store was never released");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The index log's directory (none before the stream's first use).
    fn index_dir(&self) -> Option<PathBuf> {
        let mut dirs = vec![self.dir.join("data")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    if p.file_name().is_some_and(|n| n == "fragment-index") {
                        return Some(p);
                    }
                    dirs.push(p);
                }
            }
        }
        None
    }

    /// The checkpoint file of the index log, if there is one.
    fn checkpoint(&self) -> Option<PathBuf> {
        let p = self.index_dir()?.join("checkpoint");
        p.exists().then_some(p)
    }

    /// Damages the checkpoint as `kind` says; `false` when there is none to damage.
    fn damage_checkpoint(&self, kind: &Crash, seen: &[Vec<u8>]) -> bool {
        let Some(path) = self.checkpoint() else {
            return false;
        };
        let bytes = std::fs::read(&path).unwrap();
        match kind {
            Crash::TearCheckpoint(at) => {
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.set_len((at % bytes.len()) as u64).unwrap();
            }
            Crash::StaleCheckpoint(i) => {
                let Some(old) = seen.get(i % seen.len().max(1)) else {
                    return false;
                };
                std::fs::write(&path, old).unwrap();
            }
            Crash::CheckpointAhead(more) => {
                // Layout (video::frozen): magic (8), covered index-log offset (8), count
                // (8), longest duration (8), rows, producer order, CRC32C.
                let rows = self.index_rows_held();
                let mut body = bytes[..bytes.len() - 4].to_vec();
                body[8..16].copy_from_slice(&(rows + more).to_le_bytes());
                let crc = crc32c::crc32c(&body);
                body.extend_from_slice(&crc.to_le_bytes());
                std::fs::write(&path, body).unwrap();
            }
            Crash::DeleteCheckpoint => std::fs::remove_file(&path).unwrap(),
            _ => return false,
        }
        true
    }

    /// The index log's last segment file and the rows it holds, if there is one.
    fn last_index_segment(&self) -> Option<(PathBuf, usize)> {
        let dir = self.index_dir()?;
        let mut segs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segs.sort();
        let last = segs.pop()?;
        let len = std::fs::metadata(&last).unwrap().len() as usize;
        let rows = len.saturating_sub(HEADER_LEN) / (FRAME_OVERHEAD + ROW_LEN);
        Some((last, rows))
    }

    /// One past the last index-log offset on disk: the offset the log's last segment
    /// starts at (its file name) plus the rows it holds.
    fn index_rows_held(&self) -> u64 {
        let Some((last, rows)) = self.last_index_segment() else {
            return 0;
        };
        let base: u64 = last
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        base + rows as u64
    }

    /// Cuts `rows` rows off the end of the index log's last segment (at most all of it);
    /// returns how many it cut.
    fn truncate_index_tail(&self, rows: usize) -> u64 {
        let Some((last, held)) = self.last_index_segment() else {
            return 0;
        };
        let cut = rows.min(held);
        let keep = HEADER_LEN + (held - cut) * (FRAME_OVERHEAD + ROW_LEN);
        let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
        f.set_len(keep as u64).unwrap();
        cut as u64
    }
}

async fn list(
    video: &VideoService,
    meta: &VideoStreamMeta,
    base: TimeBase,
    range: Option<TimeRange>,
    max: usize,
) -> Vec<u64> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for page_number in 0usize.. {
        // Later pages alternate between the two forms the API allows: the token with
        // the selector repeated (as boto3's paginator sends it), and the token alone,
        // which must continue the same listing (clock and range).
        let token_only = token.is_some() && page_number % 2 == 1;
        let page = video
            .list_fragments(
                meta,
                &FragmentListing {
                    base: (!token_only).then_some(base),
                    range: if token_only { None } else { range },
                    next_token: token,
                    max,
                },
            )
            .await
            .unwrap();
        assert!(page.fragments.len() <= max);
        out.extend(
            page.fragments
                .iter()
                .map(|f| parse_fragment_number(&f.number).unwrap().1),
        );
        match page.next_token {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
    unreachable!("the pages end")
}

/// Every query, against the model.
async fn check(h: &Harness, model: &Model, probe: (i64, i64), context: &str) {
    let video = h.video();
    let meta = h.meta();
    for base in [TimeBase::Server, TimeBase::Producer] {
        let want: Vec<u64> = model.ordered(base).iter().map(|f| f.offset).collect();
        let page = video
            .list_fragments(
                &meta,
                &FragmentListing {
                    base: Some(base),
                    range: None,
                    next_token: None,
                    max: 100_000,
                },
            )
            .await
            .unwrap();
        let got: Vec<u64> = page
            .fragments
            .iter()
            .map(|f| parse_fragment_number(&f.number).unwrap().1)
            .collect();
        assert_eq!(got, want, "{context}: all on {base:?}");
        for f in &page.fragments {
            let m = model.frags[&f.entry.offset];
            assert_eq!(
                (
                    f.entry.server_ms,
                    f.entry.producer_ms,
                    f.entry.duration_ms,
                    f.entry.size
                ),
                (m.server_ms, m.producer_ms, m.duration_ms, m.size),
                "{context}: entry {}",
                m.offset
            );
        }
        assert_eq!(
            list(video, &meta, base, None, 3).await,
            want,
            "{context}: paged on {base:?}"
        );
        // Ranges around the model's own times.
        let times: Vec<i64> = model.ordered(base).iter().map(|f| f.start(base)).collect();
        let (lo, hi) = (
            times.iter().min().copied().unwrap_or(START_MS),
            times.iter().max().copied().unwrap_or(START_MS),
        );
        let span = (hi - lo).max(1) + 2000;
        let a = lo - 1000 + probe.0.rem_euclid(span);
        let b = a + probe.1.rem_euclid(span);
        for rule in [RangeRule::StartWithin, RangeRule::Overlapping] {
            let r = TimeRange {
                start_ms: a,
                end_ms: b,
                rule,
            };
            assert_eq!(
                list(video, &meta, base, Some(r), 2).await,
                model.select(base, &r),
                "{context}: {r:?} on {base:?}"
            );
        }
        let start = match base {
            TimeBase::Server => MediaStart::ServerTime(a),
            TimeBase::Producer => MediaStart::ProducerTime(a),
        };
        assert_eq!(
            video.media_start(&meta, &start).await.unwrap(),
            model.first_at_or_after(base, a),
            "{context}: {start:?}"
        );
    }
}

/// What a run did to checkpoints.
#[derive(Debug, Default)]
struct Outcome {
    /// Checkpoints damaged (torn, stale, ahead, deleted) before a reopen.
    damaged: usize,
    /// Reopens whose index was loaded from a checkpoint.
    checkpoint_loads: u64,
}

async fn run(steps: Vec<(Step, (i64, i64))>) -> Outcome {
    let mut outcome = Outcome::default();
    // Every checkpoint seen at a crash, for stale replacements.
    let mut seen: Vec<Vec<u8>> = Vec::new();
    // A clean stop writes every queued row, so fragments are indexed again from their
    // bodies (outside a full rebuild) only for rows cut off the index log's tail: at
    // most once per row cut, when the load after the cut or a later one (if a
    // checkpoint held the row meanwhile) finds it missing.
    let (mut cut_rows, mut reindexed) = (0u64, 0u64);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(START_MS));
    let mut h = Harness::open(dir.path(), clock.clone()).await;
    h.video()
        .create(CreateVideoStream {
            name: "cam".into(),
            retention_hours: 1,
            ..CreateVideoStream::default()
        })
        .await
        .unwrap();
    let mut model = Model::default();
    let mut producer_ms = START_MS;
    for (i, (step, probe)) in steps.into_iter().enumerate() {
        let context = format!("step {i} {step:?}");
        let mut expect_rebuild = false;
        match step {
            Step::Append {
                producer,
                duration_ms,
                size,
                wait_ms,
            } => {
                h.clock.advance_ms(wait_ms);
                producer_ms += match producer {
                    Producer::Forward => 1000,
                    Producer::Backward => -3000,
                    Producer::Duplicate => 0,
                    Producer::JumpForward => HOUR,
                    Producer::JumpBack => -HOUR,
                };
                let meta = h.meta();
                let fragment = FragmentMeta {
                    producer_ts_ms: producer_ms,
                    cluster_timecode: 0,
                    timecode_scale: 1_000_000,
                    duration_ms,
                    frame_count: 25,
                    ebml_header: Bytes::from_static(b"ebml"),
                    info_and_tracks: Bytes::from_static(b"tracks"),
                    producer_tags: Vec::new(),
                };
                let (_, server_ms, offset) = h
                    .video()
                    .append_fragment(&meta, fragment, Bytes::from(vec![7u8; size]))
                    .await
                    .unwrap();
                model.frags.insert(
                    offset,
                    Frag {
                        offset,
                        server_ms,
                        producer_ms,
                        duration_ms,
                        size: size as u64,
                    },
                );
                model.end = offset + 1;
            }
            Step::Expire { wait_ms } => {
                h.clock.advance_ms(wait_ms);
                h.video().enforce_retention().await.unwrap();
                let (first, end) = h.video().fragment_bounds(&h.meta()).await.unwrap();
                assert_eq!(end, model.end, "{context}");
                model.frags.retain(|o, _| *o >= first);
            }
            Step::Crash(kind) => {
                h.stop().await;
                if let Some(p) = h.checkpoint() {
                    let bytes = std::fs::read(p).unwrap();
                    if !seen.contains(&bytes) {
                        seen.push(bytes);
                    }
                }
                match kind {
                    Crash::DropState => {}
                    Crash::TruncateTail(n) => cut_rows += h.truncate_index_tail(n),
                    Crash::DeleteIndex => {
                        if let Some(d) = h.index_dir() {
                            std::fs::remove_dir_all(d).unwrap();
                            expect_rebuild = !model.frags.is_empty();
                            // The checkpoints went with the directory: a stale one can
                            // only be one the rebuilt index wrote.
                            seen.clear();
                        }
                    }
                    damage => outcome.damaged += usize::from(h.damage_checkpoint(&damage, &seen)),
                }
                h = Harness::open(dir.path(), clock.clone()).await;
            }
        }
        check(&h, &model, probe, &context).await;
        if matches!(context.as_str(), c if c.contains("Crash")) {
            outcome.checkpoint_loads += h.video().index_checkpoint_loads();
            reindexed += h.video().index_fragments_reindexed();
            assert!(
                reindexed <= cut_rows,
                "{context}: {reindexed} fragments indexed again from their bodies, {cut_rows} rows cut"
            );
            assert_eq!(
                h.video().index_rebuilds(),
                u64::from(expect_rebuild),
                "{context}: rebuilds"
            );
        }
    }
    h.stop().await;
    outcome
}

/// `n` appends a second apart, the producer clock stepping forwards, backwards or
/// repeating by turns.
fn appends(n: usize) -> Vec<(Step, (i64, i64))> {
    (0..n)
        .map(|i| {
            let producer = match i % 4 {
                0 | 1 => Producer::Forward,
                2 => Producer::Backward,
                _ => Producer::Duplicate,
            };
            let step = Step::Append {
                producer,
                duration_ms: 900,
                size: 50 + i,
                wait_ms: 1000,
            };
            (step, (i as i64 * 7919, 5000))
        })
        .collect()
}

/// Every kind of checkpoint damage, each after enough appends for a checkpoint to be
/// written, then a plain reopen that must read the checkpoint left behind.
#[test]
fn damaged_checkpoints_are_ignored_and_nothing_is_rebuilt() {
    let mut steps = Vec::new();
    for damage in [
        Crash::DropState,
        Crash::TearCheckpoint(17),
        Crash::TearCheckpoint(usize::MAX),
        Crash::StaleCheckpoint(0),
        Crash::CheckpointAhead(1),
        Crash::CheckpointAhead(5),
        Crash::DeleteCheckpoint,
        Crash::TruncateTail(2),
        Crash::StaleCheckpoint(1),
    ] {
        steps.extend(appends(2 * CHECKPOINT_ROWS as usize + 1));
        steps.push((Step::Crash(Crash::DropState), (0, 1)));
        steps.extend(appends(2));
        steps.push((Step::Crash(damage), (3, 4000)));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(run(steps));
    // DropState and TruncateTail damage nothing; the seven others each found one.
    assert_eq!(outcome.damaged, 7, "{outcome:?}");
    // Each of the nine undamaged reopens (and some damaged ones) used a checkpoint.
    assert!(outcome.checkpoint_loads >= 9, "{outcome:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_fragment_index_answers_as_the_model_does(
        steps in proptest::collection::vec((step(), (any::<i64>(), any::<i64>())), 1..40)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(run(steps));
    }
}
