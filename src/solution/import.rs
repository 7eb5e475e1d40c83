//! Import: a checked package × the repository → the plan of file changes, decided in one pure
//! function (`plan`), shared by `--dry-run` and the real import. Unmanaged components go into
//! `maps/` and `alerts/` (overwriting local files of the same name); a managed solution goes
//! into `solutions/<publisher>/<name>/` with its manifest, replacing an older version. Refused,
//! with nothing written: a listed publisher's package without a valid signature, missing
//! required endpoints, an older or equal managed version without `force`, and any import after
//! which the repository would not validate.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::changes::{ChangeKind, FileChange, validate_after};
use super::package::{self, Package, PackageError};
use super::sign::{self, SignError};
use crate::config::loader::{PROJECT_FILE, SOLUTIONS_DIR};
use crate::config::solutions::{MANIFEST_FILE, MapVersions, Place, place};
use crate::config::{Diagnostic, Project, SemVer, SolutionManifest, yaml};

pub struct ImportOptions {
    /// Accept an older or equal version of an installed managed solution.
    pub force: bool,
    /// The install time recorded in an installed manifest.
    pub now: DateTime<Utc>,
}

/// What an import does.
#[derive(Debug)]
pub struct ImportPlan {
    pub manifest: SolutionManifest,
    /// The installed version a managed import replaces.
    pub replaces: Option<SemVer>,
    /// Set when the signature was checked against `spec.trustedPublishers`.
    pub verified: bool,
    pub changes: Vec<FileChange>,
    /// The versions of the package's maps after the import: which definition is in force.
    pub maps: BTreeMap<String, MapVersions>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Signature(#[from] SignError),
    #[error("{PROJECT_FILE} cannot be read ({0}); run `dualwrite validate`")]
    Project(#[source] ProjectError),
    #[error(
        "the project lacks endpoint(s) the solution requires: {}; add them to spec.endpoints in dualwrite.yaml (it defines {})",
        missing.join(", "),
        defined.join(", ")
    )]
    MissingEndpoints {
        missing: Vec<String>,
        defined: Vec<String>,
    },
    #[error(
        "solution {name} {installed} is installed; {offered} is not newer (use --force to install it anyway)"
    )]
    NotNewer {
        name: String,
        installed: SemVer,
        offered: SemVer,
    },
    #[error(
        "solution {name} is installed from publisher {installed:?}; this package is from {offered:?}: uninstall the other one first"
    )]
    OtherPublisher {
        name: String,
        installed: String,
        offered: String,
    },
    #[error(
        "managed solution {name} is installed: an unmanaged import of it would define its components twice; uninstall it first"
    )]
    ManagedInstalled { name: String },
    #[error("after this import the repository would not validate; nothing was written")]
    Invalid(Vec<Diagnostic>),
}

/// Why the project file cannot be read for an import.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("no {PROJECT_FILE}")]
    Missing,
    #[error("{PROJECT_FILE} is empty")]
    Empty,
    #[error("{PROJECT_FILE}: {0}")]
    Yaml(#[from] yaml::SyntaxError),
    #[error("{PROJECT_FILE}: {0}")]
    Spec(#[source] serde_json::Error),
}

/// The project as `dualwrite.yaml` holds it now.
pub fn project_of(files: &BTreeMap<String, String>) -> Result<Project, ProjectError> {
    let text = files.get(PROJECT_FILE).ok_or(ProjectError::Missing)?;
    let doc = yaml::parse(text)?
        .into_iter()
        .next()
        .ok_or(ProjectError::Empty)?;
    <Project as serde::Deserialize>::deserialize(&doc.value).map_err(ProjectError::Spec)
}

/// The managed solutions installed in `files`, by name: (folder, manifest, its text).
pub fn installed(files: &BTreeMap<String, String>) -> BTreeMap<String, (String, SolutionManifest)> {
    files
        .iter()
        .filter_map(|(path, text)| match place(path) {
            Place::Installed {
                publisher,
                name,
                rest,
            } if rest == MANIFEST_FILE => package::parse_manifest(text.as_bytes()).ok().map(|m| {
                (
                    name.to_string(),
                    (format!("{SOLUTIONS_DIR}/{publisher}/{name}"), m),
                )
            }),
            _ => None,
        })
        .collect()
}

/// Decides what importing `package` into a repository holding `files` does.
pub fn plan(
    files: &BTreeMap<String, String>,
    package: &Package,
    options: &ImportOptions,
) -> Result<ImportPlan, ImportError> {
    let manifest = &package.manifest;
    let spec = &manifest.spec;
    let name = &manifest.metadata.name;
    let project = project_of(files).map_err(ImportError::Project)?;
    let mut verified = false;
    if let Some(key) = project.spec.trusted_publishers.get(&spec.publisher.name) {
        sign::verify(
            &spec.publisher.name,
            key,
            &package.manifest_bytes,
            package.signature.as_deref(),
        )?;
        verified = true;
    }
    let missing: Vec<String> = spec
        .requires
        .endpoints
        .iter()
        .filter(|e| !project.spec.endpoints.contains_key(*e))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(ImportError::MissingEndpoints {
            missing,
            defined: project.spec.endpoints.keys().cloned().collect(),
        });
    }
    let existing = installed(files).remove(name);
    let mut changes = Vec::new();
    let mut replaces = None;
    if spec.managed {
        let folder = format!("{SOLUTIONS_DIR}/{}/{name}", spec.publisher.name);
        if let Some((old_folder, old)) = &existing {
            if old.spec.publisher.name != spec.publisher.name {
                return Err(ImportError::OtherPublisher {
                    name: name.clone(),
                    installed: old.spec.publisher.name.clone(),
                    offered: spec.publisher.name.clone(),
                });
            }
            if spec.version <= old.spec.version && !options.force {
                return Err(ImportError::NotNewer {
                    name: name.clone(),
                    installed: old.spec.version.clone(),
                    offered: spec.version.clone(),
                });
            }
            replaces = Some(old.spec.version.clone());
            // Files of the old version that the new one no longer has go away.
            for path in files
                .keys()
                .filter(|p| p.starts_with(&format!("{old_folder}/")))
            {
                let rest = &path[old_folder.len() + 1..];
                if rest != MANIFEST_FILE && !package.files.contains_key(rest) {
                    changes.extend(FileChange::new(
                        path,
                        files.get(path).cloned(),
                        None,
                        ChangeKind::Changed,
                    ));
                }
            }
        }
        let mut installed_manifest = manifest.clone();
        installed_manifest.spec.installed_at = Some(options.now);
        let manifest_path = format!("{folder}/{MANIFEST_FILE}");
        changes.extend(FileChange::new(
            &manifest_path,
            files.get(&manifest_path).cloned(),
            Some(package::render_manifest(&installed_manifest)),
            ChangeKind::Changed,
        ));
        for (rest, text) in &package.files {
            let path = format!("{folder}/{rest}");
            changes.extend(FileChange::new(
                &path,
                files.get(&path).cloned(),
                Some(text.clone()),
                ChangeKind::Changed,
            ));
        }
    } else {
        if existing.is_some() {
            return Err(ImportError::ManagedInstalled { name: name.clone() });
        }
        for (path, text) in &package.files {
            changes.extend(FileChange::new(
                path,
                files.get(path).cloned(),
                Some(text.clone()),
                ChangeKind::Overwritten,
            ));
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    let after = validate_after(files, &changes).map_err(ImportError::Invalid)?;
    let maps = spec
        .components
        .maps
        .iter()
        .filter_map(|m| after.map_versions.get(m).map(|v| (m.clone(), v.clone())))
        .collect();
    Ok(ImportPlan {
        manifest: manifest.clone(),
        replaces,
        verified,
        changes,
        maps,
    })
}
