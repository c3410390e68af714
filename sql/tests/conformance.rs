//! The developer guide's examples with their exact expected rows, and the crate's
//! streaming semantics end to end through the public interface.

use freshet_sql::{Column, Emitted, Program, SqlType, StreamDef, TableDef, Value};

fn ts(s: &str) -> i64 {
    // "2004-09-30 13:48:23" -> ms, by the crate's own literal parser via a tiny
    // program would be circular; compute from the civil date directly.
    let (d, t) = s.split_once(' ').unwrap();
    let p: Vec<i64> = d.split('-').map(|x| x.parse().unwrap()).collect();
    let q: Vec<i64> = t.split(':').map(|x| x.parse().unwrap()).collect();
    let (y, m, day) = (p[0], p[1], p[2]);
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    ((days * 24 + q[0]) * 60 + q[1]) * 60_000 + q[2] * 1000
}

fn col(name: &str, ty: SqlType) -> Column {
    Column {
        name: name.into(),
        ty,
    }
}

fn s(x: &str) -> Value {
    Value::Varchar(x.into())
}

fn ticker_input() -> Vec<StreamDef> {
    vec![StreamDef {
        name: "SOURCE_SQL_STREAM_001".into(),
        columns: vec![
            col("TICKER_SYMBOL", SqlType::Varchar(4)),
            col("EVENT_TIME", SqlType::Timestamp),
            col("PRICE", SqlType::Double),
        ],
    }]
}

/// The four AMZN rows of the guide's stagger-window page: (ROWTIME, EVENT_TIME).
fn four_rows() -> Vec<(i64, Vec<Value>)> {
    [
        ("2018-08-01 11:00:20", "2018-08-01 11:00:10"),
        ("2018-08-01 11:00:30", "2018-08-01 11:00:20"),
        ("2018-08-01 11:01:05", "2018-08-01 11:00:55"),
        ("2018-08-01 11:01:15", "2018-08-01 11:01:05"),
    ]
    .iter()
    .map(|(rt, et)| {
        (
            ts(rt),
            vec![s("AMZN"), Value::Timestamp(ts(et)), Value::Double(10.0)],
        )
    })
    .collect()
}

fn run(p: &mut Program, input: &str, rows: &[(i64, Vec<Value>)], end: Option<i64>) -> Vec<Emitted> {
    let mut out = Vec::new();
    for (rt, v) in rows {
        p.push(input, *rt, v.clone(), &mut out).unwrap();
    }
    if let Some(end) = end {
        p.advance(end, &mut out);
    }
    out
}

fn rows_of(out: &[Emitted], stream: &str) -> Vec<(i64, Vec<Value>)> {
    out.iter()
        .filter(|e| e.stream == stream)
        .map(|e| (e.rowtime, e.values.clone()))
        .collect()
}

const TUMBLING: &str = r#"
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    TICKER_SYMBOL VARCHAR(4),
    EVENT_TIME TIMESTAMP,
    TICKER_COUNT INTEGER);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM ROWTIME, TICKER_SYMBOL,
        STEP("SOURCE_SQL_STREAM_001".EVENT_TIME BY INTERVAL '60' SECOND),
        COUNT(*) AS TICKER_COUNT
    FROM "SOURCE_SQL_STREAM_001"
    GROUP BY TICKER_SYMBOL,
        STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '60' SECOND),
        STEP("SOURCE_SQL_STREAM_001".EVENT_TIME BY INTERVAL '60' SECOND);
"#;

fn tumbling_expected() -> Vec<(i64, Vec<Value>)> {
    vec![
        (
            ts("2018-08-01 11:01:00"),
            vec![
                s("AMZN"),
                Value::Timestamp(ts("2018-08-01 11:00:00")),
                Value::Integer(2),
            ],
        ),
        (
            ts("2018-08-01 11:02:00"),
            vec![
                s("AMZN"),
                Value::Timestamp(ts("2018-08-01 11:00:00")),
                Value::Integer(1),
            ],
        ),
        (
            ts("2018-08-01 11:02:00"),
            vec![
                s("AMZN"),
                Value::Timestamp(ts("2018-08-01 11:01:00")),
                Value::Integer(1),
            ],
        ),
    ]
}

#[test]
fn tumbling_window_by_rowtime_and_event_time() {
    let mut p = Program::compile(TUMBLING, &ticker_input(), &[]).unwrap();
    let rows = four_rows();
    // The first window closes when the row at 11:01:05 arrives, not before.
    let mut out = Vec::new();
    for (rt, v) in &rows[..2] {
        p.push("SOURCE_SQL_STREAM_001", *rt, v.clone(), &mut out)
            .unwrap();
    }
    assert!(out.is_empty());
    p.push(
        "SOURCE_SQL_STREAM_001",
        rows[2].0,
        rows[2].1.clone(),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        rows_of(&out, "DESTINATION_SQL_STREAM"),
        tumbling_expected()[..1]
    );
    p.push(
        "SOURCE_SQL_STREAM_001",
        rows[3].0,
        rows[3].1.clone(),
        &mut out,
    )
    .unwrap();
    // Advancing to just before the end closes nothing; to the end closes the window.
    p.advance(ts("2018-08-01 11:01:59"), &mut out);
    assert_eq!(out.len(), 1);
    p.advance(ts("2018-08-01 11:02:00"), &mut out);
    assert_eq!(rows_of(&out, "DESTINATION_SQL_STREAM"), tumbling_expected());
}

#[test]
fn tumbling_query_of_the_stagger_page() {
    // The guide's tumbling query (FLOOR of EVENT_TIME, STEP of ROWTIME by a minute).
    let code = r#"
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    TICKER_SYMBOL VARCHAR(4),
    EVENT_TIME timestamp,
    TICKER_COUNT DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM
        TICKER_SYMBOL,
        FLOOR(EVENT_TIME TO MINUTE),
        COUNT(TICKER_SYMBOL) AS TICKER_COUNT
    FROM "SOURCE_SQL_STREAM_001"
    GROUP BY ticker_symbol, FLOOR(EVENT_TIME TO MINUTE), STEP("SOURCE_SQL_STREAM_001".ROWTIME BY INTERVAL '1' MINUTE);
"#;
    let mut p = Program::compile(code, &ticker_input(), &[]).unwrap();
    let out = run(
        &mut p,
        "SOURCE_SQL_STREAM_001",
        &four_rows(),
        Some(ts("2018-08-01 11:02:00")),
    );
    let expected: Vec<(i64, Vec<Value>)> = tumbling_expected()
        .into_iter()
        .map(|(rt, mut v)| {
            let Value::Integer(n) = v[2] else {
                unreachable!()
            };
            v[2] = Value::Double(n as f64);
            (rt, v)
        })
        .collect();
    assert_eq!(rows_of(&out, "DESTINATION_SQL_STREAM"), expected);
}

const STAGGER: &str = r#"
CREATE OR REPLACE STREAM "DESTINATION_SQL_STREAM" (
    ticker_symbol VARCHAR(4),
    event_time TIMESTAMP,
    ticker_count DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "DESTINATION_SQL_STREAM"
    SELECT STREAM
        TICKER_SYMBOL,
        FLOOR(EVENT_TIME TO MINUTE),
        COUNT(TICKER_SYMBOL) AS ticker_count
    FROM "SOURCE_SQL_STREAM_001"
    WINDOWED BY STAGGER (
        PARTITION BY FLOOR(EVENT_TIME TO MINUTE), TICKER_SYMBOL RANGE INTERVAL '1' MINUTE);
"#;

#[test]
fn stagger_window() {
    let mut p = Program::compile(STAGGER, &ticker_input(), &[]).unwrap();
    let out = run(&mut p, "SOURCE_SQL_STREAM_001", &four_rows(), None);
    assert!(out.is_empty(), "nothing closes before 11:01:20: {out:?}");
    let mut out = Vec::new();
    p.advance(ts("2018-08-01 11:01:20"), &mut out);
    p.advance(ts("2018-08-01 11:02:14"), &mut out);
    assert_eq!(out.len(), 1);
    p.advance(ts("2018-08-01 11:02:15"), &mut out);
    assert_eq!(
        rows_of(&out, "DESTINATION_SQL_STREAM"),
        vec![
            (
                ts("2018-08-01 11:01:20"),
                vec![
                    s("AMZN"),
                    Value::Timestamp(ts("2018-08-01 11:00:00")),
                    Value::Double(3.0)
                ]
            ),
            (
                ts("2018-08-01 11:02:15"),
                vec![
                    s("AMZN"),
                    Value::Timestamp(ts("2018-08-01 11:01:00")),
                    Value::Double(1.0)
                ]
            ),
        ]
    );
}

fn weather() -> (Vec<StreamDef>, Vec<(i64, Vec<Value>)>) {
    let data = [
        ("2018-11-01 01:00:00", "Denver", 29),
        ("2018-11-01 01:00:00", "Anchorage", 2),
        ("2018-11-01 06:00:00", "Miami", 65),
        ("2018-11-01 07:00:00", "Denver", 32),
        ("2018-11-01 09:00:00", "Anchorage", 9),
        ("2018-11-01 13:00:00", "Denver", 50),
        ("2018-11-01 17:00:00", "Anchorage", 10),
        ("2018-11-01 18:00:00", "Miami", 71),
        ("2018-11-01 19:00:00", "Denver", 43),
        ("2018-11-02 01:00:00", "Anchorage", 4),
        ("2018-11-02 01:00:00", "Denver", 39),
        ("2018-11-02 07:00:00", "Denver", 46),
        ("2018-11-02 09:00:00", "Anchorage", 3),
        ("2018-11-02 13:00:00", "Denver", 56),
        ("2018-11-02 17:00:00", "Anchorage", 2),
        ("2018-11-02 19:00:00", "Denver", 50),
        ("2018-11-03 01:00:00", "Denver", 36),
        ("2018-11-03 01:00:00", "Anchorage", 1),
    ];
    let input = vec![StreamDef {
        name: "WEATHERSTREAM".into(),
        columns: vec![
            col("CITY", SqlType::Varchar(20)),
            col("TEMP", SqlType::Integer),
        ],
    }];
    let rows = data
        .iter()
        .map(|(t, c, v)| (ts(t), vec![s(c), Value::Integer(*v)]))
        .collect();
    (input, rows)
}

#[test]
fn sliding_window_of_the_reference_weather_example() {
    let (input, rows) = weather();
    let code = r#"
        CREATE STREAM OUT_S (WMIN_TEMP INTEGER, WMAX_TEMP INTEGER);
        CREATE PUMP P AS INSERT INTO OUT_S
        SELECT STREAM
            ROWTIME,
            MIN(TEMP) OVER W1 AS WMIN_TEMP,
            MAX(TEMP) OVER W1 AS WMAX_TEMP
        FROM WEATHERSTREAM
        WINDOW W1 AS (
            RANGE INTERVAL '1' DAY PRECEDING
        );"#;
    let mut p = Program::compile(code, &input, &[]).unwrap();
    let out = run(&mut p, "WEATHERSTREAM", &rows, None);
    let got: Vec<(i64, i64)> = out
        .iter()
        .map(|e| match (&e.values[0], &e.values[1]) {
            (Value::Integer(a), Value::Integer(b)) => (*a, *b),
            v => panic!("{v:?}"),
        })
        .collect();
    // The reference's table, first rows as printed there.
    assert_eq!(
        got[..9],
        [
            (29, 29),
            (2, 29),
            (2, 65),
            (2, 65),
            (2, 65),
            (2, 65),
            (2, 65),
            (2, 71),
            (2, 71)
        ]
    );
    // All rows against a naive recomputation (inclusive of rows a full day back).
    for (i, (rt, _)) in rows.iter().enumerate() {
        let temps: Vec<i64> = rows[..=i]
            .iter()
            .filter(|(t, _)| *t >= rt - 86_400_000)
            .map(|(_, v)| match v[1] {
                Value::Integer(x) => x,
                _ => unreachable!(),
            })
            .collect();
        let want = (*temps.iter().min().unwrap(), *temps.iter().max().unwrap());
        assert_eq!(got[i], want, "row {i}");
        assert_eq!(out[i].rowtime, *rt);
    }
}

/// A deterministic pseudo-random series for the sliding-window oracle.
fn series(n: usize) -> Vec<(i64, Vec<Value>)> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut t = ts("2020-01-01 00:00:00");
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            t += (x % 7_000) as i64;
            let tick = ["AMZN", "MSFT", "ORCL"][(x >> 20) as usize % 3];
            (
                t,
                vec![
                    s(tick),
                    Value::Timestamp(t),
                    Value::Double(((x >> 32) % 1000) as f64 / 10.0),
                ],
            )
        })
        .collect()
}

#[test]
fn sliding_windows_against_a_naive_recomputation() {
    let code = r#"
        CREATE STREAM OUT_S (T VARCHAR(4), AVG_R DOUBLE, SUM_R DOUBLE, CNT_ROWS INTEGER, MAX_ROWS DOUBLE);
        CREATE PUMP P AS INSERT INTO OUT_S
        SELECT STREAM TICKER_SYMBOL, AVG(PRICE) OVER W1, SUM(PRICE) OVER W1,
            COUNT(*) OVER (PARTITION BY TICKER_SYMBOL ROWS 10 PRECEDING),
            MAX(PRICE) OVER (PARTITION BY TICKER_SYMBOL ROWS 10 PRECEDING)
        FROM SOURCE_SQL_STREAM_001
        WINDOW W1 AS (PARTITION BY TICKER_SYMBOL RANGE INTERVAL '1' MINUTE PRECEDING);"#;
    let mut p = Program::compile(code, &ticker_input(), &[]).unwrap();
    let rows = series(2000);
    let out = run(&mut p, "SOURCE_SQL_STREAM_001", &rows, None);
    assert_eq!(out.len(), rows.len());
    for (i, (rt, v)) in rows.iter().enumerate() {
        let same: Vec<&(i64, Vec<Value>)> =
            rows[..=i].iter().filter(|(_, w)| w[0] == v[0]).collect();
        let price = |r: &(i64, Vec<Value>)| match r.1[2] {
            Value::Double(d) => d,
            _ => unreachable!(),
        };
        let ranged: Vec<f64> = same
            .iter()
            .filter(|r| r.0 >= rt - 60_000)
            .map(|r| price(r))
            .collect();
        let last: Vec<f64> = same.iter().rev().take(11).map(|r| price(r)).collect();
        let sum: f64 = ranged.iter().sum();
        let e = &out[i].values;
        assert_eq!(e[0], v[0]);
        let (Value::Double(avg), Value::Double(total)) = (&e[1], &e[2]) else {
            panic!("{e:?}")
        };
        assert!((avg - sum / ranged.len() as f64).abs() < 1e-9, "row {i}");
        assert!((total - sum).abs() < 1e-9, "row {i}");
        assert_eq!(e[3], Value::Integer(last.len() as i64), "row {i}");
        assert_eq!(
            e[4],
            Value::Double(last.iter().cloned().fold(f64::MIN, f64::max)),
            "row {i}"
        );
    }
}

#[test]
fn chained_pumps_and_row_by_row_filters() {
    let code = r#"
        CREATE STREAM "A" (T VARCHAR(4), P DOUBLE);
        CREATE STREAM "B" (T VARCHAR(8), DOUBLED DOUBLE, BIG BOOLEAN);
        CREATE PUMP "P1" AS INSERT INTO "A"
            SELECT STREAM TICKER_SYMBOL, PRICE FROM SOURCE_SQL_STREAM_001 WHERE PRICE > 10;
        CREATE PUMP "P2" AS INSERT INTO "B" (DOUBLED, T, BIG)
            SELECT STREAM P * 2, LOWER(T) || '!', CASE WHEN P >= 50 THEN TRUE ELSE FALSE END
            FROM "A";
    "#;
    let mut p = Program::compile(code, &ticker_input(), &[]).unwrap();
    let names: Vec<String> = p.streams().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["SOURCE_SQL_STREAM_001", "A", "B"]);
    let rows: Vec<(i64, Vec<Value>)> = [5.0, 20.0, 60.0]
        .iter()
        .enumerate()
        .map(|(i, pr)| {
            (
                i as i64 * 1000,
                vec![s("AMZN"), Value::Timestamp(0), Value::Double(*pr)],
            )
        })
        .collect();
    let out = run(&mut p, "SOURCE_SQL_STREAM_001", &rows, None);
    let got: Vec<(String, i64, Vec<Value>)> = out
        .into_iter()
        .map(|e| (e.stream, e.rowtime, e.values))
        .collect();
    assert_eq!(
        got,
        vec![
            ("A".into(), 1000, vec![s("AMZN"), Value::Double(20.0)]),
            (
                "B".into(),
                1000,
                vec![s("amzn!"), Value::Double(40.0), Value::Boolean(false)]
            ),
            ("A".into(), 2000, vec![s("AMZN"), Value::Double(60.0)]),
            (
                "B".into(),
                2000,
                vec![s("amzn!"), Value::Double(120.0), Value::Boolean(true)]
            ),
        ]
    );
}

#[test]
fn failed_coercion_is_a_row_error_and_the_program_goes_on() {
    let code = r#"
        CREATE STREAM "A" (SHORT VARCHAR(2));
        CREATE PUMP "P" AS INSERT INTO "A" SELECT STREAM TICKER_SYMBOL FROM SOURCE_SQL_STREAM_001;
    "#;
    let mut p = Program::compile(code, &ticker_input(), &[]).unwrap();
    let mut out = Vec::new();
    let e = p
        .push(
            "SOURCE_SQL_STREAM_001",
            1,
            vec![s("AMZN"), Value::Null, Value::Null],
            &mut out,
        )
        .unwrap_err();
    assert_eq!(e.source, "P");
    assert!(out.is_empty());
    p.push(
        "SOURCE_SQL_STREAM_001",
        2,
        vec![s("GE"), Value::Null, Value::Null],
        &mut out,
    )
    .unwrap();
    assert_eq!(out[0].values, vec![s("GE")]);
    assert!(p.push("NOPE", 2, vec![], &mut out).is_err());
    assert!(
        p.push("SOURCE_SQL_STREAM_001", 2, vec![s("GE")], &mut out)
            .is_err()
    );
}

#[test]
fn join_with_a_reference_table() {
    let tables = vec![TableDef {
        name: "COMPANIES".into(),
        columns: vec![
            col("Ticker", SqlType::Varchar(4)),
            col("Company", SqlType::Varchar(20)),
        ],
    }];
    let code = r#"
        CREATE STREAM "INNER_S" (T VARCHAR(4), NAME VARCHAR(20));
        CREATE STREAM "OUTER_S" (T VARCHAR(4), NAME VARCHAR(20));
        CREATE PUMP "P1" AS INSERT INTO "INNER_S"
            SELECT STREAM s.TICKER_SYMBOL, c."Company"
            FROM SOURCE_SQL_STREAM_001 AS s JOIN "COMPANIES" AS c ON s.TICKER_SYMBOL = c."Ticker";
        CREATE PUMP "P2" AS INSERT INTO "OUTER_S"
            SELECT STREAM s.TICKER_SYMBOL, c."Company"
            FROM SOURCE_SQL_STREAM_001 AS s LEFT OUTER JOIN "COMPANIES" AS c ON s.TICKER_SYMBOL = c."Ticker";
    "#;
    let mut p = Program::compile(code, &ticker_input(), &tables).unwrap();
    p.set_table(
        "COMPANIES",
        vec![
            vec![s("AMZN"), s("Amazon")],
            vec![s("MSFT"), s("Microsoft")],
        ],
    )
    .unwrap();
    let rows: Vec<(i64, Vec<Value>)> = ["AMZN", "IBM"]
        .iter()
        .map(|t| (0, vec![s(t), Value::Null, Value::Null]))
        .collect();
    let out = run(&mut p, "SOURCE_SQL_STREAM_001", &rows, None);
    assert_eq!(
        rows_of(&out, "INNER_S"),
        vec![(0, vec![s("AMZN"), s("Amazon")])]
    );
    assert_eq!(
        rows_of(&out, "OUTER_S"),
        vec![
            (0, vec![s("AMZN"), s("Amazon")]),
            (0, vec![s("IBM"), Value::Null])
        ]
    );
    assert!(p.set_table("COMPANIES", vec![vec![s("X")]]).is_err());
    assert!(p.set_table("NOPE", vec![]).is_err());
}

#[test]
fn checkpoint_and_restore_continue_exactly() {
    let code = format!(
        "{TUMBLING}\n{}\n{}",
        r#"CREATE STREAM "STAG" (T VARCHAR(4), N INTEGER, AVGP DOUBLE);
           CREATE PUMP "SP" AS INSERT INTO "STAG"
             SELECT STREAM TICKER_SYMBOL, COUNT(*), AVG(PRICE) FROM SOURCE_SQL_STREAM_001
             WINDOWED BY STAGGER (PARTITION BY TICKER_SYMBOL RANGE INTERVAL '20' SECOND);"#,
        r#"CREATE STREAM "SLID" (T VARCHAR(4), M DOUBLE);
           CREATE PUMP "SL" AS INSERT INTO "SLID"
             SELECT STREAM TICKER_SYMBOL, MIN(PRICE) OVER (PARTITION BY TICKER_SYMBOL RANGE INTERVAL '30' SECOND PRECEDING)
             FROM SOURCE_SQL_STREAM_001;"#
    );
    let rows = series(1000);
    let end = rows.last().unwrap().0 + 3_600_000;
    let mut whole = Program::compile(&code, &ticker_input(), &[]).unwrap();
    let expected = run(&mut whole, "SOURCE_SQL_STREAM_001", &rows, Some(end));
    assert!(
        expected
            .iter()
            .any(|e| e.stream == "DESTINATION_SQL_STREAM")
    );
    assert!(expected.iter().any(|e| e.stream == "STAG"));

    let (a, b) = rows.split_at(500);
    let mut first = Program::compile(&code, &ticker_input(), &[]).unwrap();
    let mut got = run(&mut first, "SOURCE_SQL_STREAM_001", a, None);
    let state = first.checkpoint();
    drop(first);
    let mut second = Program::compile(&code, &ticker_input(), &[]).unwrap();
    second.restore(&state).unwrap();
    got.extend(run(&mut second, "SOURCE_SQL_STREAM_001", b, Some(end)));
    assert_eq!(got, expected);

    let mut other = Program::compile(TUMBLING, &ticker_input(), &[]).unwrap();
    assert!(
        other.restore(&state).is_err(),
        "state of other code is refused"
    );
    assert!(other.restore(b"not json").is_err());
}

#[test]
fn compile_errors_have_positions() {
    let cases: &[(&str, u32, u32, &str)] = &[
        (
            "CREATE STREAM A (X INTEGER);\nCREATE PUMP P AS INSERT INTO A\n  SELECT STREAM PRICE\n    FROM FROM;",
            4,
            10,
            "Encountered \"FROM\" at line 4, column 10. Was expecting",
        ),
        (
            "CREATE STREAM A (X INTEGER);\nCREATE PUMP P AS INSERT INTO A SELECT STREAM NOPE FROM SOURCE_SQL_STREAM_001;",
            2,
            46,
            "Column 'NOPE' not found",
        ),
        (
            "CREATE STREAM A (X INTEGER);\nCREATE PUMP P AS INSERT INTO A SELECT STREAM 1 FROM \"NOPE\";",
            2,
            53,
            "Object 'NOPE' not found",
        ),
        (
            "CREATE STREAM A (X INTEGER);\nCREATE PUMP P AS INSERT INTO A SELECT STREAM FOO(PRICE) FROM SOURCE_SQL_STREAM_001;",
            2,
            46,
            "No match found for function signature FOO",
        ),
        (
            "CREATE STREAM A (X INTEGER);\nCREATE PUMP P AS INSERT INTO A SELECT STREAM ABS(PRICE, 1) FROM SOURCE_SQL_STREAM_001;",
            2,
            46,
            "Invalid number of arguments",
        ),
        (
            "CREATE STREAM A (X INTEGER);\nCREATE PUMP P AS INSERT INTO A SELECT STREAM PRICE + TICKER_SYMBOL FROM SOURCE_SQL_STREAM_001;",
            2,
            52,
            "Cannot apply '+'",
        ),
        (
            "CREATE STREAM A (X INTEGER);\nCREATE PUMP P AS INSERT INTO A SELECT STREAM EVENT_TIME FROM SOURCE_SQL_STREAM_001;",
            2,
            46,
            "Cannot assign to target field 'X'",
        ),
        (
            "CREATE STREAM A (X INTEGER);\nCREATE PUMP P AS INSERT INTO A SELECT STREAM PRICE, COUNT(*) FROM SOURCE_SQL_STREAM_001 GROUP BY STEP(ROWTIME BY INTERVAL '1' SECOND);",
            2,
            46,
            "Expression 'PRICE' is not being grouped",
        ),
        (
            "CREATE STREAM A (X INTEGER);\nCREATE PUMP P AS INSERT INTO A SELECT STREAM COUNT(*) FROM SOURCE_SQL_STREAM_001 GROUP BY TICKER_SYMBOL;",
            2,
            91,
            "monotonic",
        ),
        (
            "CREATE STREAM A (X VARCHAR(4));\nCREATE PUMP P AS INSERT INTO A SELECT STREAM 'it''s FROM x;",
            2,
            46,
            "unterminated",
        ),
    ];
    for (code, line, column, msg) in cases {
        let e = match Program::compile(code, &ticker_input(), &[]) {
            Err(e) => e,
            Ok(_) => panic!("compiled: {code}"),
        };
        assert!(e.message.contains(msg), "{code}: {}", e.message);
        assert_eq!(
            (e.line, e.column),
            (*line, *column),
            "{code}: {}",
            e.message
        );
    }
}

#[test]
fn scalar_functions_end_to_end() {
    let code = r#"
        CREATE STREAM O (A VARCHAR(40), B INTEGER, C TIMESTAMP, D VARCHAR(40), E DOUBLE, F INTEGER, G VARCHAR(40), H TIMESTAMP);
        CREATE PUMP P AS INSERT INTO O SELECT STREAM
            INITCAP(SUBSTRING('hello big world' FROM 3 FOR 7)) || '|' || TRIM(BOTH 'x' FROM 'xxabxx'),
            POSITION('lo' IN 'hello') + CHAR_LENGTH(TICKER_SYMBOL) + EXTRACT(MINUTE FROM EVENT_TIME),
            FLOOR(EVENT_TIME TO HOUR),
            TIMESTAMP_TO_CHAR('yyyy-MM-dd HH:mm', CEIL(EVENT_TIME TO DAY)),
            POWER(2, 10) + SQRT(16) + MOD(7, 4) + ABS(-1.5),
            TSDIFF(EVENT_TIME, TIMESTAMP '2004-09-30 13:00:00') / 1000,
            CASE TICKER_SYMBOL WHEN 'AMZN' THEN 'a' WHEN 'MSFT' THEN 'm' END,
            CHAR_TO_TIMESTAMP('dd/MM/yyyy HH:mm:ss', '30/09/2004 13:48:23') + INTERVAL '1:30' MINUTE TO SECOND
        FROM SOURCE_SQL_STREAM_001
        WHERE TICKER_SYMBOL LIKE 'A%' AND PRICE IS NOT NULL AND PRICE NOT BETWEEN 100 AND 200
          AND TICKER_SYMBOL NOT IN ('X', 'Y');
    "#;
    let mut p = Program::compile(code, &ticker_input(), &[]).unwrap();
    let et = ts("2004-09-30 13:48:23");
    let rows = vec![
        (
            et,
            vec![s("AMZN"), Value::Timestamp(et), Value::Double(10.0)],
        ),
        (
            et,
            vec![s("AMZN"), Value::Timestamp(et), Value::Double(150.0)],
        ),
        (
            et,
            vec![s("MSFT"), Value::Timestamp(et), Value::Double(10.0)],
        ),
        (et, vec![s("AMZN"), Value::Timestamp(et), Value::Null]),
    ];
    let out = run(&mut p, "SOURCE_SQL_STREAM_001", &rows, None);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        out[0].values,
        vec![
            s("Llo Big|ab"),
            Value::Integer(4 + 4 + 48),
            Value::Timestamp(ts("2004-09-30 13:00:00")),
            s("2004-10-01 00:00"),
            Value::Double(1024.0 + 4.0 + 3.0 + 1.5),
            Value::Integer(48 * 60 + 23),
            s("a"),
            Value::Timestamp(et + 90_000),
        ]
    );
}

/// A table function for the hook: every n-th row, with a running count appended.
struct EveryNth {
    n: i64,
    every: i64,
}

impl freshet_sql::TableFunction for EveryNth {
    fn process(&mut self, _rowtime: i64, row: &[Value]) -> Result<Vec<Vec<Value>>, String> {
        self.n += 1;
        if self.n % self.every != 0 {
            return Ok(Vec::new());
        }
        let mut r = row.to_vec();
        r.push(Value::Integer(self.n));
        Ok(vec![r])
    }
    fn checkpoint(&self) -> serde_json::Value {
        serde_json::json!(self.n)
    }
    fn restore(&mut self, state: &serde_json::Value) -> Result<(), String> {
        self.n = state.as_i64().ok_or("bad state")?;
        Ok(())
    }
}

struct EveryNthFactory;

impl freshet_sql::TableFunctionFactory for EveryNthFactory {
    fn name(&self) -> &str {
        "EVERY_NTH"
    }
    fn create(
        &self,
        args: &[Value],
        input: &[Column],
    ) -> Result<(Vec<Column>, Box<dyn freshet_sql::TableFunction>), String> {
        let every = match args {
            [Value::Integer(n)] if *n > 0 => *n,
            _ => return Err("takes one positive integer".into()),
        };
        let mut cols = input.to_vec();
        cols.push(col("SEEN", SqlType::Integer));
        Ok((cols, Box::new(EveryNth { n: 0, every })))
    }
}

#[test]
fn table_functions_in_from_go_through_the_factory() {
    let code = r#"
        CREATE STREAM O (T VARCHAR(4), SEEN INTEGER);
        CREATE PUMP P AS INSERT INTO O
        SELECT STREAM f.T, f.SEEN FROM TABLE(EVERY_NTH(
            CURSOR(SELECT STREAM TICKER_SYMBOL AS T FROM SOURCE_SQL_STREAM_001 WHERE PRICE > 0), 2)) AS f;
    "#;
    let factories: Vec<Box<dyn freshet_sql::TableFunctionFactory>> =
        vec![Box::new(EveryNthFactory)];
    let e = Program::compile(code, &ticker_input(), &[]).err().unwrap();
    assert!(
        e.message
            .contains("No match found for table function EVERY_NTH"),
        "{}",
        e.message
    );
    let bad = code.replace(", 2))", ", 'x'))");
    let e = Program::compile_with(&bad, &ticker_input(), &[], &factories)
        .err()
        .unwrap();
    assert!(
        e.message.contains("takes one positive integer"),
        "{}",
        e.message
    );

    let mut p = Program::compile_with(code, &ticker_input(), &[], &factories).unwrap();
    let rows: Vec<(i64, Vec<Value>)> = (0..5)
        .map(|i| (i, vec![s("AMZN"), Value::Null, Value::Double(1.0)]))
        .collect();
    let mut out = run(&mut p, "SOURCE_SQL_STREAM_001", &rows[..3], None);
    let mut q = Program::compile_with(code, &ticker_input(), &[], &factories).unwrap();
    q.restore(&p.checkpoint()).unwrap();
    out.extend(run(&mut q, "SOURCE_SQL_STREAM_001", &rows[3..], None));
    assert_eq!(
        rows_of(&out, "O"),
        vec![
            (1, vec![s("AMZN"), Value::Integer(2)]),
            (3, vec![s("AMZN"), Value::Integer(4)])
        ]
    );
}
