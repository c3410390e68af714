//! Fuzzes camera ingest's RTP path: arbitrary packet sequences through the reorder
//! buffer (`freshet::media::rtp::Reorder`) into all three depacketizers
//! (`freshet::media::depacketize::{h264, h265, aac}`), plus the RTP/RTCP parsers and
//! the SPS parsers and configuration record builders on arbitrary bytes. Nothing may
//! panic, and what comes out must keep its promises: the reorder buffer releases
//! consecutive sequence numbers (a gap of `lost` in between), video access units are
//! non-empty runs of NAL units with 4-byte lengths that fill them exactly, the first
//! one emitted is a key frame, configuration records are well formed.
//!
//! Input layout: byte 0 picks options (bit 0: depacketizers start with known
//! parameter sets; bits 1-2: reorder window; bit 3: records are raw RTP packets
//! instead of synthetic headers). The rest is records, each a length byte and that
//! many bytes. A synthetic record is `[time step, sequence step (i8), timestamp step,
//! flags (bit 0 marker), payload...]`; a raw one is a whole RTP packet.

#![no_main]

use bytes::Bytes;
use freshet::media::depacketize::aac::{AacDepacketizer, AacParams};
use freshet::media::depacketize::h264::{self, H264Depacketizer};
use freshet::media::depacketize::h265::{self, H265Depacketizer};
use freshet::media::depacketize::{AccessUnit, Depacketizer};
use freshet::media::rtp::{Reorder, ReorderConfig, ReorderEvent, RtpPacket, parse_rtcp};
use libfuzzer_sys::fuzz_target;

const H264_SPS: [u8; 25] = [
    0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
    0x00, 0x00, 0x03, 0x03, 0x20, 0xf1, 0x42, 0x99, 0x60,
];
const H264_PPS: [u8; 6] = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
const H265_VPS: [u8; 24] = [
    0x40, 0x01, 0x0c, 0x01, 0xff, 0xff, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03,
    0x00, 0x00, 0x03, 0x00, 0x78, 0x95, 0x98, 0x09,
];
const H265_SPS: [u8; 42] = [
    0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00, 0x00, 0x03,
    0x00, 0x78, 0xa0, 0x03, 0xc0, 0x80, 0x10, 0xe5, 0x96, 0x56, 0x69, 0x24, 0xca, 0xf0, 0x16, 0x80,
    0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x0c, 0x84,
];
const H265_PPS: [u8; 7] = [0x44, 0x01, 0xc1, 0x72, 0xb4, 0x62, 0x40];

struct Video {
    depacketizer: Depacketizer,
    emitted: usize,
}

fn check_access_unit(au: &AccessUnit, video: bool) {
    assert!(!au.data.is_empty());
    if video {
        let mut rest = &au.data[..];
        while !rest.is_empty() {
            assert!(rest.len() >= 4, "truncated NAL unit length");
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            assert!(len > 0 && rest.len() >= 4 + len, "NAL unit overruns the AU");
            rest = &rest[4 + len..];
        }
    } else {
        assert!(au.keyframe);
    }
}

fn drain(video: &mut Video, is_video: bool) {
    while let Some(au) = video.depacketizer.pop() {
        check_access_unit(&au, is_video);
        if is_video && video.emitted == 0 {
            assert!(au.keyframe, "the first access unit is not a key frame");
        }
        video.emitted += 1;
    }
}

fn check_records(d: &Depacketizer) {
    if let Some(record) = d.codec_private() {
        assert!(!record.is_empty());
        if matches!(d, Depacketizer::H264(_) | Depacketizer::H265(_)) {
            assert_eq!(record[0], 1, "configurationVersion");
        }
    }
    let _ = d.dimensions();
    let _ = d.audio_format();
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };

    // Parsers on the raw input.
    let _ = RtpPacket::parse_slice(rest);
    let _ = parse_rtcp(rest);
    let _ = h264::parse_sps(rest);
    let _ = h265::parse_sps(rest);
    if let Some(record) = h264::avc_decoder_configuration_record(rest, &[&H264_PPS]) {
        assert_eq!(record[0], 1);
    }
    if let Some(record) = h265::hevc_decoder_configuration_record(&H265_VPS, rest, &[rest]) {
        assert_eq!(record[0], 1);
    }

    let with_parameter_sets = options & 1 == 1;
    let mut h264 = H264Depacketizer::new();
    let mut h265 = H265Depacketizer::new();
    if with_parameter_sets {
        h264.add_parameter_set(&H264_SPS);
        h264.add_parameter_set(&H264_PPS);
        for nal in [&H265_VPS[..], &H265_SPS, &H265_PPS] {
            h265.add_parameter_set(nal);
        }
    }
    let aac = AacDepacketizer::new(AacParams::hbr(&[0x11, 0x90], 48_000).unwrap()).unwrap();
    let mut tracks = [
        (
            Video {
                depacketizer: Depacketizer::H264(h264),
                emitted: 0,
            },
            true,
        ),
        (
            Video {
                depacketizer: Depacketizer::H265(h265),
                emitted: 0,
            },
            true,
        ),
        (
            Video {
                depacketizer: Depacketizer::Aac(aac),
                emitted: 0,
            },
            false,
        ),
    ];
    let config = ReorderConfig {
        max_packets: [1, 4, 16, 64][usize::from((options >> 1) & 3)],
        max_wait_ms: 20,
    };
    let mut reorder = Reorder::new(config);
    let raw = options & 8 == 8;

    let mut now = 0u64;
    let mut sequence = 1000u16;
    let mut timestamp = 90_000u32;
    let mut last_released: Option<u16> = None;
    let mut pending_gap: Option<u16> = None;
    let mut handle = |event: ReorderEvent, tracks: &mut [(Video, bool); 3]| {
        match &event {
            ReorderEvent::Packet(p) => {
                if let Some(last) = last_released {
                    let expected = last.wrapping_add(1).wrapping_add(pending_gap.unwrap_or(0));
                    assert_eq!(p.sequence, expected, "released out of sequence");
                }
                last_released = Some(p.sequence);
                pending_gap = None;
            }
            ReorderEvent::Gap { lost } => {
                assert!(*lost > 0);
                pending_gap = Some(pending_gap.unwrap_or(0).wrapping_add(*lost));
            }
        }
        for (track, is_video) in tracks.iter_mut() {
            let _ = track.depacketizer.push_event(&event);
            drain(track, *is_video);
        }
    };

    let mut records = rest;
    while let Some((&len, tail)) = records.split_first() {
        let len = usize::from(len).min(tail.len());
        let (record, tail) = tail.split_at(len);
        records = tail;
        let packet = if raw {
            match RtpPacket::parse(Bytes::copy_from_slice(record)) {
                Ok(p) => p,
                Err(_) => continue,
            }
        } else {
            let [time_step, seq_step, ts_step, flags, payload @ ..] = record else {
                continue;
            };
            now += u64::from(*time_step);
            sequence = sequence.wrapping_add(*seq_step as i8 as u16);
            timestamp = timestamp.wrapping_add(u32::from(*ts_step) * 64);
            RtpPacket {
                marker: flags & 1 == 1,
                payload_type: 96,
                sequence,
                timestamp,
                ssrc: 7,
                csrcs: Vec::new(),
                extension: None,
                payload: Bytes::copy_from_slice(payload),
            }
        };
        // Round trip of the writer.
        let written = packet.to_vec();
        assert_eq!(RtpPacket::parse_slice(&written).as_ref(), Ok(&packet));
        reorder.push(packet, now);
        while let Some(event) = reorder.pop(now) {
            handle(event, &mut tracks);
        }
        assert!(reorder.len() <= config.max_packets.max(1) * 4);
    }
    while let Some(event) = reorder.pop(u64::MAX) {
        handle(event, &mut tracks);
    }
    for (track, is_video) in tracks.iter_mut() {
        track.depacketizer.flush();
        drain(track, *is_video);
        check_records(&track.depacketizer);
    }
});
