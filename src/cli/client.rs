//! A minimal Kinesis JSON 1.1 client over HTTP (no request signing: Freshet accepts
//! any credentials).

use anyhow::{Context, bail};
use serde_json::Value;

pub struct KinesisClient {
    http: reqwest::Client,
    endpoint: String,
}

impl KinesisClient {
    pub fn new(endpoint: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
        }
    }

    /// Calls `operation` with `input`; an AWS error becomes an `Err` with its type and message.
    pub async fn call(&self, operation: &str, input: Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}/", self.endpoint))
            .header("X-Amz-Target", format!("Kinesis_20131202.{operation}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .body(serde_json::to_vec(&input)?)
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach Freshet at {} (is `freshet serve` running?)",
                    self.endpoint
                )
            })?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let doc: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let kind = doc["__type"].as_str().unwrap_or("Error");
            let message = doc["message"].as_str().unwrap_or("");
            bail!("{kind}: {message}");
        }
        Ok(doc)
    }
}
