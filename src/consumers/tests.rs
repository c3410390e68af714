use std::collections::BTreeMap;

use bytes::Bytes;

use super::*;
use crate::store::catalog::RedbCatalog;
use crate::store::{Store, StoreConfig};
use crate::streams::model::StreamMode;
use crate::streams::{RecordInput, ServiceConfig};

async fn service(dir: &std::path::Path, state_delay_ms: u64) -> Arc<StreamService> {
    let clock = crate::clock::system();
    let store = Store::open(dir, StoreConfig::default(), clock.clone()).unwrap();
    let catalog = RedbCatalog::open(&dir.join("catalog.redb")).unwrap();
    let config = ServiceConfig {
        state_delay_ms,
        ..ServiceConfig::default()
    };
    StreamService::open(config, clock, store, Arc::new(catalog))
        .await
        .unwrap()
}

async fn stream_with_consumer(svc: &Arc<StreamService>) -> String {
    svc.create_stream("s", Some(1), StreamMode::Provisioned, BTreeMap::new())
        .await
        .unwrap();
    let arn = svc.stream_arn("s");
    svc.register_consumer(&arn, "c").await.unwrap().consumer_arn
}

async fn put(svc: &StreamService, data: &'static [u8]) -> String {
    svc.put_record(
        &StreamRef::name("s"),
        RecordInput {
            partition_key: "k".into(),
            explicit_hash_key: None,
            data: Bytes::from_static(data),
        },
        None,
    )
    .await
    .unwrap()
    .1
}

fn start(kind: &str) -> StartingPosition {
    StartingPosition {
        kind: kind.into(),
        sequence_number: None,
        timestamp_ms: None,
    }
}

async fn next_event(sub: &mut Subscription) -> ShardEvent {
    match tokio::time::timeout(Duration::from_secs(10), sub.events.recv()).await {
        Ok(Some(Delivery::Event(e))) => e,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The next event that carries records (idle events may come first).
async fn next_records(sub: &mut Subscription) -> ShardEvent {
    loop {
        let e = next_event(sub).await;
        if !e.records.is_empty() {
            return e;
        }
    }
}

#[tokio::test]
async fn consumer_states_creating_active_deleting_gone() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 50).await;
    svc.create_stream("s", Some(1), StreamMode::Provisioned, BTreeMap::new())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while svc
        .describe_stream_summary(&StreamRef::name("s"))
        .unwrap()
        .stream_status
        != crate::streams::model::StreamStatus::Active
    {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stream_arn = svc.stream_arn("s");
    let c = svc.register_consumer(&stream_arn, "c").await.unwrap();
    assert_eq!(c.consumer_status, "CREATING");
    let status = |svc: &StreamService| {
        svc.describe_consumer(None, None, Some(&c.consumer_arn))
            .map(|c| c.consumer_status)
    };
    while status(&svc).unwrap() != "ACTIVE" {
        assert!(std::time::Instant::now() < deadline, "never ACTIVE");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    svc.deregister_consumer(None, None, Some(&c.consumer_arn))
        .await
        .unwrap();
    assert_eq!(status(&svc).unwrap(), "DELETING");
    while status(&svc).is_ok() {
        assert!(std::time::Instant::now() < deadline, "never removed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        status(&svc),
        Err(StreamError::ResourceNotFound(_))
    ));
}

#[tokio::test]
async fn pushes_records_in_order_and_resumes_after_continuation() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 0).await;
    let consumer = stream_with_consumer(&svc).await;
    let fanout = FanOut::new(svc.clone(), DEFAULT_LIFETIME);
    put(&svc, b"one").await;
    let mut sub = fanout
        .subscribe(&consumer, "shardId-000000000000", &start("TRIM_HORIZON"))
        .await
        .unwrap();
    let e = next_records(&mut sub).await;
    assert_eq!(e.records.len(), 1);
    assert_eq!(&e.records[0].data[..], b"one");
    // Pushed when it becomes durable, while the subscription is open.
    put(&svc, b"two").await;
    let e = next_records(&mut sub).await;
    assert_eq!(&e.records[0].data[..], b"two");
    let continuation = e.continuation_sequence_number.clone().unwrap();
    assert_eq!(continuation, e.records[0].sequence_number);
    drop(sub);
    put(&svc, b"three").await;
    let resume = StartingPosition {
        kind: "AFTER_SEQUENCE_NUMBER".into(),
        sequence_number: Some(continuation),
        timestamp_ms: None,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut sub = loop {
        match fanout
            .subscribe(&consumer, "shardId-000000000000", &resume)
            .await
        {
            Ok(s) => break s,
            // The dropped subscription's task notices its receiver is gone first.
            Err(StreamError::ResourceInUse(_)) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    let e = next_records(&mut sub).await;
    assert_eq!(&e.records[0].data[..], b"three");
}

#[tokio::test]
async fn one_subscription_per_consumer_and_shard() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 0).await;
    let consumer = stream_with_consumer(&svc).await;
    let fanout = FanOut::new(svc.clone(), DEFAULT_LIFETIME);
    let _sub = fanout
        .subscribe(&consumer, "shardId-000000000000", &start("LATEST"))
        .await
        .unwrap();
    let second = fanout
        .subscribe(&consumer, "shardId-000000000000", &start("LATEST"))
        .await;
    assert!(matches!(second, Err(StreamError::ResourceInUse(_))));
}

#[tokio::test]
async fn ends_after_its_lifetime_and_when_deregistered() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 0).await;
    let consumer = stream_with_consumer(&svc).await;
    let fanout = FanOut::new(svc.clone(), Duration::from_millis(300));
    let mut sub = fanout
        .subscribe(&consumer, "shardId-000000000000", &start("LATEST"))
        .await
        .unwrap();
    // The channel closes (None) once the lifetime is over, with no error.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(d) = sub.events.recv().await {
            assert!(matches!(d, Delivery::Event(_)));
        }
    })
    .await;
    assert!(end.is_ok(), "subscription did not end");
    assert!(!fanout.is_active(&consumer, "shardId-000000000000"));

    let fanout = FanOut::new(svc.clone(), DEFAULT_LIFETIME);
    let mut sub = fanout
        .subscribe(&consumer, "shardId-000000000000", &start("LATEST"))
        .await
        .unwrap();
    next_event(&mut sub).await;
    svc.deregister_consumer(None, None, Some(&consumer))
        .await
        .unwrap();
    let last = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match sub.events.recv().await {
                Some(Delivery::Event(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap();
    assert!(matches!(
        last,
        Some(Delivery::Failed(StreamError::ResourceNotFound(_)))
    ));
}

#[tokio::test]
async fn bad_starting_positions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let svc = service(dir.path(), 0).await;
    let consumer = stream_with_consumer(&svc).await;
    let fanout = FanOut::new(svc.clone(), DEFAULT_LIFETIME);
    let no_seq = fanout
        .subscribe(
            &consumer,
            "shardId-000000000000",
            &start("AT_SEQUENCE_NUMBER"),
        )
        .await;
    assert!(matches!(no_seq, Err(StreamError::InvalidArgument(_))));
    let bad_seq = fanout
        .subscribe(
            &consumer,
            "shardId-000000000000",
            &StartingPosition {
                kind: "AFTER_SEQUENCE_NUMBER".into(),
                sequence_number: Some("12".into()),
                timestamp_ms: None,
            },
        )
        .await;
    assert!(
        matches!(bad_seq, Err(StreamError::InvalidArgument(m)) if m.contains("SubscribeToShard"))
    );
    let no_shard = fanout
        .subscribe(&consumer, "shardId-000000000009", &start("LATEST"))
        .await;
    assert!(matches!(no_shard, Err(StreamError::ResourceNotFound(_))));
    let no_consumer = fanout
        .subscribe(
            &format!("{consumer}0"),
            "shardId-000000000000",
            &start("LATEST"),
        )
        .await;
    assert!(matches!(no_consumer, Err(StreamError::ResourceNotFound(_))));
}
