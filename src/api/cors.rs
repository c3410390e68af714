//! Cross-origin requests from browsers (the Fetch standard's CORS protocol).
//!
//! Two kinds of routes, two rules:
//!
//! - **Playback URLs** (`/hls/...`, `/dash/...`: playlists, manifests, init and media
//!   segments) are capability URLs, each carrying a signed session token, as on AWS.
//!   They answer every origin with `Access-Control-Allow-Origin` (`*` by default,
//!   `cors.playback_origin` otherwise) and expose what players read, so that hls.js or
//!   dash.js on a user's own page can play them.
//! - **The APIs** (Kinesis, Kinesis Video, the REST and feed APIs): preflight `OPTIONS`
//!   is answered, allowing the `authorization`, `content-type`, `x-amz-*` and
//!   `x-amzn-*` headers, for an allowed origin only. With authentication on, every
//!   origin is allowed, as AWS does (a signature is what grants access). With it off,
//!   only the origins configured in `cors.origins` are, plus the server's own origin
//!   (the console), so that no web page a user happens to visit can drive an open
//!   local server: a request from any other origin is refused with 403 before it
//!   does anything, even one a browser sends without a preflight.
//!
//! Requests without an `Origin` header (SDKs, the CLI, curl) pass untouched.
//!
//! HTTP only: a middleware around the router.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// How long browsers may cache a preflight answer (as AWS answers: 2 days).
const MAX_AGE_SECS: &str = "172800";

/// Response headers a page may read.
const EXPOSED: &str =
    "x-amzn-RequestId, x-amzn-ErrorType, x-amz-id-2, Content-Length, Content-Type, Content-Range";

/// Methods the APIs take.
const API_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";

/// Who may call from a browser.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    /// Origins allowed to call the APIs while authentication is off (exact matches,
    /// `scheme://host[:port]`; `*` allows every origin).
    pub origins: Vec<String>,
    /// `Access-Control-Allow-Origin` of playback URLs.
    pub playback_origin: String,
    /// Authentication is on: every origin may call the APIs (requests still need a
    /// valid signature).
    pub any_origin_for_apis: bool,
}

impl Default for CorsPolicy {
    fn default() -> Self {
        Self {
            origins: Vec::new(),
            playback_origin: "*".into(),
            any_origin_for_apis: false,
        }
    }
}

impl CorsPolicy {
    /// Checks configured origins: `*`, or `http(s)://host[:port]` without a path.
    pub fn new(
        origins: Vec<String>,
        playback_origin: Option<String>,
        any_origin_for_apis: bool,
    ) -> Result<Self, String> {
        let origins: Vec<String> = origins
            .into_iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .collect();
        for o in &origins {
            if o != "*" && !is_origin(o) {
                return Err(format!(
                    "CORS origin {o:?} must be scheme://host[:port] (no path), or *"
                ));
            }
        }
        let playback_origin = playback_origin
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| "*".into());
        if playback_origin != "*" && !is_origin(&playback_origin) {
            return Err(format!(
                "CORS playback origin {playback_origin:?} must be scheme://host[:port], or *"
            ));
        }
        Ok(Self {
            origins,
            playback_origin,
            any_origin_for_apis,
        })
    }

    /// Whether `origin` may call the APIs of a server reached as `host`.
    fn api_allows(&self, origin: &str, host: Option<&str>) -> bool {
        self.any_origin_for_apis
            || self.origins.iter().any(|o| o == "*" || o == origin)
            || host.is_some_and(|h| same_origin(origin, h))
    }
}

fn is_origin(o: &str) -> bool {
    let Some(rest) = o
        .strip_prefix("http://")
        .or_else(|| o.strip_prefix("https://"))
    else {
        return false;
    };
    !rest.is_empty() && !rest.contains(['/', '?', '#', '@', ' '])
}

/// `Origin: http://127.0.0.1:4570` with `Host: 127.0.0.1:4570`: the page came from
/// this server (the console).
fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

fn is_playback(path: &str) -> bool {
    path.starts_with("/hls/") || path.starts_with("/dash/")
}

/// Request headers an API preflight may ask for.
fn header_allowed(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "content-type" | "accept" | "range"
    ) || name.starts_with("x-amz-")
        || name.starts_with("x-amzn-")
        || name.starts_with("amz-sdk-")
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("null"))
}

/// The middleware.
pub async fn layer(State(policy): State<Arc<CorsPolicy>>, req: Request, next: Next) -> Response {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string)
    else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_string();
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);

    if is_playback(&path) {
        if preflight {
            let mut resp = StatusCode::NO_CONTENT.into_response();
            let h = resp.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                value(&policy.playback_origin),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            allow_requested_headers(req.headers(), h);
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE_SECS),
            );
            return resp;
        }
        let mut resp = next.run(req).await;
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            value(&policy.playback_origin),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
        if policy.playback_origin != "*" {
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        return resp;
    }

    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    if !policy.api_allows(&origin, host.as_deref()) {
        tracing::warn!(
            origin,
            path,
            "cross-origin request refused (add the origin to cors.origins to allow it)"
        );
        // Not an AWS API error: a refusal at the edge, 403 whatever the API.
        return super::error::ApiError::new(
            crate::error::ErrorKind::NotAuthorized,
            "AccessDeniedException",
            format!("Cross-origin requests from {origin} are not allowed."),
        )
        .into_rest();
    }
    // Every origin is allowed when authentication is on; answer `*` then, as AWS does.
    let allow_origin = if policy.any_origin_for_apis {
        HeaderValue::from_static("*")
    } else {
        value(&origin)
    };
    if preflight {
        let mut resp = StatusCode::OK.into_response();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(API_METHODS),
        );
        allow_requested_headers(req.headers(), h);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_SECS),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
        return resp;
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

/// Allows the headers a preflight asks for, when every one of them is allowed (a
/// browser refuses the request otherwise, which is the point).
fn allow_requested_headers(request: &HeaderMap, response: &mut HeaderMap) {
    let Some(asked) = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let names: Vec<&str> = asked
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if names.iter().all(|n| header_allowed(n)) {
        response.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            value(&names.join(", ")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::body::Body;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    fn app(policy: CorsPolicy) -> Router {
        Router::new()
            .route("/", post(|| async { "api" }))
            .route("/deleteStream", post(|| async { "deleted" }))
            .route(
                "/hls/v1/getHLSMasterPlaylist.m3u8",
                get(|| async { "#EXTM3U" }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(policy),
                layer,
            ))
    }

    async fn send(app: &Router, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        app.clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn acao(resp: &Response) -> Option<&str> {
        resp.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn playback_urls_answer_every_origin() {
        let app = app(CorsPolicy::default());
        let path = "/hls/v1/getHLSMasterPlaylist.m3u8";
        let resp = send(&app, "GET", path, &[("origin", "https://video.example")]).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(acao(&resp), Some("*"));
        let pre = send(
            &app,
            "OPTIONS",
            path,
            &[
                ("origin", "https://video.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "range"),
            ],
        )
        .await;
        assert_eq!(pre.status(), 204);
        assert_eq!(acao(&pre), Some("*"));
        assert_eq!(pre.headers()["access-control-allow-headers"], "range");
    }

    #[tokio::test]
    async fn without_authentication_only_configured_origins_reach_the_apis() {
        let policy = CorsPolicy::new(vec!["https://ok.example/".into()], None, false).unwrap();
        let app = app(policy);
        let pre = send(
            &app,
            "OPTIONS",
            "/",
            &[
                ("origin", "https://ok.example"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "content-type,x-amz-target,x-amz-date,authorization",
                ),
            ],
        )
        .await;
        assert_eq!(pre.status(), 200);
        assert_eq!(acao(&pre), Some("https://ok.example"));
        assert_eq!(pre.headers()["access-control-max-age"], "172800");
        assert_eq!(
            pre.headers()["access-control-allow-headers"],
            "content-type, x-amz-target, x-amz-date, authorization"
        );
        let ok = send(&app, "POST", "/", &[("origin", "https://ok.example")]).await;
        assert_eq!(ok.status(), 200);
        assert_eq!(acao(&ok), Some("https://ok.example"));

        // Another page: refused before the handler runs, preflight or not.
        for method in ["OPTIONS", "POST"] {
            let no = send(
                &app,
                method,
                "/deleteStream",
                &[
                    ("origin", "https://evil.example"),
                    ("access-control-request-method", "POST"),
                ],
            )
            .await;
            assert_eq!(no.status(), 403, "{method}");
            assert_eq!(acao(&no), None);
            assert_eq!(no.headers()["x-amzn-errortype"], "AccessDeniedException");
        }
        // The server's own pages (the console) and non-browser clients pass.
        let own = send(
            &app,
            "POST",
            "/deleteStream",
            &[
                ("origin", "http://127.0.0.1:4570"),
                ("host", "127.0.0.1:4570"),
            ],
        )
        .await;
        assert_eq!(own.status(), 200);
        let sdk = send(&app, "POST", "/deleteStream", &[]).await;
        assert_eq!(sdk.status(), 200);
        assert_eq!(acao(&sdk), None);
    }

    #[tokio::test]
    async fn with_authentication_every_origin_may_call_as_on_aws() {
        let app = app(CorsPolicy::new(vec![], None, true).unwrap());
        let pre = send(
            &app,
            "OPTIONS",
            "/",
            &[
                ("origin", "https://any.example"),
                ("access-control-request-method", "POST"),
            ],
        )
        .await;
        assert_eq!(pre.status(), 200);
        assert_eq!(acao(&pre), Some("*"));
    }

    #[tokio::test]
    async fn headers_outside_the_allowed_set_are_not_allowed() {
        let app = app(CorsPolicy::new(vec!["*".into()], None, false).unwrap());
        let pre = send(
            &app,
            "OPTIONS",
            "/",
            &[
                ("origin", "https://ok.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type, x-secret"),
            ],
        )
        .await;
        assert!(!pre.headers().contains_key("access-control-allow-headers"));
    }

    #[test]
    fn origins_are_checked() {
        assert!(CorsPolicy::new(vec!["https://a.example/path".into()], None, false).is_err());
        assert!(CorsPolicy::new(vec!["a.example".into()], None, false).is_err());
        assert!(CorsPolicy::new(vec![], Some("ftp://x".into()), false).is_err());
        assert!(CorsPolicy::new(vec!["*".into(), "http://[::1]:8080".into()], None, false).is_ok());
    }
}
