//! Declared maintenance: compaction (with other engines' delete files) and expiry,
//! planned and applied like any change; independent readers agree before and after.

use serde_json::{json, Value};

use crate::common::{orders, read_both, spark_sql, text, Project};
use crate::mutate::query;

fn write(p: &Project, rel: &str, body: &str) {
    let path = p.root().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

const COLUMNS: &str = "  columns:\n    - {name: id, type: long}\n    - {name: ts, type: timestamptz}\n    - {name: v, type: long}\n  sources:\n    - name: csv\n      uri: ../data/*.csv\n";

/// `n` CSVs of 30 rows each over three days, each ingested by its own apply (so every
/// partition gets `n` small files).
fn small_files(p: &Project, n: usize) {
    for f in 0..n {
        let mut body = String::from("id,ts,v\n");
        for r in 0..30 {
            let id = f * 100 + r;
            body.push_str(&format!(
                "{id},2024-03-0{}T10:00:00Z,{}\n",
                r % 3 + 1,
                id * 7
            ));
        }
        write(p, &format!("data/{f:03}.csv"), &body);
        p.apply_ok();
    }
}

fn totals(p: &Project) -> Value {
    query(
        p,
        "select count(*) as n, sum(v) as s, count(distinct id) as d from shop.orders",
        None,
    )[0]
    .clone()
}

/// Declares compaction (its defaults), checks that the plan lists it with `says`, and
/// applies it (a second plan is empty).
fn compact_with_plan_saying(p: &Project, says: &str) {
    p.write(
        "orders.yaml",
        &orders(&format!("{COLUMNS}  maintenance:\n    compaction: {{}}\n")),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains(says), "{plan}");
    p.apply_converges();
}

async fn live_data_files(p: &Project) -> (usize, String) {
    let md = p.table("shop.orders").await.metadata;
    let s = md.current_snapshot().unwrap().summary();
    (
        s.additional_properties["total-data-files"].parse().unwrap(),
        s.additional_properties
            .get("total-delete-files")
            .cloned()
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn compaction_rewrites_small_files_per_partition_and_keeps_every_row() {
    let p = Project::new();
    let partitioned = format!("{COLUMNS}  partitioning:\n    - {{column: ts, transform: day}}\n");
    p.write("orders.yaml", &orders(&partitioned));
    small_files(&p, 6);
    let before = totals(&p);
    assert_eq!(before["n"], json!(180));
    assert_eq!(live_data_files(&p).await.0, 18);

    // Declared: planned only once a threshold is crossed.
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{partitioned}  maintenance:\n    compaction:\n      minInputFiles: 7\n"
        )),
    );
    let (code, plan) = p.plan();
    assert_eq!(
        code, 0,
        "6 small files per partition is under minInputFiles 7:\n{plan}"
    );
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{partitioned}  maintenance:\n    compaction:\n      minInputFiles: 5\n"
        )),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("~ compact shop.orders: 18 files") && plan.contains("→ 3 in 3 partition(s)"),
        "{plan}"
    );
    assert!(plan.contains("18 file(s) to compact"), "{plan}");
    let json_plan = p.run(&["plan", "manifests", "--output", "json"]);
    let v: Value = serde_json::from_slice(&json_plan.stdout).expect("json plan");
    let c = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "compact")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(c["input_files"], json!(18), "{c}");

    let out = p.apply_converges();
    assert!(out.contains("compact shop.orders"), "{out}");
    assert_eq!(live_data_files(&p).await.0, 3, "one file per partition");
    assert_eq!(totals(&p), before, "rows unchanged");
    let md = p.table("shop.orders").await.metadata;
    let snap = md.current_snapshot().unwrap();
    assert_eq!(snap.summary().operation.as_str(), "replace");
    assert_eq!(
        snap.summary().additional_properties["lakectl.change"],
        "compact"
    );
    // Every snapshot before and after reads the same with PyIceberg and DuckDB.
    let both = read_both(&p.catalog_db(), "shop.orders");
    let counts: Vec<&Value> = both["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["pyiceberg_rows"])
        .collect();
    assert_eq!(counts.last().unwrap(), &&json!(180), "{both}");
    assert_eq!(counts[counts.len() - 2], &json!(180), "{both}");
    // Old snapshots still read their own files.
    let first = md
        .snapshots()
        .filter(|s| {
            s.summary()
                .additional_properties
                .get("lakectl.change")
                .map(String::as_str)
                == Some("ingest")
        })
        .map(|s| s.snapshot_id())
        .min_by_key(|id| md.snapshot_by_id(*id).unwrap().sequence_number())
        .unwrap();
    let r = query(
        &p,
        "select count(*) as n from shop.orders",
        Some(&first.to_string()),
    );
    assert_eq!(r[0]["n"], json!(30));
}

#[tokio::test]
async fn compaction_applies_and_drops_spark_merge_on_read_deletes() {
    let p = Project::new();
    p.write("orders.yaml", &orders(COLUMNS));
    small_files(&p, 3);
    let warehouse = p.root().join(".lakectl/warehouse");
    spark_sql(
        &p.catalog_db(),
        &warehouse,
        &[
            "ALTER TABLE lk.shop.orders SET TBLPROPERTIES ('write.delete.mode'='merge-on-read', 'format-version'='2')",
            "DELETE FROM lk.shop.orders WHERE id % 10 = 3",
        ],
    );
    let (_, deletes) = live_data_files(&p).await;
    assert_ne!(deletes, "0", "Spark wrote position deletes");
    let expected = totals(&p);
    assert_eq!(expected["n"], json!(81), "{expected}");

    // A mutation refuses merge-on-read files; compaction folds the deletes in.
    compact_with_plan_saying(&p, "delete file(s) applied and dropped");
    let (files, deletes) = live_data_files(&p).await;
    assert_eq!((files, deletes.as_str()), (1, "0"));
    assert_eq!(totals(&p), expected);
    // PyIceberg, DuckDB and Spark read every snapshot, before and after, alike.
    let spark = crate::common::spark_read(&p.catalog_db(), &warehouse, "shop.orders");
    assert_eq!(spark["rows"], expected["n"], "{spark}");
    let both = read_both(&p.catalog_db(), "shop.orders");
    let ours: std::collections::BTreeMap<String, Value> = both["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["snapshot_id"].to_string(), s["pyiceberg_rows"].clone()))
        .collect();
    let theirs: std::collections::BTreeMap<String, Value> = spark["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].to_string(), s["rows"].clone()))
        .collect();
    assert_eq!(ours, theirs, "PyIceberg/DuckDB vs Spark per snapshot");
    assert!(ours.len() >= 5, "{ours:?}");

    // Copy-on-write mutations work again.
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{COLUMNS}  maintenance:\n    compaction: {{}}\n  mutations:\n    - name: zero\n      maxRowsChanged: 1\n      update:\n        where: id = 1\n        set: {{v: \"0\"}}\n"
        )),
    );
    let out = p.apply_converges();
    assert!(out.contains("1 row(s) changed"), "{out}");
}

#[tokio::test]
async fn maintenance_expire_and_lakehouse_defaults_field_by_field() {
    let p = Project::new();
    p.write(
        "lakehouse.yaml",
        "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata:\n  name: lake\nspec:\n  catalog:\n    type: sql\n    uri: sqlite:../.lakectl/catalog.db\n  warehouse: ../.lakectl/warehouse\n  maintenance:\n    expire:\n      keepLast: 50\n      maxSnapshotAgeDays: 0\n",
    );
    p.write("orders.yaml", &orders(COLUMNS));
    small_files(&p, 4);
    let n = p.table("shop.orders").await.metadata.snapshots().count();
    assert_eq!(n, 5, "create + 4 ingests");
    let (code, plan) = p.plan();
    assert_eq!(
        code, 0,
        "keepLast 50 from the Lakehouse keeps them:\n{plan}"
    );
    // The table overrides keepLast alone; maxSnapshotAgeDays 0 comes from the Lakehouse.
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{COLUMNS}  maintenance:\n    expire:\n      keepLast: 2\n"
        )),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("- expire 3 snapshot(s) of shop.orders"),
        "{plan}"
    );
    let before = totals(&p);
    p.apply_converges();
    assert_eq!(p.table("shop.orders").await.metadata.snapshots().count(), 2);
    assert_eq!(totals(&p), before);
    // The ledger outlives the expired snapshots: nothing is ingested again.
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    let out = p.run(&["maintain", "--manifests", "manifests", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("No maintenance"), "{}", text(&out));
}

#[tokio::test]
async fn maintain_runs_maintenance_alone_and_dry_run_changes_nothing() {
    let p = Project::new();
    p.write("orders.yaml", &orders(COLUMNS));
    small_files(&p, 5);
    write(&p, "data/999.csv", "id,ts,v\n9999,2024-03-01T00:00:00Z,1\n");
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{COLUMNS}  maintenance:\n    compaction: {{minInputFiles: 5}}\n"
        )),
    );
    // The plan holds an ingest and (on the state before it) no compaction yet.
    let out = p.run(&["maintain", "--manifests", "manifests", "--dry-run"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("~ compact shop.orders: 5 files"), "{t}");
    assert!(
        !t.contains("ingest"),
        "maintain leaves other changes alone:\n{t}"
    );
    assert_eq!(live_data_files(&p).await.0, 5, "dry run");
    let out = p.run(&["maintain", "shop.orders", "--manifests", "manifests"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(live_data_files(&p).await.0, 1);
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "the new file is still to ingest:\n{plan}");
    assert!(plan.contains("+ ingest ../data/999.csv"), "{plan}");
}

#[tokio::test]
async fn orphans_older_than_the_window_go_and_nothing_reachable_does() {
    let p = Project::new();
    p.write("orders.yaml", &orders(COLUMNS));
    small_files(&p, 2);
    // History that must stay: a tag, a rollback (a snapshot off main), old metadata.
    let md = p.table("shop.orders").await.metadata;
    let first = md
        .snapshots()
        .filter(|s| {
            s.summary()
                .additional_properties
                .get("lakectl.change")
                .map(String::as_str)
                == Some("ingest")
        })
        .min_by_key(|s| s.sequence_number())
        .unwrap()
        .snapshot_id();
    let out = p.run(&[
        "rollback",
        "shop.orders",
        "--steps",
        "1",
        "--manifests",
        "manifests",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let table_dir = p.root().join(".lakectl/warehouse/shop/orders");
    // A killed apply's files: old; and one being written now.
    write(
        &p,
        ".lakectl/warehouse/shop/orders/data/killed-0001.parquet",
        "not a real parquet",
    );
    write(
        &p,
        ".lakectl/warehouse/shop/orders/metadata/killed-m0.avro",
        "x",
    );
    write(
        &p,
        ".lakectl/warehouse/shop/orders/data/in-flight.parquet",
        "y",
    );
    // Everything is old but the in-flight file: only reachability protects the rest.
    crate::common::age_files(&table_dir, Some("in-flight.parquet"));
    let rows_before = totals(&p);
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{COLUMNS}  maintenance:\n    orphans:\n      olderThanHours: 48\n"
        )),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("- remove 2 orphan file(s) of shop.orders"),
        "{plan}"
    );
    assert!(
        plan.contains("killed-0001.parquet") && plan.contains("killed-m0.avro"),
        "{plan}"
    );
    assert!(!plan.contains("in-flight"), "{plan}");
    let before: Vec<String> = walk(&table_dir);
    p.apply_ok();
    let after: Vec<String> = walk(&table_dir);
    let gone: Vec<&String> = before.iter().filter(|f| !after.contains(f)).collect();
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert!(gone.iter().all(|f| f.contains("killed-")), "{gone:?}");
    assert!(after.iter().any(|f| f.ends_with("in-flight.parquet")));
    assert!(
        after.iter().any(|f| f.contains("lakectl-ledger-")),
        "ledger files stay"
    );
    // Every snapshot still reads, also the one the rollback left behind.
    assert_eq!(totals(&p), rows_before);
    let r = query(
        &p,
        "select count(*) as n from shop.orders",
        Some(&first.to_string()),
    );
    assert_eq!(r[0]["n"], json!(30));
    read_both(&p.catalog_db(), "shop.orders");
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "the young file is not an orphan yet:\n{plan}");

    // The window has a floor.
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{COLUMNS}  maintenance:\n    orphans:\n      olderThanHours: 0\n"
        )),
    );
    let out = p.run(&["validate", "manifests"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("olderThanHours must be at least 1"),
        "{}",
        text(&out)
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("find")
        .arg(dir)
        .args(["-type", "f"])
        .output()
        .unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// A day-partitioned table fed 200 small files while `watch` runs (about twenty applies
/// of a few files each): it compacts by itself, after the applies that crossed the
/// threshold and at most `every` later, and `/status` and `/metrics` say so.
#[tokio::test]
async fn watch_compacts_a_table_fed_small_files_by_itself() {
    let p = Project::new();
    let every = 3;
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{COLUMNS}  partitioning:\n    - {{column: ts, transform: day}}\n  maintenance:\n    compaction: {{minInputFiles: 5}}\n    every: {every}s\n"
        )),
    );
    let w = crate::watch::watch(&p, &[]);
    crate::watch::until(&w, "first cycle", |s| s["cycles"].as_u64() >= Some(1)).await;
    let files = 200;
    for f in 0..files {
        let mut body = String::from("id,ts,v\n");
        for day in 1..=3 {
            let id = f * 3 + day;
            body.push_str(&format!("{id},2024-03-0{day}T10:00:00Z,{}\n", id * 7));
        }
        write(&p, &format!("data/{f:03}.csv"), &body);
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    let fed = std::time::Instant::now();
    let rows = (files * 3) as i64;
    // Every row lands and, per partition, fewer small files than minInputFiles are left
    // waiting for more: compaction ran after the applies that crossed the threshold (or
    // `every` later). The bound is for a loaded machine; the 60 s resync never comes.
    let mut s;
    loop {
        s = crate::watch::status_of(&w).await;
        let out = p.run(&[
            "query",
            "select count(*) as n from shop.orders",
            "--format",
            "json",
        ]);
        let all = out.status.success()
            && serde_json::from_slice::<Value>(&out.stdout)
                .is_ok_and(|v| v[0]["n"].as_i64() == Some(rows));
        let left = live_data_files(&p).await.0;
        if all && left <= 3 * 4 {
            break;
        }
        if fed.elapsed() >= std::time::Duration::from_secs(55) {
            let plan = p.run(&["plan", "manifests"]);
            panic!(
                "{left} data files, all rows: {all} (query: {}), {:?} after the feed: {s}\nplan:\n{}",
                crate::common::text(&out).trim(),
                fed.elapsed(),
                crate::common::text(&plan)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(
        s["tables"]["shop.orders"]["last_maintenance"]["at"].is_string(),
        "{s}"
    );
    let left = live_data_files(&p).await.0;
    let t = totals(&p);
    assert_eq!(t["n"], json!(rows), "{t}");
    assert_eq!(t["d"], json!(rows), "{t}");
    let want: i64 = (1..=rows).map(|id| id * 7).sum();
    assert_eq!(t["s"], json!(want), "{t}");
    let metrics = reqwest::get(format!("{}/metrics", w.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let compacted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lakectl_compacted_files_total "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .trim()
        .parse()
        .unwrap();
    // Every file an ingest appended was compacted (some outputs again) or is left.
    let md = p.table("shop.orders").await.metadata;
    let appended: usize = md
        .snapshots()
        .filter(|s| s.summary().operation == iceberg::spec::Operation::Append)
        .filter_map(|s| s.summary().additional_properties.get("added-data-files"))
        .map(|n| n.parse::<usize>().unwrap())
        .sum();
    assert!(appended >= 30, "{appended} files appended: {s}");
    assert!(
        compacted as usize + left >= appended,
        "{compacted} compacted, {left} left, {appended} appended: {metrics}"
    );
}

/// The live files and manifests of `shop.orders`' current snapshot, as lakectl reads them.
async fn current_files(p: &Project) -> lakectl::mutate::SnapshotFiles {
    let set = lakectl::plan::load_valid(&p.manifests()).expect("valid");
    let lake = lakectl::lake::Lake::open_existing(set.lake_config().expect("config"))
        .await
        .expect("open")
        .expect("exists");
    let md = p.table("shop.orders").await.metadata;
    lakectl::mutate::snapshot_files(lake.file_io(), &md, md.current_snapshot().unwrap())
        .await
        .expect("manifests")
}

async fn data_manifests(p: &Project) -> usize {
    current_files(p)
        .await
        .manifests
        .iter()
        .filter(|m| m.content == iceberg::spec::ManifestContentType::Data)
        .count()
}

#[tokio::test]
async fn every_commit_keeps_the_manifest_count_bounded_and_maintenance_merges_the_rest() {
    // Java's merge-append settings, honoured by lakectl's own commits.
    let p = Project::new();
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{COLUMNS}  properties:\n    commit.manifest.min-count-to-merge: \"5\"\n"
        )),
    );
    small_files(&p, 12);
    let n = data_manifests(&p).await;
    assert!(n < 5, "{n} data manifests after 12 appends");
    assert_eq!(totals(&p)["n"], json!(360));
    let both = read_both(&p.catalog_db(), "shop.orders");
    assert_eq!(
        both["snapshots"].as_array().unwrap().last().unwrap()["pyiceberg_rows"],
        json!(360)
    );

    // Merging off for commits: maintenance.manifests merges once the count is reached.
    let q = Project::new();
    let off = format!("{COLUMNS}  properties:\n    commit.manifest-merge.enabled: \"false\"\n");
    q.write("orders.yaml", &orders(&off));
    small_files(&q, 6);
    assert_eq!(data_manifests(&q).await, 6);
    q.write(
        "orders.yaml",
        &orders(&format!(
            "{off}  maintenance:\n    manifests:\n      minCountToMerge: 4\n"
        )),
    );
    let (code, plan) = q.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("~ merge manifests of shop.orders: 6 → about 1"),
        "{plan}"
    );
    q.apply_converges();
    assert_eq!(data_manifests(&q).await, 1);
    assert_eq!(totals(&q)["n"], json!(180));
    let md = q.table("shop.orders").await.metadata;
    assert_eq!(
        md.current_snapshot().unwrap().summary().operation.as_str(),
        "replace"
    );
    read_both(&q.catalog_db(), "shop.orders");
}

#[tokio::test]
async fn pyiceberg_appending_while_compaction_runs_loses_and_duplicates_nothing() {
    let p = Project::new();
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{COLUMNS}  maintenance:\n    compaction: {{minInputFiles: 2}}\n"
        )),
    );
    small_files(&p, 6);
    let before = totals(&p);
    let script = r#"
import datetime, os, sys, time
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException
cat = SqlCatalog("lakectl", uri="sqlite:///" + os.path.abspath(sys.argv[1]))
n, done = int(sys.argv[2]), 0
while done < n:
    t = cat.load_table("shop.orders")
    row = {"id": 900000 + done, "ts": datetime.datetime(2024, 3, 1, tzinfo=datetime.timezone.utc), "v": 1}
    try:
        t.append(pa.Table.from_pylist([row], schema=t.schema().as_arrow()))
        done += 1
    except CommitFailedException:
        continue
    time.sleep(0.4)
print(done)
"#;
    let appender = std::process::Command::new(crate::common::python())
        .args(["-c", script])
        .arg(p.catalog_db())
        .arg("6")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn PyIceberg");
    // Widen the window between reading the table and committing the compaction.
    let out = std::process::Command::new(crate::common::LAKECTL)
        .args(["maintain", "--manifests", "manifests"])
        .current_dir(p.root())
        .env("LAKECTL_TEST_DELAY_BEFORE_COMMIT_MS", "700")
        .output()
        .unwrap();
    // Appends never invalidate a group: the compaction replays on each fresh state.
    assert!(out.status.success(), "{}", text(&out));
    let appended = appender.wait_with_output().unwrap();
    assert!(appended.status.success(), "{}", text(&appended));
    // Compaction converges once the appends stop.
    let out = p.run(&["maintain", "--manifests", "manifests"]);
    assert!(out.status.success(), "{}", text(&out));
    let after = totals(&p);
    assert_eq!(
        after["n"],
        json!(before["n"].as_i64().unwrap() + 6),
        "{after}"
    );
    assert_eq!(after["d"], after["n"], "no row twice: {after}");
    assert_eq!(
        after["s"],
        json!(before["s"].as_i64().unwrap() + 6),
        "{after}"
    );
    assert_eq!(live_data_files(&p).await.0, 1);
    read_both(&p.catalog_db(), "shop.orders");
}

#[tokio::test]
async fn sort_compaction_writes_files_sorted_whole_and_binpack_only_per_batch() {
    let mut seen = Vec::new();
    for strategy in ["sort", "binpack"] {
        let p = Project::new();
        let sorted = format!("{COLUMNS}  sortOrder:\n    - {{column: v}}\n");
        p.write("orders.yaml", &orders(&sorted));
        // Five files whose values interleave: each is sorted, their concatenation not.
        for f in 0..5 {
            let rows: String = (0..20)
                .map(|r| format!("{},2024-03-01T00:00:00Z,{}\n", f * 100 + r, r * 5 + f))
                .collect();
            write(&p, &format!("data/{f:03}.csv"), &format!("id,ts,v\n{rows}"));
            p.apply_ok();
        }
        p.write(
            "orders.yaml",
            &orders(&format!(
                "{sorted}  maintenance:\n    compaction: {{minInputFiles: 2, strategy: {strategy}}}\n"
            )),
        );
        p.apply_converges();
        assert_eq!(live_data_files(&p).await.0, 1, "{strategy}");
        let v: Vec<i64> = query(&p, "select v from shop.orders", None)
            .iter()
            .map(|r| r["v"].as_i64().unwrap())
            .collect();
        assert_eq!(v.len(), 100);
        seen.push((strategy, v.windows(2).all(|w| w[0] <= w[1])));
    }
    assert_eq!(seen, vec![("sort", true), ("binpack", false)]);
    // `sort` needs a sort order.
    let p = Project::new();
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{COLUMNS}  maintenance:\n    compaction: {{strategy: sort}}\n"
        )),
    );
    small_files(&p, 1);
    let (code, plan) = p.plan();
    assert_eq!(code, 1, "{plan}");
    assert!(plan.contains("the table has none"), "{plan}");
}

#[tokio::test]
async fn a_concurrent_delete_drops_its_group_from_the_compaction_and_nothing_comes_back() {
    let p = Project::new();
    let partitioned = format!("{COLUMNS}  partitioning:\n    - {{column: ts, transform: day}}\n");
    p.write("orders.yaml", &orders(&partitioned));
    small_files(&p, 4);
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{partitioned}  maintenance:\n    compaction: {{minInputFiles: 2}}\n"
        )),
    );
    let before = totals(&p);
    // lakectl rewrites the three partitions, then waits before its commit; meanwhile
    // PyIceberg deletes a row (copy-on-write: one input file of one partition goes).
    let compaction = p.spawn_with_commit_delay(&["maintain", "--manifests", "manifests"], 6000);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let script = r#"
import os, sys
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo
t = SqlCatalog("lakectl", uri="sqlite:///" + os.path.abspath(sys.argv[1])).load_table("shop.orders")
t.delete(EqualTo("id", 5))
"#;
    crate::common::py(&["-c".as_ref(), script.as_ref(), p.catalog_db().as_os_str()]);
    let out = compaction.wait_with_output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("in 2 partition(s)"),
        "the deleted row's partition left out:\n{t}"
    );
    let after = totals(&p);
    assert_eq!(
        after["n"],
        json!(before["n"].as_i64().unwrap() - 1),
        "{after}"
    );
    let five = query(
        &p,
        "select count(*) as n from shop.orders where id = 5",
        None,
    );
    assert_eq!(five[0]["n"], json!(0), "a deleted row came back");
    read_both(&p.catalog_db(), "shop.orders");
    // The partition left out compacts next time.
    p.apply_converges();
    assert_eq!(live_data_files(&p).await.0, 3);
    assert_eq!(totals(&p), after);
}

/// Commits an equality delete of `ids` (on column `id`) to `shop.orders`, as a writer
/// of merge-on-read deletes (Flink, iceberg-rust) would: a delete file and a delete
/// manifest in a new snapshot on top of the current one.
async fn commit_equality_delete(p: &Project, ids: &[i64]) {
    use iceberg::spec::{
        DataFileFormat, ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot, Summary,
    };
    use iceberg::writer::base_writer::equality_delete_writer::{
        EqualityDeleteFileWriterBuilder, EqualityDeleteWriterConfig,
    };
    use iceberg::writer::file_writer::location_generator::{
        DefaultFileNameGenerator, DefaultLocationGenerator,
    };
    use iceberg::writer::file_writer::rolling_writer::RollingFileWriterBuilder;
    use iceberg::writer::file_writer::ParquetWriterBuilder;
    use iceberg::writer::{IcebergWriter, IcebergWriterBuilder};
    use std::sync::Arc;

    let set = lakectl::plan::load_valid(&p.manifests()).expect("valid");
    let lake = lakectl::lake::Lake::open_existing(set.lake_config().expect("config"))
        .await
        .expect("open")
        .expect("exists");
    let state = p.table("shop.orders").await;
    let md = &state.metadata;
    let schema = md.current_schema().clone();
    let id = schema.field_by_name("id").unwrap().id;
    let config = EqualityDeleteWriterConfig::new(vec![id], schema.clone()).unwrap();
    let delete_schema =
        iceberg::arrow::arrow_schema_to_schema(config.projected_arrow_schema_ref()).unwrap();
    let rolling = RollingFileWriterBuilder::new_with_default_file_size(
        ParquetWriterBuilder::new(Default::default(), Arc::new(delete_schema)),
        lake.file_io().clone(),
        DefaultLocationGenerator::new(md).unwrap(),
        DefaultFileNameGenerator::new("eqdel".into(), None, DataFileFormat::Parquet),
    );
    let mut w = EqualityDeleteFileWriterBuilder::new(rolling, config)
        .build(None)
        .await
        .unwrap();
    let arrow = Arc::new(iceberg::arrow::schema_to_arrow_schema(&schema).unwrap());
    let columns: Vec<arrow_array::ArrayRef> = arrow
        .fields()
        .iter()
        .map(|f| {
            if f.name() == "id" {
                Arc::new(arrow_array::Int64Array::from(ids.to_vec())) as arrow_array::ArrayRef
            } else {
                arrow_array::new_null_array(f.data_type(), ids.len())
            }
        })
        .collect();
    w.write(arrow_array::RecordBatch::try_new(arrow, columns).unwrap())
        .await
        .unwrap();
    let deletes = w.close().await.unwrap();
    let parent = md.current_snapshot().unwrap();
    let snapshot_id = lakectl::lake::snapshot::new_snapshot_id(md);
    let seq = md.next_sequence_number();
    let base = md.location().trim_end_matches('/');
    let mut mw = ManifestWriterBuilder::new(
        lake.file_io()
            .new_output(format!("{base}/metadata/eqdel-{snapshot_id}-m0.avro"))
            .unwrap(),
        Some(snapshot_id),
        schema.clone(),
        md.default_partition_spec().as_ref().clone(),
    )
    .build_v2_deletes();
    for d in deletes {
        mw.add_file(d, seq).unwrap();
    }
    let manifest = mw.write_manifest_file().await.unwrap();
    let bytes = lake
        .file_io()
        .new_input(parent.manifest_list())
        .unwrap()
        .read()
        .await
        .unwrap();
    let mut manifests: Vec<_> =
        iceberg::spec::ManifestList::parse_with_version(&bytes, md.format_version())
            .unwrap()
            .consume_entries()
            .into_iter()
            .collect();
    manifests.push(manifest);
    let list_path = format!("{base}/metadata/snap-{snapshot_id}-eqdel.avro");
    let mut list = ManifestListWriter::v2(
        lake.file_io()
            .new_output(&list_path)
            .unwrap()
            .writer()
            .await
            .unwrap(),
        snapshot_id,
        Some(parent.snapshot_id()),
        seq,
    );
    list.add_manifests(manifests.into_iter()).unwrap();
    list.close().await.unwrap();
    let snapshot = Snapshot::builder()
        .with_snapshot_id(snapshot_id)
        .with_parent_snapshot_id(Some(parent.snapshot_id()))
        .with_sequence_number(seq)
        .with_timestamp_ms(md.last_updated_ms() + 1)
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation: Operation::Delete,
            // The parent's totals, with the delete file counted, as writers keep them.
            additional_properties: parent
                .summary()
                .additional_properties
                .iter()
                .filter(|(k, _)| k.starts_with("total-"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain([
                    ("total-delete-files".to_string(), "1".to_string()),
                    ("total-equality-deletes".to_string(), ids.len().to_string()),
                ])
                .collect(),
        })
        .with_schema_id(md.current_schema_id())
        .build();
    let (branch, reference) = lakectl::lake::snapshot::main_branch(snapshot_id);
    lake.commit(
        &state.ident,
        &lakectl::lake::pin_state(md),
        vec![
            iceberg::TableUpdate::AddSnapshot { snapshot },
            iceberg::TableUpdate::SetSnapshotRef {
                ref_name: branch,
                reference,
            },
        ],
    )
    .await
    .expect("commit the equality delete");
}

#[tokio::test]
async fn compaction_applies_and_drops_equality_deletes() {
    let p = Project::new();
    p.write("orders.yaml", &orders(COLUMNS));
    small_files(&p, 3);
    commit_equality_delete(&p, &[1, 2, 101]).await;
    let expected = totals(&p);
    assert_eq!(
        expected["n"],
        json!(87),
        "lakectl applies the equality delete: {expected}"
    );
    let files = lakectl_delete_files(&p).await;
    assert_eq!(files, 1, "one equality delete file");
    compact_with_plan_saying(&p, "1 delete file(s) applied and dropped");
    assert_eq!(lakectl_delete_files(&p).await, 0);
    assert_eq!(live_data_files(&p).await.0, 1);
    assert_eq!(totals(&p), expected);
    // PyIceberg reads the compacted snapshot alike (it needs no equality deletes now).
    let script = r#"
import os, sys
from pyiceberg.catalog.sql import SqlCatalog
t = SqlCatalog("lakectl", uri="sqlite:///" + os.path.abspath(sys.argv[1])).load_table("shop.orders")
a = t.scan().to_arrow()
print(a.num_rows, sorted(a["id"].to_pylist())[:3])
"#;
    let out = crate::common::py(&["-c".as_ref(), script.as_ref(), p.catalog_db().as_os_str()]);
    assert_eq!(out.trim(), "87 [0, 3, 4]", "{out}");
}

async fn lakectl_delete_files(p: &Project) -> usize {
    current_files(p).await.delete_files
}
