//! Windowed aggregation: tumbling windows (`GROUP BY` with a monotonic expression of
//! `ROWTIME`), stagger windows (`WINDOWED BY STAGGER`) and sliding windows
//! (`OVER (... RANGE/ROWS ... PRECEDING)`), with their aggregate accumulators.
//!
//! Follows the Kinesis Data Analytics SQL developer guide ("Tumbling Windows", "Stagger
//! Windows", "Sliding Windows") and the SQL reference's aggregate functions. A
//! tumbling or stagger group is emitted when its window closes — a row on the input
//! at or past the window's end, or [`crate::Program::advance`] past it — with the
//! window end as the output `ROWTIME`. All state is plain data so that it can be
//! checkpointed; nothing here reads a clock.

use crate::Value;
use crate::expr::{Expr, compare};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A value as a grouping key: NULLs group together, doubles by their bits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct KeyVal(pub Value);

impl PartialEq for KeyVal {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Value::Double(a), Value::Double(b)) => norm(*a) == norm(*b),
            (Value::Varchar(a), Value::Varchar(b)) => std::sync::Arc::ptr_eq(a, b) || a == b,
            (a, b) => a == b,
        }
    }
}
impl Eq for KeyVal {}

fn norm(d: f64) -> u64 {
    if d == 0.0 {
        0
    } else if d.is_nan() {
        u64::MAX
    } else {
        d.to_bits()
    }
}

impl Hash for KeyVal {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match &self.0 {
            Value::Null => h.write_u8(0),
            Value::Boolean(b) => h.write_u8(*b as u8 + 1),
            Value::Integer(i) | Value::Timestamp(i) => h.write_i64(*i),
            Value::Double(d) => h.write_u64(norm(*d)),
            Value::Decimal { mantissa, scale } => {
                h.write_i128(*mantissa);
                h.write_u8(*scale);
            }
            Value::Varchar(s) => h.write(s.as_bytes()),
            Value::Varbinary(b) => h.write(b),
            Value::Date(d) => h.write_i32(*d),
            Value::Time(t) => h.write_u32(*t),
        }
    }
}

/// A fast non-cryptographic hasher for group keys (FxHash's multiply-rotate): keys
/// come from the application's own data, and SipHash costs a third of the per-row
/// time of a GROUP BY.
#[derive(Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl KeyHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(SEED);
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        // splitmix64's finaliser: the multiply-rotate leaves the low bits (the bucket
        // index) depending only on the low input bits, which collide for keys like
        // "K00001", "K00002".
        let mut x = self.0;
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(b) ^ (rest.len() as u64) << 56);
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_i64(&mut self, i: i64) {
        self.add(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
}

pub(crate) type KeyMap<V> = HashMap<Vec<KeyVal>, V, BuildHasherDefault<KeyHasher>>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum AggKind {
    CountStar,
    Count,
    CountDistinct,
    SumInt,
    SumReal,
    Avg,
    Min,
    Max,
    VarSamp,
    VarPop,
    StddevSamp,
    StddevPop,
    First,
    Last,
}

/// One aggregate of a query: what it computes and over which argument.
#[derive(Debug, Clone)]
pub(crate) struct AggSpec {
    pub kind: AggKind,
    pub arg: Option<Expr>,
}

/// The running state of one aggregate in one group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Acc {
    Count(i64),
    Distinct(Vec<KeyVal>),
    SumInt(Option<i64>),
    SumReal {
        seen: bool,
        #[serde(with = "crate::value::any_f64")]
        sum: f64,
    },
    /// Welford's running mean and squared deviations (for AVG too).
    Moments {
        n: i64,
        #[serde(with = "crate::value::any_f64")]
        mean: f64,
        #[serde(with = "crate::value::any_f64")]
        m2: f64,
    },
    Extreme(Value),
    First(Option<Value>),
    Last(Value),
}

impl Acc {
    pub fn new(kind: AggKind) -> Acc {
        match kind {
            AggKind::CountStar | AggKind::Count => Acc::Count(0),
            AggKind::CountDistinct => Acc::Distinct(Vec::new()),
            AggKind::SumInt => Acc::SumInt(None),
            AggKind::SumReal => Acc::SumReal {
                seen: false,
                sum: 0.0,
            },
            AggKind::Avg
            | AggKind::VarSamp
            | AggKind::VarPop
            | AggKind::StddevSamp
            | AggKind::StddevPop => Acc::Moments {
                n: 0,
                mean: 0.0,
                m2: 0.0,
            },
            AggKind::Min | AggKind::Max => Acc::Extreme(Value::Null),
            AggKind::First => Acc::First(None),
            AggKind::Last => Acc::Last(Value::Null),
        }
    }

    /// Adds one row's argument (`Value::Null` for COUNT(*)'s absent one).
    pub fn update(&mut self, kind: AggKind, v: &Value) -> Result<(), String> {
        if kind == AggKind::CountStar {
            if let Acc::Count(n) = self {
                *n += 1;
            }
            return Ok(());
        }
        let null = matches!(v, Value::Null);
        match self {
            Acc::First(f) => {
                if f.is_none() {
                    *f = Some(v.clone());
                }
                return Ok(());
            }
            Acc::Last(l) => {
                *l = v.clone();
                return Ok(());
            }
            _ if null => return Ok(()),
            Acc::Count(n) => *n += 1,
            Acc::Distinct(seen) => {
                let k = KeyVal(v.clone());
                if !seen.contains(&k) {
                    seen.push(k);
                }
            }
            Acc::SumInt(s) => {
                let Value::Integer(i) = v else {
                    return Err("SUM of a non-integer".into());
                };
                *s = Some(
                    s.unwrap_or(0)
                        .checked_add(*i)
                        .ok_or("numeric overflow in SUM")?,
                );
            }
            Acc::SumReal { seen, sum } => {
                *sum += real(v)?;
                *seen = true;
            }
            Acc::Moments { n, mean, m2 } => {
                let x = real(v)?;
                *n += 1;
                let d = x - *mean;
                *mean += d / *n as f64;
                *m2 += d * (x - *mean);
            }
            Acc::Extreme(cur) => {
                let better = match &*cur {
                    Value::Null => true,
                    c => match compare(v, c) {
                        Some(o) => {
                            (kind == AggKind::Min && o.is_lt())
                                || (kind == AggKind::Max && o.is_gt())
                        }
                        None => false,
                    },
                };
                if better {
                    *cur = v.clone();
                }
            }
        }
        Ok(())
    }

    pub fn finish(&self, kind: AggKind) -> Value {
        match self {
            Acc::Count(n) => Value::Integer(*n),
            Acc::Distinct(s) => Value::Integer(s.len() as i64),
            Acc::SumInt(s) => s.map_or(Value::Null, Value::Integer),
            Acc::SumReal { seen, sum } => {
                if *seen {
                    Value::Double(*sum)
                } else {
                    Value::Null
                }
            }
            Acc::Moments { n, mean, m2 } => {
                let n = *n;
                let var = |d: i64| {
                    if n < d.max(1) {
                        Value::Null
                    } else {
                        Value::Double((m2 / (n - d) as f64).max(0.0))
                    }
                };
                match kind {
                    AggKind::Avg if n == 0 => Value::Null,
                    AggKind::Avg => Value::Double(*mean),
                    AggKind::VarPop => var(0),
                    AggKind::VarSamp => var(1),
                    AggKind::StddevPop => sqrt(var(0)),
                    _ => sqrt(var(1)),
                }
            }
            Acc::Extreme(v) | Acc::Last(v) => v.clone(),
            Acc::First(v) => v.clone().unwrap_or(Value::Null),
        }
    }
}

fn sqrt(v: Value) -> Value {
    match v {
        Value::Double(d) => Value::Double(d.sqrt()),
        v => v,
    }
}

fn real(v: &Value) -> Result<f64, String> {
    match v {
        Value::Integer(i) => Ok(*i as f64),
        Value::Double(d) => Ok(*d),
        Value::Decimal { mantissa, scale } => Ok(*mantissa as f64 / 10f64.powi(*scale as i32)),
        _ => Err("aggregate of a non-number".into()),
    }
}

/// What happens to a closed group: HAVING, then the select list, over the row
/// `keys ++ aggregate results`, with the window end as ROWTIME.
#[derive(Debug, Clone)]
pub(crate) struct GroupOutput {
    pub having: Option<Expr>,
    pub select: Vec<Expr>,
    /// The select item that sets the output ROWTIME, if any (else the window end).
    pub rowtime: Option<Expr>,
}

impl GroupOutput {
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        end: i64,
        key: &[KeyVal],
        accs: &[Acc],
        aggs: &[AggSpec],
        scratch: &mut Vec<Value>,
        out: &mut Vec<(i64, Vec<Value>)>,
        errs: &mut Vec<String>,
    ) {
        scratch.clear();
        scratch.extend(key.iter().map(|k| k.0.clone()));
        scratch.extend(accs.iter().zip(aggs).map(|(a, s)| a.finish(s.kind)));
        if let Some(h) = &self.having {
            match h.eval(end, scratch) {
                Ok(Value::Boolean(true)) => {}
                Ok(_) => return,
                Err(e) => return errs.push(e),
            }
        }
        emit_row(&self.select, self.rowtime.as_ref(), end, scratch, out, errs);
    }
}

/// Evaluates a select list into an output row.
pub(crate) fn emit_row(
    select: &[Expr],
    rowtime: Option<&Expr>,
    rt: i64,
    row: &[Value],
    out: &mut Vec<(i64, Vec<Value>)>,
    errs: &mut Vec<String>,
) {
    let mut values = Vec::with_capacity(select.len());
    for e in select {
        match e.eval(rt, row) {
            Ok(v) => values.push(v),
            Err(e) => return errs.push(e),
        }
    }
    let rt = match rowtime.map(|e| e.eval(rt, row)) {
        None => rt,
        Some(Ok(Value::Timestamp(t))) => t,
        Some(Ok(_)) => return errs.push("ROWTIME must not be NULL".into()),
        Some(Err(e)) => return errs.push(e),
    };
    out.push((rt, values));
}

fn update_all(accs: &mut [Acc], aggs: &[AggSpec], rt: i64, row: &[Value], errs: &mut Vec<String>) {
    for (acc, spec) in accs.iter_mut().zip(aggs) {
        let r = match &spec.arg {
            None => acc.update(spec.kind, &Value::Null),
            Some(Expr::Col(i)) => acc.update(spec.kind, row.get(*i).unwrap_or(&Value::Null)),
            Some(e) => e.eval(rt, row).and_then(|v| acc.update(spec.kind, &v)),
        };
        if let Err(e) = r {
            errs.push(e);
        }
    }
}

fn eval_key(
    keys: &[Expr],
    rt: i64,
    row: &[Value],
    scratch: &mut Vec<KeyVal>,
) -> Result<(), String> {
    scratch.clear();
    for k in keys {
        let v = match k {
            Expr::Col(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            e => e.eval(rt, row)?,
        };
        scratch.push(KeyVal(v));
    }
    Ok(())
}

/// The groups of one tumbling window, in the order of their first row.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TumblingWindow {
    groups: Vec<(Vec<KeyVal>, Vec<Acc>)>,
    /// The groups by their key's byte encoding ([`encode_key`]): one contiguous
    /// buffer per key, so a lookup touches one allocation, not one per value.
    #[serde(skip)]
    index: HashMap<Box<[u8]>, usize, BuildHasherDefault<KeyHasher>>,
}

/// Appends an injective byte encoding of `v` (tag, then fixed-width or
/// length-prefixed bytes; doubles as their normalised bits).
pub(crate) fn encode_key(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0),
        Value::Boolean(b) => out.extend([1, *b as u8]),
        Value::Integer(i) => {
            out.push(2);
            out.extend(i.to_le_bytes());
        }
        Value::Double(d) => {
            out.push(3);
            out.extend(norm(*d).to_le_bytes());
        }
        Value::Decimal { mantissa, scale } => {
            out.push(4);
            out.extend(mantissa.to_le_bytes());
            out.push(*scale);
        }
        Value::Varchar(s) => {
            out.push(5);
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        Value::Varbinary(b) => {
            out.push(6);
            out.extend((b.len() as u64).to_le_bytes());
            out.extend(b.iter());
        }
        Value::Timestamp(t) => {
            out.push(7);
            out.extend(t.to_le_bytes());
        }
        Value::Date(d) => {
            out.push(8);
            out.extend(d.to_le_bytes());
        }
        Value::Time(t) => {
            out.push(9);
            out.extend(t.to_le_bytes());
        }
    }
}

fn encoded(key: &[KeyVal]) -> Box<[u8]> {
    let mut b = Vec::new();
    for k in key {
        encode_key(&k.0, &mut b);
    }
    b.into_boxed_slice()
}

/// GROUP BY with a monotonic ROWTIME key: one window per step of that key.
#[derive(Debug)]
pub(crate) struct Tumbling {
    pub keys: Vec<Expr>,
    /// Which key is the monotonic ROWTIME expression (its value is the window start).
    pub window_key: usize,
    /// Window length in milliseconds.
    pub width: i64,
    pub aggs: Vec<AggSpec>,
    pub output: GroupOutput,
    /// Open windows by their end.
    windows: BTreeMap<i64, TumblingWindow>,
    key_scratch: Vec<KeyVal>,
    bytes_scratch: Vec<u8>,
    row_scratch: Vec<Value>,
}

#[derive(Serialize, Deserialize)]
struct TumblingState {
    windows: Vec<(i64, TumblingWindow)>,
}

impl Tumbling {
    pub fn new(
        keys: Vec<Expr>,
        window_key: usize,
        width: i64,
        aggs: Vec<AggSpec>,
        output: GroupOutput,
    ) -> Tumbling {
        Tumbling {
            keys,
            window_key,
            width,
            aggs,
            output,
            windows: BTreeMap::new(),
            key_scratch: Vec::new(),
            bytes_scratch: Vec::new(),
            row_scratch: Vec::new(),
        }
    }

    pub fn process(&mut self, rt: i64, row: &[Value], errs: &mut Vec<String>) {
        // The key is encoded straight from the row (no value is cloned) and only
        // materialised for a new group.
        self.bytes_scratch.clear();
        let mut start = None;
        for (i, k) in self.keys.iter().enumerate() {
            let computed;
            let v = match k {
                Expr::Col(c) => row.get(*c).unwrap_or(&Value::Null),
                e => match e.eval(rt, row) {
                    Ok(v) => {
                        computed = v;
                        &computed
                    }
                    Err(e) => return errs.push(e),
                },
            };
            if i == self.window_key {
                start = match v {
                    Value::Timestamp(t) => Some(*t),
                    _ => None,
                };
            }
            encode_key(v, &mut self.bytes_scratch);
        }
        let Some(start) = start else {
            return errs.push("the window's ROWTIME key is NULL".into());
        };
        let end = start.saturating_add(self.width);
        // Rows nearly always fall in the newest window.
        let w = match self.windows.last_entry() {
            Some(e) if *e.key() == end => e.into_mut(),
            _ => self.windows.entry(end).or_default(),
        };
        let slot = match w.index.get(self.bytes_scratch.as_slice()) {
            Some(&slot) => slot,
            None => {
                if let Err(e) = eval_key(&self.keys, rt, row, &mut self.key_scratch) {
                    return errs.push(e);
                }
                let key = self.key_scratch.clone();
                w.index
                    .insert(self.bytes_scratch.as_slice().into(), w.groups.len());
                w.groups
                    .push((key, self.aggs.iter().map(|a| Acc::new(a.kind)).collect()));
                w.groups.len() - 1
            }
        };
        let accs = &mut w.groups[slot].1;
        update_all(accs, &self.aggs, rt, row, errs);
    }

    /// Emits the windows that end at or before `now`.
    pub fn advance(&mut self, now: i64, out: &mut Vec<(i64, Vec<Value>)>, errs: &mut Vec<String>) {
        while let Some(entry) = self.windows.first_entry() {
            if *entry.key() > now {
                break;
            }
            let (end, w) = entry.remove_entry();
            for (key, accs) in &w.groups {
                self.output
                    .emit(end, key, accs, &self.aggs, &mut self.row_scratch, out, errs);
            }
        }
    }

    pub fn checkpoint(&self) -> serde_json::Value {
        let state = TumblingState {
            windows: self.windows.iter().map(|(e, w)| (*e, w.clone())).collect(),
        };
        serde_json::to_value(state).unwrap_or(serde_json::Value::Null)
    }

    pub fn restore(&mut self, v: &serde_json::Value) -> Result<(), String> {
        let state: TumblingState =
            serde_json::from_value(v.clone()).map_err(|e| format!("tumbling window state: {e}"))?;
        self.windows.clear();
        for (end, mut w) in state.windows {
            w.index = w
                .groups
                .iter()
                .enumerate()
                .map(|(i, (k, _))| (encoded(k), i))
                .collect();
            self.windows.insert(end, w);
        }
        Ok(())
    }
}

/// WINDOWED BY STAGGER: a partition's window opens at its first row's ROWTIME and
/// closes `range` later.
#[derive(Debug)]
pub(crate) struct Stagger {
    pub keys: Vec<Expr>,
    pub range: i64,
    pub aggs: Vec<AggSpec>,
    pub output: GroupOutput,
    open: KeyMap<StaggerGroup>,
    /// (close time, opening sequence) to the partition key, in closing order.
    closing: BTreeMap<(i64, u64), Vec<KeyVal>>,
    seq: u64,
    key_scratch: Vec<KeyVal>,
    row_scratch: Vec<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StaggerGroup {
    close: i64,
    seq: u64,
    accs: Vec<Acc>,
}

#[derive(Serialize, Deserialize)]
struct StaggerState {
    groups: Vec<(Vec<KeyVal>, StaggerGroup)>,
    seq: u64,
}

impl Stagger {
    pub fn new(keys: Vec<Expr>, range: i64, aggs: Vec<AggSpec>, output: GroupOutput) -> Stagger {
        Stagger {
            keys,
            range,
            aggs,
            output,
            open: KeyMap::default(),
            closing: BTreeMap::new(),
            seq: 0,
            key_scratch: Vec::new(),
            row_scratch: Vec::new(),
        }
    }

    pub fn process(&mut self, rt: i64, row: &[Value], errs: &mut Vec<String>) {
        if let Err(e) = eval_key(&self.keys, rt, row, &mut self.key_scratch) {
            return errs.push(e);
        }
        if !self.open.contains_key(self.key_scratch.as_slice()) {
            let close = rt.saturating_add(self.range);
            self.seq += 1;
            self.closing
                .insert((close, self.seq), self.key_scratch.clone());
            self.open.insert(
                self.key_scratch.clone(),
                StaggerGroup {
                    close,
                    seq: self.seq,
                    accs: self.aggs.iter().map(|a| Acc::new(a.kind)).collect(),
                },
            );
        }
        if let Some(g) = self.open.get_mut(self.key_scratch.as_slice()) {
            update_all(&mut g.accs, &self.aggs, rt, row, errs);
        }
    }

    pub fn advance(&mut self, now: i64, out: &mut Vec<(i64, Vec<Value>)>, errs: &mut Vec<String>) {
        while let Some(entry) = self.closing.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let ((close, _), key) = entry.remove_entry();
            if let Some(g) = self.open.remove(&key) {
                self.output.emit(
                    close,
                    &key,
                    &g.accs,
                    &self.aggs,
                    &mut self.row_scratch,
                    out,
                    errs,
                );
            }
        }
    }

    pub fn checkpoint(&self) -> serde_json::Value {
        let state = StaggerState {
            groups: self
                .open
                .iter()
                .map(|(k, g)| (k.clone(), g.clone()))
                .collect(),
            seq: self.seq,
        };
        serde_json::to_value(state).unwrap_or(serde_json::Value::Null)
    }

    pub fn restore(&mut self, v: &serde_json::Value) -> Result<(), String> {
        let state: StaggerState =
            serde_json::from_value(v.clone()).map_err(|e| format!("stagger window state: {e}"))?;
        self.open.clear();
        self.closing.clear();
        self.seq = state.seq;
        for (k, g) in state.groups {
            self.closing.insert((g.close, g.seq), k.clone());
            self.open.insert(k, g);
        }
        Ok(())
    }
}

/// One window specification of a sliding query and the rows it holds per partition.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    pub partition: Vec<Expr>,
    pub frame: crate::ast::Frame,
    /// Indices into [`Sliding::aggs`] of the aggregates over this window.
    pub aggs: Vec<usize>,
    rows: KeyMap<VecDeque<(i64, Vec<Value>)>>,
    last_prune: i64,
}

impl SlidingWindow {
    pub fn new(partition: Vec<Expr>, frame: crate::ast::Frame, aggs: Vec<usize>) -> Self {
        SlidingWindow {
            partition,
            frame,
            aggs,
            rows: KeyMap::default(),
            last_prune: i64::MIN,
        }
    }
}

/// Aggregates `OVER` windows: one output row per input row.
#[derive(Debug)]
pub(crate) struct Sliding {
    pub aggs: Vec<AggSpec>,
    pub windows: Vec<SlidingWindow>,
    pub select: Vec<Expr>,
    pub rowtime: Option<Expr>,
    key_scratch: Vec<KeyVal>,
}

/// One window's partitions and their rows (ROWTIME, aggregate arguments).
type PartitionRows = Vec<(Vec<KeyVal>, VecDeque<(i64, Vec<Value>)>)>;

#[derive(Serialize, Deserialize)]
struct SlidingState {
    windows: Vec<PartitionRows>,
}

impl Sliding {
    pub fn new(
        aggs: Vec<AggSpec>,
        windows: Vec<SlidingWindow>,
        select: Vec<Expr>,
        rowtime: Option<Expr>,
    ) -> Sliding {
        Sliding {
            aggs,
            windows,
            select,
            rowtime,
            key_scratch: Vec::new(),
        }
    }

    pub fn process(
        &mut self,
        rt: i64,
        row: Vec<Value>,
        out: &mut Vec<(i64, Vec<Value>)>,
        errs: &mut Vec<String>,
    ) {
        let mut results = vec![Value::Null; self.aggs.len()];
        for w in &mut self.windows {
            if let Err(e) = eval_key(&w.partition, rt, &row, &mut self.key_scratch) {
                return errs.push(e);
            }
            let mut args = Vec::with_capacity(w.aggs.len());
            for &a in &w.aggs {
                match &self.aggs[a].arg {
                    None => args.push(Value::Null),
                    Some(e) => match e.eval(rt, &row) {
                        Ok(v) => args.push(v),
                        Err(e) => return errs.push(e),
                    },
                }
            }
            let rows = w.rows.entry(self.key_scratch.clone()).or_default();
            rows.push_back((rt, args));
            match w.frame {
                crate::ast::Frame::Range(r) => {
                    let low = rt.saturating_sub(r);
                    while rows.front().is_some_and(|(t, _)| *t < low) {
                        rows.pop_front();
                    }
                }
                crate::ast::Frame::Rows(n) => {
                    while rows.len() as u64 > n.saturating_add(1) {
                        rows.pop_front();
                    }
                }
            }
            for (pos, &a) in w.aggs.iter().enumerate() {
                let kind = self.aggs[a].kind;
                let mut acc = Acc::new(kind);
                for (_, args) in rows.iter() {
                    if let Err(e) = acc.update(kind, &args[pos]) {
                        errs.push(e);
                        break;
                    }
                }
                results[a] = acc.finish(kind);
            }
        }
        let mut ctx = row;
        ctx.extend(results);
        emit_row(&self.select, self.rowtime.as_ref(), rt, &ctx, out, errs);
    }

    /// Drops rows that have left every RANGE window, at most once per range.
    pub fn advance(&mut self, now: i64) {
        for w in &mut self.windows {
            let crate::ast::Frame::Range(r) = w.frame else {
                continue;
            };
            if now.saturating_sub(w.last_prune) < r.max(1) {
                continue;
            }
            w.last_prune = now;
            let low = now.saturating_sub(r);
            w.rows.retain(|_, rows| {
                while rows.front().is_some_and(|(t, _)| *t < low) {
                    rows.pop_front();
                }
                !rows.is_empty()
            });
        }
    }

    pub fn checkpoint(&self) -> serde_json::Value {
        let state = SlidingState {
            windows: self
                .windows
                .iter()
                .map(|w| w.rows.iter().map(|(k, r)| (k.clone(), r.clone())).collect())
                .collect(),
        };
        serde_json::to_value(state).unwrap_or(serde_json::Value::Null)
    }

    pub fn restore(&mut self, v: &serde_json::Value) -> Result<(), String> {
        let state: SlidingState =
            serde_json::from_value(v.clone()).map_err(|e| format!("sliding window state: {e}"))?;
        if state.windows.len() != self.windows.len() {
            return Err("sliding window state does not match the program".into());
        }
        for (w, rows) in self.windows.iter_mut().zip(state.windows) {
            w.rows = rows.into_iter().collect();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulators() {
        let mut a = Acc::new(AggKind::VarSamp);
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            a.update(AggKind::VarSamp, &Value::Double(x)).unwrap();
        }
        let Value::Double(v) = a.finish(AggKind::VarSamp) else {
            panic!("not a double")
        };
        assert!((v - 32.0 / 7.0).abs() < 1e-12);
        let Value::Double(p) = a.finish(AggKind::StddevPop) else {
            panic!("not a double")
        };
        assert!((p - 2.0).abs() < 1e-12);

        let mut c = Acc::new(AggKind::Count);
        c.update(AggKind::Count, &Value::Null).unwrap();
        c.update(AggKind::Count, &Value::Integer(1)).unwrap();
        assert_eq!(c.finish(AggKind::Count), Value::Integer(1));

        let mut s = Acc::new(AggKind::SumInt);
        assert_eq!(s.finish(AggKind::SumInt), Value::Null);
        s.update(AggKind::SumInt, &Value::Integer(i64::MAX))
            .unwrap();
        assert!(s.update(AggKind::SumInt, &Value::Integer(1)).is_err());

        let mut m = Acc::new(AggKind::Min);
        for x in [3, 1, 2] {
            m.update(AggKind::Min, &Value::Integer(x)).unwrap();
        }
        assert_eq!(m.finish(AggKind::Min), Value::Integer(1));

        let mut d = Acc::new(AggKind::CountDistinct);
        for x in [1.0, 1.0, -0.0, 0.0] {
            d.update(AggKind::CountDistinct, &Value::Double(x)).unwrap();
        }
        assert_eq!(d.finish(AggKind::CountDistinct), Value::Integer(2));
    }

    #[test]
    fn key_encoding_tells_keys_apart() {
        let keys: Vec<Vec<KeyVal>> = vec![
            vec![
                KeyVal(Value::Varchar("ab".into())),
                KeyVal(Value::Varchar("c".into())),
            ],
            vec![
                KeyVal(Value::Varchar("a".into())),
                KeyVal(Value::Varchar("bc".into())),
            ],
            vec![KeyVal(Value::Integer(1))],
            vec![KeyVal(Value::Timestamp(1))],
            vec![KeyVal(Value::Null)],
            vec![KeyVal(Value::Double(0.5))],
            vec![],
        ];
        let enc: Vec<Box<[u8]>> = keys.iter().map(|k| encoded(k)).collect();
        for i in 0..enc.len() {
            for j in 0..i {
                assert_ne!(enc[i], enc[j], "{:?} vs {:?}", keys[i], keys[j]);
            }
        }
        assert_eq!(
            encoded(&[KeyVal(Value::Double(0.0))]),
            encoded(&[KeyVal(Value::Double(-0.0))])
        );
    }

    #[test]
    fn key_hash_is_consistent_for_slices_and_vecs() {
        let mut m: KeyMap<u32> = KeyMap::default();
        let k = vec![
            KeyVal(Value::Varchar("AMZN".into())),
            KeyVal(Value::Integer(3)),
        ];
        m.insert(k.clone(), 7);
        assert_eq!(m.get(k.as_slice()), Some(&7));
        assert_eq!(m.get(&k[..1]), None);
    }
}
