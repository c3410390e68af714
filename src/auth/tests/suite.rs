//! The AWS SigV4 test suite (tests/fixtures/sigv4/aws-sig-v4-test-suite, see its
//! README): every vector's header-signed and presigned request must verify at the
//! vector's time with its credentials, and our canonical request and string to sign
//! must be the suite's, byte for byte.

use std::fs;
use std::path::{Path, PathBuf};

use http::HeaderMap;

use super::super::canonical;
use super::super::sigv4::{RequestParts, verify};
use super::super::{AuthError, AuthForm, PayloadHash, payload_hash};
use super::{at, header_map, one_key};

const SUITE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/sigv4/aws-sig-v4-test-suite"
);

/// The vectors with a context.json: all but the two path-encoding extras.
const VECTOR_COUNT: usize = 30;

struct Context {
    access_key_id: String,
    secret: String,
    token: Option<String>,
    region: String,
    service: String,
    /// `20150830T123600Z`
    timestamp: String,
    expires: u32,
}

fn context(dir: &Path) -> Context {
    let text = fs::read_to_string(dir.join("context.json")).expect("context.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("context json");
    let s = |pointer: &str| {
        v.pointer(pointer)
            .and_then(|x| x.as_str())
            .map(str::to_owned)
    };
    Context {
        access_key_id: s("/credentials/access_key_id").unwrap(),
        secret: s("/credentials/secret_access_key").unwrap(),
        token: s("/credentials/token"),
        region: s("/region").unwrap(),
        service: s("/service").unwrap(),
        timestamp: s("/timestamp").unwrap().replace(['-', ':'], ""),
        expires: v["expiration_in_seconds"].as_u64().unwrap() as u32,
    }
}

/// An HTTP/1.1 request as the suite writes it: request line, `Name:value` lines, a
/// blank line, the body.
struct RawRequest {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl RawRequest {
    fn read(path: &Path) -> Self {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let (head, body) = text.split_once("\n\n").unwrap_or((text.trim_end(), ""));
        let mut lines = head.lines();
        let request_line = lines.next().expect("request line");
        let (method, rest) = request_line.split_once(' ').expect("method");
        let (target, _version) = rest.rsplit_once(' ').expect("HTTP version");
        let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().expect("continued header");
                last.1.push(b'\n');
                last.1.extend_from_slice(line.as_bytes());
                continue;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.to_owned(), value.as_bytes().to_vec()));
        }
        Self {
            method: method.to_owned(),
            target: target.to_owned(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    }

    fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    fn header_map(&self) -> HeaderMap {
        header_map(
            self.headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice())),
        )
    }
}

fn vector_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(SUITE)
        .expect("suite directory")
        .map(|entry| entry.unwrap().path())
        .filter(|dir| dir.join("context.json").exists())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), VECTOR_COUNT, "vectors in {SUITE}");
    dirs
}

fn name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{dir:?}/{file}: {e}"))
}

/// Verifies `file` (a signed request) of the vector in `dir`.
fn verify_file(
    dir: &Path,
    file: &str,
    secret: Option<&str>,
) -> Result<super::super::Verified, AuthError> {
    let ctx = context(dir);
    let request = RawRequest::read(&dir.join(file));
    let headers = request.header_map();
    let parts = RequestParts {
        method: &request.method,
        path: request.path(),
        query: request.query(),
        authority: None,
        headers: &headers,
    };
    let body_hash = payload_hash(&request.body);
    let lookup = one_key(
        &ctx.access_key_id,
        secret.unwrap_or(&ctx.secret),
        ctx.token.as_deref(),
    );
    verify(&parts, Some(&body_hash), at(&ctx.timestamp), &lookup)
}

#[test]
fn header_signed_requests_verify() {
    let mut failures = Vec::new();
    for dir in vector_dirs() {
        let ctx = context(&dir);
        match verify_file(&dir, "header-signed-request.txt", None) {
            Ok(v) => {
                assert_eq!(v.access_key_id, ctx.access_key_id);
                assert_eq!(v.scope.region, ctx.region);
                assert_eq!(v.scope.service, ctx.service);
                assert_eq!(v.scope.date, "20150830");
                assert_eq!(v.form, AuthForm::Header);
                assert_eq!(v.payload, PayloadHash::Body, "{}", name(&dir));
            }
            Err(e) => failures.push(format!("{}: {e:?}", name(&dir))),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn presigned_requests_verify() {
    let mut failures = Vec::new();
    for dir in vector_dirs() {
        let ctx = context(&dir);
        match verify_file(&dir, "query-signed-request.txt", None) {
            Ok(v) => {
                assert_eq!(v.access_key_id, ctx.access_key_id);
                assert_eq!(
                    v.form,
                    AuthForm::Presigned {
                        expires_in_secs: ctx.expires
                    }
                );
                // The suite's signer hashes the (usually empty) body rather than
                // signing UNSIGNED-PAYLOAD.
                assert_eq!(v.payload, PayloadHash::Body, "{}", name(&dir));
            }
            Err(e) => failures.push(format!("{}: {e:?}", name(&dir))),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// With a wrong secret the verifier reports what it computed: that must be the suite's
/// canonical request and string to sign (session tokens redacted on both sides).
#[test]
fn canonical_request_and_string_to_sign_match() {
    for dir in vector_dirs() {
        let ctx = context(&dir);
        let err = verify_file(&dir, "header-signed-request.txt", Some("not the secret"))
            .expect_err("wrong secret");
        let AuthError::InvalidSignature {
            canonical_request,
            string_to_sign,
        } = err
        else {
            panic!("{}: {err:?}", name(&dir));
        };
        let mut expected = read(&dir, "header-canonical-request.txt");
        if let Some(token) = &ctx.token {
            expected = expected.replace(token.as_str(), "<redacted>");
        }
        assert_eq!(canonical_request, expected, "{}", name(&dir));
        assert_eq!(
            string_to_sign,
            read(&dir, "header-string-to-sign.txt"),
            "{}",
            name(&dir)
        );
    }
}

/// A one-character change to a suite request breaks its signature.
#[test]
fn tampered_vectors_fail() {
    for dir in vector_dirs() {
        let ctx = context(&dir);
        let request = RawRequest::read(&dir.join("header-signed-request.txt"));
        let headers = request.header_map();
        let path = format!("{}x", request.path());
        let parts = RequestParts {
            method: &request.method,
            path: &path,
            query: request.query(),
            authority: None,
            headers: &headers,
        };
        let lookup = one_key(&ctx.access_key_id, &ctx.secret, ctx.token.as_deref());
        let err = verify(
            &parts,
            Some(&payload_hash(&request.body)),
            at(&ctx.timestamp),
            &lookup,
        )
        .expect_err("tampered path");
        assert!(
            matches!(err, AuthError::InvalidSignature { .. }),
            "{}: {err:?}",
            name(&dir)
        );
    }
}

/// The two path-encoding cases AWS's Rust SDK adds to the suite (no context.json):
/// the canonical URI of the request path.
#[test]
fn double_encoded_paths() {
    for vector in ["double-encode-path", "double-url-encode"] {
        let dir = Path::new(SUITE).join(vector);
        let request = RawRequest::read(&dir.join("request.txt"));
        let expected = read(&dir, "header-canonical-request.txt");
        let expected_uri = expected.lines().nth(1).unwrap();
        assert_eq!(
            canonical::canonical_uri(request.path()),
            expected_uri,
            "{vector}"
        );
    }
}
