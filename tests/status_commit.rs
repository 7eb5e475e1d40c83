//! The GitOps loop closed: `--commit-status` commits the status files a pass changed (a
//! machine author, only status/), `--push` pushes them to a real bare repository on disk and
//! replays them when the remote moved, `--status-branch` keeps them off the config branch,
//! and a fresh clone's dry-run (`--status-from` for a status branch) plans nothing.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{CUSTOMERS, Repo, git_in as git, run_in};

/// A bare "origin" and a config repository cloned from it, with a SQLite source table of
/// three customers; the demo's `.dualwrite/` (databases, state store) stays out of git.
struct Origin {
    bare: tempfile::TempDir,
    repo: Repo,
}

impl Origin {
    fn new() -> Origin {
        let bare = tempfile::tempdir().unwrap();
        git(bare.path(), &["init", "-q", "--bare", "-b", "main"]);
        let repo = Repo::new(&[
            ("maps/customers.yaml", CUSTOMERS),
            (".gitignore", ".dualwrite/\n"),
        ]);
        repo.commit_all("config");
        repo.git(&["remote", "add", "origin", bare.path().to_str().unwrap()]);
        repo.git(&["push", "-q", "-u", "origin", "main"]);
        repo.sqlite_apps(&[(1, "Ada"), (2, "Grace"), (3, "Edsger")]);
        Origin { bare, repo }
    }

    fn url(&self) -> &str {
        self.bare.path().to_str().unwrap()
    }

    /// A fresh clone of the origin (all its branches as remote branches).
    fn clone(&self) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["clone", "-q", self.url(), "."]);
        dir
    }

    fn add_customer(&self, id: i64, name: &str) {
        let erp = rusqlite::Connection::open(self.repo.path().join(".dualwrite/erp.db")).unwrap();
        erp.execute("INSERT INTO customers VALUES (?1, ?2)", (id, name))
            .unwrap();
    }
}

/// Files a commit changes.
fn files_of(dir: &Path, commit: &str) -> Vec<String> {
    git(
        dir,
        &[
            "diff-tree",
            "--no-commit-id",
            "--name-only",
            "-r",
            "--root",
            commit,
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn committed_and_pushed_status_lets_a_fresh_clone_plan_nothing() {
    let origin = Origin::new();
    let repo = &origin.repo;
    // Before: a fresh clone knows nothing of what runs, and plans to start everything.
    let before = origin.clone();
    let plan = run_in(
        before.path(),
        &["reconcile", "--dry-run", "--detailed-exitcode"],
        &[],
    );
    assert_eq!(plan.code, 2, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout.contains("start with initial sync"),
        "{}",
        plan.stdout
    );

    // A change the user staged and has not committed stays theirs.
    repo.write("alerts/draft.yaml", "# a draft\n");
    repo.git(&["add", "alerts/draft.yaml"]);

    let run = repo.run(&["reconcile", "--commit-status", "--push"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("status committed to main as ")
            && run.stdout.contains("maps/customers")
            && run.stdout.contains(", pushed"),
        "{}",
        run.stdout
    );
    let head = git(origin.bare.path(), &["rev-parse", "main"]);
    assert_eq!(head, repo.git(&["rev-parse", "HEAD"]));
    assert_eq!(
        git(
            origin.bare.path(),
            &["log", "-1", "--format=%an <%ae>|%s", "main"]
        ),
        "dualwrite <dualwrite@localhost>|dualwrite status: maps/customers"
    );
    let files = files_of(origin.bare.path(), "main");
    assert!(
        !files.is_empty() && files.iter().all(|f| f.starts_with("status/")),
        "{files:?}"
    );
    assert_eq!(
        repo.git(&["diff", "--cached", "--name-only"]),
        "alerts/draft.yaml",
        "the user's staged change was committed or dropped"
    );
    repo.git(&["reset", "-q", "alerts/draft.yaml"]);
    repo.remove("alerts/draft.yaml");

    // After: a fresh clone's dry-run reads the committed status and plans nothing.
    let after = origin.clone();
    let plan = run_in(
        after.path(),
        &["reconcile", "--dry-run", "--detailed-exitcode"],
        &[],
    );
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .starts_with("Actual state: committed status/ files"),
        "{}",
        plan.stdout
    );

    // Nothing changed: nothing committed.
    let again = repo.run(&["reconcile", "--commit-status", "--push"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stdout.contains("status unchanged; nothing committed"),
        "{}",
        again.stdout
    );
    assert_eq!(git(origin.bare.path(), &["rev-parse", "main"]), head);

    // Someone pushes a config commit meanwhile; a new row changes the status: the push is
    // refused, the status commit is replayed on top of theirs and pushed.
    let other = origin.clone();
    std::fs::write(other.path().join("README.md"), "# ops notes\n").unwrap();
    git(other.path(), &["add", "README.md"]);
    git(other.path(), &["commit", "-q", "-m", "ops notes"]);
    git(other.path(), &["push", "-q", "origin", "main"]);
    let theirs = git(other.path(), &["rev-parse", "HEAD"]);
    origin.add_customer(4, "Barbara");
    let run = repo.run(&["reconcile", "--commit-status", "--push"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(", pushed"), "{}", run.stdout);
    let log = git(origin.bare.path(), &["log", "--format=%s", "main"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "dualwrite status: maps/customers",
            "ops notes",
            "dualwrite status: maps/customers",
            "config"
        ],
        "{log}"
    );
    assert_eq!(git(origin.bare.path(), &["rev-parse", "main~1"]), theirs);
    assert!(
        repo.path().join("README.md").exists(),
        "the rebase took their commit"
    );

    // A local commit that is not status only is never replayed: said, exit 1, nothing lost.
    let third = origin.clone();
    std::fs::write(third.path().join("NOTES.md"), "more\n").unwrap();
    git(third.path(), &["add", "NOTES.md"]);
    git(third.path(), &["commit", "-q", "-m", "more notes"]);
    git(third.path(), &["push", "-q", "origin", "main"]);
    repo.write("alerts/keep.yaml", "# mine\n");
    repo.git(&["add", "alerts/keep.yaml"]);
    repo.git(&["commit", "-q", "-m", "local config work"]);
    origin.add_customer(5, "Frances");
    let run = repo.run(&["reconcile", "--commit-status", "--push"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("the status files are written but not committed")
            && run.stderr.contains("change more than status files"),
        "{}",
        run.stderr
    );
    assert_eq!(
        repo.git(&["log", "-1", "--format=%s", "HEAD~1"]),
        "local config work"
    );
}

#[test]
fn a_status_branch_holds_only_status_and_a_clone_plans_from_it() {
    let origin = Origin::new();
    let repo = &origin.repo;
    let head = repo.git(&["rev-parse", "HEAD"]);
    let args = [
        "reconcile",
        "--commit-status",
        "--status-branch",
        "dualwrite-status",
        "--push",
    ];
    let run = repo.run(&args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("status committed to dualwrite-status as "),
        "{}",
        run.stdout
    );
    // The checked-out branch, its index and work tree are untouched.
    assert_eq!(repo.git(&["rev-parse", "HEAD"]), head);
    assert_eq!(repo.git(&["status", "--porcelain", "--", "maps"]), "");
    let tree = git(
        origin.bare.path(),
        &["ls-tree", "-r", "--name-only", "dualwrite-status"],
    );
    assert!(
        !tree.is_empty() && tree.lines().all(|f| f.starts_with("status/")),
        "{tree}"
    );

    // A clone plans nothing from the status branch, and everything without it.
    let clone = origin.clone();
    let plan = run_in(
        clone.path(),
        &[
            "reconcile",
            "--dry-run",
            "--detailed-exitcode",
            "--status-from",
            "origin/dualwrite-status",
        ],
        &[],
    );
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
    assert!(
        plan.stdout
            .starts_with("Actual state: the status/ files committed at origin/dualwrite-status"),
        "{}",
        plan.stdout
    );
    let plain = run_in(
        clone.path(),
        &["reconcile", "--dry-run", "--detailed-exitcode"],
        &[],
    );
    assert_eq!(plain.code, 2, "{}{}", plain.stdout, plain.stderr);
    let missing = run_in(
        clone.path(),
        &["reconcile", "--dry-run", "--status-from", "origin/nosuch"],
        &[],
    );
    assert_eq!(missing.code, 1, "{}{}", missing.stdout, missing.stderr);
    assert!(
        missing
            .stderr
            .contains("--status-from origin/nosuch: no such git revision"),
        "{}",
        missing.stderr
    );

    // Another writer moved the status branch: ours is replayed on top of it.
    git(clone.path(), &["checkout", "-q", "dualwrite-status"]);
    std::fs::write(clone.path().join("status/NOTE"), "x\n").unwrap();
    git(clone.path(), &["add", "status/NOTE"]);
    git(clone.path(), &["commit", "-q", "-m", "elsewhere"]);
    git(clone.path(), &["push", "-q", "origin", "dualwrite-status"]);
    origin.add_customer(4, "Barbara");
    let run = repo.run(&args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let log = git(
        origin.bare.path(),
        &["log", "--format=%s", "dualwrite-status"],
    );
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            "dualwrite status: maps/customers",
            "elsewhere",
            "dualwrite status: maps/customers"
        ],
        "{log}"
    );
    assert_eq!(repo.git(&["rev-parse", "HEAD"]), head);
}

#[test]
fn the_service_commits_and_pushes_status_after_its_passes() {
    let origin = Origin::new();
    let port = support::free_port().to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_dualwrite"))
        .arg("-C")
        .arg(origin.repo.path())
        .args(["run", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--commit-status", "--push", "--interval", "1s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let pushed = loop {
        let log = git(origin.bare.path(), &["log", "--format=%an|%s", "main"]);
        if log.starts_with("dualwrite|dualwrite status:") {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(pushed, "no status commit reached the origin:\n{stderr}");
    assert!(stderr.contains("status committed to main"), "{stderr}");
    let clone = origin.clone();
    let plan = run_in(
        clone.path(),
        &["reconcile", "--dry-run", "--detailed-exitcode"],
        &[],
    );
    assert_eq!(plan.code, 0, "{}{}", plan.stdout, plan.stderr);
}
