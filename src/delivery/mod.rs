//! Delivery streams (Amazon Data Firehose semantics, the Firehose API reference):
//! Direct PUT records buffered durably and delivered in batches to S3-style object
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
//!
//! This module never reaches into `api`; it knows nothing of the API's HTTP (the
//! endpoint destination is an HTTP client of its own). Not yet supported
//! (refused at CreateDeliveryStream with InvalidArgumentException): other sources and
//! destinations, processors, dynamic partitioning, format conversion, ZIP and Snappy
//! (docs/delivery.md).

pub mod batch;
pub mod destination;
pub mod error;
pub mod http;
pub mod model;
pub mod naming;
/// The S3 destination (`aws-sdk-s3`), behind the `s3` cargo feature (on by default).
#[cfg(feature = "s3")]
pub mod s3;
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
}

/// A running worker.
struct WorkerHandle {
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

/// One delivery stream in memory.
struct StreamEntry {
    meta: RwLock<DeliveryStreamMeta>,
    log: Arc<Log>,
    failure: Arc<Mutex<Option<String>>>,
}

/// The destination of a CreateDeliveryStream, parsed by the API layer.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub name: String,
    /// The S3 destination, or the backup bucket of an HTTP endpoint destination.
    pub destination: S3Destination,
    pub http: Option<HttpEndpointDestination>,
    pub tags: Vec<(String, String)>,
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
    ) -> Result<Arc<DeliveryService>> {
        let service = Arc::new(DeliveryService {
            config,
            clock,
            store,
            catalog,
            destination,
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
        let (stop, stop_rx) = watch::channel(false);
        let worker = worker::Worker {
            meta: meta.clone(),
            log: log.clone(),
            store: self.store.clone(),
            catalog: self.catalog.clone(),
            clock: self.clock.clone(),
            destination: self.destination.clone(),
            stop: stop_rx,
            failure: failure.clone(),
            source_arn: self.arn(&meta.name),
            endpoint_client: None,
        };
        let join = tokio::spawn(worker.run());
        self.workers
            .lock()
            .unwrap()
            .insert(meta.log_id(), WorkerHandle { stop, join });
        self.streams.write().unwrap().insert(
            meta.name.clone(),
            Arc::new(StreamEntry {
                meta: RwLock::new(meta),
                log,
                failure,
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

    /// CreateDeliveryStream (DirectPut to an S3 destination).
    pub async fn create(self: &Arc<Self>, req: CreateRequest) -> Result<String> {
        naming::PrefixTemplate::parse(req.destination.prefix.as_deref().unwrap_or(""), false)
            .map_err(DeliveryError::InvalidArgument)?;
        if let Some(p) = &req.destination.error_output_prefix {
            naming::PrefixTemplate::parse(p, true).map_err(DeliveryError::InvalidArgument)?;
        }
        if naming::PrefixTemplate::has_expressions(req.destination.prefix.as_deref().unwrap_or(""))
            && req
                .destination
                .error_output_prefix
                .as_deref()
                .unwrap_or("")
                .is_empty()
        {
            return Err(DeliveryError::InvalidArgument(
                "ErrorOutputPrefix cannot be null or empty when Prefix contains expressions."
                    .into(),
            ));
        }
        if !destination::valid_bucket(req.destination.bucket()) {
            return Err(DeliveryError::InvalidArgument(format!(
                "BucketARN {} does not name a valid S3 bucket.",
                req.destination.bucket_arn
            )));
        }
        if let Some(ext) = &req.destination.file_extension
            && (!ext.starts_with('.') || ext.contains('/'))
        {
            return Err(DeliveryError::InvalidArgument(
                "FileExtension must start with '.' and cannot contain '/'.".into(),
            ));
        }
        if let Some(http) = &req.http {
            check_endpoint(http)?;
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

    /// ListDeliveryStreams: names after `start`, at most `limit`, and whether there are more.
    pub fn list(&self, start: Option<&str>, limit: usize) -> (Vec<String>, bool) {
        let streams = self.streams.read().unwrap();
        let mut names = streams
            .keys()
            .filter(|n| start.is_none_or(|s| n.as_str() > s))
            .cloned();
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
        self.persist(vec![
            CatalogWrite::Delete {
                namespace: worker::CHECKPOINTS.into(),
                key: meta.log_id(),
            },
            CatalogWrite::Delete {
                namespace: NAMESPACE.into(),
                key: meta.name.clone(),
            },
        ])
        .await
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
        let salt = uuid::Uuid::new_v4().simple().to_string();
        Ok((0..count as u64)
            .map(|i| format!("{salt}{:020}", ack.first_offset + i))
            .collect())
    }

    fn tag_limit(&self, name: &str) -> DeliveryError {
        tag_limit_error(name)
    }
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
