//! Moving records for one map: its tables connected and its ways compiled (`link`), the
//! initial copy (`initial`), the live drain of captured changes (`live`), and writing a
//! batch so that one bad record never blocks the others (bisection). Every endpoint
//! failure comes back saying which end of the way it hit (`SyncError`). Invariants: writes are idempotent upserts and deletes; a cursor or resume key
//! advances only after the write it covers is committed; dualwrite's own writes are never
//! captured (the endpoint suppresses them), so a bidirectional map never loops.

pub mod initial;
pub mod link;
pub mod live;
pub mod transform;

use std::time::Duration;

use crate::endpoint::{
    Endpoint, Fence, Row, TableInfo, TableName, Value, WriteError, WriteErrorClass, WriteOp,
};
use crate::state::{ErrorPhase, ErrorState, ErrorType};
pub use transform::{Flow, Way};

/// The changelog position a way of a map has applied.
pub fn cursor(runtime: &crate::state::MapRuntime, way: Way) -> i64 {
    match way {
        Way::SourceToDestination => runtime.cursor_source,
        Way::DestinationToSource => runtime.cursor_destination,
    }
}

pub fn set_cursor(runtime: &mut crate::state::MapRuntime, way: Way, seq: i64) {
    match way {
        Way::SourceToDestination => runtime.cursor_source = seq,
        Way::DestinationToSource => runtime.cursor_destination = seq,
    }
}

/// One record to write, with what is needed to report it if it fails.
#[derive(Clone, Debug)]
pub struct Item {
    /// Key values on the side the record comes from.
    pub key: Vec<Value>,
    /// The row as read (for errored records), if any. `None` for an upsert whose row is
    /// exactly the row read (an identity mapping of values already of the target's kinds):
    /// that row is kept once, as the upsert, and reported from there.
    pub source_row: Option<Row>,
    pub op: WriteOp,
}

/// A record that could not be written.
#[derive(Clone, Debug)]
pub struct Failure {
    pub key: Vec<Value>,
    pub source_row: Option<Row>,
    /// ApplicationError, TransformError, SchemaError, ConflictError.
    pub error_type: ErrorType,
    pub code: Option<String>,
    pub message: String,
}

/// How a batch went: keys written, records that failed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub written: Vec<Vec<Value>>,
    pub failed: Vec<Failure>,
}

/// Why a batch write stopped short: nothing after this point was written, and the caller
/// must not advance its cursor.
#[derive(Debug, thiserror::Error)]
pub enum Halted {
    /// The endpoint is unreachable, after the in-batch retries: try again later.
    #[error("{0}")]
    Unreachable(WriteError),
    /// The target's fence refused the write: another process holds the map's lease now.
    #[error("{0}")]
    Fenced(WriteError),
}

pub fn error_type(class: WriteErrorClass) -> ErrorType {
    match class {
        WriteErrorClass::Application => ErrorType::ApplicationError,
        WriteErrorClass::Network => ErrorType::NetworkError,
        WriteErrorClass::Schema => ErrorType::SchemaError,
        WriteErrorClass::Transform => ErrorType::TransformError,
        // Never a record's error: a fenced batch halts the whole way (`Halted::Fenced`).
        WriteErrorClass::Fenced => ErrorType::NetworkError,
    }
}

/// Maps rows read on the `from` side to write operations, converting values to the target's
/// column kinds. A record that cannot be converted becomes a TransformError failure.
pub fn prepare(
    flow: &Flow,
    target: &TableInfo,
    target_table: &TableName,
    rows: Vec<Row>,
    out: &mut Outcome,
) -> Vec<Item> {
    let mut items = Vec::with_capacity(rows.len());
    let kinds = target
        .kinds_of(target_table, &flow.write_columns)
        .map_err(|e| e.to_string());
    let identity = flow.is_identity();
    for row in rows {
        let key = flow.key_of(&row).to_vec();
        if identity
            && let Ok(kinds) = &kinds
            && row.len() == kinds.len()
            && row.iter().zip(kinds).all(|(v, k)| v.is_of(*k))
        {
            // The row read is the row written: no copy (see `Item::source_row`).
            items.push(Item {
                key,
                source_row: None,
                op: WriteOp::Upsert(row),
            });
            continue;
        }
        let converted = match &kinds {
            Ok(kinds) => flow.apply(&row).and_then(|mapped| {
                TableInfo::convert_with(&flow.write_columns, kinds, mapped)
                    .map_err(|e| e.to_string())
            }),
            Err(message) => Err(message.clone()),
        };
        match converted {
            Ok(values) => items.push(Item {
                key,
                source_row: Some(row),
                op: WriteOp::Upsert(values),
            }),
            Err(message) => out.failed.push(Failure {
                key,
                source_row: Some(row),
                error_type: ErrorType::TransformError,
                code: None,
                message,
            }),
        }
    }
    items
}

/// Writes `items` in one transaction; when the database refuses, splits the batch until
/// the refused records are isolated, so every good record lands. A network failure is
/// retried with backoff, then returned: the caller must not advance its cursor.
/// The kinds of the key columns on the side data comes from.
pub fn key_kinds(flow: &Flow, from: &TableInfo) -> Vec<crate::endpoint::ValueKind> {
    flow.from_key
        .iter()
        .map(|c| {
            from.column(c)
                .map(|c| c.kind)
                .unwrap_or(crate::endpoint::ValueKind::Text)
        })
        .collect()
}

pub async fn write_isolating(
    sides: &Sides<'_>,
    flow: &Flow,
    items: Vec<Item>,
    out: &mut Outcome,
) -> Result<(), Halted> {
    // The ops apart from what reports them, so that any range is a slice: no copies.
    type Meta = (Vec<Value>, Option<Row>);
    let (meta, ops): (Vec<Meta>, Vec<WriteOp>) = items
        .into_iter()
        .map(|i| ((i.key, i.source_row), i.op))
        .unzip();
    // Ranges still to write, processed left to right.
    let mut stack: Vec<(usize, usize)> = vec![(0, ops.len())];
    while let Some((start, end)) = stack.pop() {
        if start == end {
            continue;
        }
        match write_with_retry(sides, flow, &ops[start..end]).await {
            Ok(()) => out
                .written
                .extend(meta[start..end].iter().map(|(key, _)| key.clone())),
            Err(e) if e.class == WriteErrorClass::Network => return Err(Halted::Unreachable(e)),
            Err(e) if e.class == WriteErrorClass::Fenced => return Err(Halted::Fenced(e)),
            Err(e) if end - start == 1 => {
                let (key, source_row) = &meta[start];
                let source_row = source_row.clone().or_else(|| match &ops[start] {
                    WriteOp::Upsert(row) => Some(row.clone()),
                    WriteOp::Delete(_) => None,
                });
                out.failed.push(Failure {
                    key: key.clone(),
                    source_row,
                    error_type: error_type(e.class),
                    code: e.code.clone(),
                    message: e.message.clone(),
                });
            }
            Err(_) => {
                let mid = start + (end - start) / 2;
                stack.push((mid, end));
                stack.push((start, mid));
            }
        }
    }
    Ok(())
}

/// Backoff for unreachable endpoints: 3 attempts, 200 ms then 1 s.
async fn write_with_retry(
    sides: &Sides<'_>,
    flow: &Flow,
    ops: &[WriteOp],
) -> Result<(), WriteError> {
    let mut delays = [Duration::from_millis(200), Duration::from_secs(1)].into_iter();
    loop {
        match sides
            .to
            .write_batch(
                sides.to_table,
                &flow.write_columns,
                &flow.to_key,
                ops,
                sides.fence,
            )
            .await
        {
            Err(e) if e.class == WriteErrorClass::Network => match delays.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// Told after each periodic save of a running initial sync (with the store that holds it),
/// so that its progress can be shown while the pass still runs: the map's status file, the
/// service's API and metrics.
pub trait ProgressObserver: Send + Sync + std::fmt::Debug {
    /// `record` is the map as just saved (its phase, its hold).
    fn saved(&self, store: &dyn crate::state::StateStore, record: &crate::state::MapRecord);
}

/// Where a map's sync writes what happened: errored records, superseded errors, progress.
pub struct Journal<'a> {
    pub store: &'a mut dyn crate::state::StateStore,
    pub map: String,
    pub record: crate::state::MapRecord,
    pub runtime: crate::state::MapRuntime,
    /// Failures recorded since the caller last took them, as (error type, RFC 3339 time):
    /// a non-empty list tells the reconciler to evaluate the map's alert rules now (their
    /// windows are read from the store, which has these records).
    pub recorded: Vec<(ErrorType, String)>,
    pub observer: Option<&'a dyn ProgressObserver>,
}

impl Journal<'_> {
    /// Records failures and resolves errors of the keys written. Returns how many failed.
    pub fn settle(
        &mut self,
        flow: &Flow,
        phase: ErrorPhase,
        out: &Outcome,
    ) -> Result<u64, crate::state::StateError> {
        // Milliseconds: alert windows and resumes compare these times.
        let now = crate::clock::now_millis();
        let mut records = Vec::with_capacity(out.failed.len());
        for f in &out.failed {
            records.push(self.error_record(flow, phase, f, &now));
            self.recorded.push((f.error_type, now.clone()));
        }
        if !records.is_empty() {
            self.store.record_errors(&records)?;
        }
        if !out.written.is_empty() && self.store.has_open_errors(&self.map)? {
            let keys: Vec<String> = out
                .written
                .iter()
                .map(|k| transform::key_json(&flow.from_key, k))
                .collect();
            self.store.supersede(&self.map, flow.way.name(), &keys)?;
        }
        Ok(out.failed.len() as u64)
    }

    /// The errored record of a failure of this map, first and last attempted `at`.
    pub fn error_record(
        &self,
        flow: &Flow,
        phase: ErrorPhase,
        f: &Failure,
        at: &str,
    ) -> crate::state::ErrorRecord {
        crate::state::ErrorRecord {
            id: 0,
            scope: crate::state::ErrorScope::Record,
            map: self.map.clone(),
            phase,
            direction: flow.way.name().to_string(),
            error_type: f.error_type,
            key: transform::key_json(&flow.from_key, &f.key),
            row: f
                .source_row
                .as_ref()
                .map(|r| transform::row_json(&flow.read_columns, r)),
            message: f.message.clone(),
            code: f.code.clone(),
            first_at: at.to_string(),
            last_at: at.to_string(),
            attempts: 1,
            state: ErrorState::Open,
        }
    }

    /// Saves phase and runtime atomically: the commit point of progress.
    pub fn save(&mut self) -> Result<(), crate::state::StateError> {
        self.store.save(&self.record, &self.runtime)
    }

    /// Saves, then tells the observer (a copy's periodic save).
    pub fn save_progress(&mut self) -> Result<(), crate::state::StateError> {
        self.save()?;
        if let Some(observer) = self.observer {
            observer.saved(&*self.store, &self.record);
        }
        Ok(())
    }

    pub fn log(&self, event: &str, message: &str) -> Result<(), crate::state::StateError> {
        self.store
            .log(&self.map, &crate::clock::now_secs(), event, message)
    }
}

/// Both sides of a map, connected and described.
pub struct Sides<'a> {
    /// Shared, so that a reader task can page the table while the caller writes.
    pub from: &'a std::sync::Arc<dyn Endpoint>,
    pub from_table: &'a TableName,
    pub from_info: &'a TableInfo,
    pub to: &'a std::sync::Arc<dyn Endpoint>,
    pub to_table: &'a TableName,
    pub to_info: &'a TableInfo,
    /// The map's lease epoch every write carries, when a lease is held (see `crate::lease`).
    pub fence: Option<&'a Fence>,
}

/// Why a sync of one way stopped. Each endpoint failure says which end of the way it hit:
/// the side data comes from (`Read`) or the side it is written to (`Unreachable`, `Write`),
/// so the reconciler can name the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Writing to the target stopped: unreachable after the in-batch retries, or fenced.
    #[error(transparent)]
    Halted(#[from] Halted),
    /// Reading the side data comes from (snapshot pages, changes, current rows) failed.
    #[error("{0}")]
    Read(#[source] crate::endpoint::EndpointError),
    /// The side data is written to failed outside a batch write (a key lookup, a copy).
    #[error("{0}")]
    Write(#[source] crate::endpoint::EndpointError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// A shutdown was requested (`crate::shutdown`); the work done so far is committed and
    /// saved.
    #[error("stopped for a shutdown; it goes on from where it stopped at the next start")]
    Stopped,
}
