//! One RTP session into one video stream (RFC 3550): for each media of the SDP, a
//! reorder buffer, a depacketizer (RFC 6184 / 7798 / 3640) and an RTP clock; access
//! units go to the stream's [`IngestSink`]. Every transport (RTSP push over TCP or UDP,
//! RTSP pull, bare RTP on a UDP port) feeds packets in here.
//!
//! Track order in the stored stream is video first, then audio (only the first video
//! and the first AAC media are used). Nothing is stored until the video codec
//! configuration (SPS/PPS, from the SDP or in-band) is known; a loss makes the sink
//! end the current fragment and wait for the next key frame.

use std::sync::Arc;

use bytes::Bytes;

use crate::media::depacketize::{AccessUnit, Depacketizer};
use crate::media::fragmenter::{FragmentPolicy, RtpClock, TrackSpec};
use crate::media::rtp::{Reorder, ReorderConfig, ReorderEvent, RtpPacket, parse_rtcp};
use crate::media::samples::Codec;
use crate::media::sdp::{MediaDescription, RtpCodec, SessionDescription};
use crate::video::VideoService;
use crate::video::ingest::{IngestSink, SinkStats};

/// The media of an SDP that ingest can store: the first H.264/H.265 video, then the
/// first AAC audio if any. Errors name what is missing.
pub fn media_from_sdp(sdp: &str) -> Result<Vec<MediaDescription>, String> {
    let parsed = SessionDescription::parse(sdp.as_bytes()).map_err(|e| e.to_string())?;
    select_media(&parsed)
}

/// The chosen media of a parsed SDP (see [`media_from_sdp`]).
pub fn select_media(sdp: &SessionDescription) -> Result<Vec<MediaDescription>, String> {
    let video = sdp
        .supported_media()
        .find(|m| m.codec.as_ref().is_some_and(|c| c.codec.is_video()))
        .cloned()
        .ok_or("The SDP has no H.264 or H.265 video media.")?;
    let mut out = vec![video];
    if let Some(audio) = sdp
        .supported_media()
        .find(|m| m.codec.as_ref().is_some_and(|c| c.codec == Codec::Aac))
    {
        out.push(audio.clone());
    }
    Ok(out)
}

/// A single video media for a bare RTP feed configured by codec name and payload type.
pub fn media_from_codec(codec: &str, payload_type: u8) -> Result<Vec<MediaDescription>, String> {
    let codec = match codec.to_ascii_uppercase().as_str() {
        "H264" | "H.264" | "AVC" => Codec::H264,
        "H265" | "H.265" | "HEVC" => Codec::H265,
        other => return Err(format!("Codec {other:?} is not supported (H264, H265).")),
    };
    if !(96..=127).contains(&payload_type) {
        return Err("PayloadType must be a dynamic payload type (96-127).".into());
    }
    let fmtp: &[(&str, &str)] = if codec == Codec::H264 {
        &[("packetization-mode", "1")]
    } else {
        &[]
    };
    MediaDescription::for_codec(codec, 0, payload_type, 90_000, None, fmtp, None)
        .map(|m| vec![m])
        .map_err(|e| e.to_string())
}

/// Counters of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub packets: u64,
    pub lost: u64,
    pub malformed: u64,
    pub sink: SinkStats,
}

struct Track {
    codec: RtpCodec,
    reorder: Reorder,
    depacketizer: Depacketizer,
    clock: RtpClock,
    /// Access units (with arrival times) held until the clock is anchored.
    waiting: std::collections::VecDeque<(AccessUnit, i64)>,
}

/// How long access units wait for a first RTCP Sender Report before their times are
/// taken from arrival instead. Senders report within the first second or two; without
/// the wait, frames timed by arrival before the first report would be followed by
/// earlier, report-timed ones (encoder latency), and time would run backwards.
const SENDER_REPORT_WAIT_MS: i64 = 1_500;

/// See the module documentation.
pub struct RtpSession {
    video: Arc<VideoService>,
    stream: String,
    policy: FragmentPolicy,
    tracks: Vec<Track>,
    sink: Option<IngestSink>,
    stats: SessionStats,
}

impl RtpSession {
    /// A session for `media` (from [`select_media`]; video first).
    pub fn new(
        video: Arc<VideoService>,
        stream: &str,
        media: &[MediaDescription],
        policy: FragmentPolicy,
    ) -> Result<Self, String> {
        let mut tracks = Vec::new();
        for m in media {
            let codec = m.codec.clone().ok_or("media without a supported codec")?;
            let depacketizer = Depacketizer::new(&codec).map_err(|e| e.to_string())?;
            tracks.push(Track {
                clock: RtpClock::new(codec.clock_rate),
                reorder: Reorder::new(ReorderConfig::default()),
                waiting: std::collections::VecDeque::new(),
                depacketizer,
                codec,
            });
        }
        if tracks.first().is_none_or(|t| !t.codec.codec.is_video()) {
            return Err("the first media must be H.264 or H.265 video".into());
        }
        Ok(Self {
            video,
            stream: stream.to_string(),
            policy,
            tracks,
            sink: None,
            stats: SessionStats::default(),
        })
    }

    /// The index of the track using `payload_type` (for transports that multiplex
    /// media on one port), if any.
    pub fn track_of_payload_type(&self, payload_type: u8) -> Option<usize> {
        self.tracks
            .iter()
            .position(|t| t.codec.payload_type == payload_type)
    }

    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    pub fn stats(&self) -> SessionStats {
        let mut s = self.stats;
        if let Some(sink) = &self.sink {
            s.sink = sink.stats();
        }
        s
    }

    /// One RTP packet of track `track` that arrived at `now_ms`.
    pub async fn rtp(
        &mut self,
        track: usize,
        packet: Bytes,
        now_ms: i64,
    ) -> crate::video::Result<()> {
        let Some(t) = self.tracks.get_mut(track) else {
            return Ok(());
        };
        self.stats.packets += 1;
        let packet = match RtpPacket::parse(packet) {
            Ok(p) => p,
            Err(_) => {
                self.stats.malformed += 1;
                return Ok(());
            }
        };
        if packet.payload_type != t.codec.payload_type {
            self.stats.malformed += 1;
            return Ok(());
        }
        t.reorder.push(packet, now_ms.max(0) as u64);
        self.drain(track, now_ms, false).await
    }

    /// One RTCP packet of track `track`: Sender Reports anchor its clock.
    pub fn rtcp(&mut self, track: usize, packet: &[u8]) {
        let Some(t) = self.tracks.get_mut(track) else {
            return;
        };
        if let Ok(reports) = parse_rtcp(packet) {
            for sr in reports {
                t.clock.sender_report(sr.rtp_timestamp, sr.unix_ms);
            }
        }
    }

    /// Releases packets whose reorder wait is over. Call when
    /// [`RtpSession::next_deadline_ms`] passes.
    pub async fn tick(&mut self, now_ms: i64) -> crate::video::Result<()> {
        for track in 0..self.tracks.len() {
            self.drain(track, now_ms, false).await?;
            self.deliver(track, now_ms).await?;
        }
        Ok(())
    }

    /// The earliest time a held packet must be given up on.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.tracks
            .iter()
            .filter_map(|t| t.reorder.next_deadline_ms())
            .min()
            .map(|d| d.min(i64::MAX as u64) as i64)
    }

    /// The sender stopped: everything held is released and the last fragment stored.
    pub async fn finish(&mut self, now_ms: i64) -> crate::video::Result<()> {
        for track in 0..self.tracks.len() {
            self.drain(track, now_ms, true).await?;
            // Whatever still waits for a Sender Report is timed by arrival now.
            self.deliver(track, now_ms + SENDER_REPORT_WAIT_MS).await?;
        }
        if let Some(sink) = &mut self.sink {
            sink.finish().await?;
        }
        Ok(())
    }

    async fn drain(&mut self, track: usize, now_ms: i64, end: bool) -> crate::video::Result<()> {
        let at = if end { u64::MAX } else { now_ms.max(0) as u64 };
        loop {
            let t = &mut self.tracks[track];
            let Some(event) = t.reorder.pop(at) else {
                break;
            };
            if let ReorderEvent::Gap { lost } = &event {
                self.stats.lost += *lost as u64;
            }
            if t.depacketizer.push_event(&event).is_err() {
                self.stats.malformed += 1;
            }
            self.deliver(track, now_ms).await?;
        }
        if end {
            self.tracks[track].depacketizer.flush();
            self.deliver(track, now_ms).await?;
        }
        Ok(())
    }

    /// Hands finished access units of `track` to the sink, once its clock may time them.
    async fn deliver(&mut self, track: usize, now_ms: i64) -> crate::video::Result<()> {
        while let Some(au) = self.tracks[track].depacketizer.pop() {
            self.tracks[track].waiting.push_back((au, now_ms));
        }
        let t = &self.tracks[track];
        let ready = t.clock.has_sender_report()
            || t.waiting
                .front()
                .is_some_and(|(_, first)| now_ms - first >= SENDER_REPORT_WAIT_MS);
        if !ready {
            return Ok(());
        }
        while let Some((au, arrival)) = self.tracks[track].waiting.pop_front() {
            // The codec configuration can only change with a video key frame (new
            // parameter sets come with it): check it then, not for every frame.
            let check = self.sink.is_none() || (track == 0 && au.keyframe);
            if check && !self.ensure_sink().await? {
                // Codec configuration not known yet: nothing can be stored.
                continue;
            }
            let time_ms = self.tracks[track].clock.to_ms(au.rtp_timestamp, arrival);
            let sink = self.sink.as_mut().expect("ensured above");
            if au.discontinuity && track == 0 {
                sink.discontinuity().await?;
            }
            sink.frame(track, time_ms, au.keyframe, Bytes::from(au.data))
                .await?;
        }
        Ok(())
    }

    /// The track specs as known now; `None` until the video configuration is.
    fn track_specs(&self) -> Option<Vec<TrackSpec>> {
        let mut specs = Vec::new();
        for (i, t) in self.tracks.iter().enumerate() {
            let Some(private) = t.depacketizer.codec_private() else {
                if i == 0 {
                    return None;
                }
                continue;
            };
            let (width, height) = t.depacketizer.dimensions().unwrap_or((0, 0));
            let (sample_rate, channels) = t.depacketizer.audio_format().unwrap_or((0, 0));
            specs.push(TrackSpec {
                codec: t.codec.codec,
                codec_private: private,
                width,
                height,
                sample_rate,
                channels,
            });
        }
        Some(specs)
    }

    /// Creates the sink once the video configuration is known, and follows changes of
    /// it. Returns whether frames can be stored.
    async fn ensure_sink(&mut self) -> crate::video::Result<bool> {
        let Some(specs) = self.track_specs() else {
            return Ok(false);
        };
        match &mut self.sink {
            Some(sink) => {
                if sink.tracks() != specs.as_slice() {
                    sink.set_tracks(specs).await?;
                }
            }
            None => {
                self.sink = Some(IngestSink::new(
                    self.video.clone(),
                    &self.stream,
                    specs,
                    self.policy,
                ));
            }
        }
        Ok(true)
    }
}
