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
    let actual = plan::observe(lake.as_ref(), &set).await.map_err(|e| {
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
