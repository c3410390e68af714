//! RANDOM_CUT_FOREST over stdin: one row per line (a number, or comma-separated numbers
//! for a row of several numeric columns), the row's ANOMALY_SCORE per line on stdout.
//! Lines that do not parse print `0` (the forest skips them, as it skips rows with a
//! non-finite value).
//!
//!   rcf_scores [--trees N] [--samples N] [--time-decay N] [--shingle N] [--seed N] [--timing]
//!
//! Defaults are the SQL reference's (100 trees, 256 samples, time decay 100000, shingle
//! 1) and seed 0. `--timing` also prints the time spent in the forest per row to stderr.

use freshet_sql::rcf::{RandomCutForest, RcfParams};
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

fn main() {
    let mut params = RcfParams::default();
    let mut seed = 0u64;
    let mut timing = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> u64 {
            let v = args.next().unwrap_or_default();
            v.parse().unwrap_or_else(|_| {
                eprintln!("rcf_scores: {arg} needs a non-negative integer, got {v:?}");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--trees" => params.number_of_trees = value() as u32,
            "--samples" => params.sub_sample_size = value() as u32,
            "--time-decay" => params.time_decay = value(),
            "--shingle" => params.shingle_size = value() as u32,
            "--seed" => seed = value(),
            "--timing" => timing = true,
            _ => {
                eprintln!("rcf_scores: unknown argument {arg:?}");
                std::process::exit(2)
            }
        }
    }
    let mut forest = RandomCutForest::new(params, seed).unwrap_or_else(|e| {
        eprintln!("rcf_scores: {e}");
        std::process::exit(2)
    });
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut spent = Duration::ZERO;
    let mut rows = 0u64;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let point: Option<Vec<f64>> = line.split(',').map(|f| f.trim().parse().ok()).collect();
        let score = match point {
            Some(p) => {
                let start = Instant::now();
                let s = forest.score_and_update(&p);
                spent += start.elapsed();
                rows += 1;
                s
            }
            None => 0.0,
        };
        if writeln!(out, "{score}").is_err() {
            break;
        }
    }
    let _ = out.flush();
    if timing && rows > 0 {
        eprintln!(
            "rows {rows}, trees {}, samples {}: {:.1} us per row",
            params.number_of_trees,
            params.sub_sample_size,
            spent.as_secs_f64() * 1e6 / rows as f64
        );
    }
}
