//! Retention on simulated time: the stream service and storage engine run on a
//! `ManualClock`, records are written over simulated days, and retention must delete
//! exactly the expired segments, move TRIM_HORIZON forward, keep sequence numbers
//! growing, forget closed shards once their data expired, and survive a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use freshet::clock::{Clock, ManualClock};
use freshet::store::catalog::RedbCatalog;
use freshet::store::{Durability, RollPolicy, Store, StoreConfig};
use freshet::streams::model::StreamMode;
use freshet::streams::{RecordInput, ServiceConfig, StreamRef, StreamService};

const HOUR: i64 = 3_600_000;

async fn open(dir: &std::path::Path, clock: Arc<ManualClock>) -> Arc<StreamService> {
    let store = Store::open(
        dir,
        StoreConfig {
            durability: Durability::Fsync,
            // Small segments, sealed at least hourly, so retention has whole segments to drop.
            roll: RollPolicy {
                max_segment_bytes: 16 * 1024,
                max_segment_age_ms: HOUR,
            },
            writer_queue: 64,
            commit_delay: std::time::Duration::ZERO,
            ..StoreConfig::default()
        },
        clock.clone(),
    )
    .unwrap();
    let catalog = RedbCatalog::open(&dir.join("catalog.redb")).unwrap();
    let config = ServiceConfig {
        state_delay_ms: 0,
        ..ServiceConfig::default()
    };
    StreamService::open(config, clock, store, Arc::new(catalog))
        .await
        .unwrap()
}

fn record(i: usize) -> RecordInput {
    RecordInput {
        partition_key: format!("key-{}", i % 7),
        explicit_hash_key: None,
        data: Bytes::from(format!("record-{i:06}-{}", "x".repeat(200))),
    }
}

async fn read_all(svc: &StreamService, stream: &str, shard: &str) -> Vec<String> {
    let r = StreamRef::name(stream);
    let mut it = svc
        .get_shard_iterator(&r, shard, "TRIM_HORIZON", None, None)
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let page = svc.get_records(&it, Some(1000)).await.unwrap();
        let done = page.records.is_empty();
        out.extend(
            page.records
                .iter()
                .map(|r| String::from_utf8_lossy(&r.data[..13]).into_owned()),
        );
        match page.next_shard_iterator {
            Some(next) if !done => it = next,
            _ => return out,
        }
    }
}

#[tokio::test]
async fn expired_segments_are_deleted_and_trim_horizon_moves() {
    let dir = tempfile::tempdir().unwrap();
    let start = 1_700_000_000_000;
    let clock = Arc::new(ManualClock::new(start));
    let svc = open(dir.path(), clock.clone()).await;
    svc.create_stream("ret", Some(1), StreamMode::Provisioned, BTreeMap::new())
        .await
        .unwrap();
    let r = StreamRef::name("ret");

    // 48 simulated hours, 50 records an hour.
    let mut seqs = Vec::new();
    for hour in 0..48 {
        let batch: Vec<RecordInput> = (hour * 50..hour * 50 + 50).map(record).collect();
        let out = svc.put_records(&r, batch).await.unwrap();
        assert_eq!(out.failed, 0);
        for e in out.entries {
            if let freshet::streams::PutRecordsEntry::Ok { sequence } = e {
                seqs.push(sequence.encode());
            }
        }
        clock.advance_ms(HOUR);
    }
    assert_eq!(
        read_all(&svc, "ret", "shardId-000000000000").await.len(),
        2400
    );
    let log_dir = dir.path().join("logs/kds");
    let count_segments = || {
        walk(&log_dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .count()
    };
    let before = count_segments();

    // Now = start + 48 h; retention 24 h: the first ~24 hours expire.
    let removed = svc.enforce_retention().await.unwrap();
    assert!(removed > 0, "some segments expired");
    assert_eq!(count_segments(), before - removed);
    let left = read_all(&svc, "ret", "shardId-000000000000").await;
    assert!(
        left.len() < 2400 && left.len() >= 24 * 50,
        "kept {} records",
        left.len()
    );
    // What is left is a contiguous suffix of what was written, in order.
    let first_kept: usize = left[0][7..13].parse().unwrap();
    let expected: Vec<String> = (first_kept..2400)
        .map(|i| format!("record-{i:06}"))
        .collect();
    assert_eq!(left, expected);
    // Nothing younger than the retention period was deleted.
    let cutoff_record = (clock.now_ms() - 24 * HOUR - start) / HOUR * 50;
    assert!(
        first_kept as i64 <= cutoff_record,
        "first kept {first_kept}, cutoff {cutoff_record}"
    );

    // An iterator at an expired sequence number starts at the trim horizon.
    let it = svc
        .get_shard_iterator(
            &r,
            "shardId-000000000000",
            "AT_SEQUENCE_NUMBER",
            Some(&seqs[0]),
            None,
        )
        .await
        .unwrap();
    let page = svc.get_records(&it, Some(1)).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&page.records[0].data[..13]),
        left[0]
    );

    // Everything expires; new writes still get larger sequence numbers, also after a restart.
    clock.advance_ms(30 * HOUR);
    svc.enforce_retention().await.unwrap();
    assert!(
        read_all(&svc, "ret", "shardId-000000000000")
            .await
            .is_empty()
    );
    drop(svc);
    let svc = open(dir.path(), clock.clone()).await;
    let (_, seq, _) = svc.put_record(&r, record(9999), None).await.unwrap();
    assert!(seq > *seqs.last().unwrap());
    assert_eq!(
        read_all(&svc, "ret", "shardId-000000000000").await,
        vec!["record-009999".to_string()]
    );
}

#[tokio::test]
async fn closed_shards_expire_after_retention() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let svc = open(dir.path(), clock.clone()).await;
    svc.create_stream("split", Some(1), StreamMode::Provisioned, BTreeMap::new())
        .await
        .unwrap();
    let r = StreamRef::name("split");
    svc.put_records(&r, (0..10).map(record).collect())
        .await
        .unwrap();
    clock.advance_ms(1000);
    svc.split_shard(&r, "shardId-000000000000", &(u128::MAX / 2).to_string())
        .await
        .unwrap();
    let (shards, _) = svc.list_shards(Some(&r), None, None, None, None).unwrap();
    assert_eq!(shards.len(), 3);
    clock.advance_ms(25 * HOUR);
    svc.enforce_retention().await.unwrap();
    let (shards, _) = svc.list_shards(Some(&r), None, None, None, None).unwrap();
    let ids: Vec<_> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    assert_eq!(ids, ["shardId-000000000001", "shardId-000000000002"]);
    assert!(shards.iter().all(|s| s.parent_shard_id.is_none()));
    assert!(
        !dir.path()
            .join("logs/kds")
            .read_dir()
            .unwrap()
            .any(|d| { d.unwrap().path().join("shardId-000000000000").exists() })
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
