//! Errors of compilation (with their position in the application code) and of
//! evaluation of a single row (which go to the application's `error_stream`).

use std::fmt;

/// Application code that does not parse or plan: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlError {
    /// 1-based line of the offending token in the application code.
    pub line: u32,
    /// 1-based column (in characters) of the offending token.
    pub column: u32,
    pub message: String,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for SqlError {}

/// A row that could not be evaluated (a cast that fails, a type that does not fit):
/// the row is dropped from the pump and reported; the application keeps running.
#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    /// The in-application stream or pump where evaluation failed.
    pub source: String,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)
    }
}

impl std::error::Error for RowError {}
