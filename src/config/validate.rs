//! Turning parsed documents into a validated `Config`: per-document schema checks, then the
//! semantic checks across resources (names, references, keys, identifiers, value maps,
//! addresses, solutions and the map versions in force). Collects every problem; a `Config`
//! that comes out is trusted everywhere else.

use std::collections::{BTreeMap, HashMap};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::loader::{PROJECT_FILE, SourceFile};
use super::resources::*;
use super::schema::{self, field_path};
use super::solutions::{self, Installed, MapVersions, Place};
use super::yaml::{self, Document, Pos};
use super::{Diagnostic, did_you_mean};

/// A resource with the file and document it came from, for positions in later messages.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub file: String,
    pub doc: Document,
    pub resource: T,
}

impl<T> Located<T> {
    /// Where the node at `pointer` is written.
    pub fn at(&self, pointer: &str) -> Pos {
        self.doc.value_pos(pointer)
    }

    fn diag(&self, pointer: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(&self.file, self.at(pointer), message)
    }
}

/// The validated config repository.
#[derive(Debug, Clone)]
pub struct Config {
    pub project: Located<Project>,
    /// The maps in force: one definition per name.
    pub maps: Vec<Located<TableMap>>,
    pub alerts: Vec<Located<AlertRule>>,
    pub requests: Vec<Located<ErrorRequest>>,
    /// Solution resources (`solutions/<name>.yaml`), for export.
    pub solutions: Vec<Located<Solution>>,
    /// Managed solutions installed under `solutions/<publisher>/<name>/`, checksums verified.
    pub installed: Vec<Installed>,
    /// Per map name: the definition in force and any others.
    pub map_versions: BTreeMap<String, MapVersions>,
}

impl Config {
    pub fn map(&self, name: &str) -> Option<&TableMap> {
        self.maps
            .iter()
            .map(|m| &m.resource)
            .find(|m| m.metadata.name == name)
    }

    /// The maps indexed by name and label, for matching many rules at once.
    pub fn map_index(&self) -> MapIndex<'_> {
        MapIndex::new(self.maps.iter().map(|m| &m.resource))
    }
}

/// Maps by name and by label, so matching alert rules never scans every map per rule.
pub struct MapIndex<'a> {
    by_name: HashMap<&'a str, &'a TableMap>,
    by_label: HashMap<(&'a str, &'a str), Vec<&'a TableMap>>,
    /// Every value each label key takes, for "did you mean" hints.
    label_values: HashMap<&'a str, Vec<&'a str>>,
}

impl<'a> MapIndex<'a> {
    pub fn new(maps: impl Iterator<Item = &'a TableMap>) -> Self {
        let mut index = MapIndex {
            by_name: HashMap::new(),
            by_label: HashMap::new(),
            label_values: HashMap::new(),
        };
        for map in maps {
            index.by_name.insert(map.metadata.name.as_str(), map);
            for (k, v) in &map.metadata.labels {
                let maps = index.by_label.entry((k.as_str(), v.as_str())).or_default();
                if maps.is_empty() {
                    index
                        .label_values
                        .entry(k.as_str())
                        .or_default()
                        .push(v.as_str());
                }
                maps.push(map);
            }
        }
        index
    }

    pub fn get(&self, name: &str) -> Option<&'a TableMap> {
        self.by_name.get(name).copied()
    }

    pub fn names(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.by_name.keys().copied()
    }

    /// The values label `key` takes across the maps (empty if no map has it).
    pub fn label_values(&self, key: &str) -> &[&'a str] {
        self.label_values.get(key).map_or(&[], Vec::as_slice)
    }

    /// The maps a rule applies to (by name or by labels), sorted by name.
    pub fn matched(&self, rule: &AlertRuleSpec) -> Vec<&'a TableMap> {
        let mut out: Vec<&TableMap> = rule
            .maps
            .iter()
            .flatten()
            .filter_map(|n| self.get(n))
            .collect();
        if let Some(selector) = &rule.selector {
            // Start from the rarest label, then check the others on those maps only.
            let rarest = selector
                .match_labels
                .iter()
                .map(|(k, v)| {
                    self.by_label
                        .get(&(k.as_str(), v.as_str()))
                        .map_or(&[][..], Vec::as_slice)
                })
                .min_by_key(|maps| maps.len())
                .unwrap_or(&[]);
            out.extend(rarest.iter().copied().filter(|m| rule_matches(rule, m)));
        }
        out.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        out.dedup_by(|a, b| a.metadata.name == b.metadata.name);
        out
    }
}

/// Whether an alert rule's `maps` or `selector` picks this map.
pub fn rule_matches(rule: &AlertRuleSpec, map: &TableMap) -> bool {
    let by_name = rule
        .maps
        .as_ref()
        .is_some_and(|names| names.contains(&map.metadata.name));
    let by_label = rule.selector.as_ref().is_some_and(|s| {
        s.match_labels
            .iter()
            .all(|(k, v)| map.metadata.labels.get(k) == Some(v))
    });
    by_name || by_label
}

#[derive(Default)]
struct Collected {
    projects: Vec<Located<Project>>,
    maps: Vec<Located<TableMap>>,
    alerts: Vec<Located<AlertRule>>,
    requests: Vec<Located<ErrorRequest>>,
    solutions: Vec<Located<Solution>>,
    installed: Vec<Installed>,
    /// Names of TableMap documents that failed their schema check.
    broken_maps: std::collections::HashSet<String>,
}

/// Parses, schema-checks and semantically checks the files.
pub fn compile(files: Vec<SourceFile>) -> Result<Config, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut got = Collected::default();
    for file in &files {
        match yaml::parse(&file.text) {
            Err(e) => diags.push(Diagnostic::new(&file.path, e.pos, e.message)),
            Ok(docs) => {
                for doc in docs {
                    typed_document(&file.path, doc, &mut got, &mut diags);
                }
            }
        }
    }
    let project = match got.projects.len() {
        0 => {
            if !diags.iter().any(|d| d.path == PROJECT_FILE) {
                diags.push(Diagnostic::new(
                    PROJECT_FILE,
                    Pos { line: 1, col: 1 },
                    "no document of kind Project: dualwrite.yaml must hold the project",
                ));
            }
            None
        }
        _ => {
            for extra in &got.projects[1..] {
                diags.push(extra.diag(
                    "/kind",
                    "a second Project: there must be exactly one, in dualwrite.yaml",
                ));
            }
            Some(got.projects.swap_remove(0))
        }
    };
    if let Some(project) = &project {
        if project.file != PROJECT_FILE {
            diags.push(project.diag("/kind", "the Project belongs in dualwrite.yaml"));
        }
        check_project(project, &mut diags);
    }
    solutions::check_installed(&files, &got.installed, &mut diags);
    // A map name is unique per place (maps/, or one solution); across places the versions
    // are chosen below.
    let mut by_place: BTreeMap<String, Vec<&Located<TableMap>>> = BTreeMap::new();
    for m in &got.maps {
        let key = match solutions::place(&m.file) {
            Place::Installed {
                publisher, name, ..
            } => format!("{publisher}/{name}"),
            _ => String::new(),
        };
        by_place.entry(key).or_default().push(m);
    }
    for maps in by_place.values() {
        check_unique(
            "TableMap",
            maps.iter().copied(),
            |m| &m.metadata.name,
            &mut diags,
        );
    }
    check_unique("AlertRule", &got.alerts, |a| &a.metadata.name, &mut diags);
    check_unique("Solution", &got.solutions, |s| &s.metadata.name, &mut diags);
    if let Some(project) = &project {
        for map in &got.maps {
            check_map(&project.resource, map, &mut diags);
        }
    }
    let (maps, map_versions) = solutions::choose_map_versions(
        project.as_ref(),
        std::mem::take(&mut got.maps),
        &got.installed,
        &mut diags,
    );
    got.maps = maps;
    check_unique(
        "ErrorRequest",
        &got.requests,
        |r| &r.metadata.name,
        &mut diags,
    );
    let index = MapIndex::new(got.maps.iter().map(|m| &m.resource));
    // A map with its own errors is still a known name: no cascade of "unknown map".
    let known = |name: &str| index.get(name).is_some() || got.broken_maps.contains(name);
    if let Some(project) = &project {
        for alert in &got.alerts {
            check_alert(&project.resource, alert, &index, &known, &mut diags);
        }
        let map_names: Vec<&str> = index.names().collect();
        let alert_names: Vec<&str> = got
            .alerts
            .iter()
            .map(|a| a.resource.metadata.name.as_str())
            .collect();
        for solution in &got.solutions {
            solutions::check_solution(
                &project.resource,
                solution,
                &known,
                &map_names,
                &alert_names,
                &mut diags,
            );
        }
    }
    for request in &got.requests {
        check_request(request, &index, &known, &mut diags);
    }
    match project {
        Some(project) if diags.is_empty() => Ok(Config {
            project,
            maps: got.maps,
            alerts: got.alerts,
            requests: got.requests,
            solutions: got.solutions,
            installed: got.installed,
            map_versions,
        }),
        _ => {
            diags.sort();
            diags.dedup();
            Err(diags)
        }
    }
}

fn typed_document(file: &str, doc: Document, got: &mut Collected, diags: &mut Vec<Diagnostic>) {
    let kind_name = match &doc.value {
        Value::Object(obj) => match obj.get("kind") {
            Some(Value::String(k)) => k.clone(),
            Some(_) => {
                diags.push(Diagnostic::new(
                    file,
                    doc.value_pos("/kind"),
                    "kind: expected a string",
                ));
                return;
            }
            None => {
                diags.push(Diagnostic::new(
                    file,
                    doc.value_pos(""),
                    "missing required field \"kind\"",
                ));
                return;
            }
        },
        other => {
            diags.push(Diagnostic::new(
                file,
                doc.value_pos(""),
                format!(
                    "expected a mapping with apiVersion, kind, metadata and spec, found {}",
                    short(other)
                ),
            ));
            return;
        }
    };
    let Some(kind) = Kind::from_name(&kind_name) else {
        let names = Kind::ALL.map(Kind::name);
        diags.push(
            Diagnostic::new(
                file,
                doc.value_pos("/kind"),
                format!(
                    "kind: unknown kind {kind_name:?}; expected one of {}",
                    names.join(", ")
                ),
            )
            .with_hint(did_you_mean(&kind_name, names)),
        );
        return;
    };
    if let Some(diag) = solutions::check_place(kind, file, doc.value_pos("/kind")) {
        diags.push(diag);
        return;
    }
    control_characters(file, &doc, "", &doc.value, diags);
    let errors = schema::check(kind, file, &doc);
    if !errors.is_empty() {
        if let (Kind::TableMap, Some(name)) = (
            kind,
            doc.value.pointer("/metadata/name").and_then(Value::as_str),
        ) {
            got.broken_maps.insert(name.to_string());
        }
        diags.extend(errors);
        return;
    }
    match kind {
        Kind::Project => push(file, doc, &mut got.projects, diags),
        Kind::TableMap => push(file, doc, &mut got.maps, diags),
        Kind::AlertRule => push(file, doc, &mut got.alerts, diags),
        Kind::ErrorRequest => push(file, doc, &mut got.requests, diags),
        Kind::Solution => push(file, doc, &mut got.solutions, diags),
        Kind::SolutionManifest => push(file, doc, &mut got.installed, diags),
    }
}

/// Refuses control characters (NUL, escapes, line breaks, …) in the strings and keys of a
/// document: every one of them is a path, a name, an address or a URL variable, and a
/// control character in one only fails later (a SQLite path with a NUL at open time, an email
/// address at delivery). Column data (`default`, `valueMap`) is the database's business.
fn control_characters(
    file: &str,
    doc: &Document,
    pointer: &str,
    value: &Value,
    diags: &mut Vec<Diagnostic>,
) {
    let refuse = |text: &str, pos: Pos, what: &str, diags: &mut Vec<Diagnostic>| {
        if let Some((i, c)) = text.chars().enumerate().find(|(_, c)| c.is_control()) {
            diags.push(Diagnostic::new(
                file,
                pos,
                format!(
                    "{what}: {text:?} holds a control character (U+{:04X}, character {}): paths, names and addresses may not",
                    c as u32,
                    i + 1
                ),
            ));
        }
    };
    match value {
        Value::String(text) => refuse(
            text,
            doc.value_pos(pointer),
            &schema::field_path(pointer),
            diags,
        ),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                control_characters(file, doc, &format!("{pointer}/{i}"), item, diags);
            }
        }
        Value::Object(entries) => {
            for (key, item) in entries {
                let child = format!("{pointer}/{}", yaml::escape_pointer(key));
                refuse(
                    key,
                    doc.key_pos(&child),
                    &format!("the key in {}", schema::field_path(pointer)),
                    diags,
                );
                let data = pointer.starts_with("/spec/columns/")
                    && matches!(key.as_str(), "default" | "valueMap");
                if !data {
                    control_characters(file, doc, &child, item, diags);
                }
            }
        }
        _ => {}
    }
}

fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 40 {
        format!("{}…", &text[..40])
    } else {
        text
    }
}

fn push<T: DeserializeOwned>(
    file: &str,
    doc: Document,
    out: &mut Vec<Located<T>>,
    diags: &mut Vec<Diagnostic>,
) {
    match T::deserialize(&doc.value) {
        Ok(resource) => out.push(Located {
            file: file.to_string(),
            doc,
            resource,
        }),
        // The schema accepted it, so this is a value serde is stricter about.
        Err(e) => diags.push(Diagnostic::new(file, doc.value_pos(""), e.to_string())),
    }
}

fn check_unique<'a, T: 'a>(
    kind: &str,
    items: impl IntoIterator<Item = &'a Located<T>>,
    name: impl Fn(&T) -> &String,
    diags: &mut Vec<Diagnostic>,
) {
    let mut seen: HashMap<&str, &Located<T>> = HashMap::new();
    for item in items {
        let n = name(&item.resource);
        if let Some(first) = seen.get(n.as_str()) {
            let first_pos = first.at("/metadata/name");
            diags.push(item.diag(
                "/metadata/name",
                format!(
                    "metadata.name: duplicate {kind} name {n:?}, first defined at {}:{}:{}",
                    first.file, first_pos.line, first_pos.col
                ),
            ));
        } else {
            seen.insert(n, item);
        }
    }
}

fn check_project(project: &Located<Project>, diags: &mut Vec<Diagnostic>) {
    let spec = &project.resource.spec;
    if spec.endpoints.is_empty() {
        diags.push(project.diag(
            "/spec/endpoints",
            "spec.endpoints: at least one endpoint is needed",
        ));
    }
    for (name, ep) in &spec.endpoints {
        let pointer = format!("/spec/endpoints/{}", yaml::escape_pointer(name));
        let engines = [
            ep.sqlite.is_some(),
            ep.postgres.is_some(),
            ep.mysql.is_some(),
        ];
        if engines.iter().filter(|x| **x).count() != 1 {
            diags.push(project.diag(
                &pointer,
                format!(
                    "{}: set exactly one of sqlite, postgres, mysql",
                    field_path(&pointer)
                ),
            ));
        }
        if !is_identifier(name) {
            diags.push(project.diag(
                &pointer,
                format!("endpoint name {name:?} is not a valid identifier"),
            ));
        }
    }
    let store = &spec.state_store;
    if usize::from(store.sqlite.is_some()) + usize::from(store.postgres.is_some()) != 1 {
        diags.push(project.diag(
            "/spec/stateStore",
            "spec.stateStore: set exactly one of sqlite, postgres",
        ));
    }
    if let Some(smtp) = spec.notifications.as_ref().and_then(|n| n.smtp.as_ref())
        && let Err(why) = check_address(&smtp.from)
    {
        diags.push(project.diag(
            "/spec/notifications/smtp/from",
            format!("spec.notifications.smtp.from: {why}"),
        ));
    }
}

/// A table (`table` or `schema.table`) or column name dualwrite will quote in SQL.
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

fn is_table_name(name: &str) -> bool {
    match name.split_once('.') {
        Some((schema, table)) => is_identifier(schema) && is_identifier(table),
        None => is_identifier(name),
    }
}

fn check_map(project: &Project, map: &Located<TableMap>, diags: &mut Vec<Diagnostic>) {
    let spec = &map.resource.spec;
    let endpoints: Vec<&str> = project.spec.endpoints.keys().map(String::as_str).collect();
    for (side, table) in [("source", &spec.source), ("destination", &spec.destination)] {
        if !project.spec.endpoints.contains_key(&table.endpoint) {
            diags.push(
                map.diag(
                    &format!("/spec/{side}/endpoint"),
                    format!(
                        "spec.{side}.endpoint: unknown endpoint {:?}; dualwrite.yaml defines {}",
                        table.endpoint,
                        endpoints.join(", ")
                    ),
                )
                .with_hint(did_you_mean(&table.endpoint, endpoints.iter().copied())),
            );
        }
        if !is_table_name(&table.table) {
            diags.push(map.diag(
                &format!("/spec/{side}/table"),
                format!(
                    "spec.{side}.table: {:?} is not a valid table name: use letters, digits and _, as table or schema.table",
                    table.table
                ),
            ));
        }
    }
    if spec.source == spec.destination {
        diags.push(map.diag(
            "/spec/destination",
            "spec.destination: is the same table as spec.source",
        ));
    }
    if !spec.columns.iter().any(|c| c.key) {
        diags.push(map.diag(
            "/spec/columns",
            "spec.columns: no key column: mark the column(s) identifying a record with `key: true`",
        ));
    }
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, col) in spec.columns.iter().enumerate() {
        check_column(map, i, col, spec.direction, &mut seen, diags);
    }
}

fn check_column<'a>(
    map: &Located<TableMap>,
    i: usize,
    col: &'a ColumnMap,
    map_direction: Direction,
    seen: &mut HashMap<(&'static str, &'a str), usize>,
    diags: &mut Vec<Diagnostic>,
) {
    let at = format!("/spec/columns/{i}");
    let field = format!("spec.columns[{i}]");
    for (side, name) in [("source", &col.source), ("destination", &col.destination)] {
        let Some(name) = name else { continue };
        if !is_identifier(name) {
            diags.push(map.diag(
                &format!("{at}/{side}"),
                format!(
                    "{field}.{side}: {name:?} is not a valid column name: use letters, digits and _"
                ),
            ));
        }
        if let Some(first) = seen.insert((side, name.as_str()), i) {
            diags.push(map.diag(
                &format!("{at}/{side}"),
                format!(
                    "{field}.{side}: column {name:?} is already mapped by spec.columns[{first}]"
                ),
            ));
        }
    }
    let effective = col.direction.unwrap_or(map_direction);
    if let Some(d) = col.direction {
        if d == Direction::Bidirectional {
            diags.push(map.diag(
                &format!("{at}/direction"),
                format!("{field}.direction: a column can only be limited to SourceToDestination or DestinationToSource"),
            ));
        } else if map_direction != Direction::Bidirectional && d != map_direction {
            diags.push(map.diag(
                &format!("{at}/direction"),
                format!("{field}.direction: {d} is against the map's direction {map_direction}"),
            ));
        }
    }
    match (&col.source, &col.destination) {
        (None, None) => diags.push(map.diag(
            &at,
            format!("{field}: needs a source or a destination column"),
        )),
        (Some(_), Some(_)) => {
            if col.default.is_some() && col.value_map.is_none() {
                diags.push(map.diag(
                    &format!("{at}/default"),
                    format!("{field}.default: only a column without a source (or destination) takes a constant default"),
                ));
            }
        }
        (None, Some(_)) | (Some(_), None) => {
            let sourceless = col.source.is_none();
            if col.default.is_none() {
                let (missing, has) = if sourceless {
                    ("source", "destination")
                } else {
                    ("destination", "source")
                };
                diags.push(map.diag(
                    &at,
                    format!(
                        "{field}: a {has} column with no {missing} needs a `default` value to write"
                    ),
                ));
            }
            if col.key {
                diags.push(map.diag(
                    &format!("{at}/key"),
                    format!("{field}.key: a key column needs both a source and a destination"),
                ));
            }
            if effective == Direction::Bidirectional {
                diags.push(map.diag(
                    &at,
                    format!(
                        "{field}: a constant column is one way: set direction: {}",
                        if sourceless {
                            "SourceToDestination"
                        } else {
                            "DestinationToSource"
                        }
                    ),
                ));
            }
        }
    }
    if let Some(value_map) = &col.value_map
        && effective == Direction::Bidirectional
    {
        let mut reverse: HashMap<String, &str> = HashMap::new();
        for (from, to) in value_map {
            if let Some(other) = reverse.insert(to.to_string(), from) {
                diags.push(map.diag(
                        &format!("{at}/valueMap/{}", yaml::escape_pointer(from)),
                        format!(
                            "{field}.valueMap: cannot be reversed for a bidirectional column: {other:?} and {from:?} both map to {:?}; make the values unique or set direction on the column",
                            to.to_string()
                        ),
                    ));
            }
        }
    }
}

fn check_alert(
    project: &Project,
    alert: &Located<AlertRule>,
    maps: &MapIndex<'_>,
    known: &dyn Fn(&str) -> bool,
    diags: &mut Vec<Diagnostic>,
) {
    let spec = &alert.resource.spec;
    match (&spec.maps, &spec.selector) {
        (None, None) => diags.push(alert.diag(
            "/spec",
            "spec: set `maps` or `selector` to say which maps this rule watches",
        )),
        (Some(_), Some(_)) => diags.push(alert.diag(
            "/spec/selector",
            "spec.selector: set either `maps` or `selector`, not both",
        )),
        _ => {}
    }
    for (i, name) in spec.maps.iter().flatten().enumerate() {
        if !known(name) {
            diags.push(
                alert
                    .diag(
                        &format!("/spec/maps/{i}"),
                        format!("spec.maps[{i}]: unknown map {name:?}"),
                    )
                    .with_hint(did_you_mean(name, maps.names())),
            );
        }
    }
    if let Some(selector) = &spec.selector {
        if selector.match_labels.is_empty() {
            diags.push(alert.diag(
                "/spec/selector/matchLabels",
                "spec.selector.matchLabels: needs at least one label",
            ));
        }
        for (key, value) in &selector.match_labels {
            let values = maps.label_values(key);
            if !values.contains(&value.as_str()) {
                let pointer = format!("/spec/selector/matchLabels/{}", yaml::escape_pointer(key));
                let message = if values.is_empty() {
                    format!("spec.selector.matchLabels: no map has the label {key:?}")
                } else {
                    format!("spec.selector.matchLabels.{key}: no map has {key}={value}")
                };
                diags.push(
                    alert
                        .diag(&pointer, message)
                        .with_hint(did_you_mean(value, values.iter().copied())),
                );
            }
        }
    }
    if spec.window.as_secs() < 1 {
        diags.push(alert.diag("/spec/window", "spec.window: must be at least 1s"));
    }
    if spec.window > project.spec.error_retention {
        diags.push(alert.diag(
            "/spec/window",
            format!(
                "spec.window: {} is longer than the project's errorRetention {}: errors would be purged before they leave the window",
                spec.window, project.spec.error_retention
            ),
        ));
    }
    let notify = spec.notify.as_ref();
    let addresses = notify
        .and_then(|n| n.email.as_ref())
        .map(EmailList::addresses);
    let notifies = addresses.as_ref().is_some_and(|a| !a.is_empty())
        || notify.is_some_and(|n| !n.webhook.is_empty());
    if let Some(list) = &addresses {
        if list.is_empty() {
            diags.push(alert.diag(
                "/spec/notify/email",
                "spec.notify.email: the address list is empty",
            ));
        } else if project
            .spec
            .notifications
            .as_ref()
            .and_then(|n| n.smtp.as_ref())
            .is_none()
        {
            diags.push(alert.diag(
                "/spec/notify/email",
                "spec.notify.email: dualwrite.yaml has no spec.notifications.smtp to send it with",
            ));
        }
        let raw_list = matches!(
            notify.and_then(|n| n.email.as_ref()),
            Some(EmailList::List(_))
        );
        for (i, address) in list.iter().enumerate() {
            if let Err(why) = check_address(address) {
                let pointer = if raw_list {
                    format!("/spec/notify/email/{i}")
                } else {
                    "/spec/notify/email".into()
                };
                diags.push(alert.diag(&pointer, format!("spec.notify.email: {why}")));
            }
        }
    }
    if spec.action == AlertAction::Stop && !notifies {
        diags.push(alert.diag(
            "/spec/action",
            "spec.action: Stop needs a notification (spec.notify): a stopped map must not go unnoticed",
        ));
    }
}

/// A plain `local@domain` address; display names are refused. An address holding a control
/// character (CR/LF: header injection) is not judged here: `compile` refuses it at its place
/// (`control_characters`), as it refuses one in any string of the config.
pub fn check_address(address: &str) -> Result<(), String> {
    if address.chars().any(char::is_control) {
        return Ok(());
    }
    let Some((local, domain)) = address.split_once('@') else {
        return Err(format!("{address:?} is not an email address"));
    };
    let local_ok = !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
    let domain_ok = domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(())
    } else {
        Err(format!("{address:?} is not an email address"))
    }
}

fn check_request(
    request: &Located<ErrorRequest>,
    maps: &MapIndex<'_>,
    known: &dyn Fn(&str) -> bool,
    diags: &mut Vec<Diagnostic>,
) {
    let spec = &request.resource.spec;
    if !known(&spec.map) {
        diags.push(
            request
                .diag("/spec/map", format!("spec.map: unknown map {:?}", spec.map))
                .with_hint(did_you_mean(&spec.map, maps.names())),
        );
    }
    if let (Some(from), Some(to)) = (spec.filter.from, spec.filter.to)
        && from >= to
    {
        diags.push(request.diag(
            "/spec/filter/to",
            format!(
                "spec.filter: the time range is {}: `to` ({}) must be after `from` ({})",
                if from == to { "empty" } else { "inverted" },
                to.to_rfc3339(),
                from.to_rfc3339()
            ),
        ));
    }
    let mut ids: BTreeMap<i64, usize> = BTreeMap::new();
    for (i, id) in spec.filter.ids.iter().enumerate() {
        if let Some(first) = ids.insert(*id, i) {
            diags.push(request.diag(
                &format!("/spec/filter/ids/{i}"),
                format!("spec.filter.ids[{i}]: id {id} is listed twice (first at ids[{first}])"),
            ));
        }
    }
}
