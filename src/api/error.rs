//! The one place where errors become wire responses.
//!
//! Every API family has its own error shape: the Kinesis JSON/CBOR protocol answers
//! `{"__type": ..., "message": ...}` (AWS JSON 1.1 protocol), the REST API answers
//! `{"error": ..., "message": ...}`. The HTTP status comes from the error kind only:
//! caller mistakes are 4xx, our own failures 5xx, never the other way round.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::streams::StreamError;

/// An error on its way to the wire.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// AWS error type name (`__type`).
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "SerializationException", message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationException", message)
    }

    pub fn unknown_operation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            message,
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValidationException",
            format!("Request body exceeds the maximum size of {limit} bytes."),
        )
    }

    /// A request body that arrived slower than [`super::MIN_BODY_BYTES_PER_SEC`].
    pub fn body_too_slow(received: usize, after: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeoutException",
            format!(
                "The request body arrived too slowly ({received} bytes in {:.1} s); \
                 send it at {} bytes/s or more.",
                after.as_secs_f64(),
                super::MIN_BODY_BYTES_PER_SEC
            ),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            message,
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// The Kinesis JSON 1.1 error body. As AWS does, SerializationException spells its
    /// message `Message` and leaves it out when empty.
    pub fn json_body(&self) -> Vec<u8> {
        let mut body = serde_json::json!({ "__type": self.kind });
        if self.kind == "SerializationException" {
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
        self.with_body(body, "application/x-amz-json-1.1")
    }

    pub fn with_body(self, body: Vec<u8>, content_type: &'static str) -> Response {
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::from_str(self.kind) {
            headers.insert("x-amzn-ErrorType", v);
        }
        resp
    }
}

impl From<StreamError> for ApiError {
    fn from(e: StreamError) -> Self {
        let status = if e.is_internal() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        let message = if e.is_internal() {
            // Details go to the log (see the From impls in streams::error), not the caller.
            "Internal service failure.".to_string()
        } else {
            e.to_string()
        };
        Self::new(status, e.aws_type(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_aws_json()
    }
}

/// An error in the REST-JSON shape of the Kinesis Video APIs: the type in
/// `x-amzn-ErrorType`, the status from the API model, and `{"Message": ...}`.
pub fn rest_json_error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body =
        serde_json::to_vec(&serde_json::json!({ "Message": message.into() })).unwrap_or_default();
    let mut resp = (status, body).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(kind) {
        headers.insert("x-amzn-ErrorType", v);
    }
    resp
}
