//! ErrorRequest execution (SPEC §1, §3): which requests wait for which map and in what order,
//! who asked (the author and commit that added the file, from git), the limits (at most
//! [`MAX_WAITING`] waiting per map, at most [`MAX_MATCHED`] records per request), and running
//! a Retry or a Dismiss exactly once. Whether a request ran, was edited after it ran, waits
//! or is refused is decided by [`admission`] alone, for the pass and the dry-run alike.
//!
//! Invariants: a request runs once, identified by its name; a Dismiss (which touches no
//! endpoint) runs in any phase, a Retry only while its map is Running, drained and not held
//! ([`runs_now`]; the reconciler calls [`execute`] after the drain); a Retry writes the
//! row as it is now on the source side, never the stored copy; nothing the filter did not
//! match is touched. A request interrupted by a crash runs again from the start, which is
//! safe: records already retried or dismissed no longer match. Map-level error events are
//! matched by a Dismiss and skipped by a Retry. Also owns the preview of a retry that
//! `errors list --show-rows` prints ([`preview_retries`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::config::{Config, ErrorRequest, Located, RequestAction};
use crate::endpoint::{Row, Value, ValueKind, key_string};
use crate::state::{
    ErrorKey, ErrorPhase, ErrorQuery, ErrorRecord, ErrorState, Order, RequestState, RequestStatus,
    StateError, StateStore,
};
use crate::sync::link::{Connections, LinkError, Prepared};
use crate::sync::{self, Flow, Journal, Outcome, Sides, SyncError};

/// Requests that may wait for one map at a time; one more is Rejected.
pub const MAX_WAITING: usize = 5;
/// Records one request may match; more is Rejected with the count.
pub const MAX_MATCHED: u64 = 10_000;

/// Who added a request file and when, from git.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Provenance {
    /// `Name <email>` of the commit's author.
    pub author: Option<String>,
    /// Short hash of the commit that added the file.
    pub commit: Option<String>,
    /// The commit's author date (RFC 3339).
    pub at: Option<String>,
}

/// The commit that added each file under `requests/` (the newest add, if a file was removed
/// and added again), keyed by path relative to `dir`. Files not committed yet are absent;
/// so is everything outside git.
pub fn provenance(dir: &Path) -> HashMap<String, Provenance> {
    let log = crate::config::loader::git(
        dir,
        &[
            "log",
            "--diff-filter=A",
            "--relative",
            "--name-only",
            "--format=%x1e%h%x1f%aI%x1f%an <%ae>",
            "--",
            "requests",
        ],
        None,
    )
    .unwrap_or_default();
    let mut found = HashMap::new();
    for entry in log.split('\u{1e}').filter(|e| !e.trim().is_empty()) {
        let mut lines = entry.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('\u{1f}').collect();
        let [commit, at, author] = header[..] else {
            continue;
        };
        for path in lines.map(str::trim).filter(|l| !l.is_empty()) {
            // git log lists newest first: the first add seen is the one that counts.
            found.entry(path.to_string()).or_insert_with(|| Provenance {
                author: Some(author.to_string()),
                commit: Some(commit.to_string()),
                at: crate::clock::parse(at).map(crate::clock::format_millis),
            });
        }
    }
    found
}

/// The requests of the config in the order they run: by when the commit that added them was
/// made, then by name; requests not committed yet come last.
pub fn ordered<'a>(
    cfg: &'a Config,
    provenance: &HashMap<String, Provenance>,
) -> Vec<(&'a Located<ErrorRequest>, Provenance)> {
    let mut list: Vec<_> = cfg
        .requests
        .iter()
        .map(|r| (r, provenance.get(&r.file).cloned().unwrap_or_default()))
        .collect();
    list.sort_by(|(a, pa), (b, pb)| {
        (pa.at.is_none(), &pa.at, &a.resource.metadata.name).cmp(&(
            pb.at.is_none(),
            &pb.at,
            &b.resource.metadata.name,
        ))
    });
    list
}

/// The requests waiting per map, in the order they run.
pub type Queues = HashMap<String, Vec<(ErrorRequest, RequestStatus)>>;

/// What is stored of a request: its state (`None` when unknown) and whether the config has
/// edited it since it was stored.
#[derive(Clone, Copy, Debug)]
pub struct Stored {
    pub state: Option<RequestState>,
    pub edited: bool,
}

/// What the next pass does with a request of the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It ran (or was refused), as the config still has it: nothing to do.
    Ran,
    /// It ran and was edited since: a request runs once, so the edit is ignored.
    EditedAfterRun,
    /// It waits for its map (and runs at the next pass, a Retry once the map is Running).
    Queued,
    /// [`MAX_WAITING`] requests already wait for its map.
    Rejected,
}

/// Whether a queued request may run now, in a map's `phase` (`held`: an alert holds it):
/// a Dismiss touches no endpoint and runs in any phase; a Retry writes to the target, so it
/// runs only while the map is Running and not held.
pub fn runs_now(action: RequestAction, phase: crate::state::Phase, held: bool) -> bool {
    match action {
        RequestAction::Dismiss => true,
        RequestAction::Retry => phase == crate::state::Phase::Running && !held,
    }
}

/// The one admission decision, shared by the pass ([`admit`]) and the dry-run (`plan`): a
/// request of the config × what is stored of it (`None`: never seen) × how many requests
/// are already Queued for its map ahead of it in run order ([`ordered`]). Pure.
pub fn admission(stored: Option<Stored>, waiting: usize) -> Admission {
    match stored {
        Some(s) if s.state.is_some_and(RequestState::is_final) => {
            if s.edited {
                Admission::EditedAfterRun
            } else {
                Admission::Ran
            }
        }
        _ if waiting >= MAX_WAITING => Admission::Rejected,
        _ => Admission::Queued,
    }
}

/// Brings the stored requests in line with the config before maps are driven: each request's
/// [`admission`] is stored (new requests Queued, or Rejected past [`MAX_WAITING`] per map; a
/// request edited after it ran keeps its result and says it will not run again), and requests
/// removed from the config are forgotten. Returns every request's status and the queues.
pub fn admit(
    store: &dyn StateStore,
    cfg: &Config,
    provenance: &HashMap<String, Provenance>,
    revision: &str,
) -> Result<(BTreeMap<String, RequestStatus>, Queues), StateError> {
    let applied: HashMap<String, serde_json::Value> = store
        .requests()?
        .into_iter()
        .map(|r| (r.name, r.applied))
        .collect();
    let mut statuses = BTreeMap::new();
    let mut queues: Queues = HashMap::new();
    for (located, prov) in ordered(cfg, provenance) {
        let request = &located.resource;
        let name = &request.metadata.name;
        let desired = serde_json::to_value(request).expect("request serializes");
        let stored = store.request_status(name)?;
        let verdict = admission(
            stored.as_ref().map(|st| Stored {
                state: Some(st.state),
                edited: applied.get(name).is_some_and(|a| *a != desired),
            }),
            queues.get(&request.spec.map).map_or(0, Vec::len),
        );
        let mut status =
            stored.unwrap_or_else(|| RequestStatus::new(&request.spec.map, request.spec.action));
        status.map = request.spec.map.clone();
        status.action = request.spec.action;
        status.observed_revision = Some(revision.to_string());
        let mut stored_spec = desired.clone();
        match verdict {
            Admission::Ran => {}
            Admission::EditedAfterRun => {
                status.reason = Some(format!(
                    "edited after it ran{}: a request runs once, so the edit is ignored; add a request with a new name to run it again",
                    status
                        .finished_at
                        .as_ref()
                        .map(|t| format!(" at {t}"))
                        .unwrap_or_default()
                ));
                stored_spec = applied[name].clone();
            }
            Admission::Queued | Admission::Rejected => {
                status.requested_by = prov.author.clone().or(status.requested_by);
                status.revision = prov.commit.clone().or(status.revision);
                status.created_at = prov.at.clone().or(status.created_at);
                if verdict == Admission::Rejected {
                    status.state = RequestState::Rejected;
                    status.reason = Some(format!(
                        "{MAX_WAITING} requests already wait for map {} (at most {MAX_WAITING} may wait): add this one again once they have run",
                        request.spec.map
                    ));
                    status.finished_at = Some(crate::clock::now_millis());
                } else {
                    status.state = RequestState::Queued;
                    status.reason = None;
                    let queue = queues.entry(request.spec.map.clone()).or_default();
                    queue.push((request.clone(), status.clone()));
                }
            }
        }
        store.put_request(name, &stored_spec, &status)?;
        statuses.insert(name.clone(), status);
    }
    for name in applied.keys() {
        if !statuses.contains_key(name) {
            store.forget_request(name)?;
        }
    }
    Ok((statuses, queues))
}

/// The ids among `ids` that are not errored records of `map` (in any state): what makes a
/// request Rejected before it touches anything.
pub fn unknown_ids(store: &dyn StateStore, map: &str, ids: &[i64]) -> Result<Vec<i64>, StateError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let query = ErrorQuery {
        map: Some(map.to_string()),
        ids: ids.to_vec(),
        ..Default::default()
    };
    let known = store.query_errors(&query, Order::OldestFirst, ids.len())?;
    Ok(ids
        .iter()
        .copied()
        .filter(|id| !known.iter().any(|e| e.id == *id))
        .collect())
}

/// One way of a map a Retry can write through.
pub struct Way<'a> {
    pub sides: Sides<'a>,
    pub flow: &'a Flow,
}

/// Runs one request now: checks its ids and the match limit, then dismisses or retries the
/// open errors it matches, updating `status` (its counts, state and reason) and the map's
/// activity log. The caller stores the status.
pub async fn execute(
    request: &ErrorRequest,
    status: &mut RequestStatus,
    journal: &mut Journal<'_>,
    ways: &[Way<'_>],
    batch_size: usize,
) -> Result<(), StateError> {
    let map = &request.spec.map;
    let filter = &request.spec.filter;
    let mut query = crate::errors::query_of(Some(map), filter);
    // Map-level events have no record to write again: a Retry skips them, a Dismiss takes them.
    if request.spec.action == crate::config::RequestAction::Retry {
        query.scope = Some(crate::state::ErrorScope::Record);
    }
    status.state = RequestState::Running;
    (
        status.matched,
        status.succeeded,
        status.failed,
        status.dismissed,
    ) = (0, 0, 0, 0);
    let refuse = |status: &mut RequestStatus, reason: String| {
        status.state = RequestState::Rejected;
        status.reason = Some(reason);
        status.finished_at = Some(crate::clock::now_millis());
    };
    if !filter.ids.is_empty() {
        let missing: Vec<String> = unknown_ids(journal.store, map, &filter.ids)?
            .iter()
            .map(i64::to_string)
            .collect();
        if !missing.is_empty() {
            refuse(
                status,
                format!(
                    "id(s) {} are not errored records of map {map}: nothing was {}",
                    missing.join(", "),
                    past_tense(request.spec.action)
                ),
            );
            return log_rejection(journal, request, status);
        }
    }
    let started = std::time::Instant::now();
    // One read serves both the limit check and the work; only a request over the limit
    // is counted in full.
    let records = journal
        .store
        .query_error_keys(&query, MAX_MATCHED as usize + 1)?;
    let matched = if records.len() as u64 > MAX_MATCHED {
        journal.store.count_errors(&query)?
    } else {
        records.len() as u64
    };
    status.matched = matched;
    if matched > MAX_MATCHED {
        refuse(
            status,
            format!(
                "the filter matches {matched} records; a request may match at most {MAX_MATCHED}: narrow it (time range, direction, errorType, phase or ids)"
            ),
        );
        return log_rejection(journal, request, status);
    }
    let outcome = match request.spec.action {
        RequestAction::Dismiss => {
            let ids: Vec<i64> = records.iter().map(|e| e.id).collect();
            status.dismissed = journal.store.delete_errors(&ids)?;
            Ok(())
        }
        RequestAction::Retry => retry(&records, status, journal, ways, batch_size).await,
    };
    status.finished_at = Some(crate::clock::now_millis());
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(()) => {
            status.state = RequestState::Completed;
            status.reason = None;
        }
        Err(problem) => {
            status.state = RequestState::Failed;
            status.reason = Some(format!(
                "stopped after {} of {} record(s): {problem}",
                status.succeeded + status.failed,
                status.matched
            ));
        }
    }
    let label = label(request, status);
    let message = match request.spec.action {
        RequestAction::Dismiss => format!(
            "{label} {}: matched {}, dismissed {}",
            status.state, status.matched, status.dismissed
        ),
        RequestAction::Retry => format!(
            "{label} {}: matched {}, succeeded {}, failed {} in {seconds:.3} s{}",
            status.state,
            status.matched,
            status.succeeded,
            status.failed,
            status
                .reason
                .as_ref()
                .map(|r| format!("; {r}"))
                .unwrap_or_default()
        ),
    };
    journal.log(&format!("Request{}", status.state), &message)?;
    Ok(())
}

/// "request NAME (ACTION by WHO)", how the activity log names a request.
fn label(request: &ErrorRequest, status: &RequestStatus) -> String {
    let by = status
        .requested_by
        .as_ref()
        .map(|a| format!(" by {a}"))
        .unwrap_or_default();
    format!(
        "request {} ({:?}{by})",
        request.metadata.name, request.spec.action
    )
}

fn log_rejection(
    journal: &Journal<'_>,
    request: &ErrorRequest,
    status: &RequestStatus,
) -> Result<(), StateError> {
    journal.log(
        "RequestRejected",
        &format!(
            "{} Rejected: {}",
            label(request, status),
            status.reason.clone().unwrap_or_default()
        ),
    )
}

fn past_tense(action: RequestAction) -> &'static str {
    match action {
        RequestAction::Retry => "retried",
        RequestAction::Dismiss => "dismissed",
    }
}

/// What stops a Retry part-way (what was written stays written); its request is Failed
/// with this as the reason.
#[derive(Debug, thiserror::Error)]
enum RetryError {
    /// Reading current rows or writing them: an endpoint went away, say.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// Settling the records on the state store.
    #[error(transparent)]
    State(#[from] StateError),
    #[error("settling retried records: {0}")]
    Settle(#[source] tokio::task::JoinError),
}

/// Retries `records` way by way, `batch_size` at a time: each key's current row is read
/// from the side it came from and written; a success marks the record Retried, a failure
/// updates it (attempts + 1, the new message) and keeps it open. An unreachable endpoint
/// stops the retry (what was written stays written) and comes back as the problem.
async fn retry(
    records: &[ErrorKey],
    status: &mut RequestStatus,
    journal: &mut Journal<'_>,
    ways: &[Way<'_>],
    batch_size: usize,
) -> Result<(), RetryError> {
    // Records of a way the map no longer syncs cannot be retried.
    status.failed += records
        .iter()
        .filter(|e| !ways.iter().any(|w| w.flow.way.name() == e.direction))
        .count() as u64;
    let marker = Marker::start(journal.store)?;
    let outcome = retry_ways(records, status, journal, ways, batch_size, &marker).await;
    let marked = marker.finish().await;
    outcome.and(marked)
}

/// Settles a Retry's records on its own store session and thread, beside the writes: marks
/// the written ones Retried and updates the failed ones, in one transaction per second at
/// most (so the end waits for one commit, not one per chunk). A crash before a commit
/// leaves those records open, and a re-run of the request writes them again.
struct Marker {
    sender: std::sync::mpsc::Sender<Settle>,
    done: tokio::task::JoinHandle<Result<(), StateError>>,
}

/// What a written chunk left to settle.
enum Settle {
    Retried(Vec<i64>),
    Failed(Vec<ErrorRecord>),
}

impl Marker {
    fn start(store: &dyn StateStore) -> Result<Marker, StateError> {
        use std::sync::mpsc::RecvTimeoutError;
        let session = store.another_session()?;
        let (sender, received) = std::sync::mpsc::channel::<Settle>();
        let done = tokio::task::spawn_blocking(move || {
            let settle = |item: Settle| match item {
                Settle::Retried(ids) => session.resolve_errors(&ids, ErrorState::Retried).map(drop),
                Settle::Failed(records) => session.record_errors(&records),
            };
            while let Ok(first) = received.recv() {
                let until = std::time::Instant::now() + crate::sync::initial::SAVE_EVERY;
                let mut first = Some(first);
                session.in_transaction(&mut || {
                    if let Some(item) = first.take() {
                        settle(item)?;
                    }
                    loop {
                        let left = until.saturating_duration_since(std::time::Instant::now());
                        match received.recv_timeout(left) {
                            Ok(item) => settle(item)?,
                            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                                return Ok(());
                            }
                        }
                    }
                })?;
            }
            Ok(())
        });
        Ok(Marker { sender, done })
    }

    fn send(&self, item: Settle) {
        // A send fails only when the thread stopped on an error: `finish` says which.
        let _ = self.sender.send(item);
    }

    /// Waits until everything sent is settled and committed.
    async fn finish(self) -> Result<(), RetryError> {
        drop(self.sender);
        Ok(self.done.await.map_err(RetryError::Settle)??)
    }
}

async fn retry_ways(
    records: &[ErrorKey],
    status: &mut RequestStatus,
    journal: &mut Journal<'_>,
    ways: &[Way<'_>],
    batch_size: usize,
    marker: &Marker,
) -> Result<(), RetryError> {
    for way in ways {
        let flow = way.flow;
        let kinds = sync::key_kinds(flow, way.sides.from_info);
        let mine: Vec<&ErrorKey> = records
            .iter()
            .filter(|e| e.direction == flow.way.name())
            .collect();
        // A chunk's keys are parsed and its rows read while the chunk before is written.
        let chunks: Vec<&[&ErrorKey]> = mine.chunks(batch_size.max(1)).collect();
        let mut prepared = prepare_chunk(chunks.first().copied(), way, &kinds).await?;
        for i in 0..chunks.len() {
            let Some((chunk, rows)) = prepared.take() else {
                break;
            };
            status.failed += chunk.unparsable;
            let mut out = Outcome::default();
            let write = sync::live::write_fetched(
                &way.sides,
                flow,
                chunk.keys.clone(),
                rows,
                Vec::new(),
                &mut out,
            );
            let next = prepare_chunk(chunks.get(i + 1).copied(), way, &kinds);
            let (written, next_rows) = tokio::join!(write, next);
            let by_key = &chunk.by_key;
            written?;
            prepared = next_rows?;
            let retried: Vec<i64> = out
                .written
                .iter()
                .filter_map(|k| by_key.get(&key_string(k)))
                .map(|e| e.id)
                .collect();
            status.succeeded += retried.len() as u64;
            if !retried.is_empty() {
                marker.send(Settle::Retried(retried));
            }

            let at = crate::clock::now_millis();
            let failures: Vec<ErrorRecord> = out
                .failed
                .iter()
                .map(|f| {
                    // A retried record keeps the phase it failed in.
                    let phase = by_key
                        .get(&key_string(&f.key))
                        .map_or(ErrorPhase::Live, |e| e.phase);
                    journal.error_record(flow, phase, f, &at)
                })
                .collect();
            if !failures.is_empty() {
                marker.send(Settle::Failed(failures));
            }
            journal
                .recorded
                .extend(out.failed.iter().map(|f| (f.error_type, at.clone())));
            status.failed += out.failed.len() as u64;
            journal.runtime.synced += out.written.len() as u64;
        }
    }
    Ok(())
}

/// A chunk of a Retry: the keys to write, its records by [`key_string`] of their key, and
/// how many of its records have a key that no longer parses for the map's key columns.
struct Chunk<'r> {
    keys: Vec<Vec<Value>>,
    by_key: HashMap<String, &'r ErrorKey>,
    unparsable: u64,
}

/// The next chunk of a Retry, parsed, with its keys' current rows; `None` after the last.
async fn prepare_chunk<'r>(
    records: Option<&[&'r ErrorKey]>,
    way: &Way<'_>,
    kinds: &[ValueKind],
) -> Result<Option<(Chunk<'r>, Vec<Row>)>, SyncError> {
    let Some(records) = records else {
        return Ok(None);
    };
    let chunk = chunk_of(records, way.flow, kinds);
    let rows = sync::live::fetch_current(&way.sides, way.flow, &chunk.keys).await?;
    Ok(Some((chunk, rows)))
}

fn chunk_of<'r>(records: &[&'r ErrorKey], flow: &Flow, kinds: &[ValueKind]) -> Chunk<'r> {
    let mut chunk = Chunk {
        keys: Vec::with_capacity(records.len()),
        by_key: HashMap::with_capacity(records.len()),
        unparsable: 0,
    };
    for e in records {
        match key_values(&e.key, &flow.from_key, kinds) {
            Some(key) => {
                chunk.by_key.insert(key_string(&key), *e);
                chunk.keys.push(key);
            }
            None => chunk.unparsable += 1,
        }
    }
    chunk
}

/// A stored key (`{"column": value}`) as typed values in the order of `columns`.
pub(crate) fn key_values(key: &str, columns: &[String], kinds: &[ValueKind]) -> Option<Vec<Value>> {
    let mut object: HashMap<String, Value> = serde_json::from_str(key).ok()?;
    columns
        .iter()
        .zip(kinds)
        .map(|(c, kind)| object.remove(c)?.convert_to(*kind).ok())
        .collect()
}

/// What `errors list --show-rows` shows for an errored record: the row as it is now on each
/// side, and what a retry would write. Read from the databases; nothing is written.
#[derive(serde::Serialize, Debug, Default, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RowPreview {
    /// The row now, on the side the record comes from (`None`: it is gone).
    pub source_row: Option<serde_json::Value>,
    /// The row now, on the side it is written to (`None`: not there).
    pub target_row: Option<serde_json::Value>,
    /// The row a retry would write (`None` with `retryDeletes`: the source row is gone, so
    /// a retry deletes it on the target).
    pub retry_writes: Option<serde_json::Value>,
    pub retry_deletes: bool,
    /// Why the rows cannot be shown or the record cannot be converted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Previews a retry of each record (by id), connecting to the endpoints of their maps.
pub async fn preview_retries(
    dir: &Path,
    cfg: &Config,
    records: &[crate::state::ErrorRecord],
) -> HashMap<i64, RowPreview> {
    let mut connections = Connections::new(dir, cfg);
    let mut prepared: HashMap<String, Result<Prepared, LinkError>> = HashMap::new();
    let mut previews = HashMap::new();
    for record in records {
        let preview = match cfg.map(&record.map) {
            None => Err(PreviewProblem::MapGone(record.map.clone())),
            Some(map) => {
                if !prepared.contains_key(&record.map) {
                    let p = Prepared::of(&mut connections, map).await;
                    prepared.insert(record.map.clone(), p);
                }
                match &prepared[&record.map] {
                    Err(problem) => Err(PreviewProblem::Link(problem.clone())),
                    Ok(p) => preview_one(p, record).await,
                }
            }
        };
        previews.insert(
            record.id,
            preview.unwrap_or_else(|problem| RowPreview {
                problem: Some(problem.to_string()),
                ..Default::default()
            }),
        );
    }
    previews
}

/// Why one record's rows cannot be shown (`RowPreview::problem` carries its message).
#[derive(Debug, thiserror::Error)]
enum PreviewProblem {
    #[error("map {0} is no longer in the config")]
    MapGone(String),
    #[error("the map no longer syncs {0}")]
    WayGone(String),
    #[error("a map-level event has no record to retry")]
    MapLevel,
    #[error("the stored key {0} does not fit the table's key")]
    KeyMismatch(String),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{0}")]
    Endpoint(#[from] crate::endpoint::EndpointError),
}

async fn preview_one(
    p: &Prepared,
    record: &crate::state::ErrorRecord,
) -> Result<RowPreview, PreviewProblem> {
    let link = p
        .links
        .iter()
        .find(|l| l.flow.way.name() == record.direction)
        .ok_or_else(|| PreviewProblem::WayGone(record.direction.to_string()))?;
    if record.scope == crate::state::ErrorScope::Map {
        return Err(PreviewProblem::MapLevel);
    }
    let sides = p.sides(link);
    let flow = &link.flow;
    let kinds = crate::sync::key_kinds(flow, sides.from_info);
    let key = key_values(&record.key, &flow.from_key, &kinds)
        .ok_or_else(|| PreviewProblem::KeyMismatch(record.key.clone()))?;
    let json = |columns: &[String], row: &[crate::endpoint::Value]| {
        serde_json::from_str(&crate::sync::transform::row_json(columns, row)).ok()
    };
    let source = sides
        .from
        .fetch_rows(
            sides.from_table,
            &flow.read_columns,
            &flow.from_key,
            std::slice::from_ref(&key),
        )
        .await?
        .pop();
    let mut preview = RowPreview {
        source_row: source.as_ref().and_then(|r| json(&flow.read_columns, r)),
        retry_deletes: source.is_none(),
        ..Default::default()
    };
    let mut target_key = key;
    if let Some(row) = source {
        let converted = flow.apply(&row).map(|mapped| {
            sides
                .to_info
                .convert_row_owned(sides.to_table, &flow.write_columns, mapped)
        });
        match converted {
            Ok(Ok(values)) => {
                preview.retry_writes = json(&flow.write_columns, &values);
                target_key = values[..flow.to_key.len()].to_vec();
            }
            Ok(Err(problem)) => {
                preview.problem = Some(format!("a retry cannot convert it: {problem}"))
            }
            Err(problem) => preview.problem = Some(format!("a retry cannot convert it: {problem}")),
        }
    }
    preview.target_row = sides
        .to
        .fetch_rows(
            sides.to_table,
            &flow.write_columns,
            &flow.to_key,
            &[target_key],
        )
        .await?
        .pop()
        .and_then(|r| json(&flow.write_columns, &r));
    Ok(preview)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(state: RequestState, edited: bool) -> Option<Stored> {
        Some(Stored {
            state: Some(state),
            edited,
        })
    }

    #[test]
    fn a_request_that_ran_runs_never_again_edited_or_not() {
        for state in [
            RequestState::Completed,
            RequestState::Rejected,
            RequestState::Failed,
        ] {
            assert_eq!(admission(stored(state, false), 0), Admission::Ran);
            assert_eq!(admission(stored(state, true), 0), Admission::EditedAfterRun);
            assert_eq!(
                admission(stored(state, true), MAX_WAITING),
                Admission::EditedAfterRun
            );
        }
    }

    #[test]
    fn waiting_requests_queue_up_to_the_limit_and_the_next_is_rejected() {
        for seen in [
            None,
            stored(RequestState::Queued, false),
            stored(RequestState::Running, true),
        ] {
            assert_eq!(admission(seen, 0), Admission::Queued);
            assert_eq!(admission(seen, MAX_WAITING - 1), Admission::Queued);
            assert_eq!(admission(seen, MAX_WAITING), Admission::Rejected);
        }
        let unknown = Some(Stored {
            state: None,
            edited: true,
        });
        assert_eq!(admission(unknown, 0), Admission::Queued);
    }
}
