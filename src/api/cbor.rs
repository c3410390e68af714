//! Placeholder for the CBOR codec (being written).

use super::kinesis::model::{InputError, Operation};

pub fn cbor_to_json_input(
    _body: &[u8],
    _op: &Operation<'_>,
) -> Result<serde_json::Value, InputError> {
    Err(InputError::Serialization(
        "CBOR is not supported yet".into(),
    ))
}

pub fn json_to_cbor_output(doc: &serde_json::Value, _op: &Operation<'_>) -> Vec<u8> {
    serde_json::to_vec(doc).unwrap_or_default()
}

pub fn error_to_cbor(error_type: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"__type": error_type, "message": message}))
        .unwrap_or_default()
}
