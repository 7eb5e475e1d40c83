//! The reconciler: the one place where map phases change. A pass (this file) takes the
//! leases of the maps it drives (or is handed them by `dualwrite run`; a map another process
//! drives is skipped and named), purges old errors, admits requests, loads the alert rules,
//! then for each map runs its step with its lease's fence
//! (`step`: desired × observed → actions → done, or a typed [`MapFailure`]) and hands a
//! failure to the error policy (`policy`: which error event, which condition, when to try
//! again). Maps removed from the config are stopped and forgotten; alert deliveries are
//! recorded at the end. Status files are written afterwards by `status::publish`.
//!
//! A failure that hits a whole map is an error event of scope Map (NetworkError or
//! SchemaError) that alert rules count, so a rule can pause the map in the pass that fires;
//! the map is retried with backoff (`nextAttemptAt`), its capture goes on where reachable and
//! its queue is counted, and its open map-level events are Superseded when an attempt
//! succeeds. A step whose writes the target's fence refused (its lease was taken over) saves
//! nothing and gives the map up.

pub mod failure;
pub mod policy;
mod step;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::alert::pass::PassAlerts;
use crate::config::{Config, TableMap};
use crate::endpoint::{Fence, TableName};
use crate::lease::{Claims, LeaseError};
use crate::plan::{ObservedMap, map_actions};
use crate::state::{
    ErrorQuery, ErrorScope, ErrorState, MapProblem, MapRecord, MapRuntime, Order, Phase,
    StateError, StateStore,
};
use crate::sync::link::Connections;
use crate::sync::{Journal, Way};

pub use failure::MapFailure;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("purging errored records: {0}")]
    Purge(#[from] crate::errors::PurgeError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// What one pass did, per map: the phase it ended in and any map-level problem.
#[derive(Debug, Default)]
pub struct Report {
    pub maps: Vec<(String, Phase, Option<String>)>,
    /// Each alert rule's state per matched map, after the pass.
    pub alerts: BTreeMap<String, crate::alert::RuleState>,
    /// The notifications of the pass that were not delivered.
    pub undelivered: Vec<crate::alert::pass::Undelivered>,
    /// The earliest time a map of the pass is due to be tried again after a failure.
    pub retry_at: Option<DateTime<Utc>>,
}

impl Report {
    pub fn has_problems(&self) -> bool {
        self.maps.iter().any(|(_, _, p)| p.is_some())
    }
}

/// The state store of a project, opened for writing (created on first use).
pub fn open_store(dir: &Path, cfg: &Config) -> Result<Box<dyn StateStore>, ReconcileError> {
    Ok(crate::state::open(dir, &cfg.project.resource)?)
}

/// How a pass differs from a plain `reconcile`.
#[derive(Clone, Debug, Default)]
pub struct PassOptions {
    /// Run only this request (`errors retry|dismiss --apply`); the others stay queued.
    pub only_request: Option<String>,
    /// Drive only these maps (every map of the config when `None`). `dualwrite run` drives
    /// the maps it holds a lease on. Maps removed from the config are forgotten only by a
    /// pass whose set names them (or that has none).
    pub only_maps: Option<HashSet<String>>,
    /// Woken by new captured changes only: drain, and leave the purge and the admission of
    /// requests (which reads the git history) to the next full pass.
    pub changes_only: bool,
    /// Leave a map that is failing alone until its `nextAttemptAt` (unless the plan has
    /// something for it): `dualwrite run` retries on the backoff schedule. A manual
    /// `reconcile` tries every map now.
    pub respect_backoff: bool,
    /// How the pass gets the right to drive each map (`crate::lease`).
    pub leasing: Leasing,
    /// Shows a running initial sync's progress while the pass runs (a status file, the
    /// service's snapshot).
    pub progress: Option<std::sync::Arc<dyn crate::sync::ProgressObserver>>,
}

/// How a pass holds the leases of the maps it drives.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Leasing {
    /// Take each map's lease just before its step and give them all back after the pass;
    /// a map another process drives is skipped and named (a one-off command).
    #[default]
    Claim,
    /// The same, but wait for a map another process drives (`reconcile --wait`).
    ClaimWaiting,
    /// The caller holds these maps' leases, at these epochs (`dualwrite run`).
    Held(BTreeMap<String, i64>),
    /// No leases and no fences: a caller that has the store to itself (benchmarks).
    Off,
}

impl PassOptions {
    /// Whether the pass drives `map`.
    pub fn includes(&self, map: &str) -> bool {
        self.only_maps
            .as_ref()
            .is_none_or(|only| only.contains(map))
    }
}

/// Runs one full pass over every map of the config.
pub async fn run(dir: &Path, cfg: &Config, revision: &str) -> Result<Report, ReconcileError> {
    run_with(dir, cfg, revision, &PassOptions::default()).await
}

/// [`run`], with options.
pub async fn run_with(
    dir: &Path,
    cfg: &Config,
    revision: &str,
    options: &PassOptions,
) -> Result<Report, ReconcileError> {
    let mut store = open_store(dir, cfg)?;
    run_on(store.as_mut(), dir, cfg, revision, options).await
}

/// [`run_with`] on an open store (`dualwrite run` keeps one open between passes).
pub async fn run_on(
    store: &mut dyn StateStore,
    dir: &Path,
    cfg: &Config,
    revision: &str,
    options: &PassOptions,
) -> Result<Report, ReconcileError> {
    // Every lease first, in the config's order (so two waiting passes never hold one each of
    // what the other wants), before anything of the store is read: a pass that waited sees
    // what the other did.
    let claims = match options.leasing {
        Leasing::Claim | Leasing::ClaimWaiting => Some(Claims::start(
            dir,
            &cfg.project.resource,
            crate::lease::DEFAULT_TTL,
        )?),
        Leasing::Held(_) | Leasing::Off => None,
    };
    let fence_of = |map: &str| -> Result<Option<Fence>, LeaseError> {
        match (&options.leasing, &claims) {
            (Leasing::Held(epochs), _) => Ok(epochs.get(map).map(|&epoch| Fence {
                map: map.to_string(),
                epoch,
            })),
            (leasing, Some(claims)) => claims
                .claim(map, *leasing == Leasing::ClaimWaiting)
                .map(Some),
            _ => Ok(None),
        }
    };
    let mut fences: HashMap<String, Result<Option<Fence>, LeaseError>> = HashMap::new();
    for located in &cfg.maps {
        let name = &located.resource.metadata.name;
        if options.includes(name) {
            match fence_of(name) {
                Err(LeaseError::Store(e)) => return Err(e.into()),
                fence => fences.insert(name.clone(), fence),
            };
        }
    }
    let mut connections = Connections::new(dir, cfg);
    let mut report = Report::default();
    let mut queues = crate::requests::Queues::default();
    if !options.changes_only {
        crate::errors::purge(
            store,
            dir,
            &cfg.project.resource,
            crate::clock::millis(Utc::now()),
        )?;
        store.tidy()?;
        let provenance = crate::requests::provenance(dir);
        queues = crate::requests::admit(store, cfg, &provenance, revision)?.1;
    }
    if let Some(only) = &options.only_request {
        for queue in queues.values_mut() {
            queue.retain(|(r, _)| &r.metadata.name == only);
        }
    }
    let mut alerts = PassAlerts::load(store, cfg)?;
    let stored: HashMap<String, MapRecord> = store
        .maps()?
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    for located in &cfg.maps {
        let map = &located.resource;
        let name = map.metadata.name.clone();
        if !options.includes(&name) || crate::shutdown::requested() {
            continue;
        }
        let fence = match fences.remove(&name).unwrap_or(Ok(None)) {
            Ok(fence) => fence,
            Err(taken) => {
                tracing::warn!(map = %name, "{taken}");
                let phase = stored.get(&name).map_or(Phase::NotRunning, |r| r.phase);
                report.maps.push((name, phase, Some(taken.to_string())));
                continue;
            }
        };
        let record = stored.get(&name).cloned();
        let runtime = store.runtime(&name)?;
        let observed = record.as_ref().map(|r| ObservedMap {
            phase: r.phase,
            applied: r
                .applied
                .as_ref()
                .and_then(|a| serde_json::from_value(a.clone()).ok()),
            held_by: r.held_by.clone(),
        });
        let actions = map_actions(map, observed.as_ref());
        let due = runtime
            .next_attempt_at
            .as_deref()
            .and_then(crate::clock::parse_utc);
        if options.respect_backoff && actions.is_empty() && due.is_some_and(|due| due > Utc::now())
        {
            // Still backing off: nothing to do before its next attempt.
            report.retry_at = earliest(report.retry_at, due);
            let problem = runtime.failure.as_ref().map(|f| f.message.clone());
            report
                .maps
                .push((name, record.map_or(Phase::NotRunning, |r| r.phase), problem));
            continue;
        }
        let mut cx = step::MapContext::new(
            cfg,
            map,
            actions,
            &mut connections,
            &mut alerts,
            &mut queues,
        );
        cx.fence = fence;
        cx.progress = options.progress.clone();
        let outcome = drive(&mut cx, store, record, observed, runtime, revision).await?;
        report.retry_at = earliest(report.retry_at, outcome.next_attempt);
        report.maps.push((name, outcome.phase, outcome.problem));
    }
    let index = cfg.map_index();
    for (name, record) in &stored {
        if index.get(name).is_none() && options.includes(name) && fence_of(name).is_ok() {
            remove(&mut connections, cfg, record).await;
            store.log(
                name,
                &crate::clock::now_secs(),
                "Removed",
                "removed from the config: stopped and forgotten",
            )?;
            store.forget_map(name)?;
        }
    }
    // Deliveries ran in the background while maps synced; record how each went.
    let outcome = alerts.finish(store, cfg, revision).await?;
    report.alerts = outcome.states;
    report.undelivered = outcome.undelivered;
    if let Some(claims) = claims {
        claims.finish();
    }
    Ok(report)
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Ends an alert's hold on a map (`dualwrite resume`, or a commit changing `spec.state`).
/// Errors recorded before now no longer count toward any rule for it. Returns the alert
/// that held it, if any.
pub fn end_hold(
    store: &mut dyn StateStore,
    map: &str,
    cause: &str,
) -> Result<Option<String>, StateError> {
    let Some(mut record) = store.maps()?.into_iter().find(|m| m.name == map) else {
        return Ok(None);
    };
    let Some(alert) = record.held_by.take() else {
        return Ok(None);
    };
    let mut runtime = store.runtime(map)?;
    runtime.held_action = None;
    runtime.resumed_at = Some(crate::clock::now_millis());
    // Try again now, not at the end of a backoff the hold may have stretched.
    runtime.next_attempt_at = None;
    store.save(&record, &runtime)?;
    store.log(
        map,
        &crate::clock::now_secs(),
        "Resumed",
        &format!("hold by alert {alert} ended by {cause}"),
    )?;
    Ok(Some(alert))
}

/// How one map's step ended.
struct Outcome {
    phase: Phase,
    problem: Option<String>,
    next_attempt: Option<DateTime<Utc>>,
}

/// Drives one map: records what the config asks of it, runs its step, hands a failure to
/// the error policy, evaluates its alert rules (every pass, so a rule resolves when its
/// errors age out), counts its queue and saves.
async fn drive(
    cx: &mut step::MapContext<'_, '_>,
    store: &mut dyn StateStore,
    record: Option<MapRecord>,
    observed: Option<ObservedMap>,
    mut runtime: MapRuntime,
    revision: &str,
) -> Result<Outcome, ReconcileError> {
    let map: &TableMap = cx.map;
    let name = map.metadata.name.clone();
    let is_new = record.is_none();
    let mut record = record.unwrap_or(MapRecord {
        name: name.clone(),
        phase: Phase::NotRunning,
        applied: None,
        applied_revision: None,
        held_by: None,
    });
    // A commit that changes spec.state ends an alert's hold.
    if observed
        .as_ref()
        .and_then(|o| o.applied.as_ref())
        .is_some_and(|a| a.spec.state != map.spec.state)
        && let Some(alert) = record.held_by.take()
    {
        store.log(
            &name,
            &crate::clock::now_secs(),
            "Resumed",
            &format!("hold by alert {alert} ended: spec.state changed"),
        )?;
    }
    record.applied = Some(serde_json::to_value(map).expect("map serializes"));
    record.applied_revision = Some(revision.to_string());
    if observed.as_ref().is_some_and(|o| o.held_by.is_some()) && record.held_by.is_none() {
        runtime.held_action = None;
        runtime.resumed_at = Some(crate::clock::now_millis());
    }
    let observer = cx.progress.clone();
    let mut journal = Journal {
        store,
        map: name.clone(),
        record,
        runtime,
        recorded: Vec::new(),
        observer: observer.as_deref(),
    };
    if is_new {
        journal.log("Created", "map created from the config")?;
    }
    let drained = match cx.run(&mut journal).await {
        Ok(()) => {
            settle_success(&mut journal)?;
            true
        }
        // The store failed: nothing more can be saved.
        Err(MapFailure::State(e)) => return Err(e.into()),
        // Another process drives the map now: nothing of this step is saved over its work.
        Err(failure) if failure.kind() == failure::FailureKind::LeaseLost => {
            let message = failure.to_string();
            tracing::warn!(map = %name, "{message}");
            journal.log("LeaseLost", &message)?;
            return Ok(Outcome {
                phase: journal.record.phase,
                problem: Some(message),
                next_attempt: None,
            });
        }
        Err(failure) => {
            record_failure(cx, &mut journal, failure)?;
            false
        }
    };
    if cx.check_alerts(&mut journal).await?
        && let Err(MapFailure::State(e)) = cx.enforce_hold(&mut journal).await
    {
        return Err(e.into());
    }
    cx.count_queue(&mut journal, drained).await;
    journal.save()?;
    Ok(Outcome {
        phase: journal.record.phase,
        problem: journal.runtime.failure.as_ref().map(|f| f.message.clone()),
        next_attempt: journal
            .runtime
            .next_attempt_at
            .as_deref()
            .and_then(crate::clock::parse_utc),
    })
}

/// A step that succeeded ends the map's failure (its condition, the backoff). Its open
/// map-level events are Superseded only when the map synced (it is Running, so both sides
/// answered): a Paused or Stopped map did not ask the endpoint that failed, and its events
/// stay open until it does.
fn settle_success(journal: &mut Journal<'_>) -> Result<(), StateError> {
    journal.runtime.next_attempt_at = None;
    let synced = journal.record.phase == Phase::Running;
    let failure = journal.runtime.failure.take();
    if !synced {
        if let Some(f) = failure {
            journal.log(
                "FailureSetAside",
                &format!(
                    "{} phase needs no endpoint; its map-level events stay open until it syncs: {}",
                    journal.record.phase, f.message
                ),
            )?;
        }
        return Ok(());
    }
    let superseded = if std::mem::take(&mut journal.runtime.map_events_open) {
        let mut query = ErrorQuery::open(&journal.map);
        query.scope = Some(ErrorScope::Map);
        let ids: Vec<i64> = journal
            .store
            .query_errors(&query, Order::OldestFirst, usize::MAX)?
            .into_iter()
            .map(|e| e.id)
            .collect();
        journal.store.resolve_errors(&ids, ErrorState::Superseded)?
    } else {
        0
    };
    if failure.is_none() && superseded == 0 {
        return Ok(());
    }
    journal.log(
        "Recovered",
        &format!(
            "{}; {superseded} map-level error event(s) superseded",
            match failure.and_then(|f| f.endpoint) {
                Some(endpoint) => format!("endpoint {endpoint} works again"),
                None => "the map syncs again".to_string(),
            }
        ),
    )
}

/// Applies the error policy to a failed step: the map-level error event, the stored
/// problem (the condition) and the next attempt.
fn record_failure(
    cx: &step::MapContext<'_, '_>,
    journal: &mut Journal<'_>,
    failure: MapFailure,
) -> Result<(), StateError> {
    let message = match &failure {
        f @ MapFailure::Link(_) if journal.record.phase == Phase::Stopped => {
            format!("{f}{}", step::describe_left(&journal.runtime.capture_left))
        }
        f => f.to_string(),
    };
    let attempts = journal.runtime.failure.as_ref().map_or(0, |f| f.attempts) + 1;
    let decision = policy::error_policy(&failure, attempts);
    if let Some(error_type) = decision.event {
        let at = crate::clock::now_millis();
        let way = failure.way(&Way::of(cx.map.spec.direction));
        journal.store.record_error(&crate::state::ErrorRecord {
            id: 0,
            scope: ErrorScope::Map,
            map: journal.map.clone(),
            phase: cx.event_phase(journal),
            direction: way.name().to_string(),
            error_type,
            key: String::new(),
            row: None,
            message: message.clone(),
            code: failure.code().map(str::to_string),
            first_at: at.clone(),
            last_at: at.clone(),
            attempts: 1,
            state: ErrorState::Open,
        })?;
        journal.runtime.map_events_open = true;
        journal.recorded.push((error_type, at));
    }
    let previous = journal.runtime.failure.take();
    let since = previous
        .as_ref()
        .map_or_else(crate::clock::now_secs, |p| p.since.clone());
    if previous.as_ref().is_none_or(|p| p.message != message) {
        journal.log(decision.reason.name(), &message)?;
    }
    journal.runtime.failure = Some(MapProblem {
        reason: decision.reason,
        message,
        endpoint: failure.endpoint().map(|(e, _)| e.to_string()),
        attempts,
        since,
    });
    journal.runtime.next_attempt_at = decision.requeue_after.map(|after| {
        let at = Utc::now() + chrono::Duration::from_std(after).unwrap_or_default();
        crate::clock::format_millis(crate::clock::millis(at))
    });
    Ok(())
}

/// Removes the capture of a map that left the config, unless another map still needs it.
async fn remove(connections: &mut Connections<'_>, cfg: &Config, record: &MapRecord) {
    let Some(applied) = record
        .applied
        .as_ref()
        .and_then(|a| serde_json::from_value::<TableMap>(a.clone()).ok())
    else {
        return;
    };
    let source = &applied.spec.source;
    let (Ok(ep), Ok(table)) = (
        connections.get(&source.endpoint).await,
        TableName::parse(&source.table),
    ) else {
        return;
    };
    if !step::table_in_use(cfg, None, &source.endpoint, &source.table) {
        let _ = ep.remove_capture(&table).await;
    }
}
