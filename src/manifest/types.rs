//! The YAML types users write. They are the single source of the JSON Schema
//! (`lakectl schema`), so every field carries a doc comment that editors show.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The only manifest API version this lakectl understands.
pub const API_VERSION: &str = "lakectl/v1";

/// `apiVersion: lakectl/v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    #[serde(rename = "lakectl/v1")]
    V1,
}

/// `kind: Table`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TableKind {
    Table,
}

/// `kind: Lakehouse`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LakehouseKind {
    Lakehouse,
}

/// A table declared in a manifest: what the Iceberg table must look like.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TableManifest {
    pub api_version: ApiVersion,
    pub kind: TableKind,
    pub metadata: TableMetadataSpec,
    pub spec: TableSpec,
}

/// Kubernetes-style object metadata of a table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TableMetadataSpec {
    /// Table name inside its namespace.
    pub name: String,
    /// Iceberg namespace; dots separate levels (`sales.eu`).
    pub namespace: String,
    /// Free-form labels (kept in the manifest; not written to the table).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations (kept in the manifest; not written to the table).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The desired state of one table.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TableSpec {
    /// Table location; defaults to `<warehouse>/<namespace>/<name>`. Only used at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The columns, in order. Nested types (struct, list, map) carry their own fields.
    pub columns: Vec<Column>,
    /// Columns that identify a row (Iceberg identifier fields); must be required primitives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identifier_fields: Vec<String>,
    /// Partition fields, in order: a source column and a transform.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitioning: Vec<PartitionFieldSpec>,
    /// Sort order of written data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sort_order: Vec<SortFieldSpec>,
    /// Table properties lakectl sets. Properties set by other writers are left alone;
    /// a property removed from this map is removed from the table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// What lakectl may do to this table.
    #[serde(default, skip_serializing_if = "Policy::is_default")]
    pub policy: Policy,
    /// Files to ingest: each file is appended exactly once (see the ledger).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceSpec>,
    /// Row mutations, in order: each is applied once, copy-on-write, as one snapshot.
    /// Editing a mutation's definition makes it a new mutation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mutations: Vec<MutationSpec>,
    /// Snapshot retention: restore-point tags and what `lakectl expire` keeps.
    #[serde(default, skip_serializing_if = "RetentionSpec::is_default")]
    pub retention: RetentionSpec,
    /// Declared maintenance (compaction, expiry), planned and applied like any change
    /// once a threshold is crossed. Overrides the Lakehouse's defaults field by field.
    #[serde(default, skip_serializing_if = "MaintenanceSpec::is_default")]
    pub maintenance: MaintenanceSpec,
    /// Declared checks of the table's data: run on the staged data before an audited
    /// publish, by `lakectl check` on `main`, and reported by `watch`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSpec>,
    /// How data changes reach `main`: `direct` (each commits to `main`), or `audited`
    /// (staged on a branch, checked there, published by fast-forwarding `main`). Default:
    /// the Lakehouse's `publish`, else `direct`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishMode>,
}

/// `spec.publish`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Data changes commit to `main` at once.
    #[default]
    Direct,
    /// Data changes commit to a branch `lakectl/audit/<apply id>`; `main` is
    /// fast-forwarded to it only when the error-level checks pass.
    Audited,
}

/// One declared check: a name, exactly one kind (`unique`, `notNull`,
/// `acceptedValues`, `rowCount`, `freshness`, `sql`) and a severity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CheckSpec {
    /// Unique within the table; names the check in output and in `/status`.
    pub name: String,
    /// No two rows share these columns' values (empty list: the table's
    /// `identifierFields`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<Vec<String>>,
    /// These columns are never null.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_null: Option<Vec<String>>,
    /// Each column's non-null values are among the listed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_values: Option<BTreeMap<String, Vec<CheckValue>>>,
    /// The number of rows: at least `min`, at most `max`, and changed by at most
    /// `maxChangePercent` against `main` before the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_count: Option<RowCountCheck>,
    /// The newest value of a timestamp (or date) column is at most `maxAgeHours` old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<FreshnessCheck>,
    /// A query returning one boolean (true: passes); `{table}` names the table checked,
    /// e.g. `select count(*) = 0 from {table} where qty < 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// `error` (default): a failure stops the publish; `warn`: reported, published.
    #[serde(default, skip_serializing_if = "Severity::is_error")]
    pub severity: Severity,
}

/// A value of `acceptedValues`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CheckValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl CheckValue {
    /// The value as a SQL literal.
    pub fn sql_literal(&self) -> String {
        match self {
            CheckValue::Bool(b) => b.to_string(),
            CheckValue::Int(i) => i.to_string(),
            CheckValue::Float(f) => format!("{f:?}"),
            CheckValue::Text(s) => format!("'{}'", s.replace('\'', "''")),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RowCountCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// Largest change of the row count, in percent of the count on `main` before the
    /// change (not checked when `main` was empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_change_percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FreshnessCheck {
    pub column: String,
    pub max_age_hours: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Error,
    Warn,
}

impl Severity {
    pub fn is_error(&self) -> bool {
        *self == Severity::Error
    }
}

impl CheckSpec {
    /// The kinds set (exactly one is valid).
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        if self.unique.is_some() {
            k.push("unique");
        }
        if self.not_null.is_some() {
            k.push("notNull");
        }
        if self.accepted_values.is_some() {
            k.push("acceptedValues");
        }
        if self.row_count.is_some() {
            k.push("rowCount");
        }
        if self.freshness.is_some() {
            k.push("freshness");
        }
        if self.sql.is_some() {
            k.push("sql");
        }
        k
    }
}

/// `spec.maintenance`: what keeps a table healthy. A block that is present is on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MaintenanceSpec {
    /// Rewrite small data files (and the delete files that apply to them) into files
    /// of the target size, one `replace` snapshot per table and apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionSpec>,
    /// Manifest merging (accepted; lakectl's own commits do not merge manifests yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests: Option<ManifestMergeSpec>,
    /// Snapshot expiry, as `lakectl expire` does (what `spec.retention` says today).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expire: Option<ExpireSpec>,
    /// Orphan file removal (accepted; not run by apply yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphans: Option<OrphanSpec>,
    /// How often `watch` runs maintenance for this table (`1h`, `30m`); default 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CompactionSpec {
    /// Size of the files compaction writes; default `write.target-file-size-bytes`,
    /// else 128 MiB. A file under 3/4 of it is small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_file_size_bytes: Option<u64>,
    /// Compact a partition once it has this many small files (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_input_files: Option<u32>,
    /// `binpack`, or `sort` (by the table's sortOrder; the default when it has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<CompactionStrategy>,
    /// At most this many input bytes per apply (default 10 GiB); the rest waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes_per_apply: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompactionStrategy {
    Binpack,
    Sort,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManifestMergeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_manifest_size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count_to_merge: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExpireSpec {
    /// Snapshots of `main` always kept (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Snapshots younger than this are kept (days, default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_snapshot_age_days: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OrphanSpec {
    /// Files younger than this are never touched (hours; floor 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than_hours: Option<u64>,
}

impl MaintenanceSpec {
    pub fn is_default(&self) -> bool {
        *self == MaintenanceSpec::default()
    }

    /// This block over `defaults` (a Lakehouse's), field by field.
    pub fn over(&self, defaults: &MaintenanceSpec) -> MaintenanceSpec {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            a.clone().or_else(|| b.clone())
        }
        let compaction = match (&self.compaction, &defaults.compaction) {
            (Some(a), Some(b)) => Some(CompactionSpec {
                target_file_size_bytes: pick(&a.target_file_size_bytes, &b.target_file_size_bytes),
                min_input_files: pick(&a.min_input_files, &b.min_input_files),
                strategy: pick(&a.strategy, &b.strategy),
                max_bytes_per_apply: pick(&a.max_bytes_per_apply, &b.max_bytes_per_apply),
            }),
            (a, b) => pick(a, b),
        };
        let manifests = match (&self.manifests, &defaults.manifests) {
            (Some(a), Some(b)) => Some(ManifestMergeSpec {
                target_manifest_size_bytes: pick(
                    &a.target_manifest_size_bytes,
                    &b.target_manifest_size_bytes,
                ),
                min_count_to_merge: pick(&a.min_count_to_merge, &b.min_count_to_merge),
            }),
            (a, b) => pick(a, b),
        };
        let expire = match (&self.expire, &defaults.expire) {
            (Some(a), Some(b)) => Some(ExpireSpec {
                keep_last: pick(&a.keep_last, &b.keep_last),
                max_snapshot_age_days: pick(&a.max_snapshot_age_days, &b.max_snapshot_age_days),
            }),
            (a, b) => pick(a, b),
        };
        let orphans = match (&self.orphans, &defaults.orphans) {
            (Some(a), Some(b)) => Some(OrphanSpec {
                older_than_hours: pick(&a.older_than_hours, &b.older_than_hours),
            }),
            (a, b) => pick(a, b),
        };
        MaintenanceSpec {
            compaction,
            manifests,
            expire,
            orphans,
            every: pick(&self.every, &defaults.every),
        }
    }
}

/// A declared row mutation: an `update` or a `delete`, applied once (copy-on-write:
/// only data files holding matching rows are rewritten).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MutationSpec {
    /// Mutation name, unique in the table; part of its ledger id.
    pub name: String,
    /// Set columns of the rows matching `where`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateSpec>,
    /// Delete the rows matching `where`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<DeleteSpec>,
    /// The most rows this mutation may change; above it the apply fails and commits
    /// nothing. Replaces the table's `policy.maxMutationShare` check for this mutation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows_changed: Option<u64>,
}

/// `update: {where: ..., set: {column: expression}}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateSpec {
    /// SQL predicate over the table's columns (DataFusion SQL), e.g. `day = DATE '2024-01-02' AND qty < 0`.
    #[serde(rename = "where")]
    pub predicate: SqlText,
    /// Column → SQL expression over the row's old values (e.g. `qty: "abs(qty)"`,
    /// `status: "'refunded'"`); evaluated for matching rows only.
    pub set: BTreeMap<String, SqlText>,
}

/// `delete: {where: ...}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeleteSpec {
    /// SQL predicate over the table's columns (DataFusion SQL).
    #[serde(rename = "where")]
    pub predicate: SqlText,
}

/// A SQL expression; YAML numbers and booleans are taken as their SQL literals.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct SqlText(pub String);

impl<'de> Deserialize<'de> for SqlText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        Ok(SqlText(
            match Raw::deserialize(d).map_err(|_| {
                serde::de::Error::custom("expected a SQL expression (a string, number or boolean)")
            })? {
                Raw::S(s) => s,
                Raw::I(i) => i.to_string(),
                Raw::F(f) => f.to_string(),
                Raw::B(b) => b.to_string(),
            },
        ))
    }
}

impl JsonSchema for SqlText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SqlText".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": ["string", "number", "boolean"],
            "description": "SQL expression (DataFusion dialect); numbers and booleans are literals"
        })
    }
}

/// What `lakectl expire` keeps, and the tags `apply` sets as restore points.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Tag the last snapshot of every apply that changes this table
    /// (`lakectl-apply-<UTC time>`): a restore point `expire` never removes.
    #[serde(default)]
    pub tag_applies: bool,
    /// How long apply tags live (days); kept forever when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_max_age_days: Option<u64>,
    /// Snapshots of `main` to keep, newest first, whatever their age (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Snapshots younger than this are kept (days, default 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_snapshot_age_days: Option<u64>,
}

/// A declared ingest source: files (a path, glob or directory) appended exactly once.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceSpec {
    /// Source name, unique in the table; part of the ledger id of every file it ingests.
    pub name: String,
    /// A file, a glob (`data/sales/*.csv`, `**` allowed) or a directory, relative to the
    /// manifest file; or `s3://bucket/prefix/` with an optional glob.
    pub uri: String,
    /// csv, json (newline-delimited) or parquet; inferred from the file extension when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<SourceFormat>,
    /// CSV options.
    #[serde(default)]
    pub csv: CsvOptions,
    /// How CSV and JSON files are compressed: gzip, zstd, bzip2 or none; default from
    /// the extension (`.gz`, `.zst`, `.bz2` after the format's own). Streamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// How the source is listed: `full` (default: every object, compared with the
    /// ledger by key, size and ETag) or `lexical`: an S3 listing starts after the
    /// greatest key already ingested, for sources whose new keys sort after the old ones
    /// (dated or sequenced names); a new object under a smaller key is not seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing: Option<Listing>,
    /// Text encoding of CSV files: utf-8 (default), latin1, windows-1252, utf-16 (or
    /// utf-16le / utf-16be; a BOM decides), or any WHATWG label. A UTF-8 byte-order
    /// mark is always dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Source column → table column, for names that differ.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, String>,
    /// Values for table columns the source does not have (as text, cast to the column type).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub defaults: BTreeMap<String, String>,
    /// Match source columns to table columns ignoring case.
    #[serde(default)]
    pub case_insensitive: bool,
    /// Refuse source columns that map to no table column (default: ignore them).
    #[serde(default)]
    pub strict: bool,
    /// A file whose content changed under an already ingested path: `report` it (default)
    /// or `append` it again.
    #[serde(default)]
    pub on_change: OnChange,
    /// A row that does not fit: `fail` the apply (default, nothing committed) or `skip`
    /// it into the rejects file and report the count.
    #[serde(default)]
    pub on_error: OnError,
    /// Where rejected rows go (CSV); default `.lakectl/rejects/<table>/<source>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<String>,
    /// How a batch (the new files of one apply) changes the table: `append` (default),
    /// `upsert` (by `key`: a row whose key exists replaces it, others are appended),
    /// `replacePartitions` (the partitions in the batch get the batch's rows only) or
    /// `replace` (the batch is the table). Copy-on-write, one `overwrite` snapshot.
    #[serde(default, skip_serializing_if = "SourceMode::is_append")]
    pub mode: SourceMode,
    /// Columns that identify a row, for `upsert`; default: the table's
    /// `identifierFields`. A null key is refused at its row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// Change data capture (with `upsert`): a row whose `opColumn` is in `deleteWhen`
    /// deletes its key. The op column is not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdc: Option<CdcSpec>,
    /// Two rows of one batch with the same key: the `last` wins (default) or `error`.
    #[serde(default)]
    pub on_duplicate_key: OnDuplicateKey,
    /// The order new files are applied in, within a batch: `name` (default) or `mtime`
    /// (modification time, then name).
    #[serde(default)]
    pub order: FileOrder,
}

/// How a source's batch changes the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SourceMode {
    #[default]
    Append,
    Upsert,
    ReplacePartitions,
    Replace,
}

impl SourceMode {
    pub fn is_append(&self) -> bool {
        *self == SourceMode::Append
    }
    /// The mode a manifest or an upload's `?mode=` names.
    pub fn parse(name: &str) -> Option<SourceMode> {
        [
            SourceMode::Append,
            SourceMode::Upsert,
            SourceMode::ReplacePartitions,
            SourceMode::Replace,
        ]
        .into_iter()
        .find(|m| m.as_str() == name)
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            SourceMode::Append => "append",
            SourceMode::Upsert => "upsert",
            SourceMode::ReplacePartitions => "replacePartitions",
            SourceMode::Replace => "replace",
        }
    }
}

/// Change data capture options of a keyed source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CdcSpec {
    /// The source column holding the operation (not a column of the table).
    pub op_column: String,
    /// Op values that delete the row's key (compared as text, exactly).
    #[serde(default = "default_delete_when")]
    pub delete_when: Vec<String>,
}

fn default_delete_when() -> Vec<String> {
    vec!["D".into()]
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnDuplicateKey {
    #[default]
    Last,
    Error,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileOrder {
    #[default]
    Name,
    Mtime,
}

/// How a source is listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Listing {
    Full,
    Lexical,
}

/// Compression of a text source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    #[serde(alias = "gz")]
    Gzip,
    #[serde(alias = "zst")]
    Zstd,
    #[serde(alias = "bz2")]
    Bzip2,
}

impl Compression {
    /// From a file name's last extension.
    pub fn from_path(p: &std::path::Path) -> Compression {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("gz") | Some("gzip") => Compression::Gzip,
            Some("zst") | Some("zstd") => Compression::Zstd,
            Some("bz2") => Compression::Bzip2,
            _ => Compression::None,
        }
    }
}

impl SourceSpec {
    /// The declared text encoding (`encoding:`, or `csv.encoding`).
    pub fn text_encoding(&self) -> Option<&str> {
        self.encoding.as_deref().or(self.csv.encoding.as_deref())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceFormat {
    Csv,
    Json,
    Parquet,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    #[default]
    Report,
    Append,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Fail,
    Skip,
}

/// CSV reading options.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CsvOptions {
    /// The first line names the columns (default true). Without a header the columns are
    /// taken in table order.
    #[serde(default = "yes")]
    pub header: bool,
    /// One character (default `,`).
    #[serde(default = "comma")]
    pub delimiter: String,
    /// One character (default `"`).
    #[serde(default = "dquote")]
    pub quote: String,
    /// The text that means null (default: the empty field).
    #[serde(default)]
    pub null_string: String,
    /// chrono format for timestamp columns (default: RFC 3339 / ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_format: Option<String>,
    /// The source's `encoding`, given here instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: true,
            delimiter: ",".into(),
            quote: "\"".into(),
            null_string: String::new(),
            timestamp_format: None,
            encoding: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn comma() -> String {
    ",".into()
}
fn dquote() -> String {
    "\"".into()
}

/// Safety policy of a table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Allow destructive changes: dropping columns, removing partition fields, and
    /// mutations that change more than `maxMutationShare` of the rows.
    #[serde(default)]
    pub allow_destructive: bool,
    /// The largest share of the table's rows (0..1) a mutation may change without
    /// `allowDestructive` or its own `maxRowsChanged` (default 0.25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mutation_share: Option<f64>,
    /// What to do with changes made outside lakectl (a column Spark added, a property
    /// changed by hand, snapshots another writer committed): `report` them in the plan
    /// and leave them (default), `revert` them on apply (within the destructive-change
    /// rules), or `adopt` them (`lakectl import` writes them into this manifest).
    #[serde(default, skip_serializing_if = "OnDrift::is_report")]
    pub on_drift: OnDrift,
    /// Refuse every destructive change to this table whatever the other settings and
    /// flags say: dropping columns or partition fields, mutations over the share limit,
    /// reverting other writers' snapshots, and `lakectl rollback` (CLI and HTTP API).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protect: bool,
}

impl Policy {
    pub fn is_default(&self) -> bool {
        !self.allow_destructive
            && self.max_mutation_share.is_none()
            && self.on_drift == OnDrift::Report
            && !self.protect
    }
}

impl RetentionSpec {
    pub fn is_default(&self) -> bool {
        !self.tag_applies
            && self.tag_max_age_days.is_none()
            && self.keep_last.is_none()
            && self.max_snapshot_age_days.is_none()
    }
}

/// `spec.policy.onDrift`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnDrift {
    /// Plan shows the drift; apply leaves it.
    #[default]
    Report,
    /// Apply restores the declared state (destructive parts need `allowDestructive`).
    Revert,
    /// Plan shows the drift and `lakectl import` writes it into the manifest; apply leaves it.
    Adopt,
}

impl OnDrift {
    pub fn is_report(&self) -> bool {
        *self == OnDrift::Report
    }
}

/// One column (or a struct field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Iceberg type: boolean, int, long, float, double, decimal(P,S), date, time,
    /// timestamp, timestamptz, string, uuid, binary, fixed(N), struct, list, map,
    /// or the shorthands list<T> and map<K,V>.
    #[serde(rename = "type")]
    pub ty: TypeName,
    /// Values may not be null.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Column documentation, stored in the Iceberg schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// Fields of a `struct`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Column>,
    /// Element of a `list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<Box<FieldType>>,
    /// Key of a `map` (always required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Box<FieldType>>,
    /// Value of a `map`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Box<FieldType>>,
    /// The column's previous name: the column is renamed and keeps its field id and data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
}

impl Column {
    /// The type part of the column, as a list element or map value would carry it.
    pub fn type_view(&self) -> TypeView<'_> {
        TypeView {
            ty: &self.ty,
            required: self.required,
            doc: self.doc.as_deref(),
            fields: &self.fields,
            element: self.element.as_deref(),
            key: self.key.as_deref(),
            value: self.value.as_deref(),
        }
    }
}

impl FieldType {
    pub fn type_view(&self) -> TypeView<'_> {
        TypeView {
            ty: &self.ty,
            required: self.required,
            doc: self.doc.as_deref(),
            fields: &self.fields,
            element: self.element.as_deref(),
            key: self.key.as_deref(),
            value: self.value.as_deref(),
        }
    }
}

/// A borrowed type description shared by columns, list elements and map keys/values.
#[derive(Debug, Clone, Copy)]
pub struct TypeView<'a> {
    pub ty: &'a TypeName,
    pub required: bool,
    pub doc: Option<&'a str>,
    pub fields: &'a [Column],
    pub element: Option<&'a FieldType>,
    pub key: Option<&'a FieldType>,
    pub value: Option<&'a FieldType>,
}

/// A type with its nullability and doc: a column, a list element, a map key or value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FieldType {
    /// Iceberg type: boolean, int, long, float, double, decimal(P,S), date, time,
    /// timestamp, timestamptz, string, uuid, binary, fixed(N), struct, list, map,
    /// or the shorthands list<T> and map<K,V>.
    #[serde(rename = "type")]
    pub ty: TypeName,
    /// Values may not be null.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Column documentation, stored in the Iceberg schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// Fields of a `struct`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Column>,
    /// Element of a `list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub element: Option<Box<FieldType>>,
    /// Key of a `map` (always required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Box<FieldType>>,
    /// Value of a `map`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Box<FieldType>>,
}

/// A partition field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PartitionFieldSpec {
    /// Source column (dotted path for a struct field).
    pub column: String,
    /// identity, year, month, day, hour, bucket[N], truncate[W], void.
    #[serde(default = "identity")]
    pub transform: TransformName,
    /// Partition field name; defaults to Iceberg's convention (`ts_day`, `id_bucket`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

fn identity() -> TransformName {
    TransformName("identity".into())
}

/// A sort field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SortFieldSpec {
    /// Source column (dotted path for a struct field).
    pub column: String,
    /// Transform applied before sorting (default identity).
    #[serde(default = "identity")]
    pub transform: TransformName,
    #[serde(default)]
    pub direction: SortDirectionSpec,
    /// Where nulls go; defaults to first for ascending, last for descending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nulls: Option<NullsSpec>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SortDirectionSpec {
    #[default]
    Asc,
    Desc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NullsSpec {
    First,
    Last,
}

/// A type string, checked while the YAML is read so a bad one is reported at its line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TypeName(pub super::typestr::TypeExpr);

impl TryFrom<String> for TypeName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        super::typestr::parse(&s).map(TypeName)
    }
}

impl From<TypeName> for String {
    fn from(t: TypeName) -> String {
        t.0.to_string()
    }
}

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A partition or sort transform string, checked while the YAML is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TransformName(pub String);

impl TransformName {
    pub fn to_transform(&self) -> iceberg::spec::Transform {
        // Checked in try_from.
        self.0.parse().unwrap_or(iceberg::spec::Transform::Identity)
    }
}

impl TryFrom<String> for TransformName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let ok = matches!(
            t.as_str(),
            "identity" | "year" | "month" | "day" | "hour" | "void"
        ) || ["bucket[", "truncate["].iter().any(|p| {
            t.strip_prefix(p)
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n > 0)
        });
        if ok {
            Ok(TransformName(t))
        } else {
            Err(format!(
                "unknown transform `{s}`, expected identity, year, month, day, hour, void, bucket[N] or truncate[W]"
            ))
        }
    }
}

impl From<TransformName> for String {
    fn from(t: TransformName) -> String {
        t.0
    }
}

/// Where the lakehouse lives: catalog and warehouse. One per manifest directory;
/// without it lakectl uses the embedded default (`.lakectl/` beside the manifest directory:
/// a SQLite catalog and a local warehouse directory).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LakehouseManifest {
    pub api_version: ApiVersion,
    pub kind: LakehouseKind,
    pub metadata: LakehouseMetadataSpec,
    pub spec: LakehouseSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LakehouseMetadataSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LakehouseSpec {
    pub catalog: CatalogSpec,
    /// Warehouse root: a directory (relative to this file), `file://` or `s3://` URI.
    pub warehouse: String,
    /// Storage options passed to the object store (`s3.endpoint`, `s3.region`,
    /// `s3.access-key-id`, `s3.secret-access-key`, `s3.path-style-access`).
    /// Values may use `${env:VAR}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage: BTreeMap<String, String>,
    /// Protect every table of this lakehouse (as `spec.policy.protect` on each): for a
    /// production environment's Lakehouse document.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protect: bool,
    /// Maintenance defaults for every table; a table's own block overrides them field
    /// by field.
    #[serde(default, skip_serializing_if = "MaintenanceSpec::is_default")]
    pub maintenance: MaintenanceSpec,
    /// The default `publish` of every table (a table's own `spec.publish` wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishMode>,
    /// Publish every audited table of an apply in one catalog transaction (as
    /// `apply --atomic`): one failing check publishes nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub atomic_publish: bool,
    /// Where the data work of a change runs (an ingest batch, a mutation's rewrite, a
    /// compaction): `local` (the default, all cores of this machine) or `spark`.
    #[serde(default, skip_serializing_if = "EngineSpec::is_local")]
    pub engine: EngineSpec,
}

/// The data plane (`spec.engine` of the Lakehouse).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EngineSpec {
    #[serde(rename = "type", default)]
    pub kind: EngineType,
    /// Spark master URL: `spark://HOST:7077`, `local[4]`, `k8s://https://…`, `yarn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The `spark-submit` to run (default `$SPARK_HOME/bin/spark-submit`). May use
    /// `${env:VAR}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit: Option<String>,
    /// Spark configuration for the job (`--conf key=value`). Values may use `${env:VAR}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conf: BTreeMap<String, String>,
    /// Jars for the job (`--jars`): the iceberg-spark-runtime jar, and the catalog's
    /// driver (sqlite-jdbc for the SQL catalog). May use `${env:VAR}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jars: Vec<String>,
    /// Work smaller than this many bytes (the files a change reads) stays on the local
    /// engine: a Spark application costs tens of seconds before it reads a byte.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bytes: Option<u64>,
}

impl EngineSpec {
    pub fn is_local(&self) -> bool {
        *self == EngineSpec::default()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EngineType {
    /// The built-in worker pool: one task per core of this machine.
    #[default]
    Local,
    /// A Spark application lakectl generates and submits (Spark 3.5 + Iceberg 1.10).
    Spark,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CatalogSpec {
    #[serde(rename = "type")]
    pub kind: CatalogType,
    /// `sqlite:PATH` (relative to this file) for `sql`; the base URL for `rest`.
    /// May use `${env:VAR}`.
    pub uri: String,
    /// Catalog name (the `catalog_name` column of the SQL catalog).
    #[serde(default = "default_catalog_name")]
    pub name: String,
    /// Extra catalog properties (e.g. `token`, `credential` for REST). May use `${env:VAR}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

pub fn default_catalog_name() -> String {
    "lakectl".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CatalogType {
    /// SQL catalog in the JDBC / PyIceberg layout (SQLite).
    Sql,
    /// Iceberg REST catalog.
    Rest,
}

/// Any manifest document: the JSON Schema editors validate against.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // only ever built for the JSON Schema
pub enum AnyManifest {
    Table(TableManifest),
    Lakehouse(LakehouseManifest),
}

impl JsonSchema for TypeName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TypeName".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Iceberg type: boolean, int, long, float, double, decimal(P,S), date, time, timestamp, timestamptz, timestamp_ns, timestamptz_ns, string, uuid, binary, fixed(N), struct, list, map, list<T>, map<K,V>",
            "pattern": r"^\s*(?i:boolean|int|long|float|double|date|time|timestamp|timestamptz|timestamp_ns|timestamptz_ns|string|uuid|binary|struct|list|map|decimal\(\s*\d+\s*,\s*\d+\s*\)|fixed\(\s*\d+\s*\)|list\s*<.+>|map\s*<.+>)\s*$"
        })
    }
}

impl JsonSchema for TransformName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TransformName".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Partition or sort transform: identity, year, month, day, hour, void, bucket[N], truncate[W]",
            "pattern": r"^(identity|year|month|day|hour|void|bucket\[\d+\]|truncate\[\d+\])$"
        })
    }
}
