//! Email: the plain-text message for a notification, and one SMTP session that sends it to
//! all of a rule's addresses. Headers go through lettre's typed builder only.

use std::fmt::Write as _;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::SmtpTransport;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, Transport};

use super::{Notification, NotifyError, TIMEOUT, env_secret};
use crate::config::{SmtpConfig, SmtpTls};
use crate::endpoint::redact;

/// The subject and plain-text body of the email for `n`.
pub fn email_content(n: &Notification) -> (String, String) {
    let subject = format!("[dualwrite] {}", n.headline());
    let mut body = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(body, "{}", n.headline());
    let _ = writeln!(body);
    let _ = writeln!(body, "Rule:      {}", n.rule);
    let _ = writeln!(body, "Map:       {}", n.map);
    let _ = writeln!(
        body,
        "Errors:    {} {} in the last {} (threshold {})",
        n.count, n.error_type, n.window, n.threshold
    );
    let _ = writeln!(body, "Action:    {}", n.action);
    let taken = n.action_taken.as_deref().unwrap_or("none");
    let _ = writeln!(body, "Taken:     {taken}");
    let _ = writeln!(body, "At:        {}", n.at.to_rfc3339());
    if !n.newest_errors.is_empty() {
        let _ = writeln!(body);
        let _ = writeln!(body, "Newest errors:");
        for e in &n.newest_errors {
            let code = e.code.as_deref().unwrap_or("-");
            let _ = writeln!(
                body,
                "  #{} at {} {} {}",
                e.id, e.at, e.error_type, e.direction
            );
            let _ = writeln!(body, "    key:     {}", e.key);
            let _ = writeln!(body, "    code:    {code}");
            let _ = writeln!(body, "    message: {}", e.message);
        }
    }
    if let Some(note) = n.hold_note() {
        let _ = writeln!(body);
        let _ = writeln!(body, "{note}");
    }
    (subject, body)
}

/// One attempt: build the message and send it in one SMTP session.
pub(super) fn send(
    n: &Notification,
    to: &[&str],
    smtp: Option<&SmtpConfig>,
) -> Result<(), NotifyError> {
    let smtp = smtp.ok_or_else(|| {
        NotifyError::Config(
            "the rule notifies by email but the project has no notifications.smtp".to_string(),
        )
    })?;
    let message = message(n, to, &smtp.from)?;
    let (transport, secrets) = transport(smtp)?;
    transport.send(&message).map(drop).map_err(|e| {
        let text = redact(&format!("SMTP {}:{}: {e}", smtp.host, smtp.port), &secrets);
        if e.is_permanent() {
            NotifyError::Rejected(text)
        } else {
            NotifyError::Transient(text)
        }
    })
}

fn mailbox(address: &str) -> Result<Mailbox, NotifyError> {
    address
        .parse::<Address>()
        .map(|a| Mailbox::new(None, a))
        .map_err(|e| NotifyError::Config(format!("invalid email address {address:?}: {e}")))
}

fn message(n: &Notification, to: &[&str], from: &str) -> Result<Message, NotifyError> {
    let (subject, body) = email_content(n);
    let mut builder = Message::builder()
        .from(mailbox(from)?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for address in to {
        builder = builder.to(mailbox(address)?);
    }
    builder
        .body(body)
        .map_err(|e| NotifyError::Config(format!("cannot build the email: {e}")))
}

/// The transport `smtp` describes, and the secrets to redact from its errors.
fn transport(smtp: &SmtpConfig) -> Result<(SmtpTransport, Vec<String>), NotifyError> {
    let tls_error = |e: lettre::transport::smtp::Error| {
        NotifyError::Config(format!("SMTP {}: cannot set up TLS: {e}", smtp.host))
    };
    let builder = match smtp.tls {
        SmtpTls::None => SmtpTransport::builder_dangerous(smtp.host.as_str()),
        SmtpTls::Starttls => SmtpTransport::starttls_relay(&smtp.host).map_err(tls_error)?,
        SmtpTls::Tls => SmtpTransport::relay(&smtp.host).map_err(tls_error)?,
    };
    let mut builder = builder.port(smtp.port).timeout(Some(TIMEOUT));
    let mut secrets = Vec::new();
    if smtp.username_from_env.is_some() || smtp.password_from_env.is_some() {
        let read = |var: &Option<String>, what| match var {
            Some(name) => env_secret(name, what),
            None => Ok(String::new()),
        };
        let username = read(&smtp.username_from_env, "SMTP username")?;
        let password = read(&smtp.password_from_env, "SMTP password")?;
        secrets.push(password.clone());
        builder = builder.credentials(Credentials::new(username, password));
    }
    Ok((builder.build(), secrets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::{ErrorLine, NotificationKind};

    fn notification(action: &str) -> Notification {
        Notification {
            rule: "pause-on-app-errors".into(),
            map: "customers".into(),
            kind: NotificationKind::Firing,
            error_type: "ApplicationError".into(),
            count: 10,
            threshold: 10,
            window: "15m".into(),
            action: action.into(),
            action_taken: Some("Paused map customers".into()),
            held_by: (action != "None").then(|| "pause-on-app-errors".into()),
            newest_errors: vec![ErrorLine {
                id: 42,
                at: "2026-11-22T10:15:00Z".into(),
                error_type: crate::state::ErrorType::ApplicationError,
                direction: "SourceToDestination".into(),
                key: r#"{"account_no":"A-1"}"#.into(),
                message: "value too long".into(),
                code: Some("22001".into()),
            }],
            at: chrono::Utc::now(),
        }
    }

    #[test]
    fn subject_reads_as_one_line_summary() {
        let (subject, _) = email_content(&notification("Pause"));
        assert_eq!(
            subject,
            "[dualwrite] FIRING pause-on-app-errors: customers — 10 ApplicationError in 15m"
        );
    }

    #[test]
    fn body_tells_how_to_resume_only_when_the_map_is_held() {
        let (_, body) = email_content(&notification("Pause"));
        for needle in ["Paused map customers", "22001", "#42", "value too long"] {
            assert!(body.contains(needle), "{needle} missing from:\n{body}");
        }
        assert!(body.contains("dualwrite resume customers"));
        let (_, body) = email_content(&notification("None"));
        assert!(!body.contains("dualwrite resume"));
    }

    #[test]
    fn a_resolution_says_whether_the_hold_remains_and_what_ends_it() {
        let mut n = notification("Pause");
        n.kind = super::super::NotificationKind::Resolved;
        let (_, body) = email_content(&n);
        assert!(
            body.contains("The hold remains: map customers stays held by alert pause-on-app-errors until `dualwrite resume customers` or a commit that changes its spec.state."),
            "{body}"
        );
        n.held_by = None;
        let (_, body) = email_content(&n);
        assert!(body.contains("Nothing holds map customers"), "{body}");
        assert!(!body.contains("dualwrite resume"), "{body}");
    }

    #[test]
    fn a_header_injection_attempt_is_refused_not_sent() {
        let n = notification("None");
        assert!(message(&n, &["a@example.com\r\nBcc: x@evil.test"], "d@example.com").is_err());
    }
}
