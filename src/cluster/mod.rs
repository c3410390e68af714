//! Scale-out foundation: several Freshet nodes sharing one PostgreSQL database for
//! membership and ownership. Each shard (`shard:<stream>/<shard id>`) and each video
//! stream (`video:<stream>`) is owned by one node at a time through a lease with an
//! epoch; leases are renewed on a heartbeat, expire on the database's clock, move to
//! survivors when a node stops heartbeating, and are spread evenly over live nodes.
//! Writes that only the owner may make commit through the fencing check
//! ([`db::ClusterDb::fenced`]), which refuses an owner whose epoch is no longer current.
//!
//! Knows nothing of HTTP or of the storage engine: the server hands [`node::ClusterNode`]
//! a function listing the resources it knows. The design, its safety argument and its
//! costs are in `docs/cluster.md`; migrations are in `src/cluster/migrations/`.

pub mod balance;
pub mod db;
pub mod index;
pub mod node;
pub mod objects;
pub mod records;

use crate::error::{Classified, ErrorKind};

/// The lease of one shard of a data stream.
pub fn shard_resource(stream: &str, shard_id: &str) -> String {
    format!("shard:{stream}/{shard_id}")
}

/// The lease of one video stream.
pub fn video_resource(stream: &str) -> String {
    format!("video:{stream}")
}

/// What can go wrong in the cluster layer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The `--cluster` value is not a PostgreSQL connection string.
    #[error("invalid cluster database URL: {0}")]
    InvalidUrl(String),
    /// The database could not be reached.
    #[error("cannot reach the cluster database: {0}")]
    Unreachable(String),
    /// A statement failed (the connection broke, the server refused, ...).
    #[error("cluster database error: {0}")]
    Database(String),
    /// The database was migrated by a newer Freshet.
    #[error(
        "the cluster database has schema version {database}, newer than this binary's {binary}: upgrade freshet"
    )]
    SchemaTooNew { database: i32, binary: i32 },
    /// The lease is no longer held under this epoch: another node may own the resource.
    #[error("lease of {resource} is no longer held under epoch {epoch}")]
    Fenced { resource: String, epoch: i64 },
}

impl From<tokio_postgres::Error> for ClusterError {
    fn from(e: tokio_postgres::Error) -> Self {
        ClusterError::Database(db::error_text(&e))
    }
}

impl Classified for ClusterError {
    fn kind(&self) -> ErrorKind {
        match self {
            // Retryable: the next owner (or the database, back) will take the write.
            ClusterError::Unreachable(_)
            | ClusterError::Database(_)
            | ClusterError::Fenced { .. } => ErrorKind::Unavailable,
            ClusterError::InvalidUrl(_) | ClusterError::SchemaTooNew { .. } => ErrorKind::Internal,
        }
    }

    fn aws_type(&self) -> &'static str {
        match self.kind() {
            ErrorKind::Unavailable => "ServiceUnavailable",
            _ => "InternalFailure",
        }
    }
}
