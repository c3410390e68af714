//! Camera feed configuration over HTTP (Freshet's own REST API, JSON; errors as
//! `{"error": "<AWS-style type>", "message": "..."}` like `docs/rest-api.md`):
//!
//! - `GET /v1/video/feeds`: every configured feed with its status.
//! - `PUT /v1/video/feeds/{stream}`: add or replace the feed of a video stream, body
//!   `{"RtspUrl": "rtsp://user:pass@camera/path"}` (pull from a camera) or
//!   `{"RtpPort": 5004, "Sdp": "v=0..."}` / `{"RtpPort": 5004, "Codec": "H264",
//!   "PayloadType": 96}` (a sender pushes RTP to that UDP port); optional
//!   `"FragmentMs": 2000`.
//! - `GET /v1/video/feeds/{stream}`: one feed and its status (state, last error,
//!   packets, losses, fragments stored).
//! - `DELETE /v1/video/feeds/{stream}`.
//!
//! Passwords in camera URLs are never returned or logged (`***`).

// Helpers return a ready error `Response` as their `Err`: built at most once per request.
#![allow(clippy::result_large_err)]

use super::error::ApiError;
use crate::error::ErrorKind;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::json;

use super::{AppState, read_body};
use crate::ingest::{FeedConfig, FeedManager, FeedSource};
use crate::video::VideoError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/video/feeds", get(list)).route(
        "/v1/video/feeds/{stream}",
        get(describe).put(put).delete(remove),
    )
}

fn error(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(kind, code, message).into_rest()
}

fn video_error(e: VideoError) -> Response {
    ApiError::from(e).into_rest()
}

fn manager(state: &AppState) -> Result<&std::sync::Arc<FeedManager>, Response> {
    state.feeds.as_ref().ok_or_else(|| {
        error(
            ErrorKind::Unavailable,
            "ServiceUnavailable",
            "Camera ingest is not running on this server.",
        )
    })
}

async fn list(State(state): State<AppState>) -> Response {
    match manager(&state) {
        Ok(m) => axum::Json(json!({ "Feeds": m.list() })).into_response(),
        Err(r) => r,
    }
}

async fn describe(State(state): State<AppState>, Path(stream): Path<String>) -> Response {
    let m = match manager(&state) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match m.get(&stream) {
        Some(info) => axum::Json(info).into_response(),
        None => error(
            ErrorKind::NotFound,
            "ResourceNotFoundException",
            format!("No ingest feed is configured for stream {stream}."),
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct PutFeed {
    rtsp_url: Option<String>,
    rtp_port: Option<u16>,
    sdp: Option<String>,
    codec: Option<String>,
    payload_type: Option<u8>,
    fragment_ms: Option<u32>,
}

async fn put(State(state): State<AppState>, Path(stream): Path<String>, req: Request) -> Response {
    let m = match manager(&state) {
        Ok(m) => m.clone(),
        Err(r) => return r,
    };
    let (mut parts, body) = req.into_parts();
    let body = match read_body(&state, &mut parts, body, 256 * 1024).await {
        Ok(b) => b,
        Err(e) => return e.into_rest(),
    };
    let input: PutFeed = match serde_json::from_slice(&body.bytes) {
        Ok(i) => i,
        Err(e) => {
            return error(
                ErrorKind::InvalidArgument,
                "SerializationException",
                format!("The feed is not valid JSON of the expected shape: {e}"),
            );
        }
    };
    let source = match (input.rtsp_url, input.rtp_port) {
        (Some(url), None) => {
            if input.sdp.is_some() || input.codec.is_some() || input.payload_type.is_some() {
                return error(
                    ErrorKind::InvalidArgument,
                    "InvalidArgumentException",
                    "Sdp, Codec and PayloadType apply to RTP feeds (RtpPort), not to RtspUrl.",
                );
            }
            FeedSource::RtspPull { url }
        }
        (None, Some(port)) => FeedSource::RtpUdp {
            port,
            sdp: input.sdp,
            codec: input.codec,
            payload_type: input.payload_type,
        },
        _ => {
            return error(
                ErrorKind::InvalidArgument,
                "InvalidArgumentException",
                "Give exactly one of RtspUrl and RtpPort.",
            );
        }
    };
    let config = FeedConfig {
        stream_name: stream,
        source,
        fragment_ms: input.fragment_ms.unwrap_or(2_000),
    };
    match m.put(config).await {
        Ok(info) => axum::Json(info).into_response(),
        Err(e) => video_error(e),
    }
}

async fn remove(State(state): State<AppState>, Path(stream): Path<String>) -> Response {
    let m = match manager(&state) {
        Ok(m) => m,
        Err(r) => return r,
    };
    match m.remove(&stream).await {
        Ok(()) => axum::Json(json!({})).into_response(),
        Err(e) => video_error(e),
    }
}
