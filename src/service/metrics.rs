//! `/metrics` in the Prometheus text exposition format (0.0.4), rendered from the loop's
//! snapshot on each scrape. Per map: phase, records synced, open errors by type, queue
//! depth, oldest pending change, lag, initial-sync progress; per alert rule and map: firing,
//! notifications sent and failing; per map, the last verify's differences and time; for the process: passes by trigger, failures, config
//! validity, leases held. Label values are map, rule and type names: never a secret.

use std::fmt::Write;

use super::Snapshot;
use crate::alert::AlertState;

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn family<'a>(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    Family { out }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

pub(crate) fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let o = &mut out;

    let mut f = family(
        o,
        "dualwrite_ready",
        "gauge",
        "1 once a pass has completed and the last one reached the state store.",
    );
    f.sample("dualwrite_ready", &[], flag(s.ready));
    let mut f = family(
        o,
        "dualwrite_config_valid",
        "gauge",
        "1 when the config in the work tree is valid; 0 while the last valid one stays in force.",
    );
    f.sample(
        "dualwrite_config_valid",
        &[],
        flag(s.config_error.is_none()),
    );
    let mut f = family(
        o,
        "dualwrite_config_info",
        "gauge",
        "The config revision in force.",
    );
    f.sample("dualwrite_config_info", &[("revision", &s.revision)], 1.0);
    let mut f = family(
        o,
        "dualwrite_config_reload_failures_total",
        "counter",
        "Config reloads that found the config invalid.",
    );
    f.sample(
        "dualwrite_config_reload_failures_total",
        &[],
        s.config_reloads_failed as f64,
    );
    let mut f = family(
        o,
        "dualwrite_reconcile_passes_total",
        "counter",
        "Reconcile passes completed, by what started them.",
    );
    for (trigger, n) in &s.passes {
        f.sample(
            "dualwrite_reconcile_passes_total",
            &[("trigger", trigger.name())],
            *n as f64,
        );
    }
    let mut f = family(
        o,
        "dualwrite_reconcile_failures_total",
        "counter",
        "Reconcile passes that failed (state store unreachable, status not written).",
    );
    f.sample(
        "dualwrite_reconcile_failures_total",
        &[],
        s.pass_failures as f64,
    );
    let mut f = family(
        o,
        "dualwrite_reconcile_last_duration_seconds",
        "gauge",
        "How long the last pass took.",
    );
    f.sample(
        "dualwrite_reconcile_last_duration_seconds",
        &[],
        s.last_pass_seconds,
    );
    let mut f = family(
        o,
        "dualwrite_change_watch_failures_total",
        "counter",
        "Failures to listen for or poll new changes (connect, LISTEN).",
    );
    f.sample(
        "dualwrite_change_watch_failures_total",
        &[],
        s.change_notification_failures as f64,
    );

    let mut f = family(
        o,
        "dualwrite_map_phase",
        "gauge",
        "1 for the phase each map is in.",
    );
    for (map, st) in &s.maps {
        f.sample(
            "dualwrite_map_phase",
            &[("map", map), ("phase", &st.phase)],
            1.0,
        );
    }
    let mut f = family(
        o,
        "dualwrite_map_ready",
        "gauge",
        "1 when the map's Ready condition is True.",
    );
    for (map, st) in &s.maps {
        let ready = st
            .conditions
            .iter()
            .any(|c| c.kind == "Ready" && c.status == "True");
        f.sample("dualwrite_map_ready", &[("map", map)], flag(ready));
    }
    let mut f = family(
        o,
        "dualwrite_map_stalled",
        "gauge",
        "1 when the map is Stalled, by reason (Error, ConfigInvalid).",
    );
    for (map, st) in &s.maps {
        for c in st
            .conditions
            .iter()
            .filter(|c| c.kind == "Stalled" && c.status == "True")
        {
            f.sample(
                "dualwrite_map_stalled",
                &[("map", map), ("reason", &c.reason)],
                1.0,
            );
        }
    }
    let mut f = family(
        o,
        "dualwrite_records_synced_total",
        "counter",
        "Records written by live sync and catch-up.",
    );
    for (map, st) in &s.maps {
        f.sample(
            "dualwrite_records_synced_total",
            &[("map", map)],
            st.counters.synced as f64,
        );
    }
    let mut f = family(
        o,
        "dualwrite_errors_open",
        "gauge",
        "Open errored records, by map and error type.",
    );
    for (map, st) in &s.maps {
        for (error_type, n) in &st.errors.by_type {
            f.sample(
                "dualwrite_errors_open",
                &[("map", map), ("type", error_type)],
                *n as f64,
            );
        }
    }
    let mut f = family(
        o,
        "dualwrite_queue_pending",
        "gauge",
        "Captured changes waiting (while Paused or an endpoint is down; 0 when drained or not countable).",
    );
    for (map, st) in &s.maps {
        f.sample(
            "dualwrite_queue_pending",
            &[("map", map)],
            st.queue.as_ref().map_or(0, |q| q.pending) as f64,
        );
    }
    let mut f = family(
        o,
        "dualwrite_oldest_pending_change_age_seconds",
        "gauge",
        "Age of the oldest change still waiting; 0 when none.",
    );
    let now = chrono::Utc::now();
    for (map, st) in &s.maps {
        let age = st
            .queue
            .as_ref()
            .and_then(|q| q.oldest_at.as_deref())
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
            .map_or(0.0, |at| {
                (now - at.with_timezone(&chrono::Utc))
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0
            });
        f.sample(
            "dualwrite_oldest_pending_change_age_seconds",
            &[("map", map)],
            age,
        );
    }
    let mut f = family(
        o,
        "dualwrite_lag_seconds",
        "gauge",
        "From capture to write, for the last live batch.",
    );
    for (map, st) in &s.maps {
        if let Some(lag) = st.counters.lag_seconds {
            f.sample("dualwrite_lag_seconds", &[("map", map)], lag);
        }
    }
    let mut f = family(
        o,
        "dualwrite_initial_sync_running",
        "gauge",
        "1 while the map's initial sync runs.",
    );
    for (map, st) in &s.maps {
        f.sample(
            "dualwrite_initial_sync_running",
            &[("map", map)],
            flag(st.phase == "InitialSync"),
        );
    }
    let mut f = family(
        o,
        "dualwrite_initial_sync_records",
        "gauge",
        "Initial sync progress of the current run: records read, written and errored, per direction.",
    );
    for (map, st) in &s.maps {
        let Some(run) = &st.initial_sync else {
            continue;
        };
        for (direction, counts) in &run.directions {
            for (stage, n) in [
                ("read", counts.read),
                ("written", counts.written),
                ("errors", counts.errors),
            ] {
                f.sample(
                    "dualwrite_initial_sync_records",
                    &[("map", map), ("direction", direction), ("stage", stage)],
                    n as f64,
                );
            }
        }
    }

    let running: Vec<(&String, &crate::status::Progress)> = s
        .maps
        .iter()
        .filter_map(|(map, st)| Some((map, st.initial_sync.as_ref()?.progress.as_ref()?)))
        .collect();
    let mut f = family(
        o,
        "dualwrite_initial_sync_rows_estimated",
        "gauge",
        "The source rows a running initial sync expects in all (the tables' statistics).",
    );
    for (map, p) in &running {
        if let Some(total) = p.estimated_total {
            f.sample(
                "dualwrite_initial_sync_rows_estimated",
                &[("map", map)],
                total as f64,
            );
        }
    }
    let mut f = family(
        o,
        "dualwrite_initial_sync_rows_per_second",
        "gauge",
        "Rows a running initial sync has read per second since it started.",
    );
    for (map, p) in &running {
        f.sample(
            "dualwrite_initial_sync_rows_per_second",
            &[("map", map)],
            p.rows_per_second as f64,
        );
    }
    let mut f = family(
        o,
        "dualwrite_initial_sync_eta_seconds",
        "gauge",
        "Seconds until a running initial sync should end, at its rate so far.",
    );
    for (map, p) in &running {
        let left = p
            .eta
            .as_deref()
            .and_then(crate::clock::parse_utc)
            .map(|eta| (eta - chrono::Utc::now()).num_milliseconds().max(0) as f64 / 1000.0);
        if let Some(left) = left {
            f.sample("dualwrite_initial_sync_eta_seconds", &[("map", map)], left);
        }
    }

    let mut f = family(
        o,
        "dualwrite_alert_firing",
        "gauge",
        "1 while the rule fires for the map.",
    );
    for (rule, st) in &s.alerts {
        for (map, m) in &st.maps {
            f.sample(
                "dualwrite_alert_firing",
                &[("rule", rule), ("map", map)],
                flag(m.state == AlertState::Firing),
            );
        }
    }
    let mut f = family(
        o,
        "dualwrite_alert_notifications_sent_total",
        "counter",
        "Deliveries of the rule's notifications for the map that the server accepted.",
    );
    for (rule, st) in &s.alerts {
        for (map, m) in &st.maps {
            f.sample(
                "dualwrite_alert_notifications_sent_total",
                &[("rule", rule), ("map", map)],
                m.notifications_sent as f64,
            );
        }
    }
    let mut f = family(
        o,
        "dualwrite_alert_notifications_suppressed_total",
        "counter",
        "Notifications of the rule for the map that its cooldown swallowed.",
    );
    for (rule, st) in &s.alerts {
        for (map, m) in &st.maps {
            f.sample(
                "dualwrite_alert_notifications_suppressed_total",
                &[("rule", rule), ("map", map)],
                m.notifications_suppressed as f64,
            );
        }
    }
    let mut f = family(
        o,
        "dualwrite_alert_notification_failing",
        "gauge",
        "1 when the last notification of the rule for the map could not be delivered.",
    );
    for (rule, st) in &s.alerts {
        for (map, m) in &st.maps {
            f.sample(
                "dualwrite_alert_notification_failing",
                &[("rule", rule), ("map", map)],
                flag(m.last_delivery_error.is_some()),
            );
        }
    }

    let mut f = family(
        o,
        "dualwrite_verify_differences",
        "gauge",
        "Differences the last `dualwrite verify` of the map found (0: both sides equal).",
    );
    for (map, r) in &s.verify {
        f.sample(
            "dualwrite_verify_differences",
            &[("map", map)],
            r.counts.total() as f64,
        );
    }
    let mut f = family(
        o,
        "dualwrite_verify_last_timestamp_seconds",
        "gauge",
        "When the last `dualwrite verify` of the map ran (Unix time).",
    );
    for (map, r) in &s.verify {
        if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&r.verified_at) {
            f.sample(
                "dualwrite_verify_last_timestamp_seconds",
                &[("map", map)],
                at.timestamp() as f64,
            );
        }
    }

    if let Some((holder, owned)) = &s.leases {
        let mut f = family(
            o,
            "dualwrite_leases_held",
            "gauge",
            "Maps this process holds the lease on.",
        );
        f.sample(
            "dualwrite_leases_held",
            &[("holder", holder)],
            owned.len() as f64,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn every_family_has_help_and_type() {
        let text = render(&Snapshot::default());
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(helps, types);
        assert!(text.contains("dualwrite_ready 0\n"), "{text}");
    }
}
