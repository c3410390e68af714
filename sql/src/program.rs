//! A compiled application: its in-application streams and pumps, and the state of
//! their windows.

use crate::{Column, RowError, SqlError, Value};

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
pub struct Program {}

impl Program {
    /// Parses and plans `code` against the given input streams and reference tables.
    pub fn compile(
        _code: &str,
        _inputs: &[StreamDef],
        _tables: &[TableDef],
    ) -> Result<Program, SqlError> {
        Err(SqlError {
            line: 1,
            column: 1,
            message: "not implemented".into(),
        })
    }

    /// Every in-application stream: the inputs, then those created by the code.
    pub fn streams(&self) -> Vec<StreamDef> {
        Vec::new()
    }

    /// Inserts one row into the input stream `stream`; the rows that pumps emit in
    /// consequence (at once, for row-by-row queries and sliding windows; or windows
    /// that this row's `ROWTIME` closes) are appended to `out`, including rows emitted
    /// into intermediate streams and what they cause downstream.
    pub fn push(
        &mut self,
        _stream: &str,
        _rowtime: i64,
        _values: Vec<Value>,
        _out: &mut Vec<Emitted>,
    ) -> Result<(), RowError> {
        Ok(())
    }

    /// Time has reached `now` (milliseconds) with no row: closes the windows that end
    /// at or before it and appends their results to `out`.
    pub fn advance(&mut self, _now: i64, _out: &mut Vec<Emitted>) {}

    /// Replaces the rows of reference table `name`.
    pub fn set_table(&mut self, _name: &str, _rows: Vec<Vec<Value>>) -> Result<(), RowError> {
        Ok(())
    }

    /// The state of every window and pump, to be stored with the input positions.
    pub fn checkpoint(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Restores state written by [`Program::checkpoint`] of a program compiled from
    /// the same code.
    pub fn restore(&mut self, _state: &[u8]) -> Result<(), String> {
        Ok(())
    }
}
