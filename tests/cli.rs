//! One command-line convention, checked on the output as a user sees it: `--output text|json`
//! (`-o`) on every listing, `github` only where it means something, an unknown map is exit 1
//! with the same message in every command, usage errors are exit 1, and colours only on
//! request or on a terminal (`--color`, `NO_COLOR`).

mod support;

use support::{CUSTOMERS, Repo, run_in};

fn repo() -> Repo {
    let repo = Repo::new(&[("maps/customers.yaml", CUSTOMERS)]);
    repo.sqlite_apps(&[(1, "Ada")]);
    repo
}

#[test]
fn an_unknown_map_is_exit_1_with_one_message_in_every_command() {
    let repo = repo();
    let message = "dualwrite: no map named \"nosuch\" in the config (maps: customers)\n";
    for args in [
        &["status", "nosuch"][..],
        &["logs", "nosuch"],
        &["resume", "nosuch"],
        &["errors", "list", "--map", "nosuch"],
        &["errors", "retry", "--map", "nosuch"],
        &["errors", "dismiss", "--map", "nosuch", "--apply"],
    ] {
        let run = repo.run(args);
        assert_eq!((run.code, run.stdout.as_str()), (1, ""), "{args:?}");
        assert_eq!(run.stderr, message, "{args:?}");
    }
    assert!(!repo.path().join("requests").exists());
}

#[test]
fn every_listing_takes_output_text_or_json_and_github_only_where_it_means_something() {
    let repo = repo();
    assert_eq!(repo.run(&["reconcile"]).code, 0);
    for args in [
        &["status", "-o", "json"][..],
        &["status", "--output", "json"],
        &["errors", "list", "-o", "json"],
        &["solution", "list", "-o", "json"],
    ] {
        let run = repo.run(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        let v: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", run.stdout));
        assert!(v.is_object(), "{args:?}");
    }
    // GitHub annotations mean something for validate and the dry-run only.
    for args in [
        &["status", "--output", "github"][..],
        &["errors", "list", "--output", "github"],
    ] {
        let run = repo.run(args);
        assert_eq!(run.code, 1, "{args:?}");
        assert!(
            run.stderr
                .contains("invalid value 'github' for '--output <OUTPUT>'")
                && run.stderr.contains("[possible values: text, json]"),
            "{args:?}: {}",
            run.stderr
        );
    }
    for args in [
        &["validate", "-o", "github"][..],
        &["reconcile", "--dry-run", "--output", "github"],
    ] {
        let run = repo.run(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
    // logs: --output jsonl|csv (--format still accepted), -o FILE.
    let csv = repo.run(&["logs", "customers", "--output", "csv"]);
    assert!(
        csv.stdout.starts_with("at,map,event,message\n"),
        "{}",
        csv.stdout
    );
    let alias = repo.run(&["logs", "customers", "--format", "csv"]);
    assert_eq!(alias.stdout, csv.stdout);
    // Any usage error is invalid input: exit 1.
    assert_eq!(repo.run(&["status", "--nope"]).code, 1);
    assert_eq!(repo.run(&["--help"]).code, 0);
}

#[test]
fn colours_only_when_asked_or_on_a_terminal_and_never_with_no_color() {
    let repo = repo();
    assert_eq!(repo.run(&["reconcile"]).code, 0);
    // Standard output is a pipe here: auto means none.
    let plain = repo.run(&["status"]);
    assert!(!plain.stdout.contains('\u{1b}'), "{}", plain.stdout);
    let never = repo.run(&["--color", "never", "status"]);
    assert_eq!(never.stdout, plain.stdout);
    let always = repo.run(&["status", "--color", "always"]);
    assert!(
        always.stdout.contains("\u{1b}[32mRunning     \u{1b}[0m"),
        "{:?}",
        always.stdout
    );
    let no_color = run_in(repo.path(), &["status"], &[("NO_COLOR", "1")]);
    assert!(!no_color.stdout.contains('\u{1b}'));
    let reconcile = repo.run(&["reconcile", "--color", "always"]);
    assert!(
        reconcile
            .stdout
            .contains("map customers: \u{1b}[32mRunning\u{1b}[0m\n"),
        "{:?}",
        reconcile.stdout
    );
}
