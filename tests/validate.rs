//! `dualwrite validate`: every class of config error, reported as `path:line:col: message`
//! exactly as a user sees it, all in one run and sorted.

mod support;

use support::{CUSTOMERS, Repo};

/// Runs `validate` and returns (exit code, stdout lines).
fn validate(repo: &Repo) -> (i32, Vec<String>) {
    let run = repo.run(&["validate"]);
    (run.code, run.stdout.lines().map(String::from).collect())
}

fn assert_errors(repo: &Repo, expected: &[&str]) {
    let (code, lines) = validate(repo);
    assert_eq!(code, 1, "validate must fail:\n{}", lines.join("\n"));
    let (summary, errors) = lines.split_last().unwrap();
    assert_eq!(errors, expected, "\nactual:\n{}", errors.join("\n"));
    let n = expected.len();
    assert_eq!(
        summary,
        &format!("{n} error{} found", if n == 1 { "" } else { "s" })
    );
}

#[test]
fn valid_repository_passes() {
    let repo = Repo::new(&[("maps/customers.yaml", CUSTOMERS)]);
    let (code, lines) = validate(&repo);
    assert_eq!(code, 0);
    assert_eq!(
        lines,
        ["valid: 1 project, 1 map(s), 0 alert rule(s), 0 request(s)"]
    );
}

#[test]
fn yaml_syntax_error_points_at_the_line() {
    let repo = Repo::new(&[(
        "maps/broken.yaml",
        "apiVersion: dualwrite/v1\nkind: TableMap\nspec: [1, 2\n",
    )]);
    assert_errors(
        &repo,
        &["maps/broken.yaml:3:7: invalid YAML: unclosed bracket '['"],
    );
}

#[test]
fn unknown_field_gets_a_did_you_mean_hint() {
    let repo = Repo::new(&[(
        "maps/customers.yaml",
        &CUSTOMERS.replace("  columns:", "  colums:"),
    )]);
    assert_errors(
        &repo,
        &[
            "maps/customers.yaml:4:1: spec: missing required field \"columns\"",
            "maps/customers.yaml:8:3: spec: unknown field \"colums\" (did you mean \"columns\"?)",
        ],
    );
}

#[test]
fn misspelled_enum_value_is_named_with_the_choices() {
    let repo = Repo::new(&[(
        "maps/customers.yaml",
        &CUSTOMERS.replace("state: Running", "state: Runing"),
    )]);
    assert_errors(
        &repo,
        &[
            "maps/customers.yaml:5:10: spec.state: \"Runing\" is not one of Running, Paused, Stopped (did you mean \"Running\"?)",
        ],
    );
}

const ALERT: &str = "\
apiVersion: dualwrite/v1
kind: AlertRule
metadata: { name: pause-on-app-errors }
spec:
  maps: [customers]
  errorType: ApplicationError
  threshold: 10
  window: 15m
  notify: { email: \"id1@example.com, id2@example.com\" }
  action: Pause
";

#[test]
fn duration_in_words_is_rejected() {
    let repo = Repo::new(&[
        ("maps/customers.yaml", CUSTOMERS),
        (
            "alerts/a.yaml",
            &ALERT.replace("window: 15m", "window: 15 minutes"),
        ),
    ]);
    assert_errors(
        &repo,
        &[
            "alerts/a.yaml:8:11: spec.window: \"15 minutes\" is not a duration: use a number and a unit, e.g. 30s, 15m, 1h, 1d",
        ],
    );
}

#[test]
fn duplicate_names_point_at_both_definitions() {
    let second = format!("{CUSTOMERS}---\n{CUSTOMERS}");
    let repo = Repo::new(&[("maps/customers.yaml", &second)]);
    assert_errors(
        &repo,
        &[
            "maps/customers.yaml:14:19: metadata.name: duplicate TableMap name \"customers\", first defined at maps/customers.yaml:3:19",
        ],
    );
}

#[test]
fn unknown_endpoint_suggests_the_closest() {
    let repo = Repo::new(&[(
        "maps/customers.yaml",
        &CUSTOMERS.replace("endpoint: erp", "endpoint: erpp"),
    )]);
    assert_errors(
        &repo,
        &[
            "maps/customers.yaml:6:23: spec.source.endpoint: unknown endpoint \"erpp\"; dualwrite.yaml defines crm, erp (did you mean \"erp\"?)",
        ],
    );
}

#[test]
fn unknown_map_in_alert_and_request() {
    let request = "\
apiVersion: dualwrite/v1
kind: ErrorRequest
metadata: { name: retry-all }
spec:
  map: custmers
  action: Retry
";
    let repo = Repo::new(&[
        ("maps/customers.yaml", CUSTOMERS),
        (
            "alerts/a.yaml",
            &ALERT.replace("maps: [customers]", "maps: [customers, orders]"),
        ),
        ("requests/r.yaml", request),
    ]);
    assert_errors(
        &repo,
        &[
            "alerts/a.yaml:5:21: spec.maps[1]: unknown map \"orders\"",
            "requests/r.yaml:5:8: spec.map: unknown map \"custmers\" (did you mean \"customers\"?)",
        ],
    );
}

#[test]
fn map_without_key_column() {
    let repo = Repo::new(&[("maps/customers.yaml", &CUSTOMERS.replace(", key: true", ""))]);
    assert_errors(
        &repo,
        &[
            "maps/customers.yaml:9:5: spec.columns: no key column: mark the column(s) identifying a record with `key: true`",
        ],
    );
}

#[test]
fn sql_in_a_table_name_is_not_an_identifier() {
    let repo = Repo::new(&[(
        "maps/customers.yaml",
        &CUSTOMERS
            .replace("table: customers", "table: \"customers; drop table x\"")
            .replace(
                "{ source: name, destination: name }",
                "{ source: name, destination: \"na me\" }",
            ),
    )]);
    assert_errors(
        &repo,
        &[
            "maps/customers.yaml:6:35: spec.source.table: \"customers; drop table x\" is not a valid table name: use letters, digits and _, as table or schema.table",
            "maps/customers.yaml:10:36: spec.columns[1].destination: \"na me\" is not a valid column name: use letters, digits and _",
        ],
    );
}

#[test]
fn value_map_that_cannot_be_reversed_on_a_bidirectional_column() {
    let map = CUSTOMERS.replace("  columns:", "  direction: Bidirectional\n  columns:")
        + "    - { source: currency, destination: currency_code, valueMap: { USD: 1, EUR: 2, DOLLAR: 1 } }\n";
    let repo = Repo::new(&[("maps/customers.yaml", &map)]);
    assert_errors(
        &repo,
        &[
            "maps/customers.yaml:12:72: spec.columns[2].valueMap: cannot be reversed for a bidirectional column: \"DOLLAR\" and \"USD\" both map to \"1\"; make the values unique or set direction on the column",
        ],
    );
    // The same map one way is fine.
    repo.write(
        "maps/customers.yaml",
        &map.replace("  direction: Bidirectional\n", ""),
    );
    assert_eq!(validate(&repo).0, 0);
}

#[test]
fn sourceless_column_needs_a_default() {
    let map = format!("{CUSTOMERS}    - {{ destination: origin }}\n");
    let repo = Repo::new(&[("maps/customers.yaml", &map)]);
    assert_errors(
        &repo,
        &[
            "maps/customers.yaml:11:7: spec.columns[2]: a destination column with no source needs a `default` value to write",
        ],
    );
    repo.write(
        "maps/customers.yaml",
        &format!("{CUSTOMERS}    - {{ destination: origin, default: erp }}\n"),
    );
    assert_eq!(validate(&repo).0, 0);
}

#[test]
fn email_lists_must_be_non_empty_and_well_formed() {
    let repo = Repo::new(&[
        ("maps/customers.yaml", CUSTOMERS),
        ("alerts/empty.yaml", &ALERT.replace("\"id1@example.com, id2@example.com\"", "[]")),
        (
            "alerts/bad.yaml",
            &ALERT
                .replace("name: pause-on-app-errors", "name: bad-addresses")
                .replace(
                    "\"id1@example.com, id2@example.com\"",
                    "[ops@example.com, not-an-address, \"evil@example.com\\r\\nBcc: all@example.com\"]",
                ),
        ),
    ]);
    assert_errors(
        &repo,
        &[
            "alerts/bad.yaml:9:38: spec.notify.email: \"not-an-address\" is not an email address",
            "alerts/bad.yaml:9:54: spec.notify.email[2]: \"evil@example.com\\r\\nBcc: all@example.com\" holds a control character (U+000D, character 17): paths, names and addresses may not",
            "alerts/empty.yaml:9:20: spec.notify.email: the address list is empty",
        ],
    );
}

#[test]
fn alert_thresholds_windows_and_actions_are_checked() {
    let repo = Repo::new(&[
        ("maps/customers.yaml", CUSTOMERS),
        (
            "alerts/zero.yaml",
            &ALERT.replace("threshold: 10", "threshold: 0"),
        ),
        (
            "alerts/long.yaml",
            &ALERT
                .replace("name: pause-on-app-errors", "name: long")
                .replace("window: 15m", "window: 2d"),
        ),
        (
            "alerts/stop.yaml",
            &ALERT
                .replace("name: pause-on-app-errors", "name: stop")
                .replace(
                    "  notify: { email: \"id1@example.com, id2@example.com\" }\n",
                    "",
                )
                .replace("action: Pause", "action: Stop")
                .replace(
                    "maps: [customers]",
                    "selector: { matchLabels: { team: finanse } }",
                ),
        ),
    ]);
    assert_errors(
        &repo,
        &[
            "alerts/long.yaml:8:11: spec.window: 2d is longer than the project's errorRetention 1d: errors would be purged before they leave the window",
            "alerts/stop.yaml:5:36: spec.selector.matchLabels.team: no map has team=finanse (did you mean \"finance\"?)",
            "alerts/stop.yaml:9:11: spec.action: Stop needs a notification (spec.notify): a stopped map must not go unnoticed",
            "alerts/zero.yaml:7:14: spec.threshold: 0 is too small: the minimum is 1",
        ],
    );
}

#[test]
fn inverted_and_empty_time_ranges_in_requests() {
    let request = |name: &str, from: &str, to: &str| {
        format!(
            "apiVersion: dualwrite/v1\nkind: ErrorRequest\nmetadata: {{ name: {name} }}\nspec:\n  map: customers\n  action: Retry\n  filter:\n    from: {from}\n    to: {to}\n"
        )
    };
    let repo = Repo::new(&[
        ("maps/customers.yaml", CUSTOMERS),
        (
            "requests/inverted.yaml",
            &request("inverted", "2026-11-22T12:00:00Z", "2026-11-22T00:00:00Z"),
        ),
        (
            "requests/empty.yaml",
            &request("empty", "2026-11-22T12:00:00Z", "2026-11-22T12:00:00Z"),
        ),
        (
            "requests/bad-date.yaml",
            &request("bad-date", "yesterday", "2026-11-22T12:00:00Z"),
        ),
    ]);
    assert_errors(
        &repo,
        &[
            "requests/bad-date.yaml:8:11: spec.filter.from: \"yesterday\" is not an RFC 3339 timestamp (e.g. 2026-11-22T00:00:00Z)",
            "requests/empty.yaml:9:9: spec.filter: the time range is empty: `to` (2026-11-22T12:00:00+00:00) must be after `from` (2026-11-22T12:00:00+00:00)",
            "requests/inverted.yaml:9:9: spec.filter: the time range is inverted: `to` (2026-11-22T00:00:00+00:00) must be after `from` (2026-11-22T12:00:00+00:00)",
        ],
    );
}

#[test]
fn every_error_of_every_file_in_one_sorted_run() {
    let repo = Repo::new(&[
        (
            "maps/b.yaml",
            &CUSTOMERS
                .replace("name: customers", "name: b")
                .replace("state: Running", "state: Runing"),
        ),
        (
            "maps/a.yaml",
            &CUSTOMERS
                .replace("name: customers", "name: a")
                .replace("endpoint: crm", "endpoint: crn"),
        ),
        ("alerts/x.yaml", "kind: AlertRul\n"),
    ]);
    assert_errors(
        &repo,
        &[
            "alerts/x.yaml:1:7: kind: unknown kind \"AlertRul\"; expected one of Project, TableMap, AlertRule, ErrorRequest, Solution, SolutionManifest (did you mean \"AlertRule\"?)",
            "maps/a.yaml:7:28: spec.destination.endpoint: unknown endpoint \"crn\"; dualwrite.yaml defines crm, erp (did you mean \"crm\"?)",
            "maps/b.yaml:5:10: spec.state: \"Runing\" is not one of Running, Paused, Stopped (did you mean \"Running\"?)",
        ],
    );
}

#[test]
fn missing_project_file_is_an_error() {
    let repo = Repo::new(&[("maps/customers.yaml", CUSTOMERS)]);
    repo.remove("dualwrite.yaml");
    let (code, lines) = validate(&repo);
    assert_eq!(code, 1);
    assert_eq!(
        lines[0],
        "dualwrite.yaml:1:1: no dualwrite.yaml in the work tree: this is not a dualwrite config directory"
    );
}

#[test]
fn project_endpoint_must_name_exactly_one_engine() {
    let repo = Repo::new(&[]);
    repo.write(
        "dualwrite.yaml",
        &support::PROJECT.replace(
            "crm: { sqlite: { path: .dualwrite/crm.db } }",
            "crm: { postgress: { urlFromEnv: CRM_URL } }",
        ),
    );
    assert_errors(
        &repo,
        &[
            "dualwrite.yaml:7:12: spec.endpoints.crm: unknown field \"postgress\" (did you mean \"postgres\"?)",
        ],
    );
}

#[test]
fn json_and_github_outputs() {
    let repo = Repo::new(&[(
        "maps/customers.yaml",
        &CUSTOMERS.replace("state: Running", "state: Runing"),
    )]);
    let json = repo.run(&["validate", "--output", "json"]);
    assert_eq!(json.code, 1);
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["formatVersion"], 1);
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["diagnostics"][0]["path"], "maps/customers.yaml");
    assert_eq!(doc["diagnostics"][0]["line"], 5);
    assert_eq!(doc["diagnostics"][0]["col"], 10);
    assert_eq!(doc["diagnostics"][0]["hint"], "did you mean \"Running\"?");

    let gh = repo.run(&["reconcile", "--dry-run", "--output", "github"]);
    assert_eq!(gh.code, 1);
    assert_eq!(
        gh.stdout.trim_end(),
        "::error file=maps/customers.yaml,line=5,col=10,title=dualwrite::spec.state: \"Runing\" is not one of Running, Paused, Stopped (did you mean \"Running\"?)"
    );
}

#[test]
fn committed_schemas_are_fresh() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    for kind in dualwrite::config::Kind::ALL {
        let file = dir.join(kind.schema_file());
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            committed == dualwrite::config::schema::schema_text(kind),
            "{} is stale: run `cargo run -- schema` and commit it",
            file.display()
        );
    }
}

#[test]
fn repository_demo_and_examples_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [root.to_path_buf(), root.join("examples")] {
        let run = support::run_in(&dir, &["validate"], &[]);
        assert_eq!(
            run.code,
            0,
            "{}: {}{}",
            dir.display(),
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn every_yaml_example_names_its_schema() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("dualwrite.yaml")];
    for dir in [
        "maps",
        "alerts",
        "examples",
        "examples/maps",
        "examples/alerts",
        "examples/requests",
        "examples/solutions",
    ] {
        for entry in std::fs::read_dir(root.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "yaml") {
                files.push(p);
            }
        }
    }
    assert!(
        files.len() >= 8,
        "expected the demo and the examples, found {files:?}"
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("# yaml-language-server: $schema="))
            .unwrap_or_else(|| {
                panic!(
                    "{} has no `# yaml-language-server: $schema=` line",
                    f.display()
                )
            });
        let schema = f
            .parent()
            .unwrap()
            .join(line.split_once("$schema=").unwrap().1.trim());
        assert!(
            schema.is_file(),
            "{}: schema {} does not exist",
            f.display(),
            schema.display()
        );
    }
}

#[test]
fn a_broken_map_does_not_cascade_into_unknown_map_errors() {
    let alert = "apiVersion: dualwrite/v1\nkind: AlertRule\nmetadata: { name: a }\nspec:\n  maps: [customers]\n  threshold: 1\n  window: 1m\n";
    let repo = Repo::new(&[
        (
            "maps/customers.yaml",
            &CUSTOMERS.replace("state: Running", "state: Runing"),
        ),
        ("alerts/a.yaml", alert),
    ]);
    assert_errors(
        &repo,
        &[
            "maps/customers.yaml:5:10: spec.state: \"Runing\" is not one of Running, Paused, Stopped (did you mean \"Running\"?)",
        ],
    );
}

#[test]
fn yaml_1_2_scalars_yes_is_a_string_and_whole_floats_are_integers() {
    let repo = Repo::new(&[(
        "maps/customers.yaml",
        &CUSTOMERS
            .replace("key: true", "key: yes")
            .replace("  columns:", "  batchSize: 500.0\n  columns:"),
    )]);
    assert_errors(
        &repo,
        &["maps/customers.yaml:10:43: spec.columns[0].key: expected a boolean, found a string"],
    );
    repo.write(
        "maps/customers.yaml",
        &CUSTOMERS.replace("  columns:", "  batchSize: 500.0\n  columns:"),
    );
    assert_eq!(
        validate(&repo).0,
        0,
        "500.0 is the integer 500, as JSON Schema reads it"
    );
}

#[test]
fn github_annotations_name_files_from_the_repository_root() {
    let repo = Repo::new(&[]);
    let sub = repo.path().join("deploy/dualwrite");
    std::fs::create_dir_all(sub.join("maps")).unwrap();
    std::fs::write(sub.join("dualwrite.yaml"), support::PROJECT).unwrap();
    std::fs::write(
        sub.join("maps/customers.yaml"),
        CUSTOMERS.replace("state: Running", "state: Runing"),
    )
    .unwrap();
    repo.commit_all("config in a subdirectory");
    let run = support::run_in(&sub, &["validate", "--output", "github"], &[]);
    assert!(
        run.stdout
            .starts_with("::error file=deploy/dualwrite/maps/customers.yaml,line=5,col=10,"),
        "{}",
        run.stdout
    );
}

#[test]
fn a_file_that_is_not_utf8_text_is_reported_at_that_file_and_a_bom_is_accepted() {
    let repo = Repo::new(&[("maps/customers.yaml", CUSTOMERS)]);
    std::fs::create_dir_all(repo.path().join("alerts")).unwrap();
    let write = |path: &str, bytes: &[u8]| std::fs::write(repo.path().join(path), bytes).unwrap();
    // A UTF-8 byte order mark is fine.
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(
        CUSTOMERS
            .replace("name: customers", "name: with-bom")
            .bytes(),
    );
    write("maps/with-bom.yaml", &bom);
    let (code, lines) = validate(&repo);
    assert_eq!(code, 0, "{lines:?}");

    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(CUSTOMERS.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    write("maps/utf16.yaml", &utf16);
    let utf16be: Vec<u8> = CUSTOMERS
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect();
    write("alerts/utf16be.yaml", &utf16be);
    write("maps/binary.yaml", b"\x7fELF\x02\x01\x01\x00\x00\x00");
    write(
        "maps/latin1.yaml",
        b"apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: { name: caf\xe9 }\n",
    );
    std::os::unix::fs::symlink("nowhere.yaml", repo.path().join("maps/gone.yaml")).unwrap();
    assert_errors(
        &repo,
        &[
            "alerts/utf16be.yaml:1:1: the file is UTF-16 (big-endian); save it as UTF-8",
            "maps/binary.yaml:1:8: a binary file, not YAML text (a NUL byte)",
            "maps/gone.yaml:1:1: cannot read: No such file or directory (os error 2)",
            "maps/latin1.yaml:3:22: not UTF-8: byte 0xE9 cannot start or continue a character; save the file as UTF-8",
            "maps/utf16.yaml:1:1: the file is UTF-16 (little-endian, with a byte order mark); save it as UTF-8",
        ],
    );
    // The same from a git commit (`--revision`), read without the work tree.
    repo.remove("maps/gone.yaml");
    repo.commit_all("files that are not UTF-8 text");
    repo.remove("maps/latin1.yaml");
    let run = repo.run(&["validate", "--revision", "HEAD"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("maps/latin1.yaml:3:22: not UTF-8: byte 0xE9")
            && run.stdout.contains("maps/binary.yaml:1:8: a binary file")
            && run.stdout.ends_with("4 errors found\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn out_of_range_numbers_are_reported_at_their_own_line_and_column() {
    let repo = Repo::new(&[
        ("maps/customers.yaml", CUSTOMERS),
        (
            "alerts/huge.yaml",
            &ALERT.replace("threshold: 10", "threshold: 1e20"),
        ),
        (
            "maps/batch.yaml",
            &CUSTOMERS.replace("name: customers", "name: batch").replace(
                "  state: Running\n",
                "  state: Running\n  batchSize: 99999999999\n",
            ),
        ),
    ]);
    repo.write(
        "dualwrite.yaml",
        &support::PROJECT.replace("host: localhost,", "host: localhost, port: 70000,"),
    );
    assert_errors(
        &repo,
        &[
            "alerts/huge.yaml:7:14: spec.threshold: 1e+20 is too large: the maximum is 4294967295",
            "dualwrite.yaml:9:36: spec.notifications.smtp.port: 70000 is too large: the maximum is 65535",
            "maps/batch.yaml:6:14: spec.batchSize: 99999999999 is too large: the maximum is 100000",
        ],
    );
}

#[test]
fn control_characters_in_paths_names_and_addresses_are_refused() {
    let repo = Repo::new(&[
        (
            "maps/customers.yaml",
            &CUSTOMERS.replace("team: finance", "team: \"fin\\e-ance\""),
        ),
        (
            "alerts/rule.yaml",
            &ALERT.replace("id2@example.com", "id2@exa\\u0001mple.com"),
        ),
    ]);
    repo.write(
        "dualwrite.yaml",
        &support::PROJECT
            .replace("path: .dualwrite/erp.db", "path: \"erp\\0.db\"")
            .replace(
                "from: dualwrite@example.com",
                "from: \"dual\\twrite@example.com\"",
            ),
    );
    let refused = "holds a control character";
    let rest = "paths, names and addresses may not";
    assert_errors(
        &repo,
        &[
            &format!(
                "alerts/rule.yaml:9:20: spec.notify.email: \"id1@example.com, id2@exa\\u{{1}}mple.com\" {refused} (U+0001, character 25): {rest}"
            ),
            &format!(
                "dualwrite.yaml:6:28: spec.endpoints.erp.sqlite.path: \"erp\\0.db\" {refused} (U+0000, character 4): {rest}"
            ),
            &format!(
                "dualwrite.yaml:9:36: spec.notifications.smtp.from: \"dual\\twrite@example.com\" {refused} (U+0009, character 5): {rest}"
            ),
            &format!(
                "maps/customers.yaml:3:46: metadata.labels.team: \"fin\\u{{1b}}-ance\" {refused} (U+001B, character 4): {rest}"
            ),
        ],
    );
}
