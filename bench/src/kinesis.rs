//! Kinesis Data Streams wire protocol helpers: building signed `POST /`
//! requests (`X-Amz-Target: Kinesis_20131202.<Op>`, JSON 1.1 bodies) and the
//! control-plane calls the benchmark needs (CreateStream, DescribeStreamSummary,
//! ListShards, GetShardIterator, DeleteStream).

use crate::http::{Conn, Response};
use crate::sigv4::{Signer, amz_date_now};
use serde_json::{Value, json};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
pub const TARGET_PREFIX: &str = "Kinesis_20131202.";

/// Where requests go and how they are signed.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `Host` header value (`host:port`), also part of the signature.
    pub host: String,
    pub signer: Signer,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// An error answer (non-200) from the server, or a transport failure.
#[derive(Debug)]
pub enum CallError {
    Io(std::io::Error),
    Timeout,
    Api {
        status: u16,
        kind: String,
        message: String,
    },
    BadResponse(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Io(e) => write!(f, "I/O error: {e}"),
            CallError::Timeout => write!(f, "request timed out"),
            CallError::Api {
                status,
                kind,
                message,
            } => write!(f, "HTTP {status} {kind}: {message}"),
            CallError::BadResponse(m) => write!(f, "bad response: {m}"),
        }
    }
}

impl std::error::Error for CallError {}

/// Describes a non-200 response: `__type` and `message` if the body is JSON.
pub fn api_error(resp: &Response) -> CallError {
    let (kind, message) = match serde_json::from_slice::<Value>(&resp.body) {
        Ok(v) => (
            v.get("__type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .rsplit('#')
                .next()
                .unwrap_or("")
                .to_string(),
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ),
        Err(_) => (
            String::new(),
            String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)]).into_owned(),
        ),
    };
    CallError::Api {
        status: resp.status,
        kind,
        message,
    }
}

impl Endpoint {
    /// Builds a complete, signed HTTP/1.1 request for `operation`.
    pub fn build_request(&self, operation: &str, body: &[u8]) -> Vec<u8> {
        self.build_target_request(&format!("{TARGET_PREFIX}{operation}"), body)
    }

    /// Builds a complete, signed HTTP/1.1 request for a full `X-Amz-Target` (another
    /// JSON 1.1 service on the same endpoint, such as `KinesisAnalytics_20150814.<Op>`).
    pub fn build_target_request(&self, target: &str, body: &[u8]) -> Vec<u8> {
        let date = amz_date_now();
        let auth = self
            .signer
            .authorization(&self.host, CONTENT_TYPE, &date, target, body);
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: {CONTENT_TYPE}\r\nX-Amz-Target: {target}\r\n\
             X-Amz-Date: {date}\r\nAuthorization: {auth}\r\nUser-Agent: freshet-bench/0.1\r\n\
             Content-Length: {}\r\nConnection: keep-alive\r\n\r\n",
            self.host,
            body.len()
        );
        let mut req = Vec::with_capacity(head.len() + body.len());
        req.extend_from_slice(head.as_bytes());
        req.extend_from_slice(body);
        req
    }

    /// Sends one prepared request on `conn` (reconnecting first if `conn` is
    /// `None`), with the endpoint's timeout. On transport errors and on
    /// `Connection: close` the connection is dropped so the next call redials.
    pub async fn send(
        &self,
        conn: &mut Option<Conn>,
        request: &[u8],
    ) -> Result<Response, CallError> {
        let fut = async {
            if conn.is_none() {
                *conn = Some(Conn::connect(self.addr).await?);
            }
            conn.as_mut().expect("connected").send(request).await
        };
        let result = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(CallError::Io(e)),
            Err(_) => Err(CallError::Timeout),
        };
        match &result {
            Ok(resp) if !resp.close => {}
            _ => *conn = None,
        }
        result
    }

    /// Signs and sends a JSON request and parses the JSON answer; non-200
    /// answers become `CallError::Api`.
    pub async fn call(
        &self,
        conn: &mut Option<Conn>,
        operation: &str,
        body: &Value,
    ) -> Result<Value, CallError> {
        self.call_target(conn, &format!("{TARGET_PREFIX}{operation}"), body)
            .await
    }

    /// [`Endpoint::call`] with a full `X-Amz-Target`.
    pub async fn call_target(
        &self,
        conn: &mut Option<Conn>,
        target: &str,
        body: &Value,
    ) -> Result<Value, CallError> {
        let operation = target.rsplit('.').next().unwrap_or(target);
        let body = serde_json::to_vec(body).expect("JSON serialises");
        let req = self.build_target_request(target, &body);
        let resp = self.send(conn, &req).await?;
        if resp.status != 200 {
            return Err(api_error(&resp));
        }
        if resp.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&resp.body)
            .map_err(|e| CallError::BadResponse(format!("{operation}: {e}")))
    }

    /// CreateStream, then polls DescribeStreamSummary every 100 ms until the
    /// stream is ACTIVE.
    pub async fn create_stream(
        &self,
        stream: &str,
        shards: u32,
        wait_limit: Duration,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = None;
        self.call(
            &mut conn,
            "CreateStream",
            &json!({"StreamName": stream, "ShardCount": shards}),
        )
        .await
        .map_err(|e| format!("CreateStream {stream}: {e}"))?;
        let start = Instant::now();
        loop {
            let v = self
                .call(
                    &mut conn,
                    "DescribeStreamSummary",
                    &json!({"StreamName": stream}),
                )
                .await
                .map_err(|e| format!("DescribeStreamSummary {stream}: {e}"))?;
            let status = v
                .pointer("/StreamDescriptionSummary/StreamStatus")
                .and_then(Value::as_str)
                .unwrap_or("");
            if status == "ACTIVE" {
                return Ok(());
            }
            if start.elapsed() > wait_limit {
                return Err(format!(
                    "stream {stream} not ACTIVE after {wait_limit:?} (status {status:?})"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Lists the shard ids of `stream` (following ListShards pagination).
    pub async fn list_shards(&self, stream: &str) -> Result<Vec<String>, CallError> {
        let mut conn = None;
        let mut ids = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let body = match &token {
                Some(t) => json!({"NextToken": t}),
                None => json!({"StreamName": stream}),
            };
            let v = self.call(&mut conn, "ListShards", &body).await?;
            for shard in v
                .get("Shards")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(id) = shard.get("ShardId").and_then(Value::as_str) {
                    ids.push(id.to_string());
                }
            }
            token = v
                .get("NextToken")
                .and_then(Value::as_str)
                .map(str::to_string);
            if token.is_none() {
                return Ok(ids);
            }
        }
    }

    /// GetShardIterator of the given type (`TRIM_HORIZON`, `LATEST`, ...).
    pub async fn shard_iterator(
        &self,
        conn: &mut Option<Conn>,
        stream: &str,
        shard_id: &str,
        iterator_type: &str,
    ) -> Result<String, CallError> {
        let v = self
            .call(
                conn,
                "GetShardIterator",
                &json!({"StreamName": stream, "ShardId": shard_id, "ShardIteratorType": iterator_type}),
            )
            .await?;
        v.get("ShardIterator")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| CallError::BadResponse("GetShardIterator without ShardIterator".into()))
    }

    /// DeleteStream (best effort; the caller reports the error).
    pub async fn delete_stream(&self, stream: &str) -> Result<(), CallError> {
        let mut conn = None;
        self.call(&mut conn, "DeleteStream", &json!({"StreamName": stream}))
            .await
            .map(|_| ())
    }
}

/// Request body for GetRecords.
pub fn get_records_body(iterator: &str, limit: u32) -> Vec<u8> {
    serde_json::to_vec(&json!({"ShardIterator": iterator, "Limit": limit})).expect("JSON")
}

/// The parts of a GetRecords answer the benchmark uses. Record data is
/// borrowed from the response body where possible (base64 needs no escapes).
#[derive(serde::Deserialize)]
pub struct GetRecordsOutput<'a> {
    #[serde(rename = "NextShardIterator", default)]
    pub next_shard_iterator: Option<String>,
    #[serde(rename = "MillisBehindLatest", default)]
    pub millis_behind_latest: Option<u64>,
    #[serde(rename = "Records", borrow, default)]
    pub records: Vec<RecordData<'a>>,
}

#[derive(serde::Deserialize)]
pub struct RecordData<'a> {
    #[serde(rename = "Data", borrow)]
    pub data: std::borrow::Cow<'a, str>,
}

/// Decoded length of standard base64 text.
pub fn base64_decoded_len(s: &str) -> usize {
    let b = s.as_bytes();
    let pad = b.iter().rev().take(2).filter(|&&c| c == b'=').count();
    (b.len() / 4) * 3
        + match b.len() % 4 {
            0 => 0,
            2 => 1,
            3 => 2,
            _ => 0,
        }
        - pad
}

/// Finds `"FailedRecordCount": N` in a PutRecords answer without parsing the
/// rest of it (the answer carries one entry per record).
pub fn failed_record_count(body: &[u8]) -> Option<u64> {
    json_count(body, "FailedRecordCount")
}

/// The unsigned number a JSON answer gives for `field` (the first occurrence), read
/// without parsing the whole answer.
pub fn json_count(body: &[u8], field: &str) -> Option<u64> {
    let key = format!("\"{field}\"");
    let i = crate::http::find(body, key.as_bytes())? + key.len();
    let rest = &body[i..];
    let mut j = 0;
    while j < rest.len() && (rest[j] == b' ' || rest[j] == b':' || rest[j] == b'\n') {
        j += 1;
    }
    let digits = rest[j..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    std::str::from_utf8(&rest[j..j + digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_failed_count() {
        assert_eq!(
            failed_record_count(br#"{"FailedRecordCount":0,"Records":[]}"#),
            Some(0)
        );
        assert_eq!(
            failed_record_count(br#"{"Records":[{}], "FailedRecordCount" : 12}"#),
            Some(12)
        );
        assert_eq!(failed_record_count(br#"{"Records":[]}"#), None);
    }

    #[test]
    fn decoded_len() {
        for n in 0..20usize {
            use base64::Engine;
            let s = base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
            assert_eq!(base64_decoded_len(&s), n, "{s}");
        }
    }

    #[test]
    fn parses_get_records() {
        let body = br#"{"Records":[{"Data":"aGk=","PartitionKey":"k","SequenceNumber":"1"}],"NextShardIterator":"it","MillisBehindLatest":0}"#;
        let out: GetRecordsOutput = serde_json::from_slice(body).unwrap();
        assert_eq!(out.records.len(), 1);
        assert_eq!(out.records[0].data, "aGk=");
        assert_eq!(out.next_shard_iterator.as_deref(), Some("it"));
        assert_eq!(out.millis_behind_latest, Some(0));
    }
}
