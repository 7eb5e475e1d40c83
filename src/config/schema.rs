//! The JSON Schemas of the resource kinds: generating them (`dualwrite schema`), and checking a
//! document against its kind's schema with every error turned back into the line and column
//! of the YAML node it is about.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use super::resources::{Duration, Kind, SemVer};
use super::yaml::{Document, escape_pointer};
use super::{Diagnostic, did_you_mean};

const NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const ENV_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";

/// The schema of a kind, with the range of every sized integer spelled out (`format: uint32`
/// alone bounds nothing), so an out-of-range number is reported at its own line and column.
fn json_schema(kind: Kind) -> Value {
    let mut schema = serde_json::to_value(kind.json_schema()).expect("schema serializes");
    bound_integers(&mut schema);
    schema
}

/// Adds `minimum` and `maximum` to each integer schema whose `format` names a sized type.
fn bound_integers(schema: &mut Value) {
    match schema {
        Value::Object(obj) => {
            let range: Option<(i128, i128)> = match obj.get("format").and_then(Value::as_str) {
                Some("uint8") => Some((0, u8::MAX.into())),
                Some("uint16") => Some((0, u16::MAX.into())),
                Some("uint32") => Some((0, u32::MAX.into())),
                Some("uint64" | "uint") => Some((0, u64::MAX.into())),
                Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
                Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
                Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                Some("int64" | "int") => Some((i64::MIN.into(), i64::MAX.into())),
                _ => None,
            };
            if let Some((min, max)) = range {
                let number = |n: i128| {
                    i64::try_from(n).map_or_else(
                        |_| Value::from(u64::try_from(n).expect("a u64 bound")),
                        Value::from,
                    )
                };
                obj.entry("minimum").or_insert_with(|| number(min));
                obj.entry("maximum").or_insert_with(|| number(max));
            }
            obj.values_mut().for_each(bound_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// The schema of a kind as committed in `schemas/`: pretty JSON with a trailing newline.
pub fn schema_text(kind: Kind) -> String {
    let mut schema = json_schema(kind);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "$id".into(),
            Value::String(format!(
                "https://dualwrite.dev/schemas/{}",
                kind.schema_file()
            )),
        );
    }
    let mut text = serde_json::to_string_pretty(&schema).expect("schema serializes");
    text.push('\n');
    text
}

/// Writes one schema per kind into `dir`; returns the files written.
pub fn write_schemas(dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for kind in Kind::ALL {
        let file = kind.schema_file();
        std::fs::write(dir.join(&file), schema_text(kind))?;
        written.push(file);
    }
    Ok(written)
}

struct Compiled {
    validator: Validator,
    schema: Value,
}

fn compiled(kind: Kind) -> &'static Compiled {
    static CACHE: OnceLock<HashMap<Kind, Compiled>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        Kind::ALL
            .into_iter()
            .map(|k| {
                let schema = json_schema(k);
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&schema)
                    .expect("generated schemas are valid");
                (k, Compiled { validator, schema })
            })
            .collect()
    });
    &cache[&kind]
}

/// Checks a document against the schema of `kind`.
pub fn check(kind: Kind, file: &str, doc: &Document) -> Vec<Diagnostic> {
    let c = compiled(kind);
    c.validator
        .iter_errors(&doc.value)
        .flat_map(|e| describe(c, file, doc, &e))
        .collect()
}

/// `/spec/columns/0/source` → `spec.columns[0].source`.
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    if out.is_empty() {
        "document".into()
    } else {
        out
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn type_name(kind: &TypeKind) -> String {
    let one = |t: &jsonschema::JsonType| match t.to_string().as_str() {
        "object" => "a mapping".to_string(),
        "array" => "a list".to_string(),
        "integer" => "an integer".to_string(),
        other => format!("a {other}"),
    };
    match kind {
        TypeKind::Single(t) => one(t),
        TypeKind::Multiple(ts) => ts.iter().map(|t| one(&t)).collect::<Vec<_>>().join(" or "),
    }
}

/// The property names allowed where an `additionalProperties` error was raised.
fn allowed_properties<'a>(schema: &'a Value, schema_path: &str) -> Vec<&'a str> {
    let parent = schema_path.rsplit_once('/').map_or("", |(p, _)| p);
    schema
        .pointer(parent)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|props| props.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn describe(c: &Compiled, file: &str, doc: &Document, e: &ValidationError) -> Vec<Diagnostic> {
    let pointer = e.instance_path().as_str().to_string();
    let at = field_path(&pointer);
    let pos = doc.value_pos(&pointer);
    let instance = e.instance();
    let diag = |message: String| Diagnostic::new(file, pos, message);
    let value_text = || match instance.as_ref() {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let allowed = allowed_properties(&c.schema, e.schema_path().as_str());
            unexpected
                .iter()
                .map(|name| {
                    let key = format!("{pointer}/{}", escape_pointer(name));
                    let place = if pointer.is_empty() {
                        String::new()
                    } else {
                        format!("{at}: ")
                    };
                    Diagnostic::new(
                        file,
                        doc.key_pos(&key),
                        format!("{place}unknown field {name:?}"),
                    )
                    .with_hint(
                        did_you_mean(name, allowed.iter().copied()).or_else(|| {
                            (!allowed.is_empty())
                                .then(|| format!("expected one of {}", allowed.join(", ")))
                        }),
                    )
                })
                .collect()
        }
        ValidationErrorKind::Enum { options } => {
            let names: Vec<&str> = options
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let hint = instance
                .as_str()
                .and_then(|s| did_you_mean(s, names.iter().copied()));
            vec![
                diag(format!(
                    "{at}: {} is not one of {}",
                    value_text(),
                    names.join(", ")
                ))
                .with_hint(hint),
            ]
        }
        ValidationErrorKind::Constant { expected_value } => {
            vec![diag(format!(
                "{at}: {} must be {}",
                value_text(),
                expected_value
            ))]
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            let pos = if pointer.is_empty() {
                pos
            } else {
                doc.key_pos(&pointer)
            };
            vec![Diagnostic::new(
                file,
                pos,
                format!("{at}: missing required field {name:?}"),
            )]
        }
        ValidationErrorKind::Type { kind } => vec![diag(format!(
            "{at}: expected {}, found {}",
            type_name(kind),
            json_type(instance)
        ))],
        ValidationErrorKind::Pattern { pattern } => {
            let message = match pattern.as_str() {
                Duration::PATTERN => format!(
                    "{at}: {} is not a duration: use a number and a unit, e.g. 30s, 15m, 1h, 1d",
                    value_text()
                ),
                SemVer::PATTERN => format!(
                    "{at}: {} is not a semantic version: use MAJOR.MINOR.PATCH, e.g. 1.2.0",
                    value_text()
                ),
                NAME_PATTERN => format!(
                    "{at}: {} is not a valid name: use lowercase letters, digits and '-' (a DNS-1123 label)",
                    value_text()
                ),
                ENV_PATTERN => format!(
                    "{at}: {} is not an environment variable name (letters, digits, '_')",
                    value_text()
                ),
                other => format!("{at}: {} does not match {other}", value_text()),
            };
            vec![diag(message)]
        }
        ValidationErrorKind::Minimum { limit } => {
            vec![diag(format!(
                "{at}: {} is too small: the minimum is {limit}",
                value_text()
            ))]
        }
        ValidationErrorKind::Maximum { limit } => {
            vec![diag(format!(
                "{at}: {} is too large: the maximum is {limit}",
                value_text()
            ))]
        }
        ValidationErrorKind::MinLength { .. } => vec![diag(format!("{at}: must not be empty"))],
        ValidationErrorKind::MaxLength { limit } => {
            vec![diag(format!("{at}: is longer than {limit} characters"))]
        }
        ValidationErrorKind::MinItems { limit } => {
            vec![diag(format!("{at}: needs at least {limit} item(s)"))]
        }
        ValidationErrorKind::Format { format } if format == "date-time" => vec![diag(format!(
            "{at}: {} is not an RFC 3339 timestamp (e.g. 2026-11-22T00:00:00Z)",
            value_text()
        ))],
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            // Drop the forms the value is not even of the type of (`null` for an optional
            // part); when one form is left, its errors say what is wrong, and where.
            let fitting: Vec<_> = context
                .iter()
                .filter(|form| {
                    !form.iter().any(|f| {
                        f.instance_path().as_str() == pointer
                            && matches!(f.kind(), ValidationErrorKind::Type { .. })
                    })
                })
                .collect();
            if let [form] = fitting.as_slice()
                && !form.is_empty()
            {
                return form
                    .iter()
                    .flat_map(|f| describe(c, file, doc, f))
                    .collect();
            }
            vec![diag(format!(
                "{at}: {} is not an accepted form here",
                json_type(instance)
            ))]
        }
        _ => vec![diag(format!("{at}: {}", e.masked()))],
    }
}
