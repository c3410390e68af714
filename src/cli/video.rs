//! `freshet video push|get|fragments`: a PutMedia client that prints the
//! acknowledgements, a GetMedia client that writes MKV to standard output, and a
//! fragment lister. They speak the Kinesis Video HTTP APIs like any other client.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::media::mkv::{Limits, MkvEvent, MkvReader};

#[derive(Debug, clap::Subcommand)]
pub enum VideoCommand {
    /// Upload an MKV file with PutMedia (one fragment per Cluster), printing the acks
    Push {
        /// MKV file whose Clusters each start with a key frame, or `-` to stream
        /// standard input (e.g. from `gst-launch-1.0 ... ! matroskamux streamable=true ! fdsink`)
        file: PathBuf,
        /// Video stream to write to (created if missing)
        #[arg(long)]
        stream: String,
        /// Send fragments at the pace of their timecodes, like a live camera
        #[arg(long)]
        realtime: bool,
        /// Treat Cluster timecodes as relative to this start time (epoch seconds)
        /// instead of absolute producer timestamps
        #[arg(long)]
        relative_start: Option<f64>,
    },
    /// Write a stream's media (GetMedia) to standard output as MKV
    Get {
        #[arg(long)]
        stream: String,
        /// EARLIEST, NOW, a fragment number, or an epoch-seconds server timestamp
        #[arg(long, default_value = "EARLIEST")]
        start: String,
        /// Stop after this many seconds (GetMedia otherwise follows the live edge)
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// List a stream's stored fragments
    Fragments {
        #[arg(long)]
        stream: String,
    },
    /// Camera feeds: pull a camera's RTSP URL, or receive RTP on a UDP port, into a
    /// video stream (kept across restarts)
    #[command(subcommand)]
    Ingest(IngestCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum IngestCommand {
    /// Add (or replace) the feed of a video stream
    #[command(group(clap::ArgGroup::new("source").required(true).args(["rtsp_url", "rtp_port"])))]
    Add {
        /// Video stream to record into (created if missing, unless the server forbids it)
        #[arg(long)]
        stream: String,
        /// Camera URL to pull, `rtsp://user:pass@host:port/path` (the password is never
        /// shown again)
        #[arg(long)]
        rtsp_url: Option<String>,
        /// UDP port a sender pushes RTP to (RTCP on the next port)
        #[arg(long)]
        rtp_port: Option<u16>,
        /// SDP file describing the RTP feed (as `ffmpeg -sdp_file` writes it)
        #[arg(long, requires = "rtp_port")]
        sdp: Option<PathBuf>,
        /// Codec of an RTP feed without SDP: H264 or H265
        #[arg(long, requires = "rtp_port", conflicts_with = "sdp")]
        codec: Option<String>,
        /// RTP payload type of an RTP feed without SDP [default: 96]
        #[arg(long, requires = "codec")]
        payload_type: Option<u8>,
        /// Target fragment length in ms; fragments end at the next key frame [default: 2000]
        #[arg(long)]
        fragment_ms: Option<u32>,
    },
    /// List the configured feeds and their state
    List,
    /// Show one feed: state, last error, packets, losses, fragments stored
    Status {
        #[arg(long)]
        stream: String,
    },
    /// Stop and remove the feed of a video stream (its stored video stays)
    Remove {
        #[arg(long)]
        stream: String,
    },
}

fn host_port(endpoint: &str) -> anyhow::Result<String> {
    let rest = endpoint
        .strip_prefix("http://")
        .context("the endpoint must be an http:// URL")?;
    Ok(rest.trim_end_matches('/').to_string())
}

async fn control(endpoint: &str, op: &str, body: Value) -> anyhow::Result<(u16, Value)> {
    let url = format!("{}/{op}", endpoint.trim_end_matches('/'));
    let body = serde_json::to_vec(&body)?;
    let headers = [("content-type", "application/json")];
    let req = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone());
    let resp = super::sign::sign_reqwest(req, "POST", &url, "kinesisvideo", &headers, &body)?
        .send()
        .await
        .with_context(|| {
            format!("cannot reach Freshet at {endpoint} (is `freshet serve` running?)")
        })?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(Value::Null)))
}

pub async fn run(endpoint: &str, cmd: VideoCommand) -> anyhow::Result<()> {
    match cmd {
        VideoCommand::Push {
            file,
            stream,
            realtime,
            relative_start,
        } => push(endpoint, &file, &stream, realtime, relative_start).await,
        VideoCommand::Get {
            stream,
            start,
            seconds,
        } => get(endpoint, &stream, &start, seconds).await,
        VideoCommand::Ingest(cmd) => ingest(endpoint, cmd).await,
        VideoCommand::Fragments { stream } => {
            let mut token: Option<String> = None;
            loop {
                let mut body = json!({ "StreamName": stream });
                if let Some(t) = &token {
                    body["NextToken"] = json!(t);
                }
                let (status, out) = control(endpoint, "listFragments", body).await?;
                if status != 200 {
                    bail!(
                        "{}",
                        out["Message"].as_str().unwrap_or("listFragments failed")
                    );
                }
                for f in out["Fragments"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{} producer {:.3} server {:.3} {} ms {} bytes",
                        f["FragmentNumber"].as_str().unwrap_or(""),
                        f["ProducerTimestamp"].as_f64().unwrap_or(0.0),
                        f["ServerTimestamp"].as_f64().unwrap_or(0.0),
                        f["FragmentLengthInMilliseconds"],
                        f["FragmentSizeInBytes"]
                    );
                }
                match out["NextToken"].as_str() {
                    Some(t) => token = Some(t.to_string()),
                    None => return Ok(()),
                }
            }
        }
    }
}

async fn push(
    endpoint: &str,
    file: &PathBuf,
    stream: &str,
    realtime: bool,
    relative_start: Option<f64>,
) -> anyhow::Result<()> {
    let (mut source, total): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Option<u64>) =
        if file.as_os_str() == "-" {
            (Box::new(tokio::io::stdin()), None)
        } else {
            let f = tokio::fs::File::open(file)
                .await
                .with_context(|| format!("cannot read {}", file.display()))?;
            let len = f.metadata().await?.len();
            (Box::new(f), Some(len))
        };
    // Like the producer SDK: create the stream if it does not exist.
    let (status, _) = control(endpoint, "describeStream", json!({ "StreamName": stream })).await?;
    if status == 404 {
        let (status, out) = control(
            endpoint,
            "createStream",
            json!({ "StreamName": stream, "DataRetentionInHours": 24 }),
        )
        .await?;
        if status != 200 {
            bail!(
                "cannot create stream {stream}: {}",
                out["Message"].as_str().unwrap_or("")
            );
        }
        eprintln!("created video stream {stream}");
    }
    // Wait until the stream is ACTIVE, as the producer SDK does.
    for _ in 0..300 {
        let (_, out) = control(endpoint, "describeStream", json!({ "StreamName": stream })).await?;
        if out["StreamInfo"]["Status"] == "ACTIVE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let addr = host_port(endpoint)?;
    let mut sock = TcpStream::connect(&addr)
        .await
        .with_context(|| format!("cannot reach Freshet at {endpoint}"))?;
    let (kind, start) = match relative_start {
        Some(s) => ("RELATIVE", s),
        None => ("ABSOLUTE", 0.0),
    };
    let start_text = format!("{start:.3}");
    let mut head = format!(
        "POST /putMedia HTTP/1.1\r\nHost: {addr}\r\nx-amzn-stream-name: {stream}\r\n\
         x-amzn-fragment-timecode-type: {kind}\r\nx-amzn-producer-start-timestamp: {start_text}\r\n\
         x-amzn-fragment-acknowledgment-required: 1\r\nTransfer-Encoding: chunked\r\n"
    );
    // Signed over the headers, the body as empty: as the producer SDKs sign PutMedia.
    let url = format!("http://{addr}/putMedia");
    let signed = super::sign::signed_headers(
        "POST",
        &url,
        "kinesisvideo",
        &[
            ("x-amzn-stream-name", stream),
            ("x-amzn-fragment-timecode-type", kind),
            ("x-amzn-producer-start-timestamp", &start_text),
            ("x-amzn-fragment-acknowledgment-required", "1"),
        ],
        None,
    )?;
    for (name, value) in &signed {
        head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("")));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await?;
    let (mut rd, mut wr) = sock.into_split();

    let bar = match total {
        Some(len) => {
            let b = indicatif::ProgressBar::new(len);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        }
        None => indicatif::ProgressBar::new_spinner(),
    };
    let sender_bar = bar.clone();
    let sender = tokio::spawn(async move {
        let mut reader = MkvReader::new(Limits::default());
        let mut events = Vec::new();
        let began = Instant::now();
        let mut first_tc: Option<u64> = None;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match source.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if realtime {
                // Hold each fragment back until its timecode is due.
                let _ = reader.feed(chunk, &mut events);
                for e in events.drain(..) {
                    if let MkvEvent::FragmentStart { cluster_timecode } = e {
                        let scale = reader.timecode_scale().max(1) as u128;
                        let t0 = *first_tc.get_or_insert(cluster_timecode);
                        let due_ms = (cluster_timecode.saturating_sub(t0) as u128 * scale
                            / 1_000_000) as u64;
                        let due = Duration::from_millis(due_ms);
                        if let Some(wait) = due.checked_sub(began.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
            }
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(chunk);
            frame.extend_from_slice(b"\r\n");
            if wr.write_all(&frame).await.is_err() {
                return wr;
            }
            sender_bar.inc(chunk.len() as u64);
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
        wr
    });

    // Print acks as they come; stop at the end of the response.
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut printed = 0usize;
    let (mut persisted, mut errors) = (0usize, 0usize);
    let mut seen_head = false;
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if !seen_head
            && let Some(status) = text
                .lines()
                .find(|l| l.starts_with("HTTP/1.1 ") && !l.contains(" 100 "))
        {
            seen_head = true;
            if !status.contains(" 200 ") {
                bar.finish_and_clear();
                let body = text.split("\r\n\r\n").last().unwrap_or("");
                bail!("PutMedia refused: {status} {body}");
            }
        }
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
        for line in &lines[printed..] {
            bar.suspend(|| println!("{line}"));
            if line.contains("\"PERSISTED\"") {
                persisted += 1;
            }
            if line.contains("\"ERROR\"") {
                errors += 1;
            }
        }
        printed = lines.len();
        bar.set_message(format!("{persisted} fragments persisted"));
        if text.ends_with("0\r\n\r\n") {
            break;
        }
    }
    bar.finish();
    sender.abort();
    eprintln!("{persisted} fragments persisted to {stream}");
    if errors > 0 {
        bail!("the upload ended with an error");
    }
    Ok(())
}

async fn get(
    endpoint: &str,
    stream: &str,
    start: &str,
    seconds: Option<u64>,
) -> anyhow::Result<()> {
    let selector = match start {
        "EARLIEST" | "NOW" => json!({ "StartSelectorType": start }),
        s if s.len() > 20 && s.bytes().all(|b| b.is_ascii_digit()) => {
            json!({ "StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": s })
        }
        s => match s.parse::<f64>() {
            Ok(ts) => json!({ "StartSelectorType": "SERVER_TIMESTAMP", "StartTimestamp": ts }),
            Err(_) => bail!("--start must be EARLIEST, NOW, a fragment number or epoch seconds"),
        },
    };
    let url = format!("{}/getMedia", endpoint.trim_end_matches('/'));
    let body = serde_json::to_vec(&json!({ "StreamName": stream, "StartSelector": selector }))?;
    let headers = [("content-type", "application/json")];
    let req = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(body.clone());
    let mut resp = super::sign::sign_reqwest(req, "POST", &url, "kinesisvideo", &headers, &body)?
        .send()
        .await
        .with_context(|| format!("cannot reach Freshet at {endpoint}"))?;
    if !resp.status().is_success() {
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        bail!("{}", body["Message"].as_str().unwrap_or("GetMedia failed"));
    }
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut out = std::io::stdout().lock();
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left == Some(Duration::ZERO) {
            return Ok(());
        }
        let next = match left {
            Some(l) => match tokio::time::timeout(l, resp.chunk()).await {
                Ok(c) => c?,
                Err(_) => return Ok(()),
            },
            None => resp.chunk().await?,
        };
        match next {
            Some(chunk) => out.write_all(&chunk)?,
            None => return Ok(()),
        }
    }
}

async fn feeds_call(
    endpoint: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let url = format!("{}/v1/video/feeds{path}", endpoint.trim_end_matches('/'));
    let method_name = method.as_str().to_string();
    let mut req = reqwest::Client::new().request(method, &url);
    let body = match body {
        Some(b) => {
            let bytes = serde_json::to_vec(&b)?;
            req = req
                .header("content-type", "application/json")
                .body(bytes.clone());
            bytes
        }
        None => Vec::new(),
    };
    let req = super::sign::sign_reqwest(req, &method_name, &url, "kinesisvideo", &[], &body)?;
    let resp = req.send().await.with_context(|| {
        format!("cannot reach Freshet at {endpoint} (is `freshet serve` running?)")
    })?;
    let ok = resp.status().is_success();
    let out: Value = resp.json().await.unwrap_or(Value::Null);
    if !ok {
        bail!(
            "{}: {}",
            out["error"].as_str().unwrap_or("error"),
            out["message"].as_str().unwrap_or("the request failed")
        );
    }
    Ok(out)
}

fn print_feed(f: &Value) {
    let source = &f["Source"];
    let what = match source["Type"].as_str() {
        Some("RTSP_PULL") => format!("rtsp pull {}", source["Url"].as_str().unwrap_or("")),
        _ => format!("rtp udp port {}", source["Port"]),
    };
    let st = &f["Status"];
    println!(
        "{}\t{}\t{}\tfragments {}\tpackets {}\tlost {}{}",
        f["StreamName"].as_str().unwrap_or(""),
        what,
        st["State"].as_str().unwrap_or(""),
        st["FragmentsStored"],
        st["Packets"],
        st["PacketsLost"],
        st["LastError"]
            .as_str()
            .map(|e| format!("\tlast error: {e}"))
            .unwrap_or_default()
    );
}

async fn ingest(endpoint: &str, cmd: IngestCommand) -> anyhow::Result<()> {
    match cmd {
        IngestCommand::Add {
            stream,
            rtsp_url,
            rtp_port,
            sdp,
            codec,
            payload_type,
            fragment_ms,
        } => {
            let mut body = json!({});
            if let Some(url) = rtsp_url {
                body["RtspUrl"] = json!(url);
            }
            if let Some(port) = rtp_port {
                body["RtpPort"] = json!(port);
            }
            if let Some(path) = sdp {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read SDP file {}", path.display()))?;
                body["Sdp"] = json!(text);
            }
            if let Some(c) = codec {
                body["Codec"] = json!(c);
            }
            if let Some(pt) = payload_type {
                body["PayloadType"] = json!(pt);
            }
            if let Some(ms) = fragment_ms {
                body["FragmentMs"] = json!(ms);
            }
            let out = feeds_call(
                endpoint,
                reqwest::Method::PUT,
                &format!("/{stream}"),
                Some(body),
            )
            .await?;
            print_feed(&out);
        }
        IngestCommand::List => {
            let out = feeds_call(endpoint, reqwest::Method::GET, "", None).await?;
            for f in out["Feeds"].as_array().cloned().unwrap_or_default() {
                print_feed(&f);
            }
        }
        IngestCommand::Status { stream } => {
            let out =
                feeds_call(endpoint, reqwest::Method::GET, &format!("/{stream}"), None).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        IngestCommand::Remove { stream } => {
            feeds_call(
                endpoint,
                reqwest::Method::DELETE,
                &format!("/{stream}"),
                None,
            )
            .await?;
            eprintln!("feed of {stream} removed");
        }
    }
    Ok(())
}
