//! MPEG-2 Transport Stream segments for HLS (`ContainerFormat` `MPEG_TS`), remuxed from
//! [`Sample`]s without re-encoding.
//!
//! Follows ISO/IEC 13818-1 (transport stream, PES, PSI), RFC 8216 section 3.2 (HLS
//! MPEG-2 TS segments: one program, PAT and PMT at the start of every segment), ISO/IEC
//! 14496-10 / ITU-T H.264 and ITU-T H.265 Annex B (byte stream format) for video,
//! ISO/IEC 14496-15 (avcC / hvcC configuration records) and ISO/IEC 14496-3 (AAC
//! AudioSpecificConfig, ADTS) for the codec setup.
//!
//! [`ts_segment`] writes one self-contained segment:
//!
//! ```text
//! PAT (PID 0x0000)      program 1 -> PMT PID 0x1000
//! PMT (PID 0x1000)      PCR PID = video PID (the audio PID when there is no video)
//!                       0x100: 0x1B H.264 or 0x24 H.265;  0x101: 0x0F AAC in ADTS
//! one PES per video access unit (stream_id 0xE0), in the order given:
//!     AUD (replacing any AUD of the sample), then at key frames the parameter sets
//!     from the configuration record whose NAL unit types the access unit does not
//!     carry itself, then its NAL units with 4-byte start codes; PTS (and DTS when it
//!     differs), PCR and random_access_indicator (key frames) in the adaptation field
//!     of its first packet
//! one PES per run of up to 5 back-to-back AAC frames (stream_id 0xC0), each frame
//!     behind a 7-byte ADTS header built from the AudioSpecificConfig; a run ends at
//!     the next video sample, at a gap in the audio timing, or after 5 frames
//! ```
//!
//! ADTS can signal AAC Main/LC/SSR/LTP (HE-AAC is carried as its AAC-LC core, SBR/PS
//! signalled implicitly), channel configurations 1-7 and the 13 standard sampling
//! frequencies; an explicit (escape) frequency maps to the standard one less than 1 %
//! away, else it is an error, as is a channel configuration 0 (PCE). Without an
//! AudioSpecificConfig the track's sample rate and channel count make an AAC-LC one.
//!
//! Timestamps are the samples' absolute epoch nanoseconds in 90 kHz units modulo 2^33
//! (the PTS/DTS field width), so consecutive segments of one stream carry consecutive
//! timestamps and the clock wraps every 26.5 hours exactly as a long broadcast does.
//! The PCR runs [`PCR_DELAY_90KHZ`] behind the DTS of the access unit it is sent with.
//!
//! Only the first H.264/H.265 track and the first AAC track are muxed; samples of other
//! tracks are skipped. A segment is independently decodable when its first video sample
//! is a key frame: the caller cuts segments at key frames (Kinesis Video fragments
//! start with one).
//!
//! Continuity counters: [`TsContinuity`] holds the next counter of each PID. Passing the
//! same value across the segments of a playlist, in order, gives continuous counters
//! (as ffmpeg's HLS muxer writes them). A server that builds segments independently
//! uses a fresh [`TsContinuity::new`] for each; those segments then start every PID
//! with the `discontinuity_indicator` set, so a demuxer that reads the playlist as one
//! stream (ffmpeg does) accepts the counter jump at the segment boundary instead of
//! flagging the data as corrupt.
//!
//! Pure: bytes in, bytes out, no I/O, no clocks. Never panics on any input: malformed
//! configuration records and NAL unit lengths are [`TsError`]s.

use super::samples::{Codec, MediaTrack, Sample};

/// Transport packet size.
pub const PACKET_LEN: usize = 188;
/// PID of the Program Association Table.
pub const PAT_PID: u16 = 0x0000;
/// PID of the Program Map Table of the single program.
pub const PMT_PID: u16 = 0x1000;
/// PID of the video elementary stream.
pub const VIDEO_PID: u16 = 0x0100;
/// PID of the AAC elementary stream.
pub const AUDIO_PID: u16 = 0x0101;
/// The program number of the single program (PAT entry, PMT).
pub const PROGRAM_NUMBER: u16 = 1;
/// The PCR sent with an access unit lags its DTS by this much (100 ms): the decoder
/// has the data a little before it must decode it (T-STD buffering, 13818-1 2.4.2).
pub const PCR_DELAY_90KHZ: u64 = 9_000;
/// Most AAC frames packed into one PES.
pub const MAX_AAC_FRAMES_PER_PES: usize = 5;

/// Stream types (ISO/IEC 13818-1 table 2-34).
pub const STREAM_TYPE_H264: u8 = 0x1B;
pub const STREAM_TYPE_H265: u8 = 0x24;
pub const STREAM_TYPE_AAC_ADTS: u8 = 0x0F;

const STREAM_ID_VIDEO: u8 = 0xE0;
const STREAM_ID_AUDIO: u8 = 0xC0;
const TS_HEADER_LEN: usize = 4;
const TS_PAYLOAD_LEN: usize = PACKET_LEN - TS_HEADER_LEN;
const TIMESTAMP_MASK: u64 = (1 << 33) - 1;
const ADTS_HEADER_LEN: usize = 7;
/// ADTS `frame_length` is 13 bits and counts the header.
const MAX_ADTS_FRAME_LEN: usize = (1 << 13) - 1;
/// Audio frames whose DTS steps differ from the frame duration by more than this are
/// not packed into one PES (its frames are timed from the PES PTS by their duration).
const AAC_CONTIGUITY_TOLERANCE_NS: i64 = 1_500_000;

/// H.264 AUD, primary_pic_type 7 (any slice type).
const H264_AUD: [u8; 2] = [0x09, 0xF0];
/// H.265 AUD: nal_unit_type 35, nuh_layer_id 0, nuh_temporal_id_plus1 1, pic_type 2.
const H265_AUD: [u8; 3] = [0x46, 0x01, 0x50];
const H264_NAL_AUD: u8 = 9;
const H265_NAL_AUD: u8 = 35;
/// Parameter set NAL unit types, in the order they are inserted.
const H264_PARAMETER_SETS: [u8; 2] = [7, 8];
const H265_PARAMETER_SETS: [u8; 3] = [32, 33, 34];

/// Sampling frequencies by ADTS/AudioSpecificConfig index (ISO/IEC 14496-3 table 1.18).
const AAC_SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

/// Why a segment could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TsError {
    #[error("no H.264, H.265 or AAC track to mux")]
    NoTracks,
    #[error("sample {sample} refers to track {track}, but there are only {tracks} tracks")]
    UnknownTrack {
        sample: usize,
        track: usize,
        tracks: usize,
    },
    #[error("invalid {codec} configuration record: {reason}")]
    BadCodecPrivate {
        codec: &'static str,
        reason: &'static str,
    },
    #[error("AAC: {reason}")]
    UnsupportedAudio { reason: String },
    #[error("sample {sample}: malformed NAL units: {reason}")]
    BadNalUnits { sample: usize, reason: &'static str },
    #[error("sample {sample}: AAC frame of {len} bytes does not fit an ADTS frame")]
    AacFrameTooLarge { sample: usize, len: usize },
}

/// The next continuity_counter of each PID, carried from one segment to the next.
///
/// [`TsContinuity::new`] (= `default()`) starts every counter at 0 and marks the first
/// packet of each PID with the `discontinuity_indicator`; after a segment was written
/// into it, the counters continue where that segment stopped and no indicator is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TsContinuity {
    pat: Counter,
    pmt: Counter,
    video: Counter,
    audio: Counter,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counter {
    next: u8,
    /// At least one packet of this PID was written with this state.
    used: bool,
}

impl Counter {
    /// The counter for the next packet (with payload) and whether it should carry the
    /// discontinuity_indicator.
    fn take(&mut self) -> (u8, bool) {
        let cc = self.next;
        let discontinuity = !self.used;
        self.next = (self.next + 1) & 0x0F;
        self.used = true;
        (cc, discontinuity)
    }
}

impl TsContinuity {
    /// Counters at 0, as for the first segment of a stream (or an independently built
    /// one).
    pub fn new() -> Self {
        Self::default()
    }
}

/// Writes one MPEG-TS segment: PAT, PMT, then a PES per video access unit and per run
/// of AAC frames, every packet [`PACKET_LEN`] bytes.
///
/// `samples` are in decode order per track, tracks interleaved by DTS (as
/// [`super::samples::FragmentSamples`] holds them); they are written in the order given.
/// `continuity` is read and, on success only, advanced (see [`TsContinuity`]).
pub fn ts_segment(
    tracks: &[MediaTrack],
    samples: &[Sample],
    continuity: &mut TsContinuity,
) -> Result<Vec<u8>, TsError> {
    let program = Program::new(tracks)?;
    let mut cc = continuity.clone();
    let data_len: usize = samples.iter().map(|s| s.data.len()).sum();
    let mut out = Vec::with_capacity(
        (data_len / TS_PAYLOAD_LEN + samples.len() * 2 + 2).saturating_mul(PACKET_LEN),
    );

    write_psi(&mut out, PAT_PID, &mut cc.pat, &pat_section());
    write_psi(&mut out, PMT_PID, &mut cc.pmt, &pmt_section(&program));

    let mut audio_run: Vec<(usize, &Sample)> = Vec::new();
    for (index, sample) in samples.iter().enumerate() {
        if sample.track >= tracks.len() {
            return Err(TsError::UnknownTrack {
                sample: index,
                track: sample.track,
                tracks: tracks.len(),
            });
        }
        if let Some(video) = program.video.as_ref().filter(|v| v.track == sample.track) {
            if let Some(audio) = &program.audio {
                flush_audio(&mut out, audio, &mut cc, &mut audio_run, program.pcr_pid)?;
            }
            let pes = video_pes(video, index, sample)?;
            write_pes(
                &mut out,
                VIDEO_PID,
                &mut cc.video,
                &pes,
                AdaptationFlags {
                    pcr: Some(sample_pcr(sample.dts_ns)),
                    random_access: sample.keyframe,
                },
            );
        } else if let Some(audio) = program.audio.as_ref().filter(|a| a.track == sample.track) {
            if let Some(&(_, last)) = audio_run.last() {
                let step = sample.dts_ns.saturating_sub(last.dts_ns);
                let contiguous = step.abs_diff(audio.frame_duration_ns)
                    <= AAC_CONTIGUITY_TOLERANCE_NS.unsigned_abs();
                if !contiguous || audio_run.len() >= MAX_AAC_FRAMES_PER_PES {
                    flush_audio(&mut out, audio, &mut cc, &mut audio_run, program.pcr_pid)?;
                }
            }
            audio_run.push((index, sample));
        }
    }
    if let Some(audio) = &program.audio {
        flush_audio(&mut out, audio, &mut cc, &mut audio_run, program.pcr_pid)?;
    }

    *continuity = cc;
    Ok(out)
}

/// What the PMT announces and how each muxed track is converted.
#[derive(Debug)]
struct Program {
    video: Option<VideoConfig>,
    audio: Option<AudioConfig>,
    pcr_pid: u16,
}

/// Parameter sets from a configuration record: (NAL unit type, NAL unit), in the
/// order they are inserted.
type ParameterSets = Vec<(u8, Vec<u8>)>;

#[derive(Debug)]
struct VideoConfig {
    /// Index into the track list.
    track: usize,
    codec: Codec,
    /// Bytes of each NAL unit length in the samples (1, 2 or 4).
    length_size: usize,
    parameter_sets: ParameterSets,
}

#[derive(Debug)]
struct AudioConfig {
    track: usize,
    adts: AdtsConfig,
    /// Duration of one AAC frame (1024 samples at the core sampling frequency).
    frame_duration_ns: i64,
}

impl Program {
    fn new(tracks: &[MediaTrack]) -> Result<Self, TsError> {
        let video = tracks
            .iter()
            .enumerate()
            .find(|(_, t)| t.codec.is_video())
            .map(|(i, t)| VideoConfig::new(i, t))
            .transpose()?;
        let audio = tracks
            .iter()
            .enumerate()
            .find(|(_, t)| t.codec == Codec::Aac)
            .map(|(i, t)| AudioConfig::new(i, t))
            .transpose()?;
        let pcr_pid = match (&video, &audio) {
            (Some(_), _) => VIDEO_PID,
            (None, Some(_)) => AUDIO_PID,
            (None, None) => return Err(TsError::NoTracks),
        };
        Ok(Self {
            video,
            audio,
            pcr_pid,
        })
    }
}

impl VideoConfig {
    fn new(track: usize, t: &MediaTrack) -> Result<Self, TsError> {
        let (length_size, parameter_sets) = match t.codec {
            Codec::H264 => parse_avcc(&t.codec_private)?,
            _ => parse_hvcc(&t.codec_private)?,
        };
        Ok(Self {
            track,
            codec: t.codec,
            length_size,
            parameter_sets,
        })
    }

    fn nal_type(&self, nal: &[u8]) -> u8 {
        nal_type(self.codec, nal)
    }
}

fn nal_type(codec: Codec, nal: &[u8]) -> u8 {
    let first = nal.first().copied().unwrap_or(0);
    match codec {
        Codec::H264 => first & 0x1F,
        _ => (first >> 1) & 0x3F,
    }
}

impl AudioConfig {
    fn new(track: usize, t: &MediaTrack) -> Result<Self, TsError> {
        let adts = if t.codec_private.is_empty() {
            AdtsConfig::from_track(t)?
        } else {
            AdtsConfig::from_audio_specific_config(&t.codec_private)?
        };
        let rate = AAC_SAMPLE_RATES
            .get(usize::from(adts.sampling_index))
            .copied()
            .unwrap_or(48_000);
        Ok(Self {
            track,
            adts,
            frame_duration_ns: 1024 * 1_000_000_000 / i64::from(rate),
        })
    }
}

// ---------------------------------------------------------------------------------
// Configuration records

fn bad(codec: &'static str, reason: &'static str) -> TsError {
    TsError::BadCodecPrivate { codec, reason }
}

/// A bounds-checked reader over a configuration record.
struct ByteReader<'a> {
    rest: &'a [u8],
    codec: &'static str,
}

impl<'a> ByteReader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TsError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| bad(self.codec, "truncated"))?;
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, TsError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn u16(&mut self) -> Result<u16, TsError> {
        let b = self.take(2)?;
        Ok(b.iter().fold(0, |acc, &x| (acc << 8) | u16::from(x)))
    }
}

fn length_size(length_size_minus_one: u8, codec: &'static str) -> Result<usize, TsError> {
    match length_size_minus_one {
        0 => Ok(1),
        1 => Ok(2),
        3 => Ok(4),
        _ => Err(bad(codec, "lengthSizeMinusOne must be 0, 1 or 3")),
    }
}

/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1): NAL length size and the
/// SPS and PPS NAL units. An empty record (parameter sets only in-band) means 4-byte
/// lengths and nothing to insert.
fn parse_avcc(record: &[u8]) -> Result<(usize, ParameterSets), TsError> {
    const CODEC: &str = "H.264 (avcC)";
    if record.is_empty() {
        return Ok((4, Vec::new()));
    }
    let mut r = ByteReader {
        rest: record,
        codec: CODEC,
    };
    if r.u8()? != 1 {
        return Err(bad(CODEC, "configurationVersion is not 1"));
    }
    r.take(3)?; // profile, compatibility, level
    let length_size = length_size(r.u8()? & 0x03, CODEC)?;
    let mut sets = Vec::new();
    let sps_count = r.u8()? & 0x1F;
    for _ in 0..sps_count {
        let len = usize::from(r.u16()?);
        sets.push(r.take(len)?.to_vec());
    }
    let pps_count = r.u8()?;
    for _ in 0..pps_count {
        let len = usize::from(r.u16()?);
        sets.push(r.take(len)?.to_vec());
    }
    // Anything after the PPS (High profile chroma/bit depth, SPS extensions) is not
    // needed for the byte stream.
    let sets = sets
        .into_iter()
        .filter(|nal| !nal.is_empty())
        .map(|nal| (nal_type(Codec::H264, &nal), nal))
        .filter(|(t, _)| H264_PARAMETER_SETS.contains(t))
        .collect();
    Ok((length_size, sets))
}

/// HEVCDecoderConfigurationRecord (ISO/IEC 14496-15 8.3.3.1): NAL length size and the
/// VPS, SPS and PPS NAL units of its arrays. An empty record means 4-byte lengths and
/// nothing to insert.
fn parse_hvcc(record: &[u8]) -> Result<(usize, ParameterSets), TsError> {
    const CODEC: &str = "H.265 (hvcC)";
    if record.is_empty() {
        return Ok((4, Vec::new()));
    }
    let mut r = ByteReader {
        rest: record,
        codec: CODEC,
    };
    if r.u8()? != 1 {
        return Err(bad(CODEC, "configurationVersion is not 1"));
    }
    r.take(20)?; // profile, tier, level, ... avgFrameRate
    let length_size = length_size(r.u8()? & 0x03, CODEC)?;
    let arrays = r.u8()?;
    let mut sets = Vec::new();
    for _ in 0..arrays {
        r.u8()?; // array_completeness, NAL_unit_type (the NAL headers say it too)
        let count = r.u16()?;
        for _ in 0..count {
            let len = usize::from(r.u16()?);
            let nal = r.take(len)?;
            let t = nal_type(Codec::H265, nal);
            if !nal.is_empty() && H265_PARAMETER_SETS.contains(&t) {
                sets.push((t, nal.to_vec()));
            }
        }
    }
    // VPS before SPS before PPS, whatever the order of the arrays.
    sets.sort_by_key(|(t, _)| *t);
    Ok((length_size, sets))
}

/// The fixed part of every ADTS header of a track (ISO/IEC 14496-3 1.A.2.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AdtsConfig {
    /// ADTS `profile_ObjectType`: audio object type - 1 (0 Main, 1 LC, 2 SSR, 3 LTP).
    profile: u8,
    sampling_index: u8,
    channel_config: u8,
}

/// Reads bits MSB first; `None` past the end.
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn read(&mut self, bits: u32) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..bits {
            let byte = *self.data.get(self.pos / 8)?;
            let bit = (byte >> (7 - (self.pos % 8))) & 1;
            v = (v << 1) | u32::from(bit);
            self.pos += 1;
        }
        Some(v)
    }
}

fn unsupported(reason: impl Into<String>) -> TsError {
    TsError::UnsupportedAudio {
        reason: reason.into(),
    }
}

/// The index of a sampling frequency: exact, or the nearest standard one if it is less
/// than 1 % off (ADTS cannot carry other frequencies).
fn sampling_index(frequency: u32) -> Result<u8, TsError> {
    let (index, nearest) = AAC_SAMPLE_RATES
        .iter()
        .enumerate()
        .min_by_key(|(_, r)| r.abs_diff(frequency))
        .map(|(i, r)| (i, *r))
        .unwrap_or((3, 48_000));
    if u64::from(nearest.abs_diff(frequency)) * 100 <= u64::from(frequency) {
        Ok(u8::try_from(index).unwrap_or(3))
    } else {
        Err(unsupported(format!(
            "sampling frequency {frequency} Hz has no ADTS index"
        )))
    }
}

impl AdtsConfig {
    /// From an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1). HE-AAC (SBR, PS) maps to
    /// its AAC core, as ADTS signals it implicitly.
    fn from_audio_specific_config(asc: &[u8]) -> Result<Self, TsError> {
        let truncated = || bad("AAC (AudioSpecificConfig)", "truncated");
        let mut r = BitReader { data: asc, pos: 0 };
        let read_object_type = |r: &mut BitReader| -> Option<u32> {
            let t = r.read(5)?;
            if t == 31 {
                Some(32 + r.read(6)?)
            } else {
                Some(t)
            }
        };
        let read_frequency = |r: &mut BitReader| -> Option<Result<u8, TsError>> {
            let index = r.read(4)?;
            Some(match index {
                0xF => sampling_index(r.read(24)?),
                i if (i as usize) < AAC_SAMPLE_RATES.len() => Ok(i as u8),
                _ => Err(bad(
                    "AAC (AudioSpecificConfig)",
                    "reserved samplingFrequencyIndex",
                )),
            })
        };
        let mut object_type = read_object_type(&mut r).ok_or_else(truncated)?;
        let sampling_index = read_frequency(&mut r).ok_or_else(truncated)??;
        let channel_config = r.read(4).ok_or_else(truncated)?;
        if object_type == 5 || object_type == 29 {
            // extensionSamplingFrequency, then the core object type.
            read_frequency(&mut r).ok_or_else(truncated)??;
            object_type = read_object_type(&mut r).ok_or_else(truncated)?;
        }
        if !(1..=4).contains(&object_type) {
            return Err(unsupported(format!(
                "audio object type {object_type} cannot be carried in ADTS"
            )));
        }
        if !(1..=7).contains(&channel_config) {
            return Err(unsupported(format!(
                "channel configuration {channel_config} cannot be carried in ADTS"
            )));
        }
        Ok(Self {
            profile: (object_type - 1) as u8,
            sampling_index,
            channel_config: channel_config as u8,
        })
    }

    /// AAC-LC from the track's sampling frequency and channel count, for a track
    /// without AudioSpecificConfig.
    fn from_track(t: &MediaTrack) -> Result<Self, TsError> {
        let channel_config = match t.channels {
            1..=6 => t.channels as u8,
            8 => 7,
            n => return Err(unsupported(format!("{n} channels without configuration"))),
        };
        Ok(Self {
            profile: 1,
            sampling_index: sampling_index(t.sample_rate)?,
            channel_config,
        })
    }

    /// The 7-byte header (protection_absent, no CRC) of a frame with `payload_len`
    /// bytes of raw data, or `None` if the frame is too large.
    fn header(&self, payload_len: usize) -> Option<[u8; ADTS_HEADER_LEN]> {
        let len = payload_len.checked_add(ADTS_HEADER_LEN)?;
        if len > MAX_ADTS_FRAME_LEN {
            return None;
        }
        let len = len as u16;
        Some([
            0xFF,
            0xF1, // syncword, ID 0 (MPEG-4), layer 0, protection_absent 1
            (self.profile << 6) | (self.sampling_index << 2) | (self.channel_config >> 2),
            ((self.channel_config & 0x03) << 6) | (len >> 11) as u8,
            (len >> 3) as u8,
            (((len & 0x07) as u8) << 5) | 0x1F, // buffer fullness 0x7FF (VBR)
            0xFC,                               // ... and one raw data block
        ])
    }
}

// ---------------------------------------------------------------------------------
// PES

/// Nanoseconds since the epoch to the 33-bit 90 kHz clock (floor, modulo 2^33).
fn to_90khz(ns: i64) -> u64 {
    let ticks = (i128::from(ns) * 9).div_euclid(100_000);
    (ticks.rem_euclid(1 << 33)) as u64
}

fn sample_pcr(dts_ns: i64) -> u64 {
    to_90khz(dts_ns).wrapping_sub(PCR_DELAY_90KHZ) & TIMESTAMP_MASK
}

/// A PTS or DTS field: 4-bit prefix, then the 33 bits split 3/15/15 with marker bits.
fn encode_timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    let ts = ts & TIMESTAMP_MASK;
    [
        (prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1,
        (ts >> 22) as u8,
        (((ts >> 15) as u8 & 0x7F) << 1) | 1,
        (ts >> 7) as u8,
        ((ts as u8 & 0x7F) << 1) | 1,
    ]
}

/// Starts a PES: header with PTS (and DTS if it differs); PES_packet_length is patched
/// by [`finish_pes`].
fn start_pes(stream_id: u8, pts: u64, dts: u64, payload_hint: usize) -> Vec<u8> {
    let with_dts = pts != dts;
    let mut pes = Vec::with_capacity(payload_hint + 19);
    pes.extend_from_slice(&[0x00, 0x00, 0x01, stream_id, 0x00, 0x00]);
    // '10', not scrambled, no priority, data_alignment_indicator, no copyright, copy.
    pes.push(0x84);
    pes.push(if with_dts { 0xC0 } else { 0x80 });
    pes.push(if with_dts { 10 } else { 5 });
    pes.extend_from_slice(&encode_timestamp(if with_dts { 0x3 } else { 0x2 }, pts));
    if with_dts {
        pes.extend_from_slice(&encode_timestamp(0x1, dts));
    }
    pes
}

/// Sets PES_packet_length, or leaves 0 (unbounded, allowed for video only) when the
/// packet is longer than the field can say.
fn finish_pes(pes: &mut [u8]) {
    let len = pes.len().saturating_sub(6);
    if let (Ok(len), Some(field)) = (u16::try_from(len), pes.get_mut(4..6)) {
        field.copy_from_slice(&len.to_be_bytes());
    }
}

/// One video access unit as a PES: Annex B with AUD first and, at key frames, the
/// parameter sets the access unit lacks.
fn video_pes(video: &VideoConfig, index: usize, sample: &Sample) -> Result<Vec<u8>, TsError> {
    let nals =
        split_nals(&sample.data, video.length_size).map_err(|reason| TsError::BadNalUnits {
            sample: index,
            reason,
        })?;
    let aud: &[u8] = match video.codec {
        Codec::H264 => &H264_AUD,
        _ => &H265_AUD,
    };
    let aud_type = match video.codec {
        Codec::H264 => H264_NAL_AUD,
        _ => H265_NAL_AUD,
    };
    let inserted: Vec<&[u8]> = if sample.keyframe {
        video
            .parameter_sets
            .iter()
            .filter(|(t, _)| !nals.iter().any(|n| video.nal_type(n) == *t))
            .map(|(_, nal)| nal.as_slice())
            .collect()
    } else {
        Vec::new()
    };
    let kept = nals.iter().filter(|n| video.nal_type(n) != aud_type);

    let payload_len: usize = std::iter::once(aud)
        .chain(inserted.iter().copied())
        .chain(kept.clone().copied())
        .map(|n| n.len() + 4)
        .sum();
    let mut pes = start_pes(
        STREAM_ID_VIDEO,
        to_90khz(sample.pts_ns),
        to_90khz(sample.dts_ns),
        payload_len,
    );
    for nal in std::iter::once(aud)
        .chain(inserted.iter().copied())
        .chain(kept.copied())
    {
        pes.extend_from_slice(&[0, 0, 0, 1]);
        pes.extend_from_slice(nal);
    }
    finish_pes(&mut pes);
    Ok(pes)
}

/// Splits length-prefixed NAL units; zero-length units are dropped.
fn split_nals(data: &[u8], length_size: usize) -> Result<Vec<&[u8]>, &'static str> {
    let mut nals = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_at_checked(length_size)
            .ok_or("truncated NAL unit length")?;
        let len = len
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let (nal, tail) = tail
            .split_at_checked(len)
            .ok_or("NAL unit length runs past the sample")?;
        if !nal.is_empty() {
            nals.push(nal);
        }
        rest = tail;
    }
    if nals.is_empty() {
        return Err("no NAL units");
    }
    Ok(nals)
}

/// Writes the pending AAC frames as one PES.
fn flush_audio(
    out: &mut Vec<u8>,
    audio: &AudioConfig,
    cc: &mut TsContinuity,
    run: &mut Vec<(usize, &Sample)>,
    pcr_pid: u16,
) -> Result<(), TsError> {
    let Some(&(_, first)) = run.first() else {
        return Ok(());
    };
    let payload_len: usize = run
        .iter()
        .map(|(_, s)| s.data.len() + ADTS_HEADER_LEN)
        .sum();
    let pts = to_90khz(first.pts_ns);
    let mut pes = start_pes(STREAM_ID_AUDIO, pts, pts, payload_len);
    for &(index, sample) in run.iter() {
        let header = audio
            .adts
            .header(sample.data.len())
            .ok_or(TsError::AacFrameTooLarge {
                sample: index,
                len: sample.data.len(),
            })?;
        pes.extend_from_slice(&header);
        pes.extend_from_slice(&sample.data);
    }
    finish_pes(&mut pes);
    write_pes(
        out,
        AUDIO_PID,
        &mut cc.audio,
        &pes,
        AdaptationFlags {
            pcr: (pcr_pid == AUDIO_PID).then(|| sample_pcr(first.dts_ns)),
            random_access: false,
        },
    );
    run.clear();
    Ok(())
}

// ---------------------------------------------------------------------------------
// Transport packets

/// What the adaptation field of a PES's first packet carries.
#[derive(Debug, Clone, Copy, Default)]
struct AdaptationFlags {
    /// PCR base (90 kHz); the extension is 0.
    pcr: Option<u64>,
    random_access: bool,
}

fn encode_pcr(base: u64) -> [u8; 6] {
    let base = base & TIMESTAMP_MASK;
    [
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        (((base & 1) as u8) << 7) | 0x7E, // 6 reserved bits, extension bit 8 = 0
        0x00,
    ]
}

fn packet_header(pid: u16, start: bool, adaptation: bool, cc: u8) -> [u8; 4] {
    [
        0x47,
        (u8::from(start) << 6) | ((pid >> 8) as u8 & 0x1F),
        pid as u8,
        (if adaptation { 0x30 } else { 0x10 }) | (cc & 0x0F),
    ]
}

/// Splits a PES into packets: the first with PUSI and the PCR / random access flags,
/// the last padded with adaptation field stuffing. The first packet of a PID under a
/// fresh [`TsContinuity`] carries the discontinuity_indicator.
fn write_pes(
    out: &mut Vec<u8>,
    pid: u16,
    counter: &mut Counter,
    pes: &[u8],
    flags: AdaptationFlags,
) {
    let mut rest = pes;
    let mut first = true;
    while first || !rest.is_empty() {
        let (cc, discontinuity) = counter.take();
        // Adaptation field after its length byte: flags byte and optional fields.
        let mut af: Vec<u8> = Vec::new();
        let mut flag_byte = 0u8;
        if discontinuity {
            flag_byte |= 0x80;
        }
        if first {
            if flags.random_access {
                flag_byte |= 0x40;
            }
            if flags.pcr.is_some() {
                flag_byte |= 0x10;
            }
        }
        let mut has_af = flag_byte != 0;
        if has_af {
            af.push(flag_byte);
            if let (true, Some(pcr)) = (first, flags.pcr) {
                af.extend_from_slice(&encode_pcr(pcr));
            }
        }
        let space = TS_PAYLOAD_LEN - if has_af { 1 + af.len() } else { 0 };
        let take = space.min(rest.len());
        let stuffing = space - take;
        if stuffing > 0 {
            if has_af {
                af.resize(af.len() + stuffing, 0xFF);
            } else {
                has_af = true;
                // One byte of stuffing is the length byte alone (length 0).
                if stuffing >= 2 {
                    af.push(0x00);
                    af.resize(stuffing - 1, 0xFF);
                }
            }
        }
        let (payload, tail) = rest.split_at(take);
        out.extend_from_slice(&packet_header(pid, first, has_af, cc));
        if has_af {
            out.push(af.len() as u8);
            out.extend_from_slice(&af);
        }
        out.extend_from_slice(payload);
        rest = tail;
        first = false;
    }
}

/// One PSI section in one packet: pointer_field 0, the section, 0xFF filler.
fn write_psi(out: &mut Vec<u8>, pid: u16, counter: &mut Counter, section: &[u8]) {
    let (cc, discontinuity) = counter.take();
    let start = out.len();
    out.extend_from_slice(&packet_header(pid, true, discontinuity, cc));
    if discontinuity {
        out.extend_from_slice(&[1, 0x80]);
    }
    out.push(0x00);
    out.extend_from_slice(section);
    out.resize(start + PACKET_LEN, 0xFF);
}

/// Completes a PSI section: section_length (from byte 3 to the CRC inclusive) and
/// CRC_32.
fn finish_section(mut section: Vec<u8>) -> Vec<u8> {
    let [len_hi, len_lo] = ((section.len() + 1) as u16).to_be_bytes();
    if let Some([hi, lo]) = section
        .get_mut(1..3)
        .and_then(|f| <&mut [u8; 2]>::try_from(f).ok())
    {
        *hi = (*hi & 0xF0) | (len_hi & 0x0F);
        *lo = len_lo;
    }
    let crc = crc32_mpeg2(&section);
    section.extend_from_slice(&crc.to_be_bytes());
    section
}

/// program_association_section (13818-1 2.4.4.3): program 1 on [`PMT_PID`].
fn pat_section() -> Vec<u8> {
    let [pn_hi, pn_lo] = PROGRAM_NUMBER.to_be_bytes();
    finish_section(vec![
        0x00, // table_id
        0xB0, // section_syntax_indicator, '0', reserved; length patched
        0x00,
        0x00, // transport_stream_id 1
        0x01,
        0xC1, // reserved, version 0, current_next_indicator
        0x00, // section_number
        0x00, // last_section_number
        pn_hi,
        pn_lo,
        0xE0 | (PMT_PID >> 8) as u8,
        PMT_PID as u8,
    ])
}

/// TS_program_map_section (13818-1 2.4.4.8) for the program's streams.
fn pmt_section(program: &Program) -> Vec<u8> {
    let [pn_hi, pn_lo] = PROGRAM_NUMBER.to_be_bytes();
    let mut s = vec![
        0x02, // table_id
        0xB0,
        0x00,
        pn_hi,
        pn_lo,
        0xC1,
        0x00,
        0x00,
        0xE0 | (program.pcr_pid >> 8) as u8,
        program.pcr_pid as u8,
        0xF0, // reserved, program_info_length 0
        0x00,
    ];
    let mut stream = |stream_type: u8, pid: u16| {
        s.extend_from_slice(&[stream_type, 0xE0 | (pid >> 8) as u8, pid as u8, 0xF0, 0x00]);
    };
    if let Some(video) = &program.video {
        let stream_type = match video.codec {
            Codec::H264 => STREAM_TYPE_H264,
            _ => STREAM_TYPE_H265,
        };
        stream(stream_type, VIDEO_PID);
    }
    if program.audio.is_some() {
        stream(STREAM_TYPE_AAC_ADTS, AUDIO_PID);
    }
    finish_section(s)
}

/// CRC-32/MPEG-2 (13818-1 Annex A): polynomial 0x04C11DB7, initial value all ones, no
/// reflection, no final XOR. A section followed by its CRC checks to 0.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// One parsed transport packet.
    #[derive(Debug, Clone)]
    struct Packet {
        pid: u16,
        start: bool,
        cc: u8,
        /// Adaptation field after its length byte (None without one).
        af: Option<Vec<u8>>,
        payload: Vec<u8>,
    }

    impl Packet {
        fn discontinuity(&self) -> bool {
            self.af
                .as_ref()
                .and_then(|a| a.first())
                .is_some_and(|f| f & 0x80 != 0)
        }
        fn random_access(&self) -> bool {
            self.af
                .as_ref()
                .and_then(|a| a.first())
                .is_some_and(|f| f & 0x40 != 0)
        }
        fn pcr(&self) -> Option<u64> {
            let af = self.af.as_ref()?;
            if af.first()? & 0x10 == 0 {
                return None;
            }
            let b = af.get(1..7)?;
            let base = (u64::from(b[0]) << 25)
                | (u64::from(b[1]) << 17)
                | (u64::from(b[2]) << 9)
                | (u64::from(b[3]) << 1)
                | u64::from(b[4] >> 7);
            assert_eq!(b[4] & 0x7E, 0x7E, "PCR reserved bits");
            Some(base)
        }
    }

    /// Splits a segment into packets, checking the framing of each.
    fn packets(ts: &[u8]) -> Vec<Packet> {
        assert_eq!(ts.len() % PACKET_LEN, 0, "whole packets");
        ts.chunks(PACKET_LEN)
            .map(|p| {
                assert_eq!(p[0], 0x47, "sync byte");
                assert_eq!(p[1] & 0x80, 0, "transport_error_indicator");
                let afc = (p[3] >> 4) & 3;
                assert!(afc == 1 || afc == 3, "payload in every packet");
                let (af, payload_start) = if afc == 3 {
                    let len = usize::from(p[4]);
                    assert!(len <= 182, "adaptation field length {len}");
                    (Some(p[5..5 + len].to_vec()), 5 + len)
                } else {
                    (None, 4)
                };
                Packet {
                    pid: (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]),
                    start: p[1] & 0x40 != 0,
                    cc: p[3] & 0x0F,
                    af,
                    payload: p[payload_start..].to_vec(),
                }
            })
            .collect()
    }

    /// The PES packets of one PID, reassembled (each starts at a PUSI packet).
    fn pes_of(ts: &[u8], pid: u16) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for p in packets(ts).into_iter().filter(|p| p.pid == pid) {
            if p.start {
                out.push(p.payload);
            } else {
                out.last_mut()
                    .expect("PES starts with PUSI")
                    .extend(p.payload);
            }
        }
        out
    }

    /// (stream_id, PTS, DTS, payload) of a PES; checks PES_packet_length.
    fn parse_pes(pes: &[u8]) -> (u8, u64, Option<u64>, Vec<u8>) {
        assert_eq!(&pes[..3], &[0, 0, 1]);
        let len = usize::from(u16::from_be_bytes([pes[4], pes[5]]));
        if len != 0 {
            assert_eq!(len, pes.len() - 6, "PES_packet_length");
        }
        assert_eq!(pes[6], 0x84);
        let header_len = usize::from(pes[8]);
        let pts = decode_timestamp(&pes[9..14]);
        let dts = match pes[7] {
            0x80 => {
                assert_eq!(header_len, 5);
                assert_eq!(pes[9] >> 4, 0x2);
                None
            }
            0xC0 => {
                assert_eq!(header_len, 10);
                assert_eq!(pes[9] >> 4, 0x3);
                assert_eq!(pes[14] >> 4, 0x1);
                Some(decode_timestamp(&pes[14..19]))
            }
            other => panic!("PTS_DTS_flags {other:#x}"),
        };
        (pes[3], pts, dts, pes[9 + header_len..].to_vec())
    }

    fn decode_timestamp(b: &[u8]) -> u64 {
        assert_eq!(b[0] & 1, 1, "marker");
        assert_eq!(b[2] & 1, 1, "marker");
        assert_eq!(b[4] & 1, 1, "marker");
        (u64::from((b[0] >> 1) & 7) << 30)
            | (u64::from(b[1]) << 22)
            | (u64::from(b[2] >> 1) << 15)
            | (u64::from(b[3]) << 7)
            | u64::from(b[4] >> 1)
    }

    /// A PSI section from a packet with pointer_field 0; checks length and CRC.
    fn section(p: &Packet) -> Vec<u8> {
        assert!(p.start);
        assert_eq!(p.payload[0], 0, "pointer_field");
        let s = &p.payload[1..];
        let len = usize::from(u16::from_be_bytes([s[1] & 0x0F, s[2]]));
        let section = s[..3 + len].to_vec();
        assert_eq!(crc32_mpeg2(&section), 0, "CRC_32 over the whole section");
        assert!(s[3 + len..].iter().all(|&b| b == 0xFF), "0xFF filler");
        section
    }

    const SPS: &[u8] = &[0x67, 0x42, 0xC0, 0x1E, 0xDA, 0x02, 0x80, 0xBF, 0xE5];
    const PPS: &[u8] = &[0x68, 0xCE, 0x3C, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xFF];
    const SLICE: &[u8] = &[0x41, 0x9A, 0x02, 0x04];
    /// AAC-LC, 48 kHz (index 3), 2 channels.
    const ASC_LC_48K_STEREO: &[u8] = &[0x11, 0x90];

    fn avcc(length_size_minus_one: u8, sps: &[&[u8]], pps: &[&[u8]]) -> Vec<u8> {
        let mut v = vec![1, 0x42, 0xC0, 0x1E, 0xFC | length_size_minus_one];
        v.push(0xE0 | sps.len() as u8);
        for s in sps {
            v.extend_from_slice(&(s.len() as u16).to_be_bytes());
            v.extend_from_slice(s);
        }
        v.push(pps.len() as u8);
        for p in pps {
            v.extend_from_slice(&(p.len() as u16).to_be_bytes());
            v.extend_from_slice(p);
        }
        v
    }

    fn length_prefixed(length_size: usize, nals: &[&[u8]]) -> Bytes {
        let mut v = Vec::new();
        for n in nals {
            let len = (n.len() as u32).to_be_bytes();
            v.extend_from_slice(&len[4 - length_size..]);
            v.extend_from_slice(n);
        }
        Bytes::from(v)
    }

    fn annex_b(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&[0, 0, 0, 1][..], n].concat())
            .collect()
    }

    fn video_track(codec: Codec, codec_private: Vec<u8>) -> MediaTrack {
        MediaTrack {
            number: 1,
            codec,
            codec_private: Bytes::from(codec_private),
            width: 320,
            height: 240,
            sample_rate: 0,
            channels: 0,
        }
    }

    fn aac_track(asc: &[u8]) -> MediaTrack {
        MediaTrack {
            number: 2,
            codec: Codec::Aac,
            codec_private: Bytes::copy_from_slice(asc),
            width: 0,
            height: 0,
            sample_rate: 48_000,
            channels: 2,
        }
    }

    /// An epoch time close to now, in ns.
    const T0: i64 = 1_760_000_000_000_000_000;
    const FRAME_NS: i64 = 40_000_000;
    const AAC_NS: i64 = 21_333_333;

    fn sample(track: usize, dts_ns: i64, keyframe: bool, data: impl Into<Bytes>) -> Sample {
        Sample {
            track,
            dts_ns,
            pts_ns: dts_ns,
            duration_ns: 0,
            keyframe,
            data: data.into(),
        }
    }

    /// Two video frames (key, delta) and three AAC frames.
    fn av_segment(continuity: &mut TsContinuity) -> Vec<u8> {
        let tracks = [
            video_track(Codec::H264, avcc(3, &[SPS], &[PPS])),
            aac_track(ASC_LC_48K_STEREO),
        ];
        let big_idr: Vec<u8> = IDR.iter().copied().cycle().take(1000).collect();
        let samples = [
            sample(0, T0, true, length_prefixed(4, &[&big_idr])),
            sample(1, T0, true, vec![0x21; 300]),
            sample(1, T0 + AAC_NS, true, vec![0x22; 301]),
            sample(0, T0 + FRAME_NS, false, length_prefixed(4, &[SLICE])),
            sample(1, T0 + 2 * AAC_NS, true, vec![0x23; 302]),
        ];
        ts_segment(&tracks, &samples, continuity).unwrap()
    }

    #[test]
    fn crc32_mpeg2_check_value() {
        // The catalogued check value of CRC-32/MPEG-2.
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
        assert_eq!(crc32_mpeg2(&[]), 0xFFFF_FFFF);
    }

    #[test]
    fn packets_are_188_bytes_with_sync_bytes_and_psi_first() {
        let ts = av_segment(&mut TsContinuity::new());
        let packets = packets(&ts);
        assert_eq!(packets[0].pid, PAT_PID);
        assert_eq!(packets[1].pid, PMT_PID);
        assert!(
            packets[2..]
                .iter()
                .all(|p| p.pid == VIDEO_PID || p.pid == AUDIO_PID)
        );
    }

    #[test]
    fn pat_and_pmt_sections_and_crc() {
        let ts = av_segment(&mut TsContinuity::new());
        let av = packets(&ts);
        let pat = section(&av[0]);
        assert_eq!(
            pat[..pat.len() - 4],
            [
                0x00, 0xB0, 13, 0x00, 0x01, 0xC1, 0, 0, 0x00, 0x01, 0xF0, 0x00
            ]
        );
        let pmt = section(&av[1]);
        assert_eq!(
            pmt[..pmt.len() - 4],
            [
                0x02, 0xB0, 23, 0x00, 0x01, 0xC1, 0, 0, 0xE1, 0x00, 0xF0,
                0x00, // PCR PID 0x100
                0x1B, 0xE1, 0x00, 0xF0, 0x00, // H.264 on 0x100
                0x0F, 0xE1, 0x01, 0xF0, 0x00, // AAC ADTS on 0x101
            ]
        );
        // H.265 only: stream type 0x24; AAC only: PCR on the audio PID.
        let hevc = ts_segment(
            &[video_track(Codec::H265, Vec::new())],
            &[],
            &mut TsContinuity::new(),
        )
        .unwrap();
        let pmt = section(&packets(&hevc)[1]);
        assert_eq!(pmt[12..17], [0x24, 0xE1, 0x00, 0xF0, 0x00]);
        let audio = ts_segment(
            &[aac_track(ASC_LC_48K_STEREO)],
            &[sample(0, T0, true, vec![1; 10])],
            &mut TsContinuity::new(),
        )
        .unwrap();
        let audio = packets(&audio);
        let pmt = section(&audio[1]);
        assert_eq!(pmt[8..10], [0xE1, 0x01]);
        assert_eq!(pmt[12..17], [0x0F, 0xE1, 0x01, 0xF0, 0x00]);
        assert_eq!(
            audio[2].pcr(),
            Some((to_90khz(T0) - PCR_DELAY_90KHZ) & TIMESTAMP_MASK)
        );
    }

    #[test]
    fn continuity_counters_per_pid_and_across_segments() {
        let mut continuity = TsContinuity::new();
        let first = av_segment(&mut continuity);
        let second = av_segment(&mut continuity);
        let mut last: std::collections::HashMap<u16, u8> = Default::default();
        for (segment, ts) in [&first, &second].into_iter().enumerate() {
            let mut seen = std::collections::HashSet::new();
            for p in packets(ts) {
                let fresh = seen.insert(p.pid);
                match last.insert(p.pid, p.cc) {
                    None => {
                        assert_eq!(p.cc, 0, "PID {:#x} starts at 0", p.pid);
                        assert!(p.discontinuity(), "fresh counters are marked");
                    }
                    Some(prev) => {
                        assert_eq!(p.cc, (prev + 1) & 0x0F, "PID {:#x}", p.pid);
                        assert!(!p.discontinuity(), "segment {segment}");
                    }
                }
                if segment == 0 {
                    assert_eq!(p.discontinuity(), fresh);
                }
            }
        }
        // Video needs several packets per frame here, so its counter moved further.
        let video_packets = packets(&first)
            .iter()
            .filter(|p| p.pid == VIDEO_PID)
            .count();
        assert!(video_packets > 5);
        assert_eq!(continuity.video.next, (2 * video_packets % 16) as u8);
        assert_eq!(continuity.pat.next, 2);
    }

    #[test]
    fn timestamps_round_trip_and_wrap() {
        for ts in [
            0,
            1,
            0x1_0000_0000,
            TIMESTAMP_MASK,
            0x1_2345_6789,
            90_000 * 3600,
        ] {
            assert_eq!(decode_timestamp(&encode_timestamp(0x2, ts)), ts);
            assert_eq!(decode_timestamp(&encode_timestamp(0x3, ts)), ts);
            assert_eq!(encode_timestamp(0x1, ts)[0] >> 4, 1);
        }
        assert_eq!(to_90khz(0), 0);
        assert_eq!(to_90khz(1_000_000_000), 90_000);
        assert_eq!(to_90khz(40_000_000), 3_600);
        // Absolute epoch times: modulo 2^33, and no overflow (ns * 9 exceeds i64).
        let t = 1_760_000_000_123_456_789i64;
        let expected = ((i128::from(t) * 9 / 100_000) % (1 << 33)) as u64;
        assert_eq!(to_90khz(t), expected);
        assert!(to_90khz(i64::MAX) <= TIMESTAMP_MASK);
        assert_eq!(to_90khz(-1_000_000_000), (1 << 33) - 90_000);
        assert!(to_90khz(i64::MIN) <= TIMESTAMP_MASK);
        // The wrap: one tick before and after 2^33 ticks.
        let wrap_ns = ((1i128 << 33) * 100_000 / 9) as i64 + 1;
        assert_eq!(to_90khz(wrap_ns), 0);
        assert_eq!(to_90khz(wrap_ns - 1), TIMESTAMP_MASK);

        // In a segment: PTS only when PTS = DTS, both otherwise; PCR behind the DTS.
        let tracks = [video_track(Codec::H264, avcc(3, &[SPS], &[PPS]))];
        let mut b_frame = sample(0, T0, false, length_prefixed(4, &[SLICE]));
        b_frame.pts_ns = T0 + 2 * FRAME_NS;
        let samples = [
            sample(0, T0 - FRAME_NS, true, length_prefixed(4, &[IDR])),
            b_frame,
        ];
        let ts = ts_segment(&tracks, &samples, &mut TsContinuity::new()).unwrap();
        let pes = pes_of(&ts, VIDEO_PID);
        let (sid, pts, dts, _) = parse_pes(&pes[0]);
        assert_eq!((sid, pts, dts), (0xE0, to_90khz(T0 - FRAME_NS), None));
        let (_, pts, dts, _) = parse_pes(&pes[1]);
        assert_eq!(pts, to_90khz(T0 + 2 * FRAME_NS));
        assert_eq!(dts, Some(to_90khz(T0)));
        let starts: Vec<Packet> = packets(&ts)
            .into_iter()
            .filter(|p| p.pid == VIDEO_PID && p.start)
            .collect();
        assert_eq!(
            starts[0].pcr(),
            Some(to_90khz(T0 - FRAME_NS) - PCR_DELAY_90KHZ)
        );
        assert_eq!(starts[1].pcr(), Some(to_90khz(T0) - PCR_DELAY_90KHZ));
        assert!(starts[0].random_access());
        assert!(!starts[1].random_access());
    }

    #[test]
    fn adts_header_for_48khz_stereo_lc() {
        let adts = AdtsConfig::from_audio_specific_config(ASC_LC_48K_STEREO).unwrap();
        assert_eq!(
            adts,
            AdtsConfig {
                profile: 1,
                sampling_index: 3,
                channel_config: 2
            }
        );
        let h = adts.header(371).unwrap();
        let bits = h.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let field = |from: u32, width: u32| (bits >> (56 - from - width)) & ((1 << width) - 1);
        assert_eq!(field(0, 12), 0xFFF, "syncword");
        assert_eq!(field(12, 1), 0, "ID: MPEG-4");
        assert_eq!(field(13, 2), 0, "layer");
        assert_eq!(field(15, 1), 1, "protection_absent");
        assert_eq!(field(16, 2), 1, "profile: LC");
        assert_eq!(field(18, 4), 3, "sampling_frequency_index: 48 kHz");
        assert_eq!(field(22, 1), 0, "private_bit");
        assert_eq!(field(23, 3), 2, "channel_configuration");
        assert_eq!(field(26, 4), 0, "original, home, copyright bits");
        assert_eq!(field(30, 13), 378, "frame_length incl. header");
        assert_eq!(field(43, 11), 0x7FF, "buffer fullness");
        assert_eq!(field(54, 2), 0, "one raw data block");
        assert_eq!(h, [0xFF, 0xF1, 0x4C, 0x80, 0x2F, 0x5F, 0xFC]);
        assert!(adts.header(MAX_ADTS_FRAME_LEN - ADTS_HEADER_LEN).is_some());
        assert!(
            adts.header(MAX_ADTS_FRAME_LEN - ADTS_HEADER_LEN + 1)
                .is_none()
        );

        // HE-AAC v1 (explicit SBR): core AAC-LC at 24 kHz, stereo.
        // aot 5, sfi 6 (24 kHz), ch 2, ext sfi 3 (48 kHz), aot 2.
        let he = AdtsConfig::from_audio_specific_config(&[0x2B, 0x11, 0x88, 0x00]).unwrap();
        assert_eq!(
            (he.profile, he.sampling_index, he.channel_config),
            (1, 6, 2)
        );
        // Escape frequency: 48000 explicitly is index 3; 48100 (0.2 % off) too;
        // 50000 Hz has no index.
        let explicit = |hz: u32| {
            // aot 2 (5 bits), sfi 15 (4), 24-bit frequency, ch 2 (4), padding.
            let bits: u64 = (2 << 35) | (0xF << 31) | (u64::from(hz) << 7) | (2 << 3);
            let bytes = bits.to_be_bytes();
            AdtsConfig::from_audio_specific_config(&bytes[3..])
        };
        assert_eq!(explicit(48_000).unwrap().sampling_index, 3);
        assert_eq!(explicit(48_100).unwrap().sampling_index, 3);
        assert_eq!(explicit(22_050).unwrap().sampling_index, 7);
        assert!(matches!(
            explicit(50_000),
            Err(TsError::UnsupportedAudio { .. })
        ));
        // Channel configuration 0 (PCE) and object types ADTS cannot signal.
        assert!(AdtsConfig::from_audio_specific_config(&[0x11, 0x80]).is_err());
        assert!(AdtsConfig::from_audio_specific_config(&[0xF8, 0x00, 0x00]).is_err());
        assert!(AdtsConfig::from_audio_specific_config(&[0x12]).is_err());
        // No AudioSpecificConfig: AAC-LC from the track.
        let mut bare = aac_track(&[]);
        bare.sample_rate = 44_100;
        let cfg = AudioConfig::new(0, &bare).unwrap();
        assert_eq!((cfg.adts.profile, cfg.adts.sampling_index), (1, 4));
        assert_eq!(cfg.frame_duration_ns, 23_219_954);
    }

    #[test]
    fn aac_frames_share_a_pes_when_back_to_back() {
        let tracks = [aac_track(ASC_LC_48K_STEREO)];
        let mut samples: Vec<Sample> = (0..7)
            .map(|i| sample(0, T0 + i * AAC_NS, true, vec![i as u8; 10 + i as usize]))
            .collect();
        // A gap of one frame before the last one.
        samples.push(sample(0, T0 + 8 * AAC_NS, true, vec![9; 5]));
        let ts = ts_segment(&tracks, &samples, &mut TsContinuity::new()).unwrap();
        let pes: Vec<_> = pes_of(&ts, AUDIO_PID)
            .iter()
            .map(|p| parse_pes(p))
            .collect();
        assert_eq!(pes.len(), 3);
        assert_eq!(pes[0].0, 0xC0);
        assert_eq!(pes[0].1, to_90khz(T0));
        assert_eq!(pes[1].1, to_90khz(T0 + 5 * AAC_NS));
        assert_eq!(pes[2].1, to_90khz(T0 + 8 * AAC_NS));
        let frames = |payload: &[u8]| {
            let mut rest = payload;
            let mut lens = Vec::new();
            while !rest.is_empty() {
                assert_eq!(rest[..2], [0xFF, 0xF1]);
                let len = (usize::from(rest[3] & 3) << 11)
                    | (usize::from(rest[4]) << 3)
                    | usize::from(rest[5] >> 5);
                lens.push(len - ADTS_HEADER_LEN);
                rest = &rest[len..];
            }
            lens
        };
        assert_eq!(frames(&pes[0].3), [10, 11, 12, 13, 14]);
        assert_eq!(frames(&pes[1].3), [15, 16]);
        assert_eq!(frames(&pes[2].3), [5]);
        assert_eq!(pes[2].3[7..], [9; 5]);
    }

    #[test]
    fn h264_to_annex_b_with_aud_and_parameter_sets() {
        for (minus_one, size) in [(0u8, 1usize), (1, 2), (3, 4)] {
            let tracks = [video_track(Codec::H264, avcc(minus_one, &[SPS], &[PPS]))];
            let sei: &[u8] = &[0x06, 0x05, 0x01, 0x80];
            let samples = [
                // A key frame without parameter sets (and with its own AUD, replaced).
                sample(0, T0, true, length_prefixed(size, &[&H264_AUD, sei, IDR])),
                sample(
                    0,
                    T0 + FRAME_NS,
                    false,
                    length_prefixed(size, &[SLICE, SLICE]),
                ),
                // A key frame carrying its own SPS and PPS: nothing inserted.
                sample(
                    0,
                    T0 + 2 * FRAME_NS,
                    true,
                    length_prefixed(size, &[SPS, PPS, IDR]),
                ),
                // Only its own SPS: the PPS is inserted.
                sample(
                    0,
                    T0 + 3 * FRAME_NS,
                    true,
                    length_prefixed(size, &[SPS, IDR]),
                ),
            ];
            let ts = ts_segment(&tracks, &samples, &mut TsContinuity::new()).unwrap();
            let payloads: Vec<Vec<u8>> = pes_of(&ts, VIDEO_PID)
                .iter()
                .map(|p| parse_pes(p).3)
                .collect();
            assert_eq!(
                payloads[0],
                annex_b(&[&H264_AUD, SPS, PPS, sei, IDR]),
                "{size}"
            );
            assert_eq!(payloads[1], annex_b(&[&H264_AUD, SLICE, SLICE]));
            assert_eq!(payloads[2], annex_b(&[&H264_AUD, SPS, PPS, IDR]));
            assert_eq!(payloads[3], annex_b(&[&H264_AUD, PPS, SPS, IDR]));
        }
        // lengthSizeMinusOne 2 is not allowed.
        let tracks = [video_track(Codec::H264, avcc(2, &[SPS], &[PPS]))];
        assert!(matches!(
            ts_segment(&tracks, &[], &mut TsContinuity::new()),
            Err(TsError::BadCodecPrivate { .. })
        ));
    }

    #[test]
    fn h265_to_annex_b_with_vps_sps_pps() {
        let vps: &[u8] = &[0x40, 0x01, 0x0C, 0x01];
        let sps: &[u8] = &[0x42, 0x01, 0x01, 0x01];
        let pps: &[u8] = &[0x44, 0x01, 0xC1, 0x73];
        let sei: &[u8] = &[0x4E, 0x01, 0x05, 0x01];
        let idr: &[u8] = &[0x28, 0x01, 0xAF, 0x1D]; // IDR_N_LP
        let trail: &[u8] = &[0x02, 0x01, 0xD0, 0x2F];
        let mut hvcc = vec![1];
        hvcc.extend_from_slice(&[0; 20]);
        hvcc.push(0xF0 | 3); // lengthSizeMinusOne 3
        hvcc.push(4); // arrays, in an unusual order
        for (t, nal) in [(34u8, pps), (39, sei), (33, sps), (32, vps)] {
            hvcc.push(0x80 | t);
            hvcc.extend_from_slice(&1u16.to_be_bytes());
            hvcc.extend_from_slice(&(nal.len() as u16).to_be_bytes());
            hvcc.extend_from_slice(nal);
        }
        let tracks = [video_track(Codec::H265, hvcc.clone())];
        let samples = [
            sample(0, T0, true, length_prefixed(4, &[idr])),
            sample(0, T0 + FRAME_NS, false, length_prefixed(4, &[trail])),
            sample(
                0,
                T0 + 2 * FRAME_NS,
                true,
                length_prefixed(4, &[vps, sps, pps, idr]),
            ),
        ];
        let ts = ts_segment(&tracks, &samples, &mut TsContinuity::new()).unwrap();
        let payloads: Vec<Vec<u8>> = pes_of(&ts, VIDEO_PID)
            .iter()
            .map(|p| parse_pes(p).3)
            .collect();
        assert_eq!(payloads[0], annex_b(&[&H265_AUD, vps, sps, pps, idr]));
        assert_eq!(payloads[1], annex_b(&[&H265_AUD, trail]));
        assert_eq!(payloads[2], annex_b(&[&H265_AUD, vps, sps, pps, idr]));
        assert_eq!(nal_type(Codec::H265, &H265_AUD), H265_NAL_AUD);
        // Truncated record.
        let tracks = [video_track(Codec::H265, hvcc[..hvcc.len() - 1].to_vec())];
        assert!(matches!(
            ts_segment(&tracks, &[], &mut TsContinuity::new()),
            Err(TsError::BadCodecPrivate { .. })
        ));
    }

    #[test]
    fn last_packet_is_stuffed_through_the_adaptation_field() {
        // PES sizes around the packet boundary, including 1 byte of stuffing.
        let tracks = [aac_track(ASC_LC_48K_STEREO)];
        for len in 140..200 {
            let ts = ts_segment(
                &tracks,
                &[sample(0, T0, true, vec![0xAB; len])],
                &mut TsContinuity::new(),
            )
            .unwrap();
            let pes = pes_of(&ts, AUDIO_PID);
            assert_eq!(pes.len(), 1);
            let (_, _, _, payload) = parse_pes(&pes[0]);
            assert_eq!(payload.len(), len + ADTS_HEADER_LEN);
            assert!(payload[ADTS_HEADER_LEN..].iter().all(|&b| b == 0xAB));
            for p in packets(&ts).iter().filter(|p| p.pid == AUDIO_PID) {
                if let Some(af) = &p.af {
                    // Flags, then the PCR if flagged, then stuffing.
                    let fields = if p.pcr().is_some() { 7 } else { 1 };
                    assert!(af.iter().skip(fields).all(|&b| b == 0xFF), "stuffing");
                }
            }
        }
    }

    #[test]
    fn malformed_input_is_an_error() {
        let h264 = video_track(Codec::H264, avcc(3, &[SPS], &[PPS]));
        let run = |tracks: &[MediaTrack], samples: &[Sample]| {
            let mut c = TsContinuity::new();
            let before = c.clone();
            let r = ts_segment(tracks, samples, &mut c);
            if r.is_err() {
                assert_eq!(c, before, "counters untouched on error");
            }
            r
        };
        let bad_nal = |data: &[u8]| {
            run(
                std::slice::from_ref(&h264),
                &[sample(0, T0, true, data.to_vec())],
            )
        };
        assert!(matches!(
            bad_nal(&[0, 0, 0]),
            Err(TsError::BadNalUnits { .. })
        ));
        assert!(matches!(
            bad_nal(&[0, 0, 0, 9, 0x65]),
            Err(TsError::BadNalUnits { .. })
        ));
        assert!(matches!(bad_nal(&[]), Err(TsError::BadNalUnits { .. })));
        assert!(matches!(
            bad_nal(&[0xFF; 4]),
            Err(TsError::BadNalUnits { .. })
        ));
        // Annex B handed in as if length-prefixed.
        assert!(bad_nal(&annex_b(&[SPS, PPS, IDR])).is_err());
        assert_eq!(run(&[], &[]), Err(TsError::NoTracks));
        assert!(matches!(
            run(
                std::slice::from_ref(&h264),
                &[sample(3, T0, true, vec![0, 0, 0, 1, 0x65])]
            ),
            Err(TsError::UnknownTrack { track: 3, .. })
        ));
        assert!(matches!(
            run(
                &[aac_track(ASC_LC_48K_STEREO)],
                &[sample(0, T0, true, vec![0; 9000])]
            ),
            Err(TsError::AacFrameTooLarge { len: 9000, .. })
        ));
        for bad in [
            &[][..],
            &[1],
            &[0, 1, 2, 3, 0xFF, 0xE1, 0, 0],
            &[1, 0x42, 0, 0x1E, 0xFF, 0xE1, 0, 10, 0x67],
        ] {
            if bad.is_empty() {
                continue; // an empty record is allowed (parameter sets in-band)
            }
            assert!(matches!(
                run(&[video_track(Codec::H264, bad.to_vec())], &[]),
                Err(TsError::BadCodecPrivate { .. })
            ));
        }
        // Tracks that are neither muxed nor errors: their samples are skipped.
        let mut other = h264.clone();
        other.number = 3;
        let ts = run(
            &[h264.clone(), other],
            &[sample(1, T0, true, vec![1, 2, 3])],
        )
        .unwrap();
        assert_eq!(ts.len(), 2 * PACKET_LEN);
    }

    /// xorshift64*: deterministic pseudo-random input.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn bytes(&mut self, max: u64) -> Bytes {
            let len = self.next() % max;
            (0..len)
                .map(|_| self.next() as u8)
                .collect::<Vec<u8>>()
                .into()
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..3000 {
            let mut private = rng.bytes(64);
            // Sometimes a plausible header so parsing gets further.
            if round % 3 == 0 && !private.is_empty() {
                let mut v = private.to_vec();
                v[0] = 1;
                private = v.into();
            }
            let codec = [Codec::H264, Codec::H265, Codec::Aac][round % 3];
            let tracks = [
                MediaTrack {
                    number: 1,
                    codec,
                    codec_private: private,
                    width: 0,
                    height: 0,
                    sample_rate: (rng.next() % 200_000) as u32,
                    channels: (rng.next() % 10) as u16,
                },
                aac_track(ASC_LC_48K_STEREO),
            ];
            let samples: Vec<Sample> = (0..(rng.next() % 6))
                .map(|_| Sample {
                    track: (rng.next() % 3) as usize,
                    dts_ns: rng.next() as i64,
                    pts_ns: rng.next() as i64,
                    duration_ns: rng.next(),
                    keyframe: rng.next().is_multiple_of(2),
                    data: rng.bytes(600),
                })
                .collect();
            if let Ok(ts) = ts_segment(&tracks, &samples, &mut TsContinuity::new()) {
                packets(&ts);
            }
        }
    }
}
