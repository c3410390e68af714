//! Records to rows and rows to records, as an application's schemas say (Kinesis Data
//! Analytics developer guide, "Configuring Application Input" and "Configuring
//! Application Output"; API shapes SourceSchema, RecordColumn, DestinationSchema).
//!
//! - Input: a record's bytes are UTF-8 JSON or CSV. JSON: `RecordRowPath` selects the
//!   row object(s) (`$`, or a path ending in `[0:]`/`[*]` for an array of rows), and each
//!   column's `Mapping` (a JSONPath such as `$.ticker` or `$.quote.price`) its value.
//!   CSV: rows split by `RecordRowDelimiter`, columns by `RecordColumnDelimiter`, by
//!   position. Values are converted to the column's SQL type; a value that does not fit
//!   fails the row (which goes to the error stream), a missing one is NULL.
//! - Output: a row becomes a JSON object keyed by the in-application stream's column
//!   names, or a CSV line.
//! - DiscoverInputSchema: columns inferred from sample records.
//!
//! Pure: no I/O.

use std::sync::Arc;

use freshet_sql::{Column, SqlType, Value};
use serde_json::{Map, Value as Json};

use super::model::{RecordColumn, RecordFormat, SourceSchema};
/// A timestamp as the service writes it: `yyyy-MM-dd HH:mm:ss.SSS` (UTC).
pub use freshet_sql::time::format_timestamp;

/// The most rows one record may hold (an array under RecordRowPath, or CSV lines).
const MAX_ROWS_PER_RECORD: usize = 10_000;

/// A SQL type as RecordColumn.SqlType writes it (`VARCHAR(8)`, `DECIMAL(10,2)`, `REAL`).
pub fn parse_sql_type(text: &str) -> Result<SqlType, String> {
    let t = text.trim().to_ascii_uppercase();
    let (base, args) = match t.split_once('(') {
        Some((b, rest)) => {
            let inner = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("Invalid SQL type {text}"))?;
            let args: Result<Vec<u32>, _> =
                inner.split(',').map(|a| a.trim().parse::<u32>()).collect();
            (
                b.trim().to_string(),
                args.map_err(|_| format!("Invalid SQL type {text}"))?,
            )
        }
        None => (t.clone(), Vec::new()),
    };
    let base = base.split_whitespace().collect::<Vec<_>>().join(" ");
    let ty = match (base.as_str(), args.as_slice()) {
        ("BOOLEAN", []) => SqlType::Boolean,
        ("TINYINT" | "SMALLINT" | "INTEGER" | "INT" | "BIGINT", []) => SqlType::Integer,
        ("REAL" | "DOUBLE" | "DOUBLE PRECISION" | "FLOAT", []) => SqlType::Double,
        ("DECIMAL" | "NUMERIC" | "DEC", []) => SqlType::Decimal {
            precision: 19,
            scale: 0,
        },
        ("DECIMAL" | "NUMERIC" | "DEC", [p]) if *p >= 1 && *p <= 38 => SqlType::Decimal {
            precision: *p as u8,
            scale: 0,
        },
        ("DECIMAL" | "NUMERIC" | "DEC", [p, s]) if *p >= 1 && *p <= 38 && s <= p => {
            SqlType::Decimal {
                precision: *p as u8,
                scale: *s as u8,
            }
        }
        ("VARCHAR" | "CHAR" | "CHARACTER" | "CHARACTER VARYING", [n]) if *n >= 1 => {
            SqlType::Varchar(*n)
        }
        ("CHAR" | "CHARACTER", []) => SqlType::Varchar(1),
        ("VARBINARY" | "BINARY", [n]) if *n >= 1 => SqlType::Varbinary(*n),
        ("TIMESTAMP", []) => SqlType::Timestamp,
        ("DATE", []) => SqlType::Date,
        ("TIME", []) => SqlType::Time,
        _ => return Err(format!("Unsupported SQL type {text}")),
    };
    Ok(ty)
}

/// One step of a JSONPath.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    /// `[0:]` or `[*]`: every element (only as the last step of a RecordRowPath).
    All,
}

/// A JSONPath of the forms the service uses: `$`, `$.a.b`, `$['a b']`, `$.a[0]`,
/// `$.rows[0:]`.
fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let bad = || format!("Invalid JSONPath {path}");
    let rest = path.trim().strip_prefix('$').ok_or_else(bad)?;
    let mut steps = Vec::new();
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && chars[end] != '.' && chars[end] != '[' {
                    end += 1;
                }
                if end == start {
                    return Err(bad());
                }
                steps.push(Step::Key(chars[start..end].iter().collect()));
                i = end;
            }
            '[' => {
                let close = chars[i..]
                    .iter()
                    .position(|c| *c == ']')
                    .map(|p| p + i)
                    .ok_or_else(bad)?;
                let inner: String = chars[i + 1..close].iter().collect();
                let inner = inner.trim();
                if inner == "*" || inner == "0:" {
                    steps.push(Step::All);
                } else if let Some(q) = inner
                    .strip_prefix('\'')
                    .and_then(|s| s.strip_suffix('\''))
                    .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                {
                    steps.push(Step::Key(q.to_string()));
                } else {
                    steps.push(Step::Index(inner.parse().map_err(|_| bad())?));
                }
                i = close + 1;
            }
            _ => return Err(bad()),
        }
    }
    Ok(steps)
}

fn follow<'a>(mut v: &'a Json, steps: &[Step]) -> Option<&'a Json> {
    for s in steps {
        v = match s {
            Step::Key(k) => v.get(k)?,
            Step::Index(i) => v.get(*i)?,
            Step::All => return None,
        };
    }
    Some(v)
}

/// A column as the parser uses it.
#[derive(Debug, Clone)]
struct ParsedColumn {
    ty: SqlType,
    path: Vec<Step>,
}

/// Turns records into rows, as a SourceSchema says.
#[derive(Debug, Clone)]
pub struct RowParser {
    format: RecordFormat,
    row_path: Vec<Step>,
    columns: Vec<ParsedColumn>,
}

impl RowParser {
    /// Checks the schema (types, paths, delimiters) once.
    pub fn new(schema: &SourceSchema) -> Result<RowParser, String> {
        let row_path = match &schema.format {
            RecordFormat::Json { row_path } => {
                let steps = parse_path(row_path)?;
                if steps[..steps.len().saturating_sub(1)].contains(&Step::All) {
                    return Err(format!(
                        "Invalid RecordRowPath {row_path}: [0:] may only end the path"
                    ));
                }
                steps
            }
            RecordFormat::Csv {
                row_delimiter,
                column_delimiter,
            } => {
                if row_delimiter.is_empty() || column_delimiter.is_empty() {
                    return Err("CSV delimiters must not be empty".into());
                }
                Vec::new()
            }
        };
        let mut columns = Vec::with_capacity(schema.columns.len());
        for c in &schema.columns {
            let ty = parse_sql_type(&c.sql_type)?;
            let path = match (&schema.format, &c.mapping) {
                (RecordFormat::Json { .. }, Some(m)) if !m.is_empty() => parse_path(m)?,
                (RecordFormat::Json { .. }, _) => vec![Step::Key(c.name.clone())],
                (RecordFormat::Csv { .. }, _) => Vec::new(),
            };
            columns.push(ParsedColumn { ty, path });
        }
        Ok(RowParser {
            format: schema.format.clone(),
            row_path,
            columns,
        })
    }

    /// The in-application columns this schema makes.
    pub fn columns(schema: &SourceSchema) -> Result<Vec<Column>, String> {
        schema
            .columns
            .iter()
            .map(|c| {
                Ok(Column {
                    name: c.name.clone(),
                    ty: parse_sql_type(&c.sql_type)?,
                })
            })
            .collect()
    }

    /// The rows of one record, in the order of the schema's columns.
    pub fn parse(&self, data: &[u8]) -> Result<Vec<Vec<Value>>, String> {
        let text = std::str::from_utf8(data).map_err(|_| "record is not UTF-8".to_string())?;
        match &self.format {
            RecordFormat::Json { .. } => {
                let doc: Json = serde_json::from_str(text)
                    .map_err(|e| format!("record is not valid JSON: {e}"))?;
                let (prefix, all) = match self.row_path.last() {
                    Some(Step::All) => (&self.row_path[..self.row_path.len() - 1], true),
                    _ => (&self.row_path[..], false),
                };
                let base = follow(&doc, prefix)
                    .ok_or_else(|| "RecordRowPath matches nothing in the record".to_string())?;
                if all {
                    let rows = base
                        .as_array()
                        .ok_or_else(|| "RecordRowPath does not select an array".to_string())?;
                    if rows.len() > MAX_ROWS_PER_RECORD {
                        return Err(format!("record holds more than {MAX_ROWS_PER_RECORD} rows"));
                    }
                    rows.iter().map(|r| self.json_row(r)).collect()
                } else {
                    Ok(vec![self.json_row(base)?])
                }
            }
            RecordFormat::Csv {
                row_delimiter,
                column_delimiter,
            } => {
                let mut rows = Vec::new();
                for line in text.split(row_delimiter.as_str()) {
                    let line = line.strip_suffix('\r').unwrap_or(line);
                    if line.is_empty() {
                        continue;
                    }
                    if rows.len() == MAX_ROWS_PER_RECORD {
                        return Err(format!("record holds more than {MAX_ROWS_PER_RECORD} rows"));
                    }
                    let fields: Vec<&str> = line.split(column_delimiter.as_str()).collect();
                    let mut row = Vec::with_capacity(self.columns.len());
                    for (i, c) in self.columns.iter().enumerate() {
                        row.push(match fields.get(i) {
                            None => Value::Null,
                            Some(f) => from_text(&c.ty, f)?,
                        });
                    }
                    rows.push(row);
                }
                Ok(rows)
            }
        }
    }

    fn json_row(&self, row: &Json) -> Result<Vec<Value>, String> {
        self.columns
            .iter()
            .map(|c| match follow(row, &c.path) {
                None | Some(Json::Null) => Ok(Value::Null),
                Some(v) => from_json(&c.ty, v),
            })
            .collect()
    }
}

/// A JSON value as a value of `ty`.
pub fn from_json(ty: &SqlType, v: &Json) -> Result<Value, String> {
    match v {
        Json::String(s) => from_text(ty, s),
        Json::Bool(b) => match ty {
            SqlType::Boolean => Ok(Value::Boolean(*b)),
            SqlType::Varchar(_) => from_text(ty, if *b { "true" } else { "false" }),
            _ => Err(format!("cannot convert {v} to {}", ty)),
        },
        Json::Number(n) => match ty {
            SqlType::Timestamp => n
                .as_i64()
                .map(Value::Timestamp)
                .ok_or_else(|| format!("cannot convert {v} to TIMESTAMP")),
            _ => from_text(ty, &n.to_string()),
        },
        Json::Array(_) | Json::Object(_) => match ty {
            SqlType::Varchar(_) => from_text(ty, &v.to_string()),
            _ => Err(format!("cannot convert {v} to {}", ty)),
        },
        Json::Null => Ok(Value::Null),
    }
}

/// Text (a CSV field, a JSON string) as a value of `ty`.
pub fn from_text(ty: &SqlType, s: &str) -> Result<Value, String> {
    let fail = || format!("cannot convert '{s}' to {}", ty);
    let t = s.trim();
    match ty {
        SqlType::Varchar(n) => {
            if s.chars().count() > *n as usize {
                return Err(format!("'{s}' is longer than {}", ty));
            }
            Ok(Value::Varchar(Arc::from(s)))
        }
        SqlType::Varbinary(n) => {
            if s.len() > *n as usize {
                return Err(format!("value is longer than {}", ty));
            }
            Ok(Value::Varbinary(Arc::from(s.as_bytes())))
        }
        SqlType::Boolean => match t.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(fail()),
        },
        SqlType::Integer => {
            if let Ok(i) = t.parse::<i64>() {
                return Ok(Value::Integer(i));
            }
            // 12.0 is an integer; 12.5 is not.
            match t.parse::<f64>() {
                Ok(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(Value::Integer(f as i64)),
                _ => Err(fail()),
            }
        }
        SqlType::Double => t
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::Double)
            .ok_or_else(fail),
        SqlType::Decimal { precision, scale } => {
            parse_decimal(t, *precision, *scale).ok_or_else(fail)
        }
        SqlType::Timestamp => parse_timestamp(t).map(Value::Timestamp).ok_or_else(fail),
        SqlType::Date => freshet_sql::time::parse_date(t)
            .map(Value::Date)
            .ok_or_else(fail),
        SqlType::Time => freshet_sql::time::parse_time(t)
            .map(Value::Time)
            .ok_or_else(fail),
    }
}

/// `-12.345` as DECIMAL(p, s), rounded half up to `s` places.
fn parse_decimal(t: &str, precision: u8, scale: u8) -> Option<Value> {
    let f: f64 = t.parse().ok().filter(|f: &f64| f.is_finite())?;
    let factor = 10f64.powi(scale as i32);
    let m = (f * factor).round();
    if m.abs() >= 10f64.powi(precision as i32) {
        return None;
    }
    Some(Value::Decimal {
        mantissa: m as i128,
        scale,
    })
}

/// `yyyy-MM-dd HH:mm:ss[.SSS]`, with `T` for the space and an optional `Z`, or
/// milliseconds since the epoch, as milliseconds since the epoch (UTC).
pub fn parse_timestamp(t: &str) -> Option<i64> {
    if let Ok(ms) = t.parse::<i64>() {
        return Some(ms);
    }
    freshet_sql::time::parse_timestamp(t.strip_suffix('Z').unwrap_or(t))
}

fn decimal_text(mantissa: i128, scale: u8) -> String {
    if scale == 0 {
        return mantissa.to_string();
    }
    let neg = mantissa < 0;
    let digits = mantissa.unsigned_abs().to_string();
    let s = scale as usize;
    let digits = if digits.len() <= s {
        format!("{}{digits}", "0".repeat(s + 1 - digits.len()))
    } else {
        digits
    };
    let (int, frac) = digits.split_at(digits.len() - s);
    format!("{}{int}.{frac}", if neg { "-" } else { "" })
}

/// A value as JSON.
pub fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(i) => Json::from(*i),
        Value::Double(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Decimal { mantissa, scale } => decimal_text(*mantissa, *scale)
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Json::Null, Json::Number),
        Value::Varchar(s) => Json::String(s.to_string()),
        Value::Varbinary(b) => {
            use base64::Engine;
            Json::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Value::Timestamp(ms) => Json::String(format_timestamp(*ms)),
        Value::Date(d) => Json::String(freshet_sql::time::format_date(*d)),
        Value::Time(ms) => Json::String(format!(
            "{:02}:{:02}:{:02}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60
        )),
    }
}

fn to_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Varchar(s) => s.to_string(),
        Value::Decimal { mantissa, scale } => decimal_text(*mantissa, *scale),
        other => match to_json(other) {
            Json::String(s) => s,
            j => j.to_string(),
        },
    }
}

/// A row as an output record: a JSON object keyed by column name, or a CSV line.
pub fn encode_row(format: &str, columns: &[Column], values: &[Value]) -> Vec<u8> {
    if format == "CSV" {
        let fields: Vec<String> = values
            .iter()
            .map(|v| {
                let t = to_text(v);
                if t.contains([',', '"', '\n']) {
                    format!("\"{}\"", t.replace('"', "\"\""))
                } else {
                    t
                }
            })
            .collect();
        let mut line = fields.join(",").into_bytes();
        line.push(b'\n');
        return line;
    }
    let mut obj = Map::new();
    for (c, v) in columns.iter().zip(values) {
        obj.insert(c.name.clone(), to_json(v));
    }
    serde_json::to_vec(&Json::Object(obj)).unwrap_or_default()
}

/// DiscoverInputSchema: a schema that fits every sample, or why there is none.
pub fn discover(samples: &[&[u8]]) -> Result<SourceSchema, String> {
    let texts: Vec<&str> = samples
        .iter()
        .filter_map(|s| std::str::from_utf8(s).ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if texts.is_empty() {
        return Err("No data found in the stream to infer a schema from.".into());
    }
    let docs: Vec<Json> = texts
        .iter()
        .filter_map(|t| serde_json::from_str::<Json>(t).ok())
        .filter(Json::is_object)
        .collect();
    if docs.len() == texts.len() {
        return Ok(discover_json(&docs));
    }
    discover_csv(&texts)
}

/// The SQL type that fits all the values seen for a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Inferred {
    Boolean,
    Integer,
    Double,
    Timestamp,
    Varchar,
}

fn infer_text(s: &str) -> Inferred {
    if s.parse::<i64>().is_ok() {
        Inferred::Integer
    } else if s.parse::<f64>().is_ok_and(f64::is_finite) {
        Inferred::Double
    } else if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") {
        Inferred::Boolean
    } else if s.len() >= 19 && parse_timestamp(s).is_some() {
        Inferred::Timestamp
    } else {
        Inferred::Varchar
    }
}

fn merge(a: Option<Inferred>, b: Inferred) -> Inferred {
    match a {
        None => b,
        Some(a) if a == b => a,
        Some(Inferred::Integer) if b == Inferred::Double => Inferred::Double,
        Some(Inferred::Double) if b == Inferred::Integer => Inferred::Double,
        _ => Inferred::Varchar,
    }
}

fn sql_name(inferred: Inferred, max_len: usize) -> String {
    match inferred {
        Inferred::Boolean => "BOOLEAN".into(),
        Inferred::Integer => "INTEGER".into(),
        Inferred::Double => "DOUBLE".into(),
        Inferred::Timestamp => "TIMESTAMP".into(),
        Inferred::Varchar => format!("VARCHAR({})", max_len.clamp(1, 65_535).next_power_of_two()),
    }
}

/// A column name as the service makes it: upper case, letters, digits and `_`.
fn column_name(key: &str) -> String {
    let mut n: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    if n.is_empty() || n.starts_with(|c: char| c.is_ascii_digit()) {
        n.insert_str(0, "COL_");
    }
    n
}

fn discover_json(docs: &[Json]) -> SourceSchema {
    // Keys in the order the objects hold them (sorted), nested objects flattened as
    // `$.a.b`, each key once however many samples have it.
    let mut order: Vec<(String, String)> = Vec::new();
    let mut types: std::collections::HashMap<String, (Option<Inferred>, usize)> =
        Default::default();
    fn walk(
        prefix: &str,
        path: &str,
        v: &Json,
        order: &mut Vec<(String, String)>,
        types: &mut std::collections::HashMap<String, (Option<Inferred>, usize)>,
    ) {
        let Some(obj) = v.as_object() else { return };
        for (k, v) in obj {
            let name = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}_{k}")
            };
            let p = if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                format!("{path}.{k}")
            } else {
                format!("{path}['{}']", k.replace('\'', ""))
            };
            if v.is_object() {
                walk(&name, &p, v, order, types);
                continue;
            }
            let inferred = match v {
                Json::Bool(_) => Inferred::Boolean,
                Json::Number(n) if n.is_i64() || n.is_u64() => Inferred::Integer,
                Json::Number(_) => Inferred::Double,
                Json::String(s) => match infer_text(s) {
                    Inferred::Timestamp => Inferred::Timestamp,
                    _ => Inferred::Varchar,
                },
                _ => Inferred::Varchar,
            };
            let len = match v {
                Json::String(s) => s.chars().count(),
                other => other.to_string().len(),
            };
            let entry = types.entry(p.clone()).or_insert_with(|| {
                order.push((name.clone(), p.clone()));
                (None, 0)
            });
            if !v.is_null() {
                entry.0 = Some(merge(entry.0, inferred));
            }
            entry.1 = entry.1.max(len);
        }
    }
    for d in docs {
        walk("", "$", d, &mut order, &mut types);
    }
    let columns = order
        .into_iter()
        .map(|(name, path)| {
            let (t, len) = types[&path];
            RecordColumn {
                name: column_name(&name),
                mapping: Some(path),
                sql_type: sql_name(t.unwrap_or(Inferred::Varchar), len),
            }
        })
        .collect();
    SourceSchema {
        format: RecordFormat::Json {
            row_path: "$".into(),
        },
        encoding: Some("UTF-8".into()),
        columns,
    }
}

fn discover_csv(texts: &[&str]) -> Result<SourceSchema, String> {
    let lines: Vec<&str> = texts
        .iter()
        .flat_map(|t| t.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let delimiter = [",", "|", "\t", ";"]
        .into_iter()
        .find(|d| {
            let n = lines[0].split(d).count();
            n > 1 && lines.iter().all(|l| l.split(d).count() == n)
        })
        .ok_or_else(|| {
            "Unable to determine the format of the records: neither JSON objects nor delimited text with a constant number of columns.".to_string()
        })?;
    let width = lines[0].split(delimiter).count();
    let mut types: Vec<(Option<Inferred>, usize)> = vec![(None, 0); width];
    for l in &lines {
        for (i, f) in l.split(delimiter).enumerate() {
            let f = f.trim();
            types[i].0 = Some(merge(types[i].0, infer_text(f)));
            types[i].1 = types[i].1.max(f.chars().count());
        }
    }
    Ok(SourceSchema {
        format: RecordFormat::Csv {
            row_delimiter: "\n".into(),
            column_delimiter: delimiter.into(),
        },
        encoding: Some("UTF-8".into()),
        columns: types
            .into_iter()
            .enumerate()
            .map(|(i, (t, len))| RecordColumn {
                name: format!("COL{}", i + 1),
                mapping: None,
                sql_type: sql_name(t.unwrap_or(Inferred::Varchar), len),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_schema(cols: &[(&str, &str, &str)], row_path: &str) -> SourceSchema {
        SourceSchema {
            format: RecordFormat::Json {
                row_path: row_path.into(),
            },
            encoding: None,
            columns: cols
                .iter()
                .map(|(n, m, t)| RecordColumn {
                    name: n.to_string(),
                    mapping: Some(m.to_string()),
                    sql_type: t.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn sql_types() {
        assert_eq!(parse_sql_type("varchar(4)").unwrap(), SqlType::Varchar(4));
        assert_eq!(parse_sql_type("REAL").unwrap(), SqlType::Double);
        assert_eq!(
            parse_sql_type("DECIMAL(10, 2)").unwrap(),
            SqlType::Decimal {
                precision: 10,
                scale: 2
            }
        );
        assert!(parse_sql_type("VARCHAR").is_err());
        assert!(parse_sql_type("DECIMAL(2,5)").is_err());
        assert!(parse_sql_type("BLOB").is_err());
    }

    #[test]
    fn json_rows_by_mapping() {
        let s = json_schema(
            &[
                ("TICKER", "$.ticker", "VARCHAR(4)"),
                ("PRICE", "$.quote.price", "DECIMAL(8,2)"),
                ("N", "$.n", "INTEGER"),
                ("AT", "$.at", "TIMESTAMP"),
            ],
            "$",
        );
        let p = RowParser::new(&s).unwrap();
        let rows = p
            .parse(br#"{"ticker":"AMZN","quote":{"price":12.345},"n":"7","at":"2004-09-30 13:48:23.5"}"#)
            .unwrap();
        assert_eq!(
            rows,
            vec![vec![
                Value::Varchar("AMZN".into()),
                Value::Decimal {
                    mantissa: 1235,
                    scale: 2
                },
                Value::Integer(7),
                Value::Timestamp(1_096_552_103_500),
            ]]
        );
        // Missing is NULL; too long fails the row.
        assert_eq!(
            p.parse(br#"{"ticker":"A"}"#).unwrap()[0][1..],
            [Value::Null, Value::Null, Value::Null]
        );
        assert!(
            p.parse(br#"{"ticker":"TOOLONG"}"#)
                .unwrap_err()
                .contains("longer")
        );
        assert!(p.parse(b"not json").unwrap_err().contains("JSON"));
        assert!(p.parse(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn json_rows_from_an_array() {
        let s = json_schema(&[("V", "$.v", "DOUBLE")], "$.rows[0:]");
        let p = RowParser::new(&s).unwrap();
        let rows = p.parse(br#"{"rows":[{"v":1.5},{"v":2}]}"#).unwrap();
        assert_eq!(
            rows,
            vec![vec![Value::Double(1.5)], vec![Value::Double(2.0)]]
        );
        assert!(RowParser::new(&json_schema(&[("V", "$.v", "DOUBLE")], "$[0:].x")).is_err());
        assert!(RowParser::new(&json_schema(&[("V", "v", "DOUBLE")], "$")).is_err());
    }

    #[test]
    fn csv_rows() {
        let s = SourceSchema {
            format: RecordFormat::Csv {
                row_delimiter: "\n".into(),
                column_delimiter: ",".into(),
            },
            encoding: None,
            columns: vec![
                RecordColumn {
                    name: "A".into(),
                    mapping: None,
                    sql_type: "VARCHAR(8)".into(),
                },
                RecordColumn {
                    name: "B".into(),
                    mapping: None,
                    sql_type: "BIGINT".into(),
                },
            ],
        };
        let p = RowParser::new(&s).unwrap();
        let rows = p.parse(b"x,1\ny,2\r\n\nz").unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1], vec![Value::Varchar("y".into()), Value::Integer(2)]);
        assert_eq!(rows[2][1], Value::Null);
        assert!(p.parse(b"x,notanumber").is_err());
    }

    #[test]
    fn timestamps_round_trip() {
        for ms in [0i64, 1_096_552_103_500, -86_400_001, 4_102_444_800_000] {
            assert_eq!(parse_timestamp(&format_timestamp(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            format_timestamp(1_096_552_103_000),
            "2004-09-30 13:48:23.000"
        );
        assert_eq!(
            parse_timestamp("2004-09-30T13:48:23Z"),
            Some(1_096_552_103_000)
        );
        assert_eq!(parse_timestamp("2004-13-30 13:48:23"), None);
    }

    #[test]
    fn rows_encoded() {
        let cols = vec![
            Column {
                name: "T".into(),
                ty: SqlType::Varchar(8),
            },
            Column {
                name: "P".into(),
                ty: SqlType::Decimal {
                    precision: 8,
                    scale: 2,
                },
            },
            Column {
                name: "W".into(),
                ty: SqlType::Timestamp,
            },
        ];
        let vals = vec![
            Value::Varchar("a,\"b".into()),
            Value::Decimal {
                mantissa: -5,
                scale: 2,
            },
            Value::Timestamp(60_000),
        ];
        let j: Json = serde_json::from_slice(&encode_row("JSON", &cols, &vals)).unwrap();
        assert_eq!(j["T"], "a,\"b");
        assert_eq!(j["P"], -0.05);
        assert_eq!(j["W"], "1970-01-01 00:01:00.000");
        assert_eq!(
            String::from_utf8(encode_row("CSV", &cols, &vals)).unwrap(),
            "\"a,\"\"b\",-0.05,1970-01-01 00:01:00.000\n"
        );
    }

    #[test]
    fn discovery() {
        let a = br#"{"ticker_symbol":"AMZN","price":12.5,"n":3,"at":"2024-01-01 00:00:00","q":{"x":true}}"#;
        let b = br#"{"ticker_symbol":"GOOGLE","price":7,"n":4,"at":"2024-01-01 00:00:01","q":{"x":false}}"#;
        let s = discover(&[a, b]).unwrap();
        let cols: Vec<(&str, &str, &str)> = s
            .columns
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.mapping.as_deref().unwrap(),
                    c.sql_type.as_str(),
                )
            })
            .collect();
        assert_eq!(
            cols,
            // Columns in key order (objects are read as sorted maps).
            vec![
                ("AT", "$.at", "TIMESTAMP"),
                ("N", "$.n", "INTEGER"),
                ("PRICE", "$.price", "DOUBLE"),
                ("Q_X", "$.q.x", "BOOLEAN"),
                ("TICKER_SYMBOL", "$.ticker_symbol", "VARCHAR(8)"),
            ]
        );
        // The discovered schema parses the samples.
        let p = RowParser::new(&s).unwrap();
        assert_eq!(p.parse(b).unwrap()[0][2], Value::Double(7.0));
        let csv = discover(&[b"a,1,2.5", b"b,2,3"]).unwrap();
        assert_eq!(csv.columns[1].sql_type, "INTEGER");
        assert_eq!(csv.columns[2].sql_type, "DOUBLE");
        assert!(discover(&[b"just text", b"more, text, here"]).is_err());
        assert!(discover(&[]).is_err());
    }
}
