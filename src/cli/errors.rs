//! `dualwrite errors list|retry|dismiss` and `dualwrite logs`: errored records and the
//! activity log as people read them, and ErrorRequest files written under `requests/` for
//! review (or run at once with `--apply`). Executing requests belongs to `requests`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{self, Config, ErrorFilter, RequestAction};
use crate::errors::Exported;
use crate::state::{Order, StateStore};

/// The filters of SPEC §1, as options.
#[derive(clap::Args, Debug, Clone)]
pub struct FilterArgs {
    /// Only this map.
    #[arg(long)]
    pub map: Option<String>,
    /// Latest failure at or after: RFC 3339 (2026-11-22T00:00:00Z) or an age (90s, 15m, 1h, 1d).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Latest failure before: RFC 3339 or an age.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// The data source direction.
    #[arg(long, value_parser = ["SourceToDestination", "DestinationToSource"])]
    pub direction: Option<String>,
    #[arg(long = "type", value_name = "TYPE", value_parser = [
        "ApplicationError", "NetworkError", "TransformError", "SchemaError", "ConflictError", "Any"
    ])]
    pub error_type: Option<String>,
    #[arg(long, value_parser = ["InitialSync", "Live", "CatchUp"])]
    pub phase: Option<String>,
    /// Only these ids (repeat the option or separate with commas).
    #[arg(long = "id", value_name = "ID", value_delimiter = ',')]
    pub ids: Vec<i64>,
}

impl FilterArgs {
    /// The filter as an ErrorRequest would carry it; times resolved against `now`.
    pub fn filter(&self, now: chrono::DateTime<chrono::Utc>) -> Result<ErrorFilter, String> {
        let text = crate::errors::FilterText {
            from: self.from.clone(),
            to: self.to.clone(),
            direction: self.direction.clone(),
            error_type: self.error_type.clone(),
            phase: self.phase.clone(),
            ids: self.ids.clone(),
        };
        text.filter(now, "--").map_err(|e| e.to_string())
    }
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Records in this state: Open (the default), Superseded, Retried, or all.
    #[arg(long, default_value = "Open", value_parser = ["Open", "Superseded", "Retried", "all"])]
    pub state: String,
    /// Only errored records (`record`) or only map-level events (`map`: an endpoint
    /// unreachable, a table or column missing; no key). Both by default.
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// At most this many records, newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Also read each record's rows now: the source row, the target row and what a retry
    /// would write (connects to the databases).
    #[arg(long)]
    pub show_rows: bool,
    #[arg(short = 'o', long, value_enum, default_value_t = super::ListOutput::Text)]
    pub output: super::ListOutput,
}

#[derive(clap::Args, Debug)]
pub struct RequestArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The request's name (default: ACTION-MAP-YYYYMMDD-HHMMSS).
    #[arg(long)]
    pub name: Option<String>,
    /// Run the request now (a reconcile pass) instead of leaving it for review.
    #[arg(long)]
    pub apply: bool,
    /// Write the request even when it would be Rejected (unknown ids, too many records).
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScopeArg {
    Map,
    Record,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Jsonl,
    Csv,
}

type Out<'a> = &'a mut dyn Write;

fn io(e: std::io::Error) -> String {
    e.to_string()
}

/// `errors list`: the records the filter selects, newest first, with the total that match.
pub fn list(
    out: Out<'_>,
    dir: &Path,
    cfg: &Config,
    store: Option<&dyn StateStore>,
    args: &ListArgs,
) -> Result<(), String> {
    if let Some(map) = &args.filter.map {
        super::require_map(cfg, map)?;
    }
    let filter = args.filter.filter(chrono::Utc::now())?;
    let mut query = crate::errors::query_of(args.filter.map.as_deref(), &filter);
    // "all" is no state: any.
    query.state = crate::state::ErrorState::parse(&args.state);
    query.scope = args.scope.map(|s| match s {
        ScopeArg::Map => crate::state::ErrorScope::Map,
        ScopeArg::Record => crate::state::ErrorScope::Record,
    });
    let (matched, records) = match store {
        Some(store) => (
            store.count_errors(&query).map_err(|e| e.to_string())?,
            store
                .query_errors(&query, Order::NewestFirst, args.limit)
                .map_err(|e| e.to_string())?,
        ),
        None => (0, Vec::new()),
    };
    let previews = if args.show_rows && !records.is_empty() {
        let runtime = tokio::runtime::Runtime::new().map_err(io)?;
        runtime.block_on(crate::requests::preview_retries(dir, cfg, &records))
    } else {
        Default::default()
    };
    if args.output == super::ListOutput::Json {
        let errors: Vec<serde_json::Value> = records
            .iter()
            .map(|e| {
                let mut v = serde_json::to_value(Exported::of(e)).expect("serializes");
                if let Some(p) = previews.get(&e.id) {
                    v["rows"] = serde_json::to_value(p).expect("serializes");
                }
                v
            })
            .collect();
        let doc = serde_json::json!({
            "formatVersion": 1,
            "matched": matched,
            "shown": records.len(),
            "errors": errors,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc).expect("json")).map_err(io)?;
        return Ok(());
    }
    if store.is_none() {
        writeln!(
            out,
            "no state store yet: nothing has run, so nothing has failed"
        )
        .map_err(io)?;
        return Ok(());
    }
    let state = if args.state == "all" {
        String::new()
    } else {
        format!("{} ", args.state.to_lowercase())
    };
    writeln!(
        out,
        "{matched} {state}errored record(s) match{}",
        if (records.len() as u64) < matched {
            format!("; showing the newest {}", records.len())
        } else {
            String::new()
        }
    )
    .map_err(io)?;
    if records.is_empty() {
        return Ok(());
    }
    let header = [
        "ID",
        "MAP",
        "PHASE",
        "DIRECTION",
        "TYPE",
        "KEY",
        "CODE",
        "ATTEMPTS",
        "LAST FAILURE",
        "STATE",
        "MESSAGE",
    ];
    let rows: Vec<[String; 11]> = records
        .iter()
        .map(|e| {
            [
                e.id.to_string(),
                e.map.clone(),
                e.phase.to_string(),
                e.direction.clone(),
                e.error_type.to_string(),
                e.key.clone(),
                e.code.clone().unwrap_or_else(|| "-".into()),
                e.attempts.to_string(),
                e.last_at.clone(),
                e.state.to_string(),
                e.message.replace('\n', " "),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let last = cells.len() - 1;
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.clone()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    writeln!(out, "{}", line(&header.map(String::from))).map_err(io)?;
    for (row, e) in rows.iter().zip(&records) {
        writeln!(out, "{}", line(row)).map_err(io)?;
        if let Some(p) = previews.get(&e.id) {
            let show = |v: &Option<serde_json::Value>, none: &str| {
                v.as_ref()
                    .map_or_else(|| none.to_string(), |v| v.to_string())
            };
            writeln!(out, "    source row now: {}", show(&p.source_row, "(gone)")).map_err(io)?;
            writeln!(
                out,
                "    target row now: {}",
                show(&p.target_row, "(not there)")
            )
            .map_err(io)?;
            let writes = if p.retry_deletes {
                "a delete (the source row is gone)".to_string()
            } else {
                show(&p.retry_writes, "nothing")
            };
            writeln!(out, "    a retry writes: {writes}").map_err(io)?;
            if let Some(problem) = &p.problem {
                writeln!(out, "    problem:        {problem}").map_err(io)?;
            }
        }
    }
    Ok(())
}

/// `errors retry|dismiss`: writes `requests/<name>.yaml` after checking that the whole
/// config stays valid with it, and says what it matches now. Returns the request's name.
pub fn write_request(
    out: Out<'_>,
    dir: &Path,
    cfg: &Config,
    store: Option<&dyn StateStore>,
    action: RequestAction,
    args: &RequestArgs,
) -> Result<(String, PathBuf), String> {
    let map = args.filter.map.clone().ok_or_else(|| {
        "--map is required: a request acts on the errored records of one map".to_string()
    })?;
    super::require_map(cfg, &map)?;
    let now = chrono::Utc::now();
    let filter = args.filter.filter(now)?;
    let verb = match action {
        RequestAction::Retry => "retry",
        RequestAction::Dismiss => "dismiss",
    };
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| crate::request_file::default_name(action, &map, now));
    // What the store says of it now: how many records it matches, and whether it would be
    // Rejected (a request that would be is not written, unless --force).
    let mut matched = None;
    if let Some(store) = store {
        let assessment =
            crate::request_file::assess(store, cfg, &map, &filter).map_err(|e| e.to_string())?;
        matched = Some(assessment.matched);
        if let Some(reason) = assessment.rejected {
            if !args.force {
                return Err(format!(
                    "the request would be Rejected: {reason}; nothing written (--force writes it anyway)"
                ));
            }
            writeln!(
                out,
                "warning: it will be Rejected: {reason} (written: --force)"
            )
            .map_err(io)?;
        }
    }
    let by = format!("`dualwrite errors {verb}`");
    let relative = crate::request_file::write(
        dir,
        &crate::request_file::NewRequest {
            name: &name,
            map: &map,
            action,
            filter: &filter,
            by: &by,
            now,
        },
    )
    .map_err(|e| match e {
        crate::request_file::RequestFileError::Exists(relative) => format!(
            "{} already exists: a request runs once, identified by its name; pick another --name",
            relative.display()
        ),
        crate::request_file::RequestFileError::Invalid(diags) => diags,
        e => e.to_string(),
    })?;
    writeln!(out, "wrote {}", relative.display()).map_err(io)?;
    if let Some(matched) = matched {
        writeln!(
            out,
            "it matches {matched} open errored record(s) of map {map} now"
        )
        .map_err(io)?;
    }
    if !args.apply {
        writeln!(
            out,
            "review and commit it; the next `dualwrite reconcile` runs it once while map {map} is Running (or run it now with --apply)"
        )
        .map_err(io)?;
    }
    Ok((name, relative))
}

/// Who runs a request with `--apply`: the git identity, else the login name.
pub fn local_requester(dir: &Path, verb: &str) -> String {
    let git = |key: &str| {
        config::loader::git(dir, &["config", key], None)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let who = match (git("user.name"), git("user.email")) {
        (Some(name), Some(email)) => format!("{name} <{email}>"),
        (Some(name), None) => name,
        _ => std::env::var("USER").unwrap_or_else(|_| "unknown".into()),
    };
    format!("{who} (dualwrite errors {verb} --apply)")
}

/// `logs MAP`: the activity log, oldest first, as JSON lines or CSV.
pub fn logs(
    out: Out<'_>,
    store: Option<&dyn StateStore>,
    map: &str,
    since: Option<&str>,
    format: LogFormat,
    file: Option<&Path>,
) -> Result<(), String> {
    let since = since
        .map(|text| crate::errors::time_of("--since", text, chrono::Utc::now()))
        .transpose()
        .map_err(|e| e.to_string())?
        .map(crate::clock::secs);
    let entries = match store {
        Some(store) => store
            .activity_since(map, since.as_deref())
            .map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let format = match format {
        LogFormat::Jsonl => crate::activity::Format::Jsonl,
        LogFormat::Csv => crate::activity::Format::Csv,
    };
    let buffer = crate::activity::export(map, &entries, format).map_err(io)?;
    match file {
        Some(path) => {
            std::fs::write(path, &buffer).map_err(|e| format!("{}: {e}", path.display()))?;
            writeln!(
                out,
                "wrote {} activity entries of map {map} to {}",
                entries.len(),
                path.display()
            )
            .map_err(io)?;
        }
        None => out.write_all(&buffer).map_err(io)?,
    }
    Ok(())
}
