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

use crate::common::{free_port, read_both, text, Project, LAKECTL};

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
        "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata: {{name: spark}}\nspec:\n  catalog: {{type: sql, uri: \"sqlite:../.lakectl/catalog.db\"}}\n  warehouse: ../.lakectl/warehouse\n  engine:\n    type: spark\n    master: {master}\n    submit: \"{}\"\n    jars: [{}]\n    conf: {{spark.executor.memory: 768m, spark.sql.shuffle.partitions: \"4\", spark.ui.enabled: \"false\"}}\n    minBytes: 0\n",
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
    // The ingest alone (no mutation, no maintenance): one job per apply.
    let plain = EVENTS.split("  maintenance:").next().unwrap().to_string()
        + "  sources:\n    - {name: bulk, uri: ../data/bulk/*.csv}\n";
    p.write("events.yaml", &plain);
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

// Spark 3.5 + Iceberg 1.10 as the reference reader and writer (local mode, through
// lakectl's SQLite catalog with Iceberg's JdbcCatalog).

const ITEMS_V1: &str = "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: items\n  namespace: shop\nspec:\n  columns:\n    - {name: id, type: long, required: true}\n    - {name: qty, type: int}\n    - {name: name, type: string}\n  sources:\n    - {name: csv, uri: ../data/csv/*.csv}\n";

fn items(extra_columns: &str, extra_spec: &str) -> String {
    let base = ITEMS_V1.replace(
        "    - {name: name, type: string}\n",
        &format!("    - {{name: name, type: string}}\n{extra_columns}"),
    );
    format!("{base}{extra_spec}")
}

/// Every snapshot lakectl wrote (ingest, evolve with a nested add and a widening,
/// update and delete, rollback, compaction), read by Spark with `VERSION AS OF`:
/// its rows, sums and schema are the ones lakectl has at that snapshot.
#[tokio::test]
async fn spark_reads_every_snapshot_lakectl_writes() {
    let p = Project::new();
    let csv = p.root().join("data/csv");
    std::fs::create_dir_all(&csv).unwrap();
    std::fs::write(csv.join("1.csv"), "id,qty,name\n1,10,a\n2,20,b\n3,30,c\n").unwrap();
    std::fs::write(csv.join("2.csv"), "id,qty,name\n4,40,d\n5,50,e\n").unwrap();
    p.write("items.yaml", ITEMS_V1);
    p.apply_ok();
    // A struct column, and rows for it from JSON.
    let json = p.root().join("data/json");
    std::fs::create_dir_all(&json).unwrap();
    std::fs::write(
        json.join("1.jsonl"),
        "{\"id\": 6, \"qty\": 60, \"name\": \"f\", \"attrs\": {\"color\": \"red\"}}\n",
    )
    .unwrap();
    let attrs = "    - name: attrs\n      type: struct\n      fields:\n        - {name: color, type: string}\n";
    let json_source = "    - {name: json, uri: ../data/json/*.jsonl}\n";
    p.write("items.yaml", &items(attrs, json_source));
    p.apply_ok();
    // A nested add and a widening int → long.
    let attrs2 = format!("{attrs}        - {{name: size, type: int}}\n");
    let v3 =
        items(&attrs2, json_source).replace("{name: qty, type: int}", "{name: qty, type: long}");
    p.write("items.yaml", &v3);
    p.apply_ok();
    // An update and a delete.
    let mutations = "  policy:\n    maxMutationShare: 0.5\n  mutations:\n    - name: double\n      update:\n        where: id <= 2\n        set: {qty: qty * 2}\n    - name: drop-three\n      delete:\n        where: id = 3\n";
    p.write("items.yaml", &format!("{v3}{mutations}"));
    p.apply_ok();
    // The delete rolled back (held back), then compaction.
    let out = p.run(&["rollback", "shop.items", "--steps", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    p.write(
        "items.yaml",
        &format!("{v3}{mutations}  maintenance:\n    compaction: {{minInputFiles: 2}}\n"),
    );
    let out = p.apply_ok();
    assert!(out.contains("✓ compact shop.items"), "{out}");

    let state = p.table("shop.items").await;
    let md = &state.metadata;
    let mut snapshots: Vec<_> = md.snapshots().collect();
    snapshots.sort_by_key(|s| s.sequence_number());
    assert!(snapshots.len() >= 8, "{}", snapshots.len());
    let one = |id: i64| {
        let t = format!("lk.shop.items VERSION AS OF {id}");
        format!(
            "SELECT '{id}' AS s, (SELECT count(*) FROM {t}) AS n, (SELECT sum(id) FROM {t}) AS ids, (SELECT sum(qty) FROM {t}) AS q, (SELECT to_json(struct(*), map('ignoreNullFields', 'false')) FROM {t} ORDER BY id LIMIT 1) AS row"
        )
    };
    let sql = snapshots
        .iter()
        .map(|s| one(s.snapshot_id()))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let warehouse = p.root().join(".lakectl/warehouse");
    let spark = crate::common::spark_sql(&p.catalog_db(), &warehouse, &[&sql]);
    let rows = spark["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), snapshots.len(), "{spark}");
    for (s, row) in snapshots.iter().zip(rows) {
        let id = s.snapshot_id();
        assert_eq!(row["s"], id.to_string());
        let ours = p.run(&[
            "query",
            "--as-of",
            &id.to_string(),
            "--format",
            "json",
            "select count(*) as n, sum(id) as ids, sum(qty) as q from shop.items",
        ]);
        assert!(ours.status.success(), "{}", text(&ours));
        let ours: serde_json::Value = serde_json::from_slice(&ours.stdout).unwrap();
        let ours = &ours[0];
        assert_eq!(
            row["n"], ours["n"],
            "snapshot {id}: Spark {row}, lakectl {ours}"
        );
        let num = |v: &serde_json::Value| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        };
        assert_eq!(
            num(&row["ids"]),
            num(&ours["ids"]),
            "snapshot {id}: {row} {ours}"
        );
        assert_eq!(
            num(&row["q"]),
            num(&ours["q"]),
            "snapshot {id}: {row} {ours}"
        );
        // The schema Spark reads the snapshot with is the one it was written with.
        let schema = md
            .schema_by_id(s.schema_id().expect("schema id"))
            .expect("schema");
        if let Some(first) = row["row"].as_str() {
            let first: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(first).unwrap();
            // (serde_json's map keeps keys sorted: compared as sets.)
            let mut names: Vec<&str> = schema
                .as_struct()
                .fields()
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            names.sort();
            let keys: Vec<&str> = first.keys().map(String::as_str).collect();
            assert_eq!(keys, names, "snapshot {id}: Spark's columns");
            if let Some(iceberg::spec::Type::Struct(st)) =
                schema.field_by_name("attrs").map(|f| f.field_type.as_ref())
            {
                let mut nested: Vec<&str> = st.fields().iter().map(|f| f.name.as_str()).collect();
                nested.sort();
                let got: Vec<&str> = first["attrs"]
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                if !first["attrs"].is_null() {
                    assert_eq!(got, nested, "snapshot {id}: Spark's attrs fields");
                }
            }
        } else {
            assert_eq!(row["n"], 0, "snapshot {id}: {row}");
        }
    }
    // The last snapshot: ids 1..6 (the delete rolled back), 1 and 2 doubled.
    let last = rows.last().unwrap();
    assert_eq!(last["n"], 6, "{last}");
    assert_eq!(
        last["q"].as_i64(),
        Some(20 + 40 + 30 + 40 + 50 + 60),
        "{last}"
    );
}

/// A table Spark made and changed every way it can (hidden partitioning, merge-on-read
/// DELETE, UPDATE and MERGE, `rewrite_data_files`, ALTER TABLE add, rename, widen):
/// lakectl's plan names the drift, `import` gives an empty plan, and lakectl's
/// compaction and mutation give the rows Spark expects.
#[test]
fn lakectl_manages_a_table_spark_wrote() {
    let p = Project::new();
    // lakectl's catalog first (Spark's JdbcCatalog takes its catalog name from it).
    p.write("anchor.yaml", "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: anchor\n  namespace: shop\nspec:\n  columns:\n    - {name: id, type: long}\n");
    p.apply_ok();
    let warehouse = p.root().join(".lakectl/warehouse");
    let values: Vec<String> = (1..=12)
        .map(|i| {
            format!(
                "({i}, TIMESTAMP '2024-03-0{} 1{}:00:00', '{}', {})",
                1 + i % 3,
                i % 10,
                ["europe", "america", "asia"][(i % 3) as usize],
                i * 10
            )
        })
        .collect();
    let spark = crate::common::spark_sql(
        &p.catalog_db(),
        &warehouse,
        &[
            "CREATE TABLE lk.shop.visits (id bigint, ts timestamp, region string, qty int) USING iceberg PARTITIONED BY (days(ts), bucket(4, id), truncate(2, region)) TBLPROPERTIES ('format-version'='2', 'write.delete.mode'='merge-on-read', 'write.update.mode'='merge-on-read', 'write.merge.mode'='merge-on-read')",
            &format!("INSERT INTO lk.shop.visits VALUES {}", values.join(", ")),
            "DELETE FROM lk.shop.visits WHERE id = 3",
            "UPDATE lk.shop.visits SET qty = qty + 1000 WHERE id = 5",
            "MERGE INTO lk.shop.visits t USING (SELECT 6L AS id, TIMESTAMP '2024-03-01 06:00:00' AS ts, 'europe' AS region, 7 AS qty UNION ALL SELECT 20L, TIMESTAMP '2024-03-02 08:00:00', 'asia', 200) s ON t.id = s.id WHEN MATCHED THEN UPDATE SET t.qty = s.qty WHEN NOT MATCHED THEN INSERT *",
            "CALL lk.system.rewrite_data_files(table => 'shop.visits', options => map('min-input-files', '2'))",
            "DELETE FROM lk.shop.visits WHERE id = 7",
            "ALTER TABLE lk.shop.visits ADD COLUMN note string",
            "ALTER TABLE lk.shop.visits RENAME COLUMN qty TO quantity",
            "ALTER TABLE lk.shop.visits ALTER COLUMN quantity TYPE bigint",
            "INSERT INTO lk.shop.visits VALUES (30, TIMESTAMP '2024-03-03 09:00:00', 'america', 3000000000, 'big')",
            "SELECT count(*) AS n, sum(id) AS ids, sum(quantity) AS q FROM lk.shop.visits",
        ],
    );
    let expected = &spark["rows"][0];
    // 12 rows, 3 and 7 deleted, 20 and 30 added.
    assert_eq!(expected["n"], 12, "{spark}");

    // Declared as Spark first created it: the plan names what Spark changed since.
    p.write("visits.yaml", "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: visits\n  namespace: shop\nspec:\n  columns:\n    - {name: id, type: long}\n    - {name: ts, type: timestamptz}\n    - {name: region, type: string}\n    - {name: qty, type: int}\n  partitioning:\n    - {column: ts, transform: day}\n    - {column: id, transform: \"bucket[4]\"}\n    - {column: region, transform: \"truncate[2]\"}\n");
    // Spark's rename, widening and new column: lakectl would drop them to match the
    // manifest, and refuses that as destructive.
    let (code, plan) = p.plan();
    assert_eq!(code, 1, "{plan}");
    for drift in [
        "drop column quantity  [destructive]",
        "drop column note  [destructive]",
        "+ add column qty: int",
    ] {
        assert!(
            plan.contains(drift),
            "the plan does not say `{drift}`:\n{plan}"
        );
    }
    assert!(
        !plan.contains("partition"),
        "the partitioning matches:\n{plan}"
    );
    // Adopted: the next plan is empty.
    std::fs::remove_file(p.manifests().join("visits.yaml")).unwrap();
    let out = p.run(&["import", "shop.visits"]);
    assert!(out.status.success(), "{}", text(&out));
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "after import:\n{plan}");
    let imported = std::fs::read_dir(p.manifests())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("name: visits")))
        .expect("the imported manifest");
    let yaml = std::fs::read_to_string(&imported).unwrap();
    assert!(
        yaml.contains("bucket[4]") && yaml.contains("truncate[2]"),
        "{yaml}"
    );
    // lakectl's compaction applies Spark's delete files; then a lakectl mutation.
    std::fs::write(
        &imported,
        format!("{yaml}  maintenance:\n    compaction: {{minInputFiles: 2}}\n"),
    )
    .unwrap();
    let out = p.apply_ok();
    assert!(out.contains("✓ compact shop.visits"), "{out}");
    std::fs::write(
        &imported,
        format!("{yaml}  mutations:\n    - name: bump\n      maxRowsChanged: 1\n      update:\n        where: id = 1\n        set: {{quantity: quantity + 1}}\n"),
    )
    .unwrap();
    p.apply_converges();
    let after = crate::common::spark_sql(
        &p.catalog_db(),
        &warehouse,
        &["SELECT count(*) AS n, sum(id) AS ids, sum(quantity) AS q, sum(CASE WHEN note = 'big' THEN 1 ELSE 0 END) AS big FROM lk.shop.visits"],
    );
    let after = &after["rows"][0];
    assert_eq!(after["n"], expected["n"], "{after}");
    assert_eq!(after["ids"], expected["ids"], "{after}");
    assert_eq!(
        after["q"].as_i64(),
        expected["q"].as_i64().map(|q| q + 1),
        "{after}"
    );
    assert_eq!(after["big"], 1, "{after}");
    assert_read(&p, "shop.visits", 12);
}

/// Nested fields are matched by name, as the local engine does: a JSON object and a
/// Parquet struct whose fields come in another order than the table's land in the
/// right fields (a cast would pair them by position).
#[test]
fn the_spark_engine_reads_nested_fields_by_name() {
    let master = cluster();
    let table = "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: nested\n  namespace: shop\nspec:\n  columns:\n    - {name: id, type: long, required: true}\n    - name: info\n      type: struct\n      fields:\n        - {name: a, type: string}\n        - {name: b, type: long}\n    - {name: tags, type: \"list<string>\"}\n  sources:\n    - {name: json, uri: ../data/json/*.jsonl}\n    - {name: parquet, uri: ../data/parquet/*.parquet}\n";
    let spark = Project::new();
    let local = Project::new();
    spark.write("lakehouse.yaml", &spark_lakehouse(master));
    for p in [&spark, &local] {
        p.write("nested.yaml", table);
        let json = p.root().join("data/json");
        std::fs::create_dir_all(&json).unwrap();
        std::fs::write(
            json.join("1.jsonl"),
            "{\"tags\": [\"x\"], \"info\": {\"b\": 2, \"a\": \"two\"}, \"id\": 1}\n{\"id\": 2, \"info\": null}\n",
        )
        .unwrap();
        let parquet = p.root().join("data/parquet");
        std::fs::create_dir_all(&parquet).unwrap();
        let script = format!(
            "import pyarrow as pa, pyarrow.parquet as pq\nt = pa.table({{'info': pa.array([{{'b': 4, 'a': 'four'}}], pa.struct([('b', pa.int64()), ('a', pa.string())])), 'id': pa.array([3], pa.int64()), 'tags': pa.array([['y', 'z']])}})\npq.write_table(t, '{}')\n",
            parquet.join("1.parquet").display()
        );
        let out = Command::new(crate::common::python())
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = apply(&spark);
    assert_eq!(
        out.matches("spark: step 1/1: ingest").count(),
        2,
        "both sources on Spark:\n{out}"
    );
    local.apply_ok();
    let q = "select id, info.a as a, info.b as b, tags from shop.nested order by id";
    let rows = |p: &Project| {
        let o = lakectl(p)
            .args(["query", "--format", "json", q])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let got = rows(&spark);
    assert_eq!(got, rows(&local));
    assert!(
        got.contains(r#"{"id":1,"a":"two","b":2,"tags":["x"]}"#)
            && got.contains(r#"{"id":3,"a":"four","b":4,"tags":["y","z"]}"#),
        "{got}"
    );
}

/// What the job cannot read exactly as lakectl does stays on the local engine, and
/// apply says why: here a zstd-compressed CSV (Spark has no zstd without Hadoop's
/// native code) and a gzip file whose name does not say so. No Spark is started.
#[test]
fn work_the_spark_job_cannot_do_exactly_stays_local_and_says_why() {
    let p = Project::new();
    // A master nobody listens on: a job submitted there would fail.
    p.write("lakehouse.yaml", &spark_lakehouse("spark://127.0.0.1:9"));
    p.write(
        "t.yaml",
        "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: t\n  namespace: shop\nspec:\n  columns:\n    - {name: id, type: long}\n  sources:\n    - {name: zst, uri: ../data/zst/*.csv.zst}\n    - {name: gz, uri: ../data/gz/*.csv, compression: gzip}\n",
    );
    let csv = b"id\n1\n2\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(csv).unwrap();
    for (dir, file, bytes) in [
        ("zst", "1.csv.zst", zstd::encode_all(&csv[..], 3).unwrap()),
        ("gz", "1.csv", gz.finish().unwrap()),
    ] {
        let d = p.root().join("data").join(dir);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(file), bytes).unwrap();
    }
    let out = apply(&p);
    assert!(
        out.contains("[engine: local (zstd-compressed text)]"),
        "{out}"
    );
    assert!(
        out.contains("its name does not say how it is compressed)]"),
        "{out}"
    );
    assert!(!out.contains("spark:"), "{out}");
    let q = lakectl(&p)
        .args([
            "query",
            "--format",
            "json",
            "select count(*) as n from shop.t",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&q.stdout).trim(), r#"[{"n":4}]"#);
}
