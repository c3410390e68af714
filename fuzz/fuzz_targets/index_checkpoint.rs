//! Fuzzes the fragment index checkpoint reader (`freshet::video::frozen`) on arbitrary
//! bytes, and the index built on one (`FragmentIndex::from_frozen`). Nothing may
//! panic, and a checkpoint that parses answers consistently: every row is found at its
//! own position, every producer-order key names a row with that producer start, and
//! the index lists exactly the checkpoint's rows in both orders.
//!
//! Input layout: byte 0 picks the mode (0: the rest as a checkpoint file as it is; 1:
//! the rest as rows of 29 bytes (offset step, server step, producer, duration) encoded
//! into a valid checkpoint first, so that the queries run on well-formed ones too).

#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use freshet::video::frozen::Frozen;
use freshet::video::index::{FragmentIndex, IndexEntry, TimeBase};
use libfuzzer_sys::fuzz_target;

fn le(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..b.len().min(8)].copy_from_slice(&b[..b.len().min(8)]);
    u64::from_le_bytes(w)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 {
        Bytes::copy_from_slice(rest)
    } else {
        let mut rows = Vec::new();
        let (mut offset, mut server) = (0u64, 0i64);
        for c in rest.chunks_exact(29) {
            offset += 1 + u64::from(c[0] % 4);
            server += i64::from(c[1]);
            rows.push(IndexEntry {
                offset,
                server_ms: server,
                producer_ms: le(&c[2..10]) as i64 >> 8,
                duration_ms: le(&c[10..12]),
                size: le(&c[12..16]),
                frame_count: c[16] as u32,
                header_id: u64::from(c[17] % 3),
                run_start: offset,
            });
        }
        let idx = FragmentIndex::from_rows(rows);
        let entries: Vec<IndexEntry> = idx.entries().collect();
        let keys: Vec<(i64, u64)> = idx.producer_keys().collect();
        Bytes::from(Frozen::encode(0, idx.max_duration_ms(), &entries, &keys))
    };
    let Ok(f) = Frozen::parse(bytes) else {
        assert!(mode % 2 == 0, "a checkpoint as written must parse");
        return;
    };
    for i in 0..f.len() {
        assert_eq!(f.position(f.offset(i), 0, f.len()), Ok(i));
    }
    let f = Arc::new(f);
    let idx = FragmentIndex::from_frozen(f.clone(), Vec::new());
    let entries: Vec<IndexEntry> = idx.entries().collect();
    assert_eq!(entries.len(), f.len());
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(*e, f.entry(i));
    }
    let keys: Vec<(i64, u64)> = idx.producer_keys().collect();
    assert_eq!(keys.len(), f.len());
    for (start, offset) in keys {
        let e = idx.get(offset);
        assert_eq!(e.map(|e| e.producer_ms), Some(start));
    }
    let (listed, _) = idx.list(TimeBase::Producer, None, None, usize::MAX);
    assert_eq!(listed.len(), f.len());
});
