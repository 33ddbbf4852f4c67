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
use iceberg_datafusion::physical_plan::IcebergTableScan;
use iceberg_datafusion::IcebergStaticTableProvider;

use crate::lake::{Lake, LakeError, TableState};

pub mod checks;
pub mod scan;

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
    Ok(session_noting(lake, as_of, pushdown_enabled()).await?.0)
}

/// [`session`], with the tables that had no snapshot at an `AsOf::Time` (they did not
/// exist yet, or had no data then: they read as empty), as `namespace.table`. Without
/// `pushdown`, no filter reaches the Iceberg scan (the plain path).
pub async fn session_noting(
    lake: &Lake,
    as_of: Option<AsOf>,
    pushdown: bool,
) -> Result<(SessionContext, Vec<String>), QueryError> {
    let options = ScanOptions {
        pushdown,
        parallel: scan::parallel_enabled(),
    };
    session_with(lake, as_of, options).await
}

/// How tables are scanned: filters pushed into the Iceberg scan (`pushdown`), and the
/// snapshot's files split over the session's partitions (`parallel`). Both off is the
/// plain path every optimisation is tested against.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    pub pushdown: bool,
    pub parallel: bool,
}

/// [`session_noting`] with explicit [`ScanOptions`].
pub async fn session_with(
    lake: &Lake,
    as_of: Option<AsOf>,
    options: ScanOptions,
) -> Result<(SessionContext, Vec<String>), QueryError> {
    let mut empty_then = Vec::new();
    let mut found = as_of.is_none() || matches!(as_of, Some(AsOf::Time(_)));
    let ctx = session_picking(lake, options, |state, name| {
        if let Some(AsOf::Snapshot(id)) = as_of {
            found |= state.metadata.snapshot_by_id(id).is_some();
        }
        let snapshot = snapshot_for(&state.metadata, as_of).map_err(QueryError::AsOf)?;
        if matches!(as_of, Some(AsOf::Time(_))) && snapshot.is_none() {
            empty_then.push(name.to_string());
        }
        Ok(snapshot)
    })
    .await?;
    if !found {
        if let Some(AsOf::Snapshot(id)) = as_of {
            return Err(QueryError::AsOf(format!("no table has snapshot {id}")));
        }
    }
    Ok((ctx, empty_then))
}

/// A DataFusion session with every table registered as ref `name` (a branch or a
/// tag) has it; a table without that ref reads as `main`. Returns the tables that
/// have it.
pub async fn session_on_ref(
    lake: &Lake,
    name: &str,
) -> Result<(SessionContext, Vec<String>), QueryError> {
    let mut having = Vec::new();
    let options = ScanOptions {
        pushdown: pushdown_enabled(),
        parallel: scan::parallel_enabled(),
    };
    let ctx = session_picking(lake, options, |state, table| {
        Ok(match state.metadata.snapshot_for_ref(name) {
            Some(s) => {
                having.push(table.to_string());
                Some(s.snapshot_id())
            }
            None => state.metadata.current_snapshot_id(),
        })
    })
    .await?;
    Ok((ctx, having))
}

/// A session with every table of the catalog registered as `namespace.table` (a
/// schema per namespace), at the snapshot `pick` chooses for it (`None`: empty).
async fn session_picking(
    lake: &Lake,
    options: ScanOptions,
    mut pick: impl FnMut(&TableState, &str) -> Result<Option<i64>, QueryError>,
) -> Result<SessionContext, QueryError> {
    let ctx = SessionContext::new();
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| QueryError::AsOf("no default catalog".into()))?;
    for ident in lake.list_tables().await? {
        let Some(state) = lake.load_table(&ident).await? else {
            continue;
        };
        let ns = ident.namespace().join(".");
        if catalog.schema(&ns).is_none() {
            catalog.register_schema(&ns, Arc::new(MemorySchemaProvider::new()))?;
        }
        let snapshot = pick(&state, &format!("{ns}.{}", ident.name()))?;
        let provider = provider_at(lake, &state, snapshot, options).await?;
        ctx.register_table(
            TableReference::partial(ns, ident.name().to_string()),
            provider,
        )?;
    }
    Ok(ctx)
}

/// Table providers by the metadata file they were built from, for a process that runs
/// many queries (`lakectl serve`). A metadata file never changes once written, so a
/// provider built from one is right for as long as the catalog points at that file:
/// each session asks the catalog for every table's current metadata location (one
/// query on the SQL catalog) and builds only the providers of tables that moved.
#[derive(Default)]
pub struct ProviderCache {
    /// `namespace.table` → (metadata location, provider of its current snapshot).
    tables: std::sync::Mutex<std::collections::HashMap<String, (String, Provider)>>,
}

type Provider = Arc<dyn datafusion::catalog::TableProvider>;

/// A session over every table at its current snapshot, reusing `cache`'s providers of
/// tables whose metadata location is unchanged ([`ProviderCache`]).
pub async fn session_cached(
    lake: &Lake,
    cache: &ProviderCache,
) -> Result<SessionContext, QueryError> {
    let options = ScanOptions {
        pushdown: pushdown_enabled(),
        parallel: scan::parallel_enabled(),
    };
    let ctx = SessionContext::new();
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| QueryError::AsOf("no default catalog".into()))?;
    let mut seen = std::collections::HashSet::new();
    for crate::lake::TableLocation {
        ident,
        location,
        loaded,
    } in lake.table_locations().await?
    {
        let ns = ident.namespace().join(".");
        let name = format!("{ns}.{}", ident.name());
        let cached = cache.tables.lock().ok().and_then(|t| {
            t.get(&name)
                .filter(|(l, _)| *l == location)
                .map(|(_, p)| p.clone())
        });
        let provider = match cached {
            Some(p) => p,
            None => {
                let state = match loaded {
                    Some(state) => state,
                    None => match lake.load_table(&ident).await? {
                        Some(state) => state,
                        None => continue,
                    },
                };
                let p = provider_at(lake, &state, state.metadata.current_snapshot_id(), options)
                    .await?;
                if let Ok(mut t) = cache.tables.lock() {
                    t.insert(name.clone(), (state.metadata_location.clone(), p.clone()));
                }
                p
            }
        };
        if catalog.schema(&ns).is_none() {
            catalog.register_schema(&ns, Arc::new(MemorySchemaProvider::new()))?;
        }
        ctx.register_table(
            TableReference::partial(ns, ident.name().to_string()),
            provider,
        )?;
        seen.insert(name);
    }
    // Dropped tables leave the cache.
    if let Ok(mut t) = cache.tables.lock() {
        t.retain(|name, _| seen.contains(name));
    }
    Ok(ctx)
}

/// The tables (`namespace.table`) `sql` reads, as far as they can be told from it.
pub fn tables_read(ctx: &SessionContext, sql: &str) -> Vec<String> {
    let state = ctx.state();
    let Ok(statement) = state.sql_to_statement(sql, &datafusion::config::Dialect::Generic) else {
        return Vec::new();
    };
    state
        .resolve_table_references(&statement)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| Some(format!("{}.{}", r.schema()?, r.table())))
                .collect()
        })
        .unwrap_or_default()
}

/// The table as of `snapshot` (`None`: empty, with the current schema).
async fn provider_at(
    lake: &Lake,
    state: &TableState,
    snapshot: Option<i64>,
    options: ScanOptions,
) -> Result<Arc<dyn datafusion::catalog::TableProvider>, QueryError> {
    let table = Table::builder()
        .file_io(lake.file_io().clone())
        .metadata_location(state.metadata_location.clone())
        .metadata(state.metadata.clone())
        .identifier(state.ident.clone())
        .readonly(true)
        .runtime(iceberg::Runtime::try_current()?)
        .build()?;
    Ok(match snapshot {
        Some(id) => Arc::new(ExactPushdown {
            inner: Arc::new(
                IcebergStaticTableProvider::try_new_from_table_snapshot(table, id).await?,
            ),
            enabled: options.pushdown,
            parallel: options.parallel,
        }),
        // A table with no snapshot yet, or none at that time: empty, with its schema.
        None => {
            let schema = iceberg::arrow::schema_to_arrow_schema(state.metadata.current_schema())?;
            Arc::new(datafusion::datasource::empty::EmptyTable::new(Arc::new(
                schema,
            )))
        }
    })
}

/// `LAKECTL_QUERY_PUSHDOWN=off` scans every file of the snapshot (no filter reaches the
/// Iceberg scan): the plain path that pushdown is tested against.
pub fn pushdown_enabled() -> bool {
    !matches!(
        std::env::var("LAKECTL_QUERY_PUSHDOWN").as_deref(),
        Ok("off" | "0" | "false")
    )
}

/// The Iceberg table provider with only the filters it prunes by exactly.
///
/// iceberg-datafusion turns every filter it can into an Iceberg predicate that prunes
/// manifests, files and row groups, and DataFusion re-applies each filter after the
/// scan (they are `Inexact`). A pruning that is too eager drops rows no later filter
/// can bring back, and some of its conversions are not exact: casts over a column are
/// stripped (`CAST(i AS VARCHAR) < '5'` would prune as `i < 5`), a float literal is
/// bound as a double and fails the query, NaN is pruned unlike DataFusion's order,
/// `LIKE` escapes and `_` are not understood. So only these shapes are offered:
/// a plain column (not float/double) compared with a literal, `IS [NOT] NULL`,
/// `IN (literals)`, `LIKE 'prefix%'` with a plain prefix, and `AND` / `OR` of them.
/// Anything else is `Unsupported` here, so DataFusion filters it after a full scan:
/// slower, never wrong.
#[derive(Debug)]
struct ExactPushdown {
    inner: Arc<dyn datafusion::catalog::TableProvider>,
    enabled: bool,
    /// The scan split over the session's partitions ([`scan::parallel`]).
    parallel: bool,
}

#[async_trait::async_trait]
impl datafusion::catalog::TableProvider for ExactPushdown {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn schema(&self) -> arrow_schema::SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> datafusion::datasource::TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        projection: Option<&Vec<usize>>,
        filters: &[datafusion::logical_expr::Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        match plan.as_any().downcast_ref::<IcebergTableScan>() {
            Some(scan) if self.parallel => {
                scan::parallel(scan, state.config().target_partitions()).await
            }
            _ => Ok(plan),
        }
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&datafusion::logical_expr::Expr],
    ) -> datafusion::error::Result<Vec<datafusion::logical_expr::TableProviderFilterPushDown>> {
        use datafusion::logical_expr::TableProviderFilterPushDown as P;
        let schema = self.schema();
        Ok(filters
            .iter()
            .map(|f| {
                if self.enabled && prunes_exactly(f, &schema) {
                    P::Inexact
                } else {
                    P::Unsupported
                }
            })
            .collect())
    }

    fn statistics(&self) -> Option<datafusion::common::Statistics> {
        self.inner.statistics()
    }
}

/// Whether iceberg-datafusion prunes by `e` exactly (see [`ExactPushdown`]).
fn prunes_exactly(e: &datafusion::logical_expr::Expr, schema: &arrow_schema::Schema) -> bool {
    use datafusion::logical_expr::{Expr, Operator};
    use datafusion::scalar::ScalarValue;
    let column = |e: &Expr| -> bool {
        let Expr::Column(c) = e else { return false };
        schema.field_with_name(&c.name).is_ok_and(|f| {
            !matches!(
                f.data_type(),
                arrow_schema::DataType::Float16
                    | arrow_schema::DataType::Float32
                    | arrow_schema::DataType::Float64
            ) && !f.data_type().is_nested()
        })
    };
    let literal = |e: &Expr| matches!(e, Expr::Literal(v, _) if !v.is_null());
    match e {
        Expr::BinaryExpr(b) => match b.op {
            Operator::And | Operator::Or => {
                prunes_exactly(&b.left, schema) && prunes_exactly(&b.right, schema)
            }
            Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq => {
                (column(&b.left) && literal(&b.right)) || (literal(&b.left) && column(&b.right))
            }
            _ => false,
        },
        Expr::IsNull(x) | Expr::IsNotNull(x) => column(x),
        Expr::InList(l) => column(&l.expr) && l.list.iter().all(literal),
        Expr::Like(l) => {
            let prefix = match l.pattern.as_ref() {
                Expr::Literal(ScalarValue::Utf8(Some(p)), _)
                | Expr::Literal(ScalarValue::LargeUtf8(Some(p)), _)
                | Expr::Literal(ScalarValue::Utf8View(Some(p)), _) => p.strip_suffix('%'),
                _ => None,
            };
            !l.negated
                && !l.case_insensitive
                && l.escape_char.is_none()
                && column(&l.expr)
                && prefix.is_some_and(|p| !p.is_empty() && !p.contains(['%', '_', '\\']))
        }
        _ => false,
    }
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
                // Every key kept (a null is `null`, in maps too) and non-finite
                // doubles as the strings "NaN", "Infinity", "-Infinity" (as Spark and
                // pandas write them), not as `null`.
                let mut w = arrow_json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .with_encoder_factory(Arc::new(JsonFloats))
                    .build::<_, arrow_json::writer::JsonArray>(&mut buf);
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

/// JSON encoders for float columns that keep NaN and ±Infinity (as strings).
#[derive(Debug)]
struct JsonFloats;

impl arrow_json::EncoderFactory for JsonFloats {
    fn make_default_encoder<'a>(
        &self,
        _field: &'a arrow_schema::FieldRef,
        array: &'a dyn arrow_array::Array,
        _options: &'a arrow_json::EncoderOptions,
    ) -> Result<Option<arrow_json::writer::NullableEncoder<'a>>, arrow_schema::ArrowError> {
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Float32Type, Float64Type};
        let encoder: Box<dyn arrow_json::Encoder + 'a> = match array.data_type() {
            arrow_schema::DataType::Float64 => {
                Box::new(FloatJson(array.as_primitive::<Float64Type>()))
            }
            arrow_schema::DataType::Float32 => {
                Box::new(FloatJson(array.as_primitive::<Float32Type>()))
            }
            _ => return Ok(None),
        };
        Ok(Some(arrow_json::writer::NullableEncoder::new(
            encoder,
            array.logical_nulls(),
        )))
    }
}

struct FloatJson<'a, T: arrow_array::ArrowPrimitiveType>(&'a arrow_array::PrimitiveArray<T>);

impl<T> arrow_json::Encoder for FloatJson<'_, T>
where
    T: arrow_array::ArrowPrimitiveType,
    T::Native: std::fmt::Debug,
{
    fn encode(&mut self, idx: usize, out: &mut Vec<u8>) {
        // Debug is the shortest text that reads back to the same value ("1.0", "1e20")
        // and spells the non-finite ones "NaN", "inf", "-inf".
        let text = format!("{:?}", self.0.value(idx));
        let text = match text.as_str() {
            "NaN" => "\"NaN\"",
            "inf" => "\"Infinity\"",
            "-inf" => "\"-Infinity\"",
            finite => finite,
        };
        out.extend_from_slice(text.as_bytes());
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
