//! Codec-neutral media samples: what the playback muxers (`fmp4`, `ts`) take in.
//!
//! A stored fragment is a Matroska Cluster plus the Info and Tracks in force for it
//! (`video::fragments`). [`demux_fragment`] turns it into [`MediaTrack`]s and
//! [`Sample`]s with absolute nanosecond timestamps, decode order, presentation times
//! and durations, so that the ISO BMFF (ISO/IEC 14496-12) and MPEG-TS
//! (ISO/IEC 13818-1) writers never look at Matroska.
//!
//! A sample lasts until the next sample of its track; the last one of each track as
//! long as the Matroska reader says a fragment's last frame lasts (BlockDuration, else
//! DefaultDuration, else the track's mean frame spacing; `media::mkv`), except that
//! the video track ends where the stored fragment duration says (which follows the
//! same rule) when that is within half a frame of it. So a segment lasts what
//! ListFragments, the HLS playlist and the DASH manifest say.
//!
//! Sample data stays in the form Matroska and MP4 share: H.264/H.265 access units as
//! length-prefixed NAL units (4-byte lengths, as the CodecPrivate configuration record
//! says), AAC as raw access units without ADTS headers.

use bytes::Bytes;

/// The codecs playback supports (`PROTOCOLS.md`: track 1 H.264 or H.265, track 2 AAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// `V_MPEG4/ISO/AVC`; codec private = AVCDecoderConfigurationRecord (ISO/IEC 14496-15).
    H264,
    /// `V_MPEGH/ISO/HEVC`; codec private = HEVCDecoderConfigurationRecord.
    H265,
    /// `A_AAC`; codec private = AudioSpecificConfig (ISO/IEC 14496-3).
    Aac,
}

impl Codec {
    /// The codec of a Matroska CodecID, if playback supports it.
    pub fn from_matroska(codec_id: &str) -> Option<Codec> {
        match codec_id {
            "V_MPEG4/ISO/AVC" => Some(Codec::H264),
            "V_MPEGH/ISO/HEVC" => Some(Codec::H265),
            "A_AAC" | "A_AAC/MPEG4/LC" | "A_AAC/MPEG2/LC" => Some(Codec::Aac),
            _ => None,
        }
    }

    pub fn is_video(self) -> bool {
        matches!(self, Codec::H264 | Codec::H265)
    }
}

/// One track of a fragment, as the muxers need it.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaTrack {
    /// The Matroska TrackNumber.
    pub number: u64,
    pub codec: Codec,
    /// avcC / hvcC / AudioSpecificConfig bytes, exactly as in the Matroska CodecPrivate
    /// (except that [`demux_fragment`] sets an avcC/hvcC `lengthSizeMinusOne` of 0 or 1
    /// to 3 when it rewrites the samples to 4-byte NAL unit lengths).
    pub codec_private: Bytes,
    /// Video only (0 for audio).
    pub width: u32,
    pub height: u32,
    /// Audio only (0 for video).
    pub sample_rate: u32,
    pub channels: u16,
}

impl MediaTrack {
    /// The media timescale the muxers use: 90 kHz for video, the sample rate for audio.
    pub fn timescale(&self) -> u32 {
        if self.codec.is_video() || self.sample_rate == 0 {
            90_000
        } else {
            self.sample_rate
        }
    }
}

/// One access unit (video frame or AAC frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Index into the fragment's track list (not the Matroska track number).
    pub track: usize,
    /// Decode timestamp, nanoseconds since the Unix epoch (producer time). Never after
    /// `pts_ns`; non-decreasing within a track in the order samples are listed.
    pub dts_ns: i64,
    /// Presentation timestamp, nanoseconds since the Unix epoch (producer time).
    pub pts_ns: i64,
    /// Decode duration in nanoseconds (time to the next sample's DTS in the track).
    pub duration_ns: u64,
    pub keyframe: bool,
    pub data: Bytes,
}

/// A demuxed fragment: its tracks and their samples, each track's samples in decode
/// order (tracks interleaved by DTS).
#[derive(Debug, Clone, PartialEq)]
pub struct FragmentSamples {
    pub tracks: Vec<MediaTrack>,
    pub samples: Vec<Sample>,
}

/// Why a stored fragment cannot be turned into samples. Each variant maps to an error
/// of the Kinesis Video archived-media API ([`DemuxError::aws_error`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DemuxError {
    /// Track 1 is not H.264/H.265 video, another track is not AAC, the Tracks cannot
    /// be read, or a block uses lacing.
    #[error("unsupported media: {0}")]
    UnsupportedMedia(String),
    /// A supported track has no CodecPrivate.
    #[error("track {track} has no codec private data")]
    MissingCodecPrivate { track: u64 },
    /// A track's CodecPrivate is not a valid avcC / hvcC / AudioSpecificConfig.
    #[error("track {track} has invalid codec private data: {reason}")]
    InvalidCodecPrivate { track: u64, reason: String },
    /// The Cluster cannot be read, or a frame is malformed (NAL unit lengths that
    /// overrun the frame, an empty frame, a timestamp out of range).
    #[error("invalid media frame: {0}")]
    InvalidFrame(String),
}

impl DemuxError {
    /// The exception name GetHLSStreamingSessionURL, GetDASHStreamingSessionURL,
    /// GetMP4InitFragment/GetMP4MediaFragment and GetClip report for this error.
    pub fn aws_error(&self) -> &'static str {
        match self {
            Self::UnsupportedMedia(_) => "UnsupportedStreamMediaTypeException",
            Self::MissingCodecPrivate { .. } => "MissingCodecPrivateDataException",
            Self::InvalidCodecPrivate { .. } => "InvalidCodecPrivateDataException",
            Self::InvalidFrame(_) => "InvalidMediaFrameException",
        }
    }
}

/// Duration given to the last sample of a video track when nothing better is known.
const FALLBACK_FRAME_DURATION_NS: u64 = 40_000_000;
/// Samples per AAC frame (AAC-LC; the core rate for HE-AAC).
const AAC_FRAME_SAMPLES: u64 = 1024;

/// Demuxes one stored fragment: `info_and_tracks` (the Info and Tracks elements in
/// force, [`crate::video::fragments::FragmentMeta::info_and_tracks`]) and `cluster`
/// (the stored Cluster: [`super::mkv::Fragment::raw_cluster_bytes`], a Cluster element
/// with an 8-byte size field; any other size form is accepted too).
///
/// Timestamps are absolute: a frame with Matroska timecode `t` gets
/// `pts_ns = producer_ts_ms * 10^6 + (t - cluster_timecode) * timecode_scale` (signed:
/// a block may lie before its Cluster's Timecode). Block timecodes are presentation
/// times in decode order; each track's DTS is derived from them so that it never
/// decreases and never exceeds the PTS: `dts[i] = sorted_pts[i] - shift` with
/// `shift = max(0, max_i(sorted_pts[i] - pts[i]))` (equal to the PTS without
/// B-frames). A sample lasts until the next DTS of its track. The last one of a track
/// lasts the BlockDuration of the track's latest frame, else the track's
/// DefaultDuration, else the track's mean frame spacing, else (audio) one AAC frame,
/// else 40 ms; but the first (video) track's lasts up to the end of the fragment when
/// `fragment_duration_ms` (the stored duration, from the track's first frame to the
/// end of its last, [`crate::video::fragments::FragmentMeta::duration_ms`]) leaves it
/// a positive duration within half a frame of that (or nothing else is known).
///
/// Sample data shares `cluster`'s memory (no copy), except for H.264/H.265 tracks
/// whose configuration record declares 1- or 2-byte NAL unit lengths: their samples
/// are rewritten to 4-byte lengths and the track's `codec_private` says so
/// (`lengthSizeMinusOne = 3`). Samples are listed by DTS, stable (ties keep the
/// Cluster's order), so each track's samples stay in decode order.
///
/// The track rules follow the Kinesis Video archived-media API: the first track must
/// be H.264 or H.265 video, every other one AAC.
pub fn demux_fragment(
    info_and_tracks: &[u8],
    cluster: &Bytes,
    producer_ts_ms: i64,
    cluster_timecode: u64,
    timecode_scale: u64,
    fragment_duration_ms: Option<u64>,
) -> Result<FragmentSamples, DemuxError> {
    use super::mkv::{Limits, MkvEvent, MkvReader};
    use super::mkv_writer::{SEGMENT_UNKNOWN_SIZE_HEADER, default_ebml_header};

    let timecode_scale = if timecode_scale == 0 {
        super::mkv::DEFAULT_TIMECODE_SCALE
    } else {
        timecode_scale
    };
    // The stored bytes already passed PutMedia's rules; only bound memory here.
    let limits = Limits {
        max_block_bytes: cluster.len().max(1),
        max_header_bytes: info_and_tracks.len().saturating_add(4096),
        max_tracks: 16,
        max_fragment_bytes: cluster.len().saturating_add(64),
        max_fragment_duration_ns: u64::MAX,
        max_tags: 1024,
        require_key_frame_first: false,
    };
    let mut reader = MkvReader::new(limits);
    let mut events = Vec::new();
    let mut head = default_ebml_header();
    head.extend_from_slice(&SEGMENT_UNKNOWN_SIZE_HEADER);
    reader
        .feed(&head, &mut events)
        .and_then(|()| reader.feed(info_and_tracks, &mut events))
        .map_err(|e| DemuxError::UnsupportedMedia(format!("unreadable Info/Tracks: {e}")))?;
    let mkv_tracks = reader.tracks().to_vec();
    let (tracks, nal_length_sizes) = media_tracks(&mkv_tracks)?;

    reader
        .feed(cluster, &mut events)
        .and_then(|()| reader.finish(&mut events))
        .map_err(|e| DemuxError::InvalidFrame(e.to_string()))?;

    // The reader's frame offsets are into its re-serialised Cluster, which starts with
    // a 12-byte header (ID + 8-byte size) followed by the children exactly as received.
    // `cluster` holds the same children after its own header: check, then translate.
    let mut fragments = events.iter().filter_map(|e| match e {
        MkvEvent::FragmentEnd(f) => Some(f),
        _ => None,
    });
    let (Some(fragment), None) = (fragments.next(), fragments.next()) else {
        return Err(DemuxError::InvalidFrame(
            "expected exactly one Cluster".into(),
        ));
    };
    let header_len = match super::ebml::read_header(cluster) {
        Ok(Some(header)) => header.header_len,
        _ => return Err(DemuxError::InvalidFrame("unreadable Cluster header".into())),
    };
    let raw = &fragment.raw_cluster_bytes;
    let children = raw
        .get(super::mkv::CLUSTER_HEADER_LEN..)
        .unwrap_or_default();
    if cluster.get(header_len..header_len.saturating_add(children.len())) != Some(children) {
        return Err(DemuxError::InvalidFrame(
            "Cluster bytes differ from what was read".into(),
        ));
    }

    let mut per_track: Vec<Vec<Sample>> = vec![Vec::new(); tracks.len()];
    // Per track: the latest presentation time seen and its block's BlockDuration (ns).
    let mut latest: Vec<Option<(i64, Option<u64>)>> = vec![None; tracks.len()];
    for event in &events {
        let MkvEvent::Frame(frame) = event else {
            continue;
        };
        let Some(index) = mkv_tracks.iter().position(|t| t.number == frame.track) else {
            return Err(DemuxError::InvalidFrame(format!(
                "frame for unknown track {}",
                frame.track
            )));
        };
        if frame.laced {
            return Err(DemuxError::UnsupportedMedia(format!(
                "laced block in track {}",
                frame.track
            )));
        }
        let start = frame
            .data_offset
            .checked_add(header_len)
            .and_then(|offset| offset.checked_sub(super::mkv::CLUSTER_HEADER_LEN))
            .ok_or_else(|| DemuxError::InvalidFrame("frame offset out of range".into()))?;
        let end = start
            .checked_add(frame.data_len)
            .filter(|&end| end <= cluster.len())
            .ok_or_else(|| DemuxError::InvalidFrame("frame data out of range".into()))?;
        if start == end {
            return Err(DemuxError::InvalidFrame(format!(
                "empty frame in track {}",
                frame.track
            )));
        }
        let data = cluster.slice(start..end);
        let frame_error =
            |reason: String| DemuxError::InvalidFrame(format!("track {}: {reason}", frame.track));
        let data = match nal_length_sizes.get(index).copied().flatten() {
            Some(4) => {
                check_four_byte_lengths(&data).map_err(frame_error)?;
                data
            }
            Some(length_size) => to_four_byte_lengths(&data, length_size).map_err(frame_error)?,
            None => data,
        };
        let relative = i128::from(frame.timecode) - i128::from(cluster_timecode);
        // |relative| < 2^65 and scale < 2^64: the product may overflow i128.
        let pts_ns = relative
            .checked_mul(i128::from(timecode_scale))
            .and_then(|offset| offset.checked_add(i128::from(producer_ts_ms) * 1_000_000))
            .and_then(|pts| i64::try_from(pts).ok())
            .ok_or_else(|| DemuxError::InvalidFrame("timestamp out of range".into()))?;
        let Some(track_samples) = per_track.get_mut(index) else {
            continue;
        };
        let block_duration = frame
            .duration
            .map(|d| d.saturating_mul(timecode_scale))
            .filter(|&d| d > 0);
        if let Some(slot) = latest.get_mut(index)
            && slot.is_none_or(|(pts, _)| pts_ns >= pts)
        {
            *slot = Some((pts_ns, block_duration));
        }
        track_samples.push(Sample {
            track: index,
            dts_ns: pts_ns,
            pts_ns,
            duration_ns: 0,
            keyframe: frame.keyframe,
            data,
        });
    }

    let mut samples = Vec::new();
    for (index, ((track, mkv_track), mut track_samples)) in
        tracks.iter().zip(&mkv_tracks).zip(per_track).enumerate()
    {
        let fallback = if track.codec.is_video() || track.sample_rate == 0 {
            FALLBACK_FRAME_DURATION_NS
        } else {
            AAC_FRAME_SAMPLES * 1_000_000_000 / u64::from(track.sample_rate)
        };
        let known = latest
            .get(index)
            .copied()
            .flatten()
            .and_then(|(_, block_duration)| block_duration)
            .or(mkv_track.default_duration_ns.filter(|&d| d > 0));
        let fragment_end = fragment_duration_ms.filter(|_| index == 0);
        let last = last_sample_duration(&track_samples, known, fragment_end, fallback);
        assign_decode_times(&mut track_samples, last);
        samples.append(&mut track_samples);
    }
    // Stable: each track's decode order survives, ties keep the Cluster's order.
    samples.sort_by_key(|s| s.dts_ns);
    Ok(FragmentSamples { tracks, samples })
}

/// How long the last sample of a track lasts (its samples with `pts_ns` set): the rest
/// of the fragment when its duration from the track's first frame is given
/// (`fragment_duration_ms`) and that is within half a frame of the estimate, `known`
/// (BlockDuration or DefaultDuration) else the mean spacing of the samples; else the
/// estimate; else `fallback`. See [`demux_fragment`].
fn last_sample_duration(
    samples: &[Sample],
    known: Option<u64>,
    fragment_duration_ms: Option<u64>,
    fallback: u64,
) -> u64 {
    let first = samples.iter().map(|s| i128::from(s.pts_ns)).min();
    let last = samples.iter().map(|s| i128::from(s.pts_ns)).max();
    let (Some(first), Some(last)) = (first, last) else {
        return known.unwrap_or(fallback);
    };
    let spacing = (samples.len() > 1)
        .then(|| (last - first) / (samples.len() as i128 - 1))
        .and_then(|d| u64::try_from(d).ok())
        .filter(|&d| d > 0);
    let estimate = known.or(spacing);
    let to_fragment_end = fragment_duration_ms.and_then(|ms| {
        let end = first + i128::from(ms) * 1_000_000;
        u64::try_from(end - last)
            .ok()
            .filter(|&d| d > 0 && estimate.is_none_or(|e| d.abs_diff(e) <= e / 2))
    });
    to_fragment_end.or(estimate).unwrap_or(fallback)
}

/// Sets `dts_ns` and `duration_ns` of one track's samples (in decode order, `pts_ns`
/// set): DTS never decreases and never exceeds the PTS; the last sample lasts
/// `last_duration`. See [`demux_fragment`].
fn assign_decode_times(samples: &mut [Sample], last_duration: u64) {
    let mut sorted: Vec<i64> = samples.iter().map(|s| s.pts_ns).collect();
    sorted.sort_unstable();
    let shift = samples
        .iter()
        .zip(&sorted)
        .map(|(s, &p)| i128::from(p) - i128::from(s.pts_ns))
        .max()
        .unwrap_or(0)
        .max(0);
    for (sample, &p) in samples.iter_mut().zip(&sorted) {
        // p - shift <= p fits above; saturating below keeps the order and dts <= pts.
        sample.dts_ns = i64::try_from(i128::from(p) - shift).unwrap_or(i64::MIN);
    }
    for i in 0..samples.len() {
        samples[i].duration_ns = match samples.get(i + 1) {
            Some(next) => next.dts_ns.abs_diff(samples[i].dts_ns),
            None => last_duration,
        };
    }
}

/// Playback tracks, and per track the NAL unit length size of its samples as the
/// configuration record declares it (`None` for audio).
type TracksAndLengths = (Vec<MediaTrack>, Vec<Option<usize>>);

/// The playback tracks of a Tracks element; see [`TracksAndLengths`].
fn media_tracks(tracks: &[super::mkv::Track]) -> Result<TracksAndLengths, DemuxError> {
    let Some(first) = tracks.first() else {
        return Err(DemuxError::UnsupportedMedia("no tracks".into()));
    };
    if !Codec::from_matroska(&first.codec_id).is_some_and(Codec::is_video) {
        return Err(DemuxError::UnsupportedMedia(format!(
            "track {} has codec {:?}; H.264 (V_MPEG4/ISO/AVC) or H.265 (V_MPEGH/ISO/HEVC) \
             video expected",
            first.number, first.codec_id
        )));
    }
    let mut out = Vec::with_capacity(tracks.len());
    let mut nal_length_sizes = Vec::with_capacity(tracks.len());
    for (i, track) in tracks.iter().enumerate() {
        let codec = match Codec::from_matroska(&track.codec_id) {
            Some(Codec::Aac) if i > 0 => Codec::Aac,
            Some(codec) if i == 0 => codec,
            _ => {
                return Err(DemuxError::UnsupportedMedia(format!(
                    "track {} has codec {:?}; only AAC (A_AAC) is supported besides the \
                     video track",
                    track.number, track.codec_id
                )));
            }
        };
        if track.codec_private.is_empty() {
            return Err(DemuxError::MissingCodecPrivate {
                track: track.number,
            });
        }
        let invalid = |reason: String| DemuxError::InvalidCodecPrivate {
            track: track.number,
            reason,
        };
        let mut codec_private = Bytes::copy_from_slice(&track.codec_private);
        let mut nal_length_size = None;
        let (mut width, mut height, mut sample_rate, mut channels) = (0, 0, 0, 0);
        match codec {
            Codec::H264 | Codec::H265 => {
                let length_size = if codec == Codec::H264 {
                    check_avcc(&track.codec_private)
                } else {
                    check_hvcc(&track.codec_private)
                }
                .map_err(invalid)?;
                nal_length_size = Some(length_size);
                if length_size != 4 {
                    let mut record = track.codec_private.clone();
                    let at = if codec == Codec::H264 { 4 } else { 21 };
                    if let Some(byte) = record.get_mut(at) {
                        *byte |= 0x03;
                    }
                    codec_private = Bytes::from(record);
                }
                if let Some(video) = track.video {
                    width = u32::try_from(video.pixel_width).unwrap_or(0);
                    height = u32::try_from(video.pixel_height).unwrap_or(0);
                }
            }
            Codec::Aac => {
                let config = AudioSpecificConfig::parse(&track.codec_private).map_err(invalid)?;
                match track.audio {
                    Some(audio)
                        if audio.sampling_frequency.is_finite()
                            && audio.sampling_frequency >= 1.0
                            && audio.sampling_frequency <= f64::from(u32::MAX) =>
                    {
                        sample_rate = audio.sampling_frequency.round() as u32;
                    }
                    _ => sample_rate = config.sample_rate,
                }
                channels = match track.audio {
                    Some(audio) if (1..=u64::from(u16::MAX)).contains(&audio.channels) => {
                        audio.channels as u16
                    }
                    _ => u16::from(config.channel_configuration),
                };
            }
        }
        out.push(MediaTrack {
            number: track.number,
            codec,
            codec_private,
            width,
            height,
            sample_rate,
            channels,
        });
        nal_length_sizes.push(nal_length_size);
    }
    Ok((out, nal_length_sizes))
}

/// Checks an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) and returns its
/// NAL unit length size (1, 2 or 4).
fn check_avcc(record: &[u8]) -> Result<usize, String> {
    let [
        version,
        _profile,
        _compat,
        _level,
        length_byte,
        sps_byte,
        rest @ ..,
    ] = record
    else {
        return Err(format!(
            "avcC has {} bytes, at least 7 needed",
            record.len()
        ));
    };
    if *version != 1 {
        return Err(format!("avcC configurationVersion {version}, 1 expected"));
    }
    let length_size = nal_length_size(*length_byte)?;
    let sps_count = usize::from(sps_byte & 0x1F);
    if sps_count == 0 {
        return Err("avcC holds no SPS".into());
    }
    let rest = skip_parameter_sets(rest, sps_count).ok_or("avcC SPS list truncated")?;
    let [pps_count, rest @ ..] = rest else {
        return Err("avcC has no PPS count".into());
    };
    skip_parameter_sets(rest, usize::from(*pps_count)).ok_or("avcC PPS list truncated")?;
    // Profile-specific extensions (chroma format, SPS extensions) may follow: ignored.
    Ok(length_size)
}

/// Checks an HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1) and returns its
/// NAL unit length size (1, 2 or 4).
fn check_hvcc(record: &[u8]) -> Result<usize, String> {
    if record.len() < 23 {
        return Err(format!(
            "hvcC has {} bytes, at least 23 needed",
            record.len()
        ));
    }
    if record[0] != 1 {
        return Err(format!(
            "hvcC configurationVersion {}, 1 expected",
            record[0]
        ));
    }
    let length_size = nal_length_size(record[21])?;
    let mut rest = &record[23..];
    for _ in 0..record[22] {
        let [_nal_type, hi, lo, tail @ ..] = rest else {
            return Err("hvcC NAL unit array truncated".into());
        };
        let count = usize::from(u16::from_be_bytes([*hi, *lo]));
        rest = skip_parameter_sets(tail, count).ok_or("hvcC NAL unit array truncated")?;
    }
    Ok(length_size)
}

fn nal_length_size(byte: u8) -> Result<usize, String> {
    match byte & 0x03 {
        0 => Ok(1),
        1 => Ok(2),
        3 => Ok(4),
        _ => Err("lengthSizeMinusOne 2 (3-byte NAL unit lengths) is not allowed".into()),
    }
}

/// Skips `count` parameter sets, each a 2-byte length and its bytes.
fn skip_parameter_sets(mut data: &[u8], count: usize) -> Option<&[u8]> {
    for _ in 0..count {
        let [hi, lo, rest @ ..] = data else {
            return None;
        };
        data = rest.get(usize::from(u16::from_be_bytes([*hi, *lo]))..)?;
    }
    Some(data)
}

/// Checks that `data` is a sequence of NAL units each preceded by its `length_size`
/// -byte big-endian length, and returns a copy with 4-byte lengths.
fn to_four_byte_lengths(data: &[u8], length_size: usize) -> Result<Bytes, String> {
    let mut out = Vec::with_capacity(data.len().saturating_mul(2));
    let mut rest = data;
    while !rest.is_empty() {
        let (prefix, tail) = rest
            .split_at_checked(length_size)
            .ok_or("NAL unit length truncated")?;
        let len = prefix
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let (nal, tail) = tail
            .split_at_checked(len)
            .ok_or("NAL unit overruns the frame")?;
        let len32 = u32::try_from(len).map_err(|_| "NAL unit too large")?;
        out.extend_from_slice(&len32.to_be_bytes());
        out.extend_from_slice(nal);
        rest = tail;
    }
    Ok(Bytes::from(out))
}

/// Checks the NAL unit framing of a sample with 4-byte lengths.
fn check_four_byte_lengths(data: &[u8]) -> Result<(), String> {
    let mut rest = data;
    while !rest.is_empty() {
        let [a, b, c, d, tail @ ..] = rest else {
            return Err("NAL unit length truncated".into());
        };
        let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
        rest = tail.get(len..).ok_or("NAL unit overruns the frame")?;
    }
    Ok(())
}

/// The fields of an MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) the muxers
/// need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// 2 = AAC LC, 5 = SBR (HE-AAC), 29 = PS (HE-AAC v2), ...
    pub audio_object_type: u8,
    /// The (core) sampling frequency in Hz.
    pub sample_rate: u32,
    /// 0 = defined in the bitstream (program config element), 1-7 = channel layouts.
    pub channel_configuration: u8,
}

/// Sampling frequencies by `samplingFrequencyIndex`.
const AAC_SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

impl AudioSpecificConfig {
    /// Parses the start of an AudioSpecificConfig. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<AudioSpecificConfig, String> {
        let mut bits = BitReader {
            data: bytes,
            pos: 0,
        };
        let truncated = || "AudioSpecificConfig truncated".to_string();
        let mut audio_object_type = bits.read(5).ok_or_else(truncated)?;
        if audio_object_type == 31 {
            audio_object_type = 32 + bits.read(6).ok_or_else(truncated)?;
        }
        if audio_object_type == 0 {
            return Err("audioObjectType 0 (null)".into());
        }
        let index = bits.read(4).ok_or_else(truncated)?;
        let sample_rate = match index {
            0x0F => bits.read(24).ok_or_else(truncated)?,
            i => *AAC_SAMPLE_RATES
                .get(i as usize)
                .ok_or_else(|| format!("reserved samplingFrequencyIndex {i}"))?,
        };
        if sample_rate == 0 {
            return Err("sampling frequency 0".into());
        }
        let channel_configuration = bits.read(4).ok_or_else(truncated)?;
        Ok(AudioSpecificConfig {
            audio_object_type: audio_object_type as u8,
            sample_rate,
            channel_configuration: channel_configuration as u8,
        })
    }
}

/// MSB-first bit reader over a byte slice.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    /// The next `n` (at most 32) bits, or `None` past the end.
    fn read(&mut self, n: usize) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - self.pos % 8)) & 1;
            value = (value << 1) | u32::from(bit);
            self.pos += 1;
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ebml;
    use crate::media::mkv::{Limits, MkvEvent, MkvReader, TRACK_TYPE_AUDIO, TRACK_TYPE_VIDEO, ids};
    use crate::media::synthetic;

    const EPOCH_MS: i64 = 1_700_000_000_000;
    const MS: i64 = 1_000_000;
    /// AVC High profile, level 3.1, 4-byte lengths, one SPS and one PPS.
    const AVCC: [u8; 16] = [
        1, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0, 3, 0x67, 0x64, 0x00, 1, 0, 2, 0x68, 0xEE,
    ];
    /// AAC LC, 48 kHz, stereo.
    const ASC: [u8; 2] = [0x11, 0x90];

    fn track_entry(
        number: u64,
        track_type: u64,
        codec_id: &str,
        private: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut entry = Vec::new();
        ebml::write_uint_element(&mut entry, ids::TRACK_NUMBER, number);
        ebml::write_uint_element(&mut entry, ids::TRACK_UID, number);
        ebml::write_uint_element(&mut entry, ids::TRACK_TYPE, track_type);
        ebml::write_string_element(&mut entry, ids::CODEC_ID, codec_id);
        if let Some(private) = private {
            ebml::write_element(&mut entry, ids::CODEC_PRIVATE, private);
        }
        let mut settings = Vec::new();
        if track_type == TRACK_TYPE_VIDEO {
            ebml::write_uint_element(&mut settings, ids::PIXEL_WIDTH, 640);
            ebml::write_uint_element(&mut settings, ids::PIXEL_HEIGHT, 360);
            ebml::write_element(&mut entry, ids::VIDEO, &settings);
        }
        let mut out = Vec::new();
        ebml::write_element(&mut out, ids::TRACK_ENTRY, &entry);
        out
    }

    /// Info (ms timecodes) and Tracks with the given TrackEntries.
    fn info_and_tracks(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = synthetic::info(1_000_000);
        ebml::write_element(&mut out, ids::TRACKS, &entries.concat());
        out
    }

    fn video_and_audio() -> Vec<u8> {
        info_and_tracks(&[
            track_entry(1, TRACK_TYPE_VIDEO, "V_MPEG4/ISO/AVC", Some(&AVCC)),
            track_entry(2, TRACK_TYPE_AUDIO, "A_AAC", Some(&ASC)),
        ])
    }

    fn block(track: u64, relative_timecode: i16, keyframe: bool, data: &[u8]) -> Vec<u8> {
        let mut payload = Vec::new();
        ebml::write_size(&mut payload, track).unwrap();
        payload.extend(relative_timecode.to_be_bytes());
        payload.push(if keyframe { 0x80 } else { 0 });
        payload.extend(data);
        let mut out = Vec::new();
        ebml::write_element(&mut out, ids::SIMPLE_BLOCK, &payload);
        out
    }

    /// A BlockGroup (a delta frame) with a BlockDuration in ms.
    fn block_group(track: u64, relative_timecode: i16, duration: u64, data: &[u8]) -> Vec<u8> {
        let simple = block(track, relative_timecode, false, data);
        // The same payload, as a Block.
        let header_len = ebml::read_header(&simple).unwrap().unwrap().header_len;
        let mut group = Vec::new();
        ebml::write_element(&mut group, ids::BLOCK, &simple[header_len..]);
        ebml::write_uint_element(&mut group, ids::BLOCK_DURATION, duration);
        ebml::write_int_element(&mut group, ids::REFERENCE_BLOCK, -1);
        let mut out = Vec::new();
        ebml::write_element(&mut out, ids::BLOCK_GROUP, &group);
        out
    }

    /// One NAL unit of `len` bytes with a 4-byte length.
    fn nal(len: usize) -> Vec<u8> {
        let mut out = (len as u32).to_be_bytes().to_vec();
        out.extend(std::iter::repeat_n(0x41, len));
        out
    }

    /// The Cluster as the fragment store keeps it (the reader's re-serialisation).
    fn stored_cluster(info_and_tracks: &[u8], cluster: &[u8]) -> Bytes {
        let mut body = synthetic::ebml_header("matroska");
        body.extend(synthetic::segment_unknown());
        body.extend(info_and_tracks);
        body.extend(cluster);
        let events = MkvReader::new(Limits {
            require_key_frame_first: false,
            ..Limits::default()
        })
        .read_to_end(&body)
        .unwrap();
        events
            .into_iter()
            .find_map(|e| match e {
                MkvEvent::FragmentEnd(f) => Some(Bytes::from(f.raw_cluster_bytes)),
                _ => None,
            })
            .unwrap()
    }

    fn demux(
        info_and_tracks: &[u8],
        cluster: &Bytes,
        cluster_timecode: u64,
    ) -> Result<FragmentSamples, DemuxError> {
        demux_fragment(
            info_and_tracks,
            cluster,
            EPOCH_MS,
            cluster_timecode,
            1_000_000,
            None,
        )
    }

    /// Video in decode order I P B B (presentation 0, 120, 40, 80 ms) and two AAC
    /// frames.
    fn b_frame_cluster() -> Vec<u8> {
        synthetic::cluster(
            5000,
            &[
                block(1, 0, true, &nal(10)),
                block(2, 0, true, &[1, 2, 3]),
                block(1, 120, false, &nal(11)),
                block(2, 21, true, &[4, 5, 6]),
                block(1, 40, false, &nal(12)),
                block(1, 80, false, &nal(13)),
            ],
        )
    }

    #[test]
    fn b_frames_get_a_decode_timeline() {
        let header = video_and_audio();
        let cluster = stored_cluster(&header, &b_frame_cluster());
        let fragment = demux(&header, &cluster, 5000).unwrap();
        assert_eq!(fragment.tracks.len(), 2);
        let video = &fragment.tracks[0];
        assert_eq!((video.number, video.codec), (1, Codec::H264));
        assert_eq!((video.width, video.height), (640, 360));
        assert_eq!(&video.codec_private[..], &AVCC);
        let audio = &fragment.tracks[1];
        assert_eq!(
            (audio.codec, audio.sample_rate, audio.channels),
            (Codec::Aac, 48_000, 2)
        );
        assert_eq!(audio.timescale(), 48_000);

        let base = EPOCH_MS * MS;
        let video: Vec<&Sample> = fragment.samples.iter().filter(|s| s.track == 0).collect();
        let pts: Vec<i64> = video.iter().map(|s| (s.pts_ns - base) / MS).collect();
        let dts: Vec<i64> = video.iter().map(|s| (s.dts_ns - base) / MS).collect();
        let durations: Vec<u64> = video.iter().map(|s| s.duration_ns / MS as u64).collect();
        assert_eq!(pts, [0, 120, 40, 80]);
        assert_eq!(dts, [-40, 0, 40, 80]);
        // The last one lasts as long as its predecessor.
        assert_eq!(durations, [40, 40, 40, 40]);
        assert_eq!(
            video.iter().map(|s| s.keyframe).collect::<Vec<_>>(),
            [true, false, false, false]
        );
        assert_eq!(
            video.iter().map(|s| s.data.len()).collect::<Vec<_>>(),
            [14, 15, 16, 17]
        );

        let audio: Vec<&Sample> = fragment.samples.iter().filter(|s| s.track == 1).collect();
        assert_eq!(audio.len(), 2);
        assert_eq!(audio[0].dts_ns, base);
        assert_eq!(audio[0].pts_ns, base);
        assert_eq!(audio[0].duration_ns, 21 * MS as u64);
        assert_eq!(audio[1].duration_ns, 21 * MS as u64);
        assert_eq!(&audio[1].data[..], &[4, 5, 6]);

        // Interleaved by DTS; each track in decode order.
        let order: Vec<(usize, i64)> = fragment
            .samples
            .iter()
            .map(|s| (s.track, (s.dts_ns - base) / MS))
            .collect();
        assert_eq!(order, [(0, -40), (0, 0), (1, 0), (1, 21), (0, 40), (0, 80)]);

        // Zero copy: the data lies in the stored Cluster.
        let range = cluster.as_ptr_range();
        assert!(
            fragment
                .samples
                .iter()
                .all(|s| range.contains(&s.data.as_ptr()))
        );
    }

    #[test]
    fn decode_times_never_pass_presentation_times() {
        // Several reorder patterns, checked against the invariants.
        let patterns: [&[i64]; 4] = [
            &[0, 3, 1, 2, 6, 4, 5],
            &[0, 2, 1, 4, 3],
            &[5, 1, 2, 3, 4],
            &[0, 1, 2, 3],
        ];
        for pattern in patterns {
            let mut samples: Vec<Sample> = pattern
                .iter()
                .map(|&p| Sample {
                    track: 0,
                    dts_ns: 0,
                    pts_ns: p * 40 * MS,
                    duration_ns: 0,
                    keyframe: false,
                    data: Bytes::new(),
                })
                .collect();
            assert_decode_order(&mut samples, pattern);
        }
        // At the bottom of the i64 range the DTS saturates, still in order.
        let mut samples: Vec<Sample> = [i64::MIN + 1, i64::MIN, i64::MAX]
            .into_iter()
            .map(|pts_ns| Sample {
                track: 0,
                dts_ns: 0,
                pts_ns,
                duration_ns: 0,
                keyframe: false,
                data: Bytes::new(),
            })
            .collect();
        let last = last_sample_duration(&samples, None, None, 7);
        assign_decode_times(&mut samples, last);
        let dts: Vec<i64> = samples.iter().map(|s| s.dts_ns).collect();
        assert_eq!(dts, [i64::MIN, i64::MIN, i64::MAX - 1]);
        assert_eq!(samples[2].duration_ns, i64::MAX as u64); // the mean spacing
    }

    fn assert_decode_order(samples: &mut [Sample], pattern: &[i64]) {
        assign_decode_times(samples, 7);
        for pair in samples.windows(2) {
            assert!(pair[0].dts_ns <= pair[1].dts_ns, "{pattern:?}");
            assert_eq!(pair[0].duration_ns, pair[1].dts_ns.abs_diff(pair[0].dts_ns));
        }
        for s in samples.iter() {
            assert!(s.dts_ns <= s.pts_ns, "{pattern:?}");
        }
        // The DTS are the PTS values, sorted and shifted by one constant.
        let mut sorted: Vec<i64> = samples.iter().map(|s| s.pts_ns).collect();
        sorted.sort_unstable();
        let shift = sorted[0] - samples[0].dts_ns;
        assert!(shift >= 0);
        for (s, p) in samples.iter().zip(&sorted) {
            assert_eq!(p - s.dts_ns, shift);
        }
        if pattern.windows(2).all(|w| w[0] < w[1]) {
            assert!(samples.iter().all(|s| s.dts_ns == s.pts_ns));
        }
    }

    #[test]
    fn last_sample_durations() {
        // DefaultDuration wins, then the mean spacing, then one AAC frame, then 40 ms.
        let mut default = track_entry(1, TRACK_TYPE_VIDEO, "V_MPEG4/ISO/AVC", Some(&AVCC));
        let mut entry = Vec::new();
        ebml::write_uint_element(&mut entry, ids::TRACK_NUMBER, 1);
        ebml::write_string_element(&mut entry, ids::CODEC_ID, "V_MPEG4/ISO/AVC");
        ebml::write_element(&mut entry, ids::CODEC_PRIVATE, &AVCC);
        ebml::write_uint_element(&mut entry, ids::DEFAULT_DURATION, 33_333_333);
        default.clear();
        ebml::write_element(&mut default, ids::TRACK_ENTRY, &entry);
        let header = info_and_tracks(&[
            default,
            track_entry(2, TRACK_TYPE_AUDIO, "A_AAC", Some(&ASC)),
        ]);
        let cluster = synthetic::cluster(
            0,
            &[
                block(1, 0, true, &nal(5)),
                block(2, 0, true, &[1]),
                block(1, 50, false, &nal(5)),
            ],
        );
        let cluster = stored_cluster(&header, &cluster);
        let fragment = demux(&header, &cluster, 0).unwrap();
        let durations: Vec<(usize, u64)> = fragment
            .samples
            .iter()
            .map(|s| (s.track, s.duration_ns))
            .collect();
        assert_eq!(
            durations,
            [(0, 50_000_000), (1, 21_333_333), (0, 33_333_333)]
        );
        // No Video element: size 0 (decoders read the SPS).
        assert_eq!(
            (fragment.tracks[0].width, fragment.tracks[0].height),
            (0, 0)
        );

        // A lone video frame without DefaultDuration: 40 ms.
        let header = info_and_tracks(&[track_entry(
            1,
            TRACK_TYPE_VIDEO,
            "V_MPEG4/ISO/AVC",
            Some(&AVCC),
        )]);
        let cluster = stored_cluster(
            &header,
            &synthetic::cluster(9, &[block(1, 0, true, &nal(1))]),
        );
        let fragment = demux(&header, &cluster, 9).unwrap();
        assert_eq!(fragment.samples[0].duration_ns, 40_000_000);
        // ... unless the stored fragment duration says how long it lasts (a stored
        // duration of 0 says nothing).
        let with_duration = |ms| {
            demux_fragment(&header, &cluster, EPOCH_MS, 9, 1_000_000, ms)
                .unwrap()
                .samples
        };
        assert_eq!(with_duration(Some(33))[0].duration_ns, 33_000_000);
        assert_eq!(with_duration(Some(0))[0].duration_ns, 40_000_000);
    }

    #[test]
    fn last_samples_follow_the_fragment_rule() {
        // The rule of `mkv::Fragment::duration_ns`: BlockDuration of the latest frame,
        // else DefaultDuration, else the mean spacing of the track's frames; for the
        // video, the stored fragment's end when it agrees within half a frame.
        let header = video_and_audio();
        let durations = |blocks: &[Vec<u8>], fragment_ms: Option<u64>| -> Vec<(usize, u64)> {
            let cluster = stored_cluster(&header, &synthetic::cluster(0, blocks));
            demux_fragment(&header, &cluster, EPOCH_MS, 0, 1_000_000, fragment_ms)
                .unwrap()
                .samples
                .iter()
                .map(|s| (s.track, s.duration_ns / 1000))
                .collect()
        };
        // 30 fps in ms timecodes: 33.5 ms on average for the last frame; audio 21 ms.
        let blocks = [
            block(1, 0, true, &nal(3)),
            block(2, 0, true, &[1]),
            block(1, 33, false, &nal(3)),
            block(2, 21, true, &[1]),
            block(1, 67, false, &nal(3)),
        ];
        assert_eq!(
            durations(&blocks, None),
            [
                (0, 33_000),
                (1, 21_000),
                (1, 21_000),
                (0, 34_000),
                (0, 33_500)
            ]
        );
        // The stored duration (100 ms) ends the video; audio keeps its spacing.
        assert_eq!(
            durations(&blocks, Some(100))[3..],
            [(0, 34_000), (0, 33_000)]
        );
        assert_eq!(
            durations(&blocks, Some(100))[1..3],
            [(1, 21_000), (1, 21_000)]
        );
        // A stored duration that ends before the last frame does is ignored.
        assert_eq!(durations(&blocks, Some(60))[4], (0, 33_500));
        // BlockDuration wins over the spacing, and over a stored duration far from it.
        let blocks = [
            block(1, 0, true, &nal(3)),
            block(2, 0, true, &[1]),
            block_group(1, 40, 25, &nal(3)),
        ];
        assert_eq!(
            durations(&blocks, Some(1000)),
            [(0, 40_000), (1, 21_333), (0, 25_000)]
        );
        // The stored duration (rounded to the millisecond) ends the video.
        assert_eq!(durations(&blocks, Some(66))[2], (0, 26_000));
    }

    #[test]
    fn absolute_times_use_signed_offsets_and_the_timecode_scale() {
        let header = info_and_tracks(&[track_entry(
            1,
            TRACK_TYPE_VIDEO,
            "V_MPEG4/ISO/AVC",
            Some(&AVCC),
        )]);
        // A block 5 units before its Cluster Timecode.
        let cluster = synthetic::cluster(
            100,
            &[block(1, -5, true, &nal(1)), block(1, 10, false, &nal(1))],
        );
        let cluster = stored_cluster(&header, &cluster);
        // 100 us per unit (the stored scale wins over nothing: Info says 1 ms, but
        // the argument is what the fragment store recorded).
        let fragment = demux_fragment(&header, &cluster, 2_000, 100, 100_000, None).unwrap();
        let pts: Vec<i64> = fragment.samples.iter().map(|s| s.pts_ns).collect();
        assert_eq!(pts, [2_000 * MS - 500_000, 2_000 * MS + 1_000_000]);
        // Out of i64 nanoseconds.
        let err = demux_fragment(&header, &cluster, i64::MAX / 1000, 100, 1, None).unwrap_err();
        assert!(matches!(err, DemuxError::InvalidFrame(_)), "{err}");
    }

    #[test]
    fn any_cluster_size_form_is_accepted() {
        let header = video_and_audio();
        let stored = stored_cluster(&header, &b_frame_cluster());
        let expected = demux(&header, &stored, 5000).unwrap();
        for form in [b_frame_cluster(), {
            let mut known = Vec::new();
            ebml::write_element(&mut known, ids::CLUSTER, &stored[12..]);
            known
        }] {
            let form = Bytes::from(form);
            assert_eq!(demux(&header, &form, 5000).unwrap(), expected);
        }
    }

    #[test]
    fn short_nal_lengths_are_rewritten() {
        for (length_size, minus_one) in [(1usize, 0u8), (2, 1)] {
            let mut avcc = AVCC;
            avcc[4] = 0xFC | minus_one;
            let header = info_and_tracks(&[track_entry(
                1,
                TRACK_TYPE_VIDEO,
                "V_MPEG4/ISO/AVC",
                Some(&avcc),
            )]);
            let mut frame = Vec::new();
            for len in [3usize, 0, 2] {
                frame.extend(&(len as u32).to_be_bytes()[4 - length_size..]);
                frame.extend(std::iter::repeat_n(0x65, len));
            }
            let cluster = stored_cluster(
                &header,
                &synthetic::cluster(0, &[block(1, 0, true, &frame)]),
            );
            let fragment = demux(&header, &cluster, 0).unwrap();
            assert_eq!(fragment.tracks[0].codec_private[4], 0xFF);
            assert_eq!(&fragment.tracks[0].codec_private[5..], &AVCC[5..]);
            assert_eq!(
                &fragment.samples[0].data[..],
                &[
                    0, 0, 0, 3, 0x65, 0x65, 0x65, 0, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x65
                ]
            );
        }
    }

    #[test]
    fn errors_map_to_the_archived_media_exceptions() {
        let avc =
            |private: Option<&[u8]>| track_entry(1, TRACK_TYPE_VIDEO, "V_MPEG4/ISO/AVC", private);
        let frame = synthetic::cluster(0, &[block(1, 0, true, &nal(4))]);
        // (TrackEntries, Cluster, expected exception)
        type Case = (Vec<Vec<u8>>, Vec<u8>, &'static str);
        let cases: Vec<Case> = vec![
            (
                vec![track_entry(1, TRACK_TYPE_AUDIO, "A_AAC", Some(&ASC))],
                frame.clone(),
                "UnsupportedStreamMediaTypeException",
            ),
            (
                vec![track_entry(1, TRACK_TYPE_VIDEO, "V_VP8", Some(&[1]))],
                frame.clone(),
                "UnsupportedStreamMediaTypeException",
            ),
            (
                vec![
                    avc(Some(&AVCC)),
                    track_entry(2, TRACK_TYPE_AUDIO, "A_MS/ACM", Some(&[1])),
                ],
                frame.clone(),
                "UnsupportedStreamMediaTypeException",
            ),
            (
                vec![avc(Some(&AVCC)), avc(Some(&AVCC))],
                frame.clone(),
                "UnsupportedStreamMediaTypeException",
            ),
            (
                vec![avc(None)],
                frame.clone(),
                "MissingCodecPrivateDataException",
            ),
            (
                vec![
                    avc(Some(&AVCC)),
                    track_entry(2, TRACK_TYPE_AUDIO, "A_AAC", None),
                ],
                frame.clone(),
                "MissingCodecPrivateDataException",
            ),
            (
                vec![avc(Some(&AVCC[..6]))],
                frame.clone(),
                "InvalidCodecPrivateDataException",
            ),
            (
                vec![avc(Some(&[0, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 0, 0]))],
                frame.clone(),
                "InvalidCodecPrivateDataException",
            ),
            (
                vec![avc(Some(&[1, 0x64, 0, 0x1F, 0xFE, 0xE1, 0, 0, 0]))],
                frame.clone(),
                "InvalidCodecPrivateDataException",
            ),
            (
                vec![avc(Some(&[1, 0x64, 0, 0x1F, 0xFF, 0xE0, 0]))],
                frame.clone(),
                "InvalidCodecPrivateDataException",
            ),
            (
                vec![track_entry(
                    1,
                    TRACK_TYPE_VIDEO,
                    "V_MPEGH/ISO/HEVC",
                    Some(&[1; 22]),
                )],
                frame.clone(),
                "InvalidCodecPrivateDataException",
            ),
            (
                vec![
                    avc(Some(&AVCC)),
                    track_entry(2, TRACK_TYPE_AUDIO, "A_AAC", Some(&[0x11])),
                ],
                frame.clone(),
                "InvalidCodecPrivateDataException",
            ),
            (
                vec![
                    avc(Some(&AVCC)),
                    track_entry(2, TRACK_TYPE_AUDIO, "A_AAC", Some(&[0x16, 0x90])),
                ],
                frame.clone(),
                "InvalidCodecPrivateDataException",
            ),
            // A NAL unit longer than its frame; an empty frame; a laced block.
            (
                vec![avc(Some(&AVCC))],
                synthetic::cluster(0, &[block(1, 0, true, &[0, 0, 0, 9, 1])]),
                "InvalidMediaFrameException",
            ),
            (
                vec![avc(Some(&AVCC))],
                synthetic::cluster(0, &[block(1, 0, true, &[0, 0])]),
                "InvalidMediaFrameException",
            ),
            (
                vec![avc(Some(&AVCC))],
                synthetic::cluster(0, &[block(1, 0, true, &[])]),
                "InvalidMediaFrameException",
            ),
            (
                vec![avc(Some(&AVCC))],
                synthetic::cluster(
                    0,
                    &[synthetic::block(1, 0, true, 8)
                        .into_iter()
                        .enumerate()
                        .map(|(i, b)| if i == 5 { b | 0x02 } else { b })
                        .collect()],
                ),
                "UnsupportedStreamMediaTypeException",
            ),
        ];
        for (i, (entries, cluster, expected)) in cases.into_iter().enumerate() {
            let header = info_and_tracks(&entries);
            let err = demux(&header, &Bytes::from(cluster), 0).unwrap_err();
            assert_eq!(err.aws_error(), expected, "case {i}: {err}");
        }
        // Unreadable input: bad Tracks, no Cluster, two Clusters, bytes after it.
        let header = video_and_audio();
        let cluster = stored_cluster(&header, &b_frame_cluster());
        let two = Bytes::from(
            [
                &cluster[..],
                &synthetic::cluster(9000, &[block(1, 0, true, &nal(1)), block(2, 0, true, &[1])]),
            ]
            .concat(),
        );
        for (header, cluster, expected) in [
            (
                &b"\x16\x54\xAE\x6B\x85garbage"[..],
                cluster.clone(),
                "UnsupportedStreamMediaTypeException",
            ),
            (
                &[][..],
                cluster.clone(),
                "UnsupportedStreamMediaTypeException",
            ),
            (&header[..], Bytes::new(), "InvalidMediaFrameException"),
            (
                &header[..],
                cluster.slice(..cluster.len() - 1),
                "InvalidMediaFrameException",
            ),
            (&header[..], two, "InvalidMediaFrameException"),
        ] {
            let err = demux(header, &cluster, 5000).unwrap_err();
            assert_eq!(err.aws_error(), expected, "{err}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let header = video_and_audio();
        let cluster = stored_cluster(&header, &b_frame_cluster());
        // Every truncation and every single-byte change of a valid fragment.
        for len in 0..cluster.len() {
            let _ = demux(&header, &cluster.slice(..len), 5000);
        }
        for len in 0..header.len() {
            let _ = demux(&header[..len], &cluster, 5000);
        }
        for at in 0..cluster.len() {
            for value in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
                let mut changed = cluster.to_vec();
                changed[at] = value;
                let _ = demux(&header, &Bytes::from(changed), 5000);
            }
        }
        for at in 0..header.len() {
            for value in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
                let mut changed = header.clone();
                changed[at] = value;
                let _ = demux(&changed, &cluster, 5000);
            }
        }
        // Pseudo-random bytes, and extreme arguments.
        let mut state = 0x1234_5678u32;
        for round in 0..2000 {
            let bytes: Vec<u8> = (0..round % 97)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    state as u8
                })
                .collect();
            let _ = demux(&bytes, &Bytes::from(bytes.clone()), 0);
            let _ = demux(&header, &Bytes::from(bytes), 0);
        }
        for (ts, timecode, scale) in [
            (i64::MIN, u64::MAX, u64::MAX),
            (i64::MAX, 0, u64::MAX),
            (0, 5000, 0),
        ] {
            let _ = demux_fragment(&header, &cluster, ts, timecode, scale, Some(timecode));
        }
    }

    #[test]
    fn audio_specific_config() {
        let parse = AudioSpecificConfig::parse;
        assert_eq!(
            parse(&ASC),
            Ok(AudioSpecificConfig {
                audio_object_type: 2,
                sample_rate: 48_000,
                channel_configuration: 2
            })
        );
        // HE-AAC (SBR), 22.05 kHz core, stereo.
        assert_eq!(
            parse(&[0x2B, 0x92, 0x08, 0x00]).unwrap().audio_object_type,
            5
        );
        assert_eq!(
            parse(&[0x2B, 0x92, 0x08, 0x00]).unwrap().sample_rate,
            22_050
        );
        // Escaped object type 32 + 10 = 42 (USAC), explicit 12345 Hz.
        let mut bits = 0u64;
        let mut n = 0;
        for (value, width) in [(31u64, 5), (10, 6), (15, 4), (12345, 24), (1, 4)] {
            bits = (bits << width) | value;
            n += width;
        }
        let bytes: Vec<u8> = (bits << (48 - n)).to_be_bytes()[2..].to_vec();
        assert_eq!(
            parse(&bytes),
            Ok(AudioSpecificConfig {
                audio_object_type: 42,
                sample_rate: 12345,
                channel_configuration: 1
            })
        );
        assert!(parse(&[]).is_err());
        assert!(parse(&[0x11]).is_err());
        assert!(parse(&[0x16, 0x90]).is_err()); // samplingFrequencyIndex 13
        assert!(parse(&[0x01, 0x90]).is_err()); // audioObjectType 0
        // AAC track without an Audio element: rate and channels from the ASC.
        let header = info_and_tracks(&[
            track_entry(1, TRACK_TYPE_VIDEO, "V_MPEG4/ISO/AVC", Some(&AVCC)),
            track_entry(2, TRACK_TYPE_AUDIO, "A_AAC", Some(&[0x12, 0x08])), // 44.1 kHz mono
        ]);
        let cluster = synthetic::cluster(0, &[block(1, 0, true, &nal(1)), block(2, 0, true, &[1])]);
        let fragment = demux(&header, &Bytes::from(cluster), 0).unwrap();
        assert_eq!(
            (fragment.tracks[1].sample_rate, fragment.tracks[1].channels),
            (44_100, 1)
        );
    }
}
