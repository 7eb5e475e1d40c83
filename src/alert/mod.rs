//! Alert rules at run time: sliding windows of recorded errors per map and type, and the
//! evaluation of every rule against them: when a rule starts or stops firing for a map, which
//! action it takes (once per firing) and whether a notification goes out or is swallowed by
//! its cooldown (`notifyResolved`). What a rule counts has a [`Baseline`] besides its window:
//! nothing that failed before the rule was created or last changed, and no errored record
//! first recorded before the last end of a hold on the map. The evaluation is pure; `pass` is
//! the alert work of a reconcile pass (windows loaded from the state store, notifications
//! delivered through `notify`, states saved); the reconciler applies the actions.

pub mod pass;
pub mod test;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::config::{AlertAction, AlertRule, ErrorTypeSelector};
use crate::state::ErrorType;

pub use crate::clock::Millis;

/// Recorded errors per map, sorted by time of their latest failure, per error type and all
/// together, each with the time its errored record was first recorded. Counting a window is
/// two binary searches and a look at what lies between; recording is an append.
#[derive(Debug, Default, Clone)]
pub struct Windows {
    maps: HashMap<String, MapEvents>,
}

/// One error event: when it failed (`at`) and when its errored record was first recorded
/// (`first`; a record that fails again keeps it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failed {
    at: Millis,
    first: Millis,
}

#[derive(Debug, Default, Clone)]
struct MapEvents {
    all: Vec<Failed>,
    by_type: HashMap<ErrorType, Vec<Failed>>,
}

fn insert_sorted(v: &mut Vec<Failed>, e: Failed) {
    if v.last().is_none_or(|last| last.at <= e.at) {
        v.push(e);
    } else {
        let i = v.partition_point(|t| t.at <= e.at);
        v.insert(i, e);
    }
}

fn count_in(v: &[Failed], counted: &Counted, until: Millis) -> u64 {
    let (from, to) = (
        v.partition_point(|t| t.at < counted.since),
        v.partition_point(|t| t.at <= until),
    );
    match counted.first_after {
        None => to.saturating_sub(from) as u64,
        Some(after) => v
            .get(from..to)
            .unwrap_or_default()
            .iter()
            .filter(|e| e.first > after)
            .count() as u64,
    }
}

/// Which recorded errors a rule counts for a map: those that failed at or after `since`
/// (the later of the window's start and the rule's creation or last change) whose errored
/// record was first recorded after `first_after` (the last end of a hold on the map).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub since: Millis,
    pub first_after: Option<Millis>,
}

/// When a rule's count for a map starts, apart from its window: the rule's creation or last
/// change, and the last end of a hold on the map. What was recorded before either never
/// counts: adding a rule never fires on the past, and a map is never held again for the
/// errors it was held for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Baseline {
    /// When the rule was created or its spec last changed.
    pub rule_since: Option<Millis>,
    /// When a hold on the map last ended (`dualwrite resume`, a commit of `spec.state`).
    pub hold_ended: Option<Millis>,
}

impl Baseline {
    /// What a rule with this window counts at `now`.
    pub fn counted(&self, window_ms: Millis, now: Millis) -> Counted {
        let window_start = now - window_ms;
        Counted {
            since: self
                .rule_since
                .map_or(window_start, |r| r.max(window_start)),
            first_after: self.hold_ended,
        }
    }
}

impl Windows {
    /// Records a failure at `at` of a record first recorded then.
    pub fn record(&mut self, map: &str, error_type: ErrorType, at: Millis) {
        self.record_failure(map, error_type, at, at);
    }

    /// Records a failure at `at` of an errored record first recorded at `first`.
    pub fn record_failure(&mut self, map: &str, error_type: ErrorType, first: Millis, at: Millis) {
        let e = Failed { at, first };
        let events = self.maps.entry(map.to_string()).or_default();
        insert_sorted(&mut events.all, e);
        insert_sorted(events.by_type.entry(error_type).or_default(), e);
    }

    /// Forgets what was recorded for `map` (before loading it again from the store).
    pub fn clear_map(&mut self, map: &str) {
        self.maps.remove(map);
    }

    /// Errors of `map` matching `selector` that `counted` admits, failed up to `until`.
    pub fn count(
        &self,
        map: &str,
        selector: ErrorTypeSelector,
        counted: &Counted,
        until: Millis,
    ) -> u64 {
        let Some(events) = self.maps.get(map) else {
            return 0;
        };
        match ErrorType::selected_by(selector) {
            None => count_in(&events.all, counted, until),
            Some(one) => events
                .by_type
                .get(&one)
                .map_or(0, |v| count_in(v, counted, until)),
        }
    }

    /// Drops what is older than `before`.
    pub fn trim(&mut self, before: Millis) {
        for events in self.maps.values_mut() {
            let n = events.all.partition_point(|t| t.at < before);
            events.all.drain(..n);
            for v in events.by_type.values_mut() {
                let n = v.partition_point(|t| t.at < before);
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
    /// Deliveries the receiving server accepted (one per target and notification).
    #[serde(default)]
    pub notifications_sent: u64,
    /// Notifications of a firing that `cooldown` swallowed.
    #[serde(default)]
    pub notifications_suppressed: u64,
    /// When a notification last went out (a delivery was accepted): where the cooldown starts.
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

/// Whether a firing is notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A notification goes out.
    Send,
    /// The rule notified this map within its `cooldown`: swallowed, and counted.
    Suppressed,
    /// The rule has no notification targets.
    NoTargets,
}

/// What changed when a rule was evaluated for a map.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Started firing. `action` runs now (once per firing); `notice` says whether a
    /// notification goes out.
    Fired {
        count: u64,
        action: AlertAction,
        notice: Notice,
    },
    /// Stopped firing; `notify` per `notifyResolved` and whether the firing was notified.
    Resolved { count: u64, notify: bool },
}

fn has_targets(rule: &AlertRule) -> bool {
    rule.spec.notify.as_ref().is_some_and(|n| {
        n.email.as_ref().is_some_and(|e| !e.addresses().is_empty()) || !n.webhook.is_empty()
    })
}

/// Evaluates `rule` for `map` at `now`, counting only what `baseline` admits. A rule still
/// Firing from before the last end of a hold fires anew when its count (of errors recorded
/// since) reaches the threshold again, and resolves otherwise.
pub fn evaluate(
    rule: &AlertRule,
    map: &str,
    windows: &Windows,
    baseline: Baseline,
    now: Millis,
    state: &mut RuleMapState,
) -> Option<Event> {
    let spec = &rule.spec;
    let counted = baseline.counted(spec.window.as_secs() as i64 * 1000, now);
    let count = windows.count(map, spec.error_type, &counted, now);
    state.count = count;
    let firing = count >= u64::from(spec.threshold);
    let fired_before_hold_ended = baseline.hold_ended.is_some_and(|ended| {
        state
            .last_fired_at
            .as_deref()
            .and_then(crate::clock::parse)
            .is_none_or(|fired| fired <= ended)
    });
    match (state.state, firing) {
        (AlertState::Inactive, true) => Some(fire(rule, map, count, now, state)),
        (AlertState::Firing, true) if fired_before_hold_ended => {
            Some(fire(rule, map, count, now, state))
        }
        (AlertState::Firing, false) => {
            state.state = AlertState::Inactive;
            let notify = spec.notify_resolved && state.notified_firing && has_targets(rule);
            state.notified_firing = false;
            Some(Event::Resolved { count, notify })
        }
        _ => None,
    }
}

/// Starts a firing of `rule` for `map`: its action, and whether it is notified.
fn fire(rule: &AlertRule, map: &str, count: u64, now: Millis, state: &mut RuleMapState) -> Event {
    let spec = &rule.spec;
    state.state = AlertState::Firing;
    state.last_fired_at = Some(crate::clock::format_millis(now));
    let cooled = state
        .last_notified_at
        .as_deref()
        .and_then(crate::clock::parse)
        .is_none_or(|last| now - last >= spec.cooldown.as_secs() as i64 * 1000);
    let notice = match (has_targets(rule), cooled) {
        (false, _) => Notice::NoTargets,
        (true, false) => Notice::Suppressed,
        (true, true) => Notice::Send,
    };
    state.notified_firing = notice == Notice::Send;
    match notice {
        Notice::Send => state.last_notified_at = Some(crate::clock::format_millis(now)),
        Notice::Suppressed => state.notifications_suppressed += 1,
        Notice::NoTargets => {}
    }
    state.action_taken = match spec.action {
        AlertAction::None => None,
        AlertAction::Pause => Some(format!("Paused map {map}")),
        AlertAction::Stop => Some(format!("Stopped map {map}")),
    };
    Event::Fired {
        count,
        action: spec.action,
        notice,
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
        assert_eq!(
            evaluate(&r, "m", &w, Baseline::default(), 3 * MIN, &mut st),
            None
        );
        w.record("m", ErrorType::ApplicationError, 4 * MIN);
        assert_eq!(
            evaluate(&r, "m", &w, Baseline::default(), 5 * MIN, &mut st),
            Some(Event::Fired {
                count: 3,
                action: AlertAction::Pause,
                notice: Notice::Send
            })
        );
        // Still firing: the action does not run again.
        assert_eq!(
            evaluate(&r, "m", &w, Baseline::default(), 6 * MIN, &mut st),
            None
        );
        // The first error leaves the 10m window at 10m + 1ms.
        assert_eq!(
            evaluate(&r, "m", &w, Baseline::default(), 10 * MIN + 1, &mut st),
            Some(Event::Resolved {
                count: 2,
                notify: true
            })
        );
    }

    fn resumed(at: Millis) -> Baseline {
        Baseline {
            rule_since: None,
            hold_ended: Some(at),
        }
    }

    #[test]
    fn errors_recorded_before_a_hold_ended_never_count_again_even_when_they_fail_again() {
        let r = rule("  maps: [m]\n  threshold: 2\n  window: 1h\n  action: Pause\n");
        let mut w = Windows::default();
        let mut st = RuleMapState::default();
        w.record("m", ErrorType::ApplicationError, 0);
        w.record("m", ErrorType::TransformError, MIN);
        assert!(matches!(
            evaluate(&r, "m", &w, Baseline::default(), 2 * MIN, &mut st),
            Some(Event::Fired {
                notice: Notice::NoTargets,
                ..
            })
        ));
        // The same two records fail again after the resume: still the errors held for.
        w.record_failure("m", ErrorType::ApplicationError, 0, 4 * MIN);
        w.record_failure("m", ErrorType::TransformError, MIN, 4 * MIN);
        assert_eq!(
            evaluate(&r, "m", &w, resumed(3 * MIN), 5 * MIN, &mut st),
            Some(Event::Resolved {
                count: 0,
                notify: false
            })
        );
        // New records after it count, and fire anew.
        w.record("m", ErrorType::ApplicationError, 6 * MIN);
        w.record("m", ErrorType::ApplicationError, 7 * MIN);
        assert!(matches!(
            evaluate(&r, "m", &w, resumed(3 * MIN), 8 * MIN, &mut st),
            Some(Event::Fired { count: 2, .. })
        ));
    }

    #[test]
    fn a_rule_still_firing_when_its_hold_ended_fires_anew_on_new_errors() {
        let r = rule("  maps: [m]\n  threshold: 1\n  window: 1h\n  action: Stop\n");
        let mut w = Windows::default();
        let mut st = RuleMapState::default();
        w.record("m", ErrorType::ApplicationError, 0);
        assert!(evaluate(&r, "m", &w, Baseline::default(), MIN, &mut st).is_some());
        // Resumed at 2m; a new error at 3m, evaluated before any evaluation saw it resolve.
        w.record("m", ErrorType::ApplicationError, 3 * MIN);
        assert!(matches!(
            evaluate(&r, "m", &w, resumed(2 * MIN), 4 * MIN, &mut st),
            Some(Event::Fired {
                action: AlertAction::Stop,
                ..
            })
        ));
        assert_eq!(
            evaluate(&r, "m", &w, resumed(2 * MIN), 5 * MIN, &mut st),
            None
        );
    }

    #[test]
    fn a_rule_counts_only_what_failed_after_it_was_created_or_changed() {
        let r = rule("  maps: [m]\n  threshold: 2\n  window: 1h\n");
        let mut w = Windows::default();
        let mut st = RuleMapState::default();
        for at in 0..20 {
            w.record("m", ErrorType::ApplicationError, at * 1000);
        }
        let created = Baseline {
            rule_since: Some(MIN),
            hold_ended: None,
        };
        assert_eq!(evaluate(&r, "m", &w, created, 2 * MIN, &mut st), None);
        assert_eq!(st.count, 0);
        w.record("m", ErrorType::ApplicationError, 3 * MIN);
        w.record("m", ErrorType::ApplicationError, 3 * MIN);
        assert!(evaluate(&r, "m", &w, created, 4 * MIN, &mut st).is_some());
        assert_eq!(st.count, 2);
    }

    #[test]
    fn cooldown_suppresses_a_repeat_notification_for_the_same_map_and_counts_it() {
        let r = rule(
            "  maps: [m]\n  threshold: 1\n  window: 1m\n  cooldown: 1h\n  notify: { email: a@example.com }\n",
        );
        let mut w = Windows::default();
        let mut st = RuleMapState::default();
        let fired = |e: Option<Event>| match e {
            Some(Event::Fired { notice, .. }) => notice,
            other => panic!("{other:?}"),
        };
        let none = Baseline::default();
        w.record("m", ErrorType::ApplicationError, 0);
        assert_eq!(fired(evaluate(&r, "m", &w, none, 0, &mut st)), Notice::Send);
        assert!(matches!(
            evaluate(&r, "m", &w, none, 2 * MIN, &mut st),
            Some(Event::Resolved { notify: true, .. })
        ));
        w.record("m", ErrorType::ApplicationError, 10 * MIN);
        assert_eq!(
            fired(evaluate(&r, "m", &w, none, 10 * MIN, &mut st)),
            Notice::Suppressed
        );
        assert!(matches!(
            evaluate(&r, "m", &w, none, 12 * MIN, &mut st),
            Some(Event::Resolved { notify: false, .. })
        ));
        w.record("m", ErrorType::ApplicationError, 70 * MIN);
        assert_eq!(
            fired(evaluate(&r, "m", &w, none, 70 * MIN, &mut st)),
            Notice::Send
        );
        assert_eq!(st.notifications_suppressed, 1);
        // Sent counts only what a server accepted: the pass adds it after delivery.
        assert_eq!(st.notifications_sent, 0);
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
    /// Per rule name, when the rule was created or its spec last changed: what it counts
    /// starts there (absent: everything in its window counts).
    pub since: HashMap<String, Millis>,
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
        hold_ended: Option<Millis>,
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
            let baseline = Baseline {
                rule_since: self.since.get(&rule.metadata.name).copied(),
                hold_ended,
            };
            if let Some(e) = evaluate(
                rule,
                &map.metadata.name,
                &self.windows,
                baseline,
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
