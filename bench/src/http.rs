//! A minimal HTTP/1.1 keep-alive client over a tokio `TcpStream`.
//!
//! Requests are complete, pre-serialised byte buffers (request line, headers
//! and body), written as-is. Responses are parsed just far enough to get the
//! status code and the body: `Content-Length` bodies, `Transfer-Encoding:
//! chunked` bodies and read-until-close bodies are all supported. Interim
//! `1xx` responses are skipped. TLS (rustls) when [`use_tls`] was called: every
//! connection of the process is then HTTPS (HTTP/1.1 by ALPN). No pipelining, no
//! redirects.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// The TLS client every connection uses, once [`use_tls`] has set it.
static TLS: OnceLock<(TlsConnector, ServerName<'static>)> = OnceLock::new();

/// Makes every later connection TLS, verifying the server as `host` against the CA
/// certificates in the PEM file `ca_file`.
pub fn use_tls(ca_file: &std::path::Path, host: &str) -> Result<(), String> {
    let pem = std::fs::read(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    TLS.set((TlsConnector::from(Arc::new(config)), name))
        .map_err(|_| "TLS is already configured".to_string())
}

/// A connection's byte stream: plain TCP or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, b),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, b),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Largest header block accepted before the response is declared malformed.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Largest body accepted (GetRecords answers can be tens of MB).
const MAX_BODY_BYTES: usize = 512 * 1024 * 1024;

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The server asked to close the connection (or the body was delimited
    /// by closing it); the caller must reconnect before the next request.
    pub close: bool,
}

/// One keep-alive connection.
pub struct Conn {
    stream: Stream,
    /// Bytes received but not yet consumed live in `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = match TLS.get() {
            None => Stream::Plain(tcp),
            Some((connector, name)) => {
                Stream::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
            }
        };
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
        })
    }

    /// Writes one prepared request and reads its response.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response> {
        self.stream.write_all(request).await?;
        self.read_response().await
    }

    /// Reads more bytes into the buffer; fails on EOF.
    async fn fill(&mut self) -> io::Result<()> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by server",
            ));
        }
        Ok(())
    }

    /// Returns the next CRLF-terminated line (without CRLF), consuming it.
    async fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n") {
                let line = self.buf[self.pos..self.pos + i].to_vec();
                self.pos += i + 2;
                return Ok(line);
            }
            if self.buf.len() - self.pos > MAX_HEADER_BYTES {
                return Err(bad("line too long"));
            }
            self.fill().await?;
        }
    }

    /// Moves exactly `n` bytes into `out`, reading from the socket as needed.
    async fn take_into(&mut self, out: &mut Vec<u8>, n: usize) -> io::Result<()> {
        let have = (self.buf.len() - self.pos).min(n);
        out.extend_from_slice(&self.buf[self.pos..self.pos + have]);
        self.pos += have;
        let rest = n - have;
        if rest > 0 {
            let start = out.len();
            out.resize(start + rest, 0);
            self.stream.read_exact(&mut out[start..]).await?;
        }
        Ok(())
    }

    async fn read_response(&mut self) -> io::Result<Response> {
        loop {
            // Wait for the complete header block.
            let head_end = loop {
                if let Some(i) = find(&self.buf[self.pos..], b"\r\n\r\n") {
                    break self.pos + i + 4;
                }
                if self.buf.len() - self.pos > MAX_HEADER_BYTES {
                    return Err(bad("response header too large"));
                }
                self.fill().await?;
            };
            let head = std::str::from_utf8(&self.buf[self.pos..head_end - 4])
                .map_err(|_| bad("non-UTF-8 response header"))?;
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or("");
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or("");
            if !version.starts_with("HTTP/1.") {
                return Err(bad(format!("bad status line {status_line:?}")));
            }
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
            let mut content_length: Option<usize> = None;
            let mut chunked = false;
            let mut close = version == "HTTP/1.0";
            for line in lines {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let name = name.trim();
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = Some(value.parse().map_err(|_| bad("bad Content-Length"))?);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value
                        .rsplit(',')
                        .next()
                        .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
                } else if name.eq_ignore_ascii_case("connection") {
                    for token in value.split(',') {
                        let token = token.trim();
                        if token.eq_ignore_ascii_case("close") {
                            close = true;
                        } else if token.eq_ignore_ascii_case("keep-alive") {
                            close = false;
                        }
                    }
                }
            }
            self.pos = head_end;

            if (100..200).contains(&status) {
                continue; // interim response (e.g. 100 Continue): read the real one
            }

            let mut body = Vec::new();
            if status == 204 || status == 304 {
                // no body
            } else if chunked {
                loop {
                    let size_line = self.line().await?;
                    let size_str = std::str::from_utf8(&size_line)
                        .map_err(|_| bad("bad chunk size"))?
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim();
                    let size = usize::from_str_radix(size_str, 16)
                        .map_err(|_| bad(format!("bad chunk size {size_str:?}")))?;
                    if size == 0 {
                        // Trailers, terminated by an empty line.
                        while !self.line().await?.is_empty() {}
                        break;
                    }
                    if body.len() + size > MAX_BODY_BYTES {
                        return Err(bad("response body too large"));
                    }
                    self.take_into(&mut body, size).await?;
                    if !self.line().await?.is_empty() {
                        return Err(bad("missing CRLF after chunk"));
                    }
                }
            } else if let Some(n) = content_length {
                if n > MAX_BODY_BYTES {
                    return Err(bad("response body too large"));
                }
                body.reserve_exact(n);
                self.take_into(&mut body, n).await?;
            } else {
                // Body delimited by connection close.
                close = true;
                body.extend_from_slice(&self.buf[self.pos..]);
                self.pos = self.buf.len();
                self.stream.read_to_end(&mut body).await?;
            }
            return Ok(Response {
                status,
                body,
                close,
            });
        }
    }
}

/// Position of the first occurrence of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)
        {
            None => return None,
            Some(off) => {
                i += off;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn find_works() {
        assert_eq!(find(b"abc\r\n\r\nxyz", b"\r\n\r\n"), Some(3));
        assert_eq!(find(b"abc", b"abcd"), None);
        assert_eq!(find(b"aab", b"ab"), Some(1));
        assert_eq!(find(b"", b"a"), None);
    }

    /// Serves the given raw responses, one per request read, on a loopback port.
    async fn serve(responses: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for r in responses {
                let _ = s.read(&mut buf).await.unwrap();
                // Write in two pieces to exercise partial reads.
                let (a, b) = r.split_at(r.len() / 2);
                s.write_all(a).await.unwrap();
                s.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                s.write_all(b).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn parses_length_chunked_and_interim() {
        let addr = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad\r\ntransfer-encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n4\r\ndefg\r\n0\r\nTrailer: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\ntail",
        ])
        .await;
        let mut c = Conn::connect(addr).await.unwrap();
        let r = c.send(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(
            (r.status, &r.body[..], r.close),
            (200, &b"hello"[..], false)
        );
        let r = c.send(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!((r.status, &r.body[..]), (400, &b"abcdefg"[..]));
        let r = c.send(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!((r.status, &r.body[..], r.close), (200, &b"tail"[..], true));
    }
}
