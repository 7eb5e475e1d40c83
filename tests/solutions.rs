//! Solutions (ALM), end to end through the real binary with real zip files and real git
//! repositories: the field's walk (customize in test, export managed with a raised version,
//! import into production, commit, reconcile runs the maps between a SQLite app and
//! PostgreSQL; a managed edit refused; a newer version's diff; an older one refused;
//! uninstall), determinism, every bad package, signatures, map versions, backup and restore.

mod common;
mod support;

use std::io::{Cursor, Read, Write};
use std::path::Path;

use common::{TestDb, unique_table, with_timeout};
use support::{CUSTOMERS, Repo, Run, run_in};

const SOLUTION: &str = "\
apiVersion: dualwrite/v1
kind: Solution
metadata: { name: finance-core }
spec:
  publisher: { name: contoso, displayName: Contoso Ltd }
  version: 1.0.0
  description: Customers between the ERP and the CRM
  components: { maps: [customers], alerts: [customers-errors] }
  requires: { endpoints: [erp, crm] }
";

const RULE: &str = "\
apiVersion: dualwrite/v1
kind: AlertRule
metadata: { name: customers-errors }
spec:
  maps: [customers]
  threshold: 10
  window: 15m
  action: Pause
";

/// A test environment: the map, its alert rule and the Solution that packages them.
fn test_env() -> Repo {
    let repo = Repo::new(&[
        ("maps/customers.yaml", CUSTOMERS),
        ("alerts/customers-errors.yaml", RULE),
        ("solutions/finance-core.yaml", SOLUTION),
    ]);
    repo.commit_all("test environment");
    repo
}

fn ok(run: &Run, what: &str) {
    assert_eq!(
        run.code, 0,
        "{what} failed:\n{}\n{}",
        run.stdout, run.stderr
    );
}

fn refused(run: &Run, words: &[&str]) {
    assert_eq!(
        run.code, 1,
        "expected a refusal:\n{}\n{}",
        run.stdout, run.stderr
    );
    for w in words {
        assert!(
            run.stderr.contains(w),
            "stderr lacks {w:?}:\n{}",
            run.stderr
        );
    }
}

/// Exports from `repo` into a file in `out`; returns the path.
fn export(repo: &Repo, out: &Path, file: &str, args: &[&str]) -> String {
    let path = out.join(file).display().to_string();
    let mut all = vec!["solution", "export"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", &path]);
    ok(&repo.run(&all), "export");
    path
}

fn entries(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    (0..archive.len())
        .map(|i| {
            let mut f = archive.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().unwrap().to_string(), data)
        })
        .collect()
}

fn rezip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn sha(data: &[u8]) -> String {
    hex::encode(sha2::Digest::finalize(
        <sha2::Sha256 as sha2::Digest>::new_with_prefix(data),
    ))
}

#[test]
fn export_checks_for_issues_first_and_writes_nothing_from_an_invalid_repo() {
    let repo = test_env();
    repo.write(
        "solutions/finance-core.yaml",
        &SOLUTION.replace("maps: [customers]", "maps: [customers, ordres]"),
    );
    let out = tempfile::tempdir().unwrap();
    let zip = out.path().join("x.zip");
    let run = repo.run(&[
        "solution",
        "export",
        "finance-core",
        "--managed",
        "-o",
        zip.to_str().unwrap(),
    ]);
    refused(
        &run,
        &[
            "nothing was exported",
            "solutions/finance-core.yaml:8:",
            "unknown map \"ordres\"",
        ],
    );
    assert!(!zip.exists());
    // A component that is itself invalid stops it too, with the validator's message.
    repo.write("solutions/finance-core.yaml", SOLUTION);
    repo.write(
        "maps/customers.yaml",
        &CUSTOMERS.replace("endpoint: crm", "endpoint: crn"),
    );
    let run = repo.run(&[
        "solution",
        "export",
        "finance-core",
        "--managed",
        "-o",
        zip.to_str().unwrap(),
    ]);
    refused(
        &run,
        &["maps/customers.yaml:7:", "unknown endpoint \"crn\""],
    );
    assert!(!zip.exists());
}

#[test]
fn export_is_deterministic() {
    let repo = test_env();
    let out = tempfile::tempdir().unwrap();
    let a = export(&repo, out.path(), "a.zip", &["finance-core", "--managed"]);
    // Touch every file: timestamps must not leak into the package.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for f in ["maps/customers.yaml", "alerts/customers-errors.yaml"] {
        let text = std::fs::read_to_string(repo.path().join(f)).unwrap();
        repo.write(f, &text);
    }
    let b = export(&repo, out.path(), "b.zip", &["finance-core", "--managed"]);
    let (a, b) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(a, b, "the same input must give the same bytes");
    let names: Vec<String> = entries(&a).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "solution.yaml",
            "alerts/customers-errors.yaml",
            "maps/customers.yaml"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn alm_walk_from_test_to_production_with_sqlite_and_postgres() {
    with_timeout(alm_walk()).await;
}

async fn alm_walk() {
    let Some(mut pg) = TestDb::postgres().await else {
        return;
    };
    let table = unique_table("alm");
    pg.plain
        .exec(&format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name TEXT, city TEXT)"
        ))
        .await;
    pg.on_drop(format!("DROP TABLE IF EXISTS {table}"));
    let url = match &pg.spec {
        dualwrite::endpoint::EndpointSpec::Postgres { url } => url.clone(),
        _ => unreachable!(),
    };
    let project = "\
apiVersion: dualwrite/v1
kind: Project
metadata: { name: contoso }
spec:
  endpoints:
    erp: { sqlite: { path: .dualwrite/erp.db } }
    crm: { postgres: { urlFromEnv: CRM_URL } }
";
    let map = format!(
        "apiVersion: dualwrite/v1\nkind: TableMap\nmetadata: {{ name: customers }}\nspec:\n  source: {{ endpoint: erp, table: customers }}\n  destination: {{ endpoint: crm, table: {table} }}\n  columns:\n    - {{ source: id, destination: id, key: true }}\n    - {{ source: name, destination: name }}\n"
    );
    // Test: the map is customized (a column added), then exported managed with a raised version.
    let test = Repo::new(&[
        ("maps/customers.yaml", &map),
        ("alerts/customers-errors.yaml", RULE),
        ("solutions/finance-core.yaml", SOLUTION),
    ]);
    test.write("dualwrite.yaml", project);
    test.commit_all("finance-core 1.0.0");
    let customized = format!("{map}    - {{ source: city, destination: city }}\n");
    test.write("maps/customers.yaml", &customized);
    test.commit_all("customize customers: add city");
    let out = tempfile::tempdir().unwrap();
    let v11 = export(
        &test,
        out.path(),
        "finance-core-1.1.0.zip",
        &["finance-core", "--managed", "--version", "1.1.0"],
    );

    // Production: another repository, with its own app data.
    let prod = Repo::new(&[]);
    prod.write("dualwrite.yaml", project);
    prod.write(".gitignore", ".dualwrite/\n");
    std::fs::create_dir_all(prod.path().join(".dualwrite")).unwrap();
    let erp = rusqlite::Connection::open(prod.path().join(".dualwrite/erp.db")).unwrap();
    erp.execute_batch(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT);
         INSERT INTO customers VALUES (1, 'Ada', 'London'), (2, 'Grace', 'Arlington');",
    )
    .unwrap();
    prod.commit_all("production");
    let env = [("CRM_URL", url.as_str())];
    let run = run_in(
        prod.path(),
        &["solution", "import", &v11, "--dry-run"],
        &env,
    );
    ok(&run, "import --dry-run");
    assert!(
        run.stdout
            .contains("+ added solutions/contoso/finance-core/maps/customers.yaml")
    );
    assert!(run.stdout.contains("nothing was written"));
    assert!(!prod.path().join("solutions").exists());
    ok(
        &run_in(prod.path(), &["solution", "import", &v11], &env),
        "import",
    );
    // Apply Solution: commit, then reconcile runs the imported map.
    prod.commit_all("apply finance-core 1.1.0");
    ok(&prod.run(&["validate"]), "validate");
    // CI reads the committed config: the managed solution is read from git as well.
    let run = prod.run(&["validate", "--revision", "HEAD"]);
    ok(&run, "validate --revision HEAD");
    assert!(
        run.stdout.contains("1 map(s), 1 alert rule(s)"),
        "{}",
        run.stdout
    );
    let run = run_in(prod.path(), &["reconcile"], &env);
    ok(&run, "reconcile");
    let common::Plain::Postgres(client) = &pg.plain else {
        unreachable!()
    };
    let rows: Vec<Vec<String>> = client
        .query(
            &format!("SELECT id::text, name, city FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (0..3).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    assert_eq!(
        rows,
        [
            ["1", "Ada", "London"].map(String::from).to_vec(),
            ["2", "Grace", "Arlington"].map(String::from).to_vec()
        ]
    );
    let status =
        std::fs::read_to_string(prod.path().join("status/solutions/finance-core.yaml")).unwrap();
    assert!(
        status.contains("version: \"1.1.0\"") || status.contains("version: 1.1.0"),
        "{status}"
    );
    assert!(status.contains("inForce: true"), "{status}");
    let list = prod.run(&["solution", "list", "--output", "json"]);
    ok(&list, "list");
    let doc: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(doc["solutions"][0]["managed"], true);
    assert_eq!(doc["solutions"][0]["maps"]["customers"]["inForce"], true);

    // A managed component cannot be edited.
    let managed = "solutions/contoso/finance-core/maps/customers.yaml";
    let original = std::fs::read_to_string(prod.path().join(managed)).unwrap();
    prod.write(
        managed,
        &original.replace("name: customers", "name: customers\n  labels: { x: y }"),
    );
    let run = prod.run(&["validate"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains(managed), "{}", run.stdout);
    assert!(
        run.stdout.contains("managed solution finance-core"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("mapVersions"), "{}", run.stdout);
    prod.git(&["checkout", "--", managed]);

    // A newer version: its plan shows the diff, then the reconcile dry-run the mapping change.
    test.write(
        "maps/customers.yaml",
        &customized
            .replace(
                "key: true }",
                "key: true }\n    - { destination: origin, default: erp }",
            )
            .replace(
                "origin, default: erp }",
                "origin, default: erp, direction: SourceToDestination }",
            ),
    );
    test.commit_all("customers: origin");
    let v12 = export(
        &test,
        out.path(),
        "finance-core-1.2.0.zip",
        &["finance-core", "--managed", "--version", "1.2.0"],
    );
    pg.plain
        .exec(&format!("ALTER TABLE {table} ADD COLUMN origin TEXT"))
        .await;
    let run = run_in(
        prod.path(),
        &["solution", "import", &v12, "--dry-run"],
        &env,
    );
    ok(&run, "import 1.2.0 --dry-run");
    assert!(run.stdout.contains("replacing 1.1.0"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("~ changed solutions/contoso/finance-core/maps/customers.yaml")
    );
    assert!(
        run.stdout.contains("+    - { destination: origin"),
        "{}",
        run.stdout
    );
    ok(
        &run_in(prod.path(), &["solution", "import", &v12], &env),
        "import 1.2.0",
    );
    prod.commit_all("apply finance-core 1.2.0");
    let run = run_in(prod.path(), &["reconcile", "--dry-run"], &env);
    ok(&run, "reconcile --dry-run");
    assert!(run.stdout.contains("mapping changed"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("defined by solution finance-core 1.2.0 (contoso)")
    );

    // An older (or the same) version is refused without --force, and nothing is written.
    let before = prod.snapshot();
    for old in [&v11, &v12] {
        let run = run_in(prod.path(), &["solution", "import", old], &env);
        refused(
            &run,
            &["1.2.0 is installed", "--force", "nothing was written"],
        );
        assert_eq!(prod.snapshot(), before);
    }
    let run = run_in(
        prod.path(),
        &["solution", "import", &v11, "--force", "--dry-run"],
        &env,
    );
    ok(&run, "import --force --dry-run");

    // Uninstall: the dry-run says what leaves, then the maps are gone.
    let run = prod.run(&["solution", "uninstall", "finance-core", "--dry-run"]);
    ok(&run, "uninstall --dry-run");
    assert!(
        run.stdout
            .contains("- removed solutions/contoso/finance-core/maps/customers.yaml")
    );
    assert!(run.stdout.contains("map customers leaves the config"));
    assert!(
        run.stdout
            .contains("alert rule customers-errors leaves the config")
    );
    assert_eq!(prod.snapshot(), before);
    ok(
        &prod.run(&["solution", "uninstall", "finance-core"]),
        "uninstall",
    );
    assert!(!prod.path().join("solutions/contoso").exists());
    prod.commit_all("uninstall finance-core");
    let run = run_in(prod.path(), &["reconcile", "--dry-run"], &env);
    ok(&run, "dry-run after uninstall");
    assert!(
        run.stdout.contains("removed from the config"),
        "{}",
        run.stdout
    );
    ok(
        &run_in(prod.path(), &["reconcile"], &env),
        "reconcile after uninstall",
    );
    assert!(!prod.path().join("status/maps/customers.yaml").exists());
    assert!(
        !prod
            .path()
            .join("status/solutions/finance-core.yaml")
            .exists()
    );
}

/// A package exported from the test environment, as entries to tamper with.
fn good_package() -> (Repo, Vec<(String, Vec<u8>)>) {
    let repo = test_env();
    let out = tempfile::tempdir().unwrap();
    let path = export(&repo, out.path(), "p.zip", &["finance-core", "--managed"]);
    let e = entries(&std::fs::read(path).unwrap());
    (repo, e)
}

fn manifest_with(
    entries: &[(String, Vec<u8>)],
    edit: impl Fn(&str) -> String,
) -> Vec<(String, Vec<u8>)> {
    entries
        .iter()
        .map(|(n, d)| {
            if n == "solution.yaml" {
                (
                    n.clone(),
                    edit(std::str::from_utf8(d).unwrap()).into_bytes(),
                )
            } else {
                (n.clone(), d.clone())
            }
        })
        .collect()
}

#[test]
fn bad_packages_are_refused_with_a_clear_error_and_nothing_written() {
    let (_, good) = good_package();
    let map_sha = sha(&good
        .iter()
        .find(|(n, _)| n == "maps/customers.yaml")
        .unwrap()
        .1);
    let mut cases: Vec<(&str, Vec<u8>, Vec<&str>)> = Vec::new();
    let mut escape = good.clone();
    escape.push(("../evil.yaml".into(), b"x".to_vec()));
    cases.push(("dot-dot", rezip(&escape), vec!["escapes the target folder"]));
    let mut absolute = good.clone();
    absolute.push(("/etc/evil.yaml".into(), b"x".to_vec()));
    cases.push((
        "absolute",
        rezip(&absolute),
        vec!["escapes the target folder"],
    ));
    let symlink = {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in &good {
            w.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.add_symlink(
            "maps/link.yaml",
            "/etc/passwd",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        w.finish().unwrap().into_inner()
    };
    cases.push(("symlink", symlink, vec!["symbolic links are refused"]));
    let tampered: Vec<_> = good
        .iter()
        .map(|(n, d)| {
            let d = if n == "maps/customers.yaml" {
                String::from_utf8(d.clone())
                    .unwrap()
                    .replace("account", "accounts")
                    .into_bytes()
            } else {
                d.clone()
            };
            (n.clone(), d)
        })
        .collect();
    cases.push((
        "tampered",
        rezip(&tampered),
        vec!["maps/customers.yaml", "sha256", "altered"],
    ));
    let missing: Vec<_> = good
        .iter()
        .filter(|(n, _)| n != "alerts/customers-errors.yaml")
        .cloned()
        .collect();
    cases.push((
        "missing file",
        rezip(&missing),
        vec!["lists alerts/customers-errors.yaml", "not in the package"],
    ));
    let mut bomb = good.clone();
    bomb.push(("maps/huge.yaml".into(), vec![b' '; 5 * 1024 * 1024]));
    cases.push((
        "bomb",
        rezip(&bomb),
        vec!["maps/huge.yaml", "more than the 4194304 accepted per file"],
    ));
    let many: Vec<_> = (0..20_001)
        .map(|i| (format!("maps/m{i}.yaml"), Vec::new()))
        .collect();
    cases.push((
        "entries",
        rezip(&many),
        vec!["20001 entries", "at most 20000"],
    ));
    cases.push((
        "apiVersion",
        rezip(&manifest_with(&good, |m| {
            m.replace("dualwrite/v1", "dualwrite/v2")
        })),
        vec!["apiVersion \"dualwrite/v2\" is not supported"],
    ));
    cases.push((
        "publisher",
        rezip(&manifest_with(&good, |m| {
            m.replace("name: contoso", "name: Contoso_Ltd")
        })),
        vec!["publisher name \"Contoso_Ltd\" is not a lowercase DNS-1123 label"],
    ));
    cases.push((
        "name",
        rezip(&manifest_with(&good, |m| {
            m.replacen("name: finance-core", "name: finance.core", 1)
        })),
        vec!["solution name \"finance.core\""],
    ));
    cases.push((
        "unlisted",
        rezip(&manifest_with(&good, |m| {
            m.replace(&format!("  maps/customers.yaml: {map_sha}\n"), "")
        })),
        vec!["maps/customers.yaml is in the package but not listed"],
    ));
    cases.push((
        "not a zip",
        b"PK\x03\x04 nonsense".to_vec(),
        vec!["not a readable zip file"],
    ));
    let prod = Repo::new(&[]);
    prod.write(
        "dualwrite.yaml",
        &support::PROJECT.replace("    crm: { sqlite: { path: .dualwrite/crm.db } }\n", ""),
    );
    prod.commit_all("production without crm");
    let before = prod.snapshot();
    let dir = tempfile::tempdir().unwrap();
    for (what, bytes, words) in cases {
        let path = dir.path().join(format!("{what}.zip"));
        std::fs::write(&path, bytes).unwrap();
        let run = prod.run(&["solution", "import", path.to_str().unwrap()]);
        assert_eq!(run.code, 1, "{what}: {}{}", run.stdout, run.stderr);
        for w in words {
            assert!(
                run.stderr.contains(w),
                "{what}: stderr lacks {w:?}: {}",
                run.stderr
            );
        }
        assert!(
            run.stderr.contains("nothing was written"),
            "{what}: {}",
            run.stderr
        );
        assert_eq!(prod.snapshot(), before, "{what} wrote something");
    }
    // A good package, but the project lacks an endpoint it requires: named.
    let path = dir.path().join("good.zip");
    std::fs::write(&path, rezip(&good)).unwrap();
    let run = prod.run(&["solution", "import", path.to_str().unwrap()]);
    refused(
        &run,
        &[
            "lacks endpoint(s) the solution requires: crm",
            "nothing was written",
        ],
    );
    assert_eq!(prod.snapshot(), before);
}

#[test]
fn an_import_after_which_the_repo_would_not_validate_is_refused() {
    let (_, good) = good_package();
    let prod = Repo::new(&[(
        "requests/retry.yaml",
        "apiVersion: dualwrite/v1\nkind: ErrorRequest\nmetadata: { name: retry }\nspec: { map: customers, action: Retry }\n",
    )]);
    // A local alert rule of the same name as the package's, in another file: a duplicate.
    prod.write(
        "alerts/local.yaml",
        &RULE.replace("maps: [customers]", "maps: [other]"),
    );
    prod.write(
        "maps/other.yaml",
        &CUSTOMERS
            .replace("name: customers", "name: other")
            .replace("table: account", "table: other"),
    );
    let before = prod.snapshot();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.zip");
    std::fs::write(&path, rezip(&good)).unwrap();
    let run = prod.run(&["solution", "import", path.to_str().unwrap()]);
    refused(
        &run,
        &[
            "would not validate",
            "duplicate AlertRule name \"customers-errors\"",
        ],
    );
    assert_eq!(prod.snapshot(), before);
}

#[test]
fn signed_packages_from_trusted_publishers() {
    let key = "07".repeat(32);
    let wrong = "08".repeat(32);
    let test = test_env();
    let public = run_in(
        test.path(),
        &["solution", "public-key", "--key-from-env", "SIGNING_KEY"],
        &[("SIGNING_KEY", &key)],
    );
    ok(&public, "public-key");
    let public = public.stdout.trim().to_string();
    assert_eq!(public.len(), 64);
    assert!(!public.contains(&key));
    let out = tempfile::tempdir().unwrap();
    let zip_of = |file: &str, env: &[(&str, &str)], sign: bool| {
        let path = out.path().join(file).display().to_string();
        let mut args = vec![
            "solution",
            "export",
            "finance-core",
            "--managed",
            "-o",
            &path,
        ];
        if sign {
            args.extend(["--sign-key-from-env", "SIGNING_KEY"]);
        }
        let run = run_in(test.path(), &args, env);
        ok(&run, "export");
        assert!(!run.stdout.contains(&key) && !run.stderr.contains(&key));
        path
    };
    let unsigned = zip_of("unsigned.zip", &[], false);
    let signed = zip_of("signed.zip", &[("SIGNING_KEY", &key)], true);
    let forged = zip_of("forged.zip", &[("SIGNING_KEY", &wrong)], true);
    assert!(
        entries(&std::fs::read(&signed).unwrap())
            .iter()
            .any(|(n, _)| n == "solution.sig")
    );
    let missing = run_in(
        test.path(),
        &[
            "solution",
            "export",
            "finance-core",
            "--managed",
            "--sign-key-from-env",
            "NO_SUCH_VAR",
            "-o",
            "x.zip",
        ],
        &[],
    );
    refused(&missing, &["NO_SUCH_VAR is not set"]);

    let prod = Repo::new(&[]);
    prod.write(
        "dualwrite.yaml",
        &format!(
            "{}  trustedPublishers:\n    contoso: {public}\n",
            support::PROJECT
        ),
    );
    ok(&prod.run(&["validate"]), "validate with trustedPublishers");
    let before = prod.snapshot();
    refused(
        &prod.run(&["solution", "import", &unsigned]),
        &["not signed", "contoso", "nothing was written"],
    );
    refused(
        &prod.run(&["solution", "import", &forged]),
        &["signature does not match", "nothing was written"],
    );
    // A signed package whose file was altered after signing.
    let altered = manifest_with(&entries(&std::fs::read(&signed).unwrap()), |m| {
        m.replace("Customers between", "Clients between")
    });
    let altered_path = out.path().join("altered.zip");
    std::fs::write(&altered_path, rezip(&altered)).unwrap();
    refused(
        &prod.run(&["solution", "import", altered_path.to_str().unwrap()]),
        &["signature does not match"],
    );
    assert_eq!(prod.snapshot(), before);
    let run = prod.run(&["solution", "import", &signed]);
    ok(&run, "signed import");
    assert!(run.stdout.contains("signature verified"));
    // A publisher not listed may import unsigned.
    let other = Repo::new(&[]);
    ok(
        &other.run(&["solution", "import", &unsigned]),
        "untrusted-publisher import",
    );
}

#[test]
fn map_versions_conflict_until_chosen_and_switching_is_a_mapping_change() {
    let test = test_env();
    let out = tempfile::tempdir().unwrap();
    let pkg = export(&test, out.path(), "p.zip", &["finance-core", "--managed"]);
    // Production has its own customers map (another column set) and runs it.
    let local = CUSTOMERS.replace("    - { source: name, destination: name }\n", "");
    let prod = Repo::new(&[("maps/customers.yaml", &local)]);
    prod.write(".gitignore", ".dualwrite/\n");
    std::fs::create_dir_all(prod.path().join(".dualwrite")).unwrap();
    for (db, table) in [("erp", "customers"), ("crm", "account")] {
        let conn =
            rusqlite::Connection::open(prod.path().join(format!(".dualwrite/{db}.db"))).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, name TEXT)"
        ))
        .unwrap();
    }
    prod.commit_all("local customers");
    ok(&prod.run(&["reconcile"]), "reconcile local");
    // The import itself is refused: the repo would hold two customers and no choice.
    let run = prod.run(&["solution", "import", &pkg]);
    refused(
        &run,
        &[
            "would not validate",
            "has 2 definitions",
            "maps/customers.yaml",
            "solution finance-core 1.0.0 (contoso)",
            "mapVersions",
        ],
    );
    // Choose local first: the import goes through and the local map stays in force.
    let project = format!(
        "{}  mapVersions:\n    customers: {{ local: true }}\n",
        support::PROJECT
    );
    prod.write("dualwrite.yaml", &project);
    ok(
        &prod.run(&["solution", "import", &pkg]),
        "import with a choice",
    );
    let list = prod.run(&["solution", "list"]);
    ok(&list, "list");
    assert!(
        list.stdout
            .contains("map customers: not in force: maps/customers.yaml is"),
        "{}",
        list.stdout
    );
    let run = prod.run(&["reconcile", "--dry-run"]);
    ok(&run, "dry-run");
    assert!(!run.stdout.contains("mapping changed"), "{}", run.stdout);
    // Without a choice, validate names both places.
    prod.write("dualwrite.yaml", support::PROJECT);
    let run = prod.run(&["validate"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("map \"customers\" has 2 definitions: maps/customers.yaml and solution finance-core 1.0.0 (contoso) at solutions/contoso/finance-core/maps/customers.yaml"), "{}", run.stdout);
    // A choice that matches nothing is named.
    prod.write(
        "dualwrite.yaml",
        &format!(
            "{}  mapVersions:\n    customers: {{ publisher: fabrikam }}\n",
            support::PROJECT
        ),
    );
    let run = prod.run(&["validate"]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("dualwrite.yaml:"), "{}", run.stdout);
    assert!(
        run.stdout.contains("matches none of its definitions"),
        "{}",
        run.stdout
    );
    // Switch to the solution's version: a mapping change in the dry-run, said where it comes from.
    prod.write(
        "dualwrite.yaml",
        &format!(
            "{}  mapVersions:\n    customers: {{ publisher: contoso, version: 1.0.0 }}\n",
            support::PROJECT
        ),
    );
    let run = prod.run(&["reconcile", "--dry-run", "--output", "json"]);
    ok(&run, "dry-run json");
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let map = &doc["plan"]["maps"][0];
    assert_eq!(map["name"], "customers");
    assert!(
        map["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "mappingChanged"),
        "{map}"
    );
    assert!(
        map["definedBy"]
            .as_str()
            .unwrap()
            .starts_with("solution finance-core 1.0.0 (contoso)"),
        "{map}"
    );
    let list = prod.run(&["solution", "list", "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(doc["solutions"][0]["maps"]["customers"]["inForce"], true);
    ok(
        &prod.run(&["reconcile"]),
        "reconcile with the solution's version",
    );
    let status =
        std::fs::read_to_string(prod.path().join("status/solutions/finance-core.yaml")).unwrap();
    assert!(
        status.contains("kind: SolutionStatus") && status.contains("inForce: true"),
        "{status}"
    );
}

#[test]
fn backup_and_restore_give_the_same_plan() {
    let test = test_env();
    let out = tempfile::tempdir().unwrap();
    let backup = export(&test, out.path(), "backup.zip", &["--all", "--unmanaged"]);
    let e = entries(&std::fs::read(&backup).unwrap());
    let manifest = String::from_utf8(e[0].1.clone()).unwrap();
    assert!(
        manifest.contains("name: backup")
            && manifest.contains("1.0.0")
            && manifest.contains("managed: false"),
        "{manifest}"
    );
    let restored = Repo::new(&[]);
    let run = restored.run(&["solution", "import", &backup]);
    ok(&run, "restore");
    assert!(
        run.stdout.contains("+ added maps/customers.yaml"),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(restored.path().join("maps/customers.yaml")).unwrap(),
        CUSTOMERS
    );
    let plan = |repo: &Repo| {
        let run = repo.run(&["reconcile", "--dry-run", "--output", "json"]);
        ok(&run, "dry-run");
        let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        doc["plan"].clone()
    };
    assert_eq!(plan(&test), plan(&restored));
    // Importing an unmanaged package over a local customization overwrites it, and says so.
    restored.write(
        "maps/customers.yaml",
        &CUSTOMERS.replace("table: account", "table: accounts"),
    );
    let run = restored.run(&["solution", "import", &backup, "--dry-run"]);
    ok(&run, "overwrite dry-run");
    assert!(
        run.stdout.contains("! overwritten maps/customers.yaml"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("-  destination: { endpoint: crm, table: accounts }"),
        "{}",
        run.stdout
    );
}

#[test]
fn solution_resources_are_validated_with_positions() {
    let repo = test_env();
    repo.write(
        "solutions/finance-core.yaml",
        &SOLUTION
            .replace("version: 1.0.0", "version: v1.0.0")
            .replace("name: contoso,", "name: Contoso,")
            .replace("endpoints: [erp, crm]", "endpoints: [erp, crn]"),
    );
    repo.write(
        "maps/solution.yaml",
        &SOLUTION.replace("finance-core", "other"),
    );
    let run = repo.run(&["validate"]);
    assert_eq!(run.code, 1);
    for expected in [
        "maps/solution.yaml:2:7: kind: a Solution belongs in solutions/<name>.yaml",
        "solutions/finance-core.yaml:5:22: spec.publisher.name: \"Contoso\" is not a valid name",
        "solutions/finance-core.yaml:6:12: spec.version: \"v1.0.0\" is not a semantic version",
    ] {
        assert!(
            run.stdout.contains(expected),
            "lacks {expected:?}:\n{}",
            run.stdout
        );
    }
    // Semantic checks need a schema-valid document: the endpoint is named once it is.
    repo.write(
        "solutions/finance-core.yaml",
        &SOLUTION.replace("endpoints: [erp, crm]", "endpoints: [erp, crn]"),
    );
    repo.remove("maps/solution.yaml");
    let run = repo.run(&["validate"]);
    assert!(
        run.stdout.contains("solutions/finance-core.yaml:9:32: spec.requires.endpoints[1]: unknown endpoint \"crn\" (did you mean \"crm\"?)"),
        "{}",
        run.stdout
    );
}
