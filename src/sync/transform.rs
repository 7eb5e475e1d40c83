//! Column mapping for one direction of a map: which columns to read on the side data comes
//! from, and how each target column gets its value (a renamed column, through a `valueMap`,
//! or a constant `default`). Pure: no I/O.

use std::collections::HashMap;

use crate::config::{ColumnMap, Direction, Scalar, TableMap};
use crate::endpoint::{CopyValue, Row, TableInfo, Value, ValueKind};

/// One way data flows in a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Way {
    SourceToDestination,
    DestinationToSource,
}

impl Way {
    pub fn name(self) -> &'static str {
        match self {
            Way::SourceToDestination => "SourceToDestination",
            Way::DestinationToSource => "DestinationToSource",
        }
    }

    /// The ways a map's direction syncs, the source side first.
    pub fn of(direction: Direction) -> Vec<Way> {
        match direction {
            Direction::SourceToDestination => vec![Way::SourceToDestination],
            Direction::DestinationToSource => vec![Way::DestinationToSource],
            Direction::Bidirectional => vec![Way::SourceToDestination, Way::DestinationToSource],
        }
    }

    fn allows(self, column: Option<Direction>) -> bool {
        match column {
            None | Some(Direction::Bidirectional) => true,
            Some(Direction::SourceToDestination) => self == Way::SourceToDestination,
            Some(Direction::DestinationToSource) => self == Way::DestinationToSource,
        }
    }
}

#[derive(Clone, Debug)]
enum Expr {
    /// The value read at this index, optionally through a value map.
    Column {
        index: usize,
        value_map: Option<ValueMap>,
    },
    Constant(Value),
}

/// A value a `valueMap` has no entry for (its text, as the map is keyed).
#[derive(Debug)]
struct NoEntry(String);

/// A `valueMap` of one way: values are looked up by their text (`value_text`), integers and
/// text without making that text (the everyday option set: a code per integer or name).
#[derive(Clone, Debug)]
struct ValueMap {
    by_text: HashMap<String, Value>,
    /// The entries whose text is an integer as `value_text` writes one.
    by_int: HashMap<i64, Value>,
}

impl ValueMap {
    fn new(by_text: HashMap<String, Value>) -> ValueMap {
        let by_int = by_text
            .iter()
            .filter_map(|(text, to)| {
                let i: i64 = text.parse().ok()?;
                (i.to_string() == *text).then(|| (i, to.clone()))
            })
            .collect();
        ValueMap { by_text, by_int }
    }

    /// What `v` maps to; `Ok(None)` for NULL.
    fn get(&self, v: &Value) -> Result<Option<&Value>, NoEntry> {
        let found = match v {
            Value::Null => return Ok(None),
            Value::Int(i) => self.by_int.get(i),
            Value::Text(t) => self.by_text.get(t.as_str()),
            other => {
                let text = value_text(other).unwrap_or_default();
                return self.by_text.get(&text).map(Some).ok_or(NoEntry(text));
            }
        };
        found
            .map(Some)
            .ok_or_else(|| NoEntry(value_text(v).unwrap_or_default()))
    }

    /// The arms of an in-database `CASE` over a source column of `from` kind, each target
    /// value converted to `to`; `None` when the source kind is not compared exactly there
    /// (only integers and text are) or a target value does not convert.
    fn arms(&self, from: ValueKind, to: ValueKind) -> Option<Vec<(Value, Value)>> {
        let mut arms: Vec<(Value, Value)> = match from {
            ValueKind::Int => self
                .by_int
                .iter()
                .map(|(i, v)| Some((Value::Int(*i), v.convert_to(to).ok()?)))
                .collect::<Option<_>>()?,
            ValueKind::Text => self
                .by_text
                .iter()
                .map(|(t, v)| Some((Value::Text(t.clone()), v.convert_to(to).ok()?)))
                .collect::<Option<_>>()?,
            _ => return None,
        };
        // One order, so the statement is the same text every page (prepared once).
        arms.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
        Some(arms)
    }
}

/// The compiled mapping of one way.
#[derive(Clone, Debug)]
pub struct Flow {
    pub way: Way,
    /// Columns read on the side data comes from; the key columns first, in key order.
    pub read_columns: Vec<String>,
    /// Key columns on the side data comes from, in that table's primary-key order.
    pub from_key: Vec<String>,
    /// Columns written on the target side; the key columns first, matching `from_key`.
    pub write_columns: Vec<String>,
    pub to_key: Vec<String>,
    exprs: Vec<Expr>,
}

fn scalar_value(s: &Scalar) -> Value {
    match s {
        Scalar::Bool(b) => Value::Bool(*b),
        Scalar::Int(i) => Value::Int(*i),
        Scalar::Float(f) => Value::Float(*f),
        Scalar::Text(t) => Value::Text(t.clone()),
    }
}

/// The text a value is looked up by in a `valueMap`.
fn value_text(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Decimal(d) => d.normalize().to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(t) => t.clone(),
        other => format!("{other:?}"),
    })
}

/// A way of a map that does not fit its tables: a schema problem, worded for the user, on
/// the side data comes from (`reading`) or the side it is written to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct MappingError {
    pub reading: bool,
    pub message: String,
}

impl Flow {
    /// Compiles one way of a map against the two tables' descriptions. Errors are schema
    /// problems (a mapped column or the key missing).
    pub fn compile(
        map: &TableMap,
        way: Way,
        from: &TableInfo,
        to: &TableInfo,
    ) -> Result<Flow, MappingError> {
        let pick = |c: &ColumnMap| -> (Option<String>, Option<String>) {
            match way {
                Way::SourceToDestination => (c.source.clone(), c.destination.clone()),
                Way::DestinationToSource => (c.destination.clone(), c.source.clone()),
            }
        };
        let (from_side, to_side) = match way {
            Way::SourceToDestination => ("source", "destination"),
            Way::DestinationToSource => ("destination", "source"),
        };
        // Key columns, in the from-table's primary-key order.
        let keys: Vec<(String, String)> = map
            .spec
            .columns
            .iter()
            .filter(|c| c.key)
            .filter_map(|c| match pick(c) {
                (Some(f), Some(t)) => Some((f, t)),
                _ => None,
            })
            .collect();
        let mut key_names: Vec<&String> = keys.iter().map(|(f, _)| f).collect();
        key_names.sort();
        let mut pk: Vec<&String> = from.primary_key.iter().collect();
        pk.sort();
        if key_names != pk {
            return Err(MappingError {
                reading: true,
                message: format!(
                    "the key columns ({}) are not the primary key of the {from_side} table ({})",
                    keys.iter()
                        .map(|(f, _)| f.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    from.primary_key.join(", ")
                ),
            });
        }
        let ordered: Vec<(String, String)> = from
            .primary_key
            .iter()
            .map(|k| {
                keys.iter()
                    .find(|(f, _)| f == k)
                    .cloned()
                    .expect("checked above")
            })
            .collect();
        let mut read_columns: Vec<String> = ordered.iter().map(|(f, _)| f.clone()).collect();
        let mut write_columns: Vec<String> = ordered.iter().map(|(_, t)| t.clone()).collect();
        let mut exprs: Vec<Expr> = (0..ordered.len())
            .map(|i| Expr::Column {
                index: i,
                value_map: None,
            })
            .collect();
        for c in map
            .spec
            .columns
            .iter()
            .filter(|c| !c.key && way.allows(c.direction))
        {
            let (f, t) = pick(c);
            let Some(t) = t else { continue };
            let expr = match f {
                Some(f) => {
                    let value_map = c.value_map.as_ref().map(|vm| {
                        ValueMap::new(match way {
                            Way::SourceToDestination => vm
                                .iter()
                                .map(|(k, v)| (k.clone(), scalar_value(v)))
                                .collect(),
                            Way::DestinationToSource => vm
                                .iter()
                                .map(|(k, v)| (v.to_string(), Value::Text(k.clone())))
                                .collect(),
                        })
                    });
                    read_columns.push(f);
                    Expr::Column {
                        index: read_columns.len() - 1,
                        value_map,
                    }
                }
                None => match &c.default {
                    Some(d) => Expr::Constant(scalar_value(d)),
                    None => continue,
                },
            };
            write_columns.push(t);
            exprs.push(expr);
        }
        for c in &read_columns {
            if from.column(c).is_none() {
                return Err(MappingError {
                    reading: true,
                    message: format!("column {c} does not exist in the {from_side} table"),
                });
            }
        }
        for c in &write_columns {
            if to.column(c).is_none() {
                return Err(MappingError {
                    reading: false,
                    message: format!("column {c} does not exist in the {to_side} table"),
                });
            }
        }
        Ok(Flow {
            way,
            from_key: ordered.iter().map(|(f, _)| f.clone()).collect(),
            to_key: ordered.into_iter().map(|(_, t)| t).collect(),
            read_columns,
            write_columns,
            exprs,
        })
    }

    /// The target row for a row read with `read_columns`, or a TransformError message.
    pub fn apply(&self, row: &Row) -> Result<Row, String> {
        self.exprs
            .iter()
            .zip(&self.write_columns)
            .map(|(expr, target)| match expr {
                Expr::Constant(v) => Ok(v.clone()),
                Expr::Column {
                    index,
                    value_map: None,
                } => Ok(row[*index].clone()),
                Expr::Column {
                    index,
                    value_map: Some(vm),
                } => match vm.get(&row[*index]) {
                    Ok(found) => Ok(found.cloned().unwrap_or(Value::Null)),
                    Err(NoEntry(text)) => Err(format!(
                        "column {target}: value {text:?} has no entry in the valueMap"
                    )),
                },
            })
            .collect()
    }

    /// Whether the mapping writes the columns read, in order, unchanged (no value map, no
    /// constant): a row read is then the row written, once converted.
    pub fn is_identity(&self) -> bool {
        self.exprs.len() == self.read_columns.len()
            && self
                .exprs
                .iter()
                .enumerate()
                .all(|(i, e)| matches!(e, Expr::Column { index, value_map: None } if *index == i))
    }

    /// What each target column gets in an in-database copy, when the target can take every
    /// value as the source stores it: a source column of the same kind on both sides, one
    /// through a `valueMap` over integers or text ([`CopyValue::Mapped`]), or a constant
    /// that converts to its column's kind. `None` when any value needs converting in Rust
    /// (a kind change).
    pub fn copy_values(&self, from: &TableInfo, to: &TableInfo) -> Option<Vec<CopyValue>> {
        self.exprs
            .iter()
            .zip(&self.write_columns)
            .map(|(expr, target)| {
                let kind = to.column(target)?.kind;
                match expr {
                    Expr::Column {
                        index,
                        value_map: None,
                    } => {
                        let source = &self.read_columns[*index];
                        (from.column(source)?.kind == kind)
                            .then(|| CopyValue::Column(source.clone()))
                    }
                    Expr::Column {
                        index,
                        value_map: Some(vm),
                    } => {
                        let source = &self.read_columns[*index];
                        Some(CopyValue::Mapped {
                            column: source.clone(),
                            arms: vm.arms(from.column(source)?.kind, kind)?,
                        })
                    }
                    Expr::Constant(v) => v.convert_to(kind).ok().map(CopyValue::Constant),
                }
            })
            .collect()
    }

    /// The key part of a row read with `read_columns`.
    pub fn key_of<'a>(&self, row: &'a Row) -> &'a [Value] {
        &row[..self.from_key.len()]
    }
}

/// A key as the user reads it: `{"account_no": "C-17"}`.
pub fn key_json(columns: &[String], key: &[Value]) -> String {
    let obj: serde_json::Map<String, serde_json::Value> = columns
        .iter()
        .zip(key)
        .map(|(c, v)| {
            (
                c.clone(),
                serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect();
    serde_json::Value::Object(obj).to_string()
}

/// A row as JSON, for errored records.
pub fn row_json(columns: &[String], row: &[Value]) -> String {
    key_json(columns, row)
}
