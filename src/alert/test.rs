//! `dualwrite alerts test`: unit tests for alert rules, in the spirit of `promtool test
//! rules`. A test file names rule files, the maps they may match (with labels), a series of
//! errors in a compact notation, and at evaluation times the rules expected to be firing and
//! the notifications and actions expected since the previous check. Rules are evaluated at
//! every error and every check time, exactly as a reconcile evaluates them.
//!
//! ```yaml
//! ruleFiles: [../pause-on-app-errors.yaml]
//! maps: [{ name: customers, labels: { team: finance } }]
//! tests:
//!   - name: ten rejected records in 15 minutes pause the map
//!     errors: ["customers ApplicationError 0m+1m x10"]   # MAP TYPE START[+STEP] [xCOUNT]
//!     expect:
//!       - at: 9m
//!         firing: [pause-on-app-errors/customers]
//!         notifications: [firing pause-on-app-errors/customers]
//!         actions: [Pause customers]
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use super::{Baseline, Event, Millis, Notice, RuleMapState, Windows, evaluate};
use crate::config::{AlertAction, AlertRule, Duration, Kind, Metadata, TableMap, schema, yaml};
use crate::state::ErrorType;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TestFile {
    rule_files: Vec<String>,
    #[serde(default)]
    maps: Vec<TestMap>,
    tests: Vec<TestCase>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TestMap {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    #[serde(default)]
    errors: Vec<String>,
    /// `resume MAP at TIME` lines: `dualwrite resume` at that time.
    #[serde(default)]
    resumes: Vec<String>,
    expect: Vec<Check>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Check {
    at: Duration,
    #[serde(default)]
    firing: BTreeSet<String>,
    #[serde(default)]
    notifications: BTreeSet<String>,
    #[serde(default)]
    actions: BTreeSet<String>,
}

/// One test's verdict.
#[derive(Debug)]
pub struct Outcome {
    pub file: String,
    pub test: String,
    /// Empty when it passed; otherwise one readable diff per failed check.
    pub failures: Vec<String>,
}

/// `MAP TYPE START[+STEP] [xCOUNT]` → (map, type, times).
fn parse_series(line: &str) -> Result<(String, ErrorType, Vec<Millis>), String> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let (map, ty, times, count) = match parts.as_slice() {
        [m, t, times] => (m, t, times, "x1"),
        [m, t, times, count] => (m, t, times, *count),
        _ => {
            return Err(format!(
                "{line:?}: expected `MAP TYPE START[+STEP] [xCOUNT]`"
            ));
        }
    };
    let (start, step) = times.split_once('+').unwrap_or((times, "0s"));
    let dur = |s: &str| {
        Duration::parse(s)
            .map(|d| d.as_secs() as i64 * 1000)
            .ok_or_else(|| format!("{line:?}: {s:?} is not a duration like 30s, 15m"))
    };
    let (start, step) = (dur(start)?, dur(step)?);
    let n: u32 = count
        .strip_prefix('x')
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{line:?}: {count:?} is not a count like x10"))?;
    let Some(ty) = ErrorType::parse(ty) else {
        let names: Vec<&str> = ErrorType::ALL.iter().map(|t| t.name()).collect();
        return Err(format!(
            "{line:?}: unknown error type {ty:?}; expected one of {}",
            names.join(", ")
        ));
    };
    Ok((
        map.to_string(),
        ty,
        (0..n).map(|i| start + step * i64::from(i)).collect(),
    ))
}

/// Loads the alert rules of a file, with `path:line:col` errors.
fn load_rules(path: &Path) -> Result<Vec<AlertRule>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let shown = path.display().to_string();
    let docs = yaml::parse(&text)
        .map_err(|e| format!("{shown}:{}:{}: {}", e.pos.line, e.pos.col, e.message))?;
    let mut rules = Vec::new();
    for doc in docs {
        let diags = schema::check(Kind::AlertRule, &shown, &doc);
        if let Some(d) = diags.first() {
            return Err(diags
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
                .replace(&d.path, &shown));
        }
        rules.push(AlertRule::deserialize(&doc.value).map_err(|e| format!("{shown}: {e}"))?);
    }
    Ok(rules)
}

fn map_stub(m: &TestMap) -> TableMap {
    let mut map: TableMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "dualwrite/v1", "kind": "TableMap",
        "metadata": { "name": m.name },
        "spec": { "source": { "endpoint": "a", "table": "t" }, "destination": { "endpoint": "b", "table": "t" },
                  "columns": [{ "source": "id", "destination": "id", "key": true }] }
    }))
    .expect("stub map");
    map.metadata = Metadata {
        name: m.name.clone(),
        labels: m.labels.clone(),
    };
    map
}

/// Runs every test of one file; `label` is how the user named it.
pub fn run_file(path: &Path, label: &str) -> Result<Vec<Outcome>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: TestFile =
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut rules = Vec::new();
    for f in &file.rule_files {
        rules.extend(load_rules(&dir.join(f))?);
    }
    let maps: Vec<TableMap> = file.maps.iter().map(map_stub).collect();
    let mut outcomes = Vec::new();
    for case in &file.tests {
        outcomes.push(Outcome {
            file: label.to_string(),
            test: case.name.clone(),
            failures: run_case(&rules, &maps, case)?,
        });
    }
    Ok(outcomes)
}

fn run_case(
    rules: &[AlertRule],
    maps: &[TableMap],
    case: &TestCase,
) -> Result<Vec<String>, String> {
    let mut errors: Vec<(Millis, String, ErrorType)> = Vec::new();
    for line in &case.errors {
        let (map, ty, times) = parse_series(line)?;
        if !maps.iter().any(|m| m.metadata.name == map) {
            return Err(format!("{line:?}: map {map:?} is not listed under `maps`"));
        }
        errors.extend(times.into_iter().map(|t| (t, map.clone(), ty)));
    }
    let mut resumes: Vec<(Millis, String)> = Vec::new();
    for line in &case.resumes {
        match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["resume", map, "at", at] => {
                let at = Duration::parse(at).ok_or_else(|| format!("{line:?}: bad time"))?;
                resumes.push((at.as_secs() as i64 * 1000, map.to_string()));
            }
            _ => return Err(format!("{line:?}: expected `resume MAP at TIME`")),
        }
    }
    errors.sort_by(|a, b| (a.0, &a.1, a.2.name()).cmp(&(b.0, &b.1, b.2.name())));
    // Every moment anything happens, in order: errors, resumes, checks.
    let mut moments: BTreeSet<Millis> = errors.iter().map(|e| e.0).collect();
    moments.extend(resumes.iter().map(|r| r.0));
    moments.extend(case.expect.iter().map(|c| c.at.as_secs() as i64 * 1000));
    let mut windows = Windows::default();
    let mut states: BTreeMap<(String, String), RuleMapState> = BTreeMap::new();
    let mut resumed: BTreeMap<String, Millis> = BTreeMap::new();
    let (mut notifications, mut actions) = (BTreeSet::new(), BTreeSet::new());
    let mut next_error = 0;
    let mut failures = Vec::new();
    for now in moments {
        while next_error < errors.len() && errors[next_error].0 <= now {
            let (at, map, ty) = &errors[next_error];
            windows.record(map, *ty, *at);
            next_error += 1;
        }
        for (at, map) in resumes.iter().filter(|r| r.0 == now) {
            resumed.insert(map.clone(), *at);
        }
        for rule in rules {
            for map in maps
                .iter()
                .filter(|m| crate::config::validate::rule_matches(&rule.spec, m))
            {
                let (r, m) = (rule.metadata.name.clone(), map.metadata.name.clone());
                let state = states.entry((r.clone(), m.clone())).or_default();
                let baseline = Baseline {
                    rule_since: None,
                    hold_ended: resumed.get(&m).copied(),
                };
                match evaluate(rule, &m, &windows, baseline, now, state) {
                    Some(Event::Fired { action, notice, .. }) => {
                        if notice == Notice::Send {
                            notifications.insert(format!("firing {r}/{m}"));
                        }
                        if action != AlertAction::None {
                            actions.insert(format!("{action:?} {m}"));
                        }
                    }
                    Some(Event::Resolved { notify: true, .. }) => {
                        notifications.insert(format!("resolved {r}/{m}"));
                    }
                    _ => {}
                }
            }
        }
        for check in case
            .expect
            .iter()
            .filter(|c| c.at.as_secs() as i64 * 1000 == now)
        {
            let firing: BTreeSet<String> = states
                .iter()
                .filter(|(_, s)| s.state == super::AlertState::Firing)
                .map(|((r, m), _)| format!("{r}/{m}"))
                .collect();
            let expected = render(&check.firing, &check.notifications, &check.actions);
            let actual = render(&firing, &notifications, &actions);
            if expected != actual {
                let diff = similar::TextDiff::from_lines(&expected, &actual)
                    .unified_diff()
                    .header("expected", "actual")
                    .to_string();
                failures.push(format!("at {}:\n{diff}", check.at));
            }
            notifications.clear();
            actions.clear();
        }
    }
    Ok(failures)
}

fn render(
    firing: &BTreeSet<String>,
    notifications: &BTreeSet<String>,
    actions: &BTreeSet<String>,
) -> String {
    let list = |s: &BTreeSet<String>| {
        if s.is_empty() {
            " []\n".to_string()
        } else {
            s.iter().map(|x| format!("\n  - {x}")).collect::<String>() + "\n"
        }
    };
    format!(
        "firing:{}notifications:{}actions:{}",
        list(firing),
        list(notifications),
        list(actions)
    )
}
