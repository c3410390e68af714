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

/// A value in a row. TIMESTAMP values are milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Boolean(bool),
    Integer(i64),
    Double(f64),
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
