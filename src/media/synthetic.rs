//! Synthetic Matroska pieces for the media tests: small, hand-checkable streams in the
//! shape the Kinesis Video producer writes (unknown-size Segment and Clusters). Test
//! code only; built with the encoder of [`super::ebml`].

use super::ebml::{self, ids as ebml_ids};
use super::mkv::{TRACK_TYPE_VIDEO, ids};

pub fn ebml_header(doc_type: &str) -> Vec<u8> {
    let mut payload = Vec::new();
    ebml::write_uint_element(&mut payload, ebml_ids::EBML_VERSION, 1);
    ebml::write_uint_element(&mut payload, ebml_ids::EBML_READ_VERSION, 1);
    ebml::write_uint_element(&mut payload, ebml_ids::EBML_MAX_ID_LENGTH, 4);
    ebml::write_uint_element(&mut payload, ebml_ids::EBML_MAX_SIZE_LENGTH, 8);
    ebml::write_string_element(&mut payload, ebml_ids::DOC_TYPE, doc_type);
    ebml::write_uint_element(&mut payload, ebml_ids::DOC_TYPE_VERSION, 2);
    ebml::write_uint_element(&mut payload, ebml_ids::DOC_TYPE_READ_VERSION, 2);
    let mut out = Vec::new();
    ebml::write_element(&mut out, ebml_ids::EBML, &payload);
    out
}

pub fn segment_unknown() -> Vec<u8> {
    vec![0x18, 0x53, 0x80, 0x67, 0xFF]
}

pub fn info(timecode_scale: u64) -> Vec<u8> {
    let mut payload = Vec::new();
    ebml::write_uint_element(&mut payload, ids::TIMECODE_SCALE, timecode_scale);
    ebml::write_string_element(&mut payload, ids::TITLE, "synthetic");
    let mut out = Vec::new();
    ebml::write_element(&mut out, ids::INFO, &payload);
    out
}

/// Tracks with one H.264 video TrackEntry per number.
pub fn tracks(numbers: &[u64]) -> Vec<u8> {
    let mut payload = Vec::new();
    for &number in numbers {
        let mut video = Vec::new();
        ebml::write_uint_element(&mut video, ids::PIXEL_WIDTH, 320);
        ebml::write_uint_element(&mut video, ids::PIXEL_HEIGHT, 240);
        let mut entry = Vec::new();
        ebml::write_uint_element(&mut entry, ids::TRACK_NUMBER, number);
        ebml::write_uint_element(&mut entry, ids::TRACK_UID, number);
        ebml::write_uint_element(&mut entry, ids::TRACK_TYPE, TRACK_TYPE_VIDEO);
        ebml::write_string_element(&mut entry, ids::CODEC_ID, "V_MPEG4/ISO/AVC");
        ebml::write_element(&mut entry, ids::CODEC_PRIVATE, &[1, 2, 3]);
        ebml::write_element(&mut entry, ids::VIDEO, &video);
        ebml::write_element(&mut payload, ids::TRACK_ENTRY, &entry);
    }
    let mut out = Vec::new();
    ebml::write_element(&mut out, ids::TRACKS, &payload);
    out
}

/// EBML header, unknown-size Segment, Info (ms timecodes) and Tracks.
pub fn stream_header(track_numbers: &[u64]) -> Vec<u8> {
    let mut out = ebml_header("matroska");
    out.extend(segment_unknown());
    out.extend(info(1_000_000));
    out.extend(tracks(track_numbers));
    out
}

/// A TrackEntry: H.264 video (TrackType 1) or AAC audio (2, 48 kHz), with an optional
/// DefaultDuration in nanoseconds.
pub fn track_entry(number: u64, track_type: u64, default_duration_ns: Option<u64>) -> Vec<u8> {
    let mut entry = Vec::new();
    ebml::write_uint_element(&mut entry, ids::TRACK_NUMBER, number);
    ebml::write_uint_element(&mut entry, ids::TRACK_UID, number);
    ebml::write_uint_element(&mut entry, ids::TRACK_TYPE, track_type);
    if track_type == TRACK_TYPE_VIDEO {
        ebml::write_string_element(&mut entry, ids::CODEC_ID, "V_MPEG4/ISO/AVC");
    } else {
        ebml::write_string_element(&mut entry, ids::CODEC_ID, "A_AAC");
        let mut audio = Vec::new();
        ebml::write_float_element(&mut audio, ids::SAMPLING_FREQUENCY, 48_000.0);
        ebml::write_uint_element(&mut audio, ids::CHANNELS, 2);
        ebml::write_element(&mut entry, ids::AUDIO, &audio);
    }
    if let Some(duration) = default_duration_ns {
        ebml::write_uint_element(&mut entry, ids::DEFAULT_DURATION, duration);
    }
    let mut out = Vec::new();
    ebml::write_element(&mut out, ids::TRACK_ENTRY, &entry);
    out
}

/// EBML header, unknown-size Segment, Info (ms timecodes) and Tracks of these
/// TrackEntries ([`track_entry`]).
pub fn stream_header_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = ebml_header("matroska");
    out.extend(segment_unknown());
    out.extend(info(1_000_000));
    let mut out_tracks = Vec::new();
    ebml::write_element(&mut out_tracks, ids::TRACKS, &entries.concat());
    out.extend(out_tracks);
    out
}

fn block_payload(track: u64, relative_timecode: i16, flags: u8, len: usize) -> Vec<u8> {
    let mut payload = Vec::new();
    ebml::write_size(&mut payload, track).expect("small track number");
    payload.extend(relative_timecode.to_be_bytes());
    payload.push(flags);
    payload.extend(std::iter::repeat_n(0xAB, len));
    payload
}

/// A SimpleBlock with `len` bytes of frame data (all 0xAB).
pub fn block(track: u64, relative_timecode: i16, keyframe: bool, len: usize) -> Vec<u8> {
    let flags = if keyframe { 0x80 } else { 0 };
    let mut out = Vec::new();
    ebml::write_element(
        &mut out,
        ids::SIMPLE_BLOCK,
        &block_payload(track, relative_timecode, flags, len),
    );
    out
}

/// A BlockGroup; `reference` adds a ReferenceBlock (a delta frame), `duration` a
/// BlockDuration (TimecodeScale units).
pub fn block_group(
    track: u64,
    relative_timecode: i16,
    reference: Option<i64>,
    duration: Option<u64>,
    len: usize,
) -> Vec<u8> {
    let mut payload = Vec::new();
    ebml::write_element(
        &mut payload,
        ids::BLOCK,
        &block_payload(track, relative_timecode, 0, len),
    );
    if let Some(duration) = duration {
        ebml::write_uint_element(&mut payload, ids::BLOCK_DURATION, duration);
    }
    if let Some(reference) = reference {
        ebml::write_int_element(&mut payload, ids::REFERENCE_BLOCK, reference);
    }
    let mut out = Vec::new();
    ebml::write_element(&mut out, ids::BLOCK_GROUP, &payload);
    out
}

fn cluster_payload(timecode: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut payload = Vec::new();
    ebml::write_uint_element(&mut payload, ids::TIMECODE, timecode);
    for block in blocks {
        payload.extend(block);
    }
    payload
}

/// An unknown-size Cluster, as the producer sends them.
pub fn cluster(timecode: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0x1F, 0x43, 0xB6, 0x75, 0xFF];
    out.extend(cluster_payload(timecode, blocks));
    out
}

/// A Cluster with its size in the shortest form.
pub fn cluster_known(timecode: u64, blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    ebml::write_element(&mut out, ids::CLUSTER, &cluster_payload(timecode, blocks));
    out
}

/// A Tags element with one Tag holding one SimpleTag per pair.
pub fn tags(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut tag = Vec::new();
    for (name, value) in pairs {
        let mut simple = Vec::new();
        ebml::write_string_element(&mut simple, ids::TAG_NAME, name);
        ebml::write_string_element(&mut simple, ids::TAG_STRING, value);
        ebml::write_element(&mut tag, ids::SIMPLE_TAG, &simple);
    }
    let mut tags = Vec::new();
    ebml::write_element(&mut tags, ids::TAG, &tag);
    let mut out = Vec::new();
    ebml::write_element(&mut out, ids::TAGS, &tags);
    out
}

/// A small complete PutMedia-shaped body: header, three fragments of a few frames, and
/// the producer's end-of-fragment Tags.
pub fn small_body() -> Vec<u8> {
    let mut body = stream_header(&[1]);
    for (i, timecode) in [1000u64, 2000, 3000].into_iter().enumerate() {
        let blocks: Vec<Vec<u8>> = (0..4)
            .map(|n| block(1, n * 250, n == 0, 3 + i + n as usize))
            .collect();
        body.extend(cluster(timecode, &blocks));
    }
    body.extend(tags(&[(super::mkv::kvs_tags::END_OF_FRAGMENT, "")]));
    body
}
