//! One variant per supported Kinesis operation: its input shape (as in the API model),
//! how it is parsed from the request document, and how it runs against the
//! [`StreamService`]. Outputs are the API's output shapes.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Output;
use crate::api::error::ApiError;
use crate::streams::model::{StreamMode, Tag};
use crate::streams::{PutRecordsEntry, RecordInput, ShardFilter, StreamRef, StreamService};

#[derive(Debug, Default, Deserialize)]
pub struct Target {
    #[serde(rename = "StreamName")]
    name: Option<String>,
    #[serde(rename = "StreamARN")]
    arn: Option<String>,
}

impl Target {
    fn stream(&self) -> StreamRef {
        StreamRef {
            name: self.name.clone(),
            arn: self.arn.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModeDetails {
    stream_mode: StreamMode,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateStream {
    stream_name: String,
    shard_count: Option<u32>,
    stream_mode_details: Option<ModeDetails>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteStream {
    #[serde(flatten)]
    target: Target,
    #[serde(default)]
    enforce_consumer_deletion: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeStream {
    #[serde(flatten)]
    target: Target,
    limit: Option<usize>,
    exclusive_start_shard_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListStreams {
    limit: Option<usize>,
    exclusive_start_stream_name: Option<String>,
    next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ShardFilterIn {
    #[serde(rename = "Type")]
    kind: String,
    shard_id: Option<String>,
    timestamp: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListShards {
    #[serde(flatten)]
    target: Target,
    next_token: Option<String>,
    exclusive_start_shard_id: Option<String>,
    max_results: Option<usize>,
    shard_filter: Option<ShardFilterIn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutRecord {
    #[serde(flatten)]
    target: Target,
    data: String,
    partition_key: Option<String>,
    explicit_hash_key: Option<String>,
    sequence_number_for_ordering: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutRecordsEntryIn {
    data: String,
    partition_key: Option<String>,
    explicit_hash_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutRecordsIn {
    #[serde(flatten)]
    target: Target,
    records: Vec<PutRecordsEntryIn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetShardIterator {
    #[serde(flatten)]
    target: Target,
    shard_id: String,
    shard_iterator_type: String,
    starting_sequence_number: Option<String>,
    timestamp: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetRecords {
    shard_iterator: String,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Retention {
    #[serde(flatten)]
    target: Target,
    retention_period_hours: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SplitShard {
    #[serde(flatten)]
    target: Target,
    shard_to_split: String,
    new_starting_hash_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MergeShards {
    #[serde(flatten)]
    target: Target,
    shard_to_merge: String,
    adjacent_shard_to_merge: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateShardCount {
    #[serde(flatten)]
    target: Target,
    target_shard_count: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateStreamMode {
    #[serde(rename = "StreamARN")]
    stream_arn: String,
    stream_mode_details: ModeDetails,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddTags {
    #[serde(flatten)]
    target: Target,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RemoveTags {
    #[serde(flatten)]
    target: Target,
    tag_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListTagsForStream {
    #[serde(flatten)]
    target: Target,
    exclusive_start_tag_key: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceTags {
    #[serde(rename = "ResourceARN")]
    resource_arn: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    tag_keys: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Monitoring {
    #[serde(flatten)]
    target: Target,
    shard_level_metrics: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Encryption {
    #[serde(flatten)]
    target: Target,
    encryption_type: String,
    key_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Policy {
    #[serde(rename = "ResourceARN")]
    resource_arn: String,
    policy: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConsumerIn {
    next_token: Option<String>,
    max_results: Option<usize>,
    #[serde(rename = "StreamARN")]
    stream_arn: Option<String>,
    consumer_name: Option<String>,
    #[serde(rename = "ConsumerARN")]
    consumer_arn: Option<String>,
}

/// A parsed request, one variant per operation.
pub enum Operation {
    CreateStream(CreateStream),
    DeleteStream(DeleteStream),
    DescribeStream(DescribeStream),
    DescribeStreamSummary(Target),
    ListStreams(ListStreams),
    ListShards(ListShards),
    PutRecord(PutRecord),
    PutRecords(PutRecordsIn),
    GetShardIterator(GetShardIterator),
    GetRecords(GetRecords),
    IncreaseRetention(Retention),
    DecreaseRetention(Retention),
    SplitShard(SplitShard),
    MergeShards(MergeShards),
    UpdateShardCount(UpdateShardCount),
    UpdateStreamMode(UpdateStreamMode),
    DescribeLimits,
    AddTagsToStream(AddTags),
    RemoveTagsFromStream(RemoveTags),
    ListTagsForStream(ListTagsForStream),
    TagResource(ResourceTags),
    UntagResource(ResourceTags),
    ListTagsForResource(ResourceTags),
    EnableEnhancedMonitoring(Monitoring),
    DisableEnhancedMonitoring(Monitoring),
    StartStreamEncryption(Encryption),
    StopStreamEncryption(Encryption),
    PutResourcePolicy(Policy),
    GetResourcePolicy(Policy),
    DeleteResourcePolicy(Policy),
    RegisterStreamConsumer(ConsumerIn),
    DeregisterStreamConsumer(ConsumerIn),
    DescribeStreamConsumer(ConsumerIn),
    ListStreamConsumers(ConsumerIn),
}

fn from_doc<T: DeserializeOwned>(doc: Value) -> Result<T, ApiError> {
    serde_json::from_value(doc).map_err(|e| ApiError::serialization(e.to_string()))
}

fn blob(text: &str) -> Result<Bytes, ApiError> {
    STANDARD.decode(text).map(Bytes::from).map_err(|e| {
        ApiError::serialization(format!("'{text}' can not be converted to a Blob: {e}"))
    })
}

/// AWS's message for required members that are absent (at most 10 listed).
fn null_member_errors(paths: &[String]) -> String {
    let items: Vec<String> = paths
        .iter()
        .take(10)
        .map(|p| {
            format!("Value null at '{p}' failed to satisfy constraint: Member must not be null")
        })
        .collect();
    let n = items.len();
    format!(
        "{n} validation error{} detected: {}",
        if n == 1 { "" } else { "s" },
        items.join("; ")
    )
}

/// Decodes a pagination token of ours (base64 of the last key of the previous page).
fn decode_token(token: &str) -> Result<String, ApiError> {
    STANDARD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            crate::streams::StreamError::InvalidArgument("Invalid NextToken.".into()).into()
        })
}

fn secs_to_ms(secs: f64) -> i64 {
    (secs * 1000.0).round() as i64
}

impl Operation {
    /// Parses a validated request document for operation `name`.
    pub fn parse(name: &str, doc: Value) -> Result<Self, ApiError> {
        Ok(match name {
            "CreateStream" => Self::CreateStream(from_doc(doc)?),
            "DeleteStream" => Self::DeleteStream(from_doc(doc)?),
            "DescribeStream" => Self::DescribeStream(from_doc(doc)?),
            "DescribeStreamSummary" => Self::DescribeStreamSummary(from_doc(doc)?),
            "ListStreams" => Self::ListStreams(from_doc(doc)?),
            "ListShards" => Self::ListShards(from_doc(doc)?),
            "PutRecord" => Self::PutRecord(from_doc(doc)?),
            "PutRecords" => Self::PutRecords(from_doc(doc)?),
            "GetShardIterator" => Self::GetShardIterator(from_doc(doc)?),
            "GetRecords" => Self::GetRecords(from_doc(doc)?),
            "IncreaseStreamRetentionPeriod" => Self::IncreaseRetention(from_doc(doc)?),
            "DecreaseStreamRetentionPeriod" => Self::DecreaseRetention(from_doc(doc)?),
            "SplitShard" => Self::SplitShard(from_doc(doc)?),
            "MergeShards" => Self::MergeShards(from_doc(doc)?),
            "UpdateShardCount" => Self::UpdateShardCount(from_doc(doc)?),
            "UpdateStreamMode" => Self::UpdateStreamMode(from_doc(doc)?),
            "DescribeLimits" => Self::DescribeLimits,
            "AddTagsToStream" => Self::AddTagsToStream(from_doc(doc)?),
            "RemoveTagsFromStream" => Self::RemoveTagsFromStream(from_doc(doc)?),
            "ListTagsForStream" => Self::ListTagsForStream(from_doc(doc)?),
            "TagResource" => Self::TagResource(from_doc(doc)?),
            "UntagResource" => Self::UntagResource(from_doc(doc)?),
            "ListTagsForResource" => Self::ListTagsForResource(from_doc(doc)?),
            "EnableEnhancedMonitoring" => Self::EnableEnhancedMonitoring(from_doc(doc)?),
            "DisableEnhancedMonitoring" => Self::DisableEnhancedMonitoring(from_doc(doc)?),
            "StartStreamEncryption" => Self::StartStreamEncryption(from_doc(doc)?),
            "StopStreamEncryption" => Self::StopStreamEncryption(from_doc(doc)?),
            "PutResourcePolicy" => Self::PutResourcePolicy(from_doc(doc)?),
            "GetResourcePolicy" => Self::GetResourcePolicy(from_doc(doc)?),
            "DeleteResourcePolicy" => Self::DeleteResourcePolicy(from_doc(doc)?),
            "RegisterStreamConsumer" => Self::RegisterStreamConsumer(from_doc(doc)?),
            "DeregisterStreamConsumer" => Self::DeregisterStreamConsumer(from_doc(doc)?),
            "DescribeStreamConsumer" => Self::DescribeStreamConsumer(from_doc(doc)?),
            "ListStreamConsumers" => Self::ListStreamConsumers(from_doc(doc)?),
            other => {
                return Err(ApiError::unknown_operation(format!(
                    "Operation {other} is not supported by this server."
                )));
            }
        })
    }

    /// Runs the operation.
    pub async fn apply(self, svc: &Arc<StreamService>) -> Result<Output, ApiError> {
        let empty = || Output::Doc(json!({}));
        Ok(match self {
            Self::CreateStream(i) => {
                let mode = i
                    .stream_mode_details
                    .map(|m| m.stream_mode)
                    .unwrap_or(StreamMode::Provisioned);
                svc.create_stream(&i.stream_name, i.shard_count, mode, i.tags)
                    .await?;
                empty()
            }
            Self::DeleteStream(i) => {
                svc.delete_stream(&i.target.stream(), i.enforce_consumer_deletion)
                    .await?;
                empty()
            }
            Self::DescribeStream(i) => {
                let d = svc.describe_stream(
                    &i.target.stream(),
                    i.limit,
                    i.exclusive_start_shard_id.as_deref(),
                )?;
                Output::Doc(json!({ "StreamDescription": d }))
            }
            Self::DescribeStreamSummary(t) => {
                let d = svc.describe_stream_summary(&t.stream())?;
                Output::Doc(json!({ "StreamDescriptionSummary": d }))
            }
            Self::ListStreams(i) => {
                let limit = i.limit.unwrap_or(100).clamp(1, 10_000);
                // NextToken is the last name of the previous page.
                let start = match &i.next_token {
                    Some(t) => Some(decode_token(t)?),
                    None => i.exclusive_start_stream_name.clone(),
                };
                let (summaries, more) = svc.list_streams(start.as_deref(), limit);
                let mut out = json!({
                    "StreamNames": summaries.iter().map(|s| s.stream_name.clone()).collect::<Vec<_>>(),
                    "HasMoreStreams": more,
                    "StreamSummaries": summaries,
                });
                if more
                    && let Some(last) = out["StreamNames"]
                        .as_array()
                        .and_then(|a| a.last())
                        .and_then(|v| v.as_str())
                {
                    out["NextToken"] = json!(STANDARD.encode(last));
                }
                Output::Doc(out)
            }
            Self::ListShards(i) => {
                let has_stream = i.target.name.is_some() || i.target.arn.is_some();
                let stream = i.target.stream();
                let filter = i.shard_filter.map(|f| ShardFilter {
                    kind: f.kind,
                    shard_id: f.shard_id,
                    timestamp_ms: f.timestamp.map(secs_to_ms),
                });
                let (shards, token) = svc.list_shards(
                    has_stream.then_some(&stream),
                    i.next_token.as_deref(),
                    i.exclusive_start_shard_id.as_deref(),
                    i.max_results,
                    filter,
                )?;
                let mut out = json!({ "Shards": shards });
                if let Some(t) = token {
                    out["NextToken"] = json!(t);
                }
                Output::Doc(out)
            }
            Self::PutRecord(i) => {
                let partition_key = i.partition_key.ok_or_else(|| {
                    ApiError::validation(null_member_errors(&["partitionKey".to_string()]))
                })?;
                let record = RecordInput {
                    partition_key,
                    explicit_hash_key: i.explicit_hash_key,
                    data: blob(&i.data)?,
                };
                let (shard, seq, encrypted) = svc
                    .put_record(
                        &i.target.stream(),
                        record,
                        i.sequence_number_for_ordering.as_deref(),
                    )
                    .await?;
                let mut out = json!({ "ShardId": shard, "SequenceNumber": seq });
                if encrypted {
                    out["EncryptionType"] = json!("KMS");
                }
                Output::Doc(out)
            }
            Self::PutRecords(i) => {
                let missing: Vec<String> = i
                    .records
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.partition_key.is_none())
                    .map(|(n, _)| format!("records.{}.member.partitionKey", n + 1))
                    .collect();
                if !missing.is_empty() {
                    return Err(ApiError::validation(null_member_errors(&missing)));
                }
                let records = i
                    .records
                    .into_iter()
                    .map(|r| {
                        Ok(RecordInput {
                            partition_key: r.partition_key.unwrap_or_default(),
                            explicit_hash_key: r.explicit_hash_key,
                            data: blob(&r.data)?,
                        })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()?;
                put_records(
                    svc,
                    FastPutRecords {
                        target: i.target.stream(),
                        records,
                    },
                )
                .await?
            }
            Self::GetShardIterator(i) => {
                let it = svc
                    .get_shard_iterator(
                        &i.target.stream(),
                        &i.shard_id,
                        &i.shard_iterator_type,
                        i.starting_sequence_number.as_deref(),
                        i.timestamp.map(secs_to_ms),
                    )
                    .await?;
                Output::Doc(json!({ "ShardIterator": it }))
            }
            Self::GetRecords(i) => {
                let out = svc.get_records(&i.shard_iterator, i.limit).await?;
                Output::Rendered(render_get_records(&out))
            }
            Self::IncreaseRetention(i) => {
                svc.increase_retention(&i.target.stream(), i.retention_period_hours)
                    .await?;
                empty()
            }
            Self::DecreaseRetention(i) => {
                svc.decrease_retention(&i.target.stream(), i.retention_period_hours)
                    .await?;
                empty()
            }
            Self::SplitShard(i) => {
                svc.split_shard(
                    &i.target.stream(),
                    &i.shard_to_split,
                    &i.new_starting_hash_key,
                )
                .await?;
                empty()
            }
            Self::MergeShards(i) => {
                svc.merge_shards(
                    &i.target.stream(),
                    &i.shard_to_merge,
                    &i.adjacent_shard_to_merge,
                )
                .await?;
                empty()
            }
            Self::UpdateShardCount(i) => {
                let (current, meta) = svc
                    .update_shard_count(&i.target.stream(), i.target_shard_count)
                    .await?;
                Output::Doc(json!({
                    "StreamName": meta.name,
                    "StreamARN": svc.stream_arn(&meta.name),
                    "CurrentShardCount": current,
                    "TargetShardCount": i.target_shard_count,
                }))
            }
            Self::UpdateStreamMode(i) => {
                let r = StreamRef {
                    name: None,
                    arn: Some(i.stream_arn),
                };
                svc.update_stream_mode(&r, i.stream_mode_details.stream_mode)
                    .await?;
                empty()
            }
            Self::DescribeLimits => {
                let (limit, open, on_demand, on_demand_limit) = svc.describe_limits();
                Output::Doc(json!({
                    "ShardLimit": limit,
                    "OpenShardCount": open,
                    "OnDemandStreamCount": on_demand,
                    "OnDemandStreamCountLimit": on_demand_limit,
                }))
            }
            Self::AddTagsToStream(i) => {
                svc.add_tags(&i.target.stream(), i.tags).await?;
                empty()
            }
            Self::RemoveTagsFromStream(i) => {
                svc.remove_tags(&i.target.stream(), &i.tag_keys).await?;
                empty()
            }
            Self::ListTagsForStream(i) => {
                let (tags, more) = svc.list_tags(
                    &i.target.stream(),
                    i.exclusive_start_tag_key.as_deref(),
                    i.limit.unwrap_or(50).clamp(1, 50),
                )?;
                Output::Doc(json!({ "Tags": tags, "HasMoreTags": more }))
            }
            Self::TagResource(i) => {
                let r = svc.stream_of_resource(&i.resource_arn)?;
                svc.add_tags(&r, i.tags).await?;
                empty()
            }
            Self::UntagResource(i) => {
                let r = svc.stream_of_resource(&i.resource_arn)?;
                svc.remove_tags(&r, &i.tag_keys).await?;
                empty()
            }
            Self::ListTagsForResource(i) => {
                let r = svc.stream_of_resource(&i.resource_arn)?;
                let (tags, _) = svc.list_tags(&r, None, usize::MAX)?;
                let tags: Vec<Tag> = tags;
                Output::Doc(json!({ "Tags": tags }))
            }
            Self::EnableEnhancedMonitoring(i) => monitoring(svc, i, true).await?,
            Self::DisableEnhancedMonitoring(i) => monitoring(svc, i, false).await?,
            Self::StartStreamEncryption(i) => {
                if i.encryption_type != "KMS" {
                    return Err(crate::streams::StreamError::InvalidArgument(format!(
                        "Encryption type {} is not supported. Use KMS.",
                        i.encryption_type
                    ))
                    .into());
                }
                svc.set_encryption(&i.target.stream(), Some(i.key_id))
                    .await?;
                empty()
            }
            Self::StopStreamEncryption(i) => {
                svc.set_encryption(&i.target.stream(), None).await?;
                empty()
            }
            Self::PutResourcePolicy(i) => {
                svc.put_policy(&i.resource_arn, i.policy.as_deref().unwrap_or_default())
                    .await?;
                empty()
            }
            Self::GetResourcePolicy(i) => {
                Output::Doc(json!({ "Policy": svc.get_policy(&i.resource_arn)? }))
            }
            Self::DeleteResourcePolicy(i) => {
                svc.delete_policy(&i.resource_arn).await?;
                empty()
            }
            Self::RegisterStreamConsumer(i) => {
                let c = svc
                    .register_consumer(
                        i.stream_arn.as_deref().unwrap_or_default(),
                        i.consumer_name.as_deref().unwrap_or_default(),
                    )
                    .await?;
                Output::Doc(json!({ "Consumer": c }))
            }
            Self::DeregisterStreamConsumer(i) => {
                svc.deregister_consumer(
                    i.stream_arn.as_deref(),
                    i.consumer_name.as_deref(),
                    i.consumer_arn.as_deref(),
                )
                .await?;
                empty()
            }
            Self::DescribeStreamConsumer(i) => {
                let c = svc.describe_consumer(
                    i.stream_arn.as_deref(),
                    i.consumer_name.as_deref(),
                    i.consumer_arn.as_deref(),
                )?;
                Output::Doc(json!({ "ConsumerDescription": c }))
            }
            Self::ListStreamConsumers(i) => {
                let after = match &i.next_token {
                    Some(t) => Some(decode_token(t)?),
                    None => None,
                };
                let (cs, more) = svc.list_consumers(
                    i.stream_arn.as_deref().unwrap_or_default(),
                    after.as_deref(),
                    i.max_results.unwrap_or(100).clamp(1, 10_000),
                )?;
                let mut out = json!({ "Consumers": cs });
                if more && let Some(last) = cs.last() {
                    out["NextToken"] = json!(STANDARD.encode(&last.consumer_name));
                }
                Output::Doc(out)
            }
        })
    }
}

async fn monitoring(
    svc: &Arc<StreamService>,
    i: Monitoring,
    enable: bool,
) -> Result<Output, ApiError> {
    let (name, current, desired) = svc
        .set_enhanced_monitoring(&i.target.stream(), &i.shard_level_metrics, enable)
        .await?;
    Ok(Output::Doc(json!({
        "StreamName": name,
        "StreamARN": svc.stream_arn(&name),
        "CurrentShardLevelMetrics": current,
        "DesiredShardLevelMetrics": desired,
    })))
}

/// PutRecords input after decoding.
pub struct FastPutRecords {
    target: StreamRef,
    records: Vec<RecordInput>,
}

/// Most data (record data plus partition keys) in one PutRecords call.
const PUT_RECORDS_MAX_BYTES: usize = 5 * 1024 * 1024;

pub async fn put_records(
    svc: &Arc<StreamService>,
    input: FastPutRecords,
) -> Result<Output, ApiError> {
    let total: usize = input
        .records
        .iter()
        .map(|r| r.data.len() + r.partition_key.len())
        .sum();
    if total > PUT_RECORDS_MAX_BYTES {
        return Err(crate::streams::StreamError::InvalidArgument(format!(
            "Records size exceeds the limit of {PUT_RECORDS_MAX_BYTES} bytes for a PutRecords request: {total} bytes."
        ))
        .into());
    }
    let result = svc.put_records(&input.target, input.records).await?;
    let mut out = String::with_capacity(64 + result.entries.len() * 110);
    out.push_str(&format!(
        "{{\"FailedRecordCount\":{},\"Records\":[",
        result.failed
    ));
    for (i, e) in result.entries.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match e {
            PutRecordsEntry::Ok { sequence } => {
                out.push_str("{\"SequenceNumber\":\"");
                sequence.write_to(&mut out);
                out.push_str("\",\"ShardId\":\"shardId-");
                push_padded(&mut out, sequence.shard_ordinal as u64, 12);
                out.push_str("\"}");
            }
            PutRecordsEntry::Failed {
                error_code,
                error_message,
                ..
            } => {
                out.push_str(
                    &serde_json::to_string(
                        &json!({"ErrorCode": error_code, "ErrorMessage": error_message}),
                    )
                    .unwrap_or_default(),
                );
            }
        }
    }
    out.push(']');
    if result.encrypted {
        out.push_str(",\"EncryptionType\":\"KMS\"");
    }
    out.push('}');
    Ok(Output::Rendered(out.into_bytes()))
}

/// Appends `n` as decimal, zero-padded to `width` digits.
fn push_padded(out: &mut String, n: u64, width: usize) {
    let digits = n.to_string();
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(&digits);
}

/// Borrowing view of a PutRecords request for the fast path.
#[derive(Default)]
struct FastIn<'a> {
    stream_name: Option<&'a str>,
    stream_arn: Option<&'a str>,
    records: Vec<FastEntry<'a>>,
}

#[derive(Default)]
struct FastEntry<'a> {
    /// Base64 text, not yet checked (the decoder checks it).
    data: &'a [u8],
    partition_key: &'a str,
    explicit_hash_key: Option<&'a str>,
}

/// A scanner for the plain shape of a PutRecords body: one object with `StreamName`,
/// `StreamARN` and `Records` (objects with `Data`, `PartitionKey`, `ExplicitHashKey`),
/// string values without escapes, any whitespace and member order. Anything else
/// (escapes, nulls, unknown or repeated members, other types) makes it give up, and the
/// request takes the generic path. It exists because a general JSON parser spends most
/// of its time re-checking the base64 payloads byte by byte.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// A string without escapes or control characters, as raw bytes.
    fn raw_string(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let rest = &self.b[self.i..];
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] != b'"' {
            return None;
        }
        let s = &rest[..end];
        self.i += end + 1;
        Some(s)
    }

    /// A string that must be base64: it ends at the first quote, since an escaped
    /// quote would leave a backslash in it, which the base64 decoder refuses (the
    /// request then takes the generic path). One search instead of two.
    fn base64_string(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let rest = &self.b[self.i..];
        let end = memchr::memchr(b'"', rest)?;
        let s = &rest[..end];
        self.i += end + 1;
        Some(s)
    }

    /// A short string (key, name): also checked for UTF-8 and control characters.
    fn string(&mut self) -> Option<&'a str> {
        let raw = self.raw_string()?;
        if raw.iter().any(|&c| c < 0x20) {
            return None;
        }
        std::str::from_utf8(raw).ok()
    }

    /// `{ "key": value, ... }`, calling `member` for each key with the scanner
    /// positioned at the value.
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.string()?;
            if !self.eat(b':') {
                return None;
            }
            member(self, key)?;
            if self.eat(b',') {
                continue;
            }
            return self.eat(b'}').then_some(());
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

fn scan_put_records(body: &[u8]) -> Option<FastIn<'_>> {
    let mut sc = Scanner { b: body, i: 0 };
    let mut input = FastIn::default();
    let mut seen_records = false;
    sc.object(|sc, key| match key {
        "StreamName" => set_once(&mut input.stream_name, sc.string()?),
        "StreamARN" => set_once(&mut input.stream_arn, sc.string()?),
        "Records" => {
            if std::mem::replace(&mut seen_records, true) || !sc.eat(b'[') {
                return None;
            }
            if sc.eat(b']') {
                return Some(());
            }
            loop {
                let (mut data, mut key, mut hash) = (None, None, None);
                sc.object(|sc, k| match k {
                    "Data" => set_once(&mut data, sc.base64_string()?),
                    "PartitionKey" => set_once(&mut key, sc.string()?),
                    "ExplicitHashKey" => set_once(&mut hash, sc.string()?),
                    _ => None,
                })?;
                input.records.push(FastEntry {
                    data: data?,
                    partition_key: key?,
                    explicit_hash_key: hash,
                });
                if sc.eat(b',') {
                    continue;
                }
                return sc.eat(b']').then_some(());
            }
        }
        _ => None,
    })?;
    sc.ws();
    (sc.i == body.len()).then_some(input)
}

fn valid_stream_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Parses a PutRecords JSON body that is plainly valid (escape-free strings, all
/// constraints met). Returns `None` for anything else, so the generic path produces
/// the exact AWS error.
pub fn fast_put_records(body: &[u8]) -> Option<FastPutRecords> {
    let input = scan_put_records(body)?;
    if input.records.is_empty() || input.records.len() > 500 {
        return None;
    }
    let target = match (input.stream_name, input.stream_arn) {
        (Some(n), arn) if valid_stream_name(n) => StreamRef {
            name: Some(n.to_string()),
            arn: arn.map(str::to_string),
        },
        (None, Some(arn)) if (1..=2048).contains(&arn.len()) => StreamRef {
            name: None,
            arn: Some(arn.to_string()),
        },
        _ => return None,
    };
    // Decode every record's data into one buffer (SIMD base64), then hand out slices.
    let estimate: usize = input
        .records
        .iter()
        .map(|r| base64_simd::STANDARD.estimated_decoded_length(r.data.len()))
        .sum();
    let mut all: Vec<u8> = Vec::with_capacity(estimate);
    let mut ranges = Vec::with_capacity(input.records.len());
    for r in &input.records {
        let start = all.len();
        base64_simd::STANDARD.decode_append(r.data, &mut all).ok()?;
        if all.len() - start > 1024 * 1024 || !canonical_base64_tail(r.data) {
            return None;
        }
        ranges.push(start..all.len());
    }
    let all = Bytes::from(all);
    let mut records = Vec::with_capacity(input.records.len());
    for (r, range) in input.records.into_iter().zip(ranges) {
        if r.partition_key.is_empty() || r.partition_key.chars().count() > 256 {
            return None;
        }
        if let Some(k) = r.explicit_hash_key
            && (k.is_empty()
                || k.len() > 39
                || !k.bytes().all(|b| b.is_ascii_digit())
                || (k.len() > 1 && k.starts_with('0')))
        {
            return None;
        }
        records.push(RecordInput {
            partition_key: r.partition_key.to_string(),
            explicit_hash_key: r.explicit_hash_key.map(str::to_string),
            data: all.slice(range),
        });
    }
    Some(FastPutRecords { target, records })
}

/// True when the unused low bits of the last base64 character are zero, as the strict
/// decoder of the generic path (and AWS) require; anything else takes the generic path.
fn canonical_base64_tail(b: &[u8]) -> bool {
    let pads = b.iter().rev().take_while(|&&c| c == b'=').count();
    let Some(&last) = b.len().checked_sub(pads + 1).and_then(|i| b.get(i)) else {
        return true;
    };
    let value = match last {
        b'A'..=b'Z' => last - b'A',
        b'a'..=b'z' => last - b'a' + 26,
        b'0'..=b'9' => last - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return false,
    };
    match pads {
        0 => true,
        1 => value & 0b11 == 0,
        2 => value & 0b1111 == 0,
        _ => false,
    }
}

/// Records as a JSON array, base64-encoding
/// their data straight into the text.
fn push_records(s: &mut String, records: &[crate::streams::model::OutRecord]) {
    s.push('[');
    for (i, r) in records.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"SequenceNumber\":\"");
        s.push_str(&r.sequence_number);
        s.push_str("\",\"ApproximateArrivalTimestamp\":");
        s.push_str(&format!("{:.3}", r.arrival_ms as f64 / 1000.0));
        s.push_str(",\"Data\":\"");
        base64_simd::STANDARD.encode_append(&r.data, s);
        s.push_str("\",\"PartitionKey\":");
        s.push_str(&serde_json::to_string(&r.partition_key).unwrap_or_default());
        if r.encrypted {
            s.push_str(",\"EncryptionType\":\"KMS\"");
        }
        s.push('}');
    }
    s.push(']');
}

/// GetRecords output as JSON text, base64-encoding record data straight into the body.
fn render_get_records(out: &crate::streams::GetRecordsOutput) -> Vec<u8> {
    render_batch(
        &out.records,
        out.millis_behind_latest,
        out.next_shard_iterator
            .as_deref()
            .map(|it| ("NextShardIterator", it)),
        out.child_shards.as_deref(),
    )
}

/// A batch of records as JSON text (GetRecords output, SubscribeToShardEvent): the
/// records, MillisBehindLatest, where to go on (`position`: a member name and its
/// string value) and the children of a closed shard read to its end.
pub(super) fn render_batch(
    records: &[crate::streams::model::OutRecord],
    millis_behind_latest: i64,
    position: Option<(&str, &str)>,
    child_shards: Option<&[crate::streams::model::ChildShard]>,
) -> Vec<u8> {
    let data_len: usize = records.iter().map(|r| r.data.len() * 4 / 3 + 200).sum();
    let mut s = String::with_capacity(256 + data_len);
    s.push_str("{\"Records\":");
    push_records(&mut s, records);
    s.push_str(",\"MillisBehindLatest\":");
    s.push_str(&millis_behind_latest.to_string());
    if let Some((member, value)) = position {
        s.push_str(",\"");
        s.push_str(member);
        s.push_str("\":\"");
        s.push_str(value);
        s.push('"');
    }
    if let Some(children) = child_shards {
        s.push_str(",\"ChildShards\":");
        s.push_str(&serde_json::to_string(children).unwrap_or_else(|_| "[]".into()));
    }
    s.push('}');
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(records: &[(&str, &str)]) -> Vec<u8> {
        let recs: Vec<Value> = records
            .iter()
            .map(|(k, d)| json!({"PartitionKey": k, "Data": d}))
            .collect();
        serde_json::to_vec(&json!({"StreamName": "s", "Records": recs})).unwrap()
    }

    #[test]
    fn fast_path_decodes_like_the_strict_decoder() {
        let mut state = 12345u64;
        for len in [0usize, 1, 2, 3, 4, 5, 100, 1023, 4096] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (state >> 33) as u8
                })
                .collect();
            let text = STANDARD.encode(&data);
            let parsed = fast_put_records(&body(&[("k", &text), ("k2", "QQ==")]))
                .expect("valid input takes the fast path");
            assert_eq!(parsed.records[0].data, data);
            assert_eq!(&parsed.records[1].data[..], b"A");
        }
    }

    #[test]
    fn unusual_input_falls_back_to_the_generic_path() {
        // Non-canonical trailing bits, bad characters, missing padding, empty key.
        for bad in ["QR==", "QUJ=", "Q===", "QQ", "Q!==", "QQ=="] {
            let input = if bad == "QQ==" {
                body(&[("", bad)])
            } else {
                body(&[("k", bad)])
            };
            assert!(fast_put_records(&input).is_none(), "{bad}");
            if bad != "QQ==" {
                assert!(
                    STANDARD.decode(bad).is_err(),
                    "{bad} is invalid for the strict decoder too"
                );
            }
        }
        assert!(fast_put_records(br#"{"StreamName":"s","Records":[]}"#).is_none());
        assert!(fast_put_records(b"not json").is_none());
        // Escaped strings cannot be borrowed: generic path.
        assert!(
            fast_put_records(
                br#"{"StreamName":"s","Records":[{"PartitionKey":"a\u0041","Data":"QQ=="}]}"#
            )
            .is_none()
        );
    }

    #[test]
    fn scanner_accepts_plain_shapes_in_any_layout() {
        let bodies: [&[u8]; 4] = [
            br#"{"StreamName":"s","Records":[{"Data":"QQ==","PartitionKey":"k"}]}"#,
            br#" { "Records" : [ { "PartitionKey" : "k" , "Data" : "QQ==" } ] ,
                  "StreamName" : "s" } "#,
            br#"{"StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/s","Records":[{"Data":"QQ==","PartitionKey":"k","ExplicitHashKey":"7"}]}"#,
            r#"{"StreamName":"s","Records":[{"Data":"QQ==","PartitionKey":"k"},{"Data":"","PartitionKey":"é"}]}"#.as_bytes(),
        ];
        for b in bodies {
            let p = fast_put_records(b).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(b)));
            assert_eq!(&p.records[0].data[..], b"A");
            assert_eq!(p.records[0].partition_key, "k");
        }
    }

    #[test]
    fn scanner_gives_up_on_anything_unusual() {
        let bodies: [&[u8]; 12] = [
            br#"{"StreamName":"s","Records":[{"Data":"QQ==","PartitionKey":"k","Extra":1}]}"#,
            br#"{"StreamName":"s","Records":[{"Data":"QQ\"==","PartitionKey":"k"}]}"#,
            br#"{"StreamName":"s","Records":[{"Data":"QUJD\","PartitionKey":"k"}]}"#,
            br#"{"StreamName":"s","StreamName":"t","Records":[{"Data":"QQ==","PartitionKey":"k"}]}"#,
            br#"{"StreamName":"s","Records":[{"Data":"QQ==","PartitionKey":null}]}"#,
            br#"{"StreamName":"s","Records":[{"Data":"QQ==","PartitionKey":"k"}]}x"#,
            br#"{"StreamName":"s","Records":[{"Data":"QQ==","PartitionKey":"k"}"#,
            br#"{"StreamName":"s","Records":[{"Data":"QQ==","PartitionKey":"a
b"}]}"#,
            br#"{"StreamName":"s","Records":[{"Data":"Q\/==","PartitionKey":"k"}]}"#,
            br#"{"StreamName":"s","Records":[{"PartitionKey":"k"}]}"#,
            br#"{"StreamName":"s","Records":{"Data":"QQ==","PartitionKey":"k"}}"#,
            br#"{"StreamName":5,"Records":[{"Data":"QQ==","PartitionKey":"k"}]}"#,
        ];
        for b in bodies {
            assert!(
                fast_put_records(b).is_none(),
                "{}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn scanner_agrees_with_serde_on_valid_bodies() {
        let mut state = 99u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        for _ in 0..200 {
            let n = 1 + next() as usize % 20;
            let recs: Vec<Value> = (0..n)
                .map(|_| {
                    let data: Vec<u8> = (0..next() % 300).map(|_| next() as u8).collect();
                    json!({"Data": STANDARD.encode(&data), "PartitionKey": format!("key-{}", next() % 1000)})
                })
                .collect();
            let doc = json!({"StreamName": "stream-1", "Records": recs});
            let text = if next() % 2 == 0 {
                serde_json::to_vec(&doc).unwrap()
            } else {
                serde_json::to_vec_pretty(&doc).unwrap()
            };
            let fast = fast_put_records(&text).expect("plain body");
            let slow: PutRecordsIn = serde_json::from_value(doc).unwrap();
            assert_eq!(fast.records.len(), slow.records.len());
            for (f, s) in fast.records.iter().zip(&slow.records) {
                assert_eq!(f.data, STANDARD.decode(&s.data).unwrap());
                assert_eq!(Some(&f.partition_key), s.partition_key.as_ref());
            }
        }
    }

    #[test]
    fn canonical_tails() {
        assert!(canonical_base64_tail(b"QQ=="));
        assert!(canonical_base64_tail(b"QUI="));
        assert!(canonical_base64_tail(b"QUJD"));
        assert!(canonical_base64_tail(b""));
        assert!(!canonical_base64_tail(b"QR=="));
        assert!(!canonical_base64_tail(b"QUJ="));
    }
}
