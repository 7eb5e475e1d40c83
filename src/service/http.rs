//! The HTTP endpoint of `dualwrite run` (HTTP/1.1, GET only):
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | Prometheus text format (see `metrics`) |
//! | `/healthz` | 200 while the process runs |
//! | `/readyz` | 200 once a pass has completed and the last one reached the state store, else 503 |
//! | `/api/v1/maps`, `/api/v1/maps/{name}` | the `status/maps/*.yaml` content, as JSON |
//! | `/api/v1/maps/{name}/verify` | the map's last `dualwrite verify` (`status/verify/<map>.yaml`) |
//! | `/api/v1/alerts`, `/api/v1/alerts/{name}` | the `status/alerts/*.yaml` content, as JSON |
//! | `/api/v1/requests`, `/api/v1/requests/{name}` | the `status/requests/*.yaml` content |
//! | `/api/v1/service` | revision, config validity, last pass error, leases held |
//!
//! Reads the loop's [`Snapshot`](super::Snapshot) only: answering never touches a database.

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use super::Shared;
use crate::config::ApiVersion;
use crate::status::{StatusFile, StatusMetadata};

/// Accepts connections until the process ends.
pub(crate) async fn serve(listener: tokio::net::TcpListener, shared: Shared) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let response = route(&shared, req.method(), req.uri().path());
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).expect("status serializes");
    respond(status, "application/json", body)
}

fn not_found(what: &str) -> Response<Full<Bytes>> {
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

fn route(shared: &Shared, method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n");
    }
    let snap = shared.read().expect("snapshot lock");
    let path = path.trim_end_matches('/');
    match path {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            super::metrics::render(&snap),
        ),
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" if snap.ready => respond(StatusCode::OK, "text/plain", "ready\n"),
        "/readyz" => {
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
        "/api/v1/service" => json(
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
        ),
        "/api/v1/maps" => json(
            StatusCode::OK,
            &snap
                .maps
                .iter()
                .map(|(name, st)| status_file("TableMapStatus", name, st))
                .collect::<Vec<_>>(),
        ),
        "/api/v1/alerts" => json(
            StatusCode::OK,
            &snap
                .alerts
                .iter()
                .map(|(name, st)| status_file("AlertRuleStatus", name, st))
                .collect::<Vec<_>>(),
        ),
        "/api/v1/requests" => json(
            StatusCode::OK,
            &snap
                .requests
                .iter()
                .map(|(name, st)| status_file("ErrorRequestStatus", name, st))
                .collect::<Vec<_>>(),
        ),
        _ => {
            if let Some(name) = path.strip_prefix("/api/v1/requests/") {
                return match snap.requests.get(name) {
                    Some(st) => json(StatusCode::OK, &status_file("ErrorRequestStatus", name, st)),
                    None => not_found(&format!("request {name}")),
                };
            }
            if let Some(name) = path
                .strip_prefix("/api/v1/maps/")
                .and_then(|rest| rest.strip_suffix("/verify"))
            {
                return match (snap.maps.get(name), snap.verify.get(name)) {
                    (_, Some(result)) => {
                        json(StatusCode::OK, &status_file("VerifyStatus", name, result))
                    }
                    (Some(_), None) => not_found(&format!("a verify of map {name}")),
                    (None, None) => not_found(&format!("map {name}")),
                };
            }
            if let Some(name) = path.strip_prefix("/api/v1/maps/") {
                return match snap.maps.get(name) {
                    Some(st) => json(StatusCode::OK, &status_file("TableMapStatus", name, st)),
                    None => not_found(&format!("map {name}")),
                };
            }
            if let Some(name) = path.strip_prefix("/api/v1/alerts/") {
                return match snap.alerts.get(name) {
                    Some(st) => json(StatusCode::OK, &status_file("AlertRuleStatus", name, st)),
                    None => not_found(&format!("alert rule {name}")),
                };
            }
            not_found(path)
        }
    }
}
