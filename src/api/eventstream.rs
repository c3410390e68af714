//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`), as
//! SubscribeToShard answers with it (AWS SDKs' `aws-smithy-eventstream`,
//! botocore's `eventstream.py`).
//!
//! A message is:
//!
//! ```text
//! +-------------+---------------+-------------+----------+---------+-------------+
//! | total len   | headers len   | prelude CRC | headers  | payload | message CRC |
//! | u32 BE      | u32 BE        | u32 BE      |          |         | u32 BE      |
//! +-------------+---------------+-------------+----------+---------+-------------+
//! ```
//!
//! CRCs are CRC-32 (IEEE): the prelude CRC over the first 8 bytes, the message CRC over
//! everything before it. A header is a name length (u8), the name, a type byte and
//! the value; we only write strings (type 7: u16 BE length, UTF-8 bytes). Pure: no I/O.

/// Bytes of the prelude (two lengths and their CRC) plus the trailing CRC.
const OVERHEAD: usize = 16;
/// Header value type: string.
const STRING: u8 = 7;

/// One message with string headers. Names are at most 255 bytes and values at most
/// 65,535 (ours are constants and AWS error names); longer ones are cut to fit, so
/// the frame always stays well-formed.
pub fn message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::with_capacity(128);
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(u8::MAX as usize)];
        let value = &value.as_bytes()[..value.len().min(u16::MAX as usize)];
        head.push(name.len() as u8);
        head.extend_from_slice(name);
        head.push(STRING);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value);
    }
    let total = OVERHEAD + head.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// An event (`:message-type event`) with a JSON payload.
pub fn event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    message(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// A modelled error (`:message-type exception`) with AWS's JSON body.
pub fn exception(exception_type: &str, message_text: &str) -> Vec<u8> {
    let body = serde_json::json!({ "message": message_text }).to_string();
    message(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        body.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::read_message_from;
    use aws_smithy_types::event_stream::HeaderValue;

    fn header<'a>(m: &'a aws_smithy_types::event_stream::Message, name: &str) -> &'a str {
        match m.headers().iter().find(|h| h.name().as_str() == name) {
            Some(h) => match h.value() {
                HeaderValue::String(s) => s.as_str(),
                other => panic!("{name}: not a string: {other:?}"),
            },
            None => panic!("no header {name}"),
        }
    }

    #[test]
    fn the_sdk_decodes_our_events() {
        let frame = event("SubscribeToShardEvent", br#"{"Records":[]}"#);
        let mut buf = &frame[..];
        let m = read_message_from(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(header(&m, ":event-type"), "SubscribeToShardEvent");
        assert_eq!(header(&m, ":message-type"), "event");
        assert_eq!(header(&m, ":content-type"), "application/json");
        assert_eq!(&m.payload()[..], br#"{"Records":[]}"#);
    }

    #[test]
    fn the_sdk_decodes_our_exceptions() {
        let frame = exception("ResourceNotFoundException", "gone");
        let m = read_message_from(&mut &frame[..]).unwrap();
        assert_eq!(header(&m, ":exception-type"), "ResourceNotFoundException");
        assert_eq!(header(&m, ":message-type"), "exception");
        assert_eq!(&m.payload()[..], br#"{"message":"gone"}"#);
    }

    #[test]
    fn lengths_and_crcs() {
        let frame = message(&[], b"");
        // The empty message: 16 bytes, known CRCs (botocore's test vector).
        assert_eq!(
            frame,
            [
                0, 0, 0, 16, 0, 0, 0, 0, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff
            ]
        );
        let mut corrupt = event("initial-response", b"{}");
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(read_message_from(&mut &corrupt[..]).is_err());
    }

    #[test]
    fn oversized_headers_are_cut_not_malformed() {
        let long = "x".repeat(70_000);
        let frame = message(&[(":event-type", &long)], b"p");
        let m = read_message_from(&mut &frame[..]).unwrap();
        assert_eq!(header(&m, ":event-type").len(), u16::MAX as usize);
    }
}
