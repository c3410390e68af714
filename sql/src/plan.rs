//! The planner: resolves names and types of parsed statements and builds each pump's
//! chain of stages (join with a reference table, filter, projection or windowed
//! aggregation, table function), with every column reference turned into an index.
//!
//! Follows the Kinesis Data Analytics SQL reference for what is valid where:
//! aggregates need a GROUP BY on a monotonic ROWTIME expression, WINDOWED BY STAGGER
//! or an OVER window; columns of a grouped query must be grouped or aggregated;
//! INSERT maps select items to the target's columns by position. Every error carries
//! the position of the offending token.

use crate::ast::{self, ExprKind, Frame, Pos, Source, Statement, Unit};
use crate::expr::{Arith, Cmp, Expr, Func, Ty, castable, convert};
use crate::functions::{TableFunction, TableFunctionFactory};
use crate::window::{
    AggKind, AggSpec, GroupOutput, Sliding, SlidingWindow, Stagger, Tumbling, emit_row,
};
use crate::{Column, SqlError, StreamDef, TableDef, Value};
use std::sync::Arc;

fn err(pos: Pos, message: impl Into<String>) -> SqlError {
    SqlError {
        line: pos.line.max(1),
        column: pos.column.max(1),
        message: message.into(),
    }
}

/// A reference table joined into a stream.
pub(crate) struct JoinStage {
    pub table: String,
    pub left_outer: bool,
    pub on: Expr,
    /// The number of table columns (NULL-padded for LEFT OUTER rows without a match).
    pub width: usize,
    /// The table's rows, shared with the program (replaced by `set_table`).
    pub rows: Arc<Vec<Vec<Value>>>,
}

/// One step of a pump; rows flow from the first stage to the last.
pub(crate) enum Stage {
    Filter(Expr),
    Project {
        select: Vec<Expr>,
        rowtime: Option<Expr>,
    },
    Join(JoinStage),
    Tumbling(Tumbling),
    Stagger(Stagger),
    Sliding(Sliding),
    Function(Box<dyn TableFunction>),
}

pub(crate) type Rows = Vec<(i64, Vec<Value>)>;

impl Stage {
    pub fn process(&mut self, rt: i64, row: Vec<Value>, out: &mut Rows, errs: &mut Vec<String>) {
        match self {
            Stage::Filter(e) => match e.eval(rt, &row) {
                Ok(Value::Boolean(true)) => out.push((rt, row)),
                Ok(_) => {}
                Err(e) => errs.push(e),
            },
            Stage::Project { select, rowtime } => {
                emit_row(select, rowtime.as_ref(), rt, &row, out, errs)
            }
            Stage::Join(j) => {
                let mut matched = false;
                for t in j.rows.iter() {
                    let mut combined = Vec::with_capacity(row.len() + t.len());
                    combined.extend(row.iter().cloned());
                    combined.extend(t.iter().cloned());
                    match j.on.eval(rt, &combined) {
                        Ok(Value::Boolean(true)) => {
                            matched = true;
                            out.push((rt, combined));
                        }
                        Ok(_) => {}
                        Err(e) => errs.push(e),
                    }
                }
                if !matched && j.left_outer {
                    let mut combined = row;
                    combined.resize(combined.len() + j.width, Value::Null);
                    out.push((rt, combined));
                }
            }
            Stage::Tumbling(t) => t.process(rt, &row, errs),
            Stage::Stagger(s) => s.process(rt, &row, errs),
            Stage::Sliding(s) => s.process(rt, row, out, errs),
            Stage::Function(f) => match f.process(rt, &row) {
                Ok(rows) => out.extend(rows.into_iter().map(|r| (rt, r))),
                Err(e) => errs.push(e),
            },
        }
    }

    pub fn advance(&mut self, now: i64, out: &mut Rows, errs: &mut Vec<String>) {
        match self {
            Stage::Tumbling(t) => t.advance(now, out, errs),
            Stage::Stagger(s) => s.advance(now, out, errs),
            Stage::Sliding(s) => s.advance(now),
            _ => {}
        }
    }

    pub fn checkpoint(&self) -> serde_json::Value {
        match self {
            Stage::Tumbling(t) => t.checkpoint(),
            Stage::Stagger(s) => s.checkpoint(),
            Stage::Sliding(s) => s.checkpoint(),
            Stage::Function(f) => f.checkpoint(),
            _ => serde_json::Value::Null,
        }
    }

    pub fn restore(&mut self, v: &serde_json::Value) -> Result<(), String> {
        match self {
            Stage::Tumbling(t) => t.restore(v),
            Stage::Stagger(s) => s.restore(v),
            Stage::Sliding(s) => s.restore(v),
            Stage::Function(f) => f.restore(v),
            _ => Ok(()),
        }
    }
}

/// A compiled pump: reads `source`, runs `stages`, inserts into `target`.
pub(crate) struct Pump {
    pub name: String,
    pub source: usize,
    pub target: usize,
    pub stages: Vec<Stage>,
    /// For each output item, the index of the target column it fills.
    pub mapping: Vec<usize>,
}

/// Everything compiled from the code.
pub(crate) struct Compiled {
    pub streams: Vec<StreamDef>,
    pub inputs: usize,
    pub pumps: Vec<Pump>,
}

struct ScopeCol {
    quals: Vec<String>,
    name: String,
    ty: Ty,
}

#[derive(Default)]
struct Scope {
    cols: Vec<ScopeCol>,
    /// Names that qualify the stream itself (`"S".ROWTIME`).
    quals: Vec<String>,
}

struct WinDef {
    partition: Vec<Expr>,
    frame: Frame,
}

/// Aggregates met while compiling a select list or HAVING.
#[derive(Default)]
struct Aggs {
    enabled: bool,
    plain: Vec<(AggSpec, Ty)>,
    over: Vec<(AggSpec, usize)>,
    windows: Vec<WinDef>,
    named: Vec<(String, usize)>,
}

struct Planned {
    source: usize,
    stages: Vec<Stage>,
    outputs: Vec<(String, Ty, Pos)>,
}

struct Planner<'a> {
    streams: Vec<StreamDef>,
    tables: &'a [TableDef],
    factories: &'a [Box<dyn TableFunctionFactory>],
}

pub(crate) fn compile_program(
    code: &str,
    inputs: &[StreamDef],
    tables: &[TableDef],
    factories: &[Box<dyn TableFunctionFactory>],
) -> Result<Compiled, SqlError> {
    let statements = crate::parser::parse_program(code)?;
    let mut p = Planner {
        streams: inputs.to_vec(),
        tables,
        factories,
    };
    let origin = Pos { line: 1, column: 1 };
    for (i, s) in inputs.iter().enumerate() {
        if inputs[..i].iter().any(|o| o.name == s.name) {
            return Err(err(origin, format!("input stream {} given twice", s.name)));
        }
    }
    let mut pumps: Vec<Pump> = Vec::new();
    for st in &statements {
        match st {
            Statement::CreateStream { name, pos, columns } => {
                if p.streams.iter().any(|s| &s.name == name)
                    || tables.iter().any(|t| &t.name == name)
                {
                    return Err(err(*pos, format!("Object '{name}' already exists")));
                }
                let mut cols: Vec<Column> = Vec::new();
                for (c, ty, cpos) in columns {
                    if cols.iter().any(|x| &x.name == c) || c == "ROWTIME" {
                        return Err(err(*cpos, format!("Duplicate column name '{c}'")));
                    }
                    cols.push(Column {
                        name: c.clone(),
                        ty: ty.clone(),
                    });
                }
                p.streams.push(StreamDef {
                    name: name.clone(),
                    columns: cols,
                });
            }
            Statement::CreatePump {
                name,
                pos,
                target,
                target_pos,
                columns,
                query,
            } => {
                if pumps.iter().any(|x| &x.name == name) {
                    return Err(err(*pos, format!("Object '{name}' already exists")));
                }
                let Some(t) = p.streams.iter().position(|s| &s.name == target) else {
                    return Err(err(*target_pos, format!("Object '{target}' not found")));
                };
                if t < inputs.len() {
                    return Err(err(
                        *target_pos,
                        format!("cannot insert into the input stream '{target}'"),
                    ));
                }
                let planned = p.query(query)?;
                let tcols = &p.streams[t].columns;
                let mapping: Vec<usize> = match columns {
                    None => (0..tcols.len()).collect(),
                    Some(list) => {
                        let mut m = Vec::new();
                        for (c, cpos) in list {
                            let Some(i) = tcols.iter().position(|x| &x.name == c) else {
                                return Err(err(*cpos, format!("Unknown target column '{c}'")));
                            };
                            if m.contains(&i) {
                                return Err(err(
                                    *cpos,
                                    format!("Target column '{c}' is assigned more than once"),
                                ));
                            }
                            m.push(i);
                        }
                        m
                    }
                };
                if mapping.len() != planned.outputs.len() {
                    return Err(err(
                        query.pos,
                        format!(
                            "Number of INSERT target columns ({}) does not equal number of source items ({})",
                            mapping.len(),
                            planned.outputs.len()
                        ),
                    ));
                }
                for ((oname, ty, opos), &ci) in planned.outputs.iter().zip(&mapping) {
                    let col = &tcols[ci];
                    if !castable(*ty, &col.ty) {
                        return Err(err(
                            *opos,
                            format!(
                                "Cannot assign to target field '{}' of type {} from source field '{}' of type {}",
                                col.name,
                                crate::expr::type_text(&col.ty),
                                oname,
                                ty.name()
                            ),
                        ));
                    }
                }
                pumps.push(Pump {
                    name: name.clone(),
                    source: planned.source,
                    target: t,
                    stages: planned.stages,
                    mapping,
                });
                if creates_cycle(&pumps, p.streams.len()) {
                    return Err(err(*pos, format!("pump '{name}' makes a cycle of streams")));
                }
            }
        }
    }
    Ok(Compiled {
        streams: p.streams,
        inputs: inputs.len(),
        pumps,
    })
}

fn creates_cycle(pumps: &[Pump], n: usize) -> bool {
    // Depth-first search over streams; edges source -> target.
    fn visit(s: usize, pumps: &[Pump], state: &mut [u8]) -> bool {
        state[s] = 1;
        for p in pumps.iter().filter(|p| p.source == s) {
            match state.get(p.target).copied() {
                Some(1) => return true,
                Some(0) if visit(p.target, pumps, state) => return true,
                _ => {}
            }
        }
        state[s] = 2;
        false
    }
    let mut state = vec![0u8; n];
    (0..n).any(|s| state[s] == 0 && visit(s, pumps, &mut state))
}

fn is_aggregate(name: &str) -> Option<AggKind> {
    Some(match name {
        "COUNT" => AggKind::Count,
        "SUM" => AggKind::SumReal,
        "AVG" => AggKind::Avg,
        "MIN" => AggKind::Min,
        "MAX" => AggKind::Max,
        "VAR_SAMP" | "VARIANCE" => AggKind::VarSamp,
        "VAR_POP" => AggKind::VarPop,
        "STDDEV_SAMP" | "STDDEV" => AggKind::StddevSamp,
        "STDDEV_POP" => AggKind::StddevPop,
        "FIRST_VALUE" => AggKind::First,
        "LAST_VALUE" => AggKind::Last,
        _ => return None,
    })
}

fn unify(a: Ty, b: Ty) -> Option<Ty> {
    Some(match (a, b) {
        (Ty::Null, t) | (t, Ty::Null) => t,
        (x, y) if x == y => x,
        (Ty::Decimal(_), Ty::Decimal(_)) => Ty::Double,
        (x, y) if x.numeric() && y.numeric() => Ty::Double,
        _ => return None,
    })
}

fn comparable(a: Ty, b: Ty) -> bool {
    unify(a, b).is_some()
}

fn bool_ty(t: Ty) -> bool {
    matches!(t, Ty::Bool | Ty::Null)
}

fn text_ty(t: Ty) -> bool {
    matches!(t, Ty::Varchar | Ty::Null)
}

/// The value of a constant expression (table function arguments).
fn constant(e: &Expr) -> Option<Value> {
    fn has_input(e: &mut Expr) -> bool {
        let mut found = matches!(e, Expr::Col(_) | Expr::Rowtime | Expr::Agg(_));
        e.children_mut(&mut |c| found |= has_input(c));
        found
    }
    let mut probe = e.clone();
    if has_input(&mut probe) {
        return None;
    }
    e.eval(0, &[]).ok()
}

impl Planner<'_> {
    fn query(&mut self, q: &ast::Query) -> Result<Planned, SqlError> {
        let mut stages = Vec::new();
        let (source, mut scope) = match &q.from.source {
            Source::Named { name, alias, pos } => {
                let Some(i) = self.streams.iter().position(|s| &s.name == name) else {
                    if self.tables.iter().any(|t| &t.name == name) {
                        return Err(err(
                            *pos,
                            format!("'{name}' is a reference table: JOIN it to a stream"),
                        ));
                    }
                    return Err(err(*pos, format!("Object '{name}' not found")));
                };
                let mut quals = vec![name.clone()];
                quals.extend(alias.clone());
                let cols = self.streams[i]
                    .columns
                    .iter()
                    .map(|c| ScopeCol {
                        quals: quals.clone(),
                        name: c.name.clone(),
                        ty: Ty::of(&c.ty),
                    })
                    .collect();
                (i, Scope { cols, quals })
            }
            Source::Subquery { query, alias } => {
                let inner = self.query(query)?;
                stages = inner.stages;
                let quals: Vec<String> = alias.iter().cloned().collect();
                let cols = inner
                    .outputs
                    .into_iter()
                    .map(|(name, ty, _)| ScopeCol {
                        quals: quals.clone(),
                        name,
                        ty,
                    })
                    .collect();
                (inner.source, Scope { cols, quals })
            }
            Source::Function {
                name,
                pos,
                cursor,
                args,
                alias,
            } => {
                let inner = self.query(cursor)?;
                stages = inner.stages;
                let Some(factory) = self.factories.iter().find(|f| f.name() == name) else {
                    return Err(err(
                        *pos,
                        format!("No match found for table function {name}"),
                    ));
                };
                let mut values = Vec::new();
                for a in args {
                    let (e, _) = self.expr(a, &Scope::default(), &mut Aggs::default())?;
                    values.push(constant(&e).ok_or_else(|| {
                        err(a.pos, format!("arguments of {name} must be constants"))
                    })?);
                }
                let input: Vec<Column> = inner
                    .outputs
                    .iter()
                    .map(|(n, t, _)| Column {
                        name: n.clone(),
                        ty: t.sql(),
                    })
                    .collect();
                let (cols, f) = factory
                    .create(&values, &input)
                    .map_err(|m| err(*pos, format!("{name}: {m}")))?;
                stages.push(Stage::Function(f));
                let quals: Vec<String> = alias.iter().cloned().collect();
                let cols = cols
                    .into_iter()
                    .map(|c| ScopeCol {
                        quals: quals.clone(),
                        name: c.name,
                        ty: Ty::of(&c.ty),
                    })
                    .collect();
                (inner.source, Scope { cols, quals })
            }
        };
        if let Some(j) = &q.from.join {
            let Some(t) = self.tables.iter().find(|t| t.name == j.table) else {
                let msg = if self.streams.iter().any(|s| s.name == j.table) {
                    format!(
                        "joins of two streams are not supported ('{}' is a stream)",
                        j.table
                    )
                } else {
                    format!("Object '{}' not found", j.table)
                };
                return Err(err(j.pos, msg));
            };
            let mut quals = vec![t.name.clone()];
            quals.extend(j.alias.clone());
            for c in &t.columns {
                scope.cols.push(ScopeCol {
                    quals: quals.clone(),
                    name: c.name.clone(),
                    ty: Ty::of(&c.ty),
                });
            }
            let (on, ty) = self.expr(&j.on, &scope, &mut Aggs::default())?;
            if !bool_ty(ty) {
                return Err(err(j.on.pos, "the ON condition must be BOOLEAN"));
            }
            stages.push(Stage::Join(JoinStage {
                table: t.name.clone(),
                left_outer: j.left_outer,
                on,
                width: t.columns.len(),
                rows: Arc::new(Vec::new()),
            }));
        }
        if let Some(f) = &q.filter {
            let (e, ty) = self.expr(f, &scope, &mut Aggs::default())?;
            if !bool_ty(ty) {
                return Err(err(f.pos, "the WHERE condition must be BOOLEAN"));
            }
            stages.push(Stage::Filter(e));
        }

        // The select list, aggregates collected.
        let mut aggs = Aggs {
            enabled: true,
            ..Aggs::default()
        };
        for (name, spec, pos) in &q.windows {
            if aggs.named.iter().any(|(n, _)| n == name) {
                return Err(err(*pos, format!("window '{name}' defined twice")));
            }
            let w = self.window(spec, &scope)?;
            aggs.windows.push(w);
            aggs.named.push((name.clone(), aggs.windows.len() - 1));
        }
        let mut items: Vec<(String, Expr, Ty, Pos)> = Vec::new();
        for (k, item) in q.items.iter().enumerate() {
            match item {
                ast::SelectItem::Wildcard(qual, pos) => {
                    let before = items.len();
                    for (i, c) in scope.cols.iter().enumerate() {
                        if qual.as_ref().is_none_or(|q| c.quals.contains(q)) {
                            items.push((c.name.clone(), Expr::Col(i), c.ty, *pos));
                        }
                    }
                    if items.len() == before {
                        return Err(err(*pos, "the wildcard matches no column"));
                    }
                }
                ast::SelectItem::Expr(e, alias) => {
                    let (c, ty) = self.expr(e, &scope, &mut aggs)?;
                    let name = match (alias, &e.kind) {
                        (Some(a), _) => a.clone(),
                        (None, ExprKind::Column(_, n)) => n.clone(),
                        (None, ExprKind::CurrentRowTimestamp) => "CURRENT_ROW_TIMESTAMP".into(),
                        _ => format!("EXPR${k}"),
                    };
                    items.push((name, c, ty, e.pos));
                }
            }
        }
        let mut having = None;
        if let Some(h) = &q.having {
            let (e, ty) = self.expr(h, &scope, &mut aggs)?;
            if !bool_ty(ty) {
                return Err(err(h.pos, "the HAVING condition must be BOOLEAN"));
            }
            having = Some((e, h.pos));
        }
        let grouped = q.stagger.is_some() || !q.group_by.is_empty();
        if !aggs.over.is_empty() && (grouped || !aggs.plain.is_empty()) {
            return Err(err(
                q.pos,
                "a query cannot mix OVER windows with GROUP BY or WINDOWED BY aggregates",
            ));
        }
        if !aggs.plain.is_empty() && !grouped {
            return Err(err(
                q.pos,
                "aggregates on a stream need GROUP BY with a monotonic ROWTIME expression (STEP(ROWTIME BY ...) or FLOOR(ROWTIME TO ...)), WINDOWED BY STAGGER, or OVER",
            ));
        }
        if having.is_some() && !grouped {
            return Err(err(q.pos, "HAVING needs GROUP BY or WINDOWED BY"));
        }

        // ROWTIME items set the output ROWTIME instead of filling a column.
        let mut rowtime = None;
        let mut outputs = Vec::new();
        let mut select = Vec::new();
        for (name, e, ty, pos) in items {
            if name == "ROWTIME" {
                if !matches!(ty, Ty::Timestamp) {
                    return Err(err(pos, "ROWTIME must be a TIMESTAMP"));
                }
                rowtime = Some((e, pos));
            } else {
                outputs.push((name, ty, pos));
                select.push((e, pos));
            }
        }

        if grouped {
            let (key_asts, stagger) = match &q.stagger {
                Some(s) => (&s.partition, Some(s)),
                None => (&q.group_by, None),
            };
            let mut keys = Vec::new();
            for k in key_asts {
                let (e, _) = self.expr(k, &scope, &mut Aggs::default())?;
                keys.push(e);
            }
            let n = keys.len();
            let rebind_all = |list: Vec<(Expr, Pos)>| -> Result<Vec<Expr>, SqlError> {
                list.into_iter()
                    .map(|(mut e, pos)| {
                        rebind_group(&mut e, &keys, n, pos, &scope)?;
                        Ok(e)
                    })
                    .collect()
            };
            let select = rebind_all(select)?;
            let rowtime = rebind_all(rowtime.into_iter().collect())?.pop();
            let having = rebind_all(having.into_iter().collect())?.pop();
            let specs: Vec<AggSpec> = aggs.plain.into_iter().map(|(s, _)| s).collect();
            let output = GroupOutput {
                having,
                select,
                rowtime,
            };
            let stage = match stagger {
                Some(s) => Stage::Stagger(Stagger::new(keys, s.range_ms, specs, output)),
                None => {
                    let found = keys
                        .iter()
                        .enumerate()
                        .find_map(|(i, k)| window_width(k).map(|w| (i, w)));
                    let Some((wk, width)) = found else {
                        return Err(err(
                            q.group_by[0].pos,
                            "GROUP BY on a stream needs a monotonic expression of ROWTIME: STEP(ROWTIME BY INTERVAL ...) or FLOOR(ROWTIME TO SECOND|MINUTE|HOUR|DAY)",
                        ));
                    };
                    Stage::Tumbling(Tumbling::new(keys, wk, width, specs, output))
                }
            };
            stages.push(stage);
        } else if !aggs.over.is_empty() {
            let base = scope.cols.len();
            let rebind = |(mut e, _pos): (Expr, Pos)| {
                rebind_over(&mut e, base);
                e
            };
            let select: Vec<Expr> = select.into_iter().map(rebind).collect();
            let rowtime = rowtime.map(rebind);
            let mut windows: Vec<SlidingWindow> = aggs
                .windows
                .into_iter()
                .map(|w| SlidingWindow::new(w.partition, w.frame, Vec::new()))
                .collect();
            let mut specs = Vec::new();
            for (i, (spec, w)) in aggs.over.into_iter().enumerate() {
                windows[w].aggs.push(i);
                specs.push(spec);
            }
            windows.retain(|w| !w.aggs.is_empty());
            stages.push(Stage::Sliding(Sliding::new(
                specs, windows, select, rowtime,
            )));
        } else {
            let trivial = rowtime.is_none()
                && select.len() == scope.cols.len()
                && select
                    .iter()
                    .enumerate()
                    .all(|(i, (e, _))| *e == Expr::Col(i));
            if !trivial {
                stages.push(Stage::Project {
                    select: select.into_iter().map(|(e, _)| e).collect(),
                    rowtime: rowtime.map(|(e, _)| e),
                });
            }
        }
        Ok(Planned {
            source,
            stages,
            outputs,
        })
    }

    fn window(&mut self, spec: &ast::WindowSpec, scope: &Scope) -> Result<WinDef, SqlError> {
        let mut partition = Vec::new();
        for p in &spec.partition {
            partition.push(self.expr(p, scope, &mut Aggs::default())?.0);
        }
        Ok(WinDef {
            partition,
            frame: spec.frame,
        })
    }

    fn column(
        &self,
        q: &Option<String>,
        name: &str,
        pos: Pos,
        scope: &Scope,
    ) -> Result<(Expr, Ty), SqlError> {
        let found: Vec<usize> = scope
            .cols
            .iter()
            .enumerate()
            .filter(|(_, c)| c.name == name && q.as_ref().is_none_or(|q| c.quals.contains(q)))
            .map(|(i, _)| i)
            .collect();
        match found.as_slice() {
            [i] => Ok((Expr::Col(*i), scope.cols[*i].ty)),
            [] if name == "ROWTIME"
                && q.as_ref().is_none_or(|q| {
                    scope.quals.contains(q) || scope.cols.iter().any(|c| c.quals.contains(q))
                }) =>
            {
                Ok((Expr::Rowtime, Ty::Timestamp))
            }
            [] => {
                if let Some(q) = q
                    && !scope.cols.iter().any(|c| c.quals.contains(q))
                    && !scope.quals.contains(q)
                {
                    return Err(err(pos, format!("Table '{q}' not found")));
                }
                Err(err(pos, format!("Column '{name}' not found in any table")))
            }
            _ => Err(err(pos, format!("Column '{name}' is ambiguous"))),
        }
    }

    fn expr(
        &mut self,
        e: &ast::Expr,
        scope: &Scope,
        aggs: &mut Aggs,
    ) -> Result<(Expr, Ty), SqlError> {
        let pos = e.pos;
        let b = Box::new;
        Ok(match &e.kind {
            ExprKind::Null => (Expr::Lit(Value::Null), Ty::Null),
            ExprKind::Bool(v) => (Expr::Lit(Value::Boolean(*v)), Ty::Bool),
            ExprKind::Int(v) => (Expr::Lit(Value::Integer(*v)), Ty::Int),
            ExprKind::Double(v) => (Expr::Lit(Value::Double(*v)), Ty::Double),
            ExprKind::Str(s) => (
                Expr::Lit(Value::Varchar(Arc::from(s.as_str()))),
                Ty::Varchar,
            ),
            ExprKind::Timestamp(t) => (Expr::Lit(Value::Timestamp(*t)), Ty::Timestamp),
            ExprKind::Date(d) => (Expr::Lit(Value::Date(*d)), Ty::Date),
            ExprKind::Time(t) => (Expr::Lit(Value::Time(*t)), Ty::Time),
            ExprKind::Interval(ms) => (Expr::Lit(Value::Integer(*ms)), Ty::Interval),
            ExprKind::CurrentRowTimestamp => (Expr::Rowtime, Ty::Timestamp),
            ExprKind::Column(q, name) => self.column(q, name, pos, scope)?,
            ExprKind::Unary(op, a) => {
                let (x, t) = self.expr(a, scope, aggs)?;
                if *op == "NOT" {
                    if !bool_ty(t) {
                        return Err(err(
                            pos,
                            format!("Cannot apply 'NOT' to arguments of type <{}>", t.name()),
                        ));
                    }
                    (Expr::Not(b(x)), Ty::Bool)
                } else {
                    if !(t.numeric() || t == Ty::Interval) {
                        return Err(err(
                            pos,
                            format!("Cannot apply '-' to arguments of type <{}>", t.name()),
                        ));
                    }
                    (Expr::Neg(b(x)), t)
                }
            }
            ExprKind::Binary(op, l, r) => {
                let (x, tx) = self.expr(l, scope, aggs)?;
                let (y, ty) = self.expr(r, scope, aggs)?;
                let mismatch = || {
                    err(
                        pos,
                        format!(
                            "Cannot apply '{op}' to arguments of type <{}> {op} <{}>",
                            tx.name(),
                            ty.name()
                        ),
                    )
                };
                match *op {
                    "AND" | "OR" => {
                        if !bool_ty(tx) || !bool_ty(ty) {
                            return Err(mismatch());
                        }
                        let e = if *op == "AND" {
                            Expr::And(b(x), b(y))
                        } else {
                            Expr::Or(b(x), b(y))
                        };
                        (e, Ty::Bool)
                    }
                    "=" | "<>" | "<" | ">" | "<=" | ">=" => {
                        if !comparable(tx, ty) {
                            return Err(mismatch());
                        }
                        let c = match *op {
                            "=" => Cmp::Eq,
                            "<>" => Cmp::Ne,
                            "<" => Cmp::Lt,
                            ">" => Cmp::Gt,
                            "<=" => Cmp::Le,
                            _ => Cmp::Ge,
                        };
                        (Expr::Cmp(c, b(x), b(y)), Ty::Bool)
                    }
                    "||" => {
                        if !text_ty(tx) || !text_ty(ty) {
                            return Err(mismatch());
                        }
                        (Expr::Concat(b(x), b(y)), Ty::Varchar)
                    }
                    _ => {
                        let a = match *op {
                            "+" => Arith::Add,
                            "-" => Arith::Sub,
                            "*" => Arith::Mul,
                            "/" => Arith::Div,
                            _ => Arith::Mod,
                        };
                        let rt = arith_type(a, tx, ty).ok_or_else(mismatch)?;
                        (Expr::Arith(a, b(x), b(y)), rt)
                    }
                }
            }
            ExprKind::IsNull(a, neg) => {
                let (x, _) = self.expr(a, scope, aggs)?;
                (Expr::IsNull(b(x), *neg), Ty::Bool)
            }
            ExprKind::Between(a, lo, hi, neg) => {
                let (x, tx) = self.expr(a, scope, aggs)?;
                let (l, tl) = self.expr(lo, scope, aggs)?;
                let (h, th) = self.expr(hi, scope, aggs)?;
                if !comparable(tx, tl) || !comparable(tx, th) {
                    return Err(err(
                        pos,
                        format!(
                            "Cannot apply 'BETWEEN' to arguments of type <{}>, <{}>, <{}>",
                            tx.name(),
                            tl.name(),
                            th.name()
                        ),
                    ));
                }
                let e = Expr::And(
                    b(Expr::Cmp(Cmp::Ge, b(x.clone()), b(l))),
                    b(Expr::Cmp(Cmp::Le, b(x), b(h))),
                );
                (if *neg { Expr::Not(b(e)) } else { e }, Ty::Bool)
            }
            ExprKind::InList(a, list, neg) => {
                let (x, tx) = self.expr(a, scope, aggs)?;
                let mut items = Vec::new();
                for i in list {
                    let (y, ty) = self.expr(i, scope, aggs)?;
                    if !comparable(tx, ty) {
                        return Err(err(
                            i.pos,
                            format!(
                                "Values in the IN list must have the type {} of the operand, not {}",
                                tx.name(),
                                ty.name()
                            ),
                        ));
                    }
                    items.push(y);
                }
                (Expr::InList(b(x), items, *neg), Ty::Bool)
            }
            ExprKind::Like(a, p, neg) => {
                let (x, tx) = self.expr(a, scope, aggs)?;
                let (y, ty) = self.expr(p, scope, aggs)?;
                if !text_ty(tx) || !text_ty(ty) {
                    return Err(err(
                        pos,
                        format!(
                            "Cannot apply 'LIKE' to arguments of type <{}> LIKE <{}>",
                            tx.name(),
                            ty.name()
                        ),
                    ));
                }
                (Expr::Like(b(x), b(y), *neg), Ty::Bool)
            }
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            } => {
                let op = match operand {
                    Some(o) => Some(self.expr(o, scope, aggs)?),
                    None => None,
                };
                let mut result = Ty::Null;
                let mut cw = Vec::new();
                for (w, t) in whens {
                    let (c, tc) = self.expr(w, scope, aggs)?;
                    match &op {
                        Some((_, to)) if !comparable(*to, tc) => {
                            return Err(err(
                                w.pos,
                                format!(
                                    "WHEN value of type {} does not compare with the CASE operand of type {}",
                                    tc.name(),
                                    to.name()
                                ),
                            ));
                        }
                        None if !bool_ty(tc) => {
                            return Err(err(w.pos, "WHEN condition must be BOOLEAN"));
                        }
                        _ => {}
                    }
                    let (v, tv) = self.expr(t, scope, aggs)?;
                    result = unify(result, tv).ok_or_else(|| {
                        err(
                            t.pos,
                            format!(
                                "CASE results of types {} and {} do not agree",
                                result.name(),
                                tv.name()
                            ),
                        )
                    })?;
                    cw.push((c, v));
                }
                let other = match otherwise {
                    Some(o) => {
                        let (v, tv) = self.expr(o, scope, aggs)?;
                        result = unify(result, tv).ok_or_else(|| {
                            err(
                                o.pos,
                                format!(
                                    "CASE results of types {} and {} do not agree",
                                    result.name(),
                                    tv.name()
                                ),
                            )
                        })?;
                        Some(b(v))
                    }
                    None => None,
                };
                (
                    Expr::Case {
                        operand: op.map(|(e, _)| b(e)),
                        whens: cw,
                        otherwise: other,
                    },
                    result,
                )
            }
            ExprKind::Cast(a, ty) => {
                let (x, tx) = self.expr(a, scope, aggs)?;
                if !castable(tx, ty) {
                    return Err(err(
                        pos,
                        format!(
                            "Cast function cannot convert value of type {} to type {}",
                            tx.name(),
                            crate::expr::type_text(ty)
                        ),
                    ));
                }
                // Constant casts are checked (and folded) now.
                if let Expr::Lit(v) = &x {
                    let folded = convert(v.clone(), ty, true).map_err(|m| err(pos, m))?;
                    return Ok((Expr::Lit(folded), Ty::of(ty)));
                }
                (Expr::Cast(b(x), ty.clone()), Ty::of(ty))
            }
            ExprKind::FloorTo(a, unit, ceil) => {
                let (x, tx) = self.expr(a, scope, aggs)?;
                if !matches!(tx, Ty::Timestamp | Ty::Date | Ty::Time | Ty::Null) {
                    return Err(err(
                        pos,
                        format!(
                            "FLOOR/CEIL ... TO {unit:?} needs a TIMESTAMP, DATE or TIME, not {}",
                            tx.name()
                        ),
                    ));
                }
                if matches!(unit, Unit::DayOfWeek | Unit::DayOfYear | Unit::Epoch) {
                    return Err(err(pos, "not a unit of FLOOR/CEIL"));
                }
                (Expr::FloorTs(b(x), *unit, *ceil), tx)
            }
            ExprKind::Step(a, by) => {
                let (x, tx) = self.expr(a, scope, aggs)?;
                let (y, ty) = self.expr(by, scope, aggs)?;
                match (tx, ty) {
                    (Ty::Timestamp, Ty::Interval) => (Expr::StepTs(b(x), b(y)), Ty::Timestamp),
                    (t, u) if t.numeric() && u.numeric() => {
                        let rt =
                            if matches!(t, Ty::Int | Ty::Null) && matches!(u, Ty::Int | Ty::Null) {
                                Ty::Int
                            } else {
                                Ty::Double
                            };
                        (Expr::StepNum(b(x), b(y)), rt)
                    }
                    _ => {
                        return Err(err(
                            pos,
                            format!(
                                "STEP needs (TIMESTAMP BY INTERVAL) or (number BY number), not ({} BY {})",
                                tx.name(),
                                ty.name()
                            ),
                        ));
                    }
                }
            }
            ExprKind::Extract(unit, a) => {
                let (x, tx) = self.expr(a, scope, aggs)?;
                if !matches!(
                    tx,
                    Ty::Timestamp | Ty::Date | Ty::Time | Ty::Interval | Ty::Null
                ) {
                    return Err(err(
                        pos,
                        format!("EXTRACT needs a datetime or interval, not {}", tx.name()),
                    ));
                }
                (Expr::Extract(*unit, b(x)), Ty::Int)
            }
            ExprKind::Substring(s, from, len) => {
                let (x, tx) = self.expr(s, scope, aggs)?;
                let (f, tf) = self.expr(from, scope, aggs)?;
                let l = match len {
                    Some(l) => Some(self.expr(l, scope, aggs)?),
                    None => None,
                };
                if !text_ty(tx)
                    || !matches!(tf, Ty::Int | Ty::Null)
                    || l.as_ref()
                        .is_some_and(|(_, t)| !matches!(t, Ty::Int | Ty::Null))
                {
                    return Err(err(
                        pos,
                        "SUBSTRING needs (VARCHAR FROM INTEGER [FOR INTEGER])",
                    ));
                }
                (
                    Expr::Substring(b(x), b(f), l.map(|(e, _)| b(e))),
                    Ty::Varchar,
                )
            }
            ExprKind::Position(n, h) => {
                let (x, tx) = self.expr(n, scope, aggs)?;
                let (y, ty) = self.expr(h, scope, aggs)?;
                if !text_ty(tx) || !text_ty(ty) {
                    return Err(err(pos, "POSITION needs (VARCHAR IN VARCHAR)"));
                }
                (Expr::Position(b(x), b(y)), Ty::Int)
            }
            ExprKind::Trim(lead, trail, chars, s) => {
                let c = match chars {
                    Some(c) => Some(self.expr(c, scope, aggs)?),
                    None => None,
                };
                let (x, tx) = self.expr(s, scope, aggs)?;
                if !text_ty(tx) || c.as_ref().is_some_and(|(_, t)| !text_ty(*t)) {
                    return Err(err(pos, "TRIM needs VARCHAR arguments"));
                }
                (
                    Expr::Trim(*lead, *trail, c.map(|(e, _)| b(e)), b(x)),
                    Ty::Varchar,
                )
            }
            ExprKind::Call {
                name,
                args,
                distinct,
                star,
                over,
            } => {
                if let Some(kind) = is_aggregate(name) {
                    return self
                        .aggregate(name, kind, args, *distinct, *star, over, pos, scope, aggs);
                }
                if *star || *distinct || over.is_some() {
                    return Err(err(pos, format!("{name} is not an aggregate function")));
                }
                let mut cargs = Vec::new();
                let mut tys = Vec::new();
                for a in args {
                    let (x, t) = self.expr(a, scope, aggs)?;
                    cargs.push(x);
                    tys.push(t);
                }
                let rt = scalar(name, &tys).map_err(|m| err(pos, m))?;
                let func = match name.as_str() {
                    "CHAR_LENGTH" | "CHARACTER_LENGTH" => Func::CharLength,
                    "LOWER" => Func::Lower,
                    "UPPER" => Func::Upper,
                    "INITCAP" => Func::Initcap,
                    "ABS" => Func::Abs,
                    "CEIL" => Func::Ceil,
                    "FLOOR" => Func::Floor,
                    "EXP" => Func::Exp,
                    "LN" => Func::Ln,
                    "LOG10" => Func::Log10,
                    "MOD" => Func::Mod,
                    "POWER" => Func::Power,
                    "SQRT" => Func::Sqrt,
                    "TSDIFF" => Func::Tsdiff,
                    "CHAR_TO_TIMESTAMP" => Func::CharToTimestamp,
                    "TIMESTAMP_TO_CHAR" => Func::TimestampToChar,
                    "COALESCE" => Func::Coalesce,
                    _ => Func::Nullif,
                };
                (Expr::Func(func, cargs), rt)
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn aggregate(
        &mut self,
        name: &str,
        kind: AggKind,
        args: &[ast::Expr],
        distinct: bool,
        star: bool,
        over: &Option<ast::Over>,
        pos: Pos,
        scope: &Scope,
        aggs: &mut Aggs,
    ) -> Result<(Expr, Ty), SqlError> {
        if !aggs.enabled {
            return Err(err(pos, format!("Aggregate {name} is not allowed here")));
        }
        let (arg, ty) = match (star, args) {
            (true, []) if name == "COUNT" => (None, Ty::Int),
            (false, [a]) => {
                let (x, t) = self.expr(a, scope, &mut Aggs::default())?;
                (Some(x), t)
            }
            _ => {
                return Err(err(
                    pos,
                    format!("Invalid number of arguments to function '{name}'"),
                ));
            }
        };
        let kind = match kind {
            AggKind::Count if star => AggKind::CountStar,
            AggKind::Count if distinct => AggKind::CountDistinct,
            _ if distinct => {
                return Err(err(pos, format!("{name}(DISTINCT ...) is not supported")));
            }
            AggKind::SumReal if matches!(ty, Ty::Int | Ty::Interval) => AggKind::SumInt,
            k => k,
        };
        let numeric_only = matches!(
            kind,
            AggKind::SumReal
                | AggKind::SumInt
                | AggKind::Avg
                | AggKind::VarSamp
                | AggKind::VarPop
                | AggKind::StddevSamp
                | AggKind::StddevPop
        );
        if numeric_only && !(ty.numeric() || ty == Ty::Interval) {
            return Err(err(
                pos,
                format!("Cannot apply '{name}' to arguments of type <{}>", ty.name()),
            ));
        }
        let result = match kind {
            AggKind::CountStar | AggKind::Count | AggKind::CountDistinct => Ty::Int,
            AggKind::SumInt => ty,
            AggKind::Min | AggKind::Max | AggKind::First | AggKind::Last => ty,
            _ => Ty::Double,
        };
        let spec = AggSpec { kind, arg };
        match over {
            None => {
                aggs.plain.push((spec, result));
                Ok((Expr::Agg(aggs.plain.len() - 1), result))
            }
            Some(o) => {
                let w = match o {
                    ast::Over::Named(n, p) => aggs
                        .named
                        .iter()
                        .find(|(x, _)| x == n)
                        .map(|(_, i)| *i)
                        .ok_or_else(|| err(*p, format!("Window '{n}' not found")))?,
                    ast::Over::Inline(spec) => {
                        let w = self.window(spec, scope)?;
                        aggs.windows.push(w);
                        aggs.windows.len() - 1
                    }
                };
                aggs.over.push((spec, w));
                Ok((Expr::Agg(aggs.over.len() - 1), result))
            }
        }
    }
}

fn arith_type(op: Arith, a: Ty, b: Ty) -> Option<Ty> {
    use Ty::*;
    Some(match (op, a, b) {
        (_, Null, Null) => Null,
        (Arith::Add | Arith::Sub, Timestamp, Interval | Null) => Timestamp,
        (Arith::Add, Interval | Null, Timestamp) => Timestamp,
        (Arith::Add | Arith::Sub, Interval, Interval | Null)
        | (Arith::Add | Arith::Sub, Null, Interval) => Interval,
        (Arith::Mul, Interval, Int | Null) | (Arith::Mul, Int | Null, Interval) => Interval,
        (Arith::Div, Interval, Int | Null) => Interval,
        (_, x, y) if x.numeric() && y.numeric() => {
            if matches!(x, Int | Null) && matches!(y, Int | Null) {
                Int
            } else {
                Double
            }
        }
        _ => return None,
    })
}

/// The result type of scalar function `name` on arguments of types `args`.
fn scalar(name: &str, args: &[Ty]) -> Result<Ty, String> {
    let sig = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "Invalid number of arguments to function '{name}'. Was expecting {n} arguments"
            ))
        }
    };
    let bad = || {
        let list: Vec<&str> = args.iter().map(|t| t.name()).collect();
        Err(format!(
            "Cannot apply '{name}' to arguments of type '{name}(<{}>)'",
            list.join(">, <")
        ))
    };
    let num = |t: Ty| t.numeric();
    match name {
        "CHAR_LENGTH" | "CHARACTER_LENGTH" => {
            sig(1)?;
            if text_ty(args[0]) { Ok(Ty::Int) } else { bad() }
        }
        "LOWER" | "UPPER" | "INITCAP" => {
            sig(1)?;
            if text_ty(args[0]) {
                Ok(Ty::Varchar)
            } else {
                bad()
            }
        }
        "ABS" => {
            sig(1)?;
            if num(args[0]) || args[0] == Ty::Interval {
                Ok(args[0])
            } else {
                bad()
            }
        }
        "CEIL" | "FLOOR" => {
            sig(1)?;
            match args[0] {
                Ty::Int | Ty::Null => Ok(Ty::Int),
                t if num(t) => Ok(Ty::Double),
                _ => bad(),
            }
        }
        "EXP" | "LN" | "LOG10" | "SQRT" => {
            sig(1)?;
            if num(args[0]) { Ok(Ty::Double) } else { bad() }
        }
        "MOD" => {
            sig(2)?;
            match (args[0], args[1]) {
                (Ty::Int | Ty::Null, Ty::Int | Ty::Null) => Ok(Ty::Int),
                (a, b) if num(a) && num(b) => Ok(Ty::Double),
                _ => bad(),
            }
        }
        "POWER" => {
            sig(2)?;
            if num(args[0]) && num(args[1]) {
                Ok(Ty::Double)
            } else {
                bad()
            }
        }
        "TSDIFF" => {
            sig(2)?;
            if args.iter().all(|t| matches!(t, Ty::Timestamp | Ty::Null)) {
                Ok(Ty::Int)
            } else {
                bad()
            }
        }
        "CHAR_TO_TIMESTAMP" => {
            sig(2)?;
            if args.iter().all(|t| text_ty(*t)) {
                Ok(Ty::Timestamp)
            } else {
                bad()
            }
        }
        "TIMESTAMP_TO_CHAR" => {
            sig(2)?;
            if text_ty(args[0]) && matches!(args[1], Ty::Timestamp | Ty::Null) {
                Ok(Ty::Varchar)
            } else {
                bad()
            }
        }
        "COALESCE" => {
            if args.is_empty() {
                return Err(format!("Invalid number of arguments to function '{name}'"));
            }
            let mut t = Ty::Null;
            for a in args {
                t = match unify(t, *a) {
                    Some(t) => t,
                    None => return bad(),
                };
            }
            Ok(t)
        }
        "NULLIF" => {
            sig(2)?;
            if comparable(args[0], args[1]) {
                Ok(args[0])
            } else {
                bad()
            }
        }
        _ => {
            let list: Vec<&str> = args.iter().map(|t| t.name()).collect();
            Err(format!(
                "No match found for function signature {name}(<{}>)",
                list.join(">, <")
            ))
        }
    }
}

/// The window length of a monotonic ROWTIME grouping key, if `k` is one.
fn window_width(k: &Expr) -> Option<i64> {
    match k {
        Expr::StepTs(a, by) if **a == Expr::Rowtime => match **by {
            Expr::Lit(Value::Integer(ms)) if ms > 0 => Some(ms),
            _ => None,
        },
        Expr::FloorTs(a, unit, false) if **a == Expr::Rowtime => match unit {
            Unit::Millisecond => Some(1),
            Unit::Second => Some(crate::time::MS_SECOND),
            Unit::Minute => Some(crate::time::MS_MINUTE),
            Unit::Hour => Some(crate::time::MS_HOUR),
            Unit::Day => Some(crate::time::MS_DAY),
            _ => None,
        },
        _ => None,
    }
}

/// Rewrites a grouped query's expression over `keys ++ aggregates`.
fn rebind_group(
    e: &mut Expr,
    keys: &[Expr],
    n: usize,
    pos: Pos,
    scope: &Scope,
) -> Result<(), SqlError> {
    if let Some(k) = keys.iter().position(|k| k == e) {
        *e = Expr::Col(k);
        return Ok(());
    }
    match e {
        Expr::Agg(j) => {
            *e = Expr::Col(n + *j);
            Ok(())
        }
        Expr::Col(i) => {
            let name = scope.cols.get(*i).map_or("?", |c| c.name.as_str());
            Err(err(
                pos,
                format!("Expression '{name}' is not being grouped"),
            ))
        }
        _ => {
            let mut r = Ok(());
            e.children_mut(&mut |c| {
                if r.is_ok() {
                    r = rebind_group(c, keys, n, pos, scope);
                }
            });
            r
        }
    }
}

/// Rewrites a sliding query's expression over `input ++ aggregates`.
fn rebind_over(e: &mut Expr, base: usize) {
    if let Expr::Agg(j) = e {
        *e = Expr::Col(base + *j);
        return;
    }
    e.children_mut(&mut |c| rebind_over(c, base));
}
