//! Applying a keyed ingest (`mode: upsert`, `replacePartitions`, `replace`): the
//! batch becomes one `overwrite` snapshot that carries the ledger, so its files are
//! ingested if and only if that snapshot lands.
//!
//! In a retry loop, on fresh state each time:
//! 1. load the table; drop the files the ledger has; none left is a no-op;
//! 2. read the batch into memory ([`crate::ingest::keyed::read_batch`]; kept across
//!    attempts while schema and files are unchanged) and resolve it by key;
//! 3. find the live files holding matching keys (bounds, then a key probe) or the
//!    partitions to replace, rewrite them and write the batch's rows;
//! 4. commit, requiring `main`, schema and spec as read in 1. A conflict (another
//!    writer committed) goes back to 1 and probes again: rows appended meanwhile are
//!    seen, and the files written stay unreferenced orphans.
//!
//! A crash before the commit leaves the table as it was; a re-run applies the batch.

use std::collections::HashMap;
use std::sync::Arc;

use super::ingest::{ingest_error, spool_s3, todo_files, IngestOutcome};
use super::ApplyError;
use crate::ingest::keyed::{self, Batch, KeyedWrite};
use crate::ingest::{IngestError, Progress};
use crate::lake::snapshot::{append_snapshot, overwrite_snapshot};
use crate::lake::{ledger, Annotation, CommitError, Lake, LakeError, TableState};
use crate::manifest::types::SourceMode;
use crate::plan::IngestChange;

/// What an upsert or a replacement did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct KeyedOutcome {
    pub mode: String,
    /// Distinct keys of the batch (upserts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Keys that matched existing rows and were replaced.
    pub updated: u64,
    /// Rows (keys) appended.
    pub inserted: u64,
    /// CDC deletes that removed existing rows.
    pub deleted: u64,
    /// Rows of the batch a later row of the same key replaced.
    pub superseded: u64,
    /// Existing rows removed (replaced, deleted or in a replaced partition).
    pub rows_removed: u64,
    pub files_probed: usize,
    pub files_rewritten: usize,
    /// Live files the snapshot marks deleted.
    pub files_removed: usize,
    pub files_added: usize,
}

fn keyed_error(c: &IngestChange, why: impl std::fmt::Display) -> ApplyError {
    ingest_error(c, IngestError::Batch(why.to_string()))
}

fn refuse(c: &IngestChange, why: impl std::fmt::Display) -> CommitError {
    CommitError::Failed(LakeError::Unsupported(format!(
        "source `{}` ({}) into {}: {why}; nothing was committed",
        c.source,
        c.mode.as_str(),
        c.table
    )))
}

/// The table's identifier fields by name: an upsert's key when none is declared.
pub(crate) fn identifier_fields(md: &iceberg::spec::TableMetadata) -> Vec<String> {
    let schema = md.current_schema();
    schema
        .identifier_field_ids()
        .filter_map(|id| schema.name_by_field_id(id).map(str::to_string))
        .collect()
}

/// The upsert's key, checked against the table's current schema.
fn key_of(c: &IngestChange, md: &iceberg::spec::TableMetadata) -> Result<Vec<String>, String> {
    if c.mode != SourceMode::Upsert {
        return Ok(c.key.clone());
    }
    let schema = md.current_schema();
    let key: Vec<String> = if c.key.is_empty() {
        identifier_fields(md)
    } else {
        c.key.clone()
    };
    if key.is_empty() {
        return Err("`mode: upsert` needs a `key:` (the table has no identifier fields)".into());
    }
    for k in &key {
        if !schema.as_struct().fields().iter().any(|f| f.name == *k) {
            return Err(format!(
                "key column `{k}` is not a top-level column of the table"
            ));
        }
    }
    Ok(key)
}

/// Keys of the batch that match existing rows, on the table's current state (`plan
/// --estimate`); `None` for a mode without keys or a table not yet created.
pub async fn estimate(lake: &Lake, c: &IngestChange) -> Result<Option<u64>, String> {
    if c.mode != SourceMode::Upsert {
        return Ok(None);
    }
    let Some(state) = lake
        .load_table(&c.ident())
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let md = &state.metadata;
    let key = key_of(c, md)?;
    let Some(snap) = md.current_snapshot() else {
        return Ok(Some(0));
    };
    let done = lake.ledger(md).await.map_err(|e| e.to_string())?.ingested;
    let (todo, _spool) = spool_s3(lake, c, todo_files(c, &done))
        .await
        .map_err(|e| e.to_string())?;
    let files = crate::mutate::snapshot_files(lake.file_io(), md, snap)
        .await
        .map_err(|e| e.to_string())?;
    let spool = tempfile::tempdir().map_err(|e| e.to_string())?;
    let batch = keyed::read_batch(md, &c.spec, &todo, &key, spool.path())
        .await
        .map_err(|e| e.to_string())?;
    keyed::matching_keys(lake.file_io(), md, &batch, &key, &files)
        .await
        .map(Some)
}

pub async fn apply_keyed(
    lake: &Lake,
    c: &IngestChange,
    progress: Arc<dyn Progress>,
    branch: &str,
) -> Result<(IngestOutcome, Option<TableState>), ApplyError> {
    let ident = c.ident();
    // The batch as read, with the schema id and files it was read for.
    let mut read: Option<(Batch, i32, Vec<String>)> = None;
    let mut local_reason = None;
    for attempt in 0..super::MAX_ATTEMPTS {
        let state = lake.load_on(&ident, branch).await?;
        let md = &state.metadata;
        let done = lake.ledger(md).await?.ingested;
        let todo = todo_files(c, &done);
        if todo.is_empty() {
            return Ok((IngestOutcome::already_applied(md), Some(state)));
        }
        let key = key_of(c, md).map_err(|e| keyed_error(c, e))?;
        if attempt == 0 {
            let bytes = todo.iter().map(|f| f.file.size).sum();
            if let Some(spark) = super::spark::engine_for(lake, bytes) {
                match super::spark::ingest_unsupported(c, &todo) {
                    None => {
                        return super::spark::ingest(lake, spark, c, todo, state, branch, key).await
                    }
                    Some(why) => local_reason = Some(format!("local ({why})")),
                }
            }
        }
        let paths: Vec<String> = todo.iter().map(|f| f.file.path.clone()).collect();
        let reusable = read
            .as_ref()
            .is_some_and(|(_, schema, p)| *schema == md.current_schema_id() && *p == paths);
        if !reusable {
            let (todo, _spool) = spool_s3(lake, c, todo).await?;
            let batch = keyed::read_batch(md, &c.spec, &todo, &key, &c.rejects_dir)
                .await
                .map_err(|e| ingest_error(c, e))?;
            if read.is_none() {
                progress.advance(c.bytes);
            }
            read = Some((batch, md.current_schema_id(), paths));
        }
        let (batch, ..) = read.as_ref().expect("read");
        let files = match md.current_snapshot() {
            Some(s) => crate::mutate::snapshot_files(lake.file_io(), md, s)
                .await
                .map_err(|e| {
                    super::commit_failure(&c.table, CommitError::from(LakeError::from(e)))
                })?,
            None => Default::default(),
        };
        files
            .refuse_deletes()
            .map_err(|e| super::commit_failure(&c.table, refuse(c, e)))?;
        let (write, keys, superseded): (KeyedWrite, Option<u64>, u64) = match c.mode {
            SourceMode::Upsert => {
                let res = keyed::resolve(batch, &key, c.spec.on_duplicate_key)
                    .map_err(|e| keyed_error(c, e))?;
                let (keys, superseded) = (res.keys() as u64, res.superseded);
                let w = keyed::upsert(lake.file_io(), md, batch, res, &key, &files)
                    .await
                    .map_err(|e| super::commit_failure(&c.table, refuse(c, e)))?;
                (w, Some(keys), superseded)
            }
            SourceMode::ReplacePartitions => (
                keyed::replace_partitions(lake.file_io(), md, batch, &files)
                    .await
                    .map_err(|e| super::commit_failure(&c.table, refuse(c, e)))?,
                None,
                0,
            ),
            SourceMode::Replace | SourceMode::Append => (
                keyed::replace(lake.file_io(), md, batch, &files)
                    .await
                    .map_err(|e| super::commit_failure(&c.table, refuse(c, e)))?,
                None,
                0,
            ),
        };
        let outcome = KeyedOutcome {
            mode: c.mode.as_str().into(),
            keys,
            updated: write.updated,
            inserted: write.inserted,
            deleted: write.deleted,
            superseded,
            rows_removed: write.rows_removed,
            files_probed: write.files_probed,
            files_rewritten: write.files_rewritten,
            files_removed: write.removed.len(),
            files_added: write.added.len(),
        };
        let details = match c.mode {
            SourceMode::Upsert => format!(
                "upsert from source `{}` by {}: {} row(s) in {} file(s); {} key(s) updated, {} inserted, {} deleted; {} file(s) rewritten of {} probed",
                c.source,
                key.join(", "),
                batch.num_rows(),
                batch.files.len(),
                outcome.updated,
                outcome.inserted,
                outcome.deleted,
                outcome.files_rewritten,
                outcome.files_probed
            ),
            _ => format!(
                "{} from source `{}`: {} row(s) in {} file(s) replace {} row(s) in {} file(s)",
                c.mode.as_str(),
                c.source,
                batch.num_rows(),
                batch.files.len(),
                outcome.rows_removed,
                outcome.files_removed
            ),
        };
        let annotation = Annotation {
            change: "ingest".into(),
            change_id: c.change_id.clone(),
            manifest: Some(c.manifest.display().to_string()),
            git_commit: super::git_commit(&c.manifest),
            details,
        };
        let mut props: HashMap<String, String> = annotation.to_summary();
        props.insert(ledger::SOURCE.into(), c.source.clone());
        props.insert(
            ledger::INGESTED.into(),
            serde_json::to_string(&batch.files).unwrap_or_default(),
        );
        props.insert("lakectl.mode".into(), c.mode.as_str().into());
        if batch.rejected > 0 {
            props.insert(ledger::REJECTED.into(), batch.rejected.to_string());
        }
        let snapshot = if md.current_snapshot().is_none() {
            append_snapshot(lake.file_io(), md, write.added.clone(), props).await
        } else {
            overwrite_snapshot(
                lake.file_io(),
                md,
                &write.removed,
                write.added.clone(),
                props,
            )
            .await
        }
        .map_err(|e| super::commit_failure(&c.table, CommitError::from(LakeError::from(e))))?;
        let snapshot_id = snapshot.snapshot_id();
        match super::commit_on(lake, &ident, md, snapshot, attempt, branch).await {
            Ok(state) => {
                return Ok((
                    IngestOutcome {
                        files: batch.files.len(),
                        records: batch.num_rows() as u64,
                        data_files: write.added.len(),
                        rejected: batch.rejected,
                        rejects_file: batch.rejects_file.as_ref().map(|p| p.display().to_string()),
                        snapshot_id: Some(snapshot_id),
                        already_applied: false,
                        keyed: Some(outcome),
                        engine: local_reason.clone(),
                    },
                    Some(state),
                ))
            }
            Err(CommitError::Conflict(why)) => {
                // Probed again on the fresh state: rows appended meanwhile are seen.
                super::conflict_backoff(attempt, &c.table, &why).await;
            }
            Err(e) => return Err(super::commit_failure(&c.table, e)),
        }
    }
    Err(super::gave_up(&c.table))
}
