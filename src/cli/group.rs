//! `freshet tail STREAM --group NAME`: one worker of a consumer group
//! (`docs/consumer-groups.md`), over the REST API's `/v1/groups` routes.
//!
//! The worker joins, heartbeats at the interval the server gives, reads the shards it
//! holds (from the group's checkpoint, then after the last record it printed), prints
//! each batch, flushes, and only then checkpoints it: at least once, in order per
//! shard. It lets go of the shards the server asks back, checkpoints a closed shard's
//! end so its children can be handed out, stops reading everything when it could not
//! heartbeat for its lease timeout (another worker may hold its shards by then), joins
//! again when the server has forgotten it, and leaves on Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::client::KinesisClient;
use super::commands::TailArgs;

/// Records asked for per read.
const READ_LIMIT: usize = 1000;
/// Pause when a pass over every held shard found nothing new.
const IDLE_PAUSE: Duration = Duration::from_millis(200);

/// A shard this worker holds.
struct Held {
    epoch: u64,
    /// The last sequence number printed under this lease; `None`: start at the
    /// group's checkpoint.
    cursor: Option<String>,
}

struct Worker<'a> {
    client: &'a KinesisClient,
    /// `?stream=NAME`, appended to every route.
    query: String,
    group: String,
    id: String,
    lease_timeout: Duration,
    heartbeat_every: Duration,
}

impl Worker<'_> {
    async fn post(&self, route: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        let path = format!("/v1/groups/{}/{route}{}", self.group, self.query);
        self.client.rest_post(&path, &body).await
    }

    async fn join(&mut self, lease_timeout_ms: i64) -> anyhow::Result<()> {
        let (status, doc) = self
            .post(
                "join",
                json!({"worker": self.id, "leaseTimeoutMs": lease_timeout_ms}),
            )
            .await?;
        if !status.is_success() {
            bail!("{}", error_text(&doc, status));
        }
        self.id = doc["worker"].as_str().unwrap_or_default().to_string();
        self.heartbeat_every =
            Duration::from_millis(doc["heartbeatIntervalMs"].as_u64().unwrap_or(1000).max(100));
        self.lease_timeout =
            Duration::from_millis(doc["leaseTimeoutMs"].as_u64().unwrap_or(10_000));
        Ok(())
    }
}

fn error_text(doc: &Value, status: StatusCode) -> String {
    format!(
        "{} ({status}): {}",
        doc["error"].as_str().unwrap_or("Error"),
        doc["message"].as_str().unwrap_or("")
    )
}

/// Runs one group worker until `--limit` records, a signal, or a fatal error.
pub async fn tail(client: &KinesisClient, args: &TailArgs, group: &str) -> anyhow::Result<()> {
    let mut w = Worker {
        client,
        query: format!("?stream={}", args.stream),
        group: group.to_string(),
        id: args
            .worker
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        lease_timeout: Duration::from_millis(10_000),
        heartbeat_every: Duration::from_millis(1000),
    };
    w.join(args.lease_timeout_ms).await?;
    eprintln!("joined group {group} of {} as worker {}", args.stream, w.id);
    let mut stop = Box::pin(shutdown());
    let result = tokio::select! {
        r = run(&mut w, args) => r,
        () = &mut stop => Ok(()),
    };
    let (status, doc) = w.post("leave", json!({"worker": w.id})).await?;
    if !status.is_success() && status != StatusCode::CONFLICT {
        eprintln!("leave: {}", error_text(&doc, status));
    }
    result
}

async fn shutdown() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn run(w: &mut Worker<'_>, args: &TailArgs) -> anyhow::Result<()> {
    let mut held: BTreeMap<String, Held> = BTreeMap::new();
    let mut released: Vec<String> = Vec::new();
    let mut last_ok = Instant::now();
    let mut next_heartbeat = Instant::now();
    let mut printed = 0usize;
    loop {
        if Instant::now() >= next_heartbeat {
            next_heartbeat = Instant::now() + w.heartbeat_every;
            match w
                .post("heartbeat", json!({"worker": w.id, "released": released}))
                .await
            {
                Ok((status, doc)) if status.is_success() => {
                    last_ok = Instant::now();
                    released.clear();
                    let mut now_held = BTreeMap::new();
                    for l in doc["leases"].as_array().into_iter().flatten() {
                        let shard = l["shardId"].as_str().unwrap_or_default().to_string();
                        let epoch = l["epoch"].as_u64().unwrap_or(0);
                        let cursor = held
                            .remove(&shard)
                            .filter(|h| h.epoch == epoch)
                            .and_then(|h| h.cursor);
                        now_held.insert(shard, Held { epoch, cursor });
                    }
                    held = now_held;
                    for s in doc["release"].as_array().into_iter().flatten() {
                        if let Some(s) = s.as_str()
                            && held.remove(s).is_some()
                        {
                            // Everything printed is checkpointed already: let go now.
                            released.push(s.to_string());
                            next_heartbeat = Instant::now();
                        }
                    }
                }
                Ok((StatusCode::CONFLICT, _)) => {
                    // Forgotten (expired): whatever it held may be someone else's now.
                    held.clear();
                    released.clear();
                    let timeout = w.lease_timeout.as_millis() as i64;
                    w.join(timeout).await?;
                    next_heartbeat = Instant::now();
                    continue;
                }
                Ok((status, doc)) => {
                    if status.is_client_error() {
                        bail!("heartbeat: {}", error_text(&doc, status));
                    }
                    eprintln!("heartbeat: {}", error_text(&doc, status));
                }
                Err(e) => eprintln!("heartbeat: {e:#}"),
            }
        }
        if last_ok.elapsed() >= w.lease_timeout && !held.is_empty() {
            eprintln!("no heartbeat answered for the lease timeout: stopping reads");
            held.clear();
        }
        let mut got_any = false;
        let shards: Vec<String> = held.keys().cloned().collect();
        for shard in shards {
            let Some(h) = held.get(&shard) else { continue };
            let epoch = h.epoch;
            let mut body =
                json!({"worker": w.id, "shardId": shard, "epoch": epoch, "limit": READ_LIMIT});
            if let Some(c) = &h.cursor {
                body["after"] = json!(c);
            }
            let (status, doc) = match w.post("records", body).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("records: {e:#}");
                    break;
                }
            };
            if status == StatusCode::CONFLICT {
                held.remove(&shard);
                next_heartbeat = Instant::now();
                continue;
            }
            if !status.is_success() {
                eprintln!("records of {shard}: {}", error_text(&doc, status));
                continue;
            }
            let records = doc["records"].as_array().cloned().unwrap_or_default();
            let mut last = None;
            let mut reached_limit = false;
            {
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                for r in &records {
                    print_record(&mut out, r, args.json)?;
                    last = r["sequenceNumber"].as_str().map(str::to_string);
                    printed += 1;
                    if args.limit.is_some_and(|l| printed >= l) {
                        reached_limit = true;
                        break;
                    }
                }
                out.flush()?;
            }
            if let Some(seq) = &last {
                got_any = true;
                let (status, doc) = w
                    .post(
                        "checkpoint",
                        json!({"worker": w.id, "shardId": shard, "epoch": epoch, "sequenceNumber": seq}),
                    )
                    .await?;
                if status == StatusCode::CONFLICT {
                    held.remove(&shard);
                    next_heartbeat = Instant::now();
                    continue;
                }
                if !status.is_success() {
                    eprintln!("checkpoint of {shard}: {}", error_text(&doc, status));
                }
                if let Some(h) = held.get_mut(&shard) {
                    h.cursor = Some(seq.clone());
                }
            } else if doc["shardEnd"].as_bool() == Some(true) {
                let (status, doc) = w
                    .post(
                        "checkpoint",
                        json!({"worker": w.id, "shardId": shard, "epoch": epoch, "shardEnd": true}),
                    )
                    .await?;
                if !status.is_success() && status != StatusCode::CONFLICT {
                    eprintln!("checkpoint of {shard}'s end: {}", error_text(&doc, status));
                }
                held.remove(&shard);
                // Its children are handed out on the next heartbeat.
                next_heartbeat = Instant::now();
            }
            if reached_limit {
                return Ok(());
            }
        }
        if !got_any {
            let until_heartbeat = next_heartbeat.saturating_duration_since(Instant::now());
            tokio::time::sleep(IDLE_PAUSE.min(until_heartbeat)).await;
        }
    }
}

/// One record as `freshet tail` prints it: its data, or with `--json` one object.
fn print_record(out: &mut impl Write, r: &Value, as_json: bool) -> anyhow::Result<()> {
    let data = STANDARD
        .decode(r["data"].as_str().unwrap_or_default())
        .unwrap_or_default();
    if as_json {
        let arrival = r["approximateArrivalTimestamp"].as_f64().unwrap_or(0.0) / 1000.0;
        let line = json!({
            "shardId": r["shardId"],
            "sequenceNumber": r["sequenceNumber"],
            "partitionKey": r["partitionKey"],
            "approximateArrivalTimestamp": arrival,
            "data": String::from_utf8_lossy(&data),
        });
        writeln!(out, "{line}")?;
    } else {
        out.write_all(&data)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
