//! Delivering alert notifications: one email to the rule's addresses through the project's
//! SMTP server, and one JSON POST to each webhook, each retried with backoff.
//!
//! This module decides nothing about *when* to fire, to whom a rule applies or what action it
//! takes: that is rule evaluation (`src/alert/`). It gets a finished [`Notification`] and the
//! rule's [`Notify`] targets and reports one [`Delivery`] per target.
//!
//! Invariants:
//! - [`send`] never panics and never stops early: every target is tried, even after another
//!   failed, and each gets exactly one `Delivery`.
//! - Secrets never leave this module: webhook URLs (they may carry a token) and SMTP
//!   credentials are read from the environment at send time and are redacted from every error
//!   message, log line and `Debug` output. A missing variable is reported by its *name*.
//! - Headers are built only through lettre's typed API, never by concatenating strings.

mod email;
mod webhook;

use std::time::Duration;

use serde::Serialize;

use crate::config::{Notify, SmtpConfig};

pub use email::email_content;
pub use webhook::webhook_payload;

/// How long one SMTP session or one webhook request may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a rule started firing or stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum NotificationKind {
    Firing,
    Resolved,
}

impl NotificationKind {
    /// `FIRING` / `RESOLVED`, for subjects and summaries.
    fn upper(self) -> &'static str {
        match self {
            Self::Firing => "FIRING",
            Self::Resolved => "RESOLVED",
        }
    }

    /// `firing` / `resolved`, as Alertmanager spells a status.
    fn lower(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One errored record, as a notification shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorLine {
    pub id: i64,
    pub at: String,
    pub error_type: crate::state::ErrorType,
    pub direction: String,
    /// The record's key, as JSON object text.
    pub key: String,
    pub message: String,
    /// The database's own error code (SQLSTATE, MySQL error number), when there is one.
    pub code: Option<String>,
}

/// What happened, ready to be rendered: everything a receiver shows comes from here.
#[derive(Clone, Debug, Serialize)]
pub struct Notification {
    pub rule: String,
    pub map: String,
    pub kind: NotificationKind,
    /// The rule's errorType (`Any`, `ApplicationError`, …).
    pub error_type: String,
    pub count: u64,
    pub threshold: u32,
    /// The rule's window as written (`15m`).
    pub window: String,
    /// What the rule does: `None` | `Pause` | `Stop`.
    pub action: String,
    /// What this firing did, e.g. `Paused map customers`, when it took the action.
    pub action_taken: Option<String>,
    /// The alert that holds the map as this is sent (`None`: nothing holds it).
    pub held_by: Option<String>,
    /// Newest first, up to 5.
    pub newest_errors: Vec<ErrorLine>,
    pub at: chrono::DateTime<chrono::Utc>,
}

impl Notification {
    /// `FIRING pause-on-app-errors: customers — 10 ApplicationError in 15m`.
    fn headline(&self) -> String {
        format!(
            "{} {}: {} — {} {} in {}",
            self.kind.upper(),
            self.rule,
            self.map,
            self.count,
            self.error_type,
            self.window
        )
    }

    /// Whether the map is held, and what ends the hold: a firing that holds it says how to
    /// resume it; a resolution says whether the hold remains (errors that age out never end
    /// a hold) or that nothing holds the map.
    fn hold_note(&self) -> Option<String> {
        let map = &self.map;
        let ends = format!("`dualwrite resume {map}` or a commit that changes its spec.state");
        match (&self.held_by, self.kind) {
            (Some(alert), NotificationKind::Firing) => Some(format!(
                "Map {map} is held by alert {alert} until {ends}. Fix the cause first."
            )),
            (Some(alert), NotificationKind::Resolved) => Some(format!(
                "The hold remains: map {map} stays held by alert {alert} until {ends}."
            )),
            (None, NotificationKind::Resolved) => Some(format!(
                "Nothing holds map {map}: it follows its spec.state, nothing to resume."
            )),
            (None, NotificationKind::Firing) => None,
        }
    }
}

/// The outcome for one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Delivery {
    /// `email`, or `webhook $ENV_NAME` — never the URL.
    pub target: String,
    pub ok: bool,
    /// Attempts made; 0 when the target could not be tried at all (e.g. a missing variable).
    pub attempts: u32,
    /// The last failure, with every secret redacted.
    pub error: Option<String>,
}

/// How often and how patiently each target is tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Attempts per target, the first included (0 counts as 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled before each further one.
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Why one attempt at one target failed. Messages carry no secrets.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotifyError {
    /// The target cannot work as configured; retrying would not help.
    #[error("{0}")]
    Config(String),
    /// The receiver refused for good (SMTP 5xx, HTTP 4xx).
    #[error("{0}")]
    Rejected(String),
    /// Worth another try: network trouble, timeouts, SMTP 4xx, HTTP 5xx/429.
    #[error("{0}")]
    Transient(String),
}

impl NotifyError {
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// The value of the environment variable `name`; an error naming it when unset or not UTF-8.
fn env_secret(name: &str, what: &str) -> Result<String, NotifyError> {
    std::env::var(name).map_err(|_| {
        NotifyError::Config(format!(
            "environment variable {name} ({what}) is not set or not valid UTF-8"
        ))
    })
}

/// Sends to every target of `notify`; blocking; never panics, never returns early: one
/// [`Delivery`] per target (email first, then each webhook in order).
pub fn send(
    n: &Notification,
    notify: &Notify,
    smtp: Option<&SmtpConfig>,
    retry: &Retry,
) -> Vec<Delivery> {
    let mut deliveries = Vec::new();
    if let Some(list) = &notify.email {
        let to = list.addresses();
        if !to.is_empty() {
            deliveries.push(deliver(n, "email".to_string(), retry, || {
                email::send(n, &to, smtp)
            }));
        }
    }
    for hook in &notify.webhook {
        let target = format!("webhook ${}", hook.url_from_env);
        deliveries.push(deliver(n, target, retry, || {
            webhook::send(n, &hook.url_from_env)
        }));
    }
    deliveries
}

/// Runs `attempt` until it succeeds, fails for good, or `retry` is used up. A panic inside an
/// attempt (a bug in a client library) is caught and reported as that target's failure.
fn deliver(
    n: &Notification,
    target: String,
    retry: &Retry,
    attempt: impl Fn() -> Result<(), NotifyError>,
) -> Delivery {
    let max = retry.attempts.max(1);
    let mut backoff = retry.backoff;
    let mut made = 0;
    loop {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&attempt))
            .unwrap_or_else(|_| {
                Err(NotifyError::Transient(
                    "the delivery panicked inside its client library".to_string(),
                ))
            });
        let error = match result {
            Ok(()) => {
                return Delivery {
                    target,
                    ok: true,
                    attempts: made + 1,
                    error: None,
                };
            }
            Err(error) => error,
        };
        if !matches!(error, NotifyError::Config(_)) {
            made += 1;
        }
        tracing::warn!(
            rule = %n.rule,
            map = %n.map,
            target = %target,
            attempt = made,
            error = %error,
            "alert notification failed"
        );
        if !error.is_retryable() || made >= max {
            return Delivery {
                target,
                ok: false,
                attempts: made,
                error: Some(error.to_string()),
            };
        }
        std::thread::sleep(backoff);
        backoff = backoff.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn sample() -> Notification {
        Notification {
            rule: "r".into(),
            map: "m".into(),
            kind: NotificationKind::Firing,
            error_type: "Any".into(),
            count: 1,
            threshold: 1,
            window: "1m".into(),
            action: "None".into(),
            action_taken: None,
            held_by: None,
            newest_errors: vec![],
            at: chrono::Utc::now(),
        }
    }

    fn fast(attempts: u32) -> Retry {
        Retry {
            attempts,
            backoff: Duration::from_millis(1),
        }
    }

    #[test]
    fn transient_failures_are_retried_until_success() {
        let calls = Cell::new(0);
        let d = deliver(&sample(), "t".into(), &fast(3), || {
            calls.set(calls.get() + 1);
            if calls.get() < 3 {
                Err(NotifyError::Transient("busy".into()))
            } else {
                Ok(())
            }
        });
        assert_eq!((d.ok, d.attempts, d.error), (true, 3, None));
    }

    #[test]
    fn permanent_failures_stop_at_once_and_config_errors_count_no_attempt() {
        let d = deliver(&sample(), "t".into(), &fast(3), || {
            Err(NotifyError::Rejected("no".into()))
        });
        assert_eq!((d.ok, d.attempts), (false, 1));
        let d = deliver(&sample(), "t".into(), &fast(3), || {
            Err(NotifyError::Config("unset".into()))
        });
        assert_eq!(
            (d.ok, d.attempts, d.error.as_deref()),
            (false, 0, Some("unset"))
        );
    }

    #[test]
    fn zero_attempts_still_tries_once() {
        let d = deliver(&sample(), "t".into(), &fast(0), || {
            Err(NotifyError::Transient("x".into()))
        });
        assert_eq!(d.attempts, 1);
    }

    #[test]
    fn a_panicking_client_is_a_failed_delivery() {
        let d = deliver(&sample(), "t".into(), &fast(2), || panic!("boom"));
        assert_eq!((d.ok, d.attempts), (false, 2));
    }
}
