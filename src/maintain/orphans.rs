//! Orphan files: files under a table's location that nothing reachable from the catalog
//! references, older than a window.
//!
//! Reachable ([`reachable`]): the current metadata file and every file of its metadata
//! log; for every snapshot (all refs' and all others'), its manifest list, its
//! manifests and every file they list (live or not); statistics files; lakectl's
//! ledger files (each snapshot's and the table property's, with the chains behind
//! them); `version-hint.text`. A file that cannot be read while walking this stops the
//! removal (nothing is deleted when the set may be incomplete).
//!
//! Listed ([`list_location`]): every file under the table location, local or `s3://`,
//! with its size and modification time. An orphan is listed, not reachable, and older
//! than the window (at least one hour, so a commit in flight never loses its files).

use std::collections::{BTreeMap, HashSet};

use futures::StreamExt;
use iceberg::spec::{ManifestList, TableMetadata};

use crate::lake::Lake;

/// A file under a table's location.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedFile {
    pub path: String,
    pub size: u64,
    pub modified_ms: i64,
}

/// The smallest window: younger files may belong to a commit in flight.
pub const MIN_AGE_HOURS: u64 = 1;

/// A path as every writer's spelling of it compares equal: `file:/x`, `file:///x` and
/// `/x` are `/x`; `s3a://` is `s3://`.
pub fn normalize(path: &str) -> String {
    if let Some(rest) = path.strip_prefix("s3a://") {
        return format!("s3://{rest}");
    }
    if let Some(rest) = path.strip_prefix("file://") {
        return rest.to_string();
    }
    if let Some(rest) = path.strip_prefix("file:") {
        return rest.to_string();
    }
    path.to_string()
}

/// Every file the table's metadata reaches, normalized.
pub async fn reachable(
    lake: &Lake,
    md: &TableMetadata,
    metadata_location: &str,
) -> Result<HashSet<String>, String> {
    let mut out: HashSet<String> = HashSet::new();
    out.insert(normalize(metadata_location));
    for m in md.metadata_log() {
        out.insert(normalize(&m.metadata_file));
    }
    for s in md.statistics_iter() {
        out.insert(normalize(&s.statistics_path));
    }
    for s in md.partition_statistics_iter() {
        out.insert(normalize(&s.statistics_path));
    }
    let io = lake.file_io();
    let mut manifests_seen: HashSet<String> = HashSet::new();
    let mut ledgers: Vec<String> = md
        .properties()
        .get(crate::lake::ledger::LEDGER)
        .cloned()
        .into_iter()
        .collect();
    for s in md.snapshots() {
        out.insert(normalize(s.manifest_list()));
        if let Some(l) = s
            .summary()
            .additional_properties
            .get(crate::lake::ledger::LEDGER)
        {
            ledgers.push(l.clone());
        }
        let bytes = io
            .new_input(s.manifest_list())
            .map_err(|e| e.to_string())?
            .read()
            .await
            .map_err(|e| format!("manifest list {}: {e}", s.manifest_list()))?;
        let list = ManifestList::parse_with_version(&bytes, md.format_version())
            .map_err(|e| format!("manifest list {}: {e}", s.manifest_list()))?;
        // Collected first: the iterator is not `Send` (serve's handlers run this).
        let entries: Vec<_> = list.consume_entries().into_iter().collect();
        for m in entries {
            out.insert(normalize(&m.manifest_path));
            if !manifests_seen.insert(m.manifest_path.clone()) {
                continue;
            }
            let loaded = m
                .load_manifest(io)
                .await
                .map_err(|e| format!("manifest {}: {e}", m.manifest_path))?;
            for e in loaded.entries() {
                out.insert(normalize(e.file_path()));
            }
        }
    }
    let mut seen_ledgers = HashSet::new();
    while let Some(path) = ledgers.pop() {
        if !seen_ledgers.insert(path.clone()) {
            continue;
        }
        out.insert(normalize(&path));
        let file = lake.ledger_file(&path).await.map_err(|e| e.to_string())?;
        if let Some(parent) = &file.parent {
            ledgers.push(parent.clone());
        }
        for seg in &file.segments {
            out.insert(normalize(&seg.path));
        }
    }
    Ok(out)
}

/// Every file under `location` (a directory, `file://` or `s3://` URI).
pub async fn list_location(
    location: &str,
    storage: &BTreeMap<String, String>,
) -> Result<Vec<ListedFile>, String> {
    let location = normalize(location);
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let store = crate::ingest::s3::store(bucket, storage)?;
        let prefix = format!("{}/", key.trim_end_matches('/'));
        let prefix = object_store::path::Path::from(prefix.as_str());
        let mut out = Vec::new();
        let mut stream = store.list(Some(&prefix));
        while let Some(o) = stream.next().await {
            let o = o.map_err(|e| e.to_string())?;
            out.push(ListedFile {
                path: format!("s3://{bucket}/{}", o.location),
                size: o.size,
                modified_ms: o.last_modified.timestamp_millis(),
            });
        }
        return Ok(out);
    }
    let root = std::path::PathBuf::from(&location);
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(&root) {
        let entry = entry.map_err(|e| e.to_string())?;
        if !entry.file_type().is_file() {
            continue;
        }
        let meta = entry.metadata().map_err(|e| e.to_string())?;
        let modified_ms = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(i64::MAX);
        out.push(ListedFile {
            path: entry.path().display().to_string(),
            size: meta.len(),
            modified_ms,
        });
    }
    Ok(out)
}

/// The orphans among `listed`: not reachable and modified before `now - older_than`.
pub fn orphans(
    listed: Vec<ListedFile>,
    reachable: &HashSet<String>,
    older_than_hours: u64,
    now_ms: i64,
) -> Vec<ListedFile> {
    let cutoff = now_ms - (older_than_hours.max(MIN_AGE_HOURS) as i64) * 3_600_000;
    let mut out: Vec<ListedFile> = listed
        .into_iter()
        .filter(|f| f.modified_ms < cutoff)
        .filter(|f| !reachable.contains(&normalize(&f.path)))
        .filter(|f| !f.path.ends_with("/version-hint.text"))
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The orphan files of a table now (`older_than_hours` floored at one hour).
pub async fn find(
    lake: &Lake,
    md: &TableMetadata,
    metadata_location: &str,
    older_than_hours: u64,
) -> Result<Vec<ListedFile>, String> {
    let listed = list_location(md.location(), &lake.config.storage).await?;
    let reach = reachable(lake, md, metadata_location).await?;
    Ok(orphans(
        listed,
        &reach,
        older_than_hours,
        chrono::Utc::now().timestamp_millis(),
    ))
}
