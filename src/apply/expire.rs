//! Restore-point tags and snapshot expiry.
//!
//! `apply` can tag the snapshot it leaves a table at (`spec.retention.tagApplies`,
//! `apply --tag NAME`): an Iceberg tag ref, which `expire` never removes while it lives.
//!
//! [`expire`] keeps: every snapshot a ref (branch or live tag) points at, the newest
//! `keepLast` snapshots of `main`, and every snapshot younger than `maxSnapshotAgeDays`.
//! The rest are removed in one commit, which also archives their ledger entries (change
//! ids, ingested files) into the `lakectl.ledger-archive` property, so nothing they
//! applied is applied again. Only after that commit lands are the files deleted that
//! only expired snapshots referenced (manifest lists, manifests, data files); a crash
//! in between leaves unreferenced files, never a table missing a file.

use std::collections::{HashMap, HashSet};

use iceberg::spec::{ManifestList, SnapshotReference, SnapshotRetention, TableMetadata};
use iceberg::{TableIdent, TableRequirement, TableUpdate};
use serde::Serialize;

use super::{ApplyError, MAX_ATTEMPTS};
use crate::lake::{ledger, retry_on_conflict, CommitError, Lake};

pub use crate::maintain::Retention;

pub use crate::lake::refs;

/// What an expiry removes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Expiry {
    pub table: String,
    pub expired_snapshots: Vec<i64>,
    pub kept_snapshots: usize,
    pub expired_refs: Vec<String>,
    /// Files only expired snapshots reference.
    pub files_to_delete: Vec<String>,
    pub bytes_to_delete: u64,
    pub archived_changes: usize,
    pub committed: bool,
    pub files_deleted: usize,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A manifest's entries: (path, size, live) — live for ADDED and EXISTING.
type Entries = Vec<(String, u64, bool)>;

/// Every file a snapshot references: its manifest list, its manifests, and the files
/// they list, with sizes; `live_only` leaves out files its manifests mark DELETED (they
/// are not part of that snapshot). Manifests are read once across snapshots.
async fn files_of(
    lake: &Lake,
    md: &TableMetadata,
    list: &str,
    live_only: bool,
    seen: &mut HashMap<String, Entries>,
) -> Result<Vec<(String, u64)>, iceberg::Error> {
    let mut out = vec![(list.to_string(), 0)];
    let bytes = lake.file_io().new_input(list)?.read().await?;
    // Collected first: the iterator is not `Send`.
    let entries: Vec<_> = ManifestList::parse_with_version(&bytes, md.format_version())?
        .consume_entries()
        .into_iter()
        .collect();
    for m in entries {
        if !seen.contains_key(&m.manifest_path) {
            let loaded = m.load_manifest(lake.file_io()).await?;
            let files: Entries = loaded
                .entries()
                .iter()
                .map(|e| {
                    (
                        e.file_path().to_string(),
                        e.file_size_in_bytes(),
                        e.is_alive(),
                    )
                })
                .collect();
            seen.insert(m.manifest_path.clone(), files);
        }
        out.push((m.manifest_path.clone(), m.manifest_length as u64));
        out.extend(
            seen[&m.manifest_path]
                .iter()
                .filter(|(_, _, live)| *live || !live_only)
                .map(|(p, size, _)| (p.clone(), *size)),
        );
    }
    Ok(out)
}

async fn prepare(
    lake: &Lake,
    table: &str,
    md: &TableMetadata,
    retention: Retention,
) -> Result<(Expiry, Vec<TableUpdate>), iceberg::Error> {
    let (keep, expired, expired_refs) = crate::maintain::expiry_selection(md, retention, now_ms());
    let main = ledger::ancestry(md);
    let mut e = Expiry {
        table: table.to_string(),
        kept_snapshots: keep.len(),
        expired_refs: expired_refs.clone(),
        ..Default::default()
    };
    if expired.is_empty() && expired_refs.is_empty() {
        return Ok((e, Vec::new()));
    }
    // Files: those of expired snapshots that no kept snapshot references.
    let mut seen = HashMap::new();
    let mut reachable = HashSet::new();
    for s in md.snapshots().filter(|s| keep.contains(&s.snapshot_id())) {
        for (f, _) in files_of(lake, md, s.manifest_list(), true, &mut seen).await? {
            reachable.insert(f);
        }
    }
    let mut doomed: HashMap<String, u64> = HashMap::new();
    for s in md
        .snapshots()
        .filter(|s| expired.contains(&s.snapshot_id()))
    {
        for (f, size) in files_of(lake, md, s.manifest_list(), false, &mut seen).await? {
            if !reachable.contains(&f) {
                doomed.insert(f, size);
            }
        }
    }
    let mut files: Vec<String> = doomed.keys().cloned().collect();
    files.sort();
    e.bytes_to_delete = doomed.values().sum();
    e.files_to_delete = files;
    // The ledger of every ancestor of `main` the ancestry walk no longer reaches after
    // expiry (expired ones, and kept ones behind an expired parent) moves to the archive.
    let reachable_after: HashSet<i64> = main
        .iter()
        .take_while(|s| !expired.contains(&s.snapshot_id()))
        .map(|s| s.snapshot_id())
        .collect();
    let mut archive = ledger::archive(md);
    let before = archive.changes.len();
    // (A snapshot with a ledger file needs no archive: the file and the table property
    // `lakectl.ledger` outlive it.)
    for s in main.iter().rev().filter(|s| {
        !reachable_after.contains(&s.snapshot_id())
            && !s
                .summary()
                .additional_properties
                .contains_key(ledger::LEDGER)
    }) {
        let props = &s.summary().additional_properties;
        if let Some(id) = props.get(ledger::CHANGE_ID) {
            if !archive.changes.contains(id) {
                archive.changes.push(id.clone());
            }
        }
        for f in ledger::ingested_of(props) {
            archive.ingested.retain(|x| x.path != f.path);
            archive.ingested.push(f);
        }
    }
    e.archived_changes = archive.changes.len() - before;
    e.expired_snapshots = expired.clone();
    // An expired audit branch takes its recorded base with it.
    let bases: Vec<String> = expired_refs
        .iter()
        .map(|r| format!("{}{r}", crate::lake::BRANCH_BASE))
        .filter(|k| md.properties().contains_key(k))
        .collect();
    let mut updates: Vec<TableUpdate> = expired_refs
        .into_iter()
        .map(|ref_name| TableUpdate::RemoveSnapshotRef { ref_name })
        .collect();
    if !bases.is_empty() {
        updates.push(TableUpdate::RemoveProperties { removals: bases });
    }
    if !expired.is_empty() {
        updates.push(TableUpdate::RemoveSnapshots {
            snapshot_ids: expired,
        });
        updates.push(TableUpdate::SetProperties {
            updates: HashMap::from([(
                ledger::ARCHIVE.to_string(),
                serde_json::to_string(&archive).unwrap_or_default(),
            )]),
        });
    }
    Ok((e, updates))
}

/// Expires `ident`'s snapshots by `retention` (or only computes it with `dry_run`).
pub async fn expire(
    lake: &Lake,
    ident: &TableIdent,
    retention: Retention,
    dry_run: bool,
) -> Result<Expiry, ApplyError> {
    let table = ident.to_string();
    let result = retry_on_conflict(MAX_ATTEMPTS, |_| {
        let table = table.clone();
        async move {
            let state = lake.load_existing(ident).await?;
            let md = &state.metadata;
            let (mut e, updates) = prepare(lake, &table, md, retention).await?;
            if dry_run || updates.is_empty() {
                return Ok(e);
            }
            lake.commit(ident, &crate::lake::pin_state(md), updates)
                .await?;
            e.committed = true;
            for f in &e.files_to_delete {
                match lake.file_io().delete(f).await {
                    Ok(()) => e.files_deleted += 1,
                    Err(err) => tracing::warn!("could not delete {f}: {err}"),
                }
            }
            Ok(e)
        }
    })
    .await;
    result.map_err(|source| ApplyError::Commit { table, source })
}

/// Tags `snapshot_id` of `ident` as `name` (a restore point `expire` keeps while the
/// tag lives). A tag of that name already there is a conflict: nothing is changed.
pub async fn tag(
    lake: &Lake,
    ident: &TableIdent,
    name: &str,
    snapshot_id: i64,
    max_age_ms: Option<i64>,
) -> Result<(), ApplyError> {
    let requirements = vec![TableRequirement::RefSnapshotIdMatch {
        r#ref: name.to_string(),
        snapshot_id: None,
    }];
    let updates = vec![TableUpdate::SetSnapshotRef {
        ref_name: name.to_string(),
        reference: SnapshotReference::new(
            snapshot_id,
            SnapshotRetention::Tag {
                max_ref_age_ms: max_age_ms,
            },
        ),
    }];
    lake.commit(ident, &requirements, updates)
        .await
        .map(|_| ())
        .map_err(|source: CommitError| ApplyError::Commit {
            table: ident.to_string(),
            source,
        })
}
