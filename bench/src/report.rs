//! Result presentation: the per-run record (also emitted as JSON), the
//! human-readable table, and the side-by-side comparison of two runs.

use crate::stats::PhaseReport;
use crate::visibility::VisibilityReport;
use serde::{Deserialize, Serialize};
use std::fmt::Write;

/// Everything one `freshet-bench kinesis` run measured.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct RunReport {
    pub label: String,
    pub endpoint: String,
    pub stream: String,
    pub shards: u32,
    pub clients: usize,
    pub batch: usize,
    pub record_size: usize,
    pub put: Option<PhaseReport>,
    pub get: Option<PhaseReport>,
    /// Records the get phase should have read (the put phase's successes).
    pub get_expected_records: Option<u64>,
    pub visibility: Option<VisibilityReport>,
    pub server_pid: Option<u32>,
    /// Server's lifetime peak RSS (VmHWM, or the sampled maximum if larger).
    pub server_peak_rss_kib: Option<u64>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn phase_row(out: &mut String, p: &PhaseReport) {
    let _ = writeln!(
        out,
        "{:<11} {:<11} {:>8} {:>10} {:>7.2} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>9}",
        p.phase,
        p.operation,
        p.calls,
        p.records,
        p.elapsed_secs,
        p.records_per_sec,
        p.mb_per_sec,
        p.latency_p50_ms,
        p.latency_p99_ms,
        p.failures()
    );
}

/// Renders the table for one run.
pub fn table(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== {} ({}) stream {} with {} shards; put: {} clients x {} records x {} B ==",
        r.label, r.endpoint, r.stream, r.shards, r.clients, r.batch, r.record_size
    );
    let _ = writeln!(
        out,
        "{:<11} {:<11} {:>8} {:>10} {:>7} {:>11} {:>8} {:>8} {:>8} {:>9}",
        "phase",
        "operation",
        "calls",
        "records",
        "secs",
        "records/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "failures"
    );
    for p in [&r.put, &r.get].into_iter().flatten() {
        phase_row(&mut out, p);
    }
    if let Some(v) = &r.visibility {
        phase_row(&mut out, &v.producer);
    }
    if let (Some(g), Some(expected)) = (&r.get, r.get_expected_records)
        && g.records != expected
    {
        let _ = writeln!(
            out,
            "WARNING: get read {} records but put wrote {} successfully",
            g.records, expected
        );
    }
    if let Some(v) = &r.visibility {
        let _ = writeln!(
            out,
            "visibility (PutRecord sent -> first seen by a GetRecords poller): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {}/{} seen, {} lost; {} consumer polls ({} failed)",
            v.p50_ms,
            v.p99_ms,
            v.max_ms,
            v.samples_seen,
            v.samples_sent,
            v.samples_lost,
            v.consumer_calls,
            v.consumer_failed_calls
        );
    }
    if let Some(kib) = r.server_peak_rss_kib {
        let phases: Vec<String> = [
            r.put.as_ref(),
            r.get.as_ref(),
            r.visibility.as_ref().map(|v| &v.producer),
        ]
        .into_iter()
        .flatten()
        .filter_map(|p| {
            p.server_peak_rss_kib
                .map(|k| format!("{} {:.1}", p.phase, mib(k)))
        })
        .collect();
        let _ = writeln!(
            out,
            "server peak RSS (pid {}): {:.1} MiB; sampled peak per phase (MiB): {}",
            r.server_pid.unwrap_or(0),
            mib(kib),
            phases.join(", ")
        );
    }
    let cpu: Vec<String> = [
        r.put.as_ref(),
        r.get.as_ref(),
        r.visibility.as_ref().map(|v| &v.producer),
    ]
    .into_iter()
    .flatten()
    .filter(|p| p.server_cpu_secs.is_some() || p.client_cpu_secs.is_some())
    .map(|p| {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        format!(
            "{} {} / {}",
            p.phase,
            f(p.server_cpu_secs),
            f(p.client_cpu_secs)
        )
    })
    .collect();
    if !cpu.is_empty() {
        let _ = writeln!(
            out,
            "CPU seconds used, server / load generator: {}",
            cpu.join(", ")
        );
    }
    let mut errors: Vec<String> = Vec::new();
    for p in [
        r.put.as_ref(),
        r.get.as_ref(),
        r.visibility.as_ref().map(|v| &v.producer),
    ]
    .into_iter()
    .flatten()
    {
        errors.extend(
            p.errors
                .iter()
                .map(|e| format!("{} {}: {e}", p.phase, p.operation)),
        );
    }
    if let Some(v) = &r.visibility {
        errors.extend(
            v.consumer_errors
                .iter()
                .map(|e| format!("visibility GetRecords: {e}")),
        );
    }
    for e in errors {
        let _ = writeln!(out, "error sample: {e}");
    }
    out
}

/// Renders two runs side by side with candidate/baseline ratios.
pub fn compare(base: &RunReport, cand: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== {} vs {} (ratio = {} / {}) ==",
        cand.label, base.label, cand.label, base.label
    );
    let _ = writeln!(
        out,
        "{:<28} {:>14} {:>14} {:>9}",
        "metric", base.label, cand.label, "ratio"
    );
    let mut row = |name: &str, b: Option<f64>, c: Option<f64>, better: &str| {
        let (b, c) = (b.filter(|v| v.is_finite()), c.filter(|v| v.is_finite()));
        let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let ratio = match (b, c) {
            (Some(b), Some(c)) if b > 0.0 => format!("{:.2}x", c / b),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "{:<28} {:>14} {:>14} {:>9}  {better}",
            name,
            fmt(b),
            fmt(c),
            ratio
        );
    };
    // Records moved per CPU-second the server spent (NaN, shown as "-", if unknown).
    let per_cpu: fn(&PhaseReport) -> f64 = |p| match p.server_cpu_secs {
        Some(c) if c > 0.0 => p.records as f64 / c,
        _ => f64::NAN,
    };
    let put = |r: &RunReport, f: fn(&PhaseReport) -> f64| r.put.as_ref().map(f);
    let get = |r: &RunReport, f: fn(&PhaseReport) -> f64| r.get.as_ref().map(f);
    let vis = |r: &RunReport, f: fn(&VisibilityReport) -> f64| r.visibility.as_ref().map(f);
    row(
        "put records/s",
        put(base, |p| p.records_per_sec),
        put(cand, |p| p.records_per_sec),
        "higher is better",
    );
    row(
        "put MB/s",
        put(base, |p| p.mb_per_sec),
        put(cand, |p| p.mb_per_sec),
        "higher is better",
    );
    row(
        "put call p50 ms",
        put(base, |p| p.latency_p50_ms),
        put(cand, |p| p.latency_p50_ms),
        "lower is better",
    );
    row(
        "put call p99 ms",
        put(base, |p| p.latency_p99_ms),
        put(cand, |p| p.latency_p99_ms),
        "lower is better",
    );
    row(
        "put failures",
        put(base, |p| p.failures() as f64),
        put(cand, |p| p.failures() as f64),
        "",
    );
    row(
        "put records/server CPU-s",
        put(base, per_cpu),
        put(cand, per_cpu),
        "higher is better",
    );
    row(
        "get records/s",
        get(base, |p| p.records_per_sec),
        get(cand, |p| p.records_per_sec),
        "higher is better",
    );
    row(
        "get MB/s",
        get(base, |p| p.mb_per_sec),
        get(cand, |p| p.mb_per_sec),
        "higher is better",
    );
    row(
        "get call p50 ms",
        get(base, |p| p.latency_p50_ms),
        get(cand, |p| p.latency_p50_ms),
        "lower is better",
    );
    row(
        "get call p99 ms",
        get(base, |p| p.latency_p99_ms),
        get(cand, |p| p.latency_p99_ms),
        "lower is better",
    );
    row(
        "get records/server CPU-s",
        get(base, per_cpu),
        get(cand, per_cpu),
        "higher is better",
    );
    row(
        "visibility p50 ms",
        vis(base, |v| v.p50_ms),
        vis(cand, |v| v.p50_ms),
        "lower is better",
    );
    row(
        "visibility p99 ms",
        vis(base, |v| v.p99_ms),
        vis(cand, |v| v.p99_ms),
        "lower is better",
    );
    row(
        "visibility max ms",
        vis(base, |v| v.max_ms),
        vis(cand, |v| v.max_ms),
        "lower is better",
    );
    row(
        "PutRecord call p50 ms",
        vis(base, |v| v.producer.latency_p50_ms),
        vis(cand, |v| v.producer.latency_p50_ms),
        "lower is better",
    );
    row(
        "server peak RSS MiB",
        base.server_peak_rss_kib.map(mib),
        cand.server_peak_rss_kib.map(mib),
        "lower is better",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_round_trips() {
        let mut r = RunReport {
            label: "x".into(),
            put: Some(PhaseReport {
                phase: "put".into(),
                operation: "PutRecords".into(),
                records: 10,
                records_per_sec: 100.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(table(&r).contains("PutRecords"));
        let json = serde_json::to_string(&r).unwrap();
        let back: RunReport = serde_json::from_str(&json).unwrap();
        r.label = "y".into();
        r.put.as_mut().unwrap().records_per_sec = 250.0;
        let c = compare(&back, &r);
        assert!(c.contains("2.50x"), "{c}");
    }
}
