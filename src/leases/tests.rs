//! The lease store against a real catalog: conditional writes under contention,
//! tables that survive a reopen, transactions that cancel as a whole.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::store::catalog::RedbCatalog;

fn service(dir: &std::path::Path) -> Arc<LeaseService> {
    let catalog = Arc::new(RedbCatalog::open(&dir.join("catalog.redb")).unwrap());
    LeaseService::new(
        LeaseConfig {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            state_delay_ms: 0,
        },
        catalog,
    )
}

fn create(s: &LeaseService) {
    s.call(
        "CreateTable",
        &json!({
            "TableName": "leases",
            "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        }),
    )
    .unwrap();
}

fn renew(s: &LeaseService, counter: &str) -> Result<Value> {
    s.call(
        "UpdateItem",
        &json!({
            "TableName": "leases",
            "Key": {"leaseKey": {"S": "shard-0"}},
            "UpdateExpression": "SET leaseCounter = leaseCounter + :one",
            "ConditionExpression": "leaseCounter = :c",
            "ExpressionAttributeValues": {":one": {"N": "1"}, ":c": {"N": counter}},
            "ReturnValues": "UPDATED_NEW",
        }),
    )
}

#[test]
fn conditional_renewals_are_atomic_under_contention() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path());
    create(&s);
    s.call(
        "PutItem",
        &json!({"TableName": "leases", "Item": {"leaseKey": {"S": "shard-0"}, "leaseCounter": {"N": "0"}}}),
    )
    .unwrap();
    let wins = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            let wins = wins.clone();
            std::thread::spawn(move || {
                for c in 0..50 {
                    if renew(&s, &c.to_string()).is_ok() {
                        wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Each counter value can be renewed from exactly once.
    assert_eq!(wins.load(std::sync::atomic::Ordering::SeqCst), 50);
    let got = s
        .call(
            "GetItem",
            &json!({"TableName": "leases", "Key": {"leaseKey": {"S": "shard-0"}}}),
        )
        .unwrap();
    assert_eq!(got["Item"]["leaseCounter"], json!({"N": "50"}));
    assert!(matches!(
        renew(&s, "3"),
        Err(LeaseError::ConditionalCheckFailed)
    ));
}

#[test]
fn tables_and_items_survive_reopen_and_transactions_cancel_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = service(dir.path());
        create(&s);
        s.call(
            "PutItem",
            &json!({"TableName": "leases", "Item": {"leaseKey": {"S": "a"}}}),
        )
        .unwrap();
    }
    let s = service(dir.path());
    let e = s
        .call(
            "TransactWriteItems",
            &json!({"TransactItems": [
                {"Put": {"TableName": "leases", "Item": {"leaseKey": {"S": "b"}}}},
                {"ConditionCheck": {"TableName": "leases", "Key": {"leaseKey": {"S": "a"}},
                    "ConditionExpression": "attribute_not_exists(leaseKey)"}},
            ]}),
        )
        .unwrap_err();
    match e {
        LeaseError::TransactionCanceled(r) => {
            assert_eq!(r, vec![None, Some("ConditionalCheckFailed".to_string())])
        }
        other => panic!("{other:?}"),
    }
    let scan = s.call("Scan", &json!({"TableName": "leases"})).unwrap();
    assert_eq!(
        scan["Count"], 1,
        "the Put of the cancelled transaction is not there"
    );
    let d = s
        .call("DescribeTable", &json!({"TableName": "leases"}))
        .unwrap();
    assert_eq!(d["Table"]["TableStatus"], "ACTIVE");
    assert_eq!(d["Table"]["ItemCount"], 1);
}

/// TransactGetItems reads its items as of one moment: while writers move units between
/// two items with TransactWriteItems (the total stays 100), every transactional read
/// of both sees a total of 100.
#[test]
fn transactional_reads_see_whole_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path());
    create(&s);
    for (key, n) in [("a", "100"), ("b", "0")] {
        s.call(
            "PutItem",
            &json!({"TableName": "leases", "Item": {"leaseKey": {"S": key}, "n": {"N": n}}}),
        )
        .unwrap();
    }
    let moves = 300;
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            for i in 0..moves {
                let (from, to) = if i % 3 == 2 { ("b", "a") } else { ("a", "b") };
                let step = |key: &str, op: &str| {
                    json!({"Update": {"TableName": "leases", "Key": {"leaseKey": {"S": key}},
                        "UpdateExpression": format!("SET n = n {op} :one"),
                        "ExpressionAttributeValues": {":one": {"N": "1"}}}})
                };
                s.call(
                    "TransactWriteItems",
                    &json!({"TransactItems": [step(from, "-"), step(to, "+")]}),
                )
                .unwrap();
            }
        })
    };
    let get = |key: &str| json!({"Get": {"TableName": "leases", "Key": {"leaseKey": {"S": key}}}});
    let mut reads = 0;
    let mut totals = std::collections::BTreeSet::new();
    while !writer.is_finished() || reads == 0 {
        let r = s
            .call(
                "TransactGetItems",
                &json!({"TransactItems": [get("a"), get("b")]}),
            )
            .unwrap();
        let n = |i: usize| {
            r["Responses"][i]["Item"]["n"]["N"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .unwrap()
        };
        totals.insert(n(0) + n(1));
        reads += 1;
    }
    writer.join().unwrap();
    assert_eq!(
        totals.into_iter().collect::<Vec<_>>(),
        [100],
        "after {reads} reads"
    );
    let r = s
        .call(
            "TransactGetItems",
            &json!({"TransactItems": [get("a"), get("b")]}),
        )
        .unwrap();
    assert_eq!(r["Responses"][0]["Item"]["n"]["N"], "0");
    assert_eq!(r["Responses"][1]["Item"]["n"]["N"], "100");
}
