//! DynamoDB expressions ("Expressions" in the DynamoDB developer guide): condition,
//! filter and key-condition expressions, update expressions and projections, with
//! `ExpressionAttributeNames` (`#n`) and `ExpressionAttributeValues` (`:v`) resolved
//! while parsing; and the legacy `Expected` / `AttributeUpdates` parameters turned into
//! the same trees. Parsing and evaluation are pure and never panic; every failure is a
//! message in DynamoDB's words for a ValidationException.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

use super::attr::{Attr, Item, Num};

/// The longest expression accepted (DynamoDB: 4 KB).
pub const MAX_EXPRESSION_LEN: usize = 4096;
/// How deeply expressions may nest (parentheses, NOT), so recursion stays bounded.
const MAX_DEPTH: usize = 64;

/// One step of a document path.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Name(String),
    Index(usize),
}

/// A document path: `a.b[2].c`.
#[derive(Debug, Clone, PartialEq)]
pub struct Path(pub Vec<Step>);

impl Path {
    pub fn top(name: &str) -> Path {
        Path(vec![Step::Name(name.to_string())])
    }

    /// The top-level attribute the path starts at.
    pub fn root(&self) -> &str {
        match self.0.first() {
            Some(Step::Name(n)) => n,
            _ => "",
        }
    }

    pub fn get<'a>(&self, item: &'a Item) -> Option<&'a Attr> {
        let mut steps = self.0.iter();
        let Some(Step::Name(first)) = steps.next() else {
            return None;
        };
        let mut cur = item.get(first)?;
        for step in steps {
            cur = match (step, cur) {
                (Step::Name(n), Attr::M(m)) => m.get(n)?,
                (Step::Index(i), Attr::L(l)) => l.get(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Sets the value at the path; the parent must exist.
    fn set(&self, item: &mut Item, value: Attr) -> Result<(), String> {
        let invalid = || {
            "The document path provided in the update expression is invalid for update".to_string()
        };
        let Some((last, parents)) = self.0.split_last() else {
            return Err(invalid());
        };
        if parents.is_empty() {
            let Step::Name(n) = last else {
                return Err(invalid());
            };
            item.insert(n.clone(), value);
            return Ok(());
        }
        let Some(Step::Name(first)) = parents.first() else {
            return Err(invalid());
        };
        let mut cur = item.get_mut(first).ok_or_else(invalid)?;
        for step in &parents[1..] {
            cur = match (step, cur) {
                (Step::Name(n), Attr::M(m)) => m.get_mut(n).ok_or_else(invalid)?,
                (Step::Index(i), Attr::L(l)) => l.get_mut(*i).ok_or_else(invalid)?,
                _ => return Err(invalid()),
            };
        }
        match (last, cur) {
            (Step::Name(n), Attr::M(m)) => {
                m.insert(n.clone(), value);
            }
            (Step::Index(i), Attr::L(l)) => {
                if *i < l.len() {
                    l[*i] = value;
                } else {
                    l.push(value);
                }
            }
            _ => return Err(invalid()),
        }
        Ok(())
    }

    fn remove(&self, item: &mut Item) {
        let Some((last, parents)) = self.0.split_last() else {
            return;
        };
        if parents.is_empty() {
            if let Step::Name(n) = last {
                item.remove(n);
            }
            return;
        }
        let Some(Step::Name(first)) = parents.first() else {
            return;
        };
        let Some(mut cur) = item.get_mut(first) else {
            return;
        };
        for step in &parents[1..] {
            let next = match (step, cur) {
                (Step::Name(n), Attr::M(m)) => m.get_mut(n),
                (Step::Index(i), Attr::L(l)) => l.get_mut(*i),
                _ => None,
            };
            let Some(next) = next else { return };
            cur = next;
        }
        match (last, cur) {
            (Step::Name(n), Attr::M(m)) => {
                m.remove(n);
            }
            (Step::Index(i), Attr::L(l)) if *i < l.len() => {
                l.remove(*i);
            }
            _ => {}
        }
    }
}

/// A value in a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Path(Path),
    Value(Attr),
    Size(Path),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A condition (ConditionExpression, FilterExpression, KeyConditionExpression).
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Cmp(Operand, CmpOp, Operand),
    Between(Operand, Operand, Operand),
    In(Operand, Vec<Operand>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Exists(Path),
    NotExists(Path),
    Type(Path, Operand),
    BeginsWith(Operand, Operand),
    Contains(Operand, Operand),
}

/// The right-hand side of a SET action.
#[derive(Debug, Clone, PartialEq)]
pub enum SetValue {
    Path(Path),
    Value(Attr),
    IfNotExists(Path, Box<SetValue>),
    ListAppend(Box<SetValue>, Box<SetValue>),
    Plus(Box<SetValue>, Box<SetValue>),
    Minus(Box<SetValue>, Box<SetValue>),
}

/// An update: SET, REMOVE, ADD and DELETE actions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub set: Vec<(Path, SetValue)>,
    pub remove: Vec<Path>,
    pub add: Vec<(Path, Attr)>,
    pub delete: Vec<(Path, Attr)>,
}

impl Update {
    /// The top-level attributes the update touches (for UPDATED_OLD / UPDATED_NEW).
    pub fn touched(&self) -> BTreeSet<String> {
        self.set
            .iter()
            .map(|(p, _)| p)
            .chain(self.remove.iter())
            .chain(self.add.iter().map(|(p, _)| p))
            .chain(self.delete.iter().map(|(p, _)| p))
            .map(|p| p.root().to_string())
            .collect()
    }
}

/// `ExpressionAttributeNames` and `ExpressionAttributeValues`, and which were used.
#[derive(Debug, Default)]
pub struct Placeholders {
    names: HashMap<String, String>,
    values: HashMap<String, Attr>,
    used_names: BTreeSet<String>,
    used_values: BTreeSet<String>,
}

impl Placeholders {
    /// Reads both maps from a request.
    pub fn from_request(doc: &Value) -> Result<Placeholders, String> {
        let mut p = Placeholders::default();
        if let Some(names) = doc["ExpressionAttributeNames"].as_object() {
            for (k, v) in names {
                p.names
                    .insert(k.clone(), v.as_str().unwrap_or_default().to_string());
            }
        }
        if let Some(values) = doc["ExpressionAttributeValues"].as_object() {
            for (k, v) in values {
                let attr = Attr::from_json(v).map_err(|m| {
                    format!("ExpressionAttributeValues contains invalid value: {m} for key {k}")
                })?;
                p.values.insert(k.clone(), attr);
            }
        }
        Ok(p)
    }

    /// DynamoDB refuses placeholders that no expression of the request uses.
    pub fn check_all_used(&self) -> Result<(), String> {
        let unused: Vec<&String> = self
            .names
            .keys()
            .filter(|k| !self.used_names.contains(*k))
            .collect();
        if !unused.is_empty() {
            let mut unused: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            unused.sort();
            return Err(format!(
                "Value provided in ExpressionAttributeNames unused in expressions: keys: {{{}}}",
                unused.join(", ")
            ));
        }
        let mut unused: Vec<&str> = self
            .values
            .keys()
            .filter(|k| !self.used_values.contains(*k))
            .map(|s| s.as_str())
            .collect();
        if !unused.is_empty() {
            unused.sort();
            return Err(format!(
                "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{}}}",
                unused.join(", ")
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Name(String),
    Value(String),
    Int(usize),
    Sym(&'static str),
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Name(s) | Tok::Value(s) => s.clone(),
            Tok::Int(i) => i.to_string(),
            Tok::Sym(s) => s.to_string(),
        }
    }
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, String> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let word = |start: usize| -> (String, usize) {
            let mut j = start;
            while j < chars.len() && (chars[j].1.is_ascii_alphanumeric() || chars[j].1 == '_') {
                j += 1;
            }
            (chars[start..j].iter().map(|(_, c)| *c).collect(), j)
        };
        if c == '#' || c == ':' {
            let (w, j) = word(i + 1);
            if w.is_empty() {
                return Err(syntax(src, &c.to_string(), pos));
            }
            let text = format!("{c}{w}");
            out.push((
                if c == '#' {
                    Tok::Name(text)
                } else {
                    Tok::Value(text)
                },
                pos,
            ));
            i = j;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let (w, j) = word(i);
            out.push((Tok::Ident(w), pos));
            i = j;
        } else if c.is_ascii_digit() {
            let mut j = i;
            while j < chars.len() && chars[j].1.is_ascii_digit() {
                j += 1;
            }
            let text: String = chars[i..j].iter().map(|(_, c)| *c).collect();
            let n = text.parse().map_err(|_| syntax(src, &text, pos))?;
            out.push((Tok::Int(n), pos));
            i = j;
        } else {
            let next = chars.get(i + 1).map(|(_, c)| *c);
            let (sym, len) = match (c, next) {
                ('<', Some('>')) => ("<>", 2),
                ('<', Some('=')) => ("<=", 2),
                ('>', Some('=')) => (">=", 2),
                ('<', _) => ("<", 1),
                ('>', _) => (">", 1),
                ('=', _) => ("=", 1),
                ('(', _) => ("(", 1),
                (')', _) => (")", 1),
                (',', _) => (",", 1),
                ('.', _) => (".", 1),
                ('[', _) => ("[", 1),
                (']', _) => ("]", 1),
                ('+', _) => ("+", 1),
                ('-', _) => ("-", 1),
                _ => return Err(syntax(src, &c.to_string(), pos)),
            };
            out.push((Tok::Sym(sym), pos));
            i += len;
        }
    }
    Ok(out)
}

fn syntax(src: &str, token: &str, pos: usize) -> String {
    let start = src[..pos.min(src.len())]
        .char_indices()
        .rev()
        .nth(8)
        .map_or(0, |(i, _)| i);
    let end = src[pos.min(src.len())..]
        .char_indices()
        .nth(token.chars().count() + 8)
        .map_or(src.len(), |(i, _)| pos + i);
    format!(
        "Syntax error; token: \"{token}\", near: \"{}\"",
        src.get(start..end).unwrap_or(src)
    )
}

/// Which expression is being parsed, for messages ("Invalid ConditionExpression: ...").
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Condition,
    Filter,
    KeyCondition,
    Update,
    Projection,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Condition => "ConditionExpression",
            Kind::Filter => "FilterExpression",
            Kind::KeyCondition => "KeyConditionExpression",
            Kind::Update => "UpdateExpression",
            Kind::Projection => "ProjectionExpression",
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
    ph: &'a mut Placeholders,
}

const FUNCTIONS: &[&str] = &[
    "attribute_exists",
    "attribute_not_exists",
    "attribute_type",
    "begins_with",
    "contains",
    "size",
    "if_not_exists",
    "list_append",
];

impl<'a> Parser<'a> {
    fn new(src: &'a str, ph: &'a mut Placeholders) -> Result<Self, String> {
        if src.trim().is_empty() {
            return Err("The expression can not be empty;".into());
        }
        if src.len() > MAX_EXPRESSION_LEN {
            return Err("Expression size has exceeded the maximum allowed size".into());
        }
        Ok(Parser {
            src,
            toks: tokenize(src)?,
            pos: 0,
            depth: 0,
            ph,
        })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn peek_at(&self, n: usize) -> Option<&Tok> {
        self.toks.get(self.pos + n).map(|(t, _)| t)
    }

    fn err_here(&self) -> String {
        match self.toks.get(self.pos) {
            Some((t, p)) => syntax(self.src, &t.text(), *p),
            None => syntax(self.src, "<EOF>", self.src.len()),
        }
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(t, _)| t.clone());
        self.pos += 1;
        t
    }

    fn is_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), String> {
        if self.peek()
            == Some(&Tok::Sym(match sym {
                "(" => "(",
                ")" => ")",
                "," => ",",
                "=" => "=",
                "]" => "]",
                _ => "",
            }))
        {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err_here())
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("The expression has too many nested levels".into());
        }
        Ok(())
    }

    fn done(&self) -> Result<(), String> {
        if self.pos < self.toks.len() {
            Err(self.err_here())
        } else {
            Ok(())
        }
    }

    fn name_part(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(w)) => {
                if is_reserved(&w) {
                    return Err(format!(
                        "Attribute name is a reserved keyword; reserved keyword: {w}"
                    ));
                }
                Ok(w)
            }
            Some(Tok::Name(n)) => {
                let Some(real) = self.ph.names.get(&n).cloned() else {
                    return Err(format!(
                        "An expression attribute name used in the document path is not defined; attribute name: {n}"
                    ));
                };
                self.ph.used_names.insert(n);
                Ok(real)
            }
            _ => {
                self.pos = self.pos.saturating_sub(1);
                Err(self.err_here())
            }
        }
    }

    fn path(&mut self) -> Result<Path, String> {
        let mut steps = vec![Step::Name(self.name_part()?)];
        loop {
            match self.peek() {
                Some(Tok::Sym(".")) => {
                    self.pos += 1;
                    steps.push(Step::Name(self.name_part()?));
                }
                Some(Tok::Sym("[")) => {
                    self.pos += 1;
                    match self.next() {
                        Some(Tok::Int(i)) => steps.push(Step::Index(i)),
                        _ => {
                            self.pos -= 1;
                            return Err(self.err_here());
                        }
                    }
                    self.expect_sym("]")?;
                }
                _ => break,
            }
            if steps.len() > 32 {
                return Err("The document path has too many nesting levels".into());
            }
        }
        Ok(Path(steps))
    }

    fn value(&mut self, v: &str) -> Result<Attr, String> {
        let Some(a) = self.ph.values.get(v).cloned() else {
            return Err(format!(
                "An expression attribute value used in expression is not defined; attribute value: {v}"
            ));
        };
        self.ph.used_values.insert(v.to_string());
        Ok(a)
    }

    fn function_name(&self) -> Option<String> {
        match (self.peek(), self.peek_at(1)) {
            (Some(Tok::Ident(w)), Some(Tok::Sym("("))) => Some(w.clone()),
            _ => None,
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        if let Some(f) = self.function_name() {
            if f == "size" {
                self.pos += 2;
                let p = self.path()?;
                self.expect_sym(")")?;
                return Ok(Operand::Size(p));
            }
            return Err(format!("Invalid function name; function: {f}"));
        }
        match self.peek() {
            Some(Tok::Value(v)) => {
                let v = v.clone();
                self.pos += 1;
                Ok(Operand::Value(self.value(&v)?))
            }
            Some(Tok::Ident(_) | Tok::Name(_)) => Ok(Operand::Path(self.path()?)),
            _ => Err(self.err_here()),
        }
    }

    fn condition(&mut self) -> Result<Cond, String> {
        self.enter()?;
        let mut left = self.and_cond()?;
        while self.is_keyword("OR") {
            self.pos += 1;
            let right = self.and_cond()?;
            left = Cond::Or(Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and_cond(&mut self) -> Result<Cond, String> {
        let mut left = self.not_cond()?;
        while self.is_keyword("AND") {
            self.pos += 1;
            let right = self.not_cond()?;
            left = Cond::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not_cond(&mut self) -> Result<Cond, String> {
        if self.is_keyword("NOT") {
            self.pos += 1;
            self.enter()?;
            let c = self.not_cond()?;
            self.depth -= 1;
            return Ok(Cond::Not(Box::new(c)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Cond, String> {
        if self.peek() == Some(&Tok::Sym("(")) {
            self.pos += 1;
            let c = self.condition()?;
            self.expect_sym(")")?;
            return Ok(c);
        }
        if let Some(f) = self.function_name()
            && f != "size"
        {
            self.pos += 2;
            let c = match f.as_str() {
                "attribute_exists" => Cond::Exists(self.path()?),
                "attribute_not_exists" => Cond::NotExists(self.path()?),
                "attribute_type" => {
                    let p = self.path()?;
                    self.expect_sym(",")?;
                    Cond::Type(p, self.operand()?)
                }
                "begins_with" => {
                    let a = self.operand()?;
                    self.expect_sym(",")?;
                    Cond::BeginsWith(a, self.operand()?)
                }
                "contains" => {
                    let a = self.operand()?;
                    self.expect_sym(",")?;
                    Cond::Contains(a, self.operand()?)
                }
                other if FUNCTIONS.contains(&other) => {
                    return Err(format!(
                        "The function is not allowed to be used this way in an expression; function: {other}"
                    ));
                }
                other => return Err(format!("Invalid function name; function: {other}")),
            };
            self.expect_sym(")")?;
            return Ok(c);
        }
        let left = self.operand()?;
        if self.is_keyword("BETWEEN") {
            self.pos += 1;
            let lo = self.operand()?;
            if !self.is_keyword("AND") {
                return Err(self.err_here());
            }
            self.pos += 1;
            let hi = self.operand()?;
            return Ok(Cond::Between(left, lo, hi));
        }
        if self.is_keyword("IN") {
            self.pos += 1;
            self.expect_sym("(")?;
            let mut list = vec![self.operand()?];
            while self.peek() == Some(&Tok::Sym(",")) {
                self.pos += 1;
                list.push(self.operand()?);
                if list.len() > 100 {
                    return Err("Too many operands for IN: the most is 100".into());
                }
            }
            self.expect_sym(")")?;
            return Ok(Cond::In(left, list));
        }
        let op = match self.peek() {
            Some(Tok::Sym("=")) => CmpOp::Eq,
            Some(Tok::Sym("<>")) => CmpOp::Ne,
            Some(Tok::Sym("<")) => CmpOp::Lt,
            Some(Tok::Sym("<=")) => CmpOp::Le,
            Some(Tok::Sym(">")) => CmpOp::Gt,
            Some(Tok::Sym(">=")) => CmpOp::Ge,
            _ => return Err(self.err_here()),
        };
        self.pos += 1;
        let right = self.operand()?;
        Ok(Cond::Cmp(left, op, right))
    }

    fn set_value(&mut self) -> Result<SetValue, String> {
        let left = self.set_operand()?;
        match self.peek() {
            Some(Tok::Sym("+")) => {
                self.pos += 1;
                Ok(SetValue::Plus(
                    Box::new(left),
                    Box::new(self.set_operand()?),
                ))
            }
            Some(Tok::Sym("-")) => {
                self.pos += 1;
                Ok(SetValue::Minus(
                    Box::new(left),
                    Box::new(self.set_operand()?),
                ))
            }
            _ => Ok(left),
        }
    }

    fn set_operand(&mut self) -> Result<SetValue, String> {
        self.enter()?;
        let out = if let Some(f) = self.function_name() {
            self.pos += 2;
            let v = match f.as_str() {
                "if_not_exists" => {
                    let p = self.path()?;
                    self.expect_sym(",")?;
                    SetValue::IfNotExists(p, Box::new(self.set_operand()?))
                }
                "list_append" => {
                    let a = self.set_operand()?;
                    self.expect_sym(",")?;
                    SetValue::ListAppend(Box::new(a), Box::new(self.set_operand()?))
                }
                other if FUNCTIONS.contains(&other) => {
                    return Err(format!(
                        "The function is not allowed in an update expression; function: {other}"
                    ));
                }
                other => return Err(format!("Invalid function name; function: {other}")),
            };
            self.expect_sym(")")?;
            v
        } else {
            match self.peek() {
                Some(Tok::Value(v)) => {
                    let v = v.clone();
                    self.pos += 1;
                    SetValue::Value(self.value(&v)?)
                }
                _ => SetValue::Path(self.path()?),
            }
        };
        self.depth -= 1;
        Ok(out)
    }

    fn update(&mut self) -> Result<Update, String> {
        let mut u = Update::default();
        let mut seen = BTreeSet::new();
        while self.peek().is_some() {
            let clause = match self.next() {
                Some(Tok::Ident(w)) => w.to_ascii_uppercase(),
                _ => {
                    self.pos -= 1;
                    return Err(self.err_here());
                }
            };
            if !seen.insert(clause.clone()) {
                return Err(format!(
                    "The \"{clause}\" section can only be used once in an update expression;"
                ));
            }
            loop {
                match clause.as_str() {
                    "SET" => {
                        let p = self.path()?;
                        self.expect_sym("=")?;
                        u.set.push((p, self.set_value()?));
                    }
                    "REMOVE" => u.remove.push(self.path()?),
                    "ADD" | "DELETE" => {
                        let p = self.path()?;
                        let v = match self.next() {
                            Some(Tok::Value(v)) => self.value(&v)?,
                            _ => {
                                self.pos -= 1;
                                return Err(self.err_here());
                            }
                        };
                        if clause == "ADD" {
                            u.add.push((p, v));
                        } else {
                            u.delete.push((p, v));
                        }
                    }
                    _ => {
                        self.pos -= 1;
                        return Err(self.err_here());
                    }
                }
                if self.peek() == Some(&Tok::Sym(",")) {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        // Two actions on overlapping paths are refused, as DynamoDB does.
        let paths: Vec<&Path> = u
            .set
            .iter()
            .map(|(p, _)| p)
            .chain(u.remove.iter())
            .chain(u.add.iter().map(|(p, _)| p))
            .chain(u.delete.iter().map(|(p, _)| p))
            .collect();
        for (i, a) in paths.iter().enumerate() {
            for b in &paths[i + 1..] {
                let n = a.0.len().min(b.0.len());
                if a.0[..n] == b.0[..n] {
                    return Err(format!(
                        "Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [{}], path two: [{}]",
                        path_text(a),
                        path_text(b)
                    ));
                }
            }
        }
        Ok(u)
    }
}

fn path_text(p: &Path) -> String {
    p.0.iter()
        .map(|s| match s {
            Step::Name(n) => n.clone(),
            Step::Index(i) => format!("[{i}]"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A few of DynamoDB's reserved words that are likely as attribute names; the rest of
/// its list is not enforced.
fn is_reserved(word: &str) -> bool {
    const RESERVED: &[&str] = &[
        "AND",
        "OR",
        "NOT",
        "BETWEEN",
        "IN",
        "SET",
        "REMOVE",
        "ADD",
        "DELETE",
        "SIZE",
        "STATUS",
        "NAME",
        "TIMESTAMP",
        "DATA",
        "KEY",
        "VALUE",
        "COUNT",
        "TABLE",
        "USER",
        "OWNER",
        "DATE",
        "TIME",
        "TYPE",
        "YEAR",
    ];
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

fn wrap(kind: Kind, e: String) -> String {
    if e.starts_with("Value provided") {
        return e;
    }
    format!("Invalid {}: {e}", kind.name())
}

/// Parses a condition, filter or key-condition expression.
pub fn parse_condition(src: &str, kind: Kind, ph: &mut Placeholders) -> Result<Cond, String> {
    let run = |ph: &mut Placeholders| -> Result<Cond, String> {
        let mut p = Parser::new(src, ph)?;
        let c = p.condition()?;
        p.done()?;
        Ok(c)
    };
    run(ph).map_err(|e| wrap(kind, e))
}

/// Parses an update expression.
pub fn parse_update(src: &str, ph: &mut Placeholders) -> Result<Update, String> {
    let run = |ph: &mut Placeholders| -> Result<Update, String> {
        let mut p = Parser::new(src, ph)?;
        p.update()
    };
    run(ph).map_err(|e| wrap(Kind::Update, e))
}

/// Parses a projection expression: paths separated by commas.
pub fn parse_projection(src: &str, ph: &mut Placeholders) -> Result<Vec<Path>, String> {
    let run = |ph: &mut Placeholders| -> Result<Vec<Path>, String> {
        let mut p = Parser::new(src, ph)?;
        let mut out = vec![p.path()?];
        while p.peek() == Some(&Tok::Sym(",")) {
            p.pos += 1;
            out.push(p.path()?);
        }
        p.done()?;
        Ok(out)
    };
    run(ph).map_err(|e| wrap(Kind::Projection, e))
}

/// The attributes of `item` named by `paths` (top-level and nested map paths).
pub fn project(item: &Item, paths: &[Path]) -> Item {
    let mut out = Item::new();
    for p in paths {
        if let Some(v) = p.get(item) {
            let mut steps = p.0.clone();
            // Nested list positions are projected as their whole top-level list.
            if steps.iter().any(|s| matches!(s, Step::Index(_))) {
                steps.truncate(1);
                if let Some(v) = Path(steps.clone()).get(item) {
                    out.insert(p.root().to_string(), v.clone());
                }
                continue;
            }
            let mut cur = &mut out;
            for (i, step) in steps.iter().enumerate() {
                let Step::Name(n) = step else { break };
                if i + 1 == steps.len() {
                    cur.insert(n.clone(), v.clone());
                } else {
                    let entry = cur.entry(n.clone()).or_insert_with(|| Attr::M(Item::new()));
                    let Attr::M(m) = entry else { break };
                    cur = m;
                }
            }
        }
    }
    out
}

fn operand_value(op: &Operand, item: &Item) -> Option<Attr> {
    match op {
        Operand::Path(p) => p.get(item).cloned(),
        Operand::Value(v) => Some(v.clone()),
        Operand::Size(p) => {
            let n = match p.get(item)? {
                Attr::S(s) => s.len(),
                Attr::B(b) => b.len() * 3 / 4,
                Attr::Ss(v) | Attr::Bs(v) => v.len(),
                Attr::Ns(v) => v.len(),
                Attr::L(v) => v.len(),
                Attr::M(m) => m.len(),
                _ => return None,
            };
            Some(Attr::N(Num::from_i128(n as i128)))
        }
    }
}

fn cmp(a: &Attr, op: CmpOp, b: &Attr) -> bool {
    match op {
        CmpOp::Eq => equal(a, b),
        CmpOp::Ne => !equal(a, b),
        _ => match a.compare(b) {
            Some(o) => match op {
                CmpOp::Lt => o == Ordering::Less,
                CmpOp::Le => o != Ordering::Greater,
                CmpOp::Gt => o == Ordering::Greater,
                CmpOp::Ge => o != Ordering::Less,
                _ => false,
            },
            None => false,
        },
    }
}

/// Equality as DynamoDB defines it: sets compare as sets.
fn equal(a: &Attr, b: &Attr) -> bool {
    match (a, b) {
        (Attr::Ss(x), Attr::Ss(y)) | (Attr::Bs(x), Attr::Bs(y)) => {
            x.len() == y.len() && x.iter().all(|e| y.contains(e))
        }
        (Attr::Ns(x), Attr::Ns(y)) => x.len() == y.len() && x.iter().all(|e| y.contains(e)),
        _ => a == b,
    }
}

/// Whether `item` (absent: an empty item) satisfies `cond`.
pub fn eval(cond: &Cond, item: &Item) -> bool {
    match cond {
        Cond::Cmp(a, op, b) => match (operand_value(a, item), operand_value(b, item)) {
            (Some(a), Some(b)) => cmp(&a, *op, &b),
            _ => false,
        },
        Cond::Between(a, lo, hi) => {
            match (
                operand_value(a, item),
                operand_value(lo, item),
                operand_value(hi, item),
            ) {
                (Some(a), Some(lo), Some(hi)) => cmp(&a, CmpOp::Ge, &lo) && cmp(&a, CmpOp::Le, &hi),
                _ => false,
            }
        }
        Cond::In(a, list) => match operand_value(a, item) {
            Some(a) => list
                .iter()
                .any(|o| operand_value(o, item).is_some_and(|v| equal(&a, &v))),
            None => false,
        },
        Cond::And(a, b) => eval(a, item) && eval(b, item),
        Cond::Or(a, b) => eval(a, item) || eval(b, item),
        Cond::Not(c) => !eval(c, item),
        Cond::Exists(p) => p.get(item).is_some(),
        Cond::NotExists(p) => p.get(item).is_none(),
        Cond::Type(p, t) => match (p.get(item), operand_value(t, item)) {
            (Some(v), Some(Attr::S(t))) => v.type_name() == t,
            _ => false,
        },
        Cond::BeginsWith(a, b) => match (operand_value(a, item), operand_value(b, item)) {
            (Some(Attr::S(a)), Some(Attr::S(b))) => a.starts_with(&b),
            (Some(Attr::B(a)), Some(Attr::B(b))) => a.starts_with(&b),
            _ => false,
        },
        Cond::Contains(a, b) => match (operand_value(a, item), operand_value(b, item)) {
            (Some(Attr::S(a)), Some(Attr::S(b))) => a.contains(&b),
            (Some(Attr::Ss(a)), Some(Attr::S(b))) => a.contains(&b),
            (Some(Attr::Bs(a)), Some(Attr::B(b))) => a.contains(&b),
            (Some(Attr::Ns(a)), Some(Attr::N(b))) => a.contains(&b),
            (Some(Attr::L(a)), Some(b)) => a.iter().any(|e| equal(e, &b)),
            _ => false,
        },
    }
}

const WRONG_TYPE: &str = "An operand in the update expression has an incorrect data type";

fn set_value(v: &SetValue, old: &Item) -> Result<Attr, String> {
    Ok(match v {
        SetValue::Path(p) => p.get(old).cloned().ok_or_else(|| {
            "The provided expression refers to an attribute that does not exist in the item"
                .to_string()
        })?,
        SetValue::Value(a) => a.clone(),
        SetValue::IfNotExists(p, d) => match p.get(old) {
            Some(a) => a.clone(),
            None => set_value(d, old)?,
        },
        SetValue::ListAppend(a, b) => match (set_value(a, old)?, set_value(b, old)?) {
            (Attr::L(mut a), Attr::L(b)) => {
                a.extend(b);
                Attr::L(a)
            }
            _ => return Err(WRONG_TYPE.into()),
        },
        SetValue::Plus(a, b) | SetValue::Minus(a, b) => {
            match (set_value(a, old)?, set_value(b, old)?) {
                (Attr::N(a), Attr::N(b)) => {
                    let b = if matches!(v, SetValue::Minus(..)) {
                        b.negated()?
                    } else {
                        b
                    };
                    Attr::N(a.checked_add(b)?)
                }
                _ => return Err(WRONG_TYPE.into()),
            }
        }
    })
}

/// Applies `update` to a copy of `old` (every operand reads the old item).
pub fn apply(update: &Update, old: &Item) -> Result<Item, String> {
    let mut new = old.clone();
    for (p, v) in &update.set {
        let v = set_value(v, old)?;
        p.set(&mut new, v)?;
    }
    for p in &update.remove {
        p.remove(&mut new);
    }
    for (p, v) in &update.add {
        let merged = match (p.get(&new), v) {
            (None, Attr::N(_) | Attr::Ss(_) | Attr::Ns(_) | Attr::Bs(_)) => v.clone(),
            (Some(Attr::N(a)), Attr::N(b)) => Attr::N(a.checked_add(*b)?),
            (Some(Attr::Ss(a)), Attr::Ss(b)) => Attr::Ss(union(a, b)),
            (Some(Attr::Bs(a)), Attr::Bs(b)) => Attr::Bs(union(a, b)),
            (Some(Attr::Ns(a)), Attr::Ns(b)) => Attr::Ns(union(a, b)),
            _ => return Err(WRONG_TYPE.into()),
        };
        p.set(&mut new, merged)?;
    }
    for (p, v) in &update.delete {
        let left = match (p.get(&new), v) {
            (None, Attr::Ss(_) | Attr::Ns(_) | Attr::Bs(_)) => continue,
            (Some(Attr::Ss(a)), Attr::Ss(b)) => {
                let r: Vec<String> = a.iter().filter(|e| !b.contains(e)).cloned().collect();
                (!r.is_empty()).then_some(Attr::Ss(r))
            }
            (Some(Attr::Bs(a)), Attr::Bs(b)) => {
                let r: Vec<String> = a.iter().filter(|e| !b.contains(e)).cloned().collect();
                (!r.is_empty()).then_some(Attr::Bs(r))
            }
            (Some(Attr::Ns(a)), Attr::Ns(b)) => {
                let r: Vec<Num> = a.iter().filter(|e| !b.contains(e)).cloned().collect();
                (!r.is_empty()).then_some(Attr::Ns(r))
            }
            _ => return Err(WRONG_TYPE.into()),
        };
        match left {
            Some(v) => p.set(&mut new, v)?,
            None => p.remove(&mut new),
        }
    }
    Ok(new)
}

fn union<T: Clone + PartialEq>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = a.to_vec();
    for e in b {
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    out
}

/// The legacy `Expected` parameter (with `ConditionalOperator`) as a condition.
pub fn legacy_expected(doc: &Value) -> Result<Option<Cond>, String> {
    legacy_conditions(&doc["Expected"], doc["ConditionalOperator"].as_str(), true)
}

/// The legacy `QueryFilter` / `ScanFilter` / `KeyConditions` maps as a condition.
pub fn legacy_filter(map: &Value, operator: Option<&str>) -> Result<Option<Cond>, String> {
    legacy_conditions(map, operator, false)
}

fn legacy_conditions(
    map: &Value,
    operator: Option<&str>,
    expected: bool,
) -> Result<Option<Cond>, String> {
    let Some(map) = map.as_object() else {
        return Ok(None);
    };
    let or = match operator {
        None | Some("AND") => false,
        Some("OR") => true,
        Some(other) => {
            return Err(format!(
                "1 validation error detected: Value '{other}' at 'conditionalOperator' failed to satisfy constraint: Member must satisfy enum value set: [AND, OR]"
            ));
        }
    };
    let mut out: Option<Cond> = None;
    for (name, spec) in map {
        let path = Path::top(name);
        let values: Vec<Attr> = spec["AttributeValueList"]
            .as_array()
            .map(|l| l.iter().map(Attr::from_json).collect::<Result<_, _>>())
            .transpose()?
            .unwrap_or_default();
        let c = match spec["ComparisonOperator"].as_str() {
            Some(op) => legacy_operator(name, path, op, values)?,
            None if expected => {
                let exists = spec["Exists"].as_bool();
                match (exists, spec.get("Value").filter(|v| !v.is_null())) {
                    (Some(false), Some(_)) => {
                        return Err("One or more parameter values were invalid: Value cannot be used when Exists is false for Attribute: ".to_string() + name);
                    }
                    (Some(false), None) => Cond::NotExists(path),
                    (_, Some(v)) => Cond::Cmp(
                        Operand::Path(path),
                        CmpOp::Eq,
                        Operand::Value(Attr::from_json(v)?),
                    ),
                    (_, None) => {
                        return Err("One or more parameter values were invalid: Value must be provided when Exists is true for Attribute: ".to_string() + name);
                    }
                }
            }
            None => {
                return Err(format!(
                    "One or more parameter values were invalid: ComparisonOperator is required for Attribute: {name}"
                ));
            }
        };
        out = Some(match out {
            None => c,
            Some(prev) if or => Cond::Or(Box::new(prev), Box::new(c)),
            Some(prev) => Cond::And(Box::new(prev), Box::new(c)),
        });
    }
    Ok(out)
}

fn legacy_operator(name: &str, path: Path, op: &str, values: Vec<Attr>) -> Result<Cond, String> {
    let arity = |n: usize| -> Result<(), String> {
        if values.len() == n {
            Ok(())
        } else {
            Err(format!(
                "One or more parameter values were invalid: Invalid number of argument(s) for the {op} ComparisonOperator"
            ))
        }
    };
    let p = || Operand::Path(path.clone());
    let v = |i: usize| Operand::Value(values[i].clone());
    let cmp = |c: CmpOp| Cond::Cmp(p(), c, v(0));
    Ok(match op {
        "EQ" | "NE" | "LT" | "LE" | "GT" | "GE" | "CONTAINS" | "NOT_CONTAINS" | "BEGINS_WITH" => {
            arity(1)?;
            match op {
                "EQ" => cmp(CmpOp::Eq),
                // Legacy NE also matches items without the attribute.
                "NE" => Cond::Not(Box::new(cmp(CmpOp::Eq))),
                "LT" => cmp(CmpOp::Lt),
                "LE" => cmp(CmpOp::Le),
                "GT" => cmp(CmpOp::Gt),
                "GE" => cmp(CmpOp::Ge),
                "CONTAINS" => Cond::Contains(p(), v(0)),
                "NOT_CONTAINS" => Cond::And(
                    Box::new(Cond::Exists(path.clone())),
                    Box::new(Cond::Not(Box::new(Cond::Contains(p(), v(0))))),
                ),
                _ => Cond::BeginsWith(p(), v(0)),
            }
        }
        "NOT_NULL" => {
            arity(0)?;
            Cond::Exists(path)
        }
        "NULL" => {
            arity(0)?;
            Cond::NotExists(path)
        }
        "BETWEEN" => {
            arity(2)?;
            Cond::Between(p(), v(0), v(1))
        }
        "IN" => {
            if values.is_empty() {
                arity(1)?;
            }
            Cond::In(p(), (0..values.len()).map(v).collect())
        }
        other => {
            return Err(format!(
                "1 validation error detected: Value '{other}' at 'expected.{name}.member.comparisonOperator' failed to satisfy constraint: Member must satisfy enum value set: [IN, NULL, BETWEEN, LT, NOT_CONTAINS, EQ, GT, NOT_NULL, NE, LE, BEGINS_WITH, GE, CONTAINS]"
            ));
        }
    })
}

/// The legacy `AttributeUpdates` parameter as an update.
pub fn legacy_updates(map: &Value) -> Result<Update, String> {
    let mut u = Update::default();
    let Some(map) = map.as_object() else {
        return Ok(u);
    };
    for (name, spec) in map {
        let path = Path::top(name);
        let value = spec
            .get("Value")
            .filter(|v| !v.is_null())
            .map(Attr::from_json)
            .transpose()?;
        match (spec["Action"].as_str().unwrap_or("PUT"), value) {
            ("PUT", Some(v)) => u.set.push((path, SetValue::Value(v))),
            ("PUT", None) => {
                return Err(format!(
                    "One or more parameter values were invalid: Only DELETE action is allowed when no attribute value is specified: {name}"
                ));
            }
            ("DELETE", None) => u.remove.push(path),
            ("DELETE", Some(v)) => u.delete.push((path, v)),
            ("ADD", Some(v)) => u.add.push((path, v)),
            ("ADD", None) => {
                return Err(format!(
                    "One or more parameter values were invalid: Only DELETE action is allowed when no attribute value is specified: {name}"
                ));
            }
            (other, _) => {
                return Err(format!(
                    "1 validation error detected: Value '{other}' at 'attributeUpdates.{name}.member.action' failed to satisfy constraint: Member must satisfy enum value set: [ADD, PUT, DELETE]"
                ));
            }
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ph(values: Value) -> Placeholders {
        Placeholders::from_request(&json!({
            "ExpressionAttributeNames": {"#o": "leaseOwner", "#s": "status"},
            "ExpressionAttributeValues": values,
        }))
        .unwrap()
    }

    fn item(v: Value) -> Item {
        super::super::attr::item_from_json(&v).unwrap()
    }

    #[test]
    fn conditions_evaluate_as_dynamodb_does() {
        let it = item(json!({
            "leaseKey": {"S": "shard-1"}, "leaseOwner": {"S": "w1"},
            "leaseCounter": {"N": "7"}, "tags": {"SS": ["a", "b"]},
            "m": {"M": {"x": {"L": [{"N": "1"}, {"N": "2"}]}}}
        }));
        let mut p = ph(
            json!({":w": {"S": "w1"}, ":c": {"N": "7"}, ":lo": {"N": "1"},
            ":hi": {"N": "10"}, ":pre": {"S": "shard"}, ":t": {"S": "SS"}, ":b": {"S": "b"},
            ":two": {"N": "2"}}),
        );
        let cases = [
            ("#o = :w AND leaseCounter = :c", true),
            ("#o <> :w", false),
            ("leaseCounter BETWEEN :lo AND :hi", true),
            ("leaseCounter IN (:lo, :c)", true),
            ("NOT (leaseCounter < :c) AND leaseCounter >= :c", true),
            (
                "attribute_exists(leaseKey) AND attribute_not_exists(nope)",
                true,
            ),
            ("attribute_type(tags, :t)", true),
            ("begins_with(leaseKey, :pre)", true),
            ("contains(tags, :b)", true),
            ("size(tags) = :two AND m.x[1] = :two", true),
            ("nope = :w OR leaseCounter > :hi", false),
            ("nope <> :w", false),
        ];
        for (src, want) in cases {
            let c = parse_condition(src, Kind::Condition, &mut p).unwrap();
            assert_eq!(eval(&c, &it), want, "{src}");
        }
        assert!(p.check_all_used().is_err(), "#s was never used");
    }

    #[test]
    fn bad_expressions_get_dynamodb_messages() {
        let mut p = ph(json!({":v": {"S": "x"}}));
        let e = parse_condition("a = ", Kind::Condition, &mut p).unwrap_err();
        assert!(
            e.starts_with("Invalid ConditionExpression: Syntax error; token: \"<EOF>\""),
            "{e}"
        );
        let e = parse_condition("a = :nope", Kind::Condition, &mut p).unwrap_err();
        assert!(e.contains("attribute value: :nope"), "{e}");
        let e = parse_condition("#nope = :v", Kind::Condition, &mut p).unwrap_err();
        assert!(e.contains("attribute name: #nope"), "{e}");
        let e = parse_update("SET a = :v REMOVE a", &mut p).unwrap_err();
        assert!(e.contains("Two document paths overlap"), "{e}");
        let e = parse_condition("status = :v", Kind::Condition, &mut p).unwrap_err();
        assert!(e.contains("reserved keyword: status"), "{e}");
        assert!(parse_condition("((((a = :v", Kind::Condition, &mut p).is_err());
        assert!(parse_condition("a $ :v", Kind::Condition, &mut p).is_err());
    }

    #[test]
    fn updates_apply_set_arithmetic_remove_add_delete() {
        let old = item(
            json!({"k": {"S": "1"}, "n": {"N": "5"}, "s": {"SS": ["a", "b"]},
            "l": {"L": [{"S": "x"}]}, "gone": {"S": "y"}}),
        );
        let mut p = ph(json!({":one": {"N": "1"}, ":l": {"L": [{"S": "z"}]},
            ":sa": {"SS": ["c"]}, ":sd": {"SS": ["a"]}, ":d": {"N": "9"}}));
        let u = parse_update(
            "SET n = n + :one, l = list_append(l, :l), fresh = if_not_exists(fresh, :d), \
             n2 = if_not_exists(n, :d) REMOVE gone ADD s :sa, counter :one DELETE s2 :sd",
            &mut p,
        );
        // `s` in ADD and `s2` in DELETE do not overlap.
        let u = u.unwrap();
        let new = apply(&u, &old).unwrap();
        assert_eq!(new["n"], Attr::N(Num::parse("6").unwrap()));
        assert_eq!(new["n2"], Attr::N(Num::parse("5").unwrap()));
        assert_eq!(new["fresh"], Attr::N(Num::parse("9").unwrap()));
        assert_eq!(new["counter"], Attr::N(Num::parse("1").unwrap()));
        assert_eq!(new["s"], Attr::Ss(vec!["a".into(), "b".into(), "c".into()]));
        assert!(!new.contains_key("gone"));
        assert_eq!(
            new["l"],
            Attr::L(vec![Attr::S("x".into()), Attr::S("z".into())])
        );
        let bad = parse_update("SET k = k + :one", &mut p).unwrap();
        assert!(apply(&bad, &old).is_err(), "S + N is a type error");
    }

    #[test]
    fn legacy_parameters_become_the_same_trees() {
        let it = item(json!({"leaseOwner": {"S": "w1"}, "leaseCounter": {"N": "3"}}));
        let c = legacy_expected(&json!({"Expected": {
            "leaseOwner": {"Value": {"S": "w1"}},
            "leaseCounter": {"ComparisonOperator": "EQ", "AttributeValueList": [{"N": "3"}]},
            "other": {"Exists": false}
        }}))
        .unwrap()
        .unwrap();
        assert!(eval(&c, &it));
        let c = legacy_expected(&json!({"Expected": {"leaseCounter": {"Value": {"N": "4"}}}}))
            .unwrap()
            .unwrap();
        assert!(!eval(&c, &it));
        let u = legacy_updates(&json!({
            "leaseCounter": {"Action": "ADD", "Value": {"N": "1"}},
            "leaseOwner": {"Action": "DELETE"},
            "checkpoint": {"Value": {"S": "TRIM_HORIZON"}}
        }))
        .unwrap();
        let new = apply(&u, &it).unwrap();
        assert_eq!(new["leaseCounter"], Attr::N(Num::parse("4").unwrap()));
        assert!(!new.contains_key("leaseOwner"));
        assert_eq!(new["checkpoint"], Attr::S("TRIM_HORIZON".into()));
    }

    proptest::proptest! {
        #[test]
        fn parsing_and_evaluating_never_panic(src in ".{0,80}") {
            let mut p = ph(json!({":v": {"N": "1"}, ":s": {"S": "x"}}));
            let it = item(json!({"a": {"N": "1"}, "b": {"L": [{"S": "x"}]}}));
            if let Ok(c) = parse_condition(&src, Kind::Filter, &mut p) {
                let _ = eval(&c, &it);
            }
            if let Ok(u) = parse_update(&src, &mut p) {
                let _ = apply(&u, &it);
            }
            let _ = parse_projection(&src, &mut p);
        }

        #[test]
        fn expression_shaped_input_never_panics(
            parts in proptest::collection::vec(proptest::sample::select(vec![
                "a", "b[0]", "#o", ":v", ":s", "=", "<>", "<", ">=", "AND", "OR", "NOT", "(", ")",
                ",", "BETWEEN", "IN", "size(", "attribute_exists(", "contains(", "SET", "REMOVE",
                "ADD", "DELETE", "+", "-", "if_not_exists(", "list_append(", ".", "[", "]", "9",
            ]), 0..24)
        ) {
            let src = parts.join(" ");
            let mut p = ph(json!({":v": {"N": "1"}, ":s": {"S": "x"}}));
            let it = item(json!({"a": {"N": "1"}, "b": {"L": [{"S": "x"}]}}));
            if let Ok(c) = parse_condition(&src, Kind::Condition, &mut p) {
                let _ = eval(&c, &it);
            }
            if let Ok(u) = parse_update(&src, &mut p) {
                let _ = apply(&u, &it);
            }
        }
    }
}
