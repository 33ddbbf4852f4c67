//! The ledger: what lakectl did to a table, read from and written to snapshot summaries
//! and to ledger files beside the table's metadata.
//!
//! Every snapshot lakectl commits carries:
//! - `lakectl.change`: the kind (`create-table`, `update-table`, ...),
//! - `lakectl.change-id`: a stable id of the change (`table:<ns>.<t>@<hash>`, ...),
//! - `lakectl.manifest`: the manifest file, `lakectl.git-commit` when it is in git,
//! - `lakectl.details`: one line of what changed, `lakectl.version`,
//! - `lakectl.ledger`: the ledger file as of this snapshot (see below).
//!
//! # Ledger files: the ledger survives other engines' expiry
//! Snapshot summaries alone are not durable: Spark's `expire_snapshots`, PyIceberg or a
//! catalog's own maintenance remove the snapshots that recorded which files were
//! ingested and which mutations ran, and lakectl would then ingest or mutate again.
//! So [`Lake::commit`](super::Lake::commit) records every change that carries a
//! change id in a ledger file (`metadata/lakectl-ledger-<snapshot>-<uuid>.stats`, JSON
//! named like an Iceberg statistics file, which table buckets such as S3 Tables accept,
//! written before the commit like a manifest, immutable), referenced from the
//! snapshot's summary and from the table property `lakectl.ledger`, which no expiry
//! removes. A ledger file holds its own change and a link to the previous file; every
//! [`CHECKPOINT_DEPTH`] files one is a checkpoint naming the segment files that hold
//! everything before it (O(log n) of them, see [`LedgerFile::segments`]), so a lookup
//! reads at most that many small files plus the segments (all cached: they never
//! change), and no commit rewrites the whole history.
//!
//! The ledger of a snapshot ([`Lake::ledger_at`](super::Lake::ledger_at)) is: its
//! newest ancestor's ledger file (the chain back to a checkpoint), plus what summaries
//! of ancestors newer than that recorded inline (tables written before ledger files),
//! plus the archive `lakectl expire` kept of expired snapshots. Where no ancestor names
//! a ledger file (another engine expired them), the table property's file stands in
//! for the lost ancestors. A rollback moves the property to
//! the target's ledger, so a later expiry still leaves the right one.

use std::collections::HashMap;

use iceberg::spec::TableMetadata;

pub const CHANGE: &str = "lakectl.change";
pub const CHANGE_ID: &str = "lakectl.change-id";
pub const MANIFEST: &str = "lakectl.manifest";
pub const GIT_COMMIT: &str = "lakectl.git-commit";
pub const DETAILS: &str = "lakectl.details";
pub const VERSION: &str = "lakectl.version";
/// Summary key and table property: the ledger file as of the snapshot / of `main`.
pub const LEDGER: &str = "lakectl.ledger";
/// A ledger file is a checkpoint (holds everything before it) every this many files.
pub const CHECKPOINT_DEPTH: u32 = 16;

/// What the ledger recorded for an ingested file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IngestedFile {
    pub path: String,
    pub size: u64,
    pub mtime_ms: i64,
    /// xxh3-128 of the content, hex.
    pub hash: String,
    pub rows: u64,
}

/// One ledger file: the change of one snapshot, linked to the file before it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LedgerFile {
    /// Format version (1).
    pub format: u32,
    pub snapshot_id: i64,
    /// The ledger file before this one; `None` for a checkpoint.
    #[serde(default)]
    pub parent: Option<String>,
    /// How many files lie between this one and its checkpoint (0: it is one).
    #[serde(default)]
    pub depth: u32,
    /// The change the snapshot applied (empty for a rollback's checkpoint).
    #[serde(default)]
    pub change_id: String,
    /// The files this snapshot ingested.
    #[serde(default)]
    pub ingested: Vec<IngestedFile>,
    /// A checkpoint's content written by earlier versions: every change and ingested
    /// file before this one, inline (read, no longer written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Archive>,
    /// A checkpoint's content: segment files (oldest first) holding every change and
    /// ingested file before this one. Each segment is immutable; a checkpoint adds one
    /// for what came since the previous checkpoint and merges it into the one before
    /// while that is not more than twice its size, so there are O(log n) segments and
    /// every record is rewritten O(log n) times, never the whole history per commit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
}

/// A segment file of the ledger: an [`Archive`] of many records.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    pub path: String,
    /// Changes plus ingested files in it.
    pub records: u64,
}

/// Which segments to merge when a checkpoint adds one of `new_records`: the trailing
/// run of `existing` (records, oldest first) the new segment absorbs while the one
/// before is at most twice the merged size. Returns how many trailing segments merge.
pub fn segments_to_merge(existing: &[u64], new_records: u64) -> usize {
    let mut merged = new_records;
    let mut n = 0;
    for r in existing.iter().rev() {
        if *r <= 2 * merged {
            merged += r;
            n += 1;
        } else {
            break;
        }
    }
    n
}

impl LedgerFile {
    /// The ledger file of snapshot `snapshot_id`, which applied `change_id` (ingesting
    /// `ingested`) on top of the state whose ledger is `before`: a link to `before`'s
    /// file, or `None` when the next file must be a checkpoint (see
    /// [`Lake::checkpoint_file`](super::Lake)).
    pub fn after(
        before: &Ledger,
        snapshot_id: i64,
        change_id: &str,
        ingested: &[IngestedFile],
    ) -> Option<LedgerFile> {
        match &before.file {
            Some((parent, depth)) if depth + 1 < CHECKPOINT_DEPTH => Some(LedgerFile {
                format: 1,
                snapshot_id,
                parent: Some(parent.clone()),
                depth: depth + 1,
                change_id: change_id.to_string(),
                ingested: ingested.to_vec(),
                base: None,
                segments: Vec::new(),
            }),
            _ => None,
        }
    }
}

/// The ledger of one state of a table: the changes applied to it and the files
/// ingested into it.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub changes: std::collections::HashSet<String>,
    /// By ledger path (the newest record wins when a changed file was appended again).
    pub ingested: HashMap<String, IngestedFile>,
    /// The ledger file this state extends, with its depth; `None` when (part of) it
    /// came from summaries and the archive only, so the next file is a checkpoint.
    pub file: Option<(String, u32)>,
    /// The segments of the checkpoint this state's chain starts at.
    pub segments: Vec<Segment>,
    /// Where everything not in those segments comes from (what the next checkpoint
    /// puts in a new one; gathered only then).
    pub delta: Vec<DeltaPart>,
}

/// A part of a ledger not in its checkpoint's segments.
#[derive(Debug, Clone)]
pub enum DeltaPart {
    Archive(std::sync::Arc<Archive>),
    File(std::sync::Arc<LedgerFile>),
    Inline(Option<String>, Vec<IngestedFile>),
}

/// Changes and ingested files, newest record per path (a ledger without its
/// bookkeeping).
#[derive(Debug, Clone, Default)]
pub struct Ledger0 {
    pub changes: std::collections::HashSet<String>,
    pub ingested: HashMap<String, IngestedFile>,
}

impl Ledger0 {
    pub fn add(&mut self, change_id: Option<&String>, files: &[IngestedFile]) {
        if let Some(id) = change_id {
            self.changes.insert(id.clone());
        }
        for f in files {
            self.ingested.insert(f.path.clone(), f.clone());
        }
    }

    pub fn absorb(&mut self, a: &Archive) {
        self.changes.extend(a.changes.iter().cloned());
        self.add(None, &a.ingested);
    }

    pub fn records(&self) -> u64 {
        (self.changes.len() + self.ingested.len()) as u64
    }

    pub fn to_archive(&self) -> Archive {
        let mut changes: Vec<String> = self.changes.iter().cloned().collect();
        changes.sort();
        let mut ingested: Vec<IngestedFile> = self.ingested.values().cloned().collect();
        ingested.sort_by(|a, b| a.path.cmp(&b.path));
        Archive { changes, ingested }
    }
}

impl Ledger {
    fn add(&mut self, change_id: Option<&String>, files: &[IngestedFile]) {
        if let Some(id) = change_id {
            self.changes.insert(id.clone());
        }
        for f in files {
            self.ingested.insert(f.path.clone(), f.clone());
        }
    }

    /// The changes and files of an archive (`lakectl expire`'s, an old checkpoint's or
    /// a segment's).
    fn absorb(&mut self, a: &Archive) {
        self.changes.extend(a.changes.iter().cloned());
        self.add(None, &a.ingested);
    }

    /// What is not in the segments yet, gathered.
    pub fn delta(&self) -> Ledger0 {
        let mut d = Ledger0::default();
        for part in &self.delta {
            match part {
                DeltaPart::Archive(a) => d.absorb(a),
                DeltaPart::File(f) => {
                    if let Some(base) = &f.base {
                        d.absorb(base);
                    }
                    d.add(Some(&f.change_id).filter(|id| !id.is_empty()), &f.ingested);
                }
                DeltaPart::Inline(id, files) => d.add(id.as_ref(), files),
            }
        }
        d
    }
}

impl Ledger {
    /// Everything in it.
    pub fn to_archive(&self) -> Archive {
        Ledger0 {
            changes: self.changes.clone(),
            ingested: self.ingested.clone(),
        }
        .to_archive()
    }
}

/// Where the ledger of a snapshot comes from, read off the metadata alone.
#[derive(Debug, Default)]
pub struct LedgerSources {
    /// The ledger file to read (the chain back to its checkpoint).
    pub file: Option<String>,
    /// Inline records of snapshots newer than `file` (or of all, without one), oldest
    /// first: change id and ingested files.
    pub inline: Vec<(Option<String>, Vec<IngestedFile>)>,
    /// The archive of `lakectl expire`.
    pub archive: Archive,
    /// `file` is the table property's (no ancestor named one): the chain is read from
    /// its newest file that belongs to the snapshot's history (see [`Self::belongs`]).
    pub from_property: bool,
    /// The snapshot and its ancestors still in the metadata.
    pub ancestors: std::collections::HashSet<i64>,
}

impl LedgerSources {
    /// Whether a ledger file of `snapshot_id` is part of the history read: that
    /// snapshot is an ancestor (or the snapshot itself), or no longer in the metadata
    /// (expired). A file of a snapshot off this history (left behind by a rollback)
    /// is not.
    pub fn belongs(&self, md: &TableMetadata, snapshot_id: i64) -> bool {
        self.ancestors.contains(&snapshot_id) || md.snapshot_by_id(snapshot_id).is_none()
    }
}

/// Where the ledger of snapshot `at` of `md` lives (see the module doc).
pub fn sources_at(md: &TableMetadata, at: Option<i64>) -> LedgerSources {
    let mut out = LedgerSources {
        archive: archive(md),
        ..Default::default()
    };
    let mut next = at;
    while let Some(id) = next {
        let Some(s) = md.snapshot_by_id(id) else {
            break; // expired (by lakectl: the archive has it)
        };
        out.ancestors.insert(id);
        let props = &s.summary().additional_properties;
        if let Some(file) = props.get(LEDGER) {
            out.file = Some(file.clone());
            break;
        }
        let files = ingested_of(props);
        if props.contains_key(CHANGE_ID) || !files.is_empty() {
            out.inline.push((props.get(CHANGE_ID).cloned(), files));
        }
        next = s.parent_snapshot_id();
    }
    // No ancestor names a ledger file: they were expired by another engine (which may
    // also clear the parent id of the snapshot it keeps, as PyIceberg does), so the
    // table property's file stands in for them.
    if out.file.is_none() {
        out.file = md.properties().get(LEDGER).cloned();
        out.from_property = out.file.is_some();
    }
    out.inline.reverse();
    out
}

/// The ledger from its sources, the chain of ledger files (oldest first) and the
/// contents of the segments of the chain's checkpoint (oldest first).
pub fn assemble(
    sources: LedgerSources,
    chain: &[std::sync::Arc<LedgerFile>],
    segments: &[std::sync::Arc<Archive>],
) -> Ledger {
    let mut l = Ledger::default();
    for a in segments {
        l.absorb(a);
    }
    if let Some(first) = chain.first() {
        l.segments = first.segments.clone();
    }
    // An archive already in the segments is not carried again.
    l.absorb(&sources.archive);
    if l.segments.is_empty() && !sources.archive.is_empty() {
        l.delta
            .push(DeltaPart::Archive(std::sync::Arc::new(sources.archive)));
    }
    for f in chain {
        if let Some(base) = &f.base {
            l.absorb(base);
        }
        let id = Some(&f.change_id).filter(|id| !id.is_empty());
        l.add(id, &f.ingested);
        l.delta.push(DeltaPart::File(f.clone()));
    }
    if sources.inline.is_empty() {
        l.file = sources.file.zip(chain.last().map(|f| f.depth));
    }
    for (id, files) in sources.inline {
        l.add(id.as_ref(), &files);
        l.delta.push(DeltaPart::Inline(id, files));
    }
    l
}

/// The annotation of one change.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Annotation {
    pub change: String,
    pub change_id: String,
    pub manifest: Option<String>,
    pub git_commit: Option<String>,
    pub details: String,
}

impl Annotation {
    pub fn to_summary(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([
            (CHANGE.to_string(), self.change.clone()),
            (CHANGE_ID.to_string(), self.change_id.clone()),
            (DETAILS.to_string(), self.details.clone()),
            (VERSION.to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ]);
        if let Some(f) = &self.manifest {
            m.insert(MANIFEST.to_string(), f.clone());
        }
        if let Some(c) = &self.git_commit {
            m.insert(GIT_COMMIT.to_string(), c.clone());
        }
        m
    }

    pub fn from_summary(props: &HashMap<String, String>) -> Option<Annotation> {
        Some(Annotation {
            change: props.get(CHANGE)?.clone(),
            change_id: props.get(CHANGE_ID).cloned().unwrap_or_default(),
            manifest: props.get(MANIFEST).cloned(),
            git_commit: props.get(GIT_COMMIT).cloned(),
            details: props.get(DETAILS).cloned().unwrap_or_default(),
        })
    }
}

/// Snapshots from the current one back to the first, newest first (the ancestry of
/// `main`; snapshots on abandoned branches after a rollback are not in it).
pub fn ancestry(metadata: &TableMetadata) -> Vec<iceberg::spec::SnapshotRef> {
    ancestry_from(metadata, metadata.current_snapshot_id())
}

/// Snapshot `from` and its ancestors, newest first (stopping at an expired parent).
pub fn ancestry_from(
    metadata: &TableMetadata,
    from: Option<i64>,
) -> Vec<iceberg::spec::SnapshotRef> {
    let mut out = Vec::new();
    let mut next = from;
    while let Some(id) = next {
        let Some(s) = metadata.snapshot_by_id(id) else {
            break; // expired
        };
        out.push(s.clone());
        next = s.parent_snapshot_id();
    }
    out
}

/// Table property: changes a rollback took out of `main` (JSON array of [`HeldBack`]).
/// `plan` and `apply` do not apply them again until the manifest drops them or
/// `apply --reapply ID` releases one.
pub const HELD_BACK: &str = "lakectl.held-back";

/// A change a rollback took out of `main`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldBack {
    pub change_id: String,
    pub change: String,
    pub details: String,
    /// The snapshot that had applied it.
    pub snapshot_id: i64,
    /// For an ingest: the ledger paths of its files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

pub fn held_back(metadata: &TableMetadata) -> Vec<HeldBack> {
    metadata
        .properties()
        .get(HELD_BACK)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

/// Table property: the ledger of snapshots `lakectl expire` removed (change ids and
/// ingested files), so expiry never makes lakectl apply a change twice.
pub const ARCHIVE: &str = "lakectl.ledger-archive";

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Archive {
    #[serde(default)]
    pub changes: Vec<String>,
    #[serde(default)]
    pub ingested: Vec<IngestedFile>,
}

impl Archive {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.ingested.is_empty()
    }
}

pub fn archive(metadata: &TableMetadata) -> Archive {
    metadata
        .properties()
        .get(ARCHIVE)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

/// Summary key listing the files an ingest snapshot appended (JSON array of
/// [`IngestedFile`]).
pub const INGESTED: &str = "lakectl.ingested";
/// The files a snapshot summary lists as ingested (`lakectl.ingested`), none if absent.
pub fn ingested_of(props: &HashMap<String, String>) -> Vec<IngestedFile> {
    props
        .get(INGESTED)
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default()
}

/// Summary key: the snapshots an engine job (Spark) committed on its scratch branch
/// to produce this snapshot's files, comma-separated. `history` leaves them out.
pub const ENGINE_SNAPSHOTS: &str = "lakectl.engine-snapshots";

/// Summary key naming the source of an ingest snapshot.
pub const SOURCE: &str = "lakectl.source";
/// Summary key with the number of rows `onError: skip` rejected.
pub const REJECTED: &str = "lakectl.rejected-rows";
