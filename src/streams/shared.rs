//! Shared shards: the interface through which a data stream's records and catalog live
//! outside this node (scale-out mode, `--cluster` with `--object-store`), so that
//! [`super::StreamService`] serves PutRecord(s), GetShardIterator and GetRecords the
//! same way whichever node a client calls. The embedded default never sets one; the
//! implementation is `cluster::records::SharedLog` (PostgreSQL index, objects in S3).
//!
//! Offsets are the shard-local part of sequence numbers ([`super::sequence`]): in
//! shared shards they grow but are not contiguous (each new owner starts above every
//! earlier one), so a position means "the first record at or after this offset".

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

/// A boxed future, for the object-safe trait below.
pub type SharedFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, SharedError>> + Send + 'a>>;

/// One shard of one stream incarnation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardKey {
    pub stream: String,
    /// The stream's epoch (its creation time in ms).
    pub stream_epoch: u64,
    pub ordinal: u32,
}

/// A record as read back.
#[derive(Debug, Clone)]
pub struct SharedRecord {
    pub offset: u64,
    pub arrival_ms: i64,
    /// The stored entry: `flags | key length | key | data` (as the local log stores it).
    pub payload: Bytes,
}

/// What a read returns.
#[derive(Debug, Clone, Default)]
pub struct SharedRead {
    pub records: Vec<SharedRecord>,
    /// Where the next read starts.
    pub next_offset: u64,
    /// One past the last committed offset of the shard (0 when it has none).
    pub end_offset: u64,
}

/// A stream as the shared catalog holds it.
#[derive(Debug, Clone)]
pub struct SharedStream {
    pub name: String,
    pub stream_epoch: u64,
    /// The stream's metadata, JSON as the embedded catalog stores it.
    pub meta: Vec<u8>,
    pub deleted: bool,
}

/// Why a shared call failed. All of these are retryable by the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SharedError {
    /// No node holds the shard's lease right now (it is moving).
    #[error("{0}")]
    NoOwner(String),
    /// The database, the object store or the owner could not be reached or refused.
    #[error("{0}")]
    Unavailable(String),
}

/// Records and catalog that live beyond this node (see the module doc).
pub trait SharedShards: Send + Sync + 'static {
    /// Appends `payloads` to the shard, through its owner, and answers once they are
    /// committed: their offsets are `first..first + payloads.len()`.
    fn append(&self, shard: ShardKey, payloads: Vec<Bytes>) -> SharedFuture<'_, u64>;
    /// Up to `limit` records (and about `max_bytes`) at or after offset `from`.
    fn read(
        &self,
        shard: ShardKey,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> SharedFuture<'_, SharedRead>;
    /// One past the last committed offset (where LATEST starts).
    fn end_offset(&self, shard: ShardKey) -> SharedFuture<'_, u64>;
    /// The offset of the first record that arrived at or after `timestamp_ms` (the end
    /// offset when none has).
    fn offset_at_time(&self, shard: ShardKey, timestamp_ms: i64) -> SharedFuture<'_, u64>;
    /// Records a new stream in the shared catalog; `false` when the name is taken by a
    /// stream that is not deleted.
    fn create_stream(&self, stream: SharedStream) -> SharedFuture<'_, bool>;
    /// Replaces the metadata of a stream's incarnation in the shared catalog (its
    /// settings: retention, tags, encryption, monitoring, record size).
    fn update_stream(&self, stream: SharedStream) -> SharedFuture<'_, ()>;
    /// Marks a stream deleted in the shared catalog.
    fn delete_stream(&self, name: String, stream_epoch: u64) -> SharedFuture<'_, ()>;
    /// Every stream of the shared catalog, deleted ones included.
    fn streams(&self) -> SharedFuture<'_, Vec<SharedStream>>;
    /// Retention: records of the shard that all arrived before `cutoff_ms` stop being
    /// served and are deleted (by this node when it owns the shard; a no-op
    /// elsewhere). Returns how many objects were let go.
    fn expire(&self, shard: ShardKey, cutoff_ms: i64) -> SharedFuture<'_, u64>;
    /// Finishes deletes: the records of deleted streams, and whatever an interrupted
    /// retention pass left. Returns how many objects were deleted.
    fn sweep(&self) -> SharedFuture<'_, u64>;
}
