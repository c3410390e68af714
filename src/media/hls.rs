//! HLS playlists (RFC 8216, HTTP Live Streaming): the master playlist and the media
//! playlist written from plain descriptions, and a reader of what the writer emits.
//!
//! The writer takes a [`MasterPlaylist`] or a [`MediaPlaylist`] (segments with their
//! durations in milliseconds, discontinuities, init-section and date tags) and returns
//! the playlist text. It decides nothing about which fragments to list or when a
//! discontinuity falls: the video domain (`video::playback`) does that and hands the
//! result in. The writer keeps the invariants of RFC 8216 §4.3.3.1 and §6.2.1 that
//! depend only on its input:
//!
//! - `EXT-X-TARGETDURATION` is at least every `EXTINF` duration rounded to the nearest
//!   integer (we round up, so it bounds the written durations themselves);
//! - the media sequence of segment *i* is `EXT-X-MEDIA-SEQUENCE` + *i*;
//! - `EXT-X-DISCONTINUITY-SEQUENCE` is written when given (the caller counts the
//!   discontinuities that slid out of a live window);
//! - URIs and titles cannot break a line or a quoted attribute (line breaks and `"`
//!   are dropped).
//!
//! [`parse_media_playlist`] reads a media playlist back (the tags this module writes
//! and the basic tags of RFC 8216 §4.3.1–4.3.3); it is for tests, the fuzz target and
//! conformance checks, and refuses what it does not understand instead of guessing.
//!
//! No I/O, no clock: times are inputs.

use std::fmt::Write as _;

/// One variant stream of a master playlist (`EXT-X-STREAM-INF`, RFC 8216 §4.3.4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Peak bits per second (`BANDWIDTH`, required).
    pub bandwidth: u64,
    /// `AVERAGE-BANDWIDTH`.
    pub average_bandwidth: Option<u64>,
    /// RFC 6381 codec strings (`CODECS`); none written when empty.
    pub codecs: Vec<String>,
    /// `RESOLUTION` as width × height.
    pub resolution: Option<(u32, u32)>,
    /// The media playlist's URI.
    pub uri: String,
}

/// A master playlist (RFC 8216 §4.3.4).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MasterPlaylist {
    /// `EXT-X-VERSION`, when one is written.
    pub version: Option<u8>,
    /// `EXT-X-INDEPENDENT-SEGMENTS`.
    pub independent_segments: bool,
    pub variants: Vec<Variant>,
}

/// `EXT-X-PLAYLIST-TYPE` (RFC 8216 §4.3.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistType {
    Vod,
    Event,
}

/// One media segment of a media playlist (RFC 8216 §4.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Segment {
    /// `EXTINF` duration in milliseconds (written with three decimals).
    pub duration_ms: u64,
    /// `EXTINF` title (usually empty).
    pub title: String,
    pub uri: String,
    /// `EXT-X-DISCONTINUITY` before this segment.
    pub discontinuity: bool,
    /// `EXT-X-MAP:URI=...`: the init section from this segment on.
    pub map_uri: Option<String>,
    /// `EXT-X-PROGRAM-DATE-TIME`, milliseconds since the Unix epoch.
    pub program_date_time_ms: Option<i64>,
}

/// A media playlist (RFC 8216 §4.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MediaPlaylist {
    /// `EXT-X-VERSION`, when one is written.
    pub version: Option<u8>,
    /// `EXT-X-TARGETDURATION` in seconds; when `None`, the longest segment rounded up
    /// (at least 1).
    pub target_duration_s: Option<u64>,
    /// `EXT-X-MEDIA-SEQUENCE`: the media sequence number of the first segment (0, the
    /// default, when not written).
    pub media_sequence: Option<u64>,
    /// `EXT-X-DISCONTINUITY-SEQUENCE` (RFC 8216 §4.3.3.3), when given.
    pub discontinuity_sequence: Option<u64>,
    pub playlist_type: Option<PlaylistType>,
    /// `EXT-X-INDEPENDENT-SEGMENTS`.
    pub independent_segments: bool,
    pub segments: Vec<Segment>,
    /// `EXT-X-ENDLIST`: no segment will be added.
    pub ended: bool,
}

/// Drops what would end a line or a quoted attribute value.
fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '"'))
        .collect()
}

/// A URI line: never empty and never a tag or comment (RFC 8216 §4.1: lines starting
/// with `#` are tags or comments).
fn uri_line(s: &str) -> String {
    let mut u = clean(s);
    if u.is_empty() || u.starts_with('#') {
        u.insert(0, '.');
        if u == "." {
            u.push('/');
        }
    }
    u
}

/// Milliseconds as decimal seconds with three places (`9009` → `9.009`).
pub fn seconds_3(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// ISO 8601 date-time with milliseconds in UTC (`EXT-X-PROGRAM-DATE-TIME`, RFC 8216
/// §4.3.2.6), e.g. `2023-11-14T22:13:20.123Z`.
pub fn date_time_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = crate::clock::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The master playlist text.
pub fn write_master(p: &MasterPlaylist) -> String {
    let mut out = String::from("#EXTM3U\n");
    if let Some(v) = p.version {
        let _ = writeln!(out, "#EXT-X-VERSION:{v}");
    }
    if p.independent_segments {
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    }
    for v in &p.variants {
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
        if let Some(avg) = v.average_bandwidth {
            let _ = write!(out, ",AVERAGE-BANDWIDTH={avg}");
        }
        if !v.codecs.is_empty() {
            let codecs: Vec<String> = v.codecs.iter().map(|c| clean(c)).collect();
            let _ = write!(out, ",CODECS=\"{}\"", codecs.join(","));
        }
        if let Some((w, h)) = v.resolution {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        let _ = writeln!(out, "\n{}", uri_line(&v.uri));
    }
    out
}

/// The target duration a playlist of these segments needs: the longest rounded up,
/// at least 1 s.
pub fn target_duration_s(segments: &[Segment]) -> u64 {
    segments
        .iter()
        .map(|s| s.duration_ms.div_ceil(1000))
        .max()
        .unwrap_or(1)
        .max(1)
}

/// The media playlist text. A given target duration shorter than a segment is raised
/// to fit it (RFC 8216 §4.3.3.1: a segment may not be longer).
pub fn write_media(p: &MediaPlaylist) -> String {
    let target = target_duration_s(&p.segments).max(p.target_duration_s.unwrap_or(0));
    let mut out = String::from("#EXTM3U\n");
    if let Some(v) = p.version {
        let _ = writeln!(out, "#EXT-X-VERSION:{v}");
    }
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    if let Some(n) = p.media_sequence {
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{n}");
    }
    if let Some(d) = p.discontinuity_sequence {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{d}");
    }
    match p.playlist_type {
        Some(PlaylistType::Vod) => out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n"),
        Some(PlaylistType::Event) => out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
        None => {}
    }
    if p.independent_segments {
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    }
    for s in &p.segments {
        if s.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if let Some(map) = &s.map_uri {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", clean(map));
        }
        if let Some(t) = s.program_date_time_ms {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", date_time_ms(t));
        }
        let _ = writeln!(
            out,
            "#EXTINF:{},{}",
            seconds_3(s.duration_ms),
            clean(&s.title).replace(',', " ")
        );
        let _ = writeln!(out, "{}", uri_line(&s.uri));
    }
    if p.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// A media playlist as read back: the header tags and the segments, durations in
/// milliseconds (`EXTINF` values with up to three decimals).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedMedia {
    pub version: Option<u8>,
    pub target_duration_s: u64,
    pub media_sequence: u64,
    pub discontinuity_sequence: u64,
    pub playlist_type: Option<PlaylistType>,
    pub independent_segments: bool,
    pub segments: Vec<ParsedSegment>,
    pub ended: bool,
}

/// One segment as read back, with its media sequence number (RFC 8216 §6.2.1) and
/// discontinuity sequence number (§4.3.3.3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedSegment {
    pub sequence: u64,
    pub discontinuity_sequence: u64,
    pub duration_ms: u64,
    pub title: String,
    pub uri: String,
    pub discontinuity: bool,
    pub map_uri: Option<String>,
    pub program_date_time: Option<String>,
}

/// Why a media playlist did not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub reason: &'static str,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// `9.009` → 9009 ms; at most three decimals.
fn parse_seconds(s: &str) -> Option<u64> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || frac.len() > 3 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut millis: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..3 {
        millis *= 10;
    }
    whole.checked_mul(1000)?.checked_add(millis)
}

/// Reads a media playlist (blank lines and comments skipped, unknown `EXT` tags
/// refused). Checks the rules the writer keeps: every `EXTINF` duration rounded to the
/// nearest second is at most the target duration; each segment has exactly one URI;
/// header tags appear once, before the first segment.
pub fn parse_media_playlist(text: &str) -> Result<ParsedMedia, ParseError> {
    let mut out = ParsedMedia::default();
    let mut lines = text.lines().enumerate();
    let err = |line: usize, reason| ParseError {
        line: line + 1,
        reason,
    };
    match lines.next() {
        Some((_, "#EXTM3U")) => {}
        _ => return Err(err(0, "the playlist must start with #EXTM3U")),
    }
    let mut target = None;
    let mut pending = ParsedSegment::default();
    let mut pending_extinf = false;
    let mut map: Option<String> = None;
    let mut seen_segment = false;
    let mut header_seen = std::collections::HashSet::new();
    let mut disc_seq = 0u64;
    for (n, line) in lines.by_ref() {
        if out.ended {
            if line.trim().is_empty() {
                continue;
            }
            return Err(err(n, "nothing may follow #EXT-X-ENDLIST"));
        }
        if line.is_empty() || (line.starts_with('#') && !line.starts_with("#EXT")) {
            continue;
        }
        let (tag, value) = match line.split_once(':') {
            Some((t, v)) if t.starts_with("#EXT") => (t, Some(v)),
            _ => (line, None),
        };
        let header = matches!(
            tag,
            "#EXT-X-VERSION"
                | "#EXT-X-TARGETDURATION"
                | "#EXT-X-MEDIA-SEQUENCE"
                | "#EXT-X-DISCONTINUITY-SEQUENCE"
                | "#EXT-X-PLAYLIST-TYPE"
        );
        if header {
            if seen_segment || pending_extinf {
                return Err(err(n, "a playlist tag follows a segment"));
            }
            if !header_seen.insert(tag) {
                return Err(err(n, "a playlist tag appears twice"));
            }
        }
        let number = |v: Option<&str>| -> Result<u64, ParseError> {
            v.and_then(|v| v.parse::<u64>().ok())
                .filter(|_| v.is_some_and(|v| v.bytes().all(|b| b.is_ascii_digit())))
                .ok_or(err(n, "not a decimal integer"))
        };
        match tag {
            "#EXT-X-VERSION" => {
                out.version =
                    Some(u8::try_from(number(value)?).map_err(|_| err(n, "version out of range"))?)
            }
            "#EXT-X-TARGETDURATION" => target = Some(number(value)?),
            "#EXT-X-MEDIA-SEQUENCE" => out.media_sequence = number(value)?,
            "#EXT-X-DISCONTINUITY-SEQUENCE" => {
                out.discontinuity_sequence = number(value)?;
                disc_seq = out.discontinuity_sequence;
            }
            "#EXT-X-PLAYLIST-TYPE" => {
                out.playlist_type = Some(match value {
                    Some("VOD") => PlaylistType::Vod,
                    Some("EVENT") => PlaylistType::Event,
                    _ => return Err(err(n, "unknown playlist type")),
                })
            }
            "#EXT-X-INDEPENDENT-SEGMENTS" if value.is_none() => out.independent_segments = true,
            "#EXT-X-ENDLIST" if value.is_none() => {
                if pending_extinf {
                    return Err(err(n, "a segment has no URI"));
                }
                out.ended = true;
            }
            "#EXT-X-DISCONTINUITY" if value.is_none() => {
                if pending.discontinuity {
                    return Err(err(n, "two discontinuity tags for one segment"));
                }
                pending.discontinuity = true;
            }
            "#EXT-X-MAP" => {
                let uri = value
                    .and_then(|v| v.strip_prefix("URI=\""))
                    .and_then(|v| v.strip_suffix('"'))
                    .filter(|u| !u.contains('"'))
                    .ok_or(err(n, "EXT-X-MAP needs a quoted URI"))?;
                map = Some(uri.to_string());
                pending.map_uri = map.clone();
            }
            "#EXT-X-PROGRAM-DATE-TIME" => {
                pending.program_date_time =
                    Some(value.ok_or(err(n, "a date-time is needed"))?.to_string())
            }
            "#EXTINF" => {
                if pending_extinf {
                    return Err(err(n, "two EXTINF tags for one segment"));
                }
                let value = value.ok_or(err(n, "EXTINF needs a duration"))?;
                let (duration, title) = value.split_once(',').unwrap_or((value, ""));
                pending.duration_ms =
                    parse_seconds(duration).ok_or(err(n, "not a decimal duration"))?;
                pending.title = title.to_string();
                pending_extinf = true;
            }
            _ if line.starts_with('#') => return Err(err(n, "unknown tag")),
            _ => {
                if !pending_extinf {
                    return Err(err(n, "a URI without EXTINF"));
                }
                seen_segment = true;
                pending.uri = line.to_string();
                if pending.discontinuity {
                    // A segment's discontinuity sequence number counts the tags before
                    // its URI line, its own included (RFC 8216 §4.3.3.3).
                    disc_seq = disc_seq
                        .checked_add(1)
                        .ok_or(err(n, "the discontinuity sequence overflows"))?;
                }
                if pending.map_uri.is_none() {
                    pending.map_uri = map.clone();
                }
                pending.sequence = out
                    .media_sequence
                    .checked_add(out.segments.len() as u64)
                    .ok_or(err(n, "the media sequence overflows"))?;
                pending.discontinuity_sequence = disc_seq;
                out.segments.push(std::mem::take(&mut pending));
                pending_extinf = false;
            }
        }
    }
    if pending_extinf {
        return Err(err(usize::MAX - 1, "a segment has no URI"));
    }
    out.target_duration_s = target.ok_or(err(0, "EXT-X-TARGETDURATION is required"))?;
    if let Some(i) = out
        .segments
        .iter()
        .position(|s| s.duration_ms.saturating_add(500) / 1000 > out.target_duration_s)
    {
        return Err(err(i, "a segment is longer than the target duration"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(ms: u64, uri: &str) -> Segment {
        Segment {
            duration_ms: ms,
            uri: uri.into(),
            ..Segment::default()
        }
    }

    /// RFC 8216 §8.1, "Simple Media Playlist".
    const RFC_8_1: &str = "#EXTM3U
#EXT-X-TARGETDURATION:10
#EXT-X-VERSION:3
#EXTINF:9.009,
http://media.example.com/first.ts
#EXTINF:9.009,
http://media.example.com/second.ts
#EXTINF:3.003,
http://media.example.com/third.ts
#EXT-X-ENDLIST
";

    #[test]
    fn the_simple_media_playlist_of_rfc_8216() {
        let p = MediaPlaylist {
            version: Some(3),
            target_duration_s: Some(10),
            segments: vec![
                segment(9009, "http://media.example.com/first.ts"),
                segment(9009, "http://media.example.com/second.ts"),
                segment(3003, "http://media.example.com/third.ts"),
            ],
            ended: true,
            ..MediaPlaylist::default()
        };
        let text = write_media(&p);
        // The same tags, values and segments; the RFC puts TARGETDURATION first.
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXTINF:9.009,\nhttp://media.example.com/first.ts\n#EXTINF:9.009,\nhttp://media.example.com/second.ts\n#EXTINF:3.003,\nhttp://media.example.com/third.ts\n#EXT-X-ENDLIST\n"
        );
        let ours = parse_media_playlist(&text).unwrap();
        let theirs = parse_media_playlist(RFC_8_1).unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(theirs.target_duration_s, 10);
        assert_eq!(theirs.version, Some(3));
        assert_eq!(
            theirs
                .segments
                .iter()
                .map(|s| s.duration_ms)
                .collect::<Vec<_>>(),
            [9009, 9009, 3003]
        );
        assert!(theirs.ended);
    }

    /// RFC 8216 §8.2, "Live Media Playlist Using HTTPS".
    const RFC_8_2: &str = "#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:8
#EXT-X-MEDIA-SEQUENCE:2680

#EXTINF:7.975,
https://priv.example.com/fileSequence2680.ts
#EXTINF:7.941,
https://priv.example.com/fileSequence2681.ts
#EXTINF:7.975,
https://priv.example.com/fileSequence2682.ts
";

    #[test]
    fn the_live_media_playlist_of_rfc_8216() {
        let p = MediaPlaylist {
            version: Some(3),
            media_sequence: Some(2680),
            segments: [7975, 7941, 7975]
                .iter()
                .enumerate()
                .map(|(i, &ms)| {
                    segment(
                        ms,
                        &format!("https://priv.example.com/fileSequence{}.ts", 2680 + i),
                    )
                })
                .collect(),
            ..MediaPlaylist::default()
        };
        let text = write_media(&p);
        assert_eq!(
            text,
            RFC_8_2.replace("\n\n", "\n"),
            "byte for byte, but for the blank line"
        );
        let parsed = parse_media_playlist(&text).unwrap();
        assert_eq!(parsed, parse_media_playlist(RFC_8_2).unwrap());
        assert_eq!(parsed.target_duration_s, 8);
        assert!(!parsed.ended);
        assert_eq!(
            parsed
                .segments
                .iter()
                .map(|s| s.sequence)
                .collect::<Vec<_>>(),
            [2680, 2681, 2682]
        );
    }

    /// RFC 8216 §8.4, "Master Playlist".
    const RFC_8_4: &str = "#EXTM3U
#EXT-X-STREAM-INF:BANDWIDTH=1280000,AVERAGE-BANDWIDTH=1000000
http://example.com/low.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=2560000,AVERAGE-BANDWIDTH=2000000
http://example.com/mid.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=7680000,AVERAGE-BANDWIDTH=6000000
http://example.com/hi.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=65000,CODECS=\"mp4a.40.5\"
http://example.com/audio-only.m3u8
";

    #[test]
    fn the_master_playlist_of_rfc_8216() {
        let variant = |bw, avg: Option<u64>, codecs: &[&str], uri: &str| Variant {
            bandwidth: bw,
            average_bandwidth: avg,
            codecs: codecs.iter().map(|c| c.to_string()).collect(),
            resolution: None,
            uri: uri.into(),
        };
        let p = MasterPlaylist {
            version: None,
            independent_segments: false,
            variants: vec![
                variant(
                    1_280_000,
                    Some(1_000_000),
                    &[],
                    "http://example.com/low.m3u8",
                ),
                variant(
                    2_560_000,
                    Some(2_000_000),
                    &[],
                    "http://example.com/mid.m3u8",
                ),
                variant(
                    7_680_000,
                    Some(6_000_000),
                    &[],
                    "http://example.com/hi.m3u8",
                ),
                variant(
                    65_000,
                    None,
                    &["mp4a.40.5"],
                    "http://example.com/audio-only.m3u8",
                ),
            ],
        };
        assert_eq!(write_master(&p), RFC_8_4);
        // Several codecs and a resolution, as the playback master playlist writes them.
        let muxed = MasterPlaylist {
            version: Some(7),
            independent_segments: true,
            variants: vec![Variant {
                bandwidth: 800_000,
                average_bandwidth: None,
                codecs: vec!["avc1.64001f".into(), "mp4a.40.2".into()],
                resolution: Some((1280, 720)),
                uri: "media.m3u8?t=1".into(),
            }],
        };
        assert_eq!(
            write_master(&muxed),
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720\nmedia.m3u8?t=1\n"
        );
    }

    #[test]
    fn discontinuities_maps_and_dates_are_written_and_counted() {
        let mut segments: Vec<Segment> = (0..4)
            .map(|i| segment(1000, &format!("s{}.mp4", 100 + i)))
            .collect();
        segments[0].map_uri = Some("init.mp4?f=1".into());
        segments[0].program_date_time_ms = Some(1_700_000_000_123);
        segments[2].discontinuity = true;
        segments[2].map_uri = Some("init.mp4?f=2".into());
        segments[3].duration_ms = 2_400;
        let p = MediaPlaylist {
            version: Some(7),
            media_sequence: Some(100),
            discontinuity_sequence: Some(6),
            segments,
            ..MediaPlaylist::default()
        };
        let text = write_media(&p);
        assert!(text.contains("#EXT-X-TARGETDURATION:3\n"), "{text}");
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.123Z\n"));
        assert!(text.contains(
            "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init.mp4?f=2\"\n#EXTINF:1.000,\ns102.mp4\n"
        ));
        let parsed = parse_media_playlist(&text).unwrap();
        assert_eq!(parsed.discontinuity_sequence, 6);
        let seqs: Vec<(u64, u64)> = parsed
            .segments
            .iter()
            .map(|s| (s.sequence, s.discontinuity_sequence))
            .collect();
        assert_eq!(seqs, [(100, 6), (101, 6), (102, 7), (103, 7)]);
        assert_eq!(parsed.segments[1].map_uri.as_deref(), Some("init.mp4?f=1"));
        assert_eq!(parsed.segments[3].map_uri.as_deref(), Some("init.mp4?f=2"));
    }

    #[test]
    fn untrusted_text_cannot_break_the_playlist() {
        let mut s = segment(500, "#EXTINF:99,\nevil\"uri");
        s.map_uri = Some("a\"\nb".into());
        s.title = "x,\ny".into();
        let p = MediaPlaylist {
            segments: vec![s, segment(0, "")],
            ended: true,
            ..MediaPlaylist::default()
        };
        let text = write_media(&p);
        let parsed = parse_media_playlist(&text).unwrap();
        assert_eq!(parsed.segments.len(), 2);
        assert_eq!(parsed.segments[0].uri, ".#EXTINF:99,eviluri");
        assert_eq!(parsed.segments[1].uri, "./");
        // A target duration below the longest segment is raised.
        let short = MediaPlaylist {
            target_duration_s: Some(1),
            segments: vec![segment(4_001, "a")],
            ..MediaPlaylist::default()
        };
        assert_eq!(
            parse_media_playlist(&write_media(&short))
                .unwrap()
                .target_duration_s,
            5
        );
    }

    #[test]
    fn the_reader_refuses_what_breaks_the_rules() {
        for bad in [
            "",
            "#EXTM3U\n#EXTINF:1,\na\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:2.000,\na\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\na\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\na\n#EXT-X-MEDIA-SEQUENCE:3\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-TARGETDURATION:1\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:-1\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:0.0001,\na\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-ENDLIST\n#EXTINF:1,\na\n",
            "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-BOGUS\n",
        ] {
            assert!(parse_media_playlist(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_seconds("9.5"), Some(9500));
        assert_eq!(parse_seconds("10"), Some(10_000));
        assert_eq!(parse_seconds(".5"), None);
    }

    #[test]
    fn dates() {
        assert_eq!(date_time_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(date_time_ms(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(date_time_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(seconds_3(5_986), "5.986");
    }
}
