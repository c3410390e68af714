//! The HTTP endpoint destination: one POST per batch, as the Amazon Data Firehose
//! developer guide specifies ("Understand HTTP endpoint delivery request and response
//! specifications", protocol version 1.0).
//!
//! Request: `POST <Url>` with `Content-Type: application/json`,
//! `X-Amz-Firehose-Protocol-Version: 1.0`, `X-Amz-Firehose-Request-Id` (the batch's
//! uuid: the same for every attempt at the batch, before and after a restart),
//! `X-Amz-Firehose-Source-Arn`, `X-Amz-Firehose-Access-Key` when one is configured,
//! `X-Amz-Firehose-Common-Attributes` (`{"commonAttributes":{...}}`) when attributes are
//! configured, and `Content-Encoding: gzip` when `ContentEncoding` is `GZIP`. Body:
//! `{"requestId":"<id>","timestamp":<ms>,"records":[{"data":"<base64>"},...]}`.
//!
//! Response: only a 200 whose JSON body carries `"requestId"` equal to the request's is
//! a delivery; anything else (another status, a body that is not JSON, a missing or
//! different `requestId`) is a failure, described with the endpoint's `errorMessage`
//! when it sent one. At most [`RESPONSE_BYTES`] of a response are read.
//!
//! The pure parts ([`build_request`], [`check_response`], [`failed_records_object`]) are
//! separate from the client ([`EndpointClient`]: hyper with rustls on ring, the system's
//! roots, `http://` and `https://`). Retries and the backup bucket are the worker's.
//! This module never panics on what an endpoint sends.

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::model::{ContentEncoding, HttpEndpointDestination};

/// `X-Amz-Firehose-Protocol-Version`.
pub const PROTOCOL_VERSION: &str = "1.0";
/// The most bytes of a response read (the rest is not waited for).
pub const RESPONSE_BYTES: usize = 64 * 1024;
/// How long an endpoint has to answer a request (AWS gives 3 minutes).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(180);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes of a response body quoted in a failure message.
const QUOTED_BYTES: usize = 512;
/// `!{firehose:error-output-type}` of batches the endpoint did not take, and the
/// default prefix of their objects in the backup bucket.
pub const ERROR_OUTPUT_TYPE: &str = "http-endpoint-failed";
/// Where failed batches go in the backup bucket without an `ErrorOutputPrefix`
/// (followed by the default `YYYY/MM/dd/HH/`).
pub const DEFAULT_ERROR_PREFIX: &str = "http-endpoint-failed/";

/// One request, ready to send (and to send again, unchanged but for nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRequest {
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// Why an endpoint did not take a batch: AWS's error code and the message shown in
/// DescribeDeliveryStream and written with the failed records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointFailure {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for EndpointFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The request of a batch. `timestamp_ms`: when it is sent; `records`: the records'
/// bytes, unchanged.
pub fn build_request(
    dest: &HttpEndpointDestination,
    request_id: &str,
    source_arn: &str,
    timestamp_ms: i64,
    records: &[Bytes],
) -> std::io::Result<EndpointRequest> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let encoded: usize = records.iter().map(|r| r.len().div_ceil(3) * 4 + 12).sum();
    let mut json = Vec::with_capacity(encoded + 96);
    // The id is a uuid and the timestamp a number: neither needs escaping.
    write!(
        json,
        "{{\"requestId\":\"{request_id}\",\"timestamp\":{timestamp_ms},\"records\":["
    )?;
    let mut scratch = String::new();
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        scratch.clear();
        b64.encode_string(r, &mut scratch);
        json.extend_from_slice(b"{\"data\":\"");
        json.extend_from_slice(scratch.as_bytes());
        json.extend_from_slice(b"\"}");
    }
    json.extend_from_slice(b"]}");
    let mut headers = vec![
        ("Content-Type", "application/json".to_string()),
        (
            "X-Amz-Firehose-Protocol-Version",
            PROTOCOL_VERSION.to_string(),
        ),
        ("X-Amz-Firehose-Request-Id", request_id.to_string()),
        ("X-Amz-Firehose-Source-Arn", source_arn.to_string()),
    ];
    if let Some(key) = &dest.access_key {
        headers.push(("X-Amz-Firehose-Access-Key", key.clone()));
    }
    if !dest.common_attributes.is_empty() {
        let attrs: serde_json::Map<String, serde_json::Value> = dest
            .common_attributes
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        headers.push((
            "X-Amz-Firehose-Common-Attributes",
            serde_json::json!({ "commonAttributes": attrs }).to_string(),
        ));
    }
    let body = match dest.content_encoding {
        ContentEncoding::None => json,
        ContentEncoding::Gzip => {
            headers.push(("Content-Encoding", "gzip".to_string()));
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(json.len() / 3 + 64),
                flate2::Compression::fast(),
            );
            enc.write_all(&json)?;
            enc.finish()?
        }
    };
    Ok(EndpointRequest {
        headers,
        body: body.into(),
    })
}

/// Whether an endpoint's answer to the request `request_id` is a delivery.
pub fn check_response(status: u16, body: &[u8], request_id: &str) -> Result<(), EndpointFailure> {
    let doc: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let answered = doc
        .as_ref()
        .and_then(|d| d.get("requestId"))
        .and_then(serde_json::Value::as_str);
    let error_message = doc
        .as_ref()
        .and_then(|d| d.get("errorMessage"))
        .and_then(serde_json::Value::as_str);
    if status == 200 && answered == Some(request_id) {
        return Ok(());
    }
    let quoted = quote(body);
    if status != 200 {
        return Err(EndpointFailure {
            code: "HttpEndpoint.DestinationException",
            message: match error_message {
                Some(m) => {
                    format!("The endpoint answered {status} with errorMessage {m:?}: {quoted}")
                }
                None => format!("The endpoint answered {status}: {quoted}"),
            },
        });
    }
    Err(EndpointFailure {
        code: "HttpEndpoint.InvalidResponseFromDestination",
        message: match (doc.is_some(), answered) {
            (false, _) => {
                format!("The endpoint answered 200 with a body that is not JSON: {quoted}")
            }
            (true, None) => format!("The endpoint answered 200 without a requestId: {quoted}"),
            (true, Some(other)) => format!(
                "The endpoint answered 200 with requestId {other:?}, not {request_id:?}: {quoted}"
            ),
        },
    })
}

/// At most [`QUOTED_BYTES`] of a body, as text.
fn quote(body: &[u8]) -> String {
    let cut = &body[..body.len().min(QUOTED_BYTES)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if body.len() > QUOTED_BYTES {
        s.push_str("...");
    }
    s
}

/// The records of a batch the endpoint did not take, as AWS writes failed data to the
/// backup bucket: one JSON object per record and line (`attemptsMade`,
/// `arrivalTimestamp`, `errorCode`, `errorMessage`, `attemptEndingTimestamp`, `rawData`
/// in base64). `arrivals[i]` is the arrival of `records[i]`.
pub fn failed_records_object(
    records: &[Bytes],
    arrivals: &[i64],
    attempts: u32,
    failure: &EndpointFailure,
    ending_ms: i64,
) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let line = serde_json::json!({
            "attemptsMade": attempts,
            "arrivalTimestamp": arrivals.get(i).copied().unwrap_or(0),
            "errorCode": failure.code,
            "errorMessage": failure.message,
            "attemptEndingTimestamp": ending_ms,
            "rawData": b64.encode(r),
        });
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

/// The HTTP client of endpoint destinations: HTTP/1.1, `http://` and `https://`
/// (rustls on ring; the system's roots, or the file `SSL_CERT_FILE` names).
#[derive(Clone)]
pub struct EndpointClient {
    client: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
}

impl EndpointClient {
    /// A client with its own connection pool. Needs a Tokio runtime.
    pub fn new() -> EndpointClient {
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let builder = match hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider.clone())
        {
            Ok(b) => b,
            Err(e) => {
                // Plain http:// still works; https:// fails with a certificate error.
                tracing::warn!(error = %e, "no system root certificates: https:// endpoints cannot be verified");
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map(|b| {
                        b.with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth()
                    });
                match config {
                    Ok(c) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(c),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot configure TLS for endpoints");
                        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                            rustls::ClientConfig::builder()
                                .with_root_certificates(rustls::RootCertStore::empty())
                                .with_no_client_auth(),
                        )
                    }
                }
            }
        };
        let connector = builder.https_or_http().enable_http1().wrap_connector(http);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(connector);
        EndpointClient { client }
    }

    /// Sends `req` to `url`: the status and at most [`RESPONSE_BYTES`] of the body.
    pub async fn post(&self, url: &str, req: &EndpointRequest) -> Result<(u16, Bytes), String> {
        self.post_limited(url, req, RESPONSE_BYTES, false).await
    }

    /// Sends `req` to `url`: the status and at most `limit` bytes of the body; with
    /// `strict`, a longer body is an error instead of being cut.
    pub async fn post_limited(
        &self,
        url: &str,
        req: &EndpointRequest,
        limit: usize,
        strict: bool,
    ) -> Result<(u16, Bytes), String> {
        let mut builder = http::Request::post(url);
        for (name, value) in &req.headers {
            builder = builder.header(*name, value.as_str());
        }
        let request = builder
            .body(Full::new(req.body.clone()))
            .map_err(|e| format!("cannot form the request to the endpoint: {e}"))?;
        let exchange = async {
            let resp = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("the request to the endpoint failed: {}", chain(&e)))?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut read = Vec::new();
            while strict || read.len() < limit {
                match body.frame().await {
                    None => break,
                    Some(Err(e)) => {
                        return Err(format!("reading the endpoint's response failed: {e}"));
                    }
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            let room = limit - read.len();
                            if strict && data.len() > room {
                                return Err(format!("the response is larger than {limit} bytes"));
                            }
                            read.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                }
            }
            Ok((status, Bytes::from(read)))
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the endpoint did not answer within {} s",
                REQUEST_TIMEOUT.as_secs()
            )),
        }
    }
}

/// Transformation functions (the `Lambda` processor) are called over HTTP: the Lambda
/// event as the JSON body, the function's result as the response.
impl super::processing::Invoker for EndpointClient {
    async fn invoke(&self, url: &str, body: Bytes) -> Result<(u16, Bytes), String> {
        let req = EndpointRequest {
            headers: vec![("Content-Type", "application/json".to_string())],
            body,
        };
        self.post_limited(url, &req, super::processing::LAMBDA_RESPONSE_BYTES, true)
            .await
    }
}

impl Default for EndpointClient {
    fn default() -> Self {
        Self::new()
    }
}

/// An error with its sources (hyper's own text says little: "client error (Connect)").
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::model::HttpBackupMode;
    use std::io::Read;

    fn dest() -> HttpEndpointDestination {
        HttpEndpointDestination {
            url: "http://127.0.0.1:1/".into(),
            name: None,
            access_key: None,
            size_mbs: 5,
            interval_secs: 300,
            content_encoding: ContentEncoding::None,
            common_attributes: Vec::new(),
            retry_secs: 300,
            backup_mode: HttpBackupMode::FailedDataOnly,
            role_arn: None,
            cloudwatch: None,
            processing: None,
        }
    }

    fn header<'a>(req: &'a EndpointRequest, name: &str) -> Option<&'a str> {
        req.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn requests_have_the_protocol_headers_and_body() {
        let recs = vec![
            Bytes::from_static(b"hello"),
            Bytes::from_static(b"\x00\xff"),
        ];
        let req = build_request(&dest(), "rid-1", "arn:x", 1_700_000_000_123, &recs).unwrap();
        assert_eq!(header(&req, "content-type"), Some("application/json"));
        assert_eq!(header(&req, "x-amz-firehose-protocol-version"), Some("1.0"));
        assert_eq!(header(&req, "x-amz-firehose-request-id"), Some("rid-1"));
        assert_eq!(header(&req, "x-amz-firehose-source-arn"), Some("arn:x"));
        for absent in [
            "x-amz-firehose-access-key",
            "x-amz-firehose-common-attributes",
            "content-encoding",
        ] {
            assert_eq!(header(&req, absent), None, "{absent}");
        }
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "requestId": "rid-1",
                "timestamp": 1_700_000_000_123i64,
                "records": [{"data": "aGVsbG8="}, {"data": "AP8="}],
            })
        );
        let empty = build_request(&dest(), "r", "a", 0, &[]).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&empty.body).unwrap();
        assert_eq!(body["records"], serde_json::json!([]));
    }

    #[test]
    fn gzip_access_key_and_common_attributes() {
        let mut d = dest();
        d.content_encoding = ContentEncoding::Gzip;
        d.access_key = Some("secret token".into());
        d.common_attributes = vec![("team".into(), "a\"b".into()), ("env".into(), "ci".into())];
        let req = build_request(&d, "rid", "arn", 5, &[Bytes::from_static(b"x")]).unwrap();
        assert_eq!(header(&req, "content-encoding"), Some("gzip"));
        assert_eq!(
            header(&req, "x-amz-firehose-access-key"),
            Some("secret token")
        );
        let attrs: serde_json::Value =
            serde_json::from_str(header(&req, "x-amz-firehose-common-attributes").unwrap())
                .unwrap();
        assert_eq!(
            attrs,
            serde_json::json!({"commonAttributes": {"team": "a\"b", "env": "ci"}})
        );
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&req.body[..])
            .read_to_end(&mut json)
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(body["records"][0]["data"], "eA==");
        assert_eq!(body["requestId"], "rid");
    }

    #[test]
    fn only_a_200_with_the_same_request_id_is_a_delivery() {
        assert!(check_response(200, br#"{"requestId":"r1","timestamp":1}"#, "r1").is_ok());
        let e = check_response(200, br#"{"requestId":"r2","timestamp":1}"#, "r1").unwrap_err();
        assert_eq!(e.code, "HttpEndpoint.InvalidResponseFromDestination");
        assert!(e.message.contains("\"r2\""), "{}", e.message);
        let e = check_response(200, br#"{"timestamp":1}"#, "r1").unwrap_err();
        assert!(e.message.contains("without a requestId"), "{}", e.message);
        let e = check_response(200, b"ok", "r1").unwrap_err();
        assert!(e.message.contains("not JSON"), "{}", e.message);
        let e = check_response(
            500,
            br#"{"requestId":"r1","timestamp":1,"errorMessage":"disk full"}"#,
            "r1",
        )
        .unwrap_err();
        assert_eq!(e.code, "HttpEndpoint.DestinationException");
        assert!(
            e.message.contains("500") && e.message.contains("disk full"),
            "{}",
            e.message
        );
        // A huge body is quoted only in part.
        let big = vec![b'x'; 10_000];
        let e = check_response(413, &big, "r1").unwrap_err();
        assert!(e.message.len() < 1_000, "{}", e.message.len());
        // Any bytes at all: an error, never a panic.
        for body in [&b"\xff\xfe"[..], b"{", b"[]", b"null", b"{\"requestId\":1}"] {
            assert!(check_response(200, body, "r1").is_err());
        }
    }

    #[test]
    fn failed_records_are_json_lines_with_their_raw_data() {
        let failure = EndpointFailure {
            code: "HttpEndpoint.DestinationException",
            message: "The endpoint answered 503: busy".into(),
        };
        let out = failed_records_object(
            &[Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
            &[10, 11],
            3,
            &failure,
            99,
        );
        let lines: Vec<serde_json::Value> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["rawData"], "YmM=");
        assert_eq!(lines[1]["arrivalTimestamp"], 11);
        assert_eq!(lines[0]["attemptsMade"], 3);
        assert_eq!(lines[0]["errorCode"], "HttpEndpoint.DestinationException");
        assert_eq!(lines[0]["attemptEndingTimestamp"], 99);
    }
}
