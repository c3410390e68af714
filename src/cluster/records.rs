//! The shared data path of data streams ([`SharedShards`] for the stream service):
//! records live as immutable objects in the object store, indexed in PostgreSQL, and
//! every node serves every stream.
//!
//! - **Writes** go to the shard's owner (the holder of its lease, `shard:<stream>/<id>`).
//!   A non-owner forwards them over HTTP (`POST /_freshet/cluster/append`, with the
//!   cluster's shared token). The owner gathers the writes of a batch interval into one
//!   object, assigns offsets (lease epoch × 10¹² + a counter, so every record of a
//!   later owner sorts after every record of an earlier one), uploads the object under
//!   a unique key, and inserts its index row inside the fenced transaction
//!   ([`super::db::ClusterDb::fenced`]): a write is acknowledged only after that
//!   transaction has committed, and an owner that lost its lease cannot commit.
//!   Batches of one shard commit one after another, so the index of a shard only
//!   grows at its end.
//! - **Reads** (from any node) list the index rows at or after a position and fetch the
//!   objects (a bounded in-memory cache keeps recent ones: objects never change).
//!
//! Object format (`FRR1`): `magic | count u32 | first offset u64 | count × (arrival ms
//! i64 | length u32 | entry) | CRC-32C of everything before`, big-endian; the entry is
//! the record as the local log stores it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt as _;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::ClusterError;
use super::db::ClusterDb;
use super::index::{self, NewObject};
use super::node::Leases;
use super::objects::ObjectStore;
use crate::streams::model::shard_id;
use crate::streams::shared::{
    ShardKey, SharedError, SharedFuture, SharedRead, SharedRecord, SharedShards, SharedStream,
};

/// The path other nodes forward writes to.
pub const APPEND_PATH: &str = "/_freshet/cluster/append";
/// The header that carries the cluster's forwarding token.
pub const TOKEN_HEADER: &str = "x-freshet-cluster-token";
/// Largest forwarded append accepted (a PutRecords call is at most 5 MiB of data).
pub const MAX_FORWARD_BYTES: usize = 8 * 1024 * 1024;

const MAGIC: &[u8; 4] = b"FRR1";
/// Offsets of a lease epoch: `epoch * EPOCH_SPAN ..`.
const EPOCH_SPAN: u64 = 1_000_000_000_000;
/// Objects of at most about this much data; a fuller batch is committed at once.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Writes waiting for their owner's commit, over all shards (backpressure beyond).
const PENDING_BUDGET_KIB: usize = 128 * 1024;
/// Recently read or written objects kept decoded.
const CACHE_BYTES: usize = 64 * 1024 * 1024;
/// Connections to the database kept for the data path.
const POOL_SIZE: usize = 16;
/// Objects one read fetches from the object store at once.
const FETCH_CONCURRENCY: usize = 8;

/// How the data path runs.
#[derive(Debug, Clone)]
pub struct SharedLogOptions {
    /// The cluster database (`--cluster`).
    pub url: String,
    /// How long an owner gathers writes into one object.
    pub batch: Duration,
    /// How long a write may wait for a shard to have an owner (a lease moving after a
    /// node died) before it fails with a retryable error.
    pub owner_wait: Duration,
    /// How old an object must be before the orphan sweep may delete it when no index
    /// row names it ([`orphan_age`] in a server).
    pub orphan_age: Duration,
}

/// How often a node looks for orphaned objects (listing the whole store).
pub const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// The age past which an unindexed object is an orphan, for a cluster whose leases
/// last `lease`: an hour, or ten lease times if longer. An owner commits an object's
/// row right after storing it, in a transaction fenced by its lease's epoch; a writer
/// stalled longer than its lease has lost the lease, and its commit is refused. So a
/// row can only appear for an object within about a lease time of its upload, and an
/// object older than this that no row names never will be named.
pub fn orphan_age(lease: Duration) -> Duration {
    (lease * 10).max(Duration::from_secs(3600))
}

/// The data path (see the module doc).
pub struct SharedLog {
    options: SharedLogOptions,
    leases: Leases,
    objects: Arc<dyn ObjectStore>,
    pool: Pool,
    writers: Mutex<HashMap<ShardKey, mpsc::Sender<Pending>>>,
    pending_budget: Arc<Semaphore>,
    cache: Mutex<ObjectCache>,
    http: reqwest::Client,
    token: String,
    iterator_key: [u8; 32],
    /// When this node last looked for orphaned objects.
    orphans_swept: Mutex<Option<std::time::Instant>>,
}

/// A write waiting for its batch.
struct Pending {
    payloads: Vec<Bytes>,
    reply: oneshot::Sender<Result<u64, LocalError>>,
}

/// Why the owner could not take a write.
#[derive(Debug, Clone)]
pub enum LocalError {
    /// This node does not (or no longer) hold the lease: nothing was committed, so the
    /// write may go to the new owner.
    NotOwner,
    /// Storing or committing failed.
    Failed(String),
}

/// What a forwarded append comes to, for the HTTP layer to answer.
#[derive(Debug)]
pub enum ForwardOutcome {
    /// Committed: the offsets start here.
    Committed(u64),
    NotOwner,
    BadToken,
    Malformed(String),
    Failed(String),
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(16) {
        let id = uuid::Uuid::new_v4();
        chunk.copy_from_slice(&id.as_bytes()[..chunk.len()]);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl SharedLog {
    /// Connects to the (migrated) cluster database and reads or creates the shared
    /// secrets.
    pub async fn start(
        options: SharedLogOptions,
        leases: Leases,
        objects: Arc<dyn ObjectStore>,
    ) -> Result<Arc<SharedLog>, ClusterError> {
        let pool = Pool::new(options.url.clone());
        let (iterator_key, token) = {
            let db = pool.get().await?;
            let key = index::secret(&db, "iterator-key", &random_bytes::<32>()).await?;
            let token = index::secret(&db, "forward-token", &random_bytes::<32>()).await?;
            (key, token)
        };
        let iterator_key: [u8; 32] = iterator_key.try_into().map_err(|_| {
            ClusterError::Database("the shared iterator key is not 32 bytes".into())
        })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| ClusterError::Database(format!("HTTP client: {e}")))?;
        tracing::info!(object_store = %objects.describe(), batch = ?options.batch, "shared data path on");
        Ok(Arc::new(SharedLog {
            options,
            leases,
            objects,
            pool,
            writers: Mutex::new(HashMap::new()),
            pending_budget: Arc::new(Semaphore::new(PENDING_BUDGET_KIB)),
            cache: Mutex::new(ObjectCache::default()),
            http,
            token: hex(&token),
            iterator_key,
            orphans_swept: Mutex::new(None),
        }))
    }

    /// The key every node signs shard iterators with.
    pub fn iterator_key(&self) -> [u8; 32] {
        self.iterator_key
    }

    fn resource(shard: &ShardKey) -> String {
        super::shard_resource(&shard.stream, &shard_id(shard.ordinal))
    }

    /// Appends on this node, which must own the shard.
    pub async fn append_local(
        self: &Arc<Self>,
        shard: ShardKey,
        payloads: Vec<Bytes>,
    ) -> Result<u64, LocalError> {
        if self.leases.epoch_of(&Self::resource(&shard)).is_none() {
            return Err(LocalError::NotOwner);
        }
        let size: usize = payloads.iter().map(|p| p.len()).sum();
        let kib = (size / 1024 + 1).min(PENDING_BUDGET_KIB) as u32;
        let _permit = self
            .pending_budget
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| LocalError::Failed("shutting down".into()))?;
        let (reply, answer) = oneshot::channel();
        let mut pending = Pending { payloads, reply };
        // A writer whose task ended (never, in practice) is replaced.
        for _ in 0..2 {
            let tx = self.writer(&shard);
            match tx.send(pending).await {
                Ok(()) => {
                    return answer.await.unwrap_or_else(|_| {
                        Err(LocalError::Failed("the shard writer stopped".into()))
                    });
                }
                Err(mpsc::error::SendError(p)) => {
                    pending = p;
                    self.writers.lock().unwrap().remove(&shard);
                }
            }
        }
        Err(LocalError::Failed("the shard writer stopped".into()))
    }

    fn writer(self: &Arc<Self>, shard: &ShardKey) -> mpsc::Sender<Pending> {
        let mut writers = self.writers.lock().unwrap();
        if let Some(tx) = writers.get(shard) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(256);
        writers.insert(shard.clone(), tx.clone());
        let log = self.clone();
        let shard = shard.clone();
        tokio::spawn(async move { log.run_writer(shard, rx).await });
        tx
    }

    /// One shard's writer: gathers a batch, commits it, answers, repeats.
    async fn run_writer(self: Arc<Self>, shard: ShardKey, mut rx: mpsc::Receiver<Pending>) {
        let resource = Self::resource(&shard);
        // (lease epoch, next offset) while this node keeps the lease.
        let mut current: Option<(i64, u64)> = None;
        while let Some(first) = rx.recv().await {
            let mut bytes: usize = first.payloads.iter().map(|p| p.len()).sum();
            let mut batch = vec![first];
            let until = tokio::time::Instant::now() + self.options.batch;
            while bytes < MAX_BATCH_BYTES {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(p)) => {
                        bytes += p.payloads.iter().map(|p| p.len()).sum::<usize>();
                        batch.push(p);
                    }
                    _ => break,
                }
            }
            let result = self.commit(&shard, &resource, &mut current, &batch).await;
            match result {
                Ok(firsts) => {
                    for (p, first) in batch.into_iter().zip(firsts) {
                        let _ = p.reply.send(Ok(first));
                    }
                }
                Err(e) => {
                    if matches!(e, LocalError::NotOwner) {
                        current = None;
                    }
                    for p in batch {
                        let _ = p.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Stores and indexes one batch; each write's first offset.
    async fn commit(
        &self,
        shard: &ShardKey,
        resource: &str,
        current: &mut Option<(i64, u64)>,
        batch: &[Pending],
    ) -> Result<Vec<u64>, LocalError> {
        let Some(epoch) = self.leases.epoch_of(resource) else {
            return Err(LocalError::NotOwner);
        };
        let failed = |e: ClusterError| match e {
            ClusterError::Fenced { .. } => LocalError::NotOwner,
            e => LocalError::Failed(e.to_string()),
        };
        let mut next = match *current {
            Some((e, next)) if e == epoch => next,
            _ => {
                // A new lease (or this writer's first batch): above everything the
                // index holds and in this epoch's range.
                let db = self.pool.get().await.map_err(failed)?;
                let end = index::end_offset(&db, shard).await.map_err(failed)?;
                end.max(epoch as u64 * EPOCH_SPAN)
            }
        };
        let count: usize = batch.iter().map(|p| p.payloads.len()).sum();
        let first_offset = next;
        let firsts: Vec<u64> = batch
            .iter()
            .scan(first_offset, |at, p| {
                let first = *at;
                *at += p.payloads.len() as u64;
                Some(first)
            })
            .collect();
        next += count as u64;
        // Offsets are never handed out twice, even when this batch fails.
        *current = Some((epoch, next));
        let arrival = crate::clock::system().now_ms();
        let body = encode_object(
            first_offset,
            arrival,
            batch.iter().flat_map(|p| p.payloads.iter()),
        );
        let key = format!(
            "records/{}/{}/{}/{:020}-{}-{}.rec",
            shard.stream,
            shard.stream_epoch,
            shard_id(shard.ordinal),
            first_offset,
            self.leases.node_id(),
            uuid::Uuid::new_v4().simple()
        );
        let row = NewObject {
            first_offset,
            last_offset: next - 1,
            records: count as u32,
            bytes: body.len() as u64,
            first_arrival_ms: arrival,
            last_arrival_ms: arrival,
            object_key: key.clone(),
            lease_epoch: epoch,
            node_id: self.leases.node_id().to_string(),
        };
        self.objects
            .put(key.clone(), body.clone())
            .await
            .map_err(|e| LocalError::Failed(format!("storing {key}: {e}")))?;
        let committed = async {
            let mut db = self.pool.get().await?;
            let fenced = db.fenced(resource, self.leases.node_id(), epoch).await?;
            index::insert_object(fenced.transaction(), shard, &row).await?;
            // Only an error from COMMIT itself leaves the outcome unknown.
            Ok(fenced.commit().await.map_err(|e| (true, e)))
        };
        let outcome: Result<(), (bool, ClusterError)> = match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((ambiguous, e))) => Err((ambiguous, e)),
            Err(e) => Err((false, e)),
        };
        if let Err((ambiguous, e)) = outcome {
            if !ambiguous {
                // Never indexed: nobody will read it.
                let objects = self.objects.clone();
                tokio::spawn(async move {
                    if let Err(e) = objects.delete(key.clone()).await {
                        tracing::debug!(key, error = %e, "cannot delete an unindexed object");
                    }
                });
            }
            return Err(failed(e));
        }
        if let Ok(records) = decode_object(&body) {
            self.cache
                .lock()
                .unwrap()
                .insert(row.object_key, Arc::new(records), body.len());
        }
        Ok(firsts)
    }

    /// Sends a write to the shard's owner.
    async fn forward(
        &self,
        url: &str,
        shard: &ShardKey,
        payloads: &[Bytes],
    ) -> Result<u64, LocalError> {
        let body = encode_append(shard, payloads);
        let response = self
            .http
            .post(format!("{}{APPEND_PATH}", url.trim_end_matches('/')))
            .header(TOKEN_HEADER, &self.token)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    // Nothing was sent: the owner is gone, and its lease will move.
                    LocalError::NotOwner
                } else {
                    LocalError::Failed(format!("forwarding to the owner at {url}: {e}"))
                }
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| LocalError::Failed(format!("forwarding to the owner at {url}: {e}")))?;
        match status.as_u16() {
            200 if bytes.len() == 8 => {
                Ok(u64::from_be_bytes(bytes[..].try_into().unwrap_or_default()))
            }
            409 => Err(LocalError::NotOwner),
            _ => Err(LocalError::Failed(format!(
                "the owner at {url} answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ))),
        }
    }

    /// Serves a write forwarded by another node.
    pub async fn serve_forwarded(
        self: &Arc<Self>,
        token: Option<&str>,
        body: Bytes,
    ) -> ForwardOutcome {
        use subtle::ConstantTimeEq;
        let good = token.is_some_and(|t| bool::from(t.as_bytes().ct_eq(self.token.as_bytes())));
        if !good {
            return ForwardOutcome::BadToken;
        }
        let (shard, payloads) = match decode_append(body) {
            Ok(x) => x,
            Err(e) => return ForwardOutcome::Malformed(e),
        };
        match self.append_local(shard, payloads).await {
            Ok(first) => ForwardOutcome::Committed(first),
            Err(LocalError::NotOwner) => ForwardOutcome::NotOwner,
            Err(LocalError::Failed(e)) => ForwardOutcome::Failed(e),
        }
    }

    async fn append_anywhere(
        self: Arc<Self>,
        shard: ShardKey,
        payloads: Vec<Bytes>,
    ) -> Result<u64, SharedError> {
        let resource = Self::resource(&shard);
        let deadline = Instant::now() + self.options.owner_wait;
        loop {
            let attempt = if self.leases.epoch_of(&resource).is_some() {
                self.append_local(shard.clone(), payloads.clone()).await
            } else if let Some(url) = self.leases.owner_url(&resource) {
                self.forward(&url, &shard, &payloads).await
            } else {
                Err(LocalError::NotOwner)
            };
            match attempt {
                Ok(first) => return Ok(first),
                Err(LocalError::Failed(e)) => return Err(SharedError::Unavailable(e)),
                Err(LocalError::NotOwner) if Instant::now() >= deadline => {
                    return Err(SharedError::NoOwner(format!(
                        "Shard {} of stream {} is moving between nodes; retry.",
                        shard_id(shard.ordinal),
                        shard.stream
                    )));
                }
                // The lease is moving: nothing was committed, so try the new owner once
                // the heartbeat has seen it.
                Err(LocalError::NotOwner) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The records of one object, from the cache or the store.
    async fn fetch(&self, key: &str) -> Result<Arc<Vec<SharedRecord>>, SharedError> {
        if let Some(hit) = self.cache.lock().unwrap().get(key) {
            return Ok(hit);
        }
        let body = self
            .objects
            .get(key.to_string())
            .await
            .map_err(|e| SharedError::Unavailable(format!("reading {key}: {e}")))?;
        let records = Arc::new(
            decode_object(&body)
                .map_err(|e| SharedError::Unavailable(format!("object {key}: {e}")))?,
        );
        self.cache
            .lock()
            .unwrap()
            .insert(key.to_string(), records.clone(), body.len());
        Ok(records)
    }

    async fn read_shard(
        &self,
        shard: ShardKey,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<SharedRead, SharedError> {
        let (rows, end_offset) = {
            let db = self.pool.get().await.map_err(unavailable)?;
            let rows = index::objects_from(&db, &shard, from, 64)
                .await
                .map_err(unavailable)?;
            let end = index::end_offset(&db, &shard).await.map_err(unavailable)?;
            (rows, end)
        };
        let mut out = SharedRead {
            records: Vec::new(),
            next_offset: from,
            end_offset,
        };
        // The objects this read needs, fetched together (cold reads are one object
        // store round trip, not one per object).
        let mut wanted = 0usize;
        let rows: Vec<_> = rows
            .into_iter()
            .take_while(|row| {
                let take = wanted < limit;
                // An object's offsets are contiguous; the first one may start before
                // the position.
                wanted += (row.last_offset + 1 - row.first_offset.max(from)) as usize;
                take
            })
            .collect();
        let keys: Vec<String> = rows.into_iter().map(|row| row.object_key).collect();
        let fetched: Vec<_> = futures_util::stream::iter(keys)
            .map(|key| async move { self.fetch(&key).await })
            .buffered(FETCH_CONCURRENCY)
            .collect()
            .await;
        let mut bytes = 0usize;
        'objects: for records in fetched {
            let records = records?;
            for r in records.iter().filter(|r| r.offset >= from) {
                if out.records.len() >= limit
                    || (bytes + r.payload.len() > max_bytes && !out.records.is_empty())
                {
                    break 'objects;
                }
                bytes += r.payload.len();
                out.next_offset = r.offset + 1;
                out.records.push(r.clone());
            }
        }
        Ok(out)
    }

    async fn offset_at(&self, shard: ShardKey, timestamp_ms: i64) -> Result<u64, SharedError> {
        let (row, end) = {
            let db = self.pool.get().await.map_err(unavailable)?;
            let row = index::object_at_time(&db, &shard, timestamp_ms)
                .await
                .map_err(unavailable)?;
            let end = index::end_offset(&db, &shard).await.map_err(unavailable)?;
            (row, end)
        };
        let Some(row) = row else {
            return Ok(end);
        };
        let records = self.fetch(&row.object_key).await?;
        Ok(records
            .iter()
            .find(|r| r.arrival_ms >= timestamp_ms)
            .map(|r| r.offset)
            .unwrap_or(row.last_offset + 1))
    }
}

impl SharedLog {
    /// Retention step 1 for a shard this node owns (see [`SharedShards::expire`]).
    pub async fn expire_shard(&self, shard: ShardKey, cutoff_ms: i64) -> Result<u64, SharedError> {
        if self.leases.epoch_of(&Self::resource(&shard)).is_none() {
            return Ok(0);
        }
        let db = self.pool.get().await.map_err(unavailable)?;
        index::mark_expired(&db, &shard, cutoff_ms)
            .await
            .map_err(unavailable)
    }

    /// Retention steps 2 and 3 for every marked object, after marking those of deleted
    /// streams (whose shard leases are dropped too): objects are deleted first, then
    /// their rows, so a pass cut short at any point leaves rows that are still marked,
    /// which the next pass finishes.
    pub async fn sweep_marked(&self) -> Result<u64, SharedError> {
        let db = self.pool.get().await.map_err(unavailable)?;
        index::mark_deleted_streams(&db)
            .await
            .map_err(unavailable)?;
        index::forget_deleted_leases(&db)
            .await
            .map_err(unavailable)?;
        let mut swept = 0;
        loop {
            let keys = index::marked(&db, 500).await.map_err(unavailable)?;
            if keys.is_empty() {
                return Ok(swept);
            }
            let mut deleted = Vec::with_capacity(keys.len());
            for key in keys {
                match self.objects.delete(key.clone()).await {
                    Ok(()) => deleted.push(key),
                    Err(e) => {
                        tracing::warn!(key, error = %e, "cannot delete an expired object; the next pass retries");
                    }
                }
            }
            if deleted.is_empty() {
                return Ok(swept);
            }
            for key in &deleted {
                self.cache.lock().unwrap().remove(key);
            }
            swept += index::remove_marked(&db, &deleted)
                .await
                .map_err(unavailable)?;
        }
    }
}

impl SharedLog {
    /// Deletes the objects under `records/` older than `min_age` that no index row
    /// names: those of writes whose commit never happened (the owner killed between
    /// storing and committing, or a commit whose outcome it could not know and that
    /// did not commit). Safe by [`orphan_age`]'s argument; listing pages of 1,000 keys.
    /// Returns how many were deleted.
    pub async fn sweep_orphans(&self, min_age: Duration) -> Result<u64, SharedError> {
        let cutoff = crate::clock::system().now_ms() - min_age.as_millis() as i64;
        let db = self.pool.get().await.map_err(unavailable)?;
        let mut after: Option<String> = None;
        let (mut listed, mut deleted) = (0u64, 0u64);
        loop {
            let page = self
                .objects
                .list("records/".into(), after.clone())
                .await
                .map_err(SharedError::Unavailable)?;
            let Some((last, _)) = page.last() else {
                tracing::info!(
                    listed,
                    deleted,
                    store = %self.objects.describe(),
                    "orphan sweep done"
                );
                return Ok(deleted);
            };
            listed += page.len() as u64;
            after = Some(last.clone());
            let old: Vec<String> = page
                .into_iter()
                .filter(|(_, modified)| *modified < cutoff)
                .map(|(key, _)| key)
                .collect();
            if old.is_empty() {
                continue;
            }
            let named = index::indexed(&db, &old).await.map_err(unavailable)?;
            for key in old.into_iter().filter(|k| !named.contains(k)) {
                match self.objects.delete(key.clone()).await {
                    Ok(()) => {
                        tracing::info!(key, "deleted an orphaned object (never indexed)");
                        deleted += 1;
                    }
                    Err(e) => tracing::warn!(key, error = %e, "cannot delete an orphaned object"),
                }
            }
        }
    }

    /// [`SharedLog::sweep_marked`], and every [`ORPHAN_SWEEP_EVERY`] the orphan sweep.
    async fn sweep_all(&self) -> Result<u64, SharedError> {
        let swept = self.sweep_marked().await?;
        let due = {
            let mut last = self.orphans_swept.lock().unwrap();
            let due = last.is_none_or(|t| t.elapsed() >= ORPHAN_SWEEP_EVERY);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        if due {
            let orphans = self.sweep_orphans(self.options.orphan_age).await?;
            return Ok(swept + orphans);
        }
        Ok(swept)
    }
}

fn unavailable(e: ClusterError) -> SharedError {
    SharedError::Unavailable(e.to_string())
}

impl SharedShards for Arc<SharedLog> {
    fn append(&self, shard: ShardKey, payloads: Vec<Bytes>) -> SharedFuture<'_, u64> {
        Box::pin(self.clone().append_anywhere(shard, payloads))
    }

    fn read(
        &self,
        shard: ShardKey,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> SharedFuture<'_, SharedRead> {
        Box::pin(self.read_shard(shard, from, limit, max_bytes))
    }

    fn end_offset(&self, shard: ShardKey) -> SharedFuture<'_, u64> {
        Box::pin(async move {
            let db = self.pool.get().await.map_err(unavailable)?;
            index::end_offset(&db, &shard).await.map_err(unavailable)
        })
    }

    fn offset_at_time(&self, shard: ShardKey, timestamp_ms: i64) -> SharedFuture<'_, u64> {
        Box::pin(self.offset_at(shard, timestamp_ms))
    }

    fn create_stream(&self, stream: SharedStream) -> SharedFuture<'_, bool> {
        Box::pin(async move {
            let db = self.pool.get().await.map_err(unavailable)?;
            index::create_stream(&db, &stream)
                .await
                .map_err(unavailable)
        })
    }

    fn update_stream(&self, stream: SharedStream) -> SharedFuture<'_, ()> {
        Box::pin(async move {
            let db = self.pool.get().await.map_err(unavailable)?;
            index::update_stream(&db, &stream)
                .await
                .map_err(unavailable)
        })
    }

    fn delete_stream(&self, name: String, stream_epoch: u64) -> SharedFuture<'_, ()> {
        Box::pin(async move {
            let db = self.pool.get().await.map_err(unavailable)?;
            index::delete_stream(&db, &name, stream_epoch)
                .await
                .map_err(unavailable)
        })
    }

    fn streams(&self) -> SharedFuture<'_, Vec<SharedStream>> {
        Box::pin(async move {
            let db = self.pool.get().await.map_err(unavailable)?;
            index::streams(&db).await.map_err(unavailable)
        })
    }

    fn expire(&self, shard: ShardKey, cutoff_ms: i64) -> SharedFuture<'_, u64> {
        Box::pin(self.expire_shard(shard, cutoff_ms))
    }

    fn sweep(&self) -> SharedFuture<'_, u64> {
        Box::pin(self.sweep_all())
    }
}

/// Encodes an object of records (see the module doc).
pub fn encode_object<'a>(
    first_offset: u64,
    arrival_ms: i64,
    payloads: impl Iterator<Item = &'a Bytes>,
) -> Bytes {
    let payloads: Vec<&Bytes> = payloads.collect();
    let size = 16 + payloads.iter().map(|p| 12 + p.len()).sum::<usize>() + 4;
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(MAGIC);
    out.put_u32(payloads.len() as u32);
    out.put_u64(first_offset);
    for p in payloads {
        out.put_i64(arrival_ms);
        out.put_u32(p.len() as u32);
        out.put_slice(p);
    }
    let crc = crc32c::crc32c(&out);
    out.put_u32(crc);
    out.freeze()
}

/// Decodes an object; the entries share its buffer.
pub fn decode_object(body: &Bytes) -> Result<Vec<SharedRecord>, String> {
    if body.len() < 20 || &body[..4] != MAGIC {
        return Err("not a record object".into());
    }
    let (content, crc) = body.split_at(body.len() - 4);
    let want = u32::from_be_bytes(crc.try_into().unwrap_or_default());
    if crc32c::crc32c(content) != want {
        return Err("checksum mismatch".into());
    }
    let mut at = &content[4..];
    let count = at.get_u32() as usize;
    let first = at.get_u64();
    let mut records = Vec::with_capacity(count.min(1 << 20));
    for i in 0..count {
        if at.remaining() < 12 {
            return Err("truncated".into());
        }
        let arrival_ms = at.get_i64();
        let len = at.get_u32() as usize;
        if at.remaining() < len {
            return Err("truncated".into());
        }
        let start = content.len() - at.remaining();
        records.push(SharedRecord {
            offset: first + i as u64,
            arrival_ms,
            payload: body.slice(start..start + len),
        });
        at.advance(len);
    }
    if at.has_remaining() {
        return Err("trailing bytes".into());
    }
    Ok(records)
}

/// A forwarded append: `name length u16 | name | stream epoch u64 | ordinal u32 |
/// count u32 | count × (length u32 | entry)`.
fn encode_append(shard: &ShardKey, payloads: &[Bytes]) -> Bytes {
    let mut out = BytesMut::with_capacity(
        18 + shard.stream.len() + payloads.iter().map(|p| 4 + p.len()).sum::<usize>(),
    );
    out.put_u16(shard.stream.len() as u16);
    out.put_slice(shard.stream.as_bytes());
    out.put_u64(shard.stream_epoch);
    out.put_u32(shard.ordinal);
    out.put_u32(payloads.len() as u32);
    for p in payloads {
        out.put_u32(p.len() as u32);
        out.put_slice(p);
    }
    out.freeze()
}

fn decode_append(mut body: Bytes) -> Result<(ShardKey, Vec<Bytes>), String> {
    let short = || "truncated append".to_string();
    if body.remaining() < 2 {
        return Err(short());
    }
    let name_len = body.get_u16() as usize;
    if body.remaining() < name_len + 16 {
        return Err(short());
    }
    let stream = String::from_utf8(body.split_to(name_len).to_vec())
        .map_err(|_| "stream name is not UTF-8")?;
    let stream_epoch = body.get_u64();
    let ordinal = body.get_u32();
    let count = body.get_u32() as usize;
    if count == 0 {
        return Err("an append needs records".into());
    }
    let mut payloads = Vec::with_capacity(count.min(10_000));
    for _ in 0..count {
        if body.remaining() < 4 {
            return Err(short());
        }
        let len = body.get_u32() as usize;
        if body.remaining() < len {
            return Err(short());
        }
        payloads.push(body.split_to(len));
    }
    if body.has_remaining() {
        return Err("trailing bytes after the records".into());
    }
    Ok((
        ShardKey {
            stream,
            stream_epoch,
            ordinal,
        },
        payloads,
    ))
}

/// Decoded objects by key, oldest evicted first once over [`CACHE_BYTES`].
#[derive(Default)]
struct ObjectCache {
    entries: HashMap<String, (Arc<Vec<SharedRecord>>, usize)>,
    order: VecDeque<String>,
    bytes: usize,
}

impl ObjectCache {
    fn get(&self, key: &str) -> Option<Arc<Vec<SharedRecord>>> {
        self.entries.get(key).map(|(r, _)| r.clone())
    }

    fn remove(&mut self, key: &str) {
        if let Some((_, size)) = self.entries.remove(key) {
            self.bytes -= size;
            self.order.retain(|k| k != key);
        }
    }

    fn insert(&mut self, key: String, records: Arc<Vec<SharedRecord>>, size: usize) {
        if size > CACHE_BYTES || self.entries.contains_key(&key) {
            return;
        }
        self.bytes += size;
        self.order.push_back(key.clone());
        self.entries.insert(key, (records, size));
        while self.bytes > CACHE_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, size)) = self.entries.remove(&old) {
                self.bytes -= size;
            }
        }
    }
}

/// A few reusable connections to the cluster database; a broken one is dropped and
/// the next caller connects afresh.
struct Pool {
    url: String,
    idle: Mutex<Vec<ClusterDb>>,
    permits: Semaphore,
}

/// A connection on loan from the [`Pool`]; returned when dropped, unless broken.
struct Pooled<'a> {
    pool: &'a Pool,
    db: Option<ClusterDb>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Pool {
    fn new(url: String) -> Pool {
        Pool {
            url,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(POOL_SIZE),
        }
    }

    async fn get(&self) -> Result<Pooled<'_>, ClusterError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ClusterError::Unreachable("shutting down".into()))?;
        let idle = {
            let mut idle = self.idle.lock().unwrap();
            idle.retain(|db| !db.is_closed());
            idle.pop()
        };
        let db = match idle {
            Some(db) => db,
            None => ClusterDb::connect(&self.url).await?,
        };
        Ok(Pooled {
            pool: self,
            db: Some(db),
            _permit: permit,
        })
    }
}

impl std::ops::Deref for Pooled<'_> {
    type Target = ClusterDb;
    fn deref(&self) -> &ClusterDb {
        self.db.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut ClusterDb {
        self.db.as_mut().expect("held until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(db) = self.db.take()
            && !db.is_closed()
        {
            self.pool.idle.lock().unwrap().push(db);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip_and_damage_is_detected() {
        let payloads = [
            Bytes::from_static(b"\x00\x01\x00kone"),
            Bytes::from_static(b""),
            Bytes::from(vec![7u8; 1000]),
        ];
        let body = encode_object(42, 1_700_000_000_000, payloads.iter());
        let back = decode_object(&body).unwrap();
        assert_eq!(back.len(), 3);
        for (i, (r, p)) in back.iter().zip(&payloads).enumerate() {
            assert_eq!(r.offset, 42 + i as u64);
            assert_eq!(r.arrival_ms, 1_700_000_000_000);
            assert_eq!(&r.payload, p);
        }
        for at in [0, 5, 20, body.len() - 1] {
            let mut bad = body.to_vec();
            bad[at] ^= 0x40;
            assert!(decode_object(&Bytes::from(bad)).is_err(), "flip at {at}");
        }
        assert!(decode_object(&body.slice(..body.len() - 3)).is_err());
    }

    #[test]
    fn forwarded_appends_round_trip_and_malformed_ones_are_refused() {
        let shard = ShardKey {
            stream: "orders".into(),
            stream_epoch: 1_700_000_000_123,
            ordinal: 3,
        };
        let payloads = vec![Bytes::from_static(b"a"), Bytes::from_static(b"bcd")];
        let body = encode_append(&shard, &payloads);
        let (back, got) = decode_append(body.clone()).unwrap();
        assert_eq!(back, shard);
        assert_eq!(got, payloads);
        for cut in 0..body.len() {
            assert!(decode_append(body.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(decode_append(Bytes::from(longer)).is_err());
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let mut cache = ObjectCache::default();
        for i in 0..100 {
            cache.insert(format!("k{i}"), Arc::new(Vec::new()), CACHE_BYTES / 10);
        }
        assert!(cache.bytes <= CACHE_BYTES);
        assert!(cache.get("k99").is_some());
        assert!(cache.get("k0").is_none());
    }
}
