//! Requests signed by botocore, the real client (tests/fixtures/sigv4/
//! botocore-vectors.json, written by make-botocore-vectors.py next to it): they verify
//! as sent, and a change of one byte of the body, a signed header, the date or the
//! secret fails with the AWS error that change deserves.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue};
use serde::Deserialize;

use super::super::sigv4::{RequestParts, verify};
use super::super::{AmzDate, AuthError, AuthForm, PayloadHash, Verified, payload_hash};
use super::{header_map, one_key};

const VECTORS: &str = include_str!("../../../tests/fixtures/sigv4/botocore-vectors.json");

#[derive(Deserialize)]
struct File {
    vectors: Vec<Vector>,
}

#[derive(Deserialize, Clone)]
struct Vector {
    name: String,
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body_base64: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    now: String,
}

fn vectors() -> Vec<Vector> {
    let file: File = serde_json::from_str(VECTORS).expect("botocore-vectors.json");
    assert_eq!(file.vectors.len(), 4);
    file.vectors
}

fn vector(name: &str) -> Vector {
    vectors()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vector {name}"))
}

/// A vector as the server would receive it, to be tampered with.
struct Received {
    v: Vector,
    headers: HeaderMap,
    body: Vec<u8>,
    secret: String,
    access_key_id: String,
    token: Option<String>,
    now: AmzDate,
}

impl Received {
    fn new(v: Vector) -> Self {
        let headers = header_map(
            v.headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes())),
        );
        Self {
            body: STANDARD.decode(&v.body_base64).unwrap(),
            secret: v.secret_access_key.clone(),
            access_key_id: v.access_key_id.clone(),
            token: v.session_token.clone(),
            now: AmzDate::parse_basic(&v.now).unwrap(),
            headers,
            v,
        }
    }

    fn named(name: &str) -> Self {
        Self::new(vector(name))
    }

    fn set_header(&mut self, name: &'static str, value: &str) {
        self.headers
            .insert(name, HeaderValue::from_str(value).unwrap());
    }

    fn verify(&self) -> Result<Verified, AuthError> {
        let parts = RequestParts {
            method: &self.v.method,
            path: &self.v.path,
            query: &self.v.query,
            authority: None,
            headers: &self.headers,
        };
        let lookup = one_key(&self.access_key_id, &self.secret, self.token.as_deref());
        verify(
            &parts,
            Some(&payload_hash(&self.body)),
            self.now.to_system_time(),
            &lookup,
        )
    }
}

fn assert_invalid_signature(result: Result<Verified, AuthError>, what: &str) {
    match result {
        Err(AuthError::InvalidSignature { .. }) => {}
        other => panic!("{what}: expected InvalidSignature, got {other:?}"),
    }
}

#[test]
fn botocore_requests_verify() {
    for v in vectors() {
        let name = v.name.clone();
        let verified = Received::new(v)
            .verify()
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(verified.access_key_id, "AKIAFRESHETEXAMPLE01");
        assert_eq!(verified.scope.region, "us-east-1");
        assert_eq!(verified.scope.date, "20260115");
        assert_eq!(verified.signed_at.to_string(), "20260115T102030Z");
        match name.as_str() {
            "kinesis-put-record" | "kinesis-list-streams-session-token" => {
                assert_eq!(verified.scope.service, "kinesis");
                assert!(verified.require_service("kinesis").is_ok());
                assert!(verified.is_signed("X-Amz-Target"));
                assert_eq!(verified.form, AuthForm::Header);
                assert_eq!(verified.payload, PayloadHash::Body);
            }
            "kinesisvideo-create-stream" => {
                assert_eq!(verified.scope.service, "kinesisvideo");
                assert_eq!(verified.payload, PayloadHash::Body);
            }
            "kinesisvideo-presigned-get" => {
                assert_eq!(verified.scope.service, "kinesisvideo");
                assert_eq!(
                    verified.form,
                    AuthForm::Presigned {
                        expires_in_secs: 300
                    }
                );
                // botocore presigns non-S3 requests over the (empty) body's hash,
                // not UNSIGNED-PAYLOAD (only its S3 presigner does that).
                assert_eq!(verified.payload, PayloadHash::Body);
                assert_eq!(verified.signed_headers, ["host"]);
            }
            other => panic!("unexpected vector {other}"),
        }
    }
}

#[test]
fn one_byte_of_the_body_changed() {
    for name in [
        "kinesis-put-record",
        "kinesis-list-streams-session-token",
        "kinesisvideo-create-stream",
    ] {
        let mut r = Received::named(name);
        let last = r.body.len() - 2;
        r.body[last] ^= 0x01;
        assert_invalid_signature(r.verify(), name);
    }
}

#[test]
fn a_signed_header_changed() {
    let mut r = Received::named("kinesis-put-record");
    r.set_header("x-amz-target", "Kinesis_20131202.DeleteStream");
    assert_invalid_signature(r.verify(), "x-amz-target");

    let mut r = Received::named("kinesis-put-record");
    r.set_header("content-type", "application/x-amz-cbor-1.1");
    assert_invalid_signature(r.verify(), "content-type");

    // Headers outside SignedHeaders may change (proxies rewrite User-Agent).
    let mut r = Received::named("kinesis-put-record");
    r.set_header("user-agent", "something else");
    r.set_header("amz-sdk-request", "attempt=2; max=3");
    r.verify().expect("unsigned headers do not matter");
}

#[test]
fn the_host_is_canonicalised_as_received() {
    // botocore signed `host:127.0.0.1` (port 80 left out); the same request with the
    // port spelled out is another request.
    let mut r = Received::named("kinesisvideo-create-stream");
    assert_eq!(r.headers["host"], "127.0.0.1");
    r.verify().expect("host without port");
    r.set_header("host", "127.0.0.1:80");
    assert_invalid_signature(r.verify(), "host with port");

    let mut r = Received::named("kinesis-put-record");
    r.set_header("host", "127.0.0.1");
    assert_invalid_signature(r.verify(), "port dropped");
}

#[test]
fn the_date_changed() {
    let mut r = Received::named("kinesis-put-record");
    r.set_header("x-amz-date", "20260115T102031Z");
    assert_invalid_signature(r.verify(), "date + 1 s");

    let mut r = Received::named("kinesis-put-record");
    r.set_header("x-amz-date", "20260116T102030Z");
    let err = r.verify().unwrap_err();
    assert_eq!(err.aws_type(), "InvalidSignatureException");
    assert_eq!(
        err.to_string(),
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
         from HTTP: '20260115' != '20260116', from '20260116T102030Z'."
    );
}

#[test]
fn the_secret_or_the_key_changed() {
    for v in vectors() {
        let name = v.name.clone();
        let mut r = Received::new(v.clone());
        r.secret.push('x');
        assert_invalid_signature(r.verify(), &name);

        let mut r = Received::new(v);
        r.access_key_id = "AKIAOTHER".into();
        assert_eq!(
            r.verify().unwrap_err(),
            AuthError::UnrecognizedClient,
            "{name}"
        );
    }
}

#[test]
fn the_session_token_changed() {
    let mut r = Received::named("kinesis-list-streams-session-token");
    r.token = Some("another token".into());
    assert_eq!(r.verify().unwrap_err(), AuthError::UnrecognizedClient);

    // The key has no token any more (the temporary credential was revoked).
    let mut r = Received::named("kinesis-list-streams-session-token");
    r.token = None;
    assert_eq!(r.verify().unwrap_err(), AuthError::UnrecognizedClient);

    // A long-term key used with a token it does not have.
    let mut r = Received::named("kinesis-put-record");
    r.token = Some("FQoGZXIvYXdzEXAMPLE//+session/token==".into());
    assert_eq!(r.verify().unwrap_err(), AuthError::UnrecognizedClient);
}

#[test]
fn presigned_url_tampered_or_expired() {
    let mut r = Received::named("kinesisvideo-presigned-get");
    r.v.query =
        r.v.query
            .replacen("SessionToken=CiAbc", "SessionToken=CiAbd", 1);
    assert_invalid_signature(r.verify(), "query value");

    let mut r = Received::named("kinesisvideo-presigned-get");
    r.v.path = "/getDASHManifest.mpd".into();
    assert_invalid_signature(r.verify(), "path");

    let mut r = Received::named("kinesisvideo-presigned-get");
    r.v.method = "POST".into();
    assert_invalid_signature(r.verify(), "method");

    let mut r = Received::named("kinesisvideo-presigned-get");
    r.now = r.now.plus_secs(300);
    r.verify().expect("valid for its last second");
    r.now = r.now.plus_secs(1);
    let err = r.verify().unwrap_err();
    assert_eq!(
        err,
        AuthError::PresignedUrlExpired {
            signed_at: AmzDate::parse_basic("20260115T102030Z").unwrap(),
            expires_in_secs: 300,
            now: AmzDate::parse_basic("20260115T102531Z").unwrap(),
        }
    );
    assert_eq!(err.to_string(), "Request has expired");
}

#[test]
fn the_route_expects_another_service() {
    let verified = Received::named("kinesis-put-record").verify().unwrap();
    let err = verified.require_service("kinesisvideo").unwrap_err();
    assert_eq!(err.aws_type(), "InvalidSignatureException");
    assert_eq!(
        err.to_string(),
        "Credential should be scoped to correct service: 'kinesisvideo'. "
    );
    let err = verified.scope.require_region("eu-west-1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "Credential should be scoped to a valid region, not 'us-east-1'. "
    );
}

#[test]
fn too_late_for_the_header_form() {
    let mut r = Received::named("kinesis-put-record");
    r.now = r.now.plus_secs(15 * 60);
    r.verify().expect("15 minutes late is still fine");
    r.now = r.now.plus_secs(1);
    let err = r.verify().unwrap_err();
    assert_eq!(
        err.to_string(),
        "Signature expired: 20260115T102030Z is now earlier than 20260115T102031Z \
         (20260115T103531Z - 15 min.)"
    );
}
