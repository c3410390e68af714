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

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::batch::{Batcher, Hints, Span};
use super::destination::Destination;
use super::http::{
    self as endpoint, ERROR_OUTPUT_TYPE, EndpointClient, EndpointFailure, EndpointRequest,
};
use super::model::{Checkpoint, DeliveryStreamMeta};
use super::model::{HttpBackupMode, HttpEndpointDestination};
use super::naming::{self, Compression, PrefixTemplate};
use crate::clock::SharedClock;
use crate::store::catalog::Catalog;
use crate::store::{Log, Store};

pub(super) const CHECKPOINTS: &str = "delivery-checkpoints";

/// The most record bytes one read of the log returns.
const READ_BYTES: usize = 4 * 1024 * 1024;
/// First and largest pause between delivery attempts.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(20);

/// What a worker needs.
pub(super) struct Worker {
    pub meta: DeliveryStreamMeta,
    pub log: Arc<Log>,
    pub store: Arc<Store>,
    pub catalog: Arc<dyn Catalog>,
    pub clock: SharedClock,
    pub destination: Arc<dyn Destination>,
    /// Becomes true to stop: deliver what is buffered, then end.
    pub stop: watch::Receiver<bool>,
    /// The last delivery failure, for DescribeDeliveryStream (cleared on success).
    pub failure: Arc<std::sync::Mutex<Option<String>>>,
    /// The stream's ARN (`X-Amz-Firehose-Source-Arn` of HTTP endpoint requests).
    pub source_arn: String,
    /// The HTTP endpoint client, made on first use (streams to S3 never need one).
    pub endpoint_client: Option<EndpointClient>,
}

/// Why a worker stopped without finishing its work.
#[derive(Debug)]
enum Halt {
    /// Stop was asked while a delivery kept failing: it stays pending for next time.
    Stopped,
    Failed(String),
}

impl Worker {
    pub(super) async fn run(mut self) {
        let name = self.meta.name.clone();
        match self.work().await {
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
        let dest = &self.meta.destination;
        let hints = match &self.meta.http {
            Some(h) => Hints::from_aws(h.size_mbs, h.interval_secs),
            None => Hints::from_aws(dest.size_mbs, dest.interval_secs),
        };
        let prefix = PrefixTemplate::parse(dest.prefix.as_deref().unwrap_or(""), false)
            .map_err(Halt::Failed)?;
        let mut cp = self.load_checkpoint().await?;
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
            self.deliver(&prefix, span, records, arrivals).await?;
            cp = Checkpoint {
                next: last + 1,
                pending: None,
            };
            self.save_checkpoint(cp).await?;
        }
        let mut next = cp.next.max(self.log.bounds().first_offset);
        let mut batcher = Batcher::new(hints);
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
            let stopping = *self.stop.borrow();
            if batcher.is_due(self.clock.now_ms()) || (stopping && batcher.open().is_some()) {
                if let Some(span) = batcher.take() {
                    let batch = std::mem::take(&mut records);
                    let batch_arrivals = std::mem::take(&mut arrivals);
                    self.save_checkpoint(Checkpoint {
                        next: span.first_offset,
                        pending: Some((span.first_offset, span.last_offset)),
                    })
                    .await?;
                    self.deliver(&prefix, span, batch, batch_arrivals).await?;
                    self.save_checkpoint(Checkpoint {
                        next: span.last_offset + 1,
                        pending: None,
                    })
                    .await?;
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

    /// Delivers one batch: to the HTTP endpoint when the stream has one, else as an
    /// object to the bucket; retrying until it is done (or stop is asked, leaving it
    /// pending). `arrivals[i]` is the arrival of `records[i]`.
    async fn deliver(
        &mut self,
        prefix: &PrefixTemplate,
        span: Span,
        records: Vec<Bytes>,
        arrivals: Vec<i64>,
    ) -> Result<(), Halt> {
        let batch = naming::batch_uuid(&self.meta.log_id(), span.first_offset, span.last_offset);
        if let Some(http) = self.meta.http.clone() {
            return self
                .deliver_http(&http, prefix, span, batch, records, arrivals)
                .await;
        }
        let key = self.object_key(prefix, None, span, batch);
        let bucket = self.meta.destination.bucket().to_string();
        let body = self.build(records).await?;
        self.put_with_retries(&bucket, &key, body, span).await?;
        if let Ok(mut f) = self.failure.lock() {
            *f = None;
        }
        Ok(())
    }

    /// The object key of a batch in the (backup) bucket.
    fn object_key(
        &self,
        prefix: &PrefixTemplate,
        error_type: Option<&str>,
        span: Span,
        batch: uuid::Uuid,
    ) -> String {
        naming::object_key(
            prefix,
            error_type,
            &self.meta.name,
            self.meta.version,
            span.first_arrival_ms,
            batch,
            self.meta.destination.extension(),
        )
    }

    /// The object of `records` in the bucket's compression, built off the runtime.
    async fn build(&self, records: Vec<Bytes>) -> Result<Bytes, Halt> {
        let compression = self.meta.destination.compression;
        tokio::task::spawn_blocking(move || build_object(&records, compression))
            .await
            .map_err(|e| Halt::Failed(e.to_string()))?
            .map_err(|e| Halt::Failed(format!("cannot compress a batch: {e}")))
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
    async fn pause(&mut self, sleep: Duration) -> Result<(), Halt> {
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
    async fn deliver_http(
        &mut self,
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
        let backup = self.meta.destination.clone();
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
            let key = self.object_key(&error_prefix, Some(ERROR_OUTPUT_TYPE), span, batch);
            let lines = endpoint::failed_records_object(
                &records,
                &arrivals,
                attempts,
                &failure,
                self.clock.now_ms(),
            );
            let body = self.build(vec![Bytes::from(lines)]).await?;
            tracing::warn!(
                delivery_stream = self.meta.name,
                request_id,
                attempts,
                key,
                error = %failure,
                "the endpoint did not take a batch within the retry duration; writing it to the backup bucket"
            );
            self.put_with_retries(&bucket, &key, body, span).await?;
        }
        if http.backup_mode == HttpBackupMode::AllData {
            let key = self.object_key(prefix, None, span, batch);
            let body = self.build(records).await?;
            self.put_with_retries(&bucket, &key, body, span).await?;
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

/// A pause with jitter, in `[pause/2, pause]`.
fn jittered(pause: Duration) -> Duration {
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
    pause / 2 + pause / 2 * jitter / 1000
}

/// The object of a batch: the records concatenated, compressed as configured.
pub fn build_object(records: &[Bytes], compression: Compression) -> std::io::Result<Bytes> {
    let total: usize = records.iter().map(Bytes::len).sum();
    match compression {
        Compression::Uncompressed => {
            let mut out = Vec::with_capacity(total);
            for r in records {
                out.extend_from_slice(r);
            }
            Ok(out.into())
        }
        Compression::Gzip => {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(total / 4 + 64),
                flate2::Compression::fast(),
            );
            for r in records {
                enc.write_all(r)?;
            }
            Ok(enc.finish()?.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_the_records_concatenated() {
        let recs = vec![Bytes::from_static(b"a\n"), Bytes::from_static(b"bc")];
        assert_eq!(
            &build_object(&recs, Compression::Uncompressed).unwrap()[..],
            b"a\nbc"
        );
        let gz = build_object(&recs, Compression::Gzip).unwrap();
        let mut out = Vec::new();
        use std::io::Read;
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"a\nbc");
    }
}
