//! Test helpers: reachable test databases, unique table names, plain (non-dualwrite)
//! connections for making changes the way an application would.
//!
//! PostgreSQL and MariaDB tests read `DUALWRITE_TEST_POSTGRES_URL` /
//! `DUALWRITE_TEST_MYSQL_URL` (defaults: the local servers). An unreachable server is
//! skipped with a loud `SKIPPED:` line, except when `CI=true`, where it fails the test.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dualwrite::endpoint::{EndpointSpec, ValueKind};
use mysql_async::prelude::Queryable;

pub const POSTGRES_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const MYSQL_DEFAULT: &str = "mysql://root@127.0.0.1:3306/test";

/// A table name no other test (or test process) uses.
pub fn unique_table(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "dw_{prefix}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Reports an unreachable server: a loud skip, or a failure under `CI=true`.
fn skip<T>(engine: &str, why: &str) -> Option<T> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{engine} test database unreachable under CI=true: {why}");
    }
    // Straight to the stderr handle: the test harness captures `eprintln!`, not this.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {engine} test database unreachable ({why}); set DUALWRITE_TEST_{}_URL",
        engine.to_uppercase()
    );
    None
}

/// One engine under test: the spec dualwrite connects with and a plain connection.
pub struct TestDb {
    pub engine: &'static str,
    pub spec: EndpointSpec,
    pub plain: Plain,
    /// SQL that undoes the test's setup, run (newest first) when this is dropped, so a
    /// failed assertion leaves nothing behind in the shared databases.
    cleanup: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

/// A connection that is not dualwrite: its writes are captured like an application's.
pub enum Plain {
    Sqlite(PathBuf),
    Postgres(tokio_postgres::Client),
    Mysql(mysql_async::Conn),
}

impl Plain {
    pub async fn exec(&mut self, sql: &str) {
        match self {
            Plain::Sqlite(path) => {
                let conn = rusqlite::Connection::open(&*path).unwrap();
                conn.busy_timeout(Duration::from_secs(10)).unwrap();
                conn.execute_batch(sql)
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            Plain::Postgres(client) => client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Plain::Mysql(conn) => conn
                .query_drop(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        TestDb {
            engine: "sqlite",
            spec: EndpointSpec::Sqlite { path: path.clone() },
            plain: Plain::Sqlite(path),
            cleanup: Vec::new(),
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Option<TestDb> {
        let url = std::env::var("DUALWRITE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| POSTGRES_DEFAULT.into());
        let connecting = tokio_postgres::connect(&url, tokio_postgres::NoTls);
        let (client, connection) =
            match tokio::time::timeout(Duration::from_secs(5), connecting).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => return skip("postgres", &e.to_string()),
                Err(_) => return skip("postgres", "timeout"),
            };
        tokio::spawn(connection);
        Some(TestDb {
            engine: "postgres",
            spec: EndpointSpec::Postgres { url },
            plain: Plain::Postgres(client),
            cleanup: Vec::new(),
            _dir: None,
        })
    }

    pub async fn mysql() -> Option<TestDb> {
        let url =
            std::env::var("DUALWRITE_TEST_MYSQL_URL").unwrap_or_else(|_| MYSQL_DEFAULT.into());
        let opts = match mysql_async::Opts::from_url(&url) {
            Ok(opts) => opts,
            Err(e) => return skip("mysql", &e.to_string()),
        };
        let conn = match tokio::time::timeout(Duration::from_secs(5), mysql_async::Conn::new(opts))
            .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return skip("mysql", &e.to_string()),
            Err(_) => return skip("mysql", "timeout"),
        };
        Some(TestDb {
            engine: "mysql",
            spec: EndpointSpec::Mysql { url },
            plain: Plain::Mysql(conn),
            cleanup: Vec::new(),
            _dir: None,
        })
    }

    /// SQLite always; PostgreSQL and MariaDB when reachable.
    pub async fn all() -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite().await];
        dbs.extend(TestDb::postgres().await);
        dbs.extend(TestDb::mysql().await);
        dbs
    }

    /// The engine's type name for a column of `kind` (`key`: usable in a primary key).
    pub fn type_name(&self, kind: ValueKind) -> &'static str {
        use ValueKind::*;
        match (self.engine, kind) {
            ("sqlite", Bool) => "BOOLEAN",
            ("sqlite", Int) => "INTEGER",
            ("sqlite", Decimal) => "DECIMAL(12,2)",
            ("sqlite", Float) => "DOUBLE",
            ("sqlite", Text) => "VARCHAR(100)",
            ("sqlite", Bytes) => "BLOB",
            ("sqlite", Date) => "DATE",
            ("sqlite", Timestamp) => "DATETIME",
            ("sqlite", TimestampTz) => "TIMESTAMPTZ",
            ("sqlite", Json) => "JSON",
            ("postgres", Bool) => "boolean",
            ("postgres", Int) => "bigint",
            ("postgres", Decimal) => "numeric(12,2)",
            ("postgres", Float) => "double precision",
            ("postgres", Text) => "varchar(100)",
            ("postgres", Bytes) => "bytea",
            ("postgres", Date) => "date",
            ("postgres", Timestamp) => "timestamp",
            ("postgres", TimestampTz) => "timestamptz",
            ("postgres", Json) => "jsonb",
            (_, Bool) => "TINYINT(1)",
            (_, Int) => "BIGINT",
            (_, Decimal) => "DECIMAL(12,2)",
            (_, Float) => "DOUBLE",
            (_, Text) => "VARCHAR(100)",
            (_, Bytes) => "BLOB",
            (_, Date) => "DATE",
            (_, Timestamp) => "DATETIME(6)",
            (_, TimestampTz) => "TIMESTAMP(6) NULL",
            (_, Json) => "JSON",
        }
    }

    /// Runs `sql` when this test database is dropped (SQLite files go with their temp dir).
    pub fn on_drop(&mut self, sql: String) {
        self.cleanup.push(sql);
    }

    pub async fn drop_table(&mut self, table: &str) {
        self.plain
            .exec(&format!("DROP TABLE IF EXISTS {table}"))
            .await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let statements: Vec<String> = self.cleanup.drain(..).rev().collect();
        let spec = self.spec.clone();
        if statements.is_empty() || matches!(spec, EndpointSpec::Sqlite { .. }) {
            return;
        }
        // Drop may run inside a runtime (or while unwinding): clean up on a thread of our own.
        let cleaning = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                match spec {
                    EndpointSpec::Postgres { url } => {
                        if let Ok((client, connection)) =
                            tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                        {
                            tokio::spawn(connection);
                            for sql in &statements {
                                let _ = client.batch_execute(sql).await;
                            }
                        }
                    }
                    EndpointSpec::Mysql { url } => {
                        if let Ok(mut conn) = mysql_async::Conn::from_url(url).await {
                            for sql in &statements {
                                let _ = conn.query_drop(sql).await;
                            }
                        }
                    }
                    EndpointSpec::Sqlite { .. } => {}
                }
            });
        });
        let _ = cleaning.join();
    }
}

/// Runs a test body with a timeout, so a hung database fails instead of hanging CI.
pub async fn with_timeout<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(120), f)
        .await
        .expect("test timed out after 120s");
}

/// The environment variable a test endpoint's URL is passed to the binary in.
pub fn env_name(role: &str) -> String {
    format!("DW_TEST_{}_URL", role.to_uppercase())
}

impl TestDb {
    /// This database as the endpoint `role` of a test project (`dualwrite.yaml`'s
    /// `endpoints:` entry); a server's URL comes from [`env_name`]`(role)`.
    pub fn endpoint_yaml(&self, role: &str) -> String {
        match &self.spec {
            EndpointSpec::Sqlite { path } => {
                format!("    {role}: {{ sqlite: {{ path: {} }} }}\n", path.display())
            }
            EndpointSpec::Postgres { .. } => format!(
                "    {role}: {{ postgres: {{ urlFromEnv: {} }} }}\n",
                env_name(role)
            ),
            EndpointSpec::Mysql { .. } => format!(
                "    {role}: {{ mysql: {{ urlFromEnv: {} }} }}\n",
                env_name(role)
            ),
        }
    }
}
