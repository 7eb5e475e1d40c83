//! The deciding half of a verify: candidate differences from the merge, read again by key
//! on both sides (after a pause, several times, when another process drives the map), so
//! only what stays different is counted, shown and repaired. A repair writes the rows just
//! re-read, in batches through `Endpoint::write_batch` (idempotent, echo-suppressed, fenced).

use std::collections::{HashMap, HashSet};

use crate::endpoint::{Row, TableInfo, Value, WriteOp, key_string};
use crate::sync::transform::key_json;

use super::result::{Difference, DifferenceKind, VerifyResult};
use super::{Compare, Options, RECHECK_BATCH, VerifyError};

/// Operations per repair transaction.
const REPAIR_BATCH: usize = 1_000;

/// A difference a re-read confirmed.
struct Confirmed {
    kind: DifferenceKind,
    key: Vec<Value>,
    expected: Option<Result<Row, String>>,
    found: Option<Row>,
}

/// Collects candidates and confirms them in batches.
pub(crate) struct Checker<'c, 'r> {
    compare: &'c Compare<'c>,
    options: &'c Options,
    result: &'r mut VerifyResult,
    pending: Vec<Vec<Value>>,
    /// The keys of `pending`, and of the batch before it: a key the merge yields twice (a
    /// row without its partner on each side where the databases order keys differently
    /// from us) is checked once, also across a batch boundary.
    seen: HashSet<String>,
    seen_before: HashSet<String>,
}

impl<'c, 'r> Checker<'c, 'r> {
    pub fn new(
        compare: &'c Compare<'c>,
        options: &'c Options,
        result: &'r mut VerifyResult,
    ) -> Self {
        Checker {
            compare,
            options,
            result,
            pending: Vec::new(),
            seen: HashSet::new(),
            seen_before: HashSet::new(),
        }
    }

    /// A target-kind key that may differ.
    pub async fn candidate(&mut self, key: Vec<Value>) -> Result<(), VerifyError> {
        let text = key_string(&key);
        if !self.seen_before.contains(&text) && self.seen.insert(text) {
            self.pending.push(key);
        }
        if self.pending.len() >= RECHECK_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    /// A row of the side data comes from whose key the target's key columns cannot hold:
    /// it can never arrive. Counted as missing, with the reason; never repaired.
    pub fn unkeyed(&mut self, source_key: &[Value], reason: &str) {
        let c = self.compare;
        self.record(
            Confirmed {
                kind: DifferenceKind::Missing,
                key: source_key.to_vec(),
                expected: Some(Err(reason.to_string())),
                found: None,
            },
            &c.flow.from_key,
        );
    }

    pub fn rows(&mut self, from: u64, to: u64) {
        let (source, destination) = match self.compare.from.side {
            crate::config::Side::Source => (from, to),
            crate::config::Side::Destination => (to, from),
        };
        self.result.source_rows = source;
        self.result.destination_rows = destination;
    }

    /// Confirms (and repairs) what is still pending.
    pub async fn finish(mut self) -> Result<(), VerifyError> {
        self.flush().await?;
        self.result.equal = self.result.counts.total() == 0;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), VerifyError> {
        let mut keys = std::mem::take(&mut self.pending);
        self.seen_before = std::mem::take(&mut self.seen);
        self.result.rechecked += keys.len() as u64;
        let rounds = if self.options.live {
            self.options.rounds.max(1)
        } else {
            1
        };
        let mut confirmed = Vec::new();
        for round in 0..rounds {
            if keys.is_empty() {
                break;
            }
            if self.options.live {
                tokio::time::sleep(self.options.settle).await;
            }
            confirmed = self.reread(&keys).await?;
            if round + 1 < rounds {
                keys = confirmed.iter().map(|d| d.key.clone()).collect();
            }
        }
        if self.options.repair.is_some() {
            self.repair(&confirmed).await?;
        }
        let to_key = &self.compare.flow.to_key;
        for d in confirmed {
            self.record(d, to_key);
        }
        Ok(())
    }

    /// Reads `keys` on both sides now and returns those that differ.
    async fn reread(&self, keys: &[Vec<Value>]) -> Result<Vec<Confirmed>, VerifyError> {
        let c = self.compare;
        let flow = c.flow;
        let source_keys: Vec<Vec<Value>> = keys
            .iter()
            .filter_map(|k| {
                TableInfo::convert_with(&flow.from_key, &c.from_key_kinds, k.clone()).ok()
            })
            .collect();
        let from_rows = c
            .from
            .ep
            .fetch_rows(
                &c.from.table,
                &flow.read_columns,
                &flow.from_key,
                &source_keys,
            )
            .await
            .map_err(|e| c.from.failure(e))?;
        let mut expected: HashMap<String, Result<Row, String>> = HashMap::new();
        for row in from_rows {
            if let (Ok(key), target) = c.expected(row) {
                expected.insert(key_string(&key), target);
            }
        }
        let to_rows =
            c.to.ep
                .fetch_rows(&c.to.table, &flow.write_columns, &flow.to_key, keys)
                .await
                .map_err(|e| c.to.failure(e))?;
        let key_len = flow.to_key.len();
        let mut found: HashMap<String, Row> = to_rows
            .into_iter()
            .map(|row| (key_string(&row[..key_len]), row))
            .collect();
        let mut differ = Vec::new();
        for key in keys {
            let text = key_string(key);
            let (e, f) = (expected.remove(&text), found.remove(&text));
            let kind = match (&e, &f) {
                (None, None) => continue,
                (Some(_), None) => DifferenceKind::Missing,
                (None, Some(_)) => DifferenceKind::Extra,
                (Some(Ok(e)), Some(f)) if e == f => continue,
                (Some(_), Some(_)) => DifferenceKind::Different,
            };
            differ.push(Confirmed {
                kind,
                key: key.clone(),
                expected: e,
                found: f,
            });
        }
        Ok(differ)
    }

    /// Writes `confirmed` to the target: the expected row for a missing or different key,
    /// a delete for an extra one. A row that cannot be transformed is skipped (counted).
    async fn repair(&mut self, confirmed: &[Confirmed]) -> Result<(), VerifyError> {
        let c = self.compare;
        let mut ops = Vec::with_capacity(confirmed.len());
        let repaired = self.result.repaired.get_or_insert_with(Default::default);
        for d in confirmed {
            match (&d.kind, &d.expected) {
                (DifferenceKind::Extra, _) => {
                    ops.push(WriteOp::Delete(d.key.clone()));
                    repaired.deleted += 1;
                }
                (_, Some(Ok(row))) => {
                    ops.push(WriteOp::Upsert(row.clone()));
                    repaired.upserted += 1;
                }
                _ => repaired.skipped += 1,
            }
        }
        for batch in ops.chunks(REPAIR_BATCH) {
            c.to.ep
                .write_batch(
                    &c.to.table,
                    &c.flow.write_columns,
                    &c.flow.to_key,
                    batch,
                    self.options.repair.as_ref(),
                )
                .await
                .map_err(|source| VerifyError::Repair {
                    endpoint: c.to.endpoint.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Counts a confirmed difference and keeps it with its values while under the limit.
    fn record(&mut self, d: Confirmed, key_columns: &[String]) {
        self.result.counts.add(d.kind);
        if self.result.differences.len() >= self.options.limit {
            return;
        }
        let columns = &self.compare.flow.write_columns;
        let json = |row: &[Value]| {
            serde_json::from_str(&key_json(columns, row)).unwrap_or(serde_json::Value::Null)
        };
        let (expected, reason) = match &d.expected {
            Some(Ok(row)) => (Some(json(row)), None),
            Some(Err(reason)) => (None, Some(reason.clone())),
            None => (None, None),
        };
        self.result.differences.push(Difference {
            kind: d.kind,
            key: serde_json::from_str(&key_json(key_columns, &d.key))
                .unwrap_or(serde_json::Value::Null),
            expected,
            found: d.found.as_deref().map(json),
            reason,
        });
    }
}
