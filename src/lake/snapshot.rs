//! Building snapshots lakectl commits itself.

use iceberg::io::FileIO;
use iceberg::spec::{
    ManifestList, ManifestListWriter, Operation, Snapshot, SnapshotReference, SnapshotRetention,
    Summary, TableMetadata, MAIN_BRANCH,
};

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

/// A snapshot that changes no data: an append of no files (same manifests as its
/// parent, in a new manifest list, so expiring the parent never removes a file this
/// one needs; totals carried over) with lakectl's annotation. Its `schema-id` is the
/// current schema of `metadata`, the one the change produced, so the audit log shows
/// which schema each change made and a scan of it sees the new columns.
pub async fn metadata_only_snapshot(
    file_io: &FileIO,
    metadata: &TableMetadata,
    annotation: &Annotation,
) -> iceberg::Result<Snapshot> {
    append_snapshot(file_io, metadata, Vec::new(), annotation.to_summary()).await
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

/// An `append` snapshot adding `data_files` (one new manifest, after the parent's
/// manifests), with the spec's summary counts (`added-*`, `total-*`) and `props`
/// (lakectl's annotation and ledger entries).
pub async fn append_snapshot(
    file_io: &FileIO,
    metadata: &TableMetadata,
    data_files: Vec<iceberg::spec::DataFile>,
    props: std::collections::HashMap<String, String>,
) -> iceberg::Result<Snapshot> {
    use iceberg::spec::ManifestWriterBuilder;
    let parent = metadata.current_snapshot();
    let snapshot_id = new_snapshot_id(metadata);
    let sequence_number = metadata.next_sequence_number();
    let mut manifests: Vec<iceberg::spec::ManifestFile> = match parent {
        Some(p) => {
            let bytes = file_io.new_input(p.manifest_list())?.read().await?;
            ManifestList::parse_with_version(&bytes, metadata.format_version())?
                .consume_entries()
                .into_iter()
                .collect()
        }
        None => Vec::new(),
    };
    let added_records: u64 = data_files.iter().map(|f| f.record_count()).sum();
    let added_size: u64 = data_files.iter().map(|f| f.file_size_in_bytes()).sum();
    let added_files = data_files.len() as u64;
    let partitions: std::collections::HashSet<String> = data_files
        .iter()
        .map(|f| format!("{:?}", f.partition()))
        .collect();
    if !data_files.is_empty() {
        let location = format!(
            "{}/metadata/{}-m0.avro",
            metadata.location().trim_end_matches('/'),
            uuid::Uuid::new_v4()
        );
        let mut writer = ManifestWriterBuilder::new(
            file_io.new_output(&location)?,
            Some(snapshot_id),
            metadata.current_schema().clone(),
            metadata.default_partition_spec().as_ref().clone(),
        )
        .build_v2_data();
        for f in data_files {
            writer.add_file(f, sequence_number)?;
        }
        manifests.insert(0, writer.write_manifest_file().await?);
    }
    let list_path = format!(
        "{}/metadata/snap-{snapshot_id}-1-{}.avro",
        metadata.location().trim_end_matches('/'),
        uuid::Uuid::new_v4()
    );
    let mut list = ManifestListWriter::v2(
        file_io.new_output(&list_path)?.writer().await?,
        snapshot_id,
        parent.map(|p| p.snapshot_id()),
        sequence_number,
    );
    list.add_manifests(manifests.into_iter())?;
    list.close().await?;

    let total = |key: &str| -> u64 {
        parent
            .and_then(|p| p.summary().additional_properties.get(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut summary = props;
    summary.insert("added-data-files".into(), added_files.to_string());
    summary.insert("added-records".into(), added_records.to_string());
    summary.insert("added-files-size".into(), added_size.to_string());
    summary.insert(
        "changed-partition-count".into(),
        partitions.len().to_string(),
    );
    summary.insert(
        "total-data-files".into(),
        (total("total-data-files") + added_files).to_string(),
    );
    summary.insert(
        "total-records".into(),
        (total("total-records") + added_records).to_string(),
    );
    summary.insert(
        "total-files-size".into(),
        (total("total-files-size") + added_size).to_string(),
    );
    for key in [
        "total-delete-files",
        "total-position-deletes",
        "total-equality-deletes",
    ] {
        summary.insert(key.into(), total(key).to_string());
    }
    Ok(Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(chrono_now_ms().max(metadata.last_updated_ms()))
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation: Operation::Append,
            additional_properties: summary,
        })
        .with_schema_id(metadata.current_schema_id())
        .build())
}
