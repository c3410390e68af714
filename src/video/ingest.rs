//! The one ingest path into the fragment store, shared by both front ends: PutMedia
//! (`api::putmedia`, fragments as the producer cut them) and camera feeds (RTP/RTSP,
//! `crate::ingest`, through [`IngestSink`]).
//!
//! What they share, so that they cannot drift apart:
//! - producer-time arithmetic ([`producer_timestamp_ms`], [`duration_ms_of_ns`]);
//! - [`IncomingFragment`]: the fragment's metadata, Cluster bytes, and the server time
//!   its first bytes arrived, which becomes its server timestamp (a fragment held open
//!   by a slow or stalled producer is not stamped with its end);
//! - [`VideoService::ingest_fragment`]: durable and indexed before it counts for a
//!   stream with retention; relayed to live readers, nothing stored, for one without.
//!
//! The time rules (`docs/video.md`, "The time rules"): producer timestamps are kept as
//! sent; fragments that go back in producer time or overlap are all stored and listed,
//! none is dropped. [`IngestSink`] cuts a feed's access units into key-frame-aligned
//! fragments (`media::fragmenter`); a producer clock that steps (a new RTCP Sender
//! Report mapping, a camera's clock set) by more than [`CLOCK_STEP_MS`] is tolerated
//! and counted as a discontinuity: frames up to the next key frame keep their spacing
//! after the previous frame, and the fragment that key frame starts takes the new
//! clock. Track 1 is the video; a change of codec configuration (new SPS/PPS, say)
//! ends the fragment and starts a new stream header, as a new PutMedia connection
//! would.

use std::sync::Arc;

use bytes::Bytes;

use super::fragments::FragmentMeta;
use super::{CreateVideoStream, Result, VideoError, VideoRef, VideoService, VideoStreamMeta};
use crate::media::fragmenter::{
    Block, BuiltFragment, FragmentPolicy, Fragmenter, TrackSpec, stream_header,
};

/// A step of a feed's producer clock (backwards, or forwards past a frame gap) larger
/// than this is a clock step, not jitter or B-frame reordering.
pub const CLOCK_STEP_MS: i64 = 2_000;

/// The producer timestamp of a fragment, in ms since the epoch: its Cluster timecode
/// (in `timecode_scale` ns units), plus the connection's start for RELATIVE
/// timecodes (`relative_start_ms`, from `x-amzn-producer-start-timestamp`). `None`
/// when it falls before the epoch.
pub fn producer_timestamp_ms(
    cluster_timecode: u64,
    timecode_scale: u64,
    relative_start_ms: Option<i64>,
) -> Option<i64> {
    let ms = cluster_timecode as u128 * timecode_scale.max(1) as u128 / 1_000_000;
    let ms = i64::try_from(ms).ok()?;
    let ts = relative_start_ms.map_or(Some(ms), |start| start.checked_add(ms))?;
    (ts >= 0).then_some(ts)
}

/// A fragment duration in ns to the nearest millisecond (consecutive fragments still
/// add up).
pub fn duration_ms_of_ns(duration_ns: u64) -> u64 {
    duration_ns.saturating_add(500_000) / 1_000_000
}

/// A complete fragment from a front end, ready to store.
#[derive(Debug, Clone)]
pub struct IncomingFragment {
    pub meta: FragmentMeta,
    pub cluster: Bytes,
    /// When its first bytes arrived, on the service's clock: its server timestamp.
    /// `None`: now.
    pub arrived_ms: Option<i64>,
}

/// Where a fragment went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub number: String,
    pub server_ms: i64,
    /// Its log offset; `None` when it was only relayed (a stream without retention).
    pub offset: Option<u64>,
}

impl VideoService {
    /// Stores a fragment from either front end: durably and indexed on a stream with
    /// retention (resolves once durable), relayed to live readers on one without.
    pub async fn ingest_fragment(
        &self,
        stream: &VideoStreamMeta,
        fragment: IncomingFragment,
    ) -> Result<Stored> {
        let IncomingFragment {
            meta,
            cluster,
            arrived_ms,
        } = fragment;
        if stream.retention_hours == 0 {
            let (number, server_ms) =
                self.relay_fragment_arrived(stream, meta, cluster, arrived_ms);
            return Ok(Stored {
                number,
                server_ms,
                offset: None,
            });
        }
        let (number, server_ms, offset) = self
            .append_fragment_arrived(stream, meta, cluster, arrived_ms)
            .await?;
        Ok(Stored {
            number,
            server_ms,
            offset: Some(offset),
        })
    }
}

/// What a feed has done so far (reported by the ingest status API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SinkStats {
    pub fragments_stored: u64,
    pub frames: u64,
    pub dropped_frames: u64,
    pub discontinuities: u64,
    /// Steps of the producer clock (more than [`CLOCK_STEP_MS`] either way), tolerated.
    pub clock_steps: u64,
    pub last_fragment_ms: i64,
}

impl SinkStats {
    /// Both counts added (the last fragment time is the later one).
    pub fn plus(&self, o: &SinkStats) -> SinkStats {
        SinkStats {
            fragments_stored: self.fragments_stored + o.fragments_stored,
            frames: self.frames + o.frames,
            dropped_frames: self.dropped_frames + o.dropped_frames,
            discontinuities: self.discontinuities + o.discontinuities,
            clock_steps: self.clock_steps + o.clock_steps,
            last_fragment_ms: self.last_fragment_ms.max(o.last_fragment_ms),
        }
    }
}

/// Writes one feed into one video stream.
pub struct IngestSink {
    video: Arc<VideoService>,
    stream: String,
    tracks: Vec<TrackSpec>,
    ebml_header: Bytes,
    info_and_tracks: Bytes,
    fragmenter: Fragmenter,
    policy: FragmentPolicy,
    /// Last time given per track: times never go backwards within a track.
    last_ms: Vec<i64>,
    /// Added to producer times after a clock step, until the next key frame.
    shift_ms: i64,
    /// When the first bytes of the fragment being cut arrived (server clock).
    open_since: Option<i64>,
    stats: SinkStats,
}

impl IngestSink {
    /// A sink for `stream`, which must exist (see [`ensure_stream`]).
    pub fn new(
        video: Arc<VideoService>,
        stream: &str,
        tracks: Vec<TrackSpec>,
        policy: FragmentPolicy,
    ) -> Self {
        let (ebml_header, info_and_tracks) = stream_header(&tracks, stream);
        Self {
            video,
            stream: stream.to_string(),
            last_ms: vec![i64::MIN; tracks.len()],
            tracks,
            ebml_header: Bytes::from(ebml_header),
            info_and_tracks: Bytes::from(info_and_tracks),
            fragmenter: Fragmenter::new(policy),
            policy,
            shift_ms: 0,
            open_since: None,
            stats: SinkStats::default(),
        }
    }

    pub fn tracks(&self) -> &[TrackSpec] {
        &self.tracks
    }

    pub fn stats(&self) -> SinkStats {
        let mut s = self.stats;
        s.dropped_frames = self.fragmenter.stats().dropped_blocks;
        s
    }

    /// The codec configuration changed (or became known): the current fragment ends
    /// and later ones carry the new stream header.
    pub async fn set_tracks(&mut self, tracks: Vec<TrackSpec>) -> Result<()> {
        if tracks == self.tracks {
            return Ok(());
        }
        if let Some(done) = self.fragmenter.flush() {
            self.store(done).await?;
        }
        let (ebml_header, info_and_tracks) = stream_header(&tracks, &self.stream);
        self.ebml_header = Bytes::from(ebml_header);
        self.info_and_tracks = Bytes::from(info_and_tracks);
        self.last_ms.resize(tracks.len(), i64::MIN);
        self.tracks = tracks;
        self.fragmenter = Fragmenter::new(self.policy);
        Ok(())
    }

    /// One access unit of track `track` (0 = video) presented at `time_ms`.
    pub async fn frame(
        &mut self,
        track: usize,
        time_ms: i64,
        keyframe: bool,
        data: Bytes,
    ) -> Result<()> {
        if track >= self.last_ms.len() {
            return Ok(());
        }
        let video = track == 0;
        if video && keyframe && self.shift_ms != 0 {
            // The producer clock stepped within the fragment: it ends here, and the
            // fragment this key frame starts takes the producer's clock as it is now.
            self.shift_ms = 0;
            self.last_ms.fill(i64::MIN);
            if let Some(done) = self.fragmenter.flush() {
                self.store(done).await?;
            }
        }
        let mut time_ms = time_ms.saturating_add(self.shift_ms);
        let last = self.last_ms[track];
        if last != i64::MIN && (time_ms < last - CLOCK_STEP_MS || time_ms > last + CLOCK_STEP_MS) {
            self.stats.clock_steps += 1;
            if video && keyframe {
                self.last_ms.fill(i64::MIN);
                if let Some(done) = self.fragmenter.flush() {
                    self.store(done).await?;
                }
            } else {
                // Until the next key frame, frames keep their spacing after the last.
                self.shift_ms += last + 1 - time_ms;
                time_ms = last + 1;
            }
        }
        let last = &mut self.last_ms[track];
        // Strictly increasing within a track (Matroska block times are presentation
        // times, and players want distinct ones).
        let time_ms = if *last == i64::MIN {
            time_ms
        } else {
            time_ms.max(*last + 1)
        };
        *last = time_ms;
        self.stats.frames += 1;
        let block = Block {
            track: track as u64 + 1,
            time_ms,
            keyframe,
            data,
        };
        let was_open = self.fragmenter.is_open();
        let done = self.fragmenter.push(block);
        let opened = self.fragmenter.is_open() && (done.is_some() || !was_open);
        if let Some(done) = done {
            self.store(done).await?;
        }
        if opened {
            // The first bytes of the next fragment arrived now.
            self.open_since = Some(self.video.now_ms());
        }
        Ok(())
    }

    /// Data was lost upstream: what is complete so far is stored, and the next fragment
    /// starts at the next key frame.
    pub async fn discontinuity(&mut self) -> Result<()> {
        self.stats.discontinuities += 1;
        if let Some(done) = self.fragmenter.discontinuity() {
            self.store(done).await?;
        }
        Ok(())
    }

    /// The feed ended: the last fragment is stored.
    pub async fn finish(&mut self) -> Result<()> {
        if let Some(done) = self.fragmenter.flush() {
            self.store(done).await?;
        }
        Ok(())
    }

    async fn store(&mut self, built: BuiltFragment) -> Result<()> {
        let arrived_ms = self.open_since.take();
        let meta = self.video.get(&VideoRef {
            name: Some(self.stream.clone()),
            arn: None,
        })?;
        let fm = FragmentMeta {
            producer_ts_ms: built.start_ms,
            cluster_timecode: built.start_ms as u64,
            timecode_scale: 1_000_000,
            duration_ms: built.duration_ms,
            frame_count: built.frame_count,
            ebml_header: self.ebml_header.clone(),
            info_and_tracks: self.info_and_tracks.clone(),
            producer_tags: Vec::new(),
        };
        // Every fragment is kept, also one that starts before the last (the producer
        // clock stepped back): listings order them by the documented rules.
        self.video
            .ingest_fragment(
                &meta,
                IncomingFragment {
                    meta: fm,
                    cluster: Bytes::from(built.cluster),
                    arrived_ms,
                },
            )
            .await?;
        self.stats.fragments_stored += 1;
        self.stats.last_fragment_ms = self.stats.last_fragment_ms.max(built.start_ms);
        Ok(())
    }
}

/// Makes sure `stream` exists and takes media, creating it (with `retention_hours`)
/// when `create` allows. A stream still CREATING takes media at once
/// ([`super::VideoStreamMeta::accepts_media`]).
pub async fn ensure_stream(
    video: &Arc<VideoService>,
    stream: &str,
    create: bool,
    retention_hours: u32,
) -> Result<()> {
    let r = VideoRef {
        name: Some(stream.to_string()),
        arn: None,
    };
    if video.get(&r).is_err() {
        if !create {
            return Err(VideoError::ResourceNotFound(format!(
                "The video stream {stream} does not exist, and ingest may not create it."
            )));
        }
        match video
            .create(CreateVideoStream {
                name: stream.to_string(),
                retention_hours,
                ..CreateVideoStream::default()
            })
            .await
        {
            Ok(_) | Err(VideoError::ResourceInUse(_)) => {}
            Err(e) => return Err(e),
        }
    }
    if video.get(&r)?.accepts_media() {
        return Ok(());
    }
    Err(VideoError::ResourceInUse(format!(
        "The video stream {stream} is being deleted."
    )))
}
