//! Applying a mutation: copy-on-write, one `overwrite` (or `delete`) snapshot.
//!
//! In a retry loop, on fresh state each time:
//! 1. load the table; a mutation the ledger already has is a no-op;
//! 2. compile its SQL against the current schema; list the live data files and keep
//!    those whose statistics may match ([`crate::mutate::candidates`]);
//! 3. count the matching rows in each candidate (reading the predicate's columns only);
//!    files with none are left alone; more rows than the mutation's limit stops here,
//!    nothing written;
//! 4. rewrite the files with matching rows (a delete that matches every row of a file
//!    just removes it), then commit one snapshot marking the old files DELETED and
//!    adding the new ones, requiring `main`, schema and spec as read in 1. A conflict
//!    goes back to 1 (the files written stay unreferenced orphans).
//!
//! A crash before the commit leaves the table at its old snapshot; re-running applies
//! the mutation once.

use std::collections::{HashMap, HashSet};

use super::ApplyError;
use crate::lake::snapshot::{append_snapshot, overwrite_snapshot};
use crate::lake::{Annotation, CommitError, Lake, LakeError, TableState};
use crate::mutate::{self, expr, LiveFile};
use crate::plan::MutationChange;

/// Summary key: the mutation's name.
pub const MUTATION: &str = "lakectl.mutation";
/// Summary key: rows the mutation changed (updated or deleted).
pub const ROWS_CHANGED: &str = "lakectl.rows-changed";

/// What a mutation did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MutationOutcome {
    pub rows_changed: u64,
    /// Files whose statistics may match (read to count matches).
    pub files_read: usize,
    pub files_rewritten: usize,
    /// Files removed whole (a delete matching all their rows).
    pub files_removed: usize,
    pub files_added: usize,
    pub files_untouched: usize,
    pub snapshot_id: Option<i64>,
    /// Already in the ledger: nothing done.
    pub already_applied: bool,
    /// `spark` when the rewrite ran there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// The annotation of a mutation's snapshot.
pub(crate) fn annotation(c: &MutationChange, outcome: &MutationOutcome) -> Annotation {
    let is_delete = matches!(c.action, expr::Action::Delete { .. });
    Annotation {
        change: "mutation".into(),
        change_id: c.change_id.clone(),
        manifest: Some(c.manifest.display().to_string()),
        git_commit: super::git_commit(&c.manifest),
        details: format!(
            "{} `{}`: {} row(s) {}; {} file(s) rewritten, {} removed, {} untouched{}; where {}",
            c.action.kind(),
            c.name,
            outcome.rows_changed,
            if is_delete { "deleted" } else { "updated" },
            outcome.files_rewritten,
            outcome.files_removed,
            outcome.files_untouched,
            outcome
                .engine
                .as_ref()
                .map(|e| format!(" (engine: {e})"))
                .unwrap_or_default(),
            c.action.predicate()
        ),
    }
}

fn fail(c: &MutationChange, reason: impl std::fmt::Display) -> CommitError {
    CommitError::Failed(LakeError::Unsupported(format!(
        "mutation `{}` ({}): {reason}; nothing was committed",
        c.name, c.at
    )))
}

/// Matching rows of a mutation on the table's current state (`plan --estimate`).
pub async fn estimate(lake: &Lake, c: &MutationChange) -> Result<Option<u64>, String> {
    let Some(state) = lake
        .load_table(&c.ident())
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let md = &state.metadata;
    let Some(snap) = md.current_snapshot() else {
        return Ok(Some(0));
    };
    let files = mutate::snapshot_files(lake.file_io(), md, snap)
        .await
        .map_err(|e| e.to_string())?;
    let Ok(refs) = mutate::candidate_files(&files.files, md, c.action.predicate()) else {
        return Ok(None);
    };
    let counts = mutate::count_matches(lake.file_io(), md, &refs, c.action.predicate()).await?;
    Ok(Some(counts.iter().sum()))
}

pub async fn apply_mutation(
    lake: &Lake,
    c: &MutationChange,
    branch: &str,
) -> Result<(MutationOutcome, TableState), ApplyError> {
    let ident = c.ident();
    let result = crate::lake::retry_on_conflict(super::MAX_ATTEMPTS, |attempt| {
        let ident = ident.clone();
        async move {
            let state = lake.load_on(&ident, branch).await?;
            let md = &state.metadata;
            if lake.ledger(md).await?.changes.contains(&c.change_id) {
                let outcome = MutationOutcome {
                    already_applied: true,
                    snapshot_id: md.current_snapshot_id(),
                    ..Default::default()
                };
                return Ok((outcome, state));
            }
            let schema = mutate::arrow_schema(md)?;
            let compiled = expr::compile(&c.action, &schema).map_err(|errs| {
                fail(
                    c,
                    errs.into_iter()
                        .map(|e| e.message)
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })?;
            let files = match md.current_snapshot() {
                Some(s) => mutate::snapshot_files(lake.file_io(), md, s).await?,
                None => Default::default(),
            };
            files.refuse_deletes().map_err(|e| fail(c, e))?;
            let idx = mutate::candidates(&files.files, md, &schema, &compiled.predicate);
            let cands: Vec<&LiveFile> = idx.iter().map(|i| &files.files[*i]).collect();
            let bytes = cands.iter().map(|f| f.data_file().file_size_in_bytes()).sum();
            if let Some(spark) = super::spark::engine_for(lake, bytes) {
                let limit = c.limit(files.records());
                let done = super::spark::mutation(
                    lake,
                    spark,
                    c,
                    &state,
                    limit,
                    files.files.len(),
                    cands.len(),
                    attempt,
                    branch,
                )
                .await?;
                return done.ok_or_else(|| {
                    CommitError::Conflict("another writer committed during the Spark job".into())
                });
            }
            let counts =
                mutate::count_matches(lake.file_io(), md, &cands, c.action.predicate())
                    .await
                    .map_err(|e| fail(c, e))?;
            let rows: u64 = counts.iter().sum();
            let total = files.records();
            if let Some(limit) = c.limit(total) {
                if rows > limit {
                    let why = match c.max_rows_changed {
                        Some(n) => format!("its maxRowsChanged is {n}"),
                        None => format!(
                            "more than policy.maxMutationShare ({}) of the table needs `spec.policy.allowDestructive: true` or a `maxRowsChanged` on the mutation",
                            c.max_share
                        ),
                    };
                    return Err(fail(
                        c,
                        format!("it would change {rows} of {total} row(s); {why}"),
                    ));
                }
            }
            let matched: Vec<(&LiveFile, u64)> = cands
                .iter()
                .zip(&counts)
                .filter(|(_, n)| **n > 0)
                .map(|(f, n)| (*f, *n))
                .collect();
            let is_delete = matches!(c.action, expr::Action::Delete { .. });
            let (whole, partial): (Vec<_>, Vec<_>) = matched
                .iter()
                .partition(|(f, n)| is_delete && *n == f.entry.record_count());
            let to_rewrite: Vec<&LiveFile> = partial.iter().map(|(f, _)| *f).collect();
            let rewritten = mutate::rewrite(lake.file_io(), md, &to_rewrite, &c.action)
                .await
                .map_err(|e| fail(c, e))?;
            let added: Vec<iceberg::spec::DataFile> = rewritten
                .iter()
                .flat_map(|r| r.new_files.iter().cloned())
                .collect();
            let outcome = MutationOutcome {
                rows_changed: rows,
                files_read: cands.len(),
                files_rewritten: to_rewrite.len(),
                files_removed: whole.len(),
                files_added: added.len(),
                files_untouched: files.files.len() - matched.len(),
                snapshot_id: None,
                already_applied: false,
                engine: None,
            };
            let annotation = annotation(c, &outcome);
            let mut props: HashMap<String, String> = annotation.to_summary();
            props.insert(MUTATION.into(), c.name.clone());
            props.insert(ROWS_CHANGED.into(), rows.to_string());
            let snapshot = if rows == 0 {
                // Recorded all the same, so the mutation is applied once.
                append_snapshot(lake.file_io(), md, Vec::new(), props).await?
            } else {
                let removed: HashSet<String> =
                    matched.iter().map(|(f, _)| f.path().to_string()).collect();
                overwrite_snapshot(lake.file_io(), md, &removed, added, props).await?
            };
            let snapshot_id = snapshot.snapshot_id();
            let state = super::commit_on(lake, &ident, md, snapshot, attempt, branch).await?;
            Ok((
                MutationOutcome {
                    snapshot_id: Some(snapshot_id),
                    ..outcome
                },
                state,
            ))
        }
    })
    .await;
    result.map_err(|e| super::commit_failure(&c.table, e))
}
