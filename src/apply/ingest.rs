//! Applying an ingest change: the source's new files become one `append` snapshot.
//!
//! 1. load the table; drop from the change every file the ledger now has (another
//!    apply got there first); nothing left is a no-op;
//! 2. write the data files (invisible until the commit);
//! 3. commit an append snapshot whose summary lists the ingested files (the ledger),
//!    requiring `main`, the schema and the spec to be as read in 1;
//! 4. on a conflict: reload; if the files are still not in the ledger and schema and
//!    spec are unchanged, retry the commit with the same data files; otherwise write
//!    again from 1 (the earlier files stay unreferenced orphans).
//!
//! A crash before the commit leaves orphan data files and the table unchanged, so a
//! re-run ingests every file exactly once.

use std::collections::HashMap;
use std::sync::Arc;

use super::ApplyError;
use crate::ingest::{self, FileToIngest, IngestError, Progress, SourceFile, Written};
use crate::lake::snapshot::append_snapshot;
use crate::lake::{ledger, Annotation, CommitError, Lake, LakeError, TableState};
use crate::plan::IngestChange;

/// What an ingest did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IngestOutcome {
    pub files: usize,
    pub records: u64,
    pub data_files: usize,
    pub rejected: u64,
    pub rejects_file: Option<String>,
    pub snapshot_id: Option<i64>,
    /// Every file was in the ledger already (another writer ingested them first):
    /// nothing was committed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub already_applied: bool,
    /// What an upsert or a replacement did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyed: Option<super::keyed::KeyedOutcome>,
    /// Where the data work ran when not on this machine (`spark`), or why it did not
    /// run on the configured engine (`local: …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

pub async fn apply_ingest(
    lake: &Lake,
    c: &IngestChange,
    progress: Arc<dyn Progress>,
    branch: &str,
) -> Result<(IngestOutcome, Option<TableState>), ApplyError> {
    if !c.mode.is_append() {
        return super::keyed::apply_keyed(lake, c, progress, branch).await;
    }
    let ident = c.ident();
    let mut written: Option<(Written, i32, i32, Vec<String>)> = None;
    let mut local_reason = None;
    for attempt in 0..super::MAX_ATTEMPTS {
        let state = lake.load_on(&ident, branch).await?;
        let md = &state.metadata;
        let done = lake.ledger(md).await?.ingested;
        let todo = todo_files(c, &done);
        if todo.is_empty() {
            return Ok((IngestOutcome::already_applied(md), Some(state)));
        }
        if attempt == 0 {
            let bytes = todo.iter().map(|f| f.file.size).sum();
            if let Some(spark) = super::spark::engine_for(lake, bytes) {
                match super::spark::ingest_unsupported(c, &todo) {
                    None => {
                        return super::spark::ingest(
                            lake,
                            spark,
                            c,
                            todo,
                            state,
                            branch,
                            Vec::new(),
                        )
                        .await
                    }
                    Some(why) => local_reason = Some(format!("local ({why})")),
                }
            }
        }
        let paths: Vec<String> = todo.iter().map(|f| f.file.path.clone()).collect();
        let reusable = written.as_ref().is_some_and(|(_, schema, spec, p)| {
            *schema == md.current_schema_id()
                && *spec == md.default_partition_spec_id()
                && *p == paths
        });
        if !reusable {
            let (todo, _spool) = spool_s3(lake, c, todo).await?;
            let w = ingest::write_source(
                lake.file_io(),
                md,
                &c.spec,
                &todo,
                &c.rejects_dir,
                progress.clone(),
            )
            .await
            .map_err(|e| ingest_error(c, e))?;
            written = Some((
                w,
                md.current_schema_id(),
                md.default_partition_spec_id(),
                paths,
            ));
        }
        let (w, ..) = written.as_ref().expect("written");
        let annotation = Annotation {
            change: "ingest".into(),
            change_id: c.change_id.clone(),
            manifest: Some(c.manifest.display().to_string()),
            git_commit: super::git_commit(&c.manifest),
            details: format!(
                "{} file(s), {} row(s) from source `{}`{}",
                w.files.len(),
                w.records,
                c.source,
                if w.rejected > 0 {
                    format!(", {} row(s) rejected", w.rejected)
                } else {
                    String::new()
                }
            ),
        };
        let mut props: HashMap<String, String> = annotation.to_summary();
        props.insert(ledger::SOURCE.into(), c.source.clone());
        props.insert(
            ledger::INGESTED.into(),
            serde_json::to_string(&w.files).unwrap_or_default(),
        );
        if w.rejected > 0 {
            props.insert(ledger::REJECTED.into(), w.rejected.to_string());
        }
        let snapshot = append_snapshot(lake.file_io(), md, w.data_files.clone(), props).await?;
        let snapshot_id = snapshot.snapshot_id();
        match super::commit_on(lake, &ident, md, snapshot, attempt, branch).await {
            Ok(state) => {
                return Ok((
                    IngestOutcome {
                        files: w.files.len(),
                        records: w.records,
                        data_files: w.data_files.len(),
                        rejected: w.rejected,
                        rejects_file: w.rejects_file.as_ref().map(|p| p.display().to_string()),
                        snapshot_id: Some(snapshot_id),
                        already_applied: false,
                        keyed: None,
                        engine: local_reason.clone(),
                    },
                    Some(state),
                ))
            }
            Err(CommitError::Conflict(why)) => {
                super::conflict_backoff(attempt, &c.table, &why).await;
            }
            Err(e) => {
                return Err(ApplyError::Commit {
                    table: c.table.clone(),
                    source: e,
                })
            }
        }
    }
    Err(super::gave_up(&c.table))
}

impl IngestOutcome {
    pub(crate) fn already_applied(md: &iceberg::spec::TableMetadata) -> IngestOutcome {
        IngestOutcome {
            files: 0,
            records: 0,
            data_files: 0,
            rejected: 0,
            rejects_file: None,
            snapshot_id: md.current_snapshot_id(),
            already_applied: true,
            keyed: None,
            engine: None,
        }
    }
}

/// The change's files the ledger does not have yet.
pub(crate) fn todo_files(
    c: &IngestChange,
    done: &HashMap<String, ledger::IngestedFile>,
) -> Vec<FileToIngest> {
    c.files
        .iter()
        .filter(|f| match done.get(&f.path) {
            None => true,
            // Appended again on purpose (`onChange: append`) unless this very
            // version is already there.
            Some(d) => f.reason == "changed" && (d.size, d.mtime_ms) != (f.size, f.mtime_ms),
        })
        .map(|f| FileToIngest {
            file: SourceFile {
                path: f.path.clone(),
                location: f.location.clone(),
                size: f.size,
                mtime_ms: f.mtime_ms,
                format: Some(f.format),
                etag: f.etag.clone(),
            },
            format: f.format,
        })
        .collect()
}

/// S3 objects streamed to a local spool (removed when the returned directory drops).
pub(crate) async fn spool_s3(
    lake: &Lake,
    c: &IngestChange,
    mut todo: Vec<FileToIngest>,
) -> Result<(Vec<FileToIngest>, tempfile::TempDir), ApplyError> {
    let spool =
        tempfile::tempdir().map_err(|e| LakeError::Unsupported(format!("spool directory: {e}")))?;
    let mut downloads = Vec::new();
    for (i, f) in todo.iter_mut().enumerate() {
        if f.file.path.starts_with("s3://") || f.file.path.starts_with("s3a://") {
            let dest = spool.path().join(format!("{i}"));
            downloads.push((f.file.path.clone(), dest.clone()));
            f.file.location = dest;
        }
    }
    ingest::s3::download_all(downloads, &lake.config.storage)
        .await
        .map_err(|(file, message)| ingest_error(c, IngestError::File { file, message }))?;
    Ok((todo, spool))
}

pub(crate) fn ingest_error(c: &IngestChange, e: IngestError) -> ApplyError {
    ApplyError::Ingest {
        table: c.table.clone(),
        source: c.source.clone(),
        error: e,
    }
}
