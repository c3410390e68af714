//! The cluster's tables in PostgreSQL: versioned migrations, node membership
//! (register, heartbeat, leave), leases (acquire, renew, release) and the fencing check
//! that every future owner-only write commits through ([`ClusterDb::fenced`]).
//!
//! Every time is read from the database's clock (`clock_timestamp()`), never from the
//! node's, so clock skew between nodes cannot make one lease look free to one node
//! while another still holds it. Epochs only grow: a grant always sets
//! `epoch = epoch + 1`. The argument for why two owners can never both commit is in
//! `docs/cluster.md` ("Safety").
//!
//! Follows PostgreSQL 15's semantics of `INSERT ... ON CONFLICT DO UPDATE ... WHERE`
//! (the condition is re-checked on the newest row version after a row lock wait, under
//! READ COMMITTED) and `SELECT ... FOR UPDATE` (the row lock is held until the
//! transaction ends).

use std::time::Duration;

use tokio_postgres::{Client, NoTls, Transaction};

use super::ClusterError;

/// The migrations, in order; each is applied once, in one transaction with the bump of
/// `cluster_schema_version`.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_data.sql")),
    (3, include_str!("migrations/0003_retention.sql")),
];

/// The advisory lock that serialises migrations of nodes starting at once (an arbitrary
/// constant: "FRESHET" in ASCII).
const MIGRATION_LOCK: i64 = 0x0046_5245_5348_4554;

/// How long a connection attempt may take before start-up gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A node's row, as read with the database's clock.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeRow {
    pub node_id: String,
    pub advertise_url: String,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_secs: f64,
    /// Seconds since it (last) joined.
    pub up_secs: f64,
    /// Its lease time, in seconds.
    pub lease_secs: f64,
    /// Its heartbeat is younger than its lease time.
    pub live: bool,
}

/// A lease's row, as read with the database's clock.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LeaseRow {
    pub resource: String,
    /// `None` when released (or never granted).
    pub owner: Option<String>,
    pub epoch: i64,
    /// Seconds until it expires (negative once expired).
    pub expires_in_secs: f64,
}

impl LeaseRow {
    /// Held by `owner` and not expired.
    pub fn held(&self) -> bool {
        self.owner.is_some() && self.expires_in_secs > 0.0
    }
}

/// Nodes and leases read in one snapshot.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ClusterView {
    pub nodes: Vec<NodeRow>,
    pub leases: Vec<LeaseRow>,
}

/// One connection to the cluster database.
pub struct ClusterDb {
    client: Client,
    /// Drives the connection; ends (and the client's calls fail) when the server goes.
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for ClusterDb {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Seconds as PostgreSQL's `make_interval(secs => ...)` takes them.
fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl ClusterDb {
    /// Connects to `url` (`postgres://user:password@host:port/database` or the
    /// `key=value` form), without TLS.
    pub async fn connect(url: &str) -> Result<ClusterDb, ClusterError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| ClusterError::InvalidUrl(format!("{e}")))?;
        let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(NoTls))
            .await
            .map_err(|_| ClusterError::Unreachable("connection timed out".into()))?
            .map_err(|e| ClusterError::Unreachable(error_text(&e)))?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "cluster database connection ended");
            }
        });
        Ok(ClusterDb { client, connection })
    }

    /// The connection, for the data path's statements ([`super::index`]).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The connection has ended (the server went away or closed it).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Applies the migrations this database lacks; returns the schema version. Safe to
    /// run again and from several nodes at once: a transaction-scoped advisory lock
    /// serialises them, and each sees what the one before it applied.
    pub async fn migrate(&mut self) -> Result<i32, ClusterError> {
        let txn = self.client.transaction().await?;
        txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        txn.batch_execute(
            "CREATE TABLE IF NOT EXISTS cluster_schema_version (
                 version    integer     PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
             )",
        )
        .await?;
        let current: i32 = txn
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM cluster_schema_version",
                &[],
            )
            .await?
            .get(0);
        let newest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        if current > newest {
            return Err(ClusterError::SchemaTooNew {
                database: current,
                binary: newest,
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            txn.batch_execute(sql).await?;
            txn.execute(
                "INSERT INTO cluster_schema_version (version) VALUES ($1)",
                &[version],
            )
            .await?;
            tracing::info!(version, "cluster database migrated");
        }
        txn.commit().await?;
        Ok(newest)
    }

    /// Joins (or re-joins) as `node_id`: the row is created or reset, and leases a
    /// previous run under the same id still holds are released (this run does not
    /// know their epochs, so it must not write under them; releasing makes the next
    /// grant a new epoch).
    pub async fn register(
        &mut self,
        node_id: &str,
        advertise_url: &str,
        lease: Duration,
    ) -> Result<(), ClusterError> {
        let lease_ms = lease_ms(lease);
        let txn = self.client.transaction().await?;
        txn.execute(
            "INSERT INTO cluster_nodes (node_id, advertise_url, lease_ms)
             VALUES ($1, $2, $3)
             ON CONFLICT (node_id) DO UPDATE SET
                 advertise_url = EXCLUDED.advertise_url,
                 lease_ms = EXCLUDED.lease_ms,
                 started_at = clock_timestamp(),
                 heartbeat_at = clock_timestamp()",
            &[&node_id, &advertise_url, &lease_ms],
        )
        .await?;
        txn.execute(
            "UPDATE cluster_leases SET owner = NULL, expires_at = clock_timestamp()
             WHERE owner = $1",
            &[&node_id],
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// One heartbeat: the node's row is touched (re-created if it went missing) and
    /// every lease it holds that has not expired is extended to `lease` from now.
    /// Returns the leases held after it, with their epochs. An expired lease is not
    /// renewed even when nobody has taken it: it is acquired again, under a new epoch.
    pub async fn heartbeat(
        &mut self,
        node_id: &str,
        advertise_url: &str,
        lease: Duration,
    ) -> Result<Vec<(String, i64)>, ClusterError> {
        let lease_ms = lease_ms(lease);
        let txn = self.client.transaction().await?;
        txn.execute(
            "INSERT INTO cluster_nodes (node_id, advertise_url, lease_ms)
             VALUES ($1, $2, $3)
             ON CONFLICT (node_id) DO UPDATE SET
                 advertise_url = EXCLUDED.advertise_url,
                 lease_ms = EXCLUDED.lease_ms,
                 heartbeat_at = clock_timestamp()",
            &[&node_id, &advertise_url, &lease_ms],
        )
        .await?;
        let rows = txn
            .query(
                "UPDATE cluster_leases
                 SET expires_at = clock_timestamp() + make_interval(secs => $2)
                 WHERE owner = $1 AND expires_at > clock_timestamp()
                 RETURNING resource, epoch",
                &[&node_id, &secs(lease)],
            )
            .await?;
        txn.commit().await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Makes `resources` known to the cluster (unowned where new); returns how many
    /// were new.
    pub async fn add_resources(&self, resources: &[String]) -> Result<u64, ClusterError> {
        if resources.is_empty() {
            return Ok(0);
        }
        Ok(self
            .client
            .execute(
                "INSERT INTO cluster_leases (resource) SELECT unnest($1::text[])
                 ON CONFLICT (resource) DO NOTHING",
                &[&resources],
            )
            .await?)
    }

    /// Takes `resource` for `node_id` if it is free (never granted, released or
    /// expired), under the next epoch; `None` when someone holds it. A resource not
    /// known yet is added.
    pub async fn acquire(
        &self,
        resource: &str,
        node_id: &str,
        lease: Duration,
    ) -> Result<Option<i64>, ClusterError> {
        let row = self
            .client
            .query_opt(
                "INSERT INTO cluster_leases AS l (resource, owner, epoch, expires_at)
                 VALUES ($1, $2, 1, clock_timestamp() + make_interval(secs => $3))
                 ON CONFLICT (resource) DO UPDATE SET
                     owner = EXCLUDED.owner,
                     epoch = l.epoch + 1,
                     expires_at = EXCLUDED.expires_at
                 WHERE l.owner IS NULL OR l.expires_at <= clock_timestamp()
                 RETURNING epoch",
                &[&resource, &node_id, &secs(lease)],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Gives `resource` up if `node_id` still holds it under `epoch`; whether it did.
    pub async fn release(
        &self,
        resource: &str,
        node_id: &str,
        epoch: i64,
    ) -> Result<bool, ClusterError> {
        let n = self
            .client
            .execute(
                "UPDATE cluster_leases SET owner = NULL, expires_at = clock_timestamp()
                 WHERE resource = $1 AND owner = $2 AND epoch = $3",
                &[&resource, &node_id, &epoch],
            )
            .await?;
        Ok(n == 1)
    }

    /// Leaves the cluster cleanly: every lease of `node_id` is released and its row
    /// removed. Returns how many leases were released.
    pub async fn leave(&mut self, node_id: &str) -> Result<u64, ClusterError> {
        let txn = self.client.transaction().await?;
        let released = txn
            .execute(
                "UPDATE cluster_leases SET owner = NULL, expires_at = clock_timestamp()
                 WHERE owner = $1",
                &[&node_id],
            )
            .await?;
        txn.execute("DELETE FROM cluster_nodes WHERE node_id = $1", &[&node_id])
            .await?;
        txn.commit().await?;
        Ok(released)
    }

    /// Nodes and leases, in one REPEATABLE READ snapshot, with ages from the
    /// database's clock.
    pub async fn view(&mut self) -> Result<ClusterView, ClusterError> {
        let txn = self
            .client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let nodes = txn
            .query(
                "SELECT node_id, advertise_url,
                     EXTRACT(EPOCH FROM clock_timestamp() - heartbeat_at)::float8,
                     EXTRACT(EPOCH FROM clock_timestamp() - started_at)::float8,
                     lease_ms
                 FROM cluster_nodes ORDER BY node_id",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                let age: f64 = r.get(2);
                let lease_ms: i32 = r.get(4);
                let lease_secs = f64::from(lease_ms) / 1000.0;
                NodeRow {
                    node_id: r.get(0),
                    advertise_url: r.get(1),
                    heartbeat_age_secs: age,
                    up_secs: r.get(3),
                    lease_secs,
                    live: age < lease_secs,
                }
            })
            .collect();
        let leases = txn
            .query(
                "SELECT resource, owner, epoch,
                     EXTRACT(EPOCH FROM expires_at - clock_timestamp())::float8
                 FROM cluster_leases ORDER BY resource",
                &[],
            )
            .await?
            .iter()
            .map(|r| LeaseRow {
                resource: r.get(0),
                owner: r.get(1),
                epoch: r.get(2),
                expires_in_secs: r.get(3),
            })
            .collect();
        txn.commit().await?;
        Ok(ClusterView { nodes, leases })
    }

    /// The fencing check: begins a transaction that holds `resource`'s lease row locked
    /// (`SELECT ... FOR UPDATE`) after checking that `node_id` still owns it under
    /// `epoch` and that it has not expired. The caller writes through
    /// [`Fenced::transaction`] and commits with [`Fenced::commit`]; until then no other
    /// node can be granted the resource (a grant updates the same row, so it waits for
    /// the lock), and once another node has been granted it this check refuses
    /// ([`ClusterError::Fenced`]). So a paused old owner can never commit after losing
    /// its lease.
    pub async fn fenced(
        &mut self,
        resource: &str,
        node_id: &str,
        epoch: i64,
    ) -> Result<Fenced<'_>, ClusterError> {
        let txn = self.client.transaction().await?;
        let row = txn
            .query_opt(
                "SELECT epoch FROM cluster_leases
                 WHERE resource = $1 AND owner = $2 AND epoch = $3
                     AND expires_at > clock_timestamp()
                 FOR UPDATE",
                &[&resource, &node_id, &epoch],
            )
            .await?;
        if row.is_none() {
            // Rolled back on drop.
            return Err(ClusterError::Fenced {
                resource: resource.to_string(),
                epoch,
            });
        }
        Ok(Fenced { txn })
    }
}

/// A transaction that holds a lease under its epoch (see [`ClusterDb::fenced`]).
/// Dropped without [`Fenced::commit`], it rolls back.
pub struct Fenced<'a> {
    txn: Transaction<'a>,
}

impl<'a> Fenced<'a> {
    /// The transaction to write the owner's rows through.
    pub fn transaction(&self) -> &Transaction<'a> {
        &self.txn
    }

    /// Commits the writes. Only once this returns `Ok` may the write be acknowledged.
    pub async fn commit(self) -> Result<(), ClusterError> {
        Ok(self.txn.commit().await?)
    }
}

fn lease_ms(lease: Duration) -> i32 {
    i32::try_from(lease.as_millis()).unwrap_or(i32::MAX).max(1)
}

/// A driver error's text with its cause (tokio-postgres puts the server's message or
/// the I/O error in the source).
pub(crate) fn error_text(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}
