//! Changes whose data work runs on the Spark engine ([`crate::engine::spark`]): the
//! job writes on a scratch branch, and the data files it added and removed are
//! committed to the change's branch (`main`, or the audit branch) here, through the
//! same snapshot builders and commit as the local engine's, with the ledger and the
//! annotation, the scratch branch dropped in that commit.
//!
//! Which work goes there: a change that reads at least `minBytes` (an ingest's new
//! files, a mutation's candidate files, a compaction's input files) and that the job
//! can do exactly as the local engine would. Anything else stays local, and the
//! outcome says why (`engine`).

use std::collections::{HashMap, HashSet};

use iceberg::spec::{DataFile, TableMetadata};
use iceberg::TableUpdate;

use super::ingest::IngestOutcome;
use super::keyed::KeyedOutcome;
use super::mutate::MutationOutcome;
use super::ApplyError;
use crate::engine::spark::{self, CdcStep, CsvStep, Job, JobSnapshot, Source, SparkConfig, Step};
use crate::ingest::FileToIngest;
use crate::lake::snapshot::{append_snapshot, overwrite_snapshot};
use crate::lake::{ledger, Annotation, CommitError, Lake, TableState};
use crate::manifest::types::{Compression, OnDuplicateKey, OnError, SourceFormat, SourceMode};
use crate::mutate::expr::Action;
use crate::plan::{IngestChange, MutationChange};

/// The Spark engine, when the lakehouse has one and `bytes` of work is its size.
pub(crate) fn engine_for(lake: &Lake, bytes: u64) -> Option<&SparkConfig> {
    lake.config.engine.as_ref().filter(|e| e.takes(bytes))
}

fn failed(table: &str, what: &str, message: impl std::fmt::Display) -> ApplyError {
    ApplyError::Engine {
        table: table.to_string(),
        change: what.to_string(),
        message: message.to_string(),
    }
}

/// Why the job cannot ingest `todo` exactly as the local engine would (it then runs
/// locally).
pub(crate) fn ingest_unsupported(c: &IngestChange, todo: &[FileToIngest]) -> Option<String> {
    let s = &c.spec;
    if todo
        .iter()
        .any(|f| f.file.path.contains("://") && !f.file.path.starts_with("file://"))
    {
        return Some("object-store sources are read by the local engine".into());
    }
    if s.on_error == OnError::Skip {
        return Some("onError: skip (rejected rows with file:line:col)".into());
    }
    if s.csv.timestamp_format.is_some() {
        return Some("csv.timestampFormat (a chrono format)".into());
    }
    if s.strict {
        return Some("strict".into());
    }
    // Spark decompresses by file name (Hadoop's codecs), and has no zstd without
    // Hadoop's native code: the file must say what lakectl would read it as.
    for f in todo {
        let lakectl = crate::ingest::text::compression_of(&f.file.path, s);
        let by_name = Compression::from_path(std::path::Path::new(&f.file.path));
        let lower = f.file.path.to_ascii_lowercase();
        let hadoop = [".deflate", ".lz4", ".snappy", ".br"];
        if lakectl == Compression::Zstd {
            return Some("zstd-compressed text".into());
        }
        if lakectl != by_name || hadoop.iter().any(|e| lower.ends_with(e)) {
            return Some(format!(
                "{}: its name does not say how it is compressed",
                f.file.path
            ));
        }
    }
    if crate::ingest::text::encoding_of(s).is_some()
        && todo.iter().any(|f| f.format == SourceFormat::Json)
    {
        return Some("JSON in an encoding other than UTF-8".into());
    }
    if s.case_insensitive && todo.iter().any(|f| f.format == SourceFormat::Json) {
        return Some("caseInsensitive JSON (Spark reads JSON fields by exact name)".into());
    }
    if !c.mode.is_append() && todo.iter().any(|f| f.format == SourceFormat::Json) {
        return Some("the row order of a JSON batch (the last row of a key wins)".into());
    }
    if todo.windows(2).any(|w| w[0].format != w[1].format) {
        return Some("a batch of mixed formats".into());
    }
    if s.csv.delimiter.chars().count() != 1 || s.csv.quote.chars().count() != 1 {
        return Some("a delimiter or quote of more than one character".into());
    }
    None
}

fn format_name(f: SourceFormat) -> &'static str {
    match f {
        SourceFormat::Csv => "csv",
        SourceFormat::Json => "json",
        SourceFormat::Parquet => "parquet",
    }
}

fn job(c_table: &str, md: &TableMetadata, app: String, steps: Vec<Step>) -> Option<Job> {
    let ident = crate::plan::ident_of(c_table);
    Some(Job {
        app,
        namespace: ident.namespace().clone().inner(),
        table: ident.name().to_string(),
        base: md.current_snapshot_id()?,
        steps,
    })
}

/// Runs `job` and reads its commits from the table as it is after the job.
async fn run_job(
    lake: &Lake,
    spark: &SparkConfig,
    job: &Job,
    table: &str,
    load: impl std::future::Future<Output = Result<TableState, ApplyError>>,
) -> Result<(spark::Ran, Vec<JobSnapshot>, TableState), String> {
    let branch = spark::scratch_branch();
    let result = async {
        let ran = spark::run(&lake.config, spark, job, &branch).await?;
        let state = load.await.map_err(|e| e.to_string())?;
        let snaps =
            spark::job_snapshots(lake.file_io(), &state.metadata, &ran.branch, job.base).await?;
        Ok((ran, snaps, state))
    }
    .await;
    if result.is_err() {
        // A job that failed after it made its branch.
        discard(lake, table, &branch).await;
    }
    result
}

/// Drops the job's branch in the commit that publishes its files.
pub(crate) fn drop_scratch(md: &TableMetadata, branch: &str) -> Vec<TableUpdate> {
    if md.snapshot_for_ref(branch).is_some() {
        vec![TableUpdate::RemoveSnapshotRef {
            ref_name: branch.to_string(),
        }]
    } else {
        Vec::new()
    }
}

/// The job's reading of `todo` as the source declares it.
fn source_step(c: &IngestChange, todo: &[FileToIngest]) -> (Source, Vec<String>) {
    let format = todo.first().map(|f| f.format).unwrap_or(SourceFormat::Csv);
    let names: Vec<String> = todo
        .iter()
        .map(|f| spark::local_name(&f.file.location))
        .collect();
    let s = &c.spec;
    let source = Source {
        format: format_name(format).into(),
        files: names.clone(),
        csv: CsvStep {
            header: s.csv.header,
            delimiter: s.csv.delimiter.clone(),
            quote: s.csv.quote.clone(),
            null_string: s.csv.null_string.clone(),
            // encoding_rs's canonical name, which Java knows by the same meaning
            // (`latin1` is windows-1252 to both lakectl and the WHATWG, not ISO-8859-1).
            encoding: crate::ingest::text::encoding_of(s).map(|e| e.name().to_string()),
        },
        columns: s.columns.clone(),
        defaults: s.defaults.clone(),
        case_insensitive: s.case_insensitive,
        header: s.csv.header,
    };
    (source, names)
}

/// An ingest of `todo` through Spark (an append, an upsert or a replacement),
/// committed to `branch`. A keyed change whose table moved on during the job (another
/// writer's rows may hold its keys) runs again on the fresh state.
pub(crate) async fn ingest(
    lake: &Lake,
    spark: &SparkConfig,
    c: &IngestChange,
    mut todo: Vec<FileToIngest>,
    mut state: TableState,
    branch: &str,
    key: Vec<String>,
) -> Result<(IngestOutcome, Option<TableState>), ApplyError> {
    let ident = c.ident();
    let what = format!("ingest of source `{}`", c.source);
    let fail = |m: String| failed(&c.table, &what, m);
    for round in 0..super::MAX_ATTEMPTS {
        if round > 0 {
            state = lake.load_on(&ident, branch).await?;
            let done = lake.ledger(&state.metadata).await?.ingested;
            todo = super::ingest::todo_files(c, &done);
            if todo.is_empty() {
                return Ok((IngestOutcome::already_applied(&state.metadata), Some(state)));
            }
        }
        let (source, names) = source_step(c, &todo);
        let step = if c.mode.is_append() {
            Step::Ingest { source }
        } else {
            Step::Keyed {
                source,
                mode: c.mode.as_str().to_string(),
                key: key.clone(),
                on_duplicate_key: match c.spec.on_duplicate_key {
                    OnDuplicateKey::Last => "last".into(),
                    OnDuplicateKey::Error => "error".into(),
                },
                cdc: c.spec.cdc.as_ref().map(|d| CdcStep {
                    op_column: d.op_column.clone(),
                    delete_when: d.delete_when.clone(),
                }),
            }
        };
        let app = format!("lakectl: {} {} {}", c.table, c.mode.as_str(), c.source);
        let job = job(&c.table, &state.metadata, app, vec![step])
            .ok_or_else(|| fail("the table has no snapshot to branch from".into()))?;
        // The ledger's content hashes, while Spark reads.
        let hashes = tokio::task::spawn_blocking({
            let paths: Vec<std::path::PathBuf> =
                todo.iter().map(|f| f.file.location.clone()).collect();
            move || {
                paths
                    .iter()
                    .map(|p| {
                        crate::ingest::files::content_hash(p)
                            .map_err(|e| format!("{}: {e}", p.display()))
                    })
                    .collect::<Result<Vec<String>, String>>()
            }
        });
        let load = async { lake.load_on(&ident, branch).await.map_err(ApplyError::from) };
        let (ran, snaps, fresh) = run_job(lake, spark, &job, &c.table, load)
            .await
            .map_err(fail)?;
        let scratch = ran.branch.clone();
        let result = publish_ingest(
            lake, c, &todo, &names, hashes, ran, snaps, fresh, branch, job.base,
        )
        .await;
        match result {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => discard(lake, &c.table, &scratch).await,
            Err(e) => {
                discard(lake, &c.table, &scratch).await;
                return Err(e);
            }
        }
    }
    Err(ApplyError::Commit {
        table: c.table.clone(),
        source: CommitError::Conflict(format!(
            "other writers committed during each of {} Spark jobs",
            super::MAX_ATTEMPTS
        )),
    })
}

/// Commits what an ingest job wrote; `None` when a keyed change must run again (the
/// table moved on during the job).
#[allow(clippy::too_many_arguments)]
async fn publish_ingest(
    lake: &Lake,
    c: &IngestChange,
    todo: &[FileToIngest],
    names: &[String],
    hashes: tokio::task::JoinHandle<Result<Vec<String>, String>>,
    ran: spark::Ran,
    snaps: Vec<JobSnapshot>,
    fresh: TableState,
    branch: &str,
    base: i64,
) -> Result<Option<(IngestOutcome, Option<TableState>)>, ApplyError> {
    let ident = c.ident();
    let what = format!("ingest of source `{}`", c.source);
    let fail = |m: String| failed(&c.table, &what, m);
    let keyed = !c.mode.is_append();
    if keyed && fresh.metadata.current_snapshot_id() != Some(base) {
        return Ok(None);
    }
    let hashes = hashes
        .await
        .map_err(|e| fail(format!("hashing: {e}")))?
        .map_err(|e| fail(format!("hashing: {e}")))?;
    let mut added: Vec<DataFile> = Vec::new();
    let mut removed: HashSet<String> = HashSet::new();
    for s in &snaps {
        if s.added_deletes > 0 {
            return Err(fail(
                "Spark wrote delete files (the table's write.merge.mode is merge-on-read); lakectl writes copy-on-write".into(),
            ));
        }
        if !keyed && !s.removed.is_empty() {
            return Err(fail(format!(
                "the job's commit {} removed files; an append only adds",
                s.snapshot_id
            )));
        }
        added.extend(s.added.iter().cloned());
        removed.extend(s.removed.iter().cloned());
    }
    let step = &ran.steps[0];
    let by_file = &step["rows_by_file"];
    let mut files = Vec::with_capacity(todo.len());
    for ((f, name), hash) in todo.iter().zip(names).zip(hashes) {
        if let Some(why) = crate::ingest::files::changed_since_listing(&f.file) {
            return Err(fail(format!(
                "{}: {why}: it is ingested once it stops changing",
                f.file.path
            )));
        }
        files.push(ledger::IngestedFile {
            path: f.file.path.clone(),
            size: f.file.size,
            mtime_ms: f.file.mtime_ms,
            hash,
            rows: by_file[name].as_u64().unwrap_or(0),
        });
    }
    let counted: u64 = files.iter().map(|f| f.rows).sum();
    let records: u64 = added.iter().map(|f| f.record_count()).sum();
    if !keyed && counted != records {
        return Err(fail(format!(
            "the job wrote {records} row(s) but counted {counted} in the source files"
        )));
    }
    let n = |k: &str| step[k].as_u64().unwrap_or(0);
    let outcome = keyed.then(|| KeyedOutcome {
        mode: c.mode.as_str().to_string(),
        keys: (c.mode == SourceMode::Upsert).then(|| n("keys")),
        updated: n("updated"),
        inserted: n("inserted"),
        deleted: n("deleted"),
        superseded: n("superseded"),
        rows_removed: 0,
        // Spark probes inside its MERGE: the files it rewrote are those it found keys in.
        files_probed: removed.len(),
        files_rewritten: removed.len(),
        files_removed: 0,
        files_added: added.len(),
    });
    let details = match &outcome {
        None => format!(
            "{} file(s), {} row(s) from source `{}` (engine: spark)",
            files.len(),
            records,
            c.source
        ),
        Some(k) => format!(
            "{} of {} file(s), {counted} row(s) from source `{}`: {} updated, {} inserted, {} deleted; {} file(s) rewritten (engine: spark)",
            k.mode,
            files.len(),
            c.source,
            k.updated,
            k.inserted,
            k.deleted,
            k.files_rewritten
        ),
    };
    let mut state = fresh;
    for attempt in 0..super::MAX_ATTEMPTS {
        if attempt > 0 {
            state = lake.load_on(&ident, branch).await?;
            if keyed && state.metadata.current_snapshot_id() != Some(base) {
                return Ok(None);
            }
            let done = lake.ledger(&state.metadata).await?.ingested;
            if super::ingest::todo_files(c, &done).len() < todo.len() {
                return Err(ApplyError::NoLongerApplies {
                    table: c.table.clone(),
                    reason: "another writer ingested some of these files meanwhile; nothing was committed (the next apply plans again)".into(),
                });
            }
        }
        let md = &state.metadata;
        let annotation = Annotation {
            change: "ingest".into(),
            change_id: c.change_id.clone(),
            manifest: Some(c.manifest.display().to_string()),
            git_commit: super::git_commit(&c.manifest),
            details: details.clone(),
        };
        let mut props: HashMap<String, String> = annotation.to_summary();
        props.insert(ledger::SOURCE.into(), c.source.clone());
        props.insert(
            ledger::INGESTED.into(),
            serde_json::to_string(&files).unwrap_or_default(),
        );
        props.insert(ENGINE.into(), "spark".into());
        props.insert(ledger::ENGINE_SNAPSHOTS.into(), job_ids(&snaps));
        let snapshot = if removed.is_empty() {
            append_snapshot(lake.file_io(), md, added.clone(), props).await?
        } else {
            overwrite_snapshot(lake.file_io(), md, &removed, added.clone(), props).await?
        };
        let snapshot_id = snapshot.snapshot_id();
        let extra = drop_scratch(md, &ran.branch);
        match super::commit_on_with(lake, &ident, md, snapshot, attempt, branch, extra).await {
            Ok(state) => {
                return Ok(Some((
                    IngestOutcome {
                        files: files.len(),
                        records: if keyed { counted } else { records },
                        data_files: added.len(),
                        rejected: 0,
                        rejects_file: None,
                        snapshot_id: Some(snapshot_id),
                        already_applied: false,
                        keyed: outcome,
                        engine: Some("spark".into()),
                    },
                    Some(state),
                )))
            }
            Err(CommitError::Conflict(why)) => {
                super::conflict_backoff(attempt, &c.table, &why).await;
            }
            Err(e) => return Err(super::commit_failure(&c.table, e)),
        }
    }
    Err(super::gave_up(&c.table))
}

/// The job's commits, for [`ledger::ENGINE_SNAPSHOTS`].
pub(crate) fn job_ids(snaps: &[JobSnapshot]) -> String {
    snaps
        .iter()
        .map(|s| s.snapshot_id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Summary key of a snapshot whose data work ran elsewhere: the engine.
pub const ENGINE: &str = "lakectl.engine";

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The mutation as Spark SQL on `{table}`.
pub(crate) fn mutation_sql(action: &Action) -> String {
    match action {
        Action::Update { predicate, set } => format!(
            "UPDATE {{table}} SET {} WHERE {predicate}",
            set.iter()
                .map(|(c, e)| format!("{} = {e}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Action::Delete { predicate } => format!("DELETE FROM {{table}} WHERE {predicate}"),
    }
}

/// One attempt of a mutation through Spark on `state` (the change's branch view):
/// `Ok(None)` when `main` moved during the job (the caller starts over).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn mutation(
    lake: &Lake,
    spark: &SparkConfig,
    c: &MutationChange,
    state: &TableState,
    limit: Option<u64>,
    live_files: usize,
    files_read: usize,
    attempt: u32,
    branch: &str,
) -> Result<Option<(MutationOutcome, TableState)>, CommitError> {
    let ident = c.ident();
    let fail = |m: String| {
        CommitError::Failed(crate::lake::LakeError::Unsupported(format!(
            "mutation `{}` ({}) on the spark engine: {m}; nothing was committed",
            c.name, c.at
        )))
    };
    let step = Step::Sql {
        sql: mutation_sql(&c.action),
        count: Some(c.action.predicate().to_string()),
        limit,
    };
    let app = format!("lakectl: {} mutation {}", c.table, c.name);
    let job = job(&c.table, &state.metadata, app, vec![step])
        .ok_or_else(|| fail("the table has no snapshot".into()))?;
    let (ran, snaps, fresh) = run_job(lake, spark, &job, &c.table, async {
        lake.load_on(&ident, branch).await.map_err(ApplyError::from)
    })
    .await
    .map_err(fail)?;
    let scratch = ran.branch.clone();
    let result: Result<Option<(MutationOutcome, TableState)>, CommitError> = async {
    let md = &fresh.metadata;
    if md.current_snapshot_id() != Some(job.base) {
        // Another writer committed meanwhile: its rows may match too.
        discard(lake, &c.table, &ran.branch).await;
        return Ok(None);
    }
    let rows = ran.steps[0]["matched"].as_u64().unwrap_or(0);
    let mut added = Vec::new();
    let mut removed = HashSet::new();
    for s in &snaps {
        if s.added_deletes > 0 {
            return Err(fail(
                "Spark wrote delete files (the table's write.update.mode or write.delete.mode is merge-on-read); lakectl's mutations are copy-on-write".into(),
            ));
        }
        added.extend(s.added.iter().cloned());
        removed.extend(s.removed.iter().cloned());
    }
    let outcome = MutationOutcome {
        rows_changed: rows,
        files_read,
        files_rewritten: removed.len(),
        files_removed: 0,
        files_added: added.len(),
        files_untouched: live_files.saturating_sub(removed.len()),
        snapshot_id: None,
        already_applied: false,
        engine: Some("spark".into()),
    };
    let annotation = super::mutate::annotation(c, &outcome);
    let mut props: HashMap<String, String> = annotation.to_summary();
    props.insert(super::mutate::MUTATION.into(), c.name.clone());
    props.insert(super::mutate::ROWS_CHANGED.into(), rows.to_string());
    props.insert(ENGINE.into(), "spark".into());
    props.insert(ledger::ENGINE_SNAPSHOTS.into(), job_ids(&snaps));
    let snapshot = if removed.is_empty() && added.is_empty() {
        append_snapshot(lake.file_io(), md, Vec::new(), props).await?
    } else {
        overwrite_snapshot(lake.file_io(), md, &removed, added, props).await?
    };
    let snapshot_id = snapshot.snapshot_id();
    let extra = drop_scratch(md, &ran.branch);
    let state = super::commit_on_with(lake, &ident, md, snapshot, attempt, branch, extra).await?;
    Ok(Some((
        MutationOutcome {
            snapshot_id: Some(snapshot_id),
            ..outcome
        },
        state,
    )))
    }
    .await;
    if result.is_err() {
        discard(lake, &c.table, &scratch).await;
    }
    result
}

/// A compaction's groups rewritten by Spark: each group's output files, in order, the
/// job's snapshot ids (for [`ledger::ENGINE_SNAPSHOTS`]) and its branch (to drop in the
/// commit).
pub(crate) async fn compact(
    lake: &Lake,
    spark: &SparkConfig,
    table: &str,
    state: &TableState,
    groups: &[crate::maintain::CompactGroup],
) -> Result<(Vec<Vec<DataFile>>, String, String), String> {
    let ident = crate::plan::ident_of(table);
    let steps = groups
        .iter()
        .map(|g| Step::Compact {
            files: g.files.clone(),
        })
        .collect();
    let app = format!("lakectl: {table} compaction");
    let job = job(table, &state.metadata, app, steps).ok_or("the table has no snapshot")?;
    let load = async {
        lake.load_table(&ident)
            .await?
            .ok_or_else(|| ApplyError::from(crate::lake::LakeError::NoSuchTable(table.into())))
    };
    let (ran, snaps, _) = run_job(lake, spark, &job, table, load).await?;
    if snaps.len() != groups.len() {
        return Err(format!(
            "the job made {} commit(s) for {} group(s)",
            snaps.len(),
            groups.len()
        ));
    }
    let ids = job_ids(&snaps);
    let mut outputs = Vec::new();
    for s in snaps {
        if !s.removed.is_empty() || s.added_deletes > 0 {
            return Err(format!(
                "the job's commit {} removed or deleted files; a compaction group only appends its rows",
                s.snapshot_id
            ));
        }
        outputs.push(s.added);
    }
    Ok((outputs, ids, ran.branch))
}

/// Drops a scratch branch that no commit will publish (best effort: expiry removes
/// what is left).
pub(crate) async fn discard(lake: &Lake, table: &str, branch: &str) {
    let ident = crate::plan::ident_of(table);
    if let Ok(Some(s)) = lake.load_table(&ident).await {
        let extra = drop_scratch(&s.metadata, branch);
        if !extra.is_empty() {
            let _ = lake.commit(&ident, &[], extra).await;
        }
    }
}
