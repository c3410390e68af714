//! One delivery stream's worker: read the stream's log from the checkpoint, batch by
//! the buffering hints ([`super::batch`]), build the object (records concatenated, as
//! AWS does; GZIP when asked), name it ([`super::naming`]), deliver it through the
//! [`Destination`] with retries, and only then advance the checkpoint.
//!
//! The order that makes a crash harmless: (1) the batch's range is written to the
//! catalog as `pending`; (2) the object is written; (3) the checkpoint moves past the
//! batch and `pending` is cleared, in one catalog write. A crash before (3) re-delivers
//! exactly the pending range, whose name is derived from it, so the same object is
//! written again under the same name: at least once, never under two names. Delivery
//! errors are retried with capped exponential backoff and jitter for as long as it
//! takes; records are never dropped. On a clean shutdown every partial batch is
//! delivered before the worker ends.
//!
//! The worker counts what it delivers on the stream's [`DeliveryMetrics`] handles and
//! keeps its [`Progress`] (what it holds undelivered) for the backlog and freshness
//! gauges that `/metrics` reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::batch::{Batcher, Hints, Span};
use super::compress;
use super::destination::Destination;
use super::http::{
    self as endpoint, ERROR_OUTPUT_TYPE, EndpointClient, EndpointFailure, EndpointRequest,
};
use super::model::{BatchConfig, Checkpoint, DeliveryStreamMeta};
use super::model::{HttpBackupMode, HttpEndpointDestination};
use super::naming::{self, PrefixTemplate};
use super::processing::{self, FailedRecord, InRecord, LambdaUrls, Pipeline};
use crate::clock::SharedClock;
use crate::metrics::DeliveryMetrics;
use crate::store::catalog::Catalog;
use crate::store::{Log, Store};
use crate::streams::StreamService;

pub(super) const CHECKPOINTS: &str = "delivery-checkpoints";

/// The most record bytes one read of the log returns.
const READ_BYTES: usize = 4 * 1024 * 1024;
/// The most partitions (distinct evaluated prefixes) of one stream at a time (AWS's
/// active-partition limit); records of further partitions go to the error prefix.
const MAX_PARTITIONS: usize = 500;
/// The error prefix of processing failures when the destination has none (followed by
/// the default `YYYY/MM/dd/HH/`).
const DEFAULT_PROCESSING_ERROR_PREFIX: &str = "processing-failed/";
/// Objects of one batch (dynamic partitions) built and written at once.
const PUT_CONCURRENCY: usize = 8;
/// First and largest pause between delivery attempts.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(20);

/// How far a delivery stream's workers are, for the backlog and freshness gauges read
/// at scrape time. Updated once per read and per batch, never per record.
#[derive(Debug)]
pub(super) struct Progress {
    /// Direct PUT: the offset of the oldest record not yet delivered (the checkpoint's);
    /// everything from there to the log's end is the backlog.
    delivered_next: AtomicU64,
    /// Per worker (its source shard, or `""` for the stream's own log): how many records
    /// it has read and not yet delivered, and the arrival of the oldest of them.
    held: Mutex<HashMap<String, (u64, i64)>>,
}

impl Progress {
    /// A stream whose records before `next` are delivered.
    pub(super) fn starting_at(next: u64) -> Progress {
        Progress {
            delivered_next: AtomicU64::new(next),
            held: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn delivered_next(&self) -> u64 {
        self.delivered_next.load(Ordering::Relaxed)
    }

    fn set_delivered_next(&self, next: u64) {
        self.delivered_next.store(next, Ordering::Relaxed);
    }

    /// What worker `holder` holds now: `records` read and not delivered, the oldest of
    /// which arrived at `oldest_ms`.
    fn hold(&self, holder: &str, records: u64, oldest_ms: Option<i64>) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match oldest_ms {
            Some(oldest) if records > 0 => match held.get_mut(holder) {
                Some(h) => *h = (records, oldest),
                None => {
                    held.insert(holder.to_string(), (records, oldest));
                }
            },
            _ => {
                held.remove(holder);
            }
        }
    }

    /// Every worker's records read and not delivered, and the oldest arrival among them.
    pub(super) fn held(&self) -> (u64, Option<i64>) {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let records = held.values().map(|(n, _)| n).sum();
        (records, held.values().map(|(_, at)| *at).min())
    }
}

/// What a worker needs.
#[derive(Clone)]
pub(super) struct Worker {
    pub meta: DeliveryStreamMeta,
    pub log: Arc<Log>,
    pub store: Arc<Store>,
    pub catalog: Arc<dyn Catalog>,
    pub clock: SharedClock,
    pub destination: Arc<dyn Destination>,
    /// Becomes true to stop: deliver what is buffered, then end.
    pub stop: watch::Receiver<bool>,
    /// The stream's configuration as UpdateDestination leaves it; read before each
    /// batch is sealed.
    pub config: watch::Receiver<DeliveryStreamMeta>,
    /// The last delivery failure, for DescribeDeliveryStream (cleared on success).
    pub failure: Arc<std::sync::Mutex<Option<String>>>,
    /// The stream's ARN (`X-Amz-Firehose-Source-Arn` of HTTP endpoint requests, and
    /// `deliveryStreamArn` of Lambda events).
    pub source_arn: String,
    /// The region (`region` of Lambda events).
    pub region: String,
    /// Lambda function ARNs to URLs, for the stream's `ProcessingConfiguration`.
    pub lambda_urls: LambdaUrls,
    /// The HTTP endpoint client, made on first use (streams to S3 never need one).
    pub endpoint_client: Option<EndpointClient>,
    /// The data streams, for a `KinesisStreamAsSource` stream.
    pub streams: Option<Arc<StreamService>>,
    /// The source shard this worker delivers (`None`: the stream's own log).
    pub shard: Option<String>,
    /// The stream's counters.
    pub metrics: DeliveryMetrics,
    /// What the stream's workers hold undelivered (shared with the service).
    pub progress: Arc<Progress>,
}

/// Why a worker stopped without finishing its work.
#[derive(Debug)]
pub(super) enum Halt {
    /// Stop was asked while a delivery kept failing: it stays pending for next time.
    Stopped,
    Failed(String),
}

impl Worker {
    pub(super) async fn run(mut self) {
        let name = self.meta.name.clone();
        let outcome = if self.meta.source.is_some() {
            super::source::run(self).await
        } else {
            self.work().await
        };
        match outcome {
            Ok(()) | Err(Halt::Stopped) => {}
            Err(Halt::Failed(e)) => {
                tracing::error!(delivery_stream = name, error = e, "delivery worker stopped")
            }
        }
    }

    fn checkpoint_key(&self) -> String {
        self.meta.log_id()
    }

    async fn load_checkpoint(&self) -> Result<Checkpoint, Halt> {
        let catalog = self.catalog.clone();
        let key = self.checkpoint_key();
        let raw = tokio::task::spawn_blocking(move || catalog.get(CHECKPOINTS, &key))
            .await
            .map_err(|e| Halt::Failed(e.to_string()))?
            .map_err(|e| Halt::Failed(e.to_string()))?;
        match raw {
            None => Ok(Checkpoint::default()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Halt::Failed(format!("corrupt checkpoint: {e}"))),
        }
    }

    /// The hints of the current configuration.
    pub(super) fn hints(&self) -> Hints {
        match &self.meta.http {
            Some(h) => Hints::from_aws(h.size_mbs, h.interval_secs),
            None => Hints::from_aws(
                self.meta.destination.size_mbs,
                self.meta.destination.interval_secs,
            ),
        }
    }

    /// Takes up a configuration UpdateDestination made since the last look: its hints
    /// apply to the open batch at once, its destination to every batch sealed from now.
    pub(super) fn refresh(&mut self, batcher: &mut Batcher) {
        // By version, not `has_changed`: the wait below marks every value seen.
        if self.config.borrow().version != self.meta.version {
            self.meta = self.config.borrow_and_update().clone();
            batcher.set_hints(self.hints());
            tracing::info!(
                delivery_stream = self.meta.name,
                version = self.meta.version,
                "delivering under an updated destination"
            );
        }
    }

    async fn save_checkpoint(&self, cp: Checkpoint) -> Result<(), Halt> {
        let catalog = self.catalog.clone();
        let key = self.checkpoint_key();
        let bytes = serde_json::to_vec(&cp).map_err(|e| Halt::Failed(e.to_string()))?;
        tokio::task::spawn_blocking(move || catalog.put(CHECKPOINTS, &key, bytes))
            .await
            .map_err(|e| Halt::Failed(e.to_string()))?
            .map_err(|e| Halt::Failed(e.to_string()))
    }

    async fn work(&mut self) -> Result<(), Halt> {
        // The configuration current at start (later ones arrive through `config`).
        self.meta = self.config.borrow_and_update().clone();
        let mut cp = self.load_checkpoint().await?;
        self.progress
            .set_delivered_next(cp.next.max(self.log.bounds().first_offset));
        if let Some((first, last)) = cp.pending {
            // A batch whose delivery a crash interrupted: the same range, the same name.
            let (records, arrivals) = self.read_range(first, last).await?;
            let span = Span {
                first_offset: first,
                last_offset: last,
                first_arrival_ms: arrivals.first().copied().unwrap_or(0),
                bytes: records.iter().map(|r| r.len() as u64).sum(),
                records: records.len() as u64,
            };
            tracing::info!(
                delivery_stream = self.meta.name,
                first,
                last,
                "re-delivering an interrupted batch"
            );
            // Under the configuration it was first attempted with: the same name.
            let config = cp
                .pending_config
                .take()
                .unwrap_or_else(|| self.meta.batch_config());
            self.hold(span.records, Some(span.first_arrival_ms));
            self.deliver(&config, span, records, arrivals).await?;
            cp = Checkpoint {
                next: last + 1,
                ..Checkpoint::default()
            };
            self.save_checkpoint(cp.clone()).await?;
            self.progress.set_delivered_next(last + 1);
            self.hold(0, None);
        }
        let mut next = cp.next.max(self.log.bounds().first_offset);
        let mut batcher = Batcher::new(self.hints());
        let mut records: Vec<Bytes> = Vec::new();
        let mut arrivals: Vec<i64> = Vec::new();
        let mut end_rx = self.log.watch_end();
        loop {
            let end = self.log.bounds().end_offset;
            while next < end && !batcher.is_full() {
                let read = self
                    .store
                    .read(&self.log, next, 10_000, READ_BYTES)
                    .await
                    .map_err(|e| Halt::Failed(e.to_string()))?;
                if read.entries.is_empty() {
                    break;
                }
                for frame in read.entries {
                    let full = batcher.push(frame.offset, frame.timestamp_ms, frame.payload.len());
                    records.push(frame.payload);
                    arrivals.push(frame.timestamp_ms);
                    next = frame.offset + 1;
                    if full {
                        break;
                    }
                }
            }
            let open = batcher.open();
            self.hold(
                open.map_or(0, |s| s.records),
                open.map(|s| s.first_arrival_ms),
            );
            let stopping = *self.stop.borrow();
            self.refresh(&mut batcher);
            if batcher.is_due(self.clock.now_ms()) || (stopping && batcher.open().is_some()) {
                if let Some(span) = batcher.take() {
                    let batch = std::mem::take(&mut records);
                    let batch_arrivals = std::mem::take(&mut arrivals);
                    let config = self.meta.batch_config();
                    self.save_checkpoint(Checkpoint {
                        next: span.first_offset,
                        pending: Some((span.first_offset, span.last_offset)),
                        pending_config: Some(config.clone()),
                    })
                    .await?;
                    self.deliver(&config, span, batch, batch_arrivals).await?;
                    self.save_checkpoint(Checkpoint {
                        next: span.last_offset + 1,
                        ..Checkpoint::default()
                    })
                    .await?;
                    self.progress.set_delivered_next(span.last_offset + 1);
                    self.hold(0, None);
                    self.trim(span).await;
                }
                continue;
            }
            if stopping {
                if next >= self.log.bounds().end_offset {
                    return Ok(());
                }
                continue;
            }
            let wait = match batcher.due_at_ms() {
                Some(due) => {
                    Duration::from_millis((due - self.clock.now_ms()).clamp(1, 1000) as u64)
                }
                None => Duration::from_secs(1),
            };
            tokio::select! {
                _ = end_rx.changed() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.changed() => {}
                Ok(()) = self.config.changed() => {}
            }
        }
    }

    /// Records `first..=last` and their arrivals.
    async fn read_range(&self, first: u64, last: u64) -> Result<(Vec<Bytes>, Vec<i64>), Halt> {
        let mut out = Vec::new();
        let mut arrivals = Vec::new();
        let mut at = first;
        while at <= last {
            let read = self
                .store
                .read(
                    &self.log,
                    at,
                    (last - at + 1).min(10_000) as usize,
                    READ_BYTES,
                )
                .await
                .map_err(|e| Halt::Failed(e.to_string()))?;
            if read.entries.is_empty() {
                return Err(Halt::Failed(format!(
                    "records {at}..={last} are missing from the log"
                )));
            }
            for frame in read.entries {
                if frame.offset > last {
                    break;
                }
                arrivals.push(frame.timestamp_ms);
                at = frame.offset + 1;
                out.push(frame.payload);
            }
        }
        Ok((out, arrivals))
    }

    /// What this worker holds undelivered now ([`Progress::hold`]).
    pub(super) fn hold(&self, records: u64, oldest_ms: Option<i64>) {
        self.progress
            .hold(self.shard.as_deref().unwrap_or(""), records, oldest_ms);
    }

    /// Delivers one batch: to the HTTP endpoint when the stream has one, else as an
    /// object to the bucket; retrying until it is done (or stop is asked, leaving it
    /// pending). `arrivals[i]` is the arrival of `records[i]`. Each record's latency
    /// (arrival to the destination's acknowledgement) goes to the histogram.
    pub(super) async fn deliver(
        &mut self,
        config: &BatchConfig,
        span: Span,
        records: Vec<Bytes>,
        arrivals: Vec<i64>,
    ) -> Result<(), Halt> {
        let accepted = arrivals.clone();
        self.deliver_batch(config, span, records, arrivals).await?;
        let now = self.clock.now_ms();
        let latency = &self.metrics.latency;
        for at in accepted {
            latency.observe((now - at).max(0) as f64 / 1000.0);
        }
        Ok(())
    }

    async fn deliver_batch(
        &mut self,
        config: &BatchConfig,
        span: Span,
        records: Vec<Bytes>,
        arrivals: Vec<i64>,
    ) -> Result<(), Halt> {
        let dest = &config.destination;
        let prefix = PrefixTemplate::parse_partitioned(
            dest.prefix.as_deref().unwrap_or(""),
            false,
            dest.dynamic_partitioning,
        )
        .map_err(Halt::Failed)?;
        // A source shard's batches are named from their offsets in that shard.
        let identity = match &self.shard {
            Some(shard) => format!("{}/{shard}", self.meta.log_id()),
            None => self.meta.log_id(),
        };
        let batch = naming::batch_uuid(&identity, span.first_offset, span.last_offset);
        // Records a data stream's producers aggregated with the KPL are delivered as
        // their user records, as Firehose does for a Kinesis source.
        let (records, arrivals) = if self.shard.is_some() {
            deaggregate_kpl(records, arrivals)
        } else {
            (records, arrivals)
        };
        let processing_config = match &config.http {
            Some(h) => h.processing.as_ref(),
            None => dest.processing.as_ref(),
        };
        let pipeline = match Pipeline::parse(processing_config, &self.lambda_urls) {
            Ok(p) => p,
            Err(e) => {
                // E.g. a function's URL no longer configured: nothing is delivered (or
                // lost) until the configuration is mended and the server restarted.
                let message = format!("cannot process records: {e}");
                if let Ok(mut f) = self.failure.lock() {
                    *f = Some(message.clone());
                }
                return Err(Halt::Failed(message));
            }
        };
        let Some(pipeline) = pipeline else {
            if let Some(http) = &config.http {
                return self
                    .deliver_http(config, http, &prefix, span, batch, records, arrivals)
                    .await;
            }
            let key = self.object_key(config, &prefix, None, span, batch);
            let (n, bytes) = count(&records);
            self.put_object(config, &key, records, span).await?;
            self.metrics.to_bucket.add(n, bytes);
            return Ok(());
        };
        // Processing: the same batch always gives the same records and names, so a
        // batch delivered again after a crash lands on the same objects.
        let input = records
            .into_iter()
            .zip(arrivals)
            .map(|(data, arrival_ms)| InRecord { data, arrival_ms })
            .collect();
        let client = self
            .endpoint_client
            .get_or_insert_with(EndpointClient::new)
            .clone();
        let outcome = pipeline
            .process(
                input,
                &batch.hyphenated().to_string(),
                &self.source_arn,
                &self.region,
                &client,
            )
            .await;
        let mut failed = outcome.failed;
        tracing::debug!(
            delivery_stream = self.meta.name,
            ok = outcome.ok.len(),
            failed = failed.len(),
            dropped = outcome.dropped,
            "batch processed"
        );
        let dynamic = config.destination.dynamic_partitioning && config.http.is_none();
        // Partitions by evaluated prefix, in the order their first record came.
        let mut partitions: Vec<(String, Vec<Bytes>, Vec<i64>)> = Vec::new();
        for r in outcome.ok {
            let evaluated = if dynamic {
                let at = partitions.len();
                match prefix.evaluate_keyed(
                    r.arrival_ms,
                    batch,
                    None,
                    &r.query_keys,
                    &r.lambda_keys,
                ) {
                    Ok(p) if at < MAX_PARTITIONS || partitions.iter().any(|(k, _, _)| *k == p) => p,
                    Ok(_) => {
                        failed.push(FailedRecord {
                            raw: r.raw,
                            arrival_ms: r.arrival_ms,
                            attempts: 1,
                            code: "DynamicPartitioning.ActivePartitionsLimitExceeded".into(),
                            message: format!(
                                "The number of active partitions exceeded the limit of {MAX_PARTITIONS} for the delivery stream."
                            ),
                            lambda_arn: None,
                        });
                        continue;
                    }
                    Err(message) => {
                        failed.push(FailedRecord {
                            raw: r.raw,
                            arrival_ms: r.arrival_ms,
                            attempts: 1,
                            code: "DynamicPartitioning.MetadataExtractionFailed".into(),
                            message,
                            lambda_arn: None,
                        });
                        continue;
                    }
                }
            } else {
                String::new()
            };
            match partitions.iter_mut().find(|(k, _, _)| *k == evaluated) {
                Some((_, recs, arr)) => {
                    recs.push(r.data);
                    arr.push(r.arrival_ms);
                }
                None => partitions.push((evaluated, vec![r.data], vec![r.arrival_ms])),
            }
        }
        if !failed.is_empty() {
            self.deliver_failed(config, span, batch, &failed).await?;
        }
        if let Some(http) = &config.http {
            let (records, arrivals) = partitions.pop().map(|(_, r, a)| (r, a)).unwrap_or_default();
            if records.is_empty() {
                return Ok(());
            }
            return self
                .deliver_http(config, http, &prefix, span, batch, records, arrivals)
                .await;
        }
        let mut objects = Vec::with_capacity(partitions.len());
        for (evaluated, records, arrivals) in partitions {
            let key = if dynamic {
                let id = naming::batch_uuid(
                    &format!("{identity}\0{evaluated}"),
                    span.first_offset,
                    span.last_offset,
                );
                naming::object_key_under(
                    &evaluated,
                    &self.meta.name,
                    config.version,
                    arrivals
                        .iter()
                        .copied()
                        .min()
                        .unwrap_or(span.first_arrival_ms),
                    id,
                    config.destination.extension(),
                )
            } else {
                self.object_key(config, &prefix, None, span, batch)
            };
            objects.push((key, records));
        }
        self.put_objects(config, objects, span).await
    }

    /// The objects of one batch (its partitions): built and written up to
    /// [`PUT_CONCURRENCY`] at a time, each object's first attempt; an object whose
    /// first attempt fails is then retried on its own with backoff, as a single object
    /// is ([`Self::put_with_retries`]). Returns when every object is written, so the
    /// batch's checkpoint still moves only past a batch that is delivered whole.
    async fn put_objects(
        &mut self,
        config: &BatchConfig,
        objects: Vec<(String, Vec<Bytes>)>,
        span: Span,
    ) -> Result<(), Halt> {
        if objects.len() <= 1 {
            for (key, records) in objects {
                let (n, bytes) = count(&records);
                self.put_object(config, &key, records, span).await?;
                self.metrics.to_bucket.add(n, bytes);
            }
            return Ok(());
        }
        let bucket = config.destination.bucket().to_string();
        let compression = config.destination.compression;
        let extension = config.destination.extension().to_string();
        #[allow(clippy::type_complexity)]
        let mut tasks: JoinSet<(String, u64, u64, Result<(), (Option<Bytes>, String)>)> =
            JoinSet::new();
        let mut retry = Vec::new();
        let handle = |done: Result<_, tokio::task::JoinError>,
                      retry: &mut Vec<(String, Option<Bytes>)>|
         -> Result<(), Halt> {
            let (key, n, bytes, outcome) = done.map_err(|e| Halt::Failed(e.to_string()))?;
            match outcome {
                Ok(()) => self.metrics.to_bucket.add(n, bytes),
                Err((body, error)) => {
                    self.metrics.failures.inc();
                    tracing::warn!(delivery_stream = self.meta.name, key, %error, "delivery failed; retrying");
                    if let Ok(mut f) = self.failure.lock() {
                        *f = Some(error);
                    }
                    retry.push((key, body));
                }
            }
            Ok(())
        };
        for (key, records) in objects {
            if tasks.len() >= PUT_CONCURRENCY
                && let Some(done) = tasks.join_next().await
            {
                handle(done, &mut retry)?;
            }
            let destination = self.destination.clone();
            let (bucket, extension) = (bucket.clone(), extension.clone());
            let time_ms = span.first_arrival_ms;
            tasks.spawn(async move {
                let (n, bytes) = count(&records);
                let body = match build_object(compression, &extension, records, &key, time_ms).await
                {
                    Ok(body) => body,
                    Err(e) => return (key, n, bytes, Err((None, e))),
                };
                let outcome = destination
                    .put_object(&bucket, &key, body.clone())
                    .await
                    .map_err(|e| (Some(body), e.to_string()));
                (key, n, bytes, outcome)
            });
        }
        while let Some(done) = tasks.join_next().await {
            handle(done, &mut retry)?;
        }
        for (key, body) in retry {
            // An object that could not be built (a compression error) is not retried.
            let body =
                body.ok_or_else(|| Halt::Failed(format!("cannot build the object {key}")))?;
            self.put_with_retries(&bucket, &key, body, span).await?;
        }
        if let Ok(mut f) = self.failure.lock() {
            *f = None;
        }
        Ok(())
    }

    /// One object of `records` in the stream's bucket, built and written with retries.
    async fn put_object(
        &mut self,
        config: &BatchConfig,
        key: &str,
        records: Vec<Bytes>,
        span: Span,
    ) -> Result<(), Halt> {
        let bucket = config.destination.bucket().to_string();
        let body = self
            .build(config, records, key, span.first_arrival_ms)
            .await?;
        self.put_with_retries(&bucket, key, body, span).await?;
        if let Ok(mut f) = self.failure.lock() {
            *f = None;
        }
        Ok(())
    }

    /// The records of a batch that failed processing, as one object under the error
    /// prefix (`processing-failed` as `!{firehose:error-output-type}`), in the bucket (or
    /// the HTTP endpoint's backup bucket).
    async fn deliver_failed(
        &mut self,
        config: &BatchConfig,
        span: Span,
        batch: uuid::Uuid,
        failed: &[FailedRecord],
    ) -> Result<(), Halt> {
        let dest = &config.destination;
        let error_prefix = PrefixTemplate::parse(
            dest.error_output_prefix
                .as_deref()
                .unwrap_or(DEFAULT_PROCESSING_ERROR_PREFIX),
            true,
        )
        .map_err(Halt::Failed)?;
        let id = naming::batch_uuid(
            &format!("{batch}\0{}", processing::PROCESSING_FAILED),
            span.first_offset,
            span.last_offset,
        );
        let key = self.object_key(
            config,
            &error_prefix,
            Some(processing::PROCESSING_FAILED),
            span,
            id,
        );
        let lines = processing::failed_records_object(failed, self.clock.now_ms());
        tracing::warn!(
            delivery_stream = self.meta.name,
            records = failed.len(),
            key,
            first_error = failed[0].code,
            "records failed processing; writing them under the error prefix"
        );
        self.put_object(config, &key, vec![Bytes::from(lines)], span)
            .await?;
        self.metrics.processing_failed.inc_by(failed.len() as u64);
        Ok(())
    }

    /// The object key of a batch in the (backup) bucket.
    fn object_key(
        &self,
        config: &BatchConfig,
        prefix: &PrefixTemplate,
        error_type: Option<&str>,
        span: Span,
        batch: uuid::Uuid,
    ) -> String {
        naming::object_key(
            prefix,
            error_type,
            &self.meta.name,
            config.version,
            span.first_arrival_ms,
            batch,
            config.destination.extension(),
        )
    }

    /// The object of `records` in the bucket's compression, built off the runtime.
    async fn build(
        &self,
        config: &BatchConfig,
        records: Vec<Bytes>,
        key: &str,
        time_ms: i64,
    ) -> Result<Bytes, Halt> {
        build_object(
            config.destination.compression,
            config.destination.extension(),
            records,
            key,
            time_ms,
        )
        .await
        .map_err(Halt::Failed)
    }

    /// Writes one object, retrying with capped exponential backoff and jitter until it
    /// is written (or stop is asked).
    async fn put_with_retries(
        &mut self,
        bucket: &str,
        key: &str,
        body: Bytes,
        span: Span,
    ) -> Result<(), Halt> {
        let mut pause = RETRY_FIRST;
        loop {
            match self.destination.put_object(bucket, key, body.clone()).await {
                Ok(()) => {
                    tracing::debug!(
                        delivery_stream = self.meta.name,
                        key,
                        records = span.records,
                        bytes = body.len(),
                        "batch delivered"
                    );
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.failures.inc();
                    tracing::warn!(delivery_stream = self.meta.name, key, error = %e, retry_in = ?pause, "delivery failed; retrying");
                    if let Ok(mut f) = self.failure.lock() {
                        *f = Some(e.to_string());
                    }
                    self.pause(jittered(pause)).await?;
                    pause = (pause * 2).min(RETRY_CAP);
                }
            }
        }
    }

    /// Sleeps, or ends early with [`Halt::Stopped`] when stop is asked.
    pub(super) async fn pause(&mut self, sleep: Duration) -> Result<(), Halt> {
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = self.stop.changed() => {}
        }
        if *self.stop.borrow() {
            return Err(Halt::Stopped);
        }
        Ok(())
    }

    /// One batch to an HTTP endpoint: the same request (and request id) until the
    /// endpoint takes it or `RetryOptions.DurationInSeconds` have passed since the first
    /// failure; then the batch's records go to the backup bucket under the error prefix.
    /// With `S3BackupMode` `AllData` the batch is also written to the backup bucket.
    #[allow(clippy::too_many_arguments)]
    async fn deliver_http(
        &mut self,
        config: &BatchConfig,
        http: &HttpEndpointDestination,
        prefix: &PrefixTemplate,
        span: Span,
        batch: uuid::Uuid,
        records: Vec<Bytes>,
        arrivals: Vec<i64>,
    ) -> Result<(), Halt> {
        let request_id = batch.hyphenated().to_string();
        let request = {
            let (http, id, arn) = (http.clone(), request_id.clone(), self.source_arn.clone());
            let (records, now) = (records.clone(), self.clock.now_ms());
            tokio::task::spawn_blocking(move || {
                endpoint::build_request(&http, &id, &arn, now, &records)
            })
            .await
            .map_err(|e| Halt::Failed(e.to_string()))?
            .map_err(|e| Halt::Failed(format!("cannot build a request: {e}")))?
        };
        let (attempts, failure) = self.send_with_retries(http, &request, &request_id).await?;
        let (n, bytes) = count(&records);
        if failure.is_none()
            && let Some(endpoint) = &self.metrics.to_endpoint
        {
            endpoint.add(n, bytes);
        }
        let backup = config.destination.clone();
        let bucket = backup.bucket().to_string();
        if let Some(failure) = failure {
            let error_prefix = PrefixTemplate::parse(
                backup
                    .error_output_prefix
                    .as_deref()
                    .unwrap_or(endpoint::DEFAULT_ERROR_PREFIX),
                true,
            )
            .map_err(Halt::Failed)?;
            let key = self.object_key(config, &error_prefix, Some(ERROR_OUTPUT_TYPE), span, batch);
            let lines = endpoint::failed_records_object(
                &records,
                &arrivals,
                attempts,
                &failure,
                self.clock.now_ms(),
            );
            let body = self
                .build(
                    config,
                    vec![Bytes::from(lines)],
                    &key,
                    span.first_arrival_ms,
                )
                .await?;
            tracing::warn!(
                delivery_stream = self.meta.name,
                request_id,
                attempts,
                key,
                error = %failure,
                "the endpoint did not take a batch within the retry duration; writing it to the backup bucket"
            );
            self.put_with_retries(&bucket, &key, body, span).await?;
            self.metrics.to_bucket.add(n, bytes);
        }
        if http.backup_mode == HttpBackupMode::AllData {
            let key = self.object_key(config, prefix, None, span, batch);
            let body = self
                .build(config, records, &key, span.first_arrival_ms)
                .await?;
            self.put_with_retries(&bucket, &key, body, span).await?;
            self.metrics.to_bucket.add(n, bytes);
        }
        Ok(())
    }

    /// Sends `request` until the endpoint takes it (`None`) or the retry duration has
    /// passed (the last failure); also how many attempts were made.
    async fn send_with_retries(
        &mut self,
        http: &HttpEndpointDestination,
        request: &EndpointRequest,
        request_id: &str,
    ) -> Result<(u32, Option<EndpointFailure>), Halt> {
        let client = self
            .endpoint_client
            .get_or_insert_with(EndpointClient::new)
            .clone();
        let limit_ms = i64::from(http.retry_secs) * 1000;
        let mut first_failure_ms = None;
        let mut pause = RETRY_FIRST;
        let mut attempts = 0u32;
        loop {
            attempts = attempts.saturating_add(1);
            let outcome = match client.post(&http.url, request).await {
                Ok((status, body)) => endpoint::check_response(status, &body, request_id),
                Err(message) => Err(EndpointFailure {
                    code: "HttpEndpoint.ConnectionFailed",
                    message,
                }),
            };
            let failure = match outcome {
                Ok(()) => {
                    if let Ok(mut f) = self.failure.lock() {
                        *f = None;
                    }
                    tracing::debug!(
                        delivery_stream = self.meta.name,
                        request_id,
                        attempts,
                        bytes = request.body.len(),
                        "batch delivered to the endpoint"
                    );
                    return Ok((attempts, None));
                }
                Err(f) => f,
            };
            self.metrics.failures.inc();
            if let Ok(mut f) = self.failure.lock() {
                *f = Some(failure.to_string());
            }
            let now = self.clock.now_ms();
            let elapsed = now - *first_failure_ms.get_or_insert(now);
            if elapsed >= limit_ms {
                return Ok((attempts, Some(failure)));
            }
            let left = Duration::from_millis((limit_ms - elapsed) as u64);
            let sleep = jittered(pause).min(left);
            tracing::warn!(delivery_stream = self.meta.name, request_id, error = %failure, retry_in = ?sleep, "endpoint delivery failed; retrying");
            self.pause(sleep).await?;
            pause = (pause * 2).min(RETRY_CAP);
        }
    }

    /// Deletes sealed segments whose records are all delivered.
    async fn trim(&self, span: Span) {
        let log = self.log.clone();
        let _ = tokio::task::spawn_blocking(move || log.trim_before(span.first_arrival_ms)).await;
    }
}

/// How many records and data bytes `records` are.
/// An object's body: `records` concatenated and compressed (on a blocking thread), its
/// entry named after `key` (see [`object_name`]) and stamped `time_ms`.
async fn build_object(
    compression: naming::Compression,
    extension: &str,
    records: Vec<Bytes>,
    key: &str,
    time_ms: i64,
) -> Result<Bytes, String> {
    let name = object_name(key, extension);
    tokio::task::spawn_blocking(move || {
        let entry = compress::Entry {
            name: &name,
            time_ms,
        };
        compress::build(&records, compression, entry)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot compress a batch: {e}"))
}

/// The name of an object's single entry (ZIP) or GZIP header: its key's last segment
/// without the extension.
fn object_name(key: &str, extension: &str) -> String {
    let base = key.rsplit('/').next().unwrap_or(key);
    base.strip_suffix(extension).unwrap_or(base).to_string()
}

fn count(records: &[Bytes]) -> (u64, u64) {
    let bytes = records.iter().map(|r| r.len() as u64).sum();
    (records.len() as u64, bytes)
}

/// A pause with jitter, in `[pause/2, pause]`.
pub(super) fn jittered(pause: Duration) -> Duration {
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
    pause / 2 + pause / 2 * jitter / 1000
}

/// Each KPL aggregate among `records` replaced by its user records (with its arrival).
fn deaggregate_kpl(records: Vec<Bytes>, arrivals: Vec<i64>) -> (Vec<Bytes>, Vec<i64>) {
    if !records.iter().any(|r| r.starts_with(&super::kpl::MAGIC)) {
        return (records, arrivals);
    }
    let mut out = Vec::with_capacity(records.len());
    let mut out_arrivals = Vec::with_capacity(records.len());
    for (record, arrival) in records.into_iter().zip(arrivals) {
        match super::kpl::deaggregate(&record) {
            Some(users) => {
                for u in users {
                    out.push(u.data);
                    out_arrivals.push(arrival);
                }
            }
            None => {
                out.push(record);
                out_arrivals.push(arrival);
            }
        }
    }
    (out, out_arrivals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_sums_what_the_workers_hold_and_keeps_the_oldest_arrival() {
        let p = Progress::starting_at(5);
        assert_eq!(p.delivered_next(), 5);
        assert_eq!(p.held(), (0, None));
        p.hold("shardId-000000000000", 3, Some(2_000));
        p.hold("shardId-000000000001", 4, Some(1_000));
        assert_eq!(p.held(), (7, Some(1_000)));
        // A worker's new figure replaces its old one; nothing held removes it.
        p.hold("shardId-000000000001", 1, Some(1_500));
        assert_eq!(p.held(), (4, Some(1_500)));
        p.hold("shardId-000000000000", 0, None);
        p.hold("shardId-000000000001", 0, Some(1_500));
        assert_eq!(p.held(), (0, None));
        p.set_delivered_next(9);
        assert_eq!(p.delivered_next(), 9);
    }

    #[test]
    fn count_gives_records_and_data_bytes() {
        let records = vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from(vec![0; 7]),
        ];
        assert_eq!(count(&records), (3, 9));
    }
}
