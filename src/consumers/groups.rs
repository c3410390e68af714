//! Consumer groups: Freshet's own way (no AWS counterpart; described in
//! `docs/consumer-groups.md`) for workers without an AWS SDK to share a stream's
//! shards. A group is (stream, group name), created by its first join.
//!
//! - Workers join, then heartbeat; each heartbeat answers the shards the worker holds
//!   (with their lease epochs) and the ones it must let go of.
//! - Shards are leased: at most one holder per shard at any time. A new lease (with a
//!   new epoch) is granted only after the previous holder released it or expired (no
//!   heartbeat for its lease timeout). Available shards are spread evenly over the live
//!   workers; a worker holding more than its share is asked to release the surplus.
//! - A shard whose parents have not been finished (checkpointed at their end) is not
//!   handed out, so children are read only after their parents.
//! - Checkpoints are fenced by the lease epoch (a worker that lost the lease gets
//!   [`GroupError::LeaseLost`]) and durable: the group (members, leases, checkpoints)
//!   is one catalog record, written before the answer. Delivery is at least once and in
//!   order per shard: a new holder reads from the last checkpoint.
//!
//! No HTTP here. The lease logic ([`GroupRecord::rebalance`]) is pure, driven by the
//! time given to it, so it is tested on simulated time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::error::{Classified, ErrorKind};
use crate::store::catalog::Catalog;
use crate::streams::model::OutRecord;
use crate::streams::sequence::SequenceNumber;
use crate::streams::{StreamError, StreamRef, StreamService};

/// Catalog namespace of the groups; keys are `stream/group`.
const NAMESPACE: &str = "consumer_groups";
/// Lease timeout when the joining worker asks for none.
pub const DEFAULT_LEASE_TIMEOUT_MS: i64 = 10_000;
/// Shortest and longest lease timeout a worker may ask for.
pub const LEASE_TIMEOUT_RANGE_MS: (i64, i64) = (1_000, 300_000);
/// Most members of one group (each heartbeat costs a rebalance over them).
pub const MAX_MEMBERS: usize = 1_000;
/// Most records one read returns.
pub const MAX_READ_RECORDS: usize = 10_000;

/// Errors of the group service.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    GroupNotFound(String),
    /// The worker is not (or no longer) a member: it expired or left; join again.
    #[error("{0}")]
    UnknownWorker(String),
    /// The worker does not hold the shard under this epoch (any more).
    #[error("{0}")]
    LeaseLost(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error("{0}")]
    Internal(String),
}

impl Classified for GroupError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Self::GroupNotFound(_) => ErrorKind::NotFound,
            Self::UnknownWorker(_) | Self::LeaseLost(_) => ErrorKind::InUse,
            Self::LimitExceeded(_) => ErrorKind::LimitExceeded,
            Self::Stream(e) => e.kind(),
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    fn aws_type(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "InvalidArgumentException",
            Self::GroupNotFound(_) => "ResourceNotFoundException",
            Self::UnknownWorker(_) => "WorkerExpiredException",
            Self::LeaseLost(_) => "LeaseLostException",
            Self::LimitExceeded(_) => "LimitExceededException",
            Self::Stream(e) => e.aws_type(),
            Self::Internal(_) => "InternalFailure",
        }
    }
}

type Result<T> = std::result::Result<T, GroupError>;

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub joined_ms: i64,
    /// The worker's own lease timeout: it expires this long after its last heartbeat.
    pub lease_timeout_ms: i64,
    /// Last heartbeat (or join). Not trusted across restarts: on load every member gets
    /// a fresh timeout, so a restart never hands a live worker's shards to another.
    pub last_seen_ms: i64,
}

/// One shard's lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub worker: String,
    /// Unique in the group and increasing: fences the checkpoints of earlier holders.
    pub epoch: u64,
    /// The holder was asked to let go (rebalance); it keeps the lease until it does.
    #[serde(default)]
    pub releasing: bool,
}

/// How far a group has read a shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last sequence number processed; `None`: nothing yet.
    pub sequence_number: Option<String>,
    /// Read to its end (a closed shard): its children may be handed out.
    #[serde(default)]
    pub finished: bool,
    pub updated_ms: i64,
}

/// A shard as the lease logic sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub id: String,
    pub parents: Vec<String>,
    pub closed: bool,
}

impl ShardInfo {
    /// A shard of ListShards: its parents (split or merge) and whether it is closed.
    pub fn of(s: crate::streams::model::Shard) -> ShardInfo {
        ShardInfo {
            closed: s.sequence_number_range.ending_sequence_number.is_some(),
            parents: s
                .parent_shard_id
                .into_iter()
                .chain(s.adjacent_parent_shard_id)
                .collect(),
            id: s.shard_id,
        }
    }
}

/// The shards that may be read now, in the order given: not finished, and every parent
/// finished (a parent no longer listed has been trimmed away by retention: nothing to
/// wait for). `finished(id)`: read to its end and processed.
pub fn readable(shards: &[ShardInfo], finished: impl Fn(&str) -> bool) -> Vec<String> {
    let known: BTreeSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let done = |id: &str| !known.contains(id) || finished(id);
    shards
        .iter()
        .filter(|s| !done(&s.id))
        .filter(|s| s.parents.iter().all(|p| done(p)))
        .map(|s| s.id.clone())
        .collect()
}

/// A group, as stored in the catalog (one record per group).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub stream: String,
    pub group: String,
    /// The stream's creation time: a stream deleted and created again under the same
    /// name starts the group afresh (old sequence numbers mean nothing there).
    #[serde(default)]
    pub stream_created_ms: i64,
    pub next_epoch: u64,
    pub members: BTreeMap<String, Member>,
    /// By shard id.
    pub leases: BTreeMap<String, Lease>,
    /// By shard id.
    pub checkpoints: BTreeMap<String, Checkpoint>,
}

impl GroupRecord {
    /// Shards that may be leased now: not finished, parents finished.
    pub fn available(&self, shards: &[ShardInfo]) -> Vec<String> {
        readable(shards, |id| {
            self.checkpoints.get(id).is_some_and(|c| c.finished)
        })
    }

    /// Expires silent members (and their leases), drops leases of shards that are no
    /// longer available, asks over-loaded workers to release, and grants free shards
    /// to the least loaded workers. Never grants a shard that has a holder. Returns
    /// whether anything changed.
    pub fn rebalance(&mut self, shards: &[ShardInfo], now_ms: i64) -> bool {
        let before = self.clone();
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now_ms >= m.last_seen_ms.saturating_add(m.lease_timeout_ms))
            .map(|(w, _)| w.clone())
            .collect();
        for w in &expired {
            self.members.remove(w);
        }
        let available = self.available(shards);
        let available_set: BTreeSet<&str> = available.iter().map(String::as_str).collect();
        self.leases.retain(|shard, l| {
            self.members.contains_key(&l.worker) && available_set.contains(shard.as_str())
        });
        if !self.members.is_empty() {
            self.spread(&available);
        }
        *self != before
    }

    fn spread(&mut self, available: &[String]) {
        let mut held: BTreeMap<&str, Vec<String>> = self
            .members
            .keys()
            .map(|w| (w.as_str(), Vec::new()))
            .collect();
        for (shard, l) in &self.leases {
            if !l.releasing
                && let Some(v) = held.get_mut(l.worker.as_str())
            {
                v.push(shard.clone());
            }
        }
        let n = available.len();
        let w = held.len();
        let (base, extra) = (n / w, n % w);
        // The most loaded workers keep the extra shards, so as little as possible moves.
        let mut order: Vec<(&str, usize)> = held.iter().map(|(w, v)| (*w, v.len())).collect();
        order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let desired: BTreeMap<String, usize> = order
            .iter()
            .enumerate()
            .map(|(i, (w, _))| (w.to_string(), base + usize::from(i < extra)))
            .collect();
        for (worker, shards) in &held {
            let want = desired.get(*worker).copied().unwrap_or(0);
            for shard in shards.iter().skip(want) {
                if let Some(l) = self.leases.get_mut(shard) {
                    l.releasing = true;
                }
            }
        }
        let mut counts: BTreeMap<String, usize> = held
            .iter()
            .map(|(w, v)| (w.to_string(), v.len().min(desired[*w])))
            .collect();
        for shard in available {
            if self.leases.contains_key(shard) {
                continue;
            }
            let Some((worker, _)) = counts
                .iter()
                .filter(|(w, c)| **c < desired[*w])
                .min_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)))
                .map(|(w, c)| (w.clone(), *c))
            else {
                break;
            };
            *counts.entry(worker.clone()).or_default() += 1;
            self.next_epoch += 1;
            self.leases.insert(
                shard.clone(),
                Lease {
                    worker,
                    epoch: self.next_epoch,
                    releasing: false,
                },
            );
        }
    }

    /// The lease of `shard` if `worker` holds it under `epoch`.
    fn check_lease(&self, worker: &str, shard: &str, epoch: u64) -> Result<&Lease> {
        match self.leases.get(shard) {
            Some(l) if l.worker == worker && l.epoch == epoch => Ok(l),
            _ => Err(GroupError::LeaseLost(format!(
                "Worker {worker} does not hold shard {shard} under lease epoch {epoch}."
            ))),
        }
    }
}

/// What a join answers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    pub worker: String,
    pub heartbeat_interval_ms: i64,
    pub lease_timeout_ms: i64,
}

/// One lease in a heartbeat answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldLease {
    pub shard_id: String,
    pub epoch: u64,
    /// Where the group is in this shard: the holder reads after it.
    pub checkpoint: Option<String>,
}

/// What a heartbeat answers.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// Every shard the worker holds now, including those it is asked to release.
    pub leases: Vec<HeldLease>,
    /// Shards to let go of: stop reading, checkpoint, then name them in `released`.
    pub release: Vec<String>,
}

/// What a read answers.
#[derive(Debug, Clone)]
pub struct Records {
    pub records: Vec<OutRecord>,
    /// The shard is closed and everything in it has been read: checkpoint with
    /// `shardEnd` so its children are handed out.
    pub shard_end: bool,
    pub millis_behind_latest: i64,
}

/// One shard in a group's description.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardStatus {
    pub shard_id: String,
    pub worker: Option<String>,
    pub epoch: Option<u64>,
    pub releasing: bool,
    pub checkpoint: Option<String>,
    pub finished: bool,
    /// Records after the checkpoint (0 for a finished shard).
    pub lag_records: u64,
}

/// One member in a group's description.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub worker: String,
    pub joined_at: i64,
    pub last_heartbeat_at: i64,
    pub lease_timeout_ms: i64,
    pub shards: Vec<String>,
}

/// A group's description.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupStatus {
    pub stream: String,
    pub group: String,
    pub members: Vec<MemberStatus>,
    pub shards: Vec<ShardStatus>,
}

/// Who claims a shard: a worker, under the epoch of its lease.
#[derive(Debug, Clone, Copy)]
pub struct Holder<'a> {
    pub worker: &'a str,
    pub shard: &'a str,
    pub epoch: u64,
}

fn valid_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The consumer-group service over a [`StreamService`] and the catalog.
pub struct GroupService {
    streams: Arc<StreamService>,
    catalog: Arc<dyn Catalog>,
    clock: SharedClock,
    /// Loaded groups by catalog key. One lock for all: every change is written to the
    /// catalog under it, so records are written in the order they were made.
    groups: tokio::sync::Mutex<HashMap<String, GroupRecord>>,
}

impl GroupService {
    pub fn new(streams: Arc<StreamService>, catalog: Arc<dyn Catalog>, clock: SharedClock) -> Self {
        Self {
            streams,
            catalog,
            clock,
            groups: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The stream's shards and its creation time (NotFound for an unknown stream).
    fn shards(&self, stream: &str) -> Result<(Vec<ShardInfo>, i64)> {
        let r = StreamRef::name(stream);
        let summary = self.streams.describe_stream_summary(&r)?;
        let (list, _) = self
            .streams
            .list_shards(Some(&r), None, None, Some(10_000), None)?;
        let shards = list.into_iter().map(ShardInfo::of).collect();
        let created = (summary.stream_creation_timestamp * 1000.0).round() as i64;
        Ok((shards, created))
    }

    async fn load(&self, key: &str) -> Result<Option<GroupRecord>> {
        let catalog = self.catalog.clone();
        let key = key.to_string();
        let raw = tokio::task::spawn_blocking(move || catalog.get(NAMESPACE, &key))
            .await
            .map_err(|e| GroupError::Internal(e.to_string()))?
            .map_err(|e| GroupError::Internal(e.to_string()))?;
        match raw {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| GroupError::Internal(format!("group record {e}"))),
        }
    }

    async fn save(&self, key: &str, record: &GroupRecord) -> Result<()> {
        let catalog = self.catalog.clone();
        let key = key.to_string();
        let bytes = serde_json::to_vec(record).map_err(|e| GroupError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(move || catalog.put(NAMESPACE, &key, bytes))
            .await
            .map_err(|e| GroupError::Internal(e.to_string()))?
            .map_err(|e| GroupError::Internal(e.to_string()))
    }

    /// Runs `f` on the group (loaded, rebalanced to now) and writes it back when it
    /// changed. `create` makes a missing group; otherwise a missing one is NotFound.
    async fn with_group<T>(
        &self,
        stream: &str,
        group: &str,
        create: bool,
        f: impl FnOnce(&mut GroupRecord, &[ShardInfo], i64) -> Result<T>,
    ) -> Result<T> {
        if !valid_name(group) {
            return Err(GroupError::InvalidArgument(
                "group must be 1 to 128 characters of A-Z, a-z, 0-9, '_', '-' and '.'".into(),
            ));
        }
        let (shards, created) = self.shards(stream)?;
        let key = format!("{stream}/{group}");
        let mut groups = self.groups.lock().await;
        let now = self.clock.now_ms();
        if !groups.contains_key(&key) {
            let mut record = self
                .load(&key)
                .await?
                .filter(|r| r.stream_created_ms == created);
            if let Some(r) = record.as_mut() {
                for m in r.members.values_mut() {
                    m.last_seen_ms = now;
                }
            }
            match record {
                Some(r) => {
                    groups.insert(key.clone(), r);
                }
                None if create => {
                    groups.insert(
                        key.clone(),
                        GroupRecord {
                            stream: stream.to_string(),
                            group: group.to_string(),
                            stream_created_ms: created,
                            ..GroupRecord::default()
                        },
                    );
                }
                None => {
                    return Err(GroupError::GroupNotFound(format!(
                        "Consumer group {group} of stream {stream} not found."
                    )));
                }
            }
        }
        let Some(record) = groups.get_mut(&key) else {
            return Err(GroupError::Internal("group vanished".into()));
        };
        if record.stream_created_ms != created {
            // The stream was deleted and made again: the old group means nothing.
            *record = GroupRecord {
                stream: stream.to_string(),
                group: group.to_string(),
                stream_created_ms: created,
                ..GroupRecord::default()
            };
        }
        let before = record.clone();
        record.rebalance(&shards, now);
        let out = f(record, &shards, now);
        record.rebalance(&shards, now);
        if *record != before && !only_heartbeat_times(&before, record) {
            let snapshot = record.clone();
            if let Err(e) = self.save(&key, &snapshot).await {
                // Not durable: forget the change so that memory matches the catalog.
                groups.remove(&key);
                return Err(e);
            }
        }
        out
    }

    /// Joins (or re-joins) `worker`, creating the group on first use.
    pub async fn join(
        &self,
        stream: &str,
        group: &str,
        worker: Option<String>,
        lease_timeout_ms: Option<i64>,
    ) -> Result<Joined> {
        let worker = worker.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if !valid_name(&worker) {
            return Err(GroupError::InvalidArgument(
                "worker must be 1 to 128 characters of A-Z, a-z, 0-9, '_', '-' and '.'".into(),
            ));
        }
        let timeout = lease_timeout_ms.unwrap_or(DEFAULT_LEASE_TIMEOUT_MS);
        let (lo, hi) = LEASE_TIMEOUT_RANGE_MS;
        if !(lo..=hi).contains(&timeout) {
            return Err(GroupError::InvalidArgument(format!(
                "leaseTimeoutMs must be between {lo} and {hi}"
            )));
        }
        self.with_group(stream, group, true, |g, _, now| {
            if !g.members.contains_key(&worker) && g.members.len() >= MAX_MEMBERS {
                return Err(GroupError::LimitExceeded(format!(
                    "A group has at most {MAX_MEMBERS} members."
                )));
            }
            let joined_ms = g.members.get(&worker).map_or(now, |m| m.joined_ms);
            g.members.insert(
                worker.clone(),
                Member {
                    joined_ms,
                    lease_timeout_ms: timeout,
                    last_seen_ms: now,
                },
            );
            Ok(Joined {
                worker: worker.clone(),
                heartbeat_interval_ms: (timeout / 3).max(100),
                lease_timeout_ms: timeout,
            })
        })
        .await
    }

    /// Keeps `worker` alive, takes back the shards it `released`, and answers its leases.
    pub async fn heartbeat(
        &self,
        stream: &str,
        group: &str,
        worker: &str,
        released: &[String],
    ) -> Result<Heartbeat> {
        self.with_group(stream, group, false, |g, shards, now| {
            let Some(m) = g.members.get_mut(worker) else {
                return Err(unknown_worker(worker));
            };
            m.last_seen_ms = now;
            for shard in released {
                if g.leases.get(shard).is_some_and(|l| l.worker == worker) {
                    g.leases.remove(shard);
                }
            }
            g.rebalance(shards, now);
            let mut out = Heartbeat {
                leases: Vec::new(),
                release: Vec::new(),
            };
            for (shard, l) in g.leases.iter().filter(|(_, l)| l.worker == worker) {
                out.leases.push(HeldLease {
                    shard_id: shard.clone(),
                    epoch: l.epoch,
                    checkpoint: g
                        .checkpoints
                        .get(shard)
                        .and_then(|c| c.sequence_number.clone()),
                });
                if l.releasing {
                    out.release.push(shard.clone());
                }
            }
            Ok(out)
        })
        .await
    }

    /// Removes `worker` and frees its shards at once.
    pub async fn leave(&self, stream: &str, group: &str, worker: &str) -> Result<()> {
        self.with_group(stream, group, false, |g, _, _| {
            if g.members.remove(worker).is_none() {
                return Err(unknown_worker(worker));
            }
            g.leases.retain(|_, l| l.worker != worker);
            Ok(())
        })
        .await
    }

    /// Records of a shard the worker holds: after `after` when given, else after the
    /// group's checkpoint, else from the oldest record.
    pub async fn records(
        &self,
        stream: &str,
        group: &str,
        holder: Holder<'_>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Records> {
        let Holder {
            worker,
            shard,
            epoch,
        } = holder;
        let checkpoint = self
            .with_group(stream, group, false, |g, _, now| {
                let Some(m) = g.members.get_mut(worker) else {
                    return Err(unknown_worker(worker));
                };
                m.last_seen_ms = now;
                g.check_lease(worker, shard, epoch)?;
                Ok(g.checkpoints.get(shard).cloned().unwrap_or_default())
            })
            .await?;
        if checkpoint.finished {
            return Ok(Records {
                records: Vec::new(),
                shard_end: true,
                millis_behind_latest: 0,
            });
        }
        let r = StreamRef::name(stream);
        let from = after.map(str::to_string).or(checkpoint.sequence_number);
        let it = match &from {
            Some(seq) => {
                self.streams
                    .get_shard_iterator(&r, shard, "AFTER_SEQUENCE_NUMBER", Some(seq), None)
                    .await?
            }
            None => {
                self.streams
                    .get_shard_iterator(&r, shard, "TRIM_HORIZON", None, None)
                    .await?
            }
        };
        let out = self
            .streams
            .get_records(&it, Some(limit.clamp(1, MAX_READ_RECORDS)))
            .await?;
        Ok(Records {
            shard_end: out.next_shard_iterator.is_none() && out.records.is_empty(),
            records: out.records,
            millis_behind_latest: out.millis_behind_latest,
        })
    }

    /// Records that the group has processed `shard` up to `sequence_number` (or, with
    /// `shard_end`, all of it), if `worker` still holds it under `epoch`. A checkpoint
    /// never moves back. Durable before it returns.
    pub async fn checkpoint(
        &self,
        stream: &str,
        group: &str,
        holder: Holder<'_>,
        sequence_number: Option<&str>,
        shard_end: bool,
    ) -> Result<()> {
        let Holder {
            worker,
            shard,
            epoch,
        } = holder;
        let seq = match sequence_number {
            Some(text) => {
                let parsed = SequenceNumber::parse(text).ok_or_else(|| {
                    GroupError::InvalidArgument(format!("sequenceNumber {text} is invalid"))
                })?;
                if crate::streams::model::parse_shard_id(shard) != Some(parsed.shard_ordinal) {
                    return Err(GroupError::InvalidArgument(format!(
                        "sequenceNumber {text} is not of shard {shard}"
                    )));
                }
                Some((parsed.offset, text.to_string()))
            }
            None if shard_end => None,
            None => {
                return Err(GroupError::InvalidArgument(
                    "give a sequenceNumber, or shardEnd: true".into(),
                ));
            }
        };
        self.with_group(stream, group, false, |g, shards, now| {
            let Some(m) = g.members.get_mut(worker) else {
                return Err(unknown_worker(worker));
            };
            m.last_seen_ms = now;
            g.check_lease(worker, shard, epoch)?;
            if shard_end && !shards.iter().any(|s| s.id == shard && s.closed) {
                return Err(GroupError::InvalidArgument(format!(
                    "shard {shard} is open: it has no end to checkpoint"
                )));
            }
            let cp = g.checkpoints.entry(shard.to_string()).or_default();
            if let Some((offset, text)) = seq {
                let current = cp
                    .sequence_number
                    .as_deref()
                    .and_then(SequenceNumber::parse)
                    .map(|s| s.offset);
                if current.is_none_or(|c| offset > c) {
                    cp.sequence_number = Some(text);
                }
            }
            cp.finished |= shard_end;
            cp.updated_ms = now;
            Ok(())
        })
        .await
    }

    /// Members, leases, checkpoints and lag.
    pub async fn describe(&self, stream: &str, group: &str) -> Result<GroupStatus> {
        let record = self
            .with_group(stream, group, false, |g, _, _| Ok(g.clone()))
            .await?;
        let (shards, _) = self.shards(stream)?;
        let r = StreamRef::name(stream);
        let mut out = GroupStatus {
            stream: stream.to_string(),
            group: group.to_string(),
            members: Vec::new(),
            shards: Vec::new(),
        };
        for (w, m) in &record.members {
            out.members.push(MemberStatus {
                worker: w.clone(),
                joined_at: m.joined_ms,
                last_heartbeat_at: m.last_seen_ms,
                lease_timeout_ms: m.lease_timeout_ms,
                shards: record
                    .leases
                    .iter()
                    .filter(|(_, l)| l.worker == *w)
                    .map(|(s, _)| s.clone())
                    .collect(),
            });
        }
        for s in &shards {
            let lease = record.leases.get(&s.id);
            let cp = record.checkpoints.get(&s.id).cloned().unwrap_or_default();
            let end = self
                .streams
                .watch_shard_end(&r, &s.id)
                .map(|w| *w.borrow())
                .unwrap_or(0);
            let done = cp
                .sequence_number
                .as_deref()
                .and_then(SequenceNumber::parse)
                .map_or(0, |q| q.offset + 1);
            out.shards.push(ShardStatus {
                shard_id: s.id.clone(),
                worker: lease.map(|l| l.worker.clone()),
                epoch: lease.map(|l| l.epoch),
                releasing: lease.is_some_and(|l| l.releasing),
                lag_records: if cp.finished {
                    0
                } else {
                    end.saturating_sub(done)
                },
                checkpoint: cp.sequence_number,
                finished: cp.finished,
            });
        }
        Ok(out)
    }
}

fn unknown_worker(worker: &str) -> GroupError {
    GroupError::UnknownWorker(format!(
        "Worker {worker} is not a member of the group (it left or its lease timed out); join again."
    ))
}

/// Whether two records differ only in members' heartbeat times, which are not worth
/// a catalog write (on load every member gets a fresh timeout anyway).
fn only_heartbeat_times(a: &GroupRecord, b: &GroupRecord) -> bool {
    let strip = |r: &GroupRecord| {
        let mut r = r.clone();
        for m in r.members.values_mut() {
            m.last_seen_ms = 0;
        }
        r
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests;
