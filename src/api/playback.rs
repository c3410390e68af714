//! Playback over HTTP (Kinesis Video archived-media API, REST-JSON):
//! `POST /getHLSStreamingSessionURL`, `POST /getDASHStreamingSessionURL`, `POST /getClip`,
//! and the session endpoints the returned URLs lead to:
//!
//! | path | serves |
//! |---|---|
//! | `/hls/v1/getHLSMasterPlaylist.m3u8` | master playlist (RFC 8216) with one muxed variant |
//! | `/hls/v1/getHLSMediaPlaylist.m3u8` | media playlist: one segment per stored fragment |
//! | `/hls/v1/getMP4InitFragment.mp4`, `/dash/v1/getMP4InitFragment.mp4` | fMP4 init segment |
//! | `/hls/v1/getMP4MediaFragment.mp4`, `/dash/v1/getMP4MediaFragment.mp4` | fMP4 media segment |
//! | `/hls/v1/getTSFragment.ts` | MPEG-TS segment |
//! | `/dash/v1/getDASHManifest.mpd` | MPD (ISO/IEC 23009-1), SegmentList with SegmentTimeline |
//!
//! Every segment is remuxed from one stored fragment on request (no re-encoding) and
//! kept in a small cache, since all players of a live stream ask for the same ones.
//! Sessions are stateless signed tokens (`video::playback`). Handlers only parse and
//! format: fragment choice is in `video::playback`, remuxing in `media`.

// Helpers return a ready error `Response` as their `Err`: built at most once per request.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, header};

use super::error::ApiError;
use crate::error::ErrorKind;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::{AppState, read_body};
use crate::media::samples::{FragmentSamples, demux_fragment};
use crate::media::ts::{TsContinuity, ts_segment};
use crate::media::{dash, fmp4, hls};
use crate::video::fragments::{fragment_number, parse_fragment_number};
use crate::video::images::{self, Size};
use crate::video::playback::{
    Container, Discontinuity, FragmentInfo, PlaybackMode, Protocol, REPLAY_LOOKAHEAD_MS, Selection,
    Session, TokenError, durations_ms, is_producer_gap, marks_discontinuity,
};
use crate::video::{VideoRef, VideoStreamMeta};

/// A LIVE session needs a fragment this recent (AWS: 30 s).
const LIVE_WINDOW_MS: i64 = 30_000;
/// ON_DEMAND ranges may span at most this long.
const MAX_RANGE_MS: i64 = 24 * 3_600_000;
/// GetClip takes at most this many fragments and bytes.
const CLIP_MAX_FRAGMENTS: usize = 200;
const CLIP_MAX_BYTES: usize = 100 * 1024 * 1024;

fn error(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Response {
    ApiError::new(kind, code, message).into_rest_json()
}

fn invalid(message: impl Into<String>) -> Response {
    error(
        ErrorKind::InvalidArgument,
        "InvalidArgumentException",
        message,
    )
}

fn not_found(message: impl Into<String>) -> Response {
    error(ErrorKind::NotFound, "ResourceNotFoundException", message)
}

/// Playback needs stored fragments: streams without retention get
/// NoDataRetentionException.
fn require_retention(meta: &VideoStreamMeta) -> Result<(), Response> {
    if meta.retention_hours > 0 {
        return Ok(());
    }
    Err(error(
        ErrorKind::InvalidArgument,
        "NoDataRetentionException",
        format!(
            "The stream {} does not retain data (DataRetentionInHours is 0).",
            meta.name
        ),
    ))
}

fn internal(e: impl std::fmt::Display) -> Response {
    ApiError::internal(e).into_rest_json()
}

fn video_error(e: crate::video::VideoError) -> Response {
    ApiError::from(e).into_rest_json()
}

/// Remuxed segments by (stream id, fragment offset, kind), newest kept.
#[derive(Default)]
pub struct SegmentCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    map: HashMap<(u64, u64, u8), Bytes>,
    order: VecDeque<(u64, u64, u8)>,
    bytes: usize,
}

const CACHE_MAX_BYTES: usize = 128 * 1024 * 1024;
const KIND_FMP4: u8 = 0;
const KIND_TS: u8 = 1;
const KIND_INIT: u8 = 2;

impl SegmentCache {
    fn get(&self, key: (u64, u64, u8)) -> Option<Bytes> {
        self.inner.lock().unwrap().map.get(&key).cloned()
    }

    fn put(&self, key: (u64, u64, u8), value: Bytes) {
        let mut c = self.inner.lock().unwrap();
        if value.len() > CACHE_MAX_BYTES / 4 || c.map.contains_key(&key) {
            return;
        }
        c.bytes += value.len();
        c.map.insert(key, value);
        c.order.push_back(key);
        while c.bytes > CACHE_MAX_BYTES {
            let Some(old) = c.order.pop_front() else {
                break;
            };
            if let Some(v) = c.map.remove(&old) {
                c.bytes -= v.len();
            }
        }
    }
}

/// The request's JSON document, and the base URL to hand out in the response.
async fn read_json(state: &AppState, req: Request) -> Result<(Value, String), Response> {
    let (mut parts, body) = req.into_parts();
    let base = state.base_url(&parts);
    let body = read_body(state, &mut parts, body, 1024 * 1024)
        .await
        .map_err(|e| invalid(e.message))?;
    let doc: Value = serde_json::from_slice(&body.bytes)
        .map_err(|e| invalid(format!("The request body is not valid JSON: {e}")))?;
    if !doc.is_object() {
        return Err(invalid("The request body must be a JSON object."));
    }
    Ok((doc, base))
}

fn stream_of(state: &AppState, doc: &Value) -> Result<VideoStreamMeta, Response> {
    for key in ["StreamName", "StreamARN"] {
        if !doc[key].is_null() && !doc[key].is_string() {
            return Err(invalid(format!("{key} must be a string.")));
        }
    }
    let r = VideoRef {
        name: doc["StreamName"].as_str().map(str::to_string),
        arn: doc["StreamARN"].as_str().map(str::to_string),
    };
    if r.name.is_some() && r.arn.is_some() {
        return Err(invalid("Specify either StreamName or StreamARN, not both."));
    }
    state.video.get(&r).map_err(video_error)
}

/// An enum member: absent = `default`, else one of `allowed`.
fn enum_field<'a>(
    doc: &'a Value,
    key: &str,
    allowed: &[&'a str],
    default: &'a str,
) -> Result<&'a str, Response> {
    match &doc[key] {
        Value::Null => Ok(default),
        Value::String(s) if allowed.contains(&s.as_str()) => Ok(s.as_str()),
        other => Err(invalid(format!(
            "Value {other} at '{key}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        ))),
    }
}

fn timestamp_ms(v: &Value, what: &str) -> Result<Option<i64>, Response> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Some((s * 1000.0).round() as i64))
            .ok_or_else(|| invalid(format!("{what} must be a timestamp."))),
        _ => Err(invalid(format!("{what} must be a timestamp."))),
    }
}

fn int_field(doc: &Value, key: &str, lo: u64, hi: u64) -> Result<Option<u64>, Response> {
    match &doc[key] {
        Value::Null => Ok(None),
        v => match v.as_u64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            _ => Err(invalid(format!(
                "Value {v} at '{key}' failed to satisfy constraint: Member must have value between {lo} and {hi}"
            ))),
        },
    }
}

/// Demuxes a stored fragment; the error is the API's.
fn demux(
    meta: &crate::video::fragments::FragmentMeta,
    cluster: &Bytes,
) -> Result<FragmentSamples, Response> {
    demux_fragment(
        &meta.info_and_tracks,
        cluster,
        meta.producer_ts_ms,
        meta.cluster_timecode,
        meta.timecode_scale,
        Some(meta.duration_ms),
    )
    .map_err(|e| error(ErrorKind::InvalidArgument, e.aws_error(), e.to_string()))
}

/// `POST /getHLSStreamingSessionURL` and `POST /getDASHStreamingSessionURL`.
pub async fn get_hls_session_url(State(state): State<AppState>, req: Request) -> Response {
    session_url(state, req, Protocol::Hls)
        .await
        .unwrap_or_else(|r| r)
}

pub async fn get_dash_session_url(State(state): State<AppState>, req: Request) -> Response {
    session_url(state, req, Protocol::Dash)
        .await
        .unwrap_or_else(|r| r)
}

async fn session_url(
    state: AppState,
    req: Request,
    protocol: Protocol,
) -> Result<Response, Response> {
    let (doc, base) = read_json(&state, req).await?;
    let meta = stream_of(&state, &doc)?;
    let (selector_key, max_key) = match protocol {
        Protocol::Hls => ("HLSFragmentSelector", "MaxMediaPlaylistFragmentResults"),
        Protocol::Dash => ("DASHFragmentSelector", "MaxManifestFragmentResults"),
    };
    let mode = match enum_field(
        &doc,
        "PlaybackMode",
        &["LIVE", "LIVE_REPLAY", "ON_DEMAND"],
        "LIVE",
    )? {
        "LIVE_REPLAY" => PlaybackMode::LiveReplay,
        "ON_DEMAND" => PlaybackMode::OnDemand,
        _ => PlaybackMode::Live,
    };
    let selector = &doc[selector_key];
    if !selector.is_null() && !selector.is_object() {
        return Err(invalid(format!("{selector_key} must be an object.")));
    }
    let by_producer = enum_field(
        selector,
        "FragmentSelectorType",
        &["PRODUCER_TIMESTAMP", "SERVER_TIMESTAMP"],
        "SERVER_TIMESTAMP",
    )? == "PRODUCER_TIMESTAMP";
    let range = &selector["TimestampRange"];
    let start_ms = timestamp_ms(&range["StartTimestamp"], "StartTimestamp")?;
    let end_ms = timestamp_ms(&range["EndTimestamp"], "EndTimestamp")?;
    match mode {
        PlaybackMode::Live if !range.is_null() => {
            return Err(invalid("TimestampRange must not be set for LIVE playback."));
        }
        PlaybackMode::LiveReplay if start_ms.is_none() => {
            return Err(invalid("LIVE_REPLAY playback needs a StartTimestamp."));
        }
        PlaybackMode::OnDemand if start_ms.is_none() || end_ms.is_none() => {
            return Err(invalid(
                "ON_DEMAND playback needs a StartTimestamp and an EndTimestamp.",
            ));
        }
        _ => {}
    }
    if let (Some(s), Some(e)) = (start_ms, end_ms) {
        if s >= e {
            return Err(invalid("StartTimestamp must be before EndTimestamp."));
        }
        if mode == PlaybackMode::OnDemand && e - s > MAX_RANGE_MS {
            return Err(invalid("The timestamp range must not exceed 24 hours."));
        }
    }
    let container = match protocol {
        Protocol::Hls => match enum_field(
            &doc,
            "ContainerFormat",
            &["FRAGMENTED_MP4", "MPEG_TS"],
            "FRAGMENTED_MP4",
        )? {
            "MPEG_TS" => Container::MpegTs,
            _ => Container::FragmentedMp4,
        },
        Protocol::Dash => Container::FragmentedMp4,
    };
    let discontinuity = match protocol {
        Protocol::Hls => match enum_field(
            &doc,
            "DiscontinuityMode",
            &["ALWAYS", "NEVER", "ON_DISCONTINUITY"],
            "ALWAYS",
        )? {
            "NEVER" => Discontinuity::Never,
            "ON_DISCONTINUITY" => Discontinuity::OnDiscontinuity,
            _ => Discontinuity::Always,
        },
        Protocol::Dash => Discontinuity::OnDiscontinuity,
    };
    let display_timestamp = enum_field(
        &doc,
        "DisplayFragmentTimestamp",
        &["ALWAYS", "NEVER"],
        "NEVER",
    )? == "ALWAYS";
    if protocol == Protocol::Dash {
        enum_field(&doc, "DisplayFragmentNumber", &["ALWAYS", "NEVER"], "NEVER")?;
    }
    let expires = int_field(&doc, "Expires", 300, 43_200)?.unwrap_or(300);
    let default_max = if mode == PlaybackMode::OnDemand {
        1000
    } else {
        5
    };
    let max_fragments = int_field(&doc, max_key, 1, 5000)?.unwrap_or(default_max) as u32;

    require_retention(&meta)?;
    let session = Session {
        protocol,
        stream_name: meta.name.clone(),
        stream_id: meta.stream_id,
        mode,
        by_producer,
        start_ms,
        end_ms,
        container,
        discontinuity,
        display_timestamp,
        max_fragments,
        expires_ms: state.video.now_ms() + expires as i64 * 1000,
        created_ms: state.video.now_ms(),
        anchor: None,
    };
    // There must be media to play, and it must be playable.
    let fragments = session_fragments(&state, &meta, &session).await?;
    let Some(first) = fragments.first() else {
        return Err(not_found(
            "No fragments found in the stream for the streaming request.",
        ));
    };
    if mode == PlaybackMode::Live && first_recent(&state, &fragments).is_none() {
        return Err(not_found(
            "No fragments found in the stream for the streaming request.",
        ));
    }
    let (_, _, fmeta, cluster) = read_fragment(&state, &meta, first.offset).await?;
    demux(&fmeta, &cluster)?;

    let anchor = first.offset;
    let session = Session {
        anchor: Some(anchor),
        ..session
    };
    let token = session.encode(state.video.session_key());
    let (key, path) = match protocol {
        Protocol::Hls => ("HLSStreamingSessionURL", "hls/v1/getHLSMasterPlaylist.m3u8"),
        Protocol::Dash => ("DASHStreamingSessionURL", "dash/v1/getDASHManifest.mpd"),
    };
    Ok(axum::Json(json!({ key: format!("{base}/{path}?SessionToken={token}") })).into_response())
}

/// The newest fragment of a LIVE selection if it arrived in the last 30 s.
fn first_recent<'a>(state: &AppState, fragments: &'a [FragmentInfo]) -> Option<&'a FragmentInfo> {
    let now = state.video.now_ms();
    fragments
        .last()
        .filter(|f| now - f.server_ms <= LIVE_WINDOW_MS)
}

/// The fragments a session's playlist or manifest lists now.
async fn session_fragments(
    state: &AppState,
    meta: &VideoStreamMeta,
    s: &Session,
) -> Result<Vec<FragmentInfo>, Response> {
    let video = &state.video;
    let max = s.max_fragments as usize;
    match s.mode {
        PlaybackMode::Live => video.latest_fragments(meta, max).await.map_err(video_error),
        PlaybackMode::LiveReplay => {
            // A window of the newest `max` fragments up to the replay position, which
            // moves forward in real time from the start timestamp.
            let horizon = s
                .replay_horizon_ms(state.video.now_ms())
                .unwrap_or(i64::MAX);
            let end = s.end_ms.map_or(horizon, |e| e.min(horizon));
            let start = s
                .start_ms
                .map(|st| st.max(horizon - 2 * REPLAY_LOOKAHEAD_MS - 120_000));
            let (mut found, _) = video
                .select_fragments(
                    meta,
                    Selection {
                        by_producer: s.by_producer,
                        start_ms: start,
                        end_ms: Some(end),
                        max: 5000,
                    },
                )
                .await
                .map_err(video_error)?;
            let skip = found.len().saturating_sub(max);
            found.drain(..skip);
            Ok(found)
        }
        PlaybackMode::OnDemand => video
            .select_fragments(
                meta,
                Selection {
                    by_producer: s.by_producer,
                    start_ms: s.start_ms,
                    end_ms: s.end_ms,
                    max,
                },
            )
            .await
            .map(|(f, _)| f)
            .map_err(video_error),
    }
}

async fn read_fragment(
    state: &AppState,
    meta: &VideoStreamMeta,
    offset: u64,
) -> Result<(String, i64, crate::video::fragments::FragmentMeta, Bytes), Response> {
    state
        .video
        .fragment_at(meta, offset)
        .await
        .map_err(video_error)?
        .ok_or_else(|| not_found("The fragment is no longer stored."))
}

// ---- session endpoints -------------------------------------------------------------

/// A GET handler of the session endpoints: query parameters in, the inner function's
/// response (or its error response) out.
macro_rules! session_get {
    ($name:ident, $inner:ident $(, $arg:expr)*) => {
        pub async fn $name(
            State(state): State<AppState>,
            Query(q): Query<HashMap<String, String>>,
        ) -> Response {
            $inner(&state, &q $(, $arg)*).await.unwrap_or_else(|r| r)
        }
    };
}

// `GET /hls/v1/getHLSMasterPlaylist.m3u8`, `getHLSMediaPlaylist.m3u8`,
// `/{hls,dash}/v1/getMP4InitFragment.mp4`, `getMP4MediaFragment.mp4`,
// `/hls/v1/getTSFragment.ts`, `/dash/v1/getDASHManifest.mpd`.
session_get!(hls_master, hls_master_inner);
session_get!(hls_media, hls_media_inner);
session_get!(hls_init, init_inner, Protocol::Hls);
session_get!(dash_init, init_inner, Protocol::Dash);
session_get!(hls_fmp4, media_inner, Protocol::Hls, KIND_FMP4);
session_get!(dash_fmp4, media_inner, Protocol::Dash, KIND_FMP4);
session_get!(hls_ts, media_inner, Protocol::Hls, KIND_TS);
session_get!(dash_manifest, dash_inner);

/// The session and stream of a session request.
fn open_session(
    state: &AppState,
    q: &HashMap<String, String>,
    protocol: Protocol,
) -> Result<(Session, VideoStreamMeta), Response> {
    let token = q
        .get("SessionToken")
        .ok_or_else(|| invalid("SessionToken is required."))?;
    let session = Session::decode(state.video.session_key(), token, state.video.now_ms()).map_err(
        |e| match e {
            TokenError::Expired => error(
                ErrorKind::NotAuthorized,
                "NotAuthorizedException",
                "The session token has expired.",
            ),
            TokenError::Invalid => error(
                ErrorKind::NotAuthorized,
                "NotAuthorizedException",
                "The session token is not valid.",
            ),
        },
    )?;
    if session.protocol != protocol {
        return Err(invalid(
            "The session token is for another streaming protocol.",
        ));
    }
    let meta = state
        .video
        .get(&VideoRef {
            name: Some(session.stream_name.clone()),
            arn: None,
        })
        .map_err(video_error)?;
    if meta.stream_id != session.stream_id {
        return Err(not_found("The stream of this session no longer exists."));
    }
    Ok((session, meta))
}

/// The fragment a segment request names (`FragmentNumber`), or `default`.
fn fragment_offset(
    q: &HashMap<String, String>,
    meta: &VideoStreamMeta,
    default: Option<u64>,
) -> Result<u64, Response> {
    match q.get("FragmentNumber") {
        Some(n) => parse_fragment_number(n)
            .filter(|(id, _)| *id == meta.stream_id)
            .map(|(_, o)| o)
            .ok_or_else(|| invalid("FragmentNumber is not a fragment of this stream.")),
        None => default.ok_or_else(|| invalid("FragmentNumber is required.")),
    }
}

fn with_type(body: impl Into<axum::body::Body>, content_type: &'static str) -> Response {
    let mut resp = Response::new(body.into());
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn token_query(q: &HashMap<String, String>) -> String {
    format!(
        "SessionToken={}",
        q.get("SessionToken").map_or("", String::as_str)
    )
}

async fn fragments_or_404(
    state: &AppState,
    meta: &VideoStreamMeta,
    session: &Session,
) -> Result<Vec<FragmentInfo>, Response> {
    let fragments = session_fragments(state, meta, session).await?;
    if fragments.is_empty() {
        return Err(not_found(
            "No fragments found in the stream for the streaming request.",
        ));
    }
    Ok(fragments)
}

async fn hls_master_inner(
    state: &AppState,
    q: &HashMap<String, String>,
) -> Result<Response, Response> {
    let (session, meta) = open_session(state, q, Protocol::Hls)?;
    let fragments = fragments_or_404(state, &meta, &session).await?;
    let first = &fragments[0];
    let (_, _, fmeta, cluster) = read_fragment(state, &meta, first.offset).await?;
    let demuxed = demux(&fmeta, &cluster)?;
    let codecs: Vec<String> = demuxed.tracks.iter().map(fmp4::codec_string).collect();
    let playlist = hls::MasterPlaylist {
        version: Some(7),
        independent_segments: true,
        variants: vec![hls::Variant {
            bandwidth: bandwidth(&fragments),
            average_bandwidth: None,
            codecs,
            resolution: demuxed
                .tracks
                .iter()
                .find(|t| t.codec.is_video())
                .map(|v| (v.width, v.height)),
            uri: format!("getHLSMediaPlaylist.m3u8?{}", token_query(q)),
        }],
    };
    let out = hls::write_master(&playlist);
    Ok(with_type(out, "application/vnd.apple.mpegurl"))
}

/// Peak bits per second over the listed fragments.
fn bandwidth(fragments: &[FragmentInfo]) -> u64 {
    fragments
        .iter()
        .zip(durations_ms(fragments))
        .map(|(f, d)| f.size as u64 * 8 * 1000 / d.max(1))
        .max()
        .unwrap_or(1)
        .max(1)
}

async fn hls_media_inner(
    state: &AppState,
    q: &HashMap<String, String>,
) -> Result<Response, Response> {
    let (session, meta) = open_session(state, q, Protocol::Hls)?;
    let fragments = fragments_or_404(state, &meta, &session).await?;
    let durations = durations_ms(&fragments);
    let token = token_query(q);
    let live = session.mode != PlaybackMode::OnDemand;
    // A live window keeps its numbering across refreshes and producer gaps: the media
    // sequence is the log offset, and the discontinuity sequence counts the marked
    // fragments that have slid out since the session began.
    let window = if live && session.discontinuity != Discontinuity::Always {
        Some(
            state
                .video
                .window_start(
                    &meta,
                    session.listed_by_producer(),
                    session.anchor,
                    &fragments[0],
                    session.discontinuity,
                )
                .await
                .map_err(video_error)?,
        )
    } else {
        None
    };
    let discontinuity_sequence = match (session.discontinuity, window) {
        // Every segment starts a discontinuity, so the count before the first listed
        // one is its position in the stream.
        (Discontinuity::Always, _) => Some(fragments[0].offset),
        (_, Some(w)) => Some(w.discontinuities_before),
        _ => None,
    };
    let ended = match session.mode {
        PlaybackMode::OnDemand => true,
        // Ended once the replay position has passed the end of the range.
        PlaybackMode::LiveReplay => session
            .end_ms
            .zip(session.replay_horizon_ms(state.video.now_ms()))
            .is_some_and(|(end, horizon)| horizon - REPLAY_LOOKAHEAD_MS >= end),
        PlaybackMode::Live => false,
    };
    let fmp4 = session.container == Container::FragmentedMp4;
    let file = if fmp4 {
        "getMP4MediaFragment.mp4"
    } else {
        "getTSFragment.ts"
    };
    let mut header = None;
    let mut segments = Vec::with_capacity(fragments.len());
    for (i, f) in fragments.iter().enumerate() {
        let new_header = header != Some(f.header_id);
        let discontinuity = match i.checked_sub(1) {
            Some(p) => marks_discontinuity(session.discontinuity, (&fragments[p]).into(), f.into()),
            None => {
                session.discontinuity == Discontinuity::Always
                    || window.is_some_and(|w| w.first_marked)
            }
        };
        header = Some(f.header_id);
        segments.push(hls::Segment {
            duration_ms: durations[i],
            title: String::new(),
            uri: format!("{file}?{token}&FragmentNumber={}", f.number),
            discontinuity,
            // The run's first fragment names the init segment: the same URL on every
            // refresh of the playlist, so players (and the cache) reuse it.
            map_uri: (fmp4 && new_header).then(|| {
                format!(
                    "getMP4InitFragment.mp4?{token}&FragmentNumber={}",
                    fragment_number(meta.stream_id, f.run_start)
                )
            }),
            program_date_time_ms: session
                .display_timestamp
                .then(|| f.time_ms(session.by_producer)),
        });
    }
    let playlist = hls::MediaPlaylist {
        version: Some(7),
        target_duration_s: None,
        media_sequence: Some(fragments[0].offset),
        discontinuity_sequence,
        playlist_type: (session.mode == PlaybackMode::OnDemand).then_some(hls::PlaylistType::Vod),
        independent_segments: false,
        segments,
        ended,
    };
    let out = hls::write_media(&playlist);
    Ok(with_type(out, "application/vnd.apple.mpegurl"))
}

/// Remuxes one stored fragment (cached).
async fn segment(
    state: &AppState,
    meta: &VideoStreamMeta,
    offset: u64,
    kind: u8,
    track: Option<u64>,
) -> Result<Bytes, Response> {
    // DASH serves each track on its own (one AdaptationSet per track).
    let key = (
        meta.stream_id,
        offset,
        kind | (track.unwrap_or(0) as u8) << 4,
    );
    if let Some(b) = state.segments.get(key) {
        return Ok(b);
    }
    let (_, _, fmeta, cluster) = read_fragment(state, meta, offset).await?;
    let out = tokio::task::spawn_blocking(move || -> Result<Bytes, Response> {
        let mut d = demux(&fmeta, &cluster)?;
        if let Some(number) = track {
            let Some(index) = d.tracks.iter().position(|t| t.number == number) else {
                return Err(invalid(format!("The stream has no track {number}.")));
            };
            d.tracks = vec![d.tracks.swap_remove(index)];
            d.samples.retain(|s| s.track == index);
            for s in &mut d.samples {
                s.track = 0;
            }
        }
        Ok(Bytes::from(match kind {
            KIND_INIT => fmp4::init_segment(&d.tracks),
            KIND_TS => {
                ts_segment(&d.tracks, &d.samples, &mut TsContinuity::new()).map_err(|e| {
                    error(
                        ErrorKind::InvalidArgument,
                        "InvalidMediaFrameException",
                        e.to_string(),
                    )
                })?
            }
            _ => fmp4::media_segment((offset % u32::MAX as u64) as u32 + 1, &d.tracks, &d.samples),
        }))
    })
    .await
    .map_err(internal)??;
    state.segments.put(key, out.clone());
    Ok(out)
}

async fn first_offset(
    state: &AppState,
    meta: &VideoStreamMeta,
    session: &Session,
) -> Result<u64, Response> {
    Ok(fragments_or_404(state, meta, session).await?[0].offset)
}

/// DASH segment URLs name one track (`TrackNumber`); HLS segments carry all tracks.
fn track_param(q: &HashMap<String, String>, protocol: Protocol) -> Result<Option<u64>, Response> {
    match (protocol, q.get("TrackNumber")) {
        (Protocol::Dash, Some(t)) => t
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=15).contains(n))
            .map(Some)
            .ok_or_else(|| invalid("TrackNumber must be a track number from 1 to 15.")),
        _ => Ok(None),
    }
}

async fn init_inner(
    state: &AppState,
    q: &HashMap<String, String>,
    protocol: Protocol,
) -> Result<Response, Response> {
    let (session, meta) = open_session(state, q, protocol)?;
    let offset = match q.get("FragmentNumber") {
        Some(_) => fragment_offset(q, &meta, None)?,
        None => first_offset(state, &meta, &session).await?,
    };
    // The run's first fragment may have expired since the playlist named it: its
    // successors carry the same stream header.
    let (first_stored, _) = state
        .video
        .fragment_bounds(&meta)
        .await
        .map_err(video_error)?;
    let offset = offset.max(first_stored);
    let track = track_param(q, protocol)?;
    Ok(with_type(
        segment(state, &meta, offset, KIND_INIT, track).await?,
        "video/mp4",
    ))
}

async fn media_inner(
    state: &AppState,
    q: &HashMap<String, String>,
    protocol: Protocol,
    kind: u8,
) -> Result<Response, Response> {
    let (session, meta) = open_session(state, q, protocol)?;
    let wanted = if kind == KIND_TS {
        Container::MpegTs
    } else {
        Container::FragmentedMp4
    };
    if session.container != wanted {
        return Err(invalid("This session serves another container format."));
    }
    let offset = fragment_offset(q, &meta, None)?;
    let track = track_param(q, protocol)?;
    let body = segment(state, &meta, offset, kind, track).await?;
    Ok(with_type(
        body,
        if kind == KIND_TS {
            "video/mp2t"
        } else {
            "video/mp4"
        },
    ))
}

async fn dash_inner(state: &AppState, q: &HashMap<String, String>) -> Result<Response, Response> {
    let (session, meta) = open_session(state, q, Protocol::Dash)?;
    let fragments = fragments_or_404(state, &meta, &session).await?;
    let durations = durations_ms(&fragments);
    let token = token_query(q);
    let dynamic = session.mode != PlaybackMode::OnDemand;
    let total: u64 = durations.iter().sum();
    let max_dur = durations.iter().copied().max().unwrap_or(1000);
    let presentation = if dynamic {
        // Media time is producer time since the epoch, so the live edge is "now".
        dash::Presentation::Dynamic {
            availability_start_ms: 0,
            publish_time_ms: state.video.now_ms(),
            minimum_update_period_ms: max_dur,
            time_shift_buffer_depth_ms: total.max(max_dur),
            suggested_presentation_delay_ms: Some(max_dur * 3),
        }
    } else {
        dash::Presentation::Static { duration_ms: total }
    };
    // One AdaptationSet per track, and one Period per run of fragments with the same
    // stream header; live, also a new Period at every producer gap. A live manifest
    // names each Period by its first fragment and starts it at that fragment's producer
    // time (found from the session's anchor, so both stay the same as the window
    // slides); an on-demand one lays its Periods end to end from 0 (a gap within one is
    // a jump of the timeline: players that play one Period only still play it all).
    let breaks = |prev: &FragmentInfo, next: &FragmentInfo| {
        if dynamic {
            is_producer_gap(prev.into(), next.into())
        } else {
            prev.header_id != next.header_id
        }
    };
    let mut runs = Vec::new();
    let mut i = 0;
    while i < fragments.len() {
        let end = (i + 1..fragments.len())
            .find(|&j| breaks(&fragments[j - 1], &fragments[j]))
            .unwrap_or(fragments.len());
        runs.push(i..end);
        i = end;
    }
    let first_run_start = if dynamic {
        state
            .video
            .window_start(
                &meta,
                session.listed_by_producer(),
                session.anchor,
                &fragments[0],
                Discontinuity::Never,
            )
            .await
            .map_err(video_error)?
            .run_start
    } else {
        (fragments[0].offset, fragments[0].producer_ms)
    };
    let mut periods = Vec::with_capacity(runs.len());
    let mut period_start_ms: u64 = 0;
    for (n, range) in runs.into_iter().enumerate() {
        let run = &fragments[range.clone()];
        let run_durations = &durations[range];
        let (run_offset, run_producer_ms) = if n == 0 {
            first_run_start
        } else {
            (run[0].offset, run[0].producer_ms)
        };
        let (_, _, fmeta, cluster) = read_fragment(state, &meta, run[0].offset).await?;
        let demuxed = demux(&fmeta, &cluster)?;
        let (id, start_ms, pto_ms) = if dynamic {
            let start = run_producer_ms.max(0) as u64;
            (format!("f{run_offset}"), start, start)
        } else {
            (
                n.to_string(),
                period_start_ms,
                run[0].producer_ms.max(0) as u64,
            )
        };
        let init_number = fragment_number(meta.stream_id, run[0].run_start);
        let adaptation_sets = demuxed
            .tracks
            .iter()
            .map(|track| {
                let kind = if track.codec.is_video() {
                    "video"
                } else {
                    "audio"
                };
                let scale = track.timescale() as u64;
                let ticks = |ms: i64| (ms.max(0) as u64).saturating_mul(scale) / 1000;
                let codecs = fmp4::codec_string(track);
                dash::AdaptationSet {
                    content_type: Some(kind.into()),
                    mime_type: format!("{kind}/mp4"),
                    segment_alignment: true,
                    start_with_sap: Some(1),
                    representations: vec![dash::Representation {
                        // A long, descriptive id: ffmpeg's DASH reader sizes its URL
                        // buffer from the manifest URL plus the id and bandwidth
                        // lengths, and our segment URLs (token, track, 42-digit
                        // fragment number) are longer than the manifest's.
                        id: format!(
                            "period-{id}-track-{}-{codecs}-starting-at-fragment-{init_number}",
                            track.number
                        ),
                        bandwidth: bandwidth(run),
                        width: track.codec.is_video().then_some(track.width),
                        height: track.codec.is_video().then_some(track.height),
                        audio_sampling_rate: (!track.codec.is_video())
                            .then_some(track.sample_rate),
                        codecs,
                        segments: dash::Segments {
                            timescale: scale,
                            presentation_time_offset: ticks(pto_ms as i64),
                            timeline: run
                                .iter()
                                .zip(run_durations)
                                .map(|(f, d)| {
                                    let t = ticks(f.producer_ms);
                                    dash::TimelineEntry {
                                        t: Some(t),
                                        d: ticks(f.producer_ms + *d as i64) - t,
                                        r: 0,
                                    }
                                })
                                .collect(),
                            addressing: dash::Addressing::List {
                                initialization: format!(
                                    "getMP4InitFragment.mp4?{token}&TrackNumber={}&FragmentNumber={init_number}",
                                    track.number
                                ),
                                media: run
                                    .iter()
                                    .map(|f| {
                                        format!(
                                            "getMP4MediaFragment.mp4?{token}&TrackNumber={}&FragmentNumber={}",
                                            track.number, f.number
                                        )
                                    })
                                    .collect(),
                            },
                        },
                    }],
                }
            })
            .collect();
        periods.push(dash::Period {
            id,
            start_ms,
            adaptation_sets,
        });
        period_start_ms += run_durations.iter().sum::<u64>();
    }
    let mpd = dash::Mpd {
        profiles: dash::PROFILE_ISOFF_LIVE.into(),
        min_buffer_time_ms: max_dur,
        presentation,
        periods,
    };
    Ok(with_type(dash::write_mpd(&mpd), "application/dash+xml"))
}

/// `POST /getClip`: one MP4 (moov first) of the fragments in a range.
pub async fn get_clip(State(state): State<AppState>, req: Request) -> Response {
    clip_inner(&state, req).await.unwrap_or_else(|r| r)
}

async fn clip_inner(state: &AppState, req: Request) -> Result<Response, Response> {
    let (doc, _) = read_json(state, req).await?;
    let meta = stream_of(state, &doc)?;
    let selector = &doc["ClipFragmentSelector"];
    if !selector.is_object() {
        return Err(invalid("ClipFragmentSelector is required."));
    }
    let by_producer = match selector["FragmentSelectorType"].as_str() {
        Some("PRODUCER_TIMESTAMP") => true,
        Some("SERVER_TIMESTAMP") => false,
        _ => {
            return Err(invalid(
                "ClipFragmentSelector.FragmentSelectorType must be PRODUCER_TIMESTAMP or SERVER_TIMESTAMP.",
            ));
        }
    };
    let range = &selector["TimestampRange"];
    let (Some(start), Some(end)) = (
        timestamp_ms(&range["StartTimestamp"], "StartTimestamp")?,
        timestamp_ms(&range["EndTimestamp"], "EndTimestamp")?,
    ) else {
        return Err(invalid(
            "TimestampRange needs StartTimestamp and EndTimestamp.",
        ));
    };
    if start >= end {
        return Err(invalid("StartTimestamp must be before EndTimestamp."));
    }
    if end - start > MAX_RANGE_MS {
        return Err(invalid("The timestamp range must not exceed 24 hours."));
    }
    require_retention(&meta)?;
    let (fragments, _) = state
        .video
        .select_fragments(
            &meta,
            Selection {
                by_producer,
                start_ms: Some(start),
                end_ms: Some(end),
                max: CLIP_MAX_FRAGMENTS,
            },
        )
        .await
        .map_err(video_error)?;
    if fragments.is_empty() {
        return Err(not_found(
            "No fragments found in the stream for the clip request.",
        ));
    }
    // The first 100 MB, and one stream header (a clip cannot change CodecPrivate).
    let mut taken = Vec::new();
    let mut bytes = 0;
    for f in &fragments {
        if f.header_id != fragments[0].header_id
            || (bytes + f.size > CLIP_MAX_BYTES && !taken.is_empty())
        {
            break;
        }
        bytes += f.size;
        taken.push(f.offset);
    }
    let mut tracks = None;
    let mut samples = Vec::new();
    for offset in taken {
        let (_, _, fmeta, cluster) = read_fragment(state, &meta, offset).await?;
        let d = demux(&fmeta, &cluster)?;
        if tracks.is_none() {
            tracks = Some(d.tracks);
        }
        samples.extend(d.samples);
    }
    let tracks = tracks.unwrap_or_default();
    let mp4 = tokio::task::spawn_blocking(move || fmp4::progressive_mp4(&tracks, &samples))
        .await
        .map_err(internal)?;
    Ok(with_type(mp4, "video/mp4"))
}

// ---- GetImages ---------------------------------------------------------------------

/// At most this many images per GetImages response.
const IMAGES_PAGE: usize = 25;
/// GetImages ranges may span at most this long.
const IMAGES_MAX_RANGE_MS: i64 = 300_000;
/// The sampling interval when none is given.
const DEFAULT_SAMPLING_MS: i64 = 3_000;

/// `POST /getImages`: JPEG or PNG images at a sampling interval over a range.
pub async fn get_images(State(state): State<AppState>, req: Request) -> Response {
    images_inner(&state, req).await.unwrap_or_else(|r| r)
}

struct ImagesRequest {
    by_producer: bool,
    start: i64,
    end: i64,
    interval: i64,
    png: bool,
    quality: u8,
    size: Size,
    page: usize,
    from: i64,
}

fn images_request(doc: &Value) -> Result<ImagesRequest, Response> {
    let by_producer = match doc["ImageSelectorType"].as_str() {
        Some("PRODUCER_TIMESTAMP") => true,
        Some("SERVER_TIMESTAMP") => false,
        _ => {
            return Err(invalid(
                "ImageSelectorType must be PRODUCER_TIMESTAMP or SERVER_TIMESTAMP.",
            ));
        }
    };
    let (Some(start), Some(end)) = (
        timestamp_ms(&doc["StartTimestamp"], "StartTimestamp")?,
        timestamp_ms(&doc["EndTimestamp"], "EndTimestamp")?,
    ) else {
        return Err(invalid("StartTimestamp and EndTimestamp are required."));
    };
    if end < start {
        return Err(invalid("EndTimestamp must not be before StartTimestamp."));
    }
    if end - start > IMAGES_MAX_RANGE_MS {
        return Err(invalid(
            "The time range between StartTimestamp and EndTimestamp must not exceed 300 seconds.",
        ));
    }
    let interval = match &doc["SamplingInterval"] {
        Value::Null => DEFAULT_SAMPLING_MS,
        v => match v.as_i64() {
            Some(n) if n >= 200 => n,
            _ => {
                return Err(invalid(
                    "SamplingInterval must be at least 200 milliseconds.",
                ));
            }
        },
    };
    let png = match doc["Format"].as_str() {
        Some("JPEG") => false,
        Some("PNG") => true,
        _ => return Err(invalid("Format must be JPEG or PNG.")),
    };
    let mut quality = 80u8;
    match &doc["FormatConfig"] {
        Value::Null => {}
        Value::Object(m) => {
            for (k, v) in m {
                let q = (k == "JPEGQuality")
                    .then(|| v.as_str().and_then(|s| s.parse::<u8>().ok()))
                    .flatten()
                    .filter(|q| (1..=100).contains(q));
                match q {
                    Some(q) => quality = q,
                    None => {
                        return Err(invalid(
                            "FormatConfig takes one key, JPEGQuality, with a value from \"1\" to \"100\".",
                        ));
                    }
                }
            }
        }
        _ => return Err(invalid("FormatConfig must be a map.")),
    }
    let width = int_field(doc, "WidthPixels", 1, 3840)?.map(|w| w as u32);
    let height = int_field(doc, "HeightPixels", 1, 2160)?.map(|h| h as u32);
    if width.is_some() && height.is_none() {
        return Err(invalid("WidthPixels needs HeightPixels."));
    }
    let page = int_field(doc, "MaxResults", 1, 100)?
        .map_or(IMAGES_PAGE, |n| (n as usize).min(IMAGES_PAGE));
    let from = match doc["NextToken"].as_str() {
        None => start,
        Some(t) => base64::Engine::decode(&base64::engine::general_purpose::STANDARD, t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("image:").and_then(|n| n.parse::<i64>().ok()))
            .filter(|t| (start..=end).contains(t))
            .ok_or_else(|| invalid("Invalid NextToken."))?,
    };
    Ok(ImagesRequest {
        by_producer,
        start,
        end,
        interval,
        png,
        quality,
        size: Size { width, height },
        page,
        from,
    })
}

async fn images_inner(state: &AppState, req: Request) -> Result<Response, Response> {
    let (doc, _) = read_json(state, req).await?;
    let meta = stream_of(state, &doc)?;
    let r = images_request(&doc)?;
    require_retention(&meta)?;
    // The sampling times of this page.
    let mut times = Vec::new();
    let mut t = r.from;
    while t <= r.end && times.len() < r.page {
        times.push(t);
        t += r.interval;
    }
    let next = (t <= r.end && t > r.start).then_some(t);
    let (Some(&first), Some(&last)) = (times.first(), times.last()) else {
        return Err(invalid("No sampling time lies in the range."));
    };
    // Fragments that may show these times: those overlapping [first, last].
    let (fragments, _) = state
        .video
        .select_fragments(
            &meta,
            Selection {
                by_producer: r.by_producer,
                start_ms: Some(first),
                end_ms: Some(last.saturating_add(1)),
                max: 1000,
            },
        )
        .await
        .map_err(video_error)?;
    let durations = durations_ms(&fragments);
    // Which fragment shows each time.
    let mut by_fragment: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut owner = vec![None; times.len()];
    for (i, &t) in times.iter().enumerate() {
        let found = fragments.iter().zip(&durations).rposition(|(f, d)| {
            let base = f.time_ms(r.by_producer);
            base <= t && t < base + *d as i64
        });
        if let Some(k) = found {
            owner[i] = Some(k);
            match by_fragment.last_mut() {
                Some((fk, ts)) if *fk == k => ts.push(i),
                _ => by_fragment.push((k, vec![i])),
            }
        }
    }
    let mut contents: Vec<Result<Option<String>, ()>> = vec![Ok(None); times.len()];
    for (k, indexes) in by_fragment {
        let f = &fragments[k];
        let decoded = decode_at(
            state,
            &meta,
            f,
            &indexes.iter().map(|&i| times[i]).collect::<Vec<_>>(),
            &r,
        )
        .await?;
        for (i, image) in indexes.into_iter().zip(decoded) {
            contents[i] = image;
        }
    }
    let images: Vec<Value> = times
        .iter()
        .zip(contents)
        .zip(&owner)
        .map(|((&t, content), owner)| {
            let ts = t as f64 / 1000.0;
            match (owner, content) {
                (None, _) | (Some(_), Ok(None)) => json!({"TimeStamp": ts, "Error": "NO_MEDIA"}),
                (Some(_), Ok(Some(b64))) => json!({"TimeStamp": ts, "ImageContent": b64}),
                (Some(_), Err(())) => json!({"TimeStamp": ts, "Error": "MEDIA_ERROR"}),
            }
        })
        .collect();
    let mut body = json!({ "Images": images });
    if let Some(n) = next {
        body["NextToken"] = json!(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("image:{n}")
        ));
    }
    Ok(axum::Json(body).into_response())
}

/// Decodes one fragment and encodes its frames at `times` (selector ms): base64 image,
/// `Ok(None)` for a time before its first frame, `Err(())` when it cannot be decoded.
async fn decode_at(
    state: &AppState,
    meta: &VideoStreamMeta,
    f: &FragmentInfo,
    times: &[i64],
    r: &ImagesRequest,
) -> Result<Vec<Result<Option<String>, ()>>, Response> {
    let (_, _, fmeta, cluster) = read_fragment(state, meta, f.offset).await?;
    let Ok(permit) =
        tokio::time::timeout(images::DECODE_WAIT, images::DECODE_SLOTS.acquire()).await
    else {
        return Err(error(
            ErrorKind::Throttled,
            "ClientLimitExceededException",
            "Too many images are being generated; try again later.",
        ));
    };
    let base = f.time_ms(r.by_producer);
    let times = times.to_vec();
    let (png, quality, size) = (r.png, r.quality, r.size);
    let out = tokio::task::spawn_blocking(move || {
        let failed = || vec![Err(()); times.len()];
        let Ok(d) = demux(&fmeta, &cluster) else {
            return failed();
        };
        let Some(vi) = d.tracks.iter().position(|t| t.codec.is_video()) else {
            return failed();
        };
        let samples: Vec<_> = d
            .samples
            .iter()
            .filter(|s| s.track == vi)
            .cloned()
            .collect();
        let Some(first_pts) = samples.iter().map(|s| s.pts_ns).min() else {
            return failed();
        };
        // Selector time -> the samples' clock.
        let wanted: Vec<i64> = times
            .iter()
            .map(|t| first_pts + (t - base) * 1_000_000)
            .collect();
        match images::frames_at(&d.tracks[vi], &samples, &wanted, size) {
            Err(e) => {
                tracing::warn!(error = %e, "GetImages: fragment could not be decoded");
                failed()
            }
            Ok(frames) => frames
                .into_iter()
                .map(|frame| match frame {
                    None => Ok(None),
                    Some(img) => {
                        let bytes = if png {
                            images::encode_png(&img)
                        } else {
                            images::encode_jpeg(&img, quality)
                        };
                        bytes
                            .map(|b| {
                                Some(base64::Engine::encode(
                                    &base64::engine::general_purpose::STANDARD,
                                    b,
                                ))
                            })
                            .map_err(|_| ())
                    }
                })
                .collect(),
        }
    })
    .await
    .map_err(internal)?;
    drop(permit);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_segment_cache_stays_within_its_budget() {
        let cache = SegmentCache::default();
        let big = Bytes::from(vec![0u8; CACHE_MAX_BYTES / 5]);
        for i in 0..10 {
            cache.put((1, i, KIND_FMP4), big.clone());
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.bytes <= CACHE_MAX_BYTES);
        assert_eq!(inner.map.len(), 5);
        // The newest are kept.
        assert!(inner.map.contains_key(&(1, 9, KIND_FMP4)));
        assert!(!inner.map.contains_key(&(1, 0, KIND_FMP4)));
    }
}
