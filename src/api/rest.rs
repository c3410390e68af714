//! A plain JSON REST API for producers and consumers without an AWS SDK, over the same
//! [`StreamService`] as the Kinesis API. Specified in `docs/openapi.json`; described in
//! `docs/rest-api.md`.
//!
//! - `GET /v1/streams`: every data stream, with its status, open shards, retention and
//!   creation time (what the console's stream table shows).
//! - `POST /v1/streams/{name}/records`: one record object or an array of them. Each
//!   record has an optional `partitionKey` (random when absent), an optional
//!   `explicitHashKey`, and exactly one of `data` (any JSON value, stored as its JSON
//!   text), `text` (stored as UTF-8) or `base64` (stored as the decoded bytes).
//! - `GET /v1/streams/{name}/records`: records as JSON lines, from one shard or all
//!   shards, from a position (`start=TRIM_HORIZON|LATEST|AT_SEQUENCE_NUMBER|
//!   AFTER_SEQUENCE_NUMBER|AT_TIMESTAMP`), optionally following new records.
//!
//! Errors are `{"error": "<AWS error type>", "message": "..."}` with 400/404/413/5xx.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get as get_route, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::{AppState, read_body};
use crate::streams::{PutRecordsEntry, RecordInput, StreamError, StreamRef, StreamService};

/// Largest REST request body.
pub const MAX_REST_BODY: usize = 8 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/streams", get_route(list))
        .route("/v1/streams/{name}/records", post(put).get(get))
}

/// `GET /v1/streams`: `{"streams": [{name, arn, status, openShards, retentionHours,
/// createdAt (epoch ms)}]}`, by name. A stream deleted between the listing and its
/// description is left out.
async fn list(State(state): State<AppState>) -> Result<Response, RestError> {
    let svc = &state.streams;
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = svc.list_streams(after.as_deref(), 1000);
        for summary in &page {
            let Ok(d) = svc.describe_stream_summary(&StreamRef::name(summary.stream_name.clone()))
            else {
                continue;
            };
            out.push(json!({
                "name": d.stream_name,
                "arn": d.stream_arn,
                "status": d.stream_status,
                "openShards": d.open_shard_count,
                "retentionHours": d.retention_period_hours,
                "createdAt": (d.stream_creation_timestamp * 1000.0).round() as i64,
            }));
        }
        match (more, page.last()) {
            (true, Some(last)) => after = Some(last.stream_name.clone()),
            _ => break,
        }
    }
    Ok(axum::Json(json!({ "streams": out })).into_response())
}

/// An error in the REST API's shape.
pub(super) struct RestError(ApiError);

impl From<ApiError> for RestError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<StreamError> for RestError {
    fn from(e: StreamError) -> Self {
        Self(ApiError::from(e))
    }
}

fn bad_request(message: impl Into<String>) -> RestError {
    RestError(ApiError::invalid_argument(message))
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        self.0.into_rest()
    }
}

fn parse_record(v: Value) -> Result<RecordInput, RestError> {
    let Value::Object(mut obj) = v else {
        return Err(bad_request("each record must be a JSON object"));
    };
    let partition_key = match obj.remove("partitionKey") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(s)) if (1..=256).contains(&s.chars().count()) => s,
        Some(_) => {
            return Err(bad_request(
                "partitionKey must be a string of 1 to 256 characters",
            ));
        }
    };
    let explicit_hash_key = match obj.remove("explicitHashKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(bad_request("explicitHashKey must be a decimal string")),
    };
    let mut payloads = Vec::new();
    if let Some(v) = obj.remove("data") {
        payloads.push(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()));
    }
    if let Some(v) = obj.remove("text") {
        let Value::String(s) = v else {
            return Err(bad_request("text must be a string"));
        };
        payloads.push(Bytes::from(s));
    }
    if let Some(v) = obj.remove("base64") {
        let decoded = v
            .as_str()
            .and_then(|s| STANDARD.decode(s).ok())
            .ok_or_else(|| bad_request("base64 must be a base64 string"))?;
        payloads.push(Bytes::from(decoded));
    }
    if payloads.len() != 1 {
        return Err(bad_request(
            "each record needs exactly one of data, text or base64",
        ));
    }
    if let Some(extra) = obj.keys().next() {
        return Err(bad_request(format!("unknown record field {extra:?}")));
    }
    Ok(RecordInput {
        partition_key,
        explicit_hash_key,
        data: payloads.pop().unwrap_or_default(),
    })
}

async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Result<Response, RestError> {
    let (mut parts, body) = req.into_parts();
    let body = read_body(&state, &mut parts, body, MAX_REST_BODY).await?;
    let doc: Value = serde_json::from_slice(&body.bytes)
        .map_err(|e| bad_request(format!("body is not valid JSON: {e}")))?;
    drop(body);
    let items = match doc {
        Value::Array(items) => items,
        other => vec![other],
    };
    if items.is_empty() || items.len() > 500 {
        return Err(bad_request("send between 1 and 500 records"));
    }
    let records = items
        .into_iter()
        .map(parse_record)
        .collect::<Result<Vec<_>, _>>()?;
    let result = state
        .streams
        .put_records(&StreamRef::name(name), records)
        .await?;
    let records: Vec<Value> = result
        .entries
        .iter()
        .map(|e| match e {
            PutRecordsEntry::Ok { sequence } => json!({
                "shardId": crate::streams::model::shard_id(sequence.shard_ordinal),
                "sequenceNumber": sequence.encode(),
            }),
            PutRecordsEntry::Failed {
                error_code,
                error_message,
                ..
            } => json!({"errorCode": error_code, "errorMessage": error_message}),
        })
        .collect();
    Ok(axum::Json(json!({"failedRecordCount": result.failed, "records": records})).into_response())
}

/// Query of `GET /v1/streams/{name}/records`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadQuery {
    /// One shard id; all shards when absent.
    shard: Option<String>,
    /// TRIM_HORIZON (default), LATEST, AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, AT_TIMESTAMP.
    start: Option<String>,
    sequence_number: Option<String>,
    /// Epoch milliseconds, for AT_TIMESTAMP.
    timestamp: Option<i64>,
    /// Most records to return (default 1000; 0 = no limit when following).
    limit: Option<usize>,
    /// Keep the response open and send new records as they arrive.
    #[serde(default)]
    follow: bool,
    /// With `follow`, end the response after this many seconds without records
    /// (default 30, at most 3600).
    idle_timeout: Option<u64>,
}

async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ReadQuery>,
) -> Result<Response, RestError> {
    let svc = state.streams.clone();
    let stream = StreamRef::name(name.clone());
    let start = q
        .start
        .clone()
        .unwrap_or_else(|| "TRIM_HORIZON".into())
        .to_ascii_uppercase();
    let shards: Vec<String> = match &q.shard {
        Some(s) => vec![s.clone()],
        None => svc
            .list_shards(Some(&stream), None, None, Some(10_000), None)?
            .0
            .into_iter()
            .map(|s| s.shard_id)
            .collect(),
    };
    let mut cursors = VecDeque::new();
    for shard in &shards {
        let it = svc
            .get_shard_iterator(
                &stream,
                shard,
                &start,
                q.sequence_number.as_deref(),
                q.timestamp,
            )
            .await?;
        cursors.push_back((shard.clone(), it));
    }
    let limit = match q.limit {
        Some(0) if q.follow => usize::MAX,
        Some(n) => n.clamp(1, 100_000),
        None if q.follow => usize::MAX,
        None => 1000,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let idle = Duration::from_secs(q.idle_timeout.unwrap_or(30).min(3600));
    tokio::spawn(read_loop(svc, stream, cursors, limit, q.follow, idle, tx));
    let mut resp = Response::new(Body::new(super::ChannelBody(rx)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

/// Reads shards round-robin, sending JSON lines, until `limit` records, the end of the
/// data (unless following), an idle timeout, or the client going away. Follows child
/// shards when a shard closes.
async fn read_loop(
    svc: Arc<StreamService>,
    stream: StreamRef,
    mut cursors: VecDeque<(String, String)>,
    limit: usize,
    follow: bool,
    idle: Duration,
    tx: mpsc::Sender<Bytes>,
) {
    let mut sent = 0usize;
    let mut idle_since = tokio::time::Instant::now();
    let mut seen_children = std::collections::HashSet::new();
    loop {
        let mut progressed = false;
        let mut all_caught_up = true;
        for _ in 0..cursors.len() {
            let Some((shard, it)) = cursors.pop_front() else {
                break;
            };
            let want = (limit - sent).min(10_000);
            let out = match svc.get_records(&it, Some(want)).await {
                Ok(o) => o,
                Err(e) => {
                    let e = ApiError::from(e);
                    if let Some(detail) = &e.detail {
                        tracing::error!(detail, "followed read failed");
                    }
                    let line = json!({"error": e.code, "message": e.message});
                    let _ = tx.send(Bytes::from(format!("{line}\n"))).await;
                    return;
                }
            };
            if out.millis_behind_latest > 0 {
                all_caught_up = false;
            }
            if !out.records.is_empty() {
                progressed = true;
                let mut chunk = String::new();
                for r in &out.records {
                    let line = json!({
                        "shardId": shard,
                        "sequenceNumber": r.sequence_number,
                        "partitionKey": r.partition_key,
                        "approximateArrivalTimestamp": r.arrival_ms,
                        "data": STANDARD.encode(&r.data),
                        "text": std::str::from_utf8(&r.data).ok(),
                    });
                    chunk.push_str(&line.to_string());
                    chunk.push('\n');
                }
                sent += out.records.len();
                if tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
            }
            if sent >= limit {
                return;
            }
            match out.next_shard_iterator {
                Some(next) => cursors.push_back((shard, next)),
                None => {
                    for child in out.child_shards.unwrap_or_default() {
                        if seen_children.insert(child.shard_id.clone())
                            && let Ok(it) = svc
                                .get_shard_iterator(
                                    &stream,
                                    &child.shard_id,
                                    "TRIM_HORIZON",
                                    None,
                                    None,
                                )
                                .await
                        {
                            cursors.push_back((child.shard_id, it));
                        }
                    }
                }
            }
        }
        if cursors.is_empty() {
            return;
        }
        if progressed {
            idle_since = tokio::time::Instant::now();
            continue;
        }
        if !follow && all_caught_up {
            return;
        }
        if idle_since.elapsed() >= idle || tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
