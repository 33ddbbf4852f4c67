//! Row mutations, copy-on-write. Commits nothing: `apply` turns the result into one
//! `overwrite` (or `delete`) snapshot.
//!
//! For one mutation on one snapshot:
//! 1. [`snapshot_files`]: the live data files, from the snapshot's manifests;
//! 2. [`candidates`]: the files that may hold a matching row, from column statistics
//!    (lower/upper bounds, null counts) and identity partition values, through
//!    DataFusion's `PruningPredicate`; the others are never opened;
//! 3. [`count_matches`]: each candidate is read (only the predicate's columns) and its
//!    matching rows counted. A file with none is left alone;
//! 4. [`rewrite`]: each file with matching rows is read whole (with the current schema,
//!    by field id) and written again through the ingest writer (partition spec, sort
//!    order, target file size, compression), with the rows deleted or updated; a file
//!    stays one file unless its rows grew by a quarter.

pub mod expr;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch, UInt64Array};
use arrow_schema::SchemaRef;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, ScalarValue};
use datafusion::physical_optimizer::pruning::PruningPredicate;
use futures::StreamExt;
use iceberg::io::FileIO;
use iceberg::scan::FileScanTask;
use iceberg::spec::{
    DataContentType, DataFile, Literal, ManifestContentType, ManifestEntryRef, ManifestFile,
    ManifestList, ManifestStatus, PartitionSpec, PrimitiveLiteral, PrimitiveType, Snapshot,
    TableMetadata, Transform,
};

/// A live data file of a snapshot, with the manifest that lists it.
#[derive(Debug, Clone)]
pub struct LiveFile {
    /// Index of its manifest in [`SnapshotFiles::manifests`].
    pub manifest: usize,
    pub entry: ManifestEntryRef,
    pub spec: Arc<PartitionSpec>,
}

impl LiveFile {
    pub fn data_file(&self) -> &DataFile {
        self.entry.data_file()
    }
    pub fn path(&self) -> &str {
        self.entry.file_path()
    }
}

/// What a snapshot holds: its manifest list and every live data file.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFiles {
    pub manifests: Vec<ManifestFile>,
    pub files: Vec<LiveFile>,
    /// Live delete files (merge-on-read, written by another engine).
    pub delete_files: usize,
    /// Those delete files, position and equality.
    pub deletes: Vec<LiveFile>,
}

impl SnapshotFiles {
    pub fn records(&self) -> u64 {
        self.files.iter().map(|f| f.entry.record_count()).sum()
    }

    /// Copy-on-write needs plain data files: the refusal when another engine left
    /// merge-on-read delete files.
    pub fn refuse_deletes(&self) -> Result<(), String> {
        if self.delete_files > 0 {
            return Err(format!(
                "the table has {} merge-on-read delete file(s) written by another engine; compact it first (copy-on-write needs plain data files)",
                self.delete_files
            ));
        }
        Ok(())
    }
}

/// Reads the manifest list and data manifests of `snapshot`.
pub async fn snapshot_files(
    file_io: &FileIO,
    md: &TableMetadata,
    snapshot: &Snapshot,
) -> iceberg::Result<SnapshotFiles> {
    let bytes = file_io.new_input(snapshot.manifest_list())?.read().await?;
    let manifests: Vec<ManifestFile> =
        ManifestList::parse_with_version(&bytes, md.format_version())?
            .consume_entries()
            .into_iter()
            .collect();
    let mut out = SnapshotFiles {
        manifests: manifests.clone(),
        ..Default::default()
    };
    for (i, m) in manifests.iter().enumerate() {
        if m.content == ManifestContentType::Deletes {
            if m.has_added_files() || m.has_existing_files() {
                let loaded = m.load_manifest(file_io).await?;
                let spec = Arc::new(loaded.metadata().partition_spec().clone());
                for e in loaded.entries().iter().filter(|e| e.is_alive()) {
                    out.deletes.push(LiveFile {
                        manifest: i,
                        entry: e.clone(),
                        spec: spec.clone(),
                    });
                }
                out.delete_files = out.deletes.len();
            }
            continue;
        }
        let loaded = m.load_manifest(file_io).await?;
        let spec = Arc::new(loaded.metadata().partition_spec().clone());
        for e in loaded.entries() {
            if e.status() != ManifestStatus::Deleted && e.content_type() == DataContentType::Data {
                out.files.push(LiveFile {
                    manifest: i,
                    entry: e.clone(),
                    spec: spec.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// The Arrow schema lakectl reads a table with (its current schema, field ids kept).
pub fn arrow_schema(md: &TableMetadata) -> iceberg::Result<SchemaRef> {
    Ok(Arc::new(iceberg::arrow::schema_to_arrow_schema(
        md.current_schema(),
    )?))
}

/// Indices into `files` of those that may hold a row matching `predicate`.
pub fn candidates(
    files: &[LiveFile],
    md: &TableMetadata,
    schema: &SchemaRef,
    predicate: &expr::Predicate,
) -> Vec<usize> {
    let all: Vec<usize> = (0..files.len()).collect();
    let Ok(pp) = PruningPredicate::try_new(predicate.expr.clone(), schema.clone()) else {
        return all;
    };
    if pp.always_true() {
        return all;
    }
    let stats = Stats {
        files,
        schema: schema.clone(),
        ids: md
            .current_schema()
            .as_struct()
            .fields()
            .iter()
            .map(|f| (f.name.clone(), (f.id, f.field_type.clone())))
            .collect(),
    };
    match pp.prune(&stats) {
        Ok(keep) => all.into_iter().filter(|i| keep[*i]).collect(),
        Err(e) => {
            tracing::debug!("pruning failed, reading every file: {e}");
            all
        }
    }
}

/// The files of `files` that may hold a row matching `predicate_sql` on `md`'s current
/// schema; `Err` when the predicate does not compile against it.
pub fn candidate_files<'a>(
    files: &'a [LiveFile],
    md: &TableMetadata,
    predicate_sql: &str,
) -> Result<Vec<&'a LiveFile>, String> {
    let schema = arrow_schema(md).map_err(|e| e.to_string())?;
    let pred = expr::predicate(predicate_sql, &schema)?;
    Ok(candidates(files, md, &schema, &pred)
        .into_iter()
        .map(|i| &files[i])
        .collect())
}

struct Stats<'a> {
    files: &'a [LiveFile],
    schema: SchemaRef,
    ids: HashMap<String, (i32, Box<iceberg::spec::Type>)>,
}

impl Stats<'_> {
    fn bounds(&self, column: &Column, upper: bool) -> Option<ArrayRef> {
        let (id, ty) = self.ids.get(&column.name)?;
        let iceberg::spec::Type::Primitive(ty) = ty.as_ref() else {
            return None;
        };
        let target = self.schema.field_with_name(&column.name).ok()?.data_type();
        let null = ScalarValue::try_from(target).ok()?;
        let values = self.files.iter().map(|f| {
            file_bound(f, *id, ty, upper)
                .and_then(|s| s.cast_to(target).ok())
                .unwrap_or_else(|| null.clone())
        });
        ScalarValue::iter_to_array(values).ok()
    }
}

/// The lower (or `upper`) bound of column `id` (of type `ty`) in this file: from its
/// column statistics, or the value of an identity partition field on it.
pub(crate) fn file_bound(
    f: &LiveFile,
    id: i32,
    ty: &PrimitiveType,
    upper: bool,
) -> Option<ScalarValue> {
    let df = f.data_file();
    let map = if upper {
        df.upper_bounds()
    } else {
        df.lower_bounds()
    };
    map.get(&id)
        .and_then(|d| scalar(d.literal(), d.data_type()))
        .or_else(|| identity_value(f, id, ty))
}

/// The value of an identity partition field on `source_id` in this file's partition.
fn identity_value(f: &LiveFile, source_id: i32, ty: &PrimitiveType) -> Option<ScalarValue> {
    let pos = f
        .spec
        .fields()
        .iter()
        .position(|p| p.source_id == source_id && p.transform == Transform::Identity)?;
    match f.data_file().partition().iter().nth(pos)? {
        Some(Literal::Primitive(lit)) => scalar(lit, ty),
        _ => None,
    }
}

/// An Iceberg value as a DataFusion scalar of the type lakectl's reader produces.
pub fn scalar(lit: &PrimitiveLiteral, ty: &PrimitiveType) -> Option<ScalarValue> {
    use PrimitiveLiteral as L;
    use PrimitiveType as T;
    let utc = || Some(Arc::from("+00:00"));
    Some(match (lit, ty) {
        (L::Boolean(b), _) => ScalarValue::Boolean(Some(*b)),
        (L::Int(v), T::Date) => ScalarValue::Date32(Some(*v)),
        (L::Int(v), _) => ScalarValue::Int32(Some(*v)),
        (L::Long(v), T::Time) => ScalarValue::Time64Microsecond(Some(*v)),
        (L::Long(v), T::Timestamp) => ScalarValue::TimestampMicrosecond(Some(*v), None),
        (L::Long(v), T::Timestamptz) => ScalarValue::TimestampMicrosecond(Some(*v), utc()),
        (L::Long(v), T::TimestampNs) => ScalarValue::TimestampNanosecond(Some(*v), None),
        (L::Long(v), T::TimestamptzNs) => ScalarValue::TimestampNanosecond(Some(*v), utc()),
        (L::Long(v), _) => ScalarValue::Int64(Some(*v)),
        (L::Float(v), _) => ScalarValue::Float32(Some(v.0)),
        (L::Double(v), _) => ScalarValue::Float64(Some(v.0)),
        (L::String(s), _) => ScalarValue::Utf8(Some(s.clone())),
        (L::Int128(v), T::Decimal { precision, scale }) => {
            ScalarValue::Decimal128(Some(*v), *precision as u8, *scale as i8)
        }
        _ => return None,
    })
}

impl PruningStatistics for Stats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, false)
    }
    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bounds(column, true)
    }
    fn num_containers(&self) -> usize {
        self.files.len()
    }
    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        let (id, _) = self.ids.get(&column.name)?;
        let v: UInt64Array = self
            .files
            .iter()
            .map(|f| f.data_file().null_value_counts().get(id).copied())
            .collect();
        Some(Arc::new(v))
    }
    fn row_counts(&self, _column: &Column) -> Option<ArrayRef> {
        let v: UInt64Array = self
            .files
            .iter()
            .map(|f| Some(f.entry.record_count()))
            .collect();
        Some(Arc::new(v))
    }
    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

/// Reads one data file with the table's current schema, projected to `field_ids`, as a
/// stream of batches (a file is never held in memory whole).
pub fn read_file(
    file_io: &FileIO,
    md: &TableMetadata,
    file: &LiveFile,
    field_ids: Vec<i32>,
) -> iceberg::Result<iceberg::scan::ArrowRecordBatchStream> {
    let df = file.data_file();
    let task = FileScanTask::builder()
        .with_file_size_in_bytes(df.file_size_in_bytes())
        .with_start(0)
        .with_length(df.file_size_in_bytes())
        .with_record_count(Some(df.record_count()))
        .with_data_file_path(df.file_path().to_string())
        .with_data_file_format(df.file_format())
        .with_schema(md.current_schema().clone())
        .with_project_field_ids(field_ids)
        .with_partition(Some(df.partition().clone()))
        .with_partition_spec(Some(file.spec.clone()))
        .with_case_sensitive(true)
        .build();
    let reader =
        iceberg::arrow::ArrowReaderBuilder::new(file_io.clone(), iceberg::Runtime::try_current()?)
            .with_data_file_concurrency_limit(1)
            .build();
    Ok(reader
        .read(Box::pin(futures::stream::once(async { Ok(task) })))?
        .stream())
}

/// `schema` with run-end encoded columns (the reader's constant partition values)
/// as their plain value type.
fn plain_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<arrow_schema::Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            arrow_schema::DataType::RunEndEncoded(_, values) => f
                .as_ref()
                .clone()
                .with_data_type(values.data_type().clone()),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

/// `batch` with each column cast to the type `schema` gives it.
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                arrow_cast::cast(c, f.data_type()).map_err(|e| e.to_string())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

/// Field ids of the named top-level columns of the current schema (all: `names` empty).
pub(crate) fn field_ids(md: &TableMetadata, names: &[String]) -> Vec<i32> {
    md.current_schema()
        .as_struct()
        .fields()
        .iter()
        .filter(|f| names.is_empty() || names.contains(&f.name))
        .map(|f| f.id)
        .collect()
}

/// Rows matching `predicate_sql` in each of `files` (reading only its columns), in order.
pub async fn count_matches(
    file_io: &FileIO,
    md: &TableMetadata,
    files: &[&LiveFile],
    predicate_sql: &str,
) -> Result<Vec<u64>, String> {
    let full = arrow_schema(md).map_err(|e| e.to_string())?;
    let columns = expr::predicate(predicate_sql, &full)?.columns;
    let ids = field_ids(md, &columns);
    // A predicate on no column (`true`) still needs one column to count rows.
    let ids = if ids.is_empty() {
        field_ids(md, &[]).into_iter().take(1).collect()
    } else {
        ids
    };
    let md = Arc::new(md.clone());
    let predicate_sql = Arc::new(predicate_sql.to_string());
    crate::engine::run(files.iter().map(|f| (*f).clone()), |f| {
        let ids = ids.clone();
        let (file_io, md, predicate_sql) = (file_io.clone(), md.clone(), predicate_sql.clone());
        async move {
            let (file_io, md, f, predicate_sql) =
                (&file_io, md.as_ref(), &f, predicate_sql.as_str());
            let mut batches =
                read_file(file_io, md, f, ids).map_err(|e| format!("{}: {e}", f.path()))?;
            let mut compiled: Option<(SchemaRef, expr::Predicate)> = None;
            let mut n = 0u64;
            while let Some(b) = batches.next().await {
                let b = b.map_err(|e| format!("{}: {e}", f.path()))?;
                if compiled.is_none() {
                    let schema = plain_schema(&b.schema());
                    let pred = expr::predicate(predicate_sql, &schema)?;
                    compiled = Some((schema, pred));
                }
                let (schema, pred) = compiled.as_ref().expect("compiled");
                let b = conform(&b, schema).map_err(|e| format!("{}: {e}", f.path()))?;
                n += expr::mask(&pred.expr, &b)?.true_count() as u64;
            }
            Ok::<u64, String>(n)
        }
    })
    .await
}

/// A rewritten file: the new files that replace it and the rows changed in it.
pub struct Rewritten {
    pub replaced: String,
    pub new_files: Vec<DataFile>,
    pub rows_changed: u64,
}

/// Rewrites each of `files` with the mutation applied (nothing committed).
pub async fn rewrite(
    file_io: &FileIO,
    md: &TableMetadata,
    files: &[&LiveFile],
    action: &expr::Action,
) -> Result<Vec<Rewritten>, String> {
    let schema = arrow_schema(md).map_err(|e| e.to_string())?;
    let prefix = uuid::Uuid::new_v4().to_string();
    let md = Arc::new(md.clone());
    crate::engine::run(files.iter().map(|f| (*f).clone()).enumerate(), |(i, f)| {
        let prefix = format!("{prefix}-m{i}");
        let schema = schema.clone();
        let (file_io, md, action) = (file_io.clone(), md.clone(), action.clone());
        async move {
            let (file_io, md, f, action) = (&file_io, md.as_ref(), &f, &action);
            let mut batches = read_file(file_io, md, f, field_ids(md, &[]))
                .map_err(|e| format!("{}: {e}", f.path()))?;
            let compiled = expr::compile(action, &schema).map_err(|errs| {
                errs.into_iter()
                    .map(|e| e.message)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            // A file rewritten with a few rows changed stays one file: it rolls at the
            // table's target or a quarter over the file's own size, whichever is larger.
            let size = usize::try_from(f.data_file().file_size_in_bytes()).unwrap_or(usize::MAX);
            let target = crate::ingest::target_file_size(md).max(size.saturating_add(size / 4));
            let mut writer =
                crate::ingest::TableWriter::with_target_size(file_io, md, &prefix, target)
                    .await
                    .map_err(|e| e.to_string())?;
            let mut changed = 0u64;
            while let Some(b) = batches.next().await {
                let b = b.map_err(|e| format!("{}: {e}", f.path()))?;
                // The reader's batches carry the same fields (constant partition columns
                // run-end encoded): cast onto the compiled schema.
                let b = conform(&b, &schema).map_err(|e| format!("{}: {e}", f.path()))?;
                let (out, n) = compiled
                    .apply(&b)
                    .map_err(|e| format!("{}: {e}", f.path()))?;
                changed += n as u64;
                writer.write(out).await.map_err(|e| e.to_string())?;
            }
            let new_files = writer.close().await.map_err(|e| e.to_string())?;
            Ok::<Rewritten, String>(Rewritten {
                replaced: f.path().to_string(),
                new_files,
                rows_changed: changed,
            })
        }
    })
    .await
}

/// Human summary of files' partitions, for plans: `day=2024-01-02, day=2024-01-03`.
pub fn describe_partition(f: &LiveFile, md: &TableMetadata) -> String {
    let schema = md.current_schema();
    let Ok(pt) = f.spec.partition_type(schema) else {
        return String::new();
    };
    f.spec
        .fields()
        .iter()
        .zip(f.data_file().partition().iter())
        .zip(pt.fields())
        .map(|((pf, v), field)| {
            let shown = match (v, field.field_type.as_primitive_type()) {
                (Some(Literal::Primitive(l)), Some(t)) => scalar(l, t)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("{l:?}")),
                (None, _) => "null".into(),
                (Some(other), _) => format!("{other:?}"),
            };
            format!("{}={shown}", pf.name)
        })
        .collect::<Vec<_>>()
        .join("/")
}
