//! The `lakectl` binary: argument parsing, output format and exit codes only.
//!
//! Exit codes (like `terraform plan -detailed-exitcode`):
//! - `0`: success; for `plan`, no changes pending;
//! - `1`: error (invalid manifest, refused change, catalog or storage failure);
//! - `2`: `plan` only: changes pending.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use lakectl::apply;
use lakectl::lake::Lake;
use lakectl::manifest::{self, ManifestSet};
use lakectl::plan::{self, render};

#[derive(Parser)]
#[command(
    name = "lakectl",
    version,
    about = "Declarative Apache Iceberg lakehouse: manifests in git, plan and apply."
)]
struct Cli {
    /// Colour in text output.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    color: Color,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the JSON Schema of manifests (for editors).
    Schema,
    /// Check manifests without touching the catalog. Exit 0 valid, 1 invalid.
    Validate {
        /// Manifest directory or file.
        #[arg(default_value = "manifests")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show what apply would change. Exit 0 no changes, 2 changes pending, 1 error.
    Plan {
        #[arg(default_value = "manifests")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = PlanOutput::Text)]
        output: PlanOutput,
        /// Count the rows each pending mutation matches now (reads the candidate files).
        #[arg(long)]
        estimate: bool,
        /// Diff the tables' data against branch NAME (as `apply --branch NAME` would
        /// change it); with `--output markdown`, the branch's checks are run and shown.
        #[arg(long, value_name = "NAME")]
        branch: Option<String>,
    },
    /// Make the tables match the manifests: one Iceberg commit per change. Exit 0 or 1.
    Apply {
        #[arg(default_value = "manifests")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Apply a held-back change again (its change id, as `plan` lists it). Repeatable.
        #[arg(long, value_name = "CHANGE_ID")]
        reapply: Vec<String>,
        /// Tag the snapshot each changed table ends at (a restore point `expire` keeps).
        #[arg(long, value_name = "NAME")]
        tag: Option<String>,
        /// A preview: every table's data changes go to branch NAME (made from `main`
        /// when missing), the checks run there; `main` is untouched. Exit 1 when an
        /// error-level check fails.
        #[arg(long, value_name = "NAME")]
        branch: Option<String>,
        /// Publish every audited table in one catalog transaction (as the Lakehouse's
        /// `atomicPublish`): one failing check publishes nothing.
        #[arg(long)]
        atomic: bool,
    },
    /// Fast-forward `main` of every table that has branch NAME to it, after the
    /// table's checks pass on it (a table whose `main` moved meanwhile gets the
    /// manifests' data changes replayed on fresh `main` first). Exit 1 when a check
    /// fails: nothing of that table is published.
    Publish {
        /// The branch (as given to `apply --branch`).
        name: String,
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
        /// Remove the branch from each table once `main` has it.
        #[arg(long)]
        delete_branch: bool,
        /// All tables in one catalog transaction.
        #[arg(long)]
        atomic: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run the declared checks (`spec.checks`) on `main` now. Exit 0 when no
    /// error-level check fails, 1 otherwise.
    Check {
        #[arg(default_value = "manifests")]
        dir: PathBuf,
        /// Only this table (`namespace.table`).
        #[arg(long)]
        table: Option<String>,
        /// Check branch NAME instead (tables without it: `main`).
        #[arg(long, value_name = "NAME")]
        branch: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Move a table's `main` back to an earlier snapshot, restoring its data, schema,
    /// partition spec and sort order. The changes taken out are held back.
    Rollback {
        /// `namespace.table`
        table: String,
        /// The snapshot id to go back to.
        #[arg(long, group = "target")]
        to: Option<i64>,
        /// The newest snapshot of `main` at or before this time (RFC 3339).
        #[arg(long, group = "target")]
        to_time: Option<String>,
        /// Go back N snapshots along `main`.
        #[arg(long, group = "target")]
        steps: Option<usize>,
        /// Print what would change; commit nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Serve the lakehouse over HTTP: tables, snapshots, rollback, uploads, read-only
    /// SQL, the plan; OpenAPI at /openapi.json, docs at /docs.
    Serve {
        /// Manifest directory whose lakehouse to serve.
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
        /// Address to bind; a non-loopback address needs a token.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: std::net::SocketAddr,
        /// Bearer token required on every route but /healthz.
        #[arg(long, env = "LAKECTL_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Largest upload accepted, in MiB.
        #[arg(long, default_value_t = 1024)]
        max_upload_mb: u64,
        /// Queries running longer are cancelled (seconds).
        #[arg(long, default_value_t = 60)]
        query_timeout_secs: u64,
        /// Most rows a query returns.
        #[arg(long, default_value_t = 100_000)]
        max_rows: usize,
        /// OAuth2 clients the catalog endpoint issues tokens to (client credentials at
        /// /catalog/v1/oauth/tokens): `id:secret,id2:secret2`.
        #[arg(long, env = "LAKECTL_CLIENTS", hide_env_values = true)]
        clients: Option<String>,
        /// The same, one `id:secret` per line of a file.
        #[arg(long)]
        clients_file: Option<PathBuf>,
        /// How long an issued token is valid: `1h`, `15m`, `30s`.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        token_ttl: std::time::Duration,
        /// A running `lakectl watch`'s status server (its --addr as a URL, e.g.
        /// http://127.0.0.1:9090): the console and GET /api/v1/watch show its conditions.
        #[arg(long, env = "LAKECTL_WATCH_STATUS", value_name = "URL")]
        watch_status: Option<String>,
    },
    /// Reconcile continuously: plan and apply on manifest or source changes and every
    /// resync interval; per-table status at /status.
    Watch {
        #[arg(default_value = "manifests")]
        dir: PathBuf,
        /// Full resync interval: `60`, `60s`, `500ms`, `5m`.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        interval: std::time::Duration,
        /// Serve /status, /healthz and /metrics here.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// Stop after N cycles (default: run until SIGTERM / Ctrl-C).
        #[arg(long)]
        cycles: Option<u64>,
        /// `git pull --ff-only` DIR's work tree this often (e.g. `30s`): follow the
        /// branch the clone tracks; pulled changes are reconciled at once.
        #[arg(long, value_name = "INTERVAL", value_parser = parse_duration)]
        git_pull: Option<std::time::Duration>,
        /// Poll the directories every 250 ms instead of using file events from the
        /// OS (for file systems without them: NFS, SMB, some container mounts).
        #[arg(long)]
        poll: bool,
    },
    /// Per-table status of a running `lakectl watch` (its /status).
    Status {
        /// The watcher's address, e.g. http://127.0.0.1:9090
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        url: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Bring existing tables under management: write a manifest for each table of
    /// NAMESPACE (or for NAMESPACE.TABLE), or adopt a declared table's drift into its
    /// manifest, and record it as the table's baseline. The next plan is empty.
    Import {
        /// `namespace` (every table in it) or `namespace.table`.
        target: String,
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
        /// Overwrite a manifest file of the same name that declares something else.
        #[arg(long)]
        force: bool,
        /// Show what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Remove old snapshots and the files only they reference, by the table's
    /// `spec.retention` (tags and refs are always kept).
    Expire {
        /// `namespace.table`
        table: String,
        /// Print what would be removed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Snapshots of `main` to keep whatever their age (default: manifest, else 5).
        #[arg(long)]
        keep_last: Option<u32>,
        /// Keep snapshots younger than this many days (default: manifest, else 7).
        #[arg(long)]
        max_age_days: Option<u64>,
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run the declared maintenance (`spec.maintenance`: compaction, manifest merging,
    /// expiry, orphan removal) that is due, and nothing else. Exit 0 or 1.
    Maintain {
        /// Only this table (`namespace.table`); default every declared table.
        table: Option<String>,
        /// Print what is due; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run read-only SQL (DataFusion) over the lakehouse; tables are `namespace.table`.
    Query {
        sql: String,
        /// Manifest directory whose lakehouse to query.
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
        /// Time travel: a number is a snapshot id (of the table that has it; the others
        /// read as now); anything else a time for every table: RFC 3339
        /// (`2024-05-01T12:00:00Z`, `…+02:00`), `2024-05-01 12:00:00[.fff]` (UTC), or a
        /// date `2024-05-01` (midnight UTC). A table with no snapshot by then reads as
        /// empty, with a note on stderr.
        #[arg(long)]
        as_of: Option<String>,
        /// Read branch or tag NAME of each table that has it (the others: `main`).
        #[arg(long = "ref", value_name = "NAME", conflicts_with = "as_of")]
        reference: Option<String>,
        #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
        format: QueryFormat,
    },
    /// A table's snapshots, newest first, with what lakectl did in each.
    History {
        /// `namespace.table`
        table: String,
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
        /// The history of branch or tag NAME instead of `main`.
        #[arg(long = "ref", value_name = "NAME")]
        reference: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum QueryFormat {
    Table,
    Csv,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Text,
    Json,
}

/// `plan --output`.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum PlanOutput {
    Text,
    Json,
    /// GitHub-flavoured Markdown: a pull-request comment.
    Markdown,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Color {
    Auto,
    Always,
    Never,
}

/// A command that prints ends quietly when its reader goes away (`lakectl history | head`),
/// as Unix tools do: Rust ignores SIGPIPE and `println!` then panics on EPIPE. The
/// servers (`serve`, `watch`) keep ignoring it, so a client that hangs up is an error
/// on that connection, not the end of the process.
/// OAuth2 clients: `id:secret` pairs, comma-separated in `list` and one per line in
/// `file` (blank lines and `#` comments skipped).
fn parse_clients(
    list: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut add = |entry: &str, at: &str| -> Result<(), String> {
        let entry = entry.trim();
        if entry.is_empty() || entry.starts_with('#') {
            return Ok(());
        }
        match entry.split_once(':') {
            Some((id, secret)) if !id.is_empty() && !secret.is_empty() => {
                out.insert(id.to_string(), secret.to_string());
                Ok(())
            }
            _ => Err(format!("{at}: a client is `id:secret`, got {entry:?}")),
        }
    };
    if let Some(list) = list {
        for e in list.split(',') {
            add(e, "LAKECTL_CLIENTS")?;
        }
    }
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        for (i, line) in text.lines().enumerate() {
            add(line, &format!("{}:{}", f.display(), i + 1))?;
        }
    }
    Ok(out)
}

fn restore_sigpipe() {
    // SAFETY: called before any thread is started; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. } | Command::Watch { .. }) {
        restore_sigpipe();
    }
    let color = match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let style = render::Style { color };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = match cli.command {
        Command::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&manifest::json_schema()).unwrap_or_default()
            );
            0
        }
        Command::Validate { dir, output } => validate(&dir, output),
        Command::Plan {
            dir,
            output,
            estimate,
            branch,
        } => runtime.block_on(plan_cmd(&dir, output, estimate, branch.as_deref(), style)),
        Command::Apply {
            dir,
            output,
            reapply,
            tag,
            branch,
            atomic,
        } => runtime.block_on(apply_cmd(
            &dir,
            output,
            reapply,
            tag,
            style,
            apply::ApplyOptions { branch, atomic },
        )),
        Command::Publish {
            name,
            manifests,
            delete_branch,
            atomic,
            output,
        } => runtime.block_on(publish_cmd(
            &manifests,
            &name,
            delete_branch,
            atomic,
            output,
            style,
        )),
        Command::Check {
            dir,
            table,
            branch,
            output,
        } => runtime.block_on(check_cmd(&dir, table, branch, output, style)),
        Command::Rollback {
            table,
            to,
            to_time,
            steps,
            dry_run,
            manifests,
            output,
        } => runtime.block_on(rollback_cmd(
            &manifests,
            &table,
            (to, to_time, steps),
            dry_run,
            output,
            style,
        )),
        Command::Serve {
            manifests,
            addr,
            token,
            max_upload_mb,
            query_timeout_secs,
            max_rows,
            clients,
            clients_file,
            token_ttl,
            watch_status,
        } => runtime.block_on(async {
            let clients = match parse_clients(clients.as_deref(), clients_file.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return 1;
                }
            };
            let lake = match open_or_create_lake(&manifests).await {
                Ok(l) => l,
                Err(c) => return c,
            };
            let config = lakectl::serve::ServeConfig {
                addr,
                token: token.filter(|t| !t.is_empty()),
                manifests,
                max_upload_bytes: max_upload_mb << 20,
                query_timeout: std::time::Duration::from_secs(query_timeout_secs),
                max_rows,
                clients,
                token_ttl,
                watch_status: watch_status.filter(|u| !u.is_empty()),
            };
            match lakectl::serve::serve(lake, config).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }),
        Command::Watch {
            dir,
            interval,
            addr,
            cycles,
            git_pull,
            poll,
        } => runtime.block_on(async {
            let config = lakectl::watch::WatchConfig {
                manifests: dir,
                interval,
                addr,
                max_cycles: cycles,
                git_pull,
                poll,
            };
            match lakectl::watch::watch(config).await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("error: {e}");
                    1
                }
            }
        }),
        Command::Status { url, output } => runtime.block_on(status_cmd(&url, output, style)),
        Command::Import {
            target,
            manifests,
            force,
            dry_run,
            output,
        } => runtime.block_on(import_cmd(&manifests, &target, force, dry_run, output)),
        Command::Maintain {
            table,
            dry_run,
            manifests,
            output,
        } => runtime.block_on(apply_with(
            &manifests,
            output,
            Vec::new(),
            None,
            style,
            Some(Maintenance { table, dry_run }),
            Default::default(),
        )),
        Command::Expire {
            table,
            dry_run,
            keep_last,
            max_age_days,
            manifests,
            output,
        } => runtime.block_on(expire_cmd(
            &manifests,
            &table,
            (keep_last, max_age_days),
            dry_run,
            output,
        )),
        Command::Query {
            sql,
            manifests,
            as_of,
            reference,
            format,
        } => runtime.block_on(query_cmd(
            &manifests,
            &sql,
            as_of.as_deref(),
            reference.as_deref(),
            format,
        )),
        Command::History {
            table,
            manifests,
            reference,
            output,
        } => runtime.block_on(history_cmd(
            &manifests,
            &table,
            reference.as_deref(),
            output,
            style,
        )),
    };
    ExitCode::from(code)
}

fn print_diagnostics(d: &manifest::Diagnostics, output: Output) {
    match output {
        Output::Text => {
            for e in &d.0 {
                eprintln!("error: {e}");
            }
            eprintln!("{} error(s) in manifests; nothing was changed.", d.0.len());
        }
        Output::Json => println!(
            "{}",
            serde_json::json!({"format_version": plan::PLAN_FORMAT_VERSION, "valid": false, "errors": d.0})
        ),
    }
}

fn validate(dir: &Path, output: Output) -> u8 {
    match plan::load_valid(dir) {
        Ok(set) => {
            match output {
                Output::Text => println!(
                    "{} table manifest(s) valid in {}.",
                    set.tables.len(),
                    dir.display()
                ),
                Output::Json => println!(
                    "{}",
                    serde_json::json!({
                        "format_version": plan::PLAN_FORMAT_VERSION,
                        "valid": true,
                        "errors": [],
                        "tables": set.tables.iter().map(|t| t.table_name()).collect::<Vec<_>>(),
                    })
                ),
            }
            0
        }
        Err(d) => {
            print_diagnostics(&d, output);
            1
        }
    }
}

/// Loads manifests, observes the lakehouse and diffs: the common start of plan and apply.
async fn make_plan(
    dir: &Path,
    output: Output,
    create: bool,
    options: &plan::DiffOptions,
    branch: Option<&str>,
) -> Result<(plan::Plan, Option<Lake>, ManifestSet), u8> {
    let set = plan::load_valid(dir).map_err(|d| {
        print_diagnostics(&d, output);
        1u8
    })?;
    let config = set.lake_config().map_err(|d| {
        print_diagnostics(&d, output);
        1u8
    })?;
    let lake = if create {
        Lake::open(config.clone()).await.map(Some)
    } else {
        Lake::open_existing(config.clone()).await
    }
    .map_err(|e| {
        eprintln!("error: {e}");
        1u8
    })?;
    let mut actual = lakectl::observe::observe_on(lake.as_ref(), &set, &config, branch)
        .await
        .map_err(|e| {
            eprintln!("error: {e}");
            1u8
        })?;
    if let Some(lake) = &lake {
        plan::observe_orphans(lake, &set, &mut actual, None).await;
    }
    Ok((plan::diff_with(&set, &actual, config, options), lake, set))
}

async fn plan_cmd(
    dir: &Path,
    output: PlanOutput,
    estimate: bool,
    branch: Option<&str>,
    style: render::Style,
) -> u8 {
    let diag = if output == PlanOutput::Json {
        Output::Json
    } else {
        Output::Text
    };
    let (mut plan, lake, _) = match make_plan(dir, diag, false, &Default::default(), branch).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let (true, Some(lake)) = (estimate, &lake) {
        for c in plan.changes.iter_mut() {
            if let plan::Change::Mutation(m) = c {
                match apply::mutate::estimate(lake, m).await {
                    Ok(n) => m.estimate = n,
                    Err(e) => {
                        eprintln!("error: estimating mutation `{}`: {e}", m.name);
                        return 1;
                    }
                }
            }
            if let plan::Change::Ingest(i) = c {
                match apply::keyed::estimate(lake, i).await {
                    Ok(n) => i.matching_keys = n,
                    Err(e) => {
                        eprintln!(
                            "error: estimating source `{}` of {}: {e}",
                            i.source, i.table
                        );
                        return 1;
                    }
                }
            }
        }
    }
    match output {
        PlanOutput::Text => print!("{}", render::text(&plan, style)),
        PlanOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&render::json(&plan)).unwrap_or_default()
        ),
        PlanOutput::Markdown => {
            // The checks of the tables, on the branch when there is one.
            let checks = match &lake {
                Some(lake) => {
                    match apply::publish::check_all(
                        lake,
                        &plan.audit,
                        branch.unwrap_or("main"),
                        None,
                    )
                    .await
                    {
                        Ok(c) => c,
                        Err(e) => {
                            eprintln!("error: running the checks: {e}");
                            return 1;
                        }
                    }
                }
                None => Vec::new(),
            };
            print!("{}", render::markdown(&plan, &checks, branch));
        }
    }
    if !plan.errors.is_empty() {
        1
    } else if plan.is_empty() {
        0
    } else {
        2
    }
}

/// `lakectl maintain`: what to run.
#[derive(Debug, Clone, Default)]
struct Maintenance {
    /// Only this table (`namespace.table`).
    table: Option<String>,
    dry_run: bool,
}

async fn apply_cmd(
    dir: &Path,
    output: Output,
    reapply: Vec<String>,
    tag: Option<String>,
    style: render::Style,
    options: apply::ApplyOptions,
) -> u8 {
    apply_with(dir, output, reapply, tag, style, None, options).await
}

/// `apply`, or with `maintenance` `lakectl maintain` (maintenance changes alone).
async fn apply_with(
    dir: &Path,
    output: Output,
    reapply: Vec<String>,
    tag: Option<String>,
    style: render::Style,
    maintenance: Option<Maintenance>,
    apply_options: apply::ApplyOptions,
) -> u8 {
    let options = plan::DiffOptions {
        reapply: reapply.clone(),
        maintenance_only: maintenance.is_some(),
        ..Default::default()
    };
    let branch = apply_options.branch.as_deref();
    if let Some(b) = branch {
        if let Err(e) = valid_branch(b) {
            eprintln!("error: --branch {b}: {e}");
            return 1;
        }
    }
    let (mut plan, lake, set) = match make_plan(dir, output, true, &options, branch).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    if branch.is_some() {
        // A preview carries data changes; maintenance works on `main` alone.
        plan.changes
            .retain(|c| !c.is_maintenance() && !matches!(c, plan::Change::Revert(_)));
    }
    if let Some(m) = &maintenance {
        if let Some(t) = &m.table {
            if !set.tables.iter().any(|x| &x.table_name() == t) {
                eprintln!("error: no manifest in {} declares table {t}", dir.display());
                return 1;
            }
            plan.changes.retain(|c| c.table() == Some(t.as_str()));
        }
        if plan.changes.is_empty() && plan.errors.is_empty() {
            match output {
                Output::Text => println!("No maintenance is due."),
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"plan": render::json(&plan), "applied": []})
                ),
            }
            return 0;
        }
        if m.dry_run {
            match output {
                Output::Text => print!("{}", render::text(&plan, style)),
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"plan": render::json(&plan), "applied": []})
                ),
            }
            return if plan.errors.is_empty() { 0 } else { 1 };
        }
    }
    for id in &reapply {
        if !plan.release.iter().any(|(_, r)| r == id) {
            eprintln!("error: --reapply {id}: no table holds back a change with this id");
            return 1;
        }
    }
    let Some(lake) = lake else { return 1 };
    if output == Output::Text {
        print!("{}", render::text(&plan, style));
    }
    if plan.is_empty() && plan.errors.is_empty() {
        if output == Output::Json {
            println!(
                "{}",
                serde_json::json!({"plan": render::json(&plan), "applied": []})
            );
        }
        return 0;
    }
    let (files, bytes) = plan.ingest_counts();
    let bar = progress_bar(files, bytes, output);
    let result = apply::apply_with(&lake, &plan, &apply_options, bar.clone(), |a| {
        if output == Output::Text {
            if let Some(c) = &a.checks {
                bar.println(checked_text(a, c, style));
                return;
            }
            let snap = a
                .snapshot_id
                .map(|s| format!(" (snapshot {s})"))
                .unwrap_or_default();
            let mutation = a
                .mutation
                .as_ref()
                .map(|m| {
                    if m.already_applied {
                        ": already applied".to_string()
                    } else {
                        format!(
                            ": {} row(s) changed; {} file(s) rewritten, {} removed, {} untouched ({} read)",
                            m.rows_changed,
                            m.files_rewritten,
                            m.files_removed,
                            m.files_untouched,
                            m.files_read
                        )
                    }
                })
                .unwrap_or_default();
            let maintenance = a
                .compaction
                .as_ref()
                .map(|c| {
                    format!(
                        ": {} file(s) ({}) → {} file(s) ({}) in {} partition(s), {} row(s){}",
                        c.files_in,
                        lakectl::ingest::files::human_size(c.bytes_in),
                        c.files_out,
                        lakectl::ingest::files::human_size(c.bytes_out),
                        c.partitions,
                        c.records,
                        if c.deletes_dropped > 0 {
                            format!(", {} delete file(s) applied and dropped", c.deletes_dropped)
                        } else {
                            String::new()
                        }
                    )
                })
                .or_else(|| {
                    a.orphans.as_ref().map(|o| {
                        format!(
                            ": {} file(s) ({}) deleted{}",
                            o.files_removed,
                            lakectl::ingest::files::human_size(o.bytes_removed),
                            if o.kept > 0 {
                                format!(", {} kept (referenced since, or not deletable)", o.kept)
                            } else {
                                String::new()
                            }
                        )
                    })
                })
                .or_else(|| {
                    a.expiry.as_ref().map(|e| {
                        format!(
                            ": {} snapshot(s) expired, {} kept; {} file(s) deleted",
                            e.expired_snapshots.len(),
                            e.kept_snapshots,
                            e.files_deleted
                        )
                    })
                })
                .unwrap_or_default();
            let extra = maintenance
                + &a
                .ingest
                .as_ref()
                .map(|i| {
                    let rejected = if i.rejected > 0 {
                        format!(
                            ", {} rejected → {}",
                            i.rejected,
                            i.rejects_file.clone().unwrap_or_default()
                        )
                    } else {
                        String::new()
                    };
                    let keyed = match &i.keyed {
                        Some(k) if k.mode == "upsert" => format!(
                            " ({}: {} updated, {} inserted, {} deleted; {} of {} probed file(s) rewritten)",
                            k.mode, k.updated, k.inserted, k.deleted, k.files_rewritten, k.files_probed
                        ),
                        Some(k) => format!(
                            " ({}: {} row(s) in {} file(s) replaced)",
                            k.mode, k.rows_removed, k.files_removed
                        ),
                        None => String::new(),
                    };
                    format!(
                        ": {} file(s), {} row(s), {} data file(s){keyed}{rejected}",
                        i.files, i.records, i.data_files
                    )
                })
                .unwrap_or_default()
                + &mutation;
            if a.already_applied() {
                bar.println(format!(
                    "{} {} {}: nothing to do, already applied by another writer",
                    style.green("✓"),
                    a.change,
                    a.target
                ));
                return;
            }
            let on = a
                .branch
                .as_ref()
                .map(|b| format!(" on branch {b}"))
                .unwrap_or_default();
            // Where the data work ran, when a Spark engine is configured.
            let engine = a
                .ingest
                .as_ref()
                .and_then(|i| i.engine.clone())
                .or_else(|| a.mutation.as_ref().and_then(|m| m.engine.clone()))
                .or_else(|| a.compaction.as_ref().and_then(|c| c.engine.clone()))
                .map(|e| format!(" [engine: {e}]"))
                .unwrap_or_default();
            bar.println(format!(
                "{} {} {}{extra}{snap}{on}{engine}",
                style.green("✓"),
                a.change,
                a.target
            ));
        }
    })
    .await;
    bar.finish();
    let result = match result {
        Ok(applied) => tag_applied(&lake, &set, &applied, tag.as_deref(), output, style)
            .await
            .map(|_| applied),
        Err(e) => Err(e),
    };
    match result {
        Ok(applied) => {
            if applied.iter().any(|a| a.change == "revert") {
                // The reverted tables' other changes were left out of this plan: they
                // are planned on the state the revert left.
                if output == Output::Text {
                    println!("\nReverted other writers' snapshots; planning again.\n");
                }
                return Box::pin(apply_cmd(
                    dir,
                    output,
                    Vec::new(),
                    tag,
                    style,
                    apply_options.clone(),
                ))
                .await;
            }
            match output {
                Output::Text => {
                    let (add, change, _, _) = plan.counts();
                    let raced = applied.iter().filter(|a| a.already_applied()).count();
                    let mutations_raced = applied
                        .iter()
                        .filter(|a| a.mutation.as_ref().is_some_and(|m| m.already_applied))
                        .count();
                    let change = change.saturating_sub(mutations_raced);
                    let raced = if raced > 0 {
                        format!(" ({raced} already applied by another writer)")
                    } else {
                        String::new()
                    };
                    println!(
                        "\nApply complete: {add} added, {change} changed, 0 destroyed.{raced}"
                    );
                }
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"plan": render::json(&plan), "applied": applied})
                    )
                    .unwrap_or_default()
                ),
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// A branch name lakectl accepts: no `main`, nothing a shell or a URL trips on.
fn valid_branch(name: &str) -> Result<(), String> {
    if name == "main" {
        return Err("`main` is where data is published; name another branch".into());
    }
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
    {
        return Err("a branch name is letters, digits, `-`, `_`, `.` and `/`".into());
    }
    Ok(())
}

/// A publish or a check of an apply: its line, then its check results.
fn checked_text(
    a: &apply::Applied,
    c: &apply::publish::TableChecks,
    style: render::Style,
) -> String {
    let branch = a.branch.as_deref().unwrap_or_default();
    let head = if a.change == "publish" {
        format!(
            "{} publish {} ← {branch} (snapshot {})",
            style.green("✓"),
            a.target,
            a.snapshot_id.unwrap_or_default()
        )
    } else {
        format!("checks of {} on {branch}:", a.target)
    };
    format!("{head}\n{}", render_checks(c, style))
}

/// A table's check results, one line each, with the samples of a failure.
fn render_checks(c: &apply::publish::TableChecks, style: render::Style) -> String {
    let mut out = Vec::new();
    for r in &c.results {
        let mark = if r.passed {
            style.green("✓")
        } else if r.blocks() {
            style.red("✗")
        } else {
            style.yellow("!")
        };
        let severity = if r.passed || r.blocks() {
            ""
        } else {
            " (warn)"
        };
        out.push(format!(
            "    {mark} {} [{}]{severity}: {}",
            r.name, r.kind, r.message
        ));
        for row in &r.samples {
            out.push(format!("        {row}"));
        }
    }
    out.join("\n")
}

/// `lakectl publish NAME`: fast-forwards `main` of each table with branch NAME.
async fn publish_cmd(
    dir: &Path,
    name: &str,
    delete_branch: bool,
    atomic: bool,
    output: Output,
    style: render::Style,
) -> u8 {
    if let Err(e) = valid_branch(name) {
        eprintln!("error: {name}: {e}");
        return 1;
    }
    let (plan, lake, set) = match make_plan(dir, output, false, &Default::default(), None).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let Some(lake) = lake else {
        eprintln!(
            "error: the lakehouse of {} does not exist yet",
            dir.display()
        );
        return 1;
    };
    let mut staged = Vec::new();
    for t in &set.tables {
        let table = t.table_name();
        let has = match lake.load_table(&plan::ident_of(&table)).await {
            Ok(Some(s)) => match lakectl::lake::refs(&s.metadata).get(name) {
                Some(r) if !r.is_branch() => {
                    eprintln!(
                        "error: `{name}` of {table} is a tag, not a branch: nothing to publish"
                    );
                    return 1;
                }
                Some(_) => true,
                None => false,
            },
            Ok(None) => false,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        if has {
            let changes = plan
                .changes
                .iter()
                .filter(|c| c.is_data() && c.table() == Some(table.as_str()))
                .cloned()
                .collect();
            staged.push(apply::publish::Staged {
                table,
                branch: name.to_string(),
                changes,
                verify: true,
            });
        }
    }
    if staged.is_empty() {
        eprintln!("error: no table of {} has a branch `{name}`", dir.display());
        return 1;
    }
    let mut shown = Vec::new();
    let result = apply::publish::publish(
        &lake,
        &plan,
        &staged,
        atomic || plan.atomic,
        delete_branch,
        std::sync::Arc::new(()),
        &mut |a: &apply::Applied| {
            if output == Output::Text {
                match &a.checks {
                    Some(c) => println!("{}", checked_text(a, c, style)),
                    None => println!("{} {} {}", style.green("✓"), a.change, a.target),
                }
            }
            shown.push(a.clone());
        },
    )
    .await;
    match result {
        Ok(done) => {
            match output {
                Output::Text => println!(
                    "\nPublish complete: {} table(s) published from {name}.",
                    done.len()
                ),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"branch": name, "applied": shown})
                    )
                    .unwrap_or_default()
                ),
            }
            0
        }
        Err(e) => {
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"branch": name, "applied": shown, "error": e.to_string()})
                    )
                    .unwrap_or_default()
                );
            }
            eprintln!("error: {e}");
            1
        }
    }
}

/// `lakectl check`: the declared checks on `main` (or a branch) now.
async fn check_cmd(
    dir: &Path,
    table: Option<String>,
    branch: Option<String>,
    output: Output,
    style: render::Style,
) -> u8 {
    let set = match plan::load_valid(dir) {
        Ok(s) => s,
        Err(d) => {
            print_diagnostics(&d, output);
            return 1;
        }
    };
    let audits = plan::audits(&set);
    if let Some(t) = &table {
        if !set.tables.iter().any(|x| &x.table_name() == t) {
            eprintln!("error: no manifest in {} declares table {t}", dir.display());
            return 1;
        }
    }
    let lake = match open_lake(dir).await {
        Ok(l) => l,
        Err(c) => return c,
    };
    let only = table.map(|t| vec![t]);
    let checks = match apply::publish::check_all(
        &lake,
        &audits,
        branch.as_deref().unwrap_or("main"),
        only.as_deref(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let failed = checks.iter().filter(|c| c.blocks()).count();
    match output {
        Output::Text => {
            if checks.is_empty() {
                println!("No table declares checks.");
            }
            for c in &checks {
                println!(
                    "{} on {} (snapshot {}):",
                    style.bold(&c.table),
                    c.branch,
                    c.snapshot_id
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "none".into())
                );
                println!("{}", render_checks(c, style));
            }
            let total: usize = checks.iter().map(|c| c.results.len()).sum();
            let failing: usize = checks.iter().map(|c| c.failures().count()).sum();
            if !checks.is_empty() {
                println!("\n{total} check(s), {failing} failing at error level.");
            }
        }
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"tables": checks, "failed": failed > 0})
            )
            .unwrap_or_default()
        ),
    }
    if failed > 0 {
        1
    } else {
        0
    }
}

/// Progress of ingest: a bar on a terminal (stderr), nothing otherwise.
#[derive(Clone)]
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn println(&self, line: String) {
        match &self.0 {
            Some(b) => b.println(line),
            None => println!("{line}"),
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

impl lakectl::ingest::Progress for Bar {
    fn advance(&self, bytes: u64) {
        if let Some(b) = &self.0 {
            b.inc(bytes);
        }
    }
}

fn progress_bar(files: usize, bytes: u64, output: Output) -> std::sync::Arc<Bar> {
    if files == 0 || output == Output::Json || !std::io::stderr().is_terminal() {
        return std::sync::Arc::new(Bar(None));
    }
    let b = indicatif::ProgressBar::new(bytes);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "ingest {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    std::sync::Arc::new(Bar(Some(b)))
}

/// The lakehouse a manifest directory points at, created when missing.
async fn open_or_create_lake(dir: &Path) -> Result<Lake, u8> {
    Lake::open(lake_config(dir)?).await.map_err(|e| {
        eprintln!("error: {e}");
        1
    })
}

/// The lakehouse configuration of a manifest directory.
fn lake_config(dir: &Path) -> Result<lakectl::lake::LakeConfig, u8> {
    let set = manifest::load(dir).map_err(|d| {
        print_diagnostics(&d, Output::Text);
        1u8
    })?;
    set.lake_config().map_err(|d| {
        print_diagnostics(&d, Output::Text);
        1u8
    })
}

/// The lakehouse a manifest directory points at, which must exist.
async fn open_lake(dir: &Path) -> Result<Lake, u8> {
    match Lake::open_existing(lake_config(dir)?).await {
        Ok(Some(l)) => Ok(l),
        Ok(None) => {
            eprintln!(
                "error: the lakehouse of {} does not exist yet; run `lakectl apply` first",
                dir.display()
            );
            Err(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Err(1)
        }
    }
}

async fn query_cmd(
    dir: &Path,
    sql: &str,
    as_of: Option<&str>,
    reference: Option<&str>,
    format: QueryFormat,
) -> u8 {
    let as_of_text = as_of;
    let as_of = match as_of.map(str::parse::<lakectl::query::AsOf>).transpose() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: --as-of: {e}");
            return 1;
        }
    };
    let lake = match open_lake(dir).await {
        Ok(l) => l,
        Err(c) => return c,
    };
    let result = async {
        let (ctx, empty_then) = match reference {
            Some(r) => {
                let (ctx, having) = lakectl::query::session_on_ref(&lake, r).await?;
                let read = lakectl::query::tables_read(&ctx, sql);
                if !read.is_empty() && !read.iter().any(|t| having.contains(t)) {
                    return Err(lakectl::query::QueryError::AsOf(format!(
                        "--ref {r}: none of the tables read ({}) has it",
                        read.join(", ")
                    )));
                }
                for t in read.iter().filter(|t| !having.contains(t)) {
                    eprintln!("note: {t} has no ref `{r}`: it reads as main");
                }
                (ctx, Vec::new())
            }
            None => {
                lakectl::query::session_noting(&lake, as_of, lakectl::query::pushdown_enabled())
                    .await?
            }
        };
        let batches = lakectl::query::run(&ctx, sql).await?;
        for t in lakectl::query::tables_read(&ctx, sql) {
            if empty_then.contains(&t) {
                eprintln!(
                    "note: {t} had no snapshot at --as-of {}: it reads as empty (the table did not exist or had no data yet)",
                    as_of_text.unwrap_or_default()
                );
            }
        }
        let fmt = match format {
            QueryFormat::Table => "table",
            QueryFormat::Csv => "csv",
            QueryFormat::Json => "json",
        };
        lakectl::query::render(&batches, fmt)
    }
    .await;
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn history_cmd(
    dir: &Path,
    table: &str,
    reference: Option<&str>,
    output: Output,
    style: render::Style,
) -> u8 {
    let lake = match open_lake(dir).await {
        Ok(l) => l,
        Err(c) => return c,
    };
    let ident = match table_ident(table) {
        Ok(i) => i,
        Err(c) => return c,
    };
    let state = match lake.load_table(&ident).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!("error: table {table} does not exist");
            return 1;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let state = match reference {
        None => state,
        Some(r) if state.metadata.snapshot_for_ref(r).is_none() => {
            eprintln!("error: table {table} has no branch or tag `{r}`");
            return 1;
        }
        Some(r) => {
            let mut refs = lakectl::lake::refs(&state.metadata);
            match refs.remove(r) {
                Some(tag) if !tag.is_branch() => {
                    // A tag: its snapshot's history, read as a branch would be.
                    let (name, reference) = lakectl::lake::snapshot::main_branch(tag.snapshot_id);
                    match state
                        .metadata
                        .clone()
                        .into_builder(None)
                        .set_ref(&name, reference)
                        .and_then(|b| b.build())
                    {
                        Ok(b) => lakectl::lake::TableState {
                            metadata: b.metadata,
                            ..state
                        },
                        Err(e) => {
                            eprintln!("error: {e}");
                            return 1;
                        }
                    }
                }
                _ => match lakectl::lake::on_branch(state, r) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return 1;
                    }
                },
            }
        }
    };
    let entries = match lake.history(&state.metadata).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"format_version": "1", "table": table, "snapshots": entries})
            )
            .unwrap_or_default()
        ),
        Output::Text => {
            for e in &entries {
                let mark = if e.current {
                    "*"
                } else if e.in_main {
                    " "
                } else {
                    "x"
                };
                let rows = match (e.added_records, e.total_records) {
                    (a, Some(t)) if e.deleted_records.unwrap_or(0) > 0 => format!(
                        "+{}/-{} rows, {t} total",
                        a.unwrap_or(0),
                        e.deleted_records.unwrap_or(0)
                    ),
                    (Some(a), Some(t)) if a > 0 => format!("+{a} rows, {t} total"),
                    (_, Some(t)) => format!("{t} rows"),
                    _ => String::new(),
                };
                let files = match (e.added_data_files, e.deleted_data_files) {
                    (Some(a), Some(d)) => format!(", +{a}/-{d} files"),
                    (Some(a), None) if a > 0 => format!(", +{a} files"),
                    _ => String::new(),
                };
                println!(
                    "{mark} {}  {}  {:<9} {rows}{files}",
                    style.bold(&e.snapshot_id.to_string()),
                    e.time,
                    e.operation
                );
                if let Some(a) = &e.annotation {
                    println!("      {}: {}", style.yellow(&a.change), a.details);
                    let mut from = a.manifest.clone().unwrap_or_default();
                    if let Some(c) = &a.git_commit {
                        from.push_str(&format!(" @ {c}"));
                    }
                    println!("      {}", style.dim(&format!("{from}  [{}]", a.change_id)));
                }
                for f in &e.ingested_files {
                    println!("      + {f}");
                }
            }
            println!(
                "\n* current   x not in {} (rolled back)",
                reference.unwrap_or("main")
            );
        }
    }
    0
}

/// Tags the snapshot each changed table ended at: `--tag NAME`, and
/// `lakectl-apply-<time>` where the manifest sets `spec.retention.tagApplies`.
async fn import_cmd(dir: &Path, target: &str, force: bool, dry_run: bool, output: Output) -> u8 {
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("error: {}: {e}", dir.display());
        return 1;
    }
    let set = match plan::load_valid(dir) {
        Ok(s) => s,
        Err(d) => {
            print_diagnostics(&d, output);
            return 1;
        }
    };
    let lake = match open_lake(dir).await {
        Ok(l) => l,
        Err(c) => return c,
    };
    let result = match lakectl::import::resolve(&lake, target).await {
        Ok(tables) => lakectl::import::import(&lake, &set, dir, &tables, force, dry_run).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(done) => {
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"format_version": "1", "dry_run": dry_run, "imported": done})
                    )
                    .unwrap_or_default()
                ),
                Output::Text => {
                    for i in &done {
                        let snap = i
                            .snapshot_id
                            .map(|s| format!(" (baseline snapshot {s})"))
                            .unwrap_or_default();
                        let verb = match (i.action, dry_run) {
                            ("created", false) => "wrote",
                            ("created", true) => "would write",
                            ("updated", false) => "adopted drift into",
                            ("updated", true) => "would adopt drift into",
                            _ => "already matches",
                        };
                        println!("{}: {verb} {}{snap}", i.table, i.file.display());
                        for a in &i.adopted {
                            println!("    adopted: {a}");
                        }
                    }
                }
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

async fn tag_applied(
    lake: &Lake,
    set: &ManifestSet,
    applied: &[apply::Applied],
    tag: Option<&str>,
    output: Output,
    style: render::Style,
) -> Result<(), apply::ApplyError> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let mut last: Vec<(String, i64)> = Vec::new();
    for a in applied {
        // What was staged on a branch (not published) is not on `main`.
        if a.branch.is_some() && a.change != "publish" {
            continue;
        }
        let table = a.target.split(' ').next().unwrap_or(&a.target).to_string();
        if let Some(id) = a.snapshot_id {
            last.retain(|(t, _)| *t != table);
            last.push((table, id));
        }
    }
    for (table, id) in last {
        let Some(m) = set.tables.iter().find(|t| t.table_name() == table) else {
            continue;
        };
        let r = &m.value.spec.retention;
        let max_age = r.tag_max_age_days.map(|d| d as i64 * 86_400_000);
        let mut names: Vec<String> = tag.map(|t| vec![t.to_string()]).unwrap_or_default();
        if r.tag_applies {
            names.push(format!("lakectl-apply-{stamp}"));
        }
        let ident = plan::ident_of(&table);
        for name in names {
            apply::expire::tag(lake, &ident, &name, id, max_age).await?;
            if output == Output::Text {
                println!(
                    "{} tag {table} snapshot {id} as {}",
                    style.green("✓"),
                    style.bold(&name)
                );
            }
        }
    }
    Ok(())
}

fn table_ident(table: &str) -> Result<iceberg::TableIdent, u8> {
    let Some((ns, name)) = table.rsplit_once('.') else {
        eprintln!("error: name the table as namespace.table");
        return Err(1);
    };
    iceberg::NamespaceIdent::from_strs(ns.split('.'))
        .map(|n| iceberg::TableIdent::new(n, name.to_string()))
        .map_err(|e| {
            eprintln!("error: {e}");
            1
        })
}

async fn rollback_cmd(
    dir: &Path,
    table: &str,
    target: (Option<i64>, Option<String>, Option<usize>),
    dry_run: bool,
    output: Output,
    style: render::Style,
) -> u8 {
    use apply::rollback::Target;
    let target = match target {
        (Some(id), None, None) => Target::Snapshot(id),
        (None, Some(t), None) => match chrono::DateTime::parse_from_rfc3339(&t) {
            Ok(t) => Target::Time(t.timestamp_millis()),
            Err(e) => {
                eprintln!("error: --to-time {t}: {e} (use RFC 3339, e.g. 2024-05-01T12:00:00Z)");
                return 1;
            }
        },
        (None, None, Some(n)) => Target::Steps(n),
        _ => {
            eprintln!(
                "error: give exactly one of --to SNAPSHOT_ID, --to-time TIMESTAMP, --steps N"
            );
            return 1;
        }
    };
    let ident = match table_ident(table) {
        Ok(i) => i,
        Err(c) => return c,
    };
    let lake = match open_lake(dir).await {
        Ok(l) => l,
        Err(c) => return c,
    };
    let r = match apply::rollback::rollback(&lake, &ident, target, dry_run).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"format_version": "1", "rollback": r})
            )
            .unwrap_or_default()
        ),
        Output::Text => {
            let from = r
                .from_snapshot
                .map(|s| s.to_string())
                .unwrap_or("none".into());
            println!(
                "{} rollback {}: main {from} → {} ({})",
                style.yellow("~"),
                style.bold(&r.table),
                r.to_snapshot,
                r.to_time
            );
            if let (Some(a), Some(b)) = (r.rows_before, r.rows_after) {
                println!("    rows: {a} → {b}");
            }
            if let Some((a, b)) = r.schema_id {
                println!("    schema: {a} → {b}");
                print!(
                    "{}",
                    render::schema_diff(&r.schema_before, &r.schema_after, style)
                );
            }
            if let Some((a, b)) = r.spec_id {
                println!("    partition spec: {a} → {b}");
            }
            if let Some((a, b)) = r.sort_order_id {
                println!("    sort order: {a} → {b}");
            }
            for h in &r.held_back {
                println!(
                    "    {} {} (snapshot {}): {}  [{}]",
                    style.yellow("held back:"),
                    h.change,
                    h.snapshot_id,
                    h.details,
                    h.change_id
                );
            }
            for id in &r.released {
                println!("    {} {id}", style.green("back in main:"));
            }
            if r.committed {
                println!("\nRollback complete. Held-back changes stay out until the manifest drops them or `lakectl apply --reapply ID`.");
            } else {
                println!("\nDry run: nothing was changed.");
            }
        }
    }
    0
}

async fn expire_cmd(
    dir: &Path,
    table: &str,
    overrides: (Option<u32>, Option<u64>),
    dry_run: bool,
    output: Output,
) -> u8 {
    let ident = match table_ident(table) {
        Ok(i) => i,
        Err(c) => return c,
    };
    let lake = match open_lake(dir).await {
        Ok(l) => l,
        Err(c) => return c,
    };
    let spec = manifest::load(dir)
        .ok()
        .and_then(|set| {
            set.tables
                .iter()
                .find(|t| t.table_name() == table)
                .map(|t| t.value.spec.retention.clone())
        })
        .unwrap_or_default();
    let mut retention = apply::expire::Retention::from_spec(&spec);
    if let Some(n) = overrides.0 {
        retention.keep_last = n.max(1) as usize;
    }
    if let Some(d) = overrides.1 {
        retention.max_age_ms = d as i64 * 86_400_000;
    }
    let e = match apply::expire::expire(&lake, &ident, retention, dry_run).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"format_version": "1", "expire": e}))
                .unwrap_or_default()
        ),
        Output::Text => {
            println!(
                "{}: {} snapshot(s) to expire, {} kept; {} file(s) ({}) only they reference; {} tag(s) past their age",
                e.table,
                e.expired_snapshots.len(),
                e.kept_snapshots,
                e.files_to_delete.len(),
                lakectl::ingest::files::human_size(e.bytes_to_delete),
                e.expired_refs.len()
            );
            for id in &e.expired_snapshots {
                println!("  - snapshot {id}");
            }
            if e.committed {
                println!(
                    "Expired. {} file(s) deleted; {} ledger entr(ies) archived.",
                    e.files_deleted, e.archived_changes
                );
            } else if dry_run {
                println!("Dry run: nothing was changed.");
            }
        }
    }
    0
}

/// `60`, `60s`, `500ms`, `5m`, `1h`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration"))?;
    let ms = match unit {
        "ms" => n,
        "s" | "" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("`{s}`: use ms, s, m or h")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

async fn status_cmd(url: &str, output: Output, style: render::Style) -> u8 {
    let v = match lakectl::watch::fetch_status(&reqwest::Client::new(), url).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Output::Text => {
            if let Some(e) = v["error"].as_str() {
                println!("{} {e}", style.red("error:"));
            }
            for (name, t) in v["tables"].as_object().cloned().unwrap_or_default() {
                let cond = t["condition"].as_str().unwrap_or("?");
                let painted = match cond {
                    "Ready" => style.green(cond),
                    "Degraded" => style.red(cond),
                    _ => style.yellow(cond),
                };
                println!(
                    "{name:<30} {painted:<12} {}: {}",
                    t["reason"].as_str().unwrap_or(""),
                    t["message"].as_str().unwrap_or("")
                );
            }
        }
    }
    let degraded = v["tables"]
        .as_object()
        .is_some_and(|m| m.values().any(|t| t["condition"] == "Degraded"));
    u8::from(degraded || v["error"].is_string())
}
