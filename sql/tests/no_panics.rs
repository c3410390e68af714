//! Property tests: compiling any text, and any mutation of valid programs, returns a
//! program or a positioned error and never panics; compiled programs never panic on
//! rows of any values.

use freshet_sql::{Column, Program, SqlType, StreamDef, TableDef, Value};
use proptest::prelude::*;

fn inputs() -> Vec<StreamDef> {
    vec![StreamDef {
        name: "SOURCE_SQL_STREAM_001".into(),
        columns: vec![
            Column {
                name: "TICKER_SYMBOL".into(),
                ty: SqlType::Varchar(4),
            },
            Column {
                name: "EVENT_TIME".into(),
                ty: SqlType::Timestamp,
            },
            Column {
                name: "PRICE".into(),
                ty: SqlType::Double,
            },
            Column {
                name: "N".into(),
                ty: SqlType::Integer,
            },
        ],
    }]
}

fn tables() -> Vec<TableDef> {
    vec![TableDef {
        name: "REF".into(),
        columns: vec![Column {
            name: "Ticker".into(),
            ty: SqlType::Varchar(4),
        }],
    }]
}

const PROGRAMS: &[&str] = &[
    r#"CREATE OR REPLACE STREAM "D" (T VARCHAR(4), C INTEGER);
       CREATE OR REPLACE PUMP "P" AS INSERT INTO "D"
       SELECT STREAM TICKER_SYMBOL, COUNT(*) FROM "SOURCE_SQL_STREAM_001"
       GROUP BY TICKER_SYMBOL, STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '60' SECOND);"#,
    r#"CREATE STREAM "D" (T VARCHAR(4), E TIMESTAMP, C DOUBLE);
       CREATE PUMP "P" AS INSERT INTO "D" SELECT STREAM TICKER_SYMBOL, FLOOR(EVENT_TIME TO MINUTE), COUNT(TICKER_SYMBOL)
       FROM "SOURCE_SQL_STREAM_001" WINDOWED BY STAGGER (PARTITION BY FLOOR(EVENT_TIME TO MINUTE), TICKER_SYMBOL RANGE INTERVAL '1' MINUTE);"#,
    r#"CREATE STREAM "D" (T VARCHAR(4), A DOUBLE, M DOUBLE);
       CREATE PUMP "P" AS INSERT INTO "D" SELECT STREAM TICKER_SYMBOL, AVG(PRICE) OVER W1, MAX(PRICE) OVER (ROWS 3 PRECEDING)
       FROM SOURCE_SQL_STREAM_001 WINDOW W1 AS (PARTITION BY TICKER_SYMBOL RANGE INTERVAL '1' MINUTE PRECEDING);"#,
    r#"CREATE STREAM A (X VARCHAR(40), Y INTEGER, Z TIMESTAMP);
       CREATE STREAM B (X VARCHAR(40));
       CREATE PUMP P1 AS INSERT INTO A SELECT STREAM UPPER(s.TICKER_SYMBOL) || 'x', N / (N - 1) + MOD(N, 3), CHAR_TO_TIMESTAMP('yyyy-MM-dd', '2020-01-01') + INTERVAL '1:30' MINUTE TO SECOND
         FROM SOURCE_SQL_STREAM_001 AS s LEFT JOIN "REF" AS r ON s.TICKER_SYMBOL = r."Ticker"
         WHERE PRICE BETWEEN 1 AND 2 OR TICKER_SYMBOL LIKE 'A%' AND N IN (1, 2, NULL) AND NOT (PRICE IS NULL);
       CREATE PUMP P2 AS INSERT INTO B SELECT STREAM CASE WHEN Y > 1 THEN SUBSTRING(X FROM 2 FOR 2) ELSE TRIM(LEADING 'x' FROM X) END FROM A;"#,
];

const PIECES: &[&str] = &[
    "(",
    ")",
    ",",
    ";",
    "'",
    "\"",
    "*",
    "-",
    "--",
    "/*",
    "SELECT",
    "STREAM",
    "FROM",
    "WHERE",
    "GROUP BY",
    "OVER",
    "INTERVAL '1' SECOND",
    "CAST(",
    " AS ",
    "INTEGER",
    "NULL",
    "ROWTIME",
    "COUNT(*)",
    "STEP(",
    " BY ",
    "CASE",
    "END",
    "9999999999999999999999",
    "1e999",
    ".",
    "||",
    "TIMESTAMP '2020-02-30 00:00:00'",
    "WINDOWED BY STAGGER (",
    "TABLE(",
    "CURSOR(",
    "é",
    "\u{0}",
];

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0)
        ]
        .prop_map(Value::Double),
        ".{0,8}".prop_map(|s: String| Value::Varchar(s.into())),
        any::<i64>().prop_map(Value::Timestamp),
        any::<bool>().prop_map(Value::Boolean),
        (any::<i64>(), 0u8..40).prop_map(|(m, s)| Value::Decimal {
            mantissa: m as i128,
            scale: s
        }),
    ]
}

/// Mostly rows that fit the input schema (so that they reach the pumps), some not.
fn row_values() -> impl Strategy<Value = Vec<Value>> {
    let fitting = (
        prop_oneof![
            Just(Value::Null),
            "[A-Z]{0,4}".prop_map(|s: String| Value::Varchar(s.into()))
        ],
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Timestamp),
            (0i64..4_000_000_000_000).prop_map(Value::Timestamp)
        ],
        prop_oneof![
            Just(Value::Null),
            any::<f64>().prop_map(Value::Double),
            Just(Value::Double(f64::NAN)),
            Just(Value::Double(f64::INFINITY)),
            (0.0f64..3.0).prop_map(Value::Double)
        ],
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            (-3i64..4).prop_map(Value::Integer)
        ],
    )
        .prop_map(|(a, b, c, d)| vec![a, b, c, d]);
    prop_oneof![4 => fitting, 1 => proptest::collection::vec(any_value(), 0..6)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arbitrary_text_never_panics(code in ".{0,300}") {
        if let Err(e) = Program::compile(&code, &inputs(), &tables()) {
            prop_assert!(e.line >= 1 && e.column >= 1);
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn mutated_programs_never_panic(
        which in 0..PROGRAMS.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0..3u8, 0..PIECES.len()), 1..6),
    ) {
        let mut code: Vec<char> = PROGRAMS[which].chars().collect();
        for (at, op, piece) in edits {
            let i = at.index(code.len() + 1);
            match op {
                0 => { code.splice(i..i, PIECES[piece].chars()); }
                1 => { if i < code.len() { code.remove(i); } }
                _ => { let end = (i + PIECES[piece].len()).min(code.len()); code.drain(i..end); }
            }
        }
        let code: String = code.into_iter().collect();
        if let Err(e) = Program::compile(&code, &inputs(), &tables()) {
            let lines = code.lines().count().max(1) as u32;
            prop_assert!(e.line >= 1 && e.line <= lines + 1, "line {} of {}", e.line, lines);
        }
    }

    #[test]
    fn rows_of_any_values_never_panic(
        rows in proptest::collection::vec((prop_oneof![any::<i64>(), 0i64..4_000_000_000_000], row_values()), 0..30),
        table in proptest::collection::vec(row_values(), 0..4),
    ) {
        for code in PROGRAMS {
            let mut p = Program::compile(code, &inputs(), &tables()).unwrap();
            let _ = p.set_table("REF", table.clone());
            let mut out = Vec::new();
            for (rt, values) in &rows {
                let _ = p.push("SOURCE_SQL_STREAM_001", *rt, values.clone(), &mut out);
            }
            let state = p.checkpoint();
            let mut q = Program::compile(code, &inputs(), &tables()).unwrap();
            prop_assert!(q.restore(&state).is_ok(), "{:?}", q.restore(&state));
            p.advance(i64::MAX, &mut out);
            let state = p.checkpoint();
            prop_assert!(q.restore(&state).is_ok());
            prop_assert!(out.iter().all(|e| !e.stream.is_empty()));
        }
    }
}

#[test]
fn the_seed_programs_compile() {
    for code in PROGRAMS {
        assert!(
            Program::compile(code, &inputs(), &tables()).is_ok(),
            "{code}"
        );
    }
}
