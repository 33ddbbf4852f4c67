//! Write-audit-publish: data changes staged on a branch, checked there, and published
//! by fast-forwarding `main`.
//!
//! An audited table's data changes (ingests, upserts, mutations) commit to a branch
//! (`lakectl/audit/<apply id>`, or the `--branch` of a preview) made from `main` by
//! their first commit ([`crate::lake::on_branch`]). Then, per table:
//! 1. load the table; if `main` is no longer an ancestor of the branch head (another
//!    writer moved it), reset the branch to `main` and replay the changes on it (each
//!    change reads the ledger of the branch, so what `main` got meanwhile is not done
//!    twice), and start again;
//! 2. run the checks on the branch head (`rowCount` compares with `main`);
//! 3. an `error` check that fails: stop, `main` untouched, the branch kept;
//! 4. otherwise one commit sets `main` to the branch head (and drops an audit branch),
//!    requiring `main` and the branch to be as read in 1; a conflict is step 1 again.
//!
//! With `atomic`, every table is taken through 1–3 first and step 4 is one catalog
//! transaction over all of them ([`Lake::commit_all`]): one failing check publishes
//! nothing.
//!
//! A crash between the branch commits and the publish leaves `main` as it was; the
//! next apply plans the changes again and stages them on a new branch, so `main` gets
//! each change once.

use std::collections::BTreeMap;
use std::sync::Arc;

use iceberg::spec::MAIN_BRANCH;
use iceberg::{TableRequirement, TableUpdate};

use super::{Applied, ApplyError, MAX_ATTEMPTS};
use crate::lake::snapshot::{branch_at, main_branch};
use crate::lake::{
    branch_base, is_ancestor, ledger, set_branch_base, CommitError, Lake, TableState, BRANCH_BASE,
};
use crate::plan::{Change, Plan, TableAudit};
use crate::query::checks::{run_checks, CheckResult};

pub use crate::lake::AUDIT_PREFIX;

/// A new audit branch name: UTC time and a random suffix.
pub fn audit_branch() -> String {
    format!(
        "{AUDIT_PREFIX}{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A table's data changes staged on `branch`.
#[derive(Debug, Clone)]
pub struct Staged {
    pub table: String,
    pub branch: String,
    pub changes: Vec<Change>,
    /// Every change on the branch must be one of `changes` (`lakectl publish` of a
    /// branch staged earlier: a change the manifests no longer declare is refused).
    pub verify: bool,
}

/// One table's checks, and where they ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableChecks {
    pub table: String,
    /// The branch checked (`main` for `lakectl check`).
    pub branch: String,
    pub snapshot_id: Option<i64>,
    pub results: Vec<CheckResult>,
}

impl TableChecks {
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.iter().filter(|r| r.blocks())
    }

    /// An `error` check failed: the table is not published.
    pub fn blocks(&self) -> bool {
        self.failures().next().is_some()
    }
}

/// The message of [`ApplyError::ChecksFailed`].
pub fn failed_message(failed: &[TableChecks]) -> String {
    let parts: Vec<String> = failed
        .iter()
        .map(|t| {
            let names: Vec<String> = t
                .failures()
                .map(|r| format!("`{}` ({})", r.name, r.message))
                .collect();
            format!("{}: {} on branch {}", t.table, names.join(", "), t.branch)
        })
        .collect();
    format!(
        "checks failed, nothing was published (main is as it was; the staged data stays on its branch): {}",
        parts.join("; ")
    )
}

fn audit_of<'a>(plan: &'a Plan, table: &str) -> std::borrow::Cow<'a, TableAudit> {
    match plan.audit.get(table) {
        Some(a) => std::borrow::Cow::Borrowed(a),
        None => std::borrow::Cow::Owned(TableAudit::default()),
    }
}

/// Runs a table's checks on snapshot `at` (`rowCount` compares with `before`).
pub async fn check_table(
    lake: &Lake,
    state: &TableState,
    audit: &TableAudit,
    branch: &str,
    at: Option<i64>,
    before: Option<i64>,
) -> Result<TableChecks, ApplyError> {
    let results = run_checks(
        lake,
        state,
        at,
        before,
        &audit.checks,
        &audit.identifier_fields,
    )
    .await
    .map_err(|e| ApplyError::NoLongerApplies {
        table: state.ident.to_string(),
        reason: format!("running the checks: {e}"),
    })?;
    Ok(TableChecks {
        table: state.ident.to_string(),
        branch: branch.to_string(),
        snapshot_id: at,
        results,
    })
}

/// Runs `change` (a data change) on `branch`.
pub async fn run_data_change(
    lake: &Lake,
    change: &Change,
    progress: Arc<dyn crate::ingest::Progress>,
    branch: &str,
) -> Result<Applied, ApplyError> {
    Ok(match change {
        Change::Ingest(c) => {
            let (outcome, state) = super::ingest::apply_ingest(lake, c, progress, branch).await?;
            Applied {
                change: "ingest".into(),
                target: format!("{} ← {}", c.table, c.source),
                snapshot_id: outcome.snapshot_id,
                metadata_location: state.map(|s| s.metadata_location),
                ingest: Some(outcome),
                branch: on(branch),
                ..Default::default()
            }
        }
        Change::Mutation(m) => {
            let (outcome, state) = super::mutate::apply_mutation(lake, m, branch).await?;
            Applied {
                change: "mutation".into(),
                target: format!("{} `{}`", m.table, m.name),
                snapshot_id: outcome.snapshot_id,
                metadata_location: Some(state.metadata_location),
                mutation: Some(outcome),
                branch: on(branch),
                ..Default::default()
            }
        }
        other => {
            return Err(ApplyError::NoLongerApplies {
                table: other.table().unwrap_or_default().to_string(),
                reason: "only data changes are staged on a branch".into(),
            })
        }
    })
}

fn on(branch: &str) -> Option<String> {
    (branch != MAIN_BRANCH).then(|| branch.to_string())
}

/// The head of ref `name` of `state`'s table.
fn head_of(state: &TableState, name: &str) -> Option<i64> {
    state
        .metadata
        .snapshot_for_ref(name)
        .map(|s| s.snapshot_id())
}

/// Where one staged table stands on this attempt.
enum Ready {
    /// Nothing on the branch that `main` lacks (every change was applied already).
    Nothing(TableState),
    /// Checked; `main` can be fast-forwarded from `main` to `head`.
    Checked {
        state: TableState,
        main: Option<i64>,
        head: i64,
        checks: TableChecks,
    },
}

/// Step 1 and 2 for one table: replays on a moved `main` until the branch is ahead
/// of it, then checks.
async fn ready(
    lake: &Lake,
    plan: &Plan,
    st: &Staged,
    progress: Arc<dyn crate::ingest::Progress>,
    on_applied: &mut (dyn FnMut(&Applied) + Send),
) -> Result<Ready, ApplyError> {
    let ident = crate::plan::ident_of(&st.table);
    for _ in 0..MAX_ATTEMPTS {
        let state = lake.load_existing(&ident).await?;
        let main = state.metadata.current_snapshot_id();
        let Some(head) = head_of(&state, &st.branch) else {
            return Ok(Ready::Nothing(state));
        };
        if head == main.unwrap_or(i64::MIN) {
            return Ok(Ready::Nothing(state));
        }
        // `main` must still be where the branch was made from (an ancestor is not
        // enough: a rollback of `main` would be undone by the fast-forward).
        let fast_forward = match branch_base(&state.metadata, &st.branch) {
            Some(base) => base == main,
            None if is_ancestor(&state.metadata, main, head) => true,
            None => {
                return Err(ApplyError::NoLongerApplies {
                    table: st.table.clone(),
                    reason: format!(
                        "branch `{}` was not made by lakectl and main is not in its history: it cannot be replayed on main",
                        st.branch
                    ),
                })
            }
        };
        if fast_forward && st.verify {
            undeclared(&state, st, main).map_err(|reason| ApplyError::NoLongerApplies {
                table: st.table.clone(),
                reason,
            })?;
        }
        if !fast_forward {
            tracing::info!(
                "{}: main moved since {} was made; replaying its changes on main",
                st.table,
                st.branch
            );
            reset_branch(lake, &state, &st.branch, head, main).await?;
            for c in &st.changes {
                let mut a = run_data_change(lake, c, progress.clone(), &st.branch).await?;
                a.change = format!("{} (replayed)", a.change);
                on_applied(&a);
            }
            continue;
        }
        let checks = check_table(
            lake,
            &state,
            &audit_of(plan, &st.table),
            &st.branch,
            Some(head),
            main,
        )
        .await?;
        return Ok(Ready::Checked {
            state,
            main,
            head,
            checks,
        });
    }
    Err(ApplyError::Commit {
        table: st.table.clone(),
        source: CommitError::Conflict(format!(
            "main kept moving: gave up replaying after {MAX_ATTEMPTS} attempts"
        )),
    })
}

/// Refuses a branch holding a change (since its base) that is not one of the staged
/// changes: the manifests no longer declare it.
fn undeclared(state: &TableState, st: &Staged, base: Option<i64>) -> Result<(), String> {
    let declared: Vec<&str> = st
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Ingest(i) => Some(i.change_id.as_str()),
            Change::Mutation(m) => Some(m.change_id.as_str()),
            _ => None,
        })
        .collect();
    let mut next = head_of(state, &st.branch);
    while let Some(id) = next.filter(|id| Some(*id) != base) {
        let Some(s) = state.metadata.snapshot_by_id(id) else {
            break;
        };
        if let Some(change) = s.summary().additional_properties.get(ledger::CHANGE_ID) {
            if !declared.contains(&change.as_str()) {
                return Err(format!(
                    "branch `{}` holds change `{change}` (snapshot {id}), which the manifests do not declare as pending: stage the branch again (`lakectl apply --branch` on a new branch)",
                    st.branch
                ));
            }
        }
        next = s.parent_snapshot_id();
    }
    Ok(())
}

/// Moves `branch` from `head` to `main` (or removes it when `main` is `None`: no
/// snapshot yet), so the changes can be replayed on fresh `main`. A branch another
/// writer moved meanwhile is left as it is.
async fn reset_branch(
    lake: &Lake,
    state: &TableState,
    branch: &str,
    head: i64,
    main: Option<i64>,
) -> Result<(), ApplyError> {
    let updates = match main {
        Some(id) => {
            let (name, reference) = branch_at(branch, id);
            vec![
                TableUpdate::SetSnapshotRef {
                    ref_name: name,
                    reference,
                },
                set_branch_base(branch, Some(id)),
            ]
        }
        None => remove_branch(state, branch),
    };
    let requirements = vec![
        TableRequirement::UuidMatch {
            uuid: state.metadata.uuid(),
        },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: branch.to_string(),
            snapshot_id: Some(head),
        },
    ];
    match lake.commit(&state.ident, &requirements, updates).await {
        // Another writer moved the branch: the next round reads it again.
        Ok(_) | Err(CommitError::Conflict(_)) => Ok(()),
        Err(e) => Err(super::commit_failure(&state.ident.to_string(), e)),
    }
}

/// The publish commit of one table: `main` from `main` to `head`, an audit branch
/// dropped with it.
fn publish_commit(
    state: &TableState,
    branch: &str,
    main: Option<i64>,
    head: i64,
    drop_branch: bool,
) -> (Vec<TableRequirement>, Vec<TableUpdate>) {
    let (name, reference) = main_branch(head);
    let mut updates = vec![TableUpdate::SetSnapshotRef {
        ref_name: name,
        reference,
    }];
    if drop_branch {
        updates.extend(remove_branch(state, branch));
    }
    let requirements = vec![
        TableRequirement::UuidMatch {
            uuid: state.metadata.uuid(),
        },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: MAIN_BRANCH.to_string(),
            snapshot_id: main,
        },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: branch.to_string(),
            snapshot_id: Some(head),
        },
    ];
    (requirements, updates)
}

/// The updates removing `branch` and its recorded base.
fn remove_branch(state: &TableState, branch: &str) -> Vec<TableUpdate> {
    let mut updates = vec![TableUpdate::RemoveSnapshotRef {
        ref_name: branch.to_string(),
    }];
    let key = format!("{BRANCH_BASE}{branch}");
    if state.metadata.properties().contains_key(&key) {
        updates.push(TableUpdate::RemoveProperties {
            removals: vec![key],
        });
    }
    updates
}

fn published(table: &str, branch: &str, head: i64, checks: TableChecks) -> Applied {
    Applied {
        change: "publish".into(),
        target: table.to_string(),
        snapshot_id: Some(head),
        branch: Some(branch.to_string()),
        checks: Some(checks),
        ..Default::default()
    }
}

/// A check's entry in an apply's output.
pub(crate) fn checked(checks: TableChecks) -> Applied {
    Applied {
        change: "check".into(),
        target: checks.table.clone(),
        snapshot_id: checks.snapshot_id,
        branch: Some(checks.branch.clone()),
        checks: Some(checks),
        ..Default::default()
    }
}

/// Checks and publishes the staged tables: one at a time, or with `atomic` all in
/// one catalog transaction. `drop_branch`: the branches are removed as `main` takes
/// them (audit branches; `publish --delete-branch`).
pub async fn publish(
    lake: &Lake,
    plan: &Plan,
    staged: &[Staged],
    atomic: bool,
    drop_branch: bool,
    progress: Arc<dyn crate::ingest::Progress>,
    on_applied: &mut (dyn FnMut(&Applied) + Send),
) -> Result<Vec<Applied>, ApplyError> {
    // Test hook: a crash between the branch commits and the publish.
    if let Some(ms) = std::env::var("LAKECTL_TEST_DELAY_BEFORE_PUBLISH_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    if atomic {
        lake.multi_table_commits().map_err(atomic_refused)?;
        return publish_atomic(lake, plan, staged, drop_branch, progress, on_applied).await;
    }
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for st in staged {
        let mut landed = false;
        for attempt in 0..MAX_ATTEMPTS {
            match ready(lake, plan, st, progress.clone(), on_applied).await? {
                Ready::Nothing(state) => {
                    if drop_branch {
                        drop_ref(lake, &state, &st.branch).await?;
                    }
                    landed = true;
                    break;
                }
                Ready::Checked {
                    state,
                    main,
                    head,
                    checks,
                } => {
                    if checks.blocks() {
                        on_applied(&checked(checks.clone()));
                        failed.push(checks);
                        landed = true;
                        break;
                    }
                    let (req, upd) = publish_commit(&state, &st.branch, main, head, drop_branch);
                    match lake.commit(&state.ident, &req, upd).await {
                        Ok(_) => {
                            let a = published(&st.table, &st.branch, head, checks);
                            on_applied(&a);
                            done.push(a);
                            landed = true;
                            break;
                        }
                        Err(CommitError::Conflict(why)) => {
                            super::conflict_backoff(attempt, &st.table, &why).await;
                        }
                        Err(e) => return Err(super::commit_failure(&st.table, e)),
                    }
                }
            }
        }
        if !landed {
            return Err(ApplyError::Commit {
                table: st.table.clone(),
                source: CommitError::Conflict(format!(
                    "publish gave up after {MAX_ATTEMPTS} attempts"
                )),
            });
        }
    }
    if !failed.is_empty() {
        return Err(ApplyError::ChecksFailed(failed));
    }
    Ok(done)
}

/// The refusal of an atomic publish on a catalog that cannot commit to several tables
/// at once (`Lake::multi_table_commits`'s reason).
pub(crate) fn atomic_refused(reason: String) -> ApplyError {
    ApplyError::NoLongerApplies {
        table: "atomic publish".into(),
        reason: format!("an atomic publish is not possible: {reason}"),
    }
}

async fn publish_atomic(
    lake: &Lake,
    plan: &Plan,
    staged: &[Staged],
    drop_branch: bool,
    progress: Arc<dyn crate::ingest::Progress>,
    on_applied: &mut (dyn FnMut(&Applied) + Send),
) -> Result<Vec<Applied>, ApplyError> {
    for attempt in 0..MAX_ATTEMPTS {
        let mut commits = Vec::new();
        let mut outcomes = Vec::new();
        let mut failed = Vec::new();
        let mut nothing = Vec::new();
        for st in staged {
            match ready(lake, plan, st, progress.clone(), on_applied).await? {
                Ready::Nothing(state) => nothing.push((state, st)),
                Ready::Checked {
                    state,
                    main,
                    head,
                    checks,
                } => {
                    if checks.blocks() {
                        failed.push(checks);
                        continue;
                    }
                    let (req, upd) = publish_commit(&state, &st.branch, main, head, drop_branch);
                    commits.push((state.ident.clone(), req, upd));
                    outcomes.push(published(&st.table, &st.branch, head, checks));
                }
            }
        }
        if !failed.is_empty() {
            for f in &failed {
                on_applied(&checked(f.clone()));
            }
            return Err(ApplyError::ChecksFailed(failed));
        }
        if commits.is_empty() {
            if drop_branch {
                for (state, st) in &nothing {
                    drop_ref(lake, state, &st.branch).await?;
                }
            }
            return Ok(Vec::new());
        }
        match lake.commit_all(commits).await {
            Ok(()) => {
                for a in &outcomes {
                    on_applied(a);
                }
                if drop_branch {
                    for (state, st) in &nothing {
                        drop_ref(lake, state, &st.branch).await?;
                    }
                }
                return Ok(outcomes);
            }
            Err(CommitError::Conflict(why)) => {
                super::conflict_backoff(attempt, "atomic publish", &why).await;
            }
            Err(e) => return Err(super::commit_failure("atomic publish", e)),
        }
    }
    Err(ApplyError::Commit {
        table: "atomic publish".into(),
        source: CommitError::Conflict(format!("gave up after {MAX_ATTEMPTS} attempts")),
    })
}

/// Removes ref `name` (best effort against a concurrent writer: one that moved it
/// keeps it).
async fn drop_ref(lake: &Lake, state: &TableState, name: &str) -> Result<(), ApplyError> {
    match head_of(state, name) {
        Some(head) => reset_branch(lake, state, name, head, None).await,
        None => Ok(()),
    }
}

/// The checks of every table of `audits` with checks, on ref `branch` (`main`, or a
/// preview branch: a table without it is checked on `main`).
pub async fn check_all(
    lake: &Lake,
    audits: &BTreeMap<String, TableAudit>,
    branch: &str,
    only: Option<&[String]>,
) -> Result<Vec<TableChecks>, ApplyError> {
    let mut out = Vec::new();
    let audits: BTreeMap<&String, &TableAudit> = audits
        .iter()
        .filter(|(t, a)| !a.checks.is_empty() && only.is_none_or(|o| o.contains(t)))
        .collect();
    for (table, audit) in audits {
        let Some(state) = lake.load_table(&crate::plan::ident_of(table)).await? else {
            continue;
        };
        let main = state.metadata.current_snapshot_id();
        // `rowCount.maxChangePercent` compares a branch with `main`, and `main` with
        // the snapshot before its last change.
        let (name, at, before) = match head_of(&state, branch).filter(|_| branch != MAIN_BRANCH) {
            Some(h) => (branch, Some(h), main),
            None => (
                MAIN_BRANCH,
                main,
                state
                    .metadata
                    .current_snapshot()
                    .and_then(|s| s.parent_snapshot_id()),
            ),
        };
        out.push(check_table(lake, &state, audit, name, at, before).await?);
    }
    Ok(out)
}
