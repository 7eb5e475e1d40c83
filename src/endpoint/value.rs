//! Typed column values shared by every engine, and the conversions between them.
//!
//! Owns: [`Value`] (one cell; decimals exact at any precision, JSON numbers with their
//! digits, [`Value::Unreadable`] for a cell no kind holds), [`ValueKind`] (the type of a
//! column, engine-neutral), [`Value::convert_to`] (the only place where one kind becomes
//! another), the plain-JSON serde form of values and the canonical key text
//! ([`key_string`]).
//!
//! Does not own: how an engine stores or binds a value (each engine file maps its native
//! types to and from these kinds), nor what a failed conversion means for a record (the
//! caller turns a [`ConvertError`] into a TransformError for that one record).
//!
//! # JSON form
//! A value serializes as plain JSON: `null`, `true`, `42`, `1.5`, `"text"`; a decimal is
//! a string (`"12.50"`, exact), bytes are `"\\x0a0b"` (PostgreSQL hex style), a date is
//! `"2026-11-22"`, a timestamp `"2026-11-22T10:15:00.123456"`, a timestamptz
//! `"2026-11-22T10:15:00.123456Z"`, a JSON document is itself. Deserializing plain JSON gives
//! back `Null`, `Bool`, `Int` (integral numbers that fit an i64), `Float` (other numbers),
//! `Text` (strings) or `Json` (arrays, objects); the column's kind restores the exact type:
//! [`key_from_json`] does `deserialize` + [`Value::convert_to`], so every key round-trips.

use std::fmt;

pub use super::decimal::{Decimal, DecimalError};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One cell of a row, engine-neutral.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Decimal(Decimal),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
    TimestampTz(DateTime<Utc>),
    Json(serde_json::Value),
    /// A cell the database holds but the reader could not turn into a value of its
    /// column's kind (a PostgreSQL `infinity` date, a MariaDB zero date, a `NaN` numeric).
    /// It travels with its row, so that record alone fails as a TransformError naming the
    /// column, while the rest of the page goes on: it converts to no kind, and no writer
    /// takes it.
    Unreadable(Box<Unreadable>),
}

/// What is known of a cell that could not be read as its column's kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    /// The kind the column is read as.
    pub kind: ValueKind,
    /// The value as the database spells it (`infinity`, `0000-00-00`), when known.
    pub text: String,
    /// Why it cannot be a value of `kind`.
    pub reason: String,
}

impl Value {
    /// An unreadable cell of a column of `kind` (see [`Value::Unreadable`]).
    pub fn unreadable(
        kind: ValueKind,
        text: impl Into<String>,
        reason: impl Into<String>,
    ) -> Value {
        Value::Unreadable(Box::new(Unreadable {
            kind,
            text: text.into(),
            reason: reason.into(),
        }))
    }
}

/// The engine-neutral type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueKind {
    Bool,
    Int,
    Decimal,
    Float,
    Text,
    Bytes,
    Date,
    Timestamp,
    TimestampTz,
    Json,
}

impl ValueKind {
    /// The lowercase name used in messages (`int`, `timestamptz`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Bool => "bool",
            ValueKind::Int => "int",
            ValueKind::Decimal => "decimal",
            ValueKind::Float => "float",
            ValueKind::Text => "text",
            ValueKind::Bytes => "bytes",
            ValueKind::Date => "date",
            ValueKind::Timestamp => "timestamp",
            ValueKind::TimestampTz => "timestamptz",
            ValueKind::Json => "json",
        }
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value that cannot be represented in the requested kind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot convert {from} value {value} to {to}: {reason}")]
pub struct ConvertError {
    /// Kind of the source value.
    pub from: ValueKind,
    /// Requested kind.
    pub to: ValueKind,
    /// The source value as JSON text, shortened to 64 characters.
    pub value: String,
    pub reason: String,
}

const TIMESTAMP_TEXT: &str = "%Y-%m-%dT%H:%M:%S%.f";

impl Value {
    /// The kind of this value; `None` for `Null`, which fits every kind.
    pub fn kind(&self) -> Option<ValueKind> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(_) => ValueKind::Bool,
            Value::Int(_) => ValueKind::Int,
            Value::Decimal(_) => ValueKind::Decimal,
            Value::Float(_) => ValueKind::Float,
            Value::Text(_) => ValueKind::Text,
            Value::Bytes(_) => ValueKind::Bytes,
            Value::Date(_) => ValueKind::Date,
            Value::Timestamp(_) => ValueKind::Timestamp,
            Value::TimestampTz(_) => ValueKind::TimestampTz,
            Value::Json(_) => ValueKind::Json,
            Value::Unreadable(u) => u.kind,
        })
    }

    /// The text of a `Text` value.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Whether this value is already of `kind` (`Null` fits every kind, an unreadable cell
    /// none).
    pub fn is_of(&self, kind: ValueKind) -> bool {
        !matches!(self, Value::Unreadable(_)) && self.kind().is_none_or(|k| k == kind)
    }

    /// [`Value::convert_to`], consuming the value: no copy when it already is of `kind`.
    pub fn into_kind(self, kind: ValueKind) -> Result<Value, ConvertError> {
        if self.is_of(kind) {
            Ok(self)
        } else {
            self.convert_to(kind)
        }
    }

    /// The value of `kind` that text `s` spells (as `Value::Text(s).convert_to(kind)`),
    /// without copying the text first.
    pub fn from_text(s: &str, kind: ValueKind) -> Result<Value, ConvertError> {
        parse_text(s, kind)
            .map_err(|reason| Value::Text(s.to_string()).convert_error(kind, &reason))
    }

    /// This value as a value of `kind`, or an error saying why it cannot be one.
    ///
    /// Lossless only: `Decimal`/`Float` → `Int` need an integral value in range, `Int`/
    /// `Decimal` → `Float` a value a double holds exactly (as its shortest decimal text),
    /// `Timestamp` → `Date` needs midnight, `Text` → anything must parse. Naive timestamps
    /// are taken as UTC. → `Text` gives the JSON form's text (bytes as `\x…` hex, which
    /// `Text` → `Bytes` reads back); a JSON document becomes its JSON text. `Null` converts
    /// to every kind.
    pub fn convert_to(&self, kind: ValueKind) -> Result<Value, ConvertError> {
        if let Value::Unreadable(u) = self {
            return Err(self.convert_error(kind, &u.reason));
        }
        let Some(from) = self.kind() else {
            return Ok(Value::Null);
        };
        if from == kind {
            return Ok(self.clone());
        }
        let fail = |reason: &str| self.convert_error(kind, reason);
        let unsupported = || fail("no conversion between these kinds");
        match (self, kind) {
            (Value::Json(j), _) => json_to(j, kind).map_err(|reason| fail(&reason)),
            (_, ValueKind::Json) => Ok(Value::Json(self.to_json_scalar(kind)?)),
            (Value::Text(s), _) => parse_text(s, kind).map_err(|reason| fail(&reason)),
            (_, ValueKind::Text) => Ok(Value::Text(self.to_text())),
            (Value::Bool(b), ValueKind::Int) => Ok(Value::Int(i64::from(*b))),
            (Value::Bool(b), ValueKind::Decimal) => {
                Ok(Value::Decimal(Decimal::from(i64::from(*b))))
            }
            (Value::Int(i), ValueKind::Bool) => match i {
                0 => Ok(Value::Bool(false)),
                1 => Ok(Value::Bool(true)),
                _ => Err(fail("only 0 and 1 are booleans")),
            },
            (Value::Int(i), ValueKind::Decimal) => Ok(Value::Decimal(Decimal::from(*i))),
            (Value::Int(i), ValueKind::Float) => match *i as f64 {
                f if f as i64 == *i && f.abs() < 2f64.powi(63) => Ok(Value::Float(f)),
                _ => Err(fail("a float cannot hold it exactly (would lose digits)")),
            },
            (Value::Decimal(d), ValueKind::Int) => decimal_to_int(d)
                .ok_or_else(|| fail("not an integer in the 64-bit range (would lose digits)")),
            (Value::Decimal(d), ValueKind::Bool) => match decimal_to_int(d) {
                Some(Value::Int(0)) => Ok(Value::Bool(false)),
                Some(Value::Int(1)) => Ok(Value::Bool(true)),
                _ => Err(fail("only 0 and 1 are booleans")),
            },
            (Value::Decimal(d), ValueKind::Float) => Some(d.to_f64())
                .filter(|f| Decimal::from_f64(*f).as_ref() == Some(d))
                .map(Value::Float)
                .ok_or_else(|| fail("a float cannot hold it exactly (would lose digits)")),
            (Value::Float(f), ValueKind::Int) => {
                if f.fract() == 0.0 && *f >= -(2f64.powi(63)) && *f < 2f64.powi(63) {
                    Ok(Value::Int(*f as i64))
                } else {
                    Err(fail(
                        "not an integer in the 64-bit range (would lose digits)",
                    ))
                }
            }
            (Value::Float(f), ValueKind::Decimal) => Decimal::from_f64(*f)
                .map(Value::Decimal)
                .ok_or_else(|| fail("not a finite number a decimal can hold")),
            (Value::Date(d), ValueKind::Timestamp) => {
                Ok(Value::Timestamp(d.and_time(NaiveTime::MIN)))
            }
            (Value::Date(d), ValueKind::TimestampTz) => {
                Ok(Value::TimestampTz(d.and_time(NaiveTime::MIN).and_utc()))
            }
            (Value::Timestamp(t), ValueKind::TimestampTz) => Ok(Value::TimestampTz(t.and_utc())),
            (Value::TimestampTz(t), ValueKind::Timestamp) => Ok(Value::Timestamp(t.naive_utc())),
            (Value::Timestamp(t), ValueKind::Date) => {
                midnight_date(*t).ok_or_else(|| fail("has a time of day"))
            }
            (Value::TimestampTz(t), ValueKind::Date) => {
                midnight_date(t.naive_utc()).ok_or_else(|| fail("has a time of day"))
            }
            _ => Err(unsupported()),
        }
    }

    /// The error saying that this value cannot be a value of `to` (or of its column), and
    /// why; the value shortened to 64 characters.
    pub fn convert_error(&self, to: ValueKind, reason: &str) -> ConvertError {
        let mut value = serde_json::to_string(self).unwrap_or_default();
        if value.chars().count() > 64 {
            value = value.chars().take(61).collect::<String>() + "...";
        }
        ConvertError {
            from: self.kind().unwrap_or(to),
            to,
            value,
            reason: reason.to_string(),
        }
    }

    /// Text form used for `→ Text` conversions: the JSON form without the quotes, except
    /// that a JSON document is its JSON text.
    fn to_text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Json(j) => j.to_string(),
            other => match serde_json::to_value(other) {
                Ok(serde_json::Value::String(s)) => s,
                Ok(v) => v.to_string(),
                Err(_) => String::new(),
            },
        }
    }

    fn to_json_scalar(&self, to: ValueKind) -> Result<serde_json::Value, ConvertError> {
        match self {
            Value::Bool(b) => Ok((*b).into()),
            Value::Int(i) => Ok((*i).into()),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .ok_or_else(|| self.convert_error(to, "not a finite number")),
            // Exact: serde_json keeps a number's digits (`arbitrary_precision`).
            Value::Decimal(d) => serde_json::from_str(&d.to_string())
                .map_err(|e| self.convert_error(to, &e.to_string())),
            Value::Text(s) => serde_json::from_str(s)
                .map_err(|e| self.convert_error(to, &format!("not valid JSON: {e}"))),
            other => {
                serde_json::to_value(other).map_err(|e| self.convert_error(to, &e.to_string()))
            }
        }
    }
}

fn decimal_to_int(d: &Decimal) -> Option<Value> {
    d.to_i64().map(Value::Int)
}

fn midnight_date(t: NaiveDateTime) -> Option<Value> {
    (t.time() == NaiveTime::MIN).then(|| Value::Date(t.date()))
}

fn json_to(j: &serde_json::Value, kind: ValueKind) -> Result<Value, String> {
    let scalar = match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => number_value(n),
        serde_json::Value::String(s) if kind != ValueKind::Text => Value::Text(s.clone()),
        _ if kind == ValueKind::Text => return Ok(Value::Text(j.to_string())),
        _ => return Err("a JSON array or object is not a scalar".to_string()),
    };
    scalar.convert_to(kind).map_err(|e| e.reason)
}

/// A JSON number exactly: an `Int` when it is one, otherwise a `Decimal` of its digits (which
/// converts to `Float` only when a double holds it exactly).
fn number_value(n: &serde_json::Number) -> Value {
    match n.as_i64() {
        Some(i) => Value::Int(i),
        None => match n.to_string().parse::<Decimal>() {
            Ok(d) => Value::Decimal(d),
            Err(_) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
    }
}

const BOOL_TRUE: &[&str] = &["true", "t", "1", "yes", "y", "on"];
const BOOL_FALSE: &[&str] = &["false", "f", "0", "no", "n", "off"];

fn parse_text(s: &str, kind: ValueKind) -> Result<Value, String> {
    let t = s.trim();
    match kind {
        ValueKind::Text => Ok(Value::Text(s.to_string())),
        ValueKind::Bool => {
            let lower = t.to_ascii_lowercase();
            if BOOL_TRUE.contains(&lower.as_str()) {
                Ok(Value::Bool(true))
            } else if BOOL_FALSE.contains(&lower.as_str()) {
                Ok(Value::Bool(false))
            } else {
                Err("not a boolean (true/false, t/f, 1/0, yes/no)".to_string())
            }
        }
        ValueKind::Int => t.parse::<i64>().map(Value::Int).map_err(|e| e.to_string()),
        ValueKind::Decimal => t
            .parse::<Decimal>()
            .map(Value::Decimal)
            .map_err(|e| e.to_string()),
        ValueKind::Float => t
            .parse::<f64>()
            .map(Value::Float)
            .map_err(|e| e.to_string()),
        ValueKind::Bytes => match t.strip_prefix("\\x") {
            Some(h) => hex::decode(h).map(Value::Bytes).map_err(|e| e.to_string()),
            None => Ok(Value::Bytes(s.as_bytes().to_vec())),
        },
        ValueKind::Date => fast_date(t.as_bytes())
            .ok_or(())
            .or_else(|_| NaiveDate::parse_from_str(t, "%Y-%m-%d"))
            .map(Value::Date)
            .or_else(|_| match parse_timestamp(t) {
                Some(ts) => midnight_date(ts.naive_utc()).ok_or(()),
                None => Err(()),
            })
            .map_err(|_| "not a date (YYYY-MM-DD)".to_string()),
        ValueKind::Timestamp => parse_timestamp(t)
            .map(|ts| Value::Timestamp(ts.naive_utc()))
            .ok_or_else(|| "not a timestamp (YYYY-MM-DD HH:MM:SS[.ffffff])".to_string()),
        ValueKind::TimestampTz => parse_timestamp(t)
            .map(Value::TimestampTz)
            .ok_or_else(|| "not a timestamp (RFC 3339)".to_string()),
        ValueKind::Json => serde_json::from_str(t)
            .map(Value::Json)
            .map_err(|e| format!("not valid JSON: {e}")),
    }
}

/// Parses the timestamp spellings the three engines produce; text without an offset is UTC.
fn parse_timestamp(t: &str) -> Option<DateTime<Utc>> {
    if let Some((naive, offset)) = fast_timestamp(t) {
        return Some(naive.and_utc() - chrono::TimeDelta::seconds(offset.unwrap_or(0).into()));
    }
    if let Ok(ts) = DateTime::parse_from_rfc3339(t) {
        return Some(ts.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(ts) = DateTime::parse_from_str(t, fmt) {
            return Some(ts.with_timezone(&Utc));
        }
    }
    for fmt in [
        TIMESTAMP_TEXT,
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(ts) = NaiveDateTime::parse_from_str(t, fmt) {
            return Some(ts.and_utc());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .map(|d| d.and_time(NaiveTime::MIN).and_utc())
}

/// The number the ASCII digits `b` spell, if they all are digits.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// `YYYY-MM-DD` exactly, without a format string (the common case; others go to chrono).
fn fast_date(b: &[u8]) -> Option<NaiveDate> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(
        digits(&b[..4])? as i32,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )
}

/// `YYYY-MM-DD[ T]HH:MM:SS[.f…][Z|±HH[:MM]]` without a format string: the naive time as
/// written and the offset in seconds, if any. `None` for anything else (chrono decides).
fn fast_timestamp(t: &str) -> Option<(NaiveDateTime, Option<i32>)> {
    let b = t.as_bytes();
    if b.len() < 19 || !matches!(b[10], b' ' | b'T') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = fast_date(&b[..10])?;
    let (h, mi, sec) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let mut i = 19;
    let mut nanos = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits(&b[start..i])? * 10u32.pow((9 - n) as u32);
    }
    let offset = match &b[i..] {
        [] => None,
        [b'Z'] => Some(0),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (hh, mm) = match rest {
                [h1, h2] => (digits(&[*h1, *h2])?, 0),
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => {
                    (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?)
                }
                _ => return None,
            };
            if hh > 23 || mm > 59 {
                return None;
            }
            let secs = (hh * 3600 + mm * 60) as i32;
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => return None,
    };
    let time = NaiveTime::from_hms_nano_opt(h, mi, sec, nanos)?;
    Some((date.and_time(time), offset))
}

/// `YYYY-MM-DD`, as chrono's `%Y-%m-%d` writes it, without a format string.
pub(crate) fn format_date(d: NaiveDate) -> String {
    use chrono::Datelike;
    if !(0..=9999).contains(&d.year()) {
        return d.format("%Y-%m-%d").to_string();
    }
    let mut out = String::with_capacity(10);
    push_date(&mut out, d);
    out
}

fn push_date(out: &mut String, d: NaiveDate) {
    use chrono::Datelike;
    use std::fmt::Write;
    let _ = write!(out, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day());
}

/// `YYYY-MM-DD{sep}HH:MM:SS[.fff|.ffffff|.fffffffff]{suffix}`, as chrono's
/// `%Y-%m-%d{sep}%H:%M:%S%.f{suffix}` writes it, without a format string.
pub(crate) fn format_timestamp(t: NaiveDateTime, sep: char, suffix: &str) -> String {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write;
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&t.year()) || nanos >= 1_000_000_000 {
        let fmt = format!("%Y-%m-%d{sep}%H:%M:%S%.f{suffix}");
        return t.format(&fmt).to_string();
    }
    let mut out = String::with_capacity(32);
    push_date(&mut out, t.date());
    let _ = write!(
        out,
        "{sep}{:02}:{:02}:{:02}",
        t.hour(),
        t.minute(),
        t.second()
    );
    if nanos != 0 {
        let _ = if nanos.is_multiple_of(1_000_000) {
            write!(out, ".{:03}", nanos / 1_000_000)
        } else if nanos.is_multiple_of(1_000) {
            write!(out, ".{:06}", nanos / 1_000)
        } else {
            write!(out, ".{nanos:09}")
        };
    }
    out.push_str(suffix);
    out
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Decimal(d) => s.serialize_str(&d.to_string()),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Text(t) => s.serialize_str(t),
            Value::Bytes(b) => s.serialize_str(&format!("\\x{}", hex::encode(b))),
            Value::Date(d) => s.serialize_str(&format_date(*d)),
            Value::Timestamp(t) => s.serialize_str(&format_timestamp(*t, 'T', "")),
            Value::TimestampTz(t) => s.serialize_str(&format_timestamp(t.naive_utc(), 'T', "Z")),
            Value::Json(j) => j.serialize(s),
            Value::Unreadable(u) => s.serialize_str(&u.text),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match serde_json::Value::deserialize(d)? {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => number_value(&n),
            serde_json::Value::String(s) => Value::Text(s),
            other => Value::Json(other),
        })
    }
}

/// The canonical text of a key: a JSON array in key-column order, with decimals
/// normalized (`12.50` and `12.5` are the same key). Stable across releases; used to compare
/// and index keys.
pub fn key_string(key: &[Value]) -> String {
    if !key.iter().any(|v| matches!(v, Value::Decimal(_))) {
        return serde_json::to_string(key).unwrap_or_default();
    }
    let normalized: Vec<Value> = key
        .iter()
        .map(|v| match v {
            Value::Decimal(d) => Value::Decimal(d.normalize()),
            other => other.clone(),
        })
        .collect();
    serde_json::to_string(&normalized).unwrap_or_default()
}

/// The JSON array text stored for a key (see the module docs for the form).
pub fn key_to_json(key: &[Value]) -> String {
    serde_json::to_string(key).unwrap_or_default()
}

/// Reads a key stored by [`key_to_json`] (or written by a capture trigger) back into typed
/// values, one kind per key column.
pub fn key_from_json(text: &str, kinds: &[ValueKind]) -> Result<Vec<Value>, ConvertError> {
    let bad = |reason: String| ConvertError {
        from: ValueKind::Json,
        to: ValueKind::Json,
        value: text.chars().take(64).collect(),
        reason,
    };
    let values: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| bad(format!("not a JSON array of key values: {e}")))?;
    if values.len() != kinds.len() {
        return Err(bad(format!(
            "the key has {} values, the table's primary key {} columns",
            values.len(),
            kinds.len()
        )));
    }
    values
        .iter()
        .zip(kinds)
        .map(|(v, k)| v.convert_to(*k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    #[test]
    fn numeric_conversions_are_lossless_or_fail() {
        assert_eq!(
            Value::Int(7).convert_to(ValueKind::Decimal),
            Ok(Value::Decimal(Decimal::from(7i64)))
        );
        let d: Decimal = "12.00".parse().unwrap();
        assert_eq!(
            Value::Decimal(d).convert_to(ValueKind::Int),
            Ok(Value::Int(12))
        );
        let err = Value::Decimal("12.5".parse().unwrap())
            .convert_to(ValueKind::Int)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot convert decimal value \"12.5\" to int: not an integer in the 64-bit range (would lose digits)"
        );
        assert_eq!(
            Value::Float(0.1).convert_to(ValueKind::Decimal),
            Ok(Value::Decimal("0.1".parse().unwrap()))
        );
        assert!(Value::Float(1.5).convert_to(ValueKind::Int).is_err());
        assert!(
            Value::Int((1 << 53) + 1)
                .convert_to(ValueKind::Float)
                .is_err()
        );
        assert_eq!(
            Value::Int(1 << 53).convert_to(ValueKind::Float),
            Ok(Value::Float(2f64.powi(53)))
        );
        let long: Decimal = "0.12345678901234567890".parse().unwrap();
        assert!(Value::Decimal(long).convert_to(ValueKind::Float).is_err());
        assert_eq!(
            Value::Decimal("2.50".parse().unwrap()).convert_to(ValueKind::Float),
            Ok(Value::Float(2.5))
        );
    }

    #[test]
    fn text_parses_into_every_kind_or_says_why_not() {
        assert_eq!(
            Value::Text(" 42 ".into()).convert_to(ValueKind::Int),
            Ok(Value::Int(42))
        );
        let err = Value::Text("abc".into())
            .convert_to(ValueKind::Int)
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot convert text value \"abc\" to int"),
            "{err}"
        );
        assert_eq!(
            Value::Text("t".into()).convert_to(ValueKind::Bool),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            Value::Text("2026-11-22 10:15:00.000000".into()).convert_to(ValueKind::Timestamp),
            Ok(Value::Timestamp(ts("2026-11-22 10:15:00")))
        );
        assert_eq!(
            Value::Text("2026-11-22T10:15:00+01:00".into()).convert_to(ValueKind::TimestampTz),
            Ok(Value::TimestampTz(ts("2026-11-22 09:15:00").and_utc()))
        );
        assert_eq!(
            Value::Text("\\x0aff".into()).convert_to(ValueKind::Bytes),
            Ok(Value::Bytes(vec![10, 255]))
        );
        assert_eq!(
            Value::Text("{\"a\":1}".into()).convert_to(ValueKind::Json),
            Ok(Value::Json(serde_json::json!({"a": 1})))
        );
    }

    #[test]
    fn fast_date_and_timestamp_paths_agree_with_chrono() {
        for text in [
            "2026-11-22 10:15:00",
            "2026-11-22T10:15:00.5",
            "2026-11-22 10:15:00.123456",
            "2026-11-22 10:15:00.123456789",
            "2026-11-22T10:15:00Z",
            "2026-11-22T10:15:00.25+01:00",
            "2026-11-22 10:15:00-0530",
            "2026-11-22 10:15:00+02",
        ] {
            let fast = fast_timestamp(text).expect(text);
            let fast = fast.0.and_utc() - chrono::TimeDelta::seconds(fast.1.unwrap_or(0).into());
            let slow = DateTime::parse_from_rfc3339(text)
                .ok()
                .or_else(|| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z").ok())
                .map(|t| t.with_timezone(&Utc))
                .or_else(|| {
                    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f")
                        .or_else(|_| NaiveDateTime::parse_from_str(text, TIMESTAMP_TEXT))
                        .ok()
                        .map(|t| t.and_utc())
                })
                .expect(text);
            assert_eq!(fast, slow, "{text}");
            assert_eq!(
                format_timestamp(fast.naive_utc(), ' ', ""),
                fast.naive_utc().format("%Y-%m-%d %H:%M:%S%.f").to_string()
            );
        }
        for bad in [
            "2026-13-01 00:00:00",
            "2026-11-22 25:00:00",
            "2026-11-22 10:15",
            "x",
        ] {
            assert!(fast_timestamp(bad).is_none(), "{bad}");
        }
        let d = NaiveDate::from_ymd_opt(7, 3, 9).unwrap();
        assert_eq!(format_date(d), d.format("%Y-%m-%d").to_string());
        assert_eq!(
            fast_date(b"2024-02-29"),
            NaiveDate::from_ymd_opt(2024, 2, 29)
        );
        assert_eq!(fast_date(b"2023-02-29"), None);
    }

    #[test]
    fn bool_int_and_timestamps_convert_both_ways() {
        assert_eq!(
            Value::Bool(true).convert_to(ValueKind::Int),
            Ok(Value::Int(1))
        );
        assert_eq!(
            Value::Int(0).convert_to(ValueKind::Bool),
            Ok(Value::Bool(false))
        );
        assert!(Value::Int(2).convert_to(ValueKind::Bool).is_err());
        let t = ts("2026-11-22 10:15:00.123456");
        assert_eq!(
            Value::Timestamp(t).convert_to(ValueKind::TimestampTz),
            Ok(Value::TimestampTz(t.and_utc()))
        );
        assert_eq!(
            Value::TimestampTz(t.and_utc()).convert_to(ValueKind::Timestamp),
            Ok(Value::Timestamp(t))
        );
        assert!(Value::Timestamp(t).convert_to(ValueKind::Date).is_err());
        assert_eq!(
            Value::Json(serde_json::json!([1, 2])).convert_to(ValueKind::Text),
            Ok(Value::Text("[1,2]".into()))
        );
        assert_eq!(Value::Null.convert_to(ValueKind::Int), Ok(Value::Null));
    }

    #[test]
    fn keys_round_trip_through_json_with_their_kinds() {
        let key = vec![
            Value::Int(-5),
            Value::Text("C-17".into()),
            Value::Decimal("12.50".parse().unwrap()),
            Value::Bytes(vec![0, 1, 254]),
            Value::Date(NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()),
            Value::Timestamp(ts("2026-11-22 10:15:00.5")),
            Value::TimestampTz(ts("2026-11-22 10:15:00.000001").and_utc()),
            Value::Bool(true),
            Value::Float(2.5),
        ];
        let kinds: Vec<ValueKind> = key.iter().map(|v| v.kind().unwrap()).collect();
        let text = key_to_json(&key);
        assert_eq!(key_from_json(&text, &kinds).unwrap(), key);
        assert_eq!(
            key_string(&[Value::Decimal("12.50".parse().unwrap())]),
            key_string(&[Value::Decimal("12.5".parse().unwrap())])
        );
        assert_eq!(
            key_string(&[Value::Int(1), Value::Text("a".into())]),
            r#"[1,"a"]"#
        );
    }
}
