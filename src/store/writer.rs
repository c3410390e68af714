//! The writer thread: group commit for every log in the store.
//!
//! Appends arrive on a bounded channel (the bound is the store's backpressure). The
//! thread takes everything queued, writes each append with one positioned write,
//! makes all touched logs durable together (one fdatasync per touched segment file,
//! in parallel), publishes the new entries to readers and only then answers the
//! callers. While it syncs, new appends queue up and form the next group, so
//! concurrent writers share fsyncs instead of each paying for one.
//!
//! When a group touches several logs, the writer thread takes one log's share itself
//! and hands each other log's write and fdatasync to one of a few long-lived log
//! worker threads, so shards are written and synced in parallel. (One write per log
//! per group instead of one per append measured 12 % slower; `docs/decisions.md`.)
//! Disk I/O happens only on these threads, never on the async runtime.

use std::io;
use std::sync::Arc;

use super::segment::Entry;
use tokio::sync::{mpsc, oneshot};

use super::log::{Log, RollPolicy, WriteBuffers};
use crate::clock::SharedClock;

/// How appends are made durable before they are acknowledged.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// fdatasync before acknowledging (the default; survives power loss).
    Fsync,
    /// Acknowledge once the write returns, without fdatasync: the data is with the
    /// kernel (page cache) or, with direct I/O, with the disk, whose volatile cache
    /// is not flushed. Survives a process crash but NOT a machine crash or power loss.
    /// For benchmarks and throwaway data only.
    UnsafeNoFsync,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    pub first_offset: u64,
    pub count: u64,
    pub timestamp_ms: i64,
}

pub(super) enum Command {
    Append {
        log: Arc<Log>,
        payloads: Vec<Entry>,
        /// When the data began to arrive, if earlier than the commit: the entries are
        /// stamped with it (never later than the commit, never before the log's last
        /// timestamp).
        arrived_ms: Option<i64>,
        reply: oneshot::Sender<io::Result<AppendAck>>,
    },
    RollIfStale {
        log: Arc<Log>,
        cutoff_ms: i64,
        reply: oneshot::Sender<io::Result<bool>>,
    },
}

/// Most bytes one group commit takes before it stops collecting more.
const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub(super) struct WriterConfig {
    pub durability: Durability,
    /// How long the writer waits for more appends before committing a group.
    pub commit_delay: std::time::Duration,
    pub roll: RollPolicy,
    pub clock: SharedClock,
}

pub(super) fn spawn(
    config: WriterConfig,
    queue: usize,
) -> (mpsc::Sender<Command>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(queue);
    let handle = std::thread::Builder::new()
        .name("freshet-writer".into())
        .spawn(move || run(config, rx))
        .expect("spawn writer thread");
    (tx, handle)
}

/// Threads that write and sync logs in parallel within one group commit. They live as
/// long as the writer, so a group costs two channel hops per touched log instead of a
/// thread spawn.
struct LogWorkers {
    jobs: Vec<std::sync::mpsc::Sender<Job>>,
    done: std::sync::mpsc::Receiver<Done>,
}

struct Job {
    index: usize,
    batch: LogBatch,
    now: i64,
}

struct Done {
    index: usize,
    batch: LogBatch,
    results: Vec<io::Result<(u64, i64)>>,
    synced: io::Result<()>,
}

/// Helper threads per writer: enough to overlap the fsyncs of several shards.
const LOG_WORKERS: usize = 4;

impl LogWorkers {
    fn start(config: &WriterConfig) -> Self {
        let (done_tx, done) = std::sync::mpsc::channel::<Done>();
        let jobs = (0..LOG_WORKERS)
            .map(|i| {
                let (tx, rx) = std::sync::mpsc::channel::<Job>();
                let done_tx = done_tx.clone();
                let config = config.clone();
                std::thread::Builder::new()
                    .name(format!("freshet-log-{i}"))
                    .spawn(move || {
                        let mut scratch = WriteBuffers::default();
                        while let Ok(job) = rx.recv() {
                            let (results, synced) =
                                write_log(&config, &job.batch, job.now, &mut scratch);
                            let done = Done {
                                index: job.index,
                                batch: job.batch,
                                results,
                                synced,
                            };
                            if done_tx.send(done).is_err() {
                                return;
                            }
                        }
                    })
                    .expect("spawn log worker thread");
                tx
            })
            .collect();
        Self { jobs, done }
    }

    /// Writes and syncs every batch, in parallel; results in the order of `batches`.
    /// The calling thread takes the last batch itself rather than wait idle.
    fn run(
        &self,
        config: &WriterConfig,
        mut batches: Vec<LogBatch>,
        now: i64,
        scratch: &mut WriteBuffers,
    ) -> Vec<Done> {
        let mut out = Vec::with_capacity(batches.len());
        let own = batches.pop().map(|batch| (batches.len(), batch));
        let mut sent = 0;
        for (index, batch) in batches.into_iter().enumerate() {
            let job = Job { index, batch, now };
            match self.jobs[index % self.jobs.len()].send(job) {
                Ok(()) => sent += 1,
                // A worker is gone (it panicked): do its share here instead.
                Err(std::sync::mpsc::SendError(job)) => {
                    let (results, synced) =
                        write_log(config, &job.batch, now, &mut WriteBuffers::default());
                    out.push(Done {
                        index: job.index,
                        batch: job.batch,
                        results,
                        synced,
                    });
                }
            }
        }
        if let Some((index, batch)) = own {
            let (results, synced) = write_log(config, &batch, now, scratch);
            out.push(Done {
                index,
                batch,
                results,
                synced,
            });
        }
        out.extend((0..sent).filter_map(|_| self.done.recv().ok()));
        out.sort_by_key(|d| d.index);
        out
    }
}

fn run(config: WriterConfig, mut rx: mpsc::Receiver<Command>) {
    let workers = LogWorkers::start(&config);
    let mut scratch = WriteBuffers::default();
    let mut group: Vec<Command> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        group.clear();
        let mut bytes = command_bytes(&first);
        group.push(first);
        let mut waited = false;
        while bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(cmd) => {
                    bytes += command_bytes(&cmd);
                    group.push(cmd);
                }
                Err(_) if !waited && !config.commit_delay.is_zero() => {
                    // Give concurrent writers a moment to join this group: fewer, larger
                    // commits cost less CPU (and fsyncs) per record.
                    waited = true;
                    std::thread::sleep(config.commit_delay);
                }
                Err(_) => break,
            }
        }
        commit_group(&config, &mut group, &workers, &mut scratch);
    }
    tracing::debug!("writer thread stopping: all senders gone");
}

fn command_bytes(cmd: &Command) -> usize {
    match cmd {
        Command::Append { payloads, .. } => payloads.iter().map(|p| p.len() + 24).sum(),
        Command::RollIfStale { .. } => 0,
    }
}

/// The appends of one group commit that go to one log, in arrival order.
/// One append: its entries, their arrival time if given, and where to answer.
type Request = (
    Vec<Entry>,
    Option<i64>,
    oneshot::Sender<io::Result<AppendAck>>,
);

struct LogBatch {
    log: Arc<Log>,
    requests: Vec<Request>,
}

/// Writes one log's share of a group commit and makes it durable. Returns each
/// request's result and the outcome of the sync.
fn write_log(
    config: &WriterConfig,
    batch: &LogBatch,
    now: i64,
    scratch: &mut WriteBuffers,
) -> (Vec<io::Result<(u64, i64)>>, io::Result<()>) {
    let results: Vec<_> = batch
        .requests
        .iter()
        .map(|(payloads, arrived_ms, _)| {
            let stamp = arrived_ms.map_or(now, |a| a.min(now));
            batch
                .log
                .write_batch(payloads, now, stamp, &config.roll, scratch)
        })
        .collect();
    // Keep big buffers from pinning memory after a burst.
    scratch.trim();
    let wrote = results.iter().any(|r| r.is_ok());
    let synced = if wrote && config.durability == Durability::Fsync {
        batch.log.sync()
    } else {
        Ok(())
    };
    if wrote && synced.is_ok() {
        batch.log.drop_behind();
    }
    (results, synced)
}

fn commit_group(
    config: &WriterConfig,
    group: &mut Vec<Command>,
    workers: &LogWorkers,
    scratch: &mut WriteBuffers,
) {
    let now = config.clock.now_ms();
    let mut batches: Vec<LogBatch> = Vec::new();
    for cmd in group.drain(..) {
        match cmd {
            Command::Append {
                log,
                payloads,
                arrived_ms,
                reply,
            } => match batches.iter_mut().find(|b| Arc::ptr_eq(&b.log, &log)) {
                Some(b) => b.requests.push((payloads, arrived_ms, reply)),
                None => batches.push(LogBatch {
                    log,
                    requests: vec![(payloads, arrived_ms, reply)],
                }),
            },
            Command::RollIfStale {
                log,
                cutoff_ms,
                reply,
            } => {
                // Sync first so a roll never seals entries that are not yet durable.
                let result = log.sync().and_then(|_| log.roll_if_stale(cutoff_ms, now));
                log.publish();
                let _ = reply.send(result);
            }
        }
    }
    if batches.is_empty() {
        return;
    }
    // Each log is written and synced on its own worker when there are several: the
    // writes and the fsyncs then overlap.
    let outcomes: Vec<Done> = if batches.len() == 1 {
        let batch = batches.pop().expect("one batch");
        let (results, synced) = write_log(config, &batch, now, scratch);
        vec![Done {
            index: 0,
            batch,
            results,
            synced,
        }]
    } else {
        workers.run(config, batches, now, scratch)
    };
    for Done {
        batch,
        results,
        synced,
        ..
    } in outcomes
    {
        let sync_failed = match &synced {
            Ok(()) => false,
            Err(e) => {
                tracing::error!(log = batch.log.id(), error = %e, "fsync failed; log stops accepting writes");
                batch.log.fail();
                true
            }
        };
        if !sync_failed {
            batch.log.publish();
        }
        for ((payloads, _, reply), result) in batch.requests.into_iter().zip(results) {
            let outcome = match result {
                Ok(_) if sync_failed => Err(io::Error::other(format!(
                    "could not make log {} durable",
                    batch.log.id()
                ))),
                Ok((first_offset, timestamp_ms)) => Ok(AppendAck {
                    first_offset,
                    count: payloads.len() as u64,
                    timestamp_ms,
                }),
                Err(e) => Err(e),
            };
            let _ = reply.send(outcome);
        }
    }
}
