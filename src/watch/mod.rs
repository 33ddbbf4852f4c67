//! `lakectl watch`: the reconcile loop. Level-triggered: every cycle re-reads the
//! manifests and the actual tables (plan, then apply), whatever woke it: a change
//! under the manifest directory or a source directory (a file event from the OS,
//! debounced, or polling; see [`wake`]) or the resync interval. Tables are
//! reconciled one at a time each, independent tables in parallel; a table whose
//! apply fails backs off exponentially (1 s doubling, at most 5 min, reset when its
//! manifest changes) without stopping the others.
//!
//! Status per table (`Ready`, `Progressing`, `Degraded` with reason and message, last
//! applied snapshot, last error, pending changes) is served at `GET /status`, with
//! `/healthz` and `/metrics`. SIGTERM or Ctrl-C stops the loop between changes: a
//! change being applied finishes (each is one atomic commit), then the process exits.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::lake::Lake;
use crate::manifest::ManifestSet;

mod wake;

/// How `watch` runs.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub manifests: PathBuf,
    /// Full resync at least this often.
    pub interval: Duration,
    /// Where to serve `/status`, `/healthz`, `/metrics` (none: no server).
    pub addr: Option<SocketAddr>,
    /// Stop after this many cycles (tests, one-shot runs); `None`: until a signal.
    pub max_cycles: Option<u64>,
    /// `git pull --ff-only` the manifest directory's work tree this often (GitOps: the
    /// watcher follows the branch its clone tracks).
    pub git_pull: Option<Duration>,
    /// Poll the watched directories instead of asking the OS for file events (file
    /// systems without them: NFS, some container mounts).
    pub poll: bool,
}

/// The condition of one table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableStatus {
    /// `Ready` (matches its manifest), `Progressing` (changes being applied) or
    /// `Degraded` (the last attempt failed; see `reason`, `message`).
    pub condition: String,
    pub reason: String,
    pub message: String,
    pub last_applied_snapshot: Option<i64>,
    pub last_error: Option<String>,
    /// Changes the last plan found (0 when `Ready`).
    pub pending_changes: usize,
    /// Held-back changes the plan lists (not applied).
    pub held_back: usize,
    pub consecutive_failures: u32,
    /// Changes made outside lakectl that the last plan found, with what apply does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
    /// RFC 3339 time of the last reconcile.
    pub last_reconcile: String,
    /// The last time maintenance was due (`spec.maintenance.every`) and what it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_maintenance: Option<MaintenanceStatus>,
    /// The table's checks as last run (before a publish, or after a direct apply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_checks: Option<ChecksStatus>,
}

/// The last check results of a table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChecksStatus {
    /// RFC 3339.
    pub at: String,
    /// Where they ran: `main` or the audit branch.
    pub branch: String,
    pub snapshot_id: Option<i64>,
    pub passed: bool,
    pub results: Vec<crate::query::checks::CheckResult>,
}

impl ChecksStatus {
    fn of(c: &crate::apply::publish::TableChecks) -> ChecksStatus {
        ChecksStatus {
            at: now_rfc3339(),
            branch: c.branch.clone(),
            snapshot_id: c.snapshot_id,
            passed: !c.blocks(),
            results: c.results.clone(),
        }
    }
}

/// When maintenance last ran for a table, and its result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MaintenanceStatus {
    /// RFC 3339.
    pub at: String,
    /// `nothing due`, or what was applied (`compact: 18 file(s) → 3`, …), or the error.
    pub result: String,
}

/// Fetches the status document of the watcher serving at `base` (its `--addr` as a
/// URL); the error names the URL. Used by `lakectl status` and `serve`'s
/// `GET /api/v1/watch`.
pub async fn fetch_status(
    client: &reqwest::Client,
    base: &str,
) -> Result<serde_json::Value, String> {
    let url = format!("{}/status", base.trim_end_matches('/'));
    let r = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("{url}: {}", r.status()));
    }
    r.json().await.map_err(|e| format!("{url}: {e}"))
}

/// The whole status document (`GET /status`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub cycles: u64,
    /// What wakes the loop between resyncs: `notify` (file events from the OS) or
    /// `poll` (a fingerprint of the watched directories every 250 ms).
    pub file_events: &'static str,
    pub tables: BTreeMap<String, TableStatus>,
    /// Errors that stop every table (manifests that do not load, an unreachable catalog).
    pub error: Option<String>,
    /// `--git-pull`: the last pull.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git: Option<GitStatus>,
}

/// The last `git pull` of `--git-pull`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GitStatus {
    /// RFC 3339 time of the last pull.
    pub last_pull: String,
    /// `HEAD` after it.
    pub commit: Option<String>,
    /// Why it failed (the watcher goes on with the manifests it has).
    pub error: Option<String>,
}

/// `git pull --ff-only` in `dir`'s work tree; the status of it.
async fn git_pull(dir: &Path) -> GitStatus {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(&dir)
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
        };
        let error = match git(&["pull", "--ff-only", "--quiet"]) {
            Ok(o) if o.status.success() => None,
            Ok(o) => Some(format!(
                "git pull: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Some(format!("git pull: {e}")),
        };
        let commit = git(&["rev-parse", "HEAD"])
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        GitStatus {
            last_pull: now_rfc3339(),
            commit,
            error,
        }
    })
    .await
    .unwrap_or_default()
}

#[derive(Default)]
struct Counters {
    reconciles: AtomicU64,
    errors: AtomicU64,
    applied_changes: AtomicU64,
    reconcile_micros: AtomicU64,
    compacted_files: AtomicU64,
    compacted_bytes: AtomicU64,
    orphans_removed: AtomicU64,
}

struct Shared {
    status: Mutex<Status>,
    counters: Counters,
    /// Per table, when its maintenance last ran (it runs again after `every`).
    maintained: Mutex<HashMap<String, std::time::Instant>>,
    /// Per table with declared maintenance, when it is due again: the loop wakes then,
    /// with no new input and long before the resync interval.
    maintenance_due: Mutex<HashMap<String, Instant>>,
    /// Per audited table whose checks failed: the changes that failed them. The same
    /// changes are not staged again (each try would leave a branch) until the manifests
    /// or the sources change.
    failed_checks: Mutex<HashMap<String, String>>,
    /// After a failed atomic publish: each table's (reason, message), shown again while
    /// the same changes wait.
    atomic_marks: Mutex<HashMap<String, (String, String)>>,
}

/// How often a table's maintenance runs under `watch` (`spec.maintenance.every`,
/// default 1 hour).
fn maintenance_every(set: &ManifestSet) -> Duration {
    set.tables
        .first()
        .and_then(|t| set.maintenance_of(t).every)
        .and_then(|e| humantime::parse_duration(&e).ok())
        .unwrap_or(Duration::from_secs(3600))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The directories a cycle depends on: the manifest directory and every local
/// directory a source names; and what lakectl itself writes to (a local warehouse,
/// a SQLite catalog, rejects directories), whose changes must not wake it. Read once
/// per cycle (a manifest naming a new directory changes the manifest directory,
/// which starts the next cycle).
fn watched_roots(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut roots = vec![dir.to_path_buf()];
    let mut own = Vec::new();
    if let Ok(set) = crate::manifest::load(dir) {
        if let Ok(c) = set.lake_config() {
            let w = c.warehouse.strip_prefix("file://").unwrap_or(&c.warehouse);
            if !w.contains("://") {
                own.push(PathBuf::from(w));
            }
            if c.catalog_kind == crate::lake::CatalogKind::Sql {
                let db = crate::lake::catalog::sqlite_path(&c.catalog_uri);
                own.push(PathBuf::from(db));
                // SQLite's journal and WAL files beside it.
                for suffix in ["-journal", "-wal", "-shm"] {
                    own.push(PathBuf::from(format!("{db}{suffix}")));
                }
            }
        }
        for t in &set.tables {
            let base = t.file.parent().unwrap_or(Path::new("."));
            for s in &t.value.spec.sources {
                if let Some(r) = &s.rejects {
                    own.push(base.join(r));
                }
                if !s.uri.contains("://") {
                    let fixed: PathBuf = s
                        .uri
                        .split(['*', '?', '['])
                        .next()
                        .map(|p| base.join(p))
                        .unwrap_or_default();
                    let root = if fixed.is_dir() {
                        fixed
                    } else {
                        fixed.parent().map(Path::to_path_buf).unwrap_or(fixed)
                    };
                    roots.push(root);
                }
            }
        }
    }
    roots.sort();
    roots.dedup();
    (roots, own)
}

/// Runs the loop until a signal (or `max_cycles`).
pub async fn watch(config: WatchConfig) -> Result<(), String> {
    let shared = Arc::new(Shared {
        status: Mutex::new(Status::default()),
        counters: Counters::default(),
        maintained: Mutex::new(HashMap::new()),
        maintenance_due: Mutex::new(HashMap::new()),
        failed_checks: Mutex::new(HashMap::new()),
        atomic_marks: Mutex::new(HashMap::new()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            crate::serve::shutdown_signal().await;
            stop.store(true, Ordering::SeqCst);
        });
    }
    if let Some(addr) = config.addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot bind {addr}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on http://{bound}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let app = router(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    // Per table: consecutive failures and when to try again.
    let mut backoff: HashMap<String, (u32, Instant, String)> = HashMap::new();
    let mut wake = wake::Wake::new(config.poll);
    let mut cycles = 0u64;
    let mut next_pull = Instant::now();
    let pull = |shared: Arc<Shared>| {
        let dir = config.manifests.clone();
        async move {
            let g = git_pull(&dir).await;
            if let Some(e) = &g.error {
                tracing::warn!("{e}");
                shared.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            if let Ok(mut s) = shared.status.lock() {
                s.git = Some(g);
            }
        }
    };
    loop {
        if let Some(every) = config.git_pull {
            if Instant::now() >= next_pull {
                pull(shared.clone()).await;
                next_pull = Instant::now() + every;
            }
        }
        let started = Instant::now();
        let (roots, own) = watched_roots(&config.manifests);
        wake.arm(&roots, &own);
        // After arming: a watch that failed has fallen back to polling.
        if let Ok(mut s) = shared.status.lock() {
            s.file_events = wake.mode();
        }
        cycle(&config, &shared, &mut backoff, &stop).await;
        cycles += 1;
        shared
            .counters
            .reconcile_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        if let Ok(mut s) = shared.status.lock() {
            s.cycles = cycles;
        }
        if stop.load(Ordering::SeqCst) || config.max_cycles.is_some_and(|m| cycles >= m) {
            return Ok(());
        }
        // Sleep until the interval is up, a watched file changes, a backoff expires, a
        // table's maintenance is due, or a signal.
        let deadline = Instant::now() + config.interval;
        let next_retry = backoff.values().map(|(_, at, _)| *at).min();
        let next_maintenance = shared
            .maintenance_due
            .lock()
            .ok()
            .and_then(|m| m.values().min().copied());
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline
                || next_retry.is_some_and(|t| now >= t)
                || next_maintenance.is_some_and(|t| now >= t)
            {
                break;
            }
            // Wake up at least every 250 ms for a signal, a retry or a pull.
            if wake.changed(Duration::from_millis(250), &stop).await {
                // New input (its burst settled): retry every table now, backing off
                // or not.
                backoff.clear();
                break;
            }
            if let Some(every) = config.git_pull {
                if Instant::now() >= next_pull {
                    pull(shared.clone()).await;
                    next_pull = Instant::now() + every;
                }
            }
        }
    }
}

async fn cycle(
    config: &WatchConfig,
    shared: &Arc<Shared>,
    backoff: &mut HashMap<String, (u32, Instant, String)>,
    stop: &Arc<AtomicBool>,
) {
    let set_error = |e: String| {
        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = shared.status.lock() {
            s.error = Some(e);
        }
    };
    let set = match crate::plan::load_valid(&config.manifests) {
        Ok(s) => s,
        Err(d) => return set_error(joined(&d)),
    };
    let lake = match set.lake_config() {
        Ok(c) => match Lake::open(c).await {
            Ok(l) => l,
            Err(e) => return set_error(e.to_string()),
        },
        Err(d) => return set_error(joined(&d)),
    };
    if let Ok(mut s) = shared.status.lock() {
        s.error = None;
        let names: Vec<String> = set.tables.iter().map(|t| t.table_name()).collect();
        s.tables.retain(|k, _| names.contains(k));
    }
    let lake = Arc::new(lake);
    let mut jobs = Vec::new();
    for t in &set.tables {
        let name = t.table_name();
        // A table's manifest text: a change resets its backoff.
        let text = serde_json::to_string(&t.value).unwrap_or_default();
        if let Some((_, at, seen)) = backoff.get(&name) {
            if *seen == text && Instant::now() < *at {
                continue;
            }
        }
        let mut one = set.clone();
        one.tables = vec![t.clone()];
        let lake = lake.clone();
        let shared = shared.clone();
        let stop = stop.clone();
        jobs.push(async move {
            let result = reconcile(&lake, &one, &shared, &stop).await;
            (name, text, result)
        });
    }
    let results = futures::future::join_all(jobs).await;
    if set.atomic_publish() && !stop.load(Ordering::SeqCst) {
        reconcile_atomic(&lake, &set, shared).await;
    }
    for (name, text, ok) in results {
        if ok {
            backoff.remove(&name);
        } else {
            let failures = backoff.get(&name).map(|(n, _, _)| n + 1).unwrap_or(1);
            let wait = Duration::from_secs((1u64 << (failures - 1).min(8)).min(300));
            backoff.insert(name.clone(), (failures, Instant::now() + wait, text));
            if let Ok(mut s) = shared.status.lock() {
                if let Some(t) = s.tables.get_mut(&name) {
                    t.consecutive_failures = failures;
                }
            }
        }
    }
}

/// Reconciles one table (plans, applies, records its status); `false` when it failed. A revert of other writers' snapshots
/// is followed at once by a reconcile of the table's other changes.
async fn reconcile(lake: &Lake, set: &ManifestSet, shared: &Shared, stop: &AtomicBool) -> bool {
    for _ in 0..3 {
        let (ok, again) = reconcile_once(lake, set, shared, stop).await;
        if !ok || !again || stop.load(Ordering::SeqCst) {
            return ok;
        }
    }
    true
}

/// One plan and apply of one table: (succeeded, must plan again: drift was reverted, or
/// maintenance waited for the table's other changes).
async fn reconcile_once(
    lake: &Lake,
    set: &ManifestSet,
    shared: &Shared,
    stop: &AtomicBool,
) -> (bool, bool) {
    let name = set.tables[0].table_name();
    shared.counters.reconciles.fetch_add(1, Ordering::Relaxed);
    let put = |t: TableStatus| {
        if let Ok(mut s) = shared.status.lock() {
            s.tables.insert(name.clone(), t);
        }
    };
    let previous = shared
        .status
        .lock()
        .ok()
        .and_then(|s| s.tables.get(&name).cloned());
    let base = |condition: &str, reason: &str, message: String| TableStatus {
        condition: condition.into(),
        reason: reason.into(),
        message,
        last_applied_snapshot: previous.as_ref().and_then(|p| p.last_applied_snapshot),
        last_error: previous.as_ref().and_then(|p| p.last_error.clone()),
        pending_changes: 0,
        held_back: 0,
        consecutive_failures: 0,
        drift: Vec::new(),
        last_reconcile: now_rfc3339(),
        last_maintenance: previous.as_ref().and_then(|p| p.last_maintenance.clone()),
        last_checks: previous.as_ref().and_then(|p| p.last_checks.clone()),
    };
    let degraded = |reason: &str, message: String| {
        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
        let mut t = base("Degraded", reason, message.clone());
        t.last_error = Some(message);
        t.consecutive_failures = previous
            .as_ref()
            .map(|p| p.consecutive_failures + 1)
            .unwrap_or(1);
        t
    };
    let mut actual = match crate::plan::observe(Some(lake), set, &lake.config).await {
        Ok(a) => a,
        Err(e) => {
            put(degraded("ObserveFailed", e.to_string()));
            return (false, false);
        }
    };
    // Maintenance runs once per `every` (the orphan scan lists the whole location).
    let due = shared
        .maintained
        .lock()
        .ok()
        .and_then(|m| m.get(&name).map(|t| t.elapsed() >= maintenance_every(set)))
        .unwrap_or(true);
    if due {
        crate::plan::observe_orphans(lake, set, &mut actual, Some(&name)).await;
    }
    let mut plan = crate::plan::diff(set, &actual, lake.config.clone());
    // `atomicPublish`: an audited table's data changes are published together with
    // the other audited tables', after the per-table reconciles (`reconcile_atomic`).
    let atomic_audited = plan.atomic && plan.audited(&name);
    if atomic_audited {
        plan.changes.retain(|c| !c.is_data());
    }
    if !due {
        plan.changes.retain(|c| !c.is_maintenance());
    }
    let maintenance_planned = plan.changes.iter().any(|c| c.is_maintenance());
    // Other changes to the table first: its maintenance is planned again right after
    // them, on the state they leave (an ingest that crossed a compaction threshold).
    let declared = !set.maintenance_of(&set.tables[0]).is_default();
    let deferred = due && declared && plan.changes.iter().any(|c| !c.is_maintenance());
    let mark_maintained = |result: String| {
        if let Ok(mut m) = shared.maintained.lock() {
            m.insert(name.clone(), std::time::Instant::now());
        }
        if let Ok(mut m) = shared.maintenance_due.lock() {
            if declared {
                m.insert(name.clone(), Instant::now() + maintenance_every(set));
            } else {
                m.remove(&name);
            }
        }
        MaintenanceStatus {
            at: now_rfc3339(),
            result,
        }
    };
    if !plan.errors.is_empty() {
        let msg = plan
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        let mut t = degraded("PlanRefused", msg);
        t.pending_changes = plan.changes.len();
        put(t);
        return (false, false);
    }
    let drift: Vec<String> = plan
        .drift
        .iter()
        .flat_map(|d| {
            d.items
                .iter()
                .map(|i| format!("{} [{}]", i.what, i.outcome))
                .chain(d.snapshots.iter().map(|f| {
                    format!(
                        "snapshot {} ({}) committed outside lakectl",
                        f.snapshot_id, f.operation
                    )
                }))
        })
        .collect();
    if plan.changes.is_empty() {
        let maintained = due.then(|| mark_maintained("nothing due".into()));
        let mut t = if drift.is_empty() {
            base("Ready", "UpToDate", "the table matches its manifest".into())
        } else {
            base(
                "Ready",
                "Drifted",
                format!(
                    "{} change(s) made outside lakectl are left as they are (onDrift); see `lakectl plan`",
                    drift.len()
                ),
            )
        };
        t.drift = drift.clone();
        t.held_back = plan.held_back.len();
        if maintained.is_some() {
            t.last_maintenance = maintained;
        }
        put(t);
        return (true, false);
    }
    let mut t = base(
        "Progressing",
        "Applying",
        format!("applying {} change(s)", plan.changes.len()),
    );
    t.pending_changes = plan.changes.len();
    put(t);
    // Apply change by change, so a stop request waits for the current commit only.
    let mut reverted = false;
    let mut maintenance_done: Vec<String> = Vec::new();
    // An audited table's data changes are staged, checked and published together.
    let audited = !atomic_audited && plan.audited(&name);
    // What is staged: the data changes (maintenance and structure commit to main).
    let fingerprint = audited.then(|| data_fingerprint(&plan));
    if let Some(f) = &fingerprint {
        let failed = shared
            .failed_checks
            .lock()
            .ok()
            .and_then(|m| m.get(&name).cloned());
        if failed.as_ref() == Some(f) {
            let mut t = base(
                "Degraded",
                "ChecksFailed",
                "the staged changes failed their checks; waiting for the manifests or the sources to change".into(),
            );
            t.last_error = previous.as_ref().and_then(|p| p.last_error.clone());
            t.pending_changes = plan.changes.len();
            t.last_applied_snapshot = previous.as_ref().and_then(|p| p.last_applied_snapshot);
            put(t);
            return (true, false);
        }
    }
    let batches: Vec<Vec<crate::plan::Change>> = if audited {
        vec![plan.changes.clone()]
    } else {
        plan.changes.iter().map(|c| vec![c.clone()]).collect()
    };
    for changes in batches {
        if stop.load(Ordering::SeqCst) {
            return (true, false);
        }
        reverted |= changes
            .iter()
            .any(|c| matches!(c, crate::plan::Change::Revert(_)));
        let one = plan.with_changes(changes);
        match crate::apply::apply(lake, &one, Arc::new(()), |_| {}).await {
            Ok(applied) => {
                // A change another writer applied first committed nothing here.
                let landed = applied.iter().filter(|a| !a.already_applied()).count();
                shared
                    .counters
                    .applied_changes
                    .fetch_add(landed.min(1) as u64, Ordering::Relaxed);
                for a in &applied {
                    if let Some(c) = &a.checks {
                        record_checks(shared, &name, c);
                    }
                    if let Some(c) = &a.compaction {
                        let counters = &shared.counters;
                        counters
                            .compacted_files
                            .fetch_add(c.files_in as u64, Ordering::Relaxed);
                        counters
                            .compacted_bytes
                            .fetch_add(c.bytes_in, Ordering::Relaxed);
                        maintenance_done
                            .push(format!("compact: {} file(s) → {}", c.files_in, c.files_out));
                    }
                    if let Some(o) = &a.orphans {
                        shared
                            .counters
                            .orphans_removed
                            .fetch_add(o.files_removed as u64, Ordering::Relaxed);
                        maintenance_done
                            .push(format!("remove-orphans: {} file(s)", o.files_removed));
                    }
                    if let Some(e) = &a.expiry {
                        maintenance_done
                            .push(format!("expire: {} snapshot(s)", e.expired_snapshots.len()));
                    }
                }
                if let Some(id) = applied.iter().rev().find_map(|a| a.snapshot_id) {
                    if let Ok(mut s) = shared.status.lock() {
                        if let Some(t) = s.tables.get_mut(&name) {
                            t.last_applied_snapshot = Some(id);
                        }
                    }
                }
            }
            Err(e) => {
                let reason = if let crate::apply::ApplyError::ChecksFailed(failed) = &e {
                    if let (Some(f), true, Ok(mut m)) =
                        (&fingerprint, all_ran(failed), shared.failed_checks.lock())
                    {
                        m.insert(name.clone(), f.clone());
                    }
                    if let Some(c) = failed.first() {
                        record_checks(shared, &name, c);
                    }
                    "ChecksFailed"
                } else {
                    "ApplyFailed"
                };
                let mut t = degraded(reason, e.to_string());
                if let Ok(s) = shared.status.lock() {
                    let x = s.tables.get(&name);
                    t.last_applied_snapshot = x.and_then(|x| x.last_applied_snapshot);
                    t.last_checks = x.and_then(|x| x.last_checks.clone());
                }
                put(t);
                return (false, false);
            }
        }
    }
    // A table published directly: its checks run on `main` after the changes land.
    if !audited && plan.audit.get(&name).is_some_and(|a| !a.checks.is_empty()) {
        if let Ok(Some(c)) = crate::apply::publish::check_all(
            lake,
            &plan.audit,
            iceberg::spec::MAIN_BRANCH,
            Some(std::slice::from_ref(&name)),
        )
        .await
        .map(|mut c| c.pop())
        {
            record_checks(shared, &name, &c);
        }
    }
    let (last, checks) = shared
        .status
        .lock()
        .ok()
        .and_then(|s| {
            s.tables
                .get(&name)
                .map(|t| (t.last_applied_snapshot, t.last_checks.clone()))
        })
        .unwrap_or_default();
    let mut t = base(
        "Ready",
        "Applied",
        format!("applied {} change(s)", plan.changes.len()),
    );
    t.last_applied_snapshot = last;
    t.last_checks = checks;
    if let Ok(mut m) = shared.failed_checks.lock() {
        m.remove(&name);
    }
    t.held_back = plan.held_back.len();
    t.drift = drift;
    t.last_error = None;
    if due && !deferred {
        t.last_maintenance = Some(mark_maintained(if maintenance_planned {
            maintenance_done.join("; ")
        } else {
            "nothing due".into()
        }));
    }
    put(t);
    (true, reverted || deferred)
}

/// Records `c` as `table`'s last check results in `/status`.
fn record_checks(shared: &Shared, table: &str, c: &crate::apply::publish::TableChecks) {
    if let Ok(mut s) = shared.status.lock() {
        if let Some(t) = s.tables.get_mut(table) {
            t.last_checks = Some(ChecksStatus::of(c));
        }
    }
}

/// Every check of a refused publish ran: its failure stands until the changes differ
/// (one that could not run, a read that failed, is tried again).
fn all_ran(failed: &[crate::apply::publish::TableChecks]) -> bool {
    failed
        .iter()
        .flat_map(|c| c.results.iter())
        .all(|r| !r.could_not_run)
}

/// What a failed publish staged: the plan's data changes (structure and maintenance
/// commit to main), hashed.
fn data_fingerprint(plan: &crate::plan::Plan) -> String {
    let data: Vec<&crate::plan::Change> = plan.changes.iter().filter(|c| c.is_data()).collect();
    crate::plan::short_hash(serde_json::to_string(&data).unwrap_or_default().as_bytes())
}

/// The key of `failed_checks` for the atomic publish of all audited tables.
const ATOMIC: &str = "(atomic publish)";

/// `atomicPublish`: the data changes of every audited table, staged and checked table
/// by table and published in one catalog transaction (the per-table reconciles leave
/// them out). A failing check publishes nothing: the failing tables are `Degraded`
/// with `ChecksFailed`, the others with `NotPublished`.
async fn reconcile_atomic(lake: &Lake, set: &ManifestSet, shared: &Shared) {
    let mut audited = set.clone();
    audited
        .tables
        .retain(|t| set.publish_of(t) == crate::manifest::types::PublishMode::Audited);
    if audited.tables.is_empty() {
        return;
    }
    let mark = |table: &str,
                condition: &str,
                reason: &str,
                message: String,
                checks: Option<&crate::apply::publish::TableChecks>| {
        if let Ok(mut s) = shared.status.lock() {
            if let Some(t) = s.tables.get_mut(table) {
                t.condition = condition.into();
                t.reason = reason.into();
                t.message = message.clone();
                t.last_error = (condition == "Degraded").then_some(message);
            }
        }
        if let Some(c) = checks {
            record_checks(shared, table, c);
        }
    };
    let actual = match crate::plan::observe(Some(lake), &audited, &lake.config).await {
        Ok(a) => a,
        Err(e) => {
            for t in &audited.tables {
                mark(
                    &t.table_name(),
                    "Degraded",
                    "ObserveFailed",
                    e.to_string(),
                    None,
                );
            }
            return;
        }
    };
    let mut plan = crate::plan::diff(&audited, &actual, lake.config.clone());
    plan.changes.retain(crate::plan::Change::is_data);
    if plan.changes.is_empty() || !plan.errors.is_empty() {
        return;
    }
    let fingerprint = data_fingerprint(&plan);
    let failed = shared
        .failed_checks
        .lock()
        .ok()
        .and_then(|m| m.get(ATOMIC).cloned());
    if failed.as_ref() == Some(&fingerprint) {
        let marks = shared
            .atomic_marks
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        for (t, (reason, message)) in marks {
            mark(&t, "Degraded", &reason, message, None);
        }
        return;
    }
    if let Ok(mut m) = shared.atomic_marks.lock() {
        m.clear();
    }
    let remember = |t: &str, reason: &str, message: String| {
        if let Ok(mut m) = shared.atomic_marks.lock() {
            m.insert(t.to_string(), (reason.to_string(), message.clone()));
        }
        message
    };
    let tables: Vec<String> = audited.tables.iter().map(|t| t.table_name()).collect();
    let options = crate::apply::ApplyOptions {
        atomic: true,
        ..Default::default()
    };
    match crate::apply::apply_with(lake, &plan, &options, Arc::new(()), |_| {}).await {
        Ok(applied) => {
            if let Ok(mut m) = shared.failed_checks.lock() {
                m.remove(ATOMIC);
            }
            let published = applied.iter().filter(|a| a.change == "publish").count();
            shared
                .counters
                .applied_changes
                .fetch_add(published as u64, Ordering::Relaxed);
            for a in applied.iter().filter(|a| a.change == "publish") {
                mark(
                    &a.target,
                    "Ready",
                    "Published",
                    format!("published with {} table(s) in one transaction", published),
                    a.checks.as_ref(),
                );
                if let (Some(id), Ok(mut s)) = (a.snapshot_id, shared.status.lock()) {
                    if let Some(t) = s.tables.get_mut(&a.target) {
                        t.last_applied_snapshot = Some(id);
                    }
                }
            }
        }
        Err(crate::apply::ApplyError::ChecksFailed(failed)) => {
            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
            if let (true, Ok(mut m)) = (all_ran(&failed), shared.failed_checks.lock()) {
                m.insert(ATOMIC.into(), fingerprint);
            }
            let names: Vec<&str> = failed.iter().map(|c| c.table.as_str()).collect();
            for t in &tables {
                match failed.iter().find(|c| &c.table == t) {
                    Some(c) => mark(
                        t,
                        "Degraded",
                        "ChecksFailed",
                        remember(
                            t,
                            "ChecksFailed",
                            crate::apply::publish::failed_message(std::slice::from_ref(c)),
                        ),
                        Some(c),
                    ),
                    None if plan.changes.iter().any(|c| c.table() == Some(t.as_str())) => mark(
                        t,
                        "Degraded",
                        "NotPublished",
                        remember(
                            t,
                            "NotPublished",
                            format!(
                                "atomicPublish: nothing was published because the checks of {} failed",
                                names.join(", ")
                            ),
                        ),
                        None,
                    ),
                    None => {}
                }
            }
        }
        Err(e) => {
            shared.counters.errors.fetch_add(1, Ordering::Relaxed);
            for t in &tables {
                if plan.changes.iter().any(|c| c.table() == Some(t.as_str())) {
                    mark(t, "Degraded", "PublishFailed", e.to_string(), None);
                }
            }
        }
    }
}

fn joined(d: &crate::manifest::Diagnostics) -> String {
    d.0.iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn router(shared: Arc<Shared>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/status",
            get(|axum::extract::State(s): axum::extract::State<Arc<Shared>>| async move {
                let status = s.status.lock().map(|x| x.clone()).unwrap_or_default();
                axum::Json(status)
            }),
        )
        .route(
            "/metrics",
            get(|axum::extract::State(s): axum::extract::State<Arc<Shared>>| async move {
                metrics(&s)
            }),
        )
        .with_state(shared)
}

fn metrics(s: &Shared) -> String {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = format!(
        "# TYPE lakectl_reconciles_total counter\nlakectl_reconciles_total {}\n# TYPE lakectl_reconcile_errors_total counter\nlakectl_reconcile_errors_total {}\n# TYPE lakectl_applied_changes_total counter\nlakectl_applied_changes_total {}\n# TYPE lakectl_reconcile_seconds_total counter\nlakectl_reconcile_seconds_total {}\n# TYPE lakectl_compacted_files_total counter\nlakectl_compacted_files_total {}\n# TYPE lakectl_compacted_bytes_total counter\nlakectl_compacted_bytes_total {}\n# TYPE lakectl_orphan_files_removed_total counter\nlakectl_orphan_files_removed_total {}\n# TYPE lakectl_pending_changes gauge\n",
        g(&s.counters.reconciles),
        g(&s.counters.errors),
        g(&s.counters.applied_changes),
        g(&s.counters.reconcile_micros) as f64 / 1e6,
        g(&s.counters.compacted_files),
        g(&s.counters.compacted_bytes),
        g(&s.counters.orphans_removed)
    );
    if let Ok(st) = s.status.lock() {
        for (name, t) in &st.tables {
            out.push_str(&format!(
                "lakectl_pending_changes{{table=\"{name}\"}} {}\n",
                t.pending_changes
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The manifest and source directories are watched; lakectl's own output under
    /// them (warehouse, SQLite catalog, rejects) is not.
    #[test]
    fn watched_roots_leave_out_lakectls_own_output() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::path::absolute(dir.path()).unwrap();
        let man = root.join("manifests");
        std::fs::create_dir_all(&man).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(
            man.join("lakehouse.yaml"),
            "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata: {name: dev}\nspec:\n  catalog: {type: sql, uri: \"sqlite:../data/catalog.db\"}\n  warehouse: ../data/warehouse\n",
        )
        .unwrap();
        std::fs::write(
            man.join("sales.yaml"),
            "apiVersion: lakectl/v1\nkind: Table\nmetadata: {name: sales, namespace: shop}\nspec:\n  columns:\n    - {name: id, type: long}\n  sources:\n    - {name: s, uri: ../data/*.csv, onError: skip, rejects: ../data/rejects}\n",
        )
        .unwrap();
        let (roots, own) = watched_roots(&man);
        let mut abs: Vec<PathBuf> = roots.iter().map(|p| wake::absolute(p)).collect();
        abs.sort();
        assert_eq!(abs, [root.join("data"), man], "{roots:?}");
        let own: Vec<PathBuf> = own.iter().map(|p| wake::absolute(p)).collect();
        for want in ["data/warehouse", "data/catalog.db", "data/rejects"] {
            assert!(own.contains(&root.join(want)), "{want} not in {own:?}");
        }
    }
}
