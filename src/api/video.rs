//! The Kinesis Video Streams control plane over REST-JSON: `POST /<operation>` with a
//! JSON body (e.g. `POST /createStream`), as in the Kinesis Video Streams API
//! reference and the bundled model (`models/kinesisvideo.json`). Errors carry the
//! error type in `x-amzn-ErrorType`, the model's status code, and `{"Message": ...}`.
//!
//! Requests are checked against the model first (types and constraints, reported as
//! `InvalidArgumentException`), then parsed and handed to [`VideoService`].

use std::collections::BTreeMap;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::error::ApiError;
use super::kinesis::model::{self, InputError};
use super::{AppState, read_body};
use crate::video::{CreateVideoStream, VideoError, VideoRef};

/// Control-plane bodies are small.
const MAX_BODY: usize = 1024 * 1024;

/// URI path -> operation name, for the operations this server implements.
const OPERATIONS: &[(&str, &str)] = &[
    ("createStream", "CreateStream"),
    ("describeStream", "DescribeStream"),
    ("listStreams", "ListStreams"),
    ("deleteStream", "DeleteStream"),
    ("updateStream", "UpdateStream"),
    ("updateDataRetention", "UpdateDataRetention"),
    ("getDataEndpoint", "GetDataEndpoint"),
    ("tagStream", "TagStream"),
    ("untagStream", "UntagStream"),
    ("listTagsForStream", "ListTagsForStream"),
    ("TagResource", "TagResource"),
    ("UntagResource", "UntagResource"),
    ("ListTagsForResource", "ListTagsForResource"),
];

/// The control plane's errors: [`ApiError`] in the REST-JSON shape.
pub struct VideoApiError(ApiError);

impl VideoApiError {
    fn invalid(message: impl Into<String>) -> Self {
        Self(ApiError::invalid_argument(message))
    }
}

impl From<VideoError> for VideoApiError {
    fn from(e: VideoError) -> Self {
        Self(ApiError::from(e))
    }
}

impl From<ApiError> for VideoApiError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl IntoResponse for VideoApiError {
    fn into_response(self) -> Response {
        self.0.into_rest_json()
    }
}

fn parse<T: DeserializeOwned>(doc: Value) -> Result<T, VideoApiError> {
    serde_json::from_value(doc).map_err(|e| VideoApiError::invalid(e.to_string()))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Target {
    stream_name: Option<String>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
}

impl Target {
    fn video_ref(&self) -> VideoRef {
        VideoRef {
            name: self.stream_name.clone(),
            arn: self.stream_arn.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateIn {
    stream_name: String,
    device_name: Option<String>,
    media_type: Option<String>,
    kms_key_id: Option<String>,
    data_retention_in_hours: Option<u32>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NameCondition {
    comparison_operator: Option<String>,
    comparison_value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListIn {
    max_results: Option<usize>,
    next_token: Option<String>,
    stream_name_condition: Option<NameCondition>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteIn {
    #[serde(rename = "StreamARN")]
    stream_arn: String,
    current_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateIn {
    #[serde(flatten)]
    target: Target,
    current_version: String,
    device_name: Option<String>,
    media_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RetentionIn {
    #[serde(flatten)]
    target: Target,
    current_version: String,
    operation: String,
    data_retention_change_in_hours: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagStreamIn {
    #[serde(flatten)]
    target: Target,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    tag_key_list: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagPair {
    key: String,
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ResourceTagsIn {
    #[serde(rename = "ResourceARN")]
    resource_arn: String,
    #[serde(default)]
    tags: Vec<TagPair>,
    #[serde(default)]
    tag_key_list: Vec<String>,
}

fn ok(v: Value) -> Response {
    let mut resp = axum::Json(v).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `POST /{operation}`.
pub async fn handle(
    State(state): State<AppState>,
    Path(op_path): Path<String>,
    req: Request,
) -> Response {
    match run(&state, &op_path, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(state: &AppState, op_path: &str, req: Request) -> Result<Response, VideoApiError> {
    let Some(&(_, op_name)) = OPERATIONS.iter().find(|(p, _)| *p == op_path) else {
        return Err(VideoApiError(ApiError::new(
            crate::error::ErrorKind::NotFound,
            "UnknownOperationException",
            format!("Unknown operation {op_path}."),
        )));
    };
    let (mut parts, body) = req.into_parts();
    let body = read_body(state, &mut parts, body, MAX_BODY).await?;
    let mut doc: Value = if body.bytes.iter().all(|b| b.is_ascii_whitespace()) {
        json!({})
    } else {
        serde_json::from_slice(&body.bytes).map_err(|e| {
            VideoApiError::invalid(format!("The request body is not valid JSON: {e}"))
        })?
    };
    if let Some(op) = model::kinesis_video().operation(op_name) {
        op.normalize_input(&mut doc).map_err(|e| match e {
            InputError::Serialization(m) if m.is_empty() => {
                VideoApiError::invalid("The request body must be a JSON object.")
            }
            InputError::Serialization(m) | InputError::Validation(m) => VideoApiError::invalid(m),
        })?;
    }
    let svc = &state.video;
    Ok(match op_name {
        "CreateStream" => {
            let i: CreateIn = parse(doc)?;
            let arn = svc
                .create(CreateVideoStream {
                    name: i.stream_name,
                    device_name: i.device_name,
                    media_type: i.media_type,
                    kms_key_id: i.kms_key_id,
                    retention_hours: i.data_retention_in_hours.unwrap_or(0),
                    tags: i.tags,
                })
                .await?;
            ok(json!({ "StreamARN": arn }))
        }
        "DescribeStream" => {
            let t: Target = parse(doc)?;
            ok(json!({ "StreamInfo": svc.get(&t.video_ref())?.info() }))
        }
        "ListStreams" => {
            let i: ListIn = parse(doc)?;
            let prefix = match &i.stream_name_condition {
                Some(c)
                    if c.comparison_operator.as_deref().unwrap_or("BEGINS_WITH")
                        == "BEGINS_WITH" =>
                {
                    c.comparison_value.clone()
                }
                Some(_) => return Err(VideoApiError::invalid("Only BEGINS_WITH is supported.")),
                None => None,
            };
            let after = match &i.next_token {
                Some(t) => Some(decode_token(t)?),
                None => None,
            };
            let (infos, more) = svc.list(
                prefix.as_deref(),
                after.as_deref(),
                i.max_results.unwrap_or(10_000),
            );
            let mut out = json!({ "StreamInfoList": infos });
            if more && let Some(last) = infos.last() {
                out["NextToken"] = json!(encode_token(&last.stream_name));
            }
            ok(out)
        }
        "DeleteStream" => {
            let i: DeleteIn = parse(doc)?;
            svc.delete(&i.stream_arn, i.current_version.as_deref())
                .await?;
            ok(json!({}))
        }
        "UpdateStream" => {
            let i: UpdateIn = parse(doc)?;
            svc.update(
                &i.target.video_ref(),
                &i.current_version,
                i.device_name,
                i.media_type,
            )
            .await?;
            ok(json!({}))
        }
        "UpdateDataRetention" => {
            let i: RetentionIn = parse(doc)?;
            let increase = match i.operation.as_str() {
                "INCREASE_DATA_RETENTION" => true,
                "DECREASE_DATA_RETENTION" => false,
                other => {
                    return Err(VideoApiError::invalid(format!(
                        "Unknown Operation {other}."
                    )));
                }
            };
            svc.update_retention(
                &i.target.video_ref(),
                &i.current_version,
                increase,
                i.data_retention_change_in_hours,
            )
            .await?;
            ok(json!({}))
        }
        "GetDataEndpoint" => {
            let t: Target = parse(doc)?;
            svc.get(&t.video_ref())?;
            // Every data-plane API is served by this same server, at the URL the
            // client can reach (never a Host header stripped of its port).
            ok(json!({ "DataEndpoint": state.base_url(&parts) }))
        }
        "TagStream" => {
            let i: TagStreamIn = parse(doc)?;
            svc.tag(&i.target.video_ref(), i.tags).await?;
            ok(json!({}))
        }
        "UntagStream" => {
            let i: TagStreamIn = parse(doc)?;
            svc.untag(&i.target.video_ref(), &i.tag_key_list).await?;
            ok(json!({}))
        }
        "ListTagsForStream" => {
            let t: Target = parse(doc)?;
            ok(json!({ "Tags": svc.get(&t.video_ref())?.tags }))
        }
        "TagResource" => {
            let i: ResourceTagsIn = parse(doc)?;
            let tags = i
                .tags
                .into_iter()
                .map(|t| (t.key, t.value.unwrap_or_default()))
                .collect();
            svc.tag(&arn_ref(&i.resource_arn), tags).await?;
            ok(json!({}))
        }
        "UntagResource" => {
            let i: ResourceTagsIn = parse(doc)?;
            svc.untag(&arn_ref(&i.resource_arn), &i.tag_key_list)
                .await?;
            ok(json!({}))
        }
        "ListTagsForResource" => {
            let i: ResourceTagsIn = parse(doc)?;
            ok(json!({ "Tags": svc.get(&arn_ref(&i.resource_arn))?.tags }))
        }
        _ => unreachable!("every listed operation is handled"),
    })
}

fn arn_ref(arn: &str) -> VideoRef {
    VideoRef {
        name: None,
        arn: Some(arn.to_string()),
    }
}

fn encode_token(last: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(last)
}

fn decode_token(token: &str) -> Result<String, VideoApiError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| VideoApiError::invalid("Invalid NextToken."))
}
