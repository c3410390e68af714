//! Video streams (Amazon Kinesis Video Streams semantics): the control plane — streams,
//! versions, retention, tags, data endpoints — as the Kinesis Video Streams API
//! reference describes it.
//!
//! Stream metadata lives in the catalog (namespace `video-streams`), mirrored in memory;
//! every change is persisted before it is applied. Each stream gets a fresh `Version`
//! whenever its metadata changes, so callers can guard updates and deletes with
//! `CurrentVersion`. Fragments (PutMedia ingest, reads) build on this.

pub mod fragments;
pub mod frozen;
pub mod images;
pub mod index;
pub mod index_log;
pub mod ingest;
pub mod playback;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::error::{Classified, ErrorKind};
use crate::store::catalog::{Catalog, CatalogError};
use crate::store::{Entry, Log, Store, StoreError};
use fragments::FragmentMeta;
use index::{Cursor, IndexEntry, ParsedToken, TimeBase, TimeRange};
use index_log::StreamIndex;

const NAMESPACE: &str = "video-streams";
const MAX_TAGS: usize = 50;

/// The tag that sets a stream's size cap in bytes: once its stored fragments exceed it,
/// the oldest go first (whole segments). A tag, so that any Kinesis Video client can
/// set it (createStream Tags, tagStream) and see it (listTagsForStream).
pub const SIZE_CAP_TAG: &str = "freshet:max-size-bytes";
/// The smallest size cap accepted.
pub const MIN_SIZE_CAP: u64 = 1024 * 1024;

/// The size cap a stream's tags set, if any (validated when the tag was set).
pub fn size_cap(tags: &BTreeMap<String, String>) -> Option<u64> {
    tags.get(SIZE_CAP_TAG).and_then(|v| v.trim().parse().ok())
}

fn check_size_cap(tags: &BTreeMap<String, String>) -> Result<()> {
    match tags.get(SIZE_CAP_TAG) {
        None => Ok(()),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n >= MIN_SIZE_CAP => Ok(()),
            _ => Err(VideoError::InvalidArgument(format!(
                "Tag {SIZE_CAP_TAG} must be a whole number of bytes, at least {MIN_SIZE_CAP}; got {v:?}."
            ))),
        },
    }
}

/// Segment size for a log with a size cap: small enough that deleting whole segments
/// keeps the stream within about an eighth of its cap.
fn segment_limit(cap: Option<u64>) -> u64 {
    cap.map_or(0, |c| (c / 8).max(64 * 1024))
}

/// Errors of the video control plane; each is one AWS error type.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ResourceInUse(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    VersionMismatch(String),
    #[error("{0}")]
    TagsPerResourceExceededLimit(String),
    #[error("{0}")]
    AccountStreamLimitExceeded(String),
    #[error("{0}")]
    Internal(String),
}

impl VideoError {
    pub fn aws_type(&self) -> &'static str {
        Classified::aws_type(self)
    }
}

impl Classified for VideoError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::ResourceNotFound(_) => ErrorKind::NotFound,
            Self::ResourceInUse(_) | Self::VersionMismatch(_) => ErrorKind::InUse,
            Self::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Self::TagsPerResourceExceededLimit(_) | Self::AccountStreamLimitExceeded(_) => {
                ErrorKind::LimitExceeded
            }
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    fn aws_type(&self) -> &'static str {
        match self {
            Self::ResourceNotFound(_) => "ResourceNotFoundException",
            Self::ResourceInUse(_) => "ResourceInUseException",
            Self::InvalidArgument(_) => "InvalidArgumentException",
            Self::VersionMismatch(_) => "VersionMismatchException",
            Self::TagsPerResourceExceededLimit(_) => "TagsPerResourceExceededLimitException",
            Self::AccountStreamLimitExceeded(_) => "AccountStreamLimitExceededException",
            Self::Internal(_) => "InternalFailure",
        }
    }
}

impl From<StoreError> for VideoError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage failure");
        Self::Internal(e.to_string())
    }
}

impl From<CatalogError> for VideoError {
    fn from(e: CatalogError) -> Self {
        tracing::error!(error = %e, "catalog failure");
        Self::Internal(e.to_string())
    }
}

pub type Result<T, E = VideoError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VideoStatus {
    Creating,
    Active,
    Updating,
    Deleting,
}

impl VideoStatus {
    /// The status as the API spells it (`CREATING`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            VideoStatus::Creating => "CREATING",
            VideoStatus::Active => "ACTIVE",
            VideoStatus::Updating => "UPDATING",
            VideoStatus::Deleting => "DELETING",
        }
    }
}

/// A video stream as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoStreamMeta {
    /// Server-wide unique id: part of fragment numbers and of the log's id.
    #[serde(default = "random_stream_id")]
    pub stream_id: u64,
    pub name: String,
    pub arn: String,
    pub device_name: Option<String>,
    pub media_type: Option<String>,
    pub kms_key_id: String,
    pub version: String,
    pub status: VideoStatus,
    pub created_ms: i64,
    /// 0 = fragments are not kept (live GetMedia only).
    pub retention_hours: u32,
    pub tags: BTreeMap<String, String>,
}

/// The `StreamInfo` shape.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    pub stream_name: String,
    #[serde(rename = "StreamARN")]
    pub stream_arn: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub kms_key_id: String,
    pub version: String,
    pub status: VideoStatus,
    pub creation_time: f64,
    pub data_retention_in_hours: u32,
}

impl VideoStreamMeta {
    /// Whether media may be put into the stream now. A stream takes media as soon as
    /// CreateStream has returned: the producer SDK calls CreateStream, GetDataEndpoint
    /// and PutMedia within milliseconds without waiting for ACTIVE (CREATING stays
    /// visible in DescribeStream for waiters). Only a stream being deleted refuses.
    pub fn accepts_media(&self) -> bool {
        self.status != VideoStatus::Deleting
    }

    pub fn info(&self) -> StreamInfo {
        StreamInfo {
            device_name: self.device_name.clone(),
            stream_name: self.name.clone(),
            stream_arn: self.arn.clone(),
            media_type: self.media_type.clone(),
            kms_key_id: self.kms_key_id.clone(),
            version: self.version.clone(),
            status: self.status,
            creation_time: self.created_ms as f64 / 1000.0,
            data_retention_in_hours: self.retention_hours,
        }
    }
}

/// How a request names a video stream.
#[derive(Debug, Clone, Default)]
pub struct VideoRef {
    pub name: Option<String>,
    pub arn: Option<String>,
}

/// Settings of the video service.
#[derive(Debug, Clone)]
pub struct VideoConfig {
    pub account_id: String,
    pub region: String,
    /// How long a new stream stays CREATING.
    pub state_delay_ms: u64,
    pub stream_limit: usize,
    /// Rows appended to a stream's index log between two checkpoints of its fragment
    /// index ([`index_log::CHECKPOINT_ROWS`] by default; tests use a few).
    pub index_checkpoint_rows: u64,
}

impl Default for VideoConfig {
    fn default() -> Self {
        Self {
            account_id: "000000000000".into(),
            region: "us-east-1".into(),
            state_delay_ms: 500,
            stream_limit: 10_000,
            index_checkpoint_rows: index_log::CHECKPOINT_ROWS,
        }
    }
}

/// What createStream takes.
#[derive(Debug, Clone, Default)]
pub struct CreateVideoStream {
    pub name: String,
    pub device_name: Option<String>,
    pub media_type: Option<String>,
    pub kms_key_id: Option<String>,
    pub retention_hours: u32,
    pub tags: BTreeMap<String, String>,
}

/// The video control-plane service.
/// A fragment of a stream that keeps no data (DataRetentionInHours = 0), handed
/// straight from PutMedia to live GetMedia readers.
#[derive(Debug)]
pub struct LiveFragment {
    pub number: String,
    pub server_ms: i64,
    pub meta: FragmentMeta,
    pub cluster: Bytes,
}

pub struct VideoService {
    config: VideoConfig,
    /// Signs playback (HLS/DASH) session tokens; kept in the catalog so that sessions
    /// survive a restart.
    session_key: [u8; 32],
    /// Live relays of streams without retention, by stream id.
    live: Mutex<HashMap<u64, tokio::sync::broadcast::Sender<Arc<LiveFragment>>>>,
    /// Makes relayed fragment numbers unique within one millisecond.
    live_seq: std::sync::atomic::AtomicU64,
    clock: SharedClock,
    catalog: Arc<dyn Catalog>,
    store: Arc<Store>,
    /// Open fragment logs by stream id.
    logs: Mutex<HashMap<u64, Arc<Log>>>,
    streams: RwLock<HashMap<String, VideoStreamMeta>>,
    /// Serialises changes (rare) so version checks and writes are atomic.
    control: tokio::sync::Mutex<()>,
    /// The persistent fragment index of each stream used since start-up, by stream id;
    /// loaded (and reconciled) once, by whichever request needs it first.
    fragment_indexes: Mutex<HashMap<u64, Arc<tokio::sync::OnceCell<Arc<StreamIndex>>>>>,
    /// Fragment indexes rebuilt from every fragment (index log missing or unreadable).
    index_rebuilds: std::sync::atomic::AtomicU64,
    /// Fragment indexes loaded from a checkpoint since start-up.
    index_checkpoint_loads: std::sync::atomic::AtomicU64,
    /// Fragments indexed again from their bodies at load because their rows were
    /// missing (not counting full rebuilds).
    index_reindexed: std::sync::atomic::AtomicU64,
}

/// Where GetMedia starts (its `StartSelector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaStart {
    Earliest,
    Now,
    /// At this fragment (a fragment number of the stream).
    FragmentNumber(String),
    /// After the fragment a continuation token names.
    ContinuationToken(String),
    /// The first fragment to arrive at or after this server time (ms).
    ServerTime(i64),
    /// The fragment with the earliest producer start at or after this time (ms).
    ProducerTime(i64),
}

/// What ListFragments asks for.
#[derive(Debug, Clone)]
pub struct FragmentListing {
    /// `None`: no FragmentSelector (server time, or the clock of the token's listing).
    pub base: Option<TimeBase>,
    /// `None`: every fragment (or the range of the token's listing).
    pub range: Option<TimeRange>,
    pub next_token: Option<String>,
    pub max: usize,
}

/// One listed fragment.
#[derive(Debug, Clone)]
pub struct ListedFragment {
    pub number: String,
    pub entry: IndexEntry,
}

/// A page of ListFragments.
#[derive(Debug, Clone)]
pub struct FragmentPage {
    pub fragments: Vec<ListedFragment>,
    pub next_token: Option<String>,
}

fn random_stream_id() -> u64 {
    // 63 random bits: fits the 20-digit field of fragment numbers.
    u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[..8]
            .try_into()
            .unwrap_or_default(),
    ) >> 1
}

fn new_version() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..20].to_string()
}

impl VideoService {
    pub async fn open(
        config: VideoConfig,
        clock: SharedClock,
        catalog: Arc<dyn Catalog>,
        store: Arc<Store>,
    ) -> Result<Arc<Self>> {
        let rows = {
            let catalog = catalog.clone();
            tokio::task::spawn_blocking(move || catalog.list(NAMESPACE))
                .await
                .map_err(|e| VideoError::Internal(e.to_string()))??
        };
        let session_key = {
            let catalog = catalog.clone();
            tokio::task::spawn_blocking(move || -> Result<[u8; 32]> {
                if let Some(k) = catalog.get("secrets", "playback-session-key")?
                    && let Ok(k) = <[u8; 32]>::try_from(k.as_slice())
                {
                    return Ok(k);
                }
                let mut k = [0u8; 32];
                k[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                k[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
                catalog.put("secrets", "playback-session-key", k.to_vec())?;
                Ok(k)
            })
            .await
            .map_err(|e| VideoError::Internal(e.to_string()))??
        };
        let mut streams = HashMap::new();
        for (name, bytes) in rows {
            match serde_json::from_slice::<VideoStreamMeta>(&bytes) {
                Ok(mut meta) => {
                    if meta.status == VideoStatus::Deleting {
                        let c = catalog.clone();
                        let n = name.clone();
                        tokio::task::spawn_blocking(move || c.delete(NAMESPACE, &n))
                            .await
                            .map_err(|e| VideoError::Internal(e.to_string()))??;
                        continue;
                    }
                    meta.status = VideoStatus::Active;
                    streams.insert(name, meta);
                }
                Err(e) => {
                    tracing::error!(stream = name, error = %e, "unreadable video stream record; skipped")
                }
            }
        }
        Ok(Arc::new(Self {
            config,
            session_key,
            clock,
            catalog,
            store,
            logs: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
            live_seq: std::sync::atomic::AtomicU64::new(0),
            streams: RwLock::new(streams),
            control: tokio::sync::Mutex::new(()),
            fragment_indexes: Mutex::new(HashMap::new()),
            index_rebuilds: std::sync::atomic::AtomicU64::new(0),
            index_checkpoint_loads: std::sync::atomic::AtomicU64::new(0),
            index_reindexed: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// The key that signs playback session tokens.
    pub fn session_key(&self) -> &[u8; 32] {
        &self.session_key
    }

    /// Now, on the service's clock (injectable for tests).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn not_found(&self) -> VideoError {
        VideoError::ResourceNotFound("The requested stream is not found or not active.".into())
    }

    async fn persist(&self, meta: &VideoStreamMeta) -> Result<()> {
        let bytes = serde_json::to_vec(meta).map_err(|e| VideoError::Internal(e.to_string()))?;
        let catalog = self.catalog.clone();
        let name = meta.name.clone();
        tokio::task::spawn_blocking(move || catalog.put(NAMESPACE, &name, bytes))
            .await
            .map_err(|e| VideoError::Internal(e.to_string()))??;
        Ok(())
    }

    /// Finds a stream by name or ARN (an ARN must match the stream's exactly).
    pub fn get(&self, r: &VideoRef) -> Result<VideoStreamMeta> {
        let streams = self.streams.read().unwrap();
        let found = match (&r.name, &r.arn) {
            (Some(name), arn) => streams
                .get(name)
                .filter(|m| arn.as_ref().is_none_or(|a| *a == m.arn)),
            (None, Some(arn)) => streams.values().find(|m| m.arn == *arn),
            (None, None) => {
                return Err(VideoError::InvalidArgument(
                    "Either StreamName or StreamARN must be specified.".into(),
                ));
            }
        };
        found.cloned().ok_or_else(|| self.not_found())
    }

    pub async fn create(self: &Arc<Self>, input: CreateVideoStream) -> Result<String> {
        let _guard = self.control.lock().await;
        {
            let streams = self.streams.read().unwrap();
            if streams.contains_key(&input.name) {
                return Err(VideoError::ResourceInUse(format!(
                    "The stream {} already exists.",
                    input.name
                )));
            }
            if streams.len() >= self.config.stream_limit {
                return Err(VideoError::AccountStreamLimitExceeded(format!(
                    "The account has reached its limit of {} video streams.",
                    self.config.stream_limit
                )));
            }
        }
        if input.tags.len() > MAX_TAGS {
            return Err(VideoError::TagsPerResourceExceededLimit(format!(
                "A stream can have at most {MAX_TAGS} tags."
            )));
        }
        check_size_cap(&input.tags)?;
        let now = self.clock.now_ms();
        let delayed = self.config.state_delay_ms > 0;
        let meta = VideoStreamMeta {
            stream_id: random_stream_id(),
            arn: format!(
                "arn:aws:kinesisvideo:{}:{}:stream/{}/{}",
                self.config.region, self.config.account_id, input.name, now
            ),
            name: input.name,
            device_name: input.device_name,
            media_type: input.media_type,
            kms_key_id: input.kms_key_id.unwrap_or_else(|| {
                format!(
                    "arn:aws:kms:{}:{}:alias/aws/kinesisvideo",
                    self.config.region, self.config.account_id
                )
            }),
            version: new_version(),
            status: if delayed {
                VideoStatus::Creating
            } else {
                VideoStatus::Active
            },
            created_ms: now,
            retention_hours: input.retention_hours,
            tags: input.tags,
        };
        self.persist(&meta).await?;
        let arn = meta.arn.clone();
        let name = meta.name.clone();
        self.streams.write().unwrap().insert(name.clone(), meta);
        if delayed {
            let svc = self.clone();
            let delay = self.config.state_delay_ms;
            let arn2 = arn.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                let _ = svc
                    .change(
                        &VideoRef {
                            name: None,
                            arn: Some(arn2),
                        },
                        None,
                        |m| {
                            if m.status == VideoStatus::Creating {
                                m.status = VideoStatus::Active;
                            }
                            Ok(())
                        },
                    )
                    .await;
            });
        }
        tracing::info!(stream = name, "video stream created");
        Ok(arn)
    }

    /// Applies a change under the control lock: checks `current_version` if given,
    /// edits a copy, gives it a new version, persists, installs.
    async fn change(
        &self,
        r: &VideoRef,
        current_version: Option<&str>,
        edit: impl FnOnce(&mut VideoStreamMeta) -> Result<()>,
    ) -> Result<VideoStreamMeta> {
        let _guard = self.control.lock().await;
        let mut meta = self.get(r)?;
        if let Some(v) = current_version
            && v != meta.version
        {
            return Err(VideoError::VersionMismatch(format!(
                "The stream version {v} does not match the current version {}.",
                meta.version
            )));
        }
        edit(&mut meta)?;
        meta.version = new_version();
        self.persist(&meta).await?;
        self.streams
            .write()
            .unwrap()
            .insert(meta.name.clone(), meta.clone());
        Ok(meta)
    }

    pub async fn delete(self: &Arc<Self>, arn: &str, current_version: Option<&str>) -> Result<()> {
        let r = VideoRef {
            name: None,
            arn: Some(arn.to_string()),
        };
        let meta = self
            .change(&r, current_version, |m| {
                m.status = VideoStatus::Deleting;
                Ok(())
            })
            .await?;
        let svc = self.clone();
        let delay = self.config.state_delay_ms;
        let run = async move {
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            let _guard = svc.control.lock().await;
            let still_ours = svc
                .streams
                .read()
                .unwrap()
                .get(&meta.name)
                .is_some_and(|m| m.arn == meta.arn);
            if still_ours {
                svc.streams.write().unwrap().remove(&meta.name);
                crate::metrics::metrics().forget_video(&meta.name);
                svc.logs.lock().unwrap().remove(&meta.stream_id);
                svc.fragment_indexes.lock().unwrap().remove(&meta.stream_id);
                let catalog = svc.catalog.clone();
                let store = svc.store.clone();
                let name = meta.name.clone();
                let log_id = log_id(&meta);
                let _ = tokio::task::spawn_blocking(move || {
                    let _ = catalog.delete(NAMESPACE, &name);
                    // The fragment log and, inside it, the index log.
                    store.remove_log_tree(&log_id)
                })
                .await;
            }
            tracing::info!(stream = meta.name, "video stream deleted");
        };
        if delay == 0 {
            run.await;
        } else {
            tokio::spawn(run);
        }
        Ok(())
    }

    pub async fn update(
        &self,
        r: &VideoRef,
        current_version: &str,
        device_name: Option<String>,
        media_type: Option<String>,
    ) -> Result<()> {
        self.change(r, Some(current_version), |m| {
            if m.status != VideoStatus::Active {
                return Err(VideoError::ResourceInUse(
                    "The stream is not ACTIVE.".into(),
                ));
            }
            if device_name.is_some() {
                m.device_name = device_name;
            }
            if media_type.is_some() {
                m.media_type = media_type;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub async fn update_retention(
        &self,
        r: &VideoRef,
        current_version: &str,
        increase: bool,
        hours: u32,
    ) -> Result<()> {
        self.change(r, Some(current_version), |m| {
            if increase {
                m.retention_hours = m.retention_hours.saturating_add(hours);
            } else {
                if hours > m.retention_hours {
                    return Err(VideoError::InvalidArgument(format!(
                        "Cannot decrease the data retention by {hours} hours: the stream keeps data for {} hours.",
                        m.retention_hours
                    )));
                }
                m.retention_hours -= hours;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Streams in name order after `after`, optionally with a name prefix; at most `max`.
    pub fn list(
        &self,
        prefix: Option<&str>,
        after: Option<&str>,
        max: usize,
    ) -> (Vec<StreamInfo>, bool) {
        let streams = self.streams.read().unwrap();
        let mut names: Vec<&String> = streams
            .keys()
            .filter(|n| prefix.is_none_or(|p| n.starts_with(p)))
            .filter(|n| after.is_none_or(|a| n.as_str() > a))
            .collect();
        names.sort();
        let more = names.len() > max;
        (
            names
                .into_iter()
                .take(max)
                .map(|n| streams[n].info())
                .collect(),
            more,
        )
    }

    pub async fn tag(&self, r: &VideoRef, tags: BTreeMap<String, String>) -> Result<()> {
        check_size_cap(&tags)?;
        let meta = self
            .change(r, None, |m| {
                let added = tags.keys().filter(|k| !m.tags.contains_key(*k)).count();
                if m.tags.len() + added > MAX_TAGS {
                    return Err(VideoError::TagsPerResourceExceededLimit(format!(
                        "A stream can have at most {MAX_TAGS} tags."
                    )));
                }
                m.tags.extend(tags);
                Ok(())
            })
            .await?;
        self.apply_size_cap(&meta).await
    }

    /// Makes a stream's open log follow its size cap (segment size, and trimming now).
    async fn apply_size_cap(&self, meta: &VideoStreamMeta) -> Result<()> {
        let log = self.logs.lock().unwrap().get(&meta.stream_id).cloned();
        if let Some(log) = log {
            let cap = size_cap(&meta.tags);
            log.set_segment_limit(segment_limit(cap));
            if let Some(cap) = cap
                && self.store.enforce_size(&log, cap).await? > 0
            {
                self.trim_fragment_index(meta, &log).await?;
            }
        }
        Ok(())
    }

    pub async fn untag(&self, r: &VideoRef, keys: &[String]) -> Result<()> {
        let meta = self
            .change(r, None, |m| {
                for k in keys {
                    m.tags.remove(k);
                }
                Ok(())
            })
            .await?;
        self.apply_size_cap(&meta).await
    }

    /// The fragment log of a stream, opened (and recovered) on first use.
    async fn log(&self, meta: &VideoStreamMeta) -> Result<Arc<Log>> {
        if let Some(log) = self.logs.lock().unwrap().get(&meta.stream_id) {
            return Ok(log.clone());
        }
        let store = self.store.clone();
        let id = log_id(meta);
        let log = tokio::task::spawn_blocking(move || store.open_log(&id))
            .await
            .map_err(|e| VideoError::Internal(e.to_string()))??;
        log.set_segment_limit(segment_limit(size_cap(&meta.tags)));
        self.logs
            .lock()
            .unwrap()
            .insert(meta.stream_id, log.clone());
        Ok(log)
    }

    fn live_sender(&self, stream_id: u64) -> tokio::sync::broadcast::Sender<Arc<LiveFragment>> {
        self.live
            .lock()
            .unwrap()
            .entry(stream_id)
            .or_insert_with(|| tokio::sync::broadcast::channel(16).0)
            .clone()
    }

    /// Hands a fragment of a stream without retention to its live readers (nothing is
    /// stored). Fragment numbers are time-based, so they keep increasing across
    /// restarts. Returns the fragment number and server timestamp.
    pub fn relay_fragment(
        &self,
        meta: &VideoStreamMeta,
        fragment: FragmentMeta,
        cluster: Bytes,
    ) -> (String, i64) {
        self.relay_fragment_arrived(meta, fragment, cluster, None)
    }

    /// [`VideoService::relay_fragment`] with the server timestamp taken from
    /// `arrived_ms` (never later than now); the fragment number stays time-based on
    /// now, so numbers still increase.
    pub(crate) fn relay_fragment_arrived(
        &self,
        meta: &VideoStreamMeta,
        fragment: FragmentMeta,
        cluster: Bytes,
        arrived_ms: Option<i64>,
    ) -> (String, i64) {
        let clock_now = self.clock.now_ms();
        let now = arrived_ms.map_or(clock_now, |a| a.min(clock_now));
        let seq = self
            .live_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            & 0xFFF;
        let number =
            fragments::fragment_number(meta.stream_id, ((clock_now.max(0) as u64) << 12) | seq);
        let _ = self
            .live_sender(meta.stream_id)
            .send(Arc::new(LiveFragment {
                number: number.clone(),
                server_ms: now,
                meta: fragment,
                cluster,
            }));
        (number, now)
    }

    /// Live fragments of a stream without retention, from now on.
    pub fn subscribe_live(
        &self,
        meta: &VideoStreamMeta,
    ) -> tokio::sync::broadcast::Receiver<Arc<LiveFragment>> {
        self.live_sender(meta.stream_id).subscribe()
    }

    /// (first stored offset, next offset) of a stream's fragments.
    pub async fn fragment_bounds(&self, meta: &VideoStreamMeta) -> Result<(u64, u64)> {
        let b = self.log(meta).await?.bounds();
        Ok((b.first_offset, b.end_offset))
    }

    /// The offset of the first fragment that arrived at or after `server_ms`.
    pub async fn offset_at_server_time(
        &self,
        meta: &VideoStreamMeta,
        server_ms: i64,
    ) -> Result<u64> {
        let log = self.log(meta).await?;
        Ok(self.store.offset_at_time(&log, server_ms).await?)
    }

    /// Waits until a fragment at or after `offset` is durable, or `timeout` passes.
    pub async fn wait_for_fragment(
        &self,
        meta: &VideoStreamMeta,
        offset: u64,
        timeout: std::time::Duration,
    ) {
        let Ok(log) = self.log(meta).await else {
            return;
        };
        let mut rx = log.watch_end();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|end| *end > offset)).await;
    }

    /// Deletes fragments older than each stream's retention period (whole segments, as
    /// for data streams). Returns the number of segments removed.
    pub async fn enforce_retention(&self) -> Result<usize> {
        let now = self.clock.now_ms();
        let streams: Vec<VideoStreamMeta> =
            self.streams.read().unwrap().values().cloned().collect();
        let mut removed = 0;
        for meta in streams {
            if meta.retention_hours == 0 {
                continue;
            }
            let cutoff = now - meta.retention_hours as i64 * 3_600_000;
            let log = self.log(&meta).await?;
            let mut trimmed = self.store.enforce_retention(&log, cutoff).await?;
            if let Some(cap) = size_cap(&meta.tags) {
                trimmed += self.store.enforce_size(&log, cap).await?;
            }
            if trimmed > 0 {
                self.trim_fragment_index(&meta, &log).await?;
            }
            removed += trimmed;
        }
        Ok(removed)
    }

    /// Bytes on disk of each video stream whose fragment log is open, for `/metrics`.
    pub fn storage_bytes(&self) -> Vec<(String, u64)> {
        let logs = self.logs.lock().unwrap();
        self.streams
            .read()
            .unwrap()
            .values()
            .filter_map(|m| Some((m.name.clone(), logs.get(&m.stream_id)?.total_bytes())))
            .collect()
    }

    /// The log offset the next fragment of a stream will get.
    pub async fn fragment_end_offset(&self, meta: &VideoStreamMeta) -> Result<u64> {
        Ok(self.log(meta).await?.bounds().end_offset)
    }

    /// Stores one fragment durably; returns its fragment number, server timestamp and
    /// log offset. The server timestamp is the commit time; front ends store through
    /// [`VideoService::ingest_fragment`], which stamps the arrival of the first bytes.
    pub async fn append_fragment(
        &self,
        meta: &VideoStreamMeta,
        fragment: FragmentMeta,
        cluster: Bytes,
    ) -> Result<(String, i64, u64)> {
        self.append_fragment_arrived(meta, fragment, cluster, None)
            .await
    }

    /// [`VideoService::append_fragment`] with the server timestamp taken from
    /// `arrived_ms` (clamped by the store: never after the commit, never before the
    /// stream's previous fragment).
    pub(crate) async fn append_fragment_arrived(
        &self,
        meta: &VideoStreamMeta,
        fragment: FragmentMeta,
        cluster: Bytes,
        arrived_ms: Option<i64>,
    ) -> Result<(String, i64, u64)> {
        let log = self.log(meta).await?;
        let index = self.stream_index(meta).await?;
        let size = cluster.len();
        let started = std::time::Instant::now();
        let ack = self
            .store
            .append_arrived(
                &log,
                vec![Entry {
                    head: fragment.encode(),
                    body: cluster,
                }],
                arrived_ms,
            )
            .await?;
        // Durable now: index it (the row is written after, never before).
        index.record(IndexEntry::of_fragment(
            ack.first_offset,
            ack.timestamp_ms,
            &fragment,
            size,
        ));
        let m = crate::metrics::metrics().video(&meta.name);
        m.fragments.inc();
        m.bytes.inc_by(size as u64);
        m.ack_latency
            .observe(crate::metrics::seconds_since(started));
        // The cap as tagged now (the caller's copy of the metadata may be older).
        let cap = self
            .streams
            .read()
            .unwrap()
            .get(&meta.name)
            .and_then(|m| size_cap(&m.tags));
        if let Some(cap) = cap
            && self.store.enforce_size(&log, cap).await? > 0
        {
            self.trim_fragment_index(meta, &log).await?;
        }
        Ok((
            fragments::fragment_number(meta.stream_id, ack.first_offset),
            ack.timestamp_ms,
            ack.first_offset,
        ))
    }

    /// Fragments of a stream from log offset `from` (at most `max`), decoded:
    /// (fragment number, server timestamp ms, metadata, Cluster bytes).
    pub async fn read_fragments(
        &self,
        meta: &VideoStreamMeta,
        from: u64,
        max: usize,
    ) -> Result<Vec<(String, i64, FragmentMeta, Bytes)>> {
        self.read_fragments_limited(meta, from, max, 8 * 1024 * 1024)
            .await
    }

    /// Like [`VideoService::read_fragments`], reading at most about `max_bytes` (at
    /// least one fragment).
    pub async fn read_fragments_limited(
        &self,
        meta: &VideoStreamMeta,
        from: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<(String, i64, FragmentMeta, Bytes)>> {
        let log = self.log(meta).await?;
        let batch = self.store.read(&log, from, max, max_bytes).await?;
        Ok(batch
            .entries
            .into_iter()
            .filter_map(|e| {
                let (m, cluster) = FragmentMeta::decode(&e.payload)?;
                Some((
                    fragments::fragment_number(meta.stream_id, e.offset),
                    e.timestamp_ms,
                    m,
                    cluster,
                ))
            })
            .collect())
    }
}

fn log_id(meta: &VideoStreamMeta) -> String {
    format!("kvs/{}-{}", meta.name, meta.stream_id)
}

/// The index log of a stream: inside its fragment log's directory, so that removing
/// the stream's log tree removes both.
fn index_log_id(meta: &VideoStreamMeta) -> String {
    format!("{}/fragment-index", log_id(meta))
}

impl VideoService {
    /// Fragment indexes rebuilt from every fragment since start-up (an index log was
    /// missing or unreadable). Normal restarts rebuild none.
    pub fn index_rebuilds(&self) -> u64 {
        self.index_rebuilds
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fragment indexes loaded from a checkpoint (and the index-log rows after it)
    /// since start-up.
    pub fn index_checkpoint_loads(&self) -> u64 {
        self.index_checkpoint_loads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fragments indexed again from their bodies at load since start-up, because the
    /// index log lacked their rows (its tail was lost); full rebuilds not counted.
    pub fn index_fragments_reindexed(&self) -> u64 {
        self.index_reindexed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The fragment index of a stream, loaded and reconciled on first use.
    pub async fn stream_index(&self, meta: &VideoStreamMeta) -> Result<Arc<StreamIndex>> {
        let cell = self
            .fragment_indexes
            .lock()
            .unwrap()
            .entry(meta.stream_id)
            .or_default()
            .clone();
        let index = cell
            .get_or_try_init(|| self.load_fragment_index(meta))
            .await?;
        Ok(index.clone())
    }

    async fn load_fragment_index(&self, meta: &VideoStreamMeta) -> Result<Arc<StreamIndex>> {
        let log = self.log(meta).await?;
        let store = self.store.clone();
        let id = index_log_id(meta);
        let started = std::time::Instant::now();
        let loaded = tokio::task::spawn_blocking(move || index_log::load(&store, &log, &id))
            .await
            .map_err(|e| VideoError::Internal(e.to_string()))??;
        if loaded.checkpointed > 0 {
            self.index_checkpoint_loads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if loaded.rebuilt {
            self.index_rebuilds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                stream = meta.name,
                "fragment index of {} rebuilt from {} fragments",
                meta.name,
                loaded.derived.len()
            );
        } else {
            self.index_reindexed.fetch_add(
                loaded.derived.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            tracing::debug!(
                stream = meta.name,
                entries = loaded.index.len(),
                reindexed = loaded.derived.len(),
                from_checkpoint = loaded.checkpointed > 0,
                log_rows = loaded.rows_read,
                dropped = loaded.dropped,
                ms = started.elapsed().as_millis() as u64,
                "fragment index loaded"
            );
        }
        let first_server_ms = loaded.index.entries().next().map(|e| e.server_ms);
        let index = StreamIndex::start(
            self.store.clone(),
            loaded.log,
            loaded.index,
            loaded.checkpointed,
            self.config.index_checkpoint_rows,
        );
        for e in loaded.derived {
            index.persist(e);
        }
        if loaded.rows_read as u64 >= self.config.index_checkpoint_rows.max(1) {
            // The next start reads the checkpoint instead of these rows.
            index.checkpoint_in_background();
        }
        if loaded.dropped > 0 {
            self.trim_index_log(&index, first_server_ms).await?;
        }
        Ok(index)
    }

    /// After fragments expired: drops their entries, then index segments holding only
    /// rows older than the first kept fragment. A stream whose index is not loaded is
    /// reconciled when it is.
    async fn trim_fragment_index(&self, meta: &VideoStreamMeta, log: &Arc<Log>) -> Result<()> {
        let Some(index) = self
            .fragment_indexes
            .lock()
            .unwrap()
            .get(&meta.stream_id)
            .and_then(|c| c.get().cloned())
        else {
            return Ok(());
        };
        let first = log.bounds().first_offset;
        let first_server_ms = {
            let mut idx = index.index.write().unwrap();
            idx.trim_before(first);
            idx.entries().next().map(|e| e.server_ms)
        };
        self.trim_index_log(&index, first_server_ms).await
    }

    /// Deletes index segments whose rows were all written before `first_server_ms`
    /// (rows are written after their fragments, so such rows name expired fragments
    /// only); `None`: no fragment is left, so every row older than now goes.
    async fn trim_index_log(
        &self,
        index: &StreamIndex,
        first_server_ms: Option<i64>,
    ) -> Result<()> {
        let cutoff = first_server_ms.unwrap_or_else(|| self.clock.now_ms());
        self.store.enforce_retention(&index.log, cutoff).await?;
        Ok(())
    }

    /// ListFragments: a page of the stream's fragments on one clock, in that clock's
    /// order (see `index`), after the page a `next_token` ended.
    pub async fn list_fragments(
        &self,
        meta: &VideoStreamMeta,
        q: &FragmentListing,
    ) -> Result<FragmentPage> {
        let index = self.stream_index(meta).await?;
        let idx = index.index.read().unwrap();
        let invalid = || VideoError::InvalidArgument("Invalid NextToken.".into());
        let token = match &q.next_token {
            None => None,
            Some(t) => Some(Cursor::parse(meta.stream_id, t).ok_or_else(invalid)?),
        };
        // A request with only a token continues the token's listing: its clock (a
        // producer-order token carries a producer start) and its range.
        let base = q.base.unwrap_or(match token {
            Some(ParsedToken {
                start_ms: Some(_), ..
            }) => TimeBase::Producer,
            _ => TimeBase::Server,
        });
        let range = q.range.or_else(|| token.and_then(|t| t.range));
        let from = match token {
            None => None,
            Some(t) => {
                let start_ms = match (base, t.start_ms) {
                    (TimeBase::Server, _) => 0,
                    (TimeBase::Producer, Some(ms)) => ms,
                    (TimeBase::Producer, None) => {
                        idx.get(t.offset).ok_or_else(invalid)?.producer_ms
                    }
                };
                Some(Cursor {
                    start_ms,
                    offset: t.offset,
                })
            }
        };
        let (entries, next) = idx.list(base, range, from, q.max);
        Ok(FragmentPage {
            fragments: entries
                .into_iter()
                .map(|entry| ListedFragment {
                    number: fragments::fragment_number(meta.stream_id, entry.offset),
                    entry,
                })
                .collect(),
            next_token: next.map(|c| c.token(meta.stream_id, base, range.as_ref())),
        })
    }

    /// The index entries of fragments by offset (`None` for one not stored), without
    /// reading media.
    pub async fn fragment_entries(
        &self,
        meta: &VideoStreamMeta,
        offsets: &[u64],
    ) -> Result<Vec<Option<IndexEntry>>> {
        let index = self.stream_index(meta).await?;
        let idx = index.index.read().unwrap();
        Ok(offsets.iter().map(|&o| idx.get(o)).collect())
    }

    /// The log offset GetMedia starts reading at.
    pub async fn media_start(&self, meta: &VideoStreamMeta, start: &MediaStart) -> Result<u64> {
        let own = |text: &str| {
            fragments::parse_fragment_number(text)
                .filter(|(id, _)| *id == meta.stream_id)
                .map(|(_, o)| o)
        };
        let (first, end) = self.fragment_bounds(meta).await?;
        let by_time = |base, ms| async move {
            let index = self.stream_index(meta).await?;
            let found = index.index.read().unwrap().first_at_or_after(base, ms);
            Ok::<u64, VideoError>(found.map_or(end, |e| e.offset))
        };
        Ok(match start {
            MediaStart::Earliest => first,
            MediaStart::Now => end,
            MediaStart::FragmentNumber(n) => own(n).ok_or_else(|| {
                VideoError::InvalidArgument(
                    "AfterFragmentNumber is missing or is not a fragment of this stream.".into(),
                )
            })?,
            MediaStart::ContinuationToken(t) => own(t)
                .ok_or_else(|| {
                    VideoError::InvalidArgument("ContinuationToken is missing or invalid.".into())
                })?
                .saturating_add(1),
            MediaStart::ServerTime(ms) => by_time(TimeBase::Server, *ms).await?,
            MediaStart::ProducerTime(ms) => by_time(TimeBase::Producer, *ms).await?,
        })
    }
}
