//! The data plane: PutRecord(s), GetShardIterator, GetRecords and retention.
//!
//! A record is stored as one log entry: `flags u8 | partition key length u16 LE |
//! partition key | data`. Records of one PutRecords call that land on the same shard
//! are appended as one batch; all shards' batches go to the writer together, so one
//! call costs one group commit.

use std::sync::Arc;
use tokio::sync::watch;

use bytes::{BufMut, Bytes, BytesMut};

use super::hashing;
use super::iterator::IteratorPosition;
use super::model::*;
use super::sequence::SequenceNumber;
use super::{Result, StreamError, StreamRef, StreamService, StreamStatus};
use crate::store::{Entry, ReadAccess, StoreError};

const FLAG_ENCRYPTED: u8 = 1;
/// Most data GetRecords returns in one call (Kinesis: 10 MiB).
pub const GET_RECORDS_MAX_BYTES: usize = 10 * 1024 * 1024;

/// One record to put.
#[derive(Debug, Clone)]
pub struct RecordInput {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Bytes,
}

/// The outcome for one record of a put.
#[derive(Debug, Clone)]
pub enum PutRecordsEntry {
    /// Stored; the shard and sequence number are rendered by whoever answers.
    Ok { sequence: SequenceNumber },
    Failed {
        error_code: &'static str,
        error_message: String,
        /// For internal failures: what went wrong, for the log only (a single
        /// PutRecord reports it as its error's detail).
        detail: Option<String>,
        /// The storage was full, or (scale-out) the shard's owner or a shared engine
        /// could not take it: a single PutRecord answers ServiceUnavailable.
        unavailable: bool,
    },
}

#[derive(Debug, Clone)]
pub struct PutResult {
    pub entries: Vec<PutRecordsEntry>,
    pub failed: usize,
    pub encrypted: bool,
}

#[derive(Debug, Clone)]
pub struct GetRecordsOutput {
    pub records: Vec<OutRecord>,
    pub next_shard_iterator: Option<String>,
    pub millis_behind_latest: i64,
    pub child_shards: Option<Vec<ChildShard>>,
}

/// Appends a record's header (`flags | key length | key`) to `out`; the record's data
/// follows it in the log entry.
fn encode_record_head(out: &mut BytesMut, flags: u8, partition_key: &str) {
    out.put_u8(flags);
    out.put_u16_le(partition_key.len() as u16);
    out.put_slice(partition_key.as_bytes());
}

#[cfg(test)]
fn encode_record(flags: u8, partition_key: &str, data: &[u8]) -> Bytes {
    let mut buf = BytesMut::new();
    encode_record_head(&mut buf, flags, partition_key);
    buf.put_slice(data);
    buf.freeze()
}

/// Splits a stored entry back into (flags, partition key, data) without copying data.
fn decode_record(payload: &Bytes) -> Option<(u8, String, Bytes)> {
    if payload.len() < 3 {
        return None;
    }
    let key_len = u16::from_le_bytes([payload[1], payload[2]]) as usize;
    let key = payload.get(3..3 + key_len)?;
    Some((
        payload[0],
        String::from_utf8_lossy(key).into_owned(),
        payload.slice(3 + key_len..),
    ))
}

/// Why one shard's part of a put failed.
struct AppendFailure {
    /// What the client is told.
    message: String,
    /// What the log says.
    detail: String,
    /// Answered as ServiceUnavailable by a single PutRecord.
    unavailable: bool,
}

/// One shard's part of a put: the shard, the records' indexes in the request, and
/// their entries.
type ShardGroup = (u32, Vec<usize>, Vec<Entry>);

/// Each group's first offset, or why it failed.
type AppendResults = Vec<std::result::Result<u64, AppendFailure>>;

impl StreamService {
    /// Appends each shard's entries to its local log, in one group commit.
    async fn append_local(
        &self,
        state: &super::StreamState,
        groups: Vec<ShardGroup>,
    ) -> Result<(Vec<(u32, Vec<usize>)>, AppendResults)> {
        let mut appends = Vec::with_capacity(groups.len());
        let mut done = Vec::with_capacity(groups.len());
        for (ordinal, indexes, payloads) in groups {
            let log = state
                .log(ordinal)
                .ok_or_else(|| StreamError::Internal(format!("shard {ordinal} has no log")))?;
            appends.push((log, payloads));
            done.push((ordinal, indexes));
        }
        let results = self
            .store
            .append_many(appends)
            .await
            .into_iter()
            .map(|r| {
                r.map(|ack| ack.first_offset).map_err(|e| {
                    let unavailable = e.is_out_of_space();
                    AppendFailure {
                        message: if unavailable {
                            super::error::STORAGE_FULL.into()
                        } else {
                            "Internal service failure.".into()
                        },
                        detail: e.to_string(),
                        unavailable,
                    }
                })
            })
            .collect();
        Ok((done, results))
    }

    /// Appends each shard's entries through the shared plane (scale-out), all shards
    /// at once.
    async fn append_shared(
        &self,
        plane: &Arc<dyn super::shared::SharedShards>,
        name: &str,
        epoch: u64,
        groups: Vec<ShardGroup>,
    ) -> (Vec<(u32, Vec<usize>)>, AppendResults) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut done = Vec::with_capacity(groups.len());
        for (k, (ordinal, indexes, entries)) in groups.into_iter().enumerate() {
            let payloads: Vec<Bytes> = entries
                .into_iter()
                .map(|e| {
                    let mut b = BytesMut::with_capacity(e.head.len() + e.body.len());
                    b.put_slice(&e.head);
                    b.put_slice(&e.body);
                    b.freeze()
                })
                .collect();
            let key = super::shared::ShardKey {
                stream: name.to_string(),
                stream_epoch: epoch,
                ordinal,
            };
            let plane = plane.clone();
            tasks.spawn(async move { (k, plane.append(key, payloads).await) });
            done.push((ordinal, indexes));
        }
        let mut results: Vec<Option<std::result::Result<u64, AppendFailure>>> =
            (0..done.len()).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            if let Ok((k, result)) = joined {
                results[k] = Some(result.map_err(|e| AppendFailure {
                    message: e.to_string(),
                    detail: e.to_string(),
                    unavailable: true,
                }));
            }
        }
        let results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(AppendFailure {
                        message: "Internal service failure.".into(),
                        detail: "the append task failed".into(),
                        unavailable: false,
                    })
                })
            })
            .collect();
        (done, results)
    }

    /// PutRecords (and PutRecord, as a batch of one). Fails as a whole only for
    /// request-level problems; per-record failures are reported per entry.
    pub async fn put_records(
        &self,
        r: &StreamRef,
        mut records: Vec<RecordInput>,
    ) -> Result<PutResult> {
        let started = std::time::Instant::now();
        let (name, state) = self.state(r)?;
        let _gate = state.gate.read().await;
        let (routes, epoch, encrypted, max_record) = {
            let meta = state.meta.read().unwrap();
            if !matches!(meta.status, StreamStatus::Active | StreamStatus::Updating) {
                return Err(self.not_found(&name));
            }
            let mut routes: Vec<(u128, u128, u32)> = meta
                .open_shards()
                .map(|s| {
                    let (a, b) = s.range();
                    (a, b, s.ordinal)
                })
                .collect();
            routes.sort_unstable();
            (
                routes,
                meta.epoch,
                meta.encryption_key.is_some(),
                meta.max_record_size_kib as usize * 1024,
            )
        };
        // Route every record; reject the request for a bad explicit hash key.
        let mut targets = Vec::with_capacity(records.len());
        for rec in &records {
            let hash = match &rec.explicit_hash_key {
                Some(text) => hashing::parse_hash_key(text).ok_or_else(|| {
                    StreamError::InvalidArgument(format!(
                        "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {text}"
                    ))
                })?,
                None => hashing::partition_hash(&rec.partition_key),
            };
            if rec.data.len() > max_record {
                return Err(StreamError::InvalidArgument(format!(
                    "Record data of {} bytes exceeds the maximum record size of {max_record} bytes for stream {name}.",
                    rec.data.len()
                )));
            }
            let idx = routes.partition_point(|(start, _, _)| *start <= hash);
            let ordinal = idx
                .checked_sub(1)
                .map(|i| routes[i])
                .filter(|(_, end, _)| hash <= *end)
                .map(|(_, _, o)| o)
                .ok_or_else(|| {
                    StreamError::Internal(format!("no open shard covers hash key {hash}"))
                })?;
            targets.push(ordinal);
        }

        // Group by shard, applying throughput limits per record when enabled.
        let now = self.now_ms();
        let flags = if encrypted { FLAG_ENCRYPTED } else { 0 };
        let mut entries: Vec<Option<PutRecordsEntry>> = vec![None; records.len()];
        // All record headers go into one buffer; each entry's data stays where the
        // request decoded it.
        let mut heads =
            BytesMut::with_capacity(records.iter().map(|r| 3 + r.partition_key.len()).sum());
        let mut admitted: Vec<(usize, u32, std::ops::Range<usize>)> =
            Vec::with_capacity(records.len());
        for (i, (rec, &ordinal)) in records.iter().zip(&targets).enumerate() {
            if self.config.shard_throughput_limits
                && !state.limiter.admit_write(
                    ordinal,
                    (rec.data.len() + rec.partition_key.len()) as u64,
                    now,
                )
            {
                state.metrics.write_throughput_exceeded.inc();
                entries[i] = Some(PutRecordsEntry::Failed {
                    detail: None,
                    unavailable: false,
                    error_code: "ProvisionedThroughputExceededException",
                    error_message: format!(
                        "Rate exceeded for shard {} in stream {name} under account {}.",
                        shard_id(ordinal),
                        self.config.account_id
                    ),
                });
                continue;
            }
            let start = heads.len();
            encode_record_head(&mut heads, flags, &rec.partition_key);
            admitted.push((i, ordinal, start..heads.len()));
        }
        let heads = heads.freeze();
        let data_len: Vec<usize> = records.iter().map(|r| r.data.len()).collect();
        let mut groups: Vec<(u32, Vec<usize>, Vec<Entry>)> = Vec::new();
        for (i, ordinal, range) in admitted {
            let entry = Entry {
                head: heads.slice(range),
                // Moved, not shared: the record's data is not needed after this.
                body: std::mem::take(&mut records[i].data),
            };
            match groups.iter_mut().find(|g| g.0 == ordinal) {
                Some(g) => {
                    g.1.push(i);
                    g.2.push(entry);
                }
                None => groups.push((ordinal, vec![i], vec![entry])),
            }
        }

        let (groups, results) = match self.shared_plane() {
            Some(plane) => self.append_shared(plane, &name, epoch, groups).await,
            None => self.append_local(&state, groups).await?,
        };
        for ((ordinal, indexes), result) in groups.into_iter().zip(results) {
            match result {
                Ok(first_offset) => {
                    state.metrics.incoming_records.inc_by(indexes.len() as u64);
                    state
                        .metrics
                        .incoming_bytes
                        .inc_by(indexes.iter().map(|&i| data_len[i] as u64).sum());
                    for (k, i) in indexes.into_iter().enumerate() {
                        entries[i] = Some(PutRecordsEntry::Ok {
                            sequence: SequenceNumber {
                                stream_epoch: epoch,
                                shard_ordinal: ordinal,
                                offset: first_offset + k as u64,
                            },
                        });
                    }
                }
                Err(failure) => {
                    tracing::error!(stream = name, shard = ordinal, error = %failure.detail, "append failed");
                    for i in indexes {
                        entries[i] = Some(PutRecordsEntry::Failed {
                            // PutRecords' per-record codes are this one and the
                            // throughput one only.
                            error_code: "InternalFailure",
                            error_message: failure.message.clone(),
                            detail: Some(format!(
                                "append to shard {ordinal} failed: {}",
                                failure.detail
                            )),
                            unavailable: failure.unavailable,
                        });
                    }
                }
            }
        }
        let entries: Vec<PutRecordsEntry> = entries
            .into_iter()
            .map(|e| e.expect("every record answered"))
            .collect();
        let failed = entries
            .iter()
            .filter(|e| matches!(e, PutRecordsEntry::Failed { .. }))
            .count();
        state
            .metrics
            .put_latency
            .observe(crate::metrics::seconds_since(started));
        Ok(PutResult {
            entries,
            failed,
            encrypted,
        })
    }

    /// PutRecord: one record; any failure fails the call.
    pub async fn put_record(
        &self,
        r: &StreamRef,
        record: RecordInput,
        sequence_number_for_ordering: Option<&str>,
    ) -> Result<(String, String, bool)> {
        if let Some(seq) = sequence_number_for_ordering
            && SequenceNumber::parse(seq).is_none()
        {
            let name = self.resolve_name(r)?;
            return Err(StreamError::InvalidArgument(format!(
                "ExclusiveMinimumSequenceNumber {seq} used in PutRecord on stream {name} under account {} is invalid.",
                self.config.account_id
            )));
        }
        // Sequence numbers only ever grow within a shard, so any number handed out
        // before this call is below the one this record gets: ordering holds.
        let result = self.put_records(r, vec![record]).await?;
        match result.entries.into_iter().next() {
            Some(PutRecordsEntry::Ok { sequence }) => Ok((
                shard_id(sequence.shard_ordinal),
                sequence.encode(),
                result.encrypted,
            )),
            Some(PutRecordsEntry::Failed {
                error_code,
                error_message,
                detail,
                unavailable,
            }) => Err(if error_code == "ProvisionedThroughputExceededException" {
                StreamError::ProvisionedThroughputExceeded(error_message)
            } else if unavailable {
                StreamError::Unavailable(error_message)
            } else {
                StreamError::Internal(detail.unwrap_or(error_message))
            }),
            None => Err(StreamError::Internal("no result".into())),
        }
    }

    fn shard_not_found(&self, stream: &str, shard: &str) -> StreamError {
        StreamError::ResourceNotFound(format!(
            "Shard {shard} in stream {stream} under account {} does not exist",
            self.config.account_id
        ))
    }

    /// GetShardIterator.
    pub async fn get_shard_iterator(
        &self,
        r: &StreamRef,
        shard: &str,
        iterator_type: &str,
        starting_sequence_number: Option<&str>,
        timestamp_ms: Option<i64>,
    ) -> Result<String> {
        let name = self.resolve_name(r)?;
        let Ok((_, state)) = self.state(r) else {
            return Err(self.shard_not_found(&name, shard));
        };
        let (epoch, ordinal, log) = {
            let meta = state.meta.read().unwrap();
            let ordinal = parse_shard_id(shard)
                .filter(|o| meta.shard(*o).is_some())
                .ok_or_else(|| self.shard_not_found(&name, shard))?;
            let log = state
                .log(ordinal)
                .ok_or_else(|| self.shard_not_found(&name, shard))?;
            (meta.epoch, ordinal, log)
        };
        let sid = shard_id(ordinal);
        let needs_seq = matches!(
            iterator_type,
            "AT_SEQUENCE_NUMBER" | "AFTER_SEQUENCE_NUMBER"
        );
        let no_seq_msg = |with: &str| {
            StreamError::InvalidArgument(format!(
                "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber. Request specified {iterator_type} and {with} StartingSequenceNumber."
            ))
        };
        if needs_seq && starting_sequence_number.is_none() {
            return Err(no_seq_msg("no"));
        }
        if matches!(iterator_type, "TRIM_HORIZON" | "LATEST") && starting_sequence_number.is_some()
        {
            return Err(no_seq_msg("also a"));
        }
        let shared = self.shared_plane().map(|plane| {
            (
                plane.clone(),
                super::shared::ShardKey {
                    stream: name.clone(),
                    stream_epoch: epoch,
                    ordinal,
                },
            )
        });
        let bounds = log.bounds();
        let offset = match iterator_type {
            "AT_SEQUENCE_NUMBER" | "AFTER_SEQUENCE_NUMBER" => {
                let text = starting_sequence_number.unwrap_or_default();
                let seq = SequenceNumber::parse(text).ok_or_else(|| {
                    StreamError::InvalidArgument(format!(
                        "StartingSequenceNumber {text} used in GetShardIterator on shard {sid} in stream {name} under account {} is invalid.",
                        self.config.account_id
                    ))
                })?;
                if seq.stream_epoch != epoch % 10_000_000_000_000_000 {
                    return Err(StreamError::InvalidArgument(format!(
                        "StartingSequenceNumber {text} used in GetShardIterator on shard {sid} in stream {name} under account {} is invalid because it did not come from this stream.",
                        self.config.account_id
                    )));
                }
                if seq.shard_ordinal != ordinal {
                    return Err(StreamError::InvalidArgument(format!(
                        "Invalid StartingSequenceNumber. It encodes {}, while it was used in a call to a shard with {sid}",
                        shard_id(seq.shard_ordinal)
                    )));
                }
                if iterator_type == "AT_SEQUENCE_NUMBER" {
                    seq.offset
                } else {
                    seq.offset + 1
                }
            }
            // A shared shard's positions mean "at or after": 0 is its first record.
            "TRIM_HORIZON" if shared.is_some() => 0,
            "TRIM_HORIZON" => bounds.first_offset,
            "LATEST" => match &shared {
                Some((plane, key)) => plane.end_offset(key.clone()).await?,
                None => bounds.end_offset,
            },
            "AT_TIMESTAMP" => {
                let ts = timestamp_ms.ok_or_else(|| {
                    StreamError::InvalidArgument(
                        "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. Current request has no timestamp parameter.".into(),
                    )
                })?;
                let now = self.now_ms();
                if ts > now {
                    return Err(StreamError::InvalidArgument(format!(
                        "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. timestampInMillis: {ts}, currentTimestampInMillis: {now}"
                    )));
                }
                match &shared {
                    Some((plane, key)) => plane.offset_at_time(key.clone(), ts).await?,
                    None => self.store.offset_at_time(&log, ts).await?,
                }
            }
            other => {
                return Err(StreamError::Validation(format!(
                    "1 validation error detected: Value '{other}' at 'shardIteratorType' failed to satisfy constraint: Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]"
                )));
            }
        };
        Ok(self.iterators().encode(&IteratorPosition {
            stream_name: name,
            stream_epoch: epoch,
            shard_ordinal: ordinal,
            offset,
            issued_ms: self.now_ms(),
        }))
    }

    /// The durable end offset of a shard, as a watch that changes with every append
    /// made durable: readers that push records (enhanced fan-out) wait on it.
    pub fn watch_shard_end(&self, r: &StreamRef, shard: &str) -> Result<watch::Receiver<u64>> {
        let name = self.resolve_name(r)?;
        let (_, state) = self.state(r)?;
        let log = parse_shard_id(shard)
            .and_then(|o| state.log(o))
            .ok_or_else(|| self.shard_not_found(&name, shard))?;
        Ok(log.watch_end())
    }

    /// GetRecords.
    pub async fn get_records(
        &self,
        iterator: &str,
        limit: Option<usize>,
    ) -> Result<GetRecordsOutput> {
        let pos = self
            .iterators()
            .decode(iterator)
            .ok_or_else(|| StreamError::InvalidArgument("Invalid ShardIterator.".into()))?;
        let now = self.now_ms();
        if now - pos.issued_ms > self.config.iterator_ttl_ms {
            return Err(StreamError::ExpiredIterator(format!(
                "Iterator expired. The iterator was created at time {} while right now it is {} which is further in the future than the tolerated delay of {} milliseconds.",
                amz_time(pos.issued_ms),
                amz_time(now),
                self.config.iterator_ttl_ms
            )));
        }
        let sid = shard_id(pos.shard_ordinal);
        let gone = || self.shard_not_found(&pos.stream_name, &sid);
        let (_, state) = self
            .state(&StreamRef::name(pos.stream_name.clone()))
            .map_err(|_| gone())?;
        let (meta_epoch, closed_end) = {
            let meta = state.meta.read().unwrap();
            let shard = meta.shard(pos.shard_ordinal).ok_or_else(gone)?;
            (meta.epoch, shard.closed_end_offset)
        };
        if meta_epoch != pos.stream_epoch {
            return Err(gone());
        }
        let log = state.log(pos.shard_ordinal).ok_or_else(gone)?;
        if self.config.shard_throughput_limits
            && !state.limiter.admit_read_call(pos.shard_ordinal, now)
        {
            return Err(StreamError::ProvisionedThroughputExceeded(format!(
                "Rate exceeded for Shard - {}/{}/{sid}",
                self.config.account_id, pos.stream_name
            )));
        }
        let limit = limit.unwrap_or(10_000).clamp(1, 10_000);
        if let Some(plane) = self.shared_plane() {
            let key = super::shared::ShardKey {
                stream: pos.stream_name.clone(),
                stream_epoch: pos.stream_epoch,
                ordinal: pos.shard_ordinal,
            };
            let read = plane
                .read(key, pos.offset, limit, GET_RECORDS_MAX_BYTES)
                .await?;
            let batch = crate::store::ReadBatch {
                entries: read
                    .records
                    .into_iter()
                    .map(|r| crate::store::Frame {
                        offset: r.offset,
                        timestamp_ms: r.arrival_ms,
                        payload: r.payload,
                    })
                    .collect(),
                next_offset: read.next_offset,
            };
            return Ok(self.records_output(&state, pos, batch, read.end_offset, None, now));
        }
        let batch = match self
            .store
            .read_with(
                &log,
                pos.offset,
                limit,
                GET_RECORDS_MAX_BYTES,
                ReadAccess::Scan,
            )
            .await
        {
            Ok(b) => b,
            Err(StoreError::Io(e)) => return Err(StreamError::Internal(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let end_offset = log.bounds().end_offset;
        Ok(self.records_output(&state, pos, batch, end_offset, closed_end, now))
    }

    /// GetRecords' answer for the records read from `pos`: decoded records, the next
    /// iterator (or, at the end of a closed shard, its children), MillisBehindLatest,
    /// and the read's metrics and throughput charge.
    fn records_output(
        &self,
        state: &super::StreamState,
        pos: IteratorPosition,
        batch: crate::store::ReadBatch,
        end_offset: u64,
        closed_end: Option<u64>,
        now: i64,
    ) -> GetRecordsOutput {
        let sid = shard_id(pos.shard_ordinal);
        let bytes: u64 = batch.entries.iter().map(|e| e.payload.len() as u64).sum();
        if self.config.shard_throughput_limits {
            state.limiter.charge_read(pos.shard_ordinal, bytes, now);
        }
        let mut records = Vec::with_capacity(batch.entries.len());
        for e in &batch.entries {
            let Some((flags, partition_key, data)) = decode_record(&e.payload) else {
                tracing::error!(
                    stream = pos.stream_name,
                    shard = sid,
                    offset = e.offset,
                    "undecodable record skipped"
                );
                continue;
            };
            records.push(OutRecord {
                sequence_number: SequenceNumber {
                    stream_epoch: pos.stream_epoch,
                    shard_ordinal: pos.shard_ordinal,
                    offset: e.offset,
                }
                .encode(),
                arrival_ms: e.timestamp_ms,
                partition_key,
                data,
                encrypted: flags & FLAG_ENCRYPTED != 0,
            });
        }
        let next = batch.next_offset;
        let millis_behind_latest = if next >= end_offset {
            0
        } else {
            records
                .last()
                .map(|r| (now - r.arrival_ms).max(0))
                .unwrap_or(0)
        };
        state
            .metrics
            .get_records_records
            .inc_by(records.len() as u64);
        state
            .metrics
            .get_records_bytes
            .inc_by(records.iter().map(|r| r.data.len() as u64).sum());
        state.metrics.iterator_age_ms.set(millis_behind_latest);
        // Like Kinesis: the call that returns a closed shard's last records still hands out
        // an iterator; the next one (starting at the end) returns the children instead.
        let at_end_of_closed = closed_end.is_some_and(|end| pos.offset >= end && next >= end);
        if at_end_of_closed {
            let meta = state.meta.read().unwrap();
            let children = meta
                .shards
                .iter()
                .filter(|s| {
                    s.parent == Some(pos.shard_ordinal)
                        || s.adjacent_parent == Some(pos.shard_ordinal)
                })
                .map(|s| {
                    let (a, b) = s.range();
                    ChildShard {
                        shard_id: s.shard_id(),
                        parent_shards: s
                            .parent
                            .into_iter()
                            .chain(s.adjacent_parent)
                            .map(shard_id)
                            .collect(),
                        hash_key_range: HashKeyRange {
                            starting_hash_key: a.to_string(),
                            ending_hash_key: b.to_string(),
                        },
                    }
                })
                .collect();
            return GetRecordsOutput {
                records,
                next_shard_iterator: None,
                millis_behind_latest,
                child_shards: Some(children),
            };
        }
        GetRecordsOutput {
            records,
            next_shard_iterator: Some(self.iterators().encode(&IteratorPosition {
                offset: next,
                issued_ms: now,
                ..pos
            })),
            millis_behind_latest,
            child_shards: None,
        }
    }

    /// Deletes expired segments of every shard, and forgets closed shards whose data
    /// has all expired. Called periodically by the server.
    pub async fn enforce_retention(self: &Arc<Self>) -> Result<usize> {
        let now = self.now_ms();
        let states: Vec<_> = self.streams.read().unwrap().values().cloned().collect();
        let mut removed = 0;
        for state in states {
            let (retention_ms, logs) = {
                let meta = state.meta.read().unwrap();
                (
                    meta.retention_hours as i64 * 3_600_000,
                    state
                        .logs
                        .read()
                        .unwrap()
                        .iter()
                        .map(|(o, l)| (*o, l.clone()))
                        .collect::<Vec<_>>(),
                )
            };
            let cutoff = now - retention_ms;
            if let Some(plane) = self.shared_plane() {
                let (name, epoch) = {
                    let meta = state.meta.read().unwrap();
                    (meta.name.clone(), meta.epoch)
                };
                for (ordinal, _) in &logs {
                    let key = super::shared::ShardKey {
                        stream: name.clone(),
                        stream_epoch: epoch,
                        ordinal: *ordinal,
                    };
                    plane.expire(key, cutoff).await?;
                }
                continue;
            }
            for (_, log) in &logs {
                removed += self.store.enforce_retention(log, cutoff).await?;
            }
            self.expire_closed_shards(&state, cutoff).await?;
        }
        if let Some(plane) = self.shared_plane() {
            removed += plane.sweep().await? as usize;
        }
        Ok(removed)
    }
}

/// AWS's timestamp format in iterator-expiry messages: `Thu Jan 01 00:00:00 UTC 1970`.
fn amz_time(ms: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = crate::clock::civil_from_days(days);
    format!(
        "{} {} {:02} {:02}:{:02}:{:02} UTC {}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        y
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_encoding_round_trip() {
        let enc = encode_record(1, "key-é", b"\x00\x01data");
        let (flags, key, data) = decode_record(&enc).unwrap();
        assert_eq!(flags, 1);
        assert_eq!(key, "key-é");
        assert_eq!(&data[..], b"\x00\x01data");
        assert!(decode_record(&Bytes::from_static(&[0, 9, 0, b'a'])).is_none());
    }

    #[test]
    fn amz_time_format() {
        assert_eq!(amz_time(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(amz_time(1_700_000_000_000), "Tue Nov 14 22:13:20 UTC 2023");
    }
}
