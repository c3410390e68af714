//! Shard iterators: opaque, tamper-evident, expiring positions in a shard.
//!
//! An iterator is base64 of `version | stream epoch | issued ms | offset | shard ordinal
//! | stream name` followed by a truncated HMAC-SHA256 under a per-server secret kept in
//! the catalog. A forged or damaged iterator fails the MAC check and is rejected as
//! `InvalidArgumentException`, as AWS does; an old one is rejected as
//! `ExpiredIteratorException` (5 minutes by default, like AWS).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const VERSION: u8 = 1;
const MAC_LEN: usize = 16;

/// The position an iterator stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IteratorPosition {
    pub stream_name: String,
    pub stream_epoch: u64,
    pub shard_ordinal: u32,
    pub offset: u64,
    pub issued_ms: i64,
}

/// Signs and checks iterators with the server's secret.
#[derive(Clone)]
pub struct IteratorCodec {
    key: [u8; 32],
}

impl IteratorCodec {
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, body: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("any key length");
        mac.update(body);
        let full = mac.finalize().into_bytes();
        full[..MAC_LEN].try_into().unwrap()
    }

    pub fn encode(&self, pos: &IteratorPosition) -> String {
        let mut body = Vec::with_capacity(32 + pos.stream_name.len() + MAC_LEN);
        body.push(VERSION);
        body.extend_from_slice(&pos.stream_epoch.to_be_bytes());
        body.extend_from_slice(&pos.issued_ms.to_be_bytes());
        body.extend_from_slice(&pos.offset.to_be_bytes());
        body.extend_from_slice(&pos.shard_ordinal.to_be_bytes());
        body.extend_from_slice(pos.stream_name.as_bytes());
        let mac = self.mac(&body);
        body.extend_from_slice(&mac);
        STANDARD.encode(body)
    }

    /// Decodes and authenticates an iterator; `None` if it is not one of ours.
    pub fn decode(&self, text: &str) -> Option<IteratorPosition> {
        let raw = STANDARD.decode(text).ok()?;
        if raw.len() < 29 + MAC_LEN + 1 || raw[0] != VERSION {
            return None;
        }
        let (body, mac) = raw.split_at(raw.len() - MAC_LEN);
        let expected = self.mac(body);
        // Constant-time comparison.
        if expected
            .iter()
            .zip(mac)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
        {
            return None;
        }
        Some(IteratorPosition {
            stream_epoch: u64::from_be_bytes(body[1..9].try_into().ok()?),
            issued_ms: i64::from_be_bytes(body[9..17].try_into().ok()?),
            offset: u64::from_be_bytes(body[17..25].try_into().ok()?),
            shard_ordinal: u32::from_be_bytes(body[25..29].try_into().ok()?),
            stream_name: String::from_utf8(body[29..].to_vec()).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let codec = IteratorCodec::new([7; 32]);
        let pos = IteratorPosition {
            stream_name: "my.stream-1".into(),
            stream_epoch: 1_700_000_000_000,
            shard_ordinal: 12,
            offset: 123_456,
            issued_ms: 1_700_000_100_000,
        };
        let text = codec.encode(&pos);
        assert!(text.len() <= 512);
        assert_eq!(codec.decode(&text), Some(pos.clone()));
        let long = IteratorPosition {
            stream_name: "x".repeat(128),
            ..pos.clone()
        };
        assert!(codec.encode(&long).len() <= 512);
        // Any changed byte is rejected.
        let raw = STANDARD.decode(&text).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            assert_eq!(codec.decode(&STANDARD.encode(&bad)), None, "byte {i}");
        }
        assert_eq!(IteratorCodec::new([8; 32]).decode(&text), None);
        assert_eq!(codec.decode("not base64!"), None);
        assert_eq!(codec.decode(""), None);
    }
}
