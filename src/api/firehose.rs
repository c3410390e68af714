//! The Amazon Data Firehose wire protocol: `POST /` with
//! `X-Amz-Target: Firehose_20150804.<Operation>`, bodies in AWS JSON 1.1, as in the
//! Firehose API reference.
//!
//! Requests go the Kinesis way: the body is checked against the official model
//! (`src/api/models/firehose.json`, with the Kinesis model machinery:
//! `SerializationException` / `ValidationException` with AWS's messages), then parsed
//! here into a call of [`crate::delivery::DeliveryService`], whose typed errors are
//! mapped to the wire in `api::error`. What this version does not support is refused
//! with an InvalidArgumentException that names it.

use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::kinesis::model;
use crate::delivery::model::{
    ContentEncoding, HttpBackupMode, HttpEndpointDestination, KinesisSource, S3Destination,
};
use crate::delivery::naming::Compression;
use crate::delivery::{
    CreateRequest, DeliveryService, DestinationUpdate, HttpUpdate, S3Update, UpdateRequest,
};

/// The `X-Amz-Target` prefix of Firehose operations.
pub const TARGET_PREFIX: &str = "Firehose_20150804.";

/// The entry point for `POST /` with a Firehose target.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    super::serve_json11(state, req, run).await
}

async fn run(state: &AppState, target: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    let (op_name, doc) = super::json11_input(model::firehose(), TARGET_PREFIX, target, bytes)?;
    let Some(service) = state.delivery.as_ref() else {
        return Err(ApiError::unknown_operation(format!(
            "Unknown operation {op_name}."
        )));
    };
    apply(service, op_name, &doc).await
}

fn text<'a>(doc: &'a Value, key: &str) -> &'a str {
    doc[key].as_str().unwrap_or("")
}

fn tags_of(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|t| (text(t, "Key").to_string(), text(t, "Value").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

async fn apply(
    service: &std::sync::Arc<DeliveryService>,
    op: &str,
    doc: &Value,
) -> Result<Value, ApiError> {
    let name = text(doc, "DeliveryStreamName");
    Ok(match op {
        "CreateDeliveryStream" => {
            let req = create_request(doc)?;
            let arn = service.create(req).await?;
            json!({ "DeliveryStreamARN": arn })
        }
        "DescribeDeliveryStream" => describe(service, name)?,
        "UpdateDestination" => {
            service.update_destination(update_request(doc)?).await?;
            json!({})
        }
        "ListDeliveryStreams" => {
            let kinesis_source = match doc["DeliveryStreamType"].as_str() {
                None => None,
                Some("DirectPut") => Some(false),
                Some("KinesisStreamAsSource") => Some(true),
                // Sources Freshet does not have: none of its streams.
                Some(_) => {
                    return Ok(
                        json!({ "DeliveryStreamNames": [], "HasMoreDeliveryStreams": false }),
                    );
                }
            };
            let limit = doc["Limit"].as_u64().unwrap_or(10) as usize;
            let (names, more) = service.list(
                doc["ExclusiveStartDeliveryStreamName"].as_str(),
                limit,
                kinesis_source,
            );
            json!({ "DeliveryStreamNames": names, "HasMoreDeliveryStreams": more })
        }
        "DeleteDeliveryStream" => {
            service.delete(name).await?;
            json!({})
        }
        "PutRecord" => {
            let data = decode(&doc["Record"]["Data"])?;
            let ids = service.put_records(name, vec![data]).await?;
            json!({ "RecordId": ids.first(), "Encrypted": false })
        }
        "PutRecordBatch" => {
            let records = doc["Records"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| decode(&r["Data"]))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default();
            let ids = service.put_records(name, records).await?;
            let responses: Vec<Value> = ids.iter().map(|id| json!({ "RecordId": id })).collect();
            json!({ "FailedPutCount": 0, "Encrypted": false, "RequestResponses": responses })
        }
        "TagDeliveryStream" => {
            service.tag(name, tags_of(&doc["Tags"])).await?;
            json!({})
        }
        "UntagDeliveryStream" => {
            let keys = super::json_strings(doc.get("TagKeys"));
            service.untag(name, keys).await?;
            json!({})
        }
        "ListTagsForDeliveryStream" => {
            let limit = doc["Limit"].as_u64().unwrap_or(50) as usize;
            let (tags, more) =
                service.list_tags(name, doc["ExclusiveStartTagKey"].as_str(), limit)?;
            let tags: Vec<Value> = tags
                .into_iter()
                .map(|(k, v)| json!({ "Key": k, "Value": v }))
                .collect();
            json!({ "Tags": tags, "HasMoreTags": more })
        }
        other => {
            return Err(ApiError::invalid_argument(format!(
                "{other} is not supported by Freshet yet (docs/delivery.md)."
            )));
        }
    })
}

fn decode(data: &Value) -> Result<Bytes, ApiError> {
    let s = data.as_str().unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map(Bytes::from)
        .map_err(|_| ApiError::serialization("Base64 encoded data is invalid"))
}

fn unsupported(what: &str) -> ApiError {
    ApiError::invalid_argument(format!(
        "{what} is not supported by Freshet yet; see docs/delivery.md for what delivery streams support."
    ))
}

/// Members of an S3 destination configuration that are accepted only when off.
/// `processing`: whether this configuration may process records (an extended S3 or
/// an HTTP endpoint destination; checked by the delivery service).
fn check_s3_member_support(cfg: &Value, path: &str, processing: bool) -> Result<(), ApiError> {
    for member in [
        "ProcessingConfiguration",
        "DataFormatConversionConfiguration",
        "DynamicPartitioningConfiguration",
    ] {
        if processing
            && (member == "ProcessingConfiguration" || member == "DynamicPartitioningConfiguration")
        {
            continue;
        }
        if cfg[member]["Enabled"].as_bool() == Some(true) {
            return Err(unsupported(&format!("{path}.{member}")));
        }
        if member == "ProcessingConfiguration"
            && cfg[member]["Processors"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        {
            return Err(unsupported(&format!("{path}.{member}")));
        }
    }
    if cfg["S3BackupMode"]
        .as_str()
        .is_some_and(|m| m != "Disabled")
    {
        return Err(unsupported(&format!(
            "{path}.S3BackupMode {}",
            text(cfg, "S3BackupMode")
        )));
    }
    if cfg
        .get("CustomTimeZone")
        .and_then(Value::as_str)
        .is_some_and(|z| z != "UTC")
    {
        return Err(unsupported(&format!("{path}.CustomTimeZone")));
    }
    if let Some(kms) = cfg["EncryptionConfiguration"].get("KMSEncryptionConfig") {
        let _ = kms;
        return Err(unsupported(&format!(
            "{path}.EncryptionConfiguration.KMSEncryptionConfig"
        )));
    }
    Ok(())
}

fn create_request(doc: &Value) -> Result<CreateRequest, ApiError> {
    let mut req = create_destination(doc)?;
    req.source = kinesis_source(doc)?;
    Ok(req)
}

/// `DeliveryStreamType` and `KinesisStreamSourceConfiguration`.
fn kinesis_source(doc: &Value) -> Result<Option<KinesisSource>, ApiError> {
    let cfg = doc.get("KinesisStreamSourceConfiguration");
    match (doc["DeliveryStreamType"].as_str(), cfg) {
        (None | Some("DirectPut"), None) => Ok(None),
        (None | Some("DirectPut"), Some(_)) => Err(ApiError::invalid_argument(
            "KinesisStreamSourceConfiguration is only allowed with DeliveryStreamType KinesisStreamAsSource.",
        )),
        (Some("KinesisStreamAsSource"), None) => Err(ApiError::invalid_argument(
            "KinesisStreamSourceConfiguration is required for KinesisStreamAsSource type DeliveryStream.",
        )),
        (Some("KinesisStreamAsSource"), Some(cfg)) => Ok(Some(KinesisSource {
            stream_arn: text(cfg, "KinesisStreamARN").to_string(),
            role_arn: text(cfg, "RoleARN").to_string(),
            start_ms: 0,
        })),
        (Some(other), _) => Err(unsupported(&format!("DeliveryStreamType {other}"))),
    }
}

fn create_destination(doc: &Value) -> Result<CreateRequest, ApiError> {
    for member in [
        "MSKSourceConfiguration",
        "DatabaseSourceConfiguration",
        "DeliveryStreamEncryptionConfigurationInput",
    ] {
        if doc.get(member).is_some() {
            return Err(unsupported(member));
        }
    }
    let destinations = members_ending(doc, "DestinationConfiguration");
    let (member, cfg) = match destinations.as_slice() {
        [one]
            if *one == "ExtendedS3DestinationConfiguration"
                || *one == "S3DestinationConfiguration" =>
        {
            (*one, &doc[*one])
        }
        ["HttpEndpointDestinationConfiguration"] => {
            return http_create_request(doc, &doc["HttpEndpointDestinationConfiguration"]);
        }
        [one] => return Err(unsupported(one)),
        [] => {
            return Err(ApiError::invalid_argument(
                "Exactly one destination configuration must be specified: Freshet supports ExtendedS3DestinationConfiguration, S3DestinationConfiguration and HttpEndpointDestinationConfiguration.",
            ));
        }
        _ => {
            return Err(ApiError::invalid_argument(format!(
                "Exactly one destination configuration must be specified, got {}.",
                destinations.join(", ")
            )));
        }
    };
    check_s3_member_support(cfg, member, member == "ExtendedS3DestinationConfiguration")?;
    Ok(CreateRequest {
        name: text(doc, "DeliveryStreamName").to_string(),
        destination: s3_destination(cfg, member)?,
        http: None,
        tags: tags_of(&doc["Tags"]),
        source: None,
    })
}

/// The names of `doc`'s members that end with `suffix` (the destination given).
fn members_ending<'a>(doc: &'a Value, suffix: &str) -> Vec<&'a str> {
    doc.as_object()
        .map(|o| {
            o.keys()
                .filter(|k| k.ends_with(suffix))
                .map(String::as_str)
                .collect()
        })
        .unwrap_or_default()
}

/// The members of an HTTP endpoint configuration or update accepted only when off.
fn check_http_member_support(cfg: &Value, member: &str) -> Result<(), ApiError> {
    // S3BackupMode means something else here (FailedDataOnly or AllData, both built).
    let mut shared = cfg.clone();
    if let Some(o) = shared.as_object_mut() {
        o.remove("S3BackupMode");
    }
    check_s3_member_support(&shared, member, true)?;
    if cfg["SecretsManagerConfiguration"]["Enabled"].as_bool() == Some(true) {
        return Err(unsupported(&format!(
            "{member}.SecretsManagerConfiguration"
        )));
    }
    Ok(())
}

fn compression_of(cfg: &Value, member: &str) -> Result<Option<Compression>, ApiError> {
    match cfg["CompressionFormat"].as_str() {
        None => Ok(None),
        Some("UNCOMPRESSED") => Ok(Some(Compression::Uncompressed)),
        Some("GZIP") => Ok(Some(Compression::Gzip)),
        Some("ZIP") => Ok(Some(Compression::Zip)),
        Some("Snappy") => Ok(Some(Compression::Snappy)),
        Some("HADOOP_SNAPPY") => Ok(Some(Compression::HadoopSnappy)),
        Some(other) => Err(unsupported(&format!("{member}.CompressionFormat {other}"))),
    }
}

fn opt_u32(v: &Value) -> Option<u32> {
    v.as_u64().map(|n| n.min(u64::from(u32::MAX)) as u32)
}

fn opt_string(v: &Value) -> Option<String> {
    v.as_str().map(String::from)
}

/// UpdateDestination (already checked against the model): exactly one destination
/// update, with the members CreateDeliveryStream supports.
fn update_request(doc: &Value) -> Result<UpdateRequest, ApiError> {
    let updates = members_ending(doc, "DestinationUpdate");
    let update = match updates.as_slice() {
        [one @ ("S3DestinationUpdate" | "ExtendedS3DestinationUpdate")] => {
            let cfg = &doc[*one];
            check_s3_member_support(cfg, one, *one == "ExtendedS3DestinationUpdate")?;
            if cfg.get("S3BackupUpdate").is_some() {
                return Err(unsupported(&format!("{one}.S3BackupUpdate")));
            }
            DestinationUpdate::S3(s3_update(cfg, one)?)
        }
        ["HttpEndpointDestinationUpdate"] => DestinationUpdate::Http(Box::new(http_update(
            &doc["HttpEndpointDestinationUpdate"],
        )?)),
        [one] => return Err(unsupported(one)),
        [] => {
            return Err(ApiError::invalid_argument(
                "Exactly one destination update must be specified: Freshet supports ExtendedS3DestinationUpdate, S3DestinationUpdate and HttpEndpointDestinationUpdate.",
            ));
        }
        _ => {
            return Err(ApiError::invalid_argument(format!(
                "Exactly one destination update must be specified, got {}.",
                updates.join(", ")
            )));
        }
    };
    Ok(UpdateRequest {
        name: text(doc, "DeliveryStreamName").to_string(),
        current_version: text(doc, "CurrentDeliveryStreamVersionId").to_string(),
        destination_id: text(doc, "DestinationId").to_string(),
        update,
    })
}

fn s3_update(cfg: &Value, member: &str) -> Result<S3Update, ApiError> {
    let hints = &cfg["BufferingHints"];
    Ok(S3Update {
        role_arn: opt_string(&cfg["RoleARN"]),
        bucket_arn: opt_string(&cfg["BucketARN"]),
        prefix: opt_string(&cfg["Prefix"]),
        error_output_prefix: opt_string(&cfg["ErrorOutputPrefix"]),
        size_mbs: opt_u32(&hints["SizeInMBs"]),
        interval_secs: opt_u32(&hints["IntervalInSeconds"]),
        compression: compression_of(cfg, member)?,
        file_extension: opt_string(&cfg["FileExtension"]),
        extended: member == "ExtendedS3DestinationUpdate",
        processing: cfg.get("ProcessingConfiguration").cloned(),
        dynamic_partitioning: cfg["DynamicPartitioningConfiguration"]["Enabled"].as_bool(),
    })
}

fn http_update(cfg: &Value) -> Result<HttpUpdate, ApiError> {
    const MEMBER: &str = "HttpEndpointDestinationUpdate";
    check_http_member_support(cfg, MEMBER)?;
    let s3 = match cfg.get("S3Update") {
        Some(backup) => {
            let path = format!("{MEMBER}.S3Update");
            check_s3_member_support(backup, &path, false)?;
            Some(s3_update(backup, &path)?)
        }
        None => None,
    };
    let endpoint = &cfg["EndpointConfiguration"];
    let hints = &cfg["BufferingHints"];
    let request = &cfg["RequestConfiguration"];
    Ok(HttpUpdate {
        url: opt_string(&endpoint["Url"]),
        name: opt_string(&endpoint["Name"]),
        access_key: opt_string(&endpoint["AccessKey"]),
        size_mbs: opt_u32(&hints["SizeInMBs"]),
        interval_secs: opt_u32(&hints["IntervalInSeconds"]),
        content_encoding: request["ContentEncoding"].as_str().map(|e| match e {
            "GZIP" => ContentEncoding::Gzip,
            _ => ContentEncoding::None,
        }),
        common_attributes: request["CommonAttributes"].as_array().map(|a| {
            a.iter()
                .map(|t| {
                    (
                        text(t, "AttributeName").to_string(),
                        text(t, "AttributeValue").to_string(),
                    )
                })
                .collect()
        }),
        retry_secs: opt_u32(&cfg["RetryOptions"]["DurationInSeconds"]),
        backup_mode: cfg["S3BackupMode"].as_str().map(|m| match m {
            "AllData" => HttpBackupMode::AllData,
            _ => HttpBackupMode::FailedDataOnly,
        }),
        role_arn: opt_string(&cfg["RoleARN"]),
        cloudwatch: cfg.get("CloudWatchLoggingOptions").cloned(),
        processing: cfg.get("ProcessingConfiguration").cloned(),
        s3,
    })
}

/// An S3 destination (or an HTTP endpoint's backup bucket) from its configuration.
fn s3_destination(cfg: &Value, member: &str) -> Result<S3Destination, ApiError> {
    let compression = compression_of(cfg, member)?.unwrap_or(Compression::Uncompressed);
    let hints = &cfg["BufferingHints"];
    let opt = |key: &str| {
        cfg[key]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    Ok(S3Destination {
        role_arn: text(cfg, "RoleARN").to_string(),
        bucket_arn: text(cfg, "BucketARN").to_string(),
        prefix: opt("Prefix"),
        error_output_prefix: opt("ErrorOutputPrefix"),
        size_mbs: hints["SizeInMBs"].as_u64().unwrap_or(5) as u32,
        interval_secs: hints["IntervalInSeconds"].as_u64().unwrap_or(300) as u32,
        compression,
        file_extension: opt("FileExtension"),
        extended: member == "ExtendedS3DestinationConfiguration",
        processing: cfg.get("ProcessingConfiguration").cloned(),
        dynamic_partitioning: cfg["DynamicPartitioningConfiguration"]["Enabled"].as_bool()
            == Some(true),
    })
}

/// `HttpEndpointDestinationConfiguration` (already checked against the model: the Url
/// is there, the hints and retry duration are in range, the enums are AWS's).
fn http_create_request(doc: &Value, cfg: &Value) -> Result<CreateRequest, ApiError> {
    const MEMBER: &str = "HttpEndpointDestinationConfiguration";
    check_http_member_support(cfg, MEMBER)?;
    let backup_cfg = &cfg["S3Configuration"];
    check_s3_member_support(backup_cfg, &format!("{MEMBER}.S3Configuration"), false)?;
    let endpoint = &cfg["EndpointConfiguration"];
    let hints = &cfg["BufferingHints"];
    let request = &cfg["RequestConfiguration"];
    let content_encoding = match request["ContentEncoding"].as_str() {
        Some("GZIP") => ContentEncoding::Gzip,
        _ => ContentEncoding::None,
    };
    let common_attributes = request["CommonAttributes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    (
                        text(t, "AttributeName").to_string(),
                        text(t, "AttributeValue").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let backup_mode = match cfg["S3BackupMode"].as_str() {
        Some("AllData") => HttpBackupMode::AllData,
        _ => HttpBackupMode::FailedDataOnly,
    };
    let opt = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(String::from);
    let http = HttpEndpointDestination {
        url: text(endpoint, "Url").to_string(),
        name: opt(&endpoint["Name"]),
        access_key: opt(&endpoint["AccessKey"]),
        size_mbs: hints["SizeInMBs"].as_u64().unwrap_or(5) as u32,
        interval_secs: hints["IntervalInSeconds"].as_u64().unwrap_or(300) as u32,
        content_encoding,
        common_attributes,
        retry_secs: cfg["RetryOptions"]["DurationInSeconds"]
            .as_u64()
            .unwrap_or(300) as u32,
        backup_mode,
        role_arn: opt(&cfg["RoleARN"]),
        cloudwatch: cfg.get("CloudWatchLoggingOptions").cloned(),
        processing: cfg.get("ProcessingConfiguration").cloned(),
    };
    Ok(CreateRequest {
        name: text(doc, "DeliveryStreamName").to_string(),
        destination: s3_destination(backup_cfg, &format!("{MEMBER}.S3Configuration"))?,
        http: Some(http),
        tags: tags_of(&doc["Tags"]),
        source: None,
    })
}

fn describe(service: &DeliveryService, name: &str) -> Result<Value, ApiError> {
    let d = service.describe(name)?;
    let m = &d.meta;
    let dest = &m.destination;
    let mut s3 = json!({
        "RoleARN": dest.role_arn,
        "BucketARN": dest.bucket_arn,
        "BufferingHints": { "SizeInMBs": dest.size_mbs, "IntervalInSeconds": dest.interval_secs },
        "CompressionFormat": dest.compression.as_str(),
        "EncryptionConfiguration": { "NoEncryptionConfig": "NoEncryption" },
        "CloudWatchLoggingOptions": { "Enabled": false },
    });
    if let Some(p) = &dest.prefix {
        s3["Prefix"] = json!(p);
    }
    if let Some(p) = &dest.error_output_prefix {
        s3["ErrorOutputPrefix"] = json!(p);
    }
    if let Some(http) = &m.http {
        let mut out = stream_description(
            &d,
            json!({
                "DestinationId": crate::delivery::DESTINATION_ID,
                "HttpEndpointDestinationDescription": http_description(http, s3),
            }),
        );
        if let Some(f) = &d.failure {
            out["FailureDescription"] = json!({ "Type": "UNKNOWN_ERROR", "Details": f });
        }
        return Ok(json!({ "DeliveryStreamDescription": out }));
    }
    let mut extended = s3.clone();
    extended["S3BackupMode"] = json!("Disabled");
    if let Some(ext) = &dest.file_extension {
        extended["FileExtension"] = json!(ext);
    }
    if let Some(p) = &dest.processing {
        extended["ProcessingConfiguration"] = p.clone();
    }
    if dest.dynamic_partitioning {
        extended["DynamicPartitioningConfiguration"] = json!({
            "Enabled": true,
            "RetryOptions": { "DurationInSeconds": 300 },
        });
    }
    let mut out = stream_description(
        &d,
        json!({
            "DestinationId": crate::delivery::DESTINATION_ID,
            "S3DestinationDescription": s3,
            "ExtendedS3DestinationDescription": extended,
        }),
    );
    if let Some(f) = d.failure {
        out["FailureDescription"] = json!({ "Type": "UNKNOWN_ERROR", "Details": f });
    }
    Ok(json!({ "DeliveryStreamDescription": out }))
}

/// A `DeliveryStreamDescription` around its one destination.
fn stream_description(d: &crate::delivery::Described, destination: Value) -> Value {
    let m = &d.meta;
    let mut out = json!({
        "DeliveryStreamName": m.name,
        "DeliveryStreamARN": d.arn,
        "DeliveryStreamStatus": m.status.as_str(),
        "DeliveryStreamEncryptionConfiguration": { "Status": "DISABLED" },
        "DeliveryStreamType": if m.source.is_some() { "KinesisStreamAsSource" } else { "DirectPut" },
        "VersionId": m.version.to_string(),
        "CreateTimestamp": m.created_ms as f64 / 1000.0,
        "Destinations": [destination],
        "HasMoreDestinations": false,
    });
    if let Some(source) = &m.source {
        out["Source"] = json!({ "KinesisStreamSourceDescription": {
            "KinesisStreamARN": source.stream_arn,
            "RoleARN": source.role_arn,
            "DeliveryStartTimestamp": source.start_ms as f64 / 1000.0,
        }});
    }
    if m.version > 1 {
        out["LastUpdateTimestamp"] = json!(m.updated_ms as f64 / 1000.0);
    }
    out
}

/// `HttpEndpointDestinationDescription`: as configured, but never the AccessKey.
fn http_description(http: &HttpEndpointDestination, s3: Value) -> Value {
    let mut endpoint = json!({ "Url": http.url });
    if let Some(n) = &http.name {
        endpoint["Name"] = json!(n);
    }
    let attributes: Vec<Value> = http
        .common_attributes
        .iter()
        .map(|(k, v)| json!({ "AttributeName": k, "AttributeValue": v }))
        .collect();
    let mut out = json!({
        "EndpointConfiguration": endpoint,
        "BufferingHints": { "SizeInMBs": http.size_mbs, "IntervalInSeconds": http.interval_secs },
        "CloudWatchLoggingOptions": http.cloudwatch.clone().unwrap_or_else(|| json!({ "Enabled": false })),
        "RequestConfiguration": {
            "ContentEncoding": http.content_encoding.as_str(),
            "CommonAttributes": attributes,
        },
        "RetryOptions": { "DurationInSeconds": http.retry_secs },
        "S3BackupMode": http.backup_mode.as_str(),
        "S3DestinationDescription": s3,
    });
    if let Some(role) = &http.role_arn {
        out["RoleARN"] = json!(role);
    }
    if let Some(p) = &http.processing {
        out["ProcessingConfiguration"] = p.clone();
    }
    out
}
