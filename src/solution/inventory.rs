//! What is installed: one summary per solution (SPEC §5 `solution list`, SPEC §3
//! `status/solutions/<name>.yaml`): publisher, version, managed, components with their
//! checksums, when it was installed, and which of its maps are in force. Solution resources
//! of the repository itself (`solutions/<name>.yaml`) are listed as unmanaged.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::solutions::Origin;
use crate::config::{Components, Config, Publisher, SemVer};

/// One solution as `solution list` and its status file show it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SolutionSummary {
    pub name: String,
    pub publisher: String,
    pub version: String,
    pub managed: bool,
    /// The file that defines it (the manifest of an installed solution).
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_revision: Option<String>,
    pub maps: BTreeMap<String, MapInForce>,
    pub alerts: Vec<String>,
    /// Component file → sha256 (installed solutions).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
}

/// Whether a solution's map is the definition in force, and if not, which is.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MapInForce {
    pub in_force: bool,
    /// The definition in force, when it is another one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defined_by: Option<String>,
}

fn in_force(cfg: &Config, map: &str, mine: &dyn Fn(&Origin) -> bool) -> MapInForce {
    match cfg.map_versions.get(map) {
        Some(v) if mine(&v.in_force) => MapInForce {
            in_force: true,
            defined_by: None,
        },
        Some(v) => MapInForce {
            in_force: false,
            defined_by: Some(v.in_force.to_string()),
        },
        None => MapInForce {
            in_force: false,
            defined_by: None,
        },
    }
}

/// Installed managed solutions first, then the repository's own Solution resources; by name.
pub fn summaries(cfg: &Config) -> Vec<SolutionSummary> {
    let mut out = Vec::new();
    for m in &cfg.installed {
        let name = &m.resource.metadata.name;
        let spec = &m.resource.spec;
        let mine = |o: &Origin| o.solution() == Some(name.as_str());
        out.push(SolutionSummary {
            managed: true,
            installed_at: spec.installed_at.map(|t| t.to_rfc3339()),
            source_revision: Some(spec.source_revision.clone()),
            checksums: spec.files.clone(),
            ..summary(
                cfg,
                name,
                &m.file,
                &spec.publisher,
                &spec.version,
                &spec.components,
                &mine,
            )
        });
    }
    for s in &cfg.solutions {
        let spec = &s.resource.spec;
        let mine = |o: &Origin| matches!(o, Origin::Local { .. });
        let name = &s.resource.metadata.name;
        out.push(summary(
            cfg,
            name,
            &s.file,
            &spec.publisher,
            &spec.version,
            &spec.components,
            &mine,
        ));
    }
    out
}

/// The summary of an unmanaged solution: what both kinds share.
fn summary(
    cfg: &Config,
    name: &str,
    file: &str,
    publisher: &Publisher,
    version: &SemVer,
    components: &Components,
    mine: &dyn Fn(&Origin) -> bool,
) -> SolutionSummary {
    SolutionSummary {
        name: name.to_string(),
        publisher: publisher.name.clone(),
        version: version.to_string(),
        managed: false,
        file: file.to_string(),
        installed_at: None,
        source_revision: None,
        maps: components
            .maps
            .iter()
            .map(|map| (map.clone(), in_force(cfg, map, mine)))
            .collect(),
        alerts: components.alerts.clone(),
        checksums: BTreeMap::new(),
    }
}
