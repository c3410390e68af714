//! Fuzzes the HLS playlist and DASH MPD writers (`freshet::media::hls`,
//! `freshet::media::dash`) with playlists built from arbitrary input, and the HLS
//! reader on arbitrary text. Nothing may panic, and:
//!
//! - a written media playlist reads back (`hls::parse_media_playlist`) with the same
//!   segments: every `EXTINF` duration within `EXT-X-TARGETDURATION`, media sequence
//!   numbers consecutive from `EXT-X-MEDIA-SEQUENCE`, discontinuity sequence numbers
//!   never decreasing, one URI per segment;
//! - a written master playlist has one URI line per variant and no stray tags;
//! - a written MPD is well formed as far as elements go (every element closed, in
//!   order; no raw `<` or `&` in attribute values) and lists one `SegmentURL` per
//!   timeline segment.
//!
//! Input layout: byte 0 picks the mode (0: media playlist, 1: master playlist, 2: MPD,
//! 3: the reader on the rest as text). The rest is read as a stream of small numbers
//! and strings by [`Input`].

#![no_main]

use freshet::media::{dash, hls};
use libfuzzer_sys::fuzz_target;

/// Reads numbers and strings off the fuzz input; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u64(&mut self) -> u64 {
        // A length byte then that many bytes: small numbers are cheap to reach, and
        // all of u64 is reachable.
        let n = (self.byte() % 9) as usize;
        (0..n).fold(0u64, |acc, _| acc << 8 | u64::from(self.byte()))
    }
    fn string(&mut self) -> String {
        let n = (self.byte() % 24) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| self.byte()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }
}

fn media(input: &mut Input) {
    let count = input.byte() % 40;
    let segments: Vec<hls::Segment> = (0..count)
        .map(|_| hls::Segment {
            duration_ms: input.u64() % 10_000_000_000,
            title: input.string(),
            uri: input.string(),
            discontinuity: input.flag(),
            map_uri: input.flag().then(|| input.string()),
            program_date_time_ms: input.flag().then(|| input.u64() as i64),
        })
        .collect();
    let playlist = hls::MediaPlaylist {
        version: input.flag().then(|| input.byte()),
        target_duration_s: input.flag().then(|| input.u64() % 1_000_000_000),
        media_sequence: input.flag().then(|| input.u64() >> 1),
        discontinuity_sequence: input.flag().then(|| input.u64() >> 1),
        playlist_type: match input.byte() % 3 {
            0 => None,
            1 => Some(hls::PlaylistType::Vod),
            _ => Some(hls::PlaylistType::Event),
        },
        independent_segments: input.flag(),
        segments,
        ended: input.flag(),
    };
    let text = hls::write_media(&playlist);
    let parsed = hls::parse_media_playlist(&text)
        .unwrap_or_else(|e| panic!("written playlist does not read back: {e}\n{text}"));
    assert_eq!(parsed.segments.len(), playlist.segments.len());
    assert_eq!(parsed.media_sequence, playlist.media_sequence.unwrap_or(0));
    assert_eq!(parsed.ended, playlist.ended);
    let mut last_disc = parsed.discontinuity_sequence;
    for (i, (p, s)) in parsed.segments.iter().zip(&playlist.segments).enumerate() {
        assert_eq!(p.duration_ms, s.duration_ms);
        assert!(p.duration_ms.div_ceil(1000) <= parsed.target_duration_s);
        assert_eq!(p.sequence, parsed.media_sequence + i as u64);
        assert_eq!(p.discontinuity, s.discontinuity);
        assert!(p.discontinuity_sequence >= last_disc);
        last_disc = p.discontinuity_sequence;
        assert!(!p.uri.is_empty() && !p.uri.starts_with('#'));
    }
}

fn master(input: &mut Input) {
    let count = input.byte() % 8;
    let variants: Vec<hls::Variant> = (0..count)
        .map(|_| hls::Variant {
            bandwidth: input.u64(),
            average_bandwidth: input.flag().then(|| input.u64()),
            codecs: (0..input.byte() % 3).map(|_| input.string()).collect(),
            resolution: input
                .flag()
                .then(|| (input.u64() as u32, input.u64() as u32)),
            uri: input.string(),
        })
        .collect();
    let playlist = hls::MasterPlaylist {
        version: input.flag().then(|| input.byte()),
        independent_segments: input.flag(),
        variants,
    };
    let text = hls::write_master(&playlist);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "#EXTM3U");
    let uris = lines.iter().filter(|l| !l.starts_with('#')).count();
    assert_eq!(uris, playlist.variants.len(), "{text}");
    let infs = lines
        .iter()
        .filter(|l| l.starts_with("#EXT-X-STREAM-INF:"))
        .count();
    assert_eq!(infs, playlist.variants.len(), "{text}");
}

/// Element nesting of the writer's XML: every start tag closed in order, attribute
/// values free of raw `<` and `&` (other than entities). Returns the element names.
fn check_xml(text: &str) -> Vec<String> {
    let body = text
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
        .expect("XML declaration");
    let mut stack: Vec<String> = Vec::new();
    let mut names = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find('<') {
        assert!(rest[..open].trim().is_empty(), "text between elements");
        let close = rest[open..].find('>').expect("unclosed tag") + open;
        let tag = &rest[open + 1..close];
        // Attribute values: quoted, no `<`, entities only.
        let mut in_value = false;
        for (i, c) in tag.char_indices() {
            match c {
                '"' => in_value = !in_value,
                '<' => panic!("raw < in a tag"),
                '&' if in_value => {
                    let entity = &tag[i..];
                    assert!(
                        ["&amp;", "&quot;", "&lt;", "&gt;", "&apos;"]
                            .iter()
                            .any(|e| entity.starts_with(e)),
                        "raw & in a value"
                    );
                }
                _ => {}
            }
        }
        assert!(!in_value, "unterminated attribute value");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "mismatched end tag");
        } else {
            let name: String = tag.chars().take_while(|c| !c.is_whitespace() && *c != '/').collect();
            names.push(name.clone());
            if !tag.ends_with('/') {
                stack.push(name);
            }
        }
        rest = &rest[close + 1..];
    }
    assert!(rest.trim().is_empty());
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    names
}

fn mpd(input: &mut Input) {
    let periods: Vec<dash::Period> = (0..input.byte() % 4)
        .map(|_| dash::Period {
            id: input.string(),
            start_ms: input.u64(),
            adaptation_sets: (0..input.byte() % 3)
                .map(|_| dash::AdaptationSet {
                    content_type: input.flag().then(|| input.string()),
                    mime_type: input.string(),
                    segment_alignment: input.flag(),
                    start_with_sap: input.flag().then(|| input.byte()),
                    representations: (0..input.byte() % 3)
                        .map(|_| {
                            let raw: Vec<(u64, u64)> = (0..input.byte() % 12)
                                .map(|_| (input.u64(), input.u64()))
                                .collect();
                            let timeline = if input.flag() {
                                dash::timeline_of(&raw)
                            } else {
                                raw.iter()
                                    .map(|&(t, d)| dash::TimelineEntry {
                                        t: input.flag().then_some(t),
                                        d,
                                        r: u32::from(input.byte() % 4),
                                    })
                                    .collect()
                            };
                            let addressing = if input.flag() {
                                dash::Addressing::List {
                                    initialization: input.string(),
                                    media: (0..input.byte() % 16).map(|_| input.string()).collect(),
                                }
                            } else {
                                dash::Addressing::Template {
                                    initialization: input.string(),
                                    media: input.string(),
                                    start_number: input.flag().then(|| input.u64()),
                                }
                            };
                            dash::Representation {
                                id: input.string(),
                                codecs: input.string(),
                                bandwidth: input.u64(),
                                width: input.flag().then(|| input.u64() as u32),
                                height: input.flag().then(|| input.u64() as u32),
                                audio_sampling_rate: input.flag().then(|| input.u64() as u32),
                                segments: dash::Segments {
                                    timescale: input.u64(),
                                    presentation_time_offset: input.u64(),
                                    timeline,
                                    addressing,
                                },
                            }
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    let presentation = if input.flag() {
        dash::Presentation::Static {
            duration_ms: input.u64(),
        }
    } else {
        dash::Presentation::Dynamic {
            availability_start_ms: input.u64() as i64,
            publish_time_ms: input.u64() as i64,
            minimum_update_period_ms: input.u64(),
            time_shift_buffer_depth_ms: input.u64(),
            suggested_presentation_delay_ms: input.flag().then(|| input.u64()),
        }
    };
    let mpd = dash::Mpd {
        profiles: input.string(),
        min_buffer_time_ms: input.u64(),
        presentation,
        periods,
    };
    let text = dash::write_mpd(&mpd);
    let names = check_xml(&text);
    let expected_urls: u64 = mpd
        .periods
        .iter()
        .flat_map(|p| &p.adaptation_sets)
        .flat_map(|a| &a.representations)
        .map(|r| match &r.segments.addressing {
            dash::Addressing::List { media, .. } => {
                (media.len() as u64).min(dash::segment_count(&r.segments.timeline))
            }
            dash::Addressing::Template { .. } => 0,
        })
        .sum();
    let urls = names.iter().filter(|n| *n == "SegmentURL").count() as u64;
    assert_eq!(urls, expected_urls);
    assert_eq!(
        names.iter().filter(|n| *n == "Period").count(),
        mpd.periods.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = Input(rest);
    match mode % 4 {
        0 => media(&mut input),
        1 => master(&mut input),
        2 => mpd(&mut input),
        _ => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(p) = hls::parse_media_playlist(&text) {
                for (i, s) in p.segments.iter().enumerate() {
                    assert_eq!(s.sequence, p.media_sequence + i as u64);
                }
            }
        }
    }
});
