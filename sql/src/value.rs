//! SQL types and values of rows in in-application streams.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The SQL data types of the Kinesis Analytics SQL reference ("Data Types").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    Boolean,
    /// TINYINT, SMALLINT, INTEGER, BIGINT: all held as i64.
    Integer,
    /// REAL, DOUBLE, FLOAT.
    Double,
    /// DECIMAL(precision, scale) / NUMERIC.
    Decimal {
        precision: u8,
        scale: u8,
    },
    /// VARCHAR(n) / CHAR(n): the maximum length in characters.
    Varchar(u32),
    /// VARBINARY(n).
    Varbinary(u32),
    Timestamp,
    Date,
    Time,
}

impl std::fmt::Display for SqlType {
    /// The type as SQL writes it (`VARCHAR(4)`, `DECIMAL(10,2)`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlType::Boolean => f.write_str("BOOLEAN"),
            SqlType::Integer => f.write_str("INTEGER"),
            SqlType::Double => f.write_str("DOUBLE"),
            SqlType::Decimal { precision, scale } => write!(f, "DECIMAL({precision},{scale})"),
            SqlType::Varchar(n) => write!(f, "VARCHAR({n})"),
            SqlType::Varbinary(n) => write!(f, "VARBINARY({n})"),
            SqlType::Timestamp => f.write_str("TIMESTAMP"),
            SqlType::Date => f.write_str("DATE"),
            SqlType::Time => f.write_str("TIME"),
        }
    }
}

/// A value in a row. TIMESTAMP values are milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Boolean(bool),
    Integer(i64),
    /// Non-finite values serialise as the strings "NaN", "inf", "-inf".
    Double(#[serde(with = "any_f64")] f64),
    /// An exact decimal: `mantissa * 10^-scale`.
    Decimal {
        mantissa: i128,
        scale: u8,
    },
    Varchar(Arc<str>),
    Varbinary(Arc<[u8]>),
    Timestamp(i64),
    /// Days since the Unix epoch.
    Date(i32),
    /// Milliseconds since midnight.
    Time(u32),
}

/// A named, typed column of a stream or table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
}

/// Serde for f64 that round-trips NaN and the infinities through JSON (which has
/// neither): finite values as numbers, the others as strings.
pub(crate) mod any_f64 {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(f64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(x) => Ok(x),
            Repr::Text(t) => match t.as_str() {
                "NaN" => Ok(f64::NAN),
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Err(D::Error::custom(format!("not a number: {t}"))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_doubles_round_trip_through_json() {
        for v in [f64::INFINITY, f64::NEG_INFINITY, 1.5, -0.0, 3.0] {
            let j = serde_json::to_string(&Value::Double(v)).unwrap();
            assert_eq!(
                serde_json::from_str::<Value>(&j).unwrap(),
                Value::Double(v),
                "{j}"
            );
        }
        let j = serde_json::to_string(&Value::Double(f64::NAN)).unwrap();
        let Value::Double(n) = serde_json::from_str::<Value>(&j).unwrap() else {
            panic!("{j}")
        };
        assert!(n.is_nan());
    }
}
