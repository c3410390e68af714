//! One running application: read → parse → SQL → write → checkpoint.
//!
//! The source's shards are read through [`StreamService::get_records`] (waking on each
//! shard's durable end, and at least every [`TICK`]). A record's `ROWTIME` is its
//! arrival time in the source stream (`ApproximateArrivalTimestamp`), so replaying the
//! same records after a restart gives the same windows. Records of all shards are fed
//! to the program in arrival order: a record is taken only once every shard has been
//! read at least as far in time (or is caught up, in which case the SQL clock may pass
//! `now - watermark_delay`). Each record's rows go into the in-application input stream
//! of its shard (`<prefix>_00N`, by shard ordinal modulo the input parallelism).
//!
//! Rows emitted into a stream that an output names are written to its destination
//! (a data stream via PutRecords, a delivery stream via PutRecordBatch), retried until
//! they are written, which holds the reader back: backpressure, not buffering. Rows
//! that fail (schema, evaluation) go to the `error_stream` output if there is one, and
//! are counted. Every [`AnalyticsConfig::checkpoint_interval_ms`](super::AnalyticsConfig),
//! and when stopped, the program's state and the last record taken per shard are
//! written to the catalog, after the outputs of those records: a restart (or a
//! SIGKILL) resumes from there with the windows intact; outputs written after the last
//! checkpoint are written again (at least once).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use freshet_sql::{Column, Emitted, Program, Value};
use tokio::sync::watch;

use super::model::{AppCheckpoint, ApplicationMeta, OutputMeta, SinkKind};
use super::schema::{self, RowParser};
use super::{AnalyticsService, CHECKPOINTS, RunStats, compile};
use crate::streams::model::{OutRecord, parse_shard_id};
use crate::streams::sequence::SequenceNumber;
use crate::streams::{PutRecordsEntry, RecordInput, StreamRef};

/// The longest the runner waits without reading (so that time moves windows on).
const TICK: Duration = Duration::from_millis(50);
/// Records asked for per read of a shard.
const READ_LIMIT: usize = 2_000;
/// Rows written per PutRecords call.
const WRITE_BATCH: usize = 500;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);
/// The in-application stream whose rows are errors.
const ERROR_STREAM: &str = "error_stream";

pub(super) struct Runner {
    pub service: Arc<AnalyticsService>,
    pub meta: ApplicationMeta,
    pub stop: watch::Receiver<bool>,
    pub stats: Arc<RunStats>,
    /// Continue from the checkpoint (a restart, an update, LAST_STOPPED_POINT) rather
    /// than from the inputs' starting positions.
    pub resume: bool,
}

/// One shard being read.
struct Cursor {
    shard_id: String,
    /// The in-application input stream its rows go to.
    stream: String,
    iterator: String,
    end: watch::Receiver<u64>,
    /// Read but not yet fed to the program.
    buffer: VecDeque<OutRecord>,
    /// The last read returned everything there was.
    caught_up: bool,
    /// Read to the end of a closed shard.
    finished: bool,
    /// Where to resume: the last record fed to the program.
    position: Option<String>,
}

/// Why the runner stopped.
enum Halt {
    Stopped,
    Failed(String),
}

impl From<String> for Halt {
    fn from(e: String) -> Self {
        Halt::Failed(e)
    }
}

impl Runner {
    pub(super) async fn run(mut self) {
        let name = self.meta.name.clone();
        match self.work().await {
            Ok(()) | Err(Halt::Stopped) => {}
            Err(Halt::Failed(e)) => {
                tracing::error!(
                    application = name,
                    error = e,
                    "analytics application stopped"
                );
                *self.stats.last_error.lock().unwrap() = Some(e);
            }
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    async fn load_checkpoint(&self) -> Result<Option<AppCheckpoint>, String> {
        let catalog = self.service.catalog.clone();
        let key = self.meta.name.clone();
        let raw = tokio::task::spawn_blocking(move || catalog.get(CHECKPOINTS, &key))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        raw.map(|b| serde_json::from_slice(&b).map_err(|e| format!("corrupt checkpoint: {e}")))
            .transpose()
    }

    async fn save_checkpoint(&self, cp: &AppCheckpoint) -> Result<(), String> {
        let catalog = self.service.catalog.clone();
        let key = self.meta.name.clone();
        let bytes = serde_json::to_vec(cp).map_err(|e| e.to_string())?;
        tokio::task::spawn_blocking(move || catalog.put(CHECKPOINTS, &key, bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Reference tables, read from the local buckets.
    async fn load_references(&self, program: &mut Program) -> Result<(), String> {
        for r in &self.meta.references {
            let dir = self.service.config.buckets_dir.clone().ok_or_else(|| {
                "reference data from real S3 is not supported yet; run with --delivery-s3 local"
                    .to_string()
            })?;
            let bucket = r.bucket_arn.rsplit(':').next().unwrap_or("").to_string();
            if bucket.is_empty() || bucket.contains(['/', '\\']) || bucket.starts_with('.') {
                return Err(format!("invalid reference BucketARN {}", r.bucket_arn));
            }
            if r.file_key.split('/').any(|p| p == "..") {
                return Err(format!("invalid reference FileKey {}", r.file_key));
            }
            let path = dir.join(&bucket).join(&r.file_key);
            let data = tokio::fs::read(&path).await.map_err(|e| {
                format!(
                    "cannot read reference data s3://{bucket}/{}: {e}",
                    r.file_key
                )
            })?;
            let parser = RowParser::new(&r.schema)?;
            let rows = match &r.schema.format {
                // A JSON reference file holds one object per line.
                super::model::RecordFormat::Json { .. } => {
                    let mut rows = Vec::new();
                    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        rows.extend(parser.parse(line)?);
                    }
                    rows
                }
                super::model::RecordFormat::Csv { .. } => parser.parse(&data)?,
            };
            program
                .set_table(&r.table_name, rows)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn work(&mut self) -> Result<(), Halt> {
        let mut program = compile(&self.meta)
            .map_err(|e| Halt::Failed(e.to_string()))?
            .ok_or_else(|| Halt::Failed("the application has no code".into()))?;
        self.load_references(&mut program).await?;
        let columns: HashMap<String, Vec<Column>> = program
            .streams()
            .into_iter()
            .map(|s| (s.name, s.columns))
            .collect();
        let input = self
            .meta
            .inputs
            .first()
            .cloned()
            .ok_or_else(|| Halt::Failed("the application has no input".into()))?;
        let parser = RowParser::new(&input.schema)?;
        let stream_names = input.stream_names();
        let source = StreamRef {
            name: None,
            arn: Some(input.resource_arn.clone()),
        };
        let checkpoint = if self.resume {
            self.load_checkpoint().await?
        } else {
            None
        };
        let mut watermark = i64::MIN;
        if let Some(cp) = &checkpoint
            && cp.version == self.meta.version
            && !cp.state.is_empty()
        {
            program.restore(&cp.state).map_err(Halt::Failed)?;
            watermark = cp.watermark_ms;
        }
        let start_kind = match input.starting_position.as_deref() {
            Some("TRIM_HORIZON") => "TRIM_HORIZON",
            _ => "LATEST",
        };
        let mut cursors = self
            .open_cursors(&source, &stream_names, start_kind, checkpoint.as_ref())
            .await?;
        let mut last_checkpoint = tokio::time::Instant::now();
        let interval = Duration::from_millis(self.service.config.checkpoint_interval_ms.max(10));
        let mut last_rowtime = i64::MIN;
        let mut out: Vec<Emitted> = Vec::new();
        let mut errors: Vec<(String, String)> = Vec::new();
        loop {
            if self.stopping() {
                break;
            }
            for c in cursors.iter_mut() {
                c.end.borrow_and_update();
            }
            let mut children = Vec::new();
            let mut read_any = false;
            for c in cursors
                .iter_mut()
                .filter(|c| !c.finished && c.buffer.len() < READ_LIMIT)
            {
                let got = self
                    .service
                    .streams
                    .get_records(&c.iterator, Some(READ_LIMIT))
                    .await
                    .map_err(|e| Halt::Failed(format!("reading {}: {e}", c.shard_id)))?;
                c.caught_up = got.records.len() < READ_LIMIT;
                read_any |= !got.records.is_empty();
                self.stats
                    .records_in
                    .fetch_add(got.records.len() as u64, Ordering::Relaxed);
                c.buffer.extend(got.records);
                if let Some(kids) = got.child_shards {
                    c.finished = true;
                    children.extend(kids.into_iter().map(|k| k.shard_id));
                }
                if let Some(next) = got.next_shard_iterator {
                    c.iterator = next;
                }
            }
            for child in children {
                if cursors.iter().any(|c| c.shard_id == child) {
                    continue;
                }
                let cursor = self
                    .cursor(&source, &child, &stream_names, "TRIM_HORIZON", None)
                    .await?;
                cursors.push(cursor);
            }
            // How far in arrival time every shard is known.
            let now_wm = self.service.watermark_now();
            let safe = cursors
                .iter()
                .filter(|c| !(c.finished && c.buffer.is_empty()))
                .map(|c| {
                    let last = c.buffer.back().map(|r| r.arrival_ms);
                    if c.caught_up || c.finished {
                        last.map_or(now_wm, |l| l.max(now_wm))
                    } else {
                        last.unwrap_or(i64::MIN)
                    }
                })
                .min()
                .unwrap_or(now_wm);
            // Feed, in arrival order, everything at or before `safe`.
            loop {
                let next = cursors
                    .iter()
                    .enumerate()
                    .filter_map(|(i, c)| c.buffer.front().map(|r| (r.arrival_ms, i)))
                    .filter(|(t, _)| *t <= safe)
                    .min();
                let Some((_, i)) = next else { break };
                let c = &mut cursors[i];
                let Some(record) = c.buffer.pop_front() else {
                    break;
                };
                let rowtime = record.arrival_ms.max(last_rowtime);
                last_rowtime = rowtime;
                c.position = Some(record.sequence_number.clone());
                match parser.parse(&record.data) {
                    Ok(rows) => {
                        for mut row in rows {
                            row.push(Value::Timestamp(record.arrival_ms));
                            self.stats.rows_in.fetch_add(1, Ordering::Relaxed);
                            if let Err(e) = program.push(&c.stream, rowtime, row, &mut out) {
                                errors.push((e.to_string(), String::new()));
                            }
                        }
                    }
                    Err(e) => errors.push((
                        e,
                        String::from_utf8_lossy(&record.data[..record.data.len().min(1024)])
                            .into_owned(),
                    )),
                }
                if out.len() >= WRITE_BATCH * 4 {
                    self.write_outputs(&columns, &mut out).await?;
                }
            }
            if safe > watermark {
                watermark = safe;
                program.advance(watermark, &mut out);
                self.stats
                    .watermark_ms
                    .store(watermark.max(0) as u64, Ordering::Relaxed);
            }
            errors.extend(
                program
                    .drain_errors()
                    .into_iter()
                    .map(|e| (e.to_string(), String::new())),
            );
            if !errors.is_empty() {
                self.write_errors(std::mem::take(&mut errors), watermark)
                    .await?;
            }
            self.write_outputs(&columns, &mut out).await?;
            if last_checkpoint.elapsed() >= interval {
                let state = program.checkpoint();
                self.checkpoint(state, &cursors, watermark).await?;
                last_checkpoint = tokio::time::Instant::now();
            }
            if read_any && cursors.iter().any(|c| !c.caught_up && !c.finished) {
                continue;
            }
            self.wait(&mut cursors).await;
        }
        let state = program.checkpoint();
        self.checkpoint(state, &cursors, watermark).await?;
        Ok(())
    }

    /// Writes the program's state (`state`, taken before any await: the program is
    /// not shared across threads) with the cursors' positions.
    async fn checkpoint(
        &self,
        state: Vec<u8>,
        cursors: &[Cursor],
        watermark: i64,
    ) -> Result<(), Halt> {
        let cp = AppCheckpoint {
            version: self.meta.version,
            positions: cursors
                .iter()
                .filter_map(|c| c.position.clone().map(|p| (c.shard_id.clone(), p)))
                .collect(),
            finished: cursors
                .iter()
                .filter(|c| c.finished && c.buffer.is_empty())
                .map(|c| c.shard_id.clone())
                .collect(),
            state,
            watermark_ms: watermark,
        };
        self.save_checkpoint(&cp).await.map_err(Halt::Failed)
    }

    /// Waits for an append to any shard, the next tick, or stop.
    async fn wait(&mut self, cursors: &mut [Cursor]) {
        let mut stop = self.stop.clone();
        let ends = cursors
            .iter_mut()
            .filter(|c| !c.finished)
            .map(|c| Box::pin(c.end.changed()))
            .collect::<Vec<_>>();
        let any_append = async move {
            if ends.is_empty() {
                std::future::pending::<()>().await;
            }
            let _ = futures_select_all(ends).await;
        };
        tokio::select! {
            _ = any_append => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
        }
    }

    async fn open_cursors(
        &self,
        source: &StreamRef,
        stream_names: &[String],
        start_kind: &str,
        checkpoint: Option<&AppCheckpoint>,
    ) -> Result<Vec<Cursor>, Halt> {
        let name = self
            .service
            .streams
            .resolve_name(source)
            .map_err(|e| Halt::Failed(format!("the source stream: {e}")))?;
        let (shards, _) = self
            .service
            .streams
            .list_shards(Some(&StreamRef::name(name)), None, None, None, None)
            .map_err(|e| Halt::Failed(format!("listing the source's shards: {e}")))?;
        let mut cursors = Vec::new();
        for shard in shards {
            let id = shard.shard_id;
            let open = shard.sequence_number_range.ending_sequence_number.is_none();
            let resumed = checkpoint.and_then(|cp| cp.positions.get(&id));
            if checkpoint.is_some_and(|cp| cp.finished.contains(&id)) {
                continue;
            }
            let cursor = match (resumed, checkpoint) {
                (Some(seq), _) => {
                    self.cursor(
                        source,
                        &id,
                        stream_names,
                        "AFTER_SEQUENCE_NUMBER",
                        Some(seq),
                    )
                    .await?
                }
                // A shard the checkpoint never took a record from: from its start.
                (None, Some(_)) => {
                    self.cursor(source, &id, stream_names, "TRIM_HORIZON", None)
                        .await?
                }
                (None, None) if start_kind == "LATEST" && !open => continue,
                (None, None) => {
                    self.cursor(source, &id, stream_names, start_kind, None)
                        .await?
                }
            };
            cursors.push(cursor);
        }
        Ok(cursors)
    }

    async fn cursor(
        &self,
        source: &StreamRef,
        shard_id: &str,
        stream_names: &[String],
        kind: &str,
        seq: Option<&str>,
    ) -> Result<Cursor, Halt> {
        let streams = &self.service.streams;
        let iterator = streams
            .get_shard_iterator(source, shard_id, kind, seq, None)
            .await
            .map_err(|e| Halt::Failed(format!("positioning on {shard_id}: {e}")))?;
        // A cursor that starts at LATEST records where that was, so that a checkpoint
        // before its first record resumes there rather than at the shard's start.
        let position = if kind == "LATEST" {
            streams.iterators().decode(&iterator).and_then(|p| {
                p.offset.checked_sub(1).map(|offset| {
                    SequenceNumber {
                        stream_epoch: p.stream_epoch,
                        shard_ordinal: p.shard_ordinal,
                        offset,
                    }
                    .encode()
                })
            })
        } else {
            seq.map(str::to_string)
        };
        let end = streams
            .watch_shard_end(source, shard_id)
            .map_err(|e| Halt::Failed(format!("watching {shard_id}: {e}")))?;
        let ordinal = parse_shard_id(shard_id).unwrap_or(0) as usize;
        Ok(Cursor {
            shard_id: shard_id.to_string(),
            stream: stream_names[ordinal % stream_names.len()].clone(),
            iterator,
            end,
            buffer: VecDeque::new(),
            caught_up: false,
            finished: false,
            position,
        })
    }

    /// Writes the emitted rows of every output's stream; retries until written.
    async fn write_outputs(
        &self,
        columns: &HashMap<String, Vec<Column>>,
        out: &mut Vec<Emitted>,
    ) -> Result<(), Halt> {
        if out.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(out);
        self.stats
            .rows_out
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        for output in &self.meta.outputs {
            let Some(cols) = columns.get(&output.name) else {
                continue;
            };
            let records: Vec<Bytes> = rows
                .iter()
                .filter(|e| e.stream == output.name)
                .map(|e| Bytes::from(schema::encode_row(&output.format, cols, &e.values)))
                .collect();
            self.deliver(output, records).await?;
        }
        Ok(())
    }

    async fn write_errors(&self, errors: Vec<(String, String)>, at: i64) -> Result<(), Halt> {
        self.stats
            .errors
            .fetch_add(errors.len() as u64, Ordering::Relaxed);
        if let Some((message, _)) = errors.last() {
            *self.stats.last_error.lock().unwrap() = Some(message.clone());
        }
        for output in self.meta.outputs.iter().filter(|o| o.name == ERROR_STREAM) {
            let records = errors
                .iter()
                .map(|(message, data)| {
                    let doc = serde_json::json!({
                        "ERROR_TIME": schema::format_timestamp(at.max(0)),
                        "ERROR_LEVEL": "ERROR",
                        "ERROR_NAME": "Data conversion error",
                        "MESSAGE": message,
                        "DATA_ROWTIME": schema::format_timestamp(at.max(0)),
                        "DATA_ROW": data,
                    });
                    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
                })
                .collect();
            self.deliver(output, records).await?;
        }
        Ok(())
    }

    /// Writes records to one output, in batches, retrying failures with capped
    /// exponential backoff until they are written or the application stops.
    async fn deliver(&self, output: &OutputMeta, records: Vec<Bytes>) -> Result<(), Halt> {
        for chunk in records.chunks(WRITE_BATCH) {
            let mut pending: Vec<Bytes> = chunk.to_vec();
            let mut pause = RETRY_FIRST;
            loop {
                let failed = match output.sink {
                    SinkKind::KinesisStream => self.put_stream(output, &pending).await,
                    SinkKind::DeliveryStream => self.put_delivery(output, &pending).await,
                    SinkKind::Lambda => Err("LambdaOutput is not supported".into()),
                };
                match failed {
                    Ok(left) if left.is_empty() => break,
                    Ok(left) => pending = left,
                    Err(e) => {
                        tracing::warn!(
                            application = self.meta.name,
                            output = output.id,
                            error = e,
                            "output write failed; retrying"
                        );
                        *self.stats.last_error.lock().unwrap() = Some(e);
                    }
                }
                if self.stopping() {
                    return Err(Halt::Stopped);
                }
                let jitter = rand_jitter(pause);
                tokio::time::sleep(jitter).await;
                pause = (pause * 2).min(RETRY_CAP);
            }
        }
        Ok(())
    }

    /// PutRecords; returns the records that failed (throttled) for another try.
    async fn put_stream(&self, output: &OutputMeta, data: &[Bytes]) -> Result<Vec<Bytes>, String> {
        let target = StreamRef {
            name: None,
            arn: Some(output.resource_arn.clone()),
        };
        let inputs = data
            .iter()
            .map(|d| RecordInput {
                partition_key: uuid::Uuid::new_v4().simple().to_string(),
                explicit_hash_key: None,
                data: d.clone(),
            })
            .collect();
        let result = self
            .service
            .streams
            .put_records(&target, inputs)
            .await
            .map_err(|e| e.to_string())?;
        Ok(result
            .entries
            .iter()
            .zip(data)
            .filter(|(e, _)| !matches!(e, PutRecordsEntry::Ok { .. }))
            .map(|(_, d)| d.clone())
            .collect())
    }

    async fn put_delivery(
        &self,
        output: &OutputMeta,
        data: &[Bytes],
    ) -> Result<Vec<Bytes>, String> {
        let service = self
            .service
            .delivery
            .as_ref()
            .ok_or_else(|| "delivery streams are not running".to_string())?;
        let name = output
            .resource_arn
            .split_once(":deliverystream/")
            .map(|(_, n)| n)
            .ok_or_else(|| format!("invalid delivery stream ARN {}", output.resource_arn))?;
        // Delivery streams concatenate records: one row per line.
        let lines = data
            .iter()
            .map(|d| {
                if d.ends_with(b"\n") {
                    d.clone()
                } else {
                    let mut v = d.to_vec();
                    v.push(b'\n');
                    Bytes::from(v)
                }
            })
            .collect();
        service
            .put_records(name, lines)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Vec::new())
    }
}

/// A pause between `d/2` and `d`.
fn rand_jitter(d: Duration) -> Duration {
    let r = uuid::Uuid::new_v4().as_u128() as u64 % 1000;
    d / 2 + d / 2 * (r as u32) / 1000
}

/// Resolves when any of the futures does.
async fn futures_select_all<F: std::future::Future + Unpin>(futs: Vec<F>) {
    let mut futs = futs;
    std::future::poll_fn(move |cx| {
        for f in futs.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}
