//! One test per change kind, against a real SQLite catalog file: what the committed
//! metadata holds (field ids, types, docs, spec, sort order, properties, the ledger
//! annotation), that refused changes commit nothing, and that a second plan is empty.

use iceberg::spec::{NullOrder, PrimitiveType, SortDirection, TableMetadata, Transform, Type};

use crate::common::{orders, Project};

const BASE: &str = r#"  columns:
    - name: id
      type: long
      required: true
      doc: Order id
    - name: ts
      type: timestamptz
    - name: qty
      type: int
    - name: price
      type: float
    - name: amount
      type: decimal(10, 2)
    - name: name
      type: string
      required: true
    - name: customer
      type: struct
      fields:
        - name: id
          type: long
    - name: lines
      type: list
      element:
        type: struct
        fields:
          - name: sku
            type: string
    - name: attrs
      type: map
      key: {type: string}
      value:
        type: struct
        fields:
          - name: v
            type: string
  identifierFields: [id]
"#;

fn id_of(md: &TableMetadata, path: &str) -> i32 {
    md.current_schema()
        .field_by_name(path)
        .unwrap_or_else(|| panic!("no field {path} in {:?}", md.current_schema()))
        .id
}

fn prim(md: &TableMetadata, path: &str) -> PrimitiveType {
    match md
        .current_schema()
        .field_by_name(path)
        .expect(path)
        .field_type
        .as_ref()
    {
        Type::Primitive(p) => p.clone(),
        other => panic!("{path} is {other}"),
    }
}

fn summary(md: &TableMetadata, key: &str) -> String {
    md.current_snapshot()
        .expect("a current snapshot")
        .summary()
        .additional_properties
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("no {key} in the snapshot summary"))
}

/// Applies BASE and returns the project.
async fn base_project() -> (Project, TableMetadata) {
    let p = Project::new();
    p.write("orders.yaml", &orders(BASE));
    p.apply_converges();
    let md = p.table("shop.orders").await.metadata;
    (p, md)
}

#[tokio::test]
async fn create_table_commits_schema_spec_sort_properties_and_annotation() {
    let p = Project::new();
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{BASE}  partitioning:\n    - column: ts\n      transform: day\n    - column: id\n      transform: bucket[8]\n      name: id_b\n  sortOrder:\n    - column: ts\n      direction: desc\n  properties:\n    write.target-file-size-bytes: \"1048576\"\n"
        )),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("+ namespace shop"), "{plan}");
    assert!(
        plan.contains("+ table shop.orders will be created"),
        "{plan}"
    );
    assert!(
        plan.contains("Plan: 2 to add, 0 to change, 0 to destroy."),
        "{plan}"
    );
    assert!(!p.catalog_db().exists(), "plan must not create the catalog");

    p.apply_converges();
    let md = p.table("shop.orders").await.metadata;
    let s = md.current_schema();
    // Every field has a distinct id, and the types and docs are as declared.
    let ids: Vec<i32> = [
        "id",
        "ts",
        "qty",
        "price",
        "amount",
        "name",
        "customer",
        "customer.id",
        "lines",
        "lines.element",
        "lines.element.sku",
        "attrs",
        "attrs.key",
        "attrs.value",
        "attrs.value.v",
    ]
    .iter()
    .map(|p| id_of(&md, p))
    .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "field ids are not unique: {ids:?}");
    assert_eq!(md.last_column_id(), *unique.last().unwrap());
    assert_eq!(
        prim(&md, "amount"),
        PrimitiveType::Decimal {
            precision: 10,
            scale: 2
        }
    );
    assert_eq!(prim(&md, "ts"), PrimitiveType::Timestamptz);
    let id_field = s.field_by_name("id").unwrap();
    assert!(id_field.required);
    assert_eq!(id_field.doc.as_deref(), Some("Order id"));
    assert!(!s.field_by_name("qty").unwrap().required);
    assert_eq!(
        s.identifier_field_ids().collect::<Vec<_>>(),
        vec![id_of(&md, "id")]
    );

    let spec = md.default_partition_spec();
    let parts: Vec<(i32, Transform, &str)> = spec
        .fields()
        .iter()
        .map(|f| (f.source_id, f.transform, f.name.as_str()))
        .collect();
    assert_eq!(
        parts,
        vec![
            (id_of(&md, "ts"), Transform::Day, "ts_day"),
            (id_of(&md, "id"), Transform::Bucket(8), "id_b")
        ]
    );
    let sort = md.default_sort_order();
    assert_eq!(sort.fields.len(), 1);
    assert_eq!(sort.fields[0].source_id, id_of(&md, "ts"));
    assert_eq!(sort.fields[0].direction, SortDirection::Descending);
    assert_eq!(sort.fields[0].null_order, NullOrder::Last);
    assert_eq!(
        md.properties()
            .get("write.target-file-size-bytes")
            .map(String::as_str),
        Some("1048576")
    );

    // The create is one snapshot carrying the ledger annotation.
    assert_eq!(md.snapshots().count(), 1);
    assert_eq!(summary(&md, "lakectl.change"), "create-table");
    assert!(summary(&md, "lakectl.change-id").starts_with("table:shop.orders@"));
    assert!(summary(&md, "lakectl.manifest").ends_with("orders.yaml"));
    assert_eq!(summary(&md, "lakectl.version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(summary(&md, "total-records"), "0");
    assert_eq!(
        md.current_snapshot().unwrap().schema_id(),
        Some(md.current_schema_id())
    );
}

#[tokio::test]
async fn add_columns_top_level_and_inside_struct_list_and_map() {
    let (p, before) = base_project().await;
    let last = before.last_column_id();
    let evolved = BASE
        .replace(
            "        - name: id\n          type: long\n",
            "        - name: id\n          type: long\n        - name: email\n          type: string\n          doc: Contact\n",
        )
        .replace(
            "          - name: sku\n            type: string\n",
            "          - name: sku\n            type: string\n          - name: units\n            type: int\n",
        )
        .replace(
            "          - name: v\n            type: string\n",
            "          - name: v\n            type: string\n          - name: w\n            type: double\n",
        )
        + "";
    let evolved = evolved.replace(
        "  identifierFields: [id]\n",
        "    - name: note\n      type: string\n  identifierFields: [id]\n",
    );
    p.write("orders.yaml", &orders(&evolved));
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    for line in [
        "add column customer.email: string",
        "add column lines.element.units: int",
        "add column attrs.value.w: double",
        "add column note: string",
    ] {
        assert!(plan.contains(line), "plan lacks `{line}`:\n{plan}");
    }
    p.apply_converges();
    let md = p.table("shop.orders").await.metadata;
    // Old ids are kept, new ones come after the old last id.
    for path in [
        "id",
        "customer",
        "customer.id",
        "lines.element.sku",
        "attrs.value.v",
    ] {
        assert_eq!(id_of(&md, path), id_of(&before, path), "{path} changed id");
    }
    let mut new_ids: Vec<i32> = [
        "customer.email",
        "lines.element.units",
        "attrs.value.w",
        "note",
    ]
    .iter()
    .map(|p| id_of(&md, p))
    .collect();
    new_ids.sort();
    assert_eq!(new_ids, vec![last + 1, last + 2, last + 3, last + 4]);
    assert_eq!(
        md.current_schema()
            .field_by_name("customer.email")
            .unwrap()
            .doc
            .as_deref(),
        Some("Contact")
    );
    assert_eq!(md.current_schema_id(), before.current_schema_id() + 1);
    assert_eq!(summary(&md, "lakectl.change"), "update-table");
    assert!(summary(&md, "lakectl.details").contains("add column note: string"));
    assert_eq!(
        md.current_snapshot().unwrap().schema_id(),
        Some(md.current_schema_id())
    );
    assert_eq!(
        md.current_snapshot().unwrap().parent_snapshot_id(),
        before.current_snapshot_id()
    );
}

#[tokio::test]
async fn rename_keeps_the_field_id() {
    let (p, before) = base_project().await;
    let renamed = BASE
        .replace(
            "    - name: name\n      type: string\n",
            "    - name: full_name\n      renamedFrom: name\n      type: string\n",
        )
        .replace(
            "          - name: sku\n",
            "          - name: item_code\n            renamedFrom: sku\n",
        );
    p.write("orders.yaml", &orders(&renamed));
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("rename column name → full_name"), "{plan}");
    assert!(
        plan.contains("rename column lines.element.sku → lines.element.item_code"),
        "{plan}"
    );
    p.apply_converges();
    let md = p.table("shop.orders").await.metadata;
    assert_eq!(id_of(&md, "full_name"), id_of(&before, "name"));
    assert_eq!(
        id_of(&md, "lines.element.item_code"),
        id_of(&before, "lines.element.sku")
    );
    assert!(md.current_schema().field_by_name("name").is_none());
    assert_eq!(md.last_column_id(), before.last_column_id());
}

#[tokio::test]
async fn type_promotions_allowed_by_the_spec() {
    let (p, before) = base_project().await;
    let widened = BASE
        .replace("type: int\n", "type: long\n")
        .replace(
            "    - name: price\n      type: float\n",
            "    - name: price\n      type: double\n",
        )
        .replace("decimal(10, 2)", "decimal(18, 2)");
    p.write("orders.yaml", &orders(&widened));
    let (_, plan) = p.plan();
    assert!(plan.contains("widen column qty: int → long"), "{plan}");
    assert!(
        plan.contains("widen column price: float → double"),
        "{plan}"
    );
    assert!(
        plan.contains("widen column amount: decimal(10, 2) → decimal(18, 2)"),
        "{plan}"
    );
    p.apply_converges();
    let md = p.table("shop.orders").await.metadata;
    assert_eq!(prim(&md, "qty"), PrimitiveType::Long);
    assert_eq!(prim(&md, "price"), PrimitiveType::Double);
    assert_eq!(
        prim(&md, "amount"),
        PrimitiveType::Decimal {
            precision: 18,
            scale: 2
        }
    );
    assert_eq!(id_of(&md, "qty"), id_of(&before, "qty"));
}

/// Each forbidden change: plan exits 1 naming the rule and the manifest line, apply
/// exits 1 and the catalog still points at the same metadata file.
#[tokio::test]
async fn forbidden_changes_are_refused_with_the_rule_and_commit_nothing() {
    let (p, _) = base_project().await;
    let before = p.table("shop.orders").await.metadata_location;
    let cases: Vec<(String, &str, &str)> = vec![
        (BASE.replace("    - name: name\n      type: string\n", "    - name: name\n      type: int\n"), "from string to int refused", "orders.yaml:21:13"),
        (BASE.replace("    - name: id\n      type: long\n", "    - name: id\n      type: int\n"), "narrowing could lose values", "orders.yaml:9:13"),
        (BASE.replace("    - name: qty\n      type: int\n", "    - name: qty\n      type: int\n      required: true\n"), "cannot make optional `qty` required", "orders.yaml:16:17"),
        (BASE.replace("decimal(10, 2)", "decimal(12, 4)"), "scale cannot change", "orders.yaml:19:13"),
        (BASE.replace("decimal(10, 2)", "decimal(8, 2)"), "narrowing decimal precision 10 → 8", "orders.yaml:19:13"),
        (BASE.replace("    - name: customer\n      type: struct\n      fields:\n        - name: id\n          type: long\n", "    - name: customer\n      type: string\n"), "cannot change between primitive, struct", "orders.yaml:24:13"),
        (BASE.replace("      key: {type: string}\n", "      key: {type: long}\n"), "map key of `attrs` cannot change", "orders.yaml"),
    ];
    for (spec, rule, location) in cases {
        p.write("orders.yaml", &orders(&spec));
        let (code, plan) = p.plan();
        assert_eq!(code, 1, "plan must fail for `{rule}`:\n{plan}");
        assert!(plan.contains(rule), "plan does not name `{rule}`:\n{plan}");
        assert!(
            plan.contains(location),
            "plan does not point at {location}:\n{plan}"
        );
        let out = p.run(&["apply", "manifests"]);
        assert_eq!(out.status.code(), Some(1), "apply must fail for `{rule}`");
        assert_eq!(
            p.table("shop.orders").await.metadata_location,
            before,
            "`{rule}` committed something"
        );
    }
}

#[tokio::test]
async fn required_to_optional_and_docs() {
    let (p, _) = base_project().await;
    let relaxed = BASE
        .replace(
            "    - name: name\n      type: string\n      required: true\n",
            "    - name: name\n      type: string\n      doc: Display name\n",
        )
        .replace("      doc: Order id\n", "");
    p.write("orders.yaml", &orders(&relaxed));
    let (_, plan) = p.plan();
    assert!(plan.contains("make column name optional"), "{plan}");
    assert!(plan.contains("set doc of name: \"Display name\""), "{plan}");
    assert!(plan.contains("remove doc of id"), "{plan}");
    p.apply_converges();
    let md = p.table("shop.orders").await.metadata;
    let s = md.current_schema();
    assert!(!s.field_by_name("name").unwrap().required);
    assert_eq!(
        s.field_by_name("name").unwrap().doc.as_deref(),
        Some("Display name")
    );
    assert_eq!(s.field_by_name("id").unwrap().doc, None);
}

#[tokio::test]
async fn drop_needs_allow_destructive() {
    let (p, before) = base_project().await;
    let dropped = BASE.replace("    - name: price\n      type: float\n", "");
    p.write("orders.yaml", &orders(&dropped));
    let (code, plan) = p.plan();
    assert_eq!(code, 1, "{plan}");
    assert!(plan.contains("drop column price  [destructive]"), "{plan}");
    assert!(plan.contains("allowDestructive"), "{plan}");
    assert!(plan.contains("(1 destructive)"), "{plan}");
    let out = p.run(&["apply", "manifests"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        p.table("shop.orders").await.metadata.current_schema_id(),
        before.current_schema_id()
    );

    p.write(
        "orders.yaml",
        &orders(&format!("{dropped}  policy:\n    allowDestructive: true\n")),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    p.apply_converges();
    let md = p.table("shop.orders").await.metadata;
    assert!(md.current_schema().field_by_name("price").is_none());
    // The old schema is kept in the metadata (old data files still name the field).
    assert!(md
        .schema_by_id(before.current_schema_id())
        .unwrap()
        .field_by_name("price")
        .is_some());
}

#[tokio::test]
async fn drop_and_add_of_the_same_type_suggests_renamed_from() {
    let (p, _) = base_project().await;
    let swapped = BASE.replace(
        "    - name: name\n      type: string\n",
        "    - name: title\n      type: string\n",
    );
    p.write("orders.yaml", &orders(&swapped));
    let (_, plan) = p.plan();
    assert!(
        plan.contains("`name` is dropped and `title` added with the same type: did you mean `renamedFrom: name` on `title`"),
        "{plan}"
    );
}

#[tokio::test]
async fn partition_spec_evolution() {
    let (p, before) = base_project().await;
    assert!(before.default_partition_spec().is_unpartitioned());
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{BASE}  partitioning:\n    - column: ts\n      transform: month\n"
        )),
    );
    let (_, plan) = p.plan();
    assert!(plan.contains("partition by month(ts)"), "{plan}");
    p.apply_converges();
    let md1 = p.table("shop.orders").await.metadata;
    let f = &md1.default_partition_spec().fields()[0];
    assert_eq!(
        (f.source_id, f.transform, f.name.as_str()),
        (id_of(&md1, "ts"), Transform::Month, "ts_month")
    );
    assert_ne!(
        md1.default_partition_spec_id(),
        before.default_partition_spec_id()
    );

    // Adding a field keeps the old one's field id.
    p.write(
        "orders.yaml",
        &orders(&format!("{BASE}  partitioning:\n    - column: ts\n      transform: month\n    - column: customer.id\n      transform: bucket[4]\n")),
    );
    p.apply_converges();
    let md2 = p.table("shop.orders").await.metadata;
    let fields = md2.default_partition_spec().fields();
    assert_eq!(fields.len(), 2);
    assert_eq!(fields[0].field_id, f.field_id);
    assert_eq!(
        (fields[1].source_id, fields[1].transform),
        (id_of(&md2, "customer.id"), Transform::Bucket(4))
    );
    assert_eq!(fields[1].name, "customer_id_bucket");

    // Removing a field is destructive.
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{BASE}  partitioning:\n    - column: ts\n      transform: month\n"
        )),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 1, "{plan}");
    assert!(
        plan.contains("remove partition field bucket[4](customer.id)"),
        "{plan}"
    );
    p.write(
        "orders.yaml",
        &orders(&format!("{BASE}  partitioning:\n    - column: ts\n      transform: month\n  policy:\n    allowDestructive: true\n")),
    );
    p.apply_converges();
    let md3 = p.table("shop.orders").await.metadata;
    assert_eq!(md3.default_partition_spec().fields().len(), 1);
    // Every spec ever used stays in the metadata for the files written with it.
    assert!(md3.partition_specs_iter().count() >= 3);
}

#[tokio::test]
async fn sort_order_change() {
    let (p, _) = base_project().await;
    p.write(
        "orders.yaml",
        &orders(&format!("{BASE}  sortOrder:\n    - column: ts\n    - column: qty\n      direction: desc\n      nulls: first\n")),
    );
    let (_, plan) = p.plan();
    assert!(
        plan.contains("sort by ts asc nulls first, qty desc nulls first"),
        "{plan}"
    );
    p.apply_converges();
    let md = p.table("shop.orders").await.metadata;
    let order = md.default_sort_order();
    let got: Vec<_> = order
        .fields
        .iter()
        .map(|f| (f.source_id, f.direction, f.null_order))
        .collect();
    assert_eq!(
        got,
        vec![
            (id_of(&md, "ts"), SortDirection::Ascending, NullOrder::First),
            (
                id_of(&md, "qty"),
                SortDirection::Descending,
                NullOrder::First
            )
        ]
    );
    assert_ne!(md.default_sort_order_id(), 0);
}

#[tokio::test]
async fn properties_set_and_remove_only_what_lakectl_manages() {
    let p = Project::new();
    p.write(
        "orders.yaml",
        &orders(&format!(
            "{BASE}  properties:\n    a: \"1\"\n    b: \"2\"\n"
        )),
    );
    p.apply_converges();
    // Another writer sets its own property.
    let st = p.table("shop.orders").await;
    let lake = lakectl::lake::Lake::open_existing(
        lakectl::plan::load_valid(&p.manifests())
            .unwrap()
            .lake_config()
            .unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    lake.commit(
        &st.ident,
        &[],
        vec![iceberg::TableUpdate::SetProperties {
            updates: [("other.owner".to_string(), "spark".to_string())].into(),
        }],
    )
    .await
    .unwrap();

    p.write(
        "orders.yaml",
        &orders(&format!(
            "{BASE}  properties:\n    a: \"10\"\n    c: \"3\"\n"
        )),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 2, "{plan}");
    assert!(plan.contains("~ property a = \"10\""), "{plan}");
    assert!(plan.contains("~ property c = \"3\""), "{plan}");
    assert!(plan.contains("- property b"), "{plan}");
    assert!(!plan.contains("other.owner"), "{plan}");
    p.apply_converges();
    let props = p.table("shop.orders").await.metadata.properties().clone();
    assert_eq!(props.get("a").map(String::as_str), Some("10"));
    assert_eq!(props.get("c").map(String::as_str), Some("3"));
    assert!(!props.contains_key("b"));
    assert_eq!(props.get("other.owner").map(String::as_str), Some("spark"));
    assert_eq!(
        props.get("lakectl.managed-properties").map(String::as_str),
        Some("a,c")
    );
}

#[tokio::test]
async fn plan_json_is_versioned_and_lists_items() {
    let (p, _) = base_project().await;
    p.write(
        "orders.yaml",
        &orders(&BASE.replace("type: int\n", "type: long\n")),
    );
    let out = p.run(&["plan", "manifests", "--output", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["format_version"], "1");
    assert_eq!(v["summary"]["change"], 1);
    assert_eq!(v["summary"]["applicable"], true);
    let change = &v["changes"][0];
    assert_eq!(change["action"], "update");
    assert_eq!(change["table"], "shop.orders");
    assert_eq!(change["schema_ops"][0]["op"], "promote-type");
    assert_eq!(change["items"][0], "widen column qty: int → long");
}

#[tokio::test]
async fn column_order_follows_the_manifest() {
    let (p, before) = base_project().await;
    let moved = BASE
        .replace("    - name: qty\n      type: int\n", "")
        .replace(
            "  identifierFields: [id]\n",
            "    - name: qty\n      type: int\n  identifierFields: [id]\n",
        );
    p.write("orders.yaml", &orders(&moved));
    let (_, plan) = p.plan();
    assert!(plan.contains("reorder columns:"), "{plan}");
    p.apply_converges();
    let md = p.table("shop.orders").await.metadata;
    let names: Vec<String> = md
        .current_schema()
        .as_struct()
        .fields()
        .iter()
        .map(|f| f.name.clone())
        .collect();
    assert_eq!(names.last().map(String::as_str), Some("qty"));
    assert_eq!(id_of(&md, "qty"), id_of(&before, "qty"));
}
