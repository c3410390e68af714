//! The syntax tree of application code, as parsed (names not yet resolved).
//!
//! Mirrors the statements of the Kinesis Data Analytics SQL reference that applications
//! use: `CREATE STREAM`, `CREATE PUMP ... AS INSERT INTO ... SELECT STREAM ...`. Every
//! expression keeps the position of its first token for the planner's errors.

use crate::SqlType;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone)]
pub(crate) enum Statement {
    CreateStream {
        name: String,
        pos: Pos,
        columns: Vec<(String, SqlType, Pos)>,
    },
    CreatePump {
        name: String,
        pos: Pos,
        target: String,
        target_pos: Pos,
        columns: Option<Vec<(String, Pos)>>,
        query: Box<Query>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Query {
    pub pos: Pos,
    pub items: Vec<SelectItem>,
    pub from: From,
    pub filter: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    pub stagger: Option<Stagger>,
    pub windows: Vec<(String, WindowSpec, Pos)>,
}

#[derive(Debug, Clone)]
pub(crate) enum SelectItem {
    /// `*` or `alias.*`.
    Wildcard(Option<String>, Pos),
    Expr(Expr, Option<String>),
}

#[derive(Debug, Clone)]
pub(crate) struct From {
    pub source: Source,
    pub join: Option<Join>,
}

#[derive(Debug, Clone)]
pub(crate) enum Source {
    Named {
        name: String,
        alias: Option<String>,
        pos: Pos,
    },
    Subquery {
        query: Box<Query>,
        alias: Option<String>,
    },
    /// `TABLE(NAME(CURSOR(SELECT STREAM ...), args...))`.
    Function {
        name: String,
        pos: Pos,
        cursor: Box<Query>,
        args: Vec<Expr>,
        alias: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Join {
    pub left_outer: bool,
    pub table: String,
    pub alias: Option<String>,
    pub pos: Pos,
    pub on: Expr,
}

#[derive(Debug, Clone)]
pub(crate) struct Stagger {
    pub partition: Vec<Expr>,
    pub range_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct WindowSpec {
    pub partition: Vec<Expr>,
    pub frame: Frame,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Frame {
    /// `RANGE INTERVAL ... PRECEDING` (milliseconds) or `RANGE CURRENT ROW` (0).
    Range(i64),
    /// `ROWS n PRECEDING` or `ROWS CURRENT ROW` (0).
    Rows(u64),
}

#[derive(Debug, Clone)]
pub(crate) enum Over {
    Named(String, Pos),
    Inline(WindowSpec),
}

/// Time units of FLOOR/CEIL/EXTRACT and interval qualifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Unit {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Millisecond,
    /// EXTRACT only.
    DayOfWeek,
    DayOfYear,
    Epoch,
}

#[derive(Debug, Clone)]
pub(crate) struct Expr {
    pub kind: ExprKind,
    pub pos: Pos,
    /// The height of the tree below and including this node (the parser refuses
    /// trees too deep to plan, evaluate and drop without exhausting the stack).
    pub depth: u32,
}

/// A node, its depth computed from its children's.
pub(crate) fn mk(kind: ExprKind, pos: Pos) -> Expr {
    let d = |e: &Expr| e.depth;
    let opt = |e: &Option<Box<Expr>>| e.as_deref().map_or(0, d);
    let below = match &kind {
        ExprKind::Unary(_, a)
        | ExprKind::IsNull(a, _)
        | ExprKind::Cast(a, _)
        | ExprKind::FloorTo(a, ..)
        | ExprKind::Extract(_, a) => d(a),
        ExprKind::Binary(_, a, b)
        | ExprKind::Like(a, b, _)
        | ExprKind::Step(a, b)
        | ExprKind::Position(a, b) => d(a).max(d(b)),
        ExprKind::Between(a, b, c, _) => d(a).max(d(b)).max(d(c)),
        ExprKind::InList(a, l, _) => l.iter().map(d).fold(d(a), u32::max),
        ExprKind::Case {
            operand,
            whens,
            otherwise,
        } => whens
            .iter()
            .map(|(w, t)| d(w).max(d(t)))
            .fold(opt(operand).max(opt(otherwise)), u32::max),
        ExprKind::Call { args, .. } => args.iter().map(d).max().unwrap_or(0),
        ExprKind::Substring(a, b, c) => d(a).max(d(b)).max(opt(c)),
        ExprKind::Trim(_, _, c, s) => opt(c).max(d(s)),
        _ => 0,
    };
    Expr {
        kind,
        pos,
        depth: below.saturating_add(1),
    }
}

#[derive(Debug, Clone)]
pub(crate) enum ExprKind {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    Timestamp(i64),
    Date(i32),
    Time(u32),
    /// Milliseconds.
    Interval(i64),
    /// `[qualifier.]name`; `ROWTIME` arrives here too.
    Column(Option<String>, String),
    Unary(&'static str, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    IsNull(Box<Expr>, bool),
    Between(Box<Expr>, Box<Expr>, Box<Expr>, bool),
    InList(Box<Expr>, Vec<Expr>, bool),
    Like(Box<Expr>, Box<Expr>, bool),
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast(Box<Expr>, SqlType),
    /// A function call; `distinct` for `COUNT(DISTINCT x)`; `star` for `COUNT(*)`.
    Call {
        name: String,
        args: Vec<Expr>,
        distinct: bool,
        star: bool,
        over: Option<Over>,
    },
    FloorTo(Box<Expr>, Unit, bool),
    Step(Box<Expr>, Box<Expr>),
    Extract(Unit, Box<Expr>),
    Substring(Box<Expr>, Box<Expr>, Option<Box<Expr>>),
    Position(Box<Expr>, Box<Expr>),
    /// `TRIM([BOTH|LEADING|TRAILING] [chars] FROM s)`: (leading, trailing).
    Trim(bool, bool, Option<Box<Expr>>, Box<Expr>),
    CurrentRowTimestamp,
}
