//! Declared mutations (copy-on-write update and delete), applied once; rollback by id,
//! time and steps restoring rows and schema, with the rolled-back changes held back;
//! time travel; restore-point tags and expiry; and PyIceberg + DuckDB reading every
//! snapshot as `lakectl query --as-of` does.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use crate::common::{read_both, text, Project};

/// `shop.sales` partitioned by day(ts), ingesting `../data/*.csv`, plus `extra` lines
/// under `spec:` (mutations, policy, retention).
pub fn sales(partitioned: bool, extra: &str) -> String {
    let partitioning = if partitioned {
        "  partitioning:\n    - column: ts\n      transform: day\n"
    } else {
        ""
    };
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
{partitioning}  sources:
    - name: daily
      uri: ../data/*.csv
{extra}"#
    )
}

/// The row with id `i`: (day 1..=3, region, qty).
pub fn row(i: u64) -> (u64, &'static str, i64) {
    (
        1 + i % 3,
        ["eu", "us", "apac"][((i / 3) % 3) as usize],
        (i % 10) as i64,
    )
}

/// Writes rows `first..first+n` as CSV.
pub fn csv(path: &Path, first: u64, n: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "id,ts,region,qty").unwrap();
    for i in first..first + n {
        let (day, region, qty) = row(i);
        writeln!(f, "{i},2024-03-0{day}T{:02}:00:00Z,{region},{qty}", i % 24).unwrap();
    }
}

pub fn query(p: &Project, sql: &str, as_of: Option<&str>) -> Vec<serde_json::Value> {
    let mut args = vec!["query", sql, "--format", "json"];
    if let Some(a) = as_of {
        args.extend(["--as-of", a]);
    }
    let out = p.run(&args);
    assert!(out.status.success(), "query failed: {}", text(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    v.as_array().cloned().unwrap_or_default()
}

/// id → (region, qty) as lakectl reads the table now.
fn table_rows(p: &Project) -> BTreeMap<i64, (String, i64)> {
    query(p, "select id, region, qty from shop.sales", None)
        .into_iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                (
                    r["region"].as_str().unwrap().to_string(),
                    r["qty"].as_i64().unwrap(),
                ),
            )
        })
        .collect()
}

/// Live data files of the current snapshot, with their partition text.
async fn live_files(p: &Project) -> BTreeMap<String, String> {
    let state = p.table("shop.sales").await;
    let md = &state.metadata;
    let Some(snap) = md.current_snapshot() else {
        return BTreeMap::new();
    };
    let set = lakectl::plan::load_valid(&p.manifests()).unwrap();
    let lake = lakectl::lake::Lake::open_existing(set.lake_config().unwrap())
        .await
        .unwrap()
        .unwrap();
    lakectl::mutate::snapshot_files(lake.file_io(), md, snap)
        .await
        .unwrap()
        .files
        .iter()
        .map(|f| {
            (
                f.path().to_string(),
                lakectl::mutate::describe_partition(f, md),
            )
        })
        .collect()
}

fn summary(md: &iceberg::spec::TableMetadata) -> BTreeMap<String, String> {
    let s = md.current_snapshot().unwrap();
    let mut m: BTreeMap<String, String> = s
        .summary()
        .additional_properties
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    m.insert("operation".into(), s.summary().operation.as_str().into());
    m
}

fn num(m: &BTreeMap<String, String>, k: &str) -> i64 {
    m.get(k)
        .unwrap_or_else(|| panic!("no {k} in {m:?}"))
        .parse()
        .unwrap()
}

const DAY2_QTY9: &str = r#"  mutations:
    - name: zero-day2-nines
      update:
        where: ts >= TIMESTAMP '2024-03-02T00:00:00Z' AND ts < TIMESTAMP '2024-03-03T00:00:00Z' AND qty = 9
        set:
          qty: 0
          region: upper(region)
"#;

#[tokio::test]
async fn update_and_delete_on_a_partitioned_table() {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 300);
    p.write("sales.yaml", &sales(true, ""));
    p.apply_converges();
    let before = live_files(&p).await;
    let before_rows = table_rows(&p);
    assert_eq!(before_rows.len(), 300);

    // The update: plan names the files that may match (day 2 only) and counts rows.
    p.write("sales.yaml", &sales(true, DAY2_QTY9));
    let out = p.run(&["plan", "manifests", "--estimate"]);
    let plan = text(&out);
    assert_eq!(out.status.code(), Some(2), "{plan}");
    let day2: Vec<&String> = before
        .iter()
        .filter(|(_, part)| part.contains("2024-03-02"))
        .map(|(f, _)| f)
        .collect();
    assert!(!day2.is_empty());
    assert!(
        plan.contains(&format!(
            "files that may match: {} of {}",
            day2.len(),
            before.len()
        )),
        "{plan}"
    );
    let expected_changed = (0..300u64)
        .filter(|i| row(*i).0 == 2 && row(*i).2 == 9)
        .count();
    assert!(expected_changed > 0);
    assert!(
        plan.contains(&format!("rows matching now: {expected_changed}")),
        "{plan}"
    );
    let out = p.apply_converges();
    assert!(
        out.contains(&format!("{expected_changed} row(s) changed")),
        "{out}"
    );

    // Exact rows after.
    let after_rows = table_rows(&p);
    let mut want = before_rows.clone();
    for (id, (region, qty)) in want.iter_mut() {
        if row(*id as u64).0 == 2 && *qty == 9 {
            *qty = 0;
            *region = region.to_uppercase();
        }
    }
    assert_eq!(after_rows, want);

    // Files of other days untouched; day 2's files replaced.
    let after = live_files(&p).await;
    for (f, part) in &before {
        if part.contains("2024-03-02") {
            assert!(!after.contains_key(f), "{f} should have been rewritten");
        } else {
            assert!(after.contains_key(f), "{f} ({part}) was rewritten");
        }
    }
    // Summary counts.
    let md = p.table("shop.sales").await.metadata;
    let s = summary(&md);
    let day2_rows = (0..300u64).filter(|i| row(*i).0 == 2).count() as i64;
    assert_eq!(s["operation"], "overwrite");
    assert_eq!(num(&s, "deleted-data-files"), day2.len() as i64);
    assert_eq!(num(&s, "deleted-records"), day2_rows);
    assert_eq!(num(&s, "added-records"), day2_rows);
    assert_eq!(num(&s, "total-records"), 300);
    assert_eq!(num(&s, "total-data-files"), after.len() as i64);
    assert_eq!(num(&s, "lakectl.rows-changed"), expected_changed as i64);
    assert!(s["lakectl.change-id"].starts_with("mutation:shop.sales:zero-day2-nines@"));
    let snapshot = md.current_snapshot_id();

    // Applied once: a second apply changes nothing.
    let out = p.apply_ok();
    assert!(out.contains("No changes"), "{out}");
    assert_eq!(
        p.table("shop.sales").await.metadata.current_snapshot_id(),
        snapshot
    );

    // A delete of a third of the table is refused by the share limit, nothing committed.
    let drop_day3 = "    - name: drop-day3\n      delete:\n        where: ts >= TIMESTAMP '2024-03-03T00:00:00Z'\n";
    p.write(
        "sales.yaml",
        &sales(true, &format!("{DAY2_QTY9}{drop_day3}")),
    );
    let location = p.table("shop.sales").await.metadata_location;
    let out = p.run(&["apply", "manifests"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("it would change 100 of 300 row(s)")
            && text(&out).contains("nothing was committed"),
        "{}",
        text(&out)
    );
    assert_eq!(p.table("shop.sales").await.metadata_location, location);

    // With `maxRowsChanged` it goes: whole files dropped, a `delete` snapshot.
    let day3: Vec<String> = after
        .iter()
        .filter(|(_, part)| part.contains("2024-03-03"))
        .map(|(f, _)| f.clone())
        .collect();
    p.write(
        "sales.yaml",
        &sales(
            true,
            &format!("{DAY2_QTY9}{drop_day3}      maxRowsChanged: 100\n"),
        ),
    );
    let out = p.apply_converges();
    assert!(
        out.contains("100 row(s) changed; 0 file(s) rewritten"),
        "{out}"
    );
    let md = p.table("shop.sales").await.metadata;
    let s = summary(&md);
    assert_eq!(s["operation"], "delete");
    assert_eq!(num(&s, "added-data-files"), 0);
    assert_eq!(num(&s, "deleted-data-files"), day3.len() as i64);
    assert_eq!(num(&s, "deleted-records"), 100);
    assert_eq!(num(&s, "total-records"), 200);
    let rows = table_rows(&p);
    assert_eq!(rows.len(), 200);
    assert!(rows.keys().all(|id| row(*id as u64).0 != 3));

    // Editing a mutation's definition makes it a new one.
    p.write(
        "sales.yaml",
        &sales(
            true,
            &DAY2_QTY9
                .replace("qty = 9", "qty = 8")
                .replace("qty: 0", "qty: 1"),
        ),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("update shop.sales `zero-day2-nines`"),
        "{plan}"
    );

    // The independent readers agree with lakectl on every snapshot.
    p.apply_converges();
    readers_agree_with_lakectl(&p);
}

#[tokio::test]
async fn unpartitioned_update_rewrites_only_files_with_matches() {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 100);
    p.write("sales.yaml", &sales(false, ""));
    p.apply_converges();
    let first = live_files(&p).await;
    csv(&p.root().join("data/b.csv"), 100, 100);
    p.apply_converges();
    let second: BTreeSet<String> = live_files(&p)
        .await
        .into_keys()
        .filter(|f| !first.contains_key(f))
        .collect();
    assert_eq!(first.len(), 1);
    assert_eq!(second.len(), 1);

    // Statistics rule out a.csv's file: it is not even read.
    p.write(
        "sales.yaml",
        &sales(
            false,
            "  mutations:\n    - name: bump\n      update:\n        where: id >= 180\n        set: {qty: qty + 100}\n",
        ),
    );
    let (_, plan) = p.plan();
    assert!(plan.contains("files that may match: 1 of 2"), "{plan}");
    let out = p.apply_converges();
    assert!(
        out.contains("20 row(s) changed; 1 file(s) rewritten, 0 removed, 1 untouched (1 read)"),
        "{out}"
    );
    let now = live_files(&p).await;
    assert!(now.contains_key(first.keys().next().unwrap()));
    assert!(!now.contains_key(second.iter().next().unwrap()));
    let rows = table_rows(&p);
    for (id, (_, qty)) in &rows {
        let base = row(*id as u64).2;
        assert_eq!(*qty, if *id >= 180 { base + 100 } else { base }, "id {id}");
    }
    let s = summary(&p.table("shop.sales").await.metadata);
    assert_eq!(s["operation"], "overwrite");
    assert_eq!(num(&s, "deleted-data-files"), 1);
    assert_eq!(num(&s, "deleted-records"), 100);
    assert_eq!(num(&s, "added-records"), 100);
    assert_eq!(num(&s, "total-records"), 200);

    // A mutation that matches nothing is recorded (applied once) and rewrites nothing.
    p.write(
        "sales.yaml",
        &sales(
            false,
            "  mutations:\n    - name: bump\n      update:\n        where: id >= 180\n        set: {qty: qty + 100}\n    - name: none\n      delete:\n        where: qty > 1000\n",
        ),
    );
    let before = live_files(&p).await;
    let out = p.apply_converges();
    assert!(out.contains("0 row(s) changed"), "{out}");
    assert_eq!(live_files(&p).await, before);
    readers_agree_with_lakectl(&p);
}

/// PyIceberg and DuckDB read every snapshot; their row counts (and PyIceberg's sums)
/// equal `lakectl query --as-of` on the same snapshot.
pub fn readers_agree_with_lakectl(p: &Project) {
    let v = read_both(&p.catalog_db(), "shop.sales");
    assert_eq!(v["readers_agree"], true, "{v}");
    for s in v["snapshots"].as_array().unwrap() {
        let id = s["snapshot_id"].as_i64().unwrap().to_string();
        let r = query(
            p,
            "select count(*) as n, sum(qty) as q from shop.sales",
            Some(&id),
        );
        assert_eq!(
            s["pyiceberg_rows"].as_i64(),
            r[0]["n"].as_i64(),
            "snapshot {id}: {s}"
        );
        assert_eq!(s["duckdb_rows"].as_i64(), r[0]["n"].as_i64(), "{s}");
        let q = s["sums"]["qty"].as_i64().unwrap_or(0);
        assert_eq!(
            Some(q),
            r[0]["q"].as_i64().or(Some(0)),
            "snapshot {id}: {s}"
        );
    }
}

fn history(p: &Project) -> Vec<serde_json::Value> {
    let out = p.run(&["history", "shop.sales", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["snapshots"].as_array().unwrap().clone()
}

/// The columns `lakectl query` returns for `select *` (the CSV header).
fn columns(p: &Project, as_of: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "query",
        "select * from shop.sales order by id limit 1",
        "--format",
        "csv",
    ];
    if let Some(a) = as_of {
        args.extend(["--as-of", a]);
    }
    let out = p.run(&args);
    assert!(out.status.success(), "{}", text(&out));
    let header = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    header.split(',').map(str::to_string).collect()
}

#[tokio::test]
async fn rollback_restores_rows_and_schema_and_holds_changes_back() {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 90);
    p.write("sales.yaml", &sales(true, ""));
    p.apply_converges();
    let a = p.table("shop.sales").await.metadata;
    let snap_a = a.current_snapshot_id().unwrap();
    let time_a = history(&p)[0]["time"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(20));

    // B: a new column (schema change); C: a delete.
    let with_note = sales(true, "").replace(
        "      type: int\n",
        "      type: int\n    - name: note\n      type: string\n",
    );
    p.write("sales.yaml", &with_note);
    p.apply_converges();
    let mutation =
        "  mutations:\n    - name: drop-eu\n      delete:\n        where: region = 'eu'\n";
    p.write(
        "sales.yaml",
        &format!("{with_note}{mutation}  policy:\n    maxMutationShare: 0.5\n"),
    );
    p.apply_converges();
    let c = p.table("shop.sales").await.metadata;
    let snap_c = c.current_snapshot_id().unwrap();
    assert_eq!(table_rows(&p).len(), 60);
    assert!(columns(&p, None).contains(&"note".to_string()));

    // Dry run changes nothing.
    let loc = p.table("shop.sales").await.metadata_location;
    let out = p.run(&["rollback", "shop.sales", "--steps", "2", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("-note: string"), "{}", text(&out));
    assert_eq!(p.table("shop.sales").await.metadata_location, loc);

    // By steps: back to A, rows and schema.
    let out = p.run(&["rollback", "shop.sales", "--steps", "2"]);
    assert!(out.status.success(), "{}", text(&out));
    let md = p.table("shop.sales").await.metadata;
    assert_eq!(md.current_snapshot_id(), Some(snap_a));
    assert_eq!(md.current_schema_id(), a.current_schema_id());
    assert!(md.current_schema().field_by_name("note").is_none());
    assert_eq!(table_rows(&p).len(), 90);
    assert!(!columns(&p, None).contains(&"note".to_string()));
    // PyIceberg sees the restored schema too.
    let seen = p.inspect("shop.sales");
    assert!(
        !seen["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "note"),
        "{seen}"
    );

    // Held back: plan lists both changes and applies neither.
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(
        plan.contains("held back: shop.sales `update-table`"),
        "{plan}"
    );
    assert!(plan.contains("held back: shop.sales `mutation`"), "{plan}");
    let out = p.apply_ok();
    assert!(!out.contains('✓'), "{out}");
    assert_eq!(
        p.table("shop.sales").await.metadata.current_snapshot_id(),
        Some(snap_a)
    );

    // Time travel: C's rows with C's schema; A's without the column.
    let rows_c = query(
        &p,
        "select count(*) as n from shop.sales",
        Some(&snap_c.to_string()),
    );
    assert_eq!(rows_c[0]["n"], 60);
    assert!(columns(&p, Some(&snap_c.to_string())).contains(&"note".to_string()));
    assert!(!columns(&p, Some(&snap_a.to_string())).contains(&"note".to_string()));

    // By id, forward again: C's changes are back in main, nothing held.
    let out = p.run(&["rollback", "shop.sales", "--to", &snap_c.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("back in main"), "{}", text(&out));
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("No changes"), "{plan}");
    assert_eq!(table_rows(&p).len(), 60);

    // By time: the newest snapshot at or before A's time is A.
    let out = p.run(&["rollback", "shop.sales", "--to-time", &time_a]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        p.table("shop.sales").await.metadata.current_snapshot_id(),
        Some(snap_a)
    );

    // `--reapply` releases one change: the column comes back, the delete stays held.
    let id = plan_reapply_id(&p, "`update-table`");
    let out = p.run(&["apply", "manifests", "--reapply", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let md = p.table("shop.sales").await.metadata;
    assert!(md.current_schema().field_by_name("note").is_some());
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("held back: shop.sales `mutation`"), "{plan}");
    assert!(!plan.contains("`update-table`"), "{plan}");
    assert_eq!(table_rows(&p).len(), 90);

    // A new manifest edit of the mutation is a new change: applied.
    p.write(
        "sales.yaml",
        &format!(
            "{with_note}{}  policy:\n    maxMutationShare: 0.5\n",
            mutation.replace("'eu'", "'us'")
        ),
    );
    p.apply_converges();
    assert_eq!(table_rows(&p).len(), 60);
    assert!(table_rows(&p).values().all(|(r, _)| r != "us"));
    readers_agree_with_lakectl(&p);
}

#[tokio::test]
async fn tags_survive_expiry_and_expiry_keeps_the_ledger() {
    let p = Project::new();
    let retention =
        "  retention:\n    tagApplies: true\n    keepLast: 1\n    maxSnapshotAgeDays: 0\n";
    csv(&p.root().join("data/a.csv"), 0, 30);
    p.write("sales.yaml", &sales(false, retention));
    let out = p.apply_converges();
    assert!(out.contains("tag shop.sales snapshot"), "{out}");
    let tagged_first = p
        .table("shop.sales")
        .await
        .metadata
        .current_snapshot_id()
        .unwrap();
    csv(&p.root().join("data/b.csv"), 30, 30);
    p.write(
        "sales.yaml",
        &sales(
            false,
            &format!("{retention}  mutations:\n    - name: zero\n      update:\n        where: id < 5\n        set: {{qty: 0}}\n"),
        ),
    );
    p.apply_converges();
    let md = p.table("shop.sales").await.metadata;
    let all = md.snapshots().count();
    assert!(all >= 4, "{all}");
    let refs = lakectl::apply::expire::refs(&md);
    assert_eq!(refs.len(), 3, "{refs:?}"); // main and two apply tags

    // Dry run: nothing changes.
    let loc = p.table("shop.sales").await.metadata_location;
    let out = p.run(&["expire", "shop.sales", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(p.table("shop.sales").await.metadata_location, loc);

    let out = p.run(&["expire", "shop.sales", "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expired: Vec<i64> = e["expire"]["expired_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(!expired.is_empty(), "{e}");
    assert!(
        !expired.contains(&tagged_first),
        "a tagged snapshot was expired: {e}"
    );
    for f in e["expire"]["files_to_delete"].as_array().unwrap() {
        let f = f.as_str().unwrap();
        assert!(
            !Path::new(f.trim_start_matches("file:")).exists(),
            "{f} still there"
        );
    }
    let md = p.table("shop.sales").await.metadata;
    assert!(md.snapshot_by_id(tagged_first).is_some());
    assert_eq!(md.snapshots().count(), all - expired.len());

    // The ledger of expired snapshots is archived: nothing is ingested or applied twice.
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("No changes"), "{plan}");
    assert_eq!(table_rows(&p).len(), 60);
    // The tagged restore point still rolls back and reads.
    let out = p.run(&["rollback", "shop.sales", "--to", &tagged_first.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(table_rows(&p).len(), 30);
    readers_agree_with_lakectl(&p);
}

#[tokio::test]
async fn a_rolled_back_ingest_is_held_back_until_reapplied() {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 30);
    p.write("sales.yaml", &sales(true, ""));
    p.apply_converges();
    csv(&p.root().join("data/b.csv"), 30, 30);
    p.apply_converges();
    assert_eq!(table_rows(&p).len(), 60);

    let out = p.run(&["rollback", "shop.sales", "--steps", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(table_rows(&p).len(), 30);
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("held back: shop.sales `ingest`"), "{plan}");
    assert!(!plan.contains("+ ingest ../data/b.csv"), "{plan}");

    // A new file is ingested; the held-back one stays out.
    csv(&p.root().join("data/c.csv"), 60, 30);
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(
        plan.contains("+ ingest ../data/c.csv") && !plan.contains("+ ingest ../data/b.csv"),
        "{plan}"
    );
    p.apply_ok();
    let ids: BTreeSet<i64> = table_rows(&p).into_keys().collect();
    assert_eq!(ids, (0..30).chain(60..90).collect());

    // `--reapply` with the id plan shows brings b.csv back, once.
    let id = plan_reapply_id(&p, "`ingest`");
    let out = p.run(&["apply", "manifests", "--reapply", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("+ ingest ../data/b.csv"),
        "{}",
        text(&out)
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("No changes"), "{plan}");
    assert_eq!(table_rows(&p).len(), 90);
    // An unknown id is refused.
    let out = p.run(&["apply", "manifests", "--reapply", "mutation:nope@1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

/// The change id `plan` suggests to `--reapply` for the held-back line containing `what`.
fn plan_reapply_id(p: &Project, what: &str) -> String {
    let (_, plan) = p.plan();
    plan.lines()
        .find(|l| l.contains("held back:") && l.contains(what))
        .and_then(|l| l.split("--reapply ").nth(1))
        .and_then(|r| r.split('`').next())
        .unwrap_or_else(|| panic!("no held-back {what} in:\n{plan}"))
        .to_string()
}

/// Files of the current snapshot with their sizes in bytes.
async fn file_sizes(p: &Project) -> BTreeMap<String, u64> {
    let state = p.table("shop.sales").await;
    let md = &state.metadata;
    let set = lakectl::plan::load_valid(&p.manifests()).unwrap();
    let lake = lakectl::lake::Lake::open_existing(set.lake_config().unwrap())
        .await
        .unwrap()
        .unwrap();
    lakectl::mutate::snapshot_files(lake.file_io(), md, md.current_snapshot().unwrap())
        .await
        .unwrap()
        .files
        .iter()
        .map(|f| (f.path().to_string(), f.data_file().file_size_in_bytes()))
        .collect()
}

/// With a small `write.target-file-size-bytes`, files are written near the target (the
/// open pages no longer outweigh it), and an update touching every file rewrites each
/// into one file: before, each 256 KiB file came back as eleven of 34 KB.
#[tokio::test]
async fn an_update_in_every_file_keeps_the_file_count_at_small_targets() {
    let p = Project::new();
    csv(&p.root().join("data/a.csv"), 0, 300_000);
    let target = 65_536u64;
    let props = format!("  properties:\n    write.target-file-size-bytes: \"{target}\"\n");
    p.write("sales.yaml", &sales(false, &props));
    p.apply_converges();
    let before = file_sizes(&p).await;
    assert!(before.len() >= 3, "{before:?}");
    // Every file but the last of the writer is at least half the target.
    let small = before.values().filter(|s| **s < target / 2).count();
    assert!(small <= 2, "files far under the target: {before:?}");

    let update = "  mutations:\n    - name: spread\n      update:\n        where: id % 100 = 7\n        set: {qty: qty + 1}\n";
    p.write("sales.yaml", &sales(false, &format!("{props}{update}")));
    let out = p.apply_converges();
    assert!(
        out.contains(&format!(
            "3000 row(s) changed; {n} file(s) rewritten, 0 removed, 0 untouched",
            n = before.len()
        )),
        "{out}"
    );
    let after = file_sizes(&p).await;
    assert_eq!(after.len(), before.len(), "{before:?} → {after:?}");
    assert!(after.keys().all(|f| !before.contains_key(f)));
    let total: u64 = query(&p, "select sum(qty) as q from shop.sales", None)[0]["q"]
        .as_u64()
        .unwrap();
    let base: u64 = (0..300_000u64).map(|i| row(i).2 as u64).sum();
    assert_eq!(total, base + 3000);
}
