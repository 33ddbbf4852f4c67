//! `lakectl import NAMESPACE[.TABLE]`: brings existing tables (made by PyIceberg, Spark,
//! DuckDB …) under management, like `terraform import`.
//!
//! For a table no manifest declares, it writes `<namespace>.<table>.yaml` declaring the
//! table as it is (columns with docs and nested types, identifier fields, partitioning,
//! sort order, properties). For a table a manifest already declares, it *adopts* the
//! drift: the manifest's structure becomes its effective desired state (drifted items
//! take their actual value; what the manifest itself changes is kept), written back
//! into the manifest file. Then it records the new manifest as the table's baseline
//! (one annotated metadata-only snapshot), so the next `plan` is empty and later
//! changes by other writers show as drift.

use std::path::{Path, PathBuf};

use iceberg::TableIdent;
use serde::Serialize;

use crate::lake::Lake;
use crate::manifest::types::{OnDrift, TableManifest};
use crate::manifest::ManifestSet;
use crate::plan::drift;

/// What import did for one table.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    pub table: String,
    pub file: PathBuf,
    /// `created` (a new manifest), `updated` (drift adopted into an existing one) or
    /// `unchanged`.
    pub action: &'static str,
    /// The adopted drift items (for `updated`).
    pub adopted: Vec<String>,
    /// The baseline snapshot recorded on the table.
    pub snapshot_id: Option<i64>,
}

/// Import failures.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Lake(#[from] crate::lake::LakeError),
    #[error("{0}")]
    Apply(#[from] crate::apply::ApplyError),
    #[error("no table or namespace `{0}` in the catalog")]
    NotFound(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{file}: {why}")]
    Refused { file: PathBuf, why: String },
    #[error("{0}")]
    Manifests(crate::manifest::Diagnostics),
}

/// The tables `target` names: one table, or every table of a namespace.
pub async fn resolve(lake: &Lake, target: &str) -> Result<Vec<TableIdent>, ImportError> {
    let all = lake.list_tables().await?;
    let as_table = crate::plan::ident_of(target);
    if target.contains('.') && all.contains(&as_table) {
        return Ok(vec![as_table]);
    }
    let mut out: Vec<TableIdent> = all
        .into_iter()
        .filter(|t| t.namespace().join(".") == target)
        .collect();
    out.sort_by_key(|t| t.to_string());
    if out.is_empty() {
        return Err(ImportError::NotFound(target.to_string()));
    }
    Ok(out)
}

/// Writes (or updates) the manifests of `tables` under `dir` and records their
/// baselines. `dry_run` prints nothing and writes nothing: it returns what it would do.
pub async fn import(
    lake: &Lake,
    set: &ManifestSet,
    dir: &Path,
    tables: &[TableIdent],
    force: bool,
    dry_run: bool,
) -> Result<Vec<Imported>, ImportError> {
    let mut out = Vec::new();
    let mut written: Vec<PathBuf> = Vec::new();
    for ident in tables {
        let name = ident.to_string();
        let Some(state) = lake.load_table(ident).await? else {
            return Err(ImportError::NotFound(name));
        };
        let md = &state.metadata;
        let namespace = ident.namespace().join(".");
        let declared = set.tables.iter().find(|t| t.table_name() == name);
        let (file, manifest, action, adopted) = match declared {
            None => {
                let file = dir.join(format!("{namespace}.{}.yaml", ident.name()));
                if file.exists() && !force {
                    return Err(ImportError::Refused {
                        file,
                        why: "exists and declares another table; pass --force to overwrite it"
                            .into(),
                    });
                }
                (
                    file,
                    drift::manifest_of(&namespace, ident.name(), md),
                    "created",
                    Vec::new(),
                )
            }
            Some(t) => {
                let shares = set.tables.iter().filter(|x| x.file == t.file).count()
                    + set.lakehouses.iter().filter(|x| x.file == t.file).count();
                let mut adopting = t.clone();
                adopting.value.spec.policy.on_drift = OnDrift::Adopt;
                let (d, effective) = drift::assess(&adopting, md, set_protect(set));
                let mut m = effective.value;
                m.spec.policy.on_drift = t.value.spec.policy.on_drift;
                if drift::Baseline::read(md).is_none() {
                    // Never applied by lakectl: the table as it is is the truth.
                    let actual = drift::manifest_of(&namespace, ident.name(), md);
                    m.spec.columns = actual.spec.columns;
                    m.spec.identifier_fields = actual.spec.identifier_fields;
                    m.spec.partitioning = actual.spec.partitioning;
                    m.spec.sort_order = actual.spec.sort_order;
                    m.spec.properties = actual.spec.properties;
                }
                let changed =
                    serde_json::to_value(&m.spec).ok() != serde_json::to_value(&t.value.spec).ok();
                if changed && shares > 1 {
                    return Err(ImportError::Refused {
                        file: t.file.clone(),
                        why: format!(
                            "holds {shares} documents; move {name} into its own file to import into it"
                        ),
                    });
                }
                let adopted = d.items.iter().map(|i| i.what.clone()).collect();
                (
                    t.file.clone(),
                    m,
                    if changed { "updated" } else { "unchanged" },
                    adopted,
                )
            }
        };
        if !dry_run && action != "unchanged" {
            let text = render(&manifest, &name, action);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| ImportError::Io(file.clone(), e))?;
            }
            std::fs::write(&file, text).map_err(|e| ImportError::Io(file.clone(), e))?;
            written.push(file.clone());
        }
        out.push(Imported {
            table: name,
            file,
            action,
            adopted,
            snapshot_id: None,
        });
    }
    if dry_run {
        return Ok(out);
    }
    // Record the baselines: the plan of the imported tables now holds, per table, only
    // the change that records the manifest on the table.
    let set = crate::plan::load_valid(dir).map_err(ImportError::Manifests)?;
    let names: Vec<String> = out.iter().map(|i| i.table.clone()).collect();
    let mut only = set.clone();
    only.tables.retain(|t| names.contains(&t.table_name()));
    let actual = crate::plan::observe(Some(lake), &only, &lake.config).await?;
    let options = crate::plan::DiffOptions {
        record_baselines: true,
        ..Default::default()
    };
    let plan = crate::plan::diff_with(&only, &actual, lake.config.clone(), &options);
    for change in &plan.changes {
        let crate::plan::Change::Table(t) = change else {
            continue;
        };
        if !t.record_only {
            continue;
        }
        let state = crate::apply::apply_table(lake, t).await?;
        if let Some(i) = out.iter_mut().find(|i| i.table == t.table) {
            i.snapshot_id = state.metadata.current_snapshot_id();
        }
    }
    Ok(out)
}

fn set_protect(set: &ManifestSet) -> bool {
    set.lakehouses.first().is_some_and(|l| l.value.spec.protect)
}

/// The manifest as YAML, with a header saying where it came from.
fn render(m: &TableManifest, table: &str, action: &str) -> String {
    let yaml = serde_yaml::to_string(m).unwrap_or_default();
    let when = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let verb = if action == "created" {
        "Written"
    } else {
        "Rewritten (drift adopted)"
    };
    format!("# {verb} by `lakectl import {table}` at {when}.\n{yaml}")
}
