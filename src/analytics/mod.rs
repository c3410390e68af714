//! Analytics applications (Kinesis Data Analytics for SQL applications semantics, the
//! `kinesisanalytics` API reference, 2015-08-14): SQL over data streams and delivery
//! streams, running continuously inside the server.
//!
//! - [`AnalyticsService`]: the domain service behind the API. Applications live in the
//!   catalog (namespace `analytics-applications`), written before they are applied in
//!   memory. The code is compiled ([`freshet_sql::Program`]) whenever it or the inputs
//!   change, so bad SQL is refused by CreateApplication / UpdateApplication with the
//!   line and column.
//! - [`runner`]: one task per running application: read the source's shards, turn
//!   records into rows ([`schema`]), feed the program in arrival order, write the rows
//!   of the output streams to their destinations, checkpoint state and positions.
//! - [`schema`]: records to rows and rows to records; schema discovery. Pure.
//!
//! This module reads through the domain services ([`StreamService`],
//! [`DeliveryService`]) and writes through the store (catalog); it never reaches into
//! `api`.

pub mod error;
pub mod model;
mod runner;
pub mod schema;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};

use freshet_sql::{Column, Program, SqlType, StreamDef, TableDef};
use tokio::sync::watch;

pub use error::{AnalyticsError, Result};
use model::*;

use crate::clock::SharedClock;
use crate::delivery::DeliveryService;
use crate::store::catalog::{Catalog, CatalogWrite};
use crate::streams::{StreamRef, StreamService};

const NAMESPACE: &str = "analytics-applications";
pub(crate) const CHECKPOINTS: &str = "analytics-checkpoints";

/// The most applications (AWS's default quota).
pub const APPLICATION_LIMIT: usize = 50;
/// The most tags on one application.
pub const TAG_LIMIT: usize = 50;
/// The most outputs (AWS: three destinations per application).
pub const OUTPUT_LIMIT: usize = 3;
/// The column that every input stream gets besides the schema's.
pub const ARRIVAL_COLUMN: &str = "APPROXIMATE_ARRIVAL_TIME";

/// Settings of the analytics service.
#[derive(Debug, Clone)]
pub struct AnalyticsConfig {
    pub account_id: String,
    pub region: String,
    /// How long STARTING / STOPPING / UPDATING last before the state settles (tests: 0).
    pub state_delay_ms: u64,
    /// How long to wait for records that may still arrive with an earlier arrival time
    /// before the SQL clock passes a moment (closing the windows that end there).
    pub watermark_delay_ms: u64,
    /// How often a running application checkpoints its state.
    pub checkpoint_interval_ms: u64,
    /// Where reference data is read from (`<dir>/<bucket>/<key>`): the local buckets
    /// of `--delivery-s3 local`; `None` when S3 is real (not supported yet).
    pub buckets_dir: Option<std::path::PathBuf>,
}

/// Counters of a running application, for the status and the metrics.
#[derive(Debug, Default)]
pub struct RunStats {
    pub records_in: AtomicU64,
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
    /// Records or rows that failed (schema, evaluation) and went to the error stream.
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// The SQL clock (ms): how far the application has got.
    pub watermark_ms: AtomicU64,
}

struct RunnerHandle {
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
    stats: Arc<RunStats>,
}

/// A CreateApplication, parsed by the API layer (ids are assigned here).
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub name: String,
    pub description: Option<String>,
    pub code: String,
    pub inputs: Vec<InputMeta>,
    pub outputs: Vec<OutputMeta>,
    pub tags: Vec<(String, String)>,
}

/// An UpdateApplication's ApplicationUpdate, parsed by the API layer.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub code: Option<String>,
    /// InputUpdates: the input id and what replaces it (the API layer merges).
    pub inputs: Vec<(String, InputPatch)>,
    pub outputs: Vec<(String, OutputPatch)>,
    pub references: Vec<(String, ReferencePatch)>,
}

#[derive(Debug, Clone, Default)]
pub struct InputPatch {
    pub name_prefix: Option<String>,
    pub source: Option<(SourceKind, String, String)>,
    pub schema: Option<SchemaPatch>,
    pub parallelism: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct SchemaPatch {
    pub format: Option<RecordFormat>,
    pub encoding: Option<String>,
    pub columns: Option<Vec<RecordColumn>>,
}

#[derive(Debug, Clone, Default)]
pub struct OutputPatch {
    pub name: Option<String>,
    pub sink: Option<(SinkKind, String, String)>,
    pub format: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ReferencePatch {
    pub table_name: Option<String>,
    pub s3: Option<(String, String, String)>,
    pub schema: Option<SchemaPatch>,
}

/// DiscoverInputSchema's answer.
#[derive(Debug, Clone)]
pub struct Discovered {
    pub schema: SourceSchema,
    pub raw: Vec<String>,
    pub parsed: Vec<Vec<String>>,
}

/// The analytics-application service.
pub struct AnalyticsService {
    config: AnalyticsConfig,
    clock: SharedClock,
    catalog: Arc<dyn Catalog>,
    streams: Arc<StreamService>,
    delivery: Option<Arc<DeliveryService>>,
    apps: RwLock<BTreeMap<String, ApplicationMeta>>,
    /// Serialises control-plane changes.
    control: tokio::sync::Mutex<()>,
    runners: Mutex<HashMap<String, RunnerHandle>>,
    /// Counters per application, kept across its runners (restarts, updates) so that
    /// they only grow while the process lives.
    stats: Mutex<HashMap<String, Arc<RunStats>>>,
}

/// The in-application streams and tables the code is compiled against.
pub(crate) fn program_inputs(meta: &ApplicationMeta) -> Result<(Vec<StreamDef>, Vec<TableDef>)> {
    let mut streams = Vec::new();
    for input in &meta.inputs {
        let mut columns =
            schema::RowParser::columns(&input.schema).map_err(AnalyticsError::InvalidArgument)?;
        columns.push(Column {
            name: ARRIVAL_COLUMN.into(),
            ty: SqlType::Timestamp,
        });
        for name in input.stream_names() {
            streams.push(StreamDef {
                name,
                columns: columns.clone(),
            });
        }
    }
    let mut tables = Vec::new();
    for r in &meta.references {
        tables.push(TableDef {
            name: r.table_name.clone(),
            columns: schema::RowParser::columns(&r.schema)
                .map_err(AnalyticsError::InvalidArgument)?,
        });
    }
    Ok((streams, tables))
}

/// Compiles an application's code, as CreateApplication and UpdateApplication check it.
/// An application may have no code yet (`None`): it cannot start until it has some.
pub(crate) fn compile(meta: &ApplicationMeta) -> Result<Option<Program>> {
    let (streams, tables) = program_inputs(meta)?;
    if meta.code.trim().is_empty() {
        return Ok(None);
    }
    Program::compile(&meta.code, &streams, &tables)
        .map(Some)
        .map_err(|e| {
            AnalyticsError::CodeValidation(format!(
                "Invalid SQL code at line {}, column {}: {}",
                e.line, e.column, e.message
            ))
        })
}

fn check_schema(schema: &SourceSchema) -> Result<()> {
    schema::RowParser::new(schema)
        .map(|_| ())
        .map_err(AnalyticsError::InvalidArgument)
}

impl AnalyticsService {
    /// Loads every application from the catalog and restarts those that were running.
    pub async fn open(
        config: AnalyticsConfig,
        clock: SharedClock,
        catalog: Arc<dyn Catalog>,
        streams: Arc<StreamService>,
        delivery: Option<Arc<DeliveryService>>,
    ) -> Result<Arc<AnalyticsService>> {
        let service = Arc::new(AnalyticsService {
            config,
            clock,
            catalog,
            streams,
            delivery,
            apps: RwLock::new(BTreeMap::new()),
            control: tokio::sync::Mutex::new(()),
            runners: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
        });
        let catalog = service.catalog.clone();
        let rows = tokio::task::spawn_blocking(move || catalog.list(NAMESPACE))
            .await
            .map_err(|e| AnalyticsError::Internal(e.to_string()))??;
        for (_, raw) in rows {
            let mut meta: ApplicationMeta = serde_json::from_slice(&raw)
                .map_err(|e| AnalyticsError::Internal(format!("corrupt application: {e}")))?;
            match meta.status {
                AppStatus::Deleting => {
                    service.finish_delete(&meta.name).await?;
                    continue;
                }
                // Running (or on its way there) when the server stopped: running again,
                // from where it had got.
                AppStatus::Running | AppStatus::Starting | AppStatus::Updating => {
                    meta.status = AppStatus::Running;
                    service.launch(&meta, true);
                }
                AppStatus::Ready | AppStatus::Stopping => meta.status = AppStatus::Ready,
            }
            service
                .apps
                .write()
                .unwrap()
                .insert(meta.name.clone(), meta);
        }
        Ok(service)
    }

    pub fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:kinesisanalytics:{}:{}:application/{name}",
            self.config.region, self.config.account_id
        )
    }

    /// The application an ARN names.
    pub fn name_of_arn(arn: &str) -> Option<&str> {
        arn.split_once(":application/").map(|(_, n)| n)
    }

    fn not_found(&self, name: &str) -> AnalyticsError {
        AnalyticsError::ResourceNotFound(format!("Application {name} is not found."))
    }

    fn get(&self, name: &str) -> Result<ApplicationMeta> {
        self.apps
            .read()
            .unwrap()
            .get(name)
            .cloned()
            .ok_or_else(|| self.not_found(name))
    }

    async fn persist(&self, writes: Vec<CatalogWrite>) -> Result<()> {
        let catalog = self.catalog.clone();
        tokio::task::spawn_blocking(move || catalog.write(writes))
            .await
            .map_err(|e| AnalyticsError::Internal(e.to_string()))??;
        Ok(())
    }

    fn put_meta(meta: &ApplicationMeta) -> Result<CatalogWrite> {
        Ok(CatalogWrite::Put {
            namespace: NAMESPACE.into(),
            key: meta.name.clone(),
            value: serde_json::to_vec(meta).map_err(|e| AnalyticsError::Internal(e.to_string()))?,
        })
    }

    /// Writes `meta` to the catalog, then to memory.
    async fn save(&self, meta: ApplicationMeta) -> Result<()> {
        self.persist(vec![Self::put_meta(&meta)?]).await?;
        self.apps.write().unwrap().insert(meta.name.clone(), meta);
        Ok(())
    }

    fn check_version(&self, meta: &ApplicationMeta, current: u64) -> Result<()> {
        if meta.version != current {
            return Err(AnalyticsError::ConcurrentModification(format!(
                "Provided application version id ({current}) does not match the current version id ({}) of application {}.",
                meta.version, meta.name
            )));
        }
        Ok(())
    }

    fn check_not_busy(&self, meta: &ApplicationMeta) -> Result<()> {
        if matches!(
            meta.status,
            AppStatus::Starting | AppStatus::Stopping | AppStatus::Updating | AppStatus::Deleting
        ) {
            return Err(AnalyticsError::ResourceInUse(format!(
                "Application {} is in {} state and cannot be changed now.",
                meta.name,
                meta.status.as_str()
            )));
        }
        Ok(())
    }

    /// Checks that a source or sink exists, by its ARN.
    fn check_stream_arn(&self, arn: &str, delivery: bool, what: &str) -> Result<()> {
        let bad = || AnalyticsError::InvalidArgument(format!("{what} {arn} does not exist."));
        if delivery {
            let name = arn
                .split_once(":deliverystream/")
                .map(|(_, n)| n)
                .ok_or_else(bad)?;
            let service = self.delivery.as_ref().ok_or_else(bad)?;
            service.describe(name).map(|_| ()).map_err(|_| bad())
        } else {
            let r = StreamRef {
                name: None,
                arn: Some(arn.to_string()),
            };
            self.streams
                .describe_stream_summary(&r)
                .map(|_| ())
                .map_err(|_| bad())
        }
    }

    fn check_input(&self, input: &InputMeta) -> Result<()> {
        check_schema(&input.schema)?;
        if input.parallelism == 0 || input.parallelism > 64 {
            return Err(AnalyticsError::InvalidArgument(
                "InputParallelism Count must be between 1 and 64.".into(),
            ));
        }
        if input.name_prefix.contains(['-', ' ', '<', '>', '&']) {
            return Err(AnalyticsError::InvalidArgument(format!(
                "NamePrefix {} may not contain '-', spaces, '<', '>' or '&'.",
                input.name_prefix
            )));
        }
        self.check_stream_arn(
            &input.resource_arn,
            input.source == SourceKind::DeliveryStream,
            "Input stream",
        )
    }

    fn check_output(&self, meta: &ApplicationMeta, output: &OutputMeta) -> Result<()> {
        if output.sink == SinkKind::Lambda {
            return Err(AnalyticsError::InvalidArgument(
                "LambdaOutput is not supported by Freshet; use KinesisStreamsOutput or KinesisFirehoseOutput (docs/analytics.md).".into(),
            ));
        }
        if !matches!(output.format.as_str(), "JSON" | "CSV") {
            return Err(AnalyticsError::InvalidArgument(format!(
                "DestinationSchema RecordFormatType {} is not JSON or CSV.",
                output.format
            )));
        }
        if meta.outputs.iter().any(|o| {
            o.id != output.id && o.name == output.name && o.resource_arn == output.resource_arn
        }) {
            return Err(AnalyticsError::InvalidArgument(format!(
                "Output {} to {} already exists.",
                output.name, output.resource_arn
            )));
        }
        self.check_stream_arn(
            &output.resource_arn,
            output.sink == SinkKind::DeliveryStream,
            "Output stream",
        )
    }

    /// CreateApplication.
    pub async fn create(self: &Arc<Self>, req: CreateRequest) -> Result<ApplicationMeta> {
        if req.tags.len() > TAG_LIMIT {
            return Err(AnalyticsError::TooManyTags(format!(
                "Application {} would have more than {TAG_LIMIT} tags.",
                req.name
            )));
        }
        if req.inputs.len() > 1 {
            return Err(AnalyticsError::InvalidArgument(
                "An application can have only one streaming source.".into(),
            ));
        }
        if req.outputs.len() > OUTPUT_LIMIT {
            return Err(AnalyticsError::LimitExceeded(format!(
                "An application can have at most {OUTPUT_LIMIT} outputs."
            )));
        }
        let _guard = self.control.lock().await;
        if self.apps.read().unwrap().contains_key(&req.name) {
            return Err(AnalyticsError::ResourceInUse(format!(
                "Application {} already exists.",
                req.name
            )));
        }
        if self.apps.read().unwrap().len() >= APPLICATION_LIMIT {
            return Err(AnalyticsError::LimitExceeded(format!(
                "You have reached the limit of {APPLICATION_LIMIT} applications."
            )));
        }
        let now = self.clock.now_ms();
        let mut meta = ApplicationMeta {
            name: req.name,
            description: req.description,
            code: req.code,
            status: AppStatus::Ready,
            version: 1,
            created_ms: now,
            updated_ms: now,
            inputs: Vec::new(),
            outputs: Vec::new(),
            references: Vec::new(),
            tags: req.tags.into_iter().collect(),
            next_id: 0,
        };
        for mut input in req.inputs {
            self.check_input(&input)?;
            input.id = meta.take_id();
            meta.inputs.push(input);
        }
        for mut output in req.outputs {
            output.id = meta.take_id();
            self.check_output(&meta, &output)?;
            meta.outputs.push(output);
        }
        compile(&meta)?;
        self.save(meta.clone()).await?;
        tracing::info!(application = meta.name, "analytics application created");
        Ok(meta)
    }

    /// DescribeApplication.
    pub fn describe(&self, name: &str) -> Result<ApplicationMeta> {
        self.get(name)
    }

    /// The counters of a running application.
    pub fn stats(&self, name: &str) -> Option<Arc<RunStats>> {
        self.runners
            .lock()
            .unwrap()
            .get(name)
            .map(|r| r.stats.clone())
    }

    /// ListApplications: names after `start`, at most `limit`, and whether there are more.
    pub fn list(&self, start: Option<&str>, limit: usize) -> (Vec<ApplicationMeta>, bool) {
        let apps = self.apps.read().unwrap();
        let mut it = apps
            .values()
            .filter(|m| start.is_none_or(|s| m.name.as_str() > s));
        let page: Vec<ApplicationMeta> = it.by_ref().take(limit).cloned().collect();
        (page, it.next().is_some())
    }

    /// DeleteApplication: CreateTimestamp must be the application's.
    pub async fn delete(&self, name: &str, created_ms: i64) -> Result<()> {
        let _guard = self.control.lock().await;
        let mut meta = self.get(name)?;
        // Timestamps travel as seconds with a fraction; compare to the second's part.
        if (meta.created_ms - created_ms).abs() >= 1000 {
            return Err(AnalyticsError::ConcurrentModification(format!(
                "Provided create timestamp does not match the create timestamp of application {name}."
            )));
        }
        if matches!(
            meta.status,
            AppStatus::Starting | AppStatus::Stopping | AppStatus::Updating
        ) {
            return Err(AnalyticsError::ResourceInUse(format!(
                "Application {name} is in {} state and cannot be deleted now.",
                meta.status.as_str()
            )));
        }
        meta.status = AppStatus::Deleting;
        self.save(meta).await?;
        self.halt(name).await;
        self.finish_delete(name).await
    }

    async fn finish_delete(&self, name: &str) -> Result<()> {
        self.persist(vec![
            CatalogWrite::Delete {
                namespace: CHECKPOINTS.into(),
                key: name.to_string(),
            },
            CatalogWrite::Delete {
                namespace: NAMESPACE.into(),
                key: name.to_string(),
            },
        ])
        .await?;
        self.apps.write().unwrap().remove(name);
        self.stats.lock().unwrap().remove(name);
        Ok(())
    }

    /// Starts the runner task of an application whose meta says RUNNING.
    fn launch(self: &Arc<Self>, meta: &ApplicationMeta, resume: bool) {
        let (stop, stop_rx) = watch::channel(false);
        let stats = self
            .stats
            .lock()
            .unwrap()
            .entry(meta.name.clone())
            .or_default()
            .clone();
        let runner = runner::Runner {
            service: self.clone(),
            meta: meta.clone(),
            stop: stop_rx,
            stats: stats.clone(),
            resume,
        };
        let join = tokio::spawn(runner.run());
        self.runners
            .lock()
            .unwrap()
            .insert(meta.name.clone(), RunnerHandle { stop, join, stats });
    }

    /// Stops a runner, if any, and waits until it has checkpointed and ended.
    async fn halt(&self, name: &str) {
        let handle = self.runners.lock().unwrap().remove(name);
        if let Some(h) = handle {
            h.stop.send_replace(true);
            let _ = h.join.await;
        }
    }

    /// Sets the status after the configured delay (STARTING -> RUNNING and the like),
    /// unless something else changed the application meanwhile.
    fn settle(self: &Arc<Self>, name: &str, from: AppStatus, to: AppStatus, version: u64) {
        let service = self.clone();
        let name = name.to_string();
        let delay = self.config.state_delay_ms;
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            let _guard = service.control.lock().await;
            let Ok(mut meta) = service.get(&name) else {
                return;
            };
            if meta.status != from || meta.version != version {
                return;
            }
            meta.status = to;
            if let Err(e) = service.save(meta).await {
                tracing::error!(application = name, error = %e, "could not settle the application's state");
            }
        });
    }

    /// StartApplication: the input's starting position, then RUNNING.
    pub async fn start(
        self: &Arc<Self>,
        name: &str,
        positions: Vec<(String, String)>,
    ) -> Result<()> {
        let _guard = self.control.lock().await;
        let mut meta = self.get(name)?;
        if meta.status != AppStatus::Ready {
            return Err(AnalyticsError::ResourceInUse(format!(
                "Application {name} is in {} state; only a READY application can be started.",
                meta.status.as_str()
            )));
        }
        if meta.inputs.is_empty() {
            return Err(AnalyticsError::InvalidApplicationConfiguration(format!(
                "Application {name} has no input to start."
            )));
        }
        for (id, position) in &positions {
            let input = meta
                .inputs
                .iter_mut()
                .find(|i| &i.id == id)
                .ok_or_else(|| {
                    AnalyticsError::InvalidArgument(format!(
                        "Input id {id} does not exist in application {name}."
                    ))
                })?;
            input.starting_position = Some(position.clone());
        }
        for input in &meta.inputs {
            self.check_stream_arn(
                &input.resource_arn,
                input.source == SourceKind::DeliveryStream,
                "Input stream",
            )
            .map_err(|e| AnalyticsError::InvalidApplicationConfiguration(e.to_string()))?;
        }
        if compile(&meta)?.is_none() {
            return Err(AnalyticsError::InvalidApplicationConfiguration(format!(
                "Application {name} has no application code to run."
            )));
        }
        let delayed = self.config.state_delay_ms > 0;
        meta.status = if delayed {
            AppStatus::Starting
        } else {
            AppStatus::Running
        };
        self.save(meta.clone()).await?;
        let resume = meta
            .inputs
            .iter()
            .all(|i| i.starting_position.as_deref() == Some("LAST_STOPPED_POINT"));
        self.launch(&meta, resume);
        if delayed {
            self.settle(name, AppStatus::Starting, AppStatus::Running, meta.version);
        }
        tracing::info!(application = name, "analytics application started");
        Ok(())
    }

    /// StopApplication: the runner checkpoints and ends; then READY.
    pub async fn stop(self: &Arc<Self>, name: &str) -> Result<()> {
        let _guard = self.control.lock().await;
        let mut meta = self.get(name)?;
        match meta.status {
            AppStatus::Running | AppStatus::Starting | AppStatus::Updating => {}
            // Stopping a stopped application is accepted and changes nothing.
            AppStatus::Ready | AppStatus::Stopping => return Ok(()),
            AppStatus::Deleting => return Err(self.not_found(name)),
        }
        self.halt(name).await;
        let delayed = self.config.state_delay_ms > 0;
        meta.status = if delayed {
            AppStatus::Stopping
        } else {
            AppStatus::Ready
        };
        self.save(meta.clone()).await?;
        if delayed {
            self.settle(name, AppStatus::Stopping, AppStatus::Ready, meta.version);
        }
        tracing::info!(application = name, "analytics application stopped");
        Ok(())
    }

    /// Applies a change to an application's configuration: version checked, the
    /// result checked and compiled, the version incremented, a running application
    /// restarted on the new version (its state kept only if the code is unchanged).
    async fn change(
        self: &Arc<Self>,
        name: &str,
        current_version: u64,
        edit: impl FnOnce(&Self, &mut ApplicationMeta) -> Result<()>,
    ) -> Result<()> {
        let _guard = self.control.lock().await;
        let mut meta = self.get(name)?;
        self.check_version(&meta, current_version)?;
        self.check_not_busy(&meta)?;
        edit(self, &mut meta)?;
        compile(&meta)?;
        meta.version += 1;
        meta.updated_ms = self.clock.now_ms();
        let running = meta.status == AppStatus::Running;
        if running {
            self.halt(name).await;
        }
        let delayed = running && self.config.state_delay_ms > 0;
        if delayed {
            meta.status = AppStatus::Updating;
        }
        self.save(meta.clone()).await?;
        if running {
            self.launch(&meta, true);
        }
        if delayed {
            self.settle(name, AppStatus::Updating, AppStatus::Running, meta.version);
        }
        Ok(())
    }

    /// UpdateApplication.
    pub async fn update(
        self: &Arc<Self>,
        name: &str,
        current_version: u64,
        update: Update,
    ) -> Result<()> {
        self.change(name, current_version, move |svc, meta| {
            if let Some(code) = update.code {
                meta.code = code;
            }
            for (id, patch) in update.inputs {
                let input = meta.inputs.iter_mut().find(|i| i.id == id).ok_or_else(|| {
                    AnalyticsError::InvalidArgument(format!("Input id {id} does not exist."))
                })?;
                if let Some(p) = patch.name_prefix {
                    input.name_prefix = p;
                }
                if let Some((kind, arn, role)) = patch.source {
                    input.source = kind;
                    input.resource_arn = arn;
                    input.role_arn = role;
                }
                if let Some(n) = patch.parallelism {
                    input.parallelism = n;
                }
                if let Some(s) = patch.schema {
                    apply_schema_patch(&mut input.schema, s);
                }
                let input = input.clone();
                svc.check_input(&input)?;
            }
            for (id, patch) in update.outputs {
                let pos = meta
                    .outputs
                    .iter()
                    .position(|o| o.id == id)
                    .ok_or_else(|| {
                        AnalyticsError::InvalidArgument(format!("Output id {id} does not exist."))
                    })?;
                let mut output = meta.outputs[pos].clone();
                if let Some(n) = patch.name {
                    output.name = n;
                }
                if let Some((kind, arn, role)) = patch.sink {
                    output.sink = kind;
                    output.resource_arn = arn;
                    output.role_arn = role;
                }
                if let Some(f) = patch.format {
                    output.format = f;
                }
                svc.check_output(meta, &output)?;
                meta.outputs[pos] = output;
            }
            for (id, patch) in update.references {
                let r = meta
                    .references
                    .iter_mut()
                    .find(|r| r.id == id)
                    .ok_or_else(|| {
                        AnalyticsError::InvalidArgument(format!(
                            "Reference id {id} does not exist."
                        ))
                    })?;
                if let Some(t) = patch.table_name {
                    r.table_name = t;
                }
                if let Some((bucket, key, role)) = patch.s3 {
                    r.bucket_arn = bucket;
                    r.file_key = key;
                    r.role_arn = role;
                }
                if let Some(s) = patch.schema {
                    apply_schema_patch(&mut r.schema, s);
                }
                check_schema(&r.schema)?;
            }
            Ok(())
        })
        .await
    }

    /// AddApplicationInput.
    pub async fn add_input(
        self: &Arc<Self>,
        name: &str,
        version: u64,
        input: InputMeta,
    ) -> Result<()> {
        self.change(name, version, move |svc, meta| {
            if !meta.inputs.is_empty() {
                return Err(AnalyticsError::InvalidArgument(
                    "An application can have only one streaming source.".into(),
                ));
            }
            svc.check_input(&input)?;
            let mut input = input;
            input.id = meta.take_id();
            meta.inputs.push(input);
            Ok(())
        })
        .await
    }

    /// AddApplicationOutput.
    pub async fn add_output(
        self: &Arc<Self>,
        name: &str,
        version: u64,
        output: OutputMeta,
    ) -> Result<()> {
        self.change(name, version, move |svc, meta| {
            if meta.outputs.len() >= OUTPUT_LIMIT {
                return Err(AnalyticsError::LimitExceeded(format!(
                    "An application can have at most {OUTPUT_LIMIT} outputs."
                )));
            }
            let mut output = output;
            output.id = meta.take_id();
            svc.check_output(meta, &output)?;
            meta.outputs.push(output);
            Ok(())
        })
        .await
    }

    /// DeleteApplicationOutput.
    pub async fn delete_output(self: &Arc<Self>, name: &str, version: u64, id: &str) -> Result<()> {
        let id = id.to_string();
        self.change(name, version, move |_, meta| {
            let before = meta.outputs.len();
            meta.outputs.retain(|o| o.id != id);
            if meta.outputs.len() == before {
                return Err(AnalyticsError::ResourceNotFound(format!(
                    "Output id {id} does not exist in application {}.",
                    meta.name
                )));
            }
            Ok(())
        })
        .await
    }

    /// AddApplicationReferenceDataSource.
    pub async fn add_reference(
        self: &Arc<Self>,
        name: &str,
        version: u64,
        reference: ReferenceMeta,
    ) -> Result<()> {
        self.change(name, version, move |_, meta| {
            check_schema(&reference.schema)?;
            if meta
                .references
                .iter()
                .any(|r| r.table_name == reference.table_name)
            {
                return Err(AnalyticsError::InvalidArgument(format!(
                    "Reference table {} already exists.",
                    reference.table_name
                )));
            }
            let mut reference = reference;
            reference.id = meta.take_id();
            meta.references.push(reference);
            Ok(())
        })
        .await
    }

    /// DeleteApplicationReferenceDataSource.
    pub async fn delete_reference(
        self: &Arc<Self>,
        name: &str,
        version: u64,
        id: &str,
    ) -> Result<()> {
        let id = id.to_string();
        self.change(name, version, move |_, meta| {
            let before = meta.references.len();
            meta.references.retain(|r| r.id != id);
            if meta.references.len() == before {
                return Err(AnalyticsError::ResourceNotFound(format!(
                    "Reference id {id} does not exist in application {}.",
                    meta.name
                )));
            }
            Ok(())
        })
        .await
    }

    fn app_of_arn(&self, arn: &str) -> Result<String> {
        Self::name_of_arn(arn).map(str::to_string).ok_or_else(|| {
            AnalyticsError::InvalidArgument(format!("Invalid application ARN {arn}."))
        })
    }

    /// TagResource.
    pub async fn tag(&self, arn: &str, tags: Vec<(String, String)>) -> Result<()> {
        let name = self.app_of_arn(arn)?;
        let _guard = self.control.lock().await;
        let mut meta = self.get(&name)?;
        meta.tags.extend(tags);
        if meta.tags.len() > TAG_LIMIT {
            return Err(AnalyticsError::TooManyTags(format!(
                "Application {name} would have more than {TAG_LIMIT} tags."
            )));
        }
        self.save(meta).await
    }

    /// UntagResource.
    pub async fn untag(&self, arn: &str, keys: Vec<String>) -> Result<()> {
        let name = self.app_of_arn(arn)?;
        let _guard = self.control.lock().await;
        let mut meta = self.get(&name)?;
        for k in keys {
            meta.tags.remove(&k);
        }
        self.save(meta).await
    }

    /// ListTagsForResource.
    pub fn list_tags(&self, arn: &str) -> Result<Vec<(String, String)>> {
        let name = self.app_of_arn(arn)?;
        Ok(self.get(&name)?.tags.into_iter().collect())
    }

    /// DiscoverInputSchema: reads up to 100 records of the stream from the starting
    /// position and infers a schema that fits them.
    pub async fn discover(&self, resource_arn: &str, position: &str) -> Result<Discovered> {
        let r = StreamRef {
            name: None,
            arn: Some(resource_arn.to_string()),
        };
        let name = self.streams.resolve_name(&r).map_err(|_| {
            AnalyticsError::InvalidArgument(format!("Stream {resource_arn} does not exist."))
        })?;
        let (shards, _) = self
            .streams
            .list_shards(Some(&StreamRef::name(name)), None, None, None, None)
            .map_err(|e| AnalyticsError::InvalidArgument(e.to_string()))?;
        let kind = match position {
            "NOW" => "LATEST",
            _ => "TRIM_HORIZON",
        };
        let mut raw: Vec<bytes::Bytes> = Vec::new();
        for shard in &shards {
            let Ok(it) = self
                .streams
                .get_shard_iterator(&r, &shard.shard_id, kind, None, None)
                .await
            else {
                continue;
            };
            if let Ok(out) = self.streams.get_records(&it, Some(100 - raw.len())).await {
                raw.extend(out.records.into_iter().map(|r| r.data));
            }
            if raw.len() >= 100 {
                break;
            }
        }
        let samples: Vec<&[u8]> = raw.iter().map(|b| b.as_ref()).collect();
        let schema = schema::discover(&samples).map_err(AnalyticsError::UnableToDetectSchema)?;
        let parser =
            schema::RowParser::new(&schema).map_err(AnalyticsError::UnableToDetectSchema)?;
        let mut parsed = Vec::new();
        for s in &samples {
            for row in parser.parse(s).unwrap_or_default() {
                parsed.push(
                    row.iter()
                        .map(|v| match schema::to_json(v) {
                            serde_json::Value::String(s) => s,
                            serde_json::Value::Null => String::new(),
                            other => other.to_string(),
                        })
                        .collect(),
                );
            }
        }
        Ok(Discovered {
            schema,
            raw: samples
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect(),
            parsed,
        })
    }

    /// Stops every runner (they checkpoint first); applications stay RUNNING in the
    /// catalog and resume at the next start.
    pub async fn shutdown(&self) {
        let handles: Vec<RunnerHandle> = self
            .runners
            .lock()
            .unwrap()
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in &handles {
            h.stop.send_replace(true);
        }
        for h in handles {
            let _ = h.join.await;
        }
    }

    /// The running applications' figures, for the metrics endpoint.
    pub fn figures(&self) -> Vec<crate::metrics::AnalyticsFigures> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.clock.now_ms();
        self.runners
            .lock()
            .unwrap()
            .iter()
            .map(|(n, h)| {
                let wm = h.stats.watermark_ms.load(Relaxed) as i64;
                crate::metrics::AnalyticsFigures {
                    application: n.clone(),
                    records: h.stats.records_in.load(Relaxed),
                    rows_out: h.stats.rows_out.load(Relaxed),
                    errors: h.stats.errors.load(Relaxed),
                    lag_ms: if wm == 0 { 0 } else { now - wm },
                }
            })
            .collect()
    }

    pub(crate) fn watermark_now(&self) -> i64 {
        self.clock.now_ms() - self.config.watermark_delay_ms as i64
    }
}

fn apply_schema_patch(schema: &mut SourceSchema, patch: SchemaPatch) {
    if let Some(f) = patch.format {
        schema.format = f;
    }
    if let Some(e) = patch.encoding {
        schema.encoding = Some(e);
    }
    if let Some(c) = patch.columns {
        schema.columns = c;
    }
}
