//! Fuzzes the Matroska reader (`freshet::media::mkv`) the way PutMedia and GetMedia
//! use it: arbitrary bytes fed in arbitrary chunkings, as one document (a PutMedia
//! body) or a document sequence (GetMedia output). Nothing may panic, the reader's
//! memory must stay within `Limits::memory_bound`, and every fragment it accepts must
//! come back unchanged after a GetMedia round trip (`mkv_writer` -> reader).
//!
//! Input layout: byte 0 picks the mode (bit 0: document sequence) and the chunk-size
//! range (bits 1-3); byte 1 seeds the chunk sizes; the rest is the body.

#![no_main]

use freshet::media::mkv::{Limits, MkvEvent, MkvReader, StreamHeader};
use freshet::media::mkv_writer::FragmentDocument;
use libfuzzer_sys::fuzz_target;

fn limits() -> Limits {
    // Small enough that the fuzzer reaches the limits.
    Limits {
        max_block_bytes: 32 << 10,
        max_header_bytes: 8 << 10,
        max_fragment_bytes: 128 << 10,
        max_tags: 16,
        ..Limits::default()
    }
}

fn reader(document_sequence: bool) -> MkvReader {
    if document_sequence {
        MkvReader::for_document_sequence(limits())
    } else {
        MkvReader::new(limits())
    }
}

fuzz_target!(|data: &[u8]| {
    let [control, seed, body @ ..] = data else {
        return;
    };
    let document_sequence = control & 1 == 1;
    let max_chunk = [1usize, 2, 3, 7, 16, 255, 4096, usize::MAX][usize::from((control >> 1) & 7)];
    let mut state = u32::from(*seed) | 1;
    let mut next_chunk = move || {
        // xorshift32: a cheap, deterministic sequence of chunk sizes.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        1 + (state as usize) % max_chunk.min(body.len().max(1))
    };

    let mut reader = reader(document_sequence);
    let bound = reader.limits().memory_bound();
    let mut events = Vec::new();
    let mut rest = body;
    let mut ok = true;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(next_chunk().min(rest.len()));
        rest = later;
        if reader.feed(now, &mut events).is_err() {
            ok = false;
            break;
        }
        assert!(
            reader.buffered_bytes() <= bound,
            "{} > {bound}",
            reader.buffered_bytes()
        );
    }
    if ok {
        let _ = reader.finish(&mut events);
    }

    let mut header: Option<&StreamHeader> = None;
    for event in &events {
        match event {
            MkvEvent::Header(h) => header = Some(h),
            MkvEvent::FragmentEnd(fragment) => {
                let header = header.expect("a fragment comes after its header");
                // Durations are total functions of any accepted fragment.
                let known = vec![Some(u64::from(*seed) * 1_000_000); fragment.tracks.len()];
                let _ = (
                    fragment.span(),
                    fragment.duration_ns(&[]),
                    fragment.duration_ns(&known),
                );
                let document = FragmentDocument {
                    ebml_header: Some(&header.ebml_header_bytes),
                    info_and_tracks: &header.info_and_tracks_bytes,
                    fragment_number: "1",
                    server_timestamp_ms: 1,
                    producer_timestamp_ms: fragment.cluster_timecode,
                    producer_tags: &[],
                    millis_behind_now: 0,
                    continuation_token: "1",
                };
                let output = document.encode(&fragment.raw_cluster_bytes);
                let reread = reader_for_round_trip()
                    .read_to_end(&output)
                    .expect("an accepted fragment reads back");
                let again: Vec<_> = reread
                    .iter()
                    .filter_map(|e| match e {
                        MkvEvent::FragmentEnd(f) => Some(f),
                        _ => None,
                    })
                    .collect();
                assert_eq!(again, [fragment]);
            }
            _ => {}
        }
    }
});

fn reader_for_round_trip() -> MkvReader {
    reader(true)
}
