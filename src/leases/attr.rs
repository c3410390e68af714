//! DynamoDB attribute values (the `AttributeValue` union of the DynamoDB API reference:
//! `S`, `N`, `B`, `BOOL`, `NULL`, `SS`, `NS`, `BS`, `L`, `M`) and numbers.
//!
//! Numbers are kept as DynamoDB keeps them, as decimals: a mantissa in an `i128` and a
//! power of ten. That is exact for every integer up to 38 digits (KCL's lease counters
//! and checkpoints) and for decimals whose digits fit in 38; results beyond that are
//! refused with DynamoDB's overflow message rather than rounded. Pure: no I/O.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// An item: attribute name to value.
pub type Item = BTreeMap<String, Attr>;

/// The largest power of ten a number may carry after the point (DynamoDB: 1E-130).
const MAX_SCALE: u32 = 130;

const OVERFLOW: &str =
    "Number overflow. Attempting to store a number with magnitude larger than supported range";

/// A decimal number: `mant / 10^scale`, normalised (no trailing zeros in `mant` while
/// `scale > 0`), so equal numbers have equal fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Num {
    mant: i128,
    scale: u32,
}

impl Num {
    /// Parses DynamoDB's number text (`-12.5`, `1e3`, `0.001`).
    pub fn parse(text: &str) -> Result<Num, String> {
        let bad = || format!("The parameter cannot be converted to a numeric value: {text}");
        let t = text.trim();
        let (neg, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (body, exp) = match t.find(['e', 'E']) {
            Some(i) => {
                let e: i64 = t[i + 1..].parse().map_err(|_| bad())?;
                (&t[..i], e)
            }
            None => (t, 0),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let digits = format!("{int}{frac}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 38 {
            return Err("Attempting to store more than 38 significant digits in a Number".into());
        }
        let mut mant: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| bad())?
        };
        if exp.abs() > 1000 {
            return Err(OVERFLOW.into());
        }
        let mut scale: i64 = frac.len() as i64 - exp;
        while scale < 0 {
            mant = mant.checked_mul(10).ok_or(OVERFLOW)?;
            scale += 1;
        }
        if neg {
            mant = -mant;
        }
        let n = Num {
            mant,
            scale: scale as u32,
        }
        .normalised();
        if n.scale > MAX_SCALE {
            return Err(OVERFLOW.into());
        }
        Ok(n)
    }

    pub fn from_i128(v: i128) -> Num {
        Num { mant: v, scale: 0 }
    }

    fn normalised(mut self) -> Num {
        if self.mant == 0 {
            self.scale = 0;
        }
        while self.scale > 0 && self.mant % 10 == 0 {
            self.mant /= 10;
            self.scale -= 1;
        }
        self
    }

    /// Both mantissas at the larger scale, when that fits.
    fn aligned(self, other: Num) -> Option<(i128, i128, u32)> {
        let scale = self.scale.max(other.scale);
        let up = |n: Num| -> Option<i128> {
            let mut m = n.mant;
            for _ in n.scale..scale {
                m = m.checked_mul(10)?;
            }
            Some(m)
        };
        Some((up(self)?, up(other)?, scale))
    }

    fn as_f64(self) -> f64 {
        self.mant as f64 / 10f64.powi(self.scale.min(300) as i32)
    }

    pub fn checked_add(self, other: Num) -> Result<Num, String> {
        let (a, b, scale) = self.aligned(other).ok_or(OVERFLOW)?;
        let mant = a.checked_add(b).ok_or(OVERFLOW)?;
        Ok(Num { mant, scale }.normalised())
    }

    /// `-self` (refused only for the one mantissa an i128 cannot negate).
    pub fn negated(self) -> Result<Num, String> {
        Ok(Num {
            mant: self.mant.checked_neg().ok_or(OVERFLOW)?,
            scale: self.scale,
        })
    }
}

impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        match self.aligned(*other) {
            Some((a, b, _)) => a.cmp(&b),
            None => self
                .as_f64()
                .partial_cmp(&other.as_f64())
                .unwrap_or(Ordering::Equal),
        }
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = self.mant.unsigned_abs().to_string();
        let sign = if self.mant < 0 { "-" } else { "" };
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        if digits.len() > scale {
            let (a, b) = digits.split_at(digits.len() - scale);
            write!(f, "{sign}{a}.{b}")
        } else {
            write!(f, "{sign}0.{}{digits}", "0".repeat(scale - digits.len()))
        }
    }
}

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    S(String),
    N(Num),
    /// Base64 text as on the wire (compared as text; ordering of binaries is not needed
    /// for leases).
    B(String),
    Bool(bool),
    Null,
    Ss(Vec<String>),
    Ns(Vec<Num>),
    Bs(Vec<String>),
    L(Vec<Attr>),
    M(Item),
}

const EMPTY_VALUE: &str =
    "Supplied AttributeValue is empty, must contain exactly one of the supported datatypes";

impl Attr {
    /// The type's name as DynamoDB spells it (`S`, `NS`, `BOOL`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Attr::S(_) => "S",
            Attr::N(_) => "N",
            Attr::B(_) => "B",
            Attr::Bool(_) => "BOOL",
            Attr::Null => "NULL",
            Attr::Ss(_) => "SS",
            Attr::Ns(_) => "NS",
            Attr::Bs(_) => "BS",
            Attr::L(_) => "L",
            Attr::M(_) => "M",
        }
    }

    /// Reads the wire form (`{"S": "x"}`), with DynamoDB's messages for bad ones.
    pub fn from_json(v: &Value) -> Result<Attr, String> {
        Self::from_json_depth(v, 0)
    }

    fn from_json_depth(v: &Value, depth: usize) -> Result<Attr, String> {
        if depth > 32 {
            return Err("Nesting Levels have exceeded supported limits".into());
        }
        let Some(obj) = v.as_object() else {
            return Err(EMPTY_VALUE.into());
        };
        let mut set = obj.iter().filter(|(_, v)| !v.is_null());
        let Some((ty, val)) = set.next() else {
            return Err(EMPTY_VALUE.into());
        };
        if set.next().is_some() {
            return Err("Supplied AttributeValue has more than one datatypes set, must contain exactly one of the supported datatypes".into());
        }
        let strings = |what: &str| -> Result<Vec<String>, String> {
            let list: Vec<String> = val
                .as_array()
                .ok_or_else(|| format!("Unexpected value type for {ty}"))?
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(String::from)
                        .ok_or_else(|| format!("Unexpected value type in {ty}"))
                })
                .collect::<Result<_, _>>()?;
            if list.is_empty() {
                return Err(format!(
                    "One or more parameter values were invalid: An {what} set  may not be empty"
                ));
            }
            let mut sorted = list.clone();
            sorted.sort();
            sorted.dedup();
            if sorted.len() != list.len() {
                return Err(format!("Input collection {list:?} contains duplicates."));
            }
            Ok(list)
        };
        let text = || {
            val.as_str()
                .map(String::from)
                .ok_or_else(|| format!("Unexpected value type for {ty}"))
        };
        Ok(match ty.as_str() {
            "S" => Attr::S(text()?),
            "N" => Attr::N(Num::parse(&text()?)?),
            "B" => Attr::B(text()?),
            "BOOL" => Attr::Bool(val.as_bool().ok_or("Unexpected value type for BOOL")?),
            "NULL" => {
                if val.as_bool() != Some(true) {
                    return Err("One or more parameter values were invalid: Null attribute value types must have the value of true".into());
                }
                Attr::Null
            }
            "SS" => Attr::Ss(strings("string")?),
            "BS" => Attr::Bs(strings("binary")?),
            "NS" => Attr::Ns(
                strings("number")?
                    .iter()
                    .map(|n| Num::parse(n))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            "L" => Attr::L(
                val.as_array()
                    .ok_or("Unexpected value type for L")?
                    .iter()
                    .map(|e| Self::from_json_depth(e, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            "M" => Attr::M(
                val.as_object()
                    .ok_or("Unexpected value type for M")?
                    .iter()
                    .map(|(k, e)| Ok((k.clone(), Self::from_json_depth(e, depth + 1)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => {
                return Err(format!(
                    "Supplied AttributeValue has an unknown datatype: {other}"
                ));
            }
        })
    }

    /// The wire form.
    pub fn to_json(&self) -> Value {
        match self {
            Attr::S(s) => json!({ "S": s }),
            Attr::N(n) => json!({ "N": n.to_string() }),
            Attr::B(b) => json!({ "B": b }),
            Attr::Bool(b) => json!({ "BOOL": b }),
            Attr::Null => json!({ "NULL": true }),
            Attr::Ss(v) => json!({ "SS": v }),
            Attr::Ns(v) => json!({ "NS": v.iter().map(Num::to_string).collect::<Vec<_>>() }),
            Attr::Bs(v) => json!({ "BS": v }),
            Attr::L(v) => json!({ "L": v.iter().map(Attr::to_json).collect::<Vec<_>>() }),
            Attr::M(m) => json!({ "M": item_to_json(m) }),
        }
    }

    /// DynamoDB's item-size accounting, approximately: names and values in bytes.
    pub fn size(&self) -> usize {
        let num = |n: &Num| n.to_string().len().div_ceil(2) + 1;
        match self {
            Attr::S(s) => s.len(),
            Attr::N(n) => num(n),
            Attr::B(b) => b.len() * 3 / 4,
            Attr::Bool(_) | Attr::Null => 1,
            Attr::Ss(v) | Attr::Bs(v) => v.iter().map(String::len).sum(),
            Attr::Ns(v) => v.iter().map(num).sum(),
            Attr::L(v) => 3 + v.iter().map(|e| 1 + e.size()).sum::<usize>(),
            Attr::M(m) => 3 + item_size(m),
        }
    }

    /// The ordering of the comparable scalar types (`S`, `N`, `B`) when both are one.
    pub fn compare(&self, other: &Attr) -> Option<Ordering> {
        match (self, other) {
            (Attr::S(a), Attr::S(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Attr::N(a), Attr::N(b)) => Some(a.cmp(b)),
            (Attr::B(a), Attr::B(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// The text a key attribute is stored under (its canonical form).
    pub fn key_text(&self) -> String {
        match self {
            Attr::S(s) | Attr::B(s) => s.clone(),
            Attr::N(n) => n.to_string(),
            other => other.to_json().to_string(),
        }
    }
}

/// The size of an item as DynamoDB counts it, approximately.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + v.size()).sum()
}

/// An item from its wire form (a JSON object of attribute values).
pub fn item_from_json(v: &Value) -> Result<Item, String> {
    let Some(obj) = v.as_object() else {
        return Ok(Item::new());
    };
    obj.iter()
        .map(|(k, e)| Ok((k.clone(), Attr::from_json(e)?)))
        .collect()
}

/// The wire form of an item.
pub fn item_to_json(item: &Item) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect::<Map<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_parse_normalise_and_compare_exactly() {
        assert_eq!(Num::parse("1.50").unwrap().to_string(), "1.5");
        assert_eq!(Num::parse("1e3").unwrap().to_string(), "1000");
        assert_eq!(Num::parse("-0.001").unwrap().to_string(), "-0.001");
        assert_eq!(Num::parse("000").unwrap().to_string(), "0");
        let big = Num::parse("99999999999999999999999999999999999999").unwrap();
        assert_eq!(
            big.checked_add(Num::from_i128(1)).unwrap().to_string(),
            format!("1{}", "0".repeat(38))
        );
        let e38 = Num::parse("1e38").unwrap();
        assert!(e38.checked_add(e38).is_err(), "beyond an i128 is refused");
        let a = Num::parse("9007199254740993").unwrap();
        let b = Num::parse("9007199254740992").unwrap();
        assert!(a > b, "exact beyond f64 precision");
        assert_eq!(
            a.checked_add(Num::from_i128(1)).unwrap().to_string(),
            "9007199254740994"
        );
        assert!(Num::parse("abc").is_err());
        assert!(Num::parse("").is_err());
        assert!(Num::parse("1e999999").is_err());
        let sum = Num::parse("0.1")
            .unwrap()
            .checked_add(Num::parse("0.2").unwrap())
            .unwrap();
        assert_eq!(sum.to_string(), "0.3");
    }

    #[test]
    fn attribute_values_round_trip_and_bad_ones_are_refused() {
        let v = json!({"M": {"a": {"L": [{"N": "1"}, {"SS": ["x", "y"]}, {"NULL": true}]}}});
        assert_eq!(Attr::from_json(&v).unwrap().to_json(), v);
        assert!(Attr::from_json(&json!({})).is_err());
        assert!(Attr::from_json(&json!({"S": "a", "N": "1"})).is_err());
        assert!(Attr::from_json(&json!({"SS": []})).is_err());
        assert!(Attr::from_json(&json!({"SS": ["a", "a"]})).is_err());
    }
}
