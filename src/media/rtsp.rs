//! RTSP message codec (RFC 2326, "Real Time Streaming Protocol (RTSP)" 1.0, and its
//! RFC 7826 2.0 syntax where they agree) for an RTSP server (ffmpeg `-f rtsp`,
//! GStreamer `rtspclientsink` publishing with ANNOUNCE/RECORD) and a pull client
//! (DESCRIBE/SETUP/PLAY against cameras).
//!
//! - [`parse_message`]: an incremental reader over a connection's receive buffer:
//!   `Ok(None)` until a whole message is there, then the [`Message`] (request,
//!   response, or an interleaved binary frame `$ <channel> <length16> <payload>`,
//!   RFC 2326 10.12) and how many bytes it used. [`parse_request`] and
//!   [`parse_response`] accept only their kind. Header names are case-insensitive,
//!   CRLF or bare LF line endings, obsolete header folding accepted; the header block
//!   is limited to [`MAX_HEADER_BYTES`] and a `Content-Length` body to
//!   [`MAX_BODY_BYTES`].
//! - [`Request::write`] / [`Response::write`] / [`write_interleaved`].
//! - [`Transport`]: the Transport header (RFC 2326 12.39), parsed leniently (parameter
//!   names in any case, quoted values, spaces, several comma-separated transport
//!   specs) and formatted for replies.
//! - [`Challenge`] / [`authorization`]: Basic and Digest (RFC 2617, MD5 and MD5-sess,
//!   with or without `qop=auth`) client authentication; [`split_credentials`] takes
//!   `user:password@` out of an `rtsp://` URL.
//!
//! No I/O. Never panics on any input.

use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use md5::{Digest as _, Md5};

/// Largest header block (request/status line and headers) accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest message body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why bytes are not an acceptable RTSP message (the connection should be closed,
/// after a `400 Bad Request` or `413`/`431` when answering a request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtspError {
    #[error("RTSP header block larger than {MAX_HEADER_BYTES} bytes")]
    HeaderTooLarge,
    #[error("RTSP body of {0} bytes, at most {MAX_BODY_BYTES} accepted")]
    BodyTooLarge(u64),
    #[error("malformed RTSP message: {0}")]
    Malformed(String),
    #[error("invalid Transport header: {0}")]
    Transport(String),
    #[error("RTSP authentication: {0}")]
    Auth(String),
}

fn malformed(message: impl Into<String>) -> RtspError {
    RtspError::Malformed(message.into())
}

/// Message headers in order; names compared case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Replaces every value of a header with one value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.remove(name);
        self.0.push((name.to_string(), value.into()));
    }

    /// Adds a value (keeping others of the same name).
    pub fn append(&mut self, name: &str, value: impl Into<String>) {
        self.0.push((name.to_string(), value.into()));
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `CSeq` header as a number.
    pub fn cseq(&self) -> Option<u32> {
        self.get("CSeq")?.trim().parse().ok()
    }

    /// The `Session` header's session id (without `;timeout=`).
    pub fn session_id(&self) -> Option<&str> {
        let value = self.get("Session")?;
        let id = value.split(';').next().unwrap_or_default().trim();
        (!id.is_empty()).then_some(id)
    }

    fn write(&self, out: &mut Vec<u8>, body_len: usize) {
        for (name, value) in &self.0 {
            if name.eq_ignore_ascii_case("Content-Length") {
                continue;
            }
            out.extend_from_slice(sanitize(name).as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(sanitize(value).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if body_len > 0 {
            out.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// CR and LF replaced, so that a value can never end the header line.
fn sanitize(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n']) {
        text.replace(['\r', '\n'], " ").into()
    } else {
        text.into()
    }
}

/// An RTSP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `OPTIONS`, `ANNOUNCE`, `DESCRIBE`, `SETUP`, `PLAY`, `RECORD`, `TEARDOWN`, ...
    pub method: String,
    pub uri: String,
    /// `RTSP/1.0`.
    pub version: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Request {
    /// An `RTSP/1.0` request with no headers.
    pub fn new(method: &str, uri: &str) -> Request {
        Request {
            method: method.to_string(),
            uri: uri.to_string(),
            version: "RTSP/1.0".into(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// Sets a header (builder style).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.set(name, value);
        self
    }

    pub fn cseq(&self) -> Option<u32> {
        self.headers.cseq()
    }

    /// Appends the request in wire form; `Content-Length` is written from the body.
    pub fn write(&self, out: &mut Vec<u8>) {
        let line = format!(
            "{} {} {}\r\n",
            sanitize(&self.method),
            sanitize(&self.uri),
            sanitize(&self.version)
        );
        out.extend_from_slice(line.as_bytes());
        self.headers.write(out, self.body.len());
        out.extend_from_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }
}

/// An RTSP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// `RTSP/1.0`.
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
    pub body: Vec<u8>,
}

impl Response {
    /// An `RTSP/1.0` response with the standard reason phrase.
    pub fn new(status: u16) -> Response {
        Response {
            version: "RTSP/1.0".into(),
            status,
            reason: reason_phrase(status).into(),
            headers: Headers::new(),
            body: Vec::new(),
        }
    }

    /// A response echoing a request's `CSeq` (and `Session`, if any).
    pub fn to_request(request: &Request, status: u16) -> Response {
        let mut response = Response::new(status);
        if let Some(cseq) = request.headers.get("CSeq") {
            response.headers.set("CSeq", cseq.trim());
        }
        if let Some(session) = request.headers.get("Session") {
            response.headers.set("Session", session.trim());
        }
        response
    }

    /// Sets a header (builder style).
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.set(name, value);
        self
    }

    /// Sets the body and its `Content-Type` (builder style).
    pub fn with_body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        self.headers.set("Content-Type", content_type);
        self.body = body.into();
        self
    }

    pub fn cseq(&self) -> Option<u32> {
        self.headers.cseq()
    }

    /// Appends the response in wire form; `Content-Length` is written from the body.
    pub fn write(&self, out: &mut Vec<u8>) {
        let line = format!(
            "{} {} {}\r\n",
            sanitize(&self.version),
            self.status,
            sanitize(&self.reason)
        );
        out.extend_from_slice(line.as_bytes());
        self.headers.write(out, self.body.len());
        out.extend_from_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }
}

/// The reason phrase of a status code (RFC 2326 7.1.1).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        250 => "Low on Storage Space",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        451 => "Parameter Not Understood",
        453 => "Not Enough Bandwidth",
        454 => "Session Not Found",
        455 => "Method Not Valid in This State",
        457 => "Invalid Range",
        459 => "Aggregate Operation Not Allowed",
        460 => "Only Aggregate Operation Allowed",
        461 => "Unsupported Transport",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "RTSP Version Not Supported",
        551 => "Option not supported",
        _ => "Unknown",
    }
}

/// What the incremental reader found at the start of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Request(Request),
    Response(Response),
    /// An interleaved binary frame (RTP or RTCP over the RTSP connection).
    Interleaved {
        channel: u8,
        payload: Bytes,
    },
}

/// Appends an interleaved binary frame. Payloads longer than 65535 bytes are
/// truncated (RTP over TCP packets never are).
pub fn write_interleaved(channel: u8, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len().min(usize::from(u16::MAX));
    out.push(b'$');
    out.push(channel);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&payload[..len]);
}

/// Reads one request from the start of `buf`: `Ok(None)` if more bytes are needed,
/// else the request and the bytes it used (blank lines before it included).
pub fn parse_request(buf: &[u8]) -> Result<Option<(Request, usize)>, RtspError> {
    match parse_message(buf)? {
        None => Ok(None),
        Some((Message::Request(r), used)) => Ok(Some((r, used))),
        Some((Message::Response(_), _)) => {
            Err(malformed("a response where a request was expected"))
        }
        Some((Message::Interleaved { .. }, _)) => Err(malformed(
            "an interleaved frame where a request was expected",
        )),
    }
}

/// Reads one response from the start of `buf` (see [`parse_request`]).
pub fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>, RtspError> {
    match parse_message(buf)? {
        None => Ok(None),
        Some((Message::Response(r), used)) => Ok(Some((r, used))),
        Some((Message::Request(_), _)) => Err(malformed("a request where a response was expected")),
        Some((Message::Interleaved { .. }, _)) => Err(malformed(
            "an interleaved frame where a response was expected",
        )),
    }
}

/// Reads one message (request, response or interleaved frame) from the start of
/// `buf`: `Ok(None)` if more bytes are needed, else the message and the bytes it used.
pub fn parse_message(buf: &[u8]) -> Result<Option<(Message, usize)>, RtspError> {
    // Blank lines between messages (keep-alives) are skipped.
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    if start > MAX_HEADER_BYTES {
        return Err(RtspError::HeaderTooLarge);
    }
    let data = &buf[start..];
    let Some(&first) = data.first() else {
        return Ok(None);
    };
    if first == b'$' {
        let [_, channel, hi, lo, rest @ ..] = data else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some(payload) = rest.get(..len) else {
            return Ok(None);
        };
        return Ok(Some((
            Message::Interleaved {
                channel: *channel,
                payload: Bytes::copy_from_slice(payload),
            },
            start + 4 + len,
        )));
    }
    // The blank line ending an acceptable header block starts at most at
    // MAX_HEADER_BYTES and is at most 3 bytes long ("\n\r\n"): only this window is
    // searched, so that the outcome never depends on how the bytes arrived.
    let window = &data[..data.len().min(MAX_HEADER_BYTES + 3)];
    // Reject garbage as soon as the first line is complete.
    if let Some(eol) = window.iter().position(|b| *b == b'\n') {
        check_start_line(&window[..eol])?;
    }
    let Some((head_len, body_start)) = find_head_end(window) else {
        if window.len() == MAX_HEADER_BYTES + 3 {
            return Err(RtspError::HeaderTooLarge);
        }
        return Ok(None);
    };
    if head_len > MAX_HEADER_BYTES {
        return Err(RtspError::HeaderTooLarge);
    }
    let head = String::from_utf8_lossy(&data[..head_len]);
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or_default();
    let headers = parse_headers(lines)?;
    let body_len = content_length(&headers)?;
    let Some(body) = data.get(body_start..body_start + body_len) else {
        return Ok(None);
    };
    let used = start + body_start + body_len;
    let body = body.to_vec();
    let message = if let Some(rest) = start_line.strip_prefix("RTSP/") {
        let mut parts = rest.splitn(3, ' ');
        let version = format!("RTSP/{}", parts.next().unwrap_or_default());
        let code = parts.next().unwrap_or_default();
        let status = code
            .parse::<u16>()
            .ok()
            .filter(|s| code.len() == 3 && (100..=999).contains(s))
            .ok_or_else(|| malformed(format!("bad status code `{}`", excerpt(code))))?;
        Message::Response(Response {
            version,
            status,
            reason: parts
                .next()
                .unwrap_or_default()
                .replace('\r', " ")
                .trim()
                .to_string(),
            headers,
            body,
        })
    } else {
        let fields: Vec<&str> = start_line.split_ascii_whitespace().collect();
        let [method, uri, version] = fields[..] else {
            return Err(malformed(format!(
                "bad request line `{}`",
                excerpt(start_line)
            )));
        };
        Message::Request(Request {
            method: method.to_string(),
            uri: uri.to_string(),
            version: version.to_string(),
            headers,
            body,
        })
    };
    Ok(Some((message, used)))
}

/// A status line starts with `RTSP/`; a request line is `<token> <uri> RTSP/<x>`.
fn check_start_line(line: &[u8]) -> Result<(), RtspError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.starts_with(b"RTSP/") {
        return Ok(());
    }
    let text = String::from_utf8_lossy(line);
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let ok = match fields[..] {
        [method, _uri, version] => {
            method.bytes().all(is_token_byte) && version.starts_with("RTSP/")
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(malformed(format!(
            "not an RTSP message: `{}`",
            excerpt(&text)
        )))
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The end of the header block: (head length without the blank line, body start).
fn find_head_end(data: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(offset) = data.get(from..)?.iter().position(|b| *b == b'\n') {
        let nl = from + offset;
        match data.get(nl + 1..) {
            Some([b'\n', ..]) => return Some((nl, nl + 2)),
            Some([b'\r', b'\n', ..]) => return Some((nl, nl + 3)),
            _ => from = nl + 1,
        }
    }
    None
}

fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Headers, RtspError> {
    let mut headers = Headers::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // Obsolete line folding: continues the previous value.
            let Some((_, value)) = headers.0.last_mut() else {
                return Err(malformed("continuation line before any header"));
            };
            let more = line.replace('\r', " ");
            let more = more.trim();
            if !more.is_empty() {
                if !value.is_empty() {
                    value.push(' ');
                }
                value.push_str(more);
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed(format!(
                "header line `{}` has no colon",
                excerpt(line)
            )));
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(malformed(format!("bad header name `{}`", excerpt(name))));
        }
        // A bare CR is no line break here, but may be one elsewhere: never keep it.
        headers.append(name, value.replace('\r', " ").trim());
    }
    Ok(headers)
}

fn content_length(headers: &Headers) -> Result<usize, RtspError> {
    let mut length: Option<u64> = None;
    for value in headers.get_all("Content-Length") {
        let n = value
            .trim()
            .parse::<u64>()
            .map_err(|_| malformed(format!("Content-Length `{}`", excerpt(value))))?;
        if length.is_some_and(|l| l != n) {
            return Err(malformed("conflicting Content-Length headers"));
        }
        length = Some(n);
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY_BYTES as u64 {
        return Err(RtspError::BodyTooLarge(length));
    }
    Ok(length as usize)
}

fn excerpt(text: &str) -> String {
    if text.chars().count() > 60 {
        text.chars().take(60).collect::<String>() + "…"
    } else {
        text.to_string()
    }
}

/// The lower transport of a transport spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowerTransport {
    Udp,
    Tcp,
}

/// One transport spec of a Transport header (RFC 2326 12.39).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transport {
    /// Transport protocol and profile, upper case: `RTP/AVP`, `RTP/AVPF`, `RTP/SAVP`.
    pub profile: String,
    pub lower: LowerTransport,
    /// `multicast` was given (else unicast, stated or not).
    pub multicast: bool,
    pub destination: Option<String>,
    pub source: Option<String>,
    /// RTP and RTCP channels over the RTSP connection.
    pub interleaved: Option<(u8, u8)>,
    pub client_port: Option<(u16, u16)>,
    pub server_port: Option<(u16, u16)>,
    /// Multicast port pair.
    pub port: Option<(u16, u16)>,
    pub ttl: Option<u8>,
    pub ssrc: Option<u32>,
    /// The methods of `mode`, upper case, quotes removed (`RECORD`, `PLAY`, or a
    /// comma list).
    pub mode: Option<String>,
    /// Other parameters: lower-case name and value (quotes removed).
    pub other: Vec<(String, Option<String>)>,
}

impl Transport {
    /// `RTP/AVP/TCP;unicast;interleaved=<rtp>-<rtcp>`.
    pub fn tcp_interleaved(rtp_channel: u8, rtcp_channel: u8) -> Transport {
        Transport {
            lower: LowerTransport::Tcp,
            interleaved: Some((rtp_channel, rtcp_channel)),
            ..Transport::udp()
        }
    }

    /// `RTP/AVP;unicast` with nothing else set.
    pub fn udp() -> Transport {
        Transport {
            profile: "RTP/AVP".into(),
            lower: LowerTransport::Udp,
            multicast: false,
            destination: None,
            source: None,
            interleaved: None,
            client_port: None,
            server_port: None,
            port: None,
            ttl: None,
            ssrc: None,
            mode: None,
            other: Vec::new(),
        }
    }

    pub fn is_tcp(&self) -> bool {
        self.lower == LowerTransport::Tcp
    }

    /// `mode` includes `RECORD` (or ffmpeg's alias `RECEIVE`).
    pub fn is_record(&self) -> bool {
        self.mode.as_deref().is_some_and(|m| {
            m.split(',')
                .any(|method| matches!(method.trim(), "RECORD" | "RECEIVE"))
        })
    }

    /// Parses a Transport header value: one or more comma-separated transport specs.
    /// Specs that do not parse are skipped; an error only if none does.
    pub fn parse_list(header: &str) -> Result<Vec<Transport>, RtspError> {
        let mut out = Vec::new();
        let mut first_error = None;
        for spec in split_outside_quotes(header, ',') {
            if spec.trim().is_empty() {
                continue;
            }
            match Transport::parse(spec) {
                Ok(t) => out.push(t),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (out.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            (true, None) => Err(RtspError::Transport("empty Transport header".into())),
            _ => Ok(out),
        }
    }

    /// Parses one transport spec.
    pub fn parse(spec: &str) -> Result<Transport, RtspError> {
        let bad = |what: String| RtspError::Transport(what);
        let mut params = split_outside_quotes(spec, ';').into_iter();
        let protocol = params
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_uppercase();
        let parts: Vec<&str> = protocol.split('/').map(str::trim).collect();
        let (profile, lower) = match parts[..] {
            ["RTP", profile] => (format!("RTP/{profile}"), LowerTransport::Udp),
            ["RTP", profile, "UDP"] => (format!("RTP/{profile}"), LowerTransport::Udp),
            ["RTP", profile, "TCP"] => (format!("RTP/{profile}"), LowerTransport::Tcp),
            _ => {
                return Err(bad(format!(
                    "unsupported transport protocol `{}`",
                    excerpt(&protocol)
                )));
            }
        };
        if profile.len() <= 4 {
            return Err(bad("empty RTP profile".into()));
        }
        let mut t = Transport {
            profile,
            lower,
            ..Transport::udp()
        };
        for param in params {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(unquote(v.trim()))),
                None => (param.trim().to_ascii_lowercase(), None),
            };
            if name.is_empty() {
                continue;
            }
            let need = |v: Option<&str>| -> Result<String, RtspError> {
                v.map(str::to_string)
                    .ok_or_else(|| bad(format!("`{name}` needs a value")))
            };
            match name.as_str() {
                "unicast" => t.multicast = false,
                "multicast" => t.multicast = true,
                "destination" if value.is_some() => t.destination = value.map(str::to_string),
                "source" if value.is_some() => t.source = value.map(str::to_string),
                "interleaved" => {
                    let (a, b) = pair::<u8>(&need(value)?).ok_or_else(|| {
                        bad(format!(
                            "interleaved={}",
                            excerpt(value.unwrap_or_default())
                        ))
                    })?;
                    t.interleaved = Some((a, b));
                }
                "client_port" | "server_port" | "port" => {
                    let v = need(value)?;
                    let ports =
                        pair::<u16>(&v).ok_or_else(|| bad(format!("{name}={}", excerpt(&v))))?;
                    match name.as_str() {
                        "client_port" => t.client_port = Some(ports),
                        "server_port" => t.server_port = Some(ports),
                        _ => t.port = Some(ports),
                    }
                }
                "ttl" => {
                    let v = need(value)?;
                    t.ttl = Some(v.parse().map_err(|_| bad(format!("ttl={}", excerpt(&v))))?);
                }
                "ssrc" => {
                    let v = need(value)?;
                    let digits = v.trim_start_matches("0x").trim_start_matches("0X");
                    let ssrc = u32::from_str_radix(digits, 16)
                        .map_err(|_| bad(format!("ssrc={}", excerpt(&v))))?;
                    t.ssrc = Some(ssrc);
                }
                "mode" => {
                    let v = need(value)?;
                    let methods: Vec<String> = v
                        .split(',')
                        .map(|m| unquote(m.trim()).to_ascii_uppercase())
                        .filter(|m| !m.is_empty())
                        .collect();
                    t.mode = Some(methods.join(","));
                }
                _ => t.other.push((name.clone(), value.map(str::to_string))),
            }
        }
        Ok(t)
    }
}

/// Formats the spec for a Transport header (`mode` unquoted and lower case when it
/// is one method, as ffmpeg and GStreamer expect).
impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.profile)?;
        if self.is_tcp() {
            f.write_str("/TCP")?;
        }
        f.write_str(if self.multicast {
            ";multicast"
        } else {
            ";unicast"
        })?;
        if let Some(d) = &self.destination {
            write!(f, ";destination={}", sanitize_param(d))?;
        }
        if let Some(s) = &self.source {
            write!(f, ";source={}", sanitize_param(s))?;
        }
        if let Some((a, b)) = self.interleaved {
            write!(f, ";interleaved={a}-{b}")?;
        }
        for (name, ports) in [
            ("client_port", self.client_port),
            ("server_port", self.server_port),
            ("port", self.port),
        ] {
            if let Some((a, b)) = ports {
                write!(f, ";{name}={a}-{b}")?;
            }
        }
        if let Some(ttl) = self.ttl {
            write!(f, ";ttl={ttl}")?;
        }
        if let Some(ssrc) = self.ssrc {
            write!(f, ";ssrc={ssrc:08X}")?;
        }
        for (name, value) in &self.other {
            match value {
                Some(v) => write!(f, ";{}={}", sanitize_param(name), sanitize_param(v))?,
                None => write!(f, ";{}", sanitize_param(name))?,
            }
        }
        if let Some(mode) = &self.mode {
            if mode.contains(',') {
                let mode: String = mode
                    .chars()
                    .filter(|c| !matches!(c, ';' | '"' | '\r' | '\n'))
                    .collect();
                write!(f, ";mode=\"{mode}\"")?;
            } else {
                write!(f, ";mode={}", sanitize_param(&mode.to_ascii_lowercase()))?;
            }
        }
        Ok(())
    }
}

/// Characters that would break a transport spec removed.
fn sanitize_param(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, ';' | ',' | '"' | '\r' | '\n'))
        .collect()
}

/// `a-b` or `a` (then `(a, a + 1)`).
fn pair<T>(text: &str) -> Option<(T, T)>
where
    T: std::str::FromStr + Copy + TryFrom<u32> + Into<u32>,
{
    match text.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let a: T = text.trim().parse().ok()?;
            let next = T::try_from(a.into() + 1).unwrap_or(a);
            Some((a, next))
        }
    }
}

fn unquote(text: &str) -> &str {
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .trim()
}

/// Splits on `sep` where it is not inside double quotes.
fn split_outside_quotes(text: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&text[start..i]);
            start = i + c.len_utf8();
        }
    }
    out.push(&text[start..]);
    out
}

/// A user name and password for a camera.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Takes `user[:password]@` out of a URL's authority: the URL without it and the
/// (percent-decoded) credentials, if any.
pub fn split_credentials(url: &str) -> (String, Option<Credentials>) {
    let Some(scheme_end) = url.find("://") else {
        return (url.to_string(), None);
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return (url.to_string(), None);
    };
    let userinfo = &authority[..at];
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let stripped = format!(
        "{}{}{}",
        &url[..scheme_end + 3],
        &authority[at + 1..],
        &rest[authority_end..]
    );
    (
        stripped,
        Some(Credentials {
            username: percent_decode(user),
            password: percent_decode(password),
        }),
    )
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Digest challenge (RFC 2617 3.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    /// `MD5` when absent.
    pub algorithm: Option<String>,
    /// The `qop` options (`auth`, `auth-int`), if given.
    pub qop: Vec<String>,
    pub stale: bool,
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic { realm: String },
    Digest(DigestChallenge),
}

impl Challenge {
    /// Parses one `WWW-Authenticate` value (the first challenge in it).
    pub fn parse(value: &str) -> Result<Challenge, RtspError> {
        let bad = |what: String| RtspError::Auth(what);
        let value = value.trim();
        let (scheme, rest) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((value, ""));
        let mut params: Vec<(String, String)> = Vec::new();
        for item in split_outside_quotes(rest, ',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let Some((key, v)) = item.split_once('=') else {
                break; // the next challenge's scheme
            };
            let key = key.trim();
            if key.contains(char::is_whitespace) {
                break; // `Basic realm=...` of the next challenge
            }
            params.push((key.to_ascii_lowercase(), unescape_quoted(v.trim())));
        }
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("Basic") {
            Ok(Challenge::Basic {
                realm: param("realm").unwrap_or_default(),
            })
        } else if scheme.eq_ignore_ascii_case("Digest") {
            Ok(Challenge::Digest(DigestChallenge {
                realm: param("realm")
                    .ok_or_else(|| bad("Digest challenge without realm".into()))?,
                nonce: param("nonce")
                    .ok_or_else(|| bad("Digest challenge without nonce".into()))?,
                opaque: param("opaque"),
                algorithm: param("algorithm"),
                qop: param("qop")
                    .map(|q| {
                        q.split(',')
                            .map(|s| s.trim().to_ascii_lowercase())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
                stale: param("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
            }))
        } else {
            Err(bad(format!("unsupported scheme `{}`", excerpt(scheme))))
        }
    }

    /// The best challenge of a response's `WWW-Authenticate` values: a Digest one we
    /// can answer (MD5 or MD5-sess, no qop or qop `auth`) over Basic.
    pub fn choose<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Challenge> {
        let mut basic = None;
        for value in values {
            match Challenge::parse(value) {
                Ok(Challenge::Digest(d)) if digest_supported(&d) => {
                    return Some(Challenge::Digest(d));
                }
                Ok(b @ Challenge::Basic { .. }) => {
                    basic.get_or_insert(b);
                }
                _ => {}
            }
        }
        basic
    }
}

fn digest_supported(d: &DigestChallenge) -> bool {
    let algorithm_ok = d
        .algorithm
        .as_deref()
        .is_none_or(|a| a.eq_ignore_ascii_case("MD5") || a.eq_ignore_ascii_case("MD5-sess"));
    let qop_ok = d.qop.is_empty() || d.qop.iter().any(|q| q == "auth");
    algorithm_ok && qop_ok
}

/// `"a\"b"` → `a"b`; unquoted values as they are.
fn unescape_quoted(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"') else {
        return value.to_string();
    };
    let inner = inner.strip_suffix('"').unwrap_or(inner);
    let mut out = String::with_capacity(inner.len());
    let mut escaped = false;
    for c in inner.chars() {
        if escaped || c != '\\' {
            out.push(c);
            escaped = false;
        } else {
            escaped = true;
        }
    }
    out
}

fn quote(value: &str) -> String {
    format!(
        "\"{}\"",
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace(['\r', '\n'], " ")
    )
}

fn md5_hex(text: &str) -> String {
    let digest: [u8; 16] = Md5::digest(text.as_bytes()).into();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Authorization` header value answering `challenge` for a request (`method`,
/// `uri` exactly as on the request line). Digest with `qop=auth` uses `nonce_count`
/// (1 for the first request with this nonce, then 2, 3, ...) and the client nonce
/// `cnonce` (any unpredictable string); without qop they are not used.
pub fn authorization(
    challenge: &Challenge,
    credentials: &Credentials,
    method: &str,
    uri: &str,
    nonce_count: u32,
    cnonce: &str,
) -> Result<String, RtspError> {
    let d = match challenge {
        Challenge::Basic { .. } => {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", credentials.username, credentials.password));
            return Ok(format!("Basic {token}"));
        }
        Challenge::Digest(d) => d,
    };
    if !digest_supported(d) {
        return Err(RtspError::Auth(format!(
            "unsupported Digest algorithm {:?} / qop {:?}",
            d.algorithm, d.qop
        )));
    }
    let mut ha1 = md5_hex(&format!(
        "{}:{}:{}",
        credentials.username, d.realm, credentials.password
    ));
    let sess = d
        .algorithm
        .as_deref()
        .is_some_and(|a| a.eq_ignore_ascii_case("MD5-sess"));
    if sess {
        ha1 = md5_hex(&format!("{ha1}:{}:{cnonce}", d.nonce));
    }
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let use_qop = d.qop.iter().any(|q| q == "auth");
    let nc = format!("{nonce_count:08x}");
    let response = if use_qop {
        md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", d.nonce))
    } else {
        md5_hex(&format!("{ha1}:{}:{ha2}", d.nonce))
    };
    let mut out = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\"",
        quote(&credentials.username),
        quote(&d.realm),
        quote(&d.nonce),
        quote(uri)
    );
    if let Some(algorithm) = &d.algorithm {
        out.push_str(&format!(", algorithm={}", sanitize_param(algorithm)));
    }
    if let Some(opaque) = &d.opaque {
        out.push_str(&format!(", opaque={}", quote(opaque)));
    }
    if use_qop {
        out.push_str(&format!(", qop=auth, nc={nc}, cnonce={}", quote(cnonce)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANNOUNCE_SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=No Name\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\na=tool:libavformat 61.7.100\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1\r\na=control:streamid=0\r\n";

    fn announce() -> Vec<u8> {
        format!(
            "ANNOUNCE rtsp://127.0.0.1:8554/live/cam1 RTSP/1.0\r\nContent-Type: application/sdp\r\nCSeq: 2\r\nUser-Agent: Lavf61.7.100\r\nSession: 1234abcd\r\ncontent-length: {}\r\n\r\n{ANNOUNCE_SDP}",
            ANNOUNCE_SDP.len()
        )
        .into_bytes()
    }

    #[test]
    fn announce_split_across_many_reads() {
        let wire = announce();
        let mut buf = Vec::new();
        let mut parsed = None;
        for (i, byte) in wire.iter().enumerate() {
            buf.push(*byte);
            match parse_request(&buf).unwrap() {
                None => assert!(i + 1 < wire.len(), "complete message not recognised"),
                Some(found) => {
                    assert_eq!(i + 1, wire.len(), "message recognised early");
                    parsed = Some(found);
                }
            }
        }
        let (request, used) = parsed.unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(request.method, "ANNOUNCE");
        assert_eq!(request.uri, "rtsp://127.0.0.1:8554/live/cam1");
        assert_eq!(request.version, "RTSP/1.0");
        assert_eq!(request.cseq(), Some(2));
        assert_eq!(request.headers.get("content-type"), Some("application/sdp"));
        assert_eq!(request.headers.get("CONTENT-LENGTH"), Some("198"));
        assert_eq!(request.headers.session_id(), Some("1234abcd"));
        assert_eq!(request.body, ANNOUNCE_SDP.as_bytes());
        let sdp = crate::media::sdp::SessionDescription::parse(&request.body).unwrap();
        assert_eq!(sdp.media[0].control.as_deref(), Some("streamid=0"));
        // Written back and read again: the same request.
        let mut again = parse_request(&request.to_bytes()).unwrap().unwrap().0;
        let mut request = request;
        request.headers.remove("Content-Length");
        again.headers.remove("Content-Length");
        assert_eq!(again, request);
    }

    #[test]
    fn pipelined_messages_and_interleaved_frames() {
        let mut wire = b"\r\n".to_vec();
        wire.extend(
            Request::new("OPTIONS", "rtsp://cam/")
                .with_header("CSeq", "1")
                .to_bytes(),
        );
        write_interleaved(0, &[0x80, 0x60, 0, 1], &mut wire);
        let response = Response::new(200)
            .with_header("CSeq", "3")
            .with_body("application/sdp", "v=0\r\n");
        wire.extend(response.to_bytes());
        write_interleaved(1, &[], &mut wire);

        let mut rest = &wire[..];
        let mut seen = Vec::new();
        while let Some((message, used)) = parse_message(rest).unwrap() {
            seen.push(message);
            rest = &rest[used..];
        }
        assert!(rest.is_empty());
        assert_eq!(seen.len(), 4);
        assert!(
            matches!(&seen[0], Message::Request(r) if r.method == "OPTIONS" && r.cseq() == Some(1))
        );
        assert_eq!(
            seen[1],
            Message::Interleaved {
                channel: 0,
                payload: Bytes::from_static(&[0x80, 0x60, 0, 1])
            }
        );
        let mut response = response;
        response.headers.append("Content-Length", "5");
        assert_eq!(seen[2], Message::Response(response));
        assert_eq!(
            seen[3],
            Message::Interleaved {
                channel: 1,
                payload: Bytes::new()
            }
        );
        // Partial interleaved frames wait for more bytes.
        assert_eq!(parse_message(b"$\x00\x00\x05abc").unwrap(), None);
        assert_eq!(parse_message(b"$\x00").unwrap(), None);
    }

    #[test]
    fn responses_and_lf_only_line_endings() {
        let wire = b"RTSP/1.0 401 Unauthorized\nCSeq: 3\nWWW-Authenticate: Basic realm=\"cam\"\nWWW-Authenticate: Digest realm=\"cam\", nonce=\"abc\"\nX-Folded: a\n  b\n\n";
        let (response, used) = parse_response(wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        assert_eq!(response.status, 401);
        assert_eq!(response.reason, "Unauthorized");
        assert_eq!(response.headers.get_all("www-authenticate").count(), 2);
        assert_eq!(response.headers.get("x-folded"), Some("a b"));
        let challenge = Challenge::choose(response.headers.get_all("WWW-Authenticate")).unwrap();
        assert!(matches!(challenge, Challenge::Digest(ref d) if d.nonce == "abc"));
        // A status line without a reason phrase.
        let (r, _) = parse_response(b"RTSP/1.0 200\r\n\r\n").unwrap().unwrap();
        assert_eq!((r.status, r.reason.as_str()), (200, ""));
        assert!(parse_request(wire).is_err());
        assert!(parse_response(&announce()).is_err());
    }

    #[test]
    fn garbage_and_limits_are_errors() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"hello\n",
            b"\x00\x01\x02\n",
            b"OPTIONS rtsp://x RTSP/1.0\r\nno colon here\r\n\r\n",
            b"OPTIONS rtsp://x RTSP/1.0\r\n: empty name\r\n\r\n",
            b"OPTIONS rtsp://x RTSP/1.0\r\n continuation first\r\n\r\n",
            b"OPTIONS rtsp://x RTSP/1.0\r\nContent-Length: -1\r\n\r\n",
            b"OPTIONS rtsp://x RTSP/1.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"RTSP/1.0 20x OK\r\n\r\n",
            b"RTSP/1.0 2000 OK\r\n\r\n",
        ] {
            assert!(
                parse_message(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let big_body = b"ANNOUNCE rtsp://x RTSP/1.0\r\nContent-Length: 65537\r\n\r\n";
        assert_eq!(parse_message(big_body), Err(RtspError::BodyTooLarge(65537)));
        let mut big_head = b"OPTIONS rtsp://x RTSP/1.0\r\n".to_vec();
        while big_head.len() <= MAX_HEADER_BYTES {
            big_head.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        assert_eq!(parse_message(&big_head), Err(RtspError::HeaderTooLarge));
        big_head.extend_from_slice(b"\r\n");
        assert_eq!(parse_message(&big_head), Err(RtspError::HeaderTooLarge));
        assert_eq!(
            parse_message(&vec![b'\n'; MAX_HEADER_BYTES + 1]),
            Err(RtspError::HeaderTooLarge)
        );
        // An incomplete but plausible message is not an error.
        assert_eq!(parse_message(b"OPTI").unwrap(), None);
        assert_eq!(parse_message(b"\r\n\r\n").unwrap(), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678_9ABC_DEF1u64;
        let alphabet = b"$\x00\x01\r\n :RTSP/1.0 OPTIONS Content-Length: 5\"=;,-";
        for len in 0..600usize {
            let bytes: Vec<u8> = (0..len % 120)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = parse_message(&bytes);
            let text = String::from_utf8_lossy(&bytes);
            let _ = Transport::parse_list(&text);
            let _ = Challenge::parse(&text);
            let _ = split_credentials(&text);
        }
    }

    #[test]
    fn writes_content_length_from_the_body_and_strips_injection() {
        let mut request = Request::new("SET_PARAMETER", "rtsp://cam/")
            .with_header("CSeq", "9")
            .with_header("Content-Length", "999")
            .with_header("X-Evil", "a\r\nInjected: yes");
        request.body = b"abc".to_vec();
        let text = String::from_utf8(request.to_bytes()).unwrap();
        assert_eq!(
            text,
            "SET_PARAMETER rtsp://cam/ RTSP/1.0\r\nCSeq: 9\r\nX-Evil: a  Injected: yes\r\nContent-Length: 3\r\n\r\nabc"
        );
        let response = Response::to_request(&request, 454);
        assert_eq!(
            String::from_utf8(response.to_bytes()).unwrap(),
            "RTSP/1.0 454 Session Not Found\r\nCSeq: 9\r\n\r\n"
        );
    }

    #[test]
    fn transport_variants() {
        // ffmpeg -f rtsp -rtsp_transport tcp
        let t =
            &Transport::parse_list("RTP/AVP/TCP;unicast;interleaved=0-1;mode=record").unwrap()[0];
        assert!(t.is_tcp() && t.is_record() && !t.multicast);
        assert_eq!(t.interleaved, Some((0, 1)));
        assert_eq!(t.profile, "RTP/AVP");
        // GStreamer rtspclientsink over UDP
        let t =
            &Transport::parse_list("RTP/AVP;unicast;client_port=5000-5001;mode=record").unwrap()[0];
        assert!(!t.is_tcp() && t.is_record());
        assert_eq!(t.client_port, Some((5000, 5001)));
        // Quoted, odd case, spaces, explicit UDP, single port, ssrc.
        let t = &Transport::parse_list(
            " rtp/avp/udp ; Unicast ; Client_Port = 6970 ; MODE=\"RECORD\" ; SSRC=0000ABCD ; x-foo=\"a,b\"",
        )
        .unwrap()[0];
        assert_eq!(t.lower, LowerTransport::Udp);
        assert_eq!(t.client_port, Some((6970, 6971)));
        assert!(t.is_record());
        assert_eq!(t.ssrc, Some(0xABCD));
        assert_eq!(t.other, [("x-foo".to_string(), Some("a,b".to_string()))]);
        // Several transports, the first unsupported; PLAY mode; multicast.
        let list = Transport::parse_list(
            "RAW/RAW/UDP;unicast, RTP/AVP/TCP;interleaved=2-3, RTP/AVP;multicast;destination=224.2.0.1;port=3456-3457;ttl=16;mode=\"PLAY\"",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].interleaved, Some((2, 3)));
        assert!(!list[0].is_record());
        assert!(list[1].multicast);
        assert_eq!(list[1].port, Some((3456, 3457)));
        assert_eq!(list[1].ttl, Some(16));
        assert_eq!(list[1].mode.as_deref(), Some("PLAY"));
        // Interleaved with one channel, GStreamer's `mode=record` in quotes with PLAY.
        let t = Transport::parse("RTP/AVP/TCP;unicast;interleaved=4;mode=\"PLAY,RECORD\"").unwrap();
        assert_eq!(t.interleaved, Some((4, 5)));
        assert!(t.is_record());
        // Errors.
        for bad in [
            "",
            "RTP",
            "RTP/AVP/SCTP",
            "RTP/AVP;client_port=70000-70001",
            "RTP/AVP/TCP;interleaved=a-b",
            "RTP/AVP;client_port",
            "RTP/AVP;ssrc=xyz",
        ] {
            assert!(Transport::parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transport_formatting_round_trips() {
        let mut reply = Transport::tcp_interleaved(0, 1);
        reply.mode = Some("RECORD".into());
        reply.ssrc = Some(0x1234);
        assert_eq!(
            reply.to_string(),
            "RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=00001234;mode=record"
        );
        assert_eq!(Transport::parse(&reply.to_string()).unwrap(), reply);
        let mut udp = Transport::udp();
        udp.client_port = Some((5000, 5001));
        udp.server_port = Some((6000, 6001));
        udp.mode = Some("PLAY,RECORD".into());
        assert_eq!(
            udp.to_string(),
            "RTP/AVP;unicast;client_port=5000-5001;server_port=6000-6001;mode=\"PLAY,RECORD\""
        );
        assert_eq!(Transport::parse(&udp.to_string()).unwrap(), udp);
    }

    #[test]
    fn digest_rfc2617_example() {
        // RFC 2617 3.5 (the method and URI of the example).
        let challenge = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        let credentials = Credentials {
            username: "Mufasa".into(),
            password: "Circle Of Life".into(),
        };
        let header = authorization(
            &challenge,
            &credentials,
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        )
        .unwrap();
        assert_eq!(
            header,
            "Digest username=\"Mufasa\", realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"/dir/index.html\", response=\"6629fae49393a05397450978507c4ef1\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\", qop=auth, nc=00000001, cnonce=\"0a4f113b\""
        );
    }

    #[test]
    fn digest_without_qop_basic_and_credentials_in_urls() {
        // Camera-style challenge without qop (RFC 2069 compatible response):
        // HA1 = md5("admin:IP Camera:12345"), HA2 = md5("DESCRIBE:rtsp://10.0.0.2/stream1"),
        // response = md5(HA1 + ":0a1b2c3d:" + HA2).
        let challenge =
            Challenge::parse("Digest realm=\"IP Camera\", nonce=\"0a1b2c3d\", stale=\"FALSE\"")
                .unwrap();
        let Challenge::Digest(d) = &challenge else {
            panic!("digest expected")
        };
        assert!(!d.stale && d.qop.is_empty());
        let (url, credentials) = split_credentials("rtsp://admin:12345@10.0.0.2/stream1");
        assert_eq!(url, "rtsp://10.0.0.2/stream1");
        let credentials = credentials.unwrap();
        let header = authorization(&challenge, &credentials, "DESCRIBE", &url, 1, "x").unwrap();
        let ha1 = md5_hex("admin:IP Camera:12345");
        let ha2 = md5_hex("DESCRIBE:rtsp://10.0.0.2/stream1");
        assert_eq!(ha1, "e235635aa306371021f31a8a964419b6");
        let expected = md5_hex(&format!("{ha1}:0a1b2c3d:{ha2}"));
        assert!(
            header.ends_with(&format!("response=\"{expected}\"")),
            "{header}"
        );
        assert!(!header.contains("qop"));
        // Basic.
        let basic = Challenge::parse("Basic realm=\"cam\"").unwrap();
        assert_eq!(
            authorization(&basic, &credentials, "DESCRIBE", &url, 1, "").unwrap(),
            "Basic YWRtaW46MTIzNDU="
        );
        // Percent-encoded credentials, no password, no credentials.
        let (url, c) = split_credentials("rtsp://us%40er:p%3Ass@cam:554/a?b=c@d");
        assert_eq!(url, "rtsp://cam:554/a?b=c@d");
        let c = c.unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("us@er", "p:ss")
        );
        assert!(!format!("{c:?}").contains("p:ss"));
        assert_eq!(split_credentials("rtsp://cam/x@y").1, None);
        // Unsupported algorithms are not chosen; Basic is the fallback.
        let chosen = Challenge::choose([
            "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256",
            "Basic realm=\"r\"",
        ]);
        assert_eq!(chosen, Some(Challenge::Basic { realm: "r".into() }));
        let sess =
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess, qop=\"auth\"")
                .unwrap();
        let header = authorization(&sess, &credentials, "PLAY", "rtsp://x/", 2, "cn").unwrap();
        let ha1 = md5_hex(&format!("{}:n:cn", md5_hex("admin:r:12345")));
        let expected = md5_hex(&format!(
            "{ha1}:n:00000002:cn:auth:{}",
            md5_hex("PLAY:rtsp://x/")
        ));
        assert!(
            header.contains(&format!("response=\"{expected}\"")),
            "{header}"
        );
        assert!(Challenge::parse("Digest realm=\"r\"").is_err());
        assert!(Challenge::parse("Bearer x").is_err());
    }
}
