//! Building snapshots lakectl commits itself.

use iceberg::spec::{
    ManifestList, ManifestListWriter, Operation, Snapshot, SnapshotReference, SnapshotRetention, Summary,
    TableMetadata, MAIN_BRANCH,
};
use iceberg::io::FileIO;

use super::ledger::Annotation;

/// The `total-*` keys a snapshot summary carries (Iceberg spec, "Snapshot Summary").
pub const TOTALS: [&str; 6] = [
    "total-records",
    "total-files-size",
    "total-data-files",
    "total-delete-files",
    "total-position-deletes",
    "total-equality-deletes",
];

/// A new snapshot id: random, positive, unused in `metadata`.
pub fn new_snapshot_id(metadata: &TableMetadata) -> i64 {
    loop {
        let (hi, lo) = uuid::Uuid::new_v4().as_u64_pair();
        let id = ((hi ^ lo) & (i64::MAX as u64)) as i64;
        if id != 0 && metadata.snapshot_by_id(id).is_none() {
            return id;
        }
    }
}

/// A snapshot that changes no data: same manifests as its parent (in a new manifest
/// list, so expiring the parent never removes a file this one needs), `append` with no
/// added files, totals carried over, and lakectl's annotation. Its `schema-id` is the
/// schema current after the change, so the audit log shows which schema each change
/// produced and a scan of it sees the new columns.
pub async fn metadata_only_snapshot(
    file_io: &FileIO,
    metadata: &TableMetadata,
    schema_id: i32,
    annotation: &Annotation,
) -> iceberg::Result<Snapshot> {
    let parent = metadata.current_snapshot();
    let snapshot_id = new_snapshot_id(metadata);
    let sequence_number = metadata.next_sequence_number();
    let manifests = match parent {
        Some(p) => {
            let bytes = file_io.new_input(p.manifest_list())?.read().await?;
            ManifestList::parse_with_version(&bytes, metadata.format_version())?
                .consume_entries()
                .into_iter()
                .collect()
        }
        None => Vec::new(),
    };
    let path = format!(
        "{}/metadata/snap-{snapshot_id}-1-{}.avro",
        metadata.location().trim_end_matches('/'),
        uuid::Uuid::new_v4()
    );
    let mut writer = ManifestListWriter::v2(
        file_io.new_output(&path)?.writer().await?,
        snapshot_id,
        parent.map(|p| p.snapshot_id()),
        sequence_number,
    );
    writer.add_manifests(manifests.into_iter())?;
    writer.close().await?;

    let mut props = annotation.to_summary();
    for key in TOTALS {
        let v = parent
            .and_then(|p| p.summary().additional_properties.get(key).cloned())
            .unwrap_or_else(|| "0".to_string());
        props.insert(key.to_string(), v);
    }
    Ok(Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(chrono_now_ms().max(metadata.last_updated_ms()))
        .with_manifest_list(path)
        .with_summary(Summary {
            operation: Operation::Append,
            additional_properties: props,
        })
        .with_schema_id(schema_id)
        .build())
}

/// The ref update that makes `snapshot_id` the head of `main`.
pub fn main_branch(snapshot_id: i64) -> (String, SnapshotReference) {
    (
        MAIN_BRANCH.to_string(),
        SnapshotReference::new(snapshot_id, SnapshotRetention::branch(None, None, None)),
    )
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
