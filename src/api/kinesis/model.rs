//! The Kinesis Data Streams API model and AWS-compatible input validation.
//!
//! The model is the official botocore JSON description of the service
//! (`src/api/models/kinesis.json`: `operations`, `shapes` with `type`,
//! `members`, `required`, `min`, `max`, `pattern`, `enum`), compiled into the
//! binary and parsed once on first use.
//!
//! [`Operation::validate_input`] checks a request document the way AWS's
//! Coral front end does, as pinned by the kinesalite test suite (which was
//! written against real AWS):
//!
//! 1. a *type pass* over the members the shape knows (unknown members are
//!    ignored, JSON `null` counts as absent) that fails with
//!    [`InputError::Serialization`] and AWS's Java-flavoured messages
//!    (`class java.lang.String can not be converted to an Integer`, ...);
//! 2. a *constraint pass* that collects at most ten
//!    `Value <v> at '<path>' failed to satisfy constraint: <rule>` items into
//!    one [`InputError::Validation`] message
//!    (`N validation error(s) detected: A; B`).
//!
//! Members are visited in alphabetical order; within a member the checks run
//! in the order AWS reports them: not-null, pattern, minimum, maximum, enum,
//! then the contents of lists, maps and structures. Lists of structures are
//! validated element by element (`records.1.member.partitionKey`); lists and
//! maps of scalars get AWS's single aggregated message
//! (`Member must satisfy constraint: [...]`, `Map keys must satisfy
//! constraint: [...]`, `Map value must satisfy constraint: [...]`).
//!
//! Deliberate deviations from the bundled model live in the small
//! [`OVERRIDES`] table.
//!
//! Checks that depend on server state or on several members at once
//! (StreamName-or-StreamARN, ListShards' NextToken rules, a stream's own
//! record size limit or partition-key policy, retention bounds, ...) are the
//! caller's job: this module only knows the model.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use serde_json::{Map, Value};

static MODEL_JSON: &str = include_str!("../models/kinesis.json");

static KINESIS: LazyLock<ServiceModel> = LazyLock::new(|| {
    ServiceModel::from_botocore_json(MODEL_JSON, OVERRIDES)
        .unwrap_or_else(|e| panic!("bundled Kinesis model is invalid: {e}"))
});

/// The Kinesis Data Streams model bundled with the binary (parsed on first use).
pub fn kinesis() -> &'static ServiceModel {
    &KINESIS
}

static KINESIS_VIDEO: LazyLock<ServiceModel> = LazyLock::new(|| {
    ServiceModel::from_botocore_json(include_str!("../models/kinesisvideo.json"), OVERRIDES)
        .unwrap_or_else(|e| panic!("bundled Kinesis Video model is invalid: {e}"))
});

/// The Kinesis Video Streams control-plane model (REST-JSON), parsed on first use.
pub fn kinesis_video() -> &'static ServiceModel {
    &KINESIS_VIDEO
}

static FIREHOSE: LazyLock<ServiceModel> = LazyLock::new(|| {
    ServiceModel::from_botocore_json(include_str!("../models/firehose.json"), FIREHOSE_OVERRIDES)
        .unwrap_or_else(|e| panic!("bundled Firehose model is invalid: {e}"))
});

/// Every deviation from `firehose.json`, by shape name.
const FIREHOSE_OVERRIDES: &[(&str, Override)] = &[
    // AWS delivers to https:// endpoints only; Freshet also delivers to plain http://
    // receivers (local services, tests), so the URL pattern admits both
    // (docs/delivery.md). Other URLs get AWS's message, which names `https://.*`.
    ("HttpEndpointUrl", Override::Pattern("https?://.*")),
];

/// The Amazon Data Firehose model (AWS JSON 1.1, `Firehose_20150804`), parsed on first
/// use. Validated the same way as Kinesis requests; none of the Kinesis overrides apply,
/// only [`FIREHOSE_OVERRIDES`].
pub fn firehose() -> &'static ServiceModel {
    &FIREHOSE
}

static ANALYTICS: LazyLock<ServiceModel> = LazyLock::new(|| {
    ServiceModel::from_botocore_json(include_str!("../models/kinesisanalytics.json"), &[])
        .unwrap_or_else(|e| panic!("bundled Kinesis Analytics model is invalid: {e}"))
});

/// The Kinesis Analytics (SQL applications) model (AWS JSON 1.1,
/// `KinesisAnalytics_20150814`), parsed on first use.
pub fn analytics() -> &'static ServiceModel {
    &ANALYTICS
}

/// Most validation errors AWS reports in one message.
const MAX_VALIDATION_ERRORS: usize = 10;

/// How AWS renders an element of a list of structures in a validation message
/// (a Java `Object.toString()`: `com.amazonaws.<endpoint>.v<apiVersion>.<Shape>@hash`,
/// the package taken from the model's metadata); the hash is the one kinesalite pins.
const JAVA_HASH_SUFFIX: &str = "@c965e310";

/// A deliberate deviation from the bundled model, applied to every use of a shape.
#[derive(Debug, Clone, Copy)]
enum Override {
    /// Replace the shape's `max`.
    Max(f64),
    /// Report the `pattern` with this text (matching still uses the model's pattern).
    PatternText(&'static str),
    /// Report the `enum` values in this order.
    EnumOrder(&'static [&'static str]),
    /// Match with this pattern instead (reported still with the model's text).
    Pattern(&'static str),
}

/// Every deviation from `kinesis.json`, by shape name.
const OVERRIDES: &[(&str, Override)] = &[
    // The model allows 10 MiB records, but streams default to a 1 MiB record
    // limit, which AWS enforced as a validation error for years
    // (kinesalite pins `Member must have length less than or equal to 1048576`).
    ("Data", Override::Max(1_048_576.0)),
    // The botocore model wraps these patterns in `^(...)$`; AWS's messages
    // print the bare pattern (pinned by kinesalite's putRecord/splitShard tests).
    (
        "SequenceNumber",
        Override::PatternText("0|([1-9]\\d{0,128})"),
    ),
    ("HashKey", Override::PatternText("0|([1-9]\\d{0,38})")),
    // AWS lists this enum in its own (hash set) order, pinned by kinesalite's
    // getShardIterator tests.
    (
        "ShardIteratorType",
        Override::EnumOrder(&[
            "AFTER_SEQUENCE_NUMBER",
            "LATEST",
            "AT_TIMESTAMP",
            "AT_SEQUENCE_NUMBER",
            "TRIM_HORIZON",
        ]),
    ),
];

/// Why a request document was rejected. Only the message text: the caller
/// builds the wire error (`SerializationException` / `ValidationException`).
///
/// An empty `Serialization` message means AWS sends no message at all (as for
/// a body that is not a JSON object: `{"__type":"SerializationException"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// Wrong JSON types or a malformed body: `SerializationException`.
    Serialization(String),
    /// Constraint violations: `ValidationException`.
    Validation(String),
}

impl InputError {
    /// The AWS error type (`__type`) this error is reported as.
    pub fn error_type(&self) -> &'static str {
        match self {
            InputError::Serialization(_) => "SerializationException",
            InputError::Validation(_) => "ValidationException",
        }
    }

    /// The message text (may be empty for `Serialization`).
    pub fn message(&self) -> &str {
        match self {
            InputError::Serialization(m) | InputError::Validation(m) => m,
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type(), self.message())
    }
}

impl std::error::Error for InputError {}

type ShapeId = usize;

/// A parsed botocore service model.
#[derive(Debug)]
pub struct ServiceModel {
    target_prefix: String,
    /// `com.amazonaws.kinesis.v20131202.`: how structures are named in messages.
    java_package: String,
    shapes: Vec<Shape>,
    operations: HashMap<String, OperationDef>,
}

#[derive(Debug)]
struct OperationDef {
    name: String,
    input: Option<ShapeId>,
    output: Option<ShapeId>,
}

#[derive(Debug)]
struct Shape {
    name: String,
    kind: Kind,
    min: Option<f64>,
    max: Option<f64>,
    pattern: Option<Pattern>,
    enum_values: Vec<String>,
    /// `[A, B, C]` as AWS prints the enum.
    enum_text: String,
}

#[derive(Debug)]
struct Pattern {
    regex: regex::bytes::Regex,
    /// A leading negative lookahead (`^(?!aws:)...`, which the regex crate cannot
    /// express): the value must not start with a match of this.
    refused_start: Option<regex::bytes::Regex>,
    text: String,
}

impl Pattern {
    fn is_match(&self, s: &[u8]) -> bool {
        self.regex.is_match(s) && !self.refused_start.as_ref().is_some_and(|r| r.is_match(s))
    }
}

#[derive(Debug)]
enum Kind {
    Structure(Vec<MemberDef>),
    List(ShapeId),
    Map {
        key: ShapeId,
        value: ShapeId,
    },
    String,
    Blob,
    Boolean,
    Integer,
    Long,
    Float,
    Double,
    Timestamp,
    /// A type this module does not interpret (accepted as is).
    Other,
}

#[derive(Debug)]
struct MemberDef {
    name: String,
    /// The name as it appears in validation paths (first letter lowered).
    path_name: String,
    shape: ShapeId,
    required: bool,
}

/// What kind of value a shape describes, with its child shapes.
#[derive(Debug, Clone, Copy)]
pub enum ShapeKind<'a> {
    Structure,
    List(ShapeRef<'a>),
    Map {
        key: ShapeRef<'a>,
        value: ShapeRef<'a>,
    },
    String,
    Blob,
    Boolean,
    Integer,
    Long,
    Float,
    Double,
    Timestamp,
    Other,
}

/// A shape of the model (for walking documents, e.g. CBOR conversion).
#[derive(Clone, Copy)]
pub struct ShapeRef<'a> {
    model: &'a ServiceModel,
    id: ShapeId,
}

impl fmt::Debug for ShapeRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShapeRef({})", self.name())
    }
}

impl<'a> ShapeRef<'a> {
    fn shape(&self) -> &'a Shape {
        &self.model.shapes[self.id]
    }

    fn at(&self, id: ShapeId) -> ShapeRef<'a> {
        ShapeRef {
            model: self.model,
            id,
        }
    }

    /// The shape's name in the model (e.g. `PutRecordsInput`).
    pub fn name(&self) -> &'a str {
        &self.shape().name
    }

    /// The shape's type, with its list member / map key and value shapes.
    pub fn kind(&self) -> ShapeKind<'a> {
        match &self.shape().kind {
            Kind::Structure(_) => ShapeKind::Structure,
            Kind::List(m) => ShapeKind::List(self.at(*m)),
            Kind::Map { key, value } => ShapeKind::Map {
                key: self.at(*key),
                value: self.at(*value),
            },
            Kind::String => ShapeKind::String,
            Kind::Blob => ShapeKind::Blob,
            Kind::Boolean => ShapeKind::Boolean,
            Kind::Integer => ShapeKind::Integer,
            Kind::Long => ShapeKind::Long,
            Kind::Float => ShapeKind::Float,
            Kind::Double => ShapeKind::Double,
            Kind::Timestamp => ShapeKind::Timestamp,
            Kind::Other => ShapeKind::Other,
        }
    }

    /// The shape of a structure member (`None` for unknown members or non-structures).
    pub fn member(&self, name: &str) -> Option<ShapeRef<'a>> {
        match &self.shape().kind {
            Kind::Structure(members) => find_member(members, name).map(|m| self.at(m.shape)),
            _ => None,
        }
    }
}

fn find_member<'m>(members: &'m [MemberDef], name: &str) -> Option<&'m MemberDef> {
    members
        .binary_search_by(|m| m.name.as_str().cmp(name))
        .ok()
        .map(|i| &members[i])
}

impl ServiceModel {
    /// Parses a botocore JSON model.
    fn from_botocore_json(
        text: &str,
        overrides: &[(&str, Override)],
    ) -> Result<ServiceModel, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let meta = |key: &str| {
            doc.pointer(&format!("/metadata/{key}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
        };
        let java_package = format!(
            "com.amazonaws.{}.v{}.",
            meta("endpointPrefix"),
            meta("apiVersion").replace('-', "")
        );
        let target_prefix = doc
            .pointer("/metadata/targetPrefix")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let raw_shapes = doc
            .get("shapes")
            .and_then(Value::as_object)
            .ok_or("model has no shapes")?;
        let ids: HashMap<&str, ShapeId> = raw_shapes
            .keys()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        let lookup = |v: Option<&Value>, ctx: &str| -> Result<ShapeId, String> {
            let name = v
                .and_then(|v| v.get("shape"))
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{ctx}: missing shape reference"))?;
            ids.get(name)
                .copied()
                .ok_or_else(|| format!("{ctx}: unknown shape {name}"))
        };

        let mut shapes = Vec::with_capacity(raw_shapes.len());
        for (name, raw) in raw_shapes {
            let ty = raw.get("type").and_then(Value::as_str).unwrap_or("");
            let kind = match ty {
                "structure" => {
                    let required: Vec<&str> = raw
                        .get("required")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let mut members = Vec::new();
                    if let Some(ms) = raw.get("members").and_then(Value::as_object) {
                        for (mname, mref) in ms {
                            members.push(MemberDef {
                                name: mname.clone(),
                                path_name: lower_first(mname),
                                shape: lookup(Some(mref), &format!("{name}.{mname}"))?,
                                required: required.contains(&mname.as_str()),
                            });
                        }
                    }
                    members.sort_by(|a, b| a.name.cmp(&b.name));
                    Kind::Structure(members)
                }
                "list" => Kind::List(lookup(raw.get("member"), name)?),
                "map" => Kind::Map {
                    key: lookup(raw.get("key"), name)?,
                    value: lookup(raw.get("value"), name)?,
                },
                "string" => Kind::String,
                "blob" => Kind::Blob,
                "boolean" => Kind::Boolean,
                "integer" | "short" | "byte" => Kind::Integer,
                "long" => Kind::Long,
                "float" => Kind::Float,
                "double" => Kind::Double,
                "timestamp" => Kind::Timestamp,
                _ => Kind::Other,
            };
            let mut max = raw.get("max").and_then(Value::as_f64);
            let mut pattern_text = None;
            let mut enum_order: Option<Vec<String>> = None;
            let mut pattern_source = None;
            for (shape_name, o) in overrides {
                if shape_name == name {
                    match *o {
                        Override::Max(m) => max = Some(m),
                        Override::PatternText(t) => pattern_text = Some(t.to_string()),
                        Override::EnumOrder(values) => {
                            enum_order = Some(values.iter().map(|s| s.to_string()).collect())
                        }
                        Override::Pattern(p) => pattern_source = Some(p),
                    }
                }
            }
            let pattern = match raw.get("pattern").and_then(Value::as_str) {
                Some(p) => match compile_pattern(pattern_source.unwrap_or(p)) {
                    Ok(regex) => Some(Pattern {
                        regex,
                        refused_start: None,
                        text: pattern_text.unwrap_or_else(|| p.to_string()),
                    }),
                    Err(e) => match split_lookahead(p) {
                        Some((look, rest)) => Some(Pattern {
                            regex: compile_pattern(&rest)
                                .map_err(|e| format!("{name}: pattern {p}: {e}"))?,
                            refused_start: Some(
                                regex::bytes::Regex::new(&format!("(?-u)^(?:{look})"))
                                    .or_else(|_| regex::bytes::Regex::new(&format!("^(?:{look})")))
                                    .map_err(|e| format!("{name}: pattern {p}: {e}"))?,
                            ),
                            text: pattern_text.unwrap_or_else(|| p.to_string()),
                        }),
                        // Lookbehinds inside (Redshift JDBC URLs, an operation Freshet
                        // refuses anyway): not checked here.
                        None if p.contains("(?<") || p.contains("(?!") => None,
                        None => return Err(format!("{name}: pattern {p}: {e}")),
                    },
                },
                None => None,
            };
            let enum_values: Vec<String> = crate::api::json_strings(raw.get("enum"));
            let shown = enum_order.unwrap_or_else(|| enum_values.clone());
            shapes.push(Shape {
                name: name.clone(),
                kind,
                min: raw.get("min").and_then(Value::as_f64),
                max,
                pattern,
                enum_text: format!("[{}]", shown.join(", ")),
                enum_values,
            });
        }

        let mut operations = HashMap::new();
        if let Some(ops) = doc.get("operations").and_then(Value::as_object) {
            for (name, raw) in ops {
                let input = match raw.get("input") {
                    Some(r) => Some(lookup(Some(r), name)?),
                    None => None,
                };
                let output = match raw.get("output") {
                    Some(r) => Some(lookup(Some(r), name)?),
                    None => None,
                };
                operations.insert(
                    name.clone(),
                    OperationDef {
                        name: name.clone(),
                        input,
                        output,
                    },
                );
            }
        }
        Ok(ServiceModel {
            target_prefix,
            java_package,
            shapes,
            operations,
        })
    }

    /// The operation called `name` (as in `X-Amz-Target: Kinesis_20131202.<name>`);
    /// `None` means the caller answers `UnknownOperationException`.
    pub fn operation(&self, name: &str) -> Option<Operation<'_>> {
        self.operations
            .get(name)
            .map(|def| Operation { model: self, def })
    }

    /// The `X-Amz-Target` prefix (`Kinesis_20131202`).
    pub fn target_prefix(&self) -> &str {
        &self.target_prefix
    }

    /// The names of all operations, sorted.
    pub fn operation_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.operations.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// Compiles a model pattern for a full match with Java's ASCII semantics
/// (`\d` is `[0-9]`, `\s`/`\S` ASCII whitespace), matching on UTF-8 bytes.
/// Patterns that need Unicode classes (`\p{L}`, as in tag patterns) are compiled in
/// Unicode mode instead.
fn compile_pattern(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
    regex::bytes::Regex::new(&format!("(?-u)^(?:{pattern})$"))
        .or_else(|_| regex::bytes::Regex::new(&format!("^(?:{pattern})$")))
}

/// `^(?!LOOK)REST` as (`LOOK`, `^REST`), for patterns whose only lookaround is a
/// leading negative lookahead.
fn split_lookahead(pattern: &str) -> Option<(String, String)> {
    let inner = pattern.strip_prefix("^(?!")?;
    let mut depth = 1usize;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    let rest = &inner[i + 1..];
                    if rest.contains("(?") {
                        return None;
                    }
                    return Some((inner[..i].to_string(), format!("^{rest}")));
                }
            }
            _ => {}
        }
    }
    None
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// One operation of the model.
#[derive(Clone, Copy)]
pub struct Operation<'a> {
    model: &'a ServiceModel,
    def: &'a OperationDef,
}

impl fmt::Debug for Operation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Operation({})", self.def.name)
    }
}

impl<'a> Operation<'a> {
    /// The operation's name (e.g. `PutRecords`).
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The input structure, if the operation takes one.
    pub fn input_shape(&self) -> Option<ShapeRef<'a>> {
        self.def.input.map(|id| ShapeRef {
            model: self.model,
            id,
        })
    }

    /// The output structure, if the operation returns one.
    pub fn output_shape(&self) -> Option<ShapeRef<'a>> {
        self.def.output.map(|id| ShapeRef {
            model: self.model,
            id,
        })
    }

    /// Type-check then constraint-check a JSON input document (blobs as base64
    /// strings, timestamps as JSON numbers of epoch seconds).
    ///
    /// Integers given as floats are floored and out-of-range integers clamped
    /// to their Java type before the constraint checks (use
    /// [`Operation::normalize_input`] to have the document rewritten the same
    /// way).
    pub fn validate_input(&self, input: &Value) -> Result<(), InputError> {
        let obj = top_level_object(input)?;
        let Some(shape) = self.def.input else {
            return Ok(());
        };
        let v = Validator { model: self.model };
        v.type_check_members(obj, shape)
            .map_err(InputError::Serialization)?;
        let mut errors = Vec::new();
        v.check_members(obj, shape, "", &mut errors);
        validation_result(errors)
    }

    /// [`Operation::validate_input`], and on success rewrite the document into
    /// the form the constraint checks saw: `null` members removed, integer
    /// members floored and clamped to their Java type, boolean strings
    /// (`"true"`, `"no"`, ...) turned into booleans. Unknown members are kept.
    pub fn normalize_input(&self, input: &mut Value) -> Result<(), InputError> {
        let obj = top_level_object(input)?;
        let Some(shape) = self.def.input else {
            return Ok(());
        };
        let v = Validator { model: self.model };
        v.type_check_members(obj, shape)
            .map_err(InputError::Serialization)?;
        v.normalize(input, shape);
        let mut errors = Vec::new();
        if let Value::Object(obj) = &*input {
            v.check_members(obj, shape, "", &mut errors);
        }
        validation_result(errors)
    }
}

fn top_level_object(input: &Value) -> Result<&Map<String, Value>, InputError> {
    // AWS answers a body that is valid JSON but not an object (`true`, `null`,
    // `"x"`, `[]`) with a bare `{"__type":"SerializationException"}`.
    input
        .as_object()
        .ok_or_else(|| InputError::Serialization(String::new()))
}

fn validation_result(errors: Vec<String>) -> Result<(), InputError> {
    if errors.is_empty() {
        return Ok(());
    }
    let n = errors.len();
    Err(InputError::Validation(format!(
        "{n} validation error{} detected: {}",
        if n == 1 { "" } else { "s" },
        errors.join("; ")
    )))
}

const MSG_LIST_NOT_EXPECTED: &str = "Start of list found where not expected";
const MSG_STRUCT_NOT_EXPECTED: &str = "Start of structure or map found where not expected.";
const MSG_NUMBER: &str = "class com.amazon.coral.value.json.numbers.TruncatingBigNumber";

/// Boolean strings AWS accepts (compared case-insensitively).
const TRUE_STRINGS: &[&str] = &["true", "yes", "1"];
const FALSE_STRINGS: &[&str] = &["false", "no", "0"];

fn bool_from_str(s: &str) -> Option<bool> {
    if TRUE_STRINGS.iter().any(|t| t.eq_ignore_ascii_case(s)) {
        Some(true)
    } else if FALSE_STRINGS.iter().any(|t| t.eq_ignore_ascii_case(s)) {
        Some(false)
    } else {
        None
    }
}

/// Java-like string length (UTF-16 code units).
fn java_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Checks that `s` is canonical base64 as AWS requires; returns the AWS message otherwise.
fn check_base64(s: &str) -> Result<(), String> {
    let len = java_len(s);
    if !len.is_multiple_of(4) {
        return Err(format!(
            "'{s}' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: {len}"
        ));
    }
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        let bad = match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '+' | '/' => false,
            '=' => chars.peek().is_some_and(|&n| n != '='),
            _ => true,
        };
        if bad {
            return Err(format!(
                "'{s}' can not be converted to a Blob: Invalid Base64 character: '{c}'"
            ));
        }
    }
    // Only base64 characters followed by a run of '=' remain: it must be canonical.
    let bytes = s.as_bytes();
    let pads = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    let data = &bytes[..bytes.len() - pads];
    let canonical = match data.len() % 4 {
        0 => pads == 0,
        2 => pads == 2 && b64_value(data[data.len() - 1]) & 0x0f == 0,
        3 => pads == 1 && b64_value(data[data.len() - 1]) & 0x03 == 0,
        _ => false,
    };
    if canonical {
        Ok(())
    } else {
        Err(format!(
            "'{s}' can not be converted to a Blob: Invalid last non-pad Base64 character dectected"
        ))
    }
}

fn b64_value(c: u8) -> u8 {
    match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    }
}

/// Decoded length of a canonical base64 string.
fn base64_decoded_len(s: &str) -> usize {
    let data = s.trim_end_matches('=').len();
    data / 4 * 3 + (data % 4).saturating_sub(1)
}

/// Integer value of a JSON number as the Java type sees it: floored, clamped.
fn clamp_integer(n: &serde_json::Number, lo: i64, hi: i64) -> i64 {
    if let Some(i) = n.as_i64() {
        i.clamp(lo, hi)
    } else if n.as_u64().is_some() {
        hi
    } else {
        let f = n.as_f64().unwrap_or(0.0).floor();
        if f >= hi as f64 {
            hi
        } else if f <= lo as f64 {
            lo
        } else {
            f as i64
        }
    }
}

fn integer_range(kind: &Kind) -> Option<(i64, i64)> {
    match kind {
        Kind::Integer => Some((i32::MIN as i64, i32::MAX as i64)),
        Kind::Long => Some((i64::MIN, i64::MAX)),
        _ => None,
    }
}

/// Renders a constraint bound the way AWS prints it (`1`, `1048576`, `0.5`).
fn bound_text(b: f64) -> String {
    if b.fract() == 0.0 && b.abs() < 9.0e15 {
        format!("{}", b as i64)
    } else {
        format!("{b}")
    }
}

struct Validator<'a> {
    model: &'a ServiceModel,
}

impl Validator<'_> {
    fn shape(&self, id: ShapeId) -> &Shape {
        &self.model.shapes[id]
    }

    // ---- type pass -------------------------------------------------------

    fn type_check_members(&self, obj: &Map<String, Value>, shape: ShapeId) -> Result<(), String> {
        if let Kind::Structure(members) = &self.shape(shape).kind {
            for m in members {
                if let Some(v) = obj.get(&m.name) {
                    self.type_check(v, m.shape)?;
                }
            }
        }
        Ok(())
    }

    fn type_check(&self, v: &Value, shape: ShapeId) -> Result<(), String> {
        if v.is_null() {
            return Ok(());
        }
        let kind = &self.shape(shape).kind;
        let container_msg = |v: &Value| match v {
            Value::Array(_) => Some(MSG_LIST_NOT_EXPECTED.to_string()),
            Value::Object(_) => Some(MSG_STRUCT_NOT_EXPECTED.to_string()),
            _ => None,
        };
        match kind {
            Kind::Structure(_) => match v {
                Value::Object(o) => self.type_check_members(o, shape),
                Value::Array(_) => Err(MSG_LIST_NOT_EXPECTED.into()),
                _ => Err("Expected null".into()),
            },
            Kind::List(member) => match v {
                Value::Array(items) => items.iter().try_for_each(|i| self.type_check(i, *member)),
                Value::Object(_) => Err(MSG_STRUCT_NOT_EXPECTED.into()),
                _ => Err("Expected list or null".into()),
            },
            Kind::Map { value, .. } => match v {
                Value::Object(o) => o.values().try_for_each(|i| self.type_check(i, *value)),
                Value::Array(_) => Err(MSG_LIST_NOT_EXPECTED.into()),
                _ => Err("Expected map or null".into()),
            },
            Kind::String => match v {
                Value::String(_) => Ok(()),
                Value::Bool(_) => {
                    Err("class java.lang.Boolean can not be converted to an String".into())
                }
                Value::Number(_) => Err(format!("{MSG_NUMBER} can not be converted to an String")),
                _ => Err(container_msg(v).unwrap_or_default()),
            },
            Kind::Blob => match v {
                Value::String(s) => check_base64(s),
                Value::Bool(_) => {
                    Err("class java.lang.Boolean can not be converted to a Blob".into())
                }
                Value::Number(_) => Err(format!("{MSG_NUMBER} can not be converted to a Blob")),
                _ => Err(container_msg(v).unwrap_or_default()),
            },
            Kind::Boolean => match v {
                Value::Bool(_) => Ok(()),
                Value::String(s) => match bool_from_str(s) {
                    Some(_) => Ok(()),
                    None => Err(format!(
                        "'{}' can not be converted to an Boolean",
                        s.to_uppercase()
                    )),
                },
                Value::Number(_) => Err(format!("{MSG_NUMBER} can not be converted to an Boolean")),
                _ => Err(container_msg(v).unwrap_or_default()),
            },
            Kind::Integer | Kind::Long | Kind::Float | Kind::Double => {
                let java = match kind {
                    Kind::Integer => "Integer",
                    Kind::Long => "Long",
                    Kind::Float => "Float",
                    _ => "Double",
                };
                match v {
                    Value::Number(_) => Ok(()),
                    Value::Bool(_) => Err(format!(
                        "class java.lang.Boolean can not be converted to an {java}"
                    )),
                    Value::String(_) => Err(format!(
                        "class java.lang.String can not be converted to an {java}"
                    )),
                    _ => Err(container_msg(v).unwrap_or_default()),
                }
            }
            Kind::Timestamp => match v {
                Value::Number(_) => Ok(()),
                Value::Bool(_) => Err(
                    "class java.lang.Boolean can not be converted to milliseconds since epoch"
                        .into(),
                ),
                Value::String(_) => Err(
                    "class java.lang.String can not be converted to milliseconds since epoch"
                        .into(),
                ),
                _ => Err(container_msg(v).unwrap_or_default()),
            },
            Kind::Other => Ok(()),
        }
    }

    // ---- normalisation ---------------------------------------------------

    /// Rewrites an already type-checked value in place (see `normalize_input`).
    fn normalize(&self, v: &mut Value, shape: ShapeId) {
        let kind = &self.shape(shape).kind;
        match (kind, v) {
            (Kind::Structure(members), Value::Object(obj)) => {
                obj.retain(|_, x| !x.is_null());
                for m in members {
                    if let Some(x) = obj.get_mut(&m.name) {
                        self.normalize(x, m.shape);
                    }
                }
            }
            (Kind::List(member), Value::Array(items)) => {
                for x in items.iter_mut() {
                    self.normalize(x, *member);
                }
            }
            (Kind::Map { value, .. }, Value::Object(obj)) => {
                for x in obj.values_mut() {
                    self.normalize(x, *value);
                }
            }
            (Kind::Boolean, v @ Value::String(_)) => {
                if let Some(b) = v.as_str().and_then(bool_from_str) {
                    *v = Value::Bool(b);
                }
            }
            (k @ (Kind::Integer | Kind::Long), v @ Value::Number(_)) => {
                if let (Some((lo, hi)), Value::Number(n)) = (integer_range(k), &*v) {
                    *v = Value::from(clamp_integer(n, lo, hi));
                }
            }
            _ => {}
        }
    }

    // ---- constraint pass -------------------------------------------------

    fn check_members(
        &self,
        obj: &Map<String, Value>,
        shape: ShapeId,
        prefix: &str,
        errors: &mut Vec<String>,
    ) {
        let Kind::Structure(members) = &self.shape(shape).kind else {
            return;
        };
        for m in members {
            if errors.len() >= MAX_VALIDATION_ERRORS {
                return;
            }
            let v = obj.get(&m.name).filter(|v| !v.is_null());
            let path = if prefix.is_empty() {
                m.path_name.clone()
            } else {
                format!("{prefix}.{}", m.path_name)
            };
            self.check_value(v, m.shape, m.required, &path, errors);
        }
    }

    fn push(
        &self,
        errors: &mut Vec<String>,
        v: Option<&Value>,
        shape: ShapeId,
        path: &str,
        rule: &str,
    ) {
        if errors.len() >= MAX_VALIDATION_ERRORS {
            return;
        }
        let value = match v {
            None => "null".to_string(),
            Some(v) => format!("'{}'", self.render(v, shape)),
        };
        errors.push(format!(
            "Value {value} at '{path}' failed to satisfy constraint: {rule}"
        ));
    }

    fn check_value(
        &self,
        v: Option<&Value>,
        shape_id: ShapeId,
        required: bool,
        path: &str,
        errors: &mut Vec<String>,
    ) {
        let Some(v) = v else {
            if required {
                self.push(errors, None, shape_id, path, "Member must not be null");
            }
            return;
        };
        let shape = self.shape(shape_id);
        for rule in self.scalar_failures(v, shape) {
            self.push(errors, Some(v), shape_id, path, &rule);
        }
        match &shape.kind {
            Kind::Structure(_) => {
                if let Value::Object(obj) = v {
                    self.check_members(obj, shape_id, path, errors);
                }
            }
            Kind::List(member) => {
                let Value::Array(items) = v else { return };
                if self.is_container(*member) {
                    for (i, item) in items.iter().enumerate() {
                        if errors.len() >= MAX_VALIDATION_ERRORS {
                            return;
                        }
                        // null elements are skipped, as kinesalite does
                        if !item.is_null() {
                            let p = format!("{path}.{}.member", i + 1);
                            self.check_value(Some(item), *member, false, &p, errors);
                        }
                    }
                } else if items.iter().any(|i| {
                    !i.is_null() && !self.scalar_failures(i, self.shape(*member)).is_empty()
                }) {
                    let rule = format!(
                        "Member must satisfy constraint: [{}]",
                        self.all_rules(self.shape(*member))
                    );
                    self.push(errors, Some(v), shape_id, path, &rule);
                }
            }
            Kind::Map { key, value } => {
                let Value::Object(obj) = v else { return };
                let key_shape = self.shape(*key);
                if obj
                    .keys()
                    .any(|k| !self.string_failures(k, key_shape).is_empty())
                {
                    let rule = format!(
                        "Map keys must satisfy constraint: [{}]",
                        self.all_rules(key_shape)
                    );
                    self.push(errors, Some(v), shape_id, path, &rule);
                }
                if self.is_container(*value) {
                    for (k, item) in obj {
                        if errors.len() >= MAX_VALIDATION_ERRORS {
                            return;
                        }
                        if !item.is_null() {
                            let p = format!("{path}.{k}.member");
                            self.check_value(Some(item), *value, false, &p, errors);
                        }
                    }
                } else {
                    let value_shape = self.shape(*value);
                    if obj
                        .values()
                        .any(|i| !i.is_null() && !self.scalar_failures(i, value_shape).is_empty())
                    {
                        let rule = format!(
                            "Map value must satisfy constraint: [{}]",
                            self.all_rules(value_shape)
                        );
                        self.push(errors, Some(v), shape_id, path, &rule);
                    }
                }
            }
            _ => {}
        }
    }

    fn is_container(&self, shape: ShapeId) -> bool {
        matches!(
            self.shape(shape).kind,
            Kind::Structure(_) | Kind::List(_) | Kind::Map { .. }
        )
    }

    /// The rules of a string shape that `s` breaks, in AWS's reporting order
    /// (pattern, minimum length, maximum length, enum).
    fn string_failures(&self, s: &str, shape: &Shape) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &shape.pattern
            && !p.is_match(s.as_bytes())
        {
            out.push(format!(
                "Member must satisfy regular expression pattern: {}",
                p.text
            ));
        }
        length_failures(java_len(s), shape, &mut out);
        if !shape.enum_values.is_empty() && !shape.enum_values.iter().any(|e| e == s) {
            out.push(format!(
                "Member must satisfy enum value set: {}",
                shape.enum_text
            ));
        }
        out
    }

    /// The rules of `shape` that `v` breaks, in AWS's reporting order
    /// (pattern, minimum, maximum, enum); container contents are not looked at.
    fn scalar_failures(&self, v: &Value, shape: &Shape) -> Vec<String> {
        let mut out = Vec::new();
        match &shape.kind {
            Kind::String => {
                if let Some(s) = v.as_str() {
                    out = self.string_failures(s, shape);
                }
            }
            Kind::Blob => {
                if let Some(s) = v.as_str() {
                    length_failures(base64_decoded_len(s), shape, &mut out);
                }
            }
            Kind::List(_) => {
                if let Some(a) = v.as_array() {
                    length_failures(a.len(), shape, &mut out);
                }
            }
            Kind::Map { .. } => {
                if let Some(o) = v.as_object() {
                    length_failures(o.len(), shape, &mut out);
                }
            }
            Kind::Integer | Kind::Long | Kind::Float | Kind::Double => {
                let Some(n) = v.as_number() else { return out };
                let x = match integer_range(&shape.kind) {
                    Some((lo, hi)) => clamp_integer(n, lo, hi) as f64,
                    None => n.as_f64().unwrap_or(0.0),
                };
                if let Some(min) = shape.min
                    && x < min
                {
                    out.push(format!(
                        "Member must have value greater than or equal to {}",
                        bound_text(min)
                    ));
                }
                if let Some(max) = shape.max
                    && x > max
                {
                    out.push(format!(
                        "Member must have value less than or equal to {}",
                        bound_text(max)
                    ));
                }
            }
            _ => {}
        }
        out
    }

    /// All rules of a scalar shape, as AWS lists them inside `[...]` for list
    /// members and map keys/values: maximum, minimum, pattern, enum.
    fn all_rules(&self, shape: &Shape) -> String {
        let mut rules = Vec::new();
        let what = match shape.kind {
            Kind::Integer | Kind::Long | Kind::Float | Kind::Double => "value",
            _ => "length",
        };
        if let Some(max) = shape.max {
            rules.push(format!(
                "Member must have {what} less than or equal to {}",
                bound_text(max)
            ));
        }
        if let Some(min) = shape.min {
            rules.push(format!(
                "Member must have {what} greater than or equal to {}",
                bound_text(min)
            ));
        }
        if let Some(p) = &shape.pattern {
            rules.push(format!(
                "Member must satisfy regular expression pattern: {}",
                p.text
            ));
        }
        if !shape.enum_values.is_empty() {
            rules.push(format!(
                "Member must satisfy enum value set: {}",
                shape.enum_text
            ));
        }
        rules.join(", ")
    }

    /// A value as AWS prints it inside `Value '...'`.
    fn render(&self, v: &Value, shape_id: ShapeId) -> String {
        let shape = self.shape(shape_id);
        match (&shape.kind, v) {
            (_, Value::Null) => "null".to_string(),
            (Kind::Blob, Value::String(s)) => {
                let n = base64_decoded_len(s);
                format!("java.nio.HeapByteBuffer[pos=0 lim={n} cap={n}]")
            }
            (Kind::List(member), Value::Array(items)) => {
                let parts: Vec<String> = items.iter().map(|i| self.render(i, *member)).collect();
                format!("[{}]", parts.join(", "))
            }
            (Kind::Map { value, .. }, Value::Object(obj)) => {
                let parts: Vec<String> = obj
                    .iter()
                    .map(|(k, i)| format!("{k}={}", self.render(i, *value)))
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            (Kind::Structure(_), _) => {
                format!(
                    "{}{}{JAVA_HASH_SUFFIX}",
                    self.model.java_package, shape.name
                )
            }
            (k @ (Kind::Integer | Kind::Long), Value::Number(n)) => match integer_range(k) {
                Some((lo, hi)) => clamp_integer(n, lo, hi).to_string(),
                None => n.to_string(),
            },
            (_, Value::String(s)) => s.clone(),
            (_, other) => other.to_string(),
        }
    }
}

fn length_failures(len: usize, shape: &Shape, out: &mut Vec<String>) {
    let len = len as f64;
    if let Some(min) = shape.min
        && len < min
    {
        out.push(format!(
            "Member must have length greater than or equal to {}",
            bound_text(min)
        ));
    }
    if let Some(max) = shape.max
        && len > max
    {
        out.push(format!(
            "Member must have length less than or equal to {}",
            bound_text(max)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(name: &str) -> Operation<'static> {
        kinesis().operation(name).expect(name)
    }

    fn check(name: &str, input: Value) -> Result<(), InputError> {
        op(name).validate_input(&input)
    }

    /// Asserts the exact ValidationException message for the given items.
    fn assert_validation(name: &str, input: Value, items: &[&str]) {
        let n = items.len();
        let expected = format!(
            "{n} validation error{} detected: {}",
            if n == 1 { "" } else { "s" },
            items.join("; ")
        );
        assert_eq!(
            check(name, input.clone()),
            Err(InputError::Validation(expected)),
            "{name} {input}"
        );
    }

    fn assert_serialization(name: &str, input: Value, msg: &str) {
        assert_eq!(
            check(name, input.clone()),
            Err(InputError::Serialization(msg.to_string())),
            "{name} {input}"
        );
    }

    fn item(value: Option<&str>, path: &str, rule: &str) -> String {
        let v = match value {
            None => "null".to_string(),
            Some(v) => format!("'{v}'"),
        };
        format!("Value {v} at '{path}' failed to satisfy constraint: {rule}")
    }

    const STREAM_NAME_PATTERN: &str =
        "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+";
    const MIN_LEN_1: &str = "Member must have length greater than or equal to 1";
    const NOT_NULL: &str = "Member must not be null";

    /// Builds `{"A": {"B": [ {"C": value} ]}}` from a kinesalite-style path `A.B.0.C`.
    fn nest(path: &str, value: Value) -> Value {
        let pieces: Vec<&str> = path.split('.').collect();
        fn build(pieces: &[&str], value: Value) -> Value {
            match pieces.split_first() {
                None => value,
                Some((p, rest)) => {
                    let inner = build(rest, value);
                    if *p == "0" {
                        json!([inner])
                    } else {
                        json!({ *p: inner })
                    }
                }
            }
        }
        build(&pieces, value)
    }

    /// kinesalite's assertType table.
    fn type_cases(ty: &str) -> Vec<(Value, &'static str)> {
        let n = "class com.amazon.coral.value.json.numbers.TruncatingBigNumber";
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        match ty {
            "String" => vec![
                (
                    json!(true),
                    "class java.lang.Boolean can not be converted to an String",
                ),
                (
                    json!(23),
                    leak(format!("{n} can not be converted to an String")),
                ),
                (
                    json!(-2147483648i64),
                    leak(format!("{n} can not be converted to an String")),
                ),
                (
                    json!(2147483648i64),
                    leak(format!("{n} can not be converted to an String")),
                ),
                (
                    json!(34.56),
                    leak(format!("{n} can not be converted to an String")),
                ),
                (json!([]), "Start of list found where not expected"),
                (
                    json!({}),
                    "Start of structure or map found where not expected.",
                ),
            ],
            "Integer" | "Long" => vec![
                (
                    json!("23"),
                    leak(format!(
                        "class java.lang.String can not be converted to an {ty}"
                    )),
                ),
                (
                    json!(true),
                    leak(format!(
                        "class java.lang.Boolean can not be converted to an {ty}"
                    )),
                ),
                (json!([]), "Start of list found where not expected"),
                (
                    json!({}),
                    "Start of structure or map found where not expected.",
                ),
            ],
            "Boolean" => vec![
                (json!("23"), "'23' can not be converted to an Boolean"),
                (
                    json!("hellowtf"),
                    "'HELLOWTF' can not be converted to an Boolean",
                ),
                (
                    json!(23),
                    leak(format!("{n} can not be converted to an Boolean")),
                ),
                (
                    json!(-2147483648i64),
                    leak(format!("{n} can not be converted to an Boolean")),
                ),
                (json!([]), "Start of list found where not expected"),
                (
                    json!({}),
                    "Start of structure or map found where not expected.",
                ),
            ],
            "Blob" => vec![
                (
                    json!(true),
                    "class java.lang.Boolean can not be converted to a Blob",
                ),
                (
                    json!(23),
                    leak(format!("{n} can not be converted to a Blob")),
                ),
                (
                    json!(-2147483648i64),
                    leak(format!("{n} can not be converted to a Blob")),
                ),
                (
                    json!(2147483648i64),
                    leak(format!("{n} can not be converted to a Blob")),
                ),
                (
                    json!(34.56),
                    leak(format!("{n} can not be converted to a Blob")),
                ),
                (json!([]), "Start of list found where not expected"),
                (
                    json!({}),
                    "Start of structure or map found where not expected.",
                ),
                (
                    json!("23456"),
                    "'23456' can not be converted to a Blob: Base64 encoded length is expected a multiple of 4 bytes but found: 5",
                ),
                (
                    json!("=+/="),
                    "'=+/=' can not be converted to a Blob: Invalid Base64 character: '='",
                ),
                (
                    json!("+/+="),
                    "'+/+=' can not be converted to a Blob: Invalid last non-pad Base64 character dectected",
                ),
            ],
            "Timestamp" => vec![
                (
                    json!("23"),
                    "class java.lang.String can not be converted to milliseconds since epoch",
                ),
                (
                    json!(true),
                    "class java.lang.Boolean can not be converted to milliseconds since epoch",
                ),
                (json!([]), "Start of list found where not expected"),
                (
                    json!({}),
                    "Start of structure or map found where not expected.",
                ),
            ],
            "List" => vec![
                (json!("23"), "Expected list or null"),
                (json!(true), "Expected list or null"),
                (json!(23), "Expected list or null"),
                (json!(-2147483648i64), "Expected list or null"),
                (json!(2147483648i64), "Expected list or null"),
                (json!(34.56), "Expected list or null"),
                (
                    json!({}),
                    "Start of structure or map found where not expected.",
                ),
            ],
            "Map" => vec![
                (json!("23"), "Expected map or null"),
                (json!(true), "Expected map or null"),
                (json!(23), "Expected map or null"),
                (json!(-2147483648i64), "Expected map or null"),
                (json!(2147483648i64), "Expected map or null"),
                (json!(34.56), "Expected map or null"),
                (json!([]), "Start of list found where not expected"),
            ],
            "Structure" => vec![
                (json!("23"), "Expected null"),
                (json!(true), "Expected null"),
                (json!(23), "Expected null"),
                (json!(-2147483648i64), "Expected null"),
                (json!(2147483648i64), "Expected null"),
                (json!(34.56), "Expected null"),
                (json!([]), "Start of list found where not expected"),
            ],
            other => panic!("unknown type {other}"),
        }
    }

    fn assert_type(name: &str, path: &str, ty: &str) {
        for (value, msg) in type_cases(ty) {
            assert_serialization(name, nest(path, value), msg);
        }
    }

    // ---- model loading ---------------------------------------------------

    #[test]
    fn firehose_model_loads_with_its_lookaheads() {
        let m = firehose();
        assert_eq!(m.target_prefix(), "Firehose_20150804");
        let op = m.operation("TagDeliveryStream").unwrap();
        let doc = |key: &str| serde_json::json!({"DeliveryStreamName": "s", "Tags": [{"Key": key, "Value": "v"}]});
        assert!(op.validate_input(&doc("team")).is_ok());
        let Err(InputError::Validation(msg)) = op.validate_input(&doc("aws:x")) else {
            panic!("aws: tag keys are refused")
        };
        assert!(msg.contains("at 'tags.1.member.key'"), "{msg}");
    }

    #[test]
    fn firehose_endpoint_urls_may_be_http_too() {
        let op = firehose().operation("CreateDeliveryStream").unwrap();
        let doc = |url: &str| {
            serde_json::json!({"DeliveryStreamName": "s", "HttpEndpointDestinationConfiguration": {
                "EndpointConfiguration": {"Url": url},
                "S3Configuration": {"RoleARN": "arn:aws:iam::123456789012:role/r",
                                    "BucketARN": "arn:aws:s3:::b-bucket"}}})
        };
        assert!(op.validate_input(&doc("https://example.com/x")).is_ok());
        assert!(op.validate_input(&doc("http://127.0.0.1:8080/x")).is_ok());
        let Err(InputError::Validation(msg)) = op.validate_input(&doc("ftp://example.com/")) else {
            panic!("ftp:// is refused")
        };
        assert!(
            msg.ends_with("Member must satisfy regular expression pattern: https://.*"),
            "{msg}"
        );
    }

    #[test]
    fn model_loads_with_all_patterns() {
        let m = kinesis();
        assert_eq!(m.target_prefix(), "Kinesis_20131202");
        assert!(m.operation_names().len() >= 30);
        for name in [
            "PutRecord",
            "PutRecords",
            "GetRecords",
            "CreateStream",
            "SubscribeToShard",
        ] {
            assert_eq!(op(name).name(), name);
        }
        assert!(m.operation("Nope").is_none());
        assert!(m.operation("putRecord").is_none());
        let patterns = m.shapes.iter().filter(|s| s.pattern.is_some()).count();
        assert!(patterns >= 20, "{patterns}");
    }

    #[test]
    fn shape_walking() {
        let input = op("PutRecords").input_shape().unwrap();
        assert_eq!(input.name(), "PutRecordsInput");
        let records = input.member("Records").unwrap();
        let ShapeKind::List(entry) = records.kind() else {
            panic!("{records:?}")
        };
        assert!(matches!(
            entry.member("Data").unwrap().kind(),
            ShapeKind::Blob
        ));
        assert!(input.member("Nope").is_none());
        let out = op("GetRecords").output_shape().unwrap();
        let ShapeKind::List(rec) = out.member("Records").unwrap().kind() else {
            panic!()
        };
        assert!(matches!(
            rec.member("ApproximateArrivalTimestamp").unwrap().kind(),
            ShapeKind::Timestamp
        ));
        assert!(op("CreateStream").output_shape().is_none());
    }

    #[test]
    fn patterns_are_full_match_with_java_semantics() {
        let seq = compile_pattern("^(0|([1-9]\\d{0,128}))$").unwrap();
        assert!(seq.is_match(b"0"));
        assert!(seq.is_match(b"49590338271490256608559692538361571095921575989136588898"));
        assert!(!seq.is_match(b"01"));
        assert!(!seq.is_match(b"0abc"));
        assert!(!seq.is_match("1\u{0661}".as_bytes()), "\\d is ASCII only");
        let name = compile_pattern("[a-zA-Z0-9_.-]+").unwrap();
        assert!(name.is_match(b"my-stream_1.0"));
        assert!(!name.is_match(b"a b"));
        assert!(!name.is_match("\u{e9}".as_bytes()));
        let arn = compile_pattern("arn:aws.*:kinesis:.*:\\d{12}:stream/\\S+").unwrap();
        assert!(arn.is_match(b"arn:aws:kinesis:us-east-1:000000000000:stream/foo"));
        assert!(!arn.is_match(b"arn:aws:kinesis:us-east-1:000000000000:stream/fo o"));
        assert!(arn.is_match("arn:aws:kinesis:us-east-1:000000000000:stream/\u{e9}".as_bytes()));
    }

    // ---- top level -------------------------------------------------------

    #[test]
    fn non_object_documents_are_bare_serialization_errors() {
        for doc in [
            json!(null),
            json!(true),
            json!("hello"),
            json!(1),
            json!([]),
            json!([{}]),
        ] {
            assert_serialization("ListStreams", doc, "");
        }
        assert_eq!(check("ListStreams", json!({})), Ok(()));
    }

    #[test]
    fn unknown_members_and_nulls_are_ignored() {
        assert_eq!(
            check(
                "PutRecord",
                json!({"StreamName": "s", "PartitionKey": "a", "Data": "", "Bogus": [1, {}], "ExplicitHashKey": null})
            ),
            Ok(())
        );
        // a null required member is absent
        assert_validation(
            "PutRecord",
            json!({"StreamName": "s", "Data": null}),
            &[&item(None, "data", NOT_NULL)],
        );
    }

    #[test]
    fn error_accessors() {
        let e = InputError::Validation("x".into());
        assert_eq!(e.error_type(), "ValidationException");
        assert_eq!(e.message(), "x");
        assert_eq!(e.to_string(), "ValidationException: x");
        assert_eq!(
            InputError::Serialization(String::new()).error_type(),
            "SerializationException"
        );
    }

    // ---- CreateStream ----------------------------------------------------

    #[test]
    fn create_stream_types() {
        assert_type("CreateStream", "StreamName", "String");
        assert_type("CreateStream", "ShardCount", "Integer");
        assert_type("CreateStream", "Tags", "Map");
        assert_type("CreateStream", "Tags.a", "String");
        assert_type("CreateStream", "StreamModeDetails", "Structure");
    }

    #[test]
    fn create_stream_no_stream_name() {
        // kinesalite (older AWS) also required ShardCount; the current model
        // makes it optional (on-demand streams).
        assert_validation(
            "CreateStream",
            json!({}),
            &[&item(None, "streamName", NOT_NULL)],
        );
    }

    #[test]
    fn create_stream_empty_stream_name() {
        assert_validation(
            "CreateStream",
            json!({"StreamName": "", "ShardCount": 0}),
            &[
                &item(
                    Some("0"),
                    "shardCount",
                    "Member must have value greater than or equal to 1",
                ),
                &item(Some(""), "streamName", STREAM_NAME_PATTERN),
                &item(Some(""), "streamName", MIN_LEN_1),
            ],
        );
    }

    #[test]
    fn create_stream_long_stream_name() {
        let name = "a".repeat(129);
        // ShardCount has no maximum in the current model (kinesalite pinned 100000).
        assert_validation(
            "CreateStream",
            json!({"StreamName": name, "ShardCount": 100000000000i64}),
            &[&item(
                Some(&name),
                "streamName",
                "Member must have length less than or equal to 128",
            )],
        );
    }

    #[test]
    fn integers_are_floored_and_clamped() {
        let min1 = "Member must have value greater than or equal to 1";
        assert_validation(
            "CreateStream",
            json!({"StreamName": "a", "ShardCount": 0.9}),
            &[&item(Some("0"), "shardCount", min1)],
        );
        assert_validation(
            "CreateStream",
            json!({"StreamName": "a", "ShardCount": -5.5}),
            &[&item(Some("-6"), "shardCount", min1)],
        );
        assert_validation(
            "CreateStream",
            json!({"StreamName": "a", "ShardCount": -1e20}),
            &[&item(Some("-2147483648"), "shardCount", min1)],
        );
        // above the Integer range: clamped to 2147483647 (kinesalite pins this)
        assert_validation(
            "GetRecords",
            json!({"ShardIterator": "x", "Limit": 100000000000i64}),
            &[&item(
                Some("2147483647"),
                "limit",
                "Member must have value less than or equal to 10000",
            )],
        );
        assert_validation(
            "GetRecords",
            json!({"ShardIterator": "x", "Limit": 18446744073709551615u64}),
            &[&item(
                Some("2147483647"),
                "limit",
                "Member must have value less than or equal to 10000",
            )],
        );
        assert_eq!(
            check(
                "CreateStream",
                json!({"StreamName": "a", "ShardCount": 1.99})
            ),
            Ok(())
        );
    }

    #[test]
    fn create_stream_nested_structure_and_map() {
        assert_validation(
            "CreateStream",
            json!({"StreamName": "a", "StreamModeDetails": {}, "Tags": {}}),
            &[
                &item(None, "streamModeDetails.streamMode", NOT_NULL),
                &item(Some("{}"), "tags", MIN_LEN_1),
            ],
        );
        assert_validation(
            "CreateStream",
            json!({"StreamName": "a", "StreamModeDetails": {"StreamMode": "FAST"}}),
            &[&item(
                Some("FAST"),
                "streamModeDetails.streamMode",
                "Member must satisfy enum value set: [PROVISIONED, ON_DEMAND]",
            )],
        );
        assert_validation(
            "CreateStream",
            json!({"StreamName": "a", "MaxRecordSizeInKiB": 10}),
            &[&item(
                Some("10"),
                "maxRecordSizeInKiB",
                "Member must have value greater than or equal to 1024",
            )],
        );
    }

    // ---- PutRecord -------------------------------------------------------

    #[test]
    fn put_record_types() {
        assert_type("PutRecord", "Data", "Blob");
        assert_type("PutRecord", "ExplicitHashKey", "String");
        assert_type("PutRecord", "PartitionKey", "String");
        assert_type("PutRecord", "SequenceNumberForOrdering", "String");
        assert_type("PutRecord", "StreamName", "String");
        assert_type("PutRecord", "DryRun", "Boolean");
    }

    #[test]
    fn put_record_no_members() {
        // The current model requires only Data (PartitionKey may be omitted
        // for AUTO record distribution, StreamName for StreamARN callers).
        assert_validation("PutRecord", json!({}), &[&item(None, "data", NOT_NULL)]);
    }

    #[test]
    fn put_record_empty_members() {
        assert_validation(
            "PutRecord",
            json!({"StreamName": "", "PartitionKey": "", "Data": "", "ExplicitHashKey": "", "SequenceNumberForOrdering": ""}),
            &[
                &item(
                    Some(""),
                    "explicitHashKey",
                    "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
                ),
                &item(Some(""), "partitionKey", MIN_LEN_1),
                &item(
                    Some(""),
                    "sequenceNumberForOrdering",
                    "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})",
                ),
                &item(Some(""), "streamName", STREAM_NAME_PATTERN),
                &item(Some(""), "streamName", MIN_LEN_1),
            ],
        );
    }

    #[test]
    fn put_record_long_members() {
        use base64::Engine;
        let name = "a".repeat(129);
        let name2 = "a".repeat(257);
        let data = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 1048577]);
        assert_validation(
            "PutRecord",
            json!({"StreamName": name, "PartitionKey": name2, "Data": data, "ExplicitHashKey": ""}),
            &[
                &item(
                    Some("java.nio.HeapByteBuffer[pos=0 lim=1048577 cap=1048577]"),
                    "data",
                    "Member must have length less than or equal to 1048576",
                ),
                &item(
                    Some(""),
                    "explicitHashKey",
                    "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
                ),
                &item(
                    Some(&name2),
                    "partitionKey",
                    "Member must have length less than or equal to 256",
                ),
                &item(
                    Some(&name),
                    "streamName",
                    "Member must have length less than or equal to 128",
                ),
            ],
        );
        // exactly 1 MiB is fine
        let data = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 1048576]);
        assert_eq!(
            check(
                "PutRecord",
                json!({"StreamName": "s", "PartitionKey": "a", "Data": data})
            ),
            Ok(())
        );
    }

    #[test]
    fn put_record_hash_key_and_sequence_patterns() {
        let ok = json!({"StreamName": "s", "PartitionKey": "a", "Data": "",
            "ExplicitHashKey": "340282366920938463463374607431768211455",
            "SequenceNumberForOrdering": "0"});
        assert_eq!(check("PutRecord", ok), Ok(()));
        assert_validation(
            "PutRecord",
            json!({"StreamName": "s", "PartitionKey": "a", "Data": "", "ExplicitHashKey": "0123"}),
            &[&item(
                Some("0123"),
                "explicitHashKey",
                "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
            )],
        );
        // 40 digits is too long for a 128-bit hash key pattern
        let long = "1".repeat(40);
        assert_validation(
            "PutRecord",
            json!({"StreamName": "s", "PartitionKey": "a", "Data": "", "ExplicitHashKey": long}),
            &[&item(
                Some(&long),
                "explicitHashKey",
                "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
            )],
        );
    }

    #[test]
    fn put_record_stream_arn() {
        let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/foo";
        assert_eq!(
            check(
                "PutRecord",
                json!({"StreamARN": arn, "PartitionKey": "a", "Data": "YQ=="})
            ),
            Ok(())
        );
        assert_validation(
            "PutRecord",
            json!({"StreamARN": "nope", "Data": ""}),
            &[&item(
                Some("nope"),
                "streamARN",
                "Member must satisfy regular expression pattern: arn:aws.*:kinesis:.*:\\d{12}:stream/\\S+",
            )],
        );
    }

    #[test]
    fn partition_key_length_counts_utf16_units() {
        // 128 astral characters = 256 UTF-16 units: allowed; one more is not.
        let ok = "\u{1F600}".repeat(128);
        assert_eq!(
            check(
                "PutRecord",
                json!({"StreamName": "s", "PartitionKey": ok, "Data": ""})
            ),
            Ok(())
        );
        let bad = format!("{ok}a");
        assert_validation(
            "PutRecord",
            json!({"StreamName": "s", "PartitionKey": bad, "Data": ""}),
            &[&item(
                Some(&bad),
                "partitionKey",
                "Member must have length less than or equal to 256",
            )],
        );
    }

    #[test]
    fn booleans() {
        for s in ["true", "FALSE", "yes", "No", "1", "0"] {
            assert_eq!(
                check(
                    "PutRecord",
                    json!({"StreamName": "s", "PartitionKey": "a", "Data": "", "DryRun": s})
                ),
                Ok(()),
                "{s}"
            );
        }
        let mut doc = json!({"StreamName": "s", "PartitionKey": "a", "Data": "", "DryRun": "yes"});
        op("PutRecord").normalize_input(&mut doc).unwrap();
        assert_eq!(doc["DryRun"], json!(true));
    }

    // ---- blobs -----------------------------------------------------------

    #[test]
    fn base64_rules() {
        for ok in ["", "YQ==", "YWI=", "YWJj", "AAAA", "+/+/", "AA=="] {
            assert_eq!(check_base64(ok), Ok(()), "{ok}");
        }
        let bad_last = "Invalid last non-pad Base64 character dectected";
        for (s, tail) in [
            ("YR==", bad_last),
            ("YWJ=", bad_last),
            ("A===", bad_last),
            ("====", bad_last),
            (
                "YQ=",
                "Base64 encoded length is expected a multiple of 4 bytes but found: 3",
            ),
            (
                "YWJjZA=",
                "Base64 encoded length is expected a multiple of 4 bytes but found: 7",
            ),
            ("YQ-=", "Invalid Base64 character: '-'"),
            ("Y=Q=", "Invalid Base64 character: '='"),
            ("YQ\u{e9}=", "Invalid Base64 character: '\u{e9}'"),
            ("AAAAYQ==YQ==", "Invalid Base64 character: '='"),
        ] {
            assert_eq!(
                check_base64(s),
                Err(format!("'{s}' can not be converted to a Blob: {tail}")),
                "{s}"
            );
        }
        assert_eq!(base64_decoded_len(""), 0);
        assert_eq!(base64_decoded_len("YQ=="), 1);
        assert_eq!(base64_decoded_len("YWI="), 2);
        assert_eq!(base64_decoded_len("YWJj"), 3);
        assert_eq!(base64_decoded_len("YWJjZA=="), 4);
    }

    // ---- PutRecords ------------------------------------------------------

    #[test]
    fn put_records_types() {
        assert_type("PutRecords", "Records", "List");
        assert_type("PutRecords", "Records.0", "Structure");
        assert_type("PutRecords", "Records.0.Data", "Blob");
        assert_type("PutRecords", "Records.0.ExplicitHashKey", "String");
        assert_type("PutRecords", "Records.0.PartitionKey", "String");
        assert_type("PutRecords", "StreamName", "String");
    }

    #[test]
    fn put_records_no_members() {
        assert_validation("PutRecords", json!({}), &[&item(None, "records", NOT_NULL)]);
    }

    #[test]
    fn put_records_empty_members() {
        assert_validation(
            "PutRecords",
            json!({"StreamName": "", "Records": []}),
            &[
                &item(Some("[]"), "records", MIN_LEN_1),
                &item(Some(""), "streamName", STREAM_NAME_PATTERN),
                &item(Some(""), "streamName", MIN_LEN_1),
            ],
        );
    }

    #[test]
    fn put_records_empty_partition_key() {
        assert_validation(
            "PutRecords",
            json!({"StreamName": "", "Records": [{"PartitionKey": "", "Data": "", "ExplicitHashKey": ""}]}),
            &[
                &item(
                    Some(""),
                    "records.1.member.explicitHashKey",
                    "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
                ),
                &item(Some(""), "records.1.member.partitionKey", MIN_LEN_1),
                &item(Some(""), "streamName", STREAM_NAME_PATTERN),
                &item(Some(""), "streamName", MIN_LEN_1),
            ],
        );
    }

    #[test]
    fn put_records_long_members() {
        use base64::Engine;
        let name = "a".repeat(129);
        let name2 = "a".repeat(257);
        let data = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 1048577]);
        assert_validation(
            "PutRecords",
            json!({"StreamName": name, "Records": [{"PartitionKey": name2, "Data": data, "ExplicitHashKey": ""}]}),
            &[
                &item(
                    Some("java.nio.HeapByteBuffer[pos=0 lim=1048577 cap=1048577]"),
                    "records.1.member.data",
                    "Member must have length less than or equal to 1048576",
                ),
                &item(
                    Some(""),
                    "records.1.member.explicitHashKey",
                    "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
                ),
                &item(
                    Some(&name2),
                    "records.1.member.partitionKey",
                    "Member must have length less than or equal to 256",
                ),
                &item(
                    Some(&name),
                    "streamName",
                    "Member must have length less than or equal to 128",
                ),
            ],
        );
    }

    #[test]
    fn put_records_too_many_records_stops_at_ten_errors() {
        let records: Vec<Value> = (0..501)
            .map(|_| json!({"PartitionKey": "", "Data": ""}))
            .collect();
        let strs = vec!["com.amazonaws.kinesis.v20131202.PutRecordsRequestEntry@c965e310"; 501];
        let list = format!("[{}]", strs.join(", "));
        let mut items = vec![item(
            Some(&list),
            "records",
            "Member must have length less than or equal to 500",
        )];
        for i in 1..=9 {
            items.push(item(
                Some(""),
                &format!("records.{i}.member.partitionKey"),
                MIN_LEN_1,
            ));
        }
        let refs: Vec<&str> = items.iter().map(String::as_str).collect();
        assert_validation(
            "PutRecords",
            json!({"StreamName": "", "Records": records}),
            &refs,
        );
    }

    #[test]
    fn put_records_missing_data_in_entry() {
        assert_validation(
            "PutRecords",
            json!({"StreamName": "s", "Records": [{"PartitionKey": "a", "Data": ""}, {"PartitionKey": "b"}, null]}),
            &[&item(None, "records.2.member.data", NOT_NULL)],
        );
    }

    #[test]
    fn put_records_type_error_in_later_record() {
        assert_serialization(
            "PutRecords",
            json!({"StreamName": "s", "Records": [{"PartitionKey": "a", "Data": ""}, {"PartitionKey": 1, "Data": ""}]}),
            "class com.amazon.coral.value.json.numbers.TruncatingBigNumber can not be converted to an String",
        );
    }

    // ---- GetShardIterator ------------------------------------------------

    #[test]
    fn get_shard_iterator_types() {
        assert_type("GetShardIterator", "ShardId", "String");
        assert_type("GetShardIterator", "ShardIteratorType", "String");
        assert_type("GetShardIterator", "StartingSequenceNumber", "String");
        assert_type("GetShardIterator", "StreamName", "String");
        assert_type("GetShardIterator", "Timestamp", "Timestamp");
    }

    #[test]
    fn get_shard_iterator_no_members() {
        assert_validation(
            "GetShardIterator",
            json!({}),
            &[
                &item(None, "shardId", NOT_NULL),
                &item(None, "shardIteratorType", NOT_NULL),
            ],
        );
    }

    #[test]
    fn get_shard_iterator_empty_members() {
        assert_validation(
            "GetShardIterator",
            json!({"StreamName": "", "ShardIteratorType": "", "ShardId": "", "StartingSequenceNumber": ""}),
            &[
                &item(Some(""), "shardId", STREAM_NAME_PATTERN),
                &item(Some(""), "shardId", MIN_LEN_1),
                &item(
                    Some(""),
                    "shardIteratorType",
                    "Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP, AT_SEQUENCE_NUMBER, TRIM_HORIZON]",
                ),
                &item(
                    Some(""),
                    "startingSequenceNumber",
                    "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})",
                ),
                &item(Some(""), "streamName", STREAM_NAME_PATTERN),
                &item(Some(""), "streamName", MIN_LEN_1),
            ],
        );
    }

    #[test]
    fn get_shard_iterator_long_members() {
        let name = "a".repeat(129);
        assert_validation(
            "GetShardIterator",
            json!({"StreamName": name, "ShardId": name, "ShardIteratorType": "LATEST"}),
            &[
                &item(
                    Some(&name),
                    "shardId",
                    "Member must have length less than or equal to 128",
                ),
                &item(
                    Some(&name),
                    "streamName",
                    "Member must have length less than or equal to 128",
                ),
            ],
        );
        assert_eq!(
            check(
                "GetShardIterator",
                json!({"StreamName": "s", "ShardId": "shardId-000000000000", "ShardIteratorType": "AT_TIMESTAMP", "Timestamp": 1700000000.123})
            ),
            Ok(())
        );
    }

    // ---- GetRecords ------------------------------------------------------

    #[test]
    fn get_records() {
        assert_type("GetRecords", "Limit", "Integer");
        assert_type("GetRecords", "ShardIterator", "String");
        assert_validation(
            "GetRecords",
            json!({}),
            &[&item(None, "shardIterator", NOT_NULL)],
        );
        assert_validation(
            "GetRecords",
            json!({"ShardIterator": "", "Limit": 0}),
            &[
                &item(
                    Some("0"),
                    "limit",
                    "Member must have value greater than or equal to 1",
                ),
                &item(Some(""), "shardIterator", MIN_LEN_1),
            ],
        );
        let name = "a".repeat(513);
        assert_validation(
            "GetRecords",
            json!({"ShardIterator": name, "Limit": 100000}),
            &[
                &item(
                    Some("100000"),
                    "limit",
                    "Member must have value less than or equal to 10000",
                ),
                &item(
                    Some(&name),
                    "shardIterator",
                    "Member must have length less than or equal to 512",
                ),
            ],
        );
    }

    // ---- ListShards ------------------------------------------------------

    #[test]
    fn list_shards() {
        assert_type("ListShards", "StreamName", "String");
        assert_type("ListShards", "MaxResults", "Integer");
        assert_type("ListShards", "ExclusiveStartShardId", "String");
        assert_type("ListShards", "NextToken", "String");
        assert_type("ListShards", "StreamCreationTimestamp", "Timestamp");
        assert_type("ListShards", "ShardFilter", "Structure");
        // "Either NextToken or StreamName should be provided." is the caller's check
        assert_eq!(check("ListShards", json!({})), Ok(()));
        assert_validation(
            "ListShards",
            json!({"StreamName": "", "NextToken": "", "MaxResults": 0, "ExclusiveStartShardId": ""}),
            &[
                &item(Some(""), "exclusiveStartShardId", STREAM_NAME_PATTERN),
                &item(Some(""), "exclusiveStartShardId", MIN_LEN_1),
                &item(
                    Some("0"),
                    "maxResults",
                    "Member must have value greater than or equal to 1",
                ),
                &item(Some(""), "nextToken", MIN_LEN_1),
                &item(Some(""), "streamName", STREAM_NAME_PATTERN),
                &item(Some(""), "streamName", MIN_LEN_1),
            ],
        );
        let name = "a".repeat(129);
        assert_validation(
            "ListShards",
            json!({"StreamName": name, "MaxResults": 100000, "ExclusiveStartShardId": name}),
            &[
                &item(
                    Some(&name),
                    "exclusiveStartShardId",
                    "Member must have length less than or equal to 128",
                ),
                &item(
                    Some("100000"),
                    "maxResults",
                    "Member must have value less than or equal to 10000",
                ),
                &item(
                    Some(&name),
                    "streamName",
                    "Member must have length less than or equal to 128",
                ),
            ],
        );
        assert_validation(
            "ListShards",
            json!({"StreamName": "s", "ShardFilter": {"ShardId": "x"}}),
            &[&item(None, "shardFilter.type", NOT_NULL)],
        );
    }

    // ---- tags ------------------------------------------------------------

    #[test]
    fn add_tags_to_stream() {
        assert_type("AddTagsToStream", "Tags", "Map");
        assert_type("AddTagsToStream", "Tags.a", "String");
        assert_type("AddTagsToStream", "StreamName", "String");
        assert_validation(
            "AddTagsToStream",
            json!({}),
            &[&item(None, "tags", NOT_NULL)],
        );
        assert_validation(
            "AddTagsToStream",
            json!({"StreamName": "", "Tags": {}}),
            &[
                &item(Some(""), "streamName", STREAM_NAME_PATTERN),
                &item(Some(""), "streamName", MIN_LEN_1),
                &item(Some("{}"), "tags", MIN_LEN_1),
            ],
        );
        let name = "a".repeat(129);
        assert_validation(
            "AddTagsToStream",
            json!({"StreamName": name, "Tags": {"a;b": "b"}}),
            &[&item(
                Some(&name),
                "streamName",
                "Member must have length less than or equal to 128",
            )],
        );
    }

    #[test]
    fn add_tags_long_key_and_value() {
        let name = "a".repeat(129);
        let tags = json!({"a": "1", "b": "2", name.clone(): "3"});
        // entries are listed in the document's map order
        let rendered: Vec<String> = tags
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect();
        assert_validation(
            "AddTagsToStream",
            json!({"StreamName": "s", "Tags": tags}),
            &[&item(
                Some(&format!("{{{}}}", rendered.join(", "))),
                "tags",
                "Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]",
            )],
        );
        let value = "a".repeat(257);
        assert_validation(
            "AddTagsToStream",
            json!({"StreamName": "s", "Tags": {"a": "1", "b": "2", "c": value.clone()}}),
            &[&item(
                Some(&format!("{{a=1, b=2, c={value}}}")),
                "tags",
                "Map value must satisfy constraint: [Member must have length less than or equal to 256, Member must have length greater than or equal to 0]",
            )],
        );
        assert_validation(
            "AddTagsToStream",
            json!({"StreamName": "s", "Tags": {"": "x"}}),
            &[&item(
                Some("{=x}"),
                "tags",
                "Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]",
            )],
        );
    }

    #[test]
    fn add_tags_too_many() {
        // the model allows 200 tags (kinesalite pinned the old limit of 10)
        let tags: Map<String, Value> = (0..201).map(|i| (format!("k{i:03}"), json!("v"))).collect();
        let rendered = format!(
            "{{{}}}",
            tags.keys()
                .map(|k| format!("{k}=v"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert_validation(
            "AddTagsToStream",
            json!({"StreamName": "s", "Tags": tags}),
            &[&item(
                Some(&rendered),
                "tags",
                "Member must have length less than or equal to 200",
            )],
        );
    }

    #[test]
    fn remove_tags_from_stream() {
        assert_type("RemoveTagsFromStream", "TagKeys", "List");
        assert_type("RemoveTagsFromStream", "TagKeys.0", "String");
        assert_validation(
            "RemoveTagsFromStream",
            json!({}),
            &[&item(None, "tagKeys", NOT_NULL)],
        );
        assert_validation(
            "RemoveTagsFromStream",
            json!({"StreamName": "", "TagKeys": []}),
            &[
                &item(Some(""), "streamName", STREAM_NAME_PATTERN),
                &item(Some(""), "streamName", MIN_LEN_1),
                &item(Some("[]"), "tagKeys", MIN_LEN_1),
            ],
        );
        let name = "a".repeat(129);
        assert_validation(
            "RemoveTagsFromStream",
            json!({"StreamName": "s", "TagKeys": ["a", name.clone(), "b"]}),
            &[&item(
                Some(&format!("[a, {name}, b]")),
                "tagKeys",
                "Member must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]",
            )],
        );
        let keys: Vec<String> = (1..=51).map(|i| i.to_string()).collect();
        assert_validation(
            "RemoveTagsFromStream",
            json!({"StreamName": "s", "TagKeys": keys}),
            &[&item(
                Some(&format!("[{}]", keys.join(", "))),
                "tagKeys",
                "Member must have length less than or equal to 50",
            )],
        );
    }

    #[test]
    fn enum_list_members_are_aggregated() {
        assert_validation(
            "EnableEnhancedMonitoring",
            json!({"StreamName": "s", "ShardLevelMetrics": ["IncomingBytes", "Bogus"]}),
            &[&item(
                Some("[IncomingBytes, Bogus]"),
                "shardLevelMetrics",
                "Member must satisfy constraint: [Member must satisfy enum value set: [IncomingBytes, IncomingRecords, OutgoingBytes, OutgoingRecords, WriteProvisionedThroughputExceeded, ReadProvisionedThroughputExceeded, IteratorAgeMilliseconds, ALL]]",
            )],
        );
    }

    // ---- SplitShard / MergeShards / others -------------------------------

    #[test]
    fn split_shard() {
        assert_type("SplitShard", "NewStartingHashKey", "String");
        assert_type("SplitShard", "ShardToSplit", "String");
        assert_type("SplitShard", "StreamName", "String");
        assert_validation(
            "SplitShard",
            json!({}),
            &[
                &item(None, "newStartingHashKey", NOT_NULL),
                &item(None, "shardToSplit", NOT_NULL),
            ],
        );
        assert_validation(
            "SplitShard",
            json!({"StreamName": "", "ShardToSplit": "", "NewStartingHashKey": ""}),
            &[
                &item(
                    Some(""),
                    "newStartingHashKey",
                    "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,38})",
                ),
                &item(Some(""), "shardToSplit", STREAM_NAME_PATTERN),
                &item(Some(""), "shardToSplit", MIN_LEN_1),
                &item(Some(""), "streamName", STREAM_NAME_PATTERN),
                &item(Some(""), "streamName", MIN_LEN_1),
            ],
        );
        let name = "a".repeat(129);
        assert_validation(
            "SplitShard",
            json!({"StreamName": name, "ShardToSplit": name, "NewStartingHashKey": "0"}),
            &[
                &item(
                    Some(&name),
                    "shardToSplit",
                    "Member must have length less than or equal to 128",
                ),
                &item(
                    Some(&name),
                    "streamName",
                    "Member must have length less than or equal to 128",
                ),
            ],
        );
    }

    #[test]
    fn merge_shards() {
        assert_type("MergeShards", "AdjacentShardToMerge", "String");
        assert_type("MergeShards", "ShardToMerge", "String");
        assert_validation(
            "MergeShards",
            json!({"StreamName": "", "ShardToMerge": "", "AdjacentShardToMerge": ""}),
            &[
                &item(Some(""), "adjacentShardToMerge", STREAM_NAME_PATTERN),
                &item(Some(""), "adjacentShardToMerge", MIN_LEN_1),
                &item(Some(""), "shardToMerge", STREAM_NAME_PATTERN),
                &item(Some(""), "shardToMerge", MIN_LEN_1),
                &item(Some(""), "streamName", STREAM_NAME_PATTERN),
                &item(Some(""), "streamName", MIN_LEN_1),
            ],
        );
    }

    #[test]
    fn describe_stream_and_list_streams() {
        assert_type("DescribeStream", "Limit", "Integer");
        let name = "a".repeat(129);
        assert_validation(
            "DescribeStream",
            json!({"StreamName": name, "Limit": 100000, "ExclusiveStartShardId": name}),
            &[
                &item(
                    Some(&name),
                    "exclusiveStartShardId",
                    "Member must have length less than or equal to 128",
                ),
                &item(
                    Some("100000"),
                    "limit",
                    "Member must have value less than or equal to 10000",
                ),
                &item(
                    Some(&name),
                    "streamName",
                    "Member must have length less than or equal to 128",
                ),
            ],
        );
        assert_validation(
            "ListStreams",
            json!({"ExclusiveStartStreamName": "", "Limit": 0}),
            &[
                &item(Some(""), "exclusiveStartStreamName", STREAM_NAME_PATTERN),
                &item(Some(""), "exclusiveStartStreamName", MIN_LEN_1),
                &item(
                    Some("0"),
                    "limit",
                    "Member must have value greater than or equal to 1",
                ),
            ],
        );
        assert_validation(
            "ListTagsForStream",
            json!({"StreamName": "s", "ExclusiveStartTagKey": "", "Limit": 0}),
            &[
                &item(Some(""), "exclusiveStartTagKey", MIN_LEN_1),
                &item(
                    Some("0"),
                    "limit",
                    "Member must have value greater than or equal to 1",
                ),
            ],
        );
    }

    #[test]
    fn subscribe_to_shard_nested_structure() {
        assert_type("SubscribeToShard", "StartingPosition", "Structure");
        assert_type(
            "SubscribeToShard",
            "StartingPosition.Timestamp",
            "Timestamp",
        );
        let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1700000000";
        assert_eq!(
            check(
                "SubscribeToShard",
                json!({"ConsumerARN": arn, "ShardId": "shardId-000000000000", "StartingPosition": {"Type": "LATEST"}})
            ),
            Ok(())
        );
        assert_validation(
            "SubscribeToShard",
            json!({"ConsumerARN": arn, "ShardId": "shardId-0", "StartingPosition": {"Type": "NOW", "SequenceNumber": "x"}}),
            &[
                &item(
                    Some("x"),
                    "startingPosition.sequenceNumber",
                    "Member must satisfy regular expression pattern: 0|([1-9]\\d{0,128})",
                ),
                &item(
                    Some("NOW"),
                    "startingPosition.type",
                    "Member must satisfy enum value set: [AFTER_SEQUENCE_NUMBER, LATEST, AT_TIMESTAMP, AT_SEQUENCE_NUMBER, TRIM_HORIZON]",
                ),
            ],
        );
    }

    #[test]
    fn operations_without_members_accept_anything() {
        assert_eq!(check("DescribeLimits", json!({"x": 1})), Ok(()));
        assert_serialization("DescribeLimits", json!([1]), "");
    }

    #[test]
    fn normalize_rewrites_the_document() {
        let mut doc = json!({"ShardIterator": "x", "Limit": 5.7, "Junk": null, "StreamARN": null});
        op("GetRecords").normalize_input(&mut doc).unwrap();
        assert_eq!(doc, json!({"ShardIterator": "x", "Limit": 5}));
        let mut doc = json!({"ShardIterator": "x", "Limit": 1e12});
        let err = op("GetRecords").normalize_input(&mut doc).unwrap_err();
        assert!(err.message().contains("'2147483647'"), "{err}");
        let mut doc = json!({"ShardIterator": 5});
        assert!(matches!(
            op("GetRecords").normalize_input(&mut doc),
            Err(InputError::Serialization(_))
        ));
    }

    #[test]
    fn every_operation_accepts_an_empty_object_or_reports_validation() {
        let m = kinesis();
        for name in m.operation_names() {
            match m.operation(name).unwrap().validate_input(&json!({})) {
                Ok(()) => {}
                Err(InputError::Validation(msg)) => {
                    assert!(msg.contains("Member must not be null"), "{name}: {msg}")
                }
                Err(e) => panic!("{name}: {e}"),
            }
        }
    }
}
