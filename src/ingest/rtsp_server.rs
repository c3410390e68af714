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
use crate::media::fragmenter::FragmentPolicy;
use crate::media::rtsp::{Message, Request, Response, Transport, parse_message};
use crate::media::sdp::{MediaDescription, SessionDescription};
use crate::video::ingest::ensure_stream;

/// A connection with no RTSP request and no media for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most bytes buffered from a connection before a message is complete (the RTSP
/// reader's own limits are lower; this bounds interleaved data too).
const MAX_BUFFER: usize = 256 * 1024;
/// Publishing connections at once.
const MAX_CONNECTIONS: usize = 1024;
/// Time a client has to complete the TLS handshake on the RTSPS listener.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts publishers until the task is aborted.
pub async fn serve(listener: TcpListener, feeds: Arc<FeedManager>) {
    accept(listener, feeds, None).await
}

/// Accepts publishers over TLS (RTSPS) until the task is aborted.
pub async fn serve_tls(
    listener: TcpListener,
    feeds: Arc<FeedManager>,
    tls: tokio_rustls::TlsAcceptor,
) {
    accept(listener, feeds, Some(tls)).await
}

async fn accept(
    listener: TcpListener,
    feeds: Arc<FeedManager>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
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
        let tls = tls.clone();
        tokio::spawn(async move {
            let _ = socket.set_nodelay(true);
            let local_ip = socket
                .local_addr()
                .map(|a| a.ip())
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            let mut conn = Connection::new(feeds, peer, local_ip);
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
    peer: SocketAddr,
    /// The address the client reached: UDP ports for RTP are bound on it (not on
    /// every interface).
    local_ip: std::net::IpAddr,
    /// Whether the connection is TLS (RTSPS): Basic credentials are accepted only then.
    secure: bool,
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
    fn new(feeds: Arc<FeedManager>, peer: SocketAddr, local_ip: std::net::IpAddr) -> Self {
        let (udp_tx, udp_rx) = mpsc::channel(1024);
        Self {
            feeds,
            peer,
            local_ip,
            secure: false,
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
        match req.method.to_ascii_uppercase().as_str() {
            "OPTIONS" => (
                reply(200).with_header(
                    "Public",
                    "OPTIONS, ANNOUNCE, SETUP, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER",
                ),
                false,
            ),
            "ANNOUNCE" => (self.announce(req).await, false),
            "SETUP" => (self.setup(req).await, false),
            "RECORD" => (self.record(req).await, false),
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

    fn with_session(&self, resp: Response) -> Response {
        resp.with_header("Session", format!("{};timeout=60", self.session_id))
    }

    async fn announce(&mut self, req: &Request) -> Response {
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
        let content_type = req.headers.get("Content-Type").unwrap_or("application/sdp");
        if !content_type.to_ascii_lowercase().contains("sdp") {
            return reply(415);
        }
        let sdp = match SessionDescription::parse(&req.body) {
            Ok(s) => s,
            Err(e) => return reply(400).with_body("text/plain", format!("{e}\r\n")),
        };
        let media = match select_media(&sdp) {
            Ok(m) => m,
            Err(e) => return reply(415).with_body("text/plain", format!("{e}\r\n")),
        };
        let opts = self.feeds.options();
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
            // A media the session cannot store (a second video, say): refuse it.
            return reply(404);
        };
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

    async fn record(&mut self, req: &Request) -> Response {
        let reply = |status: u16| Response::to_request(req, status);
        if self.session.is_none() || self.setups.is_empty() {
            return reply(455);
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
