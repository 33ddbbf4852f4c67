//! Reading one source file into batches of the table's Arrow schema.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::{new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef as ArrowSchemaRef, TimeUnit};
use iceberg::spec::TableMetadata;

use super::{FileToIngest, IngestError, RowError, BATCH_ROWS};
use crate::manifest::types::{OnError, SourceFormat, SourceSpec};

/// How source columns map onto the table's top-level columns.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Source column names, in source order.
    pub source_names: Vec<String>,
    /// For each source column: the table column it fills.
    pub targets: Vec<Option<usize>>,
    /// The table's Arrow schema (with field ids).
    pub table: ArrowSchemaRef,
    /// For each table column: the default text, if any.
    pub defaults: Vec<Option<String>>,
    /// For each table column: required.
    pub required: Vec<bool>,
}

impl Mapping {
    fn source_of(&self, table_col: usize) -> Option<usize> {
        self.targets.iter().position(|t| *t == Some(table_col))
    }
}

/// Builds the mapping of `names` (source columns) for `source`.
pub fn mapping(
    names: Vec<String>,
    source: &SourceSpec,
    md: &TableMetadata,
    file: &str,
) -> Result<Mapping, IngestError> {
    let schema = md.current_schema();
    let table =
        Arc::new(iceberg::arrow::schema_to_arrow_schema(schema).map_err(IngestError::Iceberg)?);
    let table_names: Vec<&str> = table.fields().iter().map(|f| f.name().as_str()).collect();
    let find = |name: &str| {
        table_names.iter().position(|t| {
            if source.case_insensitive {
                t.eq_ignore_ascii_case(name)
            } else {
                *t == name
            }
        })
    };
    let mut targets = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let target_name = source.columns.get(n).map(String::as_str).unwrap_or(n);
        let t = find(target_name);
        if t.is_none() && source.strict {
            return Err(RowError {
                file: file.to_string(),
                line: 1,
                column: i + 1,
                message: format!(
                    "source column `{n}` is not a column of the table (strict source)"
                ),
            }
            .into());
        }
        if let Some(t) = t {
            if targets.contains(&Some(t)) {
                return Err(RowError {
                    file: file.to_string(),
                    line: 1,
                    column: i + 1,
                    message: format!(
                        "source column `{n}` fills `{}` a second time",
                        table_names[t]
                    ),
                }
                .into());
            }
        }
        targets.push(t);
    }
    // Not one column in common: the wrong file, the wrong delimiter or a missing
    // `columns:` mapping, never rows to append as nulls.
    if !names.is_empty() && targets.iter().all(Option::is_none) {
        let shown: Vec<String> = names.iter().take(5).map(|n| format!("`{n}`")).collect();
        return Err(RowError {
            file: file.to_string(),
            line: 1,
            column: 1,
            message: format!(
                "no source column ({}{}) is a column of the table ({}): the wrong file, delimiter or `columns:` mapping?",
                shown.join(", "),
                if names.len() > 5 { ", …" } else { "" },
                table_names.join(", ")
            ),
        }
        .into());
    }
    let defaults = table_names
        .iter()
        .map(|t| {
            source
                .defaults
                .iter()
                .find(|(k, _)| {
                    if source.case_insensitive {
                        k.eq_ignore_ascii_case(t)
                    } else {
                        k == t
                    }
                })
                .map(|(_, v)| v.clone())
        })
        .collect();
    let required = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| f.required)
        .collect();
    Ok(Mapping {
        source_names: names,
        targets,
        table,
        defaults,
        required,
    })
}

/// Whether arrow-csv parses this type directly.
fn csv_native(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Boolean
            | DataType::Int32
            | DataType::Int64
            | DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(..)
            | DataType::Date32
            | DataType::Time64(TimeUnit::Microsecond)
            | DataType::Timestamp(..)
            | DataType::Utf8
            | DataType::LargeUtf8
    )
}

/// A piece of work for one worker.
pub enum Unit {
    CsvChunk {
        ctx: Arc<CsvFile>,
        start: u64,
        end: u64,
    },
    Whole {
        file: FileToIngest,
        source: Box<SourceSpec>,
        md: Box<TableMetadata>,
    },
}

pub struct CsvFile {
    path: String,
    location: PathBuf,
    mapping: Mapping,
    /// The schema arrow-csv parses into (source names, target types or Utf8).
    read_schema: ArrowSchemaRef,
    delimiter: u8,
    quote: u8,
    null_string: String,
    timestamp_format: Option<String>,
    on_error: OnError,
}

impl Unit {
    pub fn bytes(&self) -> u64 {
        match self {
            Unit::CsvChunk { start, end, .. } => end - start,
            Unit::Whole { file, .. } => file.file.size,
        }
    }

    pub fn read(self, rejects: &Rejects) -> Result<Vec<RecordBatch>, IngestError> {
        match self {
            Unit::CsvChunk { ctx, start, end } => read_csv_chunk(&ctx, start, end, rejects),
            Unit::Whole { file, source, md } => match file.format {
                SourceFormat::Json => read_json(&file, &source, &md, rejects),
                SourceFormat::Parquet => read_parquet(&file, &source, &md),
                SourceFormat::Csv => unreachable!("CSV is read in chunks"),
            },
        }
    }
}

fn file_err(path: &str, e: impl std::fmt::Display) -> IngestError {
    IngestError::File {
        file: path.to_string(),
        message: e.to_string(),
    }
}

/// Cuts a file into units: CSV into line-aligned chunks, others whole.
pub fn plan_units(
    f: &FileToIngest,
    source: &SourceSpec,
    md: &TableMetadata,
    chunk: usize,
) -> Result<Vec<Unit>, IngestError> {
    if f.format != SourceFormat::Csv {
        return Ok(vec![Unit::Whole {
            file: f.clone(),
            source: Box::new(source.clone()),
            md: Box::new(md.clone()),
        }]);
    }
    let path = &f.file.path;
    let delimiter = source.csv.delimiter.bytes().next().unwrap_or(b',');
    let quote = source.csv.quote.bytes().next().unwrap_or(b'"');
    let mut file =
        File::open(&f.file.location).map_err(|e| file_err(path, format!("cannot open: {e}")))?;
    let size = f.file.size;
    // Header.
    let mut reader = BufReader::new(&mut file);
    let mut first = Vec::new();
    reader
        .read_until(b'\n', &mut first)
        .map_err(|e| file_err(path, e))?;
    drop(reader);
    let (names, data_start) = if source.csv.header {
        let line = String::from_utf8_lossy(&first);
        let line = line.trim_end_matches(['\n', '\r']);
        let names: Vec<String> = split_header(line, delimiter as char, quote as char);
        (names, first.len() as u64)
    } else {
        let names = md
            .current_schema()
            .as_struct()
            .fields()
            .iter()
            .map(|f| f.name.clone())
            .collect();
        (names, 0)
    };
    let mapping = mapping(names, source, md, path)?;
    let read_fields: Vec<Field> = mapping
        .source_names
        .iter()
        .zip(&mapping.targets)
        .map(|(n, t)| {
            let ty = t
                .map(|t| mapping.table.field(t).data_type().clone())
                .filter(|ty| {
                    csv_native(ty)
                        && !(matches!(ty, DataType::Timestamp(..))
                            && source.csv.timestamp_format.is_some())
                })
                .unwrap_or(DataType::Utf8);
            Field::new(n, ty, true)
        })
        .collect();
    let ctx = Arc::new(CsvFile {
        path: path.clone(),
        location: f.file.location.clone(),
        mapping,
        read_schema: Arc::new(ArrowSchema::new(read_fields)),
        delimiter,
        quote,
        null_string: source.csv.null_string.clone(),
        timestamp_format: source.csv.timestamp_format.clone(),
        on_error: source.on_error,
    });
    // Line-aligned chunks.
    let mut units = Vec::new();
    let mut start = data_start;
    let mut buf = [0u8; 64 << 10];
    while start < size {
        let mut end = (start + chunk as u64).min(size);
        if end < size {
            file.seek(SeekFrom::Start(end))
                .map_err(|e| file_err(path, e))?;
            'scan: loop {
                let n = file.read(&mut buf).map_err(|e| file_err(path, e))?;
                if n == 0 {
                    end = size;
                    break;
                }
                if let Some(i) = buf[..n].iter().position(|b| *b == b'\n') {
                    end += i as u64 + 1;
                    break 'scan;
                }
                end += n as u64;
            }
        }
        units.push(Unit::CsvChunk {
            ctx: ctx.clone(),
            start,
            end,
        });
        start = end;
    }
    Ok(units)
}

fn split_header(line: &str, delimiter: char, quote: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        if c == quote {
            quoted = !quoted;
        } else if c == delimiter && !quoted {
            out.push(std::mem::take(&mut cur).trim().to_string());
        } else {
            cur.push(c);
        }
    }
    out.push(cur.trim().to_string());
    out
}

fn read_range(ctx: &CsvFile, start: u64, end: u64) -> Result<Vec<u8>, IngestError> {
    let mut f = File::open(&ctx.location).map_err(|e| file_err(&ctx.path, e))?;
    f.seek(SeekFrom::Start(start))
        .map_err(|e| file_err(&ctx.path, e))?;
    let mut data = vec![0u8; (end - start) as usize];
    f.read_exact(&mut data)
        .map_err(|e| file_err(&ctx.path, e))?;
    Ok(data)
}

/// 1-based line number of byte `offset` in the file.
fn line_at(ctx: &CsvFile, offset: u64) -> Result<u64, IngestError> {
    let mut f = File::open(&ctx.location).map_err(|e| file_err(&ctx.path, e))?;
    let mut left = offset;
    let mut lines = 1u64;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f
            .read(&mut buf[..want])
            .map_err(|e| file_err(&ctx.path, e))?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        left -= n as u64;
    }
    Ok(lines)
}

fn csv_reader<'a>(
    ctx: &CsvFile,
    schema: ArrowSchemaRef,
    data: &'a [u8],
) -> Result<arrow_csv::Reader<&'a [u8]>, arrow_schema::ArrowError> {
    let mut b = arrow_csv::ReaderBuilder::new(schema)
        .with_header(false)
        .with_delimiter(ctx.delimiter)
        .with_quote(ctx.quote)
        .with_batch_size(BATCH_ROWS);
    if !ctx.null_string.is_empty() {
        if let Ok(re) = regex::Regex::new(&format!("^{}$", regex::escape(&ctx.null_string))) {
            b = b.with_null_regex(re);
        }
    }
    b.build(data)
}

fn read_csv_chunk(
    ctx: &CsvFile,
    start: u64,
    end: u64,
    rejects: &Rejects,
) -> Result<Vec<RecordBatch>, IngestError> {
    let data = read_range(ctx, start, end)?;
    // Fast path: parse straight into the table's types.
    let fast = (|| -> Result<Vec<RecordBatch>, ()> {
        let reader = csv_reader(ctx, ctx.read_schema.clone(), &data).map_err(|_| ())?;
        let mut out = Vec::new();
        for b in reader {
            let b = b.map_err(|_| ())?;
            out.push(to_table(&ctx.mapping, &b, ctx.timestamp_format.as_deref()).map_err(|_| ())?);
        }
        Ok(out)
    })();
    if let Ok(batches) = fast {
        return Ok(batches);
    }
    slow_csv_chunk(ctx, start, &data, rejects)
}

/// Parses a chunk as text and casts column by column: finds every bad value's line
/// and column; fails on the first or skips the bad rows into the rejects file.
fn slow_csv_chunk(
    ctx: &CsvFile,
    start: u64,
    data: &[u8],
    rejects: &Rejects,
) -> Result<Vec<RecordBatch>, IngestError> {
    let first_line = line_at(ctx, start)?;
    let text_schema = Arc::new(ArrowSchema::new(
        ctx.read_schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    let reader = csv_reader(ctx, text_schema, data).map_err(|e| file_err(&ctx.path, e))?;
    let mut out = Vec::new();
    let mut row0 = 0u64;
    for b in reader {
        let b = b.map_err(|e| {
            // arrow-csv counts lines from the start of the chunk.
            let msg = e.to_string();
            let local: Option<u64> = msg
                .split("for line ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok());
            match local {
                Some(l) => IngestError::Row(RowError {
                    file: ctx.path.clone(),
                    line: first_line + l - 1,
                    column: 1,
                    message: msg.replace(&format!("for line {l}"), "in this line"),
                }),
                None => file_err(&ctx.path, msg),
            }
        })?;
        let typed = cast_text(
            &ctx.mapping,
            &b,
            &ctx.read_schema,
            ctx.timestamp_format.as_deref(),
        );
        let mut bad: Vec<Option<(usize, String)>> = vec![None; b.num_rows()];
        let mut columns = Vec::new();
        for (j, (text, typed)) in b.columns().iter().zip(typed).enumerate() {
            let text = text.as_any().downcast_ref::<StringArray>().expect("utf8");
            let target = ctx.read_schema.field(j).data_type().clone();
            for (r, slot) in bad.iter_mut().enumerate() {
                if slot.is_none() && text.is_valid(r) && typed.is_null(r) {
                    *slot = Some((
                        j,
                        format!(
                            "value {:?} of column `{}` is not a valid {}",
                            text.value(r),
                            ctx.read_schema.field(j).name(),
                            type_name(&target)
                        ),
                    ));
                }
            }
            columns.push(typed);
        }
        let typed_batch = RecordBatch::try_new(ctx.read_schema.clone(), columns)
            .map_err(|e| file_err(&ctx.path, e))?;
        // Required columns and the table conversion, row by row only where they fail.
        if let Err((r, j, msg)) =
            to_table(&ctx.mapping, &typed_batch, ctx.timestamp_format.as_deref())
        {
            if bad[r].is_none() {
                bad[r] = Some((j, msg));
            }
            // Mark every row with a null in a required column.
            for (t, req) in ctx.mapping.required.iter().enumerate() {
                if !*req || ctx.mapping.defaults[t].is_some() {
                    continue;
                }
                if let Some(s) = ctx.mapping.source_of(t) {
                    let col = typed_batch.column(s);
                    for (r, slot) in bad.iter_mut().enumerate() {
                        if slot.is_none() && col.is_null(r) {
                            *slot = Some((
                                s,
                                format!(
                                    "required column `{}` is null",
                                    ctx.mapping.table.field(t).name()
                                ),
                            ));
                        }
                    }
                }
            }
        }
        for (r, slot) in bad.iter().enumerate() {
            if let Some((j, msg)) = slot {
                let line = first_line + row0 + r as u64;
                if ctx.on_error == OnError::Fail {
                    return Err(RowError {
                        file: ctx.path.clone(),
                        line,
                        column: j + 1,
                        message: msg.clone(),
                    }
                    .into());
                }
                let raw = lines
                    .get((row0 + r as u64) as usize)
                    .copied()
                    .unwrap_or_default();
                rejects.add(&ctx.path, line, j + 1, msg, raw);
            }
        }
        let keep: BooleanArray = bad.iter().map(|b| Some(b.is_none())).collect();
        let kept = arrow_select::filter::filter_record_batch(&typed_batch, &keep)
            .map_err(|e| file_err(&ctx.path, e))?;
        if kept.num_rows() > 0 {
            let t = to_table(&ctx.mapping, &kept, ctx.timestamp_format.as_deref())
                .map_err(|(_, _, m)| file_err(&ctx.path, m))?;
            out.push(t);
        }
        row0 += b.num_rows() as u64;
    }
    Ok(out)
}

fn type_name(t: &DataType) -> String {
    match t {
        DataType::Int32 => "int".into(),
        DataType::Int64 => "long".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Decimal128(p, s) => format!("decimal({p}, {s})"),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Time64(_) => "time".into(),
        other => other.to_string(),
    }
}

/// Casts text columns to the read schema's types; failures become nulls.
fn cast_text(
    m: &Mapping,
    b: &RecordBatch,
    read: &ArrowSchema,
    ts_format: Option<&str>,
) -> Vec<ArrayRef> {
    let _ = m;
    b.columns()
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let target = read.field(j).data_type();
            if target == &DataType::Utf8 {
                return c.clone();
            }
            let _ = ts_format;
            arrow_cast::cast::cast_with_options(
                c,
                target,
                &arrow_cast::CastOptions {
                    safe: true,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|_| new_null_array(target, c.len()))
        })
        .collect()
}

/// Converts a batch of source columns into the table's schema: mapped columns (cast
/// when the type differs), defaults, nulls; checks required columns. `Err((row,
/// source column, message))` names the first row that does not fit.
pub fn to_table(
    m: &Mapping,
    b: &RecordBatch,
    ts_format: Option<&str>,
) -> Result<RecordBatch, (usize, usize, String)> {
    let n = b.num_rows();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(m.table.fields().len());
    for (t, field) in m.table.fields().iter().enumerate() {
        let target = field.data_type();
        let col = match m.source_of(t) {
            Some(s) => {
                let c = b.column(s);
                if c.data_type() == target {
                    c.clone()
                } else {
                    convert(c, target, ts_format).map_err(|msg| {
                        let row = (0..n).find(|r| c.is_valid(*r)).unwrap_or(0);
                        (row, s, format!("column `{}`: {msg}", field.name()))
                    })?
                }
            }
            None => match &m.defaults[t] {
                Some(text) => {
                    let s: ArrayRef = Arc::new(StringArray::from(vec![text.as_str(); n]));
                    convert(&s, target, ts_format)
                        .map_err(|msg| (0, 0, format!("default for `{}`: {msg}", field.name())))?
                }
                None => new_null_array(target, n),
            },
        };
        if m.required[t] && col.null_count() > 0 {
            let row = (0..n).find(|r| col.is_null(*r)).unwrap_or(0);
            let s = m.source_of(t).unwrap_or(0);
            let why = if m.source_of(t).is_some() {
                format!("required column `{}` is null", field.name())
            } else {
                format!(
                    "required column `{}` is not in the source and has no default",
                    field.name()
                )
            };
            return Err((row, s, why));
        }
        cols.push(col);
    }
    RecordBatch::try_new(m.table.clone(), cols).map_err(|e| (0, 0, e.to_string()))
}

/// Converts an array to a table type: timestamps with a chrono format, UUID text,
/// binary from text, anything else through arrow's cast (strict: a value that does
/// not convert is an error, not a null).
fn convert(c: &ArrayRef, target: &DataType, ts_format: Option<&str>) -> Result<ArrayRef, String> {
    if let (Some(fmt), DataType::Timestamp(TimeUnit::Microsecond, tz), Some(text)) =
        (ts_format, target, c.as_any().downcast_ref::<StringArray>())
    {
        let mut out = Vec::with_capacity(text.len());
        for v in text.iter() {
            out.push(match v {
                None => None,
                Some(s) => Some(parse_ts(s, fmt).ok_or_else(|| {
                    format!("value {s:?} does not match timestamp format {fmt:?}")
                })?),
            });
        }
        let arr = arrow_array::TimestampMicrosecondArray::from(out).with_timezone_opt(tz.clone());
        return Ok(Arc::new(arr));
    }
    if let (DataType::FixedSizeBinary(16), Some(text)) =
        (target, c.as_any().downcast_ref::<StringArray>())
    {
        let mut b = arrow_array::builder::FixedSizeBinaryBuilder::with_capacity(text.len(), 16);
        for v in text.iter() {
            match v {
                None => b.append_null(),
                Some(s) => {
                    let u = uuid::Uuid::parse_str(s.trim())
                        .map_err(|_| format!("value {s:?} is not a UUID"))?;
                    b.append_value(u.as_bytes()).map_err(|e| e.to_string())?;
                }
            }
        }
        return Ok(Arc::new(b.finish()));
    }
    arrow_cast::cast::cast_with_options(
        c,
        target,
        &arrow_cast::CastOptions {
            safe: false,
            ..Default::default()
        },
    )
    .map_err(|e| e.to_string())
}

fn parse_ts(s: &str, fmt: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDateTime};
    if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
        return Some(dt.timestamp_micros());
    }
    NaiveDateTime::parse_from_str(s, fmt)
        .ok()
        .map(|dt| dt.and_utc().timestamp_micros())
}

/// Newline-delimited JSON: decoded in blocks of lines; a block that fails is decoded
/// line by line to name the bad line.
fn read_json(
    f: &FileToIngest,
    source: &SourceSpec,
    md: &TableMetadata,
    rejects: &Rejects,
) -> Result<Vec<RecordBatch>, IngestError> {
    let path = &f.file.path;
    let table = Arc::new(iceberg::arrow::schema_to_arrow_schema(md.current_schema())?);
    // Read schema: each table column under the key that fills it.
    let key_for = |name: &str| -> String {
        source
            .columns
            .iter()
            .find(|(_, to)| to.as_str() == name)
            .map(|(from, _)| from.clone())
            .unwrap_or_else(|| name.to_string())
    };
    let keys: Vec<String> = table.fields().iter().map(|f| key_for(f.name())).collect();
    let read_schema = Arc::new(ArrowSchema::new(
        table
            .fields()
            .iter()
            .zip(&keys)
            .map(|(f, k)| {
                let read = f.as_ref().clone().with_name(k).with_nullable(true);
                // A uuid is read as text and parsed by `convert`, so the usual dashed
                // form is accepted (arrow's JSON reader takes only 32 hex digits).
                let uuid = md
                    .current_schema()
                    .field_by_name(f.name())
                    .is_some_and(|t| {
                        *t.field_type
                            == iceberg::spec::Type::Primitive(iceberg::spec::PrimitiveType::Uuid)
                    });
                if uuid {
                    read.with_data_type(DataType::Utf8)
                } else {
                    read
                }
            })
            .collect::<Vec<_>>(),
    ));
    let m = mapping(keys.clone(), source, md, path)?;
    let file = File::open(&f.file.location).map_err(|e| file_err(path, e))?;
    let mut lines = BufReader::new(file).lines();
    let mut out = Vec::new();
    let mut line_no = 0u64;
    loop {
        let mut block: Vec<(u64, String)> = Vec::with_capacity(8192);
        for l in lines.by_ref() {
            let l = l.map_err(|e| file_err(path, e))?;
            line_no += 1;
            if !l.trim().is_empty() {
                block.push((line_no, l));
            }
            if block.len() == 8192 {
                break;
            }
        }
        if block.is_empty() {
            break;
        }
        let decode = |rows: &[(u64, String)]| -> Result<Option<RecordBatch>, String> {
            let mut d = arrow_json::ReaderBuilder::new(read_schema.clone())
                .with_strict_mode(source.strict)
                .with_batch_size(rows.len().max(1))
                .build_decoder()
                .map_err(|e| e.to_string())?;
            for (_, l) in rows {
                d.decode(l.as_bytes()).map_err(|e| e.to_string())?;
                d.decode(b"\n").map_err(|e| e.to_string())?;
            }
            d.flush().map_err(|e| e.to_string())
        };
        let check = |b: RecordBatch| to_table(&m, &b, None);
        match decode(&block).map(|b| b.map(check)) {
            Ok(None) => {}
            Ok(Some(Ok(t))) => out.push(t),
            _ => {
                for row in &block {
                    let one = decode(std::slice::from_ref(row));
                    let err = match one {
                        Err(e) => Some((1, e)),
                        Ok(Some(b)) => match check(b) {
                            Ok(t) => {
                                out.push(t);
                                None
                            }
                            Err((_, j, msg)) => Some((j + 1, msg)),
                        },
                        Ok(None) => None,
                    };
                    if let Some((col, msg)) = err {
                        if source.on_error == OnError::Fail {
                            return Err(RowError {
                                file: path.clone(),
                                line: row.0,
                                column: col,
                                message: msg,
                            }
                            .into());
                        }
                        rejects.add(path, row.0, col, &msg, row.1.as_bytes());
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Parquet: columns matched by name, cast to the table's types.
fn read_parquet(
    f: &FileToIngest,
    source: &SourceSpec,
    md: &TableMetadata,
) -> Result<Vec<RecordBatch>, IngestError> {
    let path = &f.file.path;
    let file = File::open(&f.file.location).map_err(|e| file_err(path, e))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| file_err(path, e))?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| file_err(path, e))?;
    let names: Vec<String> = arrow_array::RecordBatchReader::schema(&reader)
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let m = mapping(names, source, md, path)?;
    let mut out = Vec::new();
    let mut row0 = 0u64;
    for b in reader {
        let b = b.map_err(|e| file_err(path, e))?;
        let t = to_table(&m, &b, None).map_err(|(r, j, msg)| {
            IngestError::Row(RowError {
                file: path.clone(),
                line: row0 + r as u64 + 1,
                column: j + 1,
                message: msg,
            })
        })?;
        row0 += b.num_rows() as u64;
        out.push(t);
    }
    Ok(out)
}

/// The rejects file of `onError: skip`: one CSV line per rejected row.
pub struct Rejects {
    dir: PathBuf,
    enabled: bool,
    file: Mutex<Option<(PathBuf, File)>>,
    count: AtomicU64,
}

impl Rejects {
    pub fn new(dir: &Path, enabled: bool) -> Rejects {
        Rejects {
            dir: dir.to_path_buf(),
            enabled,
            file: Mutex::new(None),
            count: AtomicU64::new(0),
        }
    }

    pub fn add(&self, file: &str, line: u64, column: usize, reason: &str, raw: &[u8]) {
        if !self.enabled {
            return;
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let Ok(mut guard) = self.file.lock() else {
            return;
        };
        if guard.is_none() {
            let _ = std::fs::create_dir_all(&self.dir);
            let path = self
                .dir
                .join(format!("rejects-{}.csv", uuid::Uuid::new_v4()));
            if let Ok(mut f) = File::create(&path) {
                let _ = writeln!(f, "file,line,column,reason,row");
                *guard = Some((path, f));
            }
        }
        if let Some((_, f)) = guard.as_mut() {
            let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            let raw = String::from_utf8_lossy(raw);
            let _ = writeln!(
                f,
                "{},{line},{column},{},{}",
                q(file),
                q(reason),
                q(raw.trim_end_matches('\r'))
            );
        }
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> Option<PathBuf> {
        self.file
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|(p, _)| p.clone()))
    }
}
