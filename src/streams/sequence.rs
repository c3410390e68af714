//! Sequence numbers: decimal digit strings that increase within a shard.
//!
//! A sequence number is 56 digits: `4` | stream epoch (16 digits: the stream's creation
//! time in ms, so numbers from a deleted and re-created stream never match) | shard
//! ordinal (10 digits) | log offset (20 digits) | `000000009`. The shard ordinal is more
//! significant than the offset, so every record of a child shard sorts after every
//! record of its parents, as in Kinesis.

/// What a sequence number encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceNumber {
    pub stream_epoch: u64,
    pub shard_ordinal: u32,
    pub offset: u64,
}

const SUFFIX: &str = "000000009";

/// Writes `n` right-aligned into `slot` as decimal digits (the slot is pre-zeroed and
/// wide enough).
fn put_digits(slot: &mut [u8], mut n: u64) {
    for b in slot.iter_mut().rev() {
        if n == 0 {
            break;
        }
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

impl SequenceNumber {
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(56);
        self.write_to(&mut out);
        out
    }

    /// Appends the 56 digits to `out` (hot path: no formatting machinery).
    pub fn write_to(&self, out: &mut String) {
        let mut buf = [b'0'; 56];
        buf[0] = b'4';
        put_digits(&mut buf[1..17], self.stream_epoch % 10_000_000_000_000_000);
        put_digits(&mut buf[17..27], self.shard_ordinal as u64);
        put_digits(&mut buf[27..47], self.offset);
        buf[47..].copy_from_slice(SUFFIX.as_bytes());
        // Only ASCII digits were written.
        out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
    }

    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 56
            || !text.bytes().all(|b| b.is_ascii_digit())
            || !text.starts_with('4')
            || !text.ends_with(SUFFIX)
        {
            return None;
        }
        Some(Self {
            stream_epoch: text[1..17].parse().ok()?,
            shard_ordinal: text[17..27].parse().ok()?,
            offset: text[27..47].parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_ordering() {
        let a = SequenceNumber {
            stream_epoch: 1_700_000_000_123,
            shard_ordinal: 3,
            offset: 99,
        };
        let b = SequenceNumber { offset: 100, ..a };
        let c = SequenceNumber {
            shard_ordinal: 4,
            offset: 0,
            ..a
        };
        assert_eq!(SequenceNumber::parse(&a.encode()), Some(a));
        assert_eq!(a.encode().len(), 56);
        // Same length, so string order is numeric order.
        assert!(a.encode() < b.encode());
        assert!(b.encode() < c.encode());
        assert_eq!(SequenceNumber::parse("123"), None);
        assert_eq!(SequenceNumber::parse(&a.encode().replace('4', "x")), None);
    }
}
