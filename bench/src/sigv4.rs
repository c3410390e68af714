//! AWS Signature Version 4 for the JSON-protocol `POST /` requests Kinesis uses, and
//! for the body-less S3 requests (`GET`/`PUT` of a path and a query) with which the
//! delivery benchmark reads a bucket back.
//!
//! Only the subset the load generator needs: for `POST /`, empty query string and the
//! four signed headers `content-type;host;x-amz-date;x-amz-target`; for S3,
//! `host;x-amz-content-sha256;x-amz-date` over an empty payload.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

type HmacSha256 = Hmac<Sha256>;

/// The headers that are signed, already in canonical (sorted) order.
pub const SIGNED_HEADERS: &str = "content-type;host;x-amz-date;x-amz-target";

/// Credentials and scope used to sign requests.
#[derive(Clone, Debug)]
pub struct Signer {
    access_key: String,
    secret_key: String,
    region: String,
    service: String,
}

impl Signer {
    pub fn new(access_key: &str, secret_key: &str, region: &str, service: &str) -> Self {
        Signer {
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            region: region.to_string(),
            service: service.to_string(),
        }
    }

    /// Returns the `Authorization` header value for a `POST /` request.
    ///
    /// `amz_date` is the `X-Amz-Date` value (`YYYYMMDDTHHMMSSZ`), `host` the
    /// `Host` header exactly as sent, `target` the `X-Amz-Target` value.
    pub fn authorization(
        &self,
        host: &str,
        content_type: &str,
        amz_date: &str,
        target: &str,
        body: &[u8],
    ) -> String {
        let canonical_request = format!(
            "POST\n/\n\ncontent-type:{content_type}\nhost:{host}\nx-amz-date:{amz_date}\nx-amz-target:{target}\n\n{SIGNED_HEADERS}\n{}",
            hex(&Sha256::digest(body))
        );
        self.sign(amz_date, &canonical_request, SIGNED_HEADERS)
    }
}

/// SHA-256 of the empty payload, the `x-amz-content-sha256` of a body-less request.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

impl Signer {
    /// The `Authorization` header of a body-less S3 request: `path` as sent
    /// (already percent-encoded, S3 does not encode it again), `query` as sent
    /// (`a=1&b=2`, values already encoded; sorted here), with the headers `Host`,
    /// `X-Amz-Date` and `X-Amz-Content-Sha256: EMPTY_SHA256`.
    pub fn authorization_s3(
        &self,
        method: &str,
        host: &str,
        path: &str,
        query: &str,
        amz_date: &str,
    ) -> String {
        let mut params: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                if p.contains('=') {
                    p.to_string()
                } else {
                    format!("{p}=")
                }
            })
            .collect();
        params.sort();
        let signed = "host;x-amz-content-sha256;x-amz-date";
        let canonical_request = format!(
            "{method}\n{path}\n{}\nhost:{host}\nx-amz-content-sha256:{EMPTY_SHA256}\nx-amz-date:{amz_date}\n\n{signed}\n{EMPTY_SHA256}",
            params.join("&")
        );
        self.sign(amz_date, &canonical_request, signed)
    }

    fn sign(&self, amz_date: &str, canonical_request: &str, signed_headers: &str) -> String {
        let date = &amz_date[..8];
        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let k_date = hmac(
            format!("AWS4{}", self.secret_key).as_bytes(),
            date.as_bytes(),
        );
        let k_region = hmac(&k_date, self.region.as_bytes());
        let k_service = hmac(&k_region, self.service.as_bytes());
        let k_signing = hmac(&k_service, b"aws4_request");
        let signature = hex(&hmac(&k_signing, string_to_sign.as_bytes()));
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key
        )
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Lower-case hexadecimal encoding.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The current time formatted as an `X-Amz-Date` value.
pub fn amz_date_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    amz_date(secs)
}

/// Formats seconds since the Unix epoch as `YYYYMMDDTHHMMSSZ` (UTC).
pub fn amz_date(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-since-epoch to proleptic Gregorian date conversion.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(1_704_164_645), "20240102T030405Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
    }

    /// Reference value from botocore's `SigV4Auth` (canonical_request, string_to_sign,
    /// signature with `context["timestamp"]` fixed) for the same request.
    #[test]
    fn matches_botocore() {
        let signer = Signer::new("AKIDEXAMPLE", "secret", "us-east-1", "kinesis");
        let auth = signer.authorization(
            "127.0.0.1:4567",
            "application/x-amz-json-1.1",
            "20240102T030405Z",
            "Kinesis_20131202.CreateStream",
            br#"{"StreamName":"s","ShardCount":4}"#,
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240102/us-east-1/kinesis/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-target, \
             Signature=e543f4d270ea4f8b07dabcc3e71895855077e53d2ab3d8953e304f7e986bd6e1"
        );
    }
}
