//! `freshet-bench playback`: HLS playback of Kinesis Video streams under load.
//!
//! Four phases against one endpoint, each on its own stream (`<prefix>live`,
//! `<prefix>vod`, `<prefix>clip`):
//!
//! 1. **latency**: one producer pushes one fragment per second (a Cluster of the
//!    sample clip re-timed with increasing ABSOLUTE timecodes, see
//!    [`crate::video::Clip`]) over one PutMedia connection, while one watcher polls
//!    the LIVE media playlist every `--poll-interval-ms` on a keep-alive connection.
//!    Per fragment: time first listed − time its PERSISTED ack was parsed.
//! 2. **live**: `--players` simulated hls.js players join the same LIVE stream
//!    (spread over `--player-ramp`): each gets its own session URL, fetches the
//!    master playlist, then loops fetching the media playlist every target
//!    duration, the init segment once and every new media segment (at start, the
//!    newest `--start-segments`). The watcher keeps running, so phase 1's figure
//!    is also measured under this load.
//! 3. **cold**: `--cold-fragments` fragments are pushed as fast as possible, then
//!    `--cold-players` workers fetch them through one ON_DEMAND session as fast as
//!    possible, in a shuffled order, cycling over the pool. With the default pool
//!    (larger than the server's 128 MiB segment cache, which evicts in insertion
//!    order) every request is a cache miss: each one reads and remuxes a fragment.
//! 4. **clip**: `--clip-seconds` one-second fragments are pushed as fast as
//!    possible, then GetClip (SERVER_TIMESTAMP) over a window of that many seconds
//!    starting just before the push is timed `--clip-repeats` times. If phase 3
//!    ran, GetClip (PRODUCER_TIMESTAMP) over the same number of seconds from the
//!    middle of its (much longer) stream is timed as well.
//!
//! With `--server-pid`, the server's CPU time per phase (`/proc/PID/stat`) and its
//! VmRSS (sampled every 100 ms) and VmHWM are reported.

use crate::http::{Conn, Response, find};
use crate::rng::Rng;
use crate::stats::{Latencies, RssSampler, note_error, process_cpu_secs, read_status_kib};
use crate::video::{Clip, now_ms, putmedia_head};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Everything `playback` needs; built from the command line in `main.rs`.
pub struct PlaybackConfig {
    pub addr: SocketAddr,
    pub host: String,
    pub endpoint: String,
    pub players: usize,
    pub player_ramp: Duration,
    pub start_segments: usize,
    pub live_duration: Duration,
    pub latency_duration: Duration,
    pub poll_interval: Duration,
    pub cold_players: usize,
    pub cold_duration: Duration,
    pub cold_fragments: usize,
    pub clip_seconds: usize,
    pub clip_repeats: usize,
    pub prefix: String,
    pub retention_hours: u32,
    pub server_pid: Option<u32>,
    pub timeout: Duration,
    pub skip_latency: bool,
    pub skip_live: bool,
    pub skip_cold: bool,
    pub skip_clip: bool,
}

/// p50 / p99 / max of a set of latencies, in milliseconds.
#[derive(Serialize, Default, Debug, Clone)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    fn of(l: &mut Latencies) -> Summary {
        let (p50_ms, p99_ms, max_ms) = l.summary();
        Summary {
            count: l.micros.len() as u64,
            p50_ms,
            p99_ms,
            max_ms,
        }
    }
}

/// PERSISTED ack → first listed in the LIVE media playlist, over one window.
#[derive(Serialize, Default, Debug, Clone)]
pub struct DelayReport {
    /// What else was running (e.g. "quiet", "100 players").
    pub load: String,
    pub window_secs: f64,
    /// Fragments whose PERSISTED ack arrived in the window.
    pub fragments: u64,
    /// Of those, never seen in the playlist before the watcher stopped.
    pub not_listed: u64,
    /// Of those, listed in a playlist that arrived before the ack did (negative delay).
    pub listed_before_ack: u64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The watcher's polling interval (a bound on the resolution).
    pub poll_interval_ms: f64,
    pub polls: u64,
    pub poll_failures: u64,
    /// Window length / polls: the achieved time between two polls.
    pub mean_poll_cycle_ms: f64,
    /// Request → full answer of one playlist poll.
    pub poll_latency: Summary,
    pub server_cpu_secs: Option<f64>,
    pub client_cpu_secs: Option<f64>,
    pub server_peak_rss_kib: Option<u64>,
}

/// N players on a LIVE session.
#[derive(Serialize, Default, Debug, Clone)]
pub struct LiveReport {
    pub players: usize,
    pub players_failed: usize,
    pub elapsed_secs: f64,
    pub segments: u64,
    pub segment_bytes: u64,
    pub segments_per_sec: f64,
    pub mb_per_sec: f64,
    pub segment_latency: Summary,
    pub playlist_latency: Summary,
    pub session_url_latency: Summary,
    pub init_latency: Summary,
    /// Failed requests (transport errors, timeouts, non-200, malformed bodies).
    pub errors: u64,
    /// Segments that left the playlist window before a player fetched them.
    pub skipped_segments: u64,
    /// Times a player saw the `#EXT-X-MAP` URI differ from its previous playlist.
    pub map_uri_changes: u64,
    pub server_cpu_secs: Option<f64>,
    pub client_cpu_secs: Option<f64>,
    pub server_peak_rss_kib: Option<u64>,
    pub error_samples: Vec<String>,
}

/// Requests of one kind in the cold phase.
#[derive(Serialize, Default, Debug, Clone)]
pub struct ThroughputRow {
    pub segments: u64,
    pub bytes: u64,
    pub segments_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency: Summary,
}

/// Distinct stored segments fetched as fast as possible through an ON_DEMAND session.
#[derive(Serialize, Default, Debug, Clone)]
pub struct ColdReport {
    pub players: usize,
    pub pool_fragments: usize,
    pub pool_bytes: u64,
    /// First write → last PERSISTED ack of the pool push.
    pub push_secs: f64,
    /// Time to fetch the ON_DEMAND media playlist (up to 5000 entries).
    pub vod_playlist_ms: f64,
    pub vod_playlist_entries: usize,
    pub elapsed_secs: f64,
    /// Every request: each segment's first touch and later ones.
    pub all: ThroughputRow,
    /// First touch of each segment only (rates over the first pass).
    pub first_touch: ThroughputRow,
    /// Seconds until the last first touch completed (the first pass).
    pub first_touch_secs: f64,
    /// Passes over the pool (requests / pool size).
    pub passes: f64,
    pub errors: u64,
    pub server_cpu_secs: Option<f64>,
    pub client_cpu_secs: Option<f64>,
    pub server_peak_rss_kib: Option<u64>,
    pub error_samples: Vec<String>,
}

/// Repeated GetClip calls with one selector.
#[derive(Serialize, Default, Debug, Clone)]
pub struct ClipTimes {
    /// Which stream and selector.
    pub what: String,
    /// Fragments stored in the stream.
    pub stream_fragments: usize,
    pub selector: String,
    pub range_secs: f64,
    pub mp4_bytes: u64,
    /// `mvhd` duration of the returned MP4.
    pub mp4_duration_secs: Option<f64>,
    pub times_ms: Vec<f64>,
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
    pub errors: Vec<String>,
}

/// GetClip over a range of fragments pushed as fast as possible.
#[derive(Serialize, Default, Debug, Clone)]
pub struct ClipReport {
    pub fragments: usize,
    pub push_secs: f64,
    /// The range over the freshly pushed stream (SERVER_TIMESTAMP).
    pub fresh: ClipTimes,
    /// The same length from the middle of the cold phase's stream (PRODUCER_TIMESTAMP).
    pub deep: Option<ClipTimes>,
}

/// Everything one `freshet-bench playback` run measured.
#[derive(Serialize, Default, Debug, Clone)]
pub struct PlaybackReport {
    pub endpoint: String,
    pub fragment_bytes_mean: usize,
    pub latency_quiet: Option<DelayReport>,
    pub latency_loaded: Option<DelayReport>,
    pub live: Option<LiveReport>,
    pub cold: Option<ColdReport>,
    pub clip: Option<ClipReport>,
    pub server_pid: Option<u32>,
    /// Lifetime peak RSS of the server (VmHWM) at the end of the run.
    pub server_peak_rss_kib: Option<u64>,
}

// ---- HTTP plumbing -----------------------------------------------------------------

fn get_request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

fn post_json(host: &str, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// A keep-alive connection that reconnects after errors and `Connection: close`.
struct Client {
    addr: SocketAddr,
    conn: Option<Conn>,
    timeout: Duration,
}

impl Client {
    fn new(addr: SocketAddr, timeout: Duration) -> Client {
        Client {
            addr,
            conn: None,
            timeout,
        }
    }

    async fn call(&mut self, req: &[u8]) -> Result<Response, String> {
        if self.conn.is_none() {
            let c = tokio::time::timeout(self.timeout, Conn::connect(self.addr))
                .await
                .map_err(|_| "connect timed out".to_string())?
                .map_err(|e| format!("connect: {e}"))?;
            self.conn = Some(c);
        }
        let conn = self.conn.as_mut().expect("connected above");
        match tokio::time::timeout(self.timeout, conn.send(req)).await {
            Ok(Ok(r)) => {
                if r.close {
                    self.conn = None;
                }
                Ok(r)
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e.to_string())
            }
            Err(_) => {
                self.conn = None;
                Err("timed out".into())
            }
        }
    }

    /// One request that must answer 200: its body and the time it took.
    async fn ok(&mut self, req: &[u8], what: &str) -> Result<(Vec<u8>, Duration), String> {
        let t = Instant::now();
        let r = self.call(req).await.map_err(|e| format!("{what}: {e}"))?;
        let d = t.elapsed();
        if r.status != 200 {
            return Err(format!("{what}: HTTP {} {}", r.status, snippet(&r.body)));
        }
        Ok((r.body, d))
    }
}

async fn create_stream(cfg: &PlaybackConfig, name: &str) -> Result<(), BoxError> {
    let mut c = Client::new(cfg.addr, cfg.timeout);
    let body = format!(
        "{{\"StreamName\":\"{name}\",\"DataRetentionInHours\":{}}}",
        cfg.retention_hours
    );
    let r = c
        .call(&post_json(&cfg.host, "/createStream", &body))
        .await
        .map_err(|e| format!("createStream {name}: {e}"))?;
    let text = String::from_utf8_lossy(&r.body);
    if r.status == 200 || text.contains("ResourceInUse") {
        Ok(())
    } else {
        Err(format!("createStream {name}: HTTP {} {text}", r.status).into())
    }
}

// ---- HLS ---------------------------------------------------------------------------

/// An HLS session: the directory its relative URIs resolve against and the
/// master playlist's path (with the `SessionToken` query).
#[derive(Clone, Debug)]
struct HlsSession {
    dir: String,
    master: String,
    token_query: String,
}

impl HlsSession {
    fn resolve(&self, uri: &str) -> String {
        if uri.starts_with('/') {
            uri.to_string()
        } else {
            format!("{}{uri}", self.dir)
        }
    }

    fn media_playlist(&self) -> String {
        format!("{}getHLSMediaPlaylist.m3u8?{}", self.dir, self.token_query)
    }

    fn segment(&self, fragment_number: &str) -> String {
        format!(
            "{}getMP4MediaFragment.mp4?{}&FragmentNumber={fragment_number}",
            self.dir, self.token_query
        )
    }
}

/// `POST /getHLSStreamingSessionURL` with `body`; the session and the call's duration.
async fn hls_session(
    client: &mut Client,
    host: &str,
    body: &Value,
) -> Result<(HlsSession, Duration), String> {
    let req = post_json(host, "/getHLSStreamingSessionURL", &body.to_string());
    let (answer, took) = client.ok(&req, "GetHLSStreamingSessionURL").await?;
    let v: Value = serde_json::from_slice(&answer)
        .map_err(|e| format!("GetHLSStreamingSessionURL answer: {e}"))?;
    let url = v["HLSStreamingSessionURL"]
        .as_str()
        .ok_or("GetHLSStreamingSessionURL: no HLSStreamingSessionURL")?;
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let path = &rest[rest.find('/').ok_or("session URL has no path")?..];
    let path_only = &path[..path.find('?').unwrap_or(path.len())];
    let dir = &path_only[..=path_only.rfind('/').unwrap_or(0)];
    let token_query = path
        .find("SessionToken=")
        .map(|i| {
            let t = &path[i..];
            t[..t.find('&').unwrap_or(t.len())].to_string()
        })
        .ok_or("session URL has no SessionToken")?;
    Ok((
        HlsSession {
            dir: dir.to_string(),
            master: path.to_string(),
            token_query,
        },
        took,
    ))
}

/// The parts of a media playlist a player uses.
#[derive(Default, Debug)]
struct Playlist {
    target_secs: f64,
    map: Option<String>,
    segments: Vec<String>,
}

fn parse_playlist(text: &str) -> Playlist {
    let mut p = Playlist {
        target_secs: 1.0,
        ..Default::default()
    };
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_secs = v.parse().unwrap_or(1.0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MAP:") {
            if let Some(i) = v.find("URI=\"") {
                let u = &v[i + 5..];
                p.map = Some(u[..u.find('"').unwrap_or(u.len())].to_string());
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            p.segments.push(line.to_string());
        }
    }
    p
}

/// The `FragmentNumber` parameter of a segment URI.
fn fragment_param(uri: &str) -> Option<&str> {
    let i = uri.find("FragmentNumber=")?;
    let v = &uri[i + "FragmentNumber=".len()..];
    Some(&v[..v.find('&').unwrap_or(v.len())])
}

/// Fragment numbers are fixed-width decimal strings: order by (length, text).
fn number_key(n: &str) -> (usize, &str) {
    (n.len(), n)
}

/// The log offset inside a Freshet fragment number (`91` + 20-digit stream id +
/// 20-digit offset), for counting skipped segments.
fn offset_of(n: &str) -> Option<u64> {
    (n.len() == 42).then(|| n[22..].parse().ok()).flatten()
}

fn mp4_box_at(body: &[u8], at: usize, kind: &[u8; 4]) -> bool {
    body.len() >= at + 8 && &body[at + 4..at + 8] == kind
}

// ---- PutMedia producer -------------------------------------------------------------

/// One PERSISTED ack: the fragment number and when the ack was parsed.
#[derive(Clone, Debug)]
struct Ack {
    number: String,
    at: Instant,
}

/// One PutMedia connection sending re-timed clip Clusters (see `video::Clip`).
struct Producer {
    wr: OwnedWriteHalf,
    base_ms: u64,
    sent: usize,
    bytes: u64,
    acks: Arc<Mutex<Vec<Ack>>>,
    error_acks: Arc<AtomicU64>,
    reader: JoinHandle<Option<String>>,
}

/// Reads the PutMedia response: skips interim responses and headers, then finds the
/// JSON ack lines by their braces (chunk framing is ignored).
async fn read_acks(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    acks: Arc<Mutex<Vec<Ack>>>,
    error_acks: Arc<AtomicU64>,
) -> Option<String> {
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut raw = vec![0u8; 16 * 1024];
    let mut in_body = false;
    loop {
        let n = match rd.read(&mut raw).await {
            Ok(0) => return None,
            Err(e) => return Some(format!("PutMedia read: {e}")),
            Ok(n) => n,
        };
        buf.extend_from_slice(&raw[..n]);
        while !in_body {
            let Some(i) = find(&buf, b"\r\n\r\n") else {
                break;
            };
            let head = String::from_utf8_lossy(&buf[..i]).into_owned();
            buf.drain(..i + 4);
            let code = head.split(' ').nth(1).unwrap_or("");
            if code.starts_with('1') {
                continue;
            }
            if code != "200" {
                return Some(format!("PutMedia HTTP {code}: {}", snippet(&buf)));
            }
            in_body = true;
        }
        if !in_body {
            continue;
        }
        let mut consumed = 0;
        while let Some(s) = buf[consumed..].iter().position(|&b| b == b'{') {
            let s = consumed + s;
            let Some(e) = buf[s..].iter().position(|&b| b == b'}') else {
                consumed = s;
                break;
            };
            let line = &buf[s..s + e + 1];
            consumed = s + e + 1;
            let Ok(v) = serde_json::from_slice::<Value>(line) else {
                continue;
            };
            match v["EventType"].as_str() {
                Some("PERSISTED") => {
                    let at = Instant::now();
                    if let Some(number) = v["FragmentNumber"].as_str() {
                        acks.lock().unwrap().push(Ack {
                            number: number.to_string(),
                            at,
                        });
                    }
                }
                Some("ERROR") => {
                    let first = error_acks.fetch_add(1, Ordering::Relaxed) == 0;
                    if first {
                        eprintln!("ERROR ack: {}", String::from_utf8_lossy(line));
                    }
                }
                _ => {}
            }
        }
        if consumed == 0 && !buf.contains(&b'{') {
            consumed = buf.len();
        }
        buf.drain(..consumed.min(buf.len()));
    }
}

impl Producer {
    async fn connect(cfg: &PlaybackConfig, stream_name: &str) -> Result<Producer, BoxError> {
        let s = TcpStream::connect(cfg.addr).await?;
        s.set_nodelay(true)?;
        let (rd, mut wr) = s.into_split();
        let base_ms = now_ms();
        wr.write_all(putmedia_head(&cfg.host, stream_name, base_ms).as_bytes())
            .await?;
        let acks = Arc::new(Mutex::new(Vec::new()));
        let error_acks = Arc::new(AtomicU64::new(0));
        let reader = tokio::spawn(read_acks(rd, acks.clone(), error_acks.clone()));
        Ok(Producer {
            wr,
            base_ms,
            sent: 0,
            bytes: 0,
            acks,
            error_acks,
            reader,
        })
    }

    /// Sends the next fragment (Timecode = start + 1000 ms × index) as one chunk.
    async fn send(&mut self, clip: &Clip) -> Result<(), BoxError> {
        let k = self.sent;
        let frag = clip.fragment(k, self.base_ms + 1000 * k as u64, 0);
        let payload = frag.len() + if k == 0 { clip.header.len() } else { 0 };
        let mut chunk = Vec::with_capacity(payload + 24);
        chunk.extend_from_slice(format!("{payload:x}\r\n").as_bytes());
        if k == 0 {
            chunk.extend_from_slice(&clip.header);
        }
        chunk.extend_from_slice(&frag);
        chunk.extend_from_slice(b"\r\n");
        self.wr.write_all(&chunk).await?;
        self.sent += 1;
        self.bytes += frag.len() as u64;
        Ok(())
    }

    fn persisted(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    /// Ends the body and waits (up to `grace`) for every fragment's PERSISTED ack.
    async fn finish(mut self, grace: Duration) -> Result<Vec<Ack>, BoxError> {
        let _ = self.wr.write_all(b"0\r\n\r\n").await;
        let deadline = Instant::now() + grace;
        while self.persisted() < self.sent && Instant::now() < deadline {
            if self.reader.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let status = if self.reader.is_finished() {
            (&mut self.reader).await.ok().flatten()
        } else {
            self.reader.abort();
            None
        };
        let acks = std::mem::take(&mut *self.acks.lock().unwrap());
        let errors = self.error_acks.load(Ordering::Relaxed);
        if acks.len() < self.sent {
            return Err(format!(
                "{} of {} fragments PERSISTED ({errors} ERROR acks){}",
                acks.len(),
                self.sent,
                status.map(|s| format!("; {s}")).unwrap_or_default()
            )
            .into());
        }
        Ok(acks)
    }
}

/// The result of [`push_fast`].
struct Pushed {
    acks: Vec<Ack>,
    bytes: u64,
    /// First write → last PERSISTED ack.
    secs: f64,
    /// Producer timestamp (ms) of the first fragment; fragment k is at + 1000 k.
    base_ms: u64,
}

/// Pushes `n` fragments back to back over one PutMedia connection.
async fn push_fast(
    cfg: &PlaybackConfig,
    clip: &Clip,
    stream_name: &str,
    n: usize,
) -> Result<Pushed, BoxError> {
    let mut p = Producer::connect(cfg, stream_name).await?;
    let base_ms = p.base_ms;
    let t0 = Instant::now();
    for _ in 0..n {
        p.send(clip).await?;
    }
    let bytes = p.bytes;
    let acks = p.finish(Duration::from_secs(120)).await?;
    let last = acks.iter().map(|a| a.at).max().unwrap_or(t0);
    Ok(Pushed {
        acks,
        bytes,
        secs: last.duration_since(t0).as_secs_f64(),
        base_ms,
    })
}

// ---- phase 1 + 2: watcher and players on a LIVE stream ------------------------------

/// One playlist poll of the watcher: when it was answered, how long it took, success.
struct Poll {
    at: Instant,
    micros: u64,
    ok: bool,
}

/// Polls the media playlist every `interval` until `stop_at`; first-seen times of
/// fragment numbers and every poll.
async fn watcher(
    addr: SocketAddr,
    host: String,
    path: String,
    interval: Duration,
    timeout: Duration,
    stop_at: Instant,
) -> (HashMap<String, Instant>, Vec<Poll>) {
    let mut client = Client::new(addr, timeout);
    let req = get_request(&host, &path);
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut polls = Vec::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < stop_at {
        tick.tick().await;
        let t = Instant::now();
        match client.ok(&req, "media playlist").await {
            Ok((body, took)) => {
                let at = Instant::now();
                let text = String::from_utf8_lossy(&body);
                for uri in parse_playlist(&text).segments {
                    if let Some(n) = fragment_param(&uri)
                        && !seen.contains_key(n)
                    {
                        seen.insert(n.to_string(), at);
                    }
                }
                polls.push(Poll {
                    at,
                    micros: took.as_micros() as u64,
                    ok: true,
                });
            }
            Err(e) => {
                if polls.iter().all(|p| p.ok) {
                    eprintln!("watcher: {e}");
                }
                polls.push(Poll {
                    at: Instant::now(),
                    micros: t.elapsed().as_micros() as u64,
                    ok: false,
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (seen, polls)
}

#[derive(Default)]
struct PlayerStats {
    segment: Latencies,
    playlist: Latencies,
    session: Latencies,
    init: Latencies,
    segments: u64,
    bytes: u64,
    errors: u64,
    skipped: u64,
    map_changes: u64,
    failed: bool,
    error_samples: Vec<String>,
}

impl PlayerStats {
    fn merge(&mut self, o: PlayerStats) {
        self.segment.merge(o.segment);
        self.playlist.merge(o.playlist);
        self.session.merge(o.session);
        self.init.merge(o.init);
        self.segments += o.segments;
        self.bytes += o.bytes;
        self.errors += o.errors;
        self.skipped += o.skipped;
        self.map_changes += o.map_changes;
        for e in o.error_samples {
            note_error(&mut self.error_samples, e);
        }
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        note_error(&mut self.error_samples, e);
    }
}

struct PlayerCtx {
    addr: SocketAddr,
    host: String,
    stream_name: String,
    start_segments: usize,
    timeout: Duration,
}

/// One hls.js-like LIVE player from `start_at` to `stop_at`.
async fn player(ctx: Arc<PlayerCtx>, start_at: Instant, stop_at: Instant) -> PlayerStats {
    let mut st = PlayerStats::default();
    tokio::time::sleep_until(start_at.into()).await;
    let mut c = Client::new(ctx.addr, ctx.timeout);
    let body = json!({"StreamName": ctx.stream_name, "PlaybackMode": "LIVE"});
    // Session URL and master playlist, retried until they work or time is up.
    let (session, media_path) = loop {
        if Instant::now() >= stop_at {
            st.failed = true;
            return st;
        }
        let attempt = async {
            let (s, took) = hls_session(&mut c, &ctx.host, &body).await?;
            st.session.record(took);
            let (master, took) = c
                .ok(&get_request(&ctx.host, &s.master), "master playlist")
                .await?;
            st.playlist.record(took);
            let text = String::from_utf8_lossy(&master);
            let variant = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .ok_or("master playlist lists no variant")?;
            let media = s.resolve(variant);
            Ok::<_, String>((s, media))
        };
        match attempt.await {
            Ok(v) => break v,
            Err(e) => {
                st.error(e);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let playlist_req = get_request(&ctx.host, &media_path);
    let mut last: Option<String> = None;
    let mut map: Option<String> = None;
    let mut have_init = false;
    while Instant::now() < stop_at {
        let t = Instant::now();
        let mut target = Duration::from_secs(1);
        match c.ok(&playlist_req, "media playlist").await {
            Err(e) => st.error(e),
            Ok((body, took)) => {
                st.playlist.record(took);
                let p = parse_playlist(&String::from_utf8_lossy(&body));
                target = Duration::from_secs_f64(p.target_secs.clamp(0.5, 10.0));
                if map.is_some() && p.map.is_some() && map != p.map {
                    st.map_changes += 1;
                }
                if p.map.is_some() {
                    map.clone_from(&p.map);
                }
                if !have_init && let Some(uri) = &map {
                    let req = get_request(&ctx.host, &session.resolve(uri));
                    match c.ok(&req, "init segment").await {
                        Ok((b, took)) if mp4_box_at(&b, 0, b"ftyp") => {
                            st.init.record(took);
                            st.bytes += b.len() as u64;
                            have_init = true;
                        }
                        Ok(_) => st.error("init segment: no ftyp box".into()),
                        Err(e) => st.error(e),
                    }
                }
                let listed: Vec<(&str, &String)> = p
                    .segments
                    .iter()
                    .filter_map(|u| fragment_param(u).map(|n| (n, u)))
                    .collect();
                let new: Vec<(&str, &String)> = match &last {
                    None => listed[listed.len().saturating_sub(ctx.start_segments)..].to_vec(),
                    Some(l) => {
                        let newer: Vec<_> = listed
                            .iter()
                            .copied()
                            .filter(|(n, _)| number_key(n) > number_key(l))
                            .collect();
                        if newer.len() == listed.len()
                            && let (Some(a), Some(b)) =
                                (offset_of(l), newer.first().and_then(|(n, _)| offset_of(n)))
                        {
                            st.skipped += b.saturating_sub(a + 1);
                        }
                        newer
                    }
                };
                for (n, uri) in new {
                    if Instant::now() >= stop_at {
                        break;
                    }
                    let req = get_request(&ctx.host, &session.resolve(uri));
                    match c.ok(&req, "media segment").await {
                        Ok((b, took))
                            if mp4_box_at(&b, 0, b"styp") || mp4_box_at(&b, 0, b"moof") =>
                        {
                            st.segment.record(took);
                            st.segments += 1;
                            st.bytes += b.len() as u64;
                        }
                        Ok(_) => st.error("media segment: neither styp nor moof".into()),
                        Err(e) => st.error(e),
                    }
                    last = Some(n.to_string());
                }
            }
        }
        let next = (t + target).min(stop_at);
        tokio::time::sleep_until(next.into()).await;
    }
    st
}

/// Signed PERSISTED → listed delays of the acks in `[from, to)`.
fn delays(
    acks: &[Ack],
    seen: &HashMap<String, Instant>,
    from: Instant,
    to: Instant,
) -> (Vec<i64>, u64) {
    let mut out = Vec::new();
    let mut missing = 0;
    for a in acks.iter().filter(|a| a.at >= from && a.at < to) {
        match seen.get(&a.number) {
            Some(&s) if s >= a.at => out.push(s.duration_since(a.at).as_micros() as i64),
            Some(&s) => out.push(-(a.at.duration_since(s).as_micros() as i64)),
            None => missing += 1,
        }
    }
    (out, missing)
}

fn delay_report(
    load: String,
    from: Instant,
    to: Instant,
    acks: &[Ack],
    seen: &HashMap<String, Instant>,
    polls: &[Poll],
    interval: Duration,
) -> DelayReport {
    let (mut d, not_listed) = delays(acks, seen, from, to);
    d.sort_unstable();
    let pct = |p: f64| {
        if d.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * d.len() as f64).ceil() as usize;
        d[rank.clamp(1, d.len()) - 1] as f64 / 1000.0
    };
    let in_window: Vec<&Poll> = polls.iter().filter(|p| p.at >= from && p.at < to).collect();
    let mut lat = Latencies {
        micros: in_window
            .iter()
            .filter(|p| p.ok)
            .map(|p| p.micros)
            .collect(),
    };
    let window = to.duration_since(from).as_secs_f64();
    DelayReport {
        load,
        window_secs: window,
        fragments: d.len() as u64 + not_listed,
        not_listed,
        listed_before_ack: d.iter().filter(|&&x| x < 0).count() as u64,
        min_ms: d.first().map_or(0.0, |&x| x as f64 / 1000.0),
        p50_ms: pct(50.0),
        p99_ms: pct(99.0),
        max_ms: d.last().map_or(0.0, |&x| x as f64 / 1000.0),
        poll_interval_ms: interval.as_secs_f64() * 1000.0,
        polls: in_window.len() as u64,
        poll_failures: in_window.iter().filter(|p| !p.ok).count() as u64,
        mean_poll_cycle_ms: if in_window.is_empty() {
            0.0
        } else {
            window * 1000.0 / in_window.len() as f64
        },
        poll_latency: Summary::of(&mut lat),
        ..Default::default()
    }
}

/// CPU seconds (server, this process) used so far.
#[derive(Clone, Copy)]
struct CpuReading {
    server: Option<f64>,
    client: Option<f64>,
}

#[derive(Clone, Copy)]
struct CpuMeter {
    server_pid: Option<u32>,
}

impl CpuMeter {
    fn read(&self) -> CpuReading {
        CpuReading {
            server: self
                .server_pid
                .and_then(|p| process_cpu_secs(&p.to_string())),
            client: process_cpu_secs("self"),
        }
    }
}

/// (server, load generator) CPU seconds between two readings.
fn cpu_delta(a: CpuReading, b: CpuReading) -> (Option<f64>, Option<f64>) {
    (
        b.server.zip(a.server).map(|(b, a)| b - a),
        b.client.zip(a.client).map(|(b, a)| b - a),
    )
}

async fn live_phases(
    cfg: &Arc<PlaybackConfig>,
    clip: &Arc<Clip>,
    name: &str,
    rss: Option<&RssSampler>,
    report: &mut PlaybackReport,
) -> Result<(), BoxError> {
    let meter = CpuMeter {
        server_pid: cfg.server_pid,
    };
    let quiet = if cfg.skip_latency {
        Duration::ZERO
    } else {
        cfg.latency_duration
    };
    let live = if cfg.skip_live {
        Duration::ZERO
    } else {
        cfg.live_duration
    };
    // The producer starts now and runs until the end of both windows (plus margin).
    let mut producer = Producer::connect(cfg, name).await?;
    let acks = producer.acks.clone();
    let t_start = Instant::now();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pclip = clip.clone();
    let producer_task = tokio::spawn(async move {
        let mut k = 0u64;
        loop {
            let due = t_start + Duration::from_secs(k);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {}
                _ = &mut stop_rx => break,
            }
            if let Err(e) = producer.send(&pclip).await {
                return Err(format!("live producer: {e}"));
            }
            k += 1;
        }
        producer
            .finish(Duration::from_secs(10))
            .await
            .map_err(|e| format!("live producer: {e}"))
    });
    // A LIVE session needs a stored fragment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acks.lock().unwrap().is_empty() {
        if Instant::now() > deadline || producer_task.is_finished() {
            return Err("the live producer got no PERSISTED ack within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut admin = Client::new(cfg.addr, cfg.timeout);
    let (session, _) = hls_session(
        &mut admin,
        &cfg.host,
        &json!({"StreamName": name, "PlaybackMode": "LIVE"}),
    )
    .await?;
    let media_path = session.media_playlist();
    admin
        .ok(&get_request(&cfg.host, &media_path), "media playlist")
        .await?;

    let watch_start = Instant::now();
    let quiet_end = watch_start + quiet;
    let live_end = quiet_end + live;
    let watch = tokio::spawn(watcher(
        cfg.addr,
        cfg.host.clone(),
        media_path,
        cfg.poll_interval,
        cfg.timeout,
        live_end + Duration::from_millis(1500),
    ));
    if !cfg.skip_latency {
        eprintln!(
            "latency: 1 producer (1 fragment/s), 1 watcher polling every {:?}, {:?}",
            cfg.poll_interval, quiet
        );
    }
    let c0 = meter.read();
    rss.map(RssSampler::take_phase_peak);
    tokio::time::sleep_until(quiet_end.into()).await;
    let c1 = meter.read();
    let rss_quiet = rss.and_then(RssSampler::take_phase_peak);

    let mut live_report = None;
    if !cfg.skip_live {
        eprintln!(
            "live: {} players for {:?} (joining over {:?})",
            cfg.players, live, cfg.player_ramp
        );
        let ctx = Arc::new(PlayerCtx {
            addr: cfg.addr,
            host: cfg.host.clone(),
            stream_name: name.to_string(),
            start_segments: cfg.start_segments,
            timeout: cfg.timeout,
        });
        let mut tasks = Vec::new();
        for i in 0..cfg.players {
            let offset = cfg
                .player_ramp
                .mul_f64(i as f64 / cfg.players.max(1) as f64);
            tasks.push(tokio::spawn(player(
                ctx.clone(),
                quiet_end + offset,
                live_end,
            )));
        }
        let mut all = PlayerStats::default();
        let mut failed = 0;
        for t in tasks {
            let s = t.await.map_err(|e| e.to_string())?;
            failed += usize::from(s.failed);
            all.merge(s);
        }
        let elapsed = quiet_end.elapsed().as_secs_f64();
        let c2 = meter.read();
        let (server_cpu_secs, client_cpu_secs) = cpu_delta(c1, c2);
        live_report = Some(LiveReport {
            players: cfg.players,
            players_failed: failed,
            elapsed_secs: elapsed,
            segments: all.segments,
            segment_bytes: all.bytes,
            segments_per_sec: all.segments as f64 / elapsed.max(1e-9),
            mb_per_sec: all.bytes as f64 / 1e6 / elapsed.max(1e-9),
            segment_latency: Summary::of(&mut all.segment),
            playlist_latency: Summary::of(&mut all.playlist),
            session_url_latency: Summary::of(&mut all.session),
            init_latency: Summary::of(&mut all.init),
            errors: all.errors,
            skipped_segments: all.skipped,
            map_uri_changes: all.map_changes,
            server_cpu_secs,
            client_cpu_secs,
            server_peak_rss_kib: rss.and_then(RssSampler::take_phase_peak),
            error_samples: all.error_samples,
        });
    }
    let _ = stop_tx.send(());
    let acks = producer_task.await.map_err(|e| e.to_string())??;
    let (seen, polls) = watch.await.map_err(|e| e.to_string())?;
    if !cfg.skip_latency {
        let mut q = delay_report(
            "quiet".into(),
            watch_start,
            quiet_end,
            &acks,
            &seen,
            &polls,
            cfg.poll_interval,
        );
        (q.server_cpu_secs, q.client_cpu_secs) = cpu_delta(c0, c1);
        q.server_peak_rss_kib = rss_quiet;
        report.latency_quiet = Some(q);
    }
    if let Some(l) = &live_report {
        let mut q = delay_report(
            format!("{} players", cfg.players),
            quiet_end,
            live_end,
            &acks,
            &seen,
            &polls,
            cfg.poll_interval,
        );
        q.server_cpu_secs = l.server_cpu_secs;
        q.client_cpu_secs = l.client_cpu_secs;
        q.server_peak_rss_kib = l.server_peak_rss_kib;
        report.latency_loaded = Some(q);
    }
    report.live = live_report;
    Ok(())
}

// ---- phase 3: cold segments ---------------------------------------------------------

#[derive(Default)]
struct ColdStats {
    first: Latencies,
    repeat: Latencies,
    first_bytes: u64,
    repeat_bytes: u64,
    /// When this worker's last first-touch request completed.
    last_first: Option<Instant>,
    errors: u64,
    error_samples: Vec<String>,
}

async fn cold_worker(
    addr: SocketAddr,
    host: String,
    session: HlsSession,
    pool: Arc<Vec<String>>,
    next: Arc<AtomicUsize>,
    stop_at: Instant,
    timeout: Duration,
) -> ColdStats {
    let mut st = ColdStats::default();
    let mut c = Client::new(addr, timeout);
    while Instant::now() < stop_at {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let req = get_request(&host, &session.segment(&pool[i % pool.len()]));
        match c.ok(&req, "media segment").await {
            Ok((b, took)) if mp4_box_at(&b, 0, b"styp") || mp4_box_at(&b, 0, b"moof") => {
                if i < pool.len() {
                    st.first.record(took);
                    st.first_bytes += b.len() as u64;
                    st.last_first = Some(Instant::now());
                } else {
                    st.repeat.record(took);
                    st.repeat_bytes += b.len() as u64;
                }
            }
            Ok(_) => {
                st.errors += 1;
                note_error(
                    &mut st.error_samples,
                    "media segment: neither styp nor moof".into(),
                );
            }
            Err(e) => {
                st.errors += 1;
                note_error(&mut st.error_samples, e);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    st
}

fn row(lat: &mut Latencies, bytes: u64, secs: f64) -> ThroughputRow {
    let n = lat.micros.len() as u64;
    ThroughputRow {
        segments: n,
        bytes,
        segments_per_sec: n as f64 / secs.max(1e-9),
        mb_per_sec: bytes as f64 / 1e6 / secs.max(1e-9),
        latency: Summary::of(lat),
    }
}

async fn cold_phase(
    cfg: &Arc<PlaybackConfig>,
    clip: &Clip,
    name: &str,
    rss: Option<&RssSampler>,
) -> Result<(ColdReport, u64), BoxError> {
    let meter = CpuMeter {
        server_pid: cfg.server_pid,
    };
    eprintln!(
        "cold: pushing {} fragments to {name} as fast as possible",
        cfg.cold_fragments
    );
    let from_s = now_ms() as f64 / 1000.0 - 1.0;
    let pushed = push_fast(cfg, clip, name, cfg.cold_fragments).await?;
    let (acks, pool_bytes, push_secs) = (pushed.acks, pushed.bytes, pushed.secs);
    let to_s = now_ms() as f64 / 1000.0 + 1.0;
    eprintln!(
        "cold: {} fragments ({:.1} MB) PERSISTED in {push_secs:.2} s",
        acks.len(),
        pool_bytes as f64 / 1e6
    );
    let mut admin = Client::new(cfg.addr, cfg.timeout);
    let (session, _) = hls_session(
        &mut admin,
        &cfg.host,
        &json!({
            "StreamName": name,
            "PlaybackMode": "ON_DEMAND",
            "HLSFragmentSelector": {
                "FragmentSelectorType": "SERVER_TIMESTAMP",
                "TimestampRange": {"StartTimestamp": from_s, "EndTimestamp": to_s}
            },
            "MaxMediaPlaylistFragmentResults": 5000
        }),
    )
    .await?;
    let (body, took) = admin
        .ok(
            &get_request(&cfg.host, &session.media_playlist()),
            "ON_DEMAND media playlist",
        )
        .await?;
    let vod = parse_playlist(&String::from_utf8_lossy(&body));
    if let Some(map) = &vod.map {
        admin
            .ok(
                &get_request(&cfg.host, &session.resolve(map)),
                "init segment",
            )
            .await?;
    }
    // Shuffled once; every pass uses the same order.
    let mut pool: Vec<String> = acks.into_iter().map(|a| a.number).collect();
    let mut rng = Rng::new(0xC01D);
    for i in (1..pool.len()).rev() {
        pool.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let pool = Arc::new(pool);
    eprintln!(
        "cold: {} workers for {:?} over {} distinct segments",
        cfg.cold_players,
        cfg.cold_duration,
        pool.len()
    );
    let next = Arc::new(AtomicUsize::new(0));
    rss.map(RssSampler::take_phase_peak);
    let c0 = meter.read();
    let t0 = Instant::now();
    let stop_at = t0 + cfg.cold_duration;
    let tasks: Vec<_> = (0..cfg.cold_players)
        .map(|_| {
            tokio::spawn(cold_worker(
                cfg.addr,
                cfg.host.clone(),
                session.clone(),
                pool.clone(),
                next.clone(),
                stop_at,
                cfg.timeout,
            ))
        })
        .collect();
    let mut all = ColdStats::default();
    for t in tasks {
        let s = t.await.map_err(|e| e.to_string())?;
        all.first.merge(s.first);
        all.repeat.merge(s.repeat);
        all.first_bytes += s.first_bytes;
        all.repeat_bytes += s.repeat_bytes;
        all.errors += s.errors;
        all.last_first = all.last_first.max(s.last_first);
        for e in s.error_samples {
            note_error(&mut all.error_samples, e);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    // The first pass ends when the last first touch completes (or with the phase).
    let first_secs = if all.first.micros.len() == pool.len() {
        all.last_first
            .map_or(elapsed, |t| t.duration_since(t0).as_secs_f64())
    } else {
        elapsed
    };
    let (server_cpu_secs, client_cpu_secs) = cpu_delta(c0, meter.read());
    let mut every = all.first.clone();
    every.merge(all.repeat.clone());
    let requests = every.micros.len();
    let report = ColdReport {
        players: cfg.cold_players,
        pool_fragments: pool.len(),
        pool_bytes,
        push_secs,
        vod_playlist_ms: took.as_secs_f64() * 1000.0,
        vod_playlist_entries: vod.segments.len(),
        elapsed_secs: elapsed,
        all: row(&mut every, all.first_bytes + all.repeat_bytes, elapsed),
        first_touch: row(&mut all.first, all.first_bytes, first_secs),
        first_touch_secs: first_secs,
        passes: requests as f64 / pool.len().max(1) as f64,
        errors: all.errors,
        server_cpu_secs,
        client_cpu_secs,
        server_peak_rss_kib: rss.and_then(RssSampler::take_phase_peak),
        error_samples: all.error_samples,
    };
    Ok((report, pushed.base_ms))
}

// ---- phase 4: GetClip ---------------------------------------------------------------

/// Duration in seconds from the `mvhd` box of an MP4.
fn mp4_duration_secs(b: &[u8]) -> Option<f64> {
    let i = find(&b[..b.len().min(1 << 20)], b"mvhd")?;
    let p = i + 4;
    let u32_at = |o: usize| -> Option<u64> {
        Some(u32::from_be_bytes(b.get(o..o + 4)?.try_into().ok()?) as u64)
    };
    let (scale, dur) = match *b.get(p)? {
        1 => (
            u32_at(p + 20)?,
            u64::from_be_bytes(b.get(p + 24..p + 32)?.try_into().ok()?),
        ),
        _ => (u32_at(p + 12)?, u32_at(p + 16)?),
    };
    (scale > 0).then(|| dur as f64 / scale as f64)
}

/// Times `repeats` GetClip calls of `body` (each on a new connection).
async fn time_clips(cfg: &PlaybackConfig, mut t: ClipTimes, body: &Value) -> ClipTimes {
    let req = post_json(&cfg.host, "/getClip", &body.to_string());
    for i in 0..cfg.clip_repeats {
        let mut c = Client::new(cfg.addr, cfg.timeout.max(Duration::from_secs(60)));
        match c.ok(&req, "GetClip").await {
            Ok((b, took)) => {
                if !mp4_box_at(&b, 0, b"ftyp") {
                    note_error(&mut t.errors, "GetClip: no ftyp box".into());
                    continue;
                }
                t.times_ms.push(took.as_secs_f64() * 1000.0);
                t.mp4_bytes = b.len() as u64;
                t.mp4_duration_secs = mp4_duration_secs(&b);
                eprintln!(
                    "clip: {} #{} {:.1} ms, {} bytes",
                    t.what,
                    i + 1,
                    took.as_secs_f64() * 1000.0,
                    b.len()
                );
            }
            Err(e) => note_error(&mut t.errors, e),
        }
    }
    let mut sorted = t.times_ms.clone();
    sorted.sort_by(f64::total_cmp);
    if !sorted.is_empty() {
        t.min_ms = sorted[0];
        t.median_ms = sorted[sorted.len() / 2];
        t.max_ms = sorted[sorted.len() - 1];
    }
    t
}

/// GetClip over a freshly pushed stream and, if `deep` names the cold phase's
/// stream (name, first producer timestamp, fragments), over its middle.
async fn clip_phase(
    cfg: &Arc<PlaybackConfig>,
    clip: &Clip,
    name: &str,
    deep: Option<(String, u64, usize)>,
) -> Result<ClipReport, BoxError> {
    eprintln!(
        "clip: pushing {} fragments to {name} as fast as possible",
        cfg.clip_seconds
    );
    let start_s = now_ms() as f64 / 1000.0 - 1.0;
    let pushed = push_fast(cfg, clip, name, cfg.clip_seconds).await?;
    let range = cfg.clip_seconds as f64;
    let fresh = ClipTimes {
        what: format!("{name} (fresh)"),
        stream_fragments: pushed.acks.len(),
        selector: "SERVER_TIMESTAMP".into(),
        range_secs: range,
        ..Default::default()
    };
    let body = json!({
        "StreamName": name,
        "ClipFragmentSelector": {
            "FragmentSelectorType": "SERVER_TIMESTAMP",
            "TimestampRange": {"StartTimestamp": start_s, "EndTimestamp": start_s + range}
        }
    });
    let mut r = ClipReport {
        fragments: pushed.acks.len(),
        push_secs: pushed.secs,
        fresh: time_clips(cfg, fresh, &body).await,
        deep: None,
    };
    if let Some((vod, base_ms, n)) = deep
        && n > cfg.clip_seconds
    {
        // Fragment k has producer time base + 1000 k: take clip_seconds from the middle.
        let first = (n - cfg.clip_seconds) / 2;
        let from = (base_ms + 1000 * first as u64) as f64 / 1000.0;
        let t = ClipTimes {
            what: format!("{vod} (middle)"),
            stream_fragments: n,
            selector: "PRODUCER_TIMESTAMP".into(),
            range_secs: range,
            ..Default::default()
        };
        let body = json!({
            "StreamName": vod,
            "ClipFragmentSelector": {
                "FragmentSelectorType": "PRODUCER_TIMESTAMP",
                "TimestampRange": {"StartTimestamp": from, "EndTimestamp": from + range - 0.5}
            }
        });
        r.deep = Some(time_clips(cfg, t, &body).await);
    }
    Ok(r)
}

// ---- driver and table ---------------------------------------------------------------

pub async fn run(cfg: PlaybackConfig, clip: Clip) -> Result<PlaybackReport, BoxError> {
    let cfg = Arc::new(cfg);
    let clip = Arc::new(clip);
    let mut report = PlaybackReport {
        endpoint: cfg.endpoint.clone(),
        fragment_bytes_mean: clip.mean_cluster_bytes(),
        server_pid: cfg.server_pid,
        ..Default::default()
    };
    let rss = cfg.server_pid.map(RssSampler::start);
    if let Some(s) = &rss
        && !s.is_alive()
    {
        return Err(format!(
            "--server-pid {}: no such process",
            cfg.server_pid.unwrap_or(0)
        )
        .into());
    }
    let names = |s: &str| format!("{}{s}", cfg.prefix);
    let phases = [
        ("live", !(cfg.skip_latency && cfg.skip_live)),
        ("vod", !cfg.skip_cold),
        ("clip", !cfg.skip_clip),
    ];
    for (s, on) in phases {
        if on {
            create_stream(&cfg, &names(s)).await?;
        }
    }
    if phases[0].1 {
        live_phases(&cfg, &clip, &names("live"), rss.as_ref(), &mut report).await?;
    }
    let mut deep = None;
    if phases[1].1 {
        let (cold, base_ms) = cold_phase(&cfg, &clip, &names("vod"), rss.as_ref()).await?;
        deep = Some((names("vod"), base_ms, cold.pool_fragments));
        report.cold = Some(cold);
    }
    if phases[2].1 {
        report.clip = Some(clip_phase(&cfg, &clip, &names("clip"), deep).await?);
    }
    if let Some(s) = &rss {
        report.server_peak_rss_kib = s.high_water_mark();
    }
    Ok(report)
}

fn lat3(s: &Summary) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        s.p50_ms, s.p99_ms, s.max_ms
    )
}

fn cpu(server: Option<f64>, client: Option<f64>, secs: f64) -> String {
    let f = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} s"));
    let cores = server.map_or(String::new(), |v| {
        format!(" ({:.2} cores)", v / secs.max(1e-9))
    });
    format!("server {}{cores}, load generator {}", f(server), f(client))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn delay_rows(s: &mut String, d: &DelayReport) {
    let _ = writeln!(
        s,
        "{:<40} p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (min {:.2}); {} fragments, {} not listed, {} listed before the ack",
        format!("PERSISTED -> LIVE playlist ({})", d.load),
        d.p50_ms,
        d.p99_ms,
        d.max_ms,
        d.min_ms,
        d.fragments,
        d.not_listed,
        d.listed_before_ack
    );
    let _ = writeln!(
        s,
        "{:<40} every {:.0} ms: {} polls ({} failed), one per {:.2} ms; poll {}",
        "  watcher",
        d.poll_interval_ms,
        d.polls,
        d.poll_failures,
        d.mean_poll_cycle_ms,
        lat3(&d.poll_latency)
    );
    let _ = writeln!(
        s,
        "{:<40} {}",
        "  CPU",
        cpu(d.server_cpu_secs, d.client_cpu_secs, d.window_secs)
    );
}

/// Renders the human-readable table.
pub fn table(r: &PlaybackReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "== playback ({}): fragments of 1 s, {} bytes on average ==",
        r.endpoint, r.fragment_bytes_mean
    );
    if let Some(d) = &r.latency_quiet {
        delay_rows(&mut s, d);
    }
    if let Some(d) = &r.latency_loaded {
        delay_rows(&mut s, d);
    }
    if let Some(l) = &r.live {
        let _ = writeln!(
            s,
            "{:<40} {} ({} failed), {:.1} s",
            "LIVE players", l.players, l.players_failed, l.elapsed_secs
        );
        let _ = writeln!(
            s,
            "{:<40} {} ({:.1}/s, {:.2} MB/s), {} errors, {} skipped",
            "  segments served",
            l.segments,
            l.segments_per_sec,
            l.mb_per_sec,
            l.errors,
            l.skipped_segments
        );
        let _ = writeln!(
            s,
            "{:<40} {}",
            "  media segment latency",
            lat3(&l.segment_latency)
        );
        let _ = writeln!(
            s,
            "{:<40} {} ({} requests)",
            "  playlist latency",
            lat3(&l.playlist_latency),
            l.playlist_latency.count
        );
        let _ = writeln!(
            s,
            "{:<40} {}",
            "  session URL latency",
            lat3(&l.session_url_latency)
        );
        let _ = writeln!(
            s,
            "{:<40} {}",
            "  init segment latency",
            lat3(&l.init_latency)
        );
        let _ = writeln!(
            s,
            "{:<40} {}",
            "  EXT-X-MAP URI changes seen", l.map_uri_changes
        );
        let _ = writeln!(
            s,
            "{:<40} {}",
            "  CPU",
            cpu(l.server_cpu_secs, l.client_cpu_secs, l.elapsed_secs)
        );
        let _ = writeln!(
            s,
            "{:<40} {}",
            "  server peak RSS (sampled)",
            mib(l.server_peak_rss_kib)
        );
        for e in &l.error_samples {
            let _ = writeln!(s, "  error: {e}");
        }
    }
    if let Some(c) = &r.cold {
        let _ = writeln!(
            s,
            "{:<40} {} workers, {:.1} s, pool of {} segments ({:.1} MB pushed in {:.2} s)",
            "cold ON_DEMAND segments",
            c.players,
            c.elapsed_secs,
            c.pool_fragments,
            c.pool_bytes as f64 / 1e6,
            c.push_secs
        );
        let _ = writeln!(
            s,
            "{:<40} {:.1} ms ({} entries)",
            "  ON_DEMAND media playlist", c.vod_playlist_ms, c.vod_playlist_entries
        );
        let first = format!("  first touch ({:.1} s)", c.first_touch_secs);
        for (label, row) in [("  all requests", &c.all), (first.as_str(), &c.first_touch)] {
            let _ = writeln!(
                s,
                "{:<40} {} ({:.0}/s, {:.2} MB/s), {}",
                label,
                row.segments,
                row.segments_per_sec,
                row.mb_per_sec,
                lat3(&row.latency)
            );
        }
        let _ = writeln!(
            s,
            "{:<40} {:.2}, {} errors",
            "  passes over the pool", c.passes, c.errors
        );
        let _ = writeln!(
            s,
            "{:<40} {}",
            "  CPU",
            cpu(c.server_cpu_secs, c.client_cpu_secs, c.elapsed_secs)
        );
        let _ = writeln!(
            s,
            "{:<40} {}",
            "  server peak RSS (sampled)",
            mib(c.server_peak_rss_kib)
        );
        for e in &c.error_samples {
            let _ = writeln!(s, "  error: {e}");
        }
    }
    if let Some(c) = &r.clip {
        let _ = writeln!(
            s,
            "{:<40} {} fragments pushed in {:.2} s",
            "GetClip", c.fragments, c.push_secs
        );
        let runs = [("all", Some(&c.fresh)), ("middle", c.deep.as_ref())];
        for (which, t) in runs.into_iter().filter_map(|(w, t)| Some((w, t?))) {
            let _ = writeln!(
                s,
                "{:<40} {which} of {} stored fragments, {:.0} s {}: {} bytes, {}",
                "  range",
                t.stream_fragments,
                t.range_secs,
                t.selector,
                t.mp4_bytes,
                t.mp4_duration_secs
                    .map_or("no mvhd duration".into(), |d| format!("{d:.2} s of media"))
            );
            let _ = writeln!(
                s,
                "{:<40} min {:.1} ms, median {:.1} ms, max {:.1} ms ({} runs)",
                "    wall time",
                t.min_ms,
                t.median_ms,
                t.max_ms,
                t.times_ms.len()
            );
            for e in &t.errors {
                let _ = writeln!(s, "  error: {e}");
            }
        }
    }
    if r.server_peak_rss_kib.is_some() {
        let _ = writeln!(
            s,
            "{:<40} {} (pid {})",
            "server peak RSS (VmHWM)",
            mib(r.server_peak_rss_kib),
            r.server_pid.unwrap_or(0)
        );
    } else if let Some(pid) = r.server_pid {
        let _ = writeln!(
            s,
            "{:<40} {}",
            "server VmRSS now",
            mib(read_status_kib(pid, "VmRSS:"))
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_media_playlist() {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:3\n\
                    #EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"getMP4InitFragment.mp4?SessionToken=T&FragmentNumber=9\"\n\
                    #EXTINF:1.000,\ngetMP4MediaFragment.mp4?SessionToken=T&FragmentNumber=91000\n\
                    #EXTINF:1.000,\ngetMP4MediaFragment.mp4?SessionToken=T&FragmentNumber=91001\n";
        let p = parse_playlist(text);
        assert_eq!(p.target_secs, 2.0);
        assert_eq!(
            p.map.as_deref(),
            Some("getMP4InitFragment.mp4?SessionToken=T&FragmentNumber=9")
        );
        assert_eq!(p.segments.len(), 2);
        assert_eq!(fragment_param(&p.segments[1]), Some("91001"));
        assert!(number_key("91001") > number_key("91000"));
        assert!(number_key("910000") > number_key("91999"));
        let n = format!("91{:020}{:020}", 7, 12345);
        assert_eq!(offset_of(&n), Some(12345));
    }

    #[test]
    fn signed_delays_by_window() {
        let t0 = Instant::now();
        let acks = vec![
            Ack {
                number: "a".into(),
                at: t0 + Duration::from_millis(10),
            },
            Ack {
                number: "b".into(),
                at: t0 + Duration::from_millis(20),
            },
            Ack {
                number: "c".into(),
                at: t0 + Duration::from_millis(30),
            },
        ];
        let seen = HashMap::from([
            ("a".to_string(), t0 + Duration::from_millis(13)),
            ("b".to_string(), t0 + Duration::from_millis(19)),
        ]);
        let (mut d, missing) = delays(&acks, &seen, t0, t0 + Duration::from_millis(100));
        d.sort_unstable();
        assert_eq!(d, vec![-1000, 3000]);
        assert_eq!(missing, 1);
        let (d, _) = delays(
            &acks,
            &seen,
            t0 + Duration::from_millis(15),
            t0 + Duration::from_millis(25),
        );
        assert_eq!(d, vec![-1000]);
    }

    #[test]
    fn reads_mvhd_duration() {
        let mut b = Vec::new();
        b.extend_from_slice(&[0, 0, 0, 16]);
        b.extend_from_slice(b"ftypisom");
        b.extend_from_slice(&[0, 0, 0, 0]);
        b.extend_from_slice(&[0, 0, 0, 108]);
        b.extend_from_slice(b"mvhd");
        b.extend_from_slice(&[0, 0, 0, 0]); // version 0, flags
        b.extend_from_slice(&[0; 8]); // creation, modification
        b.extend_from_slice(&1000u32.to_be_bytes());
        b.extend_from_slice(&60_000u32.to_be_bytes());
        assert_eq!(mp4_duration_secs(&b), Some(60.0));
    }
}
