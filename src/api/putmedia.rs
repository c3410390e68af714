//! PutMedia (Kinesis Video Streams media API): `POST /putMedia` with a live MKV body and
//! a stream of JSON acknowledgements in the response, one per line, while the upload
//! continues (`PROTOCOLS.md`, PutMedia).
//!
//! The handler awaits the first body bytes before answering, so hyper answers
//! `Expect: 100-continue` with `100 Continue`; then it answers `200` and a task keeps
//! reading the body through the MKV reader ([`crate::media::mkv`]): BUFFERING when a
//! fragment starts, RECEIVED when it is complete, PERSISTED once it is durable in the
//! fragment store, IDLE while the producer is silent, ERROR (with its ErrorId) and the
//! end of the response when something is wrong. Memory per connection is bounded by the
//! reader's limits.
//!
//! A fragment is stored with its duration to the nearest millisecond, its last frame
//! included ([`crate::media::mkv::Fragment::duration_ns`]); a fragment that cannot tell
//! how long its last frame lasts (a lone frame without DefaultDuration) counts it as
//! long as the frames of earlier fragments on the same connection.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};

use super::error::ApiError;
use crate::error::ErrorKind;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::{AppState, header_str};
use crate::media::mkv::{Limits, MkvEvent, MkvReader, kvs_tags};
use crate::video::VideoRef;
use crate::video::fragments::FragmentMeta;
use crate::video::ingest::{self, IncomingFragment};

/// An IDLE ack is sent after this long without data.
const IDLE_EVERY: Duration = Duration::from_secs(3);
/// The connection ends after this long without data (as in AWS).
const SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// PutMedia error ids (`PROTOCOLS.md`).
const ERR_STREAM_READ: u32 = 4000;
const ERR_STREAM_NOT_ACTIVE: u32 = 4008;
const ERR_INVALID_TIMESTAMP: u32 = 4007;
const ERR_PERSIST: u32 = 5001;
/// The server's memory for fragments being received is exhausted.
const ERR_INTERNAL: u32 = 5000;

fn rest_error(kind: ErrorKind, code: &'static str, message: &str) -> Response {
    ApiError::new(kind, code, message).into_rest_json()
}

/// One acknowledgement line, keys in the order AWS sends them:
/// `{"EventType":"PERSISTED","FragmentTimecode":12345,"FragmentNumber":"91..."}`.
fn ack(event: &str, timecode: Option<u64>, number: Option<&str>, error_id: Option<u32>) -> Bytes {
    let mut line = format!("{{\"EventType\":\"{event}\"");
    if let Some(t) = timecode {
        line.push_str(&format!(",\"FragmentTimecode\":{t}"));
    }
    if let Some(n) = number {
        // Fragment numbers are digits only: nothing to escape.
        line.push_str(&format!(",\"FragmentNumber\":\"{n}\""));
    }
    if let Some(e) = error_id {
        line.push_str(&format!(",\"ErrorId\":{e}"));
    }
    line.push_str("}\n");
    Bytes::from(line)
}

/// `POST /putMedia`.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let r = VideoRef {
        name: header_str(h, "x-amzn-stream-name").map(str::to_string),
        arn: header_str(h, "x-amzn-stream-arn").map(str::to_string),
    };
    let meta = match state.video.get(&r) {
        Ok(m) => m,
        Err(e) if r.name.is_none() && r.arn.is_none() => {
            return rest_error(
                ErrorKind::InvalidArgument,
                "InvalidArgumentException",
                &e.to_string(),
            );
        }
        Err(e) => return ApiError::from(e).into_rest_json(),
    };
    let relative = match header_str(h, "x-amzn-fragment-timecode-type") {
        None | Some("ABSOLUTE") => false,
        Some("RELATIVE") => true,
        Some(other) => {
            return rest_error(
                ErrorKind::InvalidArgument,
                "InvalidArgumentException",
                &format!(
                    "x-amzn-fragment-timecode-type must be ABSOLUTE or RELATIVE, not {other}."
                ),
            );
        }
    };
    let start_ms = match header_str(h, "x-amzn-producer-start-timestamp") {
        None => None,
        Some(text) => match text.parse::<f64>() {
            Ok(secs) if secs.is_finite() && secs >= 0.0 => Some((secs * 1000.0).round() as i64),
            _ => {
                return rest_error(
                    ErrorKind::InvalidArgument,
                    "InvalidArgumentException",
                    "x-amzn-producer-start-timestamp must be seconds since the epoch.",
                );
            }
        },
    };
    if relative && start_ms.is_none() {
        return rest_error(
            ErrorKind::InvalidArgument,
            "InvalidArgumentException",
            "RELATIVE timecodes need x-amzn-producer-start-timestamp.",
        );
    }

    let mut body = body;
    // Reading before answering makes hyper send `100 Continue` to producers that wait.
    let first = body.frame().await;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut share = state.media_budget.share();
    let mut ingest = Ingest {
        video: state.video.clone(),
        meta,
        tx,
        ebml_header: Bytes::new(),
        info_and_tracks: Bytes::new(),
        timecode_scale: 1_000_000,
        relative,
        start_ms,
        next_offset: None,
        frame_durations_ns: Vec::new(),
        fragment_arrived_ms: None,
    };
    tokio::spawn(async move {
        if !ingest.meta.accepts_media() {
            let reason = format!("the stream is {}", ingest.meta.status.as_str());
            ingest.fail(None, ERR_STREAM_NOT_ACTIVE, &reason).await;
            return;
        }
        let mut reader = MkvReader::new(Limits::default());
        let mut events = Vec::new();
        let mut pending = Some(first);
        let mut silent_for = Duration::ZERO;
        loop {
            let frame = match pending.take() {
                Some(f) => f,
                None => match tokio::time::timeout(IDLE_EVERY, body.frame()).await {
                    Ok(f) => f,
                    Err(_) => {
                        silent_for += IDLE_EVERY;
                        if silent_for >= SILENCE_LIMIT
                            || ingest.tx.send(ack("IDLE", None, None, None)).await.is_err()
                        {
                            return;
                        }
                        continue;
                    }
                },
            };
            silent_for = Duration::ZERO;
            match frame {
                None => {
                    // End of the body: a last unknown-size Cluster ends here.
                    let result = reader.finish(&mut events);
                    if ingest.process(&mut events).await
                        && let Err(e) = result
                    {
                        ingest.fail(None, e.error_id(), &e.to_string()).await;
                    }
                    return;
                }
                Some(Err(e)) => {
                    let reason = format!("reading the request body failed: {e}");
                    ingest.fail(None, ERR_STREAM_READ, &reason).await;
                    return;
                }
                Some(Ok(f)) => {
                    let Ok(chunk) = f.into_data() else { continue };
                    // The reader may keep all of this chunk: hold budget for it first
                    // (waiting here leaves the socket unread: backpressure).
                    if let Err(e) = share.grow_to(reader.held_bytes() + chunk.len()).await {
                        let reason = format!(
                            "media memory budget exhausted ({e:?}, {} bytes held)",
                            share.held_bytes()
                        );
                        ingest.fail(None, ERR_INTERNAL, &reason).await;
                        return;
                    }
                    let result = reader.feed(&chunk, &mut events);
                    // Fragments completed before an error are still stored.
                    if !ingest.process(&mut events).await {
                        return;
                    }
                    share.shrink_to(reader.held_bytes());
                    if let Err(e) = result {
                        ingest.fail(None, e.error_id(), &e.to_string()).await;
                        return;
                    }
                }
            }
        }
    });
    let mut resp = Response::new(Body::new(super::ChannelBody(rx)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The state of one PutMedia connection.
struct Ingest {
    video: std::sync::Arc<crate::video::VideoService>,
    meta: crate::video::VideoStreamMeta,
    tx: mpsc::Sender<Bytes>,
    /// EBML header of the current document.
    ebml_header: Bytes,
    /// Info and Tracks of the current document.
    info_and_tracks: Bytes,
    timecode_scale: u64,
    relative: bool,
    start_ms: Option<i64>,
    /// The log offset the next fragment is expected to get (for the numbers in
    /// BUFFERING/RECEIVED acks; PERSISTED carries the number actually assigned).
    next_offset: Option<u64>,
    /// Per track of the current document (like its Tracks), how long a frame lasted in
    /// the latest fragment that told: the duration of a fragment whose own frames do
    /// not (a lone frame without DefaultDuration, at the end of a stream say) counts
    /// its last frame this long ([`crate::media::mkv::Fragment::duration_ns`]).
    frame_durations_ns: Vec<Option<u64>>,
    /// When the first bytes of the fragment being received arrived (server clock).
    fragment_arrived_ms: Option<i64>,
}

impl Ingest {
    async fn send(&self, line: Bytes) -> bool {
        self.tx.send(line).await.is_ok()
    }

    /// Ends the upload with an ERROR ack, logged with the stream, the ErrorId and why.
    async fn fail(&self, timecode: Option<u64>, error_id: u32, reason: &str) {
        tracing::warn!(
            stream = self.meta.name,
            error_id,
            fragment_timecode = timecode,
            reason,
            "PutMedia ERROR ack"
        );
        let _ = self
            .send(ack("ERROR", timecode, None, Some(error_id)))
            .await;
    }

    async fn expected_number(&mut self) -> Option<String> {
        if self.meta.retention_hours == 0 {
            return None;
        }
        if self.next_offset.is_none() {
            self.next_offset = self.video.fragment_end_offset(&self.meta).await.ok();
        }
        self.next_offset
            .map(|o| crate::video::fragments::fragment_number(self.meta.stream_id, o))
    }

    /// Acts on reader events: acks, and stores complete fragments. Returns false when
    /// the connection must end (an ERROR was sent or the client went away).
    async fn process(&mut self, events: &mut Vec<MkvEvent>) -> bool {
        let mut events = std::mem::take(events).into_iter().peekable();
        while let Some(event) = events.next() {
            match event {
                MkvEvent::Header(h) => {
                    self.timecode_scale = h.timecode_scale.max(1);
                    self.frame_durations_ns = vec![None; h.tracks.len()];
                    self.ebml_header = Bytes::from(h.ebml_header_bytes);
                    self.info_and_tracks = Bytes::from(h.info_and_tracks_bytes);
                }
                MkvEvent::FragmentStart { cluster_timecode } => {
                    // The fragment's first bytes are here: its server timestamp.
                    self.fragment_arrived_ms = Some(self.video.now_ms());
                    let number = self.expected_number().await;
                    if !self
                        .send(ack(
                            "BUFFERING",
                            Some(cluster_timecode),
                            number.as_deref(),
                            None,
                        ))
                        .await
                    {
                        return false;
                    }
                }
                MkvEvent::FragmentEnd(fragment) => {
                    // Producer tags sent right after a Cluster belong to its fragment
                    // (GetMedia returns them after that Cluster). Tags arriving in a
                    // later chunk than the Cluster's end are not attached.
                    let mut tags = Vec::new();
                    while let Some(MkvEvent::Tags(_)) = events.peek() {
                        if let Some(MkvEvent::Tags(t)) = events.next() {
                            tags.extend(
                                t.into_iter()
                                    .filter(|(name, _)| !kvs_tags::is_kvs_tag(name)),
                            );
                        }
                    }
                    if !self.store(fragment, tags).await {
                        return false;
                    }
                }
                MkvEvent::Frame(_) | MkvEvent::Tags(_) | MkvEvent::EndOfFragment => {}
            }
        }
        true
    }

    async fn store(
        &mut self,
        fragment: crate::media::mkv::Fragment,
        producer_tags: Vec<(String, String)>,
    ) -> bool {
        let tc = fragment.cluster_timecode;
        let relative_start = self.relative.then(|| self.start_ms.unwrap_or(0));
        let Some(producer_ts_ms) =
            ingest::producer_timestamp_ms(tc, self.timecode_scale, relative_start)
        else {
            let reason = format!("the producer timestamp of timecode {tc} is before the epoch");
            self.fail(Some(tc), ERR_INVALID_TIMESTAMP, &reason).await;
            return false;
        };
        let number = self.expected_number().await;
        if !self
            .send(ack("RECEIVED", Some(tc), number.as_deref(), None))
            .await
        {
            return false;
        }
        let duration_ns = fragment.duration_ns(&self.frame_durations_ns);
        self.frame_durations_ns.resize(fragment.tracks.len(), None);
        for (known, timing) in self.frame_durations_ns.iter_mut().zip(&fragment.tracks) {
            if let Some(d) = timing.last_frame_duration_ns(fragment.timecode_scale) {
                *known = Some(d);
            }
        }
        let incoming = IncomingFragment {
            meta: FragmentMeta {
                producer_ts_ms,
                cluster_timecode: tc,
                timecode_scale: self.timecode_scale,
                duration_ms: ingest::duration_ms_of_ns(duration_ns),
                frame_count: fragment.frame_count as u32,
                ebml_header: self.ebml_header.clone(),
                info_and_tracks: self.info_and_tracks.clone(),
                producer_tags,
            },
            cluster: Bytes::from(fragment.raw_cluster_bytes),
            arrived_ms: self.fragment_arrived_ms.take(),
        };
        // A stream without retention keeps nothing: live readers get the fragment, and
        // the producer its PERSISTED as an acknowledgement of receipt.
        match self.video.ingest_fragment(&self.meta, incoming).await {
            Ok(stored) => {
                if let Some(offset) = stored.offset {
                    self.next_offset = Some(offset + 1);
                }
                self.send(ack("PERSISTED", Some(tc), Some(&stored.number), None))
                    .await
            }
            Err(e) => {
                tracing::error!(stream = self.meta.name, error = %e, "could not persist fragment");
                let reason = format!("could not persist the fragment: {e}");
                self.fail(Some(tc), ERR_PERSIST, &reason).await;
                false
            }
        }
    }
}
