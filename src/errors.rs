//! Errored records as users select and keep them: the filters of an ErrorRequest or of
//! `dualwrite errors list` turned into a store query, and retention (records older than
//! `errorRetention` are purged, written first as JSONL to `errorArchive` when it is set).
//! Recording errors belongs to `sync::Journal`; retrying and dismissing them to `requests`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::clock;
use crate::config::{Direction, ErrorFilter, Project};
use crate::state::{
    ErrorPhase, ErrorQuery, ErrorRecord, ErrorState, ErrorType, Order, StateError, StateStore,
};

/// Records purged per store round trip: bounds memory however many have expired.
const PURGE_PAGE: usize = 10_000;

/// The store query for `filter` on `map` (any map when `None`), open records only.
pub fn query_of(map: Option<&str>, filter: &ErrorFilter) -> ErrorQuery {
    ErrorQuery {
        scope: None,
        map: map.map(str::to_string),
        from: filter.from.map(|t| clock::format_millis(clock::millis(t))),
        to: filter.to.map(|t| clock::format_millis(clock::millis(t))),
        direction: match filter.direction {
            Some(Direction::SourceToDestination) => Some("SourceToDestination".into()),
            Some(Direction::DestinationToSource) => Some("DestinationToSource".into()),
            Some(Direction::Bidirectional) | None => None,
        },
        error_type: filter.error_type.and_then(ErrorType::selected_by),
        phase: filter.phase,
        ids: filter.ids.clone(),
        below_id: None,
        state: Some(ErrorState::Open),
    }
}

/// A filter as a user types it (the CLI's options, the dashboard's query string): text
/// times (RFC 3339 or an age), names of directions, types and phases. [`FilterText::filter`]
/// checks it and turns it into the [`ErrorFilter`] an ErrorRequest carries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FilterText {
    pub from: Option<String>,
    pub to: Option<String>,
    pub direction: Option<String>,
    pub error_type: Option<String>,
    pub phase: Option<String>,
    pub ids: Vec<i64>,
}

/// A filter that does not parse; the message names the option (`--from`, or `from` on the
/// dashboard) and says what is expected.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct FilterError(pub String);

impl FilterText {
    /// The filter, times resolved against `now`; `prefix` is put before option names in
    /// messages (`--` on the command line).
    pub fn filter(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        prefix: &str,
    ) -> Result<ErrorFilter, FilterError> {
        let time = |option: &str, text: &Option<String>| -> Result<Option<String>, FilterError> {
            text.as_deref()
                .map(|t| time_of(&format!("{prefix}{option}"), t, now).map(|t| t.to_rfc3339()))
                .transpose()
        };
        let json = serde_json::json!({
            "from": time("from", &self.from)?,
            "to": time("to", &self.to)?,
            "direction": self.direction,
            "errorType": self.error_type,
            "phase": self.phase,
            "ids": self.ids,
        });
        let object: serde_json::Map<String, serde_json::Value> = json
            .as_object()
            .expect("an object")
            .iter()
            .filter(|(_, v)| !v.is_null() && *v != &serde_json::json!([]))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let filter: ErrorFilter =
            serde_json::from_value(object.into()).map_err(|e| FilterError(e.to_string()))?;
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && from >= to
        {
            return Err(FilterError(format!(
                "{prefix}from ({}) must be before {prefix}to ({})",
                from.to_rfc3339(),
                to.to_rfc3339()
            )));
        }
        Ok(filter)
    }
}

/// A time option: RFC 3339, or an age (`15m`, `1h`, `1d`) before `now`. `option` names it
/// in the message.
pub fn time_of(
    option: &str,
    text: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, FilterError> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let age = crate::config::Duration::parse(text).ok_or_else(|| {
        FilterError(format!(
            "{option} {text:?}: not an RFC 3339 time (2026-11-22T00:00:00Z) or an age (15m, 1h, 1d)"
        ))
    })?;
    let seconds = i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
    Ok(now - chrono::Duration::seconds(seconds))
}

/// An errored record as written to `errorArchive`: one JSON object per line, its key and
/// row as JSON values rather than strings.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedError<'a> {
    #[serde(flatten)]
    pub record: Exported<'a>,
    pub purged_at: &'a str,
}

/// An errored record for people and scripts (`errors list --output json`, the archive).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exported<'a> {
    pub id: i64,
    /// `Record`, or `Map` for a map-level event (no key).
    pub scope: crate::state::ErrorScope,
    pub map: &'a str,
    pub phase: ErrorPhase,
    pub direction: &'a str,
    #[serde(rename = "type")]
    pub error_type: ErrorType,
    pub key: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<serde_json::Value>,
    pub message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
    pub first_at: &'a str,
    pub last_at: &'a str,
    pub attempts: i64,
    pub state: ErrorState,
}

impl<'a> Exported<'a> {
    pub fn of(e: &'a ErrorRecord) -> Self {
        let json = |text: &str| serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
        Exported {
            id: e.id,
            scope: e.scope,
            map: &e.map,
            phase: e.phase,
            direction: &e.direction,
            error_type: e.error_type,
            key: json(&e.key),
            row: e.row.as_deref().map(json),
            message: &e.message,
            code: e.code.as_deref(),
            first_at: &e.first_at,
            last_at: &e.last_at,
            attempts: e.attempts,
            state: e.state,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("errorArchive {path}: {source}")]
    Archive {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Purges errored records whose latest failure is older than the retention, archiving them
/// first when `errorArchive` is set. Returns how many were purged per map and logs each
/// map's count in its activity log. A record is deleted only after its archive line is on
/// disk (a crash in between may archive it twice, never lose it).
pub fn purge(
    store: &dyn StateStore,
    dir: &Path,
    project: &Project,
    now_ms: i64,
) -> Result<BTreeMap<String, u64>, PurgeError> {
    let retention = project.spec.error_retention;
    let retention_ms = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX / 1000) * 1000;
    let cutoff_ms = now_ms.saturating_sub(retention_ms);
    let query = ErrorQuery {
        to: Some(clock::format_millis(cutoff_ms)),
        ..Default::default()
    };
    let archive_path = project.spec.error_archive.as_ref();
    let mut archive = None;
    let now = clock::format_millis(now_ms);
    let mut purged: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let page = store.query_errors(&query, Order::OldestFirst, PURGE_PAGE)?;
        if page.is_empty() {
            break;
        }
        if let Some(path) = archive_path {
            let io = |source| PurgeError::Archive {
                path: path.clone(),
                source,
            };
            if archive.is_none() {
                let full = dir.join(path);
                if let Some(parent) = full.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&full)
                    .map_err(io)?;
                archive = Some(std::io::BufWriter::new(file));
            }
            let out = archive.as_mut().expect("opened above");
            for e in &page {
                let line = ArchivedError {
                    record: Exported::of(e),
                    purged_at: &now,
                };
                serde_json::to_writer(&mut *out, &line).map_err(|e| io(e.into()))?;
                out.write_all(b"\n").map_err(io)?;
            }
            out.flush().map_err(io)?;
            out.get_ref().sync_all().map_err(io)?;
        }
        let ids: Vec<i64> = page.iter().map(|e| e.id).collect();
        store.delete_errors(&ids)?;
        for e in &page {
            *purged.entry(e.map.clone()).or_default() += 1;
        }
    }
    for (map, n) in &purged {
        let archived = archive_path
            .map(|p| format!(", archived to {p}"))
            .unwrap_or_default();
        store.log(
            map,
            &now,
            "ErrorsPurged",
            &format!("{n} errored record(s) older than {retention} purged{archived}"),
        )?;
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_becomes_a_query_of_open_records() {
        let filter: ErrorFilter = serde_json::from_value(serde_json::json!({
            "from": "2026-11-22T00:00:00Z",
            "to": "2026-11-22T12:00:00Z",
            "direction": "SourceToDestination",
            "errorType": "ApplicationError",
            "phase": "CatchUp",
            "ids": [41, 42]
        }))
        .unwrap();
        let q = query_of(Some("customers"), &filter);
        assert_eq!(q.map.as_deref(), Some("customers"));
        assert_eq!(q.from.as_deref(), Some("2026-11-22T00:00:00.000Z"));
        assert_eq!(q.to.as_deref(), Some("2026-11-22T12:00:00.000Z"));
        assert_eq!(q.direction.as_deref(), Some("SourceToDestination"));
        assert_eq!(q.error_type, Some(ErrorType::ApplicationError));
        assert_eq!(q.phase, Some(ErrorPhase::CatchUp));
        assert_eq!(q.ids, vec![41, 42]);
        assert_eq!(q.state, Some(ErrorState::Open));
        // "Any" and "Bidirectional" select everything.
        let any: ErrorFilter = serde_json::from_value(
            serde_json::json!({"errorType": "Any", "direction": "Bidirectional"}),
        )
        .unwrap();
        assert_eq!(
            query_of(None, &any),
            ErrorQuery {
                state: Some(ErrorState::Open),
                ..Default::default()
            }
        );
    }
}
