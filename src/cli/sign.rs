//! Signs the CLI's requests with AWS Signature Version 4 when credentials are in the
//! environment, read as the AWS CLI reads them: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`, and `AWS_REGION` or
//! `AWS_DEFAULT_REGION` (default `us-east-1`). Without them requests go unsigned,
//! which a server without keys accepts. Signing is `crate::auth::sign`, the signer
//! the server's verifier is tested against.

use anyhow::Context;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::auth::{AmzDate, Secret, SigningParams, payload_hash, sign};

/// The credentials in the environment, if any.
fn credentials() -> Option<(String, Secret, String)> {
    let id = std::env::var("AWS_ACCESS_KEY_ID")
        .ok()
        .filter(|v| !v.is_empty())?;
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").ok()?;
    let mut secret = Secret::new(secret);
    if let Ok(token) = std::env::var("AWS_SESSION_TOKEN")
        && !token.is_empty()
    {
        secret = secret.with_session_token(token);
    }
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".into());
    Some((id, secret, region))
}

/// The headers to add to sign a request to `url` for `service` (`kinesis`,
/// `kinesisvideo`): X-Amz-Date, Authorization (and the session token), over Host and
/// `headers`, which the caller sends itself; `body` is hashed (`None`: a streamed body, signed as empty, as the
/// producer SDKs sign PutMedia). Empty when no credentials are set.
pub fn signed_headers(
    method: &str,
    url: &str,
    service: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<Vec<(HeaderName, HeaderValue)>> {
    let Some((id, secret, region)) = credentials() else {
        return Ok(Vec::new());
    };
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let host = uri
        .authority()
        .context("the endpoint has no host")?
        .as_str();
    let mut map = HeaderMap::new();
    map.insert(http::header::HOST, HeaderValue::from_str(host)?);
    for (name, value) in headers {
        map.insert(
            HeaderName::from_bytes(name.as_bytes())?,
            HeaderValue::from_str(value)?,
        );
    }
    let params = SigningParams {
        access_key_id: &id,
        secret: &secret,
        region: &region,
        service,
        time: AmzDate::from_system_time(std::time::SystemTime::now()),
    };
    let hash = payload_hash(body.unwrap_or_default());
    sign(
        method,
        uri.path(),
        uri.query().unwrap_or(""),
        &mut map,
        &hash,
        &params,
    );
    // Only what signing added: the caller sends Host (its HTTP client does) and
    // `headers` itself.
    Ok(map
        .into_iter()
        .filter_map(|(name, value)| Some((name?, value)))
        .filter(|(name, _)| {
            name != http::header::HOST
                && !headers
                    .iter()
                    .any(|(h, _)| name.as_str().eq_ignore_ascii_case(h))
        })
        .collect())
}

/// Adds the signature headers to a reqwest request.
pub fn sign_reqwest(
    req: reqwest::RequestBuilder,
    method: &str,
    url: &str,
    service: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<reqwest::RequestBuilder> {
    let mut req = req;
    for (name, value) in signed_headers(method, url, service, headers, Some(body))? {
        req = req.header(name, value);
    }
    Ok(req)
}
