//! Wiring: opens the store, the catalog and the services, serves HTTP, runs
//! background tasks (retention) and shuts down cleanly on SIGTERM / Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::{self, AppState};
use crate::clock;
use crate::config::ServeConfig;
use crate::store::catalog::RedbCatalog;
use crate::store::{Durability, RollPolicy, Store, StoreConfig};
use crate::streams::{ServiceConfig, StreamService};
use crate::video::{VideoConfig, VideoService};

/// Default group-commit gathering window: none. A 1 ms window raised throughput by a
/// fifth in 8-second runs but made no difference in 20-second runs (docs/decisions.md),
/// so the lower latency wins by default.
const DEFAULT_COMMIT_DELAY_US: u64 = 0;

/// How long shutdown waits for open requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long an analytics application waits for records that may still arrive with an
/// earlier arrival time before its SQL clock passes a moment (closing windows there).
const ANALYTICS_WATERMARK_DELAY_MS: u64 = 200;
/// How often a running analytics application checkpoints its state.
const ANALYTICS_CHECKPOINT_MS: u64 = 1_000;
/// How long shutdown waits for delivery streams to deliver their partial batches.
const DELIVERY_FLUSH_GRACE: Duration = Duration::from_secs(20);

/// What `--delivery-s3 s3` needs; without the `s3` cargo feature there is no S3
/// client, and the option is refused at start-up.
#[cfg(feature = "s3")]
type S3Settings = crate::delivery::s3::S3Settings;
#[cfg(not(feature = "s3"))]
type S3Settings = std::convert::Infallible;

/// The S3 settings from the environment, checked before anything is opened.
#[cfg(feature = "s3")]
fn s3_settings(config: &ServeConfig) -> anyhow::Result<S3Settings> {
    crate::delivery::s3::S3Settings::from_env(
        |name| std::env::var(name).ok(),
        config
            .region
            .as_deref()
            .unwrap_or(&ServiceConfig::default().region),
    )
    .map_err(|e| anyhow::anyhow!(e))
}

#[cfg(not(feature = "s3"))]
fn s3_settings(_config: &ServeConfig) -> anyhow::Result<S3Settings> {
    anyhow::bail!(
        "this freshet was built without S3 support (the `s3` cargo feature, on by default): \
         use --delivery-s3 local"
    )
}

#[cfg(feature = "s3")]
fn s3_destination(settings: S3Settings) -> Arc<dyn crate::delivery::destination::Destination> {
    tracing::info!(
        endpoint = settings.endpoint.as_deref().unwrap_or("AWS"),
        region = settings.region,
        "delivery streams write to S3"
    );
    Arc::new(crate::delivery::s3::S3::new(&settings))
}

#[cfg(not(feature = "s3"))]
fn s3_destination(settings: S3Settings) -> Arc<dyn crate::delivery::destination::Destination> {
    match settings {}
}

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let advertise_url = config
        .advertise_url
        .as_deref()
        .map(api::endpoint::parse_advertise_url)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))?;
    // Checked before anything is opened, so a missing credential fails start-up at once.
    let lambda_urls = config
        .delivery
        .lambda_urls()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let s3_settings = match config.delivery.s3 {
        Some(crate::config::DeliveryS3::S3) => Some(s3_settings(&config)?),
        _ => None,
    };
    let cluster_options = config.cluster.options(config.advertise_url.as_deref())?;
    if let Some(endpoint) = config.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        let otlp = crate::telemetry::OtlpConfig {
            endpoint: endpoint.to_string(),
            service_name: config
                .otlp_service_name
                .clone()
                .unwrap_or_else(|| "freshet".to_string()),
        };
        let url = otlp.traces_url();
        crate::telemetry::start(otlp)?;
        tracing::info!(url, "exporting request spans over OTLP/HTTP");
    }
    let data_path = config.cluster.data_path()?;
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let clock = clock::system();
    let durability = config.durability.unwrap_or(Durability::Fsync);
    if durability == Durability::UnsafeNoFsync {
        tracing::warn!(
            "durability is unsafe-no-fsync: acknowledged writes can be lost on power failure"
        );
    }
    let store = Store::open(
        &data_dir,
        StoreConfig {
            durability,
            roll: RollPolicy {
                max_segment_bytes: config.segment_mb.unwrap_or(64).max(1) * 1024 * 1024,
                max_segment_age_ms: 3_600_000,
            },
            commit_delay: Duration::from_micros(
                config.commit_delay_us.unwrap_or(DEFAULT_COMMIT_DELAY_US),
            ),
            cache_window: match config.cache_window_mb {
                Some(0) => u64::MAX,
                Some(mb) => mb.saturating_mul(1024 * 1024),
                None => crate::store::DEFAULT_CACHE_WINDOW,
            },
            write_io: config.write_io.unwrap_or(crate::store::WriteIo::Direct),
            ..StoreConfig::default()
        },
        clock.clone(),
    )?;
    let catalog = {
        let path = data_dir.join("catalog.redb");
        tokio::task::spawn_blocking(move || RedbCatalog::open(&path)).await??
    };
    let defaults = ServiceConfig::default();
    let service_config = ServiceConfig {
        account_id: config
            .account_id
            .clone()
            .unwrap_or(defaults.account_id.clone()),
        region: config.region.clone().unwrap_or(defaults.region.clone()),
        state_delay_ms: config.state_delay_ms.unwrap_or(defaults.state_delay_ms),
        iterator_ttl_ms: config
            .iterator_ttl_secs
            .map(|s| s as i64 * 1000)
            .unwrap_or(defaults.iterator_ttl_ms),
        shard_limit: config.shard_limit.unwrap_or(defaults.shard_limit),
        shard_throughput_limits: config.shard_throughput_limits,
        ..defaults
    };
    let service_account = service_config.account_id.clone();
    let service_region = service_config.region.clone();
    let catalog: Arc<dyn crate::store::catalog::Catalog> = Arc::new(catalog);
    let video = VideoService::open(
        VideoConfig {
            account_id: service_config.account_id.clone(),
            region: service_config.region.clone(),
            state_delay_ms: service_config.state_delay_ms,
            ..VideoConfig::default()
        },
        clock.clone(),
        catalog.clone(),
        store.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot open video streams: {e}"))?;
    let local_buckets = s3_settings.is_none().then(|| data_dir.join("buckets"));
    let buckets: Arc<dyn crate::delivery::destination::Destination> = match s3_settings {
        Some(settings) => s3_destination(settings),
        None => Arc::new(
            crate::delivery::destination::LocalDirectory::open(&data_dir).with_context(|| {
                format!(
                    "cannot open the delivery directory in {}",
                    data_dir.display()
                )
            })?,
        ),
    };
    let delivery_config = crate::delivery::DeliveryConfig {
        account_id: service_config.account_id.clone(),
        region: service_config.region.clone(),
        state_delay_ms: service_config.state_delay_ms,
        lambda_urls,
    };
    let delivery_config_delay = service_config.state_delay_ms;
    let streams = StreamService::open(
        service_config,
        clock.clone(),
        store.clone(),
        catalog.clone(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot open streams: {e}"))?;
    let delivery = crate::delivery::DeliveryService::open(
        delivery_config,
        clock.clone(),
        store.clone(),
        catalog.clone(),
        buckets,
        Some(streams.clone()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot open delivery streams: {e}"))?;
    let catalog_for_feeds = catalog.clone();
    let analytics_catalog = catalog.clone();
    let leases_catalog = catalog.clone();
    let analytics_clock = clock.clone();
    let state_delay_ms = delivery_config_delay;
    let clock_for_feeds = clock.clone();

    let retention_every = Duration::from_secs(config.retention_check_secs.unwrap_or(60).max(1));
    let sweeper = {
        let streams = streams.clone();
        let video = video.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(retention_every);
            loop {
                tick.tick().await;
                match streams.enforce_retention().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(segments = n, "retention removed expired record segments")
                    }
                    Err(e) => tracing::error!(error = %e, "retention pass failed"),
                }
                match video.enforce_retention().await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(segments = n, "retention removed expired fragment segments")
                    }
                    Err(e) => tracing::error!(error = %e, "video retention pass failed"),
                }
            }
        })
    };

    // Scale-out: join the cluster and lease the shards and video streams this node
    // knows (docs/cluster.md). Off unless --cluster is given.
    let mut shared_log = None;
    let cluster = match cluster_options {
        Some(options) => {
            let lister = cluster_resources(streams.clone(), video.clone());
            let url = options.url.clone();
            let node = crate::cluster::node::ClusterNode::start(options, lister)
                .await
                .map_err(|e| anyhow::anyhow!("cannot join the cluster at {}: {e}", redact(&url)))?;
            // With an object store, every node serves every data stream.
            if let Some((store, batch)) = data_path {
                let objects = crate::cluster::objects::open(&store, &service_region)
                    .map_err(|e| anyhow::anyhow!(e))?;
                let log = crate::cluster::records::SharedLog::start(
                    crate::cluster::records::SharedLogOptions {
                        url: url.clone(),
                        batch,
                        owner_wait: node.options().lease + 2 * node.options().heartbeat,
                        orphan_age: crate::cluster::records::orphan_age(node.options().lease),
                    },
                    node.leases(),
                    objects,
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot start the shared data path: {e}"))?;
                streams.attach_shared(
                    Arc::new(log.clone()),
                    log.iterator_key(),
                    node.options().heartbeat,
                );
                streams
                    .sync_shared()
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot read the shared stream catalog: {e}"))?;
                shared_log = Some(log);
            } else {
                tracing::warn!(
                    "--cluster without --object-store: each node serves only the streams it \
                     holds itself (docs/cluster.md)"
                );
            }
            Some(node)
        }
        None => None,
    };

    let feeds = crate::ingest::FeedManager::open(
        video.clone(),
        catalog_for_feeds,
        clock_for_feeds,
        crate::ingest::IngestOptions {
            auto_create: !config.ingest_no_auto_create,
            retention_hours: config.ingest_retention_hours.unwrap_or(24),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot open camera feeds: {e}"))?;
    for entry in &config.feeds {
        let feed = crate::ingest::feed_from_entry(entry)
            .map_err(|e| anyhow::anyhow!("config file feed for {}: {e}", entry.stream))?;
        feeds
            .put(feed)
            .await
            .map_err(|e| anyhow::anyhow!("config file feed for {}: {e}", entry.stream))?;
    }
    let keyring = config.auth.keyring()?;
    // TLS: the pair is loaded (and checked) before anything listens.
    let tls = match config.tls.files()? {
        Some(files) => {
            let reloader =
                tokio::task::spawn_blocking(move || crate::tls::CertReloader::new(files)).await??;
            let resolver = reloader.resolver();
            Some((resolver, tokio::spawn(reloader.watch())))
        }
        None => None,
    };
    let tls_acceptor = |alpn: &[&[u8]]| -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
        match &tls {
            Some((resolver, _)) => Ok(Some(tokio_rustls::TlsAcceptor::from(
                crate::tls::server_config(resolver.clone(), alpn)?,
            ))),
            None => Ok(None),
        }
    };
    let rtsps = match config.rtsps_listen {
        Some(addr) => {
            let acceptor = tls_acceptor(&[])?.ok_or_else(|| {
                anyhow::anyhow!(
                    "--rtsps-listen needs a TLS certificate and key (--tls-cert, --tls-key)"
                )
            })?;
            let listener = bind_rtsp(addr, "rtsps", keyring.is_some()).await?;
            Some(tokio::spawn(crate::ingest::rtsp_server::serve_tls(
                listener,
                feeds.clone(),
                acceptor,
                keyring.clone(),
            )))
        }
        None => None,
    };
    let rtsp = match config.rtsp_listen {
        Some(addr) => {
            let listener = bind_rtsp(addr, "rtsp", keyring.is_some()).await?;
            Some(tokio::spawn(crate::ingest::rtsp_server::serve(
                listener,
                feeds.clone(),
                keyring.clone(),
            )))
        }
        None => None,
    };

    let subscription_lifetime = config
        .subscription_lifetime_secs
        .map(std::time::Duration::from_secs)
        .unwrap_or(crate::consumers::DEFAULT_LIFETIME);
    let mut state = AppState::new(streams, video);
    state.fanout = crate::consumers::FanOut::new(state.streams.clone(), subscription_lifetime);
    let fanout = state.fanout.clone();
    state.feeds = Some(feeds.clone());
    state.delivery = Some(delivery.clone());
    let analytics = crate::analytics::AnalyticsService::open(
        crate::analytics::AnalyticsConfig {
            account_id: service_account.clone(),
            region: service_region.clone(),
            state_delay_ms,
            watermark_delay_ms: ANALYTICS_WATERMARK_DELAY_MS,
            checkpoint_interval_ms: ANALYTICS_CHECKPOINT_MS,
            buckets_dir: local_buckets,
        },
        analytics_clock,
        analytics_catalog,
        state.streams.clone(),
        Some(delivery.clone()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot open analytics applications: {e}"))?;
    state.analytics = Some(analytics.clone());
    state.shared_log = shared_log;
    state.leases = Some(crate::leases::LeaseService::new(
        crate::leases::LeaseConfig {
            account_id: service_account.clone(),
            region: service_region.clone(),
            state_delay_ms,
        },
        leases_catalog,
    ));
    state.media_budget =
        api::MediaBudget::new(config.media_memory_mb.unwrap_or(1024).max(1) as usize * 1024 * 1024);
    state.send_budget =
        api::SendBudget::new(config.send_memory_mb.unwrap_or(256).max(1) as usize * 1024 * 1024);
    state.advertise_url = advertise_url.map(Arc::from);
    let state_auth = keyring.map(|keys| {
        Arc::new(api::auth::EdgeAuth {
            keys,
            account_id: service_account.clone(),
            region: service_region.clone(),
        })
    });
    state.auth = state_auth.clone();
    state.cors = Arc::new(
        api::cors::CorsPolicy::new(
            config.cors.origins.clone(),
            config.cors.playback_origin.clone(),
            // With authentication a signature grants access, so every origin may call
            // (as on AWS); without, only the configured origins may drive the APIs.
            state.auth.is_some(),
        )
        .map_err(|e| anyhow::anyhow!(e))?,
    );
    let fd_limit = api::listener::raise_fd_limit();
    let mut listener_limits = api::listener::ListenerLimits::for_fd_limit(fd_limit);
    if let Some(n) = config.max_connections {
        listener_limits.max_connections = n.max(1);
    }
    if let Some(n) = config.max_connections_per_ip {
        listener_limits.max_connections_per_ip = n.max(1);
    }
    if let Some(secs) = config.http_header_timeout_secs {
        listener_limits.header_read_timeout = Duration::from_secs(secs.max(1));
    }
    tracing::info!(
        fd_limit,
        max_connections = listener_limits.max_connections,
        max_connections_per_ip = listener_limits.max_connections_per_ip,
        header_read_timeout = ?listener_limits.header_read_timeout,
        "HTTP limits"
    );
    let gauge = api::listener::ConnectionGauge::new(listener_limits.max_connections);
    state.connections = Some(gauge.clone());
    let app = api::router(state);
    let addr = config.listen();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener.local_addr()?;
    let http_tls = tls_acceptor(crate::tls::HTTP_ALPN)?;
    let tls_on = http_tls.is_some();
    tracing::info!(data_dir = %data_dir.display(), ?durability, tls = tls_on, "freshet listening on {local}");
    match &state_auth {
        Some(auth) => tracing::info!(keys = auth.keys.len(), "authentication: SigV4"),
        None => tracing::warn!(
            "authentication: none. Every request is accepted: anyone who can reach {local} can \
             read, write and delete every stream (docs/security.md)"
        ),
    }
    // On SIGTERM/SIGINT stop accepting, let in-flight requests finish, but do not wait
    // more than SHUTDOWN_GRACE for long-lived ones (followed reads); fan-out
    // subscriptions end at once.
    let shutdown = async move {
        shutdown_signal().await;
        fanout.close();
    };
    api::listener::serve(
        listener,
        app,
        listener_limits,
        gauge,
        http_tls,
        shutdown,
        SHUTDOWN_GRACE,
    )
    .await?;
    // Leases go first, so that other nodes take over while this one winds down.
    if let Some(cluster) = cluster {
        cluster.shutdown().await;
    }
    sweeper.abort();
    if let Some(rtsp) = rtsp {
        rtsp.abort();
    }
    if let Some(rtsps) = rtsps {
        rtsps.abort();
    }
    if let Some((_, watcher)) = tls {
        watcher.abort();
    }
    // Analytics applications checkpoint before delivery streams flush, so that their
    // last rows are among what is flushed.
    analytics.shutdown().await;
    // Delivery streams deliver every partial batch before the process ends.
    if tokio::time::timeout(DELIVERY_FLUSH_GRACE, delivery.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "delivery streams did not flush in time; they resume from their checkpoints"
        );
    }
    // Feeds store their last fragment before the process ends.
    let _ = tokio::time::timeout(Duration::from_secs(3), feeds.stop_all()).await;
    // Every log's summary recorded, so the next start opens logs without reading
    // their active segments through.
    let closed = tokio::task::spawn_blocking(move || store.close_clean())
        .await
        .unwrap_or(0);
    tracing::info!(logs_closed = closed, "freshet stopped");
    Ok(())
}

/// The resources a cluster node leases: the open shards of its data streams and its
/// video streams.
fn cluster_resources(
    streams: Arc<StreamService>,
    video: Arc<VideoService>,
) -> crate::cluster::node::ResourceLister {
    Arc::new(move || {
        let mut out = Vec::new();
        for name in streams.stream_names() {
            let stream = crate::streams::StreamRef::name(name.clone());
            if let Ok(description) = streams.describe_stream(&stream, Some(usize::MAX), None) {
                out.extend(
                    description
                        .shards
                        .iter()
                        .filter(|s| s.sequence_number_range.ending_sequence_number.is_none())
                        .map(|s| crate::cluster::shard_resource(&name, &s.shard_id)),
                );
            }
        }
        let (videos, _) = video.list(None, None, usize::MAX);
        out.extend(
            videos
                .iter()
                .map(|v| crate::cluster::video_resource(&v.stream_name)),
        );
        out
    })
}

/// A connection string with its password masked, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Binds an RTSP publishing listener (`scheme`: `rtsp` or `rtsps`).
async fn bind_rtsp(
    addr: std::net::SocketAddr,
    scheme: &str,
    authenticated: bool,
) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {scheme} on {addr}"))?;
    tracing::info!(
        authentication = if authenticated { "digest" } else { "none" },
        "RTSP publishing accepted on {scheme}://{}",
        listener.local_addr()?
    );
    Ok(listener)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
