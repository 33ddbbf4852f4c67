//! The `/api/v1` handlers and their OpenAPI descriptions.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, AppState};
use crate::lake::TableState;

type Shared = State<Arc<AppState>>;

/// A JSON body, or a 400 `bad_request` in lakectl's error shape.
fn body<T>(r: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    r.map(|Json(t)| t)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
}

/// Query parameters, or a 400 `bad_request` in lakectl's error shape.
fn params<T>(r: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    r.map(|Query(t)| t)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/tables", get(list_tables))
        .route("/api/v1/tables/{namespace}/{table}", get(get_table))
        .route(
            "/api/v1/tables/{namespace}/{table}/snapshots",
            get(snapshots),
        )
        .route(
            "/api/v1/tables/{namespace}/{table}/rollback",
            post(rollback),
        )
        .route("/api/v1/tables/{namespace}/{table}/upload", post(upload))
        .route("/api/v1/query", get(query_get).post(query_post))
        .route("/api/v1/plan", get(plan))
        .route("/api/v1/watch", get(watch_status))
}

/// An error: a stable machine-readable `code` and a message for people.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: String,
}

/// Liveness (no auth).
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct TableSummary {
    namespace: String,
    name: String,
    current_snapshot_id: Option<i64>,
    total_records: Option<u64>,
}

/// Every table of the catalog.
#[utoipa::path(get, path = "/api/v1/tables", responses(
    (status = 200, body = Vec<TableSummary>),
    (status = 401, body = ErrorBody)))]
pub async fn list_tables(State(s): Shared) -> Result<Json<Vec<TableSummary>>, ApiError> {
    let mut out = Vec::new();
    for ident in s.lake.list_tables().await.map_err(internal)? {
        let Some(t) = s.lake.load_table(&ident).await.map_err(internal)? else {
            continue;
        };
        out.push(TableSummary {
            namespace: ident.namespace().join("."),
            name: ident.name().to_string(),
            current_snapshot_id: t.metadata.current_snapshot_id(),
            total_records: total_records(&t),
        });
    }
    Ok(Json(out))
}

fn total_records(t: &TableState) -> Option<u64> {
    t.metadata.current_snapshot().and_then(|s| {
        s.summary()
            .additional_properties
            .get("total-records")
            .and_then(|v| v.parse().ok())
    })
}

async fn load(s: &AppState, namespace: &str, table: &str) -> Result<TableState, ApiError> {
    let ns = iceberg::NamespaceIdent::from_strs(namespace.split('.'))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_name", e.to_string()))?;
    let ident = iceberg::TableIdent::new(ns, table.to_string());
    s.lake
        .load_table(&ident)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_table",
                format!("table {namespace}.{table} does not exist"),
            )
        })
}

#[derive(Serialize, ToSchema)]
pub struct Field {
    id: i32,
    name: String,
    #[serde(rename = "type")]
    ty: String,
    required: bool,
    doc: Option<String>,
}

/// One field of the schema, nested ones included (depth first, parents before children).
#[derive(Serialize, ToSchema)]
pub struct Column {
    id: i32,
    /// Dotted path from the top: `address.city`, `tags.element`, `attrs.key`.
    path: String,
    name: String,
    /// A primitive type's Iceberg name; `struct`, `list` or `map` for containers (their
    /// fields follow).
    #[serde(rename = "type")]
    ty: String,
    required: bool,
    doc: Option<String>,
    /// 0 for a top-level column.
    depth: usize,
}

fn columns(
    fields: &[iceberg::spec::NestedFieldRef],
    prefix: &str,
    depth: usize,
    out: &mut Vec<Column>,
) {
    use iceberg::spec::Type;
    for f in fields {
        let path = match prefix {
            "" => f.name.clone(),
            p => format!("{p}.{}", f.name),
        };
        let (ty, children) = match f.field_type.as_ref() {
            Type::Primitive(p) => (p.to_string(), Vec::new()),
            Type::Struct(s) => ("struct".to_string(), s.fields().to_vec()),
            Type::List(l) => ("list".to_string(), vec![l.element_field.clone()]),
            Type::Map(m) => (
                "map".to_string(),
                vec![m.key_field.clone(), m.value_field.clone()],
            ),
        };
        out.push(Column {
            id: f.id,
            path: path.clone(),
            name: f.name.clone(),
            ty,
            required: f.required,
            doc: f.doc.clone(),
            depth,
        });
        columns(&children, &path, depth + 1, out);
    }
}

#[derive(Serialize, ToSchema)]
pub struct TableDetail {
    namespace: String,
    name: String,
    location: String,
    metadata_location: String,
    current_snapshot_id: Option<i64>,
    total_records: Option<u64>,
    schema_id: i32,
    /// Top-level fields of the current schema (nested types as their Iceberg text).
    fields: Vec<Field>,
    /// Every field of the current schema, nested ones included, with its id and doc.
    columns: Vec<Column>,
    /// The schema's identifier fields (row key), by name.
    identifier_fields: Vec<String>,
    /// Partition fields: `name = transform(source)`.
    partition_spec: Vec<String>,
    sort_order: Vec<String>,
    properties: BTreeMap<String, String>,
    /// Changes a rollback took out of `main`, which plan and apply hold back.
    #[schema(value_type = Vec<Object>)]
    held_back: Vec<crate::lake::ledger::HeldBack>,
}

/// A table: current schema, partition spec, sort order, properties, current snapshot.
#[utoipa::path(get, path = "/api/v1/tables/{namespace}/{table}",
    params(("namespace" = String, Path), ("table" = String, Path)),
    responses((status = 200, body = TableDetail), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn get_table(
    State(s): Shared,
    Path((namespace, table)): Path<(String, String)>,
) -> Result<Json<TableDetail>, ApiError> {
    let t = load(&s, &namespace, &table).await?;
    let md = &t.metadata;
    let schema = md.current_schema();
    let name_of = |id: i32| {
        schema
            .name_by_field_id(id)
            .map(str::to_string)
            .unwrap_or_else(|| format!("<field {id}>"))
    };
    Ok(Json(TableDetail {
        namespace,
        name: table,
        location: md.location().to_string(),
        metadata_location: t.metadata_location.clone(),
        current_snapshot_id: md.current_snapshot_id(),
        total_records: total_records(&t),
        schema_id: md.current_schema_id(),
        fields: schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| Field {
                id: f.id,
                name: f.name.clone(),
                ty: f.field_type.to_string(),
                required: f.required,
                doc: f.doc.clone(),
            })
            .collect(),
        columns: {
            let mut out = Vec::new();
            columns(schema.as_struct().fields(), "", 0, &mut out);
            out
        },
        identifier_fields: schema.identifier_field_ids().map(name_of).collect(),
        partition_spec: md
            .default_partition_spec()
            .fields()
            .iter()
            .map(|f| format!("{} = {}({})", f.name, f.transform, name_of(f.source_id)))
            .collect(),
        sort_order: md
            .default_sort_order()
            .fields
            .iter()
            .map(|f| {
                format!(
                    "{}({}) {} {}",
                    f.transform,
                    name_of(f.source_id),
                    f.direction,
                    f.null_order
                )
            })
            .collect(),
        properties: md
            .properties()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        held_back: crate::lake::ledger::held_back(md),
    }))
}

/// A table's snapshots, newest first, with lakectl's annotations (as `lakectl history`).
#[utoipa::path(get, path = "/api/v1/tables/{namespace}/{table}/snapshots",
    params(("namespace" = String, Path), ("table" = String, Path)),
    responses((status = 200, body = Vec<Object>), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn snapshots(
    State(s): Shared,
    Path((namespace, table)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let t = load(&s, &namespace, &table).await?;
    let entries = s.lake.history(&t.metadata).await.map_err(internal)?;
    Ok(Json(serde_json::to_value(entries).map_err(internal)?))
}

/// Where to roll back to: exactly one of `to`, `to_time`, `steps`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// A snapshot id.
    #[serde(default, deserialize_with = "whole")]
    to: Option<i64>,
    /// RFC 3339: the newest snapshot of `main` at or before it.
    to_time: Option<String>,
    /// Snapshots back along `main`.
    #[serde(default, deserialize_with = "whole")]
    #[schema(minimum = 1)]
    steps: Option<i64>,
    #[serde(default)]
    dry_run: bool,
}

/// Moves `main` back (restoring schema, spec and sort order); the changes taken out are
/// held back from `plan`/`apply`.
#[utoipa::path(post, path = "/api/v1/tables/{namespace}/{table}/rollback",
    params(("namespace" = String, Path), ("table" = String, Path)),
    request_body = RollbackRequest,
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn rollback(
    State(s): Shared,
    Path((namespace, table)): Path<(String, String)>,
    req: Result<Json<RollbackRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use crate::apply::rollback::Target;
    let req = body(req)?;
    let target = match (req.to, req.to_time, req.steps) {
        (Some(id), None, None) => Target::Snapshot(id),
        (None, Some(t), None) => Target::Time(
            chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|e| {
                    ApiError::new(StatusCode::BAD_REQUEST, "bad_time", format!("{t}: {e}"))
                })?
                .timestamp_millis(),
        ),
        (None, None, Some(n)) if n >= 1 => Target::Steps(n as usize),
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_target",
                "give exactly one of `to`, `to_time`, `steps`",
            ))
        }
    };
    let t = load(&s, &namespace, &table).await?;
    match crate::apply::rollback::rollback(&s.lake, &t.ident, target, req.dry_run).await {
        Ok(r) => Ok(Json(serde_json::to_value(r).map_err(internal)?)),
        Err(crate::apply::ApplyError::NoLongerApplies { reason, .. }) => {
            Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_target", reason))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "commit_failed",
            e.to_string(),
        )),
    }
}

#[derive(Deserialize, IntoParams)]
pub struct UploadParams {
    /// `csv` (default, or from Content-Type), `json` (lines) or `parquet`.
    format: Option<String>,
    /// `append` (default), `upsert` (by `key`), `replacePartitions` or `replace`.
    mode: Option<String>,
    /// Key columns of an upsert, comma-separated; default: the table's identifier fields.
    key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UploadResult {
    /// False when this upload (same `Idempotency-Key`, or same content) was already
    /// appended: nothing was done.
    appended: bool,
    rows: u64,
    data_files: usize,
    bytes: u64,
    /// The ledger key: `upload:key:<Idempotency-Key>` or `upload:sha256:<content hash>`.
    ledger_key: String,
    snapshot_id: Option<i64>,
}

/// Appends the body (CSV with a header, JSON lines or Parquet) as one snapshot, through
/// the ingest code of declared sources. Retried uploads (same `Idempotency-Key`, or the
/// same content without one) are appended once.
#[utoipa::path(post, path = "/api/v1/tables/{namespace}/{table}/upload",
    params(("namespace" = String, Path), ("table" = String, Path), UploadParams,
        ("Idempotency-Key" = Option<String>, Header, description = "retries with the same key append once")),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 201, body = UploadResult), (status = 200, body = UploadResult, description = "already appended"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn upload(
    State(s): Shared,
    Path((namespace, table)): Path<(String, String)>,
    query: Result<Query<UploadParams>, QueryRejection>,
    headers: HeaderMap,
    upload_body: Body,
) -> Result<Response, ApiError> {
    use crate::manifest::types::{SourceFormat, SourceMode};
    let params = params(query)?;
    let t = load(&s, &namespace, &table).await?; // 404 before reading the body
    let mode = match params.mode.as_deref() {
        None => SourceMode::Append,
        Some(m) => SourceMode::parse(m).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_mode",
                format!("unknown mode `{m}`: append, upsert, replacePartitions or replace"),
            )
        })?,
    };
    let key_columns: Vec<String> = match params.key.as_deref() {
        Some(k) => k
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect(),
        None if mode == SourceMode::Upsert => crate::apply::keyed::identifier_fields(&t.metadata),
        None => Vec::new(),
    };
    if mode == SourceMode::Upsert && key_columns.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_key",
            "`mode=upsert` needs `key=` (the table has no identifier fields)",
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = match params.format.as_deref() {
        Some("csv") => SourceFormat::Csv,
        Some("json") | Some("jsonl") | Some("ndjson") => SourceFormat::Json,
        Some("parquet") => SourceFormat::Parquet,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_format",
                format!("unknown format `{other}`: csv, json or parquet"),
            ))
        }
        None if content_type.contains("json") => SourceFormat::Json,
        None if content_type.contains("parquet") => SourceFormat::Parquet,
        None => SourceFormat::Csv,
    };
    // Stream the body to a spool file, hashing it; stop past the limit.
    let spool = tempfile::tempdir().map_err(internal)?;
    let path = spool.path().join("upload");
    let mut file = tokio::fs::File::create(&path).await.map_err(internal)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut stream = upload_body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string()))?;
        size += chunk.len() as u64;
        if size > s.config.max_upload_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the upload is larger than the limit of {} bytes",
                    s.config.max_upload_bytes
                ),
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(internal)?;
    }
    file.flush().await.map_err(internal)?;
    drop(file);
    if size == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the upload is empty",
        ));
    }
    let digest: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key = match headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        Some(k) if !k.trim().is_empty() => format!("upload:key:{}", k.trim()),
        _ => format!("upload:sha256:{digest}"),
    };
    let table_name = format!("{namespace}.{table}");
    let mut spec: crate::manifest::types::SourceSpec =
        serde_yaml::from_str("name: upload\nuri: upload\n").map_err(internal)?;
    spec.mode = mode;
    spec.key = key_columns.clone();
    let change = crate::plan::IngestChange {
        table: table_name.clone(),
        manifest: std::path::PathBuf::from("lakectl-serve"),
        source: "upload".into(),
        change_id: format!("{key}@{}", &digest[..12]),
        files: vec![crate::plan::IngestFile {
            path: key.clone(),
            location: path.clone(),
            size,
            mtime_ms: 0,
            format,
            reason: "new".into(),
            etag: None,
        }],
        bytes: size,
        spec,
        rejects_dir: spool.path().join("rejects"),
        mode,
        key: key_columns,
        matching_keys: None,
    };
    // An audited table (`publish: audited` in its manifest): the upload is staged,
    // checked and published like any data change of the table.
    let set = crate::manifest::load(&s.config.manifests).map_err(|d| {
        ApiError::new(
            StatusCode::CONFLICT,
            "invalid_manifests",
            format!(
                "the manifests do not load: {}",
                d.0.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    })?;
    let audits = crate::plan::audits(&set);
    let audited = audits
        .get(&table_name)
        .is_some_and(crate::plan::TableAudit::audited);
    let result = if audited {
        let plan = crate::plan::Plan {
            lakehouse: s.lake.config.clone(),
            changes: vec![crate::plan::Change::Ingest(Box::new(change))],
            errors: Vec::new(),
            hints: Vec::new(),
            held_back: Vec::new(),
            release: Vec::new(),
            drift: Vec::new(),
            audit: audits,
            atomic: false,
        };
        // On a blocking thread of its own: the whole apply future is not `Send` (its
        // retry closures borrow), which a handler's future must be.
        let state = s.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            runtime
                .block_on(crate::apply::apply_with(
                    &state.lake,
                    &plan,
                    &Default::default(),
                    Arc::new(()),
                    |_| {},
                ))
                .map_err(Box::new)
        })
        .await
        .map_err(internal)?
        .map_err(|e| *e)
        .map(|applied| {
            let head = applied
                .iter()
                .find(|a| a.change == "publish")
                .and_then(|a| a.snapshot_id);
            let outcome = applied.into_iter().find_map(|a| a.ingest);
            let outcome = outcome.map(|o| crate::apply::ingest::IngestOutcome {
                snapshot_id: head.or(o.snapshot_id),
                ..o
            });
            (outcome, None)
        })
    } else {
        crate::apply::ingest::apply_ingest(
            &s.lake,
            &change,
            Arc::new(()),
            iceberg::spec::MAIN_BRANCH,
        )
        .await
        .map(|(o, state)| (Some(o), state))
    };
    let result = match result {
        Ok((Some(o), state)) => Ok((o, state)),
        Ok((None, _)) => Err(crate::apply::ApplyError::NoLongerApplies {
            table: table_name.clone(),
            reason: "the upload was not ingested".into(),
        }),
        Err(e) => Err(e),
    };
    match result {
        Ok((outcome, _)) => {
            let appended = outcome.files > 0;
            if appended {
                s.metrics.uploads.fetch_add(1, Ordering::Relaxed);
                s.metrics
                    .upload_rows
                    .fetch_add(outcome.records, Ordering::Relaxed);
            }
            let status = if appended {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((
                status,
                Json(UploadResult {
                    appended,
                    rows: outcome.records,
                    data_files: outcome.data_files,
                    bytes: size,
                    ledger_key: key,
                    snapshot_id: outcome.snapshot_id,
                }),
            )
                .into_response())
        }
        Err(crate::apply::ApplyError::Ingest { error, .. }) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_rows",
            format!("{error}; nothing was committed"),
        )),
        Err(e @ crate::apply::ApplyError::ChecksFailed(_)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "checks_failed",
            e.to_string(),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "commit_failed",
            e.to_string(),
        )),
    }
}

/// A read-only SQL query.
#[derive(Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// SQL over `namespace.table`; DDL, DML, COPY and other statements are refused.
    sql: String,
    /// A snapshot id or an RFC 3339 time (time travel).
    as_of: Option<String>,
    /// `json` (default), `csv` or `arrow` (Arrow IPC stream).
    format: Option<String>,
    /// Most rows returned (at most the server's limit).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct QueryResult {
    columns: Vec<String>,
    /// One object per row.
    rows: Vec<serde_json::Value>,
    /// More rows there were than the limit.
    truncated: bool,
}

/// Runs read-only SQL (query string form).
#[utoipa::path(get, path = "/api/v1/query", params(QueryRequest),
    responses((status = 200, body = QueryResult), (status = 400, body = ErrorBody), (status = 408, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn query_get(
    State(s): Shared,
    q: Result<Query<QueryRequest>, QueryRejection>,
) -> Result<Response, ApiError> {
    run_query(&s, params(q)?).await
}

/// Runs read-only SQL (JSON body form).
#[utoipa::path(post, path = "/api/v1/query", request_body = QueryRequest,
    responses((status = 200, body = QueryResult), (status = 400, body = ErrorBody), (status = 408, body = ErrorBody),
        (status = 401, body = ErrorBody)))]
pub async fn query_post(
    State(s): Shared,
    q: Result<Json<QueryRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    run_query(&s, body(q)?).await
}

async fn run_query(s: &AppState, q: QueryRequest) -> Result<Response, ApiError> {
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e);
    let as_of = q
        .as_of
        .as_deref()
        .map(str::parse::<crate::query::AsOf>)
        .transpose()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_as_of", e.to_string()))?;
    let limit = q.limit.unwrap_or(s.config.max_rows).min(s.config.max_rows);
    s.metrics.queries.fetch_add(1, Ordering::Relaxed);
    let work = async {
        let ctx = match as_of {
            // Now: the providers of tables unchanged since the last query are reused.
            None => crate::query::session_cached(&s.lake, &s.providers).await,
            Some(_) => crate::query::session(&s.lake, as_of).await,
        }
        .map_err(|e| bad(e.to_string()))?;
        let (batches, truncated) = crate::query::run_limited(&ctx, &q.sql, limit)
            .await
            .map_err(|e| bad(e.to_string()))?;
        Ok::<_, ApiError>((batches, truncated))
    };
    let (batches, truncated) = tokio::time::timeout(s.config.query_timeout, work)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the query ran longer than {:?}", s.config.query_timeout),
            )
        })??;
    match q.format.as_deref().unwrap_or("json") {
        "csv" => {
            let text = crate::query::render(&batches, "csv").map_err(internal)?;
            Ok(([(header::CONTENT_TYPE, "text/csv")], text).into_response())
        }
        "arrow" => {
            let schema = batches
                .first()
                .map(|b| b.schema())
                .unwrap_or_else(|| Arc::new(arrow_schema::Schema::empty()));
            let bytes = crate::query::render_arrow(&schema, &batches).map_err(internal)?;
            Ok((
                [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
                bytes,
            )
                .into_response())
        }
        "json" => {
            let text = crate::query::render(&batches, "json").map_err(internal)?;
            let rows: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(internal)?;
            let columns = batches
                .first()
                .map(|b| {
                    b.schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect()
                })
                .unwrap_or_default();
            Ok(Json(QueryResult {
                columns,
                rows,
                truncated,
            })
            .into_response())
        }
        other => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_format",
            format!("unknown format `{other}`: json, csv or arrow"),
        )),
    }
}

#[derive(Deserialize, IntoParams)]
pub struct PlanParams {
    /// `json` (default, as `lakectl plan --output json`) or `text` (as `lakectl plan`).
    format: Option<String>,
}

/// The plan of the served manifest directory (as `lakectl plan --output json`, or its
/// text).
#[utoipa::path(get, path = "/api/v1/plan", params(PlanParams),
    responses((status = 200, description = "the plan", content((Object = "application/json"), (String = "text/plain"))),
        (status = 400, body = ErrorBody), (status = 422, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn plan(
    State(s): Shared,
    p: Result<Query<PlanParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let text = match params(p)?.format.as_deref().unwrap_or("json") {
        "json" => false,
        "text" => true,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_format",
                format!("unknown format `{other}`: json or text"),
            ))
        }
    };
    let set = crate::plan::load_valid(&s.config.manifests).map_err(|d| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_manifests",
            d.0.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let actual = crate::plan::observe(Some(&s.lake), &set, &s.lake.config)
        .await
        .map_err(internal)?;
    let plan = crate::plan::diff(&set, &actual, s.lake.config.clone());
    Ok(match text {
        true => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            crate::plan::render::text(&plan, crate::plan::render::Style { color: false }),
        )
            .into_response(),
        false => Json(crate::plan::render::json(&plan)).into_response(),
    })
}

/// The per-table conditions of the `lakectl watch` that `serve --watch-status` names
/// (its `/status`, fetched by the server, so the console needs no second origin).
#[utoipa::path(get, path = "/api/v1/watch",
    responses((status = 200, body = Object), (status = 404, body = ErrorBody, description = "no watch status URL configured"),
        (status = 502, body = ErrorBody, description = "the watcher did not answer"), (status = 401, body = ErrorBody)))]
pub async fn watch_status(State(s): Shared) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(base) = &s.config.watch_status else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_configured",
            "no watch status URL configured (`lakectl serve --watch-status URL`)",
        ));
    };
    crate::watch::fetch_status(&s.watch_client, base)
        .await
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "watch_unreachable", e))
}

/// An integer that JSON may spell `3` or `3.0`.
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v: Option<serde_json::Number> = Option::deserialize(d)?;
    match v {
        None => Ok(None),
        Some(n) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not an integer"))),
    }
}
