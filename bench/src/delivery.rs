//! `freshet-bench delivery`: Direct PUT delivery-stream throughput and put → visible
//! latency, to the local directory (`<data-dir>/buckets/<bucket>/<key>`, written
//! atomically and fsynced: the fastest destination Freshet has) or to an S3-compatible
//! server (`--s3-endpoint`), uncompressed or GZIP, with or without dynamic partitioning.
//!
//! Each run starts the `freshet` binary given (`--freshet-bin`) on a fresh data
//! directory (with `--delivery-s3 s3` and the endpoint when one is given) and creates a
//! `DirectPut` delivery stream (Firehose API, `ExtendedS3DestinationConfiguration`) with
//! the BufferingHints and compression given. With `--partition-keys N`, records are JSON
//! lines `{"k":"p<i>","d":"..."}` over N keys, and the stream partitions them with a jq
//! `MetadataExtraction` query (`{k: .k}`) under `p=!{partitionKeyFromQuery:k}/`.
//! Then, for `duration`:
//!
//! - `clients` keep-alive connections send PutRecordBatch calls of 500 records of
//!   `record_size` bytes (lowercase letters, or JSON lines of that size), prepared and
//!   signed before the clock starts; only acknowledged records count (a 200 answer,
//!   minus its `FailedPutCount`);
//! - one more connection puts a small marker record every `marker_interval`
//!   (PutRecord; `@M<n>#`, bytes that never occur in the load's records, inside a JSON
//!   line when partitioning);
//! - a watcher thread lists the bucket (the directory, or ListObjectsV2) every 5 ms and
//!   reads each new object once (objects appear whole: by rename, or by S3's atomic
//!   PUT), decompressing GZIP objects: the record bytes that became visible, and when
//!   each marker did. A marker's latency is from just before its PutRecord was written
//!   to the listing that found it (so up to 5 ms of it is the polling, plus the
//!   listing and reading when the bucket is on a server).
//!
//! After the put phase the run waits (up to `drain_timeout`) until every acknowledged
//! byte is visible: the drain time. Reported: put MB/s and records/s (acknowledged, MB
//! = 10^6 bytes of record data), delivered MB/s (bytes that became visible during the
//! put phase, over its length: the first objects wait for the buffer), the drain,
//! end-to-end MB/s (every acknowledged byte over the put phase and the drain), put →
//! visible p50/p99/max, and the CPU seconds the server and the bench used.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Barrier;

use crate::fragment_index::Server;
use crate::kinesis::{Endpoint, api_error};
use crate::rng::Rng;
use crate::sigv4::Signer;
use crate::stats::{Latencies, note_error, process_cpu_secs};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const FIREHOSE: &str = "Firehose_20150804.";
const STREAM: &str = "bench-delivery";
const BUCKET: &str = "bench-delivery";
/// Records per PutRecordBatch (the API's maximum).
pub const BATCH: usize = 500;
/// Distinct prepared requests per client.
const POOL: usize = 2;
const MARKER_START: u8 = b'@';
const MARKER_END: u8 = b'#';
/// How often the watcher lists the bucket.
const WATCH_EVERY: Duration = Duration::from_millis(5);

#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    pub freshet_bin: PathBuf,
    pub data_dir: PathBuf,
    pub clients: usize,
    pub record_size: usize,
    pub duration: Duration,
    pub buffer_mb: u32,
    pub buffer_seconds: u32,
    pub marker_interval: Duration,
    pub drain_timeout: Duration,
    /// `GZIP` or `UNCOMPRESSED`.
    pub gzip: bool,
    /// Dynamic partitioning over this many keys (0: none).
    pub partition_keys: u32,
    /// An S3-compatible server for the bucket (`http://host:port`, path-style), or the
    /// local directory.
    pub s3_endpoint: Option<String>,
}

/// One run's results.
#[derive(Serialize, Clone, Debug, Default)]
pub struct DeliveryReport {
    pub put_calls: u64,
    pub put_failed_calls: u64,
    pub put_failed_records: u64,
    /// Records acknowledged.
    pub put_records: u64,
    /// Their data bytes.
    pub put_bytes: u64,
    pub put_secs: f64,
    pub put_mb_per_sec: f64,
    pub put_records_per_sec: f64,
    /// PutRecordBatch call latency.
    pub put_call_p50_ms: f64,
    pub put_call_p99_ms: f64,
    /// Bytes that became visible in objects during the put phase.
    pub delivered_bytes_in_put: u64,
    /// Those over the put phase's length (the first objects wait for the buffer).
    pub delivered_mb_per_sec: f64,
    /// Every acknowledged byte over the put phase and the drain together.
    pub end_to_end_mb_per_sec: f64,
    /// Every byte that became visible (load and markers).
    pub delivered_bytes: u64,
    pub objects: u64,
    /// Every acknowledged byte became visible.
    pub all_delivered: bool,
    /// From the end of the put phase until every acknowledged byte was visible.
    pub drain_secs: f64,
    pub markers_sent: u64,
    pub markers_seen: u64,
    pub visible_p50_ms: f64,
    pub visible_p99_ms: f64,
    pub visible_max_ms: f64,
    pub server_cpu_secs: Option<f64>,
    pub client_cpu_secs: Option<f64>,
    pub errors: Vec<String>,
}

/// `len` printable bytes (lowercase letters): never a marker byte.
fn printable(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    for b in &mut data {
        *b = b'a' + *b % 26;
    }
    data
}

/// One load record of `record_size` bytes: printable letters, or with `keys` > 0 a
/// JSON line `{"k":"p<i>","d":"<letters>"}` of that size, the key the `n`th of `keys`.
fn load_record(record_size: usize, keys: u32, n: usize, rng: &mut Rng) -> Vec<u8> {
    if keys == 0 {
        return printable(rng, record_size);
    }
    let head = format!("{{\"k\":\"p{}\",\"d\":\"", n % keys as usize);
    let fill = record_size.saturating_sub(head.len() + 3);
    let mut r = head.into_bytes();
    r.extend_from_slice(&printable(rng, fill));
    r.extend_from_slice(b"\"}\n");
    r
}

/// The smallest `record_size` that a partitioned (JSON line) record fits in.
pub const MIN_PARTITIONED_RECORD: usize = 32;

fn put_record_batch_body(record_size: usize, keys: u32, rng: &mut Rng) -> Vec<u8> {
    let b64_len = record_size.div_ceil(3) * 4;
    let mut body = String::with_capacity(64 + BATCH * (b64_len + 12));
    body.push_str("{\"DeliveryStreamName\":\"");
    body.push_str(STREAM);
    body.push_str("\",\"Records\":[");
    for i in 0..BATCH {
        if i > 0 {
            body.push(',');
        }
        body.push_str("{\"Data\":\"");
        let record = load_record(record_size, keys, i, rng);
        debug_assert_eq!(record.len(), record_size);
        STANDARD.encode_string(record, &mut body);
        body.push_str("\"}");
    }
    body.push_str("]}");
    body.into_bytes()
}

fn marker(seq: u64, partitioned: bool) -> Vec<u8> {
    let m = format!("{}M{seq}{}", MARKER_START as char, MARKER_END as char);
    if partitioned {
        format!("{{\"k\":\"p0\",\"d\":\"{m}\"}}\n").into_bytes()
    } else {
        m.into_bytes()
    }
}

/// `FailedPutCount` of a PutRecordBatch answer.
fn failed_put_count(body: &[u8]) -> Option<u64> {
    crate::kinesis::json_count(body, "FailedPutCount")
}

/// What the watcher has seen.
#[derive(Default)]
struct Seen {
    bytes: u64,
    objects: u64,
    /// When each marker was first seen.
    markers: HashMap<u64, Instant>,
}

/// Markers in an object: (number) of each 0xFF M<n> 0xFE.
fn markers_in(body: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = body[at..].iter().position(|&b| b == MARKER_START) {
        let start = at + i + 1;
        let Some(len) = body[start..].iter().position(|&b| b == MARKER_END) else {
            break;
        };
        if let Some(n) = std::str::from_utf8(&body[start..start + len])
            .ok()
            .and_then(|s| s.strip_prefix('M'))
            .and_then(|s| s.parse().ok())
        {
            out.push(n);
        }
        at = start + len + 1;
    }
    out
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path(), out),
            Ok(t) if t.is_file() => out.push(e.path()),
            _ => {}
        }
    }
}

/// Where the delivered objects are read back from.
#[derive(Clone, Debug)]
enum Bucket {
    /// The local-directory destination's directory.
    Dir(PathBuf),
    /// A bucket on an S3-compatible server, read with path-style requests signed with
    /// the credentials the server is given (`test`/`test`).
    S3 { host: String, bucket: String },
}

impl Bucket {
    /// Every object's key (or path) now in the bucket.
    fn list(&self) -> Result<Vec<String>, BoxError> {
        match self {
            Bucket::Dir(dir) => {
                let mut files = Vec::new();
                files_under(dir, &mut files);
                Ok(files
                    .into_iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect())
            }
            Bucket::S3 { host, bucket } => {
                let mut keys = Vec::new();
                let mut token: Option<String> = None;
                loop {
                    let mut path = format!("/{bucket}?list-type=2&max-keys=1000");
                    if let Some(t) = &token {
                        path.push_str("&continuation-token=");
                        path.push_str(&percent_encode(t));
                    }
                    let (status, body) = http_get(host, &path)?;
                    if status != 200 {
                        return Err(format!("ListObjectsV2 answered {status}").into());
                    }
                    let xml = String::from_utf8_lossy(&body);
                    keys.extend(xml_values(&xml, "Key").into_iter().map(xml_unescape));
                    token = xml_values(&xml, "NextContinuationToken")
                        .into_iter()
                        .next()
                        .map(xml_unescape);
                    if token.is_none() {
                        return Ok(keys);
                    }
                }
            }
        }
    }

    /// An object's bytes, decompressed when its name ends in `.gz`.
    fn read(&self, key: &str) -> Result<Vec<u8>, BoxError> {
        let raw = match self {
            Bucket::Dir(_) => std::fs::read(key)?,
            Bucket::S3 { host, bucket } => {
                let path = format!("/{bucket}/{}", percent_encode_path(key));
                let (status, body) = http_get(host, &path)?;
                if status != 200 {
                    return Err(format!("GetObject {key} answered {status}").into());
                }
                body
            }
        };
        if key.ends_with(".gz") {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut out)?;
            Ok(out)
        } else {
            Ok(raw)
        }
    }

    /// Creates the bucket (S3; the local destination makes its directory itself).
    fn create(&self) -> Result<(), BoxError> {
        if let Bucket::S3 { host, bucket } = self {
            let (status, body) = http_request(host, "PUT", &format!("/{bucket}"))?;
            if status != 200 && !String::from_utf8_lossy(&body).contains("BucketAlreadyOwnedByYou")
            {
                return Err(format!("CreateBucket answered {status}").into());
            }
        }
        Ok(())
    }
}

fn http_get(host: &str, path: &str) -> Result<(u16, Vec<u8>), BoxError> {
    http_request(host, "GET", path)
}

/// One blocking HTTP/1.1 request on a new connection: (status, body), chunked bodies
/// decoded.
fn http_request(host: &str, method: &str, path: &str) -> Result<(u16, Vec<u8>), BoxError> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(host)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let (path_only, query) = path.split_once('?').unwrap_or((path, ""));
    let date = crate::sigv4::amz_date_now();
    let auth = Signer::new("test", "test", "us-east-1", "s3")
        .authorization_s3(method, host, path_only, query, &date);
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nX-Amz-Date: {date}\r\n\
         X-Amz-Content-Sha256: {}\r\nAuthorization: {auth}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n",
        crate::sigv4::EMPTY_SHA256
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an HTTP answer without a header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("an HTTP answer without a status")?;
    let body = &raw[split + 4..];
    if head.contains("transfer-encoding: chunked") {
        Ok((status, dechunk(body)?))
    } else {
        Ok((status, body.to_vec()))
    }
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, BoxError> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size without its line end")?;
        let size_text = std::str::from_utf8(&body[..eol])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("a chunk shorter than its size".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// The text of every `<tag>...</tag>` in `xml`, in order.
fn xml_values<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(&rest[..j]);
        rest = &rest[j + close.len()..];
    }
    out
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// [`percent_encode`] per path segment, keeping the `/`s.
fn percent_encode_path(key: &str) -> String {
    key.split('/')
        .map(percent_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// Lists `bucket` every [`WATCH_EVERY`] until `stop`, reading each new object once.
fn watch(bucket: Bucket, seen: Arc<Mutex<Seen>>, stop: Arc<AtomicBool>) {
    let mut known: HashSet<String> = HashSet::new();
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let keys = match bucket.list() {
            Ok(keys) => keys,
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    eprintln!("delivery: cannot list the bucket: {e}");
                }
                std::thread::sleep(WATCH_EVERY);
                continue;
            }
        };
        for key in keys {
            if known.contains(&key) {
                continue;
            }
            let Ok(body) = bucket.read(&key) else {
                continue;
            };
            let now = Instant::now();
            let found = markers_in(&body);
            let mut s = seen.lock().unwrap();
            s.bytes += body.len() as u64;
            s.objects += 1;
            for n in found {
                s.markers.entry(n).or_insert(now);
            }
            drop(s);
            known.insert(key);
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

struct ClientResult {
    lat: Latencies,
    calls: u64,
    failed_calls: u64,
    failed_records: u64,
    records: u64,
    errors: Vec<String>,
}

async fn client_loop(ep: &Endpoint, pool: &[Vec<u8>], stop: &AtomicBool) -> ClientResult {
    let mut r = ClientResult {
        lat: Latencies::default(),
        calls: 0,
        failed_calls: 0,
        failed_records: 0,
        records: 0,
        errors: Vec::new(),
    };
    let mut conn = crate::http::Conn::connect(ep.addr).await.ok();
    let mut next = 0;
    while !stop.load(Ordering::Relaxed) {
        let req = &pool[next];
        next = (next + 1) % pool.len();
        let t0 = Instant::now();
        let result = ep.send(&mut conn, req).await;
        r.lat.record(t0.elapsed());
        r.calls += 1;
        match result {
            Ok(resp) if resp.status == 200 => match failed_put_count(&resp.body) {
                Some(failed) => {
                    let failed = failed.min(BATCH as u64);
                    r.failed_records += failed;
                    r.records += BATCH as u64 - failed;
                    if failed > 0 {
                        note_error(&mut r.errors, format!("{failed} records failed in a batch"));
                    }
                }
                None => {
                    r.failed_calls += 1;
                    note_error(&mut r.errors, "200 answer without FailedPutCount".into());
                }
            },
            Ok(resp) => {
                r.failed_calls += 1;
                note_error(&mut r.errors, api_error(&resp).to_string());
            }
            Err(e) => {
                r.failed_calls += 1;
                note_error(&mut r.errors, e.to_string());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    r
}

/// Puts a marker every `every` until `stop`: (marker number, sent at, acknowledged).
async fn markers_loop(
    ep: &Endpoint,
    every: Duration,
    partitioned: bool,
    stop: &AtomicBool,
) -> (Vec<(u64, Instant)>, u64, Vec<String>) {
    let mut conn = None;
    let mut sent = Vec::new();
    let mut acked_bytes = 0;
    let mut errors = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let data = marker(seq, partitioned);
        let body = serde_json::to_vec(&json!({
            "DeliveryStreamName": STREAM,
            "Record": {"Data": STANDARD.encode(&data)},
        }))
        .expect("JSON serialises");
        let req = ep.build_target_request(&format!("{FIREHOSE}PutRecord"), &body);
        let t0 = Instant::now();
        match ep.send(&mut conn, &req).await {
            Ok(resp) if resp.status == 200 => {
                sent.push((seq, t0));
                acked_bytes += data.len() as u64;
            }
            Ok(resp) => note_error(&mut errors, format!("marker: {}", api_error(&resp))),
            Err(e) => note_error(&mut errors, format!("marker: {e}")),
        }
        seq += 1;
    }
    (sent, acked_bytes, errors)
}

async fn create_stream(
    ep: &Endpoint,
    cfg: &DeliveryConfig,
    bucket: &Bucket,
) -> Result<(), BoxError> {
    let bucket_name = match bucket {
        Bucket::Dir(_) => BUCKET,
        Bucket::S3 { bucket, .. } => bucket.as_str(),
    };
    let mut conn = None;
    let mut request = json!({
            "DeliveryStreamName": STREAM,
            "DeliveryStreamType": "DirectPut",
            "ExtendedS3DestinationConfiguration": {
                "RoleARN": "arn:aws:iam::000000000000:role/bench",
                "BucketARN": format!("arn:aws:s3:::{bucket_name}"),
                "BufferingHints": {
                    "SizeInMBs": cfg.buffer_mb,
                    "IntervalInSeconds": cfg.buffer_seconds,
                },
                "CompressionFormat": if cfg.gzip { "GZIP" } else { "UNCOMPRESSED" },
            },
    });
    if cfg.partition_keys > 0 {
        let dest = &mut request["ExtendedS3DestinationConfiguration"];
        dest["Prefix"] = json!("p=!{partitionKeyFromQuery:k}/");
        dest["ErrorOutputPrefix"] = json!("errors/");
        dest["DynamicPartitioningConfiguration"] = json!({"Enabled": true});
        dest["ProcessingConfiguration"] = json!({
            "Enabled": true,
            "Processors": [{
                "Type": "MetadataExtraction",
                "Parameters": [
                    {"ParameterName": "MetadataExtractionQuery", "ParameterValue": "{k: .k}"},
                    {"ParameterName": "JsonParsingEngine", "ParameterValue": "JQ-1.6"},
                ],
            }],
        });
    }
    ep.call_target(
        &mut conn,
        &format!("{FIREHOSE}CreateDeliveryStream"),
        &request,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = ep
            .call_target(
                &mut conn,
                &format!("{FIREHOSE}DescribeDeliveryStream"),
                &json!({ "DeliveryStreamName": STREAM }),
            )
            .await?;
        if d["DeliveryStreamDescription"]["DeliveryStreamStatus"] == "ACTIVE" {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the delivery stream did not become ACTIVE within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One run on a fresh server and data directory.
pub async fn run(cfg: &DeliveryConfig) -> Result<DeliveryReport, BoxError> {
    let _ = std::fs::remove_dir_all(&cfg.data_dir);
    std::fs::create_dir_all(&cfg.data_dir)?;
    let server = match &cfg.s3_endpoint {
        None => Server::start(&cfg.freshet_bin, &cfg.data_dir).await?,
        Some(url) => {
            let env = [
                ("AWS_ENDPOINT_URL_S3", url.as_str()),
                ("AWS_ACCESS_KEY_ID", "test"),
                ("AWS_SECRET_ACCESS_KEY", "test"),
                ("AWS_REGION", "us-east-1"),
            ];
            Server::start_with(
                &cfg.freshet_bin,
                &cfg.data_dir,
                &["--delivery-s3", "s3"],
                &env,
            )
            .await?
            .0
        }
    };
    let outcome = measure(cfg, &server).await;
    let stopped = server.stop().await;
    let _ = std::fs::remove_dir_all(&cfg.data_dir);
    let report = outcome?;
    stopped?;
    Ok(report)
}

async fn measure(cfg: &DeliveryConfig, server: &Server) -> Result<DeliveryReport, BoxError> {
    let ep = Arc::new(Endpoint {
        addr: server.addr,
        host: server.addr.to_string(),
        signer: Signer::new("test", "test", "us-east-1", "firehose"),
        timeout: Duration::from_secs(60),
    });
    let bucket = match &cfg.s3_endpoint {
        None => Bucket::Dir(cfg.data_dir.join("buckets").join(BUCKET)),
        Some(url) => Bucket::S3 {
            host: url
                .strip_prefix("http://")
                .ok_or("--s3-endpoint must be an http:// URL")?
                .trim_end_matches('/')
                .to_string(),
            // A bucket of its own per run: objects of earlier runs are not counted.
            bucket: format!(
                "{BUCKET}-{}",
                Rng::from_entropy(0).next_u64() % 1_000_000_000
            ),
        },
    };
    bucket.create()?;
    create_stream(&ep, cfg, &bucket).await?;
    let server_pid = server.child.id().to_string();

    eprintln!(
        "delivery: preparing {} x {POOL} PutRecordBatch requests ({BATCH} records x {} B)...",
        cfg.clients, cfg.record_size
    );
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(cfg.clients + 1));
    let mut clients = Vec::new();
    for id in 0..cfg.clients {
        let (ep, stop, barrier) = (ep.clone(), stop.clone(), barrier.clone());
        let (record_size, keys) = (cfg.record_size, cfg.partition_keys);
        clients.push(tokio::spawn(async move {
            let ep2 = ep.clone();
            let pool = tokio::task::spawn_blocking(move || {
                let mut rng = Rng::from_entropy(id as u64 + 1);
                (0..POOL)
                    .map(|_| {
                        let body = put_record_batch_body(record_size, keys, &mut rng);
                        ep2.build_target_request(&format!("{FIREHOSE}PutRecordBatch"), &body)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .expect("request builder panicked");
            barrier.wait().await;
            client_loop(&ep, &pool, &stop).await
        }));
    }
    barrier.wait().await;

    let seen = Arc::new(Mutex::new(Seen::default()));
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let bucket = bucket.clone();
        let (seen, watch_stop) = (seen.clone(), watch_stop.clone());
        std::thread::spawn(move || watch(bucket, seen, watch_stop))
    };
    let server_cpu0 = process_cpu_secs(&server_pid);
    let client_cpu0 = process_cpu_secs("self");
    let start = Instant::now();
    eprintln!("delivery: putting for {:?}", cfg.duration);
    let markers = {
        let (ep, stop, every) = (ep.clone(), stop.clone(), cfg.marker_interval);
        let partitioned = cfg.partition_keys > 0;
        tokio::spawn(async move { markers_loop(&ep, every, partitioned, &stop).await })
    };
    tokio::time::sleep(cfg.duration).await;
    stop.store(true, Ordering::Relaxed);

    let mut report = DeliveryReport::default();
    let mut lat = Latencies::default();
    for c in clients {
        let r = c.await?;
        lat.merge(r.lat);
        report.put_calls += r.calls;
        report.put_failed_calls += r.failed_calls;
        report.put_failed_records += r.failed_records;
        report.put_records += r.records;
        for e in r.errors {
            note_error(&mut report.errors, e);
        }
    }
    let (sent, marker_bytes, marker_errors) = markers.await?;
    let put_end = Instant::now();
    report.put_secs = (put_end - start).as_secs_f64();
    report.delivered_bytes_in_put = seen.lock().unwrap().bytes;
    for e in marker_errors {
        note_error(&mut report.errors, e);
    }
    report.put_bytes = report.put_records * cfg.record_size as u64;
    let expected = report.put_bytes + marker_bytes;

    eprintln!("delivery: waiting for every acknowledged byte to be visible...");
    let deadline = put_end + cfg.drain_timeout;
    loop {
        let visible = seen.lock().unwrap().bytes;
        if visible >= expected {
            report.all_delivered = true;
            report.drain_secs = put_end.elapsed().as_secs_f64();
            break;
        }
        if Instant::now() > deadline {
            report.drain_secs = cfg.drain_timeout.as_secs_f64();
            note_error(
                &mut report.errors,
                format!(
                    "only {visible} of {expected} acknowledged bytes visible after {:?}",
                    cfg.drain_timeout
                ),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    watch_stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    report.server_cpu_secs = process_cpu_secs(&server_pid)
        .zip(server_cpu0)
        .map(|(b, a)| b - a);
    report.client_cpu_secs = process_cpu_secs("self")
        .zip(client_cpu0)
        .map(|(b, a)| b - a);

    let seen = seen.lock().unwrap();
    report.delivered_bytes = seen.bytes;
    report.objects = seen.objects;
    let secs = report.put_secs.max(1e-9);
    report.put_mb_per_sec = report.put_bytes as f64 / 1e6 / secs;
    report.put_records_per_sec = report.put_records as f64 / secs;
    report.delivered_mb_per_sec = report.delivered_bytes_in_put as f64 / 1e6 / secs;
    if report.all_delivered {
        report.end_to_end_mb_per_sec =
            report.put_bytes as f64 / 1e6 / (report.put_secs + report.drain_secs);
    }
    let (p50, p99, _) = lat.summary();
    report.put_call_p50_ms = p50;
    report.put_call_p99_ms = p99;
    report.markers_sent = sent.len() as u64;
    let mut visible = Latencies::default();
    for (seq, t0) in &sent {
        if let Some(at) = seen.markers.get(seq) {
            visible.record(at.saturating_duration_since(*t0));
        }
    }
    report.markers_seen = visible.micros.len() as u64;
    let (p50, p99, max) = visible.summary();
    report.visible_p50_ms = p50;
    report.visible_p99_ms = p99;
    report.visible_max_ms = max;
    if report.markers_seen < report.markers_sent {
        note_error(
            &mut report.errors,
            format!(
                "{} of {} acknowledged markers never became visible",
                report.markers_sent - report.markers_seen,
                report.markers_sent
            ),
        );
    }
    Ok(report)
}

/// The median of `values` (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// The table of every run and the medians.
pub fn table(cfg: &DeliveryConfig, runs: &[DeliveryReport]) -> String {
    let mut out = format!(
        "delivery: {} clients, PutRecordBatch of {BATCH} x {} B, {:?}; BufferingHints {} MB / {} s; {}; {}; {}\n",
        cfg.clients,
        cfg.record_size,
        cfg.duration,
        cfg.buffer_mb,
        cfg.buffer_seconds,
        match &cfg.s3_endpoint {
            None => "local-directory destination".to_string(),
            Some(url) => format!("S3 destination at {url}"),
        },
        if cfg.gzip { "GZIP" } else { "uncompressed" },
        match cfg.partition_keys {
            0 => "no partitioning".to_string(),
            n => format!("dynamic partitioning over {n} keys (jq)"),
        },
    );
    out.push_str(
        "| run | put MB/s | put records/s | delivered MB/s | drain s | end to end MB/s | objects | visible p50 ms | p99 ms | max ms | markers | server CPU s | bench CPU s |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let cpu = |c: Option<f64>| c.map_or("-".to_string(), |c| format!("{c:.1}"));
    for (i, r) in runs.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {:.1} | {:.0} | {:.1} | {:.2}{} | {:.1} | {} | {:.0} | {:.0} | {:.0} | {}/{} | {} | {} |\n",
            i + 1,
            r.put_mb_per_sec,
            r.put_records_per_sec,
            r.delivered_mb_per_sec,
            r.drain_secs,
            if r.all_delivered { "" } else { " (incomplete)" },
            r.end_to_end_mb_per_sec,
            r.objects,
            r.visible_p50_ms,
            r.visible_p99_ms,
            r.visible_max_ms,
            r.markers_seen,
            r.markers_sent,
            cpu(r.server_cpu_secs),
            cpu(r.client_cpu_secs),
        ));
    }
    if runs.len() > 1 {
        let m = |f: fn(&DeliveryReport) -> f64| median(runs.iter().map(f).collect());
        out.push_str(&format!(
            "| median | {:.1} | {:.0} | {:.1} | {:.2} | {:.1} | | {:.0} | {:.0} | {:.0} | | | |\n",
            m(|r| r.put_mb_per_sec),
            m(|r| r.put_records_per_sec),
            m(|r| r.delivered_mb_per_sec),
            m(|r| r.drain_secs),
            m(|r| r.end_to_end_mb_per_sec),
            m(|r| r.visible_p50_ms),
            m(|r| r.visible_p99_ms),
            m(|r| r.visible_max_ms),
        ));
    }
    for (i, r) in runs.iter().enumerate() {
        for e in &r.errors {
            out.push_str(&format!("run {}: {e}\n", i + 1));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_among_printable_records() {
        let mut rng = Rng::new(7);
        let mut object = printable(&mut rng, 1000);
        object.extend(marker(12, false));
        object.extend(printable(&mut rng, 10));
        object.extend(marker(13, false));
        assert_eq!(markers_in(&object), vec![12, 13]);
        assert!(markers_in(&printable(&mut rng, 100_000)).is_empty());
        // A marker cut off at the end of an object is not counted.
        let mut cut = marker(14, false);
        cut.pop();
        assert!(markers_in(&cut).is_empty());
    }

    #[test]
    fn partitioned_records_are_json_lines_of_the_record_size() {
        let mut rng = Rng::new(3);
        let mut object = Vec::new();
        for n in 0..250 {
            let r = load_record(100, 100, n, &mut rng);
            assert_eq!(r.len(), 100);
            let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
            assert_eq!(v["k"], format!("p{}", n % 100));
            object.extend(r);
        }
        let m = marker(5, true);
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["k"], "p0");
        object.extend(m);
        assert_eq!(markers_in(&object), vec![5]);
    }

    #[test]
    fn s3_listings_and_chunked_bodies_are_read() {
        let xml = "<ListBucketResult><Contents><Key>a/b&amp;c.gz</Key></Contents>\
                   <Contents><Key>d</Key></Contents>\
                   <NextContinuationToken>t+1</NextContinuationToken></ListBucketResult>";
        let keys: Vec<String> = xml_values(xml, "Key")
            .into_iter()
            .map(xml_unescape)
            .collect();
        assert_eq!(keys, ["a/b&c.gz", "d"]);
        assert_eq!(xml_values(xml, "NextContinuationToken"), ["t+1"]);
        assert_eq!(percent_encode("t+1 /"), "t%2B1%20%2F");
        assert_eq!(percent_encode_path("p=p1/x y"), "p%3Dp1/x%20y");
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_err());
    }

    #[test]
    fn failed_put_count_is_read_from_the_answer() {
        assert_eq!(
            failed_put_count(br#"{"Encrypted":false,"FailedPutCount":3,"RequestResponses":[]}"#),
            Some(3)
        );
        assert_eq!(failed_put_count(br#"{"FailedPutCount": 0}"#), Some(0));
        assert_eq!(failed_put_count(b"{}"), None);
    }

    #[test]
    fn batch_bodies_hold_the_records_as_base64() {
        let mut rng = Rng::new(1);
        let body = put_record_batch_body(10, 0, &mut rng);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let records = v["Records"].as_array().unwrap();
        assert_eq!(records.len(), BATCH);
        let data = STANDARD
            .decode(records[0]["Data"].as_str().unwrap())
            .unwrap();
        assert_eq!(data.len(), 10);
        assert!(data.iter().all(u8::is_ascii_lowercase));
    }
}
