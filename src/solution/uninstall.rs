//! Uninstall: removing a managed solution's folder. Decided in one pure function (`plan`),
//! shared by `--dry-run` and the real uninstall: the files that go, the maps and alert rules
//! that leave the config (the next reconcile removes them as any deleted map, capture
//! included), and the maps another definition takes over. Refused when the repository would
//! not validate afterwards (an alert rule or request still naming a map that leaves, say).

use std::collections::BTreeMap;

use super::changes::{ChangeKind, FileChange, validate_after};
use super::import::installed;
use crate::config::solutions::Origin;
use crate::config::{Diagnostic, SolutionManifest, did_you_mean};

/// What an uninstall does.
#[derive(Debug)]
pub struct UninstallPlan {
    pub manifest: SolutionManifest,
    pub changes: Vec<FileChange>,
    /// Maps that leave the config.
    pub maps_removed: Vec<String>,
    /// Maps whose other definition comes into force.
    pub maps_switched: Vec<(String, Origin)>,
    pub alerts_removed: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UninstallError {
    #[error("no managed solution named {name:?} is installed under solutions/{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    NotInstalled { name: String, hint: Option<String> },
    #[error("after this uninstall the repository would not validate; nothing was removed")]
    Invalid(Vec<Diagnostic>),
}

/// Decides what uninstalling solution `name` from a repository holding `files` does.
pub fn plan(files: &BTreeMap<String, String>, name: &str) -> Result<UninstallPlan, UninstallError> {
    let mut all = installed(files);
    let names: Vec<String> = all.keys().cloned().collect();
    let (folder, manifest) = all
        .remove(name)
        .ok_or_else(|| UninstallError::NotInstalled {
            name: name.into(),
            hint: did_you_mean(name, names.iter().map(String::as_str)),
        })?;
    let changes: Vec<FileChange> = files
        .iter()
        .filter(|(p, _)| p.starts_with(&format!("{folder}/")))
        .filter_map(|(p, text)| FileChange::new(p, Some(text.clone()), None, ChangeKind::Removed))
        .collect();
    let after = validate_after(files, &changes).map_err(UninstallError::Invalid)?;
    let mut maps_removed = Vec::new();
    let mut maps_switched = Vec::new();
    for map in &manifest.spec.components.maps {
        match after.map_versions.get(map) {
            None => maps_removed.push(map.clone()),
            Some(v) => maps_switched.push((map.clone(), v.in_force.clone())),
        }
    }
    let alerts_removed = manifest
        .spec
        .components
        .alerts
        .iter()
        .filter(|a| !after.alerts.iter().any(|r| r.resource.metadata.name == **a))
        .cloned()
        .collect();
    Ok(UninstallPlan {
        manifest,
        changes,
        maps_removed,
        maps_switched,
        alerts_removed,
    })
}
