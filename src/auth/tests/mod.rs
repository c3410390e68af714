//! Tests of the SigV4 verifier: the AWS test suite (`suite`), requests signed by
//! botocore (`botocore`), round trips through our own signer with single mutations
//! (`props`), and the failure cases, time windows and messages (`cases`).

mod botocore;
mod cases;
mod props;
mod suite;

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{AmzDate, Secret};

/// A secret store holding one credential.
pub(super) fn one_key(
    access_key_id: &str,
    secret: &str,
    token: Option<&str>,
) -> impl Fn(&str) -> Option<Secret> {
    let access_key_id = access_key_id.to_owned();
    let mut stored = Secret::new(secret);
    if let Some(token) = token {
        stored = stored.with_session_token(token);
    }
    move |id: &str| (id == access_key_id).then(|| stored.clone())
}

/// `20150830T123600Z` as a `SystemTime`.
pub(super) fn at(basic: &str) -> SystemTime {
    AmzDate::parse_basic(basic)
        .expect("test timestamp")
        .to_system_time()
}

pub(super) fn header_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_bytes(value).expect("header value"),
        );
    }
    headers
}
