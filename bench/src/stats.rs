//! Measurement helpers: latency samples with nearest-rank percentiles, the
//! per-phase result record, and a sampler of a server process's resident
//! memory (`/proc/PID/status`).

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Latency samples in microseconds.
#[derive(Default, Clone, Debug)]
pub struct Latencies {
    pub micros: Vec<u64>,
}

impl Latencies {
    pub fn record(&mut self, d: Duration) {
        self.micros.push(d.as_micros() as u64);
    }

    pub fn merge(&mut self, other: Latencies) {
        self.micros.extend(other.micros);
    }

    /// p50, p99 and max in milliseconds (0 when there are no samples).
    pub fn summary(&mut self) -> (f64, f64, f64) {
        if self.micros.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        self.micros.sort_unstable();
        (
            self.percentile_ms(50.0),
            self.percentile_ms(99.0),
            *self.micros.last().expect("non-empty") as f64 / 1000.0,
        )
    }

    /// Nearest-rank percentile of the (sorted) samples, in milliseconds.
    fn percentile_ms(&self, p: f64) -> f64 {
        let n = self.micros.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        self.micros[rank.clamp(1, n) - 1] as f64 / 1000.0
    }
}

/// Results of one phase.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct PhaseReport {
    pub phase: String,
    pub operation: String,
    /// Calls made, including failed ones.
    pub calls: u64,
    /// Calls that failed as a whole (transport error, timeout, non-200).
    pub failed_calls: u64,
    /// Records rejected inside a 200 answer (PutRecords `FailedRecordCount`).
    pub failed_records: u64,
    /// Records successfully written (put) or read (get).
    pub records: u64,
    /// Record payload bytes (decoded data, not base64/JSON).
    pub payload_bytes: u64,
    pub elapsed_secs: f64,
    pub records_per_sec: f64,
    /// Payload megabytes (10^6 bytes) per second.
    pub mb_per_sec: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Highest sampled server VmRSS during the phase, if `--server-pid` was given.
    pub server_peak_rss_kib: Option<u64>,
    /// CPU time (user + system) the server used during the timed part, if known.
    pub server_cpu_secs: Option<f64>,
    /// CPU time the load generator itself used during the timed part.
    pub client_cpu_secs: Option<f64>,
    /// The first few distinct error descriptions, for diagnosis.
    pub errors: Vec<String>,
}

impl PhaseReport {
    pub fn finish(&mut self, lat: &mut Latencies) {
        let secs = self.elapsed_secs.max(1e-9);
        self.records_per_sec = self.records as f64 / secs;
        self.mb_per_sec = self.payload_bytes as f64 / 1e6 / secs;
        let (p50, p99, max) = lat.summary();
        self.latency_p50_ms = p50;
        self.latency_p99_ms = p99;
        self.latency_max_ms = max;
    }

    pub fn failures(&self) -> u64 {
        self.failed_calls + self.failed_records
    }
}

/// CPU time of this process and, optionally, of the server process.
#[derive(Clone, Copy, Debug)]
pub struct CpuMeter {
    pub server_pid: Option<u32>,
}

/// A reading of [`CpuMeter`]: (client, server) CPU seconds.
#[derive(Clone, Copy, Debug)]
pub struct CpuReading(Option<f64>, Option<f64>);

impl CpuMeter {
    pub fn read(&self) -> CpuReading {
        CpuReading(
            process_cpu_secs("self"),
            self.server_pid
                .and_then(|p| process_cpu_secs(&p.to_string())),
        )
    }

    /// Stores the CPU time used since `start` into the phase report.
    pub fn finish(&self, start: CpuReading, report: &mut PhaseReport) {
        let end = self.read();
        report.client_cpu_secs = end.0.zip(start.0).map(|(b, a)| b - a);
        report.server_cpu_secs = end.1.zip(start.1).map(|(b, a)| b - a);
    }
}

/// utime + stime of `/proc/<pid>/stat`, in seconds (USER_HZ is 100 on Linux).
pub fn process_cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Keeps the first few distinct error messages.
pub fn note_error(errors: &mut Vec<String>, msg: String) {
    if errors.len() < 5 && !errors.contains(&msg) {
        errors.push(msg);
    }
}

/// Samples VmRSS of a process every 100 ms in a background task.
pub struct RssSampler {
    pid: u32,
    phase_peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let phase_peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak, halt) = (phase_peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !halt.load(Ordering::Relaxed) {
                if let Some(kib) = read_status_kib(pid, "VmRSS:") {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        RssSampler {
            pid,
            phase_peak,
            stop,
        }
    }

    /// Starts a new phase: returns the peak of the previous one and resets it
    /// to the current RSS.
    pub fn take_phase_peak(&self) -> Option<u64> {
        let now = read_status_kib(self.pid, "VmRSS:").unwrap_or(0);
        let peak = self.phase_peak.swap(now, Ordering::Relaxed).max(now);
        (peak > 0).then_some(peak)
    }

    /// Lifetime peak RSS of the process (VmHWM), if still readable.
    pub fn high_water_mark(&self) -> Option<u64> {
        read_status_kib(self.pid, "VmHWM:")
    }

    pub fn is_alive(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads a `kB` field such as `VmRSS:` from `/proc/PID/status`.
pub fn read_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut l = Latencies {
            micros: (1..=100).rev().map(|x| x * 1000).collect(),
        };
        assert_eq!(l.summary(), (50.0, 99.0, 100.0));
        let mut one = Latencies { micros: vec![2500] };
        assert_eq!(one.summary(), (2.5, 2.5, 2.5));
        assert_eq!(Latencies::default().summary(), (0.0, 0.0, 0.0));
    }

    #[test]
    fn reads_own_cpu() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(process_cpu_secs("self").unwrap() >= 0.0);
    }

    #[test]
    fn reads_own_status() {
        let pid = std::process::id();
        assert!(read_status_kib(pid, "VmRSS:").unwrap() > 0);
        assert!(read_status_kib(pid, "VmHWM:").unwrap() > 0);
    }
}
