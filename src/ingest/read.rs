//! Reading one source file into batches of the table's Arrow schema.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow_array::{new_null_array, Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema as ArrowSchema, SchemaRef as ArrowSchemaRef, TimeUnit};
use iceberg::spec::TableMetadata;

use super::{text, FileToIngest, IngestError, RowError, BATCH_ROWS};
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

/// Schema metadata key of an upsert's read ([`Mapping::table`], so every batch carries
/// it): the table columns the source fills, as comma-separated indices (an upsert keeps
/// the current value of the others).
pub const PRESENT: &str = "lakectl.present";

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
    let table = if source.mode == crate::manifest::types::SourceMode::Upsert {
        let present: Vec<String> = (0..table.fields().len())
            .filter(|t| targets.contains(&Some(*t)))
            .map(|t| t.to_string())
            .collect();
        let mut meta = table.metadata().clone();
        meta.insert(PRESENT.into(), present.join(","));
        Arc::new(table.as_ref().clone().with_metadata(meta))
    } else {
        table
    };
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
    /// A byte range of a plain CSV file, cut between records.
    CsvChunk {
        ctx: Arc<CsvFile>,
        start: u64,
        end: u64,
    },
    /// A compressed (or multi-byte encoded) CSV file, decoded as a stream and parsed
    /// chunk by chunk.
    CsvStream { ctx: Arc<CsvFile>, size: u64 },
    Whole {
        file: FileToIngest,
        source: Box<SourceSpec>,
        md: Box<TableMetadata>,
    },
}

pub struct CsvFile {
    path: String,
    location: PathBuf,
    source: SourceSpec,
    /// Skip the first record (the header) of the stream.
    header: bool,
    mapping: Mapping,
    /// The schema arrow-csv parses into (source names, target types or Utf8).
    read_schema: ArrowSchemaRef,
    dialect: text::Dialect,
    null_string: String,
    timestamp_format: Option<String>,
    on_error: OnError,
}

impl Unit {
    pub fn bytes(&self) -> u64 {
        match self {
            Unit::CsvChunk { start, end, .. } => end - start,
            Unit::CsvStream { size, .. } => *size,
            Unit::Whole { file, .. } => file.file.size,
        }
    }

    pub fn read(self, rejects: &Rejects) -> Result<Vec<RecordBatch>, IngestError> {
        match self {
            Unit::CsvChunk { ctx, start, end } => read_csv_chunk(&ctx, start, end, rejects),
            Unit::CsvStream { ctx, .. } => read_csv_stream(&ctx, rejects),
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
    let dialect = text::Dialect { delimiter, quote };
    let seekable = text::seekable(path, source);
    // The head of the file (as stored when seekable, else as decoded text), long enough
    // to hold the header record whole.
    let mut reader: Box<dyn Read + Send> = if seekable {
        Box::new(
            File::open(&f.file.location)
                .map_err(|e| file_err(path, format!("cannot open: {e}")))?,
        )
    } else {
        text::open(&f.file.location, path, source)
            .map_err(|e| file_err(path, format!("cannot open: {e}")))?
    };
    let mut head = Vec::new();
    let mut eof;
    let (names, header_end) = loop {
        let mut block = vec![0u8; 64 << 10];
        let n = reader.read(&mut block).map_err(|e| file_err(path, e))?;
        head.extend_from_slice(&block[..n]);
        eof = n == 0;
        let bom = if seekable { text::bom_len(&head) } else { 0 };
        if !eof && head.len() < bom + 4 {
            continue;
        }
        if !source.csv.header {
            break (Vec::new(), bom);
        }
        let (fields, end) = dialect
            .first_record(&head[bom..])
            .map_err(|e| file_err(path, format!("header: {e}")))?;
        if eof || bom + end < head.len() {
            let names = fields
                .into_iter()
                .map(|raw| {
                    let raw = if seekable {
                        text::decode_chunk(raw, source)
                    } else {
                        raw
                    };
                    String::from_utf8(raw)
                        .map(|s| s.trim().to_string())
                        .map_err(|_| {
                            file_err(
                                path,
                                "the header is not UTF-8 (declare the file's `encoding:`)",
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            break (names, bom + end);
        }
    };
    drop(reader);
    // An empty file (or one holding only a BOM or blank lines): no rows.
    if head[header_end.min(head.len())..]
        .iter()
        .all(|b| b.is_ascii_whitespace())
        && eof
        && (names.is_empty() || names.iter().all(String::is_empty))
    {
        return Ok(Vec::new());
    }
    let data_start = header_end as u64;
    let names = if source.csv.header {
        names
    } else {
        md.current_schema()
            .as_struct()
            .fields()
            .iter()
            .map(|f| f.name.clone())
            .collect()
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
        source: source.clone(),
        header: source.csv.header,
        mapping,
        read_schema: Arc::new(ArrowSchema::new(read_fields)),
        dialect,
        null_string: source.csv.null_string.clone(),
        timestamp_format: source.csv.timestamp_format.clone(),
        on_error: source.on_error,
    });
    if !seekable {
        return Ok(vec![Unit::CsvStream {
            ctx,
            size: f.file.size,
        }]);
    }
    let size = f.file.size;
    let cuts = cut_points(
        &f.file.location,
        path,
        dialect,
        data_start,
        size,
        chunk as u64,
    )?;
    let mut units = Vec::new();
    let mut start = data_start;
    for end in cuts.into_iter().chain(std::iter::once(size)) {
        if end > start {
            units.push(Unit::CsvChunk {
                ctx: ctx.clone(),
                start,
                end,
            });
        }
        start = end;
    }
    Ok(units)
}

/// Where to cut a plain CSV file into chunks of about `chunk` bytes: just past a
/// record's end, as the parser splits records. A file without the quote character
/// is cut at the next newline; one with it is scanned front to back with the
/// parser's quote state (a newline inside quotes is no cut point).
fn cut_points(
    location: &Path,
    path: &str,
    dialect: text::Dialect,
    data_start: u64,
    size: u64,
    chunk: u64,
) -> Result<Vec<u64>, IngestError> {
    if size.saturating_sub(data_start) <= chunk {
        return Ok(Vec::new());
    }
    let mut file = File::open(location).map_err(|e| file_err(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    file.seek(SeekFrom::Start(data_start))
        .map_err(|e| file_err(path, e))?;
    let mut quoted = false;
    loop {
        let n = file.read(&mut buf).map_err(|e| file_err(path, e))?;
        if n == 0 {
            break;
        }
        if memchr::memchr(dialect.quote, &buf[..n]).is_some() {
            quoted = true;
            break;
        }
    }
    let mut cuts = Vec::new();
    if !quoted {
        let mut start = data_start;
        loop {
            let mut end = start + chunk;
            if end >= size {
                return Ok(cuts);
            }
            file.seek(SeekFrom::Start(end))
                .map_err(|e| file_err(path, e))?;
            loop {
                let n = file.read(&mut buf).map_err(|e| file_err(path, e))?;
                if n == 0 {
                    return Ok(cuts);
                }
                if let Some(i) = memchr::memchr(b'\n', &buf[..n]) {
                    end += i as u64 + 1;
                    break;
                }
                end += n as u64;
            }
            if end >= size {
                return Ok(cuts);
            }
            cuts.push(end);
            start = end;
        }
    }
    file.seek(SeekFrom::Start(data_start))
        .map_err(|e| file_err(path, e))?;
    let mut finder = text::CutFinder::new(dialect);
    let mut offset = data_start;
    let mut next = data_start + chunk;
    loop {
        let n = file.read(&mut buf).map_err(|e| file_err(path, e))?;
        if n == 0 {
            return Ok(cuts);
        }
        let mut pos = 0usize;
        while pos < n {
            match finder.feed(&buf[pos..n]) {
                Some(k) => {
                    pos += k;
                    let at = offset + pos as u64;
                    if at >= next && at < size {
                        cuts.push(at);
                        next = at + chunk;
                    }
                }
                None => break,
            }
        }
        offset += n as u64;
    }
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
        .with_delimiter(ctx.dialect.delimiter)
        .with_quote(ctx.dialect.quote)
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
    let data = text::decode_chunk(read_range(ctx, start, end)?, &ctx.source);
    parse_csv(ctx, &data, &|| line_at(ctx, start), rejects)
}

/// A compressed or multi-byte encoded CSV: decoded as a stream, cut between records
/// into chunks of the usual size, each parsed as a chunk of a plain file is.
fn read_csv_stream(ctx: &CsvFile, rejects: &Rejects) -> Result<Vec<RecordBatch>, IngestError> {
    let mut reader = text::open(&ctx.location, &ctx.path, &ctx.source)
        .map_err(|e| file_err(&ctx.path, format!("cannot open: {e}")))?;
    let chunk = super::chunk_bytes();
    let mut finder = text::CutFinder::new(ctx.dialect);
    let mut buf: Vec<u8> = Vec::with_capacity(chunk + (1 << 20));
    // Bytes of `buf` already fed to the finder, and the last record end among them.
    let mut fed = 0usize;
    let mut last_end: Option<usize> = None;
    let mut line = 1u64;
    let mut skip_header = ctx.header;
    let mut out = Vec::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut block)
            .map_err(|e| file_err(&ctx.path, format!("cannot read: {e}")))?;
        buf.extend_from_slice(&block[..n]);
        if let Some(k) = finder.feed_all(&buf[fed..]) {
            last_end = Some(fed + k);
        }
        fed = buf.len();
        if skip_header {
            if let Some(end) = first_end(&buf, ctx.dialect, n == 0) {
                line += memchr::memchr_iter(b'\n', &buf[..end]).count() as u64;
                buf.drain(..end);
                fed -= end;
                last_end = last_end.and_then(|e| e.checked_sub(end)).filter(|e| *e > 0);
                skip_header = false;
            } else if n > 0 {
                continue;
            }
        }
        let cut = if n == 0 {
            Some(buf.len())
        } else if buf.len() >= chunk {
            last_end
        } else {
            None
        };
        if let Some(cut) = cut.filter(|c| *c > 0) {
            let first = line;
            out.extend(parse_csv(ctx, &buf[..cut], &|| Ok(first), rejects)?);
            line += memchr::memchr_iter(b'\n', &buf[..cut]).count() as u64;
            buf.drain(..cut);
            fed -= cut;
            last_end = None;
        }
        if n == 0 {
            return Ok(out);
        }
    }
}

/// The end of the first record of `data` (the header), once `data` holds it whole.
fn first_end(data: &[u8], dialect: text::Dialect, eof: bool) -> Option<usize> {
    let ends = dialect.record_ends(data, eof);
    ends.first().copied().or(eof.then_some(data.len()))
}

/// Parses CSV text (whole records) into table batches; `first_line` is the 1-based
/// line of its first byte in the file, asked only to locate a bad row.
fn parse_csv(
    ctx: &CsvFile,
    data: &[u8],
    first_line: &dyn Fn() -> Result<u64, IngestError>,
    rejects: &Rejects,
) -> Result<Vec<RecordBatch>, IngestError> {
    // Fast path: parse straight into the table's types.
    let fast = (|| -> Result<Vec<RecordBatch>, ()> {
        let reader = csv_reader(ctx, ctx.read_schema.clone(), data).map_err(|_| ())?;
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
    slow_csv_chunk(ctx, first_line()?, data, rejects)
}

/// Parses a chunk as text and casts column by column: finds every bad value's line
/// and column; fails on the first or skips the bad rows into the rejects file.
fn slow_csv_chunk(
    ctx: &CsvFile,
    first_line: u64,
    data: &[u8],
    rejects: &Rejects,
) -> Result<Vec<RecordBatch>, IngestError> {
    let text_schema = Arc::new(ArrowSchema::new(
        ctx.read_schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    // Each record's bytes and first line (a quoted field may hold newlines).
    let ends = ctx.dialect.record_ends(data, true);
    let mut records: Vec<(&[u8], u64)> = Vec::with_capacity(ends.len());
    let (mut at, mut line) = (0usize, first_line);
    for end in ends {
        let raw = &data[at..end];
        // Blank lines are no records: the record starts past them.
        let blank = raw
            .iter()
            .take_while(|b| **b == b'\n' || **b == b'\r')
            .count();
        let lead = raw[..blank].iter().filter(|b| **b == b'\n').count() as u64;
        records.push((&raw[blank..], line + lead));
        line += memchr::memchr_iter(b'\n', raw).count() as u64;
        at = end;
    }
    let line_of = |r: u64| -> u64 {
        records
            .get(r as usize)
            .map(|(_, l)| *l)
            .unwrap_or(first_line + r)
    };
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
                    line: line_of(l.saturating_sub(1)),
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
                let line = line_of(row0 + r as u64);
                if ctx.on_error == OnError::Fail {
                    return Err(RowError {
                        file: ctx.path.clone(),
                        line,
                        column: j + 1,
                        message: msg.clone(),
                    }
                    .into());
                }
                let raw = records
                    .get((row0 + r as u64) as usize)
                    .map(|(raw, _)| *raw)
                    .unwrap_or_default();
                let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
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
    let reader = text::open(&f.file.location, path, source)
        .map_err(|e| file_err(path, format!("cannot open: {e}")))?;
    let mut records = json_records(BufReader::with_capacity(256 << 10, reader), path);
    let mut out = Vec::new();
    loop {
        let mut block: Vec<(u64, String)> = Vec::with_capacity(8192);
        for r in records.by_ref() {
            block.push(r?);
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

/// The objects of a JSON source with the line each starts on: one per line (JSON
/// lines), or the elements of one top-level array (`[{...}, {...}]`, pretty-printed or
/// not), split as they stream by.
fn json_records<R: BufRead + 'static>(
    mut reader: R,
    path: &str,
) -> Box<dyn Iterator<Item = Result<(u64, String), IngestError>>> {
    let path = path.to_string();
    // Leading whitespace decides the shape.
    let mut line = 1u64;
    let array = loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) => return Box::new(std::iter::once(Err(file_err(&path, e)))),
        };
        if buf.is_empty() {
            break false;
        }
        let ws = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
        line += buf[..ws].iter().filter(|b| **b == b'\n').count() as u64;
        let found = ws < buf.len();
        let first = buf.get(ws).copied();
        reader.consume(ws);
        if found {
            break first == Some(b'[');
        }
    };
    if !array {
        let mut n = line - 1;
        return Box::new(reader.lines().filter_map(move |l| {
            n += 1;
            match l {
                Ok(l) if l.trim().is_empty() => None,
                Ok(l) => Some(Ok((n, l))),
                Err(e) => Some(Err(file_err(&path, e))),
            }
        }));
    }
    reader.consume(1);
    let mut bytes = reader.bytes();
    let mut done = false;
    Box::new(std::iter::from_fn(move || {
        if done {
            return None;
        }
        // One element: from its first byte to the comma or bracket after it, at depth 0
        // and outside strings.
        let mut cur: Vec<u8> = Vec::new();
        let (mut depth, mut in_str, mut esc) = (0i32, false, false);
        let mut start_line = line;
        loop {
            let Some(b) = bytes.next() else {
                done = true;
                return Some(Err(file_err(
                    &path,
                    format!("line {line}: the top-level array is not closed"),
                )));
            };
            let b = match b {
                Ok(b) => b,
                Err(e) => {
                    done = true;
                    return Some(Err(file_err(&path, e)));
                }
            };
            if b == b'\n' {
                line += 1;
            }
            if in_str {
                cur.push(b);
                if esc {
                    esc = false;
                } else if b == b'\\' {
                    esc = true;
                } else if b == b'"' {
                    in_str = false;
                }
                continue;
            }
            match b {
                b'"' => in_str = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' if depth > 0 => depth -= 1,
                b']' => {
                    done = true;
                    return finish(cur, start_line, &path, true);
                }
                b',' if depth == 0 => return finish(cur, start_line, &path, false),
                _ => {}
            }
            if cur.is_empty() && b.is_ascii_whitespace() {
                start_line = line;
                continue;
            }
            cur.push(b);
        }
    }))
}

/// An element of a top-level JSON array as one line of JSON text.
fn finish(
    cur: Vec<u8>,
    line: u64,
    path: &str,
    last: bool,
) -> Option<Result<(u64, String), IngestError>> {
    let text = match String::from_utf8(cur) {
        Ok(t) => t,
        Err(_) => return Some(Err(file_err(path, format!("line {line}: not UTF-8")))),
    };
    if text.trim().is_empty() {
        // `[]`, or a trailing `]` after the last element.
        return if last {
            None
        } else {
            Some(Err(RowError {
                file: path.to_string(),
                line,
                column: 1,
                message: "an empty element in the top-level array".into(),
            }
            .into()))
        };
    }
    // Newlines inside an element are whitespace (or escaped in strings): one line.
    Some(Ok((line, text.replace(['\n', '\r'], " "))))
}

/// Whether a Parquet column of type `from` may fill a table column of type `to`: the
/// same type, or one Iceberg's promotion rules allow (int → long, float → double,
/// decimal precision widened), or the same values in another Arrow layout (string
/// views and large strings, dictionaries, a timestamp in another unit that converts
/// exactly), or integers checked value by value.
fn parquet_fits(from: &DataType, to: &DataType) -> bool {
    use DataType as D;
    if from == to {
        return true;
    }
    match (from, to) {
        (D::Dictionary(_, v), _) => parquet_fits(v, to),
        // Integers into integers, value by value: pandas writes every int as int64, and
        // a value out of the column's range stops the ingest at its row (no wrap).
        (
            D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64,
            D::Int32 | D::Int64,
        ) => true,
        (D::Float16, D::Float32 | D::Float64) | (D::Float32, D::Float64) => true,
        (D::Decimal128(p1, s1), D::Decimal128(p2, s2)) => s1 == s2 && p1 <= p2,
        (D::Utf8View | D::LargeUtf8, D::Utf8 | D::LargeUtf8) => true,
        (D::BinaryView | D::LargeBinary, D::Binary | D::LargeBinary) => true,
        (D::FixedSizeBinary(_), D::Binary | D::LargeBinary) => true,
        (D::Timestamp(_, tz1), D::Timestamp(_, tz2)) => tz1.is_some() == tz2.is_some(),
        // Nested columns: arrow's cast lines children up by position; left to it.
        (D::Struct(_), D::Struct(_))
        | (D::List(_) | D::LargeList(_), D::List(_) | D::LargeList(_))
        | (D::Map(..), D::Map(..)) => true,
        _ => false,
    }
}

/// Parquet: columns matched by name (any order, extra ones ignored unless `strict`),
/// cast to the table's types where [`parquet_fits`]; any other type is refused with
/// its column, as is a timestamp finer than the table's that would lose digits.
fn read_parquet(
    f: &FileToIngest,
    source: &SourceSpec,
    md: &TableMetadata,
) -> Result<Vec<RecordBatch>, IngestError> {
    let path = &f.file.path;
    if f.file.size == 0 {
        return Ok(Vec::new());
    }
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
    let file_schema = arrow_array::RecordBatchReader::schema(&reader);
    for (j, t) in m.targets.iter().enumerate() {
        let Some(t) = t else { continue };
        let (from, to) = (
            file_schema.field(j).data_type(),
            m.table.field(*t).data_type(),
        );
        if !parquet_fits(from, to) {
            return Err(RowError {
                file: path.clone(),
                line: 1,
                column: j + 1,
                message: format!(
                    "column `{}` is {from} in the file and {to} in the table (`{}`): only the same type, a promotion (int → long, float → double, a wider decimal) or integers that fit are cast",
                    file_schema.field(j).name(),
                    m.table.field(*t).name()
                ),
            }
            .into());
        }
    }
    let mut out = Vec::new();
    let mut row0 = 0u64;
    for b in reader {
        let b = b.map_err(|e| file_err(path, e))?;
        exact_timestamps(&m, &b, row0, path)?;
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

/// A timestamp column finer than its table column (nanoseconds into microseconds)
/// converts only when no value has digits the table cannot keep.
fn exact_timestamps(
    m: &Mapping,
    b: &RecordBatch,
    row0: u64,
    path: &str,
) -> Result<(), IngestError> {
    use arrow_array::types::Int64Type;
    for (j, t) in m.targets.iter().enumerate() {
        let Some(t) = t else { continue };
        let (DataType::Timestamp(from, _), DataType::Timestamp(to, _)) =
            (b.column(j).data_type(), m.table.field(*t).data_type())
        else {
            continue;
        };
        let per = |u: &TimeUnit| match u {
            TimeUnit::Second => 1i64,
            TimeUnit::Millisecond => 1_000,
            TimeUnit::Microsecond => 1_000_000,
            TimeUnit::Nanosecond => 1_000_000_000,
        };
        if per(from) <= per(to) {
            continue;
        }
        let factor = per(from) / per(to);
        let raw = arrow_cast::cast(b.column(j), &DataType::Int64).map_err(|e| file_err(path, e))?;
        let raw = raw
            .as_any()
            .downcast_ref::<arrow_array::PrimitiveArray<Int64Type>>()
            .expect("int64");
        if let Some(r) = (0..raw.len()).find(|r| raw.is_valid(*r) && raw.value(*r) % factor != 0) {
            return Err(RowError {
                file: path.to_string(),
                line: row0 + r as u64 + 1,
                column: j + 1,
                message: format!(
                    "timestamp {} of column `{}` has digits finer than the table's {:?} precision: converting would change it",
                    raw.value(r),
                    b.schema().field(j).name(),
                    to
                ),
            }
            .into());
        }
    }
    Ok(())
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
