//! Signed chunked payloads (`X-Amz-Content-SHA256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD`):
//! the body is a chain of chunks, each
//! `hex-size;chunk-signature=<64 hex>\r\n<size bytes>\r\n`, ending with a chunk of size
//! 0, and each chunk's signature is
//! `HMAC(signing key, "AWS4-HMAC-SHA256-PAYLOAD\n" + timestamp + "\n" + scope + "\n" +
//! previous signature + "\n" + SHA256("") + "\n" + SHA256(chunk))`, the first
//! "previous" being the request's (seed) signature.
//!
//! [`ChunkVerifier`] takes the wire bytes in any pieces and gives back only payload
//! bytes whose chunk signature has been checked, so nothing unauthenticated reaches a
//! handler. A chunk is held until it is whole: chunks larger than
//! [`MAX_CHUNK_BYTES`] are refused, which bounds what one connection can make us hold.
//!
//! Spec: AWS S3 API Reference, "Signature Calculations for the Authorization Header:
//! Transferring Payload in Multiple Chunks (Chunked Upload)"; checked against its
//! published example (`tests`). Pure: no I/O, no clock; secrets never in errors.

use bytes::{Buf, Bytes, BytesMut};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::AuthError;
use super::sigv4::{PayloadHash, SigningKey, StreamingPayload, Verified};

/// The largest chunk accepted (SDKs send 64 KiB or 128 KiB chunks).
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
/// The longest chunk header line (`size;chunk-signature=...`).
const MAX_HEADER_LINE: usize = 256;
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Checks the chunks of one signed streaming body.
pub struct ChunkVerifier {
    key: SigningKey,
    /// `timestamp\nscope\n`, the fixed middle of every chunk's string to sign.
    context: String,
    previous: String,
    buf: BytesMut,
    /// The chunk whose header has been read: (size, claimed signature).
    current: Option<(usize, String)>,
    chunks: u64,
    done: bool,
}

impl std::fmt::Debug for ChunkVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkVerifier")
            .field("chunks", &self.chunks)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ChunkVerifier {
    /// The verifier for a request whose headers signed a streaming payload; `None`
    /// when its payload is not streamed. Trailer variants are refused.
    pub fn for_request(verified: &Verified) -> Result<Option<Self>, AuthError> {
        let PayloadHash::Streaming {
            kind,
            seed_signature,
            signing_key,
        } = &verified.payload
        else {
            return Ok(None);
        };
        if *kind != StreamingPayload::SignedChunks {
            return Err(AuthError::incomplete(format!(
                "{} is not supported; sign the chunks with STREAMING-AWS4-HMAC-SHA256-PAYLOAD \
                 or the whole payload.",
                kind.marker()
            )));
        }
        let scope = &verified.scope;
        Ok(Some(Self::new(
            signing_key.clone(),
            &verified.signed_at.to_string(),
            &format!(
                "{}/{}/{}/aws4_request",
                scope.date, scope.region, scope.service
            ),
            seed_signature,
        )))
    }

    /// A verifier from its parts: the request's signing key, its `X-Amz-Date`, its
    /// credential scope and its (seed) signature.
    pub fn new(key: SigningKey, timestamp: &str, scope: &str, seed_signature: &str) -> Self {
        Self {
            key,
            context: format!("{timestamp}\n{scope}\n"),
            previous: seed_signature.to_ascii_lowercase(),
            buf: BytesMut::new(),
            current: None,
            chunks: 0,
            done: false,
        }
    }

    /// Whether the final (empty) chunk has been verified.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes the next wire bytes; appends to `out` the payload of every chunk they
    /// complete, once its signature checks.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<Bytes>) -> Result<(), AuthError> {
        while !data.is_empty() {
            if self.done {
                return Err(malformed("data after the final chunk"));
            }
            let want = match &self.current {
                None => MAX_HEADER_LINE + 2,
                Some((size, _)) => size + 2,
            };
            let take = want.saturating_sub(self.buf.len()).min(data.len());
            // Headers are short: take only what can still be header, then look for CRLF.
            let take = if self.current.is_none() {
                take.max(1)
            } else {
                take
            };
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            self.advance(out)?;
        }
        Ok(())
    }

    /// At the end of the body: refuses a body whose final chunk never came.
    pub fn finish(&self) -> Result<(), AuthError> {
        if self.done {
            Ok(())
        } else {
            Err(malformed("the body ended before its final chunk"))
        }
    }

    fn advance(&mut self, out: &mut Vec<Bytes>) -> Result<(), AuthError> {
        loop {
            match &self.current {
                None => {
                    let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                        if self.buf.len() > MAX_HEADER_LINE {
                            return Err(malformed("a chunk header is too long"));
                        }
                        return Ok(());
                    };
                    let line = self.buf.split_to(end + 2);
                    self.current = Some(parse_header(&line[..end])?);
                }
                Some((size, claimed)) => {
                    if self.buf.len() < size + 2 {
                        return Ok(());
                    }
                    let (size, claimed) = (*size, claimed.clone());
                    let chunk = self.buf.split_to(size).freeze();
                    if &self.buf[..2] != b"\r\n" {
                        return Err(malformed("a chunk does not end with CRLF"));
                    }
                    self.buf.advance(2);
                    self.verify(&chunk, &claimed)?;
                    self.current = None;
                    self.chunks += 1;
                    if size == 0 {
                        self.done = true;
                        if !self.buf.is_empty() {
                            return Err(malformed("data after the final chunk"));
                        }
                        return Ok(());
                    }
                    out.push(chunk);
                }
            }
        }
    }

    fn verify(&mut self, chunk: &[u8], claimed: &str) -> Result<(), AuthError> {
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}{}\n{EMPTY_SHA256}\n{}",
            self.context,
            self.previous,
            hex(&Sha256::digest(chunk))
        );
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.key.as_bytes())
            .expect("HMAC takes any key length");
        mac.update(string_to_sign.as_bytes());
        let Some(claimed_bytes) = unhex(claimed) else {
            return Err(malformed("a chunk signature is not 64 hex digits"));
        };
        if mac.verify_slice(&claimed_bytes).is_err() {
            return Err(AuthError::ChunkSignatureMismatch { chunk: self.chunks });
        }
        self.previous = claimed.to_ascii_lowercase();
        Ok(())
    }
}

/// `hex-size;chunk-signature=<sig>` into (size, sig).
fn parse_header(line: &[u8]) -> Result<(usize, String), AuthError> {
    let line = std::str::from_utf8(line).map_err(|_| malformed("a chunk header is not text"))?;
    let (size, ext) = line
        .split_once(';')
        .ok_or_else(|| malformed("a chunk header has no chunk-signature"))?;
    let signature = ext
        .strip_prefix("chunk-signature=")
        .ok_or_else(|| malformed("a chunk header has no chunk-signature"))?;
    if size.is_empty() || size.len() > 8 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("a chunk size is not a hex number"));
    }
    let size = usize::from_str_radix(size, 16).map_err(|_| malformed("bad chunk size"))?;
    if size > MAX_CHUNK_BYTES {
        return Err(malformed(&format!(
            "a chunk of {size} bytes is larger than the {MAX_CHUNK_BYTES} accepted"
        )));
    }
    Ok((size, signature.to_string()))
}

fn malformed(what: &str) -> AuthError {
    AuthError::incomplete(format!("Malformed signed chunked payload: {what}."))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sigv4::signing_key_for;

    // AWS's published example: 66,560 bytes of 'a' in chunks of 65,536 and 1,024 and
    // the final empty one, PUT to S3 with these credentials and seed signature.
    const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
    const SIGS: [&str; 3] = [
        "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
        "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
        "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
    ];

    fn verifier() -> ChunkVerifier {
        let key = signing_key_for(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "20130524",
            "us-east-1",
            "s3",
        );
        ChunkVerifier::new(
            key,
            "20130524T000000Z",
            "20130524/us-east-1/s3/aws4_request",
            SEED,
        )
    }

    fn example_body(corrupt: bool) -> Vec<u8> {
        let mut body = Vec::new();
        for (size, sig) in [65536usize, 1024, 0].into_iter().zip(SIGS) {
            body.extend_from_slice(format!("{size:x};chunk-signature={sig}\r\n").as_bytes());
            let mut data = vec![b'a'; size];
            if corrupt && size == 1024 {
                data[10] = b'b';
            }
            body.extend_from_slice(&data);
            body.extend_from_slice(b"\r\n");
        }
        body
    }

    fn decode(body: &[u8], piece: usize) -> Result<Vec<u8>, AuthError> {
        let mut v = verifier();
        let mut out = Vec::new();
        for part in body.chunks(piece) {
            v.push(part, &mut out)?;
        }
        v.finish()?;
        Ok(out.concat())
    }

    #[test]
    fn aws_published_example_decodes_in_any_pieces() {
        let body = example_body(false);
        for piece in [1, 7, 100, 4096, 65_600, body.len()] {
            assert_eq!(decode(&body, piece).unwrap(), vec![b'a'; 66_560], "{piece}");
        }
    }

    #[test]
    fn a_changed_byte_fails_its_chunk_and_nothing_of_it_is_released() {
        let body = example_body(true);
        let mut v = verifier();
        let mut out = Vec::new();
        let err = v.push(&body, &mut out).unwrap_err();
        assert_eq!(err, AuthError::ChunkSignatureMismatch { chunk: 1 });
        assert_eq!(err.aws_type(), "InvalidSignatureException");
        // Only the first (good) chunk came out.
        assert_eq!(out.concat().len(), 65_536);
    }

    #[test]
    fn chunks_out_of_order_or_missing_fail() {
        let body = example_body(false);
        // Drop the first chunk: the second's signature no longer chains from the seed.
        let first_chunk = 88 + 65_536 + 2;
        assert!(matches!(
            decode(&body[first_chunk..], 512),
            Err(AuthError::ChunkSignatureMismatch { chunk: 0 })
        ));
        // Truncated before the final chunk.
        let cut = body.len() - 90;
        assert!(matches!(
            decode(&body[..cut], 1000),
            Err(AuthError::IncompleteSignature { .. })
        ));
    }

    #[test]
    fn malformed_framing_is_refused() {
        for bad in [
            &b"zz;chunk-signature=00\r\n"[..],
            b"10\r\n",
            b"10;chunk-signature=nothex\r\n0123456789abcdef\r\n",
            b"200000;chunk-signature=0000000000000000000000000000000000000000000000000000000000000000\r\n",
            &[b'1'; 400],
        ] {
            let mut v = verifier();
            let mut out = Vec::new();
            let r = v.push(bad, &mut out).and_then(|_| v.finish());
            assert!(r.is_err(), "{:?}", String::from_utf8_lossy(bad));
            assert!(out.is_empty());
        }
        // Data after the final chunk.
        let mut body = example_body(false);
        body.extend_from_slice(b"extra");
        assert!(decode(&body, 70_000).is_err());
    }
}
