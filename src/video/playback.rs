//! Playback of stored fragments (Kinesis Video archived-media API): HLS and DASH
//! session tokens, and the choice of fragments for a playlist, a manifest or a clip.
//!
//! A streaming session is stateless on the server: its settings (stream, playback mode,
//! fragment selector, container, discontinuity and timestamp display, expiry) travel in
//! the session token, signed with HMAC-SHA256 under a per-server key kept in the
//! catalog. A forged or altered token fails its MAC; an expired one is refused
//! (`GetHLSStreamingSessionURL`, `GetDASHStreamingSessionURL` in
//! `kinesis-video-archived-media.json`).
//!
//! Fragments are chosen through the stream's persistent fragment index
//! ([`super::index`]): those overlapping the session's `[start, end)` on its clock, in
//! that clock's order, or the newest ones for LIVE. No media bytes are read to choose;
//! a response reads only the fragments it contains.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::fragments::{fragment_number, parse_fragment_number};
use super::index::{Cursor, FragmentIndex, IndexEntry, RangeRule, TimeBase, TimeRange};
use super::{Result, VideoService, VideoStreamMeta};

/// Which streaming protocol a session serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    Hls,
    Dash,
}

/// `PlaybackMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PlaybackMode {
    Live,
    LiveReplay,
    OnDemand,
}

/// `ContainerFormat` (HLS only; DASH is always fragmented MP4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Container {
    FragmentedMp4,
    MpegTs,
}

/// `HLSDiscontinuityMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Discontinuity {
    Always,
    Never,
    OnDiscontinuity,
}

/// What a session token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    #[serde(rename = "p")]
    pub protocol: Protocol,
    #[serde(rename = "s")]
    pub stream_name: String,
    /// Guards against a stream deleted and re-created under the same name.
    #[serde(rename = "i")]
    pub stream_id: u64,
    #[serde(rename = "m")]
    pub mode: PlaybackMode,
    /// Select by producer timestamps (else server timestamps).
    #[serde(rename = "b")]
    pub by_producer: bool,
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<i64>,
    #[serde(rename = "z", default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<i64>,
    #[serde(rename = "c")]
    pub container: Container,
    #[serde(rename = "d")]
    pub discontinuity: Discontinuity,
    /// `DisplayFragmentTimestamp` / `DisplayFragmentNumber` ALWAYS.
    #[serde(rename = "t")]
    pub display_timestamp: bool,
    #[serde(rename = "n")]
    pub max_fragments: u32,
    #[serde(rename = "e")]
    pub expires_ms: i64,
    /// When the session was created: a LIVE_REPLAY window moves forward from its start
    /// timestamp at the pace of real time since then.
    #[serde(rename = "o", default)]
    pub created_ms: i64,
    /// The log offset of the first fragment listed when the session was created: where
    /// a live window's discontinuity count and DASH Period starts are counted from, so
    /// that they stay the same on every refresh (RFC 8216 §6.2.2; DASH-IF IOP: a Period
    /// keeps its id and start). `None` in tokens of older servers: counted from the
    /// window's first fragment then.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<u64>,
}

/// How far ahead of the replay position a LIVE_REPLAY playlist lists fragments.
pub const REPLAY_LOOKAHEAD_MS: i64 = 10_000;

impl Session {
    /// Whether the session's fragments are listed in producer order (LIVE lists the
    /// newest by arrival whatever the selector).
    pub fn listed_by_producer(&self) -> bool {
        self.by_producer && self.mode != PlaybackMode::Live
    }

    /// LIVE_REPLAY: the selector time the playlist window reaches at `now_ms`.
    pub fn replay_horizon_ms(&self, now_ms: i64) -> Option<i64> {
        let start = self.start_ms?;
        Some(start + (now_ms - self.created_ms).max(0) + REPLAY_LOOKAHEAD_MS)
    }
}

/// Why a session token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token this server issued (bad encoding or MAC).
    Invalid,
    Expired,
}

const MAC_LEN: usize = 16;

fn mac(key: &[u8; 32], body: &[u8]) -> [u8; MAC_LEN] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    m.update(body);
    let full = m.finalize().into_bytes();
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

impl Session {
    /// The token: URL-safe base64 of the settings, `.`, URL-safe base64 of their MAC.
    pub fn encode(&self, key: &[u8; 32]) -> String {
        let body = serde_json::to_vec(self).expect("plain data serialises");
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(mac(key, &body))
        )
    }

    pub fn decode(key: &[u8; 32], token: &str, now_ms: i64) -> Result<Session, TokenError> {
        let (body, tag) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Invalid)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Invalid)?;
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
        m.update(&body);
        m.verify_truncated_left(&tag)
            .map_err(|_| TokenError::Invalid)?;
        if tag.len() != MAC_LEN {
            return Err(TokenError::Invalid);
        }
        let session: Session = serde_json::from_slice(&body).map_err(|_| TokenError::Invalid)?;
        if now_ms >= session.expires_ms {
            return Err(TokenError::Expired);
        }
        Ok(session)
    }
}

/// What playback needs to know of a stored fragment: its fragment index entry and
/// number (its bytes are read separately, only for what a response contains).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentInfo {
    pub number: String,
    pub offset: u64,
    pub server_ms: i64,
    pub producer_ms: i64,
    /// From the first frame to the end of the last, as stored
    /// ([`super::fragments::FragmentMeta::duration_ms`]).
    pub duration_ms: u64,
    pub frame_count: u32,
    pub size: usize,
    /// Identifies the stream header in force (CodecPrivate may change between PutMedia
    /// connections): fragments with equal values share one init segment
    /// ([`IndexEntry::header_id`]).
    pub header_id: u64,
    /// The offset of the first fragment of the run of consecutive fragments with this
    /// header: a stable name for their init segment ([`IndexEntry::run_start`]).
    pub run_start: u64,
}

impl FragmentInfo {
    fn of_entry(stream_id: u64, e: &IndexEntry) -> Self {
        FragmentInfo {
            number: fragment_number(stream_id, e.offset),
            offset: e.offset,
            server_ms: e.server_ms,
            producer_ms: e.producer_ms,
            duration_ms: e.duration_ms,
            frame_count: e.frame_count,
            size: usize::try_from(e.size).unwrap_or(usize::MAX),
            header_id: e.header_id,
            run_start: e.run_start,
        }
    }

    /// The fragment's time under the chosen selector.
    pub fn time_ms(&self, by_producer: bool) -> i64 {
        if by_producer {
            self.producer_ms
        } else {
            self.server_ms
        }
    }
}

/// Which fragments to take: those overlapping `[start, end)` on the selector's clock
/// (an open bound when `None`), in that clock's order (see [`super::index`]).
#[derive(Debug, Clone, Copy)]
pub struct Selection {
    pub by_producer: bool,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub max: usize,
}

/// What the playback rules need of a fragment: its producer start, stored duration
/// and stream header (from an [`IndexEntry`] or a [`FragmentInfo`], without copying
/// either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub producer_ms: i64,
    pub duration_ms: u64,
    pub header_id: u64,
}

impl From<&FragmentInfo> for Timing {
    fn from(f: &FragmentInfo) -> Self {
        Timing {
            producer_ms: f.producer_ms,
            duration_ms: f.duration_ms,
            header_id: f.header_id,
        }
    }
}

impl From<&IndexEntry> for Timing {
    fn from(e: &IndexEntry) -> Self {
        Timing {
            producer_ms: e.producer_ms,
            duration_ms: e.duration_ms,
            header_id: e.header_id,
        }
    }
}

/// The playback duration of `f` followed by `next` (see [`durations_ms`]).
pub fn playback_duration_ms(f: Timing, next: Option<Timing>) -> u64 {
    let own = f.duration_ms.max(1);
    match next {
        Some(next) if tiles(f, next) => (next.producer_ms - f.producer_ms) as u64,
        _ => own,
    }
}

/// Whether `next` follows `f` closely enough for `f`'s segment to stretch up to it:
/// it starts after `f` and at most 1.5 × `f`'s duration + 100 ms after `f` started.
fn tiles(f: Timing, next: Timing) -> bool {
    let own = f.duration_ms.max(1);
    let step = next.producer_ms.saturating_sub(f.producer_ms);
    step > 0 && (step as u64) <= own + own / 2 + 100
}

/// Playback durations of consecutive fragments in milliseconds (HLS `#EXTINF`, DASH
/// segment durations, bandwidth): up to the next fragment's start when it follows
/// closely, so that segments tile the timeline, else the fragment's own stored duration
/// (its last frame included). Never 0: a fragment whose duration is unknown (a lone
/// frame with nothing to tell its length) counts 1 ms.
pub fn durations_ms(fragments: &[FragmentInfo]) -> Vec<u64> {
    fragments
        .iter()
        .enumerate()
        .map(|(i, f)| playback_duration_ms(f.into(), fragments.get(i + 1).map(Timing::from)))
        .collect()
}

/// True when there is a gap or overlap of more than 50 ms between two fragments
/// (the rule of `ON_DISCONTINUITY`), or their stream headers differ.
pub fn is_discontinuous(prev: &FragmentInfo, prev_duration_ms: u64, next: &FragmentInfo) -> bool {
    let expected = prev.producer_ms + prev_duration_ms as i64;
    (next.producer_ms - expected).abs() > 50 || prev.header_id != next.header_id
}

/// A producer gap between two consecutive fragments (documented in `docs/video.md`):
/// `next` does not tile after `prev` (it starts more than 1.5 × `prev`'s duration plus
/// 100 ms after `prev` started, or not after it: the producer stopped and resumed,
/// or its clock jumped), or the stream header changed (a new PutMedia connection with
/// other codec data). Players cannot play across one as if it were not there: HLS
/// marks it with `EXT-X-DISCONTINUITY` in every mode but `ALWAYS` (where every
/// segment is marked), and DASH starts a new Period.
pub fn is_producer_gap(prev: Timing, next: Timing) -> bool {
    !tiles(prev, next) || prev.header_id != next.header_id
}

/// Whether a playlist marks `next` with `EXT-X-DISCONTINUITY` after `prev` under a
/// session's `HLSDiscontinuityMode`: `ALWAYS` every segment; `ON_DISCONTINUITY` a
/// gap or overlap of more than 50 ms or a producer gap; `NEVER` only a producer gap.
pub fn marks_discontinuity(mode: Discontinuity, prev: Timing, next: Timing) -> bool {
    match mode {
        Discontinuity::Always => true,
        Discontinuity::OnDiscontinuity => {
            let expected = prev.producer_ms + playback_duration_ms(prev, Some(next)) as i64;
            (next.producer_ms - expected).abs() > 50 || is_producer_gap(prev, next)
        }
        Discontinuity::Never => is_producer_gap(prev, next),
    }
}

/// Where a session's current window stands in the stream: what the playlist and
/// manifest writers need about the fragments before the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowStart {
    /// Fragments marked as discontinuous (by the rule asked for) from the session's
    /// anchor up to, not including, the window's first fragment: the HLS
    /// `EXT-X-DISCONTINUITY-SEQUENCE`.
    pub discontinuities_before: u64,
    /// Whether the window's first fragment is marked itself (against its predecessor
    /// in the stream, which may lie outside the window).
    pub first_marked: bool,
    /// The first fragment (offset, producer start) of the stretch without a producer
    /// gap that the window's first fragment belongs to, not before the anchor: a
    /// DASH Period's stable id and start.
    pub run_start: (u64, i64),
}

/// [`WindowStart`] over `index` in the order of `base`: walks from `from` (the
/// session's anchor; the window's `first` fragment when the anchor is later) to
/// `first`, judging each fragment against its predecessor in the stream. A
/// `run_start` offset of `u64::MAX` means `first` is not in the index.
pub fn window_start_of(
    index: &FragmentIndex,
    base: TimeBase,
    from: Cursor,
    first: Cursor,
    mode: Discontinuity,
) -> WindowStart {
    let key = |c: Cursor| match base {
        TimeBase::Server => (0, c.offset),
        TimeBase::Producer => (c.start_ms, c.offset),
    };
    let first_key = key(first);
    let from = if key(from) < first_key { from } else { first };
    let from_key = key(from);
    let mut out = WindowStart {
        run_start: (u64::MAX, 0),
        ..WindowStart::default()
    };
    let mut prev: Option<Timing> = None;
    let mut run_start = None;
    for e in index.ordered_from(base, from) {
        let k = key(Cursor {
            start_ms: e.start_ms(base),
            offset: e.offset,
        });
        let t = Timing::from(&e);
        if k < from_key {
            prev = Some(t);
            continue;
        }
        if k > first_key {
            break;
        }
        let marked = prev.is_some_and(|p| marks_discontinuity(mode, p, t));
        if run_start.is_none() || prev.is_some_and(|p| is_producer_gap(p, t)) {
            run_start = Some((e.offset, e.producer_ms));
        }
        if k == first_key {
            out.first_marked = marked;
            if let Some(r) = run_start {
                out.run_start = r;
            }
            break;
        }
        out.discontinuities_before += u64::from(marked);
        prev = Some(t);
    }
    out
}

impl VideoService {
    /// [`WindowStart`] of a window whose first fragment is `first`, walking the
    /// stream in the session's order from its anchor (`None`: from `first`). The walk
    /// costs one step per fragment since the anchor, in memory (no media is read).
    /// An anchor that has expired counts from the oldest fragment stored.
    pub async fn window_start(
        &self,
        meta: &VideoStreamMeta,
        by_producer: bool,
        anchor: Option<u64>,
        first: &FragmentInfo,
        mode: Discontinuity,
    ) -> Result<WindowStart> {
        let index = self.stream_index(meta).await?;
        let index = index.index.read().unwrap();
        let base = if by_producer {
            TimeBase::Producer
        } else {
            TimeBase::Server
        };
        let first_cursor = Cursor {
            start_ms: first.time_ms(by_producer),
            offset: first.offset,
        };
        let from = match anchor {
            None => first_cursor,
            Some(a) => match index.get(a) {
                Some(a) => Cursor {
                    start_ms: a.start_ms(base),
                    offset: a.offset,
                },
                // Expired: from the oldest fragment stored.
                None => Cursor {
                    start_ms: i64::MIN,
                    offset: a.min(first.offset),
                },
            },
        };
        let mut out = window_start_of(&index, base, from, first_cursor, mode);
        if out.run_start.0 == u64::MAX {
            out.run_start = (first.offset, first.producer_ms);
        }
        Ok(out)
    }

    /// Fragments overlapping a time range, through the stream's fragment index (no
    /// media is read), at most `sel.max`; the flag says whether more fragments matched.
    pub async fn select_fragments(
        &self,
        meta: &VideoStreamMeta,
        sel: Selection,
    ) -> Result<(Vec<FragmentInfo>, bool)> {
        let index = self.stream_index(meta).await?;
        let base = if sel.by_producer {
            TimeBase::Producer
        } else {
            TimeBase::Server
        };
        let range = TimeRange {
            start_ms: sel.start_ms.unwrap_or(i64::MIN),
            end_ms: sel.end_ms.unwrap_or(i64::MAX),
            rule: RangeRule::Overlapping,
        };
        let (entries, next) = index
            .index
            .read()
            .unwrap()
            .list(base, Some(range), None, sel.max);
        let found = entries
            .iter()
            .map(|e| FragmentInfo::of_entry(meta.stream_id, e))
            .collect();
        Ok((found, next.is_some()))
    }

    /// The newest `n` fragments, oldest first.
    pub async fn latest_fragments(
        &self,
        meta: &VideoStreamMeta,
        n: usize,
    ) -> Result<Vec<FragmentInfo>> {
        let index = self.stream_index(meta).await?;
        let latest = index.index.read().unwrap().latest(n);
        Ok(latest
            .iter()
            .map(|e| FragmentInfo::of_entry(meta.stream_id, e))
            .collect())
    }

    /// One stored fragment by log offset: its metadata and Cluster bytes.
    pub async fn fragment_at(
        &self,
        meta: &VideoStreamMeta,
        offset: u64,
    ) -> Result<Option<(String, i64, super::fragments::FragmentMeta, bytes::Bytes)>> {
        let mut batch = self
            .read_fragments_limited(meta, offset, 1, 256 * 1024)
            .await?;
        Ok(match batch.pop() {
            Some(f) if parse_fragment_number(&f.0).is_some_and(|(_, o)| o == offset) => Some(f),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            protocol: Protocol::Hls,
            stream_name: "cam".into(),
            stream_id: 42,
            mode: PlaybackMode::OnDemand,
            by_producer: true,
            start_ms: Some(1_000),
            end_ms: Some(9_000),
            container: Container::FragmentedMp4,
            discontinuity: Discontinuity::Always,
            display_timestamp: false,
            max_fragments: 1000,
            expires_ms: 10_000,
            created_ms: 0,
            anchor: None,
        }
    }

    #[test]
    fn tokens_round_trip_and_refuse_forgery_and_expiry() {
        let key = [7u8; 32];
        let token = session().encode(&key);
        assert!(!token.contains(['+', '/', '=', '&']));
        assert_eq!(Session::decode(&key, &token, 5_000), Ok(session()));
        assert_eq!(
            Session::decode(&key, &token, 10_000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            Session::decode(&[8u8; 32], &token, 5_000),
            Err(TokenError::Invalid)
        );
        // A changed body (a longer expiry, say) fails the MAC.
        let mut forged = session();
        forged.expires_ms = i64::MAX;
        let (_, tag) = token.split_once('.').unwrap();
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            Session::decode(&key, &format!("{body}.{tag}"), 5_000),
            Err(TokenError::Invalid)
        );
        for junk in ["", ".", "abc", "a.b", "%%.%%", &token[..token.len() - 2]] {
            assert_eq!(
                Session::decode(&key, junk, 5_000),
                Err(TokenError::Invalid),
                "{junk}"
            );
        }
    }

    fn info(producer_ms: i64, duration_ms: u64, frames: u32) -> FragmentInfo {
        FragmentInfo {
            number: String::new(),
            offset: 0,
            server_ms: producer_ms,
            producer_ms,
            duration_ms,
            frame_count: frames,
            size: 0,
            header_id: 1,
            run_start: 0,
        }
    }

    fn entry(offset: u64, producer_ms: i64, header_id: u64) -> IndexEntry {
        IndexEntry {
            offset,
            server_ms: 1_000_000 + offset as i64 * 1000,
            producer_ms,
            duration_ms: 1000,
            size: 100,
            frame_count: 25,
            header_id,
            run_start: offset,
        }
    }

    fn timing(producer_ms: i64, header_id: u64) -> Timing {
        Timing {
            producer_ms,
            duration_ms: 1000,
            header_id,
        }
    }

    #[test]
    fn producer_gaps_and_discontinuity_modes() {
        let a = timing(0, 1);
        // Follows on (even 0.5 s late): no gap. 1.6 s later, back in time, or another
        // header: a gap.
        assert!(!is_producer_gap(a, timing(1000, 1)));
        assert!(!is_producer_gap(a, timing(1600, 1)));
        assert!(is_producer_gap(a, timing(1601, 1)));
        assert!(is_producer_gap(a, timing(0, 1)));
        assert!(is_producer_gap(a, timing(-5000, 1)));
        assert!(is_producer_gap(a, timing(1000, 2)));
        for mode in [Discontinuity::Never, Discontinuity::OnDiscontinuity] {
            assert!(!marks_discontinuity(mode, a, timing(1000, 1)));
            assert!(marks_discontinuity(mode, a, timing(4000, 1)), "{mode:?}");
            assert!(marks_discontinuity(mode, a, timing(1000, 2)), "{mode:?}");
        }
        assert!(marks_discontinuity(
            Discontinuity::Always,
            a,
            timing(1000, 1)
        ));
    }

    #[test]
    fn a_live_window_counts_the_marks_that_slid_out_since_its_anchor() {
        // 0..4 follow on; 4 s of silence; 5..8 follow on; 9 has another header.
        let mut rows: Vec<IndexEntry> = (0..5).map(|o| entry(o, o as i64 * 1000, 1)).collect();
        rows.extend((5..9).map(|o| entry(o, 9000 + (o as i64 - 5) * 1000, 1)));
        rows.push(entry(9, 13_000, 2));
        let index = FragmentIndex::from_rows(rows);
        let at = |offset: u64| Cursor {
            start_ms: index.get(offset).unwrap().producer_ms,
            offset,
        };
        let mode = Discontinuity::OnDiscontinuity;
        for base in [TimeBase::Server, TimeBase::Producer] {
            let w =
                |from: u64, first: u64| window_start_of(&index, base, at(from), at(first), mode);
            // The window starts before the gap: nothing has slid out.
            assert_eq!(
                w(0, 3),
                WindowStart {
                    discontinuities_before: 0,
                    first_marked: false,
                    run_start: (0, 0)
                }
            );
            // Its first fragment is the first after the gap: marked, not yet counted.
            assert_eq!(
                w(0, 5),
                WindowStart {
                    discontinuities_before: 0,
                    first_marked: true,
                    run_start: (5, 9000)
                }
            );
            // Past it: counted, and the Period still starts at it.
            assert_eq!(
                w(0, 7),
                WindowStart {
                    discontinuities_before: 1,
                    first_marked: false,
                    run_start: (5, 9000)
                }
            );
            // Past the header change too.
            assert_eq!(w(2, 9).discontinuities_before, 1);
            assert!(w(2, 9).first_marked);
            assert_eq!(w(0, 9).run_start, (9, 13_000));
            // An anchor after the window's first counts from the first: judged
            // against its predecessor in the stream all the same.
            assert_eq!(w(8, 5).discontinuities_before, 0);
            assert!(w(8, 5).first_marked);
            // The anchor itself is counted once it slides out.
            assert_eq!(w(5, 6).discontinuities_before, 1);
        }
        // ALWAYS marks every fragment but the stream's first.
        let w = window_start_of(
            &index,
            TimeBase::Server,
            at(0),
            at(4),
            Discontinuity::Always,
        );
        assert_eq!(w.discontinuities_before, 3);
        // A first fragment not in the index: nothing found.
        let missing = Cursor {
            start_ms: 0,
            offset: 99,
        };
        assert_eq!(
            window_start_of(&index, TimeBase::Server, at(0), missing, mode)
                .run_start
                .0,
            u64::MAX
        );
    }

    #[test]
    fn durations_follow_the_next_fragment_and_keep_the_last() {
        // 25 fps, 1 s fragments, stored as 1000 ms each (the last frame included).
        let f = [
            info(0, 1000, 25),
            info(1000, 1000, 25),
            info(5000, 1000, 25),
        ];
        assert_eq!(durations_ms(&f), [1000, 1000, 1000]);
        assert!(!is_discontinuous(&f[0], 1000, &f[1]));
        assert!(is_discontinuous(&f[1], 1000, &f[2]));
        let mut other = info(2000, 1000, 25);
        other.header_id = 2;
        assert!(is_discontinuous(&f[1], 1000, &other));
        // A fragment that starts a little late stretches its predecessor's segment.
        let late = [info(0, 1000, 25), info(1030, 1000, 25)];
        assert_eq!(durations_ms(&late), [1030, 1000]);
        // A one-frame fragment at the end of a 30 fps stream lasts one frame.
        let end = [info(0, 1000, 30), info(1000, 33, 1)];
        assert_eq!(durations_ms(&end), [1000, 33]);
        assert_eq!(durations_ms(&[info(0, 0, 1)]), [1]);
    }
}
