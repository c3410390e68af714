//! Shared helpers of the integration tests that drive the real `freshet` binary:
//! starting a server on a free loopback port with its own data directory, waiting until
//! it answers `GET /health`, stopping it with SIGTERM or SIGKILL, and a small
//! deterministic random generator (so failures can be replayed from a printed seed).

#![allow(dead_code)] // each test crate uses a different subset

use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to start answering `/health`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `freshet serve` process. Killed (SIGKILL) when dropped; its log is printed
/// if the test is failing.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    extra_args: Vec<String>,
    /// Owns the log directory (and the data directory when the server created it).
    _scratch: tempfile::TempDir,
    _data: Option<tempfile::TempDir>,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

impl Server {
    /// Starts a server on a fresh temporary data directory and waits until it is ready.
    pub async fn start(extra_args: &[&str]) -> Server {
        let data = tempfile::tempdir().expect("temp data dir");
        let mut server = Self::start_in(data.path(), extra_args).await;
        server._data = Some(data);
        server
    }

    /// Starts a server on `data_dir` (kept by the caller) and waits until it is ready.
    pub async fn start_in(data_dir: &Path, extra_args: &[&str]) -> Server {
        let scratch = tempfile::tempdir().expect("temp log dir");
        let mut server = Server {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_path_buf(),
            log_path: scratch.path().join("server.log"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            _scratch: scratch,
            _data: None,
        };
        server.launch().await;
        server
    }

    /// Spawns the process on a free port; retries on another port if it exits early
    /// (the port was taken between probing and binding).
    async fn launch(&mut self) {
        let mut last_log = String::new();
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log_path)
                .expect("open server log");
            let child = Command::new(env!("CARGO_BIN_EXE_freshet"))
                .arg("serve")
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--data-dir")
                .arg(&self.data_dir)
                .args(&self.extra_args)
                .env("FRESHET_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn freshet binary");
            self.child = Some(child);
            self.addr = addr;
            match self.wait_ready().await {
                Ok(()) => return,
                Err(e) => {
                    last_log = self.log_tail(40);
                    eprintln!("freshet did not start on {addr}: {e}; retrying");
                    self.kill();
                }
            }
        }
        panic!("freshet never became ready; last log:\n{last_log}");
    }

    /// Polls `GET /health` until it answers 200, failing if the process exits.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let url = format!("{}/health", self.endpoint());
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("process exited with {status}"));
            }
            if let Ok(resp) = http.get(&url).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("timed out waiting for /health".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// SIGKILL, then reap the process. No-op when already stopped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (up to 20 s) for the process to exit; returns whether it exited
    /// successfully. Falls back to SIGKILL.
    pub async fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        // SAFETY: plain syscall on the pid of a child we own and have not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return false;
                }
            }
        }
    }

    /// Starts the same server again (same data directory and flags, new port) after
    /// [`Server::kill`] or [`Server::terminate`].
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the server before restarting it");
        self.launch().await;
    }

    /// The last `lines` lines of the server's stderr (all runs).
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
            let _ = f.read_to_string(&mut text);
        }
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- freshet log ({}) ----\n{}\n---- end of log ----",
                self.endpoint(),
                self.log_tail(60)
            );
        }
    }
}

/// xorshift64*: small, fast, reproducible; not for anything but test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// Seed from `FRESHET_TEST_SEED` if set, otherwise from the clock; printed so a
    /// failing run can be replayed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("FRESHET_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{test}: FRESHET_TEST_SEED={seed}");
        Rng::new(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi` (hi exclusive, hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// Compares two Kinesis sequence numbers (decimal strings) numerically.
pub fn seq_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// The video of a sample clip as an RTP depacketizer would hand it over: the track's
/// The H.264 track of the 320×240 sample clips, with the codec private data
/// [`sample_video_frames`] returns.
pub fn sample_h264_track(codec_private: Vec<u8>) -> freshet::media::fragmenter::TrackSpec {
    freshet::media::fragmenter::TrackSpec {
        codec: freshet::media::samples::Codec::H264,
        codec_private,
        width: 320,
        height: 240,
        sample_rate: 0,
        channels: 0,
    }
}

/// codec private and each frame as (time ms from `t0`, key frame, data).
pub fn sample_video_frames(sample: &[u8], t0: i64) -> (Vec<u8>, Vec<(i64, bool, bytes::Bytes)>) {
    use freshet::media::mkv::{Limits, MkvEvent, MkvReader};
    let events = MkvReader::new(Limits::default())
        .read_to_end(sample)
        .unwrap();
    let mut private = Vec::new();
    let mut pending = Vec::new();
    let mut frames = Vec::new();
    for e in events {
        match e {
            MkvEvent::Header(h) => private = h.tracks[0].codec_private.clone(),
            MkvEvent::Frame(f) => pending.push(f),
            MkvEvent::FragmentEnd(c) => {
                for f in pending.drain(..) {
                    let data = &c.raw_cluster_bytes[f.data_offset..f.data_offset + f.data_len];
                    frames.push((
                        t0 + f.timecode as i64,
                        f.keyframe,
                        bytes::Bytes::copy_from_slice(data),
                    ));
                }
            }
            _ => {}
        }
    }
    (private, frames)
}
