//! One map's step: desired × observed → the plan's actions (`plan::map_actions`, the same
//! decision the dry-run shows) → the map driven there (install capture, initial sync, pause,
//! resume with catch-up, stop), its live changes drained and its queued requests run, and
//! either done or a typed [`MapFailure`]. The pass hands a failure to the error policy.
//!
//! Each action connects only what it needs: a Pause touches no endpoint, a Stop only the
//! sides that capture, so a desired-state change takes effect while an endpoint is down.
//! Invariants kept here: a map's phase and cursors are saved together (`Journal::save`),
//! after the writes they cover are committed; a cursor never moves past a change that was
//! not written.

use std::collections::HashMap;

use crate::alert::pass::PassAlerts;
use crate::config::{AlertAction, Config, ConflictPolicy, DesiredState, Direction, TableMap};
use crate::endpoint::TableName;
use crate::plan::MapAction;
use crate::state::{
    CaptureLeft, ErrorPhase, InitialSyncRun, InitialSyncStatus, Phase, QueueState, RequestState,
    StateError, StateStore,
};
use crate::sync::link::{Connections, Link, LinkError, Prepared, ends, side_endpoint, side_table};
use crate::sync::{self, Journal, Way, live::Pending};

use super::failure::MapFailure;

/// Everything one map's step works with.
pub(super) struct MapContext<'s, 'c> {
    pub cfg: &'c Config,
    pub map: &'c TableMap,
    /// What the plan decided for this map in this pass.
    pub actions: Vec<MapAction>,
    pub connections: &'s mut Connections<'c>,
    pub alerts: &'s mut PassAlerts,
    pub queues: &'s mut crate::requests::Queues,
    /// The lease epoch this process drives the map with, which every write carries.
    pub fence: Option<crate::endpoint::Fence>,
    /// Told of a running initial sync's progress after each periodic save.
    pub progress: Option<std::sync::Arc<dyn crate::sync::ProgressObserver>>,
    /// Both tables, connected and described, once an action needed them.
    prepared: Option<Prepared>,
}

impl<'s, 'c> MapContext<'s, 'c> {
    pub fn new(
        cfg: &'c Config,
        map: &'c TableMap,
        actions: Vec<MapAction>,
        connections: &'s mut Connections<'c>,
        alerts: &'s mut PassAlerts,
        queues: &'s mut crate::requests::Queues,
    ) -> Self {
        MapContext {
            cfg,
            map,
            actions,
            connections,
            alerts,
            queues,
            fence: None,
            progress: None,
            prepared: None,
        }
    }

    /// Both tables, connecting and describing them on first use.
    async fn prepared(&mut self) -> Result<&Prepared, LinkError> {
        if self.prepared.is_none() {
            let mut prepared = Prepared::of(self.connections, self.map).await?;
            prepared.fence = self.fence.clone();
            self.prepared = Some(prepared);
        }
        Ok(self.prepared.as_ref().expect("prepared above"))
    }

    /// The phase a map-level event of this step is filed under.
    pub fn event_phase(&self, journal: &Journal<'_>) -> ErrorPhase {
        if journal.record.phase == Phase::InitialSync {
            ErrorPhase::InitialSync
        } else if self.actions.contains(&MapAction::Resume) {
            ErrorPhase::CatchUp
        } else {
            ErrorPhase::Live
        }
    }

    /// Evaluates the map's rules with the errors recorded so far and applies a hold when
    /// one fires with Pause or Stop. Returns whether the map is held.
    pub async fn check_alerts(&mut self, journal: &mut Journal<'_>) -> Result<bool, StateError> {
        // The windows are read from the store, which has what was recorded.
        journal.recorded.clear();
        let firings = self.alerts.observe(
            &*journal.store,
            self.map,
            journal.runtime.resumed_at.as_deref(),
            journal.record.held_by.as_deref(),
        )?;
        for firing in firings {
            if journal.record.held_by.is_none() {
                journal.record.held_by = Some(firing.rule.clone());
                journal.runtime.held_action = Some(firing.action);
                journal.log(
                    "HeldByAlert",
                    &format!("{}; action {:?}", firing.what, firing.action),
                )?;
                journal.save()?;
            }
        }
        Ok(journal.record.held_by.is_some())
    }

    /// Puts a held map in the phase its alert's action asks for, as far as the reachable
    /// endpoints allow.
    pub async fn enforce_hold(&mut self, journal: &mut Journal<'_>) -> Result<(), MapFailure> {
        let alert = journal.record.held_by.clone().unwrap_or_default();
        match journal.runtime.held_action {
            Some(AlertAction::Pause)
                if matches!(journal.record.phase, Phase::Running | Phase::InitialSync) =>
            {
                set_phase(journal, Phase::Paused, &format!("held by alert {alert}"))?;
            }
            Some(AlertAction::Stop) if journal.record.phase != Phase::Stopped => {
                let held = journal.record.held_by.clone();
                let stopped = self.stop(journal).await;
                journal.record.held_by = held;
                journal.save()?;
                stopped?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Runs the plan's actions and drains live changes while Running, then the queued
    /// requests that may run in the phase the map is in. Progress so far is saved whatever
    /// happens.
    pub async fn run(&mut self, journal: &mut Journal<'_>) -> Result<(), MapFailure> {
        self.run_actions(journal).await?;
        self.run_requests(journal).await
    }

    /// The plan's actions, then the drain of live changes while Running and not held.
    async fn run_actions(&mut self, journal: &mut Journal<'_>) -> Result<(), MapFailure> {
        if journal.record.phase == Phase::Stopped && !journal.runtime.capture_left.is_empty() {
            self.remove_capture_left(journal).await?;
        }
        let needs_work = journal.record.phase != Phase::Stopped
            || self.actions.iter().any(|a| !matches!(a, MapAction::Stop));
        if self
            .actions
            .iter()
            .any(|a| matches!(a, MapAction::Create { .. }))
            || !needs_work
        {
            return Ok(());
        }
        self.enforce_hold(journal).await?;
        let spec = &self.map.spec;
        // A copy re-run while the map is Paused leaves it Paused.
        let after_copy = match spec.state {
            DesiredState::Paused => Phase::Paused,
            _ => Phase::Running,
        };
        for action in self.actions.clone() {
            match action {
                MapAction::Pause => set_phase(journal, Phase::Paused, "spec.state is Paused")?,
                MapAction::Stop => self.stop(journal).await?,
                MapAction::Start
                | MapAction::StartWithInitialSync { .. }
                | MapAction::RerunInitialSync { .. } => {
                    let rerun = matches!(action, MapAction::RerunInitialSync { .. });
                    self.install(journal, rerun).await?;
                    if spec.initial_sync.enabled {
                        self.initial_sync(journal).await?;
                        // A rule that fires on the copy holds the map at once: it goes
                        // from InitialSync straight to the phase the hold asks for.
                        if self.check_alerts(journal).await? {
                            return self.enforce_hold(journal).await;
                        }
                    }
                    set_phase(journal, after_copy, "initial sync finished")?;
                }
                MapAction::Resume => {
                    self.drain(journal, ErrorPhase::CatchUp).await?;
                    if journal.record.held_by.is_some() {
                        return Ok(());
                    }
                    set_phase(journal, Phase::Running, "resumed: queue drained")?;
                }
                MapAction::MappingChanged => {
                    journal.log("MappingsUpdated", "column mapping changed")?
                }
                MapAction::Create { .. } | MapAction::Remove => {}
            }
        }
        // Resume an initial sync a crash or an outage interrupted.
        if journal.record.phase == Phase::InitialSync {
            self.initial_sync(journal).await?;
            if self.check_alerts(journal).await? {
                return self.enforce_hold(journal).await;
            }
            set_phase(journal, after_copy, "initial sync finished")?;
        }
        if journal.record.phase == Phase::Running && journal.record.held_by.is_none() {
            self.drain(journal, ErrorPhase::Live).await?;
        }
        Ok(())
    }

    /// Counts the map's queue on the sides that capture: `None` when one cannot be asked.
    /// A map that is Running and drained has none to count.
    pub async fn count_queue(&mut self, journal: &mut Journal<'_>, drained: bool) {
        journal.runtime.queue = if drained && journal.record.phase == Phase::Running {
            Some(QueueState::default())
        } else if journal.record.phase.captures() {
            self.queue_depth(journal).await
        } else {
            Some(QueueState::default())
        };
    }

    async fn queue_depth(&mut self, journal: &Journal<'_>) -> Option<QueueState> {
        sync::link::queue_of(self.connections, self.map, &journal.runtime).await
    }

    /// Runs the requests waiting for the map, in order, storing each status: a Dismiss in
    /// any phase, a Retry only while the map is Running, caught up and not held
    /// ([`crate::requests::runs_now`]). The first that cannot run now waits with every
    /// request after it.
    async fn run_requests(&mut self, journal: &mut Journal<'_>) -> Result<(), MapFailure> {
        let Some(mut queue) = self.queues.remove(&self.map.metadata.name) else {
            return Ok(());
        };
        let phase = journal.record.phase;
        let held = journal.record.held_by.is_some();
        let runnable = queue
            .iter()
            .take_while(|(r, _)| crate::requests::runs_now(r.spec.action, phase, held))
            .count();
        queue.truncate(runnable);
        if queue.is_empty() {
            return Ok(());
        }
        let batch = self.map.spec.batch_size as usize;
        // Only a Retry touches the endpoints.
        let needs_endpoints = queue
            .iter()
            .any(|(r, _)| r.spec.action == crate::config::RequestAction::Retry);
        let p = match needs_endpoints {
            true => Some(self.prepared().await?),
            false => None,
        };
        let ways: Vec<crate::requests::Way<'_>> = p
            .iter()
            .flat_map(|p| {
                p.links.iter().map(|link| crate::requests::Way {
                    sides: p.sides(link),
                    flow: &link.flow,
                })
            })
            .collect();
        for (request, mut status) in queue {
            // Visible while it runs; a crash leaves it Running, and the next pass queues it again.
            status.state = RequestState::Running;
            let applied = serde_json::to_value(&request).expect("request serializes");
            journal
                .store
                .put_request(&request.metadata.name, &applied, &status)?;
            crate::requests::execute(&request, &mut status, journal, &ways, batch).await?;
            journal
                .store
                .put_request(&request.metadata.name, &applied, &status)?;
            journal.save()?;
        }
        Ok(())
    }

    /// Installs capture. A fresh start moves the cursors to the end of the changelog:
    /// changes from there on are drained after the copy (re-applying one the copy already
    /// wrote is harmless, upserts are idempotent). A re-run keeps them, so a change queued
    /// before it (a delete, which a copy cannot carry) is still applied.
    async fn install(
        &mut self,
        journal: &mut Journal<'_>,
        keep_cursors: bool,
    ) -> Result<(), MapFailure> {
        let p = self.prepared().await?;
        for link in &p.links {
            let table = p.sides(link).from_table;
            let failed = |e| MapFailure::Link(link.failure(true, e));
            link.from.install_capture(table).await.map_err(failed)?;
            if !keep_cursors {
                let seq = link.from.max_change_seq(table).await.map_err(failed)?;
                sync::set_cursor(&mut journal.runtime, link.flow.way, seq);
            }
        }
        Ok(journal.save()?)
    }

    /// Runs (or resumes) the initial sync of the map's current `initialSync.run`. A re-run
    /// with `retryErrors: true` copies everything again, so the records that failed before
    /// are retried with the rest; with `retryErrors: false` ("Rerun execution without
    /// errors") it adds only keys the target lacks and leaves the records with open errors
    /// as they are. A run that stops on an endpoint or schema problem is Failed and resumes
    /// where it stopped.
    async fn initial_sync(&mut self, journal: &mut Journal<'_>) -> Result<(), MapFailure> {
        let map = self.map;
        let spec = &map.spec;
        let run = spec.initial_sync.run;
        let resuming = journal.record.phase == Phase::InitialSync
            && journal.runtime.initial_sync.as_ref().is_some_and(|r| {
                r.run == run
                    && matches!(
                        r.status,
                        InitialSyncStatus::Running | InitialSyncStatus::Failed
                    )
            });
        if resuming {
            let current = journal
                .runtime
                .initial_sync
                .as_mut()
                .expect("checked above");
            current.status = InitialSyncStatus::Running;
            current.problem = None;
        } else {
            let previous = journal.runtime.initial_sync.take();
            let rerun = previous.is_some();
            if let Some(previous) = previous {
                journal.runtime.earlier_runs.insert(0, previous);
                journal
                    .runtime
                    .earlier_runs
                    .truncate(crate::state::RUN_HISTORY);
            }
            let retry_errors = spec.initial_sync.retry_errors || !rerun;
            journal.runtime.initial_sync = Some(InitialSyncRun {
                run,
                status: InitialSyncStatus::Running,
                retry_errors,
                started_at: Some(crate::clock::now_secs()),
                ..Default::default()
            });
            journal.record.phase = Phase::InitialSync;
            journal.runtime.since = Some(crate::clock::now_secs());
            let how = if retry_errors {
                ""
            } else {
                " without errors (only missing keys; records with open errors are left as they are)"
            };
            journal.log(
                "InitialSyncStarted",
                &format!("initial sync run {run} started{how}"),
            )?;
            journal.save()?;
        }
        let started = std::time::Instant::now();
        let retry_errors = journal
            .runtime
            .initial_sync
            .as_ref()
            .is_none_or(|r| r.retry_errors);
        // The primary side is copied in full first; the other side only adds keys it lacks.
        let primary_way = match spec.initial_sync.primary {
            crate::config::Side::Source => Way::SourceToDestination,
            crate::config::Side::Destination => Way::DestinationToSource,
        };
        let p = match self.prepared().await {
            Ok(p) => p,
            Err(e) => return fail_run(journal, MapFailure::Link(e)),
        };
        let mut links: Vec<&Link> = p.links.iter().collect();
        links.sort_by_key(|l| l.flow.way != primary_way);
        for link in links {
            let skip = if retry_errors {
                std::collections::HashSet::new()
            } else {
                open_error_keys(&*journal.store, &journal.map, link.flow.way)?
            };
            let size = match spec.initial_sync.batch_size {
                Some(rows) => sync::initial::PageSize::Fixed(rows as usize),
                None => sync::initial::PageSize::Auto,
            };
            let copied = sync::initial::copy(
                &p.sides(link),
                &link.flow,
                size,
                link.flow.way != primary_way || !retry_errors,
                &skip,
                journal,
            )
            .await;
            if let Err(e) = copied {
                return fail_run(journal, MapFailure::of_sync(e, link));
            }
        }
        let run_state = journal.runtime.initial_sync.as_mut().expect("run started");
        let errors: u64 = run_state.directions.values().map(|d| d.errors).sum();
        run_state.status = if errors == 0 {
            InitialSyncStatus::Completed
        } else {
            InitialSyncStatus::CompletedWithErrors
        };
        run_state.finished_at = Some(crate::clock::now_secs());
        run_state.resume_after.clear();
        let counts = run_state
            .directions
            .iter()
            .map(|(w, d)| {
                format!(
                    "{w}: read {}, written {}, errors {}",
                    d.read, d.written, d.errors
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let status = run_state.status;
        let read: u64 = run_state.directions.values().map(|d| d.read).sum();
        let seconds = started.elapsed().as_secs_f64();
        journal.log(
            "InitialSyncFinished",
            &format!(
                "initial sync run {run} {status}: {counts} ({read} rows read in {seconds:.3} s{})",
                if resuming { ", resumed" } else { "" }
            ),
        )?;
        Ok(())
    }

    /// Drains captured changes of every way until caught up, resolving conflicts by
    /// policy. Rules are evaluated as errors happen: a Pause or Stop takes effect mid-drain.
    async fn drain(
        &mut self,
        journal: &mut Journal<'_>,
        phase: ErrorPhase,
    ) -> Result<(), MapFailure> {
        let batch = self.map.spec.batch_size as usize;
        let conflict = self.map.spec.conflict;
        self.prepared().await?;
        loop {
            if crate::shutdown::requested() {
                // A live drain can stop anywhere; a catch-up must not end as if it had drained.
                return match phase {
                    ErrorPhase::Live => Ok(()),
                    _ => Err(MapFailure::Interrupted),
                };
            }
            let p = self.prepared.as_ref().expect("prepared above");
            let mut pending: Vec<(Way, Pending)> = Vec::new();
            for link in &p.links {
                let cursor = sync::cursor(&journal.runtime, link.flow.way);
                let batch_pending = Pending::read(&p.sides(link), cursor, batch)
                    .await
                    .map_err(|e| MapFailure::of_sync(e, link))?;
                if !batch_pending.changes.is_empty() || batch_pending.last_seq != cursor {
                    pending.push((link.flow.way, batch_pending));
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            let losers = conflicts(conflict, &pending);
            for (way, batch_pending) in pending {
                let p = self.prepared.as_ref().expect("prepared above");
                let link = p.link(way);
                let empty = HashMap::new();
                let lost = losers.get(&way).unwrap_or(&empty);
                sync::live::apply(
                    &p.sides(link),
                    &link.flow,
                    batch_pending,
                    lost,
                    phase,
                    journal,
                )
                .await
                .map_err(|e| MapFailure::of_sync(e, link))?;
                if !journal.recorded.is_empty() && self.check_alerts(journal).await? {
                    return self.enforce_hold(journal).await;
                }
            }
        }
    }

    /// Stops the map: removes capture on each side that captures (unless another map
    /// still needs it) and drops the queue. A side that cannot be reached is remembered
    /// (`capture_left`) and cleaned when it is back; the map is Stopped either way and the
    /// failure says what is left.
    async fn stop(&mut self, journal: &mut Journal<'_>) -> Result<(), MapFailure> {
        let mut dropped = 0u64;
        let mut first_failure = None;
        for way in Way::of(self.map.spec.direction) {
            let (from_side, _) = ends(way);
            let endpoint = side_endpoint(self.map, from_side).to_string();
            let table_text = side_table(self.map, from_side).to_string();
            let cursor = sync::cursor(&journal.runtime, way);
            let in_use = table_in_use(
                self.cfg,
                Some(&self.map.metadata.name),
                &endpoint,
                &table_text,
            );
            match self.clear_capture(from_side, Some(cursor), !in_use).await {
                Ok(n) => dropped += n,
                Err(e) => {
                    if !in_use {
                        journal.runtime.capture_left.push(CaptureLeft {
                            endpoint: endpoint.clone(),
                            table: table_text.clone(),
                        });
                    }
                    first_failure.get_or_insert(e);
                }
            }
        }
        journal.runtime.cursor_source = 0;
        journal.runtime.cursor_destination = 0;
        journal.record.held_by = None;
        let left = describe_left(&journal.runtime.capture_left);
        set_phase(
            journal,
            Phase::Stopped,
            &format!("stopped: capture removed, {dropped} queued change(s) dropped{left}"),
        )?;
        match first_failure {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// On `side` of the map: counts the changes queued after `cursor` (if given; else 0),
    /// then, when `remove`, removes the capture and the changelog entries it wrote.
    async fn clear_capture(
        &mut self,
        side: crate::config::Side,
        cursor: Option<i64>,
        remove: bool,
    ) -> Result<u64, LinkError> {
        let ep = self.connections.side(self.map, side).await?;
        let failed = |source| LinkError::Endpoint {
            endpoint: side_endpoint(self.map, side).to_string(),
            side,
            source,
        };
        let table = TableName::parse(side_table(self.map, side)).map_err(failed)?;
        let max = ep.max_change_seq(&table).await.map_err(failed)?;
        let pending = match cursor {
            Some(cursor) => {
                ep.queue_depth(&table, cursor)
                    .await
                    .map_err(failed)?
                    .pending
            }
            None => 0,
        };
        if remove {
            ep.remove_capture(&table).await.map_err(failed)?;
            ep.changelog_trim(&table, max).await.map_err(failed)?;
        }
        Ok(pending)
    }

    /// Removes the capture a stop could not reach, now that its endpoint may be back.
    async fn remove_capture_left(&mut self, journal: &mut Journal<'_>) -> Result<(), MapFailure> {
        let left = std::mem::take(&mut journal.runtime.capture_left);
        let mut first_failure = None;
        for item in left {
            let side = if item.endpoint == self.map.spec.source.endpoint
                && item.table == self.map.spec.source.table
            {
                crate::config::Side::Source
            } else {
                crate::config::Side::Destination
            };
            match self.clear_capture(side, None, true).await {
                Ok(_) => journal.log(
                    "CaptureRemoved",
                    &format!(
                        "capture on {} of endpoint {} removed (left by the stop)",
                        item.table, item.endpoint
                    ),
                )?,
                Err(e) => {
                    journal.runtime.capture_left.push(item);
                    first_failure.get_or_insert(e);
                }
            }
        }
        journal.save()?;
        match first_failure {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// What a stop left to do, for its log line and condition.
pub(super) fn describe_left(left: &[CaptureLeft]) -> String {
    if left.is_empty() {
        return String::new();
    }
    let tables: Vec<String> = left
        .iter()
        .map(|l| format!("{} on endpoint {}", l.table, l.endpoint))
        .collect();
    format!(
        "; capture on {} is left to remove when that endpoint is reachable",
        tables.join(", ")
    )
}

/// Marks the current initial-sync run Failed (unless a shutdown stopped it: then it goes on
/// at the next start) and returns the failure.
fn fail_run(journal: &mut Journal<'_>, failure: MapFailure) -> Result<(), MapFailure> {
    let run_state = journal.runtime.initial_sync.as_mut().expect("run started");
    if !matches!(failure, MapFailure::Interrupted) {
        run_state.status = InitialSyncStatus::Failed;
        run_state.problem = Some(failure.to_string());
    }
    journal.save()?;
    Err(failure)
}

pub(super) fn set_phase(
    journal: &mut Journal<'_>,
    phase: Phase,
    cause: &str,
) -> Result<(), StateError> {
    if journal.record.phase != phase {
        journal.record.phase = phase;
        journal.runtime.since = Some(crate::clock::now_secs());
        journal.log(phase.name(), cause)?;
    }
    journal.save()
}

/// Whether a map of the config (other than `except`) still needs capture on this table.
pub(super) fn table_in_use(
    cfg: &Config,
    except: Option<&str>,
    endpoint: &str,
    table: &str,
) -> bool {
    cfg.maps
        .iter()
        .map(|m| &m.resource)
        .filter(|m| Some(m.metadata.name.as_str()) != except)
        .map(|m| &m.spec)
        .any(|s| {
            s.state != DesiredState::Stopped
                && ((s.source.endpoint == endpoint && s.source.table == table)
                    || (s.direction != Direction::SourceToDestination
                        && s.destination.endpoint == endpoint
                        && s.destination.table == table))
        })
}

/// The keys (as stored, `{"column": value}`) of a map's open errors in one way: what a
/// re-run without errors leaves alone. Read page by page.
fn open_error_keys(
    store: &dyn StateStore,
    map: &str,
    way: Way,
) -> Result<std::collections::HashSet<String>, StateError> {
    let mut keys = std::collections::HashSet::new();
    let mut query = crate::state::ErrorQuery::open(map);
    query.direction = Some(way.name().to_string());
    query.scope = Some(crate::state::ErrorScope::Record);
    loop {
        let page = store.query_errors(&query, crate::state::Order::NewestFirst, 10_000)?;
        let Some(last) = page.last() else {
            return Ok(keys);
        };
        query.below_id = Some(last.id);
        keys.extend(page.into_iter().map(|e| e.key));
    }
}

/// For keys changed on both sides of a bidirectional map, the change that loses by policy.
fn conflicts(
    policy: ConflictPolicy,
    pending: &[(Way, Pending)],
) -> HashMap<Way, HashMap<String, String>> {
    let mut losers: HashMap<Way, HashMap<String, String>> = HashMap::new();
    let [(w1, p1), (w2, p2)] = pending else {
        return losers;
    };
    let (t1, t2) = (p1.times(), p2.times());
    for (key, at1) in &t1 {
        let Some(at2) = t2.get(key) else { continue };
        let loser = match policy {
            ConflictPolicy::SourceWins => Way::DestinationToSource,
            ConflictPolicy::DestinationWins => Way::SourceToDestination,
            ConflictPolicy::LastWriteWins => {
                if at1 >= at2 {
                    *w2
                } else {
                    *w1
                }
            }
        };
        losers.entry(loser).or_default().insert(
            key.clone(),
            format!(
                "conflict: the key changed on both sides; {policy:?} kept the other side's change"
            ),
        );
    }
    losers
}
