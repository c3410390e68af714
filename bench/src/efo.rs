//! Enhanced fan-out delivery latency: put → SubscribeToShard.
//!
//! For each consumer count: a one-shard stream, that many registered consumers each
//! with a SubscribeToShard subscription from LATEST (plain HTTP/1.1, the chunked
//! event stream read and its frames split by their length prefix), and one producer
//! that sends a small PutRecord every `interval`, noting the instant before it writes
//! the request. A sample's latency, per consumer, is from that instant to the moment
//! the consumer has parsed the event that carries it.

use crate::kinesis::{CallError, Endpoint};
use crate::stats::Latencies;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error>;

/// One consumer count's figures.
pub struct EfoReport {
    pub consumers: usize,
    pub deliveries: usize,
    pub expected: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub async fn run(
    ep: Arc<Endpoint>,
    stream: &str,
    consumers: usize,
    samples: usize,
    interval: Duration,
) -> Result<EfoReport, BoxError> {
    let mut conn = None;
    ep.create_stream(stream, 1, Duration::from_secs(30)).await?;
    let summary = ep
        .call(
            &mut conn,
            "DescribeStreamSummary",
            &json!({ "StreamName": stream }),
        )
        .await?;
    let stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
        .as_str()
        .ok_or("no StreamARN")?
        .to_string();
    let mut arns = Vec::new();
    for i in 0..consumers {
        let c = ep
            .call(
                &mut conn,
                "RegisterStreamConsumer",
                &json!({ "StreamARN": stream_arn, "ConsumerName": format!("c{i}") }),
            )
            .await?;
        arns.push(
            c["Consumer"]["ConsumerARN"]
                .as_str()
                .ok_or("no ARN")?
                .to_string(),
        );
    }
    for arn in &arns {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let d = ep
                .call(
                    &mut conn,
                    "DescribeStreamConsumer",
                    &json!({ "ConsumerARN": arn }),
                )
                .await?;
            if d["ConsumerDescription"]["ConsumerStatus"] == "ACTIVE" {
                break;
            }
            if Instant::now() > deadline {
                return Err("consumer never ACTIVE".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let base = Instant::now();
    let sent: Arc<Vec<std::sync::atomic::AtomicU64>> = Arc::new(
        (0..samples)
            .map(|_| std::sync::atomic::AtomicU64::new(0))
            .collect(),
    );
    let mut readers = Vec::new();
    for arn in &arns {
        let mut sub = Subscription::open(&ep, arn).await?;
        let sent = sent.clone();
        readers.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            let mut seen = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            while seen < samples && Instant::now() < deadline {
                let Ok(Some(payload)) =
                    tokio::time::timeout(Duration::from_secs(10), sub.next_event()).await
                else {
                    break;
                };
                let now = base.elapsed().as_nanos() as u64;
                let Ok(event) = serde_json::from_slice::<Value>(&payload) else {
                    continue;
                };
                for r in event["Records"].as_array().into_iter().flatten() {
                    let Some(i) = r["Data"]
                        .as_str()
                        .and_then(|d| STANDARD.decode(d).ok())
                        .and_then(|d| String::from_utf8(d).ok())
                        .and_then(|s| s.strip_prefix("efo:")?.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    let t = sent
                        .get(i)
                        .map(|s| s.load(std::sync::atomic::Ordering::Acquire))
                        .unwrap_or(0);
                    if t > 0 {
                        lat.record(Duration::from_nanos(now.saturating_sub(t - 1)));
                        seen += 1;
                    }
                }
            }
            lat
        }));
    }
    for i in 0..samples {
        let body = serde_json::to_vec(&json!({
            "StreamName": stream,
            "PartitionKey": "k",
            "Data": STANDARD.encode(format!("efo:{i}")),
        }))?;
        let req = ep.build_request("PutRecord", &body);
        sent[i].store(
            base.elapsed().as_nanos() as u64 + 1,
            std::sync::atomic::Ordering::Release,
        );
        let resp = ep.send(&mut conn, &req).await?;
        if resp.status != 200 {
            return Err(Box::new(crate::kinesis::api_error(&resp)));
        }
        tokio::time::sleep(interval).await;
    }
    let mut all = Latencies::default();
    for r in readers {
        all.merge(r.await?);
    }
    let deliveries = all.micros.len();
    let (p50_ms, p99_ms, max_ms) = all.summary();
    let _ = ep
        .call(
            &mut conn,
            "DeleteStream",
            &json!({ "StreamName": stream, "EnforceConsumerDeletion": true }),
        )
        .await;
    Ok(EfoReport {
        consumers,
        deliveries,
        expected: samples * consumers,
        p50_ms,
        p99_ms,
        max_ms,
    })
}

/// A SubscribeToShard response read as it arrives.
struct Subscription {
    tcp: TcpStream,
    /// Bytes of the chunked body not yet decoded.
    raw: Vec<u8>,
    /// Decoded body bytes not yet split into frames.
    body: Vec<u8>,
}

impl Subscription {
    async fn open(ep: &Endpoint, arn: &str) -> Result<Subscription, BoxError> {
        let body = serde_json::to_vec(&json!({
            "ConsumerARN": arn,
            "ShardId": "shardId-000000000000",
            "StartingPosition": { "Type": "LATEST" },
        }))?;
        let mut tcp = TcpStream::connect(ep.addr).await?;
        tcp.set_nodelay(true)?;
        tcp.write_all(&ep.build_request("SubscribeToShard", &body))
            .await?;
        let mut raw = Vec::new();
        let head_end = loop {
            if let Some(i) = crate::http::find(&raw, b"\r\n\r\n") {
                break i + 4;
            }
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                return Err("connection closed before the response head".into());
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_lowercase();
        if !head.starts_with("http/1.1 200") || !head.contains("transfer-encoding: chunked") {
            return Err(Box::new(CallError::BadResponse(format!(
                "SubscribeToShard: {head}"
            ))));
        }
        raw.drain(..head_end);
        Ok(Subscription {
            tcp,
            raw,
            body: Vec::new(),
        })
    }

    /// The payload of the next SubscribeToShardEvent (other messages are skipped).
    async fn next_event(&mut self) -> Option<Vec<u8>> {
        loop {
            while let Some((headers, payload)) = self.take_frame() {
                if crate::http::find(&headers, b"SubscribeToShardEvent").is_some() {
                    return Some(payload);
                }
            }
            self.decode_chunks();
            if self.body.len() >= 4 && self.frame_len().is_some_and(|n| self.body.len() >= n) {
                continue;
            }
            let mut buf = [0u8; 64 * 1024];
            let n = self.tcp.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            self.raw.extend_from_slice(&buf[..n]);
        }
    }

    fn frame_len(&self) -> Option<usize> {
        let b: [u8; 4] = self.body.get(..4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b) as usize)
    }

    fn take_frame(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let total = self.frame_len()?;
        if total < 16 || self.body.len() < total {
            return None;
        }
        let headers_len = u32::from_be_bytes(self.body[4..8].try_into().ok()?) as usize;
        let frame: Vec<u8> = self.body.drain(..total).collect();
        let headers = frame.get(12..12 + headers_len)?.to_vec();
        let payload = frame.get(12 + headers_len..total - 4)?.to_vec();
        Some((headers, payload))
    }

    /// Moves whole chunks from `raw` to `body`.
    fn decode_chunks(&mut self) {
        loop {
            let Some(line_end) = crate::http::find(&self.raw, b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]);
            let Ok(size) =
                usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            else {
                return;
            };
            let need = line_end + 2 + size + 2;
            if self.raw.len() < need {
                return;
            }
            self.body
                .extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            self.raw.drain(..need);
        }
    }
}
