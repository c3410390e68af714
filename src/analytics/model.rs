//! Analytics applications as the catalog stores them (namespace `analytics-applications`,
//! one JSON document per application) and the checkpoints of running ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// ApplicationStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppStatus {
    Ready,
    Starting,
    Running,
    Updating,
    Stopping,
    Deleting,
}

impl AppStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "READY",
            Self::Starting => "STARTING",
            Self::Running => "RUNNING",
            Self::Updating => "UPDATING",
            Self::Stopping => "STOPPING",
            Self::Deleting => "DELETING",
        }
    }
}

/// RecordFormatType with its mapping parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RecordFormat {
    /// JSONMappingParameters.RecordRowPath (`$`, or a path to an array of rows).
    Json { row_path: String },
    Csv {
        row_delimiter: String,
        column_delimiter: String,
    },
}

/// One RecordColumn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordColumn {
    pub name: String,
    /// JSONPath of the value (JSON); unused for CSV, where columns are by position.
    pub mapping: Option<String>,
    /// As given (`VARCHAR(4)`, `REAL`, ...), returned as is by DescribeApplication.
    pub sql_type: String,
}

/// SourceSchema (inputs and reference data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSchema {
    pub format: RecordFormat,
    pub encoding: Option<String>,
    pub columns: Vec<RecordColumn>,
}

/// Where an input's records come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SourceKind {
    KinesisStream,
    DeliveryStream,
}

/// One Input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputMeta {
    /// `1.1`, `1.2`, ...
    pub id: String,
    pub name_prefix: String,
    pub source: SourceKind,
    pub resource_arn: String,
    pub role_arn: String,
    pub parallelism: u32,
    pub schema: SourceSchema,
    /// The starting position of the last StartApplication.
    pub starting_position: Option<String>,
}

impl InputMeta {
    /// The in-application streams this input feeds: `<prefix>_001`, ...
    pub fn stream_names(&self) -> Vec<String> {
        (1..=self.parallelism.max(1))
            .map(|i| format!("{}_{i:03}", self.name_prefix))
            .collect()
    }
}

/// Where an output's rows go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SinkKind {
    KinesisStream,
    DeliveryStream,
    Lambda,
}

/// One Output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputMeta {
    pub id: String,
    /// The in-application stream whose rows are written.
    pub name: String,
    pub sink: SinkKind,
    pub resource_arn: String,
    pub role_arn: String,
    /// JSON or CSV.
    pub format: String,
}

/// One ReferenceDataSource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReferenceMeta {
    pub id: String,
    pub table_name: String,
    pub bucket_arn: String,
    pub file_key: String,
    pub role_arn: String,
    pub schema: SourceSchema,
}

/// An application as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationMeta {
    pub name: String,
    pub description: Option<String>,
    pub code: String,
    pub status: AppStatus,
    pub version: u64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub inputs: Vec<InputMeta>,
    pub outputs: Vec<OutputMeta>,
    pub references: Vec<ReferenceMeta>,
    pub tags: BTreeMap<String, String>,
    /// Ids handed out so far, so that a deleted output's id is never reused.
    pub next_id: u32,
}

impl ApplicationMeta {
    pub fn take_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}.{}", self.version.max(1), self.next_id)
    }
}

/// Where a running application has got to: its SQL state and, per source shard, the
/// last record whose effects that state contains. Written after the outputs of those
/// records were written, so a restart resumes without losing a window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AppCheckpoint {
    /// The version of the code the state belongs to; state of other code is dropped.
    pub version: u64,
    /// Shard id -> last sequence number taken.
    pub positions: BTreeMap<String, String>,
    /// Shards read to their end (closed by a reshard).
    pub finished: Vec<String>,
    /// `freshet_sql::Program::checkpoint`.
    pub state: Vec<u8>,
    /// The time the state had reached (ms): the SQL clock resumes from it.
    pub watermark_ms: i64,
}
