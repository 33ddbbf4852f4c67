//! Copy-on-write UPDATE benchmark (not a test): a narrow update (one day of 30 and
//! `qty <= 6`: about 1% of the rows) on a table partitioned by day(ts), by
//! `lakectl apply` with a declared mutation and, in the same run on an identical copy,
//! by PyIceberg 0.12's `overwrite(df, overwrite_filter=…)`
//! (`benches/pyiceberg_update.py`). Each is a whole process. Prints wall times, the
//! ratio, the data files each rewrote, how many files the day holds, and checks both
//! tables end with the same rows.
//!
//!   cargo bench --bench mutate                      # 10M rows
//!   BENCH_ROWS=1000000 cargo bench --bench mutate   # other sizes (comma-separated)

mod common;

use std::path::Path;
use std::process::Command;

use common::{generate, manifest, measure, python};

const LAKECTL: &str = env!("CARGO_BIN_EXE_lakectl");
const DAY: u32 = 15;
const MAX_QTY: u32 = 6;

fn query(sql: &str, manifests: &Path) -> String {
    let out = Command::new(LAKECTL)
        .args(["query", sql, "--format", "csv", "--manifests"])
        .arg(manifests)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn mutation() -> String {
    format!(
        r#"  policy: {{maxMutationShare: 0.05}}
  mutations:
    - name: bump-day-{DAY}
      update:
        where: "ts >= TIMESTAMP '2024-01-{DAY:02}T00:00:00Z' AND ts < TIMESTAMP '2024-01-{:02}T00:00:00Z' AND qty <= {MAX_QTY}"
        set: {{qty: qty + 100}}
"#,
        DAY + 1
    )
}

/// A project with the CSV ingested by lakectl.
fn project(dir: &Path, csv: &Path) -> std::path::PathBuf {
    let m = dir.join("manifests");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("sales.yaml"), manifest(csv)).unwrap();
    let out = Command::new(LAKECTL).arg("apply").arg(&m).output().unwrap();
    assert!(out.status.success());
    m
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<u64> = std::env::var("BENCH_ROWS")
        .unwrap_or_else(|_| "10000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let work = tempfile::tempdir().expect("tempdir");
    println!(
        "lakectl {} vs PyIceberg 0.12 overwrite(overwrite_filter=…): copy-on-write update of day {DAY} with qty <= {MAX_QTY}, whole processes",
        env!("CARGO_PKG_VERSION")
    );
    println!(
        "{:>11} {:>9} {:>10} {:>12} {:>7} {:>10} {:>15} {:>17}",
        "rows",
        "changed",
        "lakectl s",
        "pyiceberg s",
        "ratio",
        "day files",
        "lakectl rewrote",
        "pyiceberg deleted"
    );
    for rows in sizes {
        let csv = work.path().join(format!("sales-{rows}.csv"));
        generate(&csv, rows);
        let l = project(&work.path().join(format!("l-{rows}")), &csv);
        let p = project(&work.path().join(format!("p-{rows}")), &csv);
        // lakectl: declare the mutation; the plan names the files that may match (the
        // day's files, from partition values and column statistics); apply.
        let yaml = std::fs::read_to_string(l.join("sales.yaml")).unwrap();
        std::fs::write(l.join("sales.yaml"), yaml + &mutation()).unwrap();
        let plan = Command::new(LAKECTL)
            .args(["plan", "--output", "json"])
            .arg(&l)
            .output()
            .unwrap();
        let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("plan JSON");
        let day_files = plan["changes"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["kind"] == "mutation"))
            .and_then(|c| c["candidates"].as_array())
            .map(|c| c.len())
            .unwrap_or(0);
        let (l_s, _, out) = measure(
            Command::new(LAKECTL)
                .arg("apply")
                .arg(&l)
                .env("NO_COLOR", "1"),
        );
        let line = out
            .lines()
            .find(|x| x.contains("row(s) changed"))
            .unwrap_or_default()
            .to_string();
        let changed: u64 = line
            .split(": ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let rewrote: u64 = line
            .split("changed; ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);

        // PyIceberg: the same update on the identical copy.
        let db = p.parent().unwrap().join(".lakectl/catalog.db");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pyiceberg_update.py");
        let (p_s, _, out) = measure(
            Command::new(python())
                .arg(script)
                .arg(&db)
                .arg(DAY.to_string())
                .arg(MAX_QTY.to_string()),
        );
        let py: serde_json::Value = serde_json::from_str(out.trim()).expect("pyiceberg JSON");
        assert_eq!(py["rows_changed"].as_u64(), Some(changed), "{py}");

        // Same rows in both tables afterwards.
        let check = "select count(*), sum(qty) from bench.sales";
        assert_eq!(query(check, &l), query(check, &p), "tables differ");

        println!(
            "{:>11} {:>9} {:>10.2} {:>12.2} {:>6.2}x {:>10} {:>15} {:>17}",
            rows,
            changed,
            l_s,
            p_s,
            p_s / l_s,
            day_files,
            rewrote,
            py["deleted_data_files"]
        );
        let _ = std::fs::remove_dir_all(l.parent().unwrap());
        let _ = std::fs::remove_dir_all(p.parent().unwrap());
        let _ = std::fs::remove_file(&csv);
    }
}
