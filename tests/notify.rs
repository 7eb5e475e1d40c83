//! Alert notifications delivered to real local receivers: an SMTP server (aiosmtpd, writing a
//! Maildir) and an HTTP server on a plain TcpListener. Covers what the receiver sees, retries
//! with backoff, and that webhook tokens and SMTP secrets never show up in a `Delivery`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

mod support;

use dualwrite::config::{EmailList, Notify, SmtpConfig, SmtpTls, Webhook};
use dualwrite::notify::{
    Delivery, ErrorLine, Notification, NotificationKind, Retry, send, webhook_payload,
};
use support::free_port;
use support::mail::SmtpServer;

// ---------------------------------------------------------------------------------------------
// Harness

/// Runs `test` on its own thread and fails if it takes longer than `secs`.
fn within(secs: u64, test: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        test();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => handle.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {secs}s"),
    }
}

/// Tests here set environment variables, which is only sound while no other thread reads
/// the environment: they run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn set_env(name: &str, value: &str) {
    // SAFETY: every test in this binary holds `serial()`, so no other thread touches the
    // environment while it changes.
    unsafe { std::env::set_var(name, value) }
}

fn fast() -> Retry {
    Retry {
        attempts: 3,
        backoff: Duration::from_millis(10),
    }
}

fn notification(kind: NotificationKind) -> Notification {
    Notification {
        rule: "pause-on-app-errors".into(),
        map: "customers".into(),
        kind,
        error_type: "ApplicationError".into(),
        count: 12,
        threshold: 10,
        window: "15m".into(),
        action: "Pause".into(),
        action_taken: Some("Paused map customers".into()),
        held_by: Some("pause-on-app-errors".into()),
        newest_errors: vec![
            ErrorLine {
                id: 77,
                at: "2026-11-22T10:14:59Z".into(),
                error_type: dualwrite::state::ErrorType::ApplicationError,
                direction: "SourceToDestination".into(),
                key: r#"{"account_no":"A-1077"}"#.into(),
                message: "value too long for type character varying(20)".into(),
                code: Some("22001".into()),
            },
            ErrorLine {
                id: 76,
                at: "2026-11-22T10:14:30Z".into(),
                error_type: dualwrite::state::ErrorType::ApplicationError,
                direction: "SourceToDestination".into(),
                key: r#"{"account_no":"A-1076"}"#.into(),
                message: "duplicate key".into(),
                code: None,
            },
        ],
        at: "2026-11-22T10:15:00Z".parse().unwrap(),
    }
}

fn webhooks(vars: &[&str]) -> Notify {
    Notify {
        email: None,
        webhook: vars
            .iter()
            .map(|v| Webhook {
                url_from_env: v.to_string(),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// SMTP: aiosmtpd writing every message it receives to an mbox file

#[test]
fn email_reaches_every_address_with_rule_map_count_and_newest_error() {
    within(60, || {
        let _serial = serial();
        let Some(server) = SmtpServer::start() else {
            return;
        };
        let smtp = SmtpConfig {
            host: "127.0.0.1".into(),
            port: server.port,
            from: "dualwrite@contoso.example".into(),
            tls: SmtpTls::None,
            username_from_env: None,
            password_from_env: None,
        };
        let notify = Notify {
            email: Some(EmailList::Text("a@example.com, b@example.com".into())),
            webhook: vec![],
        };
        let deliveries = send(
            &notification(NotificationKind::Firing),
            &notify,
            Some(&smtp),
            &fast(),
        );
        assert_eq!(
            deliveries,
            vec![Delivery {
                target: "email".into(),
                ok: true,
                attempts: 1,
                error: None
            }]
        );
        let messages = server.messages();
        assert_eq!(messages.len(), 1, "one message for all addresses");
        let mail = &messages[0];
        assert_eq!(mail.header("To"), "a@example.com, b@example.com");
        assert_eq!(mail.header("From"), "dualwrite@contoso.example");
        assert_eq!(mail.header("X-RcptTo"), "a@example.com, b@example.com");
        assert_eq!(
            mail.header("Subject"),
            "[dualwrite] FIRING pause-on-app-errors: customers — 12 ApplicationError in 15m"
        );
        for needle in [
            "pause-on-app-errors",
            "customers",
            "12 ApplicationError",
            "15m",
            "threshold 10",
            "Pause",
            "Paused map customers",
            "#77",
            "2026-11-22T10:14:59Z",
            "SourceToDestination",
            r#"{"account_no":"A-1077"}"#,
            "22001",
            "value too long for type character varying(20)",
            "dualwrite resume customers",
        ] {
            assert!(
                mail.body.contains(needle),
                "{needle:?} missing from:\n{}",
                mail.body
            );
        }
        drop(server);
    });
}

#[test]
fn one_failing_target_does_not_stop_the_others() {
    within(60, || {
        let _serial = serial();
        let Some(server) = SmtpServer::start() else {
            return;
        };
        let hook = HookServer::start(vec![200]);
        set_env("DUALWRITE_TEST_HOOK_OK", &hook.url("/ok"));
        let smtp = SmtpConfig {
            host: "127.0.0.1".into(),
            port: server.port,
            from: "dualwrite@contoso.example".into(),
            tls: SmtpTls::None,
            username_from_env: None,
            password_from_env: None,
        };
        let notify = Notify {
            email: Some(EmailList::List(vec!["ops@example.com".into()])),
            webhook: webhooks(&["DUALWRITE_TEST_HOOK_NEVER_SET", "DUALWRITE_TEST_HOOK_OK"]).webhook,
        };
        let deliveries = send(
            &notification(NotificationKind::Resolved),
            &notify,
            Some(&smtp),
            &fast(),
        );
        let outcome: Vec<(&str, bool)> = deliveries
            .iter()
            .map(|d| (d.target.as_str(), d.ok))
            .collect();
        assert_eq!(
            outcome,
            [
                ("email", true),
                ("webhook $DUALWRITE_TEST_HOOK_NEVER_SET", false),
                ("webhook $DUALWRITE_TEST_HOOK_OK", true),
            ]
        );
        let mail = &server.messages()[0];
        assert!(mail.header("Subject").starts_with("[dualwrite] RESOLVED "));
        let requests = hook.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].json()["status"], "resolved");
    });
}

#[test]
fn missing_smtp_password_variable_is_named_and_nothing_is_sent() {
    within(30, || {
        let _serial = serial();
        let smtp = SmtpConfig {
            // Nothing listens here: the delivery must fail before connecting.
            host: "127.0.0.1".into(),
            port: free_port(),
            from: "dualwrite@contoso.example".into(),
            tls: SmtpTls::Starttls,
            username_from_env: Some("DUALWRITE_TEST_SMTP_USER".into()),
            password_from_env: Some("DUALWRITE_TEST_SMTP_PASSWORD_UNSET".into()),
        };
        set_env("DUALWRITE_TEST_SMTP_USER", "alerts");
        let notify = Notify {
            email: Some(EmailList::Text("a@example.com".into())),
            webhook: vec![],
        };
        let d = &send(
            &notification(NotificationKind::Firing),
            &notify,
            Some(&smtp),
            &fast(),
        )[0];
        assert!(!d.ok);
        assert_eq!(d.attempts, 0, "a configuration error is not retried");
        let error = d.error.as_deref().unwrap();
        assert!(
            error.contains("DUALWRITE_TEST_SMTP_PASSWORD_UNSET"),
            "{error}"
        );
    });
}

#[test]
fn email_without_project_smtp_fails_clearly() {
    within(30, || {
        let notify = Notify {
            email: Some(EmailList::Text("a@example.com".into())),
            webhook: vec![],
        };
        let d = &send(
            &notification(NotificationKind::Firing),
            &notify,
            None,
            &fast(),
        )[0];
        assert!(!d.ok);
        assert!(d.error.as_deref().unwrap().contains("notifications.smtp"));
    });
}

// ---------------------------------------------------------------------------------------------
// Webhooks: a small HTTP/1.1 server on a TcpListener that records every request

#[derive(Clone, Debug)]
struct Request {
    method: String,
    /// Path and query, as on the request line.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// Answers the n-th request with `statuses[n]` and every later one with the last of them;
/// stops accepting when dropped.
struct HookServer {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl HookServer {
    fn start(statuses: Vec<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let n = {
                    let mut seen = seen.lock().unwrap();
                    seen.push(request);
                    seen.len()
                };
                let status = statuses.get(n - 1).or(statuses.last()).copied();
                let _ = respond(stream, status.unwrap_or(200));
            }
        });
        Self {
            port,
            requests,
            stop,
        }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{path_and_query}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

fn respond(mut stream: TcpStream, status: u16) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    )?;
    stream.flush()
}

/// Sends `n` to one webhook whose URL is in `var`.
fn send_hook(n: &Notification, var: &str) -> Delivery {
    let mut deliveries = send(n, &webhooks(&[var]), None, &fast());
    assert_eq!(deliveries.len(), 1);
    deliveries.remove(0)
}

#[test]
fn webhook_posts_alertmanager_payload_with_text_for_chat_receivers() {
    within(30, || {
        let _serial = serial();
        let hook = HookServer::start(vec![200]);
        set_env(
            "DUALWRITE_TEST_HOOK_PAYLOAD",
            &hook.url("/hook?token=s3cret"),
        );
        let n = notification(NotificationKind::Firing);
        let delivery = send_hook(&n, "DUALWRITE_TEST_HOOK_PAYLOAD");
        assert_eq!(
            delivery,
            Delivery {
                target: "webhook $DUALWRITE_TEST_HOOK_PAYLOAD".into(),
                ok: true,
                attempts: 1,
                error: None
            }
        );

        let requests = hook.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.target, "/hook?token=s3cret");
        let content_type = request.header("Content-Type").unwrap();
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );

        let json = request.json();
        assert_eq!(json["version"], "4");
        assert_eq!(json["status"], "firing");
        assert_eq!(json["receiver"], "dualwrite");
        assert_eq!(json["groupKey"], "pause-on-app-errors/customers");
        let labels = serde_json::json!({
            "alertname": "pause-on-app-errors",
            "map": "customers",
            "errorType": "ApplicationError",
        });
        assert_eq!(json["commonLabels"], labels);
        let alert = &json["alerts"][0];
        assert_eq!(alert["status"], "firing");
        assert_eq!(alert["labels"], labels);
        assert_eq!(alert["startsAt"], "2026-11-22T10:15:00Z");
        assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
        assert!(
            alert["annotations"]["summary"]
                .as_str()
                .unwrap()
                .contains("12 ApplicationError in 15m")
        );
        let text = json["text"].as_str().unwrap();
        for needle in [
            "FIRING pause-on-app-errors: customers",
            "Paused map customers",
            "A-1077",
            "value too long",
            "22001",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from {text}");
        }

        // Dedupe keys carry no time: a later firing of the same rule and map groups with it.
        let mut later = n.clone();
        later.at = "2026-11-23T08:00:00Z".parse().unwrap();
        later.count = 30;
        let again = webhook_payload(&later);
        assert_eq!(again["groupKey"], json["groupKey"]);
        assert_eq!(again["alerts"][0]["fingerprint"], alert["fingerprint"]);
        let mut other = n.clone();
        other.map = "suppliers".into();
        assert_ne!(
            webhook_payload(&other)["alerts"][0]["fingerprint"],
            alert["fingerprint"]
        );
    });
}

#[test]
fn webhook_is_retried_after_server_errors_until_it_succeeds() {
    within(30, || {
        let _serial = serial();
        let hook = HookServer::start(vec![500, 500, 200]);
        set_env("DUALWRITE_TEST_HOOK_FLAKY", &hook.url("/hook?token=s3cret"));
        let d = send_hook(
            &notification(NotificationKind::Firing),
            "DUALWRITE_TEST_HOOK_FLAKY",
        );
        assert_eq!((d.ok, d.attempts, d.error), (true, 3, None));
        assert_eq!(hook.requests().len(), 3);
    });
}

#[test]
fn webhook_failing_for_good_reports_the_status_but_never_the_token() {
    within(30, || {
        let _serial = serial();
        let hook = HookServer::start(vec![500]);
        let url = hook.url("/hook?token=s3cret");
        set_env("DUALWRITE_TEST_HOOK_DOWN", &url);
        let d = send_hook(
            &notification(NotificationKind::Firing),
            "DUALWRITE_TEST_HOOK_DOWN",
        );
        assert_eq!((d.ok, d.attempts), (false, 3));
        assert_eq!(hook.requests().len(), 3);
        let error = d.error.unwrap();
        assert!(error.contains("500"), "{error}");
        assert!(error.contains("DUALWRITE_TEST_HOOK_DOWN"), "{error}");
        assert!(
            !error.contains("s3cret") && !error.contains(&url),
            "{error}"
        );
    });
}

#[test]
fn webhook_client_errors_are_not_retried() {
    within(30, || {
        let _serial = serial();
        let hook = HookServer::start(vec![404]);
        set_env("DUALWRITE_TEST_HOOK_GONE", &hook.url("/gone?token=s3cret"));
        let d = send_hook(
            &notification(NotificationKind::Firing),
            "DUALWRITE_TEST_HOOK_GONE",
        );
        assert_eq!((d.ok, d.attempts), (false, 1));
        assert!(d.error.unwrap().contains("404"));
    });
}

#[test]
fn unreachable_webhook_fails_without_panic_or_url() {
    within(30, || {
        let _serial = serial();
        let url = format!("http://127.0.0.1:{}/hook?token=s3cret", free_port());
        set_env("DUALWRITE_TEST_HOOK_NOWHERE", &url);
        let d = send_hook(
            &notification(NotificationKind::Firing),
            "DUALWRITE_TEST_HOOK_NOWHERE",
        );
        assert_eq!((d.ok, d.attempts), (false, 3));
        let error = d.error.unwrap();
        assert!(
            !error.contains("s3cret") && !error.contains("/hook"),
            "{error}"
        );
        assert!(!error.contains(&url));
    });
}

#[test]
fn missing_webhook_variable_is_named_and_not_retried() {
    within(30, || {
        let _serial = serial();
        let d = send_hook(
            &notification(NotificationKind::Firing),
            "DUALWRITE_TEST_HOOK_NEVER_SET",
        );
        assert_eq!((d.ok, d.attempts), (false, 0));
        let error = d.error.unwrap();
        assert!(error.contains("DUALWRITE_TEST_HOOK_NEVER_SET"), "{error}");
    });
}
