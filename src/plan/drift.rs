//! Drift: what changed in a table outside lakectl since lakectl last made it match its
//! manifest, and the state apply aims at under the table's `onDrift` policy.
//!
//! Every commit that creates or updates a table records the manifest's structure (its
//! *baseline*: columns, identifier fields, partitioning, sort order, properties and
//! protection) in the table property [`DESIRED`] and in the summary of its snapshot.
//! On the next plan, three states meet, item by item (a top-level column, the
//! identifier fields, the partition spec, the sort order, one managed property):
//! - **baseline** (B): what lakectl last applied;
//! - **actual** (A): what the table has now;
//! - **desired** (D): what the manifest says now.
//!
//! An item is *drift* when A ≠ B (someone else changed it) and A ≠ D (the manifest does
//! not say so already). With `report` and `adopt`, apply aims at an *effective* desired
//! state: D, except that drifted items the manifest did not touch (D = B) keep their
//! actual value, so they are shown but never undone. With `revert`, apply aims at D, so
//! the drift is undone (dropping a column another writer added is destructive and
//! needs `allowDestructive`). Snapshots other writers committed after lakectl's newest
//! one are data drift: `revert` rolls them back (destructive), the others report them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use iceberg::spec::{NullOrder, SortDirection, TableMetadata};
use serde::{Deserialize, Serialize};

use super::list_or_none;
use super::schema::{self, desired_columns, Desired, DesiredType, Node, NodeType};
use crate::lake::ledger;
use crate::manifest::types::{
    ApiVersion, Column, FieldType, NullsSpec, OnDrift, PartitionFieldSpec, Policy,
    SortDirectionSpec, SortFieldSpec, TableKind, TableManifest, TableMetadataSpec, TableSpec,
    TransformName, TypeName,
};
use crate::manifest::typestr::TypeExpr;
use crate::manifest::{partition_field_name, Located};

/// Table property (and table-change snapshot summary key): the baseline as JSON.
pub const DESIRED: &str = crate::lake::snapshot::BASELINE;

/// The structure of a table as its manifest declared it when lakectl last applied it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    pub columns: Vec<Column>,
    #[serde(default)]
    pub identifier_fields: Vec<String>,
    #[serde(default)]
    pub partitioning: Vec<PartitionFieldSpec>,
    #[serde(default)]
    pub sort_order: Vec<SortFieldSpec>,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    #[serde(default)]
    pub protect: bool,
}

impl Baseline {
    /// The baseline a manifest declares (`lakehouse_protect`: the Lakehouse document's).
    pub fn of(m: &TableManifest, lakehouse_protect: bool) -> Baseline {
        fn strip(cols: &[Column]) -> Vec<Column> {
            cols.iter()
                .map(|c| Column {
                    renamed_from: None,
                    fields: strip(&c.fields),
                    ..c.clone()
                })
                .collect()
        }
        let s = &m.spec;
        Baseline {
            columns: strip(&s.columns),
            identifier_fields: s.identifier_fields.clone(),
            partitioning: s.partitioning.clone(),
            sort_order: s.sort_order.clone(),
            properties: s.properties.clone(),
            protect: s.policy.protect || lakehouse_protect,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The baseline recorded on a table, if lakectl recorded one.
    pub fn read(md: &TableMetadata) -> Option<Baseline> {
        serde_json::from_str(md.properties().get(DESIRED)?).ok()
    }
}

/// Whether the table's recorded baseline protects it (`policy.protect`).
pub fn is_protected(md: &TableMetadata) -> bool {
    Baseline::read(md).is_some_and(|b| b.protect)
}

/// One drifted item.
#[derive(Debug, Clone, Serialize)]
pub struct DriftItem {
    /// `column`, `identifier-fields`, `partitioning`, `sort-order`, `property`.
    pub kind: &'static str,
    /// What changed outside lakectl, e.g. "column `extra` (string) was added".
    pub what: String,
    /// What apply does with it: `left` (report, adopt) or `reverted`; `manifest` when
    /// the manifest changes the same item (the manifest wins).
    pub outcome: &'static str,
}

/// A snapshot another writer committed after lakectl's newest one.
#[derive(Debug, Clone, Serialize)]
pub struct ForeignSnapshot {
    pub snapshot_id: i64,
    pub timestamp_ms: i64,
    pub operation: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_records: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_records: Option<u64>,
    /// The writer, when its summary names it (`engine-name`, `app-id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

/// A table's drift.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub table: String,
    pub manifest: PathBuf,
    pub policy: OnDrift,
    pub items: Vec<DriftItem>,
    /// Other writers' snapshots on `main` after lakectl's newest one (newest first).
    pub snapshots: Vec<ForeignSnapshot>,
    /// lakectl's newest snapshot on `main` (what a revert of `snapshots` goes back to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_snapshot: Option<i64>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.snapshots.is_empty()
    }
}

/// The drift of one table and the manifest apply aims at (the effective desired
/// state: the manifest itself under `revert`).
pub fn assess(
    t: &Located<TableManifest>,
    md: &TableMetadata,
    lakehouse_protect: bool,
) -> (Drift, Located<TableManifest>) {
    let policy = t.value.spec.policy.on_drift;
    let revert = policy == OnDrift::Revert;
    let mut drift = Drift {
        table: t.table_name(),
        manifest: t.file.clone(),
        policy,
        items: Vec::new(),
        snapshots: Vec::new(),
        since_snapshot: None,
    };
    let (foreign, since) = foreign_snapshots(md);
    drift.snapshots = foreign;
    drift.since_snapshot = since;
    let mut effective = t.clone();
    let Some(base) = Baseline::read(md) else {
        // Never applied by lakectl (or by a lakectl without baselines): no structure
        // drift can be told from a manifest change.
        return (drift, effective);
    };
    let desired = Baseline::of(&t.value, lakehouse_protect);
    let actual = actual_baseline(md);
    let outcome = |manifest_changed: bool| {
        if manifest_changed {
            "manifest"
        } else if revert {
            "reverted"
        } else {
            "left"
        }
    };
    let e = &mut effective.value.spec;

    // Columns, top level by name (a nested change drifts its whole column).
    let norm = |c: &Column| normalize(&desired_columns(std::slice::from_ref(c))[0]);
    let find = |cols: &[Column], name: &str| cols.iter().find(|c| c.name == name).map(norm);
    let mut names: Vec<&str> = actual.columns.iter().map(|c| c.name.as_str()).collect();
    for c in &base.columns {
        if !names.contains(&c.name.as_str()) {
            names.push(&c.name);
        }
    }
    for name in names {
        let a = find(&actual.columns, name);
        let b = find(&base.columns, name);
        if a == b {
            continue;
        }
        let d = find(&desired.columns, name);
        if a == d {
            continue;
        }
        let what = match (&a, &b) {
            (Some(a), None) => format!("column `{name}` ({}) was added", shape(a)),
            (None, Some(_)) => format!("column `{name}` was dropped or renamed"),
            (Some(a), Some(b)) => format!("column `{name}` changed: {}", change(b, a)),
            (None, None) => continue,
        };
        let manifest_changed = d != b;
        drift.items.push(DriftItem {
            kind: "column",
            what,
            outcome: outcome(manifest_changed),
        });
        if revert || manifest_changed {
            continue;
        }
        // Keep the actual column in the effective state.
        let pos = e.columns.iter().position(|c| c.name == name);
        match (actual.columns.iter().find(|c| c.name == name), pos) {
            (Some(col), Some(i)) => e.columns[i] = col.clone(),
            (Some(col), None) => {
                // After the nearest column before it in the table that is kept.
                let before = actual
                    .columns
                    .iter()
                    .take_while(|c| c.name != name)
                    .filter_map(|c| e.columns.iter().position(|x| x.name == c.name))
                    .last();
                e.columns
                    .insert(before.map(|i| i + 1).unwrap_or(0), col.clone());
            }
            (None, Some(i)) => {
                e.columns.remove(i);
            }
            (None, None) => {}
        }
    }

    // Identifier fields, partitioning, sort order: each as a whole.
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    let (ai, bi, di) = (
        sorted(&actual.identifier_fields),
        sorted(&base.identifier_fields),
        sorted(&desired.identifier_fields),
    );
    if ai != bi && ai != di {
        drift.items.push(DriftItem {
            kind: "identifier-fields",
            what: format!(
                "identifier fields changed: [{}] → [{}]",
                bi.join(", "),
                ai.join(", ")
            ),
            outcome: outcome(di != bi),
        });
        if !revert && di == bi {
            e.identifier_fields = actual.identifier_fields.clone();
        }
    }
    let (ap, bp, dp) = (
        super::partition_targets(&actual.partitioning),
        super::partition_targets(&base.partitioning),
        super::partition_targets(&desired.partitioning),
    );
    if ap != bp && ap != dp {
        drift.items.push(DriftItem {
            kind: "partitioning",
            what: format!(
                "partition spec changed: {} → {}",
                list_or_none(&bp),
                list_or_none(&ap)
            ),
            outcome: outcome(dp != bp),
        });
        if !revert && dp == bp {
            e.partitioning = actual.partitioning.clone();
        }
    }
    let (aso, bso, dso) = (
        super::sort_targets(&actual.sort_order),
        super::sort_targets(&base.sort_order),
        super::sort_targets(&desired.sort_order),
    );
    if aso != bso && aso != dso {
        drift.items.push(DriftItem {
            kind: "sort-order",
            what: format!(
                "sort order changed: {} → {}",
                list_or_none(&bso),
                list_or_none(&aso)
            ),
            outcome: outcome(dso != bso),
        });
        if !revert && dso == bso {
            e.sort_order = actual.sort_order.clone();
        }
    }

    // Properties lakectl manages (in the baseline or the manifest); other writers'
    // own keys are never drift.
    let mut keys: Vec<&String> = base.properties.keys().collect();
    keys.extend(
        desired
            .properties
            .keys()
            .filter(|k| !base.properties.contains_key(*k)),
    );
    for k in keys {
        let a = md.properties().get(k);
        let b = base.properties.get(k);
        let d = desired.properties.get(k);
        if a == b || a == d {
            continue;
        }
        let what = match (a, b) {
            (Some(a), Some(b)) => format!("property `{k}` changed: {b:?} → {a:?}"),
            (None, Some(_)) => format!("property `{k}` was removed"),
            (Some(a), None) => format!("property `{k}` was set to {a:?}"),
            (None, None) => continue,
        };
        drift.items.push(DriftItem {
            kind: "property",
            what,
            outcome: outcome(d != b),
        });
        if !revert && d == b {
            match a {
                Some(a) => e.properties.insert(k.clone(), a.clone()),
                None => e.properties.remove(k),
            };
        }
    }
    (drift, effective)
}

/// Other writers' snapshots on `main` after lakectl's newest one, newest first, and
/// that snapshot's id. None when lakectl never committed to the table.
fn foreign_snapshots(md: &TableMetadata) -> (Vec<ForeignSnapshot>, Option<i64>) {
    let mut out = Vec::new();
    let mut at = md.current_snapshot();
    while let Some(s) = at {
        let props = &s.summary().additional_properties;
        if props.contains_key(ledger::CHANGE_ID) {
            return (out, Some(s.snapshot_id()));
        }
        let num = |k: &str| props.get(k).and_then(|v| v.parse::<u64>().ok());
        out.push(ForeignSnapshot {
            snapshot_id: s.snapshot_id(),
            timestamp_ms: s.timestamp_ms(),
            operation: s.summary().operation.as_str().to_string(),
            added_records: num("added-records"),
            deleted_records: num("deleted-records"),
            engine: props
                .get("engine-name")
                .or_else(|| props.get("app-id"))
                .cloned(),
        });
        at = s.parent_snapshot_id().and_then(|p| md.snapshot_by_id(p));
    }
    (Vec::new(), None)
}

/// A table's actual structure as a baseline (the properties are all of the table's).
pub fn actual_baseline(md: &TableMetadata) -> Baseline {
    let nodes = schema::nodes_of(md.current_schema());
    let paths = schema::paths_by_id(&nodes);
    let path_of = |id: i32| {
        paths
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("<field {id}>"))
    };
    let partitioning = md
        .default_partition_spec()
        .fields()
        .iter()
        .map(|f| {
            let column = path_of(f.source_id);
            let transform = TransformName(f.transform.to_string().to_ascii_lowercase());
            let mut p = PartitionFieldSpec {
                column,
                transform,
                name: None,
            };
            if partition_field_name(&p) != f.name {
                p.name = Some(f.name.clone());
            }
            p
        })
        .collect();
    let sort_order = md
        .default_sort_order()
        .fields
        .iter()
        .map(|f| {
            let direction = match f.direction {
                SortDirection::Ascending => SortDirectionSpec::Asc,
                SortDirection::Descending => SortDirectionSpec::Desc,
            };
            let nulls = match (f.null_order, direction) {
                (NullOrder::First, SortDirectionSpec::Asc)
                | (NullOrder::Last, SortDirectionSpec::Desc) => None,
                (NullOrder::First, _) => Some(NullsSpec::First),
                (NullOrder::Last, _) => Some(NullsSpec::Last),
            };
            SortFieldSpec {
                column: path_of(f.source_id),
                transform: TransformName(f.transform.to_string().to_ascii_lowercase()),
                direction,
                nulls,
            }
        })
        .collect();
    Baseline {
        columns: nodes.iter().map(column_of).collect(),
        identifier_fields: md
            .current_schema()
            .identifier_field_ids()
            .filter_map(|id| paths.get(&id).cloned())
            .collect(),
        partitioning,
        sort_order,
        properties: md
            .properties()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        protect: false,
    }
}

/// A manifest declaring an existing table as it is (`lakectl import`): its structure
/// and its properties (less lakectl's own bookkeeping).
pub fn manifest_of(namespace: &str, name: &str, md: &TableMetadata) -> TableManifest {
    let b = actual_baseline(md);
    let properties = b
        .properties
        .into_iter()
        .filter(|(k, _)| !k.starts_with("lakectl."))
        .collect();
    TableManifest {
        api_version: ApiVersion::V1,
        kind: TableKind::Table,
        metadata: TableMetadataSpec {
            name: name.to_string(),
            namespace: namespace.to_string(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        },
        spec: TableSpec {
            location: None,
            columns: b.columns,
            identifier_fields: b.identifier_fields,
            partitioning: b.partitioning,
            sort_order: b.sort_order,
            properties,
            policy: Policy::default(),
            sources: Vec::new(),
            mutations: Vec::new(),
            retention: Default::default(),
            maintenance: Default::default(),
            checks: Vec::new(),
            publish: None,
        },
    }
}

/// A manifest column for a schema field.
pub fn column_of(n: &Node) -> Column {
    let ft = field_type_of(n);
    Column {
        name: n.name.clone(),
        ty: ft.ty,
        required: ft.required,
        doc: ft.doc,
        fields: ft.fields,
        element: ft.element,
        key: ft.key,
        value: ft.value,
        renamed_from: None,
    }
}

fn field_type_of(n: &Node) -> FieldType {
    let plain = |x: &Node| match &x.ty {
        NodeType::Primitive(p) if x.doc.is_none() => Some(TypeExpr::Primitive(p.clone())),
        _ => None,
    };
    let mut ft = FieldType {
        ty: TypeName(TypeExpr::Struct),
        required: n.required,
        doc: n.doc.clone(),
        fields: Vec::new(),
        element: None,
        key: None,
        value: None,
    };
    match &n.ty {
        NodeType::Primitive(p) => ft.ty = TypeName(TypeExpr::Primitive(p.clone())),
        NodeType::Struct(fields) => ft.fields = fields.iter().map(column_of).collect(),
        NodeType::List(e) => match plain(e).filter(|_| !e.required) {
            // `list<T>` when the element is a plain optional primitive.
            Some(t) => ft.ty = TypeName(TypeExpr::List(Some(Box::new(t)))),
            None => {
                ft.ty = TypeName(TypeExpr::List(None));
                ft.element = Some(Box::new(field_type_of(e)));
            }
        },
        NodeType::Map(k, v) => match (plain(k), plain(v).filter(|_| !v.required)) {
            (Some(kt), Some(vt)) => {
                ft.ty = TypeName(TypeExpr::Map(Some((Box::new(kt), Box::new(vt)))))
            }
            _ => {
                ft.ty = TypeName(TypeExpr::Map(None));
                ft.key = Some(Box::new(field_type_of(k)));
                ft.value = Some(Box::new(field_type_of(v)));
            }
        },
    }
    ft
}

fn normalize(d: &Desired) -> Desired {
    let ty = match &d.ty {
        DesiredType::Primitive(p) => DesiredType::Primitive(p.clone()),
        DesiredType::Struct(f) => DesiredType::Struct(f.iter().map(normalize).collect()),
        DesiredType::List(e) => DesiredType::List(Box::new(normalize(e))),
        DesiredType::Map(k, v) => DesiredType::Map(Box::new(normalize(k)), Box::new(normalize(v))),
    };
    Desired {
        name: d.name.clone(),
        renamed_from: None,
        required: d.required,
        doc: d.doc.clone(),
        ty,
        yaml_path: String::new(),
    }
}

fn shape(d: &Desired) -> String {
    format!(
        "{}{}",
        schema::desired_type_name(&d.ty),
        if d.required { ", required" } else { "" }
    )
}

fn change(from: &Desired, to: &Desired) -> String {
    let (f, t) = (shape(from), shape(to));
    if f != t {
        format!("{f} → {t}")
    } else if from.doc != to.doc {
        "its doc".into()
    } else {
        "its nested fields".into()
    }
}
