//! The dashboard's HTML (SPEC §6), from maud templates: checked at compile time, and every
//! value interpolated with `(…)` is HTML-escaped, so a row holding `<script>` shows as text.
//! Plain HTML that works without JavaScript; pages that change by themselves reload with a
//! `<meta http-equiv="refresh">`. Owns how pages look, not what they read (`super::source`)
//! nor what the actions do (`super::actions`).

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::requests::RowPreview;
use crate::state::{ActivityEntry, ErrorRecord, RequestStatus};
use crate::status::{InitialSyncStatus, MapStatus};

use super::filter::ErrorParams;

/// How often pages whose content moves (phases, counts, request states) reload, in seconds.
pub(crate) const REFRESH_SECONDS: u32 = 5;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 1.5em 2em;color:#222}\
nav{padding:.6em 0;border-bottom:1px solid #ccc;margin-bottom:1em}nav a{margin-right:1.2em}\
table{border-collapse:collapse;margin:.5em 0 1.2em}th,td{border:1px solid #ddd;padding:.25em .5em;\
text-align:left;vertical-align:top}th{background:#f4f4f4}td.n{text-align:right}\
.Running{color:#060}.Failed,.Stalled,.Rejected{color:#b00}.Paused,.Queued{color:#a60}\
pre{background:#f6f6f6;padding:.5em;overflow:auto;max-width:100%}form.filter label{margin-right:.8em}\
.note{color:#555}.warn{color:#b00;font-weight:bold}";

/// The text of a serde enum (`Running`, `ApplicationError`, …).
pub(crate) fn name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// The frame of every page: title, navigation, and the live refresh when `refresh`.
pub(crate) fn layout(title: &str, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if refresh {
                    meta http-equiv="refresh" content=(REFRESH_SECONDS);
                }
                title { (title) " · dualwrite" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav {
                    a href="/" { "Maps" }
                    a href="/errors" { "Errors" }
                    a href="/alerts" { "Alerts" }
                    a href="/requests" { "Requests" }
                }
                h1 { (title) }
                (body)
            }
        }
    }
}

/// An error page (400, 404, 403, 500).
pub(crate) fn problem(title: &str, message: &str) -> Markup {
    layout(title, false, html! { p.warn { (message) } })
}

fn phase(phase: &str) -> Markup {
    html! { span class=(phase) { (phase) } }
}

fn sync_summary(sync: &Option<InitialSyncStatus>) -> Markup {
    match sync {
        None => html! { "-" },
        Some(s) => html! {
            (name(&s.status)) " (run " (s.run) ")"
            @if let Some(p) = s.progress.as_ref().and_then(|p| p.percent) {
                " " (format!("{p:.1}")) "%"
            }
        },
    }
}

/// `/`: every map.
pub(crate) fn overview(maps: &[(String, MapStatus)], no_store: bool) -> Markup {
    layout(
        "Maps",
        true,
        html! {
            @if no_store {
                p.note { "No state store yet: nothing has run." }
            }
            table #maps {
                tr {
                    th { "map" } th { "phase" } th { "desired" } th { "held by" }
                    th { "queue" } th { "lag" } th { "written" } th { "open errors" }
                    th { "initial sync" }
                }
                @for (map, st) in maps {
                    tr {
                        td { a href={ "/maps/" (map) } { (map) } }
                        td { (phase(&st.phase)) }
                        td { (st.desired_state) }
                        td { @if let Some(h) = &st.held_by { (h.alert) } @else { "-" } }
                        td.n { @if let Some(q) = &st.queue { (q.pending) } @else { "?" } }
                        td.n { @if let Some(l) = st.counters.lag_seconds { (format!("{l:.1}s")) } @else { "-" } }
                        td.n { (st.counters.synced) }
                        td {
                            @if st.errors.open == 0 { "0" } @else {
                                a href={ "/errors" (ErrorParams { map: Some(map.clone()), ..Default::default() }.link(None)) } {
                                    (st.errors.open)
                                }
                                @for (t, n) in &st.errors.by_type { " · " (t) ": " (n) }
                            }
                        }
                        td { (sync_summary(&st.initial_sync)) }
                    }
                }
            }
        },
    )
}

/// An initial sync run's counts per direction; the failures link to their records.
fn directions(map: &str, sync: &InitialSyncStatus) -> Markup {
    html! {
        table.directions {
            tr { th { "direction" } th { "read" } th { "written" } th { "failed" } }
            @for (direction, c) in &sync.directions {
                tr {
                    td { (direction) }
                    td.n { (c.read) }
                    td.n { (c.written) }
                    td.n {
                        @if c.errors == 0 { "0" } @else {
                            a href={ "/errors" (ErrorParams { map: Some(map.to_string()), direction: Some(direction.clone()), phase: Some("InitialSync".into()), ..Default::default() }.link(None)) } { (c.errors) }
                        }
                    }
                }
            }
        }
    }
}

/// What the map page reads beside the map's status.
pub(crate) struct MapPage<'a> {
    pub name: &'a str,
    pub status: &'a MapStatus,
    pub activity: &'a [ActivityEntry],
    pub catch_up: &'a [ErrorRecord],
}

/// `/maps/{name}`.
pub(crate) fn map(page: &MapPage<'_>) -> Markup {
    let st = page.status;
    let map = page.name;
    let catch_up = ErrorParams {
        map: Some(map.to_string()),
        phase: Some("CatchUp".into()),
        ..Default::default()
    };
    layout(
        &format!("Map {map}"),
        true,
        html! {
            p { "Phase " (phase(&st.phase)) ", desired " (st.desired_state) ", revision " code { (st.observed_revision) } }
            @if let Some(h) = &st.held_by {
                p.warn { "Held by alert " a href={ "/alerts/" (h.alert) } { (h.alert) } " since " (h.since) " (dualwrite resume " (map) " ends the hold)" }
            }
            @if let Some(at) = &st.next_attempt_at { p.note { "Next attempt at " (at) } }
            h2 { "Conditions" }
            table #conditions {
                tr { th { "type" } th { "status" } th { "reason" } th { "message" } th { "since" } }
                @for c in &st.conditions {
                    tr { td { (c.kind) } td { (c.status) } td { (c.reason) } td { (c.message) } td { (c.last_transition_time.as_deref().unwrap_or("-")) } }
                }
            }
            h2 { "Initial sync" }
            @match &st.initial_sync {
                None => p.note { "No initial sync has run." },
                Some(sync) => {
                    p { "Run " (sync.run) ": " (name(&sync.status))
                        @if let Some(s) = &sync.started_at { ", started " (s) }
                        @if let Some(f) = &sync.finished_at { ", finished " (f) }
                        @if !sync.retry_errors { " (rerun without errors)" } }
                    @if let Some(m) = &sync.message { p.warn { (m) } }
                    @if let Some(p) = &sync.progress {
                        p { (p.rows_done) " rows read"
                            @if let Some(t) = p.estimated_total { " of about " (t) }
                            @if let Some(pc) = p.percent { " (" (format!("{pc:.1}")) "%)" }
                            ", " (p.rows_per_second) " rows/s"
                            @if let Some(eta) = &p.eta { ", ETA " (eta) } }
                    }
                    (directions(map, sync))
                    @if !sync.earlier_runs.is_empty() {
                        h3 { "Earlier runs" }
                        @for run in &sync.earlier_runs {
                            p { "Run " (run.run) ": " (name(&run.status))
                                @if let Some(f) = &run.finished_at { ", finished " (f) } }
                            (directions(map, run))
                        }
                    }
                }
            }
            h2 { "Queue and counters" }
            table #counters {
                tr { th { "queue" } td.n { @if let Some(q) = &st.queue { (q.pending) @if let Some(o) = &q.oldest_at { " (oldest " (o) ")" } } @else { "unknown" } } }
                tr { th { "written" } td.n { (st.counters.synced) } }
                tr { th { "last sync" } td { (st.counters.last_sync_at.as_deref().unwrap_or("-")) } }
                tr { th { "lag" } td.n { @if let Some(l) = st.counters.lag_seconds { (format!("{l:.1}s")) } @else { "-" } } }
                tr { th { "open errors" } td.n { a href={ "/errors" (ErrorParams { map: Some(map.to_string()), ..Default::default() }.link(None)) } { (st.errors.open) } } }
            }
            h2 { "Catch-up errors" }
            @if page.catch_up.is_empty() { p.note { "None open." } } @else {
                (error_table(page.catch_up, false))
                p { a href={ "/errors" (catch_up.link(None)) } { "All catch-up errors of " (map) } }
            }
            h2 { "Activity" }
            p { "Download: " a href={ "/maps/" (map) "/activity.csv" } { "CSV" } " · " a href={ "/maps/" (map) "/activity.jsonl" } { "JSON lines" } }
            table #activity {
                tr { th { "at" } th { "event" } th { "message" } }
                @for e in page.activity {
                    tr { td { (e.at) } td { (e.event) } td { (e.message) } }
                }
            }
        },
    )
}

/// The records of a listing; with `selectable`, a checkbox per record for "Retry selected".
pub(crate) fn error_table(records: &[ErrorRecord], selectable: bool) -> Markup {
    html! {
        table.errors {
            tr {
                @if selectable { th { "" } }
                th { "id" } th { "map" } th { "phase" } th { "direction" } th { "type" }
                th { "key" } th { "attempts" } th { "last failure" } th { "state" } th { "message" }
            }
            @for e in records {
                tr {
                    @if selectable { td { input type="checkbox" name="id" value=(e.id) form="act"; } }
                    td { a href={ "/errors/" (e.id) } { (e.id) } }
                    td { a href={ "/maps/" (e.map) } { (e.map) } }
                    td { (e.phase) }
                    td { (e.direction) }
                    td { (e.error_type) }
                    td { code { (e.key) } }
                    td.n { (e.attempts) }
                    td { (e.last_at) }
                    td { (e.state) }
                    td { (e.message) }
                }
            }
        }
    }
}

fn select(label: &str, field: &str, current: Option<&str>, options: &[&str]) -> Markup {
    html! {
        label { (label) " "
            select name=(field) {
                option value="" { "any" }
                @for o in options {
                    option value=(o) selected[current == Some(*o)] { (o) }
                }
            }
        }
    }
}

/// What the error view shows.
pub(crate) struct ErrorsPage<'a> {
    pub params: &'a ErrorParams,
    pub maps: &'a [String],
    pub matched: u64,
    pub records: &'a [ErrorRecord],
    /// The id the next (older) page starts below, when there is one.
    pub next: Option<i64>,
    /// The form's CSRF token when this browser may act (signed in with the token).
    pub actions: Option<&'a str>,
    /// A token is configured but this browser has not signed in.
    pub sign_in: bool,
}

/// `/errors`: the consolidated error view.
pub(crate) fn errors(page: &ErrorsPage<'_>) -> Markup {
    let p = page.params.without_empty();
    let maps: Vec<&str> = page.maps.iter().map(String::as_str).collect();
    layout(
        "Errors",
        false,
        html! {
            form.filter method="get" action="/errors" {
                (select("map", "map", p.map.as_deref(), &maps))
                (select("type", "type", p.error_type.as_deref(), &["ApplicationError", "NetworkError", "TransformError", "SchemaError", "ConflictError"]))
                (select("direction", "direction", p.direction.as_deref(), &["SourceToDestination", "DestinationToSource"]))
                (select("phase", "phase", p.phase.as_deref(), &["InitialSync", "Live", "CatchUp"]))
                label { "state "
                    select name="state" {
                        @for s in ["Open", "Superseded", "Retried", "all"] {
                            option value=(s) selected[p.state() == s] { (s) }
                        }
                    }
                }
                label { "from " input type="text" name="from" size="22" placeholder="2026-11-22T00:00:00Z or 1h" value=(p.from.as_deref().unwrap_or("")); }
                label { "to " input type="text" name="to" size="22" value=(p.to.as_deref().unwrap_or("")); }
                button type="submit" { "Filter" }
            }
            p #matched { (page.matched) " record(s) match, newest first." }
            @if page.sign_in { p.note { a href="/login" { "Sign in" } " with the dashboard token to retry or dismiss." } }
            @if let Some(csrf) = page.actions {
                @if p.map.is_some() {
                    form #act method="post" action="/errors/confirm" {
                        input type="hidden" name="csrf" value=(csrf);
                        @for (k, v) in p.fields() {
                            input type="hidden" name=(k) value=(v);
                        }
                        button type="submit" name="do" value="retry-selected" { "Retry selected" }
                        " "
                        button type="submit" name="do" value="retry-all" { "Retry all matching" }
                        " "
                        button type="submit" name="do" value="dismiss-selected" { "Dismiss selected" }
                        " "
                        button type="submit" name="do" value="dismiss-all" { "Dismiss all matching" }
                    }
                } @else {
                    p.note { "Choose a map to retry or dismiss: a request acts on the records of one map." }
                }
            }
            (error_table(page.records, page.actions.is_some() && p.map.is_some()))
            p.paging {
                @if p.before.is_some() { a href={ "/errors" (p.link(None)) } { "Newest" } " " }
                @if let Some(next) = page.next { a #older href={ "/errors" (p.link(Some(next))) } { "Older" } }
            }
        },
    )
}

fn json_block(value: &Option<serde_json::Value>, none: &str) -> Markup {
    match value {
        Some(v) => html! { pre { (serde_json::to_string_pretty(v).unwrap_or_default()) } },
        None => html! { p.note { (none) } },
    }
}

/// `/errors/{id}`: one record, the rows now and what a retry would write.
pub(crate) fn record(e: &ErrorRecord, preview: Option<&RowPreview>) -> Markup {
    layout(
        &format!("Error {}", e.id),
        false,
        html! {
            table #record {
                tr { th { "map" } td { a href={ "/maps/" (e.map) } { (e.map) } } }
                tr { th { "scope" } td { (e.scope.name()) } }
                tr { th { "phase" } td { (e.phase) } }
                tr { th { "direction" } td { (e.direction) } }
                tr { th { "type" } td { (e.error_type) } }
                tr { th { "code" } td { (e.code.as_deref().unwrap_or("-")) } }
                tr { th { "key" } td { code { (e.key) } } }
                tr { th { "attempts" } td { (e.attempts) } }
                tr { th { "first failure" } td { (e.first_at) } }
                tr { th { "last failure" } td { (e.last_at) } }
                tr { th { "state" } td { (e.state) } }
                tr { th { "message" } td { (e.message) } }
            }
            h2 { "Its row" }
            @match &e.row { Some(row) => pre { (row) }, None => p.note { "No row was recorded." } }
            @if let Some(p) = preview {
                @if let Some(problem) = &p.problem { p.warn { (problem) } }
                h2 { "Source row now" }
                (json_block(&p.source_row, "Gone."))
                h2 { "Target row now" }
                (json_block(&p.target_row, "Not there."))
                h2 { "What a retry would write" }
                @if p.retry_deletes { p { "A delete (the source row is gone)." } } @else { (json_block(&p.retry_writes, "Nothing.")) }
            }
        },
    )
}

/// One alert rule and its state per matched map.
pub(crate) struct AlertView {
    pub name: String,
    pub spec: serde_json::Value,
    pub state: crate::alert::RuleState,
}

/// `/alerts` (every rule) and `/alerts/{name}` (one, with its spec).
pub(crate) fn alerts(rules: &[AlertView], one: bool) -> Markup {
    let title = match (one, rules.first()) {
        (true, Some(r)) => format!("Alert {}", r.name),
        _ => "Alerts".into(),
    };
    layout(
        &title,
        true,
        html! {
            @if rules.is_empty() { p.note { "No alert rules." } }
            @for r in rules {
                @if !one { h2 { a href={ "/alerts/" (r.name) } { (r.name) } } }
                table.alert {
                    tr { th { "map" } th { "state" } th { "errors in window" } th { "last fired" } th { "notifications sent" } th { "suppressed" } th { "last delivery error" } th { "action" } }
                    @for (map, s) in &r.state {
                        tr {
                            td { a href={ "/maps/" (map) } { (map) } }
                            td { (name(&s.state)) }
                            td.n { (s.count) }
                            td { (s.last_fired_at.as_deref().unwrap_or("-")) }
                            td.n { (s.notifications_sent) }
                            td.n { (s.notifications_suppressed) }
                            td { (s.last_delivery_error.as_deref().unwrap_or("-")) }
                            td { (s.action_taken.as_deref().unwrap_or("-")) }
                        }
                    }
                }
                @if one { h2 { "Rule" } pre { (serde_json::to_string_pretty(&r.spec).unwrap_or_default()) } }
            }
        },
    )
}

/// `/requests`: the ErrorRequests of the config and what became of them (`None`: not seen
/// by a pass yet).
pub(crate) fn requests(list: &[(String, Option<RequestStatus>)]) -> Markup {
    layout(
        "Requests",
        true,
        html! {
            table #requests {
                tr { th { "request" } th { "map" } th { "action" } th { "state" } th { "matched" } th { "succeeded" } th { "failed" } th { "dismissed" } th { "requested by" } th { "reason" } }
                @for (request, st) in list {
                    tr id={ "request-" (request) } {
                        td { (request) }
                        @match st {
                            None => { td {} td {} td.state.Queued { "not seen yet (the next pass takes it)" } td {} td {} td {} td {} td {} td {} }
                            Some(s) => {
                                td { a href={ "/maps/" (s.map) } { (s.map) } }
                                td { (name(&s.action)) }
                                td.state class=(name(&s.state)) { (name(&s.state)) }
                                td.n { (s.matched) } td.n { (s.succeeded) } td.n { (s.failed) } td.n { (s.dismissed) }
                                td { (s.requested_by.as_deref().unwrap_or("-")) }
                                td { (s.reason.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// `/login`: the dashboard token, once per browser session.
pub(crate) fn login() -> Markup {
    layout(
        "Sign in",
        false,
        html! {
            form method="post" action="/login" {
                label { "Dashboard token " input type="password" name="token" autocomplete="current-password"; }
                " "
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// The confirmation before a Retry or Dismiss is written: what it matches, whether it would
/// be Rejected or wait.
pub(crate) fn confirm(form: &super::actions::ActionForm, p: &super::actions::Preview) -> Markup {
    let verb = name(&form.action);
    let a = &p.assessment;
    layout(
        &format!("{verb} errored records of map {}", p.map),
        false,
        html! {
            p #confirm-matched { "It matches " strong { (a.matched) } " open errored record(s) of map " (p.map) " now"
                @if form.selected { " (" (form.ids.len()) " selected)" } "." }
            @if let Some(reason) = &a.rejected {
                p.warn #rejected { "It would be Rejected: " (reason) ". Narrow the filter." }
            } @else {
                @if form.action == crate::config::RequestAction::Retry && p.phase != "Running" {
                    p.warn #waits { "Map " (p.map) " is " (p.phase) ": the retry waits until it is Running." }
                }
                p.note { (a.waiting) " request(s) already wait for this map. The request is written to requests/ and committed; the next pass runs it." }
                form method="post" action="/errors/submit" {
                    input type="hidden" name="csrf" value=(form.csrf);
                    input type="hidden" name="do" value=(form.todo());
                    @for id in &form.ids { input type="hidden" name="id" value=(id); }
                    @for (k, v) in form.params.fields() { input type="hidden" name=(k) value=(v); }
                    button type="submit" #submit { (verb) " " (a.matched) " record(s)" }
                }
            }
            p { a href={ "/errors" (form.params.link(None)) } { "Back to the errors" } }
        },
    )
}

/// After a request was written and committed.
pub(crate) fn submitted(request: &str) -> Markup {
    layout(
        "Request committed",
        false,
        html! {
            p #submitted { "Request " code { (request) } " was written to requests/ and committed. The next pass runs it: "
                a href={ "/requests#request-" (request) } { "follow its state" } "." }
        },
    )
}
