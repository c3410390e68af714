//! One node's membership: joins the cluster at start (refusing to start when the
//! database cannot be reached), then on every heartbeat renews its leases, makes the
//! resources it knows known to the cluster, and rebalances ([`super::balance`]). When the
//! database goes away it logs, keeps retrying, and never crashes; leases it could not
//! renew in time are dropped from its own view when their lease time has passed, so
//! it stops claiming them no later than the database lets another node take them. On
//! clean shutdown it releases every lease and leaves.
//!
//! The leases it holds and their epochs are readable at any time
//! ([`ClusterNode::epoch_of`]), for the writers that will fence on them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::ClusterError;
use super::balance;
use super::db::ClusterDb;

/// Lists the resources this node knows (its data streams' open shards, its video
/// streams), named with [`super::shard_resource`] and [`super::video_resource`].
pub type ResourceLister = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// PostgreSQL connection string.
    pub url: String,
    pub node_id: String,
    /// The URL other nodes and clients reach this node at.
    pub advertise_url: String,
    /// How long a lease lasts without renewal (and a node counts as live without a
    /// heartbeat).
    pub lease: Duration,
    /// How often the node heartbeats, renews and rebalances; well under `lease`.
    pub heartbeat: Duration,
}

/// A lease this node holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
    /// When, on this node's monotonic clock, the lease has certainly expired in the
    /// database: the lease time after the start of the call that last granted or
    /// renewed it (the database's expiry is the lease time after a later instant).
    lost_by: Instant,
}

/// Who owns what, as this node last read it: the leases it holds (with their epochs)
/// and, for the others, the owner's advertised URL. Cheap to clone; shared with the
/// data path.
#[derive(Clone)]
pub struct Leases {
    node_id: String,
    held: Arc<RwLock<BTreeMap<String, Held>>>,
    /// Resource → advertised URL of the node that held it at the last heartbeat.
    routes: Arc<RwLock<BTreeMap<String, String>>>,
}

impl Leases {
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The epoch under which this node holds `resource`, if it does.
    pub fn epoch_of(&self, resource: &str) -> Option<i64> {
        let now = Instant::now();
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(resource)
            .filter(|h| h.lost_by > now)
            .map(|h| h.epoch)
    }

    /// The advertised URL of the node that held `resource` at the last heartbeat.
    pub fn owner_url(&self, resource: &str) -> Option<String> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(resource)
            .cloned()
    }
}

/// A running node (see the module doc).
pub struct ClusterNode {
    options: ClusterOptions,
    held: Arc<RwLock<BTreeMap<String, Held>>>,
    routes: Arc<RwLock<BTreeMap<String, String>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Option<ClusterDb>>,
}

impl ClusterNode {
    /// Connects, migrates, joins, and starts heartbeating. Fails when the database
    /// cannot be reached or migrated.
    pub async fn start(
        options: ClusterOptions,
        resources: ResourceLister,
    ) -> Result<ClusterNode, ClusterError> {
        let mut db = ClusterDb::connect(&options.url).await?;
        db.migrate().await?;
        db.register(&options.node_id, &options.advertise_url, options.lease)
            .await?;
        tracing::info!(
            node_id = %options.node_id,
            advertise_url = %options.advertise_url,
            lease = ?options.lease,
            heartbeat = ?options.heartbeat,
            "joined the cluster"
        );
        let held = Arc::new(RwLock::new(BTreeMap::new()));
        let routes = Arc::new(RwLock::new(BTreeMap::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let worker = Worker {
            options: options.clone(),
            resources,
            held: held.clone(),
            routes: routes.clone(),
            registered: BTreeSet::new(),
            db: Some(db),
            failing_since: None,
        };
        let task = tokio::spawn(worker.run(stopped));
        Ok(ClusterNode {
            options,
            held,
            routes,
            stop,
            task,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.options.node_id
    }

    /// A handle on this node's view of the leases, for the data path.
    pub fn leases(&self) -> Leases {
        Leases {
            node_id: self.options.node_id.clone(),
            held: self.held.clone(),
            routes: self.routes.clone(),
        }
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The epoch under which this node holds `resource`, if it does.
    pub fn epoch_of(&self, resource: &str) -> Option<i64> {
        self.leases().epoch_of(resource)
    }

    /// Every lease this node holds, with its epoch, by resource.
    pub fn held(&self) -> Vec<(String, i64)> {
        let now = Instant::now();
        self.held
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, h)| h.lost_by > now)
            .map(|(r, h)| (r.clone(), h.epoch))
            .collect()
    }

    /// Stops heartbeating, releases every lease and leaves the cluster (best effort:
    /// when the database is away the leases simply expire).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let db = self.task.await.ok().flatten();
        self.held.write().unwrap_or_else(|e| e.into_inner()).clear();
        let db = match db {
            Some(db) if !db.is_closed() => Some(db),
            _ => ClusterDb::connect(&self.options.url).await.ok(),
        };
        let Some(mut db) = db else {
            tracing::warn!("cluster database unreachable at shutdown: leases will expire");
            return;
        };
        match tokio::time::timeout(Duration::from_secs(5), db.leave(&self.options.node_id)).await {
            Ok(Ok(n)) => tracing::info!(leases_released = n, "left the cluster"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not leave the cluster cleanly"),
            Err(_) => tracing::warn!("leaving the cluster timed out: leases will expire"),
        }
    }

    /// Stops heartbeating at once without releasing anything, as a crashed or paused
    /// node would (its leases expire after the lease time).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// The heartbeat loop's state.
struct Worker {
    options: ClusterOptions,
    resources: ResourceLister,
    held: Arc<RwLock<BTreeMap<String, Held>>>,
    routes: Arc<RwLock<BTreeMap<String, String>>>,
    /// Resources the cluster's table held at the last heartbeat (or this node added
    /// since).
    registered: BTreeSet<String>,
    /// `None` after the connection broke; reconnected at the next heartbeat.
    db: Option<ClusterDb>,
    /// When the database first failed in the current run of failures (for the logs).
    failing_since: Option<Instant>,
}

impl Worker {
    async fn run(mut self, mut stopped: tokio::sync::watch::Receiver<bool>) -> Option<ClusterDb> {
        let mut tick = tokio::time::interval(self.options.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.changed() => return self.db,
            }
            // A round never outlasts the lease: a hung database must not keep this
            // node believing in leases the database has let go.
            let round = tokio::time::timeout(self.options.lease, self.round()).await;
            let result = round
                .unwrap_or_else(|_| Err(ClusterError::Unreachable("heartbeat timed out".into())));
            match result {
                Ok(()) => {
                    if let Some(since) = self.failing_since.take() {
                        tracing::info!(
                            after = ?since.elapsed(),
                            "cluster database reachable again"
                        );
                    }
                }
                Err(e) => {
                    self.db = None;
                    let first = self.failing_since.is_none();
                    let since = *self.failing_since.get_or_insert_with(Instant::now);
                    if first {
                        tracing::warn!(error = %e, "cluster heartbeat failed; retrying");
                    } else {
                        tracing::debug!(error = %e, failing_for = ?since.elapsed(), "cluster heartbeat failed");
                    }
                }
            }
            self.drop_lost();
        }
    }

    /// Forgets leases whose lease time has passed without a renewal.
    fn drop_lost(&self) {
        let now = Instant::now();
        let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
        let lost: Vec<String> = held
            .iter()
            .filter(|(_, h)| h.lost_by <= now)
            .map(|(r, _)| r.clone())
            .collect();
        for resource in lost {
            held.remove(&resource);
            tracing::warn!(%resource, "lease lost: not renewed within the lease time");
        }
    }

    /// One heartbeat: renew, register resources, rebalance.
    async fn round(&mut self) -> Result<(), ClusterError> {
        if self.db.as_ref().is_none_or(|db| db.is_closed()) {
            self.db = Some(ClusterDb::connect(&self.options.url).await?);
            self.registered.clear();
        }
        let Some(db) = self.db.as_mut() else {
            return Ok(());
        };
        let opts = &self.options;
        let started = Instant::now();
        let renewed = db
            .heartbeat(&opts.node_id, &opts.advertise_url, opts.lease)
            .await?;
        {
            let lost_by = started + opts.lease;
            let mut held = self.held.write().unwrap_or_else(|e| e.into_inner());
            let renewed: BTreeMap<String, Held> = renewed
                .into_iter()
                .map(|(r, epoch)| (r, Held { epoch, lost_by }))
                .collect();
            for resource in held.keys().filter(|r| !renewed.contains_key(*r)) {
                tracing::warn!(%resource, "lease lost: expired before it was renewed");
            }
            *held = renewed;
        }

        let known: BTreeSet<String> = (self.resources)().into_iter().collect();
        let new: Vec<String> = known.difference(&self.registered).cloned().collect();
        if !new.is_empty() {
            db.add_resources(&new).await?;
            self.registered.extend(new);
        }

        let view = db.view().await?;
        // What the table holds: a resource removed from it (its stream deleted) and
        // known again (the name re-created) is added again at the next heartbeat.
        self.registered = view.leases.iter().map(|l| l.resource.clone()).collect();
        {
            let urls: BTreeMap<&str, &str> = view
                .nodes
                .iter()
                .map(|n| (n.node_id.as_str(), n.advertise_url.as_str()))
                .collect();
            let routes: BTreeMap<String, String> = view
                .leases
                .iter()
                .filter(|l| l.held())
                .filter_map(|l| {
                    let url = urls.get(l.owner.as_deref()?)?;
                    Some((l.resource.clone(), url.to_string()))
                })
                .collect();
            *self.routes.write().unwrap_or_else(|e| e.into_inner()) = routes;
        }
        let live = balance::live_nodes(&view.nodes, &opts.node_id);
        let plan = balance::plan(&opts.node_id, &live, &view.leases);
        for (resource, epoch) in &plan.release {
            // Forgotten before the release commits: a writer must not use it after.
            self.held
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(resource);
            if db.release(resource, &opts.node_id, *epoch).await? {
                tracing::info!(%resource, epoch, "lease released for rebalancing");
            }
        }
        for resource in &plan.acquire {
            let started = Instant::now();
            if let Some(epoch) = db.acquire(resource, &opts.node_id, opts.lease).await? {
                tracing::info!(%resource, epoch, "lease acquired");
                self.held.write().unwrap_or_else(|e| e.into_inner()).insert(
                    resource.clone(),
                    Held {
                        epoch,
                        lost_by: started + opts.lease,
                    },
                );
            }
        }
        Ok(())
    }
}
