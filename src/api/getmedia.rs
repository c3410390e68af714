//! Reading video back: GetMedia (Kinesis Video Streams media API) and ListFragments /
//! GetMediaForFragmentList (archived-media API), REST-JSON over `POST /getMedia`,
//! `POST /listFragments`, `POST /getMediaForFragmentList`.
//!
//! GetMedia streams each fragment as a complete MKV document, exactly in the shape of a
//! real AWS response (`PROTOCOLS.md`, GetMedia output): EBML header, unknown-size
//! Segment, the producer's Info and Tracks, Tags with fragment number and timestamps,
//! the Cluster, then Tags with MillisBehindNow and the continuation token. It follows
//! the live edge, waiting for new fragments, and ends after a quiet period.

// Helpers return a ready error `Response` as their `Err`: built at most once per request,
// so its size does not matter.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};

use super::error::ApiError;
use crate::error::ErrorKind;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{AppState, read_body};
use crate::media::mkv_writer::{FragmentDocument, write_error_tags};
use crate::video::fragments::{FragmentMeta, parse_fragment_number};
use crate::video::index::{RangeRule, TimeBase, TimeRange};
use crate::video::{FragmentListing, MediaStart, VideoRef, VideoService, VideoStreamMeta};

/// GetMedia ends after this long without a new fragment.
const LIVE_IDLE_LIMIT: Duration = Duration::from_secs(30);

fn error(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(kind, code, message).into_rest_json()
}

fn invalid(message: impl Into<String>) -> Response {
    error(
        ErrorKind::InvalidArgument,
        "InvalidArgumentException",
        message,
    )
}

async fn read_json(state: &AppState, req: Request) -> Result<Value, Response> {
    let (mut parts, body) = req.into_parts();
    let body = read_body(state, &mut parts, body, 1024 * 1024)
        .await
        .map_err(|e| invalid(e.message))?;
    serde_json::from_slice(&body.bytes)
        .map_err(|e| invalid(format!("The request body is not valid JSON: {e}")))
}

fn stream_of(state: &AppState, doc: &Value) -> Result<VideoStreamMeta, Response> {
    let r = VideoRef {
        name: doc["StreamName"].as_str().map(str::to_string),
        arn: doc["StreamARN"].as_str().map(str::to_string),
    };
    state
        .video
        .get(&r)
        .map_err(|e| ApiError::from(e).into_rest_json())
}

/// The JSON body of a request and the video stream it names.
async fn request(state: &AppState, req: Request) -> Result<(Value, VideoStreamMeta), Response> {
    let doc = read_json(state, req).await?;
    let meta = stream_of(state, &doc)?;
    Ok((doc, meta))
}

fn secs_to_ms(v: &Value) -> Option<i64> {
    v.as_f64().map(|s| (s * 1000.0).round() as i64)
}

/// The GetMedia document of one stored fragment.
fn fragment_document<'a>(
    number: &'a str,
    server_ms: i64,
    meta: &'a FragmentMeta,
    now_ms: i64,
) -> FragmentDocument<'a> {
    FragmentDocument {
        ebml_header: (!meta.ebml_header.is_empty()).then_some(&meta.ebml_header[..]),
        info_and_tracks: &meta.info_and_tracks,
        fragment_number: number,
        server_timestamp_ms: server_ms.max(0) as u64,
        producer_timestamp_ms: meta.producer_ts_ms.max(0) as u64,
        producer_tags: &meta.producer_tags,
        millis_behind_now: (now_ms - server_ms).max(0) as u64,
        continuation_token: number,
    }
}

/// Encodes one stored fragment as a GetMedia document.
fn document(
    number: &str,
    server_ms: i64,
    meta: &FragmentMeta,
    cluster: &[u8],
    now_ms: i64,
) -> Vec<u8> {
    fragment_document(number, server_ms, meta, now_ms).encode(cluster)
}

/// One stored fragment as a GetMedia document in three parts (what comes before the
/// Cluster, the Cluster as stored, without a copy, and what follows it).
fn document_parts(
    number: &str,
    server_ms: i64,
    meta: &FragmentMeta,
    cluster: Bytes,
    now_ms: i64,
) -> [Bytes; 3] {
    let doc = fragment_document(number, server_ms, meta, now_ms);
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    doc.write_head(&mut head);
    doc.write_tail(&mut tail);
    [Bytes::from(head), cluster, Bytes::from(tail)]
}

/// `POST /getMedia`.
pub async fn get_media(State(state): State<AppState>, req: Request) -> Response {
    let (doc, meta) = match request(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let selector = &doc["StartSelector"];
    let video = state.video.clone();
    if meta.retention_hours == 0 {
        // Nothing is stored: whatever the selector, only live fragments can be served.
        let sent = crate::metrics::metrics().video(&meta.name).getmedia_bytes;
        return live_only(video.clone(), video.subscribe_live(&meta), sent);
    }
    let start = match selector["StartSelectorType"].as_str() {
        Some("EARLIEST") => MediaStart::Earliest,
        Some("NOW") => MediaStart::Now,
        Some("FRAGMENT_NUMBER") => MediaStart::FragmentNumber(
            selector["AfterFragmentNumber"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
        Some("CONTINUATION_TOKEN") => MediaStart::ContinuationToken(
            selector["ContinuationToken"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
        Some("SERVER_TIMESTAMP") => match secs_to_ms(&selector["StartTimestamp"]) {
            Some(ms) => MediaStart::ServerTime(ms),
            None => return invalid("StartTimestamp is required for SERVER_TIMESTAMP."),
        },
        Some("PRODUCER_TIMESTAMP") => match secs_to_ms(&selector["StartTimestamp"]) {
            Some(ms) => MediaStart::ProducerTime(ms),
            None => return invalid("StartTimestamp is required for PRODUCER_TIMESTAMP."),
        },
        _ => {
            return invalid(
                "StartSelector.StartSelectorType must be one of FRAGMENT_NUMBER, SERVER_TIMESTAMP, PRODUCER_TIMESTAMP, NOW, EARLIEST, CONTINUATION_TOKEN.",
            );
        }
    };
    let start = match video.media_start(&meta, &start).await {
        Ok(o) => o,
        Err(e) => return ApiError::from(e).into_rest_json(),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let sent = crate::metrics::metrics().video(&meta.name).getmedia_bytes;
    tokio::spawn(async move {
        let mut at = start;
        loop {
            let batch = match video.read_fragments(&meta, at, 16).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(stream = meta.name, error = %e, "GetMedia read failed");
                    let mut out = Vec::new();
                    write_error_tags(&mut out, "INTERNAL_ERROR", 5000);
                    let _ = tx.send(Bytes::from(out)).await;
                    return;
                }
            };
            if batch.is_empty() {
                // At the live edge: wait for the next fragment, or end.
                let before = std::time::Instant::now();
                video.wait_for_fragment(&meta, at, LIVE_IDLE_LIMIT).await;
                if before.elapsed() >= LIVE_IDLE_LIMIT || tx.is_closed() {
                    return;
                }
                continue;
            }
            let now = video.now_ms();
            for (number, server_ms, m, cluster) in batch {
                if let Some((_, o)) = parse_fragment_number(&number) {
                    at = o + 1;
                }
                let doc = document(&number, server_ms, &m, &cluster, now);
                let len = doc.len() as u64;
                if tx.send(Bytes::from(doc)).await.is_err() {
                    return;
                }
                sent.inc_by(len);
            }
        }
    });
    let mut resp = Response::new(Body::new(super::ChannelBody(rx)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    resp
}

/// GetMedia on a stream without retention: relays live fragments as they arrive.
fn live_only(
    video: std::sync::Arc<VideoService>,
    mut live: tokio::sync::broadcast::Receiver<std::sync::Arc<crate::video::LiveFragment>>,
    sent: prometheus_client::metrics::counter::Counter,
) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        loop {
            match tokio::time::timeout(LIVE_IDLE_LIMIT, live.recv()).await {
                Ok(Ok(f)) => {
                    let doc = document(&f.number, f.server_ms, &f.meta, &f.cluster, video.now_ms());
                    let len = doc.len() as u64;
                    if tx.send(Bytes::from(doc)).await.is_err() {
                        return;
                    }
                    sent.inc_by(len);
                }
                // A slow reader skips what it missed, as a live viewer would.
                Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(_)) | Err(_) => return,
            }
        }
    });
    let mut resp = Response::new(Body::new(super::ChannelBody(rx)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    resp
}

#[derive(Deserialize)]
struct Range {
    #[serde(rename = "StartTimestamp")]
    start: f64,
    #[serde(rename = "EndTimestamp")]
    end: f64,
}

/// `POST /listFragments`: fragments whose start lies in a timestamp range (inclusive),
/// at most 1000 per page.
pub async fn list_fragments(State(state): State<AppState>, req: Request) -> Response {
    let (doc, meta) = match request(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let max = doc["MaxResults"].as_u64().unwrap_or(1000).clamp(1, 1000) as usize;
    let selector = &doc["FragmentSelector"];
    let base = match selector["FragmentSelectorType"].as_str() {
        None => None,
        Some("SERVER_TIMESTAMP") => Some(TimeBase::Server),
        Some("PRODUCER_TIMESTAMP") => Some(TimeBase::Producer),
        Some(other) => return invalid(format!("Unknown FragmentSelectorType {other}.")),
    };
    let range: Option<Range> = if selector.is_null() {
        None
    } else {
        match serde_json::from_value(selector["TimestampRange"].clone()) {
            Ok(r) => Some(r),
            Err(_) => {
                return invalid(
                    "FragmentSelector.TimestampRange needs StartTimestamp and EndTimestamp.",
                );
            }
        }
    };
    let listing = FragmentListing {
        base,
        range: range.map(|r| TimeRange::of_seconds(r.start, r.end, RangeRule::StartWithin)),
        next_token: doc["NextToken"].as_str().map(str::to_string),
        max,
    };
    let page = match state.video.list_fragments(&meta, &listing).await {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_rest_json(),
    };
    let out: Vec<Value> = page
        .fragments
        .iter()
        .map(|f| {
            json!({
                "FragmentNumber": f.number,
                "FragmentSizeInBytes": f.entry.size,
                "ProducerTimestamp": f.entry.producer_ms as f64 / 1000.0,
                "ServerTimestamp": f.entry.server_ms as f64 / 1000.0,
                "FragmentLengthInMilliseconds": f.entry.duration_ms,
            })
        })
        .collect();
    let mut body = json!({ "Fragments": out });
    if let Some(t) = page.next_token {
        body["NextToken"] = json!(t);
    }
    axum::Json(body).into_response()
}

/// `POST /getMediaForFragmentList`: the listed fragments (1 to 1000), as GetMedia
/// documents, in the order given, streamed as they are read: each fragment takes its
/// size from the request's own send budget and the server's
/// ([`super::SendBudget`]) before it is read, and gives it back once its bytes are
/// written, so a response holds at most [`super::SEND_REQUEST_BYTES`] (or one
/// fragment) however long it is and however slowly it is read. Every listed fragment
/// must be in the stream's index (else ResourceNotFoundException before any byte is
/// sent); one that expires while the response is under way ends it with GetMedia's
/// error Tags (4000), one that cannot be read with 5000.
pub async fn get_media_for_fragment_list(State(state): State<AppState>, req: Request) -> Response {
    let (doc, meta) = match request(&state, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(list) = doc["Fragments"]
        .as_array()
        .filter(|l| (1..=1000).contains(&l.len()))
    else {
        return invalid("Fragments must list 1 to 1000 fragment numbers.");
    };
    let mut offsets = Vec::with_capacity(list.len());
    for v in list {
        match v
            .as_str()
            .and_then(parse_fragment_number)
            .filter(|(id, _)| *id == meta.stream_id)
        {
            Some((_, o)) => offsets.push(o),
            None => {
                return error(
                    ErrorKind::NotFound,
                    "ResourceNotFoundException",
                    format!("Fragment {v} was not found."),
                );
            }
        }
    }
    let entries = match state.video.fragment_entries(&meta, &offsets).await {
        Ok(e) => e,
        Err(e) => return ApiError::from(e).into_rest_json(),
    };
    let mut sizes = Vec::with_capacity(entries.len());
    for e in entries {
        match e {
            Some(e) => sizes.push(usize::try_from(e.size).unwrap_or(usize::MAX)),
            None => {
                return error(
                    ErrorKind::NotFound,
                    "ResourceNotFoundException",
                    "A listed fragment is no longer available.",
                );
            }
        }
    }
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    let own = super::SendBudget::new(super::SEND_REQUEST_BYTES);
    let server = state.send_budget.clone();
    let video = state.video.clone();
    let sent = crate::metrics::metrics().video(&meta.name).getmedia_bytes;
    tokio::spawn(async move {
        let now = video.now_ms();
        for (o, size) in offsets.into_iter().zip(sizes) {
            // Header, Tags and the stream header come on top of the Cluster.
            let need = size.saturating_add(4096);
            let (Some(mine), Some(ours)) = (own.take(need).await, server.take(need).await) else {
                return;
            };
            let fragment = match video.fragment_at(&meta, o).await {
                Ok(Some(f)) => f,
                Ok(None) => {
                    let _ = tx.send(error_tags("FRAGMENT_NOT_FOUND", 4000)).await;
                    return;
                }
                Err(e) => {
                    tracing::error!(stream = meta.name, error = %e, "GetMediaForFragmentList read failed");
                    let _ = tx.send(error_tags("INTERNAL_ERROR", 5000)).await;
                    return;
                }
            };
            let (number, server_ms, m, cluster) = fragment;
            let parts = document_parts(&number, server_ms, &m, cluster, now);
            let len: usize = parts.iter().map(Bytes::len).sum();
            let [head, cluster, tail] = parts;
            for part in [head, super::budgeted(cluster, vec![mine, ours]), tail] {
                if tx.send(part).await.is_err() {
                    return;
                }
            }
            sent.inc_by(len as u64);
        }
    });
    let mut resp = Response::new(Body::new(super::ChannelBody(rx)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    resp
}

fn error_tags(code: &str, id: u32) -> Bytes {
    let mut out = Vec::new();
    write_error_tags(&mut out, code, id);
    Bytes::from(out)
}
