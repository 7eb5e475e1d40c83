//! `/metrics`: the loop's snapshot in the OpenMetrics text format (which Prometheus scrapes),
//! encoded by `prometheus-client`. Each scrape fills a fresh registry from the snapshot, so
//! the series of a map, rule or verify that left the config leave with it. Per map: phase,
//! records synced, open errors by type, queue depth, oldest pending change, lag,
//! initial-sync progress; per alert rule and map: firing, notifications sent, suppressed and
//! failing; per map, the last verify's differences and time; for the process: passes by
//! trigger, failures, config validity, leases held. Names, types and labels are the ones
//! docs/running.md lists. Label values are map, rule, type, revision and holder names: never
//! a secret. Does not own the snapshot (the loop writes it) nor the route (`http`).

use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry, Unit};

use super::Snapshot;
use crate::alert::AlertState;

/// What `/metrics` answers with: OpenMetrics 1.0 text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why `/metrics` has no answer (the HTTP handler says so with a 500).
#[derive(Debug, thiserror::Error)]
pub(crate) enum MetricsError {
    #[error("encoding the metrics failed")]
    Encode(#[source] std::fmt::Error),
}

/// A gauge of (fractional) seconds; integral values are `Gauge` (i64), written without `.0`.
type Seconds = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapLabel {
    map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapPhase {
    map: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapReason {
    map: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MapErrorType {
    map: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InitialSyncStage {
    map: String,
    direction: String,
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleMap {
    rule: String,
    map: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabel {
    trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabel {
    revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HolderLabel {
    holder: String,
}

/// The snapshot as an OpenMetrics exposition, `# EOF` included.
pub(crate) fn render(s: &Snapshot) -> Result<String, MetricsError> {
    let mut registry = Registry::default();
    let now = Utc::now();
    process(&mut registry, s);
    maps(&mut registry, s, now);
    alerts(&mut registry, s);
    verify(&mut registry, s);
    leases(&mut registry, s);
    let mut out = String::new();
    encode(&mut out, &registry).map_err(MetricsError::Encode)?;
    Ok(out)
}

/// Registers a metric under the name a scraper sees: a counter's family is named without
/// `_total` (the encoder appends it to the sample), a `_seconds` family declares its unit.
/// Returns the metric to fill in.
fn add<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    let described = Described(metric.clone());
    let name = match metric.metric_type() {
        MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    };
    match name.strip_suffix("_seconds") {
        Some(stem) => registry.register_with_unit(stem, help, Unit::Seconds, described),
        None => registry.register(name, help, described),
    }
    metric
}

/// A metric that is described (`# HELP`, `# TYPE`) even while it has no series, as a family
/// with no map, rule or error yet: prometheus-client leaves such families out (as the Go
/// client does), and a scrape should show every family docs/running.md lists.
#[derive(Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Seconds from `now` to `at` (negative when `at` is past).
fn seconds_until(at: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (at - now).num_milliseconds() as f64 / 1000.0
}

fn map_label(map: &str) -> MapLabel {
    MapLabel { map: map.into() }
}

/// The process's own state: readiness, config, passes.
fn process(registry: &mut Registry, s: &Snapshot) {
    add::<Gauge>(
        registry,
        "dualwrite_ready",
        "1 once a pass has completed and the last one reached the state store",
    )
    .set(flag(s.ready));
    add::<Gauge>(
        registry,
        "dualwrite_config_valid",
        "1 when the config in the work tree is valid; 0 while the last valid one stays in force",
    )
    .set(flag(s.config_error.is_none()));
    add::<Family<RevisionLabel, Gauge>>(
        registry,
        "dualwrite_config_info",
        "The config revision in force",
    )
    .get_or_create(&RevisionLabel {
        revision: s.revision.clone(),
    })
    .set(1);
    add::<Counter>(
        registry,
        "dualwrite_config_reload_failures_total",
        "Config reloads that found the config invalid",
    )
    .inc_by(s.config_reloads_failed);
    let passes = add::<Family<TriggerLabel, Counter>>(
        registry,
        "dualwrite_reconcile_passes_total",
        "Reconcile passes completed, by what started them",
    );
    for (trigger, n) in &s.passes {
        passes
            .get_or_create(&TriggerLabel {
                trigger: trigger.name(),
            })
            .inc_by(*n);
    }
    add::<Counter>(
        registry,
        "dualwrite_reconcile_failures_total",
        "Reconcile passes that failed (state store unreachable, status not written)",
    )
    .inc_by(s.pass_failures);
    add::<Seconds>(
        registry,
        "dualwrite_reconcile_last_duration_seconds",
        "How long the last pass took",
    )
    .set(s.last_pass_seconds);
    add::<Counter>(
        registry,
        "dualwrite_change_watch_failures_total",
        "Failures to listen for or poll new changes (connect, LISTEN)",
    )
    .inc_by(s.change_notification_failures);
}

/// Per map: its phase and conditions, sync counters, queue and initial-sync progress.
fn maps(registry: &mut Registry, s: &Snapshot, now: DateTime<Utc>) {
    let phase = add::<Family<MapPhase, Gauge>>(
        registry,
        "dualwrite_map_phase",
        "1 for the phase each map is in",
    );
    let ready = add::<Family<MapLabel, Gauge>>(
        registry,
        "dualwrite_map_ready",
        "1 when the map's Ready condition is True",
    );
    let stalled = add::<Family<MapReason, Gauge>>(
        registry,
        "dualwrite_map_stalled",
        "1 when the map is Stalled, by reason (Error, ConfigInvalid)",
    );
    let synced = add::<Family<MapLabel, Counter>>(
        registry,
        "dualwrite_records_synced_total",
        "Records written by live sync and catch-up",
    );
    let errors = add::<Family<MapErrorType, Gauge>>(
        registry,
        "dualwrite_errors_open",
        "Open errored records, by map and error type",
    );
    let pending = add::<Family<MapLabel, Gauge>>(
        registry,
        "dualwrite_queue_pending",
        "Captured changes waiting (while Paused or an endpoint is down; 0 when drained or not countable)",
    );
    let oldest = add::<Family<MapLabel, Seconds>>(
        registry,
        "dualwrite_oldest_pending_change_age_seconds",
        "Age of the oldest change still waiting; 0 when none",
    );
    let lag = add::<Family<MapLabel, Seconds>>(
        registry,
        "dualwrite_lag_seconds",
        "From capture to write, for the last live batch",
    );
    let running = add::<Family<MapLabel, Gauge>>(
        registry,
        "dualwrite_initial_sync_running",
        "1 while the map's initial sync runs",
    );
    let records = add::<Family<InitialSyncStage, Gauge>>(
        registry,
        "dualwrite_initial_sync_records",
        "Initial sync progress of the current run: records read, written and errored, per direction",
    );
    let estimated = add::<Family<MapLabel, Gauge>>(
        registry,
        "dualwrite_initial_sync_rows_estimated",
        "The source rows a running initial sync expects in all (the tables' statistics)",
    );
    let rate = add::<Family<MapLabel, Gauge>>(
        registry,
        "dualwrite_initial_sync_rows_per_second",
        "Rows a running initial sync has read per second since it started",
    );
    let eta = add::<Family<MapLabel, Seconds>>(
        registry,
        "dualwrite_initial_sync_eta_seconds",
        "Seconds until a running initial sync should end, at its rate so far",
    );

    for (map, st) in &s.maps {
        let m = map_label(map);
        phase
            .get_or_create(&MapPhase {
                map: map.clone(),
                phase: st.phase.clone(),
            })
            .set(1);
        let is_ready = st
            .conditions
            .iter()
            .any(|c| c.kind == "Ready" && c.status == "True");
        ready.get_or_create(&m).set(flag(is_ready));
        for c in st
            .conditions
            .iter()
            .filter(|c| c.kind == "Stalled" && c.status == "True")
        {
            stalled
                .get_or_create(&MapReason {
                    map: map.clone(),
                    reason: c.reason.clone(),
                })
                .set(1);
        }
        synced.get_or_create(&m).inc_by(st.counters.synced);
        for (error_type, n) in &st.errors.by_type {
            errors
                .get_or_create(&MapErrorType {
                    map: map.clone(),
                    r#type: error_type.clone(),
                })
                .set(int(*n));
        }
        pending
            .get_or_create(&m)
            .set(int(st.queue.as_ref().map_or(0, |q| q.pending)));
        let age = st
            .queue
            .as_ref()
            .and_then(|q| q.oldest_at.as_deref())
            .and_then(crate::clock::parse_utc)
            .map_or(0.0, |at| (-seconds_until(at, now)).max(0.0));
        oldest.get_or_create(&m).set(age);
        if let Some(seconds) = st.counters.lag_seconds {
            lag.get_or_create(&m).set(seconds);
        }
        running
            .get_or_create(&m)
            .set(flag(st.phase == "InitialSync"));

        let Some(run) = &st.initial_sync else {
            continue;
        };
        for (direction, counts) in &run.directions {
            for (stage, n) in [
                ("read", counts.read),
                ("written", counts.written),
                ("errors", counts.errors),
            ] {
                records
                    .get_or_create(&InitialSyncStage {
                        map: map.clone(),
                        direction: direction.clone(),
                        stage,
                    })
                    .set(int(n));
            }
        }
        let Some(progress) = &run.progress else {
            continue;
        };
        if let Some(total) = progress.estimated_total {
            estimated.get_or_create(&m).set(int(total));
        }
        rate.get_or_create(&m).set(int(progress.rows_per_second));
        if let Some(end) = progress.eta.as_deref().and_then(crate::clock::parse_utc) {
            eta.get_or_create(&m).set(seconds_until(end, now).max(0.0));
        }
    }
}

/// Per alert rule and map: firing, and how its notifications fare.
fn alerts(registry: &mut Registry, s: &Snapshot) {
    let firing = add::<Family<RuleMap, Gauge>>(
        registry,
        "dualwrite_alert_firing",
        "1 while the rule fires for the map",
    );
    let sent = add::<Family<RuleMap, Counter>>(
        registry,
        "dualwrite_alert_notifications_sent_total",
        "Deliveries of the rule's notifications for the map that the server accepted",
    );
    let suppressed = add::<Family<RuleMap, Counter>>(
        registry,
        "dualwrite_alert_notifications_suppressed_total",
        "Notifications of the rule for the map that its cooldown swallowed",
    );
    let failing = add::<Family<RuleMap, Gauge>>(
        registry,
        "dualwrite_alert_notification_failing",
        "1 when the last notification of the rule for the map could not be delivered",
    );
    for (rule, st) in &s.alerts {
        for (map, m) in &st.maps {
            let labels = RuleMap {
                rule: rule.clone(),
                map: map.clone(),
            };
            firing
                .get_or_create(&labels)
                .set(flag(m.state == AlertState::Firing));
            sent.get_or_create(&labels).inc_by(m.notifications_sent);
            suppressed
                .get_or_create(&labels)
                .inc_by(m.notifications_suppressed);
            failing
                .get_or_create(&labels)
                .set(flag(m.last_delivery_error.is_some()));
        }
    }
}

/// Per map with a `dualwrite verify` on record: what it found, and when.
fn verify(registry: &mut Registry, s: &Snapshot) {
    let differences = add::<Family<MapLabel, Gauge>>(
        registry,
        "dualwrite_verify_differences",
        "Differences the last `dualwrite verify` of the map found (0: both sides equal)",
    );
    let at = add::<Family<MapLabel, Gauge>>(
        registry,
        "dualwrite_verify_last_timestamp_seconds",
        "When the last `dualwrite verify` of the map ran (Unix time)",
    );
    for (map, r) in &s.verify {
        let m = map_label(map);
        differences.get_or_create(&m).set(int(r.counts.total()));
        if let Some(when) = crate::clock::parse_utc(&r.verified_at) {
            at.get_or_create(&m).set(when.timestamp());
        }
    }
}

/// The maps this process holds the lease on; no sample while leases do not split the maps.
fn leases(registry: &mut Registry, s: &Snapshot) {
    let held = add::<Family<HolderLabel, Gauge>>(
        registry,
        "dualwrite_leases_held",
        "Maps this process holds the lease on",
    );
    if let Some((holder, owned)) = &s.leases {
        held.get_or_create(&HolderLabel {
            holder: holder.clone(),
        })
        .set(i64::try_from(owned.len()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_snapshot_is_a_complete_exposition() {
        let text = render(&Snapshot::default()).unwrap();
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(helps, types);
        assert!(text.contains("\ndualwrite_ready 0\n"), "{text}");
        assert!(
            text.contains("\ndualwrite_config_reload_failures_total 0\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE dualwrite_errors_open gauge\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// A snapshot with a series in every family: a map in its initial sync, stalled, with a
    /// queue, lag and an open error; a firing rule whose notification fails; a verify; leases.
    fn busy_snapshot(now: DateTime<Utc>) -> Snapshot {
        use crate::status::{
            Condition, Counters, ErrorSummary, InitialSyncStatus, MapStatus, Queue,
        };
        let condition = |kind: &str, reason: &str| Condition {
            kind: kind.into(),
            status: "True".into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: None,
        };
        let at = |seconds: i64| (now + chrono::Duration::seconds(seconds)).to_rfc3339();
        let map = MapStatus {
            observed_revision: "r1".into(),
            desired_state: "Running".into(),
            phase: "InitialSync".into(),
            held_by: None,
            conditions: vec![condition("Ready", "Running"), condition("Stalled", "Error")],
            initial_sync: Some(InitialSyncStatus {
                run: 1,
                status: crate::state::InitialSyncStatus::Running,
                directions: [(
                    "SourceToDestination".to_string(),
                    crate::state::DirectionCounts {
                        read: 3,
                        written: 2,
                        errors: 1,
                    },
                )]
                .into(),
                retry_errors: false,
                started_at: None,
                finished_at: None,
                message: None,
                progress: Some(crate::status::Progress {
                    rows_done: 3,
                    estimated_total: Some(10),
                    percent: Some(30.0),
                    rows_per_second: 5,
                    eta: Some(at(60)),
                }),
                earlier_runs: Vec::new(),
            }),
            queue: Some(Queue {
                pending: 4,
                oldest_at: Some(at(-30)),
                as_of: None,
            }),
            next_attempt_at: None,
            counters: Counters {
                synced: 7,
                last_sync_at: None,
                lag_seconds: Some(0.5),
            },
            errors: ErrorSummary {
                open: 1,
                by_type: [("ApplicationError".to_string(), 1)].into(),
                by_phase: Default::default(),
                recent: Vec::new(),
            },
            activity: Vec::new(),
        };
        let rule = crate::alert::RuleMapState {
            state: AlertState::Firing,
            notifications_sent: 2,
            notifications_suppressed: 1,
            last_delivery_error: Some("connection refused".into()),
            ..Default::default()
        };
        let mut verify =
            crate::verify::VerifyResult::new("customers".into(), "SourceToDestination");
        verify.verified_at = at(-3600);
        verify.counts.missing = 2;
        let mut snapshot = Snapshot {
            ready: true,
            revision: "r1".into(),
            maps: [("customers".to_string(), map)].into(),
            alerts: [(
                "pause-on-errors".to_string(),
                crate::status::AlertStatus {
                    observed_revision: "r1".into(),
                    maps: [("customers".to_string(), rule)].into(),
                },
            )]
            .into(),
            verify: [("customers".to_string(), verify)].into(),
            leases: Some(("host-1".into(), ["customers".to_string()].into())),
            last_pass_seconds: 0.25,
            pass_failures: 1,
            ..Snapshot::default()
        };
        snapshot.passes.insert(super::super::Trigger::Start, 1);
        snapshot
    }

    #[test]
    fn a_strict_openmetrics_parser_reads_every_family_with_its_series() {
        let text = render(&busy_snapshot(Utc::now())).unwrap();
        let exposition = openmetrics_parser::openmetrics::parse_openmetrics(&text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        // The 28 families docs/running.md lists, each read back.
        assert_eq!(exposition.families.len(), 28, "{text}");
        assert_eq!(text.matches("# TYPE ").count(), 28, "{text}");
        for family in exposition.families.values() {
            assert!(
                family.iter_samples().next().is_some(),
                "{} has no series:\n{text}",
                family.family_name
            );
        }
        for line in [
            "dualwrite_map_phase{map=\"customers\",phase=\"InitialSync\"} 1",
            "dualwrite_map_stalled{map=\"customers\",reason=\"Error\"} 1",
            "dualwrite_records_synced_total{map=\"customers\"} 7",
            "dualwrite_errors_open{map=\"customers\",type=\"ApplicationError\"} 1",
            "dualwrite_queue_pending{map=\"customers\"} 4",
            "dualwrite_lag_seconds{map=\"customers\"} 0.5",
            "dualwrite_initial_sync_records{map=\"customers\",direction=\"SourceToDestination\",stage=\"errors\"} 1",
            "dualwrite_initial_sync_rows_estimated{map=\"customers\"} 10",
            "dualwrite_initial_sync_rows_per_second{map=\"customers\"} 5",
            "dualwrite_alert_firing{rule=\"pause-on-errors\",map=\"customers\"} 1",
            "dualwrite_alert_notifications_suppressed_total{rule=\"pause-on-errors\",map=\"customers\"} 1",
            "dualwrite_alert_notification_failing{rule=\"pause-on-errors\",map=\"customers\"} 1",
            "dualwrite_verify_differences{map=\"customers\"} 2",
            "dualwrite_leases_held{holder=\"host-1\"} 1",
            "dualwrite_reconcile_failures_total 1",
            "dualwrite_reconcile_last_duration_seconds 0.25",
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "missing {line:?} in\n{text}"
            );
        }
        let age = exposition.families["dualwrite_oldest_pending_change_age_seconds"]
            .iter_samples()
            .next()
            .map(|s| format!("{:?}", s.value))
            .unwrap();
        assert!(age.contains("Float(3"), "{age}");
    }

    #[test]
    fn label_values_are_escaped() {
        let mut snapshot = Snapshot {
            revision: "a\"b\\c\nd".into(),
            ..Snapshot::default()
        };
        snapshot.leases = Some(("h".into(), Default::default()));
        let text = render(&snapshot).unwrap();
        assert!(
            text.contains("dualwrite_config_info{revision=\"a\\\"b\\\\c\\nd\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("dualwrite_leases_held{holder=\"h\"} 0\n"),
            "{text}"
        );
    }
}
