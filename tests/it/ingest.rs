//! Declared sources: each format, globs and directories, exactly once (across applies,
//! a new file, a killed apply), bad rows located and nothing committed, rejects,
//! partition directories, bounded memory, and the independent readers agreeing with
//! `lakectl query` on every snapshot.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::common::{read_both, text, Project, LAKECTL};

/// `shop.sales`, partitioned by day(ts), with the given sources block.
fn sales(sources: &str) -> String {
    format!(
        r#"apiVersion: lakectl/v1
kind: Table
metadata:
  name: sales
  namespace: shop
spec:
  columns:
    - name: id
      type: long
      required: true
    - name: ts
      type: timestamptz
    - name: region
      type: string
    - name: qty
      type: int
    - name: price
      type: double
  partitioning:
    - column: ts
      transform: day
  sources:
{sources}"#
    )
}

/// Writes `rows` CSV rows (id from `first`), spread over 3 days and 3 regions.
fn csv(path: &Path, first: u64, rows: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,ts,region,qty,price").unwrap();
    for i in first..first + rows {
        writeln!(
            f,
            "{i},2024-03-0{}T{:02}:00:00Z,{},{},{}.5",
            1 + i % 3,
            i % 24,
            ["eu", "us", "apac"][(i % 3) as usize],
            i % 10,
            i % 7
        )
        .unwrap();
    }
}

fn query(p: &Project, sql: &str, as_of: Option<i64>) -> serde_json::Value {
    let mut args = vec!["query", sql, "--format", "json"];
    let id;
    if let Some(s) = as_of {
        id = s.to_string();
        args.extend(["--as-of", id.as_str()]);
    }
    let out = p.run(&args);
    assert!(out.status.success(), "query failed: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn count(p: &Project) -> i64 {
    query(
        p,
        "select count(*) as n, count(distinct id) as d from shop.sales",
        None,
    )[0]["n"]
        .as_i64()
        .unwrap()
}

fn distinct_ids(p: &Project) -> (i64, i64) {
    let v = query(
        p,
        "select count(*) as n, count(distinct id) as d from shop.sales",
        None,
    );
    (v[0]["n"].as_i64().unwrap(), v[0]["d"].as_i64().unwrap())
}

#[tokio::test]
async fn csv_glob_is_ingested_once_and_a_new_file_alone_next_time() {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 100);
    csv(&p.root().join("data/b.csv"), 100, 50);
    p.write(
        "sales.yaml",
        &sales("    - name: daily\n      uri: ../data/*.csv\n"),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("+ ingest ../data/a.csv ("), "{plan}");
    assert!(plan.contains("2 file(s) to ingest"), "{plan}");
    p.apply_converges();
    assert_eq!(count(&p), 150);
    let md = p.table("shop.sales").await.metadata;
    let snap = md.current_snapshot().unwrap();
    assert_eq!(snap.summary().additional_properties["added-records"], "150");
    assert_eq!(
        snap.summary().additional_properties["lakectl.change"],
        "ingest"
    );
    assert!(snap.summary().additional_properties["lakectl.change-id"]
        .starts_with("source:shop.sales:daily@"));

    // A second apply changes nothing.
    let out = p.apply_ok();
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(count(&p), 150);

    // A new file: only it is ingested, as one more snapshot.
    csv(&p.root().join("data/c.csv"), 150, 25);
    let (_, plan) = p.plan();
    assert!(
        plan.contains("+ ingest ../data/c.csv") && !plan.contains("a.csv"),
        "{plan}"
    );
    p.apply_converges();
    assert_eq!(distinct_ids(&p), (175, 175));
    let hist = p.run(&["history", "shop.sales", "--output", "json"]);
    let hist: serde_json::Value = serde_json::from_slice(&hist.stdout).unwrap();
    assert_eq!(
        hist["snapshots"][0]["ingested_files"],
        serde_json::json!(["../data/c.csv"])
    );
    assert_eq!(hist["snapshots"][0]["added_records"], 25);
    assert_eq!(hist["snapshots"][0]["current"], true);

    // Time travel by timestamp: the table as `main` was when the first ingest landed,
    // and before the table existed at all.
    let first_ingest = hist["snapshots"][1]["time"].as_str().unwrap().to_string();
    let out = p.run(&[
        "query",
        "select count(*) as n from shop.sales",
        "--as-of",
        &first_ingest,
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().nth(1),
        Some("150")
    );
    let out = p.run(&[
        "query",
        "select count(*) as n from shop.sales",
        "--as-of",
        "2000-01-01T00:00:00Z",
        "--format",
        "csv",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().nth(1),
        Some("0")
    );
}

#[tokio::test]
async fn json_lines_parquet_and_directories() {
    let p = Project::new();
    std::fs::create_dir_all(p.root().join("in/json")).unwrap();
    std::fs::write(
        p.root().join("in/json/x.jsonl"),
        "{\"id\": 1, \"ts\": \"2024-03-01T10:00:00Z\", \"region\": \"eu\", \"qty\": 2, \"price\": 1.5}\n{\"id\": 2, \"region\": \"us\", \"qty\": 3}\n",
    )
    .unwrap();
    // A Parquet file with other column names and types (int64 qty, float32 price).
    {
        use arrow_array::{Float32Array, Int64Array, RecordBatch, StringArray};
        let schema = Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("order_id", arrow_schema::DataType::Int64, false),
            arrow_schema::Field::new("region", arrow_schema::DataType::Utf8, true),
            arrow_schema::Field::new("qty", arrow_schema::DataType::Int64, true),
            arrow_schema::Field::new("price", arrow_schema::DataType::Float32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![10, 11, 12])),
                Arc::new(StringArray::from(vec!["eu", "eu", "us"])),
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(Float32Array::from(vec![0.5, 1.5, 2.5])),
            ],
        )
        .unwrap();
        std::fs::create_dir_all(p.root().join("in/pq/sub")).unwrap();
        let f = std::fs::File::create(p.root().join("in/pq/sub/part-0.parquet")).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
    p.write(
        "sales.yaml",
        &sales(
            "    - name: events\n      uri: ../in/json\n    - name: exports\n      uri: ../in/pq\n      format: parquet\n      columns:\n        order_id: id\n",
        ),
    );
    p.apply_converges();
    let v = query(
        &p,
        "select count(*) as n, sum(qty) as q, sum(price) as s, count(ts) as t from shop.sales",
        None,
    );
    assert_eq!(v[0]["n"], 5);
    assert_eq!(v[0]["q"], 11);
    assert_eq!(v[0]["s"], 6.0);
    assert_eq!(v[0]["t"], 1, "the JSON row without ts must be null");
    // One snapshot per source.
    let md = p.table("shop.sales").await.metadata;
    let sources: Vec<String> = lakectl::lake::ledger::ancestry(&md)
        .iter()
        .filter_map(|s| {
            s.summary()
                .additional_properties
                .get("lakectl.source")
                .cloned()
        })
        .collect();
    assert_eq!(sources, vec!["exports", "events"]);
}

#[tokio::test]
async fn a_bad_row_names_file_line_and_column_and_commits_nothing() {
    let p = Project::new();
    csv(&p.root().join("data/good.csv"), 0, 10);
    p.write(
        "sales.yaml",
        &sales("    - name: daily\n      uri: ../data/*.csv\n"),
    );
    p.apply_converges();
    let before = p.table("shop.sales").await.metadata_location;
    // Line 5 has a bad qty; another file in the same apply is fine.
    std::fs::write(
        p.root().join("data/bad.csv"),
        "id,ts,region,qty,price\n100,2024-03-01T00:00:00Z,eu,1,1.0\n101,2024-03-01T00:00:00Z,eu,2,1.0\n102,2024-03-01T00:00:00Z,eu,3,1.0\n103,2024-03-01T00:00:00Z,eu,lots,1.0\n",
    )
    .unwrap();
    csv(&p.root().join("data/more.csv"), 200, 10);
    let out = p.run(&["apply", "manifests"]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("../data/bad.csv:5:4: value \"lots\" of column `qty` is not a valid int"),
        "{t}"
    );
    assert!(t.contains("nothing was committed"), "{t}");
    assert_eq!(p.table("shop.sales").await.metadata_location, before);
    assert_eq!(count(&p), 10);

    // A null in a required column.
    std::fs::write(p.root().join("data/bad.csv"), "id,ts,region,qty,price\n100,2024-03-01T00:00:00Z,eu,1,1.0\n,2024-03-01T00:00:00Z,eu,2,1.0\n").unwrap();
    let t = text(&p.run(&["apply", "manifests"]));
    assert!(
        t.contains("../data/bad.csv:3:1: required column `id` is null"),
        "{t}"
    );
    assert_eq!(p.table("shop.sales").await.metadata_location, before);
}

#[tokio::test]
async fn on_error_skip_writes_rejects_and_ingests_the_rest() {
    let p = Project::new();
    std::fs::create_dir_all(p.root().join("data")).unwrap();
    std::fs::write(
        p.root().join("data/mixed.csv"),
        "id,ts,region,qty,price\n1,2024-03-01T00:00:00Z,eu,1,1.0\n2,not-a-time,eu,2,1.0\n3,2024-03-02T00:00:00Z,us,3,x\n4,2024-03-02T00:00:00Z,us,4,2.0\n",
    )
    .unwrap();
    p.write("sales.yaml", &sales("    - name: daily\n      uri: ../data/mixed.csv\n      onError: skip\n      rejects: ../rejects\n"));
    let out = p.apply_converges();
    assert!(out.contains("2 rejected"), "{out}");
    assert_eq!(count(&p), 2);
    let rejects: Vec<_> = std::fs::read_dir(p.root().join("rejects"))
        .unwrap()
        .collect();
    assert_eq!(rejects.len(), 1);
    let body = std::fs::read_to_string(rejects[0].as_ref().unwrap().path()).unwrap();
    assert!(body.contains("\"../data/mixed.csv\",3,2,"), "{body}");
    assert!(body.contains("\"../data/mixed.csv\",4,5,"), "{body}");
    let md = p.table("shop.sales").await.metadata;
    assert_eq!(
        md.current_snapshot()
            .unwrap()
            .summary()
            .additional_properties["lakectl.rejected-rows"],
        "2"
    );
}

#[tokio::test]
async fn partitioned_table_gets_one_directory_per_partition_value() {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 300);
    p.write(
        "sales.yaml",
        &sales("    - name: daily\n      uri: ../data/a.csv\n"),
    );
    p.apply_converges();
    let data = p.root().join(".lakectl/warehouse/shop/sales/data");
    let mut dirs: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        vec![
            "ts_day=2024-03-01",
            "ts_day=2024-03-02",
            "ts_day=2024-03-03"
        ]
    );
    let v = query(
        &p,
        "select count(distinct date_trunc('day', ts)) as d from shop.sales",
        None,
    );
    assert_eq!(v[0]["d"], 3);
}

#[tokio::test]
async fn a_changed_file_is_reported_and_appended_only_when_asked() {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 10);
    p.write(
        "sales.yaml",
        &sales("    - name: daily\n      uri: ../data/a.csv\n"),
    );
    p.apply_converges();
    // Same content, new mtime: still ingested (hash matches).
    let f = std::fs::File::options()
        .append(true)
        .open(p.root().join("data/a.csv"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    drop(f);
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    // Other content under the same path.
    csv(&p.root().join("data/a.csv"), 0, 12);
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(
        plan.contains("../data/a.csv changed since it was ingested"),
        "{plan}"
    );
    p.write(
        "sales.yaml",
        &sales("    - name: daily\n      uri: ../data/a.csv\n      onChange: append\n"),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("changed: appended again"), "{plan}");
    p.apply_converges();
    assert_eq!(count(&p), 22);
}

/// Kills `lakectl apply` with SIGKILL mid-way (while it holds its written data files
/// before the commit), then re-runs it: every row exactly once.
#[tokio::test]
async fn an_apply_killed_mid_way_and_rerun_ingests_exactly_once() {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 20_000);
    csv(&p.root().join("data/b.csv"), 20_000, 20_000);
    p.write(
        "sales.yaml",
        &sales("    - name: daily\n      uri: ../data/*.csv\n"),
    );
    p.run(&["apply", "manifests"]); // creates the table and ingests
    assert_eq!(count(&p), 40_000);
    csv(&p.root().join("data/c.csv"), 40_000, 30_000);
    for delay_ms in [0u64, 30, 120, 400, 1500] {
        let mut child = Command::new(LAKECTL)
            .args(["apply", "manifests"])
            .current_dir(p.root())
            .env("LAKECTL_TEST_DELAY_BEFORE_COMMIT_MS", "3000")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert_eq!(
            count(&p),
            40_000,
            "a killed apply committed (after {delay_ms} ms)"
        );
    }
    p.apply_converges();
    assert_eq!(distinct_ids(&p), (70_000, 70_000));
}

/// Peak RSS (VmHWM) of `lakectl apply` ingesting `rows` rows; returns (peak, CSV size).
fn peak_of_ingest(rows: u64) -> (u64, u64) {
    let p = Project::new();
    let path = p.root().join("data/big.csv");
    csv(&path, 0, rows);
    let size = std::fs::metadata(&path).unwrap().len();
    p.write(
        "sales.yaml",
        &sales("    - name: daily\n      uri: ../data/big.csv\n"),
    );
    let child = Command::new(LAKECTL)
        .args(["apply", "manifests"])
        .current_dir(p.root())
        .env("LAKECTL_INGEST_CHUNK_BYTES", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let watcher = std::thread::spawn(move || {
        let mut peak = 0u64;
        while let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kb) = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        peak
    });
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak_kb = watcher.join().unwrap();
    assert!(peak_kb > 0, "could not read the peak RSS");
    assert_eq!(count(&p), rows as i64);
    (peak_kb * 1024, size)
}

/// Memory is bounded by workers × chunk size and the open writers, not by the input:
/// a CSV four times larger uses about the same peak, and less than the file's size.
#[tokio::test]
async fn a_csv_larger_than_the_memory_used_streams() {
    let (small_peak, _) = peak_of_ingest(1_000_000);
    let (big_peak, big_size) = peak_of_ingest(4_000_000);
    assert!(
        big_peak < big_size,
        "peak RSS {} MiB is not below the CSV's {} MiB",
        big_peak >> 20,
        big_size >> 20
    );
    assert!(
        big_peak < small_peak + small_peak / 2,
        "peak RSS grows with the input: {} MiB for 1M rows, {} MiB for 4M rows",
        small_peak >> 20,
        big_peak >> 20
    );
}

#[tokio::test]
async fn readers_agree_with_lakectl_query_on_every_snapshot() {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 500);
    p.write(
        "sales.yaml",
        &sales("    - name: daily\n      uri: ../data/*.csv\n"),
    );
    p.apply_converges();
    csv(&p.root().join("data/b.csv"), 500, 250);
    p.apply_converges();
    let both = read_both(&p.catalog_db(), "shop.sales");
    assert_eq!(both["readers_agree"], true, "{both}");
    let snaps = both["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 3);
    for s in snaps {
        let id = s["snapshot_id"].as_i64().unwrap();
        let mine = query(&p, "select count(*) as n, sum(id) as id, sum(qty) as qty, sum(price) as price from shop.sales", Some(id));
        assert_eq!(mine[0]["n"], s["pyiceberg_rows"], "rows of {id}");
        assert_eq!(mine[0]["n"], s["duckdb_rows"], "rows of {id}");
        for col in ["id", "qty", "price"] {
            let theirs = &s["sums"][col];
            let ours = &mine[0][col];
            if theirs.is_null() {
                assert!(ours.is_null(), "{col} of {id}: {ours}");
            } else {
                assert!(
                    (ours.as_f64().unwrap() - theirs.as_f64().unwrap()).abs() < 1e-6,
                    "{col} sum of {id}: lakectl {ours}, PyIceberg {theirs}"
                );
            }
        }
    }
}

#[tokio::test]
async fn csv_options_mapping_defaults_case_and_strict() {
    let p = Project::new();
    std::fs::create_dir_all(p.root().join("data")).unwrap();
    // Semicolons, a custom null, day-first timestamps, other names and case.
    std::fs::write(
        p.root().join("data/export.csv"),
        "ORDER_ID;Ts;Qty;Price\n1;01/03/2024 10:30;5;NA\n2;02/03/2024 11:00;NA;2.5\n",
    )
    .unwrap();
    let source = "    - name: export\n      uri: ../data/export.csv\n      caseInsensitive: true\n      columns:\n        ORDER_ID: id\n      defaults:\n        region: unknown\n      csv:\n        delimiter: \";\"\n        nullString: NA\n        timestampFormat: \"%d/%m/%Y %H:%M\"\n";
    p.write("sales.yaml", &sales(source));
    p.apply_converges();
    let v = query(
        &p,
        "select id, cast(ts as varchar) as ts, region, qty, price from shop.sales order by id",
        None,
    );
    assert_eq!(v[0]["id"], 1);
    assert!(
        v[0]["ts"]
            .as_str()
            .unwrap()
            .starts_with("2024-03-01T10:30:00"),
        "{v}"
    );
    assert_eq!(v[0]["region"], "unknown");
    assert_eq!(v[0]["qty"], 5);
    assert!(
        v[0].get("price").is_none_or(|x| x.is_null()),
        "NA is null: {v}"
    );
    assert!(
        v[1].get("qty").is_none_or(|x| x.is_null()),
        "NA is null: {v}"
    );
    assert_eq!(v[1]["price"], 2.5);

    // Strict: a source column with no table column fails at the header.
    std::fs::write(
        p.root().join("data/extra.csv"),
        "id,ts,coupon\n3,2024-03-01T00:00:00Z,X1\n",
    )
    .unwrap();
    p.write(
        "sales.yaml",
        &sales("    - name: extra\n      uri: ../data/extra.csv\n      strict: true\n"),
    );
    let out = p.run(&["apply", "manifests"]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(t.contains("../data/extra.csv:1:3: source column `coupon` is not a column of the table (strict source)"), "{t}");
}

/// The ledger lives in files beside the metadata, not in it: an apply of 300 files
/// grows metadata.json by what any commit adds (a snapshot, a log entry), as an apply
/// of one does; checkpoints keep O(log n) segment files; every file stays ingested.
#[tokio::test]
async fn metadata_json_does_not_grow_with_the_files_ingested() {
    let p = Project::new();
    p.write(
        "sales.yaml",
        &sales("    - name: daily\n      uri: ../data/*.csv\n"),
    );
    let size = |p: &Project| {
        let loc = futures::executor::block_on(p.table("shop.sales")).metadata_location;
        std::fs::metadata(loc.trim_start_matches("file://"))
            .unwrap()
            .len() as i64
    };
    let mut next = 0u64;
    let mut add = |p: &Project, files: u64| {
        for _ in 0..files {
            csv(&p.root().join(format!("data/{next:05}.csv")), next * 10, 2);
            next += 1;
        }
        p.apply_converges();
    };
    add(&p, 1);
    let s1 = size(&p);
    add(&p, 1);
    let one = size(&p) - s1;
    let s2 = size(&p);
    add(&p, 300);
    let many = size(&p) - s2;
    assert!(
        (many - one).abs() < 400,
        "metadata.json grew {many} B for 300 files, {one} B for one"
    );
    // Past two checkpoints (every 16 ledger files).
    for _ in 0..32 {
        add(&p, 1);
    }
    assert_eq!(count(&p), 2 * next as i64);
    let meta = p.root().join(".lakectl/warehouse/shop/sales/metadata");
    let names: Vec<String> = std::fs::read_dir(&meta)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let segments = names
        .iter()
        .filter(|n| n.starts_with("lakectl-ledger-segment-"))
        .count();
    assert!(
        (1..=4).contains(&segments),
        "{segments} segments: {names:?}"
    );
    let md = std::fs::read_to_string(
        p.table("shop.sales")
            .await
            .metadata_location
            .trim_start_matches("file://"),
    )
    .unwrap();
    assert!(!md.contains("lakectl.ingested"), "{md}");
    assert!(!md.contains("00017.csv"), "file names in metadata.json");

    // An orphan sweep over files days old keeps every ledger file and segment: the
    // ledger is intact (nothing to ingest) and each file was ingested once.
    crate::common::age_files(&p.root().join(".lakectl/warehouse/shop/sales"), None);
    p.write(
        "sales.yaml",
        &sales(
            "    - name: daily
      uri: ../data/*.csv
  maintenance:
    orphans: {olderThanHours: 1}
",
        ),
    );
    let out = p.run(&["maintain"]);
    assert!(out.status.success(), "{}", text(&out));
    let after: Vec<String> = std::fs::read_dir(&meta)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("lakectl-ledger-"))
        .collect();
    let before_ledger = names
        .iter()
        .filter(|n| n.starts_with("lakectl-ledger-"))
        .count();
    assert_eq!(after.len(), before_ledger, "{after:?}");
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    assert_eq!(distinct_ids(&p), (2 * next as i64, 2 * next as i64));
}
