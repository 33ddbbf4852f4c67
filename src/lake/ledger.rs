//! The ledger: what lakectl did to a table, read from and written to snapshot summaries.
//!
//! Every snapshot lakectl commits carries:
//! - `lakectl.change`: the kind (`create-table`, `update-table`, ...),
//! - `lakectl.change-id`: a stable id of the change (`table:<ns>.<t>@<hash>`, ...),
//! - `lakectl.manifest`: the manifest file, `lakectl.git-commit` when it is in git,
//! - `lakectl.details`: one line of what changed, `lakectl.version`.
//!
//! The set of applied change ids is read from the ancestry of the current snapshot, so
//! it is exactly as durable as the table itself.

use std::collections::HashMap;

use iceberg::spec::TableMetadata;

pub const CHANGE: &str = "lakectl.change";
pub const CHANGE_ID: &str = "lakectl.change-id";
pub const MANIFEST: &str = "lakectl.manifest";
pub const GIT_COMMIT: &str = "lakectl.git-commit";
pub const DETAILS: &str = "lakectl.details";
pub const VERSION: &str = "lakectl.version";

/// The annotation of one change.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Annotation {
    pub change: String,
    pub change_id: String,
    pub manifest: Option<String>,
    pub git_commit: Option<String>,
    pub details: String,
}

impl Annotation {
    pub fn to_summary(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([
            (CHANGE.to_string(), self.change.clone()),
            (CHANGE_ID.to_string(), self.change_id.clone()),
            (DETAILS.to_string(), self.details.clone()),
            (VERSION.to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ]);
        if let Some(f) = &self.manifest {
            m.insert(MANIFEST.to_string(), f.clone());
        }
        if let Some(c) = &self.git_commit {
            m.insert(GIT_COMMIT.to_string(), c.clone());
        }
        m
    }

    pub fn from_summary(props: &HashMap<String, String>) -> Option<Annotation> {
        Some(Annotation {
            change: props.get(CHANGE)?.clone(),
            change_id: props.get(CHANGE_ID).cloned().unwrap_or_default(),
            manifest: props.get(MANIFEST).cloned(),
            git_commit: props.get(GIT_COMMIT).cloned(),
            details: props.get(DETAILS).cloned().unwrap_or_default(),
        })
    }
}

/// Snapshots from the current one back to the first, newest first (the ancestry of
/// `main`; snapshots on abandoned branches after a rollback are not in it).
pub fn ancestry(metadata: &TableMetadata) -> Vec<iceberg::spec::SnapshotRef> {
    ancestry_from(metadata, metadata.current_snapshot_id())
}

/// Snapshot `from` and its ancestors, newest first (stopping at an expired parent).
pub fn ancestry_from(
    metadata: &TableMetadata,
    from: Option<i64>,
) -> Vec<iceberg::spec::SnapshotRef> {
    let mut out = Vec::new();
    let mut next = from;
    while let Some(id) = next {
        let Some(s) = metadata.snapshot_by_id(id) else {
            break; // expired
        };
        out.push(s.clone());
        next = s.parent_snapshot_id();
    }
    out
}

/// Change ids lakectl applied to the current state of the table, newest first (then
/// those of expired snapshots, from the archive).
pub fn applied_change_ids(metadata: &TableMetadata) -> Vec<String> {
    let mut ids: Vec<String> = ancestry(metadata)
        .iter()
        .filter_map(|s| s.summary().additional_properties.get(CHANGE_ID).cloned())
        .collect();
    ids.extend(archive(metadata).changes);
    ids
}

/// Table property: changes a rollback took out of `main` (JSON array of [`HeldBack`]).
/// `plan` and `apply` do not apply them again until the manifest drops them or
/// `apply --reapply ID` releases one.
pub const HELD_BACK: &str = "lakectl.held-back";

/// A change a rollback took out of `main`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldBack {
    pub change_id: String,
    pub change: String,
    pub details: String,
    /// The snapshot that had applied it.
    pub snapshot_id: i64,
    /// For an ingest: the ledger paths of its files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

pub fn held_back(metadata: &TableMetadata) -> Vec<HeldBack> {
    metadata
        .properties()
        .get(HELD_BACK)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

/// Table property: the ledger of snapshots `lakectl expire` removed (change ids and
/// ingested files), so expiry never makes lakectl apply a change twice.
pub const ARCHIVE: &str = "lakectl.ledger-archive";

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Archive {
    #[serde(default)]
    pub changes: Vec<String>,
    #[serde(default)]
    pub ingested: Vec<crate::ingest::IngestedFile>,
}

pub fn archive(metadata: &TableMetadata) -> Archive {
    metadata
        .properties()
        .get(ARCHIVE)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

/// Summary key listing the files an ingest snapshot appended (JSON array of
/// [`crate::ingest::IngestedFile`]).
pub const INGESTED: &str = "lakectl.ingested";
/// Summary key naming the source of an ingest snapshot.
pub const SOURCE: &str = "lakectl.source";
/// Summary key with the number of rows `onError: skip` rejected.
pub const REJECTED: &str = "lakectl.rejected-rows";

/// Every file lakectl ingested into the current state of the table, by ledger path
/// (the newest record wins when a changed file was appended again).
pub fn ingested_files(metadata: &TableMetadata) -> HashMap<String, crate::ingest::IngestedFile> {
    let mut out = HashMap::new();
    for f in archive(metadata).ingested {
        out.insert(f.path.clone(), f);
    }
    for s in ancestry(metadata).iter().rev() {
        if let Some(json) = s.summary().additional_properties.get(INGESTED) {
            if let Ok(files) = serde_json::from_str::<Vec<crate::ingest::IngestedFile>>(json) {
                for f in files {
                    out.insert(f.path.clone(), f);
                }
            }
        }
    }
    out
}
