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
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Make the tables match the manifests: one Iceberg commit per change. Exit 0 or 1.
    Apply {
        #[arg(default_value = "manifests")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Run read-only SQL (DataFusion) over the lakehouse; tables are `namespace.table`.
    Query {
        sql: String,
        /// Manifest directory whose lakehouse to query.
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
        /// Time travel: a snapshot id, or a timestamp (RFC 3339) for every table.
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
        format: QueryFormat,
    },
    /// A table's snapshots, newest first, with what lakectl did in each.
    History {
        /// `namespace.table`
        table: String,
        #[arg(long, default_value = "manifests")]
        manifests: PathBuf,
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

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Color {
    Auto,
    Always,
    Never,
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
        Command::Plan { dir, output } => runtime.block_on(plan_cmd(&dir, output, style)),
        Command::Apply { dir, output } => runtime.block_on(apply_cmd(&dir, output, style)),
        Command::Query {
            sql,
            manifests,
            as_of,
            format,
        } => runtime.block_on(query_cmd(&manifests, &sql, as_of.as_deref(), format)),
        Command::History {
            table,
            manifests,
            output,
        } => runtime.block_on(history_cmd(&manifests, &table, output, style)),
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
    match ManifestSet::load_valid(dir) {
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
) -> Result<(plan::Plan, Option<Lake>), u8> {
    let set = ManifestSet::load_valid(dir).map_err(|d| {
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
    let actual = plan::observe(lake.as_ref(), &set, &config)
        .await
        .map_err(|e| {
            eprintln!("error: {e}");
            1u8
        })?;
    Ok((plan::diff(&set, &actual, config), lake))
}

async fn plan_cmd(dir: &Path, output: Output, style: render::Style) -> u8 {
    let (plan, _) = match make_plan(dir, output, false).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    match output {
        Output::Text => print!("{}", render::text(&plan, style)),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&render::json(&plan)).unwrap_or_default()
        ),
    }
    if !plan.errors.is_empty() {
        1
    } else if plan.is_empty() {
        0
    } else {
        2
    }
}

async fn apply_cmd(dir: &Path, output: Output, style: render::Style) -> u8 {
    let (plan, lake) = match make_plan(dir, output, true).await {
        Ok(p) => p,
        Err(code) => return code,
    };
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
    let result = apply::apply(&lake, &plan, bar.clone(), |a| {
        if output == Output::Text {
            let snap = a
                .snapshot_id
                .map(|s| format!(" (snapshot {s})"))
                .unwrap_or_default();
            let extra = a
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
                    format!(
                        ": {} file(s), {} row(s), {} data file(s){rejected}",
                        i.files, i.records, i.data_files
                    )
                })
                .unwrap_or_default();
            bar.println(format!(
                "{} {} {}{extra}{snap}",
                style.green("✓"),
                a.change,
                a.target
            ));
        }
    })
    .await;
    bar.finish();
    match result {
        Ok(applied) => {
            match output {
                Output::Text => {
                    let (add, change, _, _) = plan.counts();
                    println!("\nApply complete: {add} added, {change} changed, 0 destroyed.");
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

/// The lakehouse a manifest directory points at, which must exist.
async fn open_lake(dir: &Path) -> Result<Lake, u8> {
    let set = manifest::load(dir).map_err(|d| {
        print_diagnostics(&d, Output::Text);
        1u8
    })?;
    let config = set.lake_config().map_err(|d| {
        print_diagnostics(&d, Output::Text);
        1u8
    })?;
    match Lake::open_existing(config).await {
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

async fn query_cmd(dir: &Path, sql: &str, as_of: Option<&str>, format: QueryFormat) -> u8 {
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
        let ctx = lakectl::query::session(&lake, as_of).await?;
        let batches = lakectl::query::run(&ctx, sql).await?;
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

async fn history_cmd(dir: &Path, table: &str, output: Output, style: render::Style) -> u8 {
    let lake = match open_lake(dir).await {
        Ok(l) => l,
        Err(c) => return c,
    };
    let Some((ns, name)) = table.rsplit_once('.') else {
        eprintln!("error: name the table as namespace.table");
        return 1;
    };
    let ident = match iceberg::NamespaceIdent::from_strs(ns.split('.')) {
        Ok(n) => iceberg::TableIdent::new(n, name.to_string()),
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
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
    let entries = lakectl::lake::history::history(&state.metadata);
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
            println!("\n* current   x not in main (rolled back)");
        }
    }
    0
}
