//! The Kinesis Analytics (SQL applications) wire protocol: `POST /` with
//! `X-Amz-Target: KinesisAnalytics_20150814.<Operation>`, bodies in AWS JSON 1.1, as in
//! the Kinesis Data Analytics API reference (2015-08-14).
//!
//! Requests are checked against the official model
//! (`src/api/models/kinesisanalytics.json`, with the Kinesis model machinery), parsed
//! here into calls of [`crate::analytics::AnalyticsService`], whose typed errors are
//! mapped to the wire in `api::error`. Operations Freshet does not support (Lambda
//! preprocessing, CloudWatch logging options) are refused with an
//! UnsupportedOperationException or InvalidArgumentException that names them.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::kinesis::model;
use crate::analytics::model::*;
use crate::analytics::{
    AnalyticsService, CreateRequest, InputPatch, OutputPatch, ReferencePatch, SchemaPatch, Update,
};
use crate::error::ErrorKind;

/// The `X-Amz-Target` prefix of Kinesis Analytics operations.
pub const TARGET_PREFIX: &str = "KinesisAnalytics_20150814.";

/// The entry point for `POST /` with a Kinesis Analytics target.
pub async fn handle(State(state): State<AppState>, req: Request) -> Response {
    super::serve_json11(state, req, run).await
}

async fn run(state: &AppState, target: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    let (op_name, doc) = super::json11_input(model::analytics(), TARGET_PREFIX, target, bytes)?;
    let Some(service) = state.analytics.as_ref() else {
        return Err(ApiError::unknown_operation(format!(
            "Unknown operation {op_name}."
        )));
    };
    apply(service, op_name, &doc).await
}

fn text<'a>(doc: &'a Value, key: &str) -> &'a str {
    doc[key].as_str().unwrap_or("")
}

fn unsupported(what: &str) -> ApiError {
    ApiError::new(
        ErrorKind::InvalidArgument,
        "UnsupportedOperationException",
        format!("{what} is not supported by Freshet; see docs/analytics.md."),
    )
}

fn version(doc: &Value) -> u64 {
    doc["CurrentApplicationVersionId"].as_u64().unwrap_or(0)
}

fn tags_of(list: &Value) -> Vec<(String, String)> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|t| (text(t, "Key").to_string(), text(t, "Value").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

async fn apply(service: &Arc<AnalyticsService>, op: &str, doc: &Value) -> Result<Value, ApiError> {
    let name = text(doc, "ApplicationName");
    Ok(match op {
        "CreateApplication" => {
            if doc
                .get("CloudWatchLoggingOptions")
                .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
            {
                return Err(unsupported("CloudWatchLoggingOptions"));
            }
            let inputs = doc["Inputs"]
                .as_array()
                .map(|a| a.iter().map(input_of).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default();
            let outputs = doc["Outputs"]
                .as_array()
                .map(|a| a.iter().map(output_of).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default();
            let meta = service
                .create(CreateRequest {
                    name: name.to_string(),
                    description: doc["ApplicationDescription"].as_str().map(String::from),
                    code: text(doc, "ApplicationCode").to_string(),
                    inputs,
                    outputs,
                    tags: tags_of(&doc["Tags"]),
                })
                .await?;
            json!({ "ApplicationSummary": summary(service, &meta) })
        }
        "DescribeApplication" => {
            let meta = service.describe(name)?;
            json!({ "ApplicationDetail": detail(service, &meta) })
        }
        "ListApplications" => {
            let limit = doc["Limit"].as_u64().unwrap_or(50) as usize;
            let (apps, more) = service.list(doc["ExclusiveStartApplicationName"].as_str(), limit);
            let summaries: Vec<Value> = apps.iter().map(|m| summary(service, m)).collect();
            json!({ "ApplicationSummaries": summaries, "HasMoreApplications": more })
        }
        "DeleteApplication" => {
            let created = doc["CreateTimestamp"].as_f64().unwrap_or(0.0);
            service
                .delete(name, (created * 1000.0).round() as i64)
                .await?;
            json!({})
        }
        "StartApplication" => {
            let positions = doc["InputConfigurations"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| {
                            (
                                text(c, "Id").to_string(),
                                c["InputStartingPositionConfiguration"]["InputStartingPosition"]
                                    .as_str()
                                    .unwrap_or("NOW")
                                    .to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            service.start(name, positions).await?;
            json!({})
        }
        "StopApplication" => {
            service.stop(name).await?;
            json!({})
        }
        "UpdateApplication" => {
            let update = update_of(&doc["ApplicationUpdate"])?;
            service.update(name, version(doc), update).await?;
            json!({})
        }
        "AddApplicationInput" => {
            let input = input_of(&doc["Input"])?;
            service.add_input(name, version(doc), input).await?;
            json!({})
        }
        "AddApplicationOutput" => {
            let output = output_of(&doc["Output"])?;
            service.add_output(name, version(doc), output).await?;
            json!({})
        }
        "DeleteApplicationOutput" => {
            service
                .delete_output(name, version(doc), text(doc, "OutputId"))
                .await?;
            json!({})
        }
        "AddApplicationReferenceDataSource" => {
            let r = reference_of(&doc["ReferenceDataSource"])?;
            service.add_reference(name, version(doc), r).await?;
            json!({})
        }
        "DeleteApplicationReferenceDataSource" => {
            service
                .delete_reference(name, version(doc), text(doc, "ReferenceId"))
                .await?;
            json!({})
        }
        "TagResource" => {
            service
                .tag(text(doc, "ResourceARN"), tags_of(&doc["Tags"]))
                .await?;
            json!({})
        }
        "UntagResource" => {
            let keys = super::json_strings(doc.get("TagKeys"));
            service.untag(text(doc, "ResourceARN"), keys).await?;
            json!({})
        }
        "ListTagsForResource" => {
            let tags: Vec<Value> = service
                .list_tags(text(doc, "ResourceARN"))?
                .into_iter()
                .map(|(k, v)| json!({ "Key": k, "Value": v }))
                .collect();
            json!({ "Tags": tags })
        }
        "DiscoverInputSchema" => {
            if doc.get("S3Configuration").is_some() {
                return Err(unsupported("DiscoverInputSchema on S3Configuration"));
            }
            let arn = doc["ResourceARN"].as_str().ok_or_else(|| {
                ApiError::invalid_argument("ResourceARN is required to discover a schema.")
            })?;
            let position = doc["InputStartingPositionConfiguration"]["InputStartingPosition"]
                .as_str()
                .unwrap_or("TRIM_HORIZON");
            let d = service.discover(arn, position).await?;
            json!({
                "InputSchema": schema_json(&d.schema),
                "RawInputRecords": d.raw,
                "ParsedInputRecords": d.parsed,
            })
        }
        other => return Err(unsupported(other)),
    })
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::invalid_argument(message.into())
}

fn schema_of(v: &Value) -> Result<SourceSchema, ApiError> {
    let fmt = &v["RecordFormat"];
    let format = match fmt["RecordFormatType"].as_str() {
        Some("JSON") => RecordFormat::Json {
            row_path: fmt["MappingParameters"]["JSONMappingParameters"]["RecordRowPath"]
                .as_str()
                .unwrap_or("$")
                .to_string(),
        },
        Some("CSV") => {
            let csv = &fmt["MappingParameters"]["CSVMappingParameters"];
            RecordFormat::Csv {
                row_delimiter: csv["RecordRowDelimiter"]
                    .as_str()
                    .unwrap_or("\n")
                    .to_string(),
                column_delimiter: csv["RecordColumnDelimiter"]
                    .as_str()
                    .unwrap_or(",")
                    .to_string(),
            }
        }
        other => {
            return Err(bad(format!(
                "RecordFormatType {} is not JSON or CSV.",
                other.unwrap_or("")
            )));
        }
    };
    if let Some(enc) = v["RecordEncoding"].as_str()
        && !enc.eq_ignore_ascii_case("UTF-8")
    {
        return Err(bad(format!(
            "RecordEncoding {enc} is not supported: only UTF-8."
        )));
    }
    let columns = v["RecordColumns"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| RecordColumn {
                    name: text(c, "Name").to_string(),
                    mapping: c["Mapping"].as_str().map(String::from),
                    sql_type: text(c, "SqlType").to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(SourceSchema {
        format,
        encoding: v["RecordEncoding"].as_str().map(String::from),
        columns,
    })
}

fn schema_patch_of(v: &Value) -> Result<SchemaPatch, ApiError> {
    let mut patch = SchemaPatch::default();
    if v.get("RecordFormatUpdate").is_some() {
        let s =
            schema_of(&json!({ "RecordFormat": v["RecordFormatUpdate"], "RecordColumns": [] }))?;
        patch.format = Some(s.format);
    }
    if let Some(e) = v["RecordEncodingUpdate"].as_str() {
        patch.encoding = Some(e.to_string());
    }
    if v.get("RecordColumnUpdates").is_some() {
        patch.columns =
            Some(schema_of(&json!({ "RecordFormat": { "RecordFormatType": "JSON" }, "RecordColumns": v["RecordColumnUpdates"] }))?.columns);
    }
    Ok(patch)
}

fn input_of(v: &Value) -> Result<InputMeta, ApiError> {
    if v.get("InputProcessingConfiguration").is_some() {
        return Err(unsupported(
            "InputProcessingConfiguration (Lambda preprocessing)",
        ));
    }
    let (source, arn, role) = if let Some(k) = v.get("KinesisStreamsInput") {
        (
            SourceKind::KinesisStream,
            text(k, "ResourceARN"),
            text(k, "RoleARN"),
        )
    } else if v.get("KinesisFirehoseInput").is_some() {
        return Err(unsupported(
            "KinesisFirehoseInput (a delivery stream as the source)",
        ));
    } else {
        return Err(bad(
            "Input must specify KinesisStreamsInput or KinesisFirehoseInput.",
        ));
    };
    Ok(InputMeta {
        id: String::new(),
        name_prefix: text(v, "NamePrefix").to_string(),
        source,
        resource_arn: arn.to_string(),
        role_arn: role.to_string(),
        parallelism: v["InputParallelism"]["Count"].as_u64().unwrap_or(1) as u32,
        schema: schema_of(&v["InputSchema"])?,
        starting_position: None,
    })
}

fn sink_of(v: &Value, suffix: &str) -> Option<(SinkKind, String, String)> {
    for (member, kind) in [
        ("KinesisStreamsOutput", SinkKind::KinesisStream),
        ("KinesisFirehoseOutput", SinkKind::DeliveryStream),
        ("LambdaOutput", SinkKind::Lambda),
    ] {
        let key = format!("{member}{suffix}");
        if let Some(k) = v.get(&key) {
            let arn = k
                .get(format!("ResourceARN{suffix}"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let role = k
                .get(format!("RoleARN{suffix}"))
                .and_then(Value::as_str)
                .unwrap_or("");
            return Some((kind, arn.to_string(), role.to_string()));
        }
    }
    None
}

fn output_of(v: &Value) -> Result<OutputMeta, ApiError> {
    let (sink, arn, role) = sink_of(v, "").ok_or_else(|| {
        bad("Output must specify KinesisStreamsOutput, KinesisFirehoseOutput or LambdaOutput.")
    })?;
    Ok(OutputMeta {
        id: String::new(),
        name: text(v, "Name").to_string(),
        sink,
        resource_arn: arn,
        role_arn: role,
        format: v["DestinationSchema"]["RecordFormatType"]
            .as_str()
            .unwrap_or("JSON")
            .to_string(),
    })
}

fn reference_of(v: &Value) -> Result<ReferenceMeta, ApiError> {
    let s3 = v
        .get("S3ReferenceDataSource")
        .ok_or_else(|| bad("ReferenceDataSource must specify S3ReferenceDataSource."))?;
    Ok(ReferenceMeta {
        id: String::new(),
        table_name: text(v, "TableName").to_string(),
        bucket_arn: text(s3, "BucketARN").to_string(),
        file_key: text(s3, "FileKey").to_string(),
        role_arn: text(s3, "ReferenceRoleARN").to_string(),
        schema: schema_of(&v["ReferenceSchema"])?,
    })
}

fn update_of(v: &Value) -> Result<Update, ApiError> {
    if v.get("CloudWatchLoggingOptionUpdates").is_some() {
        return Err(unsupported("CloudWatchLoggingOptionUpdates"));
    }
    let mut update = Update {
        code: v["ApplicationCodeUpdate"].as_str().map(String::from),
        ..Update::default()
    };
    for i in v["InputUpdates"].as_array().into_iter().flatten() {
        if i.get("InputProcessingConfigurationUpdate").is_some() {
            return Err(unsupported("InputProcessingConfigurationUpdate"));
        }
        if i.get("KinesisFirehoseInputUpdate").is_some() {
            return Err(unsupported("KinesisFirehoseInputUpdate"));
        }
        let source = i.get("KinesisStreamsInputUpdate").map(|k| {
            (
                SourceKind::KinesisStream,
                text(k, "ResourceARNUpdate").to_string(),
                text(k, "RoleARNUpdate").to_string(),
            )
        });
        update.inputs.push((
            text(i, "InputId").to_string(),
            InputPatch {
                name_prefix: i["NamePrefixUpdate"].as_str().map(String::from),
                source,
                schema: i
                    .get("InputSchemaUpdate")
                    .map(schema_patch_of)
                    .transpose()?,
                parallelism: i["InputParallelismUpdate"]["CountUpdate"]
                    .as_u64()
                    .map(|n| n as u32),
            },
        ));
    }
    for o in v["OutputUpdates"].as_array().into_iter().flatten() {
        update.outputs.push((
            text(o, "OutputId").to_string(),
            OutputPatch {
                name: o["NameUpdate"].as_str().map(String::from),
                sink: sink_of(o, "Update"),
                format: o["DestinationSchemaUpdate"]["RecordFormatType"]
                    .as_str()
                    .map(String::from),
            },
        ));
    }
    for r in v["ReferenceDataSourceUpdates"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let s3 = r.get("S3ReferenceDataSourceUpdate").map(|s| {
            (
                text(s, "BucketARNUpdate").to_string(),
                text(s, "FileKeyUpdate").to_string(),
                text(s, "ReferenceRoleARNUpdate").to_string(),
            )
        });
        update.references.push((
            text(r, "ReferenceId").to_string(),
            ReferencePatch {
                table_name: r["TableNameUpdate"].as_str().map(String::from),
                s3,
                schema: r
                    .get("ReferenceSchemaUpdate")
                    .map(|s| {
                        schema_of(s).map(|s| SchemaPatch {
                            format: Some(s.format),
                            encoding: s.encoding,
                            columns: Some(s.columns),
                        })
                    })
                    .transpose()?,
            },
        ));
    }
    Ok(update)
}

fn summary(service: &AnalyticsService, m: &ApplicationMeta) -> Value {
    json!({
        "ApplicationName": m.name,
        "ApplicationARN": service.arn(&m.name),
        "ApplicationStatus": m.status.as_str(),
    })
}

fn schema_json(s: &SourceSchema) -> Value {
    let format = match &s.format {
        RecordFormat::Json { row_path } => json!({
            "RecordFormatType": "JSON",
            "MappingParameters": { "JSONMappingParameters": { "RecordRowPath": row_path } },
        }),
        RecordFormat::Csv {
            row_delimiter,
            column_delimiter,
        } => json!({
            "RecordFormatType": "CSV",
            "MappingParameters": { "CSVMappingParameters": {
                "RecordRowDelimiter": row_delimiter,
                "RecordColumnDelimiter": column_delimiter,
            } },
        }),
    };
    let columns: Vec<Value> = s
        .columns
        .iter()
        .map(|c| {
            let mut v = json!({ "Name": c.name, "SqlType": c.sql_type });
            if let Some(m) = &c.mapping {
                v["Mapping"] = json!(m);
            }
            v
        })
        .collect();
    let mut out = json!({ "RecordFormat": format, "RecordColumns": columns });
    if let Some(e) = &s.encoding {
        out["RecordEncoding"] = json!(e);
    }
    out
}

fn detail(service: &AnalyticsService, m: &ApplicationMeta) -> Value {
    let inputs: Vec<Value> = m
        .inputs
        .iter()
        .map(|i| {
            let mut v = json!({
                "InputId": i.id,
                "NamePrefix": i.name_prefix,
                "InAppStreamNames": i.stream_names(),
                "KinesisStreamsInputDescription": { "ResourceARN": i.resource_arn, "RoleARN": i.role_arn },
                "InputSchema": schema_json(&i.schema),
                "InputParallelism": { "Count": i.parallelism },
            });
            if let Some(p) = &i.starting_position {
                v["InputStartingPositionConfiguration"] = json!({ "InputStartingPosition": p });
            }
            v
        })
        .collect();
    let outputs: Vec<Value> = m
        .outputs
        .iter()
        .map(|o| {
            let target = json!({ "ResourceARN": o.resource_arn, "RoleARN": o.role_arn });
            let member = match o.sink {
                SinkKind::KinesisStream => "KinesisStreamsOutputDescription",
                SinkKind::DeliveryStream => "KinesisFirehoseOutputDescription",
                SinkKind::Lambda => "LambdaOutputDescription",
            };
            json!({
                "OutputId": o.id,
                "Name": o.name,
                member: target,
                "DestinationSchema": { "RecordFormatType": o.format },
            })
        })
        .collect();
    let references: Vec<Value> = m
        .references
        .iter()
        .map(|r| {
            json!({
                "ReferenceId": r.id,
                "TableName": r.table_name,
                "S3ReferenceDataSourceDescription": {
                    "BucketARN": r.bucket_arn,
                    "FileKey": r.file_key,
                    "ReferenceRoleARN": r.role_arn,
                },
                "ReferenceSchema": schema_json(&r.schema),
            })
        })
        .collect();
    let mut out = json!({
        "ApplicationName": m.name,
        "ApplicationARN": service.arn(&m.name),
        "ApplicationStatus": m.status.as_str(),
        "CreateTimestamp": m.created_ms as f64 / 1000.0,
        "LastUpdateTimestamp": m.updated_ms as f64 / 1000.0,
        "InputDescriptions": inputs,
        "OutputDescriptions": outputs,
        "ReferenceDataSourceDescriptions": references,
        "CloudWatchLoggingOptionDescriptions": [],
        "ApplicationCode": m.code,
        "ApplicationVersionId": m.version,
    });
    if let Some(d) = &m.description {
        out["ApplicationDescription"] = json!(d);
    }
    out
}
