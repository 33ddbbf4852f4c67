//! Concurrent writers: two processes commit to one table at once; both changes land,
//! in some order, and nothing is lost. A stale commit is a conflict, never an overwrite.

use std::path::Path;
use std::process::Command;

use crate::common::{text, LAKECTL};

fn lakehouse(root: &Path) -> String {
    format!(
        "apiVersion: lakectl/v1\nkind: Lakehouse\nmetadata:\n  name: shared\nspec:\n  catalog:\n    type: sql\n    uri: sqlite:{}\n  warehouse: {}\n",
        root.join("catalog.db").display(),
        root.join("warehouse").display()
    )
}

fn table(extra_column: &str, prop: &str) -> String {
    format!(
        "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: events\n  namespace: app\nspec:\n  columns:\n    - name: id\n      type: long\n{extra_column}  properties:\n    {prop}\n"
    )
}

fn checkout(root: &Path, name: &str, table_yaml: &str) -> std::path::PathBuf {
    let dir = root.join(name).join("manifests");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("lakehouse.yaml"), lakehouse(root)).unwrap();
    std::fs::write(dir.join("events.yaml"), table_yaml).unwrap();
    dir
}

#[tokio::test]
async fn two_processes_commit_to_one_table_and_both_changes_land() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let base = checkout(root, "base", &table("", "owner: base"));
    let out = Command::new(LAKECTL)
        .arg("apply")
        .arg(&base)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Two checkouts of the manifests, each adding its own column and property.
    let a = checkout(
        root,
        "a",
        &table("    - name: a\n      type: string\n", "pa: \"1\""),
    );
    let b = checkout(
        root,
        "b",
        &table("    - name: b\n      type: int\n", "pb: \"2\""),
    );
    // Both plan on the same state, then hold 3 s before committing: the commits race.
    let spawn = |dir: &Path| {
        Command::new(LAKECTL)
            .arg("apply")
            .arg(dir)
            .env("LAKECTL_TEST_DELAY_BEFORE_COMMIT_MS", "3000")
            .env("RUST_LOG", "lakectl=info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (pa, pb) = (spawn(&a), spawn(&b));
    let (oa, ob) = (
        pa.wait_with_output().unwrap(),
        pb.wait_with_output().unwrap(),
    );
    assert!(oa.status.success(), "a failed:\n{}", text(&oa));
    assert!(ob.status.success(), "b failed:\n{}", text(&ob));
    let logs = format!("{}{}", text(&oa), text(&ob));
    assert!(
        logs.contains("commit conflict"),
        "the commits did not race (no conflict seen):\n{logs}"
    );

    let set = lakectl::plan::load_valid(&a).unwrap();
    let lake = lakectl::lake::Lake::open_existing(set.lake_config().unwrap())
        .await
        .unwrap()
        .unwrap();
    let ident = iceberg::TableIdent::from_strs(["app", "events"]).unwrap();
    let md = lake.load_table(&ident).await.unwrap().unwrap().metadata;
    let s = md.current_schema();
    assert!(s.field_by_name("a").is_some(), "column a lost: {s:?}");
    assert!(s.field_by_name("b").is_some(), "column b lost: {s:?}");
    assert_ne!(
        s.field_by_name("a").unwrap().id,
        s.field_by_name("b").unwrap().id
    );
    assert_eq!(md.properties().get("pa").map(String::as_str), Some("1"));
    assert_eq!(md.properties().get("pb").map(String::as_str), Some("2"));
    // Three snapshots in one chain: create, then one per writer.
    let chain = lakectl::lake::ledger::ancestry(&md);
    assert_eq!(chain.len(), 3, "{chain:?}");
    assert_eq!(
        md.snapshots().count(),
        3,
        "an orphan snapshot was committed"
    );
}

#[tokio::test]
async fn a_commit_with_stale_requirements_is_a_conflict_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = checkout(tmp.path(), "x", &table("", "owner: x"));
    let out = Command::new(LAKECTL)
        .arg("apply")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let set = lakectl::plan::load_valid(&dir).unwrap();
    let lake = lakectl::lake::Lake::open_existing(set.lake_config().unwrap())
        .await
        .unwrap()
        .unwrap();
    let ident = iceberg::TableIdent::from_strs(["app", "events"]).unwrap();
    let before = lake.load_table(&ident).await.unwrap().unwrap();
    let stale = iceberg::TableRequirement::CurrentSchemaIdMatch {
        current_schema_id: before.metadata.current_schema_id() + 7,
    };
    let r = lake
        .commit(
            &ident,
            &[stale],
            vec![iceberg::TableUpdate::SetProperties {
                updates: [("k".to_string(), "v".to_string())].into(),
            }],
        )
        .await;
    assert!(
        matches!(r, Err(lakectl::lake::CommitError::Conflict(_))),
        "{r:?}"
    );
    let after = lake.load_table(&ident).await.unwrap().unwrap();
    assert_eq!(after.metadata_location, before.metadata_location);
    assert!(!after.metadata.properties().contains_key("k"));
}
