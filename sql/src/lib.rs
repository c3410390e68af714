//! The SQL of Freshet's analytics applications: the Kinesis Data Analytics (SQL
//! applications) dialect, parsed, planned and evaluated over unbounded streams of rows.
//!
//! Follows the Amazon Kinesis Data Analytics SQL Reference and the SQL developer guide
//! (streams and pumps, `ROWTIME`, tumbling windows by `STEP`/`FLOOR`, sliding windows,
//! `WINDOWED BY STAGGER`, aggregates, scalar functions, joins with reference tables).
//! docs/analytics-sql.md lists exactly what is supported.
//!
//! Pure: no I/O, no clock reads, no threads. Time enters only as the `ROWTIME` of the
//! rows pushed in and through [`Program::advance`], so every result is reproducible in
//! a test. The application runtime (`src/analytics/` of the server) reads the input
//! streams, turns records into rows by the application's input schema, feeds them here
//! and writes the rows that come out to the configured outputs.
//!
//! The entry point is [`Program::compile`]: the application code and the schemas of
//! its input streams (and reference tables) in, a program out — or a [`SqlError`] that
//! says what is wrong and where (line and column).
//!
//! Modules: `lexer` (tokens), `parser` (to `ast`), `plan` (names, types, stages),
//! `expr` (scalar evaluation), `window` (tumbling, stagger, sliding aggregation),
//! `time` (calendar and formats), [`functions`] (table functions), `program`;
//! [`rcf`] (RANDOM_CUT_FOREST) and [`sketch`] (TOP_K_ITEMS_TUMBLING,
//! COUNT_DISTINCT_ITEMS_TUMBLING) as state machines.

mod ast;
mod error;
mod expr;
pub mod functions;
mod lexer;
mod parser;
mod plan;
mod program;
pub mod rcf;
pub mod sketch;
pub mod time;
mod value;
mod window;

pub use error::{RowError, SqlError};
pub use functions::{TableFunction, TableFunctionFactory};
pub use program::{Emitted, Program, StreamDef, TableDef};
pub use value::{Column, SqlType, Value};
