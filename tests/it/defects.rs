//! Regressions from trying lakectl from outside (issue 11), one test per defect, named
//! after what broke.

use serde_json::{json, Value};

use crate::common::{orders, read_both, text, Project};
use crate::mutate::query;

fn write(p: &Project, rel: &str, body: &str) {
    let path = p.root().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

async fn snapshot_ids(p: &Project, table: &str) -> Vec<i64> {
    let md = p.table(table).await.metadata;
    let mut s: Vec<_> = md
        .snapshots()
        .map(|s| (s.sequence_number(), s.snapshot_id()))
        .collect();
    s.sort();
    s.into_iter().map(|(_, id)| id).collect()
}

const NESTED: &str = "  columns:
    - name: id
      type: long
    - name: s
      type: struct
      fields:
        - name: a
          type: long
    - name: l
      type: list
      element:
        type: struct
        fields:
          - name: x
            type: long
    - name: m
      type: map
      key: {type: string}
      value:
        type: struct
        fields:
          - name: p
            type: long
    - name: n
      type: struct
      fields:
        - name: inner
          type: struct
          fields:
            - name: c
              type: long
  sources:
    - name: rows
      uri: ../data/*.jsonl
";

/// The manifest with one field added inside each nested column.
fn nested_evolved() -> String {
    NESTED
        .replace(
            "        - name: a\n          type: long\n",
            "        - name: a\n          type: long\n        - name: b\n          type: string\n",
        )
        .replace(
            "          - name: x\n            type: long\n",
            "          - name: x\n            type: long\n          - name: y\n            type: string\n",
        )
        .replace(
            "          - name: p\n            type: long\n",
            "          - name: p\n            type: long\n          - name: q\n            type: string\n",
        )
        .replace(
            "            - name: c\n              type: long\n",
            "            - name: c\n              type: long\n            - name: d\n              type: string\n",
        )
}

const NESTED_SQL: &str = "select id, s, l, m, n from shop.orders order by id";

#[tokio::test]
async fn nested_field_added_after_data_reads_as_null_in_old_files_at_every_snapshot() {
    let p = Project::new();
    write(
        &p,
        "data/1.jsonl",
        r#"{"id": 1, "s": {"a": 10}, "l": [{"x": 1}, {"x": 2}], "m": {"k": {"p": 5}}, "n": {"inner": {"c": 7}}}
"#,
    );
    p.write("orders.yaml", &orders(NESTED));
    p.apply_converges();
    let old_row = json!({"id": 1, "s": {"a": 10}, "l": [{"x": 1}, {"x": 2}], "m": {"k": {"p": 5}}, "n": {"inner": {"c": 7}}});
    assert_eq!(query(&p, NESTED_SQL, None), vec![old_row.clone()]);

    // One field added inside a struct, a list element, a map value and a struct in a
    // struct: the old file lacks all four.
    p.write("orders.yaml", &orders(&nested_evolved()));
    p.apply_converges();
    let old_row_now = json!({"id": 1, "s": {"a": 10, "b": null}, "l": [{"x": 1, "y": null}, {"x": 2, "y": null}], "m": {"k": {"p": 5, "q": null}}, "n": {"inner": {"c": 7, "d": null}}});
    assert_eq!(query(&p, NESTED_SQL, None), vec![old_row_now.clone()]);
    let projected = query(&p, "select s.a as a, s.b as b from shop.orders", None);
    assert_eq!(projected, vec![json!({"a": 10, "b": null})]);

    // A new file with the new fields set, beside the old one.
    write(
        &p,
        "data/2.jsonl",
        r#"{"id": 2, "s": {"a": 20, "b": "bee"}, "l": [{"x": 3, "y": "why"}], "m": {"k": {"p": 6, "q": "queue"}}, "n": {"inner": {"c": 8, "d": "dee"}}}
"#,
    );
    p.apply_converges();
    let new_row = json!({"id": 2, "s": {"a": 20, "b": "bee"}, "l": [{"x": 3, "y": "why"}], "m": {"k": {"p": 6, "q": "queue"}}, "n": {"inner": {"c": 8, "d": "dee"}}});
    assert_eq!(
        query(&p, NESTED_SQL, None),
        vec![old_row_now.clone(), new_row.clone()]
    );

    // Every snapshot reads with its own schema: the first with the old one, the
    // metadata-only schema change and the later ones with nulls in the old file.
    let ids = snapshot_ids(&p, "shop.orders").await;
    assert!(ids.len() >= 3, "{ids:?}");
    let mut seen = Vec::new();
    for id in &ids {
        let rows = query(&p, NESTED_SQL, Some(&id.to_string()));
        seen.push(rows);
    }
    assert!(seen.contains(&vec![old_row.clone()]), "{seen:?}");
    assert!(seen.contains(&vec![old_row_now.clone()]), "{seen:?}");
    assert_eq!(
        seen.last().unwrap(),
        &vec![old_row_now.clone(), new_row.clone()]
    );

    // A copy-on-write update that must rewrite the old file.
    let mut with_mutation = nested_evolved();
    with_mutation.push_str(
        "  mutations:\n    - name: renumber\n      maxRowsChanged: 1\n      update:\n        where: id = 1\n        set: {id: \"100\"}\n",
    );
    p.write("orders.yaml", &orders(&with_mutation));
    let out = p.apply_converges();
    assert!(out.contains("1 row(s) changed"), "{out}");
    let mut renumbered = old_row_now.clone();
    renumbered["id"] = json!(100);
    assert_eq!(query(&p, NESTED_SQL, None), vec![new_row, renumbered]);

    // PyIceberg and DuckDB agree with each other on every snapshot, and with lakectl.
    let both = read_both(&p.catalog_db(), "shop.orders");
    let snaps = both["snapshots"].as_array().expect("snapshots");
    assert_eq!(snaps.last().unwrap()["pyiceberg_rows"], json!(2), "{both}");
}

/// Rows of `sql` over the lakehouse of `p`, with and without filters pushed into the
/// Iceberg scan, each as sorted JSON lines.
async fn both_ways(p: &Project, sql: &str) -> (Vec<String>, Vec<String>) {
    let lake = p.lake().await;
    let mut out = Vec::new();
    for pushdown in [true, false] {
        let options = lakectl::query::ScanOptions {
            pushdown,
            parallel: true,
        };
        out.push(crate::common::sorted_rows(&lake, sql, None, options).await);
    }
    let plain = out.pop().unwrap();
    (out.pop().unwrap(), plain)
}

#[tokio::test]
async fn query_with_pushdown_returns_the_rows_of_an_unpushed_scan_for_every_transform() {
    let p = Project::new();
    let rows = [
        "1,héllo wörld,1,2024-03-01,2024-03-01T10:00:00,1.5,1.25",
        "2,hello,2,2024-03-02,2024-03-02T11:30:00,2.5,-0.5",
        "3,hé,10,2023-12-31,2023-12-31T23:59:59,NaN,NaN",
        "4,h,-3,1969-12-31,1969-12-31T23:00:00,-1.0,1e300",
        "5,日本語テキスト,25,2024-02-29,2024-02-29T00:00:00,1.1,1.1",
        "6,,0,2000-01-01,2000-01-01T00:00:00,0.0,0.0",
        "7,,,,,,",
        "8,h_llo%,7,2024-03-01,2024-03-01T10:59:59,inf,-inf",
        "9,Ünïcödé,100,1900-06-15,1900-06-15T06:00:00,3.0,3.0",
    ];
    write(
        &p,
        "data/t.csv",
        &format!("id,s,n,d,ts,f,g\n{}\n", rows.join("\n")),
    );
    let columns = "  columns:\n    - {name: id, type: long}\n    - {name: s, type: string}\n    - {name: n, type: int}\n    - {name: d, type: date}\n    - {name: ts, type: timestamp}\n    - {name: f, type: float}\n    - {name: g, type: double}\n  sources:\n    - name: t\n      uri: ../data/t.csv\n";
    let specs = [
        ("plain", ""),
        ("trunc3", "  partitioning:\n    - {column: s, transform: \"truncate[3]\"}\n"),
        ("trunc1", "  partitioning:\n    - {column: s, transform: \"truncate[1]\"}\n"),
        ("ident", "  partitioning:\n    - {column: s, transform: identity}\n"),
        ("bucket", "  partitioning:\n    - {column: s, transform: \"bucket[4]\"}\n    - {column: n, transform: \"bucket[3]\"}\n"),
        ("ntrunc", "  partitioning:\n    - {column: n, transform: \"truncate[10]\"}\n"),
        ("years", "  partitioning:\n    - {column: d, transform: year}\n"),
        ("months", "  partitioning:\n    - {column: d, transform: month}\n"),
        ("days", "  partitioning:\n    - {column: ts, transform: day}\n"),
        ("hours", "  partitioning:\n    - {column: ts, transform: hour}\n"),
    ];
    for (name, spec) in specs {
        p.write(
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: {name}\n  namespace: t\nspec:\n{columns}{spec}"
            ),
        );
    }
    p.apply_converges();
    let filters = [
        "s like 'hé%'",
        "starts_with(s, 'hé')",
        "s like 'h%'",
        "s like '日本%'",
        "s like 'h\\_llo%'",
        "s like 'h_llo%'",
        "s not like 'hé%'",
        "s = 'hé'",
        "s = 'héllo wörld'",
        "s <> 'hé'",
        "s > 'hé'",
        "s >= 'héllo'",
        "s < 'hé'",
        "s in ('hé', 'hello', 'Ünïcödé')",
        "s not in ('hé', 'hello')",
        "s is null",
        "s is not null",
        "s = ''",
        "n < 5",
        "n >= 10",
        "n = 25 or s = 'h'",
        "n in (1, 100)",
        "d < DATE '2024-01-01'",
        "d >= DATE '2024-02-29' and d < DATE '2024-03-02'",
        "d = DATE '1969-12-31'",
        "d > DATE '1899-12-31'",
        "ts > TIMESTAMP '2024-03-01T10:00:00'",
        "ts >= TIMESTAMP '2024-03-01T10:00:00' and ts < TIMESTAMP '2024-03-01T11:00:00'",
        "ts < TIMESTAMP '1970-01-01T00:00:00'",
        "cast(n as varchar) < '5'",
        "f > 1",
        "f = CAST(1.1 AS REAL)",
        "f < 0 or f > 2",
        "g > 1.5",
        "g = 1.1",
        "g is null",
        "not (n > 5 and s = 'hé')",
    ];
    for filter in filters {
        let (reference, _) = both_ways(&p, &format!("select id from t.plain where {filter}")).await;
        for (name, _) in specs {
            let sql = format!("select id from t.{name} where {filter}");
            let (pushed, plain) = both_ways(&p, &sql).await;
            assert_eq!(pushed, plain, "{sql}: pushdown differs from the plain scan");
            assert_eq!(
                pushed, reference,
                "{sql}: differs from the unpartitioned table"
            );
        }
    }
    // The case of the report: the multibyte prefix finds its row.
    let (rows, _) = both_ways(&p, "select id from t.trunc3 where s like 'hé%'").await;
    assert_eq!(rows, vec![r#"{"id":1}"#, r#"{"id":3}"#]);
    // Month partitions are named as Java names them.
    let dirs: Vec<String> = std::fs::read_dir(p.root().join(".lakectl/warehouse/t/months/data"))
        .expect("data dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(dirs.contains(&"d_month=2024-03".to_string()), "{dirs:?}");
    assert!(dirs.contains(&"d_month=1969-12".to_string()), "{dirs:?}");
    assert!(dirs.contains(&"d_month=1900-06".to_string()), "{dirs:?}");
}

#[tokio::test]
async fn float_filters_run_and_json_output_keeps_nulls_and_non_finite_doubles() {
    let p = Project::new();
    write(
        &p,
        "data/f.jsonl",
        concat!(
            r#"{"id": 1, "f": 1.5, "g": 1.0, "u": "3f2b8a4c-1d2e-4f60-9a7b-0c1d2e3f4a5b", "m": {"k": null, "j": "x"}}"#,
            "\n",
            r#"{"id": 2, "f": 0.5, "g": null, "u": "3f2b8a4c1d2e4f609a7b0c1d2e3f4a5c", "m": {}}"#,
            "\n",
        ),
    );
    write(
        &p,
        "data/g.csv",
        "id,f,g\n3,NaN,NaN\n4,inf,-inf\n5,1.1,Infinity\n",
    );
    p.write(
        "orders.yaml",
        &orders("  columns:\n    - {name: id, type: long}\n    - {name: f, type: float}\n    - {name: g, type: double}\n    - {name: u, type: uuid}\n    - {name: m, type: \"map<string, string>\"}\n  sources:\n    - name: j\n      uri: ../data/f.jsonl\n    - name: c\n      uri: ../data/g.csv\n"),
    );
    p.apply_converges();
    let ids = |sql: &str| -> Vec<i64> {
        let mut v: Vec<i64> = query(&p, sql, None)
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        v.sort();
        v
    };
    // DataFusion orders NaN above every number, as Spark does.
    assert_eq!(
        ids("select id from shop.orders where f > 1"),
        vec![1, 3, 4, 5]
    );
    assert_eq!(
        ids("select id from shop.orders where f = CAST(1.1 AS REAL)"),
        vec![5]
    );
    assert_eq!(ids("select id from shop.orders where g < 0"), vec![4]);
    let rows = query(
        &p,
        "select id, f, g, u, m from shop.orders order by id",
        None,
    );
    assert_eq!(rows[0]["m"], json!({"k": null, "j": "x"}), "{rows:?}");
    assert_eq!(rows[1]["g"], Value::Null, "{rows:?}");
    assert!(rows[1].as_object().unwrap().contains_key("g"), "{rows:?}");
    assert_eq!(rows[2]["f"], json!("NaN"));
    assert_eq!(rows[2]["g"], json!("NaN"));
    assert_eq!(rows[3]["f"], json!("Infinity"));
    assert_eq!(rows[3]["g"], json!("-Infinity"));
    assert_eq!(rows[4]["g"], json!("Infinity"));
    assert_eq!(rows[0]["f"], json!(1.5));
    // Dashed and plain UUIDs from JSON read as the same 16 bytes.
    let u = query(
        &p,
        "select id, u from shop.orders where u is not null order by id",
        None,
    );
    assert_eq!(u.len(), 2, "{u:?}");
    assert_eq!(
        u[0]["u"].as_str().map(|s| s.replace('-', "")),
        Some("3f2b8a4c1d2e4f609a7b0c1d2e3f4a5b".to_string()),
        "{u:?}"
    );
}

/// A project whose table `shop.orders` ingests two CSVs (12 rows) and runs one mutation.
fn ingest_and_mutate_project() -> Project {
    let p = Project::new();
    let mut a = String::from("id,qty\n");
    let mut b = String::from("id,qty\n");
    for i in 1..=6 {
        a.push_str(&format!("{i},{i}\n"));
        b.push_str(&format!("{},{}\n", i + 6, i + 6));
    }
    write(&p, "data/a.csv", &a);
    write(&p, "data/b.csv", &b);
    p.write(
        "orders.yaml",
        &orders("  columns:\n    - {name: id, type: long}\n    - {name: qty, type: long}\n  sources:\n    - name: csv\n      uri: ../data/*.csv\n  mutations:\n    - name: bump\n      maxRowsChanged: 1\n      update:\n        where: id = 1\n        set: {qty: qty + 100}\n"),
    );
    p.apply_converges();
    p
}

/// PyIceberg appends a row (id 1000, qty 1000), then expires every snapshot but its
/// own, as another engine's maintenance would.
fn pyiceberg_append_and_expire_the_rest(p: &Project) {
    let db = p.catalog_db();
    let script = crate::common::oracle_dir().join("pyiceberg_alter.py");
    for op in [
        &["append", r#"[{"id": 1000, "qty": 1000}]"#][..],
        &["expire-others"][..],
    ] {
        let mut args = vec![
            script.as_os_str(),
            db.as_os_str(),
            "lakectl".as_ref(),
            "shop.orders".as_ref(),
        ];
        args.extend(op.iter().map(|a| std::ffi::OsStr::new(*a)));
        crate::common::py(&args);
    }
}

fn totals(p: &Project) -> (i64, i64) {
    let r = query(
        p,
        "select count(*) as n, sum(qty) as q from shop.orders",
        None,
    );
    (r[0]["n"].as_i64().unwrap(), r[0]["q"].as_i64().unwrap())
}

#[tokio::test]
async fn another_engines_rewrite_and_expiry_do_not_make_lakectl_ingest_or_mutate_again() {
    let p = ingest_and_mutate_project();
    let before = totals(&p);
    assert_eq!(before, (12, 78 + 100));
    let warehouse = p.root().join(".lakectl/warehouse");
    crate::common::spark_sql(
        &p.catalog_db(),
        &warehouse,
        &[
            "CALL lk.system.rewrite_data_files(table => 'shop.orders', options => map('rewrite-all', 'true'))",
            "CALL lk.system.expire_snapshots(table => 'shop.orders', older_than => TIMESTAMP '2999-01-01 00:00:00', retain_last => 1)",
        ],
    );
    let md = p.table("shop.orders").await.metadata;
    assert_eq!(md.snapshots().count(), 1, "Spark kept one snapshot");
    assert!(
        !md.current_snapshot()
            .unwrap()
            .summary()
            .additional_properties
            .contains_key("lakectl.change-id"),
        "the snapshot left is Spark's"
    );
    let (code, plan) = p.plan();
    assert!(!plan.contains("ingest"), "{plan}");
    assert!(!plan.contains("bump"), "{plan}");
    assert_eq!(code, 0, "{plan}");
    p.apply_ok();
    assert_eq!(totals(&p), before, "no row ingested or mutated twice");
}

#[tokio::test]
async fn expiry_that_keeps_only_a_foreign_snapshot_keeps_the_ledger() {
    // The same without Spark: another writer's snapshot on top, then lakectl's own
    // snapshots dropped from the metadata as an expiry by another engine would.
    let p = ingest_and_mutate_project();
    let before = totals(&p);
    pyiceberg_append_and_expire_the_rest(&p);
    let md = p.table("shop.orders").await.metadata;
    assert_eq!(
        md.snapshots().count(),
        1,
        "only the foreign snapshot is left"
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    p.apply_ok();
    assert_eq!(totals(&p), (before.0 + 1, before.1 + 1000));
}

#[tokio::test]
async fn failed_reapply_keeps_the_change_held_back() {
    let p = Project::new();
    write(&p, "data/a.csv", "id,qty\n1,1\n2,2\n");
    let base = "  columns:\n    - {name: id, type: long}\n    - {name: qty, type: long}\n  sources:\n    - name: csv\n      uri: ../data/a.csv\n";
    p.write("orders.yaml", &orders(base));
    p.apply_converges();
    let target = p
        .table("shop.orders")
        .await
        .metadata
        .current_snapshot_id()
        .unwrap();
    let evolved = format!(
        "{}    - {{name: note, type: string}}\n  sources:{}  mutations:\n    - name: annotate\n      maxRowsChanged: 1\n      update:\n        where: id = 1\n        set: {{note: \"'checked'\"}}\n",
        base.split("  sources:").next().unwrap(),
        base.split("  sources:").nth(1).unwrap()
    );
    p.write("orders.yaml", &orders(&evolved));
    p.apply_converges();
    let out = p.run(&[
        "rollback",
        "shop.orders",
        "--to",
        &target.to_string(),
        "--manifests",
        "manifests",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let (_, plan) = p.plan();
    assert!(plan.contains("held back"), "{plan}");
    let mutation_id = held_id(&p, "mutation:").await;
    let table_id = held_id(&p, "table:").await;

    // Reapplying the mutation alone fails (its column is held back too) and must keep
    // it held back; the plan says which change to reapply with it.
    let out = p.run(&["apply", "manifests", "--reapply", &mutation_id]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&table_id),
        "names the change it needs:\n{}",
        text(&out)
    );
    assert_eq!(held_id(&p, "mutation:").await, mutation_id);
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "nothing pending after the failed reapply:\n{plan}");
    let out = p.run(&["apply", "manifests"]);
    assert!(
        out.status.success(),
        "a plain apply still works:\n{}",
        text(&out)
    );

    // Both together land, and leave nothing held back.
    let out = p.run(&[
        "apply",
        "manifests",
        "--reapply",
        &table_id,
        "--reapply",
        &mutation_id,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let rows = query(&p, "select id, note from shop.orders order by id", None);
    assert_eq!(rows[0]["note"], json!("checked"), "{rows:?}");
    let md = p.table("shop.orders").await.metadata;
    assert!(lakectl::lake::ledger::held_back(&md).is_empty());
}

async fn held_id(p: &Project, prefix: &str) -> String {
    let md = p.table("shop.orders").await.metadata;
    lakectl::lake::ledger::held_back(&md)
        .into_iter()
        .map(|h| h.change_id)
        .find(|id| id.starts_with(prefix))
        .unwrap_or_else(|| panic!("no held-back {prefix} change"))
}

#[test]
fn closed_stdout_ends_quietly() {
    let p = Project::new();
    write(&p, "data/a.csv", "id\n1\n2\n3\n");
    p.write(
        "orders.yaml",
        &orders("  columns:\n    - {name: id, type: long}\n  sources:\n    - name: csv\n      uri: ../data/a.csv\n"),
    );
    p.apply_ok();
    for args in [
        vec!["history", "shop.orders"],
        vec![
            "query",
            "select * from shop.orders, shop.orders b, shop.orders c, shop.orders d, shop.orders e",
        ],
        vec!["plan", "manifests"],
    ] {
        let mut child = std::process::Command::new(crate::common::LAKECTL)
            .args(&args)
            .current_dir(p.root())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take()); // the reader goes away (`| head -0`)
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}

#[test]
fn yaml_merge_keys_are_read() {
    let p = Project::new();
    p.write(
        "orders.yaml",
        "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: orders\n  namespace: shop\nspec:\n  columns:\n    - &idcol {name: id, type: long, required: true, doc: An id}\n    - <<: *idcol\n      name: id2\n",
    );
    let out = p.run(&["validate", "manifests"]);
    assert!(out.status.success(), "{}", text(&out));
    p.apply_converges();
    let i = p.inspect("shop.orders");
    let f = crate::common::field(&i, "id2");
    assert_eq!(f["required"], json!(true), "{i}");
    // An error in a document with merge keys is still named, with its place.
    p.write(
        "orders.yaml",
        "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: orders\n  namespace: shop\nspec:\n  columns:\n    - &idcol {name: id, type: long}\n    - <<: *idcol\n      name: id2\n      colour: red\n",
    );
    let out = p.run(&["validate", "manifests"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown field `colour`"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("orders.yaml:"), "{}", text(&out));
}

#[test]
fn unset_env_var_in_catalog_uri_is_one_error() {
    let p = Project::new();
    p.write(
        "lakehouse.yaml",
        "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata:\n  name: lake\nspec:\n  catalog:\n    type: sql\n    uri: sqlite:${env:LAKECTL_TEST_SURELY_UNSET}/c.db\n  warehouse: wh\n",
    );
    let out = p.run(&["validate", "manifests"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("LAKECTL_TEST_SURELY_UNSET"), "{t}");
    assert!(!t.contains("must start with"), "a false second error:\n{t}");
}

#[test]
fn validate_refuses_null_into_a_required_column() {
    let p = Project::new();
    p.write(
        "orders.yaml",
        &orders("  columns:\n    - {name: id, type: long, required: true}\n    - {name: qty, type: long}\n  mutations:\n    - name: wipe\n      update:\n        where: qty < 0\n        set: {id: \"NULL\", qty: \"NULL\"}\n"),
    );
    let out = p.run(&["validate", "manifests"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("`set.id`") && t.contains("required"), "{t}");
    assert!(!t.contains("`set.qty`"), "qty may be null:\n{t}");
}

#[tokio::test]
async fn as_of_before_the_table_existed_says_so() {
    let p = Project::new();
    write(&p, "data/a.csv", "id\n1\n");
    p.write(
        "orders.yaml",
        &orders("  columns:\n    - {name: id, type: long}\n  sources:\n    - name: csv\n      uri: ../data/a.csv\n"),
    );
    p.apply_ok();
    let out = p.run(&[
        "query",
        "select * from shop.orders",
        "--as-of",
        "2001-01-01",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("shop.orders had no snapshot at --as-of 2001-01-01"),
        "{stderr}"
    );
    let out = p.run(&[
        "query",
        "select * from shop.orders",
        "--as-of",
        "2999-01-01",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).is_empty(),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn losing_an_ingest_race_reports_nothing_to_do() {
    // Two applies of the same new file at once: one ingests, the other finds it in
    // the ledger and says so.
    let p = Project::new();
    write(&p, "data/a.csv", "id\n1\n");
    p.write(
        "orders.yaml",
        &orders("  columns:\n    - {name: id, type: long}\n  sources:\n    - name: csv\n      uri: ../data/*.csv\n"),
    );
    p.apply_ok();
    let mut big = String::from("id\n");
    for i in 0..200_000 {
        big.push_str(&format!("{i}\n"));
    }
    write(&p, "data/b.csv", &big);
    let spawn = || {
        std::process::Command::new(crate::common::LAKECTL)
            .args(["apply", "manifests"])
            .current_dir(p.root())
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    for o in &outs {
        assert!(o.status.success(), "{}", text(o));
    }
    let texts: Vec<String> = outs.iter().map(text).collect();
    assert_eq!(totals_ids(&p), 200_001, "{texts:?}");
    // Unless the second planned after the first committed (then its plan was empty),
    // it reports the file as applied by the other writer, not as 0 files ingested.
    for t in &texts {
        assert!(!t.contains(": 0 file(s)"), "{t}");
    }
    let raced = texts
        .iter()
        .filter(|t| t.contains("already applied by another writer"));
    let empty = texts.iter().filter(|t| t.contains("No changes"));
    assert_eq!(raced.count() + empty.count(), 1, "{texts:?}");
}

fn totals_ids(p: &Project) -> i64 {
    query(p, "select count(*) as n from shop.orders", None)[0]["n"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn rollback_to_a_foreign_snapshot_after_expiry_holds_back_and_reapplies_the_ingest() {
    // Only another writer's snapshot R is left; lakectl ingests on top of it, then
    // rolls back to R: the ledger at R must not list that ingest.
    let p = ingest_and_mutate_project();
    pyiceberg_append_and_expire_the_rest(&p);
    let r = p
        .table("shop.orders")
        .await
        .metadata
        .current_snapshot_id()
        .unwrap();
    let at_r = totals(&p);
    write(&p, "data/c.csv", "id,qty\n2000,5\n");
    p.apply_converges();
    assert_eq!(totals(&p), (at_r.0 + 1, at_r.1 + 5));
    let out = p.run(&[
        "rollback",
        "shop.orders",
        "--to",
        &r.to_string(),
        "--manifests",
        "manifests",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(totals(&p), at_r);
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("held back"), "{plan}");
    let id = held_id(&p, "source:").await;
    let out = p.run(&["apply", "manifests", "--reapply", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("already applied"), "{}", text(&out));
    assert_eq!(totals(&p), (at_r.0 + 1, at_r.1 + 5), "the ingest is back");
}
