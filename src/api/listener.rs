//! The HTTP listener: accepts TCP connections and serves the router on each with
//! hyper's HTTP/1.1 server, under limits that keep any one client from starving the
//! others (RFC 9112 message syntax; the limits are ours).
//!
//! - **Connection caps**: at most `max_connections` open at once, and at most
//!   `max_connections_per_ip` from one address. A connection over a cap is answered
//!   `503 Service Unavailable` (best effort, without reading it) and closed at once,
//!   so that a flood costs one accept and one write per connection.
//! - **Header reads**: a request's start line and headers must arrive within
//!   `header_read_timeout`, which is also how long a kept-alive connection may sit
//!   idle between requests; headers larger than `max_header_bytes` get 431.
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
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
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
/// (`limits.max_connections` of them).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    gauge: ConnectionGauge,
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
        tokio::spawn(serve_connection(
            tcp,
            ConnInfo { local, remote },
            app.clone(),
            limits,
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

async fn serve_connection(
    tcp: TcpStream,
    info: ConnInfo,
    app: Router,
    limits: ListenerLimits,
    guards: ConnectionGuards,
    mut stop: watch::Receiver<bool>,
) {
    let _guards = guards;
    let service = app.map_request(move |mut req: axum::http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(info));
        req
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { while !*stop.borrow_and_update() && stop.changed().await.is_ok() {} } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Header timeouts, resets, malformed requests: the client's doing.
        tracing::debug!(remote = %info.remote, error = %e, "connection ended with an error");
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
