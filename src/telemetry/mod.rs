//! Traces: one span per API request, exported to an OpenTelemetry collector (or any
//! OTLP receiver: Jaeger, Tempo, …) over OTLP/HTTP with the JSON encoding — the OTLP
//! specification 1.x, `POST {endpoint}/v1/traces`, `Content-Type: application/json`,
//! the protobuf JSON mapping of `ExportTraceServiceRequest` (trace and span ids as hex,
//! times as decimal strings of Unix nanoseconds, enums as numbers).
//!
//! A request's span continues the caller's trace when it sends a W3C Trace Context
//! `traceparent` header (Level 1: `00-<32 hex>-<16 hex>-<2 hex>`); otherwise the trace
//! id is the request id (`x-amzn-RequestId` without its dashes), so that a span is
//! found from a client's error report. Attributes follow the semantic conventions for
//! RPC and HTTP servers (`rpc.system` `aws-api`, `rpc.service`, `rpc.method`,
//! `http.request.method`, `http.route`, `http.response.status_code`, `error.type`) plus
//! `aws.request_id`; never a body, a header value or a credential.
//!
//! Spans go through a bounded queue ([`QUEUE`]) to one exporter task that sends them in
//! batches of up to [`BATCH`] spans or every [`INTERVAL`], retrying a batch a few times
//! when the receiver is unreachable or answers 429/502/503/504. A full queue, or a batch
//! that still fails, drops spans (`freshet_otlp_spans_dropped_total`): tracing never
//! slows requests down nor holds memory without bound. The encoding is pure and
//! unit-tested; the exporter is enabled by `--otlp-endpoint` and built with the `otlp`
//! cargo feature (on by default).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Spans waiting for the exporter at most; more are dropped.
pub const QUEUE: usize = 8192;
/// Spans sent in one request at most.
pub const BATCH: usize = 512;
/// How long a span waits for its batch to fill before it is sent anyway.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Attempts per batch (the first and its retries).
const ATTEMPTS: u32 = 4;

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
}

/// One finished request, as a span.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpan {
    pub name: String,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The caller's span, from `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// A server error (5xx): the span's status is ERROR.
    pub error: bool,
}

/// The trace id and parent span id of a W3C `traceparent` header (version 00, or a
/// later version read as 00 allows), or `None` when it is malformed or all zeros.
pub fn parse_traceparent(value: &str) -> Option<([u8; 16], [u8; 8])> {
    let mut parts = value.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    if version.len() != 2 || version == "ff" || !is_lower_hex(version) {
        return None;
    }
    // Version 00 has exactly four fields; later versions may append more.
    if version == "00" && rest.is_some() {
        return None;
    }
    if flags.len() != 2 || !is_lower_hex(flags) {
        return None;
    }
    let trace_id: [u8; 16] = decode_hex(trace)?;
    let span_id: [u8; 8] = decode_hex(parent)?;
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some((trace_id, span_id))
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn decode_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !is_lower_hex(s) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

/// The route a span is named by: the path with its variable parts replaced, so that
/// span names stay few (a stream name is an attribute's business, not a name's).
pub fn route_of(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["", "v1", "streams", _, rest @ ..] => format!("/v1/streams/{{name}}/{}", rest.join("/")),
        ["", "v1", "groups", _, rest @ ..] => format!("/v1/groups/{{group}}/{}", rest.join("/")),
        ["", "v1", "video", "feeds", _, ..] => "/v1/video/feeds/{name}".to_string(),
        ["", "console", _, ..] => "/console/{*asset}".to_string(),
        _ => path.to_string(),
    }
    .trim_end_matches('/')
    .to_string()
}

/// The `ExportTraceServiceRequest` of a batch of spans, in the OTLP JSON encoding.
pub fn encode(service_name: &str, spans: &[RequestSpan]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let attributes: Vec<Value> = s
                .attributes
                .iter()
                .map(|(key, value)| {
                    let value = match value {
                        AttrValue::Str(v) => json!({ "stringValue": v }),
                        // int64 is a decimal string in the protobuf JSON mapping.
                        AttrValue::Int(v) => json!({ "intValue": v.to_string() }),
                    };
                    json!({ "key": key, "value": value })
                })
                .collect();
            let mut span = json!({
                "traceId": hex(&s.trace_id),
                "spanId": hex(&s.span_id),
                "name": s.name,
                // SPAN_KIND_SERVER
                "kind": 2,
                "startTimeUnixNano": unix_nanos(s.start),
                "endTimeUnixNano": unix_nanos(s.end),
                "attributes": attributes,
                // STATUS_CODE_ERROR for a server error, else unset (as the HTTP server
                // conventions say: a 4xx is the client's, not the server's, error).
                "status": if s.error { json!({ "code": 2 }) } else { json!({}) },
            });
            if let Some(parent) = s.parent_span_id {
                span["parentSpanId"] = json!(hex(&parent));
            }
            span
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": {
                "attributes": [
                    { "key": "service.name", "value": { "stringValue": service_name } },
                    { "key": "service.version", "value": { "stringValue": env!("CARGO_PKG_VERSION") } },
                    { "key": "telemetry.sdk.name", "value": { "stringValue": "freshet" } },
                ]
            },
            "scopeSpans": [{
                "scope": { "name": "freshet", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }]
        }]
    })
}

/// Where spans go.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The receiver's base URL (`http://collector:4318`); `/v1/traces` is appended
    /// unless it already ends so.
    pub endpoint: String,
    pub service_name: String,
}

impl OtlpConfig {
    /// The URL batches are POSTed to.
    pub fn traces_url(&self) -> String {
        let base = self.endpoint.trim_end_matches('/');
        if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        }
    }
}

static QUEUE_TX: OnceLock<tokio::sync::mpsc::Sender<RequestSpan>> = OnceLock::new();

/// Whether spans are exported (so that callers skip building them otherwise).
pub fn enabled() -> bool {
    QUEUE_TX.get().is_some()
}

/// Hands a finished span to the exporter; drops it (counted) when the queue is full.
pub fn record(span: RequestSpan) {
    if let Some(tx) = QUEUE_TX.get()
        && tx.try_send(span).is_err()
    {
        crate::metrics::metrics().otlp_spans_dropped.inc();
    }
}

/// Starts the exporter (once per process; later calls are refused). Fails on a URL
/// that is not `http://` or `https://`, or in a build without the `otlp` feature.
#[cfg(not(feature = "otlp"))]
pub fn start(config: OtlpConfig) -> anyhow::Result<()> {
    anyhow::bail!(
        "--otlp-endpoint {:?}: this build has no OTLP export (build with the cargo feature `otlp`)",
        config.endpoint
    )
}

/// Starts the exporter (once per process; later calls are refused). Fails on a URL
/// that is not `http://` or `https://`.
#[cfg(feature = "otlp")]
pub fn start(config: OtlpConfig) -> anyhow::Result<()> {
    let url = config.traces_url();
    let parsed: axum::http::Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {:?}: {e}", config.endpoint))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        anyhow::bail!(
            "--otlp-endpoint {:?}: only http:// and https:// (OTLP/HTTP) are supported",
            config.endpoint
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
    QUEUE_TX
        .set(tx)
        .map_err(|_| anyhow::anyhow!("the OTLP exporter is already running"))?;
    // The HTTP client of the delivery workers' endpoints: http:// and https:// (rustls,
    // the system's roots), a connection pool, bounded waits.
    let client = crate::delivery::http::EndpointClient::new();
    tokio::spawn(export_loop(client, url, config.service_name, rx));
    Ok(())
}

#[cfg(feature = "otlp")]
async fn export_loop(
    client: crate::delivery::http::EndpointClient,
    url: String,
    service_name: String,
    mut rx: tokio::sync::mpsc::Receiver<RequestSpan>,
) {
    let m = crate::metrics::metrics();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + INTERVAL;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let request = crate::delivery::http::EndpointRequest {
            headers: vec![("content-type", "application/json".to_string())],
            body: bytes::Bytes::from(encode(&service_name, &batch).to_string()),
        };
        let n = batch.len() as u64;
        batch.clear();
        let mut delay = Duration::from_millis(250);
        let mut sent = false;
        for attempt in 1..=ATTEMPTS {
            match client.post(&url, &request).await {
                Ok((status, _)) if (200..300).contains(&status) => {
                    sent = true;
                    break;
                }
                Ok((status, _)) if !matches!(status, 429 | 502 | 503 | 504) => {
                    tracing::warn!(status, url, "OTLP receiver refused spans");
                    break;
                }
                Ok((status, _)) if attempt == ATTEMPTS => {
                    tracing::warn!(status, url, "OTLP export failed");
                }
                Err(e) if attempt == ATTEMPTS => {
                    tracing::warn!(error = e, url, "OTLP export failed");
                }
                _ => {}
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        if sent {
            m.otlp_spans_exported.inc_by(n);
        } else {
            m.otlp_spans_dropped.inc_by(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_of_the_w3c_examples() {
        // Trace Context Level 1, section 3.2.2.
        let (trace, parent) =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(hex(&trace), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&parent), "00f067aa0ba902b7");
        // A later version may carry more fields.
        assert!(
            parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
                .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn routes_hide_names() {
        assert_eq!(
            route_of("/v1/streams/orders/records"),
            "/v1/streams/{name}/records"
        );
        assert_eq!(route_of("/v1/groups/g1/join"), "/v1/groups/{group}/join");
        assert_eq!(route_of("/v1/video/feeds/door"), "/v1/video/feeds/{name}");
        assert_eq!(route_of("/console/console.js"), "/console/{*asset}");
        assert_eq!(route_of("/putMedia"), "/putMedia");
        assert_eq!(route_of("/"), "");
    }

    #[test]
    fn a_batch_in_the_otlp_json_encoding() {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let span = RequestSpan {
            name: "Kinesis_20131202/PutRecord".into(),
            trace_id: [0xab; 16],
            span_id: [1, 2, 3, 4, 5, 6, 7, 8],
            parent_span_id: Some([9; 8]),
            start,
            end: start + Duration::from_millis(3),
            attributes: vec![
                ("rpc.method", AttrValue::Str("PutRecord".into())),
                ("http.response.status_code", AttrValue::Int(200)),
            ],
            error: false,
        };
        let failed = RequestSpan {
            parent_span_id: None,
            error: true,
            ..span.clone()
        };
        let doc = encode("freshet-test", &[span, failed]);
        let resource = &doc["resourceSpans"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "freshet-test"}})
        );
        let spans = resource["scopeSpans"][0]["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0]["traceId"], "abababababababababababababababab");
        assert_eq!(spans[0]["spanId"], "0102030405060708");
        assert_eq!(spans[0]["parentSpanId"], "0909090909090909");
        assert_eq!(spans[0]["kind"], 2);
        assert_eq!(spans[0]["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(spans[0]["endTimeUnixNano"], "1700000000126456789");
        assert_eq!(
            spans[0]["attributes"][1],
            json!({"key": "http.response.status_code", "value": {"intValue": "200"}})
        );
        assert_eq!(spans[0]["status"], json!({}));
        assert!(spans[1].get("parentSpanId").is_none());
        assert_eq!(spans[1]["status"], json!({"code": 2}));
    }

    #[test]
    fn the_traces_path_is_appended_once() {
        let c = |e: &str| OtlpConfig {
            endpoint: e.into(),
            service_name: "s".into(),
        };
        assert_eq!(c("http://h:4318").traces_url(), "http://h:4318/v1/traces");
        assert_eq!(c("http://h:4318/").traces_url(), "http://h:4318/v1/traces");
        assert_eq!(
            c("http://h:4318/v1/traces").traces_url(),
            "http://h:4318/v1/traces"
        );
    }
}
