//! Property tests: any request our signer signs verifies, and any single change to
//! its method, path, query, a signed header, the body or the date makes it fail.

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::super::sigv4::{RequestParts, SigningParams, presign, sign, verify};
use super::super::{AmzDate, AuthError, AuthForm, PayloadHash, Secret, Verified, payload_hash};
use super::one_key;

const AKID: &str = "AKIDPROPTEST";
const SECRET: &str = "prop/secret+KEY/EXAMPLE";
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

#[derive(Debug, Clone)]
struct Request {
    method: usize,
    host: String,
    path: String,
    query: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    time: AmzDate,
}

fn request() -> impl Strategy<Value = Request> {
    (
        0..METHODS.len(),
        "[a-z0-9.-]{1,12}(:[0-9]{1,5})?",
        prop::collection::vec("[a-zA-Z0-9._~ %@:=+-]{0,6}", 0..4),
        prop::collection::vec(
            ("[a-zA-Z0-9._~%+ /-]{1,5}", "[a-zA-Z0-9._~%+ /=-]{0,5}"),
            0..4,
        ),
        prop::collection::vec(
            (
                prop::sample::select(vec!["content-type", "x-amz-target", "x-custom", "x-other"]),
                "[ -~]{0,12}",
            ),
            0..4,
        ),
        prop::collection::vec(any::<u8>(), 0..64),
        0i64..4_000_000_000,
    )
        .prop_map(
            |(method, host, segments, query, headers, body, secs)| Request {
                method,
                host,
                path: format!("/{}", segments.join("/")),
                query: query
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&"),
                headers,
                body,
                time: AmzDate::from_unix_secs(secs),
            },
        )
}

#[derive(Debug, Clone, Copy)]
enum Mutation {
    Method,
    Path,
    Query,
    /// Of the n-th header that is not X-Amz-Date (Host included).
    Header(usize),
    Body(usize),
    Date,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Method),
        Just(Mutation::Path),
        Just(Mutation::Query),
        any::<usize>().prop_map(Mutation::Header),
        any::<usize>().prop_map(Mutation::Body),
        Just(Mutation::Date),
    ]
}

/// A request as it travels: what the signer produced, then possibly tampered with.
struct Wire {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
    now: AmzDate,
}

impl Wire {
    fn verify(&self) -> Result<Verified, AuthError> {
        let parts = RequestParts {
            method: &self.method,
            path: &self.path,
            query: &self.query,
            authority: None,
            headers: &self.headers,
        };
        verify(
            &parts,
            Some(&payload_hash(&self.body)),
            self.now.to_system_time(),
            &one_key(AKID, SECRET, None),
        )
    }

    fn mutate(&mut self, mutation: Mutation) {
        match mutation {
            Mutation::Method => {
                let i = METHODS.iter().position(|m| *m == self.method).unwrap();
                self.method = METHODS[(i + 1) % METHODS.len()].to_owned();
            }
            Mutation::Path => self.path.push('x'),
            Mutation::Query => {
                if !self.query.is_empty() {
                    self.query.push('&');
                }
                self.query.push_str("mutated=1");
            }
            Mutation::Header(n) => {
                let names: Vec<HeaderName> = self
                    .headers
                    .keys()
                    .filter(|name| !matches!(name.as_str(), "x-amz-date" | "authorization"))
                    .cloned()
                    .collect();
                let name = &names[n % names.len()];
                let mut value = self.headers[name].as_bytes().to_vec();
                value.push(b'x');
                self.headers
                    .insert(name.clone(), HeaderValue::from_bytes(&value).unwrap());
            }
            Mutation::Body(n) => {
                if self.body.is_empty() {
                    self.body.push(0);
                } else {
                    let i = n % self.body.len();
                    self.body[i] ^= 0x20;
                }
            }
            Mutation::Date => {
                let later = AmzDate::parse_basic(self.headers["x-amz-date"].to_str().unwrap())
                    .unwrap()
                    .plus_secs(1);
                self.headers
                    .insert("x-amz-date", later.to_string().parse().unwrap());
                self.now = later;
            }
        }
    }
}

fn params(secret: &Secret, time: AmzDate) -> SigningParams<'_> {
    SigningParams {
        access_key_id: AKID,
        secret,
        region: "eu-central-1",
        service: "kinesis",
        time,
    }
}

fn header_signed(r: &Request) -> Wire {
    let mut headers = HeaderMap::new();
    headers.insert("host", r.host.parse().unwrap());
    for (name, value) in &r.headers {
        headers.append(*name, value.parse().unwrap());
    }
    let secret = Secret::new(SECRET);
    let method = METHODS[r.method];
    sign(
        method,
        &r.path,
        &r.query,
        &mut headers,
        &payload_hash(&r.body),
        &params(&secret, r.time),
    );
    Wire {
        method: method.to_owned(),
        path: r.path.clone(),
        query: r.query.clone(),
        headers,
        body: r.body.clone(),
        now: r.time,
    }
}

fn presigned(r: &Request) -> Wire {
    let mut headers = HeaderMap::new();
    headers.insert("host", r.host.parse().unwrap());
    let secret = Secret::new(SECRET);
    let method = METHODS[r.method];
    let query = presign(
        method,
        &r.path,
        &r.query,
        &headers,
        &params(&secret, r.time),
        900,
    );
    Wire {
        method: method.to_owned(),
        path: r.path.clone(),
        query,
        headers,
        body: r.body.clone(),
        now: r.time,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn signed_requests_verify(r in request()) {
        let verified = header_signed(&r).verify().unwrap();
        prop_assert_eq!(verified.payload, PayloadHash::Body);
        prop_assert_eq!(verified.form, AuthForm::Header);
        prop_assert_eq!(verified.signed_at, r.time);
        prop_assert_eq!(verified.scope.service, "kinesis");
    }

    #[test]
    fn any_single_change_fails(r in request(), m in mutation()) {
        let mut wire = header_signed(&r);
        wire.mutate(m);
        match wire.verify() {
            Err(AuthError::InvalidSignature { .. }) => {}
            // One second later can be the next day: then the scope no longer fits.
            Err(AuthError::InvalidCredentialScope { .. }) if matches!(m, Mutation::Date) => {}
            other => prop_assert!(false, "{:?} verified as {:?}", m, other),
        }
    }

    #[test]
    fn presigned_requests_verify(r in request()) {
        let verified = presigned(&r).verify().unwrap();
        prop_assert_eq!(verified.payload, PayloadHash::Unsigned);
        prop_assert_eq!(verified.form, AuthForm::Presigned { expires_in_secs: 900 });
    }

    #[test]
    fn any_single_change_to_a_presigned_request_fails(
        r in request(),
        m in prop_oneof![Just(Mutation::Method), Just(Mutation::Path), Just(Mutation::Query),
                         Just(Mutation::Header(0))],
    ) {
        let mut wire = presigned(&r);
        wire.mutate(m);
        let result = wire.verify();
        prop_assert!(
            matches!(result, Err(AuthError::InvalidSignature { .. })),
            "{:?} verified as {:?}", m, result
        );
    }
}
