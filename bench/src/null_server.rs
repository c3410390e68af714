//! A do-nothing Kinesis endpoint for measuring the load generator itself.
//!
//! It answers every operation the benchmark uses with a canned, successful
//! response (streams are instantly ACTIVE, PutRecords reports 500 accepted
//! records, GetRecords is always empty) without storing anything. Running
//! `kinesis --skip-get --skip-visibility` against it shows the ceiling of the
//! client on this machine, i.e. whether the client could be the bottleneck.

use crate::http::find;
use std::fmt::Write as _;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Canned {
    put_records: Vec<u8>,
}

pub async fn serve(listen: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("null server listening on {}", listener.local_addr()?);
    let mut put_records = String::from("{\"FailedRecordCount\":0,\"Records\":[");
    for i in 0..500 {
        if i > 0 {
            put_records.push(',');
        }
        let _ = write!(
            put_records,
            "{{\"SequenceNumber\":\"4959{i:052}\",\"ShardId\":\"shardId-000000000000\"}}"
        );
    }
    put_records.push_str("]}");
    let canned = Arc::new(Canned {
        put_records: put_records.into_bytes(),
    });
    loop {
        let (sock, _) = listener.accept().await?;
        let canned = canned.clone();
        tokio::spawn(async move {
            let _ = handle(sock, &canned).await;
        });
    }
}

async fn handle(mut sock: TcpStream, canned: &Canned) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let header = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let len: usize = header("content-length:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let target = header("x-amz-target:").unwrap_or_default();
        while buf.len() < head_end + len {
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
        buf.drain(..head_end + len);
        let op = target.rsplit('.').next().unwrap_or("");
        let body: &[u8] = match op {
            "putrecords" => &canned.put_records,
            "putrecord" => {
                br#"{"SequenceNumber":"49590000000000000000000000000000000000000000000000000000","ShardId":"shardId-000000000000"}"#
            }
            "describestreamsummary" => {
                br#"{"StreamDescriptionSummary":{"StreamStatus":"ACTIVE","OpenShardCount":1}}"#
            }
            "listshards" => br#"{"Shards":[{"ShardId":"shardId-000000000000"}]}"#,
            "getsharditerator" => br#"{"ShardIterator":"null-iterator"}"#,
            "getrecords" => {
                br#"{"Records":[],"NextShardIterator":"null-iterator","MillisBehindLatest":0}"#
            }
            _ => b"{}",
        };
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        sock.write_all(head.as_bytes()).await?;
        sock.write_all(body).await?;
    }
}
