//! Apply: executes a [`Plan`], each [`Change`] as exactly one Iceberg commit.
//!
//! For a table change, in a retry loop ([`retry_on_conflict`]):
//! 1. load the table fresh from the catalog;
//! 2. replay the change's intentions on it ([`schema::apply_ops`], partition spec, sort
//!    order, properties by column name) — an intention that no longer fits fails the
//!    change with the reason, it is never forced;
//! 3. write a metadata-only snapshot annotated with the ledger keys (so history shows
//!    the change and its schema), and build the `TableUpdate`s with
//!    `TableMetadataBuilder`, which checks the result (spec and sort order bind to the
//!    new schema);
//! 4. commit with requirements pinning everything read in 1 (`main` snapshot, schema,
//!    spec, sort order, last column and partition ids, table uuid). Another writer in
//!    between makes the commit a conflict: back to 1, on its state, with backoff.
//!
//! A plan with errors is refused before anything is written. Changes run in plan
//! order (namespaces first); each is atomic, so an apply stopped by an error (or a
//! crash) leaves every table at its old or its new state.

pub mod expire;
pub mod ingest;
pub mod keyed;
pub mod maintain;
pub mod mutate;
pub mod publish;
pub mod rollback;
pub(crate) mod spark;

use std::collections::HashMap;
use std::path::Path;

use iceberg::spec::MAIN_BRANCH;
use iceberg::spec::{
    FormatVersion, NullOrder, SortDirection, SortField, SortOrder, TableMetadataBuilder, Transform,
    UnboundPartitionSpec,
};
use iceberg::{TableRequirement, TableUpdate};

use crate::lake::snapshot::{main_branch, metadata_only_snapshot};
use crate::lake::{retry_on_conflict, Annotation, CommitError, Lake, LakeError, TableState};
use crate::plan::drift::DESIRED;
use crate::plan::schema::{self, Node};
use crate::plan::{
    Change, FieldsChange, PartitionTarget, Plan, SortTarget, TableChange, MANAGED_PROPERTIES,
};

/// Why an apply stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the plan has {0} error(s); nothing was applied")]
    Refused(usize),
    #[error("{table}: {reason}")]
    NoLongerApplies { table: String, reason: String },
    #[error("{table}: {source}")]
    Commit {
        table: String,
        #[source]
        source: CommitError,
    },
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("{}", publish::failed_message(.0))]
    ChecksFailed(Vec<publish::TableChecks>),
    #[error("{table}: {change} on the spark engine: {message}; nothing was committed")]
    Engine {
        table: String,
        change: String,
        message: String,
    },
    #[error("{table}: source `{source}`: {error}; nothing was committed")]
    Ingest {
        table: String,
        source: String,
        #[source]
        error: crate::ingest::IngestError,
    },
}

impl From<iceberg::Error> for ApplyError {
    fn from(e: iceberg::Error) -> Self {
        ApplyError::Lake(LakeError::Iceberg(e))
    }
}

/// What one change did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Applied {
    pub change: String,
    pub target: String,
    pub snapshot_id: Option<i64>,
    pub metadata_location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest: Option<ingest::IngestOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mutation: Option<mutate::MutationOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction: Option<maintain::CompactOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiry: Option<expire::Expiry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orphans: Option<maintain::OrphansOutcome>,
    /// The branch the change committed to (not `main`: staged, or a preview).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The checks run before a publish (or on a preview branch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<publish::TableChecks>,
}

impl Applied {
    /// Another writer had applied this change first: nothing was committed for it.
    pub fn already_applied(&self) -> bool {
        self.ingest.as_ref().is_some_and(|i| i.already_applied)
            || self.mutation.as_ref().is_some_and(|m| m.already_applied)
            || self.compaction.as_ref().is_some_and(|c| c.already_applied)
    }
}

/// How many times a conflicting commit is retried on fresh state.
pub const MAX_ATTEMPTS: u32 = 12;

/// How an apply routes data changes ([`apply_with`]).
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// `apply --branch NAME`: every table's data changes go to branch NAME (made from
    /// `main` when missing), the checks run there, nothing is published.
    pub branch: Option<String>,
    /// `apply --atomic`: audited tables are published in one catalog transaction.
    pub atomic: bool,
}

/// Applies every change of `plan`; stops at the first failure. `on_applied` sees each
/// change as it lands (for progress output).
pub async fn apply(
    lake: &Lake,
    plan: &Plan,
    progress: std::sync::Arc<dyn crate::ingest::Progress>,
    on_applied: impl FnMut(&Applied) + Send,
) -> Result<Vec<Applied>, ApplyError> {
    apply_with(lake, plan, &ApplyOptions::default(), progress, on_applied).await
}

/// [`apply`] with options: data changes of audited tables (`publish: audited`), or of
/// every table with `--branch`, are staged on a branch ([`publish`]); structural and
/// maintenance changes always commit to `main` (they are table-wide in Iceberg).
pub async fn apply_with(
    lake: &Lake,
    plan: &Plan,
    options: &ApplyOptions,
    progress: std::sync::Arc<dyn crate::ingest::Progress>,
    mut on_applied: impl FnMut(&Applied) + Send,
) -> Result<Vec<Applied>, ApplyError> {
    if !plan.errors.is_empty() {
        return Err(ApplyError::Refused(plan.errors.len()));
    }
    let audit_branch = publish::audit_branch();
    let route = |table: &str| -> Option<String> {
        if let Some(b) = &options.branch {
            return Some(b.clone());
        }
        plan.audited(table).then(|| audit_branch.clone())
    };
    let atomic = options.atomic || plan.atomic;
    let stages = plan
        .changes
        .iter()
        .any(|c| c.is_data() && c.table().and_then(route).is_some());
    if atomic && stages && options.branch.is_none() {
        // Refused before anything is staged.
        lake.multi_table_commits()
            .map_err(publish::atomic_refused)?;
    }
    let mut staged: Vec<publish::Staged> = Vec::new();
    // A released (`--reapply`) change leaves the held-back list in the commit that
    // applies it (`Lake::commit`), so a failure keeps it held back.
    let mut done = Vec::new();
    for change in &plan.changes {
        if let (true, Some(table)) = (change.is_data(), change.table()) {
            if let Some(branch) = route(table) {
                let applied =
                    publish::run_data_change(lake, change, progress.clone(), &branch).await?;
                match staged.iter_mut().find(|s| s.table == table) {
                    Some(s) => s.changes.push(change.clone()),
                    None => staged.push(publish::Staged {
                        table: table.to_string(),
                        branch,
                        changes: vec![change.clone()],
                        verify: false,
                    }),
                }
                on_applied(&applied);
                done.push(applied);
                continue;
            }
        }
        let applied = match change {
            Change::CreateNamespace { namespace } => {
                let ns = iceberg::NamespaceIdent::from_strs(namespace.split('.'))
                    .map_err(LakeError::Iceberg)?;
                lake.create_namespace(&ns).await?;
                Applied {
                    change: "create-namespace".into(),
                    target: namespace.clone(),
                    snapshot_id: None,
                    ..Default::default()
                }
            }
            Change::Table(t) => {
                let state = apply_table(lake, t).await?;
                Applied {
                    change: if t.create {
                        "create-table"
                    } else {
                        "update-table"
                    }
                    .into(),
                    target: t.table.clone(),
                    snapshot_id: state.metadata.current_snapshot_id(),
                    metadata_location: Some(state.metadata_location),
                    ..Default::default()
                }
            }
            Change::Ingest(_) => {
                publish::run_data_change(lake, change, progress.clone(), MAIN_BRANCH).await?
            }
            Change::Revert(r) => {
                let done = rollback::rollback(
                    lake,
                    &r.ident(),
                    rollback::Target::Snapshot(r.to_snapshot),
                    false,
                )
                .await?;
                Applied {
                    change: "revert".into(),
                    target: r.table.clone(),
                    snapshot_id: Some(done.to_snapshot),
                    ..Default::default()
                }
            }
            Change::Mutation(_) => {
                publish::run_data_change(lake, change, progress.clone(), MAIN_BRANCH).await?
            }
            Change::Compact(c) => {
                let (outcome, state) = maintain::apply_compaction(lake, c).await?;
                Applied {
                    change: "compact".into(),
                    target: c.table.clone(),
                    snapshot_id: outcome.snapshot_id,
                    metadata_location: Some(state.metadata_location),
                    compaction: Some(outcome),
                    ..Default::default()
                }
            }
            Change::Expire(e) => {
                let done = expire::expire(lake, &e.ident(), e.retention, false).await?;
                Applied {
                    change: "expire".into(),
                    target: e.table.clone(),
                    snapshot_id: None,
                    expiry: Some(done),
                    ..Default::default()
                }
            }
            Change::MergeManifests(m) => {
                let state = maintain::merge_manifests(lake, m).await?;
                Applied {
                    change: "merge-manifests".into(),
                    target: m.table.clone(),
                    snapshot_id: state.metadata.current_snapshot_id(),
                    metadata_location: Some(state.metadata_location),
                    ..Default::default()
                }
            }
            Change::RemoveOrphans(o) => {
                let outcome = maintain::remove_orphans(lake, o).await?;
                Applied {
                    change: "remove-orphans".into(),
                    target: o.table.clone(),
                    snapshot_id: None,
                    orphans: Some(outcome),
                    ..Default::default()
                }
            }
        };
        on_applied(&applied);
        done.push(applied);
    }
    if let Some(branch) = &options.branch {
        // A preview: the checks of every table with them, on the branch; no publish.
        let checks = publish::check_all(lake, &plan.audit, branch, None).await?;
        let mut failed = Vec::new();
        for c in checks {
            let blocks = c.blocks();
            let a = publish::checked(c.clone());
            on_applied(&a);
            done.push(a);
            if blocks {
                failed.push(c);
            }
        }
        if !failed.is_empty() {
            return Err(ApplyError::ChecksFailed(failed));
        }
    } else if !staged.is_empty() {
        done.extend(
            publish::publish(
                lake,
                plan,
                &staged,
                atomic,
                true,
                progress.clone(),
                &mut on_applied,
            )
            .await?,
        );
    }
    // What is still held back of the released changes had nothing left to commit
    // (a preview leaves them held back: `main` did not get them).
    if options.branch.is_none() {
        for (table, id) in &plan.release {
            release_held(lake, table, id).await?;
        }
    }
    Ok(done)
}

/// Creates or updates one table as one commit, retrying conflicts on fresh state.
pub async fn apply_table(lake: &Lake, t: &TableChange) -> Result<TableState, ApplyError> {
    let ident = t.ident();
    let annotation = annotation_for(t);
    let result = retry_on_conflict(MAX_ATTEMPTS, |attempt| {
        let ident = ident.clone();
        let annotation = annotation.clone();
        async move {
            match (t.create, lake.load_table(&ident).await?) {
                (true, None) => create(lake, t, &annotation).await,
                (true, Some(_)) => Err(CommitError::Failed(LakeError::Unsupported(format!(
                    "{} was created by another writer after the plan; run plan again",
                    t.table
                )))),
                (false, None) => Err(CommitError::Failed(LakeError::NoSuchTable(t.table.clone()))),
                (false, Some(state)) => {
                    let (requirements, updates) = materialize(lake, t, &state, &annotation).await?;
                    if attempt == 0 {
                        fault_delay().await;
                    }
                    lake.commit(&ident, &requirements, updates).await
                }
            }
        }
    })
    .await;
    result.map_err(|e| commit_failure(&t.table, e))
}

/// A commit-path error as `table`'s apply error: a change that no longer applies (with
/// its reason), or a failed commit.
pub(crate) fn commit_failure(table: &str, e: CommitError) -> ApplyError {
    match e {
        CommitError::Failed(LakeError::Unsupported(reason)) => ApplyError::NoLongerApplies {
            table: table.to_string(),
            reason,
        },
        source => ApplyError::Commit {
            table: table.to_string(),
            source,
        },
    }
}

/// Commits `snapshot` as the new head of branch `branch` (`main`, or an audit or
/// preview branch), requiring the table to be as `md` (the branch's view of the table,
/// [`crate::lake::on_branch`]: its head, schema, spec and sort order): the one shape
/// every data change commits in. The branch must still be at `md`'s head (or still
/// missing: this commit creates it). The first attempt takes the test hook's delay
/// before the commit.
pub(crate) async fn commit_on(
    lake: &crate::lake::Lake,
    ident: &iceberg::TableIdent,
    md: &iceberg::spec::TableMetadata,
    snapshot: iceberg::spec::Snapshot,
    attempt: u32,
    branch: &str,
) -> Result<crate::lake::TableState, CommitError> {
    commit_on_with(lake, ident, md, snapshot, attempt, branch, Vec::new()).await
}

/// [`commit_on`] with `extra` updates in the same commit (an engine job's scratch
/// branch dropped).
pub(crate) async fn commit_on_with(
    lake: &crate::lake::Lake,
    ident: &iceberg::TableIdent,
    md: &iceberg::spec::TableMetadata,
    snapshot: iceberg::spec::Snapshot,
    attempt: u32,
    branch: &str,
    extra: Vec<TableUpdate>,
) -> Result<crate::lake::TableState, CommitError> {
    let (branch, reference) = crate::lake::snapshot::branch_at(branch, snapshot.snapshot_id());
    let requirements = crate::lake::pin_on(md, &branch);
    let mut updates = vec![
        TableUpdate::AddSnapshot { snapshot },
        TableUpdate::SetSnapshotRef {
            ref_name: branch.clone(),
            reference,
        },
    ];
    // A new branch: `md` is `main`'s view, so its head is where the branch starts.
    if branch != MAIN_BRANCH && md.snapshot_for_ref(&branch).is_none() {
        updates.push(crate::lake::set_branch_base(
            &branch,
            md.current_snapshot_id(),
        ));
    }
    updates.extend(extra);
    if attempt == 0 {
        fault_delay().await;
    }
    lake.commit(ident, &requirements, updates).await
}

/// The error of a change whose commit kept conflicting for [`MAX_ATTEMPTS`] attempts.
pub(crate) fn gave_up(table: &str) -> ApplyError {
    ApplyError::Commit {
        table: table.to_string(),
        source: CommitError::Conflict(format!("gave up after {MAX_ATTEMPTS} attempts")),
    }
}

/// Waits before the next attempt after a commit conflict (50 ms, doubling).
pub(crate) async fn conflict_backoff(attempt: u32, what: &str, why: &str) {
    tracing::info!(
        "{what}: commit conflict (attempt {}): {why}; again on fresh state",
        attempt + 1
    );
    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt.min(6))).await;
}

/// Fault injection for tests: `LAKECTL_TEST_DELAY_BEFORE_COMMIT_MS` holds the first
/// commit attempt of each table change after its updates are built, so a test can make
/// two processes plan on the same state and race their commits.
pub(crate) async fn fault_delay() {
    if let Some(ms) = std::env::var("LAKECTL_TEST_DELAY_BEFORE_COMMIT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

fn no_longer(t: &TableChange, reason: impl std::fmt::Display) -> CommitError {
    CommitError::Failed(LakeError::Unsupported(format!(
        "the planned change no longer applies to {}: {reason}",
        t.table
    )))
}

/// The annotation every snapshot of this change carries.
pub fn annotation_for(t: &TableChange) -> Annotation {
    let details = if t.create {
        format!("{} column(s)", t.schema_ops.len())
    } else {
        t.items().join("; ")
    };
    Annotation {
        change: if t.create {
            "create-table"
        } else {
            "update-table"
        }
        .into(),
        change_id: t.change_id.clone(),
        manifest: Some(t.manifest.display().to_string()),
        git_commit: git_commit(&t.manifest),
        details,
    }
}

/// `HEAD` of the git work tree holding `file` (with `-dirty` when the file has
/// uncommitted edits), or `None` outside git.
pub fn git_commit(file: &Path) -> Option<String> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut head = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let dirty = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["status", "--porcelain", "--"])
        .arg(file.file_name()?)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    if dirty {
        head.push_str("-dirty");
    }
    Some(head)
}

fn unbound_spec(
    targets: &[PartitionTarget],
    nodes: &[Node],
) -> Result<UnboundPartitionSpec, String> {
    let paths = schema::paths_by_name(nodes);
    let mut b = UnboundPartitionSpec::builder();
    for p in targets {
        let id = *paths
            .get(&p.column)
            .ok_or_else(|| format!("partition column `{}` does not exist", p.column))?;
        let transform: Transform = p
            .transform
            .parse()
            .map_err(|e: iceberg::Error| e.message().to_string())?;
        b = b
            .add_partition_field(id, &p.name, transform)
            .map_err(|e| e.message().to_string())?;
    }
    Ok(b.build())
}

fn sort_order(targets: &[SortTarget], nodes: &[Node]) -> Result<SortOrder, String> {
    if targets.is_empty() {
        return Ok(SortOrder::unsorted_order());
    }
    let paths = schema::paths_by_name(nodes);
    let mut fields = Vec::new();
    for s in targets {
        let id = *paths
            .get(&s.column)
            .ok_or_else(|| format!("sort column `{}` does not exist", s.column))?;
        fields.push(
            SortField::builder()
                .source_id(id)
                .transform(
                    s.transform
                        .parse()
                        .map_err(|e: iceberg::Error| e.message().to_string())?,
                )
                .direction(if s.direction == "desc" {
                    SortDirection::Descending
                } else {
                    SortDirection::Ascending
                })
                .null_order(if s.nulls == "last" {
                    NullOrder::Last
                } else {
                    NullOrder::First
                })
                .build(),
        );
    }
    Ok(SortOrder {
        order_id: 1,
        fields,
    })
}

fn target_spec(change: &Option<FieldsChange<PartitionTarget>>) -> Option<&[PartitionTarget]> {
    change.as_ref().map(|c| c.to.as_slice())
}

async fn create(
    lake: &Lake,
    t: &TableChange,
    annotation: &Annotation,
) -> Result<TableState, CommitError> {
    let (nodes, _) =
        schema::apply_ops(Vec::new(), &t.schema_ops, 0).map_err(|e| no_longer(t, e))?;
    let ident_fields = t.identifier_fields.clone().unwrap_or_default();
    let schema = schema::schema_of(&nodes, &ident_fields).map_err(|e| no_longer(t, e))?;
    let spec = unbound_spec(target_spec(&t.partition_spec).unwrap_or(&[]), &nodes)
        .map_err(|e| no_longer(t, e))?;
    let sort = sort_order(
        t.sort_order
            .as_ref()
            .map(|c| c.to.as_slice())
            .unwrap_or(&[]),
        &nodes,
    )
    .map_err(|e| no_longer(t, e))?;
    let mut props: HashMap<String, String> = t.set_properties.clone().into_iter().collect();
    props.insert(MANAGED_PROPERTIES.into(), t.managed_properties.join(","));
    props.insert(DESIRED.into(), t.baseline.clone());
    let location = t
        .location
        .clone()
        .unwrap_or_else(|| lake.default_location(&t.ident()));
    let metadata =
        TableMetadataBuilder::new(schema, spec, sort, location, FormatVersion::V2, props)?
            .build()?
            .metadata;
    let snapshot = metadata_only_snapshot(lake.file_io(), &metadata, annotation).await?;
    let (branch, reference) = main_branch(snapshot.snapshot_id());
    let metadata = metadata
        .into_builder(None)
        .add_snapshot(snapshot)?
        .set_ref(&branch, reference)?
        .build()?
        .metadata;
    lake.create_table(&t.ident(), metadata).await
}

/// Replays the change on `state` and returns the commit's requirements and updates.
async fn materialize(
    lake: &Lake,
    t: &TableChange,
    state: &TableState,
    annotation: &Annotation,
) -> Result<(Vec<TableRequirement>, Vec<TableUpdate>), CommitError> {
    let md = &state.metadata;
    let before = schema::nodes_of(md.current_schema());
    let (after, _) = schema::apply_ops(before.clone(), &t.schema_ops, md.last_column_id())
        .map_err(|e| no_longer(t, e))?;
    let mut builder = md
        .clone()
        .into_builder(Some(state.metadata_location.clone()));
    let ident_fields = match &t.identifier_fields {
        Some(f) => f.clone(),
        None => crate::plan::identifier_names(&after, md.current_schema().identifier_field_ids()),
    };
    if !t.schema_ops.is_empty() || t.identifier_fields.is_some() {
        let schema = schema::schema_of(&after, &ident_fields).map_err(|e| no_longer(t, e))?;
        builder = builder.add_current_schema(schema)?;
    }
    if let Some(targets) = target_spec(&t.partition_spec) {
        let spec = unbound_spec(targets, &after).map_err(|e| no_longer(t, e))?;
        builder = builder
            .add_partition_spec(spec)?
            .set_default_partition_spec(TableMetadataBuilder::LAST_ADDED)?;
    }
    if let Some(s) = &t.sort_order {
        let order = sort_order(&s.to, &after).map_err(|e| no_longer(t, e))?;
        builder = builder
            .add_sort_order(order)?
            .set_default_sort_order(TableMetadataBuilder::LAST_ADDED as i64)?;
    }
    let mut set = t.set_properties.clone();
    let managed = t.managed_properties.join(",");
    if md.properties().get(MANAGED_PROPERTIES) != Some(&managed) {
        set.insert(MANAGED_PROPERTIES.into(), managed);
    }
    if md.properties().get(DESIRED) != Some(&t.baseline) {
        set.insert(DESIRED.into(), t.baseline.clone());
    }
    if !set.is_empty() {
        builder = builder.set_properties(set.into_iter().collect())?;
    }
    let removals: Vec<String> = t
        .remove_properties
        .iter()
        .filter(|k| md.properties().contains_key(*k))
        .cloned()
        .collect();
    if !removals.is_empty() {
        builder = builder.remove_properties(&removals)?;
    }
    // The snapshot records the schema this change leaves current.
    let staged = builder.clone().build()?.metadata;
    let snapshot = metadata_only_snapshot(lake.file_io(), &staged, annotation).await?;
    let (branch, reference) = main_branch(snapshot.snapshot_id());
    let updates = builder
        .add_snapshot(snapshot)?
        .set_ref(&branch, reference)?
        .build()?
        .changes;
    let requirements = crate::lake::pin_state(md);
    Ok((requirements, updates))
}

/// Takes `id` off the table's held-back list (`apply --reapply ID`), in its own commit
/// (a property change, no snapshot), so the plan's change applies it again.
pub async fn release_held(lake: &Lake, table: &str, id: &str) -> Result<(), ApplyError> {
    let ident = crate::plan::ident_of(table);
    retry_on_conflict(MAX_ATTEMPTS, |_| {
        let ident = ident.clone();
        async move {
            let state = lake.load_existing(&ident).await?;
            let mut held = crate::lake::ledger::held_back(&state.metadata);
            let before = held.len();
            held.retain(|h| h.change_id != id);
            if held.len() == before {
                return Ok(());
            }
            let update = TableUpdate::SetProperties {
                updates: HashMap::from([(
                    crate::lake::ledger::HELD_BACK.to_string(),
                    serde_json::to_string(&held).unwrap_or_default(),
                )]),
            };
            lake.commit(
                &ident,
                &crate::lake::pin_state(&state.metadata),
                vec![update],
            )
            .await
            .map(|_| ())
        }
    })
    .await
    .map_err(|source| ApplyError::Commit {
        table: table.to_string(),
        source,
    })
}
