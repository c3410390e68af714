//! DASH Media Presentation Descriptions (ISO/IEC 23009-1, the MPD; profile
//! `urn:mpeg:dash:profile:isoff-live:2011`, DASH-IF IOP timing) written from plain
//! descriptions.
//!
//! The writer takes an [`Mpd`]: a static (on-demand) or dynamic (live) presentation,
//! its Periods, one AdaptationSet per track, and per Representation a
//! `SegmentTimeline` addressed either by a `SegmentList` of URLs or by a
//! `SegmentTemplate` (ISO/IEC 23009-1 §5.3.9). It returns the XML text. It decides
//! nothing about which fragments a Period holds or where a Period starts: the video
//! domain does that. What it guarantees from its input alone:
//!
//! - attribute values are XML-escaped (`&`, `<`, `>`, `"`), so no input breaks the
//!   document;
//! - durations are `xs:duration` with milliseconds (`PT5.986S`), date-times
//!   `xs:dateTime` in UTC;
//! - a `SegmentList` writes one `SegmentURL` per timeline segment (entries with a
//!   repeat count `r` stand for `r + 1` segments); URLs missing from the input are not
//!   invented, extra ones are dropped, so the two always agree.
//!
//! No I/O, no clock: times are inputs.

use std::fmt::Write as _;

/// Static (on demand, with a duration) or dynamic (live) presentation
/// (ISO/IEC 23009-1 §5.3.1.2, `MPD@type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presentation {
    Static {
        /// `mediaPresentationDuration`.
        duration_ms: u64,
    },
    Dynamic {
        /// `availabilityStartTime`, ms since the Unix epoch.
        availability_start_ms: i64,
        /// `publishTime`.
        publish_time_ms: i64,
        /// `minimumUpdatePeriod`.
        minimum_update_period_ms: u64,
        /// `timeShiftBufferDepth`.
        time_shift_buffer_depth_ms: u64,
        /// `suggestedPresentationDelay`.
        suggested_presentation_delay_ms: Option<u64>,
    },
}

/// One `S` element of a `SegmentTimeline`: a start `t` (when not following on from the
/// previous), a duration `d` and a repeat count `r` (this many more of the same `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimelineEntry {
    pub t: Option<u64>,
    pub d: u64,
    pub r: u32,
}

/// How segment URLs are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    /// `SegmentList`: the init URL and one URL per segment.
    List {
        initialization: String,
        media: Vec<String>,
    },
    /// `SegmentTemplate` with `$Time$` / `$Number$` / `$RepresentationID$` templates.
    Template {
        initialization: String,
        media: String,
        start_number: Option<u64>,
    },
}

/// The segments of one Representation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segments {
    /// Ticks per second of `t`, `d` and `presentation_time_offset`.
    pub timescale: u64,
    /// `presentationTimeOffset`: the media time at the Period's start (0: not written).
    pub presentation_time_offset: u64,
    pub timeline: Vec<TimelineEntry>,
    pub addressing: Addressing,
}

/// A Representation (ISO/IEC 23009-1 §5.3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Representation {
    pub id: String,
    /// RFC 6381 codec string.
    pub codecs: String,
    /// Bits per second.
    pub bandwidth: u64,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub audio_sampling_rate: Option<u32>,
    pub segments: Segments,
}

/// An AdaptationSet (ISO/IEC 23009-1 §5.3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdaptationSet {
    /// `contentType` (`video`, `audio`), when written.
    pub content_type: Option<String>,
    pub mime_type: String,
    pub segment_alignment: bool,
    /// `startWithSAP`.
    pub start_with_sap: Option<u8>,
    pub representations: Vec<Representation>,
}

/// A Period (ISO/IEC 23009-1 §5.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// Stable across updates of a dynamic MPD (DASH-IF IOP: a Period keeps its id).
    pub id: String,
    /// `start`, from the presentation's start (the availability start of a dynamic
    /// MPD).
    pub start_ms: u64,
    pub adaptation_sets: Vec<AdaptationSet>,
}

/// A whole MPD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mpd {
    pub profiles: String,
    pub min_buffer_time_ms: u64,
    pub presentation: Presentation,
    pub periods: Vec<Period>,
}

/// The isoff-live profile.
pub const PROFILE_ISOFF_LIVE: &str = "urn:mpeg:dash:profile:isoff-live:2011";

/// An attribute value with XML's five special characters escaped.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 does not allow at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            '\u{FFFE}' | '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// `xs:duration` with milliseconds: `PT5.986S`.
pub fn duration(ms: u64) -> String {
    format!("PT{}.{:03}S", ms / 1000, ms % 1000)
}

/// `xs:dateTime` in UTC, with milliseconds only when there are some.
pub fn date_time(ms: i64) -> String {
    let full = super::hls::date_time_ms(ms);
    if ms.rem_euclid(1000) == 0 {
        // "…T00:00:00.000Z" → "…T00:00:00Z"
        format!("{}Z", &full[..full.len() - 5])
    } else {
        full
    }
}

/// How many segments a timeline describes.
pub fn segment_count(timeline: &[TimelineEntry]) -> u64 {
    timeline.iter().map(|s| u64::from(s.r) + 1).sum()
}

/// Consecutive segments of one duration folded into `r` repeats: `(t, d)` pairs in
/// time order to timeline entries (`t` written where a segment does not start where
/// the previous ended).
pub fn timeline_of(segments: &[(u64, u64)]) -> Vec<TimelineEntry> {
    let mut out: Vec<TimelineEntry> = Vec::new();
    let mut next_t = None;
    for &(t, d) in segments {
        let follows = next_t == Some(t);
        match out.last_mut() {
            Some(last) if follows && last.d == d && last.r < u32::MAX => last.r += 1,
            _ => out.push(TimelineEntry {
                t: if follows { None } else { Some(t) },
                d,
                r: 0,
            }),
        }
        next_t = t.checked_add(d);
    }
    out
}

/// The MPD text.
pub fn write_mpd(mpd: &Mpd) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = write!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"{}\" minBufferTime=\"{}\"",
        xml_escape(&mpd.profiles),
        duration(mpd.min_buffer_time_ms)
    );
    match &mpd.presentation {
        Presentation::Static { duration_ms } => {
            let _ = writeln!(
                out,
                " type=\"static\" mediaPresentationDuration=\"{}\">",
                duration(*duration_ms)
            );
        }
        Presentation::Dynamic {
            availability_start_ms,
            publish_time_ms,
            minimum_update_period_ms,
            time_shift_buffer_depth_ms,
            suggested_presentation_delay_ms,
        } => {
            let _ = write!(
                out,
                " type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\" minimumUpdatePeriod=\"{}\" timeShiftBufferDepth=\"{}\"",
                date_time(*availability_start_ms),
                date_time(*publish_time_ms),
                duration(*minimum_update_period_ms),
                duration(*time_shift_buffer_depth_ms),
            );
            if let Some(d) = suggested_presentation_delay_ms {
                let _ = write!(out, " suggestedPresentationDelay=\"{}\"", duration(*d));
            }
            out.push_str(">\n");
        }
    }
    for period in &mpd.periods {
        let _ = writeln!(
            out,
            "  <Period id=\"{}\" start=\"{}\">",
            xml_escape(&period.id),
            duration(period.start_ms)
        );
        for set in &period.adaptation_sets {
            write_adaptation_set(&mut out, set);
        }
        out.push_str("  </Period>\n");
    }
    out.push_str("</MPD>\n");
    out
}

fn write_adaptation_set(out: &mut String, set: &AdaptationSet) {
    out.push_str("    <AdaptationSet");
    if let Some(ct) = &set.content_type {
        let _ = write!(out, " contentType=\"{}\"", xml_escape(ct));
    }
    let _ = write!(out, " mimeType=\"{}\"", xml_escape(&set.mime_type));
    if set.segment_alignment {
        out.push_str(" segmentAlignment=\"true\"");
    }
    if let Some(sap) = set.start_with_sap {
        let _ = write!(out, " startWithSAP=\"{sap}\"");
    }
    out.push_str(">\n");
    for r in &set.representations {
        let _ = write!(
            out,
            "      <Representation id=\"{}\" codecs=\"{}\" bandwidth=\"{}\"",
            xml_escape(&r.id),
            xml_escape(&r.codecs),
            r.bandwidth
        );
        if let Some(w) = r.width {
            let _ = write!(out, " width=\"{w}\"");
        }
        if let Some(h) = r.height {
            let _ = write!(out, " height=\"{h}\"");
        }
        if let Some(rate) = r.audio_sampling_rate {
            let _ = write!(out, " audioSamplingRate=\"{rate}\"");
        }
        out.push_str(">\n");
        write_segments(out, &r.segments);
        out.push_str("      </Representation>\n");
    }
    out.push_str("    </AdaptationSet>\n");
}

fn write_timeline(out: &mut String, timeline: &[TimelineEntry]) {
    out.push_str("          <SegmentTimeline>\n");
    for s in timeline {
        out.push_str("            <S");
        if let Some(t) = s.t {
            let _ = write!(out, " t=\"{t}\"");
        }
        let _ = write!(out, " d=\"{}\"", s.d);
        if s.r > 0 {
            let _ = write!(out, " r=\"{}\"", s.r);
        }
        out.push_str("/>\n");
    }
    out.push_str("          </SegmentTimeline>\n");
}

fn write_segments(out: &mut String, s: &Segments) {
    let pto = if s.presentation_time_offset > 0 {
        format!(" presentationTimeOffset=\"{}\"", s.presentation_time_offset)
    } else {
        String::new()
    };
    match &s.addressing {
        Addressing::List {
            initialization,
            media,
        } => {
            let _ = writeln!(
                out,
                "        <SegmentList timescale=\"{}\"{pto}>",
                s.timescale.max(1)
            );
            let _ = writeln!(
                out,
                "          <Initialization sourceURL=\"{}\"/>",
                xml_escape(initialization)
            );
            write_timeline(out, &s.timeline);
            let count = usize::try_from(segment_count(&s.timeline)).unwrap_or(usize::MAX);
            for url in media.iter().take(count) {
                let _ = writeln!(out, "          <SegmentURL media=\"{}\"/>", xml_escape(url));
            }
            out.push_str("        </SegmentList>\n");
        }
        Addressing::Template {
            initialization,
            media,
            start_number,
        } => {
            let _ = write!(
                out,
                "        <SegmentTemplate timescale=\"{}\"{pto} initialization=\"{}\" media=\"{}\"",
                s.timescale.max(1),
                xml_escape(initialization),
                xml_escape(media)
            );
            if let Some(n) = start_number {
                let _ = write!(out, " startNumber=\"{n}\"");
            }
            out.push_str(">\n");
            write_timeline(out, &s.timeline);
            out.push_str("        </SegmentTemplate>\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(id: &str, segments: Segments) -> AdaptationSet {
        AdaptationSet {
            content_type: Some("video".into()),
            mime_type: "video/mp4".into(),
            segment_alignment: true,
            start_with_sap: Some(1),
            representations: vec![Representation {
                id: id.into(),
                codecs: "avc1.4d401f".into(),
                bandwidth: 1_000_000,
                width: Some(1280),
                height: Some(720),
                audio_sampling_rate: None,
                segments,
            }],
        }
    }

    /// A static MPD with a SegmentTemplate and a SegmentTimeline, in the shape of the
    /// on-demand examples of ISO/IEC 23009-1 (Annex G) and DASH-IF IOP §4.
    #[test]
    fn a_static_mpd_with_a_segment_template_and_timeline() {
        let mpd = Mpd {
            profiles: PROFILE_ISOFF_LIVE.into(),
            min_buffer_time_ms: 2_000,
            presentation: Presentation::Static {
                duration_ms: 21_021,
            },
            periods: vec![Period {
                id: "1".into(),
                start_ms: 0,
                adaptation_sets: vec![video(
                    "v1",
                    Segments {
                        timescale: 90_000,
                        presentation_time_offset: 0,
                        // 9.009 s, 9.009 s, 3.003 s at 90 kHz.
                        timeline: timeline_of(&[
                            (0, 810_810),
                            (810_810, 810_810),
                            (1_621_620, 270_270),
                        ]),
                        addressing: Addressing::Template {
                            initialization: "$RepresentationID$/init.mp4".into(),
                            media: "$RepresentationID$/$Time$.m4s".into(),
                            start_number: None,
                        },
                    },
                )],
            }],
        };
        assert_eq!(
            write_mpd(&mpd),
            r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" minBufferTime="PT2.000S" type="static" mediaPresentationDuration="PT21.021S">
  <Period id="1" start="PT0.000S">
    <AdaptationSet contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1">
      <Representation id="v1" codecs="avc1.4d401f" bandwidth="1000000" width="1280" height="720">
        <SegmentTemplate timescale="90000" initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/$Time$.m4s">
          <SegmentTimeline>
            <S t="0" d="810810" r="1"/>
            <S d="270270"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#
        );
    }

    /// A dynamic MPD (DASH-IF IOP §4.3, live with SegmentTimeline): availability start
    /// at the epoch, a timeline starting at the live media time, a gap closed by a new
    /// Period whose `start` and `presentationTimeOffset` agree.
    #[test]
    fn a_dynamic_mpd_with_a_timeline_and_a_period_after_a_gap() {
        let list = |pto: u64, t0: u64, n: u64, first: u64| Segments {
            timescale: 1000,
            presentation_time_offset: pto,
            timeline: timeline_of(&(0..n).map(|i| (t0 + i * 2000, 2000)).collect::<Vec<_>>()),
            addressing: Addressing::List {
                initialization: format!("init.mp4?s=a&f={first}"),
                media: (0..n)
                    .map(|i| format!("seg.mp4?s=a&f={}", first + i))
                    .collect(),
            },
        };
        let mpd = Mpd {
            profiles: PROFILE_ISOFF_LIVE.into(),
            min_buffer_time_ms: 2_000,
            presentation: Presentation::Dynamic {
                availability_start_ms: 0,
                publish_time_ms: 1_700_000_010_500,
                minimum_update_period_ms: 2_000,
                time_shift_buffer_depth_ms: 30_000,
                suggested_presentation_delay_ms: Some(6_000),
            },
            periods: vec![
                Period {
                    id: "f7".into(),
                    start_ms: 1_700_000_000_000,
                    adaptation_sets: vec![video(
                        "v1",
                        list(1_700_000_000_000, 1_700_000_000_000, 2, 7),
                    )],
                },
                Period {
                    id: "f9".into(),
                    start_ms: 1_700_000_006_000,
                    adaptation_sets: vec![video(
                        "v1",
                        list(1_700_000_006_000, 1_700_000_006_000, 2, 9),
                    )],
                },
            ],
        };
        let text = write_mpd(&mpd);
        assert!(text.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" minBufferTime=\"PT2.000S\" type=\"dynamic\" availabilityStartTime=\"1970-01-01T00:00:00Z\" publishTime=\"2023-11-14T22:13:30.500Z\" minimumUpdatePeriod=\"PT2.000S\" timeShiftBufferDepth=\"PT30.000S\" suggestedPresentationDelay=\"PT6.000S\">\n"
        ), "{text}");
        let second = r#"  <Period id="f9" start="PT1700000006.000S">
    <AdaptationSet contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1">
      <Representation id="v1" codecs="avc1.4d401f" bandwidth="1000000" width="1280" height="720">
        <SegmentList timescale="1000" presentationTimeOffset="1700000006000">
          <Initialization sourceURL="init.mp4?s=a&amp;f=9"/>
          <SegmentTimeline>
            <S t="1700000006000" d="2000" r="1"/>
          </SegmentTimeline>
          <SegmentURL media="seg.mp4?s=a&amp;f=9"/>
          <SegmentURL media="seg.mp4?s=a&amp;f=10"/>
        </SegmentList>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#;
        assert!(text.ends_with(second), "{text}");
        assert_eq!(text.matches("<Period ").count(), 2);
        assert_eq!(text.matches("<SegmentURL ").count(), 4);
    }

    #[test]
    fn timelines_fold_repeats_and_mark_jumps() {
        assert_eq!(timeline_of(&[]), []);
        let t = timeline_of(&[(0, 10), (10, 10), (20, 5), (40, 5), (45, 5)]);
        assert_eq!(
            t,
            [
                TimelineEntry {
                    t: Some(0),
                    d: 10,
                    r: 1
                },
                TimelineEntry {
                    t: None,
                    d: 5,
                    r: 0
                },
                TimelineEntry {
                    t: Some(40),
                    d: 5,
                    r: 1
                },
            ]
        );
        assert_eq!(segment_count(&t), 5);
    }

    #[test]
    fn untrusted_text_is_escaped_and_urls_match_the_timeline() {
        assert_eq!(xml_escape("a&b\"<>'\u{1}"), "a&amp;b&quot;&lt;&gt;&apos;");
        let mut set = video(
            "\"><x>",
            Segments {
                timescale: 0,
                presentation_time_offset: 0,
                timeline: vec![TimelineEntry {
                    t: Some(0),
                    d: 1,
                    r: 0,
                }],
                addressing: Addressing::List {
                    initialization: "i".into(),
                    media: vec!["a".into(), "b".into()],
                },
            },
        );
        set.content_type = None;
        let mpd = Mpd {
            profiles: PROFILE_ISOFF_LIVE.into(),
            min_buffer_time_ms: 1,
            presentation: Presentation::Static { duration_ms: 1 },
            periods: vec![Period {
                id: "<".into(),
                start_ms: 0,
                adaptation_sets: vec![set],
            }],
        };
        let text = write_mpd(&mpd);
        assert!(!text.contains("<x>"));
        assert!(text.contains("id=\"&lt;\""));
        assert!(text.contains("timescale=\"1\""));
        assert_eq!(text.matches("<SegmentURL ").count(), 1);
        assert_eq!(date_time(1_000), "1970-01-01T00:00:01Z");
        assert_eq!(date_time(1_001), "1970-01-01T00:00:01.001Z");
        assert_eq!(duration(5_986), "PT5.986S");
    }
}
