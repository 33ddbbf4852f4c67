//! The Spark engine (`spec.engine.type: spark`) on a real Spark standalone cluster on
//! 127.0.0.1: a master and two workers of one core, started once for the whole binary
//! with pyspark's own `spark-class` (Spark 3.5 + Iceberg 1.10, `../shared/spark`).
//!
//! The same manifests applied with the local engine and through the cluster give the
//! same rows (lakectl, PyIceberg and DuckDB read them); a job that fails on a bad row
//! commits nothing; lakectl killed during a job leaves `main` as it was, and the next
//! apply applies the change once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{read_both, text, Project, LAKECTL};

/// The cluster's master URL, the cluster started on first use. Its processes are
/// children of a thread that lives as long as the test binary and die with it
/// (PR_SET_PDEATHSIG).
fn cluster() -> &'static str {
    static MASTER: OnceLock<String> = OnceLock::new();
    MASTER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let started = start_cluster();
            tx.send(started).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().unwrap()
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `SPARK_HOME`: pyspark's own directory in the Spark venv.
fn spark_home() -> PathBuf {
    let (python, _) = crate::common::spark_env();
    let out = Command::new(python)
        .args([
            "-c",
            "import os, pyspark; print(os.path.dirname(pyspark.__file__))",
        ])
        .output()
        .expect("run the Spark venv's python");
    assert!(out.status.success(), "{}", text(&out));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn spawn_dying_with_parent(cmd: &mut Command) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().expect("start a Spark daemon")
}

fn start_cluster() -> String {
    let home = spark_home();
    let class = home.join("bin/spark-class");
    let dir = std::env::temp_dir().join(format!("lakectl-spark-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let master = format!("spark://127.0.0.1:{port}");
    let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
    let daemon = |args: &[&str], name: &str| {
        let mut cmd = Command::new(&class);
        cmd.args(args)
            .env("SPARK_HOME", &home)
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            .env("SPARK_WORKER_DIR", dir.join("work"))
            .stdin(Stdio::null())
            .stdout(log(&format!("{name}.out")))
            .stderr(log(&format!("{name}.log")));
        spawn_dying_with_parent(&mut cmd)
    };
    let mut daemons = vec![daemon(
        &[
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--webui-port",
            &free_port().to_string(),
        ],
        "master",
    )];
    for w in 0..2 {
        daemons.push(daemon(
            &[
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                "127.0.0.1",
                "--cores",
                "1",
                "--memory",
                "1g",
                "--webui-port",
                &free_port().to_string(),
                &master,
            ],
            &format!("worker{w}"),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let registered = (0..2)
            .filter(|w| {
                std::fs::read_to_string(dir.join(format!("worker{w}.log")))
                    .is_ok_and(|l| l.contains("Successfully registered with master"))
            })
            .count();
        if registered == 2 {
            break;
        }
        for d in daemons.iter_mut() {
            if let Ok(Some(status)) = d.try_wait() {
                panic!(
                    "a Spark daemon exited ({status}); logs in {}",
                    dir.display()
                );
            }
        }
        assert!(
            Instant::now() < deadline,
            "the Spark workers did not register with {master} in 120 s; logs in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::mem::forget(daemons);
    master
}

/// The Lakehouse document of a project whose data work goes to the cluster.
fn spark_lakehouse(master: &str) -> String {
    let (_, jars) = crate::common::spark_env();
    let jars: Vec<String> = jars.split(',').map(|j| format!("\"{j}\"")).collect();
    format!(
        "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata: {{name: spark}}\nspec:\n  catalog: {{type: sql, uri: \"sqlite:../.lakectl/catalog.db\"}}\n  warehouse: ../.lakectl/warehouse\n  engine:\n    type: spark\n    master: {master}\n    submit: \"{}\"\n    jars: [{}]\n    conf: {{spark.executor.memory: 768m, spark.sql.shuffle.partitions: \"4\"}}\n    minBytes: 0\n",
        spark_home().join("bin/spark-submit").display(),
        jars.join(", ")
    )
}

/// `lakectl ARGS` in `p` with the Spark driver's Python.
fn lakectl(p: &Project) -> Command {
    let (python, _) = crate::common::spark_env();
    let mut cmd = Command::new(LAKECTL);
    cmd.current_dir(p.root())
        .env("NO_COLOR", "1")
        .env("PYSPARK_PYTHON", &python)
        .env("PYSPARK_DRIVER_PYTHON", &python)
        .env("SPARK_LOCAL_IP", "127.0.0.1");
    cmd
}

fn apply(p: &Project) -> String {
    let out = lakectl(p).args(["apply", "manifests"]).output().unwrap();
    assert!(out.status.success(), "apply failed:\n{}", text(&out));
    text(&out)
}

const EVENTS: &str = "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: events\n  namespace: shop\nspec:\n  columns:\n    - {name: id, type: long, required: true}\n    - {name: ts, type: timestamptz}\n    - {name: region, type: string}\n    - {name: qty, type: int}\n    - {name: price, type: \"decimal(10, 2)\"}\n  partitioning:\n    - {column: region, transform: identity}\n  maintenance:\n    compaction: {minInputFiles: 2}\n  sources:\n    - {name: bulk, uri: ../data/bulk/*.csv}\n    - {name: late, uri: ../data/late/*.csv}\n  mutations:\n    - name: spread\n      maxRowsChanged: 1000000\n      update:\n        where: id % 10 = 3\n        set: {qty: qty + 1000}\n";

const PEOPLE: &str = "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: people\n  namespace: shop\nspec:\n  columns:\n    - {name: id, type: long, required: true}\n    - {name: name, type: string}\n    - {name: score, type: long}\n  identifierFields: [id]\n  sources:\n    - {name: feed, uri: ../data/people/*.csv, mode: upsert, cdc: {opColumn: op}}\n";

const REGIONS: [&str; 4] = ["eu", "us", "apac", "latam"];

fn write_bulk(dir: &Path, files: usize, rows: usize, first: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut id = first;
    for f in 0..files {
        let mut w = std::io::BufWriter::new(
            std::fs::File::create(dir.join(format!("part-{f:02}.csv"))).unwrap(),
        );
        writeln!(w, "id,ts,region,qty,price").unwrap();
        for _ in 0..rows {
            writeln!(
                w,
                "{id},2024-01-{:02}T{:02}:{:02}:00Z,{},{},{}.{:02}",
                1 + id % 28,
                id % 24,
                id % 60,
                REGIONS[id % 4],
                id % 7,
                id % 500,
                id % 100
            )
            .unwrap();
            id += 1;
        }
    }
}

fn write_people(p: &Project, name: &str, body: &str) {
    let dir = p.root().join("data/people");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), body).unwrap();
}

/// The answers both projects must agree on.
fn answers(p: &Project) -> String {
    let q = "select count(*) as n, sum(id) as ids, sum(qty) as qty, sum(price) as price, count(distinct region) as regions from shop.events";
    let events = lakectl(p)
        .args(["query", "--format", "json", q])
        .output()
        .unwrap();
    assert!(events.status.success(), "{}", text(&events));
    let people = lakectl(p)
        .args([
            "query",
            "--format",
            "json",
            "select id, name, score from shop.people order by id",
        ])
        .output()
        .unwrap();
    assert!(people.status.success(), "{}", text(&people));
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&events.stdout).trim(),
        String::from_utf8_lossy(&people.stdout).trim()
    )
}

#[test]
fn the_spark_engine_gives_the_rows_the_local_engine_gives() {
    let master = cluster();
    let spark = Project::new();
    let local = Project::new();
    spark.write("lakehouse.yaml", &spark_lakehouse(master));
    for p in [&spark, &local] {
        p.write("events.yaml", EVENTS);
        p.write("people.yaml", PEOPLE);
        // 1M rows in 4 files; then 3 small files into the same partitions.
        write_bulk(&p.root().join("data/bulk"), 4, 250_000, 0);
        write_people(
            p,
            "1.csv",
            "op,id,name,score\nI,1,ada,10\nI,2,grace,20\nI,3,alan,30\nI,2,grace h,21\n",
        );
    }
    // The ingest, then the mutation on the rows it brought, then the upsert.
    let out = apply(&spark);
    assert!(
        out.contains("spark: step 1/1: ingest of 4 file(s)"),
        "the ingest did not go to Spark:\n{out}"
    );
    assert!(out.contains("spark: stage"), "no job progress:\n{out}");
    local.apply_ok();
    assert_eq!(answers(&spark), answers(&local));

    for p in [&spark, &local] {
        write_bulk(&p.root().join("data/late"), 3, 10, 2_000_000);
        write_people(
            p,
            "2.csv",
            "op,id,name,score\nU,1,ada l,11\nD,3,,\nI,4,edsger,40\n",
        );
    }
    apply(&spark);
    local.apply_ok();
    // The compaction the late files call for.
    let out = apply(&spark);
    assert!(out.contains("✓ compact shop.events"), "{out}");
    local.apply_ok();
    let (code, plan) = {
        let o = lakectl(&spark)
            .args(["plan", "manifests"])
            .output()
            .unwrap();
        (o.status.code(), text(&o))
    };
    assert_eq!(
        code,
        Some(0),
        "the plan after Spark's changes is not empty:\n{plan}"
    );

    let both = answers(&spark);
    assert_eq!(both, answers(&local));
    assert!(
        both.contains(r#""n":1000030"#),
        "1M + 30 rows expected: {both}"
    );
    assert!(
        both.contains(r#"{"id":1,"name":"ada l","score":11}"#)
            && !both.contains(r#""id":3"#)
            && both.contains(r#"{"id":2,"name":"grace h","score":21}"#),
        "the upsert's last row per key, CDC delete of 3: {both}"
    );
    // Independent readers agree with lakectl on what the Spark engine committed.
    assert_read(&spark, "shop.events", 1_000_030);
    // Every change is lakectl's own snapshot, annotated; the jobs' scratch commits are
    // not in the history and no scratch branch is left.
    let history = lakectl(&spark)
        .args(["history", "shop.events", "--output", "json"])
        .output()
        .unwrap();
    let h: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let entries = h["snapshots"].as_array().expect("history entries");
    let changes: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["annotation"]["change"].as_str())
        .collect();
    assert_eq!(
        changes,
        ["compact", "ingest", "mutation", "ingest", "create-table"],
        "{h}"
    );
    assert!(entries.iter().all(|e| e["in_main"] == true), "{h}");
    assert!(
        entries
            .iter()
            .filter(|e| e["annotation"]["change"] != "create-table")
            .all(|e| e["annotation"]["details"]
                .as_str()
                .is_some_and(|d| d.contains("engine: spark"))),
        "{h}"
    );
    assert_no_scratch_branch(&spark, "shop.events");
    assert_no_scratch_branch(&spark, "shop.people");
}

/// The processes under `pid` (children, grandchildren).
fn descendants(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    let children: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    let mut all = children.clone();
    for c in children {
        all.extend(descendants(c));
    }
    all
}

/// PyIceberg and DuckDB read `rows` rows at the table's current snapshot.
fn assert_read(p: &Project, table: &str, rows: u64) {
    let read = read_both(&p.catalog_db(), table);
    assert_eq!(read["readers_agree"], true, "{read}");
    let current = read["current_snapshot_id"].clone();
    let snap = read["snapshots"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["snapshot_id"] == current))
        .unwrap_or_else(|| panic!("no current snapshot in {read}"));
    assert_eq!(snap["pyiceberg_rows"], rows, "{read}");
    assert_eq!(snap["duckdb_rows"], rows, "{read}");
}

/// No `lakectl-engine-*` branch is left in the table's metadata.
fn assert_no_scratch_branch(p: &Project, table: &str) {
    let state = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(p.table(table));
    let refs: Vec<String> = lakectl::lake::refs(&state.metadata).into_keys().collect();
    assert!(
        !refs.iter().any(|r| r.starts_with("lakectl-engine-")),
        "{table}: a scratch branch is left: {refs:?}"
    );
}

#[test]
fn a_spark_job_that_fails_on_a_bad_row_commits_nothing() {
    let master = cluster();
    let p = Project::new();
    p.write("lakehouse.yaml", &spark_lakehouse(master));
    p.write("events.yaml", EVENTS);
    write_bulk(&p.root().join("data/bulk"), 1, 100, 0);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p.root().join("data/bulk/part-00.csv"))
        .unwrap();
    writeln!(f, "100,2024-01-01T00:00:00Z,eu,many,1.00").unwrap();
    drop(f);
    let before = {
        // The table is created first (its own change), so `main` exists.
        let out = lakectl(&p).args(["apply", "manifests"]).output().unwrap();
        assert!(
            !out.status.success(),
            "a bad row was ingested:\n{}",
            text(&out)
        );
        let t = text(&out);
        assert!(
            t.contains("on the spark engine: the Spark job failed")
                && t.contains("'many'")
                && t.contains("part-00.csv")
                && t.contains("nothing was committed"),
            "the driver's message, naming the value and the file:\n{t}"
        );
        crate::common::inspect(&p.catalog_db(), "lakectl", "shop.events")
    };
    assert_eq!(before["rows"], 0, "{before}");
    assert_no_scratch_branch(&p, "shop.events");
    let (code, plan) = {
        let o = lakectl(&p).args(["plan", "manifests"]).output().unwrap();
        (o.status.code(), text(&o))
    };
    assert_eq!(code, Some(2), "{plan}");
    assert!(
        plan.contains("ingest into shop.events from source `bulk`"),
        "{plan}"
    );
}

#[test]
fn lakectl_killed_during_a_spark_job_applies_the_change_once_after() {
    let master = cluster();
    let p = Project::new();
    p.write("lakehouse.yaml", &spark_lakehouse(master));
    p.write("events.yaml", EVENTS);
    write_bulk(&p.root().join("data/bulk"), 2, 50_000, 0);
    let log = p.root().join("apply.log");
    let mut child = lakectl(&p)
        .args(["apply", "manifests"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Killed once the job runs on the cluster.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        if l.contains("spark: step 1/1: ingest") {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "apply ended before its job ran:\n{l}"
        );
        assert!(Instant::now() < deadline, "no job started:\n{l}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let driver = descendants(child.id());
    assert!(!driver.is_empty(), "no spark-submit under lakectl");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The driver dies with lakectl: no job is left to commit on its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    while driver
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
    {
        assert!(
            Instant::now() < deadline,
            "the Spark driver ({driver:?}) outlived lakectl by 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = crate::common::inspect(&p.catalog_db(), "lakectl", "shop.events");
    assert_eq!(t["rows"], 0, "main moved although lakectl was killed: {t}");

    let out = apply(&p);
    assert!(out.contains("100000 row(s)"), "{out}");
    let again = apply(&p);
    assert!(!again.contains("✓ ingest"), "ingested twice:\n{again}");
    assert_read(&p, "shop.events", 100_000);
}
