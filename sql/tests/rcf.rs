//! RANDOM_CUT_FOREST, TOP_K_ITEMS_TUMBLING and COUNT_DISTINCT_ITEMS_TUMBLING through
//! the crate's public API: detection of planted anomalies, reproducibility,
//! checkpoints, parameter limits, and the sketches' accuracy.

use freshet_sql::Value;
use freshet_sql::rcf::{Direction, RandomCutForest, RcfParams, explanation_json};
use freshet_sql::sketch::{CountDistinctTumbling, TopKTumbling};

/// SplitMix64 with Box-Muller: the tests' own reproducible noise.
struct Noise(u64);

impl Noise {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        ((self.u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn gauss(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (2.0 * std::f64::consts::PI * self.unit()).cos()
    }
}

const SPIKES: [usize; 8] = [600, 1100, 1650, 2200, 2750, 3300, 3850, 4400];

/// A sine with period 100 on a slow random walk, with noise, and spikes of +-(20..34)
/// at [`SPIKES`].
fn series(n: usize) -> Vec<f64> {
    let mut noise = Noise(42);
    let mut walk = 0.0;
    (0..n)
        .map(|i| {
            walk += 0.02 * noise.gauss();
            let mut v = 10.0 * (i as f64 * std::f64::consts::TAU / 100.0).sin()
                + walk
                + 0.3 * noise.gauss();
            if let Some(k) = SPIKES.iter().position(|&s| s == i) {
                let size = 20.0 + 2.0 * k as f64;
                v += if k % 2 == 0 { size } else { -size };
            }
            v
        })
        .collect()
}

fn scores(params: RcfParams, seed: u64, points: &[f64]) -> Vec<f64> {
    let mut forest = RandomCutForest::new(params, seed).unwrap();
    points
        .iter()
        .map(|&v| forest.score_and_update(&[v]))
        .collect()
}

/// The rank (0 = highest) of each index's score.
fn ranks(s: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..s.len()).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let mut rank = vec![0; s.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    rank
}

#[test]
fn every_spike_scores_in_the_top_percent() {
    let points = series(5000);
    for shingle in [1, 4] {
        let params = RcfParams {
            shingle_size: shingle,
            ..RcfParams::default()
        };
        let s = scores(params, 7, &points);
        let rank = ranks(&s);
        let top = s.len() / 100;
        for &i in &SPIKES {
            assert!(
                rank[i] < top,
                "shingle {shingle}: spike at {i} scored {} (rank {}), the top 1% starts at {}",
                s[i],
                rank[i],
                s[rank.iter().position(|&r| r == top).unwrap()]
            );
        }
    }
}

#[test]
fn warm_up_scores_zero_then_real_scores() {
    let points = series(400);
    let params = RcfParams {
        shingle_size: 3,
        ..RcfParams::default()
    };
    let s = scores(params, 1, &points);
    // 2 rows to fill the shingle, then 256 / 4 shingled points learnt unscored.
    let warm = 2 + 64;
    assert!(s[..warm].iter().all(|&x| x == 0.0), "{:?}", &s[..warm]);
    assert!(s[warm..].iter().all(|&x| x > 0.0));
}

#[test]
fn scores_are_reproducible_for_a_seed() {
    let points = series(1500);
    let a = scores(RcfParams::default(), 99, &points);
    let b = scores(RcfParams::default(), 99, &points);
    assert_eq!(a, b);
    let c = scores(RcfParams::default(), 100, &points);
    assert_ne!(a, c);
}

#[test]
fn a_checkpoint_continues_identically() {
    let points = series(2500);
    let params = RcfParams {
        number_of_trees: 30,
        shingle_size: 2,
        ..RcfParams::default()
    };
    let mut forest = RandomCutForest::new(params, 5).unwrap();
    for &v in &points[..1200] {
        forest.score_and_update(&[v]);
    }
    // CBOR keeps every f64 exactly (serde_json's default float parsing may be off by
    // an ulp, which would change later cuts).
    let mut bytes = Vec::new();
    ciborium::into_writer(&forest, &mut bytes).unwrap();
    let mut restored: RandomCutForest = ciborium::from_reader(bytes.as_slice()).unwrap();
    assert_eq!(restored, forest);
    for &v in &points[1200..] {
        let a = forest.score_and_update(&[v]);
        let b = restored.score_and_update(&[v]);
        assert_eq!(a.to_bits(), b.to_bits());
    }
    assert_eq!(restored, forest);
}

#[test]
fn a_checkpoint_before_the_first_row_restores() {
    let fresh = RandomCutForest::new(RcfParams::default(), 5).unwrap();
    let mut restored: RandomCutForest =
        serde_json::from_str(&serde_json::to_string(&fresh).unwrap()).unwrap();
    let mut fresh = fresh;
    for &v in &series(300) {
        assert_eq!(
            fresh.score_and_update(&[v]),
            restored.score_and_update(&[v])
        );
    }
}

#[test]
fn a_corrupt_checkpoint_is_refused() {
    let mut forest = RandomCutForest::new(
        RcfParams {
            number_of_trees: 3,
            ..RcfParams::default()
        },
        5,
    )
    .unwrap();
    for &v in &series(300) {
        forest.score_and_update(&[v]);
    }
    let good = serde_json::to_value(&forest).unwrap();
    let corruptions: [(&str, serde_json::Value); 6] = [
        ("/trees/0/root", 1_000_000.into()),
        ("/trees/0/bounds", serde_json::json!([0.0, 1.0])),
        ("/trees/1/sample/0/leaf", 1_000_000.into()),
        ("/trees/2/sum", serde_json::json!([])),
        ("/params/number_of_trees", 4.into()),
        ("/input_dim", 0.into()),
    ];
    for (path, bad) in corruptions {
        let mut v = good.clone();
        *v.pointer_mut(path).unwrap() = bad;
        let r: Result<RandomCutForest, _> = serde_json::from_value(v);
        assert!(r.is_err(), "{path} accepted");
    }
    // A cycle: the root's child pointing back at the root.
    let mut v = good.clone();
    let root = v.pointer("/trees/0/root").unwrap().clone();
    let nodes = v
        .pointer_mut("/trees/0/nodes")
        .unwrap()
        .as_array_mut()
        .unwrap();
    let branch = nodes[root.as_u64().unwrap() as usize]
        .get_mut("Branch")
        .unwrap();
    branch["left"] = root;
    assert!(serde_json::from_value::<RandomCutForest>(v).is_err());
}

#[test]
fn parameters_outside_the_reference_limits_are_refused() {
    let ok = RcfParams::default();
    assert!(RandomCutForest::new(ok, 0).is_ok());
    let bad = [
        (
            RcfParams {
                number_of_trees: 0,
                ..ok
            },
            "numberOfTrees",
        ),
        (
            RcfParams {
                number_of_trees: 1001,
                ..ok
            },
            "numberOfTrees",
        ),
        (
            RcfParams {
                sub_sample_size: 9,
                ..ok
            },
            "subSampleSize",
        ),
        (
            RcfParams {
                sub_sample_size: 1001,
                ..ok
            },
            "subSampleSize",
        ),
        (
            RcfParams {
                time_decay: 0,
                ..ok
            },
            "timeDecay",
        ),
        (
            RcfParams {
                time_decay: 1 << 31,
                ..ok
            },
            "timeDecay",
        ),
        (
            RcfParams {
                time_decay: 256,
                ..ok
            },
            "less than timeDecay",
        ),
        (
            RcfParams {
                shingle_size: 0,
                ..ok
            },
            "shingleSize",
        ),
        (
            RcfParams {
                shingle_size: 31,
                ..ok
            },
            "shingleSize",
        ),
    ];
    for (params, what) in bad {
        let err = RandomCutForest::new(params, 0).unwrap_err();
        assert!(err.contains(what), "{params:?}: {err}");
    }
    let edges = [
        RcfParams {
            number_of_trees: 1,
            sub_sample_size: 10,
            time_decay: 11,
            shingle_size: 1,
        },
        RcfParams {
            number_of_trees: 1000,
            sub_sample_size: 1000,
            time_decay: i32::MAX as u64,
            shingle_size: 30,
        },
    ];
    for params in edges {
        assert!(RandomCutForest::new(params, 0).is_ok(), "{params:?}");
    }
}

#[test]
fn rows_that_do_not_fit_are_skipped() {
    let mut forest = RandomCutForest::new(RcfParams::default(), 3).unwrap();
    for &v in &series(200) {
        forest.score_and_update(&[v]);
    }
    let before = forest.clone();
    assert_eq!(forest.score_and_update(&[f64::NAN]), 0.0);
    assert_eq!(forest.score_and_update(&[f64::INFINITY]), 0.0);
    assert_eq!(forest.score_and_update(&[1.0, 2.0]), 0.0);
    assert_eq!(forest.score_and_update(&[]), 0.0);
    assert_eq!(forest, before);
    assert!(forest.score_and_update(&[0.5]) > 0.0);

    // 9 columns times a shingle of 30 is over the 256 coordinates a point may have.
    let wide = RcfParams {
        shingle_size: 30,
        ..RcfParams::default()
    };
    let mut forest = RandomCutForest::new(wide, 3).unwrap();
    let empty = forest.clone();
    for i in 0..200 {
        assert_eq!(forest.score_and_update(&[f64::from(i); 9]), 0.0);
    }
    assert_eq!(forest, empty);
    let mut narrow = RandomCutForest::new(wide, 3).unwrap();
    let learnt: Vec<f64> = (0..200)
        .map(|i| narrow.score_and_update(&[f64::from(i % 17); 8]))
        .collect();
    assert!(learnt[200 - 1] > 0.0, "8 x 30 = 240 coordinates fit");
}

#[test]
fn the_explanation_blames_the_anomalous_column_and_sums_to_the_score() {
    let mut noise = Noise(11);
    let mut forest = RandomCutForest::new(RcfParams::default(), 8).unwrap();
    let mut last = (0.0, Vec::new());
    for i in 0..1500 {
        let mut row = [100.0 + 5.0 * noise.gauss(), 65.0 + 3.0 * noise.gauss()];
        if i == 1400 {
            row[1] = 130.0; // diastolic far too high
        }
        if i == 1450 {
            row[0] = 20.0; // systolic far too low
        }
        let (score, attr) = forest.explain_and_update(&row);
        let sum: f64 = attr.iter().map(|a| a.score()).sum();
        assert!(
            (sum - score).abs() <= 1e-9 * score.max(1.0),
            "row {i}: {sum} vs {score}"
        );
        if i == 1400 {
            assert!(attr[1].score() > 4.0 * attr[0].score(), "{attr:?}");
            assert_eq!(attr[1].direction(), Direction::High);
            assert!(attr[1].strength > 1.0 && attr[0].strength < 0.5, "{attr:?}");
            last = (score, attr.clone());
        }
        if i == 1450 {
            assert!(attr[0].score() > 4.0 * attr[1].score(), "{attr:?}");
            assert_eq!(attr[0].direction(), Direction::Low);
        }
    }
    let json = explanation_json(&["Systolic", "Diastolic"], &last.1, true);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 2);
    assert_eq!(v["Diastolic"]["DIRECTION"], "HIGH");
    let attribution: f64 = v["Diastolic"]["ATTRIBUTION_SCORE"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((attribution - last.1[1].score()).abs() < 1e-4);
    assert!(json.starts_with("{\"Systolic\":{\"DIRECTION\":"), "{json}");
    let plain = explanation_json(&["Systolic", "Diastolic"], &last.1, false);
    assert!(
        !plain.contains("DIRECTION") && plain.contains("ATTRIBUTION_SCORE"),
        "{plain}"
    );
}

fn text(s: &str) -> Value {
    Value::Varchar(s.into())
}

#[test]
fn top_k_finds_the_planted_frequent_items_per_window() {
    let mut noise = Noise(3);
    let mut topk = TopKTumbling::new(3, 60).unwrap();
    let window = 60_000;
    let t0 = 1_700_000_040_000i64 - 1_700_000_040_000i64 % window;
    let mut emitted = Vec::new();
    // Window 1: 20,000 rows; HOT1 8%, HOT2 6%, HOT3 4%, the rest spread over 50,000
    // items (each about 0.002%), far more items than the 64 counters.
    for i in 0..20_000i64 {
        let r = noise.unit();
        let item = if r < 0.08 {
            text("HOT1")
        } else if r < 0.14 {
            text("HOT2")
        } else if r < 0.18 {
            text("HOT3")
        } else {
            text(&format!("cold{}", noise.u64() % 50_000))
        };
        emitted.extend(topk.push(t0 + i * 2, &item));
        if i % 7 == 0 {
            emitted.extend(topk.push(t0 + i * 2, &Value::Null));
        }
    }
    assert!(emitted.is_empty(), "nothing closes before the window ends");
    // The first row of the next window closes the first.
    emitted.extend(topk.push(t0 + window, &text("NEXT")));
    let items: Vec<&Value> = emitted.iter().map(|r| &r.item).collect();
    assert_eq!(items, [&text("HOT1"), &text("HOT2"), &text("HOT3")]);
    assert!(emitted.iter().all(|r| r.rowtime == t0 + window));
    let hot1 = emitted[0].count;
    assert!((1400..2000).contains(&hot1), "{hot1}");
    // Time alone closes the second window, and a window without rows emits nothing.
    assert!(topk.advance(t0 + 2 * window - 1).is_empty());
    let second = topk.advance(t0 + 2 * window);
    assert_eq!(second.len(), 1);
    assert_eq!((second[0].item.clone(), second[0].count), (text("NEXT"), 1));
    assert!(topk.advance(t0 + 10 * window).is_empty());
    // A checkpoint keeps the open window.
    topk.push(t0 + 20 * window, &text("A"));
    let mut restored: TopKTumbling =
        serde_json::from_str(&serde_json::to_string(&topk).unwrap()).unwrap();
    restored.push(t0 + 20 * window + 1, &text("A"));
    let rows = restored.advance(t0 + 21 * window);
    assert_eq!(rows[0].count, 2);
    // Limits of the reference.
    assert!(TopKTumbling::new(0, 60).is_err());
    assert!(TopKTumbling::new(100_001, 60).is_err());
    assert!(TopKTumbling::new(100_000, 3600).is_ok());
    assert!(TopKTumbling::new(1, 0).is_err());
    assert!(TopKTumbling::new(1, 3601).is_err());
}

#[test]
fn distinct_counts_are_exact_to_ten_thousand_then_within_the_hll_bound() {
    let mut counter = CountDistinctTumbling::new(10).unwrap();
    let window = 10_000i64;
    // Window 0: 10,000 distinct items, each twice: exact.
    for i in 0..20_000i64 {
        assert!(counter.push(i / 4, &Value::Integer(i % 10_000)).is_none());
    }
    // Window 1: 100,000 distinct strings.
    let mut closed = None;
    for i in 0..100_000i64 {
        if let Some(row) = counter.push(window + i / 20, &text(&format!("user-{i}"))) {
            closed = Some(row);
        }
    }
    let first = closed.expect("window 0 closed");
    assert_eq!(first.rowtime, window);
    assert_eq!(first.count, 10_000);
    // Checkpoint mid-window, then close it.
    let restored: CountDistinctTumbling =
        serde_json::from_str(&serde_json::to_string(&counter).unwrap()).unwrap();
    for mut c in [counter, restored] {
        let row = c.advance(2 * window).unwrap();
        assert_eq!(row.rowtime, 2 * window);
        // 2.5% is about three standard errors (0.81%) of 2^14 registers.
        let error = (row.count as f64 - 100_000.0).abs() / 100_000.0;
        assert!(
            error < 0.025,
            "estimate {} ({:.2}% off)",
            row.count,
            error * 100.0
        );
    }
    assert!(CountDistinctTumbling::new(0).is_err());
    assert!(CountDistinctTumbling::new(3601).is_err());
}

#[test]
fn hll_error_over_many_cardinalities_stays_within_three_sigma() {
    for (seed, n) in [(1u64, 20_000u64), (2, 50_000), (3, 150_000), (4, 400_000)] {
        let mut counter = CountDistinctTumbling::new(1).unwrap();
        for i in 0..n {
            counter.push(0, &Value::Integer((i ^ (seed << 40)) as i64));
        }
        let row = counter.advance(1000).unwrap();
        let error = (row.count as f64 - n as f64).abs() / n as f64;
        assert!(error < 0.025, "n {n}: estimate {}", row.count);
    }
}

fn input_stream() -> Vec<freshet_sql::StreamDef> {
    vec![freshet_sql::StreamDef {
        name: "SOURCE_SQL_STREAM_001".into(),
        columns: vec![
            freshet_sql::Column {
                name: "TICKER".into(),
                ty: freshet_sql::SqlType::Varchar(4),
            },
            freshet_sql::Column {
                name: "PRICE".into(),
                ty: freshet_sql::SqlType::Double,
            },
        ],
    }]
}

const RCF_APP: &str = r#"
CREATE OR REPLACE STREAM "TEMP_STREAM" ("PRICE" DOUBLE, "ANOMALY_SCORE" DOUBLE);
CREATE OR REPLACE PUMP "STREAM_PUMP" AS INSERT INTO "TEMP_STREAM"
SELECT STREAM "PRICE", "ANOMALY_SCORE"
FROM TABLE(RANDOM_CUT_FOREST(CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001")));
"#;

fn push_prices(p: &mut freshet_sql::Program, prices: &[f64], from: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for (i, &v) in prices.iter().enumerate() {
        let rowtime = 1_700_000_000_000 + 1000 * (from + i) as i64;
        p.push(
            "SOURCE_SQL_STREAM_001",
            rowtime,
            vec![text("AMZN"), Value::Double(v)],
            &mut out,
        )
        .unwrap();
    }
    out.iter()
        .filter(|e| e.stream == "TEMP_STREAM")
        .map(|e| match e.values[1] {
            Value::Double(s) => s,
            ref v => panic!("{v:?}"),
        })
        .collect()
}

#[test]
fn random_cut_forest_runs_in_an_application() {
    let points = series(3000);
    let mut app = freshet_sql::Program::compile(RCF_APP, &input_stream(), &[]).unwrap();
    let scores = push_prices(&mut app, &points, 0);
    assert_eq!(scores.len(), points.len());
    // The same scores as the forest alone with the SQL functions' seed.
    let direct = scores_with_seed(&points);
    assert_eq!(scores, direct);
    let rank = ranks(&scores);
    for &i in SPIKES.iter().filter(|&&i| i < 3000) {
        assert!(rank[i] < 30, "spike at {i}: rank {}", rank[i]);
    }
    // Parameters out of range are a compile error.
    let bad = RCF_APP.replace(
        "\"SOURCE_SQL_STREAM_001\")))",
        "\"SOURCE_SQL_STREAM_001\"), 0))",
    );
    assert!(freshet_sql::Program::compile(&bad, &input_stream(), &[]).is_err());
}

fn scores_with_seed(points: &[f64]) -> Vec<f64> {
    scores(RcfParams::default(), freshet_sql::rcf::SQL_SEED, points)
}

#[test]
fn an_application_checkpoint_continues_the_forest() {
    let points = series(2000);
    let mut app = freshet_sql::Program::compile(RCF_APP, &input_stream(), &[]).unwrap();
    push_prices(&mut app, &points[..1000], 0);
    let state = app.checkpoint();
    let mut restored = freshet_sql::Program::compile(RCF_APP, &input_stream(), &[]).unwrap();
    restored.restore(&state).unwrap();
    let a = push_prices(&mut app, &points[1000..], 1000);
    let b = push_prices(&mut restored, &points[1000..], 1000);
    assert_eq!(a, b);
}

#[test]
fn the_explanation_variant_runs_in_an_application() {
    let code = r#"
CREATE OR REPLACE STREAM "OUT" ("PRICE" DOUBLE, "ANOMALY_SCORE" DOUBLE, "ANOMALY_EXPLANATION" VARCHAR(512));
CREATE OR REPLACE PUMP "P" AS INSERT INTO "OUT"
SELECT STREAM "PRICE", "ANOMALY_SCORE", "ANOMALY_EXPLANATION"
FROM TABLE(RANDOM_CUT_FOREST_WITH_EXPLANATION(
    CURSOR(SELECT STREAM * FROM "SOURCE_SQL_STREAM_001"), 100, 256, 100000, 1, true));
"#;
    let mut app = freshet_sql::Program::compile(code, &input_stream(), &[]).unwrap();
    let mut out = Vec::new();
    for (i, v) in series(700).into_iter().enumerate() {
        app.push(
            "SOURCE_SQL_STREAM_001",
            1000 * i as i64,
            vec![text("AMZN"), Value::Double(v)],
            &mut out,
        )
        .unwrap();
    }
    let spike = &out[600];
    let Value::Varchar(json) = &spike.values[2] else {
        panic!("{spike:?}")
    };
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(v["PRICE"]["DIRECTION"], "HIGH", "{json}");
    let Value::Double(score) = spike.values[1] else {
        panic!()
    };
    let attribution: f64 = v["PRICE"]["ATTRIBUTION_SCORE"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((attribution - score).abs() < 1e-3, "{json} vs {score}");
}
