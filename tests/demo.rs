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
    // In words: what was read, written, refused, and left alone because it was there.
    assert!(
        out.contains("DestinationToSource: 199 read: 1 written, 198 already there; SourceToDestination: 200 read: 198 written, 2 failed"),
        "{out}"
    );
    assert!(
        out.contains("SourceToDestination: 500 read: 499 written, 1 failed"),
        "{out}"
    );
    // WRITTEN counts the initial sync's writes (it said SYNCED 0 after a whole copy).
    assert!(
        out.contains(
            "MAP                  PHASE        DESIRED     WRITTEN   QUEUED  ERRORS  INITIAL SYNC\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("orders               Running      Running         499        0       1  "),
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

#[test]
fn demo_reset_starts_the_demo_over() {
    let dir = tempfile::tempdir().unwrap();
    copy_project(dir.path());
    assert_eq!(support::run_in(dir.path(), &["demo"], &[]).code, 0);
    // Play with it: a row changed in the ERP, an errored record dismissed.
    rusqlite::Connection::open(dir.path().join(".dualwrite/erp.db"))
        .unwrap()
        .execute(
            "UPDATE customers SET name = 'Changed' WHERE account_no = 'C-1'",
            [],
        )
        .unwrap();
    assert_eq!(support::run_in(dir.path(), &["reconcile"], &[]).code, 0);

    let run = support::run_in(dir.path(), &["demo", "--reset"], &[]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.starts_with(
            "removed .dualwrite/erp.db\nremoved .dualwrite/crm.db\nremoved .dualwrite/state.db\n"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("removed status/\ncreated .dualwrite/erp.db (demo data)\n"),
        "{}",
        run.stdout
    );
    // As new: the seeded rows, run 1 of the initial sync, the same three rejected rows.
    assert!(
        run.stdout
            .contains("SourceToDestination: 200 read: 198 written, 2 failed"),
        "{}",
        run.stdout
    );
    let crm = rusqlite::Connection::open(dir.path().join(".dualwrite/crm.db")).unwrap();
    let name: String = crm
        .query_row(
            "SELECT name FROM account WHERE accountnumber = 'C-1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(name, "Customer 1");

    // Not a demo: a project with its state in PostgreSQL is never reset.
    let yaml = std::fs::read_to_string(dir.path().join("dualwrite.yaml")).unwrap();
    std::fs::write(
        dir.path().join("dualwrite.yaml"),
        yaml.replacen(
            "    sqlite: { path: .dualwrite/state.db }\n",
            "    postgres: { urlFromEnv: DW_STATE }\n",
            1,
        ),
    )
    .unwrap();
    let refused = support::run_in(dir.path(), &["demo", "--reset"], &[]);
    assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("only starts a local demo over"),
        "{}",
        refused.stderr
    );
    assert!(dir.path().join(".dualwrite/erp.db").exists());
}
