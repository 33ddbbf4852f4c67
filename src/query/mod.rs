//! `lakectl query`: DataFusion over the lakehouse, read-only, with time travel.
//!
//! Every table of the catalog is registered as `namespace.table` (a schema per
//! namespace) with iceberg-datafusion's static provider, pinned to one snapshot:
//! the current one, or with [`AsOf`] the one `main` pointed at (by snapshot id, or at a
//! time, from the table's snapshot log). Each lakectl change is a snapshot carrying the
//! schema it produced, so a query of a snapshot sees that snapshot's columns.
//! DDL, DML and statements are refused: queries cannot write.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::MemorySchemaProvider;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::sql::TableReference;
use iceberg::spec::TableMetadata;
use iceberg::table::Table;
use iceberg_datafusion::IcebergStaticTableProvider;

use crate::lake::{Lake, LakeError, TableState};

/// Which snapshot of each table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// This snapshot, for the table that has it (other tables: current).
    Snapshot(i64),
    /// What `main` pointed at this instant (milliseconds since the epoch).
    Time(i64),
}

impl std::str::FromStr for AsOf {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(id) = s.parse::<i64>() {
            return Ok(AsOf::Snapshot(id));
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
            return Ok(AsOf::Time(t.timestamp_millis()));
        }
        for fmt in [
            "%Y-%m-%d %H:%M:%S%.f",
            "%Y-%m-%dT%H:%M:%S%.f",
            "%Y-%m-%d %H:%M:%S",
            "%Y-%m-%dT%H:%M:%S",
        ] {
            if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
                return Ok(AsOf::Time(t.and_utc().timestamp_millis()));
            }
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(AsOf::Time(
                d.and_hms_opt(0, 0, 0)
                    .map(|t| t.and_utc().timestamp_millis())
                    .unwrap_or(0),
            ));
        }
        Err(format!(
            "`{s}` is neither a snapshot id nor a timestamp (RFC 3339, e.g. 2024-05-01T12:00:00Z)"
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    #[error("{0}")]
    AsOf(String),
}

/// The snapshot of `md` to read for `as_of` (`None`: the table is empty then).
pub fn snapshot_for(md: &TableMetadata, as_of: Option<AsOf>) -> Result<Option<i64>, String> {
    match as_of {
        None => Ok(md.current_snapshot_id()),
        Some(AsOf::Snapshot(id)) => {
            if md.snapshot_by_id(id).is_some() {
                Ok(Some(id))
            } else {
                Ok(md.current_snapshot_id())
            }
        }
        Some(AsOf::Time(ms)) => Ok(md
            .history()
            .iter()
            .filter(|l| l.timestamp_ms <= ms)
            .max_by_key(|l| l.timestamp_ms)
            .map(|l| l.snapshot_id)),
    }
}

/// A DataFusion session with every table registered.
pub async fn session(lake: &Lake, as_of: Option<AsOf>) -> Result<SessionContext, QueryError> {
    let ctx = SessionContext::new();
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| QueryError::AsOf("no default catalog".into()))?;
    let mut found = as_of.is_none() || matches!(as_of, Some(AsOf::Time(_)));
    for ident in lake.list_tables().await? {
        let Some(state) = lake.load_table(&ident).await? else {
            continue;
        };
        let ns = ident.namespace().join(".");
        if catalog.schema(&ns).is_none() {
            catalog.register_schema(&ns, Arc::new(MemorySchemaProvider::new()))?;
        }
        if let Some(AsOf::Snapshot(id)) = as_of {
            found |= state.metadata.snapshot_by_id(id).is_some();
        }
        let provider = provider(lake, &state, as_of).await?;
        ctx.register_table(
            TableReference::partial(ns, ident.name().to_string()),
            provider,
        )?;
    }
    if !found {
        if let Some(AsOf::Snapshot(id)) = as_of {
            return Err(QueryError::AsOf(format!("no table has snapshot {id}")));
        }
    }
    Ok(ctx)
}

async fn provider(
    lake: &Lake,
    state: &TableState,
    as_of: Option<AsOf>,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>, QueryError> {
    let table = Table::builder()
        .file_io(lake.file_io().clone())
        .metadata_location(state.metadata_location.clone())
        .metadata(state.metadata.clone())
        .identifier(state.ident.clone())
        .readonly(true)
        .runtime(iceberg::Runtime::try_current()?)
        .build()?;
    let snapshot = snapshot_for(&state.metadata, as_of).map_err(QueryError::AsOf)?;
    Ok(match snapshot {
        Some(id) => {
            Arc::new(IcebergStaticTableProvider::try_new_from_table_snapshot(table, id).await?)
        }
        // A table with no snapshot yet, or none at that time: empty, with its schema.
        None => {
            let schema = iceberg::arrow::schema_to_arrow_schema(state.metadata.current_schema())?;
            Arc::new(datafusion::datasource::empty::EmptyTable::new(Arc::new(
                schema,
            )))
        }
    })
}

/// No DDL, no DML (COPY included), no statements (SET …): queries cannot write.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Runs one read-only SQL statement.
pub async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    let df = ctx.sql_with_options(sql, read_only()).await?;
    Ok(df.collect().await?)
}

/// Runs one read-only SQL statement, returning at most `limit` rows and whether more
/// there were.
pub async fn run_limited(
    ctx: &SessionContext,
    sql: &str,
    limit: usize,
) -> Result<(Vec<RecordBatch>, bool), QueryError> {
    let df = ctx
        .sql_with_options(sql, read_only())
        .await?
        .limit(0, Some(limit + 1))?;
    let batches = df.collect().await?;
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    if total <= limit {
        return Ok((batches, false));
    }
    let mut out = Vec::new();
    let mut left = limit;
    for b in batches {
        if left == 0 {
            break;
        }
        let n = b.num_rows().min(left);
        out.push(b.slice(0, n));
        left -= n;
    }
    Ok((out, true))
}

/// Renders batches: `table` (boxed text), `csv` (with header) or `json` (array of objects).
pub fn render(batches: &[RecordBatch], format: &str) -> Result<String, QueryError> {
    use datafusion::arrow::error::ArrowError;
    let to_df = |e: ArrowError| QueryError::DataFusion(e.into());
    match format {
        "csv" => {
            let mut buf = Vec::new();
            {
                let mut w = arrow_csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in batches {
                    w.write(b).map_err(to_df)?;
                }
            }
            Ok(String::from_utf8_lossy(&buf).to_string())
        }
        "arrow" => Err(QueryError::AsOf(
            "the arrow format is binary: use render_arrow".into(),
        )),
        "json" => {
            let mut buf = Vec::new();
            {
                let mut w = arrow_json::ArrayWriter::new(&mut buf);
                for b in batches {
                    w.write(b).map_err(to_df)?;
                }
                w.finish().map_err(to_df)?;
            }
            let s = String::from_utf8_lossy(&buf).to_string();
            Ok(if s.is_empty() { "[]".into() } else { s })
        }
        _ => Ok(
            datafusion::arrow::util::pretty::pretty_format_batches(batches)
                .map_err(to_df)?
                .to_string(),
        ),
    }
}

/// Batches as an Arrow IPC stream.
pub fn render_arrow(
    schema: &datafusion::arrow::datatypes::Schema,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, QueryError> {
    let mut buf = Vec::new();
    {
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut buf, schema)
            .map_err(|e| QueryError::DataFusion(e.into()))?;
        for b in batches {
            w.write(b).map_err(|e| QueryError::DataFusion(e.into()))?;
        }
        w.finish().map_err(|e| QueryError::DataFusion(e.into()))?;
    }
    Ok(buf)
}
