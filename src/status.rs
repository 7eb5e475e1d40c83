//! Status files under `status/` (SPEC §3): their types, reading them back, and writing them
//! atomically (temp file + rename), with stable key order, only when the content changed.
//!
//! [`publish`] is the one writer of a pass's status files, for `dualwrite reconcile` and
//! `dualwrite run` alike: the maps in scope, the alert rules, the requests, the solutions, and the removal
//! of files whose resource left the config. Callers print or serve its [`Published`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ApiVersion;
pub use crate::progress::{Progress, thousands};

pub const STATUS_DIR: &str = "status";

/// `status/maps/<name>.yaml`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusFile<S> {
    pub api_version: ApiVersion,
    pub kind: String,
    pub metadata: StatusMetadata,
    pub status: S,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StatusMetadata {
    pub name: String,
}

/// The part of any status every reader needs: which config revision it reflects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    #[serde(default)]
    pub observed_revision: Option<String>,
    #[serde(default)]
    pub phase: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub held_by: Option<HeldBy>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HeldBy {
    pub alert: String,
    pub since: String,
}

/// Where status files are read from.
#[derive(Clone, Copy, Debug)]
pub enum StatusSource<'a> {
    /// `status/` in the work tree of the config dir.
    WorkTree(&'a Path),
    /// `status/` as committed at a git revision (`reconcile --dry-run --status-from REF`).
    Revision { dir: &'a Path, rev: &'a str },
}

/// Reads every `status/<folder>/*.yaml` as the fields common to all statuses. Unreadable
/// files are skipped with their error, so one damaged file cannot hide the rest.
pub fn read_observed(
    source: StatusSource<'_>,
    folder: &str,
) -> (BTreeMap<String, Observed>, Vec<StatusError>) {
    let mut found = BTreeMap::new();
    let mut problems = Vec::new();
    let texts: Vec<StatusText> = match source {
        StatusSource::WorkTree(dir) => {
            let Ok(entries) = std::fs::read_dir(dir.join(STATUS_DIR).join(folder)) else {
                return (found, problems);
            };
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            paths
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .map(|path| {
                    let text = std::fs::read_to_string(&path).map_err(|source| StatusError::Read {
                        path: path.clone(),
                        source,
                    });
                    (path, text)
                })
                .collect()
        }
        StatusSource::Revision { dir, rev } => match committed_texts(dir, rev, folder) {
            Ok(texts) => texts,
            Err(problem) => return (found, vec![problem]),
        },
    };
    for (path, text) in texts {
        let file = text.and_then(|text| {
            serde_saphyr::from_str::<StatusFile<Observed>>(&text).map_err(|source| {
                StatusError::Parse {
                    path,
                    source: Box::new(source),
                }
            })
        });
        match file {
            Ok(file) => {
                found.insert(file.metadata.name, file.status);
            }
            Err(problem) => problems.push(problem),
        }
    }
    (found, problems)
}

/// A status file's name and its text, or why it cannot be read.
type StatusText = (PathBuf, Result<String, StatusError>);

/// The texts of `status/<folder>/*.yaml` as committed at `rev`, each named `rev:path`.
fn committed_texts(dir: &Path, rev: &str, folder: &str) -> Result<Vec<StatusText>, StatusError> {
    use crate::config::loader::{git, git_files_at};
    let git_error = |source: crate::config::loader::GitError| StatusError::Git {
        rev: rev.to_string(),
        source,
    };
    let folder = format!("{STATUS_DIR}/{folder}");
    let listing = git(
        dir,
        &["ls-tree", "-r", "-z", "--name-only", rev, "--", &folder],
        None,
    )
    .map_err(git_error)?;
    let paths: Vec<String> = listing
        .split('\0')
        .filter(|p| p.ends_with(".yaml"))
        .map(str::to_string)
        .collect();
    Ok(git_files_at(dir, rev, paths)
        .map_err(git_error)?
        .into_iter()
        .map(|(path, body)| {
            let path = PathBuf::from(format!("{rev}:{path}"));
            let text = String::from_utf8(body).map_err(|e| StatusError::Read {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            });
            (path, text)
        })
        .collect())
}

/// Writes `text` to `path` atomically, only when it differs from what is there.
/// Returns whether the file changed.
pub fn write_if_changed(path: &Path, text: &str) -> std::io::Result<bool> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(text.as_bytes())?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path)?;
    Ok(true)
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    for attempt in 0..100u32 {
        let path = dir.join(format!(".tmp-{}-{attempt}", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "cannot create a temporary status file",
    ))
}

/// The revision status files report: the last git commit that changed the config (status
/// commits of `--commit-status` are not config changes: they would otherwise make every
/// pass observe a new revision and commit again), or a content hash of its files outside git.
pub fn revision(dir: &Path, files: &[crate::config::loader::SourceFile]) -> String {
    let git = |args: &[&str]| {
        crate::config::loader::git(dir, args, None)
            .ok()
            .map(|rev| rev.trim().to_string())
            .filter(|rev| !rev.is_empty())
    };
    let exclude = format!(":(exclude){STATUS_DIR}");
    if let Some(rev) = git(&[
        "rev-list",
        "-1",
        "--abbrev-commit",
        "HEAD",
        "--",
        ".",
        &exclude,
    ])
    .or_else(|| git(&["rev-parse", "--short", "HEAD"]))
    {
        return rev;
    }
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    for f in files {
        sha2::Digest::update(&mut hasher, f.path.as_bytes());
        sha2::Digest::update(&mut hasher, [0u8]);
        sha2::Digest::update(&mut hasher, f.text.as_bytes());
    }
    format!(
        "sha256:{}",
        &hex::encode(sha2::Digest::finalize(hasher))[..12]
    )
}

/// `status` of a TableMapStatus file (SPEC §3).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MapStatus {
    pub observed_revision: String,
    pub desired_state: String,
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<HeldBy>,
    pub conditions: Vec<Condition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_sync: Option<InitialSyncStatus>,
    /// `None` (null) when the capturing side cannot be asked.
    pub queue: Option<Queue>,
    /// While a map-level failure is retried: when the next attempt is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    pub counters: Counters,
    pub errors: ErrorSummary,
    pub activity: Vec<crate::state::ActivityEntry>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InitialSyncStatus {
    pub run: u32,
    pub status: crate::state::InitialSyncStatus,
    pub directions: BTreeMap<String, crate::state::DirectionCounts>,
    /// false for a "Rerun execution without errors".
    pub retry_errors: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Why the run is Failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// While the run copies: rows done, the estimated total, rate and ETA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Earlier runs, newest first, each with its status and per-direction counts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub earlier_runs: Vec<InitialSyncStatus>,
}

impl InitialSyncStatus {
    fn of(run: &crate::state::InitialSyncRun, earlier: &[crate::state::InitialSyncRun]) -> Self {
        InitialSyncStatus {
            progress: Progress::of(run, chrono::Utc::now()),
            run: run.run,
            status: run.status,
            directions: run.directions.clone(),
            retry_errors: run.retry_errors,
            started_at: run.started_at.clone(),
            finished_at: run.finished_at.clone(),
            message: run.problem.clone(),
            earlier_runs: earlier.iter().map(|r| Self::of(r, &[])).collect(),
        }
    }
}

/// Changes captured and not yet written (paused, or an endpoint down).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Queue {
    pub pending: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_at: Option<String>,
    /// `dualwrite status` only: the capture tables could not be asked now, so this is the
    /// count of the last pass, as of then. Never in a status file (written by that pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub synced: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorSummary {
    pub open: u64,
    pub by_type: BTreeMap<String, u64>,
    pub by_phase: BTreeMap<String, u64>,
    pub recent: Vec<RecentError>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecentError {
    pub id: i64,
    pub at: String,
    pub phase: crate::state::ErrorPhase,
    pub direction: String,
    #[serde(rename = "type")]
    pub error_type: crate::state::ErrorType,
    #[serde(serialize_with = "crate::config::yaml::plain_numbers")]
    pub key: serde_json::Value,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Builds a map's status from the state store.
/// The statuses of `maps`, in order, reading the stored map records once.
pub fn map_statuses<'a>(
    store: &dyn crate::state::StateStore,
    maps: impl Iterator<Item = &'a crate::config::TableMap>,
) -> Result<Vec<(String, MapStatus)>, crate::state::StateError> {
    let mut records: BTreeMap<String, crate::state::MapRecord> = store
        .maps()?
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    maps.map(|map| {
        let record = records.remove(&map.metadata.name);
        Ok((map.metadata.name.clone(), map_status(store, map, record)?))
    })
    .collect()
}

fn map_status(
    store: &dyn crate::state::StateStore,
    map: &crate::config::TableMap,
    record: Option<crate::state::MapRecord>,
) -> Result<MapStatus, crate::state::StateError> {
    let name = &map.metadata.name;
    let runtime = store.runtime(name)?;
    let phase = record
        .as_ref()
        .map_or(crate::state::Phase::NotRunning, |r| r.phase);
    let held_by = record
        .as_ref()
        .and_then(|r| r.held_by.clone())
        .map(|alert| HeldBy {
            alert,
            since: runtime.since.clone().unwrap_or_default(),
        });
    let counts = store.open_error_counts(name)?;
    let mut by_type = BTreeMap::new();
    let mut by_phase = BTreeMap::new();
    for (t, p, n) in &counts {
        // Keyed by name: the file lists them in the order of their names.
        *by_type.entry(t.name().to_string()).or_insert(0) += n;
        *by_phase.entry(p.name().to_string()).or_insert(0) += n;
    }
    let recent = store
        .open_errors(name, 20)?
        .into_iter()
        .map(|e| RecentError {
            id: e.id,
            at: e.last_at,
            phase: e.phase,
            direction: e.direction,
            error_type: e.error_type,
            key: serde_json::from_str(&e.key).unwrap_or(serde_json::Value::Null),
            message: e.message,
            code: e.code,
        })
        .collect();
    let (status, reason, message) = if let Some(problem) = &runtime.failure {
        ("False", problem.reason.name(), problem.message.clone())
    } else if let Some(h) = &held_by {
        ("False", "HeldByAlert", format!("held by alert {}", h.alert))
    } else if phase.name() == map.spec.state.to_string()
        || (phase == crate::state::Phase::NotRunning
            && map.spec.state != crate::config::DesiredState::Running)
    {
        ("True", phase.name(), format!("{} as desired", phase.name()))
    } else {
        (
            "False",
            "Reconciling",
            format!("{} -> {}", phase.name(), map.spec.state),
        )
    };
    let mut conditions = vec![Condition {
        kind: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: runtime.since.clone(),
    }];
    if let Some(problem) = &runtime.failure {
        // Transient (an endpoint down): dualwrite is still at it. Otherwise a person must look.
        let kind = if problem.reason.is_transient() {
            "Reconciling"
        } else {
            "Stalled"
        };
        let retry = runtime
            .next_attempt_at
            .as_ref()
            .map(|at| format!(" (attempt {}; next at {at})", problem.attempts))
            .unwrap_or_default();
        conditions.push(Condition {
            kind: kind.into(),
            status: "True".into(),
            reason: problem.reason.name().into(),
            message: format!("{}{retry}", problem.message),
            last_transition_time: Some(problem.since.clone()),
        });
    }
    Ok(MapStatus {
        observed_revision: record.and_then(|r| r.applied_revision).unwrap_or_default(),
        desired_state: map.spec.state.to_string(),
        phase: phase.name().to_string(),
        held_by,
        conditions,
        initial_sync: runtime
            .initial_sync
            .as_ref()
            .map(|r| InitialSyncStatus::of(r, &runtime.earlier_runs)),
        queue: runtime.queue.as_ref().map(|q| Queue {
            pending: q.pending,
            oldest_at: q.oldest_at.clone(),
            as_of: None,
        }),
        next_attempt_at: runtime.next_attempt_at.clone(),
        counters: Counters {
            synced: runtime.synced,
            last_sync_at: runtime.last_sync_at.clone(),
            lag_seconds: runtime.lag_seconds,
        },
        errors: ErrorSummary {
            open: counts.iter().map(|c| c.2).sum(),
            by_type,
            by_phase,
            recent,
        },
        activity: store.activity(name, 20)?,
    })
}

/// Writes `status/<folder>/<name>.yaml` of `kind`; returns whether it changed.
pub(crate) fn write_status<S: Serialize>(
    dir: &Path,
    folder: &str,
    kind: &str,
    name: &str,
    status: &S,
) -> Result<bool, StatusError> {
    let path = dir
        .join(STATUS_DIR)
        .join(folder)
        .join(format!("{name}.yaml"));
    let file = StatusFile {
        api_version: ApiVersion::V1,
        kind: kind.to_string(),
        metadata: StatusMetadata {
            name: name.to_string(),
        },
        status,
    };
    let text = match serde_saphyr::to_string(&file) {
        Ok(text) => text,
        Err(source) => return Err(StatusError::Render { path, source }),
    };
    write_if_changed(&path, &text).map_err(|source| StatusError::Write { path, source })
}

/// Writes `status/maps/<name>.yaml`; returns whether it changed.
fn write_map_status(dir: &Path, name: &str, status: &MapStatus) -> Result<bool, StatusError> {
    write_status(dir, "maps", "TableMapStatus", name, status)
}

/// How long `dualwrite status` waits for the capture tables of one map.
const LIVE_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// `dualwrite status`: each map's queue as its capture tables hold it now, not as the last
/// pass counted it (a Paused map's queue grows between passes). Where a side cannot be asked
/// in time, the last pass's count stays, marked `asOf` when it was counted.
pub fn live_queues(
    dir: &Path,
    cfg: &crate::config::Config,
    store: &dyn crate::state::StateStore,
    statuses: &mut [(String, MapStatus)],
) -> Result<(), crate::state::StateError> {
    use crate::state::Phase;
    let captures = |st: &MapStatus| Phase::parse(&st.phase).is_some_and(Phase::captures);
    if !statuses.iter().any(|(_, st)| captures(st)) {
        return Ok(());
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Ok(());
    };
    let mut connections = crate::sync::link::Connections::new(dir, cfg);
    for (name, st) in statuses.iter_mut() {
        let Some(map) = cfg.map(name).filter(|_| captures(st)) else {
            continue;
        };
        let stored = store.runtime(name)?;
        let now = runtime.block_on(async {
            tokio::time::timeout(
                LIVE_QUEUE_WAIT,
                crate::sync::link::queue_of(&mut connections, map, &stored),
            )
            .await
            .ok()
            .flatten()
        });
        st.queue = match now {
            Some(q) => Some(Queue {
                pending: q.pending,
                oldest_at: q.oldest_at,
                as_of: None,
            }),
            None => stored.queue.map(|q| Queue {
                pending: q.pending,
                oldest_at: q.oldest_at,
                as_of: Some(q.counted_at.unwrap_or_else(|| "the last pass".into())),
            }),
        };
    }
    Ok(())
}

/// Writes the status file of each map whose initial sync saved its progress, while the pass
/// still runs (`reconcile` and `run`; the service also serves it, see `service`).
#[derive(Debug)]
pub struct LiveStatus {
    pub dir: PathBuf,
    pub maps: BTreeMap<String, crate::config::TableMap>,
}

impl LiveStatus {
    pub fn new(dir: &Path, cfg: &crate::config::Config) -> LiveStatus {
        LiveStatus {
            dir: dir.to_path_buf(),
            maps: cfg
                .maps
                .iter()
                .map(|m| (m.resource.metadata.name.clone(), m.resource.clone()))
                .collect(),
        }
    }

    /// The status of the map of `record` (as just saved), written to its file.
    pub fn write(
        &self,
        store: &dyn crate::state::StateStore,
        record: &crate::state::MapRecord,
    ) -> Result<Option<MapStatus>, StatusError> {
        let Some(map) = self.maps.get(&record.name) else {
            return Ok(None);
        };
        let status = map_status(store, map, Some(record.clone()))?;
        write_map_status(&self.dir, &record.name, &status)?;
        Ok(Some(status))
    }
}

impl crate::sync::ProgressObserver for LiveStatus {
    fn saved(&self, store: &dyn crate::state::StateStore, record: &crate::state::MapRecord) {
        if let Err(error) = self.write(store, record) {
            tracing::warn!(map = %record.name, %error, "the status file of a running initial sync");
        }
    }
}

/// `status` of an AlertRuleStatus file: the rule's state per matched map (SPEC §3).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AlertStatus {
    pub observed_revision: String,
    pub maps: crate::alert::RuleState,
}

/// Writes `status/alerts/<name>.yaml`; returns whether it changed.
fn write_alert_status(dir: &Path, name: &str, status: &AlertStatus) -> Result<bool, StatusError> {
    write_status(dir, "alerts", "AlertRuleStatus", name, status)
}

/// `status` of a SolutionStatus file (SPEC §3): publisher, version, managed, components and
/// their checksums, installedAt, and which of its maps are in force.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SolutionStatus {
    pub observed_revision: String,
    #[serde(flatten)]
    pub solution: crate::solution::inventory::SolutionSummary,
}

/// Writes `status/solutions/<name>.yaml` for every solution; returns how many changed.
fn write_solution_statuses(
    dir: &Path,
    cfg: &crate::config::Config,
    revision: &str,
) -> Result<(usize, Vec<String>), StatusError> {
    let mut changed = 0;
    let mut names: Vec<String> = Vec::new();
    // Installed solutions come first: one of the same name defined here too stays unlisted.
    for summary in crate::solution::inventory::summaries(cfg) {
        if names.contains(&summary.name) {
            continue;
        }
        names.push(summary.name.clone());
        let st = SolutionStatus {
            observed_revision: revision.to_string(),
            solution: summary,
        };
        changed += usize::from(write_status(
            dir,
            "solutions",
            "SolutionStatus",
            &st.solution.name,
            &st,
        )?);
    }
    Ok((changed, names))
}

/// Writes `status/requests/<name>.yaml`; returns whether it changed.
fn write_request_status(
    dir: &Path,
    name: &str,
    status: &crate::state::RequestStatus,
) -> Result<bool, StatusError> {
    write_status(dir, "requests", "ErrorRequestStatus", name, status)
}

/// Removes `status/<folder>/*.yaml` files of resources no longer in the config. Returns how
/// many were removed.
fn remove_stale(dir: &Path, folder: &str, keep: &[&str]) -> Result<usize, StatusError> {
    let Ok(entries) = std::fs::read_dir(dir.join(STATUS_DIR).join(folder)) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let stale = path.extension().is_some_and(|e| e == "yaml")
            && path
                .file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|name| !keep.contains(&name));
        if stale {
            if let Err(source) = std::fs::remove_file(&path) {
                return Err(StatusError::Remove { path, source });
            }
            removed += 1;
        }
    }
    Ok(removed)
}

/// What can go wrong reading or publishing status files.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("status files at {rev}: {source}")]
    Git {
        rev: String,
        #[source]
        source: crate::config::loader::GitError,
    },
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        /// Boxed: the parser's error is large and this one is rare.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("rendering {}: {source}", path.display())]
    Render {
        path: PathBuf,
        #[source]
        source: serde_saphyr::SerializeError,
    },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The work tree's config is invalid and the last valid one stays in force (`dualwrite
/// run`): every published map status carries a `Stalled` condition with reason
/// `ConfigInvalid`.
#[derive(Clone, Copy, Debug)]
pub struct ConfigInvalid<'a> {
    /// The problems, as the user reads them.
    pub error: &'a str,
    /// When the config went from valid to invalid.
    pub since: Option<&'a str>,
}

/// One publication of status files: what is in scope and what the pass found.
pub struct Publication<'a> {
    pub dir: &'a Path,
    pub cfg: &'a crate::config::Config,
    /// The config revision the statuses observe.
    pub revision: &'a str,
    /// The maps in scope, and with them their requests; `None`: every map of the config.
    pub only_maps: Option<&'a std::collections::HashSet<String>>,
    /// Each alert rule's state after the pass; `None` when no pass ran (a shutdown): alert
    /// statuses stay as they are.
    pub alerts: Option<&'a BTreeMap<String, crate::alert::RuleState>>,
    pub config_invalid: Option<ConfigInvalid<'a>>,
}

/// What [`publish`] wrote.
#[derive(Debug, Default)]
pub struct Published {
    /// The map statuses, in config order.
    pub maps: Vec<(String, MapStatus)>,
    /// The alert statuses (`None` when the publication had no alert states).
    pub alerts: Option<BTreeMap<String, AlertStatus>>,
    /// The statuses of the requests in scope that the store knows, in config order.
    pub requests: Vec<(String, crate::state::RequestStatus)>,
    /// Files whose content changed, plus files removed.
    pub changed: usize,
}

/// Writes the status files of `publication`: the maps in scope, the alert rules, and the
/// requests of the maps in scope, each only when its content changed. After a pass over
/// every map (alerts given, no `only_maps`), files of resources no longer in the config are
/// removed. `before_write` sees each map status just before its file is written, so
/// whatever it logs is there before anyone can read the new file.
pub fn publish(
    publication: &Publication<'_>,
    store: &dyn crate::state::StateStore,
    before_write: &mut dyn FnMut(&str, &MapStatus),
) -> Result<Published, StatusError> {
    let Publication {
        dir,
        cfg,
        revision,
        only_maps,
        alerts,
        config_invalid,
    } = *publication;
    let in_scope = |map: &str| only_maps.is_none_or(|only| only.contains(map));
    let mut published = Published {
        maps: map_statuses(
            store,
            cfg.maps
                .iter()
                .map(|m| &m.resource)
                .filter(|m| in_scope(&m.metadata.name)),
        )?,
        ..Published::default()
    };
    for (name, st) in &mut published.maps {
        if let Some(invalid) = config_invalid {
            invalid.mark(st, revision);
        }
        before_write(name, st);
        published.changed += usize::from(write_map_status(dir, name, st)?);
    }
    if let Some(alerts) = alerts {
        let mut written = BTreeMap::new();
        for (name, maps) in alerts {
            let st = AlertStatus {
                observed_revision: revision.to_string(),
                maps: maps.clone(),
            };
            published.changed += usize::from(write_alert_status(dir, name, &st)?);
            written.insert(name.clone(), st);
        }
        published.alerts = Some(written);
    }
    for located in cfg
        .requests
        .iter()
        .filter(|r| in_scope(&r.resource.spec.map))
    {
        let name = &located.resource.metadata.name;
        if let Some(st) = store.request_status(name)? {
            published.changed += usize::from(write_request_status(dir, name, &st)?);
            published.requests.push((name.clone(), st));
        }
    }
    if alerts.is_some() && only_maps.is_none() {
        let (changed, solutions) = write_solution_statuses(dir, cfg, revision)?;
        published.changed += changed;
        let solutions: Vec<&str> = solutions.iter().map(String::as_str).collect();
        published.changed += remove_stale(dir, "solutions", &solutions)?;
        let maps = cfg.maps.iter().map(|m| m.resource.metadata.name.as_str());
        let rules = cfg.alerts.iter().map(|a| a.resource.metadata.name.as_str());
        let requests = cfg
            .requests
            .iter()
            .map(|r| r.resource.metadata.name.as_str());
        let maps: Vec<&str> = maps.collect();
        for (folder, keep) in [
            ("maps", maps.clone()),
            // The last `dualwrite verify` of a map goes with the map.
            ("verify", maps),
            ("alerts", rules.collect()),
            ("requests", requests.collect()),
        ] {
            published.changed += remove_stale(dir, folder, &keep)?;
        }
    }
    Ok(published)
}

impl ConfigInvalid<'_> {
    /// Adds (or replaces) the `Stalled` condition with reason `ConfigInvalid`.
    fn mark(&self, st: &mut MapStatus, revision: &str) {
        st.conditions.retain(|c| c.kind != "Stalled");
        st.conditions.push(Condition {
            kind: "Stalled".into(),
            status: "True".into(),
            reason: "ConfigInvalid".into(),
            message: format!(
                "the config in the work tree is invalid; revision {revision} stays in force: {}",
                self.error
            ),
            last_transition_time: self.since.map(str::to_string),
        });
    }
}
