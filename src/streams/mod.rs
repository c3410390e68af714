//! Data streams (Amazon Kinesis Data Streams semantics): streams, shards and their hash
//! key ranges, records with sequence numbers, shard iterators, resharding, retention,
//! tags, consumers and the other stream settings.
//!
//! [`StreamService`] is the domain service behind the Kinesis API and the REST API.
//! Stream metadata lives in the catalog (namespace `streams`) and is mirrored in memory;
//! every control-plane change is written to the catalog before it is applied in memory.
//! Records live in the store, one log per shard. Behaviour follows the Kinesis API
//! reference; error messages follow what AWS returns.

pub mod error;
pub mod hashing;
pub mod iterator;
pub mod model;
mod records;
mod reshard;
pub mod sequence;
mod settings;
pub mod shared;
mod throughput;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

pub use error::{Result, StreamError};
pub use records::{GetRecordsOutput, PutRecordsEntry, PutResult, RecordInput};
pub use reshard::ShardFilter;

use iterator::IteratorCodec;
use model::*;

use crate::clock::SharedClock;
use crate::store::catalog::Catalog;
use crate::store::{Log, Store};

const NAMESPACE: &str = "streams";
const SECRETS: &str = "secrets";

/// Settings of the data-streams service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub account_id: String,
    pub region: String,
    /// How long a stream stays CREATING / UPDATING / DELETING.
    pub state_delay_ms: u64,
    pub iterator_ttl_ms: i64,
    /// Open shards allowed across all streams (LimitExceededException beyond).
    pub shard_limit: u32,
    pub on_demand_stream_limit: u32,
    /// Enforce per-shard write (1 MB/s, 1000 records/s) and read (2 MB/s, 5 calls/s)
    /// limits with ProvisionedThroughputExceededException.
    pub shard_throughput_limits: bool,
    /// Shards an on-demand stream starts with.
    pub on_demand_shards: u32,
    pub consumer_limit: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            account_id: "000000000000".into(),
            region: "us-east-1".into(),
            state_delay_ms: 500,
            iterator_ttl_ms: 300_000,
            shard_limit: 500,
            on_demand_stream_limit: 50,
            shard_throughput_limits: false,
            on_demand_shards: 4,
            consumer_limit: 20,
        }
    }
}

/// In-memory state of one stream.
pub(crate) struct StreamState {
    pub(crate) meta: RwLock<StreamMeta>,
    /// Open logs by shard ordinal.
    pub(crate) logs: RwLock<HashMap<u32, Arc<Log>>>,
    /// Puts hold this shared while they append; resharding holds it exclusively, so a
    /// shard is closed only after every append routed to it has finished.
    pub(crate) gate: tokio::sync::RwLock<()>,
    pub(crate) limiter: throughput::ShardLimiter,
    /// This stream's series in `/metrics`.
    pub(crate) metrics: crate::metrics::StreamMetrics,
}

impl StreamState {
    fn new(meta: StreamMeta, logs: HashMap<u32, Arc<Log>>) -> Arc<Self> {
        let metrics = crate::metrics::metrics().stream(&meta.name);
        Arc::new(Self {
            meta: RwLock::new(meta),
            logs: RwLock::new(logs),
            gate: tokio::sync::RwLock::new(()),
            limiter: throughput::ShardLimiter::default(),
            metrics,
        })
    }

    pub(crate) fn log(&self, ordinal: u32) -> Option<Arc<Log>> {
        self.logs.read().unwrap().get(&ordinal).cloned()
    }
}

/// The data-streams domain service.
pub struct StreamService {
    pub(crate) config: ServiceConfig,
    pub(crate) clock: SharedClock,
    pub(crate) store: Arc<Store>,
    catalog: Arc<dyn Catalog>,
    pub(crate) streams: RwLock<HashMap<String, Arc<StreamState>>>,
    /// Serialises control-plane changes (they are rare; data-plane calls never take it).
    control: tokio::sync::Mutex<()>,
    /// Signs this node's shard iterators (the embedded mode).
    local_iterators: IteratorCodec,
    /// Scale-out: records and catalog shared with the other nodes (see [`shared`]).
    shared: std::sync::OnceLock<Shared>,
    /// Resource policies by ARN.
    policies: RwLock<BTreeMap<String, String>>,
    /// Bumped when consumers go away (deregistered, or their stream deleted), so that
    /// their enhanced fan-out subscriptions end at once rather than at their next read.
    pub(crate) consumers_gone: tokio::sync::watch::Sender<u64>,
}

/// The shared data plane and the iterator key every node signs with.
struct Shared {
    plane: Arc<dyn shared::SharedShards>,
    iterators: IteratorCodec,
}

/// A stream's row in the shared catalog.
fn shared_row(meta: &StreamMeta) -> Result<shared::SharedStream> {
    Ok(shared::SharedStream {
        name: meta.name.clone(),
        stream_epoch: meta.epoch,
        meta: serde_json::to_vec(meta).map_err(|e| StreamError::Internal(e.to_string()))?,
        deleted: false,
    })
}

/// How a request names a stream: by name, by ARN, or both.
#[derive(Debug, Clone, Default)]
pub struct StreamRef {
    pub name: Option<String>,
    pub arn: Option<String>,
}

impl StreamRef {
    pub fn name(name: impl Into<String>) -> Self {
        Self {
            name: Some(name.into()),
            arn: None,
        }
    }
}

impl StreamService {
    /// Loads every stream from the catalog and opens its logs (recovering them).
    /// Streams caught mid-transition by a restart finish it now.
    pub async fn open(
        config: ServiceConfig,
        clock: SharedClock,
        store: Arc<Store>,
        catalog: Arc<dyn Catalog>,
    ) -> Result<Arc<Self>> {
        let (metas, key) = {
            let catalog = catalog.clone();
            tokio::task::spawn_blocking(move || -> Result<_> {
                let key = match catalog.get(SECRETS, "iterator-key")? {
                    Some(k) if k.len() == 32 => k,
                    _ => {
                        let k: Vec<u8> = uuid::Uuid::new_v4()
                            .as_bytes()
                            .iter()
                            .chain(uuid::Uuid::new_v4().as_bytes())
                            .copied()
                            .collect();
                        catalog.put(SECRETS, "iterator-key", k.clone())?;
                        k
                    }
                };
                let metas: Vec<StreamMeta> = catalog
                    .list(NAMESPACE)?
                    .into_iter()
                    .filter_map(|(name, v)| match serde_json::from_slice(&v) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            tracing::error!(stream = name, error = %e, "unreadable stream record; skipped");
                            None
                        }
                    })
                    .collect();
                Ok((metas, key))
            })
            .await
            .map_err(|e| StreamError::Internal(e.to_string()))??
        };
        let policies = {
            let catalog = catalog.clone();
            tokio::task::spawn_blocking(move || catalog.list("policies"))
                .await
                .map_err(|e| StreamError::Internal(e.to_string()))??
        };
        let service = Arc::new(Self {
            config,
            clock,
            store,
            catalog,
            streams: RwLock::new(HashMap::new()),
            control: tokio::sync::Mutex::new(()),
            local_iterators: IteratorCodec::new(key.try_into().expect("32-byte key")),
            shared: std::sync::OnceLock::new(),
            policies: RwLock::new(
                policies
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect(),
            ),
            consumers_gone: tokio::sync::watch::channel(0).0,
        });
        for mut meta in metas {
            if meta.status == StreamStatus::Deleting {
                service.finish_delete(&meta).await?;
                continue;
            }
            // Consumers caught DELETING by a restart are gone; CREATING ones are ACTIVE.
            meta.consumers.retain(|c| !c.deleting);
            for c in &mut meta.consumers {
                c.active = true;
            }
            let logs = service.open_logs(&meta).await?;
            let state = StreamState::new(meta.clone(), logs);
            // A reshard that was UPDATING completes now, on the recovered logs.
            service.finish_reshard(&state, &mut meta).await?;
            if meta.status != StreamStatus::Active {
                meta.status = StreamStatus::Active;
                service.persist(&meta).await?;
            }
            *state.meta.write().unwrap() = meta.clone();
            service
                .streams
                .write()
                .unwrap()
                .insert(meta.name.clone(), state);
        }
        Ok(service)
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// Signs and checks shard iterators: with the cluster's shared key in scale-out
    /// mode, so that an iterator from one node is good on every other.
    pub(crate) fn iterators(&self) -> &IteratorCodec {
        match self.shared.get() {
            Some(s) => &s.iterators,
            None => &self.local_iterators,
        }
    }

    /// The shared data plane, in scale-out mode.
    pub(crate) fn shared_plane(&self) -> Option<&Arc<dyn shared::SharedShards>> {
        self.shared.get().map(|s| &s.plane)
    }

    /// Scale-out: from now on records are appended and read through `plane`, streams
    /// are created and deleted in its shared catalog, and iterators are signed with
    /// `iterator_key`. Every `sync_every`, streams the shared catalog has and this node
    /// lacks are adopted and streams deleted there are dropped here. Call once, before
    /// serving.
    pub fn attach_shared(
        self: &Arc<Self>,
        plane: Arc<dyn shared::SharedShards>,
        iterator_key: [u8; 32],
        sync_every: std::time::Duration,
    ) {
        let attached = self
            .shared
            .set(Shared {
                plane,
                iterators: IteratorCodec::new(iterator_key),
            })
            .is_ok();
        if !attached {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(sync_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                let Some(service) = weak.upgrade() else {
                    return;
                };
                match service.sync_shared().await {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("shared stream catalog readable again");
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot read the shared stream catalog; retrying");
                    }
                    Err(e) => tracing::debug!(error = %e, "shared stream catalog sync failed"),
                }
            }
        });
    }

    /// Mirrors the shared catalog into this node's: adopts streams it lacks (ACTIVE at
    /// once: their creator has them), drops streams deleted there, and publishes
    /// streams only this node has.
    pub async fn sync_shared(self: &Arc<Self>) -> Result<()> {
        let Some(plane) = self.shared_plane().cloned() else {
            return Ok(());
        };
        let rows = plane.streams().await.map_err(StreamError::from)?;
        let _guard = self.control.lock().await;
        let known: std::collections::HashSet<String> =
            rows.iter().map(|r| r.name.clone()).collect();
        for row in rows {
            let local = self
                .streams
                .read()
                .unwrap()
                .get(&row.name)
                .map(|s| s.meta.read().unwrap().epoch);
            if row.deleted {
                if local == Some(row.stream_epoch) {
                    self.drop_local(&row.name).await?;
                }
                continue;
            }
            let mut meta: StreamMeta = match serde_json::from_slice(&row.meta) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(stream = row.name, error = %e, "unreadable shared stream record; skipped");
                    continue;
                }
            };
            if local == Some(row.stream_epoch) {
                self.adopt_settings(&meta).await?;
                continue;
            }
            if local.is_some() {
                // An older incarnation of the name: it was deleted elsewhere.
                self.drop_local(&row.name).await?;
            }
            meta.status = StreamStatus::Active;
            let logs = self.open_logs(&meta).await?;
            self.persist(&meta).await?;
            self.streams
                .write()
                .unwrap()
                .insert(meta.name.clone(), StreamState::new(meta, logs));
            tracing::info!(stream = row.name, "stream adopted from the shared catalog");
        }
        // Streams the shared catalog has never had were created here before this node
        // ran with a shared data path: they are published, so that every node serves
        // them from now on (their earlier records stay in this node's local log).
        let unshared: Vec<StreamMeta> = self
            .streams
            .read()
            .unwrap()
            .iter()
            .filter(|(name, _)| !known.contains(*name))
            .map(|(_, state)| state.meta.read().unwrap().clone())
            .collect();
        for meta in unshared {
            let published = plane.create_stream(shared_row(&meta)?).await?;
            if published {
                tracing::info!(
                    stream = meta.name,
                    "local stream published to the shared catalog"
                );
            }
        }
        Ok(())
    }

    /// Takes the settings another node changed (retention, tags, encryption,
    /// monitoring, record size) from the shared catalog's copy of a stream.
    async fn adopt_settings(&self, shared: &StreamMeta) -> Result<()> {
        let Some(state) = self.streams.read().unwrap().get(&shared.name).cloned() else {
            return Ok(());
        };
        let mut meta = state.meta.read().unwrap().clone();
        let before = (
            meta.retention_hours,
            meta.tags.clone(),
            meta.encryption_key.clone(),
            meta.shard_level_metrics.clone(),
            meta.max_record_size_kib,
        );
        let after = (
            shared.retention_hours,
            shared.tags.clone(),
            shared.encryption_key.clone(),
            shared.shard_level_metrics.clone(),
            shared.max_record_size_kib,
        );
        if before == after {
            return Ok(());
        }
        (
            meta.retention_hours,
            meta.tags,
            meta.encryption_key,
            meta.shard_level_metrics,
            meta.max_record_size_kib,
        ) = after;
        self.persist(&meta).await?;
        *state.meta.write().unwrap() = meta;
        tracing::info!(
            stream = shared.name,
            "stream settings taken from the shared catalog"
        );
        Ok(())
    }

    /// Forgets a stream on this node only (the shared catalog deleted it).
    async fn drop_local(&self, name: &str) -> Result<()> {
        let state = self.streams.write().unwrap().remove(name);
        if let Some(state) = state {
            let meta = state.meta.read().unwrap().clone();
            crate::metrics::metrics().forget_stream(name);
            self.consumers_gone.send_modify(|n| *n += 1);
            self.finish_delete(&meta).await?;
            tracing::info!(
                stream = name,
                "stream dropped: deleted in the shared catalog"
            );
        }
        Ok(())
    }

    /// The catalog the streams live in (consumer groups keep their records there too).
    pub fn catalog(&self) -> Arc<dyn Catalog> {
        self.catalog.clone()
    }

    /// The clock the service runs on.
    pub fn clock(&self) -> SharedClock {
        self.clock.clone()
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn stream_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:kinesis:{}:{}:stream/{}",
            self.config.region, self.config.account_id, name
        )
    }

    pub(crate) fn not_found(&self, name: &str) -> StreamError {
        StreamError::ResourceNotFound(format!(
            "Stream {name} under account {} not found.",
            self.config.account_id
        ))
    }

    /// Resolves a stream reference to its name (checking that an ARN names one of ours).
    pub(crate) fn resolve_name(&self, r: &StreamRef) -> Result<String> {
        match (&r.name, &r.arn) {
            (Some(name), _) => Ok(name.clone()),
            (None, Some(arn)) => {
                let prefix = format!(
                    "arn:aws:kinesis:{}:{}:stream/",
                    self.config.region, self.config.account_id
                );
                match arn.strip_prefix(&prefix) {
                    Some(name) if !name.is_empty() && !name.contains('/') => Ok(name.to_string()),
                    _ => Err(StreamError::ResourceNotFound(format!(
                        "Stream {arn} not found."
                    ))),
                }
            }
            (None, None) => Err(StreamError::Validation(
                "1 validation error detected: Value null at 'streamName' failed to satisfy constraint: Member must not be null".into(),
            )),
        }
    }

    /// Bytes on disk of each data stream (all its shards), for `/metrics`.
    pub fn storage_bytes(&self) -> Vec<(String, u64)> {
        self.streams
            .read()
            .unwrap()
            .iter()
            .map(|(name, state)| {
                let logs = state.logs.read().unwrap();
                (name.clone(), logs.values().map(|l| l.total_bytes()).sum())
            })
            .collect()
    }

    /// The live state of a stream, whatever its status.
    pub(crate) fn state(&self, r: &StreamRef) -> Result<(String, Arc<StreamState>)> {
        let name = self.resolve_name(r)?;
        let state = self
            .streams
            .read()
            .unwrap()
            .get(&name)
            .cloned()
            .ok_or_else(|| self.not_found(&name))?;
        Ok((name, state))
    }

    pub(crate) async fn persist(&self, meta: &StreamMeta) -> Result<()> {
        let bytes = serde_json::to_vec(meta).map_err(|e| StreamError::Internal(e.to_string()))?;
        let catalog = self.catalog.clone();
        let name = meta.name.clone();
        tokio::task::spawn_blocking(move || catalog.put(NAMESPACE, &name, bytes))
            .await
            .map_err(|e| StreamError::Internal(e.to_string()))??;
        Ok(())
    }

    pub(crate) async fn open_logs(&self, meta: &StreamMeta) -> Result<HashMap<u32, Arc<Log>>> {
        let ids: Vec<(u32, String)> = meta
            .shards
            .iter()
            .map(|s| (s.ordinal, meta.log_id(s.ordinal)))
            .collect();
        let store = self.store.clone();
        let logs = tokio::task::spawn_blocking(move || -> Result<HashMap<u32, Arc<Log>>> {
            ids.into_iter()
                .map(|(ordinal, id)| Ok((ordinal, store.open_log(&id)?)))
                .collect()
        })
        .await
        .map_err(|e| StreamError::Internal(e.to_string()))??;
        Ok(logs)
    }

    async fn finish_delete(&self, meta: &StreamMeta) -> Result<()> {
        let catalog = self.catalog.clone();
        let store = self.store.clone();
        let name = meta.name.clone();
        let prefix = meta.log_prefix();
        tokio::task::spawn_blocking(move || -> Result<()> {
            catalog.delete(NAMESPACE, &name)?;
            store.remove_log_tree(&prefix)?;
            Ok(())
        })
        .await
        .map_err(|e| StreamError::Internal(e.to_string()))??;
        Ok(())
    }

    fn open_shard_total(&self) -> u32 {
        self.streams
            .read()
            .unwrap()
            .values()
            .map(|s| s.meta.read().unwrap().open_shards().count() as u32)
            .sum()
    }

    pub(crate) fn check_shard_limit(&self, additional: u32) -> Result<()> {
        let current = self.open_shard_total();
        if current + additional > self.config.shard_limit {
            return Err(StreamError::LimitExceeded(format!(
                "This request would exceed the shard limit for the account {} in {}. Current shard count for the account: {}. Limit: {}. Number of additional shards that would have resulted from this request: {}. Refer to the AWS Service Limits page (http://docs.aws.amazon.com/general/latest/gr/aws_service_limits.html) for current limits and how to request higher limits.",
                self.config.account_id,
                self.config.region,
                current,
                self.config.shard_limit,
                additional
            )));
        }
        Ok(())
    }

    /// Moves a stream from a transient status back to ACTIVE after the configured delay.
    pub(crate) fn schedule_active(self: &Arc<Self>, name: String, epoch: u64) {
        let service = self.clone();
        let delay = self.config.state_delay_ms;
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            let _guard = service.control.lock().await;
            let Ok((_, state)) = service.state(&StreamRef::name(name.clone())) else {
                return;
            };
            let mut meta = state.meta.read().unwrap().clone();
            if meta.epoch != epoch || meta.status == StreamStatus::Deleting {
                return;
            }
            if let Err(e) = service.finish_reshard(&state, &mut meta).await {
                tracing::error!(stream = name, error = %e, "could not finish reshard");
                return;
            }
            meta.status = StreamStatus::Active;
            for c in &mut meta.consumers {
                c.active = true;
            }
            if let Err(e) = service.persist(&meta).await {
                tracing::error!(stream = name, error = %e, "could not activate stream");
                return;
            }
            *state.meta.write().unwrap() = meta;
        });
    }

    /// Applies a control-plane change to a stream: `change` edits a copy of the
    /// metadata (or refuses), the copy is persisted, then installed in memory.
    pub(crate) async fn update_meta<T>(
        &self,
        r: &StreamRef,
        change: impl FnOnce(&mut StreamMeta) -> Result<T>,
    ) -> Result<(T, StreamMeta)> {
        let _guard = self.control.lock().await;
        let (_, state) = self.state(r)?;
        let mut meta = state.meta.read().unwrap().clone();
        let out = change(&mut meta)?;
        if let Some(plane) = self.shared_plane()
            && meta.status != StreamStatus::Deleting
        {
            // Settings hold on every node (last change wins).
            plane.update_stream(shared_row(&meta)?).await?;
        }
        self.persist(&meta).await?;
        *state.meta.write().unwrap() = meta.clone();
        Ok((out, meta))
    }

    pub(crate) fn require_active(&self, meta: &StreamMeta) -> Result<()> {
        if meta.status != StreamStatus::Active {
            return Err(StreamError::ResourceInUse(format!(
                "Stream {} under account {} not ACTIVE, instead in state {}",
                meta.name,
                self.config.account_id,
                status_str(meta.status)
            )));
        }
        Ok(())
    }

    // ---- stream lifecycle ----

    /// CreateStream. `shard_count` is required for provisioned streams.
    pub async fn create_stream(
        self: &Arc<Self>,
        name: &str,
        shard_count: Option<u32>,
        mode: StreamMode,
        tags: BTreeMap<String, String>,
    ) -> Result<()> {
        // The API layer validates names against the model; this guards every other
        // caller, since names become directory names.
        let valid = (1..=128).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !valid {
            return Err(StreamError::Validation(format!(
                "1 validation error detected: Value '{name}' at 'streamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
            )));
        }
        let _guard = self.control.lock().await;
        if self.streams.read().unwrap().contains_key(name) {
            return Err(StreamError::ResourceInUse(format!(
                "Stream {name} under account {} already exists.",
                self.config.account_id
            )));
        }
        let count = match (mode, shard_count) {
            (StreamMode::Provisioned, Some(n)) => n,
            (StreamMode::Provisioned, None) => {
                return Err(StreamError::Validation(
                    "1 validation error detected: Value null at 'shardCount' failed to satisfy constraint: Member must not be null".into(),
                ));
            }
            (StreamMode::OnDemand, _) => self.config.on_demand_shards,
        };
        if mode == StreamMode::OnDemand {
            let on_demand = self
                .streams
                .read()
                .unwrap()
                .values()
                .filter(|s| s.meta.read().unwrap().mode == StreamMode::OnDemand)
                .count() as u32;
            if on_demand >= self.config.on_demand_stream_limit {
                return Err(StreamError::LimitExceeded(format!(
                    "This request would exceed the on-demand stream limit of {} for the account {}.",
                    self.config.on_demand_stream_limit, self.config.account_id
                )));
            }
        }
        self.check_shard_limit(count)?;
        settings::check_tags(name, &self.config.account_id, &BTreeMap::new(), &tags)?;
        let now = self.now_ms();
        // The epoch must differ from any earlier stream of the same name.
        let epoch = now.max(1) as u64;
        let shards = hashing::uniform_ranges(count)
            .into_iter()
            .enumerate()
            .map(|(i, (start, end))| ShardMeta {
                ordinal: i as u32,
                parent: None,
                adjacent_parent: None,
                hash_start: start.to_string(),
                hash_end: end.to_string(),
                created_ms: now,
                closed_end_offset: None,
                closed_ms: None,
            })
            .collect();
        let delayed = self.config.state_delay_ms > 0;
        let meta = StreamMeta {
            name: name.to_string(),
            epoch,
            status: if delayed {
                StreamStatus::Creating
            } else {
                StreamStatus::Active
            },
            mode,
            retention_hours: 24,
            shards,
            next_ordinal: count,
            tags,
            encryption_key: None,
            shard_level_metrics: Vec::new(),
            consumers: Vec::new(),
            max_record_size_kib: 1024,
            pending_reshard: None,
        };
        if let Some(plane) = self.shared_plane() {
            let created = plane.create_stream(shared_row(&meta)?).await?;
            if !created {
                return Err(StreamError::ResourceInUse(format!(
                    "Stream {name} under account {} already exists.",
                    self.config.account_id
                )));
            }
        }
        let logs = self.open_logs(&meta).await?;
        self.persist(&meta).await?;
        self.streams
            .write()
            .unwrap()
            .insert(name.to_string(), StreamState::new(meta, logs));
        if delayed {
            self.schedule_active(name.to_string(), epoch);
        }
        tracing::info!(stream = name, shards = count, ?mode, "stream created");
        Ok(())
    }

    /// DeleteStream.
    pub async fn delete_stream(
        self: &Arc<Self>,
        r: &StreamRef,
        enforce_consumer_deletion: bool,
    ) -> Result<()> {
        if let Some(plane) = self.shared_plane() {
            let (name, state) = self.state(r)?;
            let (epoch, has_consumers) = {
                let meta = state.meta.read().unwrap();
                (meta.epoch, !meta.consumers.is_empty())
            };
            if !has_consumers || enforce_consumer_deletion {
                plane.delete_stream(name, epoch).await?;
            }
        }
        let ((), meta) = self
            .update_meta(r, |meta| {
                if !meta.consumers.is_empty() && !enforce_consumer_deletion {
                    return Err(StreamError::ResourceInUse(format!(
                        "Stream {} under account {} has registered consumers. Use EnforceConsumerDeletion to delete the stream with its consumers.",
                        meta.name, self.config.account_id
                    )));
                }
                // As Kinesis: a stream deleted while CREATING never shows shards.
                if meta.status == StreamStatus::Creating {
                    meta.shards.clear();
                }
                meta.status = StreamStatus::Deleting;
                Ok(())
            })
            .await?;
        self.consumers_gone.send_modify(|n| *n += 1);
        let service = self.clone();
        let delay = self.config.state_delay_ms;
        let name = meta.name.clone();
        let run = async move {
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            let _guard = service.control.lock().await;
            let current = service.streams.read().unwrap().get(&name).cloned();
            if let Some(state) = current
                && state.meta.read().unwrap().epoch == meta.epoch
            {
                service.streams.write().unwrap().remove(&name);
                crate::metrics::metrics().forget_stream(&name);
            }
            if let Err(e) = service.finish_delete(&meta).await {
                tracing::error!(stream = name, error = %e, "could not finish deleting stream");
            }
            service
                .policies
                .write()
                .unwrap()
                .remove(&service.stream_arn(&name));
            tracing::info!(stream = name, "stream deleted");
        };
        if delay == 0 {
            run.await;
        } else {
            tokio::spawn(run);
        }
        Ok(())
    }

    pub fn describe_stream(
        &self,
        r: &StreamRef,
        limit: Option<usize>,
        exclusive_start_shard_id: Option<&str>,
    ) -> Result<StreamDescription> {
        let (name, state) = self.state(r)?;
        let meta = state.meta.read().unwrap().clone();
        let limit = limit.unwrap_or(100);
        let after = exclusive_start_shard_id.and_then(model::parse_shard_id);
        // Like Kinesis, a stream being created shows no shards yet.
        let selected: Vec<&ShardMeta> = meta
            .shards
            .iter()
            .filter(|_| meta.status != StreamStatus::Creating)
            .filter(|s| after.is_none_or(|a| s.ordinal > a))
            .collect();
        let has_more = selected.len() > limit;
        Ok(StreamDescription {
            stream_arn: self.stream_arn(&name),
            stream_name: name,
            stream_status: meta.status,
            stream_mode_details: StreamModeDetails {
                stream_mode: meta.mode,
            },
            shards: selected
                .into_iter()
                .take(limit)
                .map(|s| self.shard_wire(&meta, s))
                .collect(),
            has_more_shards: has_more,
            retention_period_hours: meta.retention_hours,
            stream_creation_timestamp: ms_to_secs(meta.epoch as i64),
            enhanced_monitoring: vec![EnhancedMetrics {
                shard_level_metrics: meta.shard_level_metrics.clone(),
            }],
            encryption_type: meta.encryption_type(),
            key_id: meta.encryption_key.clone(),
        })
    }

    pub fn describe_stream_summary(&self, r: &StreamRef) -> Result<StreamDescriptionSummary> {
        let (name, state) = self.state(r)?;
        let meta = state.meta.read().unwrap();
        Ok(StreamDescriptionSummary {
            stream_arn: self.stream_arn(&name),
            stream_name: name,
            stream_status: meta.status,
            stream_mode_details: StreamModeDetails {
                stream_mode: meta.mode,
            },
            retention_period_hours: meta.retention_hours,
            stream_creation_timestamp: ms_to_secs(meta.epoch as i64),
            enhanced_monitoring: vec![EnhancedMetrics {
                shard_level_metrics: meta.shard_level_metrics.clone(),
            }],
            encryption_type: meta.encryption_type(),
            key_id: meta.encryption_key.clone(),
            open_shard_count: meta.open_shards().count() as u32,
            consumer_count: meta.consumers.len() as u32,
            max_record_size_in_ki_b: meta.max_record_size_kib,
        })
    }

    /// Stream names in order, after `exclusive_start`, at most `limit`; returns
    /// summaries and whether more remain.
    pub fn list_streams(
        &self,
        exclusive_start: Option<&str>,
        limit: usize,
    ) -> (Vec<StreamSummary>, bool) {
        let streams = self.streams.read().unwrap();
        let mut names: Vec<&String> = streams
            .keys()
            .filter(|n| exclusive_start.is_none_or(|s| n.as_str() > s))
            .collect();
        names.sort();
        let has_more = names.len() > limit;
        let summaries = names
            .into_iter()
            .take(limit)
            .map(|n| {
                let meta = streams[n].meta.read().unwrap();
                StreamSummary {
                    stream_name: n.clone(),
                    stream_arn: self.stream_arn(n),
                    stream_status: meta.status,
                    stream_mode_details: StreamModeDetails {
                        stream_mode: meta.mode,
                    },
                    stream_creation_timestamp: ms_to_secs(meta.epoch as i64),
                }
            })
            .collect();
        (summaries, has_more)
    }

    pub(crate) fn shard_wire(&self, meta: &StreamMeta, s: &ShardMeta) -> Shard {
        let (start, end) = s.range();
        Shard {
            shard_id: s.shard_id(),
            parent_shard_id: s.parent.map(shard_id),
            adjacent_parent_shard_id: s.adjacent_parent.map(shard_id),
            hash_key_range: HashKeyRange {
                starting_hash_key: start.to_string(),
                ending_hash_key: end.to_string(),
            },
            sequence_number_range: SequenceNumberRange {
                starting_sequence_number: meta.seq(s.ordinal, 0),
                ending_sequence_number: s
                    .closed_end_offset
                    .map(|end| meta.seq(s.ordinal, end.saturating_sub(1))),
            },
        }
    }

    pub fn describe_limits(&self) -> (u32, u32, u32, u32) {
        let streams = self.streams.read().unwrap();
        let on_demand = streams
            .values()
            .filter(|s| s.meta.read().unwrap().mode == StreamMode::OnDemand)
            .count() as u32;
        drop(streams);
        (
            self.config.shard_limit,
            self.open_shard_total(),
            on_demand,
            self.config.on_demand_stream_limit,
        )
    }

    /// Names of all streams (for the retention sweeper and the CLI).
    pub fn stream_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.streams.read().unwrap().keys().cloned().collect();
        v.sort();
        v
    }

    pub(crate) async fn catalog_put(
        &self,
        ns: &'static str,
        key: String,
        value: Option<Vec<u8>>,
    ) -> Result<()> {
        let catalog = self.catalog.clone();
        tokio::task::spawn_blocking(move || match value {
            Some(v) => catalog.put(ns, &key, v),
            None => catalog.delete(ns, &key),
        })
        .await
        .map_err(|e| StreamError::Internal(e.to_string()))??;
        Ok(())
    }
}

pub fn status_str(s: StreamStatus) -> &'static str {
    match s {
        StreamStatus::Creating => "CREATING",
        StreamStatus::Deleting => "DELETING",
        StreamStatus::Active => "ACTIVE",
        StreamStatus::Updating => "UPDATING",
    }
}
