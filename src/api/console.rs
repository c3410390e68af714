//! The web console: a small page to watch video streams in a browser.
//!
//! | path | serves |
//! |---|---|
//! | `GET /console` (and `/console/`) | the page (`assets/console.html`) |
//! | `GET /console/console.js`, `/console/console-streams.js`, `/console/console-timeline.js`, `/console/console-workers.js`, `/console/console-wall.js`, `/console/console.css`, `/console/console-icon.svg` | its scripts, style and icon |
//! | `GET /console/vendor/hls.min.js` | hls.js, vendored from npm (see `docs/decisions.md`) |
//! | `GET /console/vendor/hls.js-LICENSE` | hls.js's licence (Apache-2.0) |
//!
//! The files are compiled into the binary, so the console works offline and without a
//! JavaScript build step. The page only calls the public API of the same server
//! (`POST /listStreams`, `POST /getHLSStreamingSessionURL`, `POST /listFragments`,
//! `POST /getClip`, `GET /v1/streams`, the
//! record tail, `/metrics`, and the Firehose and Kinesis Analytics JSON 1.1 list and
//! describe calls) and plays the session URL.
//!
//! Every answer carries `Cache-Control: no-cache` with a strong `ETag` (a hash of the
//! content): browsers revalidate and get `304 Not Modified` until the binary changes,
//! so an upgraded server never runs against a stale cached script.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One file of the console.
struct Asset {
    /// Path below `/console/` (the page itself has none).
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const PAGE: Asset = Asset {
    path: "",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("../../assets/console.html"),
};

const ASSETS: &[Asset] = &[
    Asset {
        path: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/console.js"),
    },
    Asset {
        path: "console-streams.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/console-streams.js"),
    },
    Asset {
        path: "console-timeline.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/console-timeline.js"),
    },
    Asset {
        path: "console-workers.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/console-workers.js"),
    },
    Asset {
        path: "console-wall.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/console-wall.js"),
    },
    Asset {
        path: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/console.css"),
    },
    Asset {
        path: "console-icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/console-icon.svg"),
    },
    Asset {
        path: "vendor/hls.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/vendor/hls.min.js"),
    },
    Asset {
        path: "vendor/hls.js-LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../../assets/vendor/hls.js-LICENSE"),
    },
];

/// Revalidate on every use; the `ETag` makes that a `304`.
const CACHE_CONTROL: &str = "no-cache";

/// `ETag`s of [`PAGE`] followed by [`ASSETS`], computed once.
fn etags() -> &'static [HeaderValue] {
    static TAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    TAGS.get_or_init(|| {
        std::iter::once(&PAGE)
            .chain(ASSETS)
            .map(|a| {
                let digest = Sha256::digest(a.body);
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a valid header")
            })
            .collect()
    })
}

/// Whether `If-None-Match` lists `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let want = etag.as_bytes();
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t.as_bytes() == want)
}

fn serve(index: usize, asset: &'static Asset, headers: &HeaderMap) -> Response {
    let etag = etags()[index].clone();
    let common = [
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static(CACHE_CONTROL),
        ),
        (header::ETAG, etag.clone()),
    ];
    if not_modified(headers, &etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.body,
    )
        .into_response()
}

/// `GET /console`: the page.
pub async fn page(headers: HeaderMap) -> Response {
    serve(0, &PAGE, &headers)
}

/// `GET /console/{*asset}`: the page's script, style and vendored files.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.path == path) {
        Some(i) => serve(i + 1, &ASSETS[i], &headers),
        None => {
            super::error::ApiError::not_found(format!("No console file {path}")).into_rest_json()
        }
    }
}

/// Whether a request to `GET /` comes from a browser navigating to the server.
pub fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_distinct_paths_and_tags() {
        let paths: std::collections::HashSet<_> = ASSETS.iter().map(|a| a.path).collect();
        assert_eq!(paths.len(), ASSETS.len());
        let tags: std::collections::HashSet<_> = etags().iter().collect();
        assert_eq!(tags.len(), ASSETS.len() + 1);
    }

    #[test]
    fn if_none_match_lists() {
        let tag = HeaderValue::from_static("\"abc\"");
        let mut h = HeaderMap::new();
        assert!(!not_modified(&h, &tag));
        h.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(not_modified(&h, &tag));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\""));
        assert!(!not_modified(&h, &tag));
    }

    #[test]
    fn browsers_want_html() {
        let mut h = HeaderMap::new();
        assert!(!wants_html(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(!wants_html(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"),
        );
        assert!(wants_html(&h));
    }
}
