//! The HTTP endpoint of `dualwrite run`: the service's own routes, on axum.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | OpenMetrics text format, which Prometheus scrapes (see `metrics`) |
//! | `/healthz` | 200 while the process runs |
//! | `/readyz` | 200 once a pass has completed and the last one reached the state store, else 503 |
//! | `/api/v1/maps`, `/api/v1/maps/{name}` | the `status/maps/*.yaml` content, as JSON |
//! | `/api/v1/maps/{name}/verify` | the map's last `dualwrite verify` (`status/verify/<map>.yaml`) |
//! | `/api/v1/alerts`, `/api/v1/alerts/{name}` | the `status/alerts/*.yaml` content, as JSON |
//! | `/api/v1/requests`, `/api/v1/requests/{name}` | the `status/requests/*.yaml` content |
//! | `/api/v1/service` | revision, config validity, last pass error, leases held |
//!
//! These routes read the loop's [`Snapshot`](super::Snapshot) only: answering never touches
//! a database. The web dashboard (`crate::dashboard`) is merged beside them; its pages read
//! the state store. Does not own routing of the dashboard's pages.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::Shared;
use crate::config::ApiVersion;
use crate::status::{StatusFile, StatusMetadata};

/// Accepts connections until the process ends: the service's routes, and the dashboard's
/// beside them.
pub(crate) async fn serve(listener: tokio::net::TcpListener, shared: Shared, dashboard: Router) {
    let _ = axum::serve(listener, app(routes(shared).merge(dashboard))).await;
}

/// The service's own routes (GET; HEAD is answered as GET).
fn routes(shared: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/service", get(service))
        .route("/api/v1/maps", get(maps))
        .route("/api/v1/maps/{name}", get(map))
        .route("/api/v1/maps/{name}/verify", get(verify))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/{name}", get(alert))
        .route("/api/v1/requests", get(requests))
        .route("/api/v1/requests/{name}", get(request))
        .with_state(shared)
}

/// `routes` made whole: unknown paths answer a JSON 404, unknown methods 405, and a
/// trailing slash is dropped before routing (`/metrics/` is `/metrics`).
pub(crate) fn app(routes: Router) -> Router {
    let routes = routes
        .fallback(fallback)
        .method_not_allowed_fallback(get_only);
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(trailing_slash))
}

async fn get_only() -> Response {
    respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n")
}

/// `/metrics/` answers as `/metrics` did with the hand-written router.
async fn trailing_slash(
    mut req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let uri = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(uri) = uri.parse() {
            *req.uri_mut() = uri;
        }
    }
    next.run(req).await
}

/// The answer to a path no route knows: a JSON 404, as the API's other answers.
async fn fallback(method: Method, uri: axum::http::Uri) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return get_only().await;
    }
    not_found(uri.path().trim_end_matches('/'))
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body.into()).into_response()
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_vec_pretty(value).expect("status serializes");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn not_found(what: &str) -> Response {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({ "error": format!("{what} not found") }),
    )
}

fn status_file<S: Serialize>(kind: &str, name: &str, status: S) -> StatusFile<S> {
    StatusFile {
        api_version: ApiVersion::V1,
        kind: kind.to_string(),
        metadata: StatusMetadata {
            name: name.to_string(),
        },
        status,
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ServiceInfo<'a> {
    ready: bool,
    revision: &'a str,
    config_valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_pass_error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    holder: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owned_maps: Option<Vec<&'a str>>,
}

async fn metrics(State(shared): State<Shared>) -> Response {
    let rendered = super::metrics::render(&shared.read().expect("snapshot lock"));
    match rendered {
        Ok(body) => respond(StatusCode::OK, super::metrics::CONTENT_TYPE, body),
        Err(e) => {
            tracing::error!(error = %e, "/metrics");
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            )
        }
    }
}

async fn healthz() -> Response {
    respond(StatusCode::OK, "text/plain", "ok\n")
}

async fn readyz(State(shared): State<Shared>) -> Response {
    let snap = shared.read().expect("snapshot lock");
    if snap.ready {
        return respond(StatusCode::OK, "text/plain", "ready\n");
    }
    let why = match (&snap.last_pass_error, &snap.config_error) {
        (Some(error), _) => error.clone(),
        (None, Some(config)) => format!("no valid config yet: {config}"),
        (None, None) => "no pass has completed yet".into(),
    };
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        format!("not ready: {why}\n"),
    )
}

async fn service(State(shared): State<Shared>) -> Response {
    let snap = shared.read().expect("snapshot lock");
    json(
        StatusCode::OK,
        &ServiceInfo {
            ready: snap.ready,
            revision: &snap.revision,
            config_valid: snap.config_error.is_none(),
            config_error: snap.config_error.as_deref(),
            last_pass_error: snap.last_pass_error.as_deref(),
            holder: snap.leases.as_ref().map(|(h, _)| h.as_str()),
            owned_maps: snap
                .leases
                .as_ref()
                .map(|(_, owned)| owned.iter().map(String::as_str).collect()),
        },
    )
}

async fn maps(State(shared): State<Shared>) -> Response {
    let snap = shared.read().expect("snapshot lock");
    let all: Vec<_> = snap
        .maps
        .iter()
        .map(|(name, st)| status_file("TableMapStatus", name, st))
        .collect();
    json(StatusCode::OK, &all)
}

async fn map(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    let snap = shared.read().expect("snapshot lock");
    match snap.maps.get(&name) {
        Some(st) => json(StatusCode::OK, &status_file("TableMapStatus", &name, st)),
        None => not_found(&format!("map {name}")),
    }
}

async fn verify(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    let snap = shared.read().expect("snapshot lock");
    match (snap.maps.get(&name), snap.verify.get(&name)) {
        (_, Some(result)) => json(StatusCode::OK, &status_file("VerifyStatus", &name, result)),
        (Some(_), None) => not_found(&format!("a verify of map {name}")),
        (None, None) => not_found(&format!("map {name}")),
    }
}

async fn alerts(State(shared): State<Shared>) -> Response {
    let snap = shared.read().expect("snapshot lock");
    let all: Vec<_> = snap
        .alerts
        .iter()
        .map(|(name, st)| status_file("AlertRuleStatus", name, st))
        .collect();
    json(StatusCode::OK, &all)
}

async fn alert(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    let snap = shared.read().expect("snapshot lock");
    match snap.alerts.get(&name) {
        Some(st) => json(StatusCode::OK, &status_file("AlertRuleStatus", &name, st)),
        None => not_found(&format!("alert rule {name}")),
    }
}

async fn requests(State(shared): State<Shared>) -> Response {
    let snap = shared.read().expect("snapshot lock");
    let all: Vec<_> = snap
        .requests
        .iter()
        .map(|(name, st)| status_file("ErrorRequestStatus", name, st))
        .collect();
    json(StatusCode::OK, &all)
}

async fn request(State(shared): State<Shared>, Path(name): Path<String>) -> Response {
    let snap = shared.read().expect("snapshot lock");
    match snap.requests.get(&name) {
        Some(st) => json(
            StatusCode::OK,
            &status_file("ErrorRequestStatus", &name, st),
        ),
        None => not_found(&format!("request {name}")),
    }
}
