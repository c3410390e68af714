//! `freshet-bench`: a load generator for Kinesis Data Streams compatible
//! endpoints (Freshet, kinesalite, ...), speaking the AWS JSON 1.1 wire
//! protocol with SigV4-signed requests over plain HTTP/1.1 keep-alive.
//!
//! `freshet-bench kinesis` runs the PutRecords, GetRecords and visibility
//! phases against one endpoint; `freshet-bench compare` puts two saved JSON
//! results side by side; `freshet-bench video` simulates PutMedia cameras,
//! `freshet-bench rtp` simulates RTP cameras over UDP and `freshet-bench
//! playback` measures HLS playback and GetClip; `freshet-bench delivery` measures
//! delivery streams (Direct PUT to the local directory).

mod analytics;
mod delivery;
mod efo;
mod fragment_index;
mod get;
mod http;
mod kinesis;
mod leases;
mod null_server;
mod playback;
mod put;
mod report;
mod rng;
mod rtp;
mod sigv4;
mod stats;
mod video;
mod visibility;

use clap::{Args, Parser, Subcommand};
use kinesis::Endpoint;
use report::RunReport;
use sigv4::Signer;
use stats::RssSampler;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "freshet-bench",
    version,
    about = "Load generator for Kinesis-compatible endpoints (Freshet, kinesalite, ...)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmark a Kinesis Data Streams endpoint: PutRecords, GetRecords, visibility latency.
    ///
    /// Creates a stream, waits until it is ACTIVE, then runs three phases:
    ///
    /// 1. put: --clients connections send PutRecords calls of --batch records of
    ///    --record-size random bytes (random partition keys) for --duration seconds
    ///    or --calls calls. All request bytes are built and SigV4-signed before the
    ///    clock starts and reused round-robin.
    ///
    /// 2. get: one reader per shard reads everything back from TRIM_HORIZON with
    ///    GetRecords (--get-limit) until caught up.
    ///
    /// 3. visibility: one producer sends a small PutRecord every
    ///    --visibility-interval-ms while one consumer per shard polls GetRecords
    ///    from LATEST in a tight loop; latency is send -> first seen.
    ///
    /// Finally deletes the stream (unless --keep) and prints a table (and, with
    /// --json, one JSON object as the last line of standard output). Progress
    /// goes to standard error. MB/s counts record payload bytes (10^6 bytes),
    /// not base64 or JSON overhead.
    Kinesis(Box<KinesisArgs>),
    /// Print two saved `kinesis --json` results side by side with candidate/baseline ratios.
    Compare(CompareArgs),
    /// Serve canned successful Kinesis answers without storing anything, to
    /// measure the load generator's own ceiling (use `kinesis --skip-get
    /// --skip-visibility` against it).
    NullServer(NullServerArgs),
    /// Simulate Kinesis Video cameras: each creates `cam-<i>`, opens one PutMedia
    /// connection and pushes a looped H.264 clip in real time, one GOP per fragment.
    ///
    /// Each fragment is one Cluster of the clip re-sent with a known size (so the
    /// server sees its end at its last byte) and an ABSOLUTE Timecode (now + 1000 ms
    /// per fragment), optionally padded with a Void element to --pad-kbps. Reports
    /// last byte -> PERSISTED latency, ERROR acks, achieved bitrate, GetMedia
    /// (EARLIEST) time to first byte for --readers periodic readers, and the
    /// server's VmRSS (--server-pid) before, with idle streams, and while streaming.
    Video(VideoArgs),
    /// Benchmark Kinesis Video playback: LIVE playlist delay, HLS fMP4 segment
    /// serving to many players, cold segment throughput and GetClip.
    ///
    /// 1. latency: one producer pushes one 1 s fragment per second (clusters of
    ///    --clip re-timed with increasing ABSOLUTE timecodes) to `<prefix>live`
    ///    while one watcher polls the LIVE media playlist every --poll-interval-ms;
    ///    per fragment: first listed - PERSISTED ack received.
    ///
    /// 2. live: --players hls.js-like players join the same LIVE stream; each gets
    ///    a session URL, the master playlist, then every target duration the media
    ///    playlist, the init segment once and every new media segment. The watcher
    ///    keeps measuring phase 1's delay under this load.
    ///
    /// 3. cold: --cold-fragments fragments are pushed to `<prefix>vod` as fast as
    ///    possible, then --cold-players workers fetch them through one ON_DEMAND
    ///    session as fast as possible (shuffled, cycling over the pool; a pool
    ///    larger than the server's 128 MiB segment cache makes every request a miss).
    ///
    /// 4. clip: --clip-seconds fragments are pushed to `<prefix>clip` as fast as
    ///    possible, then GetClip over that many seconds is timed --clip-repeats times;
    ///    also over as many seconds from the middle of `<prefix>vod` (PRODUCER_TIMESTAMP)
    ///    when phase 3 ran.
    ///
    /// Prints a table (progress goes to standard error); --json FILE also writes
    /// the results as JSON. Streams are not deleted.
    Playback(Box<PlaybackArgs>),
    /// Simulate RTP cameras: N H.264 feeds over UDP on loopback, paced in real time,
    /// against Freshet's RTP feeds or any receiver already bound to the ports.
    ///
    /// A 10 s clip (ffmpeg testsrc2 640x360, libx264, GOP 2 s, no B-frames, at
    /// --kbps; or --clip FILE, H.264 Annex-B) is split into access units and
    /// packetized once (RFC 6184: single NAL units up to 1400 bytes, FU-A above).
    /// Camera i sends to port --base-port + 2i (RTCP Sender Reports every 5 s to
    /// the port above), looping the clip with continuous timestamps, its frames
    /// spread over the frame interval and its key frames over the GOP.
    ///
    /// --target freshet creates feeds `<prefix><i>` through PUT /v1/video/feeds/{stream}
    /// first, reads their counters after they have gone idle and deletes them.
    /// --target udp-only waits until every RTP port is bound (e.g. by GStreamer)
    /// and only reads kernel and process figures. Both report the receiving
    /// processes' CPU and RSS (--server-pid, repeatable, summed), the kernel's UDP
    /// drops (/proc/net/snmp, /proc/net/udp) and the sender's own CPU and lateness.
    Rtp(Box<RtpArgs>),
    /// Benchmark ListFragments against stream size (the persistent fragment index).
    ///
    /// For each --fragments N: starts --freshet-bin on a fresh directory under
    /// --data-dir, fills stream `idx-<N>` with N small synthetic fragments (1 s apart
    /// in producer time, ending now) through PutMedia, then times ListFragments for a
    /// random --window-secs PRODUCER_TIMESTAMP window: --queries times warm, and the
    /// first query after each of --restarts restarts (SIGTERM, start) cold; then the
    /// first HLS playback after as many restarts, and GetMedia PRODUCER_TIMESTAMP at a
    /// random time to its first body byte (--queries / 4 warm, one after each of as
    /// many restarts). Prints p50/p99/max, the index's bytes per fragment and
    /// /health's rebuild counter.
    FragmentIndex(FragmentIndexArgs),
    /// Enhanced fan-out latency: put -> SubscribeToShard, p50/p99 per consumer count.
    ///
    /// For each --consumers N: a one-shard stream with N registered consumers, each
    /// subscribed from LATEST over HTTP/1.1; one producer sends --samples PutRecords
    /// --interval-ms apart; a sample's latency is from just before its request is
    /// written to the moment a consumer has parsed the event carrying it.
    Efo(EfoArgs),
    /// Benchmark analytics applications end to end: events/s through a tumbling-window
    /// GROUP BY over --keys keys into an output stream, and the delay from a window's
    /// end to its result record.
    ///
    /// Loads --records records into a fresh input stream, starts an application from
    /// TRIM_HORIZON and times it until the server's freshet_analytics_records_total
    /// reaches --records; then puts --rate records/s for --live-secs while reading the
    /// output stream: a row's delay is its output record's arrival time minus its
    /// window's end. Repeat with --runs for medians.
    Analytics(AnalyticsArgs),
    /// Lease-store renewals: conditional UpdateItem (KCL's lease renew) operations/s and
    /// p50/p99 latency with each --clients N clients, against a running server.
    Leases(LeasesArgs),
    /// Delivery streams: Direct PUT throughput to the local-directory destination and
    /// put -> visible latency.
    ///
    /// Each run starts --freshet-bin on a fresh --data-dir and creates a DirectPut
    /// delivery stream (uncompressed, BufferingHints --buffer-mb / --buffer-seconds).
    /// For --duration seconds, --clients connections send PutRecordBatch calls of 500
    /// records of --record-size bytes while one more puts a marker record every
    /// --marker-interval-ms and a watcher lists the bucket's directory every 5 ms. Then
    /// it waits until every acknowledged byte is in an object. Reports put MB/s and
    /// records/s (acknowledged), delivered MB/s (bytes that became visible during the
    /// put phase), the drain time, end-to-end MB/s (every acknowledged byte over the put
    /// phase and the drain), put -> visible p50/p99/max of the markers, and CPU
    /// seconds of the server and the bench. --runs N repeats it (medians in the table);
    /// --json prints every run as one JSON object on the last line.
    Delivery(DeliveryArgs),
}

#[derive(Args, Debug)]
struct DeliveryArgs {
    /// The freshet binary to start (use a release build for figures).
    #[arg(long)]
    freshet_bin: std::path::PathBuf,
    /// The server's data directory (replaced by each run, removed after it).
    #[arg(long, default_value = "/tmp/freshet-bench-delivery")]
    data_dir: std::path::PathBuf,
    /// Concurrent PutRecordBatch connections.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Bytes of each record (500 a call; at most 8,388 so that a call stays within 4 MiB).
    #[arg(long, default_value_t = 1000)]
    record_size: usize,
    /// Seconds of the put phase.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// BufferingHints.SizeInMBs (1-128).
    #[arg(long, default_value_t = 5)]
    buffer_mb: u32,
    /// BufferingHints.IntervalInSeconds (0-900).
    #[arg(long, default_value_t = 1)]
    buffer_seconds: u32,
    /// Milliseconds between two marker records.
    #[arg(long, default_value_t = 100)]
    marker_interval_ms: u64,
    /// Seconds to wait after the put phase for every acknowledged byte to be delivered.
    #[arg(long, default_value_t = 120.0)]
    drain_timeout: f64,
    /// Runs, each on a fresh server.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// GZIP objects (CompressionFormat GZIP) instead of uncompressed ones.
    #[arg(long)]
    gzip: bool,
    /// Dynamic partitioning over this many keys: records become JSON lines with a key
    /// field, partitioned by a jq MetadataExtraction query (0: none).
    #[arg(long, default_value_t = 0)]
    partition_keys: u32,
    /// Deliver to an S3-compatible server at this http:// URL (`--delivery-s3 s3`, path
    /// style, credentials test/test, region us-east-1, which moto_server accepts)
    /// instead of the local directory.
    #[arg(long)]
    s3_endpoint: Option<String>,
    /// Also print the results as one JSON object on the last line of standard output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct LeasesArgs {
    /// Base URL of a plain-HTTP endpoint on loopback.
    #[arg(long, default_value = "http://127.0.0.1:4567")]
    endpoint: String,
    /// Client counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// Seconds per client count.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

#[derive(Args, Debug)]
struct AnalyticsArgs {
    /// Base URL of a plain-HTTP Freshet endpoint on loopback.
    #[arg(long, default_value = "http://127.0.0.1:4570")]
    endpoint: String,
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    #[arg(long, default_value_t = 2)]
    shards: u32,
    /// Tumbling window width in seconds.
    #[arg(long, default_value_t = 1)]
    window_secs: u64,
    /// Live phase: records/s.
    #[arg(long, default_value_t = 5_000)]
    rate: usize,
    #[arg(long, default_value_t = 10)]
    live_secs: u64,
    /// Connections loading the backlog.
    #[arg(long, default_value_t = 4)]
    loaders: usize,
    /// Runs (each with fresh streams); the table shows every run and the medians.
    #[arg(long, default_value_t = 1)]
    runs: usize,
}

#[derive(Args, Debug)]
struct EfoArgs {
    /// Base URL of a plain-HTTP Kinesis endpoint on loopback.
    #[arg(long, default_value = "http://127.0.0.1:4567")]
    endpoint: String,
    /// Consumer counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,5,20")]
    consumers: Vec<usize>,
    #[arg(long, default_value_t = 500)]
    samples: usize,
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
}

#[derive(Args, Debug)]
struct FragmentIndexArgs {
    /// The freshet binary to start (use a release build for figures).
    #[arg(long)]
    freshet_bin: std::path::PathBuf,
    /// Where the servers' data directories go (one per size, replaced each run).
    #[arg(long, default_value = "/tmp/freshet-bench-fragment-index")]
    data_dir: std::path::PathBuf,
    /// Stream sizes in fragments, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,100000")]
    fragments: Vec<usize>,
    /// Warm queries per size.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Restarts per size (one cold query each).
    #[arg(long, default_value_t = 5)]
    restarts: usize,
    /// Length of the queried window in seconds.
    #[arg(long, default_value_t = 60)]
    window_secs: u64,
    /// Instead of the sizes: start-up with this many video streams of
    /// --startup-fragments fragments each (time to /ready and the first ListFragments
    /// after clean and crash restarts).
    #[arg(long)]
    startup_streams: Option<usize>,
    /// Fragments per stream for --startup-streams.
    #[arg(long, default_value_t = 1000)]
    startup_fragments: usize,
    /// Clip whose EBML header, Info and Tracks head the synthetic fragments.
    #[arg(long, default_value = "media-samples/h264-1s-gop.kvs.mkv")]
    clip: std::path::PathBuf,
}

#[derive(Args, Debug)]
struct RtpArgs {
    /// Freshet's endpoint URL, plain HTTP (for --target freshet; its host is also
    /// where the RTP packets go unless --rtp-host is given).
    #[arg(long, default_value = "http://127.0.0.1:4570")]
    endpoint: String,
    /// Allow an endpoint (or --rtp-host) that is not a loopback address.
    #[arg(long)]
    allow_non_loopback: bool,
    /// Receiver: freshet (create feeds through the API) or udp-only (ports already bound).
    #[arg(long, value_enum, default_value_t = rtp::Target::Freshet)]
    target: rtp::Target,
    /// IP address the RTP/RTCP packets are sent to [default: the endpoint's, 127.0.0.1 for udp-only].
    #[arg(long)]
    rtp_host: Option<std::net::IpAddr>,
    /// Number of cameras.
    #[arg(long, default_value_t = 200)]
    cameras: usize,
    /// Bitrate of each camera in kbit/s (the generated clip's, padded with filler NAL units if below).
    #[arg(long, default_value_t = 1000)]
    kbps: u64,
    /// Frames per second.
    #[arg(long, default_value_t = 25)]
    fps: u32,
    /// Seconds each camera sends (start times are spread over one GOP, 2 s, on top).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// RTP port of camera 0; camera i uses base + 2i (RTP) and base + 2i + 1 (RTCP).
    #[arg(long, default_value_t = 20000)]
    base_port: u16,
    /// Process id of a receiving process (repeatable, or comma-separated): CPU and RSS, summed.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// H.264 Annex-B file to send instead of a generated clip.
    #[arg(long)]
    clip: Option<std::path::PathBuf>,
    /// Seconds of the generated clip.
    #[arg(long, default_value_t = 10)]
    clip_seconds: u32,
    /// ffmpeg binary used to generate the clip.
    #[arg(long, default_value = "ffmpeg")]
    ffmpeg: String,
    /// OS threads sending (each owns a share of the cameras and one UDP socket).
    #[arg(long, default_value_t = 1)]
    sender_threads: usize,
    /// Seconds to wait after the last packet before reading Freshet's feed counters
    /// (a feed stores its last fragment 5 s after its last packet).
    #[arg(long, default_value_t = 6.0)]
    settle: f64,
    /// --target udp-only: seconds to wait for every RTP port to be bound.
    #[arg(long, default_value_t = 60.0)]
    wait_ports: f64,
    /// Feed (stream) name prefix.
    #[arg(long, default_value = "rtpcam-")]
    prefix: String,
    /// Keep the feeds at the end instead of deleting them.
    #[arg(long)]
    keep_feeds: bool,
    /// Name of the receiver in the tables [default: the target's name].
    #[arg(long)]
    label: Option<String>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Do not run: print saved --json results side by side (repeatable).
    #[arg(long)]
    compare: Vec<std::path::PathBuf>,
}

#[derive(Args, Debug)]
struct PlaybackArgs {
    /// Endpoint URL, plain HTTP (e.g. http://127.0.0.1:4570).
    #[arg(long, default_value = "http://127.0.0.1:4570")]
    endpoint: String,
    /// Allow an endpoint that does not resolve to a loopback address.
    #[arg(long)]
    allow_non_loopback: bool,
    /// Source clip (kvssink layout, one Cluster per GOP, 8-byte Cluster Timecodes).
    #[arg(long, default_value = "media-samples/h264-1s-gop.kvs.mkv")]
    clip: std::path::PathBuf,
    /// Seconds of the quiet latency phase (one producer, one watcher).
    #[arg(long, default_value_t = 15.0)]
    latency_duration: f64,
    /// Milliseconds between two LIVE playlist polls of the watcher.
    #[arg(long, default_value_t = 2)]
    poll_interval_ms: u64,
    /// Concurrent LIVE players.
    #[arg(long, default_value_t = 100)]
    players: usize,
    /// Seconds the LIVE players play (after joining).
    #[arg(long, default_value_t = 20.0)]
    live_duration: f64,
    /// Seconds over which the players join.
    #[arg(long, default_value_t = 1.0)]
    player_ramp: f64,
    /// Segments a joining player fetches first (the newest ones; hls.js starts 3
    /// target durations behind the live edge).
    #[arg(long, default_value_t = 3)]
    start_segments: usize,
    /// Concurrent workers of the cold phase.
    #[arg(long, default_value_t = 16)]
    cold_players: usize,
    /// Seconds of the cold phase.
    #[arg(long, default_value_t = 20.0)]
    cold_duration: f64,
    /// Distinct stored fragments the cold phase cycles over (more than the server's
    /// 128 MiB segment cache holds, so that every request remuxes).
    #[arg(long, default_value_t = 6000)]
    cold_fragments: usize,
    /// Fragments (seconds of media) pushed for, and covered by, the GetClip range.
    #[arg(long, default_value_t = 60)]
    clip_seconds: usize,
    /// GetClip calls timed.
    #[arg(long, default_value_t = 5)]
    clip_repeats: usize,
    /// Skip the quiet latency phase.
    #[arg(long)]
    skip_latency: bool,
    /// Skip the LIVE players phase.
    #[arg(long)]
    skip_live: bool,
    /// Skip the cold ON_DEMAND phase.
    #[arg(long)]
    skip_cold: bool,
    /// Skip the GetClip phase.
    #[arg(long)]
    skip_clip: bool,
    /// Stream name prefix [default: pb-<unix time>-].
    #[arg(long)]
    prefix: Option<String>,
    /// DataRetentionInHours of the created streams.
    #[arg(long, default_value_t = 1)]
    retention_hours: u32,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Process id of the server: report its CPU time per phase and its RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Tokio worker threads for the load generator [default: number of CPUs].
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args, Debug)]
struct VideoArgs {
    /// Endpoint URL, plain HTTP (e.g. http://127.0.0.1:4570).
    #[arg(long, default_value = "http://127.0.0.1:4570")]
    endpoint: String,
    /// Allow an endpoint that does not resolve to a loopback address.
    #[arg(long)]
    allow_non_loopback: bool,
    /// Number of cameras (streams cam-0 .. cam-N-1, one PutMedia connection each).
    #[arg(long, default_value_t = 10)]
    cameras: usize,
    /// Streaming time in seconds (after the ramp).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds over which camera start times are spread.
    #[arg(long, default_value_t = 1.0)]
    ramp: f64,
    /// Source clip (kvssink layout, one Cluster per GOP, 8-byte Cluster Timecodes).
    #[arg(long, default_value = "media-samples/h264-1s-gop.kvs.mkv")]
    clip: std::path::PathBuf,
    /// Pad each fragment with a Void element to reach this many kbit/s per camera (0: the clip's own rate).
    #[arg(long, default_value_t = 0)]
    pad_kbps: u64,
    /// Concurrent GetMedia (EARLIEST) readers, each issuing one request per --reader-interval.
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// Seconds between one reader's GetMedia requests.
    #[arg(long, default_value_t = 1.0)]
    reader_interval: f64,
    /// Stream name prefix.
    #[arg(long, default_value = "cam-")]
    prefix: String,
    /// DataRetentionInHours of the created streams.
    #[arg(long, default_value_t = 2)]
    retention_hours: u32,
    /// Seconds to wait for outstanding acks after the last fragment.
    #[arg(long, default_value_t = 10.0)]
    grace: f64,
    /// Process id of the server, for VmRSS sampling.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Tokio worker threads for the load generator [default: number of CPUs].
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args, Debug)]
struct NullServerArgs {
    /// Address to listen on (loopback).
    #[arg(long, default_value = "127.0.0.1:4599")]
    listen: String,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 600.0)]
    seconds: f64,
}

#[derive(Args, Debug)]
struct KinesisArgs {
    /// Endpoint URL, plain HTTP (e.g. http://127.0.0.1:4567), or HTTPS with --ca-file.
    #[arg(long, default_value = "http://127.0.0.1:4567")]
    endpoint: String,

    /// PEM file with the CA certificates that verify an https:// endpoint.
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,

    /// Allow an endpoint that does not resolve to a loopback address.
    #[arg(long)]
    allow_non_loopback: bool,

    /// Stream to create and use [default: freshet-bench-<unix time>-<pid>].
    #[arg(long)]
    stream: Option<String>,

    /// Shard count of the stream.
    #[arg(long, default_value_t = 4)]
    shards: u32,

    /// Keep the stream at the end instead of deleting it.
    #[arg(long)]
    keep: bool,

    /// Concurrent PutRecords connections in the put phase.
    #[arg(long, default_value_t = 8)]
    clients: usize,

    /// Records per PutRecords call (Kinesis allows at most 500).
    #[arg(long, default_value_t = 500)]
    batch: usize,

    /// Payload bytes per record (random, incompressible).
    #[arg(long, default_value_t = 1024)]
    record_size: usize,

    /// Put phase length in seconds [default: 20, or 600 as a cap when --calls is given].
    #[arg(long)]
    duration: Option<f64>,

    /// Stop the put phase after this many PutRecords calls in total (across clients).
    #[arg(long)]
    calls: Option<u64>,

    /// Distinct prepared PutRecords requests per client, reused round-robin.
    #[arg(long, default_value_t = 16)]
    pool: usize,

    /// Skip the put phase (then the get phase reads whatever the stream holds; with
    /// --stream, an existing stream is read and not created).
    #[arg(long)]
    skip_put: bool,

    /// Skip the GetRecords phase.
    #[arg(long)]
    skip_get: bool,

    /// `Limit` of each GetRecords call in the get phase (Kinesis allows at most 10000).
    #[arg(long, default_value_t = 10_000)]
    get_limit: u32,

    /// Upper bound on the get phase, in seconds.
    #[arg(long, default_value_t = 300.0)]
    get_max_duration: f64,

    /// Skip the visibility phase.
    #[arg(long)]
    skip_visibility: bool,

    /// Records the visibility producer sends (one PutRecord each).
    #[arg(long, default_value_t = 500)]
    visibility_samples: usize,

    /// Milliseconds between visibility PutRecord calls.
    #[arg(long, default_value_t = 10)]
    visibility_interval_ms: u64,

    /// Seconds to keep polling for unseen visibility samples after the last send.
    #[arg(long, default_value_t = 5.0)]
    visibility_grace: f64,

    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,

    /// Seconds to wait for the new stream to become ACTIVE.
    #[arg(long, default_value_t = 60.0)]
    create_timeout: f64,

    /// Process id of the server: report its peak RSS (VmHWM; VmRSS sampled every 100 ms)
    /// and the CPU seconds it used in each phase.
    #[arg(long)]
    server_pid: Option<u32>,

    /// Name for this target in the table and JSON (e.g. freshet, kinesalite).
    #[arg(long, default_value = "target")]
    label: String,

    /// Also print the results as one JSON object on the last line of standard output.
    #[arg(long)]
    json: bool,

    /// Write the JSON result to this file as well.
    #[arg(long)]
    json_file: Option<std::path::PathBuf>,

    /// SigV4 access key id.
    #[arg(long, default_value = "AKIDEXAMPLE")]
    access_key: String,

    /// SigV4 secret access key.
    #[arg(long, default_value = "secret")]
    secret_key: String,

    /// SigV4 region.
    #[arg(long, default_value = "us-east-1")]
    region: String,

    /// Tokio worker threads for the load generator [default: number of CPUs].
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args, Debug)]
struct CompareArgs {
    /// JSON result of the baseline run (e.g. kinesalite).
    baseline: std::path::PathBuf,
    /// JSON result of the candidate run (e.g. freshet).
    candidate: std::path::PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Kinesis(args) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.threads {
                rt.worker_threads(n.max(1));
            }
            let rt = rt.enable_all().build().expect("tokio runtime");
            match rt.block_on(kinesis_command(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("freshet-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::NullServer(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let limit = Duration::from_secs_f64(args.seconds);
            match rt.block_on(async {
                tokio::time::timeout(limit, null_server::serve(&args.listen)).await
            }) {
                Ok(Err(e)) => {
                    eprintln!("freshet-bench null-server: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Command::Video(args) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.threads {
                rt.worker_threads(n.max(1));
            }
            let rt = rt.enable_all().build().expect("tokio runtime");
            match rt.block_on(video_command(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("freshet-bench video: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Playback(args) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.threads {
                rt.worker_threads(n.max(1));
            }
            let rt = rt.enable_all().build().expect("tokio runtime");
            match rt.block_on(playback_command(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("freshet-bench playback: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Rtp(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(rtp_command(*args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("freshet-bench rtp: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::FragmentIndex(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(fragment_index_command(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("freshet-bench fragment-index: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Leases(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(leases_command(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("freshet-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Analytics(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(analytics_command(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("freshet-bench analytics: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Efo(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(efo_command(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("freshet-bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Delivery(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(delivery_command(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("freshet-bench delivery: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Compare(args) => match compare_command(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("freshet-bench compare: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

type BoxError = Box<dyn std::error::Error>;

fn compare_command(args: &CompareArgs) -> Result<(), BoxError> {
    let load = |p: &std::path::Path| -> Result<RunReport, BoxError> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(serde_json::from_str(text.trim()).map_err(|e| format!("{}: {e}", p.display()))?)
    };
    let (base, cand) = (load(&args.baseline)?, load(&args.candidate)?);
    print!("{}", report::compare(&base, &cand));
    Ok(())
}

async fn delivery_command(
    args: DeliveryArgs,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let largest = delivery::BATCH * args.record_size;
    if args.record_size == 0 || largest > 4 * 1024 * 1024 {
        return Err(format!(
            "--record-size must be 1 to {} (500 records a call, 4 MiB a call)",
            4 * 1024 * 1024 / delivery::BATCH
        )
        .into());
    }
    if !(1..=128).contains(&args.buffer_mb) || args.buffer_seconds > 900 {
        return Err("--buffer-mb must be 1-128 and --buffer-seconds 0-900".into());
    }
    if args.clients == 0 || args.duration <= 0.0 || args.marker_interval_ms == 0 {
        return Err("--clients, --duration and --marker-interval-ms must be positive".into());
    }
    if args.partition_keys > 0 && args.record_size < delivery::MIN_PARTITIONED_RECORD {
        return Err(format!(
            "--record-size must be at least {} with --partition-keys (a JSON line)",
            delivery::MIN_PARTITIONED_RECORD
        )
        .into());
    }
    let cfg = delivery::DeliveryConfig {
        freshet_bin: args.freshet_bin,
        data_dir: args.data_dir,
        clients: args.clients,
        record_size: args.record_size,
        duration: Duration::from_secs_f64(args.duration),
        buffer_mb: args.buffer_mb,
        buffer_seconds: args.buffer_seconds,
        marker_interval: Duration::from_millis(args.marker_interval_ms),
        drain_timeout: Duration::from_secs_f64(args.drain_timeout),
        gzip: args.gzip,
        partition_keys: args.partition_keys,
        s3_endpoint: args.s3_endpoint.clone(),
    };
    let mut runs = Vec::new();
    for i in 0..args.runs.max(1) {
        eprintln!("delivery: run {} of {}", i + 1, args.runs.max(1));
        runs.push(delivery::run(&cfg).await?);
    }
    print!("{}", delivery::table(&cfg, &runs));
    if args.json {
        let json = serde_json::json!({
            "clients": cfg.clients,
            "record_size": cfg.record_size,
            "duration_secs": cfg.duration.as_secs_f64(),
            "buffer_mb": cfg.buffer_mb,
            "buffer_seconds": cfg.buffer_seconds,
            "marker_interval_ms": args.marker_interval_ms,
            "gzip": cfg.gzip,
            "partition_keys": cfg.partition_keys,
            "s3_endpoint": cfg.s3_endpoint,
            "runs": runs,
        });
        println!("{json}");
    }
    Ok(())
}

async fn fragment_index_command(
    args: FragmentIndexArgs,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if args.fragments.is_empty() || args.queries == 0 {
        return Err("--fragments and --queries must not be empty or zero".into());
    }
    let data = std::fs::read(&args.clip).map_err(|e| format!("{}: {e}", args.clip.display()))?;
    let clip = video::Clip::parse(&data)?;
    if let Some(streams) = args.startup_streams {
        if streams == 0 || args.startup_fragments == 0 || args.restarts == 0 {
            return Err(
                "--startup-streams, --startup-fragments and --restarts must be positive".into(),
            );
        }
        return fragment_index::startup(
            fragment_index::StartupConfig {
                freshet_bin: args.freshet_bin,
                data_dir: args.data_dir,
                streams,
                fragments: args.startup_fragments,
                restarts: args.restarts,
                window_secs: args.window_secs,
            },
            clip,
        )
        .await;
    }
    fragment_index::run(
        fragment_index::IndexConfig {
            freshet_bin: args.freshet_bin,
            data_dir: args.data_dir,
            sizes: args.fragments,
            queries: args.queries,
            restarts: args.restarts,
            window_secs: args.window_secs,
        },
        clip,
    )
    .await
}

async fn video_command(args: VideoArgs) -> Result<(), BoxError> {
    if args.cameras == 0 || args.duration <= 0.0 {
        return Err("--cameras and --duration must be positive".into());
    }
    let (addr, host) = resolve_endpoint(&args.endpoint, args.allow_non_loopback).await?;
    let data = std::fs::read(&args.clip).map_err(|e| format!("{}: {e}", args.clip.display()))?;
    let clip = video::Clip::parse(&data).map_err(|e| format!("{}: {e}", args.clip.display()))?;
    eprintln!(
        "clip {}: {} header bytes, {} clusters, {} bytes per cluster on average",
        args.clip.display(),
        clip.header.len(),
        clip.clusters.len(),
        clip.mean_cluster_bytes()
    );
    let cfg = video::VideoConfig {
        addr,
        host,
        cameras: args.cameras,
        duration: Duration::from_secs_f64(args.duration),
        pad_kbps: args.pad_kbps,
        readers: args.readers,
        reader_interval: Duration::from_secs_f64(args.reader_interval.max(0.01)),
        server_pid: args.server_pid,
        retention_hours: args.retention_hours,
        stream_prefix: args.prefix.clone(),
        grace: Duration::from_secs_f64(args.grace),
        ramp: Duration::from_secs_f64(args.ramp),
    };
    let report = video::run(cfg, clip).await.map_err(|e| e.to_string())?;
    print!("{}", video::table(&report, args.duration + args.ramp));
    Ok(())
}

async fn rtp_command(args: RtpArgs) -> Result<(), BoxError> {
    if !args.compare.is_empty() {
        let mut runs = Vec::new();
        for p in &args.compare {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let r: rtp::RtpReport =
                serde_json::from_str(text.trim()).map_err(|e| format!("{}: {e}", p.display()))?;
            runs.push(r);
        }
        print!("{}", rtp::compare(&runs));
        return Ok(());
    }
    if args.cameras == 0 || args.duration <= 0.0 || args.fps == 0 || args.kbps == 0 {
        return Err("--cameras, --duration, --fps and --kbps must be positive".into());
    }
    if usize::from(args.base_port) + 2 * args.cameras > 65_535 {
        return Err("--base-port + 2 x --cameras exceeds the port range".into());
    }
    let endpoint = match args.target {
        rtp::Target::Freshet => {
            Some(resolve_endpoint(&args.endpoint, args.allow_non_loopback).await?)
        }
        rtp::Target::UdpOnly => None,
    };
    let dest = match (args.rtp_host, &endpoint) {
        (Some(ip), _) => ip,
        (None, Some((addr, _))) => addr.ip(),
        (None, None) => std::net::IpAddr::from([127u8, 0, 0, 1]),
    };
    if !args.allow_non_loopback && !dest.is_loopback() {
        return Err(format!(
            "--rtp-host {dest} is not a loopback address; pass --allow-non-loopback"
        )
        .into());
    }
    let (clip, source) = rtp::load_clip(
        args.clip.as_deref(),
        &args.ffmpeg,
        args.kbps,
        args.fps,
        args.clip_seconds.max(1),
    )
    .map_err(|e| e.to_string())?;
    let cfg = rtp::RtpConfig {
        target: args.target,
        endpoint,
        dest,
        cameras: args.cameras,
        kbps: args.kbps,
        duration: Duration::from_secs_f64(args.duration),
        base_port: args.base_port,
        server_pids: args.server_pid.clone(),
        sender_threads: args.sender_threads.max(1),
        settle: Duration::from_secs_f64(args.settle.max(0.0)),
        wait_ports: Duration::from_secs_f64(args.wait_ports.max(0.0)),
        prefix: args.prefix.clone(),
        keep_feeds: args.keep_feeds,
        label: args.label.clone().unwrap_or_else(|| {
            match args.target {
                rtp::Target::Freshet => "freshet",
                rtp::Target::UdpOnly => "udp-only",
            }
            .to_string()
        }),
    };
    let report = rtp::run(cfg, clip, source)
        .await
        .map_err(|e| e.to_string())?;
    print!("{}", rtp::table(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string(&report)?;
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

async fn playback_command(args: PlaybackArgs) -> Result<(), BoxError> {
    if args.players == 0 || args.cold_players == 0 || args.cold_fragments == 0 {
        return Err("--players, --cold-players and --cold-fragments must be positive".into());
    }
    if args.clip_seconds == 0 || args.clip_seconds > 200 {
        return Err("--clip-seconds must be 1..=200 (GetClip takes at most 200 fragments)".into());
    }
    let (addr, host) = resolve_endpoint(&args.endpoint, args.allow_non_loopback).await?;
    let data = std::fs::read(&args.clip).map_err(|e| format!("{}: {e}", args.clip.display()))?;
    let clip = video::Clip::parse(&data).map_err(|e| format!("{}: {e}", args.clip.display()))?;
    let prefix = args.prefix.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!("pb-{secs}-")
    });
    let secs = |v: f64| Duration::from_secs_f64(v.max(0.0));
    let cfg = playback::PlaybackConfig {
        addr,
        host,
        endpoint: args.endpoint.clone(),
        players: args.players,
        player_ramp: secs(args.player_ramp),
        start_segments: args.start_segments.max(1),
        live_duration: secs(args.live_duration),
        latency_duration: secs(args.latency_duration),
        poll_interval: Duration::from_millis(args.poll_interval_ms.max(1)),
        cold_players: args.cold_players,
        cold_duration: secs(args.cold_duration),
        cold_fragments: args.cold_fragments,
        clip_seconds: args.clip_seconds,
        clip_repeats: args.clip_repeats.max(1),
        prefix,
        retention_hours: args.retention_hours.max(1),
        server_pid: args.server_pid,
        timeout: secs(args.timeout.max(0.1)),
        skip_latency: args.skip_latency,
        skip_live: args.skip_live,
        skip_cold: args.skip_cold,
        skip_clip: args.skip_clip,
    };
    let report = playback::run(cfg, clip).await.map_err(|e| e.to_string())?;
    print!("{}", playback::table(&report));
    if let Some(path) = &args.json {
        let json = serde_json::to_string(&report)?;
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Parses `http://host:port[/]` into (address, Host header value).
async fn resolve_endpoint(
    url: &str,
    allow_non_loopback: bool,
) -> Result<(SocketAddr, String), BoxError> {
    let (rest, default_port) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, 80),
        (None, Some(rest)) => (rest, 443),
        _ => return Err(format!("endpoint {url:?} must start with http:// or https://").into()),
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("endpoint {url:?} has no host").into());
    }
    let has_port = match authority.rfind(']') {
        Some(i) => authority[i..].contains(':'),
        None => authority.contains(':'),
    };
    let host_port = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host_port.as_str())
        .await
        .map_err(|e| format!("resolving {authority}: {e}"))?
        .collect();
    let addr = *addrs
        .first()
        .ok_or_else(|| format!("{authority} resolves to no address"))?;
    if !allow_non_loopback && !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(format!(
            "{authority} is not a loopback address; pass --allow-non-loopback to load it anyway"
        )
        .into());
    }
    Ok((addr, authority.to_string()))
}

async fn leases_command(args: LeasesArgs) -> Result<(), BoxError> {
    let (addr, host) = resolve_endpoint(&args.endpoint, false).await?;
    let ep = Arc::new(Endpoint {
        addr,
        host,
        signer: Signer::new("test", "test", "us-east-1", "dynamodb"),
        timeout: Duration::from_secs(30),
    });
    println!("clients  renewals  ops_per_s  p50_ms  p99_ms");
    for n in args.clients {
        let secs = Duration::from_secs(args.seconds.max(1));
        let (ops, mut lat) = leases::run(ep.clone(), n.max(1), secs)
            .await
            .map_err(|e| e.to_string())?;
        let (p50, p99, _) = lat.summary();
        println!(
            "{n:>7}  {ops:>8}  {:>9.0}  {p50:>6.2}  {p99:>6.2}",
            ops as f64 / secs.as_secs_f64()
        );
    }
    Ok(())
}

async fn analytics_command(args: AnalyticsArgs) -> Result<(), BoxError> {
    let (addr, host) = resolve_endpoint(&args.endpoint, false).await?;
    let ep = Arc::new(Endpoint {
        addr,
        host,
        signer: Signer::new("test", "test", "us-east-1", "kinesis"),
        timeout: Duration::from_secs(60),
    });
    println!(
        "run  records  load_s  process_s  events/s  rows_out  delay_n  delay_p50_ms  delay_p99_ms  delay_max_ms"
    );
    let mut rates = Vec::new();
    let mut p99s = Vec::new();
    for run in 0..args.runs.max(1) {
        let name = format!("bench-analytics-{}-{run}", std::process::id());
        let r = analytics::run(
            ep.clone(),
            &name,
            args.records,
            args.keys,
            args.shards,
            args.window_secs,
            args.rate,
            args.live_secs,
            args.loaders,
        )
        .await?;
        println!(
            "{:>3}  {:>7}  {:>6.2}  {:>9.2}  {:>8.0}  {:>8}  {:>7}  {:>12.1}  {:>12.1}  {:>12.1}",
            run + 1,
            r.records,
            r.load_secs,
            r.process_secs,
            r.events_per_sec,
            r.rows_out,
            r.delay_samples,
            r.delay_p50_ms,
            r.delay_p99_ms,
            r.delay_max_ms
        );
        rates.push(r.events_per_sec);
        p99s.push(r.delay_p99_ms);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "median events/s {:.0}, median window delay p99 {:.1} ms",
        median(&mut rates),
        median(&mut p99s)
    );
    Ok(())
}

async fn efo_command(args: EfoArgs) -> Result<(), BoxError> {
    let (addr, host) = resolve_endpoint(&args.endpoint, false).await?;
    let ep = Arc::new(Endpoint {
        addr,
        host,
        signer: Signer::new("test", "test", "us-east-1", "kinesis"),
        timeout: Duration::from_secs(30),
    });
    println!("consumers  deliveries  p50_ms  p99_ms  max_ms");
    for n in args.consumers {
        let stream = format!("freshet-bench-efo-{n}-{}", std::process::id());
        let r = efo::run(
            ep.clone(),
            &stream,
            n,
            args.samples,
            Duration::from_millis(args.interval_ms),
        )
        .await?;
        println!(
            "{:>9}  {:>5}/{:<5}  {:>6.2}  {:>6.2}  {:>6.2}",
            r.consumers, r.deliveries, r.expected, r.p50_ms, r.p99_ms, r.max_ms
        );
    }
    Ok(())
}

async fn kinesis_command(args: KinesisArgs) -> Result<(), BoxError> {
    if args.batch == 0 || args.clients == 0 || args.pool == 0 || args.shards == 0 {
        return Err("--batch, --clients, --pool and --shards must be positive".into());
    }
    let https = args.endpoint.starts_with("https://");
    match (&args.ca_file, https) {
        (Some(ca), true) => {
            let authority = args.endpoint["https://".len()..].split('/').next();
            let host = authority.unwrap_or_default();
            let name = match host.rfind(']') {
                Some(i) => host[1..i].to_string(),
                None => host.rsplit_once(':').map_or(host, |(h, _)| h).to_string(),
            };
            crate::http::use_tls(ca, &name)?;
        }
        (None, true) => return Err("an https:// endpoint needs --ca-file".into()),
        (Some(_), false) => return Err("--ca-file is for https:// endpoints".into()),
        (None, false) => {}
    }
    let (addr, host) = resolve_endpoint(&args.endpoint, args.allow_non_loopback).await?;
    let ep = Arc::new(Endpoint {
        addr,
        host,
        signer: Signer::new(&args.access_key, &args.secret_key, &args.region, "kinesis"),
        timeout: Duration::from_secs_f64(args.timeout),
    });
    let stream = args.stream.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!("freshet-bench-{secs}-{}", std::process::id())
    });
    let sampler = args.server_pid.map(RssSampler::start);
    if let Some(s) = &sampler
        && !s.is_alive()
    {
        return Err(format!(
            "--server-pid {}: no such process",
            args.server_pid.unwrap_or(0)
        )
        .into());
    }

    let mut report = RunReport {
        label: args.label.clone(),
        endpoint: args.endpoint.clone(),
        stream: stream.clone(),
        shards: args.shards,
        clients: args.clients,
        batch: args.batch,
        record_size: args.record_size,
        server_pid: args.server_pid,
        ..Default::default()
    };

    if args.skip_put && args.stream.is_some() {
        // Reading a stream that is already there (written by an earlier run with --keep).
        eprintln!("reading the existing stream {stream} at {}", args.endpoint);
    } else {
        eprintln!(
            "creating stream {stream} with {} shards at {}",
            args.shards, args.endpoint
        );
        ep.create_stream(
            &stream,
            args.shards,
            Duration::from_secs_f64(args.create_timeout),
        )
        .await?;
    }
    let result = run_phases(&args, &ep, &stream, sampler.as_ref(), &mut report).await;
    if !args.keep {
        match ep.delete_stream(&stream).await {
            Ok(()) => eprintln!("deleted stream {stream}"),
            Err(e) => eprintln!("warning: DeleteStream {stream}: {e}"),
        }
    }
    result?;

    if let Some(s) = &sampler {
        let sampled = [
            report.put.as_ref(),
            report.get.as_ref(),
            report.visibility.as_ref().map(|v| &v.producer),
        ]
        .into_iter()
        .flatten()
        .filter_map(|p| p.server_peak_rss_kib)
        .max();
        report.server_peak_rss_kib = match (s.high_water_mark(), sampled) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    print!("{}", report::table(&report));
    let json = serde_json::to_string(&report)?;
    if let Some(path) = &args.json_file {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    }
    Ok(())
}

async fn run_phases(
    args: &KinesisArgs,
    ep: &Arc<Endpoint>,
    stream: &str,
    sampler: Option<&RssSampler>,
    report: &mut RunReport,
) -> Result<(), BoxError> {
    let shards = ep.list_shards(stream).await?;
    eprintln!("stream {stream} is ACTIVE with {} shards", shards.len());
    let phase_peak = || sampler.and_then(RssSampler::take_phase_peak);
    let cpu = stats::CpuMeter {
        server_pid: args.server_pid,
    };

    if !args.skip_put {
        let cfg = put::PutConfig {
            clients: args.clients,
            batch: args.batch,
            record_size: args.record_size,
            pool: args.pool,
            duration: Duration::from_secs_f64(args.duration.unwrap_or(if args.calls.is_some() {
                600.0
            } else {
                20.0
            })),
            max_calls: args.calls,
        };
        phase_peak();
        let mut p = put::run(ep.clone(), stream, &cfg, cpu).await;
        p.server_peak_rss_kib = phase_peak();
        eprintln!(
            "put: {} calls, {} records in {:.2} s ({:.0} records/s), {} failures",
            p.calls,
            p.records,
            p.elapsed_secs,
            p.records_per_sec,
            p.failures()
        );
        report.get_expected_records = Some(p.records);
        report.put = Some(p);
    }

    if !args.skip_get {
        let cfg = get::GetConfig {
            limit: args.get_limit,
            max_duration: Duration::from_secs_f64(args.get_max_duration),
            expected_records: report.get_expected_records,
        };
        eprintln!("get: reading {} shards from TRIM_HORIZON", shards.len());
        phase_peak();
        let mut p = get::run(ep.clone(), stream, &shards, &cfg, cpu).await?;
        p.server_peak_rss_kib = phase_peak();
        eprintln!(
            "get: {} calls, {} records in {:.2} s ({:.0} records/s), {} failures",
            p.calls,
            p.records,
            p.elapsed_secs,
            p.records_per_sec,
            p.failures()
        );
        report.get = Some(p);
    }

    if !args.skip_visibility && args.visibility_samples > 0 {
        let cfg = visibility::VisibilityConfig {
            samples: args.visibility_samples,
            interval: Duration::from_millis(args.visibility_interval_ms.max(1)),
            grace: Duration::from_secs_f64(args.visibility_grace),
        };
        eprintln!(
            "visibility: {} samples every {:?}, {} pollers",
            cfg.samples,
            cfg.interval,
            shards.len()
        );
        phase_peak();
        let mut v = visibility::run(ep.clone(), stream, &shards, &cfg, cpu).await?;
        v.producer.server_peak_rss_kib = phase_peak();
        eprintln!(
            "visibility: p50 {:.2} ms, p99 {:.2} ms, {}/{} seen",
            v.p50_ms, v.p99_ms, v.samples_seen, v.samples_sent
        );
        report.visibility = Some(v);
    }
    Ok(())
}
