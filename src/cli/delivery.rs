//! `freshet delivery list|describe|put|tail`: delivery streams (the Firehose API,
//! `Firehose_20150804.<Op>`) for people, over the same JSON 1.1 API every other client
//! uses. `describe` shows where a stream delivers, how it buffers and its delivery
//! status (`FailureDescription`: the last delivery error, if any).

use std::io::BufRead;

use anyhow::bail;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::client::KinesisClient;

/// PutRecordBatch's limits: 500 records and 4 MiB a call.
const BATCH_RECORDS: usize = 500;
const BATCH_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, clap::Subcommand)]
pub enum DeliveryCommand {
    /// List delivery streams with their status, source and destination
    List,
    /// Show a delivery stream: source, destinations, buffering, compression, and its
    /// delivery status (the last error, if any)
    Describe {
        name: String,
        /// Print DescribeDeliveryStream's answer as JSON instead
        #[arg(long)]
        json: bool,
    },
    /// Put records into a DirectPut delivery stream: each argument, or each line of
    /// standard input when there are none, is one record
    Put {
        name: String,
        /// Records (none: read lines from standard input)
        records: Vec<String>,
        /// Send each record as given; by default a newline is appended, so that the
        /// delivered objects hold one record a line
        #[arg(long)]
        no_newline: bool,
    },
    /// Follow a delivery stream: a line whenever its figures change (records in and
    /// delivered, backlog, oldest undelivered record, failures, the last error), until
    /// Ctrl-C or the stream is deleted
    Tail {
        name: String,
        /// How often to look, in milliseconds
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        /// Stop after this many lines
        #[arg(long)]
        count: Option<u64>,
        /// One JSON object a line instead of text
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &KinesisClient, cmd: DeliveryCommand) -> anyhow::Result<()> {
    match cmd {
        DeliveryCommand::List => list(client).await,
        DeliveryCommand::Tail {
            name,
            interval_ms,
            count,
            json,
        } => {
            super::delivery_tail::run(
                client,
                &name,
                std::time::Duration::from_millis(interval_ms.max(50)),
                count,
                json,
            )
            .await
        }
        DeliveryCommand::Describe { name, json } => {
            let d = client
                .call_firehose(
                    "DescribeDeliveryStream",
                    json!({"DeliveryStreamName": name}),
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{}", describe_text(&d["DeliveryStreamDescription"]));
            }
            Ok(())
        }
        DeliveryCommand::Put {
            name,
            records,
            no_newline,
        } => {
            let lines: Vec<String> = if records.is_empty() {
                std::io::stdin().lock().lines().collect::<Result<_, _>>()?
            } else {
                records
            };
            let data: Vec<Vec<u8>> = lines
                .into_iter()
                .map(|l| {
                    let mut b = l.into_bytes();
                    if !no_newline {
                        b.push(b'\n');
                    }
                    b
                })
                .collect();
            put(client, &name, &data).await
        }
    }
}

async fn list(client: &KinesisClient) -> anyhow::Result<()> {
    let mut start: Option<String> = None;
    let mut names = Vec::new();
    loop {
        let mut input = json!({"Limit": 10000});
        if let Some(s) = &start {
            input["ExclusiveStartDeliveryStreamName"] = json!(s);
        }
        let out = client.call_firehose("ListDeliveryStreams", input).await?;
        let page: Vec<String> = out["DeliveryStreamNames"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let more = out["HasMoreDeliveryStreams"] == true && !page.is_empty();
        start = page.last().cloned();
        names.extend(page);
        if !more {
            break;
        }
    }
    for name in names {
        let d = client
            .call_firehose(
                "DescribeDeliveryStream",
                json!({"DeliveryStreamName": name}),
            )
            .await?;
        let d = &d["DeliveryStreamDescription"];
        println!(
            "{:<40} {:<10} {:<24} {}",
            name,
            d["DeliveryStreamStatus"].as_str().unwrap_or(""),
            d["DeliveryStreamType"].as_str().unwrap_or(""),
            destination_summary(d)
        );
    }
    Ok(())
}

/// One line naming where a delivery stream delivers.
fn destination_summary(d: &Value) -> String {
    let Some(dest) = d["Destinations"].as_array().and_then(|a| a.first()) else {
        return String::new();
    };
    if let Some(s3) = s3_description(dest) {
        let bucket = s3["BucketARN"].as_str().unwrap_or("");
        let bucket = bucket.strip_prefix("arn:aws:s3:::").unwrap_or(bucket);
        return format!("s3://{bucket}/{}", s3["Prefix"].as_str().unwrap_or(""));
    }
    if let Some(url) =
        dest["HttpEndpointDestinationDescription"]["EndpointConfiguration"]["Url"].as_str()
    {
        return url.to_string();
    }
    String::new()
}

fn s3_description(dest: &Value) -> Option<&Value> {
    [
        "ExtendedS3DestinationDescription",
        "S3DestinationDescription",
    ]
    .into_iter()
    .map(|k| &dest[k])
    .find(|v| v.is_object())
}

/// The human form of a `DeliveryStreamDescription`.
fn describe_text(d: &Value) -> String {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        if !v.is_empty() {
            out.push_str(&format!("{k:<15}{v}\n"));
        }
    };
    line("name:", s(&d["DeliveryStreamName"]));
    line("arn:", s(&d["DeliveryStreamARN"]));
    line("status:", s(&d["DeliveryStreamStatus"]));
    line("type:", s(&d["DeliveryStreamType"]));
    line("version:", s(&d["VersionId"]));
    if let Some(arn) = d["Source"]["KinesisStreamSourceDescription"]["KinesisStreamARN"].as_str() {
        line("source:", arn.to_string());
    }
    let failure = &d["FailureDescription"];
    line(
        "last error:",
        if failure.is_object() {
            format!("{}: {}", s(&failure["Type"]), s(&failure["Details"]))
        } else {
            "none".to_string()
        },
    );
    for dest in d["Destinations"].as_array().cloned().unwrap_or_default() {
        line("destination:", s(&dest["DestinationId"]));
        let (kind, body) = if let Some(s3) = s3_description(&dest) {
            ("s3", s3.clone())
        } else if dest["HttpEndpointDestinationDescription"].is_object() {
            ("http", dest["HttpEndpointDestinationDescription"].clone())
        } else {
            continue;
        };
        line(
            "  delivers to:",
            destination_summary(&json!({"Destinations": [dest]})),
        );
        if kind == "s3" {
            line("  errors to:", s(&body["ErrorOutputPrefix"]));
            line("  compression:", s(&body["CompressionFormat"]));
        } else {
            line("  name:", s(&body["EndpointConfiguration"]["Name"]));
            line(
                "  encoding:",
                s(&body["RequestConfiguration"]["ContentEncoding"]),
            );
            if let Some(secs) = body["RetryOptions"]["DurationInSeconds"].as_u64() {
                line("  retries:", format!("for {secs} s"));
            }
        }
        let hints = &body["BufferingHints"];
        if hints.is_object() {
            line(
                "  buffering:",
                format!(
                    "{} MiB or {} s, whichever comes first",
                    hints["SizeInMBs"], hints["IntervalInSeconds"]
                ),
            );
        }
    }
    out
}

/// PutRecordBatch in calls of at most [`BATCH_RECORDS`] records and [`BATCH_BYTES`].
async fn put(client: &KinesisClient, name: &str, records: &[Vec<u8>]) -> anyhow::Result<()> {
    let mut sent = 0usize;
    let mut failed = 0usize;
    let mut i = 0;
    while i < records.len() {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while i < records.len()
            && batch.len() < BATCH_RECORDS
            && (batch.is_empty() || bytes + records[i].len() <= BATCH_BYTES)
        {
            bytes += records[i].len();
            batch.push(json!({"Data": STANDARD.encode(&records[i])}));
            i += 1;
        }
        let n = batch.len();
        let out = client
            .call_firehose(
                "PutRecordBatch",
                json!({"DeliveryStreamName": name, "Records": batch}),
            )
            .await?;
        let batch_failed = out["FailedPutCount"].as_u64().unwrap_or(0) as usize;
        if batch_failed > 0
            && let Some(first) = out["RequestResponses"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["ErrorCode"].is_string()))
        {
            eprintln!(
                "{} of {n} records refused: {}: {}",
                batch_failed,
                first["ErrorCode"].as_str().unwrap_or(""),
                first["ErrorMessage"].as_str().unwrap_or("")
            );
        }
        failed += batch_failed;
        sent += n - batch_failed;
    }
    println!("put {sent} records into {name}");
    if failed > 0 {
        bail!("{failed} records were refused");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_destination_buffering_and_the_last_error() {
        let d = json!({
            "DeliveryStreamName": "logs", "DeliveryStreamStatus": "ACTIVE",
            "DeliveryStreamType": "DirectPut", "VersionId": "1",
            "FailureDescription": {"Type": "S3_FAILURE", "Details": "access denied"},
            "Destinations": [{"DestinationId": "destinationId-000000000001",
                "ExtendedS3DestinationDescription": {"BucketARN": "arn:aws:s3:::b",
                    "Prefix": "p/", "CompressionFormat": "GZIP",
                    "BufferingHints": {"SizeInMBs": 5, "IntervalInSeconds": 60}}}]});
        let text = describe_text(&d);
        for want in [
            "name:          logs\n",
            "last error:    S3_FAILURE: access denied\n",
            "  delivers to: s3://b/p/\n",
            "  compression: GZIP\n",
            "  buffering:   5 MiB or 60 s, whichever comes first\n",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert_eq!(
            destination_summary(
                &json!({"Destinations": [{"HttpEndpointDestinationDescription":
                {"EndpointConfiguration": {"Url": "https://x/y"}}}]})
            ),
            "https://x/y"
        );
    }
}
