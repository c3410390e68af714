//! Visibility phase: how long after a producer sends a record does a
//! consumer first see it?
//!
//! One consumer per shard polls GetRecords in a tight loop from LATEST
//! (iterators taken before the first record is sent). One producer sends a
//! small PutRecord every `interval`; each record's data carries a run nonce
//! and its sample number, and the producer notes the instant just before it
//! writes the request. The latency of a sample is the time from that instant
//! to the moment a consumer has parsed a GetRecords answer containing it.

use crate::kinesis::{CallError, Endpoint, GetRecordsOutput, api_error, get_records_body};
use crate::rng::Rng;
use crate::stats::{CpuMeter, Latencies, PhaseReport, note_error};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

#[derive(Clone, Debug)]
pub struct VisibilityConfig {
    pub samples: usize,
    pub interval: Duration,
    /// How long to keep polling for samples not yet seen once the producer is done.
    pub grace: Duration,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct VisibilityReport {
    /// The producer's PutRecord calls.
    pub producer: PhaseReport,
    /// Records the producer got a 200 for.
    pub samples_sent: u64,
    pub samples_seen: u64,
    pub samples_lost: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// GetRecords calls made by the consumers while polling.
    pub consumer_calls: u64,
    pub consumer_failed_calls: u64,
    pub consumer_errors: Vec<String>,
}

struct Shared {
    base: Instant,
    /// Send time per sample, nanoseconds since `base` plus one (0 = not sent).
    sent: Vec<AtomicU64>,
    /// Visibility latency per sample in microseconds plus one (0 = not seen).
    seen: Vec<AtomicU64>,
    seen_count: AtomicU64,
    stop: AtomicBool,
    prefix: String,
}

pub async fn run(
    ep: Arc<Endpoint>,
    stream: &str,
    shards: &[String],
    cfg: &VisibilityConfig,
    cpu: CpuMeter,
) -> Result<VisibilityReport, CallError> {
    let mut rng = Rng::from_entropy(0x7669_7369);
    let shared = Arc::new(Shared {
        base: Instant::now(),
        sent: (0..cfg.samples).map(|_| AtomicU64::new(0)).collect(),
        seen: (0..cfg.samples).map(|_| AtomicU64::new(0)).collect(),
        seen_count: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        prefix: format!("vis:{:016x}:", rng.next_u64()),
    });

    // Pre-build and pre-sign every PutRecord request.
    let requests: Vec<(Vec<u8>, u64)> = (0..cfg.samples)
        .map(|i| {
            let data = format!("{}{i}", shared.prefix);
            let data_len = data.len() as u64;
            let body = json!({
                "StreamName": stream,
                "Data": STANDARD.encode(data.as_bytes()),
                "PartitionKey": rng.partition_key(),
            });
            let req = ep.build_request("PutRecord", &serde_json::to_vec(&body).expect("JSON"));
            (req, data_len)
        })
        .collect();

    // Consumers: LATEST iterators first, so every sample is after them.
    let barrier = Arc::new(Barrier::new(shards.len() + 1));
    let mut consumers = Vec::new();
    let mut setup_conn = None;
    for shard in shards {
        let it = ep
            .shard_iterator(&mut setup_conn, stream, shard, "LATEST")
            .await?;
        let (ep, shared, barrier) = (ep.clone(), shared.clone(), barrier.clone());
        consumers.push(tokio::spawn(async move {
            let mut conn = crate::http::Conn::connect(ep.addr).await.ok();
            barrier.wait().await;
            consume(&ep, &mut conn, it, &shared).await
        }));
    }
    barrier.wait().await;

    // Producer.
    let mut producer = PhaseReport {
        phase: "visibility".into(),
        operation: "PutRecord".into(),
        ..Default::default()
    };
    let mut put_lat = Latencies::default();
    let mut conn = crate::http::Conn::connect(ep.addr).await.ok();
    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let cpu0 = cpu.read();
    for (i, (req, data_len)) in requests.iter().enumerate() {
        ticker.tick().await;
        let t0 = Instant::now();
        shared.sent[i].store((t0 - shared.base).as_nanos() as u64 + 1, Ordering::SeqCst);
        let result = ep.send(&mut conn, req).await;
        put_lat.record(t0.elapsed());
        producer.calls += 1;
        match result {
            Ok(resp) if resp.status == 200 => {
                producer.records += 1;
                producer.payload_bytes += data_len;
            }
            Ok(resp) => {
                producer.failed_calls += 1;
                note_error(&mut producer.errors, api_error(&resp).to_string());
            }
            Err(e) => {
                producer.failed_calls += 1;
                note_error(&mut producer.errors, e.to_string());
            }
        }
    }
    producer.elapsed_secs = start.elapsed().as_secs_f64();
    producer.finish(&mut put_lat);

    // Wait for stragglers, then stop the consumers.
    let deadline = Instant::now() + cfg.grace;
    while shared.seen_count.load(Ordering::SeqCst) < producer.records && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    shared.stop.store(true, Ordering::SeqCst);
    cpu.finish(cpu0, &mut producer);

    let mut report = VisibilityReport {
        samples_sent: producer.records,
        ..Default::default()
    };
    for c in consumers {
        let (calls, failed, errors) = c.await.expect("consumer panicked");
        report.consumer_calls += calls;
        report.consumer_failed_calls += failed;
        for e in errors {
            note_error(&mut report.consumer_errors, e);
        }
    }
    let mut vis = Latencies::default();
    for s in &shared.seen {
        let v = s.load(Ordering::SeqCst);
        if v > 0 {
            vis.micros.push(v - 1);
        }
    }
    report.samples_seen = vis.micros.len() as u64;
    report.samples_lost = report.samples_sent.saturating_sub(report.samples_seen);
    let (p50, p99, max) = vis.summary();
    (report.p50_ms, report.p99_ms, report.max_ms) = (p50, p99, max);
    report.producer = producer;
    Ok(report)
}

/// Polls one shard until told to stop; returns (calls, failed calls, errors).
async fn consume(
    ep: &Endpoint,
    conn: &mut Option<crate::http::Conn>,
    mut iterator: String,
    shared: &Shared,
) -> (u64, u64, Vec<String>) {
    let (mut calls, mut failed) = (0u64, 0u64);
    let mut errors = Vec::new();
    let prefix = shared.prefix.as_bytes();
    while !shared.stop.load(Ordering::SeqCst) {
        let req = ep.build_request("GetRecords", &get_records_body(&iterator, 10_000));
        calls += 1;
        let resp = match ep.send(conn, &req).await {
            Ok(resp) if resp.status == 200 => resp,
            Ok(resp) => {
                failed += 1;
                note_error(&mut errors, api_error(&resp).to_string());
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => {
                failed += 1;
                note_error(&mut errors, e.to_string());
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let out: GetRecordsOutput = match serde_json::from_slice(&resp.body) {
            Ok(out) => out,
            Err(e) => {
                failed += 1;
                note_error(&mut errors, format!("unparseable GetRecords answer: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let now = Instant::now();
        for rec in &out.records {
            let Ok(data) = STANDARD.decode(rec.data.as_bytes()) else {
                continue;
            };
            let Some(id) = data
                .strip_prefix(prefix)
                .and_then(|rest| std::str::from_utf8(rest).ok())
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|&id| id < shared.sent.len())
            else {
                continue;
            };
            let sent = shared.sent[id].load(Ordering::SeqCst);
            if sent == 0 {
                continue;
            }
            let micros = ((now - shared.base).as_nanos() as u64).saturating_sub(sent - 1) / 1000;
            if shared.seen[id]
                .compare_exchange(0, micros + 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                shared.seen_count.fetch_add(1, Ordering::SeqCst);
            }
        }
        match out.next_shard_iterator {
            Some(next) => iterator = next,
            None => break,
        }
    }
    (calls, failed, errors)
}
