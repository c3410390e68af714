//! Cutting a live elementary stream (from RTP/RTSP ingest) into Kinesis Video
//! fragments: Matroska (RFC 9559) stream headers and Clusters built from access units,
//! one Cluster per fragment, each starting with a video key frame.
//!
//! The output has the same shape as a PutMedia fragment after the reader re-serialised
//! it (EBML header, Info + Tracks, a Cluster with an 8-byte size and SimpleBlocks), so
//! the fragment store, GetMedia, HLS/DASH, GetClip and GetImages treat RTP-fed streams
//! exactly like PutMedia-fed ones. TimecodeScale is 1 ms and timecodes are producer
//! time in ms since the epoch (ABSOLUTE, as kvssink sends).
//!
//! [`Fragmenter`] decides where fragments end: at the first video key frame once the
//! fragment spans the target duration; at a discontinuity (loss upstream) the frames
//! so far form a fragment and nothing is kept until the next key frame. Pure: no I/O,
//! times are passed in.
//!
//! A fragment's duration runs from its key frame to the end of its last video frame,
//! as for PutMedia fragments (`media::mkv::Fragment::duration_ns`): up to the key frame
//! that starts the next fragment when that is what ended it, else one mean video frame
//! spacing past the last video frame (a lone frame: the spacing of the fragment
//! before), so consecutive fragments tile the timeline.

use bytes::Bytes;

use super::ebml;
use super::mkv::{TRACK_TYPE_AUDIO, TRACK_TYPE_VIDEO, ids};
use super::mkv_writer::default_ebml_header;
use super::samples::Codec;

/// A track of an ingested stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSpec {
    pub codec: Codec,
    /// avcC / hvcC / AudioSpecificConfig.
    pub codec_private: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub sample_rate: u32,
    pub channels: u16,
}

impl TrackSpec {
    fn codec_id(&self) -> &'static str {
        match self.codec {
            Codec::H264 => "V_MPEG4/ISO/AVC",
            Codec::H265 => "V_MPEGH/ISO/HEVC",
            Codec::Aac => "A_AAC",
        }
    }
}

/// The EBML header and the Info + Tracks elements of an ingested stream (track
/// numbers 1, 2, ... in order; put the video track first).
pub fn stream_header(tracks: &[TrackSpec], title: &str) -> (Vec<u8>, Vec<u8>) {
    let mut info = Vec::new();
    ebml::write_uint_element(&mut info, ids::TIMECODE_SCALE, 1_000_000);
    ebml::write_string_element(&mut info, ids::TITLE, title);
    ebml::write_string_element(&mut info, ids::MUXING_APP, "freshet");
    ebml::write_string_element(&mut info, ids::WRITING_APP, "freshet rtp ingest");
    let mut out = Vec::new();
    ebml::write_element(&mut out, ids::INFO, &info);
    let mut entries = Vec::new();
    for (i, t) in tracks.iter().enumerate() {
        let number = i as u64 + 1;
        let mut e = Vec::new();
        ebml::write_uint_element(&mut e, ids::TRACK_NUMBER, number);
        ebml::write_uint_element(&mut e, ids::TRACK_UID, number);
        let video = t.codec != Codec::Aac;
        ebml::write_uint_element(
            &mut e,
            ids::TRACK_TYPE,
            if video {
                TRACK_TYPE_VIDEO
            } else {
                TRACK_TYPE_AUDIO
            },
        );
        ebml::write_string_element(&mut e, ids::CODEC_ID, t.codec_id());
        if !t.codec_private.is_empty() {
            ebml::write_element(&mut e, ids::CODEC_PRIVATE, &t.codec_private);
        }
        if video {
            let mut v = Vec::new();
            ebml::write_uint_element(&mut v, ids::PIXEL_WIDTH, t.width as u64);
            ebml::write_uint_element(&mut v, ids::PIXEL_HEIGHT, t.height as u64);
            ebml::write_element(&mut e, ids::VIDEO, &v);
        } else {
            let mut a = Vec::new();
            ebml::write_float_element(&mut a, ids::SAMPLING_FREQUENCY, t.sample_rate as f64);
            ebml::write_uint_element(&mut a, ids::CHANNELS, t.channels.max(1) as u64);
            ebml::write_element(&mut e, ids::AUDIO, &a);
        }
        ebml::write_element(&mut entries, ids::TRACK_ENTRY, &e);
    }
    ebml::write_element(&mut out, ids::TRACKS, &entries);
    (default_ebml_header(), out)
}

/// One frame for a Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// 1-based track number (position in the track list + 1).
    pub track: u64,
    /// Presentation time, ms since the epoch.
    pub time_ms: i64,
    pub keyframe: bool,
    pub data: Bytes,
}

/// A finished fragment: its Cluster bytes and what the fragment store records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltFragment {
    /// Cluster timecode = producer timestamp of the fragment, ms.
    pub start_ms: i64,
    /// From the first frame to the end of the last, ms.
    pub duration_ms: u64,
    pub frame_count: u32,
    /// The Cluster element (8-byte size) with its Timecode and SimpleBlocks.
    pub cluster: Vec<u8>,
}

/// Builds a Cluster from blocks (in decode order) starting at `start_ms`, lasting
/// `duration_ms`. Block times are written relative to it; they must lie within
/// ±32.767 s (the fragmenter cuts long before).
pub fn build_cluster(start_ms: i64, blocks: &[Block], duration_ms: u64) -> BuiltFragment {
    let mut payload = Vec::with_capacity(blocks.iter().map(|b| b.data.len() + 16).sum());
    ebml::write_uint_element(&mut payload, ids::TIMECODE, start_ms.max(0) as u64);
    for b in blocks {
        let rel = (b.time_ms - start_ms).clamp(i16::MIN as i64, i16::MAX as i64) as i16;
        let mut head = Vec::with_capacity(4);
        // Track number as an EBML vint (tracks 1..=126 fit one byte).
        head.push(0x80 | (b.track.clamp(1, 126) as u8));
        head.extend_from_slice(&rel.to_be_bytes());
        head.push(if b.keyframe { 0x80 } else { 0x00 });
        ebml::write_id(&mut payload, ids::SIMPLE_BLOCK);
        ebml::write_size(&mut payload, (head.len() + b.data.len()) as u64)
            .expect("a block length fits 8 bytes");
        payload.extend_from_slice(&head);
        payload.extend_from_slice(&b.data);
    }
    let mut cluster = Vec::with_capacity(payload.len() + 12);
    ebml::write_element_fixed(&mut cluster, ids::CLUSTER, &payload, 8)
        .expect("a cluster length fits 8 bytes");
    BuiltFragment {
        start_ms,
        duration_ms,
        frame_count: blocks.len() as u32,
        cluster,
    }
}

/// Where fragments end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentPolicy {
    /// A fragment ends at the first video key frame after this long (default 2 s).
    pub target_ms: i64,
    /// Without a key frame, a fragment is abandoned past this many bytes (a stream
    /// whose key frames stopped must not grow without bound).
    pub max_bytes: usize,
    /// Blocks may not span more than this (Matroska's 16-bit relative timecodes).
    pub max_span_ms: i64,
}

impl Default for FragmentPolicy {
    fn default() -> Self {
        Self {
            target_ms: 2_000,
            max_bytes: 50 * 1024 * 1024,
            max_span_ms: 30_000,
        }
    }
}

/// What the fragmenter did with a block, besides maybe finishing a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragmenterStats {
    pub fragments: u64,
    /// Blocks dropped while waiting for a key frame (at the start, after a loss, or
    /// after an abandoned fragment).
    pub dropped_blocks: u64,
    /// Fragments abandoned for growing too large or too long without a key frame.
    pub abandoned: u64,
}

/// Groups blocks into fragments. Track 1 is the video track.
#[derive(Debug, Default)]
pub struct Fragmenter {
    policy: FragmentPolicy,
    pending: Vec<Block>,
    pending_bytes: usize,
    start_ms: Option<i64>,
    /// The mean video frame spacing (ms) of the latest fragment with more than one
    /// video frame: how long a lone last frame lasts.
    frame_ms: Option<i64>,
    stats: FragmenterStats,
}

impl Fragmenter {
    pub fn new(policy: FragmentPolicy) -> Self {
        Self {
            policy,
            ..Self::default()
        }
    }

    pub fn stats(&self) -> FragmenterStats {
        self.stats
    }

    /// Adds a block (decode order per track; tracks interleaved roughly by time).
    /// Returns a finished fragment when this block starts a new one.
    pub fn push(&mut self, block: Block) -> Option<BuiltFragment> {
        let video = block.track == 1;
        let mut done = None;
        if video && block.keyframe {
            let span = self.start_ms.map(|s| block.time_ms - s);
            if span.is_some_and(|s| s >= self.policy.target_ms) {
                done = self.finish(Some(block.time_ms));
            }
            if self.start_ms.is_none() {
                self.start_ms = Some(block.time_ms);
            }
        }
        let Some(start) = self.start_ms else {
            // Nothing until the first key frame.
            self.stats.dropped_blocks += 1;
            return done;
        };
        if block.time_ms < start {
            // Audio from before the fragment's key frame: it belongs to nothing.
            self.stats.dropped_blocks += 1;
            return done;
        }
        if self.pending_bytes + block.data.len() > self.policy.max_bytes
            || block.time_ms - start > self.policy.max_span_ms
        {
            self.abandon();
            self.stats.dropped_blocks += 1;
            return done;
        }
        self.pending_bytes += block.data.len();
        self.pending.push(block);
        done
    }

    /// Whether a fragment is being cut (its key frame came, it has not ended).
    pub fn is_open(&self) -> bool {
        self.start_ms.is_some()
    }

    /// Upstream lost data: what is complete so far becomes a fragment, and nothing is
    /// kept until the next key frame.
    pub fn discontinuity(&mut self) -> Option<BuiltFragment> {
        self.finish(None)
    }

    /// The stream ended: the last fragment, if any.
    pub fn flush(&mut self) -> Option<BuiltFragment> {
        self.finish(None)
    }

    /// Ends the pending fragment; `next_key_ms` is the time of the key frame that
    /// starts the next one, if that is what ends it.
    fn finish(&mut self, next_key_ms: Option<i64>) -> Option<BuiltFragment> {
        let start = self.start_ms.take()?;
        let blocks = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        if blocks.is_empty() {
            return None;
        }
        self.stats.fragments += 1;
        let duration_ms = self.duration_ms(start, &blocks, next_key_ms);
        Some(build_cluster(start, &blocks, duration_ms))
    }

    /// From `start` (the key frame) to the end of the last video frame; see the module
    /// documentation.
    fn duration_ms(&mut self, start: i64, blocks: &[Block], next_key_ms: Option<i64>) -> u64 {
        let video = || blocks.iter().filter(|b| b.track == 1).map(|b| b.time_ms);
        let frames = video().count() as i64;
        let last = video().max().unwrap_or(start).max(start);
        let end = match next_key_ms.filter(|&next| next > last) {
            Some(next) => {
                self.frame_ms = Some((next - start) / frames.max(1)).filter(|&d| d > 0);
                next
            }
            None => {
                let spacing = (frames > 1)
                    .then(|| ((last - start) * 2 + frames - 1) / (2 * (frames - 1)))
                    .filter(|&d| d > 0);
                if spacing.is_some() {
                    self.frame_ms = spacing;
                }
                last + spacing.or(self.frame_ms).unwrap_or(0)
            }
        };
        (end - start).max(0) as u64
    }

    fn abandon(&mut self) {
        self.stats.abandoned += 1;
        self.stats.dropped_blocks += self.pending.len() as u64;
        self.pending.clear();
        self.pending_bytes = 0;
        self.start_ms = None;
    }
}

/// How far a Sender Report may disagree with the clock's mapping before it re-anchors
/// (a sender whose clock was reset). Smaller disagreements are the sender's own jitter
/// between its RTP and NTP clocks; following them would move frames back and forth.
const SENDER_REPORT_TOLERANCE_MS: i64 = 1_000;

/// Maps a track's RTP timestamps to producer time (ms since the epoch): anchored at the
/// first packet's arrival, then at each RTCP Sender Report's NTP time (RFC 3550 §6.4.1),
/// with 32-bit wrap-around unwrapped.
#[derive(Debug, Clone)]
pub struct RtpClock {
    rate: u32,
    last: Option<u32>,
    /// The last timestamp, extended past wrap-arounds.
    ext: i64,
    /// (extended RTP timestamp, ms since the epoch) that correspond.
    anchor: Option<(i64, i64)>,
    sender_report_seen: bool,
}

impl RtpClock {
    pub fn new(rate: u32) -> Self {
        Self {
            rate: rate.max(1),
            last: None,
            ext: 0,
            anchor: None,
            sender_report_seen: false,
        }
    }

    fn extend(&mut self, ts: u32) -> i64 {
        match self.last {
            None => self.ext = ts as i64,
            Some(last) => self.ext += ts.wrapping_sub(last) as i32 as i64,
        }
        self.last = Some(ts);
        self.ext
    }

    /// The time of a packet with timestamp `ts` that arrived at `arrival_ms`.
    pub fn to_ms(&mut self, ts: u32, arrival_ms: i64) -> i64 {
        let ext = self.extend(ts);
        let (a_ts, a_ms) = *self.anchor.get_or_insert((ext, arrival_ms));
        a_ms + ((ext - a_ts) * 1000).div_euclid(self.rate as i64)
    }

    /// A Sender Report: RTP timestamp `ts` was sampled at wall-clock `wall_ms`.
    pub fn sender_report(&mut self, ts: u32, wall_ms: i64) {
        // A report may be older or newer than the last packet: extend relative to it
        // without moving it.
        let ext = match self.last {
            None => ts as i64,
            Some(last) => self.ext + ts.wrapping_sub(last) as i32 as i64,
        };
        // Once frames were timed (by an earlier report, or by arrival when the first
        // report came late), a report that roughly agrees is not followed: moving the
        // mapping would step frame times back or forth.
        if let Some((a_ts, a_ms)) = self.anchor {
            let predicted = a_ms + ((ext - a_ts) * 1000).div_euclid(self.rate as i64);
            if (predicted - wall_ms).abs() <= SENDER_REPORT_TOLERANCE_MS {
                self.sender_report_seen = true;
                return;
            }
        }
        self.anchor = Some((ext, wall_ms));
        self.sender_report_seen = true;
    }

    /// Whether a Sender Report has anchored this clock to the sender's wall clock.
    pub fn has_sender_report(&self) -> bool {
        self.sender_report_seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::mkv::{Limits, MkvEvent, MkvReader};
    use crate::media::mkv_writer::SEGMENT_UNKNOWN_SIZE_HEADER;

    fn video(ms: i64, key: bool) -> Block {
        Block {
            track: 1,
            time_ms: ms,
            keyframe: key,
            data: Bytes::from(vec![0, 0, 0, 2, 0x65, ms as u8]),
        }
    }

    fn audio(ms: i64) -> Block {
        Block {
            track: 2,
            time_ms: ms,
            keyframe: true,
            data: Bytes::from_static(&[0x21, 0x10]),
        }
    }

    fn tracks() -> Vec<TrackSpec> {
        vec![
            TrackSpec {
                codec: Codec::H264,
                codec_private: vec![1, 0x42, 0xC0, 0x1E, 0xFF, 0xE0, 0x00],
                width: 320,
                height: 240,
                sample_rate: 0,
                channels: 0,
            },
            TrackSpec {
                codec: Codec::Aac,
                codec_private: vec![0x11, 0x90],
                width: 0,
                height: 0,
                sample_rate: 48_000,
                channels: 2,
            },
        ]
    }

    #[test]
    fn fragments_start_at_key_frames_after_the_target() {
        let mut f = Fragmenter::new(FragmentPolicy::default());
        let mut out = Vec::new();
        // Audio and a delta frame before the first key frame are dropped.
        out.extend(f.push(audio(990)));
        out.extend(f.push(video(995, false)));
        // 25 fps with a key frame every second: fragments of 2 s.
        for i in 0..125 {
            let t = 1000 + i * 40;
            out.extend(f.push(video(t, i % 25 == 0)));
            out.extend(f.push(audio(t + 5)));
        }
        out.extend(f.flush());
        assert_eq!(f.stats().dropped_blocks, 2);
        let starts: Vec<i64> = out.iter().map(|f| f.start_ms).collect();
        assert_eq!(starts, [1000, 3000, 5000]);
        assert_eq!(out[0].frame_count, 100);
        // Up to the next fragment's key frame (not 1965 ms, first to last block).
        assert_eq!(out[0].duration_ms, 2000);
        assert_eq!(out[2].frame_count, 50);
        // The last one: 25 video frames and one spacing (40 ms) past the last.
        assert_eq!(out[2].duration_ms, 1000);
        let total: u64 = out.iter().map(|f| f.duration_ms).sum();
        assert_eq!(total, 125 * 40);
    }

    #[test]
    fn a_discontinuity_ends_the_fragment_and_waits_for_a_key_frame() {
        let mut f = Fragmenter::new(FragmentPolicy::default());
        assert!(f.push(video(0, true)).is_none());
        assert!(f.push(video(40, false)).is_none());
        let cut = f.discontinuity().unwrap();
        assert_eq!((cut.start_ms, cut.frame_count), (0, 2));
        assert_eq!(cut.duration_ms, 80);
        assert!(f.push(video(120, false)).is_none());
        assert!(f.push(video(160, true)).is_none());
        let next = f.flush().unwrap();
        assert_eq!((next.start_ms, next.frame_count), (160, 1));
        // A lone frame lasts the frame spacing of the fragment before.
        assert_eq!(next.duration_ms, 40);
        assert_eq!(f.stats().dropped_blocks, 1);
    }

    #[test]
    fn a_stream_without_key_frames_cannot_grow_without_bound() {
        let mut f = Fragmenter::new(FragmentPolicy {
            max_bytes: 60,
            ..FragmentPolicy::default()
        });
        f.push(video(0, true));
        for i in 1..40 {
            f.push(video(i * 40, false));
        }
        assert_eq!(f.stats().abandoned, 1);
        assert!(f.flush().is_none());
    }

    #[test]
    fn rtp_time_unwraps_and_follows_sender_reports() {
        let mut c = RtpClock::new(90_000);
        assert_eq!(c.to_ms(u32::MAX - 8999, 5_000), 5_000);
        // 9000 ticks later, across the wrap: 100 ms.
        assert_eq!(c.to_ms(0, 9_999), 5_100);
        assert_eq!(c.to_ms(90_000, 0), 6_100);
        // A Sender Report says timestamp 90000 was sampled at 10 s.
        c.sender_report(90_000, 10_000);
        assert_eq!(c.to_ms(180_000, 0), 11_000);
        // A later report within a second of the mapping changes nothing; a larger
        // disagreement (the sender's clock was reset) re-anchors.
        c.sender_report(270_000, 12_300);
        assert_eq!(c.to_ms(270_000, 0), 12_000);
        c.sender_report(270_000, 15_000);
        assert_eq!(c.to_ms(360_000, 0), 16_000);
        // Frames before the report's timestamp round the same way as those after it.
        let mut d = RtpClock::new(90_000);
        d.to_ms(0, 0);
        d.sender_report(5_000, 10_000);
        let times: Vec<i64> = (0..4).map(|i| d.to_ms(i * 3600, 0)).collect();
        assert_eq!(times, [9_944, 9_984, 10_024, 10_064]);
        // A first report that roughly agrees with arrival timing (sent late, after
        // frames were timed) is not followed.
        let mut late = RtpClock::new(90_000);
        late.to_ms(0, 1_000);
        late.sender_report(90_000, 2_044);
        assert!(late.has_sender_report());
        assert_eq!(late.to_ms(90_000, 0), 2_000);
        let mut audio = RtpClock::new(48_000);
        assert_eq!(audio.to_ms(1000, 1_000), 1_000);
        assert_eq!(audio.to_ms(1000 + 48_000 * 3, 1_000), 4_000);
    }

    #[test]
    fn built_fragments_read_back_as_putmedia_fragments() {
        let (ebml_header, info_and_tracks) = stream_header(&tracks(), "cam");
        let blocks = [video(1000, true), audio(1005), video(1040, false)];
        let built = build_cluster(1000, &blocks, 80);
        let mut doc = ebml_header.clone();
        doc.extend_from_slice(&SEGMENT_UNKNOWN_SIZE_HEADER);
        doc.extend_from_slice(&info_and_tracks);
        doc.extend_from_slice(&built.cluster);
        let events = MkvReader::new(Limits::default()).read_to_end(&doc).unwrap();
        let header = events
            .iter()
            .find_map(|e| match e {
                MkvEvent::Header(h) => Some(h.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(header.timecode_scale, 1_000_000);
        assert_eq!(header.tracks.len(), 2);
        assert_eq!(header.tracks[0].codec_id, "V_MPEG4/ISO/AVC");
        assert_eq!(header.tracks[1].audio.unwrap().sampling_frequency, 48_000.0);
        let frames: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                MkvEvent::Frame(f) => Some((f.track, f.timecode, f.keyframe)),
                _ => None,
            })
            .collect();
        assert_eq!(frames, [(1, 1000, true), (2, 1005, true), (1, 1040, false)]);
        let fragment = events
            .iter()
            .find_map(|e| match e {
                MkvEvent::FragmentEnd(f) => Some(f.clone()),
                _ => None,
            })
            .unwrap();
        // Byte for byte what the store keeps for a PutMedia fragment.
        assert_eq!(fragment.raw_cluster_bytes, built.cluster);
        assert_eq!(fragment.cluster_timecode, 1000);
    }
}
