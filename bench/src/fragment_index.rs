//! `freshet-bench fragment-index`: what ListFragments costs as a stream grows.
//!
//! For each size N, starts the `freshet` binary given (`--freshet-bin`) on a fresh data
//! directory, creates `idx-<N>` and fills it with N small synthetic fragments through
//! PutMedia (the clip's EBML header, Info and Tracks, then Clusters of one 100-byte key
//! frame, ABSOLUTE timecodes 1 s apart ending now), over connections of at most 10,000
//! fragments. Then times ListFragments for a random 60 s PRODUCER_TIMESTAMP window
//! (60 fragments) --queries times, warm; and cold: the server is stopped (SIGTERM) and
//! started again, and the first ListFragments after each restart is timed (it loads
//! the stream's index), --restarts times. Then as many restarts again, each followed by
//! the first HLS playback: GetHLSStreamingSessionURL (ON_DEMAND, the same 60 s window),
//! master playlist and media playlist, timed together. Also reports the rebuild counter
//! of /health (0 unless the index was lost) and the index log's bytes per fragment.
//!
//! With `--startup-streams S` ([`startup`]) it measures start-up instead: S streams of
//! `--startup-fragments` fragments, the time from spawning the server to `/ready` after
//! clean (SIGTERM) and crash (SIGKILL) stops, and the first ListFragments after each.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http::Conn;
use crate::rng::Rng;
use crate::stats::Latencies;
use crate::video::{Clip, first_body_byte, putmedia_head};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct IndexConfig {
    pub freshet_bin: PathBuf,
    pub data_dir: PathBuf,
    pub sizes: Vec<usize>,
    pub queries: usize,
    pub restarts: usize,
    pub window_secs: u64,
}

/// One running server (also used by `freshet-bench delivery`).
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

fn free_addr() -> Result<SocketAddr, BoxError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

impl Server {
    /// Starts the server and waits until it is ready ([`Server::start_timed`]).
    pub(crate) async fn start(bin: &Path, data: &Path) -> Result<Server, BoxError> {
        Ok(Server::start_timed(bin, data).await?.0)
    }

    async fn health(&self) -> Result<Value, BoxError> {
        let mut c = Conn::connect(self.addr).await?;
        let r = c
            .send(format!("GET /health HTTP/1.1\r\nHost: {}\r\n\r\n", self.addr).as_bytes())
            .await?;
        Ok(serde_json::from_slice(&r.body)?)
    }

    /// SIGTERM, then wait for the exit.
    pub(crate) async fn stop(mut self) -> Result<(), BoxError> {
        // SAFETY: plain syscall on the pid of a child we own and have not reaped.
        unsafe {
            libc_kill(self.child.id() as i32, 15);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err("freshet did not stop on SIGTERM".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

fn json_request(host: &SocketAddr, path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A Cluster of known size at `tc` ms with one 100-byte key frame for track 1 (one
/// H.264 NAL unit, so that playback can demux it).
fn synthetic_cluster(tc: u64) -> Vec<u8> {
    let mut children = vec![0xE7, 0x88];
    children.extend_from_slice(&tc.to_be_bytes());
    let block_len = 4 + 100;
    children.extend_from_slice(&[0xA3, 0x80 | block_len as u8, 0x81, 0x00, 0x00, 0x80]);
    // One length-prefixed (AVCC) NAL unit: an IDR slice header byte, then filler.
    children.extend_from_slice(&[0x00, 0x00, 0x00, 96, 0x65]);
    children.resize(children.len() + 95, 0x5A);
    let mut out = vec![0x1F, 0x43, 0xB6, 0x75, 0x01];
    out.extend_from_slice(&(children.len() as u64).to_be_bytes()[1..]);
    out.extend_from_slice(&children);
    out
}

/// Pushes fragments `from..to` (fragment k at `base_ms + 1000 k`) over one PutMedia
/// connection; waits for every PERSISTED ack.
async fn push(
    addr: SocketAddr,
    stream: &str,
    header: &[u8],
    base_ms: u64,
    from: usize,
    to: usize,
) -> Result<(), BoxError> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (mut rd, mut wr) = s.into_split();
    let want = to - from;
    let reader = tokio::spawn(async move {
        let mut seen = 0usize;
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let needle = b"\"PERSISTED\"";
        while seen < want {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            let mut at = 0;
            while let Some(i) = crate::http::find(&tail[at..], needle) {
                seen += 1;
                at += i + needle.len();
            }
            // Keep what could be the start of a split needle.
            let keep_from = at.max(tail.len().saturating_sub(needle.len() - 1));
            tail.drain(..keep_from);
        }
        Ok::<usize, std::io::Error>(seen)
    });
    let start_ms = base_ms + 1000 * from as u64;
    wr.write_all(putmedia_head(&addr.to_string(), stream, start_ms).as_bytes())
        .await?;
    let mut chunk = Vec::with_capacity(64 * 1024);
    for k in from..to {
        let mut payload = Vec::new();
        if k == from {
            payload.extend_from_slice(header);
        }
        payload.extend_from_slice(&synthetic_cluster(base_ms + 1000 * k as u64));
        chunk.extend_from_slice(format!("{:x}\r\n", payload.len()).as_bytes());
        chunk.extend_from_slice(&payload);
        chunk.extend_from_slice(b"\r\n");
        if chunk.len() >= 32 * 1024 {
            wr.write_all(&chunk).await?;
            chunk.clear();
        }
    }
    chunk.extend_from_slice(b"0\r\n\r\n");
    wr.write_all(&chunk).await?;
    let seen = tokio::time::timeout(Duration::from_secs(600), reader).await???;
    if seen < want {
        return Err(format!("{seen} of {want} fragments PERSISTED").into());
    }
    Ok(())
}

/// The GetHLSStreamingSessionURL request of an ON_DEMAND session over
/// `[start, start + window)` by producer time.
fn hls_request(stream: &str, start_ms: u64, window_secs: u64) -> String {
    format!(
        "{{\"StreamName\":\"{stream}\",\"PlaybackMode\":\"ON_DEMAND\",\"HLSFragmentSelector\":{{\"FragmentSelectorType\":\"PRODUCER_TIMESTAMP\",\"TimestampRange\":{{\"StartTimestamp\":{:.3},\"EndTimestamp\":{:.3}}}}}}}",
        start_ms as f64 / 1000.0,
        (start_ms + window_secs * 1000) as f64 / 1000.0
    )
}

/// The first HLS playback of a session ([`hls_request`]): GetHLSStreamingSessionURL,
/// the master playlist it names and the media playlist that names; (segments listed,
/// time).
async fn hls_window(
    conn: &mut Conn,
    addr: SocketAddr,
    body: &str,
) -> Result<(usize, Duration), BoxError> {
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let t = Instant::now();
    let r = conn
        .send(&json_request(&addr, "/getHLSStreamingSessionURL", body))
        .await?;
    if r.status != 200 {
        return Err(format!(
            "GetHLSStreamingSessionURL HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )
        .into());
    }
    let v: Value = serde_json::from_slice(&r.body)?;
    let url = v["HLSStreamingSessionURL"].as_str().unwrap_or_default();
    let master_path = url
        .find("/hls/")
        .map(|i| &url[i..])
        .ok_or("no session URL")?
        .to_string();
    let master = conn.send(&get(&master_path)).await?;
    if master.status != 200 {
        return Err(format!("master playlist HTTP {}", master.status).into());
    }
    let text = String::from_utf8_lossy(&master.body);
    let media = text
        .lines()
        .find(|l| l.starts_with("getHLSMediaPlaylist"))
        .ok_or("no media playlist in the master playlist")?;
    let media_path = format!("/hls/v1/{media}");
    let playlist = conn.send(&get(&media_path)).await?;
    let d = t.elapsed();
    if playlist.status != 200 {
        return Err(format!("media playlist HTTP {}", playlist.status).into());
    }
    let segments = String::from_utf8_lossy(&playlist.body)
        .lines()
        .filter(|l| l.starts_with("#EXTINF"))
        .count();
    Ok((segments, d))
}

/// One ListFragments for `[start, start + window]` by producer time: (fragments, time).
async fn list_window(
    conn: &mut Conn,
    addr: SocketAddr,
    stream: &str,
    start_ms: u64,
    window_secs: u64,
) -> Result<(usize, Duration), BoxError> {
    let body = format!(
        "{{\"StreamName\":\"{stream}\",\"FragmentSelector\":{{\"FragmentSelectorType\":\"PRODUCER_TIMESTAMP\",\"TimestampRange\":{{\"StartTimestamp\":{:.3},\"EndTimestamp\":{:.3}}}}}}}",
        start_ms as f64 / 1000.0,
        (start_ms + window_secs * 1000) as f64 / 1000.0 - 0.001
    );
    let t = Instant::now();
    let r = conn
        .send(&json_request(&addr, "/listFragments", &body))
        .await?;
    let d = t.elapsed();
    if r.status != 200 {
        return Err(format!("ListFragments HTTP {}", r.status).into());
    }
    let v: Value = serde_json::from_slice(&r.body)?;
    Ok((v["Fragments"].as_array().map_or(0, Vec::len), d))
}

/// One GetMedia from the first fragment at or after `start_ms` by producer time: the
/// time to the first byte of its body (the index lookup, then the fragment's read).
async fn getmedia_producer_ttfb(
    addr: SocketAddr,
    stream: &str,
    start_ms: u64,
) -> Result<Duration, BoxError> {
    let body = format!(
        "{{\"StreamName\":\"{stream}\",\"StartSelector\":{{\"StartSelectorType\":\"PRODUCER_TIMESTAMP\",\"StartTimestamp\":{:.3}}}}}",
        start_ms as f64 / 1000.0
    );
    first_body_byte(addr, &json_request(&addr, "/getMedia", &body)).await
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

fn find_dir(root: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(root).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == name) {
                return Some(p);
            }
            if let Some(found) = find_dir(&p, name) {
                return Some(found);
            }
        }
    }
    None
}

/// Runs every size; prints a table.
/// Stops `server` (SIGTERM), starts it again on `data`, and connects to it.
async fn restarted(server: Server, bin: &Path, data: &Path) -> Result<(Server, Conn), BoxError> {
    server.stop().await?;
    let server = Server::start(bin, data).await?;
    let conn = Conn::connect(server.addr).await?;
    Ok((server, conn))
}

pub async fn run(cfg: IndexConfig, clip: Clip) -> Result<(), BoxError> {
    let mut rows = Vec::new();
    for &n in &cfg.sizes {
        let data = cfg.data_dir.join(format!("idx-{n}"));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data)?;
        let server = Server::start(&cfg.freshet_bin, &data).await?;
        let stream = format!("idx-{n}");
        let mut c = Conn::connect(server.addr).await?;
        let r = c
            .send(&json_request(
                &server.addr,
                "/createStream",
                &format!("{{\"StreamName\":\"{stream}\",\"DataRetentionInHours\":8760}}"),
            ))
            .await?;
        if r.status != 200 {
            return Err(format!("createStream HTTP {}", r.status).into());
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        let base_ms = now_ms - 1000 * n as u64;
        let t = Instant::now();
        let mut at = 0;
        while at < n {
            let to = (at + 10_000).min(n);
            push(server.addr, &stream, &clip.header, base_ms, at, to).await?;
            at = to;
            eprintln!("idx-{n}: {at} fragments stored");
        }
        let fill_secs = t.elapsed().as_secs_f64();
        let windows = n.saturating_sub(cfg.window_secs as usize).max(1);
        let mut rng = Rng::new(n as u64);
        let mut pick = || base_ms + 1000 * (rng.next_u64() % windows as u64);
        // Warm.
        let mut conn = Conn::connect(server.addr).await?;
        let mut warm = Latencies::default();
        let mut listed = 0;
        for _ in 0..cfg.queries {
            let (count, d) =
                list_window(&mut conn, server.addr, &stream, pick(), cfg.window_secs).await?;
            listed = listed.max(count);
            warm.record(d);
        }
        drop(conn);
        let mut media_warm = Latencies::default();
        for _ in 0..cfg.queries.div_ceil(4) {
            media_warm.record(getmedia_producer_ttfb(server.addr, &stream, pick()).await?);
        }
        // Cold: the first query after each restart.
        let mut server = server;
        let mut cold = Latencies::default();
        let mut rebuilds = 0;
        for _ in 0..cfg.restarts {
            let mut conn;
            (server, conn) = restarted(server, &cfg.freshet_bin, &data).await?;
            let (_, d) =
                list_window(&mut conn, server.addr, &stream, pick(), cfg.window_secs).await?;
            cold.record(d);
            rebuilds += server.health().await?["fragment_index_rebuilds"]
                .as_u64()
                .unwrap_or(u64::MAX);
        }
        // Cold HLS: the first session and playlists after each restart.
        let mut hls = Latencies::default();
        let mut segments = 0;
        for _ in 0..cfg.restarts {
            let mut conn;
            (server, conn) = restarted(server, &cfg.freshet_bin, &data).await?;
            let request = hls_request(&stream, pick(), cfg.window_secs);
            let (count, d) = hls_window(&mut conn, server.addr, &request).await?;
            segments = segments.max(count);
            hls.record(d);
        }
        // Cold GetMedia: the first request after each restart.
        let mut media_cold = Latencies::default();
        for _ in 0..cfg.restarts {
            (server, _) = restarted(server, &cfg.freshet_bin, &data).await?;
            media_cold.record(getmedia_producer_ttfb(server.addr, &stream, pick()).await?);
        }
        server.stop().await?;
        let index_bytes = find_dir(&data, "fragment-index").map_or(0, |d| dir_bytes(&d));
        let (w50, w99, wmax) = warm.summary();
        let (c50, c99, cmax) = cold.summary();
        let (h50, _, hmax) = hls.summary();
        let (mw50, mw99, _) = media_warm.summary();
        let (mc50, _, mcmax) = media_cold.summary();
        rows.push(format!(
            "| {n:>7} | {fill_secs:>6.1} | {listed:>6} | {w50:>8.2} | {w99:>8.2} | {wmax:>8.2} | {c50:>8.2} | {c99:>8.2} | {cmax:>8.2} | {segments:>8} | {h50:>8.2} | {hmax:>8.2} | {mw50:>8.2} | {mw99:>8.2} | {mc50:>8.2} | {mcmax:>8.2} | {:>9.1} | {rebuilds:>8} |",
            index_bytes as f64 / n.max(1) as f64
        ));
    }
    println!(
        "ListFragments, {} s PRODUCER_TIMESTAMP window: warm over {} queries, cold = first query after each of {} restarts (ms)",
        cfg.window_secs, cfg.queries, cfg.restarts
    );
    println!(
        "HLS cold = GetHLSStreamingSessionURL + master + media playlist, first after each of {} more restarts (ms)",
        cfg.restarts
    );
    println!(
        "GetMedia TTFB = GetMedia PRODUCER_TIMESTAMP at a random time to the first body byte, warm ({} requests) and first after each of {} more restarts (ms)",
        cfg.queries.div_ceil(4),
        cfg.restarts
    );
    println!(
        "| fragments | fill s | listed | warm p50 | warm p99 | warm max | cold p50 | cold p99 | cold max | HLS segments | HLS cold p50 | HLS cold max | GetMedia TTFB warm p50 | warm p99 | cold p50 | cold max | index B/frag | rebuilds |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

/// What `--startup-streams` measures ([`startup`]).
pub struct StartupConfig {
    pub freshet_bin: PathBuf,
    pub data_dir: PathBuf,
    pub streams: usize,
    pub fragments: usize,
    pub restarts: usize,
    pub window_secs: u64,
}

impl Server {
    /// SIGKILL, then reap.
    fn kill(mut self) -> Result<(), BoxError> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Starts the server and times it until `GET /ready` answers 200 (polled every
    /// millisecond): the start-up a client sees.
    async fn start_timed(bin: &Path, data: &Path) -> Result<(Server, Duration), BoxError> {
        Server::start_with(bin, data, &[], &[]).await
    }

    /// [`Server::start_timed`] with more flags and environment variables.
    pub(crate) async fn start_with(
        bin: &Path,
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<(Server, Duration), BoxError> {
        let t = Instant::now();
        let addr = free_addr()?;
        let child = Command::new(bin)
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data)
            .args(["--state-delay-ms", "0"])
            .args(args)
            .env("FRESHET_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let mut server = Server { child, addr };
        let deadline = t + Duration::from_secs(300);
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(format!("freshet exited at start-up: {status}").into());
            }
            if let Ok(mut c) = Conn::connect(addr).await
                && let Ok(r) = c
                    .send(format!("GET /ready HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
                    .await
                && r.status == 200
            {
                return Ok((server, t.elapsed()));
            }
            if Instant::now() > deadline {
                return Err("freshet did not become ready".into());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Start-up with many video streams: fills `streams` streams of `fragments` fragments
/// each (as [`run`] does, several streams at once), then `restarts` times each: a clean
/// stop (SIGTERM) or a crash (SIGKILL), the time from spawning the process to `/ready`,
/// and the first ListFragments of a random stream after it (which loads that stream's
/// logs and index). Prints one table.
pub async fn startup(cfg: StartupConfig, clip: Clip) -> Result<(), BoxError> {
    let data = cfg
        .data_dir
        .join(format!("startup-{}x{}", cfg.streams, cfg.fragments));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let server = Server::start(&cfg.freshet_bin, &data).await?;
    let addr = server.addr;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let base_ms = now_ms - 1000 * cfg.fragments as u64;
    let t = Instant::now();
    let header = std::sync::Arc::new(clip.header.clone());
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let (next, header) = (next.clone(), header.clone());
        let (streams, fragments) = (cfg.streams, cfg.fragments);
        fillers.push(tokio::spawn(async move {
            let mut c = Conn::connect(addr).await?;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= streams {
                    return Ok::<(), BoxError>(());
                }
                let stream = format!("boot-{i}");
                let r = c
                    .send(&json_request(
                        &addr,
                        "/createStream",
                        &format!("{{\"StreamName\":\"{stream}\",\"DataRetentionInHours\":8760}}"),
                    ))
                    .await?;
                if r.status != 200 {
                    return Err(format!("createStream HTTP {}", r.status).into());
                }
                push(addr, &stream, &header, base_ms, 0, fragments).await?;
                if (i + 1) % 100 == 0 {
                    eprintln!("{} streams filled", i + 1);
                }
            }
        }));
    }
    for f in fillers {
        f.await??;
    }
    let fill_secs = t.elapsed().as_secs_f64();
    let stored = dir_bytes(&data);
    let mut rng = Rng::new(cfg.streams as u64);
    let windows = cfg
        .fragments
        .saturating_sub(cfg.window_secs as usize)
        .max(1) as u64;
    let mut server = server;
    let mut rows = Vec::new();
    for crash in [false, true] {
        let mut ready = Latencies::default();
        let mut first = Latencies::default();
        for _ in 0..cfg.restarts {
            if crash {
                server.kill()?;
            } else {
                server.stop().await?;
            }
            let d;
            (server, d) = Server::start_timed(&cfg.freshet_bin, &data).await?;
            ready.record(d);
            let stream = format!("boot-{}", rng.next_u64() % cfg.streams as u64);
            let start = base_ms + 1000 * (rng.next_u64() % windows);
            let mut conn = Conn::connect(server.addr).await?;
            let (listed, d) =
                list_window(&mut conn, server.addr, &stream, start, cfg.window_secs).await?;
            if listed == 0 {
                return Err(format!("ListFragments of {stream} listed nothing").into());
            }
            first.record(d);
        }
        let (r50, _, rmax) = ready.summary();
        let (f50, _, fmax) = first.summary();
        rows.push(format!(
            "| {} | {r50:>8.1} | {rmax:>8.1} | {f50:>8.2} | {fmax:>8.2} |",
            if crash { "SIGKILL" } else { "SIGTERM" }
        ));
    }
    server.stop().await?;
    println!(
        "{} video streams x {} fragments ({} fragments, {:.0} MiB stored, filled in {fill_secs:.1} s); {} restarts after each kind of stop (ms)",
        cfg.streams,
        cfg.fragments,
        cfg.streams * cfg.fragments,
        stored as f64 / (1 << 20) as f64,
        cfg.restarts
    );
    println!(
        "| stop | ready p50 | ready max | first ListFragments p50 | first ListFragments max |"
    );
    println!("|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
