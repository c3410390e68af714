//! Fuzzes the authentication parsers (`freshet::auth`): the signed chunked payload
//! decoder (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`), SigV4 verification of hostile
//! `Authorization` headers and presigned query strings, and RTSP Digest / Basic
//! authentication of hostile `Authorization` values. Nothing may panic, and the
//! chunk decoder must give the same outcome (and release the same verified bytes)
//! whether the body arrives whole or in pieces of any size.
//!
//! Input layout: byte 0 is the piece size minus one; the rest is the chunked body and,
//! read as text, the `Authorization` header and the query string (split at the first
//! `?`).

#![no_main]

use freshet::auth::digest::{self, NonceKey, RtspRequest};
use freshet::auth::sigv4::signing_key_for;
use freshet::auth::{AccessKey, ChunkVerifier, Keyring, RequestParts, verify};
use http::{HeaderMap, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";

fn decode(body: &[u8], piece: usize) -> (bool, Vec<u8>) {
    let key = signing_key_for("secret", "20250101", "us-east-1", "kinesisvideo");
    let mut v = ChunkVerifier::new(
        key,
        "20250101T000000Z",
        "20250101/us-east-1/kinesisvideo/aws4_request",
        SEED,
    );
    let mut out = Vec::new();
    let mut result = Ok(());
    for part in body.chunks(piece.max(1)) {
        result = v.push(part, &mut out);
        if result.is_err() {
            break;
        }
    }
    let ok = result.and_then(|()| v.finish()).is_ok();
    (ok, out.concat())
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    let whole = decode(rest, rest.len());
    let pieces = decode(rest, usize::from(piece) + 1);
    assert_eq!(whole, pieces);

    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (authorization, query) = text.split_once('?').unwrap_or((text, ""));
    let Ok(uri) = format!("http://localhost/?{query}").parse::<Uri>() else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("localhost"));
    headers.insert("x-amz-date", HeaderValue::from_static("20250101T000000Z"));
    if let Ok(v) = HeaderValue::from_str(authorization) {
        headers.insert("authorization", v);
    }
    let keys =
        Keyring::new(vec![AccessKey::new("AKID", "secret", vec![], vec![])]).expect("one key");
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_735_689_600);
    let method = Method::POST;
    let parts = RequestParts::new(&method, &uri, &headers);
    let _ = verify(&parts, None, now, &keys);
    let _ = verify(&parts, Some(SEED), now, &keys);

    let nonces = NonceKey::from_bytes([7; 32]);
    let nonce = nonces.issue(1_735_689_600);
    for secure in [false, true] {
        let request = RtspRequest {
            authorization: Some(authorization),
            method: "ANNOUNCE",
            uri: "rtsp://localhost/cam",
            secure,
            session_nonce: Some(&nonce),
        };
        let _ = digest::authenticate(&keys, &nonces, request, 1_735_689_600);
    }
    let _ = nonces.check(query, 1_735_689_600);
});
