//! The Iceberg REST catalog API (`/catalog/v1/...`) over lakectl's own catalog and
//! warehouse, so PyIceberg, DuckDB, Spark and Trino can attach to a lakectl lakehouse
//! (`uri = http://HOST:PORT/catalog`). A commit is `Lake::commit`: the same requirement
//! checks and compare-and-swap as every lakectl change.
//!
//! Config, namespaces (list, create, load, exists, drop, properties), tables (list,
//! create, load, exists, commit, drop, rename). Errors use the REST spec's shape:
//! `{"error": {"message", "type", "code"}}`. Staged creates and multi-table
//! transactions are refused with 400; drop leaves the files in place (no purge).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use iceberg::spec::{
    FormatVersion, Schema, SortOrder, TableMetadata, TableMetadataBuilder, UnboundPartitionSpec,
};
use iceberg::{NamespaceIdent, TableIdent, TableRequirement, TableUpdate};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use crate::lake::{CommitError, LakeError};

type Shared = State<Arc<AppState>>;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/catalog/v1/config", get(config))
        .route(
            "/catalog/v1/namespaces",
            get(list_namespaces).post(create_namespace),
        )
        .route(
            "/catalog/v1/namespaces/{ns}",
            get(load_namespace)
                .head(namespace_exists)
                .delete(drop_namespace),
        )
        .route(
            "/catalog/v1/namespaces/{ns}/properties",
            post(update_namespace_properties),
        )
        .route(
            "/catalog/v1/namespaces/{ns}/tables",
            get(list_tables).post(create_table),
        )
        .route(
            "/catalog/v1/namespaces/{ns}/tables/{table}",
            get(load_table)
                .head(table_exists)
                .post(commit_table)
                .delete(drop_table),
        )
        .route("/catalog/v1/tables/rename", post(rename_table))
        .route("/catalog/v1/transactions/commit", post(commit_transaction))
        .route(super::TOKEN_PATH, post(issue_token))
}

/// `POST /catalog/v1/oauth/tokens`: the OAuth2 client-credentials grant (form fields
/// `grant_type`, `client_id`, `client_secret`, `scope`; or the id and secret in HTTP
/// Basic auth) for the clients the server was started with (`LAKECTL_CLIENTS`).
async fn issue_token(
    State(s): Shared,
    headers: axum::http::HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
        );
    }
    let basic = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        });
    let (id, secret) = match (form.get("client_id"), form.get("client_secret"), basic) {
        (Some(id), Some(secret), _) => (id.clone(), secret.clone()),
        (_, _, Some(pair)) => pair,
        (None, Some(secret), None) => (String::new(), secret.clone()),
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "no client credentials",
            )
        }
    };
    let known = s
        .config
        .clients
        .get(&id)
        .is_some_and(|want| super::constant_time_eq(want.as_bytes(), secret.as_bytes()));
    if !known {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client or wrong secret",
        );
    }
    let token = format!("lk-{}", uuid::Uuid::new_v4().simple());
    let ttl = s.config.token_ttl;
    if let Ok(mut issued) = s.issued.lock() {
        issued.insert(token.clone(), std::time::Instant::now() + ttl);
    }
    Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": ttl.as_secs().max(1),
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
    }))
    .into_response()
}

/// A REST-spec error response.
pub struct RestError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl RestError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> RestError {
        RestError {
            status,
            kind,
            message: message.into(),
        }
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {
                "message": self.message,
                "type": self.kind,
                "code": self.status.as_u16(),
            }})),
        )
            .into_response()
    }
}

fn server(e: impl std::fmt::Display) -> RestError {
    RestError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "ServiceFailureException",
        e.to_string(),
    )
}

fn bad(e: impl std::fmt::Display) -> RestError {
    RestError::new(
        StatusCode::BAD_REQUEST,
        "BadRequestException",
        e.to_string(),
    )
}

fn body<T>(r: Result<Json<T>, JsonRejection>) -> Result<T, RestError> {
    r.map(|Json(t)| t).map_err(|e| bad(e.body_text()))
}

/// A namespace from its path form (levels joined by the unit separator, 0x1F).
fn namespace(ns: &str) -> Result<NamespaceIdent, RestError> {
    NamespaceIdent::from_strs(ns.split('\u{1f}')).map_err(bad)
}

async fn require_namespace(s: &AppState, ns: &NamespaceIdent) -> Result<(), RestError> {
    if s.lake.namespace_exists(ns).await.map_err(server)? {
        Ok(())
    } else {
        Err(RestError::new(
            StatusCode::NOT_FOUND,
            "NoSuchNamespaceException",
            format!("namespace {} does not exist", ns.join(".")),
        ))
    }
}

fn no_table(ident: &TableIdent) -> RestError {
    RestError::new(
        StatusCode::NOT_FOUND,
        "NoSuchTableException",
        format!("table {ident} does not exist"),
    )
}

/// The endpoints this catalog implements, as the REST spec names them in
/// `/v1/config` (clients use only those listed).
const ENDPOINTS: &[&str] = &[
    "GET /v1/{prefix}/namespaces",
    "POST /v1/{prefix}/namespaces",
    "GET /v1/{prefix}/namespaces/{namespace}",
    "HEAD /v1/{prefix}/namespaces/{namespace}",
    "DELETE /v1/{prefix}/namespaces/{namespace}",
    "POST /v1/{prefix}/namespaces/{namespace}/properties",
    "GET /v1/{prefix}/namespaces/{namespace}/tables",
    "POST /v1/{prefix}/namespaces/{namespace}/tables",
    "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "DELETE /v1/{prefix}/namespaces/{namespace}/tables/{table}",
    "POST /v1/{prefix}/tables/rename",
    crate::lake::rest::TRANSACTIONS_ENDPOINT,
];

async fn config() -> Json<serde_json::Value> {
    Json(json!({"defaults": {}, "overrides": {}, "endpoints": ENDPOINTS}))
}

async fn list_namespaces(State(s): Shared) -> Result<Json<serde_json::Value>, RestError> {
    let ns: Vec<Vec<String>> = s
        .lake
        .list_namespaces()
        .await
        .map_err(server)?
        .into_iter()
        .map(|n| n.inner())
        .collect();
    Ok(Json(json!({ "namespaces": ns })))
}

#[derive(Deserialize)]
struct CreateNamespace {
    namespace: Vec<String>,
    #[serde(default)]
    properties: HashMap<String, String>,
}

async fn create_namespace(
    State(s): Shared,
    req: Result<Json<CreateNamespace>, JsonRejection>,
) -> Result<Json<serde_json::Value>, RestError> {
    let req = body(req)?;
    let ns = NamespaceIdent::from_vec(req.namespace.clone()).map_err(bad)?;
    if s.lake.namespace_exists(&ns).await.map_err(server)? {
        return Err(RestError::new(
            StatusCode::CONFLICT,
            "AlreadyExistsException",
            format!("namespace {} already exists", ns.join(".")),
        ));
    }
    let props: Vec<(String, String)> = req.properties.clone().into_iter().collect();
    s.lake
        .set_namespace_properties(&ns, &props)
        .await
        .map_err(server)?;
    Ok(Json(
        json!({"namespace": req.namespace, "properties": req.properties}),
    ))
}

async fn load_namespace(
    State(s): Shared,
    Path(ns): Path<String>,
) -> Result<Json<serde_json::Value>, RestError> {
    let ns = namespace(&ns)?;
    require_namespace(&s, &ns).await?;
    let props: HashMap<String, String> = s
        .lake
        .namespace_properties(&ns)
        .await
        .map_err(server)?
        .into_iter()
        .collect();
    Ok(Json(json!({"namespace": ns.inner(), "properties": props})))
}

async fn namespace_exists(State(s): Shared, Path(ns): Path<String>) -> StatusCode {
    match namespace(&ns) {
        Ok(ns) if s.lake.namespace_exists(&ns).await.unwrap_or(false) => StatusCode::NO_CONTENT,
        _ => StatusCode::NOT_FOUND,
    }
}

async fn drop_namespace(State(s): Shared, Path(ns): Path<String>) -> Result<StatusCode, RestError> {
    let ns = namespace(&ns)?;
    require_namespace(&s, &ns).await?;
    if s.lake.drop_namespace(&ns).await.map_err(server)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(RestError::new(
            StatusCode::CONFLICT,
            "NamespaceNotEmptyException",
            format!("namespace {} has tables", ns.join(".")),
        ))
    }
}

#[derive(Deserialize)]
struct UpdateProperties {
    #[serde(default)]
    removals: Vec<String>,
    #[serde(default)]
    updates: HashMap<String, String>,
}

async fn update_namespace_properties(
    State(s): Shared,
    Path(ns): Path<String>,
    req: Result<Json<UpdateProperties>, JsonRejection>,
) -> Result<Json<serde_json::Value>, RestError> {
    let req = body(req)?;
    let ns = namespace(&ns)?;
    require_namespace(&s, &ns).await?;
    if !req.removals.is_empty() {
        return Err(bad(
            "removing namespace properties is not supported by lakectl's catalog",
        ));
    }
    let props: Vec<(String, String)> = req.updates.clone().into_iter().collect();
    s.lake
        .set_namespace_properties(&ns, &props)
        .await
        .map_err(server)?;
    Ok(Json(json!({
        "updated": req.updates.keys().collect::<Vec<_>>(),
        "removed": [],
        "missing": [],
    })))
}

async fn list_tables(
    State(s): Shared,
    Path(ns): Path<String>,
) -> Result<Json<serde_json::Value>, RestError> {
    let ns = namespace(&ns)?;
    require_namespace(&s, &ns).await?;
    let ids: Vec<serde_json::Value> = s
        .lake
        .list_tables()
        .await
        .map_err(server)?
        .into_iter()
        .filter(|t| t.namespace() == &ns)
        .map(|t| json!({"namespace": t.namespace().clone().inner(), "name": t.name()}))
        .collect();
    Ok(Json(json!({ "identifiers": ids })))
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct LoadTableResult {
    metadata_location: String,
    metadata: TableMetadata,
    config: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct CreateTable {
    name: String,
    location: Option<String>,
    schema: Schema,
    partition_spec: Option<UnboundPartitionSpec>,
    write_order: Option<SortOrder>,
    #[serde(default)]
    stage_create: bool,
    #[serde(default)]
    properties: HashMap<String, String>,
}

async fn create_table(
    State(s): Shared,
    Path(ns): Path<String>,
    req: Result<Json<CreateTable>, JsonRejection>,
) -> Result<Json<LoadTableResult>, RestError> {
    let req = body(req)?;
    let ns = namespace(&ns)?;
    require_namespace(&s, &ns).await?;
    if req.stage_create {
        return Err(bad(
            "staged table creation is not supported by lakectl's catalog",
        ));
    }
    let ident = TableIdent::new(ns, req.name.clone());
    let location = req
        .location
        .clone()
        .unwrap_or_else(|| s.lake.default_location(&ident));
    let metadata = TableMetadataBuilder::new(
        req.schema,
        req.partition_spec
            .unwrap_or_else(|| UnboundPartitionSpec::builder().build()),
        req.write_order.unwrap_or_else(SortOrder::unsorted_order),
        location,
        FormatVersion::V2,
        req.properties,
    )
    .and_then(|b| b.build())
    .map_err(bad)?
    .metadata;
    match s.lake.create_table(&ident, metadata).await {
        Ok(state) => Ok(Json(LoadTableResult {
            metadata_location: state.metadata_location,
            metadata: state.metadata,
            config: HashMap::new(),
        })),
        Err(CommitError::Conflict(m)) => Err(RestError::new(
            StatusCode::CONFLICT,
            "AlreadyExistsException",
            m,
        )),
        Err(e) => Err(server(e)),
    }
}

async fn load(s: &AppState, ns: &str, table: &str) -> Result<crate::lake::TableState, RestError> {
    let ident = TableIdent::new(namespace(ns)?, table.to_string());
    s.lake
        .load_table(&ident)
        .await
        .map_err(server)?
        .ok_or_else(|| no_table(&ident))
}

async fn load_table(
    State(s): Shared,
    Path((ns, table)): Path<(String, String)>,
) -> Result<Json<LoadTableResult>, RestError> {
    let t = load(&s, &ns, &table).await?;
    Ok(Json(LoadTableResult {
        metadata_location: t.metadata_location,
        metadata: t.metadata,
        config: HashMap::new(),
    }))
}

async fn table_exists(State(s): Shared, Path((ns, table)): Path<(String, String)>) -> StatusCode {
    match load(&s, &ns, &table).await {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::NOT_FOUND,
    }
}

#[derive(Deserialize)]
struct CommitTable {
    #[serde(default)]
    requirements: Vec<TableRequirement>,
    updates: Vec<TableUpdate>,
}

async fn commit_table(
    State(s): Shared,
    Path((ns, table)): Path<(String, String)>,
    req: Result<Json<CommitTable>, JsonRejection>,
) -> Result<Json<serde_json::Value>, RestError> {
    let req = body(req)?;
    let ident = TableIdent::new(namespace(&ns)?, table);
    match s.lake.commit(&ident, &req.requirements, req.updates).await {
        Ok(state) => Ok(Json(json!({
            "metadata-location": state.metadata_location,
            "metadata": state.metadata,
        }))),
        Err(CommitError::Conflict(m)) => Err(RestError::new(
            StatusCode::CONFLICT,
            "CommitFailedException",
            m,
        )),
        Err(CommitError::Failed(LakeError::NoSuchTable(_))) => Err(no_table(&ident)),
        Err(CommitError::Failed(LakeError::Iceberg(e)))
            if e.kind() == iceberg::ErrorKind::DataInvalid
                || e.kind() == iceberg::ErrorKind::PreconditionFailed =>
        {
            Err(bad(e))
        }
        Err(e) => Err(server(e)),
    }
}

#[derive(Deserialize)]
struct TableChange {
    identifier: Identifier,
    #[serde(default)]
    requirements: Vec<TableRequirement>,
    updates: Vec<TableUpdate>,
}

#[derive(Deserialize)]
struct Identifier {
    namespace: Vec<String>,
    name: String,
}

#[derive(Deserialize)]
struct CommitTransaction {
    #[serde(rename = "table-changes")]
    table_changes: Vec<TableChange>,
}

/// `POST /v1/transactions/commit`: commits to several tables, all or none (one SQLite
/// transaction over their compare-and-swaps). 204 when all landed; 409 when any
/// requirement failed or a table moved meanwhile, nothing committed.
async fn commit_transaction(
    State(s): Shared,
    req: Result<Json<CommitTransaction>, JsonRejection>,
) -> Result<StatusCode, RestError> {
    let req = body(req)?;
    let mut commits = Vec::with_capacity(req.table_changes.len());
    for c in req.table_changes {
        let ns = NamespaceIdent::from_vec(c.identifier.namespace).map_err(bad)?;
        commits.push((
            TableIdent::new(ns, c.identifier.name),
            c.requirements,
            c.updates,
        ));
    }
    match s.lake.commit_all(commits).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(CommitError::Conflict(m)) => Err(RestError::new(
            StatusCode::CONFLICT,
            "CommitFailedException",
            m,
        )),
        Err(CommitError::Failed(LakeError::NoSuchTable(t))) => Err(RestError::new(
            StatusCode::NOT_FOUND,
            "NoSuchTableException",
            format!("table {t} does not exist"),
        )),
        Err(CommitError::Failed(LakeError::Iceberg(e)))
            if e.kind() == iceberg::ErrorKind::DataInvalid
                || e.kind() == iceberg::ErrorKind::PreconditionFailed =>
        {
            Err(bad(e))
        }
        Err(e) => Err(server(e)),
    }
}

async fn drop_table(
    State(s): Shared,
    Path((ns, table)): Path<(String, String)>,
) -> Result<StatusCode, RestError> {
    let ident = TableIdent::new(namespace(&ns)?, table);
    if s.lake.drop_table(&ident).await.map_err(server)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(no_table(&ident))
    }
}

#[derive(Deserialize)]
struct Ident {
    namespace: Vec<String>,
    name: String,
}

#[derive(Deserialize)]
struct Rename {
    source: Ident,
    destination: Ident,
}

async fn rename_table(
    State(s): Shared,
    req: Result<Json<Rename>, JsonRejection>,
) -> Result<StatusCode, RestError> {
    let req = body(req)?;
    let from = TableIdent::new(
        NamespaceIdent::from_vec(req.source.namespace).map_err(bad)?,
        req.source.name,
    );
    let to = TableIdent::new(
        NamespaceIdent::from_vec(req.destination.namespace).map_err(bad)?,
        req.destination.name,
    );
    if s.lake.load_table(&from).await.map_err(server)?.is_none() {
        return Err(no_table(&from));
    }
    require_namespace(&s, to.namespace()).await?;
    if s.lake.rename_table(&from, &to).await.map_err(server)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(RestError::new(
            StatusCode::CONFLICT,
            "AlreadyExistsException",
            format!("table {to} already exists"),
        ))
    }
}
