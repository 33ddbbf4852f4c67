//! Ingest: reading source files into Arrow with the table's schema and writing Parquet
//! data files (with Iceberg field ids) that respect the partition spec, target file
//! size and compression. Commits nothing: `apply` turns the result into one snapshot.
//!
//! Flow of [`write_source`] for one source:
//! 1. every file is read in pieces: a CSV is cut at line ends into chunks
//!    (`LAKECTL_INGEST_CHUNK_BYTES`, default 8 MiB) that the workers (one per core)
//!    parse in parallel straight into the table's Arrow types (the fast path);
//!    JSON lines and Parquet are read as a stream of batches;
//! 2. a chunk that does not parse is read again as text and cast column by column,
//!    which finds the exact line and column of every bad value: `onError: fail` stops
//!    with `file:line:col`, `onError: skip` writes the bad lines to the rejects file;
//! 3. rows are checked (required columns) and sorted within each batch by the sort
//!    order, split by partition, and written by a fan-out writer per worker whose files
//!    roll at `write.target-file-size-bytes`.
//!
//! Memory is bounded by workers × chunk size plus one open row group per partition
//! writer, whatever the file size.

pub mod files;
pub mod keyed;
mod read;
pub mod s3;
pub(crate) mod text;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use futures::StreamExt;
use iceberg::arrow::RecordBatchPartitionSplitter;
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, DataFileFormat, PartitionKey, TableMetadata};
use iceberg::writer::base_writer::data_file_writer::DataFileWriterBuilder;
use iceberg::writer::file_writer::location_generator::{
    DefaultFileNameGenerator, DefaultLocationGenerator,
};
use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
use iceberg::writer::file_writer::ParquetWriterBuilder;
use iceberg::writer::partitioning::fanout_writer::FanoutWriter;
use iceberg::writer::partitioning::PartitioningWriter;
use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::manifest::types::{OnError, SourceFormat, SourceSpec};
pub use files::{IngestedFile, SourceFile};
pub use read::Mapping;

/// A value that does not fit, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("{file}:{line}:{column}: {message}")]
pub struct RowError {
    pub file: String,
    /// 1-based line (for Parquet: 1-based row).
    pub line: u64,
    /// 1-based column of the source.
    pub column: usize,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Row(#[from] RowError),
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("writing data files: {0}")]
    Iceberg(#[from] iceberg::Error),
    /// A keyed batch that cannot be applied exactly (duplicate keys under
    /// `onDuplicateKey: error`, a key column missing, …); the message locates it.
    #[error("{0}")]
    Batch(String),
}

/// The data files written for one source, not yet committed.
#[derive(Debug, Default)]
pub struct Written {
    pub data_files: Vec<DataFile>,
    pub records: u64,
    pub files: Vec<IngestedFile>,
    pub rejected: u64,
    pub rejects_file: Option<PathBuf>,
}

/// One file to ingest with what the plan knew of it.
#[derive(Debug, Clone)]
pub struct FileToIngest {
    pub file: SourceFile,
    pub format: SourceFormat,
}

/// Progress reporting (bytes read).
pub trait Progress: Send + Sync {
    fn advance(&self, bytes: u64);
}

impl Progress for () {
    fn advance(&self, _: u64) {}
}

/// Rows per Arrow batch.
pub const BATCH_ROWS: usize = 65_536;

pub(crate) fn chunk_bytes() -> usize {
    std::env::var("LAKECTL_INGEST_CHUNK_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n >= 1024)
        .unwrap_or(8 << 20)
}

pub(crate) use crate::engine::workers;

/// Writer properties from the table's `write.parquet.*` properties (zstd level 1 by
/// default: Iceberg's default codec, at its fastest level), for files that roll at
/// `target` bytes.
pub fn writer_properties(md: &TableMetadata, target: usize) -> WriterProperties {
    let props = md.properties();
    let level = props
        .get("write.parquet.compression-level")
        .and_then(|v| v.parse::<i32>().ok());
    let codec = match props
        .get("write.parquet.compression-codec")
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("snappy") => Compression::SNAPPY,
        Some("gzip") => Compression::GZIP(Default::default()),
        Some("lz4") => Compression::LZ4_RAW,
        Some("uncompressed") | Some("none") => Compression::UNCOMPRESSED,
        _ => Compression::ZSTD(ZstdLevel::try_new(level.unwrap_or(1)).unwrap_or_default()),
    };
    // A partitioned table keeps a writer per partition open, each buffering its row
    // group: smaller row groups there keep memory flat.
    let row_group = props
        .get("write.parquet.row-group-limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(if md.default_partition_spec().is_unpartitioned() {
            BATCH_ROWS * 2
        } else {
            BATCH_ROWS / 4
        });
    // Every open data file buffers a page (and a dictionary) per column: with a writer
    // per partition per worker, these limits are what bound ingest memory.
    // A file rolls once its written bytes plus the open pages (not yet compressed, one
    // per column) pass the target: with pages near the target (small targets), every
    // file would roll after its first batch, a fraction of the target in size. Pages
    // stay at most an eighth of the target across the columns.
    let columns = md.current_schema().as_struct().fields().len().max(1);
    let page_default = (target / 8 / columns).clamp(8 << 10, 256 << 10);
    let page = props
        .get("write.parquet.page-size-bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(page_default);
    let dict = props
        .get("write.parquet.dict-size-bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(page_default);
    // Untruncated statistics: iceberg's writer leaves an inexact (truncated) row-group
    // bound out of the file's bounds, and the bounds drive pruning.
    let mut b = WriterProperties::builder()
        .set_statistics_truncate_length(None)
        .set_compression(codec)
        .set_max_row_group_row_count(Some(row_group))
        .set_data_page_size_limit(page)
        .set_dictionary_page_size_limit(dict);
    // Dictionaries pay off for strings; for numbers and timestamps (ids, amounts,
    // event times) they are mostly rebuilt and abandoned at every row group, which
    // cost a third of the ingest time. `write.parquet.dict-enabled` forces either way.
    match props
        .get("write.parquet.dict-enabled")
        .map(|v| v.to_ascii_lowercase())
    {
        Some(v) if v == "true" => b = b.set_dictionary_enabled(true),
        Some(v) if v == "false" => b = b.set_dictionary_enabled(false),
        _ => {
            for f in md.current_schema().as_struct().fields() {
                let is_text = matches!(
                    f.field_type.as_ref(),
                    iceberg::spec::Type::Primitive(
                        iceberg::spec::PrimitiveType::String | iceberg::spec::PrimitiveType::Binary
                    )
                );
                if f.field_type.is_primitive() {
                    b = b.set_column_dictionary_enabled(
                        parquet::schema::types::ColumnPath::from(f.name.as_str()),
                        is_text,
                    );
                }
            }
        }
    }
    b.build()
}

/// The table's `write.target-file-size-bytes` (512 MiB, Iceberg's default, without it).
pub(crate) fn target_file_size(md: &TableMetadata) -> usize {
    md.properties()
        .get("write.target-file-size-bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(512 << 20)
}

type Fanout = FanoutWriter<
    DataFileWriterBuilder<ParquetWriterBuilder, DefaultLocationGenerator, DefaultFileNameGenerator>,
>;

/// A writer of one worker: partitioned (fan-out) or not.
pub struct TableWriter {
    splitter: Option<Splitter>,
    fanout: Option<Fanout>,
    plain: Option<
        <DataFileWriterBuilder<
            ParquetWriterBuilder,
            DefaultLocationGenerator,
            DefaultFileNameGenerator,
        > as IcebergWriterBuilder>::R,
    >,
    sort: Vec<(usize, bool, bool)>,
    pub records: u64,
}

impl TableWriter {
    pub async fn new(
        file_io: &FileIO,
        md: &TableMetadata,
        prefix: &str,
    ) -> Result<TableWriter, iceberg::Error> {
        Self::with_target_size(file_io, md, prefix, target_file_size(md)).await
    }

    /// A writer whose files roll at `target` bytes (compaction's target size).
    pub async fn with_target_size(
        file_io: &FileIO,
        md: &TableMetadata,
        prefix: &str,
        target: usize,
    ) -> Result<TableWriter, iceberg::Error> {
        let schema = md.current_schema().clone();
        let parquet = ParquetWriterBuilder::new(writer_properties(md, target), schema.clone());
        let rolling = RollingFileWriterBuilder::new(
            parquet,
            target,
            file_io.clone(),
            DefaultLocationGenerator::new(md)?,
            DefaultFileNameGenerator::new(prefix.to_string(), None, DataFileFormat::Parquet),
        );
        let builder = DataFileWriterBuilder::new(rolling);
        let spec = md.default_partition_spec();
        let sort = sort_columns(md);
        if spec.is_unpartitioned() {
            Ok(TableWriter {
                splitter: None,
                fanout: None,
                plain: Some(builder.build(None).await?),
                sort,
                records: 0,
            })
        } else {
            Ok(TableWriter {
                splitter: Some(Splitter::new(schema, spec.clone())?),
                fanout: Some(FanoutWriter::new(builder)),
                plain: None,
                sort,
                records: 0,
            })
        }
    }

    pub async fn write(&mut self, batch: RecordBatch) -> Result<(), iceberg::Error> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.records += batch.num_rows() as u64;
        if let (Some(splitter), Some(fanout)) = (&self.splitter, &mut self.fanout) {
            for (key, part) in splitter.split(&batch, &self.sort)? {
                fanout.write(key, part).await?;
            }
            Ok(())
        } else if let Some(w) = &mut self.plain {
            w.write(sort_batch(batch, &self.sort)?).await
        } else {
            Ok(())
        }
    }

    pub async fn close(mut self) -> Result<Vec<DataFile>, iceberg::Error> {
        if let Some(f) = self.fanout.take() {
            f.close().await
        } else if let Some(mut w) = self.plain.take() {
            w.close().await
        } else {
            Ok(Vec::new())
        }
    }
}

/// Splits a batch by partition, vectorized: partition values are computed per column
/// with iceberg's transform functions, the batch is sorted once by (partition values,
/// then the table's sort order) and cut into runs of equal partition values, so one
/// partition key is built per run, not per row, and rows arrive clustered. Specs with
/// a source inside a struct use iceberg's own (row by row) splitter.
struct Splitter {
    spec: iceberg::spec::PartitionSpecRef,
    schema: iceberg::spec::SchemaRef,
    fields: Vec<(
        usize,
        iceberg::transform::BoxedTransformFunction,
        iceberg::spec::Type,
    )>,
    fallback: Option<RecordBatchPartitionSplitter>,
}

impl Splitter {
    fn new(
        schema: iceberg::spec::SchemaRef,
        spec: iceberg::spec::PartitionSpecRef,
    ) -> Result<Splitter, iceberg::Error> {
        let top: Vec<i32> = schema.as_struct().fields().iter().map(|f| f.id).collect();
        let mut fields = Vec::new();
        for f in spec.fields() {
            let Some(idx) = top.iter().position(|id| *id == f.source_id) else {
                return Ok(Splitter {
                    fallback: Some(RecordBatchPartitionSplitter::try_new_with_computed_values(
                        schema.clone(),
                        spec.clone(),
                    )?),
                    spec,
                    schema,
                    fields: Vec::new(),
                });
            };
            let source_type = schema.as_struct().fields()[idx].field_type.as_ref().clone();
            fields.push((
                idx,
                iceberg::transform::create_transform_function(&f.transform)?,
                f.transform.result_type(&source_type)?,
            ));
        }
        Ok(Splitter {
            spec,
            schema,
            fields,
            fallback: None,
        })
    }

    fn split(
        &self,
        batch: &RecordBatch,
        sort: &[(usize, bool, bool)],
    ) -> Result<Vec<(PartitionKey, RecordBatch)>, iceberg::Error> {
        if let Some(f) = &self.fallback {
            return f
                .split(&sort_batch(batch.clone(), sort)?)
                .map(|v| v.into_iter().collect());
        }
        let to_err = |e: arrow_schema::ArrowError| {
            iceberg::Error::new(iceberg::ErrorKind::Unexpected, e.to_string())
        };
        let values: Vec<arrow_array::ArrayRef> = self
            .fields
            .iter()
            .map(|(i, t, _)| t.transform(batch.column(*i).clone()))
            .collect::<Result<_, _>>()?;
        let mut keys: Vec<arrow_ord_sort::SortColumn> = values
            .iter()
            .map(|v| arrow_ord_sort::SortColumn {
                values: v.clone(),
                options: None,
            })
            .collect();
        keys.extend(
            sort.iter()
                .map(|(i, desc, nulls_first)| arrow_ord_sort::SortColumn {
                    values: batch.column(*i).clone(),
                    options: Some(arrow_schema::SortOptions {
                        descending: *desc,
                        nulls_first: *nulls_first,
                    }),
                }),
        );
        let indices = arrow_ord_sort::lexsort_to_indices(&keys, None).map_err(to_err)?;
        let sorted = arrow_select::take::take_record_batch(batch, &indices).map_err(to_err)?;
        let values: Vec<arrow_array::ArrayRef> = values
            .iter()
            .map(|v| arrow_select::take::take(v.as_ref(), &indices, None))
            .collect::<Result<_, _>>()
            .map_err(to_err)?;
        let runs = arrow_ord_sort::partition(&values).map_err(to_err)?;
        let mut out = Vec::new();
        for r in runs.ranges() {
            let mut literals = Vec::with_capacity(values.len());
            for (v, (_, _, ty)) in values.iter().zip(&self.fields) {
                let one = iceberg::arrow::arrow_primitive_to_literal(&v.slice(r.start, 1), ty)?;
                literals.push(one.into_iter().next().flatten());
            }
            let key = PartitionKey::new(
                self.spec.as_ref().clone(),
                self.schema.clone(),
                iceberg::spec::Struct::from_iter(literals),
            );
            out.push((key, sorted.slice(r.start, r.end - r.start)));
        }
        Ok(out)
    }
}

/// (column index, descending, nulls first) of the table's sort order, top-level
/// identity fields only.
fn sort_columns(md: &TableMetadata) -> Vec<(usize, bool, bool)> {
    let schema = md.current_schema();
    let top: Vec<i32> = schema.as_struct().fields().iter().map(|f| f.id).collect();
    md.default_sort_order()
        .fields
        .iter()
        .filter(|f| f.transform == iceberg::spec::Transform::Identity)
        .filter_map(|f| {
            let idx = top.iter().position(|id| *id == f.source_id)?;
            Some((
                idx,
                f.direction == iceberg::spec::SortDirection::Descending,
                f.null_order == iceberg::spec::NullOrder::First,
            ))
        })
        .collect()
}

fn sort_batch(
    batch: RecordBatch,
    sort: &[(usize, bool, bool)],
) -> Result<RecordBatch, iceberg::Error> {
    if sort.is_empty() || batch.num_rows() < 2 {
        return Ok(batch);
    }
    let columns: Vec<arrow_array::ArrayRef> = batch.columns().to_vec();
    let keys: Vec<arrow_ord_sort::SortColumn> = sort
        .iter()
        .map(|(i, desc, nulls_first)| arrow_ord_sort::SortColumn {
            values: columns[*i].clone(),
            options: Some(arrow_schema::SortOptions {
                descending: *desc,
                nulls_first: *nulls_first,
            }),
        })
        .collect();
    let to_err = |e: arrow_schema::ArrowError| {
        iceberg::Error::new(iceberg::ErrorKind::Unexpected, e.to_string())
    };
    let indices = arrow_ord_sort::lexsort_to_indices(&keys, None).map_err(to_err)?;
    let sorted = columns
        .iter()
        .map(|c| arrow_select::take::take(c.as_ref(), &indices, None))
        .collect::<Result<Vec<_>, _>>()
        .map_err(to_err)?;
    RecordBatch::try_new(batch.schema(), sorted).map_err(to_err)
}

mod arrow_ord_sort {
    pub use datafusion::arrow::compute::kernels::partition::partition;
    pub use datafusion::arrow::compute::{lexsort_to_indices, SortColumn};
}

/// Writes every file of one source into data files of the table (current schema and
/// default spec). The units of all files (a plain CSV's chunks, other files whole) go
/// on one queue that every worker takes from, each worker writing its own data files
/// across them: many small files keep every core busy and become few data files.
pub async fn write_source(
    file_io: &FileIO,
    md: &TableMetadata,
    source: &SourceSpec,
    files: &[FileToIngest],
    rejects_dir: &std::path::Path,
    progress: Arc<dyn Progress>,
) -> Result<Written, IngestError> {
    let n_workers = workers();
    let run = uuid::Uuid::new_v4();
    let mut written = Written::default();
    let rejects = Arc::new(read::Rejects::new(
        rejects_dir,
        source.on_error == OnError::Skip,
    ));
    let hashes = spawn_hashes(files, n_workers);
    let mut queue = Vec::new();
    for (i, f) in files.iter().enumerate() {
        queue.extend(
            read::plan_units(f, source, md, chunk_bytes())?
                .into_iter()
                .map(|u| (i, u)),
        );
    }
    let rows: Arc<Vec<AtomicU64>> = Arc::new(files.iter().map(|_| AtomicU64::new(0)).collect());
    let units = Arc::new(std::sync::Mutex::new(queue.into_iter()));
    let mut tasks = Vec::new();
    for w in 0..n_workers {
        let units = units.clone();
        let file_io = file_io.clone();
        let md = md.clone();
        let rows = rows.clone();
        let rejects = rejects.clone();
        let progress = progress.clone();
        let prefix = format!("{run}-{w}");
        tasks.push(tokio::spawn(async move {
            let mut writer: Option<TableWriter> = None;
            loop {
                let unit = units.lock().ok().and_then(|mut it| it.next());
                let Some((i, unit)) = unit else { break };
                let bytes = unit.bytes();
                let batches = tokio::task::spawn_blocking({
                    let rejects = rejects.clone();
                    move || unit.read(&rejects)
                })
                .await
                .map_err(|e| {
                    (
                        i,
                        IngestError::File {
                            file: String::new(),
                            message: format!("reader panicked: {e}"),
                        },
                    )
                })?
                .map_err(|e| (i, e))?;
                if writer.is_none() {
                    writer = Some(
                        TableWriter::new(&file_io, &md, &prefix)
                            .await
                            .map_err(|e| (i, e.into()))?,
                    );
                }
                if let Some(w) = writer.as_mut() {
                    for b in batches {
                        rows[i].fetch_add(b.num_rows() as u64, Ordering::Relaxed);
                        w.write(b).await.map_err(|e| (i, e.into()))?;
                    }
                }
                progress.advance(bytes);
            }
            match writer {
                Some(w) => {
                    Ok::<_, (usize, IngestError)>(w.close().await.map_err(|e| (0, e.into()))?)
                }
                None => Ok(Vec::new()),
            }
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(files)) => written.data_files.extend(files),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push((
                0,
                IngestError::File {
                    file: String::new(),
                    message: format!("worker failed: {e}"),
                },
            )),
        }
    }
    if !errors.is_empty() {
        return Err(earliest(errors));
    }
    let rows: Vec<u64> = rows.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    written.files = ledger_entries(files, hashes, &rows).await?;
    written.records = rows.iter().sum();
    written.rejected = rejects.count();
    written.rejects_file = rejects.path();
    Ok(written)
}

type Hashes = tokio::task::JoinHandle<Vec<Result<std::io::Result<String>, tokio::task::JoinError>>>;

/// The ledger's content hash of each file, read alongside the parse, not before it (S3
/// objects are identified by their ETag), one file per worker at a time (each hash
/// reads through its own 1 MiB buffer).
fn spawn_hashes(files: &[FileToIngest], n_workers: usize) -> Hashes {
    tokio::spawn(
        futures::stream::iter(
            files
                .iter()
                .map(|f| (f.file.etag.clone(), f.file.location.clone()))
                .collect::<Vec<_>>(),
        )
        .map(|(etag, location)| {
            tokio::task::spawn_blocking(move || match etag {
                Some(etag) => Ok(format!("etag:{etag}")),
                None => files::content_hash(&location),
            })
        })
        .buffered(n_workers)
        .collect::<Vec<_>>(),
    )
}

/// The ledger's entries for `files`, which gave `rows` rows each.
async fn ledger_entries(
    files: &[FileToIngest],
    hashes: Hashes,
    rows: &[u64],
) -> Result<Vec<IngestedFile>, IngestError> {
    let hashes = hashes.await.map_err(|e| IngestError::File {
        file: String::new(),
        message: format!("hashing failed: {e}"),
    })?;
    let mut out = Vec::with_capacity(files.len());
    for ((f, hash), n) in files.iter().zip(hashes).zip(rows) {
        let hash = hash
            .map_err(|e| IngestError::File {
                file: f.file.path.clone(),
                message: format!("hashing failed: {e}"),
            })?
            .map_err(|e| IngestError::File {
                file: f.file.path.clone(),
                message: format!("cannot read: {e}"),
            })?;
        // Read and hashed: still the version listed? A file still being written (a
        // writer that creates it, then fills it) must not be recorded as ingested
        // with the rows of a part of it.
        if let Some(why) = files::changed_since_listing(&f.file) {
            return Err(IngestError::File {
                file: f.file.path.clone(),
                message: format!(
                    "{why}; nothing was committed: it is ingested once it stops changing (write files elsewhere and rename them into place)"
                ),
            });
        }
        out.push(IngestedFile {
            path: f.file.path.clone(),
            size: f.file.size,
            mtime_ms: f.file.mtime_ms,
            hash,
            rows: *n,
        });
    }
    Ok(out)
}

/// Of the errors the workers hit, the one a user should see first: the earliest bad
/// line of the earliest file (workers read chunks in parallel, so the first to fail is
/// not the first line).
fn earliest(mut errors: Vec<(usize, IngestError)>) -> IngestError {
    errors.sort_by_key(|(i, e)| match e {
        IngestError::Row(r) => (*i, 0, r.line),
        _ => (*i, 1, 0),
    });
    errors.remove(0).1
}
