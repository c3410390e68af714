//! Throughput of a tumbling GROUP BY: N generated rows over 10,000 keys, one-second
//! windows over ROWTIME, pushed through a compiled program; prints events per second.
//!
//! `cargo run -p freshet-sql --release --example throughput [N]`

use freshet_sql::{Column, Program, SqlType, StreamDef, Value};
use std::sync::Arc;
use std::time::Instant;

const KEYS: usize = 10_000;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let input = vec![StreamDef {
        name: "SOURCE_SQL_STREAM_001".into(),
        columns: vec![
            Column {
                name: "TICKER_SYMBOL".into(),
                ty: SqlType::Varchar(8),
            },
            Column {
                name: "PRICE".into(),
                ty: SqlType::Double,
            },
        ],
    }];
    let code = r#"
        CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
            TICKER_SYMBOL VARCHAR(8), N INTEGER, AVG_PRICE DOUBLE, MAX_PRICE DOUBLE);
        CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
            SELECT STREAM TICKER_SYMBOL, COUNT(*), AVG(PRICE), MAX(PRICE)
            FROM "SOURCE_SQL_STREAM_001"
            GROUP BY TICKER_SYMBOL, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '1' SECOND);
    "#;
    let mut program = match Program::compile(code, &input, &[]) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    let keys: Vec<Value> = (0..KEYS)
        .map(|i| Value::Varchar(Arc::from(format!("K{i:05}").as_str())))
        .collect();
    // 200,000 rows per second of ROWTIME: each window sees every key about 20 times.
    let per_ms = 200;
    let mut out = Vec::new();
    let mut emitted = 0usize;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let start = Instant::now();
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let row = vec![
            keys[(x as usize) % KEYS].clone(),
            Value::Double((x >> 40) as f64 / 1000.0),
        ];
        let rowtime = 1_600_000_000_000 + (i / per_ms) as i64;
        if let Err(e) = program.push("SOURCE_SQL_STREAM_001", rowtime, row, &mut out) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        emitted += out.len();
        out.clear();
    }
    program.advance(i64::MAX, &mut out);
    emitted += out.len();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{n} events, {KEYS} keys, 1 s tumbling windows: {:.2} s, {:.0} events/s, {emitted} rows out",
        secs,
        n as f64 / secs
    );
}
