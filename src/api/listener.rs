//! The HTTP listener: accepts TCP connections and serves the router on each with
//! hyper's HTTP/1.1 or HTTP/2 server, under limits that keep any one client from
//! starving the others (RFC 9112 and RFC 9113 message syntax; the limits are ours).
//!
//! - **Protocols**: with TLS (`--tls-cert`, [`crate::tls`]) the listener speaks only
//!   TLS, and ALPN (RFC 7301) picks `h2` or `http/1.1` (HTTP/1.1 when the client
//!   offers neither). Without TLS, a connection that opens with the HTTP/2 preface is
//!   served as HTTP/2 ("prior knowledge", RFC 9113 §3.3), any other as HTTP/1.1.
//!
//! - **Connection caps**: at most `max_connections` open at once, and at most
//!   `max_connections_per_ip` from one address. A connection over a cap is answered
//!   `503 Service Unavailable` (best effort, without reading it) and closed at once,
//!   so that a flood costs one accept and one write per connection.
//! - **Header reads**: a request's start line and headers must arrive within
//!   `header_read_timeout`, which is also how long a kept-alive connection may sit
//!   idle between requests; headers larger than `max_header_bytes` get 431 (HTTP/2:
//!   the same bound as SETTINGS_MAX_HEADER_LIST_SIZE). The TLS handshake and the
//!   first bytes of a plain connection must arrive within the same time, and any
//!   connection with no request open that receives nothing for that long is closed
//!   (for HTTP/2, which has no per-request header timer, this is the idle timeout).
//! - **Streams**: at most [`MAX_CONCURRENT_STREAMS`] requests at once on one HTTP/2
//!   connection.
//! - **Bodies** are read by the handlers under their own size caps and a minimum
//!   rate ([`super::read_body`]).
//! - **Accept errors** (EMFILE when file descriptors run out, ...) are logged at most
//!   once every few seconds with a count, and the loop backs off briefly instead of
//!   spinning.
//!
//! Shutdown: stop accepting, ask every connection to finish its request in flight
//! (hyper's graceful shutdown), and stop waiting after `grace`.
//!
//! HTTP only; what a request means is the router's business.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::endpoint::ConnInfo;

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Default header-read (and keep-alive idle) timeout.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on connections from one IP address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;
/// Request line plus headers (AWS's front ends refuse more than about 16 KiB of
/// headers; SigV4 and producer headers are far below that).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Requests one HTTP/2 connection may have open at once (RFC 9113 §5.1.2
/// SETTINGS_MAX_CONCURRENT_STREAMS; the RFC suggests no fewer than 100).
pub const MAX_CONCURRENT_STREAMS: u32 = 100;
/// File descriptors kept back from connections for the store, the catalog, RTSP and
/// UDP feeds.
const FD_HEADROOM: u64 = 512;

impl ListenerLimits {
    /// Defaults sized to the process's file-descriptor limit (raised to its hard
    /// limit first, see [`raise_fd_limit`]).
    pub fn for_fd_limit(fd_limit: u64) -> Self {
        let max_connections = fd_limit.saturating_sub(FD_HEADROOM).clamp(64, 100_000) as usize;
        Self {
            max_connections,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP.min(max_connections),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// Raises the soft limit on open files to the hard limit; returns the limit now in
/// force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Connections open per client address.
#[derive(Debug, Default)]
struct PerIp {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in [`PerIp`]; given back when dropped.
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn take(table: &Arc<PerIp>, ip: IpAddr, cap: usize) -> Option<IpSlot> {
        let mut open = table.open.lock().unwrap();
        let n = open.entry(ip).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: table.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap();
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Logs a repeated condition at most once per interval, with how often it happened.
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    const EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log now; if so, also how many were not logged since the last time.
    fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

const OVER_CAP_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-type: application/json\r\nx-amzn-errortype: ServiceUnavailable\r\ncontent-length: 63\r\n\r\n{\"message\":\"Too many connections; retry with fewer at a time.\"}";

/// Answers a connection over the `cap` connection limit without reading it, and closes
/// it; logged through `log`.
fn refuse(
    tcp: TcpStream,
    remote: std::net::SocketAddr,
    log: &mut RateLimitedLog,
    limit: usize,
    cap: &str,
) {
    if let Some(suppressed) = log.admit() {
        tracing::warn!(
            %remote,
            limit,
            suppressed,
            "connection refused: {cap} connection limit reached"
        );
    }
    // Best effort: the socket buffer of a new connection takes this at once; a client
    // that does not read it just sees the close.
    let _ = tcp.try_write(OVER_CAP_RESPONSE);
}

/// The connections open at once, for `/ready`: the listener's slots and their number.
#[derive(Debug, Clone)]
pub struct ConnectionGauge {
    slots: Arc<Semaphore>,
    max: usize,
}

impl ConnectionGauge {
    pub fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// (open, most allowed).
    pub fn open(&self) -> (usize, usize) {
        (self.max - self.slots.available_permits(), self.max)
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets requests in flight
/// finish for at most `grace`. `gauge` holds the connection slots
/// (`limits.max_connections` of them). With `tls`, every connection must open with a
/// TLS handshake.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    gauge: ConnectionGauge,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> std::io::Result<()> {
    debug_assert_eq!(gauge.max, limits.max_connections);
    let connections = gauge.slots.clone();
    let per_ip = Arc::new(PerIp::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; all are gone once every task has ended.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut accept_errors = RateLimitedLog::new();
    let mut server_cap_refusals = RateLimitedLog::new();
    let mut address_cap_refusals = RateLimitedLog::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if let Some(suppressed) = accept_errors.admit() {
                        tracing::warn!(error = %e, suppressed, "accept failed");
                    }
                    // EMFILE/ENFILE/ENOBUFS persist until something is closed: back off
                    // instead of spinning.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refuse(
                tcp,
                remote,
                &mut server_cap_refusals,
                limits.max_connections,
                "server-wide",
            );
            continue;
        };
        let Some(slot) = PerIp::take(&per_ip, remote.ip(), limits.max_connections_per_ip) else {
            let limit = limits.max_connections_per_ip;
            refuse(tcp, remote, &mut address_cap_refusals, limit, "per-address");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().unwrap_or(remote);
        let info = ConnInfo {
            local,
            remote,
            secure: tls.is_some(),
        };
        tokio::spawn(serve_connection(
            tcp,
            info,
            app.clone(),
            limits,
            tls.clone(),
            ConnectionGuards {
                _permit: permit,
                _slot: slot,
                _alive: alive_tx.clone(),
            },
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(alive_tx);
    if tokio::time::timeout(grace, alive_rx.recv()).await.is_err() {
        tracing::warn!("connections still open after {grace:?}; closing them");
    }
    Ok(())
}

/// What a connection holds while it is open.
struct ConnectionGuards {
    _permit: OwnedSemaphorePermit,
    _slot: IpSlot,
    _alive: mpsc::Sender<()>,
}

/// The HTTP version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// What opens every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes received either start the HTTP/2 preface in full or cannot;
/// returns them with the verdict.
async fn sniff_protocol(io: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(Vec<u8>, Protocol)> {
    let mut seen = Vec::with_capacity(H2_PREFACE.len());
    while seen.len() < H2_PREFACE.len() {
        let mut chunk = [0u8; 24];
        let want = H2_PREFACE.len() - seen.len();
        let n = io.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        seen.extend_from_slice(&chunk[..n]);
        if !H2_PREFACE.starts_with(&seen) {
            return Ok((seen, Protocol::Http1));
        }
    }
    Ok((seen, Protocol::Http2))
}

async fn serve_connection(
    tcp: TcpStream,
    info: ConnInfo,
    app: Router,
    limits: ListenerLimits,
    tls: Option<TlsAcceptor>,
    guards: ConnectionGuards,
    stop: watch::Receiver<bool>,
) {
    let _guards = guards;
    let activity = Arc::new(Activity::default());
    let mut io = Watched {
        inner: tcp,
        activity: activity.clone(),
        replay: Bytes::new(),
    };
    let opening = limits.header_read_timeout;
    let remote = info.remote;
    match tls {
        None => {
            let sniffed = within(opening, "request", remote, sniff_protocol(&mut io)).await;
            let Some((prefix, protocol)) = sniffed else {
                return;
            };
            io.replay = Bytes::from(prefix);
            serve_http(io, protocol, info, app, limits, activity, stop).await;
        }
        Some(acceptor) => {
            // Plain HTTP sent to the TLS port fails here, as a bad handshake.
            let Some(stream) = within(opening, "TLS handshake", remote, acceptor.accept(io)).await
            else {
                return;
            };
            let protocol = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            serve_http(stream, protocol, info, app, limits, activity, stop).await;
        }
    }
}

/// The outcome of `opening` (a connection's first step) if it completes within
/// `limit`; logged at debug level if not.
async fn within<T>(
    limit: Duration,
    what: &str,
    remote: std::net::SocketAddr,
    opening: impl Future<Output = std::io::Result<T>>,
) -> Option<T> {
    match tokio::time::timeout(limit, opening).await {
        Ok(Ok(opened)) => Some(opened),
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "connection failed before its {what}");
            None
        }
        Err(_) => {
            tracing::debug!(%remote, "no {what} within the header timeout; closed");
            None
        }
    }
}

/// Serves HTTP on an opened connection until it ends, the server stops, or it has
/// sat idle (no request open, nothing received) for the header timeout.
async fn serve_http<S>(
    io: S,
    protocol: Protocol,
    info: ConnInfo,
    app: Router,
    limits: ListenerLimits,
    activity: Arc<Activity>,
    stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requests = activity.clone();
    let service = tower::service_fn(move |mut req: axum::http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(info));
        // Open until the response body is done with (sent or dropped).
        let open = RequestOpen::new(requests.clone());
        let app = app.clone();
        async move {
            let response = app.oneshot(req).await?;
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &open;
                    frame
                }))
            }))
        }
    });
    let service = TowerToHyperService::new(service);
    let io = TokioIo::new(io);
    let result = match protocol {
        Protocol::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_header_size(limits.max_header_bytes)
                .keep_alive(true);
            let conn = builder.serve_connection(io, service);
            drive(conn, &activity, limits.header_read_timeout, stop).await
        }
        Protocol::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
                .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
            let conn = builder.serve_connection(io, service);
            drive(conn, &activity, limits.header_read_timeout, stop).await
        }
    };
    match result {
        Ok(()) => {}
        Err(Ended::Idle) => {
            tracing::debug!(remote = %info.remote, "idle connection closed");
        }
        Err(Ended::Error(e)) => {
            // Header timeouts, resets, malformed requests: the client's doing.
            tracing::debug!(remote = %info.remote, error = %e, "connection ended with an error");
        }
    }
}

/// Why a connection ended other than by being closed cleanly.
enum Ended {
    Idle,
    Error(String),
}

/// Runs `conn`: to its end, to a graceful end once `stop` is set, or until it has
/// been idle for `idle` (checked four times per `idle`, so it is cut between `idle`
/// and 1.25 × `idle` after the last sign of life).
async fn drive<C>(
    conn: C,
    activity: &Activity,
    idle: Duration,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Ended>
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    const CHECKS: u32 = 4;
    tokio::pin!(conn);
    let mut tick = tokio::time::interval((idle / CHECKS).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_checks = 0;
    let stopping = async { while !*stop.borrow_and_update() && stop.changed().await.is_ok() {} };
    tokio::pin!(stopping);
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            _ = &mut stopping => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
            _ = tick.tick() => {
                if activity.busy() {
                    idle_checks = 0;
                } else {
                    idle_checks += 1;
                    if idle_checks > CHECKS {
                        return Err(Ended::Idle);
                    }
                }
            }
        }
    };
    result.map_err(|e| Ended::Error(e.to_string()))
}

/// Signs of life of one connection, for the idle check.
#[derive(Debug, Default)]
struct Activity {
    /// Set by every read that returns bytes; cleared by each check.
    received: AtomicBool,
    /// Requests whose response is not yet done with.
    open_requests: AtomicUsize,
}

impl Activity {
    /// Whether something was received since the last call, or a request is open.
    fn busy(&self) -> bool {
        let received = self.received.swap(false, Ordering::Relaxed);
        received || self.open_requests.load(Ordering::Relaxed) > 0
    }
}

/// One open request, counted in [`Activity::open_requests`] until dropped.
struct RequestOpen(Arc<Activity>);

impl RequestOpen {
    fn new(activity: Arc<Activity>) -> Self {
        activity.open_requests.fetch_add(1, Ordering::Relaxed);
        Self(activity)
    }
}

impl Drop for RequestOpen {
    fn drop(&mut self) {
        self.0.open_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket that notes in [`Activity`] when it receives bytes, and first gives back
/// `replay`: bytes already read from it (to tell HTTP/2 from HTTP/1.1).
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    replay: Bytes,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.replay.is_empty() {
            let n = self.replay.len().min(buf.remaining());
            let head = self.replay.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_slots_are_counted_and_given_back() {
        let table = Arc::new(PerIp::default());
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let a = PerIp::take(&table, ip, 2).unwrap();
        let _b = PerIp::take(&table, ip, 2).unwrap();
        assert!(PerIp::take(&table, ip, 2).is_none());
        assert!(PerIp::take(&table, "127.0.0.3".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(PerIp::take(&table, ip, 2).is_some());
        drop(_b);
        assert_eq!(table.open.lock().unwrap().get(&ip), None);
    }

    #[test]
    fn defaults_follow_the_descriptor_limit() {
        let l = ListenerLimits::for_fd_limit(1024);
        assert_eq!(l.max_connections, 512);
        assert_eq!(l.max_connections_per_ip, 512);
        let l = ListenerLimits::for_fd_limit(1_048_576);
        assert_eq!(l.max_connections, 100_000);
        assert_eq!(l.max_connections_per_ip, DEFAULT_MAX_CONNECTIONS_PER_IP);
        assert_eq!(ListenerLimits::for_fd_limit(100).max_connections, 64);
    }

    #[test]
    fn the_refusal_is_a_complete_response() {
        let text = std::str::from_utf8(OVER_CAP_RESPONSE).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }

    #[tokio::test]
    async fn the_http2_preface_is_told_from_http1_and_given_back() {
        use tokio::io::AsyncWriteExt;
        for (sent, protocol) in [
            (&b"GET /health HTTP/1.1\r\n\r\n"[..], Protocol::Http1),
            (b"PRI * HTTP/1.1\r\n\r\n", Protocol::Http1),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04",
                Protocol::Http2,
            ),
        ] {
            let (mut client, server) = tokio::io::duplex(64);
            // In pieces, as a slow client sends it.
            let writer = tokio::spawn(async move {
                for piece in sent.chunks(5) {
                    client.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
                client
            });
            let activity = Arc::new(Activity::default());
            let mut io = Watched {
                inner: server,
                activity: activity.clone(),
                replay: Bytes::new(),
            };
            let (prefix, got) = sniff_protocol(&mut io).await.unwrap();
            assert_eq!(got, protocol);
            assert!(sent.starts_with(&prefix));
            assert!(activity.busy() && !activity.busy());
            drop(writer.await.unwrap());
            io.replay = Bytes::from(prefix);
            let mut all = Vec::new();
            io.read_to_end(&mut all).await.unwrap();
            assert_eq!(all, sent);
        }
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let mut io = Watched {
            inner: server,
            activity: Arc::default(),
            replay: Bytes::new(),
        };
        assert!(sniff_protocol(&mut io).await.is_err());
    }

    #[test]
    fn open_requests_keep_a_connection_busy() {
        let activity = Arc::new(Activity::default());
        assert!(!activity.busy());
        let open = RequestOpen::new(activity.clone());
        assert!(activity.busy() && activity.busy());
        drop(open);
        assert!(!activity.busy());
    }

    #[test]
    fn repeated_log_lines_are_rate_limited() {
        let mut log = RateLimitedLog::new();
        assert_eq!(log.admit(), Some(0));
        assert_eq!(log.admit(), None);
        assert_eq!(log.admit(), None);
        log.last = Some(Instant::now() - RateLimitedLog::EVERY);
        assert_eq!(log.admit(), Some(2));
    }
}
