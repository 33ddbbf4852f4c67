//! Drift: PyIceberg changes lakectl's tables out of band (a column, a property, an
//! append) and `plan` / `apply` follow the table's `onDrift` policy; `policy.protect`
//! refuses destructive changes whatever the flags; `lakectl import` brings a table
//! PyIceberg made under management and adopts drift into a manifest, after which the
//! plan is empty.

use crate::common::{oracle_dir, py, text, Project};
use crate::mutate::{csv, query, sales};

/// Runs tests/oracle/pyiceberg_alter.py on the project's catalog.
fn alter(p: &Project, table: &str, args: &[&str]) {
    let script = oracle_dir().join("pyiceberg_alter.py");
    let db = p.catalog_db();
    let mut a: Vec<&std::ffi::OsStr> = vec![
        script.as_os_str(),
        db.as_os_str(),
        "lakectl".as_ref(),
        table.as_ref(),
    ];
    a.extend(args.iter().map(|s| std::ffi::OsStr::new(*s)));
    py(&a);
}

/// `shop.sales` with an owner property and the given policy lines, 20 rows ingested.
fn project(policy: &str) -> Project {
    let p = Project::new();
    let extra = format!("  properties:\n    owner: team-a\n{policy}");
    p.write("sales.yaml", &sales(false, &extra));
    csv(&p.root().join("data/a.csv"), 0, 20);
    p.apply_converges();
    p
}

/// Another writer's three changes: a column, a property, two rows.
fn drift(p: &Project) {
    alter(p, "shop.sales", &["add-column", "extra"]);
    alter(p, "shop.sales", &["set-property", "owner", "team-b"]);
    alter(
        p,
        "shop.sales",
        &[
            "append",
            r#"[{"id": 100, "region": "xx", "qty": 1, "extra": "e"}, {"id": 101, "region": "xx", "qty": 2, "extra": "f"}]"#,
        ],
    );
}

fn count(p: &Project) -> i64 {
    query(p, "select count(*) as n from shop.sales", None)[0]["n"]
        .as_i64()
        .unwrap()
}

fn plan_json(p: &Project) -> serde_json::Value {
    let out = p.run(&["plan", "manifests", "--output", "json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

#[tokio::test]
async fn report_shows_drift_and_apply_leaves_it() {
    let p = project("");
    drift(&p);
    let before = p.table("shop.sales").await.metadata_location;

    let (code, plan) = p.plan();
    assert_eq!(code, 0, "drift alone is no change under report:\n{plan}");
    for want in [
        "changes were made outside lakectl",
        "column `extra` (string) was added [left as is]",
        "property `owner` changed: \"team-a\" → \"team-b\" [left as is]",
        "append, +2 rows",
        "No changes",
    ] {
        assert!(plan.contains(want), "missing `{want}`:\n{plan}");
    }
    let j = plan_json(&p);
    let items = j["drift"][0]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{j}");
    assert_eq!(j["drift"][0]["snapshots"].as_array().unwrap().len(), 1);
    p.apply_ok();
    // The watcher leaves it too, and says so.
    {
        let w = crate::watch::watch(&p, &[]);
        let s = crate::watch::until(&w, "Drifted", |s| {
            s["tables"]["shop.sales"]["reason"] == "Drifted"
        })
        .await;
        let t = &s["tables"]["shop.sales"];
        assert_eq!(t["condition"], "Ready", "{s}");
        assert_eq!(t["drift"].as_array().unwrap().len(), 3, "{s}");
    }
    assert_eq!(
        p.table("shop.sales").await.metadata_location,
        before,
        "apply and watch must leave reported drift alone"
    );

    // A manifest edit is applied; the drift stays as it is and is still reported.
    p.write(
        "sales.yaml",
        &sales(false, "  properties:\n    owner: team-a\n").replace(
            "    - name: qty\n      type: int\n",
            "    - name: qty\n      type: int\n    - name: note\n      type: string\n",
        ),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("add column note"), "{plan}");
    assert!(!plan.contains("drop column"), "{plan}");
    assert!(!plan.contains("property owner"), "{plan}");
    p.apply_ok();
    let seen = p.inspect("shop.sales");
    let names: Vec<&str> = seen["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["id", "ts", "region", "qty", "extra", "note"],
        "{seen}"
    );
    assert_eq!(seen["properties"]["owner"], "team-b");
    assert_eq!(count(&p), 22);
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("column `extra` (string) was added"), "{plan}");
    assert!(plan.contains("property `owner` changed"), "{plan}");
}

#[tokio::test]
async fn revert_restores_the_declared_state_within_the_destructive_rules() {
    // Without allowDestructive the revert is refused and nothing changes.
    let p = project("  policy:\n    onDrift: revert\n");
    drift(&p);
    let before = p.table("shop.sales").await.metadata_location;
    let (code, plan) = p.plan();
    assert_eq!(code, 1, "{plan}");
    assert!(
        plan.contains("rolling back 1 snapshot(s) other writers committed is destructive"),
        "{plan}"
    );
    let out = p.run(&["apply", "manifests"]);
    assert!(!out.status.success());
    assert_eq!(p.table("shop.sales").await.metadata_location, before);

    // A property changed by hand alone is reverted without any permission.
    let q = project("  policy:\n    onDrift: revert\n");
    alter(&q, "shop.sales", &["set-property", "owner", "team-b"]);
    let (code, plan) = q.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("[apply reverts it]"), "{plan}");
    q.apply_converges();
    assert_eq!(q.inspect("shop.sales")["properties"]["owner"], "team-a");

    // With allowDestructive: the append is rolled back (with the column it brought),
    // then the property is set back; PyIceberg reads the declared table.
    p.write(
        "sales.yaml",
        &sales(
            false,
            "  properties:\n    owner: team-a\n  policy:\n    onDrift: revert\n    allowDestructive: true\n",
        ),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("will be rolled back to snapshot"), "{plan}");
    let out = p.apply_converges();
    assert!(out.contains("planning again"), "{out}");
    assert_eq!(count(&p), 20);
    let seen = p.inspect("shop.sales");
    assert_eq!(seen["rows"], 20, "{seen}");
    assert!(
        seen["fields"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["path"] != "extra"),
        "{seen}"
    );
    assert_eq!(seen["properties"]["owner"], "team-a");

    // Another column added out of band (no append) is dropped on apply.
    alter(&p, "shop.sales", &["add-column", "extra2"]);
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("drop column extra2"), "{plan}");
    p.apply_converges();
}

#[tokio::test]
async fn protect_refuses_destructive_changes_whatever_the_flags() {
    let p = project("  policy:\n    protect: true\n    allowDestructive: true\n");
    // Dropping a column: refused even with allowDestructive.
    p.write(
        "sales.yaml",
        &sales(
            false,
            "  properties:\n    owner: team-a\n  policy:\n    protect: true\n    allowDestructive: true\n",
        )
        .replace("    - name: qty\n      type: int\n", ""),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 1, "{plan}");
    assert!(
        plan.contains("drop column qty is destructive and the table is protected"),
        "{plan}"
    );
    // Rollback is refused (a dry run is allowed), from the CLI…
    let out = p.run(&["rollback", "shop.sales", "--steps", "1"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is protected"), "{}", text(&out));
    assert!(p
        .run(&["rollback", "shop.sales", "--steps", "1", "--dry-run"])
        .status
        .success());
    // …and a delete mutation over the share limit is refused despite allowDestructive.
    p.write(
        "sales.yaml",
        &sales(
            false,
            "  properties:\n    owner: team-a\n  policy:\n    protect: true\n    allowDestructive: true\n  mutations:\n    - name: wipe\n      delete:\n        where: \"qty >= 0\"\n",
        ),
    );
    let out = p.run(&["apply", "manifests"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(count(&p), 20);
    // Lifting the protection is a manifest change like any other.
    p.write(
        "sales.yaml",
        &sales(
            false,
            "  properties:\n    owner: team-a\n  policy:\n    allowDestructive: true\n",
        ),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("drift baseline"), "{plan}");
    p.apply_converges();
    assert!(p
        .run(&["rollback", "shop.sales", "--steps", "1"])
        .status
        .success());

    // A whole environment: `protect: true` in the Lakehouse document.
    p.write(
        "lakehouse.yaml",
        "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata: {name: prod}\nspec:\n  catalog: {type: sql, uri: \"sqlite:../.lakectl/catalog.db\"}\n  warehouse: ../.lakectl/warehouse\n  protect: true\n",
    );
    p.apply_converges();
    let out = p.run(&["rollback", "shop.sales", "--steps", "1"]);
    assert!(text(&out).contains("is protected"), "{}", text(&out));
}

#[tokio::test]
async fn import_writes_manifests_and_adopts_drift() {
    // A table PyIceberg made: `lakectl import shop` writes its manifest; plan is empty.
    let p = Project::new();
    p.pyiceberg_items();
    alter(&p, "shop.items", &["set-property", "owner", "spark-team"]);
    let out = p.run(&["import", "shop"]);
    assert!(out.status.success(), "{}", text(&out));
    let file = p.manifests().join("shop.items.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    for want in [
        "name: items",
        "namespace: shop",
        "type: long",
        "required: true",
        "identifierFields:\n  - id",
        "column: region",
        "owner: spark-team",
    ] {
        assert!(yaml.contains(want), "missing `{want}`:\n{yaml}");
    }
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "plan after import must be empty:\n{plan}\n{yaml}");
    assert!(plan.contains("No changes"), "{plan}");
    assert_eq!(
        query(&p, "select count(*) as n from shop.items", None)[0]["n"],
        3
    );

    // From now on PyIceberg's changes are drift; adopt + import writes them back.
    let adopted = yaml.replace("spec:\n", "spec:\n  policy:\n    onDrift: adopt\n");
    std::fs::write(&file, &adopted).unwrap();
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "onDrift is not table structure:\n{plan}");
    alter(&p, "shop.items", &["add-column", "color"]);
    alter(&p, "shop.items", &["set-property", "owner", "data-team"]);
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(plan.contains("column `color` (string) was added"), "{plan}");
    assert!(
        plan.contains("`lakectl import shop.items` writes it"),
        "{plan}"
    );
    let out = p.run(&["import", "shop.items"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("adopted drift into"), "{}", text(&out));
    let yaml = std::fs::read_to_string(&file).unwrap();
    assert!(yaml.contains("name: color"), "{yaml}");
    assert!(yaml.contains("owner: data-team"), "{yaml}");
    assert!(yaml.contains("onDrift: adopt"), "{yaml}");
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");
    assert!(
        !plan.contains("outside lakectl"),
        "drift is adopted:\n{plan}"
    );

    // And lakectl manages it: a manifest edit applies and PyIceberg reads it.
    let edited = yaml.replace(
        "  - name: color\n    type: string\n",
        "  - name: color\n    type: string\n  - name: size\n    type: int\n",
    );
    assert_ne!(edited, yaml, "{yaml}");
    std::fs::write(&file, edited).unwrap();
    p.apply_converges();
    let seen = p.inspect("shop.items");
    assert_eq!(seen["rows"], 3);
    assert!(
        seen["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "size"),
        "{seen}"
    );
}
