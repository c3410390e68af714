//! CBOR bodies (`application/x-amz-cbor-1.1`, RFC 8949) converted to and from
//! the JSON document model that the rest of the Kinesis front end uses.
//!
//! The AWS SDK for Java (v1 and v2), and so the KCL and KPL Java clients,
//! speak Kinesis in CBOR by default. Their encoding differs from the JSON 1.1
//! protocol in two ways, both handled here by walking the operation's model
//! shapes:
//!
//! * blobs are CBOR byte strings (JSON: base64 strings);
//! * timestamps are epoch **milliseconds**, written by the SDKs as tag 1
//!   followed by an integer (`SdkCborGenerator.writeValue`:
//!   `writeTag(1); writeNumber(instant.toEpochMilli())`), even though RFC 8949
//!   defines tag 1 as seconds. JSON uses (fractional) epoch seconds.
//!
//!   When reading responses, SDK v1 (`DateCborUnmarshaller`) takes
//!   `getLongValue()` as milliseconds and SDK v2 (`StringToInstant`,
//!   `UNIX_TIMESTAMP_MILLIS`) runs `Long.parseLong` on the number's text, so a
//!   float such as `1.5E12` fails; Jackson skips tags either way. Responses
//!   therefore carry a plain **untagged integer of milliseconds**: it reads
//!   the same in both SDKs as AWS's own output, and a standard CBOR decoder
//!   does not mistake it for tag-1 seconds (a year-50000 date).
//!
//! Requests: [`cbor_to_json_input`] decodes with a small bounded decoder of our
//! own: it never trusts a length prefix beyond the bytes actually present,
//! limits nesting to [`MAX_DEPTH`] and item count to [`MAX_ITEMS`], accepts
//! definite and indefinite lengths (Jackson, under the Java SDKs, writes
//! indefinite-length maps), ignores tags (timestamps are recognised by their
//! model shape, tagged or not), drops members the model does not know, and
//! reports malformed input as [`InputError::Serialization`]. It never panics.
//! The resulting document is then checked with `Operation::validate_input`
//! like a JSON body.
//!
//! Responses: [`json_to_cbor_output`] walks the operation's output shape;
//! [`error_to_cbor`] encodes an error body.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Number, Value};

use crate::api::kinesis::model::{InputError, Operation, ShapeKind, ShapeRef};

/// Deepest nesting of arrays, maps and tags accepted in a request
/// (the Kinesis model nests at most 9 levels).
pub const MAX_DEPTH: usize = 64;

/// Most data items accepted in one request. Each decoded item costs a JSON
/// value (tens of bytes) but may take a single byte of input; this caps that
/// amplification. A full 500-record PutRecords needs a few thousand.
pub const MAX_ITEMS: usize = 200_000;

/// CBOR tag for an epoch-based date/time (carrying milliseconds in AWS's dialect).
const TAG_EPOCH: u64 = 1;

/// Decodes a CBOR request body into the JSON document model for `op`'s input:
/// blob members become base64 strings, timestamp members (epoch milliseconds,
/// tagged or not) become JSON numbers of epoch seconds, unknown members are
/// dropped. Run `Operation::validate_input` on the result.
///
/// A body that is empty or whose top-level item is not a map gives an empty
/// `Serialization` message, as AWS answers a non-object JSON body.
pub fn cbor_to_json_input(body: &[u8], op: &Operation<'_>) -> Result<Value, InputError> {
    let shape = op.input_shape();
    decode_document(
        body,
        Some(shape.map(Hint::Shape).unwrap_or(Hint::EmptyStructure)),
    )
}

/// A CBOR body decoded without a model, for a service Freshet carries no model of
/// (CloudWatch's `PutMetricData`): every member kept, byte strings as base64 strings,
/// tagged items as the item they wrap. The same errors as [`cbor_to_json_input`].
pub fn cbor_to_json_document(body: &[u8]) -> Result<Value, InputError> {
    decode_document(body, None)
}

fn decode_document(body: &[u8], hint: Option<Hint<'_>>) -> Result<Value, InputError> {
    if body.is_empty() {
        return Err(InputError::Serialization(String::new()));
    }
    let to_input_error = |e| match e {
        DecodeError::Malformed(m) => InputError::Serialization(format!("Malformed CBOR: {m}")),
        DecodeError::Unexpected(m) => InputError::Serialization(m),
    };
    let mut d = Decoder::new(body);
    // Like a JSON body that is not an object, a top-level item that is not a
    // map is a bare SerializationException.
    let mut probe = Decoder::new(body);
    loop {
        match probe.head().map_err(|e| to_input_error(e.into()))? {
            Head::Tag => probe.enter().map_err(|e| to_input_error(e.into()))?,
            Head::Map(_) => break,
            Head::Break => return Err(to_input_error(malformed("unexpected break".into()))),
            _ => return Err(InputError::Serialization(String::new())),
        }
    }
    let value = d.value(hint).map_err(to_input_error)?;
    if d.pos != body.len() {
        return Err(InputError::Serialization(format!(
            "Malformed CBOR: {} unexpected bytes after the document",
            body.len() - d.pos
        )));
    }
    if !value.is_object() {
        return Err(InputError::Serialization(String::new()));
    }
    Ok(value)
}

/// Encodes a response document for `op` as CBOR: base64 strings in blob
/// members become byte strings, timestamps (JSON numbers of epoch seconds)
/// become untagged integers of epoch milliseconds, integer members are CBOR
/// integers, `null` structure members are omitted, everything else maps
/// naturally.
pub fn json_to_cbor_output(doc: &Value, op: &Operation<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let enc = Encoder {
        tag_timestamps: false,
    };
    enc.encode(&mut out, doc, op.output_shape().map(Hint::Shape), 0);
    out
}

/// Encodes an error body: `{"__type": error_type, "message": message}`.
///
/// As in AWS's JSON bodies, `SerializationException` carries its text under
/// `Message`; an empty message is left out (AWS sends none for unparseable
/// bodies).
pub fn error_to_cbor(error_type: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let key = if error_type == "SerializationException" {
        "Message"
    } else {
        "message"
    };
    write_head(&mut out, 5, if message.is_empty() { 1 } else { 2 });
    write_text(&mut out, "__type");
    write_text(&mut out, error_type);
    if !message.is_empty() {
        write_text(&mut out, key);
        write_text(&mut out, message);
    }
    out
}

/// What the model expects at a position of the document.
#[derive(Clone, Copy)]
enum Hint<'a> {
    Shape(ShapeRef<'a>),
    /// An operation without an input/output shape: a structure with no members.
    EmptyStructure,
}

#[derive(Clone, Copy, PartialEq)]
enum Expect {
    Structure,
    List,
    Map,
    Blob,
    Timestamp,
    Integer,
    Other,
}

fn expect(hint: Option<Hint<'_>>) -> Expect {
    match hint {
        None => Expect::Other,
        Some(Hint::EmptyStructure) => Expect::Structure,
        Some(Hint::Shape(s)) => match s.kind() {
            ShapeKind::Structure => Expect::Structure,
            ShapeKind::List(_) => Expect::List,
            ShapeKind::Map { .. } => Expect::Map,
            ShapeKind::Blob => Expect::Blob,
            ShapeKind::Timestamp => Expect::Timestamp,
            ShapeKind::Integer | ShapeKind::Long => Expect::Integer,
            _ => Expect::Other,
        },
    }
}

fn list_member<'a>(hint: Option<Hint<'a>>) -> Option<Hint<'a>> {
    match hint {
        Some(Hint::Shape(s)) => match s.kind() {
            ShapeKind::List(m) => Some(Hint::Shape(m)),
            _ => None,
        },
        _ => None,
    }
}

fn map_value<'a>(hint: Option<Hint<'a>>) -> Option<Hint<'a>> {
    match hint {
        Some(Hint::Shape(s)) => match s.kind() {
            ShapeKind::Map { value, .. } => Some(Hint::Shape(value)),
            _ => None,
        },
        _ => None,
    }
}

/// The hint for a structure member, or `Err(())` for a member the model does not know.
fn struct_member<'a>(hint: Option<Hint<'a>>, name: &str) -> Result<Option<Hint<'a>>, ()> {
    match hint {
        Some(Hint::Shape(s)) => s.member(name).map(|m| Some(Hint::Shape(m))).ok_or(()),
        _ => Err(()),
    }
}

// ---- decoding ---------------------------------------------------------------

enum DecodeError {
    /// Not well-formed CBOR (or over our limits).
    Malformed(String),
    /// Well-formed, but a CBOR type the model cannot take at that position.
    Unexpected(String),
}

fn malformed(msg: String) -> DecodeError {
    DecodeError::Malformed(msg)
}

impl From<String> for DecodeError {
    fn from(msg: String) -> Self {
        DecodeError::Malformed(msg)
    }
}

/// The first byte of a data item, decoded.
enum Head {
    Uint(u64),
    NegInt(u64),
    /// Byte string; `None` is indefinite length.
    Bytes(Option<u64>),
    Text(Option<u64>),
    Array(Option<u64>),
    Map(Option<u64>),
    /// A tag (its number is read and ignored).
    Tag,
    Simple(u8),
    Float(f64),
    Break,
}

struct Decoder<'b> {
    buf: &'b [u8],
    pos: usize,
    depth: usize,
    /// Data items decoded so far (bounded by [`MAX_ITEMS`]).
    items: usize,
}

impl<'b> Decoder<'b> {
    fn new(buf: &'b [u8]) -> Self {
        Decoder {
            buf,
            pos: 0,
            depth: 0,
            items: 0,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| format!("unexpected end of input at byte {}", self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'b [u8], String> {
        if n > self.remaining() as u64 {
            return Err(format!(
                "length {n} at byte {} runs past the end of the input",
                self.pos
            ));
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn uint(&mut self, info: u8) -> Result<u64, String> {
        Ok(match info {
            0..=23 => info as u64,
            24 => self.byte()? as u64,
            25 => u16::from_be_bytes(self.take(2)?.try_into().unwrap_or_default()) as u64,
            26 => u32::from_be_bytes(self.take(4)?.try_into().unwrap_or_default()) as u64,
            27 => u64::from_be_bytes(self.take(8)?.try_into().unwrap_or_default()),
            _ => return Err(format!("invalid additional information {info}")),
        })
    }

    fn head(&mut self) -> Result<Head, String> {
        let at = self.pos;
        let b = self.byte()?;
        let (major, info) = (b >> 5, b & 0x1f);
        let len = |d: &mut Self| -> Result<Option<u64>, String> {
            if info == 31 {
                Ok(None)
            } else {
                d.uint(info).map(Some)
            }
        };
        Ok(match major {
            0 => Head::Uint(self.uint(info)?),
            1 => Head::NegInt(self.uint(info)?),
            2 => Head::Bytes(len(self)?),
            3 => Head::Text(len(self)?),
            4 => Head::Array(len(self)?),
            5 => Head::Map(len(self)?),
            6 => {
                self.uint(info)?;
                Head::Tag
            }
            _ => match info {
                0..=23 => Head::Simple(info),
                24 => {
                    let v = self.byte()?;
                    if v < 32 {
                        return Err(format!("invalid simple value encoding at byte {at}"));
                    }
                    Head::Simple(v)
                }
                25 => {
                    let bits = self.uint(25)? as u16;
                    Head::Float(half_to_f64(bits))
                }
                26 => Head::Float(f32::from_bits(self.uint(26)? as u32) as f64),
                27 => Head::Float(f64::from_bits(self.uint(27)?)),
                31 => Head::Break,
                _ => {
                    return Err(format!(
                        "invalid additional information {info} at byte {at}"
                    ));
                }
            },
        })
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.items += 1;
        if self.items > MAX_ITEMS {
            return Err(format!("more than {MAX_ITEMS} data items"));
        }
        Ok(())
    }

    /// A byte or text string body, definite or indefinite (chunks of the same type).
    fn string_bytes(&mut self, len: Option<u64>, major: u8) -> Result<Vec<u8>, String> {
        match len {
            Some(n) => Ok(self.take(n)?.to_vec()),
            None => {
                let mut out = Vec::new();
                loop {
                    let at = self.pos;
                    let chunk = match (self.head()?, major) {
                        (Head::Break, _) => return Ok(out),
                        (Head::Bytes(Some(n)), 2) | (Head::Text(Some(n)), 3) => self.take(n)?,
                        _ => {
                            return Err(format!(
                                "invalid chunk in indefinite-length string at byte {at}"
                            ));
                        }
                    };
                    if major == 3 && std::str::from_utf8(chunk).is_err() {
                        return Err(format!("invalid UTF-8 in text string at byte {at}"));
                    }
                    out.extend_from_slice(chunk);
                }
            }
        }
    }

    fn text(&mut self, len: Option<u64>) -> Result<String, String> {
        let at = self.pos;
        String::from_utf8(self.string_bytes(len, 3)?)
            .map_err(|_| format!("invalid UTF-8 in text string at byte {at}"))
    }

    /// Decodes one data item into a JSON value, guided by the model.
    fn value(&mut self, hint: Option<Hint<'_>>) -> Result<Value, DecodeError> {
        self.enter()?;
        let at = self.pos;
        let v = match self.head()? {
            Head::Uint(n) => Value::from(n),
            Head::NegInt(n) => match i64::try_from(n) {
                Ok(i) => Value::from(-1 - i),
                Err(_) => float(-1.0 - n as f64)?,
            },
            Head::Float(f) => float(f)?,
            Head::Bytes(len) => {
                let bytes = self.string_bytes(len, 2)?;
                if hint.is_some() && expect(hint) != Expect::Blob {
                    return Err(DecodeError::Unexpected(
                        "Byte string found where not expected".to_string(),
                    ));
                }
                Value::String(BASE64.encode(bytes))
            }
            Head::Text(len) => Value::String(self.text(len)?),
            Head::Array(len) => {
                let member = list_member(hint);
                let mut items = Vec::new();
                match len {
                    Some(n) => {
                        if n > self.remaining() as u64 {
                            return Err(malformed(format!(
                                "array length {n} at byte {at} exceeds the input"
                            )));
                        }
                        items.reserve(n.min(1024) as usize);
                        for _ in 0..n {
                            items.push(self.value(member)?);
                        }
                    }
                    None => loop {
                        if self.peek_break()? {
                            break;
                        }
                        items.push(self.value(member)?);
                    },
                }
                Value::Array(items)
            }
            Head::Map(len) => {
                if let Some(n) = len
                    && n > (self.remaining() / 2) as u64
                {
                    return Err(malformed(format!(
                        "map length {n} at byte {at} exceeds the input"
                    )));
                }
                let is_struct = expect(hint) == Expect::Structure;
                let values = map_value(hint);
                let mut obj = Map::new();
                let mut left = len;
                loop {
                    match &mut left {
                        Some(0) => break,
                        Some(n) => *n -= 1,
                        None => {
                            if self.peek_break()? {
                                break;
                            }
                        }
                    }
                    let key = self.key()?;
                    if is_struct {
                        match struct_member(hint, &key) {
                            Ok(h) => {
                                let v = self.value(h)?;
                                obj.insert(key, v);
                            }
                            Err(()) => self.skip()?,
                        }
                    } else {
                        let v = self.value(values)?;
                        obj.insert(key, v);
                    }
                }
                Value::Object(obj)
            }
            Head::Tag => {
                // Tags carry no meaning for us beyond the value they wrap
                // (tag 1 marks AWS's millisecond timestamps, handled below).
                let inner = self.value(hint)?;
                self.depth -= 1;
                return Ok(inner);
            }
            Head::Simple(20) => Value::Bool(false),
            Head::Simple(21) => Value::Bool(true),
            Head::Simple(22) | Head::Simple(23) => Value::Null,
            Head::Simple(s) => {
                return Err(malformed(format!(
                    "unsupported simple value {s} at byte {at}"
                )));
            }
            Head::Break => return Err(malformed(format!("unexpected break at byte {at}"))),
        };
        self.depth -= 1;
        if expect(hint) == Expect::Timestamp
            && let Value::Number(n) = &v
        {
            return Ok(millis_to_seconds(n)?);
        }
        Ok(v)
    }

    /// A map key: a text string (tags around it are ignored).
    fn key(&mut self) -> Result<String, String> {
        let at = self.pos;
        let mut tags = 0;
        loop {
            match self.head()? {
                Head::Text(len) => return self.text(len),
                Head::Tag if tags < MAX_DEPTH => tags += 1,
                _ => return Err(format!("map key at byte {at} is not a text string")),
            }
        }
    }

    /// Consumes a break byte if one is next.
    fn peek_break(&mut self) -> Result<bool, String> {
        match self.buf.get(self.pos) {
            Some(0xff) => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(format!(
                "unexpected end of input in indefinite-length item at byte {}",
                self.pos
            )),
        }
    }

    /// Skips the items of an array (`per` = 1) or map (`per` = 2).
    fn skip_items(&mut self, len: Option<u64>, per: usize, at: usize) -> Result<(), DecodeError> {
        match len {
            Some(n) => {
                if n > (self.remaining() / per) as u64 {
                    return Err(malformed(format!(
                        "length {n} at byte {at} exceeds the input"
                    )));
                }
                for _ in 0..n * per as u64 {
                    self.skip()?;
                }
            }
            None => {
                while !self.peek_break()? {
                    for _ in 0..per {
                        self.skip()?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Skips one well-formed data item without building it.
    fn skip(&mut self) -> Result<(), DecodeError> {
        self.enter()?;
        let at = self.pos;
        match self.head()? {
            Head::Uint(_) | Head::NegInt(_) | Head::Float(_) => {}
            Head::Simple(_) => {}
            Head::Bytes(len) => {
                self.string_bytes(len, 2)?;
            }
            Head::Text(len) => {
                self.text(len)?;
            }
            Head::Array(len) => self.skip_items(len, 1, at)?,
            Head::Map(len) => self.skip_items(len, 2, at)?,
            Head::Tag => self.skip()?,
            Head::Break => return Err(malformed(format!("unexpected break at byte {at}"))),
        }
        self.depth -= 1;
        Ok(())
    }
}

fn float(f: f64) -> Result<Value, String> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| "non-finite number".to_string())
}

/// AWS CBOR timestamps are epoch milliseconds; the JSON model uses seconds.
fn millis_to_seconds(n: &Number) -> Result<Value, String> {
    if let Some(ms) = n.as_i64() {
        if ms % 1000 == 0 {
            return Ok(Value::from(ms / 1000));
        }
        return float(ms as f64 / 1000.0);
    }
    float(n.as_f64().unwrap_or(0.0) / 1000.0)
}

/// IEEE 754 half precision to f64.
fn half_to_f64(bits: u16) -> f64 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((bits >> 10) & 0x1f) as i32;
    let mant = (bits & 0x3ff) as f64;
    let magnitude = match exp {
        0 => mant * 2f64.powi(-24),
        31 => {
            if mant == 0.0 {
                f64::INFINITY
            } else {
                f64::NAN
            }
        }
        _ => (1.0 + mant / 1024.0) * 2f64.powi(exp - 15),
    };
    sign * magnitude
}

// ---- encoding ---------------------------------------------------------------

/// Deepest response document written; deeper values are written as null.
const MAX_ENCODE_DEPTH: usize = 128;

fn write_head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u8::MAX as u64 {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u16::MAX as u64 {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as u64 {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn write_text(out: &mut Vec<u8>, s: &str) {
    write_head(out, 3, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn write_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        write_head(out, 0, i as u64);
    } else {
        write_head(out, 1, (-1 - i) as u64);
    }
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    out.push(0xfb);
    out.extend_from_slice(&f.to_bits().to_be_bytes());
}

/// The integer an f64 stands for, if it is one that fits an i64.
fn integral(f: f64) -> Option<i64> {
    (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
}

fn write_number(out: &mut Vec<u8>, n: &Number, want_integer: bool) {
    if let Some(u) = n.as_u64() {
        write_head(out, 0, u);
    } else if let Some(i) = n.as_i64() {
        write_int(out, i);
    } else {
        let f = n.as_f64().unwrap_or(0.0);
        match integral(f) {
            Some(i) if want_integer => write_int(out, i),
            _ => write_f64(out, f),
        }
    }
}

/// Epoch seconds (JSON) to AWS's CBOR timestamp: integer milliseconds,
/// optionally behind tag 1 (as the SDKs write requests).
fn write_timestamp(out: &mut Vec<u8>, n: &Number, tag: bool) {
    let ms = if let Some(i) = n.as_i64() {
        i.saturating_mul(1000)
    } else if n.as_u64().is_some() {
        i64::MAX
    } else {
        let f = (n.as_f64().unwrap_or(0.0) * 1000.0).round();
        // `as` saturates at the i64 bounds
        f as i64
    };
    if tag {
        write_head(out, 6, TAG_EPOCH);
    }
    write_int(out, ms);
}

struct Encoder {
    /// Write timestamps behind tag 1 (requests, as the SDKs do) or bare (responses).
    tag_timestamps: bool,
}

impl Encoder {
    fn encode(&self, out: &mut Vec<u8>, v: &Value, hint: Option<Hint<'_>>, depth: usize) {
        if depth > MAX_ENCODE_DEPTH {
            out.push(0xf6);
            return;
        }
        match v {
            Value::Null => out.push(0xf6),
            Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
            Value::Number(n) => match expect(hint) {
                Expect::Timestamp => write_timestamp(out, n, self.tag_timestamps),
                Expect::Integer => write_number(out, n, true),
                _ => write_number(out, n, false),
            },
            Value::String(s) => {
                if expect(hint) == Expect::Blob
                    && let Ok(bytes) = BASE64.decode(s)
                {
                    write_head(out, 2, bytes.len() as u64);
                    out.extend_from_slice(&bytes);
                    return;
                }
                write_text(out, s);
            }
            Value::Array(items) => {
                let member = list_member(hint);
                write_head(out, 4, items.len() as u64);
                for item in items {
                    self.encode(out, item, member, depth + 1);
                }
            }
            Value::Object(obj) => {
                if expect(hint) == Expect::Structure {
                    let present = obj.values().filter(|x| !x.is_null()).count();
                    write_head(out, 5, present as u64);
                    for (k, x) in obj.iter().filter(|(_, x)| !x.is_null()) {
                        write_text(out, k);
                        self.encode(out, x, struct_member(hint, k).ok().flatten(), depth + 1);
                    }
                } else {
                    let values = map_value(hint);
                    write_head(out, 5, obj.len() as u64);
                    for (k, x) in obj {
                        write_text(out, k);
                        self.encode(out, x, values, depth + 1);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::kinesis::model::kinesis;
    use ciborium::value::Value as CValue;
    use proptest::prelude::*;
    use serde_json::json;

    fn op(name: &str) -> Operation<'static> {
        kinesis().operation(name).expect(name)
    }

    /// Encodes a request the way the Java SDK would (blobs as bytes, timestamps as tag 1 + ms).
    fn encode_input(doc: &Value, name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let enc = Encoder {
            tag_timestamps: true,
        };
        enc.encode(&mut out, doc, op(name).input_shape().map(Hint::Shape), 0);
        out
    }

    fn cvalue(bytes: &[u8]) -> CValue {
        ciborium::de::from_reader(bytes).expect("well-formed CBOR")
    }

    fn cget<'v>(map: &'v CValue, key: &str) -> &'v CValue {
        match map {
            CValue::Map(entries) => {
                &entries
                    .iter()
                    .find(|(k, _)| k.as_text() == Some(key))
                    .unwrap_or_else(|| panic!("no {key} in {map:?}"))
                    .1
            }
            other => panic!("not a map: {other:?}"),
        }
    }

    fn text(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        write_text(&mut v, s);
        v
    }

    fn ser(msg: &str) -> Result<Value, InputError> {
        Err(InputError::Serialization(msg.to_string()))
    }

    #[test]
    fn jackson_style_put_record() {
        // {_ "StreamName": "s", "Data": h'616263', "PartitionKey": "pk", "Unknown": [_ 1]}
        let mut body = vec![0xbf];
        body.extend(text("StreamName"));
        body.extend(text("s"));
        body.extend(text("Data"));
        body.extend([0x43, b'a', b'b', b'c']);
        body.extend(text("PartitionKey"));
        body.extend(text("pk"));
        body.extend(text("Unknown"));
        body.extend([0x9f, 0x01, 0xff]);
        body.push(0xff);
        let doc = cbor_to_json_input(&body, &op("PutRecord")).unwrap();
        assert_eq!(
            doc,
            json!({"StreamName": "s", "Data": "YWJj", "PartitionKey": "pk"})
        );
        assert_eq!(op("PutRecord").validate_input(&doc), Ok(()));
    }

    #[test]
    fn sdk_timestamp_is_tag1_epoch_millis() {
        // Captured from an unmodified KinesisClient (SDK v2) GetShardIterator AT_TIMESTAMP:
        // "Timestamp": c1 1b 000001a013accc38 = tag 1, 1787036486712 ms
        let mut body = vec![0xa1];
        body.extend(text("Timestamp"));
        body.extend([0xc1, 0x1b, 0x00, 0x00, 0x01, 0xa0, 0x13, 0xac, 0xcc, 0x38]);
        let doc = cbor_to_json_input(&body, &op("GetShardIterator")).unwrap();
        assert_eq!(doc, json!({"Timestamp": 1787036486.712}));

        // untagged integers and floats are milliseconds too; whole seconds stay integers
        let mut body = vec![0xa1];
        body.extend(text("StreamCreationTimestamp"));
        body.extend([0x1a, 0x00, 0x0f, 0x42, 0x40]); // 1000000 ms
        assert_eq!(
            cbor_to_json_input(&body, &op("ListShards")).unwrap(),
            json!({"StreamCreationTimestamp": 1000})
        );
        let mut body = vec![0xa1];
        body.extend(text("StreamCreationTimestamp"));
        body.push(0xfb);
        body.extend(1500.0f64.to_bits().to_be_bytes());
        assert_eq!(
            cbor_to_json_input(&body, &op("ListShards")).unwrap(),
            json!({"StreamCreationTimestamp": 1.5})
        );
        // a timestamp given as a string is left for validation to reject
        let mut body = vec![0xa1];
        body.extend(text("Timestamp"));
        body.extend(text("2020"));
        let doc = cbor_to_json_input(&body, &op("GetShardIterator")).unwrap();
        assert_eq!(
            op("GetShardIterator").validate_input(&doc),
            Err(InputError::Serialization(
                "class java.lang.String can not be converted to milliseconds since epoch".into()
            ))
        );
    }

    #[test]
    fn nested_timestamps_and_maps() {
        let doc = json!({
            "ConsumerARN": "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1",
            "ShardId": "shardId-000000000000",
            "StartingPosition": {"Type": "AT_TIMESTAMP", "Timestamp": 1700000000.25}
        });
        let body = encode_input(&doc, "SubscribeToShard");
        let c = cvalue(&body);
        let ts = cget(cget(&c, "StartingPosition"), "Timestamp");
        assert_eq!(
            ts,
            &CValue::Tag(1, Box::new(CValue::Integer(1700000000250i64.into())))
        );
        assert_eq!(
            cbor_to_json_input(&body, &op("SubscribeToShard")).unwrap(),
            doc
        );

        let doc = json!({"StreamName": "s", "Tags": {"a": "1", "b": ""}});
        let body = encode_input(&doc, "AddTagsToStream");
        assert_eq!(
            cbor_to_json_input(&body, &op("AddTagsToStream")).unwrap(),
            doc
        );
    }

    #[test]
    fn put_records_round_trip() {
        let doc = json!({
            "StreamName": "stream",
            "Records": [
                {"Data": "", "PartitionKey": "a"},
                {"Data": "AAECAwQ=", "PartitionKey": "b", "ExplicitHashKey": "12345"},
                {"Data": BASE64.encode(vec![0xffu8; 70000]), "PartitionKey": "c"}
            ]
        });
        let body = encode_input(&doc, "PutRecords");
        let c = cvalue(&body);
        let CValue::Array(records) = cget(&c, "Records") else {
            panic!()
        };
        assert_eq!(
            cget(&records[1], "Data"),
            &CValue::Bytes(vec![0, 1, 2, 3, 4])
        );
        assert_eq!(cbor_to_json_input(&body, &op("PutRecords")).unwrap(), doc);
        assert_eq!(op("PutRecords").validate_input(&doc), Ok(()));
    }

    #[test]
    fn get_records_output_for_the_java_sdk() {
        let doc = json!({
            "Records": [{
                "SequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                "ApproximateArrivalTimestamp": 1548118964.772,
                "Data": "U2VlIE5vIEV2aWw=",
                "PartitionKey": "foobar",
                "EncryptionType": null
            }],
            "NextShardIterator": "AAAAAAAAAAE=",
            "MillisBehindLatest": 0,
            "ChildShards": [{"ShardId": "shardId-000000000001", "ParentShards": ["shardId-000000000000"],
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "340282366920938463463374607431768211455"}}]
        });
        let body = json_to_cbor_output(&doc, &op("GetRecords"));
        let c = cvalue(&body);
        let CValue::Array(records) = cget(&c, "Records") else {
            panic!()
        };
        let rec = &records[0];
        assert_eq!(
            cget(rec, "ApproximateArrivalTimestamp"),
            &CValue::Integer(1548118964772i64.into())
        );
        assert_eq!(cget(rec, "Data"), &CValue::Bytes(b"See No Evil".to_vec()));
        assert_eq!(cget(rec, "PartitionKey"), &CValue::Text("foobar".into()));
        let CValue::Map(entries) = rec else { panic!() };
        assert_eq!(entries.len(), 4, "null members are omitted");
        assert_eq!(cget(&c, "MillisBehindLatest"), &CValue::Integer(0.into()));
        assert_eq!(
            cget(&c, "NextShardIterator"),
            &CValue::Text("AAAAAAAAAAE=".into())
        );

        // and back through the same shapes
        let back =
            decode_document(&body, op("GetRecords").output_shape().map(Hint::Shape)).unwrap();
        let mut expected = doc.clone();
        expected["Records"][0]
            .as_object_mut()
            .unwrap()
            .remove("EncryptionType");
        assert_eq!(back, expected);
    }

    #[test]
    fn output_numbers() {
        // integer members stay integers even if the server computed a float
        let body = json_to_cbor_output(
            &json!({"FailedRecordCount": 2.0, "Records": [], "EncryptionType": "NONE"}),
            &op("PutRecords"),
        );
        assert_eq!(
            cget(&cvalue(&body), "FailedRecordCount"),
            &CValue::Integer(2.into())
        );
        let body = json_to_cbor_output(
            &json!({"StreamDescriptionSummary": {"StreamCreationTimestamp": 1700000000, "RetentionPeriodHours": 24, "Extra": -1.5}}),
            &op("DescribeStreamSummary"),
        );
        let c = cvalue(&body);
        let s = cget(&c, "StreamDescriptionSummary");
        assert_eq!(
            cget(s, "StreamCreationTimestamp"),
            &CValue::Integer(1700000000000i64.into())
        );
        assert_eq!(cget(s, "RetentionPeriodHours"), &CValue::Integer(24.into()));
        assert_eq!(cget(s, "Extra"), &CValue::Float(-1.5));
        // no output shape: plain conversion
        assert_eq!(
            json_to_cbor_output(&json!({}), &op("CreateStream")),
            vec![0xa0]
        );
        // a blob member that is not base64 is sent as text rather than lost
        let body = json_to_cbor_output(&json!({"Records": [{"Data": "%%%"}]}), &op("GetRecords"));
        let CValue::Array(r) = cget(&cvalue(&body), "Records").clone() else {
            panic!()
        };
        assert_eq!(cget(&r[0], "Data"), &CValue::Text("%%%".into()));
    }

    #[test]
    fn error_bodies() {
        let c = cvalue(&error_to_cbor(
            "ResourceNotFoundException",
            "Stream x not found.",
        ));
        assert_eq!(
            cget(&c, "__type"),
            &CValue::Text("ResourceNotFoundException".into())
        );
        assert_eq!(
            cget(&c, "message"),
            &CValue::Text("Stream x not found.".into())
        );
        let c = cvalue(&error_to_cbor("SerializationException", "Expected null"));
        assert_eq!(cget(&c, "Message"), &CValue::Text("Expected null".into()));
        let c = cvalue(&error_to_cbor("SerializationException", ""));
        let CValue::Map(entries) = c else { panic!() };
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn not_a_map_is_a_bare_serialization_error() {
        let p = op("PutRecord");
        assert_eq!(cbor_to_json_input(b"", &p), ser(""));
        assert_eq!(cbor_to_json_input(&[0xf6], &p), ser(""));
        assert_eq!(cbor_to_json_input(&[0x80], &p), ser(""));
        assert_eq!(cbor_to_json_input(&[0x61, b'x'], &p), ser(""));
        assert_eq!(cbor_to_json_input(&[0x41, 0x00], &p), ser(""));
        assert_eq!(cbor_to_json_input(&[0xc1, 0xc1, 0x01], &p), ser(""));
        assert_eq!(cbor_to_json_input(&[0xc1, 0xa0], &p).unwrap(), json!({}));
        assert_eq!(cbor_to_json_input(&[0xa0], &p).unwrap(), json!({}));
        // operations without an input shape take an empty structure
        assert_eq!(
            cbor_to_json_input(&[0xa0], &op("DescribeLimits")).unwrap(),
            json!({})
        );
    }

    #[test]
    fn type_mismatches() {
        // byte string for a string member
        let mut body = vec![0xa1];
        body.extend(text("StreamName"));
        body.extend([0x41, b'x']);
        assert_eq!(
            cbor_to_json_input(&body, &op("PutRecord")),
            ser("Byte string found where not expected")
        );
        // integer for a string member: left to validation with AWS's message
        let mut body = vec![0xa1];
        body.extend(text("StreamName"));
        body.push(0x05);
        let doc = cbor_to_json_input(&body, &op("PutRecord")).unwrap();
        assert_eq!(
            op("PutRecord").validate_input(&doc),
            Err(InputError::Serialization(
                "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String".into()
            ))
        );
        // a map where a list is expected
        let mut body = vec![0xa1];
        body.extend(text("Records"));
        body.push(0xa0);
        let doc = cbor_to_json_input(&body, &op("PutRecords")).unwrap();
        assert_eq!(
            op("PutRecords").validate_input(&doc),
            Err(InputError::Serialization(
                "Start of structure or map found where not expected.".into()
            ))
        );
    }

    #[test]
    fn malformed_inputs() {
        let p = op("PutRecords");
        let cases: Vec<Vec<u8>> = vec![
            vec![0xa1],                         // truncated map
            vec![0xa1, 0x61],                   // truncated key
            vec![0xbf, 0x61, b'a'],             // indefinite map without break
            vec![0xa0, 0x00],                   // trailing data
            vec![0xff],                         // break outside
            vec![0x1c],                         // reserved additional information
            vec![0xa1, 0x01, 0x02],             // integer key
            vec![0xa1, 0x62, 0xc3, 0x28, 0x01], // invalid UTF-8 key
            [
                &[0xa1][..],
                &text("StreamName"),
                &[0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0],
            ]
            .concat(), // NaN
            vec![0xf8, 0x10],                   // bad simple value encoding
            vec![
                0xa1, 0x61, b'x', 0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ], // huge byte string
            vec![0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // huge map
            vec![
                0xa1, 0x67, b'R', b'e', b'c', b'o', b'r', b'd', b's', 0x9b, 0xff, 0xff, 0xff, 0xff,
                0xff, 0xff, 0xff, 0xff,
            ], // huge array
            [&[0xa1][..], &text("StreamName"), &[0x7f, 0x41, b'a', 0xff]].concat(), // byte chunk in a text string
            [&[0xa1][..], &text("StreamName"), &[0xf0]].concat(), // unassigned simple value
        ];
        for body in cases {
            match cbor_to_json_input(&body, &p) {
                Err(InputError::Serialization(m)) => assert!(!m.is_empty(), "{body:x?}"),
                other => panic!("{body:x?}: {other:?}"),
            }
        }
    }

    #[test]
    fn deep_nesting_is_refused_without_overflow() {
        for prefix in [0x81u8, 0xc1, 0x9f] {
            let mut body = vec![0xa1];
            body.extend(text("Records"));
            body.extend(std::iter::repeat_n(prefix, 100_000));
            body.push(0x00);
            let err = cbor_to_json_input(&body, &op("PutRecords")).unwrap_err();
            assert!(err.message().contains("nesting"), "{err}");
            // unknown members are skipped with the same bound
            let mut body = vec![0xa1];
            body.extend(text("Zzz"));
            body.extend(std::iter::repeat_n(prefix, 100_000));
            body.push(0x00);
            let err = cbor_to_json_input(&body, &op("PutRecords")).unwrap_err();
            assert!(err.message().contains("nesting"), "{err}");
        }
    }

    #[test]
    fn item_count_is_bounded() {
        let mut body = vec![0xa1];
        body.extend(text("Records"));
        body.push(0x9f);
        body.extend(std::iter::repeat_n(0xa0, MAX_ITEMS + 10));
        body.push(0xff);
        let err = cbor_to_json_input(&body, &op("PutRecords")).unwrap_err();
        assert!(err.message().contains("data items"), "{err}");
        // the same number of items in an unknown member
        body[1..9].copy_from_slice(&text("Zzzzzzz"));
        let err = cbor_to_json_input(&body, &op("PutRecords")).unwrap_err();
        assert!(err.message().contains("data items"), "{err}");
    }

    #[test]
    fn indefinite_strings_and_tags() {
        // "Data": (_ h'01', h'0203'), "PartitionKey": (_ "p", "k"), tag 55799 around the document
        let mut body = vec![0xd9, 0xd9, 0xf7, 0xa3];
        body.extend(text("Data"));
        body.extend([0x5f, 0x41, 0x01, 0x42, 0x02, 0x03, 0xff]);
        body.extend(text("PartitionKey"));
        body.extend([0x7f, 0x61, b'p', 0x61, b'k', 0xff]);
        body.extend(text("StreamName"));
        body.extend([0x7f, 0xff]);
        let doc = cbor_to_json_input(&body, &op("PutRecord")).unwrap();
        assert_eq!(
            doc,
            json!({"Data": "AQID", "PartitionKey": "pk", "StreamName": ""})
        );
    }

    #[test]
    fn numbers_decode() {
        let mut body = vec![0xa3];
        body.extend(text("Limit"));
        body.extend([0x39, 0x01, 0x00]); // -257
        body.extend(text("ShardIterator"));
        body.extend(text("it"));
        body.extend(text("StreamARN"));
        body.extend([0xf9, 0x3c, 0x00]); // half 1.0
        let doc = cbor_to_json_input(&body, &op("GetRecords")).unwrap();
        assert_eq!(
            doc,
            json!({"Limit": -257, "ShardIterator": "it", "StreamARN": 1.0})
        );
        assert_eq!(half_to_f64(0x7bff), 65504.0);
        assert_eq!(half_to_f64(0x0001), 2f64.powi(-24));
        assert_eq!(half_to_f64(0xc000), -2.0);
        assert!(half_to_f64(0x7e00).is_nan());
        // the most negative CBOR integer becomes a float
        let mut body = vec![0xa1];
        body.extend(text("Limit"));
        body.extend([0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        let doc = cbor_to_json_input(&body, &op("GetRecords")).unwrap();
        assert_eq!(doc["Limit"].as_f64(), Some(-18446744073709551616.0));
    }

    fn arb_cbor() -> impl Strategy<Value = CValue> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(|i| CValue::Integer(i.into())),
            any::<f64>().prop_map(CValue::Float),
            any::<bool>().prop_map(CValue::Bool),
            Just(CValue::Null),
            "[A-Za-z]{0,12}".prop_map(CValue::Text),
            prop::collection::vec(any::<u8>(), 0..16).prop_map(CValue::Bytes),
        ];
        leaf.prop_recursive(5, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(CValue::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("Records".to_string()),
                            Just("Data".to_string()),
                            Just("PartitionKey".to_string()),
                            Just("StreamName".to_string()),
                            Just("Tags".to_string()),
                            Just("Timestamp".to_string()),
                            Just("StartingPosition".to_string()),
                            "[A-Za-z]{1,8}",
                        ]
                        .prop_map(CValue::Text),
                        inner.clone()
                    ),
                    0..6
                )
                .prop_map(CValue::Map),
                (0u64..3, inner).prop_map(|(t, v)| CValue::Tag(t, Box::new(v))),
            ]
        })
    }

    const FUZZ_OPS: &[&str] = &[
        "PutRecord",
        "PutRecords",
        "GetShardIterator",
        "SubscribeToShard",
        "AddTagsToStream",
        "CreateStream",
        "ListShards",
        "DescribeLimits",
    ];

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), which in 0usize..8) {
            let p = op(FUZZ_OPS[which]);
            if let Ok(doc) = cbor_to_json_input(&body, &p) {
                let _ = p.validate_input(&doc);
                let _ = json_to_cbor_output(&doc, &p);
            }
        }

        #[test]
        fn arbitrary_bytes_inside_a_map_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), which in 0usize..8) {
            let p = op(FUZZ_OPS[which]);
            let mut framed = vec![0xbf];
            framed.extend(text("Records"));
            framed.extend(body);
            let _ = cbor_to_json_input(&framed, &p).map(|doc| p.validate_input(&doc));
        }

        #[test]
        fn well_formed_documents_never_panic(v in arb_cbor(), which in 0usize..8) {
            let mut body = Vec::new();
            ciborium::ser::into_writer(&v, &mut body).unwrap();
            let p = op(FUZZ_OPS[which]);
            if let Ok(mut doc) = cbor_to_json_input(&body, &p) {
                let _ = p.validate_input(&doc);
                let _ = p.normalize_input(&mut doc);
                let out = json_to_cbor_output(&doc, &p);
                let _: CValue = ciborium::de::from_reader(&out[..]).unwrap();
            }
        }

        #[test]
        fn put_records_documents_round_trip(
            records in prop::collection::vec(
                (prop::collection::vec(any::<u8>(), 0..64), "\\PC{1,20}", prop::option::of("[1-9][0-9]{0,30}")),
                1..20),
            name in "[a-zA-Z0-9_.-]{1,40}",
        ) {
            let records: Vec<Value> = records.into_iter().map(|(data, pk, hk)| {
                let mut r = json!({"Data": BASE64.encode(data), "PartitionKey": pk});
                if let Some(hk) = hk { r["ExplicitHashKey"] = json!(hk); }
                r
            }).collect();
            let doc = json!({"StreamName": name, "Records": records});
            let body = encode_input(&doc, "PutRecords");
            let back = cbor_to_json_input(&body, &op("PutRecords")).unwrap();
            prop_assert_eq!(&back, &doc);
            prop_assert_eq!(op("PutRecords").validate_input(&back), Ok(()));
        }

        #[test]
        fn get_records_outputs_round_trip(
            records in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..64), 0u64..4_000_000_000_000), 0..10),
            behind in 0u64..1_000_000_000,
        ) {
            let records: Vec<Value> = records.into_iter().enumerate().map(|(i, (data, ms))| json!({
                "SequenceNumber": (i + 1).to_string(),
                "ApproximateArrivalTimestamp": if ms % 1000 == 0 { json!(ms / 1000) } else { json!(ms as f64 / 1000.0) },
                "Data": BASE64.encode(data),
                "PartitionKey": "k",
            })).collect();
            let doc = json!({"Records": records, "MillisBehindLatest": behind, "NextShardIterator": "it"});
            let body = json_to_cbor_output(&doc, &op("GetRecords"));
            let back = decode_document(&body, op("GetRecords").output_shape().map(Hint::Shape)).unwrap();
            prop_assert_eq!(back, doc);
        }
    }
}
