//! Helpers shared by the benchmarks: the generated data, whole-process measurement,
//! the reader env and the benchmark table's manifest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Deterministic CSV: 30 days of January 2024, 8 regions, 100 products.
pub fn generate(path: &Path, rows: u64) {
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
pub fn measure(cmd: &mut Command) -> (f64, f64, String) {
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

pub fn python() -> PathBuf {
    std::env::var_os("LAKECTL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/lakectl-venv/bin/python")
        })
}

pub fn manifest(csv: &Path) -> String {
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
