//! Authentication at the HTTP edge: a middleware in front of every route that, when
//! keys are configured, lets in only requests signed with one of them and allowed by
//! its policy, before any work is done.
//!
//! - AWS APIs (Kinesis `POST /`, Kinesis Video `POST /<operation>`, PutMedia, GetMedia,
//!   archived media): AWS Signature Version 4 ([`crate::auth::sigv4`]), in the header
//!   or the presigned query form, for the service the route belongs to (`kinesis`,
//!   `kinesisvideo`). The body is read (under the usual caps) and hashed first, except
//!   for PutMedia, whose producers sign the headers only: the payload hash they sign is
//!   that of an empty body, or what `X-Amz-Content-SHA256` declares.
//! - The REST API, the feed API and the console: the same keys as HTTP Basic
//!   (`ID:SECRET`) or a bearer token `ID:SECRET`, or SigV4. A browser asked for Basic
//!   credentials on `/console` sends them with the console's own API calls too, so
//!   Basic is accepted on every route.
//! - Exempt: `GET /health`, the `GET /` banner, `OPTIONS` (CORS preflights), and the
//!   HLS/DASH playback URLs, which are capability URLs (a signed session token), as
//!   on AWS.
//!
//! A key's policy (`allow` action patterns, `resources` stream-name patterns; see
//! [`crate::auth::keys`]) is checked with the action the route names
//! (`kinesis:PutRecord`, `kinesisvideo:PutMedia`, ...) and the stream the request
//! names. Failures are [`ApiError`]s mapped in `api::error`; secrets and signatures
//! never reach a log line or a response.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;

use super::error::{ApiError, Family};
use super::{AppState, MAX_KINESIS_BODY, ReadAhead, read_body_from};
use crate::auth::{
    AccessKey, AuthError, ChunkVerifier, Keyring, RequestParts, Verified, payload_hash, verify,
};
use crate::error::ErrorKind;

/// The keys in force and what messages need to name resources.
#[derive(Debug)]
pub struct EdgeAuth {
    pub keys: Keyring,
    pub account_id: String,
    pub region: String,
}

/// What a route is, for authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Exempt,
    /// The console page and its files: HTTP Basic, asked for with 401.
    Console,
    Aws {
        family: Family,
        service: &'static str,
        action: String,
        /// PutMedia: the body is not read here (and not signed).
        streaming: bool,
    },
    Rest {
        action: String,
        stream: Option<String>,
    },
}

fn classify(method: &Method, path: &str, query: &str, headers: &HeaderMap) -> Route {
    if method == Method::OPTIONS
        || (method == Method::GET && matches!(path, "/health" | "/ready" | "/"))
        || (method == Method::GET && (path.starts_with("/hls/") || path.starts_with("/dash/")))
        // Checked against the cluster's own token by its handler.
        || (method == Method::POST && path == crate::cluster::records::APPEND_PATH)
    {
        return Route::Exempt;
    }
    if path == "/console" || path.starts_with("/console/") {
        return Route::Console;
    }
    if path == "/metrics" {
        // Prometheus sends `Authorization: Bearer ID:SECRET` (or Basic).
        return Route::Rest {
            action: "freshet:GetMetrics".into(),
            stream: None,
        };
    }
    if path == "/v1/streams" {
        return Route::Rest {
            action: "kinesis:ListStreams".into(),
            stream: None,
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/streams/") {
        let stream = rest.split('/').next().map(str::to_string);
        let action = if method == Method::POST {
            "kinesis:PutRecords"
        } else {
            "kinesis:GetRecords"
        };
        return Route::Rest {
            action: action.into(),
            stream,
        };
    }
    if path.starts_with("/v1/groups/") {
        // Consumer groups read the stream named by the `stream` query parameter; a
        // request without it names the empty stream, which only `*` patterns allow.
        let stream = super::groups::stream_param(query)
            .unwrap_or_default()
            .to_string();
        return Route::Rest {
            action: "kinesis:GetRecords".into(),
            stream: Some(stream),
        };
    }
    if let Some(rest) = path.strip_prefix("/v1/video/feeds") {
        let stream = rest
            .strip_prefix('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let action = match (method.as_str(), stream.is_some()) {
            ("GET", false) => "kinesisvideo:ListFeeds",
            ("GET", true) => "kinesisvideo:DescribeFeed",
            ("DELETE", _) => "kinesisvideo:DeleteFeed",
            _ => "kinesisvideo:PutFeed",
        };
        return Route::Rest {
            action: action.into(),
            stream,
        };
    }
    if path == "/"
        && let Some(op) = super::header_str(headers, "x-amz-target")
            .and_then(|t| t.strip_prefix(super::firehose::TARGET_PREFIX))
    {
        return Route::Aws {
            family: Family::Kinesis,
            service: "firehose",
            action: format!("firehose:{op}"),
            streaming: false,
        };
    }
    if path == "/"
        && let Some(op) = super::header_str(headers, "x-amz-target")
            .and_then(|t| t.strip_prefix(super::dynamodb::TARGET_PREFIX))
    {
        return Route::Aws {
            family: Family::Kinesis,
            service: "dynamodb",
            action: format!("dynamodb:{op}"),
            streaming: false,
        };
    }
    if (path == "/"
        && (super::header_str(headers, "x-amz-target")
            .is_some_and(|t| t.starts_with(super::cloudwatch::TARGET_PREFIX))
            || super::cloudwatch::is_query(headers)))
        || path.starts_with(super::cloudwatch::CBOR_PATH)
    {
        return Route::Aws {
            family: Family::Kinesis,
            service: "monitoring",
            action: "cloudwatch:PutMetricData".into(),
            streaming: false,
        };
    }
    if path == "/"
        && let Some(op) = super::header_str(headers, "x-amz-target")
            .and_then(|t| t.strip_prefix(super::analytics::TARGET_PREFIX))
    {
        return Route::Aws {
            family: Family::Kinesis,
            service: "kinesisanalytics",
            action: format!("kinesisanalytics:{op}"),
            streaming: false,
        };
    }
    if path == "/" {
        let op = super::header_str(headers, "x-amz-target")
            .and_then(|t| t.rsplit_once('.'))
            .map_or("Unknown", |(_, op)| op);
        return Route::Aws {
            family: Family::Kinesis,
            service: "kinesis",
            action: format!("kinesis:{op}"),
            streaming: false,
        };
    }
    let op = path.trim_start_matches('/');
    let mut chars = op.chars();
    let action = match chars.next() {
        Some(c) => format!("kinesisvideo:{}{}", c.to_ascii_uppercase(), chars.as_str()),
        None => "kinesisvideo:Unknown".into(),
    };
    Route::Aws {
        family: Family::KinesisVideo,
        service: "kinesisvideo",
        action,
        streaming: op == "putMedia",
    }
}

/// The stream a request names: `StreamName`, or the name inside `StreamARN` /
/// `ConsumerARN` (`arn:aws:kinesis:...:stream/NAME/...`).
fn stream_of_document(doc: &serde_json::Value) -> Option<String> {
    if let Some(name) = doc["StreamName"].as_str() {
        return Some(name.to_string());
    }
    // Firehose names its resource DeliveryStreamName; Kinesis Analytics ApplicationName.
    if let Some(name) = doc["DeliveryStreamName"]
        .as_str()
        .or_else(|| doc["ApplicationName"].as_str())
    {
        return Some(name.to_string());
    }
    ["StreamARN", "ConsumerARN", "ResourceARN"]
        .iter()
        .filter_map(|k| doc[*k].as_str())
        .find_map(stream_of_arn)
}

fn stream_of_arn(arn: &str) -> Option<String> {
    let (_, rest) = arn.split_once(":stream/")?;
    Some(rest.split('/').next().unwrap_or(rest).to_string())
}

/// The stream named by a JSON or CBOR body.
fn stream_of_body(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let cbor = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("cbor"));
    let doc = if cbor {
        let op_name = super::header_str(headers, "x-amz-target")
            .and_then(|t| t.rsplit_once('.'))
            .map(|(_, op)| op)?;
        let op = super::kinesis::model::kinesis().operation(op_name)?;
        super::cbor::cbor_to_json_input(body, &op).ok()?
    } else {
        serde_json::from_slice(body).ok()?
    };
    stream_of_document(&doc)
}

fn auth_error(e: AuthError) -> ApiError {
    let kind = match e {
        AuthError::ContentSha256Mismatch => ErrorKind::InvalidArgument,
        _ => ErrorKind::Unauthenticated,
    };
    ApiError::new(kind, e.aws_type(), e.to_string())
}

/// `Basic base64(ID:SECRET)` or `Bearer ID:SECRET`: the key, when the pair is right.
fn basic_or_bearer<'a>(
    keys: &'a Keyring,
    headers: &HeaderMap,
) -> Option<Result<&'a AccessKey, ApiError>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let pair = if let Some(b64) = value.strip_prefix("Basic ") {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        String::from_utf8(bytes).ok()?
    } else if let Some(token) = value.strip_prefix("Bearer ") {
        token.trim().to_string()
    } else {
        return None;
    };
    let unrecognized = || {
        ApiError::new(
            ErrorKind::Unauthenticated,
            "UnrecognizedClientException",
            AuthError::UnrecognizedClient.to_string(),
        )
    };
    let Some((id, secret)) = pair.split_once(':') else {
        return Some(Err(unrecognized()));
    };
    Some(match keys.get(id) {
        Some(key) if key.secret_matches(secret) => Ok(key),
        _ => Err(unrecognized()),
    })
}

fn render(e: ApiError, family: Family, ask_for_basic: bool, cbor: bool) -> Response {
    let mut resp = match family {
        Family::Kinesis if cbor => {
            let body = super::cbor::error_to_cbor(e.code, &e.message);
            e.with_body(Family::Kinesis, body, "application/x-amz-cbor-1.1")
        }
        Family::Kinesis => e.into_aws_json(),
        Family::KinesisVideo => e.into_rest_json(),
        Family::Rest => e.into_rest(),
        Family::KinesisFrontEnd => e.into_front_end_xml(),
    };
    if ask_for_basic && resp.status() == axum::http::StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"freshet\", charset=\"UTF-8\""),
        );
    }
    resp
}

fn denied(auth: &EdgeAuth, key: &AccessKey, action: &str, stream: Option<&str>) -> ApiError {
    let resource = match (stream, action.split(':').next()) {
        (Some(name), Some("firehose")) => format!(
            "arn:aws:firehose:{}:{}:deliverystream/{name}",
            auth.region, auth.account_id
        ),
        (Some(name), Some("kinesisanalytics")) => format!(
            "arn:aws:kinesisanalytics:{}:{}:application/{name}",
            auth.region, auth.account_id
        ),
        (Some(name), Some("kinesisvideo")) => format!(
            "arn:aws:kinesisvideo:{}:{}:stream/{name}",
            auth.region, auth.account_id
        ),
        (Some(name), _) => format!(
            "arn:aws:kinesis:{}:{}:stream/{name}",
            auth.region, auth.account_id
        ),
        (None, _) => "*".into(),
    };
    ApiError::new(
        ErrorKind::NotAuthorized,
        "AccessDeniedException",
        format!(
            "User: arn:aws:iam::{}:user/{} is not authorized to perform: {action} on resource: {resource}",
            auth.account_id, key.access_key_id
        ),
    )
}

/// The middleware.
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(auth) = state.auth.clone() else {
        return next.run(req).await;
    };
    let route = classify(
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or_default(),
        req.headers(),
    );
    // A CBOR request (the Java SDK, KCL, KPL) is answered in CBOR, as AWS does.
    let cbor = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-amz-cbor-1.1"));
    let (family, ask_for_basic) = match &route {
        Route::Exempt => return next.run(req).await,
        Route::Console => (Family::Rest, true),
        Route::Rest { .. } => (Family::Rest, true),
        Route::Aws { family, .. } => (*family, false),
    };
    match authenticate(&state, &auth, route, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => {
            tracing::info!(code = e.code, message = %e.message, "request refused by authentication");
            render(e, family, ask_for_basic, cbor)
        }
    }
}

/// The request, its body re-attached when it was read, once the caller is known and
/// allowed.
async fn authenticate(
    state: &AppState,
    auth: &Arc<EdgeAuth>,
    route: Route,
    req: Request,
) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    // HTTP Basic / bearer: the console and the REST API, and browsers' calls.
    let basic = basic_or_bearer(&auth.keys, &parts.headers);
    if basic.is_none() && route == Route::Console {
        // Browsers cannot sign: ask for Basic credentials.
        return Err(ApiError::new(
            ErrorKind::Unauthenticated,
            "MissingAuthenticationTokenException",
            "Sign in with an access key id and its secret.",
        ));
    }
    // The body is read where it names the stream (the AWS APIs but PutMedia) or is
    // signed (any SigV4 request but PutMedia, whose producers sign the headers only).
    let streaming = matches!(
        route,
        Route::Aws {
            streaming: true,
            ..
        }
    );
    let read = !streaming && (matches!(route, Route::Aws { .. }) || basic.is_none());
    // Read under the cap of the handler it goes to, and handed over with its budget
    // (`ReadAhead`), so that it is neither read nor budgeted twice.
    let (mut parts, body) = (parts, body);
    let (body, bytes) = if read {
        let read = read_body_from(state, &parts.headers, body, body_cap(&route)).await?;
        let bytes = read.bytes.clone();
        parts.extensions.insert(ReadAhead::new(read));
        (Body::empty(), Some(bytes))
    } else {
        (body, None)
    };
    let (key, body) = match basic {
        Some(found) => (found?, body),
        None => {
            let (key, verified) = verify_sigv4(state, auth, &route, &parts, bytes.as_deref())?;
            // A signed chunked payload: its chunks are checked as they arrive (PutMedia)
            // or now (a body already read), and only verified bytes go on.
            let body = match ChunkVerifier::for_request(&verified).map_err(auth_error)? {
                None => body,
                Some(verifier) if streaming => Body::new(ChunkedBody::new(body, verifier)),
                Some(mut verifier) => {
                    let ahead = parts.extensions.remove::<ReadAhead>();
                    let mut read = ahead
                        .and_then(|a| a.take())
                        .ok_or_else(|| ApiError::internal("the signed body was not read ahead"))?;
                    let mut out = Vec::new();
                    verifier
                        .push(&read.bytes, &mut out)
                        .and_then(|()| verifier.finish())
                        .map_err(auth_error)?;
                    read.bytes = out.concat().into();
                    parts.extensions.insert(ReadAhead::new(read));
                    body
                }
            };
            (key, body)
        }
    };
    let stream = match &route {
        Route::Rest { stream, .. } => stream.clone(),
        Route::Aws {
            streaming: true, ..
        } => putmedia_stream(&parts.headers),
        Route::Aws { .. } => bytes
            .as_deref()
            .and_then(|b| stream_of_body(&parts.headers, b)),
        Route::Console | Route::Exempt => None,
    };
    check_policy(auth, key, &route, stream.as_deref())?;
    Ok(Request::from_parts(parts, body))
}

/// The most body a route's handler takes (what authentication reads at most).
fn body_cap(route: &Route) -> usize {
    match route {
        Route::Aws {
            family: Family::Kinesis,
            ..
        } => MAX_KINESIS_BODY,
        // The Kinesis Video control plane, archived media and GetMedia take 1 MiB.
        Route::Aws { .. } => 1024 * 1024,
        _ => super::rest::MAX_REST_BODY,
    }
}

/// Checks a SigV4 signature over `body` (for PutMedia, `None`: the hash of an empty
/// body is what producers sign, or what X-Amz-Content-SHA256 declares) and returns
/// the key that made it.
fn verify_sigv4<'a>(
    state: &AppState,
    auth: &'a EdgeAuth,
    route: &Route,
    parts: &axum::http::request::Parts,
    body: Option<&[u8]>,
) -> Result<(&'a AccessKey, Verified), ApiError> {
    let now = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(state.video.now_ms().max(0) as u64);
    let hash = payload_hash(body.unwrap_or_default());
    let verified =
        verify(&RequestParts::from(parts), Some(&hash), now, &auth.keys).map_err(auth_error)?;
    if let Route::Aws { service, .. } = route {
        verified.require_service(service).map_err(auth_error)?;
    }
    if let Some(body) = body {
        verified.payload.check_body(body).map_err(auth_error)?;
    }
    Ok((signer(auth, &verified.access_key_id)?, verified))
}

/// A request body in the signed chunked encoding, yielding only payload bytes whose
/// chunk signatures have been checked; a bad chunk ends the body with an error (for
/// PutMedia an ERROR ack: nothing after the last good chunk is stored).
struct ChunkedBody {
    inner: Body,
    verifier: ChunkVerifier,
    ready: std::collections::VecDeque<Bytes>,
    /// A bad chunk: reported once the verified bytes before it have gone.
    failed: Option<AuthError>,
    ended: bool,
}

impl ChunkedBody {
    fn new(inner: Body, verifier: ChunkVerifier) -> Self {
        Self {
            inner,
            verifier,
            ready: Default::default(),
            failed: None,
            ended: false,
        }
    }
}

impl http_body::Body for ChunkedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if let Some(data) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(http_body::Frame::data(data))));
            }
            if let Some(e) = this.failed.take() {
                return Poll::Ready(Some(Err(axum::Error::new(e))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let frame = match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(f) => f,
            };
            let result = match frame {
                None => {
                    this.ended = true;
                    this.verifier.finish()
                }
                Some(Err(e)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let mut out = Vec::new();
                        let r = this.verifier.push(&data, &mut out);
                        this.ready.extend(out);
                        r
                    }
                    Err(_) => Ok(()),
                },
            };
            if let Err(e) = result {
                this.ended = true;
                this.failed = Some(e);
            }
        }
    }
}

/// The key a verified signature was made with.
fn signer<'a>(auth: &'a EdgeAuth, access_key_id: &str) -> Result<&'a AccessKey, ApiError> {
    auth.keys
        .get(access_key_id)
        .ok_or_else(|| auth_error(AuthError::UnrecognizedClient))
}

fn putmedia_stream(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-amzn-stream-name")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("x-amzn-stream-arn")
                .and_then(|v| v.to_str().ok())
                .and_then(stream_of_arn)
        })
}

fn check_policy(
    auth: &EdgeAuth,
    key: &AccessKey,
    route: &Route,
    stream: Option<&str>,
) -> Result<(), ApiError> {
    let action = match route {
        Route::Aws { action, .. } | Route::Rest { action, .. } => action.as_str(),
        Route::Console => "freshet:Console",
        Route::Exempt => return Ok(()),
    };
    if key.permits(action, stream) {
        Ok(())
    } else {
        Err(denied(auth, key, action, stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str, target: Option<&str>) -> Route {
        let mut h = HeaderMap::new();
        if let Some(t) = target {
            h.insert("x-amz-target", HeaderValue::from_str(t).unwrap());
        }
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        classify(&method, path, query, &h)
    }

    #[test]
    fn routes_name_their_service_and_action() {
        assert_eq!(
            route(Method::POST, "/", Some("Kinesis_20131202.PutRecord")),
            Route::Aws {
                family: Family::Kinesis,
                service: "kinesis",
                action: "kinesis:PutRecord".into(),
                streaming: false
            }
        );
        assert_eq!(
            route(Method::POST, "/", Some("Firehose_20150804.PutRecordBatch")),
            Route::Aws {
                family: Family::Kinesis,
                service: "firehose",
                action: "firehose:PutRecordBatch".into(),
                streaming: false
            }
        );
        assert_eq!(
            stream_of_document(&serde_json::json!({"DeliveryStreamName": "logs"})).as_deref(),
            Some("logs")
        );
        assert_eq!(
            route(Method::POST, "/putMedia", None),
            Route::Aws {
                family: Family::KinesisVideo,
                service: "kinesisvideo",
                action: "kinesisvideo:PutMedia".into(),
                streaming: true
            }
        );
        let Route::Aws { action, .. } = route(Method::POST, "/getHLSStreamingSessionURL", None)
        else {
            panic!()
        };
        assert_eq!(action, "kinesisvideo:GetHLSStreamingSessionURL");
        assert_eq!(
            route(Method::GET, "/v1/streams/orders/records", None),
            Route::Rest {
                action: "kinesis:GetRecords".into(),
                stream: Some("orders".into())
            }
        );
        assert_eq!(
            route(Method::GET, "/v1/streams", None),
            Route::Rest {
                action: "kinesis:ListStreams".into(),
                stream: None
            }
        );
        assert_eq!(
            route(Method::DELETE, "/v1/video/feeds/porch", None),
            Route::Rest {
                action: "kinesisvideo:DeleteFeed".into(),
                stream: Some("porch".into())
            }
        );
        for (m, p) in [
            (Method::GET, "/health"),
            (Method::GET, "/"),
            (Method::OPTIONS, "/"),
            (Method::GET, "/hls/v1/getHLSMasterPlaylist.m3u8"),
            (Method::GET, "/dash/v1/getDASHManifest.mpd"),
        ] {
            assert_eq!(route(m, p, None), Route::Exempt, "{p}");
        }
        assert_eq!(route(Method::GET, "/console/app.js", None), Route::Console);
        // A POST to the playback paths is no exemption.
        assert_ne!(
            route(Method::POST, "/hls/v1/getHLSMasterPlaylist.m3u8", None),
            Route::Exempt
        );
    }

    #[test]
    fn streams_are_found_by_name_or_arn() {
        let doc = serde_json::json!({"StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/orders"});
        assert_eq!(stream_of_document(&doc).as_deref(), Some("orders"));
        let doc = serde_json::json!({"ConsumerARN": "arn:aws:kinesis:us-east-1:000000000000:stream/orders/consumer/c:1"});
        assert_eq!(stream_of_document(&doc).as_deref(), Some("orders"));
        let doc = serde_json::json!({"StreamARN": "arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam-1/1700000000000"});
        assert_eq!(stream_of_document(&doc).as_deref(), Some("cam-1"));
        assert_eq!(stream_of_document(&serde_json::json!({})), None);
    }
}
