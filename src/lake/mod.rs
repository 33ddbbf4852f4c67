//! The lakehouse: catalog + storage, observing tables, the ledger, and **the one commit
//! path**. Knows nothing about manifests.
//!
//! # The commit path
//! [`Lake::commit`] is the only function that changes an existing table's metadata
//! (and [`Lake::create_table`] the only one that registers a new table). It has the
//! semantics of an Iceberg REST catalog's `POST /tables/{t}` (CommitTableRequest):
//! 1. read the catalog row and the current metadata file (fresh, not cached);
//! 2. check every [`TableRequirement`] against it; a failed one is a
//!    [`CommitError::Conflict`] and nothing is written;
//! 3. apply the [`TableUpdate`]s with `TableMetadataBuilder` and write the new metadata
//!    file (`<n+1>-<uuid>.metadata.json`), invisible until step 4;
//! 4. compare-and-swap the catalog row:
//!    `UPDATE iceberg_tables SET metadata_location = new WHERE ... AND metadata_location = old`.
//!    Zero rows updated means another writer committed in between: a `Conflict`, and
//!    the file written in 3 is an orphan, never referenced.
//!
//! A crash at any point leaves the row pointing at the old or the new metadata file,
//! never between. Callers retry a `Conflict` on fresh state ([`retry_on_conflict`]).

pub mod auth;
pub mod catalog;
pub mod history;
pub mod ledger;
pub mod rest;
pub mod snapshot;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use iceberg::io::FileIO;
use iceberg::spec::TableMetadata;
use iceberg::{NamespaceIdent, TableIdent, TableRequirement, TableUpdate};

pub use catalog::SqlCatalog;
pub use ledger::Annotation;

/// Resolved lakehouse configuration (no `${env:…}` left, absolute paths).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LakeConfig {
    pub catalog_kind: CatalogKind,
    /// `sqlite:/abs/path.db` or an http(s) URL.
    pub catalog_uri: String,
    pub catalog_name: String,
    #[serde(skip)]
    pub catalog_props: BTreeMap<String, String>,
    /// Absolute directory, or a `file://` / `s3://` URI.
    pub warehouse: String,
    #[serde(skip)]
    pub storage: BTreeMap<String, String>,
    /// The Lakehouse document's `protect`: every table is protected.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub protect: bool,
    /// `spec.engine` with `type: spark`: the data work of large changes runs there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<crate::engine::spark::SparkConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    Sql,
    Rest,
}

/// Errors of the lake layer.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    #[error("catalog database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{0}")]
    Unsupported(String),
    #[error("table {0} does not exist")]
    NoSuchTable(String),
}

/// Why a commit did not land.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another writer changed the table first (or a requirement no longer holds).
    /// Nothing visible was written; retry on fresh state.
    #[error("commit conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Failed(#[from] LakeError),
}

impl From<iceberg::Error> for CommitError {
    fn from(e: iceberg::Error) -> Self {
        CommitError::Failed(LakeError::Iceberg(e))
    }
}

impl From<sqlx::Error> for CommitError {
    fn from(e: sqlx::Error) -> Self {
        CommitError::Failed(LakeError::Sql(e))
    }
}

/// A table as the catalog has it now.
#[derive(Debug, Clone)]
pub struct TableState {
    pub ident: TableIdent,
    pub metadata: TableMetadata,
    pub metadata_location: String,
}

/// A table's current metadata location, as [`Lake::table_locations`] lists it.
pub struct TableLocation {
    pub ident: TableIdent,
    pub location: String,
    /// The table itself when the catalog had to load it to tell its location (REST):
    /// a caller that needs it does not load it again.
    pub loaded: Option<TableState>,
}

/// The catalog behind the commit path.
enum Backend {
    Sql(SqlCatalog),
    Rest(Box<rest::RestClient>),
}

/// An open lakehouse.
pub struct Lake {
    pub config: LakeConfig,
    backend: Backend,
    file_io: FileIO,
    /// Ledger files read so far, by path (they never change once written).
    ledger_files: std::sync::Mutex<HashMap<String, Arc<ledger::LedgerFile>>>,
    ledger_segments: std::sync::Mutex<HashMap<String, Arc<ledger::Archive>>>,
}

impl Lake {
    /// Opens the lakehouse, creating the catalog database and warehouse if missing.
    pub async fn open(config: LakeConfig) -> Result<Lake, LakeError> {
        Self::open_inner(config, true)
            .await
            .map(|l| l.expect("created"))
    }

    /// Opens the lakehouse only if its catalog exists (plan must not create it).
    pub async fn open_existing(config: LakeConfig) -> Result<Option<Lake>, LakeError> {
        Self::open_inner(config, false).await
    }

    async fn open_inner(config: LakeConfig, create: bool) -> Result<Option<Lake>, LakeError> {
        let file_io = file_io_for(&config)?;
        if config.catalog_kind == CatalogKind::Rest {
            let client =
                rest::RestClient::connect(&config.catalog_uri, &config.catalog_props).await?;
            return Ok(Some(Lake {
                config,
                backend: Backend::Rest(Box::new(client)),
                file_io,
                ledger_files: Default::default(),
                ledger_segments: Default::default(),
            }));
        }
        let Some(catalog) =
            SqlCatalog::connect(&config.catalog_uri, &config.catalog_name, create).await?
        else {
            return Ok(None);
        };
        if create && !config.warehouse.contains("://") {
            std::fs::create_dir_all(&config.warehouse).map_err(|e| {
                LakeError::Unsupported(format!(
                    "cannot create warehouse directory {}: {e}",
                    config.warehouse
                ))
            })?;
        }
        Ok(Some(Lake {
            config,
            backend: Backend::Sql(catalog),
            file_io,
            ledger_files: Default::default(),
            ledger_segments: Default::default(),
        }))
    }

    pub fn file_io(&self) -> &FileIO {
        &self.file_io
    }

    /// The SQL catalog, for operations only `lakectl serve` (over a SQL catalog) does.
    fn sql(&self) -> Result<&SqlCatalog, LakeError> {
        match &self.backend {
            Backend::Sql(c) => Ok(c),
            Backend::Rest(_) => Err(LakeError::Unsupported(
                "this operation needs lakectl's own (SQL) catalog, not a REST catalog".into(),
            )),
        }
    }

    pub async fn namespace_exists(&self, ns: &NamespaceIdent) -> Result<bool, LakeError> {
        match &self.backend {
            Backend::Sql(c) => Ok(c.namespace_exists(&ns.join(".")).await?),
            Backend::Rest(c) => c.namespace_exists(ns).await,
        }
    }

    pub async fn create_namespace(&self, ns: &NamespaceIdent) -> Result<(), LakeError> {
        match &self.backend {
            Backend::Sql(c) => Ok(c.create_namespace(&ns.join(".")).await?),
            Backend::Rest(c) => c.create_namespace(ns).await,
        }
    }

    pub async fn list_namespaces(&self) -> Result<Vec<NamespaceIdent>, LakeError> {
        if let Backend::Rest(c) = &self.backend {
            return c.list_namespaces().await;
        }
        Ok(self
            .sql()?
            .list_namespaces()
            .await?
            .into_iter()
            .filter_map(|n| NamespaceIdent::from_strs(n.split('.')).ok())
            .collect())
    }

    pub async fn namespace_properties(
        &self,
        ns: &NamespaceIdent,
    ) -> Result<Vec<(String, String)>, LakeError> {
        Ok(self.sql()?.namespace_properties(&ns.join(".")).await?)
    }

    pub async fn set_namespace_properties(
        &self,
        ns: &NamespaceIdent,
        props: &[(String, String)],
    ) -> Result<(), LakeError> {
        Ok(self
            .sql()?
            .set_namespace_properties(&ns.join("."), props)
            .await?)
    }

    /// Drops an empty namespace; `false` when it still has tables.
    pub async fn drop_namespace(&self, ns: &NamespaceIdent) -> Result<bool, LakeError> {
        Ok(self.sql()?.drop_namespace(&ns.join(".")).await?)
    }

    /// Unregisters a table (its files are left in place); `false` when absent.
    pub async fn drop_table(&self, ident: &TableIdent) -> Result<bool, LakeError> {
        Ok(self
            .sql()?
            .delete_table(&ident.namespace().join("."), ident.name())
            .await?)
    }

    /// Renames a table; `false` when the source is missing or the target exists.
    pub async fn rename_table(
        &self,
        from: &TableIdent,
        to: &TableIdent,
    ) -> Result<bool, LakeError> {
        let (fns, tns) = (from.namespace().join("."), to.namespace().join("."));
        Ok(self
            .sql()?
            .rename_table((&fns, from.name()), (&tns, to.name()))
            .await?)
    }

    pub async fn list_tables(&self) -> Result<Vec<TableIdent>, LakeError> {
        let catalog = match &self.backend {
            Backend::Sql(c) => c,
            Backend::Rest(c) => return c.list_tables().await,
        };
        let rows = catalog.list_tables().await?;
        Ok(rows
            .into_iter()
            .filter_map(|(ns, name)| {
                NamespaceIdent::from_strs(ns.split('.'))
                    .ok()
                    .map(|n| TableIdent::new(n, name))
            })
            .collect())
    }

    /// Every table with its current metadata location: one query on the SQL catalog
    /// (a REST catalog loads each table).
    pub async fn table_locations(&self) -> Result<Vec<TableLocation>, LakeError> {
        let mut out = Vec::new();
        match &self.backend {
            Backend::Sql(c) => {
                for (ns, name, location) in c.table_locations().await? {
                    if let Ok(n) = NamespaceIdent::from_strs(ns.split('.')) {
                        out.push(TableLocation {
                            ident: TableIdent::new(n, name),
                            location,
                            loaded: None,
                        });
                    }
                }
            }
            Backend::Rest(c) => {
                for ident in c.list_tables().await? {
                    if let Some((location, metadata)) = c.load_table(&ident).await? {
                        out.push(TableLocation {
                            ident: ident.clone(),
                            location: location.clone(),
                            loaded: Some(TableState {
                                ident,
                                metadata,
                                metadata_location: location,
                            }),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Default location of a new table: `<warehouse>/<ns levels>/<name>`.
    pub fn default_location(&self, ident: &TableIdent) -> String {
        format!(
            "{}/{}/{}",
            self.config.warehouse.trim_end_matches('/'),
            ident.namespace().join("/"),
            ident.name()
        )
    }

    /// Loads a table that must exist ([`LakeError::NoSuchTable`] otherwise).
    pub async fn load_existing(&self, ident: &TableIdent) -> Result<TableState, LakeError> {
        self.load_table(ident)
            .await?
            .ok_or_else(|| LakeError::NoSuchTable(ident.to_string()))
    }

    /// Loads a table as branch `branch` sees it ([`on_branch`]).
    pub async fn load_on(&self, ident: &TableIdent, branch: &str) -> Result<TableState, LakeError> {
        on_branch(self.load_existing(ident).await?, branch)
    }

    /// Loads a table, or `None` when the catalog has no such table.
    pub async fn load_table(&self, ident: &TableIdent) -> Result<Option<TableState>, LakeError> {
        let catalog = match &self.backend {
            Backend::Sql(c) => c,
            Backend::Rest(c) => {
                return Ok(c
                    .load_table(ident)
                    .await?
                    .map(|(location, metadata)| TableState {
                        ident: ident.clone(),
                        metadata,
                        metadata_location: location,
                    }))
            }
        };
        let Some(location) = catalog
            .metadata_location(&ident.namespace().join("."), ident.name())
            .await?
        else {
            return Ok(None);
        };
        let metadata = TableMetadata::read_from(&self.file_io, &location).await?;
        Ok(Some(TableState {
            ident: ident.clone(),
            metadata,
            metadata_location: location,
        }))
    }

    /// Registers a new table whose first metadata is `metadata`: writes
    /// `00000-<uuid>.metadata.json` and inserts the catalog row. A table that appeared
    /// meanwhile is a `Conflict` (the file written is an orphan).
    pub async fn create_table(
        &self,
        ident: &TableIdent,
        metadata: TableMetadata,
    ) -> Result<TableState, CommitError> {
        let catalog = match &self.backend {
            Backend::Sql(c) => c,
            Backend::Rest(c) => return self.create_table_rest(c, ident, metadata).await,
        };
        let location = iceberg::MetadataLocation::new_with_metadata(metadata.location(), &metadata);
        metadata.write_to(&self.file_io, &location).await?;
        let location = location.to_string();
        let inserted = catalog
            .insert_table(&ident.namespace().join("."), ident.name(), &location)
            .await?;
        if !inserted {
            return Err(CommitError::Conflict(format!(
                "table {ident} was created by another writer"
            )));
        }
        Ok(TableState {
            ident: ident.clone(),
            metadata,
            metadata_location: location,
        })
    }

    /// A REST create: the server creates the table from the metadata's schema, spec,
    /// sort order and properties (at the metadata's location only when it is not the
    /// default one lakectl derived: otherwise the server places it); then the first
    /// snapshot (lakectl's annotated create) is made again on the table the server
    /// made and committed, requiring that table.
    async fn create_table_rest(
        &self,
        client: &rest::RestClient,
        ident: &TableIdent,
        metadata: TableMetadata,
    ) -> Result<TableState, CommitError> {
        let default = self.default_location(ident);
        let location = (metadata.location() != default).then(|| metadata.location());
        let (location, created) = client.create_table(ident, &metadata, location).await?;
        let Some(first) = metadata.current_snapshot() else {
            return Ok(TableState {
                ident: ident.clone(),
                metadata: created,
                metadata_location: location,
            });
        };
        let mut props = first.summary().additional_properties.clone();
        props.retain(|k, _| k.starts_with("lakectl."));
        let snapshot =
            snapshot::append_snapshot(&self.file_io, &created, Vec::new(), props).await?;
        let (branch, reference) = snapshot::main_branch(snapshot.snapshot_id());
        let requirements = vec![
            TableRequirement::UuidMatch {
                uuid: created.uuid(),
            },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: branch.clone(),
                snapshot_id: None,
            },
        ];
        let updates = vec![
            TableUpdate::AddSnapshot { snapshot },
            TableUpdate::SetSnapshotRef {
                ref_name: branch,
                reference,
            },
        ];
        let (location, metadata) = client.commit(ident, &requirements, &updates).await?;
        Ok(TableState {
            ident: ident.clone(),
            metadata,
            metadata_location: location,
        })
    }

    /// The ledger of the current state of a table (see [`ledger`]).
    pub async fn ledger(&self, md: &TableMetadata) -> Result<ledger::Ledger, LakeError> {
        self.ledger_at(md, md.current_snapshot_id()).await
    }

    /// The ledger as of snapshot `at` of `md`.
    pub async fn ledger_at(
        &self,
        md: &TableMetadata,
        at: Option<i64>,
    ) -> Result<ledger::Ledger, LakeError> {
        let mut sources = ledger::sources_at(md, at);
        let mut chain = Vec::new();
        let mut next = sources.file.clone();
        if sources.from_property {
            // The property names `main`'s newest file; skip those of snapshots off the
            // history of `at` (a rollback target older than them).
            while let Some(path) = next.clone() {
                let file = self.ledger_file(&path).await?;
                if sources.belongs(md, file.snapshot_id) {
                    break;
                }
                next = file.parent.clone();
            }
            sources.file = next.clone();
        }
        while let Some(path) = next {
            let file = self.ledger_file(&path).await?;
            next = file.parent.clone();
            chain.push(file);
            if chain.len() > 4 * ledger::CHECKPOINT_DEPTH as usize {
                return Err(LakeError::Unsupported(format!(
                    "ledger file {path}: no checkpoint within {} files",
                    chain.len()
                )));
            }
        }
        chain.reverse();
        let mut segments = Vec::new();
        if let Some(first) = chain.first() {
            for seg in &first.segments {
                segments.push(self.ledger_segment(&seg.path).await?);
            }
        }
        Ok(ledger::assemble(sources, &chain, &segments))
    }

    /// A segment file of the ledger (cached: it never changes).
    pub(crate) async fn ledger_segment(
        &self,
        path: &str,
    ) -> Result<Arc<ledger::Archive>, LakeError> {
        if let Some(a) = self
            .ledger_segments
            .lock()
            .expect("segment cache")
            .get(path)
        {
            return Ok(a.clone());
        }
        let a: Arc<ledger::Archive> = Arc::new(self.read_ledger_json(path, "segment").await?);
        let mut cache = self.ledger_segments.lock().expect("segment cache");
        let held: usize = cache.values().map(|a| a.ingested.len()).sum();
        if held + a.ingested.len() > 2_000_000 {
            cache.clear();
        }
        cache.insert(path.to_string(), a.clone());
        Ok(a)
    }

    /// A checkpoint for snapshot `snapshot_id` (applying `change_id`, ingesting
    /// `ingested`) on top of `before`: `before`'s segments plus one holding what is not
    /// in them, merged into the segments before it while those are at most twice its
    /// size ([`ledger::segments_to_merge`]). Returns the file and the segment files it
    /// wrote.
    async fn checkpoint_file(
        &self,
        base: &TableMetadata,
        before: &ledger::Ledger,
        snapshot_id: i64,
        change_id: &str,
        ingested: &[ledger::IngestedFile],
    ) -> Result<(ledger::LedgerFile, Vec<String>), CommitError> {
        let mut segments = before.segments.clone();
        let mut written = Vec::new();
        let delta = before.delta();
        if delta.records() > 0 {
            let existing: Vec<u64> = segments.iter().map(|s| s.records).collect();
            let n = ledger::segments_to_merge(&existing, delta.records());
            let mut merged = ledger::Ledger0::default();
            for seg in segments.split_off(segments.len() - n) {
                merged.absorb(self.ledger_segment(&seg.path).await?.as_ref());
            }
            merged.absorb(&delta.to_archive());
            let archive = merged.to_archive();
            let path = format!(
                "{}/metadata/lakectl-ledger-segment-{}.stats",
                base.location().trim_end_matches('/'),
                uuid::Uuid::new_v4()
            );
            let json = serde_json::to_vec(&archive)
                .map_err(|e| LakeError::Unsupported(format!("ledger segment: {e}")))?;
            self.file_io.new_output(&path)?.write(json.into()).await?;
            written.push(path.clone());
            let records = (archive.changes.len() + archive.ingested.len()) as u64;
            self.ledger_segments
                .lock()
                .expect("segment cache")
                .insert(path.clone(), Arc::new(archive));
            segments.push(ledger::Segment { path, records });
        }
        let file = ledger::LedgerFile {
            format: 1,
            snapshot_id,
            parent: None,
            depth: 0,
            change_id: change_id.to_string(),
            ingested: ingested.to_vec(),
            base: None,
            segments,
        };
        Ok((file, written))
    }

    /// The files snapshot `s` ingested: from its ledger file, or inline in the summary
    /// (tables written before ledger files).
    pub async fn ingested_by(
        &self,
        s: &iceberg::spec::Snapshot,
    ) -> Result<Vec<ledger::IngestedFile>, LakeError> {
        let props = &s.summary().additional_properties;
        if props.contains_key(ledger::INGESTED) {
            return Ok(ledger::ingested_of(props));
        }
        match props.get(ledger::LEDGER) {
            Some(path) => {
                let file = self.ledger_file(path).await?;
                Ok(if file.snapshot_id == s.snapshot_id() {
                    file.ingested.clone()
                } else {
                    Vec::new()
                })
            }
            None => Ok(Vec::new()),
        }
    }

    /// The history of a table ([`history::history`]) with each ingest's files read
    /// from its ledger file.
    pub async fn history(
        &self,
        md: &TableMetadata,
    ) -> Result<Vec<history::HistoryEntry>, LakeError> {
        let mut entries = history::history(md);
        for e in entries.iter_mut().filter(|e| e.ingested_files.is_empty()) {
            if let Some(s) = md.snapshot_by_id(e.snapshot_id) {
                e.ingested_files = self
                    .ingested_by(s)
                    .await?
                    .into_iter()
                    .map(|f| f.path)
                    .collect();
            }
        }
        Ok(entries)
    }

    /// Reads and parses a ledger file or segment (`what`), naming it in any error.
    async fn read_ledger_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<T, LakeError> {
        let bytes = self.file_io.new_input(path)?.read().await.map_err(|e| {
            LakeError::Unsupported(format!(
                "cannot read ledger {what} {path} (lakectl's record of the files it ingested and the changes it applied; an orphan-file cleanup must leave metadata/lakectl-ledger-* alone): {e}"
            ))
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| LakeError::Unsupported(format!("ledger {what} {path}: {e}")))
    }

    pub(crate) async fn ledger_file(
        &self,
        path: &str,
    ) -> Result<Arc<ledger::LedgerFile>, LakeError> {
        if let Some(f) = self.ledger_files.lock().expect("ledger cache").get(path) {
            return Ok(f.clone());
        }
        let file: Arc<ledger::LedgerFile> = Arc::new(self.read_ledger_json(path, "file").await?);
        self.cache_ledger_file(path, file.clone());
        Ok(file)
    }

    /// Keeps a ledger file for later lookups; the cache is emptied when it holds more
    /// than about a million records (a long-running `watch` writes checkpoints).
    fn cache_ledger_file(&self, path: &str, file: Arc<ledger::LedgerFile>) {
        let mut cache = self.ledger_files.lock().expect("ledger cache");
        let records = |f: &ledger::LedgerFile| {
            1 + f.ingested.len()
                + f.base
                    .as_ref()
                    .map_or(0, |b| b.ingested.len() + b.changes.len())
        };
        let held: usize = cache.values().map(|f| records(f)).sum();
        if held + records(&file) > 1_000_000 {
            cache.clear();
        }
        cache.insert(path.to_string(), file);
    }

    /// Writes a new ledger file for `base` and returns its path.
    async fn write_ledger_file(
        &self,
        base: &TableMetadata,
        file: ledger::LedgerFile,
    ) -> Result<String, CommitError> {
        let path = format!(
            "{}/metadata/lakectl-ledger-{}-{}.stats",
            base.location().trim_end_matches('/'),
            file.snapshot_id,
            uuid::Uuid::new_v4()
        );
        let json = serde_json::to_vec(&file)
            .map_err(|e| LakeError::Unsupported(format!("ledger file: {e}")))?;
        self.file_io.new_output(&path)?.write(json.into()).await?;
        self.cache_ledger_file(&path, Arc::new(file));
        Ok(path)
    }

    /// The ledger part of a commit on `base`: a snapshot lakectl adds with a change id
    /// gets a ledger file (linked to its parent's, a checkpoint every
    /// [`ledger::CHECKPOINT_DEPTH`]) named in its summary; a move of `main` to a
    /// snapshot that exists (a rollback) takes the ledger of that snapshot; either way
    /// the table property `lakectl.ledger` names the file, so an expiry of the
    /// snapshots by any engine leaves it. A held-back change (`lakectl.held-back`) that
    /// lands again is released by the commit that applies it, never before.
    ///
    /// Returns the updates and the ledger files written (to remove if the commit fails).
    async fn record_ledger(
        &self,
        base: &TableMetadata,
        updates: Vec<TableUpdate>,
    ) -> Result<(Vec<TableUpdate>, Vec<String>), CommitError> {
        let mut written = Vec::new();
        use iceberg::spec::{Snapshot, Summary};
        let added: std::collections::HashSet<i64> = updates
            .iter()
            .filter_map(|u| match u {
                TableUpdate::AddSnapshot { snapshot } => Some(snapshot.snapshot_id()),
                _ => None,
            })
            .collect();
        // The table property names the newest ledger file of `main`: a snapshot
        // committed to another branch (an audit or preview branch) leaves it alone.
        let main_head = updates.iter().find_map(|u| match u {
            TableUpdate::SetSnapshotRef {
                ref_name,
                reference,
            } if ref_name == iceberg::spec::MAIN_BRANCH => Some(reference.snapshot_id),
            _ => None,
        });
        // `main` moved to a snapshot it already had (a rollback, a publish).
        let moved_to =
            main_head.filter(|id| !added.contains(id) && base.snapshot_by_id(*id).is_some());
        let mut pointer = None;
        let mut held = ledger::held_back(base);
        let held_before = held.len();
        let mut out = Vec::with_capacity(updates.len() + 2);
        for u in updates {
            let TableUpdate::AddSnapshot { snapshot } = &u else {
                out.push(u);
                continue;
            };
            let props = &snapshot.summary().additional_properties;
            let Some(change_id) = props.get(ledger::CHANGE_ID).cloned() else {
                out.push(u);
                continue;
            };
            let ingested = self.ingested_by(snapshot).await?;
            let to_main = main_head == Some(snapshot.snapshot_id());
            // A held-back change that lands on `main` again is released in this same
            // commit (staged on a branch, it stays held back).
            if to_main {
                held.retain(|h| {
                    h.change_id != change_id
                        && !h
                            .files
                            .iter()
                            .any(|f| ingested.iter().any(|i| &i.path == f))
                });
            }
            // A lakectl client of this catalog (`serve`) already wrote the snapshot's
            // ledger file: it stands.
            if let Some(path) = props.get(ledger::LEDGER) {
                if to_main {
                    pointer = Some(path.clone());
                }
                out.push(u);
                continue;
            }
            let before = self.ledger_at(base, snapshot.parent_snapshot_id()).await?;
            let file = match ledger::LedgerFile::after(
                &before,
                snapshot.snapshot_id(),
                &change_id,
                &ingested,
            ) {
                Some(f) => f,
                None => {
                    let (f, segs) = self
                        .checkpoint_file(
                            base,
                            &before,
                            snapshot.snapshot_id(),
                            &change_id,
                            &ingested,
                        )
                        .await?;
                    written.extend(segs);
                    f
                }
            };
            let path = self.write_ledger_file(base, file).await?;
            written.push(path.clone());
            let mut summary = props.clone();
            summary.insert(ledger::LEDGER.to_string(), path.clone());
            // The ingested files live in the ledger file only: every metadata.json
            // carries every summary, so a list there would grow with each file.
            summary.remove(ledger::INGESTED);
            // The same snapshot, every field copied, with the ledger file named.
            let b = Snapshot::builder()
                .with_snapshot_id(snapshot.snapshot_id())
                .with_parent_snapshot_id(snapshot.parent_snapshot_id())
                .with_sequence_number(snapshot.sequence_number())
                .with_timestamp_ms(snapshot.timestamp_ms())
                .with_manifest_list(snapshot.manifest_list())
                .with_summary(Summary {
                    operation: snapshot.summary().operation.clone(),
                    additional_properties: summary,
                })
                .schema_id_opt(snapshot.schema_id())
                .with_encryption_key_id(snapshot.encryption_key_id().map(str::to_string));
            let rebuilt = match snapshot.row_range() {
                Some((first, added)) => b.with_row_range(first, added).build(),
                None => b.build(),
            };
            out.push(TableUpdate::AddSnapshot { snapshot: rebuilt });
            if to_main {
                pointer = Some(path);
            }
        }
        if let (None, Some(target)) = (&pointer, moved_to) {
            let at = self.ledger_at(base, Some(target)).await?;
            pointer = Some(match at.file {
                Some((path, _)) => path,
                None => {
                    let (file, segs) = self.checkpoint_file(base, &at, target, "", &[]).await?;
                    written.extend(segs);
                    let path = self.write_ledger_file(base, file).await?;
                    written.push(path.clone());
                    path
                }
            });
        }
        let mut props = HashMap::new();
        if let Some(path) = pointer {
            props.insert(ledger::LEDGER.to_string(), path);
        }
        if held.len() != held_before {
            props.insert(
                ledger::HELD_BACK.to_string(),
                serde_json::to_string(&held).unwrap_or_default(),
            );
        }
        if !props.is_empty() {
            out.push(TableUpdate::SetProperties { updates: props });
        }
        Ok((out, written))
    }

    /// Best effort: ledger files of a commit that did not land are unreferenced.
    async fn remove_unreferenced(&self, files: &[String]) {
        for f in files {
            let _ = self.file_io.delete(f).await;
        }
    }

    /// The one commit path; see the module doc.
    pub async fn commit(
        &self,
        ident: &TableIdent,
        requirements: &[TableRequirement],
        updates: Vec<TableUpdate>,
    ) -> Result<TableState, CommitError> {
        let catalog = match &self.backend {
            Backend::Sql(c) => c,
            Backend::Rest(c) => {
                let (updates, written) = self.rest_updates(ident, updates).await?;
                let (location, metadata) = match c.commit(ident, requirements, &updates).await {
                    Ok(done) => done,
                    Err(e) => {
                        if matches!(e, CommitError::Conflict(_)) {
                            self.remove_unreferenced(&written).await;
                        }
                        return Err(e);
                    }
                };
                return Ok(TableState {
                    ident: ident.clone(),
                    metadata,
                    metadata_location: location,
                });
            }
        };
        let p = self.prepare(ident, requirements, updates).await?;
        let swapped = catalog
            .compare_and_swap(
                &ident.namespace().join("."),
                ident.name(),
                &p.old_location,
                &p.state.metadata_location,
            )
            .await?;
        if !swapped {
            self.discard(&p).await;
            return Err(CommitError::Conflict(format!(
                "{ident} changed while committing (metadata is no longer {})",
                p.old_location
            )));
        }
        Ok(p.state)
    }

    /// A REST commit's updates with the ledger recorded (the server applies them; the
    /// stale-sequence conflict is found here, as the SQL path does in [`Self::prepare`]),
    /// and the ledger files written.
    async fn rest_updates(
        &self,
        ident: &TableIdent,
        updates: Vec<TableUpdate>,
    ) -> Result<(Vec<TableUpdate>, Vec<String>), CommitError> {
        match self.load_table(ident).await? {
            Some(current) => {
                stale_sequence(&current.metadata, &updates)?;
                self.record_ledger(&current.metadata, updates).await
            }
            None => Ok((updates, Vec::new())),
        }
    }

    /// Steps 1–3 of the SQL catalog's commit: the new metadata file, written.
    async fn prepare(
        &self,
        ident: &TableIdent,
        requirements: &[TableRequirement],
        updates: Vec<TableUpdate>,
    ) -> Result<Prepared, CommitError> {
        let current = self.load_existing(ident).await?;
        for r in requirements {
            r.check(Some(&current.metadata))
                .map_err(|e| CommitError::Conflict(e.message().to_string()))?;
        }
        stale_sequence(&current.metadata, &updates)?;
        let (updates, written) = self.record_ledger(&current.metadata, updates).await?;
        let mut builder = current
            .metadata
            .clone()
            .into_builder(Some(current.metadata_location.clone()));
        for u in updates {
            builder = u.apply(builder)?;
        }
        let metadata = builder.build()?.metadata;
        let old: iceberg::MetadataLocation = current.metadata_location.parse()?;
        let new_location = old.with_next_version().with_new_metadata(&metadata);
        metadata.write_to(&self.file_io, &new_location).await?;
        Ok(Prepared {
            old_location: current.metadata_location,
            written,
            state: TableState {
                ident: ident.clone(),
                metadata,
                metadata_location: new_location.to_string(),
            },
        })
    }

    /// Best effort: the files of a commit that did not land are unreferenced; a
    /// failure to delete leaves orphans.
    async fn discard(&self, p: &Prepared) {
        let _ = self.file_io.delete(&p.state.metadata_location).await;
        self.remove_unreferenced(&p.written).await;
    }

    /// Whether [`Lake::commit_all`] can commit across tables here: always with the SQL
    /// catalog; over REST when the server lists `POST /v1/{prefix}/transactions/commit`.
    pub fn multi_table_commits(&self) -> Result<(), String> {
        match &self.backend {
            Backend::Sql(_) => Ok(()),
            Backend::Rest(c) if c.transactions => Ok(()),
            Backend::Rest(_) => Err(format!(
                "the REST catalog at {} does not list `{}` in /v1/config's endpoints, so commits to several tables cannot be one transaction",
                self.config.catalog_uri,
                rest::TRANSACTIONS_ENDPOINT
            )),
        }
    }

    /// Commits to several tables as one catalog transaction: every commit lands or
    /// none does. SQL catalog: each new metadata file is written, then one SQLite
    /// transaction holds every compare-and-swap. REST: `POST /transactions/commit`. A
    /// requirement that fails, or a table that moved, is a `Conflict` for all.
    pub async fn commit_all(
        &self,
        commits: Vec<(TableIdent, Vec<TableRequirement>, Vec<TableUpdate>)>,
    ) -> Result<(), CommitError> {
        self.multi_table_commits()
            .map_err(|e| CommitError::Failed(LakeError::Unsupported(e)))?;
        let catalog = match &self.backend {
            Backend::Sql(c) => c,
            Backend::Rest(c) => {
                let mut prepared = Vec::with_capacity(commits.len());
                let mut written = Vec::new();
                for (ident, requirements, updates) in commits {
                    let (updates, w) = self.rest_updates(&ident, updates).await?;
                    written.extend(w);
                    prepared.push((ident, requirements, updates));
                }
                let done = c.commit_transaction(&prepared).await;
                if matches!(done, Err(CommitError::Conflict(_))) {
                    self.remove_unreferenced(&written).await;
                }
                return done;
            }
        };
        let mut prepared: Vec<Prepared> = Vec::with_capacity(commits.len());
        for (ident, requirements, updates) in commits {
            match self.prepare(&ident, &requirements, updates).await {
                Ok(p) => prepared.push(p),
                Err(e) => {
                    for p in &prepared {
                        self.discard(p).await;
                    }
                    return Err(e);
                }
            }
        }
        let swaps: Vec<(String, String, String, String)> = prepared
            .iter()
            .map(|p| {
                (
                    p.state.ident.namespace().join("."),
                    p.state.ident.name().to_string(),
                    p.old_location.clone(),
                    p.state.metadata_location.clone(),
                )
            })
            .collect();
        if !catalog.compare_and_swap_all(&swaps).await? {
            for p in &prepared {
                self.discard(p).await;
            }
            return Err(CommitError::Conflict(
                "a table changed while committing the transaction; none of it landed".into(),
            ));
        }
        Ok(())
    }
}

/// A snapshot built on metadata whose last sequence number another commit has since
/// taken (a commit to another branch moves it without moving `main`, so no ref
/// requirement catches it) is a `Conflict`: built again on fresh state, it gets the
/// next number. Iceberg requires each new snapshot's number to be above the last.
fn stale_sequence(current: &TableMetadata, updates: &[TableUpdate]) -> Result<(), CommitError> {
    for u in updates {
        if let TableUpdate::AddSnapshot { snapshot } = u {
            if current.format_version() != iceberg::spec::FormatVersion::V1
                && snapshot.sequence_number() <= current.last_sequence_number()
            {
                return Err(CommitError::Conflict(format!(
                    "snapshot {} has sequence number {}, but the table is at {} (another writer committed meanwhile)",
                    snapshot.snapshot_id(),
                    snapshot.sequence_number(),
                    current.last_sequence_number()
                )));
            }
        }
    }
    Ok(())
}

/// A commit's new metadata file, written but not yet swapped in.
struct Prepared {
    old_location: String,
    written: Vec<String>,
    state: TableState,
}

/// The refs of a table (branches and tags).
pub fn refs(md: &TableMetadata) -> HashMap<String, iceberg::spec::SnapshotReference> {
    serde_json::to_value(md)
        .ok()
        .and_then(|v| v.get("refs").cloned())
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

/// Local warehouses use iceberg's local file IO; `s3://` ones OpenDAL's S3 storage with
/// the lakehouse's `storage` options (`s3.endpoint`, `s3.region`, keys,
/// `s3.path-style-access`, which defaults to true when an endpoint is set: MinIO).
fn file_io_for(config: &LakeConfig) -> Result<FileIO, LakeError> {
    let w = config.warehouse.as_str();
    if w.starts_with("s3://") || w.starts_with("s3a://") {
        let mut props: Vec<(String, String)> = config
            .storage
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if config.storage.contains_key("s3.endpoint")
            && !config.storage.contains_key("s3.path-style-access")
        {
            props.push(("s3.path-style-access".into(), "true".into()));
        }
        let factory = iceberg_storage_opendal::OpenDalResolvingStorageFactory::new();
        return Ok(
            iceberg::io::FileIOBuilder::new(std::sync::Arc::new(factory))
                .with_props(props)
                .build(),
        );
    }
    if w.contains("://") && !w.starts_with("file://") {
        return Err(LakeError::Unsupported(format!(
            "warehouse `{w}`: only local directories, file:// and s3:// are supported"
        )));
    }
    Ok(FileIO::new_with_fs())
}

/// Requirements that pin everything a change read from `md`: the table's uuid, the
/// `main` snapshot, the current schema, spec and sort order, and the last assigned
/// column and partition ids. Any concurrent commit makes one of them fail.
pub fn pin_state(md: &TableMetadata) -> Vec<TableRequirement> {
    vec![
        TableRequirement::UuidMatch { uuid: md.uuid() },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: iceberg::spec::MAIN_BRANCH.to_string(),
            snapshot_id: md.current_snapshot_id(),
        },
        TableRequirement::CurrentSchemaIdMatch {
            current_schema_id: md.current_schema_id(),
        },
        TableRequirement::LastAssignedFieldIdMatch {
            last_assigned_field_id: md.last_column_id(),
        },
        TableRequirement::DefaultSpecIdMatch {
            default_spec_id: md.default_partition_spec_id(),
        },
        TableRequirement::LastAssignedPartitionIdMatch {
            last_assigned_partition_id: md.last_partition_id(),
        },
        TableRequirement::DefaultSortOrderIdMatch {
            default_sort_order_id: md.default_sort_order_id(),
        },
    ]
}

/// Branches of audited applies are named `lakectl/audit/<apply id>`; expiry removes
/// them once their head is older than its age.
pub const AUDIT_PREFIX: &str = "lakectl/audit/";

/// Table property `lakectl.branch-base.<branch>`: the `main` snapshot a branch lakectl
/// made was made from (empty: `main` had none). A publish fast-forwards `main` only
/// while `main` is still there; otherwise the branch's changes are replayed.
pub const BRANCH_BASE: &str = "lakectl.branch-base.";

/// The recorded base of `branch` (`None`: not recorded, the branch was not made by
/// lakectl; `Some(None)`: made when `main` had no snapshot).
pub fn branch_base(md: &TableMetadata, branch: &str) -> Option<Option<i64>> {
    md.properties()
        .get(&format!("{BRANCH_BASE}{branch}"))
        .map(|v| v.parse().ok())
}

/// The update recording `base` as `branch`'s base.
pub fn set_branch_base(branch: &str, base: Option<i64>) -> TableUpdate {
    TableUpdate::SetProperties {
        updates: HashMap::from([(
            format!("{BRANCH_BASE}{branch}"),
            base.map(|b| b.to_string()).unwrap_or_default(),
        )]),
    }
}

/// A table as branch `branch` sees it: in memory only (never written), `main` is moved
/// to the branch's head, so a data change reads, and builds its snapshot on, the
/// branch exactly as it does on `main`. A branch the table does not have yet reads as
/// `main` (it is created from `main` by the first commit to it: [`pin_on`]).
pub fn on_branch(state: TableState, branch: &str) -> Result<TableState, LakeError> {
    if branch == iceberg::spec::MAIN_BRANCH {
        return Ok(state);
    }
    let Some(head) = refs(&state.metadata).remove(branch) else {
        return Ok(state);
    };
    if !head.is_branch() {
        return Err(LakeError::Unsupported(format!(
            "{}: `{branch}` is a tag, not a branch",
            state.ident
        )));
    }
    let (main, reference) = snapshot::main_branch(head.snapshot_id);
    let metadata = state
        .metadata
        .into_builder(None)
        .set_ref(&main, reference)?
        .build()?
        .metadata;
    Ok(TableState { metadata, ..state })
}

/// [`pin_state`] for a commit to `branch` of the view `md` ([`on_branch`]): the branch
/// must still be at the view's head, or still missing when the view is `main`'s; every
/// other pin as `pin_state`.
pub fn pin_on(md: &TableMetadata, branch: &str) -> Vec<TableRequirement> {
    let mut pins = pin_state(md);
    if branch != iceberg::spec::MAIN_BRANCH {
        let head = md.snapshot_for_ref(branch).map(|s| s.snapshot_id());
        for p in pins.iter_mut() {
            if let TableRequirement::RefSnapshotIdMatch { r#ref, snapshot_id } = p {
                *r#ref = branch.to_string();
                *snapshot_id = head;
            }
        }
    }
    pins
}

/// Whether `ancestor` is `head` or one of its ancestors in `md`.
pub fn is_ancestor(md: &TableMetadata, ancestor: Option<i64>, head: i64) -> bool {
    let Some(ancestor) = ancestor else {
        return true;
    };
    let mut next = Some(head);
    while let Some(id) = next {
        if id == ancestor {
            return true;
        }
        next = md.snapshot_by_id(id).and_then(|s| s.parent_snapshot_id());
    }
    false
}

/// Runs `attempt` until it does not return a `Conflict`, with exponential backoff and
/// jitter (50 ms doubling, at most `max_attempts`). Each attempt must re-read the table:
/// a retry is a rebase on fresh state, never a blind overwrite.
pub async fn retry_on_conflict<T, F, Fut>(
    max_attempts: u32,
    mut attempt: F,
) -> Result<T, CommitError>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<T, CommitError>>,
{
    let mut n = 0;
    loop {
        match attempt(n).await {
            Err(CommitError::Conflict(why)) if n + 1 < max_attempts => {
                let base = 50u64 << n.min(6);
                let jitter = (uuid::Uuid::new_v4().as_u128() % (base as u128 + 1)) as u64;
                tracing::info!(
                    "commit conflict (attempt {}): {why}; retrying on fresh state",
                    n + 1
                );
                tokio::time::sleep(Duration::from_millis(base + jitter)).await;
                n += 1;
            }
            other => return other,
        }
    }
}
