//! Compiled scalar expressions: trees over resolved column indices, evaluated per row
//! with SQL's NULL semantics (three-valued logic; most functions return NULL on a NULL
//! argument), and the casts and assignment coercions between SQL types.
//!
//! Follows the Kinesis Data Analytics SQL reference ("Operators", "String and Search
//! Functions", "Numeric Functions", "Date and Time Functions", "CAST"). Evaluation
//! never panics: overflow, division by zero and failed casts are errors of the row.

use crate::ast::Unit;
use crate::time;
use crate::{SqlType, Value};
use std::cmp::Ordering;
use std::sync::Arc;

/// The static type of an expression, as the planner infers it. Intervals (day-time,
/// milliseconds) exist only inside expressions and are held as `Value::Integer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// The type of the literal NULL: fits anywhere.
    Null,
    Bool,
    Int,
    Double,
    Decimal(u8),
    Varchar,
    Varbinary,
    Timestamp,
    Date,
    Time,
    Interval,
}

impl Ty {
    pub fn of(t: &SqlType) -> Ty {
        match t {
            SqlType::Boolean => Ty::Bool,
            SqlType::Integer => Ty::Int,
            SqlType::Double => Ty::Double,
            SqlType::Decimal { scale, .. } => Ty::Decimal(*scale),
            SqlType::Varchar(_) => Ty::Varchar,
            SqlType::Varbinary(_) => Ty::Varbinary,
            SqlType::Timestamp => Ty::Timestamp,
            SqlType::Date => Ty::Date,
            SqlType::Time => Ty::Time,
        }
    }
    pub fn numeric(self) -> bool {
        matches!(self, Ty::Null | Ty::Int | Ty::Double | Ty::Decimal(_))
    }
    pub fn name(self) -> &'static str {
        match self {
            Ty::Null => "NULL",
            Ty::Bool => "BOOLEAN",
            Ty::Int => "INTEGER",
            Ty::Double => "DOUBLE",
            Ty::Decimal(_) => "DECIMAL",
            Ty::Varchar => "VARCHAR",
            Ty::Varbinary => "VARBINARY",
            Ty::Timestamp => "TIMESTAMP",
            Ty::Date => "DATE",
            Ty::Time => "TIME",
            Ty::Interval => "INTERVAL",
        }
    }
    /// The SQL type a result of this type gets in a stream column.
    pub fn sql(self) -> SqlType {
        match self {
            Ty::Bool => SqlType::Boolean,
            Ty::Int | Ty::Interval => SqlType::Integer,
            Ty::Double | Ty::Null => SqlType::Double,
            Ty::Decimal(s) => SqlType::Decimal {
                precision: 38,
                scale: s,
            },
            Ty::Varchar => SqlType::Varchar(65_535),
            Ty::Varbinary => SqlType::Varbinary(65_535),
            Ty::Timestamp => SqlType::Timestamp,
            Ty::Date => SqlType::Date,
            Ty::Time => SqlType::Time,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Func {
    CharLength,
    Lower,
    Upper,
    Initcap,
    Abs,
    Ceil,
    Floor,
    Exp,
    Ln,
    Log10,
    Mod,
    Power,
    Sqrt,
    Tsdiff,
    CharToTimestamp,
    TimestampToChar,
    Coalesce,
    Nullif,
}

/// A compiled expression. Columns are indices into the row the stage evaluates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Col(usize),
    /// An aggregate's result while planning; the planner rebinds it to a column.
    Agg(usize),
    Rowtime,
    Lit(Value),
    Neg(Box<Expr>),
    Arith(Arith, Box<Expr>, Box<Expr>),
    Concat(Box<Expr>, Box<Expr>),
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    IsNull(Box<Expr>, bool),
    InList(Box<Expr>, Vec<Expr>, bool),
    Like(Box<Expr>, Box<Expr>, bool),
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    /// CAST: strings are cut to the length (assignment instead fails).
    Cast(Box<Expr>, SqlType),
    Func(Func, Vec<Expr>),
    FloorTs(Box<Expr>, Unit, bool),
    /// STEP(ts BY interval): the interval in ms.
    StepTs(Box<Expr>, Box<Expr>),
    StepNum(Box<Expr>, Box<Expr>),
    Extract(Unit, Box<Expr>),
    Substring(Box<Expr>, Box<Expr>, Option<Box<Expr>>),
    Position(Box<Expr>, Box<Expr>),
    Trim(bool, bool, Option<Box<Expr>>, Box<Expr>),
}

pub(crate) type EvalResult = Result<Value, String>;

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Double(d) => Some(*d),
        Value::Decimal { mantissa, scale } => Some(*mantissa as f64 / 10f64.powi(*scale as i32)),
        _ => None,
    }
}

/// Orders two non-NULL values of comparable types (numbers with numbers, and so on).
pub(crate) fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Integer(x), Value::Integer(y)) => Some(x.cmp(y)),
        (Value::Varchar(x), Value::Varchar(y)) => Some(x.cmp(y)),
        (Value::Timestamp(x), Value::Timestamp(y)) => Some(x.cmp(y)),
        (Value::Boolean(x), Value::Boolean(y)) => Some(x.cmp(y)),
        (Value::Date(x), Value::Date(y)) => Some(x.cmp(y)),
        (Value::Time(x), Value::Time(y)) => Some(x.cmp(y)),
        (Value::Varbinary(x), Value::Varbinary(y)) => Some(x.cmp(y)),
        (
            Value::Decimal {
                mantissa: m1,
                scale: s1,
            },
            Value::Decimal {
                mantissa: m2,
                scale: s2,
            },
        ) if s1 == s2 => Some(m1.cmp(m2)),
        _ => as_f64(a)?.partial_cmp(&as_f64(b)?),
    }
}

fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Boolean(b) => Some(*b),
        _ => None,
    }
}

fn string(v: &Value) -> Option<&str> {
    match v {
        Value::Varchar(s) => Some(s),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Timestamp(t) => Some(*t),
        _ => None,
    }
}

fn varchar(s: String) -> Value {
    Value::Varchar(Arc::from(s))
}

const OVERFLOW: &str = "numeric overflow";

impl Expr {
    pub fn eval(&self, rowtime: i64, row: &[Value]) -> EvalResult {
        Ok(match self {
            Expr::Col(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            Expr::Agg(_) => Value::Null,
            Expr::Rowtime => Value::Timestamp(rowtime),
            Expr::Lit(v) => v.clone(),
            Expr::Neg(e) => match e.eval(rowtime, row)? {
                Value::Null => Value::Null,
                Value::Integer(i) => Value::Integer(i.checked_neg().ok_or(OVERFLOW)?),
                Value::Decimal { mantissa, scale } => Value::Decimal {
                    mantissa: mantissa.checked_neg().ok_or(OVERFLOW)?,
                    scale,
                },
                v => Value::Double(-as_f64(&v).ok_or("cannot negate a non-number")?),
            },
            Expr::Arith(op, a, b) => {
                let (x, y) = (a.eval(rowtime, row)?, b.eval(rowtime, row)?);
                arith(*op, &x, &y)?
            }
            Expr::Concat(a, b) => {
                let (x, y) = (a.eval(rowtime, row)?, b.eval(rowtime, row)?);
                match (string(&x), string(&y)) {
                    (Some(x), Some(y)) => {
                        let mut s = String::with_capacity(x.len() + y.len());
                        s.push_str(x);
                        s.push_str(y);
                        varchar(s)
                    }
                    _ => Value::Null,
                }
            }
            Expr::Cmp(op, a, b) => {
                let (x, y) = (a.eval(rowtime, row)?, b.eval(rowtime, row)?);
                if matches!(x, Value::Null) || matches!(y, Value::Null) {
                    return Ok(Value::Null);
                }
                let o = compare(&x, &y).ok_or("values cannot be compared")?;
                Value::Boolean(match op {
                    Cmp::Eq => o == Ordering::Equal,
                    Cmp::Ne => o != Ordering::Equal,
                    Cmp::Lt => o == Ordering::Less,
                    Cmp::Le => o != Ordering::Greater,
                    Cmp::Gt => o == Ordering::Greater,
                    Cmp::Ge => o != Ordering::Less,
                })
            }
            Expr::And(a, b) => {
                let x = truth(&a.eval(rowtime, row)?);
                if x == Some(false) {
                    return Ok(Value::Boolean(false));
                }
                match (x, truth(&b.eval(rowtime, row)?)) {
                    (_, Some(false)) => Value::Boolean(false),
                    (Some(true), Some(true)) => Value::Boolean(true),
                    _ => Value::Null,
                }
            }
            Expr::Or(a, b) => {
                let x = truth(&a.eval(rowtime, row)?);
                if x == Some(true) {
                    return Ok(Value::Boolean(true));
                }
                match (x, truth(&b.eval(rowtime, row)?)) {
                    (_, Some(true)) => Value::Boolean(true),
                    (Some(false), Some(false)) => Value::Boolean(false),
                    _ => Value::Null,
                }
            }
            Expr::Not(a) => match truth(&a.eval(rowtime, row)?) {
                Some(b) => Value::Boolean(!b),
                None => Value::Null,
            },
            Expr::IsNull(a, neg) => {
                Value::Boolean(matches!(a.eval(rowtime, row)?, Value::Null) != *neg)
            }
            Expr::InList(a, list, neg) => {
                let x = a.eval(rowtime, row)?;
                if matches!(x, Value::Null) {
                    return Ok(Value::Null);
                }
                let mut saw_null = false;
                for e in list {
                    let y = e.eval(rowtime, row)?;
                    if matches!(y, Value::Null) {
                        saw_null = true;
                    } else if compare(&x, &y) == Some(Ordering::Equal) {
                        return Ok(Value::Boolean(!neg));
                    }
                }
                if saw_null {
                    Value::Null
                } else {
                    Value::Boolean(*neg)
                }
            }
            Expr::Like(a, p, neg) => {
                let (x, y) = (a.eval(rowtime, row)?, p.eval(rowtime, row)?);
                match (string(&x), string(&y)) {
                    (Some(s), Some(p)) => Value::Boolean(like(s, p) != *neg),
                    _ => Value::Null,
                }
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                let op = match operand {
                    Some(o) => Some(o.eval(rowtime, row)?),
                    None => None,
                };
                for (w, t) in whens {
                    let c = w.eval(rowtime, row)?;
                    let hit = match &op {
                        Some(v) => {
                            !matches!(v, Value::Null)
                                && !matches!(c, Value::Null)
                                && compare(v, &c) == Some(Ordering::Equal)
                        }
                        None => truth(&c) == Some(true),
                    };
                    if hit {
                        return t.eval(rowtime, row);
                    }
                }
                match otherwise {
                    Some(e) => e.eval(rowtime, row)?,
                    None => Value::Null,
                }
            }
            Expr::Cast(e, ty) => convert(e.eval(rowtime, row)?, ty, true)?,
            Expr::Func(f, args) => func(*f, args, rowtime, row)?,
            Expr::FloorTs(e, unit, ceil) => match e.eval(rowtime, row)? {
                Value::Timestamp(t) => Value::Timestamp(
                    time::floor_to(t, *unit, *ceil).ok_or("timestamp out of range")?,
                ),
                Value::Date(d) => {
                    let t = time::floor_to(d as i64 * time::MS_DAY, *unit, *ceil)
                        .ok_or("date out of range")?;
                    Value::Date(t.div_euclid(time::MS_DAY) as i32)
                }
                Value::Time(ms) => {
                    let t = time::floor_to(ms as i64, *unit, *ceil).ok_or("bad time")?;
                    Value::Time(t.rem_euclid(time::MS_DAY) as u32)
                }
                _ => Value::Null,
            },
            Expr::StepTs(e, by) => {
                let (x, y) = (e.eval(rowtime, row)?, by.eval(rowtime, row)?);
                match (x, int(&y)) {
                    (Value::Timestamp(t), Some(step)) if step > 0 => {
                        Value::Timestamp(t.div_euclid(step).checked_mul(step).ok_or(OVERFLOW)?)
                    }
                    (Value::Null, _) | (_, None) => Value::Null,
                    _ => return Err("STEP interval must be positive".into()),
                }
            }
            Expr::StepNum(e, by) => {
                let (x, y) = (e.eval(rowtime, row)?, by.eval(rowtime, row)?);
                match (&x, &y) {
                    (Value::Integer(a), Value::Integer(b)) => {
                        if *b == 0 {
                            return Err("STEP by zero".into());
                        }
                        let q = a.checked_div_euclid(*b).ok_or(OVERFLOW)?;
                        Value::Integer(q.checked_mul(*b).ok_or(OVERFLOW)?)
                    }
                    (Value::Null, _) | (_, Value::Null) => Value::Null,
                    _ => {
                        let (a, b) = (as_f64(&x).unwrap_or(0.0), as_f64(&y).unwrap_or(0.0));
                        if b == 0.0 {
                            return Err("STEP by zero".into());
                        }
                        Value::Double((a / b).floor() * b)
                    }
                }
            }
            Expr::Extract(unit, e) => match e.eval(rowtime, row)? {
                Value::Timestamp(t) => Value::Integer(time::extract(t, *unit)),
                Value::Date(d) => Value::Integer(time::extract(d as i64 * time::MS_DAY, *unit)),
                Value::Time(ms) => Value::Integer(time::extract(ms as i64, *unit)),
                // EXTRACT from an interval: the field of the duration.
                Value::Integer(ms) => Value::Integer(match unit {
                    Unit::Day => ms / time::MS_DAY,
                    Unit::Hour => ms / time::MS_HOUR % 24,
                    Unit::Minute => ms / time::MS_MINUTE % 60,
                    Unit::Second => ms / time::MS_SECOND % 60,
                    Unit::Millisecond => ms % 1000,
                    _ => ms / time::MS_SECOND,
                }),
                _ => Value::Null,
            },
            Expr::Substring(s, from, len) => {
                let sv = s.eval(rowtime, row)?;
                let fv = from.eval(rowtime, row)?;
                let lv = match len {
                    Some(l) => Some(l.eval(rowtime, row)?),
                    None => None,
                };
                let (Some(s), Some(start)) = (string(&sv), int(&fv)) else {
                    return Ok(Value::Null);
                };
                let end = match &lv {
                    None => i64::MAX,
                    Some(Value::Integer(l)) if *l < 0 => {
                        return Err("negative substring length".into());
                    }
                    Some(Value::Integer(l)) => start.saturating_add(*l),
                    Some(_) => return Ok(Value::Null),
                };
                let out: String = s
                    .chars()
                    .enumerate()
                    .filter(|(i, _)| {
                        let p = *i as i64 + 1;
                        p >= start && p < end
                    })
                    .map(|(_, c)| c)
                    .collect();
                varchar(out)
            }
            Expr::Position(needle, hay) => {
                let (n, h) = (needle.eval(rowtime, row)?, hay.eval(rowtime, row)?);
                match (string(&n), string(&h)) {
                    (Some(n), Some(h)) => Value::Integer(match h.find(n) {
                        Some(byte) => h[..byte].chars().count() as i64 + 1,
                        None => 0,
                    }),
                    _ => Value::Null,
                }
            }
            Expr::Trim(lead, trail, chars, s) => {
                let sv = s.eval(rowtime, row)?;
                let cv = match chars {
                    Some(c) => c.eval(rowtime, row)?,
                    None => Value::Varchar(Arc::from(" ")),
                };
                match (string(&sv), string(&cv)) {
                    (Some(s), Some(c)) => {
                        let set = |ch: char| c.contains(ch);
                        let mut out = s;
                        if *lead {
                            out = out.trim_start_matches(set);
                        }
                        if *trail {
                            out = out.trim_end_matches(set);
                        }
                        varchar(out.to_string())
                    }
                    _ => Value::Null,
                }
            }
        })
    }

    /// Calls `f` on every direct child.
    pub fn children_mut(&mut self, f: &mut dyn FnMut(&mut Expr)) {
        match self {
            Expr::Col(_) | Expr::Agg(_) | Expr::Rowtime | Expr::Lit(_) => {}
            Expr::Neg(a)
            | Expr::Not(a)
            | Expr::IsNull(a, _)
            | Expr::Cast(a, _)
            | Expr::FloorTs(a, ..)
            | Expr::Extract(_, a) => f(a),
            Expr::Arith(_, a, b)
            | Expr::Concat(a, b)
            | Expr::Cmp(_, a, b)
            | Expr::And(a, b)
            | Expr::Or(a, b)
            | Expr::Like(a, b, _)
            | Expr::StepTs(a, b)
            | Expr::StepNum(a, b)
            | Expr::Position(a, b) => {
                f(a);
                f(b);
            }
            Expr::InList(a, l, _) => {
                f(a);
                l.iter_mut().for_each(f);
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                if let Some(o) = operand {
                    f(o);
                }
                for (w, t) in whens {
                    f(w);
                    f(t);
                }
                if let Some(o) = otherwise {
                    f(o);
                }
            }
            Expr::Func(_, args) => args.iter_mut().for_each(f),
            Expr::Substring(a, b, c) => {
                f(a);
                f(b);
                if let Some(c) = c {
                    f(c);
                }
            }
            Expr::Trim(_, _, c, s) => {
                if let Some(c) = c {
                    f(c);
                }
                f(s);
            }
        }
    }
}

fn arith(op: Arith, x: &Value, y: &Value) -> EvalResult {
    if matches!(x, Value::Null) || matches!(y, Value::Null) {
        return Ok(Value::Null);
    }
    Ok(match (x, y) {
        (Value::Integer(a), Value::Integer(b)) => Value::Integer(match op {
            Arith::Add => a.checked_add(*b).ok_or(OVERFLOW)?,
            Arith::Sub => a.checked_sub(*b).ok_or(OVERFLOW)?,
            Arith::Mul => a.checked_mul(*b).ok_or(OVERFLOW)?,
            Arith::Div if *b == 0 => return Err("division by zero".into()),
            Arith::Div => a.checked_div(*b).ok_or(OVERFLOW)?,
            Arith::Mod if *b == 0 => return Err("division by zero".into()),
            Arith::Mod => a.checked_rem(*b).ok_or(OVERFLOW)?,
        }),
        // Timestamp plus or minus a day-time interval (ms).
        (Value::Timestamp(t), Value::Integer(i)) => Value::Timestamp(match op {
            Arith::Add => t.checked_add(*i).ok_or(OVERFLOW)?,
            Arith::Sub => t.checked_sub(*i).ok_or(OVERFLOW)?,
            _ => return Err("invalid timestamp arithmetic".into()),
        }),
        (Value::Integer(i), Value::Timestamp(t)) if op == Arith::Add => {
            Value::Timestamp(t.checked_add(*i).ok_or(OVERFLOW)?)
        }
        _ => {
            let (a, b) = match (as_f64(x), as_f64(y)) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err("arithmetic on non-numbers".into()),
            };
            let r = match op {
                Arith::Add => a + b,
                Arith::Sub => a - b,
                Arith::Mul => a * b,
                Arith::Div if b == 0.0 => return Err("division by zero".into()),
                Arith::Div => a / b,
                Arith::Mod if b == 0.0 => return Err("division by zero".into()),
                Arith::Mod => a % b,
            };
            Value::Double(r)
        }
    })
}

fn func(f: Func, args: &[Expr], rowtime: i64, row: &[Value]) -> EvalResult {
    if f == Func::Coalesce {
        for a in args {
            let v = a.eval(rowtime, row)?;
            if !matches!(v, Value::Null) {
                return Ok(v);
            }
        }
        return Ok(Value::Null);
    }
    let mut vals = [Value::Null, Value::Null];
    for (slot, a) in vals.iter_mut().zip(args) {
        *slot = a.eval(rowtime, row)?;
    }
    let [a, b] = &vals;
    if f == Func::Nullif {
        return Ok(match compare(a, b) {
            Some(Ordering::Equal) => Value::Null,
            _ => a.clone(),
        });
    }
    if matches!(a, Value::Null) || (args.len() > 1 && matches!(b, Value::Null)) {
        return Ok(Value::Null);
    }
    let num = |v: &Value| as_f64(v).ok_or_else(|| "argument is not a number".to_string());
    let real = |r: f64| -> EvalResult {
        if r.is_finite() {
            Ok(Value::Double(r))
        } else {
            Err("result is not a finite number".into())
        }
    };
    Ok(match f {
        Func::CharLength => Value::Integer(string(a).map_or(0, |s| s.chars().count() as i64)),
        Func::Lower => varchar(string(a).unwrap_or("").to_lowercase()),
        Func::Upper => varchar(string(a).unwrap_or("").to_uppercase()),
        Func::Initcap => {
            let mut out = String::new();
            let mut start = true;
            for c in string(a).unwrap_or("").chars() {
                if c.is_alphanumeric() {
                    if start {
                        out.extend(c.to_uppercase());
                    } else {
                        out.extend(c.to_lowercase());
                    }
                    start = false;
                } else {
                    out.push(c);
                    start = true;
                }
            }
            varchar(out)
        }
        Func::Abs => match a {
            Value::Integer(i) => Value::Integer(i.checked_abs().ok_or(OVERFLOW)?),
            Value::Decimal { mantissa, scale } => Value::Decimal {
                mantissa: mantissa.checked_abs().ok_or(OVERFLOW)?,
                scale: *scale,
            },
            v => Value::Double(num(v)?.abs()),
        },
        Func::Ceil | Func::Floor => match a {
            Value::Integer(i) => Value::Integer(*i),
            v => {
                let x = num(v)?;
                Value::Double(if f == Func::Ceil { x.ceil() } else { x.floor() })
            }
        },
        Func::Exp => real(num(a)?.exp())?,
        Func::Ln | Func::Log10 => {
            let x = num(a)?;
            if x <= 0.0 {
                return Err("logarithm of a number that is not positive".into());
            }
            real(if f == Func::Ln { x.ln() } else { x.log10() })?
        }
        Func::Sqrt => {
            let x = num(a)?;
            if x < 0.0 {
                return Err("square root of a negative number".into());
            }
            Value::Double(x.sqrt())
        }
        Func::Power => real(num(a)?.powf(num(b)?))?,
        Func::Mod => arith(Arith::Mod, a, b)?,
        Func::Tsdiff => match (a, b) {
            (Value::Timestamp(x), Value::Timestamp(y)) => {
                Value::Integer(x.checked_sub(*y).ok_or(OVERFLOW)?)
            }
            _ => Value::Null,
        },
        Func::CharToTimestamp => match (string(a), string(b)) {
            (Some(fmt), Some(s)) => Value::Timestamp(time::parse_pattern(fmt, s)?),
            _ => Value::Null,
        },
        Func::TimestampToChar => match (string(a), b) {
            (Some(fmt), Value::Timestamp(t)) => varchar(time::format_pattern(fmt, *t)?),
            _ => Value::Null,
        },
        Func::Coalesce | Func::Nullif => Value::Null,
    })
}

/// SQL LIKE with `%` and `_` (no escape character).
pub(crate) fn like(s: &str, p: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = p.chars().collect();
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if j < p.len() && (p[j] == '_' || (p[j] != '%' && p[j] == s[i])) {
            i += 1;
            j += 1;
        } else if j < p.len() && p[j] == '%' {
            star = Some((j, i));
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    p[j..].iter().all(|c| *c == '%')
}

/// A value as text (CAST to VARCHAR, `||` operands cast first).
pub(crate) fn to_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Boolean(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Double(d) => format!("{d:?}"),
        Value::Decimal { mantissa, scale } => decimal_text(*mantissa, *scale),
        Value::Varchar(s) => s.to_string(),
        Value::Varbinary(b) => b.iter().map(|x| format!("{x:02X}")).collect(),
        Value::Timestamp(t) => time::format_timestamp(*t),
        Value::Date(d) => time::format_date(*d),
        Value::Time(t) => time::format_time(*t),
    })
}

fn decimal_text(m: i128, scale: u8) -> String {
    let digits = m.unsigned_abs().to_string();
    let scale = scale as usize;
    let sign = if m < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

fn pow10(n: u8) -> Option<i128> {
    10i128.checked_pow(n as u32)
}

/// Parses `-12.345` into a decimal of `scale` (rounded half away from zero).
fn parse_decimal(s: &str, scale: u8) -> Option<i128> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || int.len() > 38
    {
        return None;
    }
    let mut m: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let fd: Vec<u8> = frac.bytes().map(|b| b - b'0').collect();
    for k in 0..scale as usize {
        m = m
            .checked_mul(10)?
            .checked_add(*fd.get(k).unwrap_or(&0) as i128)?;
    }
    if fd.get(scale as usize).is_some_and(|d| *d >= 5) {
        m = m.checked_add(1)?;
    }
    Some(if neg { -m } else { m })
}

/// Converts `v` to `ty`: CAST (`cast`: strings are cut to the length) or assignment to
/// a stream column (a string too long is an error).
pub(crate) fn convert(v: Value, ty: &SqlType, cast: bool) -> EvalResult {
    let fail = |v: &Value| {
        Err(format!(
            "cannot convert {} to {}",
            to_text(v).map_or("NULL".into(), |t| format!("'{t}'")),
            type_text(ty)
        ))
    };
    Ok(match (ty, &v) {
        (_, Value::Null) => Value::Null,
        (SqlType::Boolean, Value::Boolean(_)) => v,
        (SqlType::Boolean, Value::Varchar(s)) => match s.trim().to_ascii_uppercase().as_str() {
            "TRUE" => Value::Boolean(true),
            "FALSE" => Value::Boolean(false),
            _ => return fail(&v),
        },
        (SqlType::Integer, Value::Integer(_)) => v,
        (SqlType::Integer, Value::Double(d)) => {
            if !d.is_finite() || d.abs() >= 9.2e18 {
                return fail(&v);
            }
            Value::Integer(d.trunc() as i64)
        }
        (SqlType::Integer, Value::Decimal { mantissa, scale }) => {
            let q = mantissa / pow10(*scale).unwrap_or(1);
            match i64::try_from(q) {
                Ok(i) => Value::Integer(i),
                Err(_) => return fail(&v),
            }
        }
        (SqlType::Integer, Value::Varchar(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Value::Integer(i),
            Err(_) => return fail(&v),
        },
        (SqlType::Double, Value::Varchar(s)) => match s.trim().parse::<f64>() {
            Ok(d) => Value::Double(d),
            Err(_) => return fail(&v),
        },
        (SqlType::Double, _) if as_f64(&v).is_some() => Value::Double(as_f64(&v).unwrap_or(0.0)),
        (SqlType::Decimal { precision, scale }, _) => {
            let m = match &v {
                Value::Integer(i) => pow10(*scale).and_then(|p| (*i as i128).checked_mul(p)),
                Value::Double(d) if d.is_finite() => parse_decimal(&format!("{d:.20}"), *scale),
                Value::Decimal {
                    mantissa,
                    scale: from,
                } => {
                    if from <= scale {
                        pow10(scale - from).and_then(|p| mantissa.checked_mul(p))
                    } else {
                        let p = pow10(from - scale).unwrap_or(1);
                        let q = mantissa / p;
                        let r = (mantissa % p).abs();
                        Some(if r * 2 >= p { q + mantissa.signum() } else { q })
                    }
                }
                Value::Varchar(s) => parse_decimal(s, *scale),
                _ => None,
            };
            match m {
                Some(m) if pow10(*precision).is_some_and(|limit| m.abs() < limit) => {
                    Value::Decimal {
                        mantissa: m,
                        scale: *scale,
                    }
                }
                _ => return fail(&v),
            }
        }
        (SqlType::Varchar(n), _) => {
            let Some(text) = to_text(&v) else {
                return fail(&v);
            };
            let len = text.chars().count();
            if len > *n as usize {
                if !cast {
                    return Err(format!(
                        "string of {len} characters does not fit VARCHAR({n})"
                    ));
                }
                varchar(text.chars().take(*n as usize).collect())
            } else if let Value::Varchar(_) = v {
                v
            } else {
                varchar(text)
            }
        }
        (SqlType::Varbinary(n), Value::Varbinary(_) | Value::Varchar(_)) => {
            let bytes: Arc<[u8]> = match &v {
                Value::Varchar(s) => Arc::from(s.as_bytes()),
                Value::Varbinary(b) => b.clone(),
                _ => return fail(&v),
            };
            if bytes.len() > *n as usize {
                if !cast {
                    return Err(format!("{} bytes do not fit VARBINARY({n})", bytes.len()));
                }
                Value::Varbinary(Arc::from(&bytes[..*n as usize]))
            } else {
                Value::Varbinary(bytes)
            }
        }
        (SqlType::Timestamp, Value::Timestamp(_)) => v,
        (SqlType::Timestamp, Value::Date(d)) => Value::Timestamp(*d as i64 * time::MS_DAY),
        (SqlType::Timestamp, Value::Varchar(s)) => match time::parse_timestamp(s) {
            Some(t) => Value::Timestamp(t),
            None => return fail(&v),
        },
        (SqlType::Date, Value::Date(_)) => v,
        (SqlType::Date, Value::Timestamp(t)) => match i32::try_from(t.div_euclid(time::MS_DAY)) {
            Ok(d) => Value::Date(d),
            Err(_) => return fail(&v),
        },
        (SqlType::Date, Value::Varchar(s)) => match time::parse_date(s) {
            Some(d) => Value::Date(d),
            None => return fail(&v),
        },
        (SqlType::Time, Value::Time(_)) => v,
        (SqlType::Time, Value::Timestamp(t)) => Value::Time(t.rem_euclid(time::MS_DAY) as u32),
        (SqlType::Time, Value::Varchar(s)) => match time::parse_time(s) {
            Some(t) => Value::Time(t),
            None => return fail(&v),
        },
        _ => return fail(&v),
    })
}

/// Whether CAST from `from` to `to` can succeed for some value.
pub(crate) fn castable(from: Ty, to: &SqlType) -> bool {
    let to = Ty::of(to);
    from == Ty::Null
        || from == to
        || from == Ty::Varchar
        || matches!(to, Ty::Varchar)
        || (from.numeric() && to.numeric())
        || (from == Ty::Interval && to.numeric())
        || matches!(
            (from, to),
            (Ty::Timestamp, Ty::Date)
                | (Ty::Timestamp, Ty::Time)
                | (Ty::Date, Ty::Timestamp)
                | (Ty::Varchar, Ty::Varbinary)
        )
}

pub(crate) fn type_text(t: &SqlType) -> String {
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(v: Value) -> Box<Expr> {
        Box::new(Expr::Lit(v))
    }
    fn s(x: &str) -> Value {
        Value::Varchar(Arc::from(x))
    }

    #[test]
    fn three_valued_logic() {
        let t = lit(Value::Boolean(true));
        let f = lit(Value::Boolean(false));
        let n = lit(Value::Null);
        let ev = |e: Expr| e.eval(0, &[]).unwrap();
        assert_eq!(ev(Expr::And(n.clone(), f.clone())), Value::Boolean(false));
        assert_eq!(ev(Expr::And(n.clone(), t.clone())), Value::Null);
        assert_eq!(ev(Expr::Or(n.clone(), t.clone())), Value::Boolean(true));
        assert_eq!(ev(Expr::Or(n.clone(), f.clone())), Value::Null);
        assert_eq!(ev(Expr::Not(n.clone())), Value::Null);
        let in_null = Expr::InList(
            lit(Value::Integer(1)),
            vec![Expr::Lit(Value::Integer(2)), Expr::Lit(Value::Null)],
            false,
        );
        assert_eq!(ev(in_null), Value::Null);
    }

    #[test]
    fn like_patterns() {
        assert!(like("AMZN", "AM%"));
        assert!(like("AMZN", "_MZ_"));
        assert!(like("abcabc", "%b%c"));
        assert!(!like("AMZN", "AM_"));
        assert!(like("", "%"));
    }

    #[test]
    fn conversions() {
        let dec = SqlType::Decimal {
            precision: 5,
            scale: 2,
        };
        assert_eq!(
            convert(s("12.345"), &dec, false).unwrap(),
            Value::Decimal {
                mantissa: 1235,
                scale: 2
            }
        );
        assert!(convert(s("1234.5"), &dec, false).is_err());
        assert_eq!(
            to_text(&Value::Decimal {
                mantissa: -5,
                scale: 2
            })
            .unwrap(),
            "-0.05"
        );
        assert!(convert(s("abcde"), &SqlType::Varchar(4), false).is_err());
        assert_eq!(
            convert(s("abcde"), &SqlType::Varchar(4), true).unwrap(),
            s("abcd")
        );
        assert_eq!(
            convert(Value::Double(2.9), &SqlType::Integer, true).unwrap(),
            Value::Integer(2)
        );
        assert!(convert(s("x"), &SqlType::Integer, true).is_err());
        assert!(arith(Arith::Add, &Value::Integer(i64::MAX), &Value::Integer(1)).is_err());
        assert!(arith(Arith::Div, &Value::Integer(1), &Value::Integer(0)).is_err());
    }
}
