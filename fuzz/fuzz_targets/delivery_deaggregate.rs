//! Fuzzes the de-aggregation of delivery-stream records: KPL aggregates
//! (`freshet::delivery::kpl::deaggregate`) and Firehose's RecordDeAggregation of JSON
//! and delimited records (`freshet::delivery::processing::deaggregate`). Nothing may
//! panic, and:
//!
//! - every user record of an aggregate lies inside the input, and re-aggregating the
//!   records gives an aggregate that de-aggregates to the same records;
//! - JSON sub-records are each one JSON object, in input order, never overlapping;
//! - delimited sub-records are never empty and never contain the delimiter.
//!
//! Input layout: byte 0 picks the mode (0: KPL as given; 1: the rest wrapped as a KPL
//! aggregate with a matching digest, so that the protobuf reader is reached; 2: JSON;
//! 3: delimited, the delimiter's length (1-4) from byte 1), the rest is the record.

#![no_main]

use bytes::Bytes;
use freshet::delivery::kpl;
use freshet::delivery::processing::{SubRecords, deaggregate};
use libfuzzer_sys::fuzz_target;
use md5::Digest;

fn check_kpl(record: &Bytes) {
    let Some(users) = kpl::deaggregate(record) else {
        return;
    };
    let total: usize = users.iter().map(|u| u.data.len()).sum();
    assert!(total <= record.len());
    let again: Vec<(&str, &[u8])> = users
        .iter()
        .map(|u| (u.partition_key.as_str(), &u.data[..]))
        .collect();
    let rebuilt = Bytes::from(kpl::aggregate(&again));
    assert_eq!(kpl::deaggregate(&rebuilt).as_deref(), Some(&users[..]));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => check_kpl(&Bytes::copy_from_slice(rest)),
        1 => {
            let mut wrapped = kpl::MAGIC.to_vec();
            wrapped.extend_from_slice(rest);
            wrapped.extend_from_slice(&md5::Md5::digest(rest));
            check_kpl(&Bytes::from(wrapped));
        }
        2 => {
            let record = Bytes::copy_from_slice(rest);
            if let Ok(parts) = deaggregate(&record, &SubRecords::Json) {
                let mut at = 0;
                for p in parts {
                    assert_eq!(p.first(), Some(&b'{'));
                    assert!(serde_json::from_slice::<serde_json::Value>(&p).is_ok());
                    let start = p.as_ptr() as usize - record.as_ptr() as usize;
                    assert!(start >= at);
                    at = start + p.len();
                }
            }
        }
        _ => {
            let Some((&len, rest)) = rest.split_first() else {
                return;
            };
            let len = usize::from(len % 4) + 1;
            if rest.len() < len {
                return;
            }
            let (delim, body) = rest.split_at(len);
            let record = Bytes::copy_from_slice(body);
            if let Ok(parts) = deaggregate(&record, &SubRecords::Delimited(delim.to_vec())) {
                for p in parts {
                    assert!(!p.is_empty());
                    assert!(!p.windows(delim.len()).any(|w| w == delim));
                }
            }
        }
    }
});
