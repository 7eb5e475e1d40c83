//! The dashboard in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven over WebDriver with fantoccini) against a real `dualwrite run` on the demo's
//! SQLite apps: open the overview, follow a map, filter the error view by map and type, open
//! a record (a hostile value shows as text), sign in with the token, press "Retry all
//! matching", see the request committed, and after the next pass the request Completed.
//! Keeps screenshots of the overview and the error view in `target/screenshots/` (the
//! README's are copied from there into docs/).
//!
//! Without chromedriver the test is a loud skip, or a failure under `CI=true` (`.ci/run`
//! installs it).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use support::dashboard::{HOSTILE, TOKEN, demo};
use support::service::{Service, wait_for};

const DRIVER: &str = "/usr/bin/chromedriver";

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
        .at_most(Duration::from_secs(20))
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

async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

#[test]
fn an_admin_filters_errors_and_retries_them_in_chromium() {
    if !std::path::Path::new(DRIVER).exists() {
        assert!(
            std::env::var("CI").is_err(),
            "{DRIVER} is missing: .ci/run installs chromium and chromium-driver"
        );
        eprintln!("SKIPPED: {DRIVER} is missing (apt-get install chromium chromium-driver)");
        return;
    }
    let repo = demo();
    let service = Service::start(
        repo.path(),
        &["--interval", "2s", "--dashboard-token-from-env", TOKEN.0],
        &[TOKEN],
    );
    let base = format!("http://127.0.0.1:{}", service.port);
    wait_for(Duration::from_secs(30), "the hostile row's error", || {
        support::service::http_get(service.port, "/api/v1/errors?map=customers&phase=Live")
            .1
            .contains("script")
    });
    let driver_port = support::free_port();
    let _driver = Driver(
        Command::new(DRIVER)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(Duration::from_secs(20), "chromedriver", || {
        std::net::TcpStream::connect(("127.0.0.1", driver_port)).is_ok()
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let c = browser(driver_port).await;
        let result = tokio::time::timeout(Duration::from_secs(150), async {
            // The overview, then a map.
            c.goto(&format!("{base}/")).await.unwrap();
            let maps = text(&c, "#maps").await;
            assert!(
                maps.contains("customers") && maps.contains("orders"),
                "{maps}"
            );
            screenshot(&c, "dashboard-overview.png").await;
            click_to(&c, "a[href='/maps/customers']", "#conditions").await;
            assert_eq!(text(&c, "h1").await, "Map customers");
            assert!(text(&c, "body").await.contains("SourceToDestination"));
            // The error view, filtered by map and type with the form.
            c.goto(&format!("{base}/errors")).await.unwrap();
            let form = c.form(Locator::Css("form.filter")).await.unwrap();
            form.set_by_name("map", "customers").await.unwrap();
            form.set_by_name("type", "ApplicationError").await.unwrap();
            c.find(Locator::Css("form.filter button"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            let mut url = c.current_url().await.unwrap();
            for _ in 0..80 {
                if url.as_str().contains("type=ApplicationError") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                url = c.current_url().await.unwrap();
            }
            assert!(
                url.as_str().contains("map=customers")
                    && url.as_str().contains("type=ApplicationError"),
                "{url}"
            );
            let rows = c.find_all(Locator::Css("table.errors tr")).await.unwrap();
            assert!(rows.len() >= 3, "a header and the records");
            let listing = text(&c, "table.errors").await;
            assert!(
                listing.contains(HOSTILE),
                "the hostile key shows as text: {listing}"
            );
            screenshot(&c, "dashboard-errors.png").await;
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
            // Sign in with the token, then Retry all matching for the filter.
            c.goto(&format!("{base}/login")).await.unwrap();
            let login = c.form(Locator::Css("form")).await.unwrap();
            login.set_by_name("token", TOKEN.1).await.unwrap();
            login.submit().await.unwrap();
            // The sign-in answers with a redirect that sets the session cookie: wait for it.
            let mut signed_in = false;
            for _ in 0..80 {
                c.goto(&format!(
                    "{base}/errors?map=customers&type=ApplicationError"
                ))
                .await
                .unwrap();
                if c.find(Locator::Css("button[value='retry-all']"))
                    .await
                    .is_ok()
                {
                    signed_in = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            assert!(
                signed_in,
                "signed in, the error view has Retry all matching"
            );
            click_to(&c, "button[value='retry-all']", "#confirm-matched").await;
            let confirm = text(&c, "#confirm-matched").await;
            assert!(confirm.starts_with("It matches"), "{confirm}");
            click_to(&c, "#submit", "#submitted").await;
            let submitted = text(&c, "#submitted code").await;
            assert!(submitted.starts_with("retry-customers-"), "{submitted}");
            let log = repo.git(&["log", "-1", "--format=%an", "--name-only"]);
            assert!(
                log.starts_with("alice") && log.contains(&format!("requests/{submitted}.yaml")),
                "{log}"
            );
            // The requests page shows it Completed after the next pass.
            let row = format!("#request-{submitted} td.state");
            let mut state = String::new();
            for _ in 0..120 {
                c.goto(&format!("{base}/requests")).await.unwrap();
                state = text(&c, &row).await;
                if state == "Completed" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            assert_eq!(state, "Completed");
        })
        .await;
        c.close().await.unwrap();
        result.expect("the browser test timed out");
    });
}
