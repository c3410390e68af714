//! PutMedia end to end against the real binary: the real kvssink body
//! (`tests/fixtures/kvs/putmedia_body.mkv`) is uploaded chunked, in random chunk sizes,
//! with `Expect: 100-continue`, while the acknowledgements are read as they stream back.
//! Checks the `100 Continue`, the BUFFERING / RECEIVED / PERSISTED order per fragment,
//! timecodes echoed from the MKV, increasing fragment numbers, that PERSISTED fragments
//! survive a SIGKILL, the ERROR acks for malformed bodies, and that the stored fragment
//! lengths add up to the media pushed (ffprobe of the body).

mod common;

use std::time::Duration;

use common::{Rng, Server};
use freshet::media::mkv::{Limits, MkvEvent, MkvReader};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FIXTURE: &[u8] = include_bytes!("fixtures/kvs/putmedia_body.mkv");

async fn create_video_stream(endpoint: &str, name: &str, retention: u32) {
    let r = reqwest::Client::new()
        .post(format!("{endpoint}/createStream"))
        .body(format!(
            r#"{{"StreamName":"{name}","DataRetentionInHours":{retention}}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// Uploads `body` to PutMedia in chunks of random size and returns (raw response head,
/// ack lines). Reads acks concurrently with the upload.
async fn put_media(
    endpoint: &str,
    stream: &str,
    body: &[u8],
    rng: &mut Rng,
) -> (String, Vec<Value>) {
    let mut chunks = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let n = (rng.range(1, 64 * 1024) as usize).min(body.len() - at);
        chunks.push(body[at..at + n].to_vec());
        at += n;
    }
    put_media_chunks(endpoint, stream, chunks).await
}

/// Uploads `chunks` to PutMedia, one HTTP chunk each, reading acks concurrently.
async fn put_media_chunks(
    endpoint: &str,
    stream: &str,
    chunks: Vec<Vec<u8>>,
) -> (String, Vec<Value>) {
    let addr = endpoint.trim_start_matches("http://");
    // A server that is down (the crash test kills it) gives no acks.
    let Ok(mut sock) = TcpStream::connect(addr).await else {
        return (String::new(), Vec::new());
    };
    let head = format!(
        "POST /putMedia HTTP/1.1\r\nHost: {addr}\r\nx-amzn-stream-name: {stream}\r\n\
         x-amzn-fragment-timecode-type: ABSOLUTE\r\nx-amzn-producer-start-timestamp: 1700000000.000\r\n\
         x-amzn-fragment-acknowledgment-required: 1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    );
    if sock.write_all(head.as_bytes()).await.is_err() {
        return (String::new(), Vec::new());
    }
    let (mut rd, mut wr) = sock.into_split();
    let writer = tokio::spawn(async move {
        for c in chunks {
            let mut frame = format!("{:x}\r\n", c.len()).into_bytes();
            frame.extend_from_slice(&c);
            frame.extend_from_slice(b"\r\n");
            if wr.write_all(&frame).await.is_err() {
                return;
            }
        }
        let _ = wr.write_all(b"0\r\n\r\n").await;
        // Like the producer SDK: keep the connection open until the acks are read.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(wr);
    });
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break,
        }
        // The response ends with the last chunk.
        if raw.ends_with(b"0\r\n\r\n") {
            break;
        }
    }
    writer.abort();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let acks = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad ack line {l:?}: {e}")))
        .collect();
    (text, acks)
}

fn fixture_fragments() -> Vec<u64> {
    let events = MkvReader::new(Limits::default())
        .read_to_end(FIXTURE)
        .unwrap();
    events
        .into_iter()
        .filter_map(|e| match e {
            MkvEvent::FragmentEnd(f) => Some(f.cluster_timecode),
            _ => None,
        })
        .collect()
}

/// The 1 s GOP sample as a producer body's parts: the head (EBML header, unknown-size
/// Segment header, Info and Tracks) and each Cluster with a known size.
fn split_sample() -> (Vec<u8>, Vec<Vec<u8>>) {
    use freshet::media::mkv_writer::SEGMENT_UNKNOWN_SIZE_HEADER;
    let mut head = Vec::new();
    let mut clusters = Vec::new();
    for e in MkvReader::new(Limits::default())
        .read_to_end(SAMPLE)
        .unwrap()
    {
        match e {
            MkvEvent::Header(h) => {
                head.extend_from_slice(&h.ebml_header_bytes);
                head.extend_from_slice(&SEGMENT_UNKNOWN_SIZE_HEADER);
                head.extend_from_slice(&h.info_and_tracks_bytes);
            }
            MkvEvent::FragmentEnd(f) => clusters.push(f.raw_cluster_bytes),
            _ => {}
        }
    }
    (head, clusters)
}

#[tokio::test]
async fn kvssink_body_is_acknowledged_and_survives_a_kill() {
    let mut server = Server::start(&["--state-delay-ms", "0"]).await;
    let ep = server.endpoint();
    create_video_stream(&ep, "cam", 2).await;
    let expected = fixture_fragments();
    assert!(
        expected.len() >= 2,
        "fixture has {} fragments",
        expected.len()
    );
    let mut rng = Rng::from_env("putmedia");
    let (text, acks) = put_media(&ep, "cam", FIXTURE, &mut rng).await;
    assert!(
        text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
        "{}",
        &text[..text.len().min(200)]
    );

    // Per fragment: BUFFERING, RECEIVED, PERSISTED, with the Cluster timecode echoed.
    let kinds: Vec<&str> = acks
        .iter()
        .map(|a| a["EventType"].as_str().unwrap())
        .collect();
    assert!(!kinds.contains(&"ERROR"), "{acks:?}");
    let persisted: Vec<&Value> = acks
        .iter()
        .filter(|a| a["EventType"] == "PERSISTED")
        .collect();
    let timecodes: Vec<u64> = persisted
        .iter()
        .map(|a| a["FragmentTimecode"].as_u64().unwrap())
        .collect();
    assert_eq!(timecodes, expected);
    for tc in &expected {
        let order: Vec<&str> = acks
            .iter()
            .filter(|a| a["FragmentTimecode"].as_u64() == Some(*tc))
            .map(|a| a["EventType"].as_str().unwrap())
            .collect();
        assert_eq!(
            order,
            ["BUFFERING", "RECEIVED", "PERSISTED"],
            "fragment {tc}"
        );
    }
    let numbers: Vec<&str> = persisted
        .iter()
        .map(|a| a["FragmentNumber"].as_str().unwrap())
        .collect();
    assert!(
        numbers
            .iter()
            .all(|n| n.len() <= 128 && n.bytes().all(|b| b.is_ascii_digit()))
    );
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");

    // PERSISTED means durable: a SIGKILL right now loses nothing.
    server.kill();
    server.restart().await;
    let ep = server.endpoint();
    let (_, acks2) = put_media(&ep, "cam", FIXTURE, &mut rng).await;
    let again: Vec<&str> = acks2
        .iter()
        .filter(|a| a["EventType"] == "PERSISTED")
        .map(|a| a["FragmentNumber"].as_str().unwrap())
        .collect();
    assert_eq!(again.len(), expected.len());
    // Numbering continues after the fragments stored before the kill.
    assert!(
        again[0] > *numbers.last().unwrap(),
        "{again:?} after {numbers:?}"
    );
}

#[tokio::test]
async fn malformed_bodies_get_error_acks_and_keep_earlier_fragments() {
    let server = Server::start(&["--state-delay-ms", "0"]).await;
    let ep = server.endpoint();
    create_video_stream(&ep, "bad", 2).await;
    let mut rng = Rng::new(7);

    // Not MKV at all: ERROR 4006.
    let (_, acks) = put_media(
        &ep,
        "bad",
        b"this is not matroska at all, just text",
        &mut rng,
    )
    .await;
    let last = acks.last().expect("an ack");
    assert_eq!(last["EventType"], "ERROR");
    assert_eq!(last["ErrorId"], 4006);

    // Good fragments, then garbage in the middle of the next Cluster: the complete
    // fragments are PERSISTED before the ERROR.
    let expected = fixture_fragments();
    let events = MkvReader::new(Limits::default())
        .read_to_end(FIXTURE)
        .unwrap();
    let _ = events;
    let cut = FIXTURE.len() * 2 / 3;
    let mut body = FIXTURE[..cut].to_vec();
    body.extend_from_slice(&[0xFF; 64]);
    let (_, acks) = put_media(&ep, "bad", &body, &mut rng).await;
    let persisted = acks
        .iter()
        .filter(|a| a["EventType"] == "PERSISTED")
        .count();
    assert!(persisted >= 1 && persisted < expected.len(), "{acks:?}");
    assert_eq!(acks.last().unwrap()["EventType"], "ERROR");

    // Missing stream: 404 with the AWS error type.
    let r = reqwest::Client::new()
        .post(format!("{ep}/putMedia"))
        .header("x-amzn-stream-name", "nope")
        .body(FIXTURE[..100].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-amzn-ErrorType"], "ResourceNotFoundException");

    // The server still serves.
    let ok = reqwest::get(format!("{ep}/health")).await.unwrap();
    assert_eq!(ok.status(), 200);
}

const SAMPLE: &[u8] = include_bytes!("../media-samples/h264-1s-gop.kvs.mkv");

/// Reads a GetMedia-style response (a sequence of MKV documents) until `fragments`
/// Clusters arrived or the body ends. Returns the raw bytes and the parsed events.
async fn read_documents(resp: reqwest::Response, fragments: usize) -> (Vec<u8>, Vec<MkvEvent>) {
    let mut resp = resp;
    let mut raw = Vec::new();
    let mut reader = MkvReader::for_document_sequence(Limits::default());
    let mut events = Vec::new();
    while events
        .iter()
        .filter(|e| matches!(e, MkvEvent::FragmentEnd(_)))
        .count()
        < fragments
    {
        match tokio::time::timeout(Duration::from_secs(20), resp.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                raw.extend_from_slice(&chunk);
                reader
                    .feed(&chunk, &mut events)
                    .expect("GetMedia output parses");
            }
            _ => break,
        }
    }
    (raw, events)
}

fn tags_of(events: &[MkvEvent]) -> Vec<Vec<(String, String)>> {
    events
        .iter()
        .filter_map(|e| match e {
            MkvEvent::Tags(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// ListFragments' JSON answer.
async fn list_fragments(ep: &str, body: serde_json::Value) -> Value {
    post_json(ep, "listFragments", body)
        .await
        .json()
        .await
        .unwrap()
}

async fn post_json(ep: &str, path: &str, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{ep}/{path}"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn get_media_list_fragments_and_fragment_lists_replay_what_was_pushed() {
    let server = Server::start(&["--state-delay-ms", "0"]).await;
    let ep = server.endpoint();
    create_video_stream(&ep, "replay", 2).await;
    let mut rng = Rng::new(3);
    let (_, acks) = put_media(&ep, "replay", SAMPLE, &mut rng).await;
    let numbers: Vec<String> = acks
        .iter()
        .filter(|a| a["EventType"] == "PERSISTED")
        .map(|a| a["FragmentNumber"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(numbers.len(), 6, "one fragment per 1 s GOP: {acks:?}");

    // GetMedia from the start: six complete documents, AWS tags around each Cluster.
    let resp = post_json(&ep, "getMedia", serde_json::json!({"StreamName": "replay", "StartSelector": {"StartSelectorType": "EARLIEST"}})).await;
    assert_eq!(resp.status(), 200);
    let (raw, events) = read_documents(resp, 6).await;
    let frames = events
        .iter()
        .filter(|e| matches!(e, MkvEvent::Frame(_)))
        .count();
    assert_eq!(frames, 150);
    let tags = tags_of(&events);
    assert_eq!(
        tags.len(),
        12,
        "a Tags element before and after every Cluster"
    );
    for (i, number) in numbers.iter().enumerate() {
        let before = &tags[2 * i];
        let after = &tags[2 * i + 1];
        let get = |t: &Vec<(String, String)>, k: &str| {
            t.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        assert_eq!(
            get(before, "AWS_KINESISVIDEO_FRAGMENT_NUMBER").as_ref(),
            Some(number)
        );
        assert!(
            get(before, "AWS_KINESISVIDEO_SERVER_TIMESTAMP")
                .unwrap()
                .contains('.')
        );
        assert_eq!(
            get(before, "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP").unwrap(),
            format!("{i}.000")
        );
        assert_eq!(
            get(after, "AWS_KINESISVIDEO_CONTINUATION_TOKEN").as_ref(),
            Some(number)
        );
        assert!(
            get(after, "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW")
                .unwrap()
                .parse::<u64>()
                .is_ok()
        );
    }

    // What ffmpeg makes of it: 150 frames of H.264, decoded without an error.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("get_media.mkv");
    std::fs::write(&path, &raw).unwrap();
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("ffprobe is installed by scripts/test.sh");
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "h264,150");
    let decode = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-xerror", "-i"])
        .arg(&path)
        .args(["-f", "null", "-"])
        .status()
        .unwrap();
    assert!(decode.success());

    // Resume after the third fragment with its continuation token.
    let resp = post_json(&ep, "getMedia", serde_json::json!({"StreamName": "replay", "StartSelector": {"StartSelectorType": "CONTINUATION_TOKEN", "ContinuationToken": numbers[2]}})).await;
    let (_, events) = read_documents(resp, 3).await;
    let tags = tags_of(&events);
    assert_eq!(
        tags[0]
            .iter()
            .find(|(n, _)| n == "AWS_KINESISVIDEO_FRAGMENT_NUMBER")
            .unwrap()
            .1,
        numbers[3]
    );

    // ListFragments, paginated, by producer timestamp range.
    let page = post_json(
        &ep,
        "listFragments",
        serde_json::json!({"StreamName": "replay", "MaxResults": 4}),
    )
    .await;
    let page: Value = page.json().await.unwrap();
    assert_eq!(page["Fragments"].as_array().unwrap().len(), 4);
    let next = page["NextToken"].as_str().unwrap();
    let rest: Value = list_fragments(
        &ep,
        serde_json::json!({"StreamName": "replay", "NextToken": next}),
    )
    .await;
    let listed: Vec<&str> = page["Fragments"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["Fragments"].as_array().unwrap())
        .map(|f| f["FragmentNumber"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        numbers.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let ranged: Value = list_fragments(&ep, serde_json::json!({"StreamName": "replay", "FragmentSelector": {"FragmentSelectorType": "PRODUCER_TIMESTAMP", "TimestampRange": {"StartTimestamp": 2.0, "EndTimestamp": 4.0}}})).await;
    let ranged: Vec<&str> = ranged["Fragments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["FragmentNumber"].as_str().unwrap())
        .collect();
    assert_eq!(
        ranged,
        numbers[2..5].iter().map(String::as_str).collect::<Vec<_>>()
    );

    // GetMediaForFragmentList returns exactly the listed fragments, in order.
    let resp = post_json(
        &ep,
        "getMediaForFragmentList",
        serde_json::json!({"StreamName": "replay", "Fragments": [numbers[4], numbers[1]]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (_, events) = read_documents(resp, 2).await;
    let got: Vec<String> = tags_of(&events)
        .iter()
        .filter_map(|t| {
            t.iter()
                .find(|(n, _)| n == "AWS_KINESISVIDEO_FRAGMENT_NUMBER")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(got, [numbers[4].clone(), numbers[1].clone()]);
    let bad = post_json(
        &ep,
        "getMediaForFragmentList",
        serde_json::json!({"StreamName": "replay", "Fragments": ["123"]}),
    )
    .await;
    assert_eq!(bad.status(), 404);
}

#[tokio::test]
async fn get_media_follows_the_live_edge_while_a_producer_pushes() {
    let server = Server::start(&["--state-delay-ms", "0"]).await;
    let ep = server.endpoint();
    create_video_stream(&ep, "live", 2).await;
    // The reader starts first, at NOW: it must get every fragment pushed afterwards,
    // as they arrive, without the request ending in between.
    let resp = post_json(
        &ep,
        "getMedia",
        serde_json::json!({"StreamName": "live", "StartSelector": {"StartSelectorType": "NOW"}}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let reader = tokio::spawn(read_documents(resp, 6));
    // Push the six 1-second fragments one by one, a quarter second apart.
    let events = MkvReader::new(Limits::default())
        .read_to_end(SAMPLE)
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, MkvEvent::FragmentEnd(_)))
            .count(),
        6
    );
    let mut rng = Rng::new(11);
    let ep2 = ep.clone();
    let pusher = tokio::spawn(async move {
        // One connection, paced: the body is written slowly so fragments land over ~1.5 s.
        let addr = ep2.trim_start_matches("http://").to_string();
        let mut sock = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /putMedia HTTP/1.1\r\nHost: {addr}\r\nx-amzn-stream-name: live\r\n\
             x-amzn-fragment-timecode-type: ABSOLUTE\r\nx-amzn-producer-start-timestamp: 0\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        for chunk in SAMPLE.chunks(SAMPLE.len() / 6 + 1) {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(chunk);
            frame.extend_from_slice(b"\r\n");
            sock.write_all(&frame).await.unwrap();
            tokio::time::sleep(Duration::from_millis(250 + rng.range(0, 50))).await;
        }
        sock.write_all(b"0\r\n\r\n").await.unwrap();
        // Keep the connection until the acks are in.
        let mut buf = vec![0u8; 65536];
        let mut raw = Vec::new();
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.ends_with(b"0\r\n\r\n") {
                break;
            }
        }
        String::from_utf8_lossy(&raw).matches("PERSISTED").count()
    });
    assert_eq!(pusher.await.unwrap(), 6);
    let (_, events) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, MkvEvent::FragmentEnd(_)))
            .count(),
        6
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, MkvEvent::Frame(_)))
            .count(),
        150
    );
}

#[tokio::test]
async fn producer_tags_sent_after_a_cluster_come_back_with_its_fragment() {
    use freshet::media::mkv_writer::write_tags;
    let server = Server::start(&["--state-delay-ms", "0"]).await;
    let ep = server.endpoint();
    create_video_stream(&ep, "tagged", 2).await;
    // Rebuild the sample as a producer would send it, with a producer Tags element
    // after every Cluster, each Cluster and its Tags written together (as the producer
    // SDK does; tags arriving separately, later, are not attached: see putmedia.rs).
    let (head, clusters) = split_sample();
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for (index, cluster) in clusters.iter().enumerate() {
        let mut chunk = if index == 0 { head.clone() } else { Vec::new() };
        chunk.extend_from_slice(cluster);
        write_tags(&mut chunk, &[("camera", &format!("door-{index}"))], 8);
        chunks.push(chunk);
    }
    let (_, acks) = put_media_chunks(&ep, "tagged", chunks).await;
    assert_eq!(
        acks.iter()
            .filter(|a| a["EventType"] == "PERSISTED")
            .count(),
        6,
        "{acks:?}"
    );
    let resp = post_json(&ep, "getMedia", serde_json::json!({"StreamName": "tagged", "StartSelector": {"StartSelectorType": "EARLIEST"}})).await;
    let (_, events) = read_documents(resp, 6).await;
    let cameras: Vec<String> = tags_of(&events)
        .iter()
        .flat_map(|t| {
            t.iter()
                .filter(|(n, _)| n == "camera")
                .map(|(_, v)| v.clone())
        })
        .collect();
    assert_eq!(
        cameras,
        (0..6).map(|i| format!("door-{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_stream_without_retention_stores_nothing_but_serves_live_readers() {
    let server = Server::start(&["--state-delay-ms", "0"]).await;
    let ep = server.endpoint();
    create_video_stream(&ep, "ephemeral", 0).await;
    let resp = post_json(&ep, "getMedia", serde_json::json!({"StreamName": "ephemeral", "StartSelector": {"StartSelectorType": "NOW"}})).await;
    assert_eq!(resp.status(), 200);
    let reader = tokio::spawn(read_documents(resp, 6));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, acks) = put_media(&ep, "ephemeral", SAMPLE, &mut Rng::new(9)).await;
    let persisted: Vec<&str> = acks
        .iter()
        .filter(|a| a["EventType"] == "PERSISTED")
        .map(|a| a["FragmentNumber"].as_str().unwrap())
        .collect();
    assert_eq!(persisted.len(), 6, "{acks:?}");
    assert!(persisted.windows(2).all(|w| w[0] < w[1]));
    let (_, events) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, MkvEvent::Frame(_)))
            .count(),
        150
    );
    // Nothing was kept.
    let listed: Value = list_fragments(&ep, serde_json::json!({"StreamName": "ephemeral"})).await;
    assert_eq!(listed["Fragments"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn sigkill_during_concurrent_uploads_loses_no_persisted_fragment() {
    let mut server = Server::start(&["--state-delay-ms", "0"]).await;
    let mut rng = Rng::from_env("putmedia-crash");
    let cameras = 4;
    for c in 0..cameras {
        create_video_stream(&server.endpoint(), &format!("crash-{c}"), 2).await;
    }
    let mut persisted: Vec<Vec<String>> = vec![Vec::new(); cameras];
    for cycle in 0..5 {
        let ep = server.endpoint();
        let uploads: Vec<_> = (0..cameras)
            .map(|c| {
                // Upload the sample over and over until the server goes away.
                tokio::spawn(upload_repeatedly(
                    ep.clone(),
                    format!("crash-{c}"),
                    50,
                    rng.fork(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.range(200, 1200))).await;
        server.kill();
        for (c, u) in uploads.into_iter().enumerate() {
            persisted[c].extend(u.await.unwrap());
        }
        server.restart().await;
        let ep = server.endpoint();
        // Every fragment acknowledged PERSISTED is listed and reads back whole.
        for (c, numbers) in persisted.iter().enumerate() {
            let stream = format!("crash-{c}");
            // ListFragments answers in pages: follow NextToken.
            let listed: std::collections::HashSet<String> =
                list_all(&ep, &stream, None).await.into_iter().collect();
            for n in numbers {
                assert!(
                    listed.contains(n),
                    "cycle {cycle}: persisted fragment {n} of {stream} is missing"
                );
            }
            if let Some(last) = numbers.last() {
                let resp = post_json(
                    &ep,
                    "getMediaForFragmentList",
                    serde_json::json!({"StreamName": stream, "Fragments": [last]}),
                )
                .await;
                assert_eq!(resp.status(), 200);
                let (_, events) = read_documents(resp, 1).await;
                assert_eq!(
                    events
                        .iter()
                        .filter(|e| matches!(e, MkvEvent::Frame(_)))
                        .count(),
                    25,
                    "fragment {last} intact"
                );
            }
        }
    }
    let counts: Vec<usize> = persisted.iter().map(Vec::len).collect();
    eprintln!("fragments persisted per camera over 5 kill cycles: {counts:?}");
    assert!(
        counts.iter().sum::<usize>() >= cameras,
        "uploads made progress: {counts:?}"
    );
}

#[tokio::test]
async fn non_increasing_timecodes_end_with_error_4004_after_the_good_fragments() {
    let server = Server::start(&["--state-delay-ms", "0"]).await;
    let ep = server.endpoint();
    create_video_stream(&ep, "backwards", 2).await;
    let (head, clusters) = split_sample();
    // Fragments at 0 s and 2 s, then one at 1 s: the third goes back in time.
    let mut body = head;
    for i in [0, 2, 1] {
        body.extend_from_slice(&clusters[i]);
    }
    let (_, acks) = put_media(&ep, "backwards", &body, &mut Rng::new(1)).await;
    let persisted: Vec<u64> = acks
        .iter()
        .filter(|a| a["EventType"] == "PERSISTED")
        .map(|a| a["FragmentTimecode"].as_u64().unwrap())
        .collect();
    assert_eq!(persisted, [0, 2000]);
    let last = acks.last().unwrap();
    assert_eq!(last["EventType"], "ERROR");
    assert_eq!(last["ErrorId"], 4004);
    // The stored fragments are intact.
    let listed: Value = list_fragments(&ep, serde_json::json!({"StreamName": "backwards"})).await;
    assert_eq!(listed["Fragments"].as_array().unwrap().len(), 2);
}

/// A Cluster (known size) at `timecode` ms with one key frame of `len` junk bytes for
/// track 1: the reader does not look inside frames, so the size is all that matters.
fn big_cluster(timecode: u64, len: usize, fill: u8) -> Vec<u8> {
    use freshet::media::ebml::{write_element, write_uint_element};
    let mut block = vec![0x81, 0x00, 0x00, 0x80];
    block.resize(4 + len, fill);
    let mut payload = Vec::new();
    write_uint_element(&mut payload, 0xE7, timecode);
    write_element(&mut payload, 0xA3, &block);
    let mut cluster = Vec::new();
    write_element(&mut cluster, 0x1F43_B675, &payload);
    cluster
}

fn persisted_count(acks: &[Value]) -> usize {
    acks.iter()
        .filter(|a| a["EventType"] == "PERSISTED")
        .count()
}

#[tokio::test]
async fn media_memory_budget_bounds_what_uploads_hold_and_recovers() {
    let server = Server::start(&["--state-delay-ms", "0", "--media-memory-mb", "2"]).await;
    let ep = server.endpoint();
    let (head, _) = split_sample();

    // A fragment larger than the whole budget can never fit: ErrorId 5000 at once,
    // after the fragments before it were stored.
    create_video_stream(&ep, "huge", 2).await;
    let mut body = head.clone();
    body.extend_from_slice(&big_cluster(0, 100_000, 1));
    body.extend_from_slice(&big_cluster(1000, 3 * 1024 * 1024, 2));
    let started = std::time::Instant::now();
    let (_, acks) = put_media(&ep, "huge", &body, &mut Rng::new(7)).await;
    assert_eq!(persisted_count(&acks), 1, "{acks:?}");
    let last = acks.last().unwrap();
    assert_eq!(
        (&last["EventType"], &last["ErrorId"]),
        (&"ERROR".into(), &5000.into())
    );
    assert!(started.elapsed() < Duration::from_secs(8));

    // Six producers at once, 4 x 600 KB fragments each, against a 2 MiB budget: they
    // take turns. A producer may be ended with ErrorId 5000 if it waited 10 s (the
    // budget is shared, so connections holding half fragments could otherwise wait on
    // each other forever); everything acknowledged PERSISTED is stored intact.
    let mut tasks = Vec::new();
    for p in 0..6u8 {
        let ep = ep.clone();
        let name = format!("busy{p}");
        create_video_stream(&ep, &name, 2).await;
        let mut body = head.clone();
        for f in 0..4u64 {
            body.extend_from_slice(&big_cluster(f * 1000, 600_000, p * 10 + f as u8));
        }
        tasks.push(tokio::spawn(async move {
            let (_, acks) = put_media(&ep, &name, &body, &mut Rng::new(p as u64)).await;
            (name, acks)
        }));
    }
    let mut total_persisted = 0;
    for t in tasks {
        let (name, acks) = t.await.unwrap();
        let persisted = persisted_count(&acks);
        let last = acks.last().unwrap();
        if persisted < 4 {
            assert_eq!(last["ErrorId"], 5000, "{name}: {acks:?}");
        }
        total_persisted += persisted;
        let listed: Value = list_fragments(&ep, serde_json::json!({"StreamName": name})).await;
        assert_eq!(
            listed["Fragments"].as_array().unwrap().len(),
            persisted,
            "{name}"
        );
    }
    assert!(
        total_persisted >= 4,
        "only {total_persisted} fragments stored"
    );

    // Every share was given back: a producer alone gets all its fragments through.
    create_video_stream(&ep, "after", 2).await;
    let mut body = head.clone();
    for f in 0..3u64 {
        body.extend_from_slice(&big_cluster(f * 1000, 1_500_000, 9));
    }
    let (_, acks) = put_media(&ep, "after", &body, &mut Rng::new(99)).await;
    assert_eq!(persisted_count(&acks), 3, "{acks:?}");
}

/// What ffprobe says of a body's video: (from the first frame to the end of the last,
/// one frame), in seconds.
fn probe_video_duration(path: &std::path::Path) -> (f64, f64) {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=pts_time,duration_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .expect("ffprobe is installed by scripts/test.sh");
    assert!(out.status.success());
    let mut packets: Vec<(f64, f64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let mut fields = line.split(',');
            let pts = fields.next().unwrap().parse().unwrap();
            let duration = fields.next().and_then(|d| d.parse().ok()).unwrap_or(0.0);
            (pts, duration)
        })
        .collect();
    packets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut steps: Vec<f64> = packets.windows(2).map(|w| w[1].0 - w[0].0).collect();
    steps.sort_by(f64::total_cmp);
    let frame = steps[steps.len() / 2];
    let (first, last) = (packets[0], packets[packets.len() - 1]);
    let last_duration = if last.1 > 0.0 { last.1 } else { frame };
    (last.0 + last_duration - first.0, frame)
}

/// The kvssink body (30 fps, no DefaultDuration) and one more fragment: a lone key
/// frame one frame after its last, as a stream that stops just after a key frame.
fn fixture_with_a_lone_last_frame() -> Vec<u8> {
    use freshet::media::fragmenter::{Block, build_cluster};
    let events = MkvReader::new(Limits::default())
        .read_to_end(FIXTURE)
        .unwrap();
    let frames: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            MkvEvent::Frame(f) => Some(*f),
            _ => None,
        })
        .collect();
    let first_cluster = events
        .iter()
        .find_map(|e| match e {
            MkvEvent::FragmentEnd(f) => Some(f),
            _ => None,
        })
        .unwrap();
    let key = frames[0];
    let data = first_cluster.raw_cluster_bytes[key.data_offset..][..key.data_len].to_vec();
    let at = frames.iter().map(|f| f.timecode).max().unwrap() as i64 + 33;
    let lone = Block {
        track: 1,
        time_ms: at,
        keyframe: true,
        data: bytes::Bytes::from(data),
    };
    let mut body = FIXTURE.to_vec();
    body.extend(build_cluster(at, &[lone], 0).cluster);
    body
}

#[tokio::test]
async fn stored_fragment_lengths_add_up_to_the_media_pushed() {
    let server = Server::start(&["--state-delay-ms", "0"]).await;
    let ep = server.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(17);
    let bodies: [(&str, Vec<u8>); 5] = [
        ("h264-1s-gop", SAMPLE.to_vec()),
        (
            "h264-aac",
            include_bytes!("../media-samples/h264-aac.kvs.mkv").to_vec(),
        ),
        (
            "h265-2s-gop",
            include_bytes!("../media-samples/h265-2s-gop.kvs.mkv").to_vec(),
        ),
        ("kvssink", FIXTURE.to_vec()),
        ("kvssink-lone", fixture_with_a_lone_last_frame()),
    ];
    for (name, body) in bodies {
        create_video_stream(&ep, name, 2).await;
        put_media(&ep, name, &body, &mut rng).await;
        let listed: Value = list_fragments(&ep, serde_json::json!({"StreamName": name})).await;
        let mut fragments: Vec<(String, f64, u64)> = listed["Fragments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["FragmentNumber"].as_str().unwrap().to_string(),
                    f["ProducerTimestamp"].as_f64().unwrap(),
                    f["FragmentLengthInMilliseconds"].as_u64().unwrap(),
                )
            })
            .collect();
        fragments.sort_by(|a, b| a.0.cmp(&b.0));
        let lengths: Vec<u64> = fragments.iter().map(|f| f.2).collect();
        let path = dir.path().join(format!("{name}.mkv"));
        std::fs::write(&path, &body).unwrap();
        let (media, frame) = probe_video_duration(&path);
        let total = lengths.iter().sum::<u64>() as f64 / 1000.0;
        assert!(
            (total - media).abs() <= frame + 1e-6,
            "{name}: fragments {lengths:?} last {total} s, the media {media} s"
        );
        // Each lasts up to the next one's start.
        for (f, next) in fragments.iter().zip(&fragments[1..]) {
            let end_ms = f.1 * 1000.0 + f.2 as f64;
            assert!(
                (end_ms - next.1 * 1000.0).abs() <= 1.0,
                "{name}: {fragments:?}"
            );
        }
        match name {
            "h265-2s-gop" => assert_eq!(lengths, [2000; 3]),
            "kvssink" => assert_eq!(lengths, [1000; 3]),
            // Not 0 ms: as long as a frame of the fragments before it.
            "kvssink-lone" => assert_eq!(lengths, [1000, 1000, 1000, 33]),
            _ => assert_eq!(lengths, [1000; 6], "{name}"),
        }
    }

    // The HLS playlist says the same, down to the lone frame (not `#EXTINF:0.001`).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let session: Value = post_json(
        &ep,
        "getHLSStreamingSessionURL",
        serde_json::json!({
            "StreamName": "kvssink-lone",
            "PlaybackMode": "ON_DEMAND",
            "HLSFragmentSelector": {
                "FragmentSelectorType": "SERVER_TIMESTAMP",
                "TimestampRange": {"StartTimestamp": now - 600.0, "EndTimestamp": now + 60.0}
            }
        }),
    )
    .await
    .json()
    .await
    .unwrap();
    let url = session["HLSStreamingSessionURL"].as_str().unwrap();
    let playlist = reqwest::get(url.replace("getHLSMasterPlaylist", "getHLSMediaPlaylist"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let extinf: Vec<&str> = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .collect();
    assert_eq!(
        extinf,
        ["1.000,", "1.000,", "1.000,", "0.033,"],
        "{playlist}"
    );
}

/// Every fragment number ListFragments returns for `stream` on `selector` (`None`:
/// the default), following NextToken.
async fn list_all(ep: &str, stream: &str, selector: Option<Value>) -> Vec<String> {
    let mut listed = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = serde_json::json!({"StreamName": stream, "MaxResults": 100});
        if let Some(s) = &selector {
            request["FragmentSelector"] = s.clone();
        }
        if let Some(t) = &token {
            request["NextToken"] = serde_json::json!(t);
        }
        let resp = post_json(ep, "listFragments", request).await;
        assert_eq!(resp.status(), 200);
        let page: Value = resp.json().await.unwrap();
        listed.extend(
            page["Fragments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["FragmentNumber"].as_str().unwrap().to_string()),
        );
        match page["NextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return listed,
        }
    }
}

/// The fragment index rebuild counter of `/health`.
async fn index_rebuilds(ep: &str) -> u64 {
    let health: Value = reqwest::get(format!("{ep}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    health["fragment_index_rebuilds"].as_u64().unwrap()
}

/// Uploads the sample to `stream` `times` times in a row; the PERSISTED fragment
/// numbers (stops early once an upload is cut short).
async fn upload_repeatedly(ep: String, stream: String, times: usize, mut rng: Rng) -> Vec<String> {
    let mut numbers = Vec::new();
    for _ in 0..times {
        let (_, acks) = put_media(&ep, &stream, SAMPLE, &mut rng).await;
        let got: Vec<String> = acks
            .iter()
            .filter(|a| a["EventType"] == "PERSISTED")
            .map(|a| a["FragmentNumber"].as_str().unwrap().to_string())
            .collect();
        let complete = got.len() == 6;
        numbers.extend(got);
        if !complete {
            break;
        }
    }
    numbers
}

#[tokio::test]
async fn sigkill_during_uploads_to_a_long_stream_keeps_its_fragment_index_without_a_rebuild() {
    let mut server = Server::start(&["--state-delay-ms", "0"]).await;
    let mut rng = Rng::from_env("fragment-index-crash");
    create_video_stream(&server.endpoint(), "long", 2).await;
    // A long stream first: 40 uploads of 6 fragments.
    let mut persisted = upload_repeatedly(server.endpoint(), "long".into(), 40, rng.fork()).await;
    assert_eq!(persisted.len(), 240);
    for cycle in 0..3 {
        let ep = server.endpoint();
        // Two producers on the stream at once, killed mid-upload.
        let uploads: Vec<_> = (0..2)
            .map(|_| tokio::spawn(upload_repeatedly(ep.clone(), "long".into(), 50, rng.fork())))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.range(200, 1500))).await;
        server.kill();
        for u in uploads {
            persisted.extend(u.await.unwrap());
        }
        server.restart().await;
        let ep = server.endpoint();
        let listed = list_all(&ep, "long", None).await;
        let set: std::collections::HashSet<&String> = listed.iter().collect();
        for n in &persisted {
            assert!(
                set.contains(n),
                "cycle {cycle}: PERSISTED fragment {n} is not listed"
            );
        }
        assert!(
            listed.windows(2).all(|w| w[0] < w[1]),
            "server order is offset order"
        );
        // The same fragments by producer time (both uploads start their clock at 0).
        let by_producer = list_all(
            &ep,
            "long",
            Some(
                serde_json::json!({"FragmentSelectorType": "PRODUCER_TIMESTAMP",
                "TimestampRange": {"StartTimestamp": 0.0, "EndTimestamp": 1e9}}),
            ),
        )
        .await;
        let mut sorted = by_producer.clone();
        sorted.sort();
        assert_eq!(sorted, listed, "cycle {cycle}");
        assert_eq!(index_rebuilds(&ep).await, 0, "cycle {cycle}: index rebuilt");
    }
    assert!(!server.log_tail(10_000).contains("rebuilt from"));
}

#[tokio::test]
async fn a_lost_fragment_index_is_rebuilt_from_the_fragments_and_counted() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &["--state-delay-ms", "0"]).await;
    create_video_stream(&server.endpoint(), "lost", 2).await;
    let persisted = upload_repeatedly(server.endpoint(), "lost".into(), 5, Rng::new(3)).await;
    assert_eq!(persisted.len(), 30);
    assert!(server.terminate().await);
    // A clean restart loads the index as written.
    server.restart().await;
    assert_eq!(list_all(&server.endpoint(), "lost", None).await, persisted);
    assert_eq!(index_rebuilds(&server.endpoint()).await, 0);
    assert!(server.terminate().await);
    // Without its index log, the stream's index is rebuilt from every fragment.
    let mut found = Vec::new();
    let mut dirs = vec![data.path().to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "fragment-index") {
                    found.push(p);
                } else {
                    dirs.push(p);
                }
            }
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    std::fs::remove_dir_all(&found[0]).unwrap();
    server.restart().await;
    assert_eq!(list_all(&server.endpoint(), "lost", None).await, persisted);
    assert_eq!(index_rebuilds(&server.endpoint()).await, 1);
    assert!(
        server
            .log_tail(200)
            .contains("fragment index of lost rebuilt from 30 fragments")
    );
    // The rebuilt index was persisted: the next restart does not rebuild.
    assert!(server.terminate().await);
    server.restart().await;
    assert_eq!(list_all(&server.endpoint(), "lost", None).await, persisted);
    assert_eq!(index_rebuilds(&server.endpoint()).await, 0);
}

/// Reads ack lines from a PutMedia response until one of `event` type arrives (with a
/// deadline); returns the lines read so far.
async fn read_acks_until(rd: &mut tokio::net::tcp::OwnedReadHalf, raw: &mut Vec<u8>, event: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 65536];
    while !String::from_utf8_lossy(raw).contains(&format!("\"EventType\":\"{event}\"")) {
        let n = tokio::time::timeout_at(deadline, rd.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {event} ack: {}", String::from_utf8_lossy(raw)))
            .unwrap();
        assert!(n > 0, "connection closed before {event}");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// A producer that stalls in the middle of a fragment: the fragment's server timestamp
/// is when its first bytes arrived (its BUFFERING ack), not when it was complete.
#[tokio::test]
async fn a_stalled_fragment_is_stamped_when_its_first_bytes_arrived() {
    let server = Server::start(&["--state-delay-ms", "0"]).await;
    let ep = server.endpoint();
    create_video_stream(&ep, "stall", 2).await;
    let (head, clusters) = split_sample();
    let cluster = &clusters[0];
    let addr = ep.trim_start_matches("http://").to_string();
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    sock.write_all(
        format!(
            "POST /putMedia HTTP/1.1\r\nHost: {addr}\r\nx-amzn-stream-name: stall\r\n\
             x-amzn-fragment-timecode-type: ABSOLUTE\r\nx-amzn-producer-start-timestamp: 1700000000.000\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let chunk = |b: &[u8]| {
        let mut f = format!("{:x}\r\n", b.len()).into_bytes();
        f.extend_from_slice(b);
        f.extend_from_slice(b"\r\n");
        f
    };
    let half = cluster.len() / 2;
    let mut first = head.clone();
    first.extend_from_slice(&cluster[..half]);
    wr.write_all(&chunk(&first)).await.unwrap();
    let mut raw = Vec::new();
    read_acks_until(&mut rd, &mut raw, "BUFFERING").await;
    let buffering_ms = now_ms();
    // The producer holds the fragment open (the behaviour under test, not a wait for
    // the server).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wr.write_all(&chunk(&cluster[half..])).await.unwrap();
    read_acks_until(&mut rd, &mut raw, "PERSISTED").await;
    let persisted_ms = now_ms();
    wr.write_all(b"0\r\n\r\n").await.unwrap();

    let listed = list_fragments(&ep, serde_json::json!({"StreamName": "stall"})).await;
    let fragments = listed["Fragments"].as_array().unwrap();
    assert_eq!(fragments.len(), 1, "{listed}");
    let server_ms = (fragments[0]["ServerTimestamp"].as_f64().unwrap() * 1000.0).round() as i64;
    assert!(
        server_ms <= buffering_ms && buffering_ms - server_ms < 1000,
        "stamped at {server_ms}, first bytes acknowledged at {buffering_ms}"
    );
    assert!(
        persisted_ms - server_ms >= 1500,
        "stamped at {server_ms}, complete at {persisted_ms}: stamped at its end"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
