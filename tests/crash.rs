//! Crash safety with real process kills: the `freshet` binary (default fsync
//! durability) is SIGKILLed at random moments while concurrent writers push PutRecords
//! over plain HTTP (raw Kinesis JSON protocol), then restarted on the same data
//! directory, many times over (with 1 MiB segments, so sealed segments and rolls are
//! part of every recovery).
//!
//! After every restart, every shard is read from TRIM_HORIZON and checked:
//! - every acknowledged record (HTTP 200 with its SequenceNumber) is present, in its
//!   shard, at its sequence number, byte-exact, with its partition key;
//! - sequence numbers increase within each shard, and records put after a restart get
//!   larger numbers than anything stored before it;
//! - nothing unexpected appears: every record read back was either acknowledged or in
//!   flight at the kill (no garbage, no duplicates, no record lost once seen).
//!
//! Every fifth stop of the first test is a graceful SIGTERM under the same load, which
//! must exit cleanly and keep the same guarantees.
//!
//! A second test kills the server during a burst of SplitShard / MergeShards calls
//! (with writers running) and checks the stream metadata afterwards: DescribeStream and
//! ListShards agree, the open shards tile the hash key space exactly, lineage points to
//! existing shards, closed parents end with ChildShards, and the stream still accepts
//! puts and reshards.
//!
//! A third test kills the server during a burst of CreateStream / DeleteStream calls
//! (with a state delay, so CREATING and DELETING are on disk at the kill): every
//! acknowledged creation survives as an ACTIVE, usable stream, every acknowledged
//! deletion stays deleted, and nothing else appears.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Rng, Server, seq_cmp};
use serde_json::{Value, json};

const MAGIC: &[u8; 4] = b"FRSH";

/// A Kinesis error answer, or a transport failure (the server died mid-request).
#[derive(Debug)]
enum CallError {
    Transport(#[allow(dead_code)] String), // shown through Debug
    Api {
        status: u16,
        kind: String,
        message: String,
    },
}

/// A minimal raw Kinesis JSON 1.1 client.
#[derive(Clone)]
struct Kinesis {
    http: reqwest::Client,
    endpoint: String,
}

impl Kinesis {
    fn new(server: &Server) -> Kinesis {
        Kinesis {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            endpoint: server.endpoint(),
        }
    }

    async fn call(&self, op: &str, body: &Value) -> Result<Value, CallError> {
        let resp = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("X-Amz-Target", format!("Kinesis_20131202.{op}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .body(serde_json::to_vec(body).unwrap())
            .send()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?;
        // Operations without output answer an empty body.
        let bytes = if bytes.is_empty() {
            bytes::Bytes::from_static(b"{}")
        } else {
            bytes
        };
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            CallError::Transport(format!(
                "{op}: unparseable answer ({status}): {e}: {:?}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        if status == 200 {
            Ok(value)
        } else {
            Err(CallError::Api {
                status,
                kind: value["__type"].as_str().unwrap_or_default().to_string(),
                message: value["message"].as_str().unwrap_or_default().to_string(),
            })
        }
    }

    /// A call that must succeed.
    async fn ok(&self, op: &str, body: Value) -> Value {
        match self.call(op, &body).await {
            Ok(v) => v,
            Err(e) => panic!("{op} {body} failed: {e:?}"),
        }
    }
}

/// One record as a writer sent it.
#[derive(Debug, Clone)]
struct Sent {
    key: String,
    data: Vec<u8>,
}

/// Where an acknowledged record must be.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placed {
    shard: String,
    seq: String,
}

/// Everything the writers sent and what became of it.
#[derive(Default)]
struct Ledger {
    sent: HashMap<u64, Sent>,
    /// Acknowledged with a sequence number, or seen after a restart: must stay.
    durable: HashMap<u64, Placed>,
    /// Sent in the current cycle and not (yet) acknowledged: may or may not appear.
    in_flight: HashSet<u64>,
    /// In flight at an earlier kill and not found after that restart: must never appear.
    dropped: HashSet<u64>,
    /// Per shard, the largest sequence number stored before the current cycle began.
    floor: HashMap<String, String>,
    violations: Vec<String>,
    acked_calls: u64,
}

/// Record data: magic | id (u64 LE) | random payload. The id ties what is read back to
/// what was sent; anything else is garbage.
fn record_data(id: u64, rng: &mut Rng) -> Vec<u8> {
    let len = rng.range(0, 600) as usize;
    let mut data = Vec::with_capacity(12 + len);
    data.extend_from_slice(MAGIC);
    data.extend_from_slice(&id.to_le_bytes());
    data.extend_from_slice(&rng.bytes(len));
    data
}

fn record_id(data: &[u8]) -> Option<u64> {
    if data.len() < 12 || &data[..4] != MAGIC {
        return None;
    }
    Some(u64::from_le_bytes(data[4..12].try_into().unwrap()))
}

/// One writer: PutRecords calls of 1..20 records until `stop`. A record counts as
/// acknowledged only when the 200 answer carries its SequenceNumber.
async fn writer(
    client: Kinesis,
    stream: String,
    ledger: Arc<Mutex<Ledger>>,
    ids: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) {
    // Per shard, this writer's last acknowledged sequence number: a later put of the
    // same writer must get a larger one.
    let mut last: HashMap<String, String> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let n = rng.range(1, 21) as usize;
        let mut batch = Vec::with_capacity(n);
        let mut body = Vec::with_capacity(n);
        {
            let mut l = ledger.lock().unwrap();
            for _ in 0..n {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let sent = Sent {
                    key: format!("pk-{}", rng.range(0, 10_000)),
                    data: record_data(id, &mut rng),
                };
                body.push(json!({"Data": STANDARD.encode(&sent.data), "PartitionKey": sent.key}));
                l.sent.insert(id, sent);
                l.in_flight.insert(id);
                batch.push(id);
            }
        }
        let req = json!({"StreamName": stream, "Records": body});
        match client.call("PutRecords", &req).await {
            Ok(out) => {
                let records = out["Records"].as_array().cloned().unwrap_or_default();
                let mut l = ledger.lock().unwrap();
                l.acked_calls += 1;
                if records.len() != batch.len() {
                    l.violations.push(format!(
                        "PutRecords answered {} entries for {} records",
                        records.len(),
                        batch.len()
                    ));
                    continue;
                }
                for (id, r) in batch.iter().zip(records) {
                    let (Some(seq), Some(shard)) =
                        (r["SequenceNumber"].as_str(), r["ShardId"].as_str())
                    else {
                        continue; // a failed entry: stays in flight
                    };
                    if let Some(floor) = l.floor.get(shard)
                        && seq_cmp(seq, floor) != std::cmp::Ordering::Greater
                    {
                        let msg = format!(
                            "after restart, {shard} handed out {seq}, not above {floor} stored before"
                        );
                        l.violations.push(msg);
                    }
                    if let Some(prev) = last.get(shard)
                        && seq_cmp(seq, prev) != std::cmp::Ordering::Greater
                    {
                        let msg =
                            format!("{shard}: later put got {seq}, not above the earlier {prev}");
                        l.violations.push(msg);
                    }
                    last.insert(shard.to_string(), seq.to_string());
                    l.in_flight.remove(id);
                    l.durable.insert(
                        *id,
                        Placed {
                            shard: shard.to_string(),
                            seq: seq.to_string(),
                        },
                    );
                }
            }
            Err(CallError::Api {
                status,
                kind,
                message,
            }) => {
                // A kill never produces an answer, so any error answer is the server's
                // own failure: puts to an existing stream must not be refused, not even
                // during resharding. The records stay in flight.
                ledger
                    .lock()
                    .unwrap()
                    .violations
                    .push(format!("PutRecords refused: {status} {kind}: {message}"));
            }
            Err(CallError::Transport(_)) => {
                // Killed mid-request: the records stay in flight.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
}

/// A shard as ListShards describes it.
#[derive(Debug, Clone)]
struct ShardInfo {
    id: String,
    parent: Option<String>,
    adjacent_parent: Option<String>,
    start: u128,
    end: u128,
    ending_seq: Option<String>,
}

fn shard_info(v: &Value) -> ShardInfo {
    let num = |k: &str| -> u128 {
        v["HashKeyRange"][k]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad {k} in {v}"))
    };
    ShardInfo {
        id: v["ShardId"].as_str().unwrap().to_string(),
        parent: v["ParentShardId"].as_str().map(str::to_string),
        adjacent_parent: v["AdjacentParentShardId"].as_str().map(str::to_string),
        start: num("StartingHashKey"),
        end: num("EndingHashKey"),
        ending_seq: v["SequenceNumberRange"]["EndingSequenceNumber"]
            .as_str()
            .map(str::to_string),
    }
}

/// Every shard of the stream, through ListShards pages of `page` shards.
async fn list_shards(client: &Kinesis, stream: &str, page: usize) -> Vec<ShardInfo> {
    let mut out = Vec::new();
    let mut body = json!({"StreamName": stream, "MaxResults": page});
    for _ in 0..10_000 {
        let v = client.ok("ListShards", body).await;
        out.extend(v["Shards"].as_array().unwrap().iter().map(shard_info));
        match v["NextToken"].as_str() {
            Some(t) => body = json!({"NextToken": t, "MaxResults": page}),
            None => return out,
        }
    }
    panic!("ListShards never ended");
}

/// A record read back.
#[derive(Debug)]
struct ReadRecord {
    seq: String,
    key: String,
    data: Vec<u8>,
}

/// Reads a shard from TRIM_HORIZON until it is caught up (open shard) or ends (closed
/// shard: then returns the ChildShards ids).
async fn read_shard(
    client: &Kinesis,
    stream: &str,
    shard: &str,
) -> (Vec<ReadRecord>, Option<Vec<String>>) {
    let v = client
        .ok(
            "GetShardIterator",
            json!({"StreamName": stream, "ShardId": shard, "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .await;
    let mut it = v["ShardIterator"].as_str().unwrap().to_string();
    let mut records = Vec::new();
    for _ in 0..100_000 {
        let v = client
            .ok("GetRecords", json!({"ShardIterator": it, "Limit": 10000}))
            .await;
        let batch = v["Records"].as_array().unwrap();
        for r in batch {
            records.push(ReadRecord {
                seq: r["SequenceNumber"].as_str().unwrap().to_string(),
                key: r["PartitionKey"].as_str().unwrap().to_string(),
                data: STANDARD
                    .decode(r["Data"].as_str().unwrap())
                    .expect("Data is base64"),
            });
        }
        match v["NextShardIterator"].as_str() {
            None => {
                let children = v["ChildShards"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|c| c["ShardId"].as_str().unwrap().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                return (records, Some(children));
            }
            Some(next) => {
                if batch.is_empty() && v["MillisBehindLatest"].as_i64() == Some(0) {
                    return (records, None);
                }
                it = next.to_string();
            }
        }
    }
    panic!("{shard} never caught up");
}

/// Reads every shard and checks it against the ledger (see the module docs). Promotes
/// in-flight records that survived to durable, and drops the rest for good. Returns
/// the shards and the number of records read.
async fn verify(
    client: &Kinesis,
    stream: &str,
    ledger: &Mutex<Ledger>,
    context: &str,
) -> (Vec<ShardInfo>, usize) {
    let shards = list_shards(client, stream, 1000).await;
    let mut seen: HashMap<u64, Placed> = HashMap::new();
    let mut max_seq: HashMap<String, String> = HashMap::new();
    let mut total = 0;
    let mut problems: Vec<String> = Vec::new();
    for shard in &shards {
        let (records, children) = read_shard(client, stream, &shard.id).await;
        total += records.len();
        match (&shard.ending_seq, &children) {
            (None, Some(_)) => problems.push(format!("open {} ended with ChildShards", shard.id)),
            (Some(_), None) => problems.push(format!("closed {} never ended", shard.id)),
            _ => {}
        }
        if let Some(children) = children {
            let mut expected: Vec<&str> = shards
                .iter()
                .filter(|s| {
                    s.parent.as_deref() == Some(&shard.id)
                        || s.adjacent_parent.as_deref() == Some(&shard.id)
                })
                .map(|s| s.id.as_str())
                .collect();
            expected.sort();
            let mut got: Vec<&str> = children.iter().map(String::as_str).collect();
            got.sort();
            if got != expected || got.is_empty() {
                problems.push(format!(
                    "{}: ChildShards {got:?}, lineage says {expected:?}",
                    shard.id
                ));
            }
        }
        let l = ledger.lock().unwrap();
        for (i, r) in records.iter().enumerate() {
            if i > 0 && seq_cmp(&records[i - 1].seq, &r.seq) != std::cmp::Ordering::Less {
                problems.push(format!(
                    "{}: {} read after {}",
                    shard.id,
                    r.seq,
                    records[i - 1].seq
                ));
            }
            if let Some(end) = &shard.ending_seq
                && seq_cmp(&r.seq, end) == std::cmp::Ordering::Greater
            {
                problems.push(format!(
                    "{}: {} is past EndingSequenceNumber {end}",
                    shard.id, r.seq
                ));
            }
            let Some(id) = record_id(&r.data) else {
                problems.push(format!(
                    "{}: garbage record at {} ({} bytes)",
                    shard.id,
                    r.seq,
                    r.data.len()
                ));
                continue;
            };
            let Some(sent) = l.sent.get(&id) else {
                problems.push(format!("{}: unknown record id {id} at {}", shard.id, r.seq));
                continue;
            };
            if sent.data != r.data || sent.key != r.key {
                problems.push(format!(
                    "{}: record {id} at {} differs from what was sent",
                    shard.id, r.seq
                ));
            }
            let here = Placed {
                shard: shard.id.clone(),
                seq: r.seq.clone(),
            };
            if let Some(prev) = seen.insert(id, here.clone()) {
                problems.push(format!("record {id} read twice: {prev:?} and {here:?}"));
            }
            match l.durable.get(&id) {
                Some(p) if *p != here => problems.push(format!(
                    "record {id} acknowledged at {p:?} but read at {here:?}"
                )),
                Some(_) => {}
                None if l.in_flight.contains(&id) => {}
                None if l.dropped.contains(&id) => problems.push(format!(
                    "record {id} was missing after an earlier restart but is back at {here:?}"
                )),
                None => problems.push(format!("record {id} at {here:?} was never sent")),
            }
        }
        if let Some(last) = records.last() {
            max_seq.insert(shard.id.clone(), last.seq.clone());
        }
    }
    let mut l = ledger.lock().unwrap();
    let mut missing: Vec<(&u64, &Placed)> = l
        .durable
        .iter()
        .filter(|(id, _)| !seen.contains_key(id))
        .collect();
    missing.sort_by(|a, b| a.1.shard.cmp(&b.1.shard).then(seq_cmp(&a.1.seq, &b.1.seq)));
    if !missing.is_empty() {
        problems.push(format!(
            "{} acknowledged records missing, first ones: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        ));
    }
    problems.append(&mut l.violations);
    assert!(
        problems.is_empty(),
        "{context}: {} problems:\n{}",
        problems.len(),
        problems[..problems.len().min(30)].join("\n")
    );
    // Survivors of the kill are now durable; the others must never show up.
    let in_flight: Vec<u64> = l.in_flight.drain().collect();
    for id in in_flight {
        match seen.get(&id) {
            Some(p) => {
                l.durable.insert(id, p.clone());
            }
            None => {
                l.dropped.insert(id);
            }
        }
    }
    l.floor = max_seq;
    (shards, total)
}

/// Asserts that the open shards' ranges tile [0, 2^128-1] with no gap or overlap, and
/// that lineage only names shards that exist.
fn assert_consistent(shards: &[ShardInfo], context: &str) {
    let ids: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids.len(), shards.len(), "{context}: duplicate shard ids");
    let mut open: Vec<(u128, u128, &str)> = shards
        .iter()
        .filter(|s| s.ending_seq.is_none())
        .map(|s| (s.start, s.end, s.id.as_str()))
        .collect();
    open.sort();
    assert!(!open.is_empty(), "{context}: no open shard");
    assert_eq!(open[0].0, 0, "{context}: open shards start at {open:?}");
    assert_eq!(open.last().unwrap().1, u128::MAX, "{context}: {open:?}");
    for w in open.windows(2) {
        assert_eq!(
            w[0].1.checked_add(1),
            Some(w[1].0),
            "{context}: open shards {} and {} leave a gap or overlap",
            w[0].2,
            w[1].2
        );
    }
    for s in shards {
        assert!(s.start <= s.end, "{context}: {} has an empty range", s.id);
        for p in [&s.parent, &s.adjacent_parent].into_iter().flatten() {
            assert!(
                ids.contains(p.as_str()),
                "{context}: {} names missing parent {p}",
                s.id
            );
            let parent = shards.iter().find(|x| &x.id == p).unwrap();
            assert!(
                parent.ending_seq.is_some(),
                "{context}: {} has open parent {p}",
                s.id
            );
        }
        if s.ending_seq.is_some() {
            // A closed shard's range is exactly covered by its children.
            let mut kids: Vec<(u128, u128)> = shards
                .iter()
                .filter(|c| {
                    c.parent.as_deref() == Some(&s.id)
                        || c.adjacent_parent.as_deref() == Some(&s.id)
                })
                .map(|c| (c.start.max(s.start), c.end.min(s.end)))
                .collect();
            kids.sort();
            assert!(
                !kids.is_empty(),
                "{context}: closed {} has no children",
                s.id
            );
            assert_eq!(kids[0].0, s.start, "{context}: children of {}", s.id);
            assert_eq!(
                kids.last().unwrap().1,
                s.end,
                "{context}: children of {}",
                s.id
            );
            for w in kids.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0, "{context}: children of {}", s.id);
            }
        }
    }
}

async fn create_stream(client: &Kinesis, stream: &str, shards: u32) {
    client
        .ok(
            "CreateStream",
            json!({"StreamName": stream, "ShardCount": shards}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = client
            .ok("DescribeStreamSummary", json!({"StreamName": stream}))
            .await;
        if v["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE" {
            return;
        }
        assert!(Instant::now() < deadline, "{stream} never became ACTIVE");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Starts `writers` writer tasks against the current server.
fn spawn_writers(
    client: &Kinesis,
    stream: &str,
    writers: usize,
    ledger: &Arc<Mutex<Ledger>>,
    ids: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
    rng: &mut Rng,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|_| {
            tokio::spawn(writer(
                client.clone(),
                stream.to_string(),
                ledger.clone(),
                ids.clone(),
                stop.clone(),
                rng.fork(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_writes_loses_no_acknowledged_record() {
    const CYCLES: usize = 20;
    const WRITERS: usize = 4;
    let started = Instant::now();
    let mut rng = Rng::from_env("sigkill_during_writes_loses_no_acknowledged_record");
    let data = tempfile::tempdir().unwrap();
    // 1 MiB segments, so kills also land around segment rolls and recovery crosses
    // sealed segments.
    let mut server =
        Server::start_in(data.path(), &["--state-delay-ms", "0", "--segment-mb", "1"]).await;
    let stream = "crash";
    create_stream(&Kinesis::new(&server), stream, 4).await;

    // An iterator taken before the first crash stays valid across restarts (its signing
    // key is persisted; the default lifetime is 5 minutes).
    let old_iterator = Kinesis::new(&server)
        .ok(
            "GetShardIterator",
            json!({"StreamName": stream, "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"}),
        )
        .await["ShardIterator"]
        .as_str()
        .unwrap()
        .to_string();

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let ids = Arc::new(AtomicU64::new(1));
    let mut acked_before = 0;
    for cycle in 0..CYCLES {
        let client = Kinesis::new(&server);
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = spawn_writers(&client, stream, WRITERS, &ledger, &ids, &stop, &mut rng);
        // Kill at a random moment of the write burst (sometimes very early).
        let delay = if cycle % 4 == 0 {
            rng.range(5, 100)
        } else {
            rng.range(100, 900)
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        // Every fifth stop is a graceful SIGTERM under the same load instead.
        let graceful = cycle % 5 == 4;
        if graceful {
            assert!(
                server.terminate().await,
                "cycle {cycle}: SIGTERM under load did not exit cleanly"
            );
        } else {
            server.kill();
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }

        server.restart().await;
        let client = Kinesis::new(&server);
        let how = if graceful { "SIGTERM" } else { "SIGKILL" };
        let context = format!("cycle {cycle} ({how} after {delay} ms)");
        let (shards, read) = verify(&client, stream, &ledger, &context).await;
        assert_consistent(&shards, &context);
        assert_eq!(shards.len(), 4, "{context}: shards changed");
        let l = ledger.lock().unwrap();
        eprintln!(
            "{context}: {} records durable (+{}), {} dropped in flight, {read} read",
            l.durable.len(),
            l.durable.len() - acked_before,
            l.dropped.len()
        );
        acked_before = l.durable.len();
    }

    // Writes still work after the last restart, above everything stored.
    let client = Kinesis::new(&server);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = spawn_writers(&client, stream, 1, &ledger, &ids, &stop, &mut rng);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    verify(&client, stream, &ledger, "after the last restart").await;
    let first = client
        .ok(
            "GetRecords",
            json!({"ShardIterator": old_iterator, "Limit": 10}),
        )
        .await;
    let first = first["Records"].as_array().unwrap();
    assert!(!first.is_empty(), "old iterator read nothing");
    {
        let l = ledger.lock().unwrap();
        let (id, placed) = l
            .durable
            .iter()
            .filter(|(_, p)| p.shard == "shardId-000000000000")
            .min_by(|a, b| seq_cmp(&a.1.seq, &b.1.seq))
            .expect("records in shard 0");
        assert_eq!(
            first[0]["SequenceNumber"].as_str(),
            Some(placed.seq.as_str())
        );
        let data = STANDARD.decode(first[0]["Data"].as_str().unwrap()).unwrap();
        assert_eq!(data, l.sent[id].data);
        assert!(
            l.acked_calls >= CYCLES as u64,
            "too few acknowledged calls ({}) for the test to mean anything",
            l.acked_calls
        );
    }
    assert!(server.terminate().await, "clean shutdown after the crashes");
    eprintln!("total {:?}", started.elapsed());
}

/// Splits or merges open shards of `stream` until `stop`, as fast as it is answered.
async fn resharder(client: Kinesis, stream: String, stop: Arc<AtomicBool>, mut rng: Rng) -> usize {
    let mut done = 0;
    while !stop.load(Ordering::Relaxed) {
        let Ok(v) = client
            .call(
                "ListShards",
                &json!({"StreamName": stream, "ShardFilter": {"Type": "AT_LATEST"}}),
            )
            .await
        else {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        let mut open: Vec<ShardInfo> = v["Shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(shard_info)
            .collect();
        open.sort_by_key(|s| s.start);
        let split = open.len() < 3 || (open.len() < 8 && rng.range(0, 2) == 0);
        let result = if split {
            let s = &open[rng.range(0, open.len() as u64) as usize];
            let mid = s.start + (s.end - s.start) / 2 + 1;
            client
                .call(
                    "SplitShard",
                    &json!({"StreamName": stream, "ShardToSplit": s.id, "NewStartingHashKey": mid.to_string()}),
                )
                .await
        } else {
            let i = rng.range(0, open.len() as u64 - 1) as usize;
            client
                .call(
                    "MergeShards",
                    &json!({"StreamName": stream, "ShardToMerge": open[i].id, "AdjacentShardToMerge": open[i + 1].id}),
                )
                .await
        };
        match result {
            Ok(_) => done += 1,
            Err(CallError::Transport(_)) => tokio::time::sleep(Duration::from_millis(2)).await,
            Err(e) => panic!("reshard refused: {e:?}"),
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_resharding_keeps_metadata_consistent() {
    const CYCLES: usize = 6;
    let mut rng = Rng::from_env("sigkill_during_resharding_keeps_metadata_consistent");
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &["--state-delay-ms", "0"]).await;
    let stream = "reshard";
    create_stream(&Kinesis::new(&server), stream, 2).await;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let ids = Arc::new(AtomicU64::new(1));
    let mut reshards = 0;
    for cycle in 0..CYCLES {
        let client = Kinesis::new(&server);
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = spawn_writers(&client, stream, 2, &ledger, &ids, &stop, &mut rng);
        let control = tokio::spawn(resharder(
            client.clone(),
            stream.to_string(),
            stop.clone(),
            rng.fork(),
        ));
        let delay = rng.range(50, 700);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        reshards += control.await.unwrap();

        server.restart().await;
        let client = Kinesis::new(&server);
        let context = format!("cycle {cycle} (killed after {delay} ms)");
        let d = client
            .ok(
                "DescribeStream",
                json!({"StreamName": stream, "Limit": 10000}),
            )
            .await;
        let d = &d["StreamDescription"];
        assert_eq!(d["StreamStatus"], "ACTIVE", "{context}");
        let described: Vec<ShardInfo> = d["Shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(shard_info)
            .collect();
        // Small pages exercise ListShards pagination on the recovered metadata.
        let listed = list_shards(&client, stream, 3).await;
        assert_eq!(
            described.iter().map(|s| &s.id).collect::<Vec<_>>(),
            listed.iter().map(|s| &s.id).collect::<Vec<_>>(),
            "{context}: DescribeStream and ListShards disagree"
        );
        assert_consistent(&listed, &context);
        let summary = client
            .ok("DescribeStreamSummary", json!({"StreamName": stream}))
            .await;
        assert_eq!(
            summary["StreamDescriptionSummary"]["OpenShardCount"].as_u64(),
            Some(listed.iter().filter(|s| s.ending_seq.is_none()).count() as u64),
            "{context}"
        );
        let (shards, read) = verify(&client, stream, &ledger, &context).await;
        eprintln!(
            "{context}: {} shards ({} open), {read} records, {reshards} reshards so far",
            shards.len(),
            shards.iter().filter(|s| s.ending_seq.is_none()).count()
        );
    }
    assert!(reshards > 0, "no reshard completed before the kills");

    // The recovered stream still takes puts on every open shard and reshards.
    let client = Kinesis::new(&server);
    let open: Vec<ShardInfo> = list_shards(&client, stream, 1000)
        .await
        .into_iter()
        .filter(|s| s.ending_seq.is_none())
        .collect();
    let records: Vec<Value> = open
        .iter()
        .map(|s| json!({"Data": STANDARD.encode(b"after"), "PartitionKey": "x", "ExplicitHashKey": s.start.to_string()}))
        .collect();
    let out = client
        .ok(
            "PutRecords",
            json!({"StreamName": stream, "Records": records}),
        )
        .await;
    assert_eq!(out["FailedRecordCount"], 0);
    for (s, r) in open.iter().zip(out["Records"].as_array().unwrap()) {
        assert_eq!(r["ShardId"].as_str(), Some(s.id.as_str()));
    }
    let widest = open.iter().max_by_key(|s| s.end - s.start).unwrap();
    client
        .ok(
            "SplitShard",
            json!({"StreamName": stream, "ShardToSplit": widest.id, "NewStartingHashKey": (widest.start + (widest.end - widest.start) / 2 + 1).to_string()}),
        )
        .await;
    let after = list_shards(&client, stream, 1000).await;
    assert_consistent(&after, "after a split following the restarts");
    assert!(server.terminate().await, "clean shutdown after the crashes");
}

/// What the control-plane burst did to one stream name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// CreateStream sent, no answer (killed): may or may not exist.
    CreateInFlight,
    Created,
    /// DeleteStream sent, no answer: may or may not exist.
    DeleteInFlight,
    Deleted,
}

/// Creates streams and deletes earlier ones until `stop`.
async fn churner(
    client: Kinesis,
    fates: Arc<Mutex<BTreeMap<String, Fate>>>,
    next: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) {
    while !stop.load(Ordering::Relaxed) {
        let victim = {
            let f = fates.lock().unwrap();
            let created: Vec<&String> = f
                .iter()
                .filter(|(_, fate)| **fate == Fate::Created)
                .map(|(n, _)| n)
                .collect();
            (created.len() > 3 && rng.range(0, 2) == 0)
                .then(|| created[rng.range(0, created.len() as u64) as usize].clone())
        };
        let (name, op, body, in_flight, done) = match victim {
            Some(name) => (
                name.clone(),
                "DeleteStream",
                json!({"StreamName": name}),
                Fate::DeleteInFlight,
                Fate::Deleted,
            ),
            None => {
                let name = format!("churn-{:04}", next.fetch_add(1, Ordering::Relaxed));
                (
                    name.clone(),
                    "CreateStream",
                    json!({"StreamName": name, "ShardCount": 1}),
                    Fate::CreateInFlight,
                    Fate::Created,
                )
            }
        };
        fates.lock().unwrap().insert(name.clone(), in_flight);
        match client.call(op, &body).await {
            Ok(_) => {
                fates.lock().unwrap().insert(name, done);
            }
            Err(CallError::Transport(_)) => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("{op} {name} refused: {e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_create_and_delete_keeps_the_catalog_consistent() {
    const CYCLES: usize = 5;
    let mut rng = Rng::from_env("sigkill_during_create_and_delete_keeps_the_catalog_consistent");
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &["--state-delay-ms", "50"]).await;
    let fates: Arc<Mutex<BTreeMap<String, Fate>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    for cycle in 0..CYCLES {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(churner(
            Kinesis::new(&server),
            fates.clone(),
            next.clone(),
            stop.clone(),
            rng.fork(),
        ));
        let delay = rng.range(30, 400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        task.await.unwrap();

        server.restart().await;
        let client = Kinesis::new(&server);
        let context = format!("cycle {cycle} (killed after {delay} ms)");
        // Every stream the server knows, through ListStreams pages.
        let mut listed: Vec<String> = Vec::new();
        let mut body = json!({"Limit": 7});
        loop {
            let v = client.ok("ListStreams", body).await;
            listed.extend(
                v["StreamNames"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n.as_str().unwrap().to_string()),
            );
            match v["NextToken"].as_str() {
                Some(t) if v["HasMoreStreams"] == true => {
                    body = json!({"Limit": 7, "NextToken": t})
                }
                _ => break,
            }
        }
        let listed_set: HashSet<&String> = listed.iter().collect();
        assert_eq!(
            listed_set.len(),
            listed.len(),
            "{context}: duplicates in {listed:?}"
        );
        let mut f = fates.lock().unwrap().clone();
        for name in &listed {
            assert!(f.contains_key(name), "{context}: {name} was never created");
            assert_ne!(
                f[name],
                Fate::Deleted,
                "{context}: {name} was deleted but is back"
            );
        }
        for (name, fate) in f.iter_mut() {
            let present = listed_set.contains(name);
            match *fate {
                Fate::Created => assert!(present, "{context}: created {name} is gone"),
                Fate::Deleted => assert!(!present),
                Fate::CreateInFlight | Fate::DeleteInFlight => {}
            }
            *fate = if present {
                Fate::Created
            } else {
                Fate::Deleted
            };
            let summary = client
                .call("DescribeStreamSummary", &json!({"StreamName": name}))
                .await;
            match (present, summary) {
                (true, Ok(v)) => {
                    let s = &v["StreamDescriptionSummary"];
                    assert_eq!(s["StreamStatus"], "ACTIVE", "{context}: {name}: {s}");
                    assert_eq!(s["OpenShardCount"], 1, "{context}: {name}: {s}");
                }
                (false, Err(CallError::Api { kind, .. })) => {
                    assert_eq!(kind, "ResourceNotFoundException", "{context}: {name}")
                }
                (present, other) => {
                    panic!("{context}: {name} listed={present} but described as {other:?}")
                }
            }
        }
        *fates.lock().unwrap() = f;
        // A surviving stream is usable: a record goes in and comes back.
        if let Some(name) = listed.first() {
            let put = client
                .ok(
                    "PutRecord",
                    json!({"StreamName": name, "PartitionKey": "k", "Data": STANDARD.encode(format!("cycle {cycle}"))}),
                )
                .await;
            let (records, _) = read_shard(&client, name, put["ShardId"].as_str().unwrap()).await;
            let last = records.last().expect("the record just put");
            assert_eq!(last.seq, put["SequenceNumber"].as_str().unwrap());
            assert_eq!(last.data, format!("cycle {cycle}").into_bytes());
        }
        eprintln!(
            "{context}: {} streams exist, {} names used",
            listed.len(),
            fates.lock().unwrap().len()
        );
    }
    let f = fates.lock().unwrap();
    assert!(
        f.values().any(|v| *v == Fate::Created) && f.values().any(|v| *v == Fate::Deleted),
        "the burst never both created and deleted a stream: {f:?}"
    );
}
