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
use super::index::{IndexEntry, RangeRule, TimeBase, TimeRange};
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
}

/// How far ahead of the replay position a LIVE_REPLAY playlist lists fragments.
pub const REPLAY_LOOKAHEAD_MS: i64 = 10_000;

impl Session {
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

/// Playback durations of consecutive fragments in milliseconds (HLS `#EXTINF`, DASH
/// segment durations, bandwidth): up to the next fragment's start when it follows
/// closely, so that segments tile the timeline, else the fragment's own stored duration
/// (its last frame included). Never 0: a fragment whose duration is unknown (a lone
/// frame with nothing to tell its length) counts 1 ms.
pub fn durations_ms(fragments: &[FragmentInfo]) -> Vec<u64> {
    fragments
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let own = f.duration_ms.max(1);
            match fragments.get(i + 1) {
                Some(next) => {
                    let gap = next.producer_ms - f.producer_ms;
                    if gap > 0 && (gap as u64) <= own + own / 2 + 100 {
                        gap as u64
                    } else {
                        own
                    }
                }
                None => own,
            }
        })
        .collect()
}

/// True when there is a gap or overlap of more than 50 ms between two fragments
/// (the rule of `ON_DISCONTINUITY`), or their stream headers differ.
pub fn is_discontinuous(prev: &FragmentInfo, prev_duration_ms: u64, next: &FragmentInfo) -> bool {
    let expected = prev.producer_ms + prev_duration_ms as i64;
    (next.producer_ms - expected).abs() > 50 || prev.header_id != next.header_id
}

impl VideoService {
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
