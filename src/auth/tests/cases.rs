//! The failure cases one by one with AWS's messages, the clock-skew window and the
//! presigned expiry at their edges, the payload hash variants, and what the errors
//! must never show.

use http::{HeaderMap, HeaderValue};

use super::super::canonical;
use super::super::sigv4::{
    EMPTY_PAYLOAD_HASH, RequestParts, SigningParams, UNSIGNED_PAYLOAD, presign, sign, verify,
};
use super::super::{
    AmzDate, AuthError, AuthForm, PayloadHash, Secret, StreamingPayload, Verified, payload_hash,
};
use super::{at, one_key};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtoken+/=";
const T: &str = "20150830T123600Z";

struct Req {
    method: &'static str,
    path: String,
    query: String,
    headers: HeaderMap,
    authority: Option<String>,
}

impl Req {
    fn new() -> Self {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:4567"));
        headers.insert(
            "x-amz-target",
            HeaderValue::from_static("Kinesis_20131202.ListStreams"),
        );
        Self {
            method: "POST",
            path: "/".into(),
            query: String::new(),
            headers,
            authority: None,
        }
    }

    fn path(mut self, path: &str) -> Self {
        self.path = path.into();
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers
            .insert(name, HeaderValue::from_str(value).unwrap());
        self
    }

    fn signed(mut self, payload: &str, token: Option<&str>, time: &str) -> Self {
        let secret = secret(token);
        sign(
            self.method,
            &self.path,
            &self.query,
            &mut self.headers,
            payload,
            &params(&secret, time),
        );
        self
    }

    fn presigned(mut self, expires: u32, token: Option<&str>, time: &str) -> Self {
        self.headers.remove("x-amz-target");
        let secret = secret(token);
        self.method = "GET";
        self.query = presign(
            self.method,
            &self.path,
            "SessionToken=abc",
            &self.headers,
            &params(&secret, time),
            expires,
        );
        self
    }

    fn authorization(&self) -> String {
        self.headers["authorization"].to_str().unwrap().to_owned()
    }

    fn verify_with(
        &self,
        body_sha256: Option<&str>,
        now: &str,
        token: Option<&str>,
    ) -> Result<Verified, AuthError> {
        let parts = RequestParts {
            method: self.method,
            path: &self.path,
            query: &self.query,
            authority: self.authority.as_deref(),
            headers: &self.headers,
        };
        verify(&parts, body_sha256, at(now), &one_key(AKID, SECRET, token))
    }

    fn verify_at(&self, now: &str) -> Result<Verified, AuthError> {
        self.verify_with(Some(EMPTY_PAYLOAD_HASH), now, None)
    }
}

fn secret(token: Option<&str>) -> Secret {
    let secret = Secret::new(SECRET);
    match token {
        Some(token) => secret.with_session_token(token),
        None => secret,
    }
}

fn params<'a>(secret: &'a Secret, time: &str) -> SigningParams<'a> {
    SigningParams {
        access_key_id: AKID,
        secret,
        region: "us-east-1",
        service: "kinesis",
        time: AmzDate::parse_basic(time).unwrap(),
    }
}

fn incomplete(message: &str) -> AuthError {
    AuthError::IncompleteSignature {
        message: message.into(),
    }
}

fn ok(req: &Req) -> Verified {
    req.verify_at(T).expect("verifies")
}

#[test]
fn missing_authentication_token() {
    let req = Req::new().header("x-amz-date", T);
    let err = req.verify_at(T).unwrap_err();
    assert_eq!(err, AuthError::MissingAuthenticationToken);
    assert_eq!(err.aws_type(), "MissingAuthenticationTokenException");
    assert_eq!(err.to_string(), "Missing Authentication Token");

    let mut req = Req::new();
    req.query = "SessionToken=abc&X-Amz-Date=20150830T123600Z".into();
    assert_eq!(
        req.verify_at(T).unwrap_err(),
        AuthError::MissingAuthenticationToken
    );
}

#[test]
fn authorization_header_without_sigv4_parameters() {
    let req = Req::new().header("authorization", "Bearer abc.def");
    let err = req.verify_at(T).unwrap_err();
    assert_eq!(err.aws_type(), "IncompleteSignatureException");
    assert_eq!(
        err.to_string(),
        "Authorization header requires 'Credential' parameter. Authorization header \
         requires 'Signature' parameter. Authorization header requires 'SignedHeaders' \
         parameter. Authorization header requires existence of either a 'X-Amz-Date' or \
         a 'Date' header. Authorization=Bearer abc.def"
    );

    let req = Req::new().header("x-amz-date", T).header(
        "authorization",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/kinesis/aws4_request, \
             SignedHeaders=host;x-amz-date",
    );
    assert_eq!(
        req.verify_at(T).unwrap_err(),
        incomplete(
            "Authorization header requires 'Signature' parameter. \
             Authorization=AWS4-HMAC-SHA256 \
             Credential=AKIDEXAMPLE/20150830/us-east-1/kinesis/aws4_request, \
             SignedHeaders=host;x-amz-date"
        )
    );
}

#[test]
fn authorization_parameter_without_equal_sign() {
    let value = "AWS4-HMAC-SHA256 Credential= AKIDEXAMPLE/20150830/us-east-1/kinesis/aws4_request, \
                 SignedHeaders=host;x-amz-date, Signature=abc";
    let req = Req::new()
        .header("x-amz-date", T)
        .header("authorization", value);
    assert_eq!(
        req.verify_at(T).unwrap_err(),
        incomplete(&format!(
            "'AKIDEXAMPLE/20150830/us-east-1/kinesis/aws4_request' not a valid key=value \
             pair (missing equal-sign) in Authorization header: '{value}'."
        ))
    );
}

#[test]
fn malformed_credential_scope() {
    let with_credential = |credential: &str| {
        Req::new().header("x-amz-date", T).header(
            "authorization",
            &format!(
                "AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host;x-amz-date, \
                 Signature={}",
                "0".repeat(64)
            ),
        )
    };
    assert_eq!(
        with_credential("AKIDEXAMPLE/20150830/us-east-1/kinesis")
            .verify_at(T)
            .unwrap_err(),
        incomplete(
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got 'AKIDEXAMPLE/20150830/us-east-1/kinesis'"
        )
    );
    let err = with_credential("AKIDEXAMPLE/20150830/us-east-1/kinesis/aws5_request")
        .verify_at(T)
        .unwrap_err();
    assert_eq!(err.aws_type(), "InvalidSignatureException");
    assert_eq!(
        err.to_string(),
        "Credential should be scoped with a valid terminator: 'aws4_request', not \
         'aws5_request'. "
    );
    let err = with_credential("AKIDEXAMPLE/20150831/us-east-1/kinesis/aws4_request")
        .verify_at(T)
        .unwrap_err();
    assert_eq!(
        err,
        AuthError::InvalidCredentialScope {
            message: "Date in Credential scope does not match YYYYMMDD from ISO-8601 version \
                      of date from HTTP: '20150831' != '20150830', from '20150830T123600Z'."
                .into()
        }
    );
    assert_eq!(
        with_credential("NOSUCHKEY/20150830/us-east-1/kinesis/aws4_request")
            .verify_at(T)
            .unwrap_err(),
        AuthError::UnrecognizedClient
    );
}

#[test]
fn host_must_be_signed() {
    let req = Req::new().header("x-amz-date", T).header(
        "authorization",
        &format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/kinesis/aws4_request, \
             SignedHeaders=x-amz-date;x-amz-target, Signature={}",
            "0".repeat(64)
        ),
    );
    assert_eq!(
        req.verify_at(T).unwrap_err(),
        incomplete("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    );
}

#[test]
fn malformed_x_amz_date() {
    let req = Req::new()
        .signed(EMPTY_PAYLOAD_HASH, None, T)
        .header("x-amz-date", "2015-08-30T12:36:00Z");
    assert_eq!(
        req.verify_at(T).unwrap_err(),
        incomplete(
            "Date must be in ISO-8601 'basic format'. Got '2015-08-30T12:36:00Z'. See \
             http://en.wikipedia.org/wiki/ISO_8601"
        )
    );
}

#[test]
fn date_header_instead_of_x_amz_date() {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:4567"));
    headers.insert(
        "date",
        HeaderValue::from_static("Sun, 30 Aug 2015 12:36:00 GMT"),
    );
    let canonical_request = canonical::canonical_request(
        "GET",
        "/",
        "",
        &canonical::canonical_headers(&["date", "host"], &headers, None),
        "date;host",
        EMPTY_PAYLOAD_HASH,
    );
    let secret = Secret::new(SECRET);
    let signature = params(&secret, T).signature(&canonical_request);
    headers.insert(
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/kinesis/aws4_request, \
             SignedHeaders=date;host, Signature={signature}"
        )
        .parse()
        .unwrap(),
    );
    let req = Req {
        method: "GET",
        path: "/".into(),
        query: String::new(),
        headers,
        authority: None,
    };
    assert_eq!(ok(&req).signed_at.to_string(), T);
}

#[test]
fn clock_skew_window_edges() {
    let req = Req::new().signed(EMPTY_PAYLOAD_HASH, None, T);
    // Exactly 15 minutes either way is fine.
    ok(&req);
    req.verify_at("20150830T125100Z").expect("15 min late");
    req.verify_at("20150830T122100Z").expect("15 min early");

    let err = req.verify_at("20150830T125101Z").unwrap_err();
    assert_eq!(err.aws_type(), "InvalidSignatureException");
    assert_eq!(
        err.to_string(),
        "Signature expired: 20150830T123600Z is now earlier than 20150830T123601Z \
         (20150830T125101Z - 15 min.)"
    );
    assert_eq!(
        req.verify_at("20150830T125600Z").unwrap_err().to_string(),
        "Signature expired: 20150830T123600Z is now earlier than 20150830T124100Z \
         (20150830T125600Z - 15 min.)"
    );

    let err = req.verify_at("20150830T122059Z").unwrap_err();
    assert_eq!(err.aws_type(), "InvalidSignatureException");
    assert_eq!(
        err.to_string(),
        "Signature not yet current: 20150830T123600Z is still later than \
         20150830T123559Z (20150830T122059Z + 15 min.)"
    );
}

#[test]
fn scope_day_is_the_request_day_not_today() {
    let req = Req::new().signed(EMPTY_PAYLOAD_HASH, None, "20150830T235959Z");
    let verified = req.verify_at("20150831T000500Z").unwrap();
    assert_eq!(verified.scope.date, "20150830");
}

#[test]
fn presigned_expiry_edges() {
    let req = Req::new().presigned(60, None, T);
    let verified = ok(&req);
    assert_eq!(
        verified.form,
        AuthForm::Presigned {
            expires_in_secs: 60
        }
    );
    assert_eq!(verified.payload, PayloadHash::Unsigned);
    req.verify_at("20150830T123700Z")
        .expect("last valid second");
    let err = req.verify_at("20150830T123701Z").unwrap_err();
    assert_eq!(err.aws_type(), "AccessDeniedException");
    assert_eq!(
        err,
        AuthError::PresignedUrlExpired {
            signed_at: AmzDate::parse_basic(T).unwrap(),
            expires_in_secs: 60,
            now: AmzDate::parse_basic("20150830T123701Z").unwrap(),
        }
    );
    // Dated in the future: the same 15-minute tolerance as headers.
    req.verify_at("20150830T122100Z").expect("15 min early");
    assert!(matches!(
        req.verify_at("20150830T122059Z"),
        Err(AuthError::SignatureNotYetCurrent { .. })
    ));

    let week = Req::new().presigned(604_800, None, T);
    week.verify_at("20150906T123600Z").expect("a week");
    assert!(matches!(
        week.verify_at("20150906T123601Z"),
        Err(AuthError::PresignedUrlExpired { .. })
    ));
}

#[test]
fn presigned_parameter_errors() {
    let with = |from: &str, to: &str| {
        let mut r = Req::new().presigned(60, None, T);
        assert!(r.query.contains(from), "{from}");
        r.query = r.query.replace(from, to);
        r.verify_at(T).unwrap_err()
    };
    let expires = |value: &str| with("X-Amz-Expires=60", &format!("X-Amz-Expires={value}"));
    assert_eq!(
        expires("604801"),
        incomplete("X-Amz-Expires must be less than a week (in seconds) that is 604800")
    );
    assert_eq!(
        expires("-1"),
        incomplete("X-Amz-Expires must be non-negative")
    );
    assert_eq!(
        expires("0"),
        incomplete("X-Amz-Expires must be at least 1 second")
    );
    assert_eq!(
        expires("soon"),
        incomplete("X-Amz-Expires should be a number")
    );
    let missing = incomplete(
        "Query-string authentication version 4 requires the X-Amz-Algorithm, \
         X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and \
         X-Amz-Expires parameters.",
    );
    assert_eq!(
        with("X-Amz-SignedHeaders=host", "X-Amz-Signed=host"),
        missing
    );
    assert_eq!(with("X-Amz-Date=", "X-Amz-Dat="), missing);
    assert_eq!(
        with("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"),
        incomplete("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
    );
    assert!(matches!(
        with("SessionToken=abc", "SessionToken=abd"),
        AuthError::InvalidSignature { .. }
    ));
}

#[test]
fn presigned_with_session_token() {
    let req = Req::new().presigned(60, Some(TOKEN), T);
    assert!(req.query.contains("X-Amz-Security-Token="));
    req.verify_with(None, T, Some(TOKEN))
        .expect("token signed in the query");
    assert_eq!(
        req.verify_with(None, T, Some("other")).unwrap_err(),
        AuthError::UnrecognizedClient
    );
    assert_eq!(
        req.verify_with(None, T, None).unwrap_err(),
        AuthError::UnrecognizedClient
    );
}

#[test]
fn declared_payload_hashes() {
    let body = br#"{"StreamName":"orders"}"#;
    let hash = payload_hash(body);
    let req = Req::new()
        .header("x-amz-content-sha256", &hash)
        .signed(&hash, None, T);

    // Verified before the body is read: the caller checks it afterwards.
    let verified = req.verify_with(None, T, None).unwrap();
    assert_eq!(verified.payload, PayloadHash::Declared(hash.clone()));
    verified
        .payload
        .check_body(body)
        .expect("the body that was signed");
    assert_eq!(
        verified.payload.check_body(b"{}").unwrap_err(),
        AuthError::ContentSha256Mismatch
    );
    // Verified with the body's hash: checked at once.
    assert_eq!(
        req.verify_with(Some(&hash), T, None).unwrap().payload,
        PayloadHash::Body
    );
    let err = req
        .verify_with(Some(&payload_hash(b"{}")), T, None)
        .unwrap_err();
    assert_eq!(err, AuthError::ContentSha256Mismatch);
    assert_eq!(err.aws_type(), "InvalidSignatureException");

    // No declared hash and no body hash: nothing to check the signature against.
    let req = Req::new().signed(&hash, None, T);
    assert_eq!(
        req.verify_with(None, T, None).unwrap_err(),
        incomplete("Missing required header for this request: x-amz-content-sha256")
    );
}

#[test]
fn unsigned_and_streaming_payloads() {
    let req = Req::new()
        .header("x-amz-content-sha256", UNSIGNED_PAYLOAD)
        .signed(UNSIGNED_PAYLOAD, None, T);
    assert_eq!(
        req.verify_with(None, T, None).unwrap().payload,
        PayloadHash::Unsigned
    );
    assert_eq!(
        req.verify_with(Some(&payload_hash(b"anything")), T, None)
            .unwrap()
            .payload,
        PayloadHash::Unsigned
    );

    for kind in [
        StreamingPayload::SignedChunks,
        StreamingPayload::SignedChunksWithTrailer,
        StreamingPayload::UnsignedWithTrailer,
    ] {
        let mut req = Req::new()
            .path("/putMedia")
            .header("x-amz-content-sha256", kind.marker())
            .header("x-amz-decoded-content-length", "1048576")
            .signed(kind.marker(), None, T);
        let authorization = req.authorization();
        let seed = authorization.rsplit_once("Signature=").unwrap().1;
        match req.verify_with(None, T, None).unwrap().payload {
            PayloadHash::Streaming {
                kind: got,
                seed_signature,
                ..
            } => assert_eq!((got, seed_signature.as_str()), (kind, seed)),
            other => panic!("not streaming: {other:?}"),
        }
        req.headers
            .insert("x-amz-decoded-content-length", "1".parse().unwrap());
        assert!(matches!(
            req.verify_with(None, T, None),
            Err(AuthError::InvalidSignature { .. })
        ));
    }
}

#[test]
fn host_from_the_authority_when_no_host_header() {
    let mut req = Req::new().signed(EMPTY_PAYLOAD_HASH, None, T);
    req.headers.remove("host");
    req.authority = Some("127.0.0.1:4567".into());
    ok(&req);
    req.authority = Some("127.0.0.1".into());
    assert!(matches!(
        req.verify_at(T),
        Err(AuthError::InvalidSignature { .. })
    ));
}

#[test]
fn from_http_request_parts() {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:4567"));
    let secret = Secret::new(SECRET);
    sign(
        "GET",
        "/getMedia/a%3Db",
        "b=2&a=1",
        &mut headers,
        EMPTY_PAYLOAD_HASH,
        &params(&secret, T),
    );
    let mut request = http::Request::get("/getMedia/a%3Db?b=2&a=1")
        .body(())
        .unwrap();
    *request.headers_mut() = headers;
    let (parts, ()) = request.into_parts();
    let verified = verify(
        &RequestParts::from(&parts),
        Some(EMPTY_PAYLOAD_HASH),
        at(T),
        &one_key(AKID, SECRET, None),
    )
    .unwrap();
    assert_eq!(verified.access_key_id, AKID);
}

#[test]
fn malformed_signature_is_a_mismatch() {
    for bad in ["abc", &"g".repeat(64), ""] {
        let mut req = Req::new().signed(EMPTY_PAYLOAD_HASH, None, T);
        let authorization = req.authorization();
        let (head, _) = authorization.rsplit_once("Signature=").unwrap();
        req.headers.insert(
            "authorization",
            format!("{head}Signature={bad}").parse().unwrap(),
        );
        assert!(
            matches!(req.verify_at(T), Err(AuthError::InvalidSignature { .. })),
            "{bad:?}"
        );
    }
}

/// No error, message or `Debug` output shows the secret, the session token or the
/// signature the verifier computed.
#[test]
fn secrets_never_shown() {
    let secret = Secret::new(SECRET).with_session_token(TOKEN);
    let debug = format!("{secret:?}");
    assert!(!debug.contains(SECRET) && !debug.contains(TOKEN), "{debug}");

    let signed = Req::new()
        .header("content-type", "application/x-amz-json-1.1")
        .signed(EMPTY_PAYLOAD_HASH, Some(TOKEN), T);
    // What the verifier will compute for the tampered request.
    let mut expected = Req::new()
        .header("content-type", "application/json")
        .signed(EMPTY_PAYLOAD_HASH, Some(TOKEN), T);
    let expected_signature = expected
        .authorization()
        .rsplit_once('=')
        .unwrap()
        .1
        .to_owned();
    expected.headers = signed.headers.clone();
    expected
        .headers
        .insert("content-type", "application/json".parse().unwrap());

    let err = expected
        .verify_with(Some(EMPTY_PAYLOAD_HASH), T, Some(TOKEN))
        .unwrap_err();
    let AuthError::InvalidSignature {
        canonical_request, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert!(canonical_request.contains("x-amz-security-token:<redacted>\n"));
    for shown in [format!("{err:?}"), err.to_string()] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(!shown.contains(&expected_signature), "{shown}");
    }

    let presigned = Req::new().presigned(60, Some(TOKEN), T);
    let mut tampered = Req::new().presigned(60, Some(TOKEN), T);
    tampered.query = presigned
        .query
        .replace("SessionToken=abc", "SessionToken=abd");
    let err = tampered.verify_with(None, T, Some(TOKEN)).unwrap_err();
    let shown = format!("{err:?}");
    let mut encoded = String::new();
    canonical::uri_encode(TOKEN.as_bytes(), false, &mut encoded);
    assert!(
        !shown.contains(&encoded) && !shown.contains(TOKEN),
        "{shown}"
    );
}
