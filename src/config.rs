//! Server configuration: defaults, then a TOML file (`--config`), then environment
//! variables (`FRESHET_*`), then command-line flags; later sources win.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::store::Durability;

/// The port `freshet serve` listens on by default (on 127.0.0.1).
pub const DEFAULT_PORT: u16 = 4570;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings of `freshet serve`, every field optional so sources can be layered.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ServeConfig {
    /// Address to listen on [default: 127.0.0.1:4570]
    #[arg(long, env = "FRESHET_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The URL clients reach this server at (`http://host:port`, optionally with a
    /// path prefix), handed out as GetDataEndpoint's DataEndpoint and in HLS/DASH
    /// session URLs. Set it behind a proxy or load balancer [default: the request's
    /// Host header when it has a port, else the address the connection arrived on]
    #[arg(long, env = "FRESHET_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Directory for all data (created if missing) [default: ./freshet-data]
    #[arg(long, env = "FRESHET_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log lines as `text` (for people) or `json` (one object a line, for log
    /// pipelines); the level is set with FRESHET_LOG (e.g. `info`, `debug`,
    /// `freshet=debug`) [default: text]
    #[arg(long, env = "FRESHET_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Export a span per API request to this OpenTelemetry receiver over OTLP/HTTP
    /// (JSON), e.g. `http://collector:4318` (`/v1/traces` is appended); spans continue
    /// the caller's W3C `traceparent` [default: off]
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans [default: freshet]
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otlp_service_name: Option<String>,
    /// When a write is acknowledged: `fsync` (durable against power loss) or
    /// `unsafe-no-fsync` (survives a process crash only; for benchmarks) [default: fsync]
    #[arg(long, env = "FRESHET_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// How long streams stay CREATING / UPDATING / DELETING, in ms [default: 500]
    #[arg(long, env = "FRESHET_STATE_DELAY_MS")]
    pub state_delay_ms: Option<u64>,
    /// How long a SubscribeToShard subscription lasts, in seconds [default: 300, as in
    /// AWS]
    #[arg(long, env = "FRESHET_SUBSCRIPTION_LIFETIME_SECS")]
    pub subscription_lifetime_secs: Option<u64>,
    /// Shard iterator lifetime in seconds [default: 300, as in AWS]
    #[arg(long, env = "FRESHET_ITERATOR_TTL_SECS")]
    pub iterator_ttl_secs: Option<u64>,
    /// Open shards allowed across all streams [default: 500]
    #[arg(long, env = "FRESHET_SHARD_LIMIT")]
    pub shard_limit: Option<u32>,
    /// Enforce per-shard throughput limits (1 MB/s or 1,000 records/s in; 2 MB/s and
    /// 5 reads/s out), answering ProvisionedThroughputExceededException [default: off]
    #[arg(long, env = "FRESHET_SHARD_THROUGHPUT_LIMITS")]
    #[serde(default)]
    pub shard_throughput_limits: bool,
    /// Account id used in ARNs and messages [default: 000000000000]
    #[arg(long, env = "FRESHET_ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// Region used in ARNs [default: us-east-1]
    #[arg(long, env = "FRESHET_REGION")]
    pub region: Option<String>,
    /// How often retention is enforced, in seconds [default: 60]
    #[arg(long, env = "FRESHET_RETENTION_CHECK_SECS")]
    pub retention_check_secs: Option<u64>,
    /// Microseconds a group commit waits for more writes to join it; trades a little
    /// latency for less CPU per record under concurrent load (0 = commit at once)
    /// [default: 0]
    #[arg(long, env = "FRESHET_COMMIT_DELAY_US")]
    pub commit_delay_us: Option<u64>,
    /// Size at which a shard's segment file is sealed, in MiB [default: 64]
    #[arg(long, env = "FRESHET_SEGMENT_MB")]
    pub segment_mb: Option<u64>,
    /// Per shard or video stream, MiB of the newest data left in the OS page cache once
    /// durable; older data is dropped from the cache (and reading it goes to disk), so
    /// memory stays bounded and fresh writes reuse pages. 0 keeps everything cached
    /// until the kernel reclaims it [default: 16]
    #[arg(long, env = "FRESHET_CACHE_WINDOW_MB")]
    pub cache_window_mb: Option<u64>,
    /// How segments are written: `direct` (O_DIRECT: from the server's buffer to the
    /// disk, bypassing the page cache; falls back to buffered where the file system
    /// refuses it) or `buffered` (through the page cache) [default: direct]
    #[arg(long, env = "FRESHET_WRITE_IO", value_enum)]
    pub write_io: Option<crate::store::WriteIo>,
    /// Most HTTP connections open at once; more are answered 503 and closed
    /// [default: the open-files limit less 512, at most 100000]
    #[arg(long, env = "FRESHET_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most HTTP connections open at once from one IP address [default: 1024]
    #[arg(long, env = "FRESHET_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Seconds a client has to send a request's headers, and that a kept-alive
    /// connection may stay idle between requests [default: 30]
    #[arg(long, env = "FRESHET_HTTP_HEADER_TIMEOUT_SECS")]
    pub http_header_timeout_secs: Option<u64>,
    /// Memory all PutMedia connections together may hold for fragments still being
    /// received, in MiB (body bytes; the heap used is at most about twice that). A
    /// connection that needs more waits (its socket is not read: backpressure); one
    /// that has waited 10 s in all while receiving one fragment ends with ErrorId 5000
    /// [default: 1024]
    #[arg(long, env = "FRESHET_MEDIA_MEMORY_MB")]
    pub media_memory_mb: Option<u64>,
    /// Memory all GetMediaForFragmentList responses together may hold for fragments
    /// read but not yet written to their sockets, in MiB (each response also holds at
    /// most 16 MiB, or one fragment). A response that needs more waits before reading
    /// its next fragment [default: 256]
    #[arg(long, env = "FRESHET_SEND_MEMORY_MB")]
    pub send_memory_mb: Option<u64>,
    /// Listen for RTSP publishers (ANNOUNCE/RECORD, e.g. `ffmpeg -f rtsp
    /// rtsp://HOST:PORT/<stream>`, GStreamer `rtspclientsink`) on this address
    /// [default: off]
    #[arg(long, env = "FRESHET_RTSP_LISTEN")]
    pub rtsp_listen: Option<SocketAddr>,
    /// Also listen for RTSP publishers over TLS (RTSPS, `rtsps://HOST:PORT/<stream>`,
    /// interleaved TCP transport) on this address, with the `--tls-cert` pair
    /// [default: off]
    #[arg(long, env = "FRESHET_RTSPS_LISTEN")]
    pub rtsps_listen: Option<SocketAddr>,
    /// Do not create video streams on a first RTSP/RTP push; publishing to a missing
    /// stream is refused [default: streams are created]
    #[arg(long, env = "FRESHET_INGEST_NO_AUTO_CREATE")]
    #[serde(default)]
    pub ingest_no_auto_create: bool,
    /// DataRetentionInHours of video streams created by RTSP/RTP ingest [default: 24]
    #[arg(long, env = "FRESHET_INGEST_RETENTION_HOURS")]
    pub ingest_retention_hours: Option<u32>,
    /// Who may call (config file: an `[auth]` table with `[[auth.keys]]`)
    #[command(flatten)]
    #[serde(default)]
    pub auth: AuthSettings,
    /// TLS on the HTTP listener, and RTSPS (config file: a `[tls]` table)
    #[command(flatten)]
    #[serde(default)]
    pub tls: TlsSettings,
    /// Browser access to the APIs and playback URLs (config file: a `[cors]` table)
    #[command(flatten)]
    #[serde(default)]
    pub cors: CorsSettings,
    /// Delivery streams (config file: a `[delivery]` table)
    #[command(flatten)]
    #[serde(default)]
    pub delivery: DeliverySettings,
    /// Scale-out: membership and leases in PostgreSQL (config file: a `[cluster]` table)
    #[command(flatten)]
    #[serde(default)]
    pub cluster: ClusterSettings,
    /// Camera feeds to run (config file only): `[[feeds]]` tables with `stream`, and
    /// `rtsp_url`, or `rtp_port` with `sdp` / `codec` (+ `payload_type`); optional
    /// `fragment_ms`. They are stored like feeds added through the API.
    #[arg(skip)]
    #[serde(default)]
    pub feeds: Vec<FeedEntry>,
}

/// How requests are authenticated (`[auth]` in the config file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// `sigv4`: every API request must be signed with a configured key (AWS Signature
    /// Version 4; HTTP Basic or a bearer token `ID:SECRET` for the REST API and the
    /// console); `none`: every request is accepted [default: sigv4 when keys are
    /// configured, else none]
    #[arg(long = "auth-mode", env = "FRESHET_AUTH_MODE", value_enum)]
    pub mode: Option<AuthMode>,
    /// A TOML file with `[[auth.keys]]` tables (as in the config file), kept apart from
    /// the rest of the configuration
    #[arg(long = "auth-keys-file", env = "FRESHET_AUTH_KEYS_FILE")]
    #[serde(default)]
    pub keys_file: Option<PathBuf>,
    /// The keys (config file only): `access_key_id`, `secret_access_key`, and optional
    /// `allow` (action patterns, `kinesis:PutRecord*`) and `resources` (stream-name
    /// patterns)
    #[arg(skip)]
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
}

/// `[auth] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    Sigv4,
    None,
}

/// One `[[auth.keys]]` table.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub access_key_id: String,
    pub secret_access_key: String,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

impl AuthSettings {
    /// The keyring in force, `None` when authentication is off. Keys come from the
    /// config file and from `keys_file`.
    pub fn keyring(&self) -> anyhow::Result<Option<crate::auth::Keyring>> {
        let mut entries = self.keys.clone();
        if let Some(path) = &self.keys_file {
            let file = ServeConfig::from_file(path)?;
            entries.extend(file.auth.keys);
        }
        let mode = self.mode.unwrap_or(if entries.is_empty() {
            AuthMode::None
        } else {
            AuthMode::Sigv4
        });
        match mode {
            AuthMode::None => Ok(None),
            AuthMode::Sigv4 if entries.is_empty() => Err(anyhow::anyhow!(
                "auth mode sigv4 needs at least one [[auth.keys]] entry"
            )),
            AuthMode::Sigv4 => {
                let keys = entries
                    .into_iter()
                    .map(|e| {
                        crate::auth::AccessKey::new(
                            e.access_key_id,
                            e.secret_access_key,
                            e.allow,
                            e.resources,
                        )
                    })
                    .collect();
                crate::auth::Keyring::new(keys)
                    .map(Some)
                    .map_err(|e| anyhow::anyhow!(e))
            }
        }
    }
}

/// The certificate and key of the TLS listeners (`[tls]` in the config file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file with the server certificate, then any intermediate certificates. With
    /// it (and `--tls-key`) the HTTP listener speaks only HTTPS (HTTP/2 or HTTP/1.1 by
    /// ALPN). Reloaded on SIGHUP and when the file changes [default: plain HTTP]
    #[arg(long = "tls-cert", env = "FRESHET_TLS_CERT")]
    pub cert: Option<PathBuf>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1)
    #[arg(long = "tls-key", env = "FRESHET_TLS_KEY")]
    pub key: Option<PathBuf>,
}

impl TlsSettings {
    /// The files, when TLS is configured; an error when only one of them is.
    pub fn files(&self) -> anyhow::Result<Option<crate::tls::TlsFiles>> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (None, None) => Ok(None),
            _ => Err(anyhow::anyhow!(
                "TLS needs both a certificate and a key (tls-cert and tls-key)"
            )),
        }
    }
}

/// Which web pages may call Freshet from a browser (`[cors]` in the config file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins (`scheme://host[:port]`, or `*`) whose pages may call the APIs while
    /// authentication is off; repeat the flag or separate with commas. Requests from
    /// other origins are refused with 403 [default: only the server's own pages]
    #[arg(
        long = "cors-origin",
        env = "FRESHET_CORS_ORIGINS",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub origins: Vec<String>,
    /// Access-Control-Allow-Origin of playback URLs (HLS/DASH playlists and
    /// segments, which carry a session token) [default: *]
    #[arg(long = "cors-playback-origin", env = "FRESHET_CORS_PLAYBACK_ORIGIN")]
    pub playback_origin: Option<String>,
}

/// Where delivery streams deliver (`[delivery]` in the config file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Where S3 destinations of delivery streams go: `local` (objects under
    /// `<data-dir>/buckets/<bucket>/<key>`, no other server needed) or `s3` (real S3 or
    /// an S3-compatible server, from AWS_ENDPOINT_URL_S3, AWS_REGION and the AWS_*
    /// credentials) [default: local]
    #[arg(long = "delivery-s3", env = "FRESHET_DELIVERY_S3", value_enum)]
    pub s3: Option<DeliveryS3>,
    /// Transformation functions of delivery streams, as `ARN=URL`: the Lambda
    /// function ARN a `ProcessingConfiguration` names, and the URL Freshet POSTs its
    /// Lambda event to (Freshet has no Lambda); repeat it, or separate pairs with commas
    #[arg(
        long = "delivery-lambda",
        env = "FRESHET_DELIVERY_LAMBDA",
        value_name = "ARN=URL",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub lambda: Vec<String>,
}

impl DeliverySettings {
    /// `lambda` as a map from ARN to URL; an error names a pair without `=`.
    pub fn lambda_urls(&self) -> Result<std::collections::BTreeMap<String, String>, String> {
        let mut out = std::collections::BTreeMap::new();
        for pair in &self.lambda {
            let Some((arn, url)) = pair.split_once('=') else {
                return Err(format!(
                    "delivery lambda {pair:?} is not ARN=URL (e.g. \
                     arn:aws:lambda:us-east-1:123456789012:function:f=http://127.0.0.1:9000/)"
                ));
            };
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(format!(
                    "delivery lambda {pair:?}: the URL must start with http:// or https://"
                ));
            }
            out.insert(arn.trim().to_string(), url.trim().to_string());
        }
        Ok(out)
    }
}

/// `[delivery] s3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryS3 {
    Local,
    S3,
}

/// A camera feed in the config file. `Debug` shows the camera URL without its
/// password.
/// `[cluster]`: several nodes over one PostgreSQL database (docs/cluster.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Run as a node of a cluster whose membership and leases live in this PostgreSQL
    /// database (`postgres://user:password@host:port/database`; no TLS). Needs
    /// --node-id and --advertise-url [default: off, a single node on its own]
    #[arg(long = "cluster", env = "FRESHET_CLUSTER_URL")]
    pub url: Option<String>,
    /// This node's id in the cluster, unique among its nodes
    #[arg(long = "node-id", env = "FRESHET_CLUSTER_NODE_ID")]
    pub node_id: Option<String>,
    /// Seconds a lease lasts without renewal: a node that stops heartbeating loses its
    /// shards and video streams to the others this long after its last heartbeat
    /// [default: 5]
    #[arg(long = "cluster-lease-secs", env = "FRESHET_CLUSTER_LEASE_SECS")]
    pub lease_secs: Option<u64>,
    /// Milliseconds between heartbeats (lease renewal and rebalancing); must be less
    /// than the lease time [default: a third of the lease time]
    #[arg(long = "cluster-heartbeat-ms", env = "FRESHET_CLUSTER_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Where the cluster keeps data streams' records: `s3://bucket/prefix` (endpoint,
    /// region and credentials from AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY) or `file:///shared/directory`. With it, every node serves
    /// every stream: writes go to the shard's owner, reads come from the object store
    /// [default: off: each node serves only its own streams]
    #[arg(long = "object-store", env = "FRESHET_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// Milliseconds a shard's owner gathers writes into one object before committing
    /// them (longer: fewer, larger objects and higher put latency) [default: 10]
    #[arg(long = "cluster-batch-ms", env = "FRESHET_CLUSTER_BATCH_MS")]
    pub batch_ms: Option<u64>,
}

impl ClusterSettings {
    /// The shared data path's object store and batch interval, when it is on.
    pub fn data_path(&self) -> anyhow::Result<Option<(String, std::time::Duration)>> {
        let Some(store) = &self.object_store else {
            if self.batch_ms.is_some() {
                anyhow::bail!("--cluster-batch-ms needs --object-store");
            }
            return Ok(None);
        };
        if self.url.is_none() {
            anyhow::bail!("--object-store needs --cluster");
        }
        let batch_ms = self.batch_ms.unwrap_or(10);
        if batch_ms > 10_000 {
            anyhow::bail!("cluster batch-ms must be at most 10000, not {batch_ms}");
        }
        Ok(Some((
            store.clone(),
            std::time::Duration::from_millis(batch_ms),
        )))
    }

    /// The node's options, when clustering is on; `advertise_url` is the server's
    /// `--advertise-url`.
    pub fn options(
        &self,
        advertise_url: Option<&str>,
    ) -> anyhow::Result<Option<crate::cluster::node::ClusterOptions>> {
        let Some(url) = &self.url else {
            if self.node_id.is_some() {
                anyhow::bail!("--node-id needs --cluster");
            }
            return Ok(None);
        };
        let node_id = match self.node_id.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => anyhow::bail!("--cluster needs --node-id (this node's id in the cluster)"),
        };
        let Some(advertise_url) = advertise_url else {
            anyhow::bail!(
                "--cluster needs --advertise-url (the URL other nodes reach this one at)"
            );
        };
        let lease_secs = self.lease_secs.unwrap_or(5);
        if lease_secs == 0 || lease_secs > 3600 {
            anyhow::bail!("cluster lease-secs must be between 1 and 3600, not {lease_secs}");
        }
        let lease = std::time::Duration::from_secs(lease_secs);
        let heartbeat = match self.heartbeat_ms {
            Some(ms) => std::time::Duration::from_millis(ms),
            None => lease / 3,
        };
        if heartbeat.is_zero() || heartbeat >= lease {
            anyhow::bail!(
                "cluster heartbeat-ms ({} ms) must be more than 0 and less than the lease time ({lease_secs} s)",
                heartbeat.as_millis()
            );
        }
        Ok(Some(crate::cluster::node::ClusterOptions {
            url: url.clone(),
            node_id,
            advertise_url: advertise_url.to_string(),
            lease,
            heartbeat,
        }))
    }
}

#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedEntry {
    pub stream: String,
    pub rtsp_url: Option<String>,
    pub rtp_port: Option<u16>,
    pub sdp: Option<String>,
    pub codec: Option<String>,
    pub payload_type: Option<u8>,
    pub fragment_ms: Option<u32>,
}

impl std::fmt::Debug for FeedEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedEntry")
            .field("stream", &self.stream)
            .field(
                "rtsp_url",
                &self.rtsp_url.as_deref().map(crate::ingest::redact_url),
            )
            .field("rtp_port", &self.rtp_port)
            .field("codec", &self.codec)
            .field("fragment_ms", &self.fragment_ms)
            .finish_non_exhaustive()
    }
}

impl ServeConfig {
    /// Fills every unset field from `other`.
    pub fn or(self, other: ServeConfig) -> ServeConfig {
        ServeConfig {
            listen: self.listen.or(other.listen),
            advertise_url: self.advertise_url.or(other.advertise_url),
            data_dir: self.data_dir.or(other.data_dir),
            log_format: self.log_format.or(other.log_format),
            otlp_endpoint: self.otlp_endpoint.or(other.otlp_endpoint),
            otlp_service_name: self.otlp_service_name.or(other.otlp_service_name),
            durability: self.durability.or(other.durability),
            state_delay_ms: self.state_delay_ms.or(other.state_delay_ms),
            subscription_lifetime_secs: self
                .subscription_lifetime_secs
                .or(other.subscription_lifetime_secs),
            iterator_ttl_secs: self.iterator_ttl_secs.or(other.iterator_ttl_secs),
            shard_limit: self.shard_limit.or(other.shard_limit),
            shard_throughput_limits: self.shard_throughput_limits || other.shard_throughput_limits,
            account_id: self.account_id.or(other.account_id),
            region: self.region.or(other.region),
            retention_check_secs: self.retention_check_secs.or(other.retention_check_secs),
            segment_mb: self.segment_mb.or(other.segment_mb),
            cache_window_mb: self.cache_window_mb.or(other.cache_window_mb),
            write_io: self.write_io.or(other.write_io),
            commit_delay_us: self.commit_delay_us.or(other.commit_delay_us),
            max_connections: self.max_connections.or(other.max_connections),
            max_connections_per_ip: self.max_connections_per_ip.or(other.max_connections_per_ip),
            http_header_timeout_secs: self
                .http_header_timeout_secs
                .or(other.http_header_timeout_secs),
            media_memory_mb: self.media_memory_mb.or(other.media_memory_mb),
            send_memory_mb: self.send_memory_mb.or(other.send_memory_mb),
            rtsp_listen: self.rtsp_listen.or(other.rtsp_listen),
            rtsps_listen: self.rtsps_listen.or(other.rtsps_listen),
            ingest_no_auto_create: self.ingest_no_auto_create || other.ingest_no_auto_create,
            ingest_retention_hours: self.ingest_retention_hours.or(other.ingest_retention_hours),
            auth: AuthSettings {
                mode: self.auth.mode.or(other.auth.mode),
                keys_file: self.auth.keys_file.or(other.auth.keys_file),
                keys: if self.auth.keys.is_empty() {
                    other.auth.keys
                } else {
                    self.auth.keys
                },
            },
            tls: TlsSettings {
                cert: self.tls.cert.or(other.tls.cert),
                key: self.tls.key.or(other.tls.key),
            },
            cors: CorsSettings {
                origins: if self.cors.origins.is_empty() {
                    other.cors.origins
                } else {
                    self.cors.origins
                },
                playback_origin: self.cors.playback_origin.or(other.cors.playback_origin),
            },
            delivery: DeliverySettings {
                s3: self.delivery.s3.or(other.delivery.s3),
                lambda: if self.delivery.lambda.is_empty() {
                    other.delivery.lambda
                } else {
                    self.delivery.lambda
                },
            },
            cluster: ClusterSettings {
                url: self.cluster.url.or(other.cluster.url),
                node_id: self.cluster.node_id.or(other.cluster.node_id),
                lease_secs: self.cluster.lease_secs.or(other.cluster.lease_secs),
                heartbeat_ms: self.cluster.heartbeat_ms.or(other.cluster.heartbeat_ms),
                object_store: self.cluster.object_store.or(other.cluster.object_store),
                batch_ms: self.cluster.batch_ms.or(other.cluster.batch_ms),
            },
            feeds: if self.feeds.is_empty() {
                other.feeds
            } else {
                self.feeds
            },
        }
    }

    /// Reads a TOML file with the same keys as the flags (`listen = "127.0.0.1:4570"`).
    pub fn from_file(path: &Path) -> anyhow::Result<ServeConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("freshet-data"))
    }
}

/// The reference table of `docs/configuration.md`: every `freshet serve` option with
/// its flag, environment variable, config-file key and help (which states the
/// default), built from the clap definitions above so that the document cannot drift
/// (a unit test compares them).
pub fn reference_table() -> String {
    use clap::Args;
    let sections: [(&str, clap::Command); 5] = [
        (
            "auth",
            AuthSettings::augment_args(clap::Command::new("auth")),
        ),
        ("tls", TlsSettings::augment_args(clap::Command::new("tls"))),
        (
            "cors",
            CorsSettings::augment_args(clap::Command::new("cors")),
        ),
        (
            "delivery",
            DeliverySettings::augment_args(clap::Command::new("delivery")),
        ),
        (
            "cluster",
            ClusterSettings::augment_args(clap::Command::new("cluster")),
        ),
    ];
    let section_of = |long: &str| {
        sections.iter().find_map(|(name, cmd)| {
            cmd.get_arguments()
                .any(|a| a.get_long() == Some(long))
                .then_some(*name)
        })
    };
    let all = ServeConfig::augment_args(clap::Command::new("serve"));
    let mut out =
        String::from("| flag | environment | config file | what it sets |\n|---|---|---|---|\n");
    for arg in all.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let key = arg.get_id().as_str();
        let file_key = match section_of(long) {
            Some(section) => format!("`[{section}] {key}`"),
            None => format!("`{key}`"),
        };
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .map(|v| format!("`{}`", v.get_name()))
            .collect();
        let mut help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default()
            .replace('\n', " ")
            .replace('|', "\\|");
        if !values.is_empty() && arg.get_action().takes_values() {
            help.push_str(&format!(" (one of {})", values.join(", ")));
        }
        out.push_str(&format!("| `--{long}` | {env} | {file_key} | {help} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/configuration.md holds [`reference_table`] between its markers. To update
    /// it after changing an option: `FRESHET_UPDATE_DOCS=1 cargo test --lib
    /// config::tests::configuration_reference_is_current`.
    #[test]
    fn configuration_reference_is_current() {
        const BEGIN: &str = "<!-- BEGIN GENERATED OPTIONS -->\n";
        const END: &str = "<!-- END GENERATED OPTIONS -->";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let doc = std::fs::read_to_string(&path).expect("docs/configuration.md");
        let (head, rest) = doc.split_once(BEGIN).expect("begin marker");
        let (current, tail) = rest.split_once(END).expect("end marker");
        let table = reference_table();
        if current != table {
            if std::env::var_os("FRESHET_UPDATE_DOCS").is_some() {
                std::fs::write(&path, format!("{head}{BEGIN}{table}{END}{tail}")).unwrap();
                return;
            }
            panic!(
                "docs/configuration.md does not list the options as they are; run \
                 FRESHET_UPDATE_DOCS=1 cargo test --lib config::tests::configuration_reference_is_current"
            );
        }
        // Every flag the binary takes is in the document, and every TOML-only table.
        for needle in ["[[auth.keys]]", "[[feeds]]", "--listen", "--tls-cert"] {
            assert!(doc.contains(needle), "{needle}");
        }
    }

    #[test]
    fn file_then_flags() {
        let file: ServeConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"\ndurability = \"unsafe-no-fsync\"\nshard_limit = 7\n",
        )
        .unwrap();
        let flags = ServeConfig {
            shard_limit: Some(9),
            ..Default::default()
        };
        let merged = flags.or(file);
        assert_eq!(merged.listen().port(), 9000);
        assert_eq!(merged.shard_limit, Some(9));
        assert_eq!(merged.durability, Some(Durability::UnsafeNoFsync));
        assert!(toml::from_str::<ServeConfig>("bogus = 1").is_err());
        let file: ServeConfig =
            toml::from_str("[cors]\norigins = [\"https://a.example\"]\n").unwrap();
        assert_eq!(file.cors.origins, ["https://a.example"]);
        let merged = ServeConfig::default().or(file);
        assert_eq!(merged.cors.origins, ["https://a.example"]);
        assert_eq!(merged.cors.playback_origin, None);
        assert_eq!(ServeConfig::default().listen().port(), DEFAULT_PORT);
        let file: ServeConfig = toml::from_str("[delivery]\ns3 = \"s3\"\n").unwrap();
        assert_eq!(
            ServeConfig::default().or(file).delivery.s3,
            Some(DeliveryS3::S3)
        );
        assert!(toml::from_str::<ServeConfig>("[delivery]\ns3 = \"ftp\"\n").is_err());
        let file: ServeConfig = toml::from_str(
            "[delivery]\nlambda = [\"arn:aws:lambda:us-east-1:1:function:f=http://127.0.0.1:9/x?a=b\"]\n",
        )
        .unwrap();
        let urls = ServeConfig::default()
            .or(file)
            .delivery
            .lambda_urls()
            .unwrap();
        assert_eq!(
            urls["arn:aws:lambda:us-east-1:1:function:f"],
            "http://127.0.0.1:9/x?a=b"
        );
        let bad = DeliverySettings {
            lambda: vec!["arn-without-url".into()],
            ..Default::default()
        };
        assert!(bad.lambda_urls().unwrap_err().contains("ARN=URL"));
    }

    #[test]
    fn cluster_comes_from_a_table_or_flags_and_is_checked() {
        let file: ServeConfig = toml::from_str(
            "[cluster]\nurl = \"postgres://db/freshet\"\nnode_id = \"n1\"\nlease_secs = 6\n",
        )
        .unwrap();
        let flags = ServeConfig {
            cluster: ClusterSettings {
                heartbeat_ms: Some(500),
                ..Default::default()
            },
            ..Default::default()
        };
        let merged = flags.or(file);
        let options = merged
            .cluster
            .options(Some("http://10.0.0.1:4570"))
            .unwrap()
            .unwrap();
        assert_eq!(options.node_id, "n1");
        assert_eq!(options.lease, std::time::Duration::from_secs(6));
        assert_eq!(options.heartbeat, std::time::Duration::from_millis(500));
        // Off unless a URL is given; the URL needs an id and an advertised URL.
        assert!(
            ServeConfig::default()
                .cluster
                .options(None)
                .unwrap()
                .is_none()
        );
        assert!(merged.cluster.options(None).is_err());
        let no_id = ClusterSettings {
            url: Some("postgres://db".into()),
            ..Default::default()
        };
        assert!(no_id.options(Some("http://h:1")).is_err());
        let slow = ClusterSettings {
            heartbeat_ms: Some(6000),
            ..merged.cluster.clone()
        };
        assert!(slow.options(Some("http://h:1")).is_err());
        let defaults = ClusterSettings {
            lease_secs: None,
            heartbeat_ms: None,
            ..merged.cluster.clone()
        };
        let options = defaults.options(Some("http://h:1")).unwrap().unwrap();
        assert_eq!(options.lease, std::time::Duration::from_secs(5));
        assert!(options.heartbeat < options.lease);
        assert!(toml::from_str::<ServeConfig>("[cluster]\nnodes = 3\n").is_err());
    }

    #[test]
    fn tls_comes_from_a_table_or_flags() {
        let file: ServeConfig =
            toml::from_str("[tls]\ncert = \"/etc/f/cert.pem\"\nkey = \"/etc/f/key.pem\"\n")
                .unwrap();
        let merged = ServeConfig::default().or(file.clone());
        let files = merged.tls.files().unwrap().unwrap();
        assert_eq!(files.cert, PathBuf::from("/etc/f/cert.pem"));
        assert_eq!(files.key, PathBuf::from("/etc/f/key.pem"));
        let flags = ServeConfig {
            tls: TlsSettings {
                cert: Some("/run/c.pem".into()),
                key: Some("/run/k.pem".into()),
            },
            ..Default::default()
        };
        assert_eq!(
            flags.or(file).tls.files().unwrap().unwrap().cert,
            PathBuf::from("/run/c.pem")
        );
        assert_eq!(ServeConfig::default().tls.files().unwrap(), None);
        let half: ServeConfig = toml::from_str("[tls]\ncert = \"c.pem\"\n").unwrap();
        assert!(half.tls.files().is_err());
        assert!(toml::from_str::<ServeConfig>("[tls]\ncrt = \"c.pem\"\n").is_err());
    }
}
