//! AWS Signature Version 4 (`AWS4-HMAC-SHA256`) verification, and a signer for
//! Freshet's own clients and tests.
//!
//! [`verify`] takes the request head ([`RequestParts`], from `http::request::Parts`),
//! the hex SHA-256 of the body when the caller has read it ([`payload_hash`]), the
//! current time and a [`SecretLookup`], and answers [`Verified`] (who signed, for
//! which region and service, how the payload is covered) or an [`AuthError`] that
//! names the AWS failure. Both forms AWS defines are accepted:
//!
//! - the `Authorization` header (`AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/
//!   kinesis/aws4_request, SignedHeaders=host;x-amz-date, Signature=...`) with
//!   `X-Amz-Date` (or `Date`), within 15 minutes of now either way;
//! - presigned query parameters (`X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`,
//!   `X-Amz-Expires` of 1..=604800 s, `X-Amz-SignedHeaders`, `X-Amz-Signature`), valid
//!   from the signing time until it plus `X-Amz-Expires`.
//!
//! The payload hash in the canonical request is `X-Amz-Content-SHA256` when the client
//! sent it (a hex hash, `UNSIGNED-PAYLOAD`, or a `STREAMING-*` marker, for which the
//! seed signature over the headers is what is checked here), else the caller's hash
//! of the body; a presigned request without it may have signed `UNSIGNED-PAYLOAD` or
//! the body hash, and both are tried. [`Verified::payload`] says which one was used,
//! so a caller that verified before reading the body can check it afterwards.
//!
//! The host header is canonicalised as received: a client that signs
//! `host:127.0.0.1` while connecting to another port (the Kinesis Video producer SDK)
//! verifies, because it also sends that Host.
//!
//! Signatures and session tokens are compared in constant time. The signing key is
//! derived per request (`HMAC("AWS4" + secret, date) -> region -> service ->
//! "aws4_request"`) and dropped after it. Spec: AWS "Signature Version 4 signing
//! process" (Create a canonical request / string to sign / calculate the signature,
//! Authenticating requests: using query parameters), checked against the AWS SigV4
//! test suite (`tests/fixtures/sigv4/`).

use std::fmt;
use std::time::SystemTime;

use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::canonical::{self, QueryParam};
use super::error::AuthError;
use super::timestamp::AmzDate;

/// The only algorithm accepted (SigV4a, `AWS4-ECDSA-P256-SHA256`, is not).
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// How far a header-signed request's time may be from ours, either way.
pub const MAX_CLOCK_SKEW_SECS: i64 = 15 * 60;
/// The longest `X-Amz-Expires` AWS accepts: seven days.
pub const MAX_PRESIGNED_EXPIRES_SECS: u32 = 604_800;
/// `X-Amz-Content-SHA256` for a payload that is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// The hash of an empty body.
pub const EMPTY_PAYLOAD_HASH: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const TERMINATOR: &str = "aws4_request";

/// Hex SHA-256 of a body, as it goes into the canonical request.
pub fn payload_hash(body: &[u8]) -> String {
    hex(&Sha256::digest(body))
}

/// The parts of a request that are signed, as received: the raw path and query
/// (percent-encoded as on the wire, not decoded), and the headers.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    /// The path as sent, e.g. `/getMedia` or `/test/%40connections/abc%3D`.
    pub path: &'a str,
    /// The query string as sent, without '?'; empty when there is none.
    pub query: &'a str,
    /// The request target's authority, used for `host` when no Host header came
    /// (HTTP/2 `:authority`, absolute-form targets).
    pub authority: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

impl<'a> RequestParts<'a> {
    pub fn new(method: &'a http::Method, uri: &'a http::Uri, headers: &'a HeaderMap) -> Self {
        Self {
            method: method.as_str(),
            path: uri.path(),
            query: uri.query().unwrap_or(""),
            authority: uri.authority().map(|a| a.as_str()),
            headers,
        }
    }
}

impl<'a> From<&'a http::request::Parts> for RequestParts<'a> {
    fn from(parts: &'a http::request::Parts) -> Self {
        Self::new(&parts.method, &parts.uri, &parts.headers)
    }
}

/// The secret half of a credential, and the session token that must come with it
/// for temporary credentials. `Debug` never shows either.
#[derive(Clone)]
pub struct Secret {
    secret_access_key: String,
    session_token: Option<String>,
}

impl Secret {
    pub fn new(secret_access_key: impl Into<String>) -> Self {
        Self {
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// Requests signed with this secret must then carry this `X-Amz-Security-Token`.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where secrets come from: `secret_for(access key id)`. Closures
/// `Fn(&str) -> Option<Secret>` implement it.
pub trait SecretLookup {
    fn secret_for(&self, access_key_id: &str) -> Option<Secret>;
}

impl<F: Fn(&str) -> Option<Secret>> SecretLookup for F {
    fn secret_for(&self, access_key_id: &str) -> Option<Secret> {
        self(access_key_id)
    }
}

/// The credential scope the request was signed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialScope {
    /// `YYYYMMDD`, the request's day.
    pub date: String,
    pub region: String,
    /// `kinesis`, `kinesisvideo`, `firehose`, `kinesisanalytics`, `dynamodb`, ...
    pub service: String,
}

impl CredentialScope {
    /// Refuses a request signed for another service than the route's, as AWS does.
    pub fn require_service(&self, expected: &str) -> Result<(), AuthError> {
        if self.service == expected {
            Ok(())
        } else {
            Err(AuthError::scope(format!(
                "Credential should be scoped to correct service: '{expected}'. "
            )))
        }
    }

    /// Refuses a request signed for another region than the server's.
    pub fn require_region(&self, expected: &str) -> Result<(), AuthError> {
        if self.region == expected {
            Ok(())
        } else {
            Err(AuthError::scope(format!(
                "Credential should be scoped to a valid region, not '{}'. ",
                self.region
            )))
        }
    }
}

/// How the request carried its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthForm {
    Header,
    Presigned { expires_in_secs: u32 },
}

/// The `STREAMING-*` payload markers: the body is a sequence of chunks (verified
/// chunk by chunk, not here) after a seed signature over the headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamingPayload {
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`: every chunk signed.
    SignedChunks,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`: signed chunks and trailer.
    SignedChunksWithTrailer,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: unsigned chunks, checksum trailer.
    UnsignedWithTrailer,
}

impl StreamingPayload {
    pub fn from_marker(marker: &str) -> Option<Self> {
        match marker {
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Some(Self::SignedChunks),
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Some(Self::SignedChunksWithTrailer),
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Some(Self::UnsignedWithTrailer),
            _ => None,
        }
    }

    pub fn marker(self) -> &'static str {
        match self {
            Self::SignedChunks => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            Self::SignedChunksWithTrailer => "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            Self::UnsignedWithTrailer => "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        }
    }
}

/// Which payload hash the verified signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadHash {
    /// The caller's hash of the body it read: the body is authenticated.
    Body,
    /// A hex hash declared in `X-Amz-Content-SHA256` while the caller gave no body
    /// hash: the headers are authenticated, the body only once
    /// [`PayloadHash::check_body`] accepts it.
    Declared(String),
    /// `UNSIGNED-PAYLOAD` (declared, or presigned without a payload hash): the body
    /// is not covered by the signature.
    Unsigned,
    /// A `STREAMING-*` marker; `seed_signature` (the one just verified, lowercase hex)
    /// is the first link of the chunk signature chain.
    Streaming {
        kind: StreamingPayload,
        seed_signature: String,
        /// The request's signing key, which signs each chunk
        /// ([`super::chunked::ChunkVerifier`]).
        signing_key: SigningKey,
    },
}

/// A derived SigV4 signing key (`kSigning`): never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey([u8; 32]);

impl SigningKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// The signing key of `secret_access_key` for a day, region and service.
pub fn signing_key_for(
    secret_access_key: &str,
    date: &str,
    region: &str,
    service: &str,
) -> SigningKey {
    SigningKey(signing_key(
        &Secret::new(secret_access_key),
        date,
        region,
        service,
    ))
}

impl PayloadHash {
    /// For [`PayloadHash::Declared`], checks the body read afterwards against the
    /// signed hash; every other variant accepts (streaming chunks are checked by
    /// their own signatures).
    pub fn check_body(&self, body: &[u8]) -> Result<(), AuthError> {
        match self {
            Self::Declared(declared) if !declared.eq_ignore_ascii_case(&payload_hash(body)) => {
                Err(AuthError::ContentSha256Mismatch)
            }
            _ => Ok(()),
        }
    }
}

/// A request whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
    pub scope: CredentialScope,
    /// The request time that was signed (`X-Amz-Date`, or `Date`).
    pub signed_at: AmzDate,
    pub form: AuthForm,
    pub payload: PayloadHash,
    /// Lowercase names of the headers the signature covers, in the client's order.
    pub signed_headers: Vec<String>,
}

impl Verified {
    /// True when `name` (any case) is covered by the signature: e.g. a handler that
    /// dispatches on `X-Amz-Target` can insist that it was signed.
    pub fn is_signed(&self, name: &str) -> bool {
        self.signed_headers
            .iter()
            .any(|signed| signed.eq_ignore_ascii_case(name))
    }

    pub fn require_service(&self, expected: &str) -> Result<(), AuthError> {
        self.scope.require_service(expected)
    }
}

/// Verifies a SigV4-signed request. `body_sha256` is [`payload_hash`] of the body
/// when the caller has read it, `None` when it has not (streaming uploads); without
/// it a header-signed request must declare its payload in `X-Amz-Content-SHA256`.
/// `now` is the server's current time. No I/O; nothing is logged.
pub fn verify<S: SecretLookup + ?Sized>(
    request: &RequestParts<'_>,
    body_sha256: Option<&str>,
    now: SystemTime,
    secrets: &S,
) -> Result<Verified, AuthError> {
    let query = canonical::parse_query(request.query);
    let claim = match request.headers.get(http::header::AUTHORIZATION) {
        Some(value) => parse_authorization(value, request.headers)?,
        None if is_presigned(&query) => parse_presigned(&query)?,
        None => return Err(AuthError::MissingAuthenticationToken),
    };

    let now = AmzDate::from_system_time(now);
    check_time(&claim, now)?;

    if !claim
        .signed_headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("host"))
    {
        return Err(AuthError::incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }

    let secret = secrets
        .secret_for(&claim.access_key_id)
        .ok_or(AuthError::UnrecognizedClient)?;
    check_session_token(&secret, request.headers, &query)?;
    let payload_candidates = payload_candidates(request.headers, &query, claim.form, body_sha256)?;
    let signature = decode_signature(&claim.signature);
    let signing_key = signing_key(&secret, &claim.date, &claim.region, &claim.service);
    let canonical_uri = canonical::canonical_uri(request.path);
    let canonical_headers = canonical::canonical_headers(
        &claim
            .signed_headers
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        request.headers,
        request.authority,
    );
    let signed_headers_line = claim.signed_headers.join(";");
    let scope = format!(
        "{}/{}/{}/{TERMINATOR}",
        claim.date, claim.region, claim.service
    );
    let query_candidates = query_candidates(&query, claim.form);

    // Each (query, payload) the client may have signed, until one matches. Every
    // attempt is a full MAC under the secret's key, so trying a few tells a forger
    // nothing; the comparison itself is constant-time.
    let mut first_attempt: Option<(Vec<u8>, String)> = None;
    let mut matched: Option<&str> = None;
    'search: for canonical_query in &query_candidates {
        for &payload in &payload_candidates {
            let canonical_request = canonical::canonical_request(
                request.method,
                &canonical_uri,
                canonical_query,
                &canonical_headers,
                &signed_headers_line,
                payload,
            );
            let string_to_sign = string_to_sign(claim.signed_at, &scope, &canonical_request);
            let mut mac = hmac_sha256(&signing_key);
            mac.update(string_to_sign.as_bytes());
            if let Some(signature) = &signature
                && mac.verify_slice(signature).is_ok()
            {
                matched = Some(payload);
                break 'search;
            }
            first_attempt.get_or_insert((canonical_request, string_to_sign));
        }
    }
    let Some(payload) = matched else {
        let (canonical_request, string_to_sign) = first_attempt.expect("at least one candidate");
        let token = secret.session_token.as_deref();
        return Err(AuthError::InvalidSignature {
            canonical_request: redact_token(&String::from_utf8_lossy(&canonical_request), token),
            string_to_sign,
        });
    };

    let payload = if payload == UNSIGNED_PAYLOAD {
        PayloadHash::Unsigned
    } else if let Some(kind) = StreamingPayload::from_marker(payload) {
        PayloadHash::Streaming {
            kind,
            seed_signature: claim.signature.to_ascii_lowercase(),
            signing_key: SigningKey(signing_key),
        }
    } else {
        match body_sha256 {
            Some(body) if body.eq_ignore_ascii_case(payload) => PayloadHash::Body,
            Some(_) => return Err(AuthError::ContentSha256Mismatch),
            None => PayloadHash::Declared(payload.to_owned()),
        }
    };

    Ok(Verified {
        access_key_id: claim.access_key_id,
        scope: CredentialScope {
            date: claim.date,
            region: claim.region,
            service: claim.service,
        },
        signed_at: claim.signed_at,
        form: claim.form,
        payload,
        signed_headers: claim
            .signed_headers
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
    })
}

/// A key with a session token (temporary credentials) must come with exactly that
/// `X-Amz-Security-Token` (header, or query for presigned URLs); a key without one
/// must come without.
fn check_session_token(
    secret: &Secret,
    headers: &HeaderMap,
    query: &[QueryParam],
) -> Result<(), AuthError> {
    let presented = headers
        .get("x-amz-security-token")
        .map(|v| v.as_bytes())
        .or_else(|| {
            query
                .iter()
                .find(|p| p.key_is("X-Amz-Security-Token"))
                .map(|p| p.value.as_slice())
        });
    match (&secret.session_token, presented) {
        (None, None) => Ok(()),
        (Some(expected), Some(presented)) if bool::from(expected.as_bytes().ct_eq(presented)) => {
            Ok(())
        }
        _ => Err(AuthError::UnrecognizedClient),
    }
}

/// The payload hashes the client may have signed: the declared
/// `X-Amz-Content-SHA256` (header, or query for presigned URLs); else the body's
/// hash; for presigned URLs also `UNSIGNED-PAYLOAD` (AWS's S3 presigner signs that,
/// botocore's and the CRT's other presigners the body hash).
fn payload_candidates<'a>(
    headers: &'a HeaderMap,
    query: &'a [QueryParam],
    form: AuthForm,
    body_sha256: Option<&'a str>,
) -> Result<Vec<&'a str>, AuthError> {
    let declared = headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .or_else(|| match form {
            AuthForm::Presigned { .. } => query
                .iter()
                .find(|p| p.key_is("X-Amz-Content-SHA256"))
                .and_then(QueryParam::value_str),
            AuthForm::Header => None,
        })
        .map(str::trim);
    Ok(match (declared, form, body_sha256) {
        (Some(declared), ..) => vec![declared],
        (None, AuthForm::Presigned { .. }, Some(body)) => vec![UNSIGNED_PAYLOAD, body],
        (None, AuthForm::Presigned { .. }, None) => vec![UNSIGNED_PAYLOAD],
        (None, AuthForm::Header, Some(body)) => vec![body],
        (None, AuthForm::Header, None) => {
            return Err(AuthError::incomplete(
                "Missing required header for this request: x-amz-content-sha256",
            ));
        }
    })
}

/// The canonical query strings the client may have signed: every parameter but
/// `X-Amz-Signature`; for a presigned URL with a session token also without the
/// token, which some signers append after signing (AWS IoT does; the suite's
/// `post-sts-header-after`).
fn query_candidates(query: &[QueryParam], form: AuthForm) -> Vec<String> {
    let without = |skip: &[Option<usize>]| {
        canonical::canonical_query(
            query
                .iter()
                .enumerate()
                .filter(|(i, _)| !skip.contains(&Some(*i)))
                .map(|(_, p)| p),
        )
    };
    let AuthForm::Presigned { .. } = form else {
        return vec![without(&[])];
    };
    let signature = query.iter().position(|p| p.key_is("X-Amz-Signature"));
    let token = query.iter().position(|p| p.key_is("X-Amz-Security-Token"));
    let mut candidates = vec![without(&[signature])];
    if token.is_some() {
        candidates.push(without(&[signature, token]));
    }
    candidates
}

/// What the request says about its signature, before any checking against a secret.
struct Claim {
    access_key_id: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
    signed_at: AmzDate,
    form: AuthForm,
}

fn is_presigned(query: &[QueryParam]) -> bool {
    query.iter().any(|p| {
        p.key_is("X-Amz-Algorithm") || p.key_is("X-Amz-Credential") || p.key_is("X-Amz-Signature")
    })
}

/// Parses `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` with
/// the request date from `X-Amz-Date` or `Date`, reporting problems in AWS's words.
fn parse_authorization(value: &HeaderValue, headers: &HeaderMap) -> Result<Claim, AuthError> {
    let text = String::from_utf8_lossy(value.as_bytes());
    let text = text.trim();
    let (scheme, params) = text
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((text, ""));

    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    if scheme == ALGORITHM {
        // AWS splits the parameters at commas and at whitespace.
        for piece in params
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|p| !p.is_empty())
        {
            let Some((key, value)) = piece.split_once('=') else {
                return Err(AuthError::incomplete(format!(
                    "'{piece}' not a valid key=value pair (missing equal-sign) in \
                     Authorization header: '{text}'."
                )));
            };
            match key {
                "Credential" => credential = Some(value),
                "SignedHeaders" => signed_headers = Some(value),
                "Signature" => signature = Some(value),
                _ => {}
            }
        }
    }

    let x_amz_date = headers.get("x-amz-date");
    let date_header = || {
        headers
            .get(http::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| AmzDate::parse_http_date(v.trim()))
    };
    let signed_at = match x_amz_date {
        Some(v) => Some(parse_basic_date(&String::from_utf8_lossy(v.as_bytes()))?),
        None => date_header(),
    };

    let mut missing = String::new();
    if credential.is_none() {
        missing.push_str("Authorization header requires 'Credential' parameter. ");
    }
    if signature.is_none() {
        missing.push_str("Authorization header requires 'Signature' parameter. ");
    }
    if signed_headers.is_none() {
        missing.push_str("Authorization header requires 'SignedHeaders' parameter. ");
    }
    if signed_at.is_none() {
        missing.push_str(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
             header. ",
        );
    }
    let (Some(credential), Some(signed_headers), Some(signature), Some(signed_at)) =
        (credential, signed_headers, signature, signed_at)
    else {
        return Err(AuthError::incomplete(format!(
            "{missing}Authorization={text}"
        )));
    };

    claim(
        credential,
        signed_headers,
        signature,
        signed_at,
        AuthForm::Header,
    )
}

/// Parses the presigned query parameters.
fn parse_presigned(query: &[QueryParam]) -> Result<Claim, AuthError> {
    let param = |name: &str| {
        query
            .iter()
            .find(|p| p.key_is(name))
            .map(|p| String::from_utf8_lossy(&p.value).into_owned())
    };
    let (
        Some(algorithm),
        Some(credential),
        Some(signature),
        Some(date),
        Some(signed_headers),
        Some(expires),
    ) = (
        param("X-Amz-Algorithm"),
        param("X-Amz-Credential"),
        param("X-Amz-Signature"),
        param("X-Amz-Date"),
        param("X-Amz-SignedHeaders"),
        param("X-Amz-Expires"),
    )
    else {
        return Err(AuthError::incomplete(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, \
             X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and \
             X-Amz-Expires parameters.",
        ));
    };
    if algorithm != ALGORITHM {
        return Err(AuthError::incomplete(format!(
            "X-Amz-Algorithm only supports \"{ALGORITHM}\""
        )));
    }
    let expires_in_secs = parse_expires(&expires)?;
    let signed_at = parse_basic_date(&date)?;
    claim(
        &credential,
        &signed_headers,
        &signature,
        signed_at,
        AuthForm::Presigned { expires_in_secs },
    )
}

fn parse_expires(text: &str) -> Result<u32, AuthError> {
    let value: i64 = text
        .parse()
        .map_err(|_| AuthError::incomplete("X-Amz-Expires should be a number"))?;
    if value < 0 {
        return Err(AuthError::incomplete("X-Amz-Expires must be non-negative"));
    }
    if value == 0 {
        return Err(AuthError::incomplete(
            "X-Amz-Expires must be at least 1 second",
        ));
    }
    if value > i64::from(MAX_PRESIGNED_EXPIRES_SECS) {
        return Err(AuthError::incomplete(format!(
            "X-Amz-Expires must be less than a week (in seconds) that is \
             {MAX_PRESIGNED_EXPIRES_SECS}"
        )));
    }
    Ok(value as u32)
}

fn parse_basic_date(text: &str) -> Result<AmzDate, AuthError> {
    AmzDate::parse_basic(text.trim()).ok_or_else(|| {
        AuthError::incomplete(format!(
            "Date must be in ISO-8601 'basic format'. Got '{}'. See \
             http://en.wikipedia.org/wiki/ISO_8601",
            text.trim()
        ))
    })
}

/// Splits and checks the credential (`AKID/YYYYMMDD/region/service/aws4_request`,
/// the date being the request's day) and the signed headers list.
fn claim(
    credential: &str,
    signed_headers: &str,
    signature: &str,
    signed_at: AmzDate,
    form: AuthForm,
) -> Result<Claim, AuthError> {
    let elements: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = elements[..] else {
        return Err(AuthError::incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got '{credential}'"
        )));
    };
    if terminator != TERMINATOR {
        return Err(AuthError::scope(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not \
             '{terminator}'. "
        )));
    }
    let day = signed_at.day();
    if date != day {
        return Err(AuthError::scope(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of \
             date from HTTP: '{date}' != '{day}', from '{signed_at}'."
        )));
    }
    Ok(Claim {
        access_key_id: access_key_id.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers: signed_headers
            .split(';')
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect(),
        signature: signature.to_owned(),
        signed_at,
        form,
    })
}

/// The clock-skew window (both forms, for a date in the future; the header form for
/// one in the past) and the presigned expiry.
fn check_time(claim: &Claim, now: AmzDate) -> Result<(), AuthError> {
    let signed_at = claim.signed_at;
    if signed_at > now.plus_secs(MAX_CLOCK_SKEW_SECS) {
        return Err(AuthError::SignatureNotYetCurrent { signed_at, now });
    }
    match claim.form {
        AuthForm::Header if signed_at < now.plus_secs(-MAX_CLOCK_SKEW_SECS) => {
            Err(AuthError::SignatureExpired { signed_at, now })
        }
        AuthForm::Presigned { expires_in_secs }
            if now > signed_at.plus_secs(i64::from(expires_in_secs)) =>
        {
            Err(AuthError::PresignedUrlExpired {
                signed_at,
                expires_in_secs,
                now,
            })
        }
        _ => Ok(()),
    }
}

/// The client's signature as 32 bytes; `None` (never matches) if it is not 64 hex
/// digits.
fn decode_signature(text: &str) -> Option<[u8; 32]> {
    let b = text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = ((hi << 4) | lo) as u8;
    }
    Some(out)
}

/// Replaces the session token (raw, or URI-encoded in a query) by `<redacted>`.
fn redact_token(text: &str, token: Option<&str>) -> String {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return text.to_owned();
    };
    let mut encoded = String::new();
    canonical::uri_encode(token.as_bytes(), false, &mut encoded);
    text.replace(&encoded, "<redacted>")
        .replace(token, "<redacted>")
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length")
}

fn hmac(key: &[u8], data: &str) -> [u8; 32] {
    let mut mac = hmac_sha256(key);
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().into()
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service),
/// "aws4_request")`.
fn signing_key(secret: &Secret, date: &str, region: &str, service: &str) -> [u8; 32] {
    let mut seed = Vec::with_capacity(4 + secret.secret_access_key.len());
    seed.extend_from_slice(b"AWS4");
    seed.extend_from_slice(secret.secret_access_key.as_bytes());
    let k_date = hmac(&seed, date);
    let k_region = hmac(&k_date, region);
    let k_service = hmac(&k_region, service);
    hmac(&k_service, TERMINATOR)
}

fn string_to_sign(signed_at: AmzDate, scope: &str, canonical_request: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{signed_at}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request))
    )
}

fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// Who signs, for what, when: the inputs of [`sign`] and [`presign`].
#[derive(Debug, Clone, Copy)]
pub struct SigningParams<'a> {
    pub access_key_id: &'a str,
    pub secret: &'a Secret,
    pub region: &'a str,
    pub service: &'a str,
    pub time: AmzDate,
}

impl SigningParams<'_> {
    fn scope(&self) -> String {
        format!(
            "{}/{}/{}/{TERMINATOR}",
            self.time.day(),
            self.region,
            self.service
        )
    }

    pub(crate) fn signature(&self, canonical_request: &[u8]) -> String {
        let key = signing_key(self.secret, &self.time.day(), self.region, self.service);
        let string_to_sign = string_to_sign(self.time, &self.scope(), canonical_request);
        hex(&hmac(&key, &string_to_sign))
    }
}

/// Header names to sign: every header present (lowercase, sorted, once each) but
/// `Authorization`.
fn names_to_sign(headers: &HeaderMap) -> Vec<&str> {
    let mut names: Vec<&str> = headers
        .keys()
        .map(|name| name.as_str())
        .filter(|name| *name != "authorization")
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Signs a request in the header form, as AWS's SDKs do: sets `X-Amz-Date` (and
/// `X-Amz-Security-Token` when the secret has one), then `Authorization` over every
/// header present, which must include Host. `path` and `query` are as they will be
/// sent; `payload_hash` is [`payload_hash`] of the body or a marker such as
/// [`UNSIGNED_PAYLOAD`] (then also send it as `X-Amz-Content-SHA256`).
pub fn sign(
    method: &str,
    path: &str,
    query: &str,
    headers: &mut HeaderMap,
    payload_hash: &str,
    params: &SigningParams<'_>,
) {
    headers.remove(http::header::AUTHORIZATION);
    headers.insert(
        "x-amz-date",
        HeaderValue::from_str(&params.time.to_string()).expect("ASCII timestamp"),
    );
    if let Some(token) = &params.secret.session_token {
        let mut value = HeaderValue::from_str(token).expect("session token is a header value");
        value.set_sensitive(true);
        headers.insert("x-amz-security-token", value);
    }
    let names = names_to_sign(headers);
    let canonical_request = canonical::canonical_request(
        method,
        &canonical::canonical_uri(path),
        &canonical::canonical_query(canonical::parse_query(query).iter()),
        &canonical::canonical_headers(&names, headers, None),
        &names.join(";"),
        payload_hash,
    );
    let authorization = format!(
        "{ALGORITHM} Credential={}/{}, SignedHeaders={}, Signature={}",
        params.access_key_id,
        params.scope(),
        names.join(";"),
        params.signature(&canonical_request)
    );
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&authorization).expect("ASCII authorization"),
    );
}

/// Presigns a request: returns `query` with the `X-Amz-*` parameters (the session
/// token included and signed) and `X-Amz-Signature` appended, signing every header in
/// `headers` (at least Host) and `UNSIGNED-PAYLOAD`.
pub fn presign(
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    params: &SigningParams<'_>,
    expires_in_secs: u32,
) -> String {
    let names = names_to_sign(headers);
    let mut auth = vec![
        ("X-Amz-Algorithm", ALGORITHM.to_owned()),
        (
            "X-Amz-Credential",
            format!("{}/{}", params.access_key_id, params.scope()),
        ),
        ("X-Amz-Date", params.time.to_string()),
        ("X-Amz-Expires", expires_in_secs.to_string()),
        ("X-Amz-SignedHeaders", names.join(";")),
    ];
    if let Some(token) = &params.secret.session_token {
        auth.push(("X-Amz-Security-Token", token.clone()));
    }
    let mut full = query.to_owned();
    for (key, value) in &auth {
        if !full.is_empty() {
            full.push('&');
        }
        full.push_str(key);
        full.push('=');
        canonical::uri_encode(value.as_bytes(), false, &mut full);
    }
    let canonical_request = canonical::canonical_request(
        method,
        &canonical::canonical_uri(path),
        &canonical::canonical_query(canonical::parse_query(&full).iter()),
        &canonical::canonical_headers(&names, headers, None),
        &names.join(";"),
        UNSIGNED_PAYLOAD,
    );
    full.push_str("&X-Amz-Signature=");
    full.push_str(&params.signature(&canonical_request));
    full
}
