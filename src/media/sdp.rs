//! Session descriptions (RFC 8866, "SDP: Session Description Protocol") as cameras and
//! RTSP clients send them in ANNOUNCE and DESCRIBE bodies, with the RTP payload format
//! parameters camera ingest needs: H.264 (RFC 6184 8.1: `sprop-parameter-sets`,
//! `packetization-mode`), H.265 (RFC 7798 7.1: `sprop-vps`/`sprop-sps`/`sprop-pps`,
//! `sprop-max-don-diff`) and AAC in `mpeg4-generic` (RFC 3640 4.1: `config`, `mode`,
//! `sizeLength`, `indexLength`, `indexDeltaLength`).
//!
//! The parser is lenient about what real senders get wrong: CRLF or LF line endings,
//! blank lines, lines in any order, a missing `v=`, unknown line types and attributes,
//! extra whitespace in `a=fmtp`. Malformed lines that matter (`m=`, `c=`, `a=rtpmap`,
//! `a=fmtp`, undecodable base64/hex parameters of a supported codec) are errors naming
//! the line. [`SessionDescription::write`] writes the parsed model back (tests and
//! simulators); [`MediaDescription::for_codec`] builds one.
//!
//! No I/O. Never panics on any input.

use std::fmt::Write as _;

use base64::Engine as _;

use super::samples::Codec;

/// A bad session description: the 1-based line number (0 when not about a line) and
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SDP at line {line}: {message}")]
pub struct SdpError {
    pub line: usize,
    pub message: String,
}

impl SdpError {
    fn new(line: usize, message: impl Into<String>) -> SdpError {
        SdpError {
            line,
            message: message.into(),
        }
    }
}

/// Largest session description accepted (the RTSP body limit).
pub const MAX_SDP_BYTES: usize = 64 * 1024;
/// Most media descriptions accepted in one session.
pub const MAX_MEDIA: usize = 64;

/// A `c=` line: `<nettype> <addrtype> <connection-address>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub net_type: String,
    pub addr_type: String,
    /// The address, with any `/ttl` or `/count` suffix.
    pub address: String,
}

/// The media direction attribute (RFC 8866 6.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn from_attribute(name: &str) -> Option<Direction> {
        match name.to_ascii_lowercase().as_str() {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// An `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding_name: String,
    pub clock_rate: u32,
    /// Audio: the channel count (the encoding parameters), if given.
    pub channels: Option<u16>,
}

/// An `a=fmtp:<format> <parameters>`: parameters split on `;` and trimmed, keys lower
/// case, values as written (a parameter without `=` has an empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fmtp {
    pub format: String,
    pub params: Vec<(String, String)>,
}

/// The supported codec chosen for a media description, with its payload format
/// parameters decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpCodec {
    pub codec: Codec,
    pub payload_type: u8,
    /// As written in the rtpmap (`H264`, `H265`, `HEVC`, `mpeg4-generic`).
    pub encoding_name: String,
    pub clock_rate: u32,
    pub channels: Option<u16>,
    /// All format parameters of the payload type (keys lower case).
    pub fmtp: Vec<(String, String)>,
    /// H.264 `sprop-parameter-sets`, decoded (SPS and PPS NAL units).
    pub sprop_parameter_sets: Vec<Vec<u8>>,
    /// H.264 `packetization-mode` (0, 1 or 2; absent means 0).
    pub packetization_mode: Option<u8>,
    /// H.265 `sprop-vps`, `sprop-sps`, `sprop-pps`, decoded.
    pub sprop_vps: Vec<Vec<u8>>,
    pub sprop_sps: Vec<Vec<u8>>,
    pub sprop_pps: Vec<Vec<u8>>,
    /// H.265 `sprop-max-don-diff` (DONL fields are present when > 0).
    pub sprop_max_don_diff: Option<u32>,
    /// AAC `config`: the AudioSpecificConfig, decoded from hex.
    pub config: Option<Vec<u8>>,
    /// AAC `mode` (`AAC-hbr`, `AAC-lbr`).
    pub mode: Option<String>,
    pub size_length: Option<u32>,
    pub index_length: Option<u32>,
    pub index_delta_length: Option<u32>,
}

impl RtpCodec {
    /// A format parameter by (case-insensitive) name.
    pub fn fmtp_param(&self, key: &str) -> Option<&str> {
        self.fmtp
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `video`, `audio`, `application`, ...
    pub media: String,
    pub port: u16,
    /// The `/<number of ports>` suffix of the port, if any.
    pub port_count: Option<u16>,
    /// `RTP/AVP`, `RTP/AVPF`, `RTP/SAVP`, ...
    pub proto: String,
    /// The format list (payload type numbers for RTP).
    pub formats: Vec<String>,
    pub connection: Option<Connection>,
    pub rtpmaps: Vec<RtpMap>,
    pub fmtps: Vec<Fmtp>,
    /// `a=control` (RFC 7826 appendix C.1.1).
    pub control: Option<String>,
    pub direction: Option<Direction>,
    /// The other attributes, in order: name and value (`None` for a property).
    pub attributes: Vec<(String, Option<String>)>,
    /// The first format whose rtpmap names a supported codec, decoded.
    pub codec: Option<RtpCodec>,
}

/// A parsed session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// `o=`, as written.
    pub origin: Option<String>,
    /// `s=`, as written.
    pub session_name: Option<String>,
    pub connection: Option<Connection>,
    /// Session-level `a=control`.
    pub control: Option<String>,
    pub direction: Option<Direction>,
    /// The other session-level attributes.
    pub attributes: Vec<(String, Option<String>)>,
    pub media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parses a session description.
    pub fn parse(data: &[u8]) -> Result<SessionDescription, SdpError> {
        if data.len() > MAX_SDP_BYTES {
            return Err(SdpError::new(
                0,
                format!("{} bytes, at most {MAX_SDP_BYTES} accepted", data.len()),
            ));
        }
        let text = std::str::from_utf8(data).map_err(|e| {
            let line = 1 + data[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            SdpError::new(line, "not UTF-8")
        })?;
        let mut session = SessionDescription {
            origin: None,
            session_name: None,
            connection: None,
            control: None,
            direction: None,
            attributes: Vec::new(),
            media: Vec::new(),
        };
        // Media sections with the line number of their m= line.
        let mut media_lines = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let number = index + 1;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            let bytes = line.as_bytes();
            if bytes.len() < 2 || bytes[1] != b'=' || !bytes[0].is_ascii_alphabetic() {
                return Err(SdpError::new(
                    number,
                    format!("`{}` is not a <type>=<value> line", excerpt(line)),
                ));
            }
            let kind = bytes[0];
            let value = line[2..].trim();
            let media = session.media.last_mut();
            match (kind, media) {
                (b'm', _) => {
                    if session.media.len() >= MAX_MEDIA {
                        return Err(SdpError::new(number, "too many media descriptions"));
                    }
                    session.media.push(parse_media_line(value, number)?);
                    media_lines.push(number);
                }
                (b'c', media) => {
                    let connection = parse_connection(value, number)?;
                    match media {
                        Some(media) => media.connection = Some(connection),
                        None => session.connection = Some(connection),
                    }
                }
                (b'a', Some(media)) => media.add_attribute(value, number)?,
                (b'a', None) => {
                    let (name, attr_value) = split_attribute(value);
                    if name.eq_ignore_ascii_case("control") {
                        session.control = attr_value.map(str::to_string);
                    } else if let Some(direction) = Direction::from_attribute(name) {
                        session.direction = Some(direction);
                    } else {
                        session
                            .attributes
                            .push((name.to_string(), attr_value.map(str::to_string)));
                    }
                }
                (b'o', None) => session.origin = Some(value.to_string()),
                (b's', None) => session.session_name = Some(value.to_string()),
                _ => {}
            }
        }
        for (media, &line) in session.media.iter_mut().zip(&media_lines) {
            media.codec = media.choose_codec().map_err(|message| {
                SdpError::new(line, format!("media `{}`: {message}", media.media))
            })?;
        }
        Ok(session)
    }

    /// A session with no media: `o=- 0 0 IN IP4 <address>`, `s=<name>` (`s=-` if the
    /// name is blank), `c=IN IP4 <address>`, `t=0 0` (IPv6 addresses get `IP6`).
    pub fn new(session_name: &str, address: &str) -> SessionDescription {
        let session_name = session_name.trim();
        let session_name = if session_name.is_empty() {
            "-"
        } else {
            session_name
        };
        let addr_type = if address.contains(':') { "IP6" } else { "IP4" };
        SessionDescription {
            origin: Some(format!("- 0 0 IN {addr_type} {address}")),
            session_name: Some(session_name.to_string()),
            connection: Some(Connection {
                net_type: "IN".into(),
                addr_type: addr_type.into(),
                address: address.to_string(),
            }),
            control: None,
            direction: None,
            attributes: Vec::new(),
            media: Vec::new(),
        }
    }

    /// The session description in SDP form (CRLF line endings), in the order RFC 8866
    /// requires: `v=`, `o=`, `s=`, `c=`, `t=`, session attributes, media sections.
    /// Writes what the model holds, so that parsing the output gives the same model:
    /// `o=` and `s=` are left out when absent ([`SessionDescription::new`] sets both).
    pub fn write(&self) -> String {
        let mut out = String::from("v=0\r\n");
        if let Some(origin) = &self.origin {
            let _ = write!(out, "o={origin}\r\n");
        }
        if let Some(name) = &self.session_name {
            let _ = write!(out, "s={name}\r\n");
        }
        if let Some(c) = &self.connection {
            write_connection(&mut out, c);
        }
        out.push_str("t=0 0\r\n");
        if let Some(control) = &self.control {
            let _ = write!(out, "a=control:{control}\r\n");
        }
        if let Some(direction) = self.direction {
            let _ = write!(out, "a={}\r\n", direction.as_str());
        }
        write_attributes(&mut out, &self.attributes);
        for media in &self.media {
            media.write(&mut out);
        }
        out
    }

    /// The media descriptions with a supported codec.
    pub fn supported_media(&self) -> impl Iterator<Item = &MediaDescription> {
        self.media.iter().filter(|m| m.codec.is_some())
    }
}

impl MediaDescription {
    /// A media description for one supported codec (tests, simulators): `m=<video|
    /// audio> <port> RTP/AVP <payload type>`, its rtpmap and, if `fmtp` is not empty,
    /// an fmtp (values as given), and `a=control:<control>` if given. Errors if the
    /// parameters do not decode (bad base64 or hex).
    pub fn for_codec(
        codec: Codec,
        port: u16,
        payload_type: u8,
        clock_rate: u32,
        channels: Option<u16>,
        fmtp: &[(&str, &str)],
        control: Option<&str>,
    ) -> Result<MediaDescription, SdpError> {
        let encoding_name = match codec {
            Codec::H264 => "H264",
            Codec::H265 => "H265",
            Codec::Aac => "MPEG4-GENERIC",
        };
        let mut media = MediaDescription {
            media: if codec.is_video() { "video" } else { "audio" }.into(),
            port,
            port_count: None,
            proto: "RTP/AVP".into(),
            formats: vec![payload_type.to_string()],
            connection: None,
            rtpmaps: vec![RtpMap {
                payload_type,
                encoding_name: encoding_name.into(),
                clock_rate,
                channels,
            }],
            fmtps: Vec::new(),
            control: control.map(str::to_string),
            direction: None,
            attributes: Vec::new(),
            codec: None,
        };
        if !fmtp.is_empty() {
            media.fmtps.push(Fmtp {
                format: payload_type.to_string(),
                params: fmtp
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                    .collect(),
            });
        }
        media.codec = media
            .choose_codec()
            .map_err(|message| SdpError::new(0, message))?;
        Ok(media)
    }

    /// Appends this media section in SDP form.
    pub fn write(&self, out: &mut String) {
        let port_count = self.port_count.map(|n| format!("/{n}")).unwrap_or_default();
        let _ = write!(
            out,
            "m={} {}{} {}",
            self.media, self.port, port_count, self.proto
        );
        for format in &self.formats {
            let _ = write!(out, " {format}");
        }
        out.push_str("\r\n");
        if let Some(c) = &self.connection {
            write_connection(out, c);
        }
        for map in &self.rtpmaps {
            let _ = write!(
                out,
                "a=rtpmap:{} {}/{}",
                map.payload_type, map.encoding_name, map.clock_rate
            );
            if let Some(channels) = map.channels {
                let _ = write!(out, "/{channels}");
            }
            out.push_str("\r\n");
        }
        for fmtp in &self.fmtps {
            let _ = write!(out, "a=fmtp:{} ", fmtp.format);
            for (i, (key, value)) in fmtp.params.iter().enumerate() {
                if i > 0 {
                    out.push(';');
                }
                out.push_str(key);
                if !value.is_empty() {
                    let _ = write!(out, "={value}");
                }
            }
            out.push_str("\r\n");
        }
        if let Some(control) = &self.control {
            let _ = write!(out, "a=control:{control}\r\n");
        }
        if let Some(direction) = self.direction {
            let _ = write!(out, "a={}\r\n", direction.as_str());
        }
        write_attributes(out, &self.attributes);
    }

    /// The rtpmap of a payload type.
    pub fn rtpmap(&self, payload_type: u8) -> Option<&RtpMap> {
        self.rtpmaps.iter().find(|m| m.payload_type == payload_type)
    }

    /// The format parameters of a format (payload type).
    pub fn fmtp(&self, format: &str) -> Option<&Fmtp> {
        self.fmtps.iter().find(|f| f.format == format)
    }

    /// The URL to SETUP this media: its `a=control` resolved against `base` (the
    /// Content-Base, else the request URL): absolute controls as they are, `*` or none
    /// the base itself, relative ones appended to the base with one `/`.
    pub fn control_url(&self, base: &str) -> String {
        resolve_control(base, self.control.as_deref())
    }

    fn add_attribute(&mut self, value: &str, line: usize) -> Result<(), SdpError> {
        let (name, attr_value) = split_attribute(value);
        let lower = name.to_ascii_lowercase();
        match (lower.as_str(), attr_value) {
            ("rtpmap", Some(v)) => self.rtpmaps.push(parse_rtpmap(v, line)?),
            ("fmtp", Some(v)) => self.fmtps.push(parse_fmtp(v, line)?),
            ("control", v) => self.control = v.map(str::to_string),
            (_, None) if Direction::from_attribute(name).is_some() => {
                self.direction = Direction::from_attribute(name);
            }
            _ => self
                .attributes
                .push((name.to_string(), attr_value.map(str::to_string))),
        }
        Ok(())
    }

    /// The first format with a supported codec, its parameters decoded.
    fn choose_codec(&self) -> Result<Option<RtpCodec>, String> {
        for format in &self.formats {
            let Ok(payload_type) = format.parse::<u8>() else {
                continue;
            };
            let Some(map) = self.rtpmap(payload_type) else {
                continue;
            };
            let codec = match map.encoding_name.to_ascii_uppercase().as_str() {
                "H264" => Codec::H264,
                "H265" | "HEVC" => Codec::H265,
                "MPEG4-GENERIC" => Codec::Aac,
                _ => continue,
            };
            let fmtp = self
                .fmtp(format)
                .map(|f| f.params.clone())
                .unwrap_or_default();
            return decode_codec(codec, map, fmtp).map(Some);
        }
        Ok(None)
    }
}

/// Resolves an `a=control` attribute against a base URL (RFC 7826 C.1.1, leniently).
pub fn resolve_control(base: &str, control: Option<&str>) -> String {
    let control = control.map(str::trim).unwrap_or("*");
    let lower = control.to_ascii_lowercase();
    if lower.starts_with("rtsp://")
        || lower.starts_with("rtsps://")
        || lower.starts_with("rtspu://")
    {
        return control.to_string();
    }
    if control == "*" || control.is_empty() {
        return base.to_string();
    }
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        control.trim_start_matches('/')
    )
}

fn decode_codec(
    codec: Codec,
    map: &RtpMap,
    fmtp: Vec<(String, String)>,
) -> Result<RtpCodec, String> {
    let param = |key: &str| {
        fmtp.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let number = |key: &str| -> Result<Option<u32>, String> {
        param(key)
            .map(|v| {
                v.parse::<u32>()
                    .map_err(|_| format!("{key}={v} is not a number"))
            })
            .transpose()
    };
    let sets = |key: &str| -> Result<Vec<Vec<u8>>, String> {
        param(key).map_or(Ok(Vec::new()), |v| decode_base64_list(key, v))
    };
    let mut out = RtpCodec {
        codec,
        payload_type: map.payload_type,
        encoding_name: map.encoding_name.clone(),
        clock_rate: map.clock_rate,
        channels: map.channels,
        fmtp: Vec::new(),
        sprop_parameter_sets: Vec::new(),
        packetization_mode: None,
        sprop_vps: Vec::new(),
        sprop_sps: Vec::new(),
        sprop_pps: Vec::new(),
        sprop_max_don_diff: None,
        config: None,
        mode: None,
        size_length: None,
        index_length: None,
        index_delta_length: None,
    };
    match codec {
        Codec::H264 => {
            out.sprop_parameter_sets = sets("sprop-parameter-sets")?;
            out.packetization_mode = number("packetization-mode")?
                .map(|m| u8::try_from(m).map_err(|_| format!("packetization-mode={m}")))
                .transpose()?;
        }
        Codec::H265 => {
            out.sprop_vps = sets("sprop-vps")?;
            out.sprop_sps = sets("sprop-sps")?;
            out.sprop_pps = sets("sprop-pps")?;
            out.sprop_max_don_diff = number("sprop-max-don-diff")?;
        }
        Codec::Aac => {
            out.config = param("config").map(decode_hex).transpose()?;
            out.mode = param("mode").map(str::to_string);
            out.size_length = number("sizelength")?;
            out.index_length = number("indexlength")?;
            out.index_delta_length = number("indexdeltalength")?;
        }
    }
    out.fmtp = fmtp;
    Ok(out)
}

/// Decodes a comma-separated list of base64 NAL units (empty items skipped; padding
/// optional, as some cameras omit it).
fn decode_base64_list(key: &str, value: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let trimmed = item.trim_end_matches('=');
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(trimmed)
            .map_err(|e| format!("{key}: `{}` is not base64 ({e})", excerpt(item)))?;
        if !decoded.is_empty() {
            out.push(decoded);
        }
    }
    Ok(out)
}

fn decode_hex(value: &str) -> Result<Vec<u8>, String> {
    let digits = value.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "config={} has an odd number of digits",
            excerpt(value)
        ));
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16);
            let lo = (pair[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(hi), Some(lo)) => Ok((hi * 16 + lo) as u8),
                _ => Err(format!("config={} is not hex", excerpt(value))),
            }
        })
        .collect()
}

fn excerpt(text: &str) -> String {
    if text.chars().count() > 60 {
        text.chars().take(60).collect::<String>() + "…"
    } else {
        text.to_string()
    }
}

/// `name:value` → (name, Some(value)); `name` → (name, None).
fn split_attribute(value: &str) -> (&str, Option<&str>) {
    match value.split_once(':') {
        Some((name, v)) => (name.trim(), Some(v.trim())),
        None => (value.trim(), None),
    }
}

fn parse_media_line(value: &str, line: usize) -> Result<MediaDescription, SdpError> {
    let mut fields = value.split_ascii_whitespace();
    let (Some(media), Some(port), Some(proto)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(SdpError::new(
            line,
            format!("m={} needs <media> <port> <proto> <fmt>...", excerpt(value)),
        ));
    };
    let (port, port_count) = match port.split_once('/') {
        Some((p, n)) => (p, Some(n)),
        None => (port, None),
    };
    let bad_port = || SdpError::new(line, format!("m= port `{}` is not a number", excerpt(port)));
    let port = port.parse::<u16>().map_err(|_| bad_port())?;
    let port_count = port_count
        .map(|n| n.parse::<u16>().map_err(|_| bad_port()))
        .transpose()?;
    Ok(MediaDescription {
        media: media.to_string(),
        port,
        port_count,
        proto: proto.to_string(),
        formats: fields.map(str::to_string).collect(),
        connection: None,
        rtpmaps: Vec::new(),
        fmtps: Vec::new(),
        control: None,
        direction: None,
        attributes: Vec::new(),
        codec: None,
    })
}

fn parse_connection(value: &str, line: usize) -> Result<Connection, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [net_type, addr_type, address] = fields[..] else {
        return Err(SdpError::new(
            line,
            format!("c={} needs <nettype> <addrtype> <address>", excerpt(value)),
        ));
    };
    Ok(Connection {
        net_type: net_type.to_string(),
        addr_type: addr_type.to_string(),
        address: address.to_string(),
    })
}

fn parse_rtpmap(value: &str, line: usize) -> Result<RtpMap, SdpError> {
    let bad = |why: &str| SdpError::new(line, format!("a=rtpmap:{}: {why}", excerpt(value)));
    let (pt, encoding) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .ok_or_else(|| bad("expected <payload type> <encoding>/<clock rate>"))?;
    let payload_type = pt
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|pt| *pt < 128)
        .ok_or_else(|| bad("payload type is not a number below 128"))?;
    let mut parts = encoding.trim().split('/');
    let encoding_name = parts.next().unwrap_or_default().trim();
    if encoding_name.is_empty() {
        return Err(bad("no encoding name"));
    }
    let clock_rate = parts
        .next()
        .and_then(|r| r.trim().parse::<u32>().ok())
        .filter(|r| *r > 0)
        .ok_or_else(|| bad("clock rate is not a positive number"))?;
    let channels = match parts.next() {
        Some(c) => Some(
            c.trim()
                .parse::<u16>()
                .map_err(|_| bad("channel count is not a number"))?,
        ),
        None => None,
    };
    Ok(RtpMap {
        payload_type,
        encoding_name: encoding_name.to_string(),
        clock_rate,
        channels,
    })
}

fn parse_fmtp(value: &str, line: usize) -> Result<Fmtp, SdpError> {
    let (format, params) = match value.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((format, params)) => (format, params),
        None => (value, ""),
    };
    if format.is_empty() {
        return Err(SdpError::new(line, "a=fmtp without a format"));
    }
    let params = params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim().to_string()),
            None => (p.to_ascii_lowercase(), String::new()),
        })
        .filter(|(k, _)| !k.is_empty())
        .collect();
    Ok(Fmtp {
        format: format.to_string(),
        params,
    })
}

fn write_connection(out: &mut String, c: &Connection) {
    let _ = write!(out, "c={} {} {}\r\n", c.net_type, c.addr_type, c.address);
}

fn write_attributes(out: &mut String, attributes: &[(String, Option<String>)]) {
    for (name, value) in attributes {
        match value {
            Some(value) => {
                let _ = write!(out, "a={name}:{value}\r\n");
            }
            None => {
                let _ = write!(out, "a={name}\r\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What ffmpeg writes for `-f rtp -sdp_file` with libx264 (`-f rtp` to port 5004).
    const FFMPEG_H264: &str = "v=0\n\
o=- 0 0 IN IP4 127.0.0.1\n\
s=No Name\n\
c=IN IP4 127.0.0.1\n\
t=0 0\n\
a=tool:libavformat 61.7.100\n\
m=video 5004 RTP/AVP 96\n\
b=AS:200\n\
a=rtpmap:96 H264/90000\n\
a=fmtp:96 packetization-mode=1; sprop-parameter-sets=Z2QADazZQUH7ARAAAAMAEAAAAwMg8UKZYA==,aOvjyyLA; profile-level-id=64000D\n";

    /// A camera ANNOUNCE-style SDP with CRLF, AAC and H.265, odd spacing and case.
    const CAMERA: &str = "v=0\r\n\
o=- 1 1 IN IP4 192.0.2.10\r\n\
s=Camera\r\n\
t=0 0\r\n\
a=control:*\r\n\
a=range:npt=0-\r\n\
m=video 0 RTP/AVP 97 98\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtpmap:98 JPEG/90000\r\n\
a=rtpmap:97 HEVC/90000\r\n\
a=fmtp:97  sprop-vps=QAEMAf//AWAAAAMAkAAAAwAAAwB4lZgJ ; sprop-sps=QgEBAWAAAAMAkAAAAwAAAwB4oAPAgBDlllZpJMrwFoCAAAADAIAAAAyE;sprop-pps=RAHBcrRiQA==\r\n\
a=control:trackID=1\r\n\
a=recvonly\r\n\
\r\n\
m=audio 0 RTP/AVP 96\r\n\
a=rtpmap:96 mpeg4-generic/44100/2\r\n\
a=fmtp:96 streamtype=5; profile-level-id=15; mode=AAC-hbr; config=1210; SizeLength=13; IndexLength=3; IndexDeltaLength=3\r\n\
a=control:rtsp://192.0.2.10/live/trackID=2\r\n";

    #[test]
    fn parses_ffmpeg_h264() {
        let sdp = SessionDescription::parse(FFMPEG_H264.as_bytes()).unwrap();
        assert_eq!(sdp.session_name.as_deref(), Some("No Name"));
        assert_eq!(sdp.connection.as_ref().unwrap().address, "127.0.0.1");
        assert_eq!(
            sdp.attributes,
            [("tool".into(), Some("libavformat 61.7.100".into()))]
        );
        let [media] = &sdp.media[..] else {
            panic!("one media expected")
        };
        assert_eq!(media.media, "video");
        assert_eq!(media.port, 5004);
        assert_eq!(media.proto, "RTP/AVP");
        assert_eq!(media.formats, ["96"]);
        let codec = media.codec.as_ref().unwrap();
        assert_eq!(codec.codec, Codec::H264);
        assert_eq!(codec.payload_type, 96);
        assert_eq!(codec.clock_rate, 90_000);
        assert_eq!(codec.packetization_mode, Some(1));
        assert_eq!(codec.fmtp_param("Profile-Level-ID"), Some("64000D"));
        assert_eq!(codec.sprop_parameter_sets.len(), 2);
        assert_eq!(codec.sprop_parameter_sets[0][0], 0x67);
        assert_eq!(
            codec.sprop_parameter_sets[1],
            [0x68, 0xEB, 0xE3, 0xCB, 0x22, 0xC0]
        );
    }

    #[test]
    fn parses_camera_h265_and_aac() {
        let sdp = SessionDescription::parse(CAMERA.as_bytes()).unwrap();
        assert_eq!(sdp.control.as_deref(), Some("*"));
        assert_eq!(sdp.media.len(), 2);
        let video = &sdp.media[0];
        assert_eq!(video.connection.as_ref().unwrap().address, "0.0.0.0");
        assert_eq!(video.direction, Some(Direction::RecvOnly));
        assert_eq!(video.control.as_deref(), Some("trackID=1"));
        assert_eq!(
            video.control_url("rtsp://192.0.2.10/live/"),
            "rtsp://192.0.2.10/live/trackID=1"
        );
        let codec = video.codec.as_ref().unwrap();
        assert_eq!(codec.codec, Codec::H265);
        assert_eq!(codec.payload_type, 97);
        assert_eq!(codec.sprop_vps[0][0] >> 1, 32);
        assert_eq!(codec.sprop_sps[0][0] >> 1, 33);
        assert_eq!(codec.sprop_pps[0][0] >> 1, 34);
        assert_eq!(codec.sprop_max_don_diff, None);
        let audio = &sdp.media[1];
        assert_eq!(
            audio.control_url("rtsp://ignored/"),
            "rtsp://192.0.2.10/live/trackID=2"
        );
        let codec = audio.codec.as_ref().unwrap();
        assert_eq!(codec.codec, Codec::Aac);
        assert_eq!(codec.clock_rate, 44_100);
        assert_eq!(codec.channels, Some(2));
        assert_eq!(codec.config.as_deref(), Some(&[0x12, 0x10][..]));
        assert_eq!(codec.mode.as_deref(), Some("AAC-hbr"));
        assert_eq!(
            (
                codec.size_length,
                codec.index_length,
                codec.index_delta_length
            ),
            (Some(13), Some(3), Some(3))
        );
        assert_eq!(sdp.supported_media().count(), 2);
    }

    #[test]
    fn unsupported_media_have_no_codec() {
        let sdp = SessionDescription::parse(
            b"v=0\nm=application 0 RTP/AVP 107\na=rtpmap:107 vnd.onvif.metadata/90000\nm=audio 0 RTP/AVP 0\n",
        )
        .unwrap();
        assert_eq!(sdp.media.len(), 2);
        assert!(sdp.media.iter().all(|m| m.codec.is_none()));
    }

    #[test]
    fn errors_name_the_line() {
        let cases: [(&str, usize, &str); 8] = [
            ("v=0\nthis is not sdp\n", 2, "not a <type>=<value>"),
            ("v=0\r\nm=video\r\n", 2, "m=video needs"),
            ("v=0\nm=video x RTP/AVP 96\n", 2, "port `x`"),
            ("m=video 0 RTP/AVP 96\na=rtpmap:96 H264\n", 2, "clock rate"),
            (
                "m=video 0 RTP/AVP 96\na=rtpmap:300 H264/90000\n",
                2,
                "payload type",
            ),
            ("c=IN IP4\n", 1, "c=IN IP4 needs"),
            (
                "v=0\nm=video 0 RTP/AVP 96\na=rtpmap:96 H264/90000\na=fmtp:96 sprop-parameter-sets=!!!\n",
                2,
                "not base64",
            ),
            (
                "m=audio 0 RTP/AVP 96\na=rtpmap:96 MPEG4-GENERIC/48000\na=fmtp:96 config=11g0\n",
                1,
                "not hex",
            ),
        ];
        for (text, line, needle) in cases {
            let err = SessionDescription::parse(text.as_bytes()).unwrap_err();
            assert_eq!(err.line, line, "{text}: {err}");
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
        let err = SessionDescription::parse(b"v=0\n\xFF\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(SessionDescription::parse(&vec![b'a'; MAX_SDP_BYTES + 1]).is_err());
    }

    #[test]
    fn write_and_parse_round_trip() {
        let mut sdp = SessionDescription::new("freshet test", "127.0.0.1");
        sdp.control = Some("*".into());
        sdp.media.push(
            MediaDescription::for_codec(
                Codec::H264,
                5000,
                96,
                90_000,
                None,
                &[
                    ("packetization-mode", "1"),
                    (
                        "sprop-parameter-sets",
                        "Z2QADazZQUH7ARAAAAMAEAAAAwMg8UKZYA==,aOvjyyLA",
                    ),
                ],
                Some("trackID=0"),
            )
            .unwrap(),
        );
        sdp.media.push(
            MediaDescription::for_codec(
                Codec::Aac,
                5002,
                97,
                48_000,
                Some(2),
                &[
                    ("mode", "AAC-hbr"),
                    ("config", "1190"),
                    ("sizeLength", "13"),
                    ("indexLength", "3"),
                    ("indexDeltaLength", "3"),
                ],
                Some("trackID=1"),
            )
            .unwrap(),
        );
        let text = sdp.write();
        assert!(text.starts_with("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=freshet test\r\n"));
        assert!(text.contains("a=rtpmap:97 MPEG4-GENERIC/48000/2\r\n"));
        assert!(text.contains("a=fmtp:97 mode=AAC-hbr;config=1190;sizelength=13;"));
        let parsed = SessionDescription::parse(text.as_bytes()).unwrap();
        assert_eq!(parsed, sdp);
        assert_eq!(
            parsed.media[1].codec.as_ref().unwrap().config,
            Some(vec![0x11, 0x90])
        );
        assert!(
            MediaDescription::for_codec(Codec::Aac, 0, 97, 48_000, None, &[("config", "z")], None)
                .is_err()
        );
    }

    #[test]
    fn control_resolution() {
        let base = "rtsp://cam/stream";
        assert_eq!(resolve_control(base, None), base);
        assert_eq!(resolve_control(base, Some("*")), base);
        assert_eq!(
            resolve_control(base, Some("track1")),
            "rtsp://cam/stream/track1"
        );
        assert_eq!(
            resolve_control("rtsp://cam/s/", Some("/t")),
            "rtsp://cam/s/t"
        );
        assert_eq!(resolve_control(base, Some("RTSP://x/y")), "RTSP://x/y");
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let alphabet = b"vmcas=: /;,\r\n0123456789H264MPEG-GENERICfmtprtpmap=Z2Q";
        for len in 0..500usize {
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            let _ = SessionDescription::parse(&text);
            let mut prefixed = b"m=video 0 RTP/AVP 96\na=rtpmap:96 H264/90000\n".to_vec();
            prefixed.extend_from_slice(&text);
            if let Ok(sdp) = SessionDescription::parse(&prefixed) {
                let _ = SessionDescription::parse(sdp.write().as_bytes());
            }
        }
    }
}
