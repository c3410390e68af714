//! The base URL Freshet hands out in responses: GetDataEndpoint's `DataEndpoint` and
//! the HLS/DASH session URLs of the archived-media API.
//!
//! Clients connect to whatever URL they are given, so it must reach this server. In
//! order of preference it comes from:
//!
//! 1. the configured public URL (`--advertise-url`, config `advertise_url`): the only
//!    right answer behind a proxy or a load balancer;
//! 2. the request's `Host` header, when it carries a port: what the client itself
//!    used to get here;
//!    HTTP/2 requests carry it as `:authority` instead, which is used the same way;
//! 3. the local address the connection arrived on (scheme, IP and port). The Kinesis
//!    Video producer SDK's signer cuts the `Host` header at `:` (it sends
//!    `host: 127.0.0.1` to port 4570), and proxies may rewrite it: echoing such a
//!    header would send the producer to port 80.
//!
//! The scheme of 2 and 3 is `https` on a TLS connection, else `http`.
//!
//! HTTP only: this module knows nothing of the services behind it.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, header};
use axum::serve::IncomingStream;
use tokio::net::TcpListener;

/// What the server knows of the connection a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// The server's address of this connection (the listener may be bound to
    /// `0.0.0.0`; this is the address the client actually reached).
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Whether the connection is TLS (URLs handed out on it are `https://`).
    pub secure: bool,
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TcpListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        let remote = *stream.remote_addr();
        let local = stream.io().local_addr().unwrap_or(remote);
        ConnInfo {
            local,
            remote,
            secure: false,
        }
    }
}

/// Where a base URL came from (logged at debug level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlSource {
    Advertised,
    HostHeader,
    LocalAddress,
    /// No port in `Host` and no connection information (in-process tests).
    HostHeaderWithoutPort,
}

/// Checks and normalises a configured public URL: `http://` or `https://`, a host,
/// an optional port and path prefix; no query or fragment; no trailing `/`.
pub fn parse_advertise_url(text: &str) -> Result<String, String> {
    let trimmed = text.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| format!("advertise URL {text:?} must start with http:// or https://"))?;
    if rest.contains(['?', '#']) {
        return Err(format!(
            "advertise URL {text:?} must not have a query or fragment"
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(format!("advertise URL {text:?} has no valid host"));
    }
    if let Some(port) = authority_port(authority)
        && port.parse::<u16>().is_err()
    {
        return Err(format!("advertise URL {text:?} has an invalid port"));
    }
    Ok(trimmed.to_string())
}

/// The port part of `host:port` or `[v6]:port`, if any.
fn authority_port(authority: &str) -> Option<&str> {
    let after_host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(_, rest)| rest)?,
        None => authority,
    };
    after_host.rsplit_once(':').map(|(_, port)| port)
}

/// The base URL (no trailing `/`) for a request, and where it came from.
/// `authority` is the request URI's (HTTP/2's `:authority`), used without a `Host`.
pub fn base_url(
    advertised: Option<&str>,
    headers: &HeaderMap,
    authority: Option<&str>,
    conn: Option<&ConnInfo>,
) -> (String, UrlSource) {
    if let Some(url) = advertised {
        return (url.to_string(), UrlSource::Advertised);
    }
    let scheme = if conn.is_some_and(|c| c.secure) {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority)
        .map(str::trim)
        .filter(|h| !h.is_empty() && !h.contains(['/', '@', ' ']));
    if let Some(host) = host
        && authority_port(host).is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_ok())
    {
        return (format!("{scheme}://{host}"), UrlSource::HostHeader);
    }
    if let Some(conn) = conn {
        // SocketAddr's Display brackets IPv6 addresses: `[::1]:4570`.
        return (
            format!("{scheme}://{}", conn.local),
            UrlSource::LocalAddress,
        );
    }
    (
        format!("http://{}", host.unwrap_or("127.0.0.1")),
        UrlSource::HostHeaderWithoutPort,
    )
}

/// [`base_url`] for a request, logged at debug level with its source.
pub fn request_base_url(
    advertised: Option<&str>,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    extensions: &axum::http::Extensions,
) -> String {
    let conn = extensions.get::<ConnectInfo<ConnInfo>>().map(|c| &c.0);
    let authority = uri.authority().map(|a| a.as_str());
    let (url, source) = base_url(advertised, headers, authority, conn);
    tracing::debug!(
        url,
        ?source,
        host = ?headers.get(header::HOST),
        "base URL for a response"
    );
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    fn conn(local: &str) -> ConnInfo {
        ConnInfo {
            local: local.parse().unwrap(),
            remote: "127.0.0.1:50000".parse().unwrap(),
            secure: false,
        }
    }

    #[test]
    fn the_advertised_url_wins() {
        let c = conn("127.0.0.1:4570");
        assert_eq!(
            base_url(
                Some("https://video.example.com/kvs"),
                &host("x:1"),
                None,
                Some(&c)
            ),
            (
                "https://video.example.com/kvs".to_string(),
                UrlSource::Advertised
            )
        );
    }

    #[test]
    fn a_host_header_with_a_port_is_used() {
        let c = conn("10.0.0.5:4570");
        assert_eq!(
            base_url(None, &host("cam-gw:8080"), None, Some(&c)),
            ("http://cam-gw:8080".to_string(), UrlSource::HostHeader)
        );
        assert_eq!(
            base_url(None, &host("[::1]:4571"), None, Some(&c)).0,
            "http://[::1]:4571"
        );
    }

    #[test]
    fn a_host_header_without_a_port_gives_way_to_the_local_address() {
        // What the producer SDK sends to a server on 127.0.0.1:4599.
        let c = conn("127.0.0.1:4599");
        assert_eq!(
            base_url(None, &host("127.0.0.1"), None, Some(&c)),
            ("http://127.0.0.1:4599".to_string(), UrlSource::LocalAddress)
        );
        assert_eq!(
            base_url(None, &host("[::1]"), None, Some(&conn("[::1]:4599"))).0,
            "http://[::1]:4599"
        );
        assert_eq!(
            base_url(None, &host("a:"), None, Some(&c)).0,
            "http://127.0.0.1:4599"
        );
        assert_eq!(
            base_url(None, &HeaderMap::new(), None, Some(&c)).0,
            "http://127.0.0.1:4599"
        );
    }

    #[test]
    fn without_connection_information_the_host_is_echoed() {
        assert_eq!(
            base_url(None, &host("localhost"), None, None),
            (
                "http://localhost".to_string(),
                UrlSource::HostHeaderWithoutPort
            )
        );
        assert_eq!(
            base_url(None, &HeaderMap::new(), None, None).0,
            "http://127.0.0.1"
        );
    }

    #[test]
    fn tls_connections_get_https_urls() {
        let tls = ConnInfo {
            secure: true,
            ..conn("127.0.0.1:4599")
        };
        assert_eq!(
            base_url(None, &host("127.0.0.1"), None, Some(&tls)).0,
            "https://127.0.0.1:4599"
        );
        assert_eq!(
            base_url(None, &host("video.lan:8443"), None, Some(&tls)).0,
            "https://video.lan:8443"
        );
        // HTTP/2: no Host header, the authority instead.
        assert_eq!(
            base_url(None, &HeaderMap::new(), Some("video.lan:8443"), Some(&tls)),
            ("https://video.lan:8443".to_string(), UrlSource::HostHeader)
        );
        assert_eq!(
            base_url(
                Some("http://proxy.lan"),
                &HeaderMap::new(),
                None,
                Some(&tls)
            )
            .0,
            "http://proxy.lan"
        );
    }

    #[test]
    fn advertise_urls_are_checked() {
        assert_eq!(
            parse_advertise_url("http://freshet.lan:4570/").unwrap(),
            "http://freshet.lan:4570"
        );
        assert_eq!(
            parse_advertise_url("https://[2001:db8::1]/kvs").unwrap(),
            "https://[2001:db8::1]/kvs"
        );
        for bad in [
            "freshet.lan:4570",
            "ftp://x",
            "http://",
            "http://x:port",
            "http://x:99999",
            "http://x/?a=1",
            "http://user@x",
        ] {
            assert!(parse_advertise_url(bad).is_err(), "{bad}");
        }
    }
}
