//! Record processing of delivery streams: Firehose's `ProcessingConfiguration` (the
//! Firehose API reference: `ProcessingConfiguration`, `Processor`; the developer guide:
//! "Transform source data", "Dynamic partitioning", "Apply dynamic partitioning to
//! aggregated data").
//!
//! A batch's records go through the configured processors in AWS's order, whatever
//! order they were listed in:
//!
//! 1. `Decompression` (`CompressionFormat` `GZIP`): each record gunzipped (capped);
//! 2. `CloudWatchLogProcessing` (`DataMessageExtraction` `true`): a CloudWatch Logs
//!    subscription payload becomes one record per log event's message; control messages
//!    are dropped;
//! 3. `RecordDeAggregation` (`SubRecordType` `JSON` or `DELIMITED` with a base64
//!    `Delimiter`): one record into many (at most 500);
//! 4. `Lambda`: the records POSTed, in the Lambda event AWS sends, to the URL that
//!    Freshet's configuration maps the function's ARN to (Freshet has no Lambda), in
//!    invocations of at most `BufferSizeInMBs`, retried `NumberOfRetries` times; each
//!    result `Ok` (with new data and optionally `metadata.partitionKeys`), `Dropped`, or
//!    `ProcessingFailed`;
//! 5. `MetadataExtraction` (`JsonParsingEngine` `JQ-1.6`): a jq query (jaq) whose
//!    object gives the `!{partitionKeyFromQuery:...}` keys;
//! 6. `AppendDelimiterToRecord` (`Delimiter`, default `\n`).
//!
//! What this module returns for a batch: the records to deliver, each with its
//! partition keys, and the records that failed (to the error prefix, with AWS's error
//! code and message). It never drops a record silently: every input record is in the
//! output, in the failures, or counted as dropped by the function. Pure apart from
//! the Lambda calls, which go through [`Invoker`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Read;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};

/// The most records one record may be de-aggregated into (AWS's cap).
pub const DEAGGREGATION_LIMIT: usize = 500;
/// The largest record a decompression may produce.
pub const DECOMPRESSED_BYTES: u64 = 16 * 1024 * 1024;
/// The largest Lambda response read (Lambda's synchronous payload limit).
pub const LAMBDA_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// `!{firehose:error-output-type}` of records that failed processing.
pub const PROCESSING_FAILED: &str = "processing-failed";

/// Lambda ARNs to the URLs that stand in for them (`--delivery-lambda ARN=URL`).
pub type LambdaUrls = BTreeMap<String, String>;

/// How a record is split by `RecordDeAggregation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubRecords {
    /// Consecutive JSON objects (optionally separated by whitespace or newlines).
    Json,
    /// Split on a delimiter.
    Delimited(Vec<u8>),
}

/// A `Lambda` processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaStep {
    pub arn: String,
    pub url: String,
    pub retries: u32,
    /// Largest invocation request body.
    pub buffer_bytes: usize,
}

/// A checked `ProcessingConfiguration`, in the order AWS applies it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pipeline {
    pub decompress: bool,
    pub extract_log_messages: bool,
    pub deaggregate: Option<SubRecords>,
    pub lambda: Option<LambdaStep>,
    /// The `MetadataExtractionQuery` (compiled when used; checked at parse).
    pub query: Option<String>,
    pub append_delimiter: Option<Vec<u8>>,
}

/// A record to process: its data and arrival time (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InRecord {
    pub data: Bytes,
    pub arrival_ms: i64,
}

/// A processed record, ready to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    pub data: Bytes,
    /// The record as it arrived, for the error prefix should its delivery fail.
    pub raw: Bytes,
    pub arrival_ms: i64,
    /// `partitionKeyFromQuery` keys.
    pub query_keys: BTreeMap<String, String>,
    /// `partitionKeyFromLambda` keys.
    pub lambda_keys: BTreeMap<String, String>,
}

/// A record that failed processing, as AWS writes it under the error prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecord {
    /// The record as it arrived (before any processing).
    pub raw: Bytes,
    pub arrival_ms: i64,
    pub attempts: u32,
    pub code: String,
    pub message: String,
    /// Set for Lambda failures (`lambdaARN`).
    pub lambda_arn: Option<String>,
}

/// What processing a batch gave.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: Vec<OutRecord>,
    pub failed: Vec<FailedRecord>,
    /// Records the function answered `Dropped` for (or control messages).
    pub dropped: u64,
}

/// Calls a transformation function: POSTs `body` to `url`, giving the status and the
/// response body (at most [`LAMBDA_RESPONSE_BYTES`]; more is an error).
pub trait Invoker {
    fn invoke(&self, url: &str, body: Bytes) -> impl Future<Output = Result<(u16, Bytes), String>>;
}

fn invalid(msg: impl Into<String>) -> String {
    msg.into()
}

impl Pipeline {
    /// Checks a `ProcessingConfiguration` (the JSON given to CreateDeliveryStream or
    /// UpdateDestination). `None` when processing is absent or disabled. Errors are the
    /// message of the InvalidArgumentException the caller answers.
    pub fn parse(config: Option<&Value>, lambdas: &LambdaUrls) -> Result<Option<Pipeline>, String> {
        let Some(config) = config else {
            return Ok(None);
        };
        if config.get("Enabled").and_then(Value::as_bool) != Some(true) {
            return Ok(None);
        }
        let mut p = Pipeline::default();
        let mut seen: Vec<&str> = Vec::new();
        let processors = config
            .get("Processors")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if processors.is_empty() {
            return Err(invalid(
                "ProcessingConfiguration is enabled but has no Processors.",
            ));
        }
        for proc in processors {
            let kind = proc.get("Type").and_then(Value::as_str).unwrap_or("");
            if seen.contains(&kind) {
                return Err(format!(
                    "Processor type {kind} is specified more than once in ProcessingConfiguration."
                ));
            }
            seen.push(kind);
            let params = parameters(proc, kind)?;
            let get = |name: &str| params.get(name).map(String::as_str);
            match kind {
                "Decompression" => {
                    allow(kind, &params, &["CompressionFormat"])?;
                    match get("CompressionFormat").unwrap_or("GZIP") {
                        "GZIP" => p.decompress = true,
                        other => {
                            return Err(format!(
                                "CompressionFormat {other} is not supported for Decompression; use GZIP."
                            ));
                        }
                    }
                }
                "CloudWatchLogProcessing" => {
                    allow(kind, &params, &["DataMessageExtraction"])?;
                    p.extract_log_messages = parse_bool(
                        "DataMessageExtraction",
                        get("DataMessageExtraction").unwrap_or("false"),
                    )?;
                }
                "RecordDeAggregation" => {
                    allow(kind, &params, &["SubRecordType", "Delimiter"])?;
                    p.deaggregate = Some(match get("SubRecordType").unwrap_or("JSON") {
                        "JSON" => {
                            if params.contains_key("Delimiter") {
                                return Err(invalid(
                                    "Delimiter is only allowed with SubRecordType DELIMITED.",
                                ));
                            }
                            SubRecords::Json
                        }
                        "DELIMITED" => {
                            let Some(d) = get("Delimiter") else {
                                return Err(invalid(
                                    "RecordDeAggregation with SubRecordType DELIMITED needs a Delimiter (base64).",
                                ));
                            };
                            let bytes = base64::engine::general_purpose::STANDARD
                                .decode(d)
                                .ok()
                                .filter(|b| !b.is_empty())
                                .ok_or_else(|| {
                                    format!("Delimiter {d:?} is not a valid base64-encoded string.")
                                })?;
                            SubRecords::Delimited(bytes)
                        }
                        other => {
                            return Err(format!(
                                "SubRecordType {other} is not valid; use JSON or DELIMITED."
                            ));
                        }
                    });
                }
                "Lambda" => {
                    allow(
                        kind,
                        &params,
                        &[
                            "LambdaArn",
                            "NumberOfRetries",
                            "RoleArn",
                            "BufferSizeInMBs",
                            "BufferIntervalInSeconds",
                        ],
                    )?;
                    let Some(arn) = get("LambdaArn") else {
                        return Err(invalid("The Lambda processor needs a LambdaArn parameter."));
                    };
                    if !arn.starts_with("arn:") || arn.split(':').count() < 7 {
                        return Err(format!(
                            "LambdaArn {arn:?} is not a valid Lambda function ARN."
                        ));
                    }
                    let Some(url) = lambdas.get(arn).or_else(|| {
                        // An unqualified ARN also matches a mapping for `...:$LATEST`.
                        arn.strip_suffix(":$LATEST").and_then(|a| lambdas.get(a))
                    }) else {
                        return Err(format!(
                            "Lambda function {arn} has no URL: Freshet calls transformation \
                             functions over HTTP, so map the ARN to a URL with \
                             --delivery-lambda {arn}=http://host:port/path (config \
                             delivery.lambda)."
                        ));
                    };
                    let retries = match get("NumberOfRetries") {
                        None => 3,
                        Some(v) => {
                            v.parse::<u32>().ok().filter(|n| *n <= 300).ok_or_else(|| {
                                format!(
                                    "NumberOfRetries {v:?} must be a whole number from 0 to 300."
                                )
                            })?
                        }
                    };
                    let buffer_mb = match get("BufferSizeInMBs") {
                        None => 1.0,
                        Some(v) => v
                            .parse::<f64>()
                            .ok()
                            .filter(|n| (0.2..=3.0).contains(n))
                            .ok_or_else(|| {
                                format!("BufferSizeInMBs {v:?} must be between 0.2 and 3.")
                            })?,
                    };
                    if let Some(v) = get("BufferIntervalInSeconds")
                        && v.parse::<u32>()
                            .ok()
                            .filter(|n| (60..=900).contains(n))
                            .is_none()
                    {
                        return Err(format!(
                            "BufferIntervalInSeconds {v:?} must be a whole number from 60 to 900."
                        ));
                    }
                    p.lambda = Some(LambdaStep {
                        arn: arn.to_string(),
                        url: url.clone(),
                        retries,
                        buffer_bytes: (buffer_mb * 1024.0 * 1024.0) as usize,
                    });
                }
                "MetadataExtraction" => {
                    allow(
                        kind,
                        &params,
                        &["MetadataExtractionQuery", "JsonParsingEngine"],
                    )?;
                    let Some(query) = get("MetadataExtractionQuery") else {
                        return Err(invalid(
                            "The MetadataExtraction processor needs a MetadataExtractionQuery parameter.",
                        ));
                    };
                    match get("JsonParsingEngine") {
                        Some("JQ-1.6") => {}
                        Some(other) => {
                            return Err(format!(
                                "JsonParsingEngine {other} is not supported; use JQ-1.6."
                            ));
                        }
                        None => {
                            return Err(invalid(
                                "The MetadataExtraction processor needs JsonParsingEngine JQ-1.6.",
                            ));
                        }
                    }
                    Query::compile(query)?;
                    p.query = Some(query.to_string());
                }
                "AppendDelimiterToRecord" => {
                    allow(kind, &params, &["Delimiter"])?;
                    p.append_delimiter = Some(match get("Delimiter") {
                        None => b"\n".to_vec(),
                        Some(d) => unescape(d),
                    });
                }
                other => {
                    return Err(format!(
                        "Processor type {other:?} is not valid; use RecordDeAggregation, \
                         Decompression, CloudWatchLogProcessing, Lambda, MetadataExtraction or \
                         AppendDelimiterToRecord."
                    ));
                }
            }
        }
        if p.extract_log_messages && !p.decompress {
            return Err(invalid(
                "CloudWatchLogProcessing needs the Decompression processor (CloudWatch Logs \
                 subscription data is GZIP-compressed).",
            ));
        }
        Ok(Some(p))
    }

    /// Processes one batch. `first_offset` names the records in Lambda events
    /// (`recordId`s), `invocation` the batch (stable across retries and restarts).
    pub async fn process(
        &self,
        records: Vec<InRecord>,
        invocation: &str,
        stream_arn: &str,
        region: &str,
        invoker: &impl Invoker,
    ) -> Outcome {
        // The CPU-bound stages (gunzip, de-aggregation, jq) run off the async runtime.
        let records = std::sync::Arc::new(records);
        let (work, mut out) = {
            let (p, r) = (self.clone(), records.clone());
            off_runtime(move || p.before_lambda_all(&r)).await
        };
        let mut transformed: Vec<(usize, Bytes, BTreeMap<String, String>)> = Vec::new();
        if let Some(lambda) = &self.lambda {
            let mut chunk: Vec<(usize, Bytes)> = Vec::new();
            let mut chunk_bytes = 0usize;
            let mut chunk_no = 0usize;
            let mut pending = work.into_iter().peekable();
            while pending.peek().is_some() || !chunk.is_empty() {
                if let Some((_, d)) = pending.peek() {
                    let size = d.len() * 4 / 3 + 128;
                    if chunk.is_empty() || chunk_bytes + size <= lambda.buffer_bytes {
                        chunk_bytes += size;
                        chunk.extend(pending.next());
                        continue;
                    }
                }
                let id = format!("{invocation}-{chunk_no}");
                chunk_no += 1;
                let batch = std::mem::take(&mut chunk);
                chunk_bytes = 0;
                self.invoke_lambda(
                    lambda,
                    &id,
                    stream_arn,
                    region,
                    batch,
                    &records,
                    invoker,
                    &mut out,
                    &mut transformed,
                )
                .await;
            }
        } else {
            transformed = work
                .into_iter()
                .map(|(i, d)| (i, d, BTreeMap::new()))
                .collect();
        }
        let p = self.clone();
        off_runtime(move || p.after_lambda_all(&records, transformed, out)).await
    }

    /// The stages before the Lambda of every record: the parts to go on with (by
    /// record index), and what was dropped or failed.
    fn before_lambda_all(&self, records: &[InRecord]) -> (Vec<(usize, Bytes)>, Outcome) {
        let mut out = Outcome::default();
        // Each working record remembers the raw record it came from (for failures).
        let mut work: Vec<(usize, Bytes)> = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            match self.before_lambda(&r.data) {
                Ok(Some(parts)) => work.extend(parts.into_iter().map(|d| (i, d))),
                Ok(None) => out.dropped += 1,
                Err((code, message)) => out.failed.push(FailedRecord {
                    raw: r.data.clone(),
                    arrival_ms: r.arrival_ms,
                    attempts: 1,
                    code: code.into(),
                    message,
                    lambda_arn: None,
                }),
            }
        }
        (work, out)
    }

    /// The stages after the Lambda (jq keys, the delimiter) of the transformed parts.
    fn after_lambda_all(
        &self,
        records: &[InRecord],
        mut transformed: Vec<(usize, Bytes, BTreeMap<String, String>)>,
        mut out: Outcome,
    ) -> Outcome {
        let query = match self.query.as_deref().map(Query::cached) {
            Some(Ok(q)) => Some(q),
            Some(Err(e)) => {
                // Checked at parse, so only a jaq change could bring this here.
                for (i, _, _) in transformed.drain(..) {
                    out.failed.push(failure(
                        &records[i],
                        "DynamicPartitioning.MetadataExtractionFailed",
                        e.clone(),
                    ));
                }
                None
            }
            None => None,
        };
        for (i, data, lambda_keys) in transformed {
            let query_keys = match &query {
                None => BTreeMap::new(),
                Some(q) => match q.keys(&data) {
                    Ok(k) => k,
                    Err(message) => {
                        out.failed.push(failure(
                            &records[i],
                            "DynamicPartitioning.MetadataExtractionFailed",
                            message,
                        ));
                        continue;
                    }
                },
            };
            let data = match &self.append_delimiter {
                None => data,
                Some(d) => {
                    let mut v = Vec::with_capacity(data.len() + d.len());
                    v.extend_from_slice(&data);
                    v.extend_from_slice(d);
                    Bytes::from(v)
                }
            };
            out.ok.push(OutRecord {
                data,
                raw: records[i].data.clone(),
                arrival_ms: records[i].arrival_ms,
                query_keys,
                lambda_keys,
            });
        }
        out
    }

    /// Decompression, log-message extraction and de-aggregation of one record: its
    /// parts (`None`: nothing to deliver, e.g. a control message), or a failure.
    fn before_lambda(&self, data: &Bytes) -> Result<Option<Vec<Bytes>>, (&'static str, String)> {
        let mut data = data.clone();
        if self.decompress {
            data = gunzip(&data).map_err(|m| ("Decompression.Failed", m))?;
        }
        let mut parts = vec![data];
        if self.extract_log_messages {
            match log_messages(&parts[0]).map_err(|m| ("CloudWatchLogProcessing.Failed", m))? {
                None => return Ok(None),
                Some(messages) => parts = messages,
            }
        }
        if let Some(how) = &self.deaggregate {
            let mut split = Vec::new();
            for part in &parts {
                split
                    .extend(deaggregate(part, how).map_err(|m| ("RecordDeAggregation.Failed", m))?);
            }
            parts = split;
        }
        Ok(Some(parts))
    }

    /// One Lambda invocation (with retries) of `chunk`; results into `out`/`transformed`.
    #[allow(clippy::too_many_arguments)]
    async fn invoke_lambda(
        &self,
        lambda: &LambdaStep,
        invocation_id: &str,
        stream_arn: &str,
        region: &str,
        chunk: Vec<(usize, Bytes)>,
        records: &[InRecord],
        invoker: &impl Invoker,
        out: &mut Outcome,
        transformed: &mut Vec<(usize, Bytes, BTreeMap<String, String>)>,
    ) {
        let b64 = base64::engine::general_purpose::STANDARD;
        let ids: Vec<String> = (0..chunk.len())
            .map(|n| format!("{invocation_id}-{n:06}"))
            .collect();
        let event = json!({
            "invocationId": invocation_id,
            "deliveryStreamArn": stream_arn,
            "region": region,
            "records": chunk.iter().zip(&ids).map(|((i, d), id)| json!({
                "recordId": id,
                "approximateArrivalTimestamp": records[*i].arrival_ms,
                "data": b64.encode(d),
            })).collect::<Vec<_>>(),
        });
        let body = Bytes::from(event.to_string());
        let mut attempts = 0u32;
        let result = loop {
            attempts += 1;
            let answer = match invoker.invoke(&lambda.url, body.clone()).await {
                Err(message) => Err(("Lambda.ServiceUnavailable", message)),
                Ok((200, resp)) => Ok(resp),
                Ok((status, _)) => Err((
                    "Lambda.FunctionError",
                    format!(
                        "The Lambda function was successfully invoked but it returned an error result (HTTP {status})."
                    ),
                )),
            };
            match answer {
                Ok(resp) => break Ok(resp),
                Err(e) if attempts > lambda.retries => break Err(e),
                Err(_) => continue,
            }
        };
        let fail_all = |out: &mut Outcome, code: &str, message: String| {
            for (i, _) in &chunk {
                out.failed.push(FailedRecord {
                    raw: records[*i].data.clone(),
                    arrival_ms: records[*i].arrival_ms,
                    attempts,
                    code: code.to_string(),
                    message: message.clone(),
                    lambda_arn: Some(lambda.arn.clone()),
                });
            }
        };
        let resp = match result {
            Ok(r) => r,
            Err((code, message)) => return fail_all(out, code, message),
        };
        let parsed = match parse_lambda_response(&resp, &ids) {
            Ok(p) => p,
            Err((code, message)) => return fail_all(out, code, message),
        };
        // A source record that failed in any of its parts goes to the error prefix once.
        for ((i, _), result) in chunk.iter().zip(parsed) {
            match result {
                LambdaResult::Ok { data, keys } => transformed.push((*i, data, keys)),
                LambdaResult::Dropped => out.dropped += 1,
                LambdaResult::Failed => out.failed.push(FailedRecord {
                    raw: records[*i].data.clone(),
                    arrival_ms: records[*i].arrival_ms,
                    attempts,
                    code: "Lambda.ProcessingFailedStatus".into(),
                    message: "ProcessingFailed status set for record".into(),
                    lambda_arn: Some(lambda.arn.clone()),
                }),
            }
        }
    }
}

/// Runs `f` on the blocking pool; a panic in it goes on as a panic here.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn failure(r: &InRecord, code: &str, message: String) -> FailedRecord {
    FailedRecord {
        raw: r.data.clone(),
        arrival_ms: r.arrival_ms,
        attempts: 1,
        code: code.to_string(),
        message,
        lambda_arn: None,
    }
}

/// A processor's `Parameters` as a map (names checked against the model's enum).
fn parameters(proc: &Value, kind: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for p in proc
        .get("Parameters")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let name = p.get("ParameterName").and_then(Value::as_str).unwrap_or("");
        let value = p
            .get("ParameterValue")
            .and_then(Value::as_str)
            .unwrap_or("");
        if out.insert(name.to_string(), value.to_string()).is_some() {
            return Err(format!(
                "Parameter {name} is specified more than once for processor {kind}."
            ));
        }
    }
    Ok(out)
}

fn allow(kind: &str, params: &BTreeMap<String, String>, names: &[&str]) -> Result<(), String> {
    match params.keys().find(|k| !names.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(format!(
            "Parameter {k} is not valid for processor {kind}; valid parameters: {}.",
            names.join(", ")
        )),
    }
}

fn parse_bool(name: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{name} must be true or false, not {v:?}.")),
    }
}

/// `\n`, `\t`, `\r` and `\\` in a delimiter as given (the console and CloudFormation
/// write the newline delimiter as `\n`).
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('r') => out.push(b'\r'),
            Some('\\') => out.push(b'\\'),
            Some(other) => {
                out.push(b'\\');
                let mut buf = [0; 4];
                out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
            }
            None => out.push(b'\\'),
        }
    }
    out
}

/// Gunzips one record, refusing more than [`DECOMPRESSED_BYTES`].
pub fn gunzip(data: &[u8]) -> Result<Bytes, String> {
    let mut out = Vec::new();
    let mut dec = flate2::read::MultiGzDecoder::new(data).take(DECOMPRESSED_BYTES + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| format!("The record is not valid GZIP data: {e}."))?;
    if out.len() as u64 > DECOMPRESSED_BYTES {
        return Err(format!(
            "The record decompresses to more than {DECOMPRESSED_BYTES} bytes."
        ));
    }
    Ok(out.into())
}

/// The messages of a CloudWatch Logs subscription payload (`DATA_MESSAGE`), one record
/// each, or `None` for a `CONTROL_MESSAGE`.
fn log_messages(data: &[u8]) -> Result<Option<Vec<Bytes>>, String> {
    let v: Value = serde_json::from_slice(data)
        .map_err(|e| format!("The record is not a CloudWatch Logs payload: {e}."))?;
    match v.get("messageType").and_then(Value::as_str) {
        Some("CONTROL_MESSAGE") => return Ok(None),
        Some("DATA_MESSAGE") => {}
        _ => return Err("The record is not a CloudWatch Logs payload: no messageType.".into()),
    }
    let events = v
        .get("logEvents")
        .and_then(Value::as_array)
        .ok_or("The record is not a CloudWatch Logs payload: no logEvents.")?;
    Ok(Some(
        events
            .iter()
            .filter_map(|e| e.get("message").and_then(Value::as_str))
            .map(|m| Bytes::copy_from_slice(m.as_bytes()))
            .collect(),
    ))
}

/// Splits one record by `how`.
pub fn deaggregate(data: &Bytes, how: &SubRecords) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    match how {
        SubRecords::Json => {
            let mut stream =
                serde_json::Deserializer::from_slice(data).into_iter::<serde::de::IgnoredAny>();
            let mut start = 0usize;
            while let Some(item) = stream.next() {
                item.map_err(|e| format!("The record is not a sequence of JSON objects: {e}."))?;
                let end = stream.byte_offset();
                let text = &data[start..end];
                let skip = text.iter().take_while(|b| b.is_ascii_whitespace()).count();
                if text.get(skip) != Some(&b'{') {
                    return Err(
                        "The record is not a sequence of JSON objects: JSON values other than objects (an array, say) cannot be de-aggregated."
                            .into(),
                    );
                }
                out.push(data.slice(start + skip..end));
                start = end;
                if out.len() > DEAGGREGATION_LIMIT {
                    break;
                }
            }
        }
        SubRecords::Delimited(delim) => {
            let mut start = 0usize;
            for at in memchr::memmem::find_iter(data, delim) {
                if at < start {
                    continue;
                }
                if at > start {
                    out.push(data.slice(start..at));
                }
                start = at + delim.len();
                if out.len() > DEAGGREGATION_LIMIT {
                    break;
                }
            }
            if start < data.len() {
                out.push(data.slice(start..));
            }
        }
    }
    if out.len() > DEAGGREGATION_LIMIT {
        return Err(format!(
            "The record holds more than {DEAGGREGATION_LIMIT} records; de-aggregation is capped at {DEAGGREGATION_LIMIT} a record."
        ));
    }
    Ok(out)
}

enum LambdaResult {
    Ok {
        data: Bytes,
        keys: BTreeMap<String, String>,
    },
    Dropped,
    Failed,
}

/// A function's answer, in the order of `ids`, or the error that fails the whole
/// invocation (AWS's codes and messages).
fn parse_lambda_response(
    body: &[u8],
    ids: &[String],
) -> Result<Vec<LambdaResult>, (&'static str, String)> {
    let json_error = |detail: String| {
        (
            "Lambda.JsonProcessingException",
            format!("The Lambda function's response could not be parsed: {detail}."),
        )
    };
    let v: Value = serde_json::from_slice(body).map_err(|e| json_error(e.to_string()))?;
    let list = v
        .get("records")
        .and_then(Value::as_array)
        .ok_or_else(|| json_error("no records array".into()))?;
    let mut by_id: BTreeMap<&str, &Value> = BTreeMap::new();
    for r in list {
        let id = r
            .get("recordId")
            .and_then(Value::as_str)
            .ok_or_else(|| json_error("a record without recordId".into()))?;
        if by_id.insert(id, r).is_some() {
            return Err((
                "Lambda.DuplicatedRecordId",
                "One or more record Ids were returned more than once. Ensure that the Lambda function returns each record Id once.".into(),
            ));
        }
    }
    if by_id.len() != ids.len() || ids.iter().any(|id| !by_id.contains_key(id.as_str())) {
        return Err((
            "Lambda.MissingRecordId",
            "One or more record Ids were not returned. Ensure that the Lambda function returns all received record Ids.".into(),
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let r = by_id[id.as_str()];
        let result = match r.get("result").and_then(Value::as_str) {
            Some("Ok") => {
                let data = r
                    .get("data")
                    .and_then(Value::as_str)
                    .and_then(|d| b64.decode(d).ok())
                    .ok_or_else(|| json_error(format!("record {id}: data is not base64")))?;
                let mut keys = BTreeMap::new();
                if let Some(pk) = r
                    .pointer("/metadata/partitionKeys")
                    .and_then(Value::as_object)
                {
                    for (k, v) in pk {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            _ => {
                                return Err(json_error(format!(
                                    "record {id}: partition key {k} is not a string"
                                )));
                            }
                        };
                        keys.insert(k.clone(), text);
                    }
                }
                LambdaResult::Ok {
                    data: data.into(),
                    keys,
                }
            }
            Some("Dropped") => LambdaResult::Dropped,
            Some("ProcessingFailed") => LambdaResult::Failed,
            other => {
                return Err(json_error(format!(
                    "record {id}: result {other:?} is not Ok, Dropped or ProcessingFailed"
                )));
            }
        };
        out.push(result);
    }
    Ok(out)
}

/// A compiled `MetadataExtractionQuery` (jq, by jaq).
pub struct Query {
    filter: jaq_core::Filter<jaq_core::data::JustLut<jaq_json::Val>>,
}

/// Queries compiled on this thread, by their text, so that a worker's batches do not
/// compile the same query (and jq's standard library) again; jaq's values are not
/// `Send`, hence one cache a thread. Cleared when it holds [`QUERY_CACHE`] queries.
const QUERY_CACHE: usize = 64;

thread_local! {
    static QUERIES: std::cell::RefCell<HashMap<String, std::rc::Rc<Query>>> =
        std::cell::RefCell::new(HashMap::new());
}

impl Query {
    /// [`Query::compile`], once per thread for each text.
    pub fn cached(code: &str) -> Result<std::rc::Rc<Query>, String> {
        if let Some(q) = QUERIES.with(|c| c.borrow().get(code).cloned()) {
            return Ok(q);
        }
        let q = std::rc::Rc::new(Query::compile(code)?);
        QUERIES.with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= QUERY_CACHE {
                c.clear();
            }
            c.insert(code.to_string(), q.clone());
        });
        Ok(q)
    }

    /// Compiles `code`; an error is the InvalidArgumentException's message.
    pub fn compile(code: &str) -> Result<Query, String> {
        use jaq_core::load::{Arena, File, Loader};
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let loader = Loader::new(defs);
        let arena = Arena::default();
        let bad = || format!("MetadataExtractionQuery {code:?} is not a valid jq expression.");
        let modules = loader
            .load(&arena, File { code, path: () })
            .map_err(|_| bad())?;
        let filter = jaq_core::Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|_| bad())?;
        Ok(Query { filter })
    }

    /// The partition keys of one record: the query's first result, an object whose
    /// values are strings, numbers or booleans.
    pub fn keys(&self, record: &[u8]) -> Result<BTreeMap<String, String>, String> {
        use jaq_core::{Ctx, Vars, unwrap_valr};
        use jaq_json::Val;
        let input = jaq_json::read::parse_single(record)
            .map_err(|e| format!("The record is not valid JSON: {e}."))?;
        let ctx = Ctx::<jaq_core::data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let mut results = self.filter.id.run((ctx, input)).map(unwrap_valr);
        let first = match results.next() {
            None => return Err("The MetadataExtractionQuery gave no result for the record.".into()),
            Some(Err(e)) => {
                return Err(format!(
                    "The MetadataExtractionQuery failed on the record: {e}."
                ));
            }
            Some(Ok(v)) => v,
        };
        let Val::Obj(map) = first else {
            return Err(
                "The MetadataExtractionQuery must give an object of partition keys.".into(),
            );
        };
        let mut out = BTreeMap::new();
        for (k, v) in map.iter() {
            let key = match k {
                Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                other => other.to_string(),
            };
            let value = match v {
                Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                Val::Num(_) | Val::Bool(_) => v.to_string(),
                Val::Null => {
                    return Err(format!(
                        "The partition key {key} is null for the record (the field is missing?)."
                    ));
                }
                _ => {
                    return Err(format!(
                        "The partition key {key} is not a string, number or boolean."
                    ));
                }
            };
            out.insert(key, value);
        }
        Ok(out)
    }
}

/// The records that failed processing, as AWS writes them under the error prefix: one
/// JSON object a line.
pub fn failed_records_object(failed: &[FailedRecord], ending_ms: i64) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for f in failed {
        let mut line = json!({
            "rawData": b64.encode(&f.raw),
            "errorCode": f.code,
            "errorMessage": f.message,
            "attemptsMade": f.attempts,
            "arrivalTimestamp": f.arrival_ms,
            "attemptEndingTimestamp": ending_ms,
        });
        if let Some(arn) = &f.lambda_arn {
            line["lambdaARN"] = Value::String(arn.clone());
        }
        out.extend_from_slice(line.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(procs: Value) -> Value {
        json!({"Enabled": true, "Processors": procs})
    }

    fn p(ty: &str, params: &[(&str, &str)]) -> Value {
        json!({"Type": ty, "Parameters": params.iter().map(|(n, v)| json!({"ParameterName": n, "ParameterValue": v})).collect::<Vec<_>>()})
    }

    struct NoLambda;
    impl Invoker for NoLambda {
        async fn invoke(&self, _: &str, _: Bytes) -> Result<(u16, Bytes), String> {
            Err("no function".into())
        }
    }

    /// A function that upper-cases records, drops "drop", fails "fail", and gives each
    /// record a partition key; `mode` breaks its answers in the ways AWS checks.
    struct Upper {
        mode: &'static str,
        calls: std::cell::Cell<u32>,
    }
    impl Invoker for Upper {
        async fn invoke(&self, url: &str, body: Bytes) -> Result<(u16, Bytes), String> {
            assert_eq!(url, "http://fn");
            self.calls.set(self.calls.get() + 1);
            if self.mode == "500" {
                return Ok((500, Bytes::new()));
            }
            let ev: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(ev["deliveryStreamArn"], "arn:s");
            let b64 = base64::engine::general_purpose::STANDARD;
            let mut recs: Vec<Value> = ev["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let data = b64.decode(r["data"].as_str().unwrap()).unwrap();
                    let text = String::from_utf8(data).unwrap();
                    let result = match text.as_str() {
                        "drop" => "Dropped",
                        "fail" => "ProcessingFailed",
                        _ => "Ok",
                    };
                    json!({"recordId": r["recordId"], "result": result,
                           "data": b64.encode(text.to_uppercase()),
                           "metadata": {"partitionKeys": {"len": text.len()}}})
                })
                .collect();
            match self.mode {
                "missing" => {
                    recs.pop();
                }
                "dup" => {
                    let first = recs[0].clone();
                    recs.push(first);
                }
                "garbage" => return Ok((200, Bytes::from_static(b"not json"))),
                _ => {}
            }
            Ok((200, Bytes::from(json!({"records": recs}).to_string())))
        }
    }

    fn lambdas() -> LambdaUrls {
        [(
            "arn:aws:lambda:us-east-1:123456789012:function:f".to_string(),
            "http://fn".to_string(),
        )]
        .into_iter()
        .collect()
    }

    fn run(pipeline: &Pipeline, records: &[&[u8]], inv: &impl Invoker) -> Outcome {
        let recs = records
            .iter()
            .enumerate()
            .map(|(i, d)| InRecord {
                data: Bytes::copy_from_slice(d),
                arrival_ms: i as i64,
            })
            .collect();
        let fut = pipeline.process(recs, "inv", "arn:s", "us-east-1", inv);
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(fut)
    }

    #[test]
    fn configurations_are_checked() {
        let l = lambdas();
        assert_eq!(Pipeline::parse(None, &l), Ok(None));
        assert_eq!(
            Pipeline::parse(
                Some(&json!({"Enabled": false, "Processors": [{"Type": "Nope"}]})),
                &l
            ),
            Ok(None)
        );
        let full = cfg(json!([
            p("AppendDelimiterToRecord", &[]),
            p(
                "MetadataExtraction",
                &[
                    ("MetadataExtractionQuery", "{id:.id}"),
                    ("JsonParsingEngine", "JQ-1.6")
                ]
            ),
            p(
                "RecordDeAggregation",
                &[("SubRecordType", "DELIMITED"), ("Delimiter", "IyMjIw==")]
            ),
            p(
                "Lambda",
                &[
                    (
                        "LambdaArn",
                        "arn:aws:lambda:us-east-1:123456789012:function:f"
                    ),
                    ("NumberOfRetries", "2"),
                    ("BufferSizeInMBs", "0.5")
                ]
            ),
        ]));
        let got = Pipeline::parse(Some(&full), &l).unwrap().unwrap();
        assert_eq!(
            got.deaggregate,
            Some(SubRecords::Delimited(b"####".to_vec()))
        );
        assert_eq!(got.append_delimiter, Some(b"\n".to_vec()));
        assert_eq!(got.lambda.as_ref().unwrap().retries, 2);
        assert_eq!(got.lambda.as_ref().unwrap().buffer_bytes, 512 * 1024);
        for (bad, needle) in [
            (cfg(json!([])), "no Processors"),
            (cfg(json!([p("Nope", &[])])), "not valid"),
            (
                cfg(json!([
                    p("AppendDelimiterToRecord", &[]),
                    p("AppendDelimiterToRecord", &[])
                ])),
                "more than once",
            ),
            (
                cfg(json!([p("AppendDelimiterToRecord", &[("LambdaArn", "x")])])),
                "not valid for processor",
            ),
            (
                cfg(json!([p(
                    "RecordDeAggregation",
                    &[("SubRecordType", "DELIMITED")]
                )])),
                "needs a Delimiter",
            ),
            (
                cfg(json!([p(
                    "RecordDeAggregation",
                    &[("SubRecordType", "DELIMITED"), ("Delimiter", "!!")]
                )])),
                "base64",
            ),
            (
                cfg(json!([p(
                    "RecordDeAggregation",
                    &[("SubRecordType", "XML")]
                )])),
                "XML",
            ),
            (
                cfg(json!([p(
                    "MetadataExtraction",
                    &[
                        ("MetadataExtractionQuery", "{id:"),
                        ("JsonParsingEngine", "JQ-1.6")
                    ]
                )])),
                "not a valid jq",
            ),
            (
                cfg(json!([p(
                    "MetadataExtraction",
                    &[("MetadataExtractionQuery", ".id")]
                )])),
                "JQ-1.6",
            ),
            (
                cfg(json!([p(
                    "Lambda",
                    &[(
                        "LambdaArn",
                        "arn:aws:lambda:us-east-1:123456789012:function:other"
                    )]
                )])),
                "--delivery-lambda",
            ),
            (cfg(json!([p("Lambda", &[])])), "needs a LambdaArn"),
            (
                cfg(json!([p(
                    "Lambda",
                    &[
                        (
                            "LambdaArn",
                            "arn:aws:lambda:us-east-1:123456789012:function:f"
                        ),
                        ("BufferSizeInMBs", "9")
                    ]
                )])),
                "BufferSizeInMBs",
            ),
            (
                cfg(json!([p(
                    "CloudWatchLogProcessing",
                    &[("DataMessageExtraction", "true")]
                )])),
                "needs the Decompression",
            ),
        ] {
            let err = Pipeline::parse(Some(&bad), &l).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn json_and_delimited_records_are_split() {
        let d = |s: &str, how| {
            deaggregate(&Bytes::copy_from_slice(s.as_bytes()), how).map(|v| {
                v.iter()
                    .map(|b| String::from_utf8(b.to_vec()).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            d("{\"a\":1}{\"a\":2}", &SubRecords::Json).unwrap(),
            ["{\"a\":1}", "{\"a\":2}"]
        );
        assert_eq!(
            d("{\"a\":1}\n {\"b\":{\"c\":[2]}}\n", &SubRecords::Json).unwrap(),
            ["{\"a\":1}", "{\"b\":{\"c\":[2]}}"]
        );
        assert!(d("[{\"a\":1},{\"a\":2}]", &SubRecords::Json).is_err());
        assert!(d("{\"a\":1}{oops", &SubRecords::Json).is_err());
        let hashes = SubRecords::Delimited(b"####".to_vec());
        assert_eq!(d("a####b####c", &hashes).unwrap(), ["a", "b", "c"]);
        assert_eq!(d("a########b####", &hashes).unwrap(), ["a", "b"]);
        let many = "{}".repeat(DEAGGREGATION_LIMIT + 1);
        assert!(d(&many, &SubRecords::Json).unwrap_err().contains("500"));
        assert_eq!(
            d(&"{}".repeat(DEAGGREGATION_LIMIT), &SubRecords::Json)
                .unwrap()
                .len(),
            500
        );
    }

    #[test]
    fn jq_keys_and_delimiters() {
        let q = Query::compile(
            r#"{customer_id:.customer_id, year: .ts|strftime("%Y"), n: .n, ok: .ok}"#,
        )
        .unwrap();
        let keys = q
            .keys(br#"{"customer_id":"abc","ts":1565382027,"n":12,"ok":true}"#)
            .unwrap();
        assert_eq!(keys["customer_id"], "abc");
        assert_eq!(keys["year"], "2019");
        assert_eq!(keys["n"], "12");
        assert_eq!(keys["ok"], "true");
        assert!(q.keys(br#"{"ts":1}"#).unwrap_err().contains("customer_id"));
        assert!(q.keys(b"not json").is_err());
        assert!(
            Query::compile(".a")
                .unwrap()
                .keys(br#"{"a":"x"}"#)
                .unwrap_err()
                .contains("object")
        );
        // Compiled once a thread for each text; a bad query is not kept.
        let a = Query::cached("{c:.c}").unwrap();
        let b = Query::cached("{c:.c}").unwrap();
        assert!(std::rc::Rc::ptr_eq(&a, &b));
        assert!(!std::rc::Rc::ptr_eq(&a, &Query::cached("{d:.d}").unwrap()));
        assert_eq!(a.keys(br#"{"c":"x"}"#).unwrap()["c"], "x");
        assert!(Query::cached("{c:").is_err());
        for i in 0..QUERY_CACHE + 1 {
            Query::cached(&format!("{{k:.k{i}}}")).unwrap();
        }
        assert!(QUERIES.with(|c| c.borrow().len()) <= QUERY_CACHE);
        assert_eq!(unescape("\\n"), b"\n");
        assert_eq!(unescape("|\\t|"), b"|\t|");
        assert_eq!(unescape("a\\qb\\"), b"a\\qb\\");
    }

    #[test]
    fn a_batch_is_split_partitioned_and_delimited() {
        let pipeline = Pipeline::parse(
            Some(&cfg(json!([
                p(
                    "MetadataExtraction",
                    &[
                        ("MetadataExtractionQuery", "{c:.c}"),
                        ("JsonParsingEngine", "JQ-1.6")
                    ]
                ),
                p("RecordDeAggregation", &[("SubRecordType", "JSON")]),
                p("AppendDelimiterToRecord", &[]),
            ]))),
            &lambdas(),
        )
        .unwrap()
        .unwrap();
        let out = run(
            &pipeline,
            &[br#"{"c":"x"}{"c":"y"}"#, b"[1]", br#"{"d":1}"#],
            &NoLambda,
        );
        let got: Vec<(String, String)> = out
            .ok
            .iter()
            .map(|r| {
                (
                    String::from_utf8(r.data.to_vec()).unwrap(),
                    r.query_keys["c"].clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("{\"c\":\"x\"}\n".to_string(), "x".to_string()),
                ("{\"c\":\"y\"}\n".into(), "y".into())
            ]
        );
        assert_eq!(out.failed.len(), 2);
        assert_eq!(out.failed[0].code, "RecordDeAggregation.Failed");
        assert_eq!(&out.failed[0].raw[..], b"[1]");
        assert_eq!(
            out.failed[1].code,
            "DynamicPartitioning.MetadataExtractionFailed"
        );
        assert_eq!(out.failed[1].arrival_ms, 2);
    }

    #[test]
    fn lambda_results_are_applied_and_checked() {
        let pipeline = Pipeline::parse(
            Some(&cfg(json!([p(
                "Lambda",
                &[
                    (
                        "LambdaArn",
                        "arn:aws:lambda:us-east-1:123456789012:function:f"
                    ),
                    ("NumberOfRetries", "2")
                ]
            )]))),
            &lambdas(),
        )
        .unwrap()
        .unwrap();
        let upper = Upper {
            mode: "",
            calls: 0.into(),
        };
        let out = run(&pipeline, &[b"ab", b"drop", b"fail", b"c"], &upper);
        let data: Vec<&[u8]> = out.ok.iter().map(|r| &r.data[..]).collect();
        assert_eq!(data, [&b"AB"[..], b"C"]);
        assert_eq!(out.ok[0].lambda_keys["len"], "2");
        assert_eq!(out.dropped, 1);
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].code, "Lambda.ProcessingFailedStatus");
        assert_eq!(&out.failed[0].raw[..], b"fail");
        assert_eq!(upper.calls.get(), 1);
        for (mode, code, calls) in [
            ("500", "Lambda.FunctionError", 3),
            ("missing", "Lambda.MissingRecordId", 1),
            ("dup", "Lambda.DuplicatedRecordId", 1),
            ("garbage", "Lambda.JsonProcessingException", 1),
        ] {
            let f = Upper {
                mode,
                calls: 0.into(),
            };
            let out = run(&pipeline, &[b"ab", b"c"], &f);
            assert!(out.ok.is_empty(), "{mode}");
            assert_eq!(out.failed.len(), 2, "{mode}");
            assert!(
                out.failed.iter().all(|r| r.code == code),
                "{mode}: {:?}",
                out.failed
            );
            assert_eq!(f.calls.get(), calls, "{mode}");
            assert_eq!(out.failed[0].attempts, calls);
        }
        let lines = failed_records_object(&out_failed_example(), 7);
        let v: Value =
            serde_json::from_slice(lines.split(|b| *b == b'\n').next().unwrap()).unwrap();
        assert_eq!(v["lambdaARN"], "arn:f");
        assert_eq!(v["rawData"], "eA==");
        assert_eq!(v["attemptEndingTimestamp"], 7);
    }

    fn out_failed_example() -> Vec<FailedRecord> {
        vec![FailedRecord {
            raw: Bytes::from_static(b"x"),
            arrival_ms: 1,
            attempts: 4,
            code: "Lambda.FunctionError".into(),
            message: "m".into(),
            lambda_arn: Some("arn:f".into()),
        }]
    }

    #[test]
    fn invocations_are_bounded_by_the_buffer_size() {
        let pipeline = Pipeline::parse(
            Some(&cfg(json!([p(
                "Lambda",
                &[
                    (
                        "LambdaArn",
                        "arn:aws:lambda:us-east-1:123456789012:function:f"
                    ),
                    ("BufferSizeInMBs", "0.2")
                ]
            )]))),
            &lambdas(),
        )
        .unwrap()
        .unwrap();
        let big = vec![b'a'; 100 * 1024];
        let recs: Vec<&[u8]> = (0..5).map(|_| &big[..]).collect();
        let f = Upper {
            mode: "",
            calls: 0.into(),
        };
        let out = run(&pipeline, &recs, &f);
        assert_eq!(out.ok.len(), 5);
        assert_eq!(
            f.calls.get(),
            5,
            "each 100 KiB record (136 KiB in base64) is its own call at 0.2 MB"
        );
    }

    #[test]
    fn cloudwatch_logs_payloads_are_unpacked() {
        use std::io::Write;
        let pipeline = Pipeline::parse(
            Some(&cfg(json!([
                p(
                    "CloudWatchLogProcessing",
                    &[("DataMessageExtraction", "true")]
                ),
                p("Decompression", &[("CompressionFormat", "GZIP")]),
            ]))),
            &lambdas(),
        )
        .unwrap()
        .unwrap();
        let gz = |v: Value| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(v.to_string().as_bytes()).unwrap();
            e.finish().unwrap()
        };
        let data = gz(
            json!({"messageType": "DATA_MESSAGE", "logGroup": "g", "logEvents": [
            {"id": "1", "timestamp": 1, "message": "first"}, {"id": "2", "timestamp": 2, "message": "second"}]}),
        );
        let control = gz(json!({"messageType": "CONTROL_MESSAGE", "logEvents": []}));
        let out = run(&pipeline, &[&data, &control, b"plain"], &NoLambda);
        let msgs: Vec<&[u8]> = out.ok.iter().map(|r| &r.data[..]).collect();
        assert_eq!(msgs, [&b"first"[..], b"second"]);
        assert_eq!(out.dropped, 1);
        assert_eq!(out.failed.len(), 1);
        assert_eq!(out.failed[0].code, "Decompression.Failed");
    }
}
