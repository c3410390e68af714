//! CloudWatch `PutMetricData`, so that clients that publish their own metrics (the
//! Kinesis Client Library does by default) succeed, and their figures show on
//! Freshet's `/metrics` as `freshet_client_metric_*` series
//! ([`crate::metrics::Metrics::record_client`]).
//!
//! CloudWatch speaks three protocols and SDKs use all of them: RPCv2 CBOR (botocore,
//! `POST /service/GraniteServiceVersion20100801/operation/PutMetricData`), AWS JSON
//! 1.0 (`X-Amz-Target: GraniteServiceVersion20100801.PutMetricData`; the SDK for Java
//! v2 of recent years) and the query protocol (form-encoded `Action=PutMetricData`,
//! older SDKs). The three documents are brought to one shape (the JSON one; the
//! query protocol's `MetricData.member.N.X` keys become lists) and validated with
//! CloudWatch's rules and messages (the API reference's `PutMetricData` and
//! `MetricDatum`): at most 1,000 data, 30 dimensions and 150 values per datum,
//! `Value`, `Values` and `StatisticValues` mutually exclusive, no `AWS/` namespace,
//! finite numbers, a known unit. Errors use the query protocol's codes
//! (`InvalidParameterValue`, `MissingParameter`, `InvalidParameterCombination`) in
//! each protocol's shape (`api::error::ApiError::into_cloudwatch`). Other CloudWatch
//! operations are refused as unknown: Freshet keeps no metric history to query.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::{AppState, MAX_KINESIS_BODY, read_body};
use crate::error::ErrorKind;
use crate::metrics::{ClientDatum, ClientMetricLabel};

/// The `X-Amz-Target` prefix of CloudWatch operations (JSON 1.0).
pub const TARGET_PREFIX: &str = "GraniteServiceVersion20100801.";
/// The path prefix of CloudWatch operations in the RPCv2 CBOR protocol.
pub const CBOR_PATH: &str = "/service/GraniteServiceVersion20100801/operation/";
/// At most this many data in one call.
const MAX_DATA: usize = 1000;
const MAX_DIMENSIONS: usize = 30;
const MAX_VALUES: usize = 150;
/// CloudWatch's units (`StandardUnit`).
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// The protocol a CloudWatch request came in, and its response goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Cbor,
    Json,
    Query,
}

/// Whether a `POST /` is CloudWatch's query protocol (form-encoded, `Action=...`).
pub fn is_query(headers: &axum::http::HeaderMap) -> bool {
    super::header_str(headers, "content-type")
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
        && super::header_str(headers, "x-amz-target").is_none()
}

/// The entry point for CloudWatch requests in any of the three protocols.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let target = super::header_str(&parts.headers, "x-amz-target").map(str::to_string);
    let protocol = if path.starts_with(CBOR_PATH) {
        Protocol::Cbor
    } else if target
        .as_deref()
        .is_some_and(|t| t.starts_with(TARGET_PREFIX))
    {
        Protocol::Json
    } else {
        Protocol::Query
    };
    let body = match read_body(&state, &mut parts, body, MAX_KINESIS_BODY).await {
        Ok(b) => b,
        Err(e) => return e.into_cloudwatch(protocol),
    };
    let gzip = super::header_str(&parts.headers, "content-encoding")
        .is_some_and(|e| e.split(',').any(|c| c.trim().eq_ignore_ascii_case("gzip")));
    let body = if gzip {
        match gunzip(&body.bytes, MAX_KINESIS_BODY) {
            Ok(b) => b,
            Err(e) => return e.into_cloudwatch(protocol),
        }
    } else {
        body.bytes.to_vec()
    };
    let (operation, doc) = match decode(protocol, &path, target.as_deref(), &body) {
        Ok(x) => x,
        Err(e) => return e.into_cloudwatch(protocol),
    };
    if operation != "PutMetricData" {
        let code = if protocol == Protocol::Query {
            "InvalidAction"
        } else {
            "UnknownOperationException"
        };
        return ApiError::new(
            ErrorKind::InvalidArgument,
            code,
            format!("The action {operation} is not valid for this web service."),
        )
        .into_cloudwatch(protocol);
    }
    match put_metric_data(&doc) {
        Ok(data) => {
            let dropped = crate::metrics::metrics().record_client(&data);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    limit = crate::metrics::MAX_CLIENT_SERIES,
                    "PutMetricData: data for new series dropped, the limit of client series is reached"
                );
            }
            success(protocol)
        }
        Err(e) => e.into_cloudwatch(protocol),
    }
}

/// A gzip request body (SDKs compress PutMetricData bodies of 10 KiB and more),
/// inflated to at most `limit` bytes: a small body cannot expand without bound.
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| serialization(format!("The gzip request body cannot be read: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            "RequestEntityTooLarge",
            format!("Request size exceeded {limit} bytes"),
        ));
    }
    Ok(out)
}

fn success(protocol: Protocol) -> Response {
    let (body, content_type): (Vec<u8>, &'static str) = match protocol {
        // An empty CBOR map.
        Protocol::Cbor => (vec![0xa0], "application/cbor"),
        Protocol::Json => (b"{}".to_vec(), "application/x-amz-json-1.0"),
        Protocol::Query => (
            b"<PutMetricDataResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\">\
              <ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId>\
              </ResponseMetadata></PutMetricDataResponse>"
                .to_vec(),
            "text/xml",
        ),
    };
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if protocol == Protocol::Cbor {
        h.insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
    }
    resp
}

fn serialization(message: impl Into<String>) -> ApiError {
    ApiError::new(
        ErrorKind::InvalidArgument,
        "SerializationException",
        message,
    )
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::InvalidArgument, "InvalidParameterValue", message)
}

fn missing(parameter: &str) -> ApiError {
    ApiError::new(
        ErrorKind::InvalidArgument,
        "MissingParameter",
        format!("The parameter {parameter} is required."),
    )
}

/// The operation's name and its input as a JSON document.
fn decode(
    protocol: Protocol,
    path: &str,
    target: Option<&str>,
    body: &[u8],
) -> Result<(String, Value), ApiError> {
    match protocol {
        Protocol::Cbor => {
            let op = path.strip_prefix(CBOR_PATH).unwrap_or("").to_string();
            let doc = if body.is_empty() {
                Value::Object(Map::new())
            } else {
                super::cbor::cbor_to_json_document(body)
                    .map_err(|e| serialization(e.to_string()))?
            };
            Ok((op, doc))
        }
        Protocol::Json => {
            let op = target
                .and_then(|t| t.strip_prefix(TARGET_PREFIX))
                .unwrap_or("")
                .to_string();
            let doc: Value = if body.is_empty() {
                Value::Object(Map::new())
            } else {
                serde_json::from_slice(body)
                    .map_err(|e| serialization(format!("Malformed JSON: {e}")))?
            };
            if !doc.is_object() {
                return Err(serialization(""));
            }
            Ok((op, doc))
        }
        Protocol::Query => {
            let text = std::str::from_utf8(body)
                .map_err(|_| invalid("The request body is not UTF-8 form data."))?;
            let mut doc = Value::Object(Map::new());
            let mut action = String::new();
            for pair in text.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                let (k, v) = (form_decode(k), form_decode(v));
                match k.as_str() {
                    "Action" => action = v,
                    "Version" => {}
                    _ => insert_query_key(&mut doc, &k, v)?,
                }
            }
            Ok((action, doc))
        }
    }
}

/// `application/x-www-form-urlencoded` decoding of one key or value.
fn form_decode(text: &str) -> String {
    let spaced = text.replace('+', "%20");
    String::from_utf8_lossy(&crate::auth::canonical::percent_decode(&spaced)).into_owned()
}

/// Places `MetricData.member.2.Dimensions.member.1.Name=v` in `doc` as
/// `{"MetricData": [_, {"Dimensions": [{"Name": "v"}]}]}`. Indices are 1-based and
/// at most [`MAX_DATA`] (larger ones are refused before anything is allocated).
fn insert_query_key(doc: &mut Value, key: &str, value: String) -> Result<(), ApiError> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut at = doc;
    let mut i = 0;
    while i < parts.len() {
        let name = parts[i];
        let last_name = i + 1 == parts.len();
        let Value::Object(map) = at else {
            return Err(invalid(format!("The parameter {key} is not valid.")));
        };
        if last_name {
            map.insert(name.to_string(), Value::String(value));
            return Ok(());
        }
        if parts[i + 1] == "member" {
            let index: usize = parts
                .get(i + 2)
                .and_then(|n| n.parse().ok())
                .filter(|n| (1..=MAX_DATA + 1).contains(n))
                .ok_or_else(|| invalid(format!("The parameter {key} is not valid.")))?;
            let list = map
                .entry(name.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(items) = list else {
                return Err(invalid(format!("The parameter {key} is not valid.")));
            };
            while items.len() < index {
                items.push(Value::Null);
            }
            let slot = &mut items[index - 1];
            if i + 3 == parts.len() {
                *slot = Value::String(value);
                return Ok(());
            }
            if slot.is_null() {
                *slot = Value::Object(Map::new());
            }
            at = slot;
            i += 3;
        } else {
            at = map
                .entry(name.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            i += 1;
        }
    }
    Ok(())
}

/// A number: JSON and CBOR carry numbers, the query protocol strings.
fn number(v: &Value, parameter: &str) -> Result<f64, ApiError> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(invalid(format!(
            "The value {} for parameter {parameter} is invalid.",
            match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        ))),
    }
}

fn text<'a>(v: Option<&'a Value>, parameter: &str) -> Result<Option<&'a str>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(invalid(format!(
            "The parameter {parameter} must be longer than 0 characters."
        ))),
        Some(Value::String(s)) if s.chars().count() > 255 => Err(invalid(format!(
            "The parameter {parameter} must be shorter than 256 characters."
        ))),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(format!(
            "The value {other} for parameter {parameter} is invalid."
        ))),
    }
}

fn list<'a>(v: Option<&'a Value>, parameter: &str, max: usize) -> Result<&'a [Value], ApiError> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) if items.len() > max => Err(invalid(format!(
            "The collection {parameter} must not have a size greater than {max}."
        ))),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(invalid(format!(
            "The value {other} for parameter {parameter} is invalid."
        ))),
    }
}

/// Validates a `PutMetricData` input and reduces each datum to a statistic set.
fn put_metric_data(doc: &Value) -> Result<Vec<ClientDatum>, ApiError> {
    let namespace = text(doc.get("Namespace"), "Namespace")?.ok_or_else(|| missing("Namespace"))?;
    if namespace.starts_with("AWS/") {
        return Err(invalid(format!(
            "The value {namespace} for parameter Namespace is invalid."
        )));
    }
    let data = list(doc.get("MetricData"), "MetricData", MAX_DATA)?;
    if data.is_empty() {
        return Err(missing("MetricData"));
    }
    let mut out = Vec::with_capacity(data.len());
    for (i, datum) in data.iter().enumerate() {
        let p = format!("MetricData.member.{}", i + 1);
        if !datum.is_object() {
            return Err(missing(&format!("{p}.MetricName")));
        }
        let metric = text(datum.get("MetricName"), &format!("{p}.MetricName"))?
            .ok_or_else(|| missing(&format!("{p}.MetricName")))?;
        let mut dims = Vec::new();
        let dimensions = list(
            datum.get("Dimensions"),
            &format!("{p}.Dimensions"),
            MAX_DIMENSIONS,
        )?;
        for (j, d) in dimensions.iter().enumerate() {
            let dp = format!("{p}.Dimensions.member.{}", j + 1);
            let name = text(d.get("Name"), &format!("{dp}.Name"))?
                .ok_or_else(|| missing(&format!("{dp}.Name")))?;
            let value = text(d.get("Value"), &format!("{dp}.Value"))?
                .ok_or_else(|| missing(&format!("{dp}.Value")))?;
            dims.push((name.to_string(), value.to_string()));
        }
        dims.sort();
        let unit = text(datum.get("Unit"), &format!("{p}.Unit"))?.unwrap_or("None");
        if !UNITS.contains(&unit) {
            return Err(invalid(format!(
                "The value {unit} for parameter {p}.Unit is invalid."
            )));
        }
        let value = datum.get("Value").filter(|v| !v.is_null());
        let values = list(datum.get("Values"), &format!("{p}.Values"), MAX_VALUES)?;
        let counts = list(datum.get("Counts"), &format!("{p}.Counts"), MAX_VALUES)?;
        let stats = datum.get("StatisticValues").filter(|v| !v.is_null());
        let exclusive = |a: &str, b: &str| {
            ApiError::new(
                ErrorKind::InvalidArgument,
                "InvalidParameterCombination",
                format!(
                    "The parameters {p}.{a} and {p}.{b} are mutually exclusive and you have specified both."
                ),
            )
        };
        if value.is_some() && stats.is_some() {
            return Err(exclusive("Value", "StatisticValues"));
        }
        if value.is_some() && !values.is_empty() {
            return Err(exclusive("Value", "Values"));
        }
        if stats.is_some() && !values.is_empty() {
            return Err(exclusive("Values", "StatisticValues"));
        }
        let (samples, sum, min, max) = if let Some(v) = value {
            let x = number(v, &format!("{p}.Value"))?;
            (1.0, x, x, x)
        } else if let Some(s) = stats {
            let sp = format!("{p}.StatisticValues");
            let field = |name: &str| -> Result<f64, ApiError> {
                let v = s
                    .get(name)
                    .filter(|v| !v.is_null())
                    .ok_or_else(|| missing(&format!("{sp}.{name}")))?;
                number(v, &format!("{sp}.{name}"))
            };
            let (n, sum, min, max) = (
                field("SampleCount")?,
                field("Sum")?,
                field("Minimum")?,
                field("Maximum")?,
            );
            if n <= 0.0 {
                return Err(invalid(format!(
                    "The value {n} for parameter {sp}.SampleCount is invalid."
                )));
            }
            if min > max {
                return Err(invalid(format!(
                    "The value {min} for parameter {sp}.Minimum is invalid: it is greater than {sp}.Maximum."
                )));
            }
            (n, sum, min, max)
        } else if !values.is_empty() {
            if !counts.is_empty() && counts.len() != values.len() {
                return Err(invalid(format!(
                    "The parameters {p}.Values and {p}.Counts must be of the same size."
                )));
            }
            let (mut n, mut sum, mut min, mut max) = (0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY);
            for (k, v) in values.iter().enumerate() {
                let x = number(v, &format!("{p}.Values.member.{}", k + 1))?;
                let c = match counts.get(k) {
                    Some(c) => number(c, &format!("{p}.Counts.member.{}", k + 1))?,
                    None => 1.0,
                };
                if c < 0.0 {
                    return Err(invalid(format!(
                        "The value {c} for parameter {p}.Counts.member.{} is invalid.",
                        k + 1
                    )));
                }
                n += c;
                sum += x * c;
                min = min.min(x);
                max = max.max(x);
            }
            (n, sum, min, max)
        } else {
            return Err(missing(&format!("{p}.Value")));
        };
        out.push(ClientDatum {
            label: ClientMetricLabel {
                namespace: namespace.to_string(),
                metric: metric.to_string(),
                dimensions: dims
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
                unit: unit.to_string(),
            },
            samples,
            sum,
            min,
            max,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(body: &str) -> Value {
        decode(Protocol::Query, "/", None, body.as_bytes())
            .unwrap()
            .1
    }

    #[test]
    fn query_keys_become_the_json_document() {
        let doc = query(
            "Action=PutMetricData&Version=2010-08-01&Namespace=KCL+app\
             &MetricData.member.1.MetricName=Time\
             &MetricData.member.1.Dimensions.member.1.Name=ShardId\
             &MetricData.member.1.Dimensions.member.1.Value=shardId-0\
             &MetricData.member.1.Values.member.1=2&MetricData.member.1.Values.member.2=4\
             &MetricData.member.1.Counts.member.1=1&MetricData.member.1.Counts.member.2=3\
             &MetricData.member.2.MetricName=Rec%2Fs&MetricData.member.2.Value=7",
        );
        assert_eq!(
            doc,
            json!({"Namespace": "KCL app", "MetricData": [
                {"MetricName": "Time",
                 "Dimensions": [{"Name": "ShardId", "Value": "shardId-0"}],
                 "Values": ["2", "4"], "Counts": ["1", "3"]},
                {"MetricName": "Rec/s", "Value": "7"}]})
        );
        let data = put_metric_data(&doc).unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data[0].label.dimensions, "ShardId=shardId-0");
        assert_eq!(data[0].label.unit, "None");
        assert_eq!((data[0].samples, data[0].sum), (4.0, 14.0));
        assert_eq!((data[0].min, data[0].max), (2.0, 4.0));
        assert_eq!((data[1].samples, data[1].sum), (1.0, 7.0));
        // An index beyond the limit is refused before anything is allocated.
        let e = decode(
            Protocol::Query,
            "/",
            None,
            b"Action=PutMetricData&MetricData.member.99999999.Value=1",
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidParameterValue");
    }

    #[test]
    fn gzip_bodies_inflate_within_the_limit() {
        use std::io::Write;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&vec![b' '; 10_000]).unwrap();
        let packed = z.finish().unwrap();
        assert_eq!(gunzip(&packed, 10_000).unwrap().len(), 10_000);
        assert_eq!(
            gunzip(&packed, 9_999).unwrap_err().code,
            "RequestEntityTooLarge"
        );
        assert_eq!(
            gunzip(b"not gzip", 100).unwrap_err().code,
            "SerializationException"
        );
    }

    #[test]
    fn statistic_sets_and_dimension_order() {
        let doc = json!({"Namespace": "N", "MetricData": [{
            "MetricName": "Latency", "Unit": "Milliseconds",
            "Dimensions": [{"Name": "b", "Value": "2"}, {"Name": "a", "Value": "1"}],
            "StatisticValues": {"SampleCount": 4, "Sum": 10, "Minimum": 1, "Maximum": 4}}]});
        let d = &put_metric_data(&doc).unwrap()[0];
        assert_eq!(d.label.dimensions, "a=1,b=2");
        assert_eq!((d.samples, d.sum, d.min, d.max), (4.0, 10.0, 1.0, 4.0));
    }

    #[test]
    fn cloudwatch_rules_and_messages() {
        let err = |doc: Value| put_metric_data(&doc).unwrap_err();
        let e = err(json!({"MetricData": [{"MetricName": "m", "Value": 1}]}));
        assert_eq!(
            (e.code, e.message.as_str()),
            ("MissingParameter", "The parameter Namespace is required.")
        );
        let e = err(
            json!({"Namespace": "AWS/Kinesis", "MetricData": [{"MetricName": "m", "Value": 1}]}),
        );
        assert_eq!(e.code, "InvalidParameterValue");
        let e = err(json!({"Namespace": "N"}));
        assert_eq!(e.message, "The parameter MetricData is required.");
        let e = err(
            json!({"Namespace": "N", "MetricData": [{"MetricName": "m", "Value": 1,
            "StatisticValues": {"SampleCount": 1, "Sum": 1, "Minimum": 1, "Maximum": 1}}]}),
        );
        assert_eq!(e.code, "InvalidParameterCombination");
        assert_eq!(
            e.message,
            "The parameters MetricData.member.1.Value and MetricData.member.1.StatisticValues \
             are mutually exclusive and you have specified both."
        );
        let many: Vec<Value> = (0..1001)
            .map(|_| json!({"MetricName": "m", "Value": 1}))
            .collect();
        let e = err(json!({"Namespace": "N", "MetricData": many}));
        assert_eq!(
            e.message,
            "The collection MetricData must not have a size greater than 1000."
        );
        let e = err(
            json!({"Namespace": "N", "MetricData": [{"MetricName": "m", "Value": 1, "Unit": "Parsecs"}]}),
        );
        assert_eq!(
            e.message,
            "The value Parsecs for parameter MetricData.member.1.Unit is invalid."
        );
        let e = err(
            json!({"Namespace": "N", "MetricData": [{"MetricName": "m", "Values": [1, 2], "Counts": [1]}]}),
        );
        assert_eq!(e.code, "InvalidParameterValue");
        let e = err(json!({"Namespace": "N", "MetricData": [{"MetricName": "m", "Value": "NaN"}]}));
        assert_eq!(
            e.message,
            "The value NaN for parameter MetricData.member.1.Value is invalid."
        );
        let e = err(json!({"Namespace": "N", "MetricData": [{"MetricName": "m",
            "StatisticValues": {"SampleCount": 0, "Sum": 1, "Minimum": 1, "Maximum": 1}}]}));
        assert_eq!(e.code, "InvalidParameterValue");
        let e = err(json!({"Namespace": "N", "MetricData": [{"Value": 1}]}));
        assert_eq!(
            e.message,
            "The parameter MetricData.member.1.MetricName is required."
        );
    }
}
