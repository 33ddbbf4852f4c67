//! Keyed batches: `mode: upsert` (with or without CDC deletes), `replacePartitions` and
//! `replace`, copy-on-write. Commits nothing: `apply::keyed` publishes the result as
//! one `overwrite` snapshot carrying the ledger.
//!
//! 1. [`read_batch`]: the batch (the new files of one source in one apply, in order,
//!    then line order) is read into memory in the table's Arrow types on all cores,
//!    through the ingest readers. Key columns are read as required columns, so a null
//!    key is refused at its `file:line:col`; a CDC op column is read beside them.
//! 2. [`resolve`]: the rows of one key: the last wins (`onDuplicateKey: last`) or the
//!    batch is refused (`error`); a CDC row whose op is in `deleteWhen` deletes its key.
//! 3. [`upsert`]: candidate files by the bounds of the first key column (column
//!    statistics, identity partition values), then a probe of the key columns only;
//!    only files holding a matching key are rewritten, without those rows. The batch's
//!    rows (not its deletes) are written as new files; a column the source lacks takes
//!    the replaced row's value.
//! 4. [`replace_partitions`] / [`replace`]: the batch is written; the live files of the
//!    partitions it holds (of the whole table) are removed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow_schema::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use futures::StreamExt;
use iceberg::io::FileIO;
use iceberg::spec::{
    DataFile, Literal, NestedField, PrimitiveLiteral, PrimitiveType, Schema, TableMetadata, Type,
};

use super::read::{self, Rejects, PRESENT};
use super::{chunk_bytes, workers, FileToIngest, IngestError, IngestedFile, TableWriter};
use crate::manifest::types::{OnDuplicateKey, OnError, SourceSpec};
use crate::mutate::{self, LiveFile, SnapshotFiles};

/// A batch read into memory.
pub struct Batch {
    /// Every row of the batch, in the table's Arrow schema, in batch order.
    pub rows: RecordBatch,
    /// Per row: its op is in `cdc.deleteWhen`.
    deletes: Vec<bool>,
    /// The distinct sets of table columns the batch's files fill.
    masks: Vec<Vec<bool>>,
    /// The batches read, in order: where each starts in `rows`, its file and mask.
    pieces: Vec<Piece>,
    paths: Vec<String>,
    /// The ledger's entries for the batch's files.
    pub files: Vec<IngestedFile>,
    pub rejected: u64,
    pub rejects_file: Option<std::path::PathBuf>,
}

impl Batch {
    pub fn num_rows(&self) -> usize {
        self.rows.num_rows()
    }

    /// The piece holding `row`.
    fn piece(&self, row: usize) -> &Piece {
        &self.pieces[self.pieces.partition_point(|p| p.start <= row) - 1]
    }

    /// The table columns the file of `row` fills.
    fn mask(&self, row: usize) -> &[bool] {
        &self.masks[self.piece(row).mask]
    }

    /// `row`'s place: its file and 1-based row there.
    fn at(&self, row: usize) -> String {
        let p = self.piece(row);
        format!(
            "{} (row {})",
            self.paths[p.file],
            p.first_row + (row - p.start) as u64
        )
    }
}

/// One batch as a reader gave it, within [`Batch::rows`].
struct Piece {
    /// Its first row in `rows`.
    start: usize,
    file: usize,
    /// The 1-based row of its file it starts at.
    first_row: u64,
    /// Index in [`Batch::masks`].
    mask: usize,
}

/// `md` as the batch is read: key columns required, the CDC op column (a string) after
/// the table's columns.
fn read_metadata(
    md: &TableMetadata,
    key: &[String],
    op: Option<&str>,
) -> Result<TableMetadata, iceberg::Error> {
    let schema = md.current_schema();
    let mut fields: Vec<Arc<NestedField>> = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| {
            let required = if key.contains(&f.name) {
                true
            } else {
                // A CDC delete carries only its key: required columns are checked on
                // the rows written ([`check_required`]).
                f.required && op.is_none()
            };
            if required != f.required {
                let mut g = f.as_ref().clone();
                g.required = required;
                Arc::new(g)
            } else {
                f.clone()
            }
        })
        .collect();
    if op.is_none()
        && fields
            .iter()
            .zip(schema.as_struct().fields())
            .all(|(a, b)| a == b)
    {
        return Ok(md.clone());
    }
    if let Some(op) = op {
        fields.push(Arc::new(NestedField::optional(
            md.last_column_id() + 1,
            op,
            Type::Primitive(PrimitiveType::String),
        )));
    }
    let read = Schema::builder()
        .with_schema_id(schema.schema_id())
        .with_fields(fields)
        .with_identifier_field_ids(schema.identifier_field_ids())
        .build()?;
    Ok(
        iceberg::spec::TableMetadataBuilder::new_from_metadata(md.clone(), None)
            .add_current_schema(read)?
            .build()?
            .metadata,
    )
}

/// Reads the batch: `files` in order, each in line order.
pub async fn read_batch(
    md: &TableMetadata,
    source: &SourceSpec,
    files: &[FileToIngest],
    key: &[String],
    rejects_dir: &std::path::Path,
) -> Result<Batch, IngestError> {
    let op = source.cdc.as_ref().map(|c| c.op_column.as_str());
    let read_md = read_metadata(md, key, op)?;
    let n_workers = workers();
    let rejects = Arc::new(Rejects::new(rejects_dir, source.on_error == OnError::Skip));
    let hashes = super::spawn_hashes(files, n_workers);
    let mut units = Vec::new();
    for (i, f) in files.iter().enumerate() {
        for u in read::plan_units(f, source, &read_md, chunk_bytes())? {
            units.push((i, u));
        }
    }
    let results: Vec<(usize, Result<Vec<RecordBatch>, IngestError>)> =
        futures::stream::iter(units.into_iter().map(|(i, unit)| {
            let rejects = rejects.clone();
            async move {
                let read = tokio::task::spawn_blocking(move || unit.read(&rejects))
                    .await
                    .unwrap_or_else(|e| {
                        Err(IngestError::File {
                            file: String::new(),
                            message: format!("reader panicked: {e}"),
                        })
                    });
                (i, read)
            }
        }))
        .buffered(n_workers)
        .collect()
        .await;
    // Every column nullable while the batch is in memory (a CDC delete carries only its
    // key); the table's schema is put back when rows are written ([`write_rows`]).
    let strict = mutate::arrow_schema(md)?;
    let table = Arc::new(arrow_schema::Schema::new_with_metadata(
        strict
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
        strict.metadata().clone(),
    ));
    let n_table = table.fields().len();
    let mut batches = Vec::new();
    let mut ops: Vec<ArrayRef> = Vec::new();
    let mut masks: Vec<Vec<bool>> = Vec::new();
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut per_file = vec![0u64; files.len()];
    for (i, read) in results {
        for b in read? {
            let on: Option<HashSet<usize>> = b
                .schema()
                .metadata()
                .get(PRESENT)
                .map(|present| present.split(',').filter_map(|s| s.parse().ok()).collect());
            let mask: Vec<bool> = match &on {
                Some(on) => (0..n_table).map(|c| on.contains(&c)).collect(),
                None => vec![true; n_table],
            };
            if let (Some(op), Some(on)) = (op, &on) {
                if !on.contains(&n_table) {
                    return Err(IngestError::File {
                        file: files[i].file.path.clone(),
                        message: format!(
                            "no column `{op}` (the source's `cdc.opColumn`): a CDC file says what each row does"
                        ),
                    });
                }
            }
            let mask = match masks.iter().position(|m| *m == mask) {
                Some(id) => id,
                None => {
                    masks.push(mask);
                    masks.len() - 1
                }
            };
            if b.num_rows() > 0 {
                pieces.push(Piece {
                    start,
                    file: i,
                    first_row: per_file[i] + 1,
                    mask,
                });
            }
            start += b.num_rows();
            per_file[i] += b.num_rows() as u64;
            if op.is_some() {
                ops.push(b.column(n_table).clone());
            }
            batches.push(
                RecordBatch::try_new(table.clone(), b.columns()[..n_table].to_vec())
                    .map_err(iceberg_error)?,
            );
        }
    }
    let rows = arrow_select::concat::concat_batches(&table, &batches).map_err(iceberg_error)?;
    drop(batches);
    let deletes = match &source.cdc {
        None => vec![false; rows.num_rows()],
        Some(cdc) => {
            let mut out = Vec::with_capacity(rows.num_rows());
            for a in &ops {
                let a =
                    arrow_cast::cast(a, &arrow_schema::DataType::Utf8).map_err(iceberg_error)?;
                let s = a
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("cast to Utf8");
                out.extend(
                    (0..s.len())
                        .map(|r| s.is_valid(r) && cdc.delete_when.iter().any(|d| d == s.value(r))),
                );
            }
            out
        }
    };
    let files_out = super::ledger_entries(files, hashes, &per_file).await?;
    Ok(Batch {
        rows,
        deletes,
        masks,
        pieces,
        paths: files.iter().map(|f| f.file.path.clone()).collect(),
        files: files_out,
        rejected: rejects.count(),
        rejects_file: rejects.path(),
    })
}

/// The batch resolved by key: one winning row per key.
pub struct Resolved {
    /// Winning rows (indices into the batch), one per key.
    winners: Vec<u32>,
    /// Per winner: it deletes its key (CDC).
    delete: Vec<bool>,
    /// Per winner: the columns its file lacks take the replaced row's value (false
    /// when an earlier row of the batch deleted the key).
    patch: Vec<bool>,
    /// Key (row format) → winner ordinal.
    map: HashMap<Box<[u8]>, u32>,
    converter: RowConverter,
    key_idx: Vec<usize>,
    /// Rows of the batch that a later row of the same key replaced.
    pub superseded: u64,
}

impl Resolved {
    /// For each row of `b` (a data file's batch holding the key columns `names`): the
    /// winner ordinal of its key, if the batch has it.
    fn lookup(
        &self,
        b: &RecordBatch,
        names: &[String],
        schema: &SchemaRef,
    ) -> Result<Vec<Option<u32>>, String> {
        let cols = key_columns(b, names, schema)?;
        let rows = self.converter.convert_columns(&cols).map_err(arrow_err)?;
        Ok((0..rows.num_rows())
            .map(|r| self.map.get(rows.row(r).as_ref()).copied())
            .collect())
    }

    pub fn keys(&self) -> usize {
        self.winners.len()
    }
    pub fn deletes(&self) -> usize {
        self.delete.iter().filter(|d| **d).count()
    }
}

fn iceberg_error(e: arrow_schema::ArrowError) -> iceberg::Error {
    iceberg::Error::new(iceberg::ErrorKind::Unexpected, e.to_string())
}

fn arrow_err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn key_text(rows: &RecordBatch, key_idx: &[usize], names: &[String], row: usize) -> String {
    key_idx
        .iter()
        .zip(names)
        .map(|(c, n)| {
            let v = arrow_cast::display::array_value_to_string(rows.column(*c), row)
                .unwrap_or_default();
            format!("{n}={v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Resolves the batch by `key`: later rows win (or `error`), CDC deletes.
pub fn resolve(batch: &Batch, key: &[String], on_dup: OnDuplicateKey) -> Result<Resolved, String> {
    let schema = batch.rows.schema();
    let mut key_idx = Vec::new();
    for k in key {
        key_idx.push(
            schema
                .index_of(k)
                .map_err(|_| format!("key column `{k}` is not a column of the table"))?,
        );
    }
    for (k, c) in key.iter().zip(&key_idx) {
        if matches!(
            schema.field(*c).data_type(),
            arrow_schema::DataType::Float16
                | arrow_schema::DataType::Float32
                | arrow_schema::DataType::Float64
        ) {
            return Err(format!(
                "key column `{k}` is a float: NaN and -0.0 make float keys ambiguous (Iceberg identifier fields cannot be float either)"
            ));
        }
    }
    let converter = RowConverter::new(
        key_idx
            .iter()
            .map(|c| SortField::new(schema.field(*c).data_type().clone()))
            .collect(),
    )
    .map_err(arrow_err)?;
    let cols: Vec<ArrayRef> = key_idx
        .iter()
        .map(|c| batch.rows.column(*c).clone())
        .collect();
    let encoded = converter.convert_columns(&cols).map_err(arrow_err)?;
    let mut map: HashMap<Box<[u8]>, u32> = HashMap::with_capacity(batch.num_rows());
    let (mut winners, mut delete, mut patch) = (Vec::new(), Vec::new(), Vec::new());
    let mut superseded = 0u64;
    for r in 0..batch.num_rows() {
        let k = encoded.row(r);
        let del = batch.deletes[r];
        match map.get(k.as_ref()) {
            None => {
                map.insert(k.as_ref().into(), winners.len() as u32);
                winners.push(r as u32);
                delete.push(del);
                patch.push(true);
            }
            Some(&o) => {
                let o = o as usize;
                let old = winners[o] as usize;
                if on_dup == OnDuplicateKey::Error {
                    return Err(format!(
                        "{}: key ({}) is also at {}; a batch holds each key once under `onDuplicateKey: error`",
                        batch.at(r),
                        key_text(&batch.rows, &key_idx, key, r),
                        batch.at(old)
                    ));
                }
                if !delete[o] && !del {
                    let (a, b) = (batch.mask(old), batch.mask(r));
                    if let Some(c) = (0..a.len()).find(|c| a[*c] && !b[*c]) {
                        return Err(format!(
                            "{}: key ({}) was given a value for `{}` by {}, and this later row's file has no such column: which value the row keeps is not defined; give the column in both files",
                            batch.at(r),
                            key_text(&batch.rows, &key_idx, key, r),
                            schema.field(c).name(),
                            batch.at(old)
                        ));
                    }
                }
                patch[o] = patch[o] && !delete[o];
                winners[o] = r as u32;
                delete[o] = del;
                superseded += 1;
            }
        }
    }
    Ok(Resolved {
        winners,
        delete,
        patch,
        map,
        converter,
        key_idx,
        superseded,
    })
}

/// What an upsert (or replacement) wrote, not yet committed.
#[derive(Debug, Default)]
pub struct KeyedWrite {
    /// Live files to mark deleted.
    pub removed: HashSet<String>,
    pub added: Vec<DataFile>,
    /// Files whose key bounds may hold a key of the batch (their keys were read).
    pub files_probed: usize,
    pub files_rewritten: usize,
    /// Existing rows removed (replaced, deleted, or in a replaced partition).
    pub rows_removed: u64,
    /// Keys of the batch that matched existing rows and were updated.
    pub updated: u64,
    pub inserted: u64,
    /// CDC deletes that removed existing rows.
    pub deleted: u64,
    /// Rows written.
    pub rows_written: u64,
}

/// The files of `files` whose first key column's bounds hold a key of the batch.
fn candidates<'a>(
    md: &TableMetadata,
    batch: &Batch,
    res: &Resolved,
    files: &'a [LiveFile],
) -> Result<Vec<&'a LiveFile>, String> {
    let k0 = res.key_idx[0];
    let field = batch.rows.schema().field(k0).clone();
    let ty = field.data_type().clone();
    let iceberg_field = md
        .current_schema()
        .field_by_name(field.name())
        .ok_or_else(|| format!("no column `{}`", field.name()))?;
    let Some(prim) = iceberg_field.field_type.as_primitive_type() else {
        return Ok(files.iter().collect());
    };
    let conv = RowConverter::new(vec![SortField::new(ty.clone())]).map_err(arrow_err)?;
    let idx = UInt32Array::from(res.winners.clone());
    let keys =
        arrow_select::take::take(batch.rows.column(k0).as_ref(), &idx, None).map_err(arrow_err)?;
    let encoded = conv.convert_columns(&[keys]).map_err(arrow_err)?;
    let mut sorted: Vec<&[u8]> = (0..encoded.num_rows())
        .map(|i| encoded.row(i).data())
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    let encode = |v: datafusion::common::ScalarValue| -> Option<Vec<u8>> {
        let v = v.cast_to(&ty).ok()?;
        let a = v.to_array_of_size(1).ok()?;
        let rows = conv.convert_columns(&[a]).ok()?;
        Some(rows.row(0).data().to_vec())
    };
    let mut out = Vec::new();
    for f in files {
        let lo = mutate::file_bound(f, iceberg_field.id, prim, false).and_then(encode);
        let hi = mutate::file_bound(f, iceberg_field.id, prim, true).and_then(encode);
        let hit = match (lo, hi) {
            (Some(lo), Some(hi)) => {
                let i = sorted.partition_point(|k| *k < lo.as_slice());
                i < sorted.len() && sorted[i] <= hi.as_slice()
            }
            _ => true,
        };
        if hit {
            out.push(f);
        }
    }
    Ok(out)
}

/// The key columns of a file's batch, as the batch's types.
fn key_columns(
    b: &RecordBatch,
    names: &[String],
    schema: &SchemaRef,
) -> Result<Vec<ArrayRef>, String> {
    names
        .iter()
        .map(|n| {
            let c = b
                .column_by_name(n)
                .ok_or_else(|| format!("no key column `{n}` in a data file"))?;
            let want = schema.field_with_name(n).map_err(arrow_err)?.data_type();
            if c.data_type() == want {
                Ok(c.clone())
            } else {
                arrow_cast::cast(c, want).map_err(arrow_err)
            }
        })
        .collect()
}

/// Winner ordinals of the batch's keys found in each of `files` (reading only the key
/// columns), one entry per matching row.
async fn probe(
    file_io: &FileIO,
    md: &TableMetadata,
    files: &[&LiveFile],
    res: &Arc<Resolved>,
    names: &[String],
) -> Result<Vec<Vec<u32>>, String> {
    let schema = mutate::arrow_schema(md).map_err(arrow_err)?;
    let ids = mutate::field_ids(md, names);
    let md = Arc::new(md.clone());
    let names: Arc<Vec<String>> = Arc::new(names.to_vec());
    let owned: Vec<LiveFile> = files.iter().map(|f| (*f).clone()).collect();
    crate::engine::run(owned, |f| {
        let (file_io, md, res, names, schema, ids) = (
            file_io.clone(),
            md.clone(),
            res.clone(),
            names.clone(),
            schema.clone(),
            ids.clone(),
        );
        async move {
            let mut batches = mutate::read_file(&file_io, &md, &f, ids)
                .map_err(|e| format!("{}: {e}", f.path()))?;
            let mut hits = Vec::new();
            while let Some(b) = batches.next().await {
                let b = b.map_err(|e| format!("{}: {e}", f.path()))?;
                hits.extend(res.lookup(&b, &names, &schema)?.into_iter().flatten());
            }
            Ok::<_, String>(hits)
        }
    })
    .await
}

/// Keys of the batch that match existing rows (`plan --estimate`).
pub async fn matching_keys(
    file_io: &FileIO,
    md: &TableMetadata,
    batch: &Batch,
    key: &[String],
    files: &SnapshotFiles,
) -> Result<u64, String> {
    let res = Arc::new(resolve(batch, key, OnDuplicateKey::Last)?);
    let cands = candidates(md, batch, &res, &files.files)?;
    let hits = probe(file_io, md, &cands, &res, key).await?;
    let set: HashSet<u32> = hits.into_iter().flatten().collect();
    Ok(set.len() as u64)
}

/// A rewritten file: its replacement files, and the replaced rows a winner takes
/// lacking columns from (with the winners' ordinals).
struct Rewritten {
    new_files: Vec<DataFile>,
    removed: u64,
    patches: Option<(RecordBatch, Vec<u32>)>,
}

/// Upserts the resolved batch into the table's live `files`.
pub async fn upsert(
    file_io: &FileIO,
    md: &TableMetadata,
    batch: &Batch,
    res: Resolved,
    key: &[String],
    files: &SnapshotFiles,
) -> Result<KeyedWrite, String> {
    let res = Arc::new(res);
    let cands = candidates(md, batch, &res, &files.files)?;
    let hits = probe(file_io, md, &cands, &res, key).await?;
    let mut matched = vec![false; res.winners.len()];
    for h in hits.iter().flatten() {
        matched[*h as usize] = true;
    }
    let to_rewrite: Vec<LiveFile> = cands
        .iter()
        .zip(&hits)
        .filter(|(_, h)| !h.is_empty())
        .map(|(f, _)| (*f).clone())
        .collect();
    // Do any winners lack columns (that an existing row of theirs would fill)?
    let lacking = |w: usize| {
        let m = batch.mask(res.winners[w] as usize);
        m.iter().any(|p| !p)
    };
    let needs_patch =
        (0..res.winners.len()).any(|w| matched[w] && !res.delete[w] && res.patch[w] && lacking(w));
    let schema = mutate::arrow_schema(md).map_err(arrow_err)?;
    let prefix = uuid::Uuid::new_v4().to_string();
    let md_arc = Arc::new(md.clone());
    let names: Arc<Vec<String>> = Arc::new(key.to_vec());
    let wanted: Arc<Vec<bool>> = Arc::new(
        (0..res.winners.len())
            .map(|w| needs_patch && !res.delete[w] && res.patch[w] && lacking(w))
            .collect(),
    );
    let rewritten = crate::engine::run(to_rewrite.iter().cloned().enumerate(), |(i, f)| {
        let prefix = format!("{prefix}-u{i}");
        let (file_io, md, res, names, schema, wanted) = (
            file_io.clone(),
            md_arc.clone(),
            res.clone(),
            names.clone(),
            schema.clone(),
            wanted.clone(),
        );
        async move {
            let mut batches = mutate::read_file(&file_io, &md, &f, mutate::field_ids(&md, &[]))
                .map_err(|e| format!("{}: {e}", f.path()))?;
            let size = usize::try_from(f.data_file().file_size_in_bytes()).unwrap_or(usize::MAX);
            let target = super::target_file_size(&md).max(size.saturating_add(size / 4));
            let mut writer: Option<TableWriter> = None;
            let mut removed = 0u64;
            let mut patch_rows: Vec<RecordBatch> = Vec::new();
            let mut patch_of: Vec<u32> = Vec::new();
            while let Some(b) = batches.next().await {
                let b = b.map_err(|e| format!("{}: {e}", f.path()))?;
                let b = mutate::conform(&b, &schema).map_err(|e| format!("{}: {e}", f.path()))?;
                let mut keep = Vec::with_capacity(b.num_rows());
                let mut take = Vec::new();
                for (r, hit) in res.lookup(&b, &names, &schema)?.into_iter().enumerate() {
                    match hit {
                        Some(o) => {
                            keep.push(false);
                            if wanted[o as usize] {
                                take.push(r as u32);
                                patch_of.push(o);
                            }
                        }
                        None => keep.push(true),
                    }
                }
                let gone = keep.iter().filter(|k| !**k).count();
                removed += gone as u64;
                if !take.is_empty() {
                    let idx = UInt32Array::from(take);
                    patch_rows
                        .push(arrow_select::take::take_record_batch(&b, &idx).map_err(arrow_err)?);
                }
                let kept = if gone == 0 {
                    b
                } else {
                    arrow_select::filter::filter_record_batch(
                        &b,
                        &arrow_array::BooleanArray::from(keep),
                    )
                    .map_err(arrow_err)?
                };
                if kept.num_rows() > 0 {
                    if writer.is_none() {
                        writer = Some(
                            TableWriter::with_target_size(&file_io, &md, &prefix, target)
                                .await
                                .map_err(arrow_err)?,
                        );
                    }
                    if let Some(w) = writer.as_mut() {
                        w.write(kept).await.map_err(arrow_err)?;
                    }
                }
            }
            let new_files = match writer {
                Some(w) => w.close().await.map_err(arrow_err)?,
                None => Vec::new(),
            };
            let patches = if patch_rows.is_empty() {
                None
            } else {
                Some((
                    arrow_select::concat::concat_batches(&schema, &patch_rows)
                        .map_err(arrow_err)?,
                    patch_of,
                ))
            };
            Ok::<_, String>(Rewritten {
                new_files,
                removed,
                patches,
            })
        }
    })
    .await?;
    let mut out = KeyedWrite {
        files_probed: cands.len(),
        files_rewritten: to_rewrite.len(),
        removed: to_rewrite.iter().map(|f| f.path().to_string()).collect(),
        ..Default::default()
    };
    let mut patches = Vec::new();
    let mut patch_of = Vec::new();
    for r in rewritten {
        out.added.extend(r.new_files);
        out.rows_removed += r.removed;
        if let Some((b, o)) = r.patches {
            patches.push(b);
            patch_of.extend(o);
        }
    }
    for (w, m) in matched.iter().enumerate() {
        match (*m, res.delete[w]) {
            (true, false) => out.updated += 1,
            (true, true) => out.deleted += 1,
            (false, false) => out.inserted += 1,
            (false, true) => {}
        }
    }
    // The rows to write: the winners that are not deletes.
    let upserts: Vec<u32> = (0..res.winners.len())
        .filter(|w| !res.delete[*w])
        .map(|w| w as u32)
        .collect();
    let idx = UInt32Array::from(
        upserts
            .iter()
            .map(|w| res.winners[*w as usize])
            .collect::<Vec<_>>(),
    );
    let mut rows = arrow_select::take::take_record_batch(&batch.rows, &idx).map_err(arrow_err)?;
    if !patches.is_empty() {
        rows = patch_lacking(batch, &res, &rows, &upserts, &schema, &patches, &patch_of)?;
    }
    check_required(md, &rows, |j| {
        batch.at(res.winners[upserts[j] as usize] as usize)
    })?;
    out.rows_written = rows.num_rows() as u64;
    out.added.extend(write_rows(file_io, md, rows).await?);
    Ok(out)
}

/// Every required column of the table is set in `rows` (a CDC batch reads them as
/// optional, as a delete carries only its key); `at` names a row's place.
fn check_required(
    md: &TableMetadata,
    rows: &RecordBatch,
    at: impl Fn(usize) -> String,
) -> Result<(), String> {
    for (c, f) in md.current_schema().as_struct().fields().iter().enumerate() {
        let col = rows.column(c);
        if f.required && col.null_count() > 0 {
            let r = (0..col.len()).find(|r| col.is_null(*r)).unwrap_or(0);
            return Err(format!(
                "{}: required column `{}` is null (and the row is not a delete)",
                at(r),
                f.name
            ));
        }
    }
    Ok(())
}

/// `rows` (the winners `upserts`, in order) with each column its file lacks taken
/// from the row it replaces.
fn patch_lacking(
    batch: &Batch,
    res: &Resolved,
    rows: &RecordBatch,
    upserts: &[u32],
    schema: &SchemaRef,
    patches: &[RecordBatch],
    patch_of: &[u32],
) -> Result<RecordBatch, String> {
    let patch = arrow_select::concat::concat_batches(schema, patches).map_err(arrow_err)?;
    let mut row_of: HashMap<u32, usize> = HashMap::new();
    for (p, w) in patch_of.iter().enumerate() {
        row_of.insert(*w, p);
    }
    let mut columns = Vec::with_capacity(rows.num_columns());
    for c in 0..rows.num_columns() {
        let mut picks = Vec::with_capacity(rows.num_rows());
        let mut any = false;
        for (j, w) in upserts.iter().enumerate() {
            let mask = batch.mask(res.winners[*w as usize] as usize);
            match row_of.get(w) {
                Some(p) if !mask[c] => {
                    picks.push((1, *p));
                    any = true;
                }
                _ => picks.push((0, j)),
            }
        }
        columns.push(if any {
            arrow_select::interleave::interleave(
                &[rows.column(c).as_ref(), patch.column(c).as_ref()],
                &picks,
            )
            .map_err(arrow_err)?
        } else {
            rows.column(c).clone()
        });
    }
    RecordBatch::try_new(rows.schema(), columns).map_err(arrow_err)
}

/// Writes `rows` as data files of the table, on all cores.
pub async fn write_rows(
    file_io: &FileIO,
    md: &TableMetadata,
    rows: RecordBatch,
) -> Result<Vec<DataFile>, String> {
    let n = rows.num_rows();
    if n == 0 {
        return Ok(Vec::new());
    }
    let rows = RecordBatch::try_new(
        mutate::arrow_schema(md).map_err(arrow_err)?,
        rows.columns().to_vec(),
    )
    .map_err(arrow_err)?;
    let parts = workers().min(n.div_ceil(super::BATCH_ROWS)).max(1);
    let per = n.div_ceil(parts);
    let prefix = uuid::Uuid::new_v4().to_string();
    let md = Arc::new(md.clone());
    let slices: Vec<RecordBatch> = (0..parts)
        .map(|p| rows.slice(p * per, per.min(n - (p * per).min(n))))
        .filter(|s| s.num_rows() > 0)
        .collect();
    let files = crate::engine::run(slices.into_iter().enumerate(), |(i, part)| {
        let (file_io, md, prefix) = (file_io.clone(), md.clone(), format!("{prefix}-k{i}"));
        async move {
            let mut w = TableWriter::new(&file_io, &md, &prefix)
                .await
                .map_err(arrow_err)?;
            let mut off = 0;
            while off < part.num_rows() {
                let len = super::BATCH_ROWS.min(part.num_rows() - off);
                w.write(part.slice(off, len)).await.map_err(arrow_err)?;
                off += len;
            }
            w.close().await.map_err(arrow_err)
        }
    })
    .await?;
    Ok(files.into_iter().flatten().collect())
}

/// Dynamic partition overwrite: the batch is written; the live files of every
/// partition it holds are removed (all of them in an unpartitioned table).
pub async fn replace_partitions(
    file_io: &FileIO,
    md: &TableMetadata,
    batch: &Batch,
    files: &SnapshotFiles,
) -> Result<KeyedWrite, String> {
    refuse_empty(batch, "replacePartitions")?;
    let added = write_rows(file_io, md, batch.rows.clone()).await?;
    let spec = md.default_partition_spec();
    let spec_id = md.default_partition_spec_id();
    let removed: Vec<&LiveFile> = if batch.num_rows() == 0 {
        // No rows, no partitions: nothing is replaced (as Spark's dynamic overwrite).
        Vec::new()
    } else if spec.is_unpartitioned() {
        files.files.iter().collect()
    } else {
        if let Some(f) = files.files.iter().find(|f| f.spec.spec_id() != spec_id) {
            return Err(format!(
                "live file {} was written with partition spec {}, not the current spec {spec_id}: which partition of the batch its rows belong to is not known; rewrite the table into the current spec first (a compaction), or use `mode: replace`",
                f.path(),
                f.spec.spec_id()
            ));
        }
        let parts: HashSet<Vec<Option<Literal>>> = added
            .iter()
            .map(|d| partition_values(d.partition()))
            .collect();
        files
            .files
            .iter()
            .filter(|f| parts.contains(&partition_values(f.data_file().partition())))
            .collect()
    };
    Ok(KeyedWrite {
        removed: removed.iter().map(|f| f.path().to_string()).collect(),
        rows_removed: removed.iter().map(|f| f.entry.record_count()).sum(),
        rows_written: batch.num_rows() as u64,
        inserted: batch.num_rows() as u64,
        added,
        ..Default::default()
    })
}

/// A partition's values, comparable across type promotions (a file written before
/// `int → long` holds an `Int`, one after it a `Long`, of the same value).
fn partition_values(p: &iceberg::spec::Struct) -> Vec<Option<Literal>> {
    p.iter()
        .map(|v| {
            v.map(|l| match l {
                Literal::Primitive(PrimitiveLiteral::Int(i)) => Literal::long(*i),
                Literal::Primitive(PrimitiveLiteral::Float(f)) => Literal::double(f.0),
                other => other.clone(),
            })
        })
        .collect()
}

/// A batch whose every row was rejected (`onError: skip`) replaces nothing.
fn refuse_empty(batch: &Batch, mode: &str) -> Result<(), String> {
    if batch.num_rows() == 0 && batch.rejected > 0 {
        return Err(format!(
            "every row of the batch ({}) was rejected: `{mode}` would replace rows with none",
            batch.rejected
        ));
    }
    Ok(())
}

/// The batch becomes the table: every live file is removed.
pub async fn replace(
    file_io: &FileIO,
    md: &TableMetadata,
    batch: &Batch,
    files: &SnapshotFiles,
) -> Result<KeyedWrite, String> {
    refuse_empty(batch, "replace")?;
    let added = write_rows(file_io, md, batch.rows.clone()).await?;
    Ok(KeyedWrite {
        removed: files.files.iter().map(|f| f.path().to_string()).collect(),
        rows_removed: files.records(),
        rows_written: batch.num_rows() as u64,
        inserted: batch.num_rows() as u64,
        added,
        ..Default::default()
    })
}
