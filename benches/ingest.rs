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

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const LAKECTL: &str = env!("CARGO_BIN_EXE_lakectl");

/// Deterministic CSV: 30 days of January 2024, 8 regions, 100 products.
fn generate(path: &Path, rows: u64) {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    writeln!(f, "id,ts,region,product,qty,price").unwrap();
    let regions = [
        "eu-west", "eu-north", "us-east", "us-west", "apac", "latam", "mea", "anz",
    ];
    let mut x: u64 = 0x2545F4914F6CDD1D; // fixed seed (xorshift64)
    let start = 1_704_067_200u64; // 2024-01-01T00:00:00Z
    for id in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let secs = start + x % (30 * 86_400);
        let (d, s) = (secs / 86_400, secs % 86_400);
        let day = d - start / 86_400 + 1;
        writeln!(
            f,
            "{id},2024-01-{day:02}T{:02}:{:02}:{:02}Z,{},p{:03},{},{}.{:02}",
            s / 3600,
            (s / 60) % 60,
            s % 60,
            regions[(x >> 20) as usize % 8],
            (x >> 24) % 100,
            1 + (x >> 32) % 20,
            (x >> 40) % 500,
            (x >> 48) % 100
        )
        .unwrap();
    }
}

/// Runs a command to completion: (wall seconds, peak RSS in MiB, stdout). The peak is
/// the child's `VmHWM` (high-water RSS of the exec'd program), sampled every 2 ms
/// until it exits; `wait4`'s `ru_maxrss` is not used because Linux folds the
/// pre-exec (forked) image's high-water mark into it.
fn measure(cmd: &mut Command) -> (f64, f64, String) {
    let t0 = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let readers = std::thread::spawn(move || {
        use std::io::Read;
        let (mut out, mut err) = (String::new(), String::new());
        if let Some(mut s) = stdout {
            s.read_to_string(&mut out).ok();
        }
        if let Some(mut s) = stderr {
            s.read_to_string(&mut err).ok();
        }
        (out, err)
    });
    let mut peak_kb = 0u64;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak_kb = peak_kb.max(kb);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let status = child.wait().expect("wait");
    let (out, err) = readers.join().expect("readers");
    assert!(status.success(), "command failed:\n{out}\n{err}");
    (elapsed, peak_kb as f64 / 1024.0, out)
}

fn python() -> PathBuf {
    std::env::var_os("LAKECTL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/lakectl-venv/bin/python")
        })
}

fn manifest(csv: &Path) -> String {
    format!(
        r#"apiVersion: lakectl/v1
kind: Table
metadata: {{name: sales, namespace: bench}}
spec:
  columns:
    - {{name: id, type: long}}
    - {{name: ts, type: timestamptz}}
    - {{name: region, type: string}}
    - {{name: product, type: string}}
    - {{name: qty, type: int}}
    - {{name: price, type: double}}
  partitioning:
    - {{column: ts, transform: day}}
  sources:
    - {{name: generated, uri: "{}"}}
"#,
        csv.display()
    )
}

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
