//! A minimal Kinesis (and Firehose) JSON 1.1 client over HTTP, signing with the environment's AWS
//! credentials when they are set (`super::sign`).

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

    /// The server's URL, without a trailing `/`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// POSTs `body` to the REST API at `path_and_query` (`/v1/...`): the status and the
    /// JSON answer (`Null` when it is not JSON). Only an unreachable server is an `Err`.
    pub async fn rest_post(
        &self,
        path_and_query: &str,
        body: &Value,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let url = format!("{}{path_and_query}", self.endpoint);
        let body = serde_json::to_vec(body)?;
        let headers = [("content-type", "application/json")];
        let mut req = self.http.post(&url).body(body.clone());
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let resp = super::sign::sign_reqwest(req, "POST", &url, "kinesis", &headers, &body)?
            .send()
            .await
            .with_context(|| format!("cannot reach Freshet at {}", self.endpoint))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Calls `operation` with `input`; an AWS error becomes an `Err` with its type and message.
    pub async fn call(&self, operation: &str, input: Value) -> anyhow::Result<Value> {
        self.call_service("Kinesis_20131202.", "kinesis", operation, input)
            .await
    }

    /// Calls a Firehose (delivery stream) `operation`, as [`Self::call`] does Kinesis.
    pub async fn call_firehose(&self, operation: &str, input: Value) -> anyhow::Result<Value> {
        self.call_service("Firehose_20150804.", "firehose", operation, input)
            .await
    }

    /// Calls `operation` of the JSON 1.1 service whose `X-Amz-Target` prefix is
    /// `target_prefix`, signed for `service`.
    async fn call_service(
        &self,
        target_prefix: &str,
        service: &str,
        operation: &str,
        input: Value,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/", self.endpoint);
        let target = format!("{target_prefix}{operation}");
        let body = serde_json::to_vec(&input)?;
        let headers = [
            ("x-amz-target", target.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
        ];
        let mut req = self.http.post(&url).body(body.clone());
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let resp = super::sign::sign_reqwest(req, "POST", &url, service, &headers, &body)?
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
