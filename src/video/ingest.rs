//! Camera ingest into the fragment store: the sink that every RTP/RTSP feed writes to.
//!
//! A feed hands in access units per track with producer times (ms since the epoch);
//! [`IngestSink`] cuts them into key-frame-aligned fragments (`media::fragmenter`) and
//! stores each exactly as PutMedia does (`VideoService::append_fragment`: durable before
//! it counts; streams without retention relay to live readers). Track 1 is the video;
//! a change of codec configuration (new SPS/PPS, say) ends the fragment and starts a new
//! stream header, as a new PutMedia connection would.

use std::sync::Arc;

use bytes::Bytes;

use super::fragments::FragmentMeta;
use super::{CreateVideoStream, Result, VideoError, VideoRef, VideoService};
use crate::media::fragmenter::{
    Block, BuiltFragment, FragmentPolicy, Fragmenter, TrackSpec, stream_header,
};

/// What a feed has done so far (reported by the ingest status API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SinkStats {
    pub fragments_stored: u64,
    pub frames: u64,
    pub dropped_frames: u64,
    pub discontinuities: u64,
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
    /// Start of the last stored fragment: fragment times increase.
    last_start_ms: i64,
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
            last_start_ms: i64::MIN,
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
        let Some(last) = self.last_ms.get_mut(track) else {
            return Ok(());
        };
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
        if let Some(done) = self.fragmenter.push(block) {
            self.store(done).await?;
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
        if built.start_ms <= self.last_start_ms {
            // A clock step backwards (a new Sender Report, say): a fragment may not
            // start before the previous one, so this one is dropped.
            tracing::warn!(
                stream = self.stream,
                start = built.start_ms,
                "ingest fragment out of time order dropped"
            );
            return Ok(());
        }
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
        let cluster = Bytes::from(built.cluster);
        if meta.retention_hours == 0 {
            self.video.relay_fragment(&meta, fm, cluster);
        } else {
            self.video.append_fragment(&meta, fm, cluster).await?;
        }
        self.last_start_ms = built.start_ms;
        self.stats.fragments_stored += 1;
        self.stats.last_fragment_ms = built.start_ms;
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
