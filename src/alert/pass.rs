//! The alert work of one reconcile pass: the engine loaded with the config's rules, their
//! stored state and the errors recorded within the longest window (so windows survive
//! restarts); a map's rules evaluated after its work and after each live batch that
//! recorded errors; notifications delivered in the background while maps sync; and, at the
//! end of the pass, how each delivery went and every rule's state saved.
//!
//! Does not hold or release maps: a firing with an action comes back as a [`Firing`] and
//! the reconciler (the one place where phases change) applies it.

use std::collections::BTreeMap;

use crate::config::{AlertAction, Config, TableMap};
use crate::state::{AppliedRecord, StateError, StateStore};

use super::{Engine, Event, RuleState};
use crate::clock;
use crate::state::ErrorType;

/// A rule that fired for a map with a Pause or Stop action.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub rule: String,
    pub action: AlertAction,
    /// `alert R fired: N NetworkError within 15m`.
    pub what: String,
}

type Delivering = (
    String,
    String,
    tokio::task::JoinHandle<Vec<crate::notify::Delivery>>,
);

/// The alert rules of a pass and the deliveries it started.
pub struct PassAlerts {
    engine: Engine,
    deliveries: Vec<Delivering>,
    smtp: Option<crate::config::SmtpConfig>,
}

impl PassAlerts {
    /// The config's rules, their stored state, and the errors of the longest window.
    pub fn load(store: &dyn StateStore, cfg: &Config) -> Result<PassAlerts, StateError> {
        let mut engine = Engine {
            rules: cfg.alerts.iter().map(|a| a.resource.clone()).collect(),
            ..Default::default()
        };
        for rule in &engine.rules {
            if let Some(v) = store.alert_state(&rule.metadata.name)?
                && let Ok(state) = serde_json::from_value(v)
            {
                engine.states.insert(rule.metadata.name.clone(), state);
            }
        }
        if !engine.rules.is_empty() {
            let since =
                clock::format_millis(clock::millis(chrono::Utc::now()) - engine.longest_window());
            for (map, error_type, at) in store.error_events_since(&since)? {
                if let Some(at) = clock::parse(&at) {
                    engine.windows.record(&map, error_type, at);
                }
            }
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

    /// Counts the errors `recorded` for `map` (type, RFC 3339 time) and evaluates its
    /// rules; errors before `resumed_at` do not count. Logs what fired or resolved, starts
    /// the notifications, and returns the firings that ask to hold the map.
    pub fn observe(
        &mut self,
        store: &dyn StateStore,
        map: &TableMap,
        recorded: Vec<(ErrorType, String)>,
        resumed_at: Option<&str>,
    ) -> Result<Vec<Firing>, StateError> {
        let name = map.metadata.name.clone();
        for (error_type, at) in recorded {
            if let Some(at) = clock::parse(&at) {
                self.engine.windows.record(&name, error_type, at);
            }
        }
        let resumed_at = resumed_at.and_then(clock::parse);
        let now_ms = clock::millis(chrono::Utc::now());
        let mut firings = Vec::new();
        for (rule, event) in self.engine.evaluate_map(map, resumed_at, now_ms) {
            let rule_name = rule.metadata.name.clone();
            let (kind, count, notify) = match event {
                Event::Fired {
                    count,
                    action,
                    notify,
                } => {
                    let what = format!(
                        "alert {rule_name} fired: {count} {:?} within {}",
                        rule.spec.error_type, rule.spec.window
                    );
                    store.log(&name, &clock::now_secs(), "AlertFired", &what)?;
                    if action != AlertAction::None {
                        firings.push(Firing {
                            rule: rule_name.clone(),
                            action,
                            what,
                        });
                    }
                    (crate::notify::NotificationKind::Firing, count, notify)
                }
                Event::Resolved { count, notify } => {
                    store.log(
                        &name,
                        &clock::now_secs(),
                        "AlertResolved",
                        &format!("alert {rule_name} resolved: {count} in the window"),
                    )?;
                    (crate::notify::NotificationKind::Resolved, count, notify)
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
            let n = crate::notify::Notification {
                rule: rule_name.clone(),
                map: name.clone(),
                kind,
                error_type: format!("{:?}", rule.spec.error_type),
                count,
                threshold: rule.spec.threshold,
                window: rule.spec.window.to_string(),
                action: format!("{:?}", rule.spec.action),
                action_taken: self
                    .engine
                    .state_mut(&rule_name, &name)
                    .action_taken
                    .clone()
                    .filter(|_| kind == crate::notify::NotificationKind::Firing),
                newest_errors: newest,
                at: chrono::Utc::now(),
            };
            let smtp = self.smtp.clone();
            let handle = tokio::task::spawn_blocking(move || {
                crate::notify::send(
                    &n,
                    &targets,
                    smtp.as_ref(),
                    &crate::notify::Retry::default(),
                )
            });
            self.deliveries.push((rule_name, name.clone(), handle));
        }
        Ok(firings)
    }

    /// Waits for the deliveries and records how each went, saves every rule's state and
    /// applied spec, and forgets rules removed from the config. Returns each rule's state.
    pub async fn finish(
        mut self,
        store: &dyn StateStore,
        cfg: &Config,
        revision: &str,
    ) -> Result<BTreeMap<String, RuleState>, StateError> {
        for (rule, map, handle) in std::mem::take(&mut self.deliveries) {
            let results = handle.await.unwrap_or_default();
            let failed: Vec<String> = results
                .iter()
                .filter(|d| !d.ok)
                .map(|d| format!("{}: {}", d.target, d.error.clone().unwrap_or_default()))
                .collect();
            let state = self.engine.state_mut(&rule, &map);
            state.last_delivery_error = (!failed.is_empty()).then(|| failed.join("; "));
            if !failed.is_empty() {
                store.log(
                    &map,
                    &clock::now_secs(),
                    "NotificationFailed",
                    &format!("alert {rule}: {}", failed.join("; ")),
                )?;
            }
        }
        let mut states = BTreeMap::new();
        for located in &cfg.alerts {
            let rule = &located.resource;
            let state = self
                .engine
                .states
                .get(&rule.metadata.name)
                .cloned()
                .unwrap_or_default();
            store.save_alert_state(
                &rule.metadata.name,
                &serde_json::to_value(&state).expect("state serializes"),
            )?;
            store.put_alert(&AppliedRecord {
                name: rule.metadata.name.clone(),
                applied: serde_json::to_value(rule).expect("rule serializes"),
                revision: Some(revision.to_string()),
                state: None,
            })?;
            states.insert(rule.metadata.name.clone(), state);
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
        Ok(states)
    }
}
