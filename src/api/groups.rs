//! The consumer-group routes of the REST API (`/v1/groups/{group}/...?stream=NAME`),
//! thin handlers over [`crate::consumers::groups::GroupService`]. Freshet's own API,
//! specified in `docs/openapi.json` and described in `docs/consumer-groups.md`.
//!
//! The stream is always the `stream` query parameter, so the authentication layer
//! checks a key's stream patterns before any work. Bodies are JSON objects; unknown
//! members, wrong types and bad JSON are 400 in the REST API's error shape
//! (`{"error", "message"}`); a lost lease or an expired worker is 409.

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::ApiError;
use super::rest::{MAX_REST_BODY, RestError};
use super::{AppState, read_body};
use crate::consumers::groups::{GroupError, Holder};

/// Largest consumer-group request body (they are small JSON objects).
const MAX_GROUP_BODY: usize = 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/groups/{group}", get(describe))
        .route("/v1/groups/{group}/join", post(join))
        .route("/v1/groups/{group}/heartbeat", post(heartbeat))
        .route("/v1/groups/{group}/records", post(records))
        .route("/v1/groups/{group}/checkpoint", post(checkpoint))
        .route("/v1/groups/{group}/leave", post(leave))
}

/// The `stream` query parameter, as written (not percent-decoded: stream names need
/// no escapes, and the authentication layer and the handler must see the same name).
pub(super) fn stream_param(query: &str) -> Option<&str> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == "stream")
        .map(|(_, v)| v)
}

/// The stream every group route names in its query.
struct StreamQuery(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for StreamQuery {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            stream_param(parts.uri.query().unwrap_or_default()).map(str::to_string),
        ))
    }
}

impl StreamQuery {
    fn stream(self) -> Result<String, RestError> {
        self.0.filter(|s| !s.is_empty()).ok_or_else(|| {
            ApiError::invalid_argument("the stream query parameter is required").into()
        })
    }
}

impl From<GroupError> for RestError {
    fn from(e: GroupError) -> Self {
        Self::from(ApiError::from_service(&e))
    }
}

/// Reads a JSON body (an empty one is `{}`) into `T`.
async fn body<T: DeserializeOwned>(state: &AppState, req: Request) -> Result<T, RestError> {
    let (mut parts, body) = req.into_parts();
    let body = read_body(state, &mut parts, body, MAX_GROUP_BODY.min(MAX_REST_BODY)).await?;
    let bytes: &[u8] = if body.bytes.is_empty() {
        b"{}"
    } else {
        &body.bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_argument(format!("invalid request body: {e}")).into())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JoinBody {
    worker: Option<String>,
    lease_timeout_ms: Option<i64>,
}

async fn join(
    State(state): State<AppState>,
    Path(group): Path<String>,
    q: StreamQuery,
    req: Request,
) -> Result<Response, RestError> {
    let stream = q.stream()?;
    let b: JoinBody = body(&state, req).await?;
    let out = state
        .groups
        .join(&stream, &group, b.worker, b.lease_timeout_ms)
        .await?;
    Ok(axum::Json(out).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HeartbeatBody {
    worker: String,
    #[serde(default)]
    released: Vec<String>,
}

async fn heartbeat(
    State(state): State<AppState>,
    Path(group): Path<String>,
    q: StreamQuery,
    req: Request,
) -> Result<Response, RestError> {
    let stream = q.stream()?;
    let b: HeartbeatBody = body(&state, req).await?;
    if b.released.len() > 10_000 {
        return Err(ApiError::invalid_argument("released names at most 10000 shards").into());
    }
    let out = state
        .groups
        .heartbeat(&stream, &group, &b.worker, &b.released)
        .await?;
    Ok(axum::Json(out).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RecordsBody {
    worker: String,
    shard_id: String,
    epoch: u64,
    /// Continue after this sequence number instead of the group's checkpoint.
    after: Option<String>,
    limit: Option<usize>,
}

async fn records(
    State(state): State<AppState>,
    Path(group): Path<String>,
    q: StreamQuery,
    req: Request,
) -> Result<Response, RestError> {
    let stream = q.stream()?;
    let b: RecordsBody = body(&state, req).await?;
    let out = state
        .groups
        .records(
            &stream,
            &group,
            Holder {
                worker: &b.worker,
                shard: &b.shard_id,
                epoch: b.epoch,
            },
            b.after.as_deref(),
            b.limit.unwrap_or(1000),
        )
        .await?;
    let records: Vec<_> = out
        .records
        .iter()
        .map(|r| {
            json!({
                "shardId": b.shard_id,
                "sequenceNumber": r.sequence_number,
                "partitionKey": r.partition_key,
                "approximateArrivalTimestamp": r.arrival_ms,
                "data": STANDARD.encode(&r.data),
                "text": std::str::from_utf8(&r.data).ok(),
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "records": records,
        "shardEnd": out.shard_end,
        "millisBehindLatest": out.millis_behind_latest,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CheckpointBody {
    worker: String,
    shard_id: String,
    epoch: u64,
    sequence_number: Option<String>,
    #[serde(default)]
    shard_end: bool,
}

async fn checkpoint(
    State(state): State<AppState>,
    Path(group): Path<String>,
    q: StreamQuery,
    req: Request,
) -> Result<Response, RestError> {
    let stream = q.stream()?;
    let b: CheckpointBody = body(&state, req).await?;
    state
        .groups
        .checkpoint(
            &stream,
            &group,
            Holder {
                worker: &b.worker,
                shard: &b.shard_id,
                epoch: b.epoch,
            },
            b.sequence_number.as_deref(),
            b.shard_end,
        )
        .await?;
    Ok(axum::Json(json!({})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LeaveBody {
    worker: String,
}

async fn leave(
    State(state): State<AppState>,
    Path(group): Path<String>,
    q: StreamQuery,
    req: Request,
) -> Result<Response, RestError> {
    let stream = q.stream()?;
    let b: LeaveBody = body(&state, req).await?;
    state.groups.leave(&stream, &group, &b.worker).await?;
    Ok(axum::Json(json!({})).into_response())
}

async fn describe(
    State(state): State<AppState>,
    Path(group): Path<String>,
    q: StreamQuery,
) -> Result<Response, RestError> {
    let stream = q.stream()?;
    let out = state.groups.describe(&stream, &group).await?;
    Ok(axum::Json(out).into_response())
}
