//! Manifests: loading a directory of YAML files, validating them with file:line:col,
//! and resolving the lakehouse config (`${env:VAR}`, relative paths, the embedded
//! default). Nothing here touches a catalog.
//!
//! Flow of [`load`]:
//! 1. Every `*.yaml` / `*.yml` under the directory (recursively, hidden folders skipped,
//!    sorted) is read and its node positions indexed.
//! 2. Each YAML document is read once untyped to find its `kind`, then once typed, so
//!    serde's errors (unknown field, bad type string, missing field) carry a location.
//! 3. [`ManifestSet::validate`] runs the checks serde cannot: duplicates, references to
//!    columns, transform/type compatibility, identifier fields, reserved properties,
//!    two manifests for one table.

pub mod positions;
pub mod types;
pub mod typestr;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iceberg::spec::{PrimitiveType, Type};
use serde::Deserialize;

use crate::lake::{CatalogKind, LakeConfig};
use positions::{child, item, Pos, Positions};
use types::*;
use typestr::TypeExpr;

/// One problem in a manifest, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// A list of diagnostics as one error.
#[derive(Debug, Clone)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A deserialized document and where it came from.
#[derive(Debug, Clone)]
pub struct Located<T> {
    pub value: T,
    pub file: PathBuf,
    pub doc: usize,
    positions: Arc<Positions>,
}

impl<T> Located<T> {
    /// A diagnostic at the value of `path` (e.g. `spec.columns[1].type`).
    pub fn error_at(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        self.diag(self.positions.value(self.doc, path), message)
    }

    /// A diagnostic at the key of `path` (e.g. the `renamedFrom:` word).
    pub fn error_at_key(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        self.diag(self.positions.key(self.doc, path), message)
    }

    pub fn pos(&self, path: &str) -> Pos {
        self.positions.value(self.doc, path)
    }

    /// `file:line` of a path, for messages that point at another place.
    pub fn where_is(&self, path: &str) -> String {
        let p = self.pos(path);
        format!("{}:{}:{}", self.file.display(), p.line, p.col)
    }

    fn diag(&self, pos: Pos, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            column: pos.col,
            message: message.into(),
        }
    }
}

impl Located<TableManifest> {
    /// `namespace.name`.
    pub fn table_name(&self) -> String {
        format!(
            "{}.{}",
            self.value.metadata.namespace, self.value.metadata.name
        )
    }
}

/// Every manifest found under a directory.
#[derive(Debug, Clone)]
pub struct ManifestSet {
    /// The directory (or the file's directory when one file was given).
    pub dir: PathBuf,
    pub tables: Vec<Located<TableManifest>>,
    pub lakehouses: Vec<Located<LakehouseManifest>>,
}

/// Reads and type-checks every manifest under `path` (a directory or one file).
/// Returns every error found, not only the first.
pub fn load(path: &Path) -> Result<ManifestSet, Diagnostics> {
    let (dir, files) = if path.is_file() {
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        (dir, vec![path.to_path_buf()])
    } else if path.is_dir() {
        let mut files = Vec::new();
        collect_yaml(path, &mut files).map_err(|e| io_diag(path, e))?;
        files.sort();
        (path.to_path_buf(), files)
    } else {
        return Err(io_diag(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        ));
    };
    let mut set = ManifestSet {
        dir,
        tables: Vec::new(),
        lakehouses: Vec::new(),
    };
    let mut errors = Vec::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.extend(io_diag(&file, e).0);
                continue;
            }
        };
        load_text(&file, &text, &mut set, &mut errors);
    }
    if errors.is_empty() {
        Ok(set)
    } else {
        Err(Diagnostics(errors))
    }
}

fn io_diag(path: &Path, e: std::io::Error) -> Diagnostics {
    Diagnostics(vec![Diagnostic {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        message: format!("cannot read: {e}"),
    }])
}

fn collect_yaml(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            collect_yaml(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses the documents of one file into `set`.
pub fn load_text(file: &Path, text: &str, set: &mut ManifestSet, errors: &mut Vec<Diagnostic>) {
    let positions = Arc::new(Positions::index(text));
    let yaml_err = |e: serde_yaml::Error, doc: Option<usize>| -> Diagnostic {
        let (mut line, mut column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        let mut message = e.to_string();
        if let Some(l) = e.location() {
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            if let Some(i) = message.find(&suffix) {
                message.replace_range(i..i + suffix.len(), "");
            }
        }
        // serde_yaml points at the enclosing mapping; point at the offending key or
        // value instead when the message says which one it is.
        if let (Some(doc), Some((path, msg))) = (doc, message.split_once(": ")) {
            let target = if let Some(rest) = msg.strip_prefix("unknown field `") {
                rest.split('`').next().map(|f| (child(path, f), true))
            } else if msg.contains("transform") {
                Some((child(path, "transform"), false))
            } else if msg.contains("type") || msg.contains("decimal") || msg.contains("fixed") {
                Some((child(path, "type"), false))
            } else {
                None
            };
            if let Some((target, is_key)) = target {
                let pos = if is_key {
                    positions.key(doc, &target)
                } else {
                    positions.value(doc, &target)
                };
                if pos.line >= line {
                    line = pos.line;
                    column = pos.col;
                }
            }
        }
        Diagnostic {
            file: file.to_path_buf(),
            line,
            column,
            message,
        }
    };
    let docs: Vec<serde_yaml::Value> = {
        let mut docs = Vec::new();
        for de in serde_yaml::Deserializer::from_str(text) {
            match serde_yaml::Value::deserialize(de) {
                Ok(v) => docs.push(v),
                Err(e) => {
                    errors.push(yaml_err(e, None));
                    return;
                }
            }
        }
        docs
    };
    for (doc, value) in docs.iter().enumerate() {
        if value.is_null() {
            continue; // an empty document (e.g. a trailing `---`)
        }
        let located = |message: String, path: &str| Diagnostic {
            file: file.to_path_buf(),
            line: positions.value(doc, path).line,
            column: positions.value(doc, path).col,
            message,
        };
        let Some(map) = value.as_mapping() else {
            errors.push(located(
                "a manifest must be a mapping with apiVersion, kind, metadata and spec".into(),
                "",
            ));
            continue;
        };
        match map.get("apiVersion").and_then(|v| v.as_str()) {
            Some(API_VERSION) => {}
            Some(other) => {
                errors.push(located(
                    format!("unsupported apiVersion `{other}`, expected `{API_VERSION}`"),
                    "apiVersion",
                ));
                continue;
            }
            None => {
                errors.push(located(
                    format!("missing field `apiVersion` (expected `{API_VERSION}`)"),
                    "",
                ));
                continue;
            }
        }
        let kind = map.get("kind").and_then(|v| v.as_str()).map(str::to_string);
        // A document with YAML merge keys (`<<: *anchor`) is read from its merged
        // value (errors then located by path where they name one); any other straight
        // from the text, so errors carry their exact line and column.
        let merged = has_merge_key(value).then(|| {
            let mut v = value.clone();
            v.apply_merge().map(|()| v)
        });
        fn decode<T: serde::de::DeserializeOwned>(
            text: &str,
            doc: usize,
            merged: &Option<Result<serde_yaml::Value, serde_yaml::Error>>,
        ) -> Option<Result<T, serde_yaml::Error>> {
            match merged {
                Some(Ok(v)) => Some(serde_yaml::from_value(v.clone())),
                Some(Err(e)) => Some(Err(serde::de::Error::custom(e.to_string()))),
                None => serde_yaml::Deserializer::from_str(text)
                    .nth(doc)
                    .map(T::deserialize),
            }
        }
        match kind.as_deref() {
            Some("Table") => match decode::<TableManifest>(text, doc, &merged) {
                Some(Ok(value)) => set.tables.push(Located {
                    value,
                    file: file.to_path_buf(),
                    doc,
                    positions: positions.clone(),
                }),
                Some(Err(e)) => errors.push(yaml_err(e, Some(doc))),
                None => {}
            },
            Some("Lakehouse") => match decode::<LakehouseManifest>(text, doc, &merged) {
                Some(Ok(value)) => set.lakehouses.push(Located {
                    value,
                    file: file.to_path_buf(),
                    doc,
                    positions: positions.clone(),
                }),
                Some(Err(e)) => errors.push(yaml_err(e, Some(doc))),
                None => {}
            },
            Some(other) => errors.push(located(
                format!("unknown kind `{other}`, expected `Table` or `Lakehouse`"),
                "kind",
            )),
            None => errors.push(located(
                "missing field `kind` (expected `Table` or `Lakehouse`)".into(),
                "",
            )),
        }
    }
}

/// The catalog namespace of a table manifest (dots separate nested levels).
pub fn namespace_ident(m: &TableManifest) -> iceberg::NamespaceIdent {
    iceberg::NamespaceIdent::from_strs(m.metadata.namespace.split('.'))
        .unwrap_or_else(|_| iceberg::NamespaceIdent::new(m.metadata.namespace.clone()))
}

pub fn table_ident(m: &TableManifest) -> iceberg::TableIdent {
    iceberg::TableIdent::new(namespace_ident(m), m.metadata.name.clone())
}

/// Whether a YAML value uses a merge key (`<<`) anywhere.
fn has_merge_key(v: &serde_yaml::Value) -> bool {
    match v {
        serde_yaml::Value::Mapping(m) => m
            .iter()
            .any(|(k, v)| k.as_str() == Some("<<") || has_merge_key(v)),
        serde_yaml::Value::Sequence(s) => s.iter().any(has_merge_key),
        serde_yaml::Value::Tagged(t) => has_merge_key(&t.value),
        _ => false,
    }
}

impl ManifestSet {
    /// A table's maintenance: its own block over the Lakehouse's, field by field.
    pub fn maintenance_of(&self, t: &Located<TableManifest>) -> MaintenanceSpec {
        let defaults = self
            .lakehouses
            .first()
            .map(|l| l.value.spec.maintenance.clone())
            .unwrap_or_default();
        t.value.spec.maintenance.over(&defaults)
    }

    /// How a table's data changes reach `main`: its own `publish`, else the
    /// Lakehouse's, else `direct`.
    pub fn publish_of(&self, t: &Located<TableManifest>) -> PublishMode {
        t.value
            .spec
            .publish
            .or_else(|| self.lakehouses.first().and_then(|l| l.value.spec.publish))
            .unwrap_or_default()
    }

    /// The Lakehouse's `atomicPublish`.
    pub fn atomic_publish(&self) -> bool {
        self.lakehouses
            .first()
            .is_some_and(|l| l.value.spec.atomic_publish)
    }

    /// Every semantic problem in the set (empty when valid).
    pub fn validate(&self) -> Vec<Diagnostic> {
        let mut errors = Vec::new();
        let mut seen: HashMap<String, &Located<TableManifest>> = HashMap::new();
        for t in &self.tables {
            validate_table(t, &mut errors);
            let key = t.table_name().to_ascii_lowercase();
            if let Some(first) = seen.get(&key) {
                errors.push(t.error_at(
                    "metadata.name",
                    format!(
                        "table `{}` is already declared in {}; one manifest per table",
                        t.table_name(),
                        first.where_is("metadata.name")
                    ),
                ));
            } else {
                seen.insert(key, t);
            }
        }
        if self.lakehouses.len() > 1 {
            let first = &self.lakehouses[0];
            for l in &self.lakehouses[1..] {
                errors.push(l.error_at(
                    "kind",
                    format!(
                        "a second Lakehouse; the first is at {}; one per manifest directory",
                        first.where_is("kind")
                    ),
                ));
            }
        }
        for l in &self.lakehouses {
            validate_maintenance(
                &l.value.spec.maintenance,
                &|path, message| l.error_at(path, message),
                &mut errors,
            );
            if let Err(e) = resolve_lakehouse(&self.dir, Some(l)) {
                errors.extend(e.0);
            }
        }
        errors
    }

    /// Loads and validates what the YAML layer can tell alone (the full check,
    /// mutation SQL included, is `plan::load_valid`).
    pub fn load_checked(path: &Path) -> Result<ManifestSet, Diagnostics> {
        let set = load(path)?;
        let errors = set.validate();
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(Diagnostics(errors))
        }
    }

    /// The lakehouse these manifests manage: the `Lakehouse` document, or the embedded
    /// default under `.lakectl/` beside the manifest directory.
    pub fn lake_config(&self) -> Result<LakeConfig, Diagnostics> {
        resolve_lakehouse(&self.dir, self.lakehouses.first())
    }
}

fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// `spec.maintenance` of a table or a Lakehouse: the values it must have.
fn validate_maintenance(
    m: &MaintenanceSpec,
    error_at: &dyn Fn(&str, String) -> Diagnostic,
    errors: &mut Vec<Diagnostic>,
) {
    if let Some(h) = m.orphans.as_ref().and_then(|o| o.older_than_hours) {
        if h < 1 {
            errors.push(error_at(
                "spec.maintenance.orphans.olderThanHours",
                format!("olderThanHours must be at least 1, not {h}: a younger file may belong to a commit in flight"),
            ));
        }
    }
    if let Some(every) = &m.every {
        if let Err(e) = humantime::parse_duration(every) {
            errors.push(error_at(
                "spec.maintenance.every",
                format!("every: `{every}` is not a duration like `1h` or `30m`: {e}"),
            ));
        }
    }
    if let Some(c) = &m.compaction {
        if c.target_file_size_bytes == Some(0) {
            errors.push(error_at(
                "spec.maintenance.compaction.targetFileSizeBytes",
                "targetFileSizeBytes must be positive".into(),
            ));
        }
        if c.min_input_files.is_some_and(|n| n < 2) {
            errors.push(error_at(
                "spec.maintenance.compaction.minInputFiles",
                "minInputFiles must be at least 2 (one file is already compact)".into(),
            ));
        }
    }
}

fn validate_table(t: &Located<TableManifest>, errors: &mut Vec<Diagnostic>) {
    let m = &t.value;
    validate_maintenance(
        &m.spec.maintenance,
        &|path, message| t.error_at(path, message),
        errors,
    );
    if !valid_identifier(&m.metadata.name) {
        errors.push(t.error_at(
            "metadata.name",
            format!(
                "invalid table name `{}`: use letters, digits, `_` and `-`",
                m.metadata.name
            ),
        ));
    }
    if m.metadata
        .namespace
        .split('.')
        .any(|l| !valid_identifier(l))
    {
        errors.push(t.error_at(
            "metadata.namespace",
            format!(
                "invalid namespace `{}`: levels of letters, digits, `_` and `-`, separated by dots",
                m.metadata.namespace
            ),
        ));
    }
    if m.spec.columns.is_empty() {
        errors.push(t.error_at("spec.columns", "a table needs at least one column"));
    }
    check_columns(t, &m.spec.columns, "spec.columns", errors);

    // Identifier fields.
    for (i, name) in m.spec.identifier_fields.iter().enumerate() {
        let path = item("spec.identifierFields", i);
        match resolve_column(&m.spec.columns, name) {
            Err(e) => errors.push(t.error_at(&path, e)),
            Ok(r) => {
                let prim = match &r.ty {
                    TypeExpr::Primitive(p) => Some(p),
                    _ => None,
                };
                if !r.required_path {
                    errors.push(t.error_at(
                        &path,
                        format!("identifier field `{name}` must be `required: true` (and so must its parent structs)"),
                    ));
                }
                match prim {
                    None => errors.push(t.error_at(
                        &path,
                        format!(
                            "identifier field `{name}` must be a primitive column, not {}",
                            r.ty
                        ),
                    )),
                    Some(PrimitiveType::Float | PrimitiveType::Double) => errors.push(t.error_at(
                        &path,
                        format!(
                            "identifier field `{name}` cannot be float or double (Iceberg spec)"
                        ),
                    )),
                    Some(_) => {}
                }
            }
        }
    }

    // Partitioning.
    let mut part_names: HashMap<String, usize> = HashMap::new();
    for (i, p) in m.spec.partitioning.iter().enumerate() {
        let path = item("spec.partitioning", i);
        let source = match resolve_column(&m.spec.columns, &p.column) {
            Ok(r) => Some(r),
            Err(e) => {
                errors.push(t.error_at(&child(&path, "column"), format!("partition {e}")));
                None
            }
        };
        if let Some(r) = &source {
            check_transform(t, &path, &p.column, &p.transform, &r.ty, errors);
        }
        let name = partition_field_name(p);
        if let Some(first) = part_names.insert(name.clone(), i) {
            errors.push(t.error_at(
                &path,
                format!(
                    "duplicate partition field name `{name}` (also spec.partitioning[{first}]); set `name:`"
                ),
            ));
        }
        let is_identity_of_same = p.transform.0 == "identity" && name == p.column;
        if !is_identity_of_same && m.spec.columns.iter().any(|c| c.name == name) {
            errors.push(t.error_at(
                &path,
                format!("partition field name `{name}` clashes with a column; set another `name:`"),
            ));
        }
    }

    // Sort order.
    for (i, s) in m.spec.sort_order.iter().enumerate() {
        let path = item("spec.sortOrder", i);
        match resolve_column(&m.spec.columns, &s.column) {
            Ok(r) => check_transform(t, &path, &s.column, &s.transform, &r.ty, errors),
            Err(e) => errors.push(t.error_at(&child(&path, "column"), format!("sort {e}"))),
        }
    }

    // Sources.
    let mut source_names: HashMap<&str, usize> = HashMap::new();
    for (i, src) in m.spec.sources.iter().enumerate() {
        let path = item("spec.sources", i);
        if !valid_identifier(&src.name) {
            errors.push(t.error_at(
                &child(&path, "name"),
                format!(
                    "invalid source name `{}`: use letters, digits, `_` and `-`",
                    src.name
                ),
            ));
        }
        if let Some(first) = source_names.insert(&src.name, i) {
            errors.push(t.error_at(
                &child(&path, "name"),
                format!(
                    "duplicate source `{}` (first at {})",
                    src.name,
                    t.where_is(&child(&item("spec.sources", first), "name"))
                ),
            ));
        }
        if src.uri.trim().is_empty() {
            errors.push(t.error_at(&child(&path, "uri"), "a source needs a `uri`"));
        }
        for (what, v) in [("delimiter", &src.csv.delimiter), ("quote", &src.csv.quote)] {
            if v.len() != 1 {
                errors.push(t.error_at(
                    &child(&child(&path, "csv"), what),
                    format!("csv {what} must be one ASCII character, got {v:?}"),
                ));
            }
        }
        for (at, label) in [
            (child(&path, "encoding"), &src.encoding),
            (child(&child(&path, "csv"), "encoding"), &src.csv.encoding),
        ] {
            if let Some(label) = label {
                if encoding_rs::Encoding::for_label(label.trim().as_bytes()).is_none() {
                    errors.push(t.error_at(
                        &at,
                        format!("unknown text encoding {label:?} (utf-8, latin1, windows-1252, utf-16, utf-16le, utf-16be, or another WHATWG label)"),
                    ));
                }
            }
        }
        if src.encoding.is_some() && src.csv.encoding.is_some() {
            errors.push(t.error_at(
                &child(&child(&path, "csv"), "encoding"),
                "the encoding is given twice (`encoding` and `csv.encoding`): keep one",
            ));
        }
        let top: Vec<&str> = m.spec.columns.iter().map(|c| c.name.as_str()).collect();
        let known = |name: &str| {
            top.iter().any(|c| {
                if src.case_insensitive {
                    c.eq_ignore_ascii_case(name)
                } else {
                    *c == name
                }
            })
        };
        for (from, to) in &src.columns {
            if !known(to) {
                errors.push(t.error_at(
                    &child(&child(&path, "columns"), from),
                    format!(
                        "source column `{from}` maps to `{to}`, which is not a column of the table"
                    ),
                ));
            }
        }
        for col in src.defaults.keys() {
            if !known(col) {
                errors.push(t.error_at_key(
                    &child(&child(&path, "defaults"), col),
                    format!("default for `{col}`, which is not a column of the table"),
                ));
            }
        }
        validate_keyed(t, src, &path, &known, errors);
    }

    validate_mutations(t, errors);
    validate_checks(t, errors);

    // Properties.
    for key in m.spec.properties.keys() {
        if key.starts_with("lakectl.") {
            errors.push(t.error_at_key(
                &child("spec.properties", key),
                format!("property `{key}` is reserved: lakectl writes the `lakectl.` keys itself"),
            ));
        }
    }
}

/// `spec.checks`: unique names, exactly one kind each, columns that exist.
fn validate_checks(t: &Located<TableManifest>, errors: &mut Vec<Diagnostic>) {
    let m = &t.value;
    let mut names: HashMap<&str, usize> = HashMap::new();
    let column = |path: &str, name: &str, errors: &mut Vec<Diagnostic>| {
        if let Err(e) = resolve_column(&m.spec.columns, name) {
            errors.push(t.error_at(path, e));
        }
    };
    for (i, c) in m.spec.checks.iter().enumerate() {
        let path = item("spec.checks", i);
        if c.name.trim().is_empty() {
            errors.push(t.error_at(&child(&path, "name"), "a check needs a name"));
        } else if let Some(first) = names.insert(c.name.as_str(), i) {
            errors.push(t.error_at(
                &child(&path, "name"),
                format!(
                    "check `{}` is already declared at {}",
                    c.name,
                    t.where_is(&child(&item("spec.checks", first), "name"))
                ),
            ));
        }
        let kinds = c.kinds();
        if kinds.len() != 1 {
            errors.push(t.error_at(
                &path,
                format!(
                    "check `{}` needs exactly one of unique, notNull, acceptedValues, rowCount, freshness, sql (has {})",
                    c.name,
                    if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") }
                ),
            ));
            continue;
        }
        if let Some(cols) = &c.unique {
            if cols.is_empty() && m.spec.identifier_fields.is_empty() {
                errors.push(t.error_at(
                    &child(&path, "unique"),
                    format!(
                        "check `{}`: `unique: []` means the table's identifierFields, and it has none",
                        c.name
                    ),
                ));
            }
            for (j, col) in cols.iter().enumerate() {
                column(&item(&child(&path, "unique"), j), col, errors);
            }
        }
        if let Some(cols) = &c.not_null {
            if cols.is_empty() {
                errors.push(t.error_at(&child(&path, "notNull"), "notNull needs a column"));
            }
            for (j, col) in cols.iter().enumerate() {
                column(&item(&child(&path, "notNull"), j), col, errors);
            }
        }
        if let Some(map) = &c.accepted_values {
            if map.is_empty() {
                errors.push(t.error_at(
                    &child(&path, "acceptedValues"),
                    "acceptedValues needs a column and its values",
                ));
            }
            for (col, values) in map {
                let at = child(&child(&path, "acceptedValues"), col);
                column(&at, col, errors);
                if values.is_empty() {
                    errors.push(t.error_at(&at, format!("no accepted values for `{col}`")));
                }
            }
        }
        if let Some(r) = &c.row_count {
            let at = child(&path, "rowCount");
            if r.min.is_none() && r.max.is_none() && r.max_change_percent.is_none() {
                errors.push(t.error_at(&at, "rowCount needs min, max or maxChangePercent"));
            }
            if let (Some(lo), Some(hi)) = (r.min, r.max) {
                if lo > hi {
                    errors.push(t.error_at(&at, format!("rowCount: min {lo} is above max {hi}")));
                }
            }
            if r.max_change_percent
                .is_some_and(|p| !(p >= 0.0 && p.is_finite()))
            {
                errors.push(t.error_at(
                    &child(&at, "maxChangePercent"),
                    "maxChangePercent is a percentage ≥ 0",
                ));
            }
        }
        if let Some(f) = &c.freshness {
            let at = child(&path, "freshness");
            match resolve_column(&m.spec.columns, &f.column) {
                Err(e) => errors.push(t.error_at(&child(&at, "column"), e)),
                Ok(r)
                    if !matches!(
                        r.ty,
                        TypeExpr::Primitive(
                            PrimitiveType::Timestamp
                                | PrimitiveType::Timestamptz
                                | PrimitiveType::TimestampNs
                                | PrimitiveType::TimestamptzNs
                                | PrimitiveType::Date
                        )
                    ) =>
                {
                    errors.push(t.error_at(
                        &child(&at, "column"),
                        format!(
                            "freshness column `{}` is {}, not a timestamp or a date",
                            f.column, r.ty
                        ),
                    ))
                }
                Ok(_) => {}
            }
            if !(f.max_age_hours > 0.0 && f.max_age_hours.is_finite()) {
                errors.push(t.error_at(&child(&at, "maxAgeHours"), "maxAgeHours must be > 0"));
            }
        }
        if let Some(q) = &c.sql {
            if !q.contains("{table}") {
                errors.push(t.error_at(
                    &child(&path, "sql"),
                    format!("check `{}`: the query must read `{{table}}`", c.name),
                ));
            }
        }
    }
}

/// `mode`, `key`, `cdc` and `onDuplicateKey` of one source.
fn validate_keyed(
    t: &Located<TableManifest>,
    src: &SourceSpec,
    path: &str,
    known: &dyn Fn(&str) -> bool,
    errors: &mut Vec<Diagnostic>,
) {
    use crate::manifest::types::SourceMode;
    let m = &t.value;
    for (i, k) in src.key.iter().enumerate() {
        let at = item(&child(path, "key"), i);
        match m.spec.columns.iter().find(|c| c.name == *k) {
            None => errors.push(t.error_at(
                &at,
                format!("key column `{k}` is not a top-level column of the table"),
            )),
            Some(c) if !matches!(c.ty.0, TypeExpr::Primitive(_)) => errors.push(t.error_at(
                &at,
                format!("key column `{k}` must be a primitive column, not {}", c.ty),
            )),
            Some(c)
                if matches!(
                    c.ty.0,
                    TypeExpr::Primitive(PrimitiveType::Float | PrimitiveType::Double)
                ) =>
            {
                errors.push(t.error_at(
                    &at,
                    format!("key column `{k}` cannot be float or double (NaN and -0.0 make float keys ambiguous)"),
                ))
            }
            Some(_) => {}
        }
        if src.key[..i].contains(k) {
            errors.push(t.error_at(&at, format!("key column `{k}` is listed twice")));
        }
    }
    if src.mode == SourceMode::Upsert && src.key.is_empty() && m.spec.identifier_fields.is_empty() {
        errors.push(t.error_at(
            &child(path, "mode"),
            format!(
                "source `{}`: `mode: upsert` needs a `key:` (or the table's `identifierFields`)",
                src.name
            ),
        ));
    }
    if let Some(cdc) = &src.cdc {
        let at = child(path, "cdc");
        if src.mode != SourceMode::Upsert {
            errors.push(t.error_at(
                &at,
                format!(
                    "source `{}`: `cdc` needs `mode: upsert` (it is {})",
                    src.name,
                    src.mode.as_str()
                ),
            ));
        }
        if cdc.op_column.trim().is_empty() {
            errors.push(t.error_at(&child(&at, "opColumn"), "`cdc.opColumn` is empty"));
        } else if known(&cdc.op_column) || src.columns.values().any(|v| *v == cdc.op_column) {
            errors.push(t.error_at(
                &child(&at, "opColumn"),
                format!(
                    "`cdc.opColumn` `{}` is a column of the table: the op column is not stored; name the source column that holds the operation",
                    cdc.op_column
                ),
            ));
        }
        if cdc.delete_when.is_empty() {
            errors.push(t.error_at(
                &child(&at, "deleteWhen"),
                "`cdc.deleteWhen` lists no op value",
            ));
        }
    }
}

/// Mutations: a unique name, exactly one of `update` / `delete`, no literal NULL into
/// a required column. (That the SQL compiles against the declared columns is checked
/// a layer up, by `plan::load_valid`, which has the SQL compiler.)
fn validate_mutations(t: &Located<TableManifest>, errors: &mut Vec<Diagnostic>) {
    let m = &t.value;
    if let Some(share) = m.spec.policy.max_mutation_share {
        if !(0.0..=1.0).contains(&share) {
            errors.push(t.error_at(
                "spec.policy.maxMutationShare",
                format!("maxMutationShare must be between 0 and 1, not {share}"),
            ));
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, mu) in m.spec.mutations.iter().enumerate() {
        let path = item("spec.mutations", i);
        if !valid_identifier(&mu.name) {
            errors.push(t.error_at(
                &child(&path, "name"),
                format!(
                    "invalid mutation name `{}`: use letters, digits, `_` and `-`",
                    mu.name
                ),
            ));
        }
        if !names.insert(mu.name.clone()) {
            errors.push(t.error_at(
                &child(&path, "name"),
                format!("duplicate mutation name `{}`", mu.name),
            ));
        }
        match (&mu.update, &mu.delete) {
            (Some(u), None) => {
                if u.set.is_empty() {
                    errors.push(t.error_at(
                        &child(&child(&path, "update"), "set"),
                        "an update needs at least one column in `set`",
                    ));
                }
                // A literal NULL into a required column: refused now, not at apply.
                for (column, value) in &u.set {
                    let literal_null = value.0.trim().eq_ignore_ascii_case("null");
                    let required = m
                        .spec
                        .columns
                        .iter()
                        .any(|c| &c.name == column && c.required);
                    if literal_null && required {
                        errors.push(t.error_at(
                            &child(&child(&child(&path, "update"), "set"), column),
                            format!(
                                "mutation `{}`: `set.{column}`: column `{column}` is required; it cannot be set to NULL",
                                mu.name
                            ),
                        ));
                    }
                }
            }
            (None, Some(_)) => {}
            _ => {
                errors.push(t.error_at(
                    &path,
                    format!(
                        "mutation `{}` needs exactly one of `update` or `delete`",
                        mu.name
                    ),
                ));
            }
        }
    }
}

fn check_transform(
    t: &Located<TableManifest>,
    path: &str,
    column: &str,
    transform: &TransformName,
    ty: &TypeExpr,
    errors: &mut Vec<Diagnostic>,
) {
    let TypeExpr::Primitive(p) = ty else {
        errors.push(t.error_at(
            &child(path, "column"),
            format!(
                "column `{column}` is {ty}; only primitive columns can be partitioned or sorted on"
            ),
        ));
        return;
    };
    if let Err(e) = transform
        .to_transform()
        .result_type(&Type::Primitive(p.clone()))
    {
        let _ = e;
        errors.push(t.error_at(
            &child(path, "transform"),
            format!(
                "transform `{}` does not apply to column `{column}` of type {}",
                transform.0,
                typestr::primitive_name(p)
            ),
        ));
    }
}

/// Iceberg's default partition field name (Java's `PartitionSpec.Builder`).
pub fn partition_field_name(p: &PartitionFieldSpec) -> String {
    if let Some(n) = &p.name {
        return n.clone();
    }
    let col = p.column.replace('.', "_");
    let t = p.transform.0.as_str();
    match t {
        "identity" => p.column.clone(),
        "year" | "month" | "day" | "hour" => format!("{col}_{t}"),
        "void" => format!("{col}_null"),
        _ if t.starts_with("bucket[") => format!("{col}_bucket"),
        _ if t.starts_with("truncate[") => format!("{col}_trunc"),
        _ => format!("{col}_{t}"),
    }
}

fn check_columns(
    t: &Located<TableManifest>,
    cols: &[Column],
    path: &str,
    errors: &mut Vec<Diagnostic>,
) {
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut renamed: HashMap<String, usize> = HashMap::new();
    for (i, c) in cols.iter().enumerate() {
        let cpath = item(path, i);
        if c.name.is_empty() || c.name.contains('.') {
            errors.push(t.error_at(
                &child(&cpath, "name"),
                format!(
                    "invalid column name `{}`: must be non-empty and contain no `.`",
                    c.name
                ),
            ));
        }
        if let Some(first) = names.insert(c.name.to_ascii_lowercase(), i) {
            let other = &cols[first].name;
            let why = if other == &c.name {
                String::new()
            } else {
                format!(", differs only in case from `{other}`: engines such as Spark match names ignoring case")
            };
            errors.push(t.error_at(
                &child(&cpath, "name"),
                format!(
                    "duplicate column `{}` (first at {}){why}",
                    c.name,
                    t.where_is(&child(&item(path, first), "name"))
                ),
            ));
        }
        if let Some(from) = &c.renamed_from {
            if from == &c.name {
                errors.push(t.error_at(
                    &child(&cpath, "renamedFrom"),
                    format!("column `{}` is renamed from itself", c.name),
                ));
            }
            if let Some(first) = renamed.insert(from.clone(), i) {
                errors.push(t.error_at(
                    &child(&cpath, "renamedFrom"),
                    format!(
                        "two columns are renamed from `{from}` (also {})",
                        t.where_is(&child(&item(path, first), "renamedFrom"))
                    ),
                ));
            }
        }
        check_type(t, c.type_view(), &cpath, errors);
    }
}

fn check_type(
    t: &Located<TableManifest>,
    v: TypeView<'_>,
    path: &str,
    errors: &mut Vec<Diagnostic>,
) {
    let ty_path = child(path, "type");
    let not_here = |what: &str, errors: &mut Vec<Diagnostic>, why: &str| {
        errors.push(t.error_at_key(&child(path, what), format!("`{what}` {why}")));
    };
    match &v.ty.0 {
        TypeExpr::Struct => {
            if v.fields.is_empty() {
                errors.push(t.error_at(&ty_path, "a struct needs `fields`"));
            }
            check_columns(t, v.fields, &child(path, "fields"), errors);
        }
        _ if !v.fields.is_empty() => {
            not_here("fields", errors, "is only allowed with `type: struct`")
        }
        _ => {}
    }
    match &v.ty.0 {
        TypeExpr::List(None) => match v.element {
            Some(e) => check_type(t, e.type_view(), &child(path, "element"), errors),
            None => {
                errors.push(t.error_at(&ty_path, "a list needs `element` (or write `list<T>`)"))
            }
        },
        TypeExpr::List(Some(_)) if v.element.is_some() => not_here(
            "element",
            errors,
            "is given twice: the type already says list<T>; use `type: list` with `element`",
        ),
        _ if !matches!(v.ty.0, TypeExpr::List(_)) && v.element.is_some() => {
            not_here("element", errors, "is only allowed with `type: list`")
        }
        _ => {}
    }
    match &v.ty.0 {
        TypeExpr::Map(None) => {
            for (what, part) in [("key", v.key), ("value", v.value)] {
                match part {
                    Some(p) => check_type(t, p.type_view(), &child(path, what), errors),
                    None => errors.push(t.error_at(
                        &ty_path,
                        format!("a map needs `{what}` (or write `map<K, V>`)"),
                    )),
                }
            }
        }
        TypeExpr::Map(Some(_)) => {
            for (what, part) in [("key", v.key), ("value", v.value)] {
                if part.is_some() {
                    not_here(
                        what,
                        errors,
                        "is given twice: the type already says map<K, V>",
                    );
                }
            }
        }
        _ => {
            for (what, part) in [("key", v.key), ("value", v.value)] {
                if part.is_some() {
                    not_here(what, errors, "is only allowed with `type: map`");
                }
            }
        }
    }
}

/// A column found by dotted path.
pub struct ResolvedColumn {
    pub ty: TypeExpr,
    /// The column and every struct above it are required.
    pub required_path: bool,
}

/// Finds `a.b.c` through struct fields.
pub fn resolve_column(cols: &[Column], dotted: &str) -> Result<ResolvedColumn, String> {
    let mut level = cols;
    let mut required_path = true;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let Some(c) = level.iter().find(|c| c.name == *part) else {
            let known: Vec<&str> = level.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "column `{dotted}` does not exist (known here: {})",
                known.join(", ")
            ));
        };
        required_path &= c.required;
        if i + 1 == parts.len() {
            return Ok(ResolvedColumn {
                ty: c.ty.0.clone(),
                required_path,
            });
        }
        if c.ty.0 != TypeExpr::Struct {
            return Err(format!(
                "column `{dotted}`: `{part}` is {}, not a struct",
                c.ty
            ));
        }
        level = &c.fields;
    }
    Err(format!("column `{dotted}` does not exist"))
}

/// Replaces `${env:VAR}` in `s`; an unset variable is an error naming it.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{env:` in `{s}`"))?;
        let var = &after[..end];
        let value =
            std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve_lakehouse(
    dir: &Path,
    lakehouse: Option<&Located<LakehouseManifest>>,
) -> Result<LakeConfig, Diagnostics> {
    let abs_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let Some(l) = lakehouse else {
        // Beside the manifest directory (the project root for `project/manifests`),
        // like `.terraform/`: never inside the folder people commit manifests to.
        let root = abs_dir.parent().unwrap_or(&abs_dir).join(".lakectl");
        return Ok(LakeConfig {
            catalog_kind: CatalogKind::Sql,
            catalog_uri: format!("sqlite:{}", root.join("catalog.db").display()),
            catalog_name: default_catalog_name(),
            catalog_props: BTreeMap::new(),
            warehouse: root.join("warehouse").display().to_string(),
            storage: BTreeMap::new(),
            protect: false,
            engine: None,
        });
    };
    let base = l
        .file
        .parent()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
        .unwrap_or(abs_dir);
    let mut errors = Vec::new();
    // `None`: the value names an unset variable (reported here, and checked no further).
    let mut expand = |path: &str, s: &str| -> Option<String> {
        expand_env(s)
            .map_err(|e| errors.push(l.error_at(path, e)))
            .ok()
    };
    let spec = &l.value.spec;
    let uri = expand("spec.catalog.uri", &spec.catalog.uri);
    let warehouse = expand("spec.warehouse", &spec.warehouse).unwrap_or_default();
    let storage: BTreeMap<String, String> = spec
        .storage
        .iter()
        .map(|(k, v)| {
            let v = expand(&child("spec.storage", k), v).unwrap_or_default();
            (k.clone(), v)
        })
        .collect();
    let catalog_props: BTreeMap<String, String> = spec
        .catalog
        .properties
        .iter()
        .map(|(k, v)| {
            let v = expand(&child("spec.catalog.properties", k), v).unwrap_or_default();
            (k.clone(), v)
        })
        .collect();
    let engine = match spec.engine.kind {
        EngineType::Local => None,
        EngineType::Spark => {
            let e = &spec.engine;
            let conf = e
                .conf
                .iter()
                .map(|(k, v)| {
                    let v = expand(&child("spec.engine.conf", k), v).unwrap_or_default();
                    (k.clone(), v)
                })
                .collect();
            let jars = e
                .jars
                .iter()
                .enumerate()
                .map(|(i, j)| expand(&format!("spec.engine.jars[{i}]"), j).unwrap_or_default())
                .collect();
            let submit = e
                .submit
                .as_ref()
                .map(|s| expand("spec.engine.submit", s).unwrap_or_default());
            Some(crate::engine::spark::SparkConfig {
                master: e.master.clone().unwrap_or_else(|| "local[*]".into()),
                submit,
                conf,
                jars,
                min_bytes: e
                    .min_bytes
                    .unwrap_or(crate::engine::spark::DEFAULT_MIN_BYTES),
            })
        }
    };
    if spec.engine.kind == EngineType::Local && spec.engine != EngineSpec::default() {
        errors.push(l.error_at(
            "spec.engine",
            "master, submit, conf, jars and minBytes are for `type: spark`".to_string(),
        ));
    }
    let catalog_uri = match (spec.catalog.kind, uri) {
        (_, None) => String::new(),
        (CatalogType::Sql, Some(uri)) => {
            let path = uri
                .strip_prefix("sqlite://")
                .or_else(|| uri.strip_prefix("sqlite:"));
            match path {
                Some(p) => format!("sqlite:{}", base.join(p).display()),
                None => {
                    errors.push(l.error_at(
                        "spec.catalog.uri",
                        format!(
                            "SQL catalog uri `{uri}` must start with `sqlite:` (a SQLite file)"
                        ),
                    ));
                    String::new()
                }
            }
        }
        (CatalogType::Rest, Some(uri)) => {
            if !(uri.starts_with("http://") || uri.starts_with("https://")) {
                errors.push(l.error_at(
                    "spec.catalog.uri",
                    format!("REST catalog uri `{uri}` must be an http:// or https:// URL"),
                ));
            }
            uri
        }
    };
    let warehouse = if warehouse.contains("://") {
        warehouse
    } else {
        base.join(&warehouse).display().to_string()
    };
    if errors.is_empty() {
        Ok(LakeConfig {
            catalog_kind: match spec.catalog.kind {
                CatalogType::Sql => CatalogKind::Sql,
                CatalogType::Rest => CatalogKind::Rest,
            },
            catalog_uri,
            catalog_name: spec.catalog.name.clone(),
            catalog_props,
            warehouse,
            storage,
            protect: spec.protect,
            engine,
        })
    } else {
        Err(Diagnostics(errors))
    }
}

/// The JSON Schema of manifest documents, generated from the Rust types.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(AnyManifest);
    serde_json::to_value(schema).unwrap_or_default()
}
