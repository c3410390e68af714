//! Camera ingest over RTP and RTSP: configured feeds (RTSP pull from a camera, RTP on
//! a UDP port) and the RTSP push listener, all writing through
//! [`crate::video::ingest::IngestSink`] into the same fragment store as PutMedia.
//!
//! - [`FeedManager`]: feed configurations, persisted in the catalog (namespace
//!   `video-ingest`), started at boot and on change, each with a live status
//!   (state, last error, counters). URLs are reported and logged with their password
//!   replaced by `***`.
//! - [`session`]: one RTP session (SDP media → reorder → depacketize → clock → sink),
//!   shared by every transport.
//! - [`rtsp_server`]: `--rtsp-listen`: ANNOUNCE / SETUP (`mode=record`) / RECORD from
//!   ffmpeg (`-f rtsp`) and GStreamer (`rtspclientsink`), TCP-interleaved or UDP.
//! - [`rtsp_pull`]: DESCRIBE / SETUP / PLAY against a camera, keep-alives, reconnects
//!   with backoff.
//! - [`udp`]: a bare RTP feed on a UDP port, described by an SDP or a codec name.
//!
//! The wire formats are parsed by pure code in `media::{rtp, rtsp, sdp, depacketize}`.

pub mod rtsp_pull;
pub mod rtsp_server;
pub mod session;
pub mod udp;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::clock::SharedClock;
use crate::store::catalog::Catalog;
use crate::video::ingest::SinkStats;
use crate::video::{VideoError, VideoService};

const NAMESPACE: &str = "video-ingest";

/// Where a feed's media comes from. `Debug` shows camera URLs without their password
/// (serialising keeps it: that is how feeds are stored).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "Type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FeedSource {
    /// Freshet connects to a camera's RTSP URL (`rtsp://user:pass@host:port/path`).
    RtspPull {
        #[serde(rename = "Url")]
        url: String,
    },
    /// A sender pushes RTP to this UDP port (RTCP on port + 1), described by an SDP, or
    /// by a codec name (`H264`, `H265`) with the dynamic payload type it uses.
    RtpUdp {
        #[serde(rename = "Port")]
        port: u16,
        #[serde(rename = "Sdp", default, skip_serializing_if = "Option::is_none")]
        sdp: Option<String>,
        #[serde(rename = "Codec", default, skip_serializing_if = "Option::is_none")]
        codec: Option<String>,
        #[serde(
            rename = "PayloadType",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        payload_type: Option<u8>,
    },
}

impl std::fmt::Debug for FeedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RtspPull { url } => f
                .debug_struct("RtspPull")
                .field("url", &redact_url(url))
                .finish(),
            Self::RtpUdp {
                port,
                codec,
                payload_type,
                ..
            } => f
                .debug_struct("RtpUdp")
                .field("port", port)
                .field("codec", codec)
                .field("payload_type", payload_type)
                .finish_non_exhaustive(),
        }
    }
}

/// A configured feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FeedConfig {
    pub stream_name: String,
    pub source: FeedSource,
    /// Target fragment length; fragments end at the first key frame after it.
    #[serde(default = "default_fragment_ms")]
    pub fragment_ms: u32,
}

fn default_fragment_ms() -> u32 {
    2_000
}

/// A feed's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FeedState {
    Starting,
    Connecting,
    Receiving,
    /// Waiting before the next attempt after a failure.
    Reconnecting,
    /// Cannot run as configured (a port in use, a bad SDP): fix the configuration.
    Failed,
}

/// What a feed reports.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FeedStatus {
    pub state: FeedState,
    /// When the feed entered its state (ms since the epoch).
    pub since: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub packets: u64,
    pub packets_lost: u64,
    pub connections: u64,
    #[serde(flatten)]
    pub sink: SinkStats,
}

impl FeedStatus {
    fn new(now: i64) -> Self {
        Self {
            state: FeedState::Starting,
            since: now,
            last_error: None,
            packets: 0,
            packets_lost: 0,
            connections: 0,
            sink: SinkStats::default(),
        }
    }
}

/// A feed's shared status cell, updated by its task.
#[derive(Clone)]
pub struct StatusCell {
    inner: Arc<Mutex<FeedStatus>>,
    /// Counters of the feed's finished sessions (connections); the status shows these
    /// plus the current session's.
    before: Arc<Mutex<(u64, u64, SinkStats)>>,
    clock: SharedClock,
}

impl StatusCell {
    pub fn new(clock: SharedClock) -> Self {
        Self {
            inner: Arc::new(Mutex::new(FeedStatus::new(clock.now_ms()))),
            before: Arc::new(Mutex::new((0, 0, SinkStats::default()))),
            clock,
        }
    }

    pub fn set_state(&self, state: FeedState, error: Option<String>) {
        let mut s = self.inner.lock().unwrap();
        if s.state != state {
            s.state = state;
            s.since = self.clock.now_ms();
        }
        if error.is_some() {
            s.last_error = error;
        }
    }

    /// The current session's counters (packets, packets lost, what its sink did).
    pub fn session(&self, packets: u64, lost: u64, sink: SinkStats) {
        let before = *self.before.lock().unwrap();
        let mut s = self.inner.lock().unwrap();
        s.packets = before.0 + packets;
        s.packets_lost = before.1 + lost;
        s.sink = before.2.plus(&sink);
    }

    /// The current session ended: its counters become part of the totals.
    pub fn end_session(&self, packets: u64, lost: u64, sink: SinkStats) {
        self.session(packets, lost, sink);
        let s = self.inner.lock().unwrap();
        *self.before.lock().unwrap() = (s.packets, s.packets_lost, s.sink);
    }

    pub fn update(&self, f: impl FnOnce(&mut FeedStatus)) {
        f(&mut self.inner.lock().unwrap());
    }

    pub fn get(&self) -> FeedStatus {
        self.inner.lock().unwrap().clone()
    }
}

/// A feed as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FeedInfo {
    pub stream_name: String,
    /// The source, with any password replaced by `***`.
    pub source: FeedSource,
    pub fragment_ms: u32,
    pub status: FeedStatus,
}

/// Settings for feeds and the RTSP push listener.
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    /// Create the video stream on a first push/connection when it does not exist.
    pub auto_create: bool,
    /// DataRetentionInHours of streams created that way.
    pub retention_hours: u32,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            auto_create: true,
            retention_hours: 24,
        }
    }
}

/// `rtsp://user:secret@host/p` → `rtsp://user:***@host/p`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://{user}@{host}{path}")
            }
        }
        None => url.to_string(),
    }
}

fn redacted(source: &FeedSource) -> FeedSource {
    match source {
        FeedSource::RtspPull { url } => FeedSource::RtspPull {
            url: redact_url(url),
        },
        other => other.clone(),
    }
}

struct Running {
    config: FeedConfig,
    status: StatusCell,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Configured feeds and their tasks.
pub struct FeedManager {
    video: Arc<VideoService>,
    catalog: Arc<dyn Catalog>,
    clock: SharedClock,
    options: IngestOptions,
    feeds: Mutex<HashMap<String, Running>>,
    /// Serialises configuration changes.
    control: tokio::sync::Mutex<()>,
}

fn invalid(message: impl Into<String>) -> VideoError {
    VideoError::InvalidArgument(message.into())
}

/// Checks a configuration before it is stored.
pub fn validate(config: &FeedConfig) -> Result<(), VideoError> {
    let name = &config.stream_name;
    if name.is_empty()
        || name.len() > 256
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(invalid(format!(
            "StreamName {name:?} must be 1-256 characters of [a-zA-Z0-9_.-]."
        )));
    }
    if !(200..=20_000).contains(&config.fragment_ms) {
        return Err(invalid("FragmentMs must be between 200 and 20000."));
    }
    match &config.source {
        FeedSource::RtspPull { url } => {
            let lower = url.to_ascii_lowercase();
            if !(lower.starts_with("rtsp://") || lower.starts_with("rtsps://")) || url.len() > 2048
            {
                return Err(invalid("The camera URL must be an rtsp:// URL."));
            }
            if lower.starts_with("rtsps://") {
                return Err(invalid("rtsps:// (RTSP over TLS) is not supported."));
            }
        }
        FeedSource::RtpUdp {
            port,
            sdp,
            codec,
            payload_type,
        } => {
            if *port == 0 || *port == u16::MAX {
                return Err(invalid("Port must be between 1 and 65534."));
            }
            match (sdp, codec) {
                (Some(sdp), _) => {
                    session::media_from_sdp(sdp).map_err(invalid)?;
                }
                (None, Some(c)) => {
                    session::media_from_codec(c, payload_type.unwrap_or(96)).map_err(invalid)?;
                }
                (None, None) => {
                    return Err(invalid("An RTP feed needs an Sdp or a Codec (H264, H265)."));
                }
            }
        }
    }
    Ok(())
}

impl FeedManager {
    /// Loads the stored feeds and starts them.
    pub async fn open(
        video: Arc<VideoService>,
        catalog: Arc<dyn Catalog>,
        clock: SharedClock,
        options: IngestOptions,
    ) -> Result<Arc<Self>, VideoError> {
        let rows = {
            let catalog = catalog.clone();
            tokio::task::spawn_blocking(move || catalog.list(NAMESPACE))
                .await
                .map_err(|e| VideoError::Internal(e.to_string()))??
        };
        let manager = Arc::new(Self {
            video,
            catalog,
            clock,
            options,
            feeds: Mutex::new(HashMap::new()),
            control: tokio::sync::Mutex::new(()),
        });
        for (name, bytes) in rows {
            match serde_json::from_slice::<FeedConfig>(&bytes) {
                Ok(config) => manager.start(config),
                Err(e) => {
                    tracing::error!(stream = name, error = %e, "unreadable ingest feed record; skipped")
                }
            }
        }
        Ok(manager)
    }

    pub fn options(&self) -> IngestOptions {
        self.options
    }

    pub fn video(&self) -> &Arc<VideoService> {
        &self.video
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    fn start(self: &Arc<Self>, config: FeedConfig) {
        let status = StatusCell::new(self.clock.clone());
        let (stop, stopped) = watch::channel(false);
        let manager = self.clone();
        let cfg = config.clone();
        let cell = status.clone();
        let task = tokio::spawn(async move {
            match &cfg.source {
                FeedSource::RtspPull { url } => {
                    rtsp_pull::run(manager, cfg.clone(), url.clone(), cell, stopped).await
                }
                FeedSource::RtpUdp { .. } => udp::run(manager, cfg.clone(), cell, stopped).await,
            }
        });
        tracing::info!(
            stream = config.stream_name,
            source = ?redacted(&config.source),
            "ingest feed started"
        );
        let old = self.feeds.lock().unwrap().insert(
            config.stream_name.clone(),
            Running {
                config,
                status,
                stop,
                task,
            },
        );
        if let Some(old) = old {
            let _ = old.stop.send(true);
            old.task.abort();
        }
    }

    /// Adds or replaces a feed; it is stored durably, then (re)started.
    pub async fn put(self: &Arc<Self>, config: FeedConfig) -> Result<FeedInfo, VideoError> {
        validate(&config)?;
        let _guard = self.control.lock().await;
        if let FeedSource::RtpUdp { port, .. } = &config.source {
            let clash = self.feeds.lock().unwrap().values().any(|r| {
                r.config.stream_name != config.stream_name
                    && matches!(&r.config.source, FeedSource::RtpUdp { port: p, .. } if p == port)
            });
            if clash {
                return Err(VideoError::ResourceInUse(format!(
                    "UDP port {port} is already used by another feed."
                )));
            }
        }
        let bytes = serde_json::to_vec(&config).map_err(|e| VideoError::Internal(e.to_string()))?;
        let catalog = self.catalog.clone();
        let key = config.stream_name.clone();
        tokio::task::spawn_blocking(move || catalog.put(NAMESPACE, &key, bytes))
            .await
            .map_err(|e| VideoError::Internal(e.to_string()))??;
        // Stop the old task first so that its UDP port is free for the new one.
        let old = self.feeds.lock().unwrap().remove(&config.stream_name);
        if let Some(old) = old {
            let _ = old.stop.send(true);
            let _ = old.task.await;
        }
        let name = config.stream_name.clone();
        self.start(config);
        self.get(&name)
            .ok_or_else(|| VideoError::Internal("feed vanished".into()))
    }

    /// Stops and forgets a feed.
    pub async fn remove(&self, stream: &str) -> Result<(), VideoError> {
        let _guard = self.control.lock().await;
        let Some(running) = self.feeds.lock().unwrap().remove(stream) else {
            return Err(VideoError::ResourceNotFound(format!(
                "No ingest feed is configured for stream {stream}."
            )));
        };
        let catalog = self.catalog.clone();
        let key = stream.to_string();
        tokio::task::spawn_blocking(move || catalog.delete(NAMESPACE, &key))
            .await
            .map_err(|e| VideoError::Internal(e.to_string()))??;
        let _ = running.stop.send(true);
        let _ = running.task.await;
        tracing::info!(stream, "ingest feed removed");
        Ok(())
    }

    pub fn get(&self, stream: &str) -> Option<FeedInfo> {
        self.feeds.lock().unwrap().get(stream).map(info)
    }

    pub fn list(&self) -> Vec<FeedInfo> {
        let mut out: Vec<FeedInfo> = self.feeds.lock().unwrap().values().map(info).collect();
        out.sort_by(|a, b| a.stream_name.cmp(&b.stream_name));
        out
    }

    /// Stops every feed (shutdown).
    pub async fn stop_all(&self) {
        let feeds: Vec<Running> = self.feeds.lock().unwrap().drain().map(|(_, r)| r).collect();
        for r in feeds {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
    }
}

fn info(r: &Running) -> FeedInfo {
    FeedInfo {
        stream_name: r.config.stream_name.clone(),
        source: redacted(&r.config.source),
        fragment_ms: r.config.fragment_ms,
        status: r.status.get(),
    }
}

/// A feed from the config file's `[[feeds]]`.
pub fn feed_from_entry(e: &crate::config::FeedEntry) -> Result<FeedConfig, VideoError> {
    let source = match (&e.rtsp_url, e.rtp_port) {
        (Some(url), None) => FeedSource::RtspPull { url: url.clone() },
        (None, Some(port)) => FeedSource::RtpUdp {
            port,
            sdp: e.sdp.clone(),
            codec: e.codec.clone(),
            payload_type: e.payload_type,
        },
        _ => return Err(invalid("give exactly one of rtsp_url and rtp_port")),
    };
    let config = FeedConfig {
        stream_name: e.stream.clone(),
        source,
        fragment_ms: e.fragment_ms.unwrap_or_else(default_fragment_ms),
    };
    validate(&config)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("rtsp://admin:s3cret@10.0.0.5:554/live"),
            "rtsp://admin:***@10.0.0.5:554/live"
        );
        assert_eq!(redact_url("rtsp://admin@cam/live"), "rtsp://admin@cam/live");
        assert_eq!(redact_url("rtsp://cam/live"), "rtsp://cam/live");
        assert_eq!(redact_url("rtsp://u:p@ss@cam/x@y"), "rtsp://u:***@cam/x@y");
        let source = FeedSource::RtspPull {
            url: "rtsp://a:b@c/d".into(),
        };
        let json = serde_json::to_string(&redacted(&source)).unwrap();
        assert!(!json.contains(":b@"));
        assert_eq!(
            format!("{source:?}"),
            r#"RtspPull { url: "rtsp://a:***@c/d" }"#
        );
        let entry = crate::config::FeedEntry {
            rtsp_url: Some("rtsp://a:b@c/d".into()),
            ..Default::default()
        };
        assert!(!format!("{entry:?}").contains(":b@"));
    }
}
