//! Delivery streams (Amazon Data Firehose semantics, the Firehose API reference):
//! Direct PUT records buffered durably, or a data stream's records (`source.rs`,
//! `KinesisStreamAsSource`), delivered in batches to S3-style object
//! storage, at least once and never under two names, or to an HTTP endpoint ([`http`],
//! with an S3 backup bucket for the batches it does not take).
//!
//! - [`DeliveryService`]: the domain service behind the Firehose API. Delivery-stream
//!   metadata lives in the catalog (namespace `delivery-streams`), written before it is
//!   applied in memory, as data streams keep theirs. Records are appended to one log per
//!   delivery stream in the shared store and are durable before PutRecord answers.
//! - [`worker`]: one task per delivery stream: partition (one partition for now) →
//!   batch ([`batch`]) → build and name ([`naming`]) → deliver ([`destination`]) →
//!   acknowledge (the checkpoint in the catalog).
//! - Metrics: each stream's counters ([`crate::metrics::DeliveryMetrics`]) are held by
//!   the put path and the worker; its backlog and data freshness are worked out when
//!   `/metrics` is scraped ([`DeliveryService::figures`]).
//!
//! This module never reaches into `api`; it knows nothing of the API's HTTP (the
//! endpoint destination is an HTTP client of its own). Not yet supported
//! (refused at CreateDeliveryStream with InvalidArgumentException): MSK and database
//! sources, other destinations, processors, dynamic partitioning, format conversion, ZIP and Snappy
//! (docs/delivery.md).

pub mod batch;
pub mod compress;
pub mod destination;
pub mod error;
pub mod http;
pub mod kpl;
pub mod model;
pub mod naming;
pub mod processing;
/// The S3 destination (`aws-sdk-s3`), behind the `s3` cargo feature (on by default).
#[cfg(feature = "s3")]
pub mod s3;
mod source;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::watch;

pub use error::{DeliveryError, Result};
use model::*;

use crate::clock::SharedClock;
use crate::store::catalog::{Catalog, CatalogWrite};
use crate::store::{Entry, Log, Store};
use crate::streams::{StreamRef, StreamService};
use destination::Destination;

const NAMESPACE: &str = "delivery-streams";

/// The most delivery streams (AWS's default quota per account and region).
pub const STREAM_LIMIT: usize = 5000;
/// The most tags on one delivery stream.
pub const TAG_LIMIT: usize = 50;
/// PutRecordBatch: the most bytes of record data in one call (4 MiB).
pub const BATCH_BYTES: usize = 4 * 1024 * 1024;
/// The largest record (1,000 KiB).
pub const RECORD_BYTES: usize = 1_024_000;

/// Settings of the delivery service.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub account_id: String,
    pub region: String,
    /// How long a delivery stream stays CREATING / DELETING.
    pub state_delay_ms: u64,
    /// Lambda function ARNs to the URLs that stand in for them (`--delivery-lambda`).
    pub lambda_urls: processing::LambdaUrls,
}

/// A running worker.
struct WorkerHandle {
    stop: watch::Sender<bool>,
    /// The stream's configuration, sent on UpdateDestination.
    config: watch::Sender<DeliveryStreamMeta>,
    join: tokio::task::JoinHandle<()>,
}

/// One delivery stream in memory.
struct StreamEntry {
    meta: RwLock<DeliveryStreamMeta>,
    log: Arc<Log>,
    failure: Arc<Mutex<Option<String>>>,
    metrics: crate::metrics::DeliveryMetrics,
    /// What the worker has delivered and holds (the backlog, at scrape time).
    progress: Arc<worker::Progress>,
}

/// The destination of a CreateDeliveryStream, parsed by the API layer.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub name: String,
    /// The S3 destination, or the backup bucket of an HTTP endpoint destination.
    pub destination: S3Destination,
    pub http: Option<HttpEndpointDestination>,
    pub tags: Vec<(String, String)>,
    /// `KinesisStreamAsSource`: the data stream (its `start_ms` is set at creation).
    pub source: Option<KinesisSource>,
}

/// The one destination of every delivery stream (AWS numbers them; Freshet has one).
pub const DESTINATION_ID: &str = "destinationId-000000000001";

/// The members of an S3 destination update (`S3DestinationUpdate`,
/// `ExtendedS3DestinationUpdate`, or an HTTP endpoint's `S3Update`): those given replace
/// the current ones, the others are kept (an empty Prefix, ErrorOutputPrefix or
/// FileExtension removes it).
#[derive(Debug, Clone, Default)]
pub struct S3Update {
    pub role_arn: Option<String>,
    pub bucket_arn: Option<String>,
    pub prefix: Option<String>,
    pub error_output_prefix: Option<String>,
    pub size_mbs: Option<u32>,
    pub interval_secs: Option<u32>,
    pub compression: Option<naming::Compression>,
    pub file_extension: Option<String>,
    /// Given as `ExtendedS3DestinationUpdate`.
    pub extended: bool,
    /// `ProcessingConfiguration`: replaces the current one when given.
    pub processing: Option<serde_json::Value>,
    /// `DynamicPartitioningConfiguration.Enabled` when given (it cannot change).
    pub dynamic_partitioning: Option<bool>,
}

impl S3Update {
    fn apply(&self, d: &mut S3Destination) {
        let clearable = |v: &Option<String>, into: &mut Option<String>| {
            if let Some(v) = v {
                *into = (!v.is_empty()).then(|| v.clone());
            }
        };
        if let Some(v) = &self.role_arn {
            d.role_arn = v.clone();
        }
        if let Some(v) = &self.bucket_arn {
            d.bucket_arn = v.clone();
        }
        clearable(&self.prefix, &mut d.prefix);
        clearable(&self.error_output_prefix, &mut d.error_output_prefix);
        clearable(&self.file_extension, &mut d.file_extension);
        if let Some(v) = self.size_mbs {
            d.size_mbs = v;
        }
        if let Some(v) = self.interval_secs {
            d.interval_secs = v;
        }
        if let Some(v) = self.compression {
            d.compression = v;
        }
        d.extended |= self.extended;
        if let Some(p) = &self.processing {
            d.processing = Some(p.clone());
        }
    }
}

/// The members of an `HttpEndpointDestinationUpdate`, merged as [`S3Update`]'s are.
#[derive(Debug, Clone, Default)]
pub struct HttpUpdate {
    pub url: Option<String>,
    pub name: Option<String>,
    pub access_key: Option<String>,
    pub size_mbs: Option<u32>,
    pub interval_secs: Option<u32>,
    pub content_encoding: Option<ContentEncoding>,
    pub common_attributes: Option<Vec<(String, String)>>,
    pub retry_secs: Option<u32>,
    pub backup_mode: Option<HttpBackupMode>,
    pub role_arn: Option<String>,
    pub cloudwatch: Option<serde_json::Value>,
    pub processing: Option<serde_json::Value>,
    /// `S3Update`: the backup bucket.
    pub s3: Option<S3Update>,
}

impl HttpUpdate {
    fn apply(&self, h: &mut HttpEndpointDestination) {
        if let Some(v) = &self.url {
            h.url = v.clone();
        }
        if let Some(v) = &self.name {
            h.name = (!v.is_empty()).then(|| v.clone());
        }
        if let Some(v) = &self.access_key {
            h.access_key = (!v.is_empty()).then(|| v.clone());
        }
        if let Some(v) = self.size_mbs {
            h.size_mbs = v;
        }
        if let Some(v) = self.interval_secs {
            h.interval_secs = v;
        }
        if let Some(v) = self.content_encoding {
            h.content_encoding = v;
        }
        if let Some(v) = &self.common_attributes {
            h.common_attributes = v.clone();
        }
        if let Some(v) = self.retry_secs {
            h.retry_secs = v;
        }
        if let Some(v) = self.backup_mode {
            h.backup_mode = v;
        }
        if let Some(v) = &self.role_arn {
            h.role_arn = Some(v.clone());
        }
        if let Some(v) = &self.cloudwatch {
            h.cloudwatch = Some(v.clone());
        }
        if let Some(v) = &self.processing {
            h.processing = Some(v.clone());
        }
    }
}

/// The destination update of an UpdateDestination, parsed by the API layer.
#[derive(Debug, Clone)]
pub enum DestinationUpdate {
    S3(S3Update),
    Http(Box<HttpUpdate>),
}

/// An UpdateDestination.
#[derive(Debug, Clone)]
pub struct UpdateRequest {
    pub name: String,
    /// `CurrentDeliveryStreamVersionId` as given.
    pub current_version: String,
    pub destination_id: String,
    pub update: DestinationUpdate,
}

/// A delivery stream as DescribeDeliveryStream shows it.
#[derive(Debug, Clone)]
pub struct Described {
    pub meta: DeliveryStreamMeta,
    pub arn: String,
    /// The last delivery error, while deliveries fail.
    pub failure: Option<String>,
}

/// The delivery-stream service.
pub struct DeliveryService {
    config: DeliveryConfig,
    clock: SharedClock,
    store: Arc<Store>,
    catalog: Arc<dyn Catalog>,
    destination: Arc<dyn Destination>,
    /// The data streams `KinesisStreamAsSource` delivery streams read.
    data_streams: Option<Arc<StreamService>>,
    streams: RwLock<BTreeMap<String, Arc<StreamEntry>>>,
    /// Serialises control-plane changes (create, delete, tags).
    control: tokio::sync::Mutex<()>,
    /// Workers by log id.
    workers: Mutex<HashMap<String, WorkerHandle>>,
}

impl DeliveryService {
    /// Loads every delivery stream from the catalog and starts their workers.
    pub async fn open(
        config: DeliveryConfig,
        clock: SharedClock,
        store: Arc<Store>,
        catalog: Arc<dyn Catalog>,
        destination: Arc<dyn Destination>,
        data_streams: Option<Arc<StreamService>>,
    ) -> Result<Arc<DeliveryService>> {
        let service = Arc::new(DeliveryService {
            config,
            clock,
            store,
            catalog,
            destination,
            data_streams,
            streams: RwLock::new(BTreeMap::new()),
            control: tokio::sync::Mutex::new(()),
            workers: Mutex::new(HashMap::new()),
        });
        let catalog = service.catalog.clone();
        let rows = tokio::task::spawn_blocking(move || catalog.list(NAMESPACE))
            .await
            .map_err(|e| DeliveryError::Internal(e.to_string()))??;
        for (_, raw) in rows {
            let mut meta: DeliveryStreamMeta = serde_json::from_slice(&raw)
                .map_err(|e| DeliveryError::Internal(format!("corrupt delivery stream: {e}")))?;
            if meta.status == DeliveryStatus::Deleting {
                service.finish_delete(&meta).await?;
                continue;
            }
            // A stream still CREATING when the server stopped is ready now.
            meta.status = DeliveryStatus::Active;
            let log = service.open_log(&meta).await?;
            service.install(meta, log);
        }
        Ok(service)
    }

    fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:firehose:{}:{}:deliverystream/{name}",
            self.config.region, self.config.account_id
        )
    }

    fn not_found(&self, name: &str) -> DeliveryError {
        DeliveryError::ResourceNotFound(format!(
            "Firehose {name} under account {} not found.",
            self.config.account_id
        ))
    }

    async fn open_log(&self, meta: &DeliveryStreamMeta) -> Result<Arc<Log>> {
        let store = self.store.clone();
        let id = meta.log_id();
        tokio::task::spawn_blocking(move || store.open_log(&id))
            .await
            .map_err(|e| DeliveryError::Internal(e.to_string()))?
            .map_err(DeliveryError::from)
    }

    async fn persist(&self, writes: Vec<CatalogWrite>) -> Result<()> {
        let catalog = self.catalog.clone();
        tokio::task::spawn_blocking(move || catalog.write(writes))
            .await
            .map_err(|e| DeliveryError::Internal(e.to_string()))??;
        Ok(())
    }

    fn put_meta(meta: &DeliveryStreamMeta) -> Result<CatalogWrite> {
        Ok(CatalogWrite::Put {
            namespace: NAMESPACE.into(),
            key: meta.name.clone(),
            value: serde_json::to_vec(meta).map_err(|e| DeliveryError::Internal(e.to_string()))?,
        })
    }

    /// Puts a stream in memory and starts its worker.
    fn install(&self, meta: DeliveryStreamMeta, log: Arc<Log>) {
        let failure = Arc::new(Mutex::new(None));
        let metrics = crate::metrics::metrics().delivery(
            &meta.name,
            self.destination.kind(),
            meta.http.is_some(),
        );
        // Until the worker has read its checkpoint, everything in the log counts.
        let progress = Arc::new(worker::Progress::starting_at(log.bounds().first_offset));
        let (stop, stop_rx) = watch::channel(false);
        let (config, config_rx) = watch::channel(meta.clone());
        let worker = worker::Worker {
            meta: meta.clone(),
            log: log.clone(),
            store: self.store.clone(),
            catalog: self.catalog.clone(),
            clock: self.clock.clone(),
            destination: self.destination.clone(),
            stop: stop_rx,
            config: config_rx,
            failure: failure.clone(),
            source_arn: self.arn(&meta.name),
            region: self.config.region.clone(),
            lambda_urls: self.config.lambda_urls.clone(),
            endpoint_client: None,
            streams: self.data_streams.clone(),
            shard: None,
            metrics: metrics.clone(),
            progress: progress.clone(),
        };
        let join = tokio::spawn(worker.run());
        self.workers
            .lock()
            .unwrap()
            .insert(meta.log_id(), WorkerHandle { stop, config, join });
        self.streams.write().unwrap().insert(
            meta.name.clone(),
            Arc::new(StreamEntry {
                meta: RwLock::new(meta),
                log,
                failure,
                metrics,
                progress,
            }),
        );
    }

    fn entry(&self, name: &str) -> Result<Arc<StreamEntry>> {
        self.streams
            .read()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| self.not_found(name))
    }

    /// Checks the processing and dynamic partitioning of a destination: the processors
    /// (processing::Pipeline::parse), and that a partitioned prefix uses only keys that
    /// a processor gives, with an error prefix.
    fn check_processing(
        &self,
        dest: &S3Destination,
        http: Option<&HttpEndpointDestination>,
    ) -> Result<()> {
        let invalid = DeliveryError::InvalidArgument;
        if let Some(http) = http {
            processing::Pipeline::parse(http.processing.as_ref(), &self.config.lambda_urls)
                .map_err(invalid)?;
        }
        let pipeline =
            processing::Pipeline::parse(dest.processing.as_ref(), &self.config.lambda_urls)
                .map_err(invalid)?;
        let prefix = dest.prefix.as_deref().unwrap_or("");
        let template =
            naming::PrefixTemplate::parse_partitioned(prefix, false, dest.dynamic_partitioning)
                .map_err(invalid)?;
        if !dest.dynamic_partitioning {
            if pipeline.as_ref().is_some_and(|p| p.query.is_some()) {
                return Err(invalid(
                    "The MetadataExtraction processor needs dynamic partitioning: set DynamicPartitioningConfiguration.Enabled."
                        .into(),
                ));
            }
            return Ok(());
        }
        let (query_keys, lambda_keys) = template.partition_keys();
        if query_keys.is_empty() && lambda_keys.is_empty() {
            return Err(invalid(
                "Dynamic partitioning is enabled, but the Prefix has no !{partitionKeyFromQuery:...} or !{partitionKeyFromLambda:...} expression."
                    .into(),
            ));
        }
        let has_query = pipeline.as_ref().is_some_and(|p| p.query.is_some());
        let has_lambda = pipeline.as_ref().is_some_and(|p| p.lambda.is_some());
        if !query_keys.is_empty() && !has_query {
            return Err(invalid(
                "The Prefix uses !{partitionKeyFromQuery:...}, which needs a MetadataExtraction processor.".into(),
            ));
        }
        if !lambda_keys.is_empty() && !has_lambda {
            return Err(invalid(
                "The Prefix uses !{partitionKeyFromLambda:...}, which needs a Lambda processor."
                    .into(),
            ));
        }
        if dest.error_output_prefix.as_deref().unwrap_or("").is_empty() {
            return Err(invalid(
                "ErrorOutputPrefix cannot be null or empty when dynamic partitioning is enabled."
                    .into(),
            ));
        }
        Ok(())
    }

    /// CreateDeliveryStream (DirectPut to an S3 destination).
    pub async fn create(self: &Arc<Self>, req: CreateRequest) -> Result<String> {
        check_destination(&req.destination, req.http.as_ref())?;
        self.check_processing(&req.destination, req.http.as_ref())?;
        if let Some(source) = &req.source {
            let known = self.data_streams.as_ref().is_some_and(|s| {
                s.describe_stream_summary(&StreamRef {
                    name: None,
                    arn: Some(source.stream_arn.clone()),
                })
                .is_ok()
            });
            if !known {
                return Err(DeliveryError::InvalidArgument(format!(
                    "The specified Kinesis stream {} does not exist.",
                    source.stream_arn
                )));
            }
        }
        if req.tags.len() > TAG_LIMIT {
            return Err(self.tag_limit(&req.name));
        }
        let _guard = self.control.lock().await;
        if self.streams.read().unwrap().contains_key(&req.name) {
            return Err(DeliveryError::ResourceInUse(format!(
                "Firehose {} under accountId {} already exists",
                req.name, self.config.account_id
            )));
        }
        if self.streams.read().unwrap().len() >= STREAM_LIMIT {
            return Err(DeliveryError::LimitExceeded(format!(
                "You have already consumed your firehose quota of {STREAM_LIMIT} hoses. Firehose names: ..."
            )));
        }
        let now = self.clock.now_ms();
        let delayed = self.config.state_delay_ms > 0;
        let meta = DeliveryStreamMeta {
            name: req.name.clone(),
            created_ms: now,
            updated_ms: now,
            status: if delayed {
                DeliveryStatus::Creating
            } else {
                DeliveryStatus::Active
            },
            version: 1,
            destination: req.destination,
            http: req.http,
            tags: req.tags.into_iter().collect(),
            source: req.source.map(|s| KinesisSource { start_ms: now, ..s }),
        };
        // A log left by a stream of this name whose deletion a crash interrupted.
        let store = self.store.clone();
        let tree = format!("delivery/{}", meta.name);
        tokio::task::spawn_blocking(move || store.remove_log_tree(&tree))
            .await
            .map_err(|e| DeliveryError::Internal(e.to_string()))??;
        let log = self.open_log(&meta).await?;
        self.persist(vec![Self::put_meta(&meta)?]).await?;
        self.install(meta.clone(), log);
        if delayed {
            let service = self.clone();
            let name = meta.name.clone();
            let delay = self.config.state_delay_ms;
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                let _guard = service.control.lock().await;
                let Ok(entry) = service.entry(&name) else {
                    return;
                };
                let mut meta = entry.meta.read().unwrap().clone();
                if meta.created_ms != now || meta.status != DeliveryStatus::Creating {
                    return;
                }
                meta.status = DeliveryStatus::Active;
                match Self::put_meta(&meta) {
                    Ok(w) => {
                        if let Err(e) = service.persist(vec![w]).await {
                            tracing::error!(delivery_stream = name, error = %e, "could not activate");
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(delivery_stream = name, error = %e, "could not activate");
                        return;
                    }
                }
                *entry.meta.write().unwrap() = meta;
            });
        }
        tracing::info!(
            delivery_stream = meta.name,
            bucket = meta.destination.bucket(),
            "delivery stream created"
        );
        Ok(self.arn(&meta.name))
    }

    /// UpdateDestination: the update merged into the destination, checked as
    /// CreateDeliveryStream checks a destination, written to the catalog, then applied;
    /// the worker delivers every batch it seals from then on under the new version.
    /// Returns the new version.
    pub async fn update_destination(&self, req: UpdateRequest) -> Result<u64> {
        let _guard = self.control.lock().await;
        let entry = self.entry(&req.name)?;
        let mut meta = entry.meta.read().unwrap().clone();
        if meta.status != DeliveryStatus::Active {
            return Err(DeliveryError::ResourceInUse(format!(
                "Cannot update firehose: {} when it is in {} status",
                meta.name,
                meta.status.as_str()
            )));
        }
        if req.current_version != meta.version.to_string() {
            return Err(DeliveryError::ConcurrentModification(format!(
                "Cannot update firehose: {} since the current version id: {} and specified version id: {} do not match",
                meta.name, meta.version, req.current_version
            )));
        }
        if req.destination_id != DESTINATION_ID {
            return Err(DeliveryError::InvalidArgument(format!(
                "Destination Id {} not found",
                req.destination_id
            )));
        }
        if let DestinationUpdate::S3(u) = &req.update
            && let Some(dynamic) = u.dynamic_partitioning
            && dynamic != meta.destination.dynamic_partitioning
        {
            // As AWS: dynamic partitioning is chosen at creation, for good.
            return Err(DeliveryError::InvalidArgument(if dynamic {
                "Dynamic partitioning cannot be enabled on an existing delivery stream that was created without it.".into()
            } else {
                "Dynamic partitioning cannot be disabled once it is enabled on a delivery stream."
                    .into()
            }));
        }
        match (&req.update, &mut meta.http) {
            (DestinationUpdate::S3(u), None) => u.apply(&mut meta.destination),
            (DestinationUpdate::Http(u), Some(http)) => {
                u.apply(http);
                if let Some(s3) = &u.s3 {
                    s3.apply(&mut meta.destination);
                }
            }
            (DestinationUpdate::S3(_), Some(_)) => {
                return Err(DeliveryError::InvalidArgument(
                    "Changing the destination type of a delivery stream (from HttpEndpoint to S3) is not supported by Freshet yet; delete and create the delivery stream instead.".into(),
                ));
            }
            (DestinationUpdate::Http(_), None) => {
                return Err(DeliveryError::InvalidArgument(
                    "Changing the destination type of a delivery stream (from S3 to HttpEndpoint) is not supported by Freshet yet; delete and create the delivery stream instead.".into(),
                ));
            }
        }
        check_destination(&meta.destination, meta.http.as_ref())?;
        self.check_processing(&meta.destination, meta.http.as_ref())?;
        meta.version += 1;
        meta.updated_ms = self.clock.now_ms().max(meta.updated_ms);
        self.persist(vec![Self::put_meta(&meta)?]).await?;
        *entry.meta.write().unwrap() = meta.clone();
        if let Some(w) = self.workers.lock().unwrap().get(&meta.log_id()) {
            let _ = w.config.send(meta.clone());
        }
        tracing::info!(
            delivery_stream = meta.name,
            version = meta.version,
            "destination updated"
        );
        Ok(meta.version)
    }

    /// DescribeDeliveryStream.
    pub fn describe(&self, name: &str) -> Result<Described> {
        let entry = self.entry(name)?;
        let meta = entry.meta.read().unwrap().clone();
        Ok(Described {
            arn: self.arn(&meta.name),
            failure: entry.failure.lock().ok().and_then(|f| f.clone()),
            meta,
        })
    }

    /// Each delivery stream's backlog and data freshness, for `/metrics`: records
    /// accepted and not yet delivered (Direct PUT: from the worker's checkpoint to the
    /// log's end; a data-stream source: the records its workers have read and not yet
    /// delivered), and the age of the oldest of them that a worker holds.
    pub fn figures(&self) -> Vec<crate::metrics::DeliveryFigures> {
        let now = self.clock.now_ms();
        let streams = self.streams.read().unwrap();
        streams
            .values()
            .filter_map(|e| {
                let meta = e.meta.read().unwrap();
                if meta.status == DeliveryStatus::Deleting {
                    return None;
                }
                let (held, oldest_ms) = e.progress.held();
                let backlog = match meta.source {
                    Some(_) => held,
                    None => e
                        .log
                        .bounds()
                        .end_offset
                        .saturating_sub(e.progress.delivered_next()),
                };
                let freshness = match oldest_ms {
                    Some(at) if backlog > 0 => (now - at).max(0) as f64 / 1000.0,
                    _ => 0.0,
                };
                Some(crate::metrics::DeliveryFigures {
                    delivery_stream: meta.name.clone(),
                    backlog_records: backlog,
                    data_freshness_seconds: freshness,
                })
            })
            .collect()
    }

    /// ListDeliveryStreams: names after `start`, at most `limit`, and whether there are
    /// more; only those with a Kinesis source, or only those without, when `kinesis_source`
    /// says so.
    pub fn list(
        &self,
        start: Option<&str>,
        limit: usize,
        kinesis_source: Option<bool>,
    ) -> (Vec<String>, bool) {
        let streams = self.streams.read().unwrap();
        let mut names = streams
            .iter()
            .filter(|(n, _)| start.is_none_or(|s| n.as_str() > s))
            .filter(|(_, e)| {
                kinesis_source.is_none_or(|k| e.meta.read().unwrap().source.is_some() == k)
            })
            .map(|(n, _)| n.clone());
        let out: Vec<String> = names.by_ref().take(limit).collect();
        let more = names.next().is_some();
        (out, more)
    }

    /// DeleteDeliveryStream: DELETING for the state delay, then gone with its records.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<()> {
        let _guard = self.control.lock().await;
        let entry = self.entry(name)?;
        let mut meta = entry.meta.read().unwrap().clone();
        if meta.status == DeliveryStatus::Deleting {
            return Ok(());
        }
        meta.status = DeliveryStatus::Deleting;
        self.persist(vec![Self::put_meta(&meta)?]).await?;
        *entry.meta.write().unwrap() = meta.clone();
        // Records not yet delivered are discarded with the stream, as on AWS.
        if let Some(w) = self.workers.lock().unwrap().remove(&meta.log_id()) {
            w.join.abort();
        }
        crate::metrics::metrics().forget_delivery(&meta.name);
        let service = self.clone();
        let delay = self.config.state_delay_ms;
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            let _guard = service.control.lock().await;
            {
                let mut streams = service.streams.write().unwrap();
                if streams
                    .get(&meta.name)
                    .is_some_and(|e| e.meta.read().unwrap().created_ms == meta.created_ms)
                {
                    streams.remove(&meta.name);
                }
            }
            if let Err(e) = service.finish_delete(&meta).await {
                tracing::error!(delivery_stream = meta.name, error = %e, "could not finish deleting");
            }
        });
        Ok(())
    }

    async fn finish_delete(&self, meta: &DeliveryStreamMeta) -> Result<()> {
        let store = self.store.clone();
        let id = meta.log_id();
        tokio::task::spawn_blocking(move || store.remove_log(&id))
            .await
            .map_err(|e| DeliveryError::Internal(e.to_string()))??;
        let catalog = self.catalog.clone();
        let shards = tokio::task::spawn_blocking(move || catalog.list(source::SHARD_CHECKPOINTS))
            .await
            .map_err(|e| DeliveryError::Internal(e.to_string()))??;
        let prefix = source::checkpoint_key(&meta.log_id(), "");
        let mut writes: Vec<CatalogWrite> = shards
            .into_iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(key, _)| CatalogWrite::Delete {
                namespace: source::SHARD_CHECKPOINTS.into(),
                key,
            })
            .collect();
        writes.extend([
            CatalogWrite::Delete {
                namespace: worker::CHECKPOINTS.into(),
                key: meta.log_id(),
            },
            CatalogWrite::Delete {
                namespace: NAMESPACE.into(),
                key: meta.name.clone(),
            },
        ]);
        self.persist(writes).await
    }

    fn active(&self, name: &str) -> Result<Arc<StreamEntry>> {
        let entry = self.entry(name)?;
        let status = entry.meta.read().unwrap().status;
        if status != DeliveryStatus::Active {
            return Err(DeliveryError::ResourceNotFound(format!(
                "Firehose {name} under account {} is not ACTIVE (it is {}).",
                self.config.account_id,
                status.as_str()
            )));
        }
        Ok(entry)
    }

    /// PutRecord / PutRecordBatch: the records are durable in the stream's log when this
    /// returns; their record ids, in order.
    pub async fn put_records(&self, name: &str, records: Vec<Bytes>) -> Result<Vec<String>> {
        let entry = self.active(name)?;
        if entry.meta.read().unwrap().source.is_some() {
            return Err(DeliveryError::InvalidArgument(
                "This operation is not permitted on KinesisStreamAsSource type DeliveryStream."
                    .into(),
            ));
        }
        let total: usize = records.iter().map(Bytes::len).sum();
        if total > BATCH_BYTES {
            return Err(DeliveryError::InvalidArgument(format!(
                "Records size exceeds {BATCH_BYTES} bytes limit"
            )));
        }
        if let Some(big) = records.iter().find(|r| r.len() > RECORD_BYTES) {
            return Err(DeliveryError::InvalidArgument(format!(
                "Record size {} exceeds {RECORD_BYTES} bytes limit",
                big.len()
            )));
        }
        let count = records.len();
        let entries: Vec<Entry> = records.into_iter().map(Entry::from).collect();
        let ack = self.store.append(&entry.log, entries).await?;
        entry.metrics.incoming_records.inc_by(count as u64);
        entry.metrics.incoming_bytes.inc_by(total as u64);
        let salt = uuid::Uuid::new_v4().simple().to_string();
        Ok((0..count as u64)
            .map(|i| format!("{salt}{:020}", ack.first_offset + i))
            .collect())
    }

    fn tag_limit(&self, name: &str) -> DeliveryError {
        tag_limit_error(name)
    }
}

/// What the model cannot check of a destination, the same at CreateDeliveryStream and
/// UpdateDestination: prefixes that parse (and an ErrorOutputPrefix where AWS requires
/// one), a valid bucket name, a usable FileExtension, and a usable HTTP endpoint.
fn check_destination(dest: &S3Destination, http: Option<&HttpEndpointDestination>) -> Result<()> {
    naming::PrefixTemplate::parse_partitioned(
        dest.prefix.as_deref().unwrap_or(""),
        false,
        dest.dynamic_partitioning,
    )
    .map_err(DeliveryError::InvalidArgument)?;
    if let Some(p) = &dest.error_output_prefix {
        naming::PrefixTemplate::parse(p, true).map_err(DeliveryError::InvalidArgument)?;
    }
    if naming::PrefixTemplate::has_expressions(dest.prefix.as_deref().unwrap_or(""))
        && dest.error_output_prefix.as_deref().unwrap_or("").is_empty()
    {
        return Err(DeliveryError::InvalidArgument(
            "ErrorOutputPrefix cannot be null or empty when Prefix contains expressions.".into(),
        ));
    }
    if !destination::valid_bucket(dest.bucket()) {
        return Err(DeliveryError::InvalidArgument(format!(
            "BucketARN {} does not name a valid S3 bucket.",
            dest.bucket_arn
        )));
    }
    if let Some(ext) = &dest.file_extension
        && (!ext.starts_with('.') || ext.contains('/'))
    {
        return Err(DeliveryError::InvalidArgument(
            "FileExtension must start with '.' and cannot contain '/'.".into(),
        ));
    }
    if let Some(http) = http {
        check_endpoint(http)?;
    }
    Ok(())
}

/// What the model cannot check of an HTTP endpoint destination: a URL that can be
/// requested, and header values that can be sent.
fn check_endpoint(http: &HttpEndpointDestination) -> Result<()> {
    let invalid = |m: String| Err(DeliveryError::InvalidArgument(m));
    match http.url.parse::<::http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {}
        _ => {
            return invalid(
                "EndpointConfiguration.Url must be an https:// (or, with Freshet, http://) URL with a host."
                    .into(),
            );
        }
    }
    let sendable = |s: &str| ::http::HeaderValue::from_str(s).is_ok();
    if http.access_key.as_deref().is_some_and(|k| !sendable(k)) {
        return invalid(
            "EndpointConfiguration.AccessKey cannot contain control characters.".into(),
        );
    }
    if http
        .common_attributes
        .iter()
        .any(|(k, v)| !sendable(k) || !sendable(v))
    {
        return invalid(
            "RequestConfiguration.CommonAttributes cannot contain control characters.".into(),
        );
    }
    let mut names: Vec<&str> = http
        .common_attributes
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return invalid(
            "RequestConfiguration.CommonAttributes has duplicate AttributeName values.".into(),
        );
    }
    Ok(())
}

fn tag_limit_error(name: &str) -> DeliveryError {
    DeliveryError::LimitExceeded(format!(
        "Firehose {name} would have more than {TAG_LIMIT} tags; a delivery stream can have at most {TAG_LIMIT}."
    ))
}

impl DeliveryService {
    async fn update_tags(
        &self,
        name: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>),
    ) -> Result<()> {
        let _guard = self.control.lock().await;
        let entry = self.entry(name)?;
        let mut meta = entry.meta.read().unwrap().clone();
        change(&mut meta.tags);
        if meta.tags.len() > TAG_LIMIT {
            return Err(self.tag_limit(name));
        }
        self.persist(vec![Self::put_meta(&meta)?]).await?;
        *entry.meta.write().unwrap() = meta;
        Ok(())
    }

    /// TagDeliveryStream.
    pub async fn tag(&self, name: &str, tags: Vec<(String, String)>) -> Result<()> {
        self.update_tags(name, |t| t.extend(tags)).await
    }

    /// UntagDeliveryStream.
    pub async fn untag(&self, name: &str, keys: Vec<String>) -> Result<()> {
        self.update_tags(name, |t| {
            for k in keys {
                t.remove(&k);
            }
        })
        .await
    }

    /// ListTagsForDeliveryStream: tags after `start`, at most `limit`, and whether more.
    pub fn list_tags(
        &self,
        name: &str,
        start: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(String, String)>, bool)> {
        let entry = self.entry(name)?;
        let meta = entry.meta.read().unwrap();
        let mut tags = meta
            .tags
            .iter()
            .filter(|(k, _)| start.is_none_or(|s| k.as_str() > s))
            .map(|(k, v)| (k.clone(), v.clone()));
        let out: Vec<_> = tags.by_ref().take(limit).collect();
        Ok((out, tags.next().is_some()))
    }

    /// Stops every worker after it has delivered what it buffered (a clean shutdown).
    pub async fn shutdown(&self) {
        let workers: Vec<WorkerHandle> = self
            .workers
            .lock()
            .unwrap()
            .drain()
            .map(|(_, w)| w)
            .collect();
        for w in &workers {
            let _ = w.stop.send(true);
        }
        for w in workers {
            let _ = w.join.await;
        }
    }
}
