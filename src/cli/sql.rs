//! `freshet sql FILE --stream NAME`: runs an analytics application's SQL (the Kinesis
//! Data Analytics dialect, `docs/analytics-sql.md`) against a stream, here in the
//! client, and prints the rows of its output stream as they come: a table on a
//! terminal, JSON lines when piped.
//!
//! The stream is read over the Kinesis API like `freshet tail`; its records are the
//! in-application stream `SOURCE_SQL_STREAM_001` (columns from `--schema`, or inferred
//! from the first records as DiscoverInputSchema does, plus
//! `APPROXIMATE_ARRIVAL_TIME`), with `ROWTIME` = the record's arrival time. Nothing is
//! created on the server; for an application that runs there, use the Kinesis
//! Analytics API (docs/analytics.md).

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use freshet_sql::{Column, Emitted, Program, SqlType, StreamDef, Value};
use serde_json::{Value as Json, json};

use super::client::KinesisClient;
use crate::analytics::model::SourceSchema;
use crate::analytics::schema::{self, RowParser};

/// The input stream's name, as an application with the default NamePrefix has it.
const INPUT: &str = "SOURCE_SQL_STREAM_001";
/// Records sampled to infer a schema.
const SAMPLE: usize = 100;

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// File with the application code (CREATE STREAM / CREATE PUMP statements)
    pub file: PathBuf,
    /// Stream to read as SOURCE_SQL_STREAM_001
    #[arg(long)]
    pub stream: String,
    /// The input schema as JSON, in the API's InputSchema shape ({"RecordFormat": ...,
    /// "RecordColumns": [...]}); inferred from the first records when absent
    #[arg(long)]
    pub schema: Option<PathBuf>,
    /// In-application stream whose rows are printed (default DESTINATION_SQL_STREAM,
    /// else the last stream the code creates)
    #[arg(long)]
    pub output: Option<String>,
    /// Read the stream from its oldest record instead of new records only
    #[arg(long)]
    pub from_start: bool,
    /// Stop when caught up: close every open window, print, exit
    #[arg(long)]
    pub no_follow: bool,
    /// Stop after printing this many rows
    #[arg(long)]
    pub limit: Option<usize>,
    /// JSON lines even on a terminal
    #[arg(long)]
    pub json: bool,
}

fn schema_from_json(doc: &Json) -> anyhow::Result<SourceSchema> {
    use crate::analytics::model::{RecordColumn, RecordFormat};
    let fmt = &doc["RecordFormat"];
    let format = match fmt["RecordFormatType"].as_str() {
        Some("CSV") => {
            let csv = &fmt["MappingParameters"]["CSVMappingParameters"];
            RecordFormat::Csv {
                row_delimiter: csv["RecordRowDelimiter"].as_str().unwrap_or("\n").into(),
                column_delimiter: csv["RecordColumnDelimiter"].as_str().unwrap_or(",").into(),
            }
        }
        Some("JSON") | None => RecordFormat::Json {
            row_path: fmt["MappingParameters"]["JSONMappingParameters"]["RecordRowPath"]
                .as_str()
                .unwrap_or("$")
                .into(),
        },
        Some(other) => bail!("RecordFormatType {other} is not JSON or CSV"),
    };
    let columns = doc["RecordColumns"]
        .as_array()
        .context("the schema has no RecordColumns")?
        .iter()
        .map(|c| RecordColumn {
            name: c["Name"].as_str().unwrap_or_default().to_string(),
            mapping: c["Mapping"].as_str().map(String::from),
            sql_type: c["SqlType"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    Ok(SourceSchema {
        format,
        encoding: None,
        columns,
    })
}

/// One record as read: arrival (ms) and data.
type Record = (i64, Vec<u8>);

/// Reads every shard of a stream, following children of closed shards.
struct Reader<'a> {
    client: &'a KinesisClient,
    stream: String,
    cursors: Vec<(String, String)>,
    known: HashSet<String>,
}

impl<'a> Reader<'a> {
    async fn open(
        client: &'a KinesisClient,
        stream: &str,
        from_start: bool,
    ) -> anyhow::Result<Self> {
        let shards = client
            .call("ListShards", json!({"StreamName": stream}))
            .await?;
        let all: Vec<Json> = shards["Shards"].as_array().cloned().unwrap_or_default();
        let mut reader = Reader {
            client,
            stream: stream.to_string(),
            cursors: Vec::new(),
            known: HashSet::new(),
        };
        for s in &all {
            let id = s["ShardId"].as_str().unwrap_or_default().to_string();
            reader.known.insert(id.clone());
            let parent_present = s["ParentShardId"]
                .as_str()
                .is_some_and(|p| all.iter().any(|x| x["ShardId"] == p));
            let open = !s["SequenceNumberRange"]["EndingSequenceNumber"].is_string();
            if (from_start && !parent_present) || (!from_start && open) {
                let kind = if from_start { "TRIM_HORIZON" } else { "LATEST" };
                reader.add(&id, kind).await?;
            }
        }
        Ok(reader)
    }

    async fn add(&mut self, shard: &str, kind: &str) -> anyhow::Result<()> {
        let it = self
            .client
            .call(
                "GetShardIterator",
                json!({"StreamName": self.stream, "ShardId": shard, "ShardIteratorType": kind}),
            )
            .await?;
        self.cursors.push((
            shard.to_string(),
            it["ShardIterator"].as_str().unwrap_or_default().to_string(),
        ));
        Ok(())
    }

    /// One read of every shard: the records in arrival order, and whether any shard
    /// is still behind.
    async fn poll(&mut self) -> anyhow::Result<(Vec<Record>, bool)> {
        let mut records = Vec::new();
        let mut behind = false;
        let mut next = Vec::new();
        let mut children = Vec::new();
        for (shard, it) in std::mem::take(&mut self.cursors) {
            let out = self
                .client
                .call("GetRecords", json!({"ShardIterator": it}))
                .await?;
            behind |= out["MillisBehindLatest"].as_i64().unwrap_or(0) > 0;
            for r in out["Records"].as_array().into_iter().flatten() {
                let data = STANDARD
                    .decode(r["Data"].as_str().unwrap_or_default())
                    .unwrap_or_default();
                let arrival = (r["ApproximateArrivalTimestamp"].as_f64().unwrap_or(0.0) * 1000.0)
                    .round() as i64;
                records.push((arrival, data));
            }
            match out["NextShardIterator"].as_str() {
                Some(n) => next.push((shard, n.to_string())),
                None => {
                    for c in out["ChildShards"].as_array().into_iter().flatten() {
                        if let Some(id) = c["ShardId"].as_str()
                            && self.known.insert(id.to_string())
                        {
                            children.push(id.to_string());
                        }
                    }
                }
            }
        }
        self.cursors = next;
        for c in children {
            self.add(&c, "TRIM_HORIZON").await?;
            behind = true;
        }
        records.sort_by_key(|(t, _)| *t);
        Ok((records, behind))
    }
}

/// Prints rows: a padded table on a terminal (the header once, widths from the
/// first rows), JSON lines otherwise.
struct Printer {
    columns: Vec<Column>,
    table: bool,
    widths: Vec<usize>,
    printed: usize,
}

impl Printer {
    fn cell(v: &Value) -> String {
        match schema::to_json(v) {
            Json::String(s) => s,
            Json::Null => "NULL".into(),
            other => other.to_string(),
        }
    }

    fn print(&mut self, rows: &[Emitted]) -> anyhow::Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if self.table && self.printed == 0 && !rows.is_empty() {
            let mut names = vec!["ROWTIME".to_string()];
            names.extend(self.columns.iter().map(|c| c.name.clone()));
            self.widths = names.iter().map(|n| n.len().max(8)).collect();
            self.widths[0] = 23;
            for r in rows.iter().take(20) {
                for (i, v) in r.values.iter().enumerate() {
                    self.widths[i + 1] = self.widths[i + 1].max(Self::cell(v).len());
                }
            }
            let head: Vec<String> = names
                .iter()
                .zip(&self.widths)
                .map(|(n, w)| format!("{n:<w$}"))
                .collect();
            writeln!(out, "{}", head.join("  "))?;
            let rule: Vec<String> = self.widths.iter().map(|w| "-".repeat(*w)).collect();
            writeln!(out, "{}", rule.join("  "))?;
        }
        for r in rows {
            if self.table {
                let mut cells = vec![schema::format_timestamp(r.rowtime)];
                cells.extend(r.values.iter().map(Self::cell));
                let line: Vec<String> = cells
                    .iter()
                    .zip(&self.widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                writeln!(out, "{}", line.join("  ").trim_end())?;
            } else {
                let mut obj = serde_json::Map::new();
                obj.insert("ROWTIME".into(), json!(schema::format_timestamp(r.rowtime)));
                for (c, v) in self.columns.iter().zip(&r.values) {
                    obj.insert(c.name.clone(), schema::to_json(v));
                }
                writeln!(out, "{}", Json::Object(obj))?;
            }
            self.printed += 1;
        }
        out.flush()?;
        Ok(())
    }
}

pub async fn sql(client: &KinesisClient, args: SqlArgs) -> anyhow::Result<()> {
    let code = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let mut reader = Reader::open(client, &args.stream, args.from_start).await?;
    let mut pending: Vec<Record> = Vec::new();
    let schema = match &args.schema {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            schema_from_json(&serde_json::from_str(&text).context("the schema is not JSON")?)?
        }
        None => {
            // Infer from the first records (waiting for some when following).
            loop {
                let (records, behind) = reader.poll().await?;
                pending.extend(records);
                if pending.len() >= SAMPLE || (!behind && !pending.is_empty()) {
                    break;
                }
                if !behind && args.no_follow {
                    bail!("the stream has no records to infer a schema from; give --schema");
                }
                if !behind {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let samples: Vec<&[u8]> = pending
                .iter()
                .take(SAMPLE)
                .map(|(_, d)| d.as_slice())
                .collect();
            let s = schema::discover(&samples).map_err(anyhow::Error::msg)?;
            let cols: Vec<String> = s
                .columns
                .iter()
                .map(|c| format!("{} {}", c.name, c.sql_type))
                .collect();
            eprintln!("{INPUT} ({})", cols.join(", "));
            s
        }
    };
    let parser = RowParser::new(&schema).map_err(anyhow::Error::msg)?;
    let mut columns = RowParser::columns(&schema).map_err(anyhow::Error::msg)?;
    columns.push(Column {
        name: crate::analytics::ARRIVAL_COLUMN.into(),
        ty: SqlType::Timestamp,
    });
    let input = StreamDef {
        name: INPUT.into(),
        columns,
    };
    let mut program = Program::compile(&code, &[input], &[]).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: {}",
            args.file.display(),
            e.line,
            e.column,
            e.message
        )
    })?;
    let streams = program.streams();
    let output = match &args.output {
        Some(o) => streams
            .iter()
            .find(|s| &s.name == o)
            .with_context(|| format!("the code creates no stream {o}"))?,
        None => streams
            .iter()
            .find(|s| s.name == "DESTINATION_SQL_STREAM")
            .or_else(|| streams.iter().rev().find(|s| s.name != INPUT))
            .context("the code creates no stream to print")?,
    }
    .clone();
    let mut printer = Printer {
        columns: output.columns.clone(),
        table: std::io::stdout().is_terminal() && !args.json,
        widths: Vec::new(),
        printed: 0,
    };
    let mut last_rowtime = i64::MIN;
    let mut out = Vec::new();
    let mut errors = 0u64;
    loop {
        let (records, behind) = if pending.is_empty() {
            reader.poll().await?
        } else {
            (std::mem::take(&mut pending), true)
        };
        for (arrival, data) in &records {
            let rowtime = (*arrival).max(last_rowtime);
            last_rowtime = rowtime;
            match parser.parse(data) {
                Ok(rows) => {
                    for mut row in rows {
                        row.push(Value::Timestamp(*arrival));
                        if let Err(e) = program.push(INPUT, rowtime, row, &mut out) {
                            errors += 1;
                            eprintln!("row dropped: {e}");
                        }
                    }
                }
                Err(e) => {
                    errors += 1;
                    eprintln!("record dropped: {e}");
                }
            }
        }
        let caught_up = !behind && records.is_empty();
        if caught_up && args.no_follow {
            // The end of the input: every window closes.
            program.advance(i64::MAX / 2, &mut out);
        } else {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            // Records may still arrive with an arrival time up to a moment ago.
            program.advance(now - 1000, &mut out);
        }
        let mut rows: Vec<Emitted> = out.drain(..).filter(|e| e.stream == output.name).collect();
        if let Some(limit) = args.limit {
            rows.truncate(limit.saturating_sub(printer.printed));
        }
        printer.print(&rows)?;
        if args.limit.is_some_and(|l| printer.printed >= l) || (caught_up && args.no_follow) {
            break;
        }
        if caught_up {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if errors > 0 {
        eprintln!("{errors} records or rows could not be processed");
    }
    Ok(())
}
