//! The Spark engine: a change's data work as one Spark application (Spark 3.5 +
//! Iceberg 1.10), submitted with `spark-submit` in client mode.
//!
//! The job ([`JOB`], shipped inside the binary) writes on a scratch branch of the table
//! and never on `main`: it creates branch `lakectl-engine-<id>` at the snapshot the
//! change was planned on, runs its steps there (an append of the source rows, an
//! `UPDATE`/`DELETE` in copy-on-write, an append of a compaction group's rows), and
//! exits. [`job_snapshots`] then reads what each of the job's commits added and removed,
//! and the caller (`apply`) commits those data files to `main` through lakectl's own
//! commit path, with the ledger and the annotation, dropping the scratch branch in the
//! same commit. So exactly-once, held-back changes, rollback and drift see an engine
//! commit as any other lakectl commit, and a job that fails (or a lakectl killed
//! mid-job) leaves `main` as it was: at worst a scratch branch that expiry removes.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;
use std::process::Stdio;

use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, ManifestList, ManifestStatus, Snapshot, TableMetadata,
};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::lake::{CatalogKind, LakeConfig};

/// The job lakectl submits.
pub const JOB: &str = include_str!("spark_job.py");

/// Scratch branches of engine jobs start with this.
pub const BRANCH_PREFIX: &str = "lakectl-engine-";

/// Default `minBytes`, 10 GiB: where a 64-core cluster starts to beat this machine's
/// local engine, by the measured rates (`benches/spark_bench.py`: local 160 MB/s of CSV
/// on 2 cores, Spark 5.4 MB/s per executor core and about 35 s to start a job; the
/// README has the arithmetic).
pub const DEFAULT_MIN_BYTES: u64 = 10 << 30;

/// `spec.engine` with `type: spark`, resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SparkConfig {
    pub master: String,
    pub submit: Option<String>,
    #[serde(skip)]
    pub conf: BTreeMap<String, String>,
    pub jars: Vec<String>,
    pub min_bytes: u64,
}

impl SparkConfig {
    /// Whether work of `bytes` goes to Spark.
    pub fn takes(&self, bytes: u64) -> bool {
        bytes >= self.min_bytes
    }

    fn submit_path(&self) -> Result<String, String> {
        if let Some(s) = &self.submit {
            return Ok(s.clone());
        }
        match std::env::var("SPARK_HOME") {
            Ok(home) if !home.is_empty() => Ok(format!("{home}/bin/spark-submit")),
            _ => Err("spec.engine.submit is not set and neither is SPARK_HOME: lakectl does not know which spark-submit to run".into()),
        }
    }
}

/// One step of a job.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Step {
    /// Append the rows of the source files to the branch.
    Ingest {
        #[serde(flatten)]
        source: Source,
    },
    /// An upsert by `key` (a MERGE, copy-on-write; the last row of a key wins unless
    /// `onDuplicateKey` is `error`; CDC rows delete), or `replacePartitions` /
    /// `replace`.
    #[serde(rename_all = "camelCase")]
    Keyed {
        #[serde(flatten)]
        source: Source,
        mode: String,
        key: Vec<String>,
        on_duplicate_key: String,
        cdc: Option<CdcStep>,
    },
    /// `sql` with `{table}` naming the branch; `count` (a predicate) is counted first and
    /// more than `limit` matching rows fails the job.
    Sql {
        sql: String,
        count: Option<String>,
        limit: Option<u64>,
    },
    /// Append the rows of these data files (their deletes applied) to the branch.
    Compact { files: Vec<String> },
}

/// Source files as a step reads them.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    pub format: String,
    pub files: Vec<String>,
    pub csv: CsvStep,
    /// Source column → table column.
    pub columns: BTreeMap<String, String>,
    pub defaults: BTreeMap<String, String>,
    pub case_insensitive: bool,
    pub header: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CdcStep {
    pub op_column: String,
    pub delete_when: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CsvStep {
    pub header: bool,
    pub delimiter: String,
    pub quote: String,
    pub null_string: String,
    pub encoding: Option<String>,
}

/// A job: steps against one table, on a branch made at `base`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Job {
    pub app: String,
    pub namespace: Vec<String>,
    pub table: String,
    pub base: i64,
    pub steps: Vec<Step>,
}

/// A job that ran: its branch and what each step reported.
#[derive(Debug, Clone)]
pub struct Ran {
    pub branch: String,
    pub steps: Vec<serde_json::Value>,
}

/// What one commit of the job did on its branch.
#[derive(Debug, Clone, Default)]
pub struct JobSnapshot {
    pub snapshot_id: i64,
    pub added: Vec<DataFile>,
    pub removed: Vec<String>,
    /// Delete files the commit added (a merge-on-read table): lakectl's copy-on-write
    /// commits cannot take them.
    pub added_deletes: usize,
}

/// The catalog as Spark's `SparkCatalog` properties.
fn catalog_props(config: &LakeConfig) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    match config.catalog_kind {
        CatalogKind::Sql => {
            let path = config
                .catalog_uri
                .strip_prefix("sqlite:")
                .unwrap_or(&config.catalog_uri);
            p.insert(
                "catalog-impl".into(),
                "org.apache.iceberg.jdbc.JdbcCatalog".into(),
            );
            p.insert("uri".into(), format!("jdbc:sqlite:{path}"));
            p.insert("jdbc.schema-version".into(), "V1".into());
            p.insert("warehouse".into(), config.warehouse.clone());
        }
        CatalogKind::Rest => {
            p.insert("type".into(), "rest".into());
            p.insert("uri".into(), config.catalog_uri.clone());
            for (k, v) in &config.catalog_props {
                p.insert(k.clone(), v.clone());
            }
        }
    }
    // Object storage: Iceberg's property names are lakectl's, but for the region.
    for (k, v) in &config.storage {
        let k = if k == "s3.region" { "client.region" } else { k };
        p.insert(k.to_string(), v.clone());
    }
    p
}

/// A fresh name for a job's scratch branch.
pub fn scratch_branch() -> String {
    format!(
        "{BRANCH_PREFIX}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Submits `job` on scratch branch `branch` ([`scratch_branch`]) and waits for it;
/// the job's progress goes to stderr as it comes. A failed job is an error with the
/// driver's message (the branch may exist then: the caller drops it).
pub async fn run(
    config: &LakeConfig,
    spark: &SparkConfig,
    job: &Job,
    branch: &str,
) -> Result<Ran, String> {
    let branch = branch.to_string();
    let dir = tempfile::tempdir().map_err(|e| format!("job directory: {e}"))?;
    let script = dir.path().join("lakectl_spark_job.py");
    let spec = dir.path().join("job.json");
    std::fs::write(&script, JOB).map_err(|e| format!("{}: {e}", script.display()))?;
    let body = serde_json::json!({
        "app": job.app,
        "catalog": {"name": config.catalog_name, "props": catalog_props(config)},
        "namespace": job.namespace,
        "table": job.table,
        "branch": branch,
        "base": job.base,
        "steps": job.steps,
    });
    std::fs::write(&spec, body.to_string()).map_err(|e| format!("{}: {e}", spec.display()))?;
    let submit = spark.submit_path()?;
    let mut cmd = tokio::process::Command::new(&submit);
    cmd.arg("--master")
        .arg(&spark.master)
        .args(["--deploy-mode", "client", "--name"])
        .arg(&job.app)
        .args(["--conf", "spark.ui.showConsoleProgress=false"]);
    for (k, v) in &spark.conf {
        cmd.arg("--conf").arg(format!("{k}={v}"));
    }
    if !spark.jars.is_empty() {
        cmd.arg("--jars").arg(spark.jars.join(","));
    }
    cmd.arg(&script)
        .arg(&spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The driver dies with lakectl: a killed apply leaves no job running on.
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {submit}: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let tail = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut tail: VecDeque<String> = VecDeque::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if tail.len() == 40 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        tail
    });
    let mut lines = BufReader::new(stdout).lines();
    let (mut result, mut error) = (None, None);
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(p) = line.strip_prefix("LAKECTL-PROGRESS ") {
            eprintln!("  spark: {p}");
        } else if let Some(r) = line.strip_prefix("LAKECTL-RESULT ") {
            result = Some(r.to_string());
        } else if let Some(e) = line.strip_prefix("LAKECTL-ERROR ") {
            error = Some(e.to_string());
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| format!("spark-submit: {e}"))?;
    let tail = tail.await.unwrap_or_default();
    if let Some(e) = error {
        return Err(format!("the Spark job failed: {e}"));
    }
    let Some(result) = result.filter(|_| status.success()) else {
        let last: Vec<&String> = tail
            .iter()
            .filter(|l| l.contains("Exception") || l.contains("Error") || l.contains("error"))
            .collect();
        let shown: Vec<&String> = if last.is_empty() {
            tail.iter().rev().take(5).rev().collect()
        } else {
            last.into_iter().rev().take(5).rev().collect()
        };
        return Err(format!(
            "the Spark job failed ({status}): {}",
            shown
                .iter()
                .map(|s| s.trim())
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    };
    let v: serde_json::Value =
        serde_json::from_str(&result).map_err(|e| format!("the job's result: {e}"))?;
    if v["branch"] != branch.as_str() {
        return Err(format!(
            "the job reported branch {}, not {branch}",
            v["branch"]
        ));
    }
    let steps = v["steps"].as_array().cloned().unwrap_or_default();
    if steps.len() != job.steps.len() {
        return Err(format!(
            "the job reported {} step(s) of {}",
            steps.len(),
            job.steps.len()
        ));
    }
    Ok(Ran { branch, steps })
}

/// The commits of a job on `branch` since `base`, oldest first: each one's added and
/// removed data files. Fails unless the branch leads back to `base` through snapshots
/// that only it holds (no other writer's commit mistaken for the job's).
pub async fn job_snapshots(
    file_io: &FileIO,
    md: &TableMetadata,
    branch: &str,
    base: i64,
) -> Result<Vec<JobSnapshot>, String> {
    let head = md
        .snapshot_for_ref(branch)
        .ok_or_else(|| format!("the job's branch {branch} is missing"))?;
    let main: HashSet<i64> = ancestry(md, md.current_snapshot_id());
    let mut chain: Vec<&Snapshot> = Vec::new();
    let mut at = Some(head.as_ref());
    loop {
        let Some(s) = at else {
            return Err(format!(
                "branch {branch} does not lead back to snapshot {base}"
            ));
        };
        if s.snapshot_id() == base {
            break;
        }
        if main.contains(&s.snapshot_id()) {
            return Err(format!(
                "branch {branch} holds snapshot {} of main",
                s.snapshot_id()
            ));
        }
        chain.push(s);
        at = s
            .parent_snapshot_id()
            .and_then(|p| md.snapshot_by_id(p))
            .map(|s| s.as_ref());
    }
    chain.reverse();
    let mut out = Vec::new();
    for s in chain {
        out.push(
            snapshot_changes(file_io, md, s)
                .await
                .map_err(|e| format!("reading snapshot {}: {e}", s.snapshot_id()))?,
        );
    }
    Ok(out)
}

fn ancestry(md: &TableMetadata, head: Option<i64>) -> HashSet<i64> {
    let mut out = HashSet::new();
    let mut at = head;
    while let Some(id) = at {
        if !out.insert(id) {
            break;
        }
        at = md.snapshot_by_id(id).and_then(|s| s.parent_snapshot_id());
    }
    out
}

/// What snapshot `s` itself added and removed (the entries its own manifests mark
/// with its id).
async fn snapshot_changes(
    file_io: &FileIO,
    md: &TableMetadata,
    s: &Snapshot,
) -> iceberg::Result<JobSnapshot> {
    let id = s.snapshot_id();
    let bytes = file_io.new_input(s.manifest_list())?.read().await?;
    let list = ManifestList::parse_with_version(&bytes, md.format_version())?;
    let mut out = JobSnapshot {
        snapshot_id: id,
        ..Default::default()
    };
    for m in list.entries() {
        if m.added_snapshot_id != id {
            continue;
        }
        let loaded = m.load_manifest(file_io).await?;
        for e in loaded.entries() {
            if e.snapshot_id() != Some(id) {
                continue;
            }
            match (e.status(), e.content_type()) {
                (ManifestStatus::Added, DataContentType::Data) => {
                    out.added.push(e.data_file().clone())
                }
                (ManifestStatus::Added, _) => out.added_deletes += 1,
                (ManifestStatus::Deleted, DataContentType::Data) => {
                    out.removed.push(e.file_path().to_string())
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// A local file as the job names it (Spark's `input_file_name()` is a `file:` URI).
pub fn local_name(path: &Path) -> String {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}
