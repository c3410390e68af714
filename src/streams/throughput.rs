//! Per-shard throughput limits (Kinesis provisioned shards: 1 MiB/s and 1,000 records/s
//! in; 2 MiB/s and 5 GetRecords calls/s out). Writes and read calls are counted in
//! fixed one-second windows, as the per-second quotas are stated; read bytes are a
//! token bucket so one large read delays the following ones. Only consulted when the
//! server runs with shard throughput limits on.

use std::collections::HashMap;
use std::sync::Mutex;

const WRITE_BYTES_PER_SEC: u64 = 1_048_576;
const WRITE_RECORDS_PER_SEC: u64 = 1_000;
const READ_BYTES_PER_SEC: f64 = 2_097_152.0;
const READ_CALLS_PER_SEC: u32 = 5;

#[derive(Debug, Clone, Copy, Default)]
struct ShardUsage {
    /// The one-second window (epoch seconds) the counters below belong to.
    window: i64,
    write_bytes: u64,
    write_records: u64,
    read_calls: u32,
    /// Read-byte allowance (token bucket, may go negative after a large read).
    read_tokens: f64,
    read_at_ms: i64,
}

impl ShardUsage {
    fn new(now: i64) -> Self {
        Self {
            window: now.div_euclid(1000),
            read_tokens: READ_BYTES_PER_SEC,
            read_at_ms: now,
            ..Self::default()
        }
    }

    fn roll(&mut self, now: i64) {
        let window = now.div_euclid(1000);
        if window != self.window {
            self.window = window;
            self.write_bytes = 0;
            self.write_records = 0;
            self.read_calls = 0;
        }
        let elapsed = (now - self.read_at_ms).max(0) as f64 / 1000.0;
        self.read_tokens =
            (self.read_tokens + elapsed * READ_BYTES_PER_SEC).min(READ_BYTES_PER_SEC);
        self.read_at_ms = now;
    }
}

/// Usage counters for every shard of one stream.
#[derive(Debug, Default)]
pub struct ShardLimiter {
    shards: Mutex<HashMap<u32, ShardUsage>>,
}

impl ShardLimiter {
    fn with<T>(&self, ordinal: u32, now: i64, f: impl FnOnce(&mut ShardUsage) -> T) -> T {
        let mut shards = self.shards.lock().unwrap();
        let usage = shards
            .entry(ordinal)
            .or_insert_with(|| ShardUsage::new(now));
        usage.roll(now);
        f(usage)
    }

    /// Admits one record of `bytes` into shard `ordinal`, or refuses it.
    pub fn admit_write(&self, ordinal: u32, bytes: u64, now: i64) -> bool {
        self.with(ordinal, now, |u| {
            if u.write_records >= WRITE_RECORDS_PER_SEC
                || u.write_bytes + bytes > WRITE_BYTES_PER_SEC
            {
                return false;
            }
            u.write_records += 1;
            u.write_bytes += bytes;
            true
        })
    }

    /// Admits one GetRecords call on shard `ordinal` (refused after 5 calls in a
    /// second, or while an earlier large read is still being paid for).
    pub fn admit_read_call(&self, ordinal: u32, now: i64) -> bool {
        self.with(ordinal, now, |u| {
            if u.read_calls >= READ_CALLS_PER_SEC || u.read_tokens <= 0.0 {
                return false;
            }
            u.read_calls += 1;
            true
        })
    }

    /// Charges bytes returned by a read.
    pub fn charge_read(&self, ordinal: u32, bytes: u64, now: i64) {
        self.with(ordinal, now, |u| u.read_tokens -= bytes as f64);
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
        // Still the same second: nothing more.
        assert!(!l.admit_write(0, 10, 1999));
        // Another shard has its own allowance.
        assert!(l.admit_write(1, 10, 1000));
        // The next second starts afresh.
        let admitted = (0..1500).filter(|_| l.admit_write(0, 10, 2000)).count();
        assert_eq!(admitted, 1000);
        // Bytes: 1 MiB per second.
        assert!(l.admit_write(2, 1_048_576, 0));
        assert!(!l.admit_write(2, 1, 0));
    }

    #[test]
    fn read_limits() {
        let l = ShardLimiter::default();
        let admitted = (0..10).filter(|_| l.admit_read_call(0, 0)).count();
        assert_eq!(admitted, 5);
        assert!(l.admit_read_call(0, 1000));
        l.charge_read(0, 10_000_000, 1000);
        assert!(!l.admit_read_call(0, 2000));
    }
}
