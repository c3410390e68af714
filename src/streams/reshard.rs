//! Resharding (SplitShard, MergeShards, UpdateShardCount) and shard listing.
//!
//! A reshard closes parent shards and opens children atomically in the catalog. It waits
//! for in-flight puts (the stream's gate) so a parent's ending sequence number is final.
//! Closed parents stay readable until retention expires them; readers reaching a parent's
//! end get its children (`ChildShards`), as in Kinesis.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::model::*;
use super::{Result, StreamError, StreamRef, StreamService, StreamState, StreamStatus, hashing};

/// ShardFilter of ListShards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardFilter {
    pub kind: String,
    pub shard_id: Option<String>,
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ListShardsToken {
    stream: String,
    epoch: u64,
    after: Option<u32>,
    filter: Option<ShardFilter>,
    max: usize,
    issued_ms: i64,
}

const NEXT_TOKEN_TTL_MS: i64 = 300_000;

impl StreamService {
    /// Runs a reshard: checks it against the stream as it is now (errors are answered
    /// at once), then either applies it at once or, when state changes take time
    /// (`state_delay_ms`), marks the stream UPDATING and keeps the current shards
    /// (listed, taking writes) until the delay ends and [`Self::finish_reshard`]
    /// switches, as Kinesis does. Returns the open shard count before the change.
    async fn reshard(self: &Arc<Self>, r: &StreamRef, op: Reshard) -> Result<(u32, StreamMeta)> {
        let _control = self.control.lock().await;
        let (name, state) = self.state(r)?;
        if self.shared_plane().is_some() {
            // A shared shard's offsets are not contiguous and its end is known only to
            // its owner: closing shards across nodes is not built yet.
            return Err(StreamError::InvalidArgument(format!(
                "Resharding stream {name} under account {} is not supported in cluster mode yet.",
                self.config.account_id
            )));
        }
        let now = self.now_ms();
        if self.config.state_delay_ms > 0 {
            let mut meta = state.meta.read().unwrap().clone();
            self.require_active(&meta)?;
            let current = self.apply_reshard(&mut meta.clone(), &op, &|_| 0, now, true)?;
            meta.status = StreamStatus::Updating;
            meta.pending_reshard = Some(op);
            self.persist(&meta).await?;
            *state.meta.write().unwrap() = meta.clone();
            self.schedule_active(meta.name.clone(), meta.epoch);
            return Ok((current, meta));
        }
        let _gate = state.gate.write().await;
        let mut meta = state.meta.read().unwrap().clone();
        self.require_active(&meta)?;
        let ends = |o: u32| state.log(o).map(|l| l.bounds().end_offset).unwrap_or(0);
        let current = self.apply_reshard(&mut meta, &op, &ends, now, true)?;
        let logs = self.open_logs(&meta).await?;
        self.persist(&meta).await?;
        *state.logs.write().unwrap() = logs;
        *state.meta.write().unwrap() = meta.clone();
        Ok((current, meta))
    }

    /// Applies the reshard a stream has been UPDATING for (the caller holds the
    /// control lock): waits for puts in flight so that the parents' ending sequence
    /// numbers are final, switches the topology, opens the children's logs and
    /// persists. A change that no longer applies is dropped with an error in the log;
    /// the stream stays as it was.
    pub(crate) async fn finish_reshard(
        &self,
        state: &Arc<StreamState>,
        meta: &mut StreamMeta,
    ) -> Result<()> {
        let Some(op) = meta.pending_reshard.take() else {
            return Ok(());
        };
        let _gate = state.gate.write().await;
        let now = self.now_ms();
        let ends = |o: u32| state.log(o).map(|l| l.bounds().end_offset).unwrap_or(0);
        let mut changed = meta.clone();
        match self.apply_reshard(&mut changed, &op, &ends, now, false) {
            Ok(_) => {
                let logs = self.open_logs(&changed).await?;
                *state.logs.write().unwrap() = logs;
                *meta = changed;
            }
            Err(e) => {
                tracing::error!(stream = meta.name, ?op, error = %e, "reshard dropped: it no longer applies");
            }
        }
        Ok(())
    }

    /// Edits `meta` for `op`: closes parents (at the log ends `ends` gives) and opens
    /// children. Refuses what Kinesis refuses; `check_limit` also checks the account's
    /// shard limit (at request time; not again when a pending change is applied).
    pub(crate) fn apply_reshard(
        &self,
        meta: &mut StreamMeta,
        op: &Reshard,
        ends: &dyn Fn(u32) -> u64,
        now: i64,
        check_limit: bool,
    ) -> Result<u32> {
        let account = &self.config.account_id;
        let current = meta.open_shards().count() as u32;
        match op {
            Reshard::Split {
                shard,
                new_starting_hash_key,
            } => {
                let idx = self.open_shard_index(meta, *shard)?;
                let (start, end) = meta.shards[idx].range();
                let sid = meta.shards[idx].shard_id();
                let key = hashing::parse_hash_key(new_starting_hash_key)
                    .filter(|k| *k > start.saturating_add(1) && *k < end)
                    .ok_or_else(|| {
                        StreamError::InvalidArgument(format!(
                            "NewStartingHashKey {new_starting_hash_key} used in SplitShard() on shard {sid} in stream {} under account {account} is not both greater than one plus the shard's StartingHashKey {start} and less than the shard's EndingHashKey {end}.",
                            meta.name
                        ))
                    })?;
                if check_limit {
                    self.check_shard_limit(1)?;
                }
                Self::close_shard(&mut meta.shards[idx], ends(*shard), now);
                Self::new_shard(meta, (start, key - 1), (Some(*shard), None), now);
                Self::new_shard(meta, (key, end), (Some(*shard), None), now);
            }
            Reshard::Merge { shard, adjacent } => {
                let a = self.open_shard_index(meta, *shard)?;
                let b = self.open_shard_index(meta, *adjacent)?;
                let (a_start, a_end) = meta.shards[a].range();
                let (b_start, b_end) = meta.shards[b].range();
                // As in Kinesis, ShardToMerge must be the lower of the two ranges.
                let adjacent_pair = a != b && a_end.checked_add(1) == Some(b_start);
                if !adjacent_pair {
                    return Err(StreamError::InvalidArgument(format!(
                        "Shards {} and {} in stream {} under account {account} are not an adjacent pair of shards eligible for merging",
                        meta.shards[a].shard_id(),
                        meta.shards[b].shard_id(),
                        meta.name
                    )));
                }
                Self::close_shard(&mut meta.shards[a], ends(*shard), now);
                Self::close_shard(&mut meta.shards[b], ends(*adjacent), now);
                Self::new_shard(
                    meta,
                    (a_start.min(b_start), a_end.max(b_end)),
                    (Some(*shard), Some(*adjacent)),
                    now,
                );
            }
            Reshard::Count { target } => {
                let target = *target;
                if target > current * 2 {
                    return Err(StreamError::LimitExceeded(format!(
                        "UpdateShardCount cannot scale up over double your current open shard count. Current open shard count: {current} Target shard count: {target}"
                    )));
                }
                if target < current.div_ceil(2) {
                    return Err(StreamError::LimitExceeded(format!(
                        "UpdateShardCount cannot scale down below half your current open shard count. Current open shard count: {current} Target shard count: {target}"
                    )));
                }
                if check_limit && target > current {
                    self.check_shard_limit(target - current)?;
                }
                let open: Vec<usize> = (0..meta.shards.len())
                    .filter(|&i| meta.shards[i].is_open())
                    .collect();
                let parents: Vec<(u32, (u128, u128))> = open
                    .iter()
                    .map(|&i| (meta.shards[i].ordinal, meta.shards[i].range()))
                    .collect();
                for &i in &open {
                    let o = meta.shards[i].ordinal;
                    Self::close_shard(&mut meta.shards[i], ends(o), now);
                }
                // Each new shard names the (up to two) first parents whose ranges
                // overlap it; each parent lists all overlapping children.
                for (start, end) in hashing::uniform_ranges(target) {
                    let mut overlapping = parents
                        .iter()
                        .filter(|(_, (ps, pe))| *ps <= end && start <= *pe)
                        .map(|(o, _)| *o);
                    let first = overlapping.next();
                    let second = overlapping.next();
                    Self::new_shard(meta, (start, end), (first, second), now);
                }
            }
        }
        Ok(current)
    }

    fn shard_missing(&self, stream: &str, shard: &str) -> StreamError {
        StreamError::ResourceNotFound(format!(
            "Could not find shard {shard} in stream {stream} under account {}.",
            self.config.account_id
        ))
    }

    /// Reads a shard id named in SplitShard or MergeShards. As Kinesis, an id that
    /// cannot name a shard is refused before the stream is looked up.
    fn reshard_target(&self, r: &StreamRef, shard: &str) -> Result<u32> {
        parse_shard_id(shard).ok_or_else(|| {
            let stream = r.name.clone().or_else(|| r.arn.clone()).unwrap_or_default();
            self.shard_missing(&stream, shard)
        })
    }

    fn open_shard_index(&self, meta: &StreamMeta, ordinal: u32) -> Result<usize> {
        let idx = meta
            .shards
            .iter()
            .position(|s| s.ordinal == ordinal)
            .ok_or_else(|| self.shard_missing(&meta.name, &shard_id(ordinal)))?;
        if !meta.shards[idx].is_open() {
            return Err(StreamError::InvalidArgument(format!(
                "Shard {} in stream {} under account {} has already been merged or split, and thus is not eligible for merging or splitting.",
                meta.shards[idx].shard_id(),
                meta.name,
                self.config.account_id
            )));
        }
        Ok(idx)
    }

    fn close_shard(s: &mut ShardMeta, end: u64, now: i64) {
        s.closed_end_offset = Some(end);
        s.closed_ms = Some(now);
    }

    fn new_shard(
        meta: &mut StreamMeta,
        range: (u128, u128),
        parents: (Option<u32>, Option<u32>),
        now: i64,
    ) {
        let ordinal = meta.next_ordinal;
        meta.next_ordinal += 1;
        meta.shards.push(ShardMeta {
            ordinal,
            parent: parents.0,
            adjacent_parent: parents.1,
            hash_start: range.0.to_string(),
            hash_end: range.1.to_string(),
            created_ms: now,
            closed_end_offset: None,
            closed_ms: None,
        });
    }

    /// SplitShard.
    pub async fn split_shard(
        self: &Arc<Self>,
        r: &StreamRef,
        shard: &str,
        new_starting_hash_key: &str,
    ) -> Result<()> {
        let shard = self.reshard_target(r, shard)?;
        let op = Reshard::Split {
            shard,
            new_starting_hash_key: new_starting_hash_key.to_string(),
        };
        self.reshard(r, op).await?;
        Ok(())
    }

    /// MergeShards.
    pub async fn merge_shards(
        self: &Arc<Self>,
        r: &StreamRef,
        shard: &str,
        adjacent: &str,
    ) -> Result<()> {
        let shard = self.reshard_target(r, shard)?;
        let adjacent = self.reshard_target(r, adjacent)?;
        self.reshard(r, Reshard::Merge { shard, adjacent }).await?;
        Ok(())
    }

    /// UpdateShardCount with UNIFORM_SCALING: every open shard closes and `target`
    /// uniform shards open.
    pub async fn update_shard_count(
        self: &Arc<Self>,
        r: &StreamRef,
        target: u32,
    ) -> Result<(u32, StreamMeta)> {
        self.reshard(r, Reshard::Count { target }).await
    }

    /// Forgets closed shards whose data has all expired (closed before `cutoff`).
    pub(crate) async fn expire_closed_shards(
        &self,
        state: &Arc<StreamState>,
        cutoff: i64,
    ) -> Result<()> {
        let expired: Vec<u32> = {
            let meta = state.meta.read().unwrap();
            meta.shards
                .iter()
                .filter(|s| s.closed_ms.is_some_and(|c| c < cutoff))
                .map(|s| s.ordinal)
                .collect()
        };
        if expired.is_empty() {
            return Ok(());
        }
        let name = state.meta.read().unwrap().name.clone();
        let (ids, _) = self
            .update_meta(&StreamRef::name(name), |meta| {
                let ids: Vec<String> = expired.iter().map(|o| meta.log_id(*o)).collect();
                meta.shards.retain(|s| !expired.contains(&s.ordinal));
                for s in &mut meta.shards {
                    if s.parent.is_some_and(|p| expired.contains(&p)) {
                        s.parent = None;
                    }
                    if s.adjacent_parent.is_some_and(|p| expired.contains(&p)) {
                        s.adjacent_parent = None;
                    }
                }
                Ok(ids)
            })
            .await?;
        state
            .logs
            .write()
            .unwrap()
            .retain(|o, _| !expired.contains(o));
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            for id in ids {
                store.remove_log(&id)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StreamError::Internal(e.to_string()))??;
        Ok(())
    }

    /// ListShards. Either a stream (with optional filter) or a NextToken.
    pub fn list_shards(
        &self,
        r: Option<&StreamRef>,
        next_token: Option<&str>,
        exclusive_start_shard_id: Option<&str>,
        max_results: Option<usize>,
        filter: Option<ShardFilter>,
    ) -> Result<(Vec<Shard>, Option<String>)> {
        let now = self.now_ms();
        let (stream_ref, after, filter, max) = match (r, next_token) {
            (Some(_), Some(_)) => {
                return Err(StreamError::InvalidArgument(
                    "NextToken and StreamName cannot be provided together.".into(),
                ));
            }
            (None, None) => {
                return Err(StreamError::InvalidArgument(
                    "Either NextToken or StreamName should be provided.".into(),
                ));
            }
            (None, Some(token)) => {
                let t: ListShardsToken = STANDARD
                    .decode(token)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .ok_or_else(|| StreamError::InvalidArgument("Invalid NextToken.".into()))?;
                if now - t.issued_ms > NEXT_TOKEN_TTL_MS {
                    return Err(StreamError::ExpiredNextToken(format!(
                        "The timestamp of the NextToken is expired. NextToken was issued at {} and it is now {now}.",
                        t.issued_ms
                    )));
                }
                let (_, state) = self.state(&StreamRef::name(t.stream.clone()))?;
                if state.meta.read().unwrap().epoch != t.epoch {
                    return Err(self.not_found(&t.stream));
                }
                (
                    StreamRef::name(t.stream),
                    t.after,
                    t.filter,
                    max_results.unwrap_or(t.max),
                )
            }
            (Some(r), None) => (
                r.clone(),
                exclusive_start_shard_id.and_then(parse_shard_id),
                filter,
                max_results.unwrap_or(1000),
            ),
        };
        let (name, state) = self.state(&stream_ref)?;
        let meta = state.meta.read().unwrap().clone();
        let present = |o: u32| meta.shard(o).is_some();
        let filter_after = match &filter {
            Some(f) if f.kind == "AFTER_SHARD_ID" => {
                let id = f.shard_id.as_deref().ok_or_else(|| {
                    StreamError::InvalidArgument(
                        "ShardId must be specified for ShardFilter of type AFTER_SHARD_ID.".into(),
                    )
                })?;
                parse_shard_id(id)
            }
            _ => None,
        };
        let keep = |s: &ShardMeta| -> bool {
            match filter.as_ref().map(|f| f.kind.as_str()) {
                None | Some("FROM_TRIM_HORIZON") | Some("AFTER_SHARD_ID") => true,
                Some("AT_TRIM_HORIZON") => {
                    !s.parent.is_some_and(present) && !s.adjacent_parent.is_some_and(present)
                }
                Some("AT_LATEST") => s.is_open(),
                Some("AT_TIMESTAMP") => {
                    let t = filter.as_ref().and_then(|f| f.timestamp_ms).unwrap_or(now);
                    let open_then = s.created_ms <= t && s.closed_ms.is_none_or(|c| c > t);
                    let root_before_creation = t < meta.epoch as i64 && s.parent.is_none();
                    open_then || root_before_creation
                }
                Some("FROM_TIMESTAMP") => {
                    let t = filter.as_ref().and_then(|f| f.timestamp_ms).unwrap_or(now);
                    s.closed_ms.is_none_or(|c| c >= t)
                }
                Some(_) => true,
            }
        };
        let selected: Vec<&ShardMeta> = meta
            .shards
            .iter()
            .filter(|s| after.is_none_or(|a| s.ordinal > a))
            .filter(|s| filter_after.is_none_or(|a| s.ordinal > a))
            .filter(|s| keep(s))
            .collect();
        let max = max.clamp(1, 10_000);
        let page: Vec<Shard> = selected
            .iter()
            .take(max)
            .map(|s| self.shard_wire(&meta, s))
            .collect();
        let token = if selected.len() > max {
            let t = ListShardsToken {
                stream: name,
                epoch: meta.epoch,
                after: selected.get(max - 1).map(|s| s.ordinal),
                filter,
                max,
                issued_ms: now,
            };
            Some(STANDARD.encode(serde_json::to_vec(&t).unwrap_or_default()))
        } else {
            None
        };
        Ok((page, token))
    }
}
