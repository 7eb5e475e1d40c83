//! Solutions as the config repository holds them (SPEC §5): where each resource comes from
//! (`Origin`: a local file, or a managed solution under `solutions/<publisher>/<name>/`), the
//! checks that managed files are exactly as installed (their manifest's sha256), where each
//! kind may be written, and which definition of a map is in force when several exist
//! (`spec.mapVersions`). Packaging, import and uninstall live in `crate::solution`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::loader::{PROJECT_FILE, SOLUTIONS_DIR, SourceFile};
use super::resources::*;
use super::validate::Located;
use super::yaml::{self, Pos};
use super::{Diagnostic, did_you_mean};

/// The manifest's file name inside a package and inside an installed solution's folder.
pub const MANIFEST_FILE: &str = "solution.yaml";

/// The sha256 of some bytes, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A lowercase DNS-1123 label (≤ 63 chars): the rule for resource, solution and publisher names.
pub fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Where a resource is defined.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Origin {
    /// A file of the repository's own (`maps/`, `alerts/`).
    Local { file: String },
    /// A component of a managed solution installed under `solutions/<publisher>/<name>/`.
    #[serde(rename_all = "camelCase")]
    Solution {
        publisher: String,
        solution: String,
        version: String,
        file: String,
    },
}

impl Origin {
    pub fn file(&self) -> &str {
        match self {
            Origin::Local { file } | Origin::Solution { file, .. } => file,
        }
    }

    /// The solution's name, for a managed component.
    pub fn solution(&self) -> Option<&str> {
        match self {
            Origin::Solution { solution, .. } => Some(solution),
            Origin::Local { .. } => None,
        }
    }

    /// Short words for plans and listings: `local` or `solution finance-core 1.2.0 (contoso)`.
    pub fn short(&self) -> String {
        match self {
            Origin::Local { .. } => "local".into(),
            Origin::Solution {
                publisher,
                solution,
                version,
                ..
            } => format!("solution {solution} {version} ({publisher})"),
        }
    }

    fn matches(&self, choice: &MapVersionChoice) -> bool {
        match self {
            Origin::Local { .. } => choice.local,
            Origin::Solution {
                publisher,
                solution,
                version,
                ..
            } => {
                !choice.local
                    && choice.publisher.as_ref().is_none_or(|p| p == publisher)
                    && choice.solution.as_ref().is_none_or(|s| s == solution)
                    && choice
                        .version
                        .as_ref()
                        .is_none_or(|v| v.to_string() == *version)
            }
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Local { file } => write!(f, "{file}"),
            other => write!(f, "{} at {}", other.short(), other.file()),
        }
    }
}

/// Where a file sits in the repository, as far as solutions are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place<'a> {
    /// Anywhere outside `solutions/`.
    Local,
    /// `solutions/<file>`: a Solution resource.
    Definition,
    /// `solutions/<publisher>/<name>/<rest>`: part of an installed managed solution.
    Installed {
        publisher: &'a str,
        name: &'a str,
        rest: &'a str,
    },
    /// `solutions/<x>/<file>`: a folder that is not an installed solution.
    Stray,
}

/// Where `path` (relative to the config directory) sits.
pub fn place(path: &str) -> Place<'_> {
    let Some(rest) = path
        .strip_prefix(SOLUTIONS_DIR)
        .and_then(|r| r.strip_prefix('/'))
    else {
        return Place::Local;
    };
    let mut parts = rest.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), None, None) => Place::Definition,
        (Some(publisher), Some(name), Some(rest)) => Place::Installed {
            publisher,
            name,
            rest,
        },
        _ => Place::Stray,
    }
}

/// An installed managed solution: its manifest and where it came from.
pub type Installed = Located<SolutionManifest>;

/// Which definitions exist of one map name, and which is in force.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MapVersions {
    pub in_force: Origin,
    /// The other definitions (only when several exist).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<Origin>,
}

/// The origin of a resource read from `file`, given the installed manifests by folder.
pub fn origin_of(file: &str, installed: &HashMap<(String, String), &Installed>) -> Origin {
    if let Place::Installed {
        publisher, name, ..
    } = place(file)
        && let Some(m) = installed.get(&(publisher.to_string(), name.to_string()))
    {
        return Origin::Solution {
            publisher: publisher.into(),
            solution: name.into(),
            version: m.resource.spec.version.to_string(),
            file: file.into(),
        };
    }
    Origin::Local { file: file.into() }
}

/// Where a resource of `kind` may be written; a diagnostic when not there.
pub fn check_place(kind: Kind, file: &str, pos: Pos) -> Option<Diagnostic> {
    let allowed = match (kind, place(file)) {
        (Kind::Project, _) => true,
        (Kind::Solution, p) => p == Place::Definition,
        (Kind::SolutionManifest, Place::Installed { rest, .. }) => rest == MANIFEST_FILE,
        (Kind::SolutionManifest, _) => false,
        (Kind::TableMap, Place::Installed { rest, .. }) => rest.starts_with("maps/"),
        (Kind::AlertRule, Place::Installed { rest, .. }) => rest.starts_with("alerts/"),
        (_, Place::Local) => !matches!(kind, Kind::Solution | Kind::SolutionManifest),
        _ => false,
    };
    let message = match kind {
        Kind::Solution => "a Solution belongs in solutions/<name>.yaml",
        Kind::SolutionManifest => {
            "a SolutionManifest belongs in solutions/<publisher>/<name>/solution.yaml, written by `dualwrite solution import`"
        }
        _ if file.starts_with("solutions/") => {
            "only Solution resources (solutions/<name>.yaml) and installed managed solutions (solutions/<publisher>/<name>/) belong under solutions/"
        }
        _ => return None,
    };
    (!allowed).then(|| Diagnostic::new(file, pos, format!("kind: {message}")))
}

/// Checks the installed managed solutions: manifest in its place and naming its folder,
/// every file it lists present and unchanged, no file it does not list, one publisher per
/// solution name.
pub fn check_installed(files: &[SourceFile], installed: &[Installed], diags: &mut Vec<Diagnostic>) {
    let start = Pos { line: 1, col: 1 };
    let mut by_folder: HashMap<(&str, &str), &Installed> = HashMap::new();
    let mut by_name: HashMap<&str, &Installed> = HashMap::new();
    for m in installed {
        let Place::Installed {
            publisher, name, ..
        } = place(&m.file)
        else {
            continue;
        };
        let spec = &m.resource.spec;
        if m.resource.metadata.name != name || spec.publisher.name != publisher {
            diags.push(Diagnostic::new(
                &m.file,
                m.at("/metadata/name"),
                format!(
                    "the manifest names solution {:?} of publisher {:?}, but sits in solutions/{publisher}/{name}/",
                    m.resource.metadata.name, spec.publisher.name
                ),
            ));
        }
        if !spec.managed {
            diags.push(Diagnostic::new(
                &m.file,
                m.at("/spec/managed"),
                "spec.managed: an unmanaged solution is never installed under solutions/: its components belong in maps/ and alerts/",
            ));
        }
        if let Some(other) = by_name.insert(name, m) {
            diags.push(Diagnostic::new(
                &m.file,
                m.at("/metadata/name"),
                format!(
                    "solution {name:?} is installed twice: here and at {}; uninstall one",
                    other.file
                ),
            ));
        }
        by_folder.insert((publisher, name), m);
    }
    let texts: HashMap<&str, &str> = files
        .iter()
        .map(|f| (f.path.as_str(), f.text.as_str()))
        .collect();
    for f in files {
        match place(&f.path) {
            Place::Stray => diags.push(Diagnostic::new(
                &f.path,
                start,
                "not a place for config files: solutions/ holds solutions/<name>.yaml and installed solutions in solutions/<publisher>/<name>/",
            )),
            Place::Installed {
                publisher,
                name,
                rest,
            } => match by_folder.get(&(publisher, name)) {
                None if rest != MANIFEST_FILE => diags.push(Diagnostic::new(
                    &f.path,
                    start,
                    format!(
                        "solutions/{publisher}/{name}/ has no {MANIFEST_FILE}: managed solutions are installed by `dualwrite solution import`"
                    ),
                )),
                Some(m) if rest != MANIFEST_FILE && !m.resource.spec.files.contains_key(rest) => {
                    diags.push(Diagnostic::new(
                        &f.path,
                        start,
                        format!(
                            "{rest} is not part of managed solution {name} ({publisher} {}): managed solutions cannot be changed; add your own resources under maps/ or alerts/",
                            m.resource.spec.version
                        ),
                    ))
                }
                _ => {}
            },
            _ => {}
        }
    }
    for ((publisher, name), m) in &by_folder {
        let version = &m.resource.spec.version;
        for (rest, sha) in &m.resource.spec.files {
            let path = format!("{SOLUTIONS_DIR}/{publisher}/{name}/{rest}");
            match texts.get(path.as_str()) {
                None => diags.push(Diagnostic::new(
                    &m.file,
                    m.at(&format!("/spec/files/{}", yaml::escape_pointer(rest))),
                    format!(
                        "managed solution {name} ({publisher} {version}) lists {rest}, which is missing: import the solution again to restore it"
                    ),
                )),
                Some(text) if sha256_hex(text.as_bytes()) != *sha => {
                    let component = rest
                        .rsplit('/')
                        .next()
                        .and_then(|f| f.strip_suffix(".yaml"))
                        .unwrap_or(rest);
                    diags.push(Diagnostic::new(
                        &path,
                        start,
                        format!(
                            "this file of managed solution {name} ({publisher} {version}) was changed (its sha256 no longer matches the manifest): managed components cannot be edited"
                        ),
                    ).with_hint(Some(format!(
                        "to customize it, restore it (git checkout, or import the solution again), copy it into maps/ and choose your copy in dualwrite.yaml with spec.mapVersions: {{ {component}: {{ local: true }} }}, or import the solution unmanaged"
                    ))));
                }
                Some(_) => {}
            }
        }
    }
}

/// Chooses, per map name, the definition in force: the only one, or the one
/// `spec.mapVersions` picks. Returns the maps in force (in their original order) and the
/// versions of every map; reports each unresolved choice.
pub fn choose_map_versions(
    project: Option<&Located<Project>>,
    maps: Vec<Located<TableMap>>,
    installed: &[Installed],
    diags: &mut Vec<Diagnostic>,
) -> (Vec<Located<TableMap>>, BTreeMap<String, MapVersions>) {
    let folders: HashMap<(String, String), &Installed> = installed
        .iter()
        .filter_map(|m| match place(&m.file) {
            Place::Installed {
                publisher, name, ..
            } => Some(((publisher.to_string(), name.to_string()), m)),
            _ => None,
        })
        .collect();
    let origins: Vec<Origin> = maps.iter().map(|m| origin_of(&m.file, &folders)).collect();
    let mut by_name: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, m) in maps.iter().enumerate() {
        by_name
            .entry(m.resource.metadata.name.as_str())
            .or_default()
            .push(i);
    }
    let choices = project.map(|p| &p.resource.spec.map_versions);
    let mut keep = vec![false; maps.len()];
    let mut versions = BTreeMap::new();
    for (name, indexes) in &by_name {
        // Several definitions from one place are a plain duplicate, reported elsewhere.
        let mut candidates: Vec<usize> = Vec::new();
        for &i in indexes {
            if !candidates
                .iter()
                .any(|&c| same_place(&origins[c], &origins[i]))
            {
                candidates.push(i);
            }
        }
        let choice = choices.and_then(|c| c.get(*name));
        let chosen = match choice {
            None if candidates.len() == 1 => Some(candidates[0]),
            None => {
                let places: Vec<String> =
                    candidates.iter().map(|&i| origins[i].to_string()).collect();
                let second = &maps[candidates[1]];
                diags.push(
                    Diagnostic::new(
                        &second.file,
                        second.at("/metadata/name"),
                        format!(
                            "map {name:?} has {} definitions: {}; choose the one in force in dualwrite.yaml with spec.mapVersions",
                            candidates.len(),
                            places.join(" and ")
                        ),
                    )
                    .with_hint(Some(choice_examples(name, &candidates, &origins))),
                );
                None
            }
            Some(choice) => {
                let project = project.expect("a choice comes from the project");
                let pointer = format!("/spec/mapVersions/{}", yaml::escape_pointer(name));
                let matching: Vec<usize> = candidates
                    .iter()
                    .copied()
                    .filter(|&i| origins[i].matches(choice))
                    .collect();
                let defined: Vec<String> =
                    candidates.iter().map(|&i| origins[i].to_string()).collect();
                if choice.local
                    && (choice.publisher.is_some()
                        || choice.version.is_some()
                        || choice.solution.is_some())
                {
                    diags.push(Diagnostic::new(
                        PROJECT_FILE,
                        project.at(&pointer),
                        format!(
                            "spec.mapVersions.{name}: set either local: true or the solution's publisher/version/solution, not both"
                        ),
                    ));
                    None
                } else if matching.len() == 1 {
                    Some(matching[0])
                } else {
                    let why = if matching.is_empty() {
                        "matches none of its definitions"
                    } else {
                        "matches more than one definition: add the publisher, solution or version"
                    };
                    diags.push(
                        Diagnostic::new(
                            PROJECT_FILE,
                            project.at(&pointer),
                            format!(
                                "spec.mapVersions.{name}: the choice {why}; map {name:?} is defined by {}",
                                defined.join(" and ")
                            ),
                        )
                        .with_hint(Some(choice_examples(name, &candidates, &origins))),
                    );
                    None
                }
            }
        };
        // An unresolved choice keeps the first definition so later checks do not cascade.
        let in_force = chosen.unwrap_or(candidates[0]);
        for &i in indexes {
            keep[i] = i == in_force || !candidates.contains(&i);
        }
        versions.insert(
            name.to_string(),
            MapVersions {
                in_force: origins[in_force].clone(),
                others: candidates
                    .iter()
                    .filter(|&&i| i != in_force)
                    .map(|&i| origins[i].clone())
                    .collect(),
            },
        );
    }
    if let (Some(project), Some(choices)) = (project, choices) {
        for name in choices.keys() {
            if !by_name.contains_key(name.as_str()) {
                diags.push(
                    Diagnostic::new(
                        PROJECT_FILE,
                        project.at(&format!("/spec/mapVersions/{}", yaml::escape_pointer(name))),
                        format!("spec.mapVersions: no map named {name:?} is defined"),
                    )
                    .with_hint(did_you_mean(name, by_name.keys().copied())),
                );
            }
        }
    }
    let in_force = maps
        .into_iter()
        .zip(keep)
        .filter_map(|(m, k)| k.then_some(m))
        .collect();
    (in_force, versions)
}

fn same_place(a: &Origin, b: &Origin) -> bool {
    match (a, b) {
        (Origin::Local { .. }, Origin::Local { .. }) => true,
        (Origin::Solution { solution: x, .. }, Origin::Solution { solution: y, .. }) => x == y,
        _ => false,
    }
}

fn choice_examples(name: &str, candidates: &[usize], origins: &[Origin]) -> String {
    let forms: Vec<String> = candidates
        .iter()
        .map(|&i| match &origins[i] {
            Origin::Local { .. } => format!("{{ {name}: {{ local: true }} }}"),
            Origin::Solution {
                publisher, version, ..
            } => format!("{{ {name}: {{ publisher: {publisher}, version: {version} }} }}"),
        })
        .collect();
    format!("e.g. mapVersions: {}", forms.join(" or "))
}

/// Checks a Solution resource: its components exist, the endpoints it requires are defined.
pub fn check_solution(
    project: &Project,
    solution: &Located<Solution>,
    known_map: &dyn Fn(&str) -> bool,
    map_names: &[&str],
    alert_names: &[&str],
    diags: &mut Vec<Diagnostic>,
) {
    let spec = &solution.resource.spec;
    for (i, name) in spec.components.maps.iter().enumerate() {
        if !known_map(name) {
            diags.push(
                Diagnostic::new(
                    &solution.file,
                    solution.at(&format!("/spec/components/maps/{i}")),
                    format!("spec.components.maps[{i}]: unknown map {name:?}"),
                )
                .with_hint(did_you_mean(name, map_names.iter().copied())),
            );
        }
    }
    for (i, name) in spec.components.alerts.iter().enumerate() {
        if !alert_names.contains(&name.as_str()) {
            diags.push(
                Diagnostic::new(
                    &solution.file,
                    solution.at(&format!("/spec/components/alerts/{i}")),
                    format!("spec.components.alerts[{i}]: unknown alert rule {name:?}"),
                )
                .with_hint(did_you_mean(name, alert_names.iter().copied())),
            );
        }
    }
    for (i, name) in spec.requires.endpoints.iter().enumerate() {
        if !project.spec.endpoints.contains_key(name) {
            diags.push(
                Diagnostic::new(
                    &solution.file,
                    solution.at(&format!("/spec/requires/endpoints/{i}")),
                    format!("spec.requires.endpoints[{i}]: unknown endpoint {name:?}"),
                )
                .with_hint(did_you_mean(
                    name,
                    project.spec.endpoints.keys().map(String::as_str),
                )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_of_files() {
        assert_eq!(place("maps/a.yaml"), Place::Local);
        assert_eq!(place("solutions/core.yaml"), Place::Definition);
        assert_eq!(place("solutions/x/core.yaml"), Place::Stray);
        assert_eq!(
            place("solutions/contoso/core/maps/a.yaml"),
            Place::Installed {
                publisher: "contoso",
                name: "core",
                rest: "maps/a.yaml"
            }
        );
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "contoso", "finance-core", "a1"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Contoso", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }
}
