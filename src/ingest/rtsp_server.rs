//! The RTSP publishing listener (`--rtsp-listen`): cameras and encoders push with
//! ANNOUNCE (SDP) / SETUP (`mode=record`) / RECORD as in RFC 2326 §10 and RFC 7826, over
//! TCP-interleaved RTP (`$` frames on the RTSP connection) or RTP over UDP (a server
//! port pair per media). `rtsp://HOST:PORT/<stream>` records into video stream
//! `<stream>`, created on first push unless the server forbids it
//! (`--ingest-no-auto-create`).
//!
//! ffmpeg (`-f rtsp -rtsp_transport tcp|udp`) and GStreamer (`rtspclientsink`) are the
//! reference clients; Transport headers are parsed leniently (`media::rtsp`).
//!
//! With keys configured, every request but OPTIONS must authenticate
//! ([`crate::auth::digest`]: Digest with the access key id and secret, Basic only on
//! an encrypted connection); a 401 carries a fresh challenge, and a connection that
//! fails [`MAX_AUTH_FAILURES`] times is closed. ANNOUNCE and RECORD to stream `S` need
//! the key to allow `kinesisvideo:PutMedia` on `S`, and an ANNOUNCE that would create
//! `S` also `kinesisvideo:CreateStream` (else 403). A session SETUPs only media it
//! announced, one transport each, of at most [`MAX_TRACKS`] announced media.
//!
//! RTSPS (`--rtsps-listen`): the same conversation inside TLS ([`serve_tls`]); only the
//! RTSP connection and interleaved media are encrypted, RTP over UDP stays plain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use super::FeedManager;
use super::session::{RtpSession, select_media};
use crate::auth::digest::{self, NonceKey, RtspRequest};
use crate::auth::{AccessKey, Keyring};
use crate::media::fragmenter::FragmentPolicy;
use crate::media::rtsp::{Message, Request, Response, Transport, parse_message};
use crate::media::sdp::{MediaDescription, SessionDescription};
use crate::video::VideoRef;
use crate::video::ingest::ensure_stream;

/// A connection with no RTSP request and no media for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes buffered from a connection before a message is complete (the RTSP
/// reader's own limits are lower; this bounds interleaved data too).
const MAX_BUFFER: usize = 256 * 1024;
/// Publishing connections at once.
const MAX_CONNECTIONS: usize = 1024;
/// Failed authentication attempts (wrong key or secret, forged nonce, malformed
/// header) after which a connection is closed.
pub const MAX_AUTH_FAILURES: u32 = 5;
/// Most media an ANNOUNCE may describe (a session stores at most one video and one
/// audio of them, and SETUPs only those).
pub const MAX_TRACKS: usize = 8;

/// Who may publish: the configured keys and the key nonces are made with.
#[derive(Debug)]
pub struct PublishAuth {
    keyring: Keyring,
    nonces: NonceKey,
}

impl PublishAuth {
    pub fn new(keyring: Keyring) -> Self {
        Self {
            keyring,
            nonces: NonceKey::random(),
        }
    }
}

/// Time a client has to complete the TLS handshake on the RTSPS listener.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts publishers until the task is aborted. `keyring`: `None` accepts everyone.
pub async fn serve(listener: TcpListener, feeds: Arc<FeedManager>, keyring: Option<Keyring>) {
    accept(listener, feeds, None, keyring).await
}

/// Accepts publishers over TLS (RTSPS) until the task is aborted.
pub async fn serve_tls(
    listener: TcpListener,
    feeds: Arc<FeedManager>,
    tls: tokio_rustls::TlsAcceptor,
    keyring: Option<Keyring>,
) {
    accept(listener, feeds, Some(tls), keyring).await
}

async fn accept(
    listener: TcpListener,
    feeds: Arc<FeedManager>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    keyring: Option<Keyring>,
) {
    let auth = keyring.map(|k| Arc::new(PublishAuth::new(k)));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "RTSP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "RTSP connection refused: too many publishers");
            continue;
        };
        let feeds = feeds.clone();
        let auth = auth.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = socket.set_nodelay(true);
            let local_ip = socket
                .local_addr()
                .map(|a| a.ip())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            let mut conn = Connection::new(feeds, auth, peer, local_ip);
            let ended = match tls {
                None => conn.run(socket).await,
                Some(tls) => {
                    conn.secure = true;
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(socket)).await {
                        Ok(Ok(socket)) => conn.run(socket).await,
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                    }
                }
            };
            if let Err(e) = ended {
                tracing::info!(%peer, secure = conn.secure, error = %e, "RTSP connection ended");
            }
            conn.finish().await;
            drop(permit);
        });
    }
}

/// Where a SETUP'd media's packets go.
struct Setup {
    /// Index in the session's track order.
    track: usize,
    udp_tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Connection {
    feeds: Arc<FeedManager>,
    /// `None`: authentication is off.
    auth: Option<Arc<PublishAuth>>,
    /// Whether the connection is TLS (RTSPS): only then is Basic (the secret itself on
    /// the wire) accepted and offered.
    secure: bool,
    /// Failed authentication attempts so far.
    auth_failures: u32,
    /// The Digest nonce the last authenticated request answered: it stays good on
    /// this connection (keep-alives of a long session), not on others.
    session_nonce: Option<String>,
    peer: SocketAddr,
    /// The address the client reached: UDP ports for RTP are bound on it (not on
    /// every interface).
    local_ip: std::net::IpAddr,
    session_id: String,
    stream: Option<String>,
    /// The announced URL (base for control URLs).
    base: String,
    media: Vec<MediaDescription>,
    setups: Vec<Setup>,
    /// Interleaved channel → (track, is RTCP).
    channels: HashMap<u8, (usize, bool)>,
    session: Option<RtpSession>,
    udp_tx: mpsc::Sender<(usize, bool, Bytes)>,
    udp_rx: mpsc::Receiver<(usize, bool, Bytes)>,
}

fn now_ms(feeds: &FeedManager) -> i64 {
    feeds.clock().now_ms()
}

impl Connection {
    fn new(
        feeds: Arc<FeedManager>,
        auth: Option<Arc<PublishAuth>>,
        peer: SocketAddr,
        local_ip: std::net::IpAddr,
    ) -> Self {
        let (udp_tx, udp_rx) = mpsc::channel(1024);
        Self {
            feeds,
            auth,
            secure: false,
            auth_failures: 0,
            session_nonce: None,
            peer,
            local_ip,
            session_id: format!("{:016X}", rand_u64()),
            stream: None,
            base: String::new(),
            media: Vec::new(),
            setups: Vec::new(),
            channels: HashMap::new(),
            session: None,
            udp_tx,
            udp_rx,
        }
    }

    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut socket: S,
    ) -> std::io::Result<()> {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut last_activity = tokio::time::Instant::now();
        loop {
            tokio::select! {
                n = socket.read_buf(&mut buf) => {
                    if n? == 0 {
                        return Ok(());
                    }
                    last_activity = tokio::time::Instant::now();
                    loop {
                        match parse_message(&buf) {
                            Ok(None) => {
                                if buf.len() > MAX_BUFFER {
                                    let resp = Response::new(413);
                                    socket.write_all(&resp.to_bytes()).await?;
                                    return Ok(());
                                }
                                break;
                            }
                            Err(e) => {
                                let resp = Response::new(400)
                                    .with_body("text/plain", format!("{e}\r\n"));
                                socket.write_all(&resp.to_bytes()).await?;
                                return Ok(());
                            }
                            Ok(Some((message, used))) => {
                                buf.advance(used);
                                match message {
                                    Message::Request(req) => {
                                        let (resp, close) = self.request(&req).await;
                                        socket.write_all(&resp.to_bytes()).await?;
                                        if close {
                                            return Ok(());
                                        }
                                    }
                                    Message::Response(_) => {}
                                    Message::Interleaved { channel, payload } => {
                                        if let Some(&(track, rtcp)) = self.channels.get(&channel) {
                                            self.packet(track, rtcp, payload).await;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                got = self.udp_rx.recv() => {
                    if let Some((track, rtcp, data)) = got {
                        last_activity = tokio::time::Instant::now();
                        self.packet(track, rtcp, data).await;
                    }
                }
                _ = tick.tick() => {
                    if let Some(s) = self.session.as_mut() {
                        let _ = s.tick(now_ms(&self.feeds)).await;
                    }
                    if last_activity.elapsed() > IDLE_TIMEOUT {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn packet(&mut self, track: usize, rtcp: bool, data: Bytes) {
        let now = now_ms(&self.feeds);
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if rtcp {
            s.rtcp(track, &data);
        } else if let Err(e) = s.rtp(track, data, now).await {
            tracing::warn!(stream = ?self.stream, error = %e, "RTSP publish: storing failed");
        }
    }

    /// Stores the last fragment and releases UDP ports.
    async fn finish(&mut self) {
        // UDP packets sent just before TEARDOWN may still be on their way in.
        if self.setups.iter().any(|s| !s.udp_tasks.is_empty()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            while let Ok((track, rtcp, data)) = self.udp_rx.try_recv() {
                self.packet(track, rtcp, data).await;
            }
        }
        if let Some(mut s) = self.session.take() {
            let _ = s.finish(now_ms(&self.feeds)).await;
            let st = s.stats();
            tracing::info!(
                stream = ?self.stream,
                peer = %self.peer,
                packets = st.packets,
                lost = st.lost,
                fragments = st.sink.fragments_stored,
                "RTSP publish ended"
            );
        }
        for setup in self.setups.drain(..) {
            for t in setup.udp_tasks {
                t.abort();
            }
        }
    }

    async fn request(&mut self, req: &Request) -> (Response, bool) {
        let reply = |status: u16| Response::to_request(req, status);
        let method = req.method.to_ascii_uppercase();
        let key = if method == "OPTIONS" {
            None
        } else {
            match self.authenticate(req) {
                Ok(key) => key,
                Err(refusal) => return refusal,
            }
        };
        match method.as_str() {
            "OPTIONS" => (
                reply(200).with_header(
                    "Public",
                    "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER",
                ),
                false,
            ),
            "ANNOUNCE" => (self.announce(req, key.as_ref()).await, false),
            "SETUP" => (self.setup(req).await, false),
            "RECORD" => (self.record(req, key.as_ref()), false),
            "TEARDOWN" => {
                self.finish().await;
                (self.with_session(reply(200)), true)
            }
            "GET_PARAMETER" | "SET_PARAMETER" => (self.with_session(reply(200)), false),
            "DESCRIBE" | "PLAY" | "PAUSE" => (
                reply(405).with_header(
                    "Allow",
                    "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER",
                ),
                false,
            ),
            _ => (reply(501), false),
        }
    }

    /// The key a request proves (`None` with authentication off), or the 401 to
    /// answer and whether to close the connection then.
    fn authenticate(&mut self, req: &Request) -> Result<Option<AccessKey>, (Response, bool)> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let now_secs = (now_ms(&self.feeds) / 1000).max(0) as u64;
        let request = RtspRequest {
            authorization: req.headers.get("Authorization"),
            method: &req.method,
            uri: &req.uri,
            secure: self.secure,
            session_nonce: self.session_nonce.as_deref(),
        };
        let error = match digest::authenticate(&auth.keyring, &auth.nonces, request, now_secs) {
            Ok(proof) => {
                let key = proof.key.clone();
                if proof.nonce.is_some() {
                    self.session_nonce = proof.nonce;
                }
                return Ok(Some(key));
            }
            Err(e) => e,
        };
        if error.is_failed_attempt() {
            self.auth_failures += 1;
            tracing::info!(
                peer = %self.peer,
                method = req.method,
                reason = %error,
                failures = self.auth_failures,
                "RTSP authentication failed"
            );
        }
        let mut resp = Response::to_request(req, 401);
        let nonce = auth.nonces.issue(now_secs);
        for challenge in digest::challenges(&nonce, error.is_stale(), self.secure) {
            resp.headers.append("WWW-Authenticate", challenge);
        }
        let close = self.auth_failures >= MAX_AUTH_FAILURES;
        if close {
            tracing::info!(peer = %self.peer, "RTSP connection closed: too many failed authentications");
        }
        Err((resp, close))
    }

    /// Whether `key` (`None`: authentication is off) may do `action` on `stream`;
    /// logs a refusal.
    fn permitted(&self, key: Option<&AccessKey>, action: &str, stream: &str) -> bool {
        let Some(key) = key else {
            return true;
        };
        let allowed = key.permits(action, Some(stream));
        if !allowed {
            tracing::info!(
                peer = %self.peer,
                key = key.access_key_id,
                action,
                stream,
                "RTSP publish refused: the key may not do this"
            );
        }
        allowed
    }

    fn with_session(&self, resp: Response) -> Response {
        resp.with_header("Session", format!("{};timeout=60", self.session_id))
    }

    async fn announce(&mut self, req: &Request, key: Option<&AccessKey>) -> Response {
        let reply = |status: u16| Response::to_request(req, status);
        if self.session.is_some() {
            return reply(455);
        }
        let Some(stream) = stream_name(&req.uri) else {
            return reply(400).with_body(
                "text/plain",
                "The URL path must be a video stream name ([a-zA-Z0-9_.-], 1-256 characters).\r\n",
            );
        };
        let opts = self.feeds.options();
        let exists = || {
            let r = VideoRef {
                name: Some(stream.clone()),
                arn: None,
            };
            self.feeds.video().get(&r).is_ok()
        };
        if !self.permitted(key, "kinesisvideo:PutMedia", &stream)
            || (key.is_some()
                && opts.auto_create
                && !exists()
                && !self.permitted(key, "kinesisvideo:CreateStream", &stream))
        {
            return reply(403);
        }
        let content_type = req.headers.get("Content-Type").unwrap_or("application/sdp");
        if !content_type.to_ascii_lowercase().contains("sdp") {
            return reply(415);
        }
        let sdp = match SessionDescription::parse(&req.body) {
            Ok(s) => s,
            Err(e) => return reply(400).with_body("text/plain", format!("{e}\r\n")),
        };
        if sdp.media.len() > MAX_TRACKS {
            return reply(400).with_body(
                "text/plain",
                format!("At most {MAX_TRACKS} media may be announced.\r\n"),
            );
        }
        let media = match select_media(&sdp) {
            Ok(m) => m,
            Err(e) => return reply(415).with_body("text/plain", format!("{e}\r\n")),
        };
        if let Err(e) = ensure_stream(
            self.feeds.video(),
            &stream,
            opts.auto_create,
            opts.retention_hours,
        )
        .await
        {
            let status = if matches!(e, crate::video::VideoError::ResourceNotFound(_)) {
                404
            } else {
                503
            };
            return reply(status).with_body("text/plain", format!("{e}\r\n"));
        }
        let policy = FragmentPolicy::default();
        match RtpSession::new(self.feeds.video().clone(), &stream, &media, policy) {
            Ok(s) => self.session = Some(s),
            Err(e) => return reply(415).with_body("text/plain", format!("{e}\r\n")),
        }
        tracing::info!(stream, peer = %self.peer, media = media.len(), "RTSP publish announced");
        self.base = req.uri.clone();
        self.media = media;
        self.stream = Some(stream);
        reply(200)
    }

    /// Which announced media a SETUP URL names.
    fn media_of(&self, uri: &str) -> Option<usize> {
        let norm = |u: &str| u.trim_end_matches('/').to_ascii_lowercase();
        let target = norm(uri);
        self.media
            .iter()
            .position(|m| norm(&m.control_url(&self.base)) == target)
            .or_else(|| {
                // Some clients send only the path, or a different host spelling.
                self.media.iter().position(|m| {
                    let full = norm(&m.control_url(&self.base));
                    let tail = m.control.as_deref().map(norm).unwrap_or_default();
                    (!tail.is_empty() && target.ends_with(&tail))
                        || full.rsplit('/').next() == target.rsplit('/').next()
                })
            })
    }

    async fn setup(&mut self, req: &Request) -> Response {
        let reply = |status: u16| Response::to_request(req, status);
        if self.session.is_none() {
            return reply(455);
        }
        let Some(track) = self.media_of(&req.uri) else {
            // Not announced, or a media the session cannot store (a second video,
            // say): refuse it.
            return reply(404);
        };
        debug_assert!(self.media.len() <= MAX_TRACKS);
        // One transport per media: a repeated SETUP replaces the earlier one (and
        // closes its UDP sockets), so a session holds at most two sockets a media.
        if let Some(i) = self.setups.iter().position(|s| s.track == track) {
            let old = self.setups.remove(i);
            for task in old.udp_tasks {
                task.abort();
            }
            self.channels.retain(|_, (t, _)| *t != track);
        }
        let Some(header) = req.headers.get("Transport") else {
            return reply(461);
        };
        let transports = match Transport::parse_list(header) {
            Ok(t) => t,
            Err(_) => return reply(461),
        };
        for t in transports {
            if t.multicast || t.mode.as_deref().is_some_and(|m| !m.contains("RECORD")) {
                continue;
            }
            if let Some((rtp, rtcp)) = t.interleaved.filter(|_| t.is_tcp()) {
                self.channels.insert(rtp, (track, false));
                self.channels.insert(rtcp, (track, true));
                self.setups.push(Setup {
                    track,
                    udp_tasks: Vec::new(),
                });
                let mut answer = Transport::tcp_interleaved(rtp, rtcp);
                answer.mode = Some("RECORD".into());
                return self.with_session(reply(200).with_header("Transport", answer.to_string()));
            }
            if !t.is_tcp() {
                let Ok((rtp_sock, rtcp_sock, port)) = bind_udp_pair(self.local_ip).await else {
                    return reply(453);
                };
                let mut tasks = Vec::new();
                for (sock, rtcp) in [(rtp_sock, false), (rtcp_sock, true)] {
                    let tx = self.udp_tx.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut buf = vec![0u8; 65_536];
                        while let Ok((n, _)) = sock.recv_from(&mut buf).await {
                            if tx
                                .send((track, rtcp, Bytes::copy_from_slice(&buf[..n])))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }));
                }
                self.setups.push(Setup {
                    track,
                    udp_tasks: tasks,
                });
                let mut answer = Transport::udp();
                answer.client_port = t.client_port;
                answer.server_port = Some((port, port + 1));
                answer.mode = Some("RECORD".into());
                return self.with_session(reply(200).with_header("Transport", answer.to_string()));
            }
        }
        reply(461)
    }

    fn record(&mut self, req: &Request, key: Option<&AccessKey>) -> Response {
        let reply = |status: u16| Response::to_request(req, status);
        if self.session.is_none() || self.setups.is_empty() {
            return reply(455);
        }
        if let Some(stream) = &self.stream
            && !self.permitted(key, "kinesisvideo:PutMedia", stream)
        {
            return reply(403);
        }
        let tracks: Vec<usize> = self.setups.iter().map(|s| s.track).collect();
        if !tracks.contains(&0) {
            // Nothing can be stored without the video.
            return reply(455).with_body("text/plain", "SETUP the video media first.\r\n");
        }
        tracing::info!(stream = ?self.stream, peer = %self.peer, "RTSP publish recording");
        self.with_session(reply(200))
    }
}

/// The stream a URL names: the first path segment.
fn stream_name(uri: &str) -> Option<String> {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let path = rest.find('/').map_or("", |i| &rest[i + 1..]);
    let name = path.split(['/', '?']).next().unwrap_or("");
    (!name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)))
    .then(|| name.to_string())
}

/// An even UDP port and the one above it, both bound on `ip`.
async fn bind_udp_pair(ip: std::net::IpAddr) -> std::io::Result<(UdpSocket, UdpSocket, u16)> {
    for _ in 0..64 {
        let probe = UdpSocket::bind((ip, 0)).await?;
        let port = probe.local_addr()?.port() & !1;
        drop(probe);
        if port < 1024 || port == u16::MAX - 1 {
            continue;
        }
        let Ok(rtp) = UdpSocket::bind((ip, port)).await else {
            continue;
        };
        let Ok(rtcp) = UdpSocket::bind((ip, port + 1)).await else {
            continue;
        };
        return Ok((rtp, rtcp, port));
    }
    Err(std::io::Error::other("no free UDP port pair"))
}

fn rand_u64() -> u64 {
    let (a, b) = uuid::Uuid::new_v4().as_u64_pair();
    a ^ b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_come_from_the_first_path_segment() {
        assert_eq!(
            stream_name("rtsp://127.0.0.1:8554/cam1").as_deref(),
            Some("cam1")
        );
        assert_eq!(
            stream_name("rtsp://h/cam-2.x/streamid=0").as_deref(),
            Some("cam-2.x")
        );
        assert_eq!(stream_name("rtsp://h/cam?x=1").as_deref(), Some("cam"));
        assert_eq!(stream_name("rtsp://h/"), None);
        assert_eq!(stream_name("rtsp://h/bad name"), None);
        assert_eq!(stream_name("rtsp://h"), None);
    }
}
