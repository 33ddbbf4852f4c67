//! Rollback: moves `main` back to an earlier snapshot through the commit path, and
//! restores the table's structure at that snapshot: its schema (the snapshot's
//! `schema-id`), partition spec and sort order (recorded by lakectl in each snapshot's
//! summary; for other writers' snapshots, the spec of the manifests it wrote).
//!
//! The lakectl changes the rollback takes out of `main` (ingests, mutations, schema
//! changes) are recorded in the table property `lakectl.held-back`, in the same commit,
//! so `plan`/`apply`/`watch` do not apply them again until the manifest drops them or
//! `apply --reapply ID` releases one. Moving `main` forward again (to a snapshot left
//! behind by a rollback) releases the changes it brings back.

use std::collections::{HashMap, HashSet};

use iceberg::spec::{SnapshotRef, TableMetadata};
use iceberg::{TableIdent, TableUpdate};
use serde::Serialize;

use super::{ApplyError, MAX_ATTEMPTS};
use crate::lake::snapshot::{main_branch, SORT_ORDER_ID, SPEC_ID};
use crate::lake::{ledger, retry_on_conflict, CommitError, Lake, LakeError};

/// Where to roll back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Any snapshot of the table (also one left behind by an earlier rollback).
    Snapshot(i64),
    /// The newest snapshot of `main` at or before this time (ms since the epoch).
    Time(i64),
    /// `N` snapshots back along `main`.
    Steps(usize),
}

/// What a rollback changes (shown by `--dry-run`, returned after the commit).
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    pub table: String,
    pub from_snapshot: Option<i64>,
    pub to_snapshot: i64,
    pub to_time: String,
    pub rows_before: Option<u64>,
    pub rows_after: Option<u64>,
    /// (from, to) when it changes.
    pub schema_id: Option<(i32, i32)>,
    pub spec_id: Option<(i32, i32)>,
    pub sort_order_id: Option<(i64, i64)>,
    pub schema_before: Vec<String>,
    pub schema_after: Vec<String>,
    /// Changes this rollback takes out (held back from now on).
    pub held_back: Vec<ledger::HeldBack>,
    /// Held-back changes that are back in `main` after it.
    pub released: Vec<String>,
    pub committed: bool,
}

fn total_records(s: &SnapshotRef) -> Option<u64> {
    s.summary()
        .additional_properties
        .get("total-records")
        .and_then(|v| v.parse().ok())
}

/// Resolves the target snapshot on `md`.
pub fn resolve(md: &TableMetadata, target: Target) -> Result<SnapshotRef, String> {
    let anc = ledger::ancestry(md);
    let s = match target {
        Target::Snapshot(id) => md
            .snapshot_by_id(id)
            .cloned()
            .ok_or_else(|| format!("the table has no snapshot {id}"))?,
        Target::Steps(0) => return Err("--steps must be at least 1".into()),
        Target::Steps(n) => anc.get(n).cloned().ok_or_else(|| {
            format!(
                "`main` has only {} earlier snapshot(s) (after expiry)",
                anc.len().saturating_sub(1)
            )
        })?,
        Target::Time(ms) => anc
            .iter()
            .find(|s| s.timestamp_ms() <= ms)
            .cloned()
            .ok_or_else(|| "`main` has no snapshot at or before that time".to_string())?,
    };
    if md.current_snapshot_id() == Some(s.snapshot_id()) {
        return Err(format!("`main` is already at snapshot {}", s.snapshot_id()));
    }
    Ok(s)
}

/// The partition spec a snapshot was made under: lakectl's record, else the spec of
/// the manifests the snapshot added, else the current one.
async fn spec_of(lake: &Lake, md: &TableMetadata, s: &SnapshotRef) -> i32 {
    let props = &s.summary().additional_properties;
    if let Some(id) = props.get(SPEC_ID).and_then(|v| v.parse().ok()) {
        return id;
    }
    if let Ok(bytes) = async { lake.file_io().new_input(s.manifest_list())?.read().await }.await {
        if let Ok(list) =
            iceberg::spec::ManifestList::parse_with_version(&bytes, md.format_version())
        {
            if let Some(m) = list
                .entries()
                .iter()
                .find(|m| m.added_snapshot_id == s.snapshot_id())
            {
                return m.partition_spec_id;
            }
        }
    }
    md.default_partition_spec_id()
}

/// Computes the rollback of `md` to `to` and the updates that make it.
async fn prepare(
    lake: &Lake,
    table: &str,
    md: &TableMetadata,
    to: &SnapshotRef,
) -> Result<(Rollback, Vec<TableUpdate>), LakeError> {
    let old: Vec<SnapshotRef> = ledger::ancestry(md);
    let new_md_anc = ledger::ancestry_from(md, Some(to.snapshot_id()));
    let new_ids: HashSet<i64> = new_md_anc.iter().map(|s| s.snapshot_id()).collect();
    let new_changes: HashSet<String> = new_md_anc
        .iter()
        .filter_map(|s| {
            s.summary()
                .additional_properties
                .get(ledger::CHANGE_ID)
                .cloned()
        })
        .collect();
    let mut held = ledger::held_back(md);
    let released: Vec<String> = held
        .iter()
        .filter(|h| new_changes.contains(&h.change_id))
        .map(|h| h.change_id.clone())
        .collect();
    held.retain(|h| !new_changes.contains(&h.change_id));
    let mut taken = Vec::new();
    for s in old.iter().filter(|s| !new_ids.contains(&s.snapshot_id())) {
        let props = &s.summary().additional_properties;
        let Some(a) = ledger::Annotation::from_summary(props) else {
            continue;
        };
        if a.change_id.is_empty() || new_changes.contains(&a.change_id) {
            continue;
        }
        let files = lake
            .ingested_by(s)
            .await?
            .into_iter()
            .map(|f| f.path)
            .collect();
        let h = ledger::HeldBack {
            change_id: a.change_id.clone(),
            change: a.change.clone(),
            details: a.details.clone(),
            snapshot_id: s.snapshot_id(),
            files,
        };
        if !held.iter().any(|x| x.change_id == h.change_id) {
            held.push(h.clone());
        }
        taken.push(h);
    }

    let mut updates = Vec::new();
    let schema_to = to.schema_id().unwrap_or(md.current_schema_id());
    let schema_id =
        (schema_to != md.current_schema_id()).then_some((md.current_schema_id(), schema_to));
    if schema_id.is_some() {
        updates.push(TableUpdate::SetCurrentSchema {
            schema_id: schema_to,
        });
    }
    let spec_to = spec_of(lake, md, to).await;
    let spec_id = (spec_to != md.default_partition_spec_id()
        && md.partition_spec_by_id(spec_to).is_some())
    .then_some((md.default_partition_spec_id(), spec_to));
    if spec_id.is_some() {
        updates.push(TableUpdate::SetDefaultSpec { spec_id: spec_to });
    }
    let sort_to: i64 = to
        .summary()
        .additional_properties
        .get(SORT_ORDER_ID)
        .and_then(|v| v.parse().ok())
        .unwrap_or(md.default_sort_order_id());
    let sort_order_id = (sort_to != md.default_sort_order_id()
        && md.sort_order_by_id(sort_to).is_some())
    .then_some((md.default_sort_order_id(), sort_to));
    if sort_order_id.is_some() {
        updates.push(TableUpdate::SetDefaultSortOrder {
            sort_order_id: sort_to,
        });
    }
    let (branch, reference) = main_branch(to.snapshot_id());
    updates.push(TableUpdate::SetSnapshotRef {
        ref_name: branch,
        reference,
    });
    // The drift baseline the target was made under (a rollback is lakectl's change,
    // not drift).
    let baseline = new_md_anc.iter().find_map(|s| {
        s.summary()
            .additional_properties
            .get(crate::plan::drift::DESIRED)
            .cloned()
    });
    if let Some(b) =
        baseline.filter(|b| md.properties().get(crate::plan::drift::DESIRED) != Some(b))
    {
        updates.push(TableUpdate::SetProperties {
            updates: HashMap::from([(crate::plan::drift::DESIRED.to_string(), b)]),
        });
    }
    if held != ledger::held_back(md) {
        if held.is_empty() {
            updates.push(TableUpdate::RemoveProperties {
                removals: vec![ledger::HELD_BACK.to_string()],
            });
        } else {
            updates.push(TableUpdate::SetProperties {
                updates: HashMap::from([(
                    ledger::HELD_BACK.to_string(),
                    serde_json::to_string(&held).unwrap_or_default(),
                )]),
            });
        }
    }
    let lines = |id: i32| {
        md.schema_by_id(id)
            .map(|s| crate::plan::schema::render_lines(&crate::plan::schema::nodes_of(s)))
            .unwrap_or_default()
    };
    let r = Rollback {
        table: table.to_string(),
        from_snapshot: md.current_snapshot_id(),
        to_snapshot: to.snapshot_id(),
        to_time: chrono::DateTime::from_timestamp_millis(to.timestamp_ms())
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default(),
        rows_before: md.current_snapshot().and_then(total_records),
        rows_after: total_records(to),
        schema_id,
        spec_id,
        sort_order_id,
        schema_before: lines(md.current_schema_id()),
        schema_after: lines(schema_to),
        held_back: taken,
        released,
        committed: false,
    };
    Ok((r, updates))
}

/// Rolls `ident` back to `target` (or only computes it with `dry_run`).
pub async fn rollback(
    lake: &Lake,
    ident: &TableIdent,
    target: Target,
    dry_run: bool,
) -> Result<Rollback, ApplyError> {
    let table = ident.to_string();
    let result = retry_on_conflict(MAX_ATTEMPTS, |_| {
        let table = table.clone();
        async move {
            let state = lake.load_existing(ident).await?;
            let md = &state.metadata;
            if !dry_run && crate::plan::drift::is_protected(md) {
                return Err(CommitError::Failed(LakeError::Unsupported(format!(
                    "{table} is protected (`policy.protect` in its manifest): rollback is refused"
                ))));
            }
            let to =
                resolve(md, target).map_err(|e| CommitError::Failed(LakeError::Unsupported(e)))?;
            let (mut r, updates) = prepare(lake, &table, md, &to).await?;
            if dry_run {
                return Ok(r);
            }
            lake.commit(ident, &crate::lake::pin_state(md), updates)
                .await?;
            r.committed = true;
            Ok(r)
        }
    })
    .await;
    result.map_err(|e| super::commit_failure(&table, e))
}
