//! The web dashboard through the real binary: `dualwrite run --listen` and `dualwrite
//! dashboard --listen` over the README's demo (two seeded SQLite apps whose CRM rejects some
//! records), one of them holding a hostile key. Plain HTTP from the test: pages, escaping,
//! the error view's filters and paging, `/api/v1/errors`, the OpenAPI document, and the
//! actions (403 without a token, cross-site POSTs refused, a Retry committed and completed);
//! `dualwrite dashboard` over a PostgreSQL state store that appears, goes and comes back.

mod support;

use support::with_timeout;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::Repo;
use support::dashboard::{HOSTILE, TOKEN, demo};
use support::service::{Service, wait_for};

/// An HTTP answer.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// One request over a plain TCP connection.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if method == "POST" {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get(port: u16, path: &str) -> Answer {
    http(port, "GET", path, &[], "")
}

fn json(port: u16, path: &str) -> serde_json::Value {
    let a = get(port, path);
    assert_eq!(a.status, 200, "{path}: {}", a.body);
    serde_json::from_str(&a.body).unwrap()
}

/// Every record of `/api/v1/errors` + `query`, following `next` one record a page.
fn all_pages(port: u16, query: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut next = Some(format!("/api/v1/errors?limit=1&{query}"));
    while let Some(path) = next {
        let page = json(port, &path);
        ids.extend(
            page["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
        next = page["next"].as_str().map(str::to_string);
        assert!(ids.len() < 1000, "paging does not end");
    }
    ids
}

/// A browser session: the cookie and the forms' CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

fn sign_in(port: u16) -> Session {
    let login = http(
        port,
        "POST",
        "/login",
        &[],
        &format!("token={}", TOKEN.1.replace(':', "%3A")),
    );
    assert_eq!(login.status, 303, "{}", login.body);
    let cookie = login.headers["set-cookie"]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = http(
        port,
        "GET",
        "/errors?map=customers",
        &[("Cookie", &cookie)],
        "",
    );
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a signed-in error view has the action form")
        .to_string();
    Session { cookie, csrf }
}

fn hostile_id(port: u16) -> i64 {
    let page = json(port, "/api/v1/errors?map=customers&phase=Live");
    page["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"]["account_no"] == HOSTILE)
        .unwrap_or_else(|| panic!("no error for the hostile row: {page}"))["id"]
        .as_i64()
        .unwrap()
}

fn start(repo: &Repo, token: bool) -> Service {
    let mut args = vec!["--interval", "2s"];
    let mut env = Vec::new();
    if token {
        args.extend(["--dashboard-token-from-env", TOKEN.0]);
        env.push(TOKEN);
    }
    let service = Service::start(repo.path(), &args, &env);
    let port = service.port;
    wait_for(Duration::from_secs(30), "the hostile row's error", || {
        get(port, "/api/v1/errors?map=customers&phase=Live")
            .body
            .contains("script")
    });
    service
}

#[test]
fn every_page_renders_and_a_hostile_value_shows_as_text() {
    with_timeout(120, || {
        let repo = demo();
        let service = start(&repo, false);
        let port = service.port;
        let id = hostile_id(port);
        for path in [
            "/".to_string(),
            "/maps/customers".into(),
            "/maps/orders".into(),
            "/errors".into(),
            "/errors?map=customers&phase=Live".into(),
            format!("/errors/{id}"),
            "/alerts".into(),
            "/requests".into(),
        ] {
            let page = get(port, &path);
            assert_eq!(page.status, 200, "{path}: {}", page.body);
            assert!(
                page.headers["content-type"].starts_with("text/html"),
                "{path}"
            );
            assert!(
                !page.body.contains("<script>"),
                "{path} lets a script through: {}",
                page.body
            );
        }
        let record = get(port, &format!("/errors/{id}")).body;
        assert!(
            record.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{record}"
        );
        // The rows now and what a retry would write.
        assert!(
            record.contains("Source row now") && record.contains("What a retry would write"),
            "{record}"
        );
        let overview = get(port, "/").body;
        assert!(overview.contains("href=\"/maps/customers\""), "{overview}");
        assert!(
            overview.contains("http-equiv=\"refresh\""),
            "live refresh: {overview}"
        );
        let map = get(port, "/maps/customers").body;
        for shown in [
            "Conditions",
            "SourceToDestination",
            "DestinationToSource",
            "Activity",
            "Catch-up errors",
            "activity.csv",
        ] {
            assert!(map.contains(shown), "{shown}: {map}");
        }
        let csv = get(port, "/maps/customers/activity.csv");
        assert!(
            csv.body.starts_with("at,map,event,message\n"),
            "{}",
            csv.body
        );
        assert!(csv.headers["content-disposition"].contains("customers-activity.csv"));
        let jsonl = get(port, "/maps/customers/activity.jsonl").body;
        for line in jsonl.lines() {
            let entry: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(entry["map"], "customers");
        }
        assert_eq!(get(port, "/maps/nosuch").status, 404);
        assert_eq!(get(port, "/errors/999999").status, 404);
        // The service's own routes are still there beside the dashboard.
        assert_eq!(get(port, "/metrics").status, 200);
        assert_eq!(json(port, "/api/v1/maps").as_array().unwrap().len(), 2);
    });
}

#[test]
fn the_error_view_filters_like_errors_list_and_pages_by_id() {
    with_timeout(120, || {
        let repo = demo();
        let service = start(&repo, false);
        let port = service.port;
        let all = json(port, "/api/v1/errors");
        let matched = all["matched"].as_u64().unwrap();
        assert!(matched >= 4, "{all}");
        let customers = json(port, "/api/v1/errors?map=customers");
        assert!(
            customers["errors"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["map"] == "customers")
        );
        let orders = json(
            port,
            "/api/v1/errors?map=orders&type=ApplicationError&direction=SourceToDestination&phase=InitialSync",
        );
        assert_eq!(orders["matched"], 1, "{orders}");
        let live = json(port, "/api/v1/errors?phase=Live");
        assert!(
            live["errors"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["phase"] == "Live")
        );
        let none = json(
            port,
            "/api/v1/errors?from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z",
        );
        assert_eq!(none["matched"], 0);
        let recent = json(port, "/api/v1/errors?from=1h");
        assert_eq!(recent["matched"], matched);
        assert_eq!(json(port, "/api/v1/errors?type=NetworkError")["matched"], 0);
        assert_eq!(
            json(port, "/api/v1/errors?state=all")["matched"]
                .as_u64()
                .unwrap(),
            matched
        );
        // Keyset paging: one record a page gives every record once, newest first.
        let paged = all_pages(port, "");
        let mut sorted = paged.clone();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        sorted.dedup();
        assert_eq!(paged, sorted);
        assert_eq!(paged.len() as u64, matched);
        assert_eq!(
            all_pages(port, "map=customers").len(),
            customers["matched"].as_u64().unwrap() as usize
        );
        // The HTML view: the same count, the filter kept in the next page's link.
        let page = get(port, "/errors?map=customers&limit=1").body;
        assert!(
            page.contains(&format!("{} record(s) match", customers["matched"])),
            "{page}"
        );
        assert!(
            page.contains("id=\"older\" href=\"/errors?map=customers&amp;before="),
            "{page}"
        );
        assert!(
            page.contains("<option value=\"customers\" selected>"),
            "{page}"
        );
        // A filter that does not parse names itself; an unknown map is a 404.
        let bad = get(port, "/api/v1/errors?from=yesterday");
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("from \\\"yesterday\\\""), "{}", bad.body);
        assert_eq!(get(port, "/errors?type=Nope").status, 400);
        assert_eq!(get(port, "/errors?map=nosuch").status, 404);
        // The OpenAPI document describes the API.
        let doc = json(port, "/api/v1/openapi.json");
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(
            doc["paths"]["/api/v1/errors"]["get"]["parameters"]
                .as_array()
                .unwrap()
                .len()
                >= 8
        );
    });
}

#[test]
fn without_a_token_the_dashboard_is_read_only_and_actions_answer_403() {
    with_timeout(120, || {
        let repo = demo();
        let service = start(&repo, false);
        let port = service.port;
        let page = get(port, "/errors?map=customers").body;
        assert!(!page.contains("Retry all matching"), "{page}");
        assert!(!page.contains("Sign in"), "{page}");
        for path in ["/errors/confirm", "/errors/submit", "/login"] {
            let a = http(port, "POST", path, &[], "do=retry-all&map=customers&csrf=x");
            assert_eq!(a.status, 403, "{path}: {}", a.body);
        }
        assert_eq!(get(port, "/login").status, 403);
        assert!(!repo.path().join("requests").exists());
    });
}

#[test]
fn cross_site_posts_and_forms_without_the_session_token_are_refused() {
    with_timeout(120, || {
        let repo = demo();
        let service = start(&repo, true);
        let port = service.port;
        // Signed out: the view offers to sign in, and a wrong token does not.
        assert!(
            get(port, "/errors?map=customers")
                .body
                .contains("href=\"/login\"")
        );
        assert_eq!(
            http(port, "POST", "/login", &[], "token=alice%3Awrong-token").status,
            403
        );
        let s = sign_in(port);
        let body = format!("csrf={}&do=retry-all&map=customers", s.csrf);
        for headers in [
            vec![
                ("Cookie", s.cookie.as_str()),
                ("Origin", "http://evil.example"),
            ],
            vec![
                ("Cookie", s.cookie.as_str()),
                ("Sec-Fetch-Site", "cross-site"),
            ],
        ] {
            let a = http(port, "POST", "/errors/submit", &headers, &body);
            assert_eq!(a.status, 403, "{headers:?}: {}", a.body);
        }
        let evil_login = http(
            port,
            "POST",
            "/login",
            &[("Origin", "http://evil.example")],
            &format!("token={}", TOKEN.1),
        );
        assert_eq!(evil_login.status, 403);
        // The session without the form's token, or the token without the session.
        let a = http(
            port,
            "POST",
            "/errors/submit",
            &[("Cookie", &s.cookie)],
            "csrf=nope&do=retry-all&map=customers",
        );
        assert_eq!(a.status, 403, "{}", a.body);
        let a = http(port, "POST", "/errors/submit", &[], &body);
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(!repo.path().join("requests").exists());
        // The secret is never in a page.
        let secret = TOKEN.1.split_once(':').unwrap().1;
        for path in ["/", "/errors?map=customers", "/requests"] {
            assert!(
                !http(port, "GET", path, &[("Cookie", &s.cookie)], "")
                    .body
                    .contains(secret)
            );
        }
    });
}

#[test]
fn retry_from_the_dashboard_commits_a_request_that_the_next_pass_completes() {
    with_timeout(180, || {
        let repo = demo();
        let service = start(&repo, true);
        let port = service.port;
        let s = sign_in(port);
        let form = format!(
            "csrf={}&do=retry-all&map=customers&type=ApplicationError",
            s.csrf
        );
        let confirm = http(
            port,
            "POST",
            "/errors/confirm",
            &[
                ("Cookie", &s.cookie),
                ("Origin", &format!("http://127.0.0.1:{port}")),
            ],
            &form,
        );
        assert_eq!(confirm.status, 200, "{}", confirm.body);
        let matched =
            json(port, "/api/v1/errors?map=customers&type=ApplicationError")["matched"].clone();
        assert!(
            confirm
                .body
                .contains(&format!("It matches <strong>{matched}</strong>")),
            "{}",
            confirm.body
        );
        assert!(
            !confirm.body.contains("id=\"rejected\""),
            "{}",
            confirm.body
        );
        let done = http(
            port,
            "POST",
            "/errors/submit",
            &[("Cookie", &s.cookie), ("Sec-Fetch-Site", "same-origin")],
            &form,
        );
        assert_eq!(done.status, 200, "{}", done.body);
        let name = done
            .body
            .split("<code>")
            .nth(1)
            .unwrap()
            .split("</code>")
            .next()
            .unwrap()
            .to_string();
        assert!(name.starts_with("retry-customers-"), "{name}");
        assert!(repo.path().join(format!("requests/{name}.yaml")).is_file());
        let log = repo.git(&["log", "-1", "--format=%an|%s", "--name-only"]);
        assert!(
            log.starts_with("alice|Retry errored records of map customers"),
            "{log}"
        );
        assert!(log.contains(&format!("requests/{name}.yaml")), "{log}");
        wait_for(Duration::from_secs(60), "the request to complete", || {
            let a = get(port, &format!("/api/v1/requests/{name}"));
            a.status == 200 && a.body.contains("\"Completed\"")
        });
        let request = json(port, &format!("/api/v1/requests/{name}"));
        assert!(
            request["status"]["requestedBy"]
                .as_str()
                .unwrap()
                .starts_with("alice"),
            "{request}"
        );
        let page = get(port, "/requests").body;
        assert!(
            page.contains(&format!("id=\"request-{name}\"")) && page.contains("Completed"),
            "{page}"
        );
        // Selected ids: more than 10,000 cannot be asked here, but unknown ids are Rejected
        // before anything is written.
        let form = format!("csrf={}&do=retry-selected&map=customers&id=999999", s.csrf);
        let confirm = http(
            port,
            "POST",
            "/errors/confirm",
            &[("Cookie", &s.cookie)],
            &form,
        );
        assert!(
            confirm.body.contains("It would be Rejected"),
            "{}",
            confirm.body
        );
        let refused = http(
            port,
            "POST",
            "/errors/submit",
            &[("Cookie", &s.cookie)],
            &form,
        );
        assert_eq!(refused.status, 400, "{}", refused.body);
    });
}

/// `dualwrite dashboard` alone: the pages, without the loop or its routes.
struct Dashboard {
    child: Child,
    port: u16,
}

impl Dashboard {
    /// `dualwrite dashboard` on a free port over `repo`, once it accepts connections.
    fn start(repo: &Repo, env: &[(&str, &str)]) -> Dashboard {
        let port = support::free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_dualwrite"))
            .arg("-C")
            .arg(repo.path())
            .args(["dashboard", "--listen", &format!("127.0.0.1:{port}")])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let d = Dashboard { child, port };
        wait_for(Duration::from_secs(20), "the dashboard", || {
            std::net::TcpStream::connect(("127.0.0.1", d.port)).is_ok()
        });
        d
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn dualwrite_dashboard_serves_the_pages_without_running_the_loop() {
    with_timeout(120, || {
        let repo = demo();
        let d = Dashboard::start(&repo, &[]);
        assert_eq!(get(d.port, "/healthz").status, 200);
        let overview = get(d.port, "/");
        assert_eq!(overview.status, 200);
        assert!(
            overview.body.contains("CompletedWithErrors"),
            "{}",
            overview.body
        );
        // The hostile row was inserted after the demo's pass: nothing ran it, nothing syncs.
        assert!(!get(d.port, "/errors").body.contains("script"));
        assert_eq!(json(d.port, "/api/v1/errors?map=orders")["matched"], 1);
        assert_eq!(get(d.port, "/metrics").status, 404);
    });
}

/// The same server as the PostgreSQL tests use, another database.
fn postgres_admin() -> Option<(tokio::runtime::Runtime, tokio_postgres::Client, String)> {
    let url = std::env::var("DUALWRITE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let connected = runtime.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(&url, tokio_postgres::NoTls),
        )
        .await
    });
    match connected {
        Ok(Ok((client, connection))) => {
            runtime.spawn(connection);
            Some((runtime, client, url))
        }
        Ok(Err(e)) if std::env::var("CI").is_err() => {
            eprintln!("SKIPPED: PostgreSQL unreachable: {e}");
            None
        }
        _ => panic!("PostgreSQL unreachable under CI=true"),
    }
}

/// Keeps the test database until the test ends (pass or fail).
struct Database<'a> {
    runtime: &'a tokio::runtime::Runtime,
    admin: &'a tokio_postgres::Client,
    name: String,
}

impl Database<'_> {
    fn exec(&self, sql: &str) {
        self.runtime
            .block_on(self.admin.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Connections to this database now, from anyone.
    fn connections(&self) -> i64 {
        self.runtime
            .block_on(self.admin.query_one(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1",
                &[&self.name],
            ))
            .unwrap()
            .get(0)
    }
}

impl Drop for Database<'_> {
    fn drop(&mut self) {
        let _ = self.runtime.block_on(self.admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )));
    }
}

#[test]
fn the_dashboard_keeps_its_postgres_connection_and_follows_the_store_as_it_comes_and_goes() {
    let Some((runtime, admin, url)) = postgres_admin() else {
        return;
    };
    let db = Database {
        runtime: &runtime,
        admin: &admin,
        name: format!("dw_dash_{}", std::process::id()),
    };
    db.exec(&format!("CREATE DATABASE {}", db.name));
    let (server, _) = url.rsplit_once('/').unwrap();
    let state_url = format!("{server}/{}", db.name);
    let repo = demo();
    let project = std::fs::read_to_string(repo.path().join("dualwrite.yaml")).unwrap();
    let sqlite_store = "  stateStore:\n    sqlite: { path: .dualwrite/state.db }\n";
    assert!(project.contains(sqlite_store));
    repo.write(
        "dualwrite.yaml",
        &project.replace(
            sqlite_store,
            "  stateStore:\n    postgres: { urlFromEnv: DW_DASH_STATE }\n",
        ),
    );
    let env = [("DW_DASH_STATE", state_url.as_str())];
    let reconcile = || {
        let run = support::run_in(repo.path(), &["reconcile"], &env);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    };
    let d = Dashboard::start(&repo, &env);
    // No store yet.
    assert!(get(d.port, "/").body.contains("No state store yet"));
    assert_eq!(json(d.port, "/api/v1/errors")["matched"], 0);
    // The store appears: the next request reads it.
    reconcile();
    let overview = get(d.port, "/");
    assert!(
        !overview.body.contains("No state store yet"),
        "{}",
        overview.body
    );
    assert!(
        overview.body.contains("ApplicationError"),
        "{}",
        overview.body
    );
    let matched = |query: &str| json(d.port, &format!("/api/v1/errors{query}"))["matched"].clone();
    // The demo's customers with a negative credit limit and its order too large, then
    // the hostile customer's (the second pass copies it).
    assert_eq!(matched("?map=orders"), 1);
    let customers = matched("?map=customers").as_u64().unwrap();
    assert!(customers >= 2, "{customers}");
    // Many requests, one connection kept (none left open between requests before).
    for _ in 0..20 {
        assert_eq!(get(d.port, "/").status, 200);
        assert_eq!(matched("?map=orders"), 1);
    }
    assert_eq!(db.connections(), 1, "the dashboard keeps one connection");
    // The store goes: a request may fail on the kept connection, the next says so.
    let (inside, connection) = runtime
        .block_on(tokio_postgres::connect(&state_url, tokio_postgres::NoTls))
        .unwrap();
    let connection = runtime.spawn(connection);
    runtime
        .block_on(inside.batch_execute("DROP SCHEMA dualwrite_state CASCADE"))
        .unwrap();
    drop(inside);
    runtime.block_on(connection).unwrap().unwrap();
    get(d.port, "/");
    assert!(get(d.port, "/").body.contains("No state store yet"));
    // And comes back, with what a pass records.
    reconcile();
    assert_eq!(matched("?map=orders"), 1);
    assert_eq!(
        matched("?map=orders&state=all"),
        matched("?map=orders&state=all&from=2000-01-01T00:00:00Z")
    );
    drop(d);
}
