//! A streaming (push) Matroska reader for PutMedia bodies and GetMedia output.
//!
//! The reader is fed the body in whatever pieces the network delivers (one byte at a
//! time works) and reports what it recognised as [`MkvEvent`]s: the stream header
//! (Info and Tracks), the start of each fragment (its Cluster Timecode, as soon as it
//! is read, so the server can send BUFFERING), every frame, the end of each fragment
//! with the raw Cluster bytes to store, and Tags (with the producer's
//! `AWS_KINESISVIDEO_END_OF_FRAGMENT` marker recognised).
//!
//! What it understands (RFC 9559 Matroska over RFC 8794 EBML, as the Kinesis Video
//! producer SDK writes it, see `PROTOCOLS.md`):
//!
//! ```text
//! EBML header            DocType "matroska" or "webm"
//! Segment                known or unknown size; exactly one per PutMedia body
//! ├─ SeekHead, Void, Cues, Chapters, Attachments, CRC-32, unknown   skipped
//! ├─ Info                TimecodeScale (default 1 000 000 ns)
//! ├─ Tracks/TrackEntry   number, UID, type, CodecID, CodecPrivate, video/audio
//! ├─ Tags/Tag/SimpleTag  TagName/TagString pairs (nested SimpleTags flattened)
//! └─ Cluster             known or unknown size; one Cluster = one fragment
//!    ├─ Timecode         must come before any block
//!    ├─ SimpleBlock      track number, relative timecode, key-frame flag
//!    ├─ BlockGroup/Block key frame = no ReferenceBlock; BlockDuration
//!    └─ anything else    kept in the raw bytes, not interpreted
//! ```
//!
//! A fragment's duration ([`Fragment::duration_ns`], what ListFragments reports as
//! `FragmentLengthInMilliseconds`) runs from the first frame of its reference track
//! (the first video track, else the first track) to the end of that track's last
//! frame, so that consecutive fragments tile the timeline. The last frame lasts its
//! BlockDuration, else the track's DefaultDuration, else the track's mean frame
//! spacing in the fragment, else what the caller knows from earlier fragments of the
//! stream (a lone frame without DefaultDuration), else nothing. Frames evenly spaced
//! at the DefaultDuration last exactly that each, whatever the rounding of their
//! timecodes. Audio frames that overhang the video's cut by less than one audio frame
//! do not lengthen a fragment. The duration limit (4002) applies to the span of all
//! frame timecodes, last frame excluded, as in Kinesis Video.
//!
//! An unknown-size Cluster ends where an element that cannot be its child starts (the
//! next Cluster, Tags, any other Segment child, an EBML header), so the producer's
//! end-of-stream Tags close the last fragment at once: the producer waits for that
//! fragment's PERSISTED ack before it closes the body.
//!
//! Fragment rules of Kinesis Video are checked and reported with the PutMedia error ids
//! ([`MkvError::error_id`]): size (4001), duration (4002), cluster timecodes strictly
//! increasing (4004), invalid MKV (4006), track numbers (4010), frames for every track
//! and a key frame first (4011), at most three tracks (4012).
//!
//! Memory is bounded by [`Limits`]: skipped elements are never buffered; header
//! elements (EBML header, Info, Tracks, Tags) are buffered whole up to
//! `max_header_bytes`; a Cluster is buffered until it ends, up to `max_fragment_bytes`
//! (its blocks up to `max_block_bytes` each). Buffers grow with the bytes that actually
//! arrive, never with the sizes an element claims.
//!
//! This module never does I/O, never blocks, never panics on any input (it is fuzzed
//! by `fuzz/fuzz_targets/mkv_reader.rs`) and never recurses on input-controlled depth.

use super::ebml::{self, ElementHeader, ElementSize, MAX_HEADER_LEN, ids as ebml_ids};

/// Matroska element IDs used here (RFC 9559 section 5.1).
pub mod ids {
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const INFO: u32 = 0x1549_A966;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const ATTACHMENTS: u32 = 0x1941_A469;
    pub const CHAPTERS: u32 = 0x1043_A770;
    pub const TAGS: u32 = 0x1254_C367;
    pub const CLUSTER: u32 = 0x1F43_B675;

    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;
    pub const DURATION: u32 = 0x4489;
    pub const TITLE: u32 = 0x7BA9;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const SEGMENT_UID: u32 = 0x73A4;

    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const NAME: u32 = 0x536E;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const DEFAULT_DURATION: u32 = 0x23_E383;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const BIT_DEPTH: u32 = 0x6264;

    pub const TAG: u32 = 0x7373;
    pub const TARGETS: u32 = 0x63C0;
    pub const SIMPLE_TAG: u32 = 0x67C8;
    pub const TAG_NAME: u32 = 0x45A3;
    pub const TAG_STRING: u32 = 0x4487;

    pub const TIMECODE: u32 = 0xE7;
    pub const POSITION: u32 = 0xA7;
    pub const PREV_SIZE: u32 = 0xAB;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const BLOCK_GROUP: u32 = 0xA0;
    pub const BLOCK: u32 = 0xA1;
    pub const BLOCK_DURATION: u32 = 0x9B;
    pub const REFERENCE_BLOCK: u32 = 0xFB;
}

/// Tag names of the Kinesis Video conventions (`PROTOCOLS.md`).
pub mod kvs_tags {
    /// Every tag whose name starts with this belongs to Kinesis Video, not the producer.
    pub const PREFIX: &str = "AWS_KINESISVIDEO";
    /// Sent by the producer at the end of a stream: close the current fragment now.
    pub const END_OF_FRAGMENT: &str = "AWS_KINESISVIDEO_END_OF_FRAGMENT";
    pub const FRAGMENT_NUMBER: &str = "AWS_KINESISVIDEO_FRAGMENT_NUMBER";
    pub const SERVER_TIMESTAMP: &str = "AWS_KINESISVIDEO_SERVER_TIMESTAMP";
    pub const PRODUCER_TIMESTAMP: &str = "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP";
    pub const MILLIS_BEHIND_NOW: &str = "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW";
    pub const CONTINUATION_TOKEN: &str = "AWS_KINESISVIDEO_CONTINUATION_TOKEN";
    pub const ERROR_CODE: &str = "AWS_KINESISVIDEO_ERROR_CODE";
    pub const ERROR_ID: &str = "AWS_KINESISVIDEO_ERROR_ID";

    /// Whether a tag is Kinesis Video's own (as opposed to the producer's).
    pub fn is_kvs_tag(name: &str) -> bool {
        name.starts_with(PREFIX)
    }
}

/// `TrackType` values (RFC 9559 section 5.1.4.1.3).
pub const TRACK_TYPE_VIDEO: u64 = 1;
pub const TRACK_TYPE_AUDIO: u64 = 2;

/// Default `TimecodeScale`: timecodes count milliseconds.
pub const DEFAULT_TIMECODE_SCALE: u64 = 1_000_000;

/// Length of the header [`Fragment::raw_cluster_bytes`] starts with: the Cluster ID and
/// its size in the fixed 8-byte form (`1F 43 B6 75 01 xx xx xx xx xx xx xx`).
pub const CLUSTER_HEADER_LEN: usize = 12;

/// Deepest nesting of SimpleTags we follow (they may nest; producers do not).
const MAX_TAG_NESTING: usize = 8;

/// Bounds on what one reader accepts and buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest element inside a Cluster (a SimpleBlock or BlockGroup: one frame).
    pub max_block_bytes: usize,
    /// Largest header element buffered whole: EBML header, Info, Tracks, Tags.
    pub max_header_bytes: usize,
    /// Most TrackEntries in Tracks (Kinesis Video: 3, error 4012).
    pub max_tracks: usize,
    /// Largest fragment: the Cluster with its 12-byte header (Kinesis Video: 50 MB,
    /// error 4001).
    pub max_fragment_bytes: usize,
    /// Longest fragment, from its earliest to its latest frame timecode, whatever the
    /// track (Kinesis Video: 10 s, error 4002).
    pub max_fragment_duration_ns: u64,
    /// Most SimpleTags in one Tags element (a memory guard; error 4009).
    pub max_tags: usize,
    /// Whether a fragment's first frame must be a key frame (error 4011).
    pub require_key_frame_first: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_block_bytes: 16 << 20,
            max_header_bytes: 1 << 20,
            max_tracks: 3,
            max_fragment_bytes: 50 << 20,
            max_fragment_duration_ns: 10_000_000_000,
            max_tags: 128,
            require_key_frame_first: true,
        }
    }
}

impl Limits {
    /// An upper bound of [`MkvReader::buffered_bytes`] under these limits: one Cluster,
    /// one header element being collected, and the stored EBML header, Info, Tracks and
    /// parsed tracks (each at most one header element).
    pub fn memory_bound(&self) -> usize {
        self.max_header_bytes
            .saturating_add(MAX_HEADER_LEN)
            .saturating_mul(5)
            .saturating_add(self.max_fragment_bytes)
            .saturating_add(4096)
    }
}

/// One TrackEntry.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub number: u64,
    pub uid: u64,
    /// 1 video, 2 audio, 17 subtitle, ... (0 if absent).
    pub track_type: u64,
    /// `V_MPEG4/ISO/AVC`, `V_MPEGH/ISO/HEVC`, `A_AAC`, ...
    pub codec_id: String,
    /// For H.264 the AVCDecoderConfigurationRecord (SPS/PPS).
    pub codec_private: Vec<u8>,
    pub name: Option<String>,
    pub default_duration_ns: Option<u64>,
    pub video: Option<VideoSettings>,
    pub audio: Option<AudioSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoSettings {
    pub pixel_width: u64,
    pub pixel_height: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioSettings {
    pub sampling_frequency: f64,
    pub channels: u64,
    pub bit_depth: Option<u64>,
}

/// What a document declares before its first Cluster. GetMedia re-emits
/// `info_and_tracks_bytes` (and may re-emit `ebml_header_bytes`) with every fragment.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamHeader {
    /// `matroska` or `webm`.
    pub doc_type: String,
    /// Nanoseconds per timecode unit.
    pub timecode_scale: u64,
    pub tracks: Vec<Track>,
    /// The EBML header element exactly as received.
    pub ebml_header_bytes: Vec<u8>,
    /// The Info element (if any) and then the Tracks element, exactly as received.
    pub info_and_tracks_bytes: Vec<u8>,
}

/// One frame (a SimpleBlock, or the Block of a BlockGroup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The block's track number (a TrackNumber of the header).
    pub track: u64,
    /// Absolute timecode: Cluster Timecode + the block's relative timecode, in
    /// TimecodeScale units.
    pub timecode: u64,
    pub keyframe: bool,
    /// Whether the block uses lacing: then the data holds the lace header and several
    /// frames (the Kinesis Video producer never laces).
    pub laced: bool,
    /// The BlockDuration of a BlockGroup, in TimecodeScale units (a SimpleBlock has
    /// none).
    pub duration: Option<u64>,
    /// Where the frame data lies in the fragment's [`Fragment::raw_cluster_bytes`].
    pub data_offset: usize,
    pub data_len: usize,
}

/// A complete fragment (one Cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// The Cluster Timecode as sent (TimecodeScale units): what the acks echo.
    pub cluster_timecode: u64,
    /// Absolute timecode of the first frame in stream order.
    pub first_timecode: u64,
    /// Absolute timecode of the last frame in stream order.
    pub last_timecode: u64,
    /// Nanoseconds per timecode unit of the document the fragment belongs to.
    pub timecode_scale: u64,
    pub frame_count: u64,
    pub has_keyframe_first: bool,
    /// The frame timing of each track, in the order of the header's Tracks.
    pub tracks: Vec<TrackTiming>,
    /// The Cluster with a known size in the fixed 8-byte form (whatever form it
    /// arrived in), followed by its children exactly as received.
    pub raw_cluster_bytes: Vec<u8>,
}

/// When one track's frames of a fragment lie (timecodes in TimecodeScale units).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackTiming {
    /// The TrackNumber.
    pub track: u64,
    /// Whether the track is a video track (TrackType 1).
    pub video: bool,
    /// The track's DefaultDuration (nanoseconds), if it declares one.
    pub default_duration_ns: Option<u64>,
    /// Frames of this track in the fragment.
    pub frames: u64,
    /// Earliest and latest frame timecode (both 0 without frames).
    pub min_timecode: u64,
    pub max_timecode: u64,
    /// The BlockDuration of the latest frame, if it has one.
    pub last_block_duration: Option<u64>,
}

impl TrackTiming {
    fn new(track: &Track) -> Self {
        Self {
            track: track.number,
            video: track.track_type == TRACK_TYPE_VIDEO,
            default_duration_ns: track.default_duration_ns,
            frames: 0,
            min_timecode: 0,
            max_timecode: 0,
            last_block_duration: None,
        }
    }

    fn add_frame(&mut self, timecode: u64, block_duration: Option<u64>) {
        if self.frames == 0 || timecode < self.min_timecode {
            self.min_timecode = timecode;
        }
        if self.frames == 0 || timecode >= self.max_timecode {
            self.max_timecode = timecode;
            self.last_block_duration = block_duration;
        }
        self.frames += 1;
    }

    /// How long the latest frame lasts, in nanoseconds, as far as this fragment tells:
    /// its BlockDuration, else the track's DefaultDuration, else the mean spacing of
    /// the track's frames. `None` for a lone frame without either duration.
    pub fn last_frame_duration_ns(&self, timecode_scale: u64) -> Option<u64> {
        let block = self
            .last_block_duration
            .map(|d| d.saturating_mul(timecode_scale));
        let spacing = || {
            (self.frames > 1).then(|| {
                (self.max_timecode - self.min_timecode).saturating_mul(timecode_scale)
                    / (self.frames - 1)
            })
        };
        block
            .filter(|&d| d > 0)
            .or(self.default_duration_ns.filter(|&d| d > 0))
            .or_else(|| spacing().filter(|&d| d > 0))
    }

    /// From the track's first frame to the end of its last, in nanoseconds: the span
    /// of its timecodes plus [`TrackTiming::last_frame_duration_ns`] (else `known_ns`,
    /// else nothing). When the last frame lasts the DefaultDuration and the frames are
    /// evenly spaced at it (their span differs from it by no more than the rounding of
    /// timecodes, one TimecodeScale unit), the frames last exactly `frames x
    /// DefaultDuration`: timecodes rounded to the TimecodeScale (producers write
    /// milliseconds) would otherwise make each fragment up to one unit short or long,
    /// which adds up over a stream.
    pub fn duration_ns(&self, timecode_scale: u64, known_ns: Option<u64>) -> u64 {
        if self.frames == 0 {
            return 0;
        }
        let span = (self.max_timecode - self.min_timecode).saturating_mul(timecode_scale);
        let block = self.last_block_duration.filter(|&d| d > 0);
        if let (None, Some(default)) = (block, self.default_duration_ns.filter(|&d| d > 0)) {
            let even = (self.frames - 1).saturating_mul(default);
            // One unit of rounding, and a nanosecond per frame of DefaultDuration's own.
            if span.abs_diff(even) <= timecode_scale.saturating_add(self.frames) {
                return even.saturating_add(default);
            }
        }
        let last = self
            .last_frame_duration_ns(timecode_scale)
            .or(known_ns)
            .unwrap_or(0);
        span.saturating_add(last)
    }
}

impl Fragment {
    /// The track whose timeline the fragment's duration follows: the first video track,
    /// else the first track (an index into [`Fragment::tracks`]).
    pub fn reference_track(&self) -> usize {
        self.tracks.iter().position(|t| t.video).unwrap_or(0)
    }

    /// Earliest to latest frame timecode over all tracks (TimecodeScale units): what
    /// the duration limit (4002) measures.
    pub fn span(&self) -> u64 {
        let with_frames = || self.tracks.iter().filter(|t| t.frames > 0);
        let max = with_frames().map(|t| t.max_timecode).max().unwrap_or(0);
        let min = with_frames().map(|t| t.min_timecode).min().unwrap_or(0);
        max.saturating_sub(min)
    }

    /// The fragment's duration in nanoseconds, its last frame included: from the first
    /// frame of the reference track ([`Fragment::reference_track`]) to the end of its
    /// last frame ([`TrackTiming::duration_ns`]). `known_ns` holds, per track (like
    /// [`Fragment::tracks`]), how long a frame lasted in earlier fragments of the
    /// stream: it is used when this fragment does not tell (a lone frame without
    /// DefaultDuration); without it such a frame adds nothing.
    pub fn duration_ns(&self, known_ns: &[Option<u64>]) -> u64 {
        let reference = self.reference_track();
        match self.tracks.get(reference).filter(|t| t.frames > 0) {
            Some(timing) => timing.duration_ns(
                self.timecode_scale,
                known_ns.get(reference).copied().flatten(),
            ),
            None => self.span().saturating_mul(self.timecode_scale),
        }
    }
}

/// What the reader recognised, in stream order.
#[derive(Debug, Clone, PartialEq)]
pub enum MkvEvent {
    /// Emitted when the first Cluster of a document starts.
    Header(StreamHeader),
    /// A Cluster's Timecode was read: the first bytes of a fragment arrived.
    FragmentStart { cluster_timecode: u64 },
    /// A block was read completely (its data is in the fragment's raw bytes).
    Frame(Frame),
    /// The Cluster ended (its size was reached, or an element that cannot be its child
    /// started, or the body ended).
    FragmentEnd(Fragment),
    /// A Tags element: (TagName, TagString) of every SimpleTag, nested ones flattened,
    /// an absent TagString read as "". SimpleTags without a TagName are dropped.
    Tags(Vec<(String, String)>),
    /// The previous Tags held `AWS_KINESISVIDEO_END_OF_FRAGMENT`. The fragment it
    /// refers to has already ended (its FragmentEnd came before the Tags).
    EndOfFragment,
}

/// Why a body was refused. Offsets count bytes from the start of the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MkvError {
    #[error("invalid mkv at byte {offset}: {reason}")]
    Invalid { offset: u64, reason: String },
    #[error("mkv body ended inside an element at byte {offset}")]
    Truncated { offset: u64 },
    #[error("element {id:#x} at byte {offset} has {size} bytes, more than {limit}")]
    ElementTooLarge {
        offset: u64,
        id: u32,
        size: u64,
        limit: usize,
    },
    #[error("block at byte {offset} has {size} bytes, more than {limit}")]
    BlockTooLarge {
        offset: u64,
        size: u64,
        limit: usize,
    },
    #[error("fragment starting at byte {offset} exceeds {limit} bytes")]
    FragmentTooLarge { offset: u64, limit: usize },
    #[error(
        "fragment with timecode {cluster_timecode} spans {duration_ns} ns, more than {limit_ns} ns"
    )]
    FragmentTooLong {
        cluster_timecode: u64,
        duration_ns: u64,
        limit_ns: u64,
    },
    #[error("cluster timecode {timecode} is not greater than the previous one, {previous}")]
    TimecodeNotIncreasing { timecode: u64, previous: u64 },
    #[error("{count} tracks, at most {limit} allowed")]
    TooManyTracks { count: usize, limit: usize },
    #[error("block at byte {offset} is for track {track}, which is not in Tracks")]
    TrackNumberMismatch { offset: u64, track: u64 },
    #[error("fragment with timecode {cluster_timecode} has no frames for track {track}")]
    FramesMissingForTrack { cluster_timecode: u64, track: u64 },
    #[error("fragment with timecode {cluster_timecode} does not start with a key frame")]
    FirstFrameNotKeyFrame { cluster_timecode: u64 },
    #[error("tags element at byte {offset} has more than {limit} tags")]
    TooManyTags { offset: u64, limit: usize },
}

impl MkvError {
    /// The PutMedia `ErrorId` for this error (`PROTOCOLS.md`, PutMedia).
    pub fn error_id(&self) -> u32 {
        match self {
            Self::Invalid { .. } | Self::Truncated { .. } | Self::ElementTooLarge { .. } => 4006,
            Self::BlockTooLarge { .. } | Self::FragmentTooLarge { .. } => 4001,
            Self::FragmentTooLong { .. } => 4002,
            Self::TimecodeNotIncreasing { .. } => 4004,
            Self::TooManyTags { .. } => 4009,
            Self::TrackNumberMismatch { .. } => 4010,
            Self::FramesMissingForTrack { .. } | Self::FirstFrameNotKeyFrame { .. } => 4011,
            Self::TooManyTracks { .. } => 4012,
        }
    }
}

fn invalid(offset: u64, reason: impl Into<String>) -> MkvError {
    MkvError::Invalid {
        offset,
        reason: reason.into(),
    }
}

/// Where in the element tree the next element header is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// Before a document: expecting an EBML header.
    Top,
    /// After the EBML header: expecting the Segment.
    AfterEbmlHeader,
    /// Inside the Segment (inside a Cluster when `MkvReader::cluster` is set).
    Segment,
    /// The (only) Segment ended; nothing may follow.
    SegmentEnded,
}

/// What the next input bytes are.
#[derive(Debug, Clone, Copy)]
enum State {
    /// The next element header (collected in `MkvReader::header`).
    Header,
    /// The payload of an element we keep, `remaining` bytes still to come.
    Collect { id: u32, remaining: u64, dest: Dest },
    /// The payload of an element we ignore.
    Skip { remaining: u64 },
}

#[derive(Debug, Clone, Copy)]
enum Dest {
    /// A header element, collected whole in `MkvReader::element`.
    Element,
    /// A Cluster child, collected into the Cluster's bytes from `payload_start`.
    Cluster { payload_start: usize },
}

/// Per-document state (reset by each EBML header when reading GetMedia output).
#[derive(Debug, Default)]
struct Document {
    doc_type: String,
    ebml_header_bytes: Vec<u8>,
    info_bytes: Vec<u8>,
    tracks_bytes: Vec<u8>,
    timecode_scale: u64,
    tracks: Vec<Track>,
    header_emitted: bool,
    last_cluster_timecode: Option<u64>,
}

/// The Cluster being read.
#[derive(Debug)]
struct ClusterState {
    /// Where its header started (for errors).
    start: u64,
    /// Absolute end if its size is known.
    end: Option<u64>,
    /// [`CLUSTER_HEADER_LEN`] placeholder bytes, then the children as received.
    bytes: Vec<u8>,
    timecode: Option<u64>,
    first_timecode: u64,
    last_timecode: u64,
    /// Earliest and latest frame timecode of any track (for the duration limit).
    min_timecode: u64,
    max_timecode: u64,
    frame_count: u64,
    first_frame_key: bool,
    /// Frame timing per track, indexed like `Document::tracks`.
    tracks: Vec<TrackTiming>,
}

/// The push reader. See the module documentation.
#[derive(Debug)]
pub struct MkvReader {
    limits: Limits,
    /// GetMedia output is a sequence of complete documents; a PutMedia body is one.
    document_sequence: bool,
    /// Bytes consumed so far.
    pos: u64,
    level: Level,
    state: State,
    /// A partial element header (at most 12 bytes: a 4-byte ID, an 8-byte size).
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    /// The header element being collected whole, header bytes included.
    element: Vec<u8>,
    element_start: u64,
    element_header_len: usize,
    /// Absolute end of the Segment if its size is known.
    segment_end: Option<u64>,
    doc: Document,
    cluster: Option<ClusterState>,
    /// Once an error is returned the reader is poisoned and keeps returning it.
    failed: Option<MkvError>,
}

impl MkvReader {
    /// A reader for one PutMedia body: one EBML header and one Segment.
    pub fn new(limits: Limits) -> Self {
        Self::with_mode(limits, false)
    }

    /// A reader for GetMedia output: complete documents (EBML header, Segment) one
    /// after another. Per-document rules (timecode order) restart with each document.
    pub fn for_document_sequence(limits: Limits) -> Self {
        Self::with_mode(limits, true)
    }

    fn with_mode(limits: Limits, document_sequence: bool) -> Self {
        Self {
            limits,
            document_sequence,
            pos: 0,
            level: Level::Top,
            state: State::Header,
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            element: Vec::new(),
            element_start: 0,
            element_header_len: 0,
            segment_end: None,
            doc: Document::default(),
            cluster: None,
            failed: None,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The tracks of the current document (empty before its Tracks element).
    pub fn tracks(&self) -> &[Track] {
        &self.doc.tracks
    }

    /// Nanoseconds per timecode unit of the current document.
    pub fn timecode_scale(&self) -> u64 {
        if self.doc.timecode_scale == 0 {
            DEFAULT_TIMECODE_SCALE
        } else {
            self.doc.timecode_scale
        }
    }

    /// Body bytes the reader is holding (the fragment being received and any element
    /// being collected), without allocator slack: what a connection's share of a memory
    /// budget counts. [`MkvReader::buffered_bytes`] is the heap actually used.
    pub fn held_bytes(&self) -> usize {
        self.element.len() + self.cluster.as_ref().map_or(0, |c| c.bytes.len())
    }

    /// Heap bytes the reader holds right now; never more than
    /// [`Limits::memory_bound`].
    pub fn buffered_bytes(&self) -> usize {
        let tracks: usize = self
            .doc
            .tracks
            .iter()
            .map(|t| {
                t.codec_private.capacity()
                    + t.codec_id.capacity()
                    + t.name.as_ref().map_or(0, String::capacity)
            })
            .sum();
        self.element.capacity()
            + self.cluster.as_ref().map_or(0, |c| c.bytes.capacity())
            + self.doc.ebml_header_bytes.capacity()
            + self.doc.info_bytes.capacity()
            + self.doc.tracks_bytes.capacity()
            + self.doc.doc_type.capacity()
            + tracks
    }

    /// Reads the next piece of the body. Events recognised in it are appended to
    /// `events`; on error, `events` still holds those completed before the error (a
    /// fragment that ended earlier in the same piece, say), and the reader returns the
    /// same error from then on.
    pub fn feed(&mut self, bytes: &[u8], events: &mut Vec<MkvEvent>) -> Result<(), MkvError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.run(bytes, events);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
        }
        result
    }

    /// The body ended. An unknown-size Cluster still open ends here (FragmentEnd); a
    /// body that ends inside an element, or inside a known-size Segment or Cluster, is
    /// truncated. An empty body is not an error.
    pub fn finish(mut self, events: &mut Vec<MkvEvent>) -> Result<(), MkvError> {
        if let Some(err) = self.failed.take() {
            return Err(err);
        }
        if self.header_len > 0 || !matches!(self.state, State::Header) {
            return Err(MkvError::Truncated { offset: self.pos });
        }
        match self.level {
            Level::Top | Level::SegmentEnded => Ok(()),
            Level::AfterEbmlHeader => Err(MkvError::Truncated { offset: self.pos }),
            Level::Segment => {
                if let Some(cluster) = &self.cluster {
                    if cluster.end.is_some() {
                        return Err(MkvError::Truncated { offset: self.pos });
                    }
                    self.close_cluster(events)?;
                }
                if self.segment_end.is_some() {
                    return Err(MkvError::Truncated { offset: self.pos });
                }
                Ok(())
            }
        }
    }

    /// Feeds a whole body and finishes it.
    pub fn read_to_end(mut self, bytes: &[u8]) -> Result<Vec<MkvEvent>, MkvError> {
        let mut events = Vec::new();
        self.feed(bytes, &mut events)?;
        self.finish(&mut events)?;
        Ok(events)
    }

    fn run(&mut self, mut input: &[u8], events: &mut Vec<MkvEvent>) -> Result<(), MkvError> {
        while let Some((&byte, rest)) = input.split_first() {
            match self.state {
                State::Header => {
                    // read_header decides within MAX_HEADER_LEN bytes, so this never
                    // overflows: it returns a header or an error first.
                    debug_assert!(self.header_len < MAX_HEADER_LEN);
                    self.header[self.header_len] = byte;
                    self.header_len += 1;
                    self.pos += 1;
                    input = rest;
                    match ebml::read_header(&self.header[..self.header_len]) {
                        Ok(None) => {}
                        Ok(Some(header)) => self.on_header(header, events)?,
                        Err(err) => {
                            return Err(invalid(
                                self.pos - self.header_len as u64,
                                err.to_string(),
                            ));
                        }
                    }
                }
                State::Collect { remaining, .. } | State::Skip { remaining } => {
                    let n = remaining.min(input.len() as u64) as usize;
                    let (now, rest) = input.split_at(n);
                    input = rest;
                    self.pos += n as u64;
                    self.take_payload(now);
                    if remaining == n as u64 {
                        self.finish_element(events)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends payload bytes to where the current element goes.
    fn take_payload(&mut self, bytes: &[u8]) {
        match &mut self.state {
            State::Collect {
                remaining, dest, ..
            } => {
                *remaining -= bytes.len() as u64;
                match dest {
                    Dest::Element => append_bounded(
                        &mut self.element,
                        bytes,
                        self.limits.max_header_bytes.saturating_add(MAX_HEADER_LEN),
                    ),
                    Dest::Cluster { .. } => {
                        if let Some(cluster) = &mut self.cluster {
                            append_bounded(
                                &mut cluster.bytes,
                                bytes,
                                self.limits.max_fragment_bytes,
                            );
                        }
                    }
                }
            }
            State::Skip { remaining } => *remaining -= bytes.len() as u64,
            State::Header => debug_assert!(false, "payload bytes while reading a header"),
        }
    }

    fn on_header(
        &mut self,
        header: ElementHeader,
        events: &mut Vec<MkvEvent>,
    ) -> Result<(), MkvError> {
        let raw_header = self.header;
        let raw_header = &raw_header[..header.header_len];
        self.header_len = 0;
        let start = self.pos - header.header_len as u64;
        self.dispatch(header, start, raw_header, events)?;
        match self.state {
            // A container opened: it may be empty and end right here.
            State::Header => self.after_element(events),
            State::Collect { remaining: 0, .. } | State::Skip { remaining: 0 } => {
                self.finish_element(events)
            }
            _ => Ok(()),
        }
    }

    fn dispatch(
        &mut self,
        header: ElementHeader,
        start: u64,
        raw_header: &[u8],
        events: &mut Vec<MkvEvent>,
    ) -> Result<(), MkvError> {
        match self.level {
            Level::Top => match header.id {
                ebml_ids::EBML => self.begin_whole(header, start, raw_header),
                ebml_ids::VOID | ebml_ids::CRC32 => self.begin_skip(header, start),
                id => Err(invalid(
                    start,
                    format!("expected an EBML header, found element {id:#x}"),
                )),
            },
            Level::AfterEbmlHeader => match header.id {
                ids::SEGMENT => {
                    self.segment_end = match header.size {
                        ElementSize::Known(size) => Some(self.pos.saturating_add(size)),
                        ElementSize::Unknown => None,
                    };
                    self.level = Level::Segment;
                    Ok(())
                }
                ebml_ids::VOID | ebml_ids::CRC32 => self.begin_skip(header, start),
                id => Err(invalid(
                    start,
                    format!("expected a Segment, found element {id:#x}"),
                )),
            },
            Level::Segment if self.cluster.is_some() => {
                self.cluster_child(header, start, raw_header, events)
            }
            Level::Segment => self.segment_child(header, start, raw_header, events),
            Level::SegmentEnded => Err(invalid(start, "data after the end of the Segment")),
        }
    }

    fn segment_child(
        &mut self,
        header: ElementHeader,
        start: u64,
        raw_header: &[u8],
        events: &mut Vec<MkvEvent>,
    ) -> Result<(), MkvError> {
        match header.id {
            ebml_ids::EBML if self.document_sequence && self.segment_end.is_some() => {
                Err(invalid(start, "EBML header inside a known-size Segment"))
            }
            ebml_ids::EBML if self.document_sequence => {
                // The next document: the unknown-size Segment ends here.
                self.end_segment();
                self.dispatch(header, start, raw_header, events)
            }
            ebml_ids::EBML => Err(invalid(start, "a second EBML header in one body")),
            ids::SEGMENT => Err(invalid(start, "a second Segment in one body")),
            ids::INFO | ids::TRACKS if self.doc.header_emitted => {
                Err(invalid(start, "Info or Tracks after the first Cluster"))
            }
            ids::INFO | ids::TRACKS | ids::TAGS => self.begin_whole(header, start, raw_header),
            ids::CLUSTER => self.begin_cluster(header, start, events),
            _ => self.begin_skip(header, start),
        }
    }

    fn cluster_child(
        &mut self,
        header: ElementHeader,
        start: u64,
        raw_header: &[u8],
        events: &mut Vec<MkvEvent>,
    ) -> Result<(), MkvError> {
        let Some(cluster) = &self.cluster else {
            return Err(invalid(start, "no open Cluster"));
        };
        if ends_unknown_size_cluster(header.id) {
            if cluster.end.is_some() {
                return Err(invalid(
                    start,
                    format!("element {:#x} inside a Cluster", header.id),
                ));
            }
            self.close_cluster(events)?;
            return self.segment_child(header, start, raw_header, events);
        }
        let size = known_size(&header, start)?;
        self.check_fits(start, header.header_len as u64 + size)?;
        let limits = &self.limits;
        let Some(cluster) = &mut self.cluster else {
            return Err(invalid(start, "no open Cluster"));
        };
        match header.id {
            ids::TIMECODE if size > 8 => {
                return Err(invalid(start, "Timecode longer than 8 bytes"));
            }
            ids::SIMPLE_BLOCK | ids::BLOCK_GROUP if cluster.timecode.is_none() => {
                return Err(invalid(start, "block before the Cluster Timecode"));
            }
            _ => {}
        }
        if size > limits.max_block_bytes as u64 {
            return Err(MkvError::BlockTooLarge {
                offset: start,
                size,
                limit: limits.max_block_bytes,
            });
        }
        let total = cluster.bytes.len() as u64 + raw_header.len() as u64 + size;
        if total > limits.max_fragment_bytes as u64 {
            return Err(MkvError::FragmentTooLarge {
                offset: cluster.start,
                limit: limits.max_fragment_bytes,
            });
        }
        append_bounded(&mut cluster.bytes, raw_header, limits.max_fragment_bytes);
        self.state = State::Collect {
            id: header.id,
            remaining: size,
            dest: Dest::Cluster {
                payload_start: cluster.bytes.len(),
            },
        };
        Ok(())
    }

    /// Starts collecting a header element whole.
    fn begin_whole(
        &mut self,
        header: ElementHeader,
        start: u64,
        raw_header: &[u8],
    ) -> Result<(), MkvError> {
        let size = known_size(&header, start)?;
        let limit = self.limits.max_header_bytes;
        if size > limit as u64 {
            return Err(MkvError::ElementTooLarge {
                offset: start,
                id: header.id,
                size,
                limit,
            });
        }
        self.check_fits(start, header.header_len as u64 + size)?;
        self.element.clear();
        self.element.extend_from_slice(raw_header);
        self.element_start = start;
        self.element_header_len = raw_header.len();
        self.state = State::Collect {
            id: header.id,
            remaining: size,
            dest: Dest::Element,
        };
        Ok(())
    }

    fn begin_skip(&mut self, header: ElementHeader, start: u64) -> Result<(), MkvError> {
        let size = known_size(&header, start)?;
        self.check_fits(start, header.header_len as u64 + size)?;
        self.state = State::Skip { remaining: size };
        Ok(())
    }

    fn begin_cluster(
        &mut self,
        header: ElementHeader,
        start: u64,
        events: &mut Vec<MkvEvent>,
    ) -> Result<(), MkvError> {
        if !self.doc.header_emitted {
            self.emit_header(start, events)?;
        }
        let end = match header.size {
            ElementSize::Known(size) => {
                let limit = self.limits.max_fragment_bytes;
                if size > limit.saturating_sub(CLUSTER_HEADER_LEN) as u64 {
                    return Err(MkvError::FragmentTooLarge {
                        offset: start,
                        limit,
                    });
                }
                self.check_fits(start, header.header_len as u64 + size)?;
                Some(self.pos + size)
            }
            ElementSize::Unknown => None,
        };
        let mut bytes = Vec::with_capacity((64 << 10).min(self.limits.max_fragment_bytes));
        bytes.resize(CLUSTER_HEADER_LEN, 0);
        self.cluster = Some(ClusterState {
            start,
            end,
            bytes,
            timecode: None,
            first_timecode: 0,
            last_timecode: 0,
            min_timecode: 0,
            max_timecode: 0,
            frame_count: 0,
            first_frame_key: false,
            tracks: self.doc.tracks.iter().map(TrackTiming::new).collect(),
        });
        Ok(())
    }

    fn emit_header(&mut self, start: u64, events: &mut Vec<MkvEvent>) -> Result<(), MkvError> {
        if self.doc.tracks.is_empty() {
            return Err(invalid(start, "Cluster before Tracks"));
        }
        let mut info_and_tracks = std::mem::take(&mut self.doc.info_bytes);
        info_and_tracks.extend_from_slice(&self.doc.tracks_bytes);
        self.doc.tracks_bytes = Vec::new();
        events.push(MkvEvent::Header(StreamHeader {
            doc_type: self.doc.doc_type.clone(),
            timecode_scale: self.timecode_scale(),
            tracks: self.doc.tracks.clone(),
            ebml_header_bytes: std::mem::take(&mut self.doc.ebml_header_bytes),
            info_and_tracks_bytes: info_and_tracks,
        }));
        self.doc.header_emitted = true;
        Ok(())
    }

    /// The element at `start` of `len` bytes must end within its open parents.
    fn check_fits(&self, start: u64, len: u64) -> Result<(), MkvError> {
        let end = start.saturating_add(len);
        if let Some(cluster_end) = self.cluster.as_ref().and_then(|c| c.end)
            && end > cluster_end
        {
            return Err(invalid(start, "element overruns its Cluster"));
        }
        if self.level == Level::Segment
            && let Some(segment_end) = self.segment_end
            && end > segment_end
        {
            return Err(invalid(start, "element overruns its Segment"));
        }
        Ok(())
    }

    fn finish_element(&mut self, events: &mut Vec<MkvEvent>) -> Result<(), MkvError> {
        match std::mem::replace(&mut self.state, State::Header) {
            State::Collect {
                id,
                dest: Dest::Element,
                ..
            } => self.on_whole_element(id, events)?,
            State::Collect {
                id,
                dest: Dest::Cluster { payload_start },
                ..
            } => self.on_cluster_child(id, payload_start, events)?,
            State::Skip { .. } | State::Header => {}
        }
        self.after_element(events)
    }

    /// Closes whatever ends at the current position.
    fn after_element(&mut self, events: &mut Vec<MkvEvent>) -> Result<(), MkvError> {
        if let Some(cluster) = &self.cluster
            && (cluster.end == Some(self.pos) || self.segment_end == Some(self.pos))
        {
            self.close_cluster(events)?;
        }
        if self.level == Level::Segment && self.segment_end == Some(self.pos) {
            self.end_segment();
        }
        Ok(())
    }

    fn end_segment(&mut self) {
        self.segment_end = None;
        if self.document_sequence {
            self.doc = Document::default();
            self.level = Level::Top;
        } else {
            self.level = Level::SegmentEnded;
        }
    }

    fn on_whole_element(&mut self, id: u32, events: &mut Vec<MkvEvent>) -> Result<(), MkvError> {
        let element = std::mem::take(&mut self.element);
        let offset = self.element_start;
        let payload = &element[self.element_header_len..];
        match id {
            ebml_ids::EBML => {
                let doc_type =
                    parse_ebml_header(payload).map_err(|reason| invalid(offset, reason))?;
                self.doc = Document {
                    doc_type,
                    ebml_header_bytes: element,
                    ..Document::default()
                };
                self.level = Level::AfterEbmlHeader;
            }
            ids::INFO => {
                self.doc.timecode_scale =
                    parse_info(payload).map_err(|reason| invalid(offset, reason))?;
                self.doc.info_bytes = element;
            }
            ids::TRACKS => {
                self.doc.tracks = parse_tracks(payload, self.limits.max_tracks, offset)?;
                self.doc.tracks_bytes = element;
            }
            ids::TAGS => {
                let tags = parse_tags(payload, self.limits.max_tags, offset)?;
                let end_of_fragment = tags
                    .iter()
                    .any(|(name, _)| name == kvs_tags::END_OF_FRAGMENT);
                events.push(MkvEvent::Tags(tags));
                if end_of_fragment {
                    events.push(MkvEvent::EndOfFragment);
                }
                // Keep a small buffer for the next Tags; let a large one go.
                if element.capacity() <= 64 << 10 {
                    self.element = element;
                    self.element.clear();
                }
            }
            _ => debug_assert!(false, "element {id:#x} collected whole"),
        }
        Ok(())
    }

    fn on_cluster_child(
        &mut self,
        id: u32,
        payload_start: usize,
        events: &mut Vec<MkvEvent>,
    ) -> Result<(), MkvError> {
        let Some(cluster) = &mut self.cluster else {
            return Err(invalid(self.pos, "no open Cluster"));
        };
        let payload_offset = self.pos - (cluster.bytes.len() - payload_start) as u64;
        let payload = &cluster.bytes[payload_start..];
        match id {
            ids::TIMECODE => {
                if cluster.timecode.is_some() {
                    return Err(invalid(payload_offset, "a second Timecode in one Cluster"));
                }
                let timecode =
                    ebml::read_uint(payload).map_err(|e| invalid(payload_offset, e.to_string()))?;
                if let Some(previous) = self.doc.last_cluster_timecode
                    && timecode <= previous
                {
                    return Err(MkvError::TimecodeNotIncreasing { timecode, previous });
                }
                cluster.timecode = Some(timecode);
                self.doc.last_cluster_timecode = Some(timecode);
                events.push(MkvEvent::FragmentStart {
                    cluster_timecode: timecode,
                });
            }
            ids::SIMPLE_BLOCK => {
                let block =
                    parse_block(payload).map_err(|reason| invalid(payload_offset, reason))?;
                let keyframe = block.flags & 0x80 != 0;
                let data = payload_start + block.header_len..payload_start + payload.len();
                self.on_frame(block, keyframe, None, data, payload_offset, events)?;
            }
            ids::BLOCK_GROUP => {
                let group =
                    parse_block_group(payload).map_err(|reason| invalid(payload_offset, reason))?;
                let block_bytes = &payload[group.block.clone()];
                let block =
                    parse_block(block_bytes).map_err(|reason| invalid(payload_offset, reason))?;
                let data = payload_start + group.block.start + block.header_len
                    ..payload_start + group.block.end;
                self.on_frame(
                    block,
                    !group.has_reference,
                    group.duration,
                    data,
                    payload_offset,
                    events,
                )?;
            }
            _ => {}
        }
        Ok(())
    }

    fn on_frame(
        &mut self,
        block: BlockHeader,
        keyframe: bool,
        duration: Option<u64>,
        data: std::ops::Range<usize>,
        offset: u64,
        events: &mut Vec<MkvEvent>,
    ) -> Result<(), MkvError> {
        let scale = self.timecode_scale();
        let Some(track_index) = self.doc.tracks.iter().position(|t| t.number == block.track) else {
            return Err(MkvError::TrackNumberMismatch {
                offset,
                track: block.track,
            });
        };
        let Some(cluster) = &mut self.cluster else {
            return Err(invalid(offset, "no open Cluster"));
        };
        let Some(cluster_timecode) = cluster.timecode else {
            return Err(invalid(offset, "block before the Cluster Timecode"));
        };
        let Some(timecode) =
            cluster_timecode.checked_add_signed(i64::from(block.relative_timecode))
        else {
            return Err(invalid(offset, "frame timecode out of range"));
        };
        if cluster.frame_count == 0 {
            if self.limits.require_key_frame_first && !keyframe {
                return Err(MkvError::FirstFrameNotKeyFrame { cluster_timecode });
            }
            cluster.first_frame_key = keyframe;
            cluster.first_timecode = timecode;
            cluster.min_timecode = timecode;
            cluster.max_timecode = timecode;
        }
        cluster.min_timecode = cluster.min_timecode.min(timecode);
        cluster.max_timecode = cluster.max_timecode.max(timecode);
        cluster.last_timecode = timecode;
        cluster.frame_count += 1;
        if let Some(timing) = cluster.tracks.get_mut(track_index) {
            timing.add_frame(timecode, duration);
        }
        let span = cluster.max_timecode - cluster.min_timecode;
        let limit_ns = self.limits.max_fragment_duration_ns;
        match span.checked_mul(scale) {
            Some(duration_ns) if duration_ns <= limit_ns => {}
            duration_ns => {
                return Err(MkvError::FragmentTooLong {
                    cluster_timecode,
                    duration_ns: duration_ns.unwrap_or(u64::MAX),
                    limit_ns,
                });
            }
        }
        events.push(MkvEvent::Frame(Frame {
            track: block.track,
            timecode,
            keyframe,
            laced: block.flags & 0x06 != 0,
            duration,
            data_offset: data.start,
            data_len: data.len(),
        }));
        Ok(())
    }

    fn close_cluster(&mut self, events: &mut Vec<MkvEvent>) -> Result<(), MkvError> {
        let Some(cluster) = self.cluster.take() else {
            return Ok(());
        };
        let Some(cluster_timecode) = cluster.timecode else {
            return Err(invalid(cluster.start, "Cluster without a Timecode"));
        };
        for timing in &cluster.tracks {
            if timing.frames == 0 {
                return Err(MkvError::FramesMissingForTrack {
                    cluster_timecode,
                    track: timing.track,
                });
            }
        }
        let mut bytes = cluster.bytes;
        let mut head = Vec::with_capacity(CLUSTER_HEADER_LEN);
        ebml::write_id(&mut head, ids::CLUSTER);
        ebml::write_size_fixed(&mut head, (bytes.len() - CLUSTER_HEADER_LEN) as u64, 8)
            .map_err(|e| invalid(cluster.start, e.to_string()))?;
        bytes[..CLUSTER_HEADER_LEN].copy_from_slice(&head);
        events.push(MkvEvent::FragmentEnd(Fragment {
            cluster_timecode,
            first_timecode: cluster.first_timecode,
            last_timecode: cluster.last_timecode,
            timecode_scale: self.timecode_scale(),
            frame_count: cluster.frame_count,
            has_keyframe_first: cluster.first_frame_key,
            tracks: cluster.tracks,
            raw_cluster_bytes: bytes,
        }));
        Ok(())
    }
}

/// Elements that cannot be children of a Cluster: one of them ends an unknown-size
/// Cluster (RFC 8794 section 6.2).
fn ends_unknown_size_cluster(id: u32) -> bool {
    matches!(
        id,
        ebml_ids::EBML
            | ids::SEGMENT
            | ids::SEEK_HEAD
            | ids::INFO
            | ids::TRACKS
            | ids::CUES
            | ids::ATTACHMENTS
            | ids::CHAPTERS
            | ids::TAGS
            | ids::CLUSTER
    )
}

fn known_size(header: &ElementHeader, start: u64) -> Result<u64, MkvError> {
    match header.size {
        ElementSize::Known(size) => Ok(size),
        ElementSize::Unknown => Err(invalid(
            start,
            format!("element {:#x} has an unknown size", header.id),
        )),
    }
}

/// Appends to a buffer whose length is known to stay within `limit`, growing its
/// capacity geometrically but never past `limit` (or what is needed).
fn append_bounded(buf: &mut Vec<u8>, data: &[u8], limit: usize) {
    let needed = buf.len() + data.len();
    if needed > buf.capacity() {
        let target = needed.max(buf.capacity().saturating_mul(2).min(limit));
        buf.reserve_exact(target - buf.len());
    }
    buf.extend_from_slice(data);
}

/// One child of a buffered master element.
struct Child<'a> {
    id: u32,
    /// Where the payload starts in the parent's payload.
    offset: usize,
    payload: &'a [u8],
}

/// Iterates over the children of a buffered master element's payload. Stops at the
/// first malformed child.
struct Children<'a> {
    data: &'a [u8],
    pos: usize,
}

fn children(data: &[u8]) -> Children<'_> {
    Children { data, pos: 0 }
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<Child<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let rest = &self.data[self.pos..];
        let result = match ebml::read_header(rest) {
            Err(err) => Err(err.to_string()),
            Ok(None) => Err("child element truncated".to_string()),
            Ok(Some(header)) => match header.size {
                ElementSize::Unknown => {
                    Err(format!("element {:#x} has an unknown size", header.id))
                }
                ElementSize::Known(size) if size > (rest.len() - header.header_len) as u64 => {
                    Err(format!("element {:#x} overruns its parent", header.id))
                }
                ElementSize::Known(size) => {
                    let offset = self.pos + header.header_len;
                    let end = offset + size as usize;
                    self.pos = end;
                    return Some(Ok(Child {
                        id: header.id,
                        offset,
                        payload: &self.data[offset..end],
                    }));
                }
            },
        };
        self.pos = self.data.len();
        Some(result)
    }
}

fn uint(payload: &[u8]) -> Result<u64, String> {
    ebml::read_uint(payload).map_err(|e| e.to_string())
}

fn string(payload: &[u8]) -> Result<String, String> {
    ebml::read_string(payload)
        .map(str::to_owned)
        .map_err(|e| e.to_string())
}

/// Checks the EBML header and returns its DocType.
fn parse_ebml_header(payload: &[u8]) -> Result<String, String> {
    let mut doc_type = None;
    for child in children(payload) {
        let child = child?;
        match child.id {
            ebml_ids::EBML_READ_VERSION if uint(child.payload)? != 1 => {
                return Err("EBMLReadVersion is not 1".into());
            }
            ebml_ids::EBML_MAX_ID_LENGTH if uint(child.payload)? > ebml::MAX_ID_LEN as u64 => {
                return Err("EBMLMaxIDLength above 4".into());
            }
            ebml_ids::EBML_MAX_SIZE_LENGTH if uint(child.payload)? > ebml::MAX_SIZE_LEN as u64 => {
                return Err("EBMLMaxSizeLength above 8".into());
            }
            ebml_ids::DOC_TYPE => doc_type = Some(string(child.payload)?),
            _ => {}
        }
    }
    match doc_type.as_deref() {
        Some("matroska" | "webm") => Ok(doc_type.unwrap_or_default()),
        Some(other) => Err(format!("DocType {other:?} is not matroska or webm")),
        None => Err("EBML header without a DocType".into()),
    }
}

/// Returns the TimecodeScale of an Info element.
fn parse_info(payload: &[u8]) -> Result<u64, String> {
    let mut scale = DEFAULT_TIMECODE_SCALE;
    for child in children(payload) {
        let child = child?;
        if child.id == ids::TIMECODE_SCALE {
            scale = uint(child.payload)?;
        }
    }
    if scale == 0 {
        return Err("TimecodeScale of 0".into());
    }
    Ok(scale)
}

fn parse_tracks(payload: &[u8], max_tracks: usize, offset: u64) -> Result<Vec<Track>, MkvError> {
    // Count first, so a Tracks element full of tiny entries allocates nothing.
    let mut count = 0;
    for child in children(payload) {
        if child.map_err(|reason| invalid(offset, reason))?.id == ids::TRACK_ENTRY {
            count += 1;
        }
    }
    if count > max_tracks {
        return Err(MkvError::TooManyTracks {
            count,
            limit: max_tracks,
        });
    }
    if count == 0 {
        return Err(invalid(offset, "Tracks without a TrackEntry"));
    }
    let mut tracks: Vec<Track> = Vec::with_capacity(count);
    for child in children(payload).flatten() {
        if child.id != ids::TRACK_ENTRY {
            continue;
        }
        let track = parse_track_entry(child.payload).map_err(|reason| invalid(offset, reason))?;
        if tracks.iter().any(|t| t.number == track.number) {
            return Err(invalid(
                offset,
                format!("two tracks numbered {}", track.number),
            ));
        }
        tracks.push(track);
    }
    Ok(tracks)
}

fn parse_track_entry(payload: &[u8]) -> Result<Track, String> {
    let mut track = Track {
        number: 0,
        uid: 0,
        track_type: 0,
        codec_id: String::new(),
        codec_private: Vec::new(),
        name: None,
        default_duration_ns: None,
        video: None,
        audio: None,
    };
    let mut has_codec_id = false;
    for child in children(payload) {
        let child = child?;
        match child.id {
            ids::TRACK_NUMBER => track.number = uint(child.payload)?,
            ids::TRACK_UID => track.uid = uint(child.payload)?,
            ids::TRACK_TYPE => track.track_type = uint(child.payload)?,
            ids::CODEC_ID => {
                track.codec_id = string(child.payload)?;
                has_codec_id = true;
            }
            ids::CODEC_PRIVATE => track.codec_private = child.payload.to_vec(),
            ids::NAME => track.name = Some(string(child.payload)?),
            ids::DEFAULT_DURATION => track.default_duration_ns = Some(uint(child.payload)?),
            ids::VIDEO => {
                let mut video = VideoSettings {
                    pixel_width: 0,
                    pixel_height: 0,
                };
                for child in children(child.payload) {
                    let child = child?;
                    match child.id {
                        ids::PIXEL_WIDTH => video.pixel_width = uint(child.payload)?,
                        ids::PIXEL_HEIGHT => video.pixel_height = uint(child.payload)?,
                        _ => {}
                    }
                }
                track.video = Some(video);
            }
            ids::AUDIO => {
                let mut audio = AudioSettings {
                    sampling_frequency: 8000.0,
                    channels: 1,
                    bit_depth: None,
                };
                for child in children(child.payload) {
                    let child = child?;
                    match child.id {
                        ids::SAMPLING_FREQUENCY => {
                            audio.sampling_frequency =
                                ebml::read_float(child.payload).map_err(|e| e.to_string())?;
                        }
                        ids::CHANNELS => audio.channels = uint(child.payload)?,
                        ids::BIT_DEPTH => audio.bit_depth = Some(uint(child.payload)?),
                        _ => {}
                    }
                }
                track.audio = Some(audio);
            }
            _ => {}
        }
    }
    if track.number == 0 {
        return Err("TrackEntry without a TrackNumber".into());
    }
    if !has_codec_id {
        return Err(format!("track {} has no CodecID", track.number));
    }
    Ok(track)
}

fn parse_tags(
    payload: &[u8],
    max_tags: usize,
    offset: u64,
) -> Result<Vec<(String, String)>, MkvError> {
    let mut tags = Vec::new();
    let fail = |err| match err {
        TagsError::Invalid(reason) => invalid(offset, reason),
        TagsError::TooMany => MkvError::TooManyTags {
            offset,
            limit: max_tags,
        },
    };
    for tag in children(payload) {
        let tag = tag.map_err(|reason| invalid(offset, reason))?;
        if tag.id != ids::TAG {
            continue;
        }
        for simple in children(tag.payload) {
            let simple = simple.map_err(|reason| invalid(offset, reason))?;
            if simple.id == ids::SIMPLE_TAG {
                simple_tag(simple.payload, 1, max_tags, &mut tags).map_err(fail)?;
            }
        }
    }
    Ok(tags)
}

enum TagsError {
    Invalid(String),
    TooMany,
}

impl From<String> for TagsError {
    fn from(reason: String) -> Self {
        Self::Invalid(reason)
    }
}

/// Appends a SimpleTag's (name, value) and then its nested SimpleTags', at most
/// `max_tags` in all. Recursion is bounded by [`MAX_TAG_NESTING`].
fn simple_tag(
    payload: &[u8],
    depth: usize,
    max_tags: usize,
    out: &mut Vec<(String, String)>,
) -> Result<(), TagsError> {
    if depth > MAX_TAG_NESTING {
        return Err(TagsError::Invalid("SimpleTags nested too deeply".into()));
    }
    let mut name = None;
    let mut value = None;
    for child in children(payload) {
        let child = child?;
        match child.id {
            ids::TAG_NAME => name = Some(child.payload),
            ids::TAG_STRING => value = Some(child.payload),
            _ => {}
        }
    }
    if let Some(name) = name {
        if out.len() == max_tags {
            return Err(TagsError::TooMany);
        }
        let value = value.map(string).transpose()?.unwrap_or_default();
        out.push((string(name)?, value));
    }
    for child in children(payload) {
        let child = child?;
        if child.id == ids::SIMPLE_TAG {
            simple_tag(child.payload, depth + 1, max_tags, out)?;
        }
    }
    Ok(())
}

/// The header of a SimpleBlock or Block (RFC 9559 section 10.1).
#[derive(Debug, Clone, Copy)]
struct BlockHeader {
    track: u64,
    relative_timecode: i16,
    flags: u8,
    /// Bytes before the frame data: track VINT, 2 timecode bytes, 1 flags byte.
    header_len: usize,
}

fn parse_block(data: &[u8]) -> Result<BlockHeader, String> {
    let (track, vint_len) = match ebml::read_vint(data) {
        Ok(Some((track, len, _))) => (track, len),
        Ok(None) => return Err("block shorter than its header".into()),
        Err(err) => return Err(format!("block track number: {err}")),
    };
    let Some(&[t0, t1, flags]) = data.get(vint_len..vint_len + 3) else {
        return Err("block shorter than its header".into());
    };
    Ok(BlockHeader {
        track,
        relative_timecode: i16::from_be_bytes([t0, t1]),
        flags,
        header_len: vint_len + 3,
    })
}

struct BlockGroup {
    /// The Block's payload within the BlockGroup payload.
    block: std::ops::Range<usize>,
    has_reference: bool,
    /// BlockDuration (TimecodeScale units).
    duration: Option<u64>,
}

fn parse_block_group(payload: &[u8]) -> Result<BlockGroup, String> {
    let mut block = None;
    let mut has_reference = false;
    let mut duration = None;
    for child in children(payload) {
        let child = child?;
        match child.id {
            ids::BLOCK if block.is_some() => return Err("BlockGroup with two Blocks".into()),
            ids::BLOCK => block = Some(child.offset..child.offset + child.payload.len()),
            ids::REFERENCE_BLOCK => has_reference = true,
            ids::BLOCK_DURATION => duration = Some(uint(child.payload)?),
            _ => {}
        }
    }
    let block = block.ok_or("BlockGroup without a Block")?;
    Ok(BlockGroup {
        block,
        has_reference,
        duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::synthetic::{self, block, cluster, cluster_known, stream_header, tags};

    fn read(bytes: &[u8]) -> Result<Vec<MkvEvent>, MkvError> {
        MkvReader::new(Limits::default()).read_to_end(bytes)
    }

    fn frames(events: &[MkvEvent]) -> Vec<Frame> {
        events
            .iter()
            .filter_map(|e| match e {
                MkvEvent::Frame(f) => Some(*f),
                _ => None,
            })
            .collect()
    }

    fn fragments(events: &[MkvEvent]) -> Vec<&Fragment> {
        events
            .iter()
            .filter_map(|e| match e {
                MkvEvent::FragmentEnd(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    fn error_of(bytes: &[u8]) -> MkvError {
        read(bytes).expect_err("expected an error")
    }

    #[test]
    fn minimal_stream() {
        let mut body = stream_header(&[1]);
        body.extend(cluster(
            1000,
            &[block(1, 0, true, 10), block(1, 33, false, 5)],
        ));
        let events = read(&body).unwrap();
        let MkvEvent::Header(header) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(header.doc_type, "matroska");
        assert_eq!(header.timecode_scale, 1_000_000);
        assert_eq!(header.tracks.len(), 1);
        assert_eq!(header.tracks[0].codec_id, "V_MPEG4/ISO/AVC");
        assert_eq!(
            events[1],
            MkvEvent::FragmentStart {
                cluster_timecode: 1000
            }
        );
        let frames = frames(&events);
        assert_eq!(frames.len(), 2);
        assert_eq!((frames[0].timecode, frames[0].keyframe), (1000, true));
        assert_eq!((frames[1].timecode, frames[1].keyframe), (1033, false));
        let fragment = fragments(&events)[0];
        assert_eq!(fragment.frame_count, 2);
        assert_eq!(fragment.span(), 33);
        // The last frame lasts as long as the frames before it: 66 ms in all.
        assert_eq!(fragment.duration_ns(&[]), 66_000_000);
        assert!(fragment.has_keyframe_first);
        // Frame data is where the Frame event says, inside the raw cluster bytes.
        let raw = &fragment.raw_cluster_bytes;
        assert_eq!(
            raw[frames[0].data_offset..][..frames[0].data_len],
            [0xAB; 10]
        );
        assert_eq!(
            raw[frames[1].data_offset..][..frames[1].data_len],
            [0xAB; 5]
        );
        // Known 8-byte size form, and the children as sent.
        assert_eq!(raw[..5], [0x1F, 0x43, 0xB6, 0x75, 0x01]);
        let size = u64::from_be_bytes(raw[4..12].try_into().unwrap()) & ((1 << 56) - 1);
        assert_eq!(size as usize, raw.len() - 12);
    }

    #[test]
    fn unknown_and_known_size_clusters_give_the_same_fragment() {
        let blocks = [block(1, 0, true, 7), block(1, 40, false, 9)];
        let mut unknown = stream_header(&[1]);
        unknown.extend(cluster(5, &blocks));
        let mut known = stream_header(&[1]);
        known.extend(cluster_known(5, &blocks));
        let a = read(&unknown).unwrap();
        let b = read(&known).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn known_size_segment_ends_and_nothing_may_follow() {
        let mut inner = Vec::new();
        inner.extend(synthetic::info(1_000_000));
        inner.extend(synthetic::tracks(&[1]));
        inner.extend(cluster_known(0, &[block(1, 0, true, 3)]));
        let mut body = synthetic::ebml_header("webm");
        ebml::write_element(&mut body, ids::SEGMENT, &inner);
        let events = read(&body).unwrap();
        assert_eq!(fragments(&events).len(), 1);
        body.push(0xEC);
        body.push(0x80);
        assert!(matches!(error_of(&body), MkvError::Invalid { .. }));
    }

    #[test]
    fn block_groups_are_frames_and_reference_blocks_mean_delta_frames() {
        let mut body = stream_header(&[1]);
        body.extend(cluster(
            0,
            &[
                synthetic::block_group(1, 0, None, None, 4),
                synthetic::block_group(1, 10, Some(-10), Some(33), 4),
            ],
        ));
        let frames = frames(&read(&body).unwrap());
        assert_eq!(frames.len(), 2);
        assert!(frames[0].keyframe);
        assert!(!frames[1].keyframe);
        assert_eq!(frames[1].timecode, 10);
        assert_eq!((frames[0].duration, frames[1].duration), (None, Some(33)));
    }

    /// The fragment's duration in whole milliseconds (rounded), as PutMedia stores it.
    fn duration_ms(fragment: &Fragment, known_ns: &[Option<u64>]) -> u64 {
        (fragment.duration_ns(known_ns) + 500_000) / 1_000_000
    }

    /// Key frame first, then `frames - 1` frames at `fps`, with millisecond timecodes
    /// relative to their Cluster (as a producer with TimecodeScale 1 ms writes them:
    /// 0, 33, 67, 100, ... at 30 fps).
    fn video_blocks(fps: u64, frames: u64) -> Vec<Vec<u8>> {
        (0..frames)
            .map(|i| block(1, ((i * 1000 + fps / 2) / fps) as i16, i == 0, 3))
            .collect()
    }

    #[test]
    fn thirty_frames_at_30_fps_last_one_second() {
        // 120 one-second fragments, 33/34 ms apart: each lasts 1000 ms (not the 967 ms
        // from first to last frame), and together they last 120 s.
        let mut body = stream_header(&[1]);
        for second in 0..120 {
            body.extend(cluster(second * 1000, &video_blocks(30, 30)));
        }
        let events = read(&body).unwrap();
        let fragments = fragments(&events);
        assert_eq!(fragments.len(), 120);
        for fragment in &fragments {
            assert_eq!(fragment.span(), 967);
            assert_eq!(duration_ms(fragment, &[]), 1000);
        }
        let total: u64 = fragments.iter().map(|f| duration_ms(f, &[])).sum();
        assert_eq!(total, 120_000);
        let timing = fragments[0].tracks[0];
        assert_eq!((timing.track, timing.frames), (1, 30));
        assert_eq!((timing.min_timecode, timing.max_timecode), (0, 967));
        // 967 ms / 29 intervals.
        assert_eq!(timing.last_frame_duration_ns(1_000_000), Some(33_344_827));
    }

    #[test]
    fn block_duration_of_the_latest_frame_is_honoured() {
        let entry = synthetic::track_entry(1, TRACK_TYPE_VIDEO, Some(40_000_000));
        let mut body = synthetic::stream_header_of(&[entry]);
        body.extend(cluster(
            0,
            &[
                synthetic::block_group(1, 0, None, Some(40), 3),
                synthetic::block_group(1, 40, Some(-40), Some(100), 3),
            ],
        ));
        // A B-frame shown before the frame above: the latest frame's BlockDuration counts.
        body.extend(cluster(
            1000,
            &[
                synthetic::block_group(1, 0, None, Some(40), 3),
                synthetic::block_group(1, 80, Some(-40), Some(60), 3),
                synthetic::block_group(1, 40, Some(-80), Some(10), 3),
            ],
        ));
        let events = read(&body).unwrap();
        let fragments = fragments(&events);
        // BlockDuration wins over the DefaultDuration.
        assert_eq!(fragments[0].duration_ns(&[]), 140_000_000);
        assert_eq!(fragments[1].duration_ns(&[]), 140_000_000);
        assert_eq!(fragments[1].tracks[0].last_block_duration, Some(60));
        // Not a BlockDuration of 0: then the DefaultDuration.
        let entry = synthetic::track_entry(1, TRACK_TYPE_VIDEO, Some(40_000_000));
        let mut body = synthetic::stream_header_of(&[entry]);
        body.extend(cluster(
            0,
            &[synthetic::block_group(1, 0, None, Some(0), 3)],
        ));
        assert_eq!(fragments_of(&body)[0].duration_ns(&[]), 40_000_000);
    }

    fn fragments_of(body: &[u8]) -> Vec<Fragment> {
        fragments(&read(body).unwrap())
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn default_duration_is_honoured() {
        let entry = synthetic::track_entry(1, TRACK_TYPE_VIDEO, Some(33_333_333));
        let mut body = synthetic::stream_header_of(&[entry]);
        body.extend(cluster(0, &video_blocks(30, 3)));
        // A producer that truncates times to milliseconds: 4, 37, 70, ... 970 ms.
        let truncated: Vec<Vec<u8>> = (0..30)
            .map(|i| block(1, (4 + i * 100 / 3) as i16, i == 0, 3))
            .collect();
        body.extend(cluster(1000, &truncated));
        // Frames 40 ms apart despite the DefaultDuration: their own spacing counts.
        body.extend(cluster(
            2000,
            &[block(1, 0, true, 3), block(1, 40, false, 3)],
        ));
        let fragments = fragments_of(&body);
        // 0, 33, 67 ms: three frames of 33.333333 ms (not 67 ms and one more frame).
        assert_eq!(fragments[0].duration_ns(&[]), 99_999_999);
        // 966 ms from first to last, yet 30 frames of 1/30 s: one second.
        assert_eq!(fragments[1].span(), 966);
        assert_eq!(duration_ms(&fragments[1], &[]), 1000);
        // Not evenly spaced at the DefaultDuration: the span and one DefaultDuration.
        assert_eq!(fragments[2].duration_ns(&[]), 73_333_333);
        // Even for a lone frame, and whatever earlier fragments said.
        let entry = synthetic::track_entry(1, TRACK_TYPE_VIDEO, Some(33_333_333));
        let mut body = synthetic::stream_header_of(&[entry]);
        body.extend(cluster(0, &[block(1, 0, true, 3)]));
        let fragment = &fragments_of(&body)[0];
        assert_eq!(fragment.duration_ns(&[Some(40_000_000)]), 33_333_333);
    }

    #[test]
    fn a_lone_frame_lasts_what_earlier_fragments_said() {
        let mut body = stream_header(&[1]);
        body.extend(cluster(0, &video_blocks(30, 30)));
        body.extend(cluster(1000, &[block(1, 0, true, 3)]));
        let fragments = fragments_of(&body);
        let lone = &fragments[1];
        assert_eq!(lone.span(), 0);
        assert_eq!(lone.tracks[0].last_frame_duration_ns(1_000_000), None);
        // Nothing known: the frame adds nothing.
        assert_eq!(lone.duration_ns(&[]), 0);
        assert_eq!(lone.duration_ns(&[None]), 0);
        // What the previous fragment of the stream told.
        let known = fragments[0].tracks[0].last_frame_duration_ns(1_000_000);
        assert_eq!(lone.duration_ns(&[known]), 33_344_827);
        assert_eq!(duration_ms(lone, &[known]), 33);
        // A fallback never overrides what the fragment itself tells.
        assert_eq!(duration_ms(&fragments[0], &[Some(1)]), 1000);
    }

    #[test]
    fn audio_and_video_follow_the_video() {
        // Audio is track 1, video track 2: the video still sets the duration. 25 fps
        // video from 0 to 960 ms; AAC frames every 21.33 ms, the last one starting
        // after the last video frame (it ends 2 ms after the next key frame, where the
        // next fragment starts).
        let audio = synthetic::track_entry(1, TRACK_TYPE_AUDIO, None);
        let video = synthetic::track_entry(2, TRACK_TYPE_VIDEO, Some(40_000_000));
        let mut body = synthetic::stream_header_of(&[audio, video]);
        for second in 0..3u64 {
            let mut blocks = Vec::new();
            for i in 0..25u64 {
                blocks.push(block(2, (i * 40) as i16, i == 0, 3));
                for j in (0..47u64).filter(|j| j * 8 / 15 == i) {
                    blocks.push(block(1, ((j * 64_000 / 3 + 500) / 1000) as i16, true, 2));
                }
            }
            body.extend(cluster(second * 1000, &blocks));
        }
        let fragments = fragments_of(&body);
        assert_eq!(fragments.len(), 3);
        for fragment in &fragments {
            assert_eq!(fragment.reference_track(), 1);
            let audio = fragment.tracks[0];
            assert_eq!((audio.track, audio.video, audio.frames), (1, false, 47));
            assert_eq!(audio.max_timecode % 1000, 981);
            assert_eq!(fragment.span(), 981);
            assert_eq!(fragment.duration_ns(&[]), 1_000_000_000);
        }
        // An audio-only stream follows its (first) track.
        let mut body =
            synthetic::stream_header_of(&[synthetic::track_entry(1, TRACK_TYPE_AUDIO, None)]);
        body.extend(cluster(0, &[block(1, 0, true, 2), block(1, 21, true, 2)]));
        let fragment = &fragments_of(&body)[0];
        assert_eq!(fragment.reference_track(), 0);
        assert_eq!(fragment.duration_ns(&[]), 42_000_000);
    }

    #[test]
    fn missing_track_frames_are_4011() {
        let mut body = stream_header(&[1, 2]);
        body.extend(cluster(0, &[block(1, 0, true, 3), block(2, 0, true, 3)]));
        body.extend(cluster(100, &[block(1, 0, true, 3)]));
        let mut events = Vec::new();
        let mut reader = MkvReader::new(Limits::default());
        reader.feed(&body, &mut events).unwrap();
        assert_eq!(fragments(&events).len(), 1);
        let err = reader.finish(&mut events).unwrap_err();
        assert_eq!(
            err,
            MkvError::FramesMissingForTrack {
                cluster_timecode: 100,
                track: 2
            }
        );
        assert_eq!(err.error_id(), 4011);
    }

    #[test]
    fn first_frame_must_be_a_key_frame() {
        let mut body = stream_header(&[1]);
        body.extend(cluster(0, &[block(1, 0, false, 3)]));
        let err = error_of(&body);
        assert_eq!(
            err,
            MkvError::FirstFrameNotKeyFrame {
                cluster_timecode: 0
            }
        );
        assert_eq!(err.error_id(), 4011);
        let lenient = Limits {
            require_key_frame_first: false,
            ..Limits::default()
        };
        let events = MkvReader::new(lenient).read_to_end(&body).unwrap();
        assert!(!fragments(&events)[0].has_keyframe_first);
    }

    #[test]
    fn unknown_track_is_4010() {
        let mut body = stream_header(&[1]);
        body.extend(cluster(0, &[block(7, 0, true, 3)]));
        let err = error_of(&body);
        assert!(matches!(
            err,
            MkvError::TrackNumberMismatch { track: 7, .. }
        ));
        assert_eq!(err.error_id(), 4010);
    }

    #[test]
    fn more_than_three_tracks_is_4012() {
        let body = stream_header(&[1, 2, 3, 4]);
        let err = error_of(&body);
        assert_eq!(err, MkvError::TooManyTracks { count: 4, limit: 3 });
        assert_eq!(err.error_id(), 4012);
        assert!(read(&stream_header(&[1, 2, 3])).is_ok());
    }

    #[test]
    fn cluster_timecodes_must_increase() {
        for second in [1000, 999] {
            let mut body = stream_header(&[1]);
            body.extend(cluster(1000, &[block(1, 0, true, 3)]));
            body.extend(cluster(second, &[block(1, 0, true, 3)]));
            let err = error_of(&body);
            assert_eq!(
                err,
                MkvError::TimecodeNotIncreasing {
                    timecode: second,
                    previous: 1000
                }
            );
            assert_eq!(err.error_id(), 4004);
        }
    }

    #[test]
    fn fragments_longer_than_ten_seconds_are_4002() {
        let mut body = stream_header(&[1]);
        body.extend(cluster(
            0,
            &[block(1, 0, true, 3), block(1, 10_000, false, 3)],
        ));
        assert!(read(&body).is_ok(), "exactly 10 s is allowed");
        let mut body = stream_header(&[1]);
        body.extend(cluster(
            0,
            &[block(1, 0, true, 3), block(1, 10_001, false, 3)],
        ));
        let err = error_of(&body);
        assert!(matches!(
            err,
            MkvError::FragmentTooLong {
                duration_ns: 10_001_000_000,
                ..
            }
        ));
        assert_eq!(err.error_id(), 4002);
    }

    #[test]
    fn oversized_fragments_and_blocks_are_4001() {
        let limits = Limits {
            max_fragment_bytes: 1000,
            max_block_bytes: 600,
            ..Limits::default()
        };
        let mut body = stream_header(&[1]);
        body.extend(cluster(
            0,
            &[block(1, 0, true, 500), block(1, 1, false, 500)],
        ));
        let err = MkvReader::new(limits.clone())
            .read_to_end(&body)
            .unwrap_err();
        assert!(matches!(
            err,
            MkvError::FragmentTooLarge { limit: 1000, .. }
        ));
        assert_eq!(err.error_id(), 4001);

        let mut body = stream_header(&[1]);
        body.extend(cluster(0, &[block(1, 0, true, 700)]));
        let err = MkvReader::new(limits.clone())
            .read_to_end(&body)
            .unwrap_err();
        assert!(matches!(err, MkvError::BlockTooLarge { limit: 600, .. }));
        assert_eq!(err.error_id(), 4001);

        // A known-size cluster that declares too much fails at its header.
        let mut body = stream_header(&[1]);
        body.extend(cluster_known(
            0,
            &[
                block(1, 0, true, 400),
                block(1, 1, false, 400),
                block(1, 2, false, 400),
            ],
        ));
        let header_end = stream_header(&[1]).len() + 12;
        let mut events = Vec::new();
        let err = MkvReader::new(limits)
            .feed(&body[..header_end], &mut events)
            .unwrap_err();
        assert!(matches!(err, MkvError::FragmentTooLarge { .. }));
    }

    #[test]
    fn doc_type_must_be_matroska_or_webm() {
        let mut body = synthetic::ebml_header("mp4");
        body.extend(synthetic::segment_unknown());
        let err = error_of(&body);
        assert!(err.to_string().contains("DocType"), "{err}");
        assert_eq!(err.error_id(), 4006);
    }

    #[test]
    fn one_segment_and_one_document_per_body() {
        let mut body = stream_header(&[1]);
        body.extend(synthetic::segment_unknown());
        assert!(error_of(&body).to_string().contains("second Segment"));
        let mut body = stream_header(&[1]);
        body.extend(cluster(0, &[block(1, 0, true, 1)]));
        body.extend(stream_header(&[1]));
        let err = error_of(&body);
        assert!(err.to_string().contains("second EBML header"), "{err}");
        // ... which is exactly what GetMedia output is made of.
        let events = MkvReader::for_document_sequence(Limits::default())
            .read_to_end(&body)
            .unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, MkvEvent::Header(_)))
                .count(),
            1,
            "the second document has no cluster, so no header event"
        );
    }

    #[test]
    fn structural_errors_are_4006() {
        // Unknown size outside Segment and Cluster.
        let mut body = stream_header(&[1]);
        body.extend([0x12, 0x54, 0xC3, 0x67, 0xFF]);
        assert!(error_of(&body).to_string().contains("unknown size"));
        // A block before the Timecode.
        let mut body = stream_header(&[1]);
        body.extend([0x1F, 0x43, 0xB6, 0x75, 0xFF]);
        body.extend(block(1, 0, true, 1));
        assert!(
            error_of(&body)
                .to_string()
                .contains("before the Cluster Timecode")
        );
        // A Cluster before Tracks.
        let mut body = synthetic::ebml_header("matroska");
        body.extend(synthetic::segment_unknown());
        body.extend(cluster(0, &[block(1, 0, true, 1)]));
        assert!(error_of(&body).to_string().contains("before Tracks"));
        // A Cluster without a Timecode.
        let mut body = stream_header(&[1]);
        body.extend([0x1F, 0x43, 0xB6, 0x75, 0x80]);
        assert!(error_of(&body).to_string().contains("without a Timecode"));
        // A child overrunning its known-size Cluster.
        let mut body = stream_header(&[1]);
        body.extend([0x1F, 0x43, 0xB6, 0x75, 0x85, 0xE7, 0x81, 0x00, 0xA3, 0x85]);
        assert!(error_of(&body).to_string().contains("overruns its Cluster"));
        // Garbage instead of an EBML header.
        assert!(matches!(
            error_of(b"RIFF....WAVE"),
            MkvError::Invalid { offset: 0, .. }
        ));
        // Every one of them maps to 4006.
        assert_eq!(error_of(b"RIFF").error_id(), 4006);
    }

    #[test]
    fn truncated_bodies_fail_at_finish() {
        let mut body = stream_header(&[1]);
        body.extend(cluster(0, &[block(1, 0, true, 10)]));
        let inside_block = body.len() - 3;
        assert!(matches!(
            read(&body[..inside_block]),
            Err(MkvError::Truncated { .. })
        ));
        // Ending between elements of an unknown-size Cluster is a clean end.
        assert!(read(&body).is_ok());
        assert_eq!(read(&[]).unwrap(), vec![]);
    }

    #[test]
    fn end_of_fragment_tags_close_the_cluster_as_soon_as_their_header_arrives() {
        let mut body = stream_header(&[1]);
        body.extend(cluster(0, &[block(1, 0, true, 10)]));
        let tags_start = body.len();
        body.extend(tags(&[(kvs_tags::END_OF_FRAGMENT, "")]));
        let mut reader = MkvReader::new(Limits::default());
        let mut events = Vec::new();
        // Only the Tags ID and size: the fragment must already be complete.
        reader.feed(&body[..tags_start + 5], &mut events).unwrap();
        assert!(matches!(events.last(), Some(MkvEvent::FragmentEnd(_))));
        events.clear();
        reader.feed(&body[tags_start + 5..], &mut events).unwrap();
        assert_eq!(
            events,
            vec![
                MkvEvent::Tags(vec![(kvs_tags::END_OF_FRAGMENT.to_string(), String::new())]),
                MkvEvent::EndOfFragment
            ]
        );
        reader.finish(&mut events).unwrap();
    }

    #[test]
    fn tags_are_flattened_and_unpadded() {
        let mut simple_inner = Vec::new();
        ebml::write_string_element(&mut simple_inner, ids::TAG_NAME, "INNER");
        ebml::write_element(&mut simple_inner, ids::TAG_STRING, b"v2\0\0");
        let mut simple = Vec::new();
        ebml::write_string_element(&mut simple, ids::TAG_NAME, "OUTER");
        ebml::write_string_element(&mut simple, ids::TAG_STRING, "v1");
        ebml::write_element(&mut simple, ids::SIMPLE_TAG, &simple_inner);
        let mut no_value = Vec::new();
        ebml::write_string_element(&mut no_value, ids::TAG_NAME, "EMPTY");
        let mut tag = Vec::new();
        ebml::write_element(&mut tag, ids::TARGETS, &[]);
        ebml::write_element(&mut tag, ids::SIMPLE_TAG, &simple);
        ebml::write_element(&mut tag, ids::SIMPLE_TAG, &no_value);
        let mut tags_payload = Vec::new();
        ebml::write_element(&mut tags_payload, ids::TAG, &tag);
        let mut body = stream_header(&[1]);
        ebml::write_element(&mut body, ids::TAGS, &tags_payload);
        let events = read(&body).unwrap();
        assert_eq!(
            events,
            vec![MkvEvent::Tags(vec![
                ("OUTER".into(), "v1".into()),
                ("INNER".into(), "v2".into()),
                ("EMPTY".into(), String::new()),
            ])]
        );
    }

    #[test]
    fn too_many_tags_are_4009() {
        let many: Vec<(String, String)> =
            (0..200).map(|i| (format!("T{i}"), String::new())).collect();
        let pairs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let mut body = stream_header(&[1]);
        body.extend(tags(&pairs));
        let err = error_of(&body);
        assert!(matches!(err, MkvError::TooManyTags { limit: 128, .. }));
        assert_eq!(err.error_id(), 4009);
    }

    #[test]
    fn timecode_scale_and_audio_settings_are_read() {
        let mut body = synthetic::ebml_header("matroska");
        body.extend(synthetic::segment_unknown());
        body.extend(synthetic::info(1_000));
        let mut audio = Vec::new();
        ebml::write_float_element(&mut audio, ids::SAMPLING_FREQUENCY, 48000.0);
        ebml::write_uint_element(&mut audio, ids::CHANNELS, 2);
        let mut entry = Vec::new();
        ebml::write_uint_element(&mut entry, ids::TRACK_NUMBER, 2);
        ebml::write_uint_element(&mut entry, ids::TRACK_TYPE, TRACK_TYPE_AUDIO);
        ebml::write_string_element(&mut entry, ids::CODEC_ID, "A_AAC");
        ebml::write_element(&mut entry, ids::CODEC_PRIVATE, &[0x11, 0x90]);
        ebml::write_element(&mut entry, ids::AUDIO, &audio);
        let mut tracks = Vec::new();
        ebml::write_element(&mut tracks, ids::TRACK_ENTRY, &entry);
        ebml::write_element(&mut body, ids::TRACKS, &tracks);
        body.extend(cluster(0, &[block(2, 0, true, 1)]));
        let events = read(&body).unwrap();
        let MkvEvent::Header(header) = &events[0] else {
            panic!()
        };
        assert_eq!(header.timecode_scale, 1_000);
        let track = &header.tracks[0];
        assert_eq!(track.codec_id, "A_AAC");
        assert_eq!(track.codec_private, [0x11, 0x90]);
        assert_eq!(
            track.audio,
            Some(AudioSettings {
                sampling_frequency: 48000.0,
                channels: 2,
                bit_depth: None
            })
        );
    }

    #[test]
    fn a_poisoned_reader_keeps_its_error() {
        let mut reader = MkvReader::new(Limits::default());
        let mut events = Vec::new();
        let err = reader.feed(b"junk", &mut events).unwrap_err();
        assert_eq!(
            reader.feed(&stream_header(&[1]), &mut events),
            Err(err.clone())
        );
        assert_eq!(reader.finish(&mut events), Err(err));
    }

    #[test]
    fn absurd_sizes_are_refused_without_allocating_them() {
        // A Tracks element claiming 2^50 bytes.
        let mut body = synthetic::ebml_header("matroska");
        body.extend(synthetic::segment_unknown());
        body.extend([0x16, 0x54, 0xAE, 0x6B, 0x01, 0x04, 0, 0, 0, 0, 0, 0]);
        assert!(matches!(error_of(&body), MkvError::ElementTooLarge { .. }));
        // A SimpleBlock claiming 2^40 bytes.
        let mut body = stream_header(&[1]);
        body.extend([0x1F, 0x43, 0xB6, 0x75, 0xFF, 0xE7, 0x81, 0x00]);
        body.extend([0xA3, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0]);
        assert!(matches!(error_of(&body), MkvError::BlockTooLarge { .. }));
        // A skipped element claiming the largest size: skipped, then truncated.
        let mut body = stream_header(&[1]);
        body.extend([0xEC, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE]);
        body.extend([0; 100]);
        let mut reader = MkvReader::new(Limits::default());
        let mut events = Vec::new();
        reader.feed(&body, &mut events).unwrap();
        assert!(reader.buffered_bytes() < 4096);
        assert!(matches!(
            reader.finish(&mut events),
            Err(MkvError::Truncated { .. })
        ));
    }

    #[test]
    fn ten_thousand_nested_elements_are_refused_without_recursing() {
        // SimpleTags nested 10,000 deep.
        let mut simple = Vec::new();
        ebml::write_string_element(&mut simple, ids::TAG_NAME, "X");
        for _ in 0..10_000 {
            let mut outer = Vec::new();
            ebml::write_element(&mut outer, ids::SIMPLE_TAG, &simple);
            simple = outer;
        }
        let mut tag = Vec::new();
        ebml::write_element(&mut tag, ids::TAG, &simple);
        let mut body = stream_header(&[1]);
        ebml::write_element(&mut body, ids::TAGS, &tag);
        assert!(error_of(&body).to_string().contains("nested too deeply"));

        // Clusters nested 10,000 deep (known sizes).
        let mut inner = Vec::new();
        for _ in 0..10_000 {
            let mut outer = Vec::new();
            ebml::write_element(&mut outer, ids::CLUSTER, &inner);
            inner = outer;
        }
        let mut body = stream_header(&[1]);
        body.extend(&inner);
        assert_eq!(error_of(&body).error_id(), 4006);

        // Segments nested 10,000 deep, unknown sizes.
        let mut body = synthetic::ebml_header("matroska");
        for _ in 0..10_000 {
            body.extend(synthetic::segment_unknown());
        }
        assert!(error_of(&body).to_string().contains("second Segment"));

        // BlockGroups nested 10,000 deep: only the outer one is read; no Block.
        let mut group = Vec::new();
        for _ in 0..10_000 {
            let mut outer = Vec::new();
            ebml::write_element(&mut outer, ids::BLOCK_GROUP, &group);
            group = outer;
        }
        let mut body = stream_header(&[1]);
        body.extend([0x1F, 0x43, 0xB6, 0x75, 0xFF, 0xE7, 0x81, 0x00]);
        body.extend(&group);
        assert!(error_of(&body).to_string().contains("without a Block"));
    }
}
