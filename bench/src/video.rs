//! `freshet-bench video`: N simulated cameras, each streaming a looped H.264 clip
//! over one PutMedia connection in real time (one fragment = one 1 s GOP), plus
//! optional concurrent GetMedia readers and server memory sampling.
//!
//! The clip (kvssink layout: EBML header, unknown-size Segment, Info, Tracks, then
//! one Cluster per GOP starting with an 8-byte Timecode) is split once into the
//! header bytes and the Clusters' children. Each fragment sent is one Cluster
//! rewritten with a *known* size (8-byte size field), so the server knows the
//! fragment is complete at its last byte (an unknown-size Cluster only ends when
//! the next one starts, a second later), its Timecode patched to an increasing
//! ABSOLUTE value in ms (start at now, +1000 per fragment), and an optional Void
//! element appended to reach `--pad-kbps`.

use crate::http::{Conn, find};
use crate::rng::Rng;
use crate::stats::{Latencies, read_status_kib};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CLUSTER_ID: [u8; 4] = [0x1F, 0x43, 0xB6, 0x75];

/// The clip split into the document header and per-Cluster children.
pub struct Clip {
    /// EBML header, Segment header (unknown size), Info, Tracks.
    pub header: Vec<u8>,
    /// Each Cluster's children (without the Cluster ID and size); each starts with
    /// the Timecode element `E7 88 <8 bytes>`.
    pub clusters: Vec<Vec<u8>>,
}

/// Reads an EBML variable-length integer; returns (value with marker removed, length,
/// all-ones = unknown).
fn vint(b: &[u8]) -> Option<(u64, usize, bool)> {
    let first = *b.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 || b.len() < len {
        return None;
    }
    let mut v = (first as u64) & (0xFFu64 >> len);
    for &x in &b[1..len] {
        v = (v << 8) | x as u64;
    }
    let unknown = v == (1u64 << (7 * len)) - 1;
    Some((v, len, unknown))
}

/// Length of an element ID (its leading-bits length, the marker kept).
fn id_len(b: &[u8]) -> Option<usize> {
    let len = b.first()?.leading_zeros() as usize + 1;
    (len <= 4 && b.len() >= len).then_some(len)
}

impl Clip {
    pub fn parse(data: &[u8]) -> Result<Clip, BoxError> {
        let first = find(data, &CLUSTER_ID).ok_or("clip has no Cluster")?;
        let header = data[..first].to_vec();
        let mut clusters = Vec::new();
        let mut pos = first;
        while pos < data.len() {
            if data[pos..].len() < 4 || data[pos..pos + 4] != CLUSTER_ID {
                break; // Tags or anything else after the last Cluster: ignored
            }
            let (size, slen, unknown) =
                vint(&data[pos + 4..]).ok_or("bad Cluster size in the clip")?;
            let body_start = pos + 4 + slen;
            let limit = if unknown {
                data.len()
            } else {
                (body_start + size as usize).min(data.len())
            };
            // Walk the children: Timecode, Position, PrevSize, SimpleBlock, BlockGroup,
            // Void, CRC-32. Anything else ends an unknown-size Cluster.
            let mut p = body_start;
            while p < limit {
                let il = id_len(&data[p..]).ok_or("bad element ID in the clip")?;
                let id = &data[p..p + il];
                let child = matches!(
                    id,
                    [0xE7] | [0xA7] | [0xAB] | [0xA3] | [0xA0] | [0xEC] | [0xBF]
                );
                if !child {
                    break;
                }
                let (esize, el, eunk) =
                    vint(&data[p + il..]).ok_or("bad element size in the clip")?;
                if eunk {
                    return Err("unknown-size element inside a Cluster".into());
                }
                p += il + el + esize as usize;
            }
            let p = p.min(limit);
            let children = data[body_start..p].to_vec();
            if children.len() < 10 || children[0] != 0xE7 || children[1] != 0x88 {
                return Err("Cluster does not start with an 8-byte Timecode (E7 88)".into());
            }
            clusters.push(children);
            pos = p;
        }
        if clusters.is_empty() {
            return Err("clip has no Cluster".into());
        }
        Ok(Clip { header, clusters })
    }

    /// One fragment: Cluster `k % n` with a known size, its Timecode set to `tc`,
    /// and a Void element of `pad` bytes in total (0, or at least 9) appended.
    pub fn fragment(&self, k: usize, tc: u64, pad: usize) -> Vec<u8> {
        let children = &self.clusters[k % self.clusters.len()];
        let pad = if pad > 0 { pad.max(9) } else { 0 };
        let size = children.len() + pad;
        let mut out = Vec::with_capacity(12 + size);
        out.extend_from_slice(&CLUSTER_ID);
        out.push(0x01);
        out.extend_from_slice(&(size as u64).to_be_bytes()[1..]);
        out.extend_from_slice(&children[..2]);
        out.extend_from_slice(&tc.to_be_bytes());
        out.extend_from_slice(&children[10..]);
        if pad > 0 {
            // Void: EC, 8-byte size, zeros.
            out.push(0xEC);
            out.push(0x01);
            out.extend_from_slice(&((pad - 9) as u64).to_be_bytes()[1..]);
            out.resize(out.len() + pad - 9, 0);
        }
        out
    }

    /// Mean bytes per Cluster of the clip.
    pub fn mean_cluster_bytes(&self) -> usize {
        self.clusters.iter().map(|c| c.len() + 12).sum::<usize>() / self.clusters.len()
    }
}

pub struct VideoConfig {
    pub addr: SocketAddr,
    pub host: String,
    pub cameras: usize,
    pub duration: Duration,
    pub pad_kbps: u64,
    pub readers: usize,
    pub reader_interval: Duration,
    pub server_pid: Option<u32>,
    pub retention_hours: u32,
    pub stream_prefix: String,
    pub grace: Duration,
    pub ramp: Duration,
}

#[derive(Default, Debug)]
pub struct VideoReport {
    pub cameras: usize,
    pub cameras_failed: usize,
    pub fragments_sent: u64,
    pub persisted: u64,
    pub error_acks: u64,
    pub bytes_sent: u64,
    pub elapsed_secs: f64,
    pub persisted_ms: (f64, f64, f64),
    pub ttfb_ms: (f64, f64, f64),
    pub getmedia_ok: u64,
    pub getmedia_failed: u64,
    pub rss_before_kib: Option<u64>,
    pub rss_created_kib: Option<u64>,
    pub rss_streaming_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub errors: Vec<String>,
    pub fragment_bytes: usize,
}

#[derive(Default)]
struct CamResult {
    sent: u64,
    persisted: u64,
    errors: u64,
    bytes: u64,
    lat: Latencies,
    error: Option<String>,
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The head of a chunked PutMedia request with absolute fragment timecodes, as the
/// producer SDK sends it; the body follows as one chunk per write.
pub fn putmedia_head(host: &str, stream_name: &str, start_ms: u64) -> String {
    format!(
        "POST /putMedia HTTP/1.1\r\nHost: {host}\r\nx-amzn-stream-name: {stream_name}\r\n\
         x-amzn-fragment-timecode-type: ABSOLUTE\r\n\
         x-amzn-producer-start-timestamp: {}.{:03}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        start_ms / 1000,
        start_ms % 1000
    )
}

fn json_request(host: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn create_stream(cfg: &VideoConfig, name: &str) -> Result<(), BoxError> {
    let mut c = Conn::connect(cfg.addr).await?;
    let body = format!(
        "{{\"StreamName\":\"{name}\",\"DataRetentionInHours\":{}}}",
        cfg.retention_hours
    );
    let r = c
        .send(&json_request(&cfg.host, "/createStream", &body))
        .await?;
    let text = String::from_utf8_lossy(&r.body);
    if r.status == 200 || text.contains("ResourceInUse") {
        Ok(())
    } else {
        Err(format!("createStream {name}: HTTP {} {text}", r.status).into())
    }
}

/// Send time of each fragment's last byte, by Cluster Timecode.
type SentTimes = Arc<Mutex<HashMap<u64, Option<Instant>>>>;

async fn camera(
    cfg: Arc<VideoConfig>,
    clip: Arc<Clip>,
    name: String,
    start_at: Instant,
    stop_at: Instant,
) -> CamResult {
    let mut res = CamResult::default();
    if let Err(e) = camera_inner(&cfg, &clip, &name, start_at, stop_at, &mut res).await {
        res.error = Some(format!("{name}: {e}"));
    }
    res
}

async fn camera_inner(
    cfg: &VideoConfig,
    clip: &Clip,
    name: &str,
    start_at: Instant,
    stop_at: Instant,
    res: &mut CamResult,
) -> Result<(), BoxError> {
    let stream = TcpStream::connect(cfg.addr).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    tokio::time::sleep_until(start_at.into()).await;
    let base_ms = now_ms();
    wr.write_all(putmedia_head(&cfg.host, name, base_ms).as_bytes())
        .await?;

    let sent: SentTimes = Arc::new(Mutex::new(HashMap::new()));
    let done = Arc::new(AtomicBool::new(false));
    // Ack reader: parses the chunked response and its JSON lines.
    let reader_sent = sent.clone();
    let reader_done = done.clone();
    let reader = tokio::spawn(async move {
        let mut lat = Latencies::default();
        let (mut persisted, mut errors) = (0u64, 0u64);
        let mut buf: Vec<u8> = Vec::with_capacity(8192);
        let mut raw = vec![0u8; 8192];
        let mut in_body = false;
        let mut status_err: Option<String> = None;
        loop {
            let n = match rd.read(&mut raw).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buf.extend_from_slice(&raw[..n]);
            if !in_body {
                // Skip interim responses and headers.
                while let Some(i) = find(&buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_string();
                    buf.drain(..i + 4);
                    let code = head.split(' ').nth(1).unwrap_or("");
                    if code.starts_with('1') {
                        continue;
                    }
                    if code != "200" {
                        status_err = Some(format!(
                            "PutMedia HTTP {code}: {}",
                            String::from_utf8_lossy(&buf)
                        ));
                    }
                    in_body = true;
                    break;
                }
                if !in_body || status_err.is_some() {
                    if status_err.is_some() {
                        break;
                    }
                    continue;
                }
            }
            // Chunk framing is ignored: JSON lines are found by their braces.
            while let Some(s) = buf.iter().position(|&b| b == b'{') {
                let Some(e) = buf[s..].iter().position(|&b| b == b'}') else {
                    buf.drain(..s);
                    break;
                };
                let line = String::from_utf8_lossy(&buf[s..s + e + 1]).to_string();
                buf.drain(..s + e + 1);
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                match v["EventType"].as_str() {
                    Some("PERSISTED") => {
                        persisted += 1;
                        if let Some(tc) = v["FragmentTimecode"].as_u64() {
                            let t = reader_sent.lock().unwrap().remove(&tc);
                            if let Some(t) = t {
                                let d = t.map(|t| t.elapsed()).unwrap_or_default();
                                lat.record(d);
                            }
                        }
                    }
                    Some("ERROR") => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("ERROR ack: {line}");
                        }
                    }
                    _ => {}
                }
            }
            if reader_done.load(Ordering::Relaxed) && reader_sent.lock().unwrap().is_empty() {
                break;
            }
        }
        (lat, persisted, errors, status_err)
    });

    let pad_per_frag = (cfg.pad_kbps as usize * 1000 / 8).saturating_sub(clip.mean_cluster_bytes());
    let mut k = 0usize;
    let mut write_err = None;
    loop {
        let due = start_at + Duration::from_secs(k as u64);
        if due >= stop_at {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let tc = base_ms + 1000 * k as u64;
        let frag = clip.fragment(k, tc, pad_per_frag);
        let mut chunk = Vec::with_capacity(frag.len() + clip.header.len() + 24);
        let payload_len = frag.len() + if k == 0 { clip.header.len() } else { 0 };
        chunk.extend_from_slice(format!("{payload_len:x}\r\n").as_bytes());
        if k == 0 {
            chunk.extend_from_slice(&clip.header);
        }
        chunk.extend_from_slice(&frag);
        chunk.extend_from_slice(b"\r\n");
        sent.lock().unwrap().insert(tc, None);
        if let Err(e) = wr.write_all(&chunk).await {
            write_err = Some(e);
            break;
        }
        if let Some(slot) = sent.lock().unwrap().get_mut(&tc) {
            *slot = Some(Instant::now());
        }
        res.sent += 1;
        res.bytes += payload_len as u64;
        k += 1;
    }
    if write_err.is_none() {
        let _ = wr.write_all(b"0\r\n\r\n").await;
    }
    done.store(true, Ordering::Relaxed);
    let (lat, persisted, errors, status_err) = match tokio::time::timeout(cfg.grace, reader).await {
        Ok(Ok(r)) => r,
        _ => (
            Latencies::default(),
            0,
            0,
            Some("ack reader timed out".into()),
        ),
    };
    res.lat = lat;
    res.persisted = persisted;
    res.errors = errors;
    if let Some(e) = status_err {
        return Err(e.into());
    }
    if let Some(e) = write_err {
        return Err(format!("write: {e}").into());
    }
    Ok(())
}

/// One GetMedia request from EARLIEST: time from writing the request to the first
/// byte of the response body.
async fn getmedia_ttfb(cfg: &VideoConfig, name: &str) -> Result<Duration, BoxError> {
    let body = format!(
        "{{\"StreamName\":\"{name}\",\"StartSelector\":{{\"StartSelectorType\":\"EARLIEST\"}}}}"
    );
    first_body_byte(cfg.addr, &json_request(&cfg.host, "/getMedia", &body)).await
}

/// Sends `req` (a GetMedia request) on a new connection: time from writing it to the
/// first byte of the (chunked) response body; the connection is dropped then.
pub(crate) async fn first_body_byte(addr: SocketAddr, req: &[u8]) -> Result<Duration, BoxError> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let t0 = Instant::now();
    s.write_all(req).await?;
    let mut buf = Vec::with_capacity(4096);
    let mut raw = vec![0u8; 4096];
    loop {
        let n = s.read(&mut raw).await?;
        if n == 0 {
            return Err("GetMedia: connection closed before the body".into());
        }
        buf.extend_from_slice(&raw[..n]);
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            let code = String::from_utf8_lossy(&buf[..i])
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .to_string();
            if code != "200" {
                return Err(format!("GetMedia HTTP {code}").into());
            }
            // A chunk-size line then data: wait for one data byte after it.
            if let Some(j) = find(&buf[i + 4..], b"\r\n")
                && buf.len() > i + 4 + j + 2
            {
                return Ok(t0.elapsed());
            }
        }
    }
}

fn rss(pid: Option<u32>) -> Option<u64> {
    pid.and_then(|p| read_status_kib(p, "VmRSS:"))
}

pub async fn run(cfg: VideoConfig, clip: Clip) -> Result<VideoReport, BoxError> {
    let cfg = Arc::new(cfg);
    let clip = Arc::new(clip);
    let mut report = VideoReport {
        cameras: cfg.cameras,
        fragment_bytes: clip
            .mean_cluster_bytes()
            .max((cfg.pad_kbps as usize) * 1000 / 8),
        ..Default::default()
    };
    report.rss_before_kib = rss(cfg.server_pid);
    let names: Vec<String> = (0..cfg.cameras)
        .map(|i| format!("{}{i}", cfg.stream_prefix))
        .collect();
    eprintln!("creating {} streams", names.len());
    for chunk in names.chunks(16) {
        let mut tasks = Vec::new();
        for n in chunk {
            let (cfg, n) = (cfg.clone(), n.clone());
            tasks.push(tokio::spawn(async move { create_stream(&cfg, &n).await }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    report.rss_created_kib = rss(cfg.server_pid);

    // Cameras start spread over --ramp so fragments do not all land at once.
    let t0 = Instant::now() + Duration::from_millis(200);
    let stop_at = t0 + cfg.ramp + cfg.duration;
    let mut cams = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let offset = cfg.ramp.mul_f64(i as f64 / cfg.cameras.max(1) as f64);
        cams.push(tokio::spawn(camera(
            cfg.clone(),
            clip.clone(),
            n.clone(),
            t0 + offset,
            stop_at,
        )));
    }
    eprintln!(
        "{} cameras streaming for {:?} (+{:?} ramp), {} GetMedia readers",
        cfg.cameras, cfg.duration, cfg.ramp, cfg.readers
    );

    // GetMedia readers and RSS sampling while the cameras stream.
    let ttfb = Arc::new(Mutex::new(Latencies::default()));
    let gm_ok = Arc::new(AtomicU64::new(0));
    let gm_fail = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..cfg.readers {
        let (cfg, names, ttfb, ok, fail) = (
            cfg.clone(),
            names.clone(),
            ttfb.clone(),
            gm_ok.clone(),
            gm_fail.clone(),
        );
        readers.push(tokio::spawn(async move {
            let mut rng = Rng::new(0x5eed + r as u64);
            // First request once every camera has sent a fragment.
            let mut next = t0 + cfg.ramp + Duration::from_millis(1500);
            while next + Duration::from_secs(2) < stop_at {
                tokio::time::sleep_until(next.into()).await;
                let name = &names[(rng.next_u64() % names.len() as u64) as usize];
                match tokio::time::timeout(Duration::from_secs(5), getmedia_ttfb(&cfg, name)).await
                {
                    Ok(Ok(d)) => {
                        ttfb.lock().unwrap().record(d);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        if fail.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("GetMedia {name}: {e}");
                        }
                    }
                    Err(_) => {
                        fail.fetch_add(1, Ordering::Relaxed);
                    }
                }
                next += cfg.reader_interval;
            }
        }));
    }
    // RSS while streaming: the median of samples taken once per second after the ramp.
    let mut samples = Vec::new();
    let mut t = t0 + cfg.ramp + Duration::from_secs(2);
    while t + Duration::from_millis(500) < stop_at {
        tokio::time::sleep_until(t.into()).await;
        if let Some(v) = rss(cfg.server_pid) {
            samples.push(v);
        }
        t += Duration::from_secs(1);
    }
    samples.sort_unstable();
    report.rss_streaming_kib = samples.get(samples.len() / 2).copied();

    let mut all = Latencies::default();
    for c in cams {
        let r = c.await.map_err(|e| e.to_string())?;
        report.fragments_sent += r.sent;
        report.persisted += r.persisted;
        report.error_acks += r.errors;
        report.bytes_sent += r.bytes;
        all.merge(r.lat);
        if let Some(e) = r.error {
            report.cameras_failed += 1;
            if report.errors.len() < 5 {
                report.errors.push(e);
            }
        }
    }
    for r in readers {
        let _ = r.await;
    }
    report.elapsed_secs = t0.elapsed().as_secs_f64();
    report.persisted_ms = all.summary();
    report.ttfb_ms = ttfb.lock().unwrap().summary();
    report.getmedia_ok = gm_ok.load(Ordering::Relaxed);
    report.getmedia_failed = gm_fail.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    report.rss_after_kib = rss(cfg.server_pid);
    Ok(report)
}

pub fn table(r: &VideoReport, cfg_duration: f64) -> String {
    let mut s = String::new();
    let mbps = r.bytes_sent as f64 / cfg_duration.max(1e-9) / 1e6;
    let per_cam_kbps = if r.cameras > 0 {
        r.bytes_sent as f64 * 8.0 / 1000.0 / cfg_duration.max(1e-9) / r.cameras as f64
    } else {
        0.0
    };
    let kib = |v: Option<u64>| v.map(|v| format!("{v} KiB")).unwrap_or_else(|| "-".into());
    let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if r.cameras > 0 => {
            format!("{:.1} KiB", (a as f64 - b as f64) / r.cameras as f64)
        }
        _ => "-".into(),
    };
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "{:<38} {} ({})",
        "cameras (failed)", r.cameras, r.cameras_failed
    );
    let _ = writeln!(s, "{:<38} {}", "fragment bytes (mean)", r.fragment_bytes);
    let _ = writeln!(
        s,
        "{:<38} {} / {}",
        "fragments sent / PERSISTED", r.fragments_sent, r.persisted
    );
    let _ = writeln!(s, "{:<38} {}", "ERROR acks", r.error_acks);
    let _ = writeln!(
        s,
        "{:<38} {:.3} MB/s total, {:.0} kbit/s per camera",
        "achieved upload", mbps, per_cam_kbps
    );
    let (p50, p99, max) = r.persisted_ms;
    let _ = writeln!(
        s,
        "{:<38} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        "last byte -> PERSISTED", p50, p99, max
    );
    let (p50, p99, max) = r.ttfb_ms;
    let _ = writeln!(
        s,
        "{:<38} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} ok, {} failed)",
        "GetMedia EARLIEST TTFB", p50, p99, max, r.getmedia_ok, r.getmedia_failed
    );
    let _ = writeln!(s, "{:<38} {}", "server RSS before", kib(r.rss_before_kib));
    let _ = writeln!(
        s,
        "{:<38} {} ({} per stream)",
        "server RSS streams created (idle)",
        kib(r.rss_created_kib),
        per(r.rss_created_kib, r.rss_before_kib)
    );
    let _ = writeln!(
        s,
        "{:<38} {} ({} per camera)",
        "server RSS cameras streaming (median)",
        kib(r.rss_streaming_kib),
        per(r.rss_streaming_kib, r.rss_before_kib)
    );
    let _ = writeln!(
        s,
        "{:<38} {}",
        "server RSS after disconnect",
        kib(r.rss_after_kib)
    );
    for e in &r.errors {
        let _ = writeln!(s, "error: {e}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_the_sample_clip_and_builds_known_size_fragments() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../media-samples/h264-1s-gop.kvs.mkv"
        );
        let Ok(data) = std::fs::read(path) else {
            return;
        };
        let clip = Clip::parse(&data).unwrap();
        assert!(clip.clusters.len() >= 2);
        let f = clip.fragment(0, 1_700_000_000_000, 1000);
        assert_eq!(&f[..4], &CLUSTER_ID);
        let (size, len, unknown) = vint(&f[4..]).unwrap();
        assert_eq!((len, unknown), (8, false));
        assert_eq!(size as usize, f.len() - 12);
        assert_eq!(&f[12..14], &[0xE7, 0x88]);
        assert_eq!(
            u64::from_be_bytes(f[14..22].try_into().unwrap()),
            1_700_000_000_000
        );
    }
}
