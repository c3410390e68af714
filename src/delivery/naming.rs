//! Object names, as Amazon Data Firehose forms them for S3 destinations (pure: no I/O,
//! no clock reads).
//!
//! `<evaluated prefix><stream>-<version>-<yyyy>-<MM>-<dd>-<HH>-<mm>-<ss>-<uuid><ext>`
//! (the AWS developer guide, "Amazon S3 object name format" and "Custom prefixes for
//! Amazon S3 objects"):
//!
//! - a prefix without expressions gets the default `YYYY/MM/dd/HH/` (UTC) appended;
//! - `!{timestamp:<Java DateTimeFormatter pattern>}` is evaluated in UTC;
//! - `!{firehose:random-string}` is 11 random characters, `!{firehose:error-output-type}`
//!   (error prefixes only) the kind of failure;
//! - every time in a name is the arrival time of the batch's oldest record.
//!
//! Freshet's one deviation, on purpose: the uuid and the random string are not random but
//! derived from the batch (its stream and its first and last offsets), so a batch that is
//! uploaded again after a crash gets exactly the same name, never a second one.

use std::collections::BTreeMap;

use crate::clock::civil_from_days;

/// Whether `key` can name a partition key (letters, digits, `_` and `-`).
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// How an object's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    #[serde(rename = "UNCOMPRESSED")]
    Uncompressed,
    #[serde(rename = "GZIP")]
    Gzip,
    #[serde(rename = "ZIP")]
    Zip,
    #[serde(rename = "Snappy")]
    Snappy,
    #[serde(rename = "HADOOP_SNAPPY")]
    HadoopSnappy,
}

impl Compression {
    /// The name in the API (`CompressionFormat`).
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Uncompressed => "UNCOMPRESSED",
            Compression::Gzip => "GZIP",
            Compression::Zip => "ZIP",
            Compression::Snappy => "Snappy",
            Compression::HadoopSnappy => "HADOOP_SNAPPY",
        }
    }

    /// The extension AWS gives objects of this format.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Uncompressed => "",
            Compression::Gzip => ".gz",
            Compression::Zip => ".zip",
            Compression::Snappy => ".snappy",
            Compression::HadoopSnappy => ".hsnappy",
        }
    }
}

/// The uuid of the batch of offsets `first..=last` of the delivery stream whose
/// durable identity is `stream_id`: the same batch always gets the same uuid.
pub fn batch_uuid(stream_id: &str, first: u64, last: u64) -> uuid::Uuid {
    use md5::Digest;
    let mut h = md5::Md5::new();
    h.update(stream_id.as_bytes());
    h.update([0]);
    h.update(first.to_be_bytes());
    h.update(last.to_be_bytes());
    let digest: [u8; 16] = h.finalize().into();
    uuid::Builder::from_md5_bytes(digest).into_uuid()
}

/// `!{firehose:random-string}` for a batch: 11 lowercase letters and digits, from its uuid.
pub fn random_string(batch: uuid::Uuid) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut n = batch.as_u128();
    (0..11)
        .map(|_| {
            let c = ALPHABET[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

/// The calendar fields of a UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
}

fn civil(ms: i64) -> Civil {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem / 60 % 60) as u32,
        second: (rem % 60) as u32,
        millis: ms.rem_euclid(1000) as u32,
    }
}

/// One piece of a parsed prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Timestamp(Vec<DatePart>),
    RandomString,
    ErrorOutputType,
    /// `!{partitionKeyFromQuery:KEY}` (dynamic partitioning only).
    QueryKey(String),
    /// `!{partitionKeyFromLambda:KEY}` (dynamic partitioning only).
    LambdaKey(String),
}

/// One piece of a Java `DateTimeFormatter` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DatePart {
    Literal(String),
    /// A field letter (`y`, `M`, `d`, `H`, `m`, `s`, `S`) and how many times it repeats.
    Field(char, usize),
}

fn parse_date_pattern(p: &str) -> Result<Vec<DatePart>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let mut lit = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                lit.push(chars[i]);
                i += 1;
            }
            if i == chars.len() {
                return Err(format!("unterminated quote in the timestamp pattern {p:?}"));
            }
            out.push(DatePart::Literal(if lit.is_empty() {
                "'".into()
            } else {
                lit
            }));
            i += 1;
        } else if c.is_ascii_alphabetic() {
            if !matches!(c, 'y' | 'u' | 'M' | 'd' | 'H' | 'm' | 's' | 'S') {
                return Err(format!(
                    "the timestamp pattern {p:?} uses the field {c:?}; supported fields are \
                     y, M, d, H, m, s and S"
                ));
            }
            let mut n = 1;
            while i + n < chars.len() && chars[i + n] == c {
                n += 1;
            }
            out.push(DatePart::Field(c, n));
            i += n;
        } else {
            out.push(DatePart::Literal(c.to_string()));
            i += 1;
        }
    }
    Ok(out)
}

fn format_date(parts: &[DatePart], t: &Civil, out: &mut String) {
    use std::fmt::Write;
    for part in parts {
        let _ = match part {
            DatePart::Literal(s) => write!(out, "{s}"),
            DatePart::Field('y' | 'u', 2) => write!(out, "{:02}", t.year.rem_euclid(100)),
            DatePart::Field('y' | 'u', n) => write!(out, "{:0n$}", t.year, n = *n),
            DatePart::Field('M', n) => write!(out, "{:0n$}", t.month, n = *n),
            DatePart::Field('d', n) => write!(out, "{:0n$}", t.day, n = *n),
            DatePart::Field('H', n) => write!(out, "{:0n$}", t.hour, n = *n),
            DatePart::Field('m', n) => write!(out, "{:0n$}", t.minute, n = *n),
            DatePart::Field('s', n) => write!(out, "{:0n$}", t.second, n = *n),
            DatePart::Field('S', n) => {
                let digits = format!("{:03}", t.millis);
                let shown: String = digits
                    .chars()
                    .chain(std::iter::repeat('0'))
                    .take(*n)
                    .collect();
                write!(out, "{shown}")
            }
            DatePart::Field(_, _) => Ok(()),
        };
    }
}

/// A checked prefix (`Prefix` or `ErrorOutputPrefix`), ready to evaluate per batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixTemplate {
    pieces: Vec<Piece>,
}

impl PrefixTemplate {
    /// Parses a prefix. `error_prefix`: whether this is an `ErrorOutputPrefix` (the only
    /// place `!{firehose:error-output-type}` may appear). Errors are the message of the
    /// InvalidArgumentException the caller answers.
    pub fn parse(text: &str, error_prefix: bool) -> Result<PrefixTemplate, String> {
        Self::parse_partitioned(text, error_prefix, false)
    }

    /// As [`Self::parse`]; with `dynamic` (dynamic partitioning enabled) the prefix may
    /// hold `!{partitionKeyFromQuery:KEY}` and `!{partitionKeyFromLambda:KEY}`.
    pub fn parse_partitioned(
        text: &str,
        error_prefix: bool,
        dynamic: bool,
    ) -> Result<PrefixTemplate, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut expressions = 0;
        while let Some(at) = rest.find("!{") {
            if at > 0 {
                pieces.push(Piece::Text(rest[..at].to_string()));
            }
            let after = &rest[at + 2..];
            let Some(end) = after.find('}') else {
                return Err(format!(
                    "The expression at {:?} is not closed with '}}'.",
                    &rest[at..]
                ));
            };
            let expr = &after[..end];
            expressions += 1;
            let piece = match expr.split_once(':') {
                Some(("timestamp", pattern)) if !pattern.is_empty() => {
                    Piece::Timestamp(parse_date_pattern(pattern)?)
                }
                Some(("firehose", "random-string")) => Piece::RandomString,
                Some(("firehose", "error-output-type")) if error_prefix => Piece::ErrorOutputType,
                Some(("firehose", "error-output-type")) => {
                    return Err(
                        "The expression !{firehose:error-output-type} is only allowed in ErrorOutputPrefix."
                            .into(),
                    );
                }
                Some(("partitionKeyFromQuery", key))
                    if dynamic && !error_prefix && valid_key(key) =>
                {
                    Piece::QueryKey(key.to_string())
                }
                Some(("partitionKeyFromLambda", key))
                    if dynamic && !error_prefix && valid_key(key) =>
                {
                    Piece::LambdaKey(key.to_string())
                }
                Some(("partitionKeyFromQuery" | "partitionKeyFromLambda", _)) if error_prefix => {
                    return Err(format!(
                        "The expression !{{{expr}}} is not allowed in ErrorOutputPrefix."
                    ));
                }
                Some(("partitionKeyFromQuery" | "partitionKeyFromLambda", key)) if dynamic => {
                    return Err(format!(
                        "The expression !{{{expr}}} does not name a valid partition key {key:?}."
                    ));
                }
                Some(("partitionKeyFromQuery" | "partitionKeyFromLambda", _)) => {
                    return Err(format!(
                        "The expression !{{{expr}}} needs dynamic partitioning: set DynamicPartitioningConfiguration.Enabled."
                    ));
                }
                _ => {
                    return Err(format!(
                        "The expression !{{{expr}}} is not valid: use !{{timestamp:<pattern>}}, \
                         !{{firehose:random-string}} or !{{firehose:error-output-type}}."
                    ));
                }
            };
            pieces.push(piece);
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        if error_prefix && expressions > 0 && !pieces.contains(&Piece::ErrorOutputType) {
            return Err(
                "ErrorOutputPrefix contains expressions but not !{firehose:error-output-type}."
                    .into(),
            );
        }
        if expressions == 0 {
            // As AWS: no expression, the default time prefix follows.
            pieces.push(Piece::Timestamp(
                parse_date_pattern("yyyy/MM/dd/HH/").unwrap_or_default(),
            ));
        }
        if text.starts_with('/') || text.split('/').any(|seg| seg == ".." || seg == ".") {
            return Err(format!(
                "The prefix {text:?} cannot start with '/' or contain '.' or '..' segments."
            ));
        }
        Ok(PrefixTemplate { pieces })
    }

    /// Whether the prefix has expressions of its own (not just the default).
    pub fn has_expressions(text: &str) -> bool {
        text.contains("!{")
    }

    /// The keys of `!{partitionKeyFromQuery:...}` and of `!{partitionKeyFromLambda:...}`.
    pub fn partition_keys(&self) -> (Vec<&str>, Vec<&str>) {
        let mut query = Vec::new();
        let mut lambda = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::QueryKey(k) => query.push(k.as_str()),
                Piece::LambdaKey(k) => lambda.push(k.as_str()),
                _ => {}
            }
        }
        (query, lambda)
    }

    /// The prefix of a batch whose oldest record arrived at `arrival_ms`.
    pub fn evaluate(&self, arrival_ms: i64, batch: uuid::Uuid, error_type: Option<&str>) -> String {
        let none = BTreeMap::new();
        self.evaluate_keyed(arrival_ms, batch, error_type, &none, &none)
            .unwrap_or_default()
    }

    /// The prefix of a partition's records: as [`Self::evaluate`], with the records'
    /// partition keys. An error when a key the prefix uses is missing, or when a key's
    /// value would make an empty, `.` or `..` segment of the object's name.
    pub fn evaluate_keyed(
        &self,
        arrival_ms: i64,
        batch: uuid::Uuid,
        error_type: Option<&str>,
        query: &BTreeMap<String, String>,
        lambda: &BTreeMap<String, String>,
    ) -> Result<String, String> {
        let t = civil(arrival_ms);
        let mut out = String::new();
        let key = |map: &BTreeMap<String, String>, k: &str, from: &str| {
            map.get(k).cloned().ok_or_else(|| {
                format!("The partition key {k} (!{{{from}:{k}}}) is missing for the record.")
            })
        };
        for piece in &self.pieces {
            match piece {
                Piece::Text(s) => out.push_str(s),
                Piece::Timestamp(parts) => format_date(parts, &t, &mut out),
                Piece::RandomString => out.push_str(&random_string(batch)),
                Piece::ErrorOutputType => out.push_str(error_type.unwrap_or("processing-failed")),
                Piece::QueryKey(k) => out.push_str(&key(query, k, "partitionKeyFromQuery")?),
                Piece::LambdaKey(k) => out.push_str(&key(lambda, k, "partitionKeyFromLambda")?),
            }
        }
        if self
            .pieces
            .iter()
            .any(|p| matches!(p, Piece::QueryKey(_) | Piece::LambdaKey(_)))
        {
            let segments: Vec<&str> = out.split('/').collect();
            let last = segments.len() - 1;
            if out.starts_with('/')
                || segments
                    .iter()
                    .enumerate()
                    .any(|(i, s)| *s == "." || *s == ".." || (s.is_empty() && i != last))
            {
                return Err(format!(
                    "The partition keys make the prefix {out:?}, which has an empty, '.' or '..' segment."
                ));
            }
        }
        Ok(out)
    }
}

/// The object key of a batch, exactly as AWS forms it. `error_type`: the value of
/// `!{firehose:error-output-type}` (for objects under an error prefix).
pub fn object_key(
    prefix: &PrefixTemplate,
    error_type: Option<&str>,
    stream: &str,
    version: u64,
    arrival_ms: i64,
    batch: uuid::Uuid,
    extension: &str,
) -> String {
    object_key_under(
        &prefix.evaluate(arrival_ms, batch, error_type),
        stream,
        version,
        arrival_ms,
        batch,
        extension,
    )
}

/// The object key of a batch under an evaluated prefix.
pub fn object_key_under(
    prefix: &str,
    stream: &str,
    version: u64,
    arrival_ms: i64,
    batch: uuid::Uuid,
    extension: &str,
) -> String {
    let t = civil(arrival_ms);
    format!(
        "{prefix}{stream}-{version}-{:04}-{:02}-{:02}-{:02}-{:02}-{:02}-{}{extension}",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        batch.hyphenated()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-02-29T23:59:58.123Z
    const LEAP: i64 = 1_709_251_198_123;

    #[test]
    fn default_prefix_and_name_follow_aws() {
        let p = PrefixTemplate::parse("", false).unwrap();
        let id = batch_uuid("s/1", 0, 9);
        let key = object_key(&p, None, "orders", 1, LEAP, id, ".gz");
        assert_eq!(
            key,
            format!(
                "2024/02/29/23/orders-1-2024-02-29-23-59-58-{}.gz",
                id.hyphenated()
            )
        );
        let p = PrefixTemplate::parse("raw/", false).unwrap();
        assert!(
            object_key(&p, None, "o", 1, 0, id, "")
                .starts_with("raw/1970/01/01/00/o-1-1970-01-01-00-00-00-")
        );
    }

    #[test]
    fn expressions_replace_the_default() {
        let id = batch_uuid("s/1", 5, 5);
        let p = PrefixTemplate::parse(
            "y=!{timestamp:yyyy}/m=!{timestamp:MM}/!{firehose:random-string}/",
            false,
        )
        .unwrap();
        let out = p.evaluate(LEAP, id, None);
        assert_eq!(out, format!("y=2024/m=02/{}/", random_string(id)));
        let p = PrefixTemplate::parse("!{timestamp:yyyy-MM-dd'T'HH:mm:ss.SSS}", false).unwrap();
        assert_eq!(p.evaluate(LEAP, id, None), "2024-02-29T23:59:58.123");
        let p = PrefixTemplate::parse("e/!{firehose:error-output-type}/!{timestamp:yy}/", true)
            .unwrap();
        assert_eq!(
            p.evaluate(LEAP, id, Some("processing-failed")),
            "e/processing-failed/24/"
        );
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for (p, err) in [
            ("!{timestamp:yyyy", false),
            ("!{nope:x}", false),
            ("!{firehose:error-output-type}", false),
            ("!{timestamp:QQ}", false),
            ("e/!{timestamp:yyyy}/", true),
            ("../up/", false),
            ("/abs", false),
            ("!{partitionKeyFromQuery:id}", false),
        ] {
            assert!(PrefixTemplate::parse(p, err).is_err(), "{p}");
        }
    }

    #[test]
    fn partition_keys_fill_dynamic_prefixes() {
        let p = PrefixTemplate::parse_partitioned(
            "c=!{partitionKeyFromQuery:customer_id}/d=!{partitionKeyFromLambda:day}/!{timestamp:yyyy}/",
            false,
            true,
        )
        .unwrap();
        assert_eq!(p.partition_keys(), (vec!["customer_id"], vec!["day"]));
        let id = batch_uuid("s/1", 0, 0);
        let q: BTreeMap<String, String> = [("customer_id".to_string(), "42".to_string())].into();
        let l: BTreeMap<String, String> = [("day".to_string(), "07".to_string())].into();
        assert_eq!(
            p.evaluate_keyed(LEAP, id, None, &q, &l).unwrap(),
            "c=42/d=07/2024/"
        );
        assert!(
            p.evaluate_keyed(LEAP, id, None, &q, &BTreeMap::new())
                .unwrap_err()
                .contains("day")
        );
        let bare =
            PrefixTemplate::parse_partitioned("!{partitionKeyFromQuery:customer_id}/", false, true)
                .unwrap();
        for bad in ["..", ".", "", "a//b", "/abs"] {
            let k: BTreeMap<String, String> = [("customer_id".to_string(), bad.to_string())].into();
            assert!(
                bare.evaluate_keyed(LEAP, id, None, &k, &l).is_err(),
                "{bad:?}"
            );
        }
        let nested: BTreeMap<String, String> =
            [("customer_id".to_string(), "a/b".to_string())].into();
        assert_eq!(
            bare.evaluate_keyed(LEAP, id, None, &nested, &l).unwrap(),
            "a/b/"
        );
        // Only with dynamic partitioning, never in an error prefix, and with a valid key.
        assert!(PrefixTemplate::parse("!{partitionKeyFromQuery:id}/", false).is_err());
        assert!(
            PrefixTemplate::parse_partitioned(
                "!{partitionKeyFromQuery:id}/!{firehose:error-output-type}",
                true,
                true
            )
            .is_err()
        );
        assert!(
            PrefixTemplate::parse_partitioned("!{partitionKeyFromQuery:a b}/", false, true)
                .is_err()
        );
    }

    #[test]
    fn batch_names_are_stable_and_distinct() {
        assert_eq!(batch_uuid("a", 1, 2), batch_uuid("a", 1, 2));
        assert_ne!(batch_uuid("a", 1, 2), batch_uuid("a", 1, 3));
        assert_ne!(batch_uuid("a", 1, 2), batch_uuid("b", 1, 2));
        assert_eq!(random_string(batch_uuid("a", 1, 2)).len(), 11);
        assert_eq!(batch_uuid("a", 1, 2).get_version_num(), 3);
    }
}
