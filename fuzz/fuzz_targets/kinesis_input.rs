//! Fuzzes the Kinesis request front end: CBOR decoding (`cbor_to_json_input`),
//! model validation (`validate_input` / `normalize_input`) of both CBOR-decoded
//! and JSON documents, and CBOR re-encoding. Nothing may panic.
//!
//! Input layout: first byte picks the operation (low bits) and the encoding
//! (high bit: JSON), the rest is the request body.

#![no_main]

use freshet::api::cbor::{cbor_to_json_input, json_to_cbor_output};
use freshet::api::kinesis::model::kinesis;
use libfuzzer_sys::fuzz_target;

const OPERATIONS: &[&str] = &[
    "PutRecord",
    "PutRecords",
    "GetRecords",
    "GetShardIterator",
    "CreateStream",
    "ListShards",
    "AddTagsToStream",
    "RemoveTagsFromStream",
    "SplitShard",
    "SubscribeToShard",
    "EnableEnhancedMonitoring",
    "DescribeLimits",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let name = OPERATIONS[(selector & 0x7f) as usize % OPERATIONS.len()];
    let Some(op) = kinesis().operation(name) else {
        return;
    };
    let doc = if selector & 0x80 == 0 {
        cbor_to_json_input(body, &op).ok()
    } else {
        serde_json::from_slice::<serde_json::Value>(body).ok()
    };
    if let Some(mut doc) = doc {
        let _ = op.validate_input(&doc);
        if op.normalize_input(&mut doc).is_ok() {
            let _ = json_to_cbor_output(&doc, &op);
        }
    }
});
