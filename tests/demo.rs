//! The README's demo, as a new user runs it: the repository's own dualwrite.yaml, maps/ and
//! alerts/ over two seeded SQLite apps. Shows the initial sync counts and the records the CRM
//! rejects, in the terminal and in status/; a second pass changes nothing.

mod support;

use std::path::Path;

fn copy_project(to: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("dualwrite.yaml"), to.join("dualwrite.yaml")).unwrap();
    for dir in ["maps", "alerts"] {
        std::fs::create_dir_all(to.join(dir)).unwrap();
        for entry in std::fs::read_dir(root.join(dir))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
        {
            std::fs::copy(entry.path(), to.join(dir).join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn demo_syncs_the_seeded_apps_and_reports_rejected_rows() {
    let dir = tempfile::tempdir().unwrap();
    copy_project(dir.path());
    let run = support::run_in(dir.path(), &["demo"], &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert!(
        out.starts_with(
            "created .dualwrite/erp.db (demo data)\ncreated .dualwrite/crm.db (demo data)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("customers            Running      Running"),
        "{out}"
    );
    assert!(
        out.contains("SourceToDestination 198/200 written, 2 errors"),
        "{out}"
    );
    assert!(
        out.contains("SourceToDestination 499/500 written, 1 errors"),
        "{out}"
    );
    assert!(out.contains("ApplicationError SourceToDestination {\"order_id\":250}: CHECK constraint failed: amount < 100000"), "{out}");

    let status = std::fs::read_to_string(dir.path().join("status/maps/customers.yaml")).unwrap();
    assert!(status.contains("kind: TableMapStatus"), "{status}");
    assert!(status.contains("code: SQLITE_CONSTRAINT_CHECK"), "{status}");
    // The CRM's own customer came back to the ERP (bidirectional).
    let erp = rusqlite::Connection::open(dir.path().join(".dualwrite/erp.db")).unwrap();
    let name: String = erp
        .query_row(
            "SELECT name FROM customers WHERE account_no = 'C-900'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(name, "Created in the CRM");

    // Status files are rewritten only when something changed.
    let modified = std::fs::metadata(dir.path().join("status/maps/orders.yaml"))
        .unwrap()
        .modified()
        .unwrap();
    let again = support::run_in(dir.path(), &["reconcile"], &[]);
    assert!(
        again.stdout.contains("0 status file(s) updated"),
        "{}",
        again.stdout
    );
    assert_eq!(
        std::fs::metadata(dir.path().join("status/maps/orders.yaml"))
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );

    // `status` tells the same story; --output json for scripts.
    let st = support::run_in(dir.path(), &["status", "orders", "--output", "json"], &[]);
    let doc: serde_json::Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(doc["maps"]["orders"]["errors"]["open"], 1);
    assert_eq!(
        doc["maps"]["orders"]["initialSync"]["directions"]["SourceToDestination"]["written"],
        499
    );
}
