//! The file shapes people actually have: quoted newlines at any chunk size, byte-order
//! marks, gzip / zstd / bzip2, empty and header-only files, escaped header quotes,
//! legacy encodings, JSON arrays, and Parquet with other column orders and types. Each
//! gives the right rows, or a located error with nothing committed.

use std::io::Write;
use std::process::Command;

use serde_json::{json, Value};

use crate::common::{text, Project, LAKECTL};

/// `shop.notes` (id long required, note string, qty int, price double) with `sources`.
fn notes(sources: &str) -> String {
    format!(
        "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: notes\n  namespace: shop\nspec:\n  columns:\n    - {{name: id, type: long, required: true}}\n    - {{name: note, type: string}}\n    - {{name: qty, type: int}}\n    - {{name: price, type: double}}\n  sources:\n{sources}"
    )
}

fn put(p: &Project, name: &str, bytes: &[u8]) {
    let path = p.root().join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn rows(p: &Project, sql: &str) -> Vec<Value> {
    let out = p.run(&["query", sql, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap()
}

fn totals(p: &Project) -> Value {
    rows(
        p,
        "select count(*) as n, count(distinct id) as d, sum(qty) as q from shop.notes",
    )[0]
    .clone()
}

/// Applies with 1 KiB chunks, so cuts land inside quoted fields unless they follow the
/// quote state.
fn apply_small_chunks(p: &Project) -> std::process::Output {
    Command::new(LAKECTL)
        .args(["apply", "manifests"])
        .current_dir(p.root())
        .env("NO_COLOR", "1")
        .env("LAKECTL_INGEST_CHUNK_BYTES", "1024")
        .output()
        .unwrap()
}

#[tokio::test]
async fn quoted_newlines_are_never_cut_at_any_chunk_size() {
    let p = Project::new();
    let mut body = String::from("id,note,qty,price\n");
    for i in 0..3000 {
        // Every row's note spans two lines, some with quotes and delimiters inside.
        body.push_str(&format!(
            "{i},\"line one {i}\nline \"\"two\"\", {i}\",{},0.5\n",
            i % 10
        ));
    }
    put(&p, "data/notes.csv", body.as_bytes());
    p.write(
        "notes.yaml",
        &notes("    - {name: csv, uri: ../data/*.csv}\n"),
    );
    let out = apply_small_chunks(&p);
    assert!(out.status.success(), "{}", text(&out));
    let t = totals(&p);
    assert_eq!(t, json!({"n": 3000, "d": 3000, "q": 13500}), "{t}");
    let r = rows(&p, "select note from shop.notes where id = 1234");
    assert_eq!(r[0]["note"], "line one 1234\nline \"two\", 1234");

    // A bad value after quoted newlines is located on its own line of the file.
    let mut bad = String::from("id,note,qty,price\n");
    for i in 0..300 {
        bad.push_str(&format!(
            "{},\"a\nb\",{},1.0\n",
            10_000 + i,
            if i == 250 { "many" } else { "1" }
        ));
    }
    put(&p, "data/bad.csv", bad.as_bytes());
    let before = p.table("shop.notes").await.metadata_location;
    let out = apply_small_chunks(&p);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Header is line 1; record i starts on line 2 + 2i.
    assert!(
        text(&out)
            .contains("../data/bad.csv:502:3: value \"many\" of column `qty` is not a valid int"),
        "{}",
        text(&out)
    );
    assert_eq!(p.table("shop.notes").await.metadata_location, before);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn boms_compression_empty_files_and_escaped_headers() {
    let p = Project::new();
    let csv = |first: i64| -> String {
        let mut s = String::from("id,note,qty,price\n");
        for i in first..first + 100 {
            s.push_str(&format!("{i},\"n, {i}\",{},1.5\n", i % 10));
        }
        s
    };
    // An Excel export: UTF-8 BOM, CRLF.
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(csv(0).replace('\n', "\r\n").into_bytes());
    put(&p, "data/excel.csv", &bom);
    put(&p, "data/a.csv.gz", &gzip(csv(100).as_bytes()));
    put(
        &p,
        "data/b.csv.zst",
        &zstd::encode_all(csv(200).as_bytes(), 3).unwrap(),
    );
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz.write_all(csv(300).as_bytes()).unwrap();
    put(&p, "data/c.csv.bz2", &bz.finish().unwrap());
    // Compression declared for a name that does not say it.
    put(&p, "gz/export.csv", &gzip(csv(400).as_bytes()));
    // Empty, blank and header-only files: no rows, and recorded all the same.
    put(&p, "data/empty.csv", b"");
    put(&p, "data/blank.csv", b"\n\n");
    put(&p, "data/header.csv", b"id,note,qty,price\n");
    put(&p, "data/bom-only.csv", b"\xEF\xBB\xBF");
    // Header fields with escaped quotes, mapped by their unescaped names.
    put(
        &p,
        "quoted/q.csv",
        b"\"id\",\"the \"\"note\"\"\",\"qty\",price\n500,x,5,1.0\n501,y,6,2.0\n",
    );
    // JSON: compressed lines, a pretty-printed top-level array, an empty array, an empty file.
    put(
        &p,
        "json/lines.json.gz",
        &gzip(b"{\"id\": 600, \"note\": \"j\", \"qty\": 1}\n{\"id\": 601, \"qty\": 2}\n"),
    );
    put(
        &p,
        "json/array.json",
        b"[\n  {\"id\": 700, \"note\": \"a, [b]\", \"qty\": 3},\n  {\"id\": 701,\n   \"note\": \"c\\\"}\", \"qty\": 4}\n]\n",
    );
    put(&p, "json/none.json", b"[]");
    put(&p, "json/zero.json", b"");
    p.write(
        "notes.yaml",
        &notes(
            "    - {name: csv, uri: ../data/*}\n    - {name: gz, uri: ../gz/*.csv, compression: gzip}\n    - name: quoted\n      uri: ../quoted/*.csv\n      columns: {'the \"note\"': note}\n    - {name: json, uri: ../json/*}\n",
        ),
    );
    p.apply_converges();
    let t = totals(&p);
    let q: i64 = 5 * 45 * 10 + 5 + 6 + 1 + 2 + 3 + 4;
    assert_eq!(t, json!({"n": 506, "d": 506, "q": q}), "{t}");
    let r = rows(
        &p,
        "select id, note from shop.notes where id in (0, 500, 701) order by id",
    );
    assert_eq!(
        r,
        vec![
            json!({"id": 0, "note": "n, 0"}),
            json!({"id": 500, "note": "x"}),
            json!({"id": 701, "note": "c\"}"})
        ]
    );
    // The empty files are in the ledger: nothing is planned for them again.
    let (code, plan) = p.plan();
    assert_eq!(code, 0, "{plan}");

    // A broken gzip stream is a located error, nothing committed.
    let before = p.table("shop.notes").await.metadata_location;
    let mut broken = gzip(csv(900).as_bytes());
    broken.truncate(broken.len() / 2);
    put(&p, "data/broken.csv.gz", &broken);
    let out = p.run(&["apply", "manifests"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("../data/broken.csv.gz"),
        "{}",
        text(&out)
    );
    assert_eq!(p.table("shop.notes").await.metadata_location, before);
}

#[tokio::test]
async fn legacy_encodings_are_decoded_when_declared_and_located_when_not() {
    let p = Project::new();
    // windows-1252: é is 0xE9, € is 0x80.
    put(
        &p,
        "latin/a.csv",
        b"id,note,qty,price\n1,caf\xe9 \x80,1,1.0\n2,na\xefve,2,2.0\n",
    );
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(
            "id,note,qty,price\r\n3,日本,3,3.0\r\n4,\"a\r\nb\",4,4.0\r\n"
                .encode_utf16()
                .flat_map(|u| u.to_le_bytes()),
        )
        .collect();
    put(&p, "utf16/a.csv", &utf16);
    p.write(
        "notes.yaml",
        &notes(
            "    - {name: latin, uri: ../latin/*.csv, encoding: windows-1252}\n    - name: wide\n      uri: ../utf16/*.csv\n      csv: {encoding: utf-16}\n",
        ),
    );
    p.apply_converges();
    let r = rows(&p, "select id, note from shop.notes order by id");
    assert_eq!(
        r,
        vec![
            json!({"id": 1, "note": "café €"}),
            json!({"id": 2, "note": "naïve"}),
            json!({"id": 3, "note": "日本"}),
            json!({"id": 4, "note": "a\r\nb"}),
        ]
    );
    // Undeclared, a byte that is not UTF-8 is a located error, nothing committed.
    put(
        &p,
        "plain/b.csv",
        b"id,note,qty,price\n5,ok,1,1.0\n6,caf\xe9,1,1.0\n",
    );
    p.write(
        "notes.yaml",
        &notes("    - {name: latin, uri: ../latin/*.csv, encoding: windows-1252}\n    - name: wide\n      uri: ../utf16/*.csv\n      csv: {encoding: utf-16}\n    - {name: plain, uri: ../plain/*.csv}\n"),
    );
    let before = p.table("shop.notes").await.metadata_location;
    let out = p.run(&["apply", "manifests"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("../plain/b.csv:3"), "{}", text(&out));
    assert_eq!(p.table("shop.notes").await.metadata_location, before);
    // An unknown encoding is refused at its place in the manifest.
    p.write(
        "notes.yaml",
        &notes("    - {name: latin, uri: ../latin/*.csv, encoding: klingon}\n"),
    );
    let (code, plan) = p.plan();
    assert_eq!(code, 1, "{plan}");
    assert!(
        plan.contains("notes.yaml:") && plan.contains("unknown text encoding \"klingon\""),
        "{plan}"
    );
}

#[tokio::test]
async fn parquet_in_another_column_order_with_extra_columns_and_narrower_types() {
    use arrow_array::{
        ArrayRef, Float32Array, Int16Array, Int32Array, RecordBatch, StringArray,
        TimestampNanosecondArray,
    };
    use std::sync::Arc;
    let p = Project::new();
    let write = |name: &str, cols: Vec<(&str, ArrayRef)>| {
        let batch = RecordBatch::try_from_iter(cols).unwrap();
        let path = p.root().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let f = std::fs::File::create(path).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    };
    let yaml = "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: notes\n  namespace: shop\nspec:\n  columns:\n    - {name: id, type: long, required: true}\n    - {name: note, type: string}\n    - {name: qty, type: int}\n    - {name: price, type: double}\n    - {name: at, type: timestamp}\n  sources:\n    - {name: pq, uri: ../pq/*.parquet}\n";
    p.write("notes.yaml", yaml);
    write(
        "pq/a.parquet",
        vec![
            (
                "price",
                Arc::new(Float32Array::from(vec![0.5, 1.5])) as ArrayRef,
            ),
            ("extra", Arc::new(StringArray::from(vec!["x", "y"]))),
            ("qty", Arc::new(Int16Array::from(vec![7, 8]))),
            ("id", Arc::new(Int32Array::from(vec![1, 2]))),
            (
                "at",
                Arc::new(TimestampNanosecondArray::from(vec![
                    1_700_000_000_000_000_000,
                    1_700_000_000_000_001_000,
                ])),
            ),
        ],
    );
    put(&p, "pq/empty.parquet", b"");
    p.apply_converges();
    let r = rows(
        &p,
        "select id, qty, price, cast(at as varchar) as at from shop.notes order by id",
    );
    assert_eq!(
        r[0],
        json!({"id": 1, "qty": 7, "price": 0.5, "at": "2023-11-14T22:13:20"})
    );
    assert_eq!(r[1]["price"], 1.5);

    let before = p.table("shop.notes").await.metadata_location;
    // A string into an int column: refused with its column.
    write(
        "pq/b.parquet",
        vec![
            ("id", Arc::new(Int32Array::from(vec![3])) as ArrayRef),
            ("qty", Arc::new(StringArray::from(vec!["9"]))),
        ],
    );
    let out = p.run(&["apply", "manifests"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "../pq/b.parquet:1:2: column `qty` is Utf8 in the file and Int32 in the table"
        ),
        "{}",
        text(&out)
    );
    std::fs::remove_file(p.root().join("pq/b.parquet")).unwrap();
    // Nanoseconds the table's microseconds cannot keep: refused at the row.
    write(
        "pq/c.parquet",
        vec![
            ("id", Arc::new(Int32Array::from(vec![4, 5])) as ArrayRef),
            (
                "at",
                Arc::new(TimestampNanosecondArray::from(vec![1_000, 1_001])),
            ),
        ],
    );
    let out = p.run(&["apply", "manifests"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("../pq/c.parquet:2:2: timestamp 1001"),
        "{}",
        text(&out)
    );
    assert_eq!(p.table("shop.notes").await.metadata_location, before);
}
