//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver with fantoccini) against a real `dualwrite run`, once on the
//! demo's SQLite apps and once on the same apps in PostgreSQL. One journey for both: open
//! the overview, follow a map, filter the error view by map and type, open a record (a
//! hostile value shows as text), sign in with the token; the test then fixes the cause of
//! the rejections in the app (drops the CHECK that refused them), the admin presses "Retry
//! all matching", sees the request committed, and after the next pass the request
//! Completed and the records Retried. The SQLite journey keeps screenshots of the overview
//! and the error view in `target/screenshots/` (the README's are copied from there into
//! docs/).
//!
//! Tests running together share one chromedriver (one session each). Without chromedriver
//! the test is a loud skip, or a failure under `CI=true` (`.ci/run` installs it).

mod common;
mod support;

use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use common::{TestDb, env_name, unique_table};
use dualwrite::endpoint::EndpointSpec;
use fantoccini::{Client, ClientBuilder, Locator};
use support::Repo;
use support::dashboard::{HOSTILE, TOKEN, demo};
use support::service::{Service, wait_for};

const DRIVER: &str = "/usr/bin/chromedriver";
/// How long one journey may take in the browser, all waits included.
const JOURNEY_LIMIT: Duration = Duration::from_secs(180);
/// How long one wait inside it may take (a page, a pass, a commit).
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// A chromedriver on a free port, killed when the last test using it drops it.
struct Driver {
    child: Mutex<Child>,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

static SHARED_DRIVER: Mutex<Weak<Driver>> = Mutex::new(Weak::new());

/// The chromedriver the tests running now share (started by the first one), or `None`
/// (a loud skip) when it is not installed; a failure under `CI=true`.
fn driver() -> Option<Arc<Driver>> {
    if !Path::new(DRIVER).exists() {
        assert!(
            std::env::var("CI").is_err(),
            "{DRIVER} is missing: .ci/run installs chromium and chromium-driver"
        );
        eprintln!("SKIPPED: {DRIVER} is missing (apt-get install chromium chromium-driver)");
        return None;
    }
    let mut shared = SHARED_DRIVER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(driver) = shared.upgrade() {
        return Some(driver);
    }
    let port = support::free_port();
    let child = Command::new(DRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Arc::new(Driver {
        child: Mutex::new(child),
        port,
    });
    wait_for(Duration::from_secs(20), "chromedriver", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    *shared = Arc::downgrade(&driver);
    Some(driver)
}

async fn browser(port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]
        }),
    );
    // A driver that has just started (or a browser slow to start on a busy machine) may
    // refuse the first session: try again for a while before failing with its answer.
    let mut last = String::new();
    for _ in 0..20 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return client,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("chromedriver gave no session: {last}");
}

/// Clicks `css` and waits for `next`, an element only the page it leads to has (a click
/// returns before the next page has loaded).
async fn click_to(c: &Client, css: &str, next: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT_LIMIT)
        .for_element(Locator::Css(next))
        .await
        .unwrap_or_else(|e| panic!("after clicking {css}, no {next}: {e}"));
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Opens `url` again every `every` until `check` holds on the page; panics naming `what`
/// after [`WAIT_LIMIT`] (for what only a later pass or a redirect changes).
async fn reload_until(c: &Client, url: &str, what: &str, every: Duration, check: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        c.goto(url).await.unwrap();
        let body = text(c, "body").await;
        if body.contains(check) {
            return body;
        }
        assert!(
            start.elapsed() < WAIT_LIMIT,
            "timed out waiting for {what} at {url}:\n{body}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Fills the error view's filter form with `fields`, submits it and waits for the page
/// whose URL contains `mark`.
async fn filter(c: &Client, fields: &[(&str, &str)], mark: &str) {
    let form = c.form(Locator::Css("form.filter")).await.unwrap();
    for (name, value) in fields {
        form.set_by_name(name, value).await.unwrap();
    }
    c.find(Locator::Css("form.filter button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_url(c, mark).await;
}

/// Waits until the browser's URL contains `part` (a form submitted, its page loaded).
async fn wait_url(c: &Client, part: &str) {
    let start = std::time::Instant::now();
    let mut url = c.current_url().await.unwrap();
    while !url.as_str().contains(part) && start.elapsed() < WAIT_LIMIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        url = c.current_url().await.unwrap();
    }
    assert!(url.as_str().contains(part), "{url}");
}

/// Reloads the requests page until `request` is Completed there (after the next pass).
async fn wait_completed(c: &Client, base: &str, request: &str) {
    let row = format!("#request-{request} td.state");
    let start = std::time::Instant::now();
    let mut state = String::new();
    while state != "Completed" && start.elapsed() < WAIT_LIMIT {
        c.goto(&format!("{base}/requests")).await.unwrap();
        state = text(c, &row).await;
        if state != "Completed" {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert_eq!(state, "Completed", "request {request}");
}

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// What a journey runs on: the demo project in `repo` (maps customers and orders, whose
/// CRM side rejects the hostile customer and others by a CHECK on the credit limit), the
/// environment its endpoints read, and whether to keep screenshots.
struct Apps<'a> {
    repo: &'a Repo,
    env: Vec<(String, String)>,
    screenshots: bool,
}

/// The admin's journey through the browser, against a `dualwrite run` of `apps`; `fix`
/// makes the CRM accept the rejected records before the admin presses Retry.
fn journey(runtime: &tokio::runtime::Runtime, apps: &Apps<'_>, fix: impl Future<Output = ()>) {
    let driver = driver().expect("checked by the test");
    let mut env: Vec<(&str, &str)> = apps
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.push(TOKEN);
    let service = Service::start(
        apps.repo.path(),
        &["--interval", "2s", "--dashboard-token-from-env", TOKEN.0],
        &env,
    );
    let base = format!("http://127.0.0.1:{}", service.port);
    wait_for(WAIT_LIMIT, "the hostile row's error", || {
        support::service::http_get(service.port, "/api/v1/errors?map=customers")
            .1
            .contains("script")
    });
    runtime.block_on(async {
        let c = browser(driver.port).await;
        let result = tokio::time::timeout(JOURNEY_LIMIT, async {
            // The overview, then a map.
            c.goto(&format!("{base}/")).await.unwrap();
            let maps = text(&c, "#maps").await;
            assert!(
                maps.contains("customers") && maps.contains("orders"),
                "{maps}"
            );
            if apps.screenshots {
                screenshot(&c, "dashboard-overview.png").await;
            }
            click_to(&c, "a[href='/maps/customers']", "#conditions").await;
            assert_eq!(text(&c, "h1").await, "Map customers");
            // The map page: the initial sync by direction, catch-up errors, the activity log.
            let directions = text(&c, "table.directions").await;
            assert!(
                directions.contains("SourceToDestination")
                    && directions.contains("DestinationToSource"),
                "{directions}"
            );
            assert!(text(&c, "body").await.contains("Catch-up errors"));
            let activity = c.find_all(Locator::Css("#activity tr")).await.unwrap();
            assert!(activity.len() >= 2, "a header and the map's events");
            // A direction's initial-sync failures lead to the error view of that direction.
            click_to(
                &c,
                "table.directions a[href*='direction=SourceToDestination']",
                "#matched",
            )
            .await;
            let url = c.current_url().await.unwrap();
            assert!(
                url.as_str().contains("direction=SourceToDestination")
                    && url.as_str().contains("phase=InitialSync"),
                "{url}"
            );
            let failed = text(&c, "table.errors").await;
            assert!(
                failed.contains("InitialSync") && !failed.contains("DestinationToSource"),
                "{failed}"
            );
            // The error view, filtered by map and type with the form.
            c.goto(&format!("{base}/errors")).await.unwrap();
            filter(
                &c,
                &[("map", "customers"), ("type", "ApplicationError")],
                "type=ApplicationError",
            )
            .await;
            let url = c.current_url().await.unwrap();
            assert!(
                url.as_str().contains("map=customers")
                    && url.as_str().contains("type=ApplicationError"),
                "{url}"
            );
            let rows = c.find_all(Locator::Css("table.errors tr")).await.unwrap();
            assert!(rows.len() >= 3, "a header and the records");
            let all = text(&c, "#matched").await;
            // Filtered by time with the form: the last hour holds them all, a window that
            // ended long ago none.
            let none = "0 record(s) match, newest first.".to_string();
            for (from, to, mark, expected) in [
                ("1h", "", "from=1h", all),
                ("", "2000-01-01T00:00:00Z", "to=2000-01-01", none),
            ] {
                filter(&c, &[("from", from), ("to", to)], mark).await;
                assert_eq!(
                    text(&c, "#matched").await,
                    expected,
                    "from {from:?} to {to:?}"
                );
            }
            c.goto(&format!(
                "{base}/errors?map=customers&type=ApplicationError"
            ))
            .await
            .unwrap();
            let listing = text(&c, "table.errors").await;
            assert!(
                listing.contains(HOSTILE),
                "the hostile key shows as text: {listing}"
            );
            if apps.screenshots {
                screenshot(&c, "dashboard-errors.png").await;
            }
            // Nothing from a row ran as a script.
            let scripts = c
                .execute("return document.querySelectorAll('script').length", vec![])
                .await
                .unwrap();
            assert_eq!(scripts, serde_json::json!(0));
            // One record: the rows now and what a retry would write.
            click_to(&c, "table.errors a[href^='/errors/']", "#record").await;
            let record = text(&c, "body").await;
            assert!(record.contains("What a retry would write"), "{record}");
            // Sign in with the token; the sign-in answers with a redirect that sets the
            // session cookie, after which the error view offers Retry all matching.
            c.goto(&format!("{base}/login")).await.unwrap();
            let login = c.form(Locator::Css("form")).await.unwrap();
            login.set_by_name("token", TOKEN.1).await.unwrap();
            login.submit().await.unwrap();
            let filtered = format!("{base}/errors?map=customers&type=ApplicationError");
            reload_until(
                &c,
                &filtered,
                "Retry all matching",
                Duration::from_millis(200),
                "Retry all matching",
            )
            .await;
            // Dismiss one record that is not the hostile one: select it, confirm, submit.
            let mut dismissed = None;
            for row in c.find_all(Locator::Css("table.errors tr")).await.unwrap() {
                let Ok(checkbox) = row.find(Locator::Css("input[name='id']")).await else {
                    continue;
                };
                if !row.text().await.unwrap().contains(HOSTILE) {
                    dismissed = checkbox.attr("value").await.unwrap();
                    checkbox.click().await.unwrap();
                    break;
                }
            }
            let dismissed = dismissed.expect("a record other than the hostile one");
            click_to(&c, "button[value='dismiss-selected']", "#confirm-matched").await;
            let confirm = text(&c, "#confirm-matched").await;
            assert!(confirm.starts_with("It matches 1 "), "{confirm}");
            click_to(&c, "#submit", "#submitted").await;
            let request = text(&c, "#submitted code").await;
            assert!(request.starts_with("dismiss-customers-"), "{request}");
            wait_completed(&c, &base, &request).await;
            c.goto(&format!("{base}/errors?map=customers&state=all"))
                .await
                .unwrap();
            let listing = c
                .find_all(Locator::Css(&format!(
                    "table.errors a[href='/errors/{dismissed}']"
                )))
                .await
                .unwrap();
            assert!(listing.is_empty(), "record {dismissed} was dismissed");
            c.goto(&filtered).await.unwrap();
            // The cause fixed in the app, Retry all matching for the filter.
            fix.await;
            click_to(&c, "button[value='retry-all']", "#confirm-matched").await;
            let confirm = text(&c, "#confirm-matched").await;
            assert!(confirm.starts_with("It matches"), "{confirm}");
            click_to(&c, "#submit", "#submitted").await;
            let submitted = text(&c, "#submitted code").await;
            assert!(submitted.starts_with("retry-customers-"), "{submitted}");
            let log = apps.repo.git(&["log", "-1", "--format=%an", "--name-only"]);
            assert!(
                log.starts_with("alice") && log.contains(&format!("requests/{submitted}.yaml")),
                "{log}"
            );
            // The requests page shows it Completed after the next pass ...
            wait_completed(&c, &base, &submitted).await;
            // ... and the records Retried: none open for the filter any more, the hostile
            // one among the Retried.
            c.goto(&filtered).await.unwrap();
            let matched = text(&c, "#matched").await;
            assert!(matched.starts_with("0 record(s)"), "{matched}");
            c.goto(&format!("{filtered}&state=Retried")).await.unwrap();
            let retried = text(&c, "table.errors").await;
            assert!(
                retried.contains(HOSTILE) && retried.contains("Retried"),
                "{retried}"
            );
        })
        .await;
        c.close().await.unwrap();
        result.expect("the browser test timed out");
    });
    drop(service);
}

#[test]
fn an_admin_filters_errors_and_retries_them_in_chromium_on_sqlite_apps() {
    if driver().is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let repo = demo();
    let crm = repo.path().join(".dualwrite/crm.db");
    let apps = Apps {
        repo: &repo,
        env: Vec::new(),
        screenshots: true,
    };
    journey(
        &runtime,
        &apps,
        async move { drop_sqlite_credit_check(&crm) },
    );
}

/// Drops the demo CRM's `CHECK (credit_limit >= 0)` from `account` in place, the way
/// SQLite documents for removing a CHECK constraint (rewriting the table's definition
/// with `writable_schema`, then bumping `schema_version`): the table, its rows and the
/// capture triggers on it stay as they are.
fn drop_sqlite_credit_check(crm: &Path) {
    let conn = rusqlite::Connection::open(crm).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA schema_version", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = replace(sql, ' CHECK (credit_limit >= 0)', '')
           WHERE type = 'table' AND name = 'account';
         PRAGMA schema_version = {};
         PRAGMA writable_schema = OFF;
         COMMIT;",
        version + 1
    ))
    .unwrap();
    drop(conn);
    let conn = rusqlite::Connection::open(crm).unwrap();
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'account'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!sql.contains("CHECK (credit_limit"), "{sql}");
    conn.execute(
        "INSERT INTO account (accountnumber, name, credit_limit) VALUES ('probe', 'probe', -1)",
        [],
    )
    .expect("the CRM accepts a negative credit limit now");
    conn.execute("DELETE FROM account WHERE accountnumber = 'probe'", [])
        .unwrap();
}

#[test]
fn an_admin_filters_errors_and_retries_them_in_chromium_on_postgres_apps() {
    if driver().is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Some(mut db) = runtime.block_on(TestDb::postgres()) else {
        return;
    };
    let tables = PgTables::new(&mut db);
    runtime.block_on(db.plain.exec(&tables.ddl()));
    let repo = tables.project(&db);
    let EndpointSpec::Postgres { url } = db.spec.clone() else {
        unreachable!()
    };
    let apps = Apps {
        repo: &repo,
        env: vec![(env_name("erp"), url.clone()), (env_name("crm"), url)],
        screenshots: false,
    };
    let fix = format!("ALTER TABLE {0} DROP CONSTRAINT {0}_credit", tables.account);
    journey(&runtime, &apps, db.plain.exec(&fix));
}

/// The demo's four tables as PostgreSQL tables of the test database, under names no other
/// test uses (dropped when the test database is).
struct PgTables {
    customers: String,
    orders: String,
    account: String,
    sales_order: String,
}

impl PgTables {
    fn new(db: &mut TestDb) -> PgTables {
        let tables = PgTables {
            customers: unique_table("bcust"),
            orders: unique_table("bord"),
            account: unique_table("bacct"),
            sales_order: unique_table("bso"),
        };
        for t in [
            &tables.customers,
            &tables.orders,
            &tables.account,
            &tables.sales_order,
        ] {
            db.on_drop(format!("DROP TABLE IF EXISTS {t}"));
        }
        tables
    }

    /// The demo's schema and a smaller seed: customers 7 and 14 have a negative credit
    /// limit and order 5 is too large for the CRM, plus the hostile customer.
    fn ddl(&self) -> String {
        let PgTables {
            customers,
            orders,
            account,
            sales_order,
        } = self;
        format!(
            "CREATE TABLE {customers} (account_no text PRIMARY KEY, name text NOT NULL,
               currency text, credit_limit numeric);
             CREATE TABLE {orders} (order_id bigint PRIMARY KEY, account_no text NOT NULL,
               amount numeric NOT NULL, status text NOT NULL, ordered_at text NOT NULL);
             CREATE TABLE {account} (accountnumber text PRIMARY KEY, name text NOT NULL,
               currency_code integer,
               credit_limit numeric CONSTRAINT {account}_credit CHECK (credit_limit >= 0),
               origin text);
             CREATE TABLE {sales_order} (order_id bigint PRIMARY KEY,
               accountnumber text NOT NULL, amount numeric NOT NULL CHECK (amount < 100000),
               status text NOT NULL, ordered_at text NOT NULL);
             INSERT INTO {customers}
               SELECT 'C-' || i, 'Customer ' || i, (ARRAY['USD', 'EUR', 'GBP'])[i % 3 + 1],
                      CASE WHEN i % 7 = 0 THEN -100 ELSE 1000 + i * 10 END
               FROM generate_series(1, 20) AS i;
             INSERT INTO {customers} VALUES ('{HOSTILE}', '{HOSTILE}', 'EUR', -5);
             INSERT INTO {orders}
               SELECT i, 'C-' || (1 + i % 20), CASE WHEN i = 5 THEN 250000 ELSE 10 * i END,
                      'open', '2026-11-01T10:00:00Z'
               FROM generate_series(1, 10) AS i;"
        )
    }

    /// A project in git whose endpoints `erp` and `crm` are `db`, with the demo's maps on
    /// these tables.
    fn project(&self, db: &TestDb) -> Repo {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let repo = Repo::new(&[]);
        repo.write(
            "dualwrite.yaml",
            &format!(
                "apiVersion: dualwrite/v1\nkind: Project\nmetadata: {{ name: demo-on-postgres }}\nspec:\n  endpoints:\n{}{}",
                db.endpoint_yaml("erp"),
                db.endpoint_yaml("crm")
            ),
        );
        for (map, tables) in [
            (
                "customers",
                [("customers", &self.customers), ("account", &self.account)],
            ),
            (
                "orders",
                [("orders", &self.orders), ("sales_order", &self.sales_order)],
            ),
        ] {
            let path = format!("maps/{map}.yaml");
            let mut text = std::fs::read_to_string(root.join(&path)).unwrap();
            for (demo, ours) in tables {
                let table = format!("table: {demo} }}");
                assert!(text.contains(&table), "{path} names {table}");
                text = text.replace(&table, &format!("table: {ours} }}"));
            }
            repo.write(&path, &text);
        }
        repo.write(".gitignore", ".dualwrite/\nstatus/\n");
        repo.commit_all("the demo on PostgreSQL");
        repo
    }
}
