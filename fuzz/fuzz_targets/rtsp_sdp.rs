//! Fuzzes the RTSP and SDP text parsers of camera ingest: the incremental RTSP reader
//! (`freshet::media::rtsp::parse_message`), the Transport header, Digest/Basic
//! challenges, credentials in URLs, and the SDP parser
//! (`freshet::media::sdp::SessionDescription`). Nothing may panic, and:
//!
//! - the reader gives the same messages (and the same final error, if any) whether the
//!   bytes arrive at once or in arbitrary pieces, and never claims more bytes than it
//!   was given;
//! - a parsed message written back parses to the same message;
//! - a parsed SDP written back parses to the same session description.
//!
//! Input layout: byte 0 picks the mode (0: RTSP stream, chunk sizes from byte 1; 1:
//! Transport header; 2: SDP; 3: WWW-Authenticate and URL), the rest is the input.

#![no_main]

use freshet::media::rtsp::{
    self, Challenge, Credentials, Message, RtspError, Transport, authorization, split_credentials,
};
use freshet::media::sdp::SessionDescription;
use libfuzzer_sys::fuzz_target;

/// Every message of `data` read at once: the messages and how reading ended.
fn read_all(data: &[u8]) -> (Vec<Message>, Result<usize, RtspError>) {
    let mut messages = Vec::new();
    let mut pos = 0;
    loop {
        match rtsp::parse_message(&data[pos..]) {
            Ok(Some((message, used))) => {
                assert!(used > 0 && used <= data.len() - pos);
                messages.push(message);
                pos += used;
            }
            Ok(None) => return (messages, Ok(data.len() - pos)),
            Err(e) => return (messages, Err(e)),
        }
    }
}

/// The same bytes fed in pieces to a growing buffer.
fn read_in_pieces(data: &[u8], sizes: u8) -> (Vec<Message>, Result<usize, RtspError>) {
    let mut messages = Vec::new();
    let mut buffer: Vec<u8> = Vec::new();
    let mut fed = 0;
    let mut step = 0usize;
    while fed < data.len() {
        step += 1;
        let piece = 1 + (usize::from(sizes).wrapping_mul(step) % 97);
        let end = (fed + piece).min(data.len());
        buffer.extend_from_slice(&data[fed..end]);
        fed = end;
        loop {
            match rtsp::parse_message(&buffer) {
                Ok(Some((message, used))) => {
                    assert!(used > 0 && used <= buffer.len());
                    messages.push(message);
                    buffer.drain(..used);
                }
                Ok(None) => break,
                Err(e) => return (messages, Err(e)),
            }
        }
    }
    (messages, Ok(buffer.len()))
}

fn check_message(message: &Message) {
    match message {
        Message::Request(request) => {
            let mut again = rtsp::parse_request(&request.to_bytes())
                .expect("a written request parses")
                .expect("a written request is complete")
                .0;
            let mut original = request.clone();
            original.headers.remove("Content-Length");
            again.headers.remove("Content-Length");
            assert_eq!(again, original);
            if let Some(transport) = request.headers.get("Transport") {
                check_transport(transport);
            }
            if !request.body.is_empty() {
                check_sdp(&request.body);
            }
        }
        Message::Response(response) => {
            for value in response.headers.get_all("WWW-Authenticate") {
                check_challenge(value, "rtsp://cam/");
            }
            if !response.body.is_empty() {
                check_sdp(&response.body);
            }
        }
        Message::Interleaved { payload, .. } => assert!(payload.len() <= 65535),
    }
}

fn check_transport(text: &str) {
    if let Ok(list) = Transport::parse_list(text) {
        assert!(!list.is_empty());
        for transport in list {
            let formatted = transport.to_string();
            let _ = Transport::parse(&formatted);
            let _ = transport.is_record();
        }
    }
}

fn check_sdp(data: &[u8]) {
    if let Ok(sdp) = SessionDescription::parse(data) {
        let written = sdp.write();
        let again = SessionDescription::parse(written.as_bytes()).expect("written SDP parses");
        assert_eq!(again, sdp, "SDP round trip\n{written}");
        for media in &sdp.media {
            let _ = media.control_url("rtsp://cam/stream");
        }
    }
}

fn check_challenge(text: &str, url: &str) {
    let (stripped, credentials) = split_credentials(url);
    let credentials = credentials.unwrap_or(Credentials {
        username: "admin".into(),
        password: "secret".into(),
    });
    if let Ok(challenge) = Challenge::parse(text) {
        if let Ok(header) = authorization(&challenge, &credentials, "DESCRIBE", &stripped, 1, "c") {
            assert!(
                !header.contains(['\r', '\n']),
                "header injection: {header:?}"
            );
        }
    }
    let _ = Challenge::choose(text.split('\n'));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => {
            let Some((&sizes, stream)) = rest.split_first() else {
                return;
            };
            let whole = read_all(stream);
            let pieces = read_in_pieces(stream, sizes);
            assert_eq!(whole.0, pieces.0, "messages depend on how bytes arrive");
            assert_eq!(whole.1, pieces.1, "outcome depends on how bytes arrive");
            for message in &whole.0 {
                check_message(message);
            }
        }
        1 => check_transport(&String::from_utf8_lossy(rest)),
        2 => check_sdp(rest),
        _ => {
            let text = String::from_utf8_lossy(rest);
            let (challenge, url) = text
                .split_once('\u{0}')
                .unwrap_or((&text, "rtsp://a:b@cam/"));
            check_challenge(challenge, url);
        }
    }
});
