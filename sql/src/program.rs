//! A compiled application: its in-application streams and pumps, and the state of
//! their windows.
//!
//! Rows pushed into an input stream run through every pump that reads it; what a pump
//! inserts into an in-application stream runs at once through the pumps reading that
//! stream (depth first), so one [`Program::push`] returns everything that results, in
//! causal order. Pure: time is only the rows' `ROWTIME` and [`Program::advance`].

use crate::functions::{self, TableFunctionFactory};
use crate::plan::{Pump, Rows, Stage, compile_program};
use crate::{Column, RowError, SqlError, SqlType, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// An in-application stream's schema (input streams are given to [`Program::compile`];
/// the others come from `CREATE STREAM` in the code).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamDef {
    /// As written in SQL without quotes, case preserved (`SOURCE_SQL_STREAM_001`).
    pub name: String,
    /// The columns, not counting the implicit `ROWTIME`.
    pub columns: Vec<Column>,
}

/// A reference table's schema (its rows arrive through [`Program::set_table`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<Column>,
}

/// A row that a pump inserted into an in-application stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub stream: String,
    /// The row's `ROWTIME`, milliseconds since the Unix epoch.
    pub rowtime: i64,
    /// In the order of the stream's columns.
    pub values: Vec<Value>,
}

/// A compiled application.
pub struct Program {
    streams: Vec<StreamDef>,
    /// How many of `streams` are inputs (they come first).
    inputs: usize,
    by_name: HashMap<String, usize>,
    pumps: Vec<Pump>,
    /// For each stream, the pumps that read it, in the order of the code.
    readers: Vec<Vec<usize>>,
    tables: Vec<crate::TableDef>,
    /// A fingerprint of the code and schemas, so that state is only restored into
    /// the program that wrote it.
    fingerprint: u64,
    /// Row errors not yet handed out (see [`Program::drain_errors`]).
    errors: Vec<RowError>,
}

/// Rows are at most this wide (a cap on untrusted input).
const MAX_COLUMNS: usize = 10_000;

impl Program {
    /// Parses and plans `code` against the given input streams and reference tables.
    pub fn compile(
        code: &str,
        inputs: &[StreamDef],
        tables: &[TableDef],
    ) -> Result<Program, SqlError> {
        Program::compile_with(code, inputs, tables, &functions::builtin())
    }

    /// [`Program::compile`] with the table functions of `factories` (instead of
    /// [`functions::builtin`]).
    pub fn compile_with(
        code: &str,
        inputs: &[StreamDef],
        tables: &[TableDef],
        factories: &[Box<dyn TableFunctionFactory>],
    ) -> Result<Program, SqlError> {
        let widths = inputs.iter().map(|s| s.columns.len());
        if widths
            .chain(tables.iter().map(|t| t.columns.len()))
            .any(|n| n > MAX_COLUMNS)
        {
            return Err(SqlError {
                line: 1,
                column: 1,
                message: format!("more than {MAX_COLUMNS} columns"),
            });
        }
        let compiled = compile_program(code, inputs, tables, factories)?;
        let mut readers = vec![Vec::new(); compiled.streams.len()];
        for (i, p) in compiled.pumps.iter().enumerate() {
            readers[p.source].push(i);
        }
        let by_name = compiled
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect();
        let mut fp = crate::window::KeyHasher::default();
        std::hash::Hasher::write(&mut fp, code.as_bytes());
        for s in inputs {
            std::hash::Hasher::write(&mut fp, format!("{s:?}").as_bytes());
        }
        Ok(Program {
            streams: compiled.streams,
            inputs: compiled.inputs,
            by_name,
            pumps: compiled.pumps,
            readers,
            tables: tables.to_vec(),
            fingerprint: std::hash::Hasher::finish(&fp),
            errors: Vec::new(),
        })
    }

    /// Every in-application stream: the inputs, then those created by the code.
    pub fn streams(&self) -> Vec<StreamDef> {
        self.streams.clone()
    }

    /// Inserts one row into the input stream `stream`; the rows that pumps emit in
    /// consequence (at once, for row-by-row queries and sliding windows; or windows
    /// that this row's `ROWTIME` closes) are appended to `out`, including rows emitted
    /// into intermediate streams and what they cause downstream.
    ///
    /// An `Err` is the first row error met (a value that does not fit its column, a
    /// failed evaluation in a pump); the row was dropped by that pump only, everything
    /// else was still done and appended to `out`, and further errors of the same push
    /// wait in [`Program::drain_errors`].
    pub fn push(
        &mut self,
        stream: &str,
        rowtime: i64,
        values: Vec<Value>,
        out: &mut Vec<Emitted>,
    ) -> Result<(), RowError> {
        let Some(&s) = self.by_name.get(stream) else {
            return Err(RowError {
                source: stream.to_string(),
                message: "no such input stream".into(),
            });
        };
        if s >= self.inputs {
            return Err(RowError {
                source: stream.to_string(),
                message: "rows can only be pushed into input streams".into(),
            });
        }
        let before = self.errors.len();
        let values = match fit(&self.streams[s].columns, values) {
            Ok(v) => v,
            Err(message) => {
                return Err(RowError {
                    source: stream.to_string(),
                    message,
                });
            }
        };
        self.deliver(s, rowtime, values, out);
        if self.errors.len() > before {
            return Err(self.errors.remove(before));
        }
        Ok(())
    }

    /// Runs one row of stream `s` through its readers, depth first.
    fn deliver(&mut self, s: usize, rt: i64, row: Vec<Value>, out: &mut Vec<Emitted>) {
        let count = self.readers[s].len();
        let mut row = Some(row);
        for k in 0..count {
            let p = self.readers[s][k];
            let r = if k + 1 == count {
                row.take().unwrap_or_default()
            } else {
                row.clone().unwrap_or_default()
            };
            let mut rows = Vec::new();
            let mut errs = Vec::new();
            let stages = &mut self.pumps[p].stages;
            advance_chain(stages, rt, &mut rows, &mut errs);
            run(stages, rt, r, &mut rows, &mut errs);
            self.finish(p, rows, errs, out);
        }
    }

    /// Inserts a pump's output rows into its target and runs them downstream.
    fn finish(&mut self, p: usize, rows: Rows, errs: Vec<String>, out: &mut Vec<Emitted>) {
        if rows.is_empty() && errs.is_empty() {
            return;
        }
        let name = self.pumps[p].name.clone();
        self.errors.extend(errs.into_iter().map(|message| RowError {
            source: name.clone(),
            message,
        }));
        let t = self.pumps[p].target;
        for (rt, values) in rows {
            let cols = &self.streams[t].columns;
            let mut row = vec![Value::Null; cols.len()];
            let mut failed = None;
            for (v, &ci) in values.into_iter().zip(&self.pumps[p].mapping) {
                match crate::expr::convert(v, &cols[ci].ty, false) {
                    Ok(v) => row[ci] = v,
                    Err(e) => {
                        failed = Some(format!("column {}: {e}", cols[ci].name));
                        break;
                    }
                }
            }
            if let Some(message) = failed {
                self.errors.push(RowError {
                    source: name.clone(),
                    message,
                });
                continue;
            }
            out.push(Emitted {
                stream: self.streams[t].name.clone(),
                rowtime: rt,
                values: row.clone(),
            });
            self.deliver(t, rt, row, out);
        }
    }

    /// Time has reached `now` (milliseconds) with no row: closes the windows that end
    /// at or before it and appends their results to `out`.
    pub fn advance(&mut self, now: i64, out: &mut Vec<Emitted>) {
        for p in 0..self.pumps.len() {
            let mut rows = Vec::new();
            let mut errs = Vec::new();
            advance_chain(&mut self.pumps[p].stages, now, &mut rows, &mut errs);
            self.finish(p, rows, errs, out);
        }
    }

    /// The row errors of [`Program::advance`] and those of [`Program::push`] after
    /// the first, oldest first (for the application's error stream).
    pub fn drain_errors(&mut self) -> Vec<RowError> {
        std::mem::take(&mut self.errors)
    }

    /// Replaces the rows of reference table `name`.
    pub fn set_table(&mut self, name: &str, rows: Vec<Vec<Value>>) -> Result<(), RowError> {
        let Some(def) = self.tables.iter().find(|t| t.name == name) else {
            return Err(RowError {
                source: name.to_string(),
                message: "no such reference table".into(),
            });
        };
        let mut fitted = Vec::with_capacity(rows.len());
        for (i, r) in rows.into_iter().enumerate() {
            fitted.push(fit(&def.columns, r).map_err(|m| RowError {
                source: name.to_string(),
                message: format!("row {i}: {m}"),
            })?);
        }
        let shared = Arc::new(fitted);
        for p in &mut self.pumps {
            for s in &mut p.stages {
                if let Stage::Join(j) = s
                    && j.table == name
                {
                    j.rows = shared.clone();
                }
            }
        }
        Ok(())
    }

    /// The state of every window and pump, to be stored with the input positions.
    pub fn checkpoint(&self) -> Vec<u8> {
        let pumps: Vec<serde_json::Value> = self
            .pumps
            .iter()
            .map(|p| serde_json::Value::Array(p.stages.iter().map(|s| s.checkpoint()).collect()))
            .collect();
        let state = serde_json::json!({
            "version": 1,
            "fingerprint": self.fingerprint.to_string(),
            "pumps": pumps,
        });
        serde_json::to_vec(&state).unwrap_or_default()
    }

    /// Restores state written by [`Program::checkpoint`] of a program compiled from
    /// the same code.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        let v: serde_json::Value =
            serde_json::from_slice(state).map_err(|e| format!("checkpoint is not JSON: {e}"))?;
        if v["version"] != 1 {
            return Err("unknown checkpoint version".into());
        }
        if v["fingerprint"].as_str() != Some(self.fingerprint.to_string().as_str()) {
            return Err("checkpoint of a different application code".into());
        }
        let pumps = v["pumps"].as_array().ok_or("checkpoint without pumps")?;
        if pumps.len() != self.pumps.len() {
            return Err("checkpoint does not match the pumps".into());
        }
        for (p, st) in self.pumps.iter_mut().zip(pumps) {
            let stages = st.as_array().ok_or("bad pump state")?;
            if stages.len() != p.stages.len() {
                return Err(format!("checkpoint does not match pump {}", p.name));
            }
            for (s, v) in p.stages.iter_mut().zip(stages) {
                s.restore(v).map_err(|e| format!("pump {}: {e}", p.name))?;
            }
        }
        Ok(())
    }
}

/// Checks a row against a schema, converting values of another type.
fn fit(columns: &[Column], values: Vec<Value>) -> Result<Vec<Value>, String> {
    if values.len() != columns.len() {
        return Err(format!(
            "{} values for {} columns",
            values.len(),
            columns.len()
        ));
    }
    let mut out = values;
    for (v, c) in out.iter_mut().zip(columns) {
        let same = matches!(
            (&*v, &c.ty),
            (Value::Null, _)
                | (Value::Boolean(_), SqlType::Boolean)
                | (Value::Integer(_), SqlType::Integer)
                | (Value::Double(_), SqlType::Double)
                | (Value::Timestamp(_), SqlType::Timestamp)
                | (Value::Date(_), SqlType::Date)
                | (Value::Time(_), SqlType::Time)
        );
        // A string of at most n bytes has at most n characters.
        let short = matches!((&*v, &c.ty), (Value::Varchar(s), SqlType::Varchar(n)) if s.len() <= *n as usize);
        if !same && !short {
            let taken = std::mem::replace(v, Value::Null);
            *v = crate::expr::convert(taken, &c.ty, false)
                .map_err(|e| format!("column {}: {e}", c.name))?;
        }
    }
    Ok(out)
}

/// Runs one row through `stages`; what comes out of the last one goes to `out`.
fn run(stages: &mut [Stage], rt: i64, row: Vec<Value>, out: &mut Rows, errs: &mut Vec<String>) {
    match stages.split_first_mut() {
        None => out.push((rt, row)),
        Some((first, rest)) => {
            if rest.is_empty() {
                return first.process(rt, row, out, errs);
            }
            let mut buf = Vec::new();
            first.process(rt, row, &mut buf, errs);
            for (r, v) in buf {
                run(rest, r, v, out, errs);
            }
        }
    }
}

/// Advances every stage to `now`, feeding what closes into the stages after it.
fn advance_chain(stages: &mut [Stage], now: i64, out: &mut Rows, errs: &mut Vec<String>) {
    for i in 0..stages.len() {
        let (head, tail) = stages.split_at_mut(i + 1);
        let mut buf = Vec::new();
        head[i].advance(now, &mut buf, errs);
        for (r, v) in buf {
            run(tail, r, v, out, errs);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn program_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<super::Program>();
    }
}
