//! The node-to-node endpoint of the shared data path: a write forwarded by another
//! node to this shard owner (`POST /_freshet/cluster/append`, binary body, the
//! cluster's token in `x-freshet-cluster-token`). Answers 200 with the first offset
//! (8 bytes, big-endian), 409 when this node does not own the shard, 401 for a bad
//! token, 400 for a malformed body, 503 when the write could not be committed, 404
//! when this node is not part of a shared cluster.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::cluster::records::{ForwardOutcome, MAX_FORWARD_BYTES, TOKEN_HEADER};

pub async fn forwarded_append(State(state): State<AppState>, req: Request) -> Response {
    let Some(log) = state.shared_log.clone() else {
        return (StatusCode::NOT_FOUND, "not a node of a shared cluster").into_response();
    };
    let token = super::header_str(req.headers(), TOKEN_HEADER).map(str::to_string);
    let body = match axum::body::to_bytes(req.into_body(), MAX_FORWARD_BYTES).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "append too large").into_response(),
    };
    match log.serve_forwarded(token.as_deref(), body).await {
        ForwardOutcome::Committed(first) => {
            (StatusCode::OK, Body::from(first.to_be_bytes().to_vec())).into_response()
        }
        ForwardOutcome::NotOwner => (StatusCode::CONFLICT, "not the owner").into_response(),
        ForwardOutcome::BadToken => (StatusCode::UNAUTHORIZED, "bad cluster token").into_response(),
        ForwardOutcome::Malformed(e) => (StatusCode::BAD_REQUEST, e).into_response(),
        ForwardOutcome::Failed(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}
