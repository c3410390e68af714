//! GetRecords phase: one reader per shard reads everything from TRIM_HORIZON
//! (GetRecords with a large `Limit`) until it is caught up, i.e. an answer
//! with no records and `MillisBehindLatest` 0 (or a closed shard).
//!
//! Iterators are obtained before the clock starts; the timed part is the
//! GetRecords loop, including JSON parsing of the (large) answers.

use crate::kinesis::{
    CallError, Endpoint, GetRecordsOutput, api_error, base64_decoded_len, get_records_body,
};
use crate::stats::{CpuMeter, Latencies, PhaseReport, note_error};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

#[derive(Clone, Debug)]
pub struct GetConfig {
    pub limit: u32,
    /// Give up on a reader after this long (bounds the phase).
    pub max_duration: Duration,
    /// Records the put phase wrote, if known: once all readers together have
    /// read this many, an empty answer ends a reader even if the server
    /// reports a non-zero `MillisBehindLatest`.
    pub expected_records: Option<u64>,
}

struct ReaderResult {
    lat: Latencies,
    calls: u64,
    failed_calls: u64,
    records: u64,
    bytes: u64,
    errors: Vec<String>,
}

pub async fn run(
    ep: Arc<Endpoint>,
    stream: &str,
    shards: &[String],
    cfg: &GetConfig,
    cpu: CpuMeter,
) -> Result<PhaseReport, CallError> {
    let barrier = Arc::new(Barrier::new(shards.len() + 1));
    let total = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    let mut setup_conn = None;
    for shard in shards {
        let it = ep
            .shard_iterator(&mut setup_conn, stream, shard, "TRIM_HORIZON")
            .await?;
        let (ep, barrier, cfg, total) = (ep.clone(), barrier.clone(), cfg.clone(), total.clone());
        handles.push(tokio::spawn(async move {
            let mut conn = crate::http::Conn::connect(ep.addr).await.ok();
            barrier.wait().await;
            read_shard(&ep, &mut conn, it, &cfg, &total).await
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let cpu0 = cpu.read();
    let mut report = PhaseReport {
        phase: "get".into(),
        operation: "GetRecords".into(),
        ..Default::default()
    };
    let mut lat = Latencies::default();
    for h in handles {
        let r = h.await.expect("reader panicked");
        lat.merge(r.lat);
        report.calls += r.calls;
        report.failed_calls += r.failed_calls;
        report.records += r.records;
        report.payload_bytes += r.bytes;
        for e in r.errors {
            note_error(&mut report.errors, e);
        }
    }
    report.elapsed_secs = start.elapsed().as_secs_f64();
    cpu.finish(cpu0, &mut report);
    report.finish(&mut lat);
    Ok(report)
}

async fn read_shard(
    ep: &Endpoint,
    conn: &mut Option<crate::http::Conn>,
    mut iterator: String,
    cfg: &GetConfig,
    total: &AtomicU64,
) -> ReaderResult {
    let mut r = ReaderResult {
        lat: Latencies::default(),
        calls: 0,
        failed_calls: 0,
        records: 0,
        bytes: 0,
        errors: Vec::new(),
    };
    let start = Instant::now();
    let mut consecutive_failures = 0;
    while start.elapsed() < cfg.max_duration {
        let req = ep.build_request("GetRecords", &get_records_body(&iterator, cfg.limit));
        let t0 = Instant::now();
        let result = ep.send(conn, &req).await;
        r.calls += 1;
        let resp = match result {
            Ok(resp) if resp.status == 200 => resp,
            Ok(resp) => {
                r.lat.record(t0.elapsed());
                r.failed_calls += 1;
                note_error(&mut r.errors, api_error(&resp).to_string());
                consecutive_failures += 1;
                if consecutive_failures >= 20 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => {
                r.lat.record(t0.elapsed());
                r.failed_calls += 1;
                note_error(&mut r.errors, e.to_string());
                consecutive_failures += 1;
                if consecutive_failures >= 20 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let out: GetRecordsOutput = match serde_json::from_slice(&resp.body) {
            Ok(out) => out,
            Err(e) => {
                r.lat.record(t0.elapsed());
                r.failed_calls += 1;
                note_error(&mut r.errors, format!("unparseable GetRecords answer: {e}"));
                break;
            }
        };
        // Latency includes parsing the answer: that is when a consumer has the data.
        r.lat.record(t0.elapsed());
        consecutive_failures = 0;
        r.records += out.records.len() as u64;
        let all_read =
            total.fetch_add(out.records.len() as u64, Ordering::Relaxed) + out.records.len() as u64;
        r.bytes += out
            .records
            .iter()
            .map(|rec| base64_decoded_len(&rec.data) as u64)
            .sum::<u64>();
        let caught_up = out.records.is_empty()
            && (out.millis_behind_latest.unwrap_or(0) == 0
                || cfg.expected_records.is_some_and(|n| all_read >= n));
        match out.next_shard_iterator {
            Some(next) if !caught_up => iterator = next,
            _ => break,
        }
    }
    r
}
