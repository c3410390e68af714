//! Stream settings: retention, tags, enhanced monitoring, encryption, stream mode,
//! resource policies and registered consumers. Each is a small metadata change made
//! through `StreamService::update_meta` (persisted, then applied).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::model::*;
use super::{Result, StreamError, StreamRef, StreamService, StreamStatus};

const MAX_TAGS: usize = 50;
const MIN_RETENTION: u32 = 24;
const MAX_RETENTION: u32 = 8760;

fn tag_chars_ok(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_alphanumeric() || c == ' ' || "_./=+-@%".contains(c))
}

/// Checks tags about to be added to a stream that has `existing` tags.
pub(super) fn check_tags(
    stream: &str,
    account: &str,
    existing: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Result<()> {
    if new
        .iter()
        .any(|(k, v)| !tag_chars_ok(k) || !tag_chars_ok(v))
    {
        return Err(StreamError::InvalidArgument(
            "Some tags contain invalid characters. Valid characters: Unicode letters, digits, white space, _ . / = + - % @.".into(),
        ));
    }
    if new.iter().any(|(k, v)| k.contains('%') || v.contains('%')) {
        return Err(StreamError::InvalidArgument(format!(
            "Failed to add tags to stream {stream} under account {account} because some tags contained illegal characters. The allowed characters are Unicode letters, white-spaces, '_',',','/','=','+','-','@'."
        )));
    }
    if new
        .keys()
        .any(|k| k.to_ascii_lowercase().starts_with("aws:"))
    {
        return Err(StreamError::InvalidArgument(
            "Tag keys starting with 'aws:' are reserved for system use.".into(),
        ));
    }
    let total = existing.len() + new.keys().filter(|k| !existing.contains_key(*k)).count();
    if total > MAX_TAGS {
        return Err(StreamError::InvalidArgument(format!(
            "Failed to add tags to stream {stream} under account {account} because a given stream cannot have more than {MAX_TAGS} tags associated with it."
        )));
    }
    Ok(())
}

/// Metric names accepted by Enable/DisableEnhancedMonitoring.
const METRICS: [&str; 7] = [
    "IncomingBytes",
    "IncomingRecords",
    "OutgoingBytes",
    "OutgoingRecords",
    "WriteProvisionedThroughputExceeded",
    "ReadProvisionedThroughputExceeded",
    "IteratorAgeMilliseconds",
];

impl StreamService {
    pub async fn increase_retention(&self, r: &StreamRef, hours: u32) -> Result<()> {
        self.update_meta(r, |meta| {
            if hours < MIN_RETENTION {
                return Err(StreamError::InvalidArgument(format!(
                    "Minimum allowed retention period is {MIN_RETENTION} hours. Requested retention period ({hours} hours) is too short."
                )));
            }
            if hours > MAX_RETENTION {
                return Err(StreamError::InvalidArgument(format!(
                    "Maximum allowed retention period is {MAX_RETENTION} hours. Requested retention period ({hours} hours) is too long."
                )));
            }
            if hours < meta.retention_hours {
                return Err(StreamError::InvalidArgument(format!(
                    "Requested retention period ({hours} hours) for stream {} can not be shorter than existing retention period ({} hours). Use DecreaseRetentionPeriod API.",
                    meta.name, meta.retention_hours
                )));
            }
            meta.retention_hours = hours;
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub async fn decrease_retention(&self, r: &StreamRef, hours: u32) -> Result<()> {
        self.update_meta(r, |meta| {
            if hours < MIN_RETENTION {
                return Err(StreamError::InvalidArgument(format!(
                    "Minimum allowed retention period is {MIN_RETENTION} hours. Requested retention period ({hours} hours) is too short."
                )));
            }
            if hours > meta.retention_hours {
                return Err(StreamError::InvalidArgument(format!(
                    "Requested retention period ({hours} hours) for stream {} can not be longer than existing retention period ({} hours). Use IncreaseRetentionPeriod API.",
                    meta.name, meta.retention_hours
                )));
            }
            meta.retention_hours = hours;
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub async fn add_tags(&self, r: &StreamRef, tags: BTreeMap<String, String>) -> Result<()> {
        let account = self.config.account_id.clone();
        self.update_meta(r, |meta| {
            check_tags(&meta.name, &account, &meta.tags, &tags)?;
            meta.tags.extend(tags);
            Ok(())
        })
        .await?;
        Ok(())
    }

    pub async fn remove_tags(&self, r: &StreamRef, keys: &[String]) -> Result<()> {
        // Keys are checked as AddTagsToStream checks them (as AWS does).
        if keys.iter().any(|k| !tag_chars_ok(k)) {
            return Err(StreamError::InvalidArgument(
                "Some tags contain invalid characters. Valid characters: Unicode letters, digits, white space, _ . / = + - % @.".into(),
            ));
        }
        self.update_meta(r, |meta| {
            for k in keys {
                meta.tags.remove(k);
            }
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Tags in key order after `exclusive_start_key`, at most `limit`; and whether more.
    pub fn list_tags(
        &self,
        r: &StreamRef,
        exclusive_start_key: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Tag>, bool)> {
        let (_, state) = self.state(r)?;
        let meta = state.meta.read().unwrap();
        let all: Vec<Tag> = meta
            .tags
            .iter()
            .filter(|(k, _)| exclusive_start_key.is_none_or(|s| k.as_str() > s))
            .map(|(k, v)| Tag {
                key: k.clone(),
                value: Some(v.clone()),
            })
            .collect();
        let more = all.len() > limit;
        Ok((all.into_iter().take(limit).collect(), more))
    }

    /// Resolves a resource ARN (stream or consumer) to the stream it belongs to.
    pub fn stream_of_resource(&self, arn: &str) -> Result<StreamRef> {
        let prefix = format!(
            "arn:aws:kinesis:{}:{}:stream/",
            self.config.region, self.config.account_id
        );
        let rest = arn
            .strip_prefix(&prefix)
            .ok_or_else(|| StreamError::ResourceNotFound(format!("Resource {arn} not found.")))?;
        let name = rest.split('/').next().unwrap_or_default();
        if name.is_empty() {
            return Err(StreamError::ResourceNotFound(format!(
                "Resource {arn} not found."
            )));
        }
        let r = StreamRef::name(name);
        if rest.contains("/consumer/") {
            let (_, state) = self.state(&r)?;
            if !state
                .meta
                .read()
                .unwrap()
                .consumers
                .iter()
                .any(|c| c.arn == arn)
            {
                return Err(StreamError::ResourceNotFound(format!(
                    "Resource {arn} not found."
                )));
            }
        }
        Ok(r)
    }

    pub async fn set_enhanced_monitoring(
        &self,
        r: &StreamRef,
        metrics: &[String],
        enable: bool,
    ) -> Result<(String, Vec<String>, Vec<String>)> {
        let requested: Vec<String> = if metrics.iter().any(|m| m == "ALL") {
            METRICS.iter().map(|m| m.to_string()).collect()
        } else {
            metrics.to_vec()
        };
        let (current, meta) = self
            .update_meta(r, |meta| {
                self.require_active(meta)?;
                let current = meta.shard_level_metrics.clone();
                let mut next: Vec<String> = if enable {
                    current.iter().chain(&requested).cloned().collect()
                } else {
                    current
                        .iter()
                        .filter(|m| !requested.contains(m))
                        .cloned()
                        .collect()
                };
                next.sort();
                next.dedup();
                meta.shard_level_metrics = next;
                Ok(current)
            })
            .await?;
        Ok((meta.name.clone(), current, meta.shard_level_metrics))
    }

    pub async fn set_encryption(
        self: &Arc<Self>,
        r: &StreamRef,
        key_id: Option<String>,
    ) -> Result<()> {
        let delayed = self.config.state_delay_ms > 0;
        let ((), meta) = self
            .update_meta(r, |meta| {
                self.require_active(meta)?;
                meta.encryption_key = key_id;
                if delayed {
                    meta.status = StreamStatus::Updating;
                }
                Ok(())
            })
            .await?;
        if delayed {
            self.schedule_active(meta.name.clone(), meta.epoch);
        }
        Ok(())
    }

    pub async fn update_stream_mode(
        self: &Arc<Self>,
        r: &StreamRef,
        mode: StreamMode,
    ) -> Result<()> {
        let delayed = self.config.state_delay_ms > 0;
        let ((), meta) = self
            .update_meta(r, |meta| {
                self.require_active(meta)?;
                if meta.mode == mode {
                    return Err(StreamError::InvalidArgument(format!(
                        "Stream {} under account {} is already in {} mode.",
                        meta.name,
                        self.config.account_id,
                        if mode == StreamMode::OnDemand {
                            "ON_DEMAND"
                        } else {
                            "PROVISIONED"
                        }
                    )));
                }
                meta.mode = mode;
                if delayed {
                    meta.status = StreamStatus::Updating;
                }
                Ok(())
            })
            .await?;
        if delayed {
            self.schedule_active(meta.name.clone(), meta.epoch);
        }
        Ok(())
    }

    // ---- resource policies ----

    pub async fn put_policy(&self, arn: &str, policy: &str) -> Result<()> {
        self.stream_of_resource(arn).and_then(|r| self.state(&r))?;
        if serde_json::from_str::<serde_json::Value>(policy)
            .map(|v| !v.is_object())
            .unwrap_or(true)
        {
            return Err(StreamError::InvalidArgument(
                "Policy is not a valid JSON document.".into(),
            ));
        }
        self.catalog_put(
            "policies",
            arn.to_string(),
            Some(policy.as_bytes().to_vec()),
        )
        .await?;
        self.policies
            .write()
            .unwrap()
            .insert(arn.to_string(), policy.to_string());
        Ok(())
    }

    pub fn get_policy(&self, arn: &str) -> Result<String> {
        self.stream_of_resource(arn).and_then(|r| self.state(&r))?;
        Ok(self
            .policies
            .read()
            .unwrap()
            .get(arn)
            .cloned()
            .unwrap_or_else(|| "{}".into()))
    }

    pub async fn delete_policy(&self, arn: &str) -> Result<()> {
        self.stream_of_resource(arn).and_then(|r| self.state(&r))?;
        if !self.policies.read().unwrap().contains_key(arn) {
            return Err(StreamError::ResourceNotFound(format!(
                "No resource policy found for resource ARN {arn}."
            )));
        }
        self.catalog_put("policies", arn.to_string(), None).await?;
        self.policies.write().unwrap().remove(arn);
        Ok(())
    }

    // ---- consumers ----

    pub async fn register_consumer(
        self: &Arc<Self>,
        stream_arn: &str,
        name: &str,
    ) -> Result<Consumer> {
        let r = StreamRef {
            name: None,
            arn: Some(stream_arn.to_string()),
        };
        let now = self.now_ms();
        let limit = self.config.consumer_limit;
        let delayed = self.config.state_delay_ms > 0;
        let (consumer, meta) = self
            .update_meta(&r, |meta| {
                if meta.consumers.iter().any(|c| c.name == name) {
                    return Err(StreamError::ResourceInUse(format!(
                        "Consumer {name} under stream {} already exists for account {}.",
                        meta.name, self.config.account_id
                    )));
                }
                if meta.consumers.len() >= limit {
                    return Err(StreamError::LimitExceeded(format!(
                        "Stream {} under account {} has reached the limit of {limit} registered consumers.",
                        meta.name, self.config.account_id
                    )));
                }
                let c = ConsumerMeta {
                    name: name.to_string(),
                    arn: format!("{}/consumer/{name}:{}", self.stream_arn(&meta.name), now / 1000),
                    created_ms: now,
                    active: !delayed,
                    deleting: false,
                };
                meta.consumers.push(c.clone());
                Ok(c)
            })
            .await?;
        if delayed {
            self.schedule_active(meta.name.clone(), meta.epoch);
        }
        Ok(consumer.to_wire(None))
    }

    fn find_consumer(
        &self,
        stream_arn: Option<&str>,
        name: Option<&str>,
        consumer_arn: Option<&str>,
    ) -> Result<(StreamRef, ConsumerMeta)> {
        let not_found = || StreamError::ResourceNotFound("Consumer not found.".to_string());
        let r = match (consumer_arn, stream_arn) {
            (Some(arn), _) => self.stream_of_resource(arn).map_err(|_| not_found())?,
            (None, Some(s)) => StreamRef {
                name: None,
                arn: Some(s.to_string()),
            },
            (None, None) => {
                return Err(StreamError::InvalidArgument(
                    "Either ConsumerARN or both StreamARN and ConsumerName must be provided."
                        .into(),
                ));
            }
        };
        let (_, state) = self.state(&r)?;
        let meta = state.meta.read().unwrap();
        let c = meta
            .consumers
            .iter()
            .find(|c| match consumer_arn {
                Some(arn) => c.arn == arn,
                None => Some(c.name.as_str()) == name,
            })
            .cloned()
            .ok_or_else(not_found)?;
        Ok((r, c))
    }

    pub fn describe_consumer(
        &self,
        stream_arn: Option<&str>,
        name: Option<&str>,
        consumer_arn: Option<&str>,
    ) -> Result<Consumer> {
        let (r, c) = self.find_consumer(stream_arn, name, consumer_arn)?;
        let stream = self.resolve_name(&r)?;
        Ok(c.to_wire(Some(self.stream_arn(&stream))))
    }

    pub async fn deregister_consumer(
        self: &Arc<Self>,
        stream_arn: Option<&str>,
        name: Option<&str>,
        consumer_arn: Option<&str>,
    ) -> Result<()> {
        let (r, c) = self.find_consumer(stream_arn, name, consumer_arn)?;
        let delay = self.config.state_delay_ms;
        if c.deleting {
            return Ok(());
        }
        let ((), meta) = self
            .update_meta(&r, |meta| {
                if delay == 0 {
                    meta.consumers.retain(|x| x.arn != c.arn);
                } else if let Some(x) = meta.consumers.iter_mut().find(|x| x.arn == c.arn) {
                    x.deleting = true;
                }
                Ok(())
            })
            .await?;
        self.consumers_gone.send_modify(|n| *n += 1);
        if delay > 0 {
            let service = self.clone();
            let stream = StreamRef::name(meta.name.clone());
            let (epoch, arn) = (meta.epoch, c.arn.clone());
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                let removed = service
                    .update_meta(&stream, |meta| {
                        if meta.epoch == epoch {
                            meta.consumers.retain(|x| x.arn != arn);
                        }
                        Ok(())
                    })
                    .await;
                if let Err(e) = removed {
                    tracing::debug!(consumer = arn, error = %e, "deregistered consumer not removed");
                }
            });
        }
        Ok(())
    }

    /// Notified when consumers go away (deregistered, or their stream deleted).
    pub fn watch_consumers_gone(&self) -> tokio::sync::watch::Receiver<u64> {
        self.consumers_gone.subscribe()
    }

    /// Consumers in name order after `after` (the previous page's last name), at most
    /// `max`; and whether more remain.
    pub fn list_consumers(
        &self,
        stream_arn: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<(Vec<Consumer>, bool)> {
        let r = StreamRef {
            name: None,
            arn: Some(stream_arn.to_string()),
        };
        let (_, state) = self.state(&r)?;
        let meta = state.meta.read().unwrap();
        let mut all: Vec<&ConsumerMeta> = meta
            .consumers
            .iter()
            .filter(|c| after.is_none_or(|a| c.name.as_str() > a))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let more = all.len() > max;
        Ok((
            all.into_iter().take(max).map(|c| c.to_wire(None)).collect(),
            more,
        ))
    }
}
