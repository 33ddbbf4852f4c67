//! Schema diff and evolution.
//!
//! A schema is handled as a tree of [`Node`]s (field id, name, required, doc, type).
//! [`diff`] compares the desired columns of a manifest with the table's current schema
//! and returns [`SchemaOp`]s: *intentions* that name fields by id (rename field 3 from
//! `name` to `full_name`, add `email` under the root, promote field 5 int → long, ...).
//! [`apply_ops`] replays them on a schema, which need not be the one they were planned
//! on: after a commit conflict they are replayed on the other writer's newer schema, as
//! Iceberg's own `UpdateSchema` does, so a concurrent change is kept, not overwritten.
//! An intention that no longer fits (field gone, name taken) is an error, never a guess.
//!
//! Rules (Iceberg spec, "Schema Evolution"):
//! - fields are matched by name; `renamedFrom` matches the old name and keeps the id;
//! - type promotion only int → long, float → double, decimal(P,S) → decimal(P',S), P' > P;
//! - required → optional is allowed; optional → required is refused;
//! - a new required column is refused on a table with rows (they would have no value);
//! - a map key never changes; list elements and map values follow the rules above.

use std::collections::HashMap;
use std::fmt;

use iceberg::spec::{
    ListType, MapType, NestedField, NestedFieldRef, PrimitiveType, Schema, StructType, Type,
};

use crate::manifest::positions::{child, item};
use crate::manifest::types::{Column, TypeView};
use crate::manifest::typestr::{primitive_name, TypeExpr};

/// A schema field with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: i32,
    pub name: String,
    pub required: bool,
    pub doc: Option<String>,
    pub ty: NodeType,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeType {
    Primitive(PrimitiveType),
    Struct(Vec<Node>),
    List(Box<Node>),
    Map(Box<Node>, Box<Node>),
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeType::Primitive(p) => write!(f, "{}", primitive_name(p)),
            NodeType::Struct(_) => write!(f, "struct"),
            NodeType::List(e) => write!(f, "list<{}>", e.ty),
            NodeType::Map(k, v) => write!(f, "map<{}, {}>", k.ty, v.ty),
        }
    }
}

/// The fields of an Iceberg schema as a tree.
pub fn nodes_of(schema: &Schema) -> Vec<Node> {
    schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| node_of(f))
        .collect()
}

fn node_of(f: &NestedField) -> Node {
    Node {
        id: f.id,
        name: f.name.clone(),
        required: f.required,
        doc: f.doc.clone(),
        ty: match f.field_type.as_ref() {
            Type::Primitive(p) => NodeType::Primitive(p.clone()),
            Type::Struct(s) => NodeType::Struct(s.fields().iter().map(|f| node_of(f)).collect()),
            Type::List(l) => NodeType::List(Box::new(node_of(&l.element_field))),
            Type::Map(m) => NodeType::Map(
                Box::new(node_of(&m.key_field)),
                Box::new(node_of(&m.value_field)),
            ),
        },
    }
}

fn iceberg_type(t: &NodeType) -> Type {
    match t {
        NodeType::Primitive(p) => Type::Primitive(p.clone()),
        NodeType::Struct(fields) => {
            Type::Struct(StructType::new(fields.iter().map(field_of).collect()))
        }
        NodeType::List(e) => {
            let mut el = NestedField::list_element(e.id, iceberg_type(&e.ty), e.required);
            el.doc = e.doc.clone();
            Type::List(ListType::new(el.into()))
        }
        NodeType::Map(k, v) => {
            let key = NestedField::map_key_element(k.id, iceberg_type(&k.ty));
            let mut value = NestedField::map_value_element(v.id, iceberg_type(&v.ty), v.required);
            value.doc = v.doc.clone();
            Type::Map(MapType::new(key.into(), value.into()))
        }
    }
}

fn field_of(n: &Node) -> NestedFieldRef {
    let mut f = NestedField::new(n.id, &n.name, iceberg_type(&n.ty), n.required);
    f.doc = n.doc.clone();
    f.into()
}

/// Builds an Iceberg schema from a tree; `identifier` names columns by dotted path.
pub fn schema_of(nodes: &[Node], identifier: &[String]) -> Result<Schema, String> {
    let paths = paths_by_name(nodes);
    let mut ids = Vec::new();
    for name in identifier {
        ids.push(
            *paths
                .get(name)
                .ok_or_else(|| format!("identifier field `{name}` is not a column"))?,
        );
    }
    Schema::builder()
        .with_fields(nodes.iter().map(field_of))
        .with_identifier_field_ids(ids)
        .build()
        .map_err(|e| e.message().to_string())
}

/// Dotted path (through structs only) → field id.
pub fn paths_by_name(nodes: &[Node]) -> HashMap<String, i32> {
    fn walk(nodes: &[Node], prefix: &str, out: &mut HashMap<String, i32>) {
        for n in nodes {
            let p = if prefix.is_empty() {
                n.name.clone()
            } else {
                format!("{prefix}.{}", n.name)
            };
            out.insert(p.clone(), n.id);
            if let NodeType::Struct(fields) = &n.ty {
                walk(fields, &p, out);
            }
        }
    }
    let mut out = HashMap::new();
    walk(nodes, "", &mut out);
    out
}

/// Field id → dotted path (through structs only).
pub fn paths_by_id(nodes: &[Node]) -> HashMap<i32, String> {
    paths_by_name(nodes)
        .into_iter()
        .map(|(k, v)| (v, k))
        .collect()
}

/// A desired field, read from a manifest column (or list element / map key / value).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Desired {
    pub name: String,
    pub renamed_from: Option<String>,
    pub required: bool,
    pub doc: Option<String>,
    pub ty: DesiredType,
    /// Where it is in the manifest (`spec.columns[2]`), for error locations.
    #[serde(skip)]
    pub yaml_path: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum DesiredType {
    Primitive(#[serde(serialize_with = "ser_prim")] PrimitiveType),
    Struct(Vec<Desired>),
    List(Box<Desired>),
    Map(Box<Desired>, Box<Desired>),
}

fn ser_prim<S: serde::Serializer>(p: &PrimitiveType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&primitive_name(p))
}

/// Desired fields of a manifest's `spec.columns`.
pub fn desired_columns(cols: &[Column]) -> Vec<Desired> {
    desired_fields(cols, "spec.columns")
}

fn desired_fields(cols: &[Column], path: &str) -> Vec<Desired> {
    cols.iter()
        .enumerate()
        .map(|(i, c)| {
            let p = item(path, i);
            let mut d = desired_of(&c.name, c.type_view(), &p);
            d.renamed_from = c.renamed_from.clone();
            d
        })
        .collect()
}

fn desired_of(name: &str, v: TypeView<'_>, path: &str) -> Desired {
    let ty = match &v.ty.0 {
        TypeExpr::Primitive(p) => DesiredType::Primitive(p.clone()),
        TypeExpr::Struct => DesiredType::Struct(desired_fields(v.fields, &child(path, "fields"))),
        TypeExpr::List(None) => DesiredType::List(Box::new(match v.element {
            Some(e) => desired_of("element", e.type_view(), &child(path, "element")),
            None => shorthand(
                "element",
                &TypeExpr::Primitive(PrimitiveType::String),
                false,
                path,
            ),
        })),
        TypeExpr::List(Some(e)) => {
            DesiredType::List(Box::new(shorthand("element", e, false, path)))
        }
        TypeExpr::Map(None) => {
            let part = |what: &str, f: Option<&crate::manifest::types::FieldType>, required| match f
            {
                Some(f) => {
                    let mut d = desired_of(what, f.type_view(), &child(path, what));
                    d.required |= required;
                    d
                }
                None => shorthand(
                    what,
                    &TypeExpr::Primitive(PrimitiveType::String),
                    required,
                    path,
                ),
            };
            DesiredType::Map(
                Box::new(part("key", v.key, true)),
                Box::new(part("value", v.value, false)),
            )
        }
        TypeExpr::Map(Some((k, val))) => DesiredType::Map(
            Box::new(shorthand("key", k, true, path)),
            Box::new(shorthand("value", val, false, path)),
        ),
    };
    Desired {
        name: name.to_string(),
        renamed_from: None,
        required: v.required,
        doc: v.doc.map(str::to_string),
        ty,
        yaml_path: path.to_string(),
    }
}

/// A field from `list<T>` / `map<K, V>` shorthand.
fn shorthand(name: &str, e: &TypeExpr, required: bool, path: &str) -> Desired {
    let ty = match e {
        TypeExpr::Primitive(p) => DesiredType::Primitive(p.clone()),
        TypeExpr::List(Some(inner)) => {
            DesiredType::List(Box::new(shorthand("element", inner, false, path)))
        }
        TypeExpr::Map(Some((k, v))) => DesiredType::Map(
            Box::new(shorthand("key", k, true, path)),
            Box::new(shorthand("value", v, false, path)),
        ),
        // `list<struct>` without fields is rejected by validation; an empty struct here
        // is never reached for a valid manifest.
        _ => DesiredType::Struct(Vec::new()),
    };
    Desired {
        name: name.to_string(),
        renamed_from: None,
        required,
        doc: None,
        ty,
        yaml_path: path.to_string(),
    }
}

/// Turns desired fields into nodes with fresh ids from `next_id` (pre-order).
pub fn new_nodes(desired: &[Desired], next_id: &mut i32) -> Vec<Node> {
    desired.iter().map(|d| new_node(d, next_id)).collect()
}

fn new_node(d: &Desired, next_id: &mut i32) -> Node {
    *next_id += 1;
    let id = *next_id;
    let ty = match &d.ty {
        DesiredType::Primitive(p) => NodeType::Primitive(p.clone()),
        DesiredType::Struct(fields) => NodeType::Struct(new_nodes(fields, next_id)),
        DesiredType::List(e) => NodeType::List(Box::new(new_node(e, next_id))),
        DesiredType::Map(k, v) => {
            let k = new_node(k, next_id);
            let v = new_node(v, next_id);
            NodeType::Map(Box::new(k), Box::new(v))
        }
    };
    Node {
        id,
        name: d.name.clone(),
        required: d.required,
        doc: d.doc.clone(),
        ty,
    }
}

/// One intended schema change, naming fields by id.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum SchemaOp {
    /// Add a field under `parent` (a struct's id; `None` = top level).
    AddColumn {
        parent: Option<i32>,
        path: String,
        field: Desired,
    },
    RenameColumn {
        id: i32,
        from: String,
        to: String,
    },
    PromoteType {
        id: i32,
        path: String,
        #[serde(serialize_with = "ser_prim")]
        from: PrimitiveType,
        #[serde(serialize_with = "ser_prim")]
        to: PrimitiveType,
    },
    MakeOptional {
        id: i32,
        path: String,
    },
    SetDoc {
        id: i32,
        path: String,
        doc: Option<String>,
    },
    DropColumn {
        id: i32,
        path: String,
    },
    /// Order the fields of `parent` as `names` (fields not named keep their place at the end).
    Reorder {
        parent: Option<i32>,
        path: String,
        names: Vec<String>,
    },
}

impl SchemaOp {
    pub fn is_destructive(&self) -> bool {
        matches!(self, SchemaOp::DropColumn { .. })
    }

    /// One line for plan output.
    pub fn describe(&self) -> String {
        match self {
            SchemaOp::AddColumn { path, field, .. } => {
                format!(
                    "add column {path}: {}{}",
                    desired_type_name(&field.ty),
                    if field.required { " required" } else { "" }
                )
            }
            SchemaOp::RenameColumn { id, from, to } => {
                format!("rename column {from} → {to} (field id {id} kept)")
            }
            SchemaOp::PromoteType { path, from, to, .. } => format!(
                "widen column {path}: {} → {}",
                primitive_name(from),
                primitive_name(to)
            ),
            SchemaOp::MakeOptional { path, .. } => format!("make column {path} optional"),
            SchemaOp::SetDoc { path, doc, .. } => match doc {
                Some(d) => format!("set doc of {path}: {d:?}"),
                None => format!("remove doc of {path}"),
            },
            SchemaOp::DropColumn { path, .. } => format!("drop column {path}"),
            SchemaOp::Reorder { path, names, .. } => {
                let at = if path.is_empty() {
                    "columns".to_string()
                } else {
                    format!("fields of {path}")
                };
                format!("reorder {at}: {}", names.join(", "))
            }
        }
    }

    /// The manifest kind name of the op, for JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            SchemaOp::AddColumn { .. } => "add-column",
            SchemaOp::RenameColumn { .. } => "rename-column",
            SchemaOp::PromoteType { .. } => "promote-type",
            SchemaOp::MakeOptional { .. } => "make-optional",
            SchemaOp::SetDoc { .. } => "set-doc",
            SchemaOp::DropColumn { .. } => "drop-column",
            SchemaOp::Reorder { .. } => "reorder",
        }
    }
}

pub fn desired_type_name(t: &DesiredType) -> String {
    match t {
        DesiredType::Primitive(p) => primitive_name(p),
        DesiredType::Struct(_) => "struct".into(),
        DesiredType::List(e) => format!("list<{}>", desired_type_name(&e.ty)),
        DesiredType::Map(k, v) => format!(
            "map<{}, {}>",
            desired_type_name(&k.ty),
            desired_type_name(&v.ty)
        ),
    }
}

/// A change the rules forbid, with the manifest path it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub yaml_path: String,
    pub message: String,
}

/// Result of diffing desired columns against a schema.
#[derive(Debug, Default)]
pub struct SchemaDiff {
    pub ops: Vec<SchemaOp>,
    pub refusals: Vec<Refusal>,
    pub hints: Vec<String>,
}

/// Compares desired columns with the current fields. `has_rows`: the table holds data
/// (then new required columns are refused).
pub fn diff(actual: &[Node], desired: &[Desired], has_rows: bool) -> SchemaDiff {
    let mut d = Differ {
        out: SchemaDiff::default(),
        has_rows,
    };
    d.level(None, "", actual, desired, "spec.columns");
    d.out
}

struct Differ {
    out: SchemaDiff,
    has_rows: bool,
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl Differ {
    fn refuse(&mut self, yaml_path: &str, message: String) {
        self.out.refusals.push(Refusal {
            yaml_path: yaml_path.to_string(),
            message,
        });
    }

    /// Diffs the fields of one struct level.
    fn level(
        &mut self,
        parent: Option<i32>,
        prefix: &str,
        actual: &[Node],
        desired: &[Desired],
        level_yaml: &str,
    ) {
        let mut matched: Vec<(i32, String)> = Vec::new();
        let mut added: Vec<&Desired> = Vec::new();
        for d in desired {
            let by_name = actual.iter().find(|a| a.name == d.name);
            let by_old = d
                .renamed_from
                .as_ref()
                .and_then(|old| actual.iter().find(|a| &a.name == old));
            let path = join(prefix, &d.name);
            match (by_name, by_old) {
                (Some(a), _) => {
                    matched.push((a.id, d.name.clone()));
                    self.field(a, d, &path);
                }
                (None, Some(a)) => {
                    if desired.iter().any(|o| o.name == a.name) {
                        self.refuse(
                            &child(&d.yaml_path, "renamedFrom"),
                            format!(
                                "`{}` is renamed from `{}`, but `{}` is still declared too",
                                d.name, a.name, a.name
                            ),
                        );
                        continue;
                    }
                    matched.push((a.id, d.name.clone()));
                    self.out.ops.push(SchemaOp::RenameColumn {
                        id: a.id,
                        from: join(prefix, &a.name),
                        to: path.clone(),
                    });
                    self.field(a, d, &path);
                }
                (None, None) => {
                    if d.required && self.has_rows {
                        self.refuse(
                            &child(&d.yaml_path, "required"),
                            format!(
                                "cannot add required column `{path}` to a table that has rows: existing rows have no value for it (add it optional)"
                            ),
                        );
                        continue;
                    }
                    added.push(d);
                    self.out.ops.push(SchemaOp::AddColumn {
                        parent,
                        path,
                        field: d.clone(),
                    });
                }
            }
        }
        let mut dropped: Vec<&Node> = Vec::new();
        for a in actual {
            if !matched.iter().any(|(id, _)| *id == a.id) {
                dropped.push(a);
                self.out.ops.push(SchemaOp::DropColumn {
                    id: a.id,
                    path: join(prefix, &a.name),
                });
            }
        }
        for a in &dropped {
            for d in &added {
                if desired_matches_node_type(&d.ty, &a.ty) {
                    self.out.hints.push(format!(
                        "`{}` is dropped and `{}` added with the same type: did you mean `renamedFrom: {}` on `{}` ({})?",
                        join(prefix, &a.name),
                        join(prefix, &d.name),
                        a.name,
                        d.name,
                        level_yaml
                    ));
                }
            }
        }
        // Order: where the fields would end up (kept fields in their current order,
        // then added ones) against the order the manifest declares.
        let mut natural: Vec<&str> = actual
            .iter()
            .filter_map(|a| {
                matched
                    .iter()
                    .find(|(id, _)| *id == a.id)
                    .map(|(_, n)| n.as_str())
            })
            .collect();
        natural.extend(added.iter().map(|d| d.name.as_str()));
        let wanted: Vec<&str> = desired
            .iter()
            .map(|d| d.name.as_str())
            .filter(|n| natural.contains(n))
            .collect();
        if natural != wanted {
            self.out.ops.push(SchemaOp::Reorder {
                parent,
                path: prefix.to_string(),
                names: wanted.iter().map(|s| s.to_string()).collect(),
            });
        }
    }

    fn field(&mut self, a: &Node, d: &Desired, path: &str) {
        if a.doc != d.doc {
            self.out.ops.push(SchemaOp::SetDoc {
                id: a.id,
                path: path.to_string(),
                doc: d.doc.clone(),
            });
        }
        self.nullability_and_type(a, d, path);
    }

    fn nullability_and_type(&mut self, a: &Node, d: &Desired, path: &str) {
        match (a.required, d.required) {
            (true, false) => self.out.ops.push(SchemaOp::MakeOptional {
                id: a.id,
                path: path.to_string(),
            }),
            (false, true) => self.refuse(
                &child(&d.yaml_path, "required"),
                format!(
                    "cannot make optional `{path}` required: Iceberg allows only required → optional (existing rows may hold nulls)"
                ),
            ),
            _ => {}
        }
        match (&a.ty, &d.ty) {
            (NodeType::Primitive(from), DesiredType::Primitive(to)) => {
                if from != to {
                    match promotion(from, to) {
                        Ok(()) => self.out.ops.push(SchemaOp::PromoteType {
                            id: a.id,
                            path: path.to_string(),
                            from: from.clone(),
                            to: to.clone(),
                        }),
                        Err(rule) => self.refuse(
                            &child(&d.yaml_path, "type"),
                            format!(
                                "type change of `{path}` from {} to {} refused: {rule}",
                                primitive_name(from),
                                primitive_name(to)
                            ),
                        ),
                    }
                }
            }
            (NodeType::Struct(fields), DesiredType::Struct(dfields)) => {
                self.level(Some(a.id), path, fields, dfields, &child(&d.yaml_path, "fields"));
            }
            (NodeType::List(ae), DesiredType::List(de)) => {
                self.element(ae, de, &format!("{path}.element"));
            }
            (NodeType::Map(ak, av), DesiredType::Map(dk, dv)) => {
                if !desired_matches_node_type(&dk.ty, &ak.ty) {
                    self.refuse(
                        &child(&d.yaml_path, "type"),
                        format!(
                            "map key of `{path}` cannot change ({} → {}): Iceberg map keys are fixed",
                            ak.ty,
                            desired_type_name(&dk.ty)
                        ),
                    );
                }
                self.element(av, dv, &format!("{path}.value"));
            }
            (at, dt) => self.refuse(
                &child(&d.yaml_path, "type"),
                format!(
                    "type change of `{path}` from {at} to {} refused: a column cannot change between primitive, struct, list and map (add a new column instead)",
                    desired_type_name(dt)
                ),
            ),
        }
    }

    /// A list element or map value: nullability, doc and type like a field, no name.
    fn element(&mut self, a: &Node, d: &Desired, path: &str) {
        if d.doc.is_some() && a.doc != d.doc {
            self.out.ops.push(SchemaOp::SetDoc {
                id: a.id,
                path: path.to_string(),
                doc: d.doc.clone(),
            });
        }
        self.nullability_and_type(a, d, path);
    }
}

/// Same type, ignoring ids, names and docs (for the rename hint and map keys).
fn desired_matches_node_type(d: &DesiredType, n: &NodeType) -> bool {
    match (d, n) {
        (DesiredType::Primitive(a), NodeType::Primitive(b)) => a == b,
        (DesiredType::Struct(ds), NodeType::Struct(ns)) => {
            ds.len() == ns.len()
                && ds
                    .iter()
                    .zip(ns)
                    .all(|(d, n)| d.name == n.name && desired_matches_node_type(&d.ty, &n.ty))
        }
        (DesiredType::List(d), NodeType::List(n)) => desired_matches_node_type(&d.ty, &n.ty),
        (DesiredType::Map(dk, dv), NodeType::Map(nk, nv)) => {
            desired_matches_node_type(&dk.ty, &nk.ty) && desired_matches_node_type(&dv.ty, &nv.ty)
        }
        _ => false,
    }
}

/// Iceberg's type promotion rules; `Err` names the rule that forbids the change.
pub fn promotion(from: &PrimitiveType, to: &PrimitiveType) -> Result<(), String> {
    use PrimitiveType::*;
    match (from, to) {
        (Int, Long) | (Float, Double) => Ok(()),
        (Decimal { precision: p1, scale: s1 }, Decimal { precision: p2, scale: s2 }) => {
            if s1 != s2 {
                Err(format!("a decimal's scale cannot change ({s1} → {s2}); Iceberg allows only widening the precision at the same scale"))
            } else if p2 < p1 {
                Err(format!("narrowing decimal precision {p1} → {p2} could lose values; Iceberg allows only widening"))
            } else {
                Ok(())
            }
        }
        (Long, Int) | (Double, Float) => Err(
            "narrowing could lose values; Iceberg allows only int → long, float → double and widening decimal precision".into(),
        ),
        _ => Err(
            "Iceberg allows only int → long, float → double and widening decimal precision (spec: Schema Evolution)".into(),
        ),
    }
}

/// Finds a node anywhere in the tree (fields, list elements, map keys and values).
fn find_mut(nodes: &mut [Node], id: i32) -> Option<&mut Node> {
    for n in nodes.iter_mut() {
        if n.id == id {
            return Some(n);
        }
        let found = match &mut n.ty {
            NodeType::Primitive(_) => None,
            NodeType::Struct(fields) => find_mut(fields, id),
            NodeType::List(e) => find_mut(std::slice::from_mut(e.as_mut()), id),
            NodeType::Map(k, v) => find_mut(std::slice::from_mut(k.as_mut()), id)
                .or_else(|| find_mut(std::slice::from_mut(v.as_mut()), id)),
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

fn fields_mut(nodes: &mut Vec<Node>, parent: Option<i32>) -> Result<&mut Vec<Node>, String> {
    match parent {
        None => Ok(nodes),
        Some(id) => match find_mut(nodes, id) {
            Some(Node {
                ty: NodeType::Struct(fields),
                ..
            }) => Ok(fields),
            Some(n) => Err(format!(
                "field id {id} (`{}`) is no longer a struct",
                n.name
            )),
            None => Err(format!("field id {id} no longer exists")),
        },
    }
}

fn remove(nodes: &mut Vec<Node>, id: i32) -> bool {
    if let Some(i) = nodes.iter().position(|n| n.id == id) {
        nodes.remove(i);
        return true;
    }
    nodes.iter_mut().any(|n| match &mut n.ty {
        NodeType::Struct(fields) => remove(fields, id),
        NodeType::List(e) => match &mut e.ty {
            NodeType::Struct(f) => remove(f, id),
            _ => false,
        },
        NodeType::Map(_, v) => match &mut v.ty {
            NodeType::Struct(f) => remove(f, id),
            _ => false,
        },
        NodeType::Primitive(_) => false,
    })
}

/// Replays `ops` on `nodes`. New fields get ids after `last_column_id`; returns the new
/// tree and the new last column id. An op that no longer fits is an `Err` saying why.
pub fn apply_ops(
    mut nodes: Vec<Node>,
    ops: &[SchemaOp],
    mut last_column_id: i32,
) -> Result<(Vec<Node>, i32), String> {
    for op in ops {
        match op {
            SchemaOp::AddColumn {
                parent,
                path,
                field,
            } => {
                let level = fields_mut(&mut nodes, *parent)?;
                if level.iter().any(|n| n.name == field.name) {
                    return Err(format!(
                        "cannot add `{path}`: a field with that name exists now"
                    ));
                }
                let node = new_node(field, &mut last_column_id);
                level.push(node);
            }
            SchemaOp::RenameColumn { id, from, to } => {
                let new_name = to.rsplit('.').next().unwrap_or(to).to_string();
                let n = find_mut(&mut nodes, *id).ok_or_else(|| {
                    format!("cannot rename `{from}`: field id {id} no longer exists")
                })?;
                let old_name = from.rsplit('.').next().unwrap_or(from);
                if n.name != old_name {
                    return Err(format!(
                        "cannot rename `{from}`: field id {id} is now called `{}`",
                        n.name
                    ));
                }
                n.name = new_name;
            }
            SchemaOp::PromoteType { id, path, from, to } => {
                let n = find_mut(&mut nodes, *id).ok_or_else(|| {
                    format!("cannot widen `{path}`: field id {id} no longer exists")
                })?;
                match &n.ty {
                    NodeType::Primitive(p) if p == from || p == to => {
                        n.ty = NodeType::Primitive(to.clone())
                    }
                    other => {
                        return Err(format!(
                            "cannot widen `{path}`: it is {other} now, not {}",
                            primitive_name(from)
                        ))
                    }
                }
            }
            SchemaOp::MakeOptional { id, path } => {
                find_mut(&mut nodes, *id)
                    .ok_or_else(|| {
                        format!("cannot make `{path}` optional: field id {id} no longer exists")
                    })?
                    .required = false;
            }
            SchemaOp::SetDoc { id, path, doc } => {
                find_mut(&mut nodes, *id)
                    .ok_or_else(|| {
                        format!("cannot set the doc of `{path}`: field id {id} no longer exists")
                    })?
                    .doc = doc.clone();
            }
            SchemaOp::DropColumn { id, .. } => {
                // Already gone is fine: the intention holds.
                remove(&mut nodes, *id);
            }
            SchemaOp::Reorder { parent, names, .. } => {
                let level = fields_mut(&mut nodes, *parent)?;
                level.sort_by_key(|n| {
                    names
                        .iter()
                        .position(|x| x == &n.name)
                        .unwrap_or(usize::MAX)
                });
            }
        }
    }
    Ok((nodes, last_column_id))
}

/// One line per field, indented by nesting: what the plan's schema diff compares.
pub fn render_lines(nodes: &[Node]) -> Vec<String> {
    fn walk(nodes: &[Node], depth: usize, out: &mut Vec<String>) {
        for n in nodes {
            line(n, &n.name, depth, out);
        }
    }
    fn line(n: &Node, name: &str, depth: usize, out: &mut Vec<String>) {
        let req = if n.required { "required" } else { "optional" };
        let doc = n
            .doc
            .as_ref()
            .map(|d| format!("  -- {d}"))
            .unwrap_or_default();
        out.push(format!(
            "{}{name}: {} {req} (id {}){doc}",
            "  ".repeat(depth),
            n.ty,
            n.id
        ));
        match &n.ty {
            NodeType::Struct(fields) => walk(fields, depth + 1, out),
            NodeType::List(e) => nested(e, "element", depth + 1, out),
            NodeType::Map(k, v) => {
                nested(k, "key", depth + 1, out);
                nested(v, "value", depth + 1, out);
            }
            NodeType::Primitive(_) => {}
        }
    }
    fn nested(n: &Node, name: &str, depth: usize, out: &mut Vec<String>) {
        if !matches!(n.ty, NodeType::Primitive(_)) || n.doc.is_some() {
            line(n, name, depth, out);
        }
    }
    let mut out = Vec::new();
    walk(nodes, 0, &mut out);
    out
}

/// The Arrow schema a table with exactly these declared columns would be read with
/// (`None` when the columns do not make a valid schema: those errors are reported
/// elsewhere).
pub fn declared_arrow_schema(cols: &[Column]) -> Option<arrow_schema::SchemaRef> {
    let desired = desired_columns(cols);
    let d = diff(&[], &desired, false);
    let (nodes, _) = apply_ops(Vec::new(), &d.ops, 0).ok()?;
    let schema = schema_of(&nodes, &[]).ok()?;
    iceberg::arrow::schema_to_arrow_schema(&schema)
        .ok()
        .map(std::sync::Arc::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prim(id: i32, name: &str, p: PrimitiveType) -> Node {
        Node {
            id,
            name: name.into(),
            required: false,
            doc: None,
            ty: NodeType::Primitive(p),
        }
    }

    fn want(name: &str, p: PrimitiveType) -> Desired {
        Desired {
            name: name.into(),
            renamed_from: None,
            required: false,
            doc: None,
            ty: DesiredType::Primitive(p),
            yaml_path: String::new(),
        }
    }

    #[test]
    fn promotion_rules() {
        use PrimitiveType::*;
        assert!(promotion(&Int, &Long).is_ok());
        assert!(promotion(&Float, &Double).is_ok());
        assert!(promotion(
            &Decimal {
                precision: 10,
                scale: 2
            },
            &Decimal {
                precision: 12,
                scale: 2
            }
        )
        .is_ok());
        assert!(promotion(
            &Decimal {
                precision: 10,
                scale: 2
            },
            &Decimal {
                precision: 12,
                scale: 3
            }
        )
        .unwrap_err()
        .contains("scale"));
        assert!(promotion(&Long, &Int).unwrap_err().contains("narrowing"));
        assert!(promotion(&String, &Int).unwrap_err().contains("int → long"));
    }

    #[test]
    fn ops_replay_on_a_newer_schema_keep_the_other_writers_column() {
        let base = vec![prim(1, "id", PrimitiveType::Long)];
        let mine = diff(
            &base,
            &[
                want("id", PrimitiveType::Long),
                want("email", PrimitiveType::String),
            ],
            false,
        );
        assert_eq!(mine.ops.len(), 1);
        // Meanwhile another writer added `phone` (id 2).
        let theirs = vec![
            prim(1, "id", PrimitiveType::Long),
            prim(2, "phone", PrimitiveType::String),
        ];
        let (after, last) = apply_ops(theirs, &mine.ops, 2).unwrap();
        let names: Vec<_> = after.iter().map(|n| (n.name.as_str(), n.id)).collect();
        assert_eq!(names, vec![("id", 1), ("phone", 2), ("email", 3)]);
        assert_eq!(last, 3);
    }

    #[test]
    fn rename_keeps_id_and_is_idempotent() {
        let base = vec![prim(1, "name", PrimitiveType::String)];
        let mut d = want("full_name", PrimitiveType::String);
        d.renamed_from = Some("name".into());
        let first = diff(&base, std::slice::from_ref(&d), false);
        assert_eq!(
            first.ops,
            vec![SchemaOp::RenameColumn {
                id: 1,
                from: "name".into(),
                to: "full_name".into()
            }]
        );
        let (after, _) = apply_ops(base, &first.ops, 1).unwrap();
        assert_eq!(after[0].id, 1);
        assert!(diff(&after, &[d], false).ops.is_empty());
    }

    #[test]
    fn drop_plus_add_of_same_type_hints_rename() {
        let base = vec![prim(1, "name", PrimitiveType::String)];
        let d = diff(&base, &[want("full_name", PrimitiveType::String)], false);
        assert!(d.hints[0].contains("renamedFrom: name"), "{:?}", d.hints);
    }
}
