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
//!
//! One process-wide registry ([`metrics`]); hot paths hold the handles of their stream
//! ([`StreamMetrics`], [`VideoMetrics`]) so that counting costs an atomic add, not a
//! lookup. Figures that already live elsewhere (storage bytes, connections, feed
//! losses) are read when scraped ([`Scrape`]).

use std::sync::LazyLock;

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

type Histograms = Family<StreamLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs to about 13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
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
        Self { registry, ..m }
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
}
