//! Webhooks: an Alertmanager-style JSON payload (version 4) with a `text` field that Slack
//! incoming webhooks and Teams connectors display, POSTed to a URL read from the environment.
//! The URL may carry a token: it is redacted from every error message.

use serde_json::{Value, json};

use super::{Notification, NotificationKind, NotifyError, TIMEOUT, env_secret};
use crate::endpoint::{redact, url_secrets};

/// The JSON body POSTed to every webhook for `n`.
pub fn webhook_payload(n: &Notification) -> Value {
    let status = n.kind.lower();
    let at = crate::clock::secs(n.at);
    let ends_at = match n.kind {
        NotificationKind::Resolved => at.as_str(),
        NotificationKind::Firing => "0001-01-01T00:00:00Z", // Alertmanager's "not ended yet"
    };
    let labels = json!({ "alertname": n.rule, "map": n.map, "errorType": n.error_type });
    let summary = n.headline();
    let mut description = format!(
        "{} {} errors on map {} in the last {} (threshold {}); action: {}",
        n.count, n.error_type, n.map, n.window, n.threshold, n.action
    );
    if let Some(taken) = &n.action_taken {
        description.push_str(&format!(" — {taken}"));
    }
    let mut text = format!("[dualwrite] {summary}");
    if let Some(taken) = &n.action_taken {
        text.push_str(&format!(" — {taken}"));
    }
    if let Some(note) = n.hold_note() {
        description.push_str(&format!(" {note}"));
        text.push_str(&format!("\n{note}"));
    }
    for e in &n.newest_errors {
        let code = e
            .code
            .as_deref()
            .map(|c| format!(" [{c}]"))
            .unwrap_or_default();
        text.push_str(&format!(
            "\n• #{} {} {} {} key {}{code}: {}",
            e.id, e.at, e.error_type, e.direction, e.key, e.message
        ));
    }
    json!({
        "version": "4",
        "status": status,
        "receiver": "dualwrite",
        "externalURL": "",
        "truncatedAlerts": 0,
        "groupKey": format!("{}/{}", n.rule, n.map),
        "groupLabels": { "alertname": n.rule, "map": n.map },
        "commonLabels": labels,
        "commonAnnotations": { "summary": summary, "description": description },
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": { "summary": summary, "description": description },
            "startsAt": at,
            "endsAt": ends_at,
            "generatorURL": "",
            "fingerprint": fingerprint(&n.rule, &n.map),
            "newestErrors": n.newest_errors,
        }],
        "text": text,
    })
}

/// A stable identity for (rule, map): 64-bit FNV-1a, as 16 hex digits. Not `DefaultHasher`,
/// whose output may change between Rust releases.
fn fingerprint(rule: &str, map: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in rule.bytes().chain([0]).chain(map.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// One attempt: POST the payload to the URL in the variable `var`.
pub(super) fn send(n: &Notification, var: &str) -> Result<(), NotifyError> {
    let url = env_secret(var, "webhook URL")?;
    let secrets = secrets(&url);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let response = agent
        .post(url.as_str())
        .send_json(webhook_payload(n))
        .map_err(|e| {
            let text = redact(&format!("webhook ${var}: {e}"), &secrets);
            match e {
                ureq::Error::BadUri(_)
                | ureq::Error::Http(_)
                | ureq::Error::RequireHttpsOnly(_) => NotifyError::Config(text),
                _ => NotifyError::Transient(text),
            }
        })?;
    let status = response.status().as_u16();
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(NotifyError::Transient(format!(
            "webhook ${var}: the receiver answered HTTP {status}"
        ))),
        _ => Err(NotifyError::Rejected(format!(
            "webhook ${var}: the receiver answered HTTP {status}"
        ))),
    }
}

/// What must never appear in a message: the URL, its password, its path and query (Slack and
/// Teams put the token in the path; others in the query), and each query value.
fn secrets(url: &str) -> Vec<String> {
    let mut secrets = url_secrets(url);
    if let Some((_, rest)) = url.split_once("://")
        && let Some(slash) = rest.find('/')
    {
        let path_and_query = &rest[slash..];
        secrets.push(path_and_query.to_string());
        if let Some((path, query)) = path_and_query.split_once('?') {
            secrets.push(path.to_string());
            secrets.push(query.to_string());
            secrets.extend(
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('=').map(|(_, v)| v.to_string())),
            );
        }
    }
    // Longest first, so a part never leaves the rest of a longer secret behind.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_stable_and_separates_fields() {
        assert_eq!(fingerprint("r", "m"), fingerprint("r", "m"));
        assert_ne!(fingerprint("ab", "c"), fingerprint("a", "bc"));
        assert_eq!(fingerprint("", "").len(), 16);
    }

    #[test]
    fn every_part_of_a_tokened_url_is_redacted() {
        let url = "https://hooks.example.com/services/T0/B0/XyZsecret?token=s3cret&x=1";
        let s = secrets(url);
        let msg = format!("failed {url} and /services/T0/B0/XyZsecret and s3cret");
        let out = redact(&msg, &s);
        assert!(
            !out.contains("s3cret") && !out.contains("XyZsecret"),
            "{out}"
        );
        assert!(out.contains("failed ***"));
    }
}
