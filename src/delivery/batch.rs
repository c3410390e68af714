//! Buffering by BufferingHints (pure: the caller passes every time in).
//!
//! As Amazon Data Firehose: a batch is delivered when it holds `SizeInMBs` or when
//! `IntervalInSeconds` have passed since its *first* record arrived, whichever comes
//! first; a clean shutdown delivers every partial batch. Batches cover consecutive,
//! disjoint offset ranges of the delivery stream's log, in order.

/// The buffering hints of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    pub size_bytes: u64,
    pub interval_ms: i64,
}

impl Hints {
    pub fn from_aws(size_mbs: u32, interval_secs: u32) -> Self {
        Self {
            size_bytes: u64::from(size_mbs.max(1)) * 1024 * 1024,
            interval_ms: i64::from(interval_secs) * 1000,
        }
    }
}

/// The records of an open batch, described by their offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first_offset: u64,
    pub last_offset: u64,
    /// Arrival of the first (oldest) record, ms since the epoch.
    pub first_arrival_ms: i64,
    pub bytes: u64,
    pub records: u64,
}

/// Gathers records into batches.
#[derive(Debug, Clone)]
pub struct Batcher {
    hints: Hints,
    open: Option<Span>,
}

impl Batcher {
    pub fn new(hints: Hints) -> Self {
        Self { hints, open: None }
    }

    /// Replaces the hints (an UpdateDestination); they apply to the open batch too.
    pub fn set_hints(&mut self, hints: Hints) {
        self.hints = hints;
    }

    /// Adds the record at `offset` (the next after the last one added). Returns true
    /// when the batch is full and must be delivered before more are added.
    pub fn push(&mut self, offset: u64, arrival_ms: i64, len: usize) -> bool {
        let span = self.open.get_or_insert(Span {
            first_offset: offset,
            last_offset: offset,
            first_arrival_ms: arrival_ms,
            bytes: 0,
            records: 0,
        });
        debug_assert!(span.records == 0 || offset == span.last_offset + 1);
        span.last_offset = offset;
        span.bytes += len as u64;
        span.records += 1;
        self.is_full()
    }

    pub fn is_full(&self) -> bool {
        self.open.is_some_and(|s| s.bytes >= self.hints.size_bytes)
    }

    /// When the open batch is due by its interval (`None`: no open batch).
    pub fn due_at_ms(&self) -> Option<i64> {
        self.open
            .map(|s| s.first_arrival_ms.saturating_add(self.hints.interval_ms))
    }

    /// Whether the open batch must be delivered now.
    pub fn is_due(&self, now_ms: i64) -> bool {
        self.is_full() || self.due_at_ms().is_some_and(|due| now_ms >= due)
    }

    pub fn open(&self) -> Option<Span> {
        self.open
    }

    /// Closes the open batch (to deliver it).
    pub fn take(&mut self) -> Option<Span> {
        self.open.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn size_or_interval_whichever_first() {
        let hints = Hints::from_aws(1, 2);
        let mut b = Batcher::new(hints);
        assert!(!b.is_due(0));
        assert!(!b.push(0, 1_000, 600 * 1024));
        assert_eq!(b.due_at_ms(), Some(3_000));
        assert!(!b.is_due(2_999));
        assert!(b.is_due(3_000));
        // The interval counts from the first record, not the last.
        assert!(!b.push(1, 2_900, 100));
        assert!(b.is_due(3_000));
        assert!(b.push(2, 2_950, 500 * 1024));
        let span = b.take().unwrap();
        assert_eq!(
            (span.first_offset, span.last_offset, span.records),
            (0, 2, 3)
        );
        assert_eq!(span.first_arrival_ms, 1_000);
        assert!(b.open().is_none() && !b.is_due(i64::MAX));
    }

    #[test]
    fn new_hints_apply_to_the_open_batch() {
        let mut b = Batcher::new(Hints::from_aws(5, 300));
        b.push(0, 1_000, 10);
        assert!(!b.is_due(60_000));
        b.set_hints(Hints::from_aws(5, 1));
        assert_eq!(b.due_at_ms(), Some(2_000));
        assert!(b.is_due(2_000));
    }

    proptest! {
        /// Whatever the records and the times the worker looks, batches are consecutive
        /// and disjoint, cover every record once, never go past the size hint by more
        /// than their last record, and none is kept open past its interval.
        #[test]
        fn batches_partition_the_log(
            records in proptest::collection::vec((0usize..400_000, 0i64..1500, any::<bool>()), 1..300),
            size_mbs in 1u32..3,
            interval in 0u32..3,
        ) {
            let hints = Hints::from_aws(size_mbs, interval);
            let mut b = Batcher::new(hints);
            let mut now = 0i64;
            let mut batches: Vec<Span> = Vec::new();
            let mut last_len = Vec::new();
            for (offset, (len, gap, look)) in records.iter().enumerate() {
                now += gap;
                if *look && b.is_due(now) {
                    batches.push(b.take().unwrap());
                }
                if b.push(offset as u64, now, *len) {
                    batches.push(b.take().unwrap());
                }
                last_len.push(*len as u64);
                if let Some(due) = b.due_at_ms() {
                    prop_assert!(due <= now + hints.interval_ms);
                }
            }
            if let Some(s) = b.take() {
                batches.push(s);
            }
            let mut next = 0u64;
            for s in &batches {
                prop_assert_eq!(s.first_offset, next);
                prop_assert!(s.last_offset >= s.first_offset);
                prop_assert_eq!(s.records, s.last_offset - s.first_offset + 1);
                let total: u64 = last_len[s.first_offset as usize..=s.last_offset as usize].iter().sum();
                prop_assert_eq!(total, s.bytes);
                prop_assert!(s.bytes - last_len[s.last_offset as usize] < hints.size_bytes);
                next = s.last_offset + 1;
            }
            prop_assert_eq!(next, records.len() as u64);
        }
    }
}
