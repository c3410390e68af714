//! Delivery-stream records kept in the catalog (namespace `delivery-streams`) and the
//! worker's checkpoints (namespace `delivery-checkpoints`), as JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::naming::Compression;

/// DeliveryStreamStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryStatus {
    Creating,
    Active,
    Deleting,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "CREATING",
            Self::Active => "ACTIVE",
            Self::Deleting => "DELETING",
        }
    }
}

/// An S3 destination (from `ExtendedS3DestinationConfiguration` or the older
/// `S3DestinationConfiguration`), as far as this version supports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Destination {
    pub role_arn: String,
    pub bucket_arn: String,
    pub prefix: Option<String>,
    pub error_output_prefix: Option<String>,
    pub size_mbs: u32,
    pub interval_secs: u32,
    pub compression: Compression,
    pub file_extension: Option<String>,
    /// Configured through `ExtendedS3DestinationConfiguration`.
    pub extended: bool,
    /// `ProcessingConfiguration` as given (checked by `processing::Pipeline::parse`),
    /// shown by DescribeDeliveryStream and parsed again by the worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing: Option<serde_json::Value>,
    /// `DynamicPartitioningConfiguration.Enabled`: objects per partition key values.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dynamic_partitioning: bool,
}

impl S3Destination {
    /// The bucket name of `arn:aws:s3:::NAME`.
    pub fn bucket(&self) -> &str {
        self.bucket_arn
            .rsplit_once(":::")
            .map_or(self.bucket_arn.as_str(), |(_, b)| b)
    }

    /// The object extension: FileExtension, else the compression's.
    pub fn extension(&self) -> &str {
        self.file_extension
            .as_deref()
            .unwrap_or(self.compression.extension())
    }
}

/// `RequestConfiguration.ContentEncoding` of an HTTP endpoint destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContentEncoding {
    #[serde(rename = "NONE")]
    None,
    #[serde(rename = "GZIP")]
    Gzip,
}

impl ContentEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Gzip => "GZIP",
        }
    }
}

/// `S3BackupMode` of an HTTP endpoint destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HttpBackupMode {
    /// Only batches the endpoint did not take within the retry duration.
    FailedDataOnly,
    /// Every batch, delivered or not.
    AllData,
}

impl HttpBackupMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailedDataOnly => "FailedDataOnly",
            Self::AllData => "AllData",
        }
    }
}

/// An HTTP endpoint destination (`HttpEndpointDestinationConfiguration`). Its backup
/// bucket (`S3Configuration`) is the stream's [`S3Destination`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpEndpointDestination {
    pub url: String,
    pub name: Option<String>,
    /// Sent verbatim as `X-Amz-Firehose-Access-Key`; never shown by Describe.
    pub access_key: Option<String>,
    /// The endpoint's buffering hints (the backup bucket's own are only shown).
    pub size_mbs: u32,
    pub interval_secs: u32,
    pub content_encoding: ContentEncoding,
    /// `CommonAttributes`, in the order given (sent as one JSON object).
    pub common_attributes: Vec<(String, String)>,
    /// How long failed requests are retried before the batch goes to the backup bucket.
    pub retry_secs: u32,
    pub backup_mode: HttpBackupMode,
    pub role_arn: Option<String>,
    /// `CloudWatchLoggingOptions` as given: accepted and shown, no logs are sent.
    pub cloudwatch: Option<serde_json::Value>,
    /// `ProcessingConfiguration` as given (only a disabled one is accepted).
    pub processing: Option<serde_json::Value>,
}

/// A Kinesis data stream as the source (`KinesisStreamSourceConfiguration`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KinesisSource {
    pub stream_arn: String,
    /// Recorded and shown, not checked.
    pub role_arn: String,
    /// `DeliveryStartTimestamp`: the stream's creation; its shards are read from
    /// TRIM_HORIZON.
    pub start_ms: i64,
}

/// One delivery stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryStreamMeta {
    pub name: String,
    /// Identity of this incarnation of the name (creation time, ms): its log and the
    /// names of its batches differ from those of a deleted stream of the same name.
    pub created_ms: i64,
    pub updated_ms: i64,
    pub status: DeliveryStatus,
    /// VersionId: 1 at creation.
    pub version: u64,
    /// The S3 destination; for an HTTP endpoint stream, its backup bucket.
    pub destination: S3Destination,
    /// An HTTP endpoint destination (absent for S3 streams, and in records written
    /// before HTTP endpoints existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpEndpointDestination>,
    pub tags: BTreeMap<String, String>,
    /// `KinesisStreamAsSource`: the data stream its records come from (absent for
    /// Direct PUT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<KinesisSource>,
}

impl DeliveryStreamMeta {
    /// The store's log of this stream's records.
    pub fn log_id(&self) -> String {
        format!("delivery/{}/{}", self.name, self.created_ms)
    }
}

/// The configuration a batch is delivered under: the stream's version and destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchConfig {
    pub version: u64,
    pub destination: S3Destination,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpEndpointDestination>,
}

impl DeliveryStreamMeta {
    /// The configuration a batch sealed now is delivered under.
    pub fn batch_config(&self) -> BatchConfig {
        BatchConfig {
            version: self.version,
            destination: self.destination.clone(),
            http: self.http.clone(),
        }
    }
}

/// How far delivery has got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every record before this offset is delivered.
    pub next: u64,
    /// A batch being delivered (first and last offset), written before its upload: after
    /// a crash it is delivered again, exactly so, under the same name.
    pub pending: Option<(u64, u64)>,
    /// The configuration the pending batch is delivered under, so that a re-delivery
    /// after a crash uses the same one even if UpdateDestination changed it since
    /// (absent in checkpoints written before UpdateDestination existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_config: Option<BatchConfig>,
}

/// A batch of one source shard's records being delivered: its first and last records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardBatch {
    pub first_sequence_number: String,
    pub last_sequence_number: String,
    /// Offsets of the first and last records in the shard (the batch's identity).
    pub first_offset: u64,
    pub last_offset: u64,
}

/// How far delivery has got in one shard of a source data stream (namespace
/// `delivery-shard-checkpoints`, key `<log id>/<shard id>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCheckpoint {
    /// The last record delivered; `None`: nothing yet (read from TRIM_HORIZON).
    pub after: Option<String>,
    /// A batch being delivered, written before its upload (as [`Checkpoint::pending`]).
    pub pending: Option<ShardBatch>,
    pub pending_config: Option<BatchConfig>,
    /// Read to the end of the closed shard and all delivered: its children may be read.
    pub finished: bool,
}
