//! `lakectl serve`: the lakehouse over HTTP (axum), on the same code as the CLI: an
//! upload is an ingest change applied by `apply::ingest` (the ledger makes a retried
//! upload a no-op), a rollback is `apply::rollback`, a query is `query`, the plan is
//! `plan`. There is no second write path.
//!
//! Routes (all JSON unless said; errors are `{"code", "message"}` with a stable code):
//! - `GET /healthz`, `GET /metrics` (Prometheus text);
//! - `GET /api/v1/tables`, `GET /api/v1/tables/{ns}/{t}`,
//!   `GET /api/v1/tables/{ns}/{t}/snapshots`, `POST /api/v1/tables/{ns}/{t}/rollback`;
//! - `POST /api/v1/tables/{ns}/{t}/upload` (CSV, JSON lines or Parquet body, streamed
//!   to a spool file, `Idempotency-Key` honoured, 413 past the size limit, 422 for rows
//!   that do not fit);
//! - `GET|POST /api/v1/query` (read-only SQL, `as_of`, json/csv/arrow, row limit,
//!   timeout);
//! - `GET /api/v1/plan`; `GET /api/v1/watch` (the conditions of the `lakectl watch`
//!   whose status URL `--watch-status` names);
//! - `GET /` (the web console, [`console`]: one page, inside the binary);
//! - `GET /openapi.json` (generated from the handlers' types), `GET /docs` (Swagger UI,
//!   assets vendored in the binary);
//! - the Iceberg REST catalog API under `/catalog` (see [`catalog`]).
//!
//! With a token configured every route needs `Authorization: Bearer <token>` but
//! `/healthz`, the OAuth2 token endpoint, and the pages that hold no data: `/` (the
//! console asks for the token and sends it on each of its API calls), `/docs` and
//! `/openapi.json` (Swagger's Authorize button sends it). Without a token, only a
//! loopback address may be bound.

mod api;
mod catalog;
mod console;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use utoipa::OpenApi;

use crate::lake::Lake;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// Bearer token required on every route but `/healthz`.
    pub token: Option<String>,
    /// The manifest directory served (its lakehouse, and `GET /api/v1/plan`).
    pub manifests: PathBuf,
    /// Largest upload body accepted (bytes).
    pub max_upload_bytes: u64,
    pub query_timeout: Duration,
    /// Most rows a query returns (more: `truncated: true`).
    pub max_rows: usize,
    /// OAuth2 clients (id → secret) that `POST /catalog/v1/oauth/tokens` issues
    /// bearer tokens to (client-credentials grant); with any, auth is required.
    pub clients: std::collections::BTreeMap<String, String>,
    /// How long an issued token is valid.
    pub token_ttl: Duration,
    /// Base URL of a `lakectl watch` status server (`GET /api/v1/watch` reads its
    /// `/status`).
    pub watch_status: Option<String>,
}

/// The OAuth2 token endpoint of the catalog (no auth of its own: it checks the client).
pub const TOKEN_PATH: &str = "/catalog/v1/oauth/tokens";

/// Shared state of the handlers.
pub struct AppState {
    pub lake: Lake,
    pub config: ServeConfig,
    pub metrics: Metrics,
    /// Tokens issued to OAuth2 clients, with when they expire.
    pub issued: Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Query providers by metadata location: a query builds only the providers of
    /// tables that changed since the last one.
    pub providers: crate::query::ProviderCache,
    /// The client `GET /api/v1/watch` asks the watcher with (5 s timeout).
    pub watch_client: reqwest::Client,
}

impl AppState {
    /// Whether requests need a bearer token.
    fn auth_required(&self) -> bool {
        self.config.token.is_some() || !self.config.clients.is_empty()
    }

    /// Whether `t` is the configured token or an issued one that has not expired.
    fn token_ok(&self, t: &str) -> bool {
        if let Some(token) = &self.config.token {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                return true;
            }
        }
        let Ok(mut issued) = self.issued.lock() else {
            return false;
        };
        let now = std::time::Instant::now();
        issued.retain(|_, until| *until > now);
        issued.contains_key(t)
    }
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct Metrics {
    pub requests: Mutex<std::collections::BTreeMap<(String, u16), u64>>,
    pub uploads: AtomicU64,
    pub upload_rows: AtomicU64,
    pub queries: AtomicU64,
    pub request_seconds_micros: AtomicU64,
}

impl Metrics {
    fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP lakectl_http_requests_total HTTP requests by route and status.\n# TYPE lakectl_http_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((route, status), n) in m.iter() {
                out.push_str(&format!(
                    "lakectl_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}\n"
                ));
            }
        }
        let g = |o: &AtomicU64| o.load(Ordering::Relaxed);
        out.push_str(&format!(
            "# HELP lakectl_http_request_seconds_total Time spent serving requests.\n# TYPE lakectl_http_request_seconds_total counter\nlakectl_http_request_seconds_total {}\n",
            g(&self.request_seconds_micros) as f64 / 1e6
        ));
        out.push_str(&format!(
            "# HELP lakectl_uploads_total Uploads committed.\n# TYPE lakectl_uploads_total counter\nlakectl_uploads_total {}\n",
            g(&self.uploads)
        ));
        out.push_str(&format!(
            "# HELP lakectl_upload_rows_total Rows appended by uploads.\n# TYPE lakectl_upload_rows_total counter\nlakectl_upload_rows_total {}\n",
            g(&self.upload_rows)
        ));
        out.push_str(&format!(
            "# HELP lakectl_queries_total SQL queries run.\n# TYPE lakectl_queries_total counter\nlakectl_queries_total {}\n",
            g(&self.queries)
        ));
        out
    }
}

/// An API error: HTTP status, stable code, message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(api::ErrorBody {
                code: self.code.to_string(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "lakectl",
        description = "The lakehouse lakectl manages, over HTTP: tables, snapshots, rollback, uploads, read-only SQL, the plan."
    ),
    paths(
        api::healthz,
        api::list_tables,
        api::get_table,
        api::snapshots,
        api::rollback,
        api::upload,
        api::query_get,
        api::query_post,
        api::plan,
        api::watch_status,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The router of the whole server.
pub fn router(state: Arc<AppState>) -> Router {
    let docs = utoipa_swagger_ui::SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi());
    Router::new()
        .merge(api::routes())
        .merge(catalog::routes())
        .merge(docs)
        .route("/metrics", axum::routing::get(metrics))
        .route("/", axum::routing::get(console::page))
        .route("/console/{file}", axum::routing::get(console::file))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Auth (bearer token) and request metrics, around every route.
async fn guard(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| {
            if req.uri().path().starts_with("/docs") {
                "/docs".to_string()
            } else {
                "other".to_string()
            }
        });
    let path = req.uri().path();
    let open = matches!(path, "/healthz" | TOKEN_PATH | "/" | "/openapi.json")
        || path == "/docs"
        || path.starts_with("/docs/")
        || path.starts_with("/console/");
    let response = match state.auth_required() {
        true if !open => {
            let ok = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| state.token_ok(t));
            if ok {
                next.run(req).await
            } else {
                let mut r = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "a valid `Authorization: Bearer <token>` header is required",
                )
                .into_response();
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
                r
            }
        }
        _ => next.run(req).await,
    };
    let m = &state.metrics;
    if let Ok(mut map) = m.requests.lock() {
        *map.entry((route, response.status().as_u16())).or_default() += 1;
    }
    m.request_seconds_micros
        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    response
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Binds and serves until SIGINT/SIGTERM. Prints `listening on http://ADDR` first.
pub async fn serve(lake: Lake, config: ServeConfig) -> Result<(), String> {
    if config.token.is_none() && config.clients.is_empty() && !config.addr.ip().is_loopback() {
        return Err(format!(
            "refusing to serve on {} without a token: set LAKECTL_TOKEN or LAKECTL_CLIENTS, or bind 127.0.0.1",
            config.addr
        ));
    }
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| format!("cannot bind {}: {e}", config.addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let state = Arc::new(AppState {
        lake,
        config,
        metrics: Metrics::default(),
        issued: Mutex::new(Default::default()),
        providers: Default::default(),
        watch_client: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?,
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
