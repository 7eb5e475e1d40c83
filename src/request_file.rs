//! Writing ErrorRequest files under `requests/`, for `dualwrite errors retry|dismiss` and the
//! dashboard's Retry and Dismiss: the request's name, what it matches now and whether it
//! would be Rejected ([`assess`]), and writing the file only when the whole config stays
//! valid with it ([`write()`]). Running requests belongs to `requests`; committing the file
//! to whoever asks for it (the dashboard commits, the CLI leaves it for review).

use std::path::{Path, PathBuf};

use crate::config::{self, Config, ErrorFilter, ErrorRequest, RequestAction};
use crate::requests::{MAX_MATCHED, MAX_WAITING};
use crate::state::{StateError, StateStore};

#[derive(Debug, thiserror::Error)]
pub enum RequestFileError {
    #[error("the request would be Rejected: {0}")]
    Rejected(String),
    #[error("{0} already exists: a request runs once, identified by its name; pick another name")]
    Exists(PathBuf),
    #[error("the config would be invalid with it:\n{0}")]
    Invalid(String),
    #[error("the state store: {0}")]
    Store(#[from] StateError),
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serializing the request: {0}")]
    Yaml(String),
}

/// What a request would do if it were written now.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    /// Open errored records of the map the filter matches now.
    pub matched: u64,
    /// Requests of the map that have not run yet (Queued, or not seen by a pass yet).
    pub waiting: usize,
    /// Why it would be Rejected (unknown ids, too many records, too many waiting).
    pub rejected: Option<String>,
}

/// What the store says of a request of `map` with `filter`: how many records it matches and
/// whether it would be Rejected.
pub fn assess(
    store: &dyn StateStore,
    cfg: &Config,
    map: &str,
    filter: &ErrorFilter,
) -> Result<Assessment, StateError> {
    let matched = store.count_errors(&crate::errors::query_of(Some(map), filter))?;
    let unknown = crate::requests::unknown_ids(store, map, &filter.ids)?;
    let mut waiting = 0;
    for request in cfg.requests.iter().filter(|r| r.resource.spec.map == map) {
        let status = store.request_status(&request.resource.metadata.name)?;
        if !status.is_some_and(|s| s.is_final()) {
            waiting += 1;
        }
    }
    let rejected = if !unknown.is_empty() {
        let ids: Vec<String> = unknown.iter().map(i64::to_string).collect();
        Some(format!(
            "id(s) {} are not errored records of map {map}",
            ids.join(", ")
        ))
    } else if matched > MAX_MATCHED {
        Some(format!(
            "it matches {matched} records; a request may match at most {MAX_MATCHED}: narrow the filter"
        ))
    } else if waiting >= MAX_WAITING {
        Some(format!(
            "{waiting} requests already wait for map {map}; at most {MAX_WAITING} may wait"
        ))
    } else {
        None
    };
    Ok(Assessment {
        matched,
        waiting,
        rejected,
    })
}

/// The default name of a request: `ACTION-MAP-YYYYMMDD-HHMMSS`, at most 63 characters.
pub fn default_name(
    action: RequestAction,
    map: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let verb = verb(action);
    let stamp = now.format("%Y%m%d-%H%M%S").to_string();
    let room = 63 - verb.len() - stamp.len() - 2;
    let map: String = map.chars().take(room).collect();
    format!("{verb}-{}-{stamp}", map.trim_end_matches('-'))
}

fn verb(action: RequestAction) -> &'static str {
    match action {
        RequestAction::Retry => "retry",
        RequestAction::Dismiss => "dismiss",
    }
}

/// A request to write.
pub struct NewRequest<'a> {
    pub name: &'a str,
    pub map: &'a str,
    pub action: RequestAction,
    pub filter: &'a ErrorFilter,
    /// Who writes it, for the comment at the top (`dualwrite errors retry`, `the dashboard`).
    pub by: &'a str,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// Writes `requests/<name>.yaml` in `dir`; takes it back if the config is invalid with it.
/// Returns its path relative to `dir`.
pub fn write(dir: &Path, request: &NewRequest<'_>) -> Result<PathBuf, RequestFileError> {
    let NewRequest {
        name,
        map,
        action,
        filter,
        by,
        now,
    } = *request;
    let resource = ErrorRequest {
        api_version: config::ApiVersion::V1,
        kind: config::ErrorRequestKind::Kind,
        metadata: config::Metadata {
            name: name.to_string(),
            labels: Default::default(),
        },
        spec: config::ErrorRequestSpec {
            map: map.to_string(),
            action,
            filter: filter.clone(),
        },
    };
    let yaml =
        serde_saphyr::to_string(&resource).map_err(|e| RequestFileError::Yaml(e.to_string()))?;
    let text = format!(
        "# yaml-language-server: $schema=../schemas/errorrequest.schema.json\n# Written by {by} at {}. Review it, then commit it: the next reconcile\n# runs it once, while map {map} is Running.\n{yaml}",
        crate::clock::secs(now)
    );
    let relative = PathBuf::from("requests").join(format!("{name}.yaml"));
    let path = dir.join(&relative);
    if path.exists() {
        return Err(RequestFileError::Exists(relative));
    }
    let io = |source| RequestFileError::Io {
        path: relative.clone(),
        source,
    };
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io)?;
    std::fs::write(&path, &text).map_err(io)?;
    // Nothing half applied: a request that makes the config invalid is taken back.
    if let Err(diags) = config::load(&config::WorkTree {
        dir: dir.to_path_buf(),
    }) {
        let _ = std::fs::remove_file(&path);
        return Err(RequestFileError::Invalid(
            diags
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        ));
    }
    Ok(relative)
}
