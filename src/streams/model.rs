//! The persistent description of a data stream (what the catalog stores) and the
//! shapes the service returns, named and laid out as in the Kinesis API reference so
//! they serialize straight to the wire (`PascalCase`, timestamps as epoch seconds).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sequence::SequenceNumber;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamStatus {
    Creating,
    Deleting,
    Active,
    Updating,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StreamMode {
    Provisioned,
    OnDemand,
}

/// A shard as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    pub ordinal: u32,
    pub parent: Option<u32>,
    pub adjacent_parent: Option<u32>,
    /// Hash key range, decimal strings (u128 does not survive every JSON codec).
    pub hash_start: String,
    pub hash_end: String,
    pub created_ms: i64,
    /// Set when the shard is closed by resharding: the offset one past its last record.
    pub closed_end_offset: Option<u64>,
    pub closed_ms: Option<i64>,
}

impl ShardMeta {
    pub fn shard_id(&self) -> String {
        shard_id(self.ordinal)
    }
    pub fn range(&self) -> (u128, u128) {
        (
            self.hash_start.parse().unwrap_or(0),
            self.hash_end.parse().unwrap_or(u128::MAX),
        )
    }
    pub fn is_open(&self) -> bool {
        self.closed_end_offset.is_none()
    }
}

pub fn shard_id(ordinal: u32) -> String {
    format!("shardId-{ordinal:012}")
}

/// Reads a shard id as Kinesis does: any `<prefix>-N` (or a bare `N`) names shard N,
/// for N in 0..=2^31-1 written in decimal digits (`shardId-000000000007`, `shard-7`,
/// `7` and `x-0007` are all shard 7). `None` for anything else.
pub fn parse_shard_id(text: &str) -> Option<u32> {
    // As Kinesis: the text between the first and second '-', or all of it when that
    // is empty.
    let digits = match text.split('-').nth(1) {
        Some(part) if !part.is_empty() => part,
        _ => text,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    if significant.len() > 10 {
        return None;
    }
    let n: u64 = if significant.is_empty() {
        0
    } else {
        significant.parse().ok()?
    };
    (n <= i32::MAX as u64).then_some(n as u32)
}

/// A SplitShard, MergeShards or UpdateShardCount accepted while the stream is
/// UPDATING: Kinesis keeps the old shards (listed, taking writes) until the change
/// completes, then switches. Shards are ordinals; applied by
/// `StreamService::apply_reshard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Reshard {
    Split {
        shard: u32,
        new_starting_hash_key: String,
    },
    Merge {
        shard: u32,
        adjacent: u32,
    },
    Count {
        target: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMeta {
    pub name: String,
    pub arn: String,
    pub created_ms: i64,
    pub active: bool,
    /// Deregistered, shown as DELETING until the state delay has passed (then removed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

/// A stream as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    pub name: String,
    /// Creation time in ms; also tells streams of the same name apart over time.
    pub epoch: u64,
    pub status: StreamStatus,
    pub mode: StreamMode,
    pub retention_hours: u32,
    pub shards: Vec<ShardMeta>,
    pub next_ordinal: u32,
    pub tags: BTreeMap<String, String>,
    pub encryption_key: Option<String>,
    pub shard_level_metrics: Vec<String>,
    pub consumers: Vec<ConsumerMeta>,
    pub max_record_size_kib: u32,
    /// A reshard waiting for the end of UPDATING (none when the change was applied
    /// at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reshard: Option<Reshard>,
}

impl StreamMeta {
    /// Directory-safe id of the stream's logs in the store.
    pub fn log_prefix(&self) -> String {
        format!("kds/{}-{}", self.name, self.epoch)
    }
    pub fn log_id(&self, ordinal: u32) -> String {
        format!("{}/{}", self.log_prefix(), shard_id(ordinal))
    }
    pub fn open_shards(&self) -> impl Iterator<Item = &ShardMeta> {
        self.shards.iter().filter(|s| s.is_open())
    }
    pub fn shard(&self, ordinal: u32) -> Option<&ShardMeta> {
        self.shards.iter().find(|s| s.ordinal == ordinal)
    }
    pub fn seq(&self, ordinal: u32, offset: u64) -> String {
        SequenceNumber {
            stream_epoch: self.epoch,
            shard_ordinal: ordinal,
            offset,
        }
        .encode()
    }
    pub fn encryption_type(&self) -> &'static str {
        if self.encryption_key.is_some() {
            "KMS"
        } else {
            "NONE"
        }
    }
}

pub fn ms_to_secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

// ---- output shapes (Kinesis API reference) ----

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HashKeyRange {
    pub starting_hash_key: String,
    pub ending_hash_key: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SequenceNumberRange {
    pub starting_sequence_number: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ending_sequence_number: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Shard {
    pub shard_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_shard_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjacent_parent_shard_id: Option<String>,
    pub hash_key_range: HashKeyRange,
    pub sequence_number_range: SequenceNumberRange,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChildShard {
    pub shard_id: String,
    pub parent_shards: Vec<String>,
    pub hash_key_range: HashKeyRange,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamModeDetails {
    pub stream_mode: StreamMode,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnhancedMetrics {
    pub shard_level_metrics: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamDescription {
    pub stream_name: String,
    #[serde(rename = "StreamARN")]
    pub stream_arn: String,
    pub stream_status: StreamStatus,
    pub stream_mode_details: StreamModeDetails,
    pub shards: Vec<Shard>,
    pub has_more_shards: bool,
    pub retention_period_hours: u32,
    pub stream_creation_timestamp: f64,
    pub enhanced_monitoring: Vec<EnhancedMetrics>,
    pub encryption_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamDescriptionSummary {
    pub stream_name: String,
    #[serde(rename = "StreamARN")]
    pub stream_arn: String,
    pub stream_status: StreamStatus,
    pub stream_mode_details: StreamModeDetails,
    pub retention_period_hours: u32,
    pub stream_creation_timestamp: f64,
    pub enhanced_monitoring: Vec<EnhancedMetrics>,
    pub encryption_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub open_shard_count: u32,
    pub consumer_count: u32,
    pub max_record_size_in_ki_b: u32,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamSummary {
    pub stream_name: String,
    #[serde(rename = "StreamARN")]
    pub stream_arn: String,
    pub stream_status: StreamStatus,
    pub stream_mode_details: StreamModeDetails,
    pub stream_creation_timestamp: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Consumer {
    pub consumer_name: String,
    #[serde(rename = "ConsumerARN")]
    pub consumer_arn: String,
    pub consumer_status: &'static str,
    pub consumer_creation_timestamp: f64,
    #[serde(rename = "StreamARN", skip_serializing_if = "Option::is_none")]
    pub stream_arn: Option<String>,
}

impl ConsumerMeta {
    pub fn to_wire(&self, stream_arn: Option<String>) -> Consumer {
        Consumer {
            consumer_name: self.name.clone(),
            consumer_arn: self.arn.clone(),
            consumer_status: if self.deleting {
                "DELETING"
            } else if self.active {
                "ACTIVE"
            } else {
                "CREATING"
            },
            consumer_creation_timestamp: ms_to_secs(self.created_ms),
            stream_arn,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// One record as returned by GetRecords.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub sequence_number: String,
    pub arrival_ms: i64,
    pub partition_key: String,
    pub data: bytes::Bytes,
    pub encrypted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_ids() {
        assert_eq!(shard_id(7), "shardId-000000000007");
        assert_eq!(parse_shard_id("shardId-000000000007"), Some(7));
        assert_eq!(parse_shard_id("7"), Some(7));
        assert_eq!(parse_shard_id("shardId-"), None);
        assert_eq!(parse_shard_id("shardId-x"), None);
    }

    /// The shard ids Kinesis reads (and refuses), from a conformance suite run
    /// against AWS.
    #[test]
    fn shard_ids_are_read_as_kinesis_reads_them() {
        for (text, want) in [
            ("shardId-5", Some(5)),
            ("shard-0", Some(0)),
            ("x-0007", Some(7)),
            ("2147483647", Some(2_147_483_647)),
            ("a-00002147483647", Some(2_147_483_647)),
            ("-00002147483647", Some(2_147_483_647)),
            ("stream-name-3", None),
            ("2147483648", None),
            ("shardId-002147483648", None),
            ("ABKLFD8", None),
            ("2.14E4", None),
            ("", None),
            ("shardId-99999999999999999999999", None),
            ("shardId-00000000000000000000001", Some(1)),
        ] {
            assert_eq!(parse_shard_id(text), want, "{text}");
        }
    }
}
