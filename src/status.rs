//! Status files under `status/` (SPEC §3): their types, reading them back, and writing them
//! atomically (temp file + rename), with stable key order, only when the content changed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ApiVersion;

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

/// Reads every `status/<folder>/*.yaml` as the fields common to all statuses. Unreadable
/// files are skipped with their error, so one damaged file cannot hide the rest.
pub fn read_observed(dir: &Path, folder: &str) -> (BTreeMap<String, Observed>, Vec<String>) {
    let mut found = BTreeMap::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir.join(STATUS_DIR).join(folder)) else {
        return (found, problems);
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                serde_saphyr::from_str::<StatusFile<Observed>>(&text).map_err(|e| e.to_string())
            });
        match parsed {
            Ok(file) => {
                found.insert(file.metadata.name, file.status);
            }
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    (found, problems)
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
