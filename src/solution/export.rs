//! Export: a Solution resource (or every map and alert rule, for a backup) → package bytes.
//! "Check for issues" comes first: the whole repository must validate, so an invalid or
//! missing component stops the export with the validator's own diagnostics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use ed25519_dalek::SigningKey;

use super::package::{self, PackageError, component_path};
use super::sign;
use crate::config::solutions::sha256_hex;
use crate::config::yaml;
use crate::config::{
    self, ApiVersion, Components, ConfigSource, Diagnostic, Located, ManifestSpec, Metadata,
    Publisher, Requirements, SemVer, SolutionManifest, SolutionManifestKind,
};

/// The name of the backup solution `--all` exports.
pub const BACKUP_NAME: &str = "backup";

/// What to export.
pub struct ExportRequest {
    /// A Solution resource's name; `None`: every map and alert rule (a backup).
    pub name: Option<String>,
    pub managed: bool,
    /// Overrides the Solution's version (the backup's default is 1.0.0).
    pub version: Option<SemVer>,
    pub signing_key: Option<SigningKey>,
}

/// A package, with what it holds.
pub struct Exported {
    pub bytes: Vec<u8>,
    pub manifest: SolutionManifest,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the repository has problems; nothing was exported")]
    Invalid(Vec<Diagnostic>),
    #[error("no solution named {name:?} in solutions/{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    UnknownSolution { name: String, hint: Option<String> },
    #[error("cannot read the config repository: {0}")]
    Read(#[source] crate::config::loader::LoadError),
    #[error(transparent)]
    Package(#[from] PackageError),
}

/// Builds the package of `request` from the config in `src`.
pub fn export(
    dir: &Path,
    src: &dyn ConfigSource,
    request: &ExportRequest,
) -> Result<Exported, ExportError> {
    let files = src.files().map_err(ExportError::Read)?;
    let cfg = config::validate::compile(files.clone()).map_err(ExportError::Invalid)?;
    let texts: BTreeMap<&str, &str> = files
        .iter()
        .map(|f| (f.path.as_str(), f.text.as_str()))
        .collect();
    let (name, mut spec) = match &request.name {
        Some(name) => {
            let solution = cfg
                .solutions
                .iter()
                .find(|s| s.resource.metadata.name == *name)
                .ok_or_else(|| ExportError::UnknownSolution {
                    name: name.clone(),
                    hint: config::did_you_mean(
                        name,
                        cfg.solutions
                            .iter()
                            .map(|s| s.resource.metadata.name.as_str()),
                    ),
                })?;
            let s = &solution.resource.spec;
            (
                name.clone(),
                ManifestSpec {
                    publisher: s.publisher.clone(),
                    version: s.version.clone(),
                    description: s.description.clone(),
                    managed: request.managed,
                    source_revision: String::new(),
                    components: s.components.clone(),
                    requires: s.requires.clone(),
                    files: BTreeMap::new(),
                    installed_at: None,
                },
            )
        }
        None => (BACKUP_NAME.to_string(), backup_spec(&cfg, request.managed)),
    };
    if let Some(v) = &request.version {
        spec.version = v.clone();
    }
    spec.source_revision = crate::status::revision(dir, &files);
    let mut components = BTreeMap::new();
    for name in &spec.components.maps {
        let located = cfg
            .maps
            .iter()
            .find(|m| m.resource.metadata.name == *name)
            .expect("a valid config has its components");
        components.insert(
            component_path("maps", name),
            component_text(located, &texts),
        );
    }
    for name in &spec.components.alerts {
        let located = cfg
            .alerts
            .iter()
            .find(|a| a.resource.metadata.name == *name)
            .expect("a valid config has its components");
        components.insert(
            component_path("alerts", name),
            component_text(located, &texts),
        );
    }
    spec.files = components
        .iter()
        .map(|(path, text)| (path.clone(), sha256_hex(text.as_bytes())))
        .collect();
    let manifest = SolutionManifest {
        api_version: ApiVersion::V1,
        kind: SolutionManifestKind::Kind,
        metadata: Metadata {
            name,
            labels: BTreeMap::new(),
        },
        spec,
    };
    let manifest_text = package::render_manifest(&manifest);
    let signature = request
        .signing_key
        .as_ref()
        .map(|k| sign::sign(k, manifest_text.as_bytes()));
    let bytes = package::write(manifest_text.as_bytes(), signature.as_deref(), &components)?;
    Ok(Exported { bytes, manifest })
}

/// Every map and alert rule in force, the endpoints they use, published by the project.
fn backup_spec(cfg: &config::Config, managed: bool) -> ManifestSpec {
    let maps: Vec<String> = cfg
        .maps
        .iter()
        .map(|m| m.resource.metadata.name.clone())
        .collect();
    let alerts: Vec<String> = cfg
        .alerts
        .iter()
        .map(|a| a.resource.metadata.name.clone())
        .collect();
    let endpoints: BTreeSet<String> = cfg
        .maps
        .iter()
        .flat_map(|m| {
            [
                m.resource.spec.source.endpoint.clone(),
                m.resource.spec.destination.endpoint.clone(),
            ]
        })
        .collect();
    let project = &cfg.project.resource.metadata.name;
    ManifestSpec {
        publisher: Publisher {
            name: project.clone(),
            display_name: None,
        },
        version: SemVer::parse("1.0.0").expect("a version"),
        description: Some(format!(
            "Backup of every map and alert rule of project {project}"
        )),
        managed,
        source_revision: String::new(),
        components: Components { maps, alerts },
        requires: Requirements {
            endpoints: endpoints.into_iter().collect(),
        },
        files: BTreeMap::new(),
        installed_at: None,
    }
}

/// A component's file: the file as written when it holds only this document (comments and
/// all), otherwise the document alone, rendered as YAML.
fn component_text<T>(located: &Located<T>, texts: &BTreeMap<&str, &str>) -> String {
    let text = texts
        .get(located.file.as_str())
        .copied()
        .unwrap_or_default();
    match yaml::parse(text) {
        Ok(docs) if docs.len() == 1 => text.to_string(),
        _ => serde_saphyr::to_string(&yaml::PlainNumbers(&located.doc.value))
            .expect("a document renders as YAML"),
    }
}
