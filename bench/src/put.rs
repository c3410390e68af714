//! PutRecords phase: `clients` concurrent keep-alive connections, each
//! sending pre-built, pre-signed PutRecords requests round-robin from its own
//! pool, for a fixed duration or number of calls.
//!
//! All request bytes (random payloads, random partition keys, base64, JSON,
//! SigV4 signature, HTTP headers) are produced before the clock starts, so the
//! timed loop only writes buffers and scans answers for `FailedRecordCount`.

use crate::kinesis::{Endpoint, api_error, failed_record_count};
use crate::rng::Rng;
use crate::stats::{CpuMeter, Latencies, PhaseReport, note_error};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

#[derive(Clone, Debug)]
pub struct PutConfig {
    pub clients: usize,
    pub batch: usize,
    pub record_size: usize,
    pub pool: usize,
    pub duration: Duration,
    pub max_calls: Option<u64>,
}

/// Builds one PutRecords JSON body of `batch` random records.
pub fn put_records_body(stream: &str, batch: usize, record_size: usize, rng: &mut Rng) -> Vec<u8> {
    let b64_len = record_size.div_ceil(3) * 4;
    let mut body = String::with_capacity(64 + batch * (b64_len + 48));
    body.push_str("{\"StreamName\":\"");
    body.push_str(stream);
    body.push_str("\",\"Records\":[");
    let mut data = vec![0u8; record_size];
    for i in 0..batch {
        if i > 0 {
            body.push(',');
        }
        rng.fill(&mut data);
        body.push_str("{\"Data\":\"");
        STANDARD.encode_string(&data, &mut body);
        body.push_str("\",\"PartitionKey\":\"");
        body.push_str(&rng.partition_key());
        body.push_str("\"}");
    }
    body.push_str("]}");
    body.into_bytes()
}

struct ClientResult {
    lat: Latencies,
    calls: u64,
    failed_calls: u64,
    failed_records: u64,
    records: u64,
    errors: Vec<String>,
}

pub async fn run(ep: Arc<Endpoint>, stream: &str, cfg: &PutConfig, cpu: CpuMeter) -> PhaseReport {
    let barrier = Arc::new(Barrier::new(cfg.clients + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let claimed = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(cfg.clients);
    for id in 0..cfg.clients {
        let (ep, cfg, stream) = (ep.clone(), cfg.clone(), stream.to_string());
        let (barrier, stop, claimed) = (barrier.clone(), stop.clone(), claimed.clone());
        handles.push(tokio::spawn(async move {
            // Prepare this client's pool off the async workers.
            let ep2 = ep.clone();
            let pool = tokio::task::spawn_blocking(move || {
                let mut rng = Rng::from_entropy(id as u64 + 1);
                (0..cfg.pool)
                    .map(|_| {
                        let body = put_records_body(&stream, cfg.batch, cfg.record_size, &mut rng);
                        ep2.build_request("PutRecords", &body)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .expect("request builder panicked");
            let mut conn = crate::http::Conn::connect(ep.addr).await.ok();
            barrier.wait().await;
            client_loop(&ep, &mut conn, &pool, &cfg, &stop, &claimed).await
        }));
    }
    eprintln!(
        "put: preparing {} x {} PutRecords requests ({} records x {} B each)...",
        cfg.clients, cfg.pool, cfg.batch, cfg.record_size
    );
    barrier.wait().await;
    let start = Instant::now();
    let cpu0 = cpu.read();
    eprintln!(
        "put: running for {:?}{}",
        cfg.duration,
        match cfg.max_calls {
            Some(n) => format!(" or {n} calls"),
            None => String::new(),
        }
    );
    let timer = {
        let stop = stop.clone();
        let d = cfg.duration;
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut report = PhaseReport {
        phase: "put".into(),
        operation: "PutRecords".into(),
        ..Default::default()
    };
    let mut lat = Latencies::default();
    for h in handles {
        let r = h.await.expect("put client panicked");
        lat.merge(r.lat);
        report.calls += r.calls;
        report.failed_calls += r.failed_calls;
        report.failed_records += r.failed_records;
        report.records += r.records;
        for e in r.errors {
            note_error(&mut report.errors, e);
        }
    }
    report.elapsed_secs = start.elapsed().as_secs_f64();
    cpu.finish(cpu0, &mut report);
    timer.abort();
    report.payload_bytes = report.records * cfg.record_size as u64;
    report.finish(&mut lat);
    report
}

async fn client_loop(
    ep: &Endpoint,
    conn: &mut Option<crate::http::Conn>,
    pool: &[Vec<u8>],
    cfg: &PutConfig,
    stop: &AtomicBool,
    claimed: &AtomicU64,
) -> ClientResult {
    let mut r = ClientResult {
        lat: Latencies {
            micros: Vec::with_capacity(4096),
        },
        calls: 0,
        failed_calls: 0,
        failed_records: 0,
        records: 0,
        errors: Vec::new(),
    };
    let mut next = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(max) = cfg.max_calls
            && claimed.fetch_add(1, Ordering::Relaxed) >= max
        {
            break;
        }
        let req = &pool[next];
        next = (next + 1) % pool.len();
        let t0 = Instant::now();
        let result = ep.send(conn, req).await;
        r.lat.record(t0.elapsed());
        r.calls += 1;
        match result {
            Ok(resp) if resp.status == 200 => match failed_record_count(&resp.body) {
                Some(failed) => {
                    let failed = failed.min(cfg.batch as u64);
                    r.failed_records += failed;
                    r.records += cfg.batch as u64 - failed;
                    if failed > 0 {
                        note_error(&mut r.errors, format!("{failed} records failed in a batch"));
                    }
                }
                None => {
                    r.failed_calls += 1;
                    note_error(&mut r.errors, "200 answer without FailedRecordCount".into());
                }
            },
            Ok(resp) => {
                r.failed_calls += 1;
                note_error(&mut r.errors, api_error(&resp).to_string());
            }
            Err(e) => {
                r.failed_calls += 1;
                note_error(&mut r.errors, e.to_string());
                // Back off briefly before redialling.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    r
}
