//! `dualwrite run`: the long-lived reconciler. Owns the run loop and what wakes it (config
//! file changes, the timer, new captured changes, lease changes, a failing map's backoff
//! running out (`nextAttemptAt`), a hold ended by `dualwrite resume`, SIGTERM/Ctrl-C), the HTTP
//! endpoint (`/metrics`, `/healthz`, `/readyz`, the JSON API, and `crate::dashboard` beside them) and the leases that split the
//! maps between several processes sharing a PostgreSQL state store.
//!
//! Does not own what a pass does: every pass is `reconcile::run_on` over a scope of maps,
//! and its status files are written by `status::publish`, as `dualwrite reconcile` writes
//! them.
//!
//! Invariants:
//! - One pass at a time. Wake-ups that arrive during a pass are merged into the next one.
//! - An invalid config never tears anything down: the last valid config stays in force and
//!   every map's status shows `Stalled` / `ConfigInvalid` until the config is fixed.
//! - With leases, a process drives only the maps it holds a lease on (see `lease`).
//! - On SIGTERM/Ctrl-C the batch in flight finishes (its cursor saved), status is written,
//!   leases are released and the process exits 0, within [`SHUTDOWN_GRACE`] plus a second.
//! - Secrets never reach logs, status, metrics or the API: only names of variables do.

mod changes;
mod http;
mod lease;
mod logging;
mod metrics;
mod watch;

pub(crate) use http::app;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::{self, Config, ConfigSource, WorkTree};
use crate::reconcile::{self, PassOptions as Scope};
use crate::state::StateStore;
use crate::status::{self, AlertStatus, MapStatus};

/// How long a pass in flight may take to reach a clean stop after SIGTERM (the end of the
/// batch it writes) before it is cut off. Cutting it is as safe as a crash (cursors advance
/// only after commit), just later to converge.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);

/// How `dualwrite run` runs (the CLI's `--interval`, `--listen` … become this).
#[derive(Debug, Clone)]
pub struct Options {
    /// A full reconcile at least this often.
    pub interval: Duration,
    /// How often endpoints without change notifications are polled for new changes.
    pub poll_interval: Duration,
    /// `git pull --ff-only` in the config repository on every timer tick.
    pub pull: bool,
    /// Address of the HTTP endpoint (metrics, health, JSON API).
    pub listen: std::net::SocketAddr,
    pub log_format: LogFormat,
    /// Lease time-to-live of the maps this process drives.
    pub lease_ttl: Duration,
    /// This process's name among those sharing the state store (default: host:pid).
    pub holder_id: Option<String>,
    /// Commit (and push) the status files after each full pass (`--commit-status`).
    pub commit: Option<crate::status_commit::CommitOptions>,
    /// The web dashboard served beside the API.
    pub dashboard: crate::dashboard::Options,
}

/// How logs are written on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("watching the config repository: {0}")]
    Watch(#[source] watch::WatchError),
    #[error(transparent)]
    Reconcile(#[from] reconcile::ReconcileError),
    #[error(transparent)]
    Lease(#[from] lease::LeaseError),
    #[error(transparent)]
    Status(#[from] status::StatusError),
}

/// What woke the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wake {
    /// A config file (or the git HEAD) changed.
    Config,
    /// New captured changes in these (endpoint, table) pairs.
    Changes(BTreeSet<(String, String)>),
}

/// Why a pass ran; a label of the passes metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Trigger {
    Start,
    Config,
    Timer,
    Changes,
    Leases,
    /// A map's backoff after a failure ran out (`nextAttemptAt`).
    Retry,
    /// `dualwrite resume` ended an alert's hold (seen in the state store).
    Resumed,
}

impl Trigger {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Config => "config",
            Trigger::Timer => "timer",
            Trigger::Changes => "changes",
            Trigger::Leases => "leases",
            Trigger::Retry => "retry",
            Trigger::Resumed => "resumed",
        }
    }
}

/// What the HTTP endpoint shows: the status files' content and the service's own state.
/// Written by the loop after every pass, read by HTTP handlers.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// The first pass has completed and the last one reached the state store.
    pub ready: bool,
    pub revision: String,
    pub config_error: Option<String>,
    /// When the config last went from valid to invalid.
    pub config_invalid_since: Option<String>,
    pub last_pass_error: Option<String>,
    pub maps: BTreeMap<String, MapStatus>,
    pub alerts: BTreeMap<String, AlertStatus>,
    pub requests: BTreeMap<String, crate::state::RequestStatus>,
    /// The last `dualwrite verify` of each map that has one (`status/verify/<map>.yaml`).
    pub verify: BTreeMap<String, crate::verify::VerifyResult>,
    /// `Some` when leases split the maps: this process's holder id and its maps.
    pub leases: Option<(String, BTreeSet<String>)>,
    pub passes: BTreeMap<Trigger, u64>,
    pub pass_failures: u64,
    pub last_pass_seconds: f64,
    pub config_reloads_failed: u64,
    pub change_notification_failures: u64,
}

pub(crate) type Shared = Arc<RwLock<Snapshot>>;

/// Runs `dualwrite run` in `dir` until SIGTERM/Ctrl-C.
pub fn run(dir: &Path, options: &Options) -> Result<(), ServiceError> {
    logging::init(options.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServiceError::Runtime)?;
    runtime.block_on(Service::start(dir.to_path_buf(), options.clone()))?;
    // Background work (a listener, a blocked store call) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// The config a pass runs with, and the revision it came from.
struct Loaded {
    cfg: Arc<Config>,
    revision: String,
    /// Shows a running initial sync in its status file and in the snapshot served.
    progress: Arc<LiveProgress>,
}

/// The service's [`crate::sync::ProgressObserver`]: the map's status file, and the snapshot
/// that `/metrics` and `/api/v1/maps/NAME` serve, while the initial sync runs.
#[derive(Debug)]
struct LiveProgress {
    status: status::LiveStatus,
    shared: Shared,
}

impl crate::sync::ProgressObserver for LiveProgress {
    fn saved(&self, store: &dyn StateStore, record: &crate::state::MapRecord) {
        match self.status.write(store, record) {
            Ok(Some(st)) => {
                let mut snap = self.shared.write().expect("snapshot lock");
                snap.maps.insert(record.name.clone(), st);
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(map = %record.name, %error, "the status of a running initial sync")
            }
        }
    }
}

struct Service {
    dir: PathBuf,
    args: Options,
    shared: Shared,
    /// The last valid config.
    good: Option<Loaded>,
    /// Opened with the first valid config; kept open between passes.
    store: Option<Box<dyn StateStore>>,
    leases: Option<lease::Leases>,
    changes: changes::Changes,
    log: logging::PassLog,
    /// When the earliest failing map is due again (the error policy's backoff): a pass
    /// runs then, not at the next timer tick.
    retry_at: Option<tokio::time::Instant>,
}

impl Service {
    async fn start(dir: PathBuf, args: Options) -> Result<(), ServiceError> {
        // First, so that a signal at any moment from here on stops the service cleanly.
        let shutdown = shutdown_signal();
        let shared: Shared = Arc::default();
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|source| ServiceError::Listen {
                addr: args.listen,
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(args.listen);
        tokio::spawn(http::serve(
            listener,
            Arc::clone(&shared),
            crate::dashboard::router(&dir, args.dashboard.clone()),
        ));
        let (wake_tx, mut wake_rx) = mpsc::unbounded_channel();
        let _watcher = watch::watch(&dir, wake_tx.clone()).map_err(ServiceError::Watch)?;
        tracing::info!(
            dir = %dir.display(),
            listen = %addr,
            interval = ?args.interval,
            pull = args.pull,
            "dualwrite run started"
        );
        let mut service = Service {
            changes: changes::Changes::new(wake_tx),
            dir,
            args,
            shared,
            good: None,
            store: None,
            leases: None,
            log: logging::PassLog::default(),
            retry_at: None,
        };
        tokio::pin!(shutdown);
        let mut timer = tokio::time::interval(service.args.interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer.tick().await;
        let mut poll = tokio::time::interval(service.args.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next = Some((Trigger::Start, None));
        loop {
            if let Some((trigger, tables)) = next.take() {
                let pass = service.pass(trigger, tables);
                tokio::pin!(pass);
                tokio::select! {
                    () = &mut pass => {}
                    () = &mut shutdown => {
                        tracing::info!("stopping: finishing the batch in flight");
                        crate::shutdown::request();
                        if tokio::time::timeout(SHUTDOWN_GRACE, &mut pass).await.is_err() {
                            tracing::warn!("the pass in flight did not end in time; cut off");
                        }
                        break;
                    }
                }
                continue;
            }
            let owned_changed = service.leases.as_mut().map(|l| l.changed());
            tokio::select! {
                () = &mut shutdown => {
                    tracing::info!("stopping");
                    crate::shutdown::request();
                    break;
                }
                Some(()) = maybe(service.retry_at.map(tokio::time::sleep_until)) => {
                    service.retry_at = None;
                    next = Some((Trigger::Retry, None));
                }
                _ = timer.tick() => {
                    if service.args.pull {
                        service.pull().await;
                    }
                    next = Some((Trigger::Timer, None));
                }
                _ = poll.tick() => {
                    if service.hold_ended() {
                        next = Some((Trigger::Resumed, None));
                    } else if let Some(tables) = service.changes.poll().await {
                        next = Some((Trigger::Changes, Some(tables)));
                    }
                }
                Some(()) = maybe(owned_changed) => next = Some((Trigger::Leases, None)),
                Some(wake) = wake_rx.recv() => {
                    // Merge whatever else is already waiting into one pass.
                    let mut config = false;
                    let mut tables = BTreeSet::new();
                    for w in std::iter::once(wake).chain(std::iter::from_fn(|| wake_rx.try_recv().ok())) {
                        match w {
                            Wake::Config => config = true,
                            Wake::Changes(t) => tables.extend(t),
                        }
                    }
                    next = Some(if config {
                        (Trigger::Config, None)
                    } else {
                        (Trigger::Changes, Some(tables))
                    });
                }
            }
        }
        service.finish().await;
        Ok(())
    }

    /// One pass. A full pass (no `tables`) reloads the config first; a change pass drives
    /// only the Running maps reading the changed tables.
    async fn pass(&mut self, trigger: Trigger, tables: Option<BTreeSet<(String, String)>>) {
        let started = Instant::now();
        if tables.is_none() && trigger != Trigger::Leases {
            self.reload();
        }
        let Some(loaded) = &self.good else {
            return;
        };
        let cfg = Arc::clone(&loaded.cfg);
        let revision = loaded.revision.clone();
        let progress: Arc<dyn crate::sync::ProgressObserver> = loaded.progress.clone();
        if self.store.is_none() {
            match reconcile::open_store(&self.dir, &cfg) {
                Ok(store) => self.store = Some(store),
                Err(e) => {
                    self.failed(trigger, &e.into(), started);
                    return;
                }
            }
            if self.leases.is_none() {
                match lease::Leases::start(&self.dir, &cfg, &self.args) {
                    Ok(l) => self.leases = Some(l),
                    Err(e) => {
                        self.failed(trigger, &e.into(), started);
                        return;
                    }
                }
            }
        }
        let mut only: Option<HashSet<String>> = None;
        let mut leasing = reconcile::Leasing::Off;
        if let Some(leases) = &self.leases {
            let store = self.store.as_ref().expect("opened above");
            let mut candidates: BTreeSet<String> = cfg
                .maps
                .iter()
                .map(|m| m.resource.metadata.name.clone())
                .collect();
            if let Ok(stored) = store.maps() {
                candidates.extend(stored.into_iter().map(|m| m.name));
            }
            leases.set_candidates(candidates);
            let epochs = leases.epochs();
            only = Some(epochs.keys().cloned().collect());
            leasing = reconcile::Leasing::Held(epochs);
        }
        if let Some(tables) = &tables {
            let woken = changes::maps_reading(&cfg, tables);
            only = Some(match only {
                Some(owned) => owned.intersection(&woken).cloned().collect(),
                None => woken,
            });
            if only.as_ref().is_some_and(HashSet::is_empty) {
                return;
            }
        }
        let scope = Scope {
            only_maps: only,
            changes_only: tables.is_some(),
            respect_backoff: true,
            leasing,
            progress: Some(progress),
            ..Scope::default()
        };
        if let Some(leases) = &self.leases {
            leases.set_busy(true);
        }
        let store = self.store.as_mut().expect("opened above");
        let result = reconcile::run_on(store.as_mut(), &self.dir, &cfg, &revision, &scope).await;
        if let Some(leases) = &self.leases {
            leases.set_busy(false);
        }
        match result {
            Ok(report) => {
                if !scope.changes_only || report.retry_at.is_some() {
                    self.retry_at = report.retry_at.map(|at| {
                        let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
                        tokio::time::Instant::now() + wait
                    });
                }
                if let Err(e) = self.publish(&cfg, &revision, &scope, Some(&report)).await {
                    self.failed(trigger, &e.into(), started);
                    return;
                }
                let mut snap = self.shared.write().expect("snapshot lock");
                *snap.passes.entry(trigger).or_default() += 1;
                snap.last_pass_seconds = started.elapsed().as_secs_f64();
                snap.last_pass_error = None;
                snap.ready = true;
            }
            Err(e) => {
                // A store that failed may have lost its connection: open it afresh next time.
                self.store = None;
                self.failed(trigger, &e.into(), started);
            }
        }
        self.changes.set_targets(&self.dir, &cfg);
    }

    /// Whether a map the last pass left held by an alert is no longer held in the store
    /// (`dualwrite resume` from another process): one cheap read per poll, only while a
    /// map is held.
    fn hold_ended(&self) -> bool {
        let held: Vec<String> = {
            let snap = self.shared.read().expect("snapshot lock");
            snap.maps
                .iter()
                .filter(|(_, st)| st.held_by.is_some())
                .map(|(name, _)| name.clone())
                .collect()
        };
        let Some(store) = self.store.as_ref().filter(|_| !held.is_empty()) else {
            return false;
        };
        store.maps().is_ok_and(|maps| {
            maps.iter()
                .any(|m| held.contains(&m.name) && m.held_by.is_none())
        })
    }

    fn failed(&self, trigger: Trigger, error: &ServiceError, started: Instant) {
        tracing::error!(trigger = trigger.name(), %error, "reconcile pass failed");
        let mut snap = self.shared.write().expect("snapshot lock");
        snap.pass_failures += 1;
        snap.last_pass_error = Some(error.to_string());
        snap.last_pass_seconds = started.elapsed().as_secs_f64();
        snap.ready = false;
    }

    /// Loads the work tree's config. A valid one replaces the last good one; an invalid one
    /// is logged and shown, and the last good one stays in force.
    fn reload(&mut self) {
        let source = WorkTree {
            dir: self.dir.clone(),
        };
        let files = source.files().unwrap_or_default();
        let revision = status::revision(&self.dir, &files);
        match config::load(&source) {
            Ok(cfg) => {
                let was_invalid = self
                    .shared
                    .read()
                    .expect("snapshot lock")
                    .config_error
                    .is_some();
                if was_invalid {
                    tracing::info!(%revision, "config valid again");
                }
                self.shared.write().expect("snapshot lock").config_error = None;
                let changed_store = self.good.as_ref().is_some_and(|g| {
                    g.cfg.project.resource.spec.state_store != cfg.project.resource.spec.state_store
                });
                if changed_store {
                    self.store = None;
                }
                let progress = Arc::new(LiveProgress {
                    status: status::LiveStatus::new(&self.dir, &cfg),
                    shared: Arc::clone(&self.shared),
                });
                self.good = Some(Loaded {
                    cfg: Arc::new(cfg),
                    revision,
                    progress,
                });
            }
            Err(diags) => {
                let message = diags
                    .iter()
                    .take(5)
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                let more = diags.len().saturating_sub(5);
                let message = if more > 0 {
                    format!("{message}; and {more} more")
                } else {
                    message
                };
                tracing::error!(
                    %revision,
                    problems = diags.len(),
                    error = %message,
                    "config invalid; the last valid config stays in force"
                );
                let mut snap = self.shared.write().expect("snapshot lock");
                if snap.config_error.is_none() {
                    snap.config_invalid_since = Some(crate::clock::now_secs());
                }
                snap.config_error = Some(message);
                snap.config_reloads_failed += 1;
            }
        }
    }

    /// Writes the status files of the maps in `scope` (and the alert rules), and publishes
    /// them to the HTTP endpoint. Logs what changed.
    async fn publish(
        &mut self,
        cfg: &Config,
        revision: &str,
        scope: &Scope,
        report: Option<&reconcile::Report>,
    ) -> Result<(), status::StatusError> {
        let store = self
            .store
            .as_deref()
            .expect("publish runs with an open store");
        let (config_error, since) = {
            let snap = self.shared.read().expect("snapshot lock");
            (snap.config_error.clone(), snap.config_invalid_since.clone())
        };
        let publication = status::Publication {
            dir: &self.dir,
            cfg,
            revision,
            only_maps: scope.only_maps.as_ref(),
            alerts: report.map(|r| &r.alerts),
            config_invalid: config_error.as_deref().map(|error| status::ConfigInvalid {
                error,
                since: since.as_deref(),
            }),
        };
        let log = &mut self.log;
        let published = status::publish(&publication, store, &mut |name, st| log.map(name, st))?;
        // A verify runs as a command of its own: its last result is read from its status file.
        let verified: BTreeMap<String, crate::verify::VerifyResult> = cfg
            .maps
            .iter()
            .filter_map(|m| {
                let name = &m.resource.metadata.name;
                crate::verify::read_status(&self.dir, name).map(|r| (name.clone(), r))
            })
            .collect();
        {
            let mut snap = self.shared.write().expect("snapshot lock");
            snap.revision = revision.to_string();
            if let Some(alerts) = published.alerts {
                snap.alerts = alerts;
            }
            let in_requests: HashSet<&str> = cfg
                .requests
                .iter()
                .map(|r| r.resource.metadata.name.as_str())
                .collect();
            snap.requests
                .retain(|name, _| in_requests.contains(name.as_str()));
            snap.requests.extend(published.requests);
            let in_config: HashSet<&str> = cfg
                .maps
                .iter()
                .map(|m| m.resource.metadata.name.as_str())
                .collect();
            let owned: Option<BTreeSet<String>> = self.leases.as_ref().map(|l| l.owned());
            snap.maps.retain(|name, _| {
                in_config.contains(name.as_str()) && owned.as_ref().is_none_or(|o| o.contains(name))
            });
            for (name, st) in published.maps {
                snap.maps.insert(name, st);
            }
            snap.verify = verified;
            snap.leases = self
                .leases
                .as_ref()
                .map(|l| (l.holder().to_string(), l.owned()));
            snap.change_notification_failures = self.changes.failures();
        }
        // A drain woken by changes only moves counters: those go with the next full pass, so
        // a busy map does not make a commit per batch.
        if !scope.changes_only {
            self.commit_status(revision).await;
        }
        Ok(())
    }

    /// `--commit-status`: commits (and pushes) the status files that changed; a failure is
    /// logged and retried with the next full pass.
    async fn commit_status(&self, revision: &str) {
        let Some(options) = self.args.commit.clone() else {
            return;
        };
        let (dir, revision) = (self.dir.clone(), revision.to_string());
        let done = tokio::task::spawn_blocking(move || {
            crate::status_commit::commit(&dir, &options, &revision)
        })
        .await;
        match done {
            Ok(Ok(crate::status_commit::Committed::Nothing)) => {}
            Ok(Ok(committed)) => tracing::info!("{committed}"),
            Ok(Err(error)) => tracing::warn!(%error, "status files not committed"),
            Err(error) => tracing::warn!(%error, "status files not committed"),
        }
    }

    /// `git pull --ff-only` in the config repository; a failure is logged and the pass runs
    /// with what the work tree has.
    async fn pull(&self) {
        let dir = self.dir.clone();
        let over_status = self
            .args
            .commit
            .as_ref()
            .is_some_and(|c| c.branch.is_none());
        let pulled = tokio::task::spawn_blocking(move || {
            if over_status {
                crate::status_commit::pull(&dir)
            } else {
                config::loader::git(&dir, &["pull", "--ff-only", "-q"], None)
                    .map(drop)
                    .map_err(crate::status_commit::StatusCommitError::from)
            }
        })
        .await;
        match pulled {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "git pull --ff-only failed"),
            Err(error) => tracing::warn!(%error, "git pull --ff-only failed"),
        }
    }

    /// After SIGTERM: write the status of what was done, give the leases back, stop.
    async fn finish(&mut self) {
        if let Some(loaded) = &self.good {
            let cfg = Arc::clone(&loaded.cfg);
            let revision = loaded.revision.clone();
            let scope = Scope {
                only_maps: self
                    .leases
                    .as_ref()
                    .map(|l| l.owned().into_iter().collect()),
                leasing: reconcile::Leasing::Off,
                ..Scope::default()
            };
            if self.store.is_some()
                && let Err(error) = self.publish(&cfg, &revision, &scope, None).await
            {
                tracing::warn!(%error, "writing status at shutdown");
            }
        }
        if let Some(leases) = self.leases.take() {
            leases.stop();
        }
        tracing::info!("stopped");
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT). The handlers are installed when this is called,
/// not when the future is first polled: a signal that arrives in between (the service
/// already answering `/readyz`) must stop it, not kill it.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
        async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Awaits `f` when there is one; pending forever otherwise (a `select!` branch that is off).
async fn maybe<F: std::future::Future>(f: Option<F>) -> Option<F::Output> {
    match f {
        Some(f) => Some(f.await),
        None => std::future::pending().await,
    }
}
