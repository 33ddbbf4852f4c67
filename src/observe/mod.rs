//! Observing the actual state (the `observe` layer): the declared tables as the catalog
//! has them, their ledgers, the live files of tables with mutations or maintenance,
//! each source's files against the ledger, and orphan files. Reads only; decides
//! nothing: `plan::diff` gets the [`Actual`] this builds.

use std::collections::HashMap;

use crate::ingest::files::{self, FileState};
use crate::ingest::SourceFile;
use crate::lake::{ledger, Lake, LakeConfig, LakeError, TableState};
use crate::manifest::types::SourceSpec;
use crate::manifest::{namespace_ident, table_ident, ManifestSet};

/// What the catalog has now for the declared tables.
#[derive(Default)]
pub struct Actual {
    pub namespaces: HashMap<String, bool>,
    pub tables: HashMap<String, TableState>,
    /// Per table, per declared source (in order): the files listed now and how each
    /// stands against the ledger, or why they could not be listed.
    pub sources: HashMap<String, Vec<Listed>>,
    /// Per table with declared mutations: the live data files of its current snapshot.
    pub files: HashMap<String, crate::mutate::SnapshotFiles>,
    /// Per table: its ledger (changes applied, files ingested).
    pub ledgers: HashMap<String, ledger::Ledger>,
    /// Per table with `maintenance.orphans`, when looked for ([`observe_orphans`]):
    /// its orphan files, or why they could not be found.
    pub orphans: HashMap<String, Result<Vec<crate::maintain::orphans::ListedFile>, String>>,
}

/// Looks for the orphan files of every table that declares `maintenance.orphans`
/// (lists the table location and walks all its metadata: `plan`, `apply` and
/// `maintain` do it each run, `watch` when the table's maintenance is due).
pub async fn observe_orphans(
    lake: &Lake,
    set: &ManifestSet,
    actual: &mut Actual,
    only: Option<&str>,
) {
    for t in &set.tables {
        let name = t.table_name();
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let Some(o) = set.maintenance_of(t).orphans else {
            continue;
        };
        let Some(state) = actual.tables.get(&name) else {
            continue;
        };
        let found = crate::maintain::orphans::find(
            lake,
            &state.metadata,
            &state.metadata_location,
            o.older_than_hours.unwrap_or(72),
        )
        .await;
        actual.orphans.insert(name, found);
    }
}

/// A source's files as listed now, each with its state against the ledger, or why
/// they could not be listed.
pub type Listed = Result<Vec<(SourceFile, FileState)>, String>;

/// A listing running on the blocking pool.
type Listing = tokio::task::JoinHandle<Result<Vec<SourceFile>, String>>;

/// Reads the actual state of every declared table (`lake` is `None` when the catalog
/// does not exist yet: everything is absent).
pub async fn observe(
    lake: Option<&Lake>,
    set: &ManifestSet,
    config: &LakeConfig,
) -> Result<Actual, LakeError> {
    observe_on(lake, set, config, None).await
}

/// [`observe`] with each table's data as branch `branch` has it (`plan --branch`): a
/// table without the branch reads as `main`, from which the branch would be made.
pub async fn observe_on(
    lake: Option<&Lake>,
    set: &ManifestSet,
    config: &LakeConfig,
    branch: Option<&str>,
) -> Result<Actual, LakeError> {
    let mut actual = Actual::default();
    // Local listings need no ledger (but `listing: lexical`): they run on the blocking
    // pool while the tables and ledgers are read.
    let mut early: HashMap<(usize, usize), Listing> = HashMap::new();
    for (ti, t) in set.tables.iter().enumerate() {
        let base = t
            .file
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf();
        for (si, src) in t.value.spec.sources.iter().enumerate() {
            if is_s3(src) || src.listing == Some(crate::manifest::types::Listing::Lexical) {
                continue;
            }
            let (uri, base) = (src.uri.clone(), base.clone());
            early.insert(
                (ti, si),
                tokio::task::spawn_blocking(move || files::list_local(&uri, &base)),
            );
        }
    }
    if let Some(lake) = lake {
        observe_tables(lake, set, &mut actual, branch).await?;
        for (name, state) in &actual.tables {
            actual
                .ledgers
                .insert(name.clone(), lake.ledger(&state.metadata).await?);
        }
    }
    let no_files = HashMap::new();
    for (ti, t) in set.tables.iter().enumerate() {
        let ledger = actual
            .ledgers
            .get(&t.table_name())
            .map(|l| &l.ingested)
            .unwrap_or(&no_files);
        let base = t.file.parent().unwrap_or(std::path::Path::new("."));
        let mut listed = Vec::new();
        for (si, src) in t.value.spec.sources.iter().enumerate() {
            let files = match early.remove(&(ti, si)) {
                Some(task) => task
                    .await
                    .unwrap_or_else(|e| Err(format!("listing failed: {e}"))),
                None => list_files(src, base, ledger, config).await,
            };
            listed.push(files.and_then(|files| states(files, ledger)));
        }
        actual.sources.insert(t.table_name(), listed);
    }
    Ok(actual)
}

fn is_s3(src: &SourceSpec) -> bool {
    src.uri.starts_with("s3://") || src.uri.starts_with("s3a://")
}

/// Each listed file with its state against the ledger.
fn states(files: Vec<SourceFile>, ledger: &HashMap<String, ledger::IngestedFile>) -> Listed {
    files
        .into_iter()
        .map(|f| {
            let state =
                files::state_of(&f, ledger).map_err(|e| format!("cannot read {}: {e}", f.path))?;
            Ok((f, state))
        })
        .collect()
}

/// The files of a source (those after the greatest ingested key under `listing:
/// lexical`).
async fn list_files(
    src: &SourceSpec,
    base: &std::path::Path,
    ledger: &HashMap<String, ledger::IngestedFile>,
    config: &LakeConfig,
) -> Result<Vec<SourceFile>, String> {
    let lexical = src.listing == Some(crate::manifest::types::Listing::Lexical);
    if is_s3(src) {
        let start_after = if lexical {
            let (bucket, prefix, _) = crate::ingest::s3::split_uri(&src.uri)?;
            let under = format!("s3://{bucket}/{prefix}");
            ledger
                .keys()
                .filter(|k| k.starts_with(&under))
                .max()
                .cloned()
        } else {
            None
        };
        return crate::ingest::s3::list(&src.uri, &config.storage, start_after.as_deref()).await;
    }
    let mut files = files::list_local(&src.uri, base)?;
    if lexical {
        // Listed whole (a directory walk has no start-after), compared from there on.
        let literal = &src.uri[..src.uri.find(['*', '?', '[', '{']).unwrap_or(src.uri.len())];
        if let Some(last) = ledger.keys().filter(|k| k.starts_with(literal)).max() {
            files.retain(|f| &f.path > last);
        }
    }
    Ok(files)
}

async fn observe_tables(
    lake: &Lake,
    set: &ManifestSet,
    actual: &mut Actual,
    branch: Option<&str>,
) -> Result<(), LakeError> {
    for t in &set.tables {
        let ns = namespace_ident(&t.value);
        let key = t.value.metadata.namespace.clone();
        if let std::collections::hash_map::Entry::Vacant(e) = actual.namespaces.entry(key) {
            e.insert(lake.namespace_exists(&ns).await?);
        }
        let ident = table_ident(&t.value);
        let state = match lake.load_table(&ident).await? {
            Some(s) => Some(crate::lake::on_branch(s, branch.unwrap_or("main"))?),
            None => None,
        };
        if let Some(state) = state {
            let m = set.maintenance_of(t);
            let needs_files = m.compaction.is_some() || m.manifests.is_some();
            if !t.value.spec.mutations.is_empty() || needs_files {
                if let Some(snap) = state.metadata.current_snapshot() {
                    let files =
                        crate::mutate::snapshot_files(lake.file_io(), &state.metadata, snap)
                            .await?;
                    actual.files.insert(t.table_name(), files);
                }
            }
            actual.tables.insert(t.table_name(), state);
        }
    }
    Ok(())
}
