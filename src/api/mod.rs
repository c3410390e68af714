//! HTTP only: routing, request ids, body limits, and the protocol front ends.
//!
//! - [`kinesis`]: the Kinesis Data Streams API (`POST /`, `X-Amz-Target`, AWS JSON 1.1
//!   and CBOR), as in the Kinesis API reference.
//! - [`rest`]: a plain JSON REST API for producers without an AWS SDK.
//! - [`video`]: the Kinesis Video Streams control plane (REST-JSON, `POST /<op>`).
//! - [`dynamodb`]: the DynamoDB subset of the lease store (`POST /`, JSON 1.0) and
//!   CloudWatch PutMetricData, accepted.
//! - [`error`]: the single mapping from domain errors to wire errors.
//!
//! Handlers are thin: decode, call a domain service, encode. Request bodies are read
//! with a hard size limit (a declared oversize body is refused before it is read into
//! memory) and under a global in-flight byte budget, so memory stays bounded however
//! many clients push at once.

pub mod analytics;
pub mod auth;
pub mod cbor;
pub mod cloudwatch;
pub mod cluster;
pub mod console;
pub mod cors;
pub mod dynamodb;
pub mod endpoint;
pub mod error;
pub mod eventstream;
pub mod feeds;
pub mod firehose;
pub mod getmedia;
pub mod groups;
pub mod kinesis;
pub mod listener;
pub mod playback;
pub mod putmedia;
pub mod rest;
pub mod video;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::streams::StreamService;
use crate::video::VideoService;
use error::ApiError;

/// Largest request body accepted by the Kinesis API (PutRecords: 5 MiB of data,
/// base64-encoded, plus keys and JSON framing).
pub const MAX_KINESIS_BODY: usize = 10 * 1024 * 1024;

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    pub streams: Arc<StreamService>,
    /// Enhanced fan-out subscriptions (SubscribeToShard) over `streams`.
    pub fanout: Arc<crate::consumers::FanOut>,
    /// Consumer groups (the REST API's `/v1/groups`) over `streams`.
    pub groups: Arc<crate::consumers::groups::GroupService>,
    pub video: Arc<VideoService>,
    /// Bytes of request bodies being held in memory at once, across all requests.
    /// A request waits for its share before its body is read: backpressure instead
    /// of unbounded buffering under overload.
    pub body_budget: Arc<Semaphore>,
    /// Memory for PutMedia fragments still being received, across all connections.
    pub media_budget: MediaBudget,
    /// Memory for fragments being sent by GetMediaForFragmentList, across all requests.
    pub send_budget: SendBudget,
    /// Camera feeds (RTSP pull, RTP on UDP); `None` where ingest does not run.
    pub feeds: Option<Arc<crate::ingest::FeedManager>>,
    /// Remuxed playback segments (HLS/DASH), shared by all players.
    pub segments: Arc<playback::SegmentCache>,
    /// The public base URL (`--advertise-url`), checked and without a trailing `/`;
    /// `None` derives URLs from each request ([`endpoint::base_url`]).
    pub advertise_url: Option<Arc<str>>,
    /// Which browser pages may call (`[cors]`).
    pub cors: Arc<cors::CorsPolicy>,
    /// The keys requests must be signed with; `None`: every request is accepted.
    pub auth: Option<Arc<auth::EdgeAuth>>,
    /// The HTTP listener's connections, for `/ready` (`None` without a listener).
    pub connections: Option<listener::ConnectionGauge>,
    /// Delivery streams (the Firehose API); `None` where they do not run.
    pub delivery: Option<Arc<crate::delivery::DeliveryService>>,
    /// Analytics applications (the Kinesis Analytics API); `None` where they do not run.
    pub analytics: Option<Arc<crate::analytics::AnalyticsService>>,
    /// The lease store (the DynamoDB API subset KCL uses); `None` where it does not run.
    pub leases: Option<Arc<crate::leases::LeaseService>>,
    /// Scale-out: the shared data path, which serves writes other nodes forward here.
    pub shared_log: Option<Arc<crate::cluster::records::SharedLog>>,
}

/// A byte budget shared by long-lived streaming uploads (PutMedia), counted in KiB.
/// Each connection holds a [`MediaShare`] that grows before it reads more of its body
/// and shrinks once a fragment is stored.
#[derive(Clone, Debug)]
pub struct MediaBudget {
    semaphore: Arc<Semaphore>,
    total_kib: usize,
}

/// How long, in all, a connection may wait for budget while it receives one fragment
/// before giving up (so that connections holding half-received fragments cannot wait
/// on each other forever, nor take turns doing so).
pub const MEDIA_BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl MediaBudget {
    pub fn new(total_bytes: usize) -> Self {
        let total_kib = total_bytes.div_ceil(1024).max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(total_kib)),
            total_kib,
        }
    }

    /// An empty share of this budget.
    pub fn share(&self) -> MediaShare {
        MediaShare {
            budget: self.clone(),
            held: None,
            waited: std::time::Duration::ZERO,
        }
    }

    /// KiB not held by any connection.
    pub fn available_kib(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// The whole budget, in KiB.
    pub fn total_kib(&self) -> usize {
        self.total_kib
    }
}

/// One connection's part of a [`MediaBudget`]; released when dropped.
#[derive(Debug)]
pub struct MediaShare {
    budget: MediaBudget,
    held: Option<OwnedSemaphorePermit>,
    /// Time spent waiting since the share last gave budget back (a fragment finished).
    waited: std::time::Duration,
}

/// Why a share could not grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetError {
    /// More than the whole budget was asked for.
    Exceeds,
    /// Not enough was freed within [`MEDIA_BUDGET_WAIT`] in all since the share last
    /// gave budget back.
    TimedOut,
}

impl MediaShare {
    pub fn held_bytes(&self) -> usize {
        self.held.as_ref().map_or(0, |p| p.num_permits() * 1024)
    }

    /// Grows the share to at least `bytes`, waiting for other connections to release.
    /// Waits add up until the share next gives budget back: a connection that keeps
    /// getting a little and waiting again still ends after [`MEDIA_BUDGET_WAIT`].
    pub async fn grow_to(&mut self, bytes: usize) -> Result<(), BudgetError> {
        let want = bytes.div_ceil(1024);
        let have = self.held.as_ref().map_or(0, |p| p.num_permits());
        if want <= have {
            return Ok(());
        }
        if want > self.budget.total_kib {
            return Err(BudgetError::Exceeds);
        }
        let more = u32::try_from(want - have).map_err(|_| BudgetError::Exceeds)?;
        let left = MEDIA_BUDGET_WAIT.saturating_sub(self.waited);
        let started = tokio::time::Instant::now();
        let acquired =
            tokio::time::timeout(left, self.budget.semaphore.clone().acquire_many_owned(more))
                .await;
        self.waited += started.elapsed();
        let permit = acquired
            .map_err(|_| BudgetError::TimedOut)?
            .map_err(|_| BudgetError::TimedOut)?;
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        Ok(())
    }

    /// Shrinks the share to `bytes` (rounded up to KiB), releasing the rest.
    pub fn shrink_to(&mut self, bytes: usize) {
        let keep = bytes.div_ceil(1024);
        if let Some(held) = &mut self.held {
            let have = held.num_permits();
            if have > keep {
                self.waited = std::time::Duration::ZERO;
            }
            if keep == 0 {
                self.held = None;
            } else if have > keep {
                drop(held.split(have - keep));
            }
        }
    }
}

/// Memory for media being sent (GetMediaForFragmentList), counted in KiB: taken before
/// a fragment is read, given back when the HTTP layer drops its bytes (written to the
/// socket, or the client gone). One budget is server-wide; each request also has one of
/// its own, so a slow reader holds at most its cap and waits for its socket.
#[derive(Clone, Debug)]
pub struct SendBudget(MediaBudget);

/// What one response may have in flight (read, not yet written to its socket).
pub const SEND_REQUEST_BYTES: usize = 16 * 1024 * 1024;

impl SendBudget {
    pub fn new(total_bytes: usize) -> Self {
        Self(MediaBudget::new(total_bytes))
    }

    /// Takes `bytes` of the budget (all of it when `bytes` is more: a fragment larger
    /// than the budget goes alone), waiting for others to give theirs back. `None` only
    /// if the budget was closed (it never is).
    pub async fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let want = bytes.div_ceil(1024).clamp(1, self.0.total_kib);
        let want = u32::try_from(want).unwrap_or(u32::MAX);
        self.0.semaphore.clone().acquire_many_owned(want).await.ok()
    }

    /// KiB not held by any response.
    pub fn available_kib(&self) -> usize {
        self.0.available_kib()
    }
}

/// Bytes that hold send budget until they are dropped.
struct Budgeted {
    bytes: Bytes,
    _held: Vec<OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for Budgeted {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// `bytes` (no copy), with `held` given back when the last clone is dropped.
pub fn budgeted(bytes: Bytes, held: Vec<OwnedSemaphorePermit>) -> Bytes {
    Bytes::from_owner(Budgeted { bytes, _held: held })
}

/// Total in-flight request-body budget.
pub const BODY_BUDGET_BYTES: usize = 512 * 1024 * 1024;

impl AppState {
    pub fn new(streams: Arc<StreamService>, video: Arc<VideoService>) -> Self {
        Self {
            fanout: crate::consumers::FanOut::new(
                streams.clone(),
                crate::consumers::DEFAULT_LIFETIME,
            ),
            groups: Arc::new(crate::consumers::groups::GroupService::new(
                streams.clone(),
                streams.catalog(),
                streams.clock(),
            )),
            streams,
            video,
            body_budget: Arc::new(Semaphore::new(BODY_BUDGET_BYTES / 1024)),
            media_budget: MediaBudget::new(1024 * 1024 * 1024),
            send_budget: SendBudget::new(256 * 1024 * 1024),
            segments: Arc::new(playback::SegmentCache::default()),
            feeds: None,
            advertise_url: None,
            cors: Arc::new(cors::CorsPolicy::default()),
            auth: None,
            connections: None,
            delivery: None,
            analytics: None,
            leases: None,
            shared_log: None,
        }
    }

    /// The base URL to hand out in the response to a request with these parts.
    pub fn base_url(&self, parts: &axum::http::request::Parts) -> String {
        endpoint::request_base_url(
            self.advertise_url.as_deref(),
            &parts.headers,
            &parts.uri,
            &parts.extensions,
        )
    }
}

/// Builds the router with every API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", post(aws_json).get(root))
        .route(
            "/service/GraniteServiceVersion20100801/operation/{operation}",
            post(cloudwatch::handle),
        )
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route(
            crate::cluster::records::APPEND_PATH,
            post(cluster::forwarded_append),
        )
        .route("/console", get(console::page))
        .route("/console/", get(console::page))
        .route("/console/{*asset}", get(console::asset))
        .route("/putMedia", post(putmedia::handle))
        .route("/getMedia", post(getmedia::get_media))
        .route("/listFragments", post(getmedia::list_fragments))
        .route(
            "/getMediaForFragmentList",
            post(getmedia::get_media_for_fragment_list),
        )
        .route(
            "/getHLSStreamingSessionURL",
            post(playback::get_hls_session_url),
        )
        .route(
            "/getDASHStreamingSessionURL",
            post(playback::get_dash_session_url),
        )
        .route("/getClip", post(playback::get_clip))
        .route("/getImages", post(playback::get_images))
        .route(
            "/hls/v1/getHLSMasterPlaylist.m3u8",
            get(playback::hls_master),
        )
        .route("/hls/v1/getHLSMediaPlaylist.m3u8", get(playback::hls_media))
        .route("/hls/v1/getMP4InitFragment.mp4", get(playback::hls_init))
        .route("/hls/v1/getMP4MediaFragment.mp4", get(playback::hls_fmp4))
        .route("/hls/v1/getTSFragment.ts", get(playback::hls_ts))
        .route("/dash/v1/getDASHManifest.mpd", get(playback::dash_manifest))
        .route("/dash/v1/getMP4InitFragment.mp4", get(playback::dash_init))
        .route("/dash/v1/getMP4MediaFragment.mp4", get(playback::dash_fmp4))
        .route("/{operation}", post(video::handle))
        .merge(rest::routes())
        .merge(groups::routes())
        .merge(feeds::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth::layer))
        .layer(middleware::from_fn_with_state(
            state.cors.clone(),
            cors::layer,
        ))
        .layer(middleware::from_fn(request_ids))
        .with_state(state)
}

/// A header's value as text (`None` when absent or not visible ASCII).
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The strings of a JSON array (none when it is not one).
pub(crate) fn json_strings(value: Option<&serde_json::Value>) -> Vec<String> {
    value
        .and_then(serde_json::Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(serde_json::Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// `POST /`: Firehose targets to the Firehose API, everything else to Kinesis (one
/// prefix comparison on the header's bytes, no allocation, on the Kinesis path).
async fn aws_json(state: State<AppState>, req: Request) -> Response {
    let firehose = req
        .headers()
        .get("x-amz-target")
        .is_some_and(|t| t.as_bytes().starts_with(firehose::TARGET_PREFIX.as_bytes()));
    let target = req.headers().get("x-amz-target").map(|t| t.as_bytes());
    if firehose {
        firehose::handle(state, req).await
    } else if target.is_some_and(|t| t.starts_with(dynamodb::TARGET_PREFIX.as_bytes())) {
        dynamodb::handle(state, req).await
    } else if target.is_some_and(|t| t.starts_with(cloudwatch::TARGET_PREFIX.as_bytes()))
        || cloudwatch::is_query(req.headers())
    {
        cloudwatch::handle(state, req).await
    } else if req.headers().get("x-amz-target").is_some_and(|t| {
        t.as_bytes()
            .starts_with(analytics::TARGET_PREFIX.as_bytes())
    }) {
        analytics::handle(state, req).await
    } else {
        kinesis::handle(state, req).await
    }
}

/// `GET /metrics`: Prometheus / OpenMetrics text ([`crate::metrics`]).
async fn metrics(State(state): State<AppState>) -> Response {
    let mut scrape = crate::metrics::Scrape::default();
    for (name, bytes) in state.streams.storage_bytes() {
        scrape.storage.push((name, "data", bytes));
    }
    for (name, bytes) in state.video.storage_bytes() {
        scrape.storage.push((name, "video", bytes));
    }
    if let Some(feeds) = &state.feeds {
        for feed in feeds.list() {
            scrape
                .feed_packets_lost
                .push((feed.stream_name, feed.status.packets_lost));
        }
    }
    scrape.open_connections = state.connections.as_ref().map(|g| g.open().0 as u64);
    if let Some(analytics) = &state.analytics {
        scrape.analytics = analytics.figures();
    }
    if let Some(delivery) = &state.delivery {
        scrape.delivery = delivery.figures();
    }
    let body = crate::metrics::metrics().encode(scrape);
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// `GET /health`: up, and how requests are authenticated (loudly: not at all, yet).
async fn health(State(state): State<AppState>) -> Response {
    let body = match &state.auth {
        Some(auth) => serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "authentication": "sigv4",
            "keys": auth.keys.len(),
            "fragment_index_rebuilds": state.video.index_rebuilds(),
        }),
        None => serde_json::json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "authentication": "none",
            "fragment_index_rebuilds": state.video.index_rebuilds(),
            "warning": "requests are not authenticated: anyone who can reach this port can read, write and delete every stream (docs/security.md)",
        }),
    };
    axum::Json(body).into_response()
}

/// `GET /ready`: 200 while the server takes requests, 503 with the reasons when it is
/// saturated: nine tenths of its connections open, or less than a tenth of the
/// request-body or PutMedia memory budget free.
async fn ready(State(state): State<AppState>) -> Response {
    let mut reasons = Vec::new();
    if let Some(gauge) = &state.connections {
        let (open, max) = gauge.open();
        if open * 10 >= max * 9 {
            reasons.push(format!("{open} of {max} connections are open"));
        }
    }
    let body_free = state.body_budget.available_permits();
    if body_free * 10 < BODY_BUDGET_BYTES / 1024 {
        reasons.push(format!(
            "{body_free} KiB of the request-body budget are free"
        ));
    }
    let media_free = state.media_budget.available_kib();
    if media_free * 10 < state.media_budget.total_kib() {
        reasons.push(format!("{media_free} KiB of the PutMedia budget are free"));
    }
    let ready = reasons.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({ "ready": ready, "reasons": reasons })),
    )
        .into_response()
}

/// `GET /`: browsers (`Accept: text/html`) are sent to the console; other clients get
/// a plain-text banner.
async fn root(headers: HeaderMap) -> Response {
    if console::wants_html(&headers) {
        return (
            StatusCode::FOUND,
            [(header::LOCATION, "/console"), (header::VARY, "Accept")],
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::VARY, "Accept"),
        ],
        concat!(
            "Freshet ",
            env!("CARGO_PKG_VERSION"),
            "\nKinesis Data Streams API: POST / with X-Amz-Target: Kinesis_20131202.<Operation>\n",
            "REST API: /v1/streams/{name}/records (see docs/rest-api.md)\n",
            "Video console (in a browser): /console\n"
        ),
    )
        .into_response()
}

async fn not_found(State(_): State<AppState>, req: Request) -> Response {
    ApiError::not_found(format!(
        "No route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_rest_json()
}

/// Adds `x-amzn-RequestId` and `x-amz-id-2` to every response, as AWS does.
/// Internal failures are logged here, with the request id the client got (and their
/// text never reaches the client: [`error::InternalDetail`]).
/// Every line logged while the request is handled is in its `request` span (JSON logs:
/// `span.request_id`); then one line per request with `request_id`: at debug, at info
/// for a client error, at warn for a server error (with AWS's error type), never the
/// body or a credential. With `--otlp-endpoint`, the request is also a span
/// ([`request_span`]).
async fn request_ids(req: Request, next: Next) -> Response {
    use tracing::Instrument;
    let id = uuid::Uuid::new_v4();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let started_at = std::time::SystemTime::now();
    let traced = crate::telemetry::enabled().then(|| {
        (
            header_str(req.headers(), "x-amz-target").map(str::to_string),
            header_str(req.headers(), "traceparent").and_then(crate::telemetry::parse_traceparent),
        )
    });
    let span = tracing::info_span!("request", request_id = %id);
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    let error_type = resp
        .headers()
        .get("x-amzn-ErrorType")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    if let Some(error::InternalDetail(detail)) = resp.extensions_mut().remove() {
        tracing::error!(request_id = %id, %method, path, status, detail, "internal failure");
    } else if status >= 500 {
        tracing::warn!(request_id = %id, %method, path, status, error_type, millis, "request failed");
    } else if status >= 400 {
        tracing::info!(request_id = %id, %method, path, status, error_type, millis, "request refused");
    } else {
        tracing::debug!(request_id = %id, %method, path, status, millis, "request");
    }
    if let Some((target, parent)) = traced {
        crate::telemetry::record(request_span(
            id,
            &method,
            &path,
            target,
            parent,
            status,
            &error_type,
            started_at,
        ));
    }
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        headers.insert("x-amzn-RequestId", v);
    }
    use base64::Engine;
    // AWS's x-amz-id-2 decodes to 64-80 bytes: the request id and 48 random bytes.
    let mut raw = Vec::with_capacity(64);
    raw.extend_from_slice(id.as_bytes());
    for _ in 0..3 {
        raw.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    let id2 = base64::engine::general_purpose::STANDARD.encode(raw);
    if let Ok(v) = HeaderValue::from_str(&id2) {
        headers.insert("x-amz-id-2", v);
    }
    resp
}

/// The span of one finished request: named `Service/Operation` for the JSON 1.1 APIs
/// (from `X-Amz-Target`), else `METHOD /route`; in the caller's trace when it sent a
/// `traceparent`, else in a trace whose id is the request id.
#[allow(clippy::too_many_arguments)]
fn request_span(
    id: uuid::Uuid,
    method: &axum::http::Method,
    path: &str,
    target: Option<String>,
    parent: Option<([u8; 16], [u8; 8])>,
    status: u16,
    error_type: &str,
    started_at: std::time::SystemTime,
) -> crate::telemetry::RequestSpan {
    use crate::telemetry::{AttrValue, RequestSpan, route_of};
    let route = if status == 404 && error_type.is_empty() {
        String::new()
    } else {
        route_of(path)
    };
    let mut attributes = vec![
        ("http.request.method", AttrValue::Str(method.to_string())),
        (
            "http.response.status_code",
            AttrValue::Int(i64::from(status)),
        ),
        ("aws.request_id", AttrValue::Str(id.to_string())),
    ];
    if !route.is_empty() {
        attributes.push(("http.route", AttrValue::Str(route.clone())));
    }
    let name = match target.as_deref().and_then(|t| t.split_once('.')) {
        Some((service, operation)) => {
            attributes.push(("rpc.system", AttrValue::Str("aws-api".into())));
            attributes.push(("rpc.service", AttrValue::Str(service.to_string())));
            attributes.push(("rpc.method", AttrValue::Str(operation.to_string())));
            format!("{service}/{operation}")
        }
        None => format!("{method} {route}").trim_end().to_string(),
    };
    if !error_type.is_empty() {
        let short = error_type.split(':').next().unwrap_or(error_type);
        attributes.push(("error.type", AttrValue::Str(short.to_string())));
    }
    let span_bytes = *uuid::Uuid::new_v4().as_bytes();
    let (trace_id, parent_span_id) = match parent {
        Some((trace, span)) => (trace, Some(span)),
        None => (*id.as_bytes(), None),
    };
    RequestSpan {
        name,
        trace_id,
        span_id: span_bytes[..8].try_into().unwrap_or([1; 8]),
        parent_span_id,
        start: started_at,
        end: std::time::SystemTime::now(),
        attributes,
        error: status >= 500,
    }
}

/// A request body in memory, holding its share of the in-flight budget.
pub struct LimitedBody {
    pub bytes: Bytes,
    _permit: Option<OwnedSemaphorePermit>,
}

/// How long a request body may take before [`MIN_BODY_BYTES_PER_SEC`] applies.
pub const BODY_RATE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// The slowest a request body may arrive on average once [`BODY_RATE_GRACE`] has
/// passed: 1 KiB/s, a hundredth of a slow mobile link, and far above what a
/// slowloris client sends.
pub const MIN_BODY_BYTES_PER_SEC: u64 = 1024;

/// Reads a request body of at most `limit` bytes. A body declared larger than `limit`
/// is refused without being stored; one that turns out larger while streaming is
/// refused as soon as it crosses the limit.
///
/// Budget is taken from the server-wide in-flight budget as bytes arrive, not for the
/// declared length up front, so a client that declares 10 MiB and sends nothing holds
/// nothing. A body must arrive within [`BODY_RATE_GRACE`] plus its length at
/// [`MIN_BODY_BYTES_PER_SEC`]; a slower one is answered 408 and its connection closed,
/// so that slow clients cannot hold budget, workers or sockets that others need.
/// A call of an AWS JSON 1.1 service beside Kinesis on `POST /` (Firehose, Kinesis
/// Analytics): the body read under the Kinesis limits, `run` with the target and the
/// body, its answer or error in JSON 1.1.
pub(crate) async fn serve_json11(
    state: AppState,
    req: Request,
    run: impl AsyncFnOnce(&AppState, &str, &[u8]) -> Result<serde_json::Value, ApiError>,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let target = header_str(&parts.headers, "x-amz-target")
        .unwrap_or("")
        .to_string();
    let body = match read_body(&state, &mut parts, body, MAX_KINESIS_BODY).await {
        Ok(b) => b,
        Err(e) => return e.into_aws_json(),
    };
    match run(&state, &target, &body.bytes).await {
        Ok(doc) => {
            let mut resp =
                (StatusCode::OK, serde_json::to_vec(&doc).unwrap_or_default()).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            resp
        }
        Err(e) => e.into_aws_json(),
    }
}

/// The operation a JSON 1.1 target names (after `prefix`) and the body, checked and
/// normalised against the service's model (SerializationException /
/// ValidationException with AWS's messages).
pub(crate) fn json11_input<'t>(
    service: &kinesis::model::ServiceModel,
    prefix: &str,
    target: &'t str,
    bytes: &[u8],
) -> Result<(&'t str, serde_json::Value), ApiError> {
    use kinesis::model::InputError;
    let op_name = target.strip_prefix(prefix).unwrap_or("");
    let op = service
        .operation(op_name)
        .ok_or_else(|| ApiError::unknown_operation(format!("Unknown operation {op_name}.")))?;
    let mut doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|_| ApiError::serialization(""))?;
    op.normalize_input(&mut doc).map_err(|e| match e {
        InputError::Serialization(m) => ApiError::serialization(m),
        InputError::Validation(m) => ApiError::validation(m),
    })?;
    Ok((op_name, doc))
}

pub async fn read_body(
    state: &AppState,
    parts: &mut axum::http::request::Parts,
    body: Body,
    limit: usize,
) -> Result<LimitedBody, ApiError> {
    // The authentication layer may have read it already (to check its signature);
    // it hands the body over with its budget rather than reading it twice.
    if let Some(ahead) = parts.extensions.remove::<ReadAhead>()
        && let Some(read) = ahead.take()
    {
        if read.bytes.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        return Ok(read);
    }
    read_body_from(state, &parts.headers, body, limit).await
}

/// A body read ahead of the handler (by the authentication layer), with its budget.
#[derive(Clone)]
pub struct ReadAhead(Arc<std::sync::Mutex<Option<LimitedBody>>>);

impl ReadAhead {
    pub fn new(body: LimitedBody) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(body))))
    }
    fn take(&self) -> Option<LimitedBody> {
        self.0.lock().ok()?.take()
    }
}

/// [`read_body`] from the wire.
pub async fn read_body_from(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<LimitedBody, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > limit as u64
    {
        // Answer at once without reading the body; the connection is closed after
        // the response, since the rest of the body is never read.
        return Err(ApiError::too_large(limit));
    }
    let started = tokio::time::Instant::now();
    let mut permit: Option<OwnedSemaphorePermit> = None;
    let mut buf =
        BytesMut::with_capacity(declared.map(|l| l as usize).unwrap_or(64 * 1024).min(limit));
    let mut body = body;
    loop {
        // The deadline grows with what has arrived: grace + bytes / minimum rate.
        let deadline = started
            + BODY_RATE_GRACE
            + std::time::Duration::from_millis(buf.len() as u64 * 1000 / MIN_BODY_BYTES_PER_SEC);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => return Err(ApiError::body_too_slow(buf.len(), started.elapsed())),
        };
        let frame = frame
            .map_err(|e| ApiError::serialization(format!("could not read request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        // Hold budget for what is held (in KiB, rounded up) before keeping it.
        let want = (buf.len() + data.len()).div_ceil(1024).max(1);
        let have = permit.as_ref().map_or(0, |p| p.num_permits());
        if want > have {
            let more = state
                .body_budget
                .clone()
                .acquire_many_owned((want - have) as u32);
            let got = tokio::time::timeout_at(deadline, more)
                .await
                .map_err(|_| ApiError::unavailable("The server is busy; retry the request."))?
                .map_err(|_| ApiError::unavailable("server is shutting down"))?;
            match &mut permit {
                Some(p) => p.merge(got),
                None => permit = Some(got),
            }
        }
        buf.extend_from_slice(&data);
    }
    Ok(LimitedBody {
        bytes: buf.freeze(),
        _permit: permit,
    })
}

/// A response body fed by a channel: for responses written while work goes on
/// (PutMedia acks, GetMedia fragments, followed REST reads). The bounded channel is the
/// backpressure: the producer waits while the client is slow to read.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn send_budget_is_held_until_the_bytes_are_dropped() {
        let budget = SendBudget::new(8 * 1024);
        let held = budget.take(5 * 1024).await.unwrap();
        let bytes = budgeted(Bytes::from_static(b"cluster"), vec![held]);
        let copy = bytes.clone();
        assert_eq!(&copy[..], b"cluster");
        assert_eq!(budget.available_kib(), 3);
        drop(bytes);
        assert_eq!(budget.available_kib(), 3, "a clone still holds it");
        // More than the whole budget takes all of it, once the rest is given back.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.take(100 * 1024).await.map(|p| p.num_permits()) }
        });
        drop(copy);
        assert_eq!(waiting.await.unwrap(), Some(8));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_waits_add_up_within_a_fragment_and_reset_when_budget_is_given_back() {
        let budget = MediaBudget::new(4 * 1024);
        let mut other = budget.share();
        other.grow_to(4 * 1024).await.unwrap();
        let mut share = budget.share();

        // The other connection frees 1 KiB after 6 s: the first wait succeeds.
        let freer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(6)).await;
            other.shrink_to(3 * 1024);
            other
        });
        let start = tokio::time::Instant::now();
        share.grow_to(1024).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(6));
        let mut other = freer.await.unwrap();

        // Still in the same fragment: only the 4 s left of the 10 are waited.
        let start = tokio::time::Instant::now();
        assert_eq!(share.grow_to(2048).await, Err(BudgetError::TimedOut));
        assert_eq!(start.elapsed(), Duration::from_secs(4));

        // The fragment ends (budget given back): a new fragment has 10 s again.
        share.shrink_to(0);
        let freer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(9)).await;
            other.shrink_to(0);
        });
        let start = tokio::time::Instant::now();
        share.grow_to(2048).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(9));
        freer.await.unwrap();
        assert_eq!(share.held_bytes(), 2048);
    }
}
