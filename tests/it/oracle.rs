//! Independent readers. PyIceberg must see, after every evolution step, exactly the
//! schema (ids, names, types, required, docs), partition spec, sort order and properties
//! lakectl committed, and PyIceberg and DuckDB must agree on every snapshot
//! (`../shared/oracle/read.py`). The reverse: a table PyIceberg made, in a catalog file
//! PyIceberg made, is planned and evolved by lakectl, and PyIceberg still reads its rows.

use iceberg::spec::{NullOrder, SortDirection, TableMetadata, Type};
use serde_json::Value;

use crate::common::{field, inspect, orders, read_both, Project};

/// Every field lakectl has, by path, as (id, type, required, doc).
fn lakectl_fields(md: &TableMetadata) -> Vec<(String, i32, String, bool, Option<String>)> {
    fn walk(
        fields: &[iceberg::spec::NestedFieldRef],
        prefix: &str,
        out: &mut Vec<(String, i32, String, bool, Option<String>)>,
    ) {
        for f in fields {
            let path = format!("{prefix}{}", f.name);
            let kind = match f.field_type.as_ref() {
                Type::Primitive(p) => p.to_string(),
                Type::Struct(_) => "struct".into(),
                Type::List(_) => "list".into(),
                Type::Map(_) => "map".into(),
            };
            out.push((path.clone(), f.id, kind, f.required, f.doc.clone()));
            let next = format!("{path}.");
            match f.field_type.as_ref() {
                Type::Struct(s) => walk(s.fields(), &next, out),
                Type::List(l) => walk(std::slice::from_ref(&l.element_field), &next, out),
                Type::Map(m) => walk(&[m.key_field.clone(), m.value_field.clone()], &next, out),
                Type::Primitive(_) => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(md.current_schema().as_struct().fields(), "", &mut out);
    out
}

/// PyIceberg's view equals lakectl's committed metadata.
fn assert_pyiceberg_agrees(md: &TableMetadata, seen: &Value) {
    let mine = lakectl_fields(md);
    let theirs = seen["fields"].as_array().expect("fields");
    assert_eq!(theirs.len(), mine.len(), "field count differs: {theirs:?}");
    for (path, id, kind, required, doc) in &mine {
        let f = field(seen, path);
        assert_eq!(f["id"], *id, "{path} id");
        assert_eq!(
            f["type"].as_str().unwrap().replace(' ', ""),
            kind.replace(' ', ""),
            "{path} type"
        );
        assert_eq!(f["required"], *required, "{path} required");
        assert_eq!(f["doc"].as_str().map(str::to_string), *doc, "{path} doc");
    }
    assert_eq!(seen["schema_id"], md.current_schema_id());
    let ids: Vec<i32> = md.current_schema().identifier_field_ids().collect();
    let mut ids = ids;
    ids.sort();
    assert_eq!(seen["identifier_field_ids"], serde_json::json!(ids));
    let spec: Vec<Value> = md
        .default_partition_spec()
        .fields()
        .iter()
        .map(|f| serde_json::json!({"source_id": f.source_id, "field_id": f.field_id, "transform": f.transform.to_string(), "name": f.name}))
        .collect();
    assert_eq!(seen["spec"], Value::Array(spec), "partition spec");
    assert_eq!(seen["spec_id"], md.default_partition_spec_id());
    let sort: Vec<Value> = md
        .default_sort_order()
        .fields
        .iter()
        .map(|f| {
            serde_json::json!({
                "source_id": f.source_id,
                "transform": f.transform.to_string(),
                "direction": if f.direction == SortDirection::Ascending { "asc" } else { "desc" },
                "null_order": if f.null_order == NullOrder::First { "nulls-first" } else { "nulls-last" },
            })
        })
        .collect();
    assert_eq!(seen["sort"], Value::Array(sort), "sort order");
    assert_eq!(
        seen["properties"],
        serde_json::to_value(md.properties()).unwrap(),
        "properties"
    );
    assert_eq!(
        seen["current_snapshot_id"],
        serde_json::json!(md.current_snapshot_id())
    );
    assert_eq!(
        seen["snapshots"].as_array().unwrap().len(),
        md.snapshots().count()
    );
}

const V1: &str = r#"  columns:
    - name: id
      type: long
      required: true
      doc: Order id
    - name: ts
      type: timestamp
    - name: qty
      type: int
    - name: price
      type: decimal(9, 2)
    - name: name
      type: string
      required: true
    - name: customer
      type: struct
      fields:
        - name: id
          type: long
    - name: tags
      type: list<string>
    - name: attrs
      type: map<string, double>
  identifierFields: [id]
  partitioning:
    - column: ts
      transform: day
  sortOrder:
    - column: id
  properties:
    owner: data-eng
    keep: "yes"
"#;

#[tokio::test]
async fn pyiceberg_and_duckdb_read_every_step_lakectl_commits() {
    let p = Project::new();
    let steps: Vec<String> = vec![
        V1.to_string(),
        // add nested + top-level, rename, promote, make optional, doc
        V1.replace("        - name: id\n          type: long\n", "        - name: id\n          type: long\n        - name: email\n          type: string\n")
            .replace("    - name: name\n      type: string\n      required: true\n", "    - name: title\n      renamedFrom: name\n      type: string\n      doc: Product title\n")
            .replace("type: int\n", "type: long\n")
            .replace("decimal(9, 2)", "decimal(20, 2)")
            .replace("    - name: tags\n", "    - name: channel\n      type: string\n    - name: tags\n"),
        // partition evolution, sort change, property change and removal
        V1.replace("        - name: id\n          type: long\n", "        - name: id\n          type: long\n        - name: email\n          type: string\n")
            .replace("    - name: name\n      type: string\n      required: true\n", "    - name: title\n      renamedFrom: name\n      type: string\n      doc: Product title\n")
            .replace("type: int\n", "type: long\n")
            .replace("decimal(9, 2)", "decimal(20, 2)")
            .replace("    - name: tags\n", "    - name: channel\n      type: string\n    - name: tags\n")
            .replace("      transform: day\n", "      transform: month\n    - column: channel\n    - column: customer.id\n      transform: bucket[16]\n")
            .replace("  sortOrder:\n    - column: id\n", "  sortOrder:\n    - column: ts\n      direction: desc\n")
            .replace("    keep: \"yes\"\n", "")
            .replace("  properties:\n", "  policy:\n    allowDestructive: true\n  properties:\n"),
    ];
    for (i, spec) in steps.iter().enumerate() {
        p.write("orders.yaml", &orders(spec));
        p.apply_converges();
        let md = p.table("shop.orders").await.metadata;
        let seen = p.inspect("shop.orders");
        assert_pyiceberg_agrees(&md, &seen);
        let both = read_both(&p.catalog_db(), "shop.orders");
        assert_eq!(both["readers_agree"], true, "step {i}: {both}");
        assert_eq!(
            both["snapshots"].as_array().unwrap().len(),
            i + 1,
            "step {i}: {both}"
        );
    }
    // Spot checks of the final state through PyIceberg's eyes.
    let seen = p.inspect("shop.orders");
    assert_eq!(field(&seen, "title")["doc"], "Product title");
    assert_eq!(field(&seen, "qty")["type"], "long");
    assert_eq!(field(&seen, "price")["type"], "decimal(20, 2)");
    assert_eq!(field(&seen, "customer.email")["type"], "string");
    assert!(seen["properties"].get("keep").is_none());
    let transforms: Vec<&str> = seen["spec"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["transform"].as_str().unwrap())
        .collect();
    assert_eq!(transforms, vec!["month", "identity", "bucket[16]"]);
    let ops: Vec<&str> = seen["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["summary"]["lakectl.change"].as_str().unwrap())
        .collect();
    assert_eq!(ops, vec!["create-table", "update-table", "update-table"]);
}

#[tokio::test]
async fn a_table_pyiceberg_made_is_planned_and_evolved_by_lakectl() {
    let p = Project::new();
    p.pyiceberg_items();
    let db = p.catalog_db();

    let declared = r#"  columns:
    - name: id
      type: long
      required: true
    - name: region
      type: string
    - name: qty
      type: int
    - name: price
      type: float
  identifierFields: [id]
  partitioning:
    - column: region
"#;
    let items = |spec: &str| {
        format!("apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: items\n  namespace: shop\nspec:\n{spec}")
    };
    p.write("items.yaml", &items(declared));
    let (code, plan) = p.plan();
    assert_eq!(
        code, 0,
        "a manifest matching PyIceberg's table must plan no changes:\n{plan}"
    );

    // Adding a required column to a table with rows is refused.
    p.write(
        "items.yaml",
        &items(&declared.replace(
            "  identifierFields",
            "    - name: sku\n      type: string\n      required: true\n  identifierFields",
        )),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 1, "{plan}");
    assert!(
        plan.contains("cannot add required column `sku` to a table that has rows"),
        "{plan}"
    );

    // Evolve it: add, widen, rename the partition source.
    let evolved = declared
        .replace("type: int\n", "type: long\n")
        .replace("type: float\n", "type: double\n")
        .replace(
            "    - name: region\n",
            "    - name: area\n      renamedFrom: region\n",
        )
        .replace(
            "    - column: region\n",
            "    - column: area\n      name: region\n",
        )
        .replace(
            "  identifierFields",
            "    - name: note\n      type: string\n  identifierFields",
        );
    p.write("items.yaml", &items(&evolved));
    p.apply_converges();

    // The catalog file PyIceberg made got the JDBC column, and PyIceberg still reads it.
    let conn_cols = std::process::Command::new(crate::common::python())
        .args(["-c", &format!("import sqlite3; print([r[1] for r in sqlite3.connect('{}').execute('pragma table_info(iceberg_tables)')])", db.display())])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&conn_cols.stdout).contains("iceberg_type"));
    let seen = inspect(&db, "lakectl", "shop.items");
    let md = p.table("shop.items").await.metadata;
    assert_pyiceberg_agrees(&md, &seen);
    assert_eq!(seen["rows"], 3);
    assert_eq!(
        field(&seen, "area")["id"],
        2,
        "rename kept PyIceberg's field id"
    );
    assert_eq!(field(&seen, "qty")["type"], "long");
    assert_eq!(field(&seen, "price")["type"], "double");
    let both = read_both(&db, "shop.items");
    assert_eq!(both["readers_agree"], true, "{both}");
    let last = both["snapshots"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["pyiceberg_rows"], 3, "{both}");
    assert_eq!(last["sums"]["qty"], 21, "old int data read as long: {both}");
}
