//! Recursive-descent parser (Pratt for expressions) from tokens to [`crate::ast`].
//!
//! Grammar: the statements and query forms of the Kinesis Data Analytics SQL reference
//! that applications use (see docs/analytics-sql.md for the exact list). Errors read
//! like the service's: `Encountered "FROM" at line 3, column 5. Was expecting ...`.
//! Nesting is capped so that hostile input cannot exhaust the stack.

use crate::SqlError;
use crate::SqlType;
use crate::ast::*;
use crate::lexer::{Tok, Token, tokenize};
use crate::time;

/// Deepest nesting of parentheses, function calls and subqueries accepted.
const MAX_DEPTH: u32 = 64;

/// Tallest expression tree accepted (operator chains count: `1+1+...` is left-deep).
const MAX_TREE: u32 = 200;

/// Words that cannot be an unquoted column or stream name.
const RESERVED: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "HAVING",
    "WINDOW",
    "WINDOWED",
    "AND",
    "OR",
    "NOT",
    "AS",
    "ON",
    "JOIN",
    "LEFT",
    "INNER",
    "OUTER",
    "CREATE",
    "PUMP",
    "INSERT",
    "INTO",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "IS",
    "IN",
    "BETWEEN",
    "LIKE",
    "NULL",
    "TRUE",
    "FALSE",
    "OVER",
    "UNION",
    "ORDER",
    "DISTINCT",
    "CAST",
    "INTERVAL",
    "PARTITION",
    "RANGE",
    "ROWS",
    "PRECEDING",
    "STREAM",
];

pub(crate) fn parse_program(code: &str) -> Result<Vec<Statement>, SqlError> {
    let tokens = tokenize(code)?;
    let mut p = Parser {
        toks: tokens,
        i: 0,
        depth: 0,
    };
    let mut out = Vec::new();
    loop {
        while p.eat_sym(";") {}
        if p.peek().tok == Tok::Eof {
            break;
        }
        out.push(p.statement()?);
        if p.peek().tok != Tok::Eof && !p.eat_sym(";") {
            return Err(p.unexpected("\";\""));
        }
    }
    if out.is_empty() {
        return Err(p.unexpected("\"CREATE\""));
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    depth: u32,
}

fn pos_of(t: &Token) -> Pos {
    Pos {
        line: t.line,
        column: t.column,
    }
}

impl Parser {
    fn peek(&self) -> &Token {
        // The token list always ends with Eof and `i` never passes it.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }
    fn peek_at(&self, k: usize) -> &Tok {
        &self.toks[(self.i + k).min(self.toks.len() - 1)].tok
    }
    fn pos(&self) -> Pos {
        pos_of(self.peek())
    }
    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }
    fn unexpected(&self, expecting: &str) -> SqlError {
        let t = self.peek();
        SqlError {
            line: t.line,
            column: t.column,
            message: format!(
                "Encountered \"{}\" at line {}, column {}. Was expecting {}",
                t.describe(),
                t.line,
                t.column,
                expecting
            ),
        }
    }
    fn error_at(&self, pos: Pos, message: String) -> SqlError {
        SqlError {
            line: pos.line,
            column: pos.column,
            message,
        }
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(&self.peek().tok, Tok::Word(x) if x == w)
    }
    fn eat_word(&mut self, w: &str) -> bool {
        if self.is_word(w) {
            self.next();
            true
        } else {
            false
        }
    }
    fn word(&mut self, w: &str) -> Result<(), SqlError> {
        if self.eat_word(w) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("\"{w}\"")))
        }
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(&self.peek().tok, Tok::Sym(x) if *x == s) {
            self.next();
            true
        } else {
            false
        }
    }
    fn sym(&mut self, s: &str) -> Result<(), SqlError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("\"{s}\"")))
        }
    }
    /// A stream, column or alias name: quoted, or an unquoted non-reserved word.
    fn ident(&mut self, what: &str) -> Result<(String, Pos), SqlError> {
        let pos = self.pos();
        match &self.peek().tok {
            Tok::Quoted(q) => {
                let q = q.clone();
                self.next();
                Ok((q, pos))
            }
            Tok::Word(w) if !RESERVED.contains(&w.as_str()) => {
                let w = w.clone();
                self.next();
                Ok((w, pos))
            }
            _ => Err(self.unexpected(what)),
        }
    }
    fn enter(&mut self) -> Result<(), SqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(self.pos(), "expression nested too deeply".into()));
        }
        Ok(())
    }

    fn statement(&mut self) -> Result<Statement, SqlError> {
        self.word("CREATE")?;
        if self.eat_word("OR") {
            self.word("REPLACE")?;
        }
        if self.eat_word("STREAM") {
            let (name, pos) = self.ident("a stream name")?;
            self.sym("(")?;
            let mut columns = Vec::new();
            loop {
                let (c, cpos) = self.ident("a column name")?;
                let ty = self.sql_type()?;
                columns.push((c, ty, cpos));
                if !self.eat_sym(",") {
                    break;
                }
            }
            self.sym(")")?;
            return Ok(Statement::CreateStream { name, pos, columns });
        }
        if !self.is_word("PUMP") {
            return Err(self.unexpected("\"STREAM\" or \"PUMP\""));
        }
        self.next();
        let (name, pos) = self.ident("a pump name")?;
        self.word("AS")?;
        self.word("INSERT")?;
        self.word("INTO")?;
        let (target, target_pos) = self.ident("a stream name")?;
        let mut columns = None;
        if self.eat_sym("(") {
            let mut cs = Vec::new();
            loop {
                cs.push(self.ident("a column name")?);
                if !self.eat_sym(",") {
                    break;
                }
            }
            self.sym(")")?;
            columns = Some(cs);
        }
        let query = Box::new(self.query()?);
        Ok(Statement::CreatePump {
            name,
            pos,
            target,
            target_pos,
            columns,
            query,
        })
    }

    fn sql_type(&mut self) -> Result<SqlType, SqlError> {
        let start = self.i;
        let t = self.next();
        let Tok::Word(w) = &t.tok else {
            self.i = start;
            return Err(self.unexpected("a data type"));
        };
        let ty = match w.as_str() {
            "BOOLEAN" => SqlType::Boolean,
            "TINYINT" | "SMALLINT" | "INTEGER" | "INT" | "BIGINT" => SqlType::Integer,
            "REAL" | "FLOAT" => SqlType::Double,
            "DOUBLE" => {
                self.eat_word("PRECISION");
                SqlType::Double
            }
            "DECIMAL" | "NUMERIC" | "DEC" => {
                let (mut precision, mut scale) = (18u8, 0u8);
                if self.eat_sym("(") {
                    precision = self.small_int(1, 38)? as u8;
                    if self.eat_sym(",") {
                        scale = self.small_int(0, precision as u64)? as u8;
                    }
                    self.sym(")")?;
                }
                SqlType::Decimal { precision, scale }
            }
            "VARCHAR" | "CHAR" | "CHARACTER" | "VARBINARY" | "BINARY" => {
                if w == "CHARACTER" {
                    self.eat_word("VARYING");
                }
                let mut n = if w == "CHAR" || w == "CHARACTER" || w == "BINARY" {
                    1
                } else {
                    65_535
                };
                if self.eat_sym("(") {
                    n = self.small_int(1, 65_535)? as u32;
                    self.sym(")")?;
                }
                if w.ends_with("BINARY") {
                    SqlType::Varbinary(n)
                } else {
                    SqlType::Varchar(n)
                }
            }
            "TIMESTAMP" => SqlType::Timestamp,
            "DATE" => SqlType::Date,
            "TIME" => SqlType::Time,
            _ => {
                self.i = start;
                return Err(self.unexpected("a data type"));
            }
        };
        Ok(ty)
    }

    fn small_int(&mut self, min: u64, max: u64) -> Result<u64, SqlError> {
        if let Tok::Number(n) = &self.peek().tok
            && let Ok(v) = n.parse::<u64>()
            && (min..=max).contains(&v)
        {
            self.next();
            return Ok(v);
        }
        Err(self.unexpected(&format!("an integer from {min} to {max}")))
    }

    fn query(&mut self) -> Result<Query, SqlError> {
        self.enter()?;
        let pos = self.pos();
        self.word("SELECT")?;
        if !self.eat_word("STREAM") {
            return Err(self.unexpected("\"STREAM\" (queries on streams are SELECT STREAM)"));
        }
        let mut items = Vec::new();
        loop {
            let p = self.pos();
            if self.eat_sym("*") {
                items.push(SelectItem::Wildcard(None, p));
            } else if matches!(self.peek().tok, Tok::Word(_) | Tok::Quoted(_))
                && *self.peek_at(1) == Tok::Sym(".")
                && *self.peek_at(2) == Tok::Sym("*")
            {
                let (q, _) = self.ident("a name")?;
                self.next();
                self.next();
                items.push(SelectItem::Wildcard(Some(q), p));
            } else {
                let e = self.expr()?;
                let alias = self.alias()?;
                items.push(SelectItem::Expr(e, alias));
            }
            if !self.eat_sym(",") {
                break;
            }
        }
        self.word("FROM")?;
        let source = self.source()?;
        let mut join = None;
        let jpos = self.pos();
        let left_outer = if self.eat_word("LEFT") {
            self.eat_word("OUTER");
            self.word("JOIN")?;
            Some(true)
        } else if self.eat_word("INNER") {
            self.word("JOIN")?;
            Some(false)
        } else if self.eat_word("JOIN") {
            Some(false)
        } else {
            None
        };
        if let Some(left_outer) = left_outer {
            let (table, pos) = self.ident("a table name")?;
            let alias = self.alias()?;
            self.word("ON")?;
            let on = self.expr()?;
            let _ = jpos;
            join = Some(Join {
                left_outer,
                table,
                alias,
                pos,
                on,
            });
        }
        let filter = if self.eat_word("WHERE") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut stagger = None;
        let mut group_by = Vec::new();
        if self.is_word("WINDOWED") {
            let spos = self.pos();
            self.next();
            self.word("BY")?;
            self.word("STAGGER")?;
            self.sym("(")?;
            self.word("PARTITION")?;
            self.word("BY")?;
            let partition = self.expr_list()?;
            self.word("RANGE")?;
            let range_ms = self.interval_literal()?;
            if range_ms <= 0 {
                return Err(self.error_at(spos, "the STAGGER range must be positive".into()));
            }
            self.sym(")")?;
            stagger = Some(Stagger {
                partition,
                range_ms,
            });
        } else if self.eat_word("GROUP") {
            self.word("BY")?;
            group_by = self.expr_list()?;
        }
        let having = if self.eat_word("HAVING") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut windows = Vec::new();
        if self.eat_word("WINDOW") {
            loop {
                let (name, p) = self.ident("a window name")?;
                self.word("AS")?;
                self.sym("(")?;
                let spec = self.window_spec()?;
                self.sym(")")?;
                windows.push((name, spec, p));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        self.depth -= 1;
        Ok(Query {
            pos,
            items,
            from: From { source, join },
            filter,
            group_by,
            having,
            stagger,
            windows,
        })
    }

    fn alias(&mut self) -> Result<Option<String>, SqlError> {
        if self.eat_word("AS") {
            return Ok(Some(self.ident("an alias")?.0));
        }
        match &self.peek().tok {
            Tok::Quoted(_) => Ok(Some(self.ident("an alias")?.0)),
            Tok::Word(w) if !RESERVED.contains(&w.as_str()) => Ok(Some(self.ident("an alias")?.0)),
            _ => Ok(None),
        }
    }

    fn source(&mut self) -> Result<Source, SqlError> {
        if self.eat_sym("(") {
            let query = Box::new(self.query()?);
            self.sym(")")?;
            let alias = self.alias()?;
            return Ok(Source::Subquery { query, alias });
        }
        if self.is_word("TABLE") && *self.peek_at(1) == Tok::Sym("(") {
            self.next();
            self.next();
            let (name, pos) = self.ident("a function name")?;
            self.sym("(")?;
            self.word("CURSOR")?;
            self.sym("(")?;
            let cursor = Box::new(self.query()?);
            self.sym(")")?;
            let mut args = Vec::new();
            while self.eat_sym(",") {
                args.push(self.expr()?);
            }
            self.sym(")")?;
            self.sym(")")?;
            let alias = self.alias()?;
            return Ok(Source::Function {
                name,
                pos,
                cursor,
                args,
                alias,
            });
        }
        let (name, pos) = self.ident("a stream name")?;
        let alias = self.alias()?;
        Ok(Source::Named { name, alias, pos })
    }

    fn window_spec(&mut self) -> Result<WindowSpec, SqlError> {
        let mut partition = Vec::new();
        if self.eat_word("PARTITION") {
            self.word("BY")?;
            partition = self.expr_list()?;
        }
        let frame = if self.eat_word("RANGE") {
            if self.eat_word("CURRENT") {
                self.word("ROW")?;
                Frame::Range(0)
            } else {
                let ms = self.interval_literal()?;
                self.word("PRECEDING")?;
                Frame::Range(ms.max(0))
            }
        } else if self.eat_word("ROWS") {
            if self.eat_word("CURRENT") {
                self.word("ROW")?;
                Frame::Rows(0)
            } else {
                let n = self.small_int(0, 1_000_000)?;
                self.word("PRECEDING")?;
                Frame::Rows(n)
            }
        } else {
            return Err(self.unexpected("\"RANGE\" or \"ROWS\""));
        };
        Ok(WindowSpec { partition, frame })
    }

    fn expr_list(&mut self) -> Result<Vec<Expr>, SqlError> {
        let mut v = vec![self.expr()?];
        while self.eat_sym(",") {
            v.push(self.expr()?);
        }
        Ok(v)
    }

    /// `INTERVAL 'n' UNIT [TO UNIT]` as milliseconds.
    fn interval_literal(&mut self) -> Result<i64, SqlError> {
        self.word("INTERVAL")?;
        let neg = self.eat_sym("-");
        let spos = self.pos();
        let start = self.i;
        let Tok::Str(text) = self.next().tok else {
            self.i = start;
            return Err(self.unexpected("a string literal"));
        };
        let upos = self.pos();
        let from = self.unit_word()?;
        let to = if self.eat_word("TO") {
            Some(self.unit_word()?)
        } else {
            None
        };
        let ms = interval_ms(&text, from, to)
            .ok_or_else(|| self.error_at(spos, format!("invalid interval literal '{text}'")))?;
        if matches!(from, Unit::Year | Unit::Month) {
            return Err(self.error_at(
                upos,
                "year-month intervals are not supported (use DAY, HOUR, MINUTE or SECOND)".into(),
            ));
        }
        Ok(if neg { -ms } else { ms })
    }

    fn unit_word(&mut self) -> Result<Unit, SqlError> {
        let u = match &self.peek().tok {
            Tok::Word(w) => match w.as_str() {
                "YEAR" => Unit::Year,
                "MONTH" => Unit::Month,
                "DAY" => Unit::Day,
                "HOUR" => Unit::Hour,
                "MINUTE" => Unit::Minute,
                "SECOND" => Unit::Second,
                "MILLISECOND" => Unit::Millisecond,
                _ => return Err(self.unexpected("a time unit")),
            },
            _ => return Err(self.unexpected("a time unit")),
        };
        self.next();
        // An optional precision, `SECOND(2)`.
        if self.eat_sym("(") {
            self.small_int(0, 10)?;
            self.sym(")")?;
        }
        Ok(u)
    }

    fn expr(&mut self) -> Result<Expr, SqlError> {
        self.enter()?;
        let e = self.binary(0);
        self.depth -= 1;
        e
    }

    fn too_deep(&self, e: &Expr) -> Result<(), SqlError> {
        if e.depth > MAX_TREE {
            return Err(self.error_at(e.pos, "expression nested too deeply".into()));
        }
        Ok(())
    }

    /// Binding powers: OR 1, AND 2, NOT 3 (prefix), comparisons 4, + - || 5, * / % 6.
    fn binary(&mut self, min: u8) -> Result<Expr, SqlError> {
        let pos = self.pos();
        let mut lhs = if self.is_word("NOT") {
            self.next();
            self.enter()?;
            let e = self.binary(3)?;
            self.depth -= 1;
            mk(ExprKind::Unary("NOT", Box::new(e)), pos)
        } else {
            self.unary()?
        };
        loop {
            let t = self.peek().tok.clone();
            let (op, bp): (&'static str, u8) = match &t {
                Tok::Word(w) if w == "OR" => ("OR", 1),
                Tok::Word(w) if w == "AND" => ("AND", 2),
                Tok::Sym(s @ ("=" | "<>" | "!=" | "<" | ">" | "<=" | ">=")) => (s, 4),
                Tok::Word(w) if ["IS", "BETWEEN", "IN", "LIKE", "NOT"].contains(&w.as_str()) => {
                    ("special", 4)
                }
                Tok::Sym(s @ ("+" | "-" | "||")) => (s, 5),
                Tok::Sym(s @ ("*" | "/" | "%")) => (s, 6),
                _ => break,
            };
            if bp <= min {
                break;
            }
            let opos = self.pos();
            if op == "special" {
                lhs = self.postfix(lhs, opos)?;
                self.too_deep(&lhs)?;
                continue;
            }
            self.next();
            let rhs = self.binary(bp)?;
            let op = if op == "!=" { "<>" } else { op };
            lhs = mk(ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), opos);
            self.too_deep(&lhs)?;
        }
        Ok(lhs)
    }

    /// IS [NOT] NULL, [NOT] BETWEEN, [NOT] IN, [NOT] LIKE after `lhs`.
    fn postfix(&mut self, lhs: Expr, pos: Pos) -> Result<Expr, SqlError> {
        let l = Box::new(lhs);
        if self.eat_word("IS") {
            let neg = self.eat_word("NOT");
            self.word("NULL")?;
            return Ok(mk(ExprKind::IsNull(l, neg), pos));
        }
        let neg = self.eat_word("NOT");
        let kind = if self.eat_word("BETWEEN") {
            let lo = self.binary(4)?;
            self.word("AND")?;
            let hi = self.binary(4)?;
            ExprKind::Between(l, Box::new(lo), Box::new(hi), neg)
        } else if self.eat_word("IN") {
            self.sym("(")?;
            let list = self.expr_list()?;
            self.sym(")")?;
            ExprKind::InList(l, list, neg)
        } else if self.eat_word("LIKE") {
            let pat = self.binary(4)?;
            ExprKind::Like(l, Box::new(pat), neg)
        } else {
            return Err(self.unexpected("\"BETWEEN\", \"IN\" or \"LIKE\""));
        };
        Ok(mk(kind, pos))
    }

    fn unary(&mut self) -> Result<Expr, SqlError> {
        let pos = self.pos();
        if self.eat_sym("-") {
            self.enter()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(match e.kind {
                ExprKind::Int(v) => mk(ExprKind::Int(v.wrapping_neg()), pos),
                ExprKind::Double(v) => mk(ExprKind::Double(-v), pos),
                _ => mk(ExprKind::Unary("-", Box::new(e)), pos),
            });
        }
        if self.eat_sym("+") {
            self.enter()?;
            let e = self.unary();
            self.depth -= 1;
            return e;
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, SqlError> {
        let pos = self.pos();
        let t = self.peek().clone();
        let kind =
            match &t.tok {
                Tok::Number(n) => {
                    self.next();
                    if n.contains(['.', 'E']) {
                        ExprKind::Double(n.parse().map_err(|_| {
                            self.error_at(pos, format!("invalid numeric literal {n}"))
                        })?)
                    } else {
                        match n.parse::<i64>() {
                            Ok(v) => ExprKind::Int(v),
                            Err(_) => ExprKind::Double(n.parse().map_err(|_| {
                                self.error_at(pos, format!("invalid numeric literal {n}"))
                            })?),
                        }
                    }
                }
                Tok::Str(s) => {
                    self.next();
                    ExprKind::Str(s.clone())
                }
                Tok::Sym("(") => {
                    self.next();
                    let e = self.expr()?;
                    self.sym(")")?;
                    return Ok(e);
                }
                Tok::Quoted(_) => return self.column(),
                Tok::Word(w) => {
                    let w = w.clone();
                    return self.word_primary(&w, pos);
                }
                _ => return Err(self.unexpected("an expression")),
            };
        Ok(mk(kind, pos))
    }

    fn column(&mut self) -> Result<Expr, SqlError> {
        let pos = self.pos();
        let (first, _) = self.ident("a column name")?;
        if self.eat_sym(".") {
            let (second, _) = self.ident("a column name")?;
            return Ok(mk(ExprKind::Column(Some(first), second), pos));
        }
        Ok(mk(ExprKind::Column(None, first), pos))
    }

    fn typed_literal(&mut self, what: &str, pos: Pos) -> Result<ExprKind, SqlError> {
        self.next();
        let start = self.i;
        let Tok::Str(s) = self.next().tok else {
            self.i = start;
            return Err(self.unexpected("a string literal"));
        };
        let bad = || self.error_at(pos, format!("invalid {what} literal '{s}'"));
        Ok(match what {
            "TIMESTAMP" => ExprKind::Timestamp(time::parse_timestamp(&s).ok_or_else(bad)?),
            "DATE" => ExprKind::Date(time::parse_date(&s).ok_or_else(bad)?),
            _ => ExprKind::Time(time::parse_time(&s).ok_or_else(bad)?),
        })
    }

    fn word_primary(&mut self, w: &str, pos: Pos) -> Result<Expr, SqlError> {
        let call = *self.peek_at(1) == Tok::Sym("(");
        let kind = match w {
            "NULL" => {
                self.next();
                ExprKind::Null
            }
            "TRUE" | "FALSE" => {
                self.next();
                ExprKind::Bool(w == "TRUE")
            }
            "TIMESTAMP" | "DATE" | "TIME" if matches!(self.peek_at(1), Tok::Str(_)) => {
                self.typed_literal(w, pos)?
            }
            "INTERVAL" => ExprKind::Interval(self.interval_literal()?),
            "CURRENT_ROW_TIMESTAMP" => {
                self.next();
                ExprKind::CurrentRowTimestamp
            }
            "CASE" => {
                self.next();
                let operand = if self.is_word("WHEN") {
                    None
                } else {
                    Some(Box::new(self.expr()?))
                };
                let mut whens = Vec::new();
                while self.eat_word("WHEN") {
                    let c = self.expr()?;
                    self.word("THEN")?;
                    whens.push((c, self.expr()?));
                }
                if whens.is_empty() {
                    return Err(self.unexpected("\"WHEN\""));
                }
                let otherwise = if self.eat_word("ELSE") {
                    Some(Box::new(self.expr()?))
                } else {
                    None
                };
                self.word("END")?;
                ExprKind::Case {
                    operand,
                    whens,
                    otherwise,
                }
            }
            "CAST" if call => {
                self.next();
                self.next();
                let e = self.expr()?;
                self.word("AS")?;
                let ty = self.sql_type()?;
                self.sym(")")?;
                ExprKind::Cast(Box::new(e), ty)
            }
            "FLOOR" | "CEIL" | "CEILING" if call => {
                self.next();
                self.next();
                let e = self.expr()?;
                if self.eat_word("TO") {
                    let unit = self.unit_word()?;
                    self.sym(")")?;
                    ExprKind::FloorTo(Box::new(e), unit, w != "FLOOR")
                } else {
                    self.sym(")")?;
                    let name = if w == "FLOOR" { "FLOOR" } else { "CEIL" };
                    ExprKind::Call {
                        name: name.into(),
                        args: vec![e],
                        distinct: false,
                        star: false,
                        over: None,
                    }
                }
            }
            "STEP" if call => {
                self.next();
                self.next();
                let e = self.expr()?;
                self.word("BY")?;
                let by = self.expr()?;
                self.sym(")")?;
                ExprKind::Step(Box::new(e), Box::new(by))
            }
            "EXTRACT" if call => {
                self.next();
                self.next();
                let unit = match &self.peek().tok {
                    Tok::Word(u) => match u.as_str() {
                        "DOW" => Some(Unit::DayOfWeek),
                        "DOY" => Some(Unit::DayOfYear),
                        "EPOCH" => Some(Unit::Epoch),
                        _ => None,
                    },
                    _ => None,
                };
                let unit = match unit {
                    Some(u) => {
                        self.next();
                        u
                    }
                    None => self.unit_word()?,
                };
                self.word("FROM")?;
                let e = self.expr()?;
                self.sym(")")?;
                ExprKind::Extract(unit, Box::new(e))
            }
            "SUBSTRING" if call => {
                self.next();
                self.next();
                let s = self.expr()?;
                if !self.eat_word("FROM") {
                    self.sym(",")?;
                }
                let from = self.expr()?;
                let len = if self.eat_word("FOR") || self.eat_sym(",") {
                    Some(Box::new(self.expr()?))
                } else {
                    None
                };
                self.sym(")")?;
                ExprKind::Substring(Box::new(s), Box::new(from), len)
            }
            "POSITION" if call => {
                self.next();
                self.next();
                let needle = self.binary(4)?;
                self.word("IN")?;
                let hay = self.expr()?;
                self.sym(")")?;
                ExprKind::Position(Box::new(needle), Box::new(hay))
            }
            "TRIM" if call => {
                self.next();
                self.next();
                let (mut lead, mut trail) = (true, true);
                let mut explicit = false;
                if self.eat_word("LEADING") {
                    trail = false;
                    explicit = true;
                } else if self.eat_word("TRAILING") {
                    lead = false;
                    explicit = true;
                } else if self.eat_word("BOTH") {
                    explicit = true;
                }
                let mut chars = None;
                let s;
                if self.eat_word("FROM") {
                    s = self.expr()?;
                } else {
                    let first = self.expr()?;
                    if self.eat_word("FROM") {
                        chars = Some(Box::new(first));
                        s = self.expr()?;
                    } else if explicit {
                        return Err(self.unexpected("\"FROM\""));
                    } else {
                        s = first;
                    }
                }
                self.sym(")")?;
                ExprKind::Trim(lead, trail, chars, Box::new(s))
            }
            _ if call => {
                self.next();
                self.next();
                let mut args = Vec::new();
                let mut distinct = false;
                let mut star = false;
                if self.eat_sym("*") {
                    star = true;
                } else if !matches!(self.peek().tok, Tok::Sym(")")) {
                    distinct = self.eat_word("DISTINCT");
                    if !distinct {
                        self.eat_word("ALL");
                    }
                    args = self.expr_list()?;
                }
                self.sym(")")?;
                let over = if self.eat_word("OVER") {
                    if self.eat_sym("(") {
                        let spec = self.window_spec()?;
                        self.sym(")")?;
                        Some(Over::Inline(spec))
                    } else {
                        let (n, p) = self.ident("a window name")?;
                        Some(Over::Named(n, p))
                    }
                } else {
                    None
                };
                ExprKind::Call {
                    name: w.to_string(),
                    args,
                    distinct,
                    star,
                    over,
                }
            }
            _ => return self.column(),
        };
        Ok(mk(kind, pos))
    }
}

/// `'10'` SECOND, `'1:30'` MINUTE TO SECOND, `'2 10:00'` DAY TO MINUTE ... as ms.
fn interval_ms(text: &str, from: Unit, to: Option<Unit>) -> Option<i64> {
    let unit_ms = |u: Unit| -> Option<i64> {
        Some(match u {
            Unit::Day => time::MS_DAY,
            Unit::Hour => time::MS_HOUR,
            Unit::Minute => time::MS_MINUTE,
            Unit::Second => time::MS_SECOND,
            Unit::Millisecond => 1,
            Unit::Year | Unit::Month => 0,
            _ => return None,
        })
    };
    let text = text.trim();
    let (neg, text) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let order = [Unit::Day, Unit::Hour, Unit::Minute, Unit::Second];
    let start = order.iter().position(|u| *u == from);
    let parts: Vec<&str> = text.split([' ', ':']).collect();
    let ms = match to {
        None => {
            if let Some((a, b)) = text.split_once('.')
                && from == Unit::Second
            {
                let whole: i64 = a.parse().ok()?;
                let frac: String = b.chars().chain("000".chars()).take(3).collect();
                if !b.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                whole
                    .checked_mul(1000)?
                    .checked_add(frac.parse::<i64>().ok()?)?
            } else {
                if !text.bytes().all(|c| c.is_ascii_digit()) || text.is_empty() {
                    return None;
                }
                text.parse::<i64>().ok()?.checked_mul(unit_ms(from)?)?
            }
        }
        Some(to) => {
            let (s, e) = (start?, order.iter().position(|u| *u == to)?);
            if e <= s || parts.len() != e - s + 1 {
                return None;
            }
            let mut total = 0i64;
            for (k, p) in parts.iter().enumerate() {
                if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                let v: i64 = p.parse().ok()?;
                total = total.checked_add(v.checked_mul(unit_ms(order[s + k])?)?)?;
            }
            total
        }
    };
    Some(if neg { -ms } else { ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_streams_and_pumps() {
        let code = r#"
            CREATE OR REPLACE STREAM "DEST" (ticker VARCHAR(4), "Price" DOUBLE, n INTEGER);
            -- a comment
            CREATE OR REPLACE PUMP "P" AS INSERT INTO "DEST"
              SELECT STREAM ticker_symbol, price * 2 AS p2, COUNT(*)
              FROM "SOURCE_SQL_STREAM_001" AS s
              WHERE price BETWEEN 1 AND 10 AND ticker_symbol IN ('A', 'B')
              GROUP BY ticker_symbol, STEP(s.ROWTIME BY INTERVAL '60' SECOND);
        "#;
        let stmts = parse_program(code).unwrap();
        assert_eq!(stmts.len(), 2);
        let Statement::CreateStream { name, columns, .. } = &stmts[0] else {
            panic!("not a stream")
        };
        assert_eq!(name, "DEST");
        assert_eq!(columns[0].0, "TICKER");
        assert_eq!(columns[1].0, "Price");
        assert_eq!(columns[0].1, SqlType::Varchar(4));
        let Statement::CreatePump { query, target, .. } = &stmts[1] else {
            panic!("not a pump")
        };
        assert_eq!(target, "DEST");
        assert_eq!(query.items.len(), 3);
        assert_eq!(query.group_by.len(), 2);
        assert!(query.filter.is_some());
    }

    #[test]
    fn error_points_at_the_token() {
        let e = parse_program("CREATE STREAM s (a INTEGER);\nCREATE PUMP p AS INSERT INTO s\nSELECT STREAM a\n    FROM FROM x;")
            .unwrap_err();
        assert_eq!((e.line, e.column), (4, 10));
        assert!(
            e.message
                .starts_with("Encountered \"FROM\" at line 4, column 10. Was expecting"),
            "{}",
            e.message
        );
    }

    #[test]
    fn intervals() {
        assert_eq!(interval_ms("10", Unit::Second, None), Some(10_000));
        assert_eq!(
            interval_ms("1:30", Unit::Minute, Some(Unit::Second)),
            Some(90_000)
        );
        assert_eq!(
            interval_ms("1 02:00", Unit::Day, Some(Unit::Minute)),
            Some(93_600_000)
        );
        assert_eq!(interval_ms("1.5", Unit::Second, None), Some(1500));
        assert_eq!(interval_ms("x", Unit::Second, None), None);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let code = format!(
            "CREATE PUMP p AS INSERT INTO s SELECT STREAM {}1{} FROM x;",
            "(".repeat(5000),
            ")".repeat(5000)
        );
        let e = parse_program(&code).unwrap_err();
        assert!(e.message.contains("nested too deeply"));
        let code = format!(
            "CREATE PUMP p AS INSERT INTO s SELECT STREAM {}1 FROM x;",
            "-".repeat(5000)
        );
        assert!(parse_program(&code).is_err());
        // Long operator chains are deep trees too.
        for op in ["+", " OR ", " IS NULL = ", "||"] {
            let code = format!(
                "CREATE PUMP p AS INSERT INTO s SELECT STREAM 1{} FROM x;",
                format!("{op}1").repeat(30_000)
            );
            let e = parse_program(&code).unwrap_err();
            assert!(
                e.message.contains("nested too deeply"),
                "{op}: {}",
                e.message
            );
        }
        let ok = format!(
            "CREATE PUMP p AS INSERT INTO s SELECT STREAM 1{} FROM x;",
            "+1".repeat(150)
        );
        assert!(parse_program(&ok).is_ok());
    }
}
