//! The plan: desired state (a validated `Config`) × actual state (the state store, or the
//! committed status files with the config at their `observedRevision`) → what a reconcile
//! would do, per map, alert rule and request, with a unified diff of each changed resource.
//! Computing a plan changes nothing anywhere.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::config::{self, AlertRule, Config, DesiredState, ErrorRequest, GitRevision, TableMap};
use crate::requests::{Admission, Stored};
use crate::state::{self, Phase};
use crate::status;

/// Where the actual state was read from.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ActualSource {
    /// The state store (the authority when it exists).
    StateStore { description: String },
    /// Committed status files, with the config at their observed revision(s).
    StatusFiles {
        /// The git revision they were read at (`--status-from`); the work tree when absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        at: Option<String>,
        revisions: Vec<String>,
    },
    /// Neither exists: nothing has been applied yet.
    None,
}

impl ActualSource {
    pub fn describe(&self) -> String {
        match self {
            ActualSource::StateStore { description } => description.clone(),
            ActualSource::StatusFiles { at, revisions } => {
                let files = match at {
                    Some(rev) => format!("the status/ files committed at {rev}"),
                    None => "committed status/ files".into(),
                };
                if revisions.is_empty() {
                    files
                } else {
                    format!(
                        "{files} and the config at revision {}",
                        revisions.join(", ")
                    )
                }
            }
            ActualSource::None => {
                "none (no state store, no status files): nothing has been applied yet".into()
            }
        }
    }
}

/// A map as it actually is.
#[derive(Clone, Debug)]
pub struct ObservedMap {
    pub phase: Phase,
    pub applied: Option<TableMap>,
    pub held_by: Option<String>,
}

/// What a waiting request matches in the state store now.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMatch {
    pub matched: u64,
    /// Ids in the filter that are not errored records of the map.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_ids: Vec<i64>,
}

/// The actual state the plan compares against.
#[derive(Clone, Debug)]
pub struct Actual {
    pub source: ActualSource,
    pub maps: BTreeMap<String, ObservedMap>,
    pub alerts: BTreeMap<String, Option<AlertRule>>,
    pub requests: BTreeMap<String, (Option<ErrorRequest>, Option<state::RequestState>)>,
    /// What each request that has not run yet matches now, read from the state store
    /// (absent when the actual state comes from status files).
    pub request_matches: BTreeMap<String, RequestMatch>,
    /// The order requests run in (by the commit that added them, then name).
    pub request_order: Vec<String>,
    /// Things that could not be read, said plainly in the plan.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    State(#[from] state::StateError),
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
    T::deserialize(v).ok()
}

/// Reads the actual state without changing anything: the state store if one exists, otherwise
/// the committed status files; with `status_from`, the status files committed at that git
/// revision (a status branch pushed by `--commit-status`), whatever the store says.
pub fn observe(dir: &Path, cfg: &Config, status_from: Option<&str>) -> Result<Actual, PlanError> {
    if let Some(rev) = status_from {
        let mut actual = observe_status_files(dir, status::StatusSource::Revision { dir, rev });
        actual.request_order = request_order(dir, cfg);
        return Ok(actual);
    }
    if let Some(store) = state::open_existing(dir, &cfg.project.resource)? {
        let maps = store
            .maps()?
            .into_iter()
            .map(|m| {
                let applied = m.applied.as_ref().and_then(typed);
                (
                    m.name,
                    ObservedMap {
                        phase: m.phase,
                        applied,
                        held_by: m.held_by,
                    },
                )
            })
            .collect();
        let alerts = store
            .alerts()?
            .into_iter()
            .map(|a| (a.name, typed(&a.applied)))
            .collect();
        let requests = store
            .requests()?
            .into_iter()
            .map(|r| (r.name, (typed(&r.applied), r.state)))
            .collect();
        let mut request_matches = BTreeMap::new();
        for located in &cfg.requests {
            let r = &located.resource;
            let name = &r.metadata.name;
            let done = store.request_status(name)?.is_some_and(|st| st.is_final());
            if done {
                continue;
            }
            let query = crate::errors::query_of(Some(&r.spec.map), &r.spec.filter);
            let matched = store.count_errors(&query)?;
            let unknown_ids =
                crate::requests::unknown_ids(store.as_ref(), &r.spec.map, &r.spec.filter.ids)?;
            request_matches.insert(
                name.clone(),
                RequestMatch {
                    matched,
                    unknown_ids,
                },
            );
        }
        return Ok(Actual {
            source: ActualSource::StateStore {
                description: store.describe(),
            },
            maps,
            alerts,
            requests,
            request_matches,
            request_order: request_order(dir, cfg),
            warnings: Vec::new(),
        });
    }
    let mut actual = observe_status_files(dir, status::StatusSource::WorkTree(dir));
    actual.request_order = request_order(dir, cfg);
    if let Some(pg) = &cfg.project.resource.spec.state_store.postgres {
        actual.warnings.insert(
            0,
            format!(
                "the PostgreSQL state store (${}) is not reachable or not created yet; the actual state comes from committed status files",
                pg.url_from_env
            ),
        );
    }
    Ok(actual)
}

fn request_order(dir: &Path, cfg: &Config) -> Vec<String> {
    let provenance = if cfg.requests.is_empty() {
        Default::default()
    } else {
        crate::requests::provenance(dir)
    };
    crate::requests::ordered(cfg, &provenance)
        .into_iter()
        .map(|(r, _)| r.resource.metadata.name.clone())
        .collect()
}

fn observe_status_files(dir: &Path, source: status::StatusSource<'_>) -> Actual {
    let (maps, p1) = status::read_observed(source, "maps");
    let (alerts, p2) = status::read_observed(source, "alerts");
    let (requests, p3) = status::read_observed(source, "requests");
    // A damaged status file is said in the plan's warnings, as the user reads it.
    let mut warnings: Vec<String> = [p1, p2, p3]
        .iter()
        .flatten()
        .map(ToString::to_string)
        .collect();
    if maps.is_empty() && alerts.is_empty() && requests.is_empty() {
        return Actual {
            source: ActualSource::None,
            maps: BTreeMap::new(),
            alerts: BTreeMap::new(),
            requests: BTreeMap::new(),
            request_matches: BTreeMap::new(),
            request_order: Vec::new(),
            warnings,
        };
    }
    // The config at each observed revision, read once per revision.
    let mut at_revision: HashMap<String, Option<Config>> = HashMap::new();
    let mut config_at = |rev: &Option<String>, warnings: &mut Vec<String>| -> Option<Config> {
        let rev = rev.as_ref()?;
        at_revision
            .entry(rev.clone())
            .or_insert_with(|| {
                let src = GitRevision { dir: dir.to_path_buf(), revision: rev.clone() };
                match config::load(&src) {
                    Ok(cfg) => Some(cfg),
                    Err(diags) => {
                        warnings.push(format!(
                            "the config at observed revision {rev} cannot be read ({}); its applied specs are unknown",
                            diags.first().map(|d| d.to_string()).unwrap_or_default()
                        ));
                        None
                    }
                }
            })
            .clone()
    };
    let mut revisions = BTreeSet::new();
    let mut observed_maps = BTreeMap::new();
    for (name, st) in maps {
        let cfg = config_at(&st.observed_revision, &mut warnings);
        revisions.extend(st.observed_revision.clone());
        let phase = st
            .phase
            .as_deref()
            .and_then(Phase::parse)
            .unwrap_or(Phase::NotRunning);
        let applied = cfg.as_ref().and_then(|c| c.map(&name).cloned());
        observed_maps.insert(
            name,
            ObservedMap {
                phase,
                applied,
                held_by: st.held_by.map(|h| h.alert),
            },
        );
    }
    let mut observed_alerts = BTreeMap::new();
    for (name, st) in alerts {
        let cfg = config_at(&st.observed_revision, &mut warnings);
        revisions.extend(st.observed_revision.clone());
        let applied = cfg.and_then(|c| {
            c.alerts
                .into_iter()
                .map(|a| a.resource)
                .find(|a| a.metadata.name == name)
        });
        observed_alerts.insert(name, applied);
    }
    let mut observed_requests = BTreeMap::new();
    for (name, st) in requests {
        let cfg = config_at(&st.observed_revision, &mut warnings);
        revisions.extend(st.observed_revision.clone());
        let applied = cfg.and_then(|c| {
            c.requests
                .into_iter()
                .map(|r| r.resource)
                .find(|r| r.metadata.name == name)
        });
        // A state this version does not know is treated as unknown (not run yet).
        let state = st.state.as_deref().and_then(state::RequestState::parse);
        observed_requests.insert(name, (applied, state));
    }
    Actual {
        source: ActualSource::StatusFiles {
            at: match source {
                status::StatusSource::Revision { rev, .. } => Some(rev.to_string()),
                status::StatusSource::WorkTree(_) => None,
            },
            revisions: revisions.into_iter().collect(),
        },
        maps: observed_maps,
        alerts: observed_alerts,
        requests: observed_requests,
        request_matches: BTreeMap::new(),
        request_order: Vec::new(),
        warnings,
    }
}

/// One step the reconciler will take for a map.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum MapAction {
    /// Install capture, copy the table (initial sync), then run.
    StartWithInitialSync { run: u32 },
    /// Install capture and run, without copying existing rows.
    Start,
    /// Stop writing; capture goes on and changes queue up.
    Pause,
    /// Drain the queue (catch-up), then run.
    Resume,
    /// Remove capture and drop the queue.
    Stop,
    /// Known but not started: its desired state is Paused or Stopped.
    Create { state: DesiredState },
    /// Copy the table again.
    RerunInitialSync { run: u32, retry_errors: bool },
    /// Columns, tables, direction or policies changed.
    MappingChanged,
    /// No longer in the config: stop it and forget it.
    Remove,
}

impl MapAction {
    pub fn describe(&self) -> String {
        match self {
            MapAction::StartWithInitialSync { run } => {
                format!("start with initial sync (run {run})")
            }
            MapAction::Start => "start without initial sync (initialSync.enabled: false)".into(),
            MapAction::Pause => "pause: capture goes on, changes queue up".into(),
            MapAction::Resume => "resume: drain the queued changes (catch-up), then run".into(),
            MapAction::Stop => "stop: remove capture and drop the queue".into(),
            MapAction::Create { state } => {
                format!("create, {state}: nothing runs until it is set to Running")
            }
            MapAction::RerunInitialSync {
                run,
                retry_errors: true,
            } => {
                format!("re-run initial sync (run {run}), retrying the records that failed")
            }
            MapAction::RerunInitialSync {
                run,
                retry_errors: false,
            } => {
                format!(
                    "re-run initial sync (run {run}) without errors: only new data, errored records left as they are"
                )
            }
            MapAction::MappingChanged => "mapping changed".into(),
            MapAction::Remove => "removed from the config: stop and forget".into(),
        }
    }
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MapPlan {
    pub name: String,
    /// Actual phase, or NotRunning for a new map.
    pub phase: Phase,
    pub desired_state: Option<DesiredState>,
    pub actions: Vec<MapAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// Which definition is in force, when it comes from a solution or another one exists
    /// (`spec.mapVersions`): `solution finance-core 1.2.0 (contoso) at …`, or the local file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defined_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Added,
    Changed,
    Removed,
    /// Unchanged, still waiting to run.
    Queued,
}

/// An alert's effect as a reviewer needs to see it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertSummary {
    pub maps: Vec<String>,
    pub error_type: String,
    pub threshold: u32,
    pub window: String,
    pub recipients: Vec<String>,
    pub action: String,
}

impl AlertSummary {
    fn of(rule: &AlertRule, matched: Vec<String>) -> Self {
        let s = &rule.spec;
        let notify = s.notify.as_ref();
        let mut recipients: Vec<String> = notify
            .and_then(|n| n.email.as_ref())
            .map(|e| e.addresses().into_iter().map(String::from).collect())
            .unwrap_or_default();
        recipients.extend(
            notify
                .into_iter()
                .flat_map(|n| &n.webhook)
                .map(|w| format!("webhook ${}", w.url_from_env)),
        );
        AlertSummary {
            maps: matched,
            error_type: format!("{:?}", s.error_type),
            threshold: s.threshold,
            window: s.window.to_string(),
            recipients,
            action: format!("{:?}", s.action),
        }
    }
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertPlan {
    pub name: String,
    pub change: Change,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<AlertSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<AlertSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestPlan {
    pub name: String,
    pub change: Change,
    pub map: String,
    pub action: String,
    /// What the next reconcile does with it, in words.
    pub outcome: String,
    /// Open errored records it matches now (`None`: unknown without a state store).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matches: Option<RequestMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// Everything a reconcile would do.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub maps: Vec<MapPlan>,
    pub alerts: Vec<AlertPlan>,
    pub requests: Vec<RequestPlan>,
    pub warnings: Vec<String>,
}

/// What a Bidirectional map that starts again after Stopped does to changes made while it
/// was stopped: its capture was removed then, so nothing knows them, and the initial sync
/// settles each key from `primary`. Said before it happens (the dry-run), not after.
fn restart_warning(
    desired: &TableMap,
    observed: &ObservedMap,
    actions: &[MapAction],
) -> Option<String> {
    use crate::config::{Direction, Side};
    let restarts = observed.phase == Phase::Stopped
        && actions
            .iter()
            .any(|a| matches!(a, MapAction::StartWithInitialSync { .. }));
    if !restarts || desired.spec.direction != Direction::Bidirectional {
        return None;
    }
    let (primary, other) = match desired.spec.initial_sync.primary {
        Side::Source => ("source", "destination"),
        Side::Destination => ("destination", "source"),
    };
    Some(format!(
        "map {}: restarting a Bidirectional map after Stopped: its changes were not captured while it was stopped, so the initial sync settles every key from the {primary} (initialSync.primary): rows deleted on either side come back from the other, and rows changed on the {other} are overwritten with the {primary}'s values. How many is not known (capture was off); pause instead of stop to keep a queue, or compare with `dualwrite status` and the tables first",
        desired.metadata.name
    ))
}

/// A resource as YAML, for diffs.
fn to_yaml<T: Serialize>(resource: &T) -> String {
    serde_saphyr::to_string(resource).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

/// A unified diff between the actual and desired YAML of a resource, `None` when equal.
pub fn unified_diff(
    kind_dir: &str,
    name: &str,
    actual: Option<&str>,
    desired: Option<&str>,
) -> Option<String> {
    let (old, new) = (actual.unwrap_or(""), desired.unwrap_or(""));
    if old == new {
        return None;
    }
    let diff = similar::TextDiff::from_lines(old, new);
    let old_name = if actual.is_some() {
        format!("actual/{kind_dir}/{name}.yaml")
    } else {
        "/dev/null".into()
    };
    let new_name = if desired.is_some() {
        format!("desired/{kind_dir}/{name}.yaml")
    } else {
        "/dev/null".into()
    };
    Some(
        diff.unified_diff()
            .context_radius(3)
            .header(&old_name, &new_name)
            .to_string(),
    )
}

/// The fields of a map whose change is a "mapping change" (everything but state and run).
fn mapping_of(map: &TableMap) -> Value {
    let mut spec = serde_json::to_value(&map.spec).expect("spec serializes");
    if let Some(obj) = spec.as_object_mut() {
        obj.remove("state");
        if let Some(init) = obj.get_mut("initialSync").and_then(Value::as_object_mut) {
            init.remove("run");
            init.remove("retryErrors");
        }
    }
    spec
}

pub fn map_actions(desired: &TableMap, observed: Option<&ObservedMap>) -> Vec<MapAction> {
    let spec = &desired.spec;
    let start = || {
        if spec.initial_sync.enabled {
            MapAction::StartWithInitialSync {
                run: spec.initial_sync.run,
            }
        } else {
            MapAction::Start
        }
    };
    let Some(observed) = observed else {
        return vec![match spec.state {
            DesiredState::Running => start(),
            state => MapAction::Create { state },
        }];
    };
    let mut actions = Vec::new();
    if let Some(applied) = &observed.applied {
        if mapping_of(applied) != mapping_of(desired) {
            actions.push(MapAction::MappingChanged);
        }
        let running_ish = matches!(
            observed.phase,
            Phase::Running | Phase::Paused | Phase::InitialSync
        );
        if running_ish && spec.initial_sync.run > applied.spec.initial_sync.run {
            actions.push(MapAction::RerunInitialSync {
                run: spec.initial_sync.run,
                retry_errors: spec.initial_sync.retry_errors,
            });
        }
    }
    let state_changed = observed
        .applied
        .as_ref()
        .is_some_and(|a| a.spec.state != spec.state);
    let held = observed.held_by.is_some() && !state_changed;
    let transition = match (observed.phase, spec.state) {
        (Phase::Running | Phase::InitialSync, DesiredState::Paused) => Some(MapAction::Pause),
        (Phase::Paused, DesiredState::Running) if !held => Some(MapAction::Resume),
        (Phase::Running | Phase::InitialSync | Phase::Paused, DesiredState::Stopped) => {
            Some(MapAction::Stop)
        }
        (Phase::NotRunning | Phase::Stopped, DesiredState::Running) if !held => Some(start()),
        (Phase::NotRunning, state @ (DesiredState::Paused | DesiredState::Stopped)) => {
            Some(MapAction::Create { state })
        }
        _ => None,
    };
    actions.extend(transition);
    actions
}

impl Plan {
    pub fn new(cfg: &Config, actual: &Actual) -> Plan {
        let index = cfg.map_index();
        let mut maps = Vec::new();
        for located in &cfg.maps {
            let desired = &located.resource;
            let name = &desired.metadata.name;
            let observed = actual.maps.get(name);
            let actions = map_actions(desired, observed);
            let applied_yaml = observed.and_then(|o| o.applied.as_ref()).map(to_yaml);
            let diff = if observed.is_some_and(|o| o.applied.is_none()) {
                None // the applied spec is unknown; the plan's warnings say why
            } else {
                unified_diff(
                    "maps",
                    name,
                    applied_yaml.as_deref(),
                    Some(&to_yaml(desired)),
                )
            };
            maps.push(MapPlan {
                name: name.clone(),
                phase: observed.map_or(Phase::NotRunning, |o| o.phase),
                desired_state: Some(desired.spec.state),
                actions,
                held_by: observed.and_then(|o| o.held_by.clone()),
                defined_by: cfg.map_versions.get(name).and_then(|v| {
                    (v.in_force.solution().is_some() || !v.others.is_empty())
                        .then(|| v.in_force.to_string())
                }),
                diff,
            });
        }
        for (name, observed) in &actual.maps {
            if index.get(name).is_none() {
                maps.push(MapPlan {
                    name: name.clone(),
                    phase: observed.phase,
                    desired_state: None,
                    actions: vec![MapAction::Remove],
                    held_by: observed.held_by.clone(),
                    defined_by: None,
                    diff: unified_diff(
                        "maps",
                        name,
                        observed.applied.as_ref().map(to_yaml).as_deref(),
                        None,
                    ),
                });
            }
        }

        let matched = |rule: &AlertRule| -> Vec<String> {
            index
                .matched(&rule.spec)
                .into_iter()
                .map(|m| m.metadata.name.clone())
                .collect()
        };
        let mut alerts = Vec::new();
        for located in &cfg.alerts {
            let desired = &located.resource;
            let name = &desired.metadata.name;
            let applied = actual.alerts.get(name);
            let change = match applied {
                None => Change::Added,
                Some(Some(a)) if a == desired => continue,
                Some(_) => Change::Changed,
            };
            let before_yaml = applied.and_then(|a| a.as_ref()).map(to_yaml);
            alerts.push(AlertPlan {
                name: name.clone(),
                change,
                before: applied
                    .and_then(|a| a.as_ref())
                    .map(|a| AlertSummary::of(a, actual_matched(a, actual))),
                after: Some(AlertSummary::of(desired, matched(desired))),
                diff: unified_diff(
                    "alerts",
                    name,
                    before_yaml.as_deref(),
                    Some(&to_yaml(desired)),
                ),
            });
        }
        for (name, applied) in &actual.alerts {
            if !cfg.alerts.iter().any(|a| &a.resource.metadata.name == name) {
                alerts.push(AlertPlan {
                    name: name.clone(),
                    change: Change::Removed,
                    before: applied
                        .as_ref()
                        .map(|a| AlertSummary::of(a, actual_matched(a, actual))),
                    after: None,
                    diff: unified_diff(
                        "alerts",
                        name,
                        applied.as_ref().map(to_yaml).as_deref(),
                        None,
                    ),
                });
            }
        }

        let mut requests = Vec::new();
        let mut waiting: HashMap<&str, usize> = HashMap::new();
        let mut in_order: Vec<&config::Located<ErrorRequest>> = cfg.requests.iter().collect();
        in_order.sort_by_key(|r| {
            actual
                .request_order
                .iter()
                .position(|n| *n == r.resource.metadata.name)
                .unwrap_or(usize::MAX)
        });
        for located in in_order {
            let desired = &located.resource;
            let name = &desired.metadata.name;
            let applied = actual.requests.get(name);
            let same = applied.is_some_and(|(a, _)| a.as_ref() == Some(desired));
            let stored = applied.map(|(_, state)| Stored {
                state: *state,
                edited: !same,
            });
            // What a request that has not run is to a reviewer.
            let change = if applied.is_none() {
                Change::Added
            } else if same {
                Change::Queued
            } else {
                Change::Changed
            };
            let waiting_for_map = waiting.entry(desired.spec.map.as_str()).or_default();
            let (change, outcome) = match crate::requests::admission(stored, *waiting_for_map) {
                Admission::Ran => continue,
                Admission::EditedAfterRun => (
                    Change::Changed,
                    "edited after it ran: it does not run again (a request runs once); use a new name to run it again".to_string(),
                ),
                Admission::Rejected => (
                    change,
                    format!(
                        "will be Rejected: {} requests already wait for map {}",
                        crate::requests::MAX_WAITING,
                        desired.spec.map
                    ),
                ),
                Admission::Queued => {
                    *waiting_for_map += 1;
                    (change, request_outcome(desired, actual))
                }
            };
            let before_yaml = applied.and_then(|(a, _)| a.as_ref()).map(to_yaml);
            requests.push(RequestPlan {
                name: name.clone(),
                change,
                map: desired.spec.map.clone(),
                action: format!("{:?}", desired.spec.action),
                outcome,
                matches: actual.request_matches.get(name).cloned(),
                diff: unified_diff(
                    "requests",
                    name,
                    before_yaml.as_deref(),
                    Some(&to_yaml(desired)),
                )
                .filter(|_| !same),
            });
        }
        for (name, (applied, _)) in &actual.requests {
            if !cfg
                .requests
                .iter()
                .any(|r| &r.resource.metadata.name == name)
            {
                requests.push(RequestPlan {
                    name: name.clone(),
                    change: Change::Removed,
                    outcome: "forgotten (its status file is removed)".into(),
                    matches: None,
                    map: applied
                        .as_ref()
                        .map(|a| a.spec.map.clone())
                        .unwrap_or_default(),
                    action: applied
                        .as_ref()
                        .map(|a| format!("{:?}", a.spec.action))
                        .unwrap_or_default(),
                    diff: unified_diff(
                        "requests",
                        name,
                        applied.as_ref().map(to_yaml).as_deref(),
                        None,
                    ),
                });
            }
        }
        let mut warnings = actual.warnings.clone();
        for m in &maps {
            if let (Some(desired), Some(observed)) = (cfg.map(&m.name), actual.maps.get(&m.name))
                && let Some(warning) = restart_warning(desired, observed, &m.actions)
            {
                warnings.push(warning);
            }
        }
        Plan {
            maps,
            alerts,
            requests,
            warnings,
        }
    }

    /// Whether applying the plan would change anything.
    pub fn has_changes(&self) -> bool {
        self.maps
            .iter()
            .any(|m| !m.actions.is_empty() || m.diff.is_some())
            || !self.alerts.is_empty()
            || !self.requests.is_empty()
    }
}

/// What the next reconcile does with a request admitted to its map's queue.
fn request_outcome(request: &ErrorRequest, actual: &Actual) -> String {
    let map = &request.spec.map;
    let matches = actual.request_matches.get(&request.metadata.name);
    let verb = match request.spec.action {
        config::RequestAction::Retry => "retries",
        config::RequestAction::Dismiss => "dismisses",
    };
    let what = match matches {
        Some(m) if !m.unknown_ids.is_empty() => {
            let ids: Vec<String> = m.unknown_ids.iter().map(i64::to_string).collect();
            return format!(
                "will be Rejected: id(s) {} are not errored records of map {map}",
                ids.join(", ")
            );
        }
        Some(m) if m.matched > crate::requests::MAX_MATCHED => {
            return format!(
                "will be Rejected: matches {} records now (at most {})",
                m.matched,
                crate::requests::MAX_MATCHED
            );
        }
        Some(m) => format!(
            "{verb} the {} open errored record(s) it matches now",
            m.matched
        ),
        None => {
            format!("{verb} the open errored records it matches (count unknown: no state store)")
        }
    };
    let phase = actual.maps.get(map).map(|m| m.phase);
    let held = actual.maps.get(map).is_some_and(|m| m.held_by.is_some());
    if phase.is_some_and(|p| crate::requests::runs_now(request.spec.action, p, held)) {
        format!("runs once in the next pass: {what}")
    } else {
        format!(
            "waits until map {map} is Running (now {}), then {what}",
            phase.map_or("not started".to_string(), |p| p.to_string())
        )
    }
}

/// The maps an applied rule matched, judged by the applied maps.
fn actual_matched(rule: &AlertRule, actual: &Actual) -> Vec<String> {
    actual
        .maps
        .iter()
        .filter(|(name, m)| match &m.applied {
            Some(map) => config::validate::rule_matches(&rule.spec, map),
            None => rule.spec.maps.as_ref().is_some_and(|n| n.contains(name)),
        })
        .map(|(name, _)| name.clone())
        .collect()
}
