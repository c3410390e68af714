//! Tests of the reader and the writer against real Kinesis Video captures
//! (`tests/fixtures/kvs/`), malformed-input tests and property tests.
//!
//! Expected numbers were measured with ffprobe/mkvinfo (Debian 12: ffmpeg 5.1,
//! mkvtoolnix 74) on the fixtures; each block says which command.

use super::ebml;
use super::mkv::{
    Fragment, Frame, Limits, MkvError, MkvEvent, MkvReader, StreamHeader, ids, kvs_tags,
};
use super::mkv_writer::{self, FragmentDocument};
use super::synthetic;
use proptest::prelude::*;

/// The exact body the kvssink producer sent on PutMedia.
const PUTMEDIA_BODY: &[u8] = include_bytes!("../../tests/fixtures/kvs/putmedia_body.mkv");
/// A real GetMedia response from AWS (5 fragments, ffmpeg-made source).
const GET_MEDIA_OUTPUT: &[u8] = include_bytes!("../../tests/fixtures/kvs/output_get_media.mkv");
/// A real GetMedia response for a producer that sends its own tags (10 fragments).
const MIXED_TAGS: &[u8] = include_bytes!("../../tests/fixtures/kvs/test_mixed_tags.mkv");

fn read_one(bytes: &[u8]) -> Result<Vec<MkvEvent>, MkvError> {
    MkvReader::new(Limits::default()).read_to_end(bytes)
}

fn read_sequence(bytes: &[u8]) -> Result<Vec<MkvEvent>, MkvError> {
    MkvReader::for_document_sequence(Limits::default()).read_to_end(bytes)
}

/// Feeds `bytes` in the given chunk sizes (cycled), then finishes.
fn read_chunked(
    reader: MkvReader,
    bytes: &[u8],
    sizes: &[usize],
) -> Result<Vec<MkvEvent>, MkvError> {
    let mut reader = reader;
    let mut events = Vec::new();
    let mut rest = bytes;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(size.clamp(1, rest.len()));
        reader.feed(now, &mut events)?;
        rest = later;
    }
    reader.finish(&mut events)?;
    Ok(events)
}

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn headers(events: &[MkvEvent]) -> Vec<&StreamHeader> {
    events
        .iter()
        .filter_map(|e| match e {
            MkvEvent::Header(h) => Some(h),
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

fn frames(events: &[MkvEvent]) -> Vec<Frame> {
    events
        .iter()
        .filter_map(|e| match e {
            MkvEvent::Frame(f) => Some(*f),
            _ => None,
        })
        .collect()
}

fn tags(events: &[MkvEvent]) -> Vec<&Vec<(String, String)>> {
    events
        .iter()
        .filter_map(|e| match e {
            MkvEvent::Tags(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn tag_value<'a>(tags: &'a [(String, String)], name: &str) -> Option<&'a str> {
    tags.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// "1537574915.478" -> 1537574915478.
fn parse_timestamp_ms(text: &str) -> u64 {
    let (seconds, millis) = text.split_once('.').expect("seconds.millis");
    seconds.parse::<u64>().unwrap() * 1000 + millis.parse::<u64>().unwrap()
}

/// A small element walker, independent of the reader: (id, offset) of every element
/// at document or Segment-child level, descending into unknown-size Segments and
/// Clusters (an unknown-size Cluster's children are not listed).
fn top_level(bytes: &[u8]) -> Vec<(u32, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut in_unknown_cluster = false;
    while pos < bytes.len() {
        let header = ebml::read_header(&bytes[pos..]).unwrap().unwrap();
        let ends_cluster = matches!(
            header.id,
            ebml::ids::EBML
                | ids::SEGMENT
                | ids::SEEK_HEAD
                | ids::INFO
                | ids::TRACKS
                | ids::CUES
                | ids::TAGS
                | ids::CLUSTER
        );
        if in_unknown_cluster && !ends_cluster {
            let ebml::ElementSize::Known(size) = header.size else {
                panic!("unknown size inside a cluster")
            };
            pos += header.header_len + size as usize;
            continue;
        }
        out.push((header.id, pos));
        match header.size {
            ebml::ElementSize::Unknown => {
                in_unknown_cluster = header.id == ids::CLUSTER;
                pos += header.header_len;
            }
            ebml::ElementSize::Known(size) => {
                in_unknown_cluster = false;
                pos += header.header_len + size as usize;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// putmedia_body.mkv: the kvssink producer's PutMedia body
// ---------------------------------------------------------------------------------

/// Cluster timecodes (ms) of the three fragments, and the first and last frame of each.
/// Measured with
/// `ffprobe -v error -select_streams v:0 -show_entries packet=pts,flags,size -of csv putmedia_body.mkv`:
/// 90 packets, key frames (`K_`) at exactly these three pts, last pts 1795303764908,
/// packet sizes summing to 604900 bytes.
const PUTMEDIA_CLUSTERS: [(u64, u64); 3] = [
    (1_795_303_761_941, 1_795_303_762_908),
    (1_795_303_762_941, 1_795_303_763_908),
    (1_795_303_763_941, 1_795_303_764_908),
];

#[test]
fn putmedia_body_header_matches_ffprobe() {
    let events = read_one(PUTMEDIA_BODY).unwrap();
    let headers = headers(&events);
    assert_eq!(headers.len(), 1);
    let header = headers[0];
    assert_eq!(header.doc_type, "matroska");
    // `mkvinfo putmedia_body.mkv`: "Timestamp scale: 1000000", one track: number 1,
    // UID 1, video, "V_MPEG4/ISO/AVC", 320x240, "Codec's private data: size 46".
    // `ffprobe -show_streams`: h264 High 4:4:4 Predictive, 320x240, extradata_size=46.
    assert_eq!(header.timecode_scale, 1_000_000);
    assert_eq!(header.tracks.len(), 1);
    let track = &header.tracks[0];
    assert_eq!((track.number, track.uid, track.track_type), (1, 1, 1));
    assert_eq!(track.codec_id, "V_MPEG4/ISO/AVC");
    assert_eq!(track.codec_private.len(), 46);
    assert_eq!(
        track.codec_private[0], 1,
        "AVCDecoderConfigurationRecord version"
    );
    assert_eq!(track.name.as_deref(), Some("kinesis_video"));
    let video = track.video.unwrap();
    assert_eq!((video.pixel_width, video.pixel_height), (320, 240));
    // `mkvinfo -v -v`: EBML head at 0 (40 bytes), Info at 45, Tracks at 154, first
    // Cluster at 279.
    assert_eq!(header.ebml_header_bytes, PUTMEDIA_BODY[..40]);
    assert_eq!(header.info_and_tracks_bytes, PUTMEDIA_BODY[45..279]);
}

#[test]
fn putmedia_body_fragments_match_ffprobe() {
    let events = read_one(PUTMEDIA_BODY).unwrap();
    let fragments = fragments(&events);
    assert_eq!(fragments.len(), 3);
    for (fragment, &(cluster_timecode, last)) in fragments.iter().zip(&PUTMEDIA_CLUSTERS) {
        assert_eq!(fragment.cluster_timecode, cluster_timecode);
        assert_eq!(fragment.first_timecode, cluster_timecode);
        assert_eq!(fragment.last_timecode, last);
        assert_eq!(fragment.span(), last - cluster_timecode);
        // 30 frames 33/34 ms apart and no DefaultDuration: one second, the last frame
        // included (its mean spacing, 967 ms / 29), so the three fragments tile.
        assert_eq!((fragment.duration_ns(&[]) + 500_000) / 1_000_000, 1000);
        assert_eq!(fragment.frame_count, 30);
        assert!(fragment.has_keyframe_first);
    }
    let frames = frames(&events);
    assert_eq!(frames.len(), 90);
    assert_eq!(frames.iter().map(|f| f.data_len).sum::<usize>(), 604_900);
    let keyframes: Vec<u64> = frames
        .iter()
        .filter(|f| f.keyframe)
        .map(|f| f.timecode)
        .collect();
    assert_eq!(keyframes, PUTMEDIA_CLUSTERS.map(|(tc, _)| tc));
    assert!(frames.iter().all(|f| f.track == 1 && !f.laced));
    assert!(frames.windows(2).all(|w| w[0].timecode < w[1].timecode));
    // FragmentStart comes for each fragment before its frames, in order.
    let starts: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            MkvEvent::FragmentStart { cluster_timecode } => Some(*cluster_timecode),
            _ => None,
        })
        .collect();
    assert_eq!(starts, PUTMEDIA_CLUSTERS.map(|(tc, _)| tc));
}

#[test]
fn putmedia_body_ends_with_end_of_fragment_tags() {
    let events = read_one(PUTMEDIA_BODY).unwrap();
    let n = events.len();
    // `mkvinfo -v -v`: Tags at 606403 with one SimpleTag AWS_KINESISVIDEO_END_OF_FRAGMENT
    // and an empty string; the last Cluster ends there.
    assert!(matches!(events[n - 3], MkvEvent::FragmentEnd(_)));
    assert_eq!(
        events[n - 2],
        MkvEvent::Tags(vec![(kvs_tags::END_OF_FRAGMENT.into(), String::new())])
    );
    assert_eq!(events[n - 1], MkvEvent::EndOfFragment);

    // The last fragment is complete as soon as the Tags header (4-byte ID, 8-byte
    // size) has arrived: the producer waits for its PERSISTED ack.
    let mut reader = MkvReader::new(Limits::default());
    let mut events = Vec::new();
    reader
        .feed(&PUTMEDIA_BODY[..606_403 + 11], &mut events)
        .unwrap();
    assert_eq!(fragments(&events).len(), 2);
    reader
        .feed(&PUTMEDIA_BODY[606_403 + 11..606_403 + 12], &mut events)
        .unwrap();
    assert_eq!(fragments(&events).len(), 3);
}

#[test]
fn putmedia_fragments_keep_the_original_cluster_bytes() {
    let events = read_one(PUTMEDIA_BODY).unwrap();
    // `mkvinfo -v -v putmedia_body.mkv`: unknown-size Clusters at 279, 186932 and
    // 392737 (5-byte headers), Tags at 606403.
    let children = [(284, 186_932), (186_937, 392_737), (392_742, 606_403)];
    for (fragment, (start, end)) in fragments(&events).iter().zip(children) {
        let raw = &fragment.raw_cluster_bytes;
        assert_eq!(
            raw[..5],
            [0x1F, 0x43, 0xB6, 0x75, 0x01],
            "8-byte known size"
        );
        assert_eq!(raw[12..], PUTMEDIA_BODY[start..end]);
        let reparsed = ebml::read_header(raw).unwrap().unwrap();
        assert_eq!(
            reparsed.size,
            ebml::ElementSize::Known((end - start) as u64)
        );
    }
    // First frame: "Frame with size 5810 at 310" in the first Cluster.
    let first = frames(&events)[0];
    let first_cluster = &fragments(&events)[0].raw_cluster_bytes;
    assert_eq!(first.data_len, 5810);
    assert_eq!(
        first_cluster[first.data_offset..first.data_offset + first.data_len],
        PUTMEDIA_BODY[310..310 + 5810]
    );
}

#[test]
fn putmedia_body_in_any_chunking_gives_identical_events() {
    let whole = read_one(PUTMEDIA_BODY).unwrap();
    let byte_by_byte =
        read_chunked(MkvReader::new(Limits::default()), PUTMEDIA_BODY, &[1]).unwrap();
    assert_eq!(byte_by_byte, whole);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..12 {
        let max = [2, 17, 4096, 70_000][rng.below(4)];
        let sizes: Vec<usize> = (0..64).map(|_| 1 + rng.below(max)).collect();
        let chunked =
            read_chunked(MkvReader::new(Limits::default()), PUTMEDIA_BODY, &sizes).unwrap();
        assert_eq!(chunked, whole, "chunk sizes {sizes:?}");
    }
}

#[test]
fn putmedia_body_memory_stays_within_one_fragment() {
    let limits = Limits::default();
    let mut reader = MkvReader::new(limits.clone());
    let mut events = Vec::new();
    let mut peak = 0;
    for chunk in PUTMEDIA_BODY.chunks(1500) {
        reader.feed(chunk, &mut events).unwrap();
        peak = peak.max(reader.buffered_bytes());
    }
    // The largest Cluster has 213661 bytes of children; capacity may double once.
    assert!(peak < 2 * 213_661 + 64 * 1024, "peak {peak}");
    assert!(peak <= limits.memory_bound());
}

// ---------------------------------------------------------------------------------
// output_get_media.mkv: real GetMedia output
// ---------------------------------------------------------------------------------

#[test]
fn get_media_output_is_a_sequence_of_documents() {
    // A PutMedia reader refuses the second document.
    let err = read_one(GET_MEDIA_OUTPUT).unwrap_err();
    assert_eq!(err.error_id(), 4006);
    assert!(err.to_string().contains("second EBML header"), "{err}");

    let events = read_sequence(GET_MEDIA_OUTPUT).unwrap();
    let headers = headers(&events);
    assert_eq!(headers.len(), 5);
    // `ffprobe -show_streams output_get_media.mkv`: h264 640x360, extradata_size=54.
    for header in &headers {
        let track = &header.tracks[0];
        assert_eq!(track.codec_id, "V_MPEG4/ISO/AVC");
        assert_eq!(track.codec_private.len(), 54);
        let video = track.video.unwrap();
        assert_eq!((video.pixel_width, video.pixel_height), (640, 360));
        assert_eq!(track.default_duration_ns, Some(33_333_333));
    }
    // `ffprobe -show_entries packet=pts,flags -of csv output_get_media.mkv`: 300
    // packets; key frames only at 0, 2000, 4000, 6000, 8000; 60 packets per 2 s, the
    // last of each at 1967, 3967, ... (Cluster Timecodes restart per document: these
    // are RELATIVE timecodes).
    let fragments = fragments(&events);
    assert_eq!(fragments.len(), 5);
    for (i, fragment) in fragments.iter().enumerate() {
        let start = 2000 * i as u64;
        assert_eq!(fragment.cluster_timecode, start);
        assert_eq!(fragment.first_timecode, start);
        assert_eq!(fragment.last_timecode, start + 1967);
        // 60 frames of the DefaultDuration (1/30 s) up to 1967 ms: 2 s.
        assert_eq!(fragment.duration_ns(&[]), 1_999_999_980);
        assert_eq!(fragment.frame_count, 60);
        assert!(fragment.has_keyframe_first);
    }
    let frames = frames(&events);
    assert_eq!(frames.len(), 300);
    assert_eq!(frames.iter().filter(|f| f.keyframe).count(), 5);

    // Each document: producer Tags (from the ffmpeg source), AWS head Tags, Cluster,
    // AWS tail Tags. Values from the fixture (`mkvinfo -v -v`).
    let tags = tags(&events);
    assert_eq!(tags.len(), 15);
    let fragment_numbers: Vec<&str> = tags
        .iter()
        .filter_map(|t| tag_value(t, kvs_tags::FRAGMENT_NUMBER))
        .collect();
    assert_eq!(
        fragment_numbers[0],
        "91343852333181432392682062607743920146159169392"
    );
    assert_eq!(fragment_numbers.len(), 5);
    let continuation: Vec<&str> = tags
        .iter()
        .filter_map(|t| tag_value(t, kvs_tags::CONTINUATION_TOKEN))
        .collect();
    assert_eq!(
        continuation, fragment_numbers,
        "the token is the fragment's number"
    );
    assert_eq!(
        tag_value(tags[1], kvs_tags::SERVER_TIMESTAMP),
        Some("1511852109.126")
    );
    assert_eq!(
        tag_value(tags[1], kvs_tags::PRODUCER_TIMESTAMP),
        Some("1511852108.513")
    );
    assert_eq!(
        tag_value(tags[2], kvs_tags::MILLIS_BEHIND_NOW),
        Some("15858")
    );
    assert_eq!(
        tag_value(tags[0], "DURATION"),
        Some("00:00:10.000000000"),
        "zero padding dropped"
    );
}

#[test]
fn writer_output_has_the_shape_of_real_get_media_output() {
    let events = read_sequence(GET_MEDIA_OUTPUT).unwrap();
    let header = headers(&events)[0];
    let fragment = fragments(&events)[0];
    let tags = tags(&events);
    let document = FragmentDocument {
        ebml_header: None,
        info_and_tracks: &header.info_and_tracks_bytes,
        fragment_number: tag_value(tags[1], kvs_tags::FRAGMENT_NUMBER).unwrap(),
        server_timestamp_ms: parse_timestamp_ms(
            tag_value(tags[1], kvs_tags::SERVER_TIMESTAMP).unwrap(),
        ),
        producer_timestamp_ms: parse_timestamp_ms(
            tag_value(tags[1], kvs_tags::PRODUCER_TIMESTAMP).unwrap(),
        ),
        producer_tags: &[],
        millis_behind_now: tag_value(tags[2], kvs_tags::MILLIS_BEHIND_NOW)
            .unwrap()
            .parse()
            .unwrap(),
        continuation_token: tag_value(tags[2], kvs_tags::CONTINUATION_TOKEN).unwrap(),
    };
    let ours = document.encode(&fragment.raw_cluster_bytes);

    // `mkvinfo -v -v output_get_media.mkv` / the top-level walk: EBML 0, Segment 47,
    // SeekHead 59, Void 131, Info 288, Tracks 375, Tags 551 (producer), Tags 916 (AWS
    // head), Cluster 1159, Tags 547754 (AWS tail), then the next EBML header at 547925.
    let theirs: Vec<(u32, usize)> = top_level(GET_MEDIA_OUTPUT)
        .into_iter()
        .take_while(|&(_, offset)| offset < 547_925)
        .collect();
    assert_eq!(theirs.len(), 10);
    // We do not re-emit SeekHead/Void (their positions would be wrong) and put producer
    // tags after the Cluster; the producer's Tags here came before its first Cluster.
    let theirs_kept: Vec<u32> = theirs
        .iter()
        .filter(|&&(id, offset)| {
            let producer_tags = id == ids::TAGS && offset == 551;
            !(matches!(id, ids::SEEK_HEAD | ebml::ids::VOID) || producer_tags)
        })
        .map(|&(id, _)| id)
        .collect();
    let ours_ids: Vec<u32> = top_level(&ours).into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ours_ids,
        [
            ebml::ids::EBML,
            ids::SEGMENT,
            ids::INFO,
            ids::TRACKS,
            ids::TAGS,
            ids::CLUSTER,
            ids::TAGS
        ]
    );
    assert_eq!(ours_ids, theirs_kept);

    // Byte for byte: the default EBML header and Segment header are AWS's, and so are
    // the AWS Tags (4-byte sizes, no Targets).
    assert_eq!(mkv_writer::default_ebml_header(), GET_MEDIA_OUTPUT[..47]);
    assert_eq!(
        mkv_writer::SEGMENT_UNKNOWN_SIZE_HEADER,
        GET_MEDIA_OUTPUT[47..59]
    );
    let mut head = Vec::new();
    document.write_head(&mut head);
    let aws_head = &head[47 + 12 + header.info_and_tracks_bytes.len()..];
    assert_eq!(aws_head, &GET_MEDIA_OUTPUT[916..1159]);
    let mut tail = Vec::new();
    document.write_tail(&mut tail);
    assert_eq!(tail, GET_MEDIA_OUTPUT[547_754..547_925]);
    // The Cluster came with a known 8-byte size: passed through unchanged.
    assert_eq!(fragment.raw_cluster_bytes, GET_MEDIA_OUTPUT[1159..547_754]);
}

// ---------------------------------------------------------------------------------
// test_mixed_tags.mkv: GetMedia output with producer tags
// ---------------------------------------------------------------------------------

#[test]
fn mixed_tags_are_extracted() {
    let events = read_sequence(MIXED_TAGS).unwrap();
    // `mkvinfo test_mixed_tags.mkv`: V_MS/VFW/FOURCC, private data size 40 (MJPG).
    let headers = headers(&events);
    assert_eq!(headers.len(), 10);
    assert_eq!(headers[0].tracks[0].codec_id, "V_MS/VFW/FOURCC");
    assert_eq!(headers[0].tracks[0].codec_private.len(), 40);
    assert_eq!(headers[0].tracks[0].uid, 9_369_167_114_682_348_278);
    // `ffprobe -show_entries packet=pts,flags`: 100 packets, 10 per 5 s; Cluster
    // Timecodes 0, 5000, ... 45000. ffprobe flags every MJPEG packet as key (an intra
    // codec); the SimpleBlock key flag is set only on the first block of each Cluster
    // (`mkvinfo -v -v`: "Simple block: key" 10 times).
    let fragments = fragments(&events);
    assert_eq!(
        fragments
            .iter()
            .map(|f| f.cluster_timecode)
            .collect::<Vec<_>>(),
        (0..10).map(|i| i * 5000).collect::<Vec<_>>()
    );
    assert!(
        fragments.iter().all(|f| f.frame_count == 10
            && f.span() == 4500
            && f.duration_ns(&[]) == 5_000_000_000)
    );
    assert_eq!(frames(&events).len(), 100);
    assert_eq!(frames(&events).iter().filter(|f| f.keyframe).count(), 10);

    let tags = tags(&events);
    let producer: Vec<&(String, String)> = tags
        .iter()
        .flat_map(|t| t.iter())
        .filter(|(name, _)| !kvs_tags::is_kvs_tag(name))
        .collect();
    // testTag_0..4 before Info in the first document, then after every Cluster.
    assert_eq!(producer.len(), 55);
    for i in 0..5 {
        let name = format!("testTag_{i}");
        let value = format!("testTag_{i}_Value");
        assert_eq!(
            producer
                .iter()
                .filter(|(n, v)| *n == name && *v == value)
                .count(),
            11
        );
    }
    let producer_timestamps: Vec<&str> = tags
        .iter()
        .filter_map(|t| tag_value(t, kvs_tags::PRODUCER_TIMESTAMP))
        .collect();
    assert_eq!(producer_timestamps[..3], ["0.000", "5.000", "10.000"]);
}

#[test]
fn mixed_tags_document_is_rebuilt_byte_for_byte_except_the_cluster_size() {
    // The second document, from the top-level walk: EBML header at 2618, Cluster at
    // 3159 (unknown size, 5-byte header), producer Tags from 4307, AWS tail Tags at
    // 4687, next EBML header at 4856.
    let doc = &MIXED_TAGS[2618..4856];
    let events = read_sequence(doc).unwrap();
    let header = headers(&events)[0];
    let fragment = fragments(&events)[0];
    let tags = tags(&events);
    assert_eq!(tags.len(), 7);
    let producer_tags: Vec<(String, String)> =
        tags[1..6].iter().flat_map(|t| t.iter().cloned()).collect();
    let document = FragmentDocument {
        ebml_header: Some(&header.ebml_header_bytes),
        info_and_tracks: &header.info_and_tracks_bytes,
        fragment_number: tag_value(tags[0], kvs_tags::FRAGMENT_NUMBER).unwrap(),
        server_timestamp_ms: parse_timestamp_ms(
            tag_value(tags[0], kvs_tags::SERVER_TIMESTAMP).unwrap(),
        ),
        producer_timestamp_ms: parse_timestamp_ms(
            tag_value(tags[0], kvs_tags::PRODUCER_TIMESTAMP).unwrap(),
        ),
        producer_tags: &producer_tags,
        millis_behind_now: tag_value(tags[6], kvs_tags::MILLIS_BEHIND_NOW)
            .unwrap()
            .parse()
            .unwrap(),
        continuation_token: tag_value(tags[6], kvs_tags::CONTINUATION_TOKEN).unwrap(),
    };
    let mut head = Vec::new();
    document.write_head(&mut head);
    assert_eq!(head, doc[..3159 - 2618]);
    let mut tail = Vec::new();
    document.write_tail(&mut tail);
    assert_eq!(tail, doc[4307 - 2618..]);
    // AWS passed the unknown-size Cluster through; we store it with a known size.
    assert_eq!(
        fragment.raw_cluster_bytes[12..],
        doc[3164 - 2618..4307 - 2618]
    );
    assert_eq!(
        top_level(&document.encode(&fragment.raw_cluster_bytes)).len(),
        top_level(doc).len()
    );
}

// ---------------------------------------------------------------------------------
// Round trip: PutMedia body -> stored fragments -> GetMedia output -> reader
// ---------------------------------------------------------------------------------

#[test]
fn putmedia_fragments_round_trip_through_get_media_documents() {
    let events = read_one(PUTMEDIA_BODY).unwrap();
    let header = headers(&events)[0];
    let mut output = Vec::new();
    for (i, fragment) in fragments(&events).into_iter().enumerate() {
        let number = format!("{}", 91_343_852_333_181_432u64 + i as u64);
        let document = FragmentDocument {
            ebml_header: None,
            info_and_tracks: &header.info_and_tracks_bytes,
            fragment_number: &number,
            server_timestamp_ms: fragment.cluster_timecode + 40,
            producer_timestamp_ms: fragment.cluster_timecode,
            producer_tags: &[],
            millis_behind_now: 0,
            continuation_token: &number,
        };
        output.extend(document.encode(&fragment.raw_cluster_bytes));
    }
    let reread = read_sequence(&output).unwrap();
    assert_eq!(frames(&reread), frames(&events));
    assert_eq!(
        fragments(&reread).into_iter().cloned().collect::<Vec<_>>(),
        fragments(&events).into_iter().cloned().collect::<Vec<_>>()
    );
    assert!(headers(&reread).iter().all(|h| h.tracks == header.tracks));
}

// ---------------------------------------------------------------------------------
// Malformed input
// ---------------------------------------------------------------------------------

/// Events of a cut body, without a FragmentEnd that finish() produced for a fragment
/// the cut shortened.
fn without_cut_fragment(mut events: Vec<MkvEvent>, full: &[MkvEvent]) -> Vec<MkvEvent> {
    if let Some(MkvEvent::FragmentEnd(_)) = events.last()
        && events.len() <= full.len()
        && events.last() != full.get(events.len() - 1)
    {
        events.pop();
    }
    events
}

#[test]
fn truncation_at_every_offset_never_panics_and_fails_inside_elements() {
    let body = synthetic::small_body();
    let full = read_one(&body).unwrap();
    let mut clean_ends = 0;
    for cut in 0..body.len() {
        match read_one(&body[..cut]) {
            Ok(events) => {
                clean_ends += 1;
                let events = without_cut_fragment(events, &full);
                assert_eq!(events[..], full[..events.len()], "cut at {cut}");
            }
            // Truncated, or a Cluster cut before its first frame (4011).
            Err(err) => assert!(
                [4006, 4011].contains(&err.error_id()),
                "cut at {cut}: {err}"
            ),
        }
    }
    // Clean ends: before anything, and after each element of the Segment and of an
    // unknown-size Cluster (after the EBML header the body is truncated).
    assert!(clean_ends > 10 && clean_ends < 40, "{clean_ends}");
    // Every cut strictly inside a frame fails (frame data is 0xAB bytes).
    let first_data = body.iter().position(|&b| b == 0xAB).unwrap();
    assert_eq!(frames(&full)[0].data_len, 3);
    for cut in first_data..first_data + 3 {
        assert!(
            matches!(read_one(&body[..cut]), Err(MkvError::Truncated { .. })),
            "cut at {cut}"
        );
    }

    // The same over the first document of real GetMedia output.
    let doc = &MIXED_TAGS[..2618];
    let full = read_sequence(doc).unwrap();
    for cut in 0..doc.len() {
        if let Ok(events) = read_sequence(&doc[..cut]) {
            let events = without_cut_fragment(events, &full);
            assert_eq!(events[..], full[..events.len()], "cut at {cut}");
        }
    }
}

#[test]
fn random_bit_flips_never_panic() {
    let mut rng = Rng(42);
    let samples: [&[u8]; 3] = [
        &synthetic::small_body(),
        &MIXED_TAGS[..4856],
        &PUTMEDIA_BODY[..20_000],
    ];
    let limits = Limits::default();
    for round in 0..3000 {
        let sample = samples[round % samples.len()];
        let mut bytes = sample.to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
        let sizes: Vec<usize> = (0..8).map(|_| 1 + rng.below(600)).collect();
        let reader = if round % 2 == 0 {
            MkvReader::new(limits.clone())
        } else {
            MkvReader::for_document_sequence(limits.clone())
        };
        if let Err(err) = read_chunked(reader, &bytes, &sizes) {
            assert!((4000..5000).contains(&err.error_id()));
        }
    }
}

#[test]
fn many_fragments_in_one_body_keep_memory_bounded() {
    let limits = Limits {
        max_fragment_bytes: 64 << 10,
        ..Limits::default()
    };
    let mut reader = MkvReader::new(limits.clone());
    let mut events = Vec::new();
    reader
        .feed(&synthetic::stream_header(&[1]), &mut events)
        .unwrap();
    let mut fragments_seen = 0;
    for i in 0..2000u64 {
        let blocks: Vec<Vec<u8>> = (0..10)
            .map(|n| synthetic::block(1, n * 30, n == 0, 3000))
            .collect();
        reader
            .feed(&synthetic::cluster(i * 1000, &blocks), &mut events)
            .unwrap();
        assert!(
            reader.buffered_bytes() <= (64 << 10) + 1024,
            "{}",
            reader.buffered_bytes()
        );
        fragments_seen += events
            .iter()
            .filter(|e| matches!(e, MkvEvent::FragmentEnd(_)))
            .count();
        events.clear();
    }
    reader.finish(&mut events).unwrap();
    assert_eq!(fragments_seen + 1, 2000);
}

fn small_limits() -> Limits {
    Limits {
        max_block_bytes: 16 << 10,
        max_header_bytes: 4 << 10,
        max_fragment_bytes: 64 << 10,
        ..Limits::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), sequence: bool) {
        let reader = if sequence {
            MkvReader::for_document_sequence(Limits::default())
        } else {
            MkvReader::new(Limits::default())
        };
        let _ = reader.read_to_end(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..2048),
        sizes in proptest::collection::vec(1usize..64, 1..16),
    ) {
        let mut body = synthetic::stream_header(&[1, 2]);
        body.extend([0x1F, 0x43, 0xB6, 0x75, 0xFF, 0xE7, 0x81, 0x00]);
        body.extend(tail);
        let _ = read_chunked(MkvReader::new(Limits::default()), &body, &sizes);
    }

    #[test]
    fn memory_stays_bounded(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..512), 0..64),
        valid_start: bool,
    ) {
        let limits = small_limits();
        let bound = limits.memory_bound();
        let mut reader = MkvReader::new(limits);
        let mut events = Vec::new();
        if valid_start {
            let mut start = synthetic::stream_header(&[1]);
            start.extend([0x1F, 0x43, 0xB6, 0x75, 0xFF, 0xE7, 0x81, 0x00]);
            reader.feed(&start, &mut events).unwrap();
        }
        for chunk in &chunks {
            if reader.feed(chunk, &mut events).is_err() {
                break;
            }
            prop_assert!(reader.buffered_bytes() <= bound);
        }
    }

    #[test]
    fn chunking_never_changes_the_events(sizes in proptest::collection::vec(1usize..40, 1..32)) {
        let body = synthetic::small_body();
        let whole = read_one(&body).unwrap();
        let chunked = read_chunked(MkvReader::new(Limits::default()), &body, &sizes).unwrap();
        prop_assert_eq!(chunked, whole);
    }

    #[test]
    fn valid_streams_of_random_shape_are_read_exactly(
        clusters in proptest::collection::vec(proptest::collection::vec((0i16..300, 0usize..40), 1..6), 1..5),
        known_sizes: bool,
        sizes in proptest::collection::vec(1usize..100, 1..8),
    ) {
        let mut body = synthetic::stream_header(&[1]);
        let mut expected = Vec::new();
        for (i, blocks) in clusters.iter().enumerate() {
            let timecode = 10_000 * (i as u64 + 1);
            let encoded: Vec<Vec<u8>> = blocks
                .iter()
                .enumerate()
                .map(|(n, &(rel, len))| synthetic::block(1, rel, n == 0, len))
                .collect();
            body.extend(if known_sizes {
                synthetic::cluster_known(timecode, &encoded)
            } else {
                synthetic::cluster(timecode, &encoded)
            });
            for (n, &(rel, len)) in blocks.iter().enumerate() {
                expected.push((timecode + rel as u64, n == 0, len));
            }
        }
        let events = read_chunked(MkvReader::new(Limits::default()), &body, &sizes).unwrap();
        let got: Vec<(u64, bool, usize)> = frames(&events).iter().map(|f| (f.timecode, f.keyframe, f.data_len)).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(fragments(&events).len(), clusters.len());
    }
}
