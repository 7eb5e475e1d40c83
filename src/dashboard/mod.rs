//! The web dashboard (SPEC §6): HTML pages of every map, the consolidated error view, one
//! record, alerts and requests; the activity log's downloads; `/api/v1/errors` and the
//! OpenAPI document. Served beside the service's routes by `dualwrite run --listen`, and
//! alone by `dualwrite dashboard --listen` (which never runs a pass).
//!
//! Reads the work tree's config and the state store for each request (`source`, which keeps
//! a PostgreSQL store's connections between requests), never the
//! endpoints, except the record page, which reads the rows now as `errors list --show-rows`
//! does. Read-only unless a dashboard token is configured; then Retry and Dismiss write
//! ErrorRequest files the GitOps way (`actions`). Does not own the service's routes
//! (`crate::service`) nor running requests (`crate::requests`).

mod actions;
mod api;
mod filter;
mod pages;
mod source;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::HeaderMap;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::state::{ErrorPhase, ErrorQuery, ErrorState, Order};

use filter::ErrorParams;

/// How long the record page waits for the endpoints' rows before it shows the record alone.
const PREVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Activity entries on the map page (the downloads have all of them).
const ACTIVITY_SHOWN: usize = 100;
/// Catch-up errors on the map page (the error view has all of them).
const CATCH_UP_SHOWN: usize = 20;

pub use actions::Token;

/// How the dashboard is served.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// With a token, Retry and Dismiss write requests; without, the dashboard is read-only.
    pub token: Option<Token>,
}

/// Why a page cannot be shown; each is an HTTP status with a message.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("no state store yet: nothing has run, so nothing has failed")]
    NoStore,
    #[error("the config in the work tree is invalid:\n{0}")]
    ConfigInvalid(String),
    #[error("the state store: {0}")]
    Store(String),
    #[error("committing the request: {0}")]
    Commit(String),
    #[error("{0}")]
    Internal(String),
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

impl From<crate::state::StateError> for DashboardError {
    fn from(e: crate::state::StateError) -> Self {
        DashboardError::Store(e.to_string())
    }
}

impl DashboardError {
    fn status(&self) -> StatusCode {
        match self {
            DashboardError::NotFound(_) => StatusCode::NOT_FOUND,
            DashboardError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DashboardError::Forbidden(_) => StatusCode::FORBIDDEN,
            DashboardError::NoStore | DashboardError::ConfigInvalid(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error as the API answers it: `{"error": …}`.
    fn json(&self) -> Response {
        (
            self.status(),
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let title = self
            .status()
            .canonical_reason()
            .unwrap_or("Error")
            .to_string();
        (
            self.status(),
            Html(pages::problem(&title, &self.to_string()).into_string()),
        )
            .into_response()
    }
}

/// What every handler shares.
struct Dashboard {
    dir: PathBuf,
    source: source::Source,
    options: Options,
    sessions: actions::Sessions,
}

impl Dashboard {
    /// The CSRF token to put in forms, when this browser may act.
    fn csrf(&self, headers: &HeaderMap) -> Option<String> {
        self.options.token.as_ref()?;
        self.sessions.of(headers).map(|id| self.sessions.csrf(&id))
    }

    /// Who may act on this POST: 403 without a token, from another site, without a session
    /// or with the wrong form token.
    fn guard(&self, headers: &HeaderMap, csrf: Option<&str>) -> Result<&Token, DashboardError> {
        let token = self.options.token.as_ref().ok_or_else(|| {
            DashboardError::Forbidden(
                "the dashboard is read-only: no dashboard token is configured".into(),
            )
        })?;
        if !actions::same_origin(headers) {
            return Err(DashboardError::Forbidden(
                "refused: the request comes from another site".into(),
            ));
        }
        if let Some(csrf) = csrf {
            let expected = self.csrf(headers).ok_or_else(|| {
                DashboardError::Forbidden("sign in with the dashboard token first".into())
            })?;
            if expected != csrf {
                return Err(DashboardError::Forbidden(
                    "the form has expired or was not made by this dashboard: reload the page"
                        .into(),
                ));
            }
        }
        Ok(token)
    }
}

type App = State<Arc<Dashboard>>;

fn page(markup: maud::Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// The dashboard's routes over the repository in `dir`.
pub fn router(dir: &Path, options: Options) -> Router {
    let app = Arc::new(Dashboard {
        dir: dir.to_path_buf(),
        source: source::Source::new(dir),
        options,
        sessions: actions::Sessions::new(),
    });
    Router::new()
        .route("/", get(overview))
        .route("/maps/{name}", get(map))
        .route("/maps/{name}/activity.csv", get(activity_csv))
        .route("/maps/{name}/activity.jsonl", get(activity_jsonl))
        .route("/errors", get(errors))
        .route("/errors/{id}", get(record))
        .route("/errors/confirm", post(confirm))
        .route("/errors/submit", post(submit))
        .route("/login", get(login_form).post(login))
        .route("/alerts", get(alerts))
        .route("/alerts/{name}", get(alert))
        .route("/requests", get(requests))
        .route("/api/v1/errors", get(api_errors))
        .route("/api/v1/openapi.json", get(openapi))
        .with_state(app)
}

/// `dualwrite dashboard`: serves the dashboard (and `/healthz`) on `listen` until
/// SIGTERM/Ctrl-C, without running the loop.
pub fn serve(dir: &Path, listen: SocketAddr, options: Options) -> Result<(), DashboardError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DashboardError::Runtime)?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| DashboardError::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(listen);
        eprintln!("dualwrite dashboard: http://{addr}/");
        let routes = router(dir, options).route("/healthz", get(|| async { "ok\n" }));
        let app = crate::service::app(routes);
        axum::serve(listener, app)
            .with_graceful_shutdown(crate::service::shutdown_signal())
            .await
            .map_err(|source| DashboardError::Listen {
                addr: listen,
                source,
            })
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

async fn overview(State(app): App) -> Result<Response, DashboardError> {
    let (maps, no_store) = app
        .source
        .read(|view| {
            Ok(match &view.store {
                None => (Vec::new(), true),
                Some(store) => (
                    crate::status::map_statuses(
                        store.as_ref(),
                        view.cfg.maps.iter().map(|m| &m.resource),
                    )?,
                    false,
                ),
            })
        })
        .await?;
    Ok(page(pages::overview(&maps, no_store)))
}

async fn map(State(app): App, UrlPath(name): UrlPath<String>) -> Result<Response, DashboardError> {
    let map_name = name.clone();
    let (status, activity, catch_up) = app
        .source
        .read(move |view| {
            let map = view.require_map(&name)?;
            let store = view.store()?;
            let (_, status) = crate::status::map_statuses(store, std::iter::once(map))?
                .pop()
                .expect("one map asked, one answered");
            let activity = store.activity(&name, ACTIVITY_SHOWN)?;
            let query = ErrorQuery {
                phase: Some(ErrorPhase::CatchUp),
                ..ErrorQuery::open(&name)
            };
            let catch_up = store.query_errors(&query, Order::NewestFirst, CATCH_UP_SHOWN)?;
            Ok((status, activity, catch_up))
        })
        .await?;
    Ok(page(pages::map(&pages::MapPage {
        name: &map_name,
        status: &status,
        activity: &activity,
        catch_up: &catch_up,
    })))
}

async fn activity(
    app: &Dashboard,
    name: String,
    format: crate::activity::Format,
) -> Result<Response, DashboardError> {
    let map = name.clone();
    let entries = app
        .source
        .read(move |view| {
            view.require_map(&name)?;
            Ok(match &view.store {
                Some(store) => store.activity_since(&name, None)?,
                None => Vec::new(),
            })
        })
        .await?;
    let body = crate::activity::export(&map, &entries, format)
        .map_err(|e| DashboardError::Internal(format!("the activity download: {e}")))?;
    let (content_type, ext) = match format {
        crate::activity::Format::Csv => ("text/csv; charset=utf-8", "csv"),
        crate::activity::Format::Jsonl => ("application/jsonl; charset=utf-8", "jsonl"),
    };
    let disposition = format!(
        "attachment; filename=\"{}-activity.{ext}\"",
        map.replace(['"', '\\'], "_")
    );
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

async fn activity_csv(
    State(app): App,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, DashboardError> {
    activity(&app, name, crate::activity::Format::Csv).await
}

async fn activity_jsonl(
    State(app): App,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, DashboardError> {
    activity(&app, name, crate::activity::Format::Jsonl).await
}

/// One page of the error view: the records the filter selects (all pages), the page, and
/// the id the next page starts below.
struct ErrorPageData {
    maps: Vec<String>,
    matched: u64,
    records: Vec<crate::state::ErrorRecord>,
    next: Option<i64>,
}

async fn error_page(
    app: &Dashboard,
    params: &ErrorParams,
) -> Result<ErrorPageData, DashboardError> {
    let selection = params.selection()?;
    let map = params.map().map(str::to_string);
    app.source
        .read(move |view| {
            if let Some(map) = &map {
                view.require_map(map)?;
            }
            let maps = view
                .cfg
                .maps
                .iter()
                .map(|m| m.resource.metadata.name.clone())
                .collect();
            let Some(store) = &view.store else {
                return Ok(ErrorPageData {
                    maps,
                    matched: 0,
                    records: Vec::new(),
                    next: None,
                });
            };
            let all = ErrorQuery {
                below_id: None,
                ..selection.query.clone()
            };
            let matched = store.count_errors(&all)?;
            // One more than the page: whether an older page exists, without counting.
            let mut records =
                store.query_errors(&selection.query, Order::NewestFirst, selection.limit + 1)?;
            let next = if records.len() > selection.limit {
                records.truncate(selection.limit);
                records.last().map(|r| r.id)
            } else {
                None
            };
            Ok(ErrorPageData {
                maps,
                matched,
                records,
                next,
            })
        })
        .await
}

async fn errors(
    State(app): App,
    headers: HeaderMap,
    Query(params): Query<ErrorParams>,
) -> Result<Response, DashboardError> {
    let data = error_page(&app, &params).await?;
    let csrf = app.csrf(&headers);
    Ok(page(pages::errors(&pages::ErrorsPage {
        params: &params,
        maps: &data.maps,
        matched: data.matched,
        records: &data.records,
        next: data.next,
        actions: csrf.as_deref(),
        sign_in: app.options.token.is_some() && csrf.is_none(),
    })))
}

async fn api_errors(State(app): App, Query(params): Query<ErrorParams>) -> Response {
    match error_page(&app, &params).await {
        Ok(data) => {
            axum::Json(api::errors(&params, data.matched, &data.records, data.next)).into_response()
        }
        Err(e) => e.json(),
    }
}

async fn openapi() -> Response {
    axum::Json(api::openapi()).into_response()
}

async fn record(State(app): App, UrlPath(id): UrlPath<String>) -> Result<Response, DashboardError> {
    let id: i64 = id
        .parse()
        .map_err(|_| DashboardError::NotFound(format!("error {id}")))?;
    let (cfg, record) = app
        .source
        .read(move |view| {
            let query = ErrorQuery {
                ids: vec![id],
                ..Default::default()
            };
            let record = view
                .store()?
                .query_errors(&query, Order::NewestFirst, 1)?
                .pop();
            let record = record.ok_or_else(|| DashboardError::NotFound(format!("error {id}")))?;
            Ok((view.cfg.clone(), record))
        })
        .await?;
    let previews =
        if record.state == ErrorState::Open && record.scope == crate::state::ErrorScope::Record {
            tokio::time::timeout(
                PREVIEW_TIMEOUT,
                crate::requests::preview_retries(&app.dir, &cfg, std::slice::from_ref(&record)),
            )
            .await
            .unwrap_or_default()
        } else {
            Default::default()
        };
    Ok(page(pages::record(&record, previews.get(&record.id))))
}

fn alert_views(
    view: &source::View,
    only: Option<&str>,
) -> Result<Vec<pages::AlertView>, DashboardError> {
    let mut rules = Vec::new();
    for rule in &view.cfg.alerts {
        let name = &rule.resource.metadata.name;
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let state = match &view.store {
            Some(store) => store
                .alert_state(name)?
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            None => Default::default(),
        };
        rules.push(pages::AlertView {
            name: name.clone(),
            spec: serde_json::to_value(&rule.resource.spec).unwrap_or_default(),
            state,
        });
    }
    if let Some(only) = only
        && rules.is_empty()
    {
        return Err(DashboardError::NotFound(format!("alert rule {only}")));
    }
    Ok(rules)
}

async fn alerts(State(app): App) -> Result<Response, DashboardError> {
    let rules = app.source.read(|view| alert_views(view, None)).await?;
    Ok(page(pages::alerts(&rules, false)))
}

async fn alert(
    State(app): App,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, DashboardError> {
    let rules = app
        .source
        .read(move |view| alert_views(view, Some(&name)))
        .await?;
    Ok(page(pages::alerts(&rules, true)))
}

async fn requests(State(app): App) -> Result<Response, DashboardError> {
    let list = app
        .source
        .read(|view| {
            view.cfg
                .requests
                .iter()
                .map(|r| {
                    let name = r.resource.metadata.name.clone();
                    let status = match &view.store {
                        Some(store) => store.request_status(&name)?,
                        None => None,
                    };
                    Ok((name, status))
                })
                .collect::<Result<Vec<_>, DashboardError>>()
        })
        .await?;
    Ok(page(pages::requests(&list)))
}

async fn login_form(State(app): App) -> Result<Response, DashboardError> {
    if app.options.token.is_none() {
        return Err(DashboardError::Forbidden(
            "the dashboard is read-only: no dashboard token is configured".into(),
        ));
    }
    Ok(page(pages::login()))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(app): App,
    headers: HeaderMap,
    body: String,
) -> Result<Response, DashboardError> {
    // Who may sign in is checked before the form is read: a read-only dashboard says 403.
    let token = app.guard(&headers, None)?;
    let form: LoginForm = serde_urlencoded::from_str(&body)
        .map_err(|e| DashboardError::BadRequest(format!("the form: {e}")))?;
    if !token.accepts(&form.token) {
        return Err(DashboardError::Forbidden("not the dashboard token".into()));
    }
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, app.sessions.open()),
            (header::LOCATION, "/errors".to_string()),
        ],
    )
        .into_response())
}

async fn confirm(
    State(app): App,
    headers: HeaderMap,
    body: String,
) -> Result<Response, DashboardError> {
    let form = actions::ActionForm::parse(&body)?;
    app.guard(&headers, Some(&form.csrf))?;
    let form = Arc::new(form);
    let shown = Arc::clone(&form);
    let preview = app
        .source
        .read(move |view| actions::preview(view, &form))
        .await?;
    Ok(page(pages::confirm(&shown, &preview)))
}

async fn submit(
    State(app): App,
    headers: HeaderMap,
    body: String,
) -> Result<Response, DashboardError> {
    let form = actions::ActionForm::parse(&body)?;
    let token = app.guard(&headers, Some(&form.csrf))?.clone();
    let dir = app.dir.clone();
    let name = app
        .source
        .read(move |view| actions::submit(&dir, view, &form, &token))
        .await?;
    Ok(page(pages::submitted(&name)))
}
