//! Structured logs of `dualwrite run` (tracing, on stderr; `--log-format json` for one JSON
//! object per line; `RUST_LOG` filters, default `info`). Besides what the loop logs itself,
//! [`PassLog`] turns each pass's statuses into events with `map`, `phase` and `direction`
//! fields: phase changes, map-level problems, new errored records, records synced.
//! Status content only: never a URL or a row's values.

use std::collections::BTreeMap;

use tracing_subscriber::EnvFilter;

use super::LogFormat;
use crate::status::MapStatus;

/// Installs the subscriber (once per process; a second call is a no-op).
pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// What was last logged per map, so each pass logs only what changed.
#[derive(Default)]
pub(crate) struct PassLog {
    seen: BTreeMap<String, Seen>,
}

#[derive(Default)]
struct Seen {
    phase: String,
    problem: Option<String>,
    newest_error: i64,
    synced: u64,
}

impl PassLog {
    pub(crate) fn map(&mut self, map: &str, st: &MapStatus) {
        let first = !self.seen.contains_key(map);
        let seen = self.seen.entry(map.to_string()).or_default();
        if seen.phase != st.phase {
            tracing::info!(map, phase = %st.phase, from = %seen.phase, desired = %st.desired_state, "phase");
            seen.phase = st.phase.clone();
        }
        let problem = st
            .conditions
            .iter()
            .find(|c| c.kind == "Stalled" && c.status == "True")
            .map(|c| format!("{}: {}", c.reason, c.message));
        if problem != seen.problem {
            match &problem {
                Some(p) => tracing::warn!(map, phase = %st.phase, problem = %p, "map stalled"),
                None if !first => tracing::info!(map, phase = %st.phase, "map no longer stalled"),
                None => {}
            }
            seen.problem = problem;
        }
        let newest = seen.newest_error;
        for e in st.errors.recent.iter().rev().filter(|e| e.id > newest) {
            if !first {
                tracing::warn!(
                    map,
                    phase = %e.phase,
                    direction = %e.direction,
                    error_type = %e.error_type,
                    id = e.id,
                    code = e.code.as_deref().unwrap_or(""),
                    error = %e.message,
                    "record failed"
                );
            }
            seen.newest_error = seen.newest_error.max(e.id);
        }
        if st.counters.synced > seen.synced {
            if !first {
                tracing::info!(
                    map,
                    phase = "Live",
                    records = st.counters.synced - seen.synced,
                    lag_seconds = st.counters.lag_seconds.unwrap_or(0.0),
                    "records synced"
                );
            }
            seen.synced = st.counters.synced;
        }
    }
}
