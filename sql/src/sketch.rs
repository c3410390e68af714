//! `TOP_K_ITEMS_TUMBLING` and `COUNT_DISTINCT_ITEMS_TUMBLING`: space-bounded sketches
//! of one column over tumbling windows.
//!
//! Follows the Amazon Kinesis Data Analytics SQL Reference (pages
//! `TOP_K_ITEMS_TUMBLING Function` and `COUNT_DISTINCT_ITEMS_TUMBLING Function`):
//! `K` from 1 to 100000, `windowSize` in seconds from 1 to 3600; the most frequent values
//! are approximate; the distinct count is exact while a window holds at most 10,000
//! distinct items and a HyperLogLog estimate beyond.
//!
//! * Heavy hitters: Space-Saving (Metwally, Agrawal and El Abbadi, "Efficient
//!   Computation of Frequent and Top-k Elements in Data Streams", ICDT 2005) with
//!   `m = 4K` counters (at least 64). Every item seen more than `N / m` times in a
//!   window of `N` rows is reported, and each reported count over-estimates the true
//!   count by at most `N / m` (the counter's recorded error).
//! * Distinct items: an exact set of 64-bit item hashes up to 10,000 entries, then a
//!   HyperLogLog (Flajolet, Fusy, Gandouet and Meunier, 2007) with 2^14 registers: a
//!   relative standard error of `1.04 / sqrt(16384)`, about 0.81% (so within 2.5% about
//!   99.7% of the time), 16 KiB per window. Hashes are FNV-1a with the MurmurHash3
//!   finalizer, fixed across runs and builds so checkpoints stay meaningful.
//!
//! Windows are aligned to the epoch: a row with `ROWTIME` `t` belongs to the window
//! starting at `t - t mod windowSize`. A window closes when a row of a later window
//! arrives or time is advanced past its end; its result rows carry `ROWTIME` = the
//! window's end, like the `GROUP BY STEP(...)` tumbling windows. A window without rows
//! emits nothing. `NULL` items are not counted (a window of only `NULL`s counts 0
//! distinct items and has no frequent items). `ROWTIME` only grows in an in-application
//! stream; a row older than the open window is dropped and counted in `late_rows`.
//!
//! Pure: no I/O, no clock, no threads, no panics on any input; deserialized states are
//! checked.

use crate::Value;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Largest `K` of `TOP_K_ITEMS_TUMBLING`.
pub const MAX_K: i64 = 100_000;
/// Largest `windowSize`, in seconds, of both functions.
pub const MAX_WINDOW_SECONDS: i64 = 3600;
/// Distinct items counted exactly before switching to HyperLogLog.
pub const EXACT_DISTINCT_LIMIT: usize = 10_000;
/// log2 of the number of HyperLogLog registers.
const HLL_PRECISION: u32 = 14;
const HLL_REGISTERS: usize = 1 << HLL_PRECISION;

/// The identity of a column value for counting: equal values, equal keys. `NULL` has
/// none.
pub fn item_key(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => return None,
        Value::Boolean(b) => format!("b:{b}"),
        Value::Integer(i) => format!("i:{i}"),
        // -0.0 equals 0.0 in SQL; all NaNs are one value here.
        Value::Double(d) if *d == 0.0 => "d:0".to_string(),
        Value::Double(d) if d.is_nan() => "d:nan".to_string(),
        Value::Double(d) => format!("d:{:016x}", d.to_bits()),
        Value::Decimal { mantissa, scale } => {
            // Normalized, so 1.50 and 1.5 are one value.
            let (mut m, mut s) = (*mantissa, *scale);
            while s > 0 && m % 10 == 0 {
                m /= 10;
                s -= 1;
            }
            format!("n:{m}e-{s}")
        }
        Value::Varchar(s) => format!("s:{s}"),
        Value::Varbinary(b) => {
            let mut k = String::with_capacity(2 + 2 * b.len());
            k.push_str("x:");
            for byte in b.iter() {
                k.push_str(&format!("{byte:02x}"));
            }
            k
        }
        Value::Timestamp(t) => format!("t:{t}"),
        Value::Date(d) => format!("D:{d}"),
        Value::Time(t) => format!("T:{t}"),
    })
}

/// A 64-bit hash of a key, the same on every platform and run.
pub fn item_hash(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // MurmurHash3's fmix64: FNV's low bits alone mix too weakly for HyperLogLog.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One monitored item of a Space-Saving summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub key: String,
    /// The value as it first appeared (what the result row shows).
    pub item: Value,
    /// Estimated occurrences: never below the true count.
    pub count: u64,
    /// How much of `count` may come from items this counter replaced.
    pub error: u64,
}

/// A Space-Saving summary of bounded size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SpaceSavingState")]
pub struct SpaceSaving {
    capacity: usize,
    /// Rows offered.
    total: u64,
    /// Min-heap on count: the counter replaced next is at index 0.
    counters: Vec<Counter>,
    /// Key to heap position; rebuilt on deserialization.
    #[serde(skip)]
    index: HashMap<String, usize>,
}

#[derive(Deserialize)]
struct SpaceSavingState {
    capacity: usize,
    total: u64,
    counters: Vec<Counter>,
}

/// Counters a deserialized summary may hold (4 * MAX_K).
const MAX_COUNTERS: usize = 4 * MAX_K as usize;

impl TryFrom<SpaceSavingState> for SpaceSaving {
    type Error = String;

    fn try_from(st: SpaceSavingState) -> Result<Self, String> {
        if st.capacity == 0 || st.capacity > MAX_COUNTERS || st.counters.len() > st.capacity {
            return Err("space-saving: capacity out of bounds".into());
        }
        let mut s = SpaceSaving {
            capacity: st.capacity,
            total: st.total,
            counters: st.counters,
            index: HashMap::new(),
        };
        for i in 0..s.counters.len() {
            if s.index.insert(s.counters[i].key.clone(), i).is_some() {
                return Err("space-saving: duplicate key".into());
            }
        }
        for i in (0..s.counters.len() / 2).rev() {
            s.sift_down(i);
        }
        Ok(s)
    }
}

impl SpaceSaving {
    /// A summary of `capacity` counters (at least one).
    pub fn new(capacity: usize) -> SpaceSaving {
        SpaceSaving {
            capacity: capacity.clamp(1, MAX_COUNTERS),
            total: 0,
            counters: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Rows offered so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.counters.swap(a, b);
        if let Some(i) = self.index.get_mut(&self.counters[a].key) {
            *i = a;
        }
        if let Some(i) = self.index.get_mut(&self.counters[b].key) {
            *i = b;
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let up = (i - 1) / 2;
            if self.counters[up].count <= self.counters[i].count {
                break;
            }
            self.swap(up, i);
            i = up;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.counters.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut low = i;
            if l < n && self.counters[l].count < self.counters[low].count {
                low = l;
            }
            if r < n && self.counters[r].count < self.counters[low].count {
                low = r;
            }
            if low == i {
                break;
            }
            self.swap(i, low);
            i = low;
        }
    }

    /// Counts one occurrence of `item` (known by `key`).
    pub fn offer(&mut self, key: &str, item: &Value) {
        self.total += 1;
        if let Some(&i) = self.index.get(key) {
            self.counters[i].count += 1;
            self.sift_down(i);
            return;
        }
        if self.counters.len() < self.capacity {
            self.counters.push(Counter {
                key: key.to_string(),
                item: item.clone(),
                count: 1,
                error: 0,
            });
            let last = self.counters.len() - 1;
            self.index.insert(key.to_string(), last);
            self.sift_up(last);
            return;
        }
        // Replace the least counted item; the newcomer inherits its count as error.
        let min = self.counters[0].count;
        let old = std::mem::replace(
            &mut self.counters[0],
            Counter {
                key: key.to_string(),
                item: item.clone(),
                count: min + 1,
                error: min,
            },
        );
        self.index.remove(&old.key);
        self.index.insert(key.to_string(), 0);
        self.sift_down(0);
    }

    /// The `k` items of highest estimated count, highest first (ties by key).
    pub fn top(&self, k: usize) -> Vec<&Counter> {
        let mut all: Vec<&Counter> = self.counters.iter().collect();
        all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        all.truncate(k);
        all
    }
}

/// HyperLogLog with 2^14 six-bit registers (held in bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct HyperLogLog {
    registers: Vec<u8>,
}

impl TryFrom<Vec<u8>> for HyperLogLog {
    type Error = String;

    fn try_from(registers: Vec<u8>) -> Result<Self, String> {
        if registers.len() != HLL_REGISTERS || registers.iter().any(|&r| r > 65 - 14) {
            return Err("hyperloglog: malformed registers".into());
        }
        Ok(HyperLogLog { registers })
    }
}

impl From<HyperLogLog> for Vec<u8> {
    fn from(h: HyperLogLog) -> Vec<u8> {
        h.registers
    }
}

impl Default for HyperLogLog {
    fn default() -> Self {
        HyperLogLog {
            registers: vec![0; HLL_REGISTERS],
        }
    }
}

impl HyperLogLog {
    pub fn insert_hash(&mut self, hash: u64) {
        let index = (hash >> (64 - HLL_PRECISION)) as usize;
        // The rank of the first 1 bit in the remaining 50 bits (51 if all are 0).
        let rest = hash << HLL_PRECISION;
        let rank = (rest.leading_zeros() + 1).min(64 - HLL_PRECISION + 1) as u8;
        if let Some(r) = self.registers.get_mut(index)
            && rank > *r
        {
            *r = rank;
        }
    }

    /// The estimate, with linear counting for small cardinalities (no large-range
    /// correction is needed with 64-bit hashes).
    pub fn estimate(&self) -> f64 {
        let m = HLL_REGISTERS as f64;
        let mut sum = 0.0;
        let mut zeros = 0usize;
        for &r in &self.registers {
            // r is at most 51 (checked on deserialization, capped on insertion).
            sum += 1.0 / (1u64 << r.min(63)) as f64;
            if r == 0 {
                zeros += 1;
            }
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }
}

/// Distinct items: exact up to [`EXACT_DISTINCT_LIMIT`], HyperLogLog beyond.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "DistinctState", into = "DistinctState")]
pub enum DistinctCounter {
    Exact(HashSet<u64>),
    Approximate(HyperLogLog),
}

#[derive(Serialize, Deserialize)]
enum DistinctState {
    Exact(Vec<u64>),
    Approximate(HyperLogLog),
}

impl TryFrom<DistinctState> for DistinctCounter {
    type Error = String;

    fn try_from(st: DistinctState) -> Result<Self, String> {
        Ok(match st {
            DistinctState::Exact(v) if v.len() <= EXACT_DISTINCT_LIMIT => {
                DistinctCounter::Exact(v.into_iter().collect())
            }
            DistinctState::Exact(_) => return Err("distinct: exact set too large".into()),
            DistinctState::Approximate(h) => DistinctCounter::Approximate(h),
        })
    }
}

impl From<DistinctCounter> for DistinctState {
    fn from(c: DistinctCounter) -> DistinctState {
        match c {
            DistinctCounter::Exact(set) => {
                let mut v: Vec<u64> = set.into_iter().collect();
                v.sort_unstable();
                DistinctState::Exact(v)
            }
            DistinctCounter::Approximate(h) => DistinctState::Approximate(h),
        }
    }
}

impl Default for DistinctCounter {
    fn default() -> Self {
        DistinctCounter::Exact(HashSet::new())
    }
}

impl DistinctCounter {
    pub fn insert_hash(&mut self, hash: u64) {
        match self {
            DistinctCounter::Exact(set) => {
                set.insert(hash);
                if set.len() > EXACT_DISTINCT_LIMIT {
                    let mut h = HyperLogLog::default();
                    for &x in set.iter() {
                        h.insert_hash(x);
                    }
                    *self = DistinctCounter::Approximate(h);
                }
            }
            DistinctCounter::Approximate(h) => h.insert_hash(hash),
        }
    }

    pub fn count(&self) -> u64 {
        match self {
            DistinctCounter::Exact(set) => set.len() as u64,
            DistinctCounter::Approximate(h) => h.estimate().round() as u64,
        }
    }
}

fn window_ms(window_seconds: i64) -> Result<i64, String> {
    if !(1..=MAX_WINDOW_SECONDS).contains(&window_seconds) {
        return Err(format!(
            "windowSize must be between 1 and {MAX_WINDOW_SECONDS} seconds, got {window_seconds}"
        ));
    }
    Ok(window_seconds * 1000)
}

/// The open window of a tumbling function: its start and its sketch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Open<S> {
    start: i64,
    sketch: S,
}

/// A row of `TOP_K_ITEMS_TUMBLING`'s result: the item (the counted column) and
/// `MOST_FREQUENT_VALUES`, its estimated count in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct TopKRow {
    /// The window's end, milliseconds since the epoch.
    pub rowtime: i64,
    pub item: Value,
    pub count: i64,
}

/// `TOP_K_ITEMS_TUMBLING(cursor, 'column', K, windowSize)` over one column's values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TopKState")]
pub struct TopKTumbling {
    k: usize,
    window_ms: i64,
    open: Option<Open<SpaceSaving>>,
    /// Rows older than the open window, dropped.
    late_rows: u64,
}

#[derive(Deserialize)]
struct TopKState {
    k: usize,
    window_ms: i64,
    open: Option<Open<SpaceSaving>>,
    late_rows: u64,
}

impl TryFrom<TopKState> for TopKTumbling {
    type Error = String;

    fn try_from(st: TopKState) -> Result<Self, String> {
        let mut t = TopKTumbling::new(i64::try_from(st.k).unwrap_or(0), st.window_ms / 1000)?;
        if t.window_ms != st.window_ms {
            return Err("top-k: window not a whole number of seconds".into());
        }
        t.open = st.open;
        t.late_rows = st.late_rows;
        Ok(t)
    }
}

impl TopKTumbling {
    pub fn new(k: i64, window_seconds: i64) -> Result<Self, String> {
        if !(1..=MAX_K).contains(&k) {
            return Err(format!("K must be between 1 and {MAX_K}, got {k}"));
        }
        Ok(TopKTumbling {
            k: k as usize,
            window_ms: window_ms(window_seconds)?,
            open: None,
            late_rows: 0,
        })
    }

    pub fn late_rows(&self) -> u64 {
        self.late_rows
    }

    /// Counts a row's item; returns the result rows of a window this row closed.
    pub fn push(&mut self, rowtime: i64, item: &Value) -> Vec<TopKRow> {
        let out = self.advance(rowtime);
        let start = rowtime - rowtime.rem_euclid(self.window_ms);
        let capacity = (4 * self.k).max(64);
        let open = self.open.get_or_insert_with(|| Open {
            start,
            sketch: SpaceSaving::new(capacity),
        });
        if rowtime < open.start {
            self.late_rows += 1;
        } else if let Some(key) = item_key(item) {
            open.sketch.offer(&key, item);
        }
        out
    }

    /// Closes the open window if `now` is at or past its end.
    pub fn advance(&mut self, now: i64) -> Vec<TopKRow> {
        let Some(open) = &self.open else {
            return Vec::new();
        };
        let end = open.start.saturating_add(self.window_ms);
        if now < end {
            return Vec::new();
        }
        let rows = open
            .sketch
            .top(self.k)
            .into_iter()
            .map(|c| TopKRow {
                rowtime: end,
                item: c.item.clone(),
                count: i64::try_from(c.count).unwrap_or(i64::MAX),
            })
            .collect();
        self.open = None;
        rows
    }
}

/// A row of `COUNT_DISTINCT_ITEMS_TUMBLING`'s result: `NUMBER_OF_DISTINCT_ITEMS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DistinctRow {
    /// The window's end, milliseconds since the epoch.
    pub rowtime: i64,
    pub count: i64,
}

/// `COUNT_DISTINCT_ITEMS_TUMBLING(cursor, 'column', windowSize)` over one column's
/// values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CountDistinctState")]
pub struct CountDistinctTumbling {
    window_ms: i64,
    open: Option<Open<DistinctCounter>>,
    /// Rows older than the open window, dropped.
    late_rows: u64,
}

#[derive(Deserialize)]
struct CountDistinctState {
    window_ms: i64,
    open: Option<Open<DistinctCounter>>,
    late_rows: u64,
}

impl TryFrom<CountDistinctState> for CountDistinctTumbling {
    type Error = String;

    fn try_from(st: CountDistinctState) -> Result<Self, String> {
        let mut t = CountDistinctTumbling::new(st.window_ms / 1000)?;
        if t.window_ms != st.window_ms {
            return Err("count-distinct: window not a whole number of seconds".into());
        }
        t.open = st.open;
        t.late_rows = st.late_rows;
        Ok(t)
    }
}

impl CountDistinctTumbling {
    pub fn new(window_seconds: i64) -> Result<Self, String> {
        Ok(CountDistinctTumbling {
            window_ms: window_ms(window_seconds)?,
            open: None,
            late_rows: 0,
        })
    }

    pub fn late_rows(&self) -> u64 {
        self.late_rows
    }

    /// Counts a row's item; returns the result row of a window this row closed.
    pub fn push(&mut self, rowtime: i64, item: &Value) -> Option<DistinctRow> {
        let out = self.advance(rowtime);
        let start = rowtime - rowtime.rem_euclid(self.window_ms);
        let open = self.open.get_or_insert_with(|| Open {
            start,
            sketch: DistinctCounter::default(),
        });
        if rowtime < open.start {
            self.late_rows += 1;
        } else if let Some(key) = item_key(item) {
            open.sketch.insert_hash(item_hash(&key));
        }
        out
    }

    /// Closes the open window if `now` is at or past its end.
    pub fn advance(&mut self, now: i64) -> Option<DistinctRow> {
        let open = self.open.as_ref()?;
        let end = open.start.saturating_add(self.window_ms);
        if now < end {
            return None;
        }
        let row = DistinctRow {
            rowtime: end,
            count: i64::try_from(open.sketch.count()).unwrap_or(i64::MAX),
        };
        self.open = None;
        Some(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Space-Saving's guarantees on any stream: each count is an upper bound within
        /// its error of the truth, every item above N/m is monitored, and a round trip
        /// through serde keeps the summary working.
        #[test]
        fn space_saving_bounds_hold(
            items in proptest::collection::vec(0u32..40, 0..600),
            capacity in 1usize..12,
        ) {
            let mut s = SpaceSaving::new(capacity);
            let mut truth: HashMap<String, u64> = HashMap::new();
            for i in &items {
                let key = format!("k{i}");
                s.offer(&key, &Value::Integer(i64::from(*i)));
                *truth.entry(key).or_default() += 1;
            }
            proptest::prop_assert_eq!(s.total(), items.len() as u64);
            for c in &s.counters {
                let t = truth.get(&c.key).copied().unwrap_or(0);
                proptest::prop_assert!(c.count >= t && c.count - c.error <= t);
            }
            let n = items.len() as u64;
            for (key, &t) in &truth {
                if t * capacity as u64 > n {
                    proptest::prop_assert!(s.index.contains_key(key), "{} missing", key);
                }
            }
            let mut restored: SpaceSaving =
                serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
            proptest::prop_assert_eq!(restored.top(usize::MAX), s.top(usize::MAX));
            restored.offer("new", &Value::Null);
            proptest::prop_assert_eq!(restored.total(), s.total() + 1);
        }
    }

    #[test]
    fn malformed_sketch_states_are_refused() {
        assert!(serde_json::from_str::<HyperLogLog>("[1,2,3]").is_err());
        let mut regs = vec![0u8; HLL_REGISTERS];
        regs[5] = 52;
        let json = serde_json::to_string(&regs).unwrap();
        assert!(serde_json::from_str::<HyperLogLog>(&json).is_err());
        let dup = r#"{"capacity":4,"total":2,"counters":[
            {"key":"a","item":"Null","count":1,"error":0},
            {"key":"a","item":"Null","count":1,"error":0}]}"#;
        assert!(serde_json::from_str::<SpaceSaving>(dup).is_err());
        let unique = dup.replacen("\"a\"", "\"b\"", 1);
        assert!(serde_json::from_str::<SpaceSaving>(&unique).is_ok());
        let zero = r#"{"k":1,"window_ms":0,"open":null,"late_rows":0}"#;
        assert!(serde_json::from_str::<TopKTumbling>(zero).is_err());
        let fine = zero.replace(":0,", ":1000,");
        assert!(serde_json::from_str::<TopKTumbling>(&fine).is_ok());
        let odd = r#"{"window_ms":1500,"open":null,"late_rows":0}"#;
        assert!(serde_json::from_str::<CountDistinctTumbling>(odd).is_err());
        let whole = odd.replace("1500", "2000");
        assert!(serde_json::from_str::<CountDistinctTumbling>(&whole).is_ok());
    }

    #[test]
    fn equal_sql_values_are_one_item() {
        assert_eq!(
            item_key(&Value::Double(-0.0)),
            item_key(&Value::Double(0.0))
        );
        assert_eq!(
            item_key(&Value::Decimal {
                mantissa: 150,
                scale: 2
            }),
            item_key(&Value::Decimal {
                mantissa: 15,
                scale: 1
            })
        );
        assert_ne!(
            item_key(&Value::Integer(1)),
            item_key(&Value::Varchar("1".into()))
        );
        assert_eq!(item_key(&Value::Null), None);
    }
}
