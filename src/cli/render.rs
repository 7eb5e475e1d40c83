//! Rendering what commands print: diagnostics and plans, as text, JSON (with a
//! `formatVersion`) or GitHub Actions annotations. Decides nothing; only formats.

use std::io::{self, Write};

use serde_json::json;

use super::Output;
use crate::config::{Config, Diagnostic};
use crate::plan::{ActualSource, AlertSummary, Change, Plan};

/// The version of the JSON output format; raised on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

/// GitHub workflow-command escaping of a message.
fn github_escape(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn github_property(s: &str) -> String {
    github_escape(s).replace(':', "%3A").replace(',', "%2C")
}

pub fn diagnostics(out: &mut dyn Write, format: Output, diags: &[Diagnostic]) -> io::Result<()> {
    match format {
        Output::Text => {
            for d in diags {
                writeln!(out, "{d}")?;
            }
            writeln!(
                out,
                "{} error{} found",
                diags.len(),
                if diags.len() == 1 { "" } else { "s" }
            )
        }
        Output::Json => {
            let doc =
                json!({ "formatVersion": FORMAT_VERSION, "valid": false, "diagnostics": diags });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)
        }
        Output::Github => {
            for d in diags {
                let mut message = d.message.clone();
                if let Some(h) = &d.hint {
                    message.push_str(&format!(" ({h})"));
                }
                writeln!(
                    out,
                    "::error file={},line={},col={},title=dualwrite::{}",
                    github_property(&d.path),
                    d.line,
                    d.col,
                    github_escape(&message)
                )?;
            }
            Ok(())
        }
    }
}

pub fn valid(out: &mut dyn Write, format: Output, cfg: &Config) -> io::Result<()> {
    let counts = (cfg.maps.len(), cfg.alerts.len(), cfg.requests.len());
    match format {
        Output::Json => {
            let doc = json!({
                "formatVersion": FORMAT_VERSION,
                "valid": true,
                "resources": { "maps": counts.0, "alerts": counts.1, "requests": counts.2 },
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)
        }
        Output::Text | Output::Github => writeln!(
            out,
            "valid: 1 project, {} map(s), {} alert rule(s), {} request(s)",
            counts.0, counts.1, counts.2
        ),
    }
}

pub fn plan(
    out: &mut dyn Write,
    format: Output,
    plan: &Plan,
    source: &ActualSource,
) -> io::Result<()> {
    match format {
        Output::Json => {
            let doc = json!({
                "formatVersion": FORMAT_VERSION,
                "valid": true,
                "actualState": { "source": source, "description": source.describe() },
                "hasChanges": plan.has_changes(),
                "plan": plan,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)
        }
        Output::Text => plan_text(out, plan, source),
        Output::Github => {
            plan_text(out, plan, source)?;
            for w in &plan.warnings {
                writeln!(out, "::warning title=dualwrite::{}", github_escape(w))?;
            }
            writeln!(
                out,
                "::notice title=dualwrite plan::{}",
                github_escape(&summary(plan))
            )
        }
    }
}

fn summary(plan: &Plan) -> String {
    let maps = plan
        .maps
        .iter()
        .filter(|m| !m.actions.is_empty() || m.diff.is_some())
        .count();
    if !plan.has_changes() {
        return "no changes: the actual state matches the config".into();
    }
    format!(
        "{maps} map(s), {} alert rule(s) and {} request(s) to change",
        plan.alerts.len(),
        plan.requests.len()
    )
}

fn sign(change: Change) -> &'static str {
    match change {
        Change::Added => "+",
        Change::Changed => "~",
        Change::Removed => "-",
        Change::Queued => "*",
    }
}

fn alert_lines(
    out: &mut dyn Write,
    before: Option<&AlertSummary>,
    after: Option<&AlertSummary>,
) -> io::Result<()> {
    let field = |s: Option<&AlertSummary>, f: fn(&AlertSummary) -> String| s.map(f);
    type Field = fn(&AlertSummary) -> String;
    let rows: [(&str, Field); 6] = [
        ("maps", |s| {
            if s.maps.is_empty() {
                "(none)".into()
            } else {
                s.maps.join(", ")
            }
        }),
        ("errorType", |s| s.error_type.clone()),
        ("threshold", |s| s.threshold.to_string()),
        ("window", |s| s.window.clone()),
        ("recipients", |s| {
            if s.recipients.is_empty() {
                "(none)".into()
            } else {
                s.recipients.join(", ")
            }
        }),
        ("action", |s| s.action.clone()),
    ];
    for (label, f) in rows {
        match (field(before, f), field(after, f)) {
            (Some(b), Some(a)) if a != b => writeln!(out, "      {label}: {b} -> {a}")?,
            (_, Some(a)) => writeln!(out, "      {label}: {a}")?,
            (Some(b), None) => writeln!(out, "      {label}: {b}")?,
            (None, None) => {}
        }
    }
    Ok(())
}

fn plan_text(out: &mut dyn Write, plan: &Plan, source: &ActualSource) -> io::Result<()> {
    writeln!(out, "Actual state: {}", source.describe())?;
    for w in &plan.warnings {
        writeln!(out, "warning: {w}")?;
    }
    writeln!(out)?;
    if !plan.has_changes() {
        writeln!(out, "No changes. The actual state matches the config.")?;
        return Ok(());
    }
    writeln!(out, "Plan: {}.", summary(plan))?;
    for m in plan
        .maps
        .iter()
        .filter(|m| !m.actions.is_empty() || m.diff.is_some())
    {
        let desired = m
            .desired_state
            .map_or("removed".to_string(), |d| d.to_string());
        writeln!(out, "\n  map {} ({} -> {desired})", m.name, m.phase)?;
        if let Some(origin) = &m.defined_by {
            writeln!(out, "      defined by {origin}")?;
        }
        if let Some(alert) = &m.held_by {
            writeln!(
                out,
                "      held by alert {alert} (`dualwrite resume {}` ends the hold)",
                m.name
            )?;
        }
        for a in &m.actions {
            writeln!(out, "    * {}", a.describe())?;
        }
    }
    for a in &plan.alerts {
        writeln!(
            out,
            "\n  {} alert {}: {:?}",
            sign(a.change),
            a.name,
            a.change
        )?;
        alert_lines(out, a.before.as_ref(), a.after.as_ref())?;
    }
    for r in &plan.requests {
        writeln!(
            out,
            "\n  {} request {}: {:?} ({} on map {}): {}",
            sign(r.change),
            r.name,
            r.change,
            r.action,
            r.map,
            r.outcome
        )?;
    }
    let diffs: Vec<&String> = plan
        .maps
        .iter()
        .filter_map(|m| m.diff.as_ref())
        .chain(plan.alerts.iter().filter_map(|a| a.diff.as_ref()))
        .chain(plan.requests.iter().filter_map(|r| r.diff.as_ref()))
        .collect();
    if !diffs.is_empty() {
        writeln!(out, "\nDiff (actual -> desired):")?;
        for d in diffs {
            write!(out, "{d}")?;
        }
    }
    Ok(())
}

/// `dualwrite status`: one block per map, from the state store.
/// One direction of an initial sync in words: `200 read: 198 written, 2 failed`, or for the
/// other way of a bidirectional map `199 read: 1 written, 198 already there` (rows whose key
/// the target had, left alone because the other side is primary, or skipped).
fn copy_counts(c: &crate::state::DirectionCounts) -> String {
    let left_alone = c.read.saturating_sub(c.written + c.errors);
    let mut parts = vec![format!("{} written", c.written)];
    if c.errors > 0 {
        parts.push(format!("{} failed", c.errors));
    }
    if left_alone > 0 {
        parts.push(format!("{left_alone} already there"));
    }
    format!("{} read: {}", c.read, parts.join(", "))
}

pub fn status(
    out: &mut dyn Write,
    format: super::ListOutput,
    dir: &std::path::Path,
    store: &dyn crate::state::StateStore,
    cfg: &Config,
    only: Option<&str>,
) -> io::Result<()> {
    let selected = cfg
        .maps
        .iter()
        .map(|m| &m.resource)
        .filter(|m| only.is_none_or(|o| o == m.metadata.name));
    let mut all = crate::status::map_statuses(store, selected).map_err(io::Error::other)?;
    crate::status::live_queues(dir, cfg, store, &mut all).map_err(io::Error::other)?;
    let mut requests = Vec::new();
    for r in cfg
        .requests
        .iter()
        .filter(|r| only.is_none_or(|o| o == r.resource.spec.map))
    {
        if let Some(st) = store
            .request_status(&r.resource.metadata.name)
            .map_err(io::Error::other)?
        {
            requests.push((r.resource.metadata.name.clone(), st));
        }
    }
    if format == super::ListOutput::Json {
        let maps: serde_json::Map<String, serde_json::Value> = all
            .into_iter()
            .map(|(n, s)| (n, serde_json::to_value(s).unwrap_or_default()))
            .collect();
        let requests: serde_json::Map<String, serde_json::Value> = requests
            .into_iter()
            .map(|(n, s)| (n, serde_json::to_value(s).unwrap_or_default()))
            .collect();
        return writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(
                &json!({ "formatVersion": FORMAT_VERSION, "maps": maps, "requests": requests })
            )?
        );
    }
    writeln!(
        out,
        "{:<20} {:<12} {:<10} {:>8} {:>8} {:>7}  INITIAL SYNC",
        "MAP", "PHASE", "DESIRED", "WRITTEN", "QUEUED", "ERRORS"
    )?;
    for (name, s) in &all {
        let init = s.initial_sync.as_ref().map_or("-".to_string(), |i| {
            let dirs: Vec<String> = i
                .directions
                .iter()
                .map(|(d, c)| format!("{d}: {}", copy_counts(c)))
                .collect();
            match &i.progress {
                Some(p) => format!("run {} {}: {p} ({})", i.run, i.status, dirs.join("; ")),
                None => format!("run {} {} ({})", i.run, i.status, dirs.join("; ")),
            }
        });
        // Every record written: by the current initial-sync run, and live since.
        let written = s
            .initial_sync
            .as_ref()
            .map_or(0, |i| i.directions.values().map(|c| c.written).sum::<u64>())
            + s.counters.synced;
        writeln!(
            out,
            "{:<20} {} {:<10} {:>8} {:>8} {}  {init}",
            name,
            super::paint::phase(&format!("{:<12}", s.phase)),
            s.desired_state,
            written,
            s.queue
                .as_ref()
                .map_or_else(|| "-".to_string(), |q| q.pending.to_string()),
            super::paint::errors(s.errors.open, &format!("{:>7}", s.errors.open))
        )?;
        for c in s.conditions.iter().filter(|c| c.status != "True") {
            writeln!(out, "    {}: {} ({})", c.kind, c.reason, c.message)?;
        }
        if let Some(q) = s.queue.as_ref().filter(|q| q.as_of.is_some()) {
            writeln!(
                out,
                "    QUEUED {} as of {}: its capture tables cannot be asked now",
                q.pending,
                q.as_of.as_deref().unwrap_or_default()
            )?;
        }
        for e in s.errors.recent.iter().take(5) {
            writeln!(
                out,
                "    error {} {} {} {}: {}",
                e.id, e.error_type, e.direction, e.key, e.message
            )?;
        }
    }
    if !requests.is_empty() {
        writeln!(
            out,
            "\n{:<32} {:<12} {:<8} {:<10} {:>8} {:>9} {:>6} {:>9}",
            "REQUEST", "MAP", "ACTION", "STATE", "MATCHED", "SUCCEEDED", "FAILED", "DISMISSED"
        )?;
        for (name, st) in &requests {
            writeln!(
                out,
                "{:<32} {:<12} {:<8} {:<10} {:>8} {:>9} {:>6} {:>9}",
                name,
                st.map,
                st.action,
                st.state,
                st.matched,
                st.succeeded,
                st.failed,
                st.dismissed
            )?;
            if let Some(reason) = &st.reason {
                writeln!(out, "    {reason}")?;
            }
        }
    }
    Ok(())
}
