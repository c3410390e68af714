//! Fuzzes the playback demuxer (`freshet::media::samples::demux_fragment`) the way
//! HLS/DASH/GetClip use it on stored fragments, and the ISO BMFF writers
//! (`freshet::media::fmp4`) on whatever it accepts. Nothing may panic, and an accepted
//! fragment must keep the demuxer's promises: track indexes in range, DTS never after
//! PTS and never decreasing within a track, video samples made of NAL units with 4-byte
//! lengths that fill them exactly.
//!
//! Input layout: byte 0 picks the mode. Bit 0 set: the rest is a Cluster, read with a
//! fixed valid Info + Tracks (H.264 track 1, AAC track 2), so the fuzzer reaches frame
//! parsing at once. Bit 0 clear: bytes 1-2 (little endian, modulo the remaining
//! length) say how many of the following bytes are Info + Tracks; the rest is the
//! Cluster. Bit 1 picks extreme timestamp arguments.

#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use freshet::media::ebml;
use freshet::media::fmp4;
use freshet::media::mkv::{TRACK_TYPE_AUDIO, TRACK_TYPE_VIDEO, ids};
use freshet::media::samples::{FragmentSamples, demux_fragment};
use libfuzzer_sys::fuzz_target;

/// Info (1 ms timecodes) and Tracks: H.264 (avcC with one SPS and PPS) and AAC-LC.
fn fixed_header() -> &'static [u8] {
    static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
    HEADER.get_or_init(|| {
        let mut info = Vec::new();
        ebml::write_uint_element(&mut info, ids::TIMECODE_SCALE, 1_000_000);
        let mut out = Vec::new();
        ebml::write_element(&mut out, ids::INFO, &info);
        let avcc: &[u8] = &[
            1, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0, 3, 0x67, 0x64, 0x00, 1, 0, 2, 0x68, 0xEE,
        ];
        let mut tracks = Vec::new();
        for (number, kind, codec, private) in [
            (1, TRACK_TYPE_VIDEO, "V_MPEG4/ISO/AVC", avcc),
            (2, TRACK_TYPE_AUDIO, "A_AAC", &[0x11, 0x90][..]),
        ] {
            let mut entry = Vec::new();
            ebml::write_uint_element(&mut entry, ids::TRACK_NUMBER, number);
            ebml::write_uint_element(&mut entry, ids::TRACK_TYPE, kind);
            ebml::write_string_element(&mut entry, ids::CODEC_ID, codec);
            ebml::write_element(&mut entry, ids::CODEC_PRIVATE, private);
            ebml::write_element(&mut tracks, ids::TRACK_ENTRY, &entry);
        }
        ebml::write_element(&mut out, ids::TRACKS, &tracks);
        out
    })
}

fn check(fragment: &FragmentSamples) {
    let mut last_dts = vec![i64::MIN; fragment.tracks.len()];
    for sample in &fragment.samples {
        let track = &fragment.tracks[sample.track];
        assert!(sample.dts_ns <= sample.pts_ns);
        assert!(last_dts[sample.track] <= sample.dts_ns);
        last_dts[sample.track] = sample.dts_ns;
        if track.codec.is_video() {
            let mut rest = &sample.data[..];
            while !rest.is_empty() {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                rest = &rest[4 + len..];
            }
        }
    }
    for track in &fragment.tracks {
        let _ = fmp4::codec_string(track);
    }
    let _ = fmp4::init_segment(&fragment.tracks);
    let _ = fmp4::media_segment(1, &fragment.tracks, &fragment.samples);
    let _ = fmp4::progressive_mp4(&fragment.tracks, &fragment.samples);
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let (header, cluster): (&[u8], &[u8]) = if control & 1 == 1 {
        (fixed_header(), rest)
    } else {
        let [lo, hi, rest @ ..] = rest else {
            return;
        };
        let split = usize::from(u16::from_le_bytes([*lo, *hi])) % (rest.len() + 1);
        rest.split_at(split)
    };
    let (producer_ts_ms, cluster_timecode, timecode_scale) = if control & 2 == 2 {
        (i64::MAX / 1_000_000, u64::MAX, u64::MAX)
    } else {
        (1_700_000_000_000, 0, 1_000_000)
    };
    let cluster = Bytes::copy_from_slice(cluster);
    if let Ok(fragment) = demux_fragment(
        header,
        &cluster,
        producer_ts_ms,
        cluster_timecode,
        timecode_scale,
        Some(u64::from(control >> 2) * 100),
    ) {
        check(&fragment);
    }
});
