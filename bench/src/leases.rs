//! Lease-store benchmark: conditional UpdateItem (KCL's lease renewal) against a running
//! server, N clients at once, each renewing its own lease (`SET leaseCounter =
//! leaseCounter + 1` on `leaseOwner = :me AND leaseCounter = :c`) on a keep-alive
//! connection. Prints operations/s and p50/p99 latency per client count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::Conn;
use crate::kinesis::{Endpoint, api_error};
use crate::sigv4::amz_date_now;
use crate::stats::Latencies;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// One client's result.
pub struct LeaseReport {
    pub ops: u64,
    pub latencies: Latencies,
}

fn request(ep: &Endpoint, op: &str, body: &Value) -> Vec<u8> {
    let body = serde_json::to_vec(body).unwrap_or_default();
    let target = format!("DynamoDB_20120810.{op}");
    let date = amz_date_now();
    let auth = ep
        .signer
        .authorization(&ep.host, CONTENT_TYPE, &date, &target, &body);
    let mut req = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: {CONTENT_TYPE}\r\nX-Amz-Target: {target}\r\n\
         X-Amz-Date: {date}\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\
         Connection: keep-alive\r\n\r\n",
        ep.host,
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req
}

async fn call(
    ep: &Endpoint,
    conn: &mut Option<Conn>,
    op: &str,
    body: &Value,
) -> Result<Value, BoxError> {
    let resp = ep.send(conn, &request(ep, op, body)).await?;
    if resp.status != 200 {
        return Err(Box::new(api_error(&resp)));
    }
    Ok(serde_json::from_slice(&resp.body)?)
}

/// Creates the table (if needed) and one lease per client, then renews for `duration`.
pub async fn run(
    ep: Arc<Endpoint>,
    clients: usize,
    duration: Duration,
) -> Result<(u64, Latencies), BoxError> {
    let table = format!("freshet-bench-leases-{}", std::process::id());
    let mut conn = None;
    let _ = call(
        &ep,
        &mut conn,
        "CreateTable",
        &json!({
            "TableName": table,
            "KeySchema": [{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "leaseKey", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = call(
            &ep,
            &mut conn,
            "DescribeTable",
            &json!({"TableName": table}),
        )
        .await?;
        if d["Table"]["TableStatus"] == "ACTIVE" {
            break;
        }
        if Instant::now() > deadline {
            return Err("lease table not ACTIVE within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tasks = Vec::new();
    for c in 0..clients {
        let ep = ep.clone();
        let table = table.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            let me = format!("worker-{c}");
            let key = json!({"leaseKey": {"S": format!("shardId-{c:012}")}});
            call(
                &ep,
                &mut conn,
                "PutItem",
                &json!({"TableName": table, "Item": {
                "leaseKey": key["leaseKey"], "leaseOwner": {"S": me}, "leaseCounter": {"N": "0"}}}),
            )
            .await?;
            let mut counter: u64 = 0;
            let mut lat = Latencies::default();
            let end = Instant::now() + duration;
            while Instant::now() < end {
                let body = json!({
                    "TableName": table, "Key": key,
                    "UpdateExpression": "SET leaseCounter = leaseCounter + :one",
                    "ConditionExpression": "leaseOwner = :me AND leaseCounter = :c",
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":me": {"S": me},
                                                  ":c": {"N": counter.to_string()}},
                });
                let t = Instant::now();
                call(&ep, &mut conn, "UpdateItem", &body).await?;
                lat.record(t.elapsed());
                counter += 1;
            }
            Ok::<LeaseReport, BoxError>(LeaseReport {
                ops: counter,
                latencies: lat,
            })
        }));
    }
    let mut ops = 0;
    let mut all = Latencies::default();
    for t in tasks {
        let r = t
            .await
            .map_err(|e| -> BoxError { e.to_string().into() })??;
        ops += r.ops;
        all.merge(r.latencies);
    }
    let _ = call(&ep, &mut conn, "DeleteTable", &json!({"TableName": table})).await;
    Ok((ops, all))
}
