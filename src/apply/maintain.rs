//! Applying maintenance: a compaction is one `replace` snapshot; an expiry is
//! [`super::expire::expire`].
//!
//! Compaction:
//! 1. load the table; plan the compaction again on this state with the planned
//!    policy (level-triggered: another writer may have compacted or added files);
//!    nothing to do is a no-op;
//! 2. rewrite each partition group (`maintain::compact`: deletes applied, all cores);
//! 3. check the rows: a group without delete files holds exactly its inputs' rows;
//! 4. commit a `replace` snapshot removing the inputs and the dropped delete files,
//!    requiring `main`, schema and spec as read;
//! 5. on a conflict, replay on fresh state without rewriting: a group stays if its
//!    inputs are still live and no delete file that may apply to them came since
//!    ([`CompactGroup::still_valid`]); the others are dropped (their outputs become
//!    orphans), the droppable deletes are decided again, and the commit is built on
//!    the fresh snapshot. A change of schema or spec starts over at 1.
//!
//! Appends by other writers thus never starve a long compaction. A crash before the
//! commit leaves the table as it was.

use std::collections::HashSet;

use iceberg::spec::DataFile;
use iceberg::TableUpdate;

use super::ApplyError;
use crate::lake::snapshot::{main_branch, replace_snapshot};
use crate::lake::{Annotation, CommitError, Lake, LakeError, TableState};
use crate::maintain::CompactGroup;
use crate::plan::{CompactChange, MergeManifestsChange, OrphansChange};
use iceberg::spec::MAIN_BRANCH;

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
    /// Groups left out because another writer changed their files meanwhile.
    #[serde(skip_serializing_if = "is_zero")]
    pub groups_dropped: usize,
    pub snapshot_id: Option<i64>,
    /// Nothing to compact any more on the fresh state (another writer did it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub already_applied: bool,
    /// `spark` when the rewrite ran there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Times the whole compaction starts over (a schema or spec change meanwhile).
const FRESH_STARTS: u32 = 3;

pub async fn apply_compaction(
    lake: &Lake,
    c: &CompactChange,
) -> Result<(CompactOutcome, TableState), ApplyError> {
    for _ in 0..FRESH_STARTS {
        if let Some(done) = compact_once(lake, c).await? {
            return Ok(done);
        }
    }
    Err(ApplyError::Commit {
        table: c.table.clone(),
        source: CommitError::Conflict(format!(
            "compaction gave up after {FRESH_STARTS} starts: the table's schema or spec kept changing"
        )),
    })
}

/// One compaction from a fresh read; `None` when the table's structure changed under
/// it (start over).
async fn compact_once(
    lake: &Lake,
    c: &CompactChange,
) -> Result<Option<(CompactOutcome, TableState)>, ApplyError> {
    let ident = c.ident();
    let fail = |reason: String| ApplyError::NoLongerApplies {
        table: c.table.clone(),
        reason: format!("compaction: {reason}; nothing was committed"),
    };
    let load = || async {
        lake.load_table(&ident)
            .await?
            .ok_or_else(|| ApplyError::from(LakeError::NoSuchTable(c.table.clone())))
    };
    let state = load().await?;
    let md = &state.metadata;
    let Some(snapshot) = md.current_snapshot() else {
        let outcome = CompactOutcome {
            already_applied: true,
            ..Default::default()
        };
        return Ok(Some((outcome, state)));
    };
    let files = crate::mutate::snapshot_files(lake.file_io(), md, snapshot).await?;
    let plan = crate::maintain::plan_compaction(&files, md, &c.policy);
    if plan.is_empty() {
        let outcome = CompactOutcome {
            already_applied: true,
            snapshot_id: Some(snapshot.snapshot_id()),
            ..Default::default()
        };
        return Ok(Some((outcome, state)));
    }
    let bytes: u64 = plan.groups.iter().map(|g| g.bytes).sum();
    // The Spark job's scratch branch, dropped in the commit.
    let mut scratch: Option<String> = None;
    let mut job_ids = None;
    let outputs = match super::spark::engine_for(lake, bytes) {
        Some(spark) => {
            let (outputs, ids, branch) =
                super::spark::compact(lake, spark, &c.table, &state, &plan.groups)
                    .await
                    .map_err(|message| ApplyError::Engine {
                        table: c.table.clone(),
                        change: "compaction".into(),
                        message,
                    })?;
            scratch = Some(branch);
            job_ids = Some(ids);
            outputs
        }
        None => {
            let table = iceberg::table::Table::builder()
                .file_io(lake.file_io().clone())
                .metadata_location(state.metadata_location.clone())
                .metadata(md.clone())
                .identifier(ident.clone())
                .readonly(true)
                .runtime(iceberg::Runtime::try_current()?)
                .build()?;
            crate::maintain::compact(lake.file_io(), md, table, &plan, &c.policy)
                .await
                .map_err(fail)?
        }
    };
    for (g, out) in plan.groups.iter().zip(&outputs) {
        let written: u64 = out.iter().map(|f| f.record_count()).sum();
        if g.deletes == 0 && written != g.records {
            if let Some(b) = &scratch {
                super::spark::discard(lake, &c.table, b).await;
            }
            return Err(fail(format!(
                "{}: read {written} row(s) from input files that hold {}",
                g.partition, g.records
            )));
        }
    }
    let structure = (md.current_schema_id(), md.default_partition_spec_id());
    let deletes_before: HashSet<String> =
        files.deletes.iter().map(|d| d.path().to_string()).collect();
    let mut kept: Vec<(CompactGroup, Vec<DataFile>)> =
        plan.groups.into_iter().zip(outputs).collect();
    let mut dropped_deletes = plan.dropped_deletes;
    let mut groups_dropped = 0;
    let mut current = state;
    for attempt in 0..super::MAX_ATTEMPTS {
        // After a Spark job the table may have moved on while it ran: as after a
        // conflict, the groups are checked again on the fresh state.
        if attempt > 0 || scratch.is_some() {
            current = load().await?;
            let md = &current.metadata;
            if (md.current_schema_id(), md.default_partition_spec_id()) != structure {
                return Ok(None);
            }
            let Some(now) = md.current_snapshot() else {
                return Ok(None);
            };
            let now = crate::mutate::snapshot_files(lake.file_io(), md, now).await?;
            let before = kept.len();
            kept.retain(|(g, _)| g.still_valid(&now, &deletes_before));
            groups_dropped += before - kept.len();
            let groups: Vec<CompactGroup> = kept.iter().map(|(g, _)| g.clone()).collect();
            dropped_deletes = crate::maintain::droppable_deletes(&now, &groups);
            if kept.is_empty() {
                let outcome = CompactOutcome {
                    already_applied: true,
                    groups_dropped,
                    snapshot_id: md.current_snapshot_id(),
                    ..Default::default()
                };
                return Ok(Some((outcome, current)));
            }
        }
        let md = &current.metadata;
        let snapshot_id = md.current_snapshot_id().unwrap_or_default();
        let added: Vec<DataFile> = kept.iter().flat_map(|(_, o)| o.iter().cloned()).collect();
        let mut removed: HashSet<String> = kept
            .iter()
            .flat_map(|(g, _)| g.files.iter().cloned())
            .collect();
        removed.extend(dropped_deletes.iter().cloned());
        let outcome = CompactOutcome {
            files_in: kept.iter().map(|(g, _)| g.files.len()).sum(),
            bytes_in: kept.iter().map(|(g, _)| g.bytes).sum(),
            files_out: added.len(),
            bytes_out: added.iter().map(|f| f.file_size_in_bytes()).sum(),
            records: added.iter().map(|f| f.record_count()).sum(),
            partitions: kept.len(),
            deletes_dropped: dropped_deletes.len(),
            groups_dropped,
            snapshot_id: None,
            already_applied: false,
            engine: None,
        };
        let annotation = Annotation {
            change: "compact".into(),
            change_id: format!("compact:{}@{snapshot_id}", c.table),
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
            ) + if job_ids.is_some() { " (engine: spark)" } else { "" },
        };
        let mut props = annotation.to_summary();
        if let Some(ids) = &job_ids {
            props.insert(super::spark::ENGINE.into(), "spark".into());
            props.insert(crate::lake::ledger::ENGINE_SNAPSHOTS.into(), ids.clone());
        }
        let new = replace_snapshot(lake.file_io(), md, &removed, added, props, c.merge).await?;
        let new_id = new.snapshot_id();
        let extra = scratch
            .as_deref()
            .map(|b| super::spark::drop_scratch(md, b))
            .unwrap_or_default();
        match super::commit_on_with(lake, &ident, md, new, attempt, MAIN_BRANCH, extra).await {
            Ok(state) => {
                let outcome = CompactOutcome {
                    snapshot_id: Some(new_id),
                    engine: scratch.as_ref().map(|_| "spark".to_string()),
                    ..outcome
                };
                return Ok(Some((outcome, state)));
            }
            Err(CommitError::Conflict(why)) => {
                super::conflict_backoff(attempt, &format!("compaction of {}", c.table), &why).await;
            }
            Err(e) => return Err(super::commit_failure(&c.table, e)),
        }
    }
    Err(ApplyError::Commit {
        table: c.table.clone(),
        source: CommitError::Conflict(format!(
            "compaction gave up after {} attempts: other writers kept committing",
            super::MAX_ATTEMPTS
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
    let state = lake.load_existing(&c.ident()).await?;
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
            let state = lake.load_existing(&ident).await?;
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
