//! Prometheus metrics, served as OpenMetrics text at `GET /metrics`: per-stream figures
//! that mirror CloudWatch's Kinesis Data Streams and Kinesis Video Streams metrics,
//! named the Prometheus way with a `stream` label, and the server's own (storage,
//! fsync latency, connections).
//!
//! | metric | CloudWatch counterpart |
//! |---|---|
//! | `freshet_incoming_records_total` | IncomingRecords (records acknowledged by PutRecord/PutRecords) |
//! | `freshet_incoming_bytes_total` | IncomingBytes (their data bytes) |
//! | `freshet_put_latency_seconds` | PutRecord.Latency / PutRecords.Latency (call to durable acknowledgement) |
//! | `freshet_write_throughput_exceeded_total` | WriteProvisionedThroughputExceeded (records refused) |
//! | `freshet_get_records_records_total` | GetRecords.Records |
//! | `freshet_get_records_bytes_total` | GetRecords.Bytes (data bytes) |
//! | `freshet_iterator_age_milliseconds` | GetRecords.IteratorAgeMilliseconds (the last call's MillisBehindLatest) |
//! | `freshet_putmedia_fragments_total` | PutMedia.FragmentIngestion... (fragments stored: PutMedia and RTP/RTSP feeds) |
//! | `freshet_putmedia_bytes_total` | PutMedia.IncomingBytes (Cluster bytes stored) |
//! | `freshet_putmedia_ack_latency_seconds` | PutMedia.FragmentPersistLatency (append to durable) |
//! | `freshet_getmedia_bytes_total` | GetMedia.OutgoingBytes |
//! | `freshet_feed_packets_lost_total` | (RTP sequence gaps on a feed) |
//! | `freshet_storage_bytes` | bytes on disk per stream, `kind` = `data` or `video` |
//! | `freshet_fsync_latency_seconds` | (each fdatasync of the storage engine) |
//! | `freshet_open_connections` | (HTTP connections open) |
//! | `freshet_analytics_records_total` | (source records an analytics application has read), `application` label |
//! | `freshet_analytics_rows_out_total` | (rows its pumps emitted) |
//! | `freshet_analytics_errors_total` | (records and rows sent to its error stream) |
//! | `freshet_analytics_lag_milliseconds` | (how far its SQL clock is behind now: MillisBehindLatest of the application) |
//! | `freshet_client_metric_samples_total` | (samples clients published with CloudWatch `PutMetricData`, e.g. the KCL's), labels `namespace`, `metric`, `dimensions`, `unit` |
//! | `freshet_client_metric_sum` | (the sum of those samples) |
//! | `freshet_client_metric_minimum` / `_maximum` | (the smallest and largest sample since start) |
//! | `freshet_client_metric_series_dropped_total` | (data refused because [`MAX_CLIENT_SERIES`] series exist) |
//! | `freshet_otlp_spans_exported_total` | (request spans sent to the OTLP receiver, `--otlp-endpoint`) |
//! | `freshet_otlp_spans_dropped_total` | (request spans dropped: export queue full, or their batch refused or undeliverable) |
//! | `freshet_delivery_incoming_records_total` | IncomingRecords of a delivery stream (records acknowledged by PutRecord/PutRecordBatch, or read from its source data stream), `delivery_stream` label |
//! | `freshet_delivery_incoming_bytes_total` | IncomingBytes (their data bytes) |
//! | `freshet_delivery_delivered_records_total` | DeliveryToS3.Records / DeliveryToHttpEndpoint.Records, `destination` label `s3`, `file` (the local directory) or `http` |
//! | `freshet_delivery_delivered_bytes_total` | DeliveryToS3.Bytes / DeliveryToHttpEndpoint.Bytes (the records' data bytes, before compression) |
//! | `freshet_delivery_failures_total` | (delivery attempts that failed; each is retried, or for an HTTP endpoint past its retry duration the batch goes to the backup bucket) |
//! | `freshet_delivery_processing_failed_total` | (records that failed processing and went to the error prefix) |
//! | `freshet_delivery_backlog_records` | (records accepted and not yet delivered) |
//! | `freshet_delivery_data_freshness_seconds` | DeliveryToS3.DataFreshness (age of the oldest record not yet delivered; 0 without a backlog) |
//! | `freshet_delivery_latency_seconds` | (from a record's acceptance to its batch's acknowledgement by the destination) |
//!
//! One process-wide registry ([`metrics`]); hot paths hold the handles of their stream
//! ([`StreamMetrics`], [`VideoMetrics`], [`DeliveryMetrics`]) so that counting costs an
//! atomic add, not a lookup. Figures that already live elsewhere (storage bytes,
//! connections, feed losses, delivery backlogs) are read when scraped ([`Scrape`]).

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `stream` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

/// The `delivery_stream` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabel {
    pub delivery_stream: String,
}

/// A delivery stream and one of its destinations: `destination` is `s3`, `file` (the
/// local directory that stands in for S3) or `http` (an HTTP endpoint).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveredLabel {
    pub delivery_stream: String,
    pub destination: String,
}

/// Every `destination` label value (what [`Metrics::forget_delivery`] removes).
pub const DELIVERY_DESTINATIONS: [&str; 3] = ["s3", "file", "http"];

/// One delivery stream's figures, read at scrape time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryFigures {
    pub delivery_stream: String,
    /// Records accepted and not yet delivered.
    pub backlog_records: u64,
    /// Age of the oldest of them (0 without a backlog).
    pub data_freshness_seconds: f64,
}

/// The `application` label (analytics applications).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplicationLabel {
    pub application: String,
}

/// One running analytics application's figures, read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct AnalyticsFigures {
    pub application: String,
    pub records: u64,
    pub rows_out: u64,
    pub errors: u64,
    pub lag_ms: i64,
}

/// Storage per stream: `kind` is `data` (a data stream's shards) or `video`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StorageLabel {
    pub stream: String,
    pub kind: String,
}

/// A series a client published with CloudWatch's `PutMetricData`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientMetricLabel {
    pub namespace: String,
    pub metric: String,
    /// `Name=Value` pairs sorted by name and joined with commas (empty without
    /// dimensions): CloudWatch's identity of a series, in one label so that the
    /// label set does not change with the number of dimensions.
    pub dimensions: String,
    /// CloudWatch's unit name (`Count`, `Milliseconds`, ..., `None`).
    pub unit: String,
}

/// One `MetricDatum` reduced to a statistic set: a single `Value`, `Values` with
/// `Counts`, and `StatisticValues` all come to this.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientDatum {
    pub label: ClientMetricLabel,
    pub samples: f64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

/// How many client series are kept: a client that publishes per-shard or
/// per-worker dimensions without end cannot grow the registry (and every scrape)
/// without bound. Data for further series are counted and dropped.
pub const MAX_CLIENT_SERIES: usize = 10_000;

type FloatGauge = Gauge<f64, AtomicU64>;
type Histograms = Family<StreamLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs to about 13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

fn delivery_latency_histogram() -> Histogram {
    // 1 ms to about 70 minutes: buffering intervals go up to 900 s, and failed
    // deliveries are retried for as long as it takes.
    Histogram::new(exponential_buckets(0.001, 2.0, 23))
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    incoming_records: Family<StreamLabel, Counter>,
    incoming_bytes: Family<StreamLabel, Counter>,
    put_latency: Histograms,
    write_throughput_exceeded: Family<StreamLabel, Counter>,
    get_records_records: Family<StreamLabel, Counter>,
    get_records_bytes: Family<StreamLabel, Counter>,
    iterator_age_ms: Family<StreamLabel, Gauge>,
    putmedia_fragments: Family<StreamLabel, Counter>,
    putmedia_bytes: Family<StreamLabel, Counter>,
    putmedia_ack_latency: Histograms,
    getmedia_bytes: Family<StreamLabel, Counter>,
    feed_packets_lost: Family<StreamLabel, Counter>,
    storage_bytes: Family<StorageLabel, Gauge>,
    /// Each fdatasync of the storage engine.
    pub fsync_latency: Histogram,
    open_connections: Gauge,
    analytics_records: Family<ApplicationLabel, Counter>,
    analytics_rows_out: Family<ApplicationLabel, Counter>,
    analytics_errors: Family<ApplicationLabel, Counter>,
    analytics_lag_ms: Family<ApplicationLabel, Gauge>,
    client_samples: Family<ClientMetricLabel, Counter<f64, AtomicU64>>,
    client_sum: Family<ClientMetricLabel, FloatGauge>,
    client_min: Family<ClientMetricLabel, FloatGauge>,
    client_max: Family<ClientMetricLabel, FloatGauge>,
    /// The client series that exist; held while a call's data are added, so that
    /// minimum and maximum are updated without a race.
    client_series: Mutex<HashSet<ClientMetricLabel>>,
    client_series_dropped: Counter,
    /// Request spans sent to the OTLP receiver.
    pub otlp_spans_exported: Counter,
    /// Request spans dropped (queue full, or a batch the receiver never took).
    pub otlp_spans_dropped: Counter,
    delivery_incoming_records: Family<DeliveryLabel, Counter>,
    delivery_incoming_bytes: Family<DeliveryLabel, Counter>,
    delivery_delivered_records: Family<DeliveredLabel, Counter>,
    delivery_delivered_bytes: Family<DeliveredLabel, Counter>,
    delivery_failures: Family<DeliveryLabel, Counter>,
    delivery_processing_failed: Family<DeliveryLabel, Counter>,
    delivery_backlog: Family<DeliveryLabel, Gauge>,
    delivery_freshness: Family<DeliveryLabel, FloatGauge>,
    delivery_latency: Family<DeliveryLabel, Histogram, fn() -> Histogram>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// A data stream's handles.
#[derive(Clone, Debug)]
pub struct StreamMetrics {
    pub incoming_records: Counter,
    pub incoming_bytes: Counter,
    pub put_latency: Histogram,
    pub write_throughput_exceeded: Counter,
    pub get_records_records: Counter,
    pub get_records_bytes: Counter,
    pub iterator_age_ms: Gauge,
}

/// A video stream's handles.
#[derive(Clone, Debug)]
pub struct VideoMetrics {
    pub fragments: Counter,
    pub bytes: Counter,
    pub ack_latency: Histogram,
    pub getmedia_bytes: Counter,
}

/// Records and bytes delivered to one destination.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub records: Counter,
    pub bytes: Counter,
}

impl Delivered {
    pub fn add(&self, records: u64, bytes: u64) {
        self.records.inc_by(records);
        self.bytes.inc_by(bytes);
    }
}

/// A delivery stream's handles.
#[derive(Clone, Debug)]
pub struct DeliveryMetrics {
    pub incoming_records: Counter,
    pub incoming_bytes: Counter,
    /// To the bucket: the S3 destination, or an HTTP endpoint's backup bucket
    /// (`destination` `s3` or `file`).
    pub to_bucket: Delivered,
    /// To the HTTP endpoint (`destination` `http`), for streams that have one.
    pub to_endpoint: Option<Delivered>,
    pub failures: Counter,
    pub processing_failed: Counter,
    pub latency: Histogram,
}

/// What a scrape reads from elsewhere.
#[derive(Debug, Default)]
pub struct Scrape {
    /// (stream, kind, bytes on disk).
    pub storage: Vec<(String, &'static str, u64)>,
    /// (feed's stream, RTP packets lost so far).
    pub feed_packets_lost: Vec<(String, u64)>,
    pub open_connections: Option<u64>,
    /// Running analytics applications (their counters only grow while the process lives).
    pub analytics: Vec<AnalyticsFigures>,
    /// Delivery streams' backlogs (a stream not listed has no gauges).
    pub delivery: Vec<DeliveryFigures>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            incoming_records: Family::default(),
            incoming_bytes: Family::default(),
            put_latency: Family::new_with_constructor(latency_histogram),
            write_throughput_exceeded: Family::default(),
            get_records_records: Family::default(),
            get_records_bytes: Family::default(),
            iterator_age_ms: Family::default(),
            putmedia_fragments: Family::default(),
            putmedia_bytes: Family::default(),
            putmedia_ack_latency: Family::new_with_constructor(latency_histogram),
            getmedia_bytes: Family::default(),
            feed_packets_lost: Family::default(),
            storage_bytes: Family::default(),
            fsync_latency: latency_histogram(),
            open_connections: Gauge::default(),
            analytics_records: Family::default(),
            analytics_rows_out: Family::default(),
            analytics_errors: Family::default(),
            analytics_lag_ms: Family::default(),
            client_samples: Family::default(),
            client_sum: Family::default(),
            client_min: Family::default(),
            client_max: Family::default(),
            client_series: Mutex::new(HashSet::new()),
            client_series_dropped: Counter::default(),
            otlp_spans_exported: Counter::default(),
            otlp_spans_dropped: Counter::default(),
            delivery_incoming_records: Family::default(),
            delivery_incoming_bytes: Family::default(),
            delivery_delivered_records: Family::default(),
            delivery_delivered_bytes: Family::default(),
            delivery_failures: Family::default(),
            delivery_processing_failed: Family::default(),
            delivery_backlog: Family::default(),
            delivery_freshness: Family::default(),
            delivery_latency: Family::new_with_constructor(delivery_latency_histogram),
        };
        // Counters get their `_total` suffix from the encoder.
        let f = &mut registry;
        f.register(
            "freshet_incoming_records",
            "Records acknowledged by PutRecord and PutRecords",
            m.incoming_records.clone(),
        );
        f.register(
            "freshet_incoming_bytes",
            "Data bytes of the records acknowledged by PutRecord and PutRecords",
            m.incoming_bytes.clone(),
        );
        f.register(
            "freshet_put_latency_seconds",
            "PutRecord and PutRecords, from the call to the durable acknowledgement",
            m.put_latency.clone(),
        );
        f.register(
            "freshet_write_throughput_exceeded",
            "Records refused with ProvisionedThroughputExceededException",
            m.write_throughput_exceeded.clone(),
        );
        f.register(
            "freshet_get_records_records",
            "Records returned by GetRecords",
            m.get_records_records.clone(),
        );
        f.register(
            "freshet_get_records_bytes",
            "Data bytes returned by GetRecords",
            m.get_records_bytes.clone(),
        );
        f.register(
            "freshet_iterator_age_milliseconds",
            "MillisBehindLatest of the last GetRecords call",
            m.iterator_age_ms.clone(),
        );
        f.register(
            "freshet_putmedia_fragments",
            "Video fragments stored (PutMedia and RTP/RTSP feeds)",
            m.putmedia_fragments.clone(),
        );
        f.register(
            "freshet_putmedia_bytes",
            "Bytes of the video fragments stored",
            m.putmedia_bytes.clone(),
        );
        f.register(
            "freshet_putmedia_ack_latency_seconds",
            "From a complete fragment to its durable (PERSISTED) acknowledgement",
            m.putmedia_ack_latency.clone(),
        );
        f.register(
            "freshet_getmedia_bytes",
            "Bytes sent by GetMedia",
            m.getmedia_bytes.clone(),
        );
        f.register(
            "freshet_feed_packets_lost",
            "RTP packets lost on camera feeds (sequence gaps)",
            m.feed_packets_lost.clone(),
        );
        f.register(
            "freshet_storage_bytes",
            "Bytes stored on disk per stream",
            m.storage_bytes.clone(),
        );
        f.register(
            "freshet_fsync_latency_seconds",
            "Each fdatasync of the storage engine",
            m.fsync_latency.clone(),
        );
        f.register(
            "freshet_open_connections",
            "HTTP connections open",
            m.open_connections.clone(),
        );
        f.register(
            "freshet_analytics_records",
            "Source records read by an analytics application",
            m.analytics_records.clone(),
        );
        f.register(
            "freshet_analytics_rows_out",
            "Rows emitted by an analytics application's pumps",
            m.analytics_rows_out.clone(),
        );
        f.register(
            "freshet_analytics_errors",
            "Records and rows of an analytics application that went to its error stream",
            m.analytics_errors.clone(),
        );
        f.register(
            "freshet_analytics_lag_milliseconds",
            "How far an analytics application's SQL clock is behind the present",
            m.analytics_lag_ms.clone(),
        );
        f.register(
            "freshet_client_metric_samples",
            "Samples published by clients with CloudWatch PutMetricData",
            m.client_samples.clone(),
        );
        f.register(
            "freshet_client_metric_sum",
            "The sum of the samples published by clients with CloudWatch PutMetricData",
            m.client_sum.clone(),
        );
        f.register(
            "freshet_client_metric_minimum",
            "The smallest sample published by clients with CloudWatch PutMetricData",
            m.client_min.clone(),
        );
        f.register(
            "freshet_client_metric_maximum",
            "The largest sample published by clients with CloudWatch PutMetricData",
            m.client_max.clone(),
        );
        f.register(
            "freshet_client_metric_series_dropped",
            "PutMetricData data dropped because the limit of client series was reached",
            m.client_series_dropped.clone(),
        );
        f.register(
            "freshet_otlp_spans_exported",
            "Request spans sent to the OTLP receiver (--otlp-endpoint)",
            m.otlp_spans_exported.clone(),
        );
        f.register(
            "freshet_otlp_spans_dropped",
            "Request spans dropped: the export queue was full, or the receiver did not take their batch",
            m.otlp_spans_dropped.clone(),
        );
        f.register(
            "freshet_delivery_incoming_records",
            "Records a delivery stream accepted (PutRecord, PutRecordBatch) or read from its source data stream",
            m.delivery_incoming_records.clone(),
        );
        f.register(
            "freshet_delivery_incoming_bytes",
            "Data bytes of the records a delivery stream accepted or read from its source",
            m.delivery_incoming_bytes.clone(),
        );
        f.register(
            "freshet_delivery_delivered_records",
            "Records a delivery stream delivered, by destination (s3, file, http)",
            m.delivery_delivered_records.clone(),
        );
        f.register(
            "freshet_delivery_delivered_bytes",
            "Data bytes (before compression) of the records a delivery stream delivered, by destination",
            m.delivery_delivered_bytes.clone(),
        );
        f.register(
            "freshet_delivery_failures",
            "Delivery attempts that failed (retried, or past an HTTP endpoint's retry duration sent to the backup bucket)",
            m.delivery_failures.clone(),
        );
        f.register(
            "freshet_delivery_processing_failed",
            "Records that failed processing and were written under the error prefix",
            m.delivery_processing_failed.clone(),
        );
        f.register(
            "freshet_delivery_backlog_records",
            "Records a delivery stream accepted and has not yet delivered",
            m.delivery_backlog.clone(),
        );
        f.register(
            "freshet_delivery_data_freshness_seconds",
            "Age of the oldest record a delivery stream has not yet delivered (0 without a backlog)",
            m.delivery_freshness.clone(),
        );
        f.register(
            "freshet_delivery_latency_seconds",
            "From a record's acceptance to its batch's acknowledgement by the destination",
            m.delivery_latency.clone(),
        );
        Self { registry, ..m }
    }

    /// Adds data published with CloudWatch's `PutMetricData` to their series.
    /// Returns how many were dropped because [`MAX_CLIENT_SERIES`] series exist.
    pub fn record_client(&self, data: &[ClientDatum]) -> usize {
        let mut series = self.client_series.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0;
        for d in data {
            let new = !series.contains(&d.label);
            if new {
                if series.len() >= MAX_CLIENT_SERIES {
                    self.client_series_dropped.inc();
                    dropped += 1;
                    continue;
                }
                series.insert(d.label.clone());
            }
            self.client_samples
                .get_or_create(&d.label)
                .inc_by(d.samples);
            self.client_sum.get_or_create(&d.label).inc_by(d.sum);
            let min = self.client_min.get_or_create(&d.label);
            if new || d.min < min.get() {
                min.set(d.min);
            }
            let max = self.client_max.get_or_create(&d.label);
            if new || d.max > max.get() {
                max.set(d.max);
            }
        }
        dropped
    }

    /// The handles of data stream `stream`.
    pub fn stream(&self, stream: &str) -> StreamMetrics {
        let l = StreamLabel {
            stream: stream.to_string(),
        };
        StreamMetrics {
            incoming_records: self.incoming_records.get_or_create(&l).clone(),
            incoming_bytes: self.incoming_bytes.get_or_create(&l).clone(),
            put_latency: self.put_latency.get_or_create(&l).clone(),
            write_throughput_exceeded: self.write_throughput_exceeded.get_or_create(&l).clone(),
            get_records_records: self.get_records_records.get_or_create(&l).clone(),
            get_records_bytes: self.get_records_bytes.get_or_create(&l).clone(),
            iterator_age_ms: self.iterator_age_ms.get_or_create(&l).clone(),
        }
    }

    /// The handles of video stream `stream`.
    pub fn video(&self, stream: &str) -> VideoMetrics {
        let l = StreamLabel {
            stream: stream.to_string(),
        };
        VideoMetrics {
            fragments: self.putmedia_fragments.get_or_create(&l).clone(),
            bytes: self.putmedia_bytes.get_or_create(&l).clone(),
            ack_latency: self.putmedia_ack_latency.get_or_create(&l).clone(),
            getmedia_bytes: self.getmedia_bytes.get_or_create(&l).clone(),
        }
    }

    /// The handles of delivery stream `stream`, whose bucket is of kind `bucket` (`s3`
    /// or `file`) and which delivers to an HTTP endpoint when `endpoint`.
    pub fn delivery(&self, stream: &str, bucket: &str, endpoint: bool) -> DeliveryMetrics {
        let l = DeliveryLabel {
            delivery_stream: stream.to_string(),
        };
        let delivered = |destination: &str| {
            let l = DeliveredLabel {
                delivery_stream: stream.to_string(),
                destination: destination.to_string(),
            };
            Delivered {
                records: self.delivery_delivered_records.get_or_create(&l).clone(),
                bytes: self.delivery_delivered_bytes.get_or_create(&l).clone(),
            }
        };
        DeliveryMetrics {
            incoming_records: self.delivery_incoming_records.get_or_create(&l).clone(),
            incoming_bytes: self.delivery_incoming_bytes.get_or_create(&l).clone(),
            to_bucket: delivered(bucket),
            to_endpoint: endpoint.then(|| delivered("http")),
            failures: self.delivery_failures.get_or_create(&l).clone(),
            processing_failed: self.delivery_processing_failed.get_or_create(&l).clone(),
            latency: self.delivery_latency.get_or_create(&l).clone(),
        }
    }

    /// Forgets a deleted delivery stream's series.
    pub fn forget_delivery(&self, stream: &str) {
        let l = DeliveryLabel {
            delivery_stream: stream.to_string(),
        };
        self.delivery_incoming_records.remove(&l);
        self.delivery_incoming_bytes.remove(&l);
        self.delivery_failures.remove(&l);
        self.delivery_processing_failed.remove(&l);
        self.delivery_backlog.remove(&l);
        self.delivery_freshness.remove(&l);
        self.delivery_latency.remove(&l);
        for destination in DELIVERY_DESTINATIONS {
            let l = DeliveredLabel {
                delivery_stream: stream.to_string(),
                destination: destination.to_string(),
            };
            self.delivery_delivered_records.remove(&l);
            self.delivery_delivered_bytes.remove(&l);
        }
    }

    /// Forgets a deleted data stream's series (a new stream of the same name starts
    /// from zero, as its CloudWatch metrics would).
    pub fn forget_stream(&self, stream: &str) {
        let l = StreamLabel {
            stream: stream.to_string(),
        };
        self.incoming_records.remove(&l);
        self.incoming_bytes.remove(&l);
        self.put_latency.remove(&l);
        self.write_throughput_exceeded.remove(&l);
        self.get_records_records.remove(&l);
        self.get_records_bytes.remove(&l);
        self.iterator_age_ms.remove(&l);
    }

    /// Forgets a deleted video stream's series.
    pub fn forget_video(&self, stream: &str) {
        let l = StreamLabel {
            stream: stream.to_string(),
        };
        self.putmedia_fragments.remove(&l);
        self.putmedia_bytes.remove(&l);
        self.putmedia_ack_latency.remove(&l);
        self.getmedia_bytes.remove(&l);
        self.feed_packets_lost.remove(&l);
    }

    /// The OpenMetrics text of every metric, after taking in `scrape`.
    pub fn encode(&self, scrape: Scrape) -> String {
        self.storage_bytes.clear();
        for (stream, kind, bytes) in scrape.storage {
            self.storage_bytes
                .get_or_create(&StorageLabel {
                    stream,
                    kind: kind.to_string(),
                })
                .set(bytes.min(i64::MAX as u64) as i64);
        }
        for (stream, lost) in scrape.feed_packets_lost {
            let c = self
                .feed_packets_lost
                .get_or_create(&StreamLabel { stream });
            // The feed's own count restarts with the feed; the counter only grows.
            let seen = c.get();
            if lost > seen {
                c.inc_by(lost - seen);
            }
        }
        if let Some(n) = scrape.open_connections {
            self.open_connections.set(n.min(i64::MAX as u64) as i64);
        }
        for a in scrape.analytics {
            let label = ApplicationLabel {
                application: a.application,
            };
            for (family, value) in [
                (&self.analytics_records, a.records),
                (&self.analytics_rows_out, a.rows_out),
                (&self.analytics_errors, a.errors),
            ] {
                let c = family.get_or_create(&label);
                let seen = c.get();
                if value > seen {
                    c.inc_by(value - seen);
                }
            }
            self.analytics_lag_ms
                .get_or_create(&label)
                .set(a.lag_ms.max(0));
        }
        // Only the delivery streams that exist now have gauges.
        self.delivery_backlog.clear();
        self.delivery_freshness.clear();
        for d in scrape.delivery {
            let label = DeliveryLabel {
                delivery_stream: d.delivery_stream,
            };
            self.delivery_backlog
                .get_or_create(&label)
                .set(d.backlog_records.min(i64::MAX as u64) as i64);
            self.delivery_freshness
                .get_or_create(&label)
                .set(d.data_freshness_seconds.max(0.0));
        }
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Seconds since `start`, for the histograms.
pub fn seconds_since(start: std::time::Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_data_aggregate_per_series_and_the_series_are_capped() {
        let m = Metrics::new();
        let datum = |metric: &str, samples: f64, sum: f64, min: f64, max: f64| ClientDatum {
            label: ClientMetricLabel {
                namespace: "KCL".into(),
                metric: metric.into(),
                dimensions: "ShardId=shardId-0".into(),
                unit: "Milliseconds".into(),
            },
            samples,
            sum,
            min,
            max,
        };
        assert_eq!(
            m.record_client(&[
                datum("Time", 1.0, 5.0, 5.0, 5.0),
                datum("Time", 4.0, 10.0, 1.0, 4.0)
            ]),
            0
        );
        let text = m.encode(Scrape::default());
        let labels = "{namespace=\"KCL\",metric=\"Time\",dimensions=\"ShardId=shardId-0\",unit=\"Milliseconds\"}";
        for line in [
            format!("freshet_client_metric_samples_total{labels} 5.0"),
            format!("freshet_client_metric_sum{labels} 15.0"),
            format!("freshet_client_metric_minimum{labels} 1.0"),
            format!("freshet_client_metric_maximum{labels} 5.0"),
        ] {
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
        // Past the cap, data for new series are dropped and counted; known ones go on.
        let many: Vec<ClientDatum> = (0..MAX_CLIENT_SERIES)
            .map(|i| datum(&format!("m{i}"), 1.0, 1.0, 1.0, 1.0))
            .collect();
        assert_eq!(m.record_client(&many), 1);
        assert_eq!(m.record_client(&[datum("Time", 1.0, 1.0, 1.0, 1.0)]), 0);
        let text = m.encode(Scrape::default());
        assert!(text.contains("freshet_client_metric_series_dropped_total 1"));
        assert!(text.contains(&format!("freshet_client_metric_samples_total{labels} 6.0")));
    }

    #[test]
    fn counts_show_in_the_text_with_their_labels() {
        let m = Metrics::new();
        let s = m.stream("orders");
        s.incoming_records.inc_by(3);
        s.incoming_bytes.inc_by(300);
        s.put_latency.observe(0.002);
        let v = m.video("cam-1");
        v.fragments.inc();
        let text = m.encode(Scrape {
            storage: vec![("orders".into(), "data", 4096)],
            feed_packets_lost: vec![("cam-1".into(), 7)],
            open_connections: Some(2),
            analytics: vec![AnalyticsFigures {
                application: "app".into(),
                records: 5,
                rows_out: 2,
                errors: 1,
                lag_ms: 40,
            }],
            ..Default::default()
        });
        for line in [
            "freshet_incoming_records_total{stream=\"orders\"} 3",
            "freshet_incoming_bytes_total{stream=\"orders\"} 300",
            "freshet_analytics_records_total{application=\"app\"} 5",
            "freshet_analytics_errors_total{application=\"app\"} 1",
            "freshet_analytics_lag_milliseconds{application=\"app\"} 40",
            "freshet_put_latency_seconds_count{stream=\"orders\"} 1",
            "freshet_putmedia_fragments_total{stream=\"cam-1\"} 1",
            "freshet_storage_bytes{stream=\"orders\",kind=\"data\"} 4096",
            "freshet_feed_packets_lost_total{stream=\"cam-1\"} 7",
            "freshet_open_connections 2",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        // A feed's count that restarted lower leaves the counter where it was.
        let text = m.encode(Scrape {
            feed_packets_lost: vec![("cam-1".into(), 2)],
            ..Default::default()
        });
        assert!(text.contains("freshet_feed_packets_lost_total{stream=\"cam-1\"} 7"));
        m.forget_stream("orders");
        let text = m.encode(Scrape::default());
        assert!(!text.contains("stream=\"orders\""), "{text}");
    }

    #[test]
    fn delivery_series_are_labelled_by_stream_and_destination_and_forgotten() {
        let m = Metrics::new();
        let d = m.delivery("logs", "file", true);
        d.incoming_records.inc_by(4);
        d.incoming_bytes.inc_by(40);
        d.to_bucket.add(1, 10);
        d.to_endpoint.as_ref().unwrap().add(3, 30);
        d.failures.inc();
        d.processing_failed.inc_by(2);
        d.latency.observe(0.5);
        let scrape = || Scrape {
            delivery: vec![DeliveryFigures {
                delivery_stream: "logs".into(),
                backlog_records: 7,
                data_freshness_seconds: 1.5,
            }],
            ..Default::default()
        };
        let text = m.encode(scrape());
        for line in [
            "freshet_delivery_incoming_records_total{delivery_stream=\"logs\"} 4",
            "freshet_delivery_incoming_bytes_total{delivery_stream=\"logs\"} 40",
            "freshet_delivery_delivered_records_total{delivery_stream=\"logs\",destination=\"file\"} 1",
            "freshet_delivery_delivered_bytes_total{delivery_stream=\"logs\",destination=\"file\"} 10",
            "freshet_delivery_delivered_records_total{delivery_stream=\"logs\",destination=\"http\"} 3",
            "freshet_delivery_delivered_bytes_total{delivery_stream=\"logs\",destination=\"http\"} 30",
            "freshet_delivery_failures_total{delivery_stream=\"logs\"} 1",
            "freshet_delivery_processing_failed_total{delivery_stream=\"logs\"} 2",
            "freshet_delivery_backlog_records{delivery_stream=\"logs\"} 7",
            "freshet_delivery_data_freshness_seconds{delivery_stream=\"logs\"} 1.5",
            "freshet_delivery_latency_seconds_count{delivery_stream=\"logs\"} 1",
            "freshet_delivery_latency_seconds_bucket{le=\"0.512\",delivery_stream=\"logs\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // No S3 series for a stream whose bucket is the local directory.
        assert!(!text.contains("destination=\"s3\""), "{text}");
        // A stream no longer scraped loses its gauges; a forgotten one everything.
        let text = m.encode(Scrape::default());
        assert!(
            !text.contains("freshet_delivery_backlog_records{"),
            "{text}"
        );
        assert!(
            text.contains("freshet_delivery_incoming_records_total{delivery_stream=\"logs\"} 4")
        );
        m.forget_delivery("logs");
        let text = m.encode(scrape());
        assert!(
            !text.contains("freshet_delivery_incoming_records_total{"),
            "{text}"
        );
        assert!(!text.contains("destination="), "{text}");
        // A stream created again under the name starts from zero.
        let again = m.delivery("logs", "file", false);
        assert_eq!(again.incoming_records.get(), 0);
    }
}
