//! A table's history: its snapshots newest first, with lakectl's annotations.

use std::collections::HashSet;

use iceberg::spec::TableMetadata;
use serde::Serialize;

use super::ledger;

/// One snapshot as `lakectl history` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub snapshot_id: i64,
    pub parent_id: Option<i64>,
    pub sequence_number: i64,
    pub timestamp_ms: i64,
    /// RFC 3339, UTC.
    pub time: String,
    pub operation: String,
    pub schema_id: Option<i32>,
    pub current: bool,
    /// In the ancestry of `main` (false for snapshots left behind by a rollback).
    pub in_main: bool,
    pub added_records: Option<u64>,
    pub total_records: Option<u64>,
    pub added_data_files: Option<u64>,
    pub total_data_files: Option<u64>,
    pub deleted_data_files: Option<u64>,
    pub deleted_records: Option<u64>,
    pub annotation: Option<ledger::Annotation>,
    /// Its change was taken out by a rollback and is held back from plan and apply.
    pub held_back: bool,
    pub source: Option<String>,
    pub ingested_files: Vec<String>,
}

pub fn history(md: &TableMetadata) -> Vec<HistoryEntry> {
    let main: HashSet<i64> = ledger::ancestry(md)
        .iter()
        .map(|s| s.snapshot_id())
        .collect();
    // The commits of engine jobs on their scratch branches: the snapshot that
    // published their files is the change.
    let engine: HashSet<i64> = md
        .snapshots()
        .filter_map(|s| {
            s.summary()
                .additional_properties
                .get(ledger::ENGINE_SNAPSHOTS)
        })
        .flat_map(|v| v.split(',').filter_map(|id| id.trim().parse::<i64>().ok()))
        .collect();
    let held: HashSet<i64> = ledger::held_back(md)
        .iter()
        .map(|h| h.snapshot_id)
        .collect();
    let mut snaps: Vec<_> = md
        .snapshots()
        .filter(|s| !engine.contains(&s.snapshot_id()))
        .collect();
    snaps.sort_by_key(|s| std::cmp::Reverse((s.sequence_number(), s.timestamp_ms())));
    snaps
        .into_iter()
        .map(|s| {
            let props = &s.summary().additional_properties;
            let num = |k: &str| props.get(k).and_then(|v| v.parse::<u64>().ok());
            let ingested = ledger::ingested_of(props)
                .into_iter()
                .map(|f| f.path)
                .collect();
            HistoryEntry {
                snapshot_id: s.snapshot_id(),
                parent_id: s.parent_snapshot_id(),
                sequence_number: s.sequence_number(),
                timestamp_ms: s.timestamp_ms(),
                time: chrono::DateTime::from_timestamp_millis(s.timestamp_ms())
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_default(),
                operation: s.summary().operation.as_str().to_string(),
                schema_id: s.schema_id(),
                current: md.current_snapshot_id() == Some(s.snapshot_id()),
                in_main: main.contains(&s.snapshot_id()),
                added_records: num("added-records"),
                total_records: num("total-records"),
                added_data_files: num("added-data-files"),
                total_data_files: num("total-data-files"),
                deleted_data_files: num("deleted-data-files"),
                deleted_records: num("deleted-records"),
                held_back: held.contains(&s.snapshot_id()),
                annotation: ledger::Annotation::from_summary(props),
                source: props.get(ledger::SOURCE).cloned(),
                ingested_files: ingested,
            }
        })
        .collect()
}
