//! YAML documents with positions. Parses a file (several `---` documents) with serde-saphyr
//! under an input budget, and yields for each document its JSON value plus the line and column
//! of every node and every mapping key, addressed by JSON pointer. Knows nothing of resources.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;

/// A JSON value serialized for YAML (or any serializer but serde_json's): numbers as plain
/// numbers. serde_json keeps a number's exact digits (`arbitrary_precision`, so that JSON
/// column values are exact), which only its own serializer understands: others would see a
/// private wrapper. A number that no native type holds exactly is written as a string of its
/// digits.
pub struct PlainNumbers<'a>(pub &'a Value);

impl Serialize for PlainNumbers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Number(n) => {
                let text = n.to_string();
                if let Some(i) = n.as_i64() {
                    s.serialize_i64(i)
                } else if let Some(u) = n.as_u64() {
                    s.serialize_u64(u)
                } else if let Some(f) = n
                    .as_f64()
                    .filter(|f| Number::from_f64(*f).is_some_and(|m| m.to_string() == text))
                {
                    s.serialize_f64(f)
                } else {
                    s.serialize_str(&text)
                }
            }
            Value::Array(items) => s.collect_seq(items.iter().map(PlainNumbers)),
            Value::Object(map) => s.collect_map(map.iter().map(|(k, v)| (k, PlainNumbers(v)))),
            other => other.serialize(s),
        }
    }
}

/// `#[serde(serialize_with)]` form of [`PlainNumbers`].
pub fn plain_numbers<S: Serializer>(value: &Value, s: S) -> Result<S::Ok, S::Error> {
    PlainNumbers(value).serialize(s)
}

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u64,
    pub col: u64,
}

impl From<&serde_saphyr::Location> for Pos {
    fn from(loc: &serde_saphyr::Location) -> Self {
        Pos {
            line: loc.line().max(1),
            col: loc.column().max(1),
        }
    }
}

/// One parsed document: its value and where each part of it was written.
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    /// JSON pointer of a node → where its value starts.
    values: HashMap<String, Pos>,
    /// JSON pointer of a mapping entry → where its key starts.
    keys: HashMap<String, Pos>,
}

impl Document {
    /// Where the node at `pointer` starts, or its nearest ancestor.
    pub fn value_pos(&self, pointer: &str) -> Pos {
        self.lookup(&self.values, pointer)
    }

    /// Where the key of the entry at `pointer` is written (falls back to the value).
    pub fn key_pos(&self, pointer: &str) -> Pos {
        match self.keys.get(pointer) {
            Some(pos) => *pos,
            None => self.value_pos(pointer),
        }
    }

    fn lookup(&self, table: &HashMap<String, Pos>, pointer: &str) -> Pos {
        let mut p = pointer;
        loop {
            if let Some(pos) = table.get(p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return self.values.get("").copied().unwrap_or_default(),
            }
        }
    }
}

/// A YAML syntax error or a breach of the input budget.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.pos.line, self.pos.col, self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// Limits that keep a hostile file from exhausting memory or time.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // YAML 1.2: `yes`/`no`/`on`/`off` are strings, as editors and check-jsonschema read them.
        strict_booleans: true,
        budget: serde_saphyr::budget! {
            max_depth: 64,
            flow_nesting_limit: 32,
            max_documents: 10_000,
            max_nodes: 1_000_000,
            max_aliases: 1_000,
            max_total_scalar_bytes: 32 * 1024 * 1024,
        },
    }
}

/// Parses every document of a file. Empty documents (a lone `---`) are skipped.
pub fn parse(text: &str) -> Result<Vec<Document>, SyntaxError> {
    let nodes: Vec<Option<Spanned<Node>>> =
        serde_saphyr::from_multiple_with_options(text, options()).map_err(syntax_error)?;
    Ok(nodes
        .into_iter()
        .flatten()
        .map(|node| {
            let mut doc = Document {
                value: Value::Null,
                values: HashMap::new(),
                keys: HashMap::new(),
            };
            let mut pointer = String::new();
            doc.value = flatten(node, &mut pointer, &mut doc.values, &mut doc.keys);
            doc
        })
        .collect())
}

fn syntax_error(err: serde_saphyr::Error) -> SyntaxError {
    let pos = err
        .location()
        .map(|l| Pos::from(&l))
        .unwrap_or(Pos { line: 1, col: 1 });
    // The crate's Display carries a snippet; the first line is the message itself.
    let text = err.to_string();
    let message = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid YAML")
        .trim();
    // Drop the crate's own "error: line N column M:" prefix; the position is reported apart.
    let message = message.strip_prefix("error: ").unwrap_or(message);
    let message = match message.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") && head.contains(" column ") => rest,
        _ => message,
    };
    SyntaxError {
        pos,
        message: format!("invalid YAML: {message}"),
    }
}

/// Escapes a key for a JSON pointer (RFC 6901).
pub fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn flatten(
    node: Spanned<Node>,
    pointer: &mut String,
    values: &mut HashMap<String, Pos>,
    keys: &mut HashMap<String, Pos>,
) -> Value {
    values.insert(pointer.clone(), Pos::from(&node.referenced));
    match node.value {
        Node::Scalar(v) => v,
        Node::Seq(items) => {
            let len = pointer.len();
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                pointer.push('/');
                pointer.push_str(&i.to_string());
                out.push(flatten(item, pointer, values, keys));
                pointer.truncate(len);
            }
            Value::Array(out)
        }
        Node::Map(entries) => {
            let len = pointer.len();
            let mut out = Map::with_capacity(entries.len());
            for (key, item) in entries {
                pointer.push('/');
                pointer.push_str(&escape_pointer(&key.value));
                keys.insert(pointer.clone(), Pos::from(&key.referenced));
                let v = flatten(item, pointer, values, keys);
                out.insert(key.value, v);
                pointer.truncate(len);
            }
            Value::Object(out)
        }
    }
}

/// A YAML node before positions are split off.
enum Node {
    Scalar(Value),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Number(v.into())))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Number(v.into())))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        // A number with no fraction is an integer to JSON Schema; keep it one (`500.0`, `1e3`).
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        if v.fract() == 0.0 && v.abs() < EXACT {
            return Ok(Node::Scalar(Value::Number((v as i64).into())));
        }
        Ok(Node::Scalar(
            Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Scalar(Value::String(v)))
    }

    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Scalar(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<(Spanned<String>, Spanned<Node>)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyText>>()? {
            let key = Spanned::new(key.value.0, key.referenced, key.defined);
            if entries.iter().any(|(k, _)| k.value == key.value) {
                return Err(de::Error::custom(format!("duplicate key {:?}", key.value)));
            }
            let value = map.next_value()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A mapping key: any scalar, kept as its text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar mapping key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<KeyText, E> {
                Ok(KeyText("null".into()))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_values_and_keys() {
        let docs = parse("a: 1\nb:\n  - x\n  - { c: true }\n---\n---\nz: null\n").unwrap();
        assert_eq!(docs.len(), 2);
        let d = &docs[0];
        assert_eq!(d.value["b"][1]["c"], Value::Bool(true));
        assert_eq!(d.value_pos("/a"), Pos { line: 1, col: 4 });
        assert_eq!(d.key_pos("/b"), Pos { line: 2, col: 1 });
        assert_eq!(d.value_pos("/b/0"), Pos { line: 3, col: 5 });
        assert_eq!(d.key_pos("/b/1/c"), Pos { line: 4, col: 7 });
        assert_eq!(d.value_pos("/b/1/c/missing"), Pos { line: 4, col: 10 });
    }

    #[test]
    fn syntax_error_has_a_position() {
        let err = parse("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err}");
        assert!(err.message.starts_with("invalid YAML"), "{err}");
    }

    #[test]
    fn yaml_1_2_scalars() {
        let d = &parse("a: yes\nb: on\nc: true\nd: 500.0\ne: 1e3\nf: 0.5\n").unwrap()[0];
        assert_eq!(d.value["a"], Value::String("yes".into()));
        assert_eq!(d.value["b"], Value::String("on".into()));
        assert_eq!(d.value["c"], Value::Bool(true));
        assert_eq!(d.value["d"], serde_json::json!(500));
        assert_eq!(d.value["e"], serde_json::json!(1000));
        assert_eq!(d.value["f"], serde_json::json!(0.5));
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert!(err.message.contains("duplicate"), "{err}");
    }

    #[test]
    fn nesting_budget_is_enforced() {
        let text = "[".repeat(200) + &"]".repeat(200);
        assert!(parse(&text).is_err());
    }
}
