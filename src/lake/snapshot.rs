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
    let mut summary = annotation.to_summary();
    // A table change records the manifest's structure it applied (the drift baseline),
    // so a rollback to it restores that baseline too.
    if let Some(b) = metadata.properties().get(BASELINE) {
        summary.insert(BASELINE.to_string(), b.clone());
    }
    append_snapshot(file_io, metadata, Vec::new(), summary).await
}

/// Table property and summary key of the drift baseline (`plan::drift::DESIRED`; the
/// lake layer knows only the key).
pub const BASELINE: &str = "lakectl.desired";

/// Summary key: the default partition spec when the snapshot was made.
pub const SPEC_ID: &str = "lakectl.spec-id";
/// Summary key: the default sort order when the snapshot was made.
pub const SORT_ORDER_ID: &str = "lakectl.sort-order-id";

/// Records the table structure a snapshot was made under (the schema is the snapshot's
/// own `schema-id`), so a rollback restores spec and sort order too.
fn record_structure(summary: &mut std::collections::HashMap<String, String>, md: &TableMetadata) {
    summary.insert(SPEC_ID.into(), md.default_partition_spec_id().to_string());
    summary.insert(SORT_ORDER_ID.into(), md.default_sort_order_id().to_string());
}

/// The ref update that makes `snapshot_id` the head of `main`.
pub fn main_branch(snapshot_id: i64) -> (String, SnapshotReference) {
    branch_at(MAIN_BRANCH, snapshot_id)
}

/// The ref update that makes `snapshot_id` the head of branch `name`.
pub fn branch_at(name: &str, snapshot_id: i64) -> (String, SnapshotReference) {
    (
        name.to_string(),
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
    write_snapshot(
        file_io,
        metadata,
        &Default::default(),
        data_files,
        props,
        Operation::Append,
        None,
    )
    .await
}

/// An `overwrite` snapshot (or `delete` when nothing is added): the parent's data
/// files at `removed` paths are marked DELETED (keeping their data and file sequence
/// numbers), the other entries of the manifests holding them become EXISTING, the
/// untouched manifests are carried over as they are, and `added` go into one new
/// manifest. Summary counts (`added-*`, `deleted-*`, `removed-files-size`, `total-*`)
/// follow the spec.
pub async fn overwrite_snapshot(
    file_io: &FileIO,
    metadata: &TableMetadata,
    removed: &std::collections::HashSet<String>,
    added: Vec<iceberg::spec::DataFile>,
    props: std::collections::HashMap<String, String>,
) -> iceberg::Result<Snapshot> {
    if metadata.current_snapshot().is_none() {
        return Err(iceberg::Error::new(
            iceberg::ErrorKind::DataInvalid,
            "an overwrite needs a current snapshot",
        ));
    }
    let operation = if added.is_empty() {
        Operation::Delete
    } else {
        Operation::Overwrite
    };
    write_snapshot(file_io, metadata, removed, added, props, operation, None).await
}

/// A `replace` snapshot (a compaction): the data and delete files at `removed` paths
/// are marked DELETED and `added` written in their place; the rows are the same.
/// `merge` overrides the table's manifest-merge settings (`maintenance.manifests`).
pub async fn replace_snapshot(
    file_io: &FileIO,
    metadata: &TableMetadata,
    removed: &std::collections::HashSet<String>,
    added: Vec<iceberg::spec::DataFile>,
    props: std::collections::HashMap<String, String>,
    merge: Option<ManifestMerge>,
) -> iceberg::Result<Snapshot> {
    write_snapshot(
        file_io,
        metadata,
        removed,
        added,
        props,
        Operation::Replace,
        merge,
    )
    .await
}

/// An entry of manifest `m` written again as EXISTING: its snapshot id and its data
/// and file sequence numbers kept (inherited from the manifest where not written).
fn carry_existing(
    writer: &mut iceberg::spec::ManifestWriter,
    e: &iceberg::spec::ManifestEntry,
    m: &iceberg::spec::ManifestFile,
) -> iceberg::Result<()> {
    let seq = e.sequence_number().unwrap_or(m.sequence_number);
    writer.add_existing_file(
        e.data_file().clone(),
        e.snapshot_id().unwrap_or(m.added_snapshot_id),
        seq,
        e.file_sequence_number.or(Some(seq)),
    )
}

/// When lakectl's commits fold small manifests together: Java's merge-append settings
/// (`commit.manifest-merge.enabled`, default true; `commit.manifest.min-count-to-merge`,
/// default 100; `commit.manifest.target-size-bytes`, default 8 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ManifestMerge {
    /// Merge once a snapshot would have at least this many data manifests.
    pub min_count: usize,
    /// Manifests under this size are merged into ones of about this size.
    pub target_bytes: u64,
}

impl ManifestMerge {
    pub fn of_table(md: &TableMetadata) -> Option<ManifestMerge> {
        let p = md.properties();
        if p.get("commit.manifest-merge.enabled").map(String::as_str) == Some("false") {
            return None;
        }
        Some(ManifestMerge {
            min_count: p
                .get("commit.manifest.min-count-to-merge")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100)
                .max(2),
            target_bytes: p
                .get("commit.manifest.target-size-bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(8 << 20),
        })
    }
}

/// Data manifests bin-packed per partition spec: manifests under the target size
/// are rewritten together (live entries as EXISTING, their sequence numbers and
/// snapshot ids kept; entries an earlier snapshot deleted are dropped, as Java's merge
/// does) into manifests of about the target size; a bin of one stays as it is.
pub async fn merge_manifests(
    file_io: &FileIO,
    metadata: &TableMetadata,
    manifests: Vec<iceberg::spec::ManifestFile>,
    snapshot_id: i64,
    policy: &ManifestMerge,
) -> iceberg::Result<Vec<iceberg::spec::ManifestFile>> {
    use iceberg::spec::{ManifestStatus, ManifestWriterBuilder};
    let base = metadata.location().trim_end_matches('/').to_string();
    let mut out = Vec::new();
    let mut by_spec: std::collections::BTreeMap<i32, Vec<iceberg::spec::ManifestFile>> =
        Default::default();
    for m in manifests {
        if m.manifest_length as u64 >= policy.target_bytes {
            out.push(m);
        } else {
            by_spec.entry(m.partition_spec_id).or_default().push(m);
        }
    }
    for (_, group) in by_spec {
        // Bins in list order (newest first), each up to the target size.
        let mut bins: Vec<Vec<iceberg::spec::ManifestFile>> = vec![Vec::new()];
        let mut size = 0u64;
        for m in group {
            if size + m.manifest_length as u64 > policy.target_bytes
                && !bins.last().is_some_and(Vec::is_empty)
            {
                bins.push(Vec::new());
                size = 0;
            }
            size += m.manifest_length as u64;
            bins.last_mut().expect("a bin").push(m);
        }
        for bin in bins {
            if bin.len() < 2 {
                out.extend(bin);
                continue;
            }
            let first = bin[0].load_manifest(file_io).await?;
            let mut writer = ManifestWriterBuilder::new(
                file_io.new_output(format!(
                    "{base}/metadata/{}-merged.avro",
                    uuid::Uuid::new_v4()
                ))?,
                Some(snapshot_id),
                first.metadata().schema().clone(),
                first.metadata().partition_spec().clone(),
            )
            .build_v2_data();
            for m in &bin {
                let loaded = m.load_manifest(file_io).await?;
                for e in loaded.entries() {
                    if e.status() == ManifestStatus::Deleted {
                        continue;
                    }
                    carry_existing(&mut writer, e, m)?;
                }
            }
            out.push(writer.write_manifest_file().await?);
        }
    }
    Ok(out)
}

/// A `replace` snapshot that changes no data: the parent's data manifests merged by
/// `policy` whatever their count (`maintenance.manifests`).
pub async fn merge_snapshot(
    file_io: &FileIO,
    metadata: &TableMetadata,
    policy: ManifestMerge,
    props: std::collections::HashMap<String, String>,
) -> iceberg::Result<Snapshot> {
    write_snapshot(
        file_io,
        metadata,
        &Default::default(),
        Vec::new(),
        props,
        Operation::Replace,
        Some(ManifestMerge {
            min_count: 2,
            ..policy
        }),
    )
    .await
}

/// The one snapshot writer behind [`append_snapshot`] and [`overwrite_snapshot`]:
/// the parent's manifests carried over (those holding a `removed` file rewritten with
/// it DELETED and the rest EXISTING), `added` in one new manifest first, the manifest
/// list, and the summary. `deleted-*` counts are written when files are removed.
async fn write_snapshot(
    file_io: &FileIO,
    metadata: &TableMetadata,
    removed: &std::collections::HashSet<String>,
    added: Vec<iceberg::spec::DataFile>,
    props: std::collections::HashMap<String, String>,
    operation: Operation,
    merge: Option<ManifestMerge>,
) -> iceberg::Result<Snapshot> {
    use iceberg::spec::{ManifestContentType, ManifestStatus, ManifestWriterBuilder};
    let merge = merge.or_else(|| ManifestMerge::of_table(metadata));
    let parent = metadata.current_snapshot();
    let snapshot_id = new_snapshot_id(metadata);
    let sequence_number = metadata.next_sequence_number();
    let base = metadata.location().trim_end_matches('/').to_string();
    let parents: Vec<iceberg::spec::ManifestFile> = match parent {
        Some(p) => {
            let bytes = file_io.new_input(p.manifest_list())?.read().await?;
            ManifestList::parse_with_version(&bytes, metadata.format_version())?
                .consume_entries()
                .into_iter()
                .collect()
        }
        None => Vec::new(),
    };
    let mut manifests = Vec::new();
    let (mut deleted_files, mut deleted_records, mut removed_size) = (0u64, 0u64, 0u64);
    let mut partitions = std::collections::HashSet::new();
    // Delete files removed (a compaction that applied them): files, position rows,
    // equality rows.
    let (mut removed_deletes, mut removed_pos, mut removed_eq) = (0u64, 0u64, 0u64);
    // Data manifests carried over as they are: what a merge may fold together.
    let mut untouched = Vec::new();
    for m in parents {
        if removed.is_empty() {
            if m.content == ManifestContentType::Data {
                untouched.push(m);
            } else {
                manifests.push(m);
            }
            continue;
        }
        let loaded = m.load_manifest(file_io).await?;
        let hits = loaded
            .entries()
            .iter()
            .any(|e| e.is_alive() && removed.contains(e.file_path()));
        if !hits {
            if m.content == ManifestContentType::Data {
                untouched.push(m);
            } else {
                manifests.push(m);
            }
            continue;
        }
        let builder = ManifestWriterBuilder::new(
            file_io.new_output(format!(
                "{base}/metadata/{}-m{}.avro",
                uuid::Uuid::new_v4(),
                manifests.len() + 1
            ))?,
            Some(snapshot_id),
            loaded.metadata().schema().clone(),
            loaded.metadata().partition_spec().clone(),
        );
        let deletes = m.content == ManifestContentType::Deletes;
        let mut writer = if deletes {
            builder.build_v2_deletes()
        } else {
            builder.build_v2_data()
        };
        for e in loaded.entries() {
            if e.status() == ManifestStatus::Deleted {
                continue; // recorded by the snapshot that deleted it
            }
            let seq = e.sequence_number().unwrap_or(m.sequence_number);
            let file_seq = e.file_sequence_number.or(Some(seq));
            if removed.contains(e.file_path()) {
                if deletes {
                    removed_deletes += 1;
                    match e.content_type() {
                        iceberg::spec::DataContentType::PositionDeletes => {
                            removed_pos += e.record_count()
                        }
                        _ => removed_eq += e.record_count(),
                    }
                } else {
                    deleted_files += 1;
                    deleted_records += e.record_count();
                }
                removed_size += e.file_size_in_bytes();
                partitions.insert(format!("{:?}", e.data_file().partition()));
                writer.add_delete_file(e.data_file().clone(), seq, file_seq)?;
            } else {
                carry_existing(&mut writer, e, &m)?;
            }
        }
        manifests.push(writer.write_manifest_file().await?);
    }
    let added_records: u64 = added.iter().map(|f| f.record_count()).sum();
    let added_size: u64 = added.iter().map(|f| f.file_size_in_bytes()).sum();
    let added_files = added.len() as u64;
    for f in &added {
        partitions.insert(format!("{:?}", f.partition()));
    }
    if !added.is_empty() {
        let mut writer = ManifestWriterBuilder::new(
            file_io.new_output(format!("{base}/metadata/{}-m0.avro", uuid::Uuid::new_v4()))?,
            Some(snapshot_id),
            metadata.current_schema().clone(),
            metadata.default_partition_spec().as_ref().clone(),
        )
        .build_v2_data();
        for f in added {
            writer.add_file(f, sequence_number)?;
        }
        manifests.insert(0, writer.write_manifest_file().await?);
    }
    let data_manifests = untouched.len()
        + manifests
            .iter()
            .filter(|m| m.content == ManifestContentType::Data)
            .count();
    match merge {
        Some(policy) if data_manifests >= policy.min_count => {
            manifests
                .extend(merge_manifests(file_io, metadata, untouched, snapshot_id, &policy).await?);
        }
        _ => manifests.extend(untouched),
    }
    let list_path = format!(
        "{base}/metadata/snap-{snapshot_id}-1-{}.avro",
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
    record_structure(&mut summary, metadata);
    let mut put = |k: &str, v: u64| {
        summary.insert(k.to_string(), v.to_string());
    };
    put("added-data-files", added_files);
    put("added-records", added_records);
    put("added-files-size", added_size);
    if !removed.is_empty() {
        put("deleted-data-files", deleted_files);
        put("deleted-records", deleted_records);
        put("removed-files-size", removed_size);
    }
    put("changed-partition-count", partitions.len() as u64);
    put(
        "total-data-files",
        (total("total-data-files") + added_files).saturating_sub(deleted_files),
    );
    put(
        "total-records",
        (total("total-records") + added_records).saturating_sub(deleted_records),
    );
    put(
        "total-files-size",
        (total("total-files-size") + added_size).saturating_sub(removed_size),
    );
    if removed_deletes > 0 {
        put("removed-delete-files", removed_deletes);
        put("removed-position-deletes", removed_pos);
        put("removed-equality-deletes", removed_eq);
    }
    for (key, less) in [
        ("total-delete-files", removed_deletes),
        ("total-position-deletes", removed_pos),
        ("total-equality-deletes", removed_eq),
    ] {
        put(key, total(key).saturating_sub(less));
    }
    Ok(Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(parent.map(|p| p.snapshot_id()))
        .with_sequence_number(sequence_number)
        .with_timestamp_ms(chrono_now_ms().max(metadata.last_updated_ms()))
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation,
            additional_properties: summary,
        })
        .with_schema_id(metadata.current_schema_id())
        .build())
}
