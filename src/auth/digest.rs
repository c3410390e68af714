//! Server-side RTSP authentication with the configured keys: HTTP Digest as RTSP uses
//! it (username = access key id, password = secret access key), and Basic where the
//! connection is encrypted.
//!
//! What it does: builds the `WWW-Authenticate` challenges of a 401 ([`challenges`]),
//! parses an `Authorization: Digest ...` / `Basic ...` header ([`parse_authorization`]),
//! computes the MD5 request digest ([`request_digest`], with `qop=auth` or the legacy
//! RFC 2069 form without qop, which GStreamer sends), compares it in constant time,
//! and issues and checks nonces ([`NonceKey`]): a nonce is a timestamp and an
//! HMAC-SHA256 of it under a per-process key, so the server keeps no state, forged
//! nonces are recognised and nonces expire after [`NONCE_LIFETIME_SECS`] (answered
//! with `stale=true`, so clients retry without asking the user), except on the
//! connection that already authenticated with them ([`RtspRequest::session_nonce`]).
//! [`authenticate`] puts it together: header in, the key it proves (or why not) out.
//!
//! What it never does: no I/O, no clock reads (time is passed in), no logging.
//! Secrets, the response hash and the Basic token never appear in an error or in
//! `Debug` output. Nonces are not remembered, so a captured no-qop answer can be
//! replayed for the same method and URL until its nonce expires: Digest proves the
//! key without sending it, it does not protect the session (use TLS for that).
//!
//! Spec: RFC 2617 §3 (Digest, MD5, `qop=auth`, and the RFC 2069 compatibility form),
//! RFC 7616 §3.4 (the same with the newer wording; SHA-256 is not offered since RTSP
//! clients do not implement it), RFC 2326 §D.1 / RFC 7826 §19 (RTSP's use of them),
//! RFC 7617 (Basic).

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::keys::{AccessKey, Keyring};

/// The realm of every challenge (it is part of what Digest clients hash).
pub const REALM: &str = "Freshet";

/// How long an issued nonce is accepted.
pub const NONCE_LIFETIME_SECS: u64 = 300;

/// How far in the future a nonce's timestamp may lie (clock steps) before it is
/// taken for a forgery.
const NONCE_FUTURE_SLACK_SECS: u64 = 60;

/// Longest `Authorization` value looked at; the RTSP reader caps headers anyway.
const MAX_HEADER_LEN: usize = 4096;

/// Why a request is not authenticated. The messages name no secret and no hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("no Authorization header")]
    Missing,
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    #[error("unsupported authentication scheme")]
    UnsupportedScheme,
    #[error("Basic authentication is only accepted over TLS")]
    BasicNeedsTls,
    #[error("unsupported Digest algorithm or qop")]
    Unsupported,
    #[error("the Digest answer is for another realm")]
    WrongRealm,
    #[error("the Digest uri is not the request's")]
    UriMismatch,
    #[error("the nonce was not issued by this server")]
    ForgedNonce,
    #[error("the nonce has expired")]
    StaleNonce,
    #[error("unknown access key id {0}")]
    UnknownKey(String),
    #[error("wrong secret for access key id {0}")]
    WrongCredentials(String),
}

impl DigestError {
    /// Whether the client tried credentials (and they failed), as opposed to sending
    /// none or answering an expired nonce, which well-behaved clients do first.
    pub fn is_failed_attempt(&self) -> bool {
        !matches!(self, Self::Missing | Self::StaleNonce)
    }

    /// Whether the 401 should say `stale=true`.
    pub fn is_stale(&self) -> bool {
        matches!(self, Self::StaleNonce)
    }
}

/// The parameters of an `Authorization: Digest` header (RFC 2617 §3.2.2).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DigestAnswer {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    /// The client's request digest (hex).
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
}

impl std::fmt::Debug for DigestAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestAnswer")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("uri", &self.uri)
            .field("qop", &self.qop)
            .field("response", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// What a client presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Presented {
    Basic {
        access_key_id: String,
        secret: String,
    },
    Digest(DigestAnswer),
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { access_key_id, .. } => f
                .debug_struct("Basic")
                .field("access_key_id", access_key_id)
                .field("secret", &"<redacted>")
                .finish(),
            Self::Digest(d) => d.fmt(f),
        }
    }
}

impl Presented {
    /// The access key id the client claims.
    pub fn access_key_id(&self) -> &str {
        match self {
            Self::Basic { access_key_id, .. } => access_key_id,
            Self::Digest(d) => &d.username,
        }
    }
}

/// Parses an `Authorization` value.
pub fn parse_authorization(value: &str) -> Result<Presented, DigestError> {
    let value = value.trim();
    if value.len() > MAX_HEADER_LEN {
        return Err(DigestError::Malformed("too long"));
    }
    let (scheme, rest) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("Basic") {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .map_err(|_| DigestError::Malformed("Basic token is not base64"))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| DigestError::Malformed("Basic token is not UTF-8"))?;
        let (id, secret) = text
            .split_once(':')
            .ok_or(DigestError::Malformed("Basic token without ':'"))?;
        return Ok(Presented::Basic {
            access_key_id: id.to_string(),
            secret: secret.to_string(),
        });
    }
    if !scheme.eq_ignore_ascii_case("Digest") {
        return Err(DigestError::UnsupportedScheme);
    }
    let params = params(rest)?;
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let required = |name: &str| {
        get(name).ok_or(DigestError::Malformed(
            "Digest needs username, realm, nonce, uri and response",
        ))
    };
    Ok(Presented::Digest(DigestAnswer {
        username: required("username")?,
        realm: required("realm")?,
        nonce: required("nonce")?,
        uri: required("uri")?,
        response: required("response")?,
        algorithm: get("algorithm"),
        qop: get("qop"),
        nc: get("nc"),
        cnonce: get("cnonce"),
        opaque: get("opaque"),
    }))
}

/// `key=value` / `key="quoted \" value"` pairs separated by commas.
fn params(text: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars
            .peek()
            .is_some_and(|(_, c)| c.is_ascii_whitespace() || *c == ',')
        {
            chars.next();
        }
        let Some(&(start, _)) = chars.peek() else {
            return Ok(out);
        };
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            if c == '=' {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        if chars.next().is_none() {
            return Err(DigestError::Malformed("parameter without '='"));
        }
        let key = text[start..end].trim().to_string();
        while chars.peek().is_some_and(|(_, c)| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek().is_some_and(|(_, c)| *c == '"') {
            chars.next();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '"' => {
                        closed = true;
                        break;
                    }
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(DigestError::Malformed("unterminated quoted value"));
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.push((key, value));
    }
}

fn md5_hex(text: &str) -> String {
    let digest: [u8; 16] = Md5::digest(text.as_bytes()).into();
    to_hex(&digest)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower- or upper-case hex digits to bytes; `None` on anything else.
fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The MD5 request digest (RFC 2617 §3.2.2.1): with `qop` `Some((nc, cnonce))` the
/// `qop=auth` form, else the RFC 2069 form.
pub fn request_digest(
    username: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
) -> String {
    let ha1 = md5_hex(&format!("{username}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    match qop {
        Some((nc, cnonce)) => md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")),
        None => md5_hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Whether a nonce is one of ours and still good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    Fresh,
    Stale,
    Forged,
}

/// The per-process key nonces are made with. `Debug` does not show it.
pub struct NonceKey([u8; 32]);

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(<redacted>)")
    }
}

impl NonceKey {
    /// A fresh random key (nonces do not survive a restart; clients are challenged
    /// again).
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Self(key)
    }

    pub fn from_bytes(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn tag(&self, issued_secs: u64) -> [u8; 16] {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"freshet-rtsp-nonce:");
        mac.update(&issued_secs.to_be_bytes());
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&full[..16]);
        tag
    }

    /// A nonce issued at `now_secs` (Unix time): 16 hex digits of time, 32 of tag.
    pub fn issue(&self, now_secs: u64) -> String {
        format!("{now_secs:016x}{}", to_hex(&self.tag(now_secs)))
    }

    pub fn check(&self, nonce: &str, now_secs: u64) -> NonceState {
        if nonce.len() != 48 || !nonce.is_ascii() {
            return NonceState::Forged;
        }
        let (Ok(issued), Some(tag)) = (
            u64::from_str_radix(&nonce[..16], 16),
            from_hex(&nonce[16..]),
        ) else {
            return NonceState::Forged;
        };
        if !bool::from(self.tag(issued).ct_eq(tag.as_slice())) {
            return NonceState::Forged;
        }
        if issued > now_secs.saturating_add(NONCE_FUTURE_SLACK_SECS) {
            return NonceState::Forged;
        }
        if now_secs.saturating_sub(issued) > NONCE_LIFETIME_SECS {
            return NonceState::Stale;
        }
        NonceState::Fresh
    }
}

/// The `WWW-Authenticate` values of a 401: Digest, and Basic too on a secure
/// connection.
pub fn challenges(nonce: &str, stale: bool, secure: bool) -> Vec<String> {
    let stale = if stale { ", stale=TRUE" } else { "" };
    let mut out = vec![format!(
        "Digest realm=\"{REALM}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"{stale}"
    )];
    if secure {
        out.push(format!("Basic realm=\"{REALM}\""));
    }
    out
}

/// The path (and query) of an RTSP URL: `rtsp://h:1/a/b` → `/a/b`.
fn path_of(uri: &str) -> &str {
    match uri.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => uri,
    }
}

/// A request to authenticate.
#[derive(Debug, Clone, Copy)]
pub struct RtspRequest<'a> {
    /// The `Authorization` value, if any.
    pub authorization: Option<&'a str>,
    pub method: &'a str,
    /// The request URI as on the request line.
    pub uri: &'a str,
    /// Whether the connection is encrypted (Basic is accepted only then).
    pub secure: bool,
    /// The nonce an earlier request on this connection authenticated with: it does
    /// not expire on this connection (a publishing session lasts for hours and its
    /// keep-alives reuse the nonce), but must still be one of ours.
    pub session_nonce: Option<&'a str>,
}

/// A request's proof.
#[derive(Debug, Clone)]
pub struct Authenticated<'k> {
    pub key: &'k AccessKey,
    /// The Digest nonce it answered (`None` for Basic).
    pub nonce: Option<String>,
}

/// The key a request proves, or why it does not.
pub fn authenticate<'k>(
    keyring: &'k Keyring,
    nonces: &NonceKey,
    request: RtspRequest<'_>,
    now_secs: u64,
) -> Result<Authenticated<'k>, DigestError> {
    let value = request.authorization.ok_or(DigestError::Missing)?;
    match parse_authorization(value)? {
        Presented::Basic {
            access_key_id,
            secret,
        } => {
            if !request.secure {
                return Err(DigestError::BasicNeedsTls);
            }
            let key = keyring
                .get(&access_key_id)
                .ok_or_else(|| DigestError::UnknownKey(access_key_id.clone()))?;
            if key.secret_matches(&secret) {
                Ok(Authenticated { key, nonce: None })
            } else {
                Err(DigestError::WrongCredentials(access_key_id))
            }
        }
        Presented::Digest(d) => {
            if d.algorithm
                .as_deref()
                .is_some_and(|a| !a.eq_ignore_ascii_case("MD5"))
                || d.qop
                    .as_deref()
                    .is_some_and(|q| !q.eq_ignore_ascii_case("auth"))
            {
                return Err(DigestError::Unsupported);
            }
            if d.realm != REALM {
                return Err(DigestError::WrongRealm);
            }
            // The answer must be for this request (RFC 2617 §3.2.2.5); clients send
            // the URL as on the request line, some only its path.
            if d.uri != request.uri && path_of(&d.uri) != path_of(request.uri) {
                return Err(DigestError::UriMismatch);
            }
            match nonces.check(&d.nonce, now_secs) {
                NonceState::Fresh => {}
                NonceState::Stale if request.session_nonce == Some(d.nonce.as_str()) => {}
                NonceState::Stale => return Err(DigestError::StaleNonce),
                NonceState::Forged => return Err(DigestError::ForgedNonce),
            }
            let qop = match (&d.qop, &d.nc, &d.cnonce) {
                (None, _, _) => None,
                (Some(_), Some(nc), Some(cnonce)) => Some((nc.as_str(), cnonce.as_str())),
                (Some(_), _, _) => return Err(DigestError::Malformed("qop without nc and cnonce")),
            };
            let key = keyring
                .get(&d.username)
                .ok_or_else(|| DigestError::UnknownKey(d.username.clone()))?;
            let expected = request_digest(
                &d.username,
                REALM,
                key.secret(),
                request.method,
                &d.uri,
                &d.nonce,
                qop,
            );
            let given = d.response.to_ascii_lowercase();
            if bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
                Ok(Authenticated {
                    key,
                    nonce: Some(d.nonce),
                })
            } else {
                Err(DigestError::WrongCredentials(d.username))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_examples() {
        const RFC2617: (&str, &str, &str) = (
            "testrealm@host.com",
            "Circle Of Life",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        );
        const RFC7616: (&str, &str, &str) = (
            "http-auth@example.org",
            "Circle of Life",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        );
        let cases = [
            // RFC 2617 §3.5.
            (
                RFC2617,
                Some(("00000001", "0a4f113b")),
                "6629fae49393a05397450978507c4ef1",
            ),
            // RFC 7616 §3.9.1, MD5.
            (
                RFC7616,
                Some(("00000001", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")),
                "8ca523f5e9506fed4657c9700eebdbec",
            ),
            // RFC 2069's form (no qop) over RFC 2617's values: MD5(HA1:nonce:HA2),
            // checked against Python's hashlib.
            (RFC2617, None, "670fd8c2df070c60b045671b8b24ff02"),
        ];
        for ((realm, password, nonce), qop, expected) in cases {
            let got = request_digest(
                "Mufasa",
                realm,
                password,
                "GET",
                "/dir/index.html",
                nonce,
                qop,
            );
            assert_eq!(got, expected, "{realm} {qop:?}");
        }
    }

    #[test]
    fn parses_rfc_2617_authorization() {
        let value = r#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let Presented::Digest(d) = parse_authorization(value).unwrap() else {
            panic!("not Digest");
        };
        assert_eq!(d.username, "Mufasa");
        assert_eq!(d.realm, "testrealm@host.com");
        assert_eq!(d.uri, "/dir/index.html");
        assert_eq!(d.qop.as_deref(), Some("auth"));
        assert_eq!(d.nc.as_deref(), Some("00000001"));
        assert_eq!(d.cnonce.as_deref(), Some("0a4f113b"));
        assert_eq!(d.response, "6629fae49393a05397450978507c4ef1");
        assert_eq!(
            d.opaque.as_deref(),
            Some("5ccc069c403ebaf9f0171e9517f40e41")
        );
        assert!(!format!("{d:?}").contains("6629fae4"));
    }

    #[test]
    fn parses_quoting_basic_and_refuses_garbage() {
        let Presented::Digest(d) = parse_authorization(
            r#"digest username="a\"b", realm="r, s", nonce=n, uri="rtsp://h/x", response="R""#,
        )
        .unwrap() else {
            panic!("not Digest");
        };
        assert_eq!((d.username.as_str(), d.realm.as_str()), ("a\"b", "r, s"));
        assert_eq!(d.nonce, "n");
        let basic = parse_authorization("Basic QUtJRDpzM2NyZXQ6eA==").unwrap();
        assert_eq!(
            basic,
            Presented::Basic {
                access_key_id: "AKID".into(),
                secret: "s3cret:x".into()
            }
        );
        assert!(!format!("{basic:?}").contains("s3cret"));
        for bad in [
            "",
            "Digest",
            "Digest username=\"a\"",
            "Digest username=\"a, realm=x",
            "Digest username",
            "Basic !!!",
            "Basic QUtJRA==",
            "Bearer x",
            "Digest \u{0}=\u{ff}",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad:?}");
        }
        assert!(parse_authorization(&format!("Digest x=\"{}\"", "a".repeat(5000))).is_err());
    }

    #[test]
    fn nonces_expire_and_cannot_be_forged() {
        let key = NonceKey::from_bytes([7; 32]);
        let now = 1_700_000_000;
        let nonce = key.issue(now);
        assert_eq!(nonce.len(), 48);
        assert_eq!(key.check(&nonce, now), NonceState::Fresh);
        assert_eq!(
            key.check(&nonce, now + NONCE_LIFETIME_SECS),
            NonceState::Fresh
        );
        assert_eq!(
            key.check(&nonce, now + NONCE_LIFETIME_SECS + 1),
            NonceState::Stale
        );
        assert_eq!(key.check(&nonce, now - 3_600), NonceState::Forged);
        // Another server's nonce, a changed timestamp, junk.
        let other = NonceKey::from_bytes([8; 32]).issue(now);
        assert_eq!(key.check(&other, now), NonceState::Forged);
        let later = format!("{:016x}{}", now + 10, &nonce[16..]);
        assert_eq!(key.check(&later, now + 10), NonceState::Forged);
        for junk in ["", "zz", &"g".repeat(48), &"é".repeat(24)] {
            assert_eq!(key.check(junk, now), NonceState::Forged);
        }
        assert!(!format!("{key:?}").contains('7'));
    }

    fn req<'a>(auth: &'a str, uri: &'a str) -> RtspRequest<'a> {
        RtspRequest {
            authorization: Some(auth),
            method: "ANNOUNCE",
            uri,
            secure: false,
            session_nonce: None,
        }
    }

    fn ring() -> Keyring {
        Keyring::new(vec![AccessKey::new("AKID", "SECRET", vec![], vec![])]).unwrap()
    }

    fn digest_header(secret: &str, nonce: &str, uri: &str, qop: bool) -> String {
        let answer = request_digest(
            "AKID",
            REALM,
            secret,
            "ANNOUNCE",
            uri,
            nonce,
            qop.then_some(("00000001", "abcdef")),
        );
        let q = if qop {
            ", qop=auth, nc=00000001, cnonce=\"abcdef\""
        } else {
            ""
        };
        format!(
            "Digest username=\"AKID\", realm=\"{REALM}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{answer}\", algorithm=MD5{q}"
        )
    }

    #[test]
    fn authenticates_digest_with_and_without_qop() {
        let (ring, nonces, now) = (ring(), NonceKey::from_bytes([1; 32]), 1_000_000);
        let nonce = nonces.issue(now);
        let uri = "rtsp://127.0.0.1:8554/cam";
        for qop in [true, false] {
            let h = digest_header("SECRET", &nonce, uri, qop);
            let ok = authenticate(&ring, &nonces, req(&h, uri), now).unwrap();
            assert_eq!(ok.key.access_key_id, "AKID");
            assert_eq!(ok.nonce.as_deref(), Some(nonce.as_str()));
            // Wrong secret, wrong method, another URL, expired nonce.
            let h = digest_header("WRONG", &nonce, uri, qop);
            let e = authenticate(&ring, &nonces, req(&h, "rtsp://127.0.0.1:8554/cam"), now);
            assert_eq!(e.unwrap_err(), DigestError::WrongCredentials("AKID".into()));
            let h = digest_header("SECRET", &nonce, uri, qop);
            let mut other_method = req(&h, "rtsp://127.0.0.1:8554/cam");
            other_method.method = "RECORD";
            assert!(authenticate(&ring, &nonces, other_method, now).is_err());
            let e = authenticate(&ring, &nonces, req(&h, "rtsp://127.0.0.1:8554/other"), now);
            assert_eq!(e.unwrap_err(), DigestError::UriMismatch);
            let e = authenticate(&ring, &nonces, req(&h, uri), now + 301);
            assert!(e.as_ref().unwrap_err().is_stale() && !e.unwrap_err().is_failed_attempt());
            // ...except on the connection that already authenticated with it.
            let same_connection = RtspRequest {
                session_nonce: Some(&nonce),
                ..req(&h, uri)
            };
            assert!(authenticate(&ring, &nonces, same_connection, now + 86_400).is_ok());
            let other_nonce = nonces.issue(now + 1);
            let elsewhere = RtspRequest {
                session_nonce: Some(&other_nonce),
                ..same_connection
            };
            let e = authenticate(&ring, &nonces, elsewhere, now + 301);
            assert_eq!(e.unwrap_err(), DigestError::StaleNonce);
        }
        // Only the path in the Digest uri is fine; an unknown key and a forged nonce are not.
        let h = digest_header("SECRET", &nonce, "/cam", true);
        assert!(authenticate(&ring, &nonces, req(&h, "rtsp://localhost/cam"), now).is_ok());
        let h = digest_header("SECRET", &nonce, uri, true).replace("\"AKID\"", "\"NOBODY\"");
        let e = authenticate(&ring, &nonces, req(&h, "rtsp://127.0.0.1:8554/cam"), now);
        assert_eq!(e.unwrap_err(), DigestError::UnknownKey("NOBODY".into()));
        let forged = NonceKey::from_bytes([2; 32]).issue(now);
        let h = digest_header("SECRET", &forged, uri, true);
        let e = authenticate(&ring, &nonces, req(&h, "rtsp://127.0.0.1:8554/cam"), now);
        assert_eq!(e.unwrap_err(), DigestError::ForgedNonce);
        let e = authenticate(
            &ring,
            &nonces,
            RtspRequest {
                authorization: None,
                ..req("", "x")
            },
            now,
        );
        assert!(!e.unwrap_err().is_failed_attempt());
    }

    #[test]
    fn basic_only_over_tls() {
        let (ring, nonces) = (ring(), NonceKey::random());
        let token = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("AKID:{s}"))
            )
        };
        let (good, bad) = (token("SECRET"), token("nope"));
        let over = |auth, secure| RtspRequest {
            secure,
            ..req(auth, "rtsp://h/cam")
        };
        assert_eq!(
            authenticate(&ring, &nonces, over(&good, false), 0).unwrap_err(),
            DigestError::BasicNeedsTls
        );
        assert!(authenticate(&ring, &nonces, over(&good, true), 0).is_ok());
        let e = authenticate(&ring, &nonces, over(&bad, true), 0).unwrap_err();
        assert_eq!(e, DigestError::WrongCredentials("AKID".into()));
        assert!(!e.to_string().contains("nope"));
    }

    #[test]
    fn challenges_offer_basic_only_when_secure() {
        let plain = challenges("abc", false, false);
        assert_eq!(
            plain,
            vec![r#"Digest realm="Freshet", nonce="abc", algorithm=MD5, qop="auth""#]
        );
        let tls = challenges("abc", true, true);
        assert!(tls[0].ends_with("stale=TRUE") && tls[1] == r#"Basic realm="Freshet""#);
    }
}
