//! The Kinesis Data Streams wire protocol: `POST /` with
//! `X-Amz-Target: Kinesis_20131202.<Operation>`, bodies in AWS JSON 1.1
//! (`application/x-amz-json-1.1`) or CBOR (`application/x-amz-cbor-1.1`, as the Java
//! SDK, KCL and KPL send by default).
//!
//! Every request goes the same way: decode the body to a JSON document (CBOR is
//! converted, blobs to base64, timestamps to epoch seconds), check it against the
//! official API model ([`model`]: types first, `SerializationException`; then
//! constraints, `ValidationException`), parse it into an [`ops::Operation`], run it
//! against the domain service, and encode the output the way the request came in.
//! PutRecords in JSON has a fast path that skips the generic document for
//! well-formed requests and falls back to the full path for anything unusual, so its
//! errors are the same.

pub mod model;
mod ops;
mod subscribe;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, Family};
use super::{AppState, MAX_KINESIS_BODY, cbor, read_body};

const TARGET_PREFIX: &str = "Kinesis_20131202.";
const JSON_TYPE: &str = "application/x-amz-json-1.1";
const CBOR_TYPE: &str = "application/x-amz-cbor-1.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    Cbor,
}

/// What a request's Content-Type (without parameters) selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentType {
    /// `application/x-amz-json-1.1` or `application/x-amz-cbor-1.1`.
    Protocol(Encoding),
    /// `application/json`: AWS parses it, then answers in the JSON 1.0 envelope.
    Json10,
    /// Anything else, or none.
    Other,
}

fn content_type(headers: &axum::http::HeaderMap) -> ContentType {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match ct.split(';').next().unwrap_or("").trim() {
        JSON_TYPE => ContentType::Protocol(Encoding::Json),
        CBOR_TYPE => ContentType::Protocol(Encoding::Cbor),
        "application/json" => ContentType::Json10,
        _ => ContentType::Other,
    }
}

/// The entry point for `POST /`.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let content = content_type(&parts.headers);
    let target = super::header_str(&parts.headers, "x-amz-target")
        .unwrap_or("")
        .to_string();
    // Read the body even for requests we refuse, so the connection stays usable.
    let body = match read_body(&state, &mut parts, body, MAX_KINESIS_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let encoding = match content {
                ContentType::Protocol(e) => e,
                _ => Encoding::Json,
            };
            return error_response(e, encoding);
        }
    };
    let encoding = match content {
        // As AWS: an empty body is a SerializationException (UnknownOperation for an
        // unknown target), in JSON for JSON 1.1 requests and in CBOR otherwise.
        _ if body.bytes.is_empty() => {
            let encoding = match content {
                ContentType::Protocol(Encoding::Json) => Encoding::Json,
                _ => Encoding::Cbor,
            };
            let e = match operation_name(&target) {
                Ok(_) => ApiError::serialization(""),
                Err(_) => ApiError::unknown_operation(""),
            };
            return error_response(e, encoding);
        }
        ContentType::Protocol(encoding) => encoding,
        ContentType::Json10 => return json_1_0(&body.bytes),
        ContentType::Other => {
            let named = target
                .split_once('.')
                .is_some_and(|(svc, op)| !svc.is_empty() && !op.is_empty());
            let e = if named {
                ApiError::unknown_operation("")
            } else {
                ApiError::new(
                    crate::error::ErrorKind::NotAuthorized,
                    "AccessDeniedException",
                    "Unable to determine service/operation name to be authorized",
                )
            };
            return e.into_front_end_xml();
        }
    };
    match run(&state, &target, encoding, body).await {
        Ok(resp) => resp,
        Err(e) => error_response(e, encoding),
    }
}

/// `application/json`: AWS parses the body and goes no further.
fn json_1_0(bytes: &[u8]) -> Response {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) if v.is_object() || v.is_array() => ApiError::unknown_operation("").into_json_1_0(),
        _ => ApiError::serialization("").into_json_1_0(),
    }
}

/// The operation an `X-Amz-Target` names.
fn operation_name(target: &str) -> Result<model::Operation<'static>, ApiError> {
    let Some(op_name) = target.strip_prefix(TARGET_PREFIX) else {
        return Err(ApiError::unknown_operation(if target.is_empty() {
            "Missing X-Amz-Target header.".to_string()
        } else {
            format!("Unknown operation {target}.")
        }));
    };
    model::kinesis()
        .operation(op_name)
        .ok_or_else(|| ApiError::unknown_operation(format!("Unknown operation {op_name}.")))
}

fn error_response(e: ApiError, encoding: Encoding) -> Response {
    if e.status(Family::Kinesis).is_server_error() {
        tracing::warn!(code = e.code, message = %e.message, "request failed");
    }
    match encoding {
        Encoding::Json => e.into_aws_json(),
        Encoding::Cbor => {
            let body = cbor::error_to_cbor(e.code, &e.message);
            e.with_body(Family::Kinesis, body, CBOR_TYPE)
        }
    }
}

async fn run(
    state: &AppState,
    target: &str,
    encoding: Encoding,
    body: super::LimitedBody,
) -> Result<Response, ApiError> {
    let op = operation_name(target)?;
    let op_name = op.name().to_string();
    let op_name = op_name.as_str();

    // Fast path: well-formed JSON PutRecords.
    if encoding == Encoding::Json
        && op_name == "PutRecords"
        && let Some(input) = ops::fast_put_records(&body.bytes)
    {
        let out = ops::put_records(&state.streams, input).await?;
        return Ok(respond(out, &op, encoding));
    }

    let mut doc = match encoding {
        Encoding::Json => parse_json(&body.bytes)?,
        Encoding::Cbor => cbor::cbor_to_json_input(&body.bytes, &op).map_err(input_error)?,
    };
    drop(body);
    op.normalize_input(&mut doc).map_err(input_error)?;
    // The one operation that answers with an event stream.
    if op_name == "SubscribeToShard" {
        return subscribe::subscribe(&state.fanout, doc).await;
    }
    let operation = ops::Operation::parse(op_name, doc)?;
    let output = operation.apply(&state.streams).await?;
    Ok(respond(output, &op, encoding))
}

fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    // AWS answers an empty or unparseable body with a bare SerializationException.
    serde_json::from_slice(bytes).map_err(|_| ApiError::serialization(""))
}

fn input_error(e: model::InputError) -> ApiError {
    match e {
        model::InputError::Serialization(m) => ApiError::serialization(m),
        model::InputError::Validation(m) => ApiError::validation(m),
    }
}

/// An operation's result, ready to encode.
pub enum Output {
    /// A JSON document (encoded as is, or converted to CBOR).
    Doc(serde_json::Value),
    /// JSON text already rendered (hot paths); converted to CBOR if needed.
    Rendered(Vec<u8>),
}

fn respond(out: Output, op: &model::Operation<'_>, encoding: Encoding) -> Response {
    // Operations without an output shape (CreateStream, DeleteStream, AddTagsToStream,
    // ...) answer with an empty body, as AWS does.
    let no_output = op.output_shape().is_none();
    let (body, content_type) = match (encoding, out) {
        (Encoding::Json, _) if no_output => (Vec::new(), JSON_TYPE),
        (Encoding::Cbor, _) if no_output => (Vec::new(), CBOR_TYPE),
        (Encoding::Json, Output::Doc(v)) => (serde_json::to_vec(&v).unwrap_or_default(), JSON_TYPE),
        (Encoding::Json, Output::Rendered(b)) => (b, JSON_TYPE),
        (Encoding::Cbor, Output::Doc(v)) => (cbor::json_to_cbor_output(&v, op), CBOR_TYPE),
        (Encoding::Cbor, Output::Rendered(b)) => {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
            (cbor::json_to_cbor_output(&v, op), CBOR_TYPE)
        }
    };
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
