//! The state store: what dualwrite has actually done, per map (phase, applied spec, cursors,
//! initial-sync runs, errored records, activity log), per alert rule and per request. One
//! trait, `StateStore`; the SQLite store is the embedded default, PostgreSQL the shared one.
//! Also owns the stored states, phases and types as enums (`InitialSyncStatus`,
//! `RequestState`, `ErrorPhase`, `ErrorType`, `ErrorState`), whose serde names are the
//! stored text; a row with a name this version does not know reads as `StateError::Unknown`.
//! Only `reconcile` writes it.

pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use crate::config::{ErrorPhase, RequestAction};
use crate::config::{ErrorTypeSelector, Project, ServerConfig};

/// The names of an enum stored as text (state-store rows, status files): `ALL`, `name` (the
/// serde name), `parse` (`None` for a name it does not know), `stored` (the same as a
/// [`StateError::Unknown`] naming the column) and `Display`.
macro_rules! stored_names {
    ($ty:ident, $what:literal, [$($variant:ident),+ $(,)?]) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => stringify!($variant)),+
                }
            }

            pub fn parse(text: &str) -> Option<$ty> {
                Self::ALL.iter().copied().find(|v| v.name() == text)
            }

            /// A stored value read back: an unknown one is [`StateError::Unknown`].
            pub fn stored(text: &str) -> Result<$ty, StateError> {
                Self::parse(text).ok_or_else(|| StateError::Unknown {
                    what: $what,
                    value: text.to_string(),
                })
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, not `write_str`: listings align these with widths.
                f.pad(self.name())
            }
        }
    };
}

/// The phase a map is in (SPEC §2).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    NotRunning,
    InitialSync,
    Running,
    Paused,
    Stopped,
}

stored_names!(
    Phase,
    "phase",
    [NotRunning, InitialSync, Running, Paused, Stopped]
);

impl Phase {
    /// Whether the map's capture is installed in this phase, so changes can queue up.
    pub fn captures(self) -> bool {
        matches!(self, Phase::Running | Phase::Paused | Phase::InitialSync)
    }
}

/// A map as the store knows it.
#[derive(Clone, Debug, PartialEq)]
pub struct MapRecord {
    pub name: String,
    pub phase: Phase,
    /// The TableMap (as JSON) the map was last driven with.
    pub applied: Option<serde_json::Value>,
    pub applied_revision: Option<String>,
    /// The alert rule holding the map, if any.
    pub held_by: Option<String>,
}

/// What a map has done so far: cursors, initial sync, counters. Saved with its phase.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct MapRuntime {
    /// Changelog position applied so far, per direction (source side, destination side).
    /// Advances only after the write it covers is committed.
    #[serde(default)]
    pub cursor_source: i64,
    #[serde(default)]
    pub cursor_destination: i64,
    #[serde(default)]
    pub initial_sync: Option<InitialSyncRun>,
    /// Earlier runs of the initial sync, newest first (at most [`RUN_HISTORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_runs: Vec<InitialSyncRun>,
    #[serde(default)]
    pub synced: u64,
    #[serde(default)]
    pub last_sync_at: Option<String>,
    #[serde(default)]
    pub lag_seconds: Option<f64>,
    /// When `dualwrite resume` last ended an alert's hold: errors before it no longer count.
    #[serde(default)]
    pub resumed_at: Option<String>,
    /// The action (Pause or Stop) of the alert holding the map, if any.
    #[serde(default)]
    pub held_action: Option<crate::config::AlertAction>,
    /// Changes captured and not yet written, as last counted; `None` when the capturing
    /// side could not be asked.
    #[serde(default)]
    pub queue: Option<QueueState>,
    /// The failure that hit the whole map in its last attempt (endpoint down, table
    /// missing), while it lasts; shown as conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<MapProblem>,
    /// Whether map-level error events of this map may still be open (recorded, not yet
    /// superseded): a successful pass then supersedes them. Kept so that the passes of a
    /// healthy map never query the errors.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub map_events_open: bool,
    /// When the next attempt is due while a failure is retried with backoff (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// Capture a stop could not remove yet (its endpoint was down), removed when it is
    /// reachable again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capture_left: Vec<CaptureLeft>,
    #[serde(default)]
    pub since: Option<String>,
}

/// A map's queue: how many captured changes wait, and since when.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct QueueState {
    pub pending: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_at: Option<String>,
    /// When it was counted (RFC 3339, seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counted_at: Option<String>,
}

/// Why a map cannot do its work (the reason of its `Ready=False` condition).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemReason {
    /// An endpoint cannot be reached; retried with backoff (transient).
    EndpointUnreachable,
    /// A table or mapped column is missing or changed; needs a person.
    SchemaMismatch,
    /// A shutdown stopped the work; it goes on at the next start.
    Interrupted,
    /// Anything else that stops the map (an endpoint that is not configured, the state
    /// store); needs a person.
    Error,
    /// Another process took the map's lease over; this one gave the map up.
    LeaseLost,
}

impl ProblemReason {
    pub fn name(self) -> &'static str {
        match self {
            ProblemReason::EndpointUnreachable => "EndpointUnreachable",
            ProblemReason::SchemaMismatch => "SchemaMismatch",
            ProblemReason::Interrupted => "Interrupted",
            ProblemReason::Error => "Error",
            ProblemReason::LeaseLost => "LeaseLost",
        }
    }

    /// Whether it goes away by itself (`Reconciling=True`) rather than needing a person
    /// (`Stalled=True`).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ProblemReason::EndpointUnreachable
                | ProblemReason::Interrupted
                | ProblemReason::LeaseLost
        )
    }
}

/// A failure that hit the whole map, as stored between passes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MapProblem {
    pub reason: ProblemReason,
    /// What failed, naming the endpoint and side.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Failed attempts in a row.
    pub attempts: u32,
    /// When the first of them failed.
    pub since: String,
}

/// Capture still installed on a table that a stop could not reach.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CaptureLeft {
    pub endpoint: String,
    pub table: String,
}

/// Earlier initial-sync runs kept per map.
pub const RUN_HISTORY: usize = 10;

/// One run of the initial sync.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct InitialSyncRun {
    pub run: u32,
    pub status: InitialSyncStatus,
    /// false: a "Rerun execution without errors" (only keys missing on the target, and not
    /// the records that failed before).
    #[serde(default = "yes")]
    pub retry_errors: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why the run failed, while it is Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Per direction name: read, written, errors.
    pub directions: std::collections::BTreeMap<String, DirectionCounts>,
    /// Where a crashed copy resumes: the last key written, per direction (JSON array).
    #[serde(default)]
    pub resume_after: std::collections::BTreeMap<String, String>,
    /// The source's row count per direction as its table statistics estimated it when the
    /// direction's copy began (absent when the engine could not say).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub estimated_rows: std::collections::BTreeMap<String, u64>,
}

fn yes() -> bool {
    true
}

/// How a run of the initial sync stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum InitialSyncStatus {
    #[default]
    NotStarted,
    Running,
    Completed,
    /// Every record was tried; some failed and are errored records.
    CompletedWithErrors,
    /// An endpoint or schema problem stopped it; it resumes where it stopped.
    Failed,
}

stored_names!(
    InitialSyncStatus,
    "initial sync status",
    [NotStarted, Running, Completed, CompletedWithErrors, Failed]
);

// The phase an error happened in is the config's `ErrorPhase` (what a filter names), and a
// request's action the config's `RequestAction`: one type each, named here like the others.
stored_names!(ErrorPhase, "error phase", [InitialSync, Live, CatchUp]);
stored_names!(RequestAction, "request action", [Retry, Dismiss]);

/// The kind of an error event (SPEC §2): what alert rules count and filters select.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// The database refused the record (a constraint, a value out of range).
    ApplicationError,
    /// An endpoint could not be reached.
    NetworkError,
    /// The record could not be converted to the target's columns.
    TransformError,
    /// A table or mapped column is missing or changed.
    SchemaError,
    /// The record's change lost a bidirectional conflict.
    ConflictError,
}

stored_names!(
    ErrorType,
    "error type",
    [
        ApplicationError,
        NetworkError,
        TransformError,
        SchemaError,
        ConflictError
    ]
);

impl ErrorType {
    /// The one type a selector names; `None` for `Any` (every type).
    pub fn selected_by(selector: ErrorTypeSelector) -> Option<ErrorType> {
        match selector {
            ErrorTypeSelector::Any => None,
            ErrorTypeSelector::ApplicationError => Some(ErrorType::ApplicationError),
            ErrorTypeSelector::NetworkError => Some(ErrorType::NetworkError),
            ErrorTypeSelector::TransformError => Some(ErrorType::TransformError),
            ErrorTypeSelector::SchemaError => Some(ErrorType::SchemaError),
            ErrorTypeSelector::ConflictError => Some(ErrorType::ConflictError),
        }
    }
}

/// Where an errored record stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorState {
    /// Not written yet: it counts, and a request can retry or dismiss it.
    Open,
    /// A later write of the same key succeeded (or the map recovered, for a map-level event).
    Superseded,
    /// A Retry request wrote it.
    Retried,
}

stored_names!(ErrorState, "error state", [Open, Superseded, Retried]);

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
pub struct DirectionCounts {
    pub read: u64,
    pub written: u64,
    pub errors: u64,
}

/// What an error event is about: one record (it has a key), or the whole map (an endpoint
/// that cannot be reached, a table or mapped column that is missing; no key).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ErrorScope {
    #[default]
    Record,
    Map,
}

impl ErrorScope {
    pub fn name(self) -> &'static str {
        match self {
            ErrorScope::Record => "Record",
            ErrorScope::Map => "Map",
        }
    }

    /// The stored name back; anything else is a record (rows stored before scopes existed).
    pub fn parse(text: &str) -> ErrorScope {
        if text == "Map" {
            ErrorScope::Map
        } else {
            ErrorScope::Record
        }
    }
}

/// One errored record (SPEC §2), or a map-level error event (`scope: Map`, key `""`).
/// Map-level events are never merged: each failed attempt is one, so alert windows count
/// them like records.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRecord {
    pub id: i64,
    pub scope: ErrorScope,
    pub map: String,
    pub phase: ErrorPhase,
    pub direction: String,
    #[serde(rename = "type")]
    pub error_type: ErrorType,
    /// The key as a JSON object `{column: value}`.
    pub key: String,
    pub row: Option<String>,
    pub message: String,
    pub code: Option<String>,
    pub first_at: String,
    pub last_at: String,
    pub attempts: i64,
    pub state: ErrorState,
}

/// What a request needs of an errored record to act on it: far less to read than a whole
/// [`ErrorRecord`] (no row, no message).
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorKey {
    pub id: i64,
    pub phase: ErrorPhase,
    pub direction: String,
    /// The key as a JSON object `{column: value}`.
    pub key: String,
}

/// Which errored records a listing, a request or a purge selects: the filters of SPEC §1.
/// Every field narrows the selection; the default selects every record of every map.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ErrorQuery {
    pub map: Option<String>,
    /// Latest failure at or after this time (RFC 3339 with milliseconds, UTC).
    pub from: Option<String>,
    /// Latest failure before this time.
    pub to: Option<String>,
    /// A way: SourceToDestination or DestinationToSource.
    pub direction: Option<String>,
    pub error_type: Option<ErrorType>,
    pub phase: Option<ErrorPhase>,
    /// Only these ids (none = any).
    pub ids: Vec<i64>,
    /// Only ids below this one (paging newest first).
    pub below_id: Option<i64>,
    /// Only records in this state; `None` = any state.
    pub state: Option<ErrorState>,
    /// Only records or only map-level events; `None` = both.
    pub scope: Option<ErrorScope>,
}

/// One condition of an [`ErrorQuery`], for a store to render in its own SQL dialect.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Condition<'a> {
    Equals(&'static str, &'a str),
    AtLeast(&'static str, &'a str),
    Before(&'static str, &'a str),
    IdIn(&'a [i64]),
    IdBelow(i64),
}

impl ErrorQuery {
    /// The open errors of one map.
    pub fn open(map: &str) -> Self {
        ErrorQuery {
            map: Some(map.to_string()),
            state: Some(ErrorState::Open),
            ..Default::default()
        }
    }

    /// Whether the query selects by the columns the stores keep counts of (map, state,
    /// type, phase, direction, scope) and nothing else, so its count is a sum of those
    /// counts instead of a scan of the records.
    pub fn by_counted_columns(&self) -> bool {
        self.from.is_none() && self.to.is_none() && self.ids.is_empty() && self.below_id.is_none()
    }

    /// Whether the query has a lower bound in time. Its records are then found through
    /// the time index and sorted by id afterwards: newest first by id would otherwise walk
    /// back over every newer record to reach the window (ids grow with time).
    pub fn windowed(&self) -> bool {
        self.from.is_some()
    }

    /// The conditions, in a fixed order (the stores' indexes lead with map and state).
    pub fn conditions(&self) -> Vec<Condition<'_>> {
        let mut c = Vec::new();
        let eq = [
            ("map", self.map.as_deref()),
            ("state", self.state.map(ErrorState::name)),
            ("type", self.error_type.map(ErrorType::name)),
            ("phase", self.phase.map(ErrorPhase::name)),
            ("direction", self.direction.as_deref()),
        ];
        for (column, value) in eq {
            if let Some(v) = value {
                c.push(Condition::Equals(column, v));
            }
        }
        if let Some(scope) = self.scope {
            c.push(Condition::Equals("scope", scope.name()));
        }
        if let Some(from) = &self.from {
            c.push(Condition::AtLeast("last_at", from));
        }
        if let Some(to) = &self.to {
            c.push(Condition::Before("last_at", to));
        }
        if !self.ids.is_empty() {
            c.push(Condition::IdIn(&self.ids));
        }
        if let Some(id) = self.below_id {
            c.push(Condition::IdBelow(id));
        }
        c
    }
}

/// Which records come first in a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    NewestFirst,
    OldestFirst,
}

/// Where an ErrorRequest stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestState {
    /// Waiting for its map to be Running.
    Queued,
    Running,
    Completed,
    /// Refused before it touched anything (unknown ids, too many matches or waiting).
    Rejected,
    /// Stopped part-way (what was done stays done).
    Failed,
}

stored_names!(
    RequestState,
    "request state",
    [Queued, Running, Completed, Rejected, Failed]
);

impl RequestState {
    /// Whether a request in this state has run (or was refused) and never runs again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestState::Completed | RequestState::Rejected | RequestState::Failed
        )
    }
}

/// What became of an ErrorRequest (SPEC §3, `status/requests/<name>.yaml`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    pub state: RequestState,
    pub map: String,
    pub action: RequestAction,
    pub matched: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dismissed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The author of the commit that added the request file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// The commit that added the request file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// When that commit was made (the request's place in its map's queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The config revision the request was last seen at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_revision: Option<String>,
}

impl RequestStatus {
    /// A request of `map` seen for the first time: Queued, nothing counted yet.
    pub fn new(map: &str, action: RequestAction) -> Self {
        RequestStatus {
            state: RequestState::Queued,
            map: map.to_string(),
            action,
            matched: 0,
            succeeded: 0,
            failed: 0,
            dismissed: 0,
            reason: None,
            requested_by: None,
            revision: None,
            created_at: None,
            finished_at: None,
            observed_revision: None,
        }
    }

    /// Whether the request has run (or was refused) and will never run again.
    pub fn is_final(&self) -> bool {
        self.state.is_final()
    }
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ActivityEntry {
    pub at: String,
    pub event: String,
    pub message: String,
}

/// An alert rule or request as last applied.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedRecord {
    pub name: String,
    pub applied: serde_json::Value,
    pub revision: Option<String>,
    /// For requests: where the request stands.
    pub state: Option<RequestState>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store: {0}")]
    Sqlite(#[source] rusqlite::Error),
    #[error("state store: stored {what} is not valid: {source}")]
    Corrupt {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A stored name (a state, a phase, a type) that is not one of this version's.
    #[error("state store: stored {what} {value:?} is not one dualwrite knows")]
    Unknown { what: &'static str, value: String },
    #[error("state store: environment variable {0} is not set")]
    MissingEnv(String),
    #[error("state store: {0}")]
    Other(String),
}

impl From<rusqlite::Error> for StateError {
    /// A stored name the SQLite store could not read back is the [`StateError::Unknown`] it
    /// carries, not a database error.
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::FromSqlConversionFailure(_, _, source)
                if source.is::<StateError>() =>
            {
                *source.downcast::<StateError>().expect("checked above")
            }
            e => StateError::Sqlite(e),
        }
    }
}

/// An errored record as alert windows count it: its latest failure, and when it was first
/// recorded (a record that fails again keeps its first time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorEvent {
    pub map: String,
    pub error_type: ErrorType,
    pub first_at: String,
    pub last_at: String,
}

/// The actual state. Implementations keep every write atomic: `save` stores a map's phase
/// and runtime (its cursors) in one transaction, the commit point of sync progress.
pub trait StateStore: Send {
    fn describe(&self) -> String;
    /// One more session (connection) to this same store, for work that runs beside this
    /// session's on another thread.
    fn another_session(&self) -> Result<Box<dyn StateStore>, StateError>;
    fn maps(&self) -> Result<Vec<MapRecord>, StateError>;
    fn alerts(&self) -> Result<Vec<AppliedRecord>, StateError>;
    fn requests(&self) -> Result<Vec<AppliedRecord>, StateError>;
    fn put_map(&self, m: &MapRecord) -> Result<(), StateError>;
    fn put_alert(&self, a: &AppliedRecord) -> Result<(), StateError>;
    /// The runtime record of a map (cursors, initial sync, counters); default when new.
    fn runtime(&self, name: &str) -> Result<MapRuntime, StateError>;
    /// Saves a map's phase and runtime together, atomically.
    fn save(&mut self, map: &MapRecord, runtime: &MapRuntime) -> Result<(), StateError>;
    /// Forgets a map removed from the config (its errors and log stay until retention).
    fn forget_map(&self, name: &str) -> Result<(), StateError>;
    /// Records a failed record. An open error for the same key and direction is updated
    /// (attempts + 1) instead of duplicated. Returns its id.
    fn record_error(&self, e: &ErrorRecord) -> Result<i64, StateError>;
    /// [`StateStore::record_error`] for a batch's failures, in one transaction where the
    /// store has them (one commit instead of one per record).
    fn record_errors(&self, records: &[ErrorRecord]) -> Result<(), StateError> {
        for e in records {
            self.record_error(e)?;
        }
        Ok(())
    }
    /// Runs `work` (calls on this session) as one transaction where the store has them: one
    /// commit for all of it, nothing of it kept when it fails. Without, each call commits.
    fn in_transaction(
        &self,
        work: &mut dyn FnMut() -> Result<(), StateError>,
    ) -> Result<(), StateError> {
        work()
    }
    /// Marks open errors of these keys (JSON objects) Superseded: a later write succeeded.
    fn supersede(&self, map: &str, direction: &str, keys: &[String]) -> Result<u64, StateError>;
    fn has_open_errors(&self, map: &str) -> Result<bool, StateError>;
    /// Open errors of a map, newest first.
    fn open_errors(&self, map: &str, limit: usize) -> Result<Vec<ErrorRecord>, StateError>;
    /// Counts of open errors of a map by (type, phase). Read from the counts the store
    /// keeps as records change (see each store), not by counting the records.
    fn open_error_counts(&self, map: &str)
    -> Result<Vec<(ErrorType, ErrorPhase, u64)>, StateError>;
    /// Housekeeping of the store's own bookkeeping, once a pass (the PostgreSQL store folds
    /// the changes of its error counts into one row per group). Never changes what any
    /// read answers.
    fn tidy(&self) -> Result<(), StateError> {
        Ok(())
    }
    fn log(&self, map: &str, at: &str, event: &str, message: &str) -> Result<(), StateError>;
    /// The newest `limit` activity entries of a map, newest first.
    fn activity(&self, map: &str, limit: usize) -> Result<Vec<ActivityEntry>, StateError>;
    /// Errored records (of `map`, or of every map) whose latest failure is at or after
    /// `since` (RFC 3339), oldest first: what alert windows count. Survives restarts with
    /// the store.
    fn error_events_since(
        &self,
        since: &str,
        map: Option<&str>,
    ) -> Result<Vec<ErrorEvent>, StateError>;
    /// The evaluation state of an alert rule (per matched map), as JSON.
    fn alert_state(&self, rule: &str) -> Result<Option<serde_json::Value>, StateError>;
    fn save_alert_state(&self, rule: &str, state: &serde_json::Value) -> Result<(), StateError>;
    /// Forgets a rule removed from the config: its applied spec and its state.
    fn forget_alert(&self, rule: &str) -> Result<(), StateError>;

    /// Errored records selected by `query`, at most `limit`, in `order` of id.
    fn query_errors(
        &self,
        query: &ErrorQuery,
        order: Order,
        limit: usize,
    ) -> Result<Vec<ErrorRecord>, StateError>;
    /// The id, phase, direction and key of the records `query` selects, oldest first: all
    /// of them when at most `limit` match, else `limit` of them (which ones is not defined).
    fn query_error_keys(
        &self,
        query: &ErrorQuery,
        limit: usize,
    ) -> Result<Vec<ErrorKey>, StateError>;
    /// How many errored records `query` selects.
    fn count_errors(&self, query: &ErrorQuery) -> Result<u64, StateError>;
    /// Moves open errors to `state` (Retried: a retry wrote the record). Returns how many.
    fn resolve_errors(&self, ids: &[i64], state: ErrorState) -> Result<u64, StateError>;
    /// Deletes errored records for good (dismissed or purged). Returns how many.
    fn delete_errors(&self, ids: &[i64]) -> Result<u64, StateError>;
    /// The activity log of a map at or after `since` (all of it when `None`), oldest first.
    fn activity_since(
        &self,
        map: &str,
        since: Option<&str>,
    ) -> Result<Vec<ActivityEntry>, StateError>;
    /// What became of a request, if it was seen before.
    fn request_status(&self, name: &str) -> Result<Option<RequestStatus>, StateError>;
    /// Stores a request as applied with its status.
    fn put_request(
        &self,
        name: &str,
        applied: &serde_json::Value,
        status: &RequestStatus,
    ) -> Result<(), StateError>;
    /// Forgets a request removed from the config.
    fn forget_request(&self, name: &str) -> Result<(), StateError>;

    // Leases: one process drives a map at a time (`crate::lease`). Times are the store's
    // clock, so hosts need not agree on theirs. Both stores keep them.

    /// Announces `holder` as a live member for `ttl` and returns how many members are live,
    /// this one included: each `dualwrite run` takes about its share of the maps.
    fn heartbeat(&self, holder: &str, ttl: std::time::Duration) -> Result<u32, StateError>;

    /// Takes or renews the lease on `map` for `ttl`: granted when it is free, expired,
    /// already `holder`'s, or held by `take_from` (a holder known to be dead). Atomic: two
    /// holders asking together cannot both win. A grant to a new holder raises the map's
    /// epoch above every epoch granted before (it never goes back, even when the lease was
    /// given back); a renewal keeps it.
    fn acquire_lease(
        &self,
        map: &str,
        holder: &str,
        ttl: std::time::Duration,
        take_from: Option<&str>,
    ) -> Result<LeaseGrant, StateError>;

    /// Gives up `holder`'s lease on `map` (no-op when someone else holds it), and when
    /// `map` is `None`, every lease and the membership of `holder`. The map's epoch is kept.
    fn release_leases(&self, holder: &str, map: Option<&str>) -> Result<(), StateError>;

    /// Every unexpired lease, by map.
    fn leases(&self) -> Result<Vec<Lease>, StateError>;
}

/// Who drives a map, with which epoch, since and until when (RFC 3339, the store's clock).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    pub map: String,
    pub holder: String,
    pub epoch: i64,
    pub since: String,
    pub expires_at: String,
}

/// The answer to asking for a map's lease.
#[derive(Clone, Debug, PartialEq)]
pub enum LeaseGrant {
    /// Granted (or renewed): the epoch the holder's writes carry.
    Granted { epoch: i64 },
    /// Someone else holds it.
    Taken(Lease),
}

/// Opens the project's state store for writing, creating it on first use. A PostgreSQL store
/// whose URL variable is unset is an error naming the variable.
pub fn open(dir: &Path, project: &Project) -> Result<Box<dyn StateStore>, StateError> {
    let cfg = &project.spec.state_store;
    if let Some(sqlite) = &cfg.sqlite {
        return Ok(Box::new(sqlite::SqliteStore::open(
            &dir.join(&sqlite.path),
            &sqlite.path,
        )?));
    }
    if let Some(ServerConfig { url_from_env }) = &cfg.postgres {
        let url =
            env_url(url_from_env).ok_or_else(|| StateError::MissingEnv(url_from_env.clone()))?;
        let store = postgres::PostgresStore::connect(&url, postgres::DEFAULT_SCHEMA)?;
        return Ok(Box::new(store.labelled(postgres_label(url_from_env))));
    }
    Err(StateError::Other("no state store is configured".into()))
}

/// Opens the project's state store for reading, if it exists. Never creates one. A
/// PostgreSQL store that cannot be reached (variable unset, server down, schema missing) is
/// treated as absent: the dry run then reads the status files.
pub fn open_existing(
    dir: &Path,
    project: &Project,
) -> Result<Option<Box<dyn StateStore>>, StateError> {
    let cfg = &project.spec.state_store;
    if let Some(sqlite) = &cfg.sqlite {
        let path = dir.join(&sqlite.path);
        if !path.is_file() {
            return Ok(None);
        }
        return Ok(Some(Box::new(sqlite::SqliteStore::open_read_only(
            &path,
            &sqlite.path,
        )?)));
    }
    if let Some(ServerConfig { url_from_env }) = &cfg.postgres {
        let Some(url) = env_url(url_from_env) else {
            return Ok(None);
        };
        return match postgres::PostgresStore::open_existing(&url, postgres::DEFAULT_SCHEMA) {
            Ok(store) => Ok(store.map(|s| {
                Box::new(s.labelled(postgres_label(url_from_env))) as Box<dyn StateStore>
            })),
            Err(e) => {
                tracing::warn!(error = %e, "state store unreachable; reading status files instead");
                Ok(None)
            }
        };
    }
    Ok(None)
}

/// The connection URL in an environment variable; unset and empty are the same.
fn env_url(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|url| !url.is_empty())
}

/// How a PostgreSQL store names itself: by the variable holding its URL, never the URL.
fn postgres_label(url_from_env: &str) -> String {
    format!("postgres (${url_from_env})")
}
