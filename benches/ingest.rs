//! Ingest benchmark (not a test): generated CSVs (id, ts, region, product, qty, price;
//! fixed seed) ingested into a table partitioned by day(ts), by `lakectl apply` and, in
//! the same run, by PyIceberg + pyarrow (`benches/pyiceberg_ingest.py`), each as a
//! whole process. Prints wall times, the ratio and both peak RSS (each child's own
//! `VmHWM`).
//!
//!   cargo bench --bench ingest                      # 1M and 10M rows
//!   BENCH_ROWS=2000000 cargo bench --bench ingest   # other sizes (comma-separated)
//!
//! Needs the reader env (`../shared/oracle/setup.sh ~/.cache/lakectl-venv`, or
//! `LAKECTL_PYTHON`).

use std::path::Path;
use std::process::Command;

use common::{generate, manifest, measure, python};

const LAKECTL: &str = env!("CARGO_BIN_EXE_lakectl");

mod common;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo bench --list
    }
    let sizes: Vec<u64> = std::env::var("BENCH_ROWS")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let work = tempfile::tempdir().expect("tempdir");
    println!("lakectl {} vs PyIceberg 0.12 + pyarrow, CSV → Iceberg partitioned by day(ts), whole processes", env!("CARGO_PKG_VERSION"));
    println!(
        "{:>11} {:>9} {:>12} {:>12} {:>7} {:>13} {:>13}",
        "rows", "CSV MB", "lakectl s", "pyiceberg s", "ratio", "lakectl MiB", "pyiceberg MiB"
    );
    for rows in sizes {
        let csv = work.path().join(format!("sales-{rows}.csv"));
        generate(&csv, rows);
        let mb = std::fs::metadata(&csv).unwrap().len() as f64 / 1e6;
        // Warm the page cache for both.
        let _ = std::fs::read(&csv);

        let project = work.path().join(format!("lakectl-{rows}"));
        std::fs::create_dir_all(project.join("manifests")).unwrap();
        std::fs::write(project.join("manifests/sales.yaml"), manifest(&csv)).unwrap();
        let (l_s, l_mb, _) = measure(
            Command::new(LAKECTL)
                .arg("apply")
                .arg(project.join("manifests"))
                .env("NO_COLOR", "1"),
        );
        let count = Command::new(LAKECTL)
            .args([
                "query",
                "select count(*) as n from bench.sales",
                "--format",
                "csv",
                "--manifests",
            ])
            .arg(project.join("manifests"))
            .output()
            .unwrap();
        let n = String::from_utf8_lossy(&count.stdout)
            .lines()
            .nth(1)
            .unwrap_or("?")
            .to_string();
        assert_eq!(n, rows.to_string(), "lakectl ingested {n} rows");

        let pywork = work.path().join(format!("pyiceberg-{rows}"));
        std::fs::create_dir_all(&pywork).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pyiceberg_ingest.py");
        let (p_s, p_mb, out) = measure(Command::new(python()).arg(script).arg(&csv).arg(&pywork));
        assert_eq!(
            out.trim(),
            rows.to_string(),
            "PyIceberg appended {out} rows"
        );

        println!(
            "{:>11} {:>9.1} {:>12.2} {:>12.2} {:>6.2}x {:>13.0} {:>13.0}",
            rows,
            mb,
            l_s,
            p_s,
            p_s / l_s,
            l_mb,
            p_mb
        );
        let _ = std::fs::remove_dir_all(&project);
        let _ = std::fs::remove_dir_all(&pywork);
        let _ = std::fs::remove_file(&csv);
    }
}
