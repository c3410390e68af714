//! Table functions in FROM: `TABLE(NAME(CURSOR(SELECT STREAM ...), arg, ...))`, the
//! shape of the Kinesis Data Analytics machine-learning functions (RANDOM_CUT_FOREST,
//! RANDOM_CUT_FOREST_WITH_EXPLANATION, HOTSPOTS, ...).
//!
//! A function is registered by a [`TableFunctionFactory`]; [`builtin`] lists the
//! factories every [`crate::Program::compile`] knows, and
//! [`crate::Program::compile_with`] takes a list of one's own. The planner hands the
//! factory the constant arguments and the cursor's column types; the factory answers
//! with its output columns and a stateful [`TableFunction`] that sees each cursor
//! row in turn. Functions must be pure like the rest of the crate: no I/O, no clock,
//! no threads, no panics.

use crate::{Column, Value};

/// A running table function: one per pump that calls it.
pub trait TableFunction: Send {
    /// One input row (in the order of the cursor's columns) in; the output rows (in
    /// the order of the declared output columns) out, zero or more. The output rows
    /// carry the input row's ROWTIME. An `Err` drops the row and is reported as a
    /// row error of the pump.
    fn process(&mut self, rowtime: i64, row: &[Value]) -> Result<Vec<Vec<Value>>, String>;

    /// The function's state (a forest, a sketch...) for [`crate::Program::checkpoint`].
    fn checkpoint(&self) -> serde_json::Value;

    /// Restores what [`TableFunction::checkpoint`] returned (of a function created
    /// with the same arguments and input columns).
    fn restore(&mut self, state: &serde_json::Value) -> Result<(), String>;
}

/// Creates [`TableFunction`]s of one name.
pub trait TableFunctionFactory: Send + Sync {
    /// The name as SQL spells it unquoted (upper case), e.g. `RANDOM_CUT_FOREST`.
    fn name(&self) -> &str;

    /// `args`: the constant arguments after the cursor (literals: `Value::Integer`,
    /// `Value::Double`, `Value::Varchar`, ...; `Value::Null` for NULL). `input`: the
    /// cursor's columns. Returns the output columns and the function, or the message
    /// of a compile error (reported at the function's name).
    fn create(
        &self,
        args: &[Value],
        input: &[Column],
    ) -> Result<(Vec<Column>, Box<dyn TableFunction>), String>;
}

/// The table functions every program knows. Register a new one by adding its factory
/// here (e.g. `Box::new(crate::rcf::RandomCutForestFactory)`).
pub fn builtin() -> Vec<Box<dyn TableFunctionFactory>> {
    vec![
        Box::new(crate::rcf::RandomCutForestFactory),
        Box::new(crate::rcf::RandomCutForestWithExplanationFactory),
    ]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::SqlType;

    /// A test function: passes rows through with a running count appended.
    pub struct Counter {
        pub n: i64,
        pub every: i64,
    }

    impl TableFunction for Counter {
        fn process(&mut self, _rowtime: i64, row: &[Value]) -> Result<Vec<Vec<Value>>, String> {
            self.n += 1;
            if self.n % self.every != 0 {
                return Ok(Vec::new());
            }
            let mut r = row.to_vec();
            r.push(Value::Integer(self.n));
            Ok(vec![r])
        }
        fn checkpoint(&self) -> serde_json::Value {
            serde_json::json!(self.n)
        }
        fn restore(&mut self, state: &serde_json::Value) -> Result<(), String> {
            self.n = state.as_i64().ok_or("bad state")?;
            Ok(())
        }
    }

    pub struct CounterFactory;

    impl TableFunctionFactory for CounterFactory {
        fn name(&self) -> &str {
            "EVERY_NTH"
        }
        fn create(
            &self,
            args: &[Value],
            input: &[Column],
        ) -> Result<(Vec<Column>, Box<dyn TableFunction>), String> {
            let every = match args {
                [Value::Integer(n)] if *n > 0 => *n,
                _ => return Err("EVERY_NTH takes one positive integer".into()),
            };
            let mut cols = input.to_vec();
            cols.push(Column {
                name: "N".into(),
                ty: SqlType::Integer,
            });
            Ok((cols, Box::new(Counter { n: 0, every })))
        }
    }

    #[test]
    fn builtin_list_has_unique_names() {
        let names: Vec<String> = builtin().iter().map(|f| f.name().to_string()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        let (cols, mut f) = CounterFactory.create(&[Value::Integer(2)], &[]).unwrap();
        assert_eq!(cols.len(), 1);
        assert!(f.process(0, &[]).unwrap().is_empty());
        assert_eq!(f.process(0, &[]).unwrap(), vec![vec![Value::Integer(2)]]);
    }
}
