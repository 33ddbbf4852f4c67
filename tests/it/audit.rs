//! Write-audit-publish: declared checks, data staged on a branch and published by a
//! fast-forward of `main` only when the checks pass; previews (`apply --branch`,
//! `publish`); a crash between staging and publishing; one atomic publish across
//! tables (SQLite and REST). PyIceberg, DuckDB and Spark read `main` and the branches.

use std::time::{Duration, Instant};

use crate::common::{py, spark_sql, text, Project, LAKECTL};
use crate::mutate::query;

/// `shop.<name>` with the checks of the issue and `publish: audited`, fed by
/// `data/<name>/*.csv` (`id,region,qty,ts`).
fn audited(name: &str) -> String {
    format!(
        r#"apiVersion: lakectl/v1
kind: Table
metadata:
  name: {name}
  namespace: shop
spec:
  columns:
    - {{name: id, type: long, required: true}}
    - {{name: region, type: string}}
    - {{name: qty, type: int}}
    - {{name: ts, type: timestamp}}
  identifierFields: [id]
  sources:
    - name: feed
      uri: ../data/{name}/*.csv
  checks:
    - {{name: ids-unique, unique: []}}
    - {{name: no-null-region, notNull: [region]}}
    - {{name: known-regions, acceptedValues: {{region: [eu, us, apac]}}}}
    - {{name: sane-growth, rowCount: {{min: 1, maxChangePercent: 400}}}}
    - {{name: fresh, freshness: {{column: ts, maxAgeHours: 48}}}}
    - {{name: no-negative, sql: "select count(*) = 0 from {{table}} where qty < 0", severity: warn}}
  publish: audited
"#
    )
}

/// [`audited`] with `publish: direct` (the default).
fn direct(name: &str) -> String {
    audited(name).replace("  publish: audited\n", "")
}

/// Rows `ids` as CSV (region eu, qty 1, ts now), with `bad` lines appended as is.
fn rows(p: &Project, table: &str, file: &str, ids: std::ops::Range<u64>, bad: &str) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S");
    let mut s = String::from("id,region,qty,ts\n");
    for i in ids {
        s.push_str(&format!("{i},eu,1,{now}\n"));
    }
    s.push_str(&bad.replace("NOW", &now.to_string()));
    let path = p.root().join(format!("data/{table}/{file}"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, s).unwrap();
}

/// What PyIceberg and DuckDB read of `main` and the refs (tests/oracle/wap_read.py).
fn readers(p: &Project, table: &str) -> serde_json::Value {
    let script = crate::common::oracle_dir().join("wap_read.py");
    let out = py(&[
        script.as_os_str(),
        p.catalog_db().as_os_str(),
        table.as_ref(),
    ]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("wap_read.py: {e}: {out}"))
}

fn ids(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn seq(r: std::ops::Range<u64>) -> Vec<u64> {
    r.collect()
}

/// Audit branches of the table as the readers see them.
fn audit_refs(v: &serde_json::Value) -> Vec<String> {
    v["refs"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("lakectl/audit/"))
        .cloned()
        .collect()
}

/// Snapshots of `main`'s ancestry whose change id starts with `change_prefix`.
async fn on_main_with(p: &Project, table: &str, change_prefix: &str) -> usize {
    let t = p.table(table).await;
    lakectl::lake::ledger::ancestry(&t.metadata)
        .iter()
        .filter(|s| {
            s.summary()
                .additional_properties
                .get("lakectl.change-id")
                .is_some_and(|c| c.starts_with(change_prefix))
        })
        .count()
}

/// `lakectl apply` that waits `delay_ms` between staging and publishing (output piped
/// when `piped`).
fn staging(p: &Project, delay_ms: u64, piped: bool) -> std::process::Child {
    let out = || {
        if piped {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        }
    };
    std::process::Command::new(LAKECTL)
        .args(["apply", "manifests"])
        .current_dir(p.root())
        .env("NO_COLOR", "1")
        .env("LAKECTL_TEST_DELAY_BEFORE_PUBLISH_MS", delay_ms.to_string())
        .stdout(out())
        .stderr(out())
        .spawn()
        .unwrap()
}

/// Waits until `shop.orders` has an audit branch (the data is staged).
async fn wait_for_audit_branch(p: &Project) {
    let start = Instant::now();
    loop {
        let t = p.table("shop.orders").await;
        if lakectl::lake::refs(&t.metadata)
            .keys()
            .any(|k| k.starts_with("lakectl/audit/"))
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no branch staged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_failing_check_leaves_main_to_every_reader_and_the_branch_holds_the_new_rows() {
    let p = Project::new();
    p.write("orders.yaml", &audited("orders"));
    rows(&p, "orders", "a.csv", 0..10, "");
    let out = p.apply_converges();
    // Staged, checked, published: the checks are listed and no branch is left.
    assert!(out.contains("publish shop.orders"), "{out}");
    assert!(out.contains("ids-unique"), "{out}");
    let first = readers(&p, "shop.orders");
    assert_eq!(ids(&first["main"]["ids"]), seq(0..10), "{first}");
    assert!(audit_refs(&first).is_empty(), "{first}");

    // A file with a duplicated id, a null region, an unknown region and a negative qty.
    rows(
        &p,
        "orders",
        "b.csv",
        10..15,
        "3,eu,1,NOW\n20,,1,NOW\n21,mars,1,NOW\n22,us,-5,NOW\n",
    );
    let out = p.run(&["apply", "manifests"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for want in [
        "ids-unique",
        "1 duplicated key(s) of (id) in 2 row(s)",
        "no-null-region",
        "1 row(s) with a null in region",
        "known-regions",
        "\"region\":\"mars\"",
        "checks failed, nothing was published",
    ] {
        assert!(said.contains(want), "{want:?} not in:\n{said}");
    }
    // The warn-level check failed too, and is reported as a warning.
    assert!(said.contains("no-negative [sql] (warn)"), "{said}");
    let after = readers(&p, "shop.orders");
    assert_eq!(
        after["main"]["snapshot_id"], first["main"]["snapshot_id"],
        "main moved: {after}"
    );
    assert_eq!(ids(&after["main"]["ids"]), seq(0..10), "{after}");
    assert_eq!(after["main"]["duckdb_rows"], 10, "{after}");
    let branches = audit_refs(&after);
    assert_eq!(branches.len(), 1, "{after}");
    let branch = &after["refs"][&branches[0]];
    let mut want: Vec<u64> = seq(0..15);
    want.extend([3, 20, 21, 22]);
    want.sort();
    assert_eq!(ids(&branch["ids"]), want, "{after}");
    assert_eq!(branch["duckdb_rows"], 19, "{after}");

    // lakectl reads the branch too, and its history.
    let on_branch = query(&p, "select count(*) as n from shop.orders", None);
    assert_eq!(on_branch[0]["n"], 10);
    let out = p.run(&[
        "query",
        "select count(*) as n from shop.orders",
        "--ref",
        &branches[0],
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("\"n\":19"), "{}", text(&out));
    let out = p.run(&["history", "shop.orders", "--ref", &branches[0]]);
    assert!(text(&out).contains("b.csv"), "{}", text(&out));

    // Spark: main has the old rows, the branch (VERSION AS OF) the new ones.
    let spark = spark_sql(
        &p.catalog_db(),
        &p.root().join(".lakectl/warehouse"),
        &[&format!(
            "SELECT (SELECT count(*) FROM lk.shop.orders) AS main, (SELECT count(*) FROM lk.shop.orders VERSION AS OF '{}') AS branch",
            branches[0]
        )],
    );
    assert_eq!(spark["rows"][0]["main"], 10, "{spark}");
    assert_eq!(spark["rows"][0]["branch"], 19, "{spark}");

    // `lakectl check` on main passes; the plan still lists the ingest.
    let out = p.run(&["check", "manifests"]);
    assert!(out.status.success(), "{}", text(&out));
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("audited:"), "{plan}");

    // Fixed at the source: the next apply stages again and publishes.
    rows(&p, "orders", "b.csv", 10..15, "");
    p.apply_converges();
    let fixed = readers(&p, "shop.orders");
    assert_eq!(ids(&fixed["main"]["ids"]), seq(0..15), "{fixed}");
    // The failed audit branch is kept (queryable) until expiry's age.
    assert_eq!(audit_refs(&fixed), branches, "{fixed}");
}

#[tokio::test]
async fn a_pyiceberg_append_during_the_audit_is_kept_and_the_change_replayed_once() {
    let p = Project::new();
    p.write("orders.yaml", &audited("orders"));
    rows(&p, "orders", "a.csv", 0..10, "");
    p.apply_converges();
    rows(&p, "orders", "b.csv", 10..20, "");
    // The publish waits 5 s after the branch commit; PyIceberg appends to main in that
    // window, so main is no longer an ancestor of the branch when it is published.
    let child = staging(&p, 5000, true);
    wait_for_audit_branch(&p).await;
    let script = r#"
import sys, os, pyarrow as pa, datetime
from pyiceberg.catalog.sql import SqlCatalog
t = SqlCatalog("lakectl", uri=f"sqlite:///{os.path.abspath(sys.argv[1])}").load_table("shop.orders")
now = datetime.datetime.utcnow()
t.append(pa.Table.from_pydict({"id": [100, 101], "region": ["us", "us"], "qty": [2, 2], "ts": [now, now]}, schema=t.schema().as_arrow()))
print("appended")
"#;
    let out = py(&["-c".as_ref(), script.as_ref(), p.catalog_db().as_os_str()]);
    assert_eq!(out.trim(), "appended");
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("replayed"), "{said}");
    let r = readers(&p, "shop.orders");
    let mut want = seq(0..20);
    want.extend([100, 101]);
    assert_eq!(ids(&r["main"]["ids"]), want, "{r}");
    assert_eq!(r["main"]["duckdb_rows"], 22, "{r}");
    assert!(audit_refs(&r).is_empty(), "{r}");
    // b.csv reached main once, on top of PyIceberg's append.
    assert_eq!(on_main_with(&p, "shop.orders", "source:").await, 2);
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
}

#[tokio::test]
async fn killed_between_the_branch_commit_and_the_publish_main_gets_the_change_once() {
    let p = Project::new();
    p.write("orders.yaml", &audited("orders"));
    rows(&p, "orders", "a.csv", 0..10, "");
    p.apply_converges();
    let before = readers(&p, "shop.orders");
    rows(&p, "orders", "b.csv", 10..20, "");
    let mut child = staging(&p, 60_000, false);
    wait_for_audit_branch(&p).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = readers(&p, "shop.orders");
    assert_eq!(killed["main"]["snapshot_id"], before["main"]["snapshot_id"]);
    assert_eq!(ids(&killed["main"]["ids"]), seq(0..10), "{killed}");
    assert_eq!(audit_refs(&killed).len(), 1, "{killed}");
    // The next apply stages b.csv again (main's ledger lacks it) and publishes it once.
    p.apply_converges();
    let r = readers(&p, "shop.orders");
    assert_eq!(ids(&r["main"]["ids"]), seq(0..20), "{r}");
    assert_eq!(on_main_with(&p, "shop.orders", "source:").await, 2);
    p.apply_converges();
    assert_eq!(ids(&readers(&p, "shop.orders")["main"]["ids"]), seq(0..20));
}

/// Three audited tables; `bad` gets a duplicate id in its second file.
fn three(p: &Project, lakehouse: Option<&str>) {
    if let Some(l) = lakehouse {
        p.write("lakehouse.yaml", l);
    }
    for t in ["t1", "t2", "t3"] {
        p.write(&format!("{t}.yaml"), &audited(t));
        rows(p, t, "a.csv", 0..5, "");
    }
}

/// `main`'s snapshot id of each of the three tables, as PyIceberg reads it.
fn mains(p: &Project) -> Vec<Option<i64>> {
    ["shop.t1", "shop.t2", "shop.t3"]
        .iter()
        .map(|t| readers(p, t)["main"]["snapshot_id"].as_i64())
        .collect()
}

#[tokio::test]
async fn atomic_publish_across_three_tables_in_sqlite_all_or_none() {
    let p = Project::new();
    three(&p, None);
    let out = p.run(&["apply", "manifests", "--atomic"]);
    assert!(out.status.success(), "{}", text(&out));
    let before = mains(&p);
    for t in ["t1", "t2", "t3"] {
        rows(
            &p,
            t,
            "b.csv",
            5..10,
            if t == "t2" { "1,eu,1,NOW\n" } else { "" },
        );
    }
    let out = p.run(&["apply", "manifests", "--atomic"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("shop.t2"), "{}", text(&out));
    assert_eq!(mains(&p), before, "a table was published");
    for t in ["shop.t1", "shop.t3"] {
        let r = readers(&p, t);
        assert_eq!(ids(&r["main"]["ids"]), seq(0..5), "{r}");
    }
    rows(&p, "t2", "b.csv", 5..10, "");
    let out = p.run(&["apply", "manifests", "--atomic"]);
    assert!(out.status.success(), "{}", text(&out));
    let after = mains(&p);
    for (a, b) in after.iter().zip(&before) {
        assert_ne!(a, b);
    }
    for t in ["shop.t1", "shop.t2", "shop.t3"] {
        assert_eq!(ids(&readers(&p, t)["main"]["ids"]), seq(0..10), "{t}");
    }
}

/// `Lake::commit_all` on the SQL catalog: one failed requirement and none of the
/// three commits lands; all valid and all land.
#[tokio::test]
async fn commit_all_is_all_or_none() {
    let p = Project::new();
    three(&p, None);
    p.apply_converges();
    let set = lakectl::plan::load_valid(&p.manifests()).unwrap();
    let lake = lakectl::lake::Lake::open_existing(set.lake_config().unwrap())
        .await
        .unwrap()
        .unwrap();
    let mut commits = Vec::new();
    let mut states = Vec::new();
    for t in ["shop.t1", "shop.t2", "shop.t3"] {
        let s = p.table(t).await;
        let update = iceberg::TableUpdate::SetProperties {
            updates: [("wap.test".to_string(), "yes".to_string())].into(),
        };
        let mut req = lakectl::lake::pin_state(&s.metadata);
        if t == "shop.t3" {
            req.push(iceberg::TableRequirement::CurrentSchemaIdMatch {
                current_schema_id: 99,
            });
        }
        commits.push((s.ident.clone(), req, vec![update]));
        states.push(s);
    }
    let e = lake.commit_all(commits.clone()).await;
    assert!(
        matches!(e, Err(lakectl::lake::CommitError::Conflict(_))),
        "{e:?}"
    );
    for s in &states {
        let now = lake.load_existing(&s.ident).await.unwrap();
        assert_eq!(
            now.metadata_location, s.metadata_location,
            "{} moved",
            s.ident
        );
    }
    commits[2].1.pop();
    lake.commit_all(commits).await.unwrap();
    for s in &states {
        let now = lake.load_existing(&s.ident).await.unwrap();
        assert_eq!(
            now.metadata
                .properties()
                .get("wap.test")
                .map(String::as_str),
            Some("yes")
        );
    }
}

#[tokio::test]
async fn atomic_publish_through_the_rest_catalog_endpoint_all_or_none() {
    let server_side = Project::new();
    let s = crate::serve::serve(&server_side, &[]);
    let lakehouse = format!(
        "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata: {{name: remote}}\nspec:\n  catalog:\n    type: rest\n    uri: {}/catalog\n    properties: {{token: {}}}\n  warehouse: ../warehouse\n  atomicPublish: true\n",
        s.base,
        crate::serve::TOKEN
    );
    let p = Project::new();
    three(&p, Some(&lakehouse));
    let out = p.run(&["apply", "manifests"]);
    assert!(out.status.success(), "{}", text(&out));
    let count = |t: &str| -> i64 {
        query(&p, &format!("select count(*) as n from shop.{t}"), None)[0]["n"]
            .as_i64()
            .unwrap()
    };
    for t in ["t1", "t2", "t3"] {
        assert_eq!(count(t), 5);
        rows(
            &p,
            t,
            "b.csv",
            5..10,
            if t == "t3" { "2,eu,1,NOW\n" } else { "" },
        );
    }
    let out = p.run(&["apply", "manifests"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for t in ["t1", "t2", "t3"] {
        assert_eq!(count(t), 5, "{t} was published");
    }
    rows(&p, "t3", "b.csv", 5..10, "");
    let out = p.run(&["apply", "manifests"]);
    assert!(out.status.success(), "{}", text(&out));
    for t in ["t1", "t2", "t3"] {
        assert_eq!(count(t), 10);
    }
    // The server's own view (its SQLite catalog) agrees: every table has the rows.
    for t in ["t1", "t2", "t3"] {
        let r = query(
            &server_side,
            &format!("select count(*) as n from shop.{t}"),
            None,
        );
        assert_eq!(r[0]["n"], 10);
    }
}

#[tokio::test]
async fn preview_on_a_branch_then_publish_and_a_markdown_plan() {
    let p = Project::new();
    // Direct publish: only `apply --branch` stages.
    p.write("orders.yaml", &direct("orders"));
    rows(&p, "orders", "a.csv", 0..10, "");
    p.apply_converges();
    rows(&p, "orders", "b.csv", 10..20, "");
    let out = p.run(&[
        "plan",
        "manifests",
        "--branch",
        "pr-7",
        "--output",
        "markdown",
    ]);
    let md = text(&out);
    assert_eq!(out.status.code(), Some(2), "{md}");
    assert!(
        md.contains("### lakectl plan against branch `pr-7`"),
        "{md}"
    );
    assert!(
        md.contains("| ✅ | `shop.orders` on `main` | ids-unique"),
        "{md}"
    );
    assert!(md.contains("<details><summary>Full plan</summary>"), "{md}");
    let out = p.run(&["apply", "manifests", "--branch", "pr-7"]);
    assert!(out.status.success(), "{}", text(&out));
    let r = readers(&p, "shop.orders");
    assert_eq!(ids(&r["main"]["ids"]), seq(0..10), "{r}");
    assert_eq!(ids(&r["refs"]["pr-7"]["ids"]), seq(0..20), "{r}");
    // Against the branch, nothing is pending; against main, the ingest is.
    let out = p.run(&["plan", "manifests", "--branch", "pr-7"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(p.plan().0, 2);
    // A schema change in the same pull request: structure goes to main directly, and
    // the markdown plan collapses its schema diff.
    let with_note = direct("orders").replace(
        "    - {name: ts, type: timestamp}\n",
        "    - {name: ts, type: timestamp}\n    - {name: note, type: string}\n",
    );
    p.write("orders.yaml", &with_note);
    let out = p.run(&[
        "plan",
        "manifests",
        "--branch",
        "pr-7",
        "--output",
        "markdown",
    ]);
    let md = text(&out);
    assert!(
        md.contains("<details><summary>Schema diff of <code>shop.orders</code>"),
        "{md}"
    );
    assert!(
        md.lines().any(|l| l.starts_with('+') && l.contains("note")),
        "{md}"
    );
    // A failing row on the branch: the markdown marks it; publish refuses.
    rows(&p, "orders", "c.csv", 20..21, "5,eu,1,NOW\n");
    let out = p.run(&["apply", "manifests", "--branch", "pr-7"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = p.run(&[
        "plan",
        "manifests",
        "--branch",
        "pr-7",
        "--output",
        "markdown",
    ]);
    assert!(text(&out).contains("❌ **failing**"), "{}", text(&out));
    let out = p.run(&["publish", "pr-7"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(ids(&readers(&p, "shop.orders")["main"]["ids"]), seq(0..10));
    // Removing the bad file from the source leaves its rows on pr-7: still refused.
    std::fs::remove_file(p.root().join("data/orders/c.csv")).unwrap();
    let out = p.run(&["publish", "pr-7"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the bad rows are still on pr-7: {}",
        text(&out)
    );
    // A fresh preview branch from main, published and removed.
    let out = p.run(&["apply", "manifests", "--branch", "pr-8"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = p.run(&["publish", "pr-8", "--delete-branch"]);
    assert!(out.status.success(), "{}", text(&out));
    let r = readers(&p, "shop.orders");
    assert_eq!(ids(&r["main"]["ids"]), seq(0..20), "{r}");
    assert!(r["refs"].get("pr-8").is_none(), "{r}");
    assert_eq!(p.plan().0, 0);
}

#[tokio::test]
async fn watch_publishes_audited_changes_and_reports_failing_checks_once() {
    let p = Project::new();
    p.write("orders.yaml", &audited("orders"));
    rows(&p, "orders", "a.csv", 0..10, "");
    let w = crate::watch::watch(&p, &[]);
    let s = crate::watch::until(&w, "published", |s| {
        s["tables"]["shop.orders"]["condition"] == "Ready"
            && s["tables"]["shop.orders"]["last_checks"]["passed"] == true
    })
    .await;
    let checks = &s["tables"]["shop.orders"]["last_checks"];
    assert_eq!(checks["results"].as_array().unwrap().len(), 6, "{checks}");
    assert_eq!(ids(&readers(&p, "shop.orders")["main"]["ids"]), seq(0..10));

    rows(&p, "orders", "b.csv", 10..12, "1,eu,1,NOW\n");
    let s = crate::watch::until(&w, "checks failed", |s| {
        s["tables"]["shop.orders"]["reason"] == "ChecksFailed"
    })
    .await;
    let t = &s["tables"]["shop.orders"];
    assert_eq!(t["last_checks"]["passed"], false, "{t}");
    let failing: Vec<&str> = t["last_checks"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["passed"] == false)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(failing, vec!["ids-unique"], "{t}");
    // Another table's manifest wakes the loop: the same failing changes are not staged
    // again (one audit branch), main keeps its rows.
    p.write("other.yaml", &direct("other"));
    rows(&p, "other", "a.csv", 0..3, "");
    crate::watch::until(&w, "other table", |s| {
        s["tables"]["shop.other"]["condition"] == "Ready"
    })
    .await;
    let r = readers(&p, "shop.orders");
    assert_eq!(audit_refs(&r).len(), 1, "{r}");
    assert_eq!(ids(&r["main"]["ids"]), seq(0..10), "{r}");
    // Fixed: published.
    rows(&p, "orders", "b.csv", 10..12, "");
    crate::watch::until(&w, "fixed", |s| {
        s["tables"]["shop.orders"]["condition"] == "Ready"
            && s["tables"]["shop.orders"]["last_checks"]["passed"] == true
    })
    .await;
    assert_eq!(ids(&readers(&p, "shop.orders")["main"]["ids"]), seq(0..12));
}

#[tokio::test]
async fn publish_after_a_rollback_of_main_replays_instead_of_undoing_the_rollback() {
    let p = Project::new();
    p.write("orders.yaml", &direct("orders"));
    rows(&p, "orders", "a.csv", 0..10, "");
    p.apply_converges();
    rows(&p, "orders", "b.csv", 10..20, "");
    p.apply_converges();
    rows(&p, "orders", "c.csv", 20..25, "");
    let out = p.run(&["apply", "manifests", "--branch", "pr-1"]);
    assert!(out.status.success(), "{}", text(&out));
    // main goes back over b.csv (held back); pr-1 was made on top of it.
    let out = p.run(&["rollback", "shop.orders", "--steps", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(ids(&readers(&p, "shop.orders")["main"]["ids"]), seq(0..10));
    let out = p.run(&["publish", "pr-1", "--delete-branch"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("replayed"), "{}", text(&out));
    let mut want = seq(0..10);
    want.extend(20..25);
    let r = readers(&p, "shop.orders");
    assert_eq!(ids(&r["main"]["ids"]), want, "the rollback was undone: {r}");
    assert!(r["refs"].get("pr-1").is_none(), "{r}");
}

#[tokio::test]
async fn watch_with_atomic_publish_publishes_all_audited_tables_or_none() {
    let p = Project::new();
    p.write(
        "lakehouse.yaml",
        "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata: {name: local}\nspec:\n  catalog: {type: sql, uri: \"sqlite:../.lakectl/catalog.db\"}\n  warehouse: ../.lakectl/warehouse\n  atomicPublish: true\n",
    );
    for t in ["t1", "t2"] {
        p.write(&format!("{t}.yaml"), &audited(t));
        rows(&p, t, "a.csv", 0..5, "");
    }
    let w = crate::watch::watch(&p, &[]);
    let published = |s: &serde_json::Value, t: &str| {
        s["tables"][t]["condition"] == "Ready" && s["tables"][t]["last_checks"]["passed"] == true
    };
    crate::watch::until(&w, "both published", |s| {
        published(s, "shop.t1") && published(s, "shop.t2")
    })
    .await;
    let main_of = |t: &str| readers(&p, t)["main"]["snapshot_id"].clone();
    let before = (main_of("shop.t1"), main_of("shop.t2"));
    rows(&p, "t1", "b.csv", 5..8, "");
    rows(&p, "t2", "b.csv", 5..8, "1,eu,1,NOW\n");
    let s = crate::watch::until(&w, "refused", |s| {
        s["tables"]["shop.t2"]["reason"] == "ChecksFailed"
            && s["tables"]["shop.t1"]["reason"] == "NotPublished"
    })
    .await;
    assert!(
        s["tables"]["shop.t1"]["message"]
            .as_str()
            .unwrap()
            .contains("shop.t2"),
        "{s}"
    );
    assert_eq!((main_of("shop.t1"), main_of("shop.t2")), before);
    rows(&p, "t2", "b.csv", 5..8, "");
    crate::watch::until(&w, "both published again", |s| {
        published(s, "shop.t1") && published(s, "shop.t2")
    })
    .await;
    for t in ["shop.t1", "shop.t2"] {
        assert_eq!(ids(&readers(&p, t)["main"]["ids"]), seq(0..8), "{t}");
    }
}

#[tokio::test]
async fn an_upload_to_an_audited_table_through_serve_is_checked_before_it_is_published() {
    let p = Project::new();
    p.write("orders.yaml", &audited("orders"));
    rows(&p, "orders", "a.csv", 0..10, "");
    p.apply_converges();
    let s = crate::serve::serve(&p, &[]);
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S");
    let upload = |body: String| {
        reqwest::Client::new()
            .post(format!("{}/api/v1/tables/shop/orders/upload", s.base))
            .bearer_auth(crate::serve::TOKEN)
            .body(body)
            .send()
    };
    let r = upload(format!("id,region,qty,ts\n50,eu,1,{now}\n3,us,1,{now}\n"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "checks_failed", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("ids-unique"),
        "{body}"
    );
    assert_eq!(ids(&readers(&p, "shop.orders")["main"]["ids"]), seq(0..10));
    let r = upload(format!("id,region,qty,ts\n50,eu,1,{now}\n"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    let r = readers(&p, "shop.orders");
    let mut want = seq(0..10);
    want.push(50);
    assert_eq!(ids(&r["main"]["ids"]), want, "{r}");
    assert_eq!(body["snapshot_id"], r["main"]["snapshot_id"], "{body}");
}
