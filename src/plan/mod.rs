//! Plan: `diff(Desired, Actual) -> Plan`. Writes nothing.
//!
//! 1. [`observe`] reads, for every table a manifest declares, whether its namespace
//!    exists and the table's current metadata (none when the catalog does not exist).
//! 2. [`diff`] compares each manifest with its table and produces at most one
//!    [`Change`] per table, which `apply` commits as exactly one Iceberg commit:
//!    creating the table, or updating it (schema, identifier fields, partition spec,
//!    sort order and properties together). Namespaces to create come first.
//! 3. Changes the rules forbid (type narrowing, optional → required, destructive
//!    changes without `allowDestructive`) become [`Plan::errors`] located in the
//!    manifest; a plan with errors is not applied.

pub mod drift;
pub mod render;
pub mod schema;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use iceberg::spec::{NullOrder, SortDirection};
use iceberg::{NamespaceIdent, TableIdent};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::ingest::files::FileState;
use crate::ingest::SourceFile;
use crate::lake::{ledger, LakeConfig, TableState};
use crate::manifest::positions::item;
use crate::manifest::types::{
    FileOrder, NullsSpec, OnChange, OnDrift, SortDirectionSpec, SourceFormat, SourceMode,
    SourceSpec, TableManifest,
};
use crate::manifest::{partition_field_name, Diagnostic, Located, ManifestSet};
use schema::{desired_columns, Desired, Node, SchemaOp};

/// Table property holding the keys of `spec.properties` lakectl set, so a key removed
/// from the manifest is removed from the table and other writers' keys are left alone.
pub const MANAGED_PROPERTIES: &str = "lakectl.managed-properties";

/// JSON plan format version (`lakectl plan --output json`).
pub const PLAN_FORMAT_VERSION: &str = "1";

pub use crate::manifest::{namespace_ident, table_ident};

/// Loads and validates the manifests in one go, what `validate`, `plan`, `apply`,
/// `watch` and `serve` start with: the YAML layer's checks, then the mutation SQL
/// compiled against each table's declared columns (unknown columns, a non-boolean
/// `where`, values that do not fit their column), each error at its place.
pub fn load_valid(path: &std::path::Path) -> Result<ManifestSet, crate::manifest::Diagnostics> {
    let set = crate::manifest::ManifestSet::load_checked(path)?;
    let errors: Vec<Diagnostic> = set.tables.iter().flat_map(mutation_sql_errors).collect();
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(crate::manifest::Diagnostics(errors))
    }
}

/// The mutation SQL of a table that does not compile against its declared columns.
fn mutation_sql_errors(t: &Located<TableManifest>) -> Vec<Diagnostic> {
    use crate::manifest::positions::child;
    use crate::mutate::expr::{compile, Part};
    let mut errors = Vec::new();
    let Some(schema) = schema::declared_arrow_schema(&t.value.spec.columns) else {
        return errors;
    };
    for (i, mu) in t.value.spec.mutations.iter().enumerate() {
        let kind = match (&mu.update, &mu.delete) {
            (Some(_), None) => "update",
            (None, Some(_)) => "delete",
            _ => continue, // reported by the YAML layer
        };
        let base = child(&item("spec.mutations", i), kind);
        let Err(errs) = compile(&action_of(mu), &schema) else {
            continue;
        };
        for e in errs {
            let at = match &e.part {
                Part::Where => t.error_at(&child(&base, "where"), ""),
                Part::Set(c) => t.error_at(&child(&child(&base, "set"), c), ""),
                Part::SetKey(c) => t.error_at_key(&child(&child(&base, "set"), c), ""),
            };
            let what = match &e.part {
                Part::Where => "`where`".to_string(),
                Part::Set(c) | Part::SetKey(c) => format!("`set.{c}`"),
            };
            errors.push(Diagnostic {
                message: format!("mutation `{}`: {what}: {}", mu.name, e.message),
                ..at
            });
        }
    }
    errors
}
pub use crate::observe::{observe, observe_orphans, Actual, Listed};

/// The plan: changes in the order they are applied, and what forbids applying it.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub lakehouse: LakeConfig,
    pub changes: Vec<Change>,
    pub errors: Vec<Diagnostic>,
    pub hints: Vec<String>,
    /// Changes a rollback took out, which this plan does not apply again.
    pub held_back: Vec<HeldBackItem>,
    /// Held-back changes `apply --reapply` releases (table, change id) before applying.
    pub release: Vec<(String, String)>,
    /// Per table, what changed outside lakectl (tables without drift are left out).
    pub drift: Vec<drift::Drift>,
    /// Per declared table: how its data changes are published and what is checked.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit: BTreeMap<String, TableAudit>,
    /// Publish every audited table in one catalog transaction (`atomicPublish`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub atomic: bool,
}

/// A table's write-audit-publish settings, from its manifest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableAudit {
    pub publish: crate::manifest::types::PublishMode,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::manifest::types::CheckSpec>,
    /// The table's identifierFields (what `unique: []` checks).
    #[serde(skip)]
    pub identifier_fields: Vec<String>,
}

impl TableAudit {
    /// `publish: audited`: data changes are staged, checked and published.
    pub fn audited(&self) -> bool {
        self.publish == crate::manifest::types::PublishMode::Audited
    }
}

/// The write-audit-publish settings of every declared table with checks or an
/// audited publish.
pub fn audits(set: &ManifestSet) -> BTreeMap<String, TableAudit> {
    set.tables
        .iter()
        .filter(|t| !t.value.spec.checks.is_empty() || set.publish_of(t) != Default::default())
        .map(|t| {
            (
                t.table_name(),
                TableAudit {
                    publish: set.publish_of(t),
                    checks: t.value.spec.checks.clone(),
                    identifier_fields: t.value.spec.identifier_fields.clone(),
                },
            )
        })
        .collect()
}

impl Plan {
    /// Whether `table`'s data changes are staged, checked and published.
    pub fn audited(&self, table: &str) -> bool {
        self.audit.get(table).is_some_and(TableAudit::audited)
    }

    /// A plan of these changes with the settings of `self` (and no errors, hints, held
    /// back or drift): `watch` applies a table's changes one plan at a time.
    pub fn with_changes(&self, changes: Vec<Change>) -> Plan {
        Plan {
            lakehouse: self.lakehouse.clone(),
            changes,
            errors: Vec::new(),
            hints: Vec::new(),
            held_back: Vec::new(),
            release: Vec::new(),
            drift: Vec::new(),
            audit: self.audit.clone(),
            atomic: self.atomic,
        }
    }
}

/// A change the manifests still declare that a rollback took out.
#[derive(Debug, Clone, Serialize)]
pub struct HeldBackItem {
    pub table: String,
    #[serde(flatten)]
    pub held: ledger::HeldBack,
}

/// Options of [`diff_with`].
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Held-back change ids to apply again (`apply --reapply ID`).
    pub reapply: Vec<String>,
    /// Record the manifest as the baseline of tables that have none yet (`import`);
    /// otherwise a table another tool made and a manifest matches plans no change.
    pub record_baselines: bool,
    /// Maintenance alone (`lakectl maintain`): only maintenance changes (compaction,
    /// manifest merging, expiry, orphans) are planned, whatever else is pending.
    pub maintenance_only: bool,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Files to ingest and their bytes.
    pub fn ingest_counts(&self) -> (usize, u64) {
        self.changes
            .iter()
            .filter_map(|c| match c {
                Change::Ingest(i) => Some((i.files.len(), i.bytes)),
                _ => None,
            })
            .fold((0, 0), |(n, b), (n2, b2)| (n + n2, b + b2))
    }

    /// (to add, to change, to destroy, destructive changes)
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut add = 0;
        let mut change = 0;
        let mut destructive = 0;
        for c in &self.changes {
            match c {
                Change::CreateNamespace { .. } => add += 1,
                Change::Table(t) if t.create => add += 1,
                Change::Table(t) => {
                    change += 1;
                    destructive += t.destructive.len();
                }
                Change::Ingest(_) => {}
                Change::Mutation(_) => change += 1,
                Change::Revert(_) => {
                    change += 1;
                    destructive += 1;
                }
                Change::Compact(_)
                | Change::Expire(_)
                | Change::RemoveOrphans(_)
                | Change::MergeManifests(_) => change += 1,
            }
        }
        (add, change, 0, destructive)
    }
}

/// One change: exactly one commit when applied.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Change {
    CreateNamespace {
        namespace: String,
    },
    Table(Box<TableChange>),
    Ingest(Box<IngestChange>),
    Mutation(Box<MutationChange>),
    /// `onDrift: revert`: roll `main` back over other writers' snapshots.
    Revert(Box<RevertChange>),
    /// `maintenance.compaction`: small files (and the deletes on them) rewritten.
    Compact(Box<CompactChange>),
    /// `maintenance.expire`: snapshots past the retention removed.
    Expire(Box<ExpireChange>),
    /// `maintenance.orphans`: files nothing references, older than the window, deleted.
    RemoveOrphans(Box<OrphansChange>),
    /// `maintenance.manifests`: small manifests merged (a `replace` snapshot).
    MergeManifests(Box<MergeManifestsChange>),
}

/// Merging a table's small data manifests: one `replace` snapshot, no data change.
#[derive(Debug, Clone, Serialize)]
pub struct MergeManifestsChange {
    pub table: String,
    pub manifest: PathBuf,
    pub policy: crate::lake::snapshot::ManifestMerge,
    /// Data manifests now, and about how many after.
    pub manifests: usize,
    pub estimated_after: usize,
}

impl MergeManifestsChange {
    pub fn ident(&self) -> TableIdent {
        ident_of(&self.table)
    }
}

/// Deleting a table's orphan files (no commit: nothing references them).
#[derive(Debug, Clone, Serialize)]
pub struct OrphansChange {
    pub table: String,
    pub manifest: PathBuf,
    pub older_than_hours: u64,
    pub files: Vec<String>,
    pub bytes: u64,
}

impl OrphansChange {
    pub fn ident(&self) -> TableIdent {
        ident_of(&self.table)
    }
}

impl Change {
    /// Compaction, manifest merging, expiry, orphan removal.
    /// A data change (ingest, upsert, mutation): what an audited table stages on a
    /// branch.
    pub fn is_data(&self) -> bool {
        matches!(self, Change::Ingest(_) | Change::Mutation(_))
    }

    pub fn is_maintenance(&self) -> bool {
        matches!(
            self,
            Change::Compact(_)
                | Change::Expire(_)
                | Change::RemoveOrphans(_)
                | Change::MergeManifests(_)
        )
    }

    /// The table the change is to (`None` for a namespace).
    pub fn table(&self) -> Option<&str> {
        Some(match self {
            Change::CreateNamespace { .. } => return None,
            Change::Table(c) => &c.table,
            Change::Ingest(c) => &c.table,
            Change::Mutation(c) => &c.table,
            Change::Revert(c) => &c.table,
            Change::Compact(c) => &c.table,
            Change::Expire(c) => &c.table,
            Change::RemoveOrphans(c) => &c.table,
            Change::MergeManifests(c) => &c.table,
        })
    }
}

/// Compacting a table's small files: one `replace` snapshot, the rows unchanged.
#[derive(Debug, Clone, Serialize)]
pub struct CompactChange {
    pub table: String,
    pub manifest: PathBuf,
    /// The snapshot it was planned on (apply plans again on fresh state).
    pub snapshot_id: i64,
    pub policy: crate::maintain::CompactionPolicy,
    /// `maintenance.manifests`, which the compaction's own commit follows.
    pub merge: Option<crate::lake::snapshot::ManifestMerge>,
    #[serde(flatten)]
    pub plan: crate::maintain::CompactionPlan,
}

impl CompactChange {
    pub fn ident(&self) -> TableIdent {
        ident_of(&self.table)
    }
}

/// Expiring a table's snapshots past `maintenance.expire` (as `lakectl expire`).
#[derive(Debug, Clone, Serialize)]
pub struct ExpireChange {
    pub table: String,
    pub manifest: PathBuf,
    pub retention: crate::maintain::Retention,
    pub snapshots: Vec<i64>,
    pub expired_tags: Vec<String>,
    pub tags_kept: usize,
}

impl ExpireChange {
    pub fn ident(&self) -> TableIdent {
        ident_of(&self.table)
    }
}

/// Rolling a table back to lakectl's newest snapshot, over the snapshots other writers
/// committed after it (`onDrift: revert` with `allowDestructive`). The table's other
/// changes are planned again after it (`apply` re-plans; `watch` on its next cycle).
#[derive(Debug, Clone, Serialize)]
pub struct RevertChange {
    pub table: String,
    pub manifest: PathBuf,
    /// The snapshot `main` goes back to.
    pub to_snapshot: i64,
    /// The snapshots taken off `main`, newest first.
    pub snapshots: Vec<drift::ForeignSnapshot>,
}

impl RevertChange {
    pub fn ident(&self) -> TableIdent {
        ident_of(&self.table)
    }
}

/// A declared row mutation not applied yet: one `overwrite`/`delete` snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct MutationChange {
    pub table: String,
    pub manifest: PathBuf,
    pub name: String,
    /// Ledger id: `mutation:<ns>.<table>:<name>@<hash of its definition>`.
    pub change_id: String,
    pub action: crate::mutate::expr::Action,
    /// Where the mutation is declared (`spec.mutations[i]`), for errors at apply.
    #[serde(skip)]
    pub yaml_path: String,
    #[serde(skip)]
    pub at: String,
    pub max_rows_changed: Option<u64>,
    pub max_share: f64,
    pub allow_destructive: bool,
    /// Files that may hold a matching row (from column statistics and partition
    /// values); `None` when the table (or a column it reads) does not exist yet.
    pub candidates: Option<Vec<CandidateFile>>,
    /// Live data files and rows of the table now.
    pub live_files: usize,
    pub live_records: u64,
    /// Matching rows (`plan --estimate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<u64>,
}

/// A data file a mutation may have to rewrite.
#[derive(Debug, Clone, Serialize)]
pub struct CandidateFile {
    pub path: String,
    pub partition: String,
    pub records: u64,
}

impl MutationChange {
    pub fn ident(&self) -> TableIdent {
        ident_of(&self.table)
    }

    /// The most rows this mutation may change on a table of `rows` rows without
    /// `allowDestructive` (`None`: no limit).
    pub fn limit(&self, rows: u64) -> Option<u64> {
        if let Some(n) = self.max_rows_changed {
            return Some(n);
        }
        if self.allow_destructive {
            return None;
        }
        Some((rows as f64 * self.max_share).floor() as u64)
    }
}

/// Appending a source's new files to a table: one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct IngestChange {
    pub table: String,
    pub manifest: PathBuf,
    pub source: String,
    /// Ledger id: `source:<ns>.<table>:<source>@<hash of the files' identities>`.
    pub change_id: String,
    pub files: Vec<IngestFile>,
    pub bytes: u64,
    #[serde(skip)]
    pub spec: SourceSpec,
    /// Where `onError: skip` writes rejected rows.
    pub rejects_dir: PathBuf,
    /// `append`, `upsert`, `replacePartitions` or `replace`.
    #[serde(skip_serializing_if = "SourceMode::is_append")]
    pub mode: SourceMode,
    /// The key of an upsert: the source's `key`, or the table's identifier fields.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// Keys of the batch that match existing rows (`plan --estimate`, upserts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matching_keys: Option<u64>,
}

/// A file the plan will ingest.
#[derive(Debug, Clone, Serialize)]
pub struct IngestFile {
    pub path: String,
    #[serde(skip)]
    pub location: PathBuf,
    pub size: u64,
    pub mtime_ms: i64,
    pub format: SourceFormat,
    /// `new`, or `changed` (appended again under `onChange: append`).
    pub reason: String,
    /// ETag of an S3 object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

impl IngestChange {
    pub fn ident(&self) -> TableIdent {
        ident_of(&self.table)
    }
}

pub fn ident_of(table: &str) -> TableIdent {
    let (ns, name) = table.rsplit_once('.').unwrap_or(("default", table));
    TableIdent::new(
        NamespaceIdent::from_strs(ns.split('.')).unwrap_or_else(|_| NamespaceIdent::new(ns.into())),
        name.to_string(),
    )
}

/// Creating or updating one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableChange {
    /// `namespace.name`.
    pub table: String,
    /// `true`: create the table; `false`: update it in place.
    pub create: bool,
    pub manifest: PathBuf,
    /// Ledger id: `table:<ns>.<name>@<hash of the manifest spec>`.
    pub change_id: String,
    /// Table location, for a create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub schema_ops: Vec<SchemaOp>,
    /// New identifier fields (dotted paths), when they change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifier_fields: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_spec: Option<FieldsChange<PartitionTarget>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sort_order: Option<FieldsChange<SortTarget>>,
    pub set_properties: BTreeMap<String, String>,
    pub remove_properties: Vec<String>,
    /// The keys lakectl manages after this change.
    pub managed_properties: Vec<String>,
    /// Descriptions of the destructive parts (allowed by policy, or refused in `errors`).
    pub destructive: Vec<String>,
    /// The schema before and after, one line per field (for the plan's diff).
    pub schema_before: Vec<String>,
    pub schema_after: Vec<String>,
    /// The manifest's structure, recorded on the table as its drift baseline.
    #[serde(skip)]
    pub baseline: String,
    /// Only the baseline changes (a manifest now declaring what another writer did,
    /// or its protection): the commit records it and changes nothing else.
    pub record_only: bool,
}

impl TableChange {
    pub fn ident(&self) -> TableIdent {
        let (ns, name) = self
            .table
            .rsplit_once('.')
            .unwrap_or(("default", &self.table));
        TableIdent::new(
            NamespaceIdent::from_strs(ns.split('.'))
                .unwrap_or_else(|_| NamespaceIdent::new(ns.into())),
            name.to_string(),
        )
    }

    /// One line per item, for plan output and the snapshot's `lakectl.details`.
    pub fn items(&self) -> Vec<String> {
        let mut out: Vec<String> = self.schema_ops.iter().map(SchemaOp::describe).collect();
        if let Some(ids) = &self.identifier_fields {
            out.push(format!("set identifier fields: [{}]", ids.join(", ")));
        }
        if let Some(p) = &self.partition_spec {
            out.push(format!("partition by {}", p.describe()));
        }
        if let Some(s) = &self.sort_order {
            out.push(format!("sort by {}", s.describe()));
        }
        for (k, v) in &self.set_properties {
            out.push(format!("set property {k} = {v:?}"));
        }
        for k in &self.remove_properties {
            out.push(format!("remove property {k}"));
        }
        if self.record_only {
            out.push("record the manifest as the table's baseline (no other change)".into());
        }
        out
    }
}

/// `a, b, c`, or `(none)` for an empty list.
pub fn list_or_none<T: std::fmt::Display>(v: &[T]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A partition spec or sort order: from what to what.
#[derive(Debug, Clone, Serialize)]
pub struct FieldsChange<T> {
    pub from: Vec<T>,
    pub to: Vec<T>,
}

impl<T: std::fmt::Display> FieldsChange<T> {
    pub fn describe(&self) -> String {
        let show = |v: &[T]| list_or_none(v);
        if self.from.is_empty() {
            show(&self.to)
        } else {
            format!("{} → {}", show(&self.from), show(&self.to))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionTarget {
    pub column: String,
    pub transform: String,
    pub name: String,
}

impl std::fmt::Display for PartitionTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.transform == "identity" {
            write!(f, "{}", self.column)?;
        } else {
            write!(f, "{}({})", self.transform, self.column)?;
        }
        if self.name != default_partition_name(&self.column, &self.transform) {
            write!(f, " as {}", self.name)?;
        }
        Ok(())
    }
}

fn default_partition_name(column: &str, transform: &str) -> String {
    partition_field_name(&crate::manifest::types::PartitionFieldSpec {
        column: column.to_string(),
        transform: crate::manifest::types::TransformName(transform.to_string()),
        name: None,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SortTarget {
    pub column: String,
    pub transform: String,
    pub direction: String,
    pub nulls: String,
}

impl std::fmt::Display for SortTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.transform == "identity" {
            write!(f, "{}", self.column)?;
        } else {
            write!(f, "{}({})", self.transform, self.column)?;
        }
        write!(f, " {} nulls {}", self.direction, self.nulls)
    }
}

/// The partition fields a manifest declares.
pub fn partition_targets(
    specs: &[crate::manifest::types::PartitionFieldSpec],
) -> Vec<PartitionTarget> {
    specs
        .iter()
        .map(|p| PartitionTarget {
            column: p.column.clone(),
            transform: p.transform.0.clone(),
            name: partition_field_name(p),
        })
        .collect()
}

/// The sort fields a manifest declares (nulls defaulted by direction).
pub fn sort_targets(specs: &[crate::manifest::types::SortFieldSpec]) -> Vec<SortTarget> {
    specs
        .iter()
        .map(|s| SortTarget {
            column: s.column.clone(),
            transform: s.transform.0.clone(),
            direction: match s.direction {
                SortDirectionSpec::Asc => "asc".into(),
                SortDirectionSpec::Desc => "desc".into(),
            },
            nulls: match (s.nulls, s.direction) {
                (Some(NullsSpec::First), _) | (None, SortDirectionSpec::Asc) => "first".into(),
                (Some(NullsSpec::Last), _) | (None, SortDirectionSpec::Desc) => "last".into(),
            },
        })
        .collect()
}

/// Short stable hash of a manifest's spec (the change id's suffix).
pub fn spec_hash(m: &TableManifest) -> String {
    // The table's structure only: sources and policy do not change the table.
    let s = &m.spec;
    let json = serde_json::to_vec(&serde_json::json!({
        "columns": s.columns,
        "identifierFields": s.identifier_fields,
        "partitioning": s.partitioning,
        "sortOrder": s.sort_order,
        "properties": s.properties,
    }))
    .unwrap_or_default();
    short_hash(&json)
}

/// The first 6 bytes of SHA-256, in hex: the suffix of change ids.
pub fn short_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Compares every manifest with the actual tables.
pub fn diff(set: &ManifestSet, actual: &Actual, lakehouse: LakeConfig) -> Plan {
    diff_with(set, actual, lakehouse, &DiffOptions::default())
}

/// Ledger id of a mutation: its name and a hash of its definition.
pub fn mutation_change_id(table: &str, m: &crate::manifest::types::MutationSpec) -> String {
    let json = serde_json::to_vec(&serde_json::json!({
        "update": m.update,
        "delete": m.delete,
    }))
    .unwrap_or_default();
    format!("mutation:{table}:{}@{}", m.name, short_hash(&json))
}

/// A mutation's SQL.
pub fn action_of(m: &crate::manifest::types::MutationSpec) -> crate::mutate::expr::Action {
    use crate::mutate::expr::Action;
    match (&m.update, &m.delete) {
        (Some(u), _) => Action::Update {
            predicate: u.predicate.0.clone(),
            set: u
                .set
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
        },
        (None, Some(d)) => Action::Delete {
            predicate: d.predicate.0.clone(),
        },
        (None, None) => Action::Delete {
            predicate: "false".into(),
        },
    }
}

/// Compares every manifest with the actual tables, with options.
pub fn diff_with(
    set: &ManifestSet,
    actual: &Actual,
    lakehouse: LakeConfig,
    options: &DiffOptions,
) -> Plan {
    let mut plan = Plan {
        lakehouse,
        changes: Vec::new(),
        errors: Vec::new(),
        hints: Vec::new(),
        held_back: Vec::new(),
        release: Vec::new(),
        drift: Vec::new(),
        audit: audits(set),
        atomic: set.atomic_publish(),
    };
    // Held-back changes per table, less those released by `--reapply`.
    let mut held: HashMap<String, Vec<ledger::HeldBack>> = HashMap::new();
    for (name, state) in &actual.tables {
        let mut h = ledger::held_back(&state.metadata);
        h.retain(|x| {
            if options.reapply.contains(&x.change_id) {
                plan.release.push((name.clone(), x.change_id.clone()));
                false
            } else {
                true
            }
        });
        // A released change that was applied after one that stays held back may
        // depend on it (a mutation setting a column the held-back table change added).
        let order = |x: &ledger::HeldBack| {
            state
                .metadata
                .snapshot_by_id(x.snapshot_id)
                .map(|s| s.sequence_number())
        };
        for (_, released) in plan.release.iter().filter(|(t, _)| t == name) {
            let Some(r) = ledger::held_back(&state.metadata)
                .into_iter()
                .find(|x| &x.change_id == released)
            else {
                continue;
            };
            for earlier in h
                .iter()
                .filter(|x| order(x) < order(&r) && order(x).is_some())
            {
                plan.hints.push(format!(
                    "{name}: `{}` was applied after `{}` ({}), which stays held back; if it needs it, reapply both: `lakectl apply --reapply {} --reapply {}`",
                    r.change_id, earlier.change_id, earlier.details, earlier.change_id, r.change_id
                ));
            }
        }
        held.insert(name.clone(), h);
    }
    let held_item = |table: &str, id: &str| -> Option<HeldBackItem> {
        held.get(table)?
            .iter()
            .find(|h| h.change_id == id)
            .map(|h| HeldBackItem {
                table: table.to_string(),
                held: h.clone(),
            })
    };
    let mut namespaces: Vec<String> = Vec::new();
    for t in &set.tables {
        let ns = &t.value.metadata.namespace;
        if !actual.namespaces.get(ns).copied().unwrap_or(false) && !namespaces.contains(ns) {
            namespaces.push(ns.clone());
        }
    }
    plan.changes.extend(
        namespaces
            .into_iter()
            .map(|namespace| Change::CreateNamespace { namespace }),
    );
    // Drift, and what apply aims at for each table.
    let mut targets: Vec<Located<TableManifest>> = Vec::new();
    let mut reverting: std::collections::HashSet<String> = Default::default();
    for t in &set.tables {
        let Some(state) = actual.tables.get(&t.table_name()) else {
            targets.push(t.clone());
            continue;
        };
        let (d, effective) = drift::assess(t, &state.metadata, plan.lakehouse.protect);
        targets.push(effective);
        if d.policy == OnDrift::Revert && !d.snapshots.is_empty() {
            let protect = t.value.spec.policy.protect || plan.lakehouse.protect;
            let what = format!(
                "rolling back {} snapshot(s) other writers committed",
                d.snapshots.len()
            );
            if protect || !t.value.spec.policy.allow_destructive {
                plan.errors.push(t.error_at(
                    "spec.policy.onDrift",
                    destructive_refusal(&t.table_name(), &what, protect),
                ));
            } else if let Some(to) = d.since_snapshot {
                reverting.insert(t.table_name());
                plan.hints.push(format!(
                    "{}: the table's other changes are planned after the revert (`apply` plans again; `watch` on its next cycle)",
                    t.table_name()
                ));
                plan.changes.push(Change::Revert(Box::new(RevertChange {
                    table: t.table_name(),
                    manifest: t.file.clone(),
                    to_snapshot: to,
                    snapshots: d.snapshots.clone(),
                })));
            }
        }
        if !d.is_empty() {
            plan.drift.push(d);
        }
    }
    for (t, target) in set.tables.iter().zip(&targets) {
        if reverting.contains(&t.table_name()) {
            continue;
        }
        let state = actual.tables.get(&t.table_name());
        if let Some(c) = diff_table(
            target,
            &t.value,
            state,
            &plan.lakehouse,
            &mut plan.errors,
            &mut plan.hints,
            options.record_baselines,
        ) {
            if let Some(h) = held_item(&c.table, &c.change_id).filter(|_| !c.create) {
                plan.held_back.push(h);
            } else {
                plan.changes.push(Change::Table(Box::new(c)));
            }
        }
    }
    for t in &set.tables {
        let Some(listed) = actual.sources.get(&t.table_name()) else {
            continue;
        };
        if reverting.contains(&t.table_name()) {
            continue;
        }
        for (i, (src, files)) in t.value.spec.sources.iter().zip(listed).enumerate() {
            let at = item("spec.sources", i);
            match files {
                Err(e) => plan.errors.push(t.error_at(
                    &format!("{at}.uri"),
                    format!("{}: source `{}`: {e}", t.table_name(), src.name),
                )),
                Ok(files) => {
                    // Files of a rolled-back ingest stay out until released.
                    let table_held = held.get(&t.table_name());
                    let files: Vec<(SourceFile, FileState)> = files
                        .iter()
                        .filter(|(f, state)| {
                            let h = table_held
                                .and_then(|h| h.iter().find(|h| h.files.contains(&f.path)));
                            match h {
                                Some(h) if *state != FileState::Ingested => {
                                    if !plan.held_back.iter().any(|x| {
                                        x.held.change_id == h.change_id && x.table == t.table_name()
                                    }) {
                                        plan.held_back.push(HeldBackItem {
                                            table: t.table_name(),
                                            held: h.clone(),
                                        });
                                    }
                                    false
                                }
                                _ => true,
                            }
                        })
                        .cloned()
                        .collect();
                    if let Some(c) =
                        diff_source(t, src, &at, &files, &mut plan.errors, &mut plan.hints)
                    {
                        plan.changes.push(Change::Ingest(Box::new(c)));
                    }
                }
            }
        }
    }
    for t in &set.tables {
        let name = t.table_name();
        let state = actual.tables.get(&name);
        let no_changes = std::collections::HashSet::new();
        let applied = actual
            .ledgers
            .get(&name)
            .map(|l| &l.changes)
            .unwrap_or(&no_changes);
        if reverting.contains(&name) {
            continue;
        }
        let protect = t.value.spec.policy.protect || plan.lakehouse.protect;
        for (i, m) in t.value.spec.mutations.iter().enumerate() {
            let change_id = mutation_change_id(&name, m);
            if applied.contains(&change_id) {
                continue;
            }
            if let Some(h) = held_item(&name, &change_id) {
                plan.held_back.push(h);
                continue;
            }
            let action = action_of(m);
            let files = actual.files.get(&name);
            let candidates = match (state, files) {
                (Some(s), Some(files)) => {
                    crate::mutate::candidate_files(&files.files, &s.metadata, action.predicate())
                        .ok()
                        .map(|c| {
                            c.into_iter()
                                .map(|f| CandidateFile {
                                    path: f.path().to_string(),
                                    partition: crate::mutate::describe_partition(f, &s.metadata),
                                    records: f.entry.record_count(),
                                })
                                .collect()
                        })
                }
                // A table with no data: nothing can match.
                (Some(_), None) => Some(Vec::new()),
                (None, _) => None,
            };
            let at = item("spec.mutations", i);
            plan.changes.push(Change::Mutation(Box::new(MutationChange {
                table: name.clone(),
                manifest: t.file.clone(),
                name: m.name.clone(),
                change_id,
                action,
                at: t.where_is(&at),
                yaml_path: at,
                max_rows_changed: m.max_rows_changed,
                max_share: t.value.spec.policy.max_mutation_share.unwrap_or(0.25),
                allow_destructive: t.value.spec.policy.allow_destructive && !protect,
                candidates,
                live_files: files.map(|f| f.files.len()).unwrap_or(0),
                live_records: files.map(|f| f.records()).unwrap_or(0),
                estimate: None,
            })));
        }
        if let Some(state) = state {
            diff_maintenance(
                set,
                t,
                state,
                actual.files.get(&name),
                actual.orphans.get(&name),
                options,
                &mut plan,
            );
        }
    }
    if options.maintenance_only {
        plan.changes.retain(Change::is_maintenance);
        plan.held_back.clear();
    }
    plan
}

/// `maintenance.manifests` as the snapshot writer's merge settings.
fn manifest_merge(
    spec: &crate::manifest::types::ManifestMergeSpec,
) -> crate::lake::snapshot::ManifestMerge {
    crate::lake::snapshot::ManifestMerge {
        min_count: spec.min_count_to_merge.unwrap_or(100).max(2) as usize,
        target_bytes: spec.target_manifest_size_bytes.unwrap_or(8 << 20).max(1),
    }
}

/// Maintenance a table's thresholds call for now (level-triggered: nothing when none
/// is crossed). Planned after the table's other changes, on the state observed.
fn diff_maintenance(
    set: &ManifestSet,
    t: &Located<TableManifest>,
    state: &TableState,
    files: Option<&crate::mutate::SnapshotFiles>,
    orphans: Option<&Result<Vec<crate::maintain::orphans::ListedFile>, String>>,
    options: &DiffOptions,
    plan: &mut Plan,
) {
    let m = set.maintenance_of(t);
    let md = &state.metadata;
    let name = t.table_name();
    let pending = !options.maintenance_only
        && plan
            .changes
            .iter()
            .any(|c| c.table() == Some(name.as_str()));
    if let (Some(spec), Some(files), Some(snapshot_id)) =
        (&m.compaction, files, md.current_snapshot_id())
    {
        match crate::maintain::strategy_supported(spec, !md.default_sort_order().is_unsorted()) {
            Err(e) => plan
                .errors
                .push(t.error_at("spec.maintenance.compaction", format!("{name}: {e}"))),
            Ok(()) => {
                let policy = crate::maintain::CompactionPolicy::resolve(spec, Some(md));
                let c = crate::maintain::plan_compaction(files, md, &policy);
                if !c.is_empty() {
                    if pending {
                        plan.hints.push(format!(
                            "{name}: compaction ({} files) is planned again after this apply's other changes to the table",
                            c.input_files()
                        ));
                    } else {
                        plan.changes.push(Change::Compact(Box::new(CompactChange {
                            table: name.clone(),
                            manifest: t.file.clone(),
                            snapshot_id,
                            policy,
                            merge: m.manifests.as_ref().map(manifest_merge),
                            plan: c,
                        })));
                    }
                }
            }
        }
    }
    if let Some(e) = &m.expire {
        let retention = crate::maintain::Retention::of_maintenance(e);
        let (_, expired, expired_tags) =
            crate::maintain::expiry_selection(md, retention, chrono::Utc::now().timestamp_millis());
        if !expired.is_empty() || !expired_tags.is_empty() {
            plan.changes.push(Change::Expire(Box::new(ExpireChange {
                table: name.clone(),
                manifest: t.file.clone(),
                retention,
                tags_kept: crate::maintain::tags_kept(md, &expired_tags),
                snapshots: expired,
                expired_tags,
            })));
        }
    }
    if let (Some(o), Some(found)) = (&m.orphans, orphans) {
        match found {
            Ok(files) if !files.is_empty() => {
                plan.changes
                    .push(Change::RemoveOrphans(Box::new(OrphansChange {
                        table: name.clone(),
                        manifest: t.file.clone(),
                        older_than_hours: o.older_than_hours.unwrap_or(72),
                        bytes: files.iter().map(|f| f.size).sum(),
                        files: files.iter().map(|f| f.path.clone()).collect(),
                    })));
            }
            Ok(_) => {}
            Err(e) => plan
                .hints
                .push(format!("{name}: orphan files not looked for: {e}")),
        }
    }
    if let (Some(spec), Some(files)) = (&m.manifests, files) {
        let compacting = plan
            .changes
            .iter()
            .any(|c| matches!(c, Change::Compact(c) if c.table == name));
        let policy = manifest_merge(spec);
        let data: Vec<&iceberg::spec::ManifestFile> = files
            .manifests
            .iter()
            .filter(|m| m.content == iceberg::spec::ManifestContentType::Data)
            .collect();
        let small: Vec<u64> = data
            .iter()
            .map(|m| m.manifest_length as u64)
            .filter(|l| *l < policy.target_bytes)
            .collect();
        // A compaction's own commit merges too (its snapshot writer does): no second
        // change for the same table.
        if !pending && !compacting && data.len() >= policy.min_count && small.len() >= 2 {
            let after = data.len() - small.len()
                + (small.iter().sum::<u64>().div_ceil(policy.target_bytes) as usize).max(1);
            plan.changes
                .push(Change::MergeManifests(Box::new(MergeManifestsChange {
                    table: name.clone(),
                    manifest: t.file.clone(),
                    policy,
                    manifests: data.len(),
                    estimated_after: after,
                })));
        }
    }
}

fn diff_source(
    t: &Located<TableManifest>,
    src: &SourceSpec,
    at: &str,
    files: &[(SourceFile, FileState)],
    errors: &mut Vec<Diagnostic>,
    hints: &mut Vec<String>,
) -> Option<IngestChange> {
    let mut out = Vec::new();
    for (f, state) in files {
        let reason = match state {
            FileState::Ingested => continue,
            FileState::New => "new",
            FileState::Changed { .. } if src.on_change == OnChange::Append => "changed",
            FileState::Changed { .. } => {
                hints.push(format!(
                    "{}: source `{}`: {} changed since it was ingested; not ingested again (onChange: report; set `onChange: append` to append it)",
                    t.table_name(),
                    src.name,
                    f.path
                ));
                continue;
            }
        };
        let Some(format) = src.format.or(f.format) else {
            errors.push(t.error_at(
                &format!("{at}.uri"),
                format!(
                    "{}: source `{}`: cannot tell the format of {} from its extension; set `format:`",
                    t.table_name(),
                    src.name,
                    f.path
                ),
            ));
            continue;
        };
        out.push(IngestFile {
            path: f.path.clone(),
            location: f.location.clone(),
            size: f.size,
            mtime_ms: f.mtime_ms,
            format,
            reason: reason.into(),
            etag: f.etag.clone(),
        });
    }
    if out.is_empty() {
        return None;
    }
    if src.order == FileOrder::Mtime {
        out.sort_by(|a, b| (a.mtime_ms, &a.path).cmp(&(b.mtime_ms, &b.path)));
    }
    let identities: Vec<String> = out
        .iter()
        .map(|f| format!("{}:{}:{}", f.path, f.size, f.mtime_ms))
        .collect();
    let hash = short_hash(identities.join("\n").as_bytes());
    let base = t.file.parent().unwrap_or(std::path::Path::new("."));
    let rejects_dir = match &src.rejects {
        Some(r) => base.join(r),
        None => std::path::absolute(base)
            .unwrap_or_else(|_| base.to_path_buf())
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
            .join(".lakectl/rejects")
            .join(t.table_name())
            .join(&src.name),
    };
    Some(IngestChange {
        table: t.table_name(),
        manifest: t.file.clone(),
        source: src.name.clone(),
        change_id: format!("source:{}:{}@{hash}", t.table_name(), src.name),
        bytes: out.iter().map(|f| f.size).sum(),
        files: out,
        spec: src.clone(),
        rejects_dir,
        mode: src.mode,
        key: if src.key.is_empty() && src.mode == SourceMode::Upsert {
            t.value.spec.identifier_fields.clone()
        } else {
            src.key.clone()
        },
        matching_keys: None,
    })
}

/// The change that makes `state` match `t` (the effective desired state: the manifest,
/// less the drift it leaves alone). `declared` is the manifest as written: it names the
/// change and is recorded as the table's baseline.
fn diff_table(
    t: &Located<TableManifest>,
    declared: &TableManifest,
    state: Option<&TableState>,
    lakehouse: &LakeConfig,
    errors: &mut Vec<Diagnostic>,
    hints: &mut Vec<String>,
    record_baselines: bool,
) -> Option<TableChange> {
    let m = &t.value;
    let baseline = drift::Baseline::of(declared, lakehouse.protect);
    let protect = baseline.protect;
    let baseline = baseline.to_json();
    let desired = desired_columns(&m.spec.columns);
    let (before, has_rows, props, current_ident, actual_spec, actual_sort) = match state {
        None => (
            Vec::new(),
            false,
            HashMap::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        ),
        Some(s) => {
            let md = &s.metadata;
            let nodes = schema::nodes_of(md.current_schema());
            let ids_to_path = schema::paths_by_id(&nodes);
            let ident: Vec<String> = md
                .current_schema()
                .identifier_field_ids()
                .filter_map(|id| ids_to_path.get(&id).cloned())
                .collect();
            let has_rows = md
                .current_snapshot()
                .and_then(|s| {
                    s.summary()
                        .additional_properties
                        .get("total-records")
                        .cloned()
                })
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|n| n > 0);
            (
                nodes,
                has_rows,
                md.properties().clone(),
                ident,
                md.default_partition_spec().fields().to_vec(),
                md.default_sort_order().fields.clone(),
            )
        }
    };
    let create = state.is_none();
    let sd = schema::diff(&before, &desired, has_rows);
    for r in &sd.refusals {
        errors.push(t.error_at(&r.yaml_path, format!("{}: {}", t.table_name(), r.message)));
    }
    hints.extend(sd.hints.iter().map(|h| format!("{}: {h}", t.table_name())));
    let last_id = state.map(|s| s.metadata.last_column_id()).unwrap_or(0);
    let after = match schema::apply_ops(before.clone(), &sd.ops, last_id) {
        Ok((after, _)) => after,
        Err(e) => {
            errors.push(t.error_at("spec.columns", format!("{}: {e}", t.table_name())));
            return None;
        }
    };
    let after_paths = schema::paths_by_id(&after);
    let before_paths = schema::paths_by_id(&before);

    // Identifier fields (a set: order does not matter).
    let mut want_ident = m.spec.identifier_fields.clone();
    want_ident.sort();
    let mut have_ident: Vec<String> = current_ident
        .iter()
        .map(|p| {
            // Follow renames: the id's path in the new schema.
            let id = schema::paths_by_name(&before).get(p).copied();
            id.and_then(|id| after_paths.get(&id).cloned())
                .unwrap_or_else(|| p.clone())
        })
        .collect();
    have_ident.sort();
    let identifier_fields = (want_ident != have_ident).then(|| m.spec.identifier_fields.clone());

    // Partition spec.
    let path_of = |id: i32| {
        after_paths
            .get(&id)
            .cloned()
            .or_else(|| before_paths.get(&id).map(|p| format!("{p} (dropped)")))
            .unwrap_or_else(|| format!("<field {id}>"))
    };
    let have_spec: Vec<PartitionTarget> = actual_spec
        .iter()
        .map(|f| PartitionTarget {
            column: path_of(f.source_id),
            transform: f.transform.to_string(),
            name: f.name.clone(),
        })
        .collect();
    let want_spec = partition_targets(&m.spec.partitioning);
    let partition_spec = (have_spec != want_spec).then(|| FieldsChange {
        from: have_spec.clone(),
        to: want_spec.clone(),
    });

    // Sort order.
    let have_sort: Vec<SortTarget> = actual_sort
        .iter()
        .map(|f| SortTarget {
            column: path_of(f.source_id),
            transform: f.transform.to_string(),
            direction: match f.direction {
                SortDirection::Ascending => "asc".into(),
                SortDirection::Descending => "desc".into(),
            },
            nulls: match f.null_order {
                NullOrder::First => "first".into(),
                NullOrder::Last => "last".into(),
            },
        })
        .collect();
    let want_sort = sort_targets(&m.spec.sort_order);
    let sort_order = (have_sort != want_sort).then_some(FieldsChange {
        from: have_sort,
        to: want_sort,
    });

    // Properties.
    let managed_before: Vec<String> = props
        .get(MANAGED_PROPERTIES)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let set_properties: BTreeMap<String, String> = m
        .spec
        .properties
        .iter()
        .filter(|(k, v)| props.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let remove_properties: Vec<String> = managed_before
        .iter()
        .filter(|k| !m.spec.properties.contains_key(*k) && props.contains_key(*k))
        .cloned()
        .collect();
    let managed_properties: Vec<String> = m.spec.properties.keys().cloned().collect();

    // Destructive parts and policy.
    let mut destructive: Vec<String> = sd
        .ops
        .iter()
        .filter(|o| o.is_destructive())
        .map(SchemaOp::describe)
        .collect();
    if let Some(p) = &partition_spec {
        for f in &p.from {
            if !p
                .to
                .iter()
                .any(|x| x.column == f.column && x.transform == f.transform)
            {
                destructive.push(format!("remove partition field {f}"));
            }
        }
    }
    if !create && !destructive.is_empty() && (protect || !m.spec.policy.allow_destructive) {
        for d in &destructive {
            errors.push(t.error_at("spec", destructive_refusal(&t.table_name(), d, protect)));
        }
    }

    let nothing = sd.ops.is_empty()
        && identifier_fields.is_none()
        && partition_spec.is_none()
        && sort_order.is_none()
        && set_properties.is_empty()
        && remove_properties.is_empty();
    let recorded = state.and_then(|s| s.metadata.properties().get(drift::DESIRED));
    let record_only = nothing
        && !create
        && recorded != Some(&baseline)
        && (recorded.is_some() || record_baselines);
    if nothing && !create && !record_only {
        return None;
    }
    let ident = table_ident(m);
    let location = create.then(|| {
        m.spec.location.clone().unwrap_or_else(|| {
            format!(
                "{}/{}/{}",
                lakehouse.warehouse.trim_end_matches('/'),
                ident.namespace().join("/"),
                ident.name()
            )
        })
    });
    Some(TableChange {
        table: t.table_name(),
        create,
        manifest: t.file.clone(),
        change_id: if record_only {
            // Only the baseline (e.g. the protection) changes: its own id.
            format!(
                "baseline:{}@{}",
                t.table_name(),
                short_hash(baseline.as_bytes())
            )
        } else {
            format!("table:{}@{}", t.table_name(), spec_hash(declared))
        },
        location,
        schema_ops: sd.ops,
        identifier_fields: if create {
            (!m.spec.identifier_fields.is_empty()).then(|| m.spec.identifier_fields.clone())
        } else {
            identifier_fields
        },
        partition_spec,
        sort_order,
        set_properties,
        remove_properties,
        managed_properties,
        destructive: if create { Vec::new() } else { destructive },
        schema_before: schema::render_lines(&before),
        schema_after: schema::render_lines(&after),
        baseline,
        record_only,
    })
}

/// Why a destructive change is refused.
pub fn destructive_refusal(table: &str, what: &str, protect: bool) -> String {
    if protect {
        format!("{table}: {what} is destructive and the table is protected (`policy.protect`); it is refused whatever `allowDestructive` says")
    } else {
        format!(
            "{table}: {what} is destructive; set `spec.policy.allowDestructive: true` to allow it"
        )
    }
}

/// Where a manifest's column is, for errors raised later (apply).
pub fn column_yaml_path(index: usize) -> String {
    item("spec.columns", index)
}

/// The desired columns, re-exported for apply.
pub fn desired_of(m: &TableManifest) -> Vec<Desired> {
    desired_columns(&m.spec.columns)
}

/// A node tree's identifier field names, for apply.
pub fn identifier_names(nodes: &[Node], ids: impl Iterator<Item = i32>) -> Vec<String> {
    let paths = schema::paths_by_id(nodes);
    ids.filter_map(|id| paths.get(&id).cloned()).collect()
}
