//! The one place where errors become wire responses.
//!
//! An [`ApiError`] carries an [`ErrorKind`], the AWS exception name and a message;
//! [`status`] is the only function that turns a kind into an HTTP status, per protocol
//! family ([`Family`]):
//!
//! | kind | Kinesis (JSON 1.1 / CBOR) | Kinesis Video (REST-JSON) | Freshet REST API |
//! |---|---|---|---|
//! | NotFound | 400 | 404 | 404 |
//! | InUse | 400 | 400 | 409 |
//! | InvalidArgument | 400 | 400 | 400 |
//! | LimitExceeded | 400 | 400 | 429 |
//! | Throttled | 400 | 400 | 429 |
//! | Unauthenticated | 400 | 403 | 401 |
//! | NotAuthorized | 400 | 401 | 403 |
//! | TooLarge | 413 | 413 | 413 |
//! | TimedOut | 408 | 408 | 408 |
//! | Unavailable | 503 | 503 | 503 |
//! | Internal | 500 | 500 | 500 |
//!
//! The Kinesis column is AWS's JSON 1.1 protocol (every client error is a 400); the
//! Kinesis Video column is the `httpStatusCode` of each exception in the official API
//! models (`src/api/models/kinesisvideo.json` and the media models; checked by a test
//! below). Bodies: `{"__type", "message"}` (JSON 1.1, or its CBOR form),
//! `{"Message"}` with `x-amzn-ErrorType` (REST-JSON), `{"error", "message"}` (the REST
//! API). Internal failures never send their text: the client gets "Internal service
//! failure." and the request id; the text goes to the log with the same request id
//! (see [`InternalDetail`] and `api::request_ids`). `docs/errors.md` lists every error.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{Classified, ErrorKind};
use crate::streams::StreamError;
use crate::video::VideoError;

/// The protocol family of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Kinesis Data Streams: AWS JSON 1.1 (or CBOR).
    Kinesis,
    /// Kinesis Video Streams, its media and archived-media APIs: REST-JSON.
    KinesisVideo,
    /// Freshet's own REST API (`/v1/...`).
    Rest,
    /// What AWS's front end answers for a Kinesis request before the JSON 1.1 / CBOR
    /// protocol is reached: another Content-Type (an XML document) or plain
    /// `application/json` (the JSON 1.0 `{"Output", "Version"}` envelope).
    KinesisFrontEnd,
}

/// The HTTP status of an error of `kind` in `family`.
pub fn status(family: Family, kind: ErrorKind) -> StatusCode {
    use ErrorKind::*;
    match (family, kind) {
        (_, Internal) => StatusCode::INTERNAL_SERVER_ERROR,
        (_, Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
        (_, TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
        (_, TimedOut) => StatusCode::REQUEST_TIMEOUT,
        // AWS JSON 1.1 answers every client error 400, signature failures included
        // (UnrecognizedClientException and the like come back as 400 from Kinesis).
        (Family::Kinesis, _) => StatusCode::BAD_REQUEST,
        (Family::KinesisVideo, NotFound) => StatusCode::NOT_FOUND,
        // REST-JSON services answer signature failures 403; the Kinesis Video models
        // give their own NotAuthorized/AccessDenied exceptions 401.
        (Family::KinesisVideo, Unauthenticated) => StatusCode::FORBIDDEN,
        (Family::KinesisVideo, NotAuthorized) => StatusCode::UNAUTHORIZED,
        (Family::KinesisVideo, _) => StatusCode::BAD_REQUEST,
        (Family::Rest, NotFound) => StatusCode::NOT_FOUND,
        (Family::Rest, InUse) => StatusCode::CONFLICT,
        (Family::Rest, LimitExceeded | Throttled) => StatusCode::TOO_MANY_REQUESTS,
        (Family::Rest, Unauthenticated) => StatusCode::UNAUTHORIZED,
        (Family::Rest, NotAuthorized) => StatusCode::FORBIDDEN,
        (Family::Rest, InvalidArgument) => StatusCode::BAD_REQUEST,
        (Family::KinesisFrontEnd, NotFound) => StatusCode::NOT_FOUND,
        (Family::KinesisFrontEnd, NotAuthorized | Unauthenticated) => StatusCode::FORBIDDEN,
        (Family::KinesisFrontEnd, _) => StatusCode::BAD_REQUEST,
    }
}

/// The message clients get for internal failures.
pub const INTERNAL_MESSAGE: &str = "Internal service failure.";

/// An internal failure's text, riding on the response to the request-id middleware,
/// which logs it with the request id and removes it.
#[derive(Debug, Clone)]
pub struct InternalDetail(pub String);

/// An error on its way to the wire.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorKind,
    /// AWS error type name (`__type`, `x-amzn-ErrorType`).
    pub code: &'static str,
    pub message: String,
    /// What went wrong inside, for the log only.
    pub detail: Option<String>,
}

impl ApiError {
    /// An error of `kind`; an internal one keeps `message` for the log only.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        if kind == ErrorKind::Internal {
            return Self::internal(message.into());
        }
        Self {
            kind,
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::InvalidArgument,
            "SerializationException",
            message,
        )
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, "ValidationException", message)
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::InvalidArgument,
            "InvalidArgumentException",
            message,
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, "ResourceNotFoundException", message)
    }

    /// No such operation (JSON 1.1 answers it 400 like every client error; AWS's
    /// front end 404).
    pub fn unknown_operation(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, "UnknownOperationException", message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            ErrorKind::TooLarge,
            "ValidationException",
            format!("Request body exceeds the maximum size of {limit} bytes."),
        )
    }

    /// A request body that arrived slower than [`super::MIN_BODY_BYTES_PER_SEC`].
    pub fn body_too_slow(received: usize, after: std::time::Duration) -> Self {
        Self::new(
            ErrorKind::TimedOut,
            "RequestTimeoutException",
            format!(
                "The request body arrived too slowly ({received} bytes in {:.1} s); \
                 send it at {} bytes/s or more.",
                after.as_secs_f64(),
                super::MIN_BODY_BYTES_PER_SEC
            ),
        )
    }

    /// A failure of ours: the client sees [`INTERNAL_MESSAGE`], the log `detail`.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Internal,
            code: "InternalFailure",
            message: INTERNAL_MESSAGE.into(),
            detail: Some(detail.to_string()),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, "ServiceUnavailable", message)
    }

    /// Any service error.
    pub fn from_service(e: &(impl Classified + std::fmt::Display)) -> Self {
        if e.kind() == ErrorKind::Internal {
            return Self::internal(e);
        }
        Self::new(e.kind(), e.aws_type(), e.to_string())
    }

    pub fn status(&self, family: Family) -> StatusCode {
        status(family, self.kind)
    }

    /// The Kinesis JSON 1.1 error body. As AWS does, SerializationException spells its
    /// message `Message` and leaves it out when empty, and UnknownOperationException
    /// has no message at all.
    pub fn json_body(&self) -> Vec<u8> {
        let mut body = serde_json::json!({ "__type": self.code });
        if self.code == "UnknownOperationException" {
            // Nothing but the type.
        } else if self.code == "SerializationException" {
            if !self.message.is_empty() {
                body["Message"] = self.message.clone().into();
            }
        } else {
            body["message"] = self.message.clone().into();
        }
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// A response in the AWS JSON 1.1 shape.
    pub fn into_aws_json(self) -> Response {
        let body = self.json_body();
        self.with_body(Family::Kinesis, body, "application/x-amz-json-1.1")
    }

    /// A response in DynamoDB's JSON 1.0 shape: `__type` with DynamoDB's namespaces
    /// (`com.amazonaws.dynamodb.v20120810#` for its own exceptions,
    /// `com.amazon.coral.validate#` for ValidationException, `com.amazon.coral.service#`
    /// for protocol errors), `message`, and any `extra` members (CancellationReasons).
    pub fn into_dynamodb_json(self, extra: Option<serde_json::Value>) -> Response {
        let namespace = match self.code {
            "ValidationException" => "com.amazon.coral.validate#",
            "SerializationException"
            | "UnknownOperationException"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "RequestTimeoutException"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "IncompleteSignatureException"
            | "InvalidSignatureException"
            | "MissingAuthenticationTokenException" => "com.amazon.coral.service#",
            _ => "com.amazonaws.dynamodb.v20120810#",
        };
        let mut body = serde_json::json!({ "__type": format!("{namespace}{}", self.code) });
        if !self.message.is_empty() {
            body["message"] = self.message.clone().into();
        }
        if let Some(serde_json::Value::Object(extra)) = extra {
            for (k, v) in extra {
                body[k] = v;
            }
        }
        let body = serde_json::to_vec(&body).unwrap_or_default();
        self.with_body(Family::Kinesis, body, "application/x-amz-json-1.0")
    }

    /// A CloudWatch error in the shape of the protocol the request came in. The codes
    /// are the query protocol's (`InvalidParameterValue`, `MissingParameter`, ...):
    /// the query protocol sends `<ErrorResponse><Error><Type>Sender</Type><Code>`; JSON
    /// 1.0 and RPCv2 CBOR send `__type` with the exception's shape name and, as AWS's
    /// query-compatible services do, the code again in `x-amzn-query-error`, which is
    /// what SDKs report as the error code.
    pub fn into_cloudwatch(self, protocol: super::cloudwatch::Protocol) -> Response {
        use super::cloudwatch::Protocol;
        let fault = if self.kind == ErrorKind::Internal || self.kind == ErrorKind::Unavailable {
            "Receiver"
        } else {
            "Sender"
        };
        let shape = match self.code {
            "InvalidParameterValue" => "InvalidParameterValueException",
            "MissingParameter" => "MissingRequiredParameterException",
            "InvalidParameterCombination" => "InvalidParameterCombinationException",
            other => other,
        };
        let query_error = HeaderValue::from_str(&format!("{};{fault}", self.code)).ok();
        let mut resp = match protocol {
            Protocol::Query => {
                let body = format!(
                    "<ErrorResponse xmlns=\"http://monitoring.amazonaws.com/doc/2010-08-01/\">\
                     <Error><Type>{fault}</Type><Code>{}</Code><Message>{}</Message></Error>\
                     </ErrorResponse>",
                    self.code,
                    xml_escape(&self.message)
                );
                return self.with_body(Family::Kinesis, body.into_bytes(), "text/xml");
            }
            Protocol::Json => {
                let body = serde_json::to_vec(&serde_json::json!({
                    "__type": format!("com.amazonaws.cloudwatch#{shape}"),
                    "message": self.message,
                }))
                .unwrap_or_default();
                self.with_body(Family::Kinesis, body, "application/x-amz-json-1.0")
            }
            Protocol::Cbor => {
                let body = super::cbor::error_to_cbor(shape, &self.message);
                let mut resp = self.with_body(Family::Kinesis, body, "application/cbor");
                resp.headers_mut()
                    .insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
                resp
            }
        };
        if let Some(v) = query_error {
            resp.headers_mut().insert("x-amzn-query-error", v);
        }
        resp
    }

    /// A response in the REST-JSON shape of the Kinesis Video APIs: `{"Message"}` and
    /// the type in `x-amzn-ErrorType`. Those APIs have no Serialization or Validation
    /// exceptions: such errors are InvalidArgumentException there.
    pub fn into_rest_json(mut self) -> Response {
        if matches!(self.code, "SerializationException" | "ValidationException") {
            self.code = "InvalidArgumentException";
        }
        let body =
            serde_json::to_vec(&serde_json::json!({ "Message": self.message })).unwrap_or_default();
        self.with_body(Family::KinesisVideo, body, "application/json")
    }

    /// AWS's front-end XML error document: `<Type/>` when there is no message, else
    /// `<Type>` with a `<Message>`.
    pub fn into_front_end_xml(self) -> Response {
        let body = if self.message.is_empty() {
            format!("<{}/>\n", self.code)
        } else {
            format!(
                "<{0}>\n  <Message>{1}</Message>\n</{0}>\n",
                self.code,
                xml_escape(&self.message)
            )
        };
        self.with_body(Family::KinesisFrontEnd, body.into_bytes(), "text/xml")
    }

    /// The JSON 1.0 envelope `{"Output": {"__type": "com.amazon.coral.service#T"},
    /// "Version": "1.0"}` AWS answers `application/json` requests with.
    pub fn into_json_1_0(self) -> Response {
        let body = serde_json::to_vec(&serde_json::json!({
            "Output": { "__type": format!("com.amazon.coral.service#{}", self.code) },
            "Version": "1.0",
        }))
        .unwrap_or_default();
        self.with_body(Family::KinesisFrontEnd, body, "application/json")
    }

    /// A response in the shape of Freshet's REST API: `{"error", "message"}`.
    pub fn into_rest(self) -> Response {
        let body =
            serde_json::to_vec(&serde_json::json!({"error": self.code, "message": self.message}))
                .unwrap_or_default();
        self.with_body(Family::Rest, body, "application/json")
    }

    /// `body` with the family's status, `x-amzn-ErrorType`, and for internal failures
    /// the detail for the log.
    pub fn with_body(self, family: Family, body: Vec<u8>, content_type: &'static str) -> Response {
        let mut resp = (self.status(family), body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::from_str(self.code) {
            headers.insert("x-amzn-ErrorType", v);
        }
        if let Some(detail) = self.detail {
            resp.extensions_mut().insert(InternalDetail(detail));
        }
        resp
    }
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        Self::from_service(&e)
    }
}

impl From<crate::delivery::DeliveryError> for ApiError {
    fn from(e: crate::delivery::DeliveryError) -> Self {
        Self::from_service(&e)
    }
}

impl From<crate::analytics::AnalyticsError> for ApiError {
    fn from(e: crate::analytics::AnalyticsError) -> Self {
        Self::from_service(&e)
    }
}

impl From<crate::leases::LeaseError> for ApiError {
    fn from(e: crate::leases::LeaseError) -> Self {
        Self::from_service(&e)
    }
}

impl From<VideoError> for ApiError {
    fn from(e: VideoError) -> Self {
        Self::from_service(&e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_aws_json()
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every exception the Kinesis Video APIs can send, with the kind Freshet gives it.
    const VIDEO_ERRORS: &[(ErrorKind, &str)] = &[
        (ErrorKind::NotFound, "ResourceNotFoundException"),
        (ErrorKind::InUse, "ResourceInUseException"),
        (ErrorKind::InUse, "VersionMismatchException"),
        (ErrorKind::InvalidArgument, "InvalidArgumentException"),
        (ErrorKind::InvalidArgument, "NoDataRetentionException"),
        (
            ErrorKind::InvalidArgument,
            "InvalidCodecPrivateDataException",
        ),
        (
            ErrorKind::InvalidArgument,
            "MissingCodecPrivateDataException",
        ),
        (ErrorKind::InvalidArgument, "InvalidMediaFrameException"),
        (
            ErrorKind::InvalidArgument,
            "UnsupportedStreamMediaTypeException",
        ),
        (
            ErrorKind::LimitExceeded,
            "TagsPerResourceExceededLimitException",
        ),
        (
            ErrorKind::LimitExceeded,
            "AccountStreamLimitExceededException",
        ),
        (ErrorKind::Throttled, "ClientLimitExceededException"),
        (ErrorKind::Throttled, "ConnectionLimitExceededException"),
        (ErrorKind::NotAuthorized, "NotAuthorizedException"),
        (ErrorKind::NotAuthorized, "AccessDeniedException"),
    ];

    #[test]
    fn kinesis_video_statuses_are_the_api_models() {
        let mut statuses = std::collections::HashMap::new();
        for model in [
            include_str!("models/kinesisvideo.json"),
            include_str!("models/kinesis-video-media.json"),
            include_str!("models/kinesis-video-archived-media.json"),
        ] {
            let m: serde_json::Value = serde_json::from_str(model).unwrap();
            for (name, shape) in m["shapes"].as_object().unwrap() {
                if shape["exception"] == true {
                    let code = shape["error"]["httpStatusCode"].as_u64().unwrap_or(400);
                    statuses.insert(name.clone(), code as u16);
                }
            }
        }
        for (kind, code) in VIDEO_ERRORS {
            let model = statuses
                .get(*code)
                .unwrap_or_else(|| panic!("{code} is not in the models"));
            assert_eq!(
                status(Family::KinesisVideo, *kind).as_u16(),
                *model,
                "{code}"
            );
        }
        // And the service errors' own kinds agree.
        for e in [
            VideoError::ResourceNotFound(String::new()),
            VideoError::ResourceInUse(String::new()),
            VideoError::VersionMismatch(String::new()),
            VideoError::InvalidArgument(String::new()),
            VideoError::TagsPerResourceExceededLimit(String::new()),
            VideoError::AccountStreamLimitExceeded(String::new()),
        ] {
            let code = e.aws_type();
            assert_eq!(
                ApiError::from(e).status(Family::KinesisVideo).as_u16(),
                statuses[code],
                "{code}"
            );
        }
    }

    #[test]
    fn kinesis_client_errors_are_400_and_ours_5xx() {
        for e in [
            StreamError::ResourceNotFound(String::new()),
            StreamError::ResourceInUse(String::new()),
            StreamError::LimitExceeded(String::new()),
            StreamError::ProvisionedThroughputExceeded(String::new()),
            StreamError::ExpiredIterator(String::new()),
            StreamError::AccessDenied(String::new()),
        ] {
            assert_eq!(ApiError::from(e).status(Family::Kinesis), 400);
        }
        let internal = ApiError::from(StreamError::Internal("disk on fire".into()));
        assert_eq!(internal.status(Family::Kinesis), 500);
        assert_eq!(internal.message, INTERNAL_MESSAGE);
        assert_eq!(internal.detail.as_deref(), Some("disk on fire"));
        assert_eq!(ApiError::unavailable("x").status(Family::Kinesis), 503);
        // Signature failures: 400 in AWS JSON 1.1, 403 in REST-JSON, 401 in the REST API.
        assert_eq!(status(Family::Kinesis, ErrorKind::Unauthenticated), 400);
        assert_eq!(status(Family::Rest, ErrorKind::Unauthenticated), 401);
        assert_eq!(
            status(Family::KinesisVideo, ErrorKind::Unauthenticated),
            403
        );
        assert_eq!(ApiError::too_large(1).status(Family::KinesisVideo), 413);
    }

    #[test]
    fn internal_text_never_reaches_the_body() {
        let resp = ApiError::from(VideoError::Internal("/data/x: EIO".into())).into_rest_json();
        assert_eq!(resp.status(), 500);
        assert_eq!(
            resp.extensions().get::<InternalDetail>().unwrap().0,
            "/data/x: EIO"
        );
        assert_eq!(resp.headers()["x-amzn-errortype"], "InternalFailure");
    }

    #[test]
    fn the_rest_api_uses_plain_http_statuses() {
        assert_eq!(
            ApiError::from(StreamError::ResourceInUse(String::new())).status(Family::Rest),
            409
        );
        assert_eq!(
            ApiError::from(StreamError::ProvisionedThroughputExceeded(String::new()))
                .status(Family::Rest),
            429
        );
        assert_eq!(ApiError::not_found("x").status(Family::Rest), 404);
    }
}
