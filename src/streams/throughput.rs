//! Per-shard throughput limits (Kinesis provisioned shards: 1 MB/s and 1,000 records/s
//! in; 2 MB/s and 5 GetRecords calls/s out), as token buckets holding one second of
//! allowance. Only consulted when the server runs with shard throughput limits on.

use std::collections::HashMap;
use std::sync::Mutex;

const WRITE_BYTES_PER_SEC: f64 = 1_048_576.0;
const WRITE_RECORDS_PER_SEC: f64 = 1_000.0;
const READ_BYTES_PER_SEC: f64 = 2_097_152.0;
const READ_CALLS_PER_SEC: f64 = 5.0;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

impl Bucket {
    fn full(rate: f64, now: i64) -> Self {
        Self {
            tokens: rate,
            at_ms: now,
        }
    }

    fn refill(&mut self, rate: f64, now: i64) {
        let elapsed = (now - self.at_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at_ms = now;
    }
}

#[derive(Debug, Clone, Copy)]
struct ShardBuckets {
    write_bytes: Bucket,
    write_records: Bucket,
    read_bytes: Bucket,
    read_calls: Bucket,
}

impl ShardBuckets {
    fn new(now: i64) -> Self {
        Self {
            write_bytes: Bucket::full(WRITE_BYTES_PER_SEC, now),
            write_records: Bucket::full(WRITE_RECORDS_PER_SEC, now),
            read_bytes: Bucket::full(READ_BYTES_PER_SEC, now),
            read_calls: Bucket::full(READ_CALLS_PER_SEC, now),
        }
    }
}

/// Token buckets for every shard of one stream.
#[derive(Debug, Default)]
pub struct ShardLimiter {
    shards: Mutex<HashMap<u32, ShardBuckets>>,
}

impl ShardLimiter {
    /// Admits one record of `bytes` into shard `ordinal`, or refuses it.
    pub fn admit_write(&self, ordinal: u32, bytes: u64, now: i64) -> bool {
        let mut shards = self.shards.lock().unwrap();
        let b = shards
            .entry(ordinal)
            .or_insert_with(|| ShardBuckets::new(now));
        b.write_bytes.refill(WRITE_BYTES_PER_SEC, now);
        b.write_records.refill(WRITE_RECORDS_PER_SEC, now);
        if b.write_records.tokens < 1.0 || b.write_bytes.tokens < bytes as f64 {
            return false;
        }
        b.write_records.tokens -= 1.0;
        b.write_bytes.tokens -= bytes as f64;
        true
    }

    /// Admits one GetRecords call on shard `ordinal` (refused after 5 calls in a
    /// second, or while an earlier large read is still being paid for).
    pub fn admit_read_call(&self, ordinal: u32, now: i64) -> bool {
        let mut shards = self.shards.lock().unwrap();
        let b = shards
            .entry(ordinal)
            .or_insert_with(|| ShardBuckets::new(now));
        b.read_calls.refill(READ_CALLS_PER_SEC, now);
        b.read_bytes.refill(READ_BYTES_PER_SEC, now);
        if b.read_calls.tokens < 1.0 || b.read_bytes.tokens <= 0.0 {
            return false;
        }
        b.read_calls.tokens -= 1.0;
        true
    }

    /// Charges bytes returned by a read (may go negative: the next calls wait).
    pub fn charge_read(&self, ordinal: u32, bytes: u64, now: i64) {
        let mut shards = self.shards.lock().unwrap();
        let b = shards
            .entry(ordinal)
            .or_insert_with(|| ShardBuckets::new(now));
        b.read_bytes.tokens -= bytes as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_limits() {
        let l = ShardLimiter::default();
        let admitted = (0..1500).filter(|_| l.admit_write(0, 10, 1000)).count();
        assert_eq!(admitted, 1000);
        // Another shard has its own allowance.
        assert!(l.admit_write(1, 10, 1000));
        // Half a second later, 500 more.
        let admitted = (0..1500).filter(|_| l.admit_write(0, 10, 1500)).count();
        assert_eq!(admitted, 500);
        // Bytes: 1 MiB per second.
        assert!(l.admit_write(2, 1_048_576, 0));
        assert!(!l.admit_write(2, 1, 0));
    }

    #[test]
    fn read_limits() {
        let l = ShardLimiter::default();
        let admitted = (0..10).filter(|_| l.admit_read_call(0, 0)).count();
        assert_eq!(admitted, 5);
        assert!(l.admit_read_call(0, 200));
        l.charge_read(0, 10_000_000, 200);
        assert!(!l.admit_read_call(0, 1000));
    }
}
