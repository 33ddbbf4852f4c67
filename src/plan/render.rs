//! Plan output: Terraform-style text (`+ create`, `~ update in place`, destructive
//! lines marked, a unified diff of the schema, one summary line) and versioned JSON.

use std::fmt::Write;

use serde_json::json;

use super::{Change, Plan, PLAN_FORMAT_VERSION};
use crate::ingest::files::human_size;

/// ANSI styling, off unless asked for.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    pub fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    pub fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
}

/// The summary line: `Plan: 1 to add, 2 to change, 0 to destroy.`
pub fn summary_line(plan: &Plan) -> String {
    let (add, change, destroy, destructive) = plan.counts();
    let (files, bytes) = plan.ingest_counts();
    let mut s = format!("Plan: {add} to add, {change} to change, {destroy} to destroy");
    if destructive > 0 {
        let _ = write!(s, " ({destructive} destructive)");
    }
    if files > 0 {
        let _ = write!(s, ", {files} file(s) to ingest ({})", human_size(bytes));
    }
    let compact: usize = plan
        .changes
        .iter()
        .filter_map(|c| match c {
            super::Change::Compact(c) => Some(c.plan.input_files()),
            _ => None,
        })
        .sum();
    if compact > 0 {
        let _ = write!(s, ", {compact} file(s) to compact");
    }
    s.push('.');
    s
}

pub fn text(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    drift_text(&mut out, plan, style);
    if plan.changes.is_empty() && plan.errors.is_empty() && plan.held_back.is_empty() {
        for h in &plan.hints {
            let _ = writeln!(out, "{} {h}", style.yellow("hint:"));
        }
        out.push_str("No changes. The lakehouse matches the manifests.\n");
        return out;
    }
    for c in &plan.changes {
        match c {
            Change::CreateNamespace { namespace } => {
                let _ = writeln!(
                    out,
                    "{} namespace {}\n",
                    style.green("+"),
                    style.bold(namespace)
                );
            }
            Change::Table(t) => {
                let (sign, verb) = if t.create {
                    (style.green("+"), "will be created")
                } else {
                    (style.yellow("~"), "will be updated in place")
                };
                let _ = writeln!(
                    out,
                    "{sign} table {} {verb}  {}",
                    style.bold(&t.table),
                    style.dim(&format!("({})", t.manifest.display()))
                );
                for op in &t.schema_ops {
                    let line = op.describe();
                    let (mark, line) = if op.is_destructive() {
                        (style.red("-"), style.red(&format!("{line}  [destructive]")))
                    } else if matches!(op, super::schema::SchemaOp::AddColumn { .. }) {
                        (style.green("+"), line)
                    } else {
                        (style.yellow("~"), line)
                    };
                    let _ = writeln!(out, "    {mark} {line}");
                }
                if let Some(ids) = &t.identifier_fields {
                    let _ = writeln!(
                        out,
                        "    {} identifier fields: [{}]",
                        style.yellow("~"),
                        ids.join(", ")
                    );
                }
                if let Some(p) = &t.partition_spec {
                    let removes = t
                        .destructive
                        .iter()
                        .any(|d| d.starts_with("remove partition field"));
                    let line = format!("partition by {}", p.describe());
                    if removes {
                        let _ = writeln!(
                            out,
                            "    {} {}",
                            style.red("~"),
                            style.red(&format!("{line}  [destructive]"))
                        );
                    } else {
                        let _ = writeln!(out, "    {} {line}", sign_for(t.create, style));
                    }
                }
                if let Some(s) = &t.sort_order {
                    let _ = writeln!(
                        out,
                        "    {} sort by {}",
                        sign_for(t.create, style),
                        s.describe()
                    );
                }
                for (k, v) in &t.set_properties {
                    let _ = writeln!(
                        out,
                        "    {} property {k} = {v:?}",
                        sign_for(t.create, style)
                    );
                }
                for k in &t.remove_properties {
                    let _ = writeln!(out, "    {} property {k}", style.red("-"));
                }
                if t.record_only {
                    let _ = writeln!(
                        out,
                        "    {} record the manifest as the table's drift baseline (nothing else changes)",
                        style.yellow("~")
                    );
                }
                if !t.create && t.schema_before != t.schema_after {
                    let _ = writeln!(out, "    {}", style.dim("schema diff:"));
                    out.push_str(&schema_diff(&t.schema_before, &t.schema_after, style));
                }
                out.push('\n');
            }
            Change::Ingest(i) => {
                let how = match i.mode {
                    crate::manifest::types::SourceMode::Append => String::new(),
                    crate::manifest::types::SourceMode::Upsert => format!(
                        " (upsert by {}{}{})",
                        i.key.join(", "),
                        if i.spec.cdc.is_some() { ", cdc" } else { "" },
                        match i.matching_keys {
                            Some(n) => format!("; {n} key(s) match existing rows"),
                            None => String::new(),
                        }
                    ),
                    crate::manifest::types::SourceMode::ReplacePartitions => {
                        " (replaces the partitions it holds)".into()
                    }
                    crate::manifest::types::SourceMode::Replace => {
                        " (replaces the table's rows)".into()
                    }
                };
                let _ = writeln!(
                    out,
                    "{} ingest into {} from source `{}`{how}: {} file(s), {}  {}",
                    if i.mode.is_append() {
                        style.green("+")
                    } else {
                        style.yellow("~")
                    },
                    style.bold(&i.table),
                    i.source,
                    i.files.len(),
                    human_size(i.bytes),
                    style.dim(&format!("({})", i.manifest.display()))
                );
                for f in &i.files {
                    let again = if f.reason == "changed" {
                        ", changed: appended again"
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        out,
                        "    {} ingest {} ({}{again})",
                        style.green("+"),
                        f.path,
                        human_size(f.size)
                    );
                }
                out.push('\n');
            }
            Change::Mutation(m) => mutation_text(&mut out, m, style),
            Change::Compact(c) => {
                let deletes = if c.plan.dropped_deletes.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", {} delete file(s) applied and dropped",
                        c.plan.dropped_deletes.len()
                    )
                };
                let _ = writeln!(
                    out,
                    "{} compact {}: {} files ({}) → {} in {} partition(s){deletes}  {}",
                    style.yellow("~"),
                    style.bold(&c.table),
                    c.plan.input_files(),
                    human_size(c.plan.input_bytes()),
                    c.plan.estimated_outputs(),
                    c.plan.groups.len(),
                    style.dim(&format!("({})", c.manifest.display()))
                );
                for g in c.plan.groups.iter().take(10) {
                    let part = if g.partition.is_empty() {
                        "(unpartitioned)".to_string()
                    } else {
                        g.partition.clone()
                    };
                    let _ = writeln!(
                        out,
                        "    {part}: {} files ({}, {} rows) → {}",
                        g.files.len(),
                        human_size(g.bytes),
                        g.records,
                        g.estimated_outputs
                    );
                }
                if c.plan.groups.len() > 10 {
                    let _ = writeln!(
                        out,
                        "    … and {} more partition(s)",
                        c.plan.groups.len() - 10
                    );
                }
                out.push('\n');
            }
            Change::Expire(e) => {
                let tags = if e.expired_tags.is_empty() {
                    String::new()
                } else {
                    format!(", {} tag(s) past their age", e.expired_tags.len())
                };
                let _ = writeln!(
                    out,
                    "{} expire {} snapshot(s) of {} ({} tag(s) kept{tags}; keepLast {}, maxSnapshotAgeDays {})  {}",
                    style.red("-"),
                    e.snapshots.len(),
                    style.bold(&e.table),
                    e.tags_kept,
                    e.retention.keep_last,
                    e.retention.max_age_ms / 86_400_000,
                    style.dim(&format!("({})", e.manifest.display()))
                );
                out.push('\n');
            }
            Change::MergeManifests(m) => {
                let _ = writeln!(
                    out,
                    "{} merge manifests of {}: {} → about {}  {}",
                    style.yellow("~"),
                    style.bold(&m.table),
                    m.manifests,
                    m.estimated_after,
                    style.dim(&format!("({})", m.manifest.display()))
                );
                out.push('\n');
            }
            Change::RemoveOrphans(o) => {
                let _ = writeln!(
                    out,
                    "{} remove {} orphan file(s) of {} ({}, older than {}h)  {}",
                    style.red("-"),
                    o.files.len(),
                    style.bold(&o.table),
                    human_size(o.bytes),
                    o.older_than_hours,
                    style.dim(&format!("({})", o.manifest.display()))
                );
                for f in o.files.iter().take(10) {
                    let _ = writeln!(out, "    {} {f}", style.red("-"));
                }
                if o.files.len() > 10 {
                    let _ = writeln!(out, "    … and {} more", o.files.len() - 10);
                }
                out.push('\n');
            }
            Change::Revert(r) => {
                let _ = writeln!(
                    out,
                    "{} table {} will be rolled back to snapshot {} (onDrift: revert), taking {} snapshot(s) other writers committed off main  {}  {}",
                    style.red("-"),
                    style.bold(&r.table),
                    r.to_snapshot,
                    r.snapshots.len(),
                    style.red("[destructive]"),
                    style.dim(&format!("({})", r.manifest.display()))
                );
                for f in &r.snapshots {
                    let _ = writeln!(out, "    {} {}", style.red("-"), foreign_line(f));
                }
                out.push('\n');
            }
        }
    }
    for h in &plan.held_back {
        let _ = writeln!(
            out,
            "{} {} {} `{}`: {} (rolled back from snapshot {}; `lakectl apply --reapply {}` applies it again)",
            style.dim("="),
            style.yellow("held back:"),
            h.table,
            h.held.change,
            h.held.details,
            h.held.snapshot_id,
            h.held.change_id
        );
    }
    if !plan.held_back.is_empty() {
        out.push('\n');
    }
    let mut audited = false;
    for (table, a) in &plan.audit {
        let staged = plan
            .changes
            .iter()
            .any(|c| c.is_data() && c.table() == Some(table));
        if staged && a.audited() {
            audited = true;
            let _ = writeln!(
                out,
                "{} {table}: data changes are staged on a branch `lakectl/audit/…` and published to main {}",
                style.yellow("audited:"),
                if a.checks.is_empty() {
                    "at once (no checks declared)".to_string()
                } else {
                    format!(
                        "only if its {} check(s) pass{}",
                        a.checks.len(),
                        if plan.atomic { " (all tables in one transaction)" } else { "" }
                    )
                }
            );
        }
    }
    if audited {
        out.push('\n');
    }
    for h in &plan.hints {
        let _ = writeln!(out, "{} {h}", style.yellow("hint:"));
    }
    for e in &plan.errors {
        let _ = writeln!(out, "{} {e}", style.red("error:"));
    }
    if !plan.hints.is_empty() || !plan.errors.is_empty() {
        out.push('\n');
    }
    let _ = writeln!(out, "{}", style.bold(&summary_line(plan)));
    if !plan.errors.is_empty() {
        let _ = writeln!(
            out,
            "{}",
            style.red(&format!(
                "{} error(s): this plan cannot be applied; nothing will be changed.",
                plan.errors.len()
            ))
        );
    }
    out
}

fn mutation_text(out: &mut String, m: &super::MutationChange, style: Style) {
    use crate::mutate::expr::Action;
    let _ = writeln!(
        out,
        "{} {} {} `{}` (once)  {}",
        style.yellow("~"),
        m.action.kind(),
        style.bold(&m.table),
        m.name,
        style.dim(&format!("({})", m.at))
    );
    let _ = writeln!(out, "    where {}", m.action.predicate());
    if let Action::Update { set, .. } = &m.action {
        for (k, v) in set {
            let _ = writeln!(out, "    {} {k} = {v}", style.yellow("~"));
        }
    }
    match &m.candidates {
        None => {
            let _ = writeln!(
                out,
                "    {}",
                style.dim("files that may match: decided at apply (the table or a column it reads is created by this plan)")
            );
        }
        Some(c) => {
            let rows: u64 = c.iter().map(|f| f.records).sum();
            let _ = writeln!(
                out,
                "    files that may match: {} of {} ({} of {} rows); the others are not read",
                c.len(),
                m.live_files,
                rows,
                m.live_records
            );
            for f in c.iter().take(10) {
                let part = if f.partition.is_empty() {
                    String::new()
                } else {
                    format!("{}  ", f.partition)
                };
                let name = f.path.rsplit('/').next().unwrap_or(&f.path);
                let _ = writeln!(out, "      {part}{name} ({} rows)", f.records);
            }
            if c.len() > 10 {
                let _ = writeln!(out, "      … and {} more", c.len() - 10);
            }
        }
    }
    if let Some(n) = m.estimate {
        let _ = writeln!(out, "    rows matching now: {n}");
        if let Some(limit) = m.limit(m.live_records) {
            if n > limit {
                let _ = writeln!(
                    out,
                    "    {}",
                    style.red(&format!(
                        "changes more than its limit of {limit} row(s): apply will refuse it (set maxRowsChanged or policy.allowDestructive)"
                    ))
                );
            }
        }
    }
    out.push('\n');
}

fn sign_for(create: bool, style: Style) -> String {
    if create {
        style.green("+")
    } else {
        style.yellow("~")
    }
}

/// `snapshot 123: append, +100 rows (spark, 2026-01-02T03:04:05Z)`.
fn foreign_line(f: &super::drift::ForeignSnapshot) -> String {
    let mut rows = Vec::new();
    if let Some(n) = f.added_records {
        rows.push(format!("+{n} rows"));
    }
    if let Some(n) = f.deleted_records.filter(|n| *n > 0) {
        rows.push(format!("-{n} rows"));
    }
    let mut by = Vec::new();
    if let Some(e) = &f.engine {
        by.push(e.clone());
    }
    if let Some(t) = chrono::DateTime::from_timestamp_millis(f.timestamp_ms) {
        by.push(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    let rows = if rows.is_empty() {
        String::new()
    } else {
        format!(", {}", rows.join(", "))
    };
    format!(
        "snapshot {}: {}{rows} ({})",
        f.snapshot_id,
        f.operation,
        by.join(", ")
    )
}

/// Terraform's "objects have changed outside": per table, what drifted and what apply
/// does with it.
fn drift_text(out: &mut String, plan: &Plan, style: Style) {
    if plan.drift.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "{} changes were made outside lakectl since it last applied the manifests:\n",
        style.bold("Note:")
    );
    for d in &plan.drift {
        let policy = match d.policy {
            crate::manifest::types::OnDrift::Report => "report",
            crate::manifest::types::OnDrift::Revert => "revert",
            crate::manifest::types::OnDrift::Adopt => "adopt",
        };
        let _ = writeln!(
            out,
            "  {} table {} (onDrift: {policy})  {}",
            style.yellow("!"),
            style.bold(&d.table),
            style.dim(&format!("({})", d.manifest.display()))
        );
        for i in &d.items {
            let outcome = match i.outcome {
                "reverted" => style.red("[apply reverts it]"),
                "manifest" => style.yellow("[the manifest changes it too: the manifest wins]"),
                _ => style.dim("[left as is]"),
            };
            let _ = writeln!(out, "      {} {outcome}", i.what);
        }
        for f in &d.snapshots {
            let outcome = if d.policy == crate::manifest::types::OnDrift::Revert {
                style.red("[apply rolls it back]")
            } else {
                style.dim("[left as is]")
            };
            let _ = writeln!(out, "      {} {outcome}", foreign_line(f));
        }
        if d.policy == crate::manifest::types::OnDrift::Adopt && !d.items.is_empty() {
            let _ = writeln!(
                out,
                "      {} `lakectl import {}` writes it into {}",
                style.yellow("adopt:"),
                d.table,
                d.manifest.display()
            );
        }
    }
    out.push('\n');
}

/// Unified diff of two schema renderings (`similar`), indented under the table.
pub fn schema_diff(before: &[String], after: &[String], style: Style) -> String {
    let old = before.join("\n") + "\n";
    let new = after.join("\n") + "\n";
    let diff = similar::TextDiff::from_lines(&old, &new);
    let mut out = String::new();
    for hunk in diff.unified_diff().context_radius(2).iter_hunks() {
        let _ = writeln!(out, "      {}", style.dim(&hunk.header().to_string()));
        for change in hunk.iter_changes() {
            let line = change.value().trim_end_matches('\n');
            match change.tag() {
                similar::ChangeTag::Delete => {
                    let _ = writeln!(out, "      {}", style.red(&format!("-{line}")));
                }
                similar::ChangeTag::Insert => {
                    let _ = writeln!(out, "      {}", style.green(&format!("+{line}")));
                }
                similar::ChangeTag::Equal => {
                    let _ = writeln!(out, "       {line}");
                }
            }
        }
    }
    out
}

/// `--output json`: a versioned document for machines.
pub fn json(plan: &Plan) -> serde_json::Value {
    let (add, change, destroy, destructive) = plan.counts();
    let changes: Vec<serde_json::Value> = plan
        .changes
        .iter()
        .map(|c| match c {
            Change::CreateNamespace { namespace } => json!({
                "action": "create",
                "kind": "namespace",
                "namespace": namespace,
            }),
            Change::Ingest(i) => {
                let mut v = serde_json::to_value(i).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("action".into(), json!("ingest"));
                    o.insert("kind".into(), json!("source"));
                }
                v
            }
            Change::Mutation(m) => {
                let mut v = serde_json::to_value(m).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("action".into(), json!(m.action.kind()));
                    o.insert("kind".into(), json!("mutation"));
                    o.insert("definition".into(), json!(m.action));
                }
                v
            }
            Change::Revert(r) => {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("action".into(), json!("revert"));
                    o.insert("kind".into(), json!("table"));
                }
                v
            }
            Change::Compact(c) => {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("action".into(), json!("compact"));
                    o.insert("kind".into(), json!("maintenance"));
                    o.insert("input_files".into(), json!(c.plan.input_files()));
                    o.insert("input_bytes".into(), json!(c.plan.input_bytes()));
                    o.insert(
                        "estimated_outputs".into(),
                        json!(c.plan.estimated_outputs()),
                    );
                }
                v
            }
            Change::MergeManifests(m) => {
                let mut v = serde_json::to_value(m).unwrap_or_default();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("action".into(), json!("merge-manifests"));
                    obj.insert("kind".into(), json!("maintenance"));
                }
                v
            }
            Change::RemoveOrphans(o) => {
                let mut v = serde_json::to_value(o).unwrap_or_default();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("action".into(), json!("remove-orphans"));
                    obj.insert("kind".into(), json!("maintenance"));
                }
                v
            }
            Change::Expire(e) => {
                let mut v = serde_json::to_value(e).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert("action".into(), json!("expire"));
                    o.insert("kind".into(), json!("maintenance"));
                }
                v
            }
            Change::Table(t) => {
                let mut v = serde_json::to_value(t).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    o.insert(
                        "action".into(),
                        json!(if t.create { "create" } else { "update" }),
                    );
                    o.insert("kind".into(), json!("table"));
                    o.insert("items".into(), json!(t.items()));
                    o.remove("create");
                }
                v
            }
        })
        .collect();
    json!({
        "format_version": PLAN_FORMAT_VERSION,
        "lakectl_version": env!("CARGO_PKG_VERSION"),
        "lakehouse": plan.lakehouse,
        "changes": changes,
        "held_back": plan.held_back,
        "drift": plan.drift,
        "hints": plan.hints,
        "errors": plan.errors,
        "summary": {
            "ingest_files": plan.ingest_counts().0,
            "ingest_bytes": plan.ingest_counts().1,
            "add": add,
            "change": change,
            "destroy": destroy,
            "destructive": destructive,
            "has_changes": !plan.changes.is_empty(),
            "applicable": plan.errors.is_empty(),
        },
    })
}

/// `--output markdown`: the plan as a GitHub-flavoured Markdown pull-request comment.
/// Each change is a row of a table (destructive ones marked), each schema diff a
/// collapsible block, then the checks (failures marked, with sample rows) and the full
/// text plan, collapsed.
pub fn markdown(
    plan: &Plan,
    checks: &[crate::apply::publish::TableChecks],
    branch: Option<&str>,
) -> String {
    let plain = Style { color: false };
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### lakectl plan{}\n",
        branch
            .map(|b| format!(" against branch `{b}`"))
            .unwrap_or_default()
    );
    for e in &plan.errors {
        let _ = writeln!(out, "> [!CAUTION]\n> **error:** {}\n", cell(&e.to_string()));
    }
    if plan.changes.is_empty() {
        out.push_str("No changes. The lakehouse matches the manifests.\n\n");
    } else {
        let _ = writeln!(out, "**{}**\n", summary_line(plan).trim());
        out.push_str("| | change | table |\n|---|---|---|\n");
        for c in &plan.changes {
            let one = text(&plan.with_changes(vec![c.clone()]), plain);
            let line = one
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or_default()
                .trim();
            let (mark, extra) = match c {
                Change::Table(t) if !t.destructive.is_empty() => (
                    "⚠️",
                    format!(" — **destructive:** {}", t.destructive.join("; ")),
                ),
                Change::Revert(_) => ("⚠️", " — **destructive**".to_string()),
                Change::Table(t) if t.create => ("➕", String::new()),
                _ => ("✏️", String::new()),
            };
            let _ = writeln!(
                out,
                "| {mark} | {}{} | `{}` |",
                cell(line),
                cell(&extra),
                c.table().unwrap_or_default()
            );
        }
        out.push('\n');
        for c in &plan.changes {
            if let Change::Table(t) = c {
                if !t.create && t.schema_before != t.schema_after {
                    let _ = writeln!(
                        out,
                        "<details><summary>Schema diff of <code>{}</code></summary>\n\n```diff\n{}```\n\n</details>\n",
                        t.table,
                        schema_diff(&t.schema_before, &t.schema_after, plain)
                            .lines()
                            .map(|l| l.strip_prefix("      ").unwrap_or(l).to_string() + "\n")
                            .collect::<String>()
                    );
                }
            }
        }
    }
    if !checks.is_empty() {
        let _ = writeln!(out, "#### Checks\n");
        out.push_str("| | table | check | result |\n|---|---|---|---|\n");
        for t in checks {
            for r in &t.results {
                let mark = if r.passed {
                    "✅"
                } else if r.blocks() {
                    "❌ **failing**"
                } else {
                    "⚠️ warn"
                };
                let _ = writeln!(
                    out,
                    "| {mark} | `{}` on `{}` | {} ({}) | {} |",
                    t.table,
                    t.branch,
                    cell(&r.name),
                    r.kind,
                    cell(&r.message)
                );
            }
        }
        out.push('\n');
        for t in checks {
            for r in t
                .results
                .iter()
                .filter(|r| !r.passed && !r.samples.is_empty())
            {
                let rows: Vec<String> = r.samples.iter().map(|s| s.to_string()).collect();
                let _ = writeln!(
                    out,
                    "<details><summary>Sample rows failing <code>{}</code> of <code>{}</code></summary>\n\n```json\n{}\n```\n\n</details>\n",
                    r.name,
                    t.table,
                    rows.join("\n")
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "<details><summary>Full plan</summary>\n\n```\n{}```\n\n</details>",
        text(plan, plain)
    );
    out
}
