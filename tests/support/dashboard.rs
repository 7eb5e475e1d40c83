//! The dashboard's test fixture: the README's demo (two seeded SQLite apps whose CRM rejects
//! some records), plus one ERP customer the CRM rejects whose key and name are a script.

use std::path::Path;

use super::Repo;

/// A value that must show as text wherever it appears.
pub const HOSTILE: &str = "<script>alert(1)</script>";
/// The dashboard token's variable and value (user alice).
pub const TOKEN: (&str, &str) = ("DW_DASHBOARD_TOKEN", "alice:s3cret-token");

/// The demo project, seeded and reconciled once, with one more ERP customer the CRM
/// rejects whose key and name are a script; committed to git.
pub fn demo() -> Repo {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo = Repo::new(&[]);
    repo.write(
        "dualwrite.yaml",
        &std::fs::read_to_string(root.join("dualwrite.yaml")).unwrap(),
    );
    for dir in ["maps", "alerts"] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            if entry.path().is_file() {
                let name = format!("{dir}/{}", entry.file_name().to_string_lossy());
                repo.write(&name, &std::fs::read_to_string(entry.path()).unwrap());
            }
        }
    }
    repo.write(".gitignore", ".dualwrite/\nstatus/\n");
    let run = repo.run(&["demo"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let erp = rusqlite::Connection::open(repo.path().join(".dualwrite/erp.db")).unwrap();
    erp.execute(
        "INSERT INTO customers (account_no, name, currency, credit_limit) VALUES (?1, ?1, 'EUR', -5)",
        [HOSTILE],
    )
    .unwrap();
    repo.commit_all("the demo");
    repo
}
