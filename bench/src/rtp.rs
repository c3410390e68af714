//! `freshet-bench rtp`: N simulated RTP cameras pushing H.264 over UDP on loopback,
//! paced in real time, against Freshet's RTP feeds (`--target freshet`) or against
//! any other receiver bound to the same ports (`--target udp-only`, e.g. a
//! GStreamer `udpsrc ! rtpjitterbuffer ! rtph264depay` pipeline per camera).
//!
//! The source is a short H.264 Annex-B elementary stream (generated once with
//! ffmpeg/libx264 unless `--clip` names one), split into access units (on access
//! unit delimiters, or on SPS/PPS/SEI and `first_mb_in_slice == 0` after a slice),
//! optionally padded with filler NAL units (type 12) to the requested bitrate, and
//! packetized once (RFC 6184 non-interleaved mode: a single NAL unit packet when it
//! fits in 1400 bytes, FU-A fragments otherwise; AUDs are not sent). Every camera
//! loops the clip with continuous 90 kHz timestamps, its own random SSRC, sequence
//! number and timestamp origin, the marker bit on the last packet of each access
//! unit, and an RTCP Sender Report (with an SDES CNAME) on port + 1 every 5 s.
//!
//! Pacing: camera `i` sends frame `k` at `start_i + k / fps`, all packets of a frame
//! back to back. Start times put the cameras' frame schedules evenly over one frame
//! interval and their key frames over one GOP, so neither frames nor IDRs line up.
//! A few OS threads (`--sender-threads`) each own a share of the cameras and one
//! blocking `std::net::UdpSocket`; how late frames leave (scheduler and sleep
//! overshoot) and the generator's own CPU time are reported, so that a saturated
//! sender is visible.
//!
//! Measured on the receiving side: CPU time and RSS of the `--server-pid`
//! processes (summed), the kernel's UDP counters (`/proc/net/snmp`: `RcvbufErrors`,
//! `InErrors`), and per socket on the cameras' RTP ports (`/proc/net/udp`: `drops`,
//! and the largest `rx_queue` seen, sampled every second). With `--target freshet`
//! the feeds `<prefix><i>` are created through `PUT /v1/video/feeds/{stream}`
//! (`RtpPort` = base + 2i, `Codec` H264, `PayloadType` 96) first, and their
//! counters (`Packets`, `PacketsLost`, `Frames`, `DroppedFrames`,
//! `FragmentsStored`, ...) are read after the feeds have gone idle (the server
//! stores a feed's last fragment 5 s after its last packet), then they are deleted.

use crate::http::Conn;
use crate::rng::Rng;
use crate::stats::{Latencies, process_cpu_secs, read_status_kib};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest RTP payload: single NAL unit packets up to this size, FU-A above.
pub const MAX_PAYLOAD: usize = 1400;
/// The dynamic payload type every camera uses.
pub const PAYLOAD_TYPE: u8 = 96;
const CLOCK_RATE: u64 = 90_000;
const RTP_HEADER: usize = 12;
const NAL_AUD: u8 = 9;
const NAL_FILLER: u8 = 12;
const FU_A: u8 = 28;
/// Seconds between two RTCP Sender Reports of a camera.
const SR_INTERVAL_SECS: u64 = 5;
/// Seconds between 1900-01-01 (NTP) and 1970-01-01 (Unix).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// What receives the cameras' packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Freshet: the feeds are created (and deleted) through its REST API.
    Freshet,
    /// Something already listening on the ports (e.g. GStreamer); only kernel and
    /// process figures are read.
    UdpOnly,
}

/// The source clip as access units of NAL units (no start codes, no AUDs).
pub struct Clip {
    pub frames: Vec<Vec<Vec<u8>>>,
    pub fps: u32,
    /// Bytes of the filler NAL unit appended to every access unit (0: none).
    pub filler: usize,
}

/// NAL units of an Annex-B byte stream (start codes and trailing zeros removed).
pub fn split_annexb(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &s) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map(|&e| e - 3).unwrap_or(data.len());
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        if end > s {
            out.push(&data[s..end]);
        }
    }
    out
}

impl Clip {
    /// Splits an Annex-B stream into access units (H.264 7.4.1.2.3: an AUD, SEI,
    /// SPS, PPS or types 14-18 after a slice, or a slice with `first_mb_in_slice`
    /// 0 after a slice, starts a new one). AUD NAL units are dropped.
    pub fn from_annexb(data: &[u8], fps: u32) -> Result<Clip, BoxError> {
        let mut frames: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut cur_has_vcl = false;
        for nal in split_annexb(data) {
            let t = nal[0] & 0x1F;
            let vcl = (1..=5).contains(&t);
            // first_mb_in_slice is ue(v): 0 is coded as a single '1' bit.
            let first_mb_zero = nal.get(1).is_some_and(|b| b & 0x80 != 0);
            let starts = match t {
                NAL_AUD | 6 | 7 | 8 | 14..=18 => cur_has_vcl,
                1..=5 => cur_has_vcl && first_mb_zero,
                _ => false,
            };
            if starts {
                frames.push(std::mem::take(&mut cur));
                cur_has_vcl = false;
            }
            cur_has_vcl |= vcl;
            if t != NAL_AUD {
                cur.push(nal.to_vec());
            }
        }
        if cur_has_vcl {
            frames.push(cur);
        }
        if frames.is_empty() {
            return Err("the clip holds no H.264 access unit".into());
        }
        if !frames[0].iter().any(|n| n[0] & 0x1F == 5) {
            return Err("the clip does not start with an IDR access unit".into());
        }
        Ok(Clip {
            frames,
            fps,
            filler: 0,
        })
    }

    pub fn is_key(frame: &[Vec<u8>]) -> bool {
        frame.iter().any(|n| n[0] & 0x1F == 5)
    }

    /// Frames from one IDR to the next (the first such distance), or the clip length.
    pub fn gop_frames(&self) -> usize {
        let keys: Vec<usize> = (0..self.frames.len())
            .filter(|&i| Clip::is_key(&self.frames[i]))
            .collect();
        match keys.as_slice() {
            [a, b, ..] => b - a,
            _ => self.frames.len(),
        }
    }

    /// Mean NAL bytes per access unit.
    pub fn mean_frame_bytes(&self) -> f64 {
        let total: usize = self.frames.iter().flatten().map(Vec::len).sum();
        total as f64 / self.frames.len() as f64
    }

    /// Appends a filler NAL unit to every access unit so that the mean rate reaches
    /// `kbps` (10^3 bit/s of NAL bytes); returns the filler size (0: already there).
    pub fn pad_to_kbps(&mut self, kbps: u64) -> usize {
        let target = kbps as f64 * 1000.0 / 8.0 / self.fps as f64;
        let missing = (target - self.mean_frame_bytes()).floor();
        // Below a few percent the ffmpeg rate control's own spread dominates.
        if missing < target * 0.03 || missing < 3.0 {
            return 0;
        }
        let n = missing as usize;
        let mut filler = vec![0xFFu8; n];
        filler[0] = NAL_FILLER; // nal_ref_idc 0
        filler[n - 1] = 0x80; // rbsp_trailing_bits
        for f in &mut self.frames {
            f.push(filler.clone());
        }
        self.filler += n;
        n
    }

    /// Runs ffmpeg (libx264, testsrc2) to make a `seconds`-long clip at `kbps`.
    pub fn generate(
        ffmpeg: &str,
        kbps: u64,
        fps: u32,
        seconds: u32,
        path: &Path,
    ) -> Result<(), BoxError> {
        let rate = format!("{kbps}k");
        let out = std::process::Command::new(ffmpeg)
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
            .args(["-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size=640x360:rate={fps}"))
            .args(["-t", &seconds.to_string(), "-an", "-c:v", "libx264"])
            .args(["-g", &(2 * fps).to_string(), "-bf", "0"])
            .args(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate])
            .args(["-x264-params", "repeat-headers=1:aud=1", "-f", "h264"])
            .arg(path)
            .output()
            .map_err(|e| format!("running {ffmpeg}: {e} (install ffmpeg or pass --clip)"))?;
        if !out.status.success() {
            return Err(format!(
                "{ffmpeg} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(())
    }
}

/// RTP payloads of one NAL unit: itself if it fits, FU-A fragments otherwise.
pub fn packetize_nal(nal: &[u8], max: usize) -> Vec<Vec<u8>> {
    if nal.len() <= max {
        return vec![nal.to_vec()];
    }
    let indicator = (nal[0] & 0xE0) | FU_A;
    let kind = nal[0] & 0x1F;
    let chunks: Vec<&[u8]> = nal[1..].chunks(max - 2).collect();
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut p = Vec::with_capacity(c.len() + 2);
            p.push(indicator);
            let s = if i == 0 { 0x80 } else { 0 };
            let e = if i == last { 0x40 } else { 0 };
            p.push(s | e | kind);
            p.extend_from_slice(c);
            p
        })
        .collect()
}

/// One access unit ready to send.
pub struct Frame {
    pub payloads: Vec<Vec<u8>>,
    pub key: bool,
}

/// The clip's access units as RTP payloads.
pub fn packetize(clip: &Clip) -> Vec<Frame> {
    clip.frames
        .iter()
        .map(|f| Frame {
            payloads: f
                .iter()
                .flat_map(|n| packetize_nal(n, MAX_PAYLOAD))
                .collect(),
            key: Clip::is_key(f),
        })
        .collect()
}

/// Writes the 12-byte RTP header and the payload into `buf`.
fn rtp_packet(
    buf: &mut Vec<u8>,
    marker: bool,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: &[u8],
) -> usize {
    buf.clear();
    buf.push(0x80);
    buf.push(PAYLOAD_TYPE | if marker { 0x80 } else { 0 });
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&ts.to_be_bytes());
    buf.extend_from_slice(&ssrc.to_be_bytes());
    buf.extend_from_slice(payload);
    buf.len()
}

/// A compound RTCP packet: Sender Report (no report blocks) + SDES CNAME.
pub fn sender_report(
    ssrc: u32,
    wall: SystemTime,
    rtp_ts: u32,
    packets: u32,
    octets: u32,
    cname: &str,
) -> Vec<u8> {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&[0x80, 200, 0, 6]);
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&(secs as u32).to_be_bytes());
    p.extend_from_slice(&(frac as u32).to_be_bytes());
    p.extend_from_slice(&rtp_ts.to_be_bytes());
    p.extend_from_slice(&packets.to_be_bytes());
    p.extend_from_slice(&octets.to_be_bytes());
    // SDES: one chunk (SSRC, CNAME item, end), padded to 32 bits.
    let name = &cname.as_bytes()[..cname.len().min(255)];
    let mut chunk = Vec::with_capacity(name.len() + 8);
    chunk.extend_from_slice(&ssrc.to_be_bytes());
    chunk.push(1);
    chunk.push(name.len() as u8);
    chunk.extend_from_slice(name);
    chunk.push(0);
    while chunk.len() % 4 != 0 {
        chunk.push(0);
    }
    p.extend_from_slice(&[0x81, 202]);
    p.extend_from_slice(&((chunk.len() / 4) as u16).to_be_bytes());
    p.extend_from_slice(&chunk);
    p
}

/// One simulated camera's sender state and counters.
struct Camera {
    index: usize,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    ssrc: u32,
    seq: u16,
    ts0: u32,
    start: Instant,
    stop: Instant,
    frame: u64,
    packets: u64,
    /// RTP payload octets (for the Sender Report).
    octets: u64,
    /// UDP payload bytes (RTP header included).
    bytes: u64,
    rtcp_sent: u64,
}

impl Camera {
    fn due(&self, k: u64, fps: u32) -> Instant {
        self.start + Duration::from_nanos(k * 1_000_000_000 / u64::from(fps))
    }
}

#[derive(Default)]
struct SenderResult {
    cams: Vec<Camera>,
    lateness: Latencies,
    frames: u64,
    send_errors: u64,
    first_error: Option<String>,
}

/// Sends the frames of `cams` on schedule until each camera's stop time.
fn sender_thread(
    mut cams: Vec<Camera>,
    frames: Arc<Vec<Frame>>,
    fps: u32,
    clock: (Instant, SystemTime),
    bind: SocketAddr,
    prefix: String,
) -> SenderResult {
    let mut res = SenderResult::default();
    let sock = match UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => {
            res.first_error = Some(format!("binding the sender socket: {e}"));
            res.cams = cams;
            return res;
        }
    };
    let mut heap: BinaryHeap<Reverse<(Instant, usize)>> = cams
        .iter()
        .enumerate()
        .map(|(i, c)| Reverse((c.start, i)))
        .collect();
    let mut buf = Vec::with_capacity(RTP_HEADER + MAX_PAYLOAD);
    let ts_step = |k: u64| (k * CLOCK_RATE / u64::from(fps)) as u32;
    let sr_every = SR_INTERVAL_SECS * u64::from(fps);
    let fail = |res: &mut SenderResult, e: std::io::Error| {
        res.send_errors += 1;
        if res.first_error.is_none() {
            res.first_error = Some(format!("send_to: {e}"));
        }
    };
    while let Some(Reverse((due, i))) = heap.pop() {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        res.lateness
            .record(Instant::now().saturating_duration_since(due));
        let cam = &mut cams[i];
        let k = cam.frame;
        let frame = &frames[(k % frames.len() as u64) as usize];
        let ts = cam.ts0.wrapping_add(ts_step(k));
        if k.is_multiple_of(sr_every) {
            let wall = clock.1 + due.saturating_duration_since(clock.0);
            let cname = format!("{prefix}{}@freshet-bench", cam.index);
            let sr = sender_report(
                cam.ssrc,
                wall,
                ts,
                cam.packets as u32,
                cam.octets as u32,
                &cname,
            );
            match sock.send_to(&sr, cam.rtcp) {
                Ok(_) => cam.rtcp_sent += 1,
                Err(e) => fail(&mut res, e),
            }
        }
        let last = frame.payloads.len().saturating_sub(1);
        for (j, p) in frame.payloads.iter().enumerate() {
            let n = rtp_packet(&mut buf, j == last, cam.seq, ts, cam.ssrc, p);
            cam.seq = cam.seq.wrapping_add(1);
            match sock.send_to(&buf, cam.rtp) {
                Ok(_) => {
                    cam.packets += 1;
                    cam.octets += p.len() as u64;
                    cam.bytes += n as u64;
                }
                Err(e) => fail(&mut res, e),
            }
        }
        cam.frame += 1;
        res.frames += 1;
        let next = cam.due(k + 1, fps);
        if next < cam.stop {
            heap.push(Reverse((next, i)));
        }
    }
    res.cams = cams;
    res
}

/// Settings of one run.
pub struct RtpConfig {
    pub target: Target,
    /// Freshet's HTTP address and Host header (for `--target freshet`).
    pub endpoint: Option<(SocketAddr, String)>,
    /// Where the RTP/RTCP packets go.
    pub dest: IpAddr,
    pub cameras: usize,
    pub kbps: u64,
    pub duration: Duration,
    pub base_port: u16,
    pub server_pids: Vec<u32>,
    pub sender_threads: usize,
    /// Wait after the last packet before the feeds' counters are read.
    pub settle: Duration,
    /// `--target udp-only`: how long to wait for every RTP port to be bound.
    pub wait_ports: Duration,
    pub prefix: String,
    pub keep_feeds: bool,
    pub label: String,
}

impl RtpConfig {
    pub fn rtp_port(&self, i: usize) -> u16 {
        self.base_port + 2 * i as u16
    }
}

/// What the clip is made of.
#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct ClipInfo {
    pub source: String,
    pub frames: usize,
    pub seconds: f64,
    pub gop_frames: usize,
    pub filler_bytes_per_frame: usize,
    /// RTP payload kbit/s of one camera (10^3 bit/s).
    pub payload_kbps: f64,
    pub packets_per_sec: f64,
    pub max_frame_packets: usize,
    /// Packets of a key frame (sent back to back), on average.
    pub key_frame_packets: f64,
}

/// The load generator's side.
#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct SenderInfo {
    pub threads: usize,
    pub window_secs: f64,
    pub frames_sent: u64,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub rtcp_sent: u64,
    pub send_errors: u64,
    pub packets_per_sec: f64,
    /// UDP payload kbit/s per camera over its own sending time.
    pub kbps_per_camera: f64,
    pub cpu_secs: Option<f64>,
    pub cpu_cores: Option<f64>,
    pub lateness_p50_ms: f64,
    pub lateness_p99_ms: f64,
    pub lateness_max_ms: f64,
    /// Frames sent more than one frame interval after their due time.
    pub frames_late_over_interval: u64,
    /// The sender kept real time: p99 lateness within one frame interval and the
    /// last frame sent within 1 s of its time. Otherwise the run measured less load
    /// than asked for (the machine was saturated) and is not valid.
    pub paced: bool,
}

/// The receiving processes (`--server-pid`, summed).
#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct ReceiverInfo {
    pub pids: Vec<u32>,
    pub threads: Option<u64>,
    pub cpu_secs: Option<f64>,
    pub cpu_cores: Option<f64>,
    /// Receiver CPU milliseconds per camera per second of sending.
    pub cpu_ms_per_feed_sec: Option<f64>,
    /// Context switches of all the receivers' threads per second while sending.
    pub ctx_switches_per_sec: Option<f64>,
    /// CPU used from the last packet until the counters were read.
    pub cpu_secs_settle: Option<f64>,
    /// VmRSS before the feeds were created (freshet) / once every port is bound (udp-only).
    pub rss_before_kib: Option<u64>,
    /// VmRSS with the feeds created, before sending.
    pub rss_idle_kib: Option<u64>,
    /// Highest VmRSS sampled (every 100 ms) while sending.
    pub rss_peak_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    pub vm_hwm_kib: Option<u64>,
    /// (peak - before) / cameras.
    pub rss_per_feed_kib: Option<f64>,
    /// peak / cameras (the whole process, for a receiver that exists only for them).
    pub rss_peak_per_feed_kib: Option<f64>,
}

/// Kernel UDP figures.
#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct KernelInfo {
    pub rmem_default: Option<u64>,
    pub rmem_max: Option<u64>,
    /// `/proc/net/snmp` Udp counters (whole network namespace) after - before.
    pub rcvbuf_errors: Option<u64>,
    pub in_errors: Option<u64>,
    pub in_datagrams: Option<u64>,
    /// `drops` of the sockets bound to the cameras' RTP ports, after - before.
    pub socket_drops: u64,
    pub ports_with_drops: usize,
    /// RTP ports with no socket at the end of sending.
    pub ports_unbound: usize,
    /// Largest `rx_queue` (bytes waiting in one socket) seen.
    pub max_rx_queue_bytes: u64,
}

/// Freshet's feed counters, summed over the cameras' feeds.
#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct FeedTotals {
    pub feeds_read: usize,
    pub packets: u64,
    pub packets_lost: u64,
    pub frames: u64,
    pub dropped_frames: u64,
    pub fragments_stored: u64,
    pub discontinuities: u64,
    pub connections: u64,
    /// Feeds that counted fewer packets than were sent, or any loss/drop.
    pub feeds_with_loss: usize,
    pub states: BTreeMap<String, usize>,
    pub first_errors: Vec<String>,
}

#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(default)]
pub struct RtpReport {
    /// Name of the receiver in tables (`--label`).
    pub label: String,
    pub target: Option<Target>,
    pub cameras: usize,
    pub kbps: u64,
    pub fps: u32,
    pub duration_secs: f64,
    pub base_port: u16,
    pub clip: ClipInfo,
    pub sender: SenderInfo,
    pub receiver: ReceiverInfo,
    pub kernel: KernelInfo,
    pub feeds: Option<FeedTotals>,
    /// No packet lost anywhere on the way (kernel socket drops, and for Freshet its
    /// counters equal to what was sent with no loss and no dropped frames).
    pub loss_free: bool,
    pub load_before: String,
    pub load_after: String,
    pub errors: Vec<String>,
}

fn sum_pids(pids: &[u32], f: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| f(p)).sum()
}

fn rss_sum(pids: &[u32]) -> Option<u64> {
    sum_pids(pids, |p| read_status_kib(p, "VmRSS:"))
}

fn cpu_sum(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| process_cpu_secs(&p.to_string())).sum()
}

/// Context switches (voluntary + involuntary) of every thread of the processes.
fn ctx_switches(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0;
    for p in pids {
        let tasks = std::fs::read_dir(format!("/proc/{p}/task")).ok()?;
        for t in tasks.flatten() {
            let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
                continue;
            };
            for l in status.lines() {
                if l.starts_with("voluntary_ctxt_switches:")
                    || l.starts_with("nonvoluntary_ctxt_switches:")
                {
                    total += l
                        .split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
    }
    Some(total)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn read_u64_file(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The `Udp:` counters of `/proc/net/snmp` by name.
pub fn parse_snmp_udp(text: &str) -> HashMap<String, u64> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return HashMap::new();
    };
    names
        .split_whitespace()
        .skip(1)
        .zip(values.split_whitespace().skip(1))
        .filter_map(|(n, v)| Some((n.to_string(), v.parse().ok()?)))
        .collect()
}

fn snmp_udp() -> HashMap<String, u64> {
    std::fs::read_to_string("/proc/net/snmp")
        .map(|t| parse_snmp_udp(&t))
        .unwrap_or_default()
}

/// Per local port: (rx_queue bytes, drops) summed over the sockets bound to it.
pub fn parse_proc_net_udp(text: &str, out: &mut HashMap<u16, (u64, u64)>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 13 {
            continue;
        }
        let Some(port) = f[1]
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        let rx = f[4]
            .split(':')
            .nth(1)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0);
        let drops: u64 = f[f.len() - 1].parse().unwrap_or(0);
        let e = out.entry(port).or_insert((0, 0));
        e.0 += rx;
        e.1 += drops;
    }
}

fn udp_sockets() -> HashMap<u16, (u64, u64)> {
    let mut out = HashMap::new();
    for p in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(t) = std::fs::read_to_string(p) {
            parse_proc_net_udp(&t, &mut out);
        }
    }
    out
}

// ---- Freshet's feed API ----

fn request(method: &str, host: &str, path: &str, body: Option<&str>) -> Vec<u8> {
    let body = body.unwrap_or("");
    format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn call(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    req: &[u8],
) -> Result<(u16, serde_json::Value), BoxError> {
    if conn.is_none() {
        *conn = Some(Conn::connect(addr).await?);
    }
    let c = conn.as_mut().expect("connected above");
    let r = match tokio::time::timeout(Duration::from_secs(30), c.send(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            *conn = None;
            return Err(e.into());
        }
        Err(_) => {
            *conn = None;
            return Err("HTTP request timed out after 30 s".into());
        }
    };
    if r.close {
        *conn = None;
    }
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    Ok((r.status, v))
}

/// Creates (or replaces) the feeds with a few concurrent connections.
async fn create_feeds(cfg: &RtpConfig, addr: SocketAddr, host: &str) -> Result<(), BoxError> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let next = next.clone();
        let host = host.to_string();
        let jobs: Vec<(String, u16)> = (0..cfg.cameras)
            .map(|i| (format!("{}{i}", cfg.prefix), cfg.rtp_port(i)))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some((name, port)) = jobs.get(i) else {
                    return Ok::<(), BoxError>(());
                };
                let body = format!(
                    "{{\"RtpPort\":{port},\"Codec\":\"H264\",\"PayloadType\":{PAYLOAD_TYPE}}}"
                );
                let req = request(
                    "PUT",
                    &host,
                    &format!("/v1/video/feeds/{name}"),
                    Some(&body),
                );
                let (status, v) = call(&mut conn, addr, &req).await?;
                if status != 200 {
                    return Err(format!("PUT /v1/video/feeds/{name}: HTTP {status} {v}").into());
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// `GET /v1/video/feeds`: the feeds of this run by camera index.
async fn list_feeds(
    cfg: &RtpConfig,
    addr: SocketAddr,
    host: &str,
) -> Result<HashMap<usize, serde_json::Value>, BoxError> {
    let mut conn = None;
    let (status, v) = call(
        &mut conn,
        addr,
        &request("GET", host, "/v1/video/feeds", None),
    )
    .await?;
    if status != 200 {
        return Err(format!("GET /v1/video/feeds: HTTP {status} {v}").into());
    }
    let mut out = HashMap::new();
    for f in v["Feeds"].as_array().into_iter().flatten() {
        let Some(name) = f["StreamName"].as_str() else {
            continue;
        };
        if let Some(i) = name
            .strip_prefix(cfg.prefix.as_str())
            .and_then(|s| s.parse::<usize>().ok())
            && i < cfg.cameras
        {
            out.insert(i, f.clone());
        }
    }
    Ok(out)
}

async fn delete_feeds(cfg: &RtpConfig, addr: SocketAddr, host: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let mut conn = None;
    for i in 0..cfg.cameras {
        let name = format!("{}{i}", cfg.prefix);
        let req = request("DELETE", host, &format!("/v1/video/feeds/{name}"), None);
        match call(&mut conn, addr, &req).await {
            Ok((200, _)) => {}
            Ok((s, v)) => errors.push(format!("DELETE {name}: HTTP {s} {v}")),
            Err(e) => errors.push(format!("DELETE {name}: {e}")),
        }
    }
    errors
}

fn state_of(f: &serde_json::Value) -> String {
    f["Status"]["State"].as_str().unwrap_or("?").to_string()
}

/// Waits until every feed listens (state CONNECTING); fails on FAILED.
async fn wait_feeds_listening(
    cfg: &RtpConfig,
    addr: SocketAddr,
    host: &str,
) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let feeds = list_feeds(cfg, addr, host).await?;
        if let Some(f) = feeds.values().find(|f| state_of(f) == "FAILED") {
            return Err(format!(
                "feed {} FAILED: {}",
                f["StreamName"],
                f["Status"]["LastError"].as_str().unwrap_or("?")
            )
            .into());
        }
        let ready = feeds
            .values()
            .filter(|f| state_of(f) == "CONNECTING")
            .count();
        if ready == cfg.cameras {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {ready} of {} feeds listen after 30 s", cfg.cameras).into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `--target udp-only`: waits until every RTP port has a socket.
async fn wait_ports_bound(cfg: &RtpConfig) -> Result<(), BoxError> {
    let deadline = Instant::now() + cfg.wait_ports;
    loop {
        let socks = udp_sockets();
        let missing = (0..cfg.cameras)
            .filter(|&i| !socks.contains_key(&cfg.rtp_port(i)))
            .count();
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{missing} of {} RTP ports ({}..={}, step 2) have no socket after {:?}",
                cfg.cameras,
                cfg.rtp_port(0),
                cfg.rtp_port(cfg.cameras - 1),
                cfg.wait_ports
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Smallest multiplier >= 7 coprime with `n`, to spread key-frame phases.
fn coprime_step(n: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    (7..).find(|&m| gcd(m, n.max(1)) == 1).unwrap_or(1)
}

pub async fn run(cfg: RtpConfig, clip: Clip, clip_source: String) -> Result<RtpReport, BoxError> {
    let fps = clip.fps;
    let frame_interval = Duration::from_nanos(1_000_000_000 / u64::from(fps));
    let frames = Arc::new(packetize(&clip));
    let gop = clip.gop_frames();
    let mut report = RtpReport {
        label: cfg.label.clone(),
        target: Some(cfg.target),
        cameras: cfg.cameras,
        kbps: cfg.kbps,
        fps,
        duration_secs: cfg.duration.as_secs_f64(),
        base_port: cfg.base_port,
        load_before: loadavg(),
        ..Default::default()
    };
    {
        let payload: usize = frames.iter().flat_map(|f| &f.payloads).map(Vec::len).sum();
        let packets: usize = frames.iter().map(|f| f.payloads.len()).sum();
        let secs = frames.len() as f64 / f64::from(fps);
        report.clip = ClipInfo {
            source: clip_source,
            frames: frames.len(),
            seconds: secs,
            gop_frames: gop,
            filler_bytes_per_frame: clip.filler,
            payload_kbps: payload as f64 * 8.0 / 1000.0 / secs,
            packets_per_sec: packets as f64 / secs,
            max_frame_packets: frames.iter().map(|f| f.payloads.len()).max().unwrap_or(0),
            key_frame_packets: {
                let keys: Vec<usize> = frames
                    .iter()
                    .filter(|f| f.key)
                    .map(|f| f.payloads.len())
                    .collect();
                keys.iter().sum::<usize>() as f64 / keys.len().max(1) as f64
            },
        };
    }
    report.kernel.rmem_default = read_u64_file("/proc/sys/net/core/rmem_default");
    report.kernel.rmem_max = read_u64_file("/proc/sys/net/core/rmem_max");
    let pids = cfg.server_pids.clone();
    for &p in &pids {
        if !Path::new(&format!("/proc/{p}")).exists() {
            return Err(format!("--server-pid {p}: no such process").into());
        }
    }
    report.receiver.pids = pids.clone();
    report.receiver.rss_before_kib = rss_sum(&pids);

    match (cfg.target, &cfg.endpoint) {
        (Target::Freshet, Some((addr, host))) => {
            let t = Instant::now();
            create_feeds(&cfg, *addr, host).await?;
            wait_feeds_listening(&cfg, *addr, host).await?;
            eprintln!(
                "{} feeds created and listening in {:.1} s",
                cfg.cameras,
                t.elapsed().as_secs_f64()
            );
        }
        (Target::Freshet, None) => return Err("--target freshet needs an endpoint".into()),
        (Target::UdpOnly, _) => {
            wait_ports_bound(&cfg).await?;
            eprintln!("all {} RTP ports are bound", cfg.cameras);
            // The receivers exist only for these ports: "before" is once they are ready.
            tokio::time::sleep(Duration::from_millis(500)).await;
            report.receiver.rss_before_kib = rss_sum(&pids);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    report.receiver.rss_idle_kib = rss_sum(&pids);
    report.receiver.threads = sum_pids(&pids, |p| read_status_kib(p, "Threads:"));

    // Cameras: frame phases spread over one frame interval, key frames over one GOP.
    let step = coprime_step(gop);
    let mut rng = Rng::from_entropy(0x0072_7470);
    let t0 = Instant::now() + Duration::from_millis(300);
    let clock = (Instant::now(), SystemTime::now());
    let mut cams: Vec<Camera> = (0..cfg.cameras)
        .map(|i| {
            let delay_frames = ((i * step) % gop) as u32;
            let start = t0
                + frame_interval * delay_frames
                + frame_interval.mul_f64(i as f64 / cfg.cameras as f64);
            let port = cfg.rtp_port(i);
            Camera {
                index: i,
                rtp: SocketAddr::new(cfg.dest, port),
                rtcp: SocketAddr::new(cfg.dest, port + 1),
                ssrc: rng.next_u64() as u32,
                seq: rng.next_u64() as u16,
                ts0: rng.next_u64() as u32,
                start,
                stop: start + cfg.duration,
                frame: 0,
                packets: 0,
                octets: 0,
                bytes: 0,
                rtcp_sent: 0,
            }
        })
        .collect();
    let last_stop = cams.iter().map(|c| c.stop).max().unwrap_or(t0);

    let rtp_ports: HashSet<u16> = (0..cfg.cameras).map(|i| cfg.rtp_port(i)).collect();
    let socks_before = udp_sockets();
    let snmp_before = snmp_udp();
    let cpu_self_before = process_cpu_secs("self");
    let cpu_srv_before = cpu_sum(&pids);
    let ctx_before = ctx_switches(&pids);
    let wall_start = Instant::now();

    // Sampler: receiver RSS every 100 ms, socket queues every second.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (done, pids, ports) = (done.clone(), pids.clone(), rtp_ports.clone());
        tokio::spawn(async move {
            let (mut peak_rss, mut max_rx) = (None::<u64>, 0u64);
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                if let Some(r) = rss_sum(&pids) {
                    peak_rss = Some(peak_rss.map_or(r, |p| p.max(r)));
                }
                if n.is_multiple_of(10) {
                    for (port, (rx, _)) in udp_sockets() {
                        if ports.contains(&port) {
                            max_rx = max_rx.max(rx);
                        }
                    }
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (peak_rss, max_rx)
        })
    };

    eprintln!(
        "{} cameras sending {:.0} kbit/s each for {:?} to {} ports {}..={} ({} sender threads)",
        cfg.cameras,
        report.clip.payload_kbps,
        cfg.duration,
        cfg.dest,
        cfg.rtp_port(0),
        cfg.rtp_port(cfg.cameras - 1),
        cfg.sender_threads
    );
    let threads = cfg.sender_threads.clamp(1, cfg.cameras);
    let mut shares: Vec<Vec<Camera>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, c) in cams.drain(..).enumerate() {
        shares[i % threads].push(c);
    }
    let bind = SocketAddr::new(
        if cfg.dest.is_ipv4() {
            IpAddr::from([0u8, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        },
        0,
    );
    let handles: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let (frames, prefix) = (frames.clone(), cfg.prefix.clone());
            std::thread::Builder::new()
                .name("rtp-sender".into())
                .spawn(move || sender_thread(share, frames, fps, clock, bind, prefix))
                .expect("spawning a sender thread")
        })
        .collect();
    let results = tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .map(|h| h.join().expect("sender thread panicked"))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| e.to_string())?;
    let window = wall_start.elapsed();
    let cpu_self_after = process_cpu_secs("self");
    let cpu_srv_after = cpu_sum(&pids);
    let ctx_after = ctx_switches(&pids);
    done.store(true, Ordering::Relaxed);
    let (peak_rss, max_rx) = sampler.await.map_err(|e| e.to_string())?;
    let snmp_after = snmp_udp();
    let socks_after = udp_sockets();
    let finished_late = Instant::now() > last_stop + Duration::from_secs(1);
    if finished_late {
        report
            .errors
            .push("the senders finished more than 1 s after the last scheduled frame".into());
    }

    // Sender figures.
    let mut lateness = Latencies::default();
    let mut sent_per_cam: Vec<(usize, u64, u64)> = Vec::new(); // (index, packets, frames)
    let s = &mut report.sender;
    s.threads = threads;
    s.window_secs = window.as_secs_f64();
    let late_limit = frame_interval.as_micros() as u64;
    for r in results {
        s.frames_sent += r.frames;
        s.send_errors += r.send_errors;
        if let Some(e) = r.first_error {
            report.errors.push(e);
        }
        s.frames_late_over_interval += r
            .lateness
            .micros
            .iter()
            .filter(|&&m| m > late_limit)
            .count() as u64;
        lateness.merge(r.lateness);
        for c in r.cams {
            s.packets_sent += c.packets;
            s.bytes_sent += c.bytes;
            s.rtcp_sent += c.rtcp_sent;
            sent_per_cam.push((c.index, c.packets, c.frame));
        }
    }
    let feed_secs = cfg.duration.as_secs_f64() * cfg.cameras as f64;
    s.packets_per_sec = s.packets_sent as f64 / cfg.duration.as_secs_f64();
    s.kbps_per_camera = s.bytes_sent as f64 * 8.0 / 1000.0 / feed_secs;
    s.cpu_secs = cpu_self_after.zip(cpu_self_before).map(|(a, b)| a - b);
    s.cpu_cores = s.cpu_secs.map(|c| c / window.as_secs_f64());
    (s.lateness_p50_ms, s.lateness_p99_ms, s.lateness_max_ms) = lateness.summary();
    s.paced = !finished_late && s.lateness_p99_ms * 1000.0 <= late_limit as f64;
    if !s.paced {
        report.errors.push(
            "the sender did not keep real time (see lateness): the load was lower than asked \
             for, the run is not valid"
                .into(),
        );
    }

    // Receiver CPU and memory over the sending window.
    let rcv = &mut report.receiver;
    rcv.cpu_secs = cpu_srv_after.zip(cpu_srv_before).map(|(a, b)| a - b);
    rcv.cpu_cores = rcv.cpu_secs.map(|c| c / window.as_secs_f64());
    // Camera-seconds actually sent fall inside the window; CPU per camera-second.
    rcv.cpu_ms_per_feed_sec = rcv.cpu_secs.map(|c| c * 1000.0 / feed_secs);
    rcv.ctx_switches_per_sec = ctx_after
        .zip(ctx_before)
        .map(|(a, b)| a.saturating_sub(b) as f64 / window.as_secs_f64());
    rcv.rss_peak_kib = peak_rss;
    rcv.rss_per_feed_kib = peak_rss
        .zip(rcv.rss_before_kib)
        .map(|(p, b)| (p as f64 - b as f64) / cfg.cameras as f64);
    rcv.rss_peak_per_feed_kib = peak_rss.map(|p| p as f64 / cfg.cameras as f64);

    // Kernel.
    let delta = |k: &str| {
        snmp_after
            .get(k)
            .zip(snmp_before.get(k))
            .map(|(a, b)| a.saturating_sub(*b))
    };
    let k = &mut report.kernel;
    k.rcvbuf_errors = delta("RcvbufErrors");
    k.in_errors = delta("InErrors");
    k.in_datagrams = delta("InDatagrams");
    k.max_rx_queue_bytes = max_rx;
    let mut port_drops: HashMap<u16, u64> = HashMap::new();
    for &port in &rtp_ports {
        match socks_after.get(&port) {
            None => k.ports_unbound += 1,
            Some(&(_, after)) => {
                let before = socks_before.get(&port).map_or(0, |v| v.1);
                let d = after.saturating_sub(before);
                if d > 0 {
                    k.ports_with_drops += 1;
                    k.socket_drops += d;
                    port_drops.insert(port, d);
                }
            }
        }
    }
    let mut loss_free = k.socket_drops == 0 && k.ports_unbound == 0 && s_ok(&report.sender);

    // Freshet's counters once every feed has gone idle and stored its last fragment.
    if let (Target::Freshet, Some((addr, host))) = (cfg.target, &cfg.endpoint) {
        let settle_from = Instant::now();
        let cpu_settle_before = cpu_sum(&pids);
        tokio::time::sleep(cfg.settle).await;
        let mut feeds = list_feeds(&cfg, *addr, host).await?;
        let extra_deadline = Instant::now() + Duration::from_secs(5);
        while feeds.values().any(|f| state_of(f) == "RECEIVING") && Instant::now() < extra_deadline
        {
            tokio::time::sleep(Duration::from_millis(250)).await;
            feeds = list_feeds(&cfg, *addr, host).await?;
        }
        report.receiver.cpu_secs_settle = cpu_sum(&pids).zip(cpu_settle_before).map(|(a, b)| a - b);
        eprintln!(
            "feed counters read {:.1} s after the last packet",
            settle_from.elapsed().as_secs_f64()
        );
        let mut t = FeedTotals::default();
        for &(i, packets_sent, frames_sent) in &sent_per_cam {
            let Some(f) = feeds.get(&i) else {
                t.feeds_with_loss += 1;
                continue;
            };
            t.feeds_read += 1;
            let st = &f["Status"];
            let n = |k: &str| st[k].as_u64().unwrap_or(0);
            *t.states.entry(state_of(f)).or_default() += 1;
            t.packets += n("Packets");
            t.packets_lost += n("PacketsLost");
            t.frames += n("Frames");
            t.dropped_frames += n("DroppedFrames");
            t.fragments_stored += n("FragmentsStored");
            t.discontinuities += n("Discontinuities");
            t.connections += n("Connections");
            let lossy = n("Packets") != packets_sent
                || n("PacketsLost") > 0
                || n("DroppedFrames") > 0
                || n("Frames") != frames_sent
                || port_drops.contains_key(&cfg.rtp_port(i));
            if lossy {
                t.feeds_with_loss += 1;
                if t.first_errors.len() < 5 {
                    t.first_errors.push(format!(
                        "{}{i}: sent {packets_sent} packets / {frames_sent} frames, \
                         server Packets {} PacketsLost {} Frames {} DroppedFrames {}{}",
                        cfg.prefix,
                        n("Packets"),
                        n("PacketsLost"),
                        n("Frames"),
                        n("DroppedFrames"),
                        st["LastError"]
                            .as_str()
                            .map(|e| format!(", LastError {e}"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        loss_free &= t.feeds_with_loss == 0;
        report.feeds = Some(t);
        report.receiver.rss_after_kib = rss_sum(&pids);
        report.receiver.vm_hwm_kib = sum_pids(&pids, |p| read_status_kib(p, "VmHWM:"));
        if !cfg.keep_feeds {
            let errs = delete_feeds(&cfg, *addr, host).await;
            if !errs.is_empty() {
                eprintln!("warning: {} DELETE calls failed: {}", errs.len(), errs[0]);
            }
        }
    } else {
        tokio::time::sleep(Duration::from_millis(500)).await;
        report.receiver.rss_after_kib = rss_sum(&pids);
        report.receiver.vm_hwm_kib = sum_pids(&pids, |p| read_status_kib(p, "VmHWM:"));
    }
    report.loss_free = loss_free;
    report.load_after = loadavg();
    Ok(report)
}

fn s_ok(s: &SenderInfo) -> bool {
    s.send_errors == 0
}

/// Reads `--clip`, or generates a clip with ffmpeg into a temporary file.
pub fn load_clip(
    path: Option<&Path>,
    ffmpeg: &str,
    kbps: u64,
    fps: u32,
    seconds: u32,
) -> Result<(Clip, String), BoxError> {
    let (data, source) = match path {
        Some(p) => (
            std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?,
            p.display().to_string(),
        ),
        None => {
            let tmp: PathBuf = std::env::temp_dir().join(format!(
                "freshet-bench-rtp-{}-{kbps}k.h264",
                std::process::id()
            ));
            let t = Instant::now();
            Clip::generate(ffmpeg, kbps, fps, seconds, &tmp)?;
            let data = std::fs::read(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            let _ = std::fs::remove_file(&tmp);
            eprintln!(
                "generated a {seconds} s {kbps} kbit/s H.264 clip with {ffmpeg} in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            (
                data,
                format!(
                    "ffmpeg testsrc2 640x360@{fps} libx264 -g {} -bf 0 -b:v {kbps}k, {seconds} s",
                    2 * fps
                ),
            )
        }
    };
    let mut clip = Clip::from_annexb(&data, fps)?;
    clip.pad_to_kbps(kbps);
    Ok((clip, source))
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn mib(v: Option<u64>) -> String {
    v.map(|v| format!("{:.1} MiB", v as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

/// The human-readable table of one run.
pub fn table(r: &RtpReport) -> String {
    let mut o = String::new();
    let target = match r.target {
        Some(Target::Freshet) => "freshet",
        Some(Target::UdpOnly) => "udp-only",
        None => "?",
    };
    let row = |o: &mut String, k: &str, v: String| {
        let _ = writeln!(o, "{k:<44} {v}");
    };
    let _ = writeln!(
        o,
        "== {} (rtp --target {target}): {} cameras x {} kbit/s, {} fps, {:.0} s ==",
        r.label, r.cameras, r.kbps, r.fps, r.duration_secs
    );
    row(
        &mut o,
        "load average before / after",
        format!("{} / {}", r.load_before, r.load_after),
    );
    row(
        &mut o,
        "clip",
        format!(
            "{} frames ({:.1} s, GOP {}), {:.0} kbit/s RTP payload, {:.0} packets/s, \
             {:.0} packets per key frame, filler {} B/frame",
            r.clip.frames,
            r.clip.seconds,
            r.clip.gop_frames,
            r.clip.payload_kbps,
            r.clip.packets_per_sec,
            r.clip.key_frame_packets,
            r.clip.filler_bytes_per_frame
        ),
    );
    let s = &r.sender;
    row(
        &mut o,
        "sent: frames / RTP packets / RTCP SRs",
        format!("{} / {} / {}", s.frames_sent, s.packets_sent, s.rtcp_sent),
    );
    row(
        &mut o,
        "sent rate",
        format!(
            "{:.0} packets/s, {:.1} Mbit/s total, {:.0} kbit/s per camera (UDP payload)",
            s.packets_per_sec,
            s.bytes_sent as f64 * 8.0 / 1e6 / r.duration_secs.max(1e-9),
            s.kbps_per_camera
        ),
    );
    row(
        &mut o,
        "sender CPU",
        match (s.cpu_secs, s.cpu_cores) {
            (Some(c), Some(k)) => format!(
                "{c:.2} s in {:.1} s ({k:.3} cores, {} threads), send errors {}",
                s.window_secs, s.threads, s.send_errors
            ),
            _ => "-".into(),
        },
    );
    row(
        &mut o,
        "frame send lateness p50 / p99 / max",
        format!(
            "{:.3} / {:.3} / {:.3} ms ({} frames later than one interval)",
            s.lateness_p50_ms, s.lateness_p99_ms, s.lateness_max_ms, s.frames_late_over_interval
        ),
    );
    let k = &r.kernel;
    row(
        &mut o,
        "net.core.rmem_default / rmem_max",
        format!("{} / {}", opt(k.rmem_default), opt(k.rmem_max)),
    );
    row(
        &mut o,
        "kernel Udp RcvbufErrors / InErrors (delta)",
        format!("{} / {}", opt(k.rcvbuf_errors), opt(k.in_errors)),
    );
    row(
        &mut o,
        "socket drops on the RTP ports",
        format!(
            "{} packets on {} ports ({} ports unbound), max rx_queue {} B",
            k.socket_drops, k.ports_with_drops, k.ports_unbound, k.max_rx_queue_bytes
        ),
    );
    if let Some(f) = &r.feeds {
        row(
            &mut o,
            "feeds read / states",
            format!(
                "{} / {}",
                f.feeds_read,
                f.states
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        row(
            &mut o,
            "server Packets / PacketsLost",
            format!(
                "{} / {} (sent {})",
                f.packets, f.packets_lost, s.packets_sent
            ),
        );
        row(
            &mut o,
            "server Frames / DroppedFrames",
            format!(
                "{} / {} (sent {})",
                f.frames, f.dropped_frames, s.frames_sent
            ),
        );
        row(
            &mut o,
            "server FragmentsStored / Discontinuities",
            format!("{} / {}", f.fragments_stored, f.discontinuities),
        );
        row(&mut o, "feeds with any loss", f.feeds_with_loss.to_string());
        for e in &f.first_errors {
            let _ = writeln!(o, "  {e}");
        }
    }
    let v = &r.receiver;
    row(
        &mut o,
        "receiver pids / threads",
        format!(
            "{} / {}",
            v.pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            opt(v.threads)
        ),
    );
    row(
        &mut o,
        "receiver CPU while sending",
        match (v.cpu_secs, v.cpu_cores, v.cpu_ms_per_feed_sec) {
            (Some(c), Some(k), Some(m)) => format!(
                "{c:.2} s ({k:.3} cores; {m:.3} ms CPU per feed per second, {:.2} % of a core per feed)",
                m / 10.0
            ),
            _ => "-".into(),
        },
    );
    row(
        &mut o,
        "receiver context switches",
        v.ctx_switches_per_sec
            .map(|x| {
                format!(
                    "{x:.0}/s ({:.2} per packet)",
                    x / s.packets_per_sec.max(1e-9)
                )
            })
            .unwrap_or_else(|| "-".into()),
    );
    if let Some(c) = v.cpu_secs_settle {
        row(
            &mut o,
            "receiver CPU after the last packet",
            format!("{c:.2} s"),
        );
    }
    row(
        &mut o,
        "receiver RSS before / idle / peak / after",
        format!(
            "{} / {} / {} / {}",
            mib(v.rss_before_kib),
            mib(v.rss_idle_kib),
            mib(v.rss_peak_kib),
            mib(v.rss_after_kib)
        ),
    );
    row(
        &mut o,
        "receiver RSS per feed (peak - before; peak / N)",
        match (v.rss_per_feed_kib, v.rss_peak_per_feed_kib) {
            (Some(a), Some(b)) => format!("{a:.1} KiB; {b:.1} KiB"),
            _ => "-".into(),
        },
    );
    row(&mut o, "receiver VmHWM", mib(v.vm_hwm_kib));
    row(
        &mut o,
        "loss-free / sender kept real time",
        format!(
            "{} / {}",
            if r.loss_free { "yes" } else { "NO" },
            if s.paced { "yes" } else { "NO (run not valid)" }
        ),
    );
    for e in &r.errors {
        let _ = writeln!(o, "error: {e}");
    }
    o
}

/// Saved results side by side, then one summary line per run.
pub fn compare(runs: &[RtpReport]) -> String {
    let mut o = String::new();
    let f1 = |v: Option<f64>, d: usize| match v {
        Some(v) => format!("{v:.d$}"),
        None => "-".into(),
    };
    let line = |o: &mut String, k: &str, vals: Vec<String>| {
        let _ = write!(o, "{k:<42}");
        for v in vals {
            let _ = write!(o, " {v:>22}");
        }
        let _ = writeln!(o);
    };
    let each = |f: &dyn Fn(&RtpReport) -> String| runs.iter().map(f).collect::<Vec<_>>();
    line(&mut o, "", each(&|r| r.label.clone()));
    line(&mut o, "cameras", each(&|r| r.cameras.to_string()));
    line(
        &mut o,
        "kbit/s per camera (sent, UDP payload)",
        each(&|r| format!("{:.0}", r.sender.kbps_per_camera)),
    );
    line(
        &mut o,
        "RTP packets sent",
        each(&|r| r.sender.packets_sent.to_string()),
    );
    line(
        &mut o,
        "packets counted by the receiver",
        each(&|r| opt(r.feeds.as_ref().map(|f| f.packets))),
    );
    line(
        &mut o,
        "PacketsLost / DroppedFrames (receiver)",
        each(&|r| match &r.feeds {
            Some(f) => format!("{} / {}", f.packets_lost, f.dropped_frames),
            None => "-".into(),
        }),
    );
    line(
        &mut o,
        "fragments stored",
        each(&|r| opt(r.feeds.as_ref().map(|f| f.fragments_stored))),
    );
    line(
        &mut o,
        "feeds with any loss",
        each(&|r| opt(r.feeds.as_ref().map(|f| f.feeds_with_loss))),
    );
    line(
        &mut o,
        "socket drops (ports with drops)",
        each(&|r| format!("{} ({})", r.kernel.socket_drops, r.kernel.ports_with_drops)),
    );
    line(
        &mut o,
        "Udp RcvbufErrors / InErrors (delta)",
        each(&|r| {
            format!(
                "{} / {}",
                opt(r.kernel.rcvbuf_errors),
                opt(r.kernel.in_errors)
            )
        }),
    );
    line(
        &mut o,
        "max rx_queue of one socket (bytes)",
        each(&|r| r.kernel.max_rx_queue_bytes.to_string()),
    );
    line(
        &mut o,
        "loss-free",
        each(&|r| if r.loss_free { "yes" } else { "NO" }.into()),
    );
    line(
        &mut o,
        "receiver CPU (cores)",
        each(&|r| f1(r.receiver.cpu_cores, 3)),
    );
    line(
        &mut o,
        "receiver CPU ms per feed per second",
        each(&|r| f1(r.receiver.cpu_ms_per_feed_sec, 3)),
    );
    line(
        &mut o,
        "receiver threads",
        each(&|r| opt(r.receiver.threads)),
    );
    line(
        &mut o,
        "receiver context switches per second",
        each(&|r| f1(r.receiver.ctx_switches_per_sec, 0)),
    );
    line(
        &mut o,
        "receiver RSS idle / peak (MiB)",
        each(&|r| {
            format!(
                "{} / {}",
                f1(r.receiver.rss_idle_kib.map(|v| v as f64 / 1024.0), 1),
                f1(r.receiver.rss_peak_kib.map(|v| v as f64 / 1024.0), 1)
            )
        }),
    );
    line(
        &mut o,
        "receiver RSS per feed: peak-before / peak/N",
        each(&|r| {
            format!(
                "{} / {} KiB",
                f1(r.receiver.rss_per_feed_kib, 0),
                f1(r.receiver.rss_peak_per_feed_kib, 0)
            )
        }),
    );
    line(
        &mut o,
        "sender CPU (cores)",
        each(&|r| f1(r.sender.cpu_cores, 3)),
    );
    line(
        &mut o,
        "frame send lateness p99 / max (ms)",
        each(&|r| {
            format!(
                "{:.2} / {:.1}",
                r.sender.lateness_p99_ms, r.sender.lateness_max_ms
            )
        }),
    );
    line(
        &mut o,
        "sender kept real time (valid run)",
        each(&|r| if r.sender.paced { "yes" } else { "NO" }.into()),
    );
    line(
        &mut o,
        "load average before (1 min)",
        each(&|r| r.load_before.split(' ').next().unwrap_or("").to_string()),
    );
    for r in runs {
        let _ = writeln!(
            o,
            "summary {}: {} feeds x {:.0} kbit/s, loss {}, {} cores ({} ms CPU per feed per second), peak RSS {} ({} KiB per feed){}",
            r.label,
            r.cameras,
            r.sender.kbps_per_camera,
            if r.loss_free { "none" } else { "YES" },
            f1(r.receiver.cpu_cores, 3),
            f1(r.receiver.cpu_ms_per_feed_sec, 3),
            mib(r.receiver.rss_peak_kib),
            f1(r.receiver.rss_peak_per_feed_kib, 0),
            if r.sender.paced {
                ""
            } else {
                "; NOT VALID: the sender fell behind real time"
            }
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_annexb_and_access_units() {
        let mut s = Vec::new();
        // AUD, SPS, PPS, IDR (first_mb 0) | AUD, P slice (first_mb 0), P slice (first_mb != 0)
        for nal in [
            &[0x09, 0xF0][..],
            &[0x67, 0x42, 0x00],
            &[0x68, 0xCE],
            &[0x65, 0x88, 0x01],
            &[0x09, 0xF0],
            &[0x41, 0x9A, 0x02],
            &[0x41, 0x40, 0x03, 0x00],
        ] {
            s.extend_from_slice(&[0, 0, 0, 1]);
            s.extend_from_slice(nal);
        }
        let clip = Clip::from_annexb(&s, 25).unwrap();
        assert_eq!(clip.frames.len(), 2);
        assert_eq!(clip.frames[0].len(), 3);
        // Trailing zero of the last NAL is a trailing_zero_8bits, stripped.
        assert_eq!(
            clip.frames[1],
            vec![vec![0x41, 0x9A, 0x02], vec![0x41, 0x40, 0x03]]
        );
        // Without AUDs, the slice with first_mb 0 starts the next access unit.
        let no_aud: Vec<u8> = [
            &[0, 0, 1, 0x65, 0x88][..],
            &[0, 0, 1, 0x41, 0x9A],
            &[0, 0, 1, 0x41, 0x9B],
        ]
        .concat();
        assert_eq!(Clip::from_annexb(&no_aud, 25).unwrap().frames.len(), 3);
    }

    #[test]
    fn fu_a_fragments_reassemble() {
        let nal: Vec<u8> = std::iter::once(0x65)
            .chain((0..5000u32).map(|i| i as u8))
            .collect();
        let parts = packetize_nal(&nal, MAX_PAYLOAD);
        assert_eq!(parts.len(), 4);
        assert!(parts.iter().all(|p| p.len() <= MAX_PAYLOAD));
        assert_eq!(parts[0][0], 0x60 | FU_A);
        assert_eq!(parts[0][1], 0x80 | 5);
        assert_eq!(parts[3][1], 0x40 | 5);
        let mut back = vec![(parts[0][0] & 0xE0) | (parts[0][1] & 0x1F)];
        for p in &parts {
            back.extend_from_slice(&p[2..]);
        }
        assert_eq!(back, nal);
        assert_eq!(packetize_nal(&nal[..MAX_PAYLOAD], MAX_PAYLOAD).len(), 1);
    }

    #[test]
    fn pads_with_filler() {
        let mut clip = Clip {
            frames: vec![vec![vec![0x65, 1, 2, 3]]; 25],
            fps: 25,
            filler: 0,
        };
        let n = clip.pad_to_kbps(8); // 1000 bytes/s = 40 bytes per frame
        assert_eq!(n, 36);
        let f = &clip.frames[0][1];
        assert_eq!((f[0], f[n - 1]), (NAL_FILLER, 0x80));
        assert_eq!(clip.pad_to_kbps(8), 0);
    }

    #[test]
    fn sender_report_layout() {
        let wall = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let p = sender_report(0xAABBCCDD, wall, 1234, 10, 20, "cam");
        assert_eq!(&p[..4], &[0x80, 200, 0, 6]);
        assert_eq!(
            u32::from_be_bytes(p[8..12].try_into().unwrap()) as u64,
            1_700_000_000 + NTP_UNIX_OFFSET
        );
        assert_eq!(u32::from_be_bytes(p[12..16].try_into().unwrap()), 1 << 31);
        assert_eq!(u32::from_be_bytes(p[16..20].try_into().unwrap()), 1234);
        assert_eq!(p[29], 202);
        let sdes_len = (u16::from_be_bytes([p[30], p[31]]) as usize + 1) * 4;
        assert_eq!(28 + sdes_len, p.len());
        assert_eq!(p.len() % 4, 0);
    }

    #[test]
    fn rtp_header() {
        let mut buf = Vec::new();
        let n = rtp_packet(&mut buf, true, 0xFFFF, 90_000, 7, &[1, 2]);
        assert_eq!(n, 14);
        assert_eq!(&buf[..4], &[0x80, 0x80 | PAYLOAD_TYPE, 0xFF, 0xFF]);
        assert_eq!(&buf[8..12], &7u32.to_be_bytes());
    }

    #[test]
    fn parses_proc_files() {
        let udp = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          1: 00000000:4E20 00000000:0000 07 00000000:00000A00 00:00000000 00000000     0        0 12345 2 0000000000000000 17\n";
        let mut m = HashMap::new();
        parse_proc_net_udp(udp, &mut m);
        assert_eq!(m.get(&20000), Some(&(0xA00, 17)));
        let snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\nUdp: 5 0 3 4 2\n";
        let u = parse_snmp_udp(snmp);
        assert_eq!((u["InErrors"], u["RcvbufErrors"]), (3, 2));
    }

    #[test]
    fn generated_clip_packetizes() {
        let dir = std::env::temp_dir().join(format!("rtp-clip-test-{}.h264", std::process::id()));
        if Clip::generate("ffmpeg", 1000, 25, 2, &dir).is_err() {
            return; // no ffmpeg on this machine
        }
        let data = std::fs::read(&dir).unwrap();
        let _ = std::fs::remove_file(&dir);
        let clip = Clip::from_annexb(&data, 25).unwrap();
        assert_eq!(clip.frames.len(), 50);
        assert_eq!(clip.gop_frames(), 50);
        let frames = packetize(&clip);
        assert!(frames[0].key && !frames[1].key);
        assert!(
            frames
                .iter()
                .flat_map(|f| &f.payloads)
                .all(|p| p.len() <= MAX_PAYLOAD)
        );
    }
}
