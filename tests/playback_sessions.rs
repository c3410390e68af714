//! HLS session tokens over HTTP on a simulated clock: a session URL works until its
//! `Expires` has passed, then every playlist and segment request answers
//! `NotAuthorizedException` (401), as does a token signed by another server.

mod common;

use std::sync::Arc;

use freshet::api::{AppState, router};
use freshet::clock::ManualClock;
use freshet::media::fragmenter::FragmentPolicy;
use freshet::store::catalog::RedbCatalog;
use freshet::store::{Store, StoreConfig};
use freshet::streams::{ServiceConfig, StreamService};
use freshet::video::ingest::{IngestSink, ensure_stream};
use freshet::video::{VideoConfig, VideoService};

const SAMPLE: &[u8] = include_bytes!("../media-samples/h264-1s-gop.kvs.mkv");

async fn server(dir: &std::path::Path, clock: Arc<ManualClock>) -> (String, Arc<VideoService>) {
    let store = Store::open(&dir.join("data"), StoreConfig::default(), clock.clone()).unwrap();
    let catalog = Arc::new(RedbCatalog::open(&dir.join("catalog.redb")).unwrap());
    let video = VideoService::open(
        VideoConfig {
            state_delay_ms: 0,
            ..VideoConfig::default()
        },
        clock.clone(),
        catalog.clone(),
        store.clone(),
    )
    .await
    .unwrap();
    let streams = StreamService::open(ServiceConfig::default(), clock, store, catalog)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(AppState::new(streams, video.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), video)
}

/// Stores the sample's six fragments in `stream`, timed from the clock's now.
async fn record(video: &Arc<VideoService>, stream: &str, t0: i64) {
    ensure_stream(video, stream, true, 24).await.unwrap();
    let (private, frames) = common::sample_video_frames(SAMPLE, t0);
    let track = common::sample_h264_track(private);
    let mut sink = IngestSink::new(
        video.clone(),
        stream,
        vec![track],
        FragmentPolicy {
            target_ms: 1000,
            ..FragmentPolicy::default()
        },
    );
    for (t, key, data) in frames {
        sink.frame(0, t, key, data).await.unwrap();
    }
    sink.finish().await.unwrap();
}

fn error_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-amzn-ErrorType")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn session_urls_expire_and_other_servers_tokens_are_refused() {
    let t0 = 1_800_000_000_000;
    let clock = Arc::new(ManualClock::new(t0));
    let dir = tempfile::tempdir().unwrap();
    let (ep, video) = server(dir.path(), clock.clone()).await;
    record(&video, "cam", t0).await;
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "StreamName": "cam",
        "PlaybackMode": "ON_DEMAND",
        "Expires": 300,
        "HLSFragmentSelector": {
            "FragmentSelectorType": "SERVER_TIMESTAMP",
            "TimestampRange": {"StartTimestamp": (t0 / 1000 - 60) as f64, "EndTimestamp": (t0 / 1000 + 60) as f64}
        }
    });
    let resp = http
        .post(format!("{ep}/getHLSStreamingSessionURL"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let url = resp.json::<serde_json::Value>().await.unwrap()["HLSStreamingSessionURL"]
        .as_str()
        .unwrap()
        .to_string();
    let media_url = url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist");
    let playlist = http.get(&media_url).send().await.unwrap();
    assert_eq!(playlist.status(), 200);
    let text = playlist.text().await.unwrap();
    assert_eq!(text.matches("#EXTINF").count(), 6);
    let base = media_url.rsplit_once('/').unwrap().0.to_string();
    let segment = text
        .lines()
        .find(|l| l.starts_with("getMP4MediaFragment"))
        .unwrap()
        .to_string();
    assert_eq!(
        http.get(format!("{base}/{segment}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // 299 s later the session still works; at 300 s it has expired, for every URL.
    clock.advance_ms(299_000);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    clock.advance_ms(1_000);
    for u in [url.clone(), media_url.clone(), format!("{base}/{segment}")] {
        let r = http.get(&u).send().await.unwrap();
        assert_eq!(r.status(), 401, "{u}");
        assert_eq!(error_type(&r), "NotAuthorizedException");
        assert!(r.text().await.unwrap().contains("expired"));
    }

    // A fresh token from this server is refused by another one (another key).
    let fresh = http
        .post(format!("{ep}/getHLSStreamingSessionURL"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["HLSStreamingSessionURL"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(http.get(&fresh).send().await.unwrap().status(), 200);
    let other_dir = tempfile::tempdir().unwrap();
    let (other_ep, _other_video) = server(other_dir.path(), clock.clone()).await;
    let r = http
        .get(fresh.replace(&ep, &other_ep))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(error_type(&r), "NotAuthorizedException");
    assert!(r.text().await.unwrap().contains("not valid"));
}
