//! The cluster foundation against a real PostgreSQL (started by the test, see
//! `common/postgres.rs`): migrations run twice and by two nodes at once; a node that
//! stops heartbeating loses its leases to the other within the lease time, under a
//! higher epoch; a paused old owner's fenced commit is refused while the new owner's
//! goes through; three nodes spread leases evenly; and two real `freshet serve
//! --cluster` processes, one SIGKILLed, with `freshet cluster status` showing its
//! leases move to the survivor, and released on a clean shutdown.
//!
//! Every test skips (saying so) only when PostgreSQL is neither installed nor
//! installable; under CI that is a failure.

mod common;
#[path = "common/postgres.rs"]
mod postgres;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use freshet::cluster::ClusterError;
use freshet::cluster::db::{ClusterDb, ClusterView};
use freshet::cluster::node::{ClusterNode, ClusterOptions, ResourceLister};
use postgres::TestPostgres;

/// Slack on top of the lease time for a move to be seen: a heartbeat interval to
/// notice, plus scheduling on a loaded machine.
const SLACK: Duration = Duration::from_secs(5);

fn options(pg: &TestPostgres, node: &str, lease: Duration) -> ClusterOptions {
    ClusterOptions {
        url: pg.url.clone(),
        node_id: node.to_string(),
        advertise_url: format!("http://{node}.test:4570"),
        lease,
        heartbeat: lease / 5,
    }
}

fn lister(resources: &[String]) -> ResourceLister {
    let resources = resources.to_vec();
    Arc::new(move || resources.clone())
}

fn resources(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| freshet::cluster::shard_resource("orders", &format!("shardId-{i:012}")))
        .collect()
}

/// Owner of each held lease.
fn owners(view: &ClusterView) -> BTreeMap<String, (String, i64)> {
    view.leases
        .iter()
        .filter(|l| l.held())
        .map(|l| (l.resource.clone(), (l.owner.clone().unwrap(), l.epoch)))
        .collect()
}

/// Polls the view until `done` holds or `within` passes; returns the view and the time.
async fn wait_for(
    db: &mut ClusterDb,
    within: Duration,
    what: &str,
    done: impl Fn(&ClusterView) -> bool,
) -> (ClusterView, Duration) {
    let start = Instant::now();
    loop {
        let view = db.view().await.expect("view");
        if done(&view) {
            return (view, start.elapsed());
        }
        assert!(
            start.elapsed() < within,
            "{what}: not within {within:?}; last view: {view:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the `freshet` binary with `args` (off the runtime) and returns its output.
async fn freshet_cli(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_freshet"))
            .args(&args)
            .output()
            .expect("run freshet")
    })
    .await
    .unwrap()
}

fn count(view: &ClusterView, node: &str) -> usize {
    view.leases
        .iter()
        .filter(|l| l.held() && l.owner.as_deref() == Some(node))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent_and_safe_from_two_nodes_at_once() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let mut a = ClusterDb::connect(&pg.url).await.unwrap();
    let mut b = ClusterDb::connect(&pg.url).await.unwrap();
    let (va, vb) = tokio::join!(a.migrate(), b.migrate());
    assert_eq!(va.unwrap(), 3);
    assert_eq!(vb.unwrap(), 3);
    // Again, after the fact: nothing to do, same version.
    assert_eq!(a.migrate().await.unwrap(), 3);
    let client = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls).await;
    let (client, connection) = client.unwrap();
    tokio::spawn(connection);
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM cluster_schema_version ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3], "each migration recorded once");
    // A database migrated by a newer binary is refused, not silently used.
    client
        .execute(
            "INSERT INTO cluster_schema_version (version) VALUES (99)",
            &[],
        )
        .await
        .unwrap();
    match a.migrate().await {
        Err(ClusterError::SchemaTooNew {
            database: 99,
            binary: 3,
        }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_refused_at_start_with_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let opts = ClusterOptions {
        url: format!("postgres://freshet@127.0.0.1:{port}/postgres"),
        node_id: "a".into(),
        advertise_url: "http://a.test:4570".into(),
        lease: Duration::from_secs(2),
        heartbeat: Duration::from_millis(400),
    };
    match ClusterNode::start(opts, lister(&[])).await {
        Err(e @ ClusterError::Unreachable(_)) => {
            assert!(
                e.to_string()
                    .starts_with("cannot reach the cluster database"),
                "{e}"
            )
        }
        Err(e) => panic!("expected Unreachable, got {e}"),
        Ok(_) => panic!("started without a database"),
    }
}

/// (a) and (b): two nodes share the leases; one stops heartbeating (as a crashed or
/// paused node does); its leases move to the other within the lease time plus slack,
/// each under a higher epoch; the old owner's fenced commit under its old epoch is
/// refused, the new owner's goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_loses_its_leases_and_its_old_epoch_is_fenced() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let lease = Duration::from_secs(2);
    let all = resources(6);
    let a = ClusterNode::start(options(&pg, "a", lease), lister(&all))
        .await
        .unwrap();
    let b = ClusterNode::start(options(&pg, "b", lease), lister(&all))
        .await
        .unwrap();
    let mut db = ClusterDb::connect(&pg.url).await.unwrap();
    let (view, _) = wait_for(&mut db, Duration::from_secs(20), "3 + 3 spread", |v| {
        count(v, "a") == 3 && count(v, "b") == 3
    })
    .await;
    let before = owners(&view);
    // The node's own view agrees with the database.
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.held().len() != 3 {
        assert!(Instant::now() < deadline, "b's own view: {:?}", b.held());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (victim, old_epoch) = b.held()[0].clone();
    assert_eq!(before[&victim], ("b".to_string(), old_epoch));

    // b pauses: it stops heartbeating but keeps (in this test) its old epoch.
    let paused_at = Instant::now();
    b.abort();
    let (view, _) = wait_for(&mut db, lease + SLACK, "b's leases move to a", |v| {
        count(v, "a") == 6
    })
    .await;
    let moved_after = paused_at.elapsed();
    assert!(
        moved_after >= lease - Duration::from_millis(300),
        "moved after {moved_after:?}, before the lease could have expired"
    );
    let after = owners(&view);
    for (resource, (owner, epoch)) in &before {
        if owner == "b" {
            assert!(after[resource].1 > *epoch, "{resource}: epoch must grow");
        } else {
            assert_eq!(after[resource].1, *epoch, "{resource}: a kept it");
        }
    }
    let node_b = view.nodes.iter().find(|n| n.node_id == "b").unwrap();
    assert!(!node_b.live, "b is shown dead");

    // The paused owner wakes up and tries to commit under its old epoch: refused.
    let mut old_owner = ClusterDb::connect(&pg.url).await.unwrap();
    match old_owner.fenced(&victim, "b", old_epoch).await {
        Err(ClusterError::Fenced { resource, epoch }) => {
            assert_eq!((resource.as_str(), epoch), (victim.as_str(), old_epoch))
        }
        Err(e) => panic!("expected Fenced, got {e}"),
        Ok(_) => panic!("a paused owner committed after losing its lease"),
    }
    // The new owner's commit under the new epoch goes through, and writes.
    let new_epoch = a.epoch_of(&victim).expect("a holds it");
    assert_eq!(new_epoch, after[&victim].1);
    let mut new_owner = ClusterDb::connect(&pg.url).await.unwrap();
    {
        let fenced = new_owner.fenced(&victim, "a", new_epoch).await.unwrap();
        fenced
            .transaction()
            .batch_execute("CREATE TABLE owner_writes (n int); INSERT INTO owner_writes VALUES (1)")
            .await
            .unwrap();
        fenced.commit().await.unwrap();
    }
    // While a fenced transaction is open the lease row is locked: a grant attempt
    // waits for it (seen in pg_stat_activity) and, once it commits, finds the lease
    // held and gets nothing.
    {
        let fenced = new_owner.fenced(&victim, "a", new_epoch).await.unwrap();
        let thief = ClusterDb::connect(&pg.url).await.unwrap();
        let resource = victim.clone();
        let steal = tokio::spawn(async move { thief.acquire(&resource, "c", lease).await });
        let (watcher, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO cluster_leases%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting == 1 {
                break;
            }
            assert!(!steal.is_finished(), "the grant did not wait for the lock");
            assert!(
                Instant::now() < deadline,
                "the grant never waited for the lock"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fenced.commit().await.unwrap();
        assert_eq!(steal.await.unwrap().unwrap(), None, "a still holds it");
    }
    a.shutdown().await;
    let view = db.view().await.unwrap();
    assert_eq!(count(&view, "a"), 0, "released on shutdown: {view:#?}");
    assert!(view.nodes.iter().all(|n| n.node_id != "a"), "a left");
}

/// (c): three nodes, one after the other: leases end up spread within one, and the
/// first node gives some up when the others join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_spread_leases_evenly() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let lease = Duration::from_secs(3);
    let all = resources(10);
    let mut db = ClusterDb::connect(&pg.url).await.unwrap();
    let a = ClusterNode::start(options(&pg, "a", lease), lister(&all))
        .await
        .unwrap();
    wait_for(&mut db, Duration::from_secs(20), "a takes all", |v| {
        count(v, "a") == 10
    })
    .await;
    let b = ClusterNode::start(options(&pg, "b", lease), lister(&all[..3]))
        .await
        .unwrap();
    let c = ClusterNode::start(options(&pg, "c", lease), lister(&[]))
        .await
        .unwrap();
    let (view, took) = wait_for(&mut db, Duration::from_secs(20), "4/3/3 spread", |v| {
        let counts = [count(v, "a"), count(v, "b"), count(v, "c")];
        counts.iter().sum::<usize>() == 10
            && counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1
    })
    .await;
    eprintln!("spread after {took:?}: {:?}", owners(&view));
    // Stable: a few heartbeats later nothing has moved.
    tokio::time::sleep(lease / 2).await;
    let later = db.view().await.unwrap();
    assert_eq!(owners(&later), owners(&view), "rebalancing settled");
    for node in [a, b, c] {
        node.shutdown().await;
    }
    let view = db.view().await.unwrap();
    assert!(view.leases.iter().all(|l| l.owner.is_none()), "{view:#?}");
}

/// (e): two real servers against the test PostgreSQL; one is SIGKILLed;
/// `freshet cluster status --json` shows its leases on the survivor within the lease
/// time plus slack. The survivor's clean shutdown releases them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_its_leases_to_the_survivor() {
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let lease_secs = 2;
    let args = |node: &str| -> Vec<String> {
        [
            "--cluster",
            pg.url.as_str(),
            "--node-id",
            node,
            "--advertise-url",
            &format!("http://{node}.test:4570"),
            "--cluster-lease-secs",
            &lease_secs.to_string(),
            "--cluster-heartbeat-ms",
            "300",
            "--state-delay-ms",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a_args = args("a");
    let mut a = common::Server::start(&a_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    // A stream of 4 shards on a, a video stream on b: 5 resources.
    let http = reqwest::Client::new();
    let resp = http
        .post(a.endpoint())
        .header("x-amz-target", "Kinesis_20131202.CreateStream")
        .header("content-type", "application/x-amz-json-1.1")
        .body(r#"{"StreamName":"orders","ShardCount":4}"#)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    let b_args = args("b");
    let mut b = common::Server::start(&b_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let resp = http
        .post(format!("{}/createStream", b.endpoint()))
        .header("content-type", "application/json")
        .body(r#"{"StreamName":"door-cam","DataRetentionInHours":1}"#)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());

    let status = |url: String| async move {
        let out = freshet_cli(&["cluster", "status", "--json", "--cluster", &url]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let held_by = |v: &serde_json::Value, node: &str| -> usize {
        v["leases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["owner"] == node && l["expires_in_secs"].as_f64().unwrap() > 0.0)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let spread = loop {
        let v = status(pg.url.clone()).await;
        if v["leases"].as_array().unwrap().len() == 5
            && held_by(&v, "a") + held_by(&v, "b") == 5
            && held_by(&v, "a").abs_diff(held_by(&v, "b")) <= 1
        {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "never spread: {v:#}\n{}",
            b.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let resources: Vec<&str> = spread["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["resource"].as_str().unwrap())
        .collect();
    assert!(
        resources.contains(&"shard:orders/shardId-000000000003"),
        "{resources:?}"
    );
    assert!(resources.contains(&"video:door-cam"), "{resources:?}");

    let killed_at = Instant::now();
    b.kill();
    let bound = Duration::from_secs(lease_secs) + SLACK;
    let moved = loop {
        let v = status(pg.url.clone()).await;
        if held_by(&v, "a") == 5 {
            break v;
        }
        assert!(
            killed_at.elapsed() < bound,
            "b's leases did not move within {bound:?}: {v:#}\n{}",
            a.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("leases moved {:?} after SIGKILL", killed_at.elapsed());
    for (before, after) in spread["leases"]
        .as_array()
        .unwrap()
        .iter()
        .zip(moved["leases"].as_array().unwrap())
    {
        assert_eq!(before["resource"], after["resource"]);
        if before["owner"] == "b" {
            assert!(
                after["epoch"].as_i64() > before["epoch"].as_i64(),
                "{after}"
            );
        }
    }
    let b_row = moved["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "b")
        .expect("b still listed");
    assert_eq!(b_row["live"], false);

    // The table form shows the same.
    let out = freshet_cli(&["cluster", "status", "--cluster", &pg.url]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 node(s), 1 live"), "{text}");
    assert!(text.contains("5 lease(s), 5 held"), "{text}");

    assert!(a.terminate().await, "a stops cleanly");
    let v = status(pg.url.clone()).await;
    assert_eq!(held_by(&v, "a"), 0, "released on shutdown: {v:#}");
}

/// Files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| {
                    if e.path().is_dir() {
                        files_under(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The shared data path of `node`, over a directory object store at `dir`.
async fn shared_log(
    pg: &TestPostgres,
    node: &ClusterNode,
    dir: &std::path::Path,
) -> Arc<freshet::cluster::records::SharedLog> {
    use freshet::cluster::records::{SharedLog, SharedLogOptions};
    let objects =
        freshet::cluster::objects::open(&format!("file://{}", dir.display()), "r").unwrap();
    SharedLog::start(
        SharedLogOptions {
            url: pg.url.clone(),
            batch: Duration::from_millis(1),
            owner_wait: Duration::from_secs(5),
            orphan_age: Duration::from_secs(3600),
        },
        node.leases(),
        objects,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_records_retention_and_an_interrupted_delete_finished_by_the_sweeper() {
    use bytes::Bytes;
    use freshet::streams::shared::{ShardKey, SharedShards, SharedStream};

    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let resource = freshet::cluster::shard_resource("s", "shardId-000000000000");
    let node = ClusterNode::start(
        options(&pg, "a", Duration::from_secs(5)),
        lister(std::slice::from_ref(&resource)),
    )
    .await
    .unwrap();
    let mut db = ClusterDb::connect(&pg.url).await.unwrap();
    wait_for(&mut db, SLACK, "the lease granted", |v| {
        owners(v).contains_key(&resource)
    })
    .await;
    let started = Instant::now();
    while node.epoch_of(&resource).is_none() {
        assert!(started.elapsed() < SLACK, "the node sees its lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let plane = shared_log(&pg, &node, dir.path()).await;
    let stream = SharedStream {
        name: "s".into(),
        stream_epoch: 1,
        meta: b"{}".to_vec(),
        deleted: false,
    };
    assert!(plane.create_stream(stream.clone()).await.unwrap());
    assert!(
        !plane.create_stream(stream.clone()).await.unwrap(),
        "a live name is refused"
    );
    let shard = ShardKey {
        stream: "s".into(),
        stream_epoch: 1,
        ordinal: 0,
    };
    let mut firsts = Vec::new();
    for i in 0..3 {
        let first = plane
            .append(shard.clone(), vec![Bytes::from(format!("r{i}"))])
            .await
            .unwrap();
        firsts.push(first);
    }
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
    assert_eq!(files_under(dir.path()), 3, "one object per batch");
    let read = plane.read(shard.clone(), 0, 100, 1 << 20).await.unwrap();
    let offsets: Vec<u64> = read.records.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, firsts);
    assert_eq!(read.end_offset, firsts[2] + 1);
    // `freshet cluster status` reports the shard's newest commit: by whom, how far it
    // trailed its records' arrival, and how long ago.
    let commits = freshet::cluster::index::shard_commits(&db).await.unwrap();
    assert_eq!(commits.len(), 1, "{commits:?}");
    assert_eq!(commits[0].resource, resource);
    assert_eq!(commits[0].node_id, "a");
    assert!(
        commits[0].commit_lag_ms < SLACK.as_millis() as f64,
        "{commits:?}"
    );
    assert!(commits[0].last_commit_secs < SLACK.as_secs_f64());

    // Orphans: objects no row names (a write stored but never committed) go once they
    // are old enough; indexed objects and young unindexed ones stay.
    let set_age = |path: &std::path::Path, age: Duration| {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - age)
            .unwrap();
    };
    let orphans = dir.path().join("records/s/1/shardId-000000000000");
    std::fs::create_dir_all(&orphans).unwrap();
    let old_orphan = orphans.join("00000000000000000000-x-old.rec");
    let young_orphan = orphans.join("00000000000000000000-x-young.rec");
    std::fs::write(&old_orphan, b"never indexed").unwrap();
    std::fs::write(&young_orphan, b"maybe being committed").unwrap();
    set_age(&old_orphan, Duration::from_secs(7200));
    let (sql0, conn0) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn0);
    let indexed_key: String = sql0
        .query_one(
            "SELECT object_key FROM cluster_record_objects ORDER BY first_offset LIMIT 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    set_age(&dir.path().join(&indexed_key), Duration::from_secs(7200));
    assert_eq!(
        plane
            .sweep_orphans(Duration::from_secs(3600))
            .await
            .unwrap(),
        1
    );
    assert!(!old_orphan.exists());
    assert!(young_orphan.exists(), "too young to be judged");
    assert!(dir.path().join(&indexed_key).exists(), "indexed: kept");
    let read = plane.read(shard.clone(), 0, 100, 1 << 20).await.unwrap();
    assert_eq!(read.records.len(), 3);
    std::fs::remove_file(&young_orphan).unwrap();

    // A pass interrupted after marking two objects and deleting one of them.
    let (sql, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = sql
        .query(
            "UPDATE cluster_record_objects SET deleting = true
             WHERE first_offset < $1 RETURNING object_key",
            &[&(firsts[2] as i64)],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let first_key: String = rows.iter().map(|r| r.get::<_, String>(0)).min().unwrap();
    std::fs::remove_file(dir.path().join(&first_key)).unwrap();
    // Readers skip marked rows at once.
    let read = plane.read(shard.clone(), 0, 100, 1 << 20).await.unwrap();
    assert_eq!(read.records.len(), 1);
    assert_eq!(read.records[0].offset, firsts[2]);
    // The sweeper finishes: the other object deleted, both rows removed.
    assert_eq!(plane.sweep().await.unwrap(), 2);
    assert_eq!(files_under(dir.path()), 1);
    let left: i64 = sql
        .query_one("SELECT count(*) FROM cluster_record_objects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1);

    // Retention: everything that arrived before the cutoff goes, objects and rows.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(
        plane
            .expire(shard.clone(), now_ms - 3_600_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        plane.expire(shard.clone(), now_ms + 1_000).await.unwrap(),
        1
    );
    assert!(
        plane
            .read(shard.clone(), 0, 100, 1 << 20)
            .await
            .unwrap()
            .records
            .is_empty()
    );
    assert_eq!(plane.sweep().await.unwrap(), 1);
    assert_eq!(files_under(dir.path()), 0);

    // A deleted stream's records are swept too.
    let after = plane
        .append(shard.clone(), vec![Bytes::from_static(b"late")])
        .await
        .unwrap();
    assert!(after > firsts[2], "offsets never go back");
    assert_eq!(files_under(dir.path()), 1);
    plane.delete_stream("s".into(), 1).await.unwrap();
    assert_eq!(plane.sweep().await.unwrap(), 1);
    assert_eq!(files_under(dir.path()), 0);
    assert!(
        freshet::cluster::index::shard_commits(&db)
            .await
            .unwrap()
            .is_empty(),
        "a deleted stream's shards are not reported"
    );
    node.shutdown().await;
}

/// One step of the shared-log model test.
#[derive(Debug, Clone)]
enum Step {
    /// One append of records of these sizes.
    Append(Vec<usize>),
    /// Appends of one record each, sent together (they may share a batch).
    Together(usize),
    /// A read from the model's record at this index (or the end), with this limit.
    Read(usize, usize),
    /// Retention of everything so far, then a sweep.
    ExpireAll,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        3 => proptest::collection::vec(0usize..300, 1..5).prop_map(Step::Append),
        2 => (2usize..6).prop_map(Step::Together),
        3 => (0usize..40, 1usize..12).prop_map(|(i, l)| Step::Read(i, l)),
        1 => Just(Step::ExpireAll),
    ]
}

/// The shared data path against a model (a list of live records): appends, concurrent
/// appends, reads from any position with any limit, and retention, on a real
/// PostgreSQL and a directory object store. Offsets only grow, reads return exactly
/// the model's records at or after their position, in order, and expired records are
/// gone.
#[test]
fn shared_log_matches_its_model() {
    use bytes::Bytes;
    use freshet::streams::shared::{ShardKey, SharedShards, SharedStream};
    use proptest::prelude::*;

    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    const CASES: u32 = 12;
    let resources: Vec<String> = (0..CASES)
        .map(|i| freshet::cluster::shard_resource(&format!("m{i}"), "shardId-000000000000"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (node, plane) = rt.block_on(async {
        let node = ClusterNode::start(
            options(&pg, "a", Duration::from_secs(5)),
            lister(&resources),
        )
        .await
        .unwrap();
        let started = Instant::now();
        while resources.iter().any(|r| node.epoch_of(r).is_none()) {
            assert!(started.elapsed() < SLACK * 2, "the node holds every lease");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let plane = shared_log(&pg, &node, dir.path()).await;
        (node, plane)
    });
    let case = std::sync::atomic::AtomicU32::new(0);
    let config = ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest::test_runner::TestRunner::new(config)
        .run(&proptest::collection::vec(step(), 1..25), |steps| {
            let i = case.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % CASES;
            let name = format!("m{i}");
            rt.block_on(async {
                let shard = ShardKey {
                    stream: name.clone(),
                    stream_epoch: 1,
                    ordinal: 0,
                };
                // A name reused by a shrinking run: start from an empty shard.
                plane.delete_stream(name.clone(), 1).await.unwrap();
                plane.sweep().await.unwrap();
                plane
                    .create_stream(SharedStream {
                        name: name.clone(),
                        stream_epoch: 1,
                        meta: b"{}".to_vec(),
                        deleted: false,
                    })
                    .await
                    .unwrap();
                let mut model: Vec<(u64, Bytes)> = Vec::new();
                let mut highest = None::<u64>;
                let mut n = 0u32;
                for step in steps {
                    match step {
                        Step::Append(sizes) => {
                            let payloads: Vec<Bytes> = sizes
                                .iter()
                                .map(|&len| {
                                    n += 1;
                                    Bytes::from(vec![(n % 251) as u8; len])
                                })
                                .collect();
                            let first =
                                plane.append(shard.clone(), payloads.clone()).await.unwrap();
                            prop_assert!(highest.is_none_or(|h| first > h));
                            for (k, p) in payloads.into_iter().enumerate() {
                                model.push((first + k as u64, p));
                            }
                            highest = model.last().map(|r| r.0);
                        }
                        Step::Together(k) => {
                            let mut tasks = tokio::task::JoinSet::new();
                            for _ in 0..k {
                                n += 1;
                                let p = Bytes::from(format!("t{n}"));
                                let plane = plane.clone();
                                let shard = shard.clone();
                                tasks.spawn(async move {
                                    (plane.append(shard, vec![p.clone()]).await.unwrap(), p)
                                });
                            }
                            let mut got = tasks.join_all().await;
                            got.sort_by_key(|g| g.0);
                            for (offset, p) in got {
                                prop_assert!(highest.is_none_or(|h| offset > h));
                                highest = Some(offset);
                                model.push((offset, p));
                            }
                        }
                        Step::Read(at, limit) => {
                            let from = model
                                .get(at)
                                .map(|r| r.0)
                                .unwrap_or_else(|| highest.map_or(0, |h| h + 1));
                            let read = plane
                                .read(shard.clone(), from, limit, 1 << 20)
                                .await
                                .unwrap();
                            let want: Vec<&(u64, Bytes)> =
                                model.iter().filter(|r| r.0 >= from).take(limit).collect();
                            let got: Vec<(u64, &Bytes)> = read
                                .records
                                .iter()
                                .map(|r| (r.offset, &r.payload))
                                .collect();
                            let want: Vec<(u64, &Bytes)> =
                                want.iter().map(|r| (r.0, &r.1)).collect();
                            prop_assert_eq!(got, want);
                            if let Some(h) = highest {
                                prop_assert_eq!(read.end_offset, h + 1);
                            }
                        }
                        Step::ExpireAll => {
                            let now_ms = std::time::SystemTime::now()
                                .duration_since(std::time::UNIX_EPOCH)
                                .unwrap()
                                .as_millis() as i64;
                            plane.expire(shard.clone(), now_ms + 1_000).await.unwrap();
                            plane.sweep().await.unwrap();
                            model.clear();
                            let read = plane.read(shard.clone(), 0, 100, 1 << 20).await.unwrap();
                            prop_assert!(read.records.is_empty());
                        }
                    }
                }
                Ok(())
            })
        })
        .unwrap();
    rt.block_on(node.shutdown());
}
