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
use super::model::{Checkpoint, DeliveryStreamMeta};
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

    fn key(&self) -> String {
        self.meta.log_id()
    }

    async fn load_checkpoint(&self) -> Result<Checkpoint, Halt> {
        let catalog = self.catalog.clone();
        let key = self.key();
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
        let key = self.key();
        let bytes = serde_json::to_vec(&cp).map_err(|e| Halt::Failed(e.to_string()))?;
        tokio::task::spawn_blocking(move || catalog.put(CHECKPOINTS, &key, bytes))
            .await
            .map_err(|e| Halt::Failed(e.to_string()))?
            .map_err(|e| Halt::Failed(e.to_string()))
    }

    async fn work(&mut self) -> Result<(), Halt> {
        let dest = &self.meta.destination;
        let hints = Hints::from_aws(dest.size_mbs, dest.interval_secs);
        let prefix = PrefixTemplate::parse(dest.prefix.as_deref().unwrap_or(""), false)
            .map_err(Halt::Failed)?;
        let mut cp = self.load_checkpoint().await?;
        if let Some((first, last)) = cp.pending {
            // A batch whose delivery a crash interrupted: the same range, the same name.
            let (records, arrival) = self.read_range(first, last).await?;
            let span = Span {
                first_offset: first,
                last_offset: last,
                first_arrival_ms: arrival,
                bytes: records.iter().map(|r| r.len() as u64).sum(),
                records: records.len() as u64,
            };
            tracing::info!(
                delivery_stream = self.meta.name,
                first,
                last,
                "re-delivering an interrupted batch"
            );
            self.deliver(&prefix, span, records).await?;
            cp = Checkpoint {
                next: last + 1,
                pending: None,
            };
            self.save_checkpoint(cp).await?;
        }
        let mut next = cp.next.max(self.log.bounds().first_offset);
        let mut batcher = Batcher::new(hints);
        let mut records: Vec<Bytes> = Vec::new();
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
                    self.save_checkpoint(Checkpoint {
                        next: span.first_offset,
                        pending: Some((span.first_offset, span.last_offset)),
                    })
                    .await?;
                    self.deliver(&prefix, span, batch).await?;
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

    /// Records `first..=last` and the arrival of the first.
    async fn read_range(&self, first: u64, last: u64) -> Result<(Vec<Bytes>, i64), Halt> {
        let mut out = Vec::new();
        let mut arrival = None;
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
                arrival.get_or_insert(frame.timestamp_ms);
                at = frame.offset + 1;
                out.push(frame.payload);
            }
        }
        Ok((out, arrival.unwrap_or(0)))
    }

    /// Builds and writes one batch's object, retrying until it is written (or stop is
    /// asked, leaving it pending).
    async fn deliver(
        &mut self,
        prefix: &PrefixTemplate,
        span: Span,
        records: Vec<Bytes>,
    ) -> Result<(), Halt> {
        let dest = &self.meta.destination;
        let batch = naming::batch_uuid(&self.meta.log_id(), span.first_offset, span.last_offset);
        let key = naming::object_key(
            prefix,
            &self.meta.name,
            self.meta.version,
            span.first_arrival_ms,
            batch,
            dest.extension(),
        );
        let compression = dest.compression;
        let body = tokio::task::spawn_blocking(move || build_object(&records, compression))
            .await
            .map_err(|e| Halt::Failed(e.to_string()))?
            .map_err(|e| Halt::Failed(format!("cannot compress a batch: {e}")))?;
        let bucket = dest.bucket().to_string();
        let mut pause = RETRY_FIRST;
        loop {
            match self
                .destination
                .put_object(&bucket, &key, body.clone())
                .await
            {
                Ok(()) => {
                    if let Ok(mut f) = self.failure.lock() {
                        *f = None;
                    }
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
                    // Full jitter in [pause/2, pause].
                    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
                    let sleep = pause / 2 + pause / 2 * jitter / 1000;
                    tokio::select! {
                        _ = tokio::time::sleep(sleep) => {}
                        _ = self.stop.changed() => {}
                    }
                    if *self.stop.borrow() {
                        return Err(Halt::Stopped);
                    }
                    pause = (pause * 2).min(RETRY_CAP);
                }
            }
        }
    }

    /// Deletes sealed segments whose records are all delivered.
    async fn trim(&self, span: Span) {
        let log = self.log.clone();
        let _ = tokio::task::spawn_blocking(move || log.trim_before(span.first_arrival_ms)).await;
    }
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
