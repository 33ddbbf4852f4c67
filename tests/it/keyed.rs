//! Keyed sources: `mode: upsert` (with CDC deletes), `replacePartitions` and `replace`.
//! The final rows equal a reference DuckDB computes in SQL from the same input files
//! (`tests/oracle/keyed_reference.py`), and PyIceberg, DuckDB and Spark read them.
//! Duplicate keys, null keys, wrong key types and columns a file lacks; a CDC
//! sequence across files; PyIceberg appending while an upsert runs.

use std::io::Write;
use std::path::Path;

use crate::common::{py, read_both, text, Project};
use crate::crash::Lcg;
use crate::mutate::query;

/// Seed rows: ids `0..SEED`.
const SEED: u64 = 3000;

/// One input row: (id, name, tier, day 1..=5, balance, op).
type Row = (u64, String, i64, u64, f64, &'static str);

fn write_rows(path: &Path, rows: &[Row], op: bool) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    // `_seq` is the line order for the reference (not a table column: lakectl ignores it).
    if op {
        writeln!(f, "_seq,op,id,name,tier,ts,balance").unwrap();
    } else {
        writeln!(f, "_seq,id,name,tier,ts,balance").unwrap();
    }
    for (seq, (id, name, tier, day, balance, o)) in rows.iter().enumerate() {
        let ts = format!("2024-01-0{day}T{:02}:15:00", id % 24);
        let name = name.replace('"', "\"\"");
        if op {
            writeln!(f, "{seq},{o},{id},\"{name}\",{tier},{ts},{balance}").unwrap();
        } else {
            writeln!(f, "{seq},{id},\"{name}\",{tier},{ts},{balance}").unwrap();
        }
    }
}

fn seed_rows() -> Vec<Row> {
    (0..SEED)
        .map(|i| {
            (
                i,
                format!("c{i}"),
                (i % 4) as i64,
                1 + i % 5,
                i as f64 * 1.5,
                "I",
            )
        })
        .collect()
}

/// A batch file: `existing` random existing keys, `fresh` new keys from `first_new`,
/// a few keys twice (the later wins), on the days `days`; CDC ops when `cdc`.
fn batch_rows(
    rng: &mut Lcg,
    existing: usize,
    first_new: u64,
    fresh: u64,
    days: &[u64],
    tag: &str,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let make = |rng: &mut Lcg, id: u64| -> Row {
        let day = days[(rng.next() % days.len() as u64) as usize];
        let op = match rng.next() % 10 {
            0 | 1 => "D",
            2 => "U",
            _ => "I",
        };
        (
            id,
            format!("{tag}-{id}, \"q\""),
            (rng.next() % 7) as i64,
            day,
            (rng.next() % 100_000) as f64 / 4.0,
            op,
        )
    };
    for _ in 0..existing {
        let id = rng.next() % SEED;
        rows.push(make(rng, id));
    }
    for id in first_new..first_new + fresh {
        rows.push(make(rng, id));
    }
    // Repeats within the file: the later line wins.
    let again: Vec<u64> = rows.iter().step_by(17).map(|r| r.0).collect();
    for id in again {
        rows.push(make(rng, id));
    }
    rows
}

fn table(name: &str, source: &str) -> String {
    format!(
        r#"apiVersion: lakectl/v1
kind: Table
metadata:
  name: {name}
  namespace: crm
spec:
  columns:
    - name: id
      type: long
      required: true
    - name: name
      type: string
    - name: tier
      type: int
    - name: ts
      type: timestamp
    - name: balance
      type: double
  identifierFields: [id]
  partitioning:
    - column: ts
      transform: day
  properties:
    write.target-file-size-bytes: "60000"
  sources:
    - name: seed
      uri: ../data/seed/*.csv
{source}"#
    )
}

fn reference(
    p: &Project,
    table: &str,
    mode: &str,
    batches: &[Vec<String>],
    cdc: bool,
) -> serde_json::Value {
    let script = crate::common::oracle_dir().join("keyed_reference.py");
    let db = p.catalog_db();
    let seed = p.root().join("data/seed/*.csv");
    let mut args: Vec<std::ffi::OsString> = vec![
        script.into(),
        "--db".into(),
        db.into(),
        "--table".into(),
        table.into(),
        "--mode".into(),
        mode.into(),
        "--seed".into(),
        seed.into(),
    ];
    for b in batches {
        args.push("--batch".into());
        args.push(b.join(",").into());
    }
    if cdc {
        args.extend(["--op-column".into(), "op".into()]);
    }
    let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let out = py(&refs);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn path_of(p: &Project, rel: &str) -> String {
    p.root().join(rel).display().to_string()
}

#[tokio::test]
async fn upsert_cdc_replace_partitions_and_replace_equal_a_duckdb_reference() {
    let p = Project::new();
    write_rows(&p.root().join("data/seed/seed.csv"), &seed_rows(), false);
    let mut rng = Lcg(0x5eed);
    // Batch 1: two files (the second overlaps the first), days 2 and 4.
    let b1a = batch_rows(&mut rng, 300, SEED, 200, &[2, 4], "a");
    let mut b1b = batch_rows(&mut rng, 100, SEED + 150, 100, &[2, 4], "b");
    // Keys of the first file again in the second: the second file wins.
    b1b.extend(
        b1a.iter()
            .step_by(9)
            .map(|r| (r.0, format!("b-{}", r.0), 9, 4, 1.0, "U")),
    );
    // A CDC sequence across the two files: insert, delete, re-insert.
    b1b.push((SEED + 900, "re-inserted".into(), 5, 2, 2.5, "I"));
    let mut b1a = b1a;
    b1a.push((SEED + 900, "first".into(), 1, 2, 0.5, "I"));
    b1a.push((SEED + 900, "gone".into(), 1, 2, 0.5, "D"));
    for (dir, op) in [("feed", false), ("cdc", true)] {
        write_rows(&p.root().join(format!("data/{dir}/b1-a.csv")), &b1a, op);
        write_rows(&p.root().join(format!("data/{dir}/b1-b.csv")), &b1b, op);
    }
    let feed = |mode: &str, dir: &str, extra: &str| {
        format!("    - name: feed\n      uri: ../data/{dir}/*.csv\n      mode: {mode}\n{extra}")
    };
    p.write(
        "upsert.yaml",
        &table("upserted", &feed("upsert", "feed", "      key: [id]\n")),
    );
    p.write(
        "cdc.yaml",
        &table(
            "changes",
            &feed(
                "upsert",
                "cdc",
                "      cdc: {opColumn: op, deleteWhen: [\"D\"]}\n",
            ),
        ),
    );
    p.write(
        "rp.yaml",
        &table("daily", &feed("replacePartitions", "feed", "")),
    );
    p.write(
        "replace.yaml",
        &table("snapshot", &feed("replace", "feed", "")),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("upsert by id, cdc"), "{plan}");
    assert!(plan.contains("replaces the partitions it holds"), "{plan}");
    let out = p.apply_converges();
    assert!(out.contains("upsert"), "{out}");

    let tables = [
        ("crm.upserted", "upsert", "feed", false),
        ("crm.changes", "upsert", "cdc", true),
        ("crm.daily", "replacePartitions", "feed", false),
        ("crm.snapshot", "replace", "feed", false),
    ];
    let batch = |dir: &str, names: &[&str]| -> Vec<String> {
        names
            .iter()
            .map(|n| path_of(&p, &format!("data/{dir}/{n}")))
            .collect()
    };
    for (t, mode, dir, cdc) in tables {
        let r = reference(&p, t, mode, &[batch(dir, &["b1-a.csv", "b1-b.csv"])], cdc);
        assert_eq!(r["pyiceberg_equal"], true, "{t}: {r}");
        assert_eq!(r["duckdb_equal"], true, "{t}: {r}");
        if mode == "upsert" {
            assert_eq!(
                r["distinct_keys"], r["reference_rows"],
                "{t}: a key twice: {r}"
            );
        }
    }

    // Batch 2: a new file under the glob; `plan --estimate` counts its keys that match.
    let b2 = batch_rows(&mut rng, 250, SEED + 2000, 50, &[5], "c");
    write_rows(&p.root().join("data/feed/b2.csv"), &b2, false);
    write_rows(&p.root().join("data/cdc/b2.csv"), &b2, true);
    let out = p.run(&["plan", "manifests", "--estimate", "--output", "json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let upserted = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["table"] == "crm.upserted")
        .unwrap_or_else(|| panic!("{v}"));
    let current: std::collections::HashSet<i64> = query(&p, "select id from crm.upserted", None)
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    let keys: std::collections::HashSet<u64> = b2.iter().map(|r| r.0).collect();
    let matching = keys
        .iter()
        .filter(|k| current.contains(&(**k as i64)))
        .count();
    assert!(matching > 100, "the batch updates existing keys");
    assert_eq!(upserted["matching_keys"], matching, "{upserted}");
    assert_eq!(
        upserted["files"].as_array().unwrap().len(),
        1,
        "only the new file"
    );

    let out = p.apply_converges();
    assert!(out.contains("upsert"), "{out}");
    let mut spark_expect = Vec::new();
    for (t, mode, dir, cdc) in tables {
        let r = reference(
            &p,
            t,
            mode,
            &[
                batch(dir, &["b1-a.csv", "b1-b.csv"]),
                batch(dir, &["b2.csv"]),
            ],
            cdc,
        );
        assert_eq!(r["pyiceberg_equal"], true, "{t}: {r}");
        assert_eq!(r["duckdb_equal"], true, "{t}: {r}");
        spark_expect.push((
            t,
            r["reference_rows"].as_i64().unwrap(),
            r["sum_id"].as_i64().unwrap(),
        ));
        // Every snapshot, the overwrites included, reads alike in PyIceberg and DuckDB.
        assert_eq!(read_both(&p.catalog_db(), t)["readers_agree"], true, "{t}");
    }
    // The upsert rewrote only the files holding a matching key, in one overwrite.
    let md = p.table("crm.upserted").await.metadata;
    let s = md.current_snapshot().unwrap();
    assert_eq!(s.summary().operation, iceberg::spec::Operation::Overwrite);
    let props = &s.summary().additional_properties;
    assert_eq!(props["lakectl.mode"], "upsert");
    let replace = p.table("crm.snapshot").await.metadata;
    assert_eq!(
        replace
            .current_snapshot()
            .unwrap()
            .summary()
            .additional_properties["total-records"],
        b2.len().to_string(),
        "replace: the batch is the table"
    );

    // Spark 3.5 reads the same rows (one session for the four tables).
    let warehouse = p.root().join(".lakectl/warehouse");
    let sql: Vec<String> = spark_expect
        .iter()
        .map(|(t, ..)| format!("select '{t}' as t, count(*) as n, sum(id) as s from lk.{t}"))
        .collect();
    let union = format!("select * from ({}) order by t", sql.join(" union all "));
    let rows = crate::common::spark_sql(&p.catalog_db(), &warehouse, &[&union]);
    let got: Vec<(String, i64, i64)> = rows["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{rows}"))
        .iter()
        .map(|r| {
            (
                r["t"].as_str().unwrap().to_string(),
                r["n"].as_i64().unwrap(),
                r["s"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut want: Vec<(String, i64, i64)> = spark_expect
        .iter()
        .map(|(t, n, s)| (t.to_string(), *n, *s))
        .collect();
    want.sort();
    assert_eq!(got, want, "Spark's counts and sums");
}

fn write(p: &Project, rel: &str, body: &str) {
    let path = p.root().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

/// `crm.people` (id, name, tier, ts, balance) with the seed ids 1..=4 and an upsert
/// source `feed` on `data/feed/*.csv` with the extra source lines `extra`.
fn people(p: &Project, extra: &str) {
    write(
        p,
        "data/seed/seed.csv",
        "id,name,tier,ts,balance\n1,ann,1,2024-01-01T00:00:00,10\n2,bob,2,2024-01-02T00:00:00,20\n3,cy,3,2024-01-03T00:00:00,30\n4,dee,4,2024-01-04T00:00:00,40\n",
    );
    p.write(
        "people.yaml",
        &table(
            "people",
            &format!(
                "    - name: feed\n      uri: ../data/feed/*.csv\n      mode: upsert\n{extra}"
            ),
        ),
    );
}

/// id → (name, tier) as lakectl reads `crm.people`.
fn people_rows(p: &Project) -> Vec<(i64, String, Option<i64>)> {
    let mut v: Vec<(i64, String, Option<i64>)> =
        query(p, "select id, name, tier from crm.people", None)
            .iter()
            .map(|r| {
                (
                    r["id"].as_i64().unwrap(),
                    r["name"].as_str().unwrap_or("").to_string(),
                    r["tier"].as_i64(),
                )
            })
            .collect();
    v.sort();
    v
}

fn apply_fails(p: &Project) -> String {
    let out = p.run(&["apply", "manifests"]);
    assert!(!out.status.success(), "apply should fail:\n{}", text(&out));
    text(&out)
}

#[tokio::test]
async fn duplicate_null_and_mistyped_keys_are_refused_and_lacking_columns_keep_their_values() {
    // onDuplicateKey: error — two files share a key: refused, naming both places.
    let p = Project::new();
    people(&p, "      onDuplicateKey: error\n");
    p.apply_converges();
    write(&p, "data/feed/a.csv", "id,name,tier\n2,bob2,7\n9,new,1\n");
    write(&p, "data/feed/b.csv", "id,name,tier\n5,eve,5\n2,bob3,8\n");
    let before = p.table("crm.people").await.metadata_location;
    let err = apply_fails(&p);
    assert!(err.contains("key (id=2)"), "{err}");
    assert!(
        err.contains("b.csv (row 2)") && err.contains("a.csv (row 1)"),
        "{err}"
    );
    assert!(err.contains("onDuplicateKey: error"), "{err}");
    assert_eq!(
        p.table("crm.people").await.metadata_location,
        before,
        "nothing committed"
    );

    // onDuplicateKey: last (the default) — the later file's row wins.
    people(&p, "");
    p.apply_converges();
    assert_eq!(
        people_rows(&p),
        vec![
            (1, "ann".into(), Some(1)),
            (2, "bob3".into(), Some(8)),
            (3, "cy".into(), Some(3)),
            (4, "dee".into(), Some(4)),
            (5, "eve".into(), Some(5)),
            (9, "new".into(), Some(1)),
        ]
    );

    // A null key: refused at its file:line:col, nothing committed.
    write(&p, "data/feed/c.csv", "id,name,tier\n3,cy2,1\n,nobody,1\n");
    let before = p.table("crm.people").await.metadata_location;
    let err = apply_fails(&p);
    assert!(err.contains("c.csv:3:1"), "{err}");
    assert!(err.contains("required column `id` is null"), "{err}");
    assert_eq!(p.table("crm.people").await.metadata_location, before);

    // A key of the wrong type: refused at its place.
    write(
        &p,
        "data/feed/c.csv",
        "id,name,tier\n3,cy2,1\nx7,nobody,1\n",
    );
    let err = apply_fails(&p);
    assert!(err.contains("c.csv:3:1"), "{err}");
    assert_eq!(p.table("crm.people").await.metadata_location, before);

    // A file without `tier`: updated rows keep theirs, new rows take the default.
    std::fs::remove_file(p.root().join("data/feed/c.csv")).unwrap();
    people(&p, "      defaults: {tier: \"0\"}\n");
    write(&p, "data/feed/d.csv", "id,name\n3,cy2\n10,ten\n");
    p.apply_converges();
    let rows = people_rows(&p);
    assert!(rows.contains(&(3, "cy2".into(), Some(3))), "{rows:?}");
    assert!(rows.contains(&(10, "ten".into(), Some(0))), "{rows:?}");
    // A key given `tier` by one file and not by a later one in the same batch: refused
    // (which value the row keeps is not defined).
    write(&p, "data/feed/e.csv", "id,name,tier\n4,dee2,9\n");
    write(&p, "data/feed/f.csv", "id,name\n4,dee3\n");
    let err = apply_fails(&p);
    assert!(
        err.contains("f.csv (row 1)") && err.contains("`tier`"),
        "{err}"
    );
    std::fs::remove_file(p.root().join("data/feed/f.csv")).unwrap();
    p.apply_converges();
    assert!(people_rows(&p).contains(&(4, "dee2".into(), Some(9))));
}

#[tokio::test]
async fn a_cdc_sequence_across_files_ends_with_its_last_operation() {
    let p = Project::new();
    people(
        &p,
        "      cdc: {opColumn: op, deleteWhen: [D, d]}\n      order: mtime\n",
    );
    p.apply_converges();
    // Applied in modification order (not name order): insert, update, delete,
    // re-insert of 7; update then delete of 1; delete of 2 then insert of 2.
    let files = [
        (
            "z1.csv",
            "op,id,name,tier\nI,7,seven,1\nU,1,ann2,1\nD,2,,\n",
        ),
        ("y2.csv", "op,id,name,tier\nU,7,seven2,2\nd,1,,\n"),
        ("x3.csv", "op,id,name,tier\nD,7,,\nI,2,bob-again,5\n"),
        ("w4.csv", "op,id,name,tier\nI,7,seven3,3\nD,99,,\n"),
    ];
    for (i, (name, body)) in files.iter().enumerate() {
        let path = p.root().join("data/feed").join(name);
        write(&p, &format!("data/feed/{name}"), body);
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(100 - i as u64);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let out = p.apply_converges();
    assert!(out.contains("upsert"), "{out}");
    assert_eq!(
        people_rows(&p),
        vec![
            (2, "bob-again".into(), Some(5)),
            (3, "cy".into(), Some(3)),
            (4, "dee".into(), Some(4)),
            (7, "seven3".into(), Some(3)),
        ]
    );
    // The op column is not stored.
    let md = p.table("crm.people").await.metadata;
    assert!(md.current_schema().field_by_name("op").is_none());
}

#[tokio::test]
async fn pyiceberg_appending_while_an_upsert_runs_loses_nothing() {
    let p = Project::new();
    people(&p, "");
    p.apply_converges();
    write(
        &p,
        "data/feed/a.csv",
        "id,name,tier\n1,ann2,9\n20,twenty,2\n",
    );
    // The upsert waits before its commit; PyIceberg appends in that window, so the
    // first commit conflicts and the upsert probes again on the fresh state.
    let child = p.spawn_with_commit_delay(&["apply", "manifests"], 4000);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let script = r#"
import sys, os, pyarrow as pa, datetime
from pyiceberg.catalog.sql import SqlCatalog
t = SqlCatalog("lakectl", uri=f"sqlite:///{os.path.abspath(sys.argv[1])}").load_table("crm.people")
schema = t.schema().as_arrow()
rows = {"id": [30, 31, 1], "name": ["py30", "py31", "py-ann"], "tier": [3, 3, 3],
        "ts": [datetime.datetime(2024, 1, 5)] * 3, "balance": [1.0, 2.0, 3.0]}
t.append(pa.Table.from_pydict(rows, schema=schema))
print("appended")
"#;
    let out = py(&["-c".as_ref(), script.as_ref(), p.catalog_db().as_os_str()]);
    assert_eq!(out.trim(), "appended");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // PyIceberg's rows are all there; its row for key 1 landed before the upsert's
    // commit, so the upsert (probing again on fresh state) replaced it too.
    let rows = people_rows(&p);
    assert!(rows.contains(&(30, "py30".into(), Some(3))), "{rows:?}");
    assert!(rows.contains(&(31, "py31".into(), Some(3))), "{rows:?}");
    assert!(rows.contains(&(20, "twenty".into(), Some(2))), "{rows:?}");
    let ones: Vec<_> = rows.iter().filter(|r| r.0 == 1).collect();
    assert_eq!(ones, vec![&(1, "ann2".to_string(), Some(9))], "{rows:?}");
    assert_eq!(rows.len(), 7, "{rows:?}");
}

#[tokio::test]
async fn a_long_string_key_in_a_later_row_group_is_found_and_replaced() {
    // Row groups of 100 rows; the third holds keys longer than Parquet's 64-byte
    // statistics truncation. iceberg's writer used to leave such a row group out of the
    // file's bounds, so the upsert pruned the file holding the key and appended it twice.
    let p = Project::new();
    let long = |i: u64| format!("{}{i}", "z".repeat(70));
    let mut body = String::from("url,hits\n");
    for i in 0..200 {
        body.push_str(&format!("a-{i},1\n"));
    }
    for i in 0..100 {
        body.push_str(&format!("{},1\n", long(i)));
    }
    write(&p, "data/seed/seed.csv", &body);
    p.write(
        "pages.yaml",
        "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: pages\n  namespace: web\nspec:\n  columns:\n    - {name: url, type: string, required: true}\n    - {name: hits, type: long}\n  properties:\n    write.parquet.row-group-limit: \"100\"\n  sources:\n    - {name: seed, uri: ../data/seed/*.csv}\n    - {name: feed, uri: ../data/feed/*.csv, mode: upsert, key: [url]}\n",
    );
    p.apply_converges();
    write(
        &p,
        "data/feed/a.csv",
        &format!("url,hits\n{},42\n", long(5)),
    );
    p.apply_converges();
    let rows = query(
        &p,
        &format!("select hits from web.pages where url = '{}'", long(5)),
        None,
    );
    assert_eq!(
        rows,
        vec![serde_json::json!({"hits": 42})],
        "one row, replaced"
    );
    let n = query(&p, "select count(*) as n from web.pages", None);
    assert_eq!(n[0]["n"], 300);
}

#[tokio::test]
async fn replace_partitions_after_a_promotion_and_cdc_deletes_without_payload() {
    // replacePartitions on an identity partition whose column was promoted int → long:
    // the old files hold `Int` partition values, the new ones `Long`; the old rows of
    // the partition go all the same.
    let p = Project::new();
    let manifest = |ty: &str| {
        format!("apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: parts\n  namespace: web\nspec:\n  columns:\n    - {{name: id, type: long, required: true}}\n    - {{name: p, type: {ty}}}\n    - {{name: label, type: string, required: true}}\n  partitioning:\n    - {{column: p, transform: identity}}\n  sources:\n    - {{name: seed, uri: ../data/seed/*.csv}}\n    - {{name: reload, uri: ../data/reload/*.csv, mode: replacePartitions}}\n    - name: changes\n      uri: ../data/cdc/*.csv\n      mode: upsert\n      key: [id]\n      cdc: {{opColumn: op}}\n")
    };
    write(
        &p,
        "data/seed/seed.csv",
        "id,p,label\n1,1,a\n2,1,b\n3,2,c\n",
    );
    p.write("parts.yaml", &manifest("int"));
    p.apply_converges();
    p.write("parts.yaml", &manifest("long"));
    write(&p, "data/reload/r.csv", "id,p,label\n10,1,reloaded\n");
    p.apply_converges();
    let rows = |p: &Project| -> Vec<(i64, String)> {
        query(p, "select id, label from web.parts order by id", None)
            .iter()
            .map(|r| {
                (
                    r["id"].as_i64().unwrap(),
                    r["label"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(rows(&p), vec![(3, "c".into()), (10, "reloaded".into())]);
    // The partition column reads from the files written before its promotion too.
    let s = query(&p, "select sum(p) as s from web.parts", None);
    assert_eq!(s[0]["s"], 3, "{s:?}");

    // A CDC delete needs only its key, though `label` is required; an insert without
    // `label` is refused at its place, nothing committed.
    write(&p, "data/cdc/a.csv", "op,id,p,label\nD,3,,\n");
    p.apply_converges();
    assert_eq!(rows(&p), vec![(10, "reloaded".into())]);
    write(&p, "data/cdc/b.csv", "op,id,p,label\nI,11,2,\n");
    let err = apply_fails(&p);
    assert!(
        err.contains("b.csv (row 1)") && err.contains("required column `label`"),
        "{err}"
    );
}
