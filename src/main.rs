//! The `freshet` binary: `freshet serve` runs the server; the other subcommands are
//! clients for people.

/// mimalloc rather than glibc malloc: the put path allocates and frees request-sized
/// buffers (hundreds of KiB) all the time, and glibc hands that memory back to the
/// kernel and faults it in again; mimalloc keeps it. +10 % PutRecords throughput,
/// measured (`docs/decisions.md`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use freshet::cli::{self, client::KinesisClient};
use freshet::config::{LogFormat, ServeConfig};

/// Freshet: a self-hosted, Kinesis-compatible streaming platform.
///
/// Start a server with `freshet serve`, then point the AWS CLI, boto3 or any AWS SDK at
/// it with `--endpoint-url http://127.0.0.1:4570`, or use the client commands below.
#[derive(Debug, Parser)]
#[command(name = "freshet", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (embedded storage on local disk; with --cluster, a node of a
    /// cluster)
    Serve {
        /// TOML configuration file; flags and FRESHET_* environment variables override it
        #[arg(long, short, env = "FRESHET_CONFIG")]
        config: Option<std::path::PathBuf>,
        #[command(flatten)]
        settings: Box<ServeConfig>,
    },
    /// Create, list, describe or delete data streams
    Stream {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(subcommand)]
        command: cli::StreamCommand,
    },
    /// Delivery streams (Firehose): list, describe (destination, buffering, last
    /// error), put records
    Delivery {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(subcommand)]
        command: cli::delivery::DeliveryCommand,
    },
    /// Put records into a stream from arguments, a file or standard input
    Put {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        args: cli::PutArgs,
    },
    /// Video streams: push MKV with PutMedia, read it back with GetMedia, list fragments
    Video {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(subcommand)]
        command: cli::video::VideoCommand,
    },
    /// Is the server up and ready, and its main figures (/health, /ready, /metrics)
    Status {
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// A cluster's nodes and leases, read from its PostgreSQL database
    Cluster {
        #[command(subcommand)]
        command: cli::cluster::ClusterCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell)
    ///
    /// bash: `source <(freshet completions bash)`, or save it as
    /// /etc/bash_completion.d/freshet; zsh: save it as `_freshet` in a directory of
    /// $fpath; fish: save it as ~/.config/fish/completions/freshet.fish.
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Run analytics SQL (the Kinesis Data Analytics dialect) over a stream, here, and
    /// print its output rows as they come: a table on a terminal, JSON lines when piped
    ///
    /// The stream is SOURCE_SQL_STREAM_001 (columns inferred from its first records, or
    /// --schema); rows of DESTINATION_SQL_STREAM (or --output) are printed. Example:
    /// `freshet sql counts.sql --stream quotes --from-start --no-follow`.
    Sql {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        args: cli::sql::SqlArgs,
    },
    /// Print a stream's records as they arrive, following all shards (with --group:
    /// the shards a consumer group leases to this worker)
    Tail {
        #[command(flatten)]
        endpoint: Endpoint,
        #[command(flatten)]
        args: cli::TailArgs,
    },
}

#[derive(Debug, clap::Args)]
struct Endpoint {
    /// URL of the Freshet server
    #[arg(
        long,
        env = "FRESHET_ENDPOINT",
        default_value = "http://127.0.0.1:4570",
        global = true
    )]
    endpoint: String,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FRESHET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // One JSON object a line; the fields of the spans a line is in (such as a
        // request's `request_id`) are flattened into it.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// Async worker threads: `TOKIO_WORKER_THREADS` when set, else one more than the CPUs.
/// The storage threads (writer, log workers) run beside the async workers and take CPUs
/// from them while they write and sync; with one worker per CPU, requests on a worker
/// that has lost its CPU wait. One extra worker measured +4.5 % PutRecords throughput on
/// two CPUs, on average over alternating runs (`docs/benchmarks.md`).
fn async_workers() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                + 1
        })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(async_workers())
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve { config, settings } => {
            let settings = match config {
                Some(path) => settings.or(ServeConfig::from_file(&path)?),
                None => *settings,
            };
            init_logging(settings.log_format.unwrap_or(LogFormat::Text));
            runtime.block_on(freshet::server::run(settings))
        }
        Command::Stream { endpoint, command } => runtime.block_on(cli::commands::stream(
            &KinesisClient::new(&endpoint.endpoint),
            command,
        )),
        Command::Delivery { endpoint, command } => runtime.block_on(cli::delivery::run(
            &KinesisClient::new(&endpoint.endpoint),
            command,
        )),
        Command::Put { endpoint, args } => runtime.block_on(cli::commands::put(
            &KinesisClient::new(&endpoint.endpoint),
            args,
        )),
        Command::Video { endpoint, command } => {
            runtime.block_on(cli::video::run(&endpoint.endpoint, command))
        }
        Command::Status { endpoint } => runtime.block_on(cli::status::run(&endpoint.endpoint)),
        Command::Cluster { command } => runtime.block_on(cli::cluster::run(command)),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "freshet",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Sql { endpoint, args } => {
            runtime.block_on(cli::sql::sql(&KinesisClient::new(&endpoint.endpoint), args))
        }
        Command::Tail { endpoint, args } => runtime.block_on(cli::commands::tail(
            &KinesisClient::new(&endpoint.endpoint),
            args,
        )),
    }
}
