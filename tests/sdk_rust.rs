//! End-to-end tests with the official AWS SDK for Rust (`aws-sdk-kinesis`) against the
//! real `freshet` binary on a loopback port (plain HTTP, static credentials,
//! us-east-1, `endpoint_url`).
//!
//! Covered: CreateStream (provisioned and on-demand) and waiting for ACTIVE;
//! DescribeStream / DescribeStreamSummary / ListStreams / ListShards with pagination;
//! PutRecord / PutRecords read back byte-exact with GetShardIterator + GetRecords
//! (random binary data, empty data, a 1 MiB record), sequence-number ordering,
//! AT_SEQUENCE_NUMBER / AFTER_SEQUENCE_NUMBER / AT_TIMESTAMP / LATEST iterators;
//! SplitShard lineage (parent's EndingSequenceNumber, children's ParentShardId, reading
//! a closed parent to its end yields ChildShards and no next iterator), MergeShards,
//! UpdateShardCount; retention increase/decrease; tags (stream and resource APIs);
//! error paths surfacing as the SDK's typed errors (ResourceNotFoundException,
//! ResourceInUseException, InvalidArgumentException, LimitExceededException,
//! ExpiredIteratorException with `--iterator-ttl-secs 1`); enhanced fan-out
//! (RegisterStreamConsumer, SubscribeToShard's event stream read byte-exact, a second
//! subscription refused, DeregisterStreamConsumer ending the open one).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::{
    ChildShard, PutRecordsRequestEntry, Record, ScalingType, Shard, ShardFilter, ShardFilterType,
    ShardIteratorType, StreamMode, StreamModeDetails, StreamStatus,
};
use common::{Rng, Server, seq_cmp};

const MAX_HASH: u128 = u128::MAX;
const MIB: usize = 1024 * 1024;

/// An SDK client for `server`: plain-HTTP connector, static credentials.
fn client(server: &Server) -> Client {
    client_with(server, "test", "test")
}

/// An SDK client signing with the key `id` / `secret`.
fn client_with(server: &Server, id: &str, secret: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new().build_http();
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(id, secret, None, None, "static"))
        .endpoint_url(server.endpoint())
        .http_client(http)
        .build();
    Client::from_conf(config)
}

async fn start(extra: &[&str]) -> (Server, Client) {
    let mut args = vec!["--state-delay-ms", "0"];
    args.extend_from_slice(extra);
    let server = Server::start(&args).await;
    let client = client(&server);
    (server, client)
}

/// The service error of a call that must fail with one.
#[track_caller]
fn service_error<T: Debug, E: Debug, R: Debug>(result: Result<T, SdkError<E, R>>) -> E {
    match result {
        Ok(v) => panic!("expected a service error, the call succeeded: {v:?}"),
        Err(SdkError::ServiceError(e)) => e.into_err(),
        Err(other) => panic!("expected a service error, got {other:?}"),
    }
}

/// Polls DescribeStreamSummary until the stream is ACTIVE.
async fn wait_active(client: &Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .expect("describe_stream_summary");
        let summary = out.stream_description_summary().expect("summary");
        if *summary.stream_status() == StreamStatus::Active {
            return;
        }
        assert!(Instant::now() < deadline, "{name} never became ACTIVE");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_active(client: &Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("create_stream");
    wait_active(client, name).await;
}

async fn shards(client: &Client, name: &str) -> Vec<Shard> {
    let out = client
        .describe_stream()
        .stream_name(name)
        .send()
        .await
        .expect("describe_stream");
    let d = out.stream_description().expect("description");
    assert!(!d.has_more_shards());
    d.shards().to_vec()
}

fn range(shard: &Shard) -> (u128, u128) {
    let r = shard.hash_key_range().expect("hash key range");
    (
        r.starting_hash_key().parse().expect("starting hash key"),
        r.ending_hash_key().parse().expect("ending hash key"),
    )
}

fn is_open(shard: &Shard) -> bool {
    shard
        .sequence_number_range()
        .expect("sequence number range")
        .ending_sequence_number()
        .is_none()
}

/// Asserts that the open shards' hash key ranges tile [0, 2^128-1] exactly.
fn assert_open_cover(all: &[Shard]) {
    let mut ranges: Vec<(u128, u128)> = all.iter().filter(|s| is_open(s)).map(range).collect();
    ranges.sort();
    assert!(!ranges.is_empty(), "no open shards");
    assert_eq!(ranges[0].0, 0, "open shards do not start at 0: {ranges:?}");
    for w in ranges.windows(2) {
        assert_eq!(
            w[0].1.checked_add(1),
            Some(w[1].0),
            "gap or overlap: {ranges:?}"
        );
    }
    assert_eq!(ranges.last().unwrap().1, MAX_HASH, "{ranges:?}");
}

async fn iterator(
    client: &Client,
    stream: &str,
    shard: &str,
    kind: ShardIteratorType,
    seq: Option<&str>,
    at: Option<DateTime>,
) -> String {
    client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(kind)
        .set_starting_sequence_number(seq.map(str::to_string))
        .set_timestamp(at)
        .send()
        .await
        .expect("get_shard_iterator")
        .shard_iterator()
        .expect("iterator")
        .to_string()
}

/// What reading a shard returned: its records, and the ChildShards of the final answer
/// when the shard is closed and was read to its end (then there is no next iterator).
struct ShardRead {
    records: Vec<Record>,
    children: Option<Vec<ChildShard>>,
}

/// Follows `it` until the shard is closed and exhausted, or (open shard) until an
/// answer is empty and not behind.
async fn read_from(client: &Client, mut it: String) -> ShardRead {
    let mut records = Vec::new();
    for _ in 0..10_000 {
        let out = client
            .get_records()
            .shard_iterator(&it)
            .limit(10_000)
            .send()
            .await
            .expect("get_records");
        let empty = out.records().is_empty();
        records.extend(out.records().iter().cloned());
        match out.next_shard_iterator() {
            None => {
                return ShardRead {
                    records,
                    children: Some(out.child_shards().to_vec()),
                };
            }
            Some(next) => {
                assert!(
                    out.child_shards().is_empty(),
                    "ChildShards with a next iterator"
                );
                if empty && out.millis_behind_latest() == Some(0) {
                    return ShardRead {
                        records,
                        children: None,
                    };
                }
                it = next.to_string();
            }
        }
    }
    panic!("shard never caught up");
}

async fn read_shard(client: &Client, stream: &str, shard: &str) -> ShardRead {
    let it = iterator(
        client,
        stream,
        shard,
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await;
    read_from(client, it).await
}

fn assert_increasing(records: &[Record]) {
    for w in records.windows(2) {
        assert_eq!(
            seq_cmp(w[0].sequence_number(), w[1].sequence_number()),
            std::cmp::Ordering::Less,
            "sequence numbers out of order: {} then {}",
            w[0].sequence_number(),
            w[1].sequence_number()
        );
    }
}

fn entry(key: &str, data: Vec<u8>) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .partition_key(key)
        .data(Blob::new(data))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_lifecycle_describe_and_list() {
    // A non-zero state delay, so CREATING / DELETING are observable (long enough that
    // the calls right after CreateStream land inside it even on a loaded machine).
    let server = Server::start(&["--state-delay-ms", "1000"]).await;
    let client = client(&server);

    client
        .create_stream()
        .stream_name("alpha")
        .shard_count(3)
        .send()
        .await
        .unwrap();
    let summary = client
        .describe_stream_summary()
        .stream_name("alpha")
        .send()
        .await
        .unwrap();
    let summary = summary.stream_description_summary().unwrap();
    assert_eq!(*summary.stream_status(), StreamStatus::Creating);
    let err = service_error(
        client
            .split_shard()
            .stream_name("alpha")
            .shard_to_split("shardId-000000000000")
            .new_starting_hash_key("1000")
            .send()
            .await,
    );
    assert!(err.is_resource_in_use_exception(), "{err:?}");
    wait_active(&client, "alpha").await;

    // Creating it again while it exists.
    let err = service_error(
        client
            .create_stream()
            .stream_name("alpha")
            .shard_count(1)
            .send()
            .await,
    );
    assert!(err.is_resource_in_use_exception(), "{err:?}");

    // On-demand: no shard count.
    client
        .create_stream()
        .stream_name("beta")
        .stream_mode_details(
            StreamModeDetails::builder()
                .stream_mode(StreamMode::OnDemand)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    wait_active(&client, "beta").await;
    let beta = client
        .describe_stream_summary()
        .stream_name("beta")
        .send()
        .await
        .unwrap();
    let beta = beta.stream_description_summary().unwrap();
    assert_eq!(
        beta.stream_mode_details().map(|m| m.stream_mode().clone()),
        Some(StreamMode::OnDemand)
    );
    assert!(beta.open_shard_count() >= 1);
    assert_open_cover(&shards(&client, "beta").await);

    // Provisioned stream description.
    let d = client
        .describe_stream()
        .stream_name("alpha")
        .send()
        .await
        .unwrap();
    let d = d.stream_description().unwrap();
    assert_eq!(d.stream_name(), "alpha");
    assert_eq!(
        d.stream_arn(),
        "arn:aws:kinesis:us-east-1:000000000000:stream/alpha"
    );
    assert_eq!(*d.stream_status(), StreamStatus::Active);
    assert_eq!(d.retention_period_hours(), 24);
    assert_eq!(
        d.stream_mode_details().map(|m| m.stream_mode().clone()),
        Some(StreamMode::Provisioned)
    );
    assert_eq!(d.shards().len(), 3);
    assert!(!d.has_more_shards());
    for s in d.shards() {
        assert!(s.parent_shard_id().is_none());
        assert!(
            !s.sequence_number_range()
                .unwrap()
                .starting_sequence_number()
                .is_empty()
        );
    }
    assert_open_cover(d.shards());
    let summary = client
        .describe_stream_summary()
        .stream_name("alpha")
        .send()
        .await
        .unwrap();
    let summary = summary.stream_description_summary().unwrap();
    assert_eq!(summary.open_shard_count(), 3);
    assert_eq!(summary.stream_arn(), d.stream_arn());
    // The ARN works in place of the name.
    let by_arn = client
        .describe_stream_summary()
        .stream_arn(d.stream_arn())
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_arn.stream_description_summary().unwrap().stream_name(),
        "alpha"
    );

    // DescribeStream pagination over shards.
    let page = client
        .describe_stream()
        .stream_name("alpha")
        .limit(2)
        .send()
        .await
        .unwrap();
    let page = page.stream_description().unwrap();
    assert_eq!(page.shards().len(), 2);
    assert!(page.has_more_shards());
    let rest = client
        .describe_stream()
        .stream_name("alpha")
        .limit(2)
        .exclusive_start_shard_id(page.shards()[1].shard_id())
        .send()
        .await
        .unwrap();
    let rest = rest.stream_description().unwrap();
    assert_eq!(rest.shards().len(), 1);
    assert!(!rest.has_more_shards());
    assert_eq!(rest.shards()[0].shard_id(), d.shards()[2].shard_id());

    // ListShards pagination: NextToken alone (no stream name) continues.
    let first = client
        .list_shards()
        .stream_name("alpha")
        .max_results(2)
        .send()
        .await
        .unwrap();
    assert_eq!(first.shards().len(), 2);
    let token = first.next_token().expect("NextToken").to_string();
    let second = client.list_shards().next_token(token).send().await.unwrap();
    assert_eq!(second.shards().len(), 1);
    assert!(second.next_token().is_none());
    let ids: Vec<&str> = first
        .shards()
        .iter()
        .chain(second.shards())
        .map(|s| s.shard_id())
        .collect();
    let expected: Vec<&str> = d.shards().iter().map(|s| s.shard_id()).collect();
    assert_eq!(ids, expected);

    let after_first = client
        .list_shards()
        .stream_name("alpha")
        .exclusive_start_shard_id(d.shards()[0].shard_id())
        .send()
        .await
        .unwrap();
    let after_ids: Vec<&str> = after_first.shards().iter().map(|s| s.shard_id()).collect();
    assert_eq!(after_ids, expected[1..]);

    // ListStreams pagination, by NextToken, by ExclusiveStartStreamName and with the
    // SDK paginator.
    for i in 0..5 {
        client
            .create_stream()
            .stream_name(format!("s-{i}"))
            .shard_count(1)
            .send()
            .await
            .unwrap();
    }
    let mut all = vec![
        "alpha".to_string(),
        "beta".to_string(),
        "s-0".into(),
        "s-1".into(),
        "s-2".into(),
        "s-3".into(),
        "s-4".into(),
    ];
    all.sort();
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let out = client
            .list_streams()
            .limit(3)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        pages += 1;
        assert!(out.stream_names().len() <= 3);
        assert_eq!(out.stream_names().len(), out.stream_summaries().len());
        for (n, s) in out.stream_names().iter().zip(out.stream_summaries()) {
            assert_eq!(n, s.stream_name());
        }
        seen.extend(out.stream_names().iter().cloned());
        if !out.has_more_streams() {
            assert!(out.next_token().is_none());
            break;
        }
        token = Some(out.next_token().expect("NextToken with more").to_string());
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all);
    let after = client
        .list_streams()
        .exclusive_start_stream_name("beta")
        .send()
        .await
        .unwrap();
    assert_eq!(after.stream_names(), &all[2..]);
    let mut pages = client.list_streams().limit(2).into_paginator().send();
    let mut paginated = Vec::new();
    while let Some(page) = pages.next().await {
        paginated.extend(page.unwrap().stream_names().iter().cloned());
    }
    assert_eq!(paginated, all);

    // DeleteStream: DELETING, then gone.
    client
        .delete_stream()
        .stream_name("beta")
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client
            .describe_stream_summary()
            .stream_name("beta")
            .send()
            .await
        {
            Ok(out) => assert_eq!(
                *out.stream_description_summary().unwrap().stream_status(),
                StreamStatus::Deleting
            ),
            Err(e) => {
                let e = e.into_service_error();
                assert!(e.is_resource_not_found_exception(), "{e:?}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "beta never went away");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let names = client.list_streams().send().await.unwrap();
    assert!(!names.stream_names().contains(&"beta".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_round_trip_byte_exact() {
    let (_server, client) = start(&[]).await;
    let mut rng = Rng::from_env("put_and_get_round_trip_byte_exact");
    create_active(&client, "data", 4).await;
    let all_shards = shards(&client, "data").await;

    // Expected contents: sequence number -> (shard, partition key, data).
    let mut expected: HashMap<String, (String, String, Vec<u8>)> = HashMap::new();

    // A record of exactly 1 MiB (data plus partition key), random bytes.
    let big = rng.bytes(MIB - 3);
    let out = client
        .put_record()
        .stream_name("data")
        .partition_key("big")
        .data(Blob::new(big.clone()))
        .send()
        .await
        .expect("1 MiB record");
    expected.insert(
        out.sequence_number().to_string(),
        (out.shard_id().to_string(), "big".into(), big),
    );

    // Single puts of random binary data, with explicit hash keys at both ends.
    for (i, hash) in [Some("0".to_string()), Some(MAX_HASH.to_string()), None]
        .into_iter()
        .enumerate()
    {
        let len = rng.range(1, 3000) as usize;
        let data = rng.bytes(len);
        let key = format!("single-{i}");
        let out = client
            .put_record()
            .stream_name("data")
            .partition_key(&key)
            .set_explicit_hash_key(hash.clone())
            .data(Blob::new(data.clone()))
            .send()
            .await
            .unwrap();
        if let Some(h) = hash {
            let h: u128 = h.parse().unwrap();
            let owner = all_shards
                .iter()
                .find(|s| {
                    let (a, b) = range(s);
                    a <= h && h <= b
                })
                .unwrap();
            assert_eq!(out.shard_id(), owner.shard_id(), "explicit hash key {h}");
        }
        expected.insert(
            out.sequence_number().to_string(),
            (out.shard_id().to_string(), key, data),
        );
    }

    // PutRecords batches, including an empty data blob and non-ASCII keys.
    for batch in 0..3 {
        let mut sent = Vec::new();
        let mut entries = Vec::new();
        for i in 0..200 {
            let len = if batch == 0 && i == 0 {
                0
            } else {
                rng.range(1, 5000) as usize
            };
            let data = rng.bytes(len);
            let key = format!("k-{}-é-{}", batch, rng.next_u64());
            entries.push(entry(&key, data.clone()));
            sent.push((key, data));
        }
        let out = client
            .put_records()
            .stream_name("data")
            .set_records(Some(entries))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
        assert_eq!(out.records().len(), sent.len());
        // Within one call, records of one shard get increasing numbers in order.
        let mut last: HashMap<String, String> = HashMap::new();
        for (r, (key, data)) in out.records().iter().zip(sent) {
            let shard = r.shard_id().expect("shard id").to_string();
            let seq = r.sequence_number().expect("sequence number").to_string();
            assert!(r.error_code().is_none());
            if let Some(prev) = last.get(&shard) {
                assert_eq!(seq_cmp(prev, &seq), std::cmp::Ordering::Less);
            }
            last.insert(shard.clone(), seq.clone());
            assert!(expected.insert(seq, (shard, key, data)).is_none());
        }
    }

    // Addressing the stream by ARN: PutRecord, GetShardIterator and GetRecords.
    let arn = "arn:aws:kinesis:us-east-1:000000000000:stream/data";
    let data = rng.bytes(777);
    let out = client
        .put_record()
        .stream_arn(arn)
        .partition_key("by-arn")
        .data(Blob::new(data.clone()))
        .send()
        .await
        .unwrap();
    let it = client
        .get_shard_iterator()
        .stream_arn(arn)
        .shard_id(out.shard_id())
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .starting_sequence_number(out.sequence_number())
        .send()
        .await
        .unwrap();
    let got = client
        .get_records()
        .stream_arn(arn)
        .shard_iterator(it.shard_iterator().unwrap())
        .limit(1)
        .send()
        .await
        .unwrap();
    assert_eq!(got.records().len(), 1);
    assert_eq!(got.records()[0].data().as_ref(), data.as_slice());
    expected.insert(
        out.sequence_number().to_string(),
        (out.shard_id().to_string(), "by-arn".into(), data),
    );

    // Read everything back, shard by shard.
    let mut read = 0;
    for shard in &all_shards {
        let got = read_shard(&client, "data", shard.shard_id()).await;
        assert!(got.children.is_none(), "open shard reported children");
        assert_increasing(&got.records);
        for r in &got.records {
            let (exp_shard, key, data) = expected
                .get(r.sequence_number())
                .unwrap_or_else(|| panic!("unexpected record {}", r.sequence_number()));
            assert_eq!(exp_shard, shard.shard_id());
            assert_eq!(r.partition_key(), Some(key.as_str()));
            assert!(
                r.data().as_ref() == data.as_slice(),
                "data of {} differs ({} bytes read, {} sent)",
                r.sequence_number(),
                r.data().as_ref().len(),
                data.len()
            );
            assert!(r.approximate_arrival_timestamp().is_some());
        }
        read += got.records.len();
    }
    assert_eq!(read, expected.len(), "records lost or duplicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterator_positions() {
    let (_server, client) = start(&[]).await;
    create_active(&client, "pos", 1).await;
    let shard = "shardId-000000000000";

    // LATEST taken before any put sees the first later put.
    let latest = iterator(&client, "pos", shard, ShardIteratorType::Latest, None, None).await;
    let empty = client
        .get_records()
        .shard_iterator(&latest)
        .send()
        .await
        .unwrap();
    assert!(empty.records().is_empty());
    let latest = empty.next_shard_iterator().unwrap().to_string();

    // Ten single puts chained with SequenceNumberForOrdering.
    let mut seqs: Vec<String> = Vec::new();
    for i in 0..10u8 {
        let out = client
            .put_record()
            .stream_name("pos")
            .partition_key("k")
            .data(Blob::new(vec![i; 10]))
            .set_sequence_number_for_ordering(seqs.last().cloned())
            .send()
            .await
            .unwrap();
        if let Some(prev) = seqs.last() {
            assert_eq!(
                seq_cmp(prev, out.sequence_number()),
                std::cmp::Ordering::Less
            );
        }
        seqs.push(out.sequence_number().to_string());
    }
    let from_latest = client
        .get_records()
        .shard_iterator(&latest)
        .send()
        .await
        .unwrap();
    assert_eq!(from_latest.records()[0].sequence_number(), seqs[0]);

    let at = read_from(
        &client,
        iterator(
            &client,
            "pos",
            shard,
            ShardIteratorType::AtSequenceNumber,
            Some(&seqs[3]),
            None,
        )
        .await,
    )
    .await;
    let at_seqs: Vec<&str> = at.records.iter().map(|r| r.sequence_number()).collect();
    assert_eq!(
        at_seqs,
        seqs[3..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(at.records[0].data().as_ref(), &[3u8; 10]);

    let after = read_from(
        &client,
        iterator(
            &client,
            "pos",
            shard,
            ShardIteratorType::AfterSequenceNumber,
            Some(&seqs[3]),
            None,
        )
        .await,
    )
    .await;
    let after_seqs: Vec<&str> = after.records.iter().map(|r| r.sequence_number()).collect();
    assert_eq!(
        after_seqs,
        seqs[4..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    // After the last record: nothing yet.
    let tail = read_from(
        &client,
        iterator(
            &client,
            "pos",
            shard,
            ShardIteratorType::AfterSequenceNumber,
            Some(&seqs[9]),
            None,
        )
        .await,
    )
    .await;
    assert!(tail.records.is_empty());

    // Limit splits a read and the next iterator continues exactly.
    let it = iterator(
        &client,
        "pos",
        shard,
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await;
    let part = client
        .get_records()
        .shard_iterator(&it)
        .limit(3)
        .send()
        .await
        .unwrap();
    assert_eq!(part.records().len(), 3);
    assert!(part.millis_behind_latest().is_some());
    let next = client
        .get_records()
        .shard_iterator(part.next_shard_iterator().unwrap())
        .limit(3)
        .send()
        .await
        .unwrap();
    assert_eq!(next.records()[0].sequence_number(), seqs[3]);

    // AT_TIMESTAMP: a time between two batches starts at the second batch.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let cut = DateTime::from(std::time::SystemTime::now());
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut second = Vec::new();
    for i in 0..5u8 {
        let out = client
            .put_record()
            .stream_name("pos")
            .partition_key("k")
            .data(Blob::new(vec![100 + i; 5]))
            .send()
            .await
            .unwrap();
        second.push(out.sequence_number().to_string());
    }
    let by_time = read_from(
        &client,
        iterator(
            &client,
            "pos",
            shard,
            ShardIteratorType::AtTimestamp,
            None,
            Some(cut),
        )
        .await,
    )
    .await;
    let got: Vec<&str> = by_time
        .records
        .iter()
        .map(|r| r.sequence_number())
        .collect();
    assert_eq!(got, second.iter().map(String::as_str).collect::<Vec<_>>());
    for r in &by_time.records {
        assert!(r.approximate_arrival_timestamp().unwrap().secs() >= cut.secs());
    }
    // A timestamp before the stream existed starts at its first record.
    let from_start = read_from(
        &client,
        iterator(
            &client,
            "pos",
            shard,
            ShardIteratorType::AtTimestamp,
            None,
            Some(DateTime::from_secs(1_000_000_000)),
        )
        .await,
    )
    .await;
    assert_eq!(from_start.records.len(), 15);
    assert_eq!(from_start.records[0].sequence_number(), seqs[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_merge_and_lineage() {
    let (_server, client) = start(&[]).await;
    let mut rng = Rng::from_env("split_merge_and_lineage");
    create_active(&client, "rs", 1).await;
    let parent = "shardId-000000000000".to_string();

    let mut before = Vec::new();
    for i in 0..20 {
        let data = rng.bytes(100);
        let out = client
            .put_record()
            .stream_name("rs")
            .partition_key(format!("p{i}"))
            .data(Blob::new(data.clone()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.shard_id(), parent);
        before.push((out.sequence_number().to_string(), data));
    }
    let last_parent_seq = before.last().unwrap().0.clone();

    let mid = 1u128 << 127;
    client
        .split_shard()
        .stream_name("rs")
        .shard_to_split(&parent)
        .new_starting_hash_key(mid.to_string())
        .send()
        .await
        .unwrap();
    wait_active(&client, "rs").await;

    let all = shards(&client, "rs").await;
    assert_eq!(all.len(), 3);
    let p = all.iter().find(|s| s.shard_id() == parent).unwrap();
    let ending = p
        .sequence_number_range()
        .unwrap()
        .ending_sequence_number()
        .expect("closed parent has an EndingSequenceNumber")
        .to_string();
    assert_ne!(
        seq_cmp(&ending, &last_parent_seq),
        std::cmp::Ordering::Less,
        "EndingSequenceNumber {ending} is before the last record {last_parent_seq}"
    );
    let children: Vec<&Shard> = all.iter().filter(|s| s.shard_id() != parent).collect();
    assert_eq!(children.len(), 2);
    for c in &children {
        assert_eq!(c.parent_shard_id(), Some(parent.as_str()));
        assert!(c.adjacent_parent_shard_id().is_none());
        assert!(is_open(c));
    }
    let mut child_ranges: Vec<(u128, u128)> = children.iter().map(|s| range(s)).collect();
    child_ranges.sort();
    assert_eq!(child_ranges, vec![(0, mid - 1), (mid, MAX_HASH)]);
    assert_open_cover(&all);
    let child_ids: Vec<String> = children.iter().map(|s| s.shard_id().to_string()).collect();

    // New records go to the children, after every parent record.
    for i in 0..40 {
        let out = client
            .put_record()
            .stream_name("rs")
            .partition_key(format!("c{i}-{}", rng.next_u64()))
            .data(Blob::new(rng.bytes(50)))
            .send()
            .await
            .unwrap();
        assert!(child_ids.contains(&out.shard_id().to_string()));
        assert_eq!(
            seq_cmp(&last_parent_seq, out.sequence_number()),
            std::cmp::Ordering::Less
        );
    }

    // Reading the parent to its end: exactly its records, then ChildShards, no iterator.
    let read = read_shard(&client, "rs", &parent).await;
    assert_eq!(read.records.len(), before.len());
    for (r, (seq, data)) in read.records.iter().zip(&before) {
        assert_eq!(r.sequence_number(), seq);
        assert_eq!(r.data().as_ref(), data.as_slice());
        assert_ne!(
            seq_cmp(r.sequence_number(), &ending),
            std::cmp::Ordering::Greater
        );
    }
    let kids = read
        .children
        .expect("ChildShards at the end of a closed shard");
    let mut kid_ids: Vec<&str> = kids.iter().map(|c| c.shard_id()).collect();
    kid_ids.sort();
    assert_eq!(
        kid_ids,
        child_ids.iter().map(String::as_str).collect::<Vec<_>>()
    );
    for k in &kids {
        assert_eq!(k.parent_shards(), std::slice::from_ref(&parent));
        assert!(k.hash_key_range().is_some());
    }
    // Starting at the parent's last record also ends with the children.
    let at_end = read_from(
        &client,
        iterator(
            &client,
            "rs",
            &parent,
            ShardIteratorType::AtSequenceNumber,
            Some(&last_parent_seq),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(at_end.records.len(), 1);
    assert!(at_end.children.is_some());

    // A closed shard cannot be split again (the error code for this case differs
    // between Kinesis implementations, the message does not); a bad hash key is refused.
    let err = service_error(
        client
            .split_shard()
            .stream_name("rs")
            .shard_to_split(&parent)
            .new_starting_hash_key(mid.to_string())
            .send()
            .await,
    );
    assert!(
        err.is_invalid_argument_exception() || err.is_resource_in_use_exception(),
        "{err:?}"
    );
    assert!(
        err.meta()
            .message()
            .is_some_and(|m| m.contains("already been merged or split")),
        "{err:?}"
    );
    let err = service_error(
        client
            .split_shard()
            .stream_name("rs")
            .shard_to_split(&child_ids[0])
            .new_starting_hash_key((mid + 5).to_string())
            .send()
            .await,
    );
    assert!(err.is_invalid_argument_exception(), "{err:?}");
    let err = service_error(
        client
            .split_shard()
            .stream_name("rs")
            .shard_to_split("shardId-000000000099")
            .new_starting_hash_key("12345")
            .send()
            .await,
    );
    assert!(err.is_resource_not_found_exception(), "{err:?}");

    // Merge the children back into one.
    let (low, high) = {
        let mut c = children.clone();
        c.sort_by_key(|s| range(s));
        (c[0].shard_id().to_string(), c[1].shard_id().to_string())
    };
    client
        .merge_shards()
        .stream_name("rs")
        .shard_to_merge(&low)
        .adjacent_shard_to_merge(&high)
        .send()
        .await
        .unwrap();
    wait_active(&client, "rs").await;
    let all = shards(&client, "rs").await;
    assert_eq!(all.len(), 4);
    let merged = all.iter().find(|s| is_open(s)).unwrap();
    assert_eq!(all.iter().filter(|s| is_open(s)).count(), 1);
    assert_eq!(range(merged), (0, MAX_HASH));
    let mut parents = vec![
        merged.parent_shard_id().unwrap().to_string(),
        merged
            .adjacent_parent_shard_id()
            .expect("AdjacentParentShardId")
            .to_string(),
    ];
    parents.sort();
    assert_eq!(parents, child_ids);
    let low_read = read_shard(&client, "rs", &low).await;
    let kids = low_read.children.expect("merged parent reports its child");
    assert_eq!(kids.len(), 1);
    assert_eq!(kids[0].shard_id(), merged.shard_id());
    let mut kid_parents = kids[0].parent_shards().to_vec();
    kid_parents.sort();
    assert_eq!(kid_parents, child_ids);

    // UpdateShardCount: 1 -> 2 -> 4, then too far.
    let out = client
        .update_shard_count()
        .stream_name("rs")
        .target_shard_count(2)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    assert_eq!(out.current_shard_count(), Some(1));
    assert_eq!(out.target_shard_count(), Some(2));
    wait_active(&client, "rs").await;
    client
        .update_shard_count()
        .stream_name("rs")
        .target_shard_count(4)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    wait_active(&client, "rs").await;
    let all = shards(&client, "rs").await;
    assert_eq!(all.iter().filter(|s| is_open(s)).count(), 4);
    assert_open_cover(&all);
    let summary = client
        .describe_stream_summary()
        .stream_name("rs")
        .send()
        .await
        .unwrap();
    assert_eq!(
        summary
            .stream_description_summary()
            .unwrap()
            .open_shard_count(),
        4
    );
    let err = service_error(
        client
            .update_shard_count()
            .stream_name("rs")
            .target_shard_count(9)
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await,
    );
    assert!(err.is_limit_exceeded_exception(), "{err:?}");

    // Non-adjacent open shards cannot be merged.
    let mut open: Vec<&Shard> = all.iter().filter(|s| is_open(s)).collect();
    open.sort_by_key(|s| range(s));
    let err = service_error(
        client
            .merge_shards()
            .stream_name("rs")
            .shard_to_merge(open[0].shard_id())
            .adjacent_shard_to_merge(open[2].shard_id())
            .send()
            .await,
    );
    assert!(err.is_invalid_argument_exception(), "{err:?}");

    // ListShards filters: AT_LATEST lists the open shards only; AT_TRIM_HORIZON the
    // original one.
    let latest = client
        .list_shards()
        .stream_name("rs")
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtLatest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut latest_ids: Vec<&str> = latest.shards().iter().map(|s| s.shard_id()).collect();
    latest_ids.sort();
    let mut open_ids: Vec<&str> = open.iter().map(|s| s.shard_id()).collect();
    open_ids.sort();
    assert_eq!(latest_ids, open_ids);
    let horizon = client
        .list_shards()
        .stream_name("rs")
        .shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtTrimHorizon)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let horizon_ids: Vec<&str> = horizon.shards().iter().map(|s| s.shard_id()).collect();
    assert_eq!(horizon_ids, vec![parent.as_str()]);

    // Records still flow into the open shards.
    let out = client
        .put_records()
        .stream_name("rs")
        .records(entry("after-scaling", b"x".to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
    assert!(open_ids.contains(&out.records()[0].shard_id().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_periods() {
    let (_server, client) = start(&[]).await;
    create_active(&client, "ret", 1).await;
    let retention = async |client: &Client| {
        client
            .describe_stream_summary()
            .stream_name("ret")
            .send()
            .await
            .unwrap()
            .stream_description_summary()
            .unwrap()
            .retention_period_hours()
    };
    assert_eq!(retention(&client).await, 24);
    client
        .increase_stream_retention_period()
        .stream_name("ret")
        .retention_period_hours(72)
        .send()
        .await
        .unwrap();
    assert_eq!(retention(&client).await, 72);
    // Increase to less than the current period.
    let err = service_error(
        client
            .increase_stream_retention_period()
            .stream_name("ret")
            .retention_period_hours(48)
            .send()
            .await,
    );
    assert!(err.is_invalid_argument_exception(), "{err:?}");
    // Beyond the maximum (8760 hours).
    let err = service_error(
        client
            .increase_stream_retention_period()
            .stream_name("ret")
            .retention_period_hours(9000)
            .send()
            .await,
    );
    assert!(err.is_invalid_argument_exception(), "{err:?}");
    client
        .decrease_stream_retention_period()
        .stream_name("ret")
        .retention_period_hours(36)
        .send()
        .await
        .unwrap();
    assert_eq!(retention(&client).await, 36);
    // Decrease to more than the current period.
    let err = service_error(
        client
            .decrease_stream_retention_period()
            .stream_name("ret")
            .retention_period_hours(48)
            .send()
            .await,
    );
    assert!(err.is_invalid_argument_exception(), "{err:?}");
    // Below the minimum (24 hours).
    let err = service_error(
        client
            .decrease_stream_retention_period()
            .stream_name("ret")
            .retention_period_hours(12)
            .send()
            .await,
    );
    assert!(err.is_invalid_argument_exception(), "{err:?}");
    assert_eq!(retention(&client).await, 36);
    let err = service_error(
        client
            .increase_stream_retention_period()
            .stream_name("missing")
            .retention_period_hours(48)
            .send()
            .await,
    );
    assert!(err.is_resource_not_found_exception(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_on_streams_and_resources() {
    let (_server, client) = start(&[]).await;
    client
        .create_stream()
        .stream_name("tagged")
        .shard_count(1)
        .tags("team", "data")
        .send()
        .await
        .unwrap();
    wait_active(&client, "tagged").await;
    let tags = async |client: &Client| -> BTreeMap<String, Option<String>> {
        let out = client
            .list_tags_for_stream()
            .stream_name("tagged")
            .send()
            .await
            .unwrap();
        assert!(!out.has_more_tags());
        out.tags()
            .iter()
            .map(|t| (t.key().to_string(), t.value().map(str::to_string)))
            .collect()
    };
    let some = |v: &str| Some(v.to_string());
    assert_eq!(
        tags(&client).await,
        BTreeMap::from([("team".into(), some("data"))])
    );

    client
        .add_tags_to_stream()
        .stream_name("tagged")
        .tags("env", "test")
        .tags("owner", "me")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags(&client).await,
        BTreeMap::from([
            ("env".into(), some("test")),
            ("owner".into(), some("me")),
            ("team".into(), some("data")),
        ])
    );
    // Overwriting a value.
    client
        .add_tags_to_stream()
        .stream_name("tagged")
        .tags("env", "prod")
        .send()
        .await
        .unwrap();
    assert_eq!(tags(&client).await["env"], some("prod"));

    // Paging through tags.
    let first = client
        .list_tags_for_stream()
        .stream_name("tagged")
        .limit(2)
        .send()
        .await
        .unwrap();
    assert_eq!(first.tags().len(), 2);
    assert!(first.has_more_tags());
    let rest = client
        .list_tags_for_stream()
        .stream_name("tagged")
        .exclusive_start_tag_key(first.tags()[1].key())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.tags().len(), 1);
    assert!(!rest.has_more_tags());
    let mut keys: Vec<&str> = first
        .tags()
        .iter()
        .chain(rest.tags())
        .map(|t| t.key())
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["env", "owner", "team"]);

    client
        .remove_tags_from_stream()
        .stream_name("tagged")
        .tag_keys("owner")
        .send()
        .await
        .unwrap();
    assert!(!tags(&client).await.contains_key("owner"));

    // The resource API, by ARN.
    let arn = client
        .describe_stream_summary()
        .stream_name("tagged")
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_string();
    client
        .tag_resource()
        .resource_arn(&arn)
        .tags("cost-center", "42")
        .send()
        .await
        .unwrap();
    let by_arn = client
        .list_tags_for_resource()
        .resource_arn(&arn)
        .send()
        .await
        .unwrap();
    let by_arn: BTreeMap<&str, Option<&str>> =
        by_arn.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(
        by_arn,
        BTreeMap::from([
            ("cost-center", Some("42")),
            ("env", Some("prod")),
            ("team", Some("data")),
        ])
    );
    client
        .untag_resource()
        .resource_arn(&arn)
        .tag_keys("cost-center")
        .tag_keys("team")
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags(&client).await,
        BTreeMap::from([("env".into(), some("prod"))])
    );

    // Reserved prefix; unknown stream.
    let err = service_error(
        client
            .add_tags_to_stream()
            .stream_name("tagged")
            .tags("aws:reserved", "x")
            .send()
            .await,
    );
    assert!(err.is_invalid_argument_exception(), "{err:?}");
    let err = service_error(
        client
            .add_tags_to_stream()
            .stream_name("missing")
            .tags("a", "b")
            .send()
            .await,
    );
    assert!(err.is_resource_not_found_exception(), "{err:?}");
    let err = service_error(
        client
            .list_tags_for_resource()
            .resource_arn("arn:aws:kinesis:us-east-1:000000000000:stream/missing")
            .send()
            .await,
    );
    assert!(err.is_resource_not_found_exception(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors() {
    let (_server, client) = start(&[]).await;
    create_active(&client, "err", 2).await;

    // ResourceNotFoundException, operation by operation.
    let e = service_error(client.describe_stream().stream_name("nope").send().await);
    assert!(e.is_resource_not_found_exception(), "{e:?}");
    assert!(e.meta().message().is_some_and(|m| m.contains("nope")));
    assert_eq!(e.meta().code(), Some("ResourceNotFoundException"));
    let e = service_error(
        client
            .describe_stream_summary()
            .stream_name("nope")
            .send()
            .await,
    );
    assert!(e.is_resource_not_found_exception(), "{e:?}");
    let e = service_error(client.delete_stream().stream_name("nope").send().await);
    assert!(e.is_resource_not_found_exception(), "{e:?}");
    let e = service_error(client.list_shards().stream_name("nope").send().await);
    assert!(e.is_resource_not_found_exception(), "{e:?}");
    let e = service_error(
        client
            .put_record()
            .stream_name("nope")
            .partition_key("k")
            .data(Blob::new(b"x".to_vec()))
            .send()
            .await,
    );
    assert!(e.is_resource_not_found_exception(), "{e:?}");
    let e = service_error(
        client
            .put_records()
            .stream_name("nope")
            .records(entry("k", b"x".to_vec()))
            .send()
            .await,
    );
    assert!(e.is_resource_not_found_exception(), "{e:?}");
    let e = service_error(
        client
            .get_shard_iterator()
            .stream_name("nope")
            .shard_id("shardId-000000000000")
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await,
    );
    assert!(e.is_resource_not_found_exception(), "{e:?}");
    let e = service_error(
        client
            .get_shard_iterator()
            .stream_name("err")
            .shard_id("shardId-000000000007")
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await,
    );
    assert!(e.is_resource_not_found_exception(), "{e:?}");

    // ResourceInUseException.
    let e = service_error(
        client
            .create_stream()
            .stream_name("err")
            .shard_count(1)
            .send()
            .await,
    );
    assert!(e.is_resource_in_use_exception(), "{e:?}");

    // InvalidArgumentException.
    let e = service_error(
        client
            .get_records()
            .shard_iterator("AAAAAAAAAAFmb3JnZWQgaXRlcmF0b3Igbm90IG91cnM=")
            .send()
            .await,
    );
    assert!(e.is_invalid_argument_exception(), "{e:?}");
    let e = service_error(
        client
            .get_shard_iterator()
            .stream_name("err")
            .shard_id("shardId-000000000000")
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .send()
            .await,
    );
    assert!(e.is_invalid_argument_exception(), "{e:?}");
    let future = DateTime::from_secs(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + 3600,
    );
    let e = service_error(
        client
            .get_shard_iterator()
            .stream_name("err")
            .shard_id("shardId-000000000000")
            .shard_iterator_type(ShardIteratorType::AtTimestamp)
            .timestamp(future)
            .send()
            .await,
    );
    assert!(e.is_invalid_argument_exception(), "{e:?}");
    // A sequence number of shard 0 used on shard 1.
    let put = client
        .put_record()
        .stream_name("err")
        .partition_key("k")
        .explicit_hash_key("0")
        .data(Blob::new(b"x".to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(put.shard_id(), "shardId-000000000000");
    let e = service_error(
        client
            .get_shard_iterator()
            .stream_name("err")
            .shard_id("shardId-000000000001")
            .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
            .starting_sequence_number(put.sequence_number())
            .send()
            .await,
    );
    assert!(e.is_invalid_argument_exception(), "{e:?}");
    let e = service_error(
        client
            .get_shard_iterator()
            .stream_name("err")
            .shard_id("shardId-000000000000")
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number("12345")
            .send()
            .await,
    );
    assert!(e.is_invalid_argument_exception(), "{e:?}");
    // ExplicitHashKey of 2^128, one past the largest.
    let e = service_error(
        client
            .put_record()
            .stream_name("err")
            .partition_key("k")
            .explicit_hash_key("340282366920938463463374607431768211456")
            .data(Blob::new(b"x".to_vec()))
            .send()
            .await,
    );
    assert!(e.is_invalid_argument_exception(), "{e:?}");
    // Data over 1 MiB.
    let e = service_error(
        client
            .put_record()
            .stream_name("err")
            .partition_key("k")
            .data(Blob::new(vec![7u8; MIB + 1]))
            .send()
            .await,
    );
    assert!(
        e.is_invalid_argument_exception() || e.meta().code() == Some("ValidationException"),
        "{e:?}"
    );
    let e = service_error(
        client
            .decrease_stream_retention_period()
            .stream_name("err")
            .retention_period_hours(1)
            .send()
            .await,
    );
    assert!(e.is_invalid_argument_exception(), "{e:?}");

    // LimitExceededException: more than double the shards.
    let e = service_error(
        client
            .update_shard_count()
            .stream_name("err")
            .target_shard_count(5)
            .scaling_type(ScalingType::UniformScaling)
            .send()
            .await,
    );
    assert!(e.is_limit_exceeded_exception(), "{e:?}");

    // After all that the stream is untouched and works.
    let got = read_shard(&client, "err", "shardId-000000000000").await;
    assert_eq!(got.records.len(), 1);
    assert_eq!(got.records[0].sequence_number(), put.sequence_number());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_iterator() {
    let (_server, client) = start(&["--iterator-ttl-secs", "1"]).await;
    create_active(&client, "ttl", 1).await;
    client
        .put_record()
        .stream_name("ttl")
        .partition_key("k")
        .data(Blob::new(b"hello".to_vec()))
        .send()
        .await
        .unwrap();
    let shard = "shardId-000000000000";
    let it = iterator(
        &client,
        "ttl",
        shard,
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await;
    // Fresh: works, and hands out a new iterator.
    let out = client
        .get_records()
        .shard_iterator(&it)
        .send()
        .await
        .unwrap();
    assert_eq!(out.records().len(), 1);
    assert_eq!(out.records()[0].data().as_ref(), b"hello");
    // The TTL is one second: wait just past it.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let e = service_error(client.get_records().shard_iterator(&it).send().await);
    assert!(e.is_expired_iterator_exception(), "{e:?}");
    assert_eq!(e.meta().code(), Some("ExpiredIteratorException"));
    let e = service_error(
        client
            .get_records()
            .shard_iterator(out.next_shard_iterator().unwrap())
            .send()
            .await,
    );
    assert!(e.is_expired_iterator_exception(), "{e:?}");
    // A new iterator works again.
    let it = iterator(
        &client,
        "ttl",
        shard,
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await;
    let out = client
        .get_records()
        .shard_iterator(&it)
        .send()
        .await
        .unwrap();
    assert_eq!(out.records().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_and_reads_over_the_response_limit() {
    let (_server, client) = start(&[]).await;
    let mut rng = Rng::from_env("large_batches_and_reads_over_the_response_limit");
    create_active(&client, "big", 1).await;

    // PutRecords at the 5 MiB request limit: 5 records of 1 MiB (data plus key).
    let mut sent = Vec::new();
    for _ in 0..3 {
        let batch: Vec<Vec<u8>> = (0..5).map(|_| rng.bytes(MIB - 1)).collect();
        let out = client
            .put_records()
            .stream_name("big")
            .set_records(Some(batch.iter().map(|d| entry("k", d.clone())).collect()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
        sent.extend(batch);
    }
    // 500 small records in one call.
    let small: Vec<Vec<u8>> = (0..500).map(|_| rng.bytes(100)).collect();
    let out = client
        .put_records()
        .stream_name("big")
        .set_records(Some(small.iter().map(|d| entry("s", d.clone())).collect()))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
    assert_eq!(out.records().len(), 500);
    sent.extend(small);

    // 15 MiB cannot come back in one GetRecords answer (at most 10 MiB each).
    let mut it = iterator(
        &client,
        "big",
        "shardId-000000000000",
        ShardIteratorType::TrimHorizon,
        None,
        None,
    )
    .await;
    let mut got: Vec<Record> = Vec::new();
    let mut calls = 0;
    loop {
        let out = client
            .get_records()
            .shard_iterator(&it)
            .send()
            .await
            .unwrap();
        calls += 1;
        let bytes: usize = out.records().iter().map(|r| r.data().as_ref().len()).sum();
        assert!(bytes <= 10 * MIB, "one answer carried {bytes} bytes");
        let done = out.records().is_empty() && out.millis_behind_latest() == Some(0);
        got.extend(out.records().iter().cloned());
        if done {
            break;
        }
        it = out.next_shard_iterator().unwrap().to_string();
        assert!(calls < 20);
    }
    assert!(calls >= 3, "15 MiB read in {calls} calls");
    assert_eq!(got.len(), sent.len());
    assert_increasing(&got);
    for (r, d) in got.iter().zip(&sent) {
        assert!(r.data().as_ref() == d.as_slice(), "{}", r.sequence_number());
    }
}

/// With keys configured, the SDK's SigV4 signatures are checked: the configured key
/// works end to end; a wrong secret and an unknown key get AWS's errors and change
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_with_configured_keys() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        "[[auth.keys]]\naccess_key_id = \"AKIASDKRUST000000001\"\n\
         secret_access_key = \"sdk-rust-secret-0123456789\"\n",
    )
    .unwrap();
    let (server, _) = start(&["--auth-keys-file", keys.to_str().unwrap()]).await;
    let good = client_with(
        &server,
        "AKIASDKRUST000000001",
        "sdk-rust-secret-0123456789",
    );
    create_active(&good, "signed-sdk", 1).await;
    let put = good
        .put_record()
        .stream_name("signed-sdk")
        .partition_key("p")
        .data(Blob::new(b"signed".to_vec()))
        .send()
        .await
        .unwrap();
    let read = read_shard(&good, "signed-sdk", put.shard_id()).await;
    assert_eq!(read.records.len(), 1);
    assert_eq!(read.records[0].data().as_ref(), b"signed");

    let wrong = client_with(&server, "AKIASDKRUST000000001", "not-the-secret");
    let e = service_error(wrong.list_streams().send().await);
    assert_eq!(e.meta().code(), Some("InvalidSignatureException"), "{e:?}");
    let unknown = client_with(&server, "AKIAUNKNOWN000000000", "x");
    let e = service_error(
        unknown
            .delete_stream()
            .stream_name("signed-sdk")
            .send()
            .await,
    );
    assert_eq!(
        e.meta().code(),
        Some("UnrecognizedClientException"),
        "{e:?}"
    );
    let names = good.list_streams().send().await.unwrap();
    assert_eq!(names.stream_names(), ["signed-sdk"]);
}

/// The next SubscribeToShardEvent of an enhanced fan-out subscription.
async fn next_shard_event(
    events: &mut aws_sdk_kinesis::primitives::event_stream::EventReceiver<
        aws_sdk_kinesis::types::SubscribeToShardEventStream,
        aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
    >,
) -> aws_sdk_kinesis::types::SubscribeToShardEvent {
    use aws_sdk_kinesis::types::SubscribeToShardEventStream as S;
    match tokio::time::timeout(Duration::from_secs(20), events.recv()).await {
        Ok(Ok(Some(S::SubscribeToShardEvent(e)))) => e,
        other => panic!("expected a SubscribeToShardEvent, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_to_shard_enhanced_fan_out() {
    use aws_sdk_kinesis::types::{
        ConsumerStatus, StartingPosition, error::SubscribeToShardEventStreamError,
    };
    let (_server, client) = start(&[]).await;
    create_active(&client, "efo", 1).await;
    let stream_arn = client
        .describe_stream_summary()
        .stream_name("efo")
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap()
        .stream_arn;
    let consumer = client
        .register_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name("app")
        .send()
        .await
        .unwrap()
        .consumer
        .unwrap();
    let arn = consumer.consumer_arn;
    let described = client
        .describe_stream_consumer()
        .consumer_arn(&arn)
        .send()
        .await
        .unwrap()
        .consumer_description
        .unwrap();
    assert_eq!(described.consumer_status, ConsumerStatus::Active);

    let mut rng = Rng::new(7);
    let expected: Vec<Vec<u8>> = [1usize, 300, 70_000]
        .iter()
        .map(|n| rng.bytes(*n))
        .collect();
    let mut seqs = Vec::new();
    for p in &expected {
        let out = client
            .put_record()
            .stream_name("efo")
            .partition_key("k")
            .data(Blob::new(p.clone()))
            .send()
            .await
            .unwrap();
        seqs.push(out.sequence_number);
    }
    let subscribe = |kind: ShardIteratorType, seq: Option<String>| {
        client
            .subscribe_to_shard()
            .consumer_arn(&arn)
            .shard_id("shardId-000000000000")
            .starting_position(
                StartingPosition::builder()
                    .r#type(kind)
                    .set_sequence_number(seq)
                    .build()
                    .unwrap(),
            )
            .send()
    };
    let mut out = subscribe(ShardIteratorType::TrimHorizon, None)
        .await
        .unwrap();
    let mut records = Vec::new();
    let mut continuation = None;
    while records.len() < expected.len() {
        let e = next_shard_event(&mut out.event_stream).await;
        records.extend(e.records);
        continuation = Some(e.continuation_sequence_number);
    }
    let data: Vec<&[u8]> = records.iter().map(|r| r.data.as_ref()).collect();
    assert_eq!(
        data,
        expected.iter().map(|p| p.as_slice()).collect::<Vec<_>>()
    );
    assert_eq!(
        records
            .iter()
            .map(|r| r.sequence_number.clone())
            .collect::<Vec<_>>(),
        seqs
    );
    assert_eq!(continuation.as_deref(), seqs.last().map(|s| s.as_str()));

    // One subscription per consumer and shard.
    let err = service_error(subscribe(ShardIteratorType::Latest, None).await);
    assert!(err.is_resource_in_use_exception(), "{err:?}");

    // Deregistering ends the open subscription with ResourceNotFoundException.
    client
        .deregister_stream_consumer()
        .consumer_arn(&arn)
        .send()
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match out.event_stream.recv().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("subscription did not end");
    match end {
        Err(SdkError::ServiceError(e)) => assert!(
            matches!(
                e.err(),
                SubscribeToShardEventStreamError::ResourceNotFoundException(_)
            ),
            "{e:?}"
        ),
        other => panic!("expected ResourceNotFoundException, got {other:?}"),
    }
}
