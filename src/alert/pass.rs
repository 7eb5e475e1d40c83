//! The alert work of one reconcile pass: the engine loaded with the config's rules, their
//! stored state and when each was created or last changed (a fingerprint of its spec); a
//! map's rules evaluated after its work and after each live batch that recorded errors, on
//! that map's errors as the state store has them (so windows survive restarts, and a record
//! that fails again keeps the time it was first recorded); notifications delivered in the
//! background while maps sync, or swallowed by `cooldown` (counted and logged); and, at the
//! end of the pass, how each delivery went (only accepted deliveries count as sent; a
//! failure is logged and returned for the terminal) and every rule's state saved.
//!
//! Does not hold or release maps: a firing with an action comes back as a [`Firing`] and
//! the reconciler (the one place where phases change) applies it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::config::{AlertAction, AlertRule, Config, TableMap};
use crate::state::{AppliedRecord, StateError, StateStore};

use super::{Engine, Event, Notice, RuleState};
use crate::clock;

/// A rule that fired for a map with a Pause or Stop action.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub rule: String,
    pub action: AlertAction,
    /// `alert R fired: N NetworkError within 15m`.
    pub what: String,
}

/// A notification on its way: rule, map, the cooldown start it replaced (restored when
/// no target accepted it), and the delivery running in the background.
struct Delivering {
    rule: String,
    map: String,
    kind: crate::notify::NotificationKind,
    previous_notified_at: Option<String>,
    handle: tokio::task::JoinHandle<Vec<crate::notify::Delivery>>,
}

/// A notification no target accepted, or a target that refused it: for the terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct Undelivered {
    pub rule: String,
    pub map: String,
    /// Each failed target with its error, `; `-separated (no secrets).
    pub error: String,
}

/// What the alert work of a pass leaves: each rule's state per matched map, and the
/// deliveries that failed.
#[derive(Debug, Default)]
pub struct AlertOutcome {
    pub states: BTreeMap<String, RuleState>,
    pub undelivered: Vec<Undelivered>,
}

/// A rule's state as the store keeps it: the fingerprint of the spec it was evaluated
/// with, since when that spec is in force, and its state per map.
#[derive(Serialize, Deserialize, Debug, Default)]
struct StoredRule {
    fingerprint: String,
    since: String,
    maps: RuleState,
}

/// A rule's stored state: as this version keeps it, or as one before fingerprints kept it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Current(StoredRule),
    Before(RuleState),
}

/// The SHA-256 of a rule's spec as JSON: a change of it is a change of the rule.
fn fingerprint(rule: &AlertRule) -> String {
    let spec = serde_json::to_vec(&rule.spec).expect("rule spec serializes");
    hex::encode(sha2::Sha256::digest(&spec))
}

/// The alert rules of a pass and the deliveries it started.
pub struct PassAlerts {
    engine: Engine,
    deliveries: Vec<Delivering>,
    smtp: Option<crate::config::SmtpConfig>,
}

impl PassAlerts {
    /// The config's rules with their stored state; a rule that is new, or whose spec
    /// changed, counts from now.
    pub fn load(store: &dyn StateStore, cfg: &Config) -> Result<PassAlerts, StateError> {
        let mut engine = Engine {
            rules: cfg.alerts.iter().map(|a| a.resource.clone()).collect(),
            ..Default::default()
        };
        let now = clock::millis(chrono::Utc::now());
        for rule in &engine.rules {
            let name = rule.metadata.name.clone();
            let stored = store.alert_state(&name)?;
            let since = match stored.map(serde_json::from_value::<Stored>) {
                Some(Ok(Stored::Current(stored))) => {
                    engine.states.insert(name.clone(), stored.maps);
                    clock::parse(&stored.since).filter(|_| stored.fingerprint == fingerprint(rule))
                }
                // Kept by an older dualwrite, without a fingerprint: counts from now.
                Some(Ok(Stored::Before(maps))) => {
                    engine.states.insert(name.clone(), maps);
                    None
                }
                // New, or unreadable: counts from now.
                _ => None,
            };
            engine.since.insert(name, since.unwrap_or(now));
        }
        Ok(PassAlerts {
            engine,
            deliveries: Vec::new(),
            smtp: cfg
                .project
                .resource
                .spec
                .notifications
                .as_ref()
                .and_then(|n| n.smtp.clone()),
        })
    }

    /// Loads `map`'s errors of the longest window from the store.
    fn reload_windows(
        &mut self,
        store: &dyn StateStore,
        map: &str,
        now: i64,
    ) -> Result<(), StateError> {
        let since = clock::format_millis(now - self.engine.longest_window());
        let windows = &mut self.engine.windows;
        windows.clear_map(map);
        for e in store.error_events_since(&since, Some(map))? {
            if let (Some(first), Some(at)) = (clock::parse(&e.first_at), clock::parse(&e.last_at)) {
                windows.record_failure(map, e.error_type, first, at);
            }
        }
        Ok(())
    }

    /// Evaluates `map`'s rules on its errors in the store; errors first recorded before
    /// `resumed_at` (the last end of a hold) do not count. `held_by` is the alert that
    /// holds the map now. Logs what fired, resolved or was suppressed, starts the
    /// notifications, and returns the firings that ask to hold the map.
    pub fn observe(
        &mut self,
        store: &dyn StateStore,
        map: &TableMap,
        resumed_at: Option<&str>,
        held_by: Option<&str>,
    ) -> Result<Vec<Firing>, StateError> {
        let name = map.metadata.name.clone();
        if !self
            .engine
            .rules
            .iter()
            .any(|r| crate::config::validate::rule_matches(&r.spec, map))
        {
            return Ok(Vec::new());
        }
        let now_ms = clock::millis(chrono::Utc::now());
        self.reload_windows(store, &name, now_ms)?;
        let resumed_at = resumed_at.and_then(clock::parse);
        let notified_before: BTreeMap<String, Option<String>> = self
            .engine
            .states
            .iter()
            .map(|(rule, maps)| {
                let at = maps.get(&name).and_then(|s| s.last_notified_at.clone());
                (rule.clone(), at)
            })
            .collect();
        let mut firings = Vec::new();
        for (rule, event) in self.engine.evaluate_map(map, resumed_at, now_ms) {
            let rule_name = rule.metadata.name.clone();
            let (kind, count, notify, held) = match event {
                Event::Fired {
                    count,
                    action,
                    notice,
                } => {
                    let what = format!(
                        "alert {rule_name} fired: {count} {:?} within {}",
                        rule.spec.error_type, rule.spec.window
                    );
                    store.log(&name, &clock::now_secs(), "AlertFired", &what)?;
                    // The reconciler holds the map for the first rule that fires.
                    let held = match action {
                        AlertAction::None => held_by.map(str::to_string),
                        _ => Some(held_by.unwrap_or(&rule_name).to_string()),
                    };
                    if action != AlertAction::None {
                        firings.push(Firing {
                            rule: rule_name.clone(),
                            action,
                            what,
                        });
                    }
                    if notice == Notice::Suppressed {
                        let message = format!(
                            "alert {rule_name}: notification suppressed, cooldown {} since the last one",
                            rule.spec.cooldown
                        );
                        tracing::info!(map = %name, rule = %rule_name, "{message}");
                        store.log(
                            &name,
                            &clock::now_secs(),
                            "NotificationSuppressed",
                            &message,
                        )?;
                    }
                    (
                        crate::notify::NotificationKind::Firing,
                        count,
                        notice == Notice::Send,
                        held,
                    )
                }
                Event::Resolved { count, notify } => {
                    let state = self.engine.state_mut(&rule_name, &name);
                    if held_by != Some(rule_name.as_str()) {
                        // Nothing of this firing holds the map any more.
                        state.action_taken = None;
                    }
                    store.log(
                        &name,
                        &clock::now_secs(),
                        "AlertResolved",
                        &format!("alert {rule_name} resolved: {count} in the window"),
                    )?;
                    let held = held_by.map(str::to_string);
                    (
                        crate::notify::NotificationKind::Resolved,
                        count,
                        notify,
                        held,
                    )
                }
            };
            let Some(targets) = rule.spec.notify.clone().filter(|_| notify) else {
                continue;
            };
            let newest = store
                .open_errors(&name, 5)?
                .into_iter()
                .map(|e| crate::notify::ErrorLine {
                    id: e.id,
                    at: e.last_at,
                    error_type: e.error_type,
                    direction: e.direction,
                    key: e.key,
                    message: e.message,
                    code: e.code,
                })
                .collect();
            let state = self.engine.state_mut(&rule_name, &name);
            let n = crate::notify::Notification {
                rule: rule_name.clone(),
                map: name.clone(),
                kind,
                error_type: format!("{:?}", rule.spec.error_type),
                count,
                threshold: rule.spec.threshold,
                window: rule.spec.window.to_string(),
                action: format!("{:?}", rule.spec.action),
                action_taken: state
                    .action_taken
                    .clone()
                    .filter(|_| kind == crate::notify::NotificationKind::Firing),
                held_by: held,
                newest_errors: newest,
                at: chrono::Utc::now(),
            };
            // Evaluation started the cooldown; it stands only if a target accepts.
            let previous_notified_at = notified_before.get(&rule_name).cloned().flatten();
            let smtp = self.smtp.clone();
            let handle = tokio::task::spawn_blocking(move || {
                crate::notify::send(
                    &n,
                    &targets,
                    smtp.as_ref(),
                    &crate::notify::Retry::default(),
                )
            });
            self.deliveries.push(Delivering {
                rule: rule_name,
                map: name.clone(),
                kind,
                previous_notified_at,
                handle,
            });
        }
        Ok(firings)
    }

    /// Waits for the deliveries and records how each went (accepted deliveries count as
    /// sent; failures go to `lastDeliveryError`, the activity log and the outcome), saves
    /// every rule's state with its fingerprint, and forgets rules removed from the config.
    pub async fn finish(
        mut self,
        store: &dyn StateStore,
        cfg: &Config,
        revision: &str,
    ) -> Result<AlertOutcome, StateError> {
        let mut undelivered = Vec::new();
        for d in std::mem::take(&mut self.deliveries) {
            let results = d.handle.await.unwrap_or_default();
            let failed: Vec<String> = results
                .iter()
                .filter(|d| !d.ok)
                .map(|d| format!("{}: {}", d.target, d.error.clone().unwrap_or_default()))
                .collect();
            let accepted = results.iter().filter(|d| d.ok).count() as u64;
            let state = self.engine.state_mut(&d.rule, &d.map);
            state.notifications_sent += accepted;
            if accepted == 0 {
                // Nobody heard of this firing: no cooldown from it, and no resolution to announce.
                state.last_notified_at = d.previous_notified_at;
                if d.kind == crate::notify::NotificationKind::Firing {
                    state.notified_firing = false;
                }
            }
            state.last_delivery_error = (!failed.is_empty()).then(|| failed.join("; "));
            if let Some(error) = &state.last_delivery_error {
                let message = format!("alert {}: {error}", d.rule);
                tracing::warn!(map = %d.map, rule = %d.rule, "notification not delivered: {error}");
                store.log(&d.map, &clock::now_secs(), "NotificationFailed", &message)?;
                undelivered.push(Undelivered {
                    rule: d.rule,
                    map: d.map,
                    error: error.clone(),
                });
            }
        }
        let mut states = BTreeMap::new();
        let now = clock::millis(chrono::Utc::now());
        for located in &cfg.alerts {
            let rule = &located.resource;
            let name = &rule.metadata.name;
            let state = self.engine.states.get(name).cloned().unwrap_or_default();
            let stored = StoredRule {
                fingerprint: fingerprint(rule),
                since: clock::format_millis(self.engine.since.get(name).copied().unwrap_or(now)),
                maps: state.clone(),
            };
            store.save_alert_state(
                name,
                &serde_json::to_value(&stored).expect("state serializes"),
            )?;
            store.put_alert(&AppliedRecord {
                name: name.clone(),
                applied: serde_json::to_value(rule).expect("rule serializes"),
                revision: Some(revision.to_string()),
                state: None,
            })?;
            states.insert(name.clone(), state);
        }
        for applied in store.alerts()? {
            if !cfg
                .alerts
                .iter()
                .any(|a| a.resource.metadata.name == applied.name)
            {
                store.forget_alert(&applied.name)?;
            }
        }
        Ok(AlertOutcome {
            states,
            undelivered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_kept_before_fingerprints_is_read_and_counts_from_now() {
        let before = serde_json::json!({ "customers": { "state": "Firing", "count": 3 } });
        let Ok(Stored::Before(maps)) = serde_json::from_value::<Stored>(before) else {
            panic!("the old shape is read");
        };
        assert_eq!(maps["customers"].count, 3);
        let current = serde_json::to_value(StoredRule {
            fingerprint: "f".into(),
            since: "2026-12-07T00:00:00.000Z".into(),
            maps,
        })
        .unwrap();
        assert!(matches!(
            serde_json::from_value::<Stored>(current),
            Ok(Stored::Current(StoredRule { fingerprint, .. })) if fingerprint == "f"
        ));
    }
}
