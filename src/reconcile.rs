//! One reconcile pass: the one place where map phases change. For each map it compares the
//! desired state with the stored phase (the same decision as the plan), drives the map there
//! (install capture, initial sync, pause, resume with catch-up, stop), drains captured changes
//! until caught up, and saves progress after every committed batch. Status files are written
//! at the end by `status`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{
    Config, ConflictPolicy, DesiredState, Direction, EndpointConfig, Side, TableMap,
};
use crate::endpoint::{self, Endpoint, EndpointSpec, TableInfo, TableName};
use crate::plan::{MapAction, ObservedMap, map_actions};
use crate::state::{InitialSyncRun, MapRecord, MapRuntime, Phase, StateError, StateStore};
use crate::sync::{self, Flow, Journal, Sides, SyncError, Way, live::Pending};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Config(String),
    #[error("writing status files: {0}")]
    Status(#[from] std::io::Error),
    #[error("purging errored records: {0}")]
    Purge(#[from] crate::errors::PurgeError),
}

/// What one pass did, per map: the phase it ended in and any map-level problem.
#[derive(Debug, Default)]
pub struct Report {
    pub maps: Vec<(String, Phase, Option<String>)>,
    /// Each alert rule's state per matched map, after the pass.
    pub alerts: std::collections::BTreeMap<String, crate::alert::RuleState>,
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

pub(crate) fn endpoint_spec(dir: &Path, cfg: &EndpointConfig) -> Result<EndpointSpec, String> {
    let env = |name: &str| {
        std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
    };
    if let Some(s) = &cfg.sqlite {
        return Ok(EndpointSpec::Sqlite {
            path: dir.join(&s.path),
        });
    }
    if let Some(p) = &cfg.postgres {
        return Ok(EndpointSpec::Postgres {
            url: env(&p.url_from_env)?,
        });
    }
    if let Some(m) = &cfg.mysql {
        return Ok(EndpointSpec::Mysql {
            url: env(&m.url_from_env)?,
        });
    }
    Err("no engine configured".into())
}

/// Connected endpoints, by name, opened on first use.
struct Endpoints<'a> {
    dir: PathBuf,
    cfg: &'a Config,
    open: HashMap<String, Result<Arc<dyn Endpoint>, String>>,
}

impl<'a> Endpoints<'a> {
    async fn get(&mut self, name: &str) -> Result<Arc<dyn Endpoint>, String> {
        if !self.open.contains_key(name) {
            let cfg = &self.cfg.project.resource.spec.endpoints[name];
            let result = match endpoint_spec(&self.dir, cfg) {
                Ok(spec) => endpoint::connect(&spec)
                    .await
                    .map(Arc::from)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            self.open.insert(name.to_string(), result);
        }
        match &self.open[name] {
            Ok(ep) => Ok(Arc::clone(ep)),
            Err(e) => Err(format!("endpoint {name}: {e}")),
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// How a pass differs from a plain `reconcile`.
#[derive(Clone, Debug, Default)]
pub struct PassOptions {
    /// Run only this request (`errors retry|dismiss --apply`); the others stay queued.
    pub only_request: Option<String>,
    /// Drive only these maps (every map of the config when `None`). `dualwrite run` drives
    /// the maps it holds a lease on. Maps removed from the config are forgotten only by a
    /// pass whose set names them (or that has none).
    pub only_maps: Option<std::collections::HashSet<String>>,
    /// Woken by new captured changes only: drain, and leave the purge and the admission of
    /// requests (which reads the git history) to the next full pass.
    pub changes_only: bool,
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
    let mut endpoints = Endpoints {
        dir: dir.to_path_buf(),
        cfg,
        open: HashMap::new(),
    };
    let mut report = Report::default();
    let mut queues = crate::requests::Queues::default();
    if !options.changes_only {
        crate::errors::purge(
            store,
            dir,
            &cfg.project.resource,
            crate::alert::millis(chrono::Utc::now()),
        )?;
        let provenance = crate::requests::provenance(dir);
        queues = crate::requests::admit(store, cfg, &provenance, revision)?.1;
    }
    if let Some(only) = &options.only_request {
        for queue in queues.values_mut() {
            queue.retain(|(r, _)| &r.metadata.name == only);
        }
    }
    let mut alerts = load_alerts(store, cfg)?;
    let mut deliveries = Vec::new();
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
        let record = stored.get(&name).cloned();
        let runtime = store.runtime(&name)?;
        let outcome = drive(
            store,
            &mut endpoints,
            &mut alerts,
            &mut deliveries,
            &mut queues,
            cfg,
            map,
            record,
            runtime,
            revision,
        )
        .await?;
        report.maps.push((name, outcome.0, outcome.1));
    }
    let index = cfg.map_index();
    for (name, record) in &stored {
        if index.get(name).is_none() && options.includes(name) {
            remove(&mut endpoints, cfg, record).await;
            store.log(
                name,
                &now(),
                "Removed",
                "removed from the config: stopped and forgotten",
            )?;
            store.forget_map(name)?;
        }
    }
    // Deliveries ran in the background while maps synced; record how each went.
    for (rule, map, handle) in deliveries {
        let results = handle.await.unwrap_or_default();
        let failed: Vec<String> = results
            .iter()
            .filter(|d| !d.ok)
            .map(|d| format!("{}: {}", d.target, d.error.clone().unwrap_or_default()))
            .collect();
        let state = alerts.state_mut(&rule, &map);
        state.last_delivery_error = (!failed.is_empty()).then(|| failed.join("; "));
        if !failed.is_empty() {
            store.log(
                &map,
                &now(),
                "NotificationFailed",
                &format!("alert {rule}: {}", failed.join("; ")),
            )?;
        }
    }
    for located in &cfg.alerts {
        let rule = &located.resource;
        let state = alerts
            .states
            .get(&rule.metadata.name)
            .cloned()
            .unwrap_or_default();
        store.save_alert_state(
            &rule.metadata.name,
            &serde_json::to_value(&state).expect("state serializes"),
        )?;
        store.put_alert(&crate::state::AppliedRecord {
            name: rule.metadata.name.clone(),
            applied: serde_json::to_value(rule).expect("rule serializes"),
            revision: Some(revision.to_string()),
            state: None,
        })?;
        report.alerts.insert(rule.metadata.name.clone(), state);
    }
    for applied in store.alerts()? {
        if !cfg
            .alerts
            .iter()
            .any(|a| a.resource.metadata.name == applied.name)
        {
            store.forget_alert(&applied.name)?;
        }
    }
    Ok(report)
}

/// The alert engine for a pass: the config's rules, their stored state, and the errors
/// recorded within the longest window (so windows survive restarts).
fn load_alerts(
    store: &dyn StateStore,
    cfg: &Config,
) -> Result<crate::alert::Engine, ReconcileError> {
    let mut engine = crate::alert::Engine {
        rules: cfg.alerts.iter().map(|a| a.resource.clone()).collect(),
        ..Default::default()
    };
    for rule in &engine.rules {
        if let Some(v) = store.alert_state(&rule.metadata.name)?
            && let Ok(state) = serde_json::from_value(v)
        {
            engine.states.insert(rule.metadata.name.clone(), state);
        }
    }
    if !engine.rules.is_empty() {
        let since = crate::alert::format_time(
            crate::alert::millis(chrono::Utc::now()) - engine.longest_window(),
        );
        for (map, error_type, at) in store.error_events_since(&since)? {
            if let Some(at) = crate::alert::parse_time(&at) {
                engine.windows.record(&map, &error_type, at);
            }
        }
    }
    Ok(engine)
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
    runtime.resumed_at = Some(crate::alert::format_time(crate::alert::millis(
        chrono::Utc::now(),
    )));
    store.save(&record, &runtime)?;
    store.log(
        map,
        &now(),
        "Resumed",
        &format!("hold by alert {alert} ended by {cause}"),
    )?;
    Ok(Some(alert))
}

/// Notifications being delivered in the background: (rule, map, deliveries).
type Deliveries = Vec<(
    String,
    String,
    tokio::task::JoinHandle<Vec<crate::notify::Delivery>>,
)>;

/// Evaluates the rules for a map with the errors it recorded so far; holds the map when a
/// Pause or Stop rule fires and starts the notifications. Returns whether the map is held.
async fn check_alerts(
    cfg: &Config,
    map: &TableMap,
    alerts: &mut crate::alert::Engine,
    deliveries: &mut Deliveries,
    journal: &mut Journal<'_>,
) -> Result<bool, StateError> {
    let name = map.metadata.name.clone();
    for (error_type, at) in journal.recorded.drain(..) {
        if let Some(at) = crate::alert::parse_time(&at) {
            alerts.windows.record(&name, &error_type, at);
        }
    }
    let resumed_at = journal
        .runtime
        .resumed_at
        .as_deref()
        .and_then(crate::alert::parse_time);
    let now_ms = crate::alert::millis(chrono::Utc::now());
    for (rule, event) in alerts.evaluate_map(map, resumed_at, now_ms) {
        let rule_name = rule.metadata.name.clone();
        let (kind, count, notify) = match event {
            crate::alert::Event::Fired {
                count,
                action,
                notify,
            } => {
                let what = format!(
                    "alert {rule_name} fired: {count} {:?} within {}",
                    rule.spec.error_type, rule.spec.window
                );
                journal.log("AlertFired", &what)?;
                if action != crate::config::AlertAction::None && journal.record.held_by.is_none() {
                    journal.record.held_by = Some(rule_name.clone());
                    journal.runtime.held_action = Some(format!("{action:?}"));
                    journal.log("HeldByAlert", &format!("{what}; action {action:?}"))?;
                    journal.save()?;
                }
                (crate::notify::NotificationKind::Firing, count, notify)
            }
            crate::alert::Event::Resolved { count, notify } => {
                journal.log(
                    "AlertResolved",
                    &format!("alert {rule_name} resolved: {count} in the window"),
                )?;
                (crate::notify::NotificationKind::Resolved, count, notify)
            }
        };
        let Some(targets) = rule.spec.notify.clone().filter(|_| notify) else {
            continue;
        };
        let newest = journal
            .store
            .open_errors(&name, 5)?
            .into_iter()
            .map(|e| crate::notify::ErrorLine {
                id: e.id,
                at: e.last_at,
                error_type: e.error_type,
                direction: e.direction,
                key: e.key,
                message: e.message,
                code: e.code,
            })
            .collect();
        let n = crate::notify::Notification {
            rule: rule_name.clone(),
            map: name.clone(),
            kind,
            error_type: format!("{:?}", rule.spec.error_type),
            count,
            threshold: rule.spec.threshold,
            window: rule.spec.window.to_string(),
            action: format!("{:?}", rule.spec.action),
            action_taken: alerts
                .state_mut(&rule_name, &name)
                .action_taken
                .clone()
                .filter(|_| kind == crate::notify::NotificationKind::Firing),
            newest_errors: newest,
            at: chrono::Utc::now(),
        };
        let smtp = cfg
            .project
            .resource
            .spec
            .notifications
            .as_ref()
            .and_then(|n| n.smtp.clone());
        let handle = tokio::task::spawn_blocking(move || {
            crate::notify::send(
                &n,
                &targets,
                smtp.as_ref(),
                &crate::notify::Retry::default(),
            )
        });
        deliveries.push((rule_name, name.clone(), handle));
    }
    Ok(journal.record.held_by.is_some())
}

/// Puts a held map in the phase its alert's action asks for.
async fn enforce_hold(
    cfg: &Config,
    map: &TableMap,
    p: &Prepared,
    journal: &mut Journal<'_>,
) -> Result<(), String> {
    let alert = journal.record.held_by.clone().unwrap_or_default();
    match journal.runtime.held_action.as_deref() {
        Some("Pause") if matches!(journal.record.phase, Phase::Running | Phase::InitialSync) => {
            set_phase(journal, Phase::Paused, &format!("held by alert {alert}"))
                .map_err(|e| e.to_string())
        }
        Some("Stop") if journal.record.phase != Phase::Stopped => {
            let held = journal.record.held_by.clone();
            stop(cfg, map, p, journal).await?;
            journal.record.held_by = held;
            journal.save().map_err(|e| e.to_string())
        }
        _ => Ok(()),
    }
}

/// Removes the capture of a map that left the config, unless another map still needs it.
async fn remove(endpoints: &mut Endpoints<'_>, cfg: &Config, record: &MapRecord) {
    let Some(applied) = record
        .applied
        .as_ref()
        .and_then(|a| serde_json::from_value::<TableMap>(a.clone()).ok())
    else {
        return;
    };
    let source = &applied.spec.source;
    let (Ok(ep), Ok(table)) = (
        endpoints.get(&source.endpoint).await,
        TableName::parse(&source.table),
    ) else {
        return;
    };
    if !table_in_use(cfg, None, &source.endpoint, &source.table) {
        let _ = ep.remove_capture(&table).await;
    }
}

/// Whether a map of the config (other than `except`) still needs capture on this table.
fn table_in_use(cfg: &Config, except: Option<&str>, endpoint: &str, table: &str) -> bool {
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

/// A map's tables, described, and each way it syncs with its endpoints connected.
struct Prepared {
    source: TableName,
    destination: TableName,
    source_info: TableInfo,
    destination_info: TableInfo,
    links: Vec<Link>,
}

/// One way of a map: its column mapping and the endpoints it reads from and writes to.
struct Link {
    flow: Flow,
    from: Arc<dyn Endpoint>,
    to: Arc<dyn Endpoint>,
    /// The table as written in the config, on the side data comes from.
    from_table_text: String,
    from_endpoint: String,
}

impl Prepared {
    /// Both sides of a way, for the sync functions.
    fn sides<'p>(&'p self, link: &'p Link) -> Sides<'p> {
        let (from_table, from_info, to_table, to_info) = match link.flow.way {
            Way::SourceToDestination => (
                &self.source,
                &self.source_info,
                &self.destination,
                &self.destination_info,
            ),
            Way::DestinationToSource => (
                &self.destination,
                &self.destination_info,
                &self.source,
                &self.source_info,
            ),
        };
        Sides {
            from: &link.from,
            from_table,
            from_info,
            to: &link.to,
            to_table,
            to_info,
        }
    }

    fn link(&self, way: Way) -> &Link {
        self.links
            .iter()
            .find(|l| l.flow.way == way)
            .expect("a link per way")
    }
}

async fn prepare(endpoints: &mut Endpoints<'_>, map: &TableMap) -> Result<Prepared, String> {
    let spec = &map.spec;
    let source = TableName::parse(&spec.source.table).map_err(|e| e.to_string())?;
    let destination = TableName::parse(&spec.destination.table).map_err(|e| e.to_string())?;
    let source_ep = endpoints.get(&spec.source.endpoint).await?;
    let destination_ep = endpoints.get(&spec.destination.endpoint).await?;
    let source_info = source_ep
        .introspect(&source)
        .await
        .map_err(|e| format!("source: {e}"))?;
    let destination_info = destination_ep
        .introspect(&destination)
        .await
        .map_err(|e| format!("destination: {e}"))?;
    let mut links = Vec::new();
    for way in Way::of(spec.direction) {
        let link = match way {
            Way::SourceToDestination => Link {
                flow: Flow::compile(map, way, &source_info, &destination_info)?,
                from: Arc::clone(&source_ep),
                to: Arc::clone(&destination_ep),
                from_table_text: spec.source.table.clone(),
                from_endpoint: spec.source.endpoint.clone(),
            },
            Way::DestinationToSource => Link {
                flow: Flow::compile(map, way, &destination_info, &source_info)?,
                from: Arc::clone(&destination_ep),
                to: Arc::clone(&source_ep),
                from_table_text: spec.destination.table.clone(),
                from_endpoint: spec.destination.endpoint.clone(),
            },
        };
        links.push(link);
    }
    Ok(Prepared {
        source,
        destination,
        source_info,
        destination_info,
        links,
    })
}

/// Captured changes after `after` still waiting to be applied.
async fn queued(link: &Link, table: &TableName, mut after: i64) -> Result<u64, String> {
    let mut n = 0;
    loop {
        let page = link
            .from
            .read_changes(table, after, 10_000)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        after = last.seq;
        n += page.len() as u64;
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    store: &mut dyn StateStore,
    endpoints: &mut Endpoints<'_>,
    alerts: &mut crate::alert::Engine,
    deliveries: &mut Deliveries,
    queues: &mut crate::requests::Queues,
    cfg: &Config,
    map: &TableMap,
    record: Option<MapRecord>,
    runtime: MapRuntime,
    revision: &str,
) -> Result<(Phase, Option<String>), ReconcileError> {
    let name = map.metadata.name.clone();
    let observed = record.as_ref().map(|r| ObservedMap {
        phase: r.phase,
        applied: r
            .applied
            .as_ref()
            .and_then(|a| serde_json::from_value(a.clone()).ok()),
        held_by: r.held_by.clone(),
    });
    let actions = map_actions(map, observed.as_ref());
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
            &now(),
            "Resumed",
            &format!("hold by alert {alert} ended: spec.state changed"),
        )?;
    }
    record.applied = Some(serde_json::to_value(map).expect("map serializes"));
    record.applied_revision = Some(revision.to_string());
    let ended_hold =
        observed.as_ref().is_some_and(|o| o.held_by.is_some()) && record.held_by.is_none();
    let mut runtime = runtime;
    if ended_hold {
        runtime.held_action = None;
        runtime.resumed_at = Some(crate::alert::format_time(crate::alert::millis(
            chrono::Utc::now(),
        )));
    }
    let mut journal = Journal {
        store,
        map: name.clone(),
        record,
        runtime,
        recorded: Vec::new(),
    };
    if is_new {
        journal.log("Created", "map created from the config")?;
    }
    let outcome = drive_actions(
        endpoints,
        cfg,
        map,
        &actions,
        alerts,
        deliveries,
        queues,
        &mut journal,
    )
    .await;
    // Rules are evaluated every pass, so a rule resolves when its errors age out.
    check_alerts(cfg, map, alerts, deliveries, &mut journal).await?;
    match outcome {
        Ok(()) => {
            journal.runtime.problem = None;
        }
        Err(problem) => {
            if journal.runtime.problem.as_deref() != Some(problem.as_str()) {
                journal.log("Error", &problem)?;
            }
            journal.runtime.problem = Some(problem);
        }
    }
    journal.save()?;
    Ok((journal.record.phase, journal.runtime.problem.clone()))
}

fn set_phase(journal: &mut Journal<'_>, phase: Phase, cause: &str) -> Result<(), StateError> {
    if journal.record.phase != phase {
        journal.record.phase = phase;
        journal.runtime.since = Some(now());
        journal.log(phase.name(), cause)?;
    }
    journal.save()
}

/// Runs the plan's actions for one map, then drains and runs its queued requests while
/// Running. A map-level problem (endpoint down, table missing) comes back as its message;
/// progress so far is saved.
#[allow(clippy::too_many_arguments)]
async fn drive_actions(
    endpoints: &mut Endpoints<'_>,
    cfg: &Config,
    map: &TableMap,
    actions: &[MapAction],
    alerts: &mut crate::alert::Engine,
    deliveries: &mut Deliveries,
    queues: &mut crate::requests::Queues,
    journal: &mut Journal<'_>,
) -> Result<(), String> {
    let st = |e: StateError| e.to_string();
    let needs_tables = journal.record.phase != Phase::Stopped
        || actions.iter().any(|a| !matches!(a, MapAction::Stop));
    if actions
        .iter()
        .any(|a| matches!(a, MapAction::Create { .. }))
        || !needs_tables
    {
        return Ok(());
    }
    let prepared = prepare(endpoints, map).await?;
    enforce_hold(cfg, map, &prepared, journal).await?;
    let spec = &map.spec;
    // A copy re-run while the map is Paused leaves it Paused.
    let after_copy = match spec.state {
        DesiredState::Paused => Phase::Paused,
        _ => Phase::Running,
    };
    for action in actions {
        match action {
            MapAction::Pause => {
                set_phase(journal, Phase::Paused, "spec.state is Paused").map_err(st)?
            }
            MapAction::Stop => {
                stop(cfg, map, &prepared, journal).await?;
            }
            MapAction::Start
            | MapAction::StartWithInitialSync { .. }
            | MapAction::RerunInitialSync { .. } => {
                let rerun = matches!(action, MapAction::RerunInitialSync { .. });
                install(&prepared, journal, rerun).await?;
                if spec.initial_sync.enabled {
                    initial_sync(map, &prepared, journal).await?;
                    let held = check_alerts(cfg, map, alerts, deliveries, journal)
                        .await
                        .map_err(|e| e.to_string())?;
                    if held {
                        set_phase(journal, after_copy, "initial sync finished").map_err(st)?;
                        return enforce_hold(cfg, map, &prepared, journal).await;
                    }
                }
                set_phase(journal, after_copy, "initial sync finished").map_err(st)?;
            }
            MapAction::Resume => {
                drain(cfg, map, &prepared, "CatchUp", alerts, deliveries, journal).await?;
                set_phase(journal, Phase::Running, "resumed: queue drained").map_err(st)?;
            }
            MapAction::MappingChanged => journal
                .log("MappingsUpdated", "column mapping changed")
                .map_err(st)?,
            MapAction::Create { .. } | MapAction::Remove => {}
        }
    }
    // Resume an initial sync a crash interrupted.
    if journal.record.phase == Phase::InitialSync {
        initial_sync(map, &prepared, journal).await?;
        set_phase(journal, after_copy, "initial sync finished").map_err(st)?;
    }
    if journal.record.phase == Phase::Running && journal.record.held_by.is_none() {
        drain(cfg, map, &prepared, "Live", alerts, deliveries, journal).await?;
        if journal.record.held_by.is_none() {
            run_requests(map, &prepared, queues, journal)
                .await
                .map_err(st)?;
        }
    }
    journal.runtime.pending = 0;
    if journal.record.phase == Phase::Paused {
        for link in &prepared.links {
            let table = prepared.sides(link).from_table;
            journal.runtime.pending +=
                queued(link, table, sync::cursor(&journal.runtime, link.flow.way)).await?;
        }
    }
    Ok(())
}

/// Runs the requests waiting for a Running, caught-up map, in order, storing each status.
async fn run_requests(
    map: &TableMap,
    p: &Prepared,
    queues: &mut crate::requests::Queues,
    journal: &mut Journal<'_>,
) -> Result<(), StateError> {
    let Some(queue) = queues.remove(&map.metadata.name) else {
        return Ok(());
    };
    let ways: Vec<crate::requests::Way<'_>> = p
        .links
        .iter()
        .map(|link| crate::requests::Way {
            sides: p.sides(link),
            flow: &link.flow,
        })
        .collect();
    for (request, mut status) in queue {
        // Visible while it runs; a crash leaves it Running, and the next pass queues it again.
        status.state = "Running".into();
        journal.store.put_request(
            &request.metadata.name,
            &serde_json::to_value(&request).expect("request serializes"),
            &status,
        )?;
        crate::requests::execute(
            &request,
            &mut status,
            journal,
            &ways,
            map.spec.batch_size as usize,
        )
        .await?;
        journal.store.put_request(
            &request.metadata.name,
            &serde_json::to_value(&request).expect("request serializes"),
            &status,
        )?;
        journal.save()?;
    }
    Ok(())
}

/// Installs capture. A fresh start moves the cursors to the end of the changelog: changes
/// from there on are drained after the copy (re-applying one the copy already wrote is
/// harmless, upserts are idempotent). A re-run keeps them, so a change queued before it
/// (a delete, which a copy cannot carry) is still applied.
async fn install(
    p: &Prepared,
    journal: &mut Journal<'_>,
    keep_cursors: bool,
) -> Result<(), String> {
    for link in &p.links {
        let table = p.sides(link).from_table;
        link.from
            .install_capture(table)
            .await
            .map_err(|e| e.to_string())?;
        if !keep_cursors {
            let seq = link
                .from
                .max_change_seq(table)
                .await
                .map_err(|e| e.to_string())?;
            sync::set_cursor(&mut journal.runtime, link.flow.way, seq);
        }
    }
    journal.save().map_err(|e| e.to_string())
}

/// Runs (or resumes) the initial sync of the map's current `initialSync.run`. A re-run with
/// `retryErrors: true` copies everything again, so the records that failed before are
/// retried with the rest; with `retryErrors: false` ("Rerun execution without errors") it
/// adds only keys the target lacks and leaves the records with open errors as they are. A
/// run that stops on an endpoint or schema problem is Failed and resumes where it stopped.
async fn initial_sync(
    map: &TableMap,
    p: &Prepared,
    journal: &mut Journal<'_>,
) -> Result<(), String> {
    let spec = &map.spec;
    let run = spec.initial_sync.run;
    let resuming = journal.record.phase == Phase::InitialSync
        && journal
            .runtime
            .initial_sync
            .as_ref()
            .is_some_and(|r| r.run == run && matches!(r.status.as_str(), "Running" | "Failed"));
    if resuming {
        let current = journal
            .runtime
            .initial_sync
            .as_mut()
            .expect("checked above");
        current.status = "Running".into();
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
            status: "Running".into(),
            retry_errors,
            started_at: Some(now()),
            ..Default::default()
        });
        journal.record.phase = Phase::InitialSync;
        journal.runtime.since = Some(now());
        let how = if retry_errors {
            ""
        } else {
            " without errors (only missing keys; records with open errors are left as they are)"
        };
        journal
            .log(
                "InitialSyncStarted",
                &format!("initial sync run {run} started{how}"),
            )
            .map_err(|e| e.to_string())?;
        journal.save().map_err(|e| e.to_string())?;
    }
    let started = std::time::Instant::now();
    let retry_errors = journal
        .runtime
        .initial_sync
        .as_ref()
        .is_none_or(|r| r.retry_errors);
    // The primary side is copied in full first; the other side only adds keys it lacks.
    let primary_way = match spec.initial_sync.primary {
        Side::Source => Way::SourceToDestination,
        Side::Destination => Way::DestinationToSource,
    };
    let mut links: Vec<&Link> = p.links.iter().collect();
    links.sort_by_key(|l| l.flow.way != primary_way);
    for link in links {
        let skip = if retry_errors {
            std::collections::HashSet::new()
        } else {
            open_error_keys(journal.store, &journal.map, link.flow.way)
                .map_err(|e| e.to_string())?
        };
        let copied = sync::initial::copy(
            &p.sides(link),
            &link.flow,
            spec.batch_size as usize,
            link.flow.way != primary_way || !retry_errors,
            &skip,
            journal,
        )
        .await;
        if let Err(e) = copied {
            let problem = e.to_string();
            let run_state = journal.runtime.initial_sync.as_mut().expect("run started");
            // Stopped for a shutdown, the run is not Failed: it goes on at the next start.
            if !matches!(e, sync::SyncError::Stopped) {
                run_state.status = "Failed".into();
                run_state.problem = Some(problem.clone());
            }
            journal.save().map_err(|e| e.to_string())?;
            return Err(problem);
        }
    }
    let run_state = journal.runtime.initial_sync.as_mut().expect("run started");
    let errors: u64 = run_state.directions.values().map(|d| d.errors).sum();
    run_state.status = if errors == 0 {
        "Completed".into()
    } else {
        "CompletedWithErrors".into()
    };
    run_state.finished_at = Some(now());
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
    let status = run_state.status.clone();
    let read: u64 = run_state.directions.values().map(|d| d.read).sum();
    let seconds = started.elapsed().as_secs_f64();
    journal
        .log(
            "InitialSyncFinished",
            &format!(
                "initial sync run {run} {status}: {counts} ({read} rows read in {seconds:.3} s{})",
                if resuming { ", resumed" } else { "" }
            ),
        )
        .map_err(|e| e.to_string())
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
    loop {
        let page = store.query_errors(&query, crate::state::Order::NewestFirst, 10_000)?;
        let Some(last) = page.last() else {
            return Ok(keys);
        };
        query.below_id = Some(last.id);
        keys.extend(page.into_iter().map(|e| e.key));
    }
}

/// Drains captured changes of every way until caught up, resolving conflicts by policy.
async fn drain(
    cfg: &Config,
    map: &TableMap,
    p: &Prepared,
    phase: &str,
    alerts: &mut crate::alert::Engine,
    deliveries: &mut Deliveries,
    journal: &mut Journal<'_>,
) -> Result<(), String> {
    let batch = map.spec.batch_size as usize;
    loop {
        if crate::shutdown::requested() {
            // A live drain can stop anywhere; a catch-up must not end as if it had drained.
            return match phase {
                "Live" => Ok(()),
                _ => Err("shutting down before the queue was drained: catch-up goes on at the next start".into()),
            };
        }
        let mut pending: Vec<(Way, Pending)> = Vec::new();
        for link in &p.links {
            let cursor = sync::cursor(&journal.runtime, link.flow.way);
            let batch_pending = Pending::read(&p.sides(link), cursor, batch)
                .await
                .map_err(|e: SyncError| e.to_string())?;
            if !batch_pending.changes.is_empty() || batch_pending.last_seq != cursor {
                pending.push((link.flow.way, batch_pending));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let losers = conflicts(map.spec.conflict, &pending);
        for (way, batch_pending) in pending {
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
            .map_err(|e| e.to_string())?;
            // Rules are evaluated as errors happen: a Pause or Stop takes effect mid-drain.
            if !journal.recorded.is_empty()
                && check_alerts(cfg, map, alerts, deliveries, journal)
                    .await
                    .map_err(|e| e.to_string())?
            {
                return enforce_hold(cfg, map, p, journal).await;
            }
        }
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

async fn stop(
    cfg: &Config,
    map: &TableMap,
    p: &Prepared,
    journal: &mut Journal<'_>,
) -> Result<(), String> {
    let mut dropped = 0u64;
    for link in &p.links {
        let table = p.sides(link).from_table;
        let max = link
            .from
            .max_change_seq(table)
            .await
            .map_err(|e| e.to_string())?;
        dropped += queued(link, table, sync::cursor(&journal.runtime, link.flow.way)).await?;
        if !table_in_use(
            cfg,
            Some(&map.metadata.name),
            &link.from_endpoint,
            &link.from_table_text,
        ) {
            link.from
                .remove_capture(table)
                .await
                .map_err(|e| e.to_string())?;
            link.from
                .changelog_trim(table, max)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    journal.runtime.cursor_source = 0;
    journal.runtime.cursor_destination = 0;
    journal.record.held_by = None;
    set_phase(
        journal,
        Phase::Stopped,
        &format!("stopped: capture removed, {dropped} queued change(s) dropped"),
    )
    .map_err(|e| e.to_string())
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
    let mut endpoints = Endpoints {
        dir: dir.to_path_buf(),
        cfg,
        open: HashMap::new(),
    };
    let mut prepared: HashMap<String, Result<Prepared, String>> = HashMap::new();
    let mut previews = HashMap::new();
    for record in records {
        let preview = match cfg.map(&record.map) {
            None => Err(format!("map {} is no longer in the config", record.map)),
            Some(map) => {
                if !prepared.contains_key(&record.map) {
                    let p = prepare(&mut endpoints, map).await;
                    prepared.insert(record.map.clone(), p);
                }
                match &prepared[&record.map] {
                    Err(problem) => Err(problem.clone()),
                    Ok(p) => preview_one(p, record).await,
                }
            }
        };
        previews.insert(
            record.id,
            preview.unwrap_or_else(|problem| RowPreview {
                problem: Some(problem),
                ..Default::default()
            }),
        );
    }
    previews
}

async fn preview_one(
    p: &Prepared,
    record: &crate::state::ErrorRecord,
) -> Result<RowPreview, String> {
    let link = p
        .links
        .iter()
        .find(|l| l.flow.way.name() == record.direction)
        .ok_or_else(|| format!("the map no longer syncs {}", record.direction))?;
    let sides = p.sides(link);
    let flow = &link.flow;
    let kinds = sync::key_kinds(flow, sides.from_info);
    let key = crate::requests::key_values(&record.key, &flow.from_key, &kinds)
        .ok_or_else(|| format!("the stored key {} does not fit the table's key", record.key))?;
    let json = |columns: &[String], row: &[crate::endpoint::Value]| {
        serde_json::from_str(&sync::transform::row_json(columns, row)).ok()
    };
    let source = sides
        .from
        .fetch_rows(
            sides.from_table,
            &flow.read_columns,
            &flow.from_key,
            std::slice::from_ref(&key),
        )
        .await
        .map_err(|e| e.to_string())?
        .pop();
    let mut preview = RowPreview {
        source_row: source.as_ref().and_then(|r| json(&flow.read_columns, r)),
        retry_deletes: source.is_none(),
        ..Default::default()
    };
    let mut target_key = key;
    if let Some(row) = source {
        let converted = flow.apply(&row).and_then(|mapped| {
            sides
                .to_info
                .convert_row_owned(sides.to_table, &flow.write_columns, mapped)
                .map_err(|e| e.to_string())
        });
        match converted {
            Ok(values) => {
                preview.retry_writes = json(&flow.write_columns, &values);
                target_key = values[..flow.to_key.len()].to_vec();
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
        .await
        .map_err(|e| e.to_string())?
        .pop()
        .and_then(|r| json(&flow.write_columns, &r));
    Ok(preview)
}
