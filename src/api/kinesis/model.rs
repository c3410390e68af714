//! Placeholder for the model-driven validator (being written): knows the operation
//! names from the Kinesis API model and accepts every input.

use std::sync::LazyLock;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    Serialization(String),
    Validation(String),
}

pub struct ServiceModel {
    operations: Vec<String>,
}

pub struct Operation<'a> {
    name: &'a str,
}

static MODEL: LazyLock<ServiceModel> = LazyLock::new(|| {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../models/kinesis.json")).expect("model");
    ServiceModel {
        operations: doc["operations"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
    }
});

pub fn kinesis() -> &'static ServiceModel {
    &MODEL
}

impl ServiceModel {
    pub fn operation(&self, name: &str) -> Option<Operation<'_>> {
        self.operations
            .iter()
            .find(|o| *o == name)
            .map(|o| Operation { name: o })
    }
}

impl Operation<'_> {
    pub fn name(&self) -> &str {
        self.name
    }
    pub fn validate_input(&self, input: &serde_json::Value) -> Result<(), InputError> {
        if !input.is_object() {
            return Err(InputError::Serialization(
                "Start of list found where not expected".into(),
            ));
        }
        Ok(())
    }
}
