//! RTSP pull from a camera (RFC 2326 / RFC 7826 as cameras speak it): OPTIONS,
//! DESCRIBE (SDP), SETUP of the video (and AAC audio) media with RTP interleaved on the
//! RTSP connection, PLAY; keep-alives at half the session timeout; Basic or Digest
//! authentication from the URL's credentials (never logged). When the camera goes
//! away the last fragment is stored and the feed reconnects with exponential backoff
//! (1 s doubling to 30 s), reporting its state through the feed status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::session::{RtpSession, select_media};
use super::{FeedConfig, FeedManager, FeedState, StatusCell, redact_url};
use crate::media::fragmenter::FragmentPolicy;
use crate::media::rtsp::{
    Challenge, Credentials, Message, Request, Response, Transport, authorization, parse_message,
    split_credentials,
};
use crate::media::sdp::SessionDescription;
use crate::video::ingest::ensure_stream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The camera is considered gone after this long without any data.
const DATA_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BUFFER: usize = 512 * 1024;

/// Runs a pull feed until `stop`.
pub async fn run(
    manager: Arc<FeedManager>,
    config: FeedConfig,
    url: String,
    status: StatusCell,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        status.set_state(FeedState::Connecting, None);
        let result = pull_once(&manager, &config, &url, &status, &mut stop).await;
        if *stop.borrow() {
            return;
        }
        let (played, message) = match result {
            Ok(()) => (true, "the camera ended the session".to_string()),
            Err((played, e)) => (played, e),
        };
        if played {
            // It worked until now: try again soon.
            backoff = Duration::from_secs(1);
        }
        tracing::warn!(
            stream = config.stream_name,
            camera = redact_url(&url),
            error = message,
            retry_in = ?backoff,
            "RTSP pull: camera unavailable"
        );
        status.set_state(FeedState::Reconnecting, Some(message));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One RTSP client connection.
struct Client {
    socket: TcpStream,
    buf: BytesMut,
    cseq: u32,
    session: Option<String>,
    credentials: Option<Credentials>,
    challenge: Option<Challenge>,
    nonce_count: u32,
}

impl Client {
    async fn connect(url: &str, credentials: Option<Credentials>) -> Result<Self, String> {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let addr = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:554")
        };
        let socket = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = socket.set_nodelay(true);
        Ok(Self {
            socket,
            buf: BytesMut::with_capacity(64 * 1024),
            cseq: 0,
            session: None,
            credentials,
            challenge: None,
            nonce_count: 0,
        })
    }

    fn prepare(&mut self, mut req: Request) -> Result<Request, String> {
        self.cseq += 1;
        req.headers.set("CSeq", self.cseq.to_string());
        req.headers.set("User-Agent", "freshet");
        if let Some(s) = &self.session {
            req.headers.set("Session", s.clone());
        }
        if let (Some(ch), Some(cred)) = (&self.challenge, &self.credentials) {
            self.nonce_count += 1;
            let cnonce = format!("{:08x}", self.cseq.wrapping_mul(2_654_435_761));
            let value = authorization(ch, cred, &req.method, &req.uri, self.nonce_count, &cnonce)
                .map_err(|e| e.to_string())?;
            req.headers.set("Authorization", value);
        }
        Ok(req)
    }

    /// Sends a request and waits for its response (authenticating once on 401).
    async fn call(&mut self, req: Request) -> Result<Response, String> {
        let first = self.prepare(req.clone())?;
        let mut resp = self.send_and_wait(first).await?;
        if resp.status == 401 && self.credentials.is_some() {
            let challenge = Challenge::choose(resp.headers.get_all("WWW-Authenticate"))
                .ok_or("the camera asks for an authentication scheme we cannot answer")?;
            self.challenge = Some(challenge);
            self.nonce_count = 0;
            let again = self.prepare(req)?;
            resp = self.send_and_wait(again).await?;
        }
        match resp.status {
            200..=299 => Ok(resp),
            401 => Err("the camera refused the credentials (401)".into()),
            s => Err(format!("the camera answered {s} {}", resp.reason)),
        }
    }

    async fn send_and_wait(&mut self, req: Request) -> Result<Response, String> {
        let cseq = req.cseq();
        self.socket
            .write_all(&req.to_bytes())
            .await
            .map_err(|e| format!("sending {} failed: {e}", req.method))?;
        let deadline = tokio::time::Instant::now() + RESPONSE_TIMEOUT;
        loop {
            while let Some(message) = self.next_buffered()? {
                if let Message::Response(r) = message
                    && (cseq.is_none() || r.cseq() == cseq)
                {
                    return Ok(r);
                }
            }
            let n = tokio::time::timeout_at(deadline, self.socket.read_buf(&mut self.buf))
                .await
                .map_err(|_| format!("no answer to {} from the camera", req.method))?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the camera closed the connection".into());
            }
        }
    }

    fn next_buffered(&mut self) -> Result<Option<Message>, String> {
        match parse_message(&self.buf) {
            Ok(Some((m, used))) => {
                self.buf.advance(used);
                Ok(Some(m))
            }
            Ok(None) if self.buf.len() > MAX_BUFFER => Err("oversized RTSP message".into()),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("bad RTSP from the camera: {e}")),
        }
    }
}

/// Connects, streams until the connection ends or `stop`; stores the last fragment.
/// An error says whether the camera had been playing.
async fn pull_once(
    manager: &Arc<FeedManager>,
    config: &FeedConfig,
    url: &str,
    status: &StatusCell,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), (bool, String)> {
    let mut session = setup(manager, config, url).await.map_err(|e| (false, e))?;
    stream(manager, config, status, stop, &mut session)
        .await
        .map_err(|e| (true, e))
}

/// A connected, playing camera.
struct Playing {
    client: Client,
    base: String,
    url: String,
    channels: HashMap<u8, (usize, bool)>,
    keepalive: Duration,
    session: RtpSession,
}

async fn setup(
    manager: &Arc<FeedManager>,
    config: &FeedConfig,
    url: &str,
) -> Result<Playing, String> {
    let (url, credentials) = split_credentials(url);
    let mut client = Client::connect(&url, credentials).await?;
    let _ = client.call(Request::new("OPTIONS", &url)).await;
    let describe = client
        .call(Request::new("DESCRIBE", &url).with_header("Accept", "application/sdp"))
        .await?;
    let base = describe
        .headers
        .get("Content-Base")
        .or_else(|| describe.headers.get("Content-Location"))
        .map(str::to_string)
        .unwrap_or_else(|| url.clone());
    let sdp = SessionDescription::parse(&describe.body).map_err(|e| format!("bad SDP: {e}"))?;
    let media = select_media(&sdp)?;
    let mut channels = HashMap::new();
    let mut keepalive = Duration::from_secs(30);
    for (i, m) in media.iter().enumerate() {
        let (rtp, rtcp) = ((2 * i) as u8, (2 * i + 1) as u8);
        let transport = Transport::tcp_interleaved(rtp, rtcp).to_string();
        let resp = client
            .call(Request::new("SETUP", &m.control_url(&base)).with_header("Transport", transport))
            .await?;
        if client.session.is_none() {
            let value = resp
                .headers
                .get("Session")
                .ok_or("SETUP answer without Session")?;
            let mut parts = value.split(';');
            client.session = Some(parts.next().unwrap_or("").trim().to_string());
            for p in parts {
                if let Some(t) = p.trim().strip_prefix("timeout=")
                    && let Ok(secs) = t.trim().parse::<u64>()
                {
                    keepalive = Duration::from_secs((secs / 2).clamp(5, 60));
                }
            }
        }
        // The camera may pick other channels.
        let (rtp, rtcp) = resp
            .headers
            .get("Transport")
            .and_then(|t| Transport::parse_list(t).ok())
            .and_then(|l| l.into_iter().find_map(|t| t.interleaved))
            .unwrap_or((rtp, rtcp));
        channels.insert(rtp, (i, false));
        channels.insert(rtcp, (i, true));
    }
    let opts = manager.options();
    ensure_stream(
        manager.video(),
        &config.stream_name,
        opts.auto_create,
        opts.retention_hours,
    )
    .await
    .map_err(|e| e.to_string())?;
    let policy = FragmentPolicy {
        target_ms: config.fragment_ms as i64,
        ..FragmentPolicy::default()
    };
    let session = RtpSession::new(manager.video().clone(), &config.stream_name, &media, policy)?;
    client
        .call(Request::new("PLAY", &base).with_header("Range", "npt=0.000-"))
        .await?;
    Ok(Playing {
        client,
        base,
        url,
        channels,
        keepalive,
        session,
    })
}

async fn stream(
    manager: &Arc<FeedManager>,
    config: &FeedConfig,
    status: &StatusCell,
    stop: &mut watch::Receiver<bool>,
    playing: &mut Playing,
) -> Result<(), String> {
    let Playing {
        client,
        base,
        url,
        channels,
        keepalive,
        session,
    } = playing;
    let keepalive = *keepalive;
    status.set_state(FeedState::Receiving, None);
    status.update(|s| s.connections += 1);
    tracing::info!(
        stream = config.stream_name,
        camera = redact_url(url),
        "RTSP pull: playing"
    );

    let clock = manager.clock().clone();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut ping = tokio::time::interval(keepalive);
    ping.tick().await;
    let mut last_data = tokio::time::Instant::now();
    let result: Result<(), String> = loop {
        tokio::select! {
            _ = stop.changed() => {
                let teardown = client.prepare(Request::new("TEARDOWN", base));
                if let Ok(req) = teardown {
                    let _ = client.socket.write_all(&req.to_bytes()).await;
                }
                break Ok(());
            }
            n = client.socket.read_buf(&mut client.buf) => {
                match n {
                    Ok(0) => break Err("the camera closed the connection".into()),
                    Err(e) => break Err(e.to_string()),
                    Ok(_) => {}
                }
                last_data = tokio::time::Instant::now();
                loop {
                    match client.next_buffered() {
                        Ok(Some(Message::Interleaved { channel, payload })) => {
                            if let Some(&(track, rtcp)) = channels.get(&channel) {
                                if rtcp {
                                    session.rtcp(track, &payload);
                                } else if let Err(e) = session.rtp(track, payload, clock.now_ms()).await {
                                    tracing::warn!(stream = config.stream_name, error = %e, "RTSP pull: storing failed");
                                }
                            }
                        }
                        Ok(Some(Message::Request(req))) => {
                            // Servers may ask too (GET_PARAMETER, OPTIONS): say yes.
                            let resp = Response::to_request(&req, 200);
                            let _ = client.socket.write_all(&resp.to_bytes()).await;
                        }
                        Ok(Some(Message::Response(_))) => {}
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(stream = config.stream_name, error = e, "RTSP pull: bad data");
                            client.buf.clear();
                            break;
                        }
                    }
                }
                let st = session.stats();
                status.session(st.packets, st.lost, st.sink);
            }
            _ = tick.tick() => {
                let _ = session.tick(clock.now_ms()).await;
                if last_data.elapsed() > DATA_TIMEOUT {
                    break Err(format!("no data from the camera for {} s", DATA_TIMEOUT.as_secs()));
                }
            }
            _ = ping.tick() => {
                if let Ok(req) = client.prepare(Request::new("GET_PARAMETER", base)) {
                    let _ = client.socket.write_all(&req.to_bytes()).await;
                }
            }
        }
    };
    let _ = session.finish(clock.now_ms()).await;
    let st = session.stats();
    status.end_session(st.packets, st.lost, st.sink);
    result
}
