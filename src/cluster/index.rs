//! The data path's tables (migration `0002_data.sql`): shared secrets, the shared
//! stream catalog and the record index, one row per object of records. Rows of the
//! index are only ever inserted inside the owner's fenced transaction
//! ([`super::db::ClusterDb::fenced`]); everything else here reads.

use tokio_postgres::GenericClient;

use super::ClusterError;
use super::db::ClusterDb;
use crate::streams::shared::{ShardKey, SharedStream};

/// One object of records, as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRow {
    pub first_offset: u64,
    pub last_offset: u64,
    pub records: u32,
    pub object_key: String,
}

/// An object about to be indexed.
#[derive(Debug, Clone)]
pub struct NewObject {
    pub first_offset: u64,
    pub last_offset: u64,
    pub records: u32,
    pub bytes: u64,
    pub first_arrival_ms: i64,
    pub last_arrival_ms: i64,
    pub object_key: String,
    pub lease_epoch: i64,
    pub node_id: String,
}

/// An [`ObjectRow`] from `SELECT first_offset, last_offset, records, object_key`.
fn object_row(r: &tokio_postgres::Row) -> ObjectRow {
    ObjectRow {
        first_offset: r.get::<_, i64>(0) as u64,
        last_offset: r.get::<_, i64>(1) as u64,
        records: r.get::<_, i32>(2) as u32,
        object_key: r.get(3),
    }
}

fn key_params(shard: &ShardKey) -> (i64, i32) {
    (shard.stream_epoch as i64, shard.ordinal as i32)
}

/// The secret `name`, created from `candidate` by the first node that asks.
pub async fn secret(db: &ClusterDb, name: &str, candidate: &[u8]) -> Result<Vec<u8>, ClusterError> {
    db.client()
        .execute(
            "INSERT INTO cluster_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &candidate],
        )
        .await?;
    let row = db
        .client()
        .query_one(
            "SELECT value FROM cluster_secrets WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok(row.get(0))
}

/// Records a new stream; `false` when a stream of that name exists and is not deleted.
pub async fn create_stream(db: &ClusterDb, s: &SharedStream) -> Result<bool, ClusterError> {
    let row = db
        .client()
        .query_opt(
            "INSERT INTO cluster_streams (name, stream_epoch, meta) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE
                 SET stream_epoch = EXCLUDED.stream_epoch, meta = EXCLUDED.meta,
                     deleted = false, changed_at = clock_timestamp()
                 WHERE cluster_streams.deleted
             RETURNING name",
            &[&s.name, &(s.stream_epoch as i64), &s.meta],
        )
        .await?;
    Ok(row.is_some())
}

/// Replaces the metadata of a stream's incarnation.
pub async fn update_stream(db: &ClusterDb, s: &SharedStream) -> Result<(), ClusterError> {
    db.client()
        .execute(
            "UPDATE cluster_streams SET meta = $3, changed_at = clock_timestamp()
             WHERE name = $1 AND stream_epoch = $2 AND NOT deleted",
            &[&s.name, &(s.stream_epoch as i64), &s.meta],
        )
        .await?;
    Ok(())
}

/// Marks the stream's incarnation `stream_epoch` deleted.
pub async fn delete_stream(
    db: &ClusterDb,
    name: &str,
    stream_epoch: u64,
) -> Result<(), ClusterError> {
    db.client()
        .execute(
            "UPDATE cluster_streams SET deleted = true, changed_at = clock_timestamp()
             WHERE name = $1 AND stream_epoch = $2",
            &[&name, &(stream_epoch as i64)],
        )
        .await?;
    Ok(())
}

/// Every stream of the shared catalog.
pub async fn streams(db: &ClusterDb) -> Result<Vec<SharedStream>, ClusterError> {
    let rows = db
        .client()
        .query(
            "SELECT name, stream_epoch, meta, deleted FROM cluster_streams ORDER BY name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| SharedStream {
            name: r.get(0),
            stream_epoch: r.get::<_, i64>(1) as u64,
            meta: r.get(2),
            deleted: r.get(3),
        })
        .collect())
}

/// Indexes an object, inside the owner's fenced transaction.
pub async fn insert_object(
    txn: &impl GenericClient,
    shard: &ShardKey,
    o: &NewObject,
) -> Result<(), ClusterError> {
    let (epoch, ordinal) = key_params(shard);
    txn.execute(
        "INSERT INTO cluster_record_objects (stream, stream_epoch, shard, first_offset,
             last_offset, records, bytes, first_arrival_ms, last_arrival_ms, object_key,
             lease_epoch, node_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &shard.stream,
            &epoch,
            &ordinal,
            &(o.first_offset as i64),
            &(o.last_offset as i64),
            &(o.records as i32),
            &(o.bytes as i64),
            &o.first_arrival_ms,
            &o.last_arrival_ms,
            &o.object_key,
            &o.lease_epoch,
            &o.node_id,
        ],
    )
    .await?;
    txn.execute(
        "INSERT INTO cluster_shard_ends (stream, stream_epoch, shard, end_offset)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (stream, stream_epoch, shard) DO UPDATE
             SET end_offset = GREATEST(cluster_shard_ends.end_offset, EXCLUDED.end_offset)",
        &[&shard.stream, &epoch, &ordinal, &(o.last_offset as i64 + 1)],
    )
    .await?;
    Ok(())
}

/// Up to `limit` objects holding records at or after `from`, in offset order.
pub async fn objects_from(
    db: &ClusterDb,
    shard: &ShardKey,
    from: u64,
    limit: i64,
) -> Result<Vec<ObjectRow>, ClusterError> {
    let (epoch, ordinal) = key_params(shard);
    let rows = db
        .client()
        .query(
            "SELECT first_offset, last_offset, records, object_key FROM cluster_record_objects
             WHERE stream = $1 AND stream_epoch = $2 AND shard = $3 AND last_offset >= $4
                 AND NOT deleting
             ORDER BY first_offset LIMIT $5",
            &[
                &shard.stream,
                &epoch,
                &ordinal,
                &(from.min(i64::MAX as u64) as i64),
                &limit,
            ],
        )
        .await?;
    Ok(rows.iter().map(object_row).collect())
}

/// One past the shard's last committed offset (0 when it has no records).
pub async fn end_offset(db: &ClusterDb, shard: &ShardKey) -> Result<u64, ClusterError> {
    let (epoch, ordinal) = key_params(shard);
    let row = db
        .client()
        .query_opt(
            "SELECT end_offset FROM cluster_shard_ends
             WHERE stream = $1 AND stream_epoch = $2 AND shard = $3",
            &[&shard.stream, &epoch, &ordinal],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0) as u64))
}

/// The first object with a record that arrived at or after `timestamp_ms`.
pub async fn object_at_time(
    db: &ClusterDb,
    shard: &ShardKey,
    timestamp_ms: i64,
) -> Result<Option<ObjectRow>, ClusterError> {
    let (epoch, ordinal) = key_params(shard);
    let row = db
        .client()
        .query_opt(
            "SELECT first_offset, last_offset, records, object_key FROM cluster_record_objects
             WHERE stream = $1 AND stream_epoch = $2 AND shard = $3 AND last_arrival_ms >= $4
                 AND NOT deleting
             ORDER BY first_offset LIMIT 1",
            &[&shard.stream, &epoch, &ordinal, &timestamp_ms],
        )
        .await?;
    Ok(row.as_ref().map(object_row))
}

/// Retention, step 1: marks the shard's objects whose records all arrived before
/// `cutoff_ms` (readers skip them from now on). Returns how many were marked.
pub async fn mark_expired(
    db: &ClusterDb,
    shard: &ShardKey,
    cutoff_ms: i64,
) -> Result<u64, ClusterError> {
    let (epoch, ordinal) = key_params(shard);
    Ok(db
        .client()
        .execute(
            "UPDATE cluster_record_objects SET deleting = true
             WHERE stream = $1 AND stream_epoch = $2 AND shard = $3 AND last_arrival_ms < $4
                 AND NOT deleting",
            &[&shard.stream, &epoch, &ordinal, &cutoff_ms],
        )
        .await?)
}

/// Marks every object of deleted streams (and of older incarnations of a name), and
/// forgets their shards' ends.
pub async fn mark_deleted_streams(db: &ClusterDb) -> Result<u64, ClusterError> {
    db.client()
        .execute(
            "DELETE FROM cluster_shard_ends e
             WHERE NOT EXISTS (
                 SELECT 1 FROM cluster_streams s
                 WHERE s.name = e.stream AND s.stream_epoch = e.stream_epoch AND NOT s.deleted)",
            &[],
        )
        .await?;
    Ok(db
        .client()
        .execute(
            "UPDATE cluster_record_objects o SET deleting = true
             WHERE NOT o.deleting AND NOT EXISTS (
                 SELECT 1 FROM cluster_streams s
                 WHERE s.name = o.stream AND s.stream_epoch = o.stream_epoch AND NOT s.deleted)",
            &[],
        )
        .await?)
}

/// Removes the leases of shards of streams the shared catalog no longer has, so that
/// they are neither held nor counted when leases are spread.
pub async fn forget_deleted_leases(db: &ClusterDb) -> Result<u64, ClusterError> {
    Ok(db
        .client()
        .execute(
            "DELETE FROM cluster_leases l
             WHERE l.resource LIKE 'shard:%' AND NOT EXISTS (
                 SELECT 1 FROM cluster_streams s
                 WHERE NOT s.deleted
                     AND s.name = split_part(substring(l.resource FROM 7), '/', 1))",
            &[],
        )
        .await?)
}

/// Up to `limit` marked objects (retention, step 2 lists what to delete).
pub async fn marked(db: &ClusterDb, limit: i64) -> Result<Vec<String>, ClusterError> {
    let rows = db
        .client()
        .query(
            "SELECT object_key FROM cluster_record_objects WHERE deleting LIMIT $1",
            &[&limit],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Retention, step 3: removes the rows of marked objects that have been deleted.
pub async fn remove_marked(db: &ClusterDb, keys: &[String]) -> Result<u64, ClusterError> {
    Ok(db
        .client()
        .execute(
            "DELETE FROM cluster_record_objects WHERE deleting AND object_key = ANY($1)",
            &[&keys],
        )
        .await?)
}

/// Which of `keys` an index row names (marked for deletion or not).
pub async fn indexed(
    db: &ClusterDb,
    keys: &[String],
) -> Result<std::collections::HashSet<String>, ClusterError> {
    Ok(db
        .client()
        .query(
            "SELECT object_key FROM cluster_record_objects WHERE object_key = ANY($1)",
            &[&keys],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The newest commit of one shard, for `freshet cluster status`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ShardCommit {
    /// The shard's lease resource (`shard:STREAM/shardId-…`).
    pub resource: String,
    /// The node that committed its newest object.
    pub node_id: String,
    /// Milliseconds from the arrival of that object's last record at its owner to the
    /// commit that acknowledged it: how far the shared index trails the writes.
    pub commit_lag_ms: f64,
    /// Seconds since that commit (on the database's clock).
    pub last_commit_secs: f64,
}

/// The newest commit of every shard of every live stream that has records.
pub async fn shard_commits(db: &ClusterDb) -> Result<Vec<ShardCommit>, ClusterError> {
    let rows = db
        .client()
        .query(
            "SELECT e.stream, e.shard, x.node_id, x.lag_ms, x.age_s
             FROM cluster_shard_ends e
             JOIN cluster_streams s
                 ON s.name = e.stream AND s.stream_epoch = e.stream_epoch AND NOT s.deleted
             CROSS JOIN LATERAL (
                 SELECT o.node_id,
                     (EXTRACT(EPOCH FROM o.committed_at) * 1000 - o.last_arrival_ms)::float8
                         AS lag_ms,
                     EXTRACT(EPOCH FROM clock_timestamp() - o.committed_at)::float8 AS age_s
                 FROM cluster_record_objects o
                 WHERE o.stream = e.stream AND o.stream_epoch = e.stream_epoch
                     AND o.shard = e.shard AND NOT o.deleting
                 ORDER BY o.last_offset DESC LIMIT 1) x
             ORDER BY e.stream, e.shard",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ShardCommit {
            resource: super::shard_resource(
                r.get(0),
                &crate::streams::model::shard_id(r.get::<_, i32>(1) as u32),
            ),
            node_id: r.get(2),
            commit_lag_ms: r.get::<_, f64>(3).max(0.0),
            last_commit_secs: r.get::<_, f64>(4).max(0.0),
        })
        .collect())
}
