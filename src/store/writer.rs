//! The writer thread: group commit for every log in the store.
//!
//! Appends arrive on a bounded channel (the bound is the store's backpressure). The
//! thread takes everything queued, writes each log's share with one positioned write,
//! makes all touched logs durable together (one fdatasync per touched segment file,
//! in parallel), publishes the new entries to readers and only then answers the
//! callers. While it syncs, new appends queue up and form the next group, so
//! concurrent writers share fsyncs instead of each paying for one.
//!
//! Disk I/O happens only on this thread (and the scoped threads it uses for parallel
//! syncs), never on the async runtime.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;

use super::segment::Entry;
use tokio::sync::{mpsc, oneshot};

use super::log::{Log, RollPolicy};
use crate::clock::SharedClock;

/// How appends are made durable before they are acknowledged.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// fdatasync before acknowledging (the default; survives power loss).
    Fsync,
    /// Acknowledge after the write reaches the OS page cache. Survives a process crash
    /// but NOT a machine crash or power loss. For benchmarks and throwaway data only.
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

pub(super) struct WriterConfig {
    pub durability: Durability,
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

struct Pending {
    log: Arc<Log>,
    result: io::Result<(u64, i64)>,
    count: u64,
    reply: oneshot::Sender<io::Result<AppendAck>>,
}

fn run(config: WriterConfig, mut rx: mpsc::Receiver<Command>) {
    let mut scratch = BytesMut::with_capacity(1 << 20);
    let mut group: Vec<Command> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        group.clear();
        let mut bytes = command_bytes(&first);
        group.push(first);
        while bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(cmd) => {
                    bytes += command_bytes(&cmd);
                    group.push(cmd);
                }
                Err(_) => break,
            }
        }
        commit_group(&config, &mut group, &mut scratch);
    }
    tracing::debug!("writer thread stopping: all senders gone");
}

fn command_bytes(cmd: &Command) -> usize {
    match cmd {
        Command::Append { payloads, .. } => payloads.iter().map(|p| p.len() + 24).sum(),
        Command::RollIfStale { .. } => 0,
    }
}

fn commit_group(config: &WriterConfig, group: &mut Vec<Command>, scratch: &mut BytesMut) {
    let now = config.clock.now_ms();
    let mut pending: Vec<Pending> = Vec::with_capacity(group.len());
    let mut touched: Vec<Arc<Log>> = Vec::new();
    for cmd in group.drain(..) {
        match cmd {
            Command::Append {
                log,
                payloads,
                reply,
            } => {
                let result = log.write_batch(&payloads, now, &config.roll, scratch);
                if result.is_ok() && !touched.iter().any(|l| Arc::ptr_eq(l, &log)) {
                    touched.push(log.clone());
                }
                pending.push(Pending {
                    log,
                    result,
                    count: payloads.len() as u64,
                    reply,
                });
            }
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

    let failed = sync_all(config.durability, &touched);
    for log in &touched {
        if failed.iter().any(|f| Arc::ptr_eq(f, log)) {
            log.fail();
        } else {
            log.publish();
        }
    }
    for p in pending {
        let outcome = match p.result {
            Ok(_) if failed.iter().any(|f| Arc::ptr_eq(f, &p.log)) => Err(io::Error::other(
                format!("could not make log {} durable", p.log.id()),
            )),
            Ok((first_offset, timestamp_ms)) => Ok(AppendAck {
                first_offset,
                count: p.count,
                timestamp_ms,
            }),
            Err(e) => Err(e),
        };
        let _ = p.reply.send(outcome);
    }
}

/// Syncs every touched log, in parallel when there are several. Returns the logs whose
/// sync failed.
fn sync_all(durability: Durability, touched: &[Arc<Log>]) -> Vec<Arc<Log>> {
    if durability == Durability::UnsafeNoFsync || touched.is_empty() {
        return Vec::new();
    }
    let report = |log: &Arc<Log>, r: io::Result<()>| match r {
        Ok(()) => None,
        Err(e) => {
            tracing::error!(log = log.id(), error = %e, "fsync failed; log stops accepting writes");
            Some(log.clone())
        }
    };
    if touched.len() == 1 {
        return report(&touched[0], touched[0].sync()).into_iter().collect();
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = touched
            .iter()
            .map(|log| scope.spawn(move || (log, log.sync())))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| {
                let (log, r) = h.join().expect("sync thread panicked");
                report(log, r)
            })
            .collect()
    })
}
