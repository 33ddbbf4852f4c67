//! Applying maintenance: a compaction is one `replace` snapshot; an expiry is
//! [`super::expire::expire`].
//!
//! Compaction, in a retry loop:
//! 1. load the table; plan the compaction again on this state with the planned
//!    policy (level-triggered: another writer may have compacted or added files);
//!    nothing to do is a no-op;
//! 2. rewrite each partition group (`maintain::compact`: deletes applied, all cores);
//! 3. check the rows: without delete files the outputs hold exactly the inputs' rows;
//! 4. commit a `replace` snapshot removing the inputs and the dropped delete files,
//!    requiring `main`, schema and spec as read in 1; a conflict goes back to 1 (the
//!    files written in 2 stay unreferenced, for orphan removal).
//!
//! A crash before the commit leaves the table as it was.

use iceberg::TableUpdate;

use super::ApplyError;
use crate::lake::snapshot::{main_branch, replace_snapshot};
use crate::lake::{Annotation, CommitError, Lake, LakeError, TableState};
use crate::plan::{CompactChange, MergeManifestsChange, OrphansChange};

/// What a compaction did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompactOutcome {
    pub files_in: usize,
    pub bytes_in: u64,
    pub files_out: usize,
    pub bytes_out: u64,
    pub records: u64,
    pub partitions: usize,
    pub deletes_dropped: usize,
    pub snapshot_id: Option<i64>,
    /// Nothing to compact any more on the fresh state (another writer did it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub already_applied: bool,
}

const ATTEMPTS: u32 = 4;

pub async fn apply_compaction(
    lake: &Lake,
    c: &CompactChange,
) -> Result<(CompactOutcome, TableState), ApplyError> {
    let ident = c.ident();
    let fail = |reason: String| ApplyError::NoLongerApplies {
        table: c.table.clone(),
        reason: format!("compaction: {reason}; nothing was committed"),
    };
    for attempt in 0..ATTEMPTS {
        let state = lake
            .load_table(&ident)
            .await?
            .ok_or_else(|| LakeError::NoSuchTable(c.table.clone()))?;
        let md = &state.metadata;
        let Some(snapshot) = md.current_snapshot() else {
            return Ok((
                CompactOutcome {
                    already_applied: true,
                    ..Default::default()
                },
                state,
            ));
        };
        let files = crate::mutate::snapshot_files(lake.file_io(), md, snapshot).await?;
        let plan = crate::maintain::plan_compaction(&files, md, &c.policy);
        if plan.is_empty() {
            let outcome = CompactOutcome {
                already_applied: true,
                snapshot_id: Some(snapshot.snapshot_id()),
                ..Default::default()
            };
            return Ok((outcome, state));
        }
        let table = iceberg::table::Table::builder()
            .file_io(lake.file_io().clone())
            .metadata_location(state.metadata_location.clone())
            .metadata(md.clone())
            .identifier(ident.clone())
            .readonly(true)
            .runtime(iceberg::Runtime::try_current()?)
            .build()?;
        let outputs = crate::maintain::compact(lake.file_io(), md, table, &plan, &c.policy)
            .await
            .map_err(fail)?;
        let records_in: u64 = plan.groups.iter().map(|g| g.records).sum();
        let records_out: u64 = outputs.iter().map(|f| f.record_count()).sum();
        let with_deletes = plan.groups.iter().any(|g| g.deletes > 0);
        if !with_deletes && records_in != records_out {
            return Err(fail(format!(
                "read {records_out} row(s) from input files that hold {records_in}"
            )));
        }
        let mut removed: std::collections::HashSet<String> = plan
            .groups
            .iter()
            .flat_map(|g| g.files.iter().cloned())
            .collect();
        removed.extend(plan.dropped_deletes.iter().cloned());
        let outcome = CompactOutcome {
            files_in: plan.input_files(),
            bytes_in: plan.input_bytes(),
            files_out: outputs.len(),
            bytes_out: outputs.iter().map(|f| f.file_size_in_bytes()).sum(),
            records: records_out,
            partitions: plan.groups.len(),
            deletes_dropped: plan.dropped_deletes.len(),
            snapshot_id: None,
            already_applied: false,
        };
        let annotation = Annotation {
            change: "compact".into(),
            change_id: format!("compact:{}@{}", c.table, snapshot.snapshot_id()),
            manifest: Some(c.manifest.display().to_string()),
            git_commit: super::git_commit(&c.manifest),
            details: format!(
                "{} file(s) ({} B) → {} file(s) ({} B) in {} partition(s); {} delete file(s) applied and dropped",
                outcome.files_in,
                outcome.bytes_in,
                outcome.files_out,
                outcome.bytes_out,
                outcome.partitions,
                outcome.deletes_dropped
            ),
        };
        let new = replace_snapshot(
            lake.file_io(),
            md,
            &removed,
            outputs,
            annotation.to_summary(),
            c.merge,
        )
        .await?;
        let snapshot_id = new.snapshot_id();
        let (branch, reference) = main_branch(snapshot_id);
        let updates = vec![
            TableUpdate::AddSnapshot { snapshot: new },
            TableUpdate::SetSnapshotRef {
                ref_name: branch,
                reference,
            },
        ];
        if attempt == 0 {
            super::fault_delay().await;
        }
        match lake
            .commit(&ident, &crate::lake::pin_state(md), updates)
            .await
        {
            Ok(state) => {
                return Ok((
                    CompactOutcome {
                        snapshot_id: Some(snapshot_id),
                        ..outcome
                    },
                    state,
                ))
            }
            Err(CommitError::Conflict(why)) => {
                tracing::info!(
                    "compaction of {}: {why}; planning again on fresh state",
                    c.table
                );
            }
            Err(e) => return Err(super::commit_failure(&c.table, e)),
        }
    }
    Err(ApplyError::Commit {
        table: c.table.clone(),
        source: CommitError::Conflict(format!(
            "compaction gave up after {ATTEMPTS} attempts: other writers kept committing"
        )),
    })
}

/// What an orphan removal did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct OrphansOutcome {
    pub files_removed: usize,
    pub bytes_removed: u64,
    /// Planned files that were no longer orphans (a commit referenced them since) or
    /// could not be deleted.
    pub kept: usize,
}

/// Deletes the orphan files of `c.table` that are still orphans: they are found again
/// on the table's fresh metadata, and only files in both lists go.
pub async fn remove_orphans(lake: &Lake, c: &OrphansChange) -> Result<OrphansOutcome, ApplyError> {
    let state = lake
        .load_table(&c.ident())
        .await?
        .ok_or_else(|| LakeError::NoSuchTable(c.table.clone()))?;
    let now = crate::maintain::orphans::find(
        lake,
        &state.metadata,
        &state.metadata_location,
        c.older_than_hours,
    )
    .await
    .map_err(|reason| ApplyError::NoLongerApplies {
        table: c.table.clone(),
        reason: format!("orphan files: {reason}; nothing was deleted"),
    })?;
    let planned: std::collections::HashSet<&String> = c.files.iter().collect();
    let mut out = OrphansOutcome::default();
    for f in now.iter().filter(|f| planned.contains(&f.path)) {
        match lake.file_io().delete(&f.path).await {
            Ok(()) => {
                out.files_removed += 1;
                out.bytes_removed += f.size;
            }
            Err(e) => tracing::warn!("could not delete {}: {e}", f.path),
        }
    }
    out.kept = c.files.len() - out.files_removed;
    Ok(out)
}

/// Merges a table's small data manifests in one `replace` snapshot (no data change),
/// retried on fresh state after a conflict.
pub async fn merge_manifests(
    lake: &Lake,
    c: &MergeManifestsChange,
) -> Result<TableState, ApplyError> {
    let ident = c.ident();
    crate::lake::retry_on_conflict(super::MAX_ATTEMPTS, |_| {
        let ident = ident.clone();
        async move {
            let state = lake
                .load_table(&ident)
                .await?
                .ok_or_else(|| LakeError::NoSuchTable(c.table.clone()))?;
            let md = &state.metadata;
            let annotation = Annotation {
                change: "merge-manifests".into(),
                change_id: format!(
                    "merge-manifests:{}@{}",
                    c.table,
                    md.current_snapshot_id().unwrap_or_default()
                ),
                manifest: Some(c.manifest.display().to_string()),
                git_commit: super::git_commit(&c.manifest),
                details: format!(
                    "data manifests under {} B merged (there were {})",
                    c.policy.target_bytes, c.manifests
                ),
            };
            let new = crate::lake::snapshot::merge_snapshot(
                lake.file_io(),
                md,
                c.policy,
                annotation.to_summary(),
            )
            .await?;
            let (branch, reference) = main_branch(new.snapshot_id());
            let updates = vec![
                TableUpdate::AddSnapshot { snapshot: new },
                TableUpdate::SetSnapshotRef {
                    ref_name: branch,
                    reference,
                },
            ];
            lake.commit(&ident, &crate::lake::pin_state(md), updates)
                .await
        }
    })
    .await
    .map_err(|e| super::commit_failure(&c.table, e))
}
