//! Alert rules at run time: sliding windows of recorded errors per map and type, and the
//! evaluation of every rule against them: when a rule starts or stops firing for a map, which
//! action it takes (once per firing) and whether a notification goes out (cooldown,
//! `notifyResolved`). The evaluation is pure; `pass` is the alert work of a reconcile pass
//! (windows loaded from the state store, notifications delivered through `notify`, states
//! saved); the reconciler applies the actions.

pub mod pass;
pub mod test;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::{AlertAction, AlertRule, ErrorTypeSelector};
use crate::state::ErrorType;

pub use crate::clock::Millis;

/// Recorded errors per map, sorted by time, per error type and all together. Counting a
/// window is two binary searches; recording is an append.
#[derive(Debug, Default, Clone)]
pub struct Windows {
    maps: HashMap<String, MapEvents>,
}

#[derive(Debug, Default, Clone)]
struct MapEvents {
    all: Vec<Millis>,
    by_type: HashMap<ErrorType, Vec<Millis>>,
}

fn insert_sorted(v: &mut Vec<Millis>, at: Millis) {
    if v.last().is_none_or(|last| *last <= at) {
        v.push(at);
    } else {
        let i = v.partition_point(|t| *t <= at);
        v.insert(i, at);
    }
}

fn count_since(v: &[Millis], since: Millis, until: Millis) -> u64 {
    (v.partition_point(|t| *t <= until) - v.partition_point(|t| *t < since)) as u64
}

impl Windows {
    pub fn record(&mut self, map: &str, error_type: ErrorType, at: Millis) {
        let events = self.maps.entry(map.to_string()).or_default();
        insert_sorted(&mut events.all, at);
        insert_sorted(events.by_type.entry(error_type).or_default(), at);
    }

    /// Errors of `map` matching `selector` recorded in `[since, until]`.
    pub fn count(
        &self,
        map: &str,
        selector: ErrorTypeSelector,
        since: Millis,
        until: Millis,
    ) -> u64 {
        let Some(events) = self.maps.get(map) else {
            return 0;
        };
        match ErrorType::selected_by(selector) {
            None => count_since(&events.all, since, until),
            Some(one) => events
                .by_type
                .get(&one)
                .map_or(0, |v| count_since(v, since, until)),
        }
    }

    /// Drops what is older than `before`.
    pub fn trim(&mut self, before: Millis) {
        for events in self.maps.values_mut() {
            let n = events.all.partition_point(|t| *t < before);
            events.all.drain(..n);
            for v in events.by_type.values_mut() {
                let n = v.partition_point(|t| *t < before);
                v.drain(..n);
            }
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AlertState {
    #[default]
    Inactive,
    Firing,
}

/// A rule's state for one map: what `status/alerts/<name>.yaml` shows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuleMapState {
    pub state: AlertState,
    /// Errors in the window at the last evaluation.
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_at: Option<String>,
    #[serde(default)]
    pub notifications_sent: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notified_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_taken: Option<String>,
    /// Whether the current firing was notified (a resolution is only announced if so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notified_firing: bool,
}

/// The state of one rule across the maps it matches.
pub type RuleState = BTreeMap<String, RuleMapState>;

/// What changed when a rule was evaluated for a map.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Started firing. `action` runs now (once per firing); `notify` says whether a
    /// notification goes out (false within the cooldown, or with no targets).
    Fired {
        count: u64,
        action: AlertAction,
        notify: bool,
    },
    /// Stopped firing; `notify` per `notifyResolved` and whether the firing was notified.
    Resolved { count: u64, notify: bool },
}

fn has_targets(rule: &AlertRule) -> bool {
    rule.spec.notify.as_ref().is_some_and(|n| {
        n.email.as_ref().is_some_and(|e| !e.addresses().is_empty()) || !n.webhook.is_empty()
    })
}

/// Evaluates `rule` for `map` at `now`. Errors before `resumed_at` do not count.
pub fn evaluate(
    rule: &AlertRule,
    map: &str,
    windows: &Windows,
    resumed_at: Option<Millis>,
    now: Millis,
    state: &mut RuleMapState,
) -> Option<Event> {
    let spec = &rule.spec;
    let window_start = now - spec.window.as_secs() as i64 * 1000;
    // Errors recorded up to the instant of a resume no longer count.
    let since = resumed_at.map_or(window_start, |r| (r + 1).max(window_start));
    let count = windows.count(map, spec.error_type, since, now);
    state.count = count;
    let firing = count >= u64::from(spec.threshold);
    match (state.state, firing) {
        (AlertState::Inactive, true) => {
            state.state = AlertState::Firing;
            state.last_fired_at = Some(crate::clock::format_millis(now));
            let cooled = state
                .last_notified_at
                .as_deref()
                .and_then(crate::clock::parse)
                .is_none_or(|last| now - last >= spec.cooldown.as_secs() as i64 * 1000);
            let notify = has_targets(rule) && cooled;
            state.notified_firing = notify;
            if notify {
                state.notifications_sent += 1;
                state.last_notified_at = Some(crate::clock::format_millis(now));
            }
            state.action_taken = match spec.action {
                AlertAction::None => None,
                AlertAction::Pause => Some(format!("Paused map {map}")),
                AlertAction::Stop => Some(format!("Stopped map {map}")),
            };
            Some(Event::Fired {
                count,
                action: spec.action,
                notify,
            })
        }
        (AlertState::Firing, false) => {
            state.state = AlertState::Inactive;
            let notify = spec.notify_resolved && state.notified_firing && has_targets(rule);
            state.notified_firing = false;
            if notify {
                state.notifications_sent += 1;
            }
            Some(Event::Resolved { count, notify })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml_spec: &str) -> AlertRule {
        let text = format!(
            "apiVersion: dualwrite/v1\nkind: AlertRule\nmetadata: {{ name: r }}\nspec:\n{yaml_spec}"
        );
        serde_saphyr::from_str(&text).unwrap()
    }

    const MIN: Millis = 60_000;

    #[test]
    fn fires_at_threshold_within_window_and_resolves_when_errors_age_out() {
        let r = rule(
            "  maps: [m]\n  errorType: ApplicationError\n  threshold: 3\n  window: 10m\n  notify: { email: a@example.com }\n  action: Pause\n",
        );
        let mut w = Windows::default();
        let mut st = RuleMapState::default();
        w.record("m", ErrorType::ApplicationError, 0);
        w.record("m", ErrorType::NetworkError, MIN);
        w.record("m", ErrorType::ApplicationError, 2 * MIN);
        assert_eq!(evaluate(&r, "m", &w, None, 3 * MIN, &mut st), None);
        w.record("m", ErrorType::ApplicationError, 4 * MIN);
        assert_eq!(
            evaluate(&r, "m", &w, None, 5 * MIN, &mut st),
            Some(Event::Fired {
                count: 3,
                action: AlertAction::Pause,
                notify: true
            })
        );
        // Still firing: the action does not run again.
        assert_eq!(evaluate(&r, "m", &w, None, 6 * MIN, &mut st), None);
        // The first error leaves the 10m window at 10m + 1ms.
        assert_eq!(
            evaluate(&r, "m", &w, None, 10 * MIN + 1, &mut st),
            Some(Event::Resolved {
                count: 2,
                notify: true
            })
        );
    }

    #[test]
    fn errors_before_a_resume_do_not_count() {
        let r = rule("  maps: [m]\n  threshold: 2\n  window: 1h\n  action: Pause\n");
        let mut w = Windows::default();
        let mut st = RuleMapState::default();
        w.record("m", ErrorType::ApplicationError, 0);
        w.record("m", ErrorType::TransformError, MIN);
        assert!(matches!(
            evaluate(&r, "m", &w, None, 2 * MIN, &mut st),
            Some(Event::Fired { notify: false, .. })
        ));
        assert_eq!(
            evaluate(&r, "m", &w, Some(3 * MIN), 3 * MIN, &mut st),
            Some(Event::Resolved {
                count: 0,
                notify: false
            })
        );
    }

    #[test]
    fn cooldown_suppresses_a_repeat_notification_for_the_same_map() {
        let r = rule(
            "  maps: [m]\n  threshold: 1\n  window: 1m\n  cooldown: 1h\n  notify: { email: a@example.com }\n",
        );
        let mut w = Windows::default();
        let mut st = RuleMapState::default();
        w.record("m", ErrorType::ApplicationError, 0);
        assert!(matches!(
            evaluate(&r, "m", &w, None, 0, &mut st),
            Some(Event::Fired { notify: true, .. })
        ));
        assert!(matches!(
            evaluate(&r, "m", &w, None, 2 * MIN, &mut st),
            Some(Event::Resolved { notify: true, .. })
        ));
        w.record("m", ErrorType::ApplicationError, 10 * MIN);
        assert!(matches!(
            evaluate(&r, "m", &w, None, 10 * MIN, &mut st),
            Some(Event::Fired { notify: false, .. })
        ));
        assert!(matches!(
            evaluate(&r, "m", &w, None, 12 * MIN, &mut st),
            Some(Event::Resolved { notify: false, .. })
        ));
        w.record("m", ErrorType::ApplicationError, 70 * MIN);
        assert!(matches!(
            evaluate(&r, "m", &w, None, 70 * MIN, &mut st),
            Some(Event::Fired { notify: true, .. })
        ));
        assert_eq!(st.notifications_sent, 3);
    }
}

/// Every rule of the config with its state and the error windows: what a reconcile pass
/// evaluates after each map's work and after every live batch that recorded errors.
#[derive(Debug, Default)]
pub struct Engine {
    pub rules: Vec<AlertRule>,
    pub windows: Windows,
    /// Per rule name, per map name.
    pub states: BTreeMap<String, RuleState>,
}

impl Engine {
    /// The longest window of any rule: how far back errors must be loaded.
    pub fn longest_window(&self) -> Millis {
        self.rules
            .iter()
            .map(|r| r.spec.window.as_secs() as i64 * 1000)
            .max()
            .unwrap_or(0)
    }

    /// Evaluates every rule matching `map`; returns (rule, event) for each change.
    pub fn evaluate_map(
        &mut self,
        map: &crate::config::TableMap,
        resumed_at: Option<Millis>,
        now: Millis,
    ) -> Vec<(AlertRule, Event)> {
        let mut events = Vec::new();
        for rule in &self.rules {
            if !crate::config::validate::rule_matches(&rule.spec, map) {
                continue;
            }
            let state = self
                .states
                .entry(rule.metadata.name.clone())
                .or_default()
                .entry(map.metadata.name.clone())
                .or_default();
            if let Some(e) = evaluate(
                rule,
                &map.metadata.name,
                &self.windows,
                resumed_at,
                now,
                state,
            ) {
                events.push((rule.clone(), e));
            }
        }
        events
    }

    pub fn state_mut(&mut self, rule: &str, map: &str) -> &mut RuleMapState {
        self.states
            .entry(rule.to_string())
            .or_default()
            .entry(map.to_string())
            .or_default()
    }
}
