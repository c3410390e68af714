//! The DynamoDB wire protocol for the lease store: `POST /` with
//! `X-Amz-Target: DynamoDB_20120810.<Operation>`, bodies in AWS JSON 1.0
//! (`application/x-amz-json-1.0`), as in the DynamoDB API reference. (The CloudWatch
//! `PutMetricData` the Kinesis Client Library also calls is `api::cloudwatch`.)
//!
//! The handler is thin: parse the JSON, run the operation on
//! [`crate::leases::LeaseService`] off the async runtime, encode. Errors carry
//! DynamoDB's `__type` namespaces (`api::error::ApiError::into_dynamodb_json`).

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, MAX_KINESIS_BODY, read_body};
use crate::leases::LeaseError;

/// The `X-Amz-Target` prefix of DynamoDB operations.
pub const TARGET_PREFIX: &str = "DynamoDB_20120810.";
const JSON_TYPE: &str = "application/x-amz-json-1.0";

/// The entry point for `POST /` with a DynamoDB target.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let target = super::header_str(&parts.headers, "x-amz-target")
        .unwrap_or("")
        .to_string();
    let body = match read_body(&state, &mut parts, body, MAX_KINESIS_BODY).await {
        Ok(b) => b,
        Err(e) => return e.into_dynamodb_json(None),
    };
    let op = target.strip_prefix(TARGET_PREFIX).unwrap_or("").to_string();
    let Some(service) = state.leases.clone() else {
        return ApiError::unknown_operation("").into_dynamodb_json(None);
    };
    let doc: Value = match serde_json::from_slice(&body.bytes) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return ApiError::serialization("Start of structure or map found where not expected.")
                .into_dynamodb_json(None);
        }
    };
    let result = tokio::task::spawn_blocking(move || service.call(&op, &doc)).await;
    match result {
        Ok(Ok(doc)) => json_ok(&doc),
        Ok(Err(e)) => error_response(e),
        Err(e) => ApiError::internal(e).into_dynamodb_json(None),
    }
}

fn json_ok(doc: &Value) -> Response {
    let mut resp = (StatusCode::OK, serde_json::to_vec(doc).unwrap_or_default()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_TYPE));
    resp
}

fn error_response(e: LeaseError) -> Response {
    let extra = match &e {
        LeaseError::TransactionCanceled(reasons) => Some(json!({
            "CancellationReasons": reasons
                .iter()
                .map(|r| match r {
                    Some(code) => json!({ "Code": code, "Message": "The conditional request failed" }),
                    None => json!({ "Code": "None" }),
                })
                .collect::<Vec<_>>(),
        })),
        _ => None,
    };
    ApiError::from(e).into_dynamodb_json(extra)
}
