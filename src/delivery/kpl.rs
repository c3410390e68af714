//! De-aggregation of records written by the Kinesis Producer Library (pure: no I/O).
//!
//! The KPL packs many user records into one Kinesis record (the KPL's
//! "aggregation format", `aggregation-format.md` in awslabs/amazon-kinesis-producer):
//!
//! ```text
//! magic F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf (16 bytes)
//!
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! ```
//!
//! As the KCL does, a record that lacks the magic, whose digest does not match, or whose
//! protobuf does not parse is not an aggregate and is passed on as it is. Firehose
//! de-aggregates KPL records read from a data stream before any processing; so does
//! Freshet's data-stream source. Fuzzed (`fuzz_targets/kpl_deaggregate.rs`): no input
//! panics, and the user records always lie inside the input.

use bytes::Bytes;
use md5::Digest;

/// The first four bytes of every KPL aggregate.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

/// One user record of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub partition_key: String,
    pub data: Bytes,
}

/// The user records of `record` when it is a KPL aggregate; `None` when it is not.
pub fn deaggregate(record: &Bytes) -> Option<Vec<UserRecord>> {
    if record.len() < MAGIC.len() + DIGEST_LEN || record[..4] != MAGIC {
        return None;
    }
    let body = &record[4..record.len() - DIGEST_LEN];
    let digest = &record[record.len() - DIGEST_LEN..];
    let computed: [u8; 16] = md5::Md5::digest(body).into();
    if computed[..] != digest[..] {
        return None;
    }
    let base = 4;
    let mut keys: Vec<String> = Vec::new();
    // (partition key index, data range in `record`)
    let mut raw: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
    let mut r = Reader { buf: body, at: 0 };
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 2) => keys.push(String::from_utf8(r.bytes()?.to_vec()).ok()?),
            (3, 2) => {
                let (start, len) = r.len_delimited()?;
                let inner = &body[start..start + len];
                let (index, data) = parse_record(inner)?;
                let data = base + start + data.start..base + start + data.end;
                raw.push((index, data));
            }
            (_, w) => r.skip(w)?,
        }
    }
    let mut out = Vec::with_capacity(raw.len());
    for (index, data) in raw {
        let key = keys.get(usize::try_from(index).ok()?)?;
        out.push(UserRecord {
            partition_key: key.clone(),
            data: record.slice(data),
        });
    }
    Some(out)
}

/// A `Record` message: its partition key index and the range of its data in `buf`.
fn parse_record(buf: &[u8]) -> Option<(u64, std::ops::Range<usize>)> {
    let mut r = Reader { buf, at: 0 };
    let mut index = None;
    let mut data = None;
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 0) => index = Some(r.varint()?),
            (3, 2) => {
                let (start, len) = r.len_delimited()?;
                data = Some(start..start + len);
            }
            (_, w) => r.skip(w)?,
        }
    }
    Some((index?, data?))
}

/// A protobuf wire-format reader over a byte slice; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn done(&self) -> bool {
        self.at >= self.buf.len()
    }

    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.at)?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    /// A field key: (field number, wire type).
    fn key(&mut self) -> Option<(u64, u8)> {
        let k = self.varint()?;
        Some((k >> 3, (k & 7) as u8))
    }

    /// A length-delimited field: its start in the buffer and its length.
    fn len_delimited(&mut self) -> Option<(usize, usize)> {
        let len = usize::try_from(self.varint()?).ok()?;
        let start = self.at;
        let end = start.checked_add(len)?;
        if end > self.buf.len() {
            return None;
        }
        self.at = end;
        Some((start, len))
    }

    fn bytes(&mut self) -> Option<&[u8]> {
        let (start, len) = self.len_delimited()?;
        Some(&self.buf[start..start + len])
    }

    fn skip(&mut self, wire: u8) -> Option<()> {
        match wire {
            0 => {
                self.varint()?;
            }
            1 => self.advance(8)?,
            2 => {
                self.len_delimited()?;
            }
            5 => self.advance(4)?,
            _ => return None,
        }
        Some(())
    }

    fn advance(&mut self, n: usize) -> Option<()> {
        let end = self.at.checked_add(n)?;
        if end > self.buf.len() {
            return None;
        }
        self.at = end;
        Some(())
    }
}

/// Builds a KPL aggregate of `(partition key, data)` records (for tests and the bench).
pub fn aggregate(records: &[(&str, &[u8])]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
        varint(out, number << 3 | 2);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    let mut keys: Vec<&str> = Vec::new();
    let mut body = Vec::new();
    for (key, _) in records {
        if !keys.contains(key) {
            keys.push(key);
            field(&mut body, 1, key.as_bytes());
        }
    }
    for (key, data) in records {
        let index = keys.iter().position(|k| k == key).unwrap_or(0);
        let mut rec = Vec::new();
        varint(&mut rec, 1 << 3);
        varint(&mut rec, index as u64);
        field(&mut rec, 3, data);
        field(&mut body, 3, &rec);
    }
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&md5::Md5::digest(&body));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_round_trip() {
        let agg = Bytes::from(aggregate(&[("k1", b"one"), ("k2", b""), ("k1", b"three")]));
        let recs = deaggregate(&agg).expect("an aggregate");
        let got: Vec<(&str, &[u8])> = recs
            .iter()
            .map(|r| (r.partition_key.as_str(), &r.data[..]))
            .collect();
        assert_eq!(
            got,
            vec![("k1", &b"one"[..]), ("k2", &b""[..]), ("k1", &b"three"[..])]
        );
    }

    #[test]
    fn plain_and_damaged_records_are_not_aggregates() {
        assert_eq!(deaggregate(&Bytes::from_static(b"{\"a\":1}")), None);
        let mut agg = aggregate(&[("k", b"data")]);
        let n = agg.len();
        agg[n - 20] ^= 1; // the protobuf, so the digest no longer matches
        assert_eq!(deaggregate(&Bytes::from(agg)), None);
        // The magic and a matching digest over a protobuf that does not parse.
        let body = [0x1a, 0x7f, 0x01];
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&body);
        bad.extend_from_slice(&md5::Md5::digest(body));
        assert_eq!(deaggregate(&Bytes::from(bad)), None);
        // A record whose partition key index is out of the table.
        let mut rec = vec![0x08, 0x05, 0x1a, 0x01, b'x'];
        let mut body = vec![0x0a, 0x01, b'k', 0x1a, rec.len() as u8];
        body.append(&mut rec);
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&body);
        bad.extend_from_slice(&md5::Md5::digest(&body));
        assert_eq!(deaggregate(&Bytes::from(bad)), None);
    }
}
