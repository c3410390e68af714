//! `freshet stream ...`, `freshet put`, `freshet tail`.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::client::KinesisClient;

#[derive(Debug, clap::Subcommand)]
pub enum StreamCommand {
    /// Create a stream
    Create {
        name: String,
        /// Number of shards (provisioned mode)
        #[arg(long, default_value_t = 1)]
        shards: u32,
        /// Create an on-demand stream instead
        #[arg(long)]
        on_demand: bool,
        /// Return at once instead of waiting for ACTIVE
        #[arg(long)]
        no_wait: bool,
    },
    /// List streams
    List,
    /// Show a stream and its shards
    Describe { name: String },
    /// Delete a stream and all its data
    Delete {
        name: String,
        /// Also delete registered consumers
        #[arg(long)]
        force: bool,
    },
}

pub async fn stream(client: &KinesisClient, cmd: StreamCommand) -> anyhow::Result<()> {
    match cmd {
        StreamCommand::Create {
            name,
            shards,
            on_demand,
            no_wait,
        } => {
            let mut input = json!({ "StreamName": name });
            if on_demand {
                input["StreamModeDetails"] = json!({"StreamMode": "ON_DEMAND"});
            } else {
                input["ShardCount"] = json!(shards);
            }
            client.call("CreateStream", input).await?;
            if !no_wait {
                for _ in 0..600 {
                    let d = client
                        .call("DescribeStreamSummary", json!({"StreamName": name}))
                        .await?;
                    if d["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            println!("created stream {name}");
        }
        StreamCommand::List => {
            let mut start: Option<String> = None;
            loop {
                let mut input = json!({"Limit": 1000});
                if let Some(s) = &start {
                    input["ExclusiveStartStreamName"] = json!(s);
                }
                let out = client.call("ListStreams", input).await?;
                let summaries = out["StreamSummaries"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                for s in &summaries {
                    println!(
                        "{:<40} {:<10} {}",
                        s["StreamName"].as_str().unwrap_or(""),
                        s["StreamStatus"].as_str().unwrap_or(""),
                        s["StreamModeDetails"]["StreamMode"].as_str().unwrap_or("")
                    );
                }
                if out["HasMoreStreams"] != true || summaries.is_empty() {
                    break;
                }
                start = summaries
                    .last()
                    .and_then(|s| s["StreamName"].as_str())
                    .map(str::to_string);
            }
        }
        StreamCommand::Describe { name } => {
            let s = client
                .call("DescribeStreamSummary", json!({"StreamName": name}))
                .await?;
            let shards = client
                .call("ListShards", json!({"StreamName": name}))
                .await?;
            let s = &s["StreamDescriptionSummary"];
            println!("name:       {}", s["StreamName"].as_str().unwrap_or(""));
            println!("arn:        {}", s["StreamARN"].as_str().unwrap_or(""));
            println!("status:     {}", s["StreamStatus"].as_str().unwrap_or(""));
            println!(
                "mode:       {}",
                s["StreamModeDetails"]["StreamMode"].as_str().unwrap_or("")
            );
            println!("retention:  {} hours", s["RetentionPeriodHours"]);
            println!("open shards: {}", s["OpenShardCount"]);
            println!("shards:");
            for sh in shards["Shards"].as_array().cloned().unwrap_or_default() {
                let closed = sh["SequenceNumberRange"]["EndingSequenceNumber"].is_string();
                println!(
                    "  {} {:<6} hash {}..{}{}",
                    sh["ShardId"].as_str().unwrap_or(""),
                    if closed { "closed" } else { "open" },
                    sh["HashKeyRange"]["StartingHashKey"].as_str().unwrap_or(""),
                    sh["HashKeyRange"]["EndingHashKey"].as_str().unwrap_or(""),
                    sh["ParentShardId"]
                        .as_str()
                        .map(|p| format!(" parent {p}"))
                        .unwrap_or_default()
                );
            }
        }
        StreamCommand::Delete { name, force } => {
            client
                .call(
                    "DeleteStream",
                    json!({"StreamName": name, "EnforceConsumerDeletion": force}),
                )
                .await?;
            println!("deleting stream {name}");
        }
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    /// Stream to write to
    pub stream: String,
    /// Records to put (one per argument). Without any, records are read from --file
    /// or standard input, one per line.
    pub records: Vec<String>,
    /// Read records from this file, one per line (JSON lines or plain text)
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// Partition key for every record [default: a random key per record]
    #[arg(long, short = 'k')]
    pub partition_key: Option<String>,
    /// Records per PutRecords call (1-500)
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
}

async fn flush(
    client: &KinesisClient,
    stream: &str,
    batch: &mut Vec<Value>,
) -> anyhow::Result<usize> {
    if batch.is_empty() {
        return Ok(0);
    }
    let mut pending = std::mem::take(batch);
    let mut attempt = 0;
    loop {
        let out = client
            .call(
                "PutRecords",
                json!({"StreamName": stream, "Records": pending}),
            )
            .await?;
        let results = out["Records"].as_array().cloned().unwrap_or_default();
        let failed: Vec<Value> = pending
            .into_iter()
            .zip(results)
            .filter(|(_, r)| r.get("ErrorCode").is_some())
            .map(|(rec, _)| rec)
            .collect();
        if failed.is_empty() {
            return Ok(0);
        }
        attempt += 1;
        if attempt >= 5 {
            return Ok(failed.len());
        }
        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        pending = failed;
    }
}

pub async fn put(client: &KinesisClient, args: PutArgs) -> anyhow::Result<()> {
    let batch_size = args.batch.clamp(1, 500);
    let record = |line: &str| {
        json!({
            "Data": STANDARD.encode(line.as_bytes()),
            "PartitionKey": args.partition_key.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        })
    };
    let mut batch = Vec::with_capacity(batch_size);
    let mut total = 0usize;
    let mut failed = 0usize;
    if !args.records.is_empty() {
        for r in &args.records {
            batch.push(record(r));
            total += 1;
            if batch.len() == batch_size {
                failed += flush(client, &args.stream, &mut batch).await?;
            }
        }
    } else {
        let (reader, size): (Box<dyn BufRead>, Option<u64>) = match &args.file {
            Some(path) => {
                let f = std::fs::File::open(path)?;
                let size = f.metadata()?.len();
                (Box::new(std::io::BufReader::new(f)), Some(size))
            }
            None => (Box::new(std::io::BufReader::new(std::io::stdin())), None),
        };
        let bar = size.map(|s| {
            let b = indicatif::ProgressBar::new(s);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {per_sec} {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        for line in reader.lines() {
            let line = line?;
            if let Some(b) = &bar {
                b.inc(line.len() as u64 + 1);
            }
            if line.is_empty() {
                continue;
            }
            batch.push(record(&line));
            total += 1;
            if batch.len() == batch_size {
                failed += flush(client, &args.stream, &mut batch).await?;
                if let Some(b) = &bar {
                    b.set_message(format!("{total} records"));
                }
            }
        }
        if let Some(b) = bar {
            b.finish_with_message(format!("{total} records"));
        }
    }
    failed += flush(client, &args.stream, &mut batch).await?;
    eprintln!("put {} records to {}", total - failed, args.stream);
    if failed > 0 {
        bail!("{failed} records could not be written");
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Stream to follow
    pub stream: String,
    /// Start from the oldest record instead of new records only
    #[arg(long)]
    pub from_start: bool,
    /// Stop after this many records
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print one JSON object per record (shard, sequence number, key, data) instead of the data
    #[arg(long)]
    pub json: bool,
    /// Stop when caught up instead of following
    #[arg(long)]
    pub no_follow: bool,
    /// Share the stream with the other workers of this consumer group: each shard is
    /// read by one worker at a time, from the group's checkpoint (the oldest record for
    /// a new group), and checkpointed after its records are printed. A worker that
    /// stops heartbeating loses its shards to the others after its lease timeout
    /// (at least once, in order per shard; see docs/consumer-groups.md)
    #[arg(long, value_name = "NAME")]
    pub group: Option<String>,
    /// With --group: this worker's id (default: a new random one)
    #[arg(long, value_name = "ID", requires = "group")]
    pub worker: Option<String>,
    /// With --group: how long the server waits for this worker's heartbeat before
    /// giving its shards to others (1000 to 300000)
    #[arg(long, value_name = "MS", default_value_t = 10_000, requires = "group")]
    pub lease_timeout_ms: i64,
}

/// Follows every shard of a stream, moving to child shards when a shard closes.
pub async fn tail(client: &KinesisClient, args: TailArgs) -> anyhow::Result<()> {
    if let Some(group) = args.group.clone() {
        return super::group::tail(client, &args, &group).await;
    }
    let shards = client
        .call("ListShards", json!({"StreamName": args.stream}))
        .await?;
    let all: Vec<Value> = shards["Shards"].as_array().cloned().unwrap_or_default();
    let kind = if args.from_start {
        "TRIM_HORIZON"
    } else {
        "LATEST"
    };
    let mut cursors: Vec<(String, String)> = Vec::new();
    let mut known: HashSet<String> = HashSet::new();
    for s in &all {
        let id = s["ShardId"].as_str().unwrap_or_default().to_string();
        known.insert(id.clone());
        // From the start: begin at shards without a parent still present (children are
        // reached through their parents). New only: every open shard.
        let parent_present = s["ParentShardId"]
            .as_str()
            .is_some_and(|p| all.iter().any(|x| x["ShardId"] == p));
        let open = !s["SequenceNumberRange"]["EndingSequenceNumber"].is_string();
        if (args.from_start && !parent_present) || (!args.from_start && open) {
            let it = client
                .call(
                    "GetShardIterator",
                    json!({"StreamName": args.stream, "ShardId": id, "ShardIteratorType": kind}),
                )
                .await?;
            cursors.push((
                id,
                it["ShardIterator"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    let mut printed = 0usize;
    let stdout = std::io::stdout();
    loop {
        let mut next_cursors = Vec::new();
        let mut got_any = false;
        let mut behind = false;
        for (shard, it) in cursors {
            let out = client
                .call("GetRecords", json!({"ShardIterator": it}))
                .await?;
            let records = out["Records"].as_array().cloned().unwrap_or_default();
            got_any |= !records.is_empty();
            behind |= out["MillisBehindLatest"].as_i64().unwrap_or(0) > 0;
            let mut lock = stdout.lock();
            for r in records {
                let data = STANDARD
                    .decode(r["Data"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                if args.json {
                    let line = json!({
                        "shardId": shard,
                        "sequenceNumber": r["SequenceNumber"],
                        "partitionKey": r["PartitionKey"],
                        "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"],
                        "data": String::from_utf8_lossy(&data),
                    });
                    writeln!(lock, "{line}")?;
                } else {
                    lock.write_all(&data)?;
                    lock.write_all(b"\n")?;
                }
                printed += 1;
                if args.limit.is_some_and(|l| printed >= l) {
                    return Ok(());
                }
            }
            lock.flush()?;
            match out["NextShardIterator"].as_str() {
                Some(next) => next_cursors.push((shard, next.to_string())),
                None => {
                    for child in out["ChildShards"].as_array().cloned().unwrap_or_default() {
                        let id = child["ShardId"].as_str().unwrap_or_default().to_string();
                        if known.insert(id.clone()) || !next_cursors.iter().any(|(s, _)| *s == id) {
                            let it = client
                                .call(
                                    "GetShardIterator",
                                    json!({"StreamName": args.stream, "ShardId": id, "ShardIteratorType": "TRIM_HORIZON"}),
                                )
                                .await?;
                            if !next_cursors.iter().any(|(s, _)| *s == id) {
                                next_cursors.push((
                                    id,
                                    it["ShardIterator"].as_str().unwrap_or_default().to_string(),
                                ));
                            }
                        }
                    }
                }
            }
        }
        cursors = next_cursors;
        if cursors.is_empty() {
            return Ok(());
        }
        if !got_any {
            if args.no_follow && !behind {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
