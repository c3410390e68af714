//! Builds GetMedia output: one complete Matroska document per fragment, in the shape
//! of a real AWS response (`tests/fixtures/kvs/output_get_media.mkv` and
//! `test_mixed_tags.mkv`):
//!
//! ```text
//! EBML header                 the producer's, or DocType matroska (v4, read v2)
//! Segment (unknown size)      18 53 80 67 01 FF FF FF FF FF FF FF
//! ├─ Info, Tracks             the producer's bytes, verbatim
//! ├─ Tags                     AWS_KINESISVIDEO_FRAGMENT_NUMBER
//! │                           AWS_KINESISVIDEO_SERVER_TIMESTAMP   "1511852109.126"
//! │                           AWS_KINESISVIDEO_PRODUCER_TIMESTAMP "1511852108.513"
//! ├─ Cluster                  the stored fragment, verbatim
//! ├─ Tags ...                 the producer's own tags, one Tags element each
//! └─ Tags                     AWS_KINESISVIDEO_MILLIS_BEHIND_NOW
//!                             AWS_KINESISVIDEO_CONTINUATION_TOKEN (fragment number)
//! ```
//!
//! and the error trailer that ends a failed GetMedia: Tags with
//! `AWS_KINESISVIDEO_ERROR_CODE` and `AWS_KINESISVIDEO_ERROR_ID`.
//!
//! Encodings copy what AWS sends byte for byte: its own Tags use 4-byte sizes at every
//! level and no Targets; producer tags are written as the Kinesis Video producer SDK
//! writes them (8-byte sizes). Producer tags are those whose names do not start with
//! `AWS_KINESISVIDEO`; others handed in are dropped.
//!
//! Follows RFC 9559 (Matroska) over RFC 8794 (EBML) and the Kinesis Video conventions
//! in `PROTOCOLS.md`. Pure encoding into `Vec<u8>`: this module never does I/O and
//! never fails (sizes that do not fit the usual width get a wider one).

use super::ebml::{self, ids as ebml_ids};
use super::mkv::{ids, kvs_tags};

/// Size width of the Tags that AWS itself writes.
const AWS_TAG_SIZE_LEN: usize = 4;
/// Size width of producer tags (as the producer SDK writes them).
const PRODUCER_TAG_SIZE_LEN: usize = 8;

/// The Segment header of every document: unknown size in the 8-byte form.
pub const SEGMENT_UNKNOWN_SIZE_HEADER: [u8; 12] = [
    0x18, 0x53, 0x80, 0x67, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
];

/// The EBML header used when the producer's is not at hand: identical to the one in
/// `output_get_media.mkv` (8-byte size; DocType matroska, DocTypeVersion 4,
/// DocTypeReadVersion 2).
pub fn default_ebml_header() -> Vec<u8> {
    let mut payload = Vec::new();
    ebml::write_uint_element(&mut payload, ebml_ids::EBML_VERSION, 1);
    ebml::write_uint_element(&mut payload, ebml_ids::EBML_READ_VERSION, 1);
    ebml::write_uint_element(&mut payload, ebml_ids::EBML_MAX_ID_LENGTH, 4);
    ebml::write_uint_element(&mut payload, ebml_ids::EBML_MAX_SIZE_LENGTH, 8);
    ebml::write_string_element(&mut payload, ebml_ids::DOC_TYPE, "matroska");
    ebml::write_uint_element(&mut payload, ebml_ids::DOC_TYPE_VERSION, 4);
    ebml::write_uint_element(&mut payload, ebml_ids::DOC_TYPE_READ_VERSION, 2);
    let mut out = Vec::new();
    write_sized(&mut out, ebml_ids::EBML, &payload, 8);
    out
}

/// Milliseconds since the Unix epoch as Kinesis Video's decimal seconds string:
/// `1511852109126` -> `"1511852109.126"`, `5000` -> `"5.000"`.
pub fn format_timestamp_ms(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// One GetMedia document around a stored fragment. Write [`Self::write_head`], then
/// the fragment's Cluster bytes, then [`Self::write_tail`] (or use [`Self::encode`]),
/// so a server can stream the Cluster from storage without copying it.
#[derive(Debug, Clone, Copy)]
pub struct FragmentDocument<'a> {
    /// The producer's EBML header element; `None` writes [`default_ebml_header`].
    pub ebml_header: Option<&'a [u8]>,
    /// The producer's Info and Tracks elements
    /// ([`super::mkv::StreamHeader::info_and_tracks_bytes`]).
    pub info_and_tracks: &'a [u8],
    /// Decimal digits, at most 128.
    pub fragment_number: &'a str,
    pub server_timestamp_ms: u64,
    pub producer_timestamp_ms: u64,
    /// Tags the producer sent with this fragment; AWS_KINESISVIDEO ones are dropped.
    pub producer_tags: &'a [(String, String)],
    pub millis_behind_now: u64,
    /// Where a new GetMedia would resume: this fragment's number.
    pub continuation_token: &'a str,
}

impl FragmentDocument<'_> {
    /// Everything before the Cluster.
    pub fn write_head(&self, out: &mut Vec<u8>) {
        match self.ebml_header {
            Some(header) => out.extend_from_slice(header),
            None => out.extend_from_slice(&default_ebml_header()),
        }
        out.extend_from_slice(&SEGMENT_UNKNOWN_SIZE_HEADER);
        out.extend_from_slice(self.info_and_tracks);
        write_tags(
            out,
            &[
                (kvs_tags::FRAGMENT_NUMBER, self.fragment_number),
                (
                    kvs_tags::SERVER_TIMESTAMP,
                    &format_timestamp_ms(self.server_timestamp_ms),
                ),
                (
                    kvs_tags::PRODUCER_TIMESTAMP,
                    &format_timestamp_ms(self.producer_timestamp_ms),
                ),
            ],
            AWS_TAG_SIZE_LEN,
        );
    }

    /// Everything after the Cluster.
    pub fn write_tail(&self, out: &mut Vec<u8>) {
        for (name, value) in self.producer_tags {
            if !kvs_tags::is_kvs_tag(name) {
                write_tags(out, &[(name, value)], PRODUCER_TAG_SIZE_LEN);
            }
        }
        write_tags(
            out,
            &[
                (
                    kvs_tags::MILLIS_BEHIND_NOW,
                    &self.millis_behind_now.to_string(),
                ),
                (kvs_tags::CONTINUATION_TOKEN, self.continuation_token),
            ],
            AWS_TAG_SIZE_LEN,
        );
    }

    /// The whole document around `cluster` (raw Cluster element bytes).
    pub fn encode(&self, cluster: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(cluster.len() + self.info_and_tracks.len() + 512);
        self.write_head(&mut out);
        out.extend_from_slice(cluster);
        self.write_tail(&mut out);
        out
    }
}

/// Appends the Tags that end a failed GetMedia: `AWS_KINESISVIDEO_ERROR_CODE` (a
/// description) and `AWS_KINESISVIDEO_ERROR_ID` (e.g. 4000 fragment not found, 5000
/// internal error). Written after the last complete document.
pub fn write_error_tags(out: &mut Vec<u8>, error_code: &str, error_id: u32) {
    write_tags(
        out,
        &[
            (kvs_tags::ERROR_CODE, error_code),
            (kvs_tags::ERROR_ID, &error_id.to_string()),
        ],
        AWS_TAG_SIZE_LEN,
    );
}

/// Appends `Tags { Tag { SimpleTag { TagName, TagString } ... } }` with every size in
/// `size_len` bytes.
pub fn write_tags(out: &mut Vec<u8>, pairs: &[(&str, &str)], size_len: usize) {
    let mut tag = Vec::new();
    for (name, value) in pairs {
        let mut simple = Vec::new();
        write_sized(&mut simple, ids::TAG_NAME, name.as_bytes(), size_len);
        write_sized(&mut simple, ids::TAG_STRING, value.as_bytes(), size_len);
        write_sized(&mut tag, ids::SIMPLE_TAG, &simple, size_len);
    }
    let mut tags = Vec::new();
    write_sized(&mut tags, ids::TAG, &tag, size_len);
    write_sized(out, ids::TAGS, &tags, size_len);
}

/// Writes an element with its size in `size_len` bytes, or 8 if it does not fit.
fn write_sized(out: &mut Vec<u8>, id: u32, payload: &[u8], size_len: usize) {
    let len = if ebml::size_len(payload.len() as u64) <= size_len {
        size_len
    } else {
        ebml::MAX_SIZE_LEN
    };
    ebml::write_id(out, id);
    // A payload in memory is far below 2^56 bytes.
    let _ = ebml::write_size_fixed(out, payload.len() as u64, len);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::mkv::{Limits, MkvEvent, MkvReader};
    use crate::media::synthetic;

    #[test]
    fn timestamps_are_decimal_seconds_with_milliseconds() {
        assert_eq!(format_timestamp_ms(1_511_852_109_126), "1511852109.126");
        assert_eq!(format_timestamp_ms(5000), "5.000");
        assert_eq!(format_timestamp_ms(7), "0.007");
    }

    #[test]
    fn aws_tags_use_four_byte_sizes() {
        let mut out = Vec::new();
        write_error_tags(&mut out, "FRAGMENT_NOT_FOUND", 4000);
        assert_eq!(out[..8], [0x12, 0x54, 0xC3, 0x67, 0x10, 0, 0, out[7]]);
        let events = {
            let mut body = synthetic::stream_header(&[1]);
            body.extend(&out);
            MkvReader::new(Limits::default())
                .read_to_end(&body)
                .unwrap()
        };
        assert_eq!(
            events,
            vec![MkvEvent::Tags(vec![
                (kvs_tags::ERROR_CODE.into(), "FRAGMENT_NOT_FOUND".into()),
                (kvs_tags::ERROR_ID.into(), "4000".into()),
            ])]
        );
    }

    #[test]
    fn oversized_values_fall_back_to_eight_byte_sizes() {
        let mut out = Vec::new();
        write_sized(&mut out, ids::TAG_STRING, &vec![b'x'; 1 << 28], 4);
        assert_eq!(out[2], 0x01);
        assert_eq!(out.len(), 2 + 8 + (1 << 28));
    }

    #[test]
    fn documents_read_back_with_the_reader() {
        let body = synthetic::small_body();
        let events = MkvReader::new(Limits::default())
            .read_to_end(&body)
            .unwrap();
        let MkvEvent::Header(header) = &events[0] else {
            panic!()
        };
        let producer_tags = vec![
            ("CAMERA".to_string(), "front door".to_string()),
            (kvs_tags::END_OF_FRAGMENT.to_string(), String::new()),
        ];
        let mut output = Vec::new();
        let mut number = 0u64;
        for event in &events {
            if let MkvEvent::FragmentEnd(fragment) = event {
                number += 1;
                let fragment_number =
                    format!("9134385233318143239268206260774392014615916939{number}");
                let document = FragmentDocument {
                    ebml_header: Some(&header.ebml_header_bytes),
                    info_and_tracks: &header.info_and_tracks_bytes,
                    fragment_number: &fragment_number,
                    server_timestamp_ms: 1_511_852_109_126 + number,
                    producer_timestamp_ms: fragment.cluster_timecode,
                    producer_tags: &producer_tags,
                    millis_behind_now: 15858,
                    continuation_token: &fragment_number,
                };
                output.extend(document.encode(&fragment.raw_cluster_bytes));
            }
        }
        let reread = MkvReader::for_document_sequence(Limits::default())
            .read_to_end(&output)
            .unwrap();
        let original_frames: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, MkvEvent::Frame(_)))
            .collect();
        let reread_frames: Vec<_> = reread
            .iter()
            .filter(|e| matches!(e, MkvEvent::Frame(_)))
            .collect();
        assert_eq!(original_frames, reread_frames);
        let tag_names: Vec<Vec<String>> = reread
            .iter()
            .filter_map(|e| match e {
                MkvEvent::Tags(tags) => Some(tags.iter().map(|(n, _)| n.clone()).collect()),
                _ => None,
            })
            .collect();
        assert_eq!(tag_names.len(), 9);
        assert_eq!(
            tag_names[..3],
            [
                vec![
                    kvs_tags::FRAGMENT_NUMBER.to_string(),
                    kvs_tags::SERVER_TIMESTAMP.to_string(),
                    kvs_tags::PRODUCER_TIMESTAMP.to_string()
                ],
                vec!["CAMERA".to_string()],
                vec![
                    kvs_tags::MILLIS_BEHIND_NOW.to_string(),
                    kvs_tags::CONTINUATION_TOKEN.to_string()
                ],
            ]
        );
    }
}
