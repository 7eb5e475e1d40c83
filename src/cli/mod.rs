//! The command line: clap definitions and dispatch to the library. Rendering of plans and
//! diagnostics as text, JSON or GitHub annotations lives in `render`; the options of
//! `dualwrite run` in `run`; error listings, requests and logs in `errors`; solutions (ALM)
//! in `solution`.

pub mod errors;
pub mod paint;
pub mod render;
pub mod run;
pub mod solution;
pub mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, ConfigSource, GitRevision, WorkTree};
use crate::plan;
use crate::state::RequestState;

/// Exit codes of every command.
pub mod exit {
    pub const OK: i32 = 0;
    /// Invalid input, an unknown map, a request that would be Rejected, a failure.
    pub const INVALID: i32 = 1;
    /// `--detailed-exitcode`: valid, with changes; `verify`: the two sides differ.
    pub const CHANGES: i32 = 2;
    /// `--apply` of a request that cannot run now (a Retry while its map is not Running):
    /// it waits in `requests/` and runs once the map is Running.
    pub const WAITING: i32 = 3;
}

#[derive(Parser, Debug)]
#[command(
    name = "dualwrite",
    version,
    about = "Keeps tables in two SQL databases in sync, the GitOps way"
)]
pub struct Cli {
    /// Run as if started in DIR (the directory holding dualwrite.yaml).
    #[arg(short = 'C', global = true, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Colours: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Schema and semantic checks of the whole repository.
    Validate(SourceArgs),
    /// Apply the plan once (or only print it with --dry-run).
    Reconcile(ReconcileArgs),
    /// Reconcile continuously: on config changes, on a timer and on new changes; serve
    /// metrics, health and a JSON API over HTTP. Stops on SIGTERM/Ctrl-C.
    Run(run::RunArgs),
    /// The web dashboard (maps, errors, alerts, requests) without the sync loop: reads the
    /// state store and the repository; `run --listen` serves the same pages.
    Dashboard {
        /// Address to listen on. Loopback unless told.
        #[arg(long, default_value = "127.0.0.1:9465")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        dashboard: run::DashboardArgs,
    },
    /// The phases, queues and error counts of the maps.
    Status {
        /// Only this map.
        map: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value_t = ListOutput::Text)]
        output: ListOutput,
    },
    /// Errored records: list them, or retry or dismiss them through an ErrorRequest.
    #[command(subcommand)]
    Errors(ErrorsCommand),
    /// The activity log of a map ("download the logs"), oldest first.
    Logs {
        map: String,
        /// Only entries at or after: an age (1h, 1d) or an RFC 3339 time.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// JSON lines or CSV.
        #[arg(long, alias = "format", value_enum, default_value_t = errors::LogFormat::Jsonl)]
        output: errors::LogFormat,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long = "output-file", value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// End an alert's hold on a map, then reconcile (the map resumes with catch-up).
    Resume { map: String },
    /// Alert rules.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Seed the embedded demo apps under .dualwrite/ (if missing), then reconcile once.
    Demo {
        /// Start the demo over: remove its two apps, the embedded state store and status/
        /// first (only with the embedded SQLite state store).
        #[arg(long)]
        reset: bool,
    },
    /// Solutions (ALM): export, import, list and uninstall packages of maps and alert rules.
    #[command(subcommand)]
    Solution(solution::SolutionCommand),
    /// Compare both sides of each map row by row through its mapping (--repair: write the
    /// differences in the map's direction). Exit 0 equal, 2 differences, 1 error.
    Verify(verify::VerifyArgs),
    /// Write the JSON Schemas to schemas/.
    Schema {
        /// Where to write them.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// Run unit tests for alert rules (in the spirit of `promtool test rules`).
    Test {
        /// Test files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ErrorsCommand {
    /// Errored records matching the filters, newest first.
    List(errors::ListArgs),
    /// Write an ErrorRequest that retries the matching records (--apply: run it now).
    Retry(errors::RequestArgs),
    /// Write an ErrorRequest that dismisses the matching records for good (--apply: now).
    Dismiss(errors::RequestArgs),
}

#[derive(clap::Args, Debug)]
pub struct SourceArgs {
    /// Read the config from this git commit instead of the work tree.
    #[arg(long, value_name = "REV")]
    pub revision: Option<String>,
    /// text, json, or github (annotations and a notice for GitHub Actions).
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(clap::Args, Debug)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Exit 2 when the config is valid and there are changes.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Wait for maps another process drives (their lease) instead of skipping them (exit 1).
    #[arg(long)]
    pub wait: bool,
    /// With --dry-run: read the actual state from the status files committed at this git
    /// revision (e.g. origin/dualwrite-status) instead of the state store or the work tree.
    #[arg(long, value_name = "REF", requires = "dry_run")]
    pub status_from: Option<String>,
    #[command(flatten)]
    pub commit: StatusCommitArgs,
}

/// Committing the status files back to git (`reconcile` and `run`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct StatusCommitArgs {
    /// Commit the status files that changed after each pass (a machine author; nothing when
    /// nothing changed).
    #[arg(long)]
    pub commit_status: bool,
    /// Commit them to this branch, which holds only status/ (created on first use), instead
    /// of the checked-out branch.
    #[arg(long, value_name = "NAME", requires = "commit_status")]
    pub status_branch: Option<String>,
    /// Push the status commits; a remote that moved is fetched and the status-only commits
    /// replayed on top of it.
    #[arg(long, requires = "commit_status")]
    pub push: bool,
}

impl StatusCommitArgs {
    pub fn options(&self) -> Option<crate::status_commit::CommitOptions> {
        self.commit_status
            .then(|| crate::status_commit::CommitOptions {
                branch: self.status_branch.clone(),
                push: self.push,
            })
    }
}

/// The output of `validate` and `reconcile --dry-run`, where GitHub annotations mean
/// something.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Text,
    Json,
    Github,
}

/// The output of every listing (`status`, `errors list`, `solution list`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListOutput {
    Text,
    Json,
}

/// `--color`: colours on a terminal (`auto`, unless `NO_COLOR` is set), always, or never.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// Runs the command line and returns the exit code.
pub fn main() -> i32 {
    // A usage error is invalid input like any other: exit 1 (clap's own default is 2, which
    // here means "valid, with changes").
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::INVALID
            } else {
                exit::OK
            };
        }
    };
    paint::init(cli.color);
    let mut out = std::io::stdout().lock();
    match run(&cli, &mut out) {
        Ok(code) => code,
        // `dualwrite … | head`: the reader went away; that is not a failure.
        Err(message) if message.contains("Broken pipe") => exit::OK,
        Err(message) => {
            let _ = out.flush();
            eprintln!("dualwrite: {message}");
            exit::INVALID
        }
    }
}

fn source(dir: &Path, args: &SourceArgs) -> Box<dyn ConfigSource> {
    match &args.revision {
        Some(rev) => Box::new(GitRevision {
            dir: dir.to_path_buf(),
            revision: rev.clone(),
        }),
        None => Box::new(WorkTree {
            dir: dir.to_path_buf(),
        }),
    }
}

/// One reconcile pass, then the status files; prints what happened.
fn apply_with(
    dir: &Path,
    cfg: &config::Config,
    src: &dyn ConfigSource,
    out: &mut dyn Write,
    options: &crate::reconcile::PassOptions,
    commit: Option<&crate::status_commit::CommitOptions>,
) -> Result<i32, String> {
    let files = src.files().unwrap_or_default();
    let revision = crate::status::revision(dir, &files);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let started = crate::clock::now_millis();
    let mut options = options.clone();
    options.progress = Some(std::sync::Arc::new(crate::status::LiveStatus::new(
        dir, cfg,
    )));
    let report = runtime
        .block_on(crate::reconcile::run_with(dir, cfg, &revision, &options))
        .map_err(|e| e.to_string())?;
    let store = crate::reconcile::open_store(dir, cfg).map_err(|e| e.to_string())?;
    let publication = crate::status::Publication {
        dir,
        cfg,
        revision: &revision,
        only_maps: None,
        alerts: Some(&report.alerts),
        config_invalid: None,
    };
    let published = crate::status::publish(&publication, store.as_ref(), &mut |_, _| {})
        .map_err(|e| e.to_string())?;
    for (name, st) in published.alerts.iter().flatten() {
        for (map, st) in st
            .maps
            .iter()
            .filter(|(_, st)| st.state == crate::alert::AlertState::Firing)
        {
            writeln!(
                out,
                "alert {name}: Firing for map {map} ({} in window)",
                st.count
            )
            .map_err(|e| e.to_string())?;
        }
    }
    for u in &report.undelivered {
        writeln!(
            out,
            "alert {}: notification for map {} not delivered: {}",
            u.rule, u.map, u.error
        )
        .map_err(|e| e.to_string())?;
    }
    // Only what this pass did: requests that ran (or were refused) in it, not every old one.
    for (name, status) in &published.requests {
        if status
            .finished_at
            .as_deref()
            .is_some_and(|at| at >= started.as_str())
        {
            writeln!(
                out,
                "request {name}: {}{}",
                status.state,
                status
                    .reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )
            .map_err(|e| e.to_string())?;
        }
    }
    for (name, phase, problem) in &report.maps {
        let phase = paint::phase(&phase.to_string());
        match problem {
            Some(p) => writeln!(out, "map {name}: {phase} ({}: {p})", paint::bad("error")),
            None => writeln!(out, "map {name}: {phase}"),
        }
        .map_err(|e| e.to_string())?;
    }
    writeln!(
        out,
        "revision {revision}; {} status file(s) updated",
        published.changed
    )
    .map_err(|e| e.to_string())?;
    if let Some(commit) = commit {
        match crate::status_commit::commit(dir, commit, &revision) {
            Ok(done) => writeln!(out, "{done}").map_err(|e| e.to_string())?,
            Err(e) => {
                eprintln!("dualwrite: the status files are written but not committed: {e}");
                return Ok(exit::INVALID);
            }
        }
    }
    Ok(if report.has_problems() {
        exit::INVALID
    } else {
        exit::OK
    })
}

/// Diagnostics with paths relative to the git repository root when the config sits in a
/// subdirectory, so GitHub annotations point at the right file.
fn from_repo_root(
    dir: &Path,
    format: Output,
    mut diags: Vec<config::Diagnostic>,
) -> Vec<config::Diagnostic> {
    if format != Output::Github {
        return diags;
    }
    let prefix =
        config::loader::git(dir, &["rev-parse", "--show-prefix"], None).unwrap_or_default();
    let prefix = prefix.trim();
    for d in &mut diags {
        d.path = format!("{prefix}{}", d.path);
    }
    diags
}

/// The work tree's config for commands that act on it; invalid config is an error listing
/// every diagnostic.
/// The map `name` of the config, or the error every command gives for an unknown map
/// (exit 1), naming the maps there are.
pub fn require_map<'c>(
    cfg: &'c config::Config,
    name: &str,
) -> Result<&'c config::TableMap, String> {
    cfg.map(name).ok_or_else(|| {
        let names: Vec<&str> = cfg
            .maps
            .iter()
            .map(|m| m.resource.metadata.name.as_str())
            .collect();
        match names.as_slice() {
            [] => format!("no map named {name:?}: the config has no maps"),
            names => format!(
                "no map named {name:?} in the config (maps: {})",
                names.join(", ")
            ),
        }
    })
}

fn load_work_tree(dir: &Path) -> Result<(WorkTree, config::Config), String> {
    let src = WorkTree {
        dir: dir.to_path_buf(),
    };
    let cfg = config::load(&src).map_err(|d| {
        d.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    Ok((src, cfg))
}

/// Runs a parsed command, writing what the user sees to `out`.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<i32, String> {
    let w = |e: std::io::Error| e.to_string();
    match &cli.command {
        Command::Validate(args) => {
            let src = source(&cli.dir, args);
            match config::load(src.as_ref()) {
                Ok(cfg) => {
                    render::valid(out, args.output, &cfg).map_err(w)?;
                    Ok(exit::OK)
                }
                Err(diags) => {
                    let diags = from_repo_root(&cli.dir, args.output, diags);
                    render::diagnostics(out, args.output, &diags).map_err(w)?;
                    Ok(exit::INVALID)
                }
            }
        }
        Command::Reconcile(args) => {
            let src = source(&cli.dir, &args.source);
            let cfg = match config::load(src.as_ref()) {
                Ok(cfg) => cfg,
                Err(diags) => {
                    let diags = from_repo_root(&cli.dir, args.source.output, diags);
                    render::diagnostics(out, args.source.output, &diags).map_err(w)?;
                    return Ok(exit::INVALID);
                }
            };
            if let Some(rev) = &args.status_from {
                config::loader::git(
                    &cli.dir,
                    &["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")],
                    None,
                )
                .map_err(|_| format!("--status-from {rev}: no such git revision"))?;
            }
            let actual = plan::observe(&cli.dir, &cfg, args.status_from.as_deref())
                .map_err(|e| e.to_string())?;
            let plan = plan::Plan::new(&cfg, &actual);
            if args.dry_run {
                render::plan(out, args.source.output, &plan, &actual.source).map_err(w)?;
                return Ok(if args.detailed_exitcode && plan.has_changes() {
                    exit::CHANGES
                } else {
                    exit::OK
                });
            }
            if args.source.revision.is_some() {
                return Err(
                    "--revision is only for --dry-run: a reconcile applies the work tree".into(),
                );
            }
            let options = crate::reconcile::PassOptions {
                leasing: if args.wait {
                    crate::reconcile::Leasing::ClaimWaiting
                } else {
                    crate::reconcile::Leasing::Claim
                },
                ..Default::default()
            };
            apply_with(
                &cli.dir,
                &cfg,
                src.as_ref(),
                out,
                &options,
                args.commit.options().as_ref(),
            )
        }
        Command::Status { map, output } => {
            let (_, cfg) = load_work_tree(&cli.dir)?;
            if let Some(map) = map {
                require_map(&cfg, map)?;
            }
            let store = crate::reconcile::open_store(&cli.dir, &cfg).map_err(|e| e.to_string())?;
            render::status(out, *output, &cli.dir, store.as_ref(), &cfg, map.as_deref())
                .map_err(|e| e.to_string())?;
            Ok(exit::OK)
        }
        Command::Alerts(AlertsCommand::Test { files }) => {
            let mut failed = 0;
            let mut passed = 0;
            for file in files {
                let path = if file.is_absolute() {
                    file.clone()
                } else {
                    cli.dir.join(file)
                };
                match crate::alert::test::run_file(&path, &file.display().to_string()) {
                    Err(e) => {
                        failed += 1;
                        writeln!(out, "ERROR {e}").map_err(w)?;
                    }
                    Ok(outcomes) => {
                        for o in outcomes {
                            if o.failures.is_empty() {
                                passed += 1;
                                writeln!(out, "ok   {}: {}", o.file, o.test).map_err(w)?;
                            } else {
                                failed += 1;
                                writeln!(out, "FAIL {}: {}", o.file, o.test).map_err(w)?;
                                for f in o.failures {
                                    writeln!(out, "{f}").map_err(w)?;
                                }
                            }
                        }
                    }
                }
            }
            writeln!(out, "{passed} passed, {failed} failed").map_err(w)?;
            Ok(if failed == 0 { exit::OK } else { exit::INVALID })
        }
        Command::Errors(ErrorsCommand::List(args)) => {
            let (_, cfg) = load_work_tree(&cli.dir)?;
            let store = crate::state::open_existing(&cli.dir, &cfg.project.resource)
                .map_err(|e| e.to_string())?;
            errors::list(out, &cli.dir, &cfg, store.as_deref(), args)?;
            Ok(exit::OK)
        }
        Command::Errors(ErrorsCommand::Retry(args) | ErrorsCommand::Dismiss(args)) => {
            let (action, verb) = match &cli.command {
                Command::Errors(ErrorsCommand::Retry(_)) => (config::RequestAction::Retry, "retry"),
                _ => (config::RequestAction::Dismiss, "dismiss"),
            };
            let (_, cfg) = load_work_tree(&cli.dir)?;
            let store = crate::state::open_existing(&cli.dir, &cfg.project.resource)
                .map_err(|e| e.to_string())?;
            let (name, relative) =
                errors::write_request(out, &cli.dir, &cfg, store.as_deref(), action, args)?;
            drop(store);
            if !args.apply {
                return Ok(exit::OK);
            }
            let (src, cfg) = load_work_tree(&cli.dir)?;
            let request = cfg
                .requests
                .iter()
                .find(|r| r.resource.metadata.name == name)
                .expect("the request was just written");
            {
                let store =
                    crate::reconcile::open_store(&cli.dir, &cfg).map_err(|e| e.to_string())?;
                let status = crate::state::RequestStatus {
                    requested_by: Some(errors::local_requester(&cli.dir, verb)),
                    ..crate::state::RequestStatus::new(&request.resource.spec.map, action)
                };
                let applied = serde_json::to_value(&request.resource).expect("serializes");
                store
                    .put_request(&name, &applied, &status)
                    .map_err(|e| e.to_string())?;
            }
            let only = crate::reconcile::PassOptions {
                only_request: Some(name.clone()),
                ..Default::default()
            };
            let code = apply_with(&cli.dir, &cfg, &src, out, &only, None)?;
            let store = crate::reconcile::open_store(&cli.dir, &cfg).map_err(|e| e.to_string())?;
            let status = store
                .request_status(&name)
                .map_err(|e| e.to_string())?
                .unwrap_or_else(|| {
                    crate::state::RequestStatus::new(&request.resource.spec.map, action)
                });
            match status.state {
                // It cannot run now: it stays in requests/ and runs once the map is Running.
                RequestState::Queued => {
                    writeln!(
                        out,
                        "request {name} cannot run now: map {} is not Running; it waits in {} and runs once the map is Running",
                        status.map,
                        relative.display()
                    )
                    .map_err(w)?;
                    Ok(exit::WAITING)
                }
                // A Rejected --apply leaves nothing behind: not the file, not its status.
                RequestState::Rejected => {
                    let _ = std::fs::remove_file(cli.dir.join(&relative));
                    let _ = std::fs::remove_file(
                        cli.dir
                            .join(crate::status::STATUS_DIR)
                            .join("requests")
                            .join(format!("{name}.yaml")),
                    );
                    store.forget_request(&name).map_err(|e| e.to_string())?;
                    writeln!(
                        out,
                        "{} removed: the request was Rejected",
                        relative.display()
                    )
                    .map_err(w)?;
                    Ok(exit::INVALID)
                }
                RequestState::Failed => Ok(exit::INVALID),
                _ => Ok(code),
            }
        }
        Command::Logs {
            map,
            since,
            output,
            file,
        } => {
            let (_, cfg) = load_work_tree(&cli.dir)?;
            require_map(&cfg, map)?;
            let store = crate::state::open_existing(&cli.dir, &cfg.project.resource)
                .map_err(|e| e.to_string())?;
            let file = file.as_ref().map(|f| {
                if f.is_absolute() {
                    f.clone()
                } else {
                    std::env::current_dir().unwrap_or_default().join(f)
                }
            });
            errors::logs(
                out,
                store.as_deref(),
                map,
                since.as_deref(),
                *output,
                file.as_deref(),
            )?;
            Ok(exit::OK)
        }
        Command::Resume { map } => {
            let (src, cfg) = load_work_tree(&cli.dir)?;
            require_map(&cfg, map)?;
            let mut store =
                crate::reconcile::open_store(&cli.dir, &cfg).map_err(|e| e.to_string())?;
            let alert = crate::reconcile::end_hold(store.as_mut(), map, "dualwrite resume")
                .map_err(|e| e.to_string())?;
            match alert {
                Some(alert) => {
                    writeln!(out, "map {map}: hold by alert {alert} ended").map_err(w)?
                }
                None => writeln!(out, "map {map} is not held by an alert").map_err(w)?,
            }
            // A `run` that drives the map sees the hold end in the store and resumes it.
            if let Some(lease) =
                crate::lease::driven_elsewhere(store.as_ref(), map).map_err(|e| e.to_string())?
            {
                writeln!(
                    out,
                    "map {map} is driven by {} since {}: it resumes there",
                    lease.holder, lease.since
                )
                .map_err(w)?;
                return Ok(exit::OK);
            }
            drop(store);
            apply_with(&cli.dir, &cfg, &src, out, &Default::default(), None)
        }
        Command::Demo { reset } => {
            if *reset {
                let (_, cfg) = load_work_tree(&cli.dir)?;
                for file in crate::demo::reset(&cli.dir, &cfg.project.resource)
                    .map_err(|e| format!("resetting the demo: {e}"))?
                {
                    writeln!(out, "removed {file}").map_err(w)?;
                }
            }
            for file in crate::demo::seed(&cli.dir).map_err(|e| format!("seeding the demo: {e}"))? {
                writeln!(out, "created {file} (demo data)").map_err(w)?;
            }
            let (src, cfg) = load_work_tree(&cli.dir)?;
            let code = apply_with(&cli.dir, &cfg, &src, out, &Default::default(), None)?;
            let store = crate::reconcile::open_store(&cli.dir, &cfg).map_err(|e| e.to_string())?;
            writeln!(out).map_err(w)?;
            render::status(out, ListOutput::Text, &cli.dir, store.as_ref(), &cfg, None)
                .map_err(|e| e.to_string())?;
            Ok(code)
        }
        Command::Run(args) => {
            crate::service::run(&cli.dir, &args.options()?).map_err(|e| e.to_string())?;
            Ok(exit::OK)
        }
        Command::Dashboard { listen, dashboard } => {
            crate::dashboard::serve(&cli.dir, *listen, dashboard.options()?)
                .map_err(|e| e.to_string())?;
            Ok(exit::OK)
        }
        Command::Solution(command) => solution::run(&cli.dir, command, out),
        Command::Verify(args) => verify::run(&cli.dir, args, out),
        Command::Schema { out: dir } => {
            let dir = if dir.is_absolute() {
                dir.clone()
            } else {
                cli.dir.join(dir)
            };
            for file in config::schema::write_schemas(&dir).map_err(w)? {
                writeln!(out, "wrote {}", dir.join(file).display()).map_err(w)?;
            }
            Ok(exit::OK)
        }
    }
}
