//! A Kinesis data stream as a delivery stream's source (`KinesisStreamAsSource`, as in
//! the Firehose API reference and the Firehose developer guide's "Writing to Firehose
//! using Kinesis Data Streams").
//!
//! The data stream's shards are read through [`StreamService`] (GetShardIterator and
//! GetRecords, never through the API layer), each shard by a worker of its own
//! ([`Worker`] with `shard` set): its records are batched by the buffering hints, named
//! and delivered exactly as Direct PUT records are, and its checkpoint (namespace
//! `delivery-shard-checkpoints`, key `<log id>/<shard id>`) moves past a batch only after
//! the batch is delivered. Before an upload the batch's first and last records are
//! written as *pending*; a restart (or a SIGKILL) re-reads exactly that range and writes
//! it under the same name (the batch's uuid is derived from the shard and the records'
//! offsets in it): at least once, never one batch under two names.
//!
//! Records count as incoming (`freshet_delivery_incoming_*`) when they are read from the
//! shard, and as the backlog from then until their batch is delivered.
//!
//! Shards are read from TRIM_HORIZON when the delivery stream is created. Resharding is
//! followed as consumer groups follow it ([`readable`]): a shard is read only once every
//! parent has been read to its end and delivered. A data stream that cannot be read (it
//! was deleted) is reported in `FailureDescription` and retried; the worker never ends
//! because of it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::batch::{Batcher, Span};
use super::model::{ShardBatch, ShardCheckpoint};
use super::worker::{Halt, Worker};
use crate::consumers::groups::{ShardInfo, readable};
use crate::streams::model::OutRecord;
use crate::streams::sequence::SequenceNumber;
use crate::streams::{StreamRef, StreamService};

pub(super) const SHARD_CHECKPOINTS: &str = "delivery-shard-checkpoints";
/// Records asked for per GetRecords.
const READ_LIMIT: usize = 10_000;
/// How often the shard list is looked at again (new shards, a stream come back).
const RESCAN: Duration = Duration::from_secs(1);
/// The pause after a failed read.
const READ_RETRY: Duration = Duration::from_millis(250);

fn failed(e: impl std::fmt::Display) -> Halt {
    Halt::Failed(e.to_string())
}

/// The key of a shard's checkpoint.
pub(super) fn checkpoint_key(log_id: &str, shard: &str) -> String {
    format!("{log_id}/{shard}")
}

async fn load(worker: &Worker, key: &str) -> Result<ShardCheckpoint, Halt> {
    let catalog = worker.catalog.clone();
    let key = key.to_string();
    let raw = tokio::task::spawn_blocking(move || catalog.get(SHARD_CHECKPOINTS, &key))
        .await
        .map_err(failed)?
        .map_err(failed)?;
    match raw {
        None => Ok(ShardCheckpoint::default()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Halt::Failed(format!("corrupt shard checkpoint: {e}"))),
    }
}

async fn save(worker: &Worker, key: &str, cp: &ShardCheckpoint) -> Result<(), Halt> {
    let catalog = worker.catalog.clone();
    let key = key.to_string();
    let bytes = serde_json::to_vec(cp).map_err(failed)?;
    tokio::task::spawn_blocking(move || catalog.put(SHARD_CHECKPOINTS, &key, bytes))
        .await
        .map_err(failed)?
        .map_err(failed)
}

fn set_failure(worker: &Worker, message: String) {
    if let Ok(mut f) = worker.failure.lock() {
        *f = Some(message);
    }
}

/// The delivery stream's source loop: starts a shard worker for every shard that may be
/// read, until stopped (each shard worker then delivers what it buffered).
pub(super) async fn run(mut worker: Worker) -> Result<(), Halt> {
    let streams = worker
        .streams
        .clone()
        .ok_or_else(|| Halt::Failed("no data streams to read from".into()))?;
    let Some(source) = worker.meta.source.clone() else {
        return Ok(());
    };
    let stream = StreamRef {
        name: None,
        arn: Some(source.stream_arn.clone()),
    };
    let mut finished: HashSet<String> = HashSet::new();
    let mut looked_at: HashSet<String> = HashSet::new();
    let mut running: HashSet<String> = HashSet::new();
    let mut tasks: JoinSet<(String, Result<bool, Halt>)> = JoinSet::new();
    loop {
        if *worker.stop.borrow() {
            while tasks.join_next().await.is_some() {}
            return Ok(());
        }
        match streams.list_shards(Some(&stream), None, None, Some(10_000), None) {
            Err(e) => set_failure(
                &worker,
                format!(
                    "The source Kinesis data stream {} cannot be read: {e}",
                    source.stream_arn
                ),
            ),
            Ok((list, _)) => {
                let shards: Vec<ShardInfo> = list.into_iter().map(ShardInfo::of).collect();
                for s in &shards {
                    if looked_at.insert(s.id.clone()) {
                        let key = checkpoint_key(&worker.meta.log_id(), &s.id);
                        if load(&worker, &key).await?.finished {
                            finished.insert(s.id.clone());
                        }
                    }
                }
                for id in readable(&shards, |id| finished.contains(id)) {
                    if running.insert(id.clone()) {
                        let mut shard_worker = worker.clone();
                        shard_worker.shard = Some(id.clone());
                        let (streams, stream) = (streams.clone(), stream.clone());
                        tasks.spawn(async move {
                            let outcome =
                                read_shard(&mut shard_worker, &streams, &stream, &id).await;
                            (id, outcome)
                        });
                    }
                }
            }
        }
        tokio::select! {
            Some(done) = tasks.join_next() => match done {
                Ok((id, Ok(true))) => {
                    running.remove(&id);
                    finished.insert(id);
                }
                Ok((id, Ok(false) | Err(Halt::Stopped))) => {
                    running.remove(&id);
                }
                Ok((id, Err(Halt::Failed(e)))) => {
                    tracing::error!(delivery_stream = worker.meta.name, shard = id, error = e, "shard delivery failed; retrying");
                    set_failure(&worker, e);
                    running.remove(&id);
                    worker.pause(RESCAN).await.ok();
                }
                Err(e) => {
                    tracing::error!(delivery_stream = worker.meta.name, error = %e, "shard worker ended abnormally");
                    running.clear();
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                }
            },
            _ = tokio::time::sleep(RESCAN) => {}
            _ = worker.stop.changed() => {}
        }
    }
}

/// An iterator at the start of the shard, or just after `after`.
async fn iterator_after(
    streams: &StreamService,
    stream: &StreamRef,
    shard: &str,
    after: Option<&str>,
) -> crate::streams::error::Result<String> {
    match after {
        Some(seq) => {
            streams
                .get_shard_iterator(stream, shard, "AFTER_SEQUENCE_NUMBER", Some(seq), None)
                .await
        }
        None => {
            streams
                .get_shard_iterator(stream, shard, "TRIM_HORIZON", None, None)
                .await
        }
    }
}

fn offset_of(record: &OutRecord) -> Result<u64, Halt> {
    SequenceNumber::parse(&record.sequence_number)
        .map(|s| s.offset)
        .ok_or_else(|| Halt::Failed(format!("bad sequence number {}", record.sequence_number)))
}

/// The records of a pending batch, read again: from its first record to its last.
async fn read_batch(
    streams: &StreamService,
    stream: &StreamRef,
    shard: &str,
    batch: &ShardBatch,
) -> Result<(Vec<Bytes>, Vec<i64>), Halt> {
    let mut iterator = streams
        .get_shard_iterator(
            stream,
            shard,
            "AT_SEQUENCE_NUMBER",
            Some(&batch.first_sequence_number),
            None,
        )
        .await
        .map_err(failed)?;
    let (mut records, mut arrivals) = (Vec::new(), Vec::new());
    loop {
        let out = streams
            .get_records(&iterator, Some(READ_LIMIT))
            .await
            .map_err(failed)?;
        let empty = out.records.is_empty();
        for r in out.records {
            if offset_of(&r)? > batch.last_offset {
                return Ok((records, arrivals));
            }
            arrivals.push(r.arrival_ms);
            records.push(r.data);
        }
        match out.next_shard_iterator {
            // Trimmed by retention meanwhile: what is left of the batch.
            _ if empty => return Ok((records, arrivals)),
            Some(next) => iterator = next,
            None => return Ok((records, arrivals)),
        }
    }
}

/// Delivers one shard until stopped (`false`) or read to the end of the closed shard
/// with everything delivered (`true`).
async fn read_shard(
    w: &mut Worker,
    streams: &Arc<StreamService>,
    stream: &StreamRef,
    shard: &str,
) -> Result<bool, Halt> {
    w.meta = w.config.borrow_and_update().clone();
    let key = checkpoint_key(&w.meta.log_id(), shard);
    let mut cp = load(w, &key).await?;
    if let Some(batch) = cp.pending.take() {
        let (records, arrivals) = read_batch(streams, stream, shard, &batch).await?;
        let span = Span {
            first_offset: batch.first_offset,
            last_offset: batch.last_offset,
            first_arrival_ms: arrivals.first().copied().unwrap_or(0),
            bytes: records.iter().map(|r| r.len() as u64).sum(),
            records: records.len() as u64,
        };
        tracing::info!(
            delivery_stream = w.meta.name,
            shard,
            "re-delivering an interrupted batch"
        );
        let config = cp
            .pending_config
            .take()
            .unwrap_or_else(|| w.meta.batch_config());
        w.hold(span.records, Some(span.first_arrival_ms));
        w.deliver(&config, span, records, arrivals).await?;
        cp = ShardCheckpoint {
            after: Some(batch.last_sequence_number),
            ..ShardCheckpoint::default()
        };
        save(w, &key, &cp).await?;
        w.hold(0, None);
    }
    if cp.finished {
        return Ok(true);
    }
    let mut last_read = cp.after.clone();
    let mut iterator: Option<String> = None;
    let mut buffer: VecDeque<OutRecord> = VecDeque::new();
    let mut at_end = false;
    let mut batcher = Batcher::new(w.hints());
    let (mut records, mut arrivals) = (Vec::new(), Vec::new());
    let mut first_seq: Option<String> = None;
    let mut last_seq: Option<String> = None;
    let mut end_rx = streams.watch_shard_end(stream, shard).ok();
    loop {
        let mut read_any = false;
        if !at_end && buffer.is_empty() {
            let read = match &iterator {
                Some(it) => streams.get_records(it, Some(READ_LIMIT)).await,
                None => match iterator_after(streams, stream, shard, last_read.as_deref()).await {
                    Ok(it) => streams.get_records(&it, Some(READ_LIMIT)).await,
                    Err(e) => Err(e),
                },
            };
            match read {
                Ok(out) => {
                    read_any = !out.records.is_empty();
                    if let Some(r) = out.records.last() {
                        last_read = Some(r.sequence_number.clone());
                    }
                    let bytes: u64 = out.records.iter().map(|r| r.data.len() as u64).sum();
                    w.metrics.incoming_records.inc_by(out.records.len() as u64);
                    w.metrics.incoming_bytes.inc_by(bytes);
                    buffer.extend(out.records);
                    at_end = out.child_shards.is_some() || out.next_shard_iterator.is_none();
                    iterator = out.next_shard_iterator;
                }
                Err(e) => {
                    // Expired, or the stream is gone: start again from the last read.
                    iterator = None;
                    if !matches!(
                        e,
                        crate::streams::error::StreamError::ExpiredIterator(_)
                            | crate::streams::error::StreamError::ProvisionedThroughputExceeded(_)
                    ) {
                        set_failure(
                            w,
                            format!(
                                "Cannot read shard {shard} of the source Kinesis data stream: {e}"
                            ),
                        );
                    }
                    if batcher.open().is_none() {
                        w.pause(READ_RETRY).await?;
                        continue;
                    }
                }
            }
        }
        while !batcher.is_full() {
            let Some(r) = buffer.pop_front() else { break };
            let offset = offset_of(&r)?;
            first_seq.get_or_insert_with(|| r.sequence_number.clone());
            last_seq = Some(r.sequence_number.clone());
            batcher.push(offset, r.arrival_ms, r.data.len());
            arrivals.push(r.arrival_ms);
            records.push(r.data);
        }
        // Read and not delivered: the open batch, then what waits behind it.
        let open = batcher.open();
        w.hold(
            open.map_or(0, |s| s.records) + buffer.len() as u64,
            open.map(|s| s.first_arrival_ms)
                .or_else(|| buffer.front().map(|r| r.arrival_ms)),
        );
        let stopping = *w.stop.borrow();
        w.refresh(&mut batcher);
        let drained = at_end && buffer.is_empty();
        if batcher.is_due(w.clock.now_ms()) || (batcher.open().is_some() && (stopping || drained)) {
            if let (Some(span), Some(first), Some(last)) =
                (batcher.take(), first_seq.take(), last_seq.take())
            {
                let config = w.meta.batch_config();
                let batch = ShardBatch {
                    first_sequence_number: first,
                    last_sequence_number: last.clone(),
                    first_offset: span.first_offset,
                    last_offset: span.last_offset,
                };
                save(
                    w,
                    &key,
                    &ShardCheckpoint {
                        after: cp.after.clone(),
                        pending: Some(batch),
                        pending_config: Some(config.clone()),
                        finished: false,
                    },
                )
                .await?;
                let (batch_records, batch_arrivals) =
                    (std::mem::take(&mut records), std::mem::take(&mut arrivals));
                w.deliver(&config, span, batch_records, batch_arrivals)
                    .await?;
                cp = ShardCheckpoint {
                    after: Some(last),
                    ..ShardCheckpoint::default()
                };
                save(w, &key, &cp).await?;
                w.hold(buffer.len() as u64, buffer.front().map(|r| r.arrival_ms));
            }
            continue;
        }
        if drained {
            cp.finished = true;
            save(w, &key, &cp).await?;
            tracing::info!(
                delivery_stream = w.meta.name,
                shard,
                "closed source shard delivered to its end"
            );
            return Ok(true);
        }
        if stopping {
            return Ok(false);
        }
        if read_any {
            continue;
        }
        let wait = match batcher.due_at_ms() {
            Some(due) => Duration::from_millis((due - w.clock.now_ms()).clamp(1, 1000) as u64),
            None => Duration::from_secs(1),
        };
        match end_rx.as_mut() {
            Some(end) => tokio::select! {
                _ = end.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = w.stop.changed() => {}
                Ok(()) = w.config.changed() => {}
            },
            None => tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = w.stop.changed() => {}
                Ok(()) = w.config.changed() => {}
            },
        }
    }
}
