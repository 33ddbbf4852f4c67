//! Maintenance: the data work of compaction, and what expiry would remove. Commits
//! nothing: `apply` turns a compaction into one `replace` snapshot.
//!
//! Compaction (bin-packing) of one snapshot, from metadata alone ([`plan_compaction`]):
//! 1. live data files are grouped by partition (spec id + partition value);
//! 2. a file under 3/4 of the target size is small; a partition with at least
//!    `minInputFiles` small files is compacted (its small files are the inputs), and a
//!    partition that delete files apply to is compacted whole, so its deletes can go;
//! 3. partitions are taken, those with deletes first, then the largest counts, until
//!    `maxBytesPerApply` input bytes (the first always: every apply makes progress);
//! 4. a delete file is dropped when every live data file it may apply to (same
//!    partition, or every file for a delete of an unpartitioned spec, with a data
//!    sequence number not above its own) is an input.
//!
//! [`compact`] then reads each group's inputs with the scan's delete files applied and
//! writes them again through the ingest writer (partition spec, sort order within each
//! batch, target size), groups in parallel on all cores. The outputs get the new
//! snapshot's sequence number: the deletes they were read through never apply to them
//! again, and a concurrent commit fails the commit (it requires `main` as read), so no
//! newer delete is missed; the caller then plans again on fresh state.

pub mod orphans;

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use iceberg::io::FileIO;
use iceberg::spec::{DataFile, TableMetadata};

use crate::manifest::types::{CompactionSpec, CompactionStrategy, ExpireSpec};
use crate::mutate::{LiveFile, SnapshotFiles};

/// Default target size of compacted files (without the table property).
pub const DEFAULT_TARGET: u64 = 128 << 20;

/// Compaction settings, resolved against the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CompactionPolicy {
    pub target_file_size_bytes: u64,
    pub min_input_files: usize,
    pub max_bytes_per_apply: u64,
    /// `strategy: sort`: each output file is sorted whole by the table's sort order
    /// (binpack sorts only each batch it writes).
    pub sort: bool,
}

impl CompactionPolicy {
    pub fn resolve(spec: &CompactionSpec, md: Option<&TableMetadata>) -> CompactionPolicy {
        let property = md
            .and_then(|m| m.properties().get("write.target-file-size-bytes"))
            .and_then(|v| v.parse().ok());
        CompactionPolicy {
            target_file_size_bytes: spec
                .target_file_size_bytes
                .or(property)
                .unwrap_or(DEFAULT_TARGET)
                .max(1),
            min_input_files: spec.min_input_files.unwrap_or(5).max(2) as usize,
            max_bytes_per_apply: spec.max_bytes_per_apply.unwrap_or(10 << 30).max(1),
            sort: match spec.strategy {
                Some(CompactionStrategy::Sort) => true,
                Some(CompactionStrategy::Binpack) => false,
                None => md.is_some_and(|m| !m.default_sort_order().is_unsorted()),
            },
        }
    }
}

/// Whether a declared strategy can be run: `sort` needs the table's sortOrder.
pub fn strategy_supported(spec: &CompactionSpec, has_sort_order: bool) -> Result<(), String> {
    match (spec.strategy, has_sort_order) {
        (Some(CompactionStrategy::Sort), false) => Err(
            "compaction strategy `sort` sorts by the table's sortOrder, and the table has none: declare `sortOrder` or use `strategy: binpack`".into(),
        ),
        _ => Ok(()),
    }
}

/// Rows a `sort` compaction sorts at once, in bytes of Arrow memory: each output file
/// is sorted whole (files larger than this are sorted in runs of this size).
const SORT_RUN_BYTES: usize = 512 << 20;

/// One partition's compaction.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CompactGroup {
    /// `day=2024-01-02`, or empty for an unpartitioned table.
    pub partition: String,
    /// The input data files (paths).
    pub files: Vec<String>,
    pub bytes: u64,
    pub records: u64,
    /// Files it should come to (input bytes over the target size).
    pub estimated_outputs: u64,
    /// Delete files that apply to the partition (it is compacted whole).
    pub deletes: usize,
    /// Partition spec id and partition value (the grouping key).
    #[serde(skip)]
    pub key: (i32, String),
}

impl CompactGroup {
    /// Whether this group's rewrite is still right on the snapshot `now` (after another
    /// writer committed): every input is still live, and no delete file that may apply
    /// to them was added since `deletes_before` (the outputs would bring back rows it
    /// deletes). Appends elsewhere keep it.
    pub fn still_valid(&self, now: &SnapshotFiles, deletes_before: &HashSet<String>) -> bool {
        let live: HashSet<&str> = now.files.iter().map(|f| f.path()).collect();
        self.files.iter().all(|f| live.contains(f.as_str()))
            && !now
                .deletes
                .iter()
                .any(|d| !deletes_before.contains(d.path()) && applies_to(d, &self.key))
    }
}

/// What one apply compacts in a snapshot.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompactionPlan {
    pub groups: Vec<CompactGroup>,
    /// Delete files the compaction drops (all they apply to is rewritten).
    pub dropped_deletes: Vec<String>,
}

impl CompactionPlan {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
    pub fn input_files(&self) -> usize {
        self.groups.iter().map(|g| g.files.len()).sum()
    }
    pub fn input_bytes(&self) -> u64 {
        self.groups.iter().map(|g| g.bytes).sum()
    }
    pub fn estimated_outputs(&self) -> u64 {
        self.groups.iter().map(|g| g.estimated_outputs).sum()
    }
}

fn partition_key(f: &LiveFile) -> (i32, String) {
    (f.spec.spec_id(), format!("{:?}", f.data_file().partition()))
}

/// Whether delete file `d` may apply to data files of partition `key`: those of its
/// own partition, or all of them for a delete of an unpartitioned spec (global).
fn applies_to(d: &LiveFile, key: &(i32, String)) -> bool {
    d.spec.is_unpartitioned() || partition_key(d) == *key
}

fn data_seq(f: &LiveFile) -> i64 {
    f.entry.sequence_number().unwrap_or(0)
}

/// Which files of `files` to compact now (see the module doc); empty when no
/// threshold is crossed.
pub fn plan_compaction(
    files: &SnapshotFiles,
    md: &TableMetadata,
    policy: &CompactionPolicy,
) -> CompactionPlan {
    let small = policy.target_file_size_bytes * 3 / 4;
    let mut partitions: HashMap<(i32, String), Vec<&LiveFile>> = HashMap::new();
    for f in &files.files {
        partitions.entry(partition_key(f)).or_default().push(f);
    }
    let mut candidates: Vec<CompactGroup> = Vec::new();
    for (key, members) in &partitions {
        let deletes = files.deletes.iter().filter(|d| applies_to(d, key)).count();
        let inputs: Vec<&&LiveFile> = if deletes > 0 {
            members.iter().collect()
        } else {
            let small: Vec<&&LiveFile> = members
                .iter()
                .filter(|f| f.data_file().file_size_in_bytes() < small)
                .collect();
            if small.len() < policy.min_input_files {
                continue;
            }
            small
        };
        let bytes: u64 = inputs
            .iter()
            .map(|f| f.data_file().file_size_in_bytes())
            .sum();
        let mut paths: Vec<String> = inputs.iter().map(|f| f.path().to_string()).collect();
        paths.sort();
        candidates.push(CompactGroup {
            key: key.clone(),
            partition: crate::mutate::describe_partition(inputs[0], md),
            records: inputs.iter().map(|f| f.entry.record_count()).sum(),
            estimated_outputs: bytes.div_ceil(policy.target_file_size_bytes).max(1),
            files: paths,
            bytes,
            deletes,
        });
    }
    candidates.sort_by(|a, b| {
        (b.deletes > 0)
            .cmp(&(a.deletes > 0))
            .then(b.files.len().cmp(&a.files.len()))
            .then(a.partition.cmp(&b.partition))
    });
    let mut out = CompactionPlan::default();
    let mut budget = 0u64;
    for g in candidates {
        if !out.groups.is_empty() && budget + g.bytes > policy.max_bytes_per_apply {
            continue;
        }
        budget += g.bytes;
        out.groups.push(g);
    }
    out.dropped_deletes = droppable_deletes(files, &out.groups);
    out
}

/// The delete files of `files` that compacting `groups` leaves nothing to apply to:
/// every live data file in their scope (their partition, or all for a delete of an
/// unpartitioned spec) with a data sequence number not above theirs is an input.
pub fn droppable_deletes(files: &SnapshotFiles, groups: &[CompactGroup]) -> Vec<String> {
    let removed: HashSet<&str> = groups
        .iter()
        .flat_map(|g| g.files.iter().map(String::as_str))
        .collect();
    if removed.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<String> = files
        .deletes
        .iter()
        .filter(|d| {
            files
                .files
                .iter()
                .filter(|f| applies_to(d, &partition_key(f)))
                .filter(|f| data_seq(f) <= data_seq(d))
                .all(|f| removed.contains(f.path()))
        })
        .map(|d| d.path().to_string())
        .collect();
    out.sort();
    out
}

/// The data files that replace each group's inputs of `plan` (in group order), read
/// with their delete files applied (nothing committed).
pub async fn compact(
    file_io: &FileIO,
    md: &TableMetadata,
    table: iceberg::table::Table,
    plan: &CompactionPlan,
    policy: &CompactionPolicy,
) -> Result<Vec<Vec<DataFile>>, String> {
    let Some(snapshot) = md.current_snapshot_id() else {
        return Ok(Vec::new());
    };
    // The scan's tasks carry the delete files that apply to each data file.
    let scan = table
        .scan()
        .snapshot_id(snapshot)
        .select_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut tasks: HashMap<String, iceberg::scan::FileScanTask> = scan
        .plan_files()
        .await
        .map_err(|e| e.to_string())?
        .map_ok(|t| (t.data_file_path.clone(), t))
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let schema = crate::mutate::arrow_schema(md).map_err(|e| e.to_string())?;
    let field_ids = crate::mutate::field_ids(md, &[]);
    let prefix = uuid::Uuid::new_v4().to_string();
    let mut groups = Vec::new();
    for (i, g) in plan.groups.iter().enumerate() {
        let mut mine = Vec::new();
        for path in &g.files {
            let mut t = tasks
                .remove(path)
                .ok_or_else(|| format!("{path}: not a live data file of snapshot {snapshot}"))?;
            t.schema = md.current_schema().clone();
            t.project_field_ids = field_ids.clone();
            t.predicate = None;
            mine.push(t);
        }
        groups.push((i, mine));
    }
    let target = policy.target_file_size_bytes as usize;
    let sort = policy.sort;
    let md = std::sync::Arc::new(md.clone());
    let outputs: Vec<Vec<DataFile>> = crate::engine::run(groups, |(i, mine)| {
        let prefix = format!("{prefix}-c{i}");
        let schema = schema.clone();
        let (file_io, md) = (file_io.clone(), md.clone());
        async move {
            let (file_io, md) = (&file_io, md.as_ref());
            let reader = iceberg::arrow::ArrowReaderBuilder::new(
                file_io.clone(),
                iceberg::Runtime::try_current().map_err(|e| e.to_string())?,
            )
            .with_data_file_concurrency_limit(1)
            .build();
            let mut batches = reader
                .read(Box::pin(futures::stream::iter(mine.into_iter().map(Ok))))
                .map_err(|e| e.to_string())?
                .stream();
            let mut writer =
                crate::ingest::TableWriter::with_target_size(file_io, md, &prefix, target)
                    .await
                    .map_err(|e| e.to_string())?;
            // Sort: a run of batches up to the target size goes to the writer as one
            // batch, which it sorts whole by the sort order.
            let run_bytes = if sort {
                (target.saturating_mul(4)).clamp(1 << 20, SORT_RUN_BYTES)
            } else {
                0
            };
            let mut run: Vec<arrow_array::RecordBatch> = Vec::new();
            let mut held = 0usize;
            while let Some(b) = batches.next().await {
                let b = b.map_err(|e| e.to_string())?;
                let b = crate::mutate::conform(&b, &schema)?;
                if !sort {
                    writer.write(b).await.map_err(|e| e.to_string())?;
                    continue;
                }
                held += b.get_array_memory_size();
                run.push(b);
                if held >= run_bytes {
                    let whole = arrow_select::concat::concat_batches(&schema, &run)
                        .map_err(|e| e.to_string())?;
                    writer.write(whole).await.map_err(|e| e.to_string())?;
                    run.clear();
                    held = 0;
                }
            }
            if !run.is_empty() {
                let whole = arrow_select::concat::concat_batches(&schema, &run)
                    .map_err(|e| e.to_string())?;
                writer.write(whole).await.map_err(|e| e.to_string())?;
            }
            writer.close().await.map_err(|e| e.to_string())
        }
    })
    .await?;
    Ok(outputs)
}

/// What an expiry keeps: the newest `keep_last` snapshots of `main` and every one
/// younger than `max_age_ms` (with every live ref's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    pub keep_last: usize,
    pub max_age_ms: i64,
}

impl Retention {
    /// From declared values: 5 snapshots and 7 days by default, at least one kept.
    pub fn new(keep_last: Option<u32>, max_age_days: Option<u64>) -> Retention {
        Retention {
            keep_last: keep_last.unwrap_or(5).max(1) as usize,
            max_age_ms: max_age_days.unwrap_or(7) as i64 * 86_400_000,
        }
    }

    /// `spec.retention` (what `lakectl expire` keeps).
    pub fn from_spec(r: &crate::manifest::types::RetentionSpec) -> Retention {
        Retention::new(r.keep_last, r.max_snapshot_age_days)
    }

    /// `spec.maintenance.expire`.
    pub fn of_maintenance(e: &ExpireSpec) -> Retention {
        Retention::new(e.keep_last, e.max_snapshot_age_days)
    }
}

/// Snapshots an expiry at `now_ms` removes (and tags past their age): every snapshot
/// but those a live ref points at, the newest `keep_last` of `main` and the younger
/// than `max_age_ms`. From metadata alone.
pub fn expiry_selection(
    md: &TableMetadata,
    retention: Retention,
    now_ms: i64,
) -> (HashSet<i64>, Vec<i64>, Vec<String>) {
    use iceberg::spec::SnapshotRetention;
    let Retention {
        keep_last,
        max_age_ms,
    } = retention;
    let mut keep: HashSet<i64> = HashSet::new();
    let mut expired_refs = Vec::new();
    let main: HashSet<i64> = crate::lake::ledger::ancestry(md)
        .iter()
        .map(|s| s.snapshot_id())
        .collect();
    for (name, r) in crate::lake::refs(md) {
        let ts = md
            .snapshot_by_id(r.snapshot_id)
            .map(|s| s.timestamp_ms())
            .unwrap_or(now_ms);
        let gone = match r.retention {
            SnapshotRetention::Tag {
                max_ref_age_ms: Some(age),
            } => name != "main" && ts + age < now_ms,
            // An audit branch left by a failed check (or a crash before its publish),
            // or the scratch branch of an engine job that lakectl did not publish (it
            // was killed), lives as long as the snapshots expiry keeps by age.
            SnapshotRetention::Branch { .. } => {
                let scratch = name.starts_with(crate::engine::spark::BRANCH_PREFIX)
                    // A job that has not committed yet: its branch still at main's
                    // snapshot holds nothing, and the job may still be running.
                    && !main.contains(&r.snapshot_id);
                (name.starts_with(crate::lake::AUDIT_PREFIX) || scratch) && ts < now_ms - max_age_ms
            }
            _ => false,
        };
        if gone {
            expired_refs.push(name);
        } else {
            keep.insert(r.snapshot_id);
        }
    }
    keep.extend(
        crate::lake::ledger::ancestry(md)
            .iter()
            .take(keep_last)
            .map(|s| s.snapshot_id()),
    );
    keep.extend(
        md.snapshots()
            .filter(|s| s.timestamp_ms() >= now_ms - max_age_ms)
            .map(|s| s.snapshot_id()),
    );
    let mut expired: Vec<i64> = md
        .snapshots()
        .map(|s| s.snapshot_id())
        .filter(|id| !keep.contains(id))
        .collect();
    expired.sort();
    expired_refs.sort();
    (keep, expired, expired_refs)
}

/// Tags kept by an expiry (live tags).
pub fn tags_kept(md: &TableMetadata, expired_refs: &[String]) -> usize {
    crate::lake::refs(md)
        .iter()
        .filter(|(name, r)| {
            name.as_str() != "main"
                && matches!(r.retention, iceberg::spec::SnapshotRetention::Tag { .. })
                && !expired_refs.contains(name)
        })
        .count()
}
