//! Analytics applications end to end: events/s from an input stream through a
//! tumbling-window GROUP BY to an output stream, and the delay from a window's close to
//! its result record.
//!
//! 1. Throughput: `records` JSON records over `keys` keys are put into a fresh input
//!    stream first (several connections, PutRecords of 500); then an application with
//!    `SELECT STREAM STEP(ROWTIME BY window) , k, COUNT(*), SUM(v) ... GROUP BY k,
//!    STEP(...)` is started from TRIM_HORIZON, and the time until the server's
//!    `freshet_analytics_records_total` for it reaches `records` gives events/s
//!    (parsing, SQL, and the output rows written to the output stream).
//! 2. Window delay: records are put live at `rate`/s for `live_secs`; each output
//!    row's delay is its output record's arrival time minus the end of its window (the
//!    earliest moment the window could close). Freshet waits 200 ms past a moment
//!    before closing windows there (records may still be arriving with that time), so
//!    that much of the delay is by design; the rest is reading, SQL and writing.

use crate::kinesis::{CallError, Endpoint};
use crate::stats::Latencies;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error>;

const ANALYTICS: &str = "KinesisAnalytics_20150814.";
const ROLE: &str = "arn:aws:iam::000000000000:role/bench";

pub struct AnalyticsReport {
    pub records: usize,
    pub load_secs: f64,
    pub process_secs: f64,
    pub events_per_sec: f64,
    pub rows_out: u64,
    pub delay_samples: usize,
    pub delay_p50_ms: f64,
    pub delay_p99_ms: f64,
    pub delay_max_ms: f64,
}

fn record(i: usize, keys: usize) -> Value {
    let k = format!("K{:05}", (i * 7919) % keys);
    let body = format!("{{\"k\":\"{k}\",\"v\":{}}}", i % 100);
    json!({ "Data": STANDARD.encode(body), "PartitionKey": k })
}

async fn put_all(
    ep: &Arc<Endpoint>,
    stream: &str,
    from: usize,
    to: usize,
    keys: usize,
) -> Result<(), CallError> {
    let mut conn = None;
    let mut i = from;
    while i < to {
        let end = (i + 500).min(to);
        let records: Vec<Value> = (i..end).map(|j| record(j, keys)).collect();
        let out = ep
            .call(
                &mut conn,
                "PutRecords",
                &json!({ "StreamName": stream, "Records": records }),
            )
            .await?;
        if out["FailedRecordCount"].as_u64().unwrap_or(0) > 0 {
            return Err(CallError::BadResponse(
                "PutRecords had failed records".into(),
            ));
        }
        i = end;
    }
    Ok(())
}

async fn metric(ep: &Endpoint, name: &str, app: &str) -> Result<Option<f64>, BoxError> {
    let mut conn = crate::http::Conn::connect(ep.addr).await?;
    let req = format!(
        "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        ep.host
    );
    let resp = conn.send(req.as_bytes()).await?;
    let text = String::from_utf8_lossy(&resp.body);
    let prefix = format!("{name}{{application=\"{app}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok()))
}

fn code(window_secs: u64) -> String {
    format!(
        "CREATE OR REPLACE STREAM \"DESTINATION_SQL_STREAM\" (w TIMESTAMP, k VARCHAR(8), n BIGINT, total BIGINT);\n\
         CREATE OR REPLACE PUMP \"P\" AS INSERT INTO \"DESTINATION_SQL_STREAM\"\n\
         SELECT STREAM STEP(\"SOURCE_SQL_STREAM_001\".ROWTIME BY INTERVAL '{window_secs}' SECOND), k, COUNT(*), SUM(v)\n\
         FROM \"SOURCE_SQL_STREAM_001\"\n\
         GROUP BY k, STEP(\"SOURCE_SQL_STREAM_001\".ROWTIME BY INTERVAL '{window_secs}' SECOND);"
    )
}

fn stream_arn(name: &str) -> String {
    format!("arn:aws:kinesis:us-east-1:000000000000:stream/{name}")
}

/// Parses `yyyy-MM-dd HH:mm:ss.SSS` (UTC) as epoch milliseconds.
fn parse_ts(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + dd - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms.parse::<i64>().ok()?)
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    ep: Arc<Endpoint>,
    name: &str,
    records: usize,
    keys: usize,
    shards: u32,
    window_secs: u64,
    rate: usize,
    live_secs: u64,
    loaders: usize,
) -> Result<AnalyticsReport, BoxError> {
    let input = format!("{name}-in");
    let output = format!("{name}-out");
    ep.create_stream(&input, shards, Duration::from_secs(30))
        .await?;
    ep.create_stream(&output, 1, Duration::from_secs(30))
        .await?;
    eprintln!("loading {records} records over {keys} keys into {input} ...");
    let started = Instant::now();
    let mut tasks = Vec::new();
    let per = records.div_ceil(loaders.max(1));
    for l in 0..loaders.max(1) {
        let ep = ep.clone();
        let input = input.clone();
        let (from, to) = (l * per, ((l + 1) * per).min(records));
        tasks.push(tokio::spawn(async move {
            put_all(&ep, &input, from, to, keys).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let mut conn = None;
    ep.call_target(
        &mut conn,
        &format!("{ANALYTICS}CreateApplication"),
        &json!({
            "ApplicationName": name,
            "ApplicationCode": code(window_secs),
            "Inputs": [{
                "NamePrefix": "SOURCE_SQL_STREAM",
                "KinesisStreamsInput": { "ResourceARN": stream_arn(&input), "RoleARN": ROLE },
                "InputSchema": {
                    "RecordFormat": { "RecordFormatType": "JSON",
                        "MappingParameters": { "JSONMappingParameters": { "RecordRowPath": "$" } } },
                    "RecordColumns": [
                        { "Name": "K", "Mapping": "$.k", "SqlType": "VARCHAR(8)" },
                        { "Name": "V", "Mapping": "$.v", "SqlType": "INTEGER" }
                    ]
                }
            }],
            "Outputs": [{
                "Name": "DESTINATION_SQL_STREAM",
                "KinesisStreamsOutput": { "ResourceARN": stream_arn(&output), "RoleARN": ROLE },
                "DestinationSchema": { "RecordFormatType": "JSON" }
            }]
        }),
    )
    .await?;
    eprintln!("processing ...");
    let t0 = Instant::now();
    ep.call_target(
        &mut conn,
        &format!("{ANALYTICS}StartApplication"),
        &json!({ "ApplicationName": name, "InputConfigurations": [{ "Id": "1.1",
            "InputStartingPositionConfiguration": { "InputStartingPosition": "TRIM_HORIZON" } }] }),
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let n = metric(&ep, "freshet_analytics_records_total", name)
            .await?
            .unwrap_or(0.0);
        if n as usize >= records {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {n} of {records} records processed in 10 minutes").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let process_secs = t0.elapsed().as_secs_f64();

    // Live: a steady producer, and the output read for the window delay.
    eprintln!("live at {rate} records/s for {live_secs} s ...");
    let shard_iter = ep
        .shard_iterator(&mut None, &output, "shardId-000000000000", "LATEST")
        .await?;
    let producer = {
        let ep = ep.clone();
        let input = input.clone();
        tokio::spawn(async move {
            let mut conn = None;
            let tick = Duration::from_millis(20);
            let per_tick = (rate / 50).max(1);
            let end = Instant::now() + Duration::from_secs(live_secs);
            let mut next = Instant::now();
            let mut i = 0usize;
            while Instant::now() < end {
                let recs: Vec<Value> = (i..i + per_tick).map(|j| record(j, keys)).collect();
                i += per_tick;
                let _ = ep
                    .call(
                        &mut conn,
                        "PutRecords",
                        &json!({ "StreamName": input, "Records": recs }),
                    )
                    .await;
                next += tick;
                tokio::time::sleep_until(next.into()).await;
            }
        })
    };
    let mut lat = Latencies::default();
    let mut it = shard_iter;
    let read_until = Instant::now() + Duration::from_secs(live_secs + 3 * window_secs + 2);
    let mut rconn = None;
    let live_from = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    while Instant::now() < read_until {
        let out = ep
            .call(
                &mut rconn,
                "GetRecords",
                &json!({ "ShardIterator": it, "Limit": 10000 }),
            )
            .await?;
        for r in out["Records"].as_array().into_iter().flatten() {
            let arrival =
                (r["ApproximateArrivalTimestamp"].as_f64().unwrap_or(0.0) * 1000.0) as i64;
            let data = STANDARD.decode(r["Data"].as_str().unwrap_or(""))?;
            let row: Value = serde_json::from_slice(&data)?;
            let Some(start) = row["W"].as_str().and_then(parse_ts) else {
                continue;
            };
            // Windows of the backlog closed before the live phase: not samples.
            if start < live_from {
                continue;
            }
            let end = start + window_secs as i64 * 1000;
            lat.record(Duration::from_millis((arrival - end).max(0) as u64));
        }
        it = out["NextShardIterator"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    producer.await?;
    let rows_out = metric(&ep, "freshet_analytics_rows_out_total", name)
        .await?
        .unwrap_or(0.0) as u64;
    let samples = lat.micros.len();
    let (p50, p99, max) = lat.summary();
    let _ = ep
        .call_target(
            &mut conn,
            &format!("{ANALYTICS}StopApplication"),
            &json!({ "ApplicationName": name }),
        )
        .await;
    let _ = ep.delete_stream(&input).await;
    let _ = ep.delete_stream(&output).await;
    Ok(AnalyticsReport {
        records,
        load_secs,
        process_secs,
        events_per_sec: records as f64 / process_secs,
        rows_out,
        delay_samples: samples,
        delay_p50_ms: p50,
        delay_p99_ms: p99,
        delay_max_ms: max,
    })
}
